//! identity <-> tenancy: a user and their membership never diverge, even when tenancy-svc is
//! down between the two writes and identity restarts in between. And the Watch stream.

// Test code: a failed set-up or assertion should panic.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::{sync::atomic::Ordering, time::Duration};

use common::*;
use tether_proto::identity::v1 as pb;
use tokio_stream::StreamExt;
use tonic::Code;

async fn eventually(mut check: impl FnMut() -> bool) -> bool {
    for _ in 0..200 {
        if check() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    false
}

#[tokio::test]
async fn a_tenancy_outage_and_a_restart_never_leave_a_user_without_a_membership_or_the_reverse() {
    let mut env = Env::start_with(&[("TETHER_IDENTITY_PROVISION_WAIT_MS", "200")]).await;
    let owner = env.owner_token().await;

    // tenancy-svc fails between identity's commit and the membership write.
    env.tenancy.failing.store(true, Ordering::SeqCst);
    let nina = env.create(&owner, "nina@a.example", "Nina", TENANT_A, "client_user", false).await;
    assert!(env.tenancy.membership(&nina.user_id).is_empty(), "no membership yet");
    // Not loginable while the membership is missing (the reason is audited, the caller sees
    // the generic failure).
    assert_err(env.try_login("nina@a.example", PASSWORD).await, Code::Unauthenticated, "LOGIN_FAILED");
    assert!(env.audit().await.iter().any(|e| e.reason == "MEMBERSHIP_PENDING"));
    let calls_before = env.tenancy.calls.load(Ordering::SeqCst);
    assert!(eventually(|| env.tenancy.calls.load(Ordering::SeqCst) > calls_before).await, "the relay keeps retrying");

    // identity restarts while tenancy is still down: the intent survives in the database.
    env.restart().await;
    assert_err(env.try_login("nina@a.example", PASSWORD).await, Code::Unauthenticated, "LOGIN_FAILED");
    assert!(env.tenancy.membership(&nina.user_id).is_empty());

    // tenancy recovers: the membership arrives, and only then can Nina log in.
    env.tenancy.failing.store(false, Ordering::SeqCst);
    assert!(eventually(|| !env.tenancy.membership(&nina.user_id).is_empty()).await, "membership delivered");
    assert_eq!(env.tenancy.membership(&nina.user_id), vec![(TENANT_A.to_owned(), "client_user".to_owned())]);
    let mut logged_in = false;
    for _ in 0..100 {
        if env.try_login("nina@a.example", PASSWORD).await.is_ok() {
            logged_in = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(logged_in, "loginable once the membership exists");

    // Deletion while tenancy takes no writes (it still answers who holds which role, which the
    // last-admin rule needs): the user is gone at once (cannot log in), and the membership is
    // removed as soon as tenancy takes writes again, across another restart.
    let owner = env.owner_token().await;
    env.tenancy.failing_writes.store(true, Ordering::SeqCst);
    env.client().delete_user(auth(&owner, pb::DeleteUserRequest { user_id: nina.user_id.clone() })).await.unwrap();
    assert_err(env.try_login("nina@a.example", PASSWORD).await, Code::Unauthenticated, "LOGIN_FAILED");
    env.restart().await;
    assert!(!env.tenancy.membership(&nina.user_id).is_empty(), "not removed while writes fail");
    env.tenancy.failing_writes.store(false, Ordering::SeqCst);
    assert!(eventually(|| env.tenancy.membership(&nina.user_id).is_empty()).await, "membership removed");
    // Every membership in tenancy belongs to an existing, non-deleted user.
    let members: Vec<String> = env.tenancy.memberships.lock().unwrap().keys().cloned().collect();
    for user in members {
        let n = env.count(&format!("SELECT COUNT(*) FROM accounts WHERE id = '{user}' AND status <> 'deleted'")).await;
        assert_eq!(n, 1, "membership of {user} has a user");
    }
    assert_eq!(env.tenancy.owner.lock().unwrap().clone(), Some(env.owner_id.clone()), "bootstrap ownership delivered");
}

/// A user created while tenancy is down, then deleted just after it recovers: the deletion's
/// Clear must not overtake the creation's Add (still waiting out its retry delay), or tenancy
/// would end up holding a membership for a deleted user.
#[tokio::test]
async fn a_deletion_never_overtakes_a_creation_still_being_retried() {
    let env =
        Env::start_with(&[("TETHER_IDENTITY_PROVISION_WAIT_MS", "100"), ("TETHER_IDENTITY_RELAY_RETRY_MS", "1500")])
            .await;
    let owner = env.owner_token().await;
    env.tenancy.failing.store(true, Ordering::SeqCst);
    let calls_before = env.tenancy.calls.load(Ordering::SeqCst);
    let oscar = env.create(&owner, "oscar@a.example", "Oscar", TENANT_A, "client_user", false).await;
    assert!(eventually(|| env.tenancy.calls.load(Ordering::SeqCst) > calls_before).await, "the Add was tried");
    // tenancy is back; the Add waits out its 1.5 s retry delay, the deletion comes now.
    env.tenancy.failing.store(false, Ordering::SeqCst);
    env.client().delete_user(auth(&owner, pb::DeleteUserRequest { user_id: oscar.user_id.clone() })).await.unwrap();
    let settled =
        || async { env.count("SELECT COUNT(*) FROM membership_intents WHERE delivered_at IS NULL").await == 0 };
    let mut delivered = false;
    for _ in 0..200 {
        if settled().await {
            delivered = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(delivered, "both intents delivered");
    assert!(env.tenancy.membership(&oscar.user_id).is_empty(), "no membership left for the deleted user");
}

#[tokio::test]
async fn a_membership_tenancy_refuses_for_good_removes_the_account_again() {
    let env = Env::start().await;
    let owner = env.owner_token().await;
    env.authz.grant(&env.owner_id, TENANT_GONE, "msp_owner");
    let request = pb::CreateUserRequest {
        email: "yan@gone.example".into(),
        display_name: "Yan".into(),
        password: PASSWORD.into(),
        tenant_id: TENANT_GONE.into(),
        role: "client_user".into(),
        ..Default::default()
    };
    assert_err(env.client().create_user(auth(&owner, request)).await, Code::NotFound, "TENANT_NOT_FOUND");
    assert_err(env.try_login("yan@gone.example", PASSWORD).await, Code::Unauthenticated, "LOGIN_FAILED");
    assert_eq!(
        env.count("SELECT COUNT(*) FROM accounts WHERE status = 'deleted'").await,
        1,
        "a tombstone, no live user"
    );
    assert!(env.audit().await.iter().any(|e| e.action == "user.provision_failed" && e.reason == "TENANT_NOT_FOUND"));
    // The email is free again.
    env.create(&owner, "yan@gone.example", "Yan", TENANT_A, "client_user", false).await;
}

/// The change stream carries every user's email and status and replays their history: only
/// Tether services presenting the service token may follow it.
#[tokio::test]
async fn only_services_may_watch() {
    let env = Env::start().await;
    let owner = env.owner_token().await;
    for from_revision in [0, 1] {
        let watch = |request| {
            let mut client = env.client();
            async move { client.watch(request).await.map(|_| ()) }
        };
        let request = || pb::WatchRequest { from_revision };
        assert_err(watch(tonic::Request::new(request())).await, Code::Unauthenticated, "UNAUTHENTICATED");
        assert_err(watch(auth(&owner, request())).await, Code::PermissionDenied, "PERMISSION_DENIED");
        watch(as_service(request())).await.unwrap();
    }
}

#[tokio::test]
async fn watch_sends_a_snapshot_then_live_changes_and_resumes() {
    let env = Env::start().await;
    let owner = env.owner_token().await;
    let olga = env.create(&owner, "olga@a.example", "Olga", TENANT_A, "client_user", false).await;
    // People may not follow the stream.
    assert_err(
        env.client().watch(auth(&owner, pb::WatchRequest { from_revision: 0 })).await.map(|_| ()),
        Code::PermissionDenied,
        "PERMISSION_DENIED",
    );

    let mut stream = env.client().watch(as_service(pb::WatchRequest { from_revision: 0 })).await.unwrap().into_inner();
    let mut snapshot_users = Vec::new();
    let snapshot_revision = loop {
        match stream.next().await.unwrap().unwrap().kind.unwrap() {
            pb::watch_response::Kind::Change(c) => match c.change.unwrap() {
                pb::identity_change::Change::UserUpserted(u) => snapshot_users.push(u.user.unwrap().user_id),
                other => panic!("unexpected snapshot item {other:?}"),
            },
            pb::watch_response::Kind::SnapshotEnd(end) => break end.revision,
            pb::watch_response::Kind::Heartbeat(_) => {}
        }
    };
    assert!(snapshot_users.contains(&olga.user_id) && snapshot_users.contains(&env.owner_id));

    let token = env.login("olga@a.example", PASSWORD).await;
    env.client()
        .deactivate_user(auth(
            &owner,
            pb::DeactivateUserRequest { user_id: olga.user_id.clone(), ..Default::default() },
        ))
        .await
        .unwrap();
    drop(token);
    // One revision: the suspended user and the revoked session, the last marked end_of_revision.
    let mut seen = Vec::new();
    while seen.last().is_none_or(|c: &pb::IdentityChange| !c.end_of_revision) {
        if let pb::watch_response::Kind::Change(c) = stream.next().await.unwrap().unwrap().kind.unwrap() {
            seen.push(c);
        }
    }
    let kinds: Vec<_> = seen.iter().map(|c| c.change.clone().unwrap()).collect();
    assert!(
        matches!(&kinds[0], pb::identity_change::Change::UserUpserted(u) if u.user.as_ref().unwrap().status == pb::UserStatus::Suspended as i32)
    );
    assert!(matches!(&kinds[1], pb::identity_change::Change::SessionRevoked(s) if s.user_id == olga.user_id));
    assert!(seen.iter().all(|c| c.revision == seen[0].revision && c.revision > snapshot_revision));

    // Resuming from the snapshot revision replays exactly that change.
    let mut resumed = env
        .client()
        .watch(as_service(pb::WatchRequest { from_revision: snapshot_revision }))
        .await
        .unwrap()
        .into_inner();
    match resumed.next().await.unwrap().unwrap().kind.unwrap() {
        pb::watch_response::Kind::Change(c) => assert_eq!(c.revision, seen[0].revision),
        other => panic!("expected a change, got {other:?}"),
    }
    assert_err(
        env.client().watch(as_service(pb::WatchRequest { from_revision: 1_000_000 })).await.map(|_| ()),
        Code::OutOfRange,
        "REVISION_AHEAD",
    );
}
