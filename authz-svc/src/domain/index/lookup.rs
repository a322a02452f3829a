//! Lookups: what a user holds, where they hold a permission, who holds it.

use uuid::Uuid;

use super::{Basis, Decision, Index, MAX_CHAIN, MemberKind, NONE, Reach, Reason, Subject, TenantState};
use crate::domain::policy::Scope;

impl Index {
    /// The memberships of the user held in the tenant or its ancestors that reach it (an
    /// `own_tenant` role in the admin tenancy does not reach a client).
    pub fn memberships_reaching(&self, user: &Uuid, tenant: &Uuid) -> Vec<Basis> {
        let (Some(&u), Some(&t)) = (self.user_ids.get(user), self.tenant_ids.get(tenant)) else { return Vec::new() };
        let Some(chain) = self.chain(t) else { return Vec::new() };
        let (staff, client) = (self.users[u as usize].msp_staff, self.tenants[t as usize].client);
        let mut out = Vec::new();
        for &cur in chain.as_slice() {
            for m in self.memberships[u as usize].iter().filter(|m| m.tenant == cur) {
                if self.reach(u, staff, m, client) == Reach::NotHere {
                    continue;
                }
                let role = &self.roles[m.role as usize];
                out.push(Basis {
                    tenant: self.tenants[cur as usize].id,
                    kind: m.kind,
                    role: role.name.clone(),
                    scope: role.scope,
                });
            }
        }
        out
    }

    /// Every permission bit the subject holds, with how.
    pub fn effective(&self, user: u32, tenant: u32, resource: u32) -> Vec<(u8, Reason)> {
        (0..self.policy.permissions.len() as u8)
            .filter_map(|bit| {
                let d = self.decide(Subject { user, bit, tenant, resource });
                d.allowed().then_some((bit, d.reason))
            })
            .collect()
    }

    /// Tenants (by id, after `after`) where the user holds the permission; at most `limit`.
    pub fn lookup_tenants(&self, user: u32, bit: u8, after: Option<Uuid>, limit: usize) -> (Vec<Uuid>, bool) {
        // Most users reach a few branches: decide only there. Whoever may reach everything (an
        // all-tenants role, an override everywhere) is checked tenant by tenant, in order.
        if let Some(roots) = self.reachable_roots(user, bit) {
            let mut candidates: Vec<(Uuid, u32)> = Vec::new();
            let mut stack = roots;
            let mut seen = vec![false; self.tenants.len()];
            while let Some(t) = stack.pop() {
                if std::mem::replace(&mut seen[t as usize], true) {
                    continue;
                }
                let id = self.tenants[t as usize].id;
                if after.is_none_or(|a| id > a) {
                    candidates.push((id, t));
                }
                stack.extend_from_slice(&self.children[t as usize]);
            }
            candidates.sort_unstable();
            let mut out = Vec::new();
            for (id, t) in candidates {
                if self.tenants[t as usize].state != TenantState::Unknown
                    && self.decide(Subject { user, bit, tenant: t, resource: NONE }).allowed()
                {
                    if out.len() == limit {
                        return (out, true);
                    }
                    out.push(id);
                }
            }
            return (out, false);
        }
        let mut out = Vec::new();
        let range = match after {
            Some(a) => self.tenant_order.range((std::ops::Bound::Excluded(a), std::ops::Bound::Unbounded)),
            None => self.tenant_order.range(..),
        };
        for (id, &t) in range {
            if self.decide(Subject { user, bit, tenant: t, resource: NONE }).allowed() {
                if out.len() == limit {
                    return (out, true);
                }
                out.push(*id);
            }
        }
        (out, false)
    }

    /// The tops of every branch where `user` could hold `bit` (a superset: each tenant found is
    /// still decided), or `None` when that may be everywhere.
    fn reachable_roots(&self, user: u32, bit: u8) -> Option<Vec<u32>> {
        let mut roots = Vec::new();
        if let Some(list) = self.overrides.get(&user) {
            for o in list.iter().filter(|o| o.bit == bit && !o.deny) {
                if o.tenant == NONE {
                    return None;
                }
                roots.push(o.tenant);
            }
        }
        let mask = 1u128 << bit;
        for m in &self.memberships[user as usize] {
            let role = &self.roles[m.role as usize];
            if role.permissions & mask == 0 {
                continue;
            }
            match role.scope {
                // Reaches the clients assigned to the user, wherever the membership sits.
                Scope::AssignedTenants if m.kind != MemberKind::Assigned => {
                    roots.extend_from_slice(&self.assigned[user as usize]);
                }
                _ if self.tenants[m.tenant as usize].parent == NONE => return None,
                _ => roots.push(m.tenant),
            }
        }
        Some(roots)
    }

    /// Active users (by id, after `after`) who hold the permission in the tenant; at most `limit`.
    /// `viewer`: answered for that person (who is not MSP staff): users they may not see are
    /// left out.
    pub fn lookup_subjects(
        &self,
        bit: u8,
        tenant: u32,
        resource: u32,
        after: Option<Uuid>,
        limit: usize,
        viewer: Option<&Uuid>,
    ) -> (Vec<(Uuid, Decision)>, bool) {
        // A person who is not MSP staff sees only the users they reach (everyone else is
        // left out, as if unknown); one unknown to the index sees nobody.
        let viewer = viewer.map(|v| self.user_ids.get(v).copied());
        let mut candidates: Vec<u32> = Vec::new();
        let mut cur = tenant;
        let mut steps = 0;
        while cur != NONE && steps < MAX_CHAIN {
            candidates.extend_from_slice(&self.members_of[cur as usize]);
            cur = self.tenants[cur as usize].parent;
            steps += 1;
        }
        candidates
            .extend(self.overrides.iter().filter(|(_, l)| l.iter().any(|o| !o.deny && o.bit == bit)).map(|(u, _)| *u));
        let mut node = resource;
        let mut steps = 0;
        while node != NONE && steps < MAX_CHAIN * 4 {
            candidates.extend(self.nodes[node as usize].grants.iter().map(|g| g.user));
            node = self.nodes[node as usize].parent;
            steps += 1;
        }
        let mut ids: Vec<(Uuid, u32)> = candidates.into_iter().map(|u| (self.users[u as usize].id, u)).collect();
        ids.sort_unstable();
        ids.dedup();
        let mut out = Vec::new();
        for (id, u) in ids {
            if after.is_some_and(|a| id <= a) || viewer.is_some_and(|v| v.is_none_or(|v| !self.reaches_user(v, u))) {
                continue;
            }
            let d = self.decide(Subject { user: u, bit, tenant, resource });
            if d.allowed() {
                if out.len() == limit {
                    return (out, true);
                }
                out.push((id, d));
            }
        }
        (out, false)
    }
}
