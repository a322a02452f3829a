//! audit-svc settings (`TETHER_AUDIT_*`).

use tether_runtime::{ConfigError, ConfigSource, ServiceSettings, access::ServiceToken, config::upstream_addr};

pub const SERVICE: &str = "audit";
pub const DEFAULT_PORT: u16 = 50054;

#[derive(Debug, Clone)]
pub struct Config {
    pub server: ServiceSettings,
    /// `TETHER_AUDIT_IDENTITY_ADDR`, default `http://127.0.0.1:50051`: who a caller's session
    /// belongs to.
    pub identity_addr: String,
    /// `TETHER_SERVICE_TOKEN`: how audit recognises the services whose events it ingests, and
    /// presents itself to identity-svc.
    pub service_token: ServiceToken,
}

impl Config {
    pub fn load(source: &ConfigSource) -> Result<Self, ConfigError> {
        Ok(Self {
            server: ServiceSettings::load(source, SERVICE, DEFAULT_PORT)?,
            identity_addr: upstream_addr(source, SERVICE, "identity", 50051)?,
            service_token: ServiceToken::load(source)?,
        })
    }
}
