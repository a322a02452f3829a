//! The hash chain.
//!
//! Rules:
//!
//! 1. Records are numbered 1, 2, 3, … without gaps, in the order they were stored.
//! 2. `hash(n) = SHA-256(hash(n-1) || n as 8 bytes big-endian || received_at (unix µs) as 8 bytes
//!    big-endian || protobuf encoding of the stored event)`, with `hash(0)` = 32 zero bytes.
//!    The stored event is exactly what a reader gets back (times truncated to microseconds), so
//!    altering any field a reader sees, the order, or the numbering changes a hash.
//! 3. A break is reported at the first sequence whose stored predecessor link or own hash does
//!    not match the recomputation, or which is missing.

use prost::Message;
use sha2::{Digest, Sha256};
use tether_proto::common::v1::AuditEvent;

/// The predecessor of record 1.
pub const GENESIS: [u8; 32] = [0; 32];

/// The hash of record `sequence`, following `previous`.
pub fn link(previous: &[u8; 32], sequence: u64, received_at: i64, event: &AuditEvent) -> [u8; 32] {
    let mut hasher = Sha256::new();
    hasher.update(previous);
    hasher.update(sequence.to_be_bytes());
    hasher.update(received_at.to_be_bytes());
    hasher.update(event.encode_to_vec());
    hasher.finalize().into()
}

/// A stored hex hash back as bytes; `None` if it is not 64 hex digits.
pub fn parse_hash(hex_text: &str) -> Option<[u8; 32]> {
    let mut out = [0u8; 32];
    hex::decode_to_slice(hex_text, &mut out).ok()?;
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(action: &str) -> AuditEvent {
        AuditEvent { event_id: "e".into(), action: action.into(), ..Default::default() }
    }

    #[test]
    fn every_input_of_a_link_changes_the_hash() {
        let base = link(&GENESIS, 1, 10, &event("user.create"));
        assert_eq!(base, link(&GENESIS, 1, 10, &event("user.create")), "deterministic");
        assert_ne!(base, link(&[1; 32], 1, 10, &event("user.create")), "predecessor");
        assert_ne!(base, link(&GENESIS, 2, 10, &event("user.create")), "sequence");
        assert_ne!(base, link(&GENESIS, 1, 11, &event("user.create")), "receive time");
        assert_ne!(base, link(&GENESIS, 1, 10, &event("user.delete")), "content");
    }

    #[test]
    fn hashes_read_back_from_hex() {
        let h = link(&GENESIS, 1, 0, &event("a"));
        assert_eq!(parse_hash(&hex::encode(h)), Some(h));
        assert_eq!(parse_hash("zz"), None);
    }
}
