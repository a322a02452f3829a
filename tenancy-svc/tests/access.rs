//! Who may do what and who sees what: technician assignments, ownership, client visibility.

// Test code: a failed set-up or assertion should panic.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use tether_proto::{common::v1::MembershipKind, tenancy::v1 as pb};

async fn assignments_of(
    h: &Harness,
    actor: &str,
    selector: pb::list_technician_assignments_request::Selector,
) -> Vec<pb::TechnicianAssignment> {
    h.client()
        .list_technician_assignments(as_user(
            actor,
            pb::ListTechnicianAssignmentsRequest { selector: Some(selector), ..Default::default() },
        ))
        .await
        .unwrap()
        .into_inner()
        .assignments
}

/// Watch sends every tenant, membership and the ownership, and from revision 1 replays their
/// whole history: for Tether services presenting the service token only, never for a person
/// (not even the MSP's owner) and never for an anonymous caller.
#[tokio::test]
async fn only_services_may_watch() {
    use tether_runtime::access::ServiceToken;
    let h = Harness::start().await;
    let owner = h.bootstrap_owner().await;
    let acme = h.client_tenant(&owner, "Acme").await;
    for from_revision in [0, 1] {
        let watch = |request| {
            let mut client = h.client();
            async move { client.watch(request).await.map(|_| ()) }
        };
        let request = || pb::WatchRequest { from_revision };
        let anonymous = watch(tonic::Request::new(request())).await;
        assert_eq!((code(&anonymous), reason(anonymous)), (tonic::Code::Unauthenticated, "UNAUTHENTICATED".into()));
        let mut wrong = tonic::Request::new(request());
        ServiceToken::new("not-the-deployment-token-0123456789").attach("identity", &mut wrong);
        let wrong = watch(wrong).await;
        assert_eq!((code(&wrong), reason(wrong)), (tonic::Code::Unauthenticated, "UNAUTHENTICATED".into()));
        let person = watch(as_user(&owner, request())).await;
        assert_eq!((code(&person), reason(person)), (tonic::Code::PermissionDenied, "PERMISSION_DENIED".into()));
    }
    // The service token opens it: the snapshot names the new client.
    let snapshot = h.watch_until_idle(0).await;
    assert!(snapshot.iter().any(|item| matches!(
        &item.kind,
        Some(pb::watch_response::Kind::Change(pb::TenancyChange {
            change: Some(pb::tenancy_change::Change::TenantUpserted(t)), ..
        })) if t.tenant.as_ref().is_some_and(|t| t.tenant_id == acme.tenant_id)
    )));
}

#[tokio::test]
async fn technicians_manage_assigned_clients_with_all_their_departments() {
    use pb::list_technician_assignments_request::Selector;
    let h = Harness::start().await;
    let owner = h.bootstrap_owner().await;
    let tech = h.staff("msp_technician").await;
    let acme = h.client_tenant(&owner, "Acme").await;
    let globex = h.client_tenant(&owner, "Globex").await;
    let acme_dept = h.create(&owner, "Acme Ops", &acme.tenant_id).await.unwrap();

    // Before any assignment: no departments anywhere, and never a client.
    assert_eq!(reason(h.create(&tech, "Nope", &acme.tenant_id).await), "PERMISSION_DENIED");
    assert_eq!(reason(h.create(&tech, "Nope", "").await), "PERMISSION_DENIED");

    // From the member's side ("Assign organizations").
    let set = h
        .client()
        .set_technician_assignments(as_user(
            &owner,
            pb::SetTechnicianAssignmentsRequest {
                technician_user_id: tech.clone(),
                tenant_ids: vec![acme.tenant_id.clone()],
                at_least_as_fresh: None,
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(set.assignments.len(), 1);
    assert_eq!(set.assignments[0].assigned_by_user_id, owner);

    // The assignment covers the client's departments, including ones created later.
    let later = h.create(&tech, "Acme Later", &acme.tenant_id).await.unwrap();
    h.create(&tech, "Acme Ops Sub", &acme_dept.tenant_id).await.unwrap();
    h.create(&tech, "Later Sub", &later.tenant_id).await.unwrap();
    assert_eq!(reason(h.create(&tech, "Nope", &globex.tenant_id).await), "PERMISSION_DENIED");
    assert_eq!(reason(h.create(&tech, "Nope", "").await), "PERMISSION_DENIED");

    // It yields an ASSIGNED membership in the client, with the technician's MSP role.
    let switched = h
        .client()
        .switch_tenant(as_user(&tech, pb::SwitchTenantRequest { tenant_id: acme.tenant_id.clone() }))
        .await
        .unwrap()
        .into_inner()
        .tenant
        .unwrap()
        .membership
        .unwrap();
    assert_eq!((switched.kind, switched.role.as_str()), (MembershipKind::Assigned as i32, "msp_technician"));

    // From the organisation's side ("Managed by", "Manage MSP technicians"); idempotent.
    for _ in 0..2 {
        h.client()
            .assign_technician(as_user(
                &owner,
                pb::AssignTechnicianRequest {
                    technician_user_id: tech.clone(),
                    tenant_id: globex.tenant_id.clone(),
                    at_least_as_fresh: None,
                },
            ))
            .await
            .unwrap();
    }
    let managed_by = assignments_of(&h, &owner, Selector::TenantId(globex.tenant_id.clone())).await;
    assert_eq!(managed_by.iter().map(|a| a.technician_user_id.as_str()).collect::<Vec<_>>(), [tech.as_str()]);
    assert_eq!(assignments_of(&h, &owner, Selector::TechnicianUserId(tech.clone())).await.len(), 2);
    h.create(&tech, "Globex Dept", &globex.tenant_id).await.unwrap();

    h.client()
        .unassign_technician(as_user(
            &owner,
            pb::UnassignTechnicianRequest {
                technician_user_id: tech.clone(),
                tenant_id: acme.tenant_id.clone(),
                at_least_as_fresh: None,
            },
        ))
        .await
        .unwrap();
    assert_eq!(reason(h.create(&tech, "Gone", &acme.tenant_id).await), "PERMISSION_DENIED");
    let again = h
        .client()
        .unassign_technician(as_user(
            &owner,
            pb::UnassignTechnicianRequest {
                technician_user_id: tech.clone(),
                tenant_id: acme.tenant_id.clone(),
                at_least_as_fresh: None,
            },
        ))
        .await;
    assert_eq!(reason(again), "ASSIGNMENT_NOT_FOUND");

    // Only clients are assigned; only MSP staff are technicians; technicians cannot assign.
    let assign = |who: &str, user: &str, tenant: &str| {
        let mut client = h.client();
        let request = as_user(
            who,
            pb::AssignTechnicianRequest {
                technician_user_id: user.into(),
                tenant_id: tenant.into(),
                at_least_as_fresh: None,
            },
        );
        async move { client.assign_technician(request).await }
    };
    assert_eq!(reason(assign(&owner, &tech, &acme_dept.tenant_id).await), "NOT_A_CLIENT");
    assert_eq!(reason(assign(&owner, &tech, &h.admin_id().await).await), "NOT_A_CLIENT");
    let client_user = h.user(false);
    h.add(&client_user, &acme.tenant_id, "client_user").await;
    assert_eq!(reason(assign(&owner, &client_user, &acme.tenant_id).await), "NOT_MSP_STAFF");
    assert_eq!(reason(assign(&owner, &uuid::Uuid::new_v4().to_string(), &acme.tenant_id).await), "USER_NOT_FOUND");
    assert_eq!(reason(assign(&tech, &tech, &acme.tenant_id).await), "PERMISSION_DENIED");
    let dup = h
        .client()
        .set_technician_assignments(as_user(
            &owner,
            pb::SetTechnicianAssignmentsRequest {
                technician_user_id: tech.clone(),
                tenant_ids: vec![acme.tenant_id.clone(), acme.tenant_id.clone()],
                at_least_as_fresh: None,
            },
        ))
        .await;
    assert_eq!(reason(dup), "DUPLICATE_ENTRY");
}

#[tokio::test]
async fn exactly_one_owner_who_alone_can_transfer() {
    let h = Harness::start().await;
    let owner = h.bootstrap_owner().await;
    let admin_tenancy = h.admin_id().await;
    let admin = h.staff("msp_admin").await;

    // A second bootstrap with another account is refused; the same one again is harmless.
    let other = h.user(true);
    let second = h
        .client()
        .transfer_ownership(as_service(pb::TransferOwnershipRequest { new_owner_user_id: other.clone() }))
        .await;
    assert_eq!(reason(second), "NOT_OWNER");
    h.client()
        .transfer_ownership(as_service(pb::TransferOwnershipRequest { new_owner_user_id: owner.clone() }))
        .await
        .unwrap();

    // The owner role is never given; the owner is never removed or demoted.
    let grant = h
        .client()
        .change_membership_role(as_user(
            &owner,
            pb::ChangeMembershipRoleRequest {
                user_id: admin.clone(),
                tenant_id: admin_tenancy.clone(),
                role: "msp_owner".into(),
                ..Default::default()
            },
        ))
        .await;
    assert_eq!(reason(grant), "OWNER_ROLE_NOT_ASSIGNABLE");
    let invite = h
        .client()
        .add_membership(as_service(pb::AddMembershipRequest {
            user_id: other.clone(),
            tenant_id: admin_tenancy.clone(),
            role: "msp_owner".into(),
            make_default: false,
            ..Default::default()
        }))
        .await;
    assert_eq!(reason(invite), "OWNER_ROLE_NOT_ASSIGNABLE");
    let demote = h
        .client()
        .change_membership_role(as_user(
            &admin,
            pb::ChangeMembershipRoleRequest {
                user_id: owner.clone(),
                tenant_id: admin_tenancy.clone(),
                role: "msp_admin".into(),
                ..Default::default()
            },
        ))
        .await;
    assert_eq!(reason(demote), "OWNER_NOT_REMOVABLE");
    let remove = h
        .client()
        .remove_membership(as_user(
            &admin,
            pb::RemoveMembershipRequest {
                user_id: owner.clone(),
                tenant_id: admin_tenancy.clone(),
                ..Default::default()
            },
        ))
        .await;
    assert_eq!(reason(remove), "OWNER_NOT_REMOVABLE");

    // Only the owner transfers, to an active direct member of the admin tenancy.
    let by_admin = h
        .client()
        .transfer_ownership(as_user(&admin, pb::TransferOwnershipRequest { new_owner_user_id: admin.clone() }))
        .await;
    assert_eq!(reason(by_admin), "NOT_OWNER");
    let outsider = h
        .client()
        .transfer_ownership(as_user(&owner, pb::TransferOwnershipRequest { new_owner_user_id: other.clone() }))
        .await;
    assert_eq!(reason(outsider), "NOT_A_MEMBER");
    h.set_active(&admin, false);
    let inactive = h
        .client()
        .transfer_ownership(as_user(&owner, pb::TransferOwnershipRequest { new_owner_user_id: admin.clone() }))
        .await;
    assert_eq!(reason(inactive), "USER_NOT_ACTIVE");
    h.set_active(&admin, true);

    let client = h.client_tenant(&owner, "Acme").await;
    let moved = h
        .client()
        .transfer_ownership(as_user(&owner, pb::TransferOwnershipRequest { new_owner_user_id: admin.clone() }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(moved.ownership.as_ref().unwrap().owner_user_id, admin);
    assert_eq!(moved.ownership.as_ref().unwrap().previous_owner_user_id, owner);
    assert_eq!(moved.previous_owner_membership.unwrap().role, "msp_admin");
    let current =
        h.client().get_owner(as_user(&owner, pb::GetOwnerRequest {})).await.unwrap().into_inner().ownership.unwrap();
    assert_eq!(current.owner_user_id, admin);
    // Shadow memberships follow the admin-tenancy roles.
    let shadow_role = |user: &str| {
        let mut c = h.client();
        let request = as_user(user, pb::SwitchTenantRequest { tenant_id: client.tenant_id.clone() });
        async move { c.switch_tenant(request).await.unwrap().into_inner().tenant.unwrap().membership.unwrap().role }
    };
    assert_eq!(shadow_role(&admin).await, "msp_owner");
    assert_eq!(shadow_role(&owner).await, "msp_admin");
    // The old owner is an ordinary admin now, and can be demoted.
    h.client()
        .change_membership_role(as_user(
            &admin,
            pb::ChangeMembershipRoleRequest {
                user_id: owner.clone(),
                tenant_id: admin_tenancy,
                role: "msp_technician".into(),
                ..Default::default()
            },
        ))
        .await
        .unwrap();
}

#[tokio::test]
async fn client_users_see_only_their_own_tenant_and_departments() {
    let h = Harness::start().await;
    let owner = h.bootstrap_owner().await;
    let tech = h.staff("msp_technician").await;
    let acme = h.client_tenant(&owner, "Acme").await;
    let globex = h.client_tenant(&owner, "Globex").await;
    let dept = h.create(&owner, "Acme Ops", &acme.tenant_id).await.unwrap();
    let client_admin = h.user(false);
    let colleague = h.user(false);
    h.add(&client_admin, &acme.tenant_id, "client_admin").await;
    h.add(&colleague, &dept.tenant_id, "client_user").await;
    // An MSP staff member with a direct membership in the client is still never shown to it.
    h.add(&tech, &acme.tenant_id, "client_admin").await;

    let get = |user: &str, tenant: &str| {
        let mut c = h.client();
        let request = as_user(user, pb::GetTenantRequest { tenant_id: tenant.into() });
        async move { c.get_tenant(request).await }
    };
    get(&client_admin, &acme.tenant_id).await.unwrap();
    get(&client_admin, &dept.tenant_id).await.unwrap();
    let hidden = get(&client_admin, &globex.tenant_id).await;
    assert_eq!(code(&hidden), tonic::Code::NotFound);
    assert_eq!(reason(hidden), "TENANT_NOT_FOUND");
    assert_eq!(reason(get(&client_admin, &h.admin_id().await).await), "TENANT_NOT_FOUND");
    assert_eq!(reason(get(&client_admin, &uuid::Uuid::new_v4().to_string()).await), "TENANT_NOT_FOUND");
    let admin_tenancy = h.client().get_admin_tenancy(as_user(&client_admin, pb::GetAdminTenancyRequest {})).await;
    assert_eq!(reason(admin_tenancy), "TENANT_NOT_FOUND");
    // A department user sees their department, not its parent client.
    assert_eq!(reason(get(&colleague, &acme.tenant_id).await), "TENANT_NOT_FOUND");

    // Lists show their own branch only.
    let clients = h
        .client()
        .list_tenants(as_user(&client_admin, pb::ListTenantsRequest::default()))
        .await
        .unwrap()
        .into_inner()
        .tenants;
    assert_eq!(clients.iter().map(|t| t.name.as_str()).collect::<Vec<_>>(), ["Acme"]);
    let other_members = h
        .client()
        .list_tenant_members(as_user(
            &client_admin,
            pb::ListTenantMembersRequest { tenant_id: globex.tenant_id.clone(), ..Default::default() },
        ))
        .await;
    assert_eq!(reason(other_members), "TENANT_NOT_FOUND");

    // The directory never shows MSP staff to client users (MSP staff see everyone).
    let members = |user: &str| {
        let mut c = h.client();
        let request =
            as_user(user, pb::ListTenantMembersRequest { tenant_id: acme.tenant_id.clone(), ..Default::default() });
        async move {
            c.list_tenant_members(request)
                .await
                .unwrap()
                .into_inner()
                .memberships
                .into_iter()
                .map(|m| m.user_id)
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(members(&client_admin).await, [client_admin.as_str()]);
    assert_eq!(members(&owner).await.len(), 2);
    let about_staff = h
        .client()
        .list_user_tenants(as_user(
            &client_admin,
            pb::ListUserTenantsRequest { user_id: tech.clone(), ..Default::default() },
        ))
        .await;
    assert_eq!(reason(about_staff), "USER_NOT_FOUND");

    // Client admins manage their users but create no tenants; plain users manage nobody.
    assert_eq!(reason(h.create(&client_admin, "Mine", &acme.tenant_id).await), "PERMISSION_DENIED");
    assert_eq!(reason(h.create(&client_admin, "Mine", "").await), "PERMISSION_DENIED");
    h.client()
        .change_membership_role(as_user(
            &client_admin,
            pb::ChangeMembershipRoleRequest {
                user_id: colleague.clone(),
                tenant_id: dept.tenant_id.clone(),
                role: "client_admin".into(),
                ..Default::default()
            },
        ))
        .await
        .unwrap();
    let above = h
        .client()
        .add_membership(as_user(
            &client_admin,
            pb::AddMembershipRequest {
                user_id: colleague.clone(),
                tenant_id: acme.tenant_id.clone(),
                role: "msp_admin".into(),
                make_default: false,
                ..Default::default()
            },
        ))
        .await;
    assert_eq!(reason(above), "MSP_STAFF_ONLY_ROLE");
    let stranger = h.user(false);
    h.add(&stranger, &globex.tenant_id, "client_user").await;
    let across = h
        .client()
        .add_membership(as_user(
            &client_admin,
            pb::AddMembershipRequest {
                user_id: stranger,
                tenant_id: globex.tenant_id.clone(),
                role: "client_user".into(),
                make_default: false,
                ..Default::default()
            },
        ))
        .await;
    assert_eq!(reason(across), "TENANT_NOT_FOUND");
    let by_user = h
        .client()
        .remove_membership(as_user(
            &colleague,
            pb::RemoveMembershipRequest {
                user_id: client_admin.clone(),
                tenant_id: acme.tenant_id.clone(),
                ..Default::default()
            },
        ))
        .await;
    assert_eq!(reason(by_user), "TENANT_NOT_FOUND");

    // No session, no answer.
    let anonymous = h.client().get_tenant(pb::GetTenantRequest { tenant_id: acme.tenant_id.clone() }).await;
    assert_eq!(reason(anonymous), "UNAUTHENTICATED");
}

/// msp-panel: an MSP User manages only the clients assigned to them, may create departments
/// under them, but creates no clients. `departments.create` is enough for a
/// department; in a pack without that permission (msp-assets) `tenants.manage` stays the only way
/// and the answer stays PERMISSION_DENIED.
#[tokio::test]
async fn msp_users_create_departments_in_assigned_clients_with_departments_create() {
    let h = Harness::start().await;
    let owner = h.bootstrap_owner().await;
    let msp_user = h.staff("msp_user").await;
    let acme = h.client_tenant(&owner, "Acme").await;
    let globex = h.client_tenant(&owner, "Globex").await;
    h.client()
        .assign_technician(as_user(
            &owner,
            pb::AssignTechnicianRequest {
                technician_user_id: msp_user.clone(),
                tenant_id: acme.tenant_id.clone(),
                at_least_as_fresh: None,
            },
        ))
        .await
        .unwrap();

    let dept = h.create(&msp_user, "Acme Ops", &acme.tenant_id).await.unwrap();
    assert_eq!(dept.kind, pb::TenantKind::Department as i32);
    h.create(&msp_user, "Acme Ops Night", &dept.tenant_id).await.unwrap();
    assert_eq!(reason(h.create(&msp_user, "Nope", &globex.tenant_id).await), "PERMISSION_DENIED");
    assert_eq!(reason(h.create(&msp_user, "New Client", "").await), "PERMISSION_DENIED");

    // Seed 000's catalog has no departments.create: a client admin is refused as before, a
    // technician (tenants.manage in the assigned client) still creates departments.
    h.world.no_departments_create.store(true, std::sync::atomic::Ordering::SeqCst);
    let cadmin = h.user(false);
    h.add(&cadmin, &acme.tenant_id, "client_admin").await;
    assert_eq!(reason(h.create(&cadmin, "Nope", &acme.tenant_id).await), "PERMISSION_DENIED");
    assert_eq!(reason(h.create(&msp_user, "Nope", &acme.tenant_id).await), "PERMISSION_DENIED");
    let tech = h.staff("msp_technician").await;
    h.client()
        .assign_technician(as_user(
            &owner,
            pb::AssignTechnicianRequest {
                technician_user_id: tech.clone(),
                tenant_id: acme.tenant_id.clone(),
                at_least_as_fresh: None,
            },
        ))
        .await
        .unwrap();
    h.create(&tech, "Acme Tech Dept", &acme.tenant_id).await.unwrap();
}
