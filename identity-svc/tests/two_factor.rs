//! TOTP 2FA: enrollment, login challenge, recovery codes, disable, admin reset, policy.

// Test code: a failed set-up or assertion should panic.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use tether_proto::identity::v1 as pb;
use tonic::Code;

/// A department of tenant A (the tenancy double learns its parent per test).
const DEPT_A1: &str = "00000000-0000-7000-8000-0000000000a1";

/// Sets a 2FA policy as `token`'s holder, expecting success.
async fn set_policy(env: &Env, token: &str, policy: pb::TwoFactorPolicy) {
    env.client()
        .set_two_factor_policy(auth(token, pb::SetTwoFactorPolicyRequest { policy: Some(policy) }))
        .await
        .unwrap();
}

#[tokio::test]
async fn totp_is_enabled_by_a_valid_code_and_then_asked_at_login() {
    let env = Env::start().await;
    let owner = env.owner_token().await;
    let vic = env.create(&owner, "vic@a.example", "Vic", TENANT_A, "client_user", false).await;
    let session = env.login("vic@a.example", PASSWORD).await;
    let begun = env
        .client()
        .begin_totp_enrollment(auth(&session, pb::BeginTotpEnrollmentRequest::default()))
        .await
        .unwrap()
        .into_inner();
    assert!(begun.otpauth_uri.starts_with("otpauth://totp/Tether:vic%40a.example?secret="), "{}", begun.otpauth_uri);
    assert!(begun.qr_code_svg.contains("<svg"), "the enrolment carries the QR code as SVG");
    // Taken together, so a step boundary during the test cannot shift them.
    let (previous, current) = (totp_code(&begun.secret, -1), totp_code(&begun.secret, 0));
    let confirm = |c: String| pb::ConfirmTotpEnrollmentRequest { enrollment_token: String::new(), totp_code: c };
    assert_err(
        env.client().confirm_totp_enrollment(auth(&session, confirm("000000".into()))).await,
        Code::InvalidArgument,
        "INVALID_TOTP_CODE",
    );
    // Not on until confirmed: login still gives a session directly.
    env.login("vic@a.example", PASSWORD).await;
    let confirmed =
        env.client().confirm_totp_enrollment(auth(&session, confirm(previous.clone()))).await.unwrap().into_inner();
    assert_eq!(confirmed.recovery_codes.len(), 10);
    let user = env
        .client()
        .get_user(auth(&owner, pb::GetUserRequest { user_id: vic.user_id.clone() }))
        .await
        .unwrap()
        .into_inner()
        .user
        .unwrap();
    assert!(user.two_factor_enabled);
    // Only hashes of the recovery codes are stored.
    let stored = env
        .count(&format!("SELECT COUNT(*) FROM recovery_codes WHERE code_hash = '{}'", confirmed.recovery_codes[0]))
        .await;
    assert_eq!(stored, 0);

    // Login now asks for the second factor.
    let challenge = match env.try_login("vic@a.example", PASSWORD).await.unwrap() {
        pb::login_outcome::Outcome::SecondFactorRequired(c) => c.challenge_token,
        other => panic!("expected a challenge, got {other:?}"),
    };
    let complete = |code: pb::complete_second_factor_request::Code| pb::CompleteSecondFactorRequest {
        challenge_token: challenge.clone(),
        code: Some(code),
    };
    assert_err(
        env.client()
            .complete_second_factor(complete(pb::complete_second_factor_request::Code::TotpCode("123456".into())))
            .await,
        Code::Unauthenticated,
        "LOGIN_FAILED",
    );
    assert!(env.audit().await.iter().any(|e| e.reason == "SECOND_FACTOR_INVALID"));
    // The code used to confirm cannot be replayed; the next one works.
    assert_err(
        env.client()
            .complete_second_factor(complete(pb::complete_second_factor_request::Code::TotpCode(previous.clone())))
            .await,
        Code::Unauthenticated,
        "LOGIN_FAILED",
    );
    let done = env
        .client()
        .complete_second_factor(complete(pb::complete_second_factor_request::Code::TotpCode(current.clone())))
        .await
        .unwrap()
        .into_inner();
    match done.outcome.unwrap().outcome.unwrap() {
        pb::login_outcome::Outcome::Session(s) => assert!(s.session.unwrap().second_factor_verified),
        other => panic!("expected a session, got {other:?}"),
    }

    // A recovery code up front logs in once.
    let with_recovery = |c: &str| pb::LoginRequest {
        email: "vic@a.example".into(),
        password: PASSWORD.into(),
        second_factor: Some(pb::login_request::SecondFactor::RecoveryCode(c.to_uppercase())),
        ..Default::default()
    };
    let outcome = env.client().login(with_recovery(&confirmed.recovery_codes[0])).await.unwrap().into_inner();
    assert!(matches!(outcome.outcome.unwrap().outcome, Some(pb::login_outcome::Outcome::Session(_))));
    assert_err(
        env.client().login(with_recovery(&confirmed.recovery_codes[0])).await,
        Code::Unauthenticated,
        "LOGIN_FAILED",
    );

    // Disable with a recovery code; login is back to password only.
    assert_err(
        env.client()
            .disable_totp(auth(
                &session,
                pb::DisableTotpRequest { code: Some(pb::disable_totp_request::Code::RecoveryCode("nope-nope".into())) },
            ))
            .await,
        Code::InvalidArgument,
        "INVALID_RECOVERY_CODE",
    );
    env.client()
        .disable_totp(auth(
            &session,
            pb::DisableTotpRequest {
                code: Some(pb::disable_totp_request::Code::RecoveryCode(confirmed.recovery_codes[1].clone())),
            },
        ))
        .await
        .unwrap();
    env.login("vic@a.example", PASSWORD).await;
    assert_err(
        env.client()
            .disable_totp(auth(
                &session,
                pb::DisableTotpRequest { code: Some(pb::disable_totp_request::Code::TotpCode("123456".into())) },
            ))
            .await,
        Code::FailedPrecondition,
        "TOTP_NOT_ENABLED",
    );
}

#[tokio::test]
async fn a_policy_requiring_2fa_turns_login_into_enrollment_and_admins_can_reset_it() {
    let env = Env::start().await;
    let owner = env.owner_token().await;
    let wes = env.create(&owner, "wes@a.example", "Wes", TENANT_A, "client_user", false).await;
    let policy = pb::TwoFactorPolicy { tenant_id: TENANT_A.into(), require_all: true, ..Default::default() };
    let wes_session = env.login("wes@a.example", PASSWORD).await;
    assert_err(
        env.client()
            .set_two_factor_policy(auth(&wes_session, pb::SetTwoFactorPolicyRequest { policy: Some(policy.clone()) }))
            .await,
        Code::PermissionDenied,
        "PERMISSION_DENIED",
    );
    set_policy(&env, &owner, policy).await;
    let got = env
        .client()
        .get_two_factor_policy(auth(&owner, pb::GetTwoFactorPolicyRequest { tenant_id: TENANT_A.into() }))
        .await
        .unwrap();
    assert!(got.into_inner().policy.unwrap().require_all);

    // No session for Wes until he enrolls.
    let token = match env.try_login("wes@a.example", PASSWORD).await.unwrap() {
        pb::login_outcome::Outcome::EnrollmentRequired(e) => e.enrollment_token,
        other => panic!("expected enrollment, got {other:?}"),
    };
    let begun = env
        .client()
        .begin_totp_enrollment(pb::BeginTotpEnrollmentRequest { enrollment_token: token.clone() })
        .await
        .unwrap()
        .into_inner();
    let confirmed = env
        .client()
        .confirm_totp_enrollment(pb::ConfirmTotpEnrollmentRequest {
            enrollment_token: token.clone(),
            totp_code: totp_code(&begun.secret, 0),
        })
        .await
        .unwrap()
        .into_inner();
    let session = match confirmed.outcome.unwrap().outcome.unwrap() {
        pb::login_outcome::Outcome::Session(s) => s.session_token,
        other => panic!("expected a session, got {other:?}"),
    };
    assert!(env.authenticate(&session).await.unwrap().two_factor_enabled);
    // Policy forbids turning it off.
    assert_err(
        env.client()
            .disable_totp(auth(
                &session,
                pb::DisableTotpRequest {
                    code: Some(pb::disable_totp_request::Code::RecoveryCode(confirmed.recovery_codes[0].clone())),
                },
            ))
            .await,
        Code::FailedPrecondition,
        "SECOND_FACTOR_ENROLLMENT_REQUIRED",
    );

    // Lost phone: the admin resets 2FA; sessions end and enrollment is asked again.
    let reset = env
        .client()
        .reset_totp(auth(&owner, pb::ResetTotpRequest { user_id: wes.user_id.clone() }))
        .await
        .unwrap()
        .into_inner();
    assert!(!reset.user.unwrap().two_factor_enabled);
    assert_err(env.authenticate(&session).await, Code::Unauthenticated, "UNAUTHENTICATED");
    assert!(matches!(
        env.try_login("wes@a.example", PASSWORD).await.unwrap(),
        pb::login_outcome::Outcome::EnrollmentRequired(_)
    ));
}

#[tokio::test]
async fn a_role_policy_asks_enrollment_of_holders_of_the_role_and_fails_closed_without_tenancy() {
    use std::sync::atomic::Ordering;
    let env = Env::start().await;
    let owner = env.owner_token().await;
    env.tenancy.parents.lock().unwrap().insert(DEPT_A1.into(), TENANT_A.into());
    env.create(&owner, "ann@a.example", "Ann", TENANT_A, "client_admin", false).await;
    env.create(&owner, "bob@a.example", "Bob", TENANT_A, "client_user", false).await;
    env.create(&owner, "cat@b.example", "Cat", TENANT_B, "client_admin", false).await;
    let dan = env.create(&owner, "dan@b.example", "Dan", TENANT_B, "client_user", false).await;
    // Dan is also an admin of a department of A (a second membership, in tenancy only).
    env.tenancy.add_role(&dan.user_id, DEPT_A1, "client_admin");

    // No role policy yet: logins never wait on tenancy, even when it is down.
    env.tenancy.failing.store(true, Ordering::SeqCst);
    env.login("bob@a.example", PASSWORD).await;
    env.tenancy.failing.store(false, Ordering::SeqCst);

    let policy = pb::TwoFactorPolicy {
        tenant_id: TENANT_A.into(),
        required_roles: vec!["client_admin".into()],
        ..Default::default()
    };
    set_policy(&env, &owner, policy).await;

    let enrollment = |o: pb::login_outcome::Outcome| matches!(o, pb::login_outcome::Outcome::EnrollmentRequired(_));
    // An admin of A, and an admin of a department of A: enrollment, no session.
    assert!(enrollment(env.try_login("ann@a.example", PASSWORD).await.unwrap()));
    assert!(enrollment(env.try_login("dan@b.example", PASSWORD).await.unwrap()));
    // A plain user of A, and an admin of another tenant: a session as before.
    env.login("bob@a.example", PASSWORD).await;
    env.login("cat@b.example", PASSWORD).await;

    // Tenancy unreachable while a role policy exists: no session for anyone it might cover.
    env.tenancy.failing.store(true, Ordering::SeqCst);
    let sessions_before = env.count("SELECT COUNT(*) FROM sessions").await;
    assert_err(env.try_login("bob@a.example", PASSWORD).await, Code::Unavailable, "UNAVAILABLE");
    assert_err(env.try_login("ann@a.example", PASSWORD).await, Code::Unavailable, "UNAVAILABLE");
    assert_eq!(env.count("SELECT COUNT(*) FROM sessions").await, sessions_before);
    assert_eq!(env.audit().await.last().unwrap().reason, "ROLES_UNAVAILABLE");
    env.tenancy.failing.store(false, Ordering::SeqCst);
    env.login("bob@a.example", PASSWORD).await;

    // Ann enrolls; then she gets the second-factor challenge like anyone with 2FA.
    let token = match env.try_login("ann@a.example", PASSWORD).await.unwrap() {
        pb::login_outcome::Outcome::EnrollmentRequired(e) => e.enrollment_token,
        other => panic!("expected enrollment, got {other:?}"),
    };
    let begun = env
        .client()
        .begin_totp_enrollment(pb::BeginTotpEnrollmentRequest { enrollment_token: token.clone() })
        .await
        .unwrap()
        .into_inner();
    let confirmed = env
        .client()
        .confirm_totp_enrollment(pb::ConfirmTotpEnrollmentRequest {
            enrollment_token: token,
            totp_code: totp_code(&begun.secret, 0),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(matches!(confirmed.outcome.unwrap().outcome.unwrap(), pb::login_outcome::Outcome::Session(_)));
    assert!(matches!(
        env.try_login("ann@a.example", PASSWORD).await.unwrap(),
        pb::login_outcome::Outcome::SecondFactorRequired(_)
    ));
}

#[tokio::test]
async fn a_tenant_policy_covers_the_users_of_its_departments() {
    let env = Env::start().await;
    let owner = env.owner_token().await;
    env.tenancy.parents.lock().unwrap().insert(DEPT_A1.into(), TENANT_A.into());
    env.create(&owner, "eve@a.example", "Eve", DEPT_A1, "client_user", false).await;
    env.create(&owner, "fay@b.example", "Fay", TENANT_B, "client_user", false).await;
    let policy = pb::TwoFactorPolicy { tenant_id: TENANT_A.into(), require_all: true, ..Default::default() };
    set_policy(&env, &owner, policy).await;

    // Eve's home is a department of A: A's policy covers her. Fay, in B, logs in as before.
    let outcome = env.try_login("eve@a.example", PASSWORD).await.unwrap();
    assert!(matches!(outcome, pb::login_outcome::Outcome::EnrollmentRequired(_)), "got {outcome:?}");
    env.login("fay@b.example", PASSWORD).await;
}

/// A tenant's `require_all` covers every direct member of it and of its departments, not just
/// the users whose home it is; shadow memberships (MSP staff everywhere) are not direct, and
/// the admin tenancy's policy covers its staff, not the users of the clients under it.
#[tokio::test]
async fn a_tenant_policy_covers_every_direct_member_and_fails_closed_without_tenancy() {
    use std::sync::atomic::Ordering;
    let env = Env::start().await;
    let owner = env.owner_token().await;
    env.tenancy.parents.lock().unwrap().insert(DEPT_A1.into(), TENANT_A.into());
    // Homes in B; Gus is also a direct member of A, Hal of a department of A.
    let gus = env.create(&owner, "gus@b.example", "Gus", TENANT_B, "client_user", false).await;
    let hal = env.create(&owner, "hal@b.example", "Hal", TENANT_B, "client_user", false).await;
    env.create(&owner, "ivy@b.example", "Ivy", TENANT_B, "client_user", false).await;
    let kim = env.create(&owner, "kim@msp.example", "Kim", "", "msp_technician", true).await;
    env.tenancy.add_role(&gus.user_id, TENANT_A, "client_user");
    env.tenancy.add_role(&hal.user_id, DEPT_A1, "client_user");
    env.tenancy.add_shadow(&kim.user_id, TENANT_A, "msp_technician");
    set_policy(
        &env,
        &owner,
        pb::TwoFactorPolicy { tenant_id: TENANT_A.into(), require_all: true, ..Default::default() },
    )
    .await;

    let enrollment = |o: pb::login_outcome::Outcome| matches!(o, pb::login_outcome::Outcome::EnrollmentRequired(_));
    assert!(enrollment(env.try_login("gus@b.example", PASSWORD).await.unwrap()));
    assert!(enrollment(env.try_login("hal@b.example", PASSWORD).await.unwrap()));
    env.login("ivy@b.example", PASSWORD).await;
    env.login("kim@msp.example", PASSWORD).await;

    // Tenancy unreachable while a tenant policy is in force: no session for anyone it might
    // cover, MSP staff included.
    env.tenancy.failing.store(true, Ordering::SeqCst);
    assert_err(env.try_login("ivy@b.example", PASSWORD).await, Code::Unavailable, "UNAVAILABLE");
    assert_err(env.try_login("kim@msp.example", PASSWORD).await, Code::Unavailable, "UNAVAILABLE");
    env.tenancy.failing.store(false, Ordering::SeqCst);

    // The admin tenancy's policy: its staff, not the clients' users.
    set_policy(
        &env,
        &owner,
        pb::TwoFactorPolicy { tenant_id: ADMIN_TENANCY.into(), require_all: true, ..Default::default() },
    )
    .await;
    assert!(enrollment(env.try_login("kim@msp.example", PASSWORD).await.unwrap()));
    env.login("ivy@b.example", PASSWORD).await;
}

/// Enrolls `email` (logged in with `PASSWORD`) in TOTP; returns the secret.
async fn enroll(env: &Env, email: &str) -> String {
    let session = env.login(email, PASSWORD).await;
    env.enroll_totp(&session, 0).await.0
}

/// A six-digit code is guessable without a limit: wrong codes count towards the account's
/// lockout like wrong passwords, a locked account's challenge refuses even the right code, and
/// a correct password does not wipe the count while the second factor is still to come.
#[tokio::test]
async fn wrong_codes_lock_the_account_like_wrong_passwords() {
    let env = Env::start_with(&[
        ("TETHER_IDENTITY_LOCKOUT_ACCOUNT_FREE_ATTEMPTS", "100"),
        ("TETHER_IDENTITY_LOCKOUT_ACCOUNT_LOCK_AFTER", "4"),
        ("TETHER_IDENTITY_LOCKOUT_IP_FREE_ATTEMPTS", "1000"),
        ("TETHER_IDENTITY_LOCKOUT_IP_LOCK_AFTER", "1000"),
    ])
    .await;
    let owner = env.owner_token().await;
    env.create(&owner, "ida@a.example", "Ida", TENANT_A, "client_user", false).await;
    let secret = enroll(&env, "ida@a.example").await;
    let challenge = || async {
        match env.try_login("ida@a.example", PASSWORD).await.unwrap() {
            pb::login_outcome::Outcome::SecondFactorRequired(c) => c.challenge_token,
            other => panic!("expected a challenge, got {other:?}"),
        }
    };
    let complete = |challenge: &str, code: &str| pb::CompleteSecondFactorRequest {
        challenge_token: challenge.to_owned(),
        code: Some(pb::complete_second_factor_request::Code::TotpCode(code.to_owned())),
    };
    // Two wrong codes on one challenge, two on a fresh one (the password in between).
    let first = challenge().await;
    for _ in 0..2 {
        let wrong = env.client().complete_second_factor(complete(&first, "000000")).await;
        assert_err(wrong, Code::Unauthenticated, "LOGIN_FAILED");
    }
    let second = challenge().await;
    for _ in 0..2 {
        let wrong = env.client().complete_second_factor(complete(&second, "000001")).await;
        assert_err(wrong, Code::Unauthenticated, "LOGIN_FAILED");
    }
    // Four failures: locked. The right code no longer helps, nor does the password.
    let right = totp_code(&secret, 0);
    assert_err(
        env.client().complete_second_factor(complete(&second, &right)).await,
        Code::Unauthenticated,
        "LOGIN_FAILED",
    );
    assert!(env.audit().await.iter().any(|e| e.reason == "ACCOUNT_LOCKED"));
    assert_err(env.try_login("ida@a.example", PASSWORD).await, Code::Unauthenticated, "LOGIN_FAILED");
}

/// A user deactivated while a login waits for their second factor gets no session from it.
#[tokio::test]
async fn a_challenge_does_not_outlive_a_deactivation() {
    let env = Env::start().await;
    let owner = env.owner_token().await;
    let jo = env.create(&owner, "jo@a.example", "Jo", TENANT_A, "client_user", false).await;
    let secret = enroll(&env, "jo@a.example").await;
    let challenge = match env.try_login("jo@a.example", PASSWORD).await.unwrap() {
        pb::login_outcome::Outcome::SecondFactorRequired(c) => c.challenge_token,
        other => panic!("expected a challenge, got {other:?}"),
    };
    env.client()
        .deactivate_user(auth(&owner, pb::DeactivateUserRequest { user_id: jo.user_id.clone(), reason: "left".into() }))
        .await
        .unwrap();
    let complete = pb::CompleteSecondFactorRequest {
        challenge_token: challenge,
        code: Some(pb::complete_second_factor_request::Code::TotpCode(totp_code(&secret, 0))),
    };
    assert_err(env.client().complete_second_factor(complete).await, Code::Unauthenticated, "LOGIN_FAILED");
}

/// Re-saving a policy in force (here with a longer grace period) must not let everyone log in
/// without 2FA again for that period; a policy that asks for something new does get its grace.
#[tokio::test]
async fn editing_a_policy_in_force_does_not_restart_its_grace_period() {
    let env = Env::start().await;
    let owner = env.owner_token().await;
    env.create(&owner, "uma@a.example", "Uma", TENANT_A, "client_user", false).await;
    let enrollment_asked = || async {
        matches!(
            env.try_login("uma@a.example", PASSWORD).await.unwrap(),
            pb::login_outcome::Outcome::EnrollmentRequired(_)
        )
    };
    let week = Some(prost_types::Duration { seconds: 7 * 24 * 3600, nanos: 0 });
    let everyone = pb::TwoFactorPolicy { tenant_id: TENANT_A.into(), require_all: true, ..Default::default() };
    set_policy(&env, &owner, everyone.clone()).await;
    assert!(enrollment_asked().await);
    set_policy(&env, &owner, pb::TwoFactorPolicy { grace_period: week, ..everyone.clone() }).await;
    assert!(enrollment_asked().await, "still in force after the edit");
    let got = env
        .client()
        .get_two_factor_policy(auth(&owner, pb::GetTwoFactorPolicyRequest { tenant_id: TENANT_A.into() }))
        .await
        .unwrap()
        .into_inner()
        .policy
        .unwrap();
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64;
    assert!(got.in_force_from.unwrap().seconds <= now, "{got:?}");

    // Dropped, then a new requirement with a week's grace: not enforced yet.
    set_policy(&env, &owner, pb::TwoFactorPolicy { tenant_id: TENANT_A.into(), ..Default::default() }).await;
    set_policy(&env, &owner, pb::TwoFactorPolicy { grace_period: week, ..everyone }).await;
    assert!(!enrollment_asked().await, "a new requirement waits out its grace period");
}

#[tokio::test]
async fn regenerated_recovery_codes_replace_the_old_ones() {
    let env = Env::start().await;
    let owner = env.owner_token().await;
    env.create(&owner, "wyn@a.example", "Wyn", TENANT_A, "client_user", false).await;
    let session = env.login("wyn@a.example", PASSWORD).await;
    let regenerate = |c: &str| {
        let mut client = env.client();
        let request = auth(&session, pb::RegenerateRecoveryCodesRequest { totp_code: c.into() });
        async move { client.regenerate_recovery_codes(request).await }
    };
    assert_err(regenerate("123456").await, Code::FailedPrecondition, "TOTP_NOT_ENABLED");

    let begun = env
        .client()
        .begin_totp_enrollment(auth(&session, pb::BeginTotpEnrollmentRequest::default()))
        .await
        .unwrap()
        .into_inner();
    // Taken together, so a step boundary during the test cannot shift them (a code cannot be
    // used twice: one to confirm, the next to regenerate).
    let (previous, current) = (totp_code(&begun.secret, -1), totp_code(&begun.secret, 0));
    let old = env
        .client()
        .confirm_totp_enrollment(auth(
            &session,
            pb::ConfirmTotpEnrollmentRequest { enrollment_token: String::new(), totp_code: previous },
        ))
        .await
        .unwrap()
        .into_inner()
        .recovery_codes;

    assert_err(regenerate("000000").await, Code::InvalidArgument, "INVALID_TOTP_CODE");
    let fresh = regenerate(&current).await.unwrap().into_inner().recovery_codes;
    assert_eq!(fresh.len(), 10);
    assert!(fresh.iter().all(|c| !old.contains(c)), "all new: {old:?} / {fresh:?}");
    assert!(env.audit().await.iter().any(|e| e.action == "user.2fa_recovery_codes"));

    let login_with = |c: &str| {
        let mut client = env.client();
        let request = pb::LoginRequest {
            email: "wyn@a.example".into(),
            password: PASSWORD.into(),
            second_factor: Some(pb::login_request::SecondFactor::RecoveryCode(c.into())),
            ..Default::default()
        };
        async move { client.login(request).await }
    };
    // The old codes no longer work, for login or to turn 2FA off...
    assert_err(login_with(&old[0]).await, Code::Unauthenticated, "LOGIN_FAILED");
    assert_err(
        env.client()
            .disable_totp(auth(
                &session,
                pb::DisableTotpRequest { code: Some(pb::disable_totp_request::Code::RecoveryCode(old[1].clone())) },
            ))
            .await,
        Code::InvalidArgument,
        "INVALID_RECOVERY_CODE",
    );
    // ...the new ones do, once each, also at the challenge step.
    let outcome = login_with(&fresh[0]).await.unwrap().into_inner().outcome.unwrap().outcome.unwrap();
    assert!(matches!(outcome, pb::login_outcome::Outcome::Session(_)), "got {outcome:?}");
    assert_err(login_with(&fresh[0]).await, Code::Unauthenticated, "LOGIN_FAILED");
    let challenge = match env.try_login("wyn@a.example", PASSWORD).await.unwrap() {
        pb::login_outcome::Outcome::SecondFactorRequired(c) => c.challenge_token,
        other => panic!("expected a challenge, got {other:?}"),
    };
    let complete = |c: &str| pb::CompleteSecondFactorRequest {
        challenge_token: challenge.clone(),
        code: Some(pb::complete_second_factor_request::Code::RecoveryCode(c.into())),
    };
    assert_err(env.client().complete_second_factor(complete(&old[2])).await, Code::Unauthenticated, "LOGIN_FAILED");
    let done = env.client().complete_second_factor(complete(&fresh[1])).await.unwrap().into_inner();
    assert!(matches!(done.outcome.unwrap().outcome, Some(pb::login_outcome::Outcome::Session(_))));
}
