//! authz-svc settings (`TETHER_AUTHZ_*`).

use tether_runtime::{
    ConfigError, ConfigSource, ServiceSettings,
    config::{invalid, service_key, upstream_addr},
};

pub const SERVICE: &str = "authz";
pub const DEFAULT_PORT: u16 = 50053;

/// The role packs a deployment can pick, one per product the requirements describe.
pub const ROLE_PACKS: &[&str] = &["msp-assets", "demand-forecast", "msp-panel", "platform", "password-manager"];

#[derive(Debug, Clone)]
pub struct Config {
    pub server: ServiceSettings,
    /// `TETHER_AUTHZ_ROLE_PACK`: one of [`ROLE_PACKS`], default `msp-assets`.
    pub role_pack: String,
    /// `TETHER_AUTHZ_IDENTITY_ADDR`: whose Watch stream feeds user status.
    pub identity_addr: String,
    /// `TETHER_AUTHZ_TENANCY_ADDR`: whose Watch stream feeds the tree and memberships.
    pub tenancy_addr: String,
}

impl Config {
    pub fn load(source: &ConfigSource) -> Result<Self, ConfigError> {
        let pack_key = service_key(SERVICE, "ROLE_PACK");
        let role_pack = source.get(&pack_key).unwrap_or("msp-assets").to_owned();
        if !ROLE_PACKS.contains(&role_pack.as_str()) {
            return Err(invalid(&pack_key, &role_pack, &format!("one of {}", ROLE_PACKS.join(", "))));
        }
        Ok(Self {
            server: ServiceSettings::load(source, SERVICE, DEFAULT_PORT)?,
            role_pack,
            identity_addr: upstream_addr(source, SERVICE, "identity", 50051)?,
            tenancy_addr: upstream_addr(source, SERVICE, "tenancy", 50052)?,
        })
    }
}
