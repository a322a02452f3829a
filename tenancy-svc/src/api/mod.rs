//! gRPC handlers: decode the request, check who may do it, call the store, encode the reply.
//!
//! One file per family of RPCs, each adding its handlers to [`Tenancy`]: `tenants` (the tree),
//! `memberships` (directories, a user's tenants, membership writes, SwitchTenant, the default
//! tenant), `assignments` (technician assignments), `ownership` (GetOwner, TransferOwnership) and
//! `watch`. `guard` holds who is calling, what they may see and do, and the mapping from
//! rejections to gRPC statuses. The service trait below only hands each call to its handler.

mod assignments;
mod call_classes;
pub use call_classes::SERVED;
mod guard;
mod memberships;
mod ownership;
mod tenants;
mod watch;

use tether_proto::{
    common::v1::{ConsistencyToken, ErrorReason, Revision, RevisionSource},
    tenancy::v1::{self as pb, tenancy_service_server::TenancyService},
};
use tether_runtime::{
    db::Database,
    events::{ChangeFeed, WatchOptions},
};
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};

use crate::{
    deps::Deps,
    domain::{PageToken, Rejection, parse_id},
};

pub use guard::{reject, store_error};

/// Everything the handlers share.
pub struct Tenancy {
    database: Database,
    deps: Deps,
    max_depth: usize,
    feed: ChangeFeed,
    stopping: CancellationToken,
    watch_options: WatchOptions,
}

pub struct TenancyApi {
    inner: Tenancy,
}

impl TenancyApi {
    pub fn new(database: Database, deps: Deps, max_depth: usize, stopping: CancellationToken) -> Self {
        let feed = ChangeFeed::new(database.clone());
        Self { inner: Tenancy { database, deps, max_depth, feed, stopping, watch_options: WatchOptions::default() } }
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

#[tonic::async_trait]
impl TenancyService for TenancyApi {
    async fn get_admin_tenancy(
        &self,
        request: Request<pb::GetAdminTenancyRequest>,
    ) -> Result<Response<pb::GetAdminTenancyResponse>, Status> {
        self.inner.get_admin_tenancy(request).await
    }

    async fn create_tenant(
        &self,
        request: Request<pb::CreateTenantRequest>,
    ) -> Result<Response<pb::CreateTenantResponse>, Status> {
        self.inner.create_tenant(request).await
    }

    async fn get_tenant(
        &self,
        request: Request<pb::GetTenantRequest>,
    ) -> Result<Response<pb::GetTenantResponse>, Status> {
        self.inner.get_tenant(request).await
    }

    async fn list_tenants(
        &self,
        request: Request<pb::ListTenantsRequest>,
    ) -> Result<Response<pb::ListTenantsResponse>, Status> {
        self.inner.list_tenants(request).await
    }

    async fn get_subtree(
        &self,
        request: Request<pb::GetSubtreeRequest>,
    ) -> Result<Response<pb::GetSubtreeResponse>, Status> {
        self.inner.get_subtree(request).await
    }

    async fn rename_tenant(
        &self,
        request: Request<pb::RenameTenantRequest>,
    ) -> Result<Response<pb::RenameTenantResponse>, Status> {
        self.inner.rename_tenant(request).await
    }

    async fn suspend_tenant(
        &self,
        request: Request<pb::SuspendTenantRequest>,
    ) -> Result<Response<pb::SuspendTenantResponse>, Status> {
        self.inner.suspend_tenant(request).await
    }

    async fn reactivate_tenant(
        &self,
        request: Request<pb::ReactivateTenantRequest>,
    ) -> Result<Response<pb::ReactivateTenantResponse>, Status> {
        self.inner.reactivate_tenant(request).await
    }

    async fn archive_tenant(
        &self,
        request: Request<pb::ArchiveTenantRequest>,
    ) -> Result<Response<pb::ArchiveTenantResponse>, Status> {
        self.inner.archive_tenant(request).await
    }

    async fn move_tenant(
        &self,
        request: Request<pb::MoveTenantRequest>,
    ) -> Result<Response<pb::MoveTenantResponse>, Status> {
        self.inner.move_tenant(request).await
    }

    async fn list_tenant_members(
        &self,
        request: Request<pb::ListTenantMembersRequest>,
    ) -> Result<Response<pb::ListTenantMembersResponse>, Status> {
        self.inner.list_tenant_members(request).await
    }

    async fn list_user_tenants(
        &self,
        request: Request<pb::ListUserTenantsRequest>,
    ) -> Result<Response<pb::ListUserTenantsResponse>, Status> {
        self.inner.list_user_tenants(request).await
    }

    async fn set_user_memberships(
        &self,
        request: Request<pb::SetUserMembershipsRequest>,
    ) -> Result<Response<pb::SetUserMembershipsResponse>, Status> {
        self.inner.set_user_memberships(request).await
    }

    async fn add_membership(
        &self,
        request: Request<pb::AddMembershipRequest>,
    ) -> Result<Response<pb::AddMembershipResponse>, Status> {
        self.inner.add_membership(request).await
    }

    async fn change_membership_role(
        &self,
        request: Request<pb::ChangeMembershipRoleRequest>,
    ) -> Result<Response<pb::ChangeMembershipRoleResponse>, Status> {
        self.inner.change_membership_role(request).await
    }

    async fn remove_membership(
        &self,
        request: Request<pb::RemoveMembershipRequest>,
    ) -> Result<Response<pb::RemoveMembershipResponse>, Status> {
        self.inner.remove_membership(request).await
    }

    async fn switch_tenant(
        &self,
        request: Request<pb::SwitchTenantRequest>,
    ) -> Result<Response<pb::SwitchTenantResponse>, Status> {
        self.inner.switch_tenant(request).await
    }

    async fn set_default_tenant(
        &self,
        request: Request<pb::SetDefaultTenantRequest>,
    ) -> Result<Response<pb::SetDefaultTenantResponse>, Status> {
        self.inner.set_default_tenant(request).await
    }

    async fn set_technician_assignments(
        &self,
        request: Request<pb::SetTechnicianAssignmentsRequest>,
    ) -> Result<Response<pb::SetTechnicianAssignmentsResponse>, Status> {
        self.inner.set_technician_assignments(request).await
    }

    async fn assign_technician(
        &self,
        request: Request<pb::AssignTechnicianRequest>,
    ) -> Result<Response<pb::AssignTechnicianResponse>, Status> {
        self.inner.assign_technician(request).await
    }

    async fn unassign_technician(
        &self,
        request: Request<pb::UnassignTechnicianRequest>,
    ) -> Result<Response<pb::UnassignTechnicianResponse>, Status> {
        self.inner.unassign_technician(request).await
    }

    async fn list_technician_assignments(
        &self,
        request: Request<pb::ListTechnicianAssignmentsRequest>,
    ) -> Result<Response<pb::ListTechnicianAssignmentsResponse>, Status> {
        self.inner.list_technician_assignments(request).await
    }

    async fn get_owner(&self, request: Request<pb::GetOwnerRequest>) -> Result<Response<pb::GetOwnerResponse>, Status> {
        self.inner.get_owner(request).await
    }

    async fn transfer_ownership(
        &self,
        request: Request<pb::TransferOwnershipRequest>,
    ) -> Result<Response<pb::TransferOwnershipResponse>, Status> {
        self.inner.transfer_ownership(request).await
    }

    async fn watch(
        &self,
        request: Request<pb::WatchRequest>,
    ) -> Result<Response<tonic::codegen::BoxStream<pb::WatchResponse>>, Status> {
        self.inner.watch(request).await
    }
}
