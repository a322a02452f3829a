//! Password hashing: argon2id with OWASP's minimum parameters (m = 19 MiB, t = 2, p = 1).
//!
//! The parameters are written into each PHC string, so they can be raised later: a hash made
//! with weaker parameters still verifies, and [`needs_rehash`] tells the caller to replace it.

use argon2::{Algorithm, Argon2, Params, PasswordHash, PasswordHasher, PasswordVerifier, Version};

/// Memory cost in KiB (19 MiB).
pub const MEMORY_KIB: u32 = 19 * 1024;
pub const ITERATIONS: u32 = 2;
pub const PARALLELISM: u32 = 1;

#[derive(Debug, thiserror::Error)]
pub enum HashError {
    #[error("random source unavailable: {0}")]
    Random(String),
    #[error("password hashing failed: {0}")]
    Hash(String),
}

fn hasher() -> Result<Argon2<'static>, HashError> {
    let params = Params::new(MEMORY_KIB, ITERATIONS, PARALLELISM, None).map_err(|e| HashError::Hash(e.to_string()))?;
    Ok(Argon2::new(Algorithm::Argon2id, Version::V0x13, params))
}

/// Hashes `password` with a fresh 16-byte salt; returns the PHC string. CPU-heavy: call it off
/// the async runtime.
pub fn hash(password: &str) -> Result<String, HashError> {
    let mut salt = [0u8; 16];
    getrandom::fill(&mut salt).map_err(|e| HashError::Random(e.to_string()))?;
    let hash =
        hasher()?.hash_password_with_salt(password.as_bytes(), &salt).map_err(|e| HashError::Hash(e.to_string()))?;
    Ok(hash.to_string())
}

/// True if `password` matches `phc`. A malformed stored hash never matches.
pub fn verify(password: &str, phc: &str) -> bool {
    let Ok(parsed) = PasswordHash::new(phc) else {
        return false;
    };
    Argon2::default().verify_password(password.as_bytes(), &parsed).is_ok()
}

/// True if `phc` was made with parameters other than today's, so it should be re-hashed on the
/// next successful login.
pub fn needs_rehash(phc: &str) -> bool {
    let Ok(parsed) = PasswordHash::new(phc) else {
        return true;
    };
    let current = (MEMORY_KIB, ITERATIONS, PARALLELISM);
    match Params::try_from(&parsed) {
        Ok(p) => parsed.algorithm.as_str() != "argon2id" || (p.m_cost(), p.t_cost(), p.p_cost()) != current,
        Err(_) => true,
    }
}

/// A random password of `len` characters from an unambiguous alphabet (no 0/O, 1/l/I).
pub fn generate(len: usize) -> Result<String, HashError> {
    const ALPHABET: &[u8] = b"abcdefghijkmnopqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789";
    // Rejection sampling keeps every character equally likely.
    let limit = 256 - (256 % ALPHABET.len());
    let mut out = String::with_capacity(len);
    let mut buf = [0u8; 64];
    while out.len() < len {
        getrandom::fill(&mut buf).map_err(|e| HashError::Random(e.to_string()))?;
        for &b in &buf {
            if (b as usize) < limit && out.len() < len {
                out.push(ALPHABET[b as usize % ALPHABET.len()] as char);
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_verify_and_carry_their_parameters() {
        let phc = hash("correct horse battery staple").unwrap();
        assert!(phc.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{phc}");
        assert!(verify("correct horse battery staple", &phc));
        assert!(!verify("correct horse battery stapl", &phc));
        assert!(!needs_rehash(&phc));
        assert!(!verify("anything", "not a phc string"));
    }

    #[test]
    fn weaker_hashes_still_verify_but_ask_for_a_rehash() {
        let weak = Argon2::new(Algorithm::Argon2id, Version::V0x13, Params::new(8192, 1, 1, None).unwrap());
        let phc = weak.hash_password_with_salt(b"hunter2hunter2", b"saltsaltsaltsalt").unwrap().to_string();
        assert!(verify("hunter2hunter2", &phc));
        assert!(needs_rehash(&phc));
    }

    #[test]
    fn generated_passwords_have_the_asked_length_and_differ() {
        let a = generate(20).unwrap();
        let b = generate(20).unwrap();
        assert_eq!(a.len(), 20);
        assert_ne!(a, b);
        assert!(a.chars().all(|c| c.is_ascii_alphanumeric()));
    }
}
