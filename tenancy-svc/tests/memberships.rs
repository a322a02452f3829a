//! Memberships: direct, shadow, default tenants, the directory, SwitchTenant, SetUserMemberships,
//! the last-administrator rule.

// Test code: a failed set-up or assertion should panic.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use sqlx::Row;
use tether_proto::{common::v1::MembershipKind, tenancy::v1 as pb};

async fn user_tenants(h: &Harness, actor: &str, user: &str) -> Vec<pb::UserTenant> {
    h.client()
        .list_user_tenants(as_user(
            actor,
            pb::ListUserTenantsRequest { user_id: user.into(), page_size: 500, ..Default::default() },
        ))
        .await
        .unwrap()
        .into_inner()
        .tenants
}

async fn directory(h: &Harness, actor: &str, tenant: &str) -> Vec<String> {
    h.client()
        .list_tenant_members(as_user(
            actor,
            pb::ListTenantMembersRequest { tenant_id: tenant.into(), ..Default::default() },
        ))
        .await
        .unwrap()
        .into_inner()
        .memberships
        .into_iter()
        .map(|m| m.user_id)
        .collect()
}

#[tokio::test]
async fn staff_get_shadow_memberships_that_never_appear_in_directories() {
    let h = Harness::start().await;
    let owner = h.bootstrap_owner().await;
    let tech = h.staff("msp_technician").await;
    let client = h.client_tenant(&owner, "Acme").await;
    let client_admin = h.user(false);
    h.add(&client_admin, &client.tenant_id, "client_admin").await;

    // Every staff member can switch into the new tenant, with their admin-tenancy role...
    for (user, role) in [(&owner, "msp_owner"), (&tech, "msp_technician")] {
        let switched = h
            .client()
            .switch_tenant(as_user(user, pb::SwitchTenantRequest { tenant_id: client.tenant_id.clone() }))
            .await
            .unwrap()
            .into_inner()
            .tenant
            .unwrap();
        let m = switched.membership.unwrap();
        assert_eq!(m.kind, MembershipKind::Shadow as i32);
        assert_eq!(m.role, role);
    }
    // ...but the client's directory lists its direct members only.
    assert_eq!(directory(&h, &owner, &client.tenant_id).await, [client_admin.as_str()]);
    // A department created later gets the staff's shadows too.
    let dept = h.create(&owner, "Dept", &client.tenant_id).await.unwrap();
    let tenants: Vec<String> =
        user_tenants(&h, &tech, &tech).await.into_iter().map(|t| t.tenant.unwrap().tenant_id).collect();
    assert!(tenants.contains(&dept.tenant_id) && tenants.contains(&client.tenant_id));

    // A user who joins the admin tenancy later is backfilled; one who leaves loses them all.
    let late = h.staff("msp_admin").await;
    let kinds: Vec<(String, i32)> = user_tenants(&h, &late, &late)
        .await
        .into_iter()
        .map(|t| (t.tenant.unwrap().tenant_id, t.membership.unwrap().kind))
        .collect();
    assert!(kinds.contains(&(client.tenant_id.clone(), MembershipKind::Shadow as i32)));
    assert!(kinds.contains(&(dept.tenant_id.clone(), MembershipKind::Shadow as i32)));
    let admin = h.admin_id().await;
    h.client()
        .remove_membership(as_user(
            &owner,
            pb::RemoveMembershipRequest { user_id: late.clone(), tenant_id: admin, ..Default::default() },
        ))
        .await
        .unwrap();
    let switch =
        h.client().switch_tenant(as_user(&late, pb::SwitchTenantRequest { tenant_id: client.tenant_id.clone() })).await;
    assert_eq!(reason(switch), "NOT_A_MEMBER");

    // A client user cannot switch into another client.
    let other = h.client_tenant(&owner, "Other").await;
    let switch = h
        .client()
        .switch_tenant(as_user(&client_admin, pb::SwitchTenantRequest { tenant_id: other.tenant_id.clone() }))
        .await;
    assert_eq!(reason(switch), "NOT_A_MEMBER");

    // The shadow rows are really there, one per staff member and tenant, in the database.
    let pool = h.db.inspect("tenancy").await;
    let count: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM memberships WHERE kind = 'shadow' AND tenant_id = $1")
        .bind(client.tenant_id.clone())
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(count, 2, "owner and technician");
}

#[tokio::test]
async fn setting_many_memberships_asks_the_catalog_once_per_distinct_role() {
    let h = Harness::start().await;
    let owner = h.bootstrap_owner().await;
    let mut tenants = Vec::new();
    for name in ["A", "B", "C", "D"] {
        tenants.push(h.client_tenant(&owner, name).await);
    }
    let user = h.user(false);
    let memberships = tenants
        .iter()
        .enumerate()
        .map(|(i, t)| pb::MembershipSpec {
            tenant_id: t.tenant_id.clone(),
            role: if i == 0 { "client_admin" } else { "client_user" }.into(),
        })
        .collect();
    let lookups = || h.world.role_lookups.load(std::sync::atomic::Ordering::SeqCst);
    let before = lookups();
    h.client()
        .set_user_memberships(as_user(
            &owner,
            pb::SetUserMembershipsRequest { user_id: user.clone(), memberships, ..Default::default() },
        ))
        .await
        .unwrap();
    assert_eq!(lookups() - before, 2, "client_admin and client_user, once each");
}

#[tokio::test]
async fn the_tick_and_default_panel_sets_memberships_in_one_call() {
    let h = Harness::start().await;
    let owner = h.bootstrap_owner().await;
    let a = h.client_tenant(&owner, "A").await;
    let b = h.client_tenant(&owner, "B").await;
    let c = h.client_tenant(&owner, "C").await;
    let user = h.user(false);
    let spec = |t: &pb::Tenant, role: &str| pb::MembershipSpec { tenant_id: t.tenant_id.clone(), role: role.into() };
    let set = |specs: Vec<pb::MembershipSpec>, default: &str| {
        let mut client = h.client();
        let request = as_user(
            &owner,
            pb::SetUserMembershipsRequest {
                user_id: user.clone(),
                memberships: specs,
                default_tenant_id: default.into(),
                ..Default::default()
            },
        );
        async move { client.set_user_memberships(request).await }
    };
    let reply = set(vec![spec(&a, "client_user"), spec(&b, "client_admin")], &b.tenant_id).await.unwrap().into_inner();
    assert_eq!(reply.memberships.len(), 2);
    let listed = user_tenants(&h, &user, &user).await;
    assert_eq!(listed[0].tenant.as_ref().unwrap().tenant_id, b.tenant_id, "default first");
    assert!(listed[0].membership.as_ref().unwrap().is_default);
    assert_eq!(listed.iter().filter(|t| t.membership.as_ref().unwrap().is_default).count(), 1);

    // Bad input: nothing is half-written.
    let before = user_tenants(&h, &user, &user).await;
    assert_eq!(reason(set(vec![spec(&a, "client_user"), spec(&a, "client_admin")], "").await), "DUPLICATE_ENTRY");
    assert_eq!(reason(set(vec![spec(&a, "client_user")], &c.tenant_id).await), "NOT_A_MEMBER");
    assert_eq!(reason(set(vec![spec(&a, "no_such_role")], "").await), "ROLE_NOT_FOUND");
    assert_eq!(reason(set(vec![spec(&a, "msp_owner")], "").await), "OWNER_ROLE_NOT_ASSIGNABLE");
    assert_eq!(reason(set(vec![spec(&a, "msp_admin")], "").await), "MSP_STAFF_ONLY_ROLE");
    assert_eq!(reason(set(vec![], "").await), "FIELD_REQUIRED");
    let ghost = pb::MembershipSpec { tenant_id: uuid::Uuid::new_v4().to_string(), role: "client_user".into() };
    assert_eq!(reason(set(vec![spec(&c, "client_user"), ghost], "").await), "TENANT_NOT_FOUND");
    assert_eq!(user_tenants(&h, &user, &user).await, before);

    // Replace: A dropped, B kept, C added; the default moves to C.
    set(vec![spec(&b, "client_admin"), spec(&c, "client_user")], &c.tenant_id).await.unwrap();
    let now: Vec<(String, bool)> = user_tenants(&h, &user, &user)
        .await
        .into_iter()
        .map(|t| (t.tenant.unwrap().name, t.membership.unwrap().is_default))
        .collect();
    assert_eq!(now, [("C".to_owned(), true), ("B".to_owned(), false)]);

    // An unknown user is refused for people's calls.
    let unknown = h
        .client()
        .set_user_memberships(as_user(
            &owner,
            pb::SetUserMembershipsRequest {
                user_id: uuid::Uuid::new_v4().to_string(),
                memberships: vec![spec(&a, "client_user")],
                default_tenant_id: String::new(),
                ..Default::default()
            },
        ))
        .await;
    assert_eq!(reason(unknown), "USER_NOT_FOUND");

    // identity deleting the user: an empty list from the service drops every direct membership.
    h.client()
        .set_user_memberships(as_service(pb::SetUserMembershipsRequest { user_id: user.clone(), ..Default::default() }))
        .await
        .unwrap();
    let pool = h.db.inspect("tenancy").await;
    let left: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM memberships WHERE user_id = $1")
        .bind(user.clone())
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(left, 0);
}

#[tokio::test]
async fn add_membership_is_idempotent_for_retried_deliveries() {
    let h = Harness::start().await;
    let owner = h.bootstrap_owner().await;
    let a = h.client_tenant(&owner, "A").await;
    let user = h.user(false);
    let add = |role: &str| {
        let mut client = h.client();
        let request = as_service(pb::AddMembershipRequest {
            user_id: user.clone(),
            tenant_id: a.tenant_id.clone(),
            role: role.into(),
            make_default: false,
            ..Default::default()
        });
        async move { client.add_membership(request).await }
    };
    let first = add("client_user").await.unwrap().into_inner();
    assert!(first.membership.as_ref().unwrap().is_default, "a first membership is the default");
    let again = add("client_user").await.unwrap().into_inner();
    assert_eq!(first.membership, again.membership);
    assert_eq!(first.consistency_token, again.consistency_token, "nothing new was written");
    assert_eq!(reason(add("client_admin").await), "MEMBERSHIP_EXISTS");
    let missing = h
        .client()
        .add_membership(as_service(pb::AddMembershipRequest {
            user_id: user.clone(),
            tenant_id: uuid::Uuid::new_v4().to_string(),
            role: "client_user".into(),
            make_default: false,
            ..Default::default()
        }))
        .await;
    assert_eq!(reason(missing), "TENANT_NOT_FOUND");
}

#[tokio::test]
async fn the_last_admin_of_a_tenant_stays() {
    let h = Harness::start().await;
    let owner = h.bootstrap_owner().await;
    let a = h.client_tenant(&owner, "A").await;
    let first = h.user(false);
    let second = h.user(false);
    h.add(&first, &a.tenant_id, "client_admin").await;
    h.add(&second, &a.tenant_id, "client_user").await;
    let change = |user: &str, role: &str| {
        let mut client = h.client();
        let request = as_user(
            &owner,
            pb::ChangeMembershipRoleRequest {
                user_id: user.into(),
                tenant_id: a.tenant_id.clone(),
                role: role.into(),
                ..Default::default()
            },
        );
        async move { client.change_membership_role(request).await }
    };
    let remove = |user: &str| {
        let mut client = h.client();
        let request = as_user(
            &owner,
            pb::RemoveMembershipRequest { user_id: user.into(), tenant_id: a.tenant_id.clone(), ..Default::default() },
        );
        async move { client.remove_membership(request).await }
    };
    let demote = change(&first, "client_user").await;
    assert_eq!(code(&demote), tonic::Code::FailedPrecondition);
    assert!(demote.as_ref().unwrap_err().message().contains("last administrator"));
    assert_eq!(reason(demote), "LAST_ADMIN");
    assert_eq!(reason(remove(&first).await), "LAST_ADMIN");
    // With a second administrator, the first may go.
    change(&second, "client_admin").await.unwrap();
    change(&first, "client_user").await.unwrap();
    remove(&first).await.unwrap();
    assert_eq!(reason(remove(&first).await), "MEMBERSHIP_NOT_FOUND");
    assert_eq!(directory(&h, &owner, &a.tenant_id).await, [second.as_str()]);
}

#[tokio::test]
async fn every_write_is_on_the_watch_stream_and_in_the_audit_outbox() {
    let h = Harness::start().await;
    let owner = h.bootstrap_owner().await;
    let tech = h.staff("msp_technician").await;

    // From 0: a snapshot (admin tenancy first, the staff's memberships, the owner), then its end.
    let snapshot = h.watch_until_idle(0).await;
    let end = snapshot
        .iter()
        .find_map(|m| match &m.kind {
            Some(pb::watch_response::Kind::SnapshotEnd(e)) => Some(e.revision),
            _ => None,
        })
        .expect("snapshot end");
    let changes: Vec<&pb::TenancyChange> = snapshot
        .iter()
        .filter_map(|m| match &m.kind {
            Some(pb::watch_response::Kind::Change(c)) => Some(c),
            _ => None,
        })
        .collect();
    assert!(matches!(changes[0].change, Some(pb::tenancy_change::Change::TenantUpserted(_))));
    assert!(changes.iter().any(|c| matches!(&c.change,
        Some(pb::tenancy_change::Change::OwnershipTransferred(o)) if o.ownership.as_ref().unwrap().owner_user_id == owner)));

    // A new client: one revision carrying the tenant and both shadow memberships, the last
    // change marked end_of_revision.
    let created = h
        .client()
        .create_tenant(as_user(&owner, pb::CreateTenantRequest { name: "Live".into(), ..Default::default() }))
        .await
        .unwrap()
        .into_inner();
    let revision = created.consistency_token.unwrap().revisions[0].value;
    assert_eq!(revision, end + 1);
    let live: Vec<pb::TenancyChange> = h
        .watch_until_idle(end)
        .await
        .into_iter()
        .filter_map(|m| match m.kind {
            Some(pb::watch_response::Kind::Change(c)) => Some(c),
            _ => None,
        })
        .collect();
    assert_eq!(live.len(), 3);
    assert!(live.iter().all(|c| c.revision == revision));
    assert_eq!(live.iter().map(|c| c.end_of_revision).collect::<Vec<_>>(), [false, false, true]);
    let shadow_users: Vec<String> = live
        .iter()
        .filter_map(|c| match &c.change {
            Some(pb::tenancy_change::Change::MembershipUpserted(m)) => m.membership.clone(),
            _ => None,
        })
        .filter(|m| m.kind == MembershipKind::Shadow as i32)
        .map(|m| m.user_id)
        .collect();
    assert_eq!(shadow_users.len(), 2);
    assert!(shadow_users.contains(&owner) && shadow_users.contains(&tech));

    // Resuming from the new revision sends nothing old.
    assert!(h.watch_until_idle(revision).await.is_empty());
    // A revision ahead of the latest is refused.
    let ahead = h.client().watch(as_service(pb::WatchRequest { from_revision: revision + 100 })).await;
    assert_eq!(code(&ahead), tonic::Code::OutOfRange);
    assert_eq!(reason(ahead.map(|_| ())), "REVISION_AHEAD");

    // The audit event of the creation: actor, action, resource, client IP.
    let pool = h.db.inspect("tenancy").await;
    let rows = sqlx::query("SELECT payload FROM audit_outbox").fetch_all(&pool).await.unwrap();
    let events: Vec<tether_proto::common::v1::AuditEvent> = rows
        .iter()
        .map(|r| {
            let payload: String = r.try_get(0).unwrap();
            prost::Message::decode(hex::decode(payload).unwrap().as_slice()).unwrap()
        })
        .collect();
    let create = events
        .iter()
        .find(|e| e.action == "tenant.create" && e.resource_id == created.tenant.as_ref().unwrap().tenant_id)
        .unwrap();
    assert_eq!(create.actor.as_ref().unwrap().user_id, owner);
    // The caller claimed 203.0.113.7 itself; only an address the edge vouches for (with the
    // service token) is believed, so the connection's address is recorded.
    assert_eq!(create.client_ip, "127.0.0.1");
    assert!(create.after_json.contains("\"name\":\"Live\""));
    assert!(events.iter().any(|e| e.action == "ownership.transfer"));
    assert!(events.iter().any(|e| e.action == "membership.add"));
    // The relay delivers every one of them to audit-svc and marks it delivered.
    tether_tests::wait_audit_delivered(&pool).await;
}

/// Every page of a tenant's directory as `actor`: the members, and the size of each page.
async fn directory_pages(
    h: &Harness,
    actor: &str,
    tenant: &str,
    role: &str,
    size: i32,
) -> (Vec<pb::Membership>, Vec<usize>) {
    let (mut all, mut sizes, mut token) = (Vec::new(), Vec::new(), String::new());
    loop {
        let page = h
            .client()
            .list_tenant_members(as_user(
                actor,
                pb::ListTenantMembersRequest {
                    tenant_id: tenant.into(),
                    role: role.into(),
                    page_size: size,
                    page_token: token.clone(),
                },
            ))
            .await
            .unwrap()
            .into_inner();
        sizes.push(page.memberships.len());
        all.extend(page.memberships);
        if page.next_page_token.is_empty() {
            return (all, sizes);
        }
        token = page.next_page_token;
    }
}

#[tokio::test]
async fn the_directory_pages_direct_members_with_roles_and_landing_flags() {
    let h = Harness::start().await;
    let owner = h.bootstrap_owner().await;
    let a = h.client_tenant(&owner, "A").await;
    let b = h.client_tenant(&owner, "B").await;
    let a_admin = h.user(false);
    h.add(&a_admin, &a.tenant_id, "client_admin").await;
    let mut clients = vec![a_admin.clone()];
    for _ in 0..6 {
        let user = h.user(false);
        h.add(&user, &a.tenant_id, "client_user").await;
        clients.push(user);
    }
    // One member lands in B (their first tenant), a staff member holds a direct membership here.
    let elsewhere = h.user(false);
    h.add(&elsewhere, &b.tenant_id, "client_user").await;
    h.add(&elsewhere, &a.tenant_id, "client_user").await;
    clients.push(elsewhere.clone());
    let staff = h.staff("msp_technician").await;
    h.add(&staff, &a.tenant_id, "client_user").await;
    clients.sort();
    let mut everyone = clients.clone();
    everyone.push(staff.clone());
    everyone.sort();

    // MSP staff see all nine, by user id, in full pages.
    let (listed, sizes) = directory_pages(&h, &owner, &a.tenant_id, "", 3).await;
    assert_eq!(listed.iter().map(|m| m.user_id.clone()).collect::<Vec<_>>(), everyone);
    assert_eq!(sizes, [3, 3, 3]);
    for m in &listed {
        assert_eq!((m.tenant_id.as_str(), m.kind), (a.tenant_id.as_str(), MembershipKind::Direct as i32));
        assert!(m.created_at.is_some() && m.updated_at.is_some());
        let lands_here = m.user_id != elsewhere && m.user_id != staff;
        assert_eq!(m.is_default, lands_here, "landing flag of {}", m.user_id);
        let role = if m.user_id == a_admin { "client_admin" } else { "client_user" };
        assert_eq!(m.role, role);
    }
    // The client's administrator never sees the staff member, nor the member at home in B,
    // and the pages stay full.
    let at_home: Vec<String> = clients.iter().filter(|u| **u != elsewhere).cloned().collect();
    let (listed, sizes) = directory_pages(&h, &a_admin, &a.tenant_id, "", 3).await;
    assert_eq!(listed.iter().map(|m| m.user_id.clone()).collect::<Vec<_>>(), at_home);
    assert_eq!(sizes, [3, 3, 1]);
    // Filtered by role.
    let (admins, _) = directory_pages(&h, &a_admin, &a.tenant_id, "client_admin", 3).await;
    assert_eq!(admins.iter().map(|m| m.user_id.as_str()).collect::<Vec<_>>(), [a_admin.as_str()]);
    // A token belongs to its filters.
    let first = h
        .client()
        .list_tenant_members(as_user(
            &owner,
            pb::ListTenantMembersRequest { tenant_id: a.tenant_id.clone(), page_size: 3, ..Default::default() },
        ))
        .await
        .unwrap()
        .into_inner();
    let reused = h
        .client()
        .list_tenant_members(as_user(
            &owner,
            pb::ListTenantMembersRequest {
                tenant_id: b.tenant_id.clone(),
                page_size: 3,
                page_token: first.next_page_token,
                ..Default::default()
            },
        ))
        .await;
    assert_eq!(reason(reused), "INVALID_PAGE_TOKEN");
}
