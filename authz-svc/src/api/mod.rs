//! gRPC handlers: decode the request, call the domain, encode the reply. No SQL, no rules.
//!
//! One file per family of RPCs, each adding its handlers to [`Authz`]: `roles` (the catalog,
//! roles, the role pack), `overrides`, `resources`, `grants` (resource grants), `decisions`
//! (Check, BatchCheck, Explain, ListEffectivePermissions, CheckRoleGrant), `lookups` and
//! `status`. The service trait below only hands each call to its handler.
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
mod decisions;
mod grants;
mod lookups;
mod overrides;
mod page;
mod resources;
mod roles;
mod status;

use std::sync::Arc;

use tether_proto::{
    authz::v1::{self as pb, authz_service_server::AuthzService},
    common::v1::ErrorReason,
};
use tether_runtime::{
    access::{Actor, Authenticator, Caller, ServiceToken, caller, has_credentials},
    error::ApiError,
};
use tonic::{Request, Response, Status, metadata::MetadataMap};
use uuid::Uuid;

use self::convert as cv;
use crate::{
    domain::{
        index::{ChangeDenial, Index, Unresolved},
        role_rules::RoleRuleError,
    },
    events::{AuditSink, State},
    store,
};

type Reply<T> = Result<Response<T>, Status>;

/// Everything the handlers share.
pub struct Authz {
    state: Arc<State>,
    audit: AuditSink,
    authenticator: Arc<dyn Authenticator>,
    service_token: ServiceToken,
    /// `TETHER_AUTHZ_OPEN_DECISIONS`: decision calls without credentials are answered.
    open_decisions: bool,
    /// `TETHER_AUTHZ_MAX_*`: quotas on resources, grants, overrides and custom roles.
    limits: store::Limits,
}

pub struct AuthzApi {
    inner: Authz,
}

impl AuthzApi {
    pub fn new(
        state: Arc<State>,
        audit: AuditSink,
        authenticator: Arc<dyn Authenticator>,
        service_token: ServiceToken,
        open_decisions: bool,
        limits: store::Limits,
    ) -> Self {
        Self { inner: Authz { state, audit, authenticator, service_token, open_decisions, limits } }
    }
}

impl Authz {
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

    /// The first page of a lookup honours `at_least_as_fresh`; a later page only needs the index
    /// ready (its cursor already fixes where the list goes on).
    async fn fresh_for_page(
        &self,
        first_page: bool,
        token: Option<&tether_proto::common::v1::ConsistencyToken>,
    ) -> Result<(), ApiError> {
        if first_page { self.fresh(token).await } else { self.state.ready() }
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

    async fn after_write(&self) -> Result<(), ApiError> {
        self.state.reload_own().await
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

/// A refused role definition, change or grant, as the API answers it.
fn role_rule(e: RoleRuleError) -> ApiError {
    match e {
        RoleRuleError::RankAboveOwn | RoleRuleError::ChangesRoleAboveOwn | RoleRuleError::RankNotBelowOwner => {
            ApiError::new(ErrorReason::RoleAboveOwn, "the role's rank is above the caller's own")
        }
        RoleRuleError::OwnerRole => {
            ApiError::new(ErrorReason::OwnerRoleNotAssignable, "the owner role is never granted")
        }
        RoleRuleError::NotAssignable => ApiError::new(ErrorReason::RoleNotAssignable, "the role is not assignable"),
    }
}

/// The acting person's id (a session always carries a canonical one).
fn person_id(who: &Caller) -> Option<Uuid> {
    who.user().and_then(|p| Uuid::try_parse(&p.user_id).ok())
}

#[tonic::async_trait]
impl AuthzService for AuthzApi {
    async fn list_permissions(
        &self,
        request: Request<pb::ListPermissionsRequest>,
    ) -> Reply<pb::ListPermissionsResponse> {
        self.inner.list_permissions(request).await
    }
    async fn list_roles(&self, request: Request<pb::ListRolesRequest>) -> Reply<pb::ListRolesResponse> {
        self.inner.list_roles(request).await
    }
    async fn get_role(&self, request: Request<pb::GetRoleRequest>) -> Reply<pb::GetRoleResponse> {
        self.inner.get_role(request).await
    }
    async fn create_role(&self, request: Request<pb::CreateRoleRequest>) -> Reply<pb::CreateRoleResponse> {
        self.inner.create_role(request).await
    }
    async fn update_role(&self, request: Request<pb::UpdateRoleRequest>) -> Reply<pb::UpdateRoleResponse> {
        self.inner.update_role(request).await
    }
    async fn delete_role(&self, request: Request<pb::DeleteRoleRequest>) -> Reply<pb::DeleteRoleResponse> {
        self.inner.delete_role(request).await
    }
    async fn get_active_pack(&self, request: Request<pb::GetActivePackRequest>) -> Reply<pb::GetActivePackResponse> {
        self.inner.get_active_pack(request).await
    }
    async fn set_override(&self, request: Request<pb::SetOverrideRequest>) -> Reply<pb::SetOverrideResponse> {
        self.inner.set_override(request).await
    }
    async fn remove_override(&self, request: Request<pb::RemoveOverrideRequest>) -> Reply<pb::RemoveOverrideResponse> {
        self.inner.remove_override(request).await
    }
    async fn list_overrides(&self, request: Request<pb::ListOverridesRequest>) -> Reply<pb::ListOverridesResponse> {
        self.inner.list_overrides(request).await
    }
    async fn register_resource(
        &self,
        request: Request<pb::RegisterResourceRequest>,
    ) -> Reply<pb::RegisterResourceResponse> {
        self.inner.register_resource(request).await
    }
    async fn remove_resource(&self, request: Request<pb::RemoveResourceRequest>) -> Reply<pb::RemoveResourceResponse> {
        self.inner.remove_resource(request).await
    }
    async fn list_resources(&self, request: Request<pb::ListResourcesRequest>) -> Reply<pb::ListResourcesResponse> {
        self.inner.list_resources(request).await
    }
    async fn grant_resource_access(
        &self,
        request: Request<pb::GrantResourceAccessRequest>,
    ) -> Reply<pb::GrantResourceAccessResponse> {
        self.inner.grant_resource_access(request).await
    }
    async fn revoke_resource_access(
        &self,
        request: Request<pb::RevokeResourceAccessRequest>,
    ) -> Reply<pb::RevokeResourceAccessResponse> {
        self.inner.revoke_resource_access(request).await
    }
    async fn list_resource_grants(
        &self,
        request: Request<pb::ListResourceGrantsRequest>,
    ) -> Reply<pb::ListResourceGrantsResponse> {
        self.inner.list_resource_grants(request).await
    }
    async fn check_role_grant(&self, request: Request<pb::CheckRoleGrantRequest>) -> Reply<pb::CheckRoleGrantResponse> {
        self.inner.check_role_grant(request).await
    }
    async fn check(&self, request: Request<pb::CheckRequest>) -> Reply<pb::CheckResponse> {
        self.inner.check(request).await
    }
    async fn batch_check(&self, request: Request<pb::BatchCheckRequest>) -> Reply<pb::BatchCheckResponse> {
        self.inner.batch_check(request).await
    }
    async fn explain(&self, request: Request<pb::ExplainRequest>) -> Reply<pb::ExplainResponse> {
        self.inner.explain(request).await
    }
    async fn list_effective_permissions(
        &self,
        request: Request<pb::ListEffectivePermissionsRequest>,
    ) -> Reply<pb::ListEffectivePermissionsResponse> {
        self.inner.list_effective_permissions(request).await
    }
    async fn lookup_tenants(&self, request: Request<pb::LookupTenantsRequest>) -> Reply<pb::LookupTenantsResponse> {
        self.inner.lookup_tenants(request).await
    }
    async fn lookup_subjects(&self, request: Request<pb::LookupSubjectsRequest>) -> Reply<pb::LookupSubjectsResponse> {
        self.inner.lookup_subjects(request).await
    }
    async fn get_index_status(&self, request: Request<pb::GetIndexStatusRequest>) -> Reply<pb::GetIndexStatusResponse> {
        self.inner.get_index_status(request).await
    }
}
