//! Applying identity's and tenancy's change streams to the index.

use uuid::Uuid;

use super::{Index, MAX_CHAIN, Member, MemberKind, NONE, TenantKind, TenantState, UserState};

impl Index {
    // ---------- identity ----------

    pub fn upsert_user(&mut self, id: Uuid, state: UserState, msp_staff: bool) {
        let i = self.user_slot(id) as usize;
        self.users[i].state = state;
        self.users[i].msp_staff = msp_staff;
    }

    /// The user's home tenant (identity's primary tenant; `None` for MSP staff): the one
    /// fact the isolation of client users rests on (see [`Self::visible_user`]).
    pub fn set_user_home(&mut self, id: Uuid, home: Option<Uuid>) {
        let home = home.map_or(NONE, |t| self.tenant_slot(t));
        let i = self.user_slot(id) as usize;
        self.users[i].home = home;
    }

    /// Before a fresh identity snapshot: forget every user's state (memberships stay: they
    /// belong to tenancy's stream).
    pub fn reset_identity(&mut self) {
        for u in &mut self.users {
            u.state = UserState::Unknown;
            u.msp_staff = false;
            u.home = NONE;
        }
    }

    // ---------- tenancy ----------

    pub fn upsert_tenant(&mut self, id: Uuid, parent: Option<Uuid>, kind: TenantKind, state: TenantState) {
        let existed = self.tenant_ids.contains_key(&id);
        let i = self.tenant_slot(id);
        let parent = parent.map_or(NONE, |p| self.tenant_slot(p));
        let t = &mut self.tenants[i as usize];
        // A move, or a parent seen after its children, changes the client of a whole branch:
        // recomputed for all in `finish`, once per revision.
        if existed && (t.parent != parent || t.kind != kind || t.state == TenantState::Unknown) {
            self.clients_dirty = true;
        }
        let old_parent = t.parent;
        t.parent = parent;
        t.kind = kind;
        t.state = state;
        self.tenant_order.insert(id, i);
        self.tenants[i as usize].client = self.client_of(i);
        if old_parent != parent || !existed {
            if old_parent != NONE {
                self.children[old_parent as usize].retain(|c| *c != i);
            }
            if parent != NONE && !self.children[parent as usize].contains(&i) {
                self.children[parent as usize].push(i);
            }
        }
    }

    /// Call after applying a revision or a snapshot.
    pub fn finish(&mut self) {
        if std::mem::take(&mut self.clients_dirty) {
            for i in 0..self.tenants.len() {
                self.tenants[i].client = self.client_of(i as u32);
            }
        }
    }

    fn client_of(&self, i: u32) -> u32 {
        let mut cur = i;
        for _ in 0..MAX_CHAIN {
            let t = self.tenants[cur as usize];
            if t.kind == TenantKind::Client {
                return cur;
            }
            if t.parent == NONE {
                break;
            }
            cur = t.parent;
        }
        NONE
    }

    pub fn upsert_membership(&mut self, user: Uuid, tenant: Uuid, role: &str, kind: MemberKind) {
        let Some(r) = self.role_slot(role) else {
            // No slot for yet another role name: the membership cannot grant anything, and
            // whatever role it held before must not linger.
            tracing::warn!(role, "role slots exhausted; membership ignored");
            self.remove_membership(user, tenant, kind);
            return;
        };
        let u = self.user_slot(user);
        let t = self.tenant_slot(tenant);
        let list = &mut self.memberships[u as usize];
        let key = (t, kind);
        match list.binary_search_by(|m| (m.tenant, m.kind).cmp(&key)) {
            Ok(pos) => list[pos].role = r,
            Err(pos) => {
                // First membership of this user here (its neighbours are other tenants): then
                // the user joins the tenant's member list; no scan of that list needed.
                let first_here =
                    !(pos > 0 && list[pos - 1].tenant == t || list.get(pos).is_some_and(|m| m.tenant == t));
                list.insert(pos, Member { tenant: t, role: r, kind });
                self.membership_count += 1;
                if first_here {
                    self.members_of[t as usize].push(u);
                }
            }
        }
    }

    pub fn remove_membership(&mut self, user: Uuid, tenant: Uuid, kind: MemberKind) {
        let (Some(&u), Some(&t)) = (self.user_ids.get(&user), self.tenant_ids.get(&tenant)) else { return };
        let list = &mut self.memberships[u as usize];
        if let Ok(pos) = list.binary_search_by(|m| (m.tenant, m.kind).cmp(&(t, kind))) {
            list.remove(pos);
            self.membership_count -= 1;
            if !list.iter().any(|m| m.tenant == t) {
                self.members_of[t as usize].retain(|x| *x != u);
            }
        }
    }

    pub fn assign(&mut self, technician: Uuid, client: Uuid) {
        let u = self.user_slot(technician);
        let c = self.tenant_slot(client);
        let list = &mut self.assigned[u as usize];
        if let Err(pos) = list.binary_search(&c) {
            list.insert(pos, c);
        }
    }

    pub fn unassign(&mut self, technician: Uuid, client: Uuid) {
        let (Some(&u), Some(&c)) = (self.user_ids.get(&technician), self.tenant_ids.get(&client)) else { return };
        let list = &mut self.assigned[u as usize];
        if let Ok(pos) = list.binary_search(&c) {
            list.remove(pos);
        }
    }

    pub fn set_owner(&mut self, owner: Option<Uuid>) {
        self.owner = owner.map_or(NONE, |o| self.user_slot(o));
    }

    /// Before a fresh tenancy snapshot: drop tenants' state, memberships and assignments.
    pub fn reset_tenancy(&mut self) {
        for t in &mut self.tenants {
            t.state = TenantState::Unknown;
        }
        self.memberships.iter_mut().for_each(Vec::clear);
        self.assigned.iter_mut().for_each(Vec::clear);
        self.members_of.iter_mut().for_each(Vec::clear);
        self.tenant_order.clear();
        self.membership_count = 0;
        self.owner = NONE;
    }

    /// Trims vectors grown by doubling (after a snapshot).
    pub fn compact(&mut self) {
        self.memberships.iter_mut().for_each(Vec::shrink_to_fit);
        self.members_of.iter_mut().for_each(Vec::shrink_to_fit);
        self.assigned.iter_mut().for_each(Vec::shrink_to_fit);
    }
}
