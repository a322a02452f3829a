//! TOTP (RFC 6238: HMAC-SHA1, 30-second steps, 6 digits) and one-time recovery codes.

use totp_rs::{Algorithm, Builder, Secret, Totp, TotpError};

use super::password::HashError;

pub const STEP_SECONDS: i64 = 30;
pub const DIGITS: u32 = 6;
/// Codes of the previous and next step are accepted too (clock drift).
pub const WINDOW: i64 = 1;
pub const RECOVERY_CODES: usize = 10;

/// Our parameters with `secret` (raw bytes); `None` for a secret shorter than RFC 4226's 128 bits.
fn totp(secret: &[u8]) -> Option<Totp> {
    Builder::new()
        .with_algorithm(Algorithm::SHA1)
        .with_digits(DIGITS as u8)
        .with_skew(WINDOW as u16)
        .with_step_duration(STEP_SECONDS as u64)
        .with_secret(secret)
        .build()
        .ok()
}

/// RFC 4648 base32 without padding (what authenticator apps expect).
pub fn base32(bytes: &[u8]) -> String {
    Secret::from(bytes).to_base32()
}

pub fn base32_decode(s: &str) -> Option<Vec<u8>> {
    Secret::try_from_base32(s.trim_end_matches('=').to_ascii_uppercase()).ok().map(|s| s.as_bytes().to_vec())
}

/// A fresh 160-bit secret, base32.
pub fn new_secret() -> Result<String, HashError> {
    let mut bytes = [0u8; 20];
    getrandom::fill(&mut bytes).map_err(|e| HashError::Random(e.to_string()))?;
    Ok(base32(&bytes))
}

/// The code of one time step (empty for a secret too short to be one).
pub fn code_at(secret: &[u8], step: i64) -> String {
    match (totp(secret), u64::try_from(step)) {
        (Some(t), Ok(step)) => t.generate(step * STEP_SECONDS as u64).to_string(),
        _ => String::new(),
    }
}

/// The step a code matches around `unix_seconds`, if any and if newer than `last_used` (a
/// code is accepted once). Codes are compared in constant time.
pub fn verify(secret_b32: &str, code: &str, unix_seconds: i64, last_used: Option<i64>) -> Option<i64> {
    let code = code.trim().replace(' ', "");
    let t = totp(&base32_decode(secret_b32)?)?;
    let step = i64::try_from(t.check(&code, u64::try_from(unix_seconds).ok()?)?).ok()?;
    last_used.is_none_or(|l| step > l).then_some(step)
}

/// The Key URI Format's `otpauth://totp/{issuer}:{account}?secret=...&issuer=...` (digits,
/// period and algorithm are the format's defaults, so left out).
pub fn otpauth_uri(issuer: &str, account: &str, secret_b32: &str) -> Result<String, TotpError> {
    let secret = Secret::try_from_base32(secret_b32).map_err(|_| TotpError::InvalidSecret)?;
    Builder::new()
        .with_algorithm(Algorithm::SHA1)
        .with_digits(DIGITS as u8)
        .with_step_duration(STEP_SECONDS as u64)
        .with_secret(secret)
        .with_issuer(Some(issuer))
        // A colon would end the issuer part of the label (emails may hold one); apps only show it.
        .with_account_name(account.replace(':', "."))
        .build()?
        .to_url()
}

/// The enrolment QR code of `uri` as an SVG document.
pub fn qr_svg(uri: &str) -> Result<String, qrcode::types::QrError> {
    let code = qrcode::QrCode::new(uri.as_bytes())?;
    Ok(code.render::<qrcode::render::svg::Color<'_>>().min_dimensions(200, 200).build())
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
    }

    #[test]
    fn secrets_round_trip_through_base32() {
        assert_eq!(base32(b"12345678901234567890"), "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ");
        let decoded = base32_decode("gezdgnbvgy3tqojqgezdgnbvgy3tqojq").unwrap();
        assert_eq!(decoded, b"12345678901234567890", "lower case is accepted");
        assert_eq!(base32_decode("not base32!"), None);
    }

    #[test]
    fn short_secrets_and_bad_codes_never_verify() {
        let short = base32(b"0123456789");
        assert_eq!(code_at(b"0123456789", 1), "");
        assert_eq!(verify(&short, "000000", 1_800_000_000, None), None);
        let secret = new_secret().unwrap();
        let code = code_at(&base32_decode(&secret).unwrap(), 1_800_000_000 / 30);
        assert_eq!(verify(&secret, &format!("{} {}", &code[..3], &code[3..]), 1_800_000_000, None), Some(60_000_000));
        assert_eq!(verify(&secret, &format!("+{}", &code[1..]), 1_800_000_000, None), None);
        assert_eq!(verify(&secret, &code, -1, None), None);
    }

    #[test]
    fn the_enrolment_uri_and_its_qr_code() {
        let secret = base32(b"12345678901234567890");
        let uri = otpauth_uri("Tether", "a@b.c", &secret).unwrap();
        assert_eq!(uri, format!("otpauth://totp/Tether:a%40b.c?secret={secret}&issuer=Tether"));
        let colon = otpauth_uri("Tether", "a:b@c.d", &secret).unwrap();
        assert!(colon.starts_with("otpauth://totp/Tether:a.b%40c.d?"), "{colon}");
        assert!(otpauth_uri("Tether", "", &secret).is_err(), "the label needs an account");
        let svg = qr_svg(&uri).unwrap();
        assert!(svg.starts_with("<?xml") && svg.contains("<svg"), "{svg}");
    }
}
