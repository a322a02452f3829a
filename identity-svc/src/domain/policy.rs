//! The password policy: length, optional character classes, common passwords, personal
//! information, reuse. Every violated rule is reported, in a fixed order, so the caller can
//! name the first and list the rest.
//!
//! Rules:
//!
//! 1. Length 12..128 by default (`TETHER_IDENTITY_PASSWORD_MIN_LENGTH`, never below 8).
//! 2. Optional character classes (`TETHER_IDENTITY_PASSWORD_REQUIRED_CLASSES`).
//! 3. Not in Django's list of 19,640 common passwords (embedded).
//! 4. No email local part or name words.
//! 5. No reuse of the last 5 (`TETHER_IDENTITY_PASSWORD_HISTORY`).
//! 6. The first failed rule is the error's reason; all of them are in the `rules` metadata.

use std::{collections::HashSet, sync::OnceLock};

/// 19,640 common passwords, one per line, lower-case: Django's `common-passwords.txt`
/// (BSD-3-Clause), itself Royce Williams' 2017 list of the most used passwords.
const COMMON_PASSWORDS: &str = include_str!("common-passwords.txt");

fn common_passwords() -> &'static HashSet<&'static str> {
    static SET: OnceLock<HashSet<&'static str>> = OnceLock::new();
    SET.get_or_init(|| COMMON_PASSWORDS.lines().map(str::trim).filter(|l| !l.is_empty()).collect())
}

/// How many entries the embedded common-password list holds.
pub fn common_password_count() -> usize {
    common_passwords().len()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CharClass {
    Lower,
    Upper,
    Digit,
    Symbol,
}

/// One failed rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PasswordRule {
    TooShort { min: usize },
    TooLong { max: usize },
    MissingClass(CharClass),
    TooCommon,
    ContainsPersonalInfo,
    Reused { last: usize },
}

impl PasswordRule {
    /// The stable rule name, as in `ErrorReason` (without the prefix).
    pub fn name(&self) -> &'static str {
        match self {
            Self::TooShort { .. } => "PASSWORD_TOO_SHORT",
            Self::TooLong { .. } => "PASSWORD_TOO_LONG",
            Self::MissingClass(_) => "PASSWORD_MISSING_CHARACTER_CLASS",
            Self::TooCommon => "PASSWORD_TOO_COMMON",
            Self::ContainsPersonalInfo => "PASSWORD_CONTAINS_PERSONAL_INFO",
            Self::Reused { .. } => "PASSWORD_REUSED",
        }
    }

    pub fn message(&self) -> String {
        match self {
            Self::TooShort { min } => format!("the password must have at least {min} characters"),
            Self::TooLong { max } => format!("the password must have at most {max} characters"),
            Self::MissingClass(c) => format!("the password must contain a character of class {c:?}"),
            Self::TooCommon => "the password is one of the most common passwords".to_owned(),
            Self::ContainsPersonalInfo => "the password must not contain your email or name".to_owned(),
            Self::Reused { last } => format!("the password must differ from your last {last} passwords"),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PasswordPolicy {
    /// Never below 8 (NIST SP 800-63B); default 12.
    pub min_length: usize,
    /// At least 64; default 128.
    pub max_length: usize,
    /// Off by default (NIST advises against composition rules).
    pub required_classes: Vec<CharClass>,
    pub reject_common: bool,
    pub reject_personal_info: bool,
    /// How many previous passwords may not be reused; default 5.
    pub history_count: usize,
}

impl Default for PasswordPolicy {
    fn default() -> Self {
        Self {
            min_length: 12,
            max_length: 128,
            required_classes: Vec::new(),
            reject_common: true,
            reject_personal_info: true,
            history_count: 5,
        }
    }
}

/// What the policy knows about the person the password is for.
#[derive(Debug, Clone, Default)]
pub struct PersonalInfo<'a> {
    pub email: &'a str,
    pub display_name: &'a str,
}

fn class_of(c: char) -> CharClass {
    if c.is_lowercase() {
        CharClass::Lower
    } else if c.is_uppercase() {
        CharClass::Upper
    } else if c.is_numeric() {
        CharClass::Digit
    } else {
        CharClass::Symbol
    }
}

/// Pieces of personal information worth refusing inside a password: the email's local part
/// and each word of the name, when at least 3 characters long (shorter ones collide with
/// ordinary words).
fn personal_fragments(info: &PersonalInfo<'_>) -> Vec<String> {
    let mut out = Vec::new();
    let local = info.email.split('@').next().unwrap_or_default().to_lowercase();
    if local.chars().count() >= 3 {
        out.push(local);
    }
    for word in info.display_name.split(|c: char| !c.is_alphanumeric()) {
        if word.chars().count() >= 3 {
            out.push(word.to_lowercase());
        }
    }
    out
}

impl PasswordPolicy {
    /// Every rule the password breaks, except reuse (which needs the stored hashes: see
    /// [`PasswordRule::Reused`]). Empty when the password is acceptable.
    pub fn violations(&self, password: &str, info: &PersonalInfo<'_>) -> Vec<PasswordRule> {
        let mut out = Vec::new();
        let len = password.chars().count();
        if len < self.min_length {
            out.push(PasswordRule::TooShort { min: self.min_length });
        }
        if len > self.max_length {
            out.push(PasswordRule::TooLong { max: self.max_length });
        }
        for class in &self.required_classes {
            if !password.chars().any(|c| class_of(c) == *class) {
                out.push(PasswordRule::MissingClass(*class));
            }
        }
        let lower = password.to_lowercase();
        if self.reject_common && common_passwords().contains(lower.as_str()) {
            out.push(PasswordRule::TooCommon);
        }
        if self.reject_personal_info && personal_fragments(info).iter().any(|f| lower.contains(f.as_str())) {
            out.push(PasswordRule::ContainsPersonalInfo);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info() -> PersonalInfo<'static> {
        PersonalInfo { email: "emma.stone@kwgroup.uk", display_name: "Emma Stone" }
    }

    #[test]
    fn the_list_has_more_than_ten_thousand_entries() {
        assert!(common_password_count() >= 10_000);
    }

    #[test]
    fn each_rule_is_named() {
        let p = PasswordPolicy::default();
        assert_eq!(p.violations("short", &info()), vec![PasswordRule::TooShort { min: 12 }]);
        assert_eq!(p.violations(&"x1".repeat(70), &info()), vec![PasswordRule::TooLong { max: 128 }]);
        assert_eq!(p.violations("password1234", &info()), vec![PasswordRule::TooCommon]);
        assert_eq!(p.violations("MyEmma.Stone-pass", &info()), vec![PasswordRule::ContainsPersonalInfo]);
        assert_eq!(p.violations("stonewall-river-42", &info()), vec![PasswordRule::ContainsPersonalInfo]);
        assert!(p.violations("correct horse battery staple", &info()).is_empty());
    }

    #[test]
    fn classes_are_off_by_default_and_can_be_required() {
        let p = PasswordPolicy {
            required_classes: vec![CharClass::Upper, CharClass::Digit, CharClass::Symbol],
            ..Default::default()
        };
        let v = p.violations("correct horse battery staple", &info());
        assert_eq!(v[0], PasswordRule::MissingClass(CharClass::Upper));
        assert_eq!(v.len(), 2, "{v:?}"); // space counts as a symbol
        assert!(p.violations("Correct horse battery 9", &info()).is_empty());
    }
}
