//! Decisions and delegation per shipped pack, each test taken from the access rules the pack
//! was written to reproduce (its file's header states them).

use std::collections::HashMap;

use uuid::Uuid;

use super::{
    index::{
        GrantAccess, GrantDenial, GrantRecord, Index, MemberKind, OverrideRecord, OwnData, Reason, ResourceRecord,
        RoleGrantQuestion, TenantKind, TenantState, UserState,
    },
    policy::{Policy, shipped_pack},
};

/// A small world: the MSP (admin tenancy), clients A and B, department A1 under A.
struct World {
    index: Index,
    ids: HashMap<&'static str, Uuid>,
    own: OwnData,
    /// Client users whose home is set.
    homes: Vec<Uuid>,
}

impl World {
    fn new(pack: &str) -> Self {
        let policy = Policy::parse(shipped_pack(pack).unwrap_or_default(), 0).unwrap();
        let mut w = Self { index: Index::new(policy), ids: HashMap::new(), own: OwnData::default(), homes: Vec::new() };
        let msp = w.id("msp");
        let a = w.id("A");
        let a1 = w.id("A1");
        let b = w.id("B");
        w.index.upsert_tenant(msp, None, TenantKind::Admin, TenantState::Active);
        w.index.upsert_tenant(a, Some(msp), TenantKind::Client, TenantState::Active);
        w.index.upsert_tenant(a1, Some(a), TenantKind::Department, TenantState::Active);
        w.index.upsert_tenant(b, Some(msp), TenantKind::Client, TenantState::Active);
        w.index.finish();
        w
    }
    fn id(&mut self, name: &'static str) -> Uuid {
        *self.ids.entry(name).or_insert_with(Uuid::new_v4)
    }
    /// A user with one direct membership; MSP staff get shadows in every other tenant.
    fn user(&mut self, name: &'static str, tenant: &'static str, role: &str) -> &mut Self {
        let u = self.id(name);
        let staff = tenant == "msp";
        self.index.upsert_user(u, UserState::Active, staff);
        let t = self.id(tenant);
        // A client user's first membership is their home, as identity creates them.
        if !staff && !self.homes.contains(&u) {
            self.homes.push(u);
            self.index.set_user_home(u, Some(t));
        }
        self.index.upsert_membership(u, t, role, MemberKind::Direct);
        if staff {
            for other in ["A", "A1", "B"] {
                let t = self.id(other);
                self.index.upsert_membership(u, t, role, MemberKind::Shadow);
            }
        }
        self
    }
    fn assign(&mut self, tech: &'static str, client: &'static str) {
        let (u, c) = (self.id(tech), self.id(client));
        self.index.assign(u, c);
    }
    fn decide(&mut self, user: &'static str, perm: &str, tenant: &'static str) -> Reason {
        let (u, t) = (self.id(user), self.id(tenant));
        self.index.decide_names(&u, perm, &t, None).reason
    }
    fn can(&mut self, user: &'static str, perm: &str, tenant: &'static str) -> bool {
        self.decide(user, perm, tenant).allowed()
    }
    fn grant(
        &mut self,
        actor: &'static str,
        target: Option<&'static str>,
        tenant: &'static str,
        role: Option<&str>,
        previous: Option<&str>,
    ) -> Result<(), GrantDenial> {
        let q = RoleGrantQuestion {
            actor: self.id(actor),
            target: target.map(|t| self.id(t)),
            target_is_msp_staff: false,
            tenant: self.id(tenant),
            role,
            previous_role: previous,
        };
        self.index.check_role_grant(&q)
    }
    fn override_(&mut self, user: &'static str, perm: &str, tenant: Option<&'static str>, deny: bool) {
        let rec = OverrideRecord {
            user: self.id(user),
            permission: perm.to_owned(),
            tenant: tenant.map(|t| self.id(t)),
            deny,
            note: String::new(),
            created_by: String::new(),
            created_at_micros: 0,
        };
        self.own.overrides.push(rec);
        self.index.load_own(self.own.clone());
    }
}

#[test]
fn seed_000_msp_staff_reach_every_tenant_and_technicians_lack_billing_tenants_and_users() {
    let mut w = World::new("msp-assets");
    w.user("admin", "msp", "msp_admin").user("tech", "msp", "msp_technician");
    for t in ["msp", "A", "A1", "B"] {
        assert!(w.can("admin", "billing.manage", t));
        assert!(w.can("admin", "tenants.manage", t));
        assert!(w.can("tech", "assets.checkout", t));
        assert!(w.can("tech", "people.manage", t));
        assert_eq!(w.decide("tech", "billing.manage", t), Reason::DeniedPermissionNotInRole);
        assert!(!w.can("tech", "tenants.manage", t));
        assert!(!w.can("tech", "users.manage", t));
    }
}

#[test]
fn seed_000_client_roles_stay_in_their_tenant_and_its_departments() {
    let mut w = World::new("msp-assets");
    w.user("cadmin", "A", "client_admin").user("manager", "A", "client_manager").user("viewer", "A", "client_viewer");
    assert!(w.can("cadmin", "users.manage", "A"));
    assert!(w.can("cadmin", "settings.manage", "A1"));
    assert_eq!(w.decide("cadmin", "tenants.manage", "A"), Reason::DeniedPermissionNotInRole);
    assert!(!w.can("cadmin", "billing.manage", "A"));
    assert_eq!(w.decide("cadmin", "users.manage", "B"), Reason::DeniedNoMembership);
    assert_eq!(w.decide("cadmin", "assets.view", "msp"), Reason::DeniedNoMembership);
    assert!(w.can("manager", "assets.create", "A") && w.can("manager", "assets.checkout", "A1"));
    assert!(!w.can("manager", "assets.delete", "A"));
    assert!(!w.can("manager", "users.manage", "A") && !w.can("manager", "settings.manage", "A"));
    assert!(w.can("viewer", "assets.view", "A") && w.can("viewer", "assets.export", "A"));
    assert!(!w.can("viewer", "assets.create", "A") && !w.can("viewer", "assets.edit", "A"));
}

#[test]
fn seed_000_overrides_grant_or_deny_one_permission_and_deny_wins() {
    let mut w = World::new("msp-assets");
    w.user("manager", "A", "client_manager").user("viewer", "A", "client_viewer");
    w.override_("manager", "assets.delete", Some("A"), false);
    assert_eq!(w.decide("manager", "assets.delete", "A1"), Reason::GrantedByOverride);
    assert!(!w.can("manager", "assets.delete", "B"));
    w.override_("viewer", "assets.export", None, true);
    assert_eq!(w.decide("viewer", "assets.export", "A"), Reason::DeniedByOverride);
    w.override_("manager", "assets.delete", None, true);
    assert_eq!(w.decide("manager", "assets.delete", "A"), Reason::DeniedByOverride);
}

#[test]
fn inactive_users_and_tenants_are_denied_everything() {
    let mut w = World::new("msp-assets");
    w.user("admin", "msp", "msp_admin").user("cadmin", "A", "client_admin");
    let (admin, a) = (w.id("admin"), w.id("A"));
    w.index.upsert_user(admin, UserState::Suspended, true);
    assert_eq!(w.decide("admin", "assets.view", "B"), Reason::DeniedUserSuspended);
    w.index.upsert_user(admin, UserState::Deleted, true);
    assert_eq!(w.decide("admin", "assets.view", "B"), Reason::DeniedUserDeleted);
    w.index.upsert_user(admin, UserState::Pending, true);
    assert_eq!(w.decide("admin", "assets.view", "B"), Reason::DeniedUserPending);
    let msp = w.id("msp");
    w.index.upsert_tenant(a, Some(msp), TenantKind::Client, TenantState::Suspended);
    assert_eq!(w.decide("cadmin", "assets.view", "A1"), Reason::DeniedTenantSuspended);
    w.index.upsert_tenant(a, Some(msp), TenantKind::Client, TenantState::Archived);
    assert_eq!(w.decide("cadmin", "assets.view", "A"), Reason::DeniedTenantArchived);
    assert_eq!(w.decide("cadmin", "assets.fly", "A"), Reason::DeniedUnknownPermission);
    assert_eq!(w.decide("nobody", "assets.view", "A"), Reason::DeniedUserUnknown);
    assert_eq!(w.decide("cadmin", "assets.view", "nowhere"), Reason::DeniedTenantUnknown);
}

#[test]
fn seed_000_client_admins_cannot_grant_msp_access_act_elsewhere_or_see_msp_users() {
    let mut w = World::new("msp-assets");
    w.user("owner", "msp", "msp_owner").user("admin", "msp", "msp_admin");
    w.user("cadmin", "A", "client_admin").user("cadmin2", "B", "client_admin").user("viewer", "A", "client_viewer");
    assert_eq!(w.grant("cadmin", Some("viewer"), "A", Some("client_manager"), Some("client_viewer")), Ok(()));
    assert_eq!(w.grant("cadmin", Some("viewer"), "A", Some("client_admin"), Some("client_viewer")), Ok(()));
    let q = RoleGrantQuestion {
        actor: w.id("cadmin"),
        target: None,
        target_is_msp_staff: true,
        tenant: w.id("msp"),
        role: Some("msp_technician"),
        previous_role: None,
    };
    // The admin tenancy is unknown to client users.
    assert_eq!(w.index.check_role_grant(&q), Err(GrantDenial::TenantUnknown));
    let q = RoleGrantQuestion { target: Some(w.id("admin")), tenant: w.id("A"), previous_role: None, ..q };
    assert_eq!(w.index.check_role_grant(&q), Err(GrantDenial::TargetHidden));
    // Another client is, to a client admin, as unknown as a tenant that does not exist.
    assert_eq!(w.grant("cadmin", None, "B", Some("client_viewer"), None), Err(GrantDenial::TenantUnknown));
    assert_eq!(w.grant("cadmin", Some("cadmin2"), "A", Some("client_viewer"), None), Err(GrantDenial::TargetHidden));
    assert_eq!(w.grant("cadmin", Some("admin"), "A", Some("client_viewer"), None), Err(GrantDenial::TargetHidden));
    assert_eq!(w.grant("cadmin", None, "A", Some("msp_admin"), None), Err(GrantDenial::MspStaffOnlyRole));
    // A manager given users.manage by override still cannot grant above their own rank.
    w.user("manager", "A", "client_manager");
    w.override_("manager", "users.manage", Some("A"), false);
    assert_eq!(w.grant("manager", None, "A", Some("client_admin"), None), Err(GrantDenial::RoleAboveOwn));
    assert_eq!(w.grant("manager", None, "A", Some("client_viewer"), None), Ok(()));
    assert_eq!(w.grant("viewer", None, "A", Some("client_viewer"), None), Err(GrantDenial::PermissionDenied));
}

#[test]
fn owner_role_is_never_granted_or_revoked_and_the_last_admin_stays() {
    let mut w = World::new("msp-assets");
    w.user("owner", "msp", "msp_owner").user("admin", "msp", "msp_admin").user("cadmin", "A", "client_admin");
    assert_eq!(
        w.grant("owner", Some("admin"), "msp", Some("msp_owner"), Some("msp_admin")),
        Err(GrantDenial::OwnerRoleNotAssignable)
    );
    assert_eq!(
        w.grant("admin", Some("owner"), "msp", Some("msp_admin"), Some("msp_owner")),
        Err(GrantDenial::OwnerNotRemovable)
    );
    assert_eq!(
        w.grant("admin", Some("cadmin"), "A", Some("client_viewer"), Some("client_admin")),
        Err(GrantDenial::LastAdmin)
    );
    assert_eq!(w.grant("admin", Some("cadmin"), "A", None, Some("client_admin")), Err(GrantDenial::LastAdmin));
    w.user("cadmin2", "A", "client_admin");
    assert_eq!(w.grant("admin", Some("cadmin"), "A", Some("client_viewer"), Some("client_admin")), Ok(()));
    assert_eq!(w.grant("admin", None, "A", Some("msp_admin"), None), Err(GrantDenial::MspStaffOnlyRole));
    let q = RoleGrantQuestion {
        actor: w.id("admin"),
        target: None,
        target_is_msp_staff: true,
        tenant: w.id("A"),
        role: Some("msp_admin"),
        previous_role: None,
    };
    assert_eq!(w.index.check_role_grant(&q), Err(GrantDenial::ScopeMismatch));
}

#[test]
fn seed_001_sales_reps_see_channels_by_hierarchy_and_admins_see_all() {
    let mut w = World::new("demand-forecast");
    w.user("admin", "A", "admin").user("rep", "A", "sales_rep").user("sys", "msp", "system_admin");
    let a = w.id("A");
    let node = |id: &str, parent: &str, t: &str| ResourceRecord {
        tenant: a,
        resource_id: id.to_owned(),
        resource_type: t.to_owned(),
        parent: parent.to_owned(),
        display_name: String::new(),
        created_at_micros: 0,
        updated_at_micros: 0,
    };
    w.own.resources = vec![
        node("all", "", "all_channels"),
        node("retail", "all", "channel_type"),
        node("retail-eu", "retail", "region"),
        node("shop-paris", "retail-eu", "channel"),
        node("retail-us", "retail", "region"),
        node("shop-nyc", "retail-us", "channel"),
    ];
    let grant = |user: Uuid, node: &str, access: GrantAccess| GrantRecord {
        grant_id: Uuid::new_v4(),
        user,
        tenant: a,
        resource_id: node.into(),
        access,
        granted_by: String::new(),
        created_at_micros: 0,
    };
    // "Assign channels" (a region) and "Set permissions" (editing on one channel).
    let rep = w.id("rep");
    w.own.grants = vec![
        grant(rep, "retail-eu", GrantAccess::Role("sales_channel".into())),
        grant(rep, "shop-paris", GrantAccess::Permission("forecasts.edit".into())),
    ];
    w.index.load_own(w.own.clone());
    let admin = w.id("admin");
    let on = |w: &World, u: &Uuid, p: &str, r: &str| w.index.decide_names(u, p, &a, Some(r)).reason;
    assert_eq!(on(&w, &rep, "channels.view", "shop-paris"), Reason::GrantedByResourceGrant);
    assert_eq!(on(&w, &rep, "channels.view", "retail-eu"), Reason::GrantedByResourceGrant);
    assert_eq!(on(&w, &rep, "channels.view", "shop-nyc"), Reason::DeniedPermissionNotInRole);
    assert_eq!(on(&w, &rep, "channels.view", "nowhere"), Reason::DeniedResourceUnknown);
    assert_eq!(on(&w, &admin, "channels.view", "shop-nyc"), Reason::GrantedByMembership);
    // Sales features "based on channel assignments": forecasts and sales history on the
    // assigned channels only, never tenant-wide; editing only where it was granted.
    for p in ["forecasts.view", "sales_history.view"] {
        assert_eq!(on(&w, &rep, p, "shop-paris"), Reason::GrantedByResourceGrant, "{p}");
        assert_eq!(on(&w, &rep, p, "shop-nyc"), Reason::DeniedPermissionNotInRole, "{p}");
        assert_eq!(w.decide("rep", p, "A"), Reason::DeniedPermissionNotInRole, "{p}");
        assert_eq!(on(&w, &admin, p, "shop-nyc"), Reason::GrantedByMembership, "{p}");
    }
    assert_eq!(on(&w, &rep, "forecasts.edit", "shop-paris"), Reason::GrantedByResourceGrant);
    assert_eq!(on(&w, &rep, "forecasts.edit", "retail-eu"), Reason::DeniedPermissionNotInRole);
    assert!(!w.can("rep", "forecasts.edit", "A"));
    // Not per channel: SKUs and collections, the command palette.
    assert!(w.can("rep", "skus.view", "A") && w.can("rep", "command_palette.use", "A"));
    assert!(!w.can("rep", "skus.manage", "A"));
    for p in [
        "inventory.manage",
        "integrations.manage",
        "transactions.view",
        "settings.manage",
        "users.manage",
        "dimensions.manage",
    ] {
        assert!(!w.can("rep", p, "A"), "{p}");
    }
    assert!(w.can("admin", "users.manage", "A") && !w.can("admin", "mapper.configure", "A"));
    assert!(w.can("sys", "mapper.configure", "A") && w.can("sys", "data.bulk_delete", "A"));
}

#[test]
fn seed_002_msp_users_manage_only_assigned_clients_with_their_departments() {
    let mut w = World::new("msp-panel");
    w.user("owner", "msp", "owner").user("admin", "msp", "msp_admin").user("mspuser", "msp", "msp_user");
    w.user("billing", "msp", "billing_only").user("end", "A", "end_client");
    w.assign("mspuser", "A");
    assert!(w.can("mspuser", "clients.manage", "A") && w.can("mspuser", "departments.create", "A1"));
    assert_eq!(w.decide("mspuser", "clients.manage", "B"), Reason::DeniedOutsideAssignedTenants);
    for p in ["billing.view", "users.manage", "tenants.manage", "assignments.manage"] {
        assert!(!w.can("mspuser", p, "A"), "{p}");
    }
    assert!(w.can("admin", "clients.manage", "B"));
    assert!(w.can("billing", "billing.view", "msp") && !w.can("billing", "clients.view", "A"));
    assert!(w.can("end", "clients.view", "A1") && !w.can("end", "devices.manage", "A"));
    assert!(!w.can("end", "departments.create", "A") && !w.can("end", "clients.manage", "A"));
    // "view all the information of the clients they are assigned to": one end_client membership
    // per client (each covering its departments), since tenancy assigns clients to MSP staff only.
    let (end, b) = (w.id("end"), w.id("B"));
    assert_eq!(w.decide("end", "clients.view", "B"), Reason::DeniedNoMembership);
    w.index.upsert_membership(end, b, "end_client", MemberKind::Direct);
    assert!(w.can("end", "clients.view", "B") && w.can("end", "devices.view", "A1"));
    assert!(!w.can("end", "clients.view", "msp") && !w.can("end", "devices.manage", "B"));
    assert_eq!(w.grant("owner", None, "msp", Some("owner"), None), Err(GrantDenial::OwnerRoleNotAssignable));
}

#[test]
fn seed_003_users_page_admits_admins_and_managers_and_the_audit_log_only_admins() {
    let mut w = World::new("platform");
    w.user("super", "msp", "SUPER_ADMIN");
    w.user("admin", "A", "ADMIN").user("manager", "A", "MANAGER").user("agent", "A", "AGENT");
    w.user("customer", "A", "CUSTOMER").user("vendor", "A", "VENDOR");
    for u in ["super", "admin", "manager"] {
        assert!(w.can(u, "users.view", "A"), "{u}");
    }
    assert!(!w.can("agent", "users.view", "A") && !w.can("customer", "users.view", "A"));
    assert!(w.can("super", "audit.view", "A") && w.can("admin", "audit.view", "A"));
    assert!(!w.can("manager", "audit.view", "A"));
    assert!(w.can("super", "memberships.manage", "B") && !w.can("admin", "memberships.manage", "A"));
    assert!(w.can("customer", "portal.customer", "A") && !w.can("customer", "portal.vendor", "A"));
    // "The user list and invite pages admit ADMIN, SUPER_ADMIN, and MANAGER": a MANAGER invites
    // (users.invite, the pack's invite permission) roles up to their own rank; changing an
    // existing user's role stays with users.manage; an AGENT invites nobody.
    assert_eq!(w.index.policy.invite_permission, "users.invite");
    assert!(!w.can("manager", "users.manage", "A"));
    for role in ["AGENT", "MANAGER", "CUSTOMER", "VENDOR"] {
        assert_eq!(w.grant("manager", None, "A", Some(role), None), Ok(()), "{role}");
    }
    assert_eq!(w.grant("manager", None, "A", Some("ADMIN"), None), Err(GrantDenial::RoleAboveOwn));
    assert_eq!(w.grant("manager", None, "B", Some("AGENT"), None), Err(GrantDenial::TenantUnknown));
    assert_eq!(
        w.grant("manager", Some("agent"), "A", Some("MANAGER"), Some("AGENT")),
        Err(GrantDenial::PermissionDenied)
    );
    assert_eq!(w.grant("agent", None, "A", Some("AGENT"), None), Err(GrantDenial::PermissionDenied));
    assert_eq!(w.grant("admin", None, "A", Some("ADMIN"), None), Ok(()));
    assert_eq!(w.grant("admin", Some("agent"), "A", Some("MANAGER"), Some("AGENT")), Ok(()));
    // Packs that name no invite permission keep users.manage for adding users too.
    assert_eq!(
        Policy::parse(shipped_pack("msp-assets").unwrap_or_default(), 0).unwrap().invite_permission,
        "users.manage"
    );
    // Shadow membership: MSP staff operate in a client without being in its directory.
    let (sup, b) = (w.id("super"), w.id("B"));
    let d = w.index.decide_names(&sup, "settings.manage", &b, None);
    assert_eq!(w.index.basis(&d).map(|b| b.kind), Some(MemberKind::Shadow));
}

#[test]
fn seed_004_technicians_manage_assigned_organisations_only_and_the_owner_is_not_revocable() {
    let mut w = World::new("password-manager");
    w.user("owner", "msp", "msp_owner").user("admin", "msp", "msp_admin").user("tech", "msp", "msp_technician");
    w.assign("tech", "B");
    assert!(w.can("tech", "organizations.provision_users", "B") && w.can("tech", "organizations.settings", "B"));
    assert_eq!(w.decide("tech", "organizations.manage", "A"), Reason::DeniedOutsideAssignedTenants);
    assert!(!w.can("tech", "billing.view", "B") && !w.can("tech", "integrations.view", "B"));
    assert!(!w.can("tech", "users.manage", "msp"));
    assert!(w.can("admin", "users.manage", "msp") && w.can("admin", "billing.view", "msp"));
    assert!(!w.can("admin", "billing.manage", "msp") && w.can("owner", "billing.manage", "msp"));
    assert_eq!(w.grant("admin", Some("owner"), "msp", None, Some("msp_owner")), Err(GrantDenial::OwnerNotRemovable));
    assert_eq!(w.grant("admin", Some("tech"), "msp", Some("msp_admin"), Some("msp_technician")), Ok(()));
}

/// LookupTenants walks only the branches a user can reach; over a tree with nested and moved
/// departments, suspended branches, assignments and overrides, it must list exactly the tenants
/// where a decision allows, in id order, across pages.
#[test]
fn lookup_tenants_lists_exactly_the_allowed_tenants() {
    let mut w = World::new("msp-panel");
    let msp = w.id("msp");
    let mut rng = 0x9E37_79B9_7F4A_7C15_u64;
    let mut next = move |n: usize| {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        (rng % n as u64) as usize
    };
    let mut clients = Vec::new();
    let mut all = vec![msp, w.id("A"), w.id("A1"), w.id("B")];
    for i in 0..30 {
        let c = Uuid::new_v4();
        let state = if i % 7 == 0 { TenantState::Suspended } else { TenantState::Active };
        w.index.upsert_tenant(c, Some(msp), TenantKind::Client, state);
        let mut parent = c;
        for _ in 0..next(4) {
            let d = Uuid::new_v4();
            w.index.upsert_tenant(d, Some(parent), TenantKind::Department, TenantState::Active);
            all.push(d);
            parent = if next(2) == 0 { d } else { c };
        }
        clients.push(c);
        all.push(c);
    }
    // A department moves to another client, after the fact.
    let moved = Uuid::new_v4();
    w.index.upsert_tenant(moved, Some(clients[1]), TenantKind::Department, TenantState::Active);
    w.index.upsert_tenant(moved, Some(clients[2]), TenantKind::Department, TenantState::Active);
    all.push(moved);
    w.index.finish();

    let mut users = Vec::new();
    for i in 0..12 {
        let u = Uuid::new_v4();
        w.index.upsert_user(u, UserState::Active, i % 3 == 0);
        match i % 3 {
            0 => {
                w.index.upsert_membership(u, msp, "msp_user", MemberKind::Direct);
                for _ in 0..4 {
                    w.index.assign(u, clients[next(clients.len())]);
                }
            }
            1 => w.index.upsert_membership(u, clients[next(clients.len())], "end_client", MemberKind::Direct),
            _ => w.index.upsert_membership(u, all[next(all.len())], "end_client", MemberKind::Direct),
        }
        users.push(u);
    }
    w.index.upsert_user(users[4], UserState::Suspended, false);
    // Overrides: one tenant-wide grant, one deny, one grant everywhere.
    for (k, (tenant, deny)) in
        [(Some(clients[5]), false), (Some(clients[2]), true), (None, false)].into_iter().enumerate()
    {
        w.own.overrides.push(OverrideRecord {
            user: users[k + 1],
            permission: "devices.view".into(),
            tenant: tenant.map(|t| all[all.iter().position(|x| *x == t).unwrap_or(0)]),
            deny,
            note: String::new(),
            created_by: String::new(),
            created_at_micros: 0,
        });
    }
    w.index.load_own(w.own.clone());

    all.sort();
    for perm in ["devices.view", "clients.manage", "billing.manage"] {
        let bit = w.index.policy.permission_bit(perm).unwrap();
        for u in &users {
            let expected: Vec<Uuid> =
                all.iter().copied().filter(|t| w.index.decide_names(u, perm, t, None).allowed()).collect();
            let slot = w.index.known_user_slot(u).unwrap();
            let mut listed = Vec::new();
            let mut after = None;
            loop {
                let (page, more) = w.index.lookup_tenants(slot, bit, after, 3);
                listed.extend_from_slice(&page);
                after = page.last().copied();
                if !more {
                    break;
                }
            }
            assert_eq!(listed, expected, "{perm} for a user");
        }
    }
}
