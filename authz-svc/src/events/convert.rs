//! Stream messages (identity's and tenancy's contracts) into index updates. Malformed ids are
//! skipped: the index only ever holds what it can decide on.

use tether_proto::{
    common::v1::MembershipKind,
    identity::v1::{self as idp, UserStatus, identity_change::Change as IdChange},
    tenancy::v1::{self as tnp, TenantKind as PTenantKind, TenantStatus, tenancy_change::Change as TnChange},
};

use crate::domain::{
    index::{Index, MemberKind, TenantKind, TenantState, UserState},
    parse_uuid,
};

fn member_kind(kind: i32) -> Option<MemberKind> {
    match MembershipKind::try_from(kind).ok()? {
        MembershipKind::Direct => Some(MemberKind::Direct),
        MembershipKind::Shadow => Some(MemberKind::Shadow),
        MembershipKind::Assigned => Some(MemberKind::Assigned),
        MembershipKind::Unspecified => None,
    }
}

pub fn apply_identity(index: &mut Index, change: &idp::IdentityChange) {
    match &change.change {
        Some(IdChange::UserUpserted(u)) => {
            let Some(user) = &u.user else { return };
            let Some(id) = parse_uuid(&user.user_id) else { return };
            let state = if user.deleted {
                UserState::Deleted
            } else {
                match user.status() {
                    UserStatus::Active => UserState::Active,
                    UserStatus::Pending => UserState::Pending,
                    // Unknown states fail closed.
                    UserStatus::Suspended | UserStatus::Unspecified => UserState::Suspended,
                }
            };
            index.upsert_user(id, state, user.is_msp_staff);
            let home = if user.is_msp_staff { None } else { parse_uuid(&user.primary_tenant_id) };
            index.set_user_home(id, home);
        }
        Some(IdChange::UserDeleted(d)) => {
            if let Some(id) = parse_uuid(&d.user_id) {
                let staff = index.user_is_msp_staff(&id);
                index.upsert_user(id, UserState::Deleted, staff);
            }
        }
        _ => {}
    }
}

pub fn apply_tenancy(index: &mut Index, change: &tnp::TenancyChange) {
    match &change.change {
        Some(TnChange::TenantUpserted(t)) => {
            let Some(tenant) = &t.tenant else { return };
            let Some(id) = parse_uuid(&tenant.tenant_id) else { return };
            let kind = match tenant.kind() {
                PTenantKind::Admin => TenantKind::Admin,
                PTenantKind::Client => TenantKind::Client,
                PTenantKind::Department | PTenantKind::Unspecified => TenantKind::Department,
            };
            let state = match tenant.status() {
                TenantStatus::Active => TenantState::Active,
                TenantStatus::Archived => TenantState::Archived,
                TenantStatus::Suspended | TenantStatus::Unspecified => TenantState::Suspended,
            };
            index.upsert_tenant(id, parse_uuid(&tenant.parent_id), kind, state);
        }
        Some(TnChange::MembershipUpserted(m)) => {
            let Some(m) = &m.membership else { return };
            if let (Some(u), Some(t), Some(kind)) =
                (parse_uuid(&m.user_id), parse_uuid(&m.tenant_id), member_kind(m.kind))
            {
                index.upsert_membership(u, t, &m.role, kind);
            }
        }
        Some(TnChange::MembershipRemoved(m)) => {
            if let (Some(u), Some(t), Some(kind)) =
                (parse_uuid(&m.user_id), parse_uuid(&m.tenant_id), member_kind(m.kind))
            {
                index.remove_membership(u, t, kind);
            }
        }
        Some(TnChange::TechnicianAssigned(a)) => {
            let Some(a) = &a.assignment else { return };
            if let (Some(u), Some(t)) = (parse_uuid(&a.technician_user_id), parse_uuid(&a.tenant_id)) {
                index.assign(u, t);
            }
        }
        Some(TnChange::TechnicianUnassigned(a)) => {
            if let (Some(u), Some(t)) = (parse_uuid(&a.technician_user_id), parse_uuid(&a.tenant_id)) {
                index.unassign(u, t);
            }
        }
        Some(TnChange::OwnershipTransferred(o)) => {
            index.set_owner(o.ownership.as_ref().and_then(|o| parse_uuid(&o.owner_user_id)));
        }
        None => {}
    }
}
