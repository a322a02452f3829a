//! Who is calling and what they may read (`domain::filter` rules 3 and 4).

use std::collections::BTreeSet;

use tether_proto::common::v1::ErrorReason;
use tether_runtime::{
    ApiError,
    access::{self, Actor, Caller},
};
use tonic::metadata::MetadataMap;

use super::Audit;
use crate::domain::filter::{Filter, Reach, Scope};

/// The permission every read needs.
pub const AUDIT_VIEW: &str = "audit.view";

impl Audit {
    /// The caller and the tenants they may read: a service reads everything; MSP staff with
    /// `audit.view` in the admin tenancy (their home) everything; anyone else the tenants where
    /// they hold it, and PERMISSION_DENIED where that is none.
    pub(super) async fn reader(&self, metadata: &MetadataMap) -> Result<(Caller, Scope), ApiError> {
        let caller = access::caller(metadata, self.authenticator.as_ref(), &self.service_token).await?;
        let scope = match &caller.actor {
            Actor::Service(_) => Scope::Everything,
            Actor::User(p) => {
                if p.is_msp_staff
                    && self
                        .authorizer
                        .check(&p.user_id, AUDIT_VIEW, &self.directory.admin_tenancy().await?, None)
                        .await?
                {
                    Scope::Everything
                } else {
                    let ids = self.directory.tenants_with(&p.user_id, AUDIT_VIEW).await?;
                    if ids.is_empty() {
                        return Err(ApiError::new(
                            ErrorReason::PermissionDenied,
                            "reading the audit trail needs audit.view",
                        ));
                    }
                    Scope::Tenants { ids, hide_msp_actors: !p.is_msp_staff }
                }
            }
        };
        Ok((caller, scope))
    }

    /// As [`Self::reader`], for what only the whole trail's readers may do (verification,
    /// checkpoints).
    pub(super) async fn auditor(&self, metadata: &MetadataMap) -> Result<Caller, ApiError> {
        match self.reader(metadata).await? {
            (caller, Scope::Everything) => Ok(caller),
            _ => Err(ApiError::new(
                ErrorReason::PermissionDenied,
                "verifying the audit trail needs audit.view in the admin tenancy",
            )),
        }
    }

    /// The rows `filter` may reach for a caller with `scope`.
    pub(super) async fn reach(&self, scope: &Scope, filter: &Filter) -> Result<Reach, ApiError> {
        let Some(tenant) = &filter.tenant_id else { return Ok(Reach::new(scope, None)) };
        if let Scope::Tenants { ids, .. } = scope
            && !ids.contains(tenant)
        {
            // Not theirs: answered as a tenant without events, and tenancy is not asked.
            return Ok(Reach::new(scope, Some(BTreeSet::new())));
        }
        let wanted = if filter.include_descendants {
            self.directory.subtree(tenant).await?
        } else {
            BTreeSet::from([tenant.clone()])
        };
        Ok(Reach::new(scope, Some(wanted)))
    }
}
