//! Decisions over gRPC, fed by stream doubles: who may do what, what a deactivated user can no
//! longer do, what bad input gets, and how the replica fails closed.

mod common;

use std::time::Duration;

use common::*;
use tether_proto::{
    authz::v1 as pb,
    common::v1::{ErrorReason, MembershipKind, RevisionSource},
    identity::v1::UserStatus,
    tenancy::v1::{TenantKind, TenantStatus},
};
use tether_runtime::error::reason_of;
use tether_tests::TestDatabase;
use tonic::Code;
use uuid::Uuid;

fn reason(status: &tonic::Status) -> String {
    reason_of(status).unwrap_or_default()
}

#[tokio::test]
async fn seed_000_roles_decide_over_grpc_and_deactivation_denies_at_once() {
    let db = TestDatabase::fresh().await;
    let up = Upstreams::start().await;
    let w = World::seed(&up);
    let authz = start_serving(&db, &up, &[]).await;

    assert!(authz.allowed(w.admin, "billing.manage", w.a1).await);
    assert!(authz.allowed(w.tech, "assets.checkout", w.b).await);
    assert!(!authz.allowed(w.tech, "billing.manage", w.b).await);
    assert!(authz.allowed(w.cadmin, "users.manage", w.a1).await);
    assert!(!authz.allowed(w.cadmin, "users.manage", w.b).await);
    assert!(!authz.allowed(w.cadmin, "tenants.manage", w.a).await);
    assert!(authz.allowed(w.viewer, "assets.export", w.a).await);
    assert!(!authz.allowed(w.viewer, "assets.edit", w.a).await);

    // Deactivation committed in identity: with its revision as the token, the very next check
    // is already denied (read-your-writes), without polling.
    let rev = up.identity.push(vec![user(w.cadmin, UserStatus::Suspended, false)]);
    let mut request = check(w.cadmin, "users.manage", w.a);
    request.at_least_as_fresh = fresh(RevisionSource::Identity, rev);
    let reply = authz.client.clone().check(request).await.unwrap().into_inner();
    assert!(!reply.allowed);
    let seen = reply.evaluated_at.unwrap().revisions;
    assert!(seen.iter().any(|r| r.source == RevisionSource::Identity as i32 && r.value >= rev));

    // Suspending a client denies its departments too; deleting a user denies them.
    let rev = up.tenancy.push(vec![tenant(w.a, Some(w.msp), TenantKind::Client, TenantStatus::Suspended)]);
    let mut request = check(w.admin, "assets.view", w.a1);
    request.at_least_as_fresh = fresh(RevisionSource::Tenancy, rev);
    assert!(!authz.client.clone().check(request).await.unwrap().into_inner().allowed);
    assert!(authz.allowed(w.admin, "assets.view", w.b).await);
    up.identity.push(vec![user_deleted(w.admin)]);
    authz.eventually(w.admin, "assets.view", w.b, false).await;
    authz.service.stop().await.unwrap();
}

#[tokio::test]
async fn bad_input_gets_a_clear_reason_never_an_allow() {
    let db = TestDatabase::fresh().await;
    let up = Upstreams::start().await;
    let w = World::seed(&up);
    let authz = start_serving(&db, &up, &[]).await;
    let mut c = authz.client.clone();

    let e = c.check(check(w.admin, "assets.fly", w.a)).await.unwrap_err();
    assert_eq!((e.code(), reason(&e).as_str()), (Code::NotFound, "PERMISSION_NOT_FOUND"));
    let e = c.check(check(Uuid::new_v4(), "assets.view", w.a)).await.unwrap_err();
    assert_eq!(reason(&e), "USER_NOT_FOUND");
    let e = c.check(check(w.admin, "assets.view", Uuid::new_v4())).await.unwrap_err();
    assert_eq!(reason(&e), "TENANT_NOT_FOUND");
    let mut bad = check(w.admin, "assets.view", w.a);
    bad.tenant_id = "not-a-uuid".into();
    let e = c.check(bad).await.unwrap_err();
    assert_eq!((e.code(), reason(&e).as_str()), (Code::InvalidArgument, "INVALID_UUID"));
    let mut bad = check(w.admin, "assets.view", w.a);
    bad.resource_id = "no-such-node".into();
    assert_eq!(reason(&c.check(bad).await.unwrap_err()), "RESOURCE_NOT_FOUND");
    let mut bad = check(w.admin, "assets.view", w.a);
    bad.permission = "x".repeat(101);
    assert_eq!(reason(&c.check(bad).await.unwrap_err()), "FIELD_TOO_LONG");

    let item = |u: Uuid, p: &str, t: Uuid| pb::BatchCheckItem {
        subject_user_id: u.to_string(),
        permission: p.into(),
        tenant_id: t.to_string(),
        resource_id: String::new(),
    };
    let too_many =
        pb::BatchCheckRequest { items: vec![item(w.admin, "assets.view", w.a); 1001], at_least_as_fresh: None };
    let e = c.batch_check(too_many).await.unwrap_err();
    assert_eq!((e.code(), reason(&e).as_str()), (Code::InvalidArgument, "BATCH_TOO_LARGE"));
    let batch = pb::BatchCheckRequest {
        items: vec![
            item(w.admin, "assets.view", w.a),
            item(w.viewer, "assets.delete", w.a),
            item(w.admin, "assets.fly", w.a),
            pb::BatchCheckItem { subject_user_id: "bad".into(), ..item(w.admin, "assets.view", w.a) },
        ],
        at_least_as_fresh: None,
    };
    let reply = c.batch_check(batch).await.unwrap().into_inner();
    let got: Vec<(bool, i32)> = reply.decisions.iter().map(|d| (d.allowed, d.error)).collect();
    assert_eq!(
        got,
        vec![
            (true, 0),
            (false, 0),
            (false, ErrorReason::PermissionNotFound as i32),
            (false, ErrorReason::InvalidUuid as i32)
        ]
    );
    authz.service.stop().await.unwrap();
}

#[tokio::test]
async fn explain_names_every_deny_reason() {
    let db = TestDatabase::fresh().await;
    let up = Upstreams::start().await;
    let w = World::seed(&up);
    let pending = Uuid::new_v4();
    let suspended = Uuid::new_v4();
    let gone = Uuid::new_v4();
    let archived = Uuid::new_v4();
    up.identity.push(vec![
        user(pending, UserStatus::Pending, false),
        user(suspended, UserStatus::Suspended, false),
        user(gone, UserStatus::Active, false),
    ]);
    up.identity.push(vec![user_deleted(gone)]);
    up.tenancy.push(vec![
        tenant(archived, Some(w.msp), TenantKind::Client, TenantStatus::Archived),
        tenant(w.b, Some(w.msp), TenantKind::Client, TenantStatus::Suspended),
        membership(pending, w.a, "client_viewer", MembershipKind::Direct),
    ]);
    let authz = start_serving(&db, &up, &[]).await;
    let explain = |u: Uuid, p: &str, t: Uuid| pb::ExplainRequest {
        subject_user_id: u.to_string(),
        permission: p.into(),
        tenant_id: t.to_string(),
        ..Default::default()
    };
    // A deny override for the viewer.
    authz
        .client
        .clone()
        .set_override(as_service(pb::SetOverrideRequest {
            user_id: w.viewer.to_string(),
            permission: "assets.export".into(),
            effect: pb::OverrideEffect::Deny as i32,
            tenant_id: String::new(),
            note: "offboarding".into(),
        }))
        .await
        .unwrap();
    use pb::DecisionReason as D;
    let cases = [
        (explain(w.cadmin, "assets.view", w.msp), D::DeniedNoMembership, "no membership"),
        (explain(w.viewer, "assets.export", w.a), D::DeniedByOverride, "deny override"),
        (explain(suspended, "assets.view", w.a), D::DeniedUserSuspended, "suspended"),
        (explain(pending, "assets.view", w.a), D::DeniedUserPending, "invitation"),
        (explain(gone, "assets.view", w.a), D::DeniedUserDeleted, "deleted"),
        (explain(Uuid::new_v4(), "assets.view", w.a), D::DeniedUserUnknown, "unknown"),
        (explain(w.admin, "assets.view", w.b), D::DeniedTenantSuspended, "suspended"),
        (explain(w.admin, "assets.view", archived), D::DeniedTenantArchived, "archived"),
        (explain(w.admin, "assets.view", Uuid::new_v4()), D::DeniedTenantUnknown, "unknown"),
        (explain(w.admin, "assets.fly", w.a), D::DeniedUnknownPermission, "catalog"),
        (explain(w.viewer, "assets.delete", w.a1), D::DeniedPermissionNotInRole, "lacks"),
        (
            pb::ExplainRequest { resource_id: "nope".into(), ..explain(w.admin, "assets.view", w.a) },
            D::DeniedResourceUnknown,
            "resource",
        ),
        (explain(w.cadmin, "users.manage", w.a1), D::GrantedByMembership, "direct membership"),
        (explain(w.admin, "users.manage", w.a1), D::GrantedByMembership, "shadow membership"),
    ];
    for (request, want, words) in cases {
        let reply = authz.client.clone().explain(request).await.unwrap().into_inner();
        assert_eq!(reply.reason, want as i32, "{}", reply.summary);
        assert_eq!(reply.allowed, want == D::GrantedByMembership);
        assert!(reply.summary.contains(words), "{:?} lacks {words:?}", reply.summary);
        assert!(!reply.steps.is_empty());
    }
    let reply = authz.client.clone().explain(explain(w.viewer, "assets.delete", w.a1)).await.unwrap().into_inner();
    let basis = reply.membership.unwrap();
    assert_eq!((basis.tenant_id, basis.role), (w.a.to_string(), "client_viewer".to_owned()));
    authz.service.stop().await.unwrap();
}

#[tokio::test]
async fn technicians_scoped_to_assigned_clients_are_explained_and_looked_up() {
    let db = TestDatabase::fresh().await;
    let up = Upstreams::start().await;
    let w = World::seed(&up);
    let mspuser = Uuid::new_v4();
    up.identity.push(vec![user(mspuser, UserStatus::Active, true)]);
    let mut changes = vec![membership(mspuser, w.msp, "msp_user", MembershipKind::Direct), assignment(mspuser, w.a)];
    for t in [w.a, w.a1, w.b] {
        changes.push(membership(mspuser, t, "msp_user", MembershipKind::Shadow));
    }
    up.tenancy.push(changes);
    let authz = start_serving(&db, &up, &[("TETHER_AUTHZ_ROLE_PACK", "msp-panel")]).await;
    let mut c = authz.client.clone();
    assert!(authz.allowed(mspuser, "departments.create", w.a1).await);
    let reply = c
        .explain(pb::ExplainRequest {
            subject_user_id: mspuser.to_string(),
            permission: "clients.manage".into(),
            tenant_id: w.b.to_string(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(reply.reason, pb::DecisionReason::DeniedOutsideAssignedTenants as i32);
    assert!(reply.summary.contains("assigned"));

    // Which clients can this technician manage? A and its department, one per page.
    let mut pages = Vec::new();
    let mut token = String::new();
    loop {
        let r = c
            .lookup_tenants(pb::LookupTenantsRequest {
                page_size: 1,
                page_token: token.clone(),
                subject_user_id: mspuser.to_string(),
                permission: "clients.manage".into(),
                at_least_as_fresh: None,
            })
            .await
            .unwrap()
            .into_inner();
        pages.extend(r.tenant_ids);
        if r.next_page_token.is_empty() {
            break;
        }
        token = r.next_page_token;
    }
    let mut want = vec![w.a.to_string(), w.a1.to_string()];
    want.sort();
    assert_eq!(pages, want);
    let e = c
        .lookup_tenants(pb::LookupTenantsRequest {
            page_size: 1,
            page_token: token,
            subject_user_id: mspuser.to_string(),
            permission: "billing.view".into(),
            at_least_as_fresh: None,
        })
        .await
        .unwrap_err();
    assert_eq!(reason(&e), "INVALID_PAGE_TOKEN");

    // Access review: who holds clients.manage in B? Only the MSP admin (shadow), not the MSP user.
    let r = c
        .lookup_subjects(pb::LookupSubjectsRequest {
            permission: "clients.manage".into(),
            tenant_id: w.b.to_string(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let ids: Vec<String> = r.subjects.iter().map(|s| s.user_id.clone()).collect();
    assert!(ids.contains(&w.admin.to_string()) && !ids.contains(&mspuser.to_string()));

    let eff = c
        .list_effective_permissions(pb::ListEffectivePermissionsRequest {
            subject_user_id: mspuser.to_string(),
            tenant_id: w.a.to_string(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let names: Vec<&str> = eff.permissions.iter().map(|p| p.permission.as_str()).collect();
    assert_eq!(names, vec!["clients.manage", "clients.view", "departments.create", "devices.manage", "devices.view"]);
    authz.service.stop().await.unwrap();
}

#[tokio::test]
async fn fails_closed_until_both_snapshots_load_and_when_a_stream_goes_silent() {
    let db = TestDatabase::fresh().await;
    let up = Upstreams::start().await;
    let w = World::seed(&up);
    up.tenancy.hold_snapshot.store(true, std::sync::atomic::Ordering::SeqCst);
    let authz = start(config(&db, &up, &[("TETHER_AUTHZ_MAX_LAG_MS", "400")])).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let e = authz.client.clone().check(check(w.admin, "assets.view", w.a)).await.unwrap_err();
    assert_eq!((e.code(), reason(&e).as_str()), (Code::Unavailable, "INDEX_NOT_LOADED"));
    let status = authz.client.clone().get_index_status(pb::GetIndexStatusRequest {}).await.unwrap().into_inner();
    assert!(!status.serving);
    assert!(status.sources.iter().any(|s| s.snapshot_loaded) && status.sources.iter().any(|s| !s.snapshot_loaded));

    up.tenancy.release();
    authz.service.wait_serving().await;
    assert!(authz.allowed(w.admin, "assets.view", w.a).await);

    // The identity stream goes quiet (no changes, no heartbeats): beyond the bound, UNAVAILABLE.
    up.identity.silent.store(true, std::sync::atomic::Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(700)).await;
    let e = authz.client.clone().check(check(w.admin, "assets.view", w.a)).await.unwrap_err();
    assert_eq!((e.code(), reason(&e).as_str()), (Code::Unavailable, "INDEX_STALE"));
    let mut health = tonic_health::pb::health_client::HealthClient::new(authz.service.channel().await);
    let h = health.check(tonic_health::pb::HealthCheckRequest { service: String::new() }).await.unwrap().into_inner();
    assert_eq!(h.status, tonic_health::pb::health_check_response::ServingStatus::NotServing as i32);
    up.identity.silent.store(false, std::sync::atomic::Ordering::SeqCst);
    authz.service.wait_serving().await;
    assert!(authz.allowed(w.admin, "assets.view", w.a).await);
    authz.service.stop().await.unwrap();
}

#[tokio::test]
async fn a_token_the_replica_cannot_reach_is_not_caught_up_never_stale() {
    let db = TestDatabase::fresh().await;
    let up = Upstreams::start().await;
    let w = World::seed(&up);
    let authz = start_serving(&db, &up, &[("TETHER_AUTHZ_CONSISTENCY_WAIT_MS", "200")]).await;
    let mut request = check(w.admin, "assets.view", w.a);
    request.at_least_as_fresh = fresh(RevisionSource::Tenancy, up.tenancy.revision() + 50);
    let e = authz.client.clone().check(request).await.unwrap_err();
    assert_eq!((e.code(), reason(&e).as_str()), (Code::Unavailable, "NOT_CAUGHT_UP"));
    authz.service.stop().await.unwrap();
}

#[tokio::test]
async fn a_broken_stream_resumes_from_the_last_applied_revision() {
    let db = TestDatabase::fresh().await;
    let up = Upstreams::start().await;
    let w = World::seed(&up);
    let authz = start_serving(&db, &up, &[]).await;
    let before = up.tenancy.revision();
    up.tenancy.break_streams();
    let newcomer = Uuid::new_v4();
    up.identity.push(vec![user(newcomer, UserStatus::Active, false)]);
    up.tenancy.push(vec![membership(newcomer, w.b, "client_manager", MembershipKind::Direct)]);
    authz.eventually(newcomer, "assets.create", w.b, true).await;
    let opened = up.tenancy.opened();
    assert_eq!(opened[0], 0, "first a snapshot");
    assert!(opened[1..].contains(&before), "then a resume from {before}: {opened:?}");
    authz.service.stop().await.unwrap();
}

#[tokio::test]
async fn two_replicas_answer_alike_after_a_change() {
    let db = TestDatabase::fresh().await;
    let up = Upstreams::start().await;
    let w = World::seed(&up);
    let one = start_serving(&db, &up, &[]).await;
    let two = start_serving(&db, &up, &[]).await;
    let probes = [
        (w.viewer, "assets.export", w.a),
        (w.viewer, "assets.delete", w.a1),
        (w.cadmin, "users.manage", w.a),
        (w.tech, "assets.view", w.b),
    ];
    // A change in a stream, and an override written through replica one.
    let rev = up.tenancy.push(vec![tenant(w.b, Some(w.msp), TenantKind::Client, TenantStatus::Suspended)]);
    let written = one
        .client
        .clone()
        .set_override(as_service(pb::SetOverrideRequest {
            user_id: w.viewer.to_string(),
            permission: "assets.delete".into(),
            effect: pb::OverrideEffect::Grant as i32,
            tenant_id: w.a.to_string(),
            note: String::new(),
        }))
        .await
        .unwrap()
        .into_inner();
    let mut token = written.consistency_token.unwrap();
    token.revisions.push(tether_proto::common::v1::Revision { source: RevisionSource::Tenancy as i32, value: rev });
    for replica in [&one, &two] {
        let mut answers = Vec::new();
        for (u, p, t) in probes {
            let mut r = check(u, p, t);
            r.at_least_as_fresh = Some(token.clone());
            answers.push(replica.client.clone().check(r).await.unwrap().into_inner().allowed);
        }
        assert_eq!(answers, vec![true, true, true, false]);
    }
    let s1 = one.client.clone().get_index_status(pb::GetIndexStatusRequest {}).await.unwrap().into_inner();
    let s2 = two.client.clone().get_index_status(pb::GetIndexStatusRequest {}).await.unwrap().into_inner();
    assert_eq!(s1.current, s2.current);
    assert_eq!(
        (s1.user_count, s1.tenant_count, s1.membership_count),
        (s2.user_count, s2.tenant_count, s2.membership_count)
    );
    one.service.stop().await.unwrap();
    two.service.stop().await.unwrap();
}

#[tokio::test]
async fn decision_calls_need_credentials_and_people_ask_only_what_they_may_see() {
    let db = TestDatabase::fresh().await;
    let up = Upstreams::start().await;
    let w = World::seed(&up);
    let authz = start_serving(&db, &up, &[]).await;
    let bare = || pb::authz_service_client::AuthzServiceClient::new(authz.channel.clone());

    // No credentials at all: refused, not answered as if a service asked.
    let e = bare().check(check(w.viewer, "assets.view", w.a)).await.unwrap_err();
    assert_eq!(e.code(), Code::Unauthenticated);
    let batch = pb::BatchCheckRequest { items: vec![item(w.viewer, "assets.view", w.a)], at_least_as_fresh: None };
    assert_eq!(bare().batch_check(batch.clone()).await.unwrap_err().code(), Code::Unauthenticated);
    let e = bare().get_index_status(pb::GetIndexStatusRequest {}).await.unwrap_err();
    assert_eq!(e.code(), Code::Unauthenticated);
    // A forged service token is no better.
    let mut forged = tonic::Request::new(check(w.viewer, "assets.view", w.a));
    forged
        .metadata_mut()
        .insert("x-tether-service-token", "not-the-deployment-token-0123456789abcdef".parse().unwrap());
    assert_eq!(bare().check(forged).await.unwrap_err().code(), Code::Unauthenticated);

    // A person may ask about themselves...
    let viewer = authz.sessions.login(w.viewer, false);
    let mine = bare().check(as_user(&viewer, check(w.viewer, "assets.view", w.a))).await.unwrap().into_inner();
    assert!(mine.allowed);
    // ...but not, without users.view, about a colleague: one by one, in a batch, in a review.
    let e = bare().check(as_user(&viewer, check(w.cadmin, "users.manage", w.a))).await.unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied);
    let mixed = pb::BatchCheckRequest {
        items: vec![item(w.viewer, "assets.view", w.a), item(w.cadmin, "users.manage", w.a)],
        at_least_as_fresh: None,
    };
    let reply = bare().batch_check(as_user(&viewer, mixed.clone())).await.unwrap().into_inner();
    assert!(reply.decisions[0].allowed);
    assert!(!reply.decisions[1].allowed);
    assert_eq!(reply.decisions[1].error, ErrorReason::PermissionDenied as i32);
    let review = pb::LookupSubjectsRequest {
        permission: "assets.view".into(),
        tenant_id: w.a.to_string(),
        ..Default::default()
    };
    let e = bare().lookup_subjects(as_user(&viewer, review.clone())).await.unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied);
    // Nor ask what someone else may grant.
    let grant = pb::CheckRoleGrantRequest {
        actor_user_id: w.cadmin.to_string(),
        target_user_id: w.viewer.to_string(),
        tenant_id: w.a.to_string(),
        role: "client_manager".into(),
        ..Default::default()
    };
    let e = bare().check_role_grant(as_user(&viewer, grant.clone())).await.unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied);

    // Resource grants say who may reach what: the same rule as an access review.
    let grants = |user: Uuid, tenant: Uuid| pb::ListResourceGrantsRequest {
        tenant_id: tenant.to_string(),
        user_id: if user.is_nil() { String::new() } else { user.to_string() },
        ..Default::default()
    };
    let e = bare().list_resource_grants(grants(Uuid::nil(), w.a)).await.unwrap_err();
    assert_eq!(e.code(), Code::Unauthenticated);
    let nodes = pb::ListResourcesRequest { tenant_id: w.a.to_string(), ..Default::default() };
    assert_eq!(bare().list_resources(nodes).await.unwrap_err().code(), Code::Unauthenticated);
    let e = bare().list_resource_grants(as_user(&viewer, grants(Uuid::nil(), w.a))).await.unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied);
    assert!(bare().list_resource_grants(as_user(&viewer, grants(w.viewer, w.a))).await.is_ok());

    // The client admin holds users.view in their tenant: the same questions are answered there.
    let cadmin = authz.sessions.login(w.cadmin, false);
    assert!(bare().list_resource_grants(as_user(&cadmin, grants(Uuid::nil(), w.a))).await.is_ok());
    let e = bare().list_resource_grants(as_user(&cadmin, grants(Uuid::nil(), w.b))).await.unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied);
    let reply = bare().batch_check(as_user(&cadmin, mixed)).await.unwrap().into_inner();
    assert!(reply.decisions.iter().all(|d| d.allowed && d.error == 0));
    let subjects = bare().lookup_subjects(as_user(&cadmin, review)).await.unwrap().into_inner().subjects;
    assert!(subjects.iter().any(|s| s.user_id == w.viewer.to_string()));
    assert!(bare().check_role_grant(as_user(&cadmin, grant)).await.unwrap().into_inner().allowed);
    // ...but not in another client's tenant.
    let e = bare().check(as_user(&cadmin, check(w.admin, "assets.view", w.b))).await.unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied);
    authz.service.stop().await.unwrap();

    // A deployment whose network authenticates callers can opt into answering bare calls.
    let open = start_serving(&db, &up, &[("TETHER_AUTHZ_OPEN_DECISIONS", "true")]).await;
    let mut client = pb::authz_service_client::AuthzServiceClient::new(open.channel.clone());
    assert!(client.check(check(w.viewer, "assets.view", w.a)).await.unwrap().into_inner().allowed);
    assert!(!client.check(check(w.viewer, "assets.edit", w.a)).await.unwrap().into_inner().allowed);
    open.service.stop().await.unwrap();
}

fn item(user: Uuid, permission: &str, tenant: Uuid) -> pb::BatchCheckItem {
    pb::BatchCheckItem {
        subject_user_id: user.to_string(),
        permission: permission.into(),
        tenant_id: tenant.to_string(),
        resource_id: String::new(),
    }
}
