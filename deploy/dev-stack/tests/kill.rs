//! Nothing lost, nothing doubled, with real processes: each service runs in its own `tether-dev`
//! process (`TETHER_DEV_SERVICES`), audit-svc is killed with SIGKILL and restarted while tenancy
//! produces events, and tenancy itself is killed between committing changes and delivering their
//! events. Afterwards every acknowledged change has exactly one audit record and every service's
//! outbox is empty. On SQLite by default, on PostgreSQL with `TETHER_TEST_DATABASE_URL`.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failed step should panic

use std::{
    collections::HashMap,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use tether_proto::{
    audit::v1::{EventFilter, SearchEventsRequest, VerifyIntegrityRequest, audit_service_client::AuditServiceClient},
    identity::v1::{LoginRequest, identity_service_client::IdentityServiceClient, login_outcome},
    tenancy::v1::{CreateTenantRequest, tenancy_service_client::TenancyServiceClient},
};
use tether_tests::TestDatabase;
use tonic::transport::Channel;
use tonic_health::pb::{HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient};

const NAMES: [&str; 4] = ["identity", "tenancy", "authz", "audit"];
const TOKEN: &str = "kill-test-service-token-0123456789abcdef";
const PASSWORD: &str = "owner-pass-phrase-2026";

/// The four services' settings and ports, shared by every process.
struct Deployment {
    db: TestDatabase,
    ports: HashMap<&'static str, u16>,
    running: HashMap<&'static str, Child>,
}

impl Deployment {
    async fn new() -> Self {
        let db = TestDatabase::fresh().await;
        let listeners: Vec<_> = NAMES.iter().map(|_| std::net::TcpListener::bind("127.0.0.1:0").unwrap()).collect();
        let ports = NAMES.iter().zip(&listeners).map(|(n, l)| (*n, l.local_addr().unwrap().port())).collect();
        Self { db, ports, running: HashMap::new() }
    }

    fn url(&self, name: &str) -> String {
        format!("http://127.0.0.1:{}", self.ports[name])
    }

    /// Starts `name` in a process of its own and waits until it is SERVING.
    async fn start(&mut self, name: &'static str) {
        let mut command = Command::new(env!("CARGO_BIN_EXE_tether-dev"));
        command
            .env_clear()
            .env("TETHER_DEV_SERVICES", name)
            .env("TETHER_LOG", "warn")
            .env("TETHER_SERVICE_TOKEN", TOKEN)
            .env("TETHER_IDENTITY_BOOTSTRAP_OWNER_PASSWORD", PASSWORD)
            .env(format!("TETHER_{}_AUDIT_RELAY_BACKOFF_MAX_MS", name.to_uppercase()), "300")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit());
        match (&self.db.data_dir, &self.db.url) {
            (Some(dir), _) => command.env("TETHER_DATA_DIR", dir),
            (_, Some(url)) => command.env("TETHER_DATA_DIR", std::env::temp_dir()).env("DATABASE_URL", url),
            _ => unreachable!(),
        };
        for service in NAMES {
            command.env(
                format!("TETHER_{}_LISTEN_ADDR", service.to_uppercase()),
                format!("127.0.0.1:{}", self.ports[service]),
            );
        }
        self.running.insert(name, command.spawn().unwrap());
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(channel) = Channel::from_shared(self.url(name)).unwrap().connect().await {
                let reply = HealthClient::new(channel).check(HealthCheckRequest { service: String::new() }).await;
                if reply.is_ok_and(|r| r.get_ref().status == ServingStatus::Serving as i32) {
                    return;
                }
            }
            assert!(Instant::now() < deadline, "{name} never became SERVING");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// SIGKILL: no drain, no goodbye.
    fn kill(&mut self, name: &str) {
        let mut child = self.running.remove(name).unwrap();
        child.kill().unwrap();
        child.wait().unwrap();
    }

    async fn channel(&self, name: &str) -> Channel {
        Channel::from_shared(self.url(name)).unwrap().connect().await.unwrap()
    }
}

impl Drop for Deployment {
    fn drop(&mut self) {
        for (_, mut child) in self.running.drain() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn bearer<T>(session: &str, message: T) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.metadata_mut().insert("authorization", format!("Bearer {session}").parse().unwrap());
    request
}

async fn owner_session(d: &Deployment) -> String {
    let mut identity = IdentityServiceClient::new(d.channel("identity").await);
    for _ in 0..600 {
        let login = LoginRequest { email: "owner@msp.example".into(), password: PASSWORD.into(), ..Default::default() };
        if let Ok(reply) = identity.login(login).await
            && let Some(login_outcome::Outcome::Session(s)) = reply.into_inner().outcome.and_then(|o| o.outcome)
        {
            return s.session_token;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the owner never became loginable");
}

/// Creates `n` tenants; returns the ids tenancy acknowledged.
async fn create_tenants(d: &Deployment, session: &str, n: usize, label: &str) -> Vec<String> {
    let mut tenancy = TenancyServiceClient::new(d.channel("tenancy").await);
    let mut ids = Vec::new();
    for i in 0..n {
        let request = CreateTenantRequest { name: format!("{label} {i}"), ..Default::default() };
        let reply = tenancy.create_tenant(bearer(session, request)).await.unwrap().into_inner();
        ids.push(reply.tenant.unwrap().tenant_id);
    }
    ids
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_processes_lose_and_double_no_audit_event() {
    let mut d = Deployment::new().await;
    for name in NAMES {
        d.start(name).await;
    }
    let session = owner_session(&d).await;
    let mut acknowledged = create_tenants(&d, &session, 10, "before").await;

    // audit-svc dies while tenancy keeps producing, and comes back.
    d.kill("audit");
    acknowledged.extend(create_tenants(&d, &session, 10, "while audit is down").await);
    d.start("audit").await;
    acknowledged.extend(create_tenants(&d, &session, 5, "after audit is back").await);

    // tenancy commits changes it cannot deliver (audit is down), then dies before delivering.
    d.kill("audit");
    acknowledged.extend(create_tenants(&d, &session, 10, "before tenancy dies").await);
    d.kill("tenancy");
    d.start("audit").await;
    d.start("tenancy").await;

    let mut audit = AuditServiceClient::new(d.channel("audit").await);
    let deadline = Instant::now() + Duration::from_secs(60);
    let created = loop {
        let mut created = Vec::new();
        let mut page_token = String::new();
        loop {
            let request = SearchEventsRequest {
                page_size: 500,
                page_token,
                filter: Some(EventFilter { action: "tenant.create".into(), ..Default::default() }),
            };
            let reply = audit.search_events(bearer(&session, request)).await.unwrap().into_inner();
            created.extend(reply.records.into_iter().map(|r| r.event.unwrap().resource_id));
            if reply.next_page_token.is_empty() {
                break;
            }
            page_token = reply.next_page_token;
        }
        if acknowledged.iter().all(|id| created.contains(id)) || Instant::now() > deadline {
            break created;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    for id in &acknowledged {
        let count = created.iter().filter(|c| *c == id).count();
        assert_eq!(count, 1, "tenant {id}: {count} tenant.create records");
    }
    let mut distinct = created.clone();
    distinct.sort();
    distinct.dedup();
    assert_eq!(distinct.len(), created.len(), "no record twice (the admin tenancy's own is the one extra)");

    // Every outbox drains: marked delivered once audit-svc's acknowledgement is back, a moment
    // after it stored the events.
    for service in ["identity", "tenancy", "authz"] {
        let pool = d.db.inspect(service).await;
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let pending: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM audit_outbox WHERE delivered_at IS NULL")
                .fetch_one(&pool)
                .await
                .unwrap();
            if pending == 0 {
                break;
            }
            assert!(Instant::now() < deadline, "{service}'s outbox still holds {pending} undelivered events");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    let verified =
        audit.verify_integrity(bearer(&session, VerifyIntegrityRequest::default())).await.unwrap().into_inner();
    assert!(verified.ok, "{}", verified.detail);
}
