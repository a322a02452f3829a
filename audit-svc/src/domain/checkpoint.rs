//! Signed checkpoints: the chain's state at one sequence, signed with audit's Ed25519 key as a
//! signed note (<https://c2sp.org/signed-note>) carrying a checkpoint
//! (<https://c2sp.org/tlog-checkpoint>), so anyone with the public key can check it.
//!
//! Rules:
//!
//! 1. The note text is four lines: the origin, the sequence in decimal, the chain hash in
//!    standard base64, and `time <RFC 3339>`; each ends with a newline.
//! 2. After a blank line comes one signature line, `— <origin> <base64(key id || signature)>`:
//!    the key id is the first 4 bytes of SHA-256(origin || "\n" || 0x01 || public key), and the
//!    signature is Ed25519 over the note text.
//! 3. The verifier key is published as `<origin>+<hex key id>+<base64(0x01 || public key)>`, the
//!    note format's own spelling, which stock verifiers read.
//! 4. A note is accepted only if a signature line names this origin and key id and verifies;
//!    anything else (another key, a changed line, garbage) is refused.

use base64::{Engine, engine::general_purpose::STANDARD};
use ed25519_dalek::{Signature, Signer, SigningKey, Verifier, VerifyingKey};
use sha2::{Digest, Sha256};

/// The algorithm byte of Ed25519 in signed notes.
const ED25519: u8 = 0x01;

/// The chain's state one checkpoint states.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainState {
    pub sequence: u64,
    pub chain_hash: [u8; 32],
    /// Unix microseconds.
    pub signed_at: i64,
}

/// audit's signing identity.
#[derive(Clone)]
pub struct CheckpointKey {
    origin: String,
    key: SigningKey,
}

impl std::fmt::Debug for CheckpointKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CheckpointKey").field("origin", &self.origin).field("key", &"***").finish()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CheckpointError {
    #[error("the checkpoint is not a signed note")]
    Malformed,
    #[error("the checkpoint carries no signature of this audit trail's key")]
    UnknownKey,
    #[error("the checkpoint's signature does not verify")]
    BadSignature,
}

impl CheckpointKey {
    /// `seed`: the 32-byte Ed25519 private key.
    pub fn new(origin: &str, seed: [u8; 32]) -> Self {
        Self { origin: origin.to_owned(), key: SigningKey::from_bytes(&seed) }
    }

    pub fn origin(&self) -> &str {
        &self.origin
    }

    pub fn verifying_key(&self) -> VerifyingKey {
        self.key.verifying_key()
    }

    /// `<origin>+<hex key id>+<base64(0x01 || public key)>`.
    pub fn verifier_key(&self) -> String {
        let public = self.verifying_key().to_bytes();
        let mut typed = vec![ED25519];
        typed.extend_from_slice(&public);
        format!("{}+{}+{}", self.origin, hex::encode(key_id(&self.origin, &public)), STANDARD.encode(typed))
    }

    /// The signed note stating `state`.
    pub fn sign(&self, state: &ChainState) -> String {
        let text = note_text(&self.origin, state);
        let signature = self.key.sign(text.as_bytes()).to_bytes();
        let mut blob = key_id(&self.origin, &self.verifying_key().to_bytes()).to_vec();
        blob.extend_from_slice(&signature);
        format!("{text}\n\u{2014} {} {}\n", self.origin, STANDARD.encode(blob))
    }

    /// The state a note states, if this key signed it.
    pub fn open(&self, note: &str) -> Result<ChainState, CheckpointError> {
        verify(&self.origin, &self.verifying_key(), note)
    }
}

/// Checks `note` against a public key alone, as a third party would.
pub fn verify(origin: &str, public: &VerifyingKey, note: &str) -> Result<ChainState, CheckpointError> {
    let (text, signatures) = note.split_once("\n\n").ok_or(CheckpointError::Malformed)?;
    let text = format!("{text}\n");
    let id = key_id(origin, &public.to_bytes());
    let mut found = false;
    for line in signatures.lines().filter(|l| !l.is_empty()) {
        let rest = line.strip_prefix("\u{2014} ").ok_or(CheckpointError::Malformed)?;
        let (name, blob) = rest.split_once(' ').ok_or(CheckpointError::Malformed)?;
        let blob = STANDARD.decode(blob).map_err(|_| CheckpointError::Malformed)?;
        if name != origin || blob.len() != 4 + 64 || blob[..4] != id {
            continue;
        }
        found = true;
        let signature: [u8; 64] = blob[4..].try_into().map_err(|_| CheckpointError::Malformed)?;
        public
            .verify(text.as_bytes(), &Signature::from_bytes(&signature))
            .map_err(|_| CheckpointError::BadSignature)?;
        break;
    }
    if !found {
        return Err(CheckpointError::UnknownKey);
    }
    parse_text(origin, &text)
}

fn note_text(origin: &str, state: &ChainState) -> String {
    let time = tether_runtime::db::timestamp(state.signed_at);
    format!("{origin}\n{}\n{}\ntime {time}\n", state.sequence, STANDARD.encode(state.chain_hash))
}

fn parse_text(origin: &str, text: &str) -> Result<ChainState, CheckpointError> {
    let mut lines = text.lines();
    if lines.next() != Some(origin) {
        return Err(CheckpointError::Malformed);
    }
    let sequence = lines.next().and_then(|l| l.parse::<u64>().ok()).ok_or(CheckpointError::Malformed)?;
    let hash = lines.next().and_then(|l| STANDARD.decode(l).ok()).ok_or(CheckpointError::Malformed)?;
    let chain_hash: [u8; 32] = hash.try_into().map_err(|_| CheckpointError::Malformed)?;
    let time = lines.next().and_then(|l| l.strip_prefix("time ")).ok_or(CheckpointError::Malformed)?;
    let signed_at: prost_types::Timestamp = time.parse().map_err(|_| CheckpointError::Malformed)?;
    Ok(ChainState { sequence, chain_hash, signed_at: tether_runtime::db::micros(&signed_at) })
}

fn key_id(origin: &str, public: &[u8; 32]) -> [u8; 4] {
    let mut hasher = Sha256::new();
    hasher.update(origin.as_bytes());
    hasher.update(b"\n");
    hasher.update([ED25519]);
    hasher.update(public);
    let digest: [u8; 32] = hasher.finalize().into();
    [digest[0], digest[1], digest[2], digest[3]]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state() -> ChainState {
        ChainState { sequence: 42, chain_hash: [7; 32], signed_at: 1_790_000_000_123_456 }
    }

    #[test]
    fn a_signed_checkpoint_opens_with_the_public_key_alone() {
        let key = CheckpointKey::new("tether-audit", [3; 32]);
        let note = key.sign(&state());
        assert!(note.starts_with("tether-audit\n42\n"), "{note}");
        assert!(note.contains("\ntime 2026-"), "{note}");
        assert_eq!(verify("tether-audit", &key.verifying_key(), &note), Ok(state()));
        assert_eq!(key.open(&note), Ok(state()));
    }

    #[test]
    fn forged_or_altered_checkpoints_are_refused() {
        let key = CheckpointKey::new("tether-audit", [3; 32]);
        let other = CheckpointKey::new("tether-audit", [4; 32]);
        let note = key.sign(&state());
        assert_eq!(other.open(&note), Err(CheckpointError::UnknownKey), "signed by another key");
        let forged = other.sign(&state());
        assert_eq!(key.open(&forged), Err(CheckpointError::UnknownKey));
        let altered = note.replacen("\n42\n", "\n43\n", 1);
        assert_eq!(key.open(&altered), Err(CheckpointError::BadSignature), "a changed line");
        // Same key id, signature bytes replaced.
        let (text, sig) = note.split_once("\n\n").unwrap();
        let blob = STANDARD.decode(sig.trim().rsplit(' ').next().unwrap()).unwrap();
        let mut bad = blob.clone();
        bad[10] ^= 1;
        let tampered = format!("{text}\n\n\u{2014} tether-audit {}\n", STANDARD.encode(bad));
        assert_eq!(key.open(&tampered), Err(CheckpointError::BadSignature));
        assert_eq!(key.open("garbage"), Err(CheckpointError::Malformed));
    }

    #[test]
    fn the_verifier_key_has_the_note_formats_spelling() {
        let key = CheckpointKey::new("tether-audit", [3; 32]);
        let vkey = key.verifier_key();
        let parts: Vec<&str> = vkey.split('+').collect();
        assert_eq!(parts.len(), 3);
        assert_eq!(parts[0], "tether-audit");
        assert_eq!(parts[1].len(), 8);
        let typed = STANDARD.decode(parts[2]).unwrap();
        assert_eq!(typed[0], 0x01);
        assert_eq!(&typed[1..], key.verifying_key().as_bytes());
    }
}
