//! Lookups: the tenants where a user holds a permission, the users who hold it in a tenant.

use tether_proto::authz::v1 as pb;
use tonic::{Request, Response};
use uuid::Uuid;

use super::{Authz, Reply, convert as cv, may_ask_about, page, person_id, seen_tenant, sees_staff};
use crate::domain::index::{NONE, Unresolved};

impl Authz {
    pub(super) async fn lookup_tenants(
        &self,
        request: Request<pb::LookupTenantsRequest>,
    ) -> Reply<pb::LookupTenantsResponse> {
        let (metadata, _, r) = request.into_parts();
        let user = cv::uuid("subject_user_id", &r.subject_user_id)?;
        cv::permission_name("permission", &r.permission)?;
        self.may_ask(&metadata, &r.subject_user_id, None).await?;
        let size = page::size(r.page_size)?;
        let binding = format!("lt|{}|{}", r.subject_user_id, r.permission);
        let after = page::cursor(&r.page_token, &binding)?;
        self.fresh_for_page(after.is_none(), r.at_least_as_fresh.as_ref()).await?;
        let index = self.state.read();
        let bit = index.policy.permission_bit(&r.permission).ok_or_else(|| cv::unresolved(Unresolved::Permission))?;
        let slot = index.known_user_slot(&user).ok_or_else(|| cv::unresolved(Unresolved::User))?;
        let (ids, more) = index.lookup_tenants(slot, bit, after, size);
        let next_page_token = match (more, ids.last()) {
            (true, Some(last)) => page::make_cursor(&binding, *last),
            _ => String::new(),
        };
        Ok(Response::new(pb::LookupTenantsResponse {
            tenant_ids: ids.into_iter().map(|t| t.to_string()).collect(),
            next_page_token,
            evaluated_at: Some(cv::token(index.revisions)),
        }))
    }

    pub(super) async fn lookup_subjects(
        &self,
        request: Request<pb::LookupSubjectsRequest>,
    ) -> Reply<pb::LookupSubjectsResponse> {
        let (metadata, _, r) = request.into_parts();
        let tenant = cv::uuid("tenant_id", &r.tenant_id)?;
        // An access review lists people: services, or a person with users.view in the tenant.
        let who = self.asker(&metadata).await?;
        may_ask_about(&self.state.read(), &who, None, Some(tenant))?;
        cv::permission_name("permission", &r.permission)?;
        let resource = cv::optional_resource("resource_id", &r.resource_id)?;
        let size = page::size(r.page_size)?;
        let binding = format!("ls|{}|{}|{}", r.permission, r.tenant_id, r.resource_id);
        let after = page::cursor(&r.page_token, &binding)?;
        self.fresh_for_page(after.is_none(), r.at_least_as_fresh.as_ref()).await?;
        let index = self.state.read();
        let bit = index.policy.permission_bit(&r.permission).ok_or_else(|| cv::unresolved(Unresolved::Permission))?;
        // Resolve the tenant and resource through any known user: only their ids matter here.
        let tenant = seen_tenant(&index, &who, tenant);
        if !index.tenant_known(&tenant) {
            return Err(cv::unresolved(Unresolved::Tenant).into());
        }
        let resource_slot = match &resource {
            None => NONE,
            Some(res) => {
                if index.resource(&tenant, res).is_none() {
                    return Err(cv::unresolved(Unresolved::Resource).into());
                }
                index.resource_slot(&tenant, res)
            }
        };
        let tenant_slot = index.tenant_slot_of(&tenant);
        // A review asked for by someone who is not MSP staff leaves out whom they may not see.
        let viewer = if sees_staff(&index, &who) { None } else { Some(person_id(&who).unwrap_or_else(Uuid::nil)) };
        let (found, more) = index.lookup_subjects(bit, tenant_slot, resource_slot, after, size, viewer.as_ref());
        let next_page_token = match (more, found.last()) {
            (true, Some((last, _))) => page::make_cursor(&binding, *last),
            _ => String::new(),
        };
        let subjects = found
            .into_iter()
            .map(|(id, d)| pb::SubjectAccess {
                user_id: id.to_string(),
                reason: cv::reason(d.reason) as i32,
                membership: index.basis(&d).map(cv::basis),
            })
            .collect();
        Ok(Response::new(pb::LookupSubjectsResponse {
            subjects,
            next_page_token,
            evaluated_at: Some(cv::token(index.revisions)),
        }))
    }
}
