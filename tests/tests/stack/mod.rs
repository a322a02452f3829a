//! The four services against one test database, each on its own ephemeral port and configured
//! with the others' addresses and a shared service token, as a deployment would be.

#![allow(dead_code)] // each test file uses a part of this module

use tether_runtime::{ConfigSource, access::ServiceToken};
use tether_tests::{RunningService, TestDatabase};
use tokio::net::TcpListener;

pub const NAMES: [&str; 4] = ["identity", "tenancy", "authz", "audit"];

/// The service token the four share.
pub const SERVICE_TOKEN: &str = "test-service-token-0123456789abcdef0123";

/// The bootstrap MSP owner's login.
pub const OWNER_EMAIL: &str = "owner@msp.example";
pub const OWNER_PASSWORD: &str = "owner-pass-phrase-2026";

/// Binds a port per service and returns the configuration that wires them together.
async fn wire(db: &TestDatabase) -> (ConfigSource, Vec<TcpListener>) {
    let mut listeners = Vec::new();
    for _ in NAMES {
        listeners.push(TcpListener::bind("127.0.0.1:0").await.unwrap());
    }
    let url = |i: usize| format!("http://{}", listeners[i].local_addr().unwrap());
    let mut source = db
        .config()
        .with(ServiceToken::KEY, SERVICE_TOKEN)
        .with("TETHER_IDENTITY_BOOTSTRAP_OWNER_PASSWORD", OWNER_PASSWORD);
    for (i, caller) in NAMES.iter().enumerate() {
        for (j, callee) in NAMES.iter().enumerate() {
            if i != j {
                let key = format!("TETHER_{}_{}_ADDR", caller.to_uppercase(), callee.to_uppercase());
                source = source.with(key, url(j));
            }
        }
    }
    (source, listeners)
}

/// Prepares the four services (migrations and bootstrap included) without serving them.
pub async fn prepare_all(source: &ConfigSource) -> Vec<(&'static str, tether_runtime::ServiceHost)> {
    vec![
        ("identity", identity_svc::prepare(identity_svc::Config::load(source).unwrap()).await.unwrap().host),
        ("tenancy", tenancy_svc::prepare(tenancy_svc::Config::load(source).unwrap()).await.unwrap()),
        ("authz", authz_svc::prepare(authz_svc::Config::load(source).unwrap()).await.unwrap()),
        ("audit", audit_svc::prepare(audit_svc::Config::load(source).unwrap()).await.unwrap()),
    ]
}

/// Starts the four services; each stops when `shutdown()` resolves, or on `stop()` if `None`.
pub async fn start_all<F, Fut>(db: &TestDatabase, shutdown: Option<F>) -> Vec<RunningService>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let (source, listeners) = wire(db).await;
    let hosts = prepare_all(&source).await;
    let mut running = Vec::new();
    for ((name, host), listener) in hosts.into_iter().zip(listeners) {
        running.push(match &shutdown {
            Some(shutdown) => RunningService::serve_on(name, host, listener, shutdown()),
            None => RunningService::serve_on_until_stopped(name, host, listener),
        });
    }
    for service in &running {
        service.wait_serving().await;
    }
    running
}

/// [`start_all`] with extra settings for every service (e.g. the owner's password), stopped by
/// [`RunningService::stop`].
pub async fn start_all_with(db: &TestDatabase, settings: &[(&str, &str)]) -> Vec<RunningService> {
    let (mut source, listeners) = wire(db).await;
    for (key, value) in settings {
        source = source.with(*key, *value);
    }
    let hosts = prepare_all(&source).await;
    let mut running = Vec::new();
    for ((name, host), listener) in hosts.into_iter().zip(listeners) {
        running.push(RunningService::serve_on_until_stopped(name, host, listener));
    }
    for service in &running {
        service.wait_serving().await;
    }
    running
}

/// A request made by the person whose session token is `token`.
pub fn as_user<T>(token: &str, message: T) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.metadata_mut().insert("authorization", format!("Bearer {token}").parse().unwrap());
    request
}

/// A request made by a Tether service on its own account.
pub fn as_service<T>(message: T) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.metadata_mut().insert("x-tether-service-token", SERVICE_TOKEN.parse().unwrap());
    request.metadata_mut().insert("x-tether-service", "tests".parse().unwrap());
    request
}

/// Retries `attempt` until it succeeds (the services follow each other's streams), for 15 s.
pub async fn eventually<T, F, Fut>(what: &str, mut attempt: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, tonic::Status>>,
{
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(15);
    loop {
        match attempt().await {
            Ok(value) => return value,
            Err(e) if tokio::time::Instant::now() > deadline => panic!("{what}: {e:?}"),
            Err(_) => tokio::time::sleep(std::time::Duration::from_millis(50)).await,
        }
    }
}
