//! The in-memory index on its own (no database): limits that must hold however much a stream
//! sends.

// Test code: a failed set-up should panic.
#![allow(clippy::expect_used)]

use authz_svc::domain::{
    index::{Index, MAX_ROLE_SLOTS, MemberKind, OverrideRecord, OwnData, TenantKind, TenantState, UserState},
    policy::{Policy, shipped_pack},
};
use uuid::Uuid;

/// An index of the default pack with the admin tenancy and one client (returned).
fn msp_with_one_client() -> (Index, Uuid) {
    let policy = Policy::parse(shipped_pack("msp-assets").unwrap_or_default(), 0).expect("pack");
    let mut index = Index::new(policy);
    let (msp, a) = (Uuid::new_v4(), Uuid::new_v4());
    index.upsert_tenant(msp, None, TenantKind::Admin, TenantState::Active);
    index.upsert_tenant(a, Some(msp), TenantKind::Client, TenantState::Active);
    index.finish();
    (index, a)
}

#[test]
fn role_names_beyond_the_slots_never_alias_a_packs_role() {
    let (mut index, a) = msp_with_one_client();
    // A stream naming more roles than there are slots: the ones past the end grant nothing
    // (before, the slot id wrapped to 0, the pack's owner role).
    let users: Vec<Uuid> = (0..MAX_ROLE_SLOTS + 10).map(|_| Uuid::new_v4()).collect();
    for (i, u) in users.iter().enumerate() {
        index.upsert_user(*u, UserState::Active, false);
        index.upsert_membership(*u, a, &format!("role_{i}"), MemberKind::Direct);
    }
    for u in &users[MAX_ROLE_SLOTS - 10..] {
        assert!(!index.decide_names(u, "billing.manage", &a, None).allowed());
    }
    // A membership whose role could not be interned leaves nothing of the role it had.
    let promoted = users[0];
    index.upsert_membership(promoted, a, "client_admin", MemberKind::Direct);
    assert!(index.decide_names(&promoted, "users.manage", &a, None).allowed());
    index.upsert_membership(promoted, a, "yet_another_role", MemberKind::Direct);
    assert!(!index.decide_names(&promoted, "users.manage", &a, None).allowed());
    assert!(index.role_slots_full());
}

#[test]
fn own_data_prepared_before_other_writes_still_lands_on_the_right_users() {
    let (mut index, a) = msp_with_one_client();
    let (denied, other) = (Uuid::new_v4(), Uuid::new_v4());
    let data = OwnData {
        revision: 3,
        overrides: vec![OverrideRecord {
            user: denied,
            permission: "assets.view".into(),
            tenant: Some(a),
            deny: true,
            note: String::new(),
            created_by: String::new(),
            created_at_micros: 0,
        }],
        ..OwnData::default()
    };
    // Prepared off the lock: `denied` is planned into the next free user slot...
    let prepared = index.prepare_own(data);
    // ...which another writer takes before the swap.
    for u in [other, denied] {
        index.upsert_user(u, UserState::Active, false);
        index.upsert_membership(u, a, "client_viewer", MemberKind::Direct);
    }
    drop(index.install_own(prepared));
    assert_eq!(index.revisions.authz, 3);
    assert!(index.decide_names(&other, "assets.view", &a, None).allowed(), "the override is not someone else's");
    assert!(!index.decide_names(&denied, "assets.view", &a, None).allowed());
}
