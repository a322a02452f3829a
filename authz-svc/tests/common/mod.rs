//! The test harness: authz-svc on port 0 with a fresh database, fed by doubles of identity-svc's
//! and tenancy-svc's Watch streams (small gRPC servers serving the contract's messages), and a
//! session double for user callers of management RPCs.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::Duration,
};

use authz_svc::{Config, Deps};
use tether_proto::{
    authz::v1::{self as pb, authz_service_client::AuthzServiceClient},
    common::v1::{ConsistencyToken, Heartbeat, MembershipKind, Revision, RevisionSource, SnapshotEnd},
    identity::v1::{
        self as idp,
        identity_service_server::{IdentityService, IdentityServiceServer},
    },
    tenancy::v1::{
        self as tnp,
        tenancy_service_server::{TenancyService, TenancyServiceServer},
    },
};
use tether_runtime::{
    ApiError, ConfigSource,
    access::{Authenticator, Principal},
};
use tether_tests::{RunningService, TestDatabase};
use tokio::sync::Notify;
use tonic::{Request, Response, Status, service::interceptor::InterceptedService, transport::Channel};
use uuid::Uuid;

pub const SERVICE_TOKEN: &str = "test-service-token-0123456789abcdef0123456789";

/// A change-stream double: a log of revisions it serves as snapshot (from 0) or resume (from N).
pub struct Feed<C> {
    /// Each revision, its changes, and whether its last change carries the end marker.
    log: Mutex<Vec<(u64, Vec<C>, bool)>>,
    revision: AtomicU64,
    changed: Notify,
    /// While set, a snapshot is held back (its SnapshotEnd is not sent).
    pub hold_snapshot: AtomicBool,
    /// While set, no heartbeats are sent.
    pub silent: AtomicBool,
    /// Bumped to break every open stream.
    generation: AtomicU64,
    /// The from_revision of every Watch call received.
    pub opened_from: Mutex<Vec<u64>>,
}

impl<C: Clone + Send + 'static> Feed<C> {
    fn new() -> Arc<Self> {
        Arc::new(Self {
            log: Mutex::new(Vec::new()),
            revision: AtomicU64::new(0),
            changed: Notify::new(),
            hold_snapshot: AtomicBool::new(false),
            silent: AtomicBool::new(false),
            generation: AtomicU64::new(0),
            opened_from: Mutex::new(Vec::new()),
        })
    }

    /// Commits one revision made of `changes`; returns it.
    pub fn push(&self, changes: Vec<C>) -> u64 {
        self.commit(changes, true)
    }

    /// Commits one revision whose end marker is never sent (a broken or stalled upstream):
    /// heartbeats then name it though its changes cannot be applied.
    pub fn push_unfinished(&self, changes: Vec<C>) -> u64 {
        self.commit(changes, false)
    }

    fn commit(&self, changes: Vec<C>, finished: bool) -> u64 {
        let mut log = self.log.lock().unwrap();
        let rev = self.revision.fetch_add(1, Ordering::SeqCst) + 1;
        log.push((rev, changes, finished));
        drop(log);
        self.changed.notify_waiters();
        rev
    }

    pub fn revision(&self) -> u64 {
        self.revision.load(Ordering::SeqCst)
    }

    pub fn break_streams(&self) {
        self.generation.fetch_add(1, Ordering::SeqCst);
        self.changed.notify_waiters();
    }

    pub fn release(&self) {
        self.hold_snapshot.store(false, Ordering::SeqCst);
        self.changed.notify_waiters();
    }

    pub fn opened(&self) -> Vec<u64> {
        self.opened_from.lock().unwrap().clone()
    }
}

/// How to wrap a change of one service into its stream messages.
pub trait Wire: Clone + Send + Sync + 'static {
    type Response: Send + 'static;
    fn stamp(&mut self, revision: u64, end: bool);
    fn change(self) -> Self::Response;
    fn snapshot_end(revision: u64) -> Self::Response;
    fn heartbeat(revision: u64) -> Self::Response;
}

impl Wire for idp::IdentityChange {
    type Response = idp::WatchResponse;
    fn stamp(&mut self, revision: u64, end: bool) {
        self.revision = revision;
        self.end_of_revision = end;
    }
    fn change(self) -> Self::Response {
        idp::WatchResponse { kind: Some(idp::watch_response::Kind::Change(self)) }
    }
    fn snapshot_end(revision: u64) -> Self::Response {
        idp::WatchResponse { kind: Some(idp::watch_response::Kind::SnapshotEnd(SnapshotEnd { revision })) }
    }
    fn heartbeat(revision: u64) -> Self::Response {
        idp::WatchResponse { kind: Some(idp::watch_response::Kind::Heartbeat(Heartbeat { revision, sent_at: None })) }
    }
}

impl Wire for tnp::TenancyChange {
    type Response = tnp::WatchResponse;
    fn stamp(&mut self, revision: u64, end: bool) {
        self.revision = revision;
        self.end_of_revision = end;
    }
    fn change(self) -> Self::Response {
        tnp::WatchResponse { kind: Some(tnp::watch_response::Kind::Change(self)) }
    }
    fn snapshot_end(revision: u64) -> Self::Response {
        tnp::WatchResponse { kind: Some(tnp::watch_response::Kind::SnapshotEnd(SnapshotEnd { revision })) }
    }
    fn heartbeat(revision: u64) -> Self::Response {
        tnp::WatchResponse { kind: Some(tnp::watch_response::Kind::Heartbeat(Heartbeat { revision, sent_at: None })) }
    }
}

type Stream<R> = std::pin::Pin<Box<dyn futures_util::Stream<Item = Result<R, Status>> + Send>>;

fn serve_watch<C: Wire>(feed: Arc<Feed<C>>, from: u64) -> Stream<C::Response> {
    feed.opened_from.lock().unwrap().push(from);
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<C::Response, Status>>(1024);
    tokio::spawn(async move {
        let generation = feed.generation.load(Ordering::SeqCst);
        let mut sent = from;
        let send_range = |after: u64, snapshot_at: Option<u64>| -> Vec<C::Response> {
            let log = feed.log.lock().unwrap();
            let mut out = Vec::new();
            for (rev, changes, finished) in log.iter().filter(|(r, _, _)| *r > after) {
                let n = changes.len();
                for (i, c) in changes.iter().enumerate() {
                    let mut c = c.clone();
                    c.stamp(snapshot_at.unwrap_or(*rev), *finished && i + 1 == n);
                    out.push(c.change());
                }
            }
            out
        };
        if from == 0 {
            let at = feed.revision();
            for m in send_range(0, Some(at)) {
                if tx.send(Ok(m)).await.is_err() {
                    return;
                }
            }
            while feed.hold_snapshot.load(Ordering::SeqCst) {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            // Changes committed while holding are live changes after the snapshot.
            if tx.send(Ok(C::snapshot_end(at))).await.is_err() {
                return;
            }
            sent = at;
        }
        loop {
            if feed.generation.load(Ordering::SeqCst) != generation {
                let _ = tx.send(Err(Status::unavailable("stream broken by the test"))).await;
                return;
            }
            let notified = feed.changed.notified();
            let latest = feed.revision();
            if latest > sent {
                for m in send_range(sent, None) {
                    if tx.send(Ok(m)).await.is_err() {
                        return;
                    }
                }
                sent = latest;
            }
            if !feed.silent.load(Ordering::SeqCst) && tx.send(Ok(C::heartbeat(sent))).await.is_err() {
                return;
            }
            let _ = tokio::time::timeout(Duration::from_millis(100), notified).await;
        }
    });
    Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx))
}

/// Watch is a service call, as in identity-svc and tenancy-svc: the service token is required.
fn service_only<T>(request: &Request<T>) -> Result<(), Status> {
    let token = request.metadata().get("x-tether-service-token").and_then(|v| v.to_str().ok());
    if token == Some(SERVICE_TOKEN) { Ok(()) } else { Err(Status::unauthenticated("a session token is required")) }
}

#[derive(Clone)]
pub struct IdentityDouble(pub Arc<Feed<idp::IdentityChange>>);
#[derive(Clone)]
pub struct TenancyDouble(pub Arc<Feed<tnp::TenancyChange>>);

#[tonic::async_trait]
impl IdentityService for IdentityDouble {
    async fn watch(&self, request: Request<idp::WatchRequest>) -> Result<Response<Stream<idp::WatchResponse>>, Status> {
        service_only(&request)?;
        Ok(Response::new(serve_watch(self.0.clone(), request.into_inner().from_revision)))
    }
}

#[tonic::async_trait]
impl TenancyService for TenancyDouble {
    async fn watch(&self, request: Request<tnp::WatchRequest>) -> Result<Response<Stream<tnp::WatchResponse>>, Status> {
        service_only(&request)?;
        Ok(Response::new(serve_watch(self.0.clone(), request.into_inner().from_revision)))
    }
}

/// Both stream doubles, serving on loopback.
pub struct Upstreams {
    pub identity: Arc<Feed<idp::IdentityChange>>,
    pub tenancy: Arc<Feed<tnp::TenancyChange>>,
    pub identity_url: String,
    pub tenancy_url: String,
}

async fn serve<S>(svc: S) -> String
where
    S: tonic::codegen::Service<
            http::Request<tonic::body::Body>,
            Response = http::Response<tonic::body::Body>,
            Error = std::convert::Infallible,
        > + tonic::server::NamedService
        + Clone
        + Send
        + Sync
        + 'static,
    S::Future: Send + 'static,
{
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(svc)
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
    format!("http://{addr}")
}

impl Upstreams {
    pub async fn start() -> Self {
        let identity = Feed::new();
        let tenancy = Feed::new();
        let identity_url = serve(IdentityServiceServer::new(IdentityDouble(identity.clone()))).await;
        let tenancy_url = serve(TenancyServiceServer::new(TenancyDouble(tenancy.clone()))).await;
        Self { identity, tenancy, identity_url, tenancy_url }
    }
}

// ---------- building stream messages ----------

pub fn user(id: Uuid, status: idp::UserStatus, staff: bool) -> idp::IdentityChange {
    user_at(id, status, staff, None)
}

/// A user with a home (identity's primary tenant; client users have one).
pub fn user_at(id: Uuid, status: idp::UserStatus, staff: bool, home: Option<Uuid>) -> idp::IdentityChange {
    idp::IdentityChange {
        change: Some(idp::identity_change::Change::UserUpserted(idp::UserUpserted {
            user: Some(idp::User {
                user_id: id.to_string(),
                email: format!("{id}@example.com"),
                display_name: "Test".into(),
                status: status as i32,
                is_msp_staff: staff,
                primary_tenant_id: home.map(|h| h.to_string()).unwrap_or_default(),
                ..Default::default()
            }),
        })),
        ..Default::default()
    }
}

pub fn user_deleted(id: Uuid) -> idp::IdentityChange {
    idp::IdentityChange {
        change: Some(idp::identity_change::Change::UserDeleted(idp::UserDeleted {
            user_id: id.to_string(),
            display_name: "Test".into(),
        })),
        ..Default::default()
    }
}

pub fn tenant(id: Uuid, parent: Option<Uuid>, kind: tnp::TenantKind, status: tnp::TenantStatus) -> tnp::TenancyChange {
    tnp::TenancyChange {
        change: Some(tnp::tenancy_change::Change::TenantUpserted(tnp::TenantUpserted {
            tenant: Some(tnp::Tenant {
                tenant_id: id.to_string(),
                name: "T".into(),
                kind: kind as i32,
                status: status as i32,
                parent_id: parent.map(|p| p.to_string()).unwrap_or_default(),
                ..Default::default()
            }),
        })),
        ..Default::default()
    }
}

pub fn membership(user: Uuid, tenant: Uuid, role: &str, kind: MembershipKind) -> tnp::TenancyChange {
    tnp::TenancyChange {
        change: Some(tnp::tenancy_change::Change::MembershipUpserted(tnp::MembershipUpserted {
            membership: Some(tnp::Membership {
                user_id: user.to_string(),
                tenant_id: tenant.to_string(),
                role: role.into(),
                kind: kind as i32,
                ..Default::default()
            }),
        })),
        ..Default::default()
    }
}

pub fn assignment(tech: Uuid, client: Uuid) -> tnp::TenancyChange {
    tnp::TenancyChange {
        change: Some(tnp::tenancy_change::Change::TechnicianAssigned(tnp::TechnicianAssigned {
            assignment: Some(tnp::TechnicianAssignment {
                technician_user_id: tech.to_string(),
                tenant_id: client.to_string(),
                ..Default::default()
            }),
        })),
        ..Default::default()
    }
}

/// A seed-000 world: the MSP with an admin, a technician; client A (department A1) with a
/// client admin and a viewer; client B.
pub struct World {
    pub msp: Uuid,
    pub a: Uuid,
    pub a1: Uuid,
    pub b: Uuid,
    pub admin: Uuid,
    pub tech: Uuid,
    pub cadmin: Uuid,
    pub viewer: Uuid,
}

impl World {
    pub fn seed(up: &Upstreams) -> Self {
        let w = Self {
            msp: Uuid::new_v4(),
            a: Uuid::new_v4(),
            a1: Uuid::new_v4(),
            b: Uuid::new_v4(),
            admin: Uuid::new_v4(),
            tech: Uuid::new_v4(),
            cadmin: Uuid::new_v4(),
            viewer: Uuid::new_v4(),
        };
        use idp::UserStatus::Active;
        up.identity.push(vec![
            user(w.admin, Active, true),
            user(w.tech, Active, true),
            user_at(w.cadmin, Active, false, Some(w.a)),
            user_at(w.viewer, Active, false, Some(w.a)),
        ]);
        use tnp::{TenantKind as K, TenantStatus::Active as On};
        let mut changes = vec![
            tenant(w.msp, None, K::Admin, On),
            tenant(w.a, Some(w.msp), K::Client, On),
            tenant(w.a1, Some(w.a), K::Department, On),
            tenant(w.b, Some(w.msp), K::Client, On),
            membership(w.admin, w.msp, "msp_admin", MembershipKind::Direct),
            membership(w.tech, w.msp, "msp_technician", MembershipKind::Direct),
            membership(w.cadmin, w.a, "client_admin", MembershipKind::Direct),
            membership(w.viewer, w.a, "client_viewer", MembershipKind::Direct),
        ];
        for t in [w.a, w.a1, w.b] {
            changes.push(membership(w.admin, t, "msp_admin", MembershipKind::Shadow));
            changes.push(membership(w.tech, t, "msp_technician", MembershipKind::Shadow));
        }
        up.tenancy.push(changes);
        w
    }
}

/// A session double: bearer token -> principal.
#[derive(Default, Clone)]
pub struct Sessions(pub Arc<Mutex<HashMap<String, Principal>>>);

impl Sessions {
    pub fn login(&self, user: Uuid, staff: bool) -> String {
        let token = format!("tok-{user}");
        self.0.lock().unwrap().insert(
            token.clone(),
            Principal {
                user_id: user.to_string(),
                is_msp_staff: staff,
                primary_tenant_id: String::new(),
                session_id: Uuid::new_v4().to_string(),
                display_name: "User".into(),
                email: format!("{user}@example.com"),
            },
        );
        token
    }
}

#[tonic::async_trait]
impl Authenticator for Sessions {
    async fn authenticate(&self, token: &str) -> Result<Principal, ApiError> {
        self.0
            .lock()
            .unwrap()
            .get(token)
            .cloned()
            .ok_or_else(|| ApiError::new(tether_proto::common::v1::ErrorReason::Unauthenticated, "unknown token"))
    }
}

pub struct Authz {
    pub service: RunningService,
    /// A plain channel to the replica, for calls made without credentials.
    pub channel: Channel,
    /// Calls as a service (the service token) unless the request names a session itself.
    pub client: AuthzServiceClient<InterceptedService<Channel, AsServiceUnlessUser>>,
    pub sessions: Sessions,
}

pub fn config(db: &TestDatabase, up: &Upstreams, extra: &[(&str, &str)]) -> ConfigSource {
    let mut source = db
        .config()
        .with("TETHER_AUTHZ_IDENTITY_ADDR", up.identity_url.clone())
        .with("TETHER_AUTHZ_TENANCY_ADDR", up.tenancy_url.clone())
        .with("TETHER_AUTHZ_RECONNECT_MS", "50")
        .with("TETHER_AUTHZ_OWN_POLL_MS", "100")
        .with("TETHER_SERVICE_TOKEN", SERVICE_TOKEN);
    for (k, v) in extra {
        source = source.with(*k, *v);
    }
    source
}

pub async fn start(source: ConfigSource) -> Authz {
    let config = Config::load(&source).expect("config");
    let sessions = Sessions::default();
    let deps = Deps { authenticator: Arc::new(sessions.clone()), audit: tether_tests::AcceptingAuditSink::new() };
    let host = authz_svc::prepare_with(config, deps).await.expect("prepare");
    let service = RunningService::spawn("authz", host).await;
    let channel = service.channel().await;
    let client = AuthzServiceClient::with_interceptor(channel.clone(), AsServiceUnlessUser);
    Authz { service, channel, client, sessions }
}

/// Starts authz and waits for it to serve.
pub async fn start_serving(db: &TestDatabase, up: &Upstreams, extra: &[(&str, &str)]) -> Authz {
    let authz = start(config(db, up, extra)).await;
    authz.service.wait_serving().await;
    authz
}

/// What other Tether services do: present the service token, unless the test made the call as a
/// person (an `authorization` header) or as someone else already.
#[derive(Clone, Copy)]
pub struct AsServiceUnlessUser;

impl tonic::service::Interceptor for AsServiceUnlessUser {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        let metadata = request.metadata_mut();
        if !metadata.contains_key("authorization") && !metadata.contains_key("x-tether-service-token") {
            metadata.insert("x-tether-service-token", SERVICE_TOKEN.parse().unwrap());
            metadata.insert("x-tether-service", "tests".parse().unwrap());
        }
        Ok(request)
    }
}

pub fn as_service<T>(message: T) -> Request<T> {
    let mut request = Request::new(message);
    request.metadata_mut().insert("x-tether-service-token", SERVICE_TOKEN.parse().unwrap());
    request.metadata_mut().insert("x-tether-service", "tests".parse().unwrap());
    request
}

pub fn as_user<T>(token: &str, message: T) -> Request<T> {
    let mut request = Request::new(message);
    request.metadata_mut().insert("authorization", format!("Bearer {token}").parse().unwrap());
    request
}

pub fn check(user: Uuid, permission: &str, tenant: Uuid) -> pb::CheckRequest {
    pb::CheckRequest {
        subject_user_id: user.to_string(),
        permission: permission.into(),
        tenant_id: tenant.to_string(),
        ..Default::default()
    }
}

pub fn fresh(source: RevisionSource, value: u64) -> Option<ConsistencyToken> {
    Some(ConsistencyToken { revisions: vec![Revision { source: source as i32, value }] })
}

impl Authz {
    pub async fn allowed(&self, user: Uuid, permission: &str, tenant: Uuid) -> bool {
        self.client.clone().check(check(user, permission, tenant)).await.expect("check").into_inner().allowed
    }

    /// Polls until the check answers `want` (a change reached the index), or panics after 5 s.
    pub async fn eventually(&self, user: Uuid, permission: &str, tenant: Uuid, want: bool) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        loop {
            if let Ok(r) = self.client.clone().check(check(user, permission, tenant)).await
                && r.get_ref().allowed == want
            {
                return;
            }
            assert!(tokio::time::Instant::now() < deadline, "check never became {want}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}
