//! Standard Webhooks signatures for the webhooks paycycle sends to partners (issue 23). The
//! symmetric scheme of the Standard Webhooks specification (standard-webhooks/standard-webhooks,
//! `spec/standard-webhooks.md`, "Signature scheme" and "Webhook headers"), so a partner verifies
//! with an off-the-shelf library in any language:
//!
//! - content signed: `{msg_id}.{timestamp}.{payload}`, HMAC-SHA256, base64;
//! - headers: `webhook-id` (the event id, the same on every retry: the receiver's dedupe key),
//!   `webhook-timestamp` (Unix seconds of this attempt, on the wall clock — receivers refuse one
//!   more than 5 minutes off), `webhook-signature: v1,<base64>` — several, space-delimited, while a
//!   rotated secret overlaps the new one;
//! - secrets: `whsec_` + base64 of 32 random bytes (the spec asks for at least 24).
//!
//! The tests verify what [`sign`] produces with the independent `standardwebhooks` package from
//! PyPI, not with this module.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::secret::{Secret, constant_time_eq};

pub const HEADER_ID: &str = "webhook-id";
pub const HEADER_TIMESTAMP: &str = "webhook-timestamp";
pub const HEADER_SIGNATURE: &str = "webhook-signature";

/// How far a receiver lets `webhook-timestamp` be from its clock (the reference libraries' 5
/// minutes).
pub const TOLERANCE_SECONDS: i64 = 300;

const PREFIX: &str = "whsec_";
const KEY_BYTES: usize = 32;

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("a signing secret is `whsec_` and the base64 of at least 24 bytes")]
    BadSecret,
    #[error("a webhook id must be non-empty and have no `.` (it is part of the signed content)")]
    BadId,
    #[error("the webhook-id, webhook-timestamp and webhook-signature headers are required")]
    MissingHeaders,
    #[error("webhook-timestamp is not within {TOLERANCE_SECONDS} s of now")]
    Stale,
    #[error("no signature matches")]
    NoMatch,
}

/// An endpoint's signing secret (`whsec_…`). Shown to the partner once, when made; never logged.
#[derive(Clone, Debug)]
pub struct SigningSecret(Secret);

impl SigningSecret {
    /// A new secret from the operating system's CSPRNG.
    pub fn generate() -> SigningSecret {
        let mut key = [0u8; KEY_BYTES];
        getrandom::fill(&mut key).expect("the OS random source is available");
        SigningSecret(Secret::new(format!("{PREFIX}{}", STANDARD.encode(key))))
    }

    pub fn parse(text: &str) -> Result<SigningSecret, SignatureError> {
        let secret = SigningSecret(Secret::new(text.trim()));
        secret.key()?;
        Ok(secret)
    }

    /// The secret as the partner configures it (`whsec_…`).
    pub fn expose(&self) -> &str {
        self.0.expose()
    }

    fn key(&self) -> Result<Vec<u8>, SignatureError> {
        let encoded = self.0.expose().strip_prefix(PREFIX).ok_or(SignatureError::BadSecret)?;
        let key = STANDARD.decode(encoded).map_err(|_| SignatureError::BadSecret)?;
        if !(24..=64).contains(&key.len()) {
            return Err(SignatureError::BadSecret);
        }
        Ok(key)
    }

    /// `v1,<base64 HMAC-SHA256 of id.timestamp.payload>`.
    fn signature(&self, id: &str, timestamp: i64, payload: &str) -> Result<String, SignatureError> {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.key()?).map_err(|_| SignatureError::BadSecret)?;
        mac.update(format!("{id}.{timestamp}.{payload}").as_bytes());
        Ok(format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes())))
    }
}

/// The three headers of one delivery attempt.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Signed {
    pub id: String,
    pub timestamp: i64,
    pub signature: String,
}

impl Signed {
    pub fn headers(&self) -> [(&'static str, String); 3] {
        [
            (HEADER_ID, self.id.clone()),
            (HEADER_TIMESTAMP, self.timestamp.to_string()),
            (HEADER_SIGNATURE, self.signature.clone()),
        ]
    }
}

/// Signs one attempt of message `id` (an event id) at `timestamp` (Unix seconds, wall clock) with
/// every secret given — the current one first, then one being rotated out.
pub fn sign(secrets: &[&SigningSecret], id: &str, timestamp: i64, payload: &str) -> Result<Signed, SignatureError> {
    if id.is_empty() || id.contains('.') || id.contains(char::is_whitespace) {
        return Err(SignatureError::BadId);
    }
    let signatures: Vec<String> =
        secrets.iter().map(|s| s.signature(id, timestamp, payload)).collect::<Result<_, _>>()?;
    if signatures.is_empty() {
        return Err(SignatureError::BadSecret);
    }
    Ok(Signed { id: id.to_string(), timestamp, signature: signatures.join(" ") })
}

/// Verifies a delivery as a receiver does (paycycle's local receiver; partners use a library):
/// the timestamp within [`TOLERANCE_SECONDS`] of `now`, and a `v1` signature by one of `secrets`,
/// compared in constant time.
pub fn verify(
    secrets: &[SigningSecret],
    id: Option<&str>,
    timestamp: Option<&str>,
    signature: Option<&str>,
    payload: &str,
    now: i64,
) -> Result<(), SignatureError> {
    let (Some(id), Some(timestamp), Some(signature)) = (id, timestamp, signature) else {
        return Err(SignatureError::MissingHeaders);
    };
    let at: i64 = timestamp.trim().parse().map_err(|_| SignatureError::MissingHeaders)?;
    if (now - at).abs() > TOLERANCE_SECONDS {
        return Err(SignatureError::Stale);
    }
    for secret in secrets {
        let expected = secret.signature(id, at, payload)?;
        if signature.split(' ').any(|given| constant_time_eq(given.as_bytes(), expected.as_bytes())) {
            return Ok(());
        }
    }
    Err(SignatureError::NoMatch)
}

#[cfg(test)]
mod tests {
    use std::process::Command;

    use super::*;

    const PAYLOAD: &str = r#"{"type":"subscription.renewed","data":{"subscription_id":"sub_1","amount":9900}}"#;

    fn now() -> i64 {
        jiff::Timestamp::now().as_second()
    }

    /// The independent verifier: `standardwebhooks` from PyPI (pinned in tools/requirements.txt,
    /// installed into .venv by `make bootstrap`), given the secret, the body and the headers.
    fn pypi_verifies(secret: &str, payload: &str, signed: &Signed) -> bool {
        let python = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../.venv/bin/python");
        let script = "import json, sys\n\
                      from standardwebhooks.webhooks import Webhook, WebhookVerificationError\n\
                      args = json.load(sys.stdin)\n\
                      try:\n    Webhook(args['secret']).verify(args['payload'], args['headers'])\nexcept WebhookVerificationError as e:\n    print(e); sys.exit(3)\n";
        let headers: serde_json::Map<String, serde_json::Value> =
            signed.headers().into_iter().map(|(k, v)| (k.to_string(), v.into())).collect();
        let input = serde_json::json!({"secret": secret, "payload": payload, "headers": headers}).to_string();
        let mut child = Command::new(&python)
            .args(["-c", script])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("{} (run `make bootstrap`): {e}", python.display()));
        std::io::Write::write_all(child.stdin.as_mut().unwrap(), input.as_bytes()).unwrap();
        let out = child.wait_with_output().unwrap();
        match out.status.code() {
            Some(0) => true,
            Some(3) => false,
            other => panic!("the verifier failed to run ({other:?}): {}", String::from_utf8_lossy(&out.stdout)),
        }
    }

    #[test]
    fn the_independent_pypi_verifier_accepts_our_signature_and_refuses_a_tampered_body() {
        let secret = SigningSecret::generate();
        assert!(secret.expose().starts_with("whsec_"));
        let signed = sign(&[&secret], "evt_2KWPBgLlAfxdpx2AI54pPJ85f4W", now(), PAYLOAD).unwrap();
        assert!(pypi_verifies(secret.expose(), PAYLOAD, &signed));
        assert!(!pypi_verifies(secret.expose(), &PAYLOAD.replace("9900", "99000"), &signed), "a changed amount");
        assert!(!pypi_verifies(SigningSecret::generate().expose(), PAYLOAD, &signed), "another endpoint's secret");
        let stale = sign(&[&secret], "evt_1", now() - 3_600, PAYLOAD).unwrap();
        assert!(!pypi_verifies(secret.expose(), PAYLOAD, &stale), "an attempt an hour old is a replay");
    }

    #[test]
    fn during_a_rotation_both_secrets_verify() {
        let (new, old) = (SigningSecret::generate(), SigningSecret::generate());
        let signed = sign(&[&new, &old], "evt_rot", now(), PAYLOAD).unwrap();
        assert_eq!(signed.signature.split(' ').count(), 2);
        assert!(pypi_verifies(new.expose(), PAYLOAD, &signed));
        assert!(pypi_verifies(old.expose(), PAYLOAD, &signed));
        for secret in [&new, &old] {
            let s = [secret.clone()];
            assert_eq!(
                verify(
                    &s,
                    Some("evt_rot"),
                    Some(&signed.timestamp.to_string()),
                    Some(&signed.signature),
                    PAYLOAD,
                    now()
                ),
                Ok(())
            );
        }
    }

    #[test]
    fn our_verifier_refuses_what_the_spec_refuses() {
        let secret = SigningSecret::generate();
        let t = now();
        let signed = sign(&[&secret], "evt_1", t, PAYLOAD).unwrap();
        let ts = t.to_string();
        let check = |id: Option<&str>, ts: Option<&str>, sig: Option<&str>, body: &str, at: i64| {
            verify(std::slice::from_ref(&secret), id, ts, sig, body, at)
        };
        assert_eq!(check(Some("evt_1"), Some(&ts), Some(&signed.signature), PAYLOAD, t), Ok(()));
        assert_eq!(check(Some("evt_2"), Some(&ts), Some(&signed.signature), PAYLOAD, t), Err(SignatureError::NoMatch));
        assert_eq!(check(Some("evt_1"), Some(&ts), Some(&signed.signature), "{}", t), Err(SignatureError::NoMatch));
        assert_eq!(
            check(Some("evt_1"), Some(&ts), Some(&signed.signature), PAYLOAD, t + 301),
            Err(SignatureError::Stale)
        );
        assert_eq!(
            check(Some("evt_1"), None, Some(&signed.signature), PAYLOAD, t),
            Err(SignatureError::MissingHeaders)
        );
        assert_eq!(
            sign(&[&secret], "evt.1", t, PAYLOAD),
            Err(SignatureError::BadId),
            "a `.` would shift the signed fields"
        );
        assert!(SigningSecret::parse("whsec_c2hvcnQ=").is_err(), "shorter than 24 bytes");
        assert!(SigningSecret::parse("sk_abc").is_err());
        assert!(!format!("{secret:?}").contains(&secret.expose()[6..]), "a secret never prints");
    }
}
