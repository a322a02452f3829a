//! TOTP (RFC 6238: HMAC-SHA1, 30-second steps, 6 digits) and one-time recovery codes.

use hmac::{Hmac, KeyInit, Mac};
use sha1::Sha1;

use super::password::HashError;

pub const STEP_SECONDS: i64 = 30;
pub const DIGITS: u32 = 6;
/// Codes of the previous and next step are accepted too (clock drift).
pub const WINDOW: i64 = 1;
pub const RECOVERY_CODES: usize = 10;

const BASE32: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";

/// RFC 4648 base32 without padding (what authenticator apps expect).
pub fn base32(bytes: &[u8]) -> String {
    let mut out = String::new();
    let (mut buffer, mut bits) = (0u32, 0u32);
    for &b in bytes {
        buffer = (buffer << 8) | u32::from(b);
        bits += 8;
        while bits >= 5 {
            out.push(BASE32[((buffer >> (bits - 5)) & 31) as usize] as char);
            bits -= 5;
        }
    }
    if bits > 0 {
        out.push(BASE32[((buffer << (5 - bits)) & 31) as usize] as char);
    }
    out
}

pub fn base32_decode(s: &str) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    let (mut buffer, mut bits) = (0u32, 0u32);
    for c in s.trim_end_matches('=').bytes() {
        let v = BASE32.iter().position(|&x| x == c.to_ascii_uppercase())? as u32;
        buffer = (buffer << 5) | v;
        bits += 5;
        if bits >= 8 {
            out.push((buffer >> (bits - 8)) as u8);
            bits -= 8;
        }
    }
    Some(out)
}

/// A fresh 160-bit secret, base32.
pub fn new_secret() -> Result<String, HashError> {
    let mut bytes = [0u8; 20];
    getrandom::fill(&mut bytes).map_err(|e| HashError::Random(e.to_string()))?;
    Ok(base32(&bytes))
}

/// The code of one time step.
pub fn code_at(secret: &[u8], step: i64) -> String {
    let Ok(mut mac) = Hmac::<Sha1>::new_from_slice(secret) else { return String::new() };
    mac.update(&step.to_be_bytes());
    let digest = mac.finalize().into_bytes();
    let offset = (digest[19] & 0x0f) as usize;
    let value = u32::from_be_bytes([digest[offset] & 0x7f, digest[offset + 1], digest[offset + 2], digest[offset + 3]]);
    format!("{:06}", value % 10u32.pow(DIGITS))
}

/// The step a code matches around `unix_seconds`, if any and if newer than `last_used` (a
/// code is accepted once).
pub fn verify(secret_b32: &str, code: &str, unix_seconds: i64, last_used: Option<i64>) -> Option<i64> {
    let code = code.trim().replace(' ', "");
    if code.len() != DIGITS as usize || !code.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let secret = base32_decode(secret_b32)?;
    let now = unix_seconds.div_euclid(STEP_SECONDS);
    (now - WINDOW..=now + WINDOW)
        .filter(|step| last_used.is_none_or(|l| *step > l))
        .find(|step| constant_eq(code_at(&secret, *step).as_bytes(), code.as_bytes()))
}

fn constant_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// `otpauth://totp/{issuer}:{account}?secret=...&issuer=...&digits=6&period=30`.
pub fn otpauth_uri(issuer: &str, account: &str, secret: &str) -> String {
    fn enc(s: &str) -> String {
        s.bytes()
            .map(|b| match b {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' | b'@' => (b as char).to_string(),
                _ => format!("%{b:02X}"),
            })
            .collect()
    }
    format!(
        "otpauth://totp/{}:{}?secret={secret}&issuer={}&algorithm=SHA1&digits={DIGITS}&period={STEP_SECONDS}",
        enc(issuer),
        enc(account),
        enc(issuer)
    )
}

/// Ten recovery codes like `k7pq-m3xz`, shown once.
pub fn recovery_codes() -> Result<Vec<String>, HashError> {
    const ALPHABET: &[u8] = b"abcdefghjkmnpqrstuvwxyz23456789";
    let mut out = Vec::with_capacity(RECOVERY_CODES);
    while out.len() < RECOVERY_CODES {
        let mut bytes = [0u8; 32];
        getrandom::fill(&mut bytes).map_err(|e| HashError::Random(e.to_string()))?;
        let limit = 256 - (256 % ALPHABET.len());
        let chars: String = bytes
            .iter()
            .filter(|&&b| (b as usize) < limit)
            .take(10)
            .map(|&b| ALPHABET[b as usize % ALPHABET.len()] as char)
            .collect();
        if chars.len() == 10 {
            out.push(format!("{}-{}", &chars[..5], &chars[5..]));
        }
    }
    Ok(out)
}

/// The stored form of a recovery code (case and dashes ignored).
pub fn normalize_recovery(code: &str) -> String {
    code.chars().filter(|c| c.is_ascii_alphanumeric()).collect::<String>().to_ascii_lowercase()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc_6238_vectors_for_sha1() {
        // RFC 6238 appendix B, 8-digit values truncated to our 6 digits.
        let secret = b"12345678901234567890";
        assert_eq!(code_at(secret, 59 / 30), "287082");
        assert_eq!(code_at(secret, 1_111_111_109 / 30), "081804");
        assert_eq!(code_at(secret, 1_234_567_890 / 30), "005924");
        assert_eq!(code_at(secret, 2_000_000_000 / 30), "279037");
    }

    #[test]
    fn codes_verify_once_within_the_window() {
        let secret = new_secret().unwrap();
        let raw = base32_decode(&secret).unwrap();
        assert_eq!(base32(&raw), secret);
        let now = 1_800_000_000;
        let code = code_at(&raw, now / 30);
        let step = verify(&secret, &code, now, None).unwrap();
        assert_eq!(verify(&secret, &code, now + 30, None), Some(step));
        assert_eq!(verify(&secret, &code, now, Some(step)), None, "replay refused");
        assert_eq!(verify(&secret, &code, now + 120, None), None);
        assert_eq!(verify(&secret, "12345", now, None), None);
    }

    #[test]
    fn recovery_codes_are_distinct() {
        let codes = recovery_codes().unwrap();
        assert_eq!(codes.len(), 10);
        assert_eq!(normalize_recovery(&codes[0].to_uppercase()), codes[0].replace('-', ""));
        assert!(
            otpauth_uri("Tether", "a@b.c", "ABC").starts_with("otpauth://totp/Tether:a@b.c?secret=ABC&issuer=Tether")
        );
    }
}
