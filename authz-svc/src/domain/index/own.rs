//! authz's own data (custom roles, overrides, resources, grants): prepared beside decisions,
//! then installed under a short write lock.

use std::collections::HashMap;

use uuid::Uuid;

use super::{
    Grant, GrantAccess, GrantRecord, IdMap, Index, MAX_ROLE_SLOTS, NONE, Node, Override, OverrideRecord, ResourceRecord,
};
use crate::domain::policy::RoleDef;

/// authz's own data, loaded from its schema.
#[derive(Debug, Clone, Default)]
pub struct OwnData {
    pub revision: u64,
    pub custom_roles: Vec<RoleDef>,
    pub overrides: Vec<OverrideRecord>,
    pub resources: Vec<ResourceRecord>,
    pub grants: Vec<GrantRecord>,
}

/// authz's own data resolved against an index ([`Index::prepare_own`]), ready to be swapped in
/// ([`Index::install_own`]) under a short write lock.
pub struct PreparedOwn {
    revision: u64,
    /// Users, tenants and roles the index held when this was prepared: the new ones below take
    /// the slots from there.
    bases: (usize, usize, usize),
    new_users: Vec<Uuid>,
    new_tenants: Vec<Uuid>,
    roles: Vec<RoleDef>,
    role_defined: Vec<bool>,
    role_ids: HashMap<String, u16>,
    overrides: IdMap<u32, Vec<Override>>,
    override_records: Vec<OverrideRecord>,
    nodes: Vec<Node>,
    node_ids: HashMap<(u32, String), u32>,
    grant_records: Vec<GrantRecord>,
}

impl PreparedOwn {
    /// The data back, to prepare it again.
    fn into_data(self) -> OwnData {
        OwnData {
            revision: self.revision,
            custom_roles: self
                .roles
                .into_iter()
                .zip(self.role_defined)
                .filter(|(role, defined)| *defined && !role.built_in)
                .map(|(role, _)| role)
                .collect(),
            overrides: self.override_records,
            resources: self.nodes.into_iter().map(|n| n.record).collect(),
            grants: self.grant_records,
        }
    }
}

/// Slots for ids while preparing: the index's, or the next free ones for ids it lacks.
struct NewSlots<'a> {
    known: &'a IdMap<Uuid, u32>,
    base: usize,
    new: Vec<Uuid>,
    new_ids: IdMap<Uuid, u32>,
}

impl<'a> NewSlots<'a> {
    fn new(known: &'a IdMap<Uuid, u32>, base: usize) -> Self {
        Self { known, base, new: Vec::new(), new_ids: IdMap::default() }
    }
    fn slot(&mut self, id: Uuid) -> u32 {
        if let Some(&i) = self.known.get(&id).or_else(|| self.new_ids.get(&id)) {
            return i;
        }
        let i = (self.base + self.new.len()) as u32;
        self.new.push(id);
        self.new_ids.insert(id, i);
        i
    }
}

impl Index {
    // ---------- authz's own data ----------

    /// Replaces custom roles, overrides, resources and grants with what authz's schema holds.
    pub fn load_own(&mut self, data: OwnData) {
        let prepared = self.prepare_own(data);
        drop(self.install_own(prepared));
    }

    /// Builds everything [`Index::load_own`] replaces, reading the index only: the part that
    /// scales with authz's data (overrides, nodes, grants) is done here, beside decisions, and
    /// [`Index::install_own`] only swaps it in. Users, tenants and roles seen for the first
    /// time are given the next free slots, which `install_own` then takes.
    pub fn prepare_own(&self, data: OwnData) -> PreparedOwn {
        // Custom roles: slots stay (memberships refer to them); undefined ones grant nothing.
        let mut roles = self.roles.clone();
        let mut role_defined = self.role_defined.clone();
        let mut role_ids = self.role_ids.clone();
        for (i, role) in roles.iter_mut().enumerate() {
            if !role.built_in {
                role_defined[i] = false;
                role.permissions = 0;
                role.rank = i32::MIN;
                role.assignable = false;
            }
        }
        for role in data.custom_roles {
            match role_ids.get(&role.name).copied() {
                Some(id) if roles[id as usize].built_in => {}
                Some(id) => {
                    roles[id as usize] = role;
                    role_defined[id as usize] = true;
                }
                None => match u16::try_from(roles.len()).ok().filter(|id| usize::from(*id) < MAX_ROLE_SLOTS) {
                    None => tracing::warn!(role = role.name, "role slots exhausted; custom role not loaded"),
                    Some(id) => {
                        role_ids.insert(role.name.clone(), id);
                        roles.push(role);
                        role_defined.push(true);
                    }
                },
            }
        }
        let mut users = NewSlots::new(&self.user_ids, self.users.len());
        let mut tenants = NewSlots::new(&self.tenant_ids, self.tenants.len());
        let mut overrides: IdMap<u32, Vec<Override>> = IdMap::default();
        for (i, o) in data.overrides.iter().enumerate() {
            let Some(bit) = self.policy.permission_bit(&o.permission) else { continue };
            let user = users.slot(o.user);
            let tenant = o.tenant.map_or(NONE, |t| tenants.slot(t));
            overrides.entry(user).or_default().push(Override { bit, tenant, deny: o.deny, record: i as u32 });
        }
        let mut nodes = Vec::with_capacity(data.resources.len());
        let mut node_ids = HashMap::with_capacity(data.resources.len());
        for r in data.resources {
            let t = tenants.slot(r.tenant);
            node_ids.insert((t, r.resource_id.clone()), nodes.len() as u32);
            nodes.push(Node { parent: NONE, record: r, grants: Vec::new() });
        }
        for node in &mut nodes {
            if node.record.parent.is_empty() {
                continue;
            }
            let t = tenants.slot(node.record.tenant);
            node.parent = node_ids.get(&(t, node.record.parent.clone())).copied().unwrap_or(NONE);
        }
        for (i, g) in data.grants.iter().enumerate() {
            let t = tenants.slot(g.tenant);
            let Some(&node) = node_ids.get(&(t, g.resource_id.clone())) else { continue };
            let (perms, staff_only) = match &g.access {
                GrantAccess::Role(r) => role_ids
                    .get(r)
                    .map_or((0, false), |id| (roles[*id as usize].permissions, roles[*id as usize].msp_staff_only)),
                GrantAccess::Permission(p) => (self.policy.permission_bit(p).map_or(0, |b| 1u128 << b), false),
            };
            let user = users.slot(g.user);
            nodes[node as usize].grants.push(Grant { user, perms, record: i as u32, staff_only });
        }
        PreparedOwn {
            revision: data.revision,
            bases: (self.users.len(), self.tenants.len(), self.roles.len()),
            new_users: users.new,
            new_tenants: tenants.new,
            roles,
            role_defined,
            role_ids,
            overrides,
            override_records: data.overrides,
            nodes,
            node_ids,
            grant_records: data.grants,
        }
    }

    /// Swaps in what [`Index::prepare_own`] built (interning the users and tenants it saw
    /// first) and returns what it replaced, to be dropped after the write lock is released.
    /// If slots were taken since it was prepared (a caller not holding the writers' mutex),
    /// it is prepared again here, so it never refers to the wrong user or tenant.
    pub fn install_own(&mut self, prepared: PreparedOwn) -> PreparedOwn {
        let mut p = prepared;
        if p.bases != (self.users.len(), self.tenants.len(), self.roles.len()) {
            p = self.prepare_own(p.into_data());
        }
        for id in &p.new_users {
            self.user_slot(*id);
        }
        for id in &p.new_tenants {
            self.tenant_slot(*id);
        }
        std::mem::swap(&mut self.roles, &mut p.roles);
        std::mem::swap(&mut self.role_defined, &mut p.role_defined);
        std::mem::swap(&mut self.role_ids, &mut p.role_ids);
        std::mem::swap(&mut self.overrides, &mut p.overrides);
        std::mem::swap(&mut self.override_records, &mut p.override_records);
        std::mem::swap(&mut self.nodes, &mut p.nodes);
        std::mem::swap(&mut self.node_ids, &mut p.node_ids);
        std::mem::swap(&mut self.grant_records, &mut p.grant_records);
        self.revisions.authz = p.revision;
        p.new_users.clear();
        p.new_tenants.clear();
        p
    }
}
