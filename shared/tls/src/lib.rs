//! The certificate authorities the AWS SDK's clients trust, compiled in: Mozilla's root programme
//! as the `webpki-root-certs` crate ships it, which holds Amazon Trust Services' roots (Amazon Root
//! CA 1–4, Starfield Services G2 — a test checks) that AWS's service endpoints chain to.
//!
//! Why compiled in, not read from the file system: `rustls-native-certs` walks `/etc/ssl/certs`
//! and parses every file there, and did so once for the SDK's client and once more for reqwest's
//! (the PG clients) per cold start — about 4.8 ms of renew's 8.3 ms start on the bench machine.
//! Only the SDK uses these: AWS's chains are known, a PG's are not (the PG and partner-webhook
//! clients keep the system's store, `paycycle_pg::http_client`). The set is as current as the
//! build: `cargo update -p webpki-root-certs` takes Mozilla's latest.

use base64::Engine;
use rustls::pki_types::CertificateDer;

/// Mozilla's roots as certificates (DER).
pub fn root_certificates() -> &'static [CertificateDer<'static>] {
    webpki_root_certs::TLS_SERVER_ROOT_CERTS
}

/// The same roots PEM-encoded, one certificate each, for clients that take PEM (the AWS SDK's
/// `TrustStore`).
pub fn root_pems() -> impl Iterator<Item = Vec<u8>> {
    root_certificates().iter().map(|der| pem(der.as_ref()))
}

fn pem(der: &[u8]) -> Vec<u8> {
    let body = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = String::with_capacity(body.len() + body.len() / 64 + 64);
    out.push_str("-----BEGIN CERTIFICATE-----\n");
    for line in body.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(line).expect("base64 is ASCII"));
        out.push('\n');
    }
    out.push_str("-----END CERTIFICATE-----\n");
    out.into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustls::RootCertStore;
    use rustls::pki_types::pem::PemObject;

    /// The trust anchors as rustls parses them (the AWS SDK's client parses the same PEMs).
    fn roots() -> RootCertStore {
        let mut store = RootCertStore::empty();
        store.add_parsable_certificates(root_certificates().iter().cloned());
        store
    }

    /// The subjects of the trusted roots, as their DER bytes (the `Name` each anchor carries).
    fn subjects() -> Vec<Vec<u8>> {
        roots().roots.iter().map(|anchor| anchor.subject.as_ref().to_vec()).collect()
    }

    fn has_common_name(subject: &[u8], name: &str) -> bool {
        subject.windows(name.len()).any(|w| w == name.as_bytes())
    }

    #[test]
    fn every_compiled_in_root_parses() {
        assert!(root_certificates().len() > 100, "{}", root_certificates().len());
        assert_eq!(roots().len(), root_certificates().len());
    }

    /// AWS's service endpoints (DynamoDB, EventBridge, SQS, KMS, Secrets Manager) present
    /// certificates from Amazon Trust Services, whose roots are Amazon Root CA 1–4 and, cross-signed,
    /// Starfield Services Root Certificate Authority - G2.
    #[test]
    fn the_roots_include_amazon_trust_services() {
        let subjects = subjects();
        for name in ["Amazon Root CA 1", "Amazon Root CA 2", "Amazon Root CA 3", "Amazon Root CA 4"] {
            assert!(subjects.iter().any(|s| has_common_name(s, name)), "{name} is not trusted");
        }
        assert!(subjects.iter().any(|s| has_common_name(s, "Starfield Services Root Certificate Authority - G2")));
    }

    #[test]
    fn the_pem_encoding_decodes_to_the_same_certificates() {
        let decoded: Vec<Vec<u8>> = root_pems()
            .map(|pem| CertificateDer::from_pem_slice(&pem).expect("one PEM certificate").as_ref().to_vec())
            .collect();
        let original: Vec<Vec<u8>> = root_certificates().iter().map(|c| c.as_ref().to_vec()).collect();
        assert_eq!(decoded, original);
    }
}
