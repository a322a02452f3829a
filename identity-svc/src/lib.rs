//! identity-svc: who a person is and how they prove it.
//!
//! `api` decodes gRPC calls and calls the `domain`; `store` holds the SQL for identity's own
//! schema; `events` the outbox side (change stream, audit, the membership relay to
//! tenancy-svc). [`prepare`] opens the database, applies migrations, creates the bootstrap
//! owner on first start and returns a [`ServiceHost`] ready to serve.

mod api;
mod auth;
mod bootstrap;
pub mod config;
pub mod domain;
pub mod events;
mod mail;
mod store;

use std::sync::Arc;

pub use bootstrap::BootstrapOwner;
pub use config::Config;
pub use events::relay::Tenancy;
use tether_proto::identity::v1::identity_service_server::IdentityServiceServer;
use tether_runtime::{
    ServiceHost, StartError,
    access::{Authenticator, Authorizer, GrpcAuthorizer},
    client::connect_lazy,
    db::Database,
    events::{AuditSink, ChangeFeed, GrpcAuditSink, spawn_audit_relay},
    server::HealthReporter,
};
use tokio_util::sync::CancellationToken;
use tonic::{server::NamedService, service::Routes};

/// identity-svc ready to serve, and the owner login if this start created it.
pub struct Prepared {
    pub host: ServiceHost,
    pub bootstrap_owner: Option<BootstrapOwner>,
    /// `Authenticate` in-process (the same path as the RPC, without gRPC): for an embedding
    /// process and the benchmark.
    pub authenticator: Arc<dyn Authenticator>,
}

/// The other services identity talks to, as trait objects so tests can put doubles in.
pub struct Deps {
    pub authorizer: Arc<dyn Authorizer>,
    pub tenancy: Arc<dyn Tenancy>,
    /// Where the audit relay delivers identity's audit events (audit-svc's `Ingest`).
    pub audit: Arc<dyn AuditSink>,
}

/// Wires the real gRPC clients from the configured addresses.
pub async fn prepare(config: Config) -> Result<Prepared, StartError> {
    let channel = |addr: &str| connect_lazy(addr).map_err(|e| StartError::Other(format!("{addr}: {e}")));
    let deps = Deps {
        authorizer: GrpcAuthorizer::new(channel(&config.authz_addr)?, config.service_token.clone(), config::SERVICE),
        tenancy: events::relay::GrpcTenancy::new(channel(&config.tenancy_addr)?, config.service_token.clone()),
        audit: GrpcAuditSink::new(channel(&config.audit_addr)?, config.service_token.clone(), config::SERVICE),
    };
    prepare_with(config, deps).await
}

/// Encrypts TOTP secrets stored in plain text (databases from before encryption) and moves
/// those under an older key to the first configured one, before serving.
async fn seal_totp_secrets(database: &Database, config: &Config) -> Result<(), StartError> {
    let done = store::two_factor::reseal_all(database, &config.totp_keys)
        .await
        .map_err(|e| StartError::Other(format!("sealing TOTP secrets: {e}")))?;
    if done != store::two_factor::Resealed::default() {
        tracing::info!(
            sealed = done.sealed,
            rotated = done.rotated,
            unreadable = done.unreadable,
            key_id = config.totp_keys.sealing_key_id(),
            "TOTP secrets encrypted under the first key of TETHER_IDENTITY_TOTP_KEYS"
        );
    }
    if done.unreadable > 0 {
        tracing::error!(
            count = done.unreadable,
            "TOTP secrets under a key TETHER_IDENTITY_TOTP_KEYS no longer holds: their users' codes are refused until \
             the key is given back or their 2FA is reset"
        );
    }
    Ok(())
}

pub async fn prepare_with(config: Config, deps: Deps) -> Result<Prepared, StartError> {
    let database = Database::open(&config.server.database, config::SERVICE, store::MIGRATIONS).await?;
    store::accounts::fill_name_keys(database.pool()).await.map_err(|e| StartError::Other(e.to_string()))?;
    seal_totp_secrets(&database, &config).await?;
    let bootstrap_owner = bootstrap::ensure_owner(&database, &config.bootstrap_owner).await?;
    let auth_database = Database::open(&config.server.database, config::SERVICE, store::MIGRATIONS).await?;
    let stopping = CancellationToken::new();
    let admin = Arc::new(events::relay::AdminTenancy::new(deps.tenancy.clone()));
    let relay =
        events::relay::spawn(database.clone(), deps.tenancy.clone(), admin.clone(), config.relay, stopping.clone());
    store::purge::spawn(database.pool().clone(), config.purge_interval, stopping.clone());
    spawn_audit_relay(database.clone(), deps.audit, config.audit_relay.clone(), stopping.clone());
    let mailer = mail::from_config(&config.mail).map_err(StartError::Other)?;
    let hasher = auth::Hasher::new(config.hash_concurrency, config.hash_priority)
        .await
        .map_err(|e| StartError::Other(e.to_string()))?;
    let generation = {
        let pool = auth_database.pool().clone();
        auth::GenerationReads::new(
            Arc::new(move || {
                let pool = pool.clone();
                Box::pin(async move { store::sessions::generation(&pool).await.map_err(|e| e.to_string()) })
            }),
            config.sessions.revocation_lease,
        )
    };
    let identity = api::Identity {
        db: database.clone(),
        auth_db: auth_database,
        feed: ChangeFeed::new(database.clone()),
        service_token: config.service_token.clone(),
        mailer,
        config: config.clone(),
        hasher,
        cache: auth::SessionCache::default(),
        generation,
        authorizer: deps.authorizer,
        admin,
        tenancy: deps.tenancy,
        relay,
        stopping: stopping.clone(),
    };
    let identity = Arc::new(identity);
    let authenticator: Arc<dyn Authenticator> = identity.clone();
    let api = api::IdentityApi::new(identity);
    let health = HealthReporter::new(&[<IdentityServiceServer<api::IdentityApi> as NamedService>::NAME]);
    health.set_serving(true);
    let routes = Routes::new(IdentityServiceServer::new(api));
    Ok(Prepared {
        host: ServiceHost { settings: config.server, api: api::SERVED, routes, health, database, stopping },
        bootstrap_owner,
        authenticator,
    })
}
