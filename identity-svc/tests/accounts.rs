//! Accounts: create now, read, list, edit, deactivate, reactivate, delete; bad input; who may
//! do what. Runs on SQLite, or PostgreSQL with TETHER_TEST_DATABASE_URL.

// Test code: a failed set-up or assertion should panic.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use tether_proto::identity::v1 as pb;
use tonic::Code;

#[tokio::test]
async fn a_created_user_logs_in_until_deactivated_and_again_after_reactivation() {
    let env = Env::start().await;
    let owner = env.owner_token().await;
    let emma = env.create(&owner, "Emma@Client-A.example", "Emma Stone", TENANT_A, "client_admin", false).await;
    assert_eq!(emma.status, pb::UserStatus::Active as i32);
    assert_eq!(emma.primary_tenant_id, TENANT_A);
    assert_eq!(env.tenancy.membership(&emma.user_id), vec![(TENANT_A.to_owned(), "client_admin".to_owned())]);

    // Email is case-insensitive for login.
    let token = env.login("emma@client-a.example", PASSWORD).await;
    let principal = env.authenticate(&token).await.unwrap();
    assert_eq!(principal.user_id, emma.user_id);
    assert_eq!(principal.primary_tenant_id, TENANT_A);
    assert!(!principal.is_msp_staff);

    let reply = env
        .client()
        .deactivate_user(auth(
            &owner,
            pb::DeactivateUserRequest { user_id: emma.user_id.clone(), reason: "left".into() },
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(reply.user.unwrap().status, pb::UserStatus::Suspended as i32);
    // The very next call with the old token fails, and the user cannot log in again.
    assert_err(env.authenticate(&token).await, Code::Unauthenticated, "UNAUTHENTICATED");
    assert_err(env.try_login("emma@client-a.example", PASSWORD).await, Code::Unauthenticated, "LOGIN_FAILED");
    // The real reason is in the audit trail.
    let audit = env.audit().await;
    assert!(audit.iter().any(|e| e.action == "user.deactivate" && e.resource_id == emma.user_id));
    assert!(audit.iter().any(|e| e.action == "auth.login" && e.reason == "USER_SUSPENDED"));

    env.client()
        .reactivate_user(auth(&owner, pb::ReactivateUserRequest { user_id: emma.user_id.clone() }))
        .await
        .unwrap();
    env.login("emma@client-a.example", PASSWORD).await;
}

#[tokio::test]
async fn bad_input_gets_a_stable_reason_and_writes_nothing() {
    let env = Env::start().await;
    let owner = env.owner_token().await;
    env.create(&owner, "taken@client-a.example", "Taken", TENANT_A, "client_user", false).await;
    let before = env.count("SELECT COUNT(*) FROM accounts").await;
    let base = pb::CreateUserRequest {
        email: "new@client-a.example".into(),
        display_name: "New Person".into(),
        password: PASSWORD.into(),
        tenant_id: TENANT_A.into(),
        role: "client_user".into(),
        ..Default::default()
    };
    let cases: Vec<(pb::CreateUserRequest, Code, &str)> = vec![
        (
            pb::CreateUserRequest { email: "not-an-email".into(), ..base.clone() },
            Code::InvalidArgument,
            "INVALID_EMAIL",
        ),
        (
            pb::CreateUserRequest { display_name: "x".repeat(201), ..base.clone() },
            Code::InvalidArgument,
            "FIELD_TOO_LONG",
        ),
        (pb::CreateUserRequest { tenant_id: "nope".into(), ..base.clone() }, Code::InvalidArgument, "INVALID_UUID"),
        (
            pb::CreateUserRequest { password: "short".into(), ..base.clone() },
            Code::InvalidArgument,
            "PASSWORD_TOO_SHORT",
        ),
        (
            pb::CreateUserRequest { password: "password1234".into(), ..base.clone() },
            Code::InvalidArgument,
            "PASSWORD_TOO_COMMON",
        ),
        (
            pb::CreateUserRequest { password: "new-person-2026!!".into(), ..base.clone() },
            Code::InvalidArgument,
            "PASSWORD_CONTAINS_PERSONAL_INFO",
        ),
        (
            pb::CreateUserRequest { email: "TAKEN@client-a.example".into(), ..base.clone() },
            Code::AlreadyExists,
            "EMAIL_TAKEN",
        ),
        (pb::CreateUserRequest { role: "no_such_role".into(), ..base.clone() }, Code::NotFound, "ROLE_NOT_FOUND"),
    ];
    for (request, code, reason) in cases {
        assert_err(env.client().create_user(auth(&owner, request)).await, code, reason);
    }
    assert_eq!(env.count("SELECT COUNT(*) FROM accounts").await, before, "nothing half-written");

    assert_err(
        env.client().get_user(auth(&owner, pb::GetUserRequest { user_id: uuid_like() })).await,
        Code::NotFound,
        "USER_NOT_FOUND",
    );
    assert_err(
        env.client().get_user(auth(&owner, pb::GetUserRequest { user_id: "garbage".into() })).await,
        Code::InvalidArgument,
        "INVALID_UUID",
    );
    assert_err(
        env.client()
            .list_users(auth(&owner, pb::ListUsersRequest { page_token: "zz".into(), ..Default::default() }))
            .await,
        Code::InvalidArgument,
        "INVALID_PAGE_TOKEN",
    );
    // Without a session nothing is answered.
    assert_err(
        env.client().get_user(pb::GetUserRequest { user_id: env.owner_id.clone() }).await,
        Code::Unauthenticated,
        "UNAUTHENTICATED",
    );
}

fn uuid_like() -> String {
    "0190f0f0-0000-7000-8000-000000000099".into()
}

#[tokio::test]
async fn client_admins_manage_only_their_own_tenant() {
    let env = Env::start().await;
    let owner = env.owner_token().await;
    let admin = env.create(&owner, "admin@a.example", "Alice Admin", TENANT_A, "client_admin", false).await;
    env.authz.grant(&admin.user_id, TENANT_A, "client_admin");
    let bob = env.create(&owner, "bob@b.example", "Bob", TENANT_B, "client_user", false).await;
    let tech = env.create(&owner, "tech@msp.example", "Tess Tech", "", "msp_technician", true).await;
    assert!(tech.is_msp_staff);
    assert_eq!(tech.primary_tenant_id, "");
    assert_eq!(env.tenancy.membership(&tech.user_id), vec![(ADMIN_TENANCY.to_owned(), "msp_technician".to_owned())]);
    let alice = env.login("admin@a.example", PASSWORD).await;

    // Create in own tenant: fine. Another tenant, MSP staff, or a role above their own: no.
    let carol = env.create(&alice, "carol@a.example", "Carol", TENANT_A, "client_user", false).await;
    let attempt = |email: &str, tenant: &str, role: &str, staff: bool| pb::CreateUserRequest {
        email: email.into(),
        display_name: "Someone Else".into(),
        password: PASSWORD.into(),
        tenant_id: tenant.into(),
        role: role.into(),
        is_msp_staff: staff,
        ..Default::default()
    };
    // Another client is, to a client admin, as unknown as a tenant that does not exist.
    assert_err(
        env.client().create_user(auth(&alice, attempt("x@b.example", TENANT_B, "client_user", false))).await,
        Code::NotFound,
        "TENANT_NOT_FOUND",
    );
    assert_err(
        env.client().create_user(auth(&alice, attempt("x@b.example", TENANT_GONE, "client_user", false))).await,
        Code::NotFound,
        "TENANT_NOT_FOUND",
    );
    assert_err(
        env.client().create_user(auth(&alice, attempt("x@msp.example", "", "msp_admin", true))).await,
        Code::PermissionDenied,
        "MSP_STAFF_REQUIRED",
    );
    assert_err(
        env.client().create_user(auth(&alice, attempt("x@a.example", TENANT_A, "msp_admin", false))).await,
        Code::PermissionDenied,
        "ROLE_ABOVE_OWN",
    );
    assert_err(
        env.client().create_user(auth(&alice, attempt("x@a.example", TENANT_A, "msp_owner", false))).await,
        Code::PermissionDenied,
        "OWNER_ROLE_NOT_ASSIGNABLE",
    );

    // MSP users are invisible to them; other tenants' users too.
    for hidden in [&env.owner_id, &tech.user_id, &bob.user_id] {
        assert_err(
            env.client().get_user(auth(&alice, pb::GetUserRequest { user_id: hidden.clone() })).await,
            Code::NotFound,
            "USER_NOT_FOUND",
        );
    }
    let listed = env.client().list_users(auth(&alice, pb::ListUsersRequest::default())).await.unwrap().into_inner();
    let mut names: Vec<_> = listed.users.iter().map(|u| u.display_name.clone()).collect();
    names.sort();
    assert_eq!(names, vec!["Alice Admin", "Carol"]);
    let batch = env
        .client()
        .batch_get_users(auth(
            &alice,
            pb::BatchGetUsersRequest {
                user_ids: vec![carol.user_id.clone(), env.owner_id.clone(), bob.user_id.clone()],
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(batch.users.iter().map(|u| u.user_id.clone()).collect::<Vec<_>>(), vec![carol.user_id.clone()]);
    assert_err(
        env.client()
            .deactivate_user(auth(
                &alice,
                pb::DeactivateUserRequest { user_id: tech.user_id.clone(), ..Default::default() },
            ))
            .await,
        Code::NotFound,
        "USER_NOT_FOUND",
    );

    // A plain user may edit their own name but not their email, and may not manage others.
    let carol_token = env.login("carol@a.example", PASSWORD).await;
    let renamed = env
        .client()
        .update_user(auth(
            &carol_token,
            pb::UpdateUserRequest {
                user_id: carol.user_id.clone(),
                display_name: Some("Carol C".into()),
                ..Default::default()
            },
        ))
        .await
        .unwrap()
        .into_inner()
        .user
        .unwrap();
    assert_eq!(renamed.display_name, "Carol C");
    assert_err(
        env.client()
            .update_user(auth(
                &carol_token,
                pb::UpdateUserRequest {
                    user_id: carol.user_id.clone(),
                    email: Some("c2@a.example".into()),
                    ..Default::default()
                },
            ))
            .await,
        Code::NotFound,
        "USER_NOT_FOUND",
    );
    // Nobody deactivates themself, and the owner cannot be removed.
    assert_err(
        env.client()
            .deactivate_user(auth(
                &alice,
                pb::DeactivateUserRequest { user_id: admin.user_id.clone(), ..Default::default() },
            ))
            .await,
        Code::FailedPrecondition,
        "SELF_ACTION_FORBIDDEN",
    );
    let msp_admin = env.create(&owner, "root@msp.example", "Root Admin", "", "msp_admin", true).await;
    env.authz.grant(&msp_admin.user_id, "*", "msp_admin");
    let root = env.login("root@msp.example", PASSWORD).await;
    assert_err(
        env.client().delete_user(auth(&root, pb::DeleteUserRequest { user_id: env.owner_id.clone() })).await,
        Code::FailedPrecondition,
        "OWNER_NOT_REMOVABLE",
    );
}

#[tokio::test]
async fn lists_filter_sort_and_page() {
    let env = Env::start().await;
    let owner = env.owner_token().await;
    for (i, name) in ["Delta", "alpha", "Charlie", "bravo", "Echo"].iter().enumerate() {
        let tenant = if i % 2 == 0 { TENANT_A } else { TENANT_B };
        env.create(&owner, &format!("{}@x.example", name.to_lowercase()), name, tenant, "client_user", false).await;
    }
    let list = |req: pb::ListUsersRequest| {
        let mut client = env.client();
        let owner = owner.clone();
        async move { client.list_users(auth(&owner, req)).await.unwrap().into_inner() }
    };
    let names = |r: &pb::ListUsersResponse| r.users.iter().map(|u| u.display_name.clone()).collect::<Vec<_>>();

    let page1 = list(pb::ListUsersRequest { page_size: 2, is_msp_staff: Some(false), ..Default::default() }).await;
    assert_eq!(names(&page1), vec!["alpha", "bravo"]);
    let page2 = list(pb::ListUsersRequest {
        page_size: 2,
        is_msp_staff: Some(false),
        page_token: page1.next_page_token.clone(),
        ..Default::default()
    })
    .await;
    assert_eq!(names(&page2), vec!["Charlie", "Delta"]);
    // Pages are cursors, not offsets: a user added before the cursor does not push Delta onto
    // the next page again.
    env.create(&owner, "aaron@x.example", "Aaron", TENANT_A, "client_user", false).await;
    let page3 = list(pb::ListUsersRequest {
        page_size: 2,
        is_msp_staff: Some(false),
        page_token: page2.next_page_token.clone(),
        ..Default::default()
    })
    .await;
    assert_eq!(names(&page3), vec!["Echo"]);
    assert!(page3.next_page_token.is_empty());

    let a = list(pb::ListUsersRequest {
        tenant_id: TENANT_A.into(),
        sort: pb::UserSort::NameDesc as i32,
        ..Default::default()
    })
    .await;
    assert_eq!(names(&a), vec!["Echo", "Delta", "Charlie", "Aaron"]);
    let q = list(pb::ListUsersRequest { query: "RAV".into(), ..Default::default() }).await;
    assert_eq!(names(&q), vec!["bravo"]);
    // Case-insensitive beyond ASCII, the same on every backend.
    env.create(&owner, "emile@x.example", "ÉMILE Ørsted", TENANT_B, "client_user", false).await;
    let accented = list(pb::ListUsersRequest { query: "émile ø".into(), ..Default::default() }).await;
    assert_eq!(names(&accented), vec!["ÉMILE Ørsted"]);
    // A token made for another order, or garbled, is refused.
    let by_name = list(pb::ListUsersRequest { page_size: 1, ..Default::default() }).await;
    let other_order = env
        .client()
        .list_users(auth(
            &owner,
            pb::ListUsersRequest {
                page_token: by_name.next_page_token,
                sort: pb::UserSort::CreatedDesc as i32,
                ..Default::default()
            },
        ))
        .await;
    assert_err(other_order, Code::InvalidArgument, "INVALID_PAGE_TOKEN");
    let by_email = list(pb::ListUsersRequest { query: "echo@x".into(), ..Default::default() }).await;
    assert_eq!(names(&by_email), vec!["Echo"]);

    env.login("charlie@x.example", PASSWORD).await;
    let recent = list(pb::ListUsersRequest {
        sort: pb::UserSort::LastLoginDesc as i32,
        is_msp_staff: Some(false),
        ..Default::default()
    })
    .await;
    assert_eq!(names(&recent)[0], "Charlie");
    let none_2fa = list(pb::ListUsersRequest { two_factor_enabled: Some(true), ..Default::default() }).await;
    assert!(none_2fa.users.is_empty());
}

/// A page token belongs to the request it was issued for: reused with another filter it is
/// INVALID_PAGE_TOKEN rather than a page of some other list, and paging through with the same
/// filters returns every user exactly once.
#[tokio::test]
async fn a_page_token_works_only_with_the_filters_it_was_issued_for() {
    let env = Env::start().await;
    let owner = env.owner_token().await;
    let mut created = Vec::new();
    for i in 0..7 {
        let tenant = if i % 2 == 0 { TENANT_A } else { TENANT_B };
        let user = env
            .create(&owner, &format!("pager{i}@x.example"), &format!("Pager {i}"), tenant, "client_user", false)
            .await;
        created.push(user.user_id);
    }
    let request = pb::ListUsersRequest { page_size: 3, is_msp_staff: Some(false), ..Default::default() };
    let first = env.client().list_users(auth(&owner, request.clone())).await.unwrap().into_inner();
    assert_eq!(first.users.len(), 3);
    assert!(!first.next_page_token.is_empty());

    let reused = [
        pb::ListUsersRequest { tenant_id: TENANT_A.into(), ..request.clone() },
        pb::ListUsersRequest { query: "pager".into(), ..request.clone() },
        pb::ListUsersRequest { is_msp_staff: None, ..request.clone() },
        pb::ListUsersRequest { status: pb::UserStatus::Active as i32, ..request.clone() },
    ];
    for other in reused {
        let other = pb::ListUsersRequest { page_token: first.next_page_token.clone(), ..other };
        let answer = env.client().list_users(auth(&owner, other)).await;
        assert_err(answer, Code::InvalidArgument, "INVALID_PAGE_TOKEN");
    }

    let mut seen: Vec<String> = first.users.iter().map(|u| u.user_id.clone()).collect();
    let mut token = first.next_page_token;
    while !token.is_empty() {
        // The page size is not a filter: it may change from page to page.
        let next = pb::ListUsersRequest { page_size: 2, page_token: token, ..request.clone() };
        let page = env.client().list_users(auth(&owner, next)).await.unwrap().into_inner();
        seen.extend(page.users.iter().map(|u| u.user_id.clone()));
        token = page.next_page_token;
    }
    let mut unique = seen.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), seen.len(), "no user twice: {seen:?}");
    created.sort();
    assert_eq!(unique, created, "every user once");
}

#[tokio::test]
async fn deletion_leaves_a_tombstone_ends_sessions_and_frees_the_email() {
    let env = Env::start().await;
    let owner = env.owner_token().await;
    let dan = env.create(&owner, "dan@a.example", "Dan Doe", TENANT_A, "client_user", false).await;
    let token = env.login("dan@a.example", PASSWORD).await;
    env.authenticate(&token).await.unwrap();
    // A second-factor secret and an open reset link, both to go with the account.
    env.client().begin_totp_enrollment(auth(&token, pb::BeginTotpEnrollmentRequest::default())).await.unwrap();
    env.client()
        .send_password_reset(auth(&owner, pb::SendPasswordResetRequest { user_id: dan.user_id.clone() }))
        .await
        .unwrap();

    let tomb = env
        .client()
        .delete_user(auth(&owner, pb::DeleteUserRequest { user_id: dan.user_id.clone() }))
        .await
        .unwrap()
        .into_inner()
        .user
        .unwrap();
    assert!(tomb.deleted);
    assert_eq!((tomb.display_name.as_str(), tomb.email.as_str()), ("Dan Doe", ""));
    assert_err(env.authenticate(&token).await, Code::Unauthenticated, "UNAUTHENTICATED");
    assert_err(env.try_login("dan@a.example", PASSWORD).await, Code::Unauthenticated, "LOGIN_FAILED");
    // The tombstone is still readable, credentials are gone, tenancy drops the membership.
    let got = env.client().get_user(auth(&owner, pb::GetUserRequest { user_id: dan.user_id.clone() })).await.unwrap();
    assert!(got.into_inner().user.unwrap().deleted);
    assert_eq!(
        env.count(&format!("SELECT COUNT(*) FROM accounts WHERE id = '{}' AND password_hash IS NULL", dan.user_id))
            .await,
        1
    );
    let leftovers = format!(
        "SELECT (SELECT COUNT(*) FROM totp WHERE account_id = '{0}') \
         + (SELECT COUNT(*) FROM password_resets WHERE account_id = '{0}' AND voided = 0)",
        dan.user_id
    );
    assert_eq!(env.count(&leftovers).await, 0, "second factor and reset links purged");
    for _ in 0..100 {
        if env.tenancy.membership(&dan.user_id).is_empty() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert!(env.tenancy.membership(&dan.user_id).is_empty());
    // The email can be used again, by a new account.
    let again = env.create(&owner, "dan@a.example", "Dan Again", TENANT_A, "client_user", false).await;
    assert_ne!(again.user_id, dan.user_id);
    assert!(env.audit().await.iter().any(|e| e.action == "user.delete" && e.after_json.is_empty()));
}

#[tokio::test]
async fn the_owner_named_by_tenancy_cannot_be_removed_and_a_former_owner_can() {
    use std::sync::atomic::Ordering;
    let env = Env::start().await;
    let owner = env.owner_token().await;
    let sam = env.create(&owner, "sam@msp.example", "Sam", "", "msp_admin", true).await;
    let tim = env.create(&owner, "tim@msp.example", "Tim", "", "msp_admin", true).await;
    let uma = env.create(&owner, "uma@msp.example", "Uma", "", "msp_admin", true).await;
    let ann = env.create(&owner, "ann@a.example", "Ann", TENANT_A, "client_user", false).await;
    env.authz.grant(&sam.user_id, "*", "msp_admin");
    let sam_token = env.login("sam@msp.example", PASSWORD).await;
    let deactivate = |id: &str| pb::DeactivateUserRequest { user_id: id.into(), ..Default::default() };

    // The bootstrap owner owns the MSP in tenancy: not removable.
    assert_eq!(env.tenancy.owner.lock().unwrap().clone(), Some(env.owner_id.clone()));
    assert_err(
        env.client().deactivate_user(auth(&sam_token, deactivate(&env.owner_id))).await,
        Code::FailedPrecondition,
        "OWNER_NOT_REMOVABLE",
    );

    // Ownership moves to Tim (TransferOwnership in tenancy-svc).
    env.tenancy.set_owner(&tim.user_id);
    assert_err(
        env.client().deactivate_user(auth(&owner, deactivate(&tim.user_id))).await,
        Code::FailedPrecondition,
        "OWNER_NOT_REMOVABLE",
    );
    assert_err(
        env.client().delete_user(auth(&owner, pb::DeleteUserRequest { user_id: tim.user_id.clone() })).await,
        Code::FailedPrecondition,
        "OWNER_NOT_REMOVABLE",
    );
    env.login("tim@msp.example", PASSWORD).await;

    // Tenancy unreachable: staff removals fail closed; client users need no answer from it.
    env.tenancy.failing.store(true, Ordering::SeqCst);
    assert_err(
        env.client().deactivate_user(auth(&sam_token, deactivate(&uma.user_id))).await,
        Code::Unavailable,
        "UNAVAILABLE",
    );
    env.login("uma@msp.example", PASSWORD).await;
    env.client().deactivate_user(auth(&sam_token, deactivate(&ann.user_id))).await.unwrap();
    env.tenancy.failing.store(false, Ordering::SeqCst);

    // The former owner is an ordinary administrator now: deactivated, then deleted.
    env.client().deactivate_user(auth(&sam_token, deactivate(&env.owner_id))).await.unwrap();
    assert_err(env.authenticate(&owner).await, Code::Unauthenticated, "UNAUTHENTICATED");
    env.client().delete_user(auth(&sam_token, pb::DeleteUserRequest { user_id: env.owner_id.clone() })).await.unwrap();
}

/// Deleting a tenant's last administrator would leave the client unmanageable: refused with
/// LAST_ADMIN (authz-svc's rule, asked for each role the user holds), while deactivating them,
/// the emergency stop, still works at once.
#[tokio::test]
async fn the_last_admin_of_a_tenant_cannot_be_deleted() {
    let env = Env::start().await;
    let owner = env.owner_token().await;
    let bea = env.create(&owner, "bea@b.example", "Bea", TENANT_B, "client_admin", false).await;
    env.authz.grant(&bea.user_id, TENANT_B, "client_admin");
    let delete = |id: &str| {
        let mut c = env.client();
        let request = auth(&owner, pb::DeleteUserRequest { user_id: id.to_owned() });
        async move { c.delete_user(request).await }
    };
    assert_err(delete(&bea.user_id).await, Code::FailedPrecondition, "LAST_ADMIN");
    assert!(!env.tenancy.membership(&bea.user_id).is_empty());
    env.login("bea@b.example", PASSWORD).await;
    env.client()
        .deactivate_user(auth(
            &owner,
            pb::DeactivateUserRequest { user_id: bea.user_id.clone(), reason: "left".into() },
        ))
        .await
        .unwrap();

    // With a second administrator appointed, the first can go.
    let cy = env.create(&owner, "cy@b.example", "Cy", TENANT_B, "client_admin", false).await;
    env.authz.grant(&cy.user_id, TENANT_B, "client_admin");
    delete(&bea.user_id).await.unwrap();
}

#[tokio::test]
async fn a_user_created_to_change_their_password_gets_a_change_step_before_a_session() {
    let env = Env::start().await;
    let owner = env.owner_token().await;
    let ned = env
        .client()
        .create_user(auth(
            &owner,
            pb::CreateUserRequest {
                email: "ned@a.example".into(),
                display_name: "Ned".into(),
                password: PASSWORD.into(),
                tenant_id: TENANT_A.into(),
                role: "client_user".into(),
                must_change_password: true,
                ..Default::default()
            },
        ))
        .await
        .unwrap()
        .into_inner()
        .user
        .unwrap();
    assert_eq!(ned.status, pb::UserStatus::Active as i32);
    assert!(ned.must_change_password);

    // First login: a password-change step, not a session.
    let step = match env.try_login("ned@a.example", PASSWORD).await.unwrap() {
        pb::login_outcome::Outcome::PasswordChangeRequired(step) => step,
        other => panic!("expected a password change step, got {other:?}"),
    };
    assert_eq!(step.password_policy.unwrap().min_length, 12);
    assert_err(env.authenticate(&step.password_change_token).await, Code::Unauthenticated, "UNAUTHENTICATED");
    let sessions = format!("SELECT COUNT(*) FROM sessions WHERE account_id = '{}'", ned.user_id);
    assert_eq!(env.count(&sessions).await, 0, "no session before the change");

    // Completing it gives a session.
    let done = env
        .client()
        .complete_password_change(pb::CompletePasswordChangeRequest {
            password_change_token: step.password_change_token.clone(),
            new_password: "copper-lantern-meadow-58".into(),
        })
        .await
        .unwrap()
        .into_inner();
    let session = match done.outcome.unwrap().outcome.unwrap() {
        pb::login_outcome::Outcome::Session(s) => s.session_token,
        other => panic!("expected a session, got {other:?}"),
    };
    assert_eq!(env.authenticate(&session).await.unwrap().user_id, ned.user_id);
    let user = env
        .client()
        .get_user(auth(&owner, pb::GetUserRequest { user_id: ned.user_id.clone() }))
        .await
        .unwrap()
        .into_inner()
        .user
        .unwrap();
    assert!(!user.must_change_password);

    // The administrator's password is spent; the chosen one logs in directly.
    assert_err(env.try_login("ned@a.example", PASSWORD).await, Code::Unauthenticated, "LOGIN_FAILED");
    env.login("ned@a.example", "copper-lantern-meadow-58").await;
}

#[tokio::test]
async fn deleted_users_are_listed_as_tombstones_only_when_asked() {
    let env = Env::start().await;
    let owner = env.owner_token().await;
    env.create(&owner, "kit@a.example", "Kit Keep", TENANT_A, "client_user", false).await;
    let gus = env.create(&owner, "gus@a.example", "Gus Gone", TENANT_A, "client_user", false).await;
    env.client().delete_user(auth(&owner, pb::DeleteUserRequest { user_id: gus.user_id.clone() })).await.unwrap();

    let list = |include_deleted: bool, query: &str| {
        let mut client = env.client();
        let request = auth(
            &owner,
            pb::ListUsersRequest {
                is_msp_staff: Some(false),
                query: query.into(),
                include_deleted,
                ..Default::default()
            },
        );
        async move { client.list_users(request).await.unwrap().into_inner().users }
    };
    let names = |users: &[pb::User]| users.iter().map(|u| u.display_name.clone()).collect::<Vec<_>>();

    assert_eq!(names(&list(false, "").await), vec!["Kit Keep"]);
    assert!(list(false, "gone").await.is_empty());

    let all = list(true, "").await;
    assert_eq!(names(&all), vec!["Gus Gone", "Kit Keep"]);
    let tomb = &all[0];
    assert_eq!(tomb.user_id, gus.user_id);
    assert!(tomb.deleted && tomb.deleted_at.is_some());
    assert_eq!(tomb.email, "", "the email is purged from the tombstone");
    assert!(!all[1].deleted && all[1].deleted_at.is_none());
    // The tombstone's name is still searchable, for the history it appears in.
    assert_eq!(names(&list(true, "gone").await), vec!["Gus Gone"]);
}

/// An edit records who did what to which user, from where, and the change itself, with no
/// secret in any audit event (hashes or plaintext passwords).
#[tokio::test]
async fn audit_events_carry_actor_resource_address_and_change_without_secrets() {
    let env = Env::start().await;
    let owner = env.owner_token().await;
    let pia = env.create(&owner, "pia@a.example", "Pia Old", TENANT_A, "client_user", false).await;
    let update = |name: &str| pb::UpdateUserRequest {
        user_id: pia.user_id.clone(),
        display_name: Some(name.into()),
        ..Default::default()
    };

    // The owner, with their session. A bearer caller cannot name its own address: the one
    // claimed in x-client-ip is ignored for the connection's.
    let mut request = auth(&owner, update("Pia New"));
    request.metadata_mut().insert("x-client-ip", "203.0.113.66".parse().unwrap());
    env.client().update_user(request).await.unwrap();
    // The edge on its own account (service token only): its address is believed.
    let mut request = from_edge(update("Pia Newer"));
    request.metadata_mut().insert("x-client-ip", "192.0.2.10".parse().unwrap());
    env.client().update_user(request).await.unwrap();
    // The edge forwarding the owner's call (service token and the owner's session): the owner
    // acts, from the address the edge names.
    let mut request = from_edge(update("Pia Newest"));
    request.metadata_mut().insert("authorization", format!("Bearer {owner}").parse().unwrap());
    request.metadata_mut().insert("x-client-ip", "198.51.100.23".parse().unwrap());
    env.client().update_user(request).await.unwrap();

    // Password-bearing writes, whose events must not carry the password either way.
    let pia_session = env.login("pia@a.example", PASSWORD).await;
    env.client()
        .change_password(auth(
            &pia_session,
            pb::ChangePasswordRequest {
                current_password: PASSWORD.into(),
                new_password: "copper-lantern-meadow-58".into(),
                end_other_sessions: false,
            },
        ))
        .await
        .unwrap();
    env.client()
        .set_temporary_password(auth(
            &owner,
            pb::SetTemporaryPasswordRequest {
                user_id: pia.user_id.clone(),
                temporary_password: "temporary-secret-41".into(),
            },
        ))
        .await
        .unwrap();

    let audit = env.audit().await;
    let updates: Vec<_> = audit.iter().filter(|e| e.action == "user.update").collect();
    assert_eq!(updates.len(), 3, "{updates:?}");
    let json = |s: &str| serde_json::from_str::<serde_json::Value>(s).unwrap();

    let by_owner = updates[0];
    let actor = by_owner.actor.as_ref().unwrap();
    assert_eq!(actor.kind, tether_proto::common::v1::ActorKind::User as i32);
    assert_eq!((actor.user_id.as_str(), actor.email.as_str()), (env.owner_id.as_str(), OWNER_EMAIL));
    assert!(!actor.session_id.is_empty(), "the session it was done with");
    assert_eq!((by_owner.resource_type.as_str(), by_owner.resource_id.as_str()), ("user", pia.user_id.as_str()));
    assert_eq!(by_owner.tenant_id, TENANT_A);
    assert_eq!(by_owner.client_ip, "127.0.0.1");
    assert_eq!(json(&by_owner.before_json)["display_name"], "Pia Old");
    assert_eq!(json(&by_owner.after_json)["display_name"], "Pia New");
    assert_eq!(json(&by_owner.after_json)["email"], "pia@a.example");

    let by_edge = updates[1];
    let actor = by_edge.actor.as_ref().unwrap();
    assert_eq!((actor.kind, actor.system_name.as_str()), (tether_proto::common::v1::ActorKind::System as i32, "edge"));
    assert_eq!(by_edge.client_ip, "192.0.2.10");
    assert_eq!(json(&by_edge.before_json)["display_name"], "Pia New");
    assert_eq!(json(&by_edge.after_json)["display_name"], "Pia Newer");

    let forwarded = updates[2];
    let actor = forwarded.actor.as_ref().unwrap();
    assert_eq!(
        (actor.kind, actor.user_id.as_str()),
        (tether_proto::common::v1::ActorKind::User as i32, env.owner_id.as_str())
    );
    assert_eq!(forwarded.client_ip, "198.51.100.23");

    for action in ["user.create", "user.update", "user.password_change", "user.password_reset"] {
        assert!(audit.iter().any(|e| e.action == action), "no {action} event: {:?}", audit.iter().map(|e| &e.action));
    }
    for event in &audit {
        for text in [&event.before_json, &event.after_json, &event.metadata_json] {
            for secret in
                ["$argon2", "argon2id", PASSWORD, OWNER_PASSWORD, "copper-lantern-meadow-58", "temporary-secret-41"]
            {
                assert!(!text.contains(secret), "{} event carries {secret}: {text}", event.action);
            }
            let lower = text.to_lowercase();
            assert!(!lower.contains("password_hash") && !lower.contains("\"password\""), "{}: {text}", event.action);
        }
    }
}

/// A retried CreateUser answers with the account the first call made, but only to a caller who
/// may see it: someone else's request_id reveals nothing. One account per request_id, even
/// written directly.
#[tokio::test]
async fn a_retried_create_returns_the_user_only_to_callers_who_may_see_it() {
    const RID: &str = "00000000-0000-4000-8000-000000000123";
    let env = Env::start().await;
    let owner = env.owner_token().await;
    let bea = env.create(&owner, "bea@b.example", "Bea", TENANT_B, "client_admin", false).await;
    env.authz.grant(&bea.user_id, TENANT_B, "client_admin");
    let bea_session = env.login("bea@b.example", PASSWORD).await;
    let request = |email: &str, tenant: &str| pb::CreateUserRequest {
        email: email.into(),
        display_name: "Ned".into(),
        password: PASSWORD.into(),
        tenant_id: tenant.into(),
        role: "client_user".into(),
        request_id: RID.into(),
        ..Default::default()
    };
    let first = env.client().create_user(auth(&owner, request("ned@a.example", TENANT_A))).await.unwrap().into_inner();
    let again = env.client().create_user(auth(&owner, request("ned@a.example", TENANT_A))).await.unwrap().into_inner();
    assert_eq!(again.user.unwrap().user_id, first.user.clone().unwrap().user_id);

    // Bea manages B only: the same request_id gets her neither A's user nor a new one.
    assert_err(
        env.client().create_user(auth(&bea_session, request("ned@a.example", TENANT_A))).await,
        Code::NotFound,
        "TENANT_NOT_FOUND",
    );
    let status =
        env.client().create_user(auth(&bea_session, request("new@b.example", TENANT_B))).await.expect_err("reused id");
    assert_eq!(status.code(), Code::AlreadyExists, "{status:?}");
    assert_eq!(tether_runtime::error::reason_of(&status).as_deref(), Some("REQUEST_ID_REUSED"));
    assert!(!status.message().contains("ned"), "{status:?}");
    assert_eq!(env.count("SELECT COUNT(*) FROM accounts WHERE email = 'new@b.example'").await, 0);
    assert_eq!(env.count(&format!("SELECT COUNT(*) FROM accounts WHERE request_id = '{RID}'")).await, 1);

    let pool = env.db.inspect("identity").await;
    let sql = format!("UPDATE accounts SET request_id = '{RID}' WHERE id = '{}'", bea.user_id);
    assert!(sqlx::query(sqlx::AssertSqlSafe(sql)).execute(&pool).await.is_err(), "request_id is unique");
    pool.close().await;
}

#[tokio::test]
async fn the_audit_events_of_a_write_are_delivered_to_audit_svc() {
    let env = Env::start().await;
    let owner = env.owner_token().await;
    env.create(&owner, "gus@client-a.example", "Gus Grant", TENANT_A, "client_user", false).await;
    let pool = env.db.inspect("identity").await;
    // Every event in the outbox (the creation's among them) reaches audit-svc and is marked so.
    tether_tests::wait_audit_delivered(&pool).await;
    assert!(env.audit().await.iter().any(|e| e.action == "user.create"));
}
