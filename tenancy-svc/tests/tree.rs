//! The tenant tree: create, rename, suspend, reactivate, archive, move, list, subtree.

// Test code: a failed set-up or assertion should panic.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use tether_proto::tenancy::v1 as pb;

#[tokio::test]
async fn msp_admins_build_clients_and_departments() {
    let h = Harness::start().await;
    h.bootstrap_owner().await;
    let admin = h.staff("msp_admin").await;
    let admin_tenancy = h.admin_id().await;

    let acme = h.client_tenant(&admin, "Acme Dental").await;
    assert_eq!(acme.kind, pb::TenantKind::Client as i32);
    assert_eq!(acme.parent_id, admin_tenancy);
    assert_eq!(acme.depth, 1);
    assert_eq!(acme.slug, "acme-dental");
    assert_eq!(acme.client_id, acme.tenant_id);
    assert_eq!(acme.status, pb::TenantStatus::Active as i32);

    let billing = h.create(&admin, "Billing", &acme.tenant_id).await.unwrap();
    assert_eq!(billing.kind, pb::TenantKind::Department as i32);
    assert_eq!(billing.depth, 2);
    assert_eq!(billing.client_id, acme.tenant_id);

    // The same name again gets a unique slug; an explicit slug in use is refused.
    let again = h.client_tenant(&admin, "Acme Dental").await;
    assert_eq!(again.slug, "acme-dental-2");
    let taken = h
        .client()
        .create_tenant(as_user(
            &admin,
            pb::CreateTenantRequest { name: "Other".into(), slug: "acme-dental".into(), ..Default::default() },
        ))
        .await;
    assert_eq!(reason(taken), "SLUG_TAKEN");

    // A retried create with the same request id returns the first tenant.
    let request_id = uuid::Uuid::new_v4().to_string();
    let make =
        || pb::CreateTenantRequest { name: "Retry Co".into(), request_id: request_id.clone(), ..Default::default() };
    let first = h.client().create_tenant(as_user(&admin, make())).await.unwrap().into_inner().tenant.unwrap();
    let second = h.client().create_tenant(as_user(&admin, make())).await.unwrap().into_inner().tenant.unwrap();
    assert_eq!(first.tenant_id, second.tenant_id);
}

#[tokio::test]
async fn bad_tree_input_gets_stable_reasons() {
    let h = Harness::start_with(&[("TETHER_TENANCY_MAX_DEPTH", "3")]).await;
    let owner = h.bootstrap_owner().await;
    let c = h.client_tenant(&owner, "Client").await;
    let d2 = h.create(&owner, "D2", &c.tenant_id).await.unwrap();
    let d3 = h.create(&owner, "D3", &d2.tenant_id).await.unwrap();
    assert_eq!(d3.depth, 3);
    assert_eq!(reason(h.create(&owner, "D4", &d3.tenant_id).await), "TREE_TOO_DEEP");
    assert_eq!(reason(h.create(&owner, "X", &uuid::Uuid::new_v4().to_string()).await), "TENANT_NOT_FOUND");
    assert_eq!(reason(h.create(&owner, "X", "not-a-uuid").await), "INVALID_UUID");
    assert_eq!(reason(h.create(&owner, "", "").await), "FIELD_REQUIRED");
    assert_eq!(reason(h.create(&owner, &"n".repeat(201), "").await), "FIELD_TOO_LONG");
    let bad_slug = h
        .client()
        .create_tenant(as_user(
            &owner,
            pb::CreateTenantRequest { name: "Bad".into(), slug: "Bad_Slug".into(), ..Default::default() },
        ))
        .await;
    assert_eq!(reason(bad_slug), "INVALID_FORMAT");

    // Moves: not under itself, only departments, the depth bound holds for the whole subtree.
    let mv = |id: &str, parent: &str| {
        let mut client = h.client();
        let request = as_user(
            &owner,
            pb::MoveTenantRequest { tenant_id: id.into(), new_parent_id: parent.into(), at_least_as_fresh: None },
        );
        async move { client.move_tenant(request).await }
    };
    assert_eq!(reason(mv(&d2.tenant_id, &d3.tenant_id).await), "TREE_CYCLE");
    let other = h.client_tenant(&owner, "Other").await;
    assert_eq!(reason(mv(&c.tenant_id, &other.tenant_id).await), "NOT_A_DEPARTMENT");
    let admin = h.admin_id().await;
    assert_eq!(reason(mv(&d2.tenant_id, &admin).await), "INVALID_PARENT");
    assert_eq!(reason(mv(&admin, &other.tenant_id).await), "ADMIN_TENANCY_IMMUTABLE");
    let other_dept = h.create(&owner, "OD", &other.tenant_id).await.unwrap();
    // d2 carries d3 below it: under a depth-2 department it would reach depth 4.
    assert_eq!(reason(mv(&d2.tenant_id, &other_dept.tenant_id).await), "TREE_TOO_DEEP");

    // Nothing was half-written: the tree still has exactly what was created.
    let tree = h
        .client()
        .get_subtree(as_user(
            &owner,
            pb::GetSubtreeRequest { tenant_id: admin.clone(), page_size: 500, ..Default::default() },
        ))
        .await
        .unwrap()
        .into_inner()
        .tenants;
    let names: Vec<&str> = tree.iter().map(|t| t.name.as_str()).collect();
    assert_eq!(names, ["MSP", "Client", "D2", "D3", "Other", "OD"]);

    // The admin tenancy cannot be suspended or archived.
    let suspend = h
        .client()
        .suspend_tenant(as_user(
            &owner,
            pb::SuspendTenantRequest { tenant_id: admin, reason: String::new(), at_least_as_fresh: None },
        ))
        .await;
    assert_eq!(reason(suspend), "ADMIN_TENANCY_IMMUTABLE");
}

#[tokio::test]
async fn moving_a_department_keeps_its_members_and_depths_follow() {
    let h = Harness::start().await;
    let owner = h.bootstrap_owner().await;
    let a = h.client_tenant(&owner, "A").await;
    let b = h.client_tenant(&owner, "B").await;
    let dept = h.create(&owner, "Dept", &a.tenant_id).await.unwrap();
    let sub = h.create(&owner, "Sub", &dept.tenant_id).await.unwrap();
    let b_dept = h.create(&owner, "BDept", &b.tenant_id).await.unwrap();
    let member = h.user(false);
    h.add(&member, &dept.tenant_id, "client_user").await;

    let moved = h
        .client()
        .move_tenant(as_user(
            &owner,
            pb::MoveTenantRequest {
                tenant_id: dept.tenant_id.clone(),
                new_parent_id: b_dept.tenant_id.clone(),
                at_least_as_fresh: None,
            },
        ))
        .await
        .unwrap()
        .into_inner()
        .tenant
        .unwrap();
    assert_eq!(moved.parent_id, b_dept.tenant_id);
    assert_eq!(moved.depth, 3);
    assert_eq!(moved.client_id, b.tenant_id);
    let sub_after = h
        .client()
        .get_tenant(as_user(&owner, pb::GetTenantRequest { tenant_id: sub.tenant_id.clone() }))
        .await
        .unwrap()
        .into_inner()
        .tenant
        .unwrap();
    assert_eq!(sub_after.depth, 4);
    assert_eq!(sub_after.client_id, b.tenant_id);
    let members = h
        .client()
        .list_tenant_members(as_user(
            &owner,
            pb::ListTenantMembersRequest { tenant_id: dept.tenant_id.clone(), ..Default::default() },
        ))
        .await
        .unwrap()
        .into_inner()
        .memberships;
    assert_eq!(members.iter().map(|m| m.user_id.as_str()).collect::<Vec<_>>(), [member.as_str()]);
}

#[tokio::test]
async fn lifecycle_rename_suspend_reactivate_archive() {
    let h = Harness::start().await;
    let owner = h.bootstrap_owner().await;
    let c = h.client_tenant(&owner, "Client").await;
    let dept = h.create(&owner, "Dept", &c.tenant_id).await.unwrap();
    let renamed = h
        .client()
        .rename_tenant(as_user(
            &owner,
            pb::RenameTenantRequest {
                tenant_id: c.tenant_id.clone(),
                name: "Client Two".into(),
                slug: "client-two".into(),
                at_least_as_fresh: None,
            },
        ))
        .await
        .unwrap()
        .into_inner()
        .tenant
        .unwrap();
    assert_eq!((renamed.name.as_str(), renamed.slug.as_str()), ("Client Two", "client-two"));

    let suspend = || {
        let mut client = h.client();
        let request = as_user(
            &owner,
            pb::SuspendTenantRequest {
                tenant_id: c.tenant_id.clone(),
                reason: "unpaid".into(),
                at_least_as_fresh: None,
            },
        );
        async move { client.suspend_tenant(request).await }
    };
    h.client()
        .suspend_tenant(as_user(
            &owner,
            pb::SuspendTenantRequest {
                tenant_id: dept.tenant_id.clone(),
                reason: String::new(),
                at_least_as_fresh: None,
            },
        ))
        .await
        .unwrap();
    let s = suspend().await.unwrap().into_inner();
    assert_eq!(s.tenant.unwrap().status, pb::TenantStatus::Suspended as i32);
    // Idempotent: the second suspension changes nothing, not even the revision.
    let again = suspend().await.unwrap().into_inner();
    assert_eq!(again.consistency_token, s.consistency_token);
    // No department is created under a suspended client; its departments cannot be reactivated.
    assert_eq!(reason(h.create(&owner, "New", &c.tenant_id).await), "TENANT_NOT_ACTIVE");
    let reactivate_dept = h
        .client()
        .reactivate_tenant(as_user(
            &owner,
            pb::ReactivateTenantRequest { tenant_id: dept.tenant_id.clone(), at_least_as_fresh: None },
        ))
        .await;
    assert_eq!(reason(reactivate_dept), "TENANT_NOT_ACTIVE");
    let back = h
        .client()
        .reactivate_tenant(as_user(
            &owner,
            pb::ReactivateTenantRequest { tenant_id: c.tenant_id.clone(), at_least_as_fresh: None },
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(back.tenant.unwrap().status, pb::TenantStatus::Active as i32);

    // Archived tenants are hidden from lists unless asked for.
    h.client()
        .archive_tenant(as_user(
            &owner,
            pb::ArchiveTenantRequest { tenant_id: c.tenant_id.clone(), reason: String::new(), at_least_as_fresh: None },
        ))
        .await
        .unwrap();
    let list = |status| {
        let mut client = h.client();
        let request = as_user(&owner, pb::ListTenantsRequest { status, ..Default::default() });
        async move { client.list_tenants(request).await }
    };
    assert!(list(0).await.unwrap().into_inner().tenants.is_empty());
    let archived = list(pb::TenantStatus::Archived as i32).await.unwrap().into_inner().tenants;
    assert_eq!(archived.len(), 1);
}

#[tokio::test]
async fn clients_are_listed_by_name_in_pages_and_subtrees_in_pre_order() {
    let h = Harness::start().await;
    let owner = h.bootstrap_owner().await;
    for name in ["Delta", "alpha", "Charlie", "Bravo", "Echo"] {
        h.client_tenant(&owner, name).await;
    }
    let mut seen = Vec::new();
    let mut token = String::new();
    loop {
        let page = h
            .client()
            .list_tenants(as_user(
                &owner,
                pb::ListTenantsRequest { page_size: 2, page_token: token.clone(), ..Default::default() },
            ))
            .await
            .unwrap()
            .into_inner();
        assert!(page.tenants.len() <= 2);
        seen.extend(page.tenants.into_iter().map(|t| t.name));
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    let mut sorted = seen.clone();
    sorted.sort();
    assert_eq!(seen, sorted);
    assert_eq!(seen.len(), 5);
    // A token is bound to its filters.
    let first = h
        .client()
        .list_tenants(as_user(&owner, pb::ListTenantsRequest { page_size: 2, ..Default::default() }))
        .await
        .unwrap()
        .into_inner();
    let misuse = h
        .client()
        .list_tenants(as_user(
            &owner,
            pb::ListTenantsRequest {
                page_size: 2,
                page_token: first.next_page_token,
                query: "a".into(),
                ..Default::default()
            },
        ))
        .await;
    assert_eq!(reason(misuse), "INVALID_PAGE_TOKEN");
    let found = h
        .client()
        .list_tenants(as_user(&owner, pb::ListTenantsRequest { query: "HAR".into(), ..Default::default() }))
        .await
        .unwrap()
        .into_inner()
        .tenants;
    assert_eq!(found.iter().map(|t| t.name.as_str()).collect::<Vec<_>>(), ["Charlie"]);

    let c = h.client_tenant(&owner, "Zulu").await;
    let b = h.create(&owner, "B dept", &c.tenant_id).await.unwrap();
    h.create(&owner, "A dept", &c.tenant_id).await.unwrap();
    h.create(&owner, "B1", &b.tenant_id).await.unwrap();
    let subtree = h
        .client()
        .get_subtree(as_user(&owner, pb::GetSubtreeRequest { tenant_id: c.tenant_id.clone(), ..Default::default() }))
        .await
        .unwrap()
        .into_inner()
        .tenants;
    let names: Vec<&str> = subtree.iter().map(|t| t.name.as_str()).collect();
    assert_eq!(names, ["Zulu", "A dept", "B dept", "B1"]);
    let shallow = h
        .client()
        .get_subtree(as_user(
            &owner,
            pb::GetSubtreeRequest { tenant_id: c.tenant_id, max_depth: 1, ..Default::default() },
        ))
        .await
        .unwrap()
        .into_inner()
        .tenants;
    assert_eq!(shallow.len(), 3);
}
