//! The keys that encrypt TOTP secrets at rest (`TETHER_IDENTITY_TOTP_KEYS`).
//!
//! A TOTP secret must be read back in clear to compute codes, so it cannot be hashed like a
//! password or a recovery code; it is sealed with XChaCha20-Poly1305 instead. Each sealing uses
//! a fresh random 192-bit nonce and the account id as associated data, so a ciphertext copied to
//! another account's row does not open. The stored form names the key that sealed it: the first
//! configured key seals, every configured key opens, which is what makes rotation possible.
//!
//! Rules:
//!
//! 1. `TETHER_IDENTITY_TOTP_KEYS` lists the keys: the first seals, all open; the key's id is stored
//!    beside the ciphertext (`totp.secret_key_id`).
//! 2. Each start re-seals, in batches and only rows still holding what was read, every secret in
//!    plain text (databases from before) or under another key than the first. A rotation is: add
//!    the new key first, restart, drop the old one.
//! 3. After sealing plain-text rows the table is rewritten once (SQLite `VACUUM` and a WAL
//!    checkpoint, PostgreSQL `VACUUM FULL totp`), since the old bytes otherwise linger in freed
//!    pages and the write-ahead log.
//! 4. A secret whose key is not configured is left as it is (logged at start-up) and its codes
//!    fail closed at the second-factor step: FAILED_PRECONDITION / `CONFIG_INVALID`, no session, no
//!    failure counted. Recovery codes still work, and an admin's ResetTotp clears it.

use chacha20poly1305::{
    KeyInit, XChaCha20Poly1305, XNonce,
    aead::{Aead, Payload},
};

const NONCE_LEN: usize = 24;
/// Binds a ciphertext to its use as well as to its account.
const ASSOCIATED_LABEL: &str = "tether.identity.totp.v1:";

/// What a value of `TETHER_IDENTITY_TOTP_KEYS` must look like.
pub const EXPECTED: &str = "comma-separated id:key pairs, each key 64 hex digits (32 random bytes, e.g. from \
                            `openssl rand -hex 32`), ids of letters, digits, '.', '_' or '-'; the first key encrypts";

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum KeyError {
    /// The secret was sealed with a key that is not (any more) configured.
    #[error("the TOTP secret is encrypted with key {key_id:?}, which TETHER_IDENTITY_TOTP_KEYS does not hold")]
    UnknownKey { key_id: String },
    /// The key is known but the ciphertext does not open under it for this account (altered,
    /// moved from another account, or a different key given the same id).
    #[error("the TOTP secret does not decrypt with key {key_id:?}")]
    Unreadable { key_id: String },
    #[error("random source: {0}")]
    Random(String),
}

/// A secret as stored: the id of the key that sealed it and hex(nonce || ciphertext || tag).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sealed {
    pub key_id: String,
    pub ciphertext: String,
}

#[derive(Clone)]
struct TotpKey {
    id: String,
    cipher: XChaCha20Poly1305,
}

/// The configured keys, the sealing one first.
#[derive(Clone)]
pub struct TotpKeys {
    keys: Vec<TotpKey>,
}

impl std::fmt::Debug for TotpKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Only the ids: the keys themselves are never printed.
        f.debug_tuple("TotpKeys").field(&self.keys.iter().map(|k| k.id.as_str()).collect::<Vec<_>>()).finish()
    }
}

/// Why a configured value was refused, naming the offending key id where there is one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError {
    /// What may be shown of the bad entry: its id, never its key.
    pub shown: String,
    pub problem: String,
}

impl TotpKeys {
    /// Parses `id:hexkey[,id:hexkey...]`.
    pub fn parse(raw: &str) -> Result<Self, ParseError> {
        let mut keys: Vec<TotpKey> = Vec::new();
        for (n, entry) in raw.split(',').map(str::trim).enumerate() {
            let position = n + 1;
            let Some((id, hex_key)) = entry.split_once(':') else {
                return Err(ParseError {
                    shown: "***".into(),
                    problem: format!("entry {position} is not of the form id:key"),
                });
            };
            let (id, hex_key) = (id.trim(), hex_key.trim());
            let shown = format!("{id}:***");
            let id_ok = !id.is_empty()
                && id.len() <= 64
                && id.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
            if !id_ok {
                return Err(ParseError {
                    shown: "***".into(),
                    problem: format!(
                        "entry {position} has an id that is empty, too long or not of letters, digits, '.', '_', '-'"
                    ),
                });
            }
            if keys.iter().any(|k| k.id == id) {
                return Err(ParseError { shown, problem: format!("key id {id} appears twice") });
            }
            let cipher = hex::decode(hex_key)
                .ok()
                .and_then(|bytes| XChaCha20Poly1305::new_from_slice(&bytes).ok())
                .ok_or_else(|| ParseError { shown, problem: format!("key {id} is not 64 hex digits (32 bytes)") })?;
            keys.push(TotpKey { id: id.to_owned(), cipher });
        }
        Ok(Self { keys })
    }

    /// The id of the key new secrets are sealed with.
    pub fn sealing_key_id(&self) -> &str {
        self.keys.first().map(|k| k.id.as_str()).unwrap_or_default()
    }

    /// Seals `secret` (the base32 TOTP secret) for `account_id` under the first key.
    pub fn seal(&self, account_id: &str, secret: &str) -> Result<Sealed, KeyError> {
        let key = self.keys.first().ok_or_else(|| KeyError::UnknownKey { key_id: String::new() })?;
        let mut nonce = [0u8; NONCE_LEN];
        getrandom::fill(&mut nonce).map_err(|e| KeyError::Random(e.to_string()))?;
        let aad = associated_data(account_id);
        let ciphertext = key
            .cipher
            .encrypt(&XNonce::from(nonce), Payload { msg: secret.as_bytes(), aad: aad.as_bytes() })
            .map_err(|_| KeyError::Unreadable { key_id: key.id.clone() })?;
        let mut stored = nonce.to_vec();
        stored.extend_from_slice(&ciphertext);
        Ok(Sealed { key_id: key.id.clone(), ciphertext: hex::encode(stored) })
    }

    /// The base32 secret sealed in `ciphertext` for `account_id` under key `key_id`.
    pub fn open(&self, account_id: &str, key_id: &str, ciphertext: &str) -> Result<String, KeyError> {
        let key = self
            .keys
            .iter()
            .find(|k| k.id == key_id)
            .ok_or_else(|| KeyError::UnknownKey { key_id: key_id.to_owned() })?;
        let unreadable = || KeyError::Unreadable { key_id: key_id.to_owned() };
        let stored = hex::decode(ciphertext).map_err(|_| unreadable())?;
        if stored.len() < NONCE_LEN {
            return Err(unreadable());
        }
        let (nonce, sealed) = stored.split_at(NONCE_LEN);
        let nonce = XNonce::try_from(nonce).map_err(|_| unreadable())?;
        let aad = associated_data(account_id);
        let plain =
            key.cipher.decrypt(&nonce, Payload { msg: sealed, aad: aad.as_bytes() }).map_err(|_| unreadable())?;
        String::from_utf8(plain).map_err(|_| unreadable())
    }
}

fn associated_data(account_id: &str) -> String {
    format!("{ASSOCIATED_LABEL}{account_id}")
}

#[cfg(test)]
mod tests {
    use super::*;

    const K1: &str = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";
    const K2: &str = "f0e0d0c0b0a090807060504030201000f0e0d0c0b0a090807060504030201000";

    #[test]
    fn the_first_key_seals_and_every_key_opens() {
        let old = TotpKeys::parse(&format!("old:{K1}")).unwrap();
        let sealed = old.seal("acc-1", "JBSWY3DPEHPK3PXP").unwrap();
        assert_eq!(sealed.key_id, "old");
        assert!(!sealed.ciphertext.contains("JBSWY3DPEHPK3PXP"));
        assert_ne!(old.seal("acc-1", "JBSWY3DPEHPK3PXP").unwrap(), sealed, "a fresh nonce each time");

        let both = TotpKeys::parse(&format!(" new:{K2} , old:{K1}")).unwrap();
        assert_eq!(both.sealing_key_id(), "new");
        assert_eq!(both.open("acc-1", "old", &sealed.ciphertext).unwrap(), "JBSWY3DPEHPK3PXP");
        assert_eq!(both.seal("acc-1", "X").unwrap().key_id, "new");
    }

    #[test]
    fn a_secret_opens_only_for_its_account_and_key() {
        let keys = TotpKeys::parse(&format!("a:{K1},b:{K2}")).unwrap();
        let sealed = keys.seal("acc-1", "JBSWY3DPEHPK3PXP").unwrap();
        assert_eq!(keys.open("acc-2", "a", &sealed.ciphertext), Err(KeyError::Unreadable { key_id: "a".into() }));
        assert_eq!(keys.open("acc-1", "b", &sealed.ciphertext), Err(KeyError::Unreadable { key_id: "b".into() }));
        assert_eq!(keys.open("acc-1", "c", &sealed.ciphertext), Err(KeyError::UnknownKey { key_id: "c".into() }));
        assert!(keys.open("acc-1", "a", "zz").is_err());
        assert!(keys.open("acc-1", "a", "00").is_err());
    }

    #[test]
    fn bad_values_name_the_key_id_and_never_show_the_key() {
        let err = TotpKeys::parse(&format!("good:{K1},bad:1234")).unwrap_err();
        assert_eq!(err.shown, "bad:***");
        assert!(err.problem.contains("bad"), "{err:?}");
        assert!(TotpKeys::parse(&format!("a:{K1},a:{K2}")).unwrap_err().problem.contains("twice"));
        assert_eq!(TotpKeys::parse(K1).unwrap_err().shown, "***");
        assert!(TotpKeys::parse(&format!("bad id:{K1}")).is_err());
        let debug = format!("{:?}", TotpKeys::parse(&format!("a:{K1}")).unwrap());
        assert!(!debug.contains(K1) && debug.contains('a'), "{debug}");
    }
}
