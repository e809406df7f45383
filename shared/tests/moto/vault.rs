//! Billing keys sealed under a KMS key in moto's KMS, through the SDK, as in AWS.

use paycycle::domain::attempt::SubscriptionId;
use paycycle::store::vault::{KeyVault, KmsCalls, VaultError};

async fn vaults() -> (KeyVault, KeyVault) {
    let fresh = paycycle_fixtures::Fresh::dynamodb().await;
    let aws = fresh.aws.as_ref().unwrap();
    let key = paycycle_fixtures::kms_key(&aws.provisioned);
    (KeyVault::new(&aws.sdk, &key), KeyVault::new(&aws.sdk, &key))
}

/// verify seals in one process, renew opens in another: one GenerateDataKey for every key verify
/// seals, one Decrypt for every key renew opens of that data key — then none.
#[tokio::test]
async fn a_warm_process_opens_billing_keys_without_calling_kms() {
    let (verify, renew) = vaults().await;
    let mut sealed = Vec::new();
    for i in 0..20 {
        let id = SubscriptionId::parse(&format!("sub_k{i}")).unwrap();
        let key = verify.seal(&id, &format!("PAYER-{i:06}")).await.unwrap();
        sealed.push((id, key));
    }
    assert_eq!(verify.kms_calls(), KmsCalls { generate_data_key: 1, decrypt: 0 });
    for (i, (id, key)) in sealed.iter().enumerate() {
        assert_eq!(renew.open(id, key).await.unwrap().expose(), format!("PAYER-{i:06}"));
    }
    assert_eq!(renew.kms_calls(), KmsCalls { generate_data_key: 0, decrypt: 1 }, "20 renewals, one Decrypt");
    let (id, key) = &sealed[0];
    let other = SubscriptionId::parse("sub_kother").unwrap();
    assert_eq!(renew.open(&other, key).await.unwrap_err(), VaultError::DoesNotOpen("sub_kother".into()));
    assert!(renew.open(id, key).await.is_ok());
}

/// A data key KMS did not wrap under this key with this purpose does not unwrap: the vault asks
/// KMS with the encryption context, and KMS refuses another one.
#[tokio::test]
async fn a_data_key_wrapped_for_another_purpose_does_not_unwrap() {
    let fresh = paycycle_fixtures::Fresh::dynamodb().await;
    let aws = fresh.aws.as_ref().unwrap();
    let key = paycycle_fixtures::kms_key(&aws.provisioned);
    let kms = aws_sdk_kms::Client::new(&aws.sdk);
    let other = kms
        .generate_data_key()
        .key_id(&key)
        .key_spec(aws_sdk_kms::types::DataKeySpec::Aes256)
        .encryption_context("purpose", "something-else")
        .send()
        .await
        .unwrap();
    let vault = KeyVault::new(&aws.sdk, &key);
    let id = SubscriptionId::parse("sub_kctx").unwrap();
    let paycycle::store::vault::StoredBillingKey::Sealed(mut sealed) = vault.seal(&id, "PAYER-1").await.unwrap() else {
        panic!("sealed")
    };
    use base64::Engine;
    sealed.dek = base64::engine::general_purpose::STANDARD.encode(other.ciphertext_blob().unwrap().as_ref());
    let fresh_vault = KeyVault::new(&aws.sdk, &key);
    let err = fresh_vault.open(&id, &paycycle::store::vault::StoredBillingKey::Sealed(sealed)).await.unwrap_err();
    assert!(matches!(err, VaultError::Kms { operation: "Decrypt", .. }), "{err}");
}
