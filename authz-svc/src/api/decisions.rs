//! Decision questions: Check, BatchCheck, Explain, ListEffectivePermissions and CheckRoleGrant.

use tether_proto::{authz::v1 as pb, common::v1::ErrorReason};
use tether_runtime::{db::now_micros, error::ApiError};
use tonic::{Request, Response};
use uuid::Uuid;

use super::{Authz, Reply, convert as cv, may_ask_about, seen_tenant, seen_user};
use crate::{
    domain::index::{Reason, RoleGrantQuestion},
    events::audit::{self, DecisionRecord, Queued},
};

impl Authz {
    pub(super) async fn check_role_grant(
        &self,
        request: Request<pb::CheckRoleGrantRequest>,
    ) -> Reply<pb::CheckRoleGrantResponse> {
        let (metadata, _, r) = request.into_parts();
        let actor = cv::uuid("actor_user_id", &r.actor_user_id)?;
        // Services ask on behalf of anyone; a person only about what they themselves may grant.
        if self.asker(&metadata).await?.user().is_some_and(|p| p.user_id != r.actor_user_id) {
            return Err(ApiError::new(
                ErrorReason::PermissionDenied,
                "a person may only ask what they themselves may grant",
            )
            .into());
        }
        let target = cv::optional_uuid("target_user_id", &r.target_user_id)?;
        let tenant = cv::uuid("tenant_id", &r.tenant_id)?;
        cv::optional_role_name("role", &r.role)?;
        cv::optional_role_name("previous_role", &r.previous_role)?;
        if r.role.is_empty() && r.previous_role.is_empty() {
            return Err(ApiError::new(ErrorReason::FieldRequired, "role or previous_role is required")
                .with_metadata("field", "role")
                .into());
        }
        self.fresh(r.at_least_as_fresh.as_ref()).await?;
        let index = self.state.read();
        let q = RoleGrantQuestion {
            actor,
            target,
            target_is_msp_staff: r.target_is_msp_staff,
            tenant,
            role: (!r.role.is_empty()).then_some(r.role.as_str()),
            previous_role: (!r.previous_role.is_empty()).then_some(r.previous_role.as_str()),
        };
        let outcome = index.check_role_grant(&q);
        let evaluated_at = Some(cv::token(index.revisions));
        let reply = match outcome {
            Ok(()) => pb::CheckRoleGrantResponse {
                allowed: true,
                denial_reason: ErrorReason::Unspecified as i32,
                summary: format!(
                    "allowed: {} may {}",
                    actor,
                    match (r.role.is_empty(), r.previous_role.is_empty()) {
                        (false, true) => format!("grant {}", r.role),
                        (false, false) => format!("change {} to {}", r.previous_role, r.role),
                        _ => format!("remove {}", r.previous_role),
                    }
                ),
                evaluated_at,
            },
            Err(denial) => {
                let role_rank = index.role_rank(if r.role.is_empty() { &r.previous_role } else { &r.role });
                let (reason, summary) =
                    cv::denial(denial, &r.role, &r.previous_role, index.actor_rank(&actor, &tenant), role_rank);
                pb::CheckRoleGrantResponse { allowed: false, denial_reason: reason as i32, summary, evaluated_at }
            }
        };
        Ok(Response::new(reply))
    }

    pub(super) async fn check(&self, request: Request<pb::CheckRequest>) -> Reply<pb::CheckResponse> {
        let (metadata, _, r) = request.into_parts();
        let user = cv::uuid("subject_user_id", &r.subject_user_id)?;
        let tenant = cv::uuid("tenant_id", &r.tenant_id)?;
        cv::permission_name("permission", &r.permission)?;
        let resource = cv::optional_resource("resource_id", &r.resource_id)?;
        let who = self.may_ask(&metadata, &r.subject_user_id, Some(tenant)).await?;
        self.fresh(r.at_least_as_fresh.as_ref()).await?;
        let (decision, revisions) = {
            let index = self.state.read();
            let (user, tenant) = (seen_user(&index, &who, user), seen_tenant(&index, &who, tenant));
            let s = index.resolve(&user, &r.permission, &tenant, resource.as_deref()).map_err(cv::unresolved)?;
            (index.decide(s), index.revisions)
        };
        let decision_id = audit::fresh_id().to_string();
        let allowed = decision.allowed();
        self.record_decision(&decision_id, r, decision.reason);
        Ok(Response::new(pb::CheckResponse { allowed, decision_id, evaluated_at: Some(cv::token(revisions)) }))
    }

    pub(super) async fn batch_check(&self, request: Request<pb::BatchCheckRequest>) -> Reply<pb::BatchCheckResponse> {
        let (metadata, _, r) = request.into_parts();
        if r.items.is_empty() {
            return Err(ApiError::new(ErrorReason::FieldRequired, "items is required")
                .with_metadata("field", "items")
                .into());
        }
        if r.items.len() > cv::MAX_BATCH {
            return Err(ApiError::new(ErrorReason::BatchTooLarge, "at most 1000 items")
                .with_metadata("field", "items")
                .with_metadata("limit", cv::MAX_BATCH.to_string())
                .into());
        }
        let who = self.asker(&metadata).await?;
        self.fresh(r.at_least_as_fresh.as_ref()).await?;
        let batch_id = audit::fresh_id().to_string();
        let mut decisions = Vec::with_capacity(r.items.len());
        let mut recorded = Vec::new();
        let revisions = {
            let index = self.state.read();
            for (i, item) in r.items.iter().enumerate() {
                let parsed = (|| {
                    let user = cv::uuid("subject_user_id", &item.subject_user_id)?;
                    let tenant = cv::uuid("tenant_id", &item.tenant_id)?;
                    cv::permission_name("permission", &item.permission)?;
                    let resource = cv::optional_resource("resource_id", &item.resource_id)?;
                    // May the caller ask at all, before saying whether the user exists.
                    may_ask_about(&index, &who, Some(&item.subject_user_id), Some(tenant))?;
                    let (user, tenant) = (seen_user(&index, &who, user), seen_tenant(&index, &who, tenant));
                    index.resolve(&user, &item.permission, &tenant, resource.as_deref()).map_err(cv::unresolved)
                })();
                match parsed {
                    Ok(s) => {
                        let d = index.decide(s);
                        if !d.allowed() || self.audit.sample_allowed() {
                            recorded.push((i, d.allowed(), cv::reason(d.reason).as_str_name()));
                        }
                        decisions.push(pb::BatchCheckItemDecision { allowed: d.allowed(), error: 0 });
                    }
                    Err(e) => decisions.push(pb::BatchCheckItemDecision { allowed: false, error: e.reason as i32 }),
                }
            }
            index.revisions
        };
        self.audit.record(Queued::Batch {
            batch_id: batch_id.clone(),
            items: r.items,
            recorded,
            trace_id: tether_runtime::telemetry::current_trace_id().unwrap_or_default(),
            at_micros: now_micros(),
        });
        Ok(Response::new(pb::BatchCheckResponse {
            decisions,
            decision_id: batch_id,
            evaluated_at: Some(cv::token(revisions)),
        }))
    }

    pub(super) async fn explain(&self, request: Request<pb::ExplainRequest>) -> Reply<pb::ExplainResponse> {
        let (metadata, _, r) = request.into_parts();
        let user = cv::uuid("subject_user_id", &r.subject_user_id)?;
        let tenant = cv::uuid("tenant_id", &r.tenant_id)?;
        cv::permission_name("permission", &r.permission)?;
        let resource = cv::optional_resource("resource_id", &r.resource_id)?;
        let who = self.may_ask(&metadata, &r.subject_user_id, Some(tenant)).await?;
        self.fresh(r.at_least_as_fresh.as_ref()).await?;
        let decision_id = Uuid::now_v7().to_string();
        let reply = {
            let index = self.state.read();
            // Decided on what the asker may see; explained with the ids they gave.
            let (seen_as, seen) = (seen_user(&index, &who, user), seen_tenant(&index, &who, tenant));
            let d = index.decide_names(&seen_as, &r.permission, &seen, resource.as_deref());
            pb::ExplainResponse {
                allowed: d.allowed(),
                reason: cv::reason(d.reason) as i32,
                summary: index.summary(&user, &r.permission, &tenant, &d),
                decision_id: decision_id.clone(),
                evaluated_at: Some(cv::token(index.revisions)),
                membership: index.basis(&d).map(cv::basis),
                permission_override: index.decision_override(&d).map(cv::override_msg),
                resource_grant: index.decision_grant(&d).map(cv::grant),
                steps: index.steps(&d),
            }
        };
        Ok(Response::new(reply))
    }

    pub(super) async fn list_effective_permissions(
        &self,
        request: Request<pb::ListEffectivePermissionsRequest>,
    ) -> Reply<pb::ListEffectivePermissionsResponse> {
        let (metadata, _, r) = request.into_parts();
        let user = cv::uuid("subject_user_id", &r.subject_user_id)?;
        let tenant = cv::uuid("tenant_id", &r.tenant_id)?;
        let resource = cv::optional_resource("resource_id", &r.resource_id)?;
        let who = self.may_ask(&metadata, &r.subject_user_id, Some(tenant)).await?;
        self.fresh(r.at_least_as_fresh.as_ref()).await?;
        let index = self.state.read();
        let (user, tenant) = (seen_user(&index, &who, user), seen_tenant(&index, &who, tenant));
        let any_permission = index.policy.permissions.first().map(|p| p.name.clone()).unwrap_or_default();
        let s = index.resolve(&user, &any_permission, &tenant, resource.as_deref()).map_err(cv::unresolved)?;
        let probe = index.decide(s);
        let blocked = matches!(
            probe.reason,
            Reason::DeniedUserSuspended
                | Reason::DeniedUserPending
                | Reason::DeniedUserDeleted
                | Reason::DeniedTenantSuspended
                | Reason::DeniedTenantArchived
        );
        let mut permissions: Vec<pb::EffectivePermission> = if blocked {
            Vec::new()
        } else {
            index
                .effective(s.user, s.tenant, s.resource)
                .into_iter()
                .map(|(bit, reason)| pb::EffectivePermission {
                    permission: index.policy.permissions[bit as usize].name.clone(),
                    reason: cv::reason(reason) as i32,
                })
                .collect()
        };
        permissions.sort_by(|a, b| a.permission.cmp(&b.permission));
        Ok(Response::new(pb::ListEffectivePermissionsResponse {
            permissions,
            memberships: index.memberships_reaching(&user, &tenant).into_iter().map(cv::basis).collect(),
            blocked_reason: if blocked { cv::reason(probe.reason) as i32 } else { 0 },
            evaluated_at: Some(cv::token(index.revisions)),
        }))
    }

    /// Queues the audit event of a decision: always when denied, in the sample when allowed.
    fn record_decision(&self, decision_id: &str, r: pb::CheckRequest, reason: Reason) {
        let allowed = reason.allowed();
        if allowed && !self.audit.sample_allowed() {
            return;
        }
        self.audit.record(Queued::One(DecisionRecord {
            decision_id: decision_id.to_owned(),
            user_id: r.subject_user_id,
            permission: r.permission,
            tenant_id: r.tenant_id,
            resource_id: r.resource_id,
            allowed,
            reason: cv::reason(reason).as_str_name(),
            trace_id: tether_runtime::telemetry::current_trace_id().unwrap_or_default(),
            at_micros: now_micros(),
        }));
    }
}
