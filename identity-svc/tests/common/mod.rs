//! Doubles of authz-svc and tenancy-svc, and a harness that serves identity-svc on port 0.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering},
    },
};

use identity_svc::{Deps, Tenancy};
use tether_proto::{
    common::v1::{AuditEvent, ErrorReason},
    identity::v1::{self as pb, identity_service_client::IdentityServiceClient},
};
use tether_runtime::{
    ApiError, ConfigSource,
    access::{Authorizer, RoleGrant, RoleGrantDecision},
};
use tether_tests::{RunningService, TestDatabase};
use tonic::{Code, Request, transport::Channel};

pub const ADMIN_TENANCY: &str = "00000000-0000-7000-8000-000000000001";
pub const TENANT_A: &str = "00000000-0000-7000-8000-00000000000a";
pub const TENANT_B: &str = "00000000-0000-7000-8000-00000000000b";
/// A tenant the tenancy double does not know.
pub const TENANT_GONE: &str = "00000000-0000-7000-8000-00000000dead";
pub const OWNER_EMAIL: &str = "owner@msp.example";
pub const OWNER_PASSWORD: &str = "owner-pass-phrase-2026";
pub const SERVICE_TOKEN: &str = "test-service-token-0123456789abcdef";

/// Roles of the double: name -> (rank, permissions).
fn role(name: &str) -> Option<(u32, &'static [&'static str])> {
    const ALL: &[&str] = &["users.view", "users.manage", "tenants.manage", "settings.manage", "audit.view"];
    match name {
        "msp_owner" => Some((100, ALL)),
        "msp_admin" => Some((90, ALL)),
        "msp_technician" => Some((40, &["users.view"])),
        "client_admin" => Some((50, &["users.view", "users.manage"])),
        // Invites, like the "platform" pack's MANAGER, without managing users.
        "client_manager" => Some((30, &["users.view", "users.invite"])),
        "client_user" => Some((10, &[])),
        _ => None,
    }
}

/// authz-svc double: grants are (user, tenant or "*", role).
#[derive(Default)]
pub struct FakeAuthz {
    grants: Mutex<Vec<(String, String, String)>>,
}

impl FakeAuthz {
    pub fn grant(&self, user: &str, tenant: &str, role: &str) {
        self.grants.lock().unwrap().push((user.into(), tenant.into(), role.into()));
    }
    fn best_rank(&self, user: &str, tenant: &str) -> Option<(u32, Vec<&'static str>)> {
        let grants = self.grants.lock().unwrap();
        grants
            .iter()
            .filter(|(u, t, _)| u == user && (t == tenant || t == "*"))
            .filter_map(|(_, _, r)| role(r))
            .max_by_key(|(rank, _)| *rank)
            .map(|(rank, perms)| (rank, perms.to_vec()))
    }
}

#[tonic::async_trait]
impl Authorizer for FakeAuthz {
    async fn check(
        &self,
        user_id: &str,
        permission: &str,
        tenant_id: &str,
        _: Option<&tether_proto::common::v1::ConsistencyToken>,
    ) -> Result<bool, ApiError> {
        Ok(self.best_rank(user_id, tenant_id).is_some_and(|(_, perms)| perms.contains(&permission)))
    }

    async fn check_role_grant(&self, grant: &RoleGrant) -> Result<RoleGrantDecision, ApiError> {
        let deny = |reason: ErrorReason| RoleGrantDecision {
            allowed: false,
            denial_reason: reason,
            summary: format!("{reason:?}"),
        };
        if grant.role == "msp_owner" {
            return Ok(deny(ErrorReason::OwnerRoleNotAssignable));
        }
        if grant.role.is_empty() {
            // A removal: never the last client admin of a tenant, never above the actor.
            let others = self
                .grants
                .lock()
                .unwrap()
                .iter()
                .any(|(u, t, r)| u != &grant.target_user_id && t == &grant.tenant_id && r == "client_admin");
            if grant.previous_role == "client_admin" && !others {
                return Ok(deny(ErrorReason::LastAdmin));
            }
            let rank = role(&grant.previous_role).map(|(rank, _)| rank).unwrap_or(0);
            return match self.best_rank(&grant.actor_user_id, &grant.tenant_id) {
                Some((own, _)) if own >= rank => Ok(RoleGrantDecision {
                    allowed: true,
                    denial_reason: ErrorReason::Unspecified,
                    summary: String::new(),
                }),
                _ => Ok(deny(ErrorReason::RoleAboveOwn)),
            };
        }
        let Some((rank, _)) = role(&grant.role) else { return Ok(deny(ErrorReason::RoleNotFound)) };
        // Adding a new user: users.manage, or the invite permission; changing someone's role:
        // users.manage only.
        let adding = grant.target_user_id.is_empty();
        let may = |perms: &[&str]| perms.contains(&"users.manage") || (adding && perms.contains(&"users.invite"));
        match self.best_rank(&grant.actor_user_id, &grant.tenant_id) {
            Some((_, perms)) if !may(&perms) => Ok(deny(ErrorReason::PermissionDenied)),
            Some((own, _)) if own >= rank => {
                Ok(RoleGrantDecision { allowed: true, denial_reason: ErrorReason::Unspecified, summary: String::new() })
            }
            Some(_) => Ok(deny(ErrorReason::RoleAboveOwn)),
            None => Ok(deny(ErrorReason::OutsideTenant)),
        }
    }
}

/// tenancy-svc double: idempotent memberships, an owner, tenant names and parents, and a
/// switch that makes it fail.
#[derive(Default)]
pub struct FakeTenancy {
    pub memberships: Mutex<HashMap<String, Vec<(String, String)>>>,
    /// user -> (tenant, role) memberships that are not direct (MSP staff's shadow ones).
    pub shadows: Mutex<HashMap<String, Vec<(String, String)>>>,
    pub owner: Mutex<Option<String>>,
    /// tenant -> parent (tenants not listed hang off the admin tenancy).
    pub parents: Mutex<HashMap<String, String>>,
    /// tenant -> name (unknown tenants are NOT_FOUND).
    pub names: Mutex<HashMap<String, String>>,
    pub failing: AtomicBool,
    /// Fails only the membership writes (the relay's deliveries); reads still answer.
    pub failing_writes: AtomicBool,
    /// Holds each membership delivery this long (ms) before it lands: a slow tenancy-svc.
    pub write_delay_ms: AtomicU64,
    pub calls: AtomicUsize,
}

impl FakeTenancy {
    pub fn membership(&self, user: &str) -> Vec<(String, String)> {
        self.memberships.lock().unwrap().get(user).cloned().unwrap_or_default()
    }
    /// Moves ownership, as TransferOwnership does in tenancy-svc.
    pub fn set_owner(&self, user_id: &str) {
        *self.owner.lock().unwrap() = Some(user_id.into());
    }
    pub fn add_role(&self, user_id: &str, tenant_id: &str, role: &str) {
        self.memberships.lock().unwrap().entry(user_id.into()).or_default().push((tenant_id.into(), role.into()));
    }
    /// A shadow membership, as tenancy gives MSP staff in every tenant.
    pub fn add_shadow(&self, user_id: &str, tenant_id: &str, role: &str) {
        self.shadows.lock().unwrap().entry(user_id.into()).or_default().push((tenant_id.into(), role.into()));
    }
    fn gate(&self) -> Result<(), ApiError> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        if self.failing.load(Ordering::SeqCst) {
            Err(ApiError::new(ErrorReason::Unavailable, "tenancy-svc is down"))
        } else {
            Ok(())
        }
    }
    fn gate_write(&self) -> Result<(), ApiError> {
        self.gate()?;
        if self.failing_writes.load(Ordering::SeqCst) {
            Err(ApiError::new(ErrorReason::Unavailable, "tenancy-svc cannot write"))
        } else {
            Ok(())
        }
    }
}

#[tonic::async_trait]
impl Tenancy for FakeTenancy {
    async fn admin_tenancy_id(&self) -> Result<String, ApiError> {
        self.gate()?;
        Ok(ADMIN_TENANCY.into())
    }
    async fn add_membership(&self, user_id: &str, tenant_id: &str, role: &str) -> Result<u64, ApiError> {
        self.gate_write()?;
        let delay = self.write_delay_ms.load(Ordering::SeqCst);
        if delay > 0 {
            tokio::time::sleep(std::time::Duration::from_millis(delay)).await;
        }
        if tenant_id == TENANT_GONE {
            return Err(ApiError::new(ErrorReason::TenantNotFound, "no such tenant"));
        }
        let mut m = self.memberships.lock().unwrap();
        let list = m.entry(user_id.into()).or_default();
        let entry = (tenant_id.to_owned(), role.to_owned());
        if !list.contains(&entry) {
            list.push(entry);
        }
        Ok(self.calls.load(Ordering::SeqCst) as u64)
    }
    async fn clear_memberships(&self, user_id: &str) -> Result<(), ApiError> {
        self.gate_write()?;
        self.memberships.lock().unwrap().remove(user_id);
        Ok(())
    }
    async fn transfer_ownership(&self, user_id: &str) -> Result<u64, ApiError> {
        self.gate_write()?;
        let mut owner = self.owner.lock().unwrap();
        if owner.is_none() {
            *owner = Some(user_id.into());
            self.memberships
                .lock()
                .unwrap()
                .entry(user_id.into())
                .or_default()
                .push((ADMIN_TENANCY.into(), "msp_owner".into()));
        }
        Ok(self.calls.load(Ordering::SeqCst) as u64)
    }
    async fn user_roles(&self, user_id: &str) -> Result<Vec<identity_svc::domain::two_factor::HeldRole>, ApiError> {
        self.gate()?;
        let parents = self.parents.lock().unwrap().clone();
        let shadows = self.shadows.lock().unwrap().get(user_id).cloned().unwrap_or_default();
        let direct = self.membership(user_id).into_iter().map(|m| (m, true));
        Ok(direct
            .chain(shadows.into_iter().map(|m| (m, false)))
            .map(|((tenant, role), direct)| {
                let mut ancestors = Vec::new();
                let mut at = tenant.clone();
                while at != ADMIN_TENANCY && ancestors.len() < 10 {
                    at = parents.get(&at).cloned().unwrap_or_else(|| ADMIN_TENANCY.to_owned());
                    ancestors.push(at.clone());
                }
                identity_svc::domain::two_factor::HeldRole { tenant_id: tenant, ancestors, role, direct }
            })
            .collect())
    }
    async fn owner_id(&self) -> Result<Option<String>, ApiError> {
        self.gate()?;
        Ok(self.owner.lock().unwrap().clone())
    }
    async fn tenant_name(&self, tenant_id: &str) -> Result<Option<String>, ApiError> {
        self.gate()?;
        Ok(self.names.lock().unwrap().get(tenant_id).cloned())
    }
    async fn tenant_chain(&self, tenant_id: &str) -> Result<Option<Vec<String>>, ApiError> {
        self.gate()?;
        if tenant_id == TENANT_GONE {
            return Ok(None);
        }
        let parents = self.parents.lock().unwrap();
        let mut chain = vec![tenant_id.to_owned()];
        while chain.last().is_some_and(|t| t != ADMIN_TENANCY) && chain.len() < 10 {
            let parent = parents.get(chain.last().map(String::as_str).unwrap_or_default()).cloned();
            chain.push(parent.unwrap_or_else(|| ADMIN_TENANCY.to_owned()));
        }
        Ok(Some(chain))
    }
}

pub struct Env {
    pub db: TestDatabase,
    pub authz: Arc<FakeAuthz>,
    pub tenancy: Arc<FakeTenancy>,
    pub service: Option<RunningService>,
    pub client: IdentityServiceClient<Channel>,
    pub owner_id: String,
    pub extra: Vec<(String, String)>,
    pub mail_dir: std::path::PathBuf,
}

pub fn config(db: &TestDatabase, extra: &[(String, String)]) -> ConfigSource {
    let mut source = db
        .config()
        .with("TETHER_IDENTITY_BOOTSTRAP_OWNER_PASSWORD", OWNER_PASSWORD)
        .with("TETHER_SERVICE_TOKEN", SERVICE_TOKEN)
        .with("TETHER_IDENTITY_RELAY_RETRY_MS", "50")
        .with("TETHER_IDENTITY_RELAY_MAX_RETRY_MS", "200");
    for (k, v) in extra {
        source = source.with(k.clone(), v.clone());
    }
    source
}

pub async fn serve(
    db: &TestDatabase,
    extra: &[(String, String)],
    authz: Arc<FakeAuthz>,
    tenancy: Arc<FakeTenancy>,
) -> (RunningService, Option<String>) {
    let config = identity_svc::Config::load(&config(db, extra)).unwrap();
    let prepared = identity_svc::prepare_with(
        config,
        Deps { authorizer: authz, tenancy, audit: tether_tests::AcceptingAuditSink::new() },
    )
    .await
    .unwrap();
    let owner = prepared.bootstrap_owner.as_ref().map(|o| o.account_id.clone());
    let service = RunningService::spawn("identity", prepared.host).await;
    (service, owner)
}

impl Env {
    /// Turns on TOTP for the holder of `session`, confirming with the code `offset` steps from
    /// now; returns the secret and the recovery codes.
    pub async fn enroll_totp(&self, session: &str, offset: i64) -> (String, Vec<String>) {
        let begun = self
            .client()
            .begin_totp_enrollment(auth(session, pb::BeginTotpEnrollmentRequest::default()))
            .await
            .unwrap()
            .into_inner();
        let confirm = pb::ConfirmTotpEnrollmentRequest {
            enrollment_token: String::new(),
            totp_code: totp_code(&begun.secret, offset),
        };
        let confirmed = self.client().confirm_totp_enrollment(auth(session, confirm)).await.unwrap().into_inner();
        (begun.secret, confirmed.recovery_codes)
    }

    pub async fn start() -> Self {
        Self::start_with(&[]).await
    }

    pub async fn start_with(extra: &[(&str, &str)]) -> Self {
        let db = TestDatabase::fresh().await;
        let mut extra: Vec<(String, String)> = extra.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        let mail_dir = std::env::temp_dir().join(format!("tether-mail-{}", uuid::Uuid::new_v4()));
        extra.push(("TETHER_IDENTITY_MAIL_OUTBOX_DIR".into(), mail_dir.display().to_string()));
        let authz = Arc::new(FakeAuthz::default());
        let tenancy = Arc::new(FakeTenancy::default());
        let (service, owner) = serve(&db, &extra, authz.clone(), tenancy.clone()).await;
        let owner_id = owner.expect("first start creates the owner");
        authz.grant(&owner_id, "*", "msp_owner");
        let client = IdentityServiceClient::new(service.channel().await);
        Self { db, authz, tenancy, service: Some(service), client, owner_id, extra, mail_dir }
    }

    /// Stops the service and starts it again on the same database (a restart).
    pub async fn restart(&mut self) {
        if let Some(s) = self.service.take() {
            s.stop().await.unwrap();
        }
        let (service, owner) = serve(&self.db, &self.extra, self.authz.clone(), self.tenancy.clone()).await;
        assert!(owner.is_none(), "a restart does not create a second owner");
        self.client = IdentityServiceClient::new(service.channel().await);
        self.service = Some(service);
    }

    pub fn client(&self) -> IdentityServiceClient<Channel> {
        self.client.clone()
    }

    /// Logs in; panics unless a session comes back.
    pub async fn login(&self, email: &str, password: &str) -> String {
        let outcome = self.try_login(email, password).await.unwrap_or_else(|s| panic!("login {email}: {s:?}"));
        match outcome {
            pb::login_outcome::Outcome::Session(s) => s.session_token,
            other => panic!("expected a session, got {other:?}"),
        }
    }

    pub async fn try_login(&self, email: &str, password: &str) -> Result<pb::login_outcome::Outcome, tonic::Status> {
        let reply = self
            .client()
            .login(from_edge(pb::LoginRequest {
                email: email.into(),
                password: password.into(),
                client_ip: "198.51.100.7".into(),
                ..Default::default()
            }))
            .await?;
        Ok(reply.into_inner().outcome.unwrap().outcome.unwrap())
    }

    /// Waits (up to 5 s) for the owner's membership to be delivered, then logs in as owner.
    pub async fn owner_token(&self) -> String {
        for _ in 0..100 {
            match self.try_login(OWNER_EMAIL, OWNER_PASSWORD).await {
                Ok(pb::login_outcome::Outcome::Session(s)) => return s.session_token,
                _ => tokio::time::sleep(std::time::Duration::from_millis(50)).await,
            }
        }
        panic!("the owner never became loginable");
    }

    /// Creates an active user as `token`'s holder; returns it.
    pub async fn create(
        &self,
        token: &str,
        email: &str,
        name: &str,
        tenant: &str,
        role: &str,
        staff: bool,
    ) -> pb::User {
        self.client()
            .create_user(auth(
                token,
                pb::CreateUserRequest {
                    email: email.into(),
                    display_name: name.into(),
                    password: PASSWORD.into(),
                    tenant_id: tenant.into(),
                    role: role.into(),
                    is_msp_staff: staff,
                    ..Default::default()
                },
            ))
            .await
            .unwrap_or_else(|s| panic!("create {email}: {s:?}"))
            .into_inner()
            .user
            .unwrap()
    }

    pub async fn authenticate(&self, token: &str) -> Result<pb::Principal, tonic::Status> {
        let reply =
            self.client().authenticate(as_service(pb::AuthenticateRequest { session_token: token.into() })).await?;
        Ok(reply.into_inner().principal.unwrap())
    }

    /// Audit events recorded so far, oldest first.
    pub async fn audit(&self) -> Vec<AuditEvent> {
        use prost::Message;
        let pool = self.db.inspect("identity").await;
        let rows: Vec<String> = sqlx::query_scalar("SELECT payload FROM audit_outbox ORDER BY created_at, event_id")
            .fetch_all(&pool)
            .await
            .unwrap();
        pool.close().await;
        rows.iter().map(|p| AuditEvent::decode(hex::decode(p).unwrap().as_slice()).unwrap()).collect()
    }

    /// Runs a statement on identity's database (to stage rows a test cannot make through the API).
    pub async fn execute(&self, sql: &str) {
        let pool = self.db.inspect("identity").await;
        sqlx::query(sqlx::AssertSqlSafe(sql.to_owned())).execute(&pool).await.unwrap();
        pool.close().await;
    }

    pub async fn count(&self, sql: &str) -> i64 {
        let pool = self.db.inspect("identity").await;
        let n: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(sql.to_owned())).fetch_one(&pool).await.unwrap();
        pool.close().await;
        n
    }
}

pub const PASSWORD: &str = "violet-kestrel-harbour-9";

/// The TOTP code of `secret` for the time step `offset` steps from now.
pub fn totp_code(secret: &str, offset: i64) -> String {
    use identity_svc::domain::totp;
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64;
    totp::code_at(&totp::base32_decode(secret).unwrap(), now / totp::STEP_SECONDS + offset)
}

pub fn auth<T>(token: &str, message: T) -> Request<T> {
    let mut request = Request::new(message);
    request.metadata_mut().insert("authorization", format!("Bearer {token}").parse().unwrap());
    request
}

/// A request as the edge sends it for the person behind it: with the service token, so the
/// client address it names is believed.
pub fn from_edge<T>(message: T) -> Request<T> {
    let mut request = Request::new(message);
    tether_runtime::access::ServiceToken::new(SERVICE_TOKEN).attach("edge", &mut request);
    request
}

pub fn as_service<T>(message: T) -> Request<T> {
    let mut request = Request::new(message);
    tether_runtime::access::ServiceToken::new(SERVICE_TOKEN).attach("authz", &mut request);
    request
}

/// Asserts the call failed with `code` and `reason`.
pub fn assert_err<T: std::fmt::Debug>(result: Result<T, tonic::Status>, code: Code, reason: &str) {
    let status = result.expect_err("expected an error");
    assert_eq!(
        (status.code(), tether_runtime::error::reason_of(&status).as_deref()),
        (code, Some(reason)),
        "{status:?}"
    );
}

/// The `field` an error names (its ErrorInfo metadata), if any.
pub fn field_of(status: &tonic::Status) -> Option<String> {
    use tonic_types::StatusExt;
    status.get_details_error_info()?.metadata.get("field").cloned()
}
