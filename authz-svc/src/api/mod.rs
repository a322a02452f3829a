//! gRPC handlers: decode the request, call the domain, encode the reply. No SQL, no rules.
//!
//! Rules for callers:
//!
//! 1. Every decision RPC (Check, BatchCheck, Explain, ListEffectivePermissions, LookupTenants,
//!    LookupSubjects, CheckRoleGrant, GetIndexStatus) needs credentials: the service token (Tether
//!    services attach it through `GrpcAuthorizer`) or a person's session; otherwise
//!    UNAUTHENTICATED, unless `TETHER_AUTHZ_OPEN_DECISIONS=true` (a network that already
//!    authenticates callers, e.g. a mesh with mTLS) makes a bare call count as a service.
//! 2. A person may ask about themselves, or about others with `users.view` in the tenant (per item
//!    in a batch: an item about someone they may not see is PERMISSION_DENIED alone; each item's
//!    asker is checked before its user is resolved). LookupSubjects needs `users.view`;
//!    CheckRoleGrant asks only what the person themselves may grant.
//! 3. ListResourceGrants: a person sees their own, or everyone's in a tenant where they hold
//!    `users.view`. ListResources and the catalog reads (ListPermissions, ListRoles, GetRole,
//!    GetActivePack) need any identified caller.
//! 4. Visibility: MSP staff see every user and tenant; others see tenants at or below one where
//!    they hold a membership, and users who are not MSP staff and whose home (identity's primary
//!    tenant, kept in the index) is the caller's home or one of its departments. Whom or where they
//!    may not see is replaced by the nil id before the question is answered (`seen_user`,
//!    `seen_tenant`), so Check, BatchCheck, Explain, ListEffectivePermissions, ListResourceGrants and
//!    ListResources answer exactly as for an unknown user or tenant, once `users.view` has been
//!    checked. LookupSubjects, ListOverrides and ListResourceGrants leave hidden users out
//!    (`include_global` also leaves out users of other clients); SetOverride, RemoveOverride,
//!    GrantResourceAccess and RevokeResourceAccess treat them as unknown ids.
//! 5. Management RPCs accept a service, or a person holding the RPC's permission (checked against
//!    the local index), with the delegation rules on top:
//!    - overrides: never on oneself (`SELF_ACTION_FORBIDDEN`); MSP staff are unknown to others
//!      (`USER_NOT_FOUND`, `OVERRIDE_NOT_FOUND` on removal); the target's highest rank where the
//!      override applies (the tenant, its ancestors and everything below; everywhere for a global
//!      one) must not exceed the actor's (`ROLE_ABOVE_OWN`); a grant only of a permission the actor
//!      holds there, and for a global grant everywhere (an all-tenants membership in the admin
//!      tenancy with no deny override of it). Deny overrides and removals need not be held.
//!    - resource grants: the actor holds every permission granted (the permission, or each of the
//!      role's) on that resource, sees the target, and a role follows CheckRoleGrant's rules
//!      (`assignable`, never the owner role, `msp_staff_only` only for staff, rank).
//!    - custom roles: every permission is one the author holds everywhere, and the rank is not
//!      above theirs.
//!    - CheckRoleGrant needs `users.manage` in the tenant, or for adding a new user (no target, no
//!      previous role) the pack's `invite_permission`.

mod call_classes;
pub use call_classes::SERVED;
mod convert;
mod page;

use std::sync::Arc;

use tether_proto::{
    authz::v1::{self as pb, authz_service_server::AuthzService},
    common::v1::{ErrorReason, RevisionSource},
};
use tether_runtime::{
    access::{Actor, Authenticator, Caller, ServiceToken, caller, has_credentials},
    db::now_micros,
    error::ApiError,
};
use tonic::{Request, Response, Status, metadata::MetadataMap};
use uuid::Uuid;

use self::convert as cv;
use crate::{
    domain::{
        index::{
            ChangeDenial, GrantAccess, GrantRecord, Index, NONE, OverrideRecord, Reason, ResourceRecord,
            RoleGrantQuestion, Unresolved,
        },
        policy::{MAX_PERMISSIONS, RoleDef},
        valid_lower_name,
    },
    events::{
        AuditSink, State,
        audit::{self, Change, DecisionRecord, Queued},
        timestamp_from_micros,
    },
    store,
};

type Reply<T> = Result<Response<T>, Status>;

pub struct AuthzApi {
    state: Arc<State>,
    audit: AuditSink,
    authenticator: Arc<dyn Authenticator>,
    service_token: ServiceToken,
    /// `TETHER_AUTHZ_OPEN_DECISIONS`: decision calls without credentials are answered.
    open_decisions: bool,
    /// `TETHER_AUTHZ_MAX_*`: quotas on resources, grants, overrides and custom roles.
    limits: store::Limits,
}

/// Deepest resource tree accepted.
const MAX_RESOURCE_DEPTH: usize = 16;

impl AuthzApi {
    pub fn new(
        state: Arc<State>,
        audit: AuditSink,
        authenticator: Arc<dyn Authenticator>,
        service_token: ServiceToken,
        open_decisions: bool,
        limits: store::Limits,
    ) -> Self {
        Self { state, audit, authenticator, service_token, open_decisions, limits }
    }

    /// The fail-closed gate plus read-your-writes.
    async fn fresh(&self, token: Option<&tether_proto::common::v1::ConsistencyToken>) -> Result<(), ApiError> {
        self.state.ready()?;
        if let Some(t) = token
            && !t.revisions.is_empty()
        {
            self.state.at_least(&t.revisions).await?;
        }
        Ok(())
    }

    /// Who asks a decision question: a service (by the service token) or a person (by session).
    /// A call without any credentials is refused, unless the deployment answers such calls
    /// (`TETHER_AUTHZ_OPEN_DECISIONS`, for networks that authenticate callers themselves).
    async fn asker(&self, metadata: &MetadataMap) -> Result<Caller, ApiError> {
        if self.open_decisions && !has_credentials(metadata) {
            return Ok(Caller { actor: Actor::Service("unauthenticated".into()), client_ip: String::new() });
        }
        caller(metadata, &*self.authenticator, &self.service_token).await
    }

    /// Decision RPCs about one subject: [`Self::asker`] then [`Self::may_ask_about`].
    async fn may_ask(&self, metadata: &MetadataMap, subject: &str, tenant: Option<Uuid>) -> Result<Caller, ApiError> {
        let who = self.asker(metadata).await?;
        may_ask_about(&self.state.read(), &who, Some(subject), tenant)?;
        Ok(who)
    }

    /// Management RPCs: a service, or a person holding `permission` in `tenant` (the admin
    /// tenancy when `None`).
    async fn manager(
        &self,
        metadata: &MetadataMap,
        permission: &str,
        tenant: Option<Uuid>,
    ) -> Result<Caller, ApiError> {
        let who = caller(metadata, &*self.authenticator, &self.service_token).await?;
        let Some(user) = who.user() else { return Ok(who) };
        self.state.ready()?;
        let index = self.state.read();
        let tenant = tenant.or_else(|| index.admin_tenancy());
        let allowed = match (Uuid::try_parse(&user.user_id).ok(), tenant) {
            (Some(u), Some(t)) => index.decide_names(&u, permission, &t, None).allowed(),
            _ => false,
        };
        drop(index);
        if allowed {
            Ok(who)
        } else {
            Err(ApiError::new(ErrorReason::PermissionDenied, format!("{permission} is required")))
        }
    }

    /// The caller's rank in the admin tenancy (services: unbounded).
    fn caller_rank(&self, who: &Caller, tenant: Option<Uuid>) -> i32 {
        match &who.actor {
            Actor::Service(_) => i32::MAX,
            Actor::User(p) => {
                let index = self.state.read();
                let tenant = tenant.or_else(|| index.admin_tenancy());
                match (Uuid::try_parse(&p.user_id).ok(), tenant) {
                    (Some(u), Some(t)) => index.actor_rank(&u, &t).unwrap_or(i32::MIN),
                    _ => i32::MIN,
                }
            }
        }
    }

    /// Queues the audit event of a decision: always when denied, in the sample when allowed.
    fn record_decision(&self, decision_id: &str, r: pb::CheckRequest, reason: Reason) {
        let allowed = reason.allowed();
        if allowed && !self.audit.sample_allowed() {
            return;
        }
        self.audit.record(Queued::One(DecisionRecord {
            decision_id: decision_id.to_owned(),
            user_id: r.subject_user_id,
            permission: r.permission,
            tenant_id: r.tenant_id,
            resource_id: r.resource_id,
            allowed,
            reason: cv::reason(reason).as_str_name(),
            trace_id: tether_runtime::telemetry::current_trace_id().unwrap_or_default(),
            at_micros: now_micros(),
        }));
    }

    async fn after_write(&self) -> Result<(), ApiError> {
        self.state.reload_own().await
    }

    fn role_json(&self, r: &RoleDef) -> serde_json::Value {
        let policy = &self.state.read().policy;
        serde_json::json!({
            "name": r.name, "display_name": r.display_name, "scope": r.scope.as_str(), "rank": r.rank,
            "assignable": r.assignable, "msp_staff_only": r.msp_staff_only, "permissions": policy.names(r.permissions),
        })
    }

    fn validate_role_permissions(&self, names: &[String]) -> Result<u128, ApiError> {
        if names.len() > MAX_PERMISSIONS {
            return Err(ApiError::new(ErrorReason::BatchTooLarge, "too many permissions")
                .with_metadata("limit", MAX_PERMISSIONS.to_string()));
        }
        for n in names {
            cv::permission_name("permissions", n)?;
        }
        self.state.read().policy.set_of(names.iter().map(String::as_str)).map_err(|unknown| {
            ApiError::new(ErrorReason::PermissionNotFound, format!("permission {unknown:?} is not in the catalog"))
        })
    }
}

/// Whether `who` may ask a decision question about `subject` (`None`: about people in general,
/// as an access review does). Services may ask anything; a person may ask about themselves, or
/// about others with `users.view` in the tenant (MSP staff when no tenant is named). Whom
/// they may not see is then answered as an unknown user ([`seen_user`]).
fn may_ask_about(index: &Index, who: &Caller, subject: Option<&str>, tenant: Option<Uuid>) -> Result<(), ApiError> {
    let Some(user) = who.user() else { return Ok(()) };
    if subject == Some(user.user_id.as_str()) {
        return Ok(());
    }
    let allowed = match (Uuid::try_parse(&user.user_id).ok(), tenant) {
        (Some(u), Some(t)) => index.decide_names(&u, "users.view", &t, None).allowed(),
        _ => user.is_msp_staff,
    };
    if !allowed {
        return Err(users_view_required());
    }
    Ok(())
}

/// Whether `user` is someone the person calling may not see (services see everyone): then
/// every answer about them is the one for an unknown user.
fn hides_user(index: &Index, who: &Caller, user: &Uuid) -> bool {
    match who.user() {
        None => false,
        Some(_) if sees_staff(index, who) => false,
        Some(_) => {
            index.user_is_msp_staff(user) || person_id(who).is_none_or(|p| p != *user && index.hides_user(&p, user))
        }
    }
}

/// The user a person's question is answered about: the user if they may see them (MSP staff,
/// for people who are not; for client users, anyone not at home in their own home tenant or
/// one of its departments, are hidden), else the nil id, which no user has, so the answer is
/// exactly the one for an unknown user (USER_NOT_FOUND, or explained as DENIED_USER_UNKNOWN).
fn seen_user(index: &Index, who: &Caller, user: Uuid) -> Uuid {
    if hides_user(index, who, &user) { Uuid::nil() } else { user }
}

/// The tenant a person's question is answered for: the tenant itself if they may see it
/// (MSP staff see all; others the tenants at or below one where they hold a membership), else
/// the nil id, which no tenant has, so the answer is exactly the one for an unknown tenant.
/// Services see every tenant.
fn seen_tenant(index: &Index, who: &Caller, tenant: Uuid) -> Uuid {
    match who.user() {
        None => tenant,
        Some(_) if sees_staff(index, who) => tenant,
        Some(_) => match person_id(who) {
            Some(p) if index.tenant_visible_to(&p, &tenant) => tenant,
            _ => Uuid::nil(),
        },
    }
}

/// Whether the caller may see MSP staff: services, and people who are MSP staff (by the
/// session and by identity's stream, so a demotion counts at once).
fn sees_staff(index: &Index, who: &Caller) -> bool {
    who.user()
        .is_none_or(|p| p.is_msp_staff && Uuid::try_parse(&p.user_id).ok().is_some_and(|u| index.user_is_msp_staff(&u)))
}

/// A person defines roles only from permissions they hold everywhere (a custom role can be
/// granted in any tenant): no escalation by creating a role and granting it.
fn require_held(index: &Index, who: &Caller, permissions: u128) -> Result<(), ApiError> {
    match person_id(who) {
        None if who.user().is_none() => Ok(()),
        Some(u) if index.holds_all_everywhere(&u, permissions) => Ok(()),
        _ => Err(ApiError::new(
            ErrorReason::PermissionDenied,
            "a role may hold only permissions the caller holds in every tenant",
        )),
    }
}

fn users_view_required() -> ApiError {
    ApiError::new(ErrorReason::PermissionDenied, "users.view is required")
}

/// A refused or failed write of authz's schema: a full quota is RESOURCE_EXHAUSTED
/// `LIMIT_REACHED` with the bound in the metadata.
fn write_error(e: store::WriteError) -> ApiError {
    match e {
        store::WriteError::Limit { what, limit } => {
            ApiError::new(ErrorReason::LimitReached, format!("at most {limit} {what}; remove some first"))
                .with_metadata("limit", limit.to_string())
        }
        store::WriteError::Db(e) => ApiError::internal(e),
    }
}

/// A refused override or resource grant, as the API answers it.
fn change_denial(d: ChangeDenial) -> ApiError {
    match d {
        ChangeDenial::TargetHidden => cv::unresolved(Unresolved::User),
        ChangeDenial::SelfTarget => {
            ApiError::new(ErrorReason::SelfActionForbidden, "nobody sets or removes overrides on themselves")
        }
        ChangeDenial::TargetAboveOwn => {
            ApiError::new(ErrorReason::RoleAboveOwn, "the user ranks above the caller here")
        }
        ChangeDenial::NotHeld => {
            ApiError::new(ErrorReason::PermissionDenied, "nobody grants a permission they do not hold")
        }
        ChangeDenial::RoleAboveOwn => {
            ApiError::new(ErrorReason::RoleAboveOwn, "the role is ranked above the caller's own")
        }
        ChangeDenial::MspStaffOnlyRole => {
            ApiError::new(ErrorReason::MspStaffOnlyRole, "the role may only be held by MSP staff")
        }
    }
}

/// The acting person's id (a session always carries a canonical one).
fn person_id(who: &Caller) -> Option<Uuid> {
    who.user().and_then(|p| Uuid::try_parse(&p.user_id).ok())
}

#[tonic::async_trait]
impl AuthzService for AuthzApi {
    // ---------------- catalog and roles ----------------

    async fn list_permissions(
        &self,
        request: Request<pb::ListPermissionsRequest>,
    ) -> Reply<pb::ListPermissionsResponse> {
        let (metadata, _, r) = request.into_parts();
        // The catalog (no people): any identified caller.
        self.asker(&metadata).await?;
        cv::text("category", &r.category, 100)?;
        let items: Vec<pb::Permission> = {
            let index = self.state.read();
            let mut list: Vec<pb::Permission> = index
                .policy
                .permissions
                .iter()
                .filter(|p| r.category.is_empty() || p.category == r.category)
                .map(cv::permission)
                .collect();
            list.sort_by(|a, b| a.name.cmp(&b.name));
            list
        };
        let (permissions, next_page_token) =
            page::offset(items, r.page_size, &r.page_token, &format!("perm|{}", r.category))?;
        Ok(Response::new(pb::ListPermissionsResponse { permissions, next_page_token }))
    }

    async fn list_roles(&self, request: Request<pb::ListRolesRequest>) -> Reply<pb::ListRolesResponse> {
        let (metadata, _, r) = request.into_parts();
        let grantable_in = cv::optional_uuid("grantable_in_tenant_id", &r.grantable_in_tenant_id)?;
        // Any identified caller; what one may grant is about that caller, so it needs one.
        let max_rank = match grantable_in {
            Some(t) => {
                let who = caller(&metadata, &*self.authenticator, &self.service_token).await?;
                Some(self.caller_rank(&who, Some(t)))
            }
            None => {
                self.asker(&metadata).await?;
                None
            }
        };
        let items: Vec<pb::Role> = {
            let index = self.state.read();
            index
                .roles()
                .into_iter()
                .filter(|role| !r.assignable_only || role.assignable)
                .filter(|role| max_rank.is_none_or(|m| role.assignable && role.rank <= m))
                .map(|role| cv::role(role, &index.policy))
                .collect()
        };
        let binding = format!("role|{}|{}", r.assignable_only, r.grantable_in_tenant_id);
        let (roles, next_page_token) = page::offset(items, r.page_size, &r.page_token, &binding)?;
        Ok(Response::new(pb::ListRolesResponse { roles, next_page_token }))
    }

    async fn get_role(&self, request: Request<pb::GetRoleRequest>) -> Reply<pb::GetRoleResponse> {
        let (metadata, _, r) = request.into_parts();
        self.asker(&metadata).await?;
        cv::text("name", &r.name, 64)?;
        let index = self.state.read();
        let role = index
            .role(&r.name)
            .map(|role| cv::role(role, &index.policy))
            .ok_or_else(|| ApiError::new(ErrorReason::RoleNotFound, format!("no role {:?}", r.name)))?;
        Ok(Response::new(pb::GetRoleResponse { role: Some(role) }))
    }

    async fn create_role(&self, request: Request<pb::CreateRoleRequest>) -> Reply<pb::CreateRoleResponse> {
        let who = self.manager(request.metadata(), "permissions.manage", None).await?;
        let r = request.into_inner();
        if !valid_lower_name(&r.name) {
            return Err(ApiError::new(ErrorReason::InvalidFormat, "name must be 1-64 characters of [a-z0-9_]")
                .with_metadata("field", "name")
                .into());
        }
        if r.display_name.trim().is_empty() {
            return Err(ApiError::new(ErrorReason::FieldRequired, "display_name is required")
                .with_metadata("field", "display_name")
                .into());
        }
        cv::text("display_name", &r.display_name, 200)?;
        cv::text("description", &r.description, 2000)?;
        let scope = cv::scope_from(r.scope).ok_or_else(|| {
            ApiError::new(ErrorReason::FieldRequired, "scope is required").with_metadata("field", "scope")
        })?;
        let permissions = self.validate_role_permissions(&r.permissions)?;
        let owner_rank = {
            let index = self.state.read();
            if index.role(&r.name).is_some() {
                return Err(ApiError::new(ErrorReason::RoleExists, format!("role {:?} exists", r.name)).into());
            }
            if index.role_slots_full() {
                return Err(ApiError::new(ErrorReason::LimitReached, "no more roles can be held")
                    .with_metadata("limit", crate::domain::index::MAX_ROLE_SLOTS.to_string())
                    .into());
            }
            require_held(&index, &who, permissions)?;
            index.role_rank(&index.policy.owner_role).unwrap_or(i32::MAX)
        };
        if r.rank > self.caller_rank(&who, None) || r.rank >= owner_rank {
            return Err(ApiError::new(ErrorReason::RoleAboveOwn, "the role's rank is above the caller's own").into());
        }
        if store::role_exists(&self.state.database, &r.name).await.map_err(ApiError::internal)? {
            return Err(ApiError::new(ErrorReason::RoleExists, format!("role {:?} exists", r.name)).into());
        }
        let now = now_micros();
        let role = RoleDef {
            name: r.name.clone(),
            display_name: r.display_name,
            description: r.description,
            permissions,
            scope,
            rank: r.rank,
            assignable: r.assignable,
            msp_staff_only: r.msp_staff_only,
            built_in: false,
            created_at_micros: now,
            updated_at_micros: now,
        };
        let event = audit::change_event(
            Some(&who),
            Change {
                action: "role.create",
                resource_type: "role",
                resource_id: role.name.clone(),
                tenant_id: String::new(),
                before: None,
                after: Some(self.role_json(&role)),
            },
        );
        let names = self.state.read().policy.names(permissions);
        let revision = store::put_role(&self.state.database, &role, names, self.limits.custom_roles, &[event])
            .await
            .map_err(write_error)?;
        self.after_write().await?;
        let reply = cv::role(&role, &self.state.read().policy);
        Ok(Response::new(pb::CreateRoleResponse {
            role: Some(reply),
            consistency_token: Some(cv::authz_token(revision)),
        }))
    }

    async fn update_role(&self, request: Request<pb::UpdateRoleRequest>) -> Reply<pb::UpdateRoleResponse> {
        let who = self.manager(request.metadata(), "permissions.manage", None).await?;
        let r = request.into_inner();
        let (before, owner_rank) = {
            let index = self.state.read();
            let role = index
                .role(&r.name)
                .cloned()
                .ok_or_else(|| ApiError::new(ErrorReason::RoleNotFound, format!("no role {:?}", r.name)))?;
            (role, index.role_rank(&index.policy.owner_role).unwrap_or(i32::MAX))
        };
        if before.built_in {
            return Err(ApiError::new(ErrorReason::RoleBuiltIn, "built-in roles cannot be changed").into());
        }
        let mut role = before.clone();
        if let Some(d) = r.display_name {
            cv::text("display_name", &d, 200)?;
            role.display_name = d;
        }
        if let Some(d) = r.description {
            cv::text("description", &d, 2000)?;
            role.description = d;
        }
        if let Some(p) = &r.permissions {
            role.permissions = self.validate_role_permissions(&p.permissions)?;
        }
        if let Some(s) = r.scope {
            role.scope = cv::scope_from(s).ok_or_else(|| {
                ApiError::new(ErrorReason::ValueOutOfRange, "unknown scope").with_metadata("field", "scope")
            })?;
        }
        if let Some(rank) = r.rank {
            role.rank = rank;
        }
        if let Some(a) = r.assignable {
            role.assignable = a;
        }
        if let Some(m) = r.msp_staff_only {
            role.msp_staff_only = m;
        }
        require_held(&self.state.read(), &who, role.permissions)?;
        let caller_rank = self.caller_rank(&who, None);
        if role.rank > caller_rank || before.rank > caller_rank || role.rank >= owner_rank {
            return Err(ApiError::new(ErrorReason::RoleAboveOwn, "the role's rank is above the caller's own").into());
        }
        role.updated_at_micros = now_micros();
        let event = audit::change_event(
            Some(&who),
            Change {
                action: "role.update",
                resource_type: "role",
                resource_id: role.name.clone(),
                tenant_id: String::new(),
                before: Some(self.role_json(&before)),
                after: Some(self.role_json(&role)),
            },
        );
        let names = self.state.read().policy.names(role.permissions);
        let revision = store::put_role(&self.state.database, &role, names, self.limits.custom_roles, &[event])
            .await
            .map_err(write_error)?;
        self.after_write().await?;
        let reply = cv::role(&role, &self.state.read().policy);
        Ok(Response::new(pb::UpdateRoleResponse {
            role: Some(reply),
            consistency_token: Some(cv::authz_token(revision)),
        }))
    }

    async fn delete_role(&self, request: Request<pb::DeleteRoleRequest>) -> Reply<pb::DeleteRoleResponse> {
        let who = self.manager(request.metadata(), "permissions.manage", None).await?;
        let r = request.into_inner();
        let before = {
            let index = self.state.read();
            let role = index
                .role(&r.name)
                .cloned()
                .ok_or_else(|| ApiError::new(ErrorReason::RoleNotFound, format!("no role {:?}", r.name)))?;
            if role.built_in {
                return Err(ApiError::new(ErrorReason::RoleBuiltIn, "built-in roles cannot be deleted").into());
            }
            if index.role_in_use(&r.name) {
                return Err(ApiError::new(ErrorReason::RoleInUse, "the role is still held").into());
            }
            role
        };
        let event = audit::change_event(
            Some(&who),
            Change {
                action: "role.delete",
                resource_type: "role",
                resource_id: r.name.clone(),
                tenant_id: String::new(),
                before: Some(self.role_json(&before)),
                after: None,
            },
        );
        let revision = store::delete_role(&self.state.database, &r.name, &[event]).await.map_err(write_error)?;
        self.after_write().await?;
        Ok(Response::new(pb::DeleteRoleResponse { consistency_token: Some(cv::authz_token(revision)) }))
    }

    async fn get_active_pack(&self, request: Request<pb::GetActivePackRequest>) -> Reply<pb::GetActivePackResponse> {
        self.asker(request.metadata()).await?;
        let index = self.state.read();
        let p = &index.policy;
        let loaded_at = p.roles.first().map_or(0, |r| r.created_at_micros);
        Ok(Response::new(pb::GetActivePackResponse {
            pack: Some(pb::RolePack {
                name: p.name.clone(),
                display_name: p.display_name.clone(),
                description: p.description.clone(),
                owner_role: p.owner_role.clone(),
                former_owner_role: p.former_owner_role.clone(),
                admin_roles: p.admin_roles.clone(),
                policy_digest: p.digest.clone(),
                loaded_at: Some(timestamp_from_micros(loaded_at)),
                invite_permission: p.invite_permission.clone(),
            }),
        }))
    }

    // ---------------- overrides ----------------

    async fn set_override(&self, request: Request<pb::SetOverrideRequest>) -> Reply<pb::SetOverrideResponse> {
        let metadata = request.metadata().clone();
        let r = request.into_inner();
        let user = cv::uuid("user_id", &r.user_id)?;
        let tenant = cv::optional_uuid("tenant_id", &r.tenant_id)?;
        cv::permission_name("permission", &r.permission)?;
        cv::text("note", &r.note, 500)?;
        let deny = match pb::OverrideEffect::try_from(r.effect) {
            Ok(pb::OverrideEffect::Grant) => false,
            Ok(pb::OverrideEffect::Deny) => true,
            _ => {
                return Err(ApiError::new(ErrorReason::FieldRequired, "effect is required")
                    .with_metadata("field", "effect")
                    .into());
            }
        };
        let who = self.manager(&metadata, "permissions.manage", tenant).await?;
        let before = {
            let index = self.state.read();
            if index.policy.permission_bit(&r.permission).is_none() {
                return Err(ApiError::new(ErrorReason::PermissionNotFound, "no such permission").into());
            }
            if !index.user_known(&user) || hides_user(&index, &who, &user) {
                return Err(ApiError::new(ErrorReason::UserNotFound, "no such user").into());
            }
            if let Some(t) = tenant
                && !index.tenant_known(&t)
            {
                return Err(ApiError::new(ErrorReason::TenantNotFound, "no such tenant").into());
            }
            // The delegation rules apply to the target (a person: not themselves, no hidden MSP
            // staff, nobody ranked above them) and a grant only of what they hold there.
            if who.user().is_some() {
                let actor = person_id(&who).ok_or_else(|| change_denial(ChangeDenial::NotHeld))?;
                let bit = index.policy.permission_bit(&r.permission).unwrap_or_default();
                index.check_override_change(&actor, &user, tenant.as_ref(), bit, !deny).map_err(change_denial)?;
            }
            index
                .overrides()
                .iter()
                .find(|o| o.user == user && o.permission == r.permission && o.tenant == tenant)
                .cloned()
        };
        let record = OverrideRecord {
            user,
            permission: r.permission.clone(),
            tenant,
            deny,
            note: r.note,
            created_by: who.user().map(|p| p.user_id.clone()).unwrap_or_default(),
            created_at_micros: now_micros(),
        };
        let json = |o: &OverrideRecord| serde_json::json!({"user_id": o.user.to_string(), "permission": o.permission, "tenant_id": o.tenant.map(|t| t.to_string()).unwrap_or_default(), "effect": if o.deny {"deny"} else {"grant"}, "note": o.note});
        let event = audit::change_event(
            Some(&who),
            Change {
                action: "override.set",
                resource_type: "override",
                resource_id: format!("{}/{}", user, r.permission),
                tenant_id: tenant.map(|t| t.to_string()).unwrap_or_default(),
                before: before.as_ref().map(json),
                after: Some(json(&record)),
            },
        );
        let revision = store::set_override(&self.state.database, &record, self.limits.overrides_per_tenant, &[event])
            .await
            .map_err(write_error)?;
        self.after_write().await?;
        Ok(Response::new(pb::SetOverrideResponse {
            permission_override: Some(cv::override_msg(&record)),
            consistency_token: Some(cv::authz_token(revision)),
        }))
    }

    async fn remove_override(&self, request: Request<pb::RemoveOverrideRequest>) -> Reply<pb::RemoveOverrideResponse> {
        let metadata = request.metadata().clone();
        let r = request.into_inner();
        let user = cv::uuid("user_id", &r.user_id)?;
        let tenant = cv::optional_uuid("tenant_id", &r.tenant_id)?;
        cv::permission_name("permission", &r.permission)?;
        let who = self.manager(&metadata, "permissions.manage", tenant).await?;
        let before = {
            let index = self.state.read();
            // The same rules as setting one; a hidden target is as unknown as any (no override).
            if who.user().is_some() {
                let not_found = || ApiError::new(ErrorReason::OverrideNotFound, "no such override");
                let actor = person_id(&who).ok_or_else(|| change_denial(ChangeDenial::NotHeld))?;
                let bit = index.policy.permission_bit(&r.permission).ok_or_else(not_found)?;
                index.check_override_change(&actor, &user, tenant.as_ref(), bit, false).map_err(|d| match d {
                    ChangeDenial::TargetHidden => not_found(),
                    d => change_denial(d),
                })?;
            }
            index
                .overrides()
                .iter()
                .find(|o| o.user == user && o.permission == r.permission && o.tenant == tenant)
                .map(cv::override_msg)
        };
        let event = audit::change_event(
            Some(&who),
            Change {
                action: "override.remove",
                resource_type: "override",
                resource_id: format!("{}/{}", user, r.permission),
                tenant_id: tenant.map(|t| t.to_string()).unwrap_or_default(),
                before: before.map(|o| serde_json::json!({"user_id": o.user_id, "permission": o.permission, "tenant_id": o.tenant_id, "effect": o.effect})),
                after: None,
            },
        );
        let revision = store::remove_override(&self.state.database, user, &r.permission, tenant, &[event])
            .await
            .map_err(ApiError::internal)?
            .ok_or_else(|| ApiError::new(ErrorReason::OverrideNotFound, "no such override"))?;
        self.after_write().await?;
        Ok(Response::new(pb::RemoveOverrideResponse { consistency_token: Some(cv::authz_token(revision)) }))
    }

    async fn list_overrides(&self, request: Request<pb::ListOverridesRequest>) -> Reply<pb::ListOverridesResponse> {
        let metadata = request.metadata().clone();
        let r = request.into_inner();
        let user = cv::optional_uuid("user_id", &r.user_id)?;
        let tenant = cv::optional_uuid("tenant_id", &r.tenant_id)?;
        let who = self.manager(&metadata, "permissions.manage", tenant).await?;
        let index = self.state.read();
        // People who are not MSP staff see neither MSP staff nor the global overrides of users
        // outside their own client.
        let hide = !sees_staff(&index, &who);
        let mut items: Vec<pb::PermissionOverride> = index
            .overrides()
            .iter()
            .filter(|o| user.is_none_or(|u| o.user == u))
            .filter(|o| match tenant {
                None => true,
                Some(t) => {
                    o.tenant == Some(t)
                        || (r.include_global && o.tenant.is_none() && (!hide || index.member_of_client(&o.user, &t)))
                }
            })
            .filter(|o| !hides_user(&index, &who, &o.user))
            .map(cv::override_msg)
            .collect();
        drop(index);
        items.sort_by(|a, b| (&a.user_id, &a.permission, &a.tenant_id).cmp(&(&b.user_id, &b.permission, &b.tenant_id)));
        let binding = format!("ovr|{}|{}|{}", r.user_id, r.tenant_id, r.include_global);
        let (permission_overrides, next_page_token) = page::offset(items, r.page_size, &r.page_token, &binding)?;
        Ok(Response::new(pb::ListOverridesResponse { permission_overrides, next_page_token }))
    }

    // ---------------- resources ----------------

    async fn register_resource(
        &self,
        request: Request<pb::RegisterResourceRequest>,
    ) -> Reply<pb::RegisterResourceResponse> {
        let metadata = request.metadata().clone();
        let r = request.into_inner();
        let tenant = cv::uuid("tenant_id", &r.tenant_id)?;
        let id = cv::optional_resource("resource_id", &r.resource_id)?.ok_or_else(|| {
            ApiError::new(ErrorReason::FieldRequired, "resource_id is required").with_metadata("field", "resource_id")
        })?;
        if !valid_lower_name(&r.resource_type) {
            return Err(ApiError::new(
                ErrorReason::InvalidFormat,
                "resource_type must be 1-64 characters of [a-z0-9_]",
            )
            .with_metadata("field", "resource_type")
            .into());
        }
        let parent = cv::optional_resource("parent_resource_id", &r.parent_resource_id)?;
        cv::text("display_name", &r.display_name, 200)?;
        let who = self.manager(&metadata, "settings.manage", Some(tenant)).await?;
        let (before, record) = {
            let index = self.state.read();
            if !index.tenant_known(&tenant) {
                return Err(ApiError::new(ErrorReason::TenantNotFound, "no such tenant").into());
            }
            if let Some(p) = &parent {
                if index.resource(&tenant, p).is_none() {
                    return Err(ApiError::new(ErrorReason::ResourceNotFound, "no such parent resource")
                        .with_metadata("field", "parent_resource_id")
                        .into());
                }
                if p == &id || index.resource_is_under(&tenant, p, &id) {
                    return Err(ApiError::new(ErrorReason::TreeCycle, "a resource cannot move under itself").into());
                }
                if index.resource_depth(&tenant, p) + 1 > MAX_RESOURCE_DEPTH {
                    return Err(ApiError::new(ErrorReason::TreeTooDeep, "the resource tree is too deep")
                        .with_metadata("limit", MAX_RESOURCE_DEPTH.to_string())
                        .into());
                }
            }
            let before = index.resource(&tenant, &id).cloned();
            let now = now_micros();
            let record = ResourceRecord {
                tenant,
                resource_id: id.clone(),
                resource_type: r.resource_type.clone(),
                parent: parent.clone().unwrap_or_default(),
                display_name: r.display_name.clone(),
                created_at_micros: before.as_ref().map_or(now, |b| b.created_at_micros),
                updated_at_micros: now,
            };
            (before, record)
        };
        let json = |r: &ResourceRecord| serde_json::json!({"resource_id": r.resource_id, "resource_type": r.resource_type, "parent_resource_id": r.parent, "display_name": r.display_name});
        let event = audit::change_event(
            Some(&who),
            Change {
                action: if before.is_some() { "resource.update" } else { "resource.register" },
                resource_type: "resource",
                resource_id: id,
                tenant_id: tenant.to_string(),
                before: before.as_ref().map(json),
                after: Some(json(&record)),
            },
        );
        let revision = store::put_resource(&self.state.database, &record, self.limits.resources_per_tenant, &[event])
            .await
            .map_err(write_error)?;
        self.after_write().await?;
        Ok(Response::new(pb::RegisterResourceResponse {
            resource: Some(cv::resource(&record)),
            consistency_token: Some(cv::authz_token(revision)),
        }))
    }

    async fn remove_resource(&self, request: Request<pb::RemoveResourceRequest>) -> Reply<pb::RemoveResourceResponse> {
        let metadata = request.metadata().clone();
        let r = request.into_inner();
        let tenant = cv::uuid("tenant_id", &r.tenant_id)?;
        let id = cv::optional_resource("resource_id", &r.resource_id)?.ok_or_else(|| {
            ApiError::new(ErrorReason::FieldRequired, "resource_id is required").with_metadata("field", "resource_id")
        })?;
        let who = self.manager(&metadata, "settings.manage", Some(tenant)).await?;
        let removed: Vec<String> = {
            let index = self.state.read();
            if index.resource(&tenant, &id).is_none() {
                return Err(ApiError::new(ErrorReason::ResourceNotFound, "no such resource").into());
            }
            let all: Vec<String> = index
                .resources()
                .filter(|n| n.tenant == tenant && index.resource_is_under(&tenant, &n.resource_id, &id))
                .map(|n| n.resource_id.clone())
                .collect();
            if all.len() > 1 && !r.cascade {
                return Err(ApiError::new(ErrorReason::ResourceHasChildren, "the resource has children").into());
            }
            all
        };
        let event = audit::change_event(
            Some(&who),
            Change {
                action: "resource.remove",
                resource_type: "resource",
                resource_id: id,
                tenant_id: tenant.to_string(),
                before: Some(serde_json::json!({"removed": removed})),
                after: None,
            },
        );
        let count = removed.len() as i32;
        let revision =
            store::remove_resources(&self.state.database, tenant, removed, &[event]).await.map_err(write_error)?;
        self.after_write().await?;
        Ok(Response::new(pb::RemoveResourceResponse {
            resources_removed: count,
            consistency_token: Some(cv::authz_token(revision)),
        }))
    }

    async fn list_resources(&self, request: Request<pb::ListResourcesRequest>) -> Reply<pb::ListResourcesResponse> {
        let (metadata, _, r) = request.into_parts();
        let tenant = cv::uuid("tenant_id", &r.tenant_id)?;
        // A product's resource tree (its nodes and names, no people): any identified caller,
        // in a tenant they may see.
        let who = self.asker(&metadata).await?;
        let index = self.state.read();
        let tenant = seen_tenant(&index, &who, tenant);
        let mut items: Vec<pb::Resource> = index
            .resources()
            .filter(|n| n.tenant == tenant)
            .filter(|n| r.parent_resource_id.as_ref().is_none_or(|p| &n.parent == p))
            .filter(|n| r.resource_type.is_empty() || n.resource_type == r.resource_type)
            .map(cv::resource)
            .collect();
        drop(index);
        items.sort_by(|a, b| a.resource_id.cmp(&b.resource_id));
        let binding = format!("res|{}|{:?}|{}", r.tenant_id, r.parent_resource_id, r.resource_type);
        let (resources, next_page_token) = page::offset(items, r.page_size, &r.page_token, &binding)?;
        Ok(Response::new(pb::ListResourcesResponse { resources, next_page_token }))
    }

    async fn grant_resource_access(
        &self,
        request: Request<pb::GrantResourceAccessRequest>,
    ) -> Reply<pb::GrantResourceAccessResponse> {
        let metadata = request.metadata().clone();
        let r = request.into_inner();
        let user = cv::uuid("user_id", &r.user_id)?;
        let tenant = cv::uuid("tenant_id", &r.tenant_id)?;
        let id = cv::optional_resource("resource_id", &r.resource_id)?.ok_or_else(|| {
            ApiError::new(ErrorReason::FieldRequired, "resource_id is required").with_metadata("field", "resource_id")
        })?;
        let access = match r.access {
            Some(pb::grant_resource_access_request::Access::Role(role)) if !role.is_empty() => GrantAccess::Role(role),
            Some(pb::grant_resource_access_request::Access::Permission(p)) if !p.is_empty() => {
                cv::permission_name("permission", &p)?;
                GrantAccess::Permission(p)
            }
            _ => {
                return Err(ApiError::new(ErrorReason::FieldRequired, "a role or a permission is required")
                    .with_metadata("field", "access")
                    .into());
            }
        };
        let who = self.manager(&metadata, "users.manage", Some(tenant)).await?;
        {
            let index = self.state.read();
            if !index.user_known(&user) || hides_user(&index, &who, &user) {
                return Err(ApiError::new(ErrorReason::UserNotFound, "no such user").into());
            }
            if index.resource(&tenant, &id).is_none() {
                return Err(ApiError::new(ErrorReason::ResourceNotFound, "no such resource").into());
            }
            match &access {
                GrantAccess::Role(role) => {
                    let def = index
                        .role(role)
                        .ok_or_else(|| ApiError::new(ErrorReason::RoleNotFound, format!("no role {role:?}")))?;
                    if def.name == index.policy.owner_role {
                        return Err(ApiError::new(
                            ErrorReason::OwnerRoleNotAssignable,
                            "the owner role is never granted",
                        )
                        .into());
                    }
                    if !def.assignable {
                        return Err(ApiError::new(ErrorReason::RoleNotAssignable, "the role is not assignable").into());
                    }
                }
                GrantAccess::Permission(p) => {
                    if index.policy.permission_bit(p).is_none() {
                        return Err(ApiError::new(ErrorReason::PermissionNotFound, "no such permission").into());
                    }
                }
            }
            // A person hands out only what they hold there, to someone they may see, and a
            // role under CheckRoleGrant's rules (MSP-staff-only roles, rank).
            if who.user().is_some() {
                let actor = person_id(&who).ok_or_else(|| change_denial(ChangeDenial::NotHeld))?;
                index.check_resource_grant(&actor, &user, &tenant, &id, &access).map_err(change_denial)?;
            }
        }
        let record = GrantRecord {
            grant_id: Uuid::now_v7(),
            user,
            tenant,
            resource_id: id.clone(),
            access,
            granted_by: who.user().map(|p| p.user_id.clone()).unwrap_or_default(),
            created_at_micros: now_micros(),
        };
        let after = cv::grant(&record);
        let event = audit::change_event(
            Some(&who),
            Change {
                action: "resource_grant.create",
                resource_type: "resource_grant",
                resource_id: record.grant_id.to_string(),
                tenant_id: tenant.to_string(),
                before: None,
                after: Some(
                    serde_json::json!({"user_id": after.user_id, "resource_id": after.resource_id, "access": format!("{:?}", after.access)}),
                ),
            },
        );
        let (revision, stored) =
            store::put_grant(&self.state.database, &record, self.limits.grants_per_tenant, &[event])
                .await
                .map_err(write_error)?;
        self.after_write().await?;
        Ok(Response::new(pb::GrantResourceAccessResponse {
            grant: Some(cv::grant(&stored)),
            consistency_token: Some(cv::authz_token(revision)),
        }))
    }

    async fn revoke_resource_access(
        &self,
        request: Request<pb::RevokeResourceAccessRequest>,
    ) -> Reply<pb::RevokeResourceAccessResponse> {
        let metadata = request.metadata().clone();
        let r = request.into_inner();
        let grant_id = cv::uuid("grant_id", &r.grant_id)?;
        // A grant to someone the caller may not see, or in a tenant they may not see, is
        // treated as a random id.
        let asker = self.asker(&metadata).await?;
        let existing = {
            let index = self.state.read();
            index
                .grants()
                .iter()
                .find(|g| g.grant_id == grant_id)
                .filter(|g| !hides_user(&index, &asker, &g.user) && seen_tenant(&index, &asker, g.tenant) == g.tenant)
                .cloned()
        };
        let who = self.manager(&metadata, "users.manage", existing.as_ref().map(|g| g.tenant)).await?;
        let event = audit::change_event(
            Some(&who),
            Change {
                action: "resource_grant.revoke",
                resource_type: "resource_grant",
                resource_id: grant_id.to_string(),
                tenant_id: existing.as_ref().map(|g| g.tenant.to_string()).unwrap_or_default(),
                before: existing
                    .as_ref()
                    .map(|g| serde_json::json!({"user_id": g.user.to_string(), "resource_id": g.resource_id})),
                after: None,
            },
        );
        let revision = store::revoke_grant(&self.state.database, grant_id, &[event])
            .await
            .map_err(ApiError::internal)?
            .ok_or_else(|| ApiError::new(ErrorReason::ResourceGrantNotFound, "no such resource grant"))?;
        self.after_write().await?;
        Ok(Response::new(pb::RevokeResourceAccessResponse { consistency_token: Some(cv::authz_token(revision)) }))
    }

    async fn list_resource_grants(
        &self,
        request: Request<pb::ListResourceGrantsRequest>,
    ) -> Reply<pb::ListResourceGrantsResponse> {
        let (metadata, _, r) = request.into_parts();
        let tenant = cv::uuid("tenant_id", &r.tenant_id)?;
        let user = cv::optional_uuid("user_id", &r.user_id)?;
        let resource = cv::optional_resource("resource_id", &r.resource_id)?;
        // Who may reach what is an access review: a person sees their own grants, or everyone's
        // in a tenant where they hold users.view.
        let subject = (!r.user_id.is_empty()).then_some(r.user_id.as_str());
        let who = self.asker(&metadata).await?;
        may_ask_about(&self.state.read(), &who, subject, Some(tenant))?;
        let index = self.state.read();
        let seen = seen_tenant(&index, &who, tenant);
        let user = user.map(|u| seen_user(&index, &who, u));
        let mut items: Vec<pb::ResourceGrant> = index
            .grants()
            .iter()
            .filter(|g| g.tenant == seen && user.is_none_or(|u| g.user == u))
            .filter(|g| !hides_user(&index, &who, &g.user))
            .filter(|g| match &resource {
                None => true,
                Some(res) if r.include_inherited => index.resource_is_under(&tenant, res, &g.resource_id),
                Some(res) => &g.resource_id == res,
            })
            .map(cv::grant)
            .collect();
        drop(index);
        items.sort_by(|a, b| a.grant_id.cmp(&b.grant_id));
        let binding = format!("grants|{}|{}|{}|{}", r.tenant_id, r.resource_id, r.include_inherited, r.user_id);
        let (grants, next_page_token) = page::offset(items, r.page_size, &r.page_token, &binding)?;
        Ok(Response::new(pb::ListResourceGrantsResponse { grants, next_page_token }))
    }

    // ---------------- delegation ----------------

    async fn check_role_grant(&self, request: Request<pb::CheckRoleGrantRequest>) -> Reply<pb::CheckRoleGrantResponse> {
        let (metadata, _, r) = request.into_parts();
        let actor = cv::uuid("actor_user_id", &r.actor_user_id)?;
        // Services ask on behalf of anyone; a person only about what they themselves may grant.
        if self.asker(&metadata).await?.user().is_some_and(|p| p.user_id != r.actor_user_id) {
            return Err(ApiError::new(
                ErrorReason::PermissionDenied,
                "a person may only ask what they themselves may grant",
            )
            .into());
        }
        let target = cv::optional_uuid("target_user_id", &r.target_user_id)?;
        let tenant = cv::uuid("tenant_id", &r.tenant_id)?;
        cv::text("role", &r.role, 64)?;
        cv::text("previous_role", &r.previous_role, 64)?;
        if r.role.is_empty() && r.previous_role.is_empty() {
            return Err(ApiError::new(ErrorReason::FieldRequired, "role or previous_role is required")
                .with_metadata("field", "role")
                .into());
        }
        self.fresh(r.at_least_as_fresh.as_ref()).await?;
        let index = self.state.read();
        let q = RoleGrantQuestion {
            actor,
            target,
            target_is_msp_staff: r.target_is_msp_staff,
            tenant,
            role: (!r.role.is_empty()).then_some(r.role.as_str()),
            previous_role: (!r.previous_role.is_empty()).then_some(r.previous_role.as_str()),
        };
        let outcome = index.check_role_grant(&q);
        let evaluated_at = Some(cv::token(index.revisions));
        let reply = match outcome {
            Ok(()) => pb::CheckRoleGrantResponse {
                allowed: true,
                denial_reason: ErrorReason::Unspecified as i32,
                summary: format!(
                    "allowed: {} may {}",
                    actor,
                    match (r.role.is_empty(), r.previous_role.is_empty()) {
                        (false, true) => format!("grant {}", r.role),
                        (false, false) => format!("change {} to {}", r.previous_role, r.role),
                        _ => format!("remove {}", r.previous_role),
                    }
                ),
                evaluated_at,
            },
            Err(denial) => {
                let role_rank = index.role_rank(if r.role.is_empty() { &r.previous_role } else { &r.role });
                let (reason, summary) =
                    cv::denial(denial, &r.role, &r.previous_role, index.actor_rank(&actor, &tenant), role_rank);
                pb::CheckRoleGrantResponse { allowed: false, denial_reason: reason as i32, summary, evaluated_at }
            }
        };
        Ok(Response::new(reply))
    }

    // ---------------- decisions ----------------

    async fn check(&self, request: Request<pb::CheckRequest>) -> Reply<pb::CheckResponse> {
        let (metadata, _, r) = request.into_parts();
        let user = cv::uuid("subject_user_id", &r.subject_user_id)?;
        let tenant = cv::uuid("tenant_id", &r.tenant_id)?;
        cv::permission_name("permission", &r.permission)?;
        let resource = cv::optional_resource("resource_id", &r.resource_id)?;
        let who = self.may_ask(&metadata, &r.subject_user_id, Some(tenant)).await?;
        self.fresh(r.at_least_as_fresh.as_ref()).await?;
        let (decision, revisions) = {
            let index = self.state.read();
            let (user, tenant) = (seen_user(&index, &who, user), seen_tenant(&index, &who, tenant));
            let s = index.resolve(&user, &r.permission, &tenant, resource.as_deref()).map_err(cv::unresolved)?;
            (index.decide(s), index.revisions)
        };
        let decision_id = audit::fresh_id().to_string();
        let allowed = decision.allowed();
        self.record_decision(&decision_id, r, decision.reason);
        Ok(Response::new(pb::CheckResponse { allowed, decision_id, evaluated_at: Some(cv::token(revisions)) }))
    }

    async fn batch_check(&self, request: Request<pb::BatchCheckRequest>) -> Reply<pb::BatchCheckResponse> {
        let (metadata, _, r) = request.into_parts();
        if r.items.is_empty() {
            return Err(ApiError::new(ErrorReason::FieldRequired, "items is required")
                .with_metadata("field", "items")
                .into());
        }
        if r.items.len() > cv::MAX_BATCH {
            return Err(ApiError::new(ErrorReason::BatchTooLarge, "at most 1000 items")
                .with_metadata("field", "items")
                .with_metadata("limit", cv::MAX_BATCH.to_string())
                .into());
        }
        let who = self.asker(&metadata).await?;
        self.fresh(r.at_least_as_fresh.as_ref()).await?;
        let batch_id = audit::fresh_id().to_string();
        let mut decisions = Vec::with_capacity(r.items.len());
        let mut recorded = Vec::new();
        let revisions = {
            let index = self.state.read();
            for (i, item) in r.items.iter().enumerate() {
                let parsed = (|| {
                    let user = cv::uuid("subject_user_id", &item.subject_user_id)?;
                    let tenant = cv::uuid("tenant_id", &item.tenant_id)?;
                    cv::permission_name("permission", &item.permission)?;
                    let resource = cv::optional_resource("resource_id", &item.resource_id)?;
                    // May the caller ask at all, before saying whether the user exists.
                    may_ask_about(&index, &who, Some(&item.subject_user_id), Some(tenant))?;
                    let (user, tenant) = (seen_user(&index, &who, user), seen_tenant(&index, &who, tenant));
                    index.resolve(&user, &item.permission, &tenant, resource.as_deref()).map_err(cv::unresolved)
                })();
                match parsed {
                    Ok(s) => {
                        let d = index.decide(s);
                        if !d.allowed() || self.audit.sample_allowed() {
                            recorded.push((i, d.allowed(), cv::reason(d.reason).as_str_name()));
                        }
                        decisions.push(pb::BatchCheckItemDecision { allowed: d.allowed(), error: 0 });
                    }
                    Err(e) => decisions.push(pb::BatchCheckItemDecision { allowed: false, error: e.reason as i32 }),
                }
            }
            index.revisions
        };
        self.audit.record(Queued::Batch {
            batch_id: batch_id.clone(),
            items: r.items,
            recorded,
            trace_id: tether_runtime::telemetry::current_trace_id().unwrap_or_default(),
            at_micros: now_micros(),
        });
        Ok(Response::new(pb::BatchCheckResponse {
            decisions,
            decision_id: batch_id,
            evaluated_at: Some(cv::token(revisions)),
        }))
    }

    async fn explain(&self, request: Request<pb::ExplainRequest>) -> Reply<pb::ExplainResponse> {
        let (metadata, _, r) = request.into_parts();
        let user = cv::uuid("subject_user_id", &r.subject_user_id)?;
        let tenant = cv::uuid("tenant_id", &r.tenant_id)?;
        cv::permission_name("permission", &r.permission)?;
        let resource = cv::optional_resource("resource_id", &r.resource_id)?;
        let who = self.may_ask(&metadata, &r.subject_user_id, Some(tenant)).await?;
        self.fresh(r.at_least_as_fresh.as_ref()).await?;
        let decision_id = Uuid::now_v7().to_string();
        let reply = {
            let index = self.state.read();
            // Decided on what the asker may see; explained with the ids they gave.
            let (seen_as, seen) = (seen_user(&index, &who, user), seen_tenant(&index, &who, tenant));
            let d = index.decide_names(&seen_as, &r.permission, &seen, resource.as_deref());
            pb::ExplainResponse {
                allowed: d.allowed(),
                reason: cv::reason(d.reason) as i32,
                summary: index.summary(&user, &r.permission, &tenant, &d),
                decision_id: decision_id.clone(),
                evaluated_at: Some(cv::token(index.revisions)),
                membership: index.basis(&d).map(cv::basis),
                permission_override: index.decision_override(&d).map(cv::override_msg),
                resource_grant: index.decision_grant(&d).map(cv::grant),
                steps: index.steps(&d),
            }
        };
        Ok(Response::new(reply))
    }

    async fn list_effective_permissions(
        &self,
        request: Request<pb::ListEffectivePermissionsRequest>,
    ) -> Reply<pb::ListEffectivePermissionsResponse> {
        let (metadata, _, r) = request.into_parts();
        let user = cv::uuid("subject_user_id", &r.subject_user_id)?;
        let tenant = cv::uuid("tenant_id", &r.tenant_id)?;
        let resource = cv::optional_resource("resource_id", &r.resource_id)?;
        let who = self.may_ask(&metadata, &r.subject_user_id, Some(tenant)).await?;
        self.fresh(r.at_least_as_fresh.as_ref()).await?;
        let index = self.state.read();
        let (user, tenant) = (seen_user(&index, &who, user), seen_tenant(&index, &who, tenant));
        let any_permission = index.policy.permissions.first().map(|p| p.name.clone()).unwrap_or_default();
        let s = index.resolve(&user, &any_permission, &tenant, resource.as_deref()).map_err(cv::unresolved)?;
        let probe = index.decide(s);
        let blocked = matches!(
            probe.reason,
            Reason::DeniedUserSuspended
                | Reason::DeniedUserPending
                | Reason::DeniedUserDeleted
                | Reason::DeniedTenantSuspended
                | Reason::DeniedTenantArchived
        );
        let mut permissions: Vec<pb::EffectivePermission> = if blocked {
            Vec::new()
        } else {
            index
                .effective(s.user, s.tenant, s.resource)
                .into_iter()
                .map(|(bit, reason)| pb::EffectivePermission {
                    permission: index.policy.permissions[bit as usize].name.clone(),
                    reason: cv::reason(reason) as i32,
                })
                .collect()
        };
        permissions.sort_by(|a, b| a.permission.cmp(&b.permission));
        Ok(Response::new(pb::ListEffectivePermissionsResponse {
            permissions,
            memberships: index.memberships_reaching(&user, &tenant).into_iter().map(cv::basis).collect(),
            blocked_reason: if blocked { cv::reason(probe.reason) as i32 } else { 0 },
            evaluated_at: Some(cv::token(index.revisions)),
        }))
    }

    async fn lookup_tenants(&self, request: Request<pb::LookupTenantsRequest>) -> Reply<pb::LookupTenantsResponse> {
        let (metadata, _, r) = request.into_parts();
        let user = cv::uuid("subject_user_id", &r.subject_user_id)?;
        cv::permission_name("permission", &r.permission)?;
        self.may_ask(&metadata, &r.subject_user_id, None).await?;
        let size = page::size(r.page_size)?;
        let binding = format!("lt|{}|{}", r.subject_user_id, r.permission);
        let after = page::cursor(&r.page_token, &binding)?;
        if after.is_none() {
            self.fresh(r.at_least_as_fresh.as_ref()).await?;
        } else {
            self.state.ready()?;
        }
        let index = self.state.read();
        let bit = index.policy.permission_bit(&r.permission).ok_or_else(|| cv::unresolved(Unresolved::Permission))?;
        let slot = index.known_user_slot(&user).ok_or_else(|| cv::unresolved(Unresolved::User))?;
        let (ids, more) = index.lookup_tenants(slot, bit, after, size);
        let next_page_token = match (more, ids.last()) {
            (true, Some(last)) => page::make_cursor(&binding, *last),
            _ => String::new(),
        };
        Ok(Response::new(pb::LookupTenantsResponse {
            tenant_ids: ids.into_iter().map(|t| t.to_string()).collect(),
            next_page_token,
            evaluated_at: Some(cv::token(index.revisions)),
        }))
    }

    async fn lookup_subjects(&self, request: Request<pb::LookupSubjectsRequest>) -> Reply<pb::LookupSubjectsResponse> {
        let (metadata, _, r) = request.into_parts();
        let tenant = cv::uuid("tenant_id", &r.tenant_id)?;
        // An access review lists people: services, or a person with users.view in the tenant.
        let who = self.asker(&metadata).await?;
        may_ask_about(&self.state.read(), &who, None, Some(tenant))?;
        cv::permission_name("permission", &r.permission)?;
        let resource = cv::optional_resource("resource_id", &r.resource_id)?;
        let size = page::size(r.page_size)?;
        let binding = format!("ls|{}|{}|{}", r.permission, r.tenant_id, r.resource_id);
        let after = page::cursor(&r.page_token, &binding)?;
        if after.is_none() {
            self.fresh(r.at_least_as_fresh.as_ref()).await?;
        } else {
            self.state.ready()?;
        }
        let index = self.state.read();
        let bit = index.policy.permission_bit(&r.permission).ok_or_else(|| cv::unresolved(Unresolved::Permission))?;
        // Resolve the tenant and resource through any known user: only their ids matter here.
        let tenant = seen_tenant(&index, &who, tenant);
        if !index.tenant_known(&tenant) {
            return Err(cv::unresolved(Unresolved::Tenant).into());
        }
        let resource_slot = match &resource {
            None => NONE,
            Some(res) => {
                if index.resource(&tenant, res).is_none() {
                    return Err(cv::unresolved(Unresolved::Resource).into());
                }
                index.resource_slot(&tenant, res)
            }
        };
        let tenant_slot = index.tenant_slot_of(&tenant);
        // A review asked for by someone who is not MSP staff leaves out whom they may not see.
        let viewer = if sees_staff(&index, &who) { None } else { Some(person_id(&who).unwrap_or_else(Uuid::nil)) };
        let (found, more) = index.lookup_subjects(bit, tenant_slot, resource_slot, after, size, viewer.as_ref());
        let next_page_token = match (more, found.last()) {
            (true, Some((last, _))) => page::make_cursor(&binding, *last),
            _ => String::new(),
        };
        let subjects = found
            .into_iter()
            .map(|(id, d)| pb::SubjectAccess {
                user_id: id.to_string(),
                reason: cv::reason(d.reason) as i32,
                membership: index.basis(&d).map(cv::basis),
            })
            .collect();
        Ok(Response::new(pb::LookupSubjectsResponse {
            subjects,
            next_page_token,
            evaluated_at: Some(cv::token(index.revisions)),
        }))
    }

    // ---------------- operations ----------------

    async fn get_index_status(&self, request: Request<pb::GetIndexStatusRequest>) -> Reply<pb::GetIndexStatusResponse> {
        // Internal and MSP staff: a service by its token (not an anonymous caller, even where
        // decision calls are open), or a person who is MSP staff.
        let who = caller(request.metadata(), &*self.authenticator, &self.service_token).await?;
        if who.user().is_some_and(|p| !p.is_msp_staff) {
            return Err(ApiError::new(ErrorReason::PermissionDenied, "MSP staff only").into());
        }
        use std::sync::atomic::Ordering;
        let duration = |micros: i64| prost_types::Duration {
            seconds: micros / 1_000_000,
            nanos: ((micros % 1_000_000) * 1000) as i32,
        };
        let source = |kind: RevisionSource, s: &crate::events::SourceState| {
            let heard = s.last_heard.load(Ordering::SeqCst);
            pb::SourceStatus {
                source: kind as i32,
                applied_revision: s.applied.load(Ordering::SeqCst),
                latest_known_revision: s.latest_known.load(Ordering::SeqCst),
                snapshot_loaded: s.snapshot_loaded.load(Ordering::SeqCst),
                last_heard_at: (heard != 0).then(|| timestamp_from_micros(heard)),
                lag: Some(duration(s.lag())),
            }
        };
        let index = self.state.read();
        // authz's own schema: "heard" is its last successful read, the lag the time since.
        let own = &self.state.own;
        let own_read = own.last_loaded.load(Ordering::SeqCst);
        let own_status = pb::SourceStatus {
            source: RevisionSource::Authz as i32,
            applied_revision: index.revisions.authz,
            latest_known_revision: own.latest_known.load(Ordering::SeqCst),
            snapshot_loaded: own_read != 0,
            last_heard_at: (own_read != 0).then(|| timestamp_from_micros(own_read)),
            lag: Some(duration(if own_read == 0 { 0 } else { own.stale_for() })),
        };
        Ok(Response::new(pb::GetIndexStatusResponse {
            serving: self.state.ready().is_ok(),
            sources: vec![
                source(RevisionSource::Identity, &self.state.identity),
                source(RevisionSource::Tenancy, &self.state.tenancy),
                own_status,
            ],
            current: Some(cv::token(index.revisions)),
            user_count: index.user_count() as i64,
            tenant_count: index.tenant_count() as i64,
            membership_count: index.membership_count() as i64,
        }))
    }
}
