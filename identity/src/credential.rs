//! Device credentials: long-lived random secrets (`lcd_` + 43 base64url characters) a device
//! exchanges for a short-lived token. Only their SHA-256 is stored, so a database dump
//! holds no usable credential; a plain hash (no salt, no stretching) is enough because the
//! secret has 256 random bits, not a password's few.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::rand::{SecureRandom, SystemRandom};
use sha2::{Digest, Sha256};

/// The prefix of every credential: lets secret scanners and humans recognise one.
pub const PREFIX: &str = "lcd_";

/// Length of a credential in characters: the prefix and 32 bytes in base64url.
pub const LEN: usize = 4 + 43;

/// A fresh credential and its SHA-256 (what is stored).
pub fn generate() -> (String, [u8; 32]) {
    let mut bytes = [0u8; 32];
    SystemRandom::new()
        .fill(&mut bytes)
        .expect("the system random generator works");
    let mut plain = String::with_capacity(LEN);
    plain.push_str(PREFIX);
    URL_SAFE_NO_PAD.encode_string(bytes, &mut plain);
    let hash = hash(&plain);
    (plain, hash)
}

/// The SHA-256 of a credential as presented (prefix included): the lookup key.
pub fn hash(plain: &str) -> [u8; 32] {
    Sha256::digest(plain.as_bytes()).into()
}

/// Whether `plain` has a credential's shape, so a malformed one is refused without a lookup.
pub fn looks_like(plain: &str) -> bool {
    plain.len() == LEN
        && plain.starts_with(PREFIX)
        && plain[PREFIX.len()..]
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_generated_credential_looks_like_one_and_hashes_to_its_hash() {
        let (plain, h) = generate();
        assert!(looks_like(&plain), "{plain}");
        assert_eq!(hash(&plain), h);
        let (other, other_hash) = generate();
        assert_ne!(plain, other);
        assert_ne!(h, other_hash);
    }

    #[test]
    fn strings_of_another_shape_do_not_look_like_credentials() {
        let (plain, _) = generate();
        assert!(!looks_like(&plain[1..]));
        assert!(!looks_like(&format!("{plain}A")));
        assert!(!looks_like(&plain.replacen("lcd_", "lcx_", 1)));
        assert!(!looks_like(&format!("lcd_{}", "+".repeat(43))));
        assert!(!looks_like(""));
    }
}
