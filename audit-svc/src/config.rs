//! audit-svc settings (`TETHER_AUDIT_*`).

use tether_runtime::{ConfigError, ConfigSource, ServiceSettings};

pub const SERVICE: &str = "audit";
pub const DEFAULT_PORT: u16 = 50054;

#[derive(Debug, Clone)]
pub struct Config {
    pub server: ServiceSettings,
}

impl Config {
    pub fn load(source: &ConfigSource) -> Result<Self, ConfigError> {
        Ok(Self { server: ServiceSettings::load(source, SERVICE, DEFAULT_PORT)? })
    }
}
