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

async fn health_status(authz: &Authz) -> i32 {
    let mut health = tonic_health::pb::health_client::HealthClient::new(authz.service.channel().await);
    health
        .check(tonic_health::pb::HealthCheckRequest { service: String::new() })
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .into_inner()
        .status
}

const NOT_SERVING: i32 = tonic_health::pb::health_check_response::ServingStatus::NotServing as i32;

/// authz's own data (overrides, custom roles, resources) comes from its own schema, polled: when
/// the polls fail for longer than the lag bound, the replica fails closed as for a silent stream
/// instead of deciding on stale overrides; when they succeed again it serves again.
#[tokio::test]
async fn fails_closed_when_its_own_data_cannot_be_read_beyond_the_bound() {
    let db = TestDatabase::fresh().await;
    let up = Upstreams::start().await;
    let w = World::seed(&up);
    let authz = start_serving(&db, &up, &[("TETHER_AUTHZ_MAX_LAG_MS", "400")]).await;
    assert!(authz.allowed(w.admin, "assets.view", w.a).await);

    // The schema becomes unreadable (the revision every poll reads is gone); streams stay live.
    let raw = db.inspect("authz").await;
    sqlx::query("ALTER TABLE revision_counter RENAME TO revision_counter_away").execute(&raw).await.unwrap();
    tokio::time::sleep(Duration::from_millis(800)).await;
    let e = authz.client.clone().check(check(w.admin, "assets.view", w.a)).await.unwrap_err();
    assert_eq!((e.code(), reason(&e).as_str()), (Code::Unavailable, "INDEX_STALE"), "{}", e.message());
    assert!(e.message().contains("own data"), "{}", e.message());
    assert_eq!(health_status(&authz).await, NOT_SERVING);
    let status = authz.client.clone().get_index_status(pb::GetIndexStatusRequest {}).await.unwrap().into_inner();
    assert!(!status.serving);
    let own = status.sources.iter().find(|s| s.source == RevisionSource::Authz as i32).unwrap();
    assert!(own.lag.unwrap().nanos >= 400_000_000 || own.lag.unwrap().seconds > 0, "{own:?}");

    sqlx::query("ALTER TABLE revision_counter_away RENAME TO revision_counter").execute(&raw).await.unwrap();
    authz.service.wait_serving().await;
    assert!(authz.allowed(w.admin, "assets.view", w.a).await);
    authz.service.stop().await.unwrap();
}

/// Heartbeats alone do not keep a replica ready while a revision it knows of sits unapplied
/// (here its end marker never comes): beyond the lag bound it fails closed; once the revision
/// completes it serves again, with the change applied.
#[tokio::test]
async fn a_revision_left_unapplied_beyond_the_bound_fails_closed_despite_heartbeats() {
    let db = TestDatabase::fresh().await;
    let up = Upstreams::start().await;
    let w = World::seed(&up);
    let authz = start_serving(&db, &up, &[("TETHER_AUTHZ_MAX_LAG_MS", "400")]).await;
    let newcomer = Uuid::new_v4();
    up.identity.push(vec![user(newcomer, UserStatus::Active, false)]);
    let stuck = up.tenancy.push_unfinished(vec![membership(newcomer, w.b, "client_manager", MembershipKind::Direct)]);
    tokio::time::sleep(Duration::from_millis(800)).await;
    let e = authz.client.clone().check(check(w.admin, "assets.view", w.a)).await.unwrap_err();
    assert_eq!((e.code(), reason(&e).as_str()), (Code::Unavailable, "INDEX_STALE"), "{}", e.message());
    assert!(e.message().contains("tenancy"), "{}", e.message());
    assert_eq!(health_status(&authz).await, NOT_SERVING);
    let status = authz.client.clone().get_index_status(pb::GetIndexStatusRequest {}).await.unwrap().into_inner();
    let tenancy = status.sources.iter().find(|s| s.source == RevisionSource::Tenancy as i32).unwrap();
    assert_eq!(tenancy.latest_known_revision, stuck);
    assert!(tenancy.applied_revision < stuck);

    // The next revision ends normally: both apply, and the replica serves again.
    up.tenancy.push(vec![membership(newcomer, w.a, "client_viewer", MembershipKind::Direct)]);
    authz.service.wait_serving().await;
    assert!(authz.allowed(newcomer, "assets.create", w.b).await);
    assert!(authz.allowed(newcomer, "assets.view", w.a).await);
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
    // The catalog too ("any authenticated caller"): a session or the service token.
    let e = bare().list_permissions(pb::ListPermissionsRequest::default()).await.unwrap_err();
    assert_eq!((e.code(), reason(&e).as_str()), (Code::Unauthenticated, "UNAUTHENTICATED"));
    assert_eq!(bare().list_roles(pb::ListRolesRequest::default()).await.unwrap_err().code(), Code::Unauthenticated);
    let role = || pb::GetRoleRequest { name: "client_viewer".into() };
    assert_eq!(bare().get_role(role()).await.unwrap_err().code(), Code::Unauthenticated);
    assert_eq!(bare().get_active_pack(pb::GetActivePackRequest {}).await.unwrap_err().code(), Code::Unauthenticated);
    let session = authz.sessions.login(w.viewer, false);
    let listed = bare().list_permissions(as_user(&session, pb::ListPermissionsRequest::default())).await.unwrap();
    assert_eq!(listed.into_inner().permissions.len(), 17);
    assert!(bare().list_roles(as_user(&session, pb::ListRolesRequest::default())).await.is_ok());
    assert!(bare().get_role(as_user(&session, role())).await.is_ok());
    assert!(bare().get_active_pack(as_user(&session, pb::GetActivePackRequest {})).await.is_ok());
    assert!(bare().get_active_pack(as_service(pb::GetActivePackRequest {})).await.is_ok());
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
    // Decisions only: the index status is still for services (and MSP staff).
    let e = client.get_index_status(pb::GetIndexStatusRequest {}).await.unwrap_err();
    assert_eq!((e.code(), reason(&e).as_str()), (Code::Unauthenticated, "UNAUTHENTICATED"));
    assert!(open.client.clone().get_index_status(pb::GetIndexStatusRequest {}).await.is_ok());
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

fn explain(user: Uuid, permission: &str, tenant: Uuid) -> pb::ExplainRequest {
    pb::ExplainRequest {
        subject_user_id: user.to_string(),
        permission: permission.into(),
        tenant_id: tenant.to_string(),
        ..Default::default()
    }
}

#[tokio::test]
async fn a_user_no_longer_msp_staff_holds_no_msp_staff_only_role() {
    let db = TestDatabase::fresh().await;
    let up = Upstreams::start().await;
    let w = World::seed(&up);
    let authz = start_serving(&db, &up, &[]).await;
    assert!(authz.allowed(w.tech, "assets.view", w.b).await);
    // identity clears the staff flag; tenancy has not (yet) removed the memberships.
    let rev = up.identity.push(vec![user(w.tech, UserStatus::Active, false)]);
    let mut c = authz.client.clone();
    for t in [w.msp, w.a, w.a1, w.b] {
        let mut request = check(w.tech, "assets.view", t);
        request.at_least_as_fresh = fresh(RevisionSource::Identity, rev);
        assert!(!c.check(request).await.unwrap().into_inner().allowed);
    }
    let reply = c.explain(explain(w.tech, "assets.view", w.b)).await.unwrap().into_inner();
    assert_eq!(reply.reason, pb::DecisionReason::DeniedNoMembership as i32);
    assert!(reply.summary.contains("msp_technician") && reply.summary.contains("not MSP staff"), "{}", reply.summary);
    assert_eq!(reply.membership.unwrap().role, "msp_technician");
    let eff = c
        .list_effective_permissions(pb::ListEffectivePermissionsRequest {
            subject_user_id: w.tech.to_string(),
            tenant_id: w.a.to_string(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(eff.permissions.is_empty());
    assert!(authz.allowed(w.admin, "assets.view", w.b).await);
    authz.service.stop().await.unwrap();
}

#[tokio::test]
async fn own_tenant_roles_held_in_the_admin_tenancy_never_reach_clients() {
    let db = TestDatabase::fresh().await;
    let up = Upstreams::start().await;
    let w = World::seed(&up);
    let (clerk, dept) = (Uuid::new_v4(), Uuid::new_v4());
    up.identity.push(vec![user(clerk, UserStatus::Active, false)]);
    up.tenancy.push(vec![
        // A department of the admin tenancy itself, and a client-style role held there.
        tenant(dept, Some(w.msp), TenantKind::Department, TenantStatus::Active),
        membership(clerk, w.msp, "client_manager", MembershipKind::Direct),
    ]);
    let authz = start_serving(&db, &up, &[]).await;
    assert!(authz.allowed(clerk, "assets.edit", w.msp).await);
    assert!(authz.allowed(clerk, "assets.edit", dept).await);
    for t in [w.a, w.a1, w.b] {
        assert!(!authz.allowed(clerk, "assets.edit", t).await);
    }
    let mut c = authz.client.clone();
    let tenants = c
        .lookup_tenants(pb::LookupTenantsRequest {
            subject_user_id: clerk.to_string(),
            permission: "assets.edit".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .tenant_ids;
    let mut want = vec![w.msp.to_string(), dept.to_string()];
    want.sort();
    assert_eq!(tenants, want);

    // A role reaching beyond one tenant is for MSP staff only, even in the admin tenancy.
    let created = c
        .create_role(as_service(pb::CreateRoleRequest {
            name: "roamer".into(),
            display_name: "Roamer".into(),
            description: String::new(),
            permissions: vec!["assets.view".into()],
            scope: pb::RoleScope::AllTenants as i32,
            rank: 20,
            assignable: true,
            msp_staff_only: false,
        }))
        .await
        .unwrap()
        .into_inner();
    let ask = |target: Uuid| pb::CheckRoleGrantRequest {
        actor_user_id: w.admin.to_string(),
        target_user_id: target.to_string(),
        target_is_msp_staff: false,
        tenant_id: w.msp.to_string(),
        role: "roamer".into(),
        previous_role: String::new(),
        at_least_as_fresh: created.consistency_token.clone(),
    };
    let reply = c.check_role_grant(ask(clerk)).await.unwrap().into_inner();
    assert_eq!(reply.denial_reason, ErrorReason::RoleScopeMismatch as i32, "{}", reply.summary);
    assert!(c.check_role_grant(ask(w.tech)).await.unwrap().into_inner().allowed);
    authz.service.stop().await.unwrap();
}

#[tokio::test]
async fn a_tenant_chain_with_a_cycle_or_too_deep_is_denied_not_decided_in_part() {
    let db = TestDatabase::fresh().await;
    let up = Upstreams::start().await;
    let w = World::seed(&up);
    // 40 nested departments under A; the viewer is also a member of the tenth.
    let deep: Vec<Uuid> = (0..40).map(|_| Uuid::new_v4()).collect();
    let mut changes = Vec::new();
    let mut parent = w.a;
    for d in &deep {
        changes.push(tenant(*d, Some(parent), TenantKind::Department, TenantStatus::Active));
        parent = *d;
    }
    changes.push(membership(w.viewer, deep[9], "client_viewer", MembershipKind::Direct));
    // Two departments that are each other's parent, the viewer a member of one.
    let (x, y) = (Uuid::new_v4(), Uuid::new_v4());
    changes.push(tenant(x, Some(y), TenantKind::Department, TenantStatus::Active));
    changes.push(tenant(y, Some(x), TenantKind::Department, TenantStatus::Active));
    changes.push(membership(w.viewer, x, "client_viewer", MembershipKind::Direct));
    up.tenancy.push(changes);
    let authz = start_serving(&db, &up, &[]).await;
    assert!(authz.allowed(w.viewer, "assets.view", deep[20]).await);
    for t in [deep[39], x, y] {
        assert!(!authz.allowed(w.viewer, "assets.view", t).await);
    }
    let reply = authz.client.clone().explain(explain(w.viewer, "assets.view", x)).await.unwrap().into_inner();
    assert_eq!(reply.reason, pb::DecisionReason::DeniedTenantUnknown as i32);
    assert!(reply.summary.contains("cycle"), "{}", reply.summary);
    authz.service.stop().await.unwrap();
}

#[tokio::test]
async fn grant_overrides_apply_only_where_a_membership_reaches_and_denies_everywhere() {
    let db = TestDatabase::fresh().await;
    let up = Upstreams::start().await;
    let w = World::seed(&up);
    let authz = start_serving(&db, &up, &[]).await;
    let mut c = authz.client.clone();
    let set = |perm: &str, effect: pb::OverrideEffect, tenant: Option<Uuid>| pb::SetOverrideRequest {
        user_id: w.viewer.to_string(),
        permission: perm.into(),
        effect: effect as i32,
        tenant_id: tenant.map(|t| t.to_string()).unwrap_or_default(),
        note: String::new(),
    };
    c.set_override(as_service(set("assets.view", pb::OverrideEffect::Grant, Some(w.b)))).await.unwrap();
    c.set_override(as_service(set("assets.delete", pb::OverrideEffect::Grant, None))).await.unwrap();
    let written =
        c.set_override(as_service(set("assets.export", pb::OverrideEffect::Deny, None))).await.unwrap().into_inner();
    let probe = |perm: &str, tenant: Uuid| {
        let mut r = check(w.viewer, perm, tenant);
        r.at_least_as_fresh = written.consistency_token.clone();
        r
    };
    // The viewer is a member of A only: B is out of reach, whatever the override says.
    assert!(!c.check(probe("assets.view", w.b)).await.unwrap().into_inner().allowed);
    assert!(!c.check(probe("assets.delete", w.b)).await.unwrap().into_inner().allowed);
    assert!(!c.check(probe("assets.delete", w.msp)).await.unwrap().into_inner().allowed);
    assert!(c.check(probe("assets.delete", w.a1)).await.unwrap().into_inner().allowed);
    assert!(!c.check(probe("assets.export", w.a)).await.unwrap().into_inner().allowed);
    let reply = c.explain(explain(w.viewer, "assets.delete", w.b)).await.unwrap().into_inner();
    assert_eq!(reply.reason, pb::DecisionReason::DeniedNoMembership as i32);
    let reply = c.explain(explain(w.viewer, "assets.delete", w.a)).await.unwrap().into_inner();
    assert_eq!(reply.reason, pb::DecisionReason::GrantedByOverride as i32);
    let (tenants, _) = (
        c.lookup_tenants(pb::LookupTenantsRequest {
            subject_user_id: w.viewer.to_string(),
            permission: "assets.delete".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .tenant_ids,
        (),
    );
    let mut want = vec![w.a.to_string(), w.a1.to_string()];
    want.sort();
    assert_eq!(tenants, want);
    authz.service.stop().await.unwrap();
}

#[tokio::test]
async fn client_callers_never_see_msp_staff() {
    let db = TestDatabase::fresh().await;
    let up = Upstreams::start().await;
    let w = World::seed(&up);
    let other = Uuid::new_v4();
    up.identity.push(vec![user(other, UserStatus::Active, false)]);
    up.tenancy.push(vec![membership(other, w.b, "client_viewer", MembershipKind::Direct)]);
    let authz = start_serving(&db, &up, &[]).await;
    let mut c = authz.client.clone();
    for u in [w.admin, other] {
        c.set_override(as_service(pb::SetOverrideRequest {
            user_id: u.to_string(),
            permission: "audit.view".into(),
            effect: pb::OverrideEffect::Deny as i32,
            tenant_id: String::new(),
            note: String::new(),
        }))
        .await
        .unwrap();
    }
    let (cadmin, admin) = (authz.sessions.login(w.cadmin, false), authz.sessions.login(w.admin, true));
    let review = pb::LookupSubjectsRequest {
        permission: "assets.view".into(),
        tenant_id: w.a.to_string(),
        page_size: 1,
        ..Default::default()
    };
    // Page by page, so a hidden user cannot leave an empty page or a cursor behind.
    let mut seen = Vec::new();
    let mut request = review.clone();
    loop {
        let page = c.lookup_subjects(as_user(&cadmin, request.clone())).await.unwrap().into_inner();
        assert!(!page.subjects.is_empty());
        seen.extend(page.subjects.into_iter().map(|s| s.user_id));
        if page.next_page_token.is_empty() {
            break;
        }
        request.page_token = page.next_page_token;
    }
    let mut want = vec![w.cadmin.to_string(), w.viewer.to_string()];
    want.sort();
    assert_eq!(seen, want);
    let staff_view = c.lookup_subjects(as_user(&admin, pb::LookupSubjectsRequest { page_size: 10, ..review })).await;
    assert!(staff_view.unwrap().into_inner().subjects.iter().any(|s| s.user_id == w.admin.to_string()));

    // Explained exactly as an unknown user is (Explain answers unknown inputs as denials).
    let hidden = c.explain(as_user(&cadmin, explain(w.admin, "assets.view", w.a))).await.unwrap().into_inner();
    let nobody = Uuid::new_v4();
    let unknown = c.explain(as_user(&cadmin, explain(nobody, "assets.view", w.a))).await.unwrap().into_inner();
    assert_eq!(hidden.reason, pb::DecisionReason::DeniedUserUnknown as i32);
    assert_eq!(
        (hidden.summary.replace(&w.admin.to_string(), "?"), hidden.steps),
        (unknown.summary.replace(&nobody.to_string(), "?"), unknown.steps)
    );
    let effective = |u: Uuid| pb::ListEffectivePermissionsRequest {
        subject_user_id: u.to_string(),
        tenant_id: w.a.to_string(),
        ..Default::default()
    };
    let e = c.list_effective_permissions(as_user(&cadmin, effective(w.tech))).await.unwrap_err();
    assert_eq!(reason(&e), "USER_NOT_FOUND");
    assert!(c.list_effective_permissions(as_user(&cadmin, effective(w.viewer))).await.is_ok());
    let e = c.check(as_user(&cadmin, check(w.admin, "assets.view", w.a))).await.unwrap_err();
    assert_eq!(reason(&e), "USER_NOT_FOUND");

    let listed = |who: &str| {
        let mut c = c.clone();
        let request = as_user(
            who,
            pb::ListOverridesRequest { tenant_id: w.a.to_string(), include_global: true, ..Default::default() },
        );
        async move { c.list_overrides(request).await.unwrap().into_inner().permission_overrides }
    };
    assert!(listed(&cadmin).await.is_empty(), "neither MSP staff nor another client's user");
    assert_eq!(listed(&admin).await.len(), 2);
    authz.service.stop().await.unwrap();
}

#[tokio::test]
async fn batch_items_ask_permission_before_saying_whether_a_user_exists() {
    let db = TestDatabase::fresh().await;
    let up = Upstreams::start().await;
    let w = World::seed(&up);
    let authz = start_serving(&db, &up, &[]).await;
    let (viewer, cadmin) = (authz.sessions.login(w.viewer, false), authz.sessions.login(w.cadmin, false));
    let batch = pb::BatchCheckRequest {
        items: vec![item(Uuid::new_v4(), "assets.view", w.a), item(w.admin, "assets.view", w.a)],
        at_least_as_fresh: None,
    };
    let mut c = authz.client.clone();
    let reply = c.batch_check(as_user(&viewer, batch.clone())).await.unwrap().into_inner();
    let errors: Vec<i32> = reply.decisions.iter().map(|d| d.error).collect();
    assert_eq!(errors, vec![ErrorReason::PermissionDenied as i32; 2]);
    // With users.view: an unknown user and MSP staff look alike.
    let reply = c.batch_check(as_user(&cadmin, batch)).await.unwrap().into_inner();
    let errors: Vec<i32> = reply.decisions.iter().map(|d| d.error).collect();
    assert_eq!(errors, vec![ErrorReason::UserNotFound as i32; 2]);
    authz.service.stop().await.unwrap();
}
