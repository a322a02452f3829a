//! Reading the index: counts, sizes, roles, records and slots.

use uuid::Uuid;

use super::{
    GrantAccess, GrantRecord, Index, MAX_CHAIN, Member, NONE, OverrideRecord, ResourceRecord, TenantEntry, TenantKind,
    TenantState, UserEntry, UserState,
};
use crate::domain::policy::RoleDef;

impl Index {
    pub fn user_count(&self) -> usize {
        self.users.iter().filter(|u| !matches!(u.state, UserState::Unknown | UserState::Deleted)).count()
    }
    pub fn tenant_count(&self) -> usize {
        self.tenant_order.len()
    }
    pub fn membership_count(&self) -> usize {
        self.membership_count
    }

    /// Bytes the index's membership structures hold (forward and reverse vectors, capacity).
    pub fn membership_bytes(&self) -> usize {
        let vec = std::mem::size_of::<Vec<u32>>();
        let fwd: usize =
            self.memberships.iter().map(|v| v.capacity() * std::mem::size_of::<Member>() + vec).sum::<usize>();
        let rev: usize = self.members_of.iter().map(|v| v.capacity() * 4 + vec).sum::<usize>();
        let asg: usize = self.assigned.iter().map(|v| v.capacity() * 4 + vec).sum::<usize>();
        fwd + rev + asg
    }

    /// Rough total of the index's heap (users, tenants, id maps, memberships).
    pub fn approx_bytes(&self) -> usize {
        let map_entry = 16 + 4 + 8; // key, value, control byte and slack
        self.membership_bytes()
            + self.users.capacity() * std::mem::size_of::<UserEntry>()
            + self.tenants.capacity() * std::mem::size_of::<TenantEntry>()
            + (self.user_ids.capacity() + self.tenant_ids.capacity()) * map_entry
            + self.tenant_order.len() * (16 + 4 + 16)
            + self.children.iter().map(|v| v.capacity() * 4 + std::mem::size_of::<Vec<u32>>()).sum::<usize>()
    }

    pub fn role(&self, name: &str) -> Option<&RoleDef> {
        let id = *self.role_ids.get(name)?;
        self.role_defined[id as usize].then(|| &self.roles[id as usize])
    }

    /// Defined roles, by rank descending then name.
    pub fn roles(&self) -> Vec<&RoleDef> {
        let mut list: Vec<&RoleDef> =
            self.roles.iter().enumerate().filter(|(i, _)| self.role_defined[*i]).map(|(_, r)| r).collect();
        list.sort_by(|a, b| b.rank.cmp(&a.rank).then_with(|| a.name.cmp(&b.name)));
        list
    }

    /// Whether the role is held by a membership or a resource grant.
    pub fn role_in_use(&self, name: &str) -> bool {
        let Some(&id) = self.role_ids.get(name) else { return false };
        self.memberships.iter().any(|l| l.iter().any(|m| m.role == id))
            || self.grant_records.iter().any(|g| g.access == GrantAccess::Role(name.to_owned()))
    }

    pub fn user_known(&self, id: &Uuid) -> bool {
        self.user_ids.get(id).is_some_and(|i| self.users[*i as usize].state != UserState::Unknown)
    }
    /// Whether the user holds a membership under the same client as the tenant.
    pub fn member_of_client(&self, user: &Uuid, tenant: &Uuid) -> bool {
        let (Some(&u), Some(&t)) = (self.user_ids.get(user), self.tenant_ids.get(tenant)) else { return false };
        let client = self.tenants[t as usize].client;
        client != NONE && self.memberships[u as usize].iter().any(|m| self.tenants[m.tenant as usize].client == client)
    }
    pub fn user_is_msp_staff(&self, id: &Uuid) -> bool {
        self.user_ids.get(id).is_some_and(|i| self.users[*i as usize].msp_staff)
    }
    pub fn tenant_known(&self, id: &Uuid) -> bool {
        self.tenant_ids.get(id).is_some_and(|i| self.tenants[*i as usize].state != TenantState::Unknown)
    }
    pub fn admin_tenancy(&self) -> Option<Uuid> {
        self.admin_slot().map(|t| self.tenants[t as usize].id)
    }
    /// The admin tenancy's slot, once the tenancy stream has named it.
    pub(super) fn admin_slot(&self) -> Option<u32> {
        self.tenants
            .iter()
            .position(|t| t.kind == TenantKind::Admin && t.state != TenantState::Unknown)
            .map(|t| t as u32)
    }
    pub fn resource(&self, tenant: &Uuid, resource_id: &str) -> Option<&ResourceRecord> {
        let t = *self.tenant_ids.get(tenant)?;
        let n = *self.node_ids.get(&(t, resource_id.to_owned()))?;
        Some(&self.nodes[n as usize].record)
    }
    pub fn resources(&self) -> impl Iterator<Item = &ResourceRecord> {
        self.nodes.iter().map(|n| &n.record)
    }
    /// True if `ancestor` is `node` or above it (cycle check for moves).
    pub fn resource_is_under(&self, tenant: &Uuid, node: &str, ancestor: &str) -> bool {
        let Some(&t) = self.tenant_ids.get(tenant) else { return false };
        let Some(&mut_node) = self.node_ids.get(&(t, node.to_owned())) else { return false };
        let mut cur = mut_node;
        for _ in 0..MAX_CHAIN * 4 {
            if self.nodes[cur as usize].record.resource_id == ancestor {
                return true;
            }
            cur = self.nodes[cur as usize].parent;
            if cur == NONE {
                return false;
            }
        }
        true
    }
    pub fn resource_depth(&self, tenant: &Uuid, node: &str) -> usize {
        let Some(&t) = self.tenant_ids.get(tenant) else { return 0 };
        let Some(&n) = self.node_ids.get(&(t, node.to_owned())) else { return 0 };
        let mut depth = 1;
        let mut cur = self.nodes[n as usize].parent;
        while cur != NONE && depth < MAX_CHAIN * 4 {
            depth += 1;
            cur = self.nodes[cur as usize].parent;
        }
        depth
    }
    /// The slot of a known (not `Unknown`) user.
    pub fn known_user_slot(&self, id: &Uuid) -> Option<u32> {
        self.user_ids.get(id).copied().filter(|i| self.users[*i as usize].state != UserState::Unknown)
    }
    pub fn tenant_slot_of(&self, id: &Uuid) -> u32 {
        self.tenant_ids.get(id).copied().unwrap_or(NONE)
    }
    pub fn resource_slot(&self, tenant: &Uuid, resource_id: &str) -> u32 {
        let Some(&t) = self.tenant_ids.get(tenant) else { return NONE };
        self.node_ids.get(&(t, resource_id.to_owned())).copied().unwrap_or(NONE)
    }
    pub fn overrides(&self) -> &[OverrideRecord] {
        &self.override_records
    }
    pub fn grants(&self) -> &[GrantRecord] {
        &self.grant_records
    }
}
