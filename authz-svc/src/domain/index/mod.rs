//! The in-memory index every decision reads, and the decision and delegation rules.
//!
//! Users and tenants are interned as `u32` (their UUIDs map to slots once and never move);
//! roles are `u16`; a role's permissions are a `u128` bitset. A user's memberships are one
//! sorted vector of 8-byte entries, so a decision is a walk up the tenant's ancestors (at most
//! the tree depth) with a binary search in that vector at each level. Writers apply whole
//! revisions under the lock; readers hold it only for the microseconds of a decision.
//!
//! One file per concern, each adding to [`Index`]: `apply` (identity's and tenancy's streams),
//! `own` (authz's own data), `read` (counts and records), `decide` (decisions), `explain`
//! (explanation text), `lookup` (lookups), `visibility` (whom a person may see) and
//! `delegation` (the rules for handing out roles, overrides and grants).
//!
//! Rules:
//!
//! 1. Limits of the encoding: at most 65,535 role names (past that a membership is dropped and a
//!    custom role not loaded, never wrapped onto an existing role) and 128 permissions per pack.
//! 2. Each tenant keeps the users with a membership there (LookupSubjects, the last-admin rule)
//!    and its children; assignments are a sorted vector of clients per technician.
//! 3. A chain with a cycle or deeper than 32 is denied outright (`DENIED_TENANT_CHAIN_BROKEN`),
//!    never decided on the part that was walked.
//! 4. Decision order: user state (unknown, pending, suspended, deleted); tenant or an ancestor
//!    unknown, suspended or archived; resource known; a deny override (deny always wins); then the
//!    memberships that *count* for the tenant; a grant override, only where such a membership
//!    reaches the tenant; a membership whose role holds the permission; a resource grant on the
//!    resource or an ancestor. Otherwise denied with the most specific reason (permission not in
//!    role, not MSP staff, outside assigned tenants, no membership).
//! 5. What counts: a role flagged `msp_staff_only` only while identity says the user is MSP staff
//!    (a demoted staff member keeps nothing through leftover memberships; a resource grant through
//!    such a role likewise); `own_tenant` reaches the membership's tenant and its departments only
//!    (a membership in the admin tenancy never reaches a client); `assigned_tenants` reaches a
//!    tenant only if its client is assigned to the user, or through an ASSIGNED membership.
//! 6. `Explain` uses the same function as `Check`, so they can never disagree.
//! 7. LookupTenants first collects the tops of the branches the user could reach (membership
//!    tenants, assigned clients, tenants of grant overrides) and decides only inside them, in id
//!    order; a user who may reach everything is decided tenant by tenant until the page is full.
//! 8. Locking: the index sits behind an `RwLock`; a writer holds it only to apply one revision,
//!    readers for one decision or one batch. A whole snapshot is applied to a clone while decisions
//!    read the current index, and the write lock covers only the swap; index writers take a
//!    separate writers' mutex so nothing the other stream applies meanwhile is lost.
//! 9. authz's own data is built the same way: `prepare_own` builds roles, overrides, resource nodes
//!    and grants from a read guard under the writers' mutex (planning the next free slots);
//!    `install_own` interns them and swaps them in under a short write lock, re-preparing if the
//!    slots moved anyway.
//! 10. Delegation (`check_role_grant`, `check_override_change`, `check_resource_grant`; who may
//!     ask is in the api module's rules). A role grant takes the target's current role in the
//!     tenant from the index (a caller's `previous_role` can only make the answer stricter) and
//!     refuses: any change to the owner's memberships (`OWNER_NOT_REMOVABLE`); the owner role;
//!     a role not `assignable`; an `msp_staff_only` role for someone not MSP staff; a role whose
//!     scope is not `own_tenant` unless the target is MSP staff and the tenant is the admin
//!     tenancy (`ROLE_SCOPE_MISMATCH`); a role, or a previous role, ranked above the actor's
//!     (`ROLE_ABOVE_OWN`); demoting or removing a tenant's last active administrator
//!     (`LAST_ADMIN`).

mod apply;
mod decide;
mod delegation;
mod explain;
mod lookup;
mod own;
mod read;
mod visibility;

use std::{
    collections::{BTreeMap, HashMap},
    hash::{BuildHasherDefault, Hasher},
};

use uuid::Uuid;

pub use self::{
    decide::{Basis, Decision, Reason, Subject, Unresolved},
    delegation::{ChangeDenial, GrantDenial, RoleGrantQuestion},
    own::{OwnData, PreparedOwn},
};
use super::policy::{PermSet, Policy, RoleDef, Scope};

pub const NONE: u32 = u32::MAX;
/// Guard against a malformed tree (a cycle in what the stream sent): a longer chain is treated
/// as broken and decides nothing.
const MAX_CHAIN: usize = 32;
/// Role slots are `u16`; the last value is never handed out, so an id cannot wrap onto a real
/// role (a flood of role names from a stream would otherwise alias the first roles of the pack).
pub const MAX_ROLE_SLOTS: usize = u16::MAX as usize;

/// A cheap multiplicative hasher for ids that are already random (UUIDs) or dense (`u32`).
#[derive(Default, Clone, Copy)]
pub struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut buf = [0u8; 8];
            buf[..chunk.len()].copy_from_slice(chunk);
            self.write_u64(u64::from_le_bytes(buf));
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = (self.0.rotate_left(5) ^ n).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }
    fn write_u32(&mut self, n: u32) {
        self.write_u64(u64::from(n));
    }
    fn write_usize(&mut self, n: usize) {
        self.write_u64(n as u64);
    }
}

pub type IdMap<K, V> = HashMap<K, V, BuildHasherDefault<IdHasher>>;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UserState {
    /// Interned (an override or grant names it) but not in identity's stream.
    Unknown,
    Pending,
    Active,
    Suspended,
    Deleted,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TenantState {
    Unknown,
    Active,
    Suspended,
    Archived,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TenantKind {
    Admin,
    Client,
    Department,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum MemberKind {
    Direct = 1,
    Shadow = 2,
    Assigned = 3,
}

#[derive(Debug, Clone, Copy)]
struct UserEntry {
    id: Uuid,
    state: UserState,
    msp_staff: bool,
    /// The user's home (identity's primary tenant); NONE for MSP staff and users not yet told.
    home: u32,
}

#[derive(Debug, Clone, Copy)]
struct TenantEntry {
    id: Uuid,
    parent: u32,
    /// The client at the top of the branch (a client: itself); NONE for the admin tenancy.
    client: u32,
    kind: TenantKind,
    state: TenantState,
}

/// One membership: 8 bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Member {
    tenant: u32,
    role: u16,
    kind: MemberKind,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OverrideRecord {
    pub user: Uuid,
    pub permission: String,
    pub tenant: Option<Uuid>,
    pub deny: bool,
    pub note: String,
    pub created_by: String,
    pub created_at_micros: i64,
}

#[derive(Debug, Clone, Copy)]
struct Override {
    bit: u8,
    tenant: u32,
    deny: bool,
    record: u32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResourceRecord {
    pub tenant: Uuid,
    pub resource_id: String,
    pub resource_type: String,
    pub parent: String,
    pub display_name: String,
    pub created_at_micros: i64,
    pub updated_at_micros: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GrantAccess {
    Role(String),
    Permission(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GrantRecord {
    pub grant_id: Uuid,
    pub user: Uuid,
    pub tenant: Uuid,
    pub resource_id: String,
    pub access: GrantAccess,
    pub granted_by: String,
    pub created_at_micros: i64,
}

#[derive(Debug, Clone, Copy)]
struct Grant {
    user: u32,
    perms: PermSet,
    record: u32,
    /// Granted through an `msp_staff_only` role: counts only while the user is MSP staff.
    staff_only: bool,
}

#[derive(Debug, Clone)]
struct Node {
    parent: u32,
    record: ResourceRecord,
    grants: Vec<Grant>,
}

/// How one membership relates to a tenant being decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Reach {
    Counts,
    /// An `msp_staff_only` role of a user who is not MSP staff.
    NotStaff,
    /// An `assigned_tenants` role and the tenant's client is not assigned.
    Outside,
    /// An `own_tenant` role held above the tenant's client (in the admin tenancy).
    NotHere,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Revisions {
    pub identity: u64,
    pub tenancy: u64,
    pub authz: u64,
}

/// Cloned only to rebuild a copy off the lock when a stream re-sends its snapshot.
#[derive(Clone)]
pub struct Index {
    pub policy: Policy,
    pub revisions: Revisions,
    user_ids: IdMap<Uuid, u32>,
    users: Vec<UserEntry>,
    memberships: Vec<Vec<Member>>,
    assigned: Vec<Vec<u32>>,
    tenant_ids: IdMap<Uuid, u32>,
    tenant_order: BTreeMap<Uuid, u32>,
    tenants: Vec<TenantEntry>,
    /// Users with any membership in a tenant (unique, unsorted).
    members_of: Vec<Vec<u32>>,
    /// Each tenant's children (unsorted), for walking a subtree.
    children: Vec<Vec<u32>>,
    roles: Vec<RoleDef>,
    /// False for names only seen in memberships (no permissions) and deleted custom roles.
    role_defined: Vec<bool>,
    role_ids: HashMap<String, u16>,
    owner: u32,
    admin_roles: Vec<u16>,
    overrides: IdMap<u32, Vec<Override>>,
    override_records: Vec<OverrideRecord>,
    nodes: Vec<Node>,
    node_ids: HashMap<(u32, String), u32>,
    grant_records: Vec<GrantRecord>,
    membership_count: usize,
    clients_dirty: bool,
}

/// A tenant and its ancestors, nearest first (no allocation: decisions build one per check).
struct Chain {
    ids: [u32; MAX_CHAIN],
    len: usize,
}

impl Chain {
    fn as_slice(&self) -> &[u32] {
        &self.ids[..self.len]
    }
}

impl Index {
    pub fn new(policy: Policy) -> Self {
        let mut index = Self {
            revisions: Revisions::default(),
            user_ids: IdMap::default(),
            users: Vec::new(),
            memberships: Vec::new(),
            assigned: Vec::new(),
            tenant_ids: IdMap::default(),
            tenant_order: BTreeMap::new(),
            tenants: Vec::new(),
            members_of: Vec::new(),
            children: Vec::new(),
            roles: Vec::new(),
            role_defined: Vec::new(),
            role_ids: HashMap::new(),
            owner: NONE,
            admin_roles: Vec::new(),
            overrides: IdMap::default(),
            override_records: Vec::new(),
            nodes: Vec::new(),
            node_ids: HashMap::new(),
            grant_records: Vec::new(),
            membership_count: 0,
            clients_dirty: false,
            policy,
        };
        // A pack holds far fewer roles than there are slots.
        for role in index.policy.roles.clone() {
            let Some(id) = index.role_slot(&role.name) else { continue };
            index.roles[id as usize] = role;
            index.role_defined[id as usize] = true;
        }
        index.admin_roles = index.policy.admin_roles.clone().iter().filter_map(|r| index.role_slot(r)).collect();
        index
    }

    // ---------- interning ----------

    /// `None` once every slot is taken (see [`MAX_ROLE_SLOTS`]).
    fn role_slot(&mut self, name: &str) -> Option<u16> {
        if let Some(id) = self.role_ids.get(name) {
            return Some(*id);
        }
        let id = u16::try_from(self.roles.len()).ok().filter(|id| usize::from(*id) < MAX_ROLE_SLOTS)?;
        self.roles.push(RoleDef {
            name: name.to_owned(),
            display_name: name.to_owned(),
            description: String::new(),
            permissions: 0,
            scope: Scope::OwnTenant,
            rank: i32::MIN,
            assignable: false,
            msp_staff_only: false,
            built_in: false,
            created_at_micros: 0,
            updated_at_micros: 0,
        });
        self.role_defined.push(false);
        self.role_ids.insert(name.to_owned(), id);
        Some(id)
    }

    /// Whether a new role name could still get a slot.
    pub fn role_slots_full(&self) -> bool {
        self.roles.len() >= MAX_ROLE_SLOTS
    }

    fn user_slot(&mut self, id: Uuid) -> u32 {
        if let Some(i) = self.user_ids.get(&id) {
            return *i;
        }
        let i = self.users.len() as u32;
        self.users.push(UserEntry { id, state: UserState::Unknown, msp_staff: false, home: NONE });
        self.memberships.push(Vec::new());
        self.assigned.push(Vec::new());
        self.user_ids.insert(id, i);
        i
    }

    fn tenant_slot(&mut self, id: Uuid) -> u32 {
        if let Some(i) = self.tenant_ids.get(&id) {
            return *i;
        }
        let i = self.tenants.len() as u32;
        self.tenants.push(TenantEntry {
            id,
            parent: NONE,
            client: NONE,
            kind: TenantKind::Department,
            state: TenantState::Unknown,
        });
        self.members_of.push(Vec::new());
        self.children.push(Vec::new());
        self.tenant_ids.insert(id, i);
        i
    }

    /// The tenant and its ancestors, or `None` when the tree is malformed there (a cycle, or
    /// deeper than [`MAX_CHAIN`]): then nothing is decided on part of it.
    fn chain(&self, tenant: u32) -> Option<Chain> {
        let mut chain = Chain { ids: [NONE; MAX_CHAIN], len: 0 };
        let mut cur = tenant;
        while cur != NONE {
            if chain.len == MAX_CHAIN || chain.as_slice().contains(&cur) {
                return None;
            }
            chain.ids[chain.len] = cur;
            chain.len += 1;
            cur = self.tenants[cur as usize].parent;
        }
        Some(chain)
    }

    /// Whether membership `m` of `user` (held in a tenant of the chain) counts for a tenant
    /// whose client is `client`. One rule for decisions and delegation ranks.
    #[inline]
    fn reach(&self, user: u32, staff: bool, m: &Member, client: u32) -> Reach {
        let role = &self.roles[m.role as usize];
        // A role for MSP staff stops counting when the user stops being MSP staff.
        if role.msp_staff_only && !staff {
            return Reach::NotStaff;
        }
        match role.scope {
            Scope::AllTenants => Reach::Counts,
            // The membership's tenant and its departments: a membership in the admin tenancy
            // (no client) never reaches a client below it.
            Scope::OwnTenant if self.tenants[m.tenant as usize].client == client => Reach::Counts,
            Scope::OwnTenant => Reach::NotHere,
            Scope::AssignedTenants
                if m.kind == MemberKind::Assigned
                    || (client != NONE && self.assigned[user as usize].binary_search(&client).is_ok()) =>
            {
                Reach::Counts
            }
            Scope::AssignedTenants => Reach::Outside,
        }
    }
}
