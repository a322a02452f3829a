//! The delegation rules: who may hand out or change roles, overrides and resource grants.

use uuid::Uuid;

use super::{GrantAccess, Index, MemberKind, NONE, Reach, Subject, TenantKind, TenantState, UserState};
use crate::domain::policy::{PermSet, Scope};

/// The answer to a delegation question.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GrantDenial {
    ActorUnknown,
    ActorNotActive,
    TenantUnknown,
    RoleUnknown,
    TargetHidden,
    MspStaffRequired,
    OwnerNotRemovable,
    OwnerRoleNotAssignable,
    OutsideTenant,
    PermissionDenied,
    RoleNotAssignable,
    MspStaffOnlyRole,
    ScopeMismatch,
    RoleAboveOwn,
    LastAdmin,
}

#[derive(Debug, Clone)]
pub struct RoleGrantQuestion<'a> {
    pub actor: Uuid,
    pub target: Option<Uuid>,
    pub target_is_msp_staff: bool,
    pub tenant: Uuid,
    pub role: Option<&'a str>,
    /// What the caller says the target holds there. For a known target the index's own view
    /// is used too; this can only make the answer stricter.
    pub previous_role: Option<&'a str>,
}

/// Why a person may not set, remove or hand out an override or a resource grant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChangeDenial {
    /// The target is unknown, or MSP staff asked about by someone who is not.
    TargetHidden,
    /// Overrides on oneself.
    SelfTarget,
    /// The target ranks above the actor in the tenant.
    TargetAboveOwn,
    /// The actor does not hold (all of) what would be granted, there.
    NotHeld,
    RoleAboveOwn,
    MspStaffOnlyRole,
}

impl Index {
    /// The highest rank among the user's memberships that count in the tenant (`i32::MIN`: none).
    fn rank_in(&self, user: u32, tenant: u32) -> i32 {
        let Some(chain) = self.chain(tenant) else { return i32::MIN };
        let (staff, client) = (self.users[user as usize].msp_staff, self.tenants[tenant as usize].client);
        let mut best = i32::MIN;
        for &cur in chain.as_slice() {
            for m in self.memberships[user as usize].iter().filter(|m| m.tenant == cur) {
                if self.role_defined[m.role as usize] && self.reach(user, staff, m, client) == Reach::Counts {
                    best = best.max(self.roles[m.role as usize].rank);
                }
            }
        }
        best
    }

    /// How high a target ranks for a change that applies in `tenant` and everything below it
    /// (`None`: everywhere). Any role the target holds there counts, so this errs high.
    fn target_rank(&self, user: u32, tenant: Option<u32>) -> i32 {
        let mut best = tenant.map_or(i32::MIN, |t| self.rank_in(user, t));
        for m in &self.memberships[user as usize] {
            if !self.role_defined[m.role as usize] {
                continue;
            }
            let below = match tenant {
                None => true,
                Some(t) => self.chain(m.tenant).is_none_or(|c| c.as_slice().contains(&t)),
            };
            if below {
                best = best.max(self.roles[m.role as usize].rank);
            }
        }
        best
    }

    /// Whether the user holds the permission in every tenant: it is allowed in the admin
    /// tenancy through an all-tenants membership there, and no deny override limits it.
    fn holds_everywhere(&self, user: u32, bit: u8) -> bool {
        let Some(admin) = self.admin_slot() else { return false };
        let staff = self.users[user as usize].msp_staff;
        let all_tenants = self.memberships[user as usize].iter().any(|m| {
            m.tenant == admin
                && self.roles[m.role as usize].scope == Scope::AllTenants
                && self.reach(user, staff, m, NONE) == Reach::Counts
        });
        let denied_somewhere = self.overrides.get(&user).is_some_and(|l| l.iter().any(|o| o.deny && o.bit == bit));
        all_tenants && !denied_somewhere && self.decide(Subject { user, bit, tenant: admin, resource: NONE }).allowed()
    }

    /// The role the user holds through a direct membership in the tenant.
    fn direct_role(&self, user: u32, tenant: u32) -> Option<u16> {
        let list = &self.memberships[user as usize];
        list.binary_search_by(|m| (m.tenant, m.kind).cmp(&(tenant, MemberKind::Direct))).ok().map(|i| list[i].role)
    }

    /// An active actor's slot.
    fn active_actor(&self, actor: &Uuid) -> Result<u32, GrantDenial> {
        let a = *self.user_ids.get(actor).ok_or(GrantDenial::ActorUnknown)?;
        match self.users[a as usize].state {
            UserState::Active => Ok(a),
            UserState::Unknown | UserState::Deleted => Err(GrantDenial::ActorUnknown),
            _ => Err(GrantDenial::ActorNotActive),
        }
    }

    /// The delegation rules; `Ok(())` when the role change is allowed.
    pub fn check_role_grant(&self, q: &RoleGrantQuestion<'_>) -> Result<(), GrantDenial> {
        let actor = self.active_actor(&q.actor)?;
        let actor_staff = self.users[actor as usize].msp_staff;
        // A tenant the actor may not see is as unknown to them as one that does not exist.
        let tenant = *self
            .tenant_ids
            .get(&q.tenant)
            .filter(|t| self.tenants[**t as usize].state != TenantState::Unknown && self.sees_tenant(actor, **t))
            .ok_or(GrantDenial::TenantUnknown)?;
        let role = match q.role {
            Some(r) => Some(
                *self.role_ids.get(r).filter(|id| self.role_defined[**id as usize]).ok_or(GrantDenial::RoleUnknown)?,
            ),
            None => None,
        };
        let supplied = match q.previous_role {
            Some(r) => Some(*self.role_ids.get(r).ok_or(GrantDenial::RoleUnknown)?),
            None => None,
        };
        let target = match q.target {
            Some(t) => Some(self.visible_target(actor, &t).ok_or(GrantDenial::TargetHidden)?),
            None => None,
        };
        // What the target holds there now comes from the index; the caller's previous_role is
        // checked as well, so it can only make the answer stricter.
        let current = target.and_then(|t| self.direct_role(t, tenant));
        let held = [current, supplied];
        let previous = || held.iter().flatten().copied();
        let target_staff = target.map_or(q.target_is_msp_staff, |t| self.users[t as usize].msp_staff);
        if target_staff && !actor_staff {
            return Err(GrantDenial::MspStaffRequired);
        }
        let owner = self.role_ids.get(&self.policy.owner_role).copied();
        // The owner's membership is only transferred (tenancy-svc), never changed this way.
        if target.is_some_and(|t| t == self.owner) || previous().any(|p| Some(p) == owner) {
            return Err(GrantDenial::OwnerNotRemovable);
        }
        if role.is_some() && role == owner {
            return Err(GrantDenial::OwnerRoleNotAssignable);
        }
        // Adding a new user (invite or create: no target, no previous role) needs the pack's
        // invite permission or users.manage; any other change needs users.manage.
        let holds = |name: &str| {
            self.policy
                .permission_bit(name)
                .is_some_and(|bit| self.decide(Subject { user: actor, bit, tenant, resource: NONE }).allowed())
        };
        let adding = target.is_none() && supplied.is_none();
        let may_change = holds("users.manage") || (adding && holds(&self.policy.invite_permission));
        if !may_change {
            let reaches = self.rank_in(actor, tenant) != i32::MIN;
            return Err(if !actor_staff && !reaches {
                GrantDenial::OutsideTenant
            } else {
                GrantDenial::PermissionDenied
            });
        }
        let actor_rank = self.rank_in(actor, tenant);
        if let Some(r) = role {
            let def = &self.roles[r as usize];
            if !def.assignable {
                return Err(GrantDenial::RoleNotAssignable);
            }
            if def.msp_staff_only && !target_staff {
                return Err(GrantDenial::MspStaffOnlyRole);
            }
            // Roles reaching beyond one tenant are for MSP staff, and held in the admin tenancy.
            if def.scope != Scope::OwnTenant
                && (!target_staff || self.tenants[tenant as usize].kind != TenantKind::Admin)
            {
                return Err(GrantDenial::ScopeMismatch);
            }
            if def.rank > actor_rank {
                return Err(GrantDenial::RoleAboveOwn);
            }
        }
        if previous().any(|p| self.role_defined[p as usize] && self.roles[p as usize].rank > actor_rank) {
            return Err(GrantDenial::RoleAboveOwn);
        }
        // The last administrator of a tenant can be neither demoted nor removed.
        if let Some(t) = target
            && previous().any(|p| self.admin_roles.contains(&p))
            && !role.is_some_and(|r| self.admin_roles.contains(&r))
        {
            let others = self.members_of[tenant as usize].iter().filter(|&&u| u != t).any(|&u| {
                self.users[u as usize].state == UserState::Active
                    && self.memberships[u as usize].iter().any(|m| {
                        m.tenant == tenant && m.kind == MemberKind::Direct && self.admin_roles.contains(&m.role)
                    })
            });
            if !others {
                return Err(GrantDenial::LastAdmin);
            }
        }
        Ok(())
    }

    /// A person setting or removing an override of `bit` for `target`, in `tenant` or
    /// everywhere (`None`). `permissions.manage` there is the caller's check; these are the
    /// delegation rules on top: never on oneself; MSP staff are hidden from everyone else; the
    /// target ranks no higher than the actor wherever the override applies; a grant only of
    /// what the actor holds there (everywhere, for a global one). Deny overrides (and removals)
    /// follow the same rules but need not be held.
    pub fn check_override_change(
        &self,
        actor: &Uuid,
        target: &Uuid,
        tenant: Option<&Uuid>,
        bit: u8,
        grant: bool,
    ) -> Result<(), ChangeDenial> {
        let actor_slot = self.active_actor(actor).map_err(|_| ChangeDenial::NotHeld)?;
        let target_slot = self.visible_target(actor_slot, target).ok_or(ChangeDenial::TargetHidden)?;
        if actor_slot == target_slot {
            return Err(ChangeDenial::SelfTarget);
        }
        let tenant = match tenant {
            Some(t) => Some(*self.tenant_ids.get(t).ok_or(ChangeDenial::NotHeld)?),
            None => None,
        };
        let actor_rank = match tenant {
            Some(t) => self.rank_in(actor_slot, t),
            None => self.admin_slot().map_or(i32::MIN, |admin| self.rank_in(actor_slot, admin)),
        };
        if self.target_rank(target_slot, tenant) > actor_rank {
            return Err(ChangeDenial::TargetAboveOwn);
        }
        let holds = match tenant {
            Some(t) => self.decide(Subject { user: actor_slot, bit, tenant: t, resource: NONE }).allowed(),
            None => self.holds_everywhere(actor_slot, bit),
        };
        if grant && !holds {
            return Err(ChangeDenial::NotHeld);
        }
        Ok(())
    }

    /// A person granting `target` access to a resource: MSP staff are hidden from everyone
    /// else; a role must be one the target may hold and ranked no higher than the actor's; the
    /// actor must hold every permission granted, on that resource. (`users.manage`, the owner
    /// role and `assignable` are the caller's checks.)
    pub fn check_resource_grant(
        &self,
        actor: &Uuid,
        target: &Uuid,
        tenant: &Uuid,
        resource: &str,
        access: &GrantAccess,
    ) -> Result<(), ChangeDenial> {
        let actor_slot = self.active_actor(actor).map_err(|_| ChangeDenial::NotHeld)?;
        let target_slot = self.visible_target(actor_slot, target).ok_or(ChangeDenial::TargetHidden)?;
        let t = *self.tenant_ids.get(tenant).ok_or(ChangeDenial::NotHeld)?;
        let node = self.node_ids.get(&(t, resource.to_owned())).copied().ok_or(ChangeDenial::NotHeld)?;
        let perms = match access {
            GrantAccess::Role(name) => {
                let def = self.role(name).ok_or(ChangeDenial::NotHeld)?;
                if def.msp_staff_only && !self.users[target_slot as usize].msp_staff {
                    return Err(ChangeDenial::MspStaffOnlyRole);
                }
                if def.rank > self.rank_in(actor_slot, t) {
                    return Err(ChangeDenial::RoleAboveOwn);
                }
                def.permissions
            }
            GrantAccess::Permission(p) => self.policy.permission_bit(p).map_or(0, |b| 1u128 << b),
        };
        let holds = self
            .bits(perms)
            .all(|bit| self.decide(Subject { user: actor_slot, bit, tenant: t, resource: node }).allowed());
        if !holds {
            return Err(ChangeDenial::NotHeld);
        }
        Ok(())
    }

    /// Whether every permission in `perms` is one the user holds everywhere (custom roles can
    /// be granted in any tenant).
    pub fn holds_all_everywhere(&self, user: &Uuid, perms: PermSet) -> bool {
        let Some(u) = self.known_user_slot(user) else { return false };
        self.bits(perms).all(|bit| self.holds_everywhere(u, bit))
    }

    /// The catalog bits set in `perms`.
    fn bits(&self, perms: PermSet) -> impl Iterator<Item = u8> {
        (0..self.policy.permissions.len() as u8).filter(move |b| perms & (1u128 << b) != 0)
    }

    pub fn role_rank(&self, name: &str) -> Option<i32> {
        self.role(name).map(|r| r.rank)
    }
    pub fn actor_rank(&self, actor: &Uuid, tenant: &Uuid) -> Option<i32> {
        let a = *self.user_ids.get(actor)?;
        let t = *self.tenant_ids.get(tenant)?;
        Some(self.rank_in(a, t))
    }
}
