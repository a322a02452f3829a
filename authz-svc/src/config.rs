//! authz-svc settings (`TETHER_AUTHZ_*`).

use std::time::Duration;

use tether_runtime::{
    ConfigError, ConfigSource, ServiceSettings,
    access::ServiceToken,
    config::{invalid, service_key, upstream_addr},
    events::AuditRelaySettings,
};

use crate::{domain::policy::SHIPPED_PACKS, store::Limits};

pub const SERVICE: &str = "authz";
pub const DEFAULT_PORT: u16 = 50053;

/// The role packs a deployment can pick, one per product the requirements describe.
pub const ROLE_PACKS: &[&str] = &["msp-assets", "demand-forecast", "msp-panel", "platform", "password-manager"];

/// Where the policy comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PolicySource {
    /// A shipped pack, by name.
    Shipped(String),
    /// `TETHER_AUTHZ_POLICY_FILE`: a custom file (its text, read at start-up).
    File { path: String, text: String },
}

#[derive(Debug, Clone)]
pub struct Config {
    pub server: ServiceSettings,
    /// `TETHER_AUTHZ_ROLE_PACK`: one of [`ROLE_PACKS`], default `msp-assets`.
    pub role_pack: String,
    /// `TETHER_AUTHZ_POLICY_FILE`: a custom policy file; wins over the role pack.
    pub policy: PolicySource,
    /// `TETHER_AUTHZ_IDENTITY_ADDR`: whose Watch stream feeds user status.
    pub identity_addr: String,
    /// `TETHER_AUTHZ_TENANCY_ADDR`: whose Watch stream feeds the tree and memberships.
    pub tenancy_addr: String,
    /// `TETHER_AUTHZ_AUDIT_ADDR`, default `http://127.0.0.1:50054`: where the audit relay
    /// delivers the audit outbox.
    pub audit_addr: String,
    /// `TETHER_AUTHZ_AUDIT_RELAY_*`, `TETHER_AUTHZ_AUDIT_OUTBOX_*` (see
    /// [`AuditRelaySettings::load`]).
    pub audit_relay: AuditRelaySettings,
    /// `TETHER_AUTHZ_MAX_LAG_MS`, default 15000: the replica fails closed (INDEX_STALE, health
    /// NOT_SERVING) when a stream is silent for longer (no change, no heartbeat), when a known
    /// revision waits unapplied for longer without progress (e.g. its end marker never comes),
    /// or when authz's own schema could not be read for longer.
    pub max_lag: Duration,
    /// `TETHER_AUTHZ_CONSISTENCY_WAIT_MS`, default 2000: how long a decision waits for the
    /// index to reach `at_least_as_fresh` before NOT_CAUGHT_UP.
    pub consistency_wait: Duration,
    /// `TETHER_AUTHZ_RECONNECT_MS`, default 500: delay before re-opening a broken stream.
    pub reconnect: Duration,
    /// `TETHER_AUTHZ_OWN_POLL_MS`, default 1000: how often a replica looks for writes other
    /// replicas made to authz's schema (its own writes apply at once). Must be less than
    /// `TETHER_AUTHZ_MAX_LAG_MS`: each successful poll is what keeps the own data fresh.
    pub own_poll: Duration,
    /// `TETHER_AUTHZ_AUDIT_ALLOWED_SAMPLE`, default 0: record one allowed decision in N as an
    /// audit event (0: none). Denied decisions are always recorded.
    pub audit_allowed_sample: usize,
    /// `TETHER_AUTHZ_AUDIT_MAX_PER_SECOND`, default 5000: decision events recorded one by one
    /// per second; beyond it they are counted into one `authz.decision_audit_suppressed` event
    /// per write interval (0: no budget).
    pub audit_max_per_second: usize,
    /// `TETHER_AUTHZ_OPEN_DECISIONS`, default false: answer decision calls (Check, BatchCheck,
    /// Explain, lookups) that carry no credentials at all, as if a service asked. Only for a
    /// deployment whose network already authenticates callers (e.g. a mesh with mTLS); by
    /// default such calls get UNAUTHENTICATED.
    pub open_decisions: bool,
    /// Quotas on authz's own data: `TETHER_AUTHZ_MAX_RESOURCES_PER_TENANT` (default 10000),
    /// `TETHER_AUTHZ_MAX_GRANTS_PER_TENANT` (50000), `TETHER_AUTHZ_MAX_OVERRIDES_PER_TENANT`
    /// (10000; overrides that apply everywhere count as one tenant) and
    /// `TETHER_AUTHZ_MAX_CUSTOM_ROLES` (1000 in all). A write beyond one is refused with
    /// RESOURCE_EXHAUSTED `LIMIT_REACHED`.
    pub limits: Limits,
    /// `TETHER_SERVICE_TOKEN`.
    pub service_token: ServiceToken,
}

impl Config {
    pub fn load(source: &ConfigSource) -> Result<Self, ConfigError> {
        let pack_key = service_key(SERVICE, "ROLE_PACK");
        let role_pack = source.get(&pack_key).unwrap_or("msp-assets").to_owned();
        if !ROLE_PACKS.contains(&role_pack.as_str()) || !SHIPPED_PACKS.iter().any(|(n, _)| *n == role_pack) {
            return Err(invalid(&pack_key, &role_pack, &format!("one of {}", ROLE_PACKS.join(", "))));
        }
        let file_key = service_key(SERVICE, "POLICY_FILE");
        let policy = match source.get(&file_key) {
            None => PolicySource::Shipped(role_pack.clone()),
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .map_err(|e| invalid(&file_key, path, &format!("a readable file ({e})")))?;
                PolicySource::File { path: path.to_owned(), text }
            }
        };
        let max_lag =
            source.millis_or(&service_key(SERVICE, "MAX_LAG_MS"), Duration::from_secs(15), 100..=3_600_000)?;
        let own_poll_key = service_key(SERVICE, "OWN_POLL_MS");
        let own_poll = source.millis_or(&own_poll_key, Duration::from_secs(1), 10..=60_000)?;
        // authz's own data counts as stale once unread for longer than the lag bound: a poll
        // that slow would make every replica fail closed between two reads.
        if own_poll >= max_lag {
            return Err(invalid(
                &own_poll_key,
                &own_poll.as_millis().to_string(),
                &format!("less than TETHER_AUTHZ_MAX_LAG_MS ({} ms)", max_lag.as_millis()),
            ));
        }
        Ok(Self {
            server: ServiceSettings::load(source, SERVICE, DEFAULT_PORT)?,
            role_pack,
            policy,
            identity_addr: upstream_addr(source, SERVICE, "identity", 50051)?,
            tenancy_addr: upstream_addr(source, SERVICE, "tenancy", 50052)?,
            audit_addr: upstream_addr(source, SERVICE, "audit", 50054)?,
            audit_relay: AuditRelaySettings::load(source, SERVICE)?,
            max_lag,
            consistency_wait: source.millis_or(
                &service_key(SERVICE, "CONSISTENCY_WAIT_MS"),
                Duration::from_secs(2),
                0..=60_000,
            )?,
            reconnect: source.millis_or(
                &service_key(SERVICE, "RECONNECT_MS"),
                Duration::from_millis(500),
                10..=60_000,
            )?,
            own_poll,
            audit_allowed_sample: source.count_or(
                &service_key(SERVICE, "AUDIT_ALLOWED_SAMPLE"),
                0,
                0..=1_000_000_000,
            )?,
            audit_max_per_second: source.count_or(
                &service_key(SERVICE, "AUDIT_MAX_PER_SECOND"),
                5_000,
                0..=100_000_000,
            )?,
            open_decisions: source.parse_or(&service_key(SERVICE, "OPEN_DECISIONS"), false, "true or false")?,
            limits: {
                let d = Limits::default();
                let key = |name| service_key(SERVICE, name);
                Limits {
                    resources_per_tenant: source.count_or(
                        &key("MAX_RESOURCES_PER_TENANT"),
                        d.resources_per_tenant,
                        1..=10_000_000,
                    )?,
                    grants_per_tenant: source.count_or(
                        &key("MAX_GRANTS_PER_TENANT"),
                        d.grants_per_tenant,
                        1..=10_000_000,
                    )?,
                    overrides_per_tenant: source.count_or(
                        &key("MAX_OVERRIDES_PER_TENANT"),
                        d.overrides_per_tenant,
                        1..=10_000_000,
                    )?,
                    // Custom roles share the index's role slots with the pack's roles.
                    custom_roles: source.count_or(&key("MAX_CUSTOM_ROLES"), d.custom_roles, 1..=60_000)?,
                }
            },
            service_token: ServiceToken::load(source)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_values_name_the_key() {
        let src = ConfigSource::from_pairs([("TETHER_AUTHZ_ROLE_PACK", "nope")]);
        assert!(Config::load(&src).unwrap_err().to_string().contains("TETHER_AUTHZ_ROLE_PACK"));
        let src = ConfigSource::from_pairs([("TETHER_AUTHZ_MAX_LAG_MS", "soon")]);
        assert!(Config::load(&src).unwrap_err().to_string().contains("TETHER_AUTHZ_MAX_LAG_MS"));
        let src = ConfigSource::from_pairs([("TETHER_AUTHZ_MAX_LAG_MS", "500"), ("TETHER_AUTHZ_OWN_POLL_MS", "500")]);
        assert!(Config::load(&src).unwrap_err().to_string().contains("TETHER_AUTHZ_OWN_POLL_MS"));
        let src = ConfigSource::from_pairs([("TETHER_AUTHZ_POLICY_FILE", "/nonexistent/policy.toml")]);
        assert!(Config::load(&src).unwrap_err().to_string().contains("TETHER_AUTHZ_POLICY_FILE"));
    }

    #[test]
    fn defaults() {
        let c = Config::load(&ConfigSource::from_pairs([("TETHER_SERVICE_TOKEN", "s".repeat(32))])).unwrap();
        assert_eq!(c.policy, PolicySource::Shipped("msp-assets".into()));
        assert_eq!(c.max_lag, Duration::from_secs(15));
        assert!(!c.open_decisions, "decision calls need credentials unless a deployment says otherwise");
        assert_eq!(c.limits, Limits::default());
        assert_eq!(c.limits.resources_per_tenant, 10_000);
        let src = ConfigSource::from_pairs([
            ("TETHER_SERVICE_TOKEN", "s".repeat(32).as_str()),
            ("TETHER_AUTHZ_MAX_CUSTOM_ROLES", "0"),
        ]);
        assert!(Config::load(&src).unwrap_err().to_string().contains("TETHER_AUTHZ_MAX_CUSTOM_ROLES"));
    }
}
