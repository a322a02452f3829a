//! Opaque bearer tokens (sessions, login steps): 256 random bits, stored only as SHA-256.

use sha2::{Digest, Sha256};

use super::password::HashError;

/// A fresh token: 32 random bytes, hex (64 characters).
pub fn generate() -> Result<String, HashError> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(|e| HashError::Random(e.to_string()))?;
    Ok(hex::encode(bytes))
}

/// True if `raw` has the shape of a token we issue (so garbage is refused without a lookup).
pub fn well_formed(raw: &str) -> bool {
    raw.len() == 64 && raw.bytes().all(|b| b.is_ascii_hexdigit())
}

/// The form stored and looked up: SHA-256, hex. Tokens carry 256 bits of entropy, so a fast
/// hash is enough (no salt or stretching needed).
pub fn digest(raw: &str) -> String {
    hex::encode(Sha256::digest(raw.trim().to_ascii_lowercase().as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_random_and_hashed() {
        let a = generate().unwrap();
        let b = generate().unwrap();
        assert_ne!(a, b);
        assert!(well_formed(&a));
        assert!(!well_formed("abc"));
        assert_ne!(digest(&a), a);
        assert_eq!(digest(&a), digest(&a.to_uppercase()));
    }
}
