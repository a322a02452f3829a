//! Request fields into domain values, domain values into reply messages.

use tether_proto::{
    authz::v1 as pb,
    common::v1::{ConsistencyToken, ErrorReason, MembershipKind, Revision, RevisionSource},
    values,
};
use tether_runtime::error::ApiError;

use tether_runtime::db::timestamp;
use uuid::Uuid;

use crate::domain::{
    index::{
        Basis, GrantAccess, GrantDenial, GrantRecord, MemberKind, OverrideRecord, Reason, ResourceRecord, Revisions,
        Unresolved,
    },
    policy::{PermissionDef, Policy, RoleDef, Scope},
    valid_resource_id,
};

pub const MAX_PERMISSION_LEN: usize = 100;
pub const MAX_BATCH: usize = 1000;

pub fn uuid(field: &str, raw: &str) -> Result<Uuid, ApiError> {
    Ok(values::id(field, raw)?)
}

pub fn optional_uuid(field: &str, raw: &str) -> Result<Option<Uuid>, ApiError> {
    Ok(values::optional_id(field, raw)?)
}

/// A role's catalog name, by the contract's one rule.
pub fn role_name(field: &str, raw: &str) -> Result<(), ApiError> {
    values::RoleName::parse(field, raw)?;
    Ok(())
}

/// A role name that may be left empty.
pub fn optional_role_name(field: &str, raw: &str) -> Result<(), ApiError> {
    if raw.is_empty() { Ok(()) } else { role_name(field, raw) }
}

pub fn permission_name(field: &str, raw: &str) -> Result<(), ApiError> {
    if raw.is_empty() {
        return Err(
            ApiError::new(ErrorReason::FieldRequired, format!("{field} is required")).with_metadata("field", field)
        );
    }
    if raw.len() > MAX_PERMISSION_LEN {
        return Err(ApiError::new(ErrorReason::FieldTooLong, format!("{field} is too long"))
            .with_metadata("field", field)
            .with_metadata("limit", MAX_PERMISSION_LEN.to_string()));
    }
    Ok(())
}

pub fn resource_id(field: &str, raw: &str) -> Result<String, ApiError> {
    optional_resource(field, raw)?
        .ok_or_else(|| ApiError::field(ErrorReason::FieldRequired, field, format!("{field} is required")))
}

pub fn optional_resource(field: &str, raw: &str) -> Result<Option<String>, ApiError> {
    if raw.is_empty() {
        return Ok(None);
    }
    if !valid_resource_id(raw) {
        return Err(ApiError::new(ErrorReason::InvalidFormat, format!("{field} is not a valid resource id"))
            .with_metadata("field", field));
    }
    Ok(Some(raw.to_owned()))
}

pub fn text(field: &str, raw: &str, max: usize) -> Result<(), ApiError> {
    if raw.chars().count() > max {
        return Err(ApiError::new(ErrorReason::FieldTooLong, format!("{field} is too long"))
            .with_metadata("field", field)
            .with_metadata("limit", max.to_string()));
    }
    if raw.chars().any(char::is_control) {
        return Err(ApiError::new(ErrorReason::InvalidFormat, format!("{field} contains control characters"))
            .with_metadata("field", field));
    }
    Ok(())
}

pub fn unresolved(u: Unresolved) -> ApiError {
    match u {
        Unresolved::Permission => ApiError::new(ErrorReason::PermissionNotFound, "no such permission in the catalog"),
        Unresolved::User => ApiError::new(ErrorReason::UserNotFound, "no such user"),
        Unresolved::Tenant => ApiError::new(ErrorReason::TenantNotFound, "no such tenant"),
        Unresolved::Resource => ApiError::new(ErrorReason::ResourceNotFound, "no such resource in that tenant"),
    }
}

pub fn token(r: Revisions) -> ConsistencyToken {
    ConsistencyToken {
        revisions: vec![
            Revision { source: RevisionSource::Identity as i32, value: r.identity },
            Revision { source: RevisionSource::Tenancy as i32, value: r.tenancy },
            Revision { source: RevisionSource::Authz as i32, value: r.authz },
        ],
    }
}

pub fn authz_token(revision: u64) -> ConsistencyToken {
    ConsistencyToken { revisions: vec![Revision { source: RevisionSource::Authz as i32, value: revision }] }
}

pub fn reason(r: Reason) -> pb::DecisionReason {
    use pb::DecisionReason as D;
    match r {
        Reason::GrantedByMembership => D::GrantedByMembership,
        Reason::GrantedByOverride => D::GrantedByOverride,
        Reason::GrantedByResourceGrant => D::GrantedByResourceGrant,
        Reason::DeniedNoMembership => D::DeniedNoMembership,
        Reason::DeniedByOverride => D::DeniedByOverride,
        Reason::DeniedUserSuspended => D::DeniedUserSuspended,
        Reason::DeniedUserPending => D::DeniedUserPending,
        Reason::DeniedUserDeleted => D::DeniedUserDeleted,
        Reason::DeniedUserUnknown => D::DeniedUserUnknown,
        Reason::DeniedTenantSuspended => D::DeniedTenantSuspended,
        Reason::DeniedTenantArchived => D::DeniedTenantArchived,
        Reason::DeniedTenantUnknown => D::DeniedTenantUnknown,
        Reason::DeniedOutsideAssignedTenants => D::DeniedOutsideAssignedTenants,
        Reason::DeniedUnknownPermission => D::DeniedUnknownPermission,
        Reason::DeniedPermissionNotInRole => D::DeniedPermissionNotInRole,
        Reason::DeniedResourceUnknown => D::DeniedResourceUnknown,
        // No membership counts for a user who is not MSP staff (Explain's summary says which).
        Reason::DeniedNotMspStaff => D::DeniedNoMembership,
        // A malformed tree: the tenant cannot be placed.
        Reason::DeniedTenantChainBroken => D::DeniedTenantUnknown,
    }
}

pub fn scope(s: Scope) -> pb::RoleScope {
    match s {
        Scope::AllTenants => pb::RoleScope::AllTenants,
        Scope::AssignedTenants => pb::RoleScope::AssignedTenants,
        Scope::OwnTenant => pb::RoleScope::OwnTenant,
    }
}

pub fn scope_from(s: i32) -> Option<Scope> {
    match pb::RoleScope::try_from(s).ok()? {
        pb::RoleScope::AllTenants => Some(Scope::AllTenants),
        pb::RoleScope::AssignedTenants => Some(Scope::AssignedTenants),
        pb::RoleScope::OwnTenant => Some(Scope::OwnTenant),
        pb::RoleScope::Unspecified => None,
    }
}

pub fn kind(k: MemberKind) -> MembershipKind {
    match k {
        MemberKind::Direct => MembershipKind::Direct,
        MemberKind::Shadow => MembershipKind::Shadow,
        MemberKind::Assigned => MembershipKind::Assigned,
    }
}

pub fn basis(b: Basis) -> pb::MembershipBasis {
    pb::MembershipBasis {
        tenant_id: b.tenant.to_string(),
        kind: kind(b.kind) as i32,
        role: b.role,
        scope: scope(b.scope) as i32,
    }
}

pub fn role(r: &RoleDef, policy: &Policy) -> pb::Role {
    pb::Role {
        name: r.name.clone(),
        display_name: r.display_name.clone(),
        description: r.description.clone(),
        permissions: {
            let mut names = policy.names(r.permissions);
            names.sort();
            names
        },
        scope: scope(r.scope) as i32,
        rank: r.rank,
        assignable: r.assignable,
        msp_staff_only: r.msp_staff_only,
        built_in: r.built_in,
        created_at: Some(timestamp(r.created_at_micros)),
        updated_at: Some(timestamp(r.updated_at_micros)),
    }
}

pub fn permission(p: &PermissionDef) -> pb::Permission {
    pb::Permission {
        name: p.name.clone(),
        description: p.description.clone(),
        category: p.category.clone(),
        platform: p.platform,
    }
}

pub fn override_msg(o: &OverrideRecord) -> pb::PermissionOverride {
    pb::PermissionOverride {
        user_id: o.user.to_string(),
        permission: o.permission.clone(),
        effect: if o.deny { pb::OverrideEffect::Deny } else { pb::OverrideEffect::Grant } as i32,
        tenant_id: o.tenant.map(|t| t.to_string()).unwrap_or_default(),
        note: o.note.clone(),
        created_by_user_id: o.created_by.clone(),
        created_at: Some(timestamp(o.created_at_micros)),
    }
}

pub fn resource(r: &ResourceRecord) -> pb::Resource {
    pb::Resource {
        tenant_id: r.tenant.to_string(),
        resource_id: r.resource_id.clone(),
        resource_type: r.resource_type.clone(),
        parent_resource_id: r.parent.clone(),
        display_name: r.display_name.clone(),
        created_at: Some(timestamp(r.created_at_micros)),
        updated_at: Some(timestamp(r.updated_at_micros)),
    }
}

pub fn grant(g: &GrantRecord) -> pb::ResourceGrant {
    pb::ResourceGrant {
        grant_id: g.grant_id.to_string(),
        user_id: g.user.to_string(),
        tenant_id: g.tenant.to_string(),
        resource_id: g.resource_id.clone(),
        access: Some(match &g.access {
            GrantAccess::Role(r) => pb::resource_grant::Access::Role(r.clone()),
            GrantAccess::Permission(p) => pb::resource_grant::Access::Permission(p.clone()),
        }),
        granted_by_user_id: g.granted_by.clone(),
        created_at: Some(timestamp(g.created_at_micros)),
    }
}

/// A delegation refusal: the reason to hand back and one readable line.
pub fn denial(
    d: GrantDenial,
    role: &str,
    previous: &str,
    actor_rank: Option<i32>,
    role_rank: Option<i32>,
) -> (ErrorReason, String) {
    let rank = |r: Option<i32>| r.filter(|r| *r != i32::MIN).map_or("none".to_owned(), |r| r.to_string());
    match d {
        GrantDenial::ActorUnknown => (ErrorReason::UserNotFound, "the acting user is unknown".into()),
        GrantDenial::ActorNotActive => (ErrorReason::UserNotActive, "the acting user is not active".into()),
        GrantDenial::TenantUnknown => (ErrorReason::TenantNotFound, "no such tenant".into()),
        GrantDenial::RoleUnknown => (ErrorReason::RoleNotFound, format!("no such role ({role}{previous})")),
        GrantDenial::TargetHidden => (ErrorReason::UserNotFound, "no such user".into()),
        GrantDenial::MspStaffRequired => {
            (ErrorReason::MspStaffRequired, "only MSP staff may create or modify MSP staff".into())
        }
        GrantDenial::OwnerNotRemovable => (
            ErrorReason::OwnerNotRemovable,
            format!("{previous} is the owner role: it is only transferred, never revoked"),
        ),
        GrantDenial::OwnerRoleNotAssignable => (
            ErrorReason::OwnerRoleNotAssignable,
            format!("{role} is the owner role: it is only transferred, never granted"),
        ),
        GrantDenial::OutsideTenant => {
            (ErrorReason::OutsideTenant, "the actor may not act outside their own tenant".into())
        }
        GrantDenial::PermissionDenied => {
            (ErrorReason::PermissionDenied, "the actor lacks users.manage in this tenant".into())
        }
        GrantDenial::RoleNotAssignable => (ErrorReason::RoleNotAssignable, format!("{role} is not assignable")),
        GrantDenial::MspStaffOnlyRole => {
            (ErrorReason::MspStaffOnlyRole, format!("{role} may only be held by MSP staff"))
        }
        GrantDenial::ScopeMismatch => (
            ErrorReason::RoleScopeMismatch,
            format!("{role}'s scope does not fit: roles beyond one tenant are held by MSP staff in the admin tenancy"),
        ),
        GrantDenial::RoleAboveOwn => (
            ErrorReason::RoleAboveOwn,
            format!(
                "an actor of rank {} cannot grant or take {} (rank {})",
                rank(actor_rank),
                if role.is_empty() { previous } else { role },
                rank(role_rank)
            ),
        ),
        GrantDenial::LastAdmin => {
            (ErrorReason::LastAdmin, "the change would leave the tenant without an administrator".into())
        }
    }
}
