//! tenancy-svc: which organisations exist and who belongs where with which role.
//!
//! `api` decodes gRPC calls, checks who may do what (authz-svc, behind `deps`) and calls the
//! `store`, which runs each write as one transaction with its outbox entries (`events`).
//! [`prepare`] opens the database, applies migrations, creates the admin tenancy on first start
//! and returns a [`ServiceHost`] ready to serve; [`prepare_with`] takes the collaborators as
//! trait objects so tests can put doubles in their place.

mod api;
pub mod config;
pub mod deps;
pub mod domain;
mod events;
mod store;

pub use config::Config;
pub use deps::{Deps, PackInfo, RoleCatalog, RoleInfo, UserDirectory, UserInfo};
use tether_proto::tenancy::v1::tenancy_service_server::TenancyServiceServer;
use tether_runtime::{
    ServiceHost, StartError,
    access::{GrpcAuthenticator, GrpcAuthorizer},
    client::connect_lazy,
    db::Database,
    events::{GrpcAuditSink, spawn_audit_relay},
    server::HealthReporter,
};
use tonic::{server::NamedService, service::Routes};

/// Wires the real gRPC clients from the configured addresses.
pub async fn prepare(config: Config) -> Result<ServiceHost, StartError> {
    let channel = |addr: &str| connect_lazy(addr).map_err(|e| StartError::Other(format!("upstream {addr}: {e}")));
    let identity = channel(&config.identity_addr)?;
    let authz = channel(&config.authz_addr)?;
    let audit = channel(&config.audit_addr)?;
    let token = config.service_token.clone();
    let deps = Deps {
        authenticator: GrpcAuthenticator::new(identity.clone(), token.clone(), config::SERVICE),
        authorizer: GrpcAuthorizer::new(authz.clone(), token.clone(), config::SERVICE),
        users: deps::GrpcUserDirectory::new(identity, token.clone()),
        roles: deps::GrpcRoleCatalog::new(authz, token.clone()),
        audit: GrpcAuditSink::new(audit, token.clone(), config::SERVICE),
        service_token: token,
    };
    prepare_with(config, deps).await
}

pub async fn prepare_with(config: Config, deps: Deps) -> Result<ServiceHost, StartError> {
    let database = Database::open(&config.server.database, config::SERVICE, store::MIGRATIONS).await?;
    ensure_admin_tenancy(&database, &config).await?;
    let stopping = tokio_util::sync::CancellationToken::new();
    spawn_audit_relay(database.clone(), deps.audit.clone(), config.audit_relay.clone(), stopping.clone());
    let api = api::TenancyApi::new(database.clone(), deps, config.max_depth, stopping.clone());
    let health = HealthReporter::new(&[<TenancyServiceServer<api::TenancyApi> as NamedService>::NAME]);
    health.set_serving(true);
    let routes = Routes::new(TenancyServiceServer::new(api));
    Ok(ServiceHost { settings: config.server, api: api::SERVED, routes, health, database, stopping })
}

/// Exactly one admin tenancy exists from the first start on.
async fn ensure_admin_tenancy(database: &Database, config: &Config) -> Result<(), StartError> {
    let fail = |e: String| StartError::Other(format!("admin tenancy: {e}"));
    if store::tenants::admin_tenancy_id(database).await.map_err(|e| fail(e.to_string()))?.is_none() {
        let admin = &config.admin_tenancy;
        let id = store::tenants::insert_admin_tenancy(database, &admin.name, &admin.slug)
            .await
            .map_err(|e| fail(e.to_string()))?;
        tracing::info!(tenant_id = %id, slug = %admin.slug, "admin tenancy created");
    }
    Ok(())
}
