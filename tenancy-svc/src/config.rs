//! tenancy-svc settings (`TETHER_TENANCY_*`).

use tether_runtime::{
    ConfigError, ConfigSource, ServiceSettings,
    access::ServiceToken,
    config::{service_key, upstream_addr},
    events::AuditRelaySettings,
};

use crate::domain::{TenantName, TenantSlug};

pub const SERVICE: &str = "tenancy";
pub const DEFAULT_PORT: u16 = 50052;

#[derive(Debug, Clone)]
pub struct Config {
    pub server: ServiceSettings,
    /// The MSP's own admin tenancy, created on first start.
    pub admin_tenancy: AdminTenancyConfig,
    /// `TETHER_TENANCY_MAX_DEPTH`: how deep the tree may grow below the admin tenancy (default 6).
    pub max_depth: usize,
    /// `TETHER_TENANCY_IDENTITY_ADDR`, default `http://127.0.0.1:50051`.
    pub identity_addr: String,
    /// `TETHER_TENANCY_AUTHZ_ADDR`, default `http://127.0.0.1:50053`.
    pub authz_addr: String,
    /// `TETHER_TENANCY_AUDIT_ADDR`, default `http://127.0.0.1:50054`: where the audit relay
    /// delivers the audit outbox.
    pub audit_addr: String,
    /// `TETHER_TENANCY_AUDIT_RELAY_*`, `TETHER_TENANCY_AUDIT_OUTBOX_*` (see
    /// [`AuditRelaySettings::load`]).
    pub audit_relay: AuditRelaySettings,
    /// `TETHER_SERVICE_TOKEN`: how tenancy recognises (and calls) other Tether services.
    pub service_token: ServiceToken,
}

#[derive(Debug, Clone)]
pub struct AdminTenancyConfig {
    /// `TETHER_TENANCY_MSP_NAME`, default `MSP`.
    pub name: TenantName,
    /// `TETHER_TENANCY_MSP_SLUG`, default `msp`.
    pub slug: TenantSlug,
}

impl Config {
    pub fn load(source: &ConfigSource) -> Result<Self, ConfigError> {
        let key = |k: &str| service_key(SERVICE, k);
        let name_key = key("MSP_NAME");
        let name_raw = source.get(&name_key).unwrap_or("MSP");
        let name = TenantName::parse(name_raw)
            .map_err(|e| tether_runtime::config::invalid(&name_key, name_raw, &e.to_string()))?;
        let slug_key = key("MSP_SLUG");
        let slug_raw = source.get(&slug_key).unwrap_or("msp");
        let slug = TenantSlug::parse(slug_raw)
            .map_err(|e| tether_runtime::config::invalid(&slug_key, slug_raw, &e.to_string()))?;
        Ok(Self {
            server: ServiceSettings::load(source, SERVICE, DEFAULT_PORT)?,
            admin_tenancy: AdminTenancyConfig { name, slug },
            max_depth: source.count_or(&key("MAX_DEPTH"), 6, 2..=32)?,
            identity_addr: upstream_addr(source, SERVICE, "identity", 50051)?,
            authz_addr: upstream_addr(source, SERVICE, "authz", 50053)?,
            audit_addr: upstream_addr(source, SERVICE, "audit", 50054)?,
            audit_relay: AuditRelaySettings::load(source, SERVICE)?,
            service_token: ServiceToken::load(source)?,
        })
    }
}
