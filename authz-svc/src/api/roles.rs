//! The permission catalog, roles (built-in and custom) and the active role pack.

use tether_proto::{authz::v1 as pb, common::v1::ErrorReason};
use tether_runtime::db::timestamp;
use tether_runtime::{
    access::{Caller, caller},
    db::now_micros,
    error::ApiError,
};
use tonic::{Request, Response};

use super::{Authz, Reply, convert as cv, page, person_id, role_rule, write_error};
use crate::{
    domain::{
        index::Index,
        policy::{MAX_PERMISSIONS, RoleDef},
        role_rules::{check_role_rank, offered_to},
        valid_lower_name,
    },
    events::audit::{self, Change},
    store,
};

/// A person defines roles only from permissions they hold everywhere (a custom role can be
/// granted in any tenant): no escalation by creating a role and granting it.
fn require_held(index: &Index, who: &Caller, permissions: u128) -> Result<(), ApiError> {
    match person_id(who) {
        None if who.user().is_none() => Ok(()),
        Some(u) if index.holds_all_everywhere(&u, permissions) => Ok(()),
        _ => Err(ApiError::new(
            ErrorReason::PermissionDenied,
            "a role may hold only permissions the caller holds in every tenant",
        )),
    }
}

impl Authz {
    pub(super) async fn list_permissions(
        &self,
        request: Request<pb::ListPermissionsRequest>,
    ) -> Reply<pb::ListPermissionsResponse> {
        let (metadata, _, r) = request.into_parts();
        // The catalog (no people): any identified caller.
        self.asker(&metadata).await?;
        cv::text("category", &r.category, 100)?;
        let items: Vec<pb::Permission> = {
            let index = self.state.read();
            let mut list: Vec<pb::Permission> = index
                .policy
                .permissions
                .iter()
                .filter(|p| r.category.is_empty() || p.category == r.category)
                .map(cv::permission)
                .collect();
            list.sort_by(|a, b| a.name.cmp(&b.name));
            list
        };
        let (permissions, next_page_token) =
            page::offset(items, r.page_size, &r.page_token, &format!("perm|{}", r.category))?;
        Ok(Response::new(pb::ListPermissionsResponse { permissions, next_page_token }))
    }

    pub(super) async fn list_roles(&self, request: Request<pb::ListRolesRequest>) -> Reply<pb::ListRolesResponse> {
        let (metadata, _, r) = request.into_parts();
        let grantable_in = cv::optional_uuid("grantable_in_tenant_id", &r.grantable_in_tenant_id)?;
        // Any identified caller; what one may grant is about that caller, so it needs one.
        let max_rank = match grantable_in {
            Some(t) => {
                let who = caller(&metadata, &*self.authenticator, &self.service_token).await?;
                Some(self.caller_rank(&who, Some(t)))
            }
            None => {
                self.asker(&metadata).await?;
                None
            }
        };
        let items: Vec<pb::Role> = {
            let index = self.state.read();
            index
                .roles()
                .into_iter()
                .filter(|role| !r.assignable_only || role.assignable)
                .filter(|role| max_rank.is_none_or(|m| offered_to(role, m)))
                .map(|role| cv::role(role, &index.policy))
                .collect()
        };
        let binding = format!("role|{}|{}", r.assignable_only, r.grantable_in_tenant_id);
        let (roles, next_page_token) = page::offset(items, r.page_size, &r.page_token, &binding)?;
        Ok(Response::new(pb::ListRolesResponse { roles, next_page_token }))
    }

    pub(super) async fn get_role(&self, request: Request<pb::GetRoleRequest>) -> Reply<pb::GetRoleResponse> {
        let (metadata, _, r) = request.into_parts();
        self.asker(&metadata).await?;
        cv::role_name("name", &r.name)?;
        let index = self.state.read();
        let role = index
            .role(&r.name)
            .map(|role| cv::role(role, &index.policy))
            .ok_or_else(|| ApiError::new(ErrorReason::RoleNotFound, format!("no role {:?}", r.name)))?;
        Ok(Response::new(pb::GetRoleResponse { role: Some(role) }))
    }

    pub(super) async fn create_role(&self, request: Request<pb::CreateRoleRequest>) -> Reply<pb::CreateRoleResponse> {
        let who = self.manager(request.metadata(), "permissions.manage", None).await?;
        let r = request.into_inner();
        if !valid_lower_name(&r.name) {
            return Err(ApiError::new(ErrorReason::InvalidFormat, "name must be 1-64 characters of [a-z0-9_]")
                .with_metadata("field", "name")
                .into());
        }
        if r.display_name.trim().is_empty() {
            return Err(ApiError::new(ErrorReason::FieldRequired, "display_name is required")
                .with_metadata("field", "display_name")
                .into());
        }
        cv::text("display_name", &r.display_name, 200)?;
        cv::text("description", &r.description, 2000)?;
        let scope = cv::scope_from(r.scope).ok_or_else(|| {
            ApiError::new(ErrorReason::FieldRequired, "scope is required").with_metadata("field", "scope")
        })?;
        let permissions = self.validate_role_permissions(&r.permissions)?;
        let owner_rank = {
            let index = self.state.read();
            if index.role(&r.name).is_some() {
                return Err(ApiError::new(ErrorReason::RoleExists, format!("role {:?} exists", r.name)).into());
            }
            if index.role_slots_full() {
                return Err(ApiError::new(ErrorReason::LimitReached, "no more roles can be held")
                    .with_metadata("limit", crate::domain::index::MAX_ROLE_SLOTS.to_string())
                    .into());
            }
            require_held(&index, &who, permissions)?;
            index.role_rank(&index.policy.owner_role).unwrap_or(i32::MAX)
        };
        check_role_rank(r.rank, None, self.caller_rank(&who, None), owner_rank).map_err(role_rule)?;
        if store::role_exists(&self.state.database, &r.name).await.map_err(ApiError::internal)? {
            return Err(ApiError::new(ErrorReason::RoleExists, format!("role {:?} exists", r.name)).into());
        }
        let now = now_micros();
        let role = RoleDef {
            name: r.name.clone(),
            display_name: r.display_name,
            description: r.description,
            permissions,
            scope,
            rank: r.rank,
            assignable: r.assignable,
            msp_staff_only: r.msp_staff_only,
            built_in: false,
            created_at_micros: now,
            updated_at_micros: now,
        };
        let event = audit::change_event(
            Some(&who),
            Change {
                action: "role.create",
                resource_type: "role",
                resource_id: role.name.clone(),
                tenant_id: String::new(),
                before: None,
                after: Some(self.role_json(&role)),
            },
        );
        let names = self.state.read().policy.names(permissions);
        let revision = store::put_role(&self.state.database, &role, names, self.limits.custom_roles, &[event])
            .await
            .map_err(write_error)?;
        self.after_write().await?;
        let reply = cv::role(&role, &self.state.read().policy);
        Ok(Response::new(pb::CreateRoleResponse {
            role: Some(reply),
            consistency_token: Some(cv::authz_token(revision)),
        }))
    }

    pub(super) async fn update_role(&self, request: Request<pb::UpdateRoleRequest>) -> Reply<pb::UpdateRoleResponse> {
        let who = self.manager(request.metadata(), "permissions.manage", None).await?;
        let r = request.into_inner();
        let (before, owner_rank) = {
            let index = self.state.read();
            let role = index
                .role(&r.name)
                .cloned()
                .ok_or_else(|| ApiError::new(ErrorReason::RoleNotFound, format!("no role {:?}", r.name)))?;
            (role, index.role_rank(&index.policy.owner_role).unwrap_or(i32::MAX))
        };
        if before.built_in {
            return Err(ApiError::new(ErrorReason::RoleBuiltIn, "built-in roles cannot be changed").into());
        }
        let mut role = before.clone();
        if let Some(d) = r.display_name {
            cv::text("display_name", &d, 200)?;
            role.display_name = d;
        }
        if let Some(d) = r.description {
            cv::text("description", &d, 2000)?;
            role.description = d;
        }
        if let Some(p) = &r.permissions {
            role.permissions = self.validate_role_permissions(&p.permissions)?;
        }
        if let Some(s) = r.scope {
            role.scope = cv::scope_from(s).ok_or_else(|| {
                ApiError::new(ErrorReason::ValueOutOfRange, "unknown scope").with_metadata("field", "scope")
            })?;
        }
        if let Some(rank) = r.rank {
            role.rank = rank;
        }
        if let Some(a) = r.assignable {
            role.assignable = a;
        }
        if let Some(m) = r.msp_staff_only {
            role.msp_staff_only = m;
        }
        require_held(&self.state.read(), &who, role.permissions)?;
        let caller_rank = self.caller_rank(&who, None);
        check_role_rank(role.rank, Some(before.rank), caller_rank, owner_rank).map_err(role_rule)?;
        role.updated_at_micros = now_micros();
        let event = audit::change_event(
            Some(&who),
            Change {
                action: "role.update",
                resource_type: "role",
                resource_id: role.name.clone(),
                tenant_id: String::new(),
                before: Some(self.role_json(&before)),
                after: Some(self.role_json(&role)),
            },
        );
        let names = self.state.read().policy.names(role.permissions);
        let revision = store::put_role(&self.state.database, &role, names, self.limits.custom_roles, &[event])
            .await
            .map_err(write_error)?;
        self.after_write().await?;
        let reply = cv::role(&role, &self.state.read().policy);
        Ok(Response::new(pb::UpdateRoleResponse {
            role: Some(reply),
            consistency_token: Some(cv::authz_token(revision)),
        }))
    }

    pub(super) async fn delete_role(&self, request: Request<pb::DeleteRoleRequest>) -> Reply<pb::DeleteRoleResponse> {
        let who = self.manager(request.metadata(), "permissions.manage", None).await?;
        let r = request.into_inner();
        let before = {
            let index = self.state.read();
            let role = index
                .role(&r.name)
                .cloned()
                .ok_or_else(|| ApiError::new(ErrorReason::RoleNotFound, format!("no role {:?}", r.name)))?;
            if role.built_in {
                return Err(ApiError::new(ErrorReason::RoleBuiltIn, "built-in roles cannot be deleted").into());
            }
            if index.role_in_use(&r.name) {
                return Err(ApiError::new(ErrorReason::RoleInUse, "the role is still held").into());
            }
            role
        };
        let event = audit::change_event(
            Some(&who),
            Change {
                action: "role.delete",
                resource_type: "role",
                resource_id: r.name.clone(),
                tenant_id: String::new(),
                before: Some(self.role_json(&before)),
                after: None,
            },
        );
        let revision = store::delete_role(&self.state.database, &r.name, &[event]).await.map_err(write_error)?;
        self.after_write().await?;
        Ok(Response::new(pb::DeleteRoleResponse { consistency_token: Some(cv::authz_token(revision)) }))
    }

    pub(super) async fn get_active_pack(
        &self,
        request: Request<pb::GetActivePackRequest>,
    ) -> Reply<pb::GetActivePackResponse> {
        self.asker(request.metadata()).await?;
        let index = self.state.read();
        let p = &index.policy;
        let loaded_at = p.roles.first().map_or(0, |r| r.created_at_micros);
        Ok(Response::new(pb::GetActivePackResponse {
            pack: Some(pb::RolePack {
                name: p.name.clone(),
                display_name: p.display_name.clone(),
                description: p.description.clone(),
                owner_role: p.owner_role.clone(),
                former_owner_role: p.former_owner_role.clone(),
                admin_roles: p.admin_roles.clone(),
                policy_digest: p.digest.clone(),
                loaded_at: Some(timestamp(loaded_at)),
                invite_permission: p.invite_permission.clone(),
            }),
        }))
    }

    fn role_json(&self, r: &RoleDef) -> serde_json::Value {
        let policy = &self.state.read().policy;
        serde_json::json!({
            "name": r.name, "display_name": r.display_name, "scope": r.scope.as_str(), "rank": r.rank,
            "assignable": r.assignable, "msp_staff_only": r.msp_staff_only, "permissions": policy.names(r.permissions),
        })
    }

    fn validate_role_permissions(&self, names: &[String]) -> Result<u128, ApiError> {
        if names.len() > MAX_PERMISSIONS {
            return Err(ApiError::new(ErrorReason::BatchTooLarge, "too many permissions")
                .with_metadata("limit", MAX_PERMISSIONS.to_string()));
        }
        for n in names {
            cv::permission_name("permissions", n)?;
        }
        self.state.read().policy.set_of(names.iter().map(String::as_str)).map_err(|unknown| {
            ApiError::new(ErrorReason::PermissionNotFound, format!("permission {unknown:?} is not in the catalog"))
        })
    }
}
