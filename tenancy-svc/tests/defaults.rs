//! Default (landing) tenants, and what MSP staff keep or lose of their shadow memberships when
//! they are deactivated, leave the admin tenancy, or are deleted.

// Test code: a failed set-up or assertion should panic.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use tether_proto::{common::v1::MembershipKind, tenancy::v1 as pb};

/// The user's tenant list as they see it: (tenant name, membership kind, is_default), default first.
async fn landing(h: &Harness, user: &str) -> Vec<(String, i32, bool)> {
    h.client()
        .list_user_tenants(as_user(user, pb::ListUserTenantsRequest { page_size: 500, ..Default::default() }))
        .await
        .unwrap()
        .into_inner()
        .tenants
        .into_iter()
        .map(|t| {
            let m = t.membership.unwrap();
            (t.tenant.unwrap().name, m.kind, m.is_default)
        })
        .collect()
}

async fn set_default(h: &Harness, actor: &str, user: &str, tenant: &str) -> Result<pb::Membership, tonic::Status> {
    let reply = h
        .client()
        .set_default_tenant(as_user(
            actor,
            pb::SetDefaultTenantRequest { user_id: user.into(), tenant_id: tenant.into(), at_least_as_fresh: None },
        ))
        .await?;
    Ok(reply.into_inner().membership.unwrap())
}

async fn switch(h: &Harness, user: &str, tenant: &str) -> Result<pb::Membership, tonic::Status> {
    let reply = h.client().switch_tenant(as_user(user, pb::SwitchTenantRequest { tenant_id: tenant.into() })).await?;
    Ok(reply.into_inner().tenant.unwrap().membership.unwrap())
}

async fn remove(h: &Harness, actor: &str, user: &str, tenant: &str) {
    h.client()
        .remove_membership(as_user(
            actor,
            pb::RemoveMembershipRequest { user_id: user.into(), tenant_id: tenant.into(), ..Default::default() },
        ))
        .await
        .unwrap();
}

async fn count(h: &Harness, sql: &str, user: &str) -> i64 {
    let pool = h.db.inspect("tenancy").await;
    sqlx::query_scalar(sqlx::AssertSqlSafe(sql.to_owned())).bind(user.to_owned()).fetch_one(&pool).await.unwrap()
}

const DIRECT: i32 = MembershipKind::Direct as i32;
const SHADOW: i32 = MembershipKind::Shadow as i32;

#[tokio::test]
async fn the_default_tenant_is_one_the_user_belongs_to_and_lands_first() {
    let h = Harness::start().await;
    let owner = h.bootstrap_owner().await;
    let a = h.client_tenant(&owner, "A").await;
    let b = h.client_tenant(&owner, "B").await;
    let c = h.client_tenant(&owner, "C").await;
    let user = h.user(false);
    h.add(&user, &a.tenant_id, "client_user").await;
    h.add(&user, &b.tenant_id, "client_user").await;
    let a_first = vec![("A".to_owned(), DIRECT, true), ("B".to_owned(), DIRECT, false)];
    let b_first = vec![("B".to_owned(), DIRECT, true), ("A".to_owned(), DIRECT, false)];
    assert_eq!(landing(&h, &user).await, a_first, "the first membership is the default");

    // The user picks B themselves (no user_id: their own).
    let picked = set_default(&h, &user, "", &b.tenant_id).await.unwrap();
    assert_eq!((picked.tenant_id.as_str(), picked.is_default), (b.tenant_id.as_str(), true));
    assert_eq!(landing(&h, &user).await, b_first, "the new default lands first, the only one flagged");
    assert!(switch(&h, &user, &b.tenant_id).await.unwrap().is_default);
    assert!(!switch(&h, &user, &a.tenant_id).await.unwrap().is_default);

    // Only into a tenant where they hold a membership; nothing changes otherwise.
    assert_eq!(reason(set_default(&h, &user, "", &c.tenant_id).await), "NOT_A_MEMBER");
    assert_eq!(reason(set_default(&h, &user, "", &uuid::Uuid::new_v4().to_string()).await), "NOT_A_MEMBER");
    assert_eq!(reason(set_default(&h, &user, "", "not-a-uuid").await), "INVALID_UUID");
    assert_eq!(landing(&h, &user).await, b_first);

    // Setting it for someone else needs users.manage there: a plain member of A may not, and
    // a member of another client does not even learn that A exists.
    let colleague = h.user(false);
    h.add(&colleague, &a.tenant_id, "client_user").await;
    assert_eq!(reason(set_default(&h, &colleague, &user, &a.tenant_id).await), "PERMISSION_DENIED");
    let stranger = h.user(false);
    h.add(&stranger, &c.tenant_id, "client_admin").await;
    assert_eq!(reason(set_default(&h, &stranger, &user, &a.tenant_id).await), "TENANT_NOT_FOUND");
    assert_eq!(landing(&h, &user).await, b_first);
    // A's administrator may.
    let a_admin = h.user(false);
    h.add(&a_admin, &a.tenant_id, "client_admin").await;
    assert!(set_default(&h, &a_admin, &user, &a.tenant_id).await.unwrap().is_default);
    assert_eq!(landing(&h, &user).await, a_first);

    // Staff may land in a tenant where they hold only a shadow membership.
    let staff = h.staff("msp_admin").await;
    let shadow = set_default(&h, &staff, "", &c.tenant_id).await.unwrap();
    assert_eq!((shadow.kind, shadow.is_default), (SHADOW, true));
    assert_eq!(landing(&h, &staff).await[0], ("C".to_owned(), SHADOW, true));
    assert_eq!(landing(&h, &staff).await.iter().filter(|t| t.2).count(), 1);
}

#[tokio::test]
async fn losing_the_default_tenant_falls_back_to_another_and_the_last_leaves_none() {
    let h = Harness::start().await;
    let owner = h.bootstrap_owner().await;
    let a = h.client_tenant(&owner, "A").await;
    let b = h.client_tenant(&owner, "B").await;
    let c = h.client_tenant(&owner, "C").await;
    let user = h.user(false);
    for t in [&a, &b, &c] {
        h.add(&user, &t.tenant_id, "client_user").await;
    }
    assert_eq!(landing(&h, &user).await[0], ("A".to_owned(), DIRECT, true));

    // The default's membership goes: the oldest remaining membership becomes the default.
    remove(&h, &owner, &user, &a.tenant_id).await;
    assert_eq!(landing(&h, &user).await, [("B".to_owned(), DIRECT, true), ("C".to_owned(), DIRECT, false)]);
    // Removing another membership leaves the default alone.
    set_default(&h, &user, "", &c.tenant_id).await.unwrap();
    remove(&h, &owner, &user, &b.tenant_id).await;
    assert_eq!(landing(&h, &user).await, [("C".to_owned(), DIRECT, true)]);
    // The last one goes: no tenant, no default, nowhere to switch to.
    remove(&h, &owner, &user, &c.tenant_id).await;
    assert!(landing(&h, &user).await.is_empty());
    assert_eq!(count(&h, "SELECT COUNT(*) FROM default_tenants WHERE user_id = $1", &user).await, 0);
    assert_eq!(reason(switch(&h, &user, &c.tenant_id).await), "NOT_A_MEMBER");
    // A new membership is the default again.
    h.add(&user, &b.tenant_id, "client_user").await;
    assert_eq!(landing(&h, &user).await, [("B".to_owned(), DIRECT, true)]);

    // Staff: losing the direct membership in their landing tenant keeps them landing there on
    // their shadow membership (they can still switch in); leaving the admin tenancy (which
    // takes the shadows) moves the default to a direct membership they still hold.
    let staff = h.staff("msp_technician").await;
    h.add(&staff, &a.tenant_id, "client_user").await;
    set_default(&h, &staff, "", &a.tenant_id).await.unwrap();
    remove(&h, &owner, &staff, &a.tenant_id).await;
    assert_eq!(landing(&h, &staff).await[0], ("A".to_owned(), SHADOW, true));
    h.add(&staff, &b.tenant_id, "client_user").await;
    let admin = h.admin_id().await;
    remove(&h, &owner, &staff, &admin).await;
    assert_eq!(landing(&h, &staff).await, [("B".to_owned(), DIRECT, true)]);
    assert_eq!(reason(switch(&h, &staff, &a.tenant_id).await), "NOT_A_MEMBER");
}

#[tokio::test]
async fn deactivated_staff_keep_their_shadows_leavers_and_deleted_staff_lose_them() {
    let h = Harness::start().await;
    let owner = h.bootstrap_owner().await;
    let admin = h.admin_id().await;
    let sam = h.staff("msp_admin").await;
    let tech = h.staff("msp_technician").await;
    let gone = h.staff("msp_technician").await;
    let a = h.client_tenant(&owner, "A").await;
    let members_of = |actor: &str, tenant: &str| {
        let mut client = h.client();
        let request = as_user(actor, pb::ListTenantMembersRequest { tenant_id: tenant.into(), ..Default::default() });
        async move { client.list_tenant_members(request).await }
    };
    members_of(&sam, &a.tenant_id).await.unwrap();

    // identity deactivates Sam: tenancy is not told and keeps every shadow (a tenant created
    // meanwhile gets one too, so reactivation needs no backfill); authz-svc denies Sam.
    h.set_active(&sam, false);
    let b = h.client_tenant(&owner, "B").await;
    assert_eq!(
        landing(&h, &sam).await.into_iter().filter(|t| t.1 == SHADOW).map(|t| t.0).collect::<Vec<_>>(),
        ["A", "B"]
    );
    assert_eq!(reason(members_of(&sam, &a.tenant_id).await), "PERMISSION_DENIED");
    assert_eq!(reason(members_of(&sam, &b.tenant_id).await), "PERMISSION_DENIED");
    // Reactivated: access everywhere again, including the tenant created while deactivated.
    h.set_active(&sam, true);
    members_of(&sam, &a.tenant_id).await.unwrap();
    members_of(&sam, &b.tenant_id).await.unwrap();

    // A technician who leaves the admin tenancy loses shadows, assignments and the ASSIGNED
    // membership; authz-svc hears of each removal on the Watch stream.
    h.client()
        .assign_technician(as_user(
            &owner,
            pb::AssignTechnicianRequest {
                technician_user_id: tech.clone(),
                tenant_id: a.tenant_id.clone(),
                at_least_as_fresh: None,
            },
        ))
        .await
        .unwrap();
    assert_eq!(count(&h, "SELECT COUNT(*) FROM memberships WHERE user_id = $1 AND kind <> 'direct'", &tech).await, 3);
    let revision = h
        .client()
        .remove_membership(as_user(
            &owner,
            pb::RemoveMembershipRequest { user_id: tech.clone(), tenant_id: admin, ..Default::default() },
        ))
        .await
        .unwrap()
        .into_inner()
        .consistency_token
        .unwrap()
        .revisions[0]
        .value;
    let removed = removals(&h, revision - 1).await;
    assert!(removed.contains(&(tech.clone(), a.tenant_id.clone(), Some(SHADOW))));
    assert!(removed.contains(&(tech.clone(), b.tenant_id.clone(), Some(SHADOW))));
    assert!(removed.contains(&(tech.clone(), a.tenant_id.clone(), Some(MembershipKind::Assigned as i32))));
    assert!(removed.contains(&(tech.clone(), a.tenant_id.clone(), None)), "the assignment");
    assert_eq!(count(&h, "SELECT COUNT(*) FROM memberships WHERE user_id = $1", &tech).await, 0);
    assert_eq!(count(&h, "SELECT COUNT(*) FROM technician_assignments WHERE technician_user_id = $1", &tech).await, 0);
    assert!(landing(&h, &tech).await.is_empty());
    assert_eq!(reason(switch(&h, &tech, &a.tenant_id).await), "NOT_A_MEMBER");
    // A tenant created afterwards gives them nothing.
    let c = h.client_tenant(&owner, "C").await;
    assert_eq!(reason(switch(&h, &tech, &c.tenant_id).await), "NOT_A_MEMBER");

    // identity deletes a staff member (an empty SetUserMemberships from the service): every
    // membership, shadows included, and the default go.
    assert_eq!(count(&h, "SELECT COUNT(*) FROM memberships WHERE user_id = $1 AND kind = 'shadow'", &gone).await, 3);
    h.client()
        .set_user_memberships(as_service(pb::SetUserMembershipsRequest { user_id: gone.clone(), ..Default::default() }))
        .await
        .unwrap();
    assert_eq!(count(&h, "SELECT COUNT(*) FROM memberships WHERE user_id = $1", &gone).await, 0);
    assert_eq!(count(&h, "SELECT COUNT(*) FROM default_tenants WHERE user_id = $1", &gone).await, 0);
    assert_eq!(reason(switch(&h, &gone, &c.tenant_id).await), "NOT_A_MEMBER");
    // Sam, deactivated earlier, still has every shadow, C's included.
    assert_eq!(count(&h, "SELECT COUNT(*) FROM memberships WHERE user_id = $1 AND kind = 'shadow'", &sam).await, 3);
}

/// Membership removals (kind) and unassignments (None) after `from`, as (user, tenant, kind).
async fn removals(h: &Harness, from: u64) -> Vec<(String, String, Option<i32>)> {
    h.watch_until_idle(from)
        .await
        .into_iter()
        .filter_map(|m| match m.kind {
            Some(pb::watch_response::Kind::Change(c)) => c.change,
            _ => None,
        })
        .filter_map(|c| match c {
            pb::tenancy_change::Change::MembershipRemoved(r) => Some((r.user_id, r.tenant_id, Some(r.kind))),
            pb::tenancy_change::Change::TechnicianUnassigned(u) => Some((u.technician_user_id, u.tenant_id, None)),
            _ => None,
        })
        .collect()
}
