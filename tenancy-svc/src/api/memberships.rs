//! Membership RPCs: directories, a user's tenants, SetUserMemberships, add, change the role,
//! remove, SwitchTenant and the default tenant.

use std::collections::HashSet;

use tether_proto::{
    common::v1::{ConsistencyToken, ErrorReason, MembershipKind as ProtoKind},
    tenancy::v1 as pb,
};
use tether_runtime::access::Caller;

use crate::deps::PackInfo;
use tonic::{Request, Response, Status};

use super::{Tenancy, guard, id, next_token, reject, store_error, token};
use crate::{
    domain::{MembershipKind, PageRequest, Rejection, RoleName, TenantStatus, parse_optional_id},
    events::{AuditContext, convert as cv},
    store::{
        self,
        memberships::{self, Spec},
    },
};

/// How many directory reads one ListTenantMembers page may take when a client caller's page
/// leaves out members at home elsewhere; past it the page is shorter, and the next starts after
/// what was read.
const DIRECTORY_ROUNDS: usize = 8;

impl Tenancy {
    pub(super) async fn list_tenant_members(
        &self,
        request: Request<pb::ListTenantMembersRequest>,
    ) -> Result<Response<pb::ListTenantMembersResponse>, Status> {
        let caller = self.caller(&request).await?;
        let req = request.into_inner();
        let tenant_id = id("tenant_id", &req.tenant_id)?;
        let role = if req.role.is_empty() { None } else { Some(RoleName::parse("role", &req.role).map_err(reject)?) };
        let filters = format!("members|{}|{}", req.tenant_id, req.role);
        let page = PageRequest::parse(req.page_size, &req.page_token, &filters).map_err(reject)?;
        let (_, roots) = self.see_with_roots(&caller, &tenant_id).await?;
        self.require(&caller, "users.view", &tenant_id).await?;
        // Client users never learn of MSP-level users, even ones given a direct membership here
        // (left out by the query), nor of users at home elsewhere (left out per page, below).
        let client_caller = caller.user().filter(|_| roots.is_some());
        let hide_staff_except = client_caller.map(|u| u.user_id.as_str());
        let mut rows = Vec::new();
        let mut after = page.after.clone();
        let mut next_after = None;
        for _ in 0..DIRECTORY_ROUNDS {
            let query = memberships::DirectoryQuery {
                tenant_id: &tenant_id,
                role: role.as_ref().map(RoleName::as_str),
                after: after.as_deref(),
                limit: page.size,
                hide_staff_except,
            };
            let fetched = memberships::directory(&self.database, &query).await.map_err(store_error)?;
            let more = fetched.len() > page.size;
            let last_fetched = fetched.last().map(|m| m.row.user_id.clone());
            rows.extend(match client_caller {
                Some(p) => self.members_at_home(&p.user_id, &p.primary_tenant_id, fetched).await?,
                None => fetched,
            });
            if rows.len() > page.size {
                rows.truncate(page.size);
                next_after = rows.last().map(|m| m.row.user_id.clone());
                break;
            }
            // Past the last round, the next page starts after what was read.
            next_after = last_fetched.filter(|_| more);
            if next_after.is_none() {
                break;
            }
            after.clone_from(&next_after);
        }
        let next_page_token = next_token(&filters, next_after.is_some(), || next_after.clone().unwrap_or_default());
        Ok(Response::new(pb::ListTenantMembersResponse {
            memberships: rows.iter().map(cv::held).collect(),
            next_page_token,
        }))
    }

    pub(super) async fn list_user_tenants(
        &self,
        request: Request<pb::ListUserTenantsRequest>,
    ) -> Result<Response<pb::ListUserTenantsResponse>, Status> {
        let caller = self.caller(&request).await?;
        let req = request.into_inner();
        let kind = match ProtoKind::try_from(req.kind) {
            Ok(ProtoKind::Unspecified) => None,
            Ok(ProtoKind::Direct) => Some(MembershipKind::Direct),
            Ok(ProtoKind::Shadow) => Some(MembershipKind::Shadow),
            Ok(ProtoKind::Assigned) => Some(MembershipKind::Assigned),
            Err(_) => return Err(reject(Rejection::new(ErrorReason::ValueOutOfRange, "unknown kind").on("kind"))),
        };
        let user_id = match (parse_optional_id("user_id", &req.user_id).map_err(reject)?, caller.user()) {
            (Some(u), _) => u,
            (None, Some(p)) => p.user_id.clone(),
            (None, None) => {
                return Err(reject(Rejection::new(ErrorReason::FieldRequired, "user_id is required").on("user_id")));
            }
        };
        let filters = format!("user_tenants|{}|{}|{}", req.user_id, req.kind, req.include_inactive);
        let page = PageRequest::parse(req.page_size, &req.page_token, &filters).map_err(reject)?;
        let offset: usize = match &page.after {
            Some(c) => c.parse().map_err(|_| {
                reject(
                    Rejection::new(ErrorReason::InvalidPageToken, "the page token is not valid here").on("page_token"),
                )
            })?,
            None => 0,
        };
        let mut all = memberships::user_tenants(&self.database, &user_id).await.map_err(store_error)?;
        let own = caller.user().is_some_and(|p| p.user_id == user_id);
        if !own {
            self.may_view_user(&caller, &user_id, &all).await?;
            if let Some(roots) = self.visible_roots(&caller).await? {
                all.retain(|(t, _)| t.chain().iter().any(|id| roots.contains(id)));
            }
        }
        all.retain(|(t, m)| {
            (req.include_inactive || t.status == TenantStatus::Active) && kind.is_none_or(|k| m.row.kind == k)
        });
        let has_more = all.len() > offset + page.size;
        let tenants = all
            .into_iter()
            .skip(offset)
            .take(page.size)
            .map(|(t, m)| pb::UserTenant { tenant: Some(cv::tenant(&t)), membership: Some(cv::held(&m)) })
            .collect();
        let next_page_token = next_token(&filters, has_more, || (offset + page.size).to_string());
        Ok(Response::new(pb::ListUserTenantsResponse { tenants, next_page_token }))
    }

    pub(super) async fn set_user_memberships(
        &self,
        request: Request<pb::SetUserMembershipsRequest>,
    ) -> Result<Response<pb::SetUserMembershipsResponse>, Status> {
        let caller = self.caller(&request).await?;
        let req = request.into_inner();
        let user_id = id("user_id", &req.user_id)?;
        if req.memberships.len() > 500 {
            return Err(reject(
                Rejection::new(ErrorReason::BatchTooLarge, "at most 500 memberships").on("memberships"),
            ));
        }
        // An empty list is identity-svc deleting the user; people must leave at least one.
        if req.memberships.is_empty() && caller.user().is_some() {
            return Err(reject(
                Rejection::new(ErrorReason::FieldRequired, "a user keeps at least one membership").on("memberships"),
            ));
        }
        let mut specs = Vec::with_capacity(req.memberships.len());
        let mut seen = HashSet::new();
        for (i, m) in req.memberships.iter().enumerate() {
            let tenant_id = id(&format!("memberships[{i}].tenant_id"), &m.tenant_id)?;
            let role = RoleName::parse(&format!("memberships[{i}].role"), &m.role).map_err(reject)?;
            if !seen.insert(tenant_id.clone()) {
                return Err(reject(
                    Rejection::new(ErrorReason::DuplicateEntry, "a tenant appears twice")
                        .on(format!("memberships[{i}].tenant_id")),
                ));
            }
            specs.push(Spec { tenant_id, role: role.as_str().to_owned() });
        }
        let default = parse_optional_id("default_tenant_id", &req.default_tenant_id).map_err(reject)?;
        if let Some(d) = &default
            && !seen.contains(d)
        {
            return Err(reject(
                Rejection::new(ErrorReason::NotAMember, "the default tenant must be one of the memberships")
                    .on("default_tenant_id"),
            ));
        }
        let pack = self.pack().await?;
        // One catalog lookup per distinct role (a batch may name the same role 500 times).
        let mut checked = HashSet::new();
        for (i, spec) in specs.iter().enumerate() {
            if checked.insert(spec.role.as_str()) {
                self.check_role(&spec.role, &pack, &format!("memberships[{i}].role")).await?;
            }
        }
        let fresh = req.at_least_as_fresh.as_ref();
        if caller.user().is_some() {
            let target = self.user_info(&caller, &user_id).await?;
            let current = memberships::user_tenants(&self.database, &user_id).await.map_err(store_error)?;
            let current_direct: Vec<(String, String)> = current
                .iter()
                .filter(|(_, m)| m.row.kind == MembershipKind::Direct)
                .map(|(t, m)| (t.id.clone(), m.row.role.clone()))
                .collect();
            for (i, spec) in specs.iter().enumerate() {
                let previous = current_direct.iter().find(|(t, _)| *t == spec.tenant_id).map(|(_, r)| r.clone());
                if previous.as_deref() == Some(spec.role.as_str()) {
                    continue;
                }
                let field = format!("memberships[{i}].tenant_id");
                self.see(&caller, &spec.tenant_id).await.map_err(|s| guard::on_field(s, &field))?;
                self.require_at(&caller, "users.manage", &spec.tenant_id, fresh).await?;
                let previous = previous.as_deref().unwrap_or("");
                self.check_grant(&caller, &target, &spec.tenant_id, &spec.role, previous, fresh).await?;
            }
            for (tenant_id, role) in &current_direct {
                if !seen.contains(tenant_id) {
                    self.see(&caller, tenant_id).await?;
                    self.require_at(&caller, "users.manage", tenant_id, fresh).await?;
                    self.check_grant(&caller, &target, tenant_id, "", role, fresh).await?;
                }
            }
        }
        let ctx = AuditContext::from_caller(&caller);
        let enforce_last_admin = !specs.is_empty() || caller.user().is_some();
        let (memberships, revision) = memberships::set_user_memberships(
            &self.database,
            &ctx,
            &user_id,
            &specs,
            default.as_deref(),
            &pack,
            enforce_last_admin,
        )
        .await
        .map_err(store_error)?;
        Ok(Response::new(pb::SetUserMembershipsResponse {
            memberships: memberships.iter().map(cv::held).collect(),
            consistency_token: token(revision),
        }))
    }

    /// What AddMembership and ChangeMembershipRole share: the user, tenant and role parsed, the
    /// role checked against the catalog, and for a person their right to the change: they see
    /// the tenant, hold `users.manage` there, see the user, and authz allows the change from the
    /// user's current direct role (`must_hold`: there must be one). A role the user already holds
    /// needs no grant; services are trusted.
    async fn role_change(
        &self,
        caller: &Caller,
        raw_user_id: &str,
        raw_tenant_id: &str,
        raw_role: &str,
        fresh: Option<&ConsistencyToken>,
        must_hold: bool,
    ) -> Result<(String, String, RoleName, PackInfo), Status> {
        let user_id = id("user_id", raw_user_id)?;
        let tenant_id = id("tenant_id", raw_tenant_id)?;
        let role = RoleName::parse("role", raw_role).map_err(reject)?;
        let pack = self.pack().await?;
        self.check_role(role.as_str(), &pack, "role").await?;
        if caller.user().is_none() {
            return Ok((user_id, tenant_id, role, pack));
        }
        self.see(caller, &tenant_id).await?;
        self.require_at(caller, "users.manage", &tenant_id, fresh).await?;
        let target = self.user_info(caller, &user_id).await?;
        let current = memberships::get_direct(&self.database, &user_id, &tenant_id).await.map_err(store_error)?;
        if must_hold && current.is_none() {
            return Err(reject(Rejection::new(
                ErrorReason::MembershipNotFound,
                "the user holds no direct membership there",
            )));
        }
        let previous = current.map(|m| m.role);
        if previous.as_deref() != Some(role.as_str()) {
            let previous = previous.as_deref().unwrap_or("");
            self.check_grant(caller, &target, &tenant_id, role.as_str(), previous, fresh).await?;
        }
        Ok((user_id, tenant_id, role, pack))
    }

    pub(super) async fn add_membership(
        &self,
        request: Request<pb::AddMembershipRequest>,
    ) -> Result<Response<pb::AddMembershipResponse>, Status> {
        let caller = self.caller(&request).await?;
        let req = request.into_inner();
        let fresh = req.at_least_as_fresh.as_ref();
        let (user_id, tenant_id, role, pack) =
            self.role_change(&caller, &req.user_id, &req.tenant_id, &req.role, fresh, false).await?;
        let ctx = AuditContext::from_caller(&caller);
        let (membership, revision) =
            memberships::add(&self.database, &ctx, &user_id, &tenant_id, role.as_str(), req.make_default, &pack)
                .await
                .map_err(store_error)?;
        Ok(Response::new(pb::AddMembershipResponse {
            membership: Some(cv::held(&membership)),
            consistency_token: token(revision),
        }))
    }

    pub(super) async fn change_membership_role(
        &self,
        request: Request<pb::ChangeMembershipRoleRequest>,
    ) -> Result<Response<pb::ChangeMembershipRoleResponse>, Status> {
        let caller = self.caller(&request).await?;
        let req = request.into_inner();
        let fresh = req.at_least_as_fresh.as_ref();
        let (user_id, tenant_id, role, pack) =
            self.role_change(&caller, &req.user_id, &req.tenant_id, &req.role, fresh, true).await?;
        let ctx = AuditContext::from_caller(&caller);
        let (membership, revision) =
            memberships::change_role(&self.database, &ctx, &user_id, &tenant_id, role.as_str(), &pack)
                .await
                .map_err(store_error)?;
        Ok(Response::new(pb::ChangeMembershipRoleResponse {
            membership: Some(cv::held(&membership)),
            consistency_token: token(revision),
        }))
    }

    pub(super) async fn remove_membership(
        &self,
        request: Request<pb::RemoveMembershipRequest>,
    ) -> Result<Response<pb::RemoveMembershipResponse>, Status> {
        let caller = self.caller(&request).await?;
        let req = request.into_inner();
        let user_id = id("user_id", &req.user_id)?;
        let tenant_id = id("tenant_id", &req.tenant_id)?;
        let pack = self.pack().await?;
        if caller.user().is_some() {
            let fresh = req.at_least_as_fresh.as_ref();
            self.see(&caller, &tenant_id).await?;
            self.require_at(&caller, "users.manage", &tenant_id, fresh).await?;
            let target = match self.user_info(&caller, &user_id).await {
                Ok(target) => Some(target),
                // Someone a client caller may not see holds nothing they could remove, as a
                // random id; MSP staff may still clear a membership identity no longer knows.
                Err(s) if s.code() == tonic::Code::NotFound => {
                    if self.visible_roots(&caller).await?.is_some() {
                        return Err(reject(memberships::membership_not_found()));
                    }
                    None
                }
                Err(s) => return Err(s),
            };
            if let (Some(target), Some(current)) =
                (target, memberships::get_direct(&self.database, &user_id, &tenant_id).await.map_err(store_error)?)
            {
                self.check_grant(&caller, &target, &tenant_id, "", &current.role, fresh).await?;
            }
        }
        let ctx = AuditContext::from_caller(&caller);
        let revision =
            memberships::remove(&self.database, &ctx, &user_id, &tenant_id, &pack).await.map_err(store_error)?;
        Ok(Response::new(pb::RemoveMembershipResponse { consistency_token: token(revision) }))
    }

    pub(super) async fn switch_tenant(
        &self,
        request: Request<pb::SwitchTenantRequest>,
    ) -> Result<Response<pb::SwitchTenantResponse>, Status> {
        let caller = self.caller(&request).await?;
        let tenant_id = id("tenant_id", &request.get_ref().tenant_id)?;
        let Some(user) = caller.user() else {
            return Err(reject(Rejection::new(ErrorReason::NotAMember, "only people switch tenants")));
        };
        let membership = memberships::strongest_in(&self.database, &user.user_id, &tenant_id)
            .await
            .map_err(store_error)?
            .ok_or_else(|| reject(Rejection::new(ErrorReason::NotAMember, "you hold no membership in that tenant")))?;
        let tenant = self.tenant(&tenant_id).await?;
        if tenant.status != TenantStatus::Active {
            return Err(reject(Rejection::new(ErrorReason::TenantNotActive, "the tenant is suspended or archived")));
        }
        let ctx = AuditContext::from_caller(&caller);
        let mut audit = ctx.event("tenant.switch", "tenant", &tenant_id, &tenant_id);
        audit.after_json = crate::events::json_object(&[("tenant_id", &tenant_id), ("role", &membership.row.role)]);
        store::record_audit_only(&self.database, &[audit]).await.map_err(store_error)?;
        Ok(Response::new(pb::SwitchTenantResponse {
            tenant: Some(pb::UserTenant { tenant: Some(cv::tenant(&tenant)), membership: Some(cv::held(&membership)) }),
        }))
    }

    pub(super) async fn set_default_tenant(
        &self,
        request: Request<pb::SetDefaultTenantRequest>,
    ) -> Result<Response<pb::SetDefaultTenantResponse>, Status> {
        let caller = self.caller(&request).await?;
        let req = request.into_inner();
        let tenant_id = id("tenant_id", &req.tenant_id)?;
        let user_id = match (parse_optional_id("user_id", &req.user_id).map_err(reject)?, caller.user()) {
            (Some(u), _) => u,
            (None, Some(p)) => p.user_id.clone(),
            (None, None) => {
                return Err(reject(Rejection::new(ErrorReason::FieldRequired, "user_id is required").on("user_id")));
            }
        };
        if caller.user().is_none_or(|p| p.user_id != user_id) {
            self.see(&caller, &tenant_id).await?;
            self.require_at(&caller, "users.manage", &tenant_id, req.at_least_as_fresh.as_ref()).await?;
            if caller.user().is_some() {
                self.user_info(&caller, &user_id).await?;
            }
        }
        let ctx = AuditContext::from_caller(&caller);
        let (membership, revision) =
            memberships::set_default(&self.database, &ctx, &user_id, &tenant_id).await.map_err(store_error)?;
        Ok(Response::new(pb::SetDefaultTenantResponse {
            membership: Some(cv::held(&membership)),
            consistency_token: token(revision),
        }))
    }
}
