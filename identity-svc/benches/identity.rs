//! identity-svc benchmark: login throughput against the raw argon2id cost, and `Authenticate`
//! latency at 16 concurrent callers, alone and during a login storm, over gRPC and in-process
//! (the method called directly, warm cache); then Authenticate and the health check during a
//! flood of 2,000 concurrent logins, far beyond the login budget, with how many were shed.
//!
//! `cargo bench -p identity-svc --bench identity` (SQLite in a temp dir; set
//! `TETHER_TEST_DATABASE_URL` for PostgreSQL). Scale with `BENCH_LOGINS` (default 120),
//! `BENCH_AUTH_CALLS` (per caller, default 500), `BENCH_FLOOD_LOGINS` (default 2000, from 20
//! loopback addresses), `BENCH_FLOOD_SECS` (default 10) and `BENCH_FLOOD_RETRY_MS` (how long a flooding caller waits after a
//! refusal before its next login, default 20); `TETHER_IDENTITY_HASH_PRIORITY=10` (nice 10) or
//! `=0` (unchanged) runs it without the hashing threads' idle scheduling, for comparison;
//! `TETHER_IDENTITY_REVOCATION_LEASE_MS=0` makes every Authenticate read the revocation
//! generation (the strict form, without the lease).

// Test code: a failed set-up or assertion should panic.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{
    net::{IpAddr, Ipv4Addr},
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use identity_svc::{Deps, Tenancy, domain::password};
use tether_proto::{
    common::v1::ErrorReason,
    identity::v1::{self as pb, identity_service_client::IdentityServiceClient},
};
use tether_runtime::{
    ApiError,
    access::{Authenticator, Authorizer, RoleGrant, RoleGrantDecision},
    client::connect_lazy,
};
use tether_tests::{RunningService, TestDatabase};
use tonic::{
    Code,
    transport::{Channel, Endpoint},
};
use tonic_health::pb::{HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient};

const OWNER_PASSWORD: &str = "owner-pass-phrase-2026";
const PASSWORD: &str = "violet-kestrel-harbour-9";
const TENANT: &str = "00000000-0000-7000-8000-00000000000a";

struct AllowAll;

#[tonic::async_trait]
impl Authorizer for AllowAll {
    async fn check(
        &self,
        _: &str,
        _: &str,
        _: &str,
        _: Option<&tether_proto::common::v1::ConsistencyToken>,
    ) -> Result<bool, ApiError> {
        Ok(true)
    }
    async fn check_role_grant(&self, _: &RoleGrant) -> Result<RoleGrantDecision, ApiError> {
        Ok(RoleGrantDecision { allowed: true, denial_reason: ErrorReason::Unspecified, summary: String::new() })
    }
}

struct AcceptAll;

#[tonic::async_trait]
impl Tenancy for AcceptAll {
    async fn admin_tenancy_id(&self) -> Result<String, ApiError> {
        Ok("00000000-0000-7000-8000-000000000001".into())
    }
    async fn add_membership(&self, _: &str, _: &str, _: &str) -> Result<u64, ApiError> {
        Ok(1)
    }
    async fn clear_memberships(&self, _: &str) -> Result<(), ApiError> {
        Ok(())
    }
    async fn transfer_ownership(&self, _: &str) -> Result<u64, ApiError> {
        Ok(1)
    }
    async fn user_roles(&self, _: &str) -> Result<Vec<identity_svc::domain::two_factor::HeldRole>, ApiError> {
        Ok(Vec::new())
    }
    async fn owner_id(&self) -> Result<Option<String>, ApiError> {
        Ok(None)
    }
    async fn tenant_name(&self, _: &str) -> Result<Option<String>, ApiError> {
        Ok(None)
    }
    async fn tenant_chain(&self, tenant_id: &str) -> Result<Option<Vec<String>>, ApiError> {
        Ok(Some(vec![tenant_id.to_owned()]))
    }
}

/// The 1-minute load average (Linux), to judge how quiet the machine was.
fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|l| l.split_whitespace().next().map(str::to_owned))
        .unwrap_or_else(|| "?".into())
}

fn env_or(key: &str, default: usize) -> usize {
    std::env::var(key).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

async fn login(client: &mut IdentityServiceClient<Channel>, email: &str, password: &str) -> String {
    let reply = client
        .login(pb::LoginRequest {
            email: email.into(),
            password: password.into(),
            client_ip: "10.0.0.1".into(),
            ..Default::default()
        })
        .await
        .expect("login")
        .into_inner();
    match reply.outcome.and_then(|o| o.outcome) {
        Some(pb::login_outcome::Outcome::Session(s)) => s.session_token,
        other => panic!("unexpected login outcome {other:?}"),
    }
}

/// `callers` concurrent callers, each making `calls` Authenticates through `auth`: over gRPC
/// (the runtime's `GrpcAuthenticator`, as other services call it) or in-process (the service's
/// own authenticator, no HTTP/2). Returns every latency, sorted.
async fn authenticate_load(auth: Arc<dyn Authenticator>, token: String, callers: usize, calls: usize) -> Vec<Duration> {
    let mut tasks = Vec::new();
    for _ in 0..callers {
        let auth = auth.clone();
        let token = token.clone();
        tasks.push(tokio::spawn(async move {
            let mut out = Vec::with_capacity(calls);
            for _ in 0..calls {
                let start = Instant::now();
                auth.authenticate(&token).await.expect("authenticate");
                out.push(start.elapsed());
            }
            out
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.expect("caller"));
    }
    all.sort();
    all
}

/// As [`authenticate_load`], each caller calling back to back for `how_long`.
async fn authenticate_for(
    auth: Arc<dyn Authenticator>,
    token: String,
    callers: usize,
    how_long: Duration,
) -> Vec<Duration> {
    let until = Instant::now() + how_long;
    let tasks: Vec<_> = (0..callers)
        .map(|_| {
            let (auth, token) = (auth.clone(), token.clone());
            tokio::spawn(async move {
                let mut out = Vec::new();
                while Instant::now() < until {
                    let start = Instant::now();
                    auth.authenticate(&token).await.expect("authenticate");
                    out.push(start.elapsed());
                }
                out
            })
        })
        .collect();
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.expect("caller"));
    }
    all.sort();
    all
}

fn report(label: &str, sorted: &[Duration], goal: &str) {
    println!(
        "{label}: p50 {:.3} ms, p99 {:.3} ms{goal}",
        percentile(sorted, 0.5).as_secs_f64() * 1e3,
        percentile(sorted, 0.99).as_secs_f64() * 1e3
    );
}

#[tokio::main]
async fn main() {
    let logins = env_or("BENCH_LOGINS", 120);
    let auth_calls = env_or("BENCH_AUTH_CALLS", 500);
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);

    // Raw argon2id cost on this machine, same parameters as stored hashes.
    let phc = password::hash(PASSWORD).expect("hash");
    let samples = 8;
    let start = Instant::now();
    for _ in 0..samples {
        assert!(password::verify(PASSWORD, &phc));
    }
    let hash_time = start.elapsed() / samples;
    let ceiling = cores as f64 / hash_time.as_secs_f64();
    println!("cores: {cores}; load average (1 min) before: {}", load_average());
    println!(
        "argon2id verify (m=19MiB,t=2,p=1): {:.1} ms -> ceiling {ceiling:.1} logins/s",
        hash_time.as_secs_f64() * 1e3
    );

    let db = TestDatabase::fresh().await;
    let source = db
        .config()
        .with("TETHER_IDENTITY_BOOTSTRAP_OWNER_PASSWORD", OWNER_PASSWORD)
        .with("TETHER_SERVICE_TOKEN", "bench-service-token-0123456789abcdef")
        .with("TETHER_IDENTITY_MAIL_OUTBOX_DIR", std::env::temp_dir().join("tether-bench-mail").display().to_string())
        .with("TETHER_IDENTITY_LOCKOUT_IP_FREE_ATTEMPTS", "100000")
        // A/B the hashing threads' priority: TETHER_IDENTITY_HASH_PRIORITY=0 turns it off.
        .with(
            "TETHER_IDENTITY_HASH_PRIORITY",
            std::env::var("TETHER_IDENTITY_HASH_PRIORITY").unwrap_or_else(|_| "idle".into()),
        )
        // TETHER_IDENTITY_REVOCATION_LEASE_MS=0 reads the revocation generation on every call.
        .with(
            "TETHER_IDENTITY_REVOCATION_LEASE_MS",
            std::env::var("TETHER_IDENTITY_REVOCATION_LEASE_MS").unwrap_or_else(|_| "20".into()),
        );
    // The budgets may be set from the environment too, to compare.
    let mut source = source;
    for key in [
        "TETHER_IDENTITY_MAX_CONCURRENT_REQUESTS",
        "TETHER_IDENTITY_MAX_CONCURRENT_HOT_REQUESTS",
        "TETHER_IDENTITY_MAX_CONCURRENT_EXPENSIVE_REQUESTS",
        "TETHER_IDENTITY_MAX_CONCURRENT_EXPENSIVE_REQUESTS_PER_CLIENT",
    ] {
        if let Ok(value) = std::env::var(key) {
            source = source.with(key, value);
        }
    }
    let config = identity_svc::Config::load(&source).expect("config");
    let budgets = config.server.budgets;
    // One address's share of the login budget: more logins at once from it would be refused.
    let share = budgets.expensive_per_client;
    println!(
        "budgets: {} hot-path, {} expensive ({} per client address), {} standard calls at once",
        budgets.hot_path, budgets.expensive, budgets.expensive_per_client, budgets.standard
    );
    println!(
        "hashing threads: {}, scheduled {}; revocation lease {} ms",
        config.hash_concurrency,
        config.hash_priority,
        config.sessions.revocation_lease.as_millis()
    );
    let service_token = config.service_token.clone();
    let deps = Deps {
        authorizer: Arc::new(AllowAll),
        tenancy: Arc::new(AcceptAll),
        audit: tether_tests::AcceptingAuditSink::new(),
    };
    let prepared = identity_svc::prepare_with(config, deps).await.expect("prepare");
    let in_process = prepared.authenticator.clone();
    let service = RunningService::spawn("identity", prepared.host).await;
    let channel = service.channel().await;
    let over_grpc: Arc<dyn Authenticator> = tether_runtime::access::GrpcAuthenticator::new(
        connect_lazy(&service.url()).expect("channel"),
        service_token,
        "bench",
    );
    let mut client = IdentityServiceClient::new(channel.clone());

    let mut owner = None;
    for _ in 0..100 {
        if let Ok(reply) = client
            .login(pb::LoginRequest {
                email: "owner@msp.example".into(),
                password: OWNER_PASSWORD.into(),
                ..Default::default()
            })
            .await
            && let Some(pb::login_outcome::Outcome::Session(s)) = reply.into_inner().outcome.and_then(|o| o.outcome)
        {
            owner = Some(s.session_token);
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let owner = owner.expect("owner login");
    let mut request = tonic::Request::new(pb::CreateUserRequest {
        email: "bench@client.example".into(),
        display_name: "Bench User".into(),
        password: PASSWORD.into(),
        tenant_id: TENANT.into(),
        role: "client_user".into(),
        ..Default::default()
    });
    request.metadata_mut().insert("authorization", format!("Bearer {owner}").parse().expect("header"));
    client.create_user(request).await.expect("create user");
    let token = login(&mut client, "bench@client.example", PASSWORD).await;

    // Login throughput: one address's share of logins in flight (more would be refused), each
    // caller logging in again as soon as it is answered; hashing is bounded by the pool.
    let start = Instant::now();
    let next = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for _ in 0..share.min(logins) {
        let (mut c, next) = (IdentityServiceClient::new(channel.clone()), next.clone());
        tasks.push(tokio::spawn(async move {
            while next.fetch_add(1, Ordering::SeqCst) < logins {
                login(&mut c, "bench@client.example", PASSWORD).await;
            }
        }));
    }
    for t in tasks {
        t.await.expect("login task");
    }
    let elapsed = start.elapsed();
    let rate = logins as f64 / elapsed.as_secs_f64();
    println!(
        "login throughput: {logins} logins in {:.2} s = {rate:.1} logins/s = {:.0} % of the hashing ceiling (goal >= 85 %)",
        elapsed.as_secs_f64(),
        100.0 * rate / ceiling
    );

    // Authenticate alone: warm the cache, then 16 concurrent callers.
    authenticate_load(over_grpc.clone(), token.clone(), 1, 50).await;
    let alone = authenticate_load(over_grpc.clone(), token.clone(), 16, auth_calls).await;
    report(&format!("Authenticate alone, 16 callers x {auth_calls}"), &alone, "");
    authenticate_load(in_process.clone(), token.clone(), 1, 50).await;
    let local = authenticate_load(in_process.clone(), token.clone(), 16, auth_calls).await;
    report(&format!("Authenticate in-process (warm cache), 16 callers x {auth_calls}"), &local, " (goal p99 < 1 ms)");

    // Authenticate during a login storm that keeps the hashing pool saturated.
    let storm_channel = channel.clone();
    let storm = tokio::spawn(async move {
        let mut tasks = Vec::new();
        for _ in 0..(cores * 4).min(share) {
            let mut c = IdentityServiceClient::new(storm_channel.clone());
            tasks.push(tokio::spawn(async move {
                let mut n = 0;
                let end = Instant::now() + Duration::from_secs(3600);
                while Instant::now() < end {
                    login(&mut c, "bench@client.example", PASSWORD).await;
                    n += 1;
                    if n >= 1_000_000 {
                        break;
                    }
                }
            }));
        }
        tasks
    })
    .await
    .expect("storm");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let during = authenticate_load(over_grpc.clone(), token.clone(), 16, auth_calls).await;
    let local_during = authenticate_load(in_process.clone(), token.clone(), 16, auth_calls).await;
    for t in storm {
        t.abort();
    }
    report(&format!("Authenticate during a login storm, 16 callers x {auth_calls}"), &during, " (goal p99 < 5 ms)");
    report(&format!("Authenticate in-process during the storm, 16 callers x {auth_calls}"), &local_during, "");

    // A flood: 2,000 callers at once, each logging in with the right password again and again,
    // from 20 addresses, far beyond the login budget. Authenticate and the health check have
    // budgets of their own; the logins over the budget (or over their address's share) are
    // refused at once.
    let flood_logins = env_or("BENCH_FLOOD_LOGINS", 2000);
    let retry = Duration::from_millis(env_or("BENCH_FLOOD_RETRY_MS", 20) as u64);
    let flood_for = Duration::from_secs(env_or("BENCH_FLOOD_SECS", 10) as u64);
    let flood = Flood::start(&service.url(), flood_logins, 20, retry).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let health_probe = tokio::spawn(probe_health(channel.clone(), flood.running.clone()));
    let during_flood = authenticate_for(over_grpc.clone(), token.clone(), 16, flood_for).await;
    let (logged_in, shed, failed, elapsed) = flood.stop().await;
    let (health, health_failures) = health_probe.await.expect("health probe");
    report(
        &format!(
            "Authenticate during a flood of {flood_logins} concurrent logins, 16 callers for {} s ({} calls)",
            flood_for.as_secs(),
            during_flood.len()
        ),
        &during_flood,
        " (goal p99 < 5 ms)",
    );
    println!(
        "health during the flood: {} checks, p50 {:.3} ms, p99 {:.3} ms, {health_failures} not SERVING or failed",
        health.len(),
        percentile(&health, 0.5).as_secs_f64() * 1e3,
        percentile(&health, 0.99).as_secs_f64() * 1e3
    );
    println!(
        "the flood over {:.1} s: {logged_in} logins succeeded ({:.1}/s), {shed} refused at once (RESOURCE_EXHAUSTED / OVERLOADED, retried after {} ms), {failed} failed otherwise",
        elapsed.as_secs_f64(),
        logged_in as f64 / elapsed.as_secs_f64(),
        retry.as_millis()
    );
    let _ = service.stop().await;
}

/// Callers logging in without pause (a refused one waits `retry`), spread over `addresses`
/// loopback addresses, one connection each.
struct Flood {
    running: Arc<AtomicBool>,
    logged_in: Arc<AtomicUsize>,
    shed: Arc<AtomicUsize>,
    /// Neither answered nor refused (a connection lost, say): should stay 0.
    failed: Arc<AtomicUsize>,
    started: Instant,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Flood {
    async fn start(url: &str, callers: usize, addresses: u8, retry: Duration) -> Self {
        let running = Arc::new(AtomicBool::new(true));
        let (logged_in, shed) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let failed = Arc::new(AtomicUsize::new(0));
        let mut channels = Vec::new();
        for i in 0..addresses {
            let local = IpAddr::V4(Ipv4Addr::new(127, 0, 1, 10 + i));
            let endpoint = Endpoint::from_shared(url.to_owned()).expect("url").local_address(Some(local));
            channels.push(endpoint.connect().await.expect("connect from a loopback address"));
        }
        let tasks = (0..callers)
            .map(|i| {
                let mut client = IdentityServiceClient::new(channels[i % channels.len()].clone());
                let (running, logged_in, shed, failed) =
                    (running.clone(), logged_in.clone(), shed.clone(), failed.clone());
                tokio::spawn(async move {
                    while running.load(Ordering::Relaxed) {
                        let request = pb::LoginRequest {
                            email: "bench@client.example".into(),
                            password: PASSWORD.into(),
                            ..Default::default()
                        };
                        match client.login(request).await {
                            Ok(_) => {
                                logged_in.fetch_add(1, Ordering::Relaxed);
                            }
                            Err(status) if status.code() == Code::ResourceExhausted => {
                                shed.fetch_add(1, Ordering::Relaxed);
                                tokio::time::sleep(retry).await;
                            }
                            Err(status) => {
                                if failed.fetch_add(1, Ordering::Relaxed) == 0 {
                                    println!("first flooding login that failed otherwise: {status:?}");
                                }
                                tokio::time::sleep(retry).await;
                            }
                        }
                    }
                })
            })
            .collect();
        Self { running, logged_in, shed, failed, started: Instant::now(), tasks }
    }

    async fn stop(self) -> (usize, usize, usize, Duration) {
        self.running.store(false, Ordering::Relaxed);
        let elapsed = self.started.elapsed();
        for task in self.tasks {
            task.await.expect("flooding caller");
        }
        let count = |n: &AtomicUsize| n.load(Ordering::Relaxed);
        (count(&self.logged_in), count(&self.shed), count(&self.failed), elapsed)
    }
}

/// Health checks every 10 ms until `running` ends: their latencies, sorted, and how many did
/// not answer SERVING.
async fn probe_health(channel: Channel, running: Arc<AtomicBool>) -> (Vec<Duration>, usize) {
    let mut health = HealthClient::new(channel);
    let (mut latencies, mut failures) = (Vec::new(), 0);
    while running.load(Ordering::Relaxed) {
        let start = Instant::now();
        match health.check(HealthCheckRequest { service: String::new() }).await {
            Ok(reply) if reply.get_ref().status == ServingStatus::Serving as i32 => latencies.push(start.elapsed()),
            _ => failures += 1,
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    latencies.sort();
    (latencies, failures)
}
