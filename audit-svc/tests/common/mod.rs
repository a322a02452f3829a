//! audit-svc against a fresh database, with doubles for the three services it asks: who a
//! session belongs to, who holds `audit.view` where, and which tenants lie below one.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)] // each test file uses a part of this kit

use std::{
    collections::{BTreeSet, HashMap},
    sync::{Arc, Mutex},
    time::Duration,
};

use base64::Engine;
use tether_proto::{
    audit::v1::{audit_service_client::AuditServiceClient, *},
    common::v1::{Actor, ActorKind, AuditEvent, AuditOutcome, ConsistencyToken, ErrorReason},
};
use tether_runtime::{
    ApiError,
    access::{Authenticator, Authorizer, Principal, RoleGrant, RoleGrantDecision},
};
use tether_tests::{RunningService, SERVICE_TOKEN, TestDatabase};
use tokio_stream::StreamExt;
use tonic::transport::Channel;

pub const SIGNING_SEED: [u8; 32] = [7; 32];
pub const ADMIN_TENANCY: &str = "00000000-0000-4000-8000-000000000001";

/// The people and tenants of a test: sessions, where each holds `audit.view`, the tree.
#[derive(Default)]
pub struct World {
    pub people: HashMap<String, Principal>,
    /// (user, tenant) pairs holding audit.view.
    pub viewers: BTreeSet<(String, String)>,
    /// tenant -> its departments.
    pub children: HashMap<String, Vec<String>>,
}

#[derive(Clone, Default)]
pub struct Doubles(pub Arc<Mutex<World>>);

impl Doubles {
    /// A person with a session token equal to their user id.
    pub fn person(&self, is_msp_staff: bool, home: &str, views: &[&str]) -> String {
        let id = uuid::Uuid::new_v4().to_string();
        let mut world = self.0.lock().unwrap();
        world.people.insert(
            id.clone(),
            Principal {
                user_id: id.clone(),
                is_msp_staff,
                // As identity-svc says it: empty for MSP staff, whose home is the admin tenancy.
                primary_tenant_id: if is_msp_staff { String::new() } else { home.to_owned() },
                session_id: uuid::Uuid::new_v4().to_string(),
                display_name: format!("Person {}", &id[..4]),
                email: format!("{}@example.test", &id[..8]),
            },
        );
        for tenant in views {
            world.viewers.insert((id.clone(), tenant.to_string()));
        }
        id
    }

    pub fn department(&self, parent: &str, child: &str) {
        self.0.lock().unwrap().children.entry(parent.to_owned()).or_default().push(child.to_owned());
    }
}

#[tonic::async_trait]
impl Authenticator for Doubles {
    async fn authenticate(&self, token: &str) -> Result<Principal, ApiError> {
        self.0
            .lock()
            .unwrap()
            .people
            .get(token)
            .cloned()
            .ok_or_else(|| ApiError::new(ErrorReason::Unauthenticated, "unknown session"))
    }
}

#[tonic::async_trait]
impl Authorizer for Doubles {
    async fn check(
        &self,
        user_id: &str,
        permission: &str,
        tenant_id: &str,
        _: Option<&ConsistencyToken>,
    ) -> Result<bool, ApiError> {
        Ok(permission == "audit.view"
            && self.0.lock().unwrap().viewers.contains(&(user_id.to_owned(), tenant_id.to_owned())))
    }
    async fn check_role_grant(&self, _: &RoleGrant) -> Result<RoleGrantDecision, ApiError> {
        Err(ApiError::new(ErrorReason::NotImplemented, "not used by audit"))
    }
}

#[tonic::async_trait]
impl audit_svc::deps::Directory for Doubles {
    async fn tenants_with(&self, user_id: &str, permission: &str) -> Result<BTreeSet<String>, ApiError> {
        let world = self.0.lock().unwrap();
        Ok(world
            .viewers
            .iter()
            .filter(|(u, _)| permission == "audit.view" && u == user_id)
            .map(|(_, t)| t.clone())
            .collect())
    }
    async fn subtree(&self, tenant_id: &str) -> Result<BTreeSet<String>, ApiError> {
        let world = self.0.lock().unwrap();
        let mut out = BTreeSet::from([tenant_id.to_owned()]);
        let mut todo = vec![tenant_id.to_owned()];
        while let Some(t) = todo.pop() {
            for c in world.children.get(&t).into_iter().flatten() {
                out.insert(c.clone());
                todo.push(c.clone());
            }
        }
        Ok(out)
    }
    async fn admin_tenancy(&self) -> Result<String, ApiError> {
        Ok(ADMIN_TENANCY.to_owned())
    }
}

pub struct Audit {
    pub db: TestDatabase,
    pub doubles: Doubles,
    pub service: RunningService,
    pub client: AuditServiceClient<Channel>,
}

pub fn settings(db: &TestDatabase) -> tether_runtime::ConfigSource {
    db.config()
        .with("TETHER_AUDIT_SIGNING_KEY", base64::engine::general_purpose::STANDARD.encode(SIGNING_SEED))
        .with("TETHER_AUDIT_CHECKPOINT_INTERVAL_MS", "100")
        .with("TETHER_AUDIT_TAIL_POLL_MS", "50")
        .with("TETHER_AUDIT_TAIL_HEARTBEAT_MS", "300")
}

impl Audit {
    pub async fn start() -> Self {
        let db = TestDatabase::fresh().await;
        Self::start_on(db, Doubles::default()).await
    }

    pub async fn start_on(db: TestDatabase, doubles: Doubles) -> Self {
        let config = audit_svc::Config::load(&settings(&db)).unwrap();
        let deps = audit_svc::Deps {
            authenticator: Arc::new(doubles.clone()),
            authorizer: Arc::new(doubles.clone()),
            directory: Arc::new(doubles.clone()),
        };
        let host = audit_svc::prepare_with(config, deps).await.unwrap();
        let service = RunningService::spawn("audit", host).await;
        service.wait_serving().await;
        let client = AuditServiceClient::new(service.channel().await);
        Self { db, doubles, service, client }
    }

    /// Ingests as a service.
    pub async fn ingest(&self, events: Vec<AuditEvent>) -> IngestResponse {
        self.client.clone().ingest(as_service(IngestRequest { events })).await.unwrap().into_inner()
    }

    /// Every record `who` finds with `filter`, following pages.
    pub async fn search_all(&self, who: &str, filter: EventFilter) -> Vec<AuditRecord> {
        let mut out = Vec::new();
        let mut page_token = String::new();
        loop {
            let request = SearchEventsRequest { page_size: 100, page_token, filter: Some(filter.clone()) };
            let reply = self.client.clone().search_events(as_user(who, request)).await.unwrap().into_inner();
            out.extend(reply.records);
            if reply.next_page_token.is_empty() {
                return out;
            }
            page_token = reply.next_page_token;
        }
    }

    pub async fn verify(&self, request: VerifyIntegrityRequest) -> VerifyIntegrityResponse {
        self.client.clone().verify_integrity(as_service(request)).await.unwrap().into_inner()
    }

    /// A raw pool on audit's tables.
    pub async fn tables(&self) -> sqlx::AnyPool {
        self.db.inspect("audit").await
    }
}

/// An export as `who`: the file, its summary, and how many messages carried it.
pub async fn export(
    audit: &Audit,
    who: &str,
    format: ExportFormat,
    filter: EventFilter,
) -> (Vec<u8>, ExportSummary, usize) {
    let request = ExportEventsRequest { filter: Some(filter), format: format as i32 };
    let mut stream = audit.client.clone().export_events(as_user(who, request)).await.unwrap().into_inner();
    let (mut file, mut summary, mut chunks) = (Vec::new(), None, 0);
    while let Some(message) = stream.next().await {
        let message = message.unwrap();
        assert!(message.data.len() <= 64 * 1024, "chunks of at most 64 KiB");
        file.extend(message.data);
        chunks += 1;
        if message.summary.is_some() {
            summary = message.summary;
        }
    }
    (file, summary.expect("the last message carries the summary"), chunks)
}

pub fn as_service<T>(message: T) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.metadata_mut().insert("x-tether-service-token", SERVICE_TOKEN.parse().unwrap());
    request.metadata_mut().insert("x-tether-service", "identity".parse().unwrap());
    request
}

pub fn as_user<T>(session: &str, message: T) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.metadata_mut().insert("authorization", format!("Bearer {session}").parse().unwrap());
    request
}

/// A valid event: `action` on a user resource in `tenant` by `actor` (a user id or "").
pub fn event(action: &str, tenant: &str, actor: &str) -> AuditEvent {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap();
    AuditEvent {
        event_id: uuid::Uuid::now_v7().to_string(),
        occurred_at: Some(prost_types::Timestamp { seconds: now.as_secs() as i64, nanos: now.subsec_nanos() as i32 }),
        source_service: "identity-svc".into(),
        actor: Some(if actor.is_empty() {
            Actor { kind: ActorKind::System as i32, system_name: "identity-svc/bootstrap".into(), ..Default::default() }
        } else {
            Actor {
                kind: ActorKind::User as i32,
                user_id: actor.into(),
                display_name: "Mitch Jones".into(),
                email: "mitch@client.example".into(),
                ..Default::default()
            }
        }),
        action: action.into(),
        resource_type: action.split('.').next().unwrap_or("user").into(),
        resource_id: uuid::Uuid::new_v4().to_string(),
        tenant_id: tenant.into(),
        client_ip: "203.0.113.7".into(),
        outcome: AuditOutcome::Success as i32,
        before_json: r#"{"role":"viewer"}"#.into(),
        after_json: r#"{"role":"admin"}"#.into(),
        ..Default::default()
    }
}

pub fn reason(status: &tonic::Status) -> String {
    tonic_types::StatusExt::get_details_error_info(status).map(|i| i.reason).unwrap_or_default()
}

/// Polls `f` until it returns Some, for at most 10 s.
pub async fn eventually<T, F, Fut>(mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(tokio::time::Instant::now() < deadline, "condition not met within 10 s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
