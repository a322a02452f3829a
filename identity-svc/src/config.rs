//! identity-svc settings (`TETHER_IDENTITY_*`).

use std::time::Duration;

use tether_runtime::{
    ConfigError, ConfigSource, ServiceSettings,
    access::ServiceToken,
    config::{Secret, invalid, service_key, upstream_addr},
    events::AuditRelaySettings,
};

use crate::domain::{
    DisplayName, Email,
    lockout::LockoutRules,
    policy::{CharClass, PasswordPolicy},
    totp_keys::{self, TotpKeys},
};

pub const SERVICE: &str = "identity";
pub const DEFAULT_PORT: u16 = 50051;
/// The keys that encrypt TOTP secrets at rest; required (the dev stack generates one).
pub const TOTP_KEYS: &str = "TETHER_IDENTITY_TOTP_KEYS";

#[derive(Debug, Clone)]
pub struct Config {
    pub server: ServiceSettings,
    pub bootstrap_owner: BootstrapOwnerConfig,
    /// `TETHER_IDENTITY_PASSWORD_*`.
    pub password_policy: PasswordPolicy,
    pub sessions: SessionConfig,
    /// `TETHER_IDENTITY_LOCKOUT_ACCOUNT_*` and shared `TETHER_IDENTITY_LOCKOUT_*`.
    pub account_lockout: LockoutRules,
    /// `TETHER_IDENTITY_LOCKOUT_IP_*` and shared `TETHER_IDENTITY_LOCKOUT_*`.
    pub ip_lockout: LockoutRules,
    /// `TETHER_IDENTITY_HASH_CONCURRENCY`: password hashes computed at once; default: the
    /// number of cores.
    pub hash_concurrency: usize,
    /// `TETHER_IDENTITY_HASH_PRIORITY`, default `idle`, or a nice value 0..=19 (0 leaves it
    /// unchanged): how the hashing threads are scheduled, so request threads win the cores under
    /// a login storm.
    pub hash_priority: HashPriority,
    pub relay: RelayConfig,
    /// `TETHER_IDENTITY_TENANCY_ADDR`, default `http://127.0.0.1:50052`.
    pub tenancy_addr: String,
    /// `TETHER_IDENTITY_AUTHZ_ADDR`, default `http://127.0.0.1:50053`.
    pub authz_addr: String,
    /// `TETHER_IDENTITY_AUDIT_ADDR`, default `http://127.0.0.1:50054`: where the audit relay
    /// delivers the audit outbox.
    pub audit_addr: String,
    /// `TETHER_IDENTITY_AUDIT_RELAY_*`, `TETHER_IDENTITY_AUDIT_OUTBOX_*` (see
    /// [`AuditRelaySettings::load`]).
    pub audit_relay: AuditRelaySettings,
    /// `TETHER_IDENTITY_TENANCY_TIMEOUT_MS`, default 2000: how long a request waits for
    /// tenancy-svc when it must ask (roles for 2FA policies at login, the owner before a
    /// deactivation) before failing closed with UNAVAILABLE.
    pub tenancy_timeout: Duration,
    /// `TETHER_IDENTITY_RESET_REQUESTS_PER_IP` (default 5) per `TETHER_IDENTITY_RESET_WINDOW_MS`
    /// (default 15 minutes): unauthenticated password-reset requests (they send mail) one client
    /// address may make; more are RESOURCE_EXHAUSTED / RATE_LIMITED.
    pub reset_rate: RateLimit,
    /// `TETHER_SERVICE_TOKEN`.
    pub service_token: ServiceToken,
    pub invitations: InvitationConfig,
    pub mail: MailConfig,
    /// `TETHER_IDENTITY_PURGE_INTERVAL_MS`, default 10 minutes: how often rows nobody can use
    /// any more (ended sessions, spent tokens, old counters) are deleted.
    pub purge_interval: Duration,
    /// `TETHER_IDENTITY_TOTP_KEYS`, required: `id:hexkey` pairs; the first encrypts TOTP
    /// secrets, all decrypt (rotation: put a new key first, restart, then drop the old one).
    pub totp_keys: TotpKeys,
}

#[derive(Debug, Clone)]
pub struct InvitationConfig {
    /// `TETHER_IDENTITY_INVITATION_TTL_MS`, default 7 days.
    pub ttl: Duration,
    /// `TETHER_IDENTITY_INVITATION_BASE_URL`, default `http://127.0.0.1:3000/invite/`: the
    /// token is appended to it.
    pub base_url: String,
    /// `TETHER_IDENTITY_PASSWORD_RESET_TTL_MS`, default 1 hour.
    pub reset_ttl: Duration,
    /// `TETHER_IDENTITY_PASSWORD_RESET_BASE_URL`, default `http://127.0.0.1:3000/reset-password/`.
    pub reset_base_url: String,
}

#[derive(Debug, Clone)]
pub struct MailConfig {
    /// `TETHER_IDENTITY_MAIL_FROM`, default `Tether <no-reply@tether.invalid>`.
    pub from: String,
    /// Set when `TETHER_IDENTITY_SMTP_HOST` is: send through SMTP with STARTTLS.
    pub smtp: Option<SmtpConfig>,
    /// `TETHER_IDENTITY_MAIL_OUTBOX_DIR`, default `<data dir>/identity-mail`: without SMTP,
    /// each message is written there as one `.eml` file.
    pub outbox_dir: std::path::PathBuf,
}

#[derive(Debug, Clone)]
pub struct SmtpConfig {
    /// `TETHER_IDENTITY_SMTP_HOST`.
    pub host: String,
    /// `TETHER_IDENTITY_SMTP_PORT`, default 587.
    pub port: u16,
    /// `TETHER_IDENTITY_SMTP_USERNAME` / `TETHER_IDENTITY_SMTP_PASSWORD`.
    pub username: Option<String>,
    pub password: Option<Secret>,
}

/// The MSP owner account created on first start.
#[derive(Debug, Clone)]
pub struct BootstrapOwnerConfig {
    /// `TETHER_IDENTITY_BOOTSTRAP_OWNER_EMAIL`, default `owner@msp.example`.
    pub email: Email,
    /// `TETHER_IDENTITY_BOOTSTRAP_OWNER_NAME`, default `MSP Owner`.
    pub display_name: DisplayName,
    /// `TETHER_IDENTITY_BOOTSTRAP_OWNER_PASSWORD`; generated and shown once when unset.
    pub password: Option<Secret>,
}

#[derive(Debug, Clone, Copy)]
pub struct SessionConfig {
    /// `TETHER_IDENTITY_SESSION_IDLE_TIMEOUT_MS`, default 30 minutes.
    pub idle_timeout: Duration,
    /// `TETHER_IDENTITY_SESSION_LIFETIME_MS`, default 12 hours.
    pub lifetime: Duration,
    /// `TETHER_IDENTITY_SINGLE_SESSION` (`true`/`false`, default false): a new login ends the
    /// user's previous sessions.
    pub single_session: bool,
    /// `TETHER_IDENTITY_LOGIN_STEP_TTL_MS`, default 10 minutes: how long a password-change step
    /// token stays valid.
    pub step_ttl: Duration,
    /// `TETHER_IDENTITY_REVOCATION_LEASE_MS`, default 20: how long an Authenticate may rely on a
    /// read of the revocation generation; every revocation waits this long before it answers,
    /// so no replica's next call can miss it (0: every Authenticate reads).
    pub revocation_lease: Duration,
}

/// At most `max` requests per fixed `window` per subject.
#[derive(Debug, Clone, Copy)]
pub struct RateLimit {
    pub max: u32,
    pub window: Duration,
}

#[derive(Debug, Clone, Copy)]
pub struct RelayConfig {
    /// `TETHER_IDENTITY_RELAY_RETRY_MS`, default 500: first retry delay of a membership
    /// delivery to tenancy-svc; doubles per failure.
    pub retry: Duration,
    /// `TETHER_IDENTITY_RELAY_MAX_RETRY_MS`, default 30000.
    pub max_retry: Duration,
    /// `TETHER_IDENTITY_PROVISION_WAIT_MS`, default 3000: how long CreateUser waits for
    /// tenancy-svc to acknowledge the membership before answering (the account stays
    /// unloginable until it does).
    pub wait: Duration,
}

const MINUTE_MS: u64 = 60_000;

impl Config {
    pub fn load(source: &ConfigSource) -> Result<Self, ConfigError> {
        let key = |k: &str| service_key(SERVICE, k);
        let email_key = key("BOOTSTRAP_OWNER_EMAIL");
        let email_raw = source.get(&email_key).unwrap_or("owner@msp.example");
        let email = Email::parse(email_raw).map_err(|e| invalid(&email_key, email_raw, &e.to_string()))?;
        let name_key = key("BOOTSTRAP_OWNER_NAME");
        let name_raw = source.get(&name_key).unwrap_or("MSP Owner");
        let display_name = DisplayName::parse(name_raw).map_err(|e| invalid(&name_key, name_raw, &e.to_string()))?;
        let password_key = key("BOOTSTRAP_OWNER_PASSWORD");
        let password = source.get(&password_key).map(Secret::new);
        if let Some(p) = &password
            && p.expose().chars().count() < 12
        {
            return Err(invalid(&password_key, "***", "at least 12 characters"));
        }

        let min_length = source.count_or(&key("PASSWORD_MIN_LENGTH"), 12, 8..=128)?;
        let max_length = source.count_or(&key("PASSWORD_MAX_LENGTH"), 128, 64..=1024)?;
        if max_length < min_length {
            return Err(invalid(&key("PASSWORD_MAX_LENGTH"), &max_length.to_string(), "at least the minimum length"));
        }
        let classes_key = key("PASSWORD_REQUIRED_CLASSES");
        let required_classes = match source.get(&classes_key).map(str::trim).filter(|s| !s.is_empty()) {
            None => Vec::new(),
            Some(raw) => raw
                .split(',')
                .map(|c| match c.trim() {
                    "lower" => Ok(CharClass::Lower),
                    "upper" => Ok(CharClass::Upper),
                    "digit" => Ok(CharClass::Digit),
                    "symbol" => Ok(CharClass::Symbol),
                    _ => Err(invalid(&classes_key, raw, "a comma-separated list of lower, upper, digit, symbol")),
                })
                .collect::<Result<_, _>>()?,
        };
        let password_policy = PasswordPolicy {
            min_length,
            max_length,
            required_classes,
            reject_common: true,
            reject_personal_info: true,
            history_count: source.count_or(&key("PASSWORD_HISTORY"), 5, 0..=24)?,
        };

        let single_key = key("SINGLE_SESSION");
        let sessions = SessionConfig {
            idle_timeout: source.millis_or(
                &key("SESSION_IDLE_TIMEOUT_MS"),
                Duration::from_secs(1800),
                1000..=u64::MAX / 4,
            )?,
            lifetime: source.millis_or(
                &key("SESSION_LIFETIME_MS"),
                Duration::from_secs(12 * 3600),
                1000..=u64::MAX / 4,
            )?,
            single_session: source.parse_or(&single_key, false, "true or false")?,
            step_ttl: source.millis_or(&key("LOGIN_STEP_TTL_MS"), Duration::from_secs(600), 1000..=60 * MINUTE_MS)?,
            revocation_lease: source.millis_or(&key("REVOCATION_LEASE_MS"), Duration::from_millis(20), 0..=5000)?,
        };

        let base_delay = source.millis_or(&key("LOCKOUT_BASE_DELAY_MS"), Duration::from_millis(250), 0..=60_000)?;
        let max_delay = source.millis_or(&key("LOCKOUT_MAX_DELAY_MS"), Duration::from_secs(4), 0..=60_000)?;
        let lock_duration =
            source.millis_or(&key("LOCKOUT_DURATION_MS"), Duration::from_secs(900), 1000..=24 * 60 * MINUTE_MS)?;
        let account_lockout = LockoutRules {
            free_attempts: source.count_or(&key("LOCKOUT_ACCOUNT_FREE_ATTEMPTS"), 3, 1..=1000)? as u32,
            base_delay,
            max_delay,
            lock_after: source.count_or(&key("LOCKOUT_ACCOUNT_LOCK_AFTER"), 10, 1..=10_000)? as u32,
            lock_duration,
        };
        let ip_lockout = LockoutRules {
            free_attempts: source.count_or(&key("LOCKOUT_IP_FREE_ATTEMPTS"), 10, 1..=100_000)? as u32,
            base_delay,
            max_delay,
            lock_after: source.count_or(&key("LOCKOUT_IP_LOCK_AFTER"), 50, 1..=1_000_000)? as u32,
            lock_duration,
        };
        let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2);
        Ok(Self {
            server: ServiceSettings::load(source, SERVICE, DEFAULT_PORT)?,
            bootstrap_owner: BootstrapOwnerConfig { email, display_name, password },
            password_policy,
            sessions,
            account_lockout,
            ip_lockout,
            hash_concurrency: source.count_or(&key("HASH_CONCURRENCY"), cores, 1..=1024)?,
            hash_priority: source
                .parse_opt(&key("HASH_PRIORITY"), "idle, or a nice value between 0 and 19")?
                .unwrap_or(HashPriority::Idle),
            relay: RelayConfig {
                retry: source.millis_or(&key("RELAY_RETRY_MS"), Duration::from_millis(500), 1..=600_000)?,
                max_retry: source.millis_or(&key("RELAY_MAX_RETRY_MS"), Duration::from_secs(30), 1..=3_600_000)?,
                wait: source.millis_or(&key("PROVISION_WAIT_MS"), Duration::from_secs(3), 0..=60_000)?,
            },
            tenancy_addr: upstream_addr(source, SERVICE, "tenancy", 50052)?,
            authz_addr: upstream_addr(source, SERVICE, "authz", 50053)?,
            audit_addr: upstream_addr(source, SERVICE, "audit", 50054)?,
            audit_relay: AuditRelaySettings::load(source, SERVICE)?,
            tenancy_timeout: source.millis_or(&key("TENANCY_TIMEOUT_MS"), Duration::from_secs(2), 10..=60_000)?,
            reset_rate: RateLimit {
                max: source.count_or(&key("RESET_REQUESTS_PER_IP"), 5, 1..=1_000_000)? as u32,
                window: source.millis_or(
                    &key("RESET_WINDOW_MS"),
                    Duration::from_secs(900),
                    1000..=24 * 60 * MINUTE_MS,
                )?,
            },
            service_token: ServiceToken::load(source)?,
            purge_interval: source.millis_or(&key("PURGE_INTERVAL_MS"), Duration::from_secs(600), 100..=86_400_000)?,
            invitations: InvitationConfig {
                ttl: source.millis_or(
                    &key("INVITATION_TTL_MS"),
                    Duration::from_secs(7 * 24 * 3600),
                    1000..=90 * 24 * 60 * MINUTE_MS,
                )?,
                base_url: source.get(&key("INVITATION_BASE_URL")).unwrap_or("http://127.0.0.1:3000/invite/").to_owned(),
                reset_ttl: source.millis_or(
                    &key("PASSWORD_RESET_TTL_MS"),
                    Duration::from_secs(3600),
                    1000..=7 * 24 * 60 * MINUTE_MS,
                )?,
                reset_base_url: source
                    .get(&key("PASSWORD_RESET_BASE_URL"))
                    .unwrap_or("http://127.0.0.1:3000/reset-password/")
                    .to_owned(),
            },
            mail: MailConfig {
                from: source.get(&key("MAIL_FROM")).unwrap_or("Tether <no-reply@tether.invalid>").to_owned(),
                smtp: match source.get(&key("SMTP_HOST")).map(str::trim).filter(|h| !h.is_empty()) {
                    None => None,
                    Some(host) => Some(SmtpConfig {
                        host: host.to_owned(),
                        port: source.parse_or(&key("SMTP_PORT"), 587u16, "a port number")?,
                        username: source.get(&key("SMTP_USERNAME")).map(str::to_owned),
                        password: source.get(&key("SMTP_PASSWORD")).map(Secret::new),
                    }),
                },
                outbox_dir: match source.get(&key("MAIL_OUTBOX_DIR")) {
                    Some(dir) => dir.into(),
                    None => std::path::PathBuf::from(source.get("TETHER_DATA_DIR").unwrap_or("./.tether-data"))
                        .join("identity-mail"),
                },
            },
            // Last: a start-up without it names any other bad key first.
            totp_keys: load_totp_keys(source)?,
        })
    }
}

fn load_totp_keys(source: &ConfigSource) -> Result<TotpKeys, ConfigError> {
    match source.get(TOTP_KEYS) {
        None => Err(ConfigError::Missing { key: TOTP_KEYS.to_owned(), expected: totp_keys::EXPECTED.to_owned() }),
        Some(raw) => TotpKeys::parse(raw)
            .map_err(|e| invalid(TOTP_KEYS, &e.shown, &format!("{} ({})", totp_keys::EXPECTED, e.problem))),
    }
}

/// How the hashing threads are scheduled (Linux; elsewhere they run like any other thread).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HashPriority {
    /// Linux's SCHED_IDLE policy: any request thread that wakes up preempts a hashing thread at
    /// once, while hashing still takes every idle cycle. Under a sustained full load of other
    /// work, logins wait for it to end.
    Idle,
    /// The normal policy at this nice value (0: unchanged): a fair share, weighted down.
    Nice(i32),
}

impl std::str::FromStr for HashPriority {
    type Err = ();
    fn from_str(s: &str) -> Result<Self, ()> {
        if s.eq_ignore_ascii_case("idle") {
            return Ok(Self::Idle);
        }
        match s.parse::<i32>() {
            Ok(n) if (0..=19).contains(&n) => Ok(Self::Nice(n)),
            _ => Err(()),
        }
    }
}

impl std::fmt::Display for HashPriority {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Idle => f.write_str("idle"),
            Self::Nice(n) => write!(f, "nice {n}"),
        }
    }
}
