//! audit-svc: the audit trail's ingestion, search, statistics, export, tail and integrity.
//!
//! `api` decodes gRPC calls and decides visibility; `domain` holds the rules (valid events, the
//! hash chain, signed checkpoints, filters); `store` the SQL for audit's own schema; `events`
//! audit's own audit events and the checkpoint publisher; `deps` the calls to authz-svc and
//! tenancy-svc. [`prepare`] opens the database, applies migrations and returns a
//! [`ServiceHost`].

mod api;
pub mod config;
pub mod deps;
pub mod domain;
mod events;
mod store;

use std::sync::Arc;

pub use config::Config;
use tether_proto::audit::v1::audit_service_server::AuditServiceServer;
use tether_runtime::{
    ServiceHost, StartError,
    access::{Authenticator, Authorizer, GrpcAuthenticator, GrpcAuthorizer},
    client::connect_lazy,
    db::Database,
    events::spawn_audit_relay,
    server::HealthReporter,
};
use tokio_util::sync::CancellationToken;
use tonic::{server::NamedService, service::Routes};

/// What audit-svc needs from other services, as trait objects so tests can use doubles.
pub struct Deps {
    /// Resolves the bearer token of callers (identity-svc).
    pub authenticator: Arc<dyn Authenticator>,
    /// `audit.view` in the admin tenancy (authz-svc).
    pub authorizer: Arc<dyn Authorizer>,
    /// Where a user holds `audit.view`, and a tenant's departments (authz-svc, tenancy-svc).
    pub directory: Arc<dyn deps::Directory>,
}

/// Wires the real gRPC clients from the configured addresses.
pub async fn prepare(config: Config) -> Result<ServiceHost, StartError> {
    let channel = |addr: &str| connect_lazy(addr).map_err(|e| StartError::Other(format!("upstream {addr}: {e}")));
    let identity = channel(&config.identity_addr)?;
    let authz = channel(&config.authz_addr)?;
    let tenancy = channel(&config.tenancy_addr)?;
    let token = config.service_token.clone();
    let deps = Deps {
        authenticator: GrpcAuthenticator::new(identity, token.clone(), config::SERVICE),
        authorizer: GrpcAuthorizer::new(authz.clone(), token.clone(), config::SERVICE),
        directory: Arc::new(deps::GrpcDirectory::new(authz, tenancy, token)),
    };
    prepare_with(config, deps).await
}

pub async fn prepare_with(config: Config, deps: Deps) -> Result<ServiceHost, StartError> {
    let database = Database::open(&config.server.database, config::SERVICE, store::MIGRATIONS).await?;
    // Before the first record arrives, its month must exist (store::partitions, rule 1).
    store::partitions::ensure(&database, tether_runtime::db::now_micros())
        .await
        .map_err(|e| StartError::Other(format!("audit partitions: {e}")))?;
    let stopping = CancellationToken::new();
    match &config.checkpoint_key {
        Some(key) => {
            tracing::info!(verifier_key = %key.verifier_key(), "audit checkpoints are signed");
            events::checkpoints::spawn(database.clone(), key.clone(), config.checkpoint_interval, stopping.clone());
        }
        None => tracing::warn!(
            key = config::SIGNING_KEY,
            "no audit signing key is configured: checkpoints are not published"
        ),
    }
    events::retention::spawn(database.clone(), config.retention, config.purge_interval, stopping.clone());
    let own_events = Arc::new(api::ingest::LocalSink { database: database.clone(), limits: config.limits });
    spawn_audit_relay(database.clone(), own_events, config.audit_relay.clone(), stopping.clone());
    let audit = Arc::new(api::Audit {
        database: database.clone(),
        authenticator: deps.authenticator,
        authorizer: deps.authorizer,
        directory: deps.directory,
        service_token: config.service_token.clone(),
        limits: config.limits,
        checkpoint_key: config.checkpoint_key.clone(),
        tail_poll: config.tail_poll,
        tail_heartbeat: config.tail_heartbeat,
        retention: config.retention,
        stopping: stopping.clone(),
    });
    let api = api::AuditApi::new(audit);
    let health = HealthReporter::new(&[<AuditServiceServer<api::AuditApi> as NamedService>::NAME]);
    health.set_serving(true);
    let routes = Routes::new(AuditServiceServer::new(api));
    Ok(ServiceHost { settings: config.server, api: api::SERVED, routes, health, database, stopping })
}
