//! The tenant tree's RPCs: the admin tenancy, create, get, list, subtree, rename, suspend,
//! reactivate, archive and move.

use tether_proto::{
    common::v1::{ConsistencyToken, ErrorReason},
    tenancy::v1 as pb,
};
use tether_runtime::ApiError;
use tonic::{Request, Response, Status};

use super::{Tenancy, bounded, field_error, guard, id, next_token, reject, store_error, token};
use crate::{
    domain::{PageRequest, Rejection, TenantKind, TenantName, TenantSlug, TenantStatus, parse_optional_id},
    events::{AuditContext, convert as cv},
    store::{self, tenants},
};

/// The permission that also lets a person create a department (the "msp-panel" pack's MSP User
/// creates departments under the clients assigned to them, without `tenants.manage`). A pack
/// whose catalog lacks it ("msp-assets") leaves `tenants.manage` the only way.
const DEPARTMENTS_CREATE: &str = "departments.create";

fn status_filter(raw: i32, field: &str) -> Result<Vec<TenantStatus>, Status> {
    match pb::TenantStatus::try_from(raw) {
        Ok(pb::TenantStatus::Unspecified) => Ok(vec![TenantStatus::Active, TenantStatus::Suspended]),
        Ok(pb::TenantStatus::Active) => Ok(vec![TenantStatus::Active]),
        Ok(pb::TenantStatus::Suspended) => Ok(vec![TenantStatus::Suspended]),
        Ok(pb::TenantStatus::Archived) => Ok(vec![TenantStatus::Archived]),
        Err(_) => Err(reject(Rejection::new(ErrorReason::ValueOutOfRange, "unknown tenant status").on(field))),
    }
}

impl Tenancy {
    pub(super) async fn get_admin_tenancy(
        &self,
        request: Request<pb::GetAdminTenancyRequest>,
    ) -> Result<Response<pb::GetAdminTenancyResponse>, Status> {
        let caller = self.caller(&request).await?;
        let admin = self.admin().await?;
        self.see(&caller, &admin.id).await?;
        Ok(Response::new(pb::GetAdminTenancyResponse { tenant: Some(cv::tenant(&admin)) }))
    }

    pub(super) async fn create_tenant(
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

    pub(super) async fn get_tenant(
        &self,
        request: Request<pb::GetTenantRequest>,
    ) -> Result<Response<pb::GetTenantResponse>, Status> {
        let caller = self.caller(&request).await?;
        let tenant_id = id("tenant_id", &request.get_ref().tenant_id)?;
        let tenant = self.see(&caller, &tenant_id).await?;
        Ok(Response::new(pb::GetTenantResponse { tenant: Some(cv::tenant(&tenant)) }))
    }

    pub(super) async fn list_tenants(
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

    pub(super) async fn get_subtree(
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

    pub(super) async fn rename_tenant(
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

    pub(super) async fn suspend_tenant(
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

    pub(super) async fn reactivate_tenant(
        &self,
        request: Request<pb::ReactivateTenantRequest>,
    ) -> Result<Response<pb::ReactivateTenantResponse>, Status> {
        let tenant_id = request.get_ref().tenant_id.clone();
        let fresh = request.get_ref().at_least_as_fresh.clone();
        let (tenant, revision) = self.change_status(&request, &tenant_id, TenantStatus::Active, "", fresh).await?;
        Ok(Response::new(pb::ReactivateTenantResponse { tenant: Some(tenant), consistency_token: token(revision) }))
    }

    pub(super) async fn archive_tenant(
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

    pub(super) async fn move_tenant(
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
}
