//! A product's resource tree: register, remove and list resources.

use tether_proto::{authz::v1 as pb, common::v1::ErrorReason};
use tether_runtime::{db::now_micros, error::ApiError};
use tonic::{Request, Response};

use super::{Authz, Reply, convert as cv, page, seen_tenant, write_error};
use crate::{
    domain::{
        index::ResourceRecord,
        resource_tree::{MAX_RESOURCE_DEPTH, TreeRuleError, check_placement, check_removal},
        valid_lower_name,
    },
    events::audit::{self, Change},
    store,
};

/// A refused placement or removal, as the API answers it.
fn tree_rule(e: TreeRuleError) -> ApiError {
    match e {
        TreeRuleError::Cycle => ApiError::new(ErrorReason::TreeCycle, "a resource cannot move under itself"),
        TreeRuleError::TooDeep => ApiError::new(ErrorReason::TreeTooDeep, "the resource tree is too deep")
            .with_metadata("limit", MAX_RESOURCE_DEPTH.to_string()),
        TreeRuleError::HasChildren => ApiError::new(ErrorReason::ResourceHasChildren, "the resource has children"),
    }
}

impl Authz {
    pub(super) async fn register_resource(
        &self,
        request: Request<pb::RegisterResourceRequest>,
    ) -> Reply<pb::RegisterResourceResponse> {
        let metadata = request.metadata().clone();
        let r = request.into_inner();
        let tenant = cv::uuid("tenant_id", &r.tenant_id)?;
        let id = cv::resource_id("resource_id", &r.resource_id)?;
        if !valid_lower_name(&r.resource_type) {
            return Err(ApiError::new(
                ErrorReason::InvalidFormat,
                "resource_type must be 1-64 characters of [a-z0-9_]",
            )
            .with_metadata("field", "resource_type")
            .into());
        }
        let parent = cv::optional_resource("parent_resource_id", &r.parent_resource_id)?;
        cv::text("display_name", &r.display_name, 200)?;
        let who = self.manager(&metadata, "settings.manage", Some(tenant)).await?;
        let (before, record) = {
            let index = self.state.read();
            if !index.tenant_known(&tenant) {
                return Err(ApiError::new(ErrorReason::TenantNotFound, "no such tenant").into());
            }
            if let Some(p) = &parent {
                if index.resource(&tenant, p).is_none() {
                    return Err(ApiError::new(ErrorReason::ResourceNotFound, "no such parent resource")
                        .with_metadata("field", "parent_resource_id")
                        .into());
                }
                let (under, depth) = (index.resource_is_under(&tenant, p, &id), index.resource_depth(&tenant, p));
                check_placement(&id, p, under, depth).map_err(tree_rule)?;
            }
            let before = index.resource(&tenant, &id).cloned();
            let now = now_micros();
            let record = ResourceRecord {
                tenant,
                resource_id: id.clone(),
                resource_type: r.resource_type.clone(),
                parent: parent.clone().unwrap_or_default(),
                display_name: r.display_name.clone(),
                created_at_micros: before.as_ref().map_or(now, |b| b.created_at_micros),
                updated_at_micros: now,
            };
            (before, record)
        };
        let json = |r: &ResourceRecord| serde_json::json!({"resource_id": r.resource_id, "resource_type": r.resource_type, "parent_resource_id": r.parent, "display_name": r.display_name});
        let event = audit::change_event(
            Some(&who),
            Change {
                action: if before.is_some() { "resource.update" } else { "resource.register" },
                resource_type: "resource",
                resource_id: id,
                tenant_id: tenant.to_string(),
                before: before.as_ref().map(json),
                after: Some(json(&record)),
            },
        );
        let revision = store::put_resource(&self.state.database, &record, self.limits.resources_per_tenant, &[event])
            .await
            .map_err(write_error)?;
        self.after_write().await?;
        Ok(Response::new(pb::RegisterResourceResponse {
            resource: Some(cv::resource(&record)),
            consistency_token: Some(cv::authz_token(revision)),
        }))
    }

    pub(super) async fn remove_resource(
        &self,
        request: Request<pb::RemoveResourceRequest>,
    ) -> Reply<pb::RemoveResourceResponse> {
        let metadata = request.metadata().clone();
        let r = request.into_inner();
        let tenant = cv::uuid("tenant_id", &r.tenant_id)?;
        let id = cv::resource_id("resource_id", &r.resource_id)?;
        let who = self.manager(&metadata, "settings.manage", Some(tenant)).await?;
        let removed: Vec<String> = {
            let index = self.state.read();
            if index.resource(&tenant, &id).is_none() {
                return Err(ApiError::new(ErrorReason::ResourceNotFound, "no such resource").into());
            }
            let all: Vec<String> = index
                .resources()
                .filter(|n| n.tenant == tenant && index.resource_is_under(&tenant, &n.resource_id, &id))
                .map(|n| n.resource_id.clone())
                .collect();
            check_removal(all.len(), r.cascade).map_err(tree_rule)?;
            all
        };
        let event = audit::change_event(
            Some(&who),
            Change {
                action: "resource.remove",
                resource_type: "resource",
                resource_id: id,
                tenant_id: tenant.to_string(),
                before: Some(serde_json::json!({"removed": removed})),
                after: None,
            },
        );
        let count = removed.len() as i32;
        let revision =
            store::remove_resources(&self.state.database, tenant, removed, &[event]).await.map_err(write_error)?;
        self.after_write().await?;
        Ok(Response::new(pb::RemoveResourceResponse {
            resources_removed: count,
            consistency_token: Some(cv::authz_token(revision)),
        }))
    }

    pub(super) async fn list_resources(
        &self,
        request: Request<pb::ListResourcesRequest>,
    ) -> Reply<pb::ListResourcesResponse> {
        let (metadata, _, r) = request.into_parts();
        let tenant = cv::uuid("tenant_id", &r.tenant_id)?;
        // A product's resource tree (its nodes and names, no people): any identified caller,
        // in a tenant they may see.
        let who = self.asker(&metadata).await?;
        let index = self.state.read();
        let tenant = seen_tenant(&index, &who, tenant);
        let mut items: Vec<pb::Resource> = index
            .resources()
            .filter(|n| n.tenant == tenant)
            .filter(|n| r.parent_resource_id.as_ref().is_none_or(|p| &n.parent == p))
            .filter(|n| r.resource_type.is_empty() || n.resource_type == r.resource_type)
            .map(cv::resource)
            .collect();
        drop(index);
        items.sort_by(|a, b| a.resource_id.cmp(&b.resource_id));
        let binding = format!("res|{}|{:?}|{}", r.tenant_id, r.parent_resource_id, r.resource_type);
        let (resources, next_page_token) = page::offset(items, r.page_size, &r.page_token, &binding)?;
        Ok(Response::new(pb::ListResourcesResponse { resources, next_page_token }))
    }
}
