//! tenancy-svc: which organisations exist and who belongs where with which role.
//!
//! `api` decodes gRPC calls and calls the `domain`; `store` holds the SQL for tenancy's own
//! schema. [`prepare`] opens the database, applies migrations, creates the admin tenancy on first
//! start and returns a [`ServiceHost`] ready to serve.

mod api;
pub mod config;
pub mod domain;
mod store;

pub use config::Config;
use tether_proto::tenancy::v1::tenancy_service_server::TenancyServiceServer;
use tether_runtime::{ServiceHost, StartError, db::Database, server::HealthReporter};
use tonic::{server::NamedService, service::Routes};

pub async fn prepare(config: Config) -> Result<ServiceHost, StartError> {
    let database = Database::open(&config.server.database, config::SERVICE, store::MIGRATIONS).await?;
    ensure_admin_tenancy(&database, &config).await?;
    let api = api::TenancyApi::new(database.clone());
    let health = HealthReporter::new(&[<TenancyServiceServer<api::TenancyApi> as NamedService>::NAME]);
    health.set_serving(true);
    let routes = Routes::new(TenancyServiceServer::new(api));
    Ok(ServiceHost { settings: config.server, routes, health, database, stopping: Default::default() })
}

/// Exactly one admin tenancy exists from the first start on.
async fn ensure_admin_tenancy(database: &Database, config: &Config) -> Result<(), StartError> {
    let fail = |e: sqlx::Error| StartError::Other(format!("admin tenancy: {e}"));
    if store::tenants::admin_tenancy_id(database).await.map_err(fail)?.is_none() {
        let admin = &config.admin_tenancy;
        let id = store::tenants::insert_admin_tenancy(database, &admin.name, &admin.slug).await.map_err(fail)?;
        tracing::info!(tenant_id = %id, slug = %admin.slug, "admin tenancy created");
    }
    Ok(())
}
