//! Billing keys at rest (issue #24 §6): envelope encryption under a KMS key.
//!
//! A billing key (Payple `PCD_PAYER_ID`, StepPay's billing `idKey`, a StepPay-managed subscription
//! id) charges a customer's card, so the subscription item keeps it only sealed: AES-256-GCM
//! under a data key that KMS generated (`GenerateDataKey`, encryption context
//! `purpose=paycycle-billing-key`) and keeps wrapped beside it. The subscription id is the
//! additional authenticated data, so a sealed key copied onto another subscription does not open.
//! The item, the `lookup` index (projection ALL) and the table's stream see only
//! [`SealedKey`]: the wrapped data key, the nonce and the ciphertext.
//!
//! This module owns two rules: a plaintext key or data key never reaches a log line, a `Debug`
//! or an error message; and KMS is asked once per process for a data key to seal with and once
//! per wrapped data key to open with (both cached, the second bounded), so a warm renew charges
//! without calling KMS.
//!
//! Items written before sealing existed hold the key as a plain string ([`StoredBillingKey::Legacy`]);
//! they still open, and the next write of such a record seals it ([`KeyVault::reseal`]).

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use paycycle_domain::attempt::SubscriptionId;
use paycycle_domain::secret::Secret;
use serde::{Deserialize, Serialize};

/// The encryption context of every data key: KMS binds it to the wrapped key, and the functions'
/// IAM policies allow `GenerateDataKey` / `Decrypt` only with it.
pub const PURPOSE: (&str, &str) = ("purpose", "paycycle-billing-key");

/// The sealed form's version.
const VERSION: u8 = 1;

/// How many unwrapped data keys a process keeps (one per process that sealed keys it opens).
const OPENED_KEYS: usize = 256;

/// A billing key as the subscription item stores it: `{v, dek, nonce, ct}`, base64. `Debug`
/// shows its version only.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SealedKey {
    pub v: u8,
    /// The data key, wrapped by KMS.
    pub dek: String,
    /// AES-GCM's 96-bit nonce, random per seal.
    pub nonce: String,
    /// The billing key under AES-256-GCM (tag included), with the subscription id as AAD.
    pub ct: String,
}

impl fmt::Debug for SealedKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SealedKey(v{}, ***)", self.v)
    }
}

/// A subscription's billing key at rest: sealed, or (items written before sealing existed) the
/// plain string. Untagged: a stored string reads as `Legacy`, a map as `Sealed`.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum StoredBillingKey {
    Sealed(SealedKey),
    Legacy(String),
}

impl StoredBillingKey {
    pub fn is_legacy(&self) -> bool {
        matches!(self, StoredBillingKey::Legacy(_))
    }
}

impl fmt::Debug for StoredBillingKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoredBillingKey::Sealed(k) => k.fmt(f),
            StoredBillingKey::Legacy(_) => f.write_str("Legacy(***)"),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VaultError {
    /// KMS did not answer, or refused. `lasting`: an answer that will not change by itself (no
    /// permission, the key disabled or pending deletion, a data key of another KMS key): a
    /// person must act, and it is alarmed; otherwise (throttling, no answer) a later try works.
    #[error("KMS {operation} failed: {message}")]
    Kms { operation: &'static str, message: String, lasting: bool },
    /// The sealed key does not open for this subscription: another subscription's, altered, or
    /// sealed under a data key that is not ours.
    #[error("the billing key of {0} does not open")]
    DoesNotOpen(String),
}

/// Wraps and unwraps data keys: KMS, or (fast tests) a key of this process.
enum Wrapper {
    Kms { client: aws_sdk_kms::Client, key_id: String },
    Memory { master: Box<Aes256Gcm> },
}

/// The data key this process seals with.
struct DataKey {
    wrapped: String,
    cipher: Arc<Aes256Gcm>,
}

struct Inner {
    wrapper: Wrapper,
    sealing: tokio::sync::Mutex<Option<DataKey>>,
    opened: Mutex<HashMap<String, Arc<Aes256Gcm>>>,
    generated: AtomicU64,
    decrypted: AtomicU64,
    calls: Option<Arc<crate::aws::calls::CallLog>>,
}

/// Seals and opens billing keys; built once per cold start, cheap to clone.
#[derive(Clone)]
pub struct KeyVault {
    inner: Arc<Inner>,
}

impl fmt::Debug for KeyVault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.inner.wrapper {
            Wrapper::Kms { key_id, .. } => write!(f, "KeyVault(kms {key_id})"),
            Wrapper::Memory { .. } => f.write_str("KeyVault(in memory)"),
        }
    }
}

/// KMS calls a vault made.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KmsCalls {
    pub generate_data_key: u64,
    pub decrypt: u64,
}

impl KeyVault {
    /// A vault on KMS key `key_id` (ARN, id or alias), recording its calls when the IAM test asks.
    pub fn new(sdk: &aws_config::SdkConfig, key_id: impl Into<String>) -> Self {
        let calls = crate::aws::calls::CallLog::from_env();
        let mut config = aws_sdk_kms::config::Builder::from(sdk);
        if let Some(log) = &calls {
            config = config.interceptor(log.interceptor());
        }
        let client = aws_sdk_kms::Client::from_conf(config.build());
        Self::with(Wrapper::Kms { client, key_id: key_id.into() }, calls)
    }

    /// A vault whose master key lives in this process only, for orchestration tests without KMS
    /// (sealed keys do not outlive it).
    pub fn in_memory() -> Self {
        let master = Box::new(Aes256Gcm::new(&random::<32>().into()));
        Self::with(Wrapper::Memory { master }, None)
    }

    fn with(wrapper: Wrapper, calls: Option<Arc<crate::aws::calls::CallLog>>) -> Self {
        let inner = Inner {
            wrapper,
            sealing: tokio::sync::Mutex::new(None),
            opened: Mutex::new(HashMap::new()),
            generated: AtomicU64::new(0),
            decrypted: AtomicU64::new(0),
            calls,
        };
        Self { inner: Arc::new(inner) }
    }

    /// The calls this vault made to KMS, as IAM authorizes them (`PAYCYCLE_RECORD_AWS_CALLS`).
    pub fn calls(&self) -> Option<&Arc<crate::aws::calls::CallLog>> {
        self.inner.calls.as_ref()
    }

    /// How often this vault called KMS.
    pub fn kms_calls(&self) -> KmsCalls {
        KmsCalls {
            generate_data_key: self.inner.generated.load(Ordering::Relaxed),
            decrypt: self.inner.decrypted.load(Ordering::Relaxed),
        }
    }

    /// Seals `plaintext` for subscription `id`.
    pub async fn seal(&self, id: &SubscriptionId, plaintext: &str) -> Result<StoredBillingKey, VaultError> {
        let (wrapped, cipher) = self.sealing_key().await?;
        let nonce = random::<12>();
        let payload = Payload { msg: plaintext.as_bytes(), aad: id.as_str().as_bytes() };
        let ct = cipher.encrypt(Nonce::from_slice(&nonce), payload).map_err(|_| VaultError::Kms {
            operation: "seal",
            message: "AES-GCM refused the input".into(),
            lasting: true,
        })?;
        Ok(StoredBillingKey::Sealed(SealedKey {
            v: VERSION,
            dek: wrapped,
            nonce: B64.encode(nonce),
            ct: B64.encode(ct),
        }))
    }

    /// The billing key of subscription `id`, opened (a legacy plain key as it is).
    pub async fn open(&self, id: &SubscriptionId, stored: &StoredBillingKey) -> Result<Secret, VaultError> {
        let sealed = match stored {
            StoredBillingKey::Legacy(plain) => return Ok(Secret::new(plain.clone())),
            StoredBillingKey::Sealed(sealed) => sealed,
        };
        let fails = || VaultError::DoesNotOpen(id.to_string());
        if sealed.v != VERSION {
            return Err(fails());
        }
        let cipher = self.opening_key(&sealed.dek).await?;
        let nonce: [u8; 12] = B64.decode(&sealed.nonce).ok().and_then(|n| n.try_into().ok()).ok_or_else(fails)?;
        let ct = B64.decode(&sealed.ct).map_err(|_| fails())?;
        let plain = cipher
            .decrypt(Nonce::from_slice(&nonce), Payload { msg: &ct, aad: id.as_str().as_bytes() })
            .map_err(|_| fails())?;
        String::from_utf8(plain).map(Secret::new).map_err(|_| fails())
    }

    /// `stored` sealed: a legacy plain key is sealed now (for the next write of its record), a
    /// sealed one is kept as it is.
    pub async fn reseal(&self, id: &SubscriptionId, stored: &StoredBillingKey) -> Result<StoredBillingKey, VaultError> {
        match stored {
            StoredBillingKey::Legacy(plain) => self.seal(id, plain).await,
            sealed => Ok(sealed.clone()),
        }
    }

    /// The data key to seal with: generated by KMS on the first seal of this process.
    async fn sealing_key(&self) -> Result<(String, Arc<Aes256Gcm>), VaultError> {
        let mut current = self.inner.sealing.lock().await;
        if let Some(k) = current.as_ref() {
            return Ok((k.wrapped.clone(), k.cipher.clone()));
        }
        let (wrapped, plain) = self.generate().await?;
        let cipher = Arc::new(Aes256Gcm::new(&plain.into()));
        self.remember(&wrapped, &cipher);
        *current = Some(DataKey { wrapped: wrapped.clone(), cipher: cipher.clone() });
        Ok((wrapped, cipher))
    }

    /// The data key wrapped as `wrapped`: from the cache, else unwrapped by KMS.
    async fn opening_key(&self, wrapped: &str) -> Result<Arc<Aes256Gcm>, VaultError> {
        if let Some(cipher) = self.inner.opened.lock().ok().and_then(|m| m.get(wrapped).cloned()) {
            return Ok(cipher);
        }
        let plain = self.unwrap(wrapped).await?;
        let cipher = Arc::new(Aes256Gcm::new(&plain.into()));
        self.remember(wrapped, &cipher);
        Ok(cipher)
    }

    fn remember(&self, wrapped: &str, cipher: &Arc<Aes256Gcm>) {
        if let Ok(mut opened) = self.inner.opened.lock() {
            if opened.len() >= OPENED_KEYS {
                opened.clear();
            }
            opened.insert(wrapped.to_string(), cipher.clone());
        }
    }

    /// A new data key: (wrapped, base64; plaintext).
    async fn generate(&self) -> Result<(String, [u8; 32]), VaultError> {
        self.inner.generated.fetch_add(1, Ordering::Relaxed);
        match &self.inner.wrapper {
            Wrapper::Memory { master } => {
                let plain = random::<32>();
                let nonce = random::<12>();
                let wrapped = master
                    .encrypt(Nonce::from_slice(&nonce), plain.as_slice())
                    .map_err(|_| kms_error("GenerateDataKey", "wrap"))?;
                Ok((B64.encode([nonce.as_slice(), &wrapped].concat()), plain))
            }
            Wrapper::Kms { client, key_id } => {
                let out = client
                    .generate_data_key()
                    .key_id(key_id)
                    .key_spec(aws_sdk_kms::types::DataKeySpec::Aes256)
                    .encryption_context(PURPOSE.0, PURPOSE.1)
                    .send()
                    .await
                    .map_err(|e| sdk_error("GenerateDataKey", e))?;
                let wrapped = out.ciphertext_blob().map(|b| B64.encode(b.as_ref()));
                let plain = out.plaintext().and_then(|p| <[u8; 32]>::try_from(p.as_ref()).ok());
                match (wrapped, plain) {
                    (Some(w), Some(p)) => Ok((w, p)),
                    _ => Err(kms_error("GenerateDataKey", "no AES-256 key in the answer")),
                }
            }
        }
    }

    /// The plaintext of a wrapped data key.
    async fn unwrap(&self, wrapped: &str) -> Result<[u8; 32], VaultError> {
        self.inner.decrypted.fetch_add(1, Ordering::Relaxed);
        let blob = B64.decode(wrapped).map_err(|_| kms_error("Decrypt", "the wrapped data key is not base64"))?;
        let plain = match &self.inner.wrapper {
            Wrapper::Memory { master } if blob.len() > 12 => {
                let (nonce, ct) = blob.split_at(12);
                master.decrypt(Nonce::from_slice(nonce), ct).ok()
            }
            Wrapper::Memory { .. } => None,
            Wrapper::Kms { client, key_id } => client
                .decrypt()
                .key_id(key_id)
                .ciphertext_blob(aws_sdk_kms::primitives::Blob::new(blob))
                .encryption_context(PURPOSE.0, PURPOSE.1)
                .send()
                .await
                .map_err(|e| sdk_error("Decrypt", e))?
                .plaintext()
                .map(|p| p.as_ref().to_vec()),
        };
        plain
            .and_then(|p| <[u8; 32]>::try_from(p).ok())
            .ok_or_else(|| kms_error("Decrypt", "the data key does not unwrap"))
    }
}

/// A failure of ours around KMS (an answer we cannot use): retrying will not help.
fn kms_error(operation: &'static str, message: impl fmt::Display) -> VaultError {
    VaultError::Kms { operation, message: message.to_string(), lasting: true }
}

/// KMS's own errors that a retry does not cure (AWS KMS API reference, each operation's Errors).
const LASTING_KMS_ERRORS: &[&str] = &[
    "AccessDeniedException",
    "DisabledException",
    "IncorrectKeyException",
    "InvalidCiphertextException",
    "InvalidKeyUsageException",
    "KMSInvalidStateException",
    "NotFoundException",
];

/// An SDK call's failure: lasting if KMS answered one of [`LASTING_KMS_ERRORS`]; throttling, a
/// 5xx or no answer at all is worth another try.
fn sdk_error<E, R>(operation: &'static str, e: aws_sdk_kms::error::SdkError<E, R>) -> VaultError
where
    E: aws_sdk_kms::error::ProvideErrorMetadata + std::error::Error + 'static,
    R: fmt::Debug,
{
    let lasting = e.as_service_error().and_then(|s| s.code()).is_some_and(|c| LASTING_KMS_ERRORS.contains(&c));
    let message = aws_sdk_kms::error::DisplayErrorContext(e).to_string();
    VaultError::Kms { operation, message, lasting }
}

fn random<const N: usize>() -> [u8; N] {
    let mut bytes = [0u8; N];
    getrandom::fill(&mut bytes).expect("the OS random source is available");
    bytes
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(s: &str) -> SubscriptionId {
        SubscriptionId::parse(s).expect("a subscription id")
    }

    #[tokio::test]
    async fn a_sealed_billing_key_does_not_open_on_another_subscription() {
        let vault = KeyVault::in_memory();
        let sealed = vault.seal(&id("sub_a"), "PAYER-123456").await.unwrap();
        assert_eq!(vault.open(&id("sub_a"), &sealed).await.unwrap().expose(), "PAYER-123456");
        assert_eq!(vault.open(&id("sub_b"), &sealed).await.unwrap_err(), VaultError::DoesNotOpen("sub_b".into()));
        // Nor once altered, nor under another process's master key.
        let StoredBillingKey::Sealed(mut altered) = sealed.clone() else { panic!("sealed") };
        altered.ct = B64.encode([B64.decode(&altered.ct).unwrap(), vec![0]].concat());
        assert!(vault.open(&id("sub_a"), &StoredBillingKey::Sealed(altered)).await.is_err());
        assert!(KeyVault::in_memory().open(&id("sub_a"), &sealed).await.is_err());
    }

    #[tokio::test]
    async fn a_sealed_billing_key_shows_nothing_secret_and_each_seal_differs() {
        let vault = KeyVault::in_memory();
        let (a, b) = (
            vault.seal(&id("sub_a"), "PAYER-123456").await.unwrap(),
            vault.seal(&id("sub_a"), "PAYER-123456").await.unwrap(),
        );
        assert_ne!(a, b, "a fresh nonce per seal");
        let StoredBillingKey::Sealed(k) = &a else { panic!("sealed") };
        assert_eq!(format!("{a:?}"), "SealedKey(v1, ***)");
        assert!(!format!("{:?}", StoredBillingKey::Legacy("PAYER-123456".into())).contains("PAYER"));
        let item: std::collections::HashMap<String, aws_sdk_dynamodb::types::AttributeValue> =
            serde_dynamo::to_item(k).unwrap();
        assert!(!format!("{item:?}").contains("PAYER"), "{item:?}");
        assert_eq!(vault.kms_calls(), KmsCalls { generate_data_key: 1, decrypt: 0 }, "one data key per process");
    }

    /// Items written before sealing hold a plain string: they read as `Legacy` and still open; a
    /// sealed key reads back sealed (untagged, through DynamoDB's attribute types).
    #[tokio::test]
    async fn a_legacy_plain_billing_key_still_reads_and_opens() {
        #[derive(Serialize, Deserialize)]
        struct Record {
            billing_key: Option<StoredBillingKey>,
        }
        let plain: crate::Item = serde_dynamo::to_item(serde_json::json!({"billing_key": "PAYER-1"})).unwrap();
        let legacy: Record = serde_dynamo::from_item(plain).unwrap();
        let stored = legacy.billing_key.unwrap();
        assert!(stored.is_legacy());
        let vault = KeyVault::in_memory();
        assert_eq!(vault.open(&id("sub_a"), &stored).await.unwrap().expose(), "PAYER-1");
        let sealed = vault.seal(&id("sub_a"), "PAYER-1").await.unwrap();
        let item: crate::Item = serde_dynamo::to_item(Record { billing_key: Some(sealed.clone()) }).unwrap();
        let back: Record = serde_dynamo::from_item(item).unwrap();
        assert_eq!(back.billing_key, Some(sealed));
    }
}
