//! The test harness: tenancy-svc on port 0 with a fresh database and doubles for identity-svc
//! (sessions, users) and authz-svc (catalog, decisions).
//!
//! The authorizer double implements the rules of the msp-assets, msp-panel and password-manager
//! packs that tenancy's tests need, reading tenancy's state the way authz-svc would (through tenancy's own API, as a
//! service): MSP owner and admins may do everything everywhere; technicians may manage tenants
//! and users in the clients assigned to them and all their departments; client admins may view
//! and manage users in their own tenant and its departments, never create tenants; MSP users
//! (msp-panel) may create departments (`departments.create`) in their assigned clients; nothing is
//! granted in a suspended or archived tenant (or below one), nor to a deactivated user.
#![allow(dead_code)]

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, OnceLock},
};

use tenancy_svc::{Deps, PackInfo, RoleCatalog, RoleInfo, UserDirectory, UserInfo};
use tether_proto::{
    common::v1::{ErrorReason, MembershipKind},
    tenancy::v1::{self as pb, tenancy_service_client::TenancyServiceClient},
};
use tether_runtime::{
    ApiError,
    access::{Authenticator, Authorizer, Principal, RoleGrant, RoleGrantDecision, ServiceToken},
    error::reason_of,
};
use tether_tests::{RunningService, TestDatabase};
use tonic::{Request, Status, transport::Channel};

pub const SERVICE_TOKEN: &str = "test-service-token-0123456789abcdef0123456789";

/// The role pack the tests use (msp-assets' roles plus its owner role, which every pack defines
/// and nobody can be given).
pub fn pack() -> PackInfo {
    PackInfo {
        owner_role: "msp_owner".into(),
        former_owner_role: "msp_admin".into(),
        admin_roles: vec!["msp_admin".into(), "client_admin".into()],
    }
}

const ROLES: &[(&str, bool, bool)] = &[
    // name, assignable, msp_staff_only
    ("msp_owner", false, true),
    ("msp_admin", true, true),
    ("msp_technician", true, true),
    ("msp_user", true, true),
    ("client_admin", true, false),
    ("client_user", true, false),
];

#[derive(Default)]
pub struct World {
    pub users: Mutex<HashMap<String, UserInfo>>,
    /// The tenancy service, for the authorizer double to read state from.
    pub tenancy: OnceLock<Channel>,
    pub service_token: ServiceToken,
    /// While set, `departments.create` is not in the catalog (as in msp-assets): checks of it
    /// are PERMISSION_NOT_FOUND, as authz-svc answers.
    pub no_departments_create: std::sync::atomic::AtomicBool,
    /// How many times tenancy asked the catalog about a role.
    pub role_lookups: std::sync::atomic::AtomicUsize,
}

pub struct Doubles(pub Arc<World>);

#[tonic::async_trait]
impl Authenticator for Doubles {
    async fn authenticate(&self, token: &str) -> Result<Principal, ApiError> {
        let users = self.0.users.lock().unwrap();
        let user = users.get(token).ok_or_else(|| ApiError::new(ErrorReason::Unauthenticated, "unknown session"))?;
        Ok(Principal {
            user_id: user.user_id.clone(),
            is_msp_staff: user.is_msp_staff,
            primary_tenant_id: user.home_tenant_id.clone(),
            session_id: format!("session-{}", user.user_id),
            display_name: "Test User".into(),
            email: "user@example.test".into(),
        })
    }
}

#[tonic::async_trait]
impl UserDirectory for Doubles {
    async fn users(&self, user_ids: &[String]) -> Result<HashMap<String, UserInfo>, ApiError> {
        let users = self.0.users.lock().unwrap();
        Ok(user_ids.iter().filter_map(|id| users.get(id).map(|u| (id.clone(), u.clone()))).collect())
    }
}

#[tonic::async_trait]
impl RoleCatalog for Doubles {
    async fn active_pack(&self) -> Result<PackInfo, ApiError> {
        Ok(pack())
    }
    async fn role(&self, name: &str) -> Result<Option<RoleInfo>, ApiError> {
        self.0.role_lookups.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        Ok(ROLES.iter().find(|(n, ..)| *n == name).map(|(n, assignable, staff)| RoleInfo {
            name: (*n).into(),
            assignable: *assignable,
            msp_staff_only: *staff,
        }))
    }
}

impl Doubles {
    fn client(&self) -> TenancyServiceClient<Channel> {
        TenancyServiceClient::new(self.0.tenancy.get().expect("tenancy started").clone())
    }

    fn service<T>(&self, message: T) -> Request<T> {
        let mut request = Request::new(message);
        self.0.service_token.attach("authz", &mut request);
        request
    }

    async fn tenant(&self, id: &str) -> Result<pb::Tenant, ApiError> {
        let reply = self
            .client()
            .get_tenant(self.service(pb::GetTenantRequest { tenant_id: id.into() }))
            .await
            .map_err(|s| ApiError::internal(s.message()))?;
        Ok(reply.into_inner().tenant.unwrap_or_default())
    }

    async fn memberships(&self, user: &str) -> Result<Vec<pb::UserTenant>, ApiError> {
        let reply = self
            .client()
            .list_user_tenants(self.service(pb::ListUserTenantsRequest {
                user_id: user.into(),
                kind: MembershipKind::Direct as i32,
                include_inactive: true,
                page_size: 500,
                ..Default::default()
            }))
            .await
            .map_err(|s| ApiError::internal(s.message()))?;
        Ok(reply.into_inner().tenants)
    }
}

#[tonic::async_trait]
impl Authorizer for Doubles {
    async fn check(
        &self,
        user_id: &str,
        permission: &str,
        tenant_id: &str,
        _: Option<&tether_proto::common::v1::ConsistencyToken>,
    ) -> Result<bool, ApiError> {
        if permission == "departments.create" && self.0.no_departments_create.load(std::sync::atomic::Ordering::SeqCst)
        {
            return Err(ApiError::new(ErrorReason::PermissionNotFound, "not in the catalog"));
        }
        // authz-svc denies a deactivated (or unknown) user whatever memberships tenancy holds.
        if !self.0.users.lock().unwrap().get(user_id).is_some_and(|u| u.active) {
            return Ok(false);
        }
        // The target's chain, root last; any inactive tenant on it grants nothing.
        let mut chain = Vec::new();
        let mut next = tenant_id.to_owned();
        while !next.is_empty() {
            let t = self.tenant(&next).await?;
            if t.status != pb::TenantStatus::Active as i32 {
                return Ok(false);
            }
            next = t.parent_id.clone();
            chain.push(t);
        }
        let client_id = chain.first().map(|t| t.client_id.clone()).unwrap_or_default();
        for held in self.memberships(user_id).await? {
            let tenant = held.tenant.unwrap_or_default();
            let role = held.membership.unwrap_or_default().role;
            let msp_level = tenant.kind == pb::TenantKind::Admin as i32;
            match role.as_str() {
                "msp_owner" | "msp_admin" if msp_level => return Ok(true),
                "msp_technician" | "msp_user" if msp_level => {
                    let allowed: &[&str] = if role == "msp_user" {
                        &["departments.create"]
                    } else {
                        &["tenants.manage", "users.view", "users.manage"]
                    };
                    if !allowed.contains(&permission) || client_id.is_empty() {
                        continue;
                    }
                    let reply = self
                        .client()
                        .list_technician_assignments(self.service(pb::ListTechnicianAssignmentsRequest {
                            page_size: 500,
                            selector: Some(pb::list_technician_assignments_request::Selector::TechnicianUserId(
                                user_id.into(),
                            )),
                            ..Default::default()
                        }))
                        .await
                        .map_err(|s| ApiError::internal(s.message()))?;
                    if reply.into_inner().assignments.iter().any(|a| a.tenant_id == client_id) {
                        return Ok(true);
                    }
                }
                "client_admin"
                    if ["users.view", "users.manage"].contains(&permission)
                        && chain.iter().any(|t| t.tenant_id == tenant.tenant_id) =>
                {
                    return Ok(true);
                }
                _ => {}
            }
        }
        Ok(false)
    }

    async fn check_role_grant(&self, grant: &RoleGrant) -> Result<RoleGrantDecision, ApiError> {
        let staff_only = ROLES.iter().any(|(n, _, staff)| *n == grant.role && *staff);
        let deny = |reason, summary: &str| {
            Ok(RoleGrantDecision { allowed: false, denial_reason: reason, summary: summary.into() })
        };
        if staff_only && !grant.target_is_msp_staff {
            return deny(ErrorReason::MspStaffOnlyRole, "only MSP staff may hold this role");
        }
        let actor_is_staff = self.0.users.lock().unwrap().get(&grant.actor_user_id).is_some_and(|u| u.is_msp_staff);
        if staff_only && !actor_is_staff {
            return deny(ErrorReason::RoleAboveOwn, "the role is above your own");
        }
        Ok(RoleGrantDecision { allowed: true, denial_reason: ErrorReason::Unspecified, summary: String::new() })
    }
}

/// A running tenancy-svc and the doubles around it.
pub struct Harness {
    pub db: TestDatabase,
    pub service: RunningService,
    pub world: Arc<World>,
    pub channel: Channel,
}

impl Harness {
    pub async fn start() -> Self {
        Self::start_with(&[]).await
    }

    pub async fn start_with(settings: &[(&str, &str)]) -> Self {
        let db = TestDatabase::fresh().await;
        let mut source = db.config();
        for (k, v) in settings {
            source = source.with(*k, (*v).to_owned());
        }
        source = source.with("TETHER_SERVICE_TOKEN", SERVICE_TOKEN.to_owned());
        let config = tenancy_svc::Config::load(&source).expect("config");
        let world = Arc::new(World { service_token: ServiceToken::new(SERVICE_TOKEN), ..Default::default() });
        let doubles = Arc::new(Doubles(world.clone()));
        let deps = Deps {
            authenticator: doubles.clone(),
            authorizer: doubles.clone(),
            users: doubles.clone(),
            roles: doubles,
            audit: tether_tests::AcceptingAuditSink::new(),
            service_token: ServiceToken::new(SERVICE_TOKEN),
        };
        let host = tenancy_svc::prepare_with(config, deps).await.expect("prepare");
        let service = RunningService::spawn("tenancy", host).await;
        let channel = service.channel().await;
        world.tenancy.set(channel.clone()).ok();
        Self { db, service, world, channel }
    }

    pub fn client(&self) -> TenancyServiceClient<Channel> {
        TenancyServiceClient::new(self.channel.clone())
    }

    /// A user known to identity (the double); the user id doubles as their session token.
    pub fn user(&self, is_msp_staff: bool) -> String {
        let id = uuid::Uuid::new_v4().to_string();
        self.world.users.lock().unwrap().insert(
            id.clone(),
            UserInfo { user_id: id.clone(), active: true, is_msp_staff, home_tenant_id: String::new() },
        );
        id
    }

    /// Sets a client user's home (identity's primary tenant).
    pub fn set_home(&self, user: &str, tenant: &str) {
        if let Some(u) = self.world.users.lock().unwrap().get_mut(user) {
            u.home_tenant_id = tenant.to_owned();
        }
    }

    pub fn set_active(&self, user: &str, active: bool) {
        if let Some(u) = self.world.users.lock().unwrap().get_mut(user) {
            u.active = active;
        }
    }

    pub async fn admin_id(&self) -> String {
        self.client()
            .get_admin_tenancy(as_service(pb::GetAdminTenancyRequest {}))
            .await
            .unwrap()
            .into_inner()
            .tenant
            .unwrap()
            .tenant_id
    }

    /// identity-svc's bootstrap: the owner account, then TransferOwnership as a service.
    pub async fn bootstrap_owner(&self) -> String {
        let owner = self.user(true);
        self.client()
            .transfer_ownership(as_service(pb::TransferOwnershipRequest { new_owner_user_id: owner.clone() }))
            .await
            .unwrap();
        owner
    }

    /// An MSP staff member with `role` in the admin tenancy (as identity's relay would add them).
    pub async fn staff(&self, role: &str) -> String {
        let user = self.user(true);
        let admin = self.admin_id().await;
        self.add(&user, &admin, role).await;
        user
    }

    /// A membership as identity's relay adds it; a client user's first one is their home, as
    /// identity creates them.
    pub async fn add(&self, user: &str, tenant: &str, role: &str) -> pb::Membership {
        if let Some(u) = self.world.users.lock().unwrap().get_mut(user)
            && !u.is_msp_staff
            && u.home_tenant_id.is_empty()
        {
            u.home_tenant_id = tenant.to_owned();
        }
        self.client()
            .add_membership(as_service(pb::AddMembershipRequest {
                user_id: user.into(),
                tenant_id: tenant.into(),
                role: role.into(),
                make_default: false,
                ..Default::default()
            }))
            .await
            .unwrap()
            .into_inner()
            .membership
            .unwrap()
    }

    /// A client tenant made by `actor`.
    pub async fn client_tenant(&self, actor: &str, name: &str) -> pb::Tenant {
        self.create(actor, name, "").await.unwrap()
    }

    pub async fn create(&self, actor: &str, name: &str, parent: &str) -> Result<pb::Tenant, Status> {
        let reply = self
            .client()
            .create_tenant(as_user(
                actor,
                pb::CreateTenantRequest { name: name.into(), parent_id: parent.into(), ..Default::default() },
            ))
            .await?;
        Ok(reply.into_inner().tenant.unwrap())
    }

    /// Every change the Watch stream has up to now (from 0: snapshot items, then SnapshotEnd).
    pub async fn watch_until_idle(&self, from: u64) -> Vec<pb::WatchResponse> {
        use tokio_stream::StreamExt;
        let mut stream =
            self.client().watch(as_service(pb::WatchRequest { from_revision: from })).await.unwrap().into_inner();
        let mut out = Vec::new();
        while let Ok(Some(item)) = tokio::time::timeout(std::time::Duration::from_millis(700), stream.next()).await {
            let item = item.unwrap();
            if matches!(item.kind, Some(pb::watch_response::Kind::Heartbeat(_))) {
                break;
            }
            out.push(item);
        }
        out
    }
}

pub fn as_user<T>(user: &str, message: T) -> Request<T> {
    let mut request = Request::new(message);
    request.metadata_mut().insert("authorization", format!("Bearer {user}").parse().unwrap());
    request.metadata_mut().insert("x-client-ip", "203.0.113.7".parse().unwrap());
    request
}

pub fn as_service<T>(message: T) -> Request<T> {
    let mut request = Request::new(message);
    ServiceToken::new(SERVICE_TOKEN).attach("identity", &mut request);
    request
}

/// The stable reason of a failed call.
pub fn reason<T: std::fmt::Debug>(result: Result<T, Status>) -> String {
    let status = result.expect_err("the call should fail");
    reason_of(&status).unwrap_or_else(|| format!("no reason: {status:?}"))
}

pub fn code<T: std::fmt::Debug>(result: &Result<T, Status>) -> tonic::Code {
    result.as_ref().err().map(|s| s.code()).unwrap_or(tonic::Code::Ok)
}
