//! Technician assignment RPCs: set, assign, unassign and list.

use std::collections::HashSet;

use tether_proto::{
    common::v1::{ConsistencyToken, ErrorReason},
    tenancy::v1::{self as pb, list_technician_assignments_request::Selector},
};
use tonic::{Request, Response, Status};

use super::{Tenancy, guard, id, next_token, reject, store_error, token};
use crate::{
    domain::{PageRequest, Rejection},
    events::{AuditContext, convert as cv},
    store::assignments,
};

impl Tenancy {
    pub(super) async fn set_technician_assignments(
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

    pub(super) async fn assign_technician(
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

    pub(super) async fn unassign_technician(
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

    pub(super) async fn list_technician_assignments(
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
