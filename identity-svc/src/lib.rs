//! identity-svc: who a person is and how they prove it.
//!
//! `api` decodes gRPC calls and calls the `domain`; `store` holds the SQL for identity's own
//! schema. [`prepare`] opens the database, applies migrations, creates the bootstrap owner on
//! first start and returns a [`ServiceHost`] ready to serve.

mod api;
mod bootstrap;
pub mod config;
pub mod domain;
mod store;

pub use bootstrap::BootstrapOwner;
pub use config::Config;
use tether_proto::identity::v1::identity_service_server::IdentityServiceServer;
use tether_runtime::{ServiceHost, StartError, db::Database, server::HealthReporter};
use tonic::{server::NamedService, service::Routes};

/// identity-svc ready to serve, and the owner login if this start created it.
pub struct Prepared {
    pub host: ServiceHost,
    pub bootstrap_owner: Option<BootstrapOwner>,
}

pub async fn prepare(config: Config) -> Result<Prepared, StartError> {
    let database = Database::open(&config.server.database, config::SERVICE, store::MIGRATIONS).await?;
    let bootstrap_owner = bootstrap::ensure_owner(&database, &config.bootstrap_owner).await?;
    let api = api::IdentityApi::new(database.clone());
    let health = HealthReporter::new(&[<IdentityServiceServer<api::IdentityApi> as NamedService>::NAME]);
    health.set_serving(true);
    let routes = Routes::new(IdentityServiceServer::new(api));
    Ok(Prepared {
        host: ServiceHost { settings: config.server, routes, health, database, stopping: Default::default() },
        bootstrap_owner,
    })
}
