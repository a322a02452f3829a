//! gRPC handlers: decode the request, check who may do it, call the store, encode the reply.

mod call_classes;
pub use call_classes::SERVED;
mod guard;

use std::collections::HashSet;

use tether_proto::{
    common::v1::{ConsistencyToken, ErrorReason, MembershipKind as ProtoKind, Revision, RevisionSource},
    tenancy::v1::{self as pb, list_technician_assignments_request::Selector, tenancy_service_server::TenancyService},
};
use tether_runtime::{
    ApiError,
    access::Actor,
    db::Database,
    events::{ChangeFeed, WatchOptions, watch_stream},
};
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};

use crate::{
    deps::Deps,
    domain::{
        MembershipKind, PageRequest, PageToken, Rejection, RoleName, TenantKind, TenantName, TenantSlug, TenantStatus,
        Transferor, parse_id, parse_optional_id,
    },
    events::{AuditContext, convert as cv},
    store::{
        self, assignments,
        memberships::{self, Spec},
        ownership, snapshot, tenants,
    },
};

pub use guard::{reject, store_error};

pub struct TenancyApi {
    database: Database,
    deps: Deps,
    max_depth: usize,
    feed: ChangeFeed,
    stopping: CancellationToken,
    watch_options: WatchOptions,
}

impl TenancyApi {
    pub fn new(database: Database, deps: Deps, max_depth: usize, stopping: CancellationToken) -> Self {
        let feed = ChangeFeed::new(database.clone());
        Self { database, deps, max_depth, feed, stopping, watch_options: WatchOptions::default() }
    }
}

fn token(revision: u64) -> Option<ConsistencyToken> {
    Some(ConsistencyToken { revisions: vec![Revision { source: RevisionSource::Tenancy as i32, value: revision }] })
}

fn field_error(field: &str, e: crate::domain::FieldError) -> Status {
    use crate::domain::FieldError;
    let reason = match e {
        FieldError::Required => ErrorReason::FieldRequired,
        FieldError::TooLong { .. } => ErrorReason::FieldTooLong,
        FieldError::ControlCharacters | FieldError::InvalidSlug => ErrorReason::InvalidFormat,
    };
    reject(Rejection::new(reason, format!("{field} {e}")).on(field))
}

fn bounded(value: &str, max: usize, field: &str) -> Result<(), Status> {
    if value.chars().count() > max {
        return Err(reject(
            Rejection::new(ErrorReason::FieldTooLong, format!("{field} is longer than {max} characters")).on(field),
        ));
    }
    Ok(())
}

fn id(field: &str, raw: &str) -> Result<String, Status> {
    parse_id(field, raw).map_err(reject)
}

fn next_token(filters: &str, has_more: bool, cursor: impl FnOnce() -> String) -> String {
    if has_more { PageToken::encode(filters, &cursor()) } else { String::new() }
}

fn status_filter(raw: i32, field: &str) -> Result<Vec<TenantStatus>, Status> {
    match pb::TenantStatus::try_from(raw) {
        Ok(pb::TenantStatus::Unspecified) => Ok(vec![TenantStatus::Active, TenantStatus::Suspended]),
        Ok(pb::TenantStatus::Active) => Ok(vec![TenantStatus::Active]),
        Ok(pb::TenantStatus::Suspended) => Ok(vec![TenantStatus::Suspended]),
        Ok(pb::TenantStatus::Archived) => Ok(vec![TenantStatus::Archived]),
        Err(_) => Err(reject(Rejection::new(ErrorReason::ValueOutOfRange, "unknown tenant status").on(field))),
    }
}

#[tonic::async_trait]
impl TenancyService for TenancyApi {
    async fn get_admin_tenancy(
        &self,
        request: Request<pb::GetAdminTenancyRequest>,
    ) -> Result<Response<pb::GetAdminTenancyResponse>, Status> {
        let caller = self.caller(&request).await?;
        let admin = self.admin().await?;
        self.see(&caller, &admin.id).await?;
        Ok(Response::new(pb::GetAdminTenancyResponse { tenant: Some(cv::tenant(&admin)) }))
    }

    async fn create_tenant(
        &self,
        request: Request<pb::CreateTenantRequest>,
    ) -> Result<Response<pb::CreateTenantResponse>, Status> {
        let caller = self.caller(&request).await?;
        let req = request.into_inner();
        let name = TenantName::parse(&req.name).map_err(|e| field_error("name", e))?;
        let slug = if req.slug.is_empty() {
            None
        } else {
            Some(TenantSlug::parse(&req.slug).map_err(|e| field_error("slug", e))?)
        };
        let parent_id = parse_optional_id("parent_id", &req.parent_id).map_err(reject)?;
        let request_id = parse_optional_id("request_id", &req.request_id).map_err(reject)?;
        let parent = match &parent_id {
            Some(p) => self.see(&caller, p).await.map_err(|s| guard::on_field(s, "parent_id"))?,
            None => self.admin().await?,
        };
        // Said before the permission check: authz-svc grants nothing in an inactive tenant, and
        // the caller can see this one anyway.
        if parent.status != TenantStatus::Active {
            return Err(reject(
                Rejection::new(ErrorReason::TenantNotActive, "the parent tenant is suspended or archived")
                    .on("parent_id"),
            ));
        }
        self.require_create(&caller, &parent, req.at_least_as_fresh.as_ref()).await?;
        let parent_id = (parent.kind != TenantKind::Admin).then(|| parent.id.clone());
        let ctx = AuditContext::from_caller(&caller);
        let (tenant, revision) = tenants::create(
            &self.database,
            &ctx,
            tenants::NewTenant { name, slug, parent_id, request_id },
            self.max_depth,
        )
        .await
        .map_err(store_error)?;
        Ok(Response::new(pb::CreateTenantResponse {
            tenant: Some(cv::tenant(&tenant)),
            consistency_token: token(revision),
        }))
    }

    async fn get_tenant(
        &self,
        request: Request<pb::GetTenantRequest>,
    ) -> Result<Response<pb::GetTenantResponse>, Status> {
        let caller = self.caller(&request).await?;
        let tenant_id = id("tenant_id", &request.get_ref().tenant_id)?;
        let tenant = self.see(&caller, &tenant_id).await?;
        Ok(Response::new(pb::GetTenantResponse { tenant: Some(cv::tenant(&tenant)) }))
    }

    async fn list_tenants(
        &self,
        request: Request<pb::ListTenantsRequest>,
    ) -> Result<Response<pb::ListTenantsResponse>, Status> {
        let caller = self.caller(&request).await?;
        let req = request.into_inner();
        bounded(&req.query, 200, "query")?;
        let statuses = status_filter(req.status, "status")?;
        let parent_id = parse_optional_id("parent_id", &req.parent_id).map_err(reject)?;
        let filters = format!("list|{}|{}|{}", req.parent_id, req.status, req.query);
        let page = PageRequest::parse(req.page_size, &req.page_token, &filters).map_err(reject)?;
        let parent = match &parent_id {
            Some(p) => self.see(&caller, p).await.map_err(|s| guard::on_field(s, "parent_id"))?,
            None => self.admin().await?,
        };
        let within = self.visible_roots(&caller).await?;
        let after =
            page.after.as_deref().and_then(|c| c.split_once('\u{1f}')).map(|(n, i)| (n.to_owned(), i.to_owned()));
        let filter = tenants::ListFilter { parent_id: parent.id, statuses, query: req.query.to_lowercase(), within };
        let mut rows = tenants::list_children(&self.database, &filter, after, page.size).await.map_err(store_error)?;
        let has_more = rows.len() > page.size;
        rows.truncate(page.size);
        let next_page_token = next_token(&filters, has_more, || {
            rows.last().map(|t| format!("{}\u{1f}{}", t.name, t.id)).unwrap_or_default()
        });
        Ok(Response::new(pb::ListTenantsResponse { tenants: rows.iter().map(cv::tenant).collect(), next_page_token }))
    }

    async fn get_subtree(
        &self,
        request: Request<pb::GetSubtreeRequest>,
    ) -> Result<Response<pb::GetSubtreeResponse>, Status> {
        let caller = self.caller(&request).await?;
        let req = request.into_inner();
        let root_id = id("tenant_id", &req.tenant_id)?;
        if req.max_depth < 0 {
            return Err(reject(
                Rejection::new(ErrorReason::ValueOutOfRange, "max_depth must not be negative").on("max_depth"),
            ));
        }
        let filters = format!("subtree|{}|{}|{}", req.tenant_id, req.max_depth, req.include_archived);
        let page = PageRequest::parse(req.page_size, &req.page_token, &filters).map_err(reject)?;
        let offset: usize = match &page.after {
            Some(c) => c.parse().map_err(|_| {
                reject(
                    Rejection::new(ErrorReason::InvalidPageToken, "the page token is not valid here").on("page_token"),
                )
            })?,
            None => 0,
        };
        let root = self.see(&caller, &root_id).await?;
        let mut conn = self.database.pool().acquire().await.map_err(|e| Status::from(ApiError::internal(e)))?;
        let rows = tenants::subtree_rows(&mut conn, &root).await.map_err(store_error)?;
        drop(conn);
        let ordered = tenants::pre_order(&root, rows, req.max_depth as usize, req.include_archived);
        let has_more = ordered.len() > offset + page.size;
        let page_rows: Vec<pb::Tenant> = ordered.iter().skip(offset).take(page.size).map(cv::tenant).collect();
        let next_page_token = next_token(&filters, has_more, || (offset + page.size).to_string());
        Ok(Response::new(pb::GetSubtreeResponse { tenants: page_rows, next_page_token }))
    }

    async fn rename_tenant(
        &self,
        request: Request<pb::RenameTenantRequest>,
    ) -> Result<Response<pb::RenameTenantResponse>, Status> {
        let caller = self.caller(&request).await?;
        let req = request.into_inner();
        let tenant_id = id("tenant_id", &req.tenant_id)?;
        let name = TenantName::parse(&req.name).map_err(|e| field_error("name", e))?;
        let slug = if req.slug.is_empty() {
            None
        } else {
            Some(TenantSlug::parse(&req.slug).map_err(|e| field_error("slug", e))?)
        };
        let tenant = self.see(&caller, &tenant_id).await?;
        let manager = tenant.parent_id.as_deref().unwrap_or(&tenant.id);
        self.require_at(&caller, "tenants.manage", manager, req.at_least_as_fresh.as_ref()).await?;
        let ctx = AuditContext::from_caller(&caller);
        let (tenant, revision) =
            tenants::rename(&self.database, &ctx, &tenant_id, &name, slug.as_ref()).await.map_err(store_error)?;
        Ok(Response::new(pb::RenameTenantResponse {
            tenant: Some(cv::tenant(&tenant)),
            consistency_token: token(revision),
        }))
    }

    async fn suspend_tenant(
        &self,
        request: Request<pb::SuspendTenantRequest>,
    ) -> Result<Response<pb::SuspendTenantResponse>, Status> {
        let req_ref = request.get_ref();
        bounded(&req_ref.reason, 500, "reason")?;
        let fresh = req_ref.at_least_as_fresh.clone();
        let (tenant, revision) = self
            .change_status(
                &request,
                &req_ref.tenant_id.clone(),
                TenantStatus::Suspended,
                &req_ref.reason.clone(),
                fresh,
            )
            .await?;
        Ok(Response::new(pb::SuspendTenantResponse { tenant: Some(tenant), consistency_token: token(revision) }))
    }

    async fn reactivate_tenant(
        &self,
        request: Request<pb::ReactivateTenantRequest>,
    ) -> Result<Response<pb::ReactivateTenantResponse>, Status> {
        let tenant_id = request.get_ref().tenant_id.clone();
        let fresh = request.get_ref().at_least_as_fresh.clone();
        let (tenant, revision) = self.change_status(&request, &tenant_id, TenantStatus::Active, "", fresh).await?;
        Ok(Response::new(pb::ReactivateTenantResponse { tenant: Some(tenant), consistency_token: token(revision) }))
    }

    async fn archive_tenant(
        &self,
        request: Request<pb::ArchiveTenantRequest>,
    ) -> Result<Response<pb::ArchiveTenantResponse>, Status> {
        let req_ref = request.get_ref();
        bounded(&req_ref.reason, 500, "reason")?;
        let fresh = req_ref.at_least_as_fresh.clone();
        let (tenant, revision) = self
            .change_status(&request, &req_ref.tenant_id.clone(), TenantStatus::Archived, &req_ref.reason.clone(), fresh)
            .await?;
        Ok(Response::new(pb::ArchiveTenantResponse { tenant: Some(tenant), consistency_token: token(revision) }))
    }

    async fn move_tenant(
        &self,
        request: Request<pb::MoveTenantRequest>,
    ) -> Result<Response<pb::MoveTenantResponse>, Status> {
        let caller = self.caller(&request).await?;
        let req = request.into_inner();
        let tenant_id = id("tenant_id", &req.tenant_id)?;
        let new_parent_id = id("new_parent_id", &req.new_parent_id)?;
        let tenant = self.see(&caller, &tenant_id).await?;
        let new_parent = self.see(&caller, &new_parent_id).await.map_err(|s| guard::on_field(s, "new_parent_id"))?;
        let fresh = req.at_least_as_fresh.as_ref();
        self.require_at(&caller, "tenants.manage", tenant.parent_id.as_deref().unwrap_or(&tenant.id), fresh).await?;
        self.require_at(&caller, "tenants.manage", &new_parent.id, fresh).await?;
        let ctx = AuditContext::from_caller(&caller);
        let (tenant, revision) = tenants::move_tenant(&self.database, &ctx, &tenant_id, &new_parent_id, self.max_depth)
            .await
            .map_err(store_error)?;
        Ok(Response::new(pb::MoveTenantResponse {
            tenant: Some(cv::tenant(&tenant)),
            consistency_token: token(revision),
        }))
    }

    async fn list_tenant_members(
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

    async fn list_user_tenants(
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

    async fn set_user_memberships(
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

    async fn add_membership(
        &self,
        request: Request<pb::AddMembershipRequest>,
    ) -> Result<Response<pb::AddMembershipResponse>, Status> {
        let caller = self.caller(&request).await?;
        let req = request.into_inner();
        let user_id = id("user_id", &req.user_id)?;
        let tenant_id = id("tenant_id", &req.tenant_id)?;
        let role = RoleName::parse("role", &req.role).map_err(reject)?;
        let pack = self.pack().await?;
        self.check_role(role.as_str(), &pack, "role").await?;
        if caller.user().is_some() {
            let fresh = req.at_least_as_fresh.as_ref();
            self.see(&caller, &tenant_id).await?;
            self.require_at(&caller, "users.manage", &tenant_id, fresh).await?;
            let target = self.user_info(&caller, &user_id).await?;
            let previous = memberships::get_direct(&self.database, &user_id, &tenant_id).await.map_err(store_error)?;
            if previous.as_ref().is_none_or(|m| m.role != role.as_str()) {
                let previous_role = previous.map(|m| m.role).unwrap_or_default();
                self.check_grant(&caller, &target, &tenant_id, role.as_str(), &previous_role, fresh).await?;
            }
        }
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

    async fn change_membership_role(
        &self,
        request: Request<pb::ChangeMembershipRoleRequest>,
    ) -> Result<Response<pb::ChangeMembershipRoleResponse>, Status> {
        let caller = self.caller(&request).await?;
        let req = request.into_inner();
        let user_id = id("user_id", &req.user_id)?;
        let tenant_id = id("tenant_id", &req.tenant_id)?;
        let role = RoleName::parse("role", &req.role).map_err(reject)?;
        let pack = self.pack().await?;
        self.check_role(role.as_str(), &pack, "role").await?;
        if caller.user().is_some() {
            let fresh = req.at_least_as_fresh.as_ref();
            self.see(&caller, &tenant_id).await?;
            self.require_at(&caller, "users.manage", &tenant_id, fresh).await?;
            let target = self.user_info(&caller, &user_id).await?;
            let current = memberships::get_direct(&self.database, &user_id, &tenant_id)
                .await
                .map_err(store_error)?
                .ok_or_else(|| {
                    reject(Rejection::new(ErrorReason::MembershipNotFound, "the user holds no direct membership there"))
                })?;
            if current.role != role.as_str() {
                self.check_grant(&caller, &target, &tenant_id, role.as_str(), &current.role, fresh).await?;
            }
        }
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

    async fn remove_membership(
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

    async fn switch_tenant(
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

    async fn set_default_tenant(
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

    async fn set_technician_assignments(
        &self,
        request: Request<pb::SetTechnicianAssignmentsRequest>,
    ) -> Result<Response<pb::SetTechnicianAssignmentsResponse>, Status> {
        let caller = self.caller(&request).await?;
        let req = request.into_inner();
        let technician = id("technician_user_id", &req.technician_user_id)?;
        if req.tenant_ids.len() > 10_000 {
            return Err(reject(Rejection::new(ErrorReason::BatchTooLarge, "at most 10,000 clients").on("tenant_ids")));
        }
        let mut seen = HashSet::new();
        let mut tenant_ids = Vec::with_capacity(req.tenant_ids.len());
        for (i, raw) in req.tenant_ids.iter().enumerate() {
            let tenant_id = id(&format!("tenant_ids[{i}]"), raw)?;
            if !seen.insert(tenant_id.clone()) {
                return Err(reject(
                    Rejection::new(ErrorReason::DuplicateEntry, "a client appears twice")
                        .on(format!("tenant_ids[{i}]")),
                ));
            }
            tenant_ids.push(tenant_id);
        }
        self.require_assignment_rights(&caller, &technician, req.at_least_as_fresh.as_ref()).await?;
        let ctx = AuditContext::from_caller(&caller);
        let (assignments, revision) =
            assignments::set(&self.database, &ctx, &technician, &tenant_ids).await.map_err(store_error)?;
        Ok(Response::new(pb::SetTechnicianAssignmentsResponse {
            assignments: assignments.iter().map(cv::assignment).collect(),
            consistency_token: token(revision),
        }))
    }

    async fn assign_technician(
        &self,
        request: Request<pb::AssignTechnicianRequest>,
    ) -> Result<Response<pb::AssignTechnicianResponse>, Status> {
        let caller = self.caller(&request).await?;
        let req = request.into_inner();
        let technician = id("technician_user_id", &req.technician_user_id)?;
        let tenant_id = id("tenant_id", &req.tenant_id)?;
        self.require_assignment_rights(&caller, &technician, req.at_least_as_fresh.as_ref()).await?;
        let ctx = AuditContext::from_caller(&caller);
        let (assignment, revision) =
            assignments::assign(&self.database, &ctx, &technician, &tenant_id).await.map_err(store_error)?;
        Ok(Response::new(pb::AssignTechnicianResponse {
            assignment: Some(cv::assignment(&assignment)),
            consistency_token: token(revision),
        }))
    }

    async fn unassign_technician(
        &self,
        request: Request<pb::UnassignTechnicianRequest>,
    ) -> Result<Response<pb::UnassignTechnicianResponse>, Status> {
        let caller = self.caller(&request).await?;
        let req = request.into_inner();
        let technician = id("technician_user_id", &req.technician_user_id)?;
        let tenant_id = id("tenant_id", &req.tenant_id)?;
        let admin = self.admin().await?;
        self.see(&caller, &admin.id).await?;
        self.require_at(&caller, "users.manage", &admin.id, req.at_least_as_fresh.as_ref()).await?;
        let ctx = AuditContext::from_caller(&caller);
        let revision =
            assignments::unassign(&self.database, &ctx, &technician, &tenant_id).await.map_err(store_error)?;
        Ok(Response::new(pb::UnassignTechnicianResponse { consistency_token: token(revision) }))
    }

    async fn list_technician_assignments(
        &self,
        request: Request<pb::ListTechnicianAssignmentsRequest>,
    ) -> Result<Response<pb::ListTechnicianAssignmentsResponse>, Status> {
        let caller = self.caller(&request).await?;
        let req = request.into_inner();
        let (side, filters) = match &req.selector {
            Some(Selector::TechnicianUserId(t)) => {
                (assignments::Side::Technician(id("technician_user_id", t)?), format!("assign|tech|{t}"))
            }
            Some(Selector::TenantId(t)) => {
                (assignments::Side::Tenant(id("tenant_id", t)?), format!("assign|tenant|{t}"))
            }
            None => {
                return Err(reject(
                    Rejection::new(ErrorReason::FieldRequired, "technician_user_id or tenant_id is required")
                        .on("selector"),
                ));
            }
        };
        let page = PageRequest::parse(req.page_size, &req.page_token, &filters).map_err(reject)?;
        let admin = self.admin().await?;
        self.see(&caller, &admin.id).await?;
        self.require(&caller, "users.manage", &admin.id).await?;
        let mut rows =
            assignments::list(&self.database, &side, page.after.as_deref(), page.size).await.map_err(store_error)?;
        let has_more = rows.len() > page.size;
        rows.truncate(page.size);
        let next_page_token = next_token(&filters, has_more, || {
            rows.last()
                .map(|a| match side {
                    assignments::Side::Technician(_) => a.tenant_id.clone(),
                    assignments::Side::Tenant(_) => a.technician_user_id.clone(),
                })
                .unwrap_or_default()
        });
        Ok(Response::new(pb::ListTechnicianAssignmentsResponse {
            assignments: rows.iter().map(cv::assignment).collect(),
            next_page_token,
        }))
    }

    async fn get_owner(&self, request: Request<pb::GetOwnerRequest>) -> Result<Response<pb::GetOwnerResponse>, Status> {
        let caller = self.caller(&request).await?;
        let admin = self.admin().await?;
        self.see(&caller, &admin.id).await?;
        let owner = ownership::current(&self.database)
            .await
            .map_err(store_error)?
            .ok_or_else(|| reject(Rejection::new(ErrorReason::UserNotFound, "the MSP has no owner yet")))?;
        Ok(Response::new(pb::GetOwnerResponse { ownership: Some(cv::ownership(&owner)) }))
    }

    async fn transfer_ownership(
        &self,
        request: Request<pb::TransferOwnershipRequest>,
    ) -> Result<Response<pb::TransferOwnershipResponse>, Status> {
        let caller = self.caller(&request).await?;
        let new_owner = id("new_owner_user_id", &request.get_ref().new_owner_user_id)?;
        let pack = self.pack().await?;
        let by = match &caller.actor {
            Actor::Service(_) => Transferor::Bootstrap,
            Actor::User(p) => {
                let owner = ownership::current(&self.database).await.map_err(store_error)?;
                if owner.is_none_or(|o| o.owner_user_id != p.user_id) {
                    return Err(reject(Rejection::new(ErrorReason::NotOwner, "only the owner may transfer ownership")));
                }
                let target =
                    self.user_info(&caller, &new_owner).await.map_err(|s| guard::on_field(s, "new_owner_user_id"))?;
                if !target.is_msp_staff {
                    return Err(reject(
                        Rejection::new(ErrorReason::NotMspStaff, "the new owner must be MSP staff")
                            .on("new_owner_user_id"),
                    ));
                }
                if !target.active {
                    return Err(reject(
                        Rejection::new(ErrorReason::UserNotActive, "the new owner must be an active user")
                            .on("new_owner_user_id"),
                    ));
                }
                Transferor::Owner(p.user_id.clone())
            }
        };
        let ctx = AuditContext::from_caller(&caller);
        let (ownership, previous_owner_membership, revision) =
            ownership::transfer(&self.database, &ctx, by, &new_owner, &pack).await.map_err(store_error)?;
        Ok(Response::new(pb::TransferOwnershipResponse {
            ownership: Some(cv::ownership(&ownership)),
            previous_owner_membership: previous_owner_membership.as_ref().map(cv::held),
            consistency_token: token(revision),
        }))
    }

    async fn watch(
        &self,
        request: Request<pb::WatchRequest>,
    ) -> Result<Response<tonic::codegen::BoxStream<pb::WatchResponse>>, Status> {
        // The whole tree, every membership and its history: for Tether services only.
        self.require_service(&request).await?;
        let from = request.get_ref().from_revision;
        let database = self.database.clone();
        let stream = watch_stream(
            self.feed.clone(),
            from,
            move || async move { snapshot::read(&database).await.map_err(guard::store_api_error) },
            self.stopping.clone(),
            self.watch_options,
        )
        .await?;
        Ok(Response::new(stream))
    }
}

/// How many directory reads one ListTenantMembers page may take when a client caller's page
/// leaves out members at home elsewhere; past it the page is shorter, and the next starts after
/// what was read.
const DIRECTORY_ROUNDS: usize = 8;

/// The permission that also lets a person create a department (the "msp-panel" pack's MSP User
/// creates departments under the clients assigned to them, without `tenants.manage`). A pack
/// whose catalog lacks it ("msp-assets") leaves `tenants.manage` the only way.
const DEPARTMENTS_CREATE: &str = "departments.create";

impl TenancyApi {
    /// Creating a client (parent: the admin tenancy) needs `tenants.manage` there; creating a
    /// department (parent: a client or a department) needs `tenants.manage` or
    /// `departments.create` on the parent.
    async fn require_create(
        &self,
        caller: &tether_runtime::access::Caller,
        parent: &store::TenantRow,
        fresh: Option<&ConsistencyToken>,
    ) -> Result<(), Status> {
        let Some(user) = caller.user() else { return Ok(()) };
        let authz = &self.deps.authorizer;
        if authz.check(&user.user_id, "tenants.manage", &parent.id, fresh).await? {
            return Ok(());
        }
        let denied = || reject(Rejection::new(ErrorReason::PermissionDenied, "tenants.manage is required here"));
        if parent.kind == TenantKind::Admin {
            return Err(denied());
        }
        match authz.check(&user.user_id, DEPARTMENTS_CREATE, &parent.id, fresh).await {
            Ok(true) => Ok(()),
            Ok(false) => Err(reject(Rejection::new(
                ErrorReason::PermissionDenied,
                "tenants.manage or departments.create is required here",
            ))),
            // Not in this pack's catalog: the answer is tenants.manage's.
            Err(e) if e.reason == ErrorReason::PermissionNotFound => Err(denied()),
            Err(e) => Err(e.into()),
        }
    }

    async fn change_status<T>(
        &self,
        request: &Request<T>,
        raw_id: &str,
        status: TenantStatus,
        note: &str,
        fresh: Option<ConsistencyToken>,
    ) -> Result<(pb::Tenant, u64), Status> {
        let caller = self.caller(request).await?;
        let tenant_id = id("tenant_id", raw_id)?;
        let tenant = self.see(&caller, &tenant_id).await?;
        if tenant.kind == TenantKind::Admin {
            return Err(reject(Rejection::new(
                ErrorReason::AdminTenancyImmutable,
                "the admin tenancy cannot be suspended, archived or reactivated",
            )));
        }
        if status == TenantStatus::Active
            && let Some(parent_id) = &tenant.parent_id
            && self.tenant(parent_id).await?.status != TenantStatus::Active
        {
            return Err(reject(Rejection::new(ErrorReason::TenantNotActive, "the parent tenant is not active")));
        }
        let manager = tenant.parent_id.as_deref().unwrap_or(&tenant.id);
        self.require_at(&caller, "tenants.manage", manager, fresh.as_ref()).await?;
        let ctx = AuditContext::from_caller(&caller);
        let (tenant, revision) =
            tenants::set_status(&self.database, &ctx, &tenant_id, status, note).await.map_err(store_error)?;
        Ok((cv::tenant(&tenant), revision))
    }

    async fn require_assignment_rights(
        &self,
        caller: &tether_runtime::access::Caller,
        technician: &str,
        fresh: Option<&ConsistencyToken>,
    ) -> Result<(), Status> {
        let admin = self.admin().await?;
        self.see(caller, &admin.id).await?;
        self.require_at(caller, "users.manage", &admin.id, fresh).await?;
        if caller.user().is_some() {
            self.user_info(caller, technician).await.map_err(|s| guard::on_field(s, "technician_user_id"))?;
        }
        Ok(())
    }
}
