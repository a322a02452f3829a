//! What tenancy asks other services, behind traits so tests can put doubles in their place.
//!
//! identity-svc: does a user exist, is it active, is it MSP staff (`UserDirectory`, asked only
//! for calls made by people: service callers are trusted about user existence). authz-svc: the
//! active role pack and its roles (`RoleCatalog`), and the decisions (`Authorizer`, from the
//! runtime). audit-svc: where the audit relay delivers tenancy's audit events (`AuditSink`, from
//! the runtime).

use std::{collections::HashMap, sync::Arc};

use tether_proto::{
    authz::v1::{GetActivePackRequest, GetRoleRequest, authz_service_client::AuthzServiceClient},
    common::v1::ErrorReason,
    identity::v1::{BatchGetUsersRequest, UserStatus, identity_service_client::IdentityServiceClient},
};
use tether_runtime::{
    ApiError,
    access::{Authenticator, Authorizer, ServiceToken},
    client::TracedChannel,
    events::AuditSink,
};
use tonic::Code;

use crate::config::SERVICE;

/// A user as tenancy needs to know it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserInfo {
    pub user_id: String,
    pub active: bool,
    pub is_msp_staff: bool,
    /// The user's home (identity's primary tenant); empty for MSP staff.
    pub home_tenant_id: String,
}

#[tonic::async_trait]
pub trait UserDirectory: Send + Sync + 'static {
    /// The users that exist (deleted ones are absent), by id.
    async fn users(&self, user_ids: &[String]) -> Result<HashMap<String, UserInfo>, ApiError>;
}

/// A role of the active pack.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoleInfo {
    pub name: String,
    pub assignable: bool,
    pub msp_staff_only: bool,
}

/// The active pack's special roles.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PackInfo {
    pub owner_role: String,
    pub former_owner_role: String,
    /// Roles that count as administrators for the last-administrator rule.
    pub admin_roles: Vec<String>,
}

impl PackInfo {
    pub fn is_admin_role(&self, role: &str) -> bool {
        role == self.owner_role || self.admin_roles.iter().any(|r| r == role)
    }
}

#[tonic::async_trait]
pub trait RoleCatalog: Send + Sync + 'static {
    async fn active_pack(&self) -> Result<PackInfo, ApiError>;
    /// `None` when the catalog has no such role.
    async fn role(&self, name: &str) -> Result<Option<RoleInfo>, ApiError>;
}

/// Everything tenancy talks to.
#[derive(Clone)]
pub struct Deps {
    pub authenticator: Arc<dyn Authenticator>,
    pub authorizer: Arc<dyn Authorizer>,
    pub users: Arc<dyn UserDirectory>,
    pub roles: Arc<dyn RoleCatalog>,
    /// audit-svc's `Ingest`, for the audit relay.
    pub audit: Arc<dyn AuditSink>,
    pub service_token: ServiceToken,
}

fn downstream(service: &str, status: tonic::Status) -> ApiError {
    ApiError::new(ErrorReason::Unavailable, format!("{service} is unavailable: {}", status.message()))
}

/// [`UserDirectory`] backed by identity-svc's `BatchGetUsers`.
pub struct GrpcUserDirectory {
    client: IdentityServiceClient<TracedChannel>,
    token: ServiceToken,
}

impl GrpcUserDirectory {
    pub fn new(channel: TracedChannel, token: ServiceToken) -> Arc<Self> {
        Arc::new(Self { client: IdentityServiceClient::new(channel), token })
    }
}

#[tonic::async_trait]
impl UserDirectory for GrpcUserDirectory {
    async fn users(&self, user_ids: &[String]) -> Result<HashMap<String, UserInfo>, ApiError> {
        let mut found = HashMap::new();
        for chunk in user_ids.chunks(500) {
            let mut request = tonic::Request::new(BatchGetUsersRequest { user_ids: chunk.to_vec() });
            self.token.attach(SERVICE, &mut request);
            let reply =
                self.client.clone().batch_get_users(request).await.map_err(|s| downstream("identity-svc", s))?;
            for user in reply.into_inner().users.into_iter().filter(|u| !u.deleted) {
                let active = user.status() == UserStatus::Active;
                found.insert(
                    user.user_id.clone(),
                    UserInfo {
                        user_id: user.user_id,
                        active,
                        is_msp_staff: user.is_msp_staff,
                        home_tenant_id: user.primary_tenant_id,
                    },
                );
            }
        }
        Ok(found)
    }
}

/// [`RoleCatalog`] backed by authz-svc.
pub struct GrpcRoleCatalog {
    client: AuthzServiceClient<TracedChannel>,
    token: ServiceToken,
}

impl GrpcRoleCatalog {
    pub fn new(channel: TracedChannel, token: ServiceToken) -> Arc<Self> {
        Arc::new(Self { client: AuthzServiceClient::new(channel), token })
    }
}

#[tonic::async_trait]
impl RoleCatalog for GrpcRoleCatalog {
    async fn active_pack(&self) -> Result<PackInfo, ApiError> {
        let mut request = tonic::Request::new(GetActivePackRequest {});
        self.token.attach(SERVICE, &mut request);
        let reply = self.client.clone().get_active_pack(request).await.map_err(|s| downstream("authz-svc", s))?;
        let pack = reply.into_inner().pack.unwrap_or_default();
        Ok(PackInfo {
            owner_role: pack.owner_role,
            former_owner_role: pack.former_owner_role,
            admin_roles: pack.admin_roles,
        })
    }

    async fn role(&self, name: &str) -> Result<Option<RoleInfo>, ApiError> {
        let mut request = tonic::Request::new(GetRoleRequest { name: name.to_owned() });
        self.token.attach(SERVICE, &mut request);
        match self.client.clone().get_role(request).await {
            Ok(reply) => Ok(reply.into_inner().role.map(|r| RoleInfo {
                name: r.name,
                assignable: r.assignable,
                msp_staff_only: r.msp_staff_only,
            })),
            Err(status) if status.code() == Code::NotFound => Ok(None),
            Err(status) => Err(downstream("authz-svc", status)),
        }
    }
}
