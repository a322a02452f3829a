//! TOTP secrets at rest: encrypted with `TETHER_IDENTITY_TOTP_KEYS`, re-encrypted when a new key
//! is put first, plain-text rows of older databases encrypted at start-up, and a secret whose
//! key is gone fails closed at the second-factor step.

// Test code: a failed set-up or assertion should panic.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use identity_svc::domain::totp;
use tether_proto::identity::v1::{self as pb, complete_second_factor_request::Code as SecondFactor};
use tonic::Code;

/// The test kit's key (`tether_tests::TOTP_KEYS`) and a second one for rotations.
const OLD_KEY: &str = tether_tests::TOTP_KEYS;
const NEW_KEY: &str = "test-2:0b5e55ed0b5e55ed0b5e55ed0b5e55ed0b5e55ed0b5e55ed0b5e55ed0b5e0002";

struct Enrolled {
    user_id: String,
    email: String,
    secret: String,
    recovery_codes: Vec<String>,
}

/// Creates a user and turns on TOTP for them, confirming with the previous step's code so the
/// current and next steps are left for the logins a test makes.
async fn enrolled_user(env: &Env, email: &str) -> Enrolled {
    let owner = env.owner_token().await;
    let user = env.create(&owner, email, "Tess", TENANT_A, "client_user", false).await;
    let session = env.login(email, PASSWORD).await;
    let (secret, recovery_codes) = env.enroll_totp(&session, -1).await;
    Enrolled { user_id: user.user_id, email: email.to_owned(), secret, recovery_codes }
}

/// The `secret` and `secret_key_id` columns of the user's TOTP row, as stored.
async fn stored(env: &Env, user_id: &str) -> (String, Option<String>) {
    let pool = env.db.inspect("identity").await;
    let row = sqlx::query_as("SELECT secret, secret_key_id FROM totp WHERE account_id = $1")
        .bind(user_id.to_owned())
        .fetch_one(&pool)
        .await
        .unwrap();
    pool.close().await;
    row
}

/// The user's stored secret as it is in the database, without the key id.
async fn stored_secret(env: &Env, user_id: &str) -> String {
    let pool = env.db.inspect("identity").await;
    let secret: String = sqlx::query_scalar("SELECT secret FROM totp WHERE account_id = $1")
        .bind(user_id.to_owned())
        .fetch_one(&pool)
        .await
        .unwrap();
    pool.close().await;
    secret
}

/// Neither the base32 secret nor its bytes (raw or hex) are in `haystack`.
fn assert_hides(haystack: &[u8], secret: &str, what: &str) {
    let raw = totp::base32_decode(secret).unwrap();
    let contains = |needle: &[u8]| haystack.windows(needle.len()).any(|w| w.eq_ignore_ascii_case(needle));
    assert!(!contains(secret.as_bytes()), "{what} holds the base32 secret");
    assert!(!contains(&raw), "{what} holds the secret's bytes");
    assert!(!contains(hex::encode(&raw).as_bytes()), "{what} holds the secret's bytes in hex");
}

/// On SQLite, neither the database file nor its write-ahead log holds the secret (not even in
/// freed space).
fn assert_files_hide(env: &Env, secret: &str) {
    let Some(dir) = &env.db.data_dir else { return };
    for file in ["identity.db", "identity.db-wal"] {
        if let Ok(bytes) = std::fs::read(dir.join(file)) {
            assert_hides(&bytes, secret, file);
        }
    }
}

/// Password, then the TOTP code at `offset` steps from now: the outcome of the second step.
async fn log_in_with_code(
    env: &Env,
    user: &Enrolled,
    offset: i64,
) -> Result<pb::login_outcome::Outcome, tonic::Status> {
    let challenge = match env.try_login(&user.email, PASSWORD).await.unwrap() {
        pb::login_outcome::Outcome::SecondFactorRequired(c) => c.challenge_token,
        other => panic!("expected the second factor to be asked, got {other:?}"),
    };
    let complete = pb::CompleteSecondFactorRequest {
        challenge_token: challenge,
        code: Some(SecondFactor::TotpCode(totp_code(&user.secret, offset))),
    };
    let reply = env.client().complete_second_factor(complete).await?;
    Ok(reply.into_inner().outcome.unwrap().outcome.unwrap())
}

async fn assert_logs_in_with_code(env: &Env, user: &Enrolled, offset: i64) {
    match log_in_with_code(env, user, offset).await {
        Ok(pb::login_outcome::Outcome::Session(s)) => assert!(s.session.unwrap().second_factor_verified),
        other => panic!("expected a session, got {other:?}"),
    }
}

/// Restarts identity with `keys` as `TETHER_IDENTITY_TOTP_KEYS`.
async fn restart_with_keys(env: &mut Env, keys: &str) {
    env.extra.push(("TETHER_IDENTITY_TOTP_KEYS".into(), keys.to_owned()));
    env.restart().await;
}

#[tokio::test]
async fn a_totp_secret_is_not_stored_in_clear_and_its_codes_still_log_in() {
    let env = Env::start().await;
    let user = enrolled_user(&env, "tess@a.example").await;

    let column = stored_secret(&env, &user.user_id).await;
    assert_ne!(column, user.secret);
    assert_hides(column.as_bytes(), &user.secret, "the stored secret column");
    assert_files_hide(&env, &user.secret);
    assert_logs_in_with_code(&env, &user, 0).await;
}

#[tokio::test]
async fn a_new_first_key_re_encrypts_secrets_and_the_old_key_can_then_go() {
    let mut env = Env::start().await;
    let user = enrolled_user(&env, "tess@a.example").await;
    let (before, key_before) = stored(&env, &user.user_id).await;
    assert_eq!(key_before.as_deref(), Some("test-1"));

    // Rotation: the new key first, the old one still there; start-up re-encrypts.
    restart_with_keys(&mut env, &format!("{NEW_KEY},{OLD_KEY}")).await;
    let (after, key_after) = stored(&env, &user.user_id).await;
    assert_eq!(key_after.as_deref(), Some("test-2"), "re-encrypted under the new key");
    assert_ne!(after, before);
    assert_hides(after.as_bytes(), &user.secret, "the re-encrypted secret");
    assert_logs_in_with_code(&env, &user, 0).await;

    // The old key removed: nothing needs it any more.
    restart_with_keys(&mut env, NEW_KEY).await;
    assert_eq!(stored(&env, &user.user_id).await, (after, key_after));
    assert_logs_in_with_code(&env, &user, 1).await;
}

#[tokio::test]
async fn a_plain_text_secret_from_before_is_encrypted_at_start_up() {
    let mut env = Env::start().await;
    let user = enrolled_user(&env, "tess@a.example").await;
    // A database written before encryption: the secret in clear, no key id.
    env.execute(&format!(
        "UPDATE totp SET secret = '{}', secret_key_id = NULL WHERE account_id = '{}'",
        user.secret, user.user_id
    ))
    .await;
    env.restart().await;
    let (column, key_id) = stored(&env, &user.user_id).await;
    assert_eq!(key_id.as_deref(), Some("test-1"));
    assert_hides(column.as_bytes(), &user.secret, "the stored secret column");
    assert_files_hide(&env, &user.secret);
    assert_logs_in_with_code(&env, &user, 0).await;
}

#[tokio::test]
async fn a_secret_whose_key_is_gone_fails_closed_at_the_second_factor() {
    let mut env = Env::start().await;
    let user = enrolled_user(&env, "tess@a.example").await;

    // The old key dropped without a rotation first: start-up still serves, the row is left as
    // it is, and the right code is refused with an error that says why (not "wrong code").
    restart_with_keys(&mut env, NEW_KEY).await;
    assert_eq!(stored(&env, &user.user_id).await.1.as_deref(), Some("test-1"));
    assert_err(log_in_with_code(&env, &user, 0).await, Code::FailedPrecondition, "CONFIG_INVALID");
    let inline = pb::LoginRequest {
        email: user.email.clone(),
        password: PASSWORD.into(),
        second_factor: Some(pb::login_request::SecondFactor::TotpCode(totp_code(&user.secret, 0))),
        ..Default::default()
    };
    assert_err(env.client().login(from_edge(inline)).await, Code::FailedPrecondition, "CONFIG_INVALID");
    // Recovery codes are hashed, not encrypted: still the way in.
    let with_recovery = pb::LoginRequest {
        email: user.email.clone(),
        password: PASSWORD.into(),
        second_factor: Some(pb::login_request::SecondFactor::RecoveryCode(user.recovery_codes[0].clone())),
        ..Default::default()
    };
    let outcome = env.client().login(from_edge(with_recovery)).await.unwrap().into_inner();
    assert!(matches!(outcome.outcome.unwrap().outcome, Some(pb::login_outcome::Outcome::Session(_))));

    // The key given back (second): codes work again and the secret moves to the first key.
    restart_with_keys(&mut env, &format!("{NEW_KEY},{OLD_KEY}")).await;
    assert_eq!(stored(&env, &user.user_id).await.1.as_deref(), Some("test-2"));
    assert_logs_in_with_code(&env, &user, 0).await;
}
