//! Permission overrides: set, remove and list grants and denials of one permission for one user.

use tether_proto::{authz::v1 as pb, common::v1::ErrorReason};
use tether_runtime::{db::now_micros, error::ApiError};
use tonic::{Request, Response};

use super::{Authz, Reply, change_denial, convert as cv, hides_user, page, person_id, sees_staff, write_error};
use crate::{
    domain::index::{ChangeDenial, OverrideRecord},
    events::audit::{self, Change},
    store,
};

impl Authz {
    pub(super) async fn set_override(
        &self,
        request: Request<pb::SetOverrideRequest>,
    ) -> Reply<pb::SetOverrideResponse> {
        let metadata = request.metadata().clone();
        let r = request.into_inner();
        let user = cv::uuid("user_id", &r.user_id)?;
        let tenant = cv::optional_uuid("tenant_id", &r.tenant_id)?;
        cv::permission_name("permission", &r.permission)?;
        cv::text("note", &r.note, 500)?;
        let deny = match pb::OverrideEffect::try_from(r.effect) {
            Ok(pb::OverrideEffect::Grant) => false,
            Ok(pb::OverrideEffect::Deny) => true,
            _ => {
                return Err(ApiError::new(ErrorReason::FieldRequired, "effect is required")
                    .with_metadata("field", "effect")
                    .into());
            }
        };
        let who = self.manager(&metadata, "permissions.manage", tenant).await?;
        let before = {
            let index = self.state.read();
            if index.policy.permission_bit(&r.permission).is_none() {
                return Err(ApiError::new(ErrorReason::PermissionNotFound, "no such permission").into());
            }
            if !index.user_known(&user) || hides_user(&index, &who, &user) {
                return Err(ApiError::new(ErrorReason::UserNotFound, "no such user").into());
            }
            if let Some(t) = tenant
                && !index.tenant_known(&t)
            {
                return Err(ApiError::new(ErrorReason::TenantNotFound, "no such tenant").into());
            }
            // The delegation rules apply to the target (a person: not themselves, no hidden MSP
            // staff, nobody ranked above them) and a grant only of what they hold there.
            if who.user().is_some() {
                let actor = person_id(&who).ok_or_else(|| change_denial(ChangeDenial::NotHeld))?;
                let bit = index.policy.permission_bit(&r.permission).unwrap_or_default();
                index.check_override_change(&actor, &user, tenant.as_ref(), bit, !deny).map_err(change_denial)?;
            }
            index
                .overrides()
                .iter()
                .find(|o| o.user == user && o.permission == r.permission && o.tenant == tenant)
                .cloned()
        };
        let record = OverrideRecord {
            user,
            permission: r.permission.clone(),
            tenant,
            deny,
            note: r.note,
            created_by: who.user().map(|p| p.user_id.clone()).unwrap_or_default(),
            created_at_micros: now_micros(),
        };
        let json = |o: &OverrideRecord| serde_json::json!({"user_id": o.user.to_string(), "permission": o.permission, "tenant_id": o.tenant.map(|t| t.to_string()).unwrap_or_default(), "effect": if o.deny {"deny"} else {"grant"}, "note": o.note});
        let event = audit::change_event(
            Some(&who),
            Change {
                action: "override.set",
                resource_type: "override",
                resource_id: format!("{}/{}", user, r.permission),
                tenant_id: tenant.map(|t| t.to_string()).unwrap_or_default(),
                before: before.as_ref().map(json),
                after: Some(json(&record)),
            },
        );
        let revision = store::set_override(&self.state.database, &record, self.limits.overrides_per_tenant, &[event])
            .await
            .map_err(write_error)?;
        self.after_write().await?;
        Ok(Response::new(pb::SetOverrideResponse {
            permission_override: Some(cv::override_msg(&record)),
            consistency_token: Some(cv::authz_token(revision)),
        }))
    }

    pub(super) async fn remove_override(
        &self,
        request: Request<pb::RemoveOverrideRequest>,
    ) -> Reply<pb::RemoveOverrideResponse> {
        let metadata = request.metadata().clone();
        let r = request.into_inner();
        let user = cv::uuid("user_id", &r.user_id)?;
        let tenant = cv::optional_uuid("tenant_id", &r.tenant_id)?;
        cv::permission_name("permission", &r.permission)?;
        let who = self.manager(&metadata, "permissions.manage", tenant).await?;
        let before = {
            let index = self.state.read();
            // The same rules as setting one; a hidden target is as unknown as any (no override).
            if who.user().is_some() {
                let not_found = || ApiError::new(ErrorReason::OverrideNotFound, "no such override");
                let actor = person_id(&who).ok_or_else(|| change_denial(ChangeDenial::NotHeld))?;
                let bit = index.policy.permission_bit(&r.permission).ok_or_else(not_found)?;
                index.check_override_change(&actor, &user, tenant.as_ref(), bit, false).map_err(|d| match d {
                    ChangeDenial::TargetHidden => not_found(),
                    d => change_denial(d),
                })?;
            }
            index
                .overrides()
                .iter()
                .find(|o| o.user == user && o.permission == r.permission && o.tenant == tenant)
                .map(cv::override_msg)
        };
        let event = audit::change_event(
            Some(&who),
            Change {
                action: "override.remove",
                resource_type: "override",
                resource_id: format!("{}/{}", user, r.permission),
                tenant_id: tenant.map(|t| t.to_string()).unwrap_or_default(),
                before: before.map(|o| serde_json::json!({"user_id": o.user_id, "permission": o.permission, "tenant_id": o.tenant_id, "effect": o.effect})),
                after: None,
            },
        );
        let revision = store::remove_override(&self.state.database, user, &r.permission, tenant, &[event])
            .await
            .map_err(ApiError::internal)?
            .ok_or_else(|| ApiError::new(ErrorReason::OverrideNotFound, "no such override"))?;
        self.after_write().await?;
        Ok(Response::new(pb::RemoveOverrideResponse { consistency_token: Some(cv::authz_token(revision)) }))
    }

    pub(super) async fn list_overrides(
        &self,
        request: Request<pb::ListOverridesRequest>,
    ) -> Reply<pb::ListOverridesResponse> {
        let metadata = request.metadata().clone();
        let r = request.into_inner();
        let user = cv::optional_uuid("user_id", &r.user_id)?;
        let tenant = cv::optional_uuid("tenant_id", &r.tenant_id)?;
        let who = self.manager(&metadata, "permissions.manage", tenant).await?;
        let index = self.state.read();
        // People who are not MSP staff see neither MSP staff nor the global overrides of users
        // outside their own client.
        let hide = !sees_staff(&index, &who);
        let mut items: Vec<pb::PermissionOverride> = index
            .overrides()
            .iter()
            .filter(|o| user.is_none_or(|u| o.user == u))
            .filter(|o| match tenant {
                None => true,
                Some(t) => {
                    o.tenant == Some(t)
                        || (r.include_global && o.tenant.is_none() && (!hide || index.member_of_client(&o.user, &t)))
                }
            })
            .filter(|o| !hides_user(&index, &who, &o.user))
            .map(cv::override_msg)
            .collect();
        drop(index);
        items.sort_by(|a, b| (&a.user_id, &a.permission, &a.tenant_id).cmp(&(&b.user_id, &b.permission, &b.tenant_id)));
        let binding = format!("ovr|{}|{}|{}", r.user_id, r.tenant_id, r.include_global);
        let (permission_overrides, next_page_token) = page::offset(items, r.page_size, &r.page_token, &binding)?;
        Ok(Response::new(pb::ListOverridesResponse { permission_overrides, next_page_token }))
    }
}
