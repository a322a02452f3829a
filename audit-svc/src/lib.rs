//! audit-svc: the audit trail's ingestion, search, statistics, export and integrity.
//!
//! `api` decodes gRPC calls; `store` holds the SQL for audit's own schema. [`prepare`] opens the
//! database, applies migrations and returns a [`ServiceHost`].

mod api;
pub mod config;
mod store;

use std::sync::Arc;

pub use config::Config;
use tether_proto::audit::v1::audit_service_server::AuditServiceServer;
use tether_runtime::{
    ServiceHost, StartError,
    access::{Authenticator, GrpcAuthenticator},
    client::connect_lazy,
    db::Database,
    server::HealthReporter,
};
use tonic::{server::NamedService, service::Routes};

/// What audit-svc needs from other services, as trait objects so tests can use doubles.
pub struct Deps {
    /// Resolves the bearer token of callers (identity-svc).
    pub authenticator: Arc<dyn Authenticator>,
}

/// Wires the real gRPC clients from the configured addresses.
pub async fn prepare(config: Config) -> Result<ServiceHost, StartError> {
    let identity = connect_lazy(&config.identity_addr)
        .map_err(|e| StartError::Other(format!("upstream {}: {e}", config.identity_addr)))?;
    let authenticator = GrpcAuthenticator::new(identity, config.service_token.clone(), config::SERVICE);
    prepare_with(config, Deps { authenticator }).await
}

pub async fn prepare_with(config: Config, deps: Deps) -> Result<ServiceHost, StartError> {
    let database = Database::open(&config.server.database, config::SERVICE, store::MIGRATIONS).await?;
    let api = api::AuditApi::new(database.clone(), deps.authenticator, config.service_token.clone());
    let health = HealthReporter::new(&[<AuditServiceServer<api::AuditApi> as NamedService>::NAME]);
    health.set_serving(true);
    let routes = Routes::new(AuditServiceServer::new(api));
    Ok(ServiceHost {
        settings: config.server,
        api: api::SERVED,
        routes,
        health,
        database,
        stopping: Default::default(),
    })
}
