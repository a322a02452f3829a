//! authz-svc: may user U do permission P in tenant T?
//!
//! `domain` holds the policy (role packs), the in-memory index and the decision and delegation
//! rules; `events` keeps the index current from identity's and tenancy's Watch streams and
//! authz's own schema, and fails closed; `store` holds the SQL for authz's schema; `api` decodes
//! gRPC calls. [`prepare`] opens the database, loads the policy, starts following the streams
//! and returns a [`ServiceHost`] that reports NOT_SERVING until both snapshots are loaded.

mod api;
pub mod config;
pub mod domain;
mod events;
mod store;

use std::sync::Arc;

pub use config::Config;
use config::PolicySource;
use tether_proto::{
    authz::v1::authz_service_server::AuthzServiceServer, identity::v1::identity_service_client::IdentityServiceClient,
    tenancy::v1::tenancy_service_client::TenancyServiceClient,
};
use tether_runtime::{
    ServiceHost, StartError,
    access::{Authenticator, GrpcAuthenticator},
    client::connect_lazy,
    db::{Database, now_micros},
    events::{GrpcAuditSink, spawn_audit_relay},
    server::HealthReporter,
};
use tokio_util::sync::CancellationToken;
use tonic::{server::NamedService, service::Routes};

use crate::domain::{
    index::Index,
    policy::{Policy, shipped_pack},
};

/// What authz-svc needs from other services, as trait objects so tests can use doubles. (The
/// change streams are read over gRPC from the configured addresses; tests serve doubles there.)
pub struct Deps {
    /// Resolves the bearer token of user callers of management RPCs (identity-svc).
    pub authenticator: Arc<dyn Authenticator>,
    /// audit-svc's `Ingest`, where the audit relay delivers authz's audit events.
    pub audit: Arc<dyn tether_runtime::events::AuditSink>,
}

/// Loads and validates the configured policy; the error names the line.
pub fn load_policy(config: &Config) -> Result<Policy, StartError> {
    let (origin, text) = match &config.policy {
        PolicySource::Shipped(name) => (
            format!("role pack {name}"),
            shipped_pack(name).ok_or_else(|| StartError::Other(format!("no role pack {name}")))?.to_owned(),
        ),
        PolicySource::File { path, text } => (path.clone(), text.clone()),
    };
    Policy::parse(&text, now_micros()).map_err(|e| StartError::Other(format!("{origin}: {e}")))
}

pub async fn prepare(config: Config) -> Result<ServiceHost, StartError> {
    let identity = connect_lazy(&config.identity_addr).map_err(|e| StartError::Other(e.to_string()))?;
    let audit = connect_lazy(&config.audit_addr).map_err(|e| StartError::Other(e.to_string()))?;
    let deps = Deps {
        authenticator: GrpcAuthenticator::new(identity, config.service_token.clone(), config::SERVICE),
        audit: GrpcAuditSink::new(audit, config.service_token.clone(), config::SERVICE),
    };
    prepare_with(config, deps).await
}

pub async fn prepare_with(config: Config, deps: Deps) -> Result<ServiceHost, StartError> {
    let policy = load_policy(&config)?;
    let database = Database::open(&config.server.database, config::SERVICE, store::MIGRATIONS).await?;
    let state = events::State::new(Index::new(policy), database.clone(), config.max_lag, config.consistency_wait);
    state.reload_own().await.map_err(|e| StartError::Other(format!("cannot load authz data: {}", e.message)))?;

    let stopping = CancellationToken::new();
    spawn_audit_relay(database.clone(), deps.audit, config.audit_relay.clone(), stopping.clone());
    let identity = connect_lazy(&config.identity_addr).map_err(|e| StartError::Other(e.to_string()))?;
    let tenancy = connect_lazy(&config.tenancy_addr).map_err(|e| StartError::Other(e.to_string()))?;
    tokio::spawn(events::follow(
        state.clone(),
        events::IdentitySource(IdentityServiceClient::new(identity), config.service_token.clone()),
        config.reconnect,
        stopping.clone(),
    ));
    tokio::spawn(events::follow(
        state.clone(),
        events::TenancySource(TenancyServiceClient::new(tenancy), config.service_token.clone()),
        config.reconnect,
        stopping.clone(),
    ));
    tokio::spawn(events::follow_own(state.clone(), config.own_poll, stopping.clone()));

    let health = HealthReporter::new(&[<AuthzServiceServer<api::AuthzApi> as NamedService>::NAME]);
    // Fail closed: NOT_SERVING until both snapshots are loaded, and again when a stream lags.
    health.set_serving(false);
    tokio::spawn(events::report_health(state.clone(), health.clone(), stopping.clone()));

    let audit = events::AuditSink::start(
        database.clone(),
        config.audit_allowed_sample,
        config.audit_max_per_second,
        stopping.clone(),
    );
    let api = api::AuthzApi::new(
        state,
        audit,
        deps.authenticator,
        config.service_token.clone(),
        config.open_decisions,
        config.limits,
    );
    let routes = Routes::new(AuthzServiceServer::new(api));
    Ok(ServiceHost { settings: config.server, api: api::SERVED, routes, health, database, stopping })
}
