//! What a service library hands its binary, the dev stack and the tests: a prepared service
//! (database open and migrated, routes built) ready to serve on a listener.
//!
//! Start-up, in order: parse configuration (failing with the key's name), install telemetry, open
//! the database, apply migrations (idempotent), bootstrap (identity creates the MSP owner on first
//! start and shows a generated password once; tenancy creates the admin tenancy), then serve.
//! Health turns SERVING when the service can answer. Shutdown on SIGTERM or SIGINT is
//! `server::serve`'s drain: health NOT_SERVING (health Watch streams get it and end), listener
//! closed, in-flight calls finish, and after `TETHER_<SERVICE>_SHUTDOWN_GRACE_MS` (default 4 s)
//! whatever still runs is cut. Binaries, the dev stack and the tests all start services this way;
//! tests bind port 0.

use std::{future::Future, process::ExitCode};

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic::service::Routes;

use crate::{
    config::{ConfigError, ConfigSource, ServiceSettings},
    db::{Database, DbError},
    server::{self, HealthReporter, ServeError, ServedApi},
    telemetry::{self, TelemetrySettings},
};

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("cannot listen on {addr}: {source}")]
    Bind { addr: std::net::SocketAddr, source: std::io::Error },
    #[error(transparent)]
    Database(#[from] DbError),
    #[error(transparent)]
    Serve(#[from] ServeError),
    #[error("start-up failed: {0}")]
    Other(String),
}

/// A service ready to serve: its settings, gRPC routes, health handle and database.
pub struct ServiceHost {
    pub settings: ServiceSettings,
    /// The gRPC service `routes` serve and the class of its methods (for the budgets).
    pub api: ServedApi,
    pub routes: Routes,
    pub health: HealthReporter,
    pub database: Database,
    /// Cancelled when shutdown begins, so long-lived streams (Watch) end instead of holding
    /// the drain open.
    pub stopping: CancellationToken,
}

impl ServiceHost {
    /// Binds the configured listen address and serves until `shutdown`.
    pub async fn run(self, shutdown: impl Future<Output = ()>) -> Result<(), StartError> {
        let addr = self.settings.listen_addr;
        let listener = TcpListener::bind(addr).await.map_err(|source| StartError::Bind { addr, source })?;
        self.serve(listener, shutdown).await
    }

    /// Serves on `listener` until `shutdown`, then drains and closes the database.
    pub async fn serve(self, listener: TcpListener, shutdown: impl Future<Output = ()>) -> Result<(), StartError> {
        if let Ok(addr) = listener.local_addr() {
            tracing::info!(service = self.settings.service, %addr, "serving gRPC");
        }
        let result =
            server::serve(&self.settings, self.api, self.routes, &self.health, &self.stopping, listener, shutdown)
                .await;
        self.database.close().await;
        tracing::info!(service = self.settings.service, "stopped");
        Ok(result?)
    }
}

/// The `main` of a service binary: reads configuration from the environment, installs
/// telemetry, and runs `service` until SIGTERM or SIGINT. A bad configuration value stops
/// start-up with a message naming the key and a non-zero exit code.
pub fn run_binary<F, Fut>(service_name: &'static str, service: F) -> ExitCode
where
    F: FnOnce(ConfigSource) -> Fut,
    Fut: Future<Output = Result<(), StartError>>,
{
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("{service_name}: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        let source = ConfigSource::from_env()?;
        let settings = TelemetrySettings::load(&source, service_name)?;
        let _telemetry = telemetry::init(&settings).map_err(|e| StartError::Other(e.to_string()))?;
        service(source).await
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{service_name}: {e}");
            ExitCode::FAILURE
        }
    }
}
