//! Resource grants: a role or permission on one resource (and its descendants) for one user.

use tether_proto::{authz::v1 as pb, common::v1::ErrorReason};
use tether_runtime::{db::now_micros, error::ApiError};
use tonic::{Request, Response};
use uuid::Uuid;

use super::{
    Authz, Reply, change_denial, convert as cv, hides_user, may_ask_about, page, person_id, role_rule, seen_tenant,
    seen_user, write_error,
};
use crate::{
    domain::{
        index::{ChangeDenial, GrantAccess, GrantRecord},
        role_rules::check_grantable,
    },
    events::audit::{self, Change},
    store,
};

impl Authz {
    pub(super) async fn grant_resource_access(
        &self,
        request: Request<pb::GrantResourceAccessRequest>,
    ) -> Reply<pb::GrantResourceAccessResponse> {
        let metadata = request.metadata().clone();
        let r = request.into_inner();
        let user = cv::uuid("user_id", &r.user_id)?;
        let tenant = cv::uuid("tenant_id", &r.tenant_id)?;
        let id = cv::resource_id("resource_id", &r.resource_id)?;
        let access = match r.access {
            Some(pb::grant_resource_access_request::Access::Role(role)) if !role.is_empty() => GrantAccess::Role(role),
            Some(pb::grant_resource_access_request::Access::Permission(p)) if !p.is_empty() => {
                cv::permission_name("permission", &p)?;
                GrantAccess::Permission(p)
            }
            _ => {
                return Err(ApiError::new(ErrorReason::FieldRequired, "a role or a permission is required")
                    .with_metadata("field", "access")
                    .into());
            }
        };
        let who = self.manager(&metadata, "users.manage", Some(tenant)).await?;
        {
            let index = self.state.read();
            if !index.user_known(&user) || hides_user(&index, &who, &user) {
                return Err(ApiError::new(ErrorReason::UserNotFound, "no such user").into());
            }
            if index.resource(&tenant, &id).is_none() {
                return Err(ApiError::new(ErrorReason::ResourceNotFound, "no such resource").into());
            }
            match &access {
                GrantAccess::Role(role) => {
                    let def = index
                        .role(role)
                        .ok_or_else(|| ApiError::new(ErrorReason::RoleNotFound, format!("no role {role:?}")))?;
                    check_grantable(def, &index.policy.owner_role).map_err(role_rule)?;
                }
                GrantAccess::Permission(p) => {
                    if index.policy.permission_bit(p).is_none() {
                        return Err(ApiError::new(ErrorReason::PermissionNotFound, "no such permission").into());
                    }
                }
            }
            // A person hands out only what they hold there, to someone they may see, and a
            // role under CheckRoleGrant's rules (MSP-staff-only roles, rank).
            if who.user().is_some() {
                let actor = person_id(&who).ok_or_else(|| change_denial(ChangeDenial::NotHeld))?;
                index.check_resource_grant(&actor, &user, &tenant, &id, &access).map_err(change_denial)?;
            }
        }
        let record = GrantRecord {
            grant_id: Uuid::now_v7(),
            user,
            tenant,
            resource_id: id.clone(),
            access,
            granted_by: who.user().map(|p| p.user_id.clone()).unwrap_or_default(),
            created_at_micros: now_micros(),
        };
        let after = cv::grant(&record);
        let event = audit::change_event(
            Some(&who),
            Change {
                action: "resource_grant.create",
                resource_type: "resource_grant",
                resource_id: record.grant_id.to_string(),
                tenant_id: tenant.to_string(),
                before: None,
                after: Some(
                    serde_json::json!({"user_id": after.user_id, "resource_id": after.resource_id, "access": format!("{:?}", after.access)}),
                ),
            },
        );
        let (revision, stored) =
            store::put_grant(&self.state.database, &record, self.limits.grants_per_tenant, &[event])
                .await
                .map_err(write_error)?;
        self.after_write().await?;
        Ok(Response::new(pb::GrantResourceAccessResponse {
            grant: Some(cv::grant(&stored)),
            consistency_token: Some(cv::authz_token(revision)),
        }))
    }

    pub(super) async fn revoke_resource_access(
        &self,
        request: Request<pb::RevokeResourceAccessRequest>,
    ) -> Reply<pb::RevokeResourceAccessResponse> {
        let metadata = request.metadata().clone();
        let r = request.into_inner();
        let grant_id = cv::uuid("grant_id", &r.grant_id)?;
        // A grant to someone the caller may not see, or in a tenant they may not see, is
        // treated as a random id.
        let asker = self.asker(&metadata).await?;
        let existing = {
            let index = self.state.read();
            index
                .grants()
                .iter()
                .find(|g| g.grant_id == grant_id)
                .filter(|g| !hides_user(&index, &asker, &g.user) && seen_tenant(&index, &asker, g.tenant) == g.tenant)
                .cloned()
        };
        let who = self.manager(&metadata, "users.manage", existing.as_ref().map(|g| g.tenant)).await?;
        let event = audit::change_event(
            Some(&who),
            Change {
                action: "resource_grant.revoke",
                resource_type: "resource_grant",
                resource_id: grant_id.to_string(),
                tenant_id: existing.as_ref().map(|g| g.tenant.to_string()).unwrap_or_default(),
                before: existing
                    .as_ref()
                    .map(|g| serde_json::json!({"user_id": g.user.to_string(), "resource_id": g.resource_id})),
                after: None,
            },
        );
        let revision = store::revoke_grant(&self.state.database, grant_id, &[event])
            .await
            .map_err(ApiError::internal)?
            .ok_or_else(|| ApiError::new(ErrorReason::ResourceGrantNotFound, "no such resource grant"))?;
        self.after_write().await?;
        Ok(Response::new(pb::RevokeResourceAccessResponse { consistency_token: Some(cv::authz_token(revision)) }))
    }

    pub(super) async fn list_resource_grants(
        &self,
        request: Request<pb::ListResourceGrantsRequest>,
    ) -> Reply<pb::ListResourceGrantsResponse> {
        let (metadata, _, r) = request.into_parts();
        let tenant = cv::uuid("tenant_id", &r.tenant_id)?;
        let user = cv::optional_uuid("user_id", &r.user_id)?;
        let resource = cv::optional_resource("resource_id", &r.resource_id)?;
        // Who may reach what is an access review: a person sees their own grants, or everyone's
        // in a tenant where they hold users.view.
        let subject = (!r.user_id.is_empty()).then_some(r.user_id.as_str());
        let who = self.asker(&metadata).await?;
        may_ask_about(&self.state.read(), &who, subject, Some(tenant))?;
        let index = self.state.read();
        let seen = seen_tenant(&index, &who, tenant);
        let user = user.map(|u| seen_user(&index, &who, u));
        let mut items: Vec<pb::ResourceGrant> = index
            .grants()
            .iter()
            .filter(|g| g.tenant == seen && user.is_none_or(|u| g.user == u))
            .filter(|g| !hides_user(&index, &who, &g.user))
            .filter(|g| match &resource {
                None => true,
                Some(res) if r.include_inherited => index.resource_is_under(&tenant, res, &g.resource_id),
                Some(res) => &g.resource_id == res,
            })
            .map(cv::grant)
            .collect();
        drop(index);
        items.sort_by(|a, b| a.grant_id.cmp(&b.grant_id));
        let binding = format!("grants|{}|{}|{}|{}", r.tenant_id, r.resource_id, r.include_inherited, r.user_id);
        let (grants, next_page_token) = page::offset(items, r.page_size, &r.page_token, &binding)?;
        Ok(Response::new(pb::ListResourceGrantsResponse { grants, next_page_token }))
    }
}
