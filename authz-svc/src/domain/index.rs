//! The in-memory index every decision reads, and the decision and delegation rules.
//!
//! Users and tenants are interned as `u32` (their UUIDs map to slots once and never move);
//! roles are `u16`; a role's permissions are a `u128` bitset. A user's memberships are one
//! sorted vector of 8-byte entries, so a decision is a walk up the tenant's ancestors (at most
//! the tree depth) with a binary search in that vector at each level. Writers apply whole
//! revisions under the lock; readers hold it only for the microseconds of a decision.
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

use std::{
    collections::{BTreeMap, HashMap},
    hash::{BuildHasherDefault, Hasher},
};

use uuid::Uuid;

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
    member: Option<(u32, u16, MemberKind)>,
    override_record: Option<u32>,
    grant_record: Option<u32>,
    /// For tenant denials: which tenant of the chain blocked.
    blocking_tenant: u32,
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

    // ---------- reading ----------

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
    fn admin_slot(&self) -> Option<u32> {
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

    // ---------- explaining ----------

    pub fn basis(&self, d: &Decision) -> Option<Basis> {
        let (t, r, kind) = d.member?;
        let role = &self.roles[r as usize];
        Some(Basis { tenant: self.tenants[t as usize].id, kind, role: role.name.clone(), scope: role.scope })
    }
    pub fn decision_override(&self, d: &Decision) -> Option<&OverrideRecord> {
        self.override_records.get(d.override_record? as usize)
    }
    pub fn decision_grant(&self, d: &Decision) -> Option<&GrantRecord> {
        self.grant_records.get(d.grant_record? as usize)
    }
    pub fn blocking_tenant(&self, d: &Decision) -> Option<Uuid> {
        (d.blocking_tenant != NONE).then(|| self.tenants[d.blocking_tenant as usize].id)
    }

    /// One readable line for a decision.
    pub fn summary(&self, user: &Uuid, permission: &str, tenant: &Uuid, d: &Decision) -> String {
        let kind = |k: MemberKind| match k {
            MemberKind::Direct => "direct",
            MemberKind::Shadow => "shadow",
            MemberKind::Assigned => "assigned",
        };
        let scope_of = |o: &OverrideRecord| o.tenant.map_or("everywhere".to_owned(), |t| format!("in tenant {t}"));
        match d.reason {
            Reason::GrantedByMembership
            | Reason::DeniedPermissionNotInRole
            | Reason::DeniedOutsideAssignedTenants
            | Reason::DeniedNotMspStaff => {
                let b = self.basis(d);
                let (k, t, r, sc) = b.map_or(("?", String::new(), String::new(), "?"), |b| {
                    (kind(b.kind), b.tenant.to_string(), b.role, b.scope.as_str())
                });
                match d.reason {
                    Reason::GrantedByMembership => format!(
                        "allowed: {k} membership in tenant {t} (role {r}, scope {sc}) grants {permission} in tenant {tenant}"
                    ),
                    Reason::DeniedPermissionNotInRole => format!(
                        "denied: {k} membership in tenant {t} reaches tenant {tenant} but role {r} lacks {permission}"
                    ),
                    Reason::DeniedNotMspStaff => format!(
                        "denied: role {r} ({k} membership in tenant {t}) is for MSP staff only and user {user} is not MSP staff, so no membership reaches tenant {tenant}"
                    ),
                    _ => format!(
                        "denied: role {r} ({k} membership in tenant {t}) is scoped to assigned tenants and tenant {tenant} is not under a client assigned to user {user}"
                    ),
                }
            }
            Reason::GrantedByOverride => match self.decision_override(d) {
                Some(o) => format!("allowed: a grant override of {permission} for user {user} {}", scope_of(o)),
                None => format!("allowed: a grant override of {permission}"),
            },
            Reason::DeniedByOverride => match self.decision_override(d) {
                Some(o) => {
                    format!("denied: a deny override of {permission} for user {user} {} (deny wins)", scope_of(o))
                }
                None => format!("denied: a deny override of {permission}"),
            },
            Reason::GrantedByResourceGrant => match self.decision_grant(d) {
                Some(g) => format!(
                    "allowed: resource grant {} on {} ({}) covers the resource",
                    g.grant_id,
                    g.resource_id,
                    match &g.access {
                        GrantAccess::Role(r) => format!("role {r}"),
                        GrantAccess::Permission(p) => format!("permission {p}"),
                    }
                ),
                None => "allowed: a resource grant".to_owned(),
            },
            Reason::DeniedNoMembership => {
                format!(
                    "denied: user {user} has no membership in tenant {tenant} or its ancestors granting {permission}"
                )
            }
            Reason::DeniedUserSuspended => format!("denied: user {user} is suspended"),
            Reason::DeniedUserPending => format!("denied: user {user} has not accepted their invitation"),
            Reason::DeniedUserDeleted => format!("denied: user {user} is deleted"),
            Reason::DeniedUserUnknown => format!("denied: user {user} is unknown"),
            Reason::DeniedTenantSuspended => format!(
                "denied: tenant {} is suspended",
                self.blocking_tenant(d).map_or(tenant.to_string(), |t| t.to_string())
            ),
            Reason::DeniedTenantArchived => format!(
                "denied: tenant {} is archived",
                self.blocking_tenant(d).map_or(tenant.to_string(), |t| t.to_string())
            ),
            Reason::DeniedTenantUnknown => format!("denied: tenant {tenant} is unknown"),
            Reason::DeniedTenantChainBroken => {
                format!("denied: the ancestors of tenant {tenant} form a cycle or too deep a chain (tenant unknown)")
            }
            Reason::DeniedUnknownPermission => format!("denied: permission {permission:?} is not in the catalog"),
            Reason::DeniedResourceUnknown => format!("denied: no such resource in tenant {tenant}"),
        }
    }

    /// The rules evaluated, in order, one line each.
    pub fn steps(&self, d: &Decision) -> Vec<String> {
        let order = [
            ("permission is in the catalog", Reason::DeniedUnknownPermission),
            ("user is known", Reason::DeniedUserUnknown),
            ("user is not deleted", Reason::DeniedUserDeleted),
            ("user is not pending", Reason::DeniedUserPending),
            ("user is not suspended", Reason::DeniedUserSuspended),
            ("tenant is known", Reason::DeniedTenantUnknown),
            ("tenant's ancestor chain is well formed", Reason::DeniedTenantChainBroken),
            ("tenant and its ancestors are not suspended", Reason::DeniedTenantSuspended),
            ("tenant and its ancestors are not archived", Reason::DeniedTenantArchived),
            ("resource is known", Reason::DeniedResourceUnknown),
            ("no deny override applies", Reason::DeniedByOverride),
        ];
        // A grant override counts only with a membership reaching the tenant: said in the tail.
        let mut steps = Vec::new();
        for (text, reason) in order {
            if d.reason == reason {
                steps.push(format!("{text}: no -> denied"));
                return steps;
            }
            steps.push(format!("{text}: yes"));
        }
        let tail = match d.reason {
            Reason::GrantedByOverride => "a membership reaches the tenant and a grant override applies: yes -> allowed",
            Reason::GrantedByMembership => "a membership reaching the tenant holds the permission: yes -> allowed",
            Reason::GrantedByResourceGrant => {
                "a membership grants it: no; a resource grant on the resource or an ancestor: yes -> allowed"
            }
            Reason::DeniedPermissionNotInRole => {
                "membership reaches the tenant but its role lacks the permission -> denied"
            }
            Reason::DeniedOutsideAssignedTenants => {
                "membership's role is scoped to assigned tenants; not assigned -> denied"
            }
            Reason::DeniedNotMspStaff => {
                "the only memberships reaching the tenant hold MSP-staff-only roles; the user is not MSP staff -> denied"
            }
            _ => "no override, membership or resource grant gives the permission -> denied",
        };
        steps.push(tail.to_owned());
        steps
    }

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

    // ---------- delegation ----------

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

    /// A target the actor may see: known and not deleted; for an actor who is not MSP staff,
    /// also not MSP staff and at home in the actor's home tenant or one of its departments.
    /// One rule for every question a person asks about someone else: anyone else is, to
    /// them, as unknown as a random id.
    fn visible_target(&self, actor: u32, target: &Uuid) -> Option<u32> {
        let t = *self.user_ids.get(target)?;
        let entry = self.users[t as usize];
        if matches!(entry.state, UserState::Unknown | UserState::Deleted) {
            return None;
        }
        self.reaches_user(actor, t).then_some(t)
    }

    /// MSP staff reach every user; anyone else only users who are not MSP staff and whose
    /// home is the actor's home or one of its departments.
    fn reaches_user(&self, actor: u32, target: u32) -> bool {
        let (a, t) = (self.users[actor as usize], self.users[target as usize]);
        if a.msp_staff {
            return true;
        }
        !t.msp_staff
            && a.home != NONE
            && t.home != NONE
            && self.chain(t.home).is_some_and(|c| c.as_slice().contains(&a.home))
    }

    /// Whether `target` is a user the index knows whom `viewer` (a person) may not see (see
    /// [`Self::visible_target`]): the caller answers as for an unknown user. Unknown targets
    /// are not "hidden": they are left to the lookup that reports them.
    pub fn hides_user(&self, viewer: &Uuid, target: &Uuid) -> bool {
        let Some(&t) = self.user_ids.get(target) else { return false };
        if self.users[t as usize].state == UserState::Unknown {
            return false;
        }
        self.user_ids.get(viewer).is_none_or(|&v| !self.reaches_user(v, t))
    }

    /// May `viewer` (a person) know that `tenant` exists? MSP staff see every tenant; anyone
    /// else only tenants at or below one where they hold a membership. A tenant they may not
    /// see is answered exactly as an unknown one.
    pub fn tenant_visible_to(&self, viewer: &Uuid, tenant: &Uuid) -> bool {
        let (Some(&u), Some(&t)) = (self.user_ids.get(viewer), self.tenant_ids.get(tenant)) else { return false };
        self.sees_tenant(u, t)
    }

    fn sees_tenant(&self, user: u32, tenant: u32) -> bool {
        if self.users[user as usize].msp_staff {
            return true;
        }
        let Some(chain) = self.chain(tenant) else { return false };
        self.memberships[user as usize].iter().any(|m| chain.as_slice().contains(&m.tenant))
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
