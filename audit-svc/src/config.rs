//! audit-svc settings (`TETHER_AUDIT_*`).

use std::time::Duration;

use base64::{Engine, engine::general_purpose::STANDARD};
use tether_runtime::{
    ConfigError, ConfigSource, ServiceSettings,
    access::ServiceToken,
    config::{invalid, upstream_addr},
    events::AuditRelaySettings,
};

use crate::domain::{
    checkpoint::CheckpointKey,
    event::{EventLimits, MAX_CLOCK_SKEW_MICROS},
};

pub const SERVICE: &str = "audit";
pub const DEFAULT_PORT: u16 = 50054;

#[derive(Debug, Clone)]
pub struct Config {
    pub server: ServiceSettings,
    /// `TETHER_AUDIT_IDENTITY_ADDR`, default `http://127.0.0.1:50051`: who a caller's session
    /// belongs to.
    pub identity_addr: String,
    /// `TETHER_AUDIT_AUTHZ_ADDR`, default `http://127.0.0.1:50053`: who may read which tenant's
    /// events (`audit.view`).
    pub authz_addr: String,
    /// `TETHER_AUDIT_TENANCY_ADDR`, default `http://127.0.0.1:50052`: a tenant's departments.
    pub tenancy_addr: String,
    /// `TETHER_SERVICE_TOKEN`: how audit recognises the services whose events it ingests, and
    /// presents itself to the others.
    pub service_token: ServiceToken,
    /// `TETHER_AUDIT_MAX_JSON_BYTES` (default 65536: each of before / after / metadata) and
    /// `TETHER_AUDIT_MAX_CLOCK_SKEW_MS` (default 300000: how far in the future an event may be).
    pub limits: EventLimits,
    /// `TETHER_AUDIT_SIGNING_KEY`: the standard base64 of a 32-byte Ed25519 private key, with
    /// `TETHER_AUDIT_CHECKPOINT_ORIGIN` (default `tether-audit`) as the key's name. Unset: no
    /// checkpoints are published (a warning says so at start).
    pub checkpoint_key: Option<CheckpointKey>,
    /// `TETHER_AUDIT_CHECKPOINT_INTERVAL_MS`, default 60000: how often a new checkpoint is signed
    /// when records were added.
    pub checkpoint_interval: Duration,
    /// `TETHER_AUDIT_TAIL_POLL_MS`, default 500: how often a tail looks for records stored by
    /// other replicas (its own replica's wake it at once).
    pub tail_poll: Duration,
    /// `TETHER_AUDIT_TAIL_HEARTBEAT_MS`, default 15000.
    pub tail_heartbeat: Duration,
    /// `TETHER_AUDIT_RETENTION_DAYS`, default 400: how long events are kept (legal holds aside).
    pub retention: Duration,
    /// `TETHER_AUDIT_PURGE_INTERVAL_MS`, default 3600000: how often expired events are purged.
    pub purge_interval: Duration,
    /// audit's own events (exports, verifications, holds, purges) reach its chain through the
    /// same relay as every service's (`TETHER_AUDIT_AUDIT_RELAY_*`, see
    /// [`AuditRelaySettings::load`]).
    pub audit_relay: AuditRelaySettings,
}

pub const SIGNING_KEY: &str = "TETHER_AUDIT_SIGNING_KEY";

impl Config {
    pub fn load(source: &ConfigSource) -> Result<Self, ConfigError> {
        let max_json_bytes = source.count_or("TETHER_AUDIT_MAX_JSON_BYTES", 64 * 1024, 1024..=1024 * 1024)?;
        let skew = source.millis_or(
            "TETHER_AUDIT_MAX_CLOCK_SKEW_MS",
            Duration::from_secs(300),
            0..=MAX_CLOCK_SKEW_MICROS as u64 / 1000,
        )?;
        let origin_key = "TETHER_AUDIT_CHECKPOINT_ORIGIN";
        let origin = source.get(origin_key).unwrap_or("tether-audit").trim().to_owned();
        if origin.is_empty() || origin.chars().any(|c| c.is_whitespace() || c == '+' || c.is_control()) {
            return Err(invalid(origin_key, &origin, "a name without spaces or '+'"));
        }
        let checkpoint_key = match source.get(SIGNING_KEY) {
            None => None,
            Some(raw) => {
                let seed: [u8; 32] = STANDARD
                    .decode(raw.trim())
                    .ok()
                    .and_then(|bytes| bytes.try_into().ok())
                    .ok_or_else(|| invalid(SIGNING_KEY, "***", "the standard base64 of 32 bytes"))?;
                Some(CheckpointKey::new(&origin, seed))
            }
        };
        Ok(Self {
            server: ServiceSettings::load(source, SERVICE, DEFAULT_PORT)?,
            identity_addr: upstream_addr(source, SERVICE, "identity", 50051)?,
            authz_addr: upstream_addr(source, SERVICE, "authz", 50053)?,
            tenancy_addr: upstream_addr(source, SERVICE, "tenancy", 50052)?,
            service_token: ServiceToken::load(source)?,
            limits: EventLimits { max_json_bytes, max_skew_micros: skew.as_micros() as i64 },
            checkpoint_key,
            checkpoint_interval: source.millis_or(
                "TETHER_AUDIT_CHECKPOINT_INTERVAL_MS",
                Duration::from_secs(60),
                50..=86_400_000,
            )?,
            tail_poll: source.millis_or("TETHER_AUDIT_TAIL_POLL_MS", Duration::from_millis(500), 10..=60_000)?,
            audit_relay: AuditRelaySettings::load(source, SERVICE)?,
            retention: Duration::from_secs(
                86_400 * source.count_or("TETHER_AUDIT_RETENTION_DAYS", 400, 1..=36_500)? as u64,
            ),
            purge_interval: source.millis_or(
                "TETHER_AUDIT_PURGE_INTERVAL_MS",
                Duration::from_secs(3600),
                1000..=86_400_000,
            )?,
            tail_heartbeat: source.millis_or(
                "TETHER_AUDIT_TAIL_HEARTBEAT_MS",
                Duration::from_secs(15),
                100..=300_000,
            )?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base() -> ConfigSource {
        ConfigSource::default().with(ServiceToken::KEY, "t".repeat(40))
    }

    #[test]
    fn a_bad_signing_key_names_its_key_and_hides_its_value() {
        let source = base().with(SIGNING_KEY, "c2hvcnQ=");
        let e = Config::load(&source).unwrap_err().to_string();
        assert!(e.contains(SIGNING_KEY), "{e}");
        assert!(!e.contains("c2hvcnQ"), "{e}");
    }

    #[test]
    fn a_signing_key_enables_checkpoints() {
        let seed = STANDARD.encode([9u8; 32]);
        let config = Config::load(&base().with(SIGNING_KEY, seed)).unwrap();
        assert!(config.checkpoint_key.unwrap().verifier_key().starts_with("tether-audit+"));
        assert!(Config::load(&base()).unwrap().checkpoint_key.is_none());
    }
}
