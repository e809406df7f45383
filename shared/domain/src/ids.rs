//! Random identifiers from the operating system's CSPRNG, and the digest keys are made of.

use sha2::{Digest, Sha256};

/// `len` characters of lowercase base-32 (5 bits each).
pub fn random_base32(len: usize) -> String {
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz234567";
    let mut bytes = vec![0u8; len];
    getrandom::fill(&mut bytes).expect("the OS random source is available");
    bytes.iter().map(|b| ALPHABET[usize::from(b & 31)] as char).collect()
}

/// `{prefix}_{24 random base-32 characters}` (120 bits), e.g. `chk_…`, `sub_…`.
pub fn new_id(prefix: &str) -> String {
    format!("{prefix}_{}", random_base32(24))
}

/// Lower-case hex of SHA-256.
pub fn sha256_hex(data: &[u8]) -> String {
    let digest = Sha256::digest(data);
    let mut out = String::with_capacity(64);
    for b in digest {
        out.push_str(&format!("{b:02x}"));
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn ids_are_prefixed_and_distinct() {
        let a = super::new_id("chk");
        assert!(a.starts_with("chk_") && a.len() == 28);
        assert!(a[4..].bytes().all(|b| b.is_ascii_lowercase() || (b'2'..=b'7').contains(&b)));
        assert_ne!(a, super::new_id("chk"));
    }
}
