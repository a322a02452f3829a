//! identity-svc settings (`TETHER_IDENTITY_*`).

use tether_runtime::{
    ConfigError, ConfigSource, ServiceSettings,
    config::{Secret, service_key},
};

use crate::domain::{DisplayName, Email};

pub const SERVICE: &str = "identity";
pub const DEFAULT_PORT: u16 = 50051;

#[derive(Debug, Clone)]
pub struct Config {
    pub server: ServiceSettings,
    pub bootstrap_owner: BootstrapOwnerConfig,
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

impl Config {
    pub fn load(source: &ConfigSource) -> Result<Self, ConfigError> {
        let key = |k: &str| service_key(SERVICE, k);
        let email_key = key("BOOTSTRAP_OWNER_EMAIL");
        let email_raw = source.get(&email_key).unwrap_or("owner@msp.example");
        let email = Email::parse(email_raw)
            .map_err(|e| tether_runtime::config::invalid(&email_key, email_raw, &e.to_string()))?;
        let name_key = key("BOOTSTRAP_OWNER_NAME");
        let name_raw = source.get(&name_key).unwrap_or("MSP Owner");
        let display_name = DisplayName::parse(name_raw)
            .map_err(|e| tether_runtime::config::invalid(&name_key, name_raw, &e.to_string()))?;
        let password_key = key("BOOTSTRAP_OWNER_PASSWORD");
        let password = source.get(&password_key).map(Secret::new);
        if let Some(p) = &password
            && p.expose().chars().count() < 12
        {
            return Err(tether_runtime::config::invalid(&password_key, "***", "at least 12 characters"));
        }
        Ok(Self {
            server: ServiceSettings::load(source, SERVICE, DEFAULT_PORT)?,
            bootstrap_owner: BootstrapOwnerConfig { email, display_name, password },
        })
    }
}
