//! Deciding: resolving a request's names, then the walk that answers it.

use uuid::Uuid;

use super::{Chain, Index, MAX_CHAIN, MemberKind, NONE, Reach, TenantState, UserState};
use crate::domain::policy::Scope;

/// Why a decision came out as it did (mirrors `DecisionReason`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    GrantedByMembership,
    GrantedByOverride,
    GrantedByResourceGrant,
    DeniedNoMembership,
    DeniedByOverride,
    DeniedUserSuspended,
    DeniedUserPending,
    DeniedUserDeleted,
    DeniedUserUnknown,
    DeniedTenantSuspended,
    DeniedTenantArchived,
    DeniedTenantUnknown,
    DeniedOutsideAssignedTenants,
    DeniedUnknownPermission,
    DeniedPermissionNotInRole,
    DeniedResourceUnknown,
    /// The only memberships reaching the tenant hold `msp_staff_only` roles and the user is not
    /// (or no longer) MSP staff. Reported as DENIED_NO_MEMBERSHIP; Explain names the role.
    DeniedNotMspStaff,
    /// The tenant's ancestor chain has a cycle or is deeper than the index walks. Reported as
    /// DENIED_TENANT_UNKNOWN; nothing is decided on part of a chain.
    DeniedTenantChainBroken,
}

impl Reason {
    pub fn allowed(self) -> bool {
        matches!(self, Self::GrantedByMembership | Self::GrantedByOverride | Self::GrantedByResourceGrant)
    }
}

/// The membership a decision rests on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Basis {
    pub tenant: Uuid,
    pub kind: MemberKind,
    pub role: String,
    pub scope: Scope,
}

/// A decision and what it rests on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    pub reason: Reason,
    pub(super) member: Option<(u32, u16, MemberKind)>,
    pub(super) override_record: Option<u32>,
    pub(super) grant_record: Option<u32>,
    /// For tenant denials: which tenant of the chain blocked.
    pub(super) blocking_tenant: u32,
}

impl Decision {
    fn of(reason: Reason) -> Self {
        Self { reason, member: None, override_record: None, grant_record: None, blocking_tenant: NONE }
    }
    pub fn allowed(&self) -> bool {
        self.reason.allowed()
    }
}

/// Interned handles for a decision, resolved once from the request.
#[derive(Debug, Clone, Copy)]
pub struct Subject {
    pub user: u32,
    pub bit: u8,
    pub tenant: u32,
    pub resource: u32,
}

/// Why an input could not be resolved (the API maps these to NOT_FOUND reasons).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unresolved {
    Permission,
    User,
    Tenant,
    Resource,
}

impl Index {
    /// Resolves a request's names to index handles.
    pub fn resolve(
        &self,
        user: &Uuid,
        permission: &str,
        tenant: &Uuid,
        resource: Option<&str>,
    ) -> Result<Subject, Unresolved> {
        let bit = self.policy.permission_bit(permission).ok_or(Unresolved::Permission)?;
        let user = *self
            .user_ids
            .get(user)
            .filter(|i| self.users[**i as usize].state != UserState::Unknown)
            .ok_or(Unresolved::User)?;
        let tenant = *self
            .tenant_ids
            .get(tenant)
            .filter(|i| self.tenants[**i as usize].state != TenantState::Unknown)
            .ok_or(Unresolved::Tenant)?;
        let resource = match resource {
            None => NONE,
            Some(r) => *self.node_ids.get(&(tenant, r.to_owned())).ok_or(Unresolved::Resource)?,
        };
        Ok(Subject { user, bit, tenant, resource })
    }

    /// The decision for resolved inputs: the hot path.
    pub fn decide(&self, s: Subject) -> Decision {
        let user = self.users[s.user as usize];
        match user.state {
            UserState::Active => {}
            UserState::Unknown => return Decision::of(Reason::DeniedUserUnknown),
            UserState::Pending => return Decision::of(Reason::DeniedUserPending),
            UserState::Suspended => return Decision::of(Reason::DeniedUserSuspended),
            UserState::Deleted => return Decision::of(Reason::DeniedUserDeleted),
        }
        // The chain and the tenants' states in one walk.
        let mut chain = Chain { ids: [NONE; MAX_CHAIN], len: 0 };
        let mut cur = s.tenant;
        while cur != NONE {
            // A cycle or too deep a chain: nothing is decided on the part walked.
            if chain.len == MAX_CHAIN || chain.as_slice().contains(&cur) {
                return Decision { blocking_tenant: s.tenant, ..Decision::of(Reason::DeniedTenantChainBroken) };
            }
            let t = &self.tenants[cur as usize];
            let blocked = match t.state {
                TenantState::Suspended => Some(Reason::DeniedTenantSuspended),
                TenantState::Archived => Some(Reason::DeniedTenantArchived),
                TenantState::Unknown if cur == s.tenant => Some(Reason::DeniedTenantUnknown),
                _ => None,
            };
            if let Some(reason) = blocked {
                return Decision { blocking_tenant: cur, ..Decision::of(reason) };
            }
            chain.ids[chain.len] = cur;
            chain.len += 1;
            cur = t.parent;
        }
        let chain = chain.as_slice();
        let bit = 1u128 << s.bit;

        // Deny overrides always apply (deny wins); a grant override only where a membership
        // reaches the tenant (below).
        let mut granted_by_override = None;
        if let Some(list) = self.overrides.get(&s.user) {
            for o in list {
                if o.bit == s.bit && (o.tenant == NONE || chain.contains(&o.tenant)) {
                    if o.deny {
                        return Decision { override_record: Some(o.record), ..Decision::of(Reason::DeniedByOverride) };
                    }
                    granted_by_override = Some(o.record);
                }
            }
        }
        let by_override =
            |record| Decision { override_record: Some(record), ..Decision::of(Reason::GrantedByOverride) };

        let members = &self.memberships[s.user as usize];
        let mut not_in_role = None;
        let mut outside = None;
        let mut not_staff = None;
        if !members.is_empty() {
            let client = self.tenants[s.tenant as usize].client;
            for &t in chain {
                let start = members.partition_point(|m| m.tenant < t);
                for m in members[start..].iter().take_while(|m| m.tenant == t) {
                    let basis = Some((m.tenant, m.role, m.kind));
                    match self.reach(s.user, user.msp_staff, m, client) {
                        Reach::Counts => {}
                        Reach::NotStaff => {
                            not_staff = not_staff.or(basis);
                            continue;
                        }
                        Reach::Outside => {
                            outside = outside.or(basis);
                            continue;
                        }
                        Reach::NotHere => continue,
                    }
                    // A membership reaches the tenant: a grant override may apply.
                    if let Some(record) = granted_by_override {
                        return by_override(record);
                    }
                    if self.roles[m.role as usize].permissions & bit != 0 {
                        return Decision { member: basis, ..Decision::of(Reason::GrantedByMembership) };
                    }
                    not_in_role = not_in_role.or(basis);
                }
            }
        }

        let mut node = s.resource;
        let mut steps = 0;
        while node != NONE && steps < MAX_CHAIN * 4 {
            let n = &self.nodes[node as usize];
            if let Some(g) =
                n.grants.iter().find(|g| g.user == s.user && g.perms & bit != 0 && (user.msp_staff || !g.staff_only))
            {
                return Decision { grant_record: Some(g.record), ..Decision::of(Reason::GrantedByResourceGrant) };
            }
            node = n.parent;
            steps += 1;
        }

        match (not_in_role, not_staff, outside) {
            (Some(b), _, _) => Decision { member: Some(b), ..Decision::of(Reason::DeniedPermissionNotInRole) },
            (None, Some(b), _) => Decision { member: Some(b), ..Decision::of(Reason::DeniedNotMspStaff) },
            (None, None, Some(b)) => Decision { member: Some(b), ..Decision::of(Reason::DeniedOutsideAssignedTenants) },
            (None, None, None) => Decision::of(Reason::DeniedNoMembership),
        }
    }

    /// Decides from names: unknown inputs are explained as denials.
    pub fn decide_names(&self, user: &Uuid, permission: &str, tenant: &Uuid, resource: Option<&str>) -> Decision {
        match self.resolve(user, permission, tenant, resource) {
            Ok(s) => self.decide(s),
            Err(Unresolved::Permission) => Decision::of(Reason::DeniedUnknownPermission),
            Err(Unresolved::User) => Decision::of(Reason::DeniedUserUnknown),
            Err(Unresolved::Tenant) => Decision::of(Reason::DeniedTenantUnknown),
            Err(Unresolved::Resource) => Decision::of(Reason::DeniedResourceUnknown),
        }
    }
}
