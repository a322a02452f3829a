//! What audit asks other services at request time, behind traits so tests can use doubles:
//! where a user holds a permission (authz-svc `LookupTenants`) and which tenants lie below one
//! (tenancy-svc `GetSubtree`), and the admin tenancy's id (tenancy-svc `GetAdminTenancy`). Every
//! call is made on audit's own account (service token).

use std::collections::BTreeSet;

use tether_proto::{
    authz::v1::{LookupTenantsRequest, authz_service_client::AuthzServiceClient},
    tenancy::v1::{GetAdminTenancyRequest, GetSubtreeRequest, tenancy_service_client::TenancyServiceClient},
};
use tether_runtime::{ApiError, access::ServiceToken, client::TracedChannel};

use crate::config::SERVICE;

/// Pages followed at most (500 tenants each): a reach larger than this is cut, never widened.
const MAX_PAGES: usize = 40;

#[tonic::async_trait]
pub trait Directory: Send + Sync + 'static {
    /// The tenants where `user_id` holds `permission`.
    async fn tenants_with(&self, user_id: &str, permission: &str) -> Result<BTreeSet<String>, ApiError>;
    /// `tenant_id` and every tenant below it; empty for an unknown tenant.
    async fn subtree(&self, tenant_id: &str) -> Result<BTreeSet<String>, ApiError>;
    /// The admin tenancy's id: the home of MSP staff, where their `audit.view` counts.
    async fn admin_tenancy(&self) -> Result<String, ApiError>;
}

pub struct GrpcDirectory {
    authz: AuthzServiceClient<TracedChannel>,
    tenancy: TenancyServiceClient<TracedChannel>,
    service_token: ServiceToken,
    /// Created once by tenancy and never changed, so asked once.
    admin_tenancy: tokio::sync::OnceCell<String>,
}

impl GrpcDirectory {
    pub fn new(authz: TracedChannel, tenancy: TracedChannel, service_token: ServiceToken) -> Self {
        Self {
            authz: AuthzServiceClient::new(authz),
            tenancy: TenancyServiceClient::new(tenancy),
            service_token,
            admin_tenancy: tokio::sync::OnceCell::new(),
        }
    }

    fn request<T>(&self, message: T) -> tonic::Request<T> {
        let mut request = tonic::Request::new(message);
        self.service_token.attach(SERVICE, &mut request);
        request
    }
}

#[tonic::async_trait]
impl Directory for GrpcDirectory {
    async fn tenants_with(&self, user_id: &str, permission: &str) -> Result<BTreeSet<String>, ApiError> {
        let mut out = BTreeSet::new();
        let mut page_token = String::new();
        for _ in 0..MAX_PAGES {
            let request = LookupTenantsRequest {
                page_size: 500,
                page_token: page_token.clone(),
                subject_user_id: user_id.to_owned(),
                permission: permission.to_owned(),
                at_least_as_fresh: None,
            };
            let reply = match self.authz.clone().lookup_tenants(self.request(request)).await {
                Ok(reply) => reply.into_inner(),
                // A user authz does not know yet holds nothing anywhere.
                Err(status) if status.code() == tonic::Code::NotFound => return Ok(out),
                Err(status) => return Err(ApiError::from_downstream("authz-svc", &status)),
            };
            out.extend(reply.tenant_ids);
            if reply.next_page_token.is_empty() {
                break;
            }
            page_token = reply.next_page_token;
        }
        Ok(out)
    }

    async fn subtree(&self, tenant_id: &str) -> Result<BTreeSet<String>, ApiError> {
        let mut out = BTreeSet::new();
        let mut page_token = String::new();
        for _ in 0..MAX_PAGES {
            let request = GetSubtreeRequest {
                page_size: 500,
                page_token: page_token.clone(),
                tenant_id: tenant_id.to_owned(),
                max_depth: 0,
                include_archived: true,
            };
            let reply = match self.tenancy.clone().get_subtree(self.request(request)).await {
                Ok(reply) => reply.into_inner(),
                Err(status) if status.code() == tonic::Code::NotFound => return Ok(out),
                Err(status) => return Err(ApiError::from_downstream("tenancy-svc", &status)),
            };
            out.extend(reply.tenants.into_iter().map(|t| t.tenant_id));
            if reply.next_page_token.is_empty() {
                break;
            }
            page_token = reply.next_page_token;
        }
        Ok(out)
    }

    async fn admin_tenancy(&self) -> Result<String, ApiError> {
        let id = self
            .admin_tenancy
            .get_or_try_init(|| async {
                let reply = self
                    .tenancy
                    .clone()
                    .get_admin_tenancy(self.request(GetAdminTenancyRequest {}))
                    .await
                    .map_err(|status| ApiError::from_downstream("tenancy-svc", &status))?;
                Ok::<_, ApiError>(reply.into_inner().tenant.map(|t| t.tenant_id).unwrap_or_default())
            })
            .await?;
        Ok(id.clone())
    }
}
