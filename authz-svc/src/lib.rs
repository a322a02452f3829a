//! authz-svc: may user U do permission P in tenant T?
//!
//! `api` decodes gRPC calls; `store` holds the SQL for authz's own schema (custom roles,
//! overrides). [`prepare`] opens the database, applies migrations and returns a [`ServiceHost`].

mod api;
pub mod config;
mod store;

pub use config::Config;
use tether_proto::authz::v1::authz_service_server::AuthzServiceServer;
use tether_runtime::{ServiceHost, StartError, db::Database, server::HealthReporter};
use tonic::{server::NamedService, service::Routes};

pub async fn prepare(config: Config) -> Result<ServiceHost, StartError> {
    let database = Database::open(&config.server.database, config::SERVICE, store::MIGRATIONS).await?;
    let api = api::AuthzApi::new(database.clone());
    let health = HealthReporter::new(&[<AuthzServiceServer<api::AuthzApi> as NamedService>::NAME]);
    // No decision RPC answers yet (they are UNIMPLEMENTED, never "allowed"); once the
    // in-memory index lands, SERVING waits for its first snapshot.
    health.set_serving(true);
    let routes = Routes::new(AuthzServiceServer::new(api));
    Ok(ServiceHost { settings: config.server, routes, health, database, stopping: Default::default() })
}
