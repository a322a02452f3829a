//! The test kit: a fresh database per test, and services started in-process on port 0.
//!
//! It depends on no service crate, so each service's own tests can use it (as a dev-dependency)
//! while the cross-service tests in `tests/tests/` use it with all four.
//!
//! Tests run on SQLite by default. With `TETHER_TEST_DATABASE_URL=postgres://…` set, every test
//! gets a new PostgreSQL database named by a UUID instead; the four services share it, each in
//! its own schema, as they may in production.

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use sqlx::{AnyPool, Executor, any::AnyPoolOptions};
use tether_runtime::{ConfigSource, ServiceHost, StartError};
use tokio::{net::TcpListener, sync::oneshot, task::JoinHandle};
use tonic::transport::Channel;
use tonic_health::pb::{HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient};

pub const TEST_DATABASE_URL: &str = "TETHER_TEST_DATABASE_URL";
/// The service token the test services share (`TETHER_SERVICE_TOKEN`).
pub const SERVICE_TOKEN: &str = "test-service-token-0123456789abcdef0123";

/// The key identity-svc encrypts this database's TOTP secrets with (`TETHER_IDENTITY_TOTP_KEYS`).
pub const TOTP_KEYS: &str = "test-1:5a17c0ffee5a17c0ffee5a17c0ffee5a17c0ffee5a17c0ffee5a17c0ffee0001";

/// Which backend this test run uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// A database no other test touches.
#[derive(Debug, Clone)]
pub struct TestDatabase {
    pub backend: Backend,
    /// SQLite: the folder holding one file per service.
    pub data_dir: Option<PathBuf>,
    /// PostgreSQL: the URL of the fresh database.
    pub url: Option<String>,
}

impl TestDatabase {
    pub async fn fresh() -> Self {
        match std::env::var(TEST_DATABASE_URL).ok().filter(|u| !u.is_empty()) {
            Some(admin_url) => {
                let name = format!("tether_{}", uuid::Uuid::new_v4().simple());
                sqlx::any::install_default_drivers();
                let admin =
                    AnyPoolOptions::new().max_connections(1).connect(&admin_url).await.expect("connect to PostgreSQL");
                admin
                    .execute(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
                    .await
                    .expect("create test database");
                admin.close().await;
                let url = match admin_url.rsplit_once('/') {
                    Some((server, _db)) if server.contains("://") && server.matches('/').count() >= 2 => {
                        format!("{server}/{name}")
                    }
                    _ => format!("{}/{name}", admin_url.trim_end_matches('/')),
                };
                Self { backend: Backend::Postgres, data_dir: None, url: Some(url) }
            }
            None => {
                let dir = std::env::temp_dir().join(format!("tether-test-{}", uuid::Uuid::new_v4().simple()));
                std::fs::create_dir_all(&dir).expect("create temp dir");
                Self { backend: Backend::Sqlite, data_dir: Some(dir), url: None }
            }
        }
    }

    /// The configuration every service reads to use this database.
    pub fn config(&self) -> ConfigSource {
        let mut source = ConfigSource::default()
            .with("TETHER_SERVICE_TOKEN", SERVICE_TOKEN)
            .with("TETHER_IDENTITY_TOTP_KEYS", TOTP_KEYS);
        if let Some(dir) = &self.data_dir {
            source = source.with("TETHER_DATA_DIR", dir.display().to_string());
        }
        if let Some(url) = &self.url {
            source = source.with("DATABASE_URL", url.clone());
        }
        source
    }

    /// A raw pool on one service's tables, for assertions about what was stored.
    pub async fn inspect(&self, service: &str) -> AnyPool {
        sqlx::any::install_default_drivers();
        match (&self.data_dir, &self.url) {
            (Some(dir), _) => AnyPoolOptions::new()
                .max_connections(1)
                .connect(&format!("sqlite://{}", dir.join(format!("{service}.db")).display()))
                .await
                .expect("open sqlite"),
            (_, Some(url)) => {
                let schema = service.to_owned();
                AnyPoolOptions::new()
                    .max_connections(1)
                    .after_connect(move |conn, _| {
                        let set = sqlx::AssertSqlSafe(format!("SET search_path TO {schema}"));
                        Box::pin(async move {
                            conn.execute(set).await?;
                            Ok(())
                        })
                    })
                    .connect(url)
                    .await
                    .expect("open postgres")
            }
            _ => unreachable!("a test database is either SQLite or PostgreSQL"),
        }
    }
}

/// A service serving on an ephemeral loopback port.
pub struct RunningService {
    pub name: &'static str,
    pub addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<Result<(), StartError>>,
}

impl RunningService {
    /// Serves `host` on `127.0.0.1:0` until [`RunningService::stop`] or `shutdown` resolves.
    pub async fn spawn(name: &'static str, host: ServiceHost) -> Self {
        let (stop, stopped) = oneshot::channel::<()>();
        Self::spawn_until(name, host, async move {
            let _ = stopped.await;
        })
        .await
        .with_stop(stop)
    }

    /// Serves `host` until `shutdown` resolves (for example a real signal).
    pub async fn spawn_until(
        name: &'static str,
        host: ServiceHost,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind port 0");
        Self::serve_on(name, host, listener, shutdown)
    }

    /// Serves `host` on a listener bound beforehand (so other services can be told its address
    /// before it starts) until `shutdown` resolves.
    pub fn serve_on(
        name: &'static str,
        host: ServiceHost,
        listener: TcpListener,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> Self {
        let addr = listener.local_addr().expect("local addr");
        let task = tokio::spawn(host.serve(listener, shutdown));
        Self { name, addr, stop: None, task }
    }

    /// Serves `host` on `listener` until [`RunningService::stop`].
    pub fn serve_on_until_stopped(name: &'static str, host: ServiceHost, listener: TcpListener) -> Self {
        let (stop, stopped) = oneshot::channel::<()>();
        Self::serve_on(name, host, listener, async move {
            let _ = stopped.await;
        })
        .with_stop(stop)
    }

    fn with_stop(mut self, stop: oneshot::Sender<()>) -> Self {
        self.stop = Some(stop);
        self
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub async fn channel(&self) -> Channel {
        Channel::from_shared(self.url()).unwrap().connect().await.expect("connect")
    }

    /// Waits until the overall health check answers SERVING (or panics after 10 s).
    pub async fn wait_serving(&self) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(channel) = Channel::from_shared(self.url()).unwrap().connect().await {
                let reply = HealthClient::new(channel).check(HealthCheckRequest { service: String::new() }).await;
                if reply.is_ok_and(|r| r.get_ref().status == ServingStatus::Serving as i32) {
                    return;
                }
            }
            assert!(tokio::time::Instant::now() < deadline, "{} never became SERVING", self.name);
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Asks the service to stop and waits for it; returns what its serve future returned.
    pub async fn stop(mut self) -> Result<(), StartError> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        self.join().await
    }

    /// Waits for the service's serve future to finish.
    pub async fn join(self) -> Result<(), StartError> {
        self.task.await.expect("service task panicked")
    }
}

/// audit-svc's `Ingest` as a service's audit relay sees it, accepting every event; the events
/// it received, in order, for tests that look.
#[derive(Default)]
pub struct AcceptingAuditSink {
    received: std::sync::Mutex<Vec<tether_proto::common::v1::AuditEvent>>,
}

impl AcceptingAuditSink {
    pub fn new() -> std::sync::Arc<Self> {
        std::sync::Arc::default()
    }

    pub fn received(&self) -> Vec<tether_proto::common::v1::AuditEvent> {
        self.received.lock().expect("sink lock").clone()
    }
}

#[tonic::async_trait]
impl tether_runtime::events::AuditSink for AcceptingAuditSink {
    async fn ingest(
        &self,
        events: Vec<tether_proto::common::v1::AuditEvent>,
    ) -> Result<tether_proto::audit::v1::IngestResponse, tether_runtime::ApiError> {
        let accepted = i32::try_from(events.len()).unwrap_or(i32::MAX);
        self.received.lock().expect("sink lock").extend(events);
        Ok(tether_proto::audit::v1::IngestResponse { accepted, duplicates: 0, rejected: Vec::new() })
    }
}

/// Waits until a service's audit outbox (`pool` from [`TestDatabase::inspect`]) holds events and
/// its relay has delivered every one of them (or panics after 10 s); answers how many.
pub async fn wait_audit_delivered(pool: &AnyPool) -> i64 {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let (total, pending): (i64, i64) =
            sqlx::query_as("SELECT COUNT(*), COUNT(CASE WHEN delivered_at IS NULL THEN 1 END) FROM audit_outbox")
                .fetch_one(pool)
                .await
                .expect("read the audit outbox");
        if total > 0 && pending == 0 {
            return total;
        }
        assert!(tokio::time::Instant::now() < deadline, "audit events still undelivered: {pending} of {total}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
