//! audit-svc: the audit trail's ingestion, search, statistics, export and integrity.
//!
//! `api` decodes gRPC calls; `store` holds the SQL for audit's own schema. [`prepare`] opens the
//! database, applies migrations and returns a [`ServiceHost`].

mod api;
pub mod config;
mod store;

pub use config::Config;
use tether_proto::audit::v1::audit_service_server::AuditServiceServer;
use tether_runtime::{ServiceHost, StartError, db::Database, server::HealthReporter};
use tonic::{server::NamedService, service::Routes};

pub async fn prepare(config: Config) -> Result<ServiceHost, StartError> {
    let database = Database::open(&config.server.database, config::SERVICE, store::MIGRATIONS).await?;
    let api = api::AuditApi::new(database.clone());
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
