//! Who is calling, what they may see, and what they may do; and the one mapping from
//! rejections to gRPC statuses.
//!
//! Rules, in the order every RPC applies them:
//!
//! 1. Service callers (the service token) are trusted: they see every tenant and user, and are
//!    believed about user existence (identity's relay; membership writes are idempotent).
//! 2. Tenants: MSP staff see every tenant; anyone else only tenants at or below one where they
//!    hold a membership. Any other tenant is `TENANT_NOT_FOUND` (`see`), never
//!    PERMISSION_DENIED, which would reveal it.
//! 3. Users: a client user (not MSP staff) targets only users who are not MSP staff and whose
//!    home (identity's primary tenant, from `BatchGetUsers`) is the caller's home tenant or one of
//!    its departments (`user_info`). Anyone else is `USER_NOT_FOUND`
//!    (`MEMBERSHIP_NOT_FOUND` on RemoveMembership), as for a random id, even with a membership in
//!    the caller's tenant.
//! 4. Directories leave such users out (`members_at_home`), page by page after the
//!    query, reading more rows while the page has room, up to 8 reads.
//! 5. Then `Authorizer::check` with the RPC's platform permission, then `CheckRoleGrant` for any
//!    role given, changed or removed (authz-svc's delegation rules).
//! 6. MSP staff holding the permission in a tenant may give a client user a membership there, in
//!    any client; client callers never can, since the user is unknown to them.
//! 7. Users come from identity-svc (`UserDirectory`); roles and the pack's owner, former-owner and
//!    admin roles from authz-svc (`RoleCatalog`); `prepare_with` takes both as trait objects.

use std::collections::HashMap;

use tether_proto::common::v1::{ConsistencyToken, ErrorReason};
use tether_runtime::{
    ApiError,
    access::{Caller, RoleGrant, caller},
};
use tonic::{Code, Request, Status};

use super::Tenancy;
use crate::{
    deps::{PackInfo, RoleInfo, UserInfo},
    domain::{HeldMembership, MembershipKind, Rejection, ensure_grantable},
    store::{StoreError, TenantRow, memberships, tenants},
};

pub fn rejection_to_api(r: Rejection) -> ApiError {
    let mut err = ApiError::new(r.reason, r.message);
    if let Some(field) = r.field {
        err = err.with_metadata("field", field);
    }
    err
}

pub fn reject(r: impl Into<Rejection>) -> Status {
    rejection_to_api(r.into()).into()
}

pub fn store_api_error(e: StoreError) -> ApiError {
    match e {
        StoreError::Rejected(r) => rejection_to_api(r),
        StoreError::Db(e) => ApiError::internal(e),
    }
}

pub fn store_error(e: StoreError) -> Status {
    store_api_error(e).into()
}

/// Names the request field a NOT_FOUND came from.
pub fn on_field(status: Status, field: &str) -> Status {
    if status.code() == Code::NotFound
        && let Some(reason) = tether_runtime::error::reason_of(&status)
        && let Some(reason) = ErrorReason::from_str_name(&format!("ERROR_REASON_{reason}"))
    {
        return ApiError::new(reason, status.message().to_owned()).with_metadata("field", field).into();
    }
    status
}

impl Tenancy {
    pub(super) async fn caller<T>(&self, request: &Request<T>) -> Result<Caller, Status> {
        let mut caller = caller(request.metadata(), self.deps.authenticator.as_ref(), &self.deps.service_token).await?;
        // The address the edge vouched for, else the connection's.
        caller.client_ip = tether_runtime::access::client_ip(request, &self.deps.service_token, "");
        Ok(caller)
    }

    /// Internal RPCs (Watch): only another Tether service presenting the service token, never
    /// a person; returns the service's name.
    pub(super) async fn require_service<T>(&self, request: &Request<T>) -> Result<String, Status> {
        let metadata = request.metadata();
        Ok(tether_runtime::access::require_service(
            metadata,
            self.deps.authenticator.as_ref(),
            &self.deps.service_token,
        )
        .await?)
    }

    /// Asks authz-svc; services acting on their own account are trusted.
    pub(super) async fn require(&self, caller: &Caller, permission: &str, tenant_id: &str) -> Result<(), Status> {
        self.require_at(caller, permission, tenant_id, None).await
    }

    /// [`Self::require`], decided on state at least as fresh as the caller's consistency token.
    pub(super) async fn require_at(
        &self,
        caller: &Caller,
        permission: &str,
        tenant_id: &str,
        at_least_as_fresh: Option<&ConsistencyToken>,
    ) -> Result<(), Status> {
        let Some(user) = caller.user() else { return Ok(()) };
        if self.deps.authorizer.check(&user.user_id, permission, tenant_id, at_least_as_fresh).await? {
            Ok(())
        } else {
            Err(reject(Rejection::new(ErrorReason::PermissionDenied, format!("{permission} is required here"))))
        }
    }

    pub(super) async fn admin(&self) -> Result<TenantRow, Status> {
        let mut conn = self.database.pool().acquire().await.map_err(|e| Status::from(ApiError::internal(e)))?;
        tenants::admin(&mut conn).await.map_err(store_error)
    }

    pub(super) async fn tenant(&self, tenant_id: &str) -> Result<TenantRow, Status> {
        let mut conn = self.database.pool().acquire().await.map_err(|e| Status::from(ApiError::internal(e)))?;
        tenants::require(&mut conn, tenant_id).await.map_err(store_error)
    }

    /// `None`: the caller sees every tenant (MSP staff, services); else the tenants where they
    /// hold a membership, each with its departments.
    pub(super) async fn visible_roots(&self, caller: &Caller) -> Result<Option<Vec<String>>, Status> {
        match caller.user() {
            None => Ok(None),
            Some(user) => memberships::visible_roots(&self.database, &user.user_id).await.map_err(store_error),
        }
    }

    /// The tenant, if the caller may know it exists; TENANT_NOT_FOUND otherwise (never
    /// PERMISSION_DENIED, which would reveal it).
    pub(super) async fn see(&self, caller: &Caller, tenant_id: &str) -> Result<TenantRow, Status> {
        Ok(self.see_with_roots(caller, tenant_id).await?.0)
    }

    /// [`Self::see`], also returning the caller's [`Self::visible_roots`] for later filtering.
    pub(super) async fn see_with_roots(
        &self,
        caller: &Caller,
        tenant_id: &str,
    ) -> Result<(TenantRow, Option<Vec<String>>), Status> {
        let tenant = self.tenant(tenant_id).await?;
        let roots = self.visible_roots(caller).await?;
        match &roots {
            Some(r) if !tenant.chain().iter().any(|id| r.contains(id)) => Err(reject(tenants::not_found())),
            _ => Ok((tenant, roots)),
        }
    }

    /// Another user's tenant list needs `users.view` in a tenant where that user is a direct
    /// member and the caller can see; client users never learn of MSP staff.
    pub(super) async fn may_view_user(
        &self,
        caller: &Caller,
        user_id: &str,
        tenants: &[(TenantRow, HeldMembership)],
    ) -> Result<(), Status> {
        if caller.user().is_none() {
            return Ok(());
        }
        let roots = self.visible_roots(caller).await?;
        let not_found = || reject(Rejection::new(ErrorReason::UserNotFound, "no such user"));
        if roots.is_some() {
            // The rule of `user_info`: someone a client user may not target is unknown to them.
            self.user_info(caller, user_id).await?;
        }
        let mut visible_any = false;
        for (tenant, m) in tenants {
            if m.row.kind != MembershipKind::Direct {
                continue;
            }
            if roots.as_ref().is_some_and(|r| !tenant.chain().iter().any(|id| r.contains(id))) {
                continue;
            }
            visible_any = true;
            if self.require(caller, "users.view", &tenant.id).await.is_ok() {
                return Ok(());
            }
        }
        if visible_any {
            Err(reject(Rejection::new(ErrorReason::PermissionDenied, "users.view is required")))
        } else {
            Err(not_found())
        }
    }

    pub(super) async fn pack(&self) -> Result<PackInfo, Status> {
        Ok(self.deps.roles.active_pack().await?)
    }

    /// The role exists in the catalog and may be given.
    pub(super) async fn check_role(&self, role: &str, pack: &PackInfo, field: &str) -> Result<RoleInfo, Status> {
        let info = self.deps.roles.role(role).await?.ok_or_else(|| {
            reject(Rejection::new(ErrorReason::RoleNotFound, format!("the catalog has no role {role:?}")).on(field))
        })?;
        ensure_grantable(role, &pack.owner_role).map_err(|r| reject(r.on(field)))?;
        if !info.assignable {
            return Err(reject(Rejection::new(ErrorReason::RoleNotAssignable, "the role is not assignable").on(field)));
        }
        Ok(info)
    }

    /// The target user, as identity-svc knows them (people's calls only). A person who is not
    /// MSP staff may only target users at home in their own home tenant or one of its
    /// departments (never MSP staff): anyone else is, to them, exactly a random id.
    pub(super) async fn user_info(&self, caller: &Caller, user_id: &str) -> Result<UserInfo, Status> {
        let not_found = || reject(Rejection::new(ErrorReason::UserNotFound, "no such user").on("user_id"));
        let users = self.deps.users.users(&[user_id.to_owned()]).await?;
        let info = users.get(user_id).cloned().ok_or_else(not_found)?;
        if let Some(person) = caller.user()
            && self.visible_roots(caller).await?.is_some()
            && !self.at_home(&person.primary_tenant_id, &info, &mut HashMap::new()).await?
        {
            return Err(not_found());
        }
        Ok(info)
    }

    /// Whether `target` is at home in `home` or one of its departments (and not MSP staff):
    /// the users a client caller whose home is `home` may target. `seen` remembers answers
    /// per target home, for a page of many.
    pub(super) async fn at_home(
        &self,
        home: &str,
        target: &UserInfo,
        seen: &mut HashMap<String, bool>,
    ) -> Result<bool, Status> {
        if target.is_msp_staff || home.is_empty() || target.home_tenant_id.is_empty() {
            return Ok(false);
        }
        if target.home_tenant_id == home {
            return Ok(true);
        }
        if let Some(known) = seen.get(&target.home_tenant_id) {
            return Ok(*known);
        }
        let mut conn = self.database.pool().acquire().await.map_err(|e| Status::from(ApiError::internal(e)))?;
        let within = tenants::get(&mut conn, &target.home_tenant_id)
            .await
            .map_err(store_error)?
            .is_some_and(|t| t.chain().iter().any(|id| id == home));
        seen.insert(target.home_tenant_id.clone(), within);
        Ok(within)
    }

    /// A directory page as a client caller whose home is `home` may see it: their own row,
    /// and members at home in `home` or its departments.
    pub(super) async fn members_at_home(
        &self,
        viewer: &str,
        home: &str,
        rows: Vec<HeldMembership>,
    ) -> Result<Vec<HeldMembership>, Status> {
        let ids: Vec<String> = rows.iter().map(|m| m.row.user_id.clone()).collect();
        let users = self.deps.users.users(&ids).await?;
        let mut seen = HashMap::new();
        let mut kept = Vec::with_capacity(rows.len());
        for row in rows {
            let visible = match users.get(&row.row.user_id) {
                _ if row.row.user_id == viewer => true,
                Some(info) => self.at_home(home, info, &mut seen).await?,
                None => false,
            };
            if visible {
                kept.push(row);
            }
        }
        Ok(kept)
    }

    /// authz-svc's delegation rules for giving, changing or removing a role.
    pub(super) async fn check_grant(
        &self,
        caller: &Caller,
        target: &UserInfo,
        tenant_id: &str,
        role: &str,
        previous_role: &str,
        at_least_as_fresh: Option<&ConsistencyToken>,
    ) -> Result<(), Status> {
        let Some(actor) = caller.user() else { return Ok(()) };
        let decision = self
            .deps
            .authorizer
            .check_role_grant(&RoleGrant {
                actor_user_id: actor.user_id.clone(),
                target_user_id: target.user_id.clone(),
                target_is_msp_staff: target.is_msp_staff,
                tenant_id: tenant_id.to_owned(),
                role: role.to_owned(),
                previous_role: previous_role.to_owned(),
                at_least_as_fresh: at_least_as_fresh.cloned(),
            })
            .await?;
        if decision.allowed {
            return Ok(());
        }
        let reason = match decision.denial_reason {
            ErrorReason::Unspecified => ErrorReason::PermissionDenied,
            r => r,
        };
        Err(reject(Rejection::new(reason, decision.summary)))
    }
}
