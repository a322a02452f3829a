//! Invitations: link, email, pending list, resend, revoke, distinct token errors, accept.

// Test code: a failed set-up or assertion should panic.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use tether_proto::identity::v1 as pb;
use tonic::Code;

async fn invite(env: &Env, token: &str, email: &str, tenant: &str, role: &str) -> pb::CreateInvitationResponse {
    env.client()
        .create_invitation(auth(
            token,
            pb::CreateInvitationRequest {
                email: email.into(),
                display_name: "Pat Pending".into(),
                tenant_id: tenant.into(),
                role: role.into(),
                ..Default::default()
            },
        ))
        .await
        .unwrap()
        .into_inner()
}

#[tokio::test]
async fn an_invitee_accepts_the_emailed_link_and_becomes_active() {
    let env = Env::start().await;
    let owner = env.owner_token().await;
    let created = invite(&env, &owner, "pat@a.example", TENANT_A, "client_user").await;
    let inv = created.invitation.clone().unwrap();
    assert_eq!(inv.status, pb::InvitationStatus::Pending as i32);
    assert_eq!(created.invitation_token.len(), 64);
    assert!(created.invitation_url.ends_with(&created.invitation_token));
    // Only the hash is stored; the link was emailed to the file outbox.
    assert_eq!(
        env.count(&format!("SELECT COUNT(*) FROM invitation_tokens WHERE token_hash = '{}'", created.invitation_token))
            .await,
        0
    );
    let mails: Vec<_> = std::fs::read_dir(&env.mail_dir)
        .unwrap()
        .map(|e| std::fs::read_to_string(e.unwrap().path()).unwrap())
        .collect();
    assert_eq!(mails.len(), 1);
    assert!(mails[0].contains("pat@a.example") && mails[0].contains(&created.invitation_token[..20]));

    // Pending: listed, cannot log in, email cannot be invited or created again.
    let pending =
        env.client().list_invitations(auth(&owner, pb::ListInvitationsRequest::default())).await.unwrap().into_inner();
    assert_eq!(pending.invitations.iter().map(|i| i.email.clone()).collect::<Vec<_>>(), vec!["pat@a.example"]);
    assert_err(
        env.client()
            .create_invitation(auth(
                &owner,
                pb::CreateInvitationRequest {
                    email: "PAT@a.example".into(),
                    tenant_id: TENANT_A.into(),
                    role: "client_user".into(),
                    ..Default::default()
                },
            ))
            .await,
        Code::AlreadyExists,
        "INVITATION_PENDING",
    );

    let opened = env
        .client()
        .get_invitation(pb::GetInvitationRequest { invitation_token: created.invitation_token.clone() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (opened.email.as_str(), opened.display_name.as_str(), opened.tenant_id.as_str()),
        ("pat@a.example", "Pat Pending", TENANT_A)
    );
    assert_err(
        env.client()
            .accept_invitation(pb::AcceptInvitationRequest {
                invitation_token: created.invitation_token.clone(),
                password: "short".into(),
                ..Default::default()
            })
            .await,
        Code::InvalidArgument,
        "PASSWORD_TOO_SHORT",
    );
    let accepted = env
        .client()
        .accept_invitation(pb::AcceptInvitationRequest {
            invitation_token: created.invitation_token.clone(),
            display_name: "Pat Person".into(),
            password: PASSWORD.into(),
            start_session: true,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let user = accepted.user.unwrap();
    assert_eq!((user.status, user.display_name.as_str()), (pb::UserStatus::Active as i32, "Pat Person"));
    assert!(user.joined_at.is_some());
    assert!(matches!(accepted.outcome.and_then(|o| o.outcome), Some(pb::login_outcome::Outcome::Session(_))));
    assert_eq!(env.tenancy.membership(&user.user_id), vec![(TENANT_A.to_owned(), "client_user".to_owned())]);
    env.login("pat@a.example", PASSWORD).await;
    // Single use.
    assert_err(
        env.client()
            .get_invitation(pb::GetInvitationRequest { invitation_token: created.invitation_token.clone() })
            .await,
        Code::FailedPrecondition,
        "INVITATION_USED",
    );
}

#[tokio::test]
async fn resent_revoked_expired_and_garbled_links_get_distinct_errors() {
    let env = Env::start_with(&[("TETHER_IDENTITY_INVITATION_TTL_MS", "1500")]).await;
    let owner = env.owner_token().await;
    let first = invite(&env, &owner, "quinn@a.example", TENANT_A, "client_user").await;
    let id = first.invitation.clone().unwrap().invitation_id;
    let resent = env
        .client()
        .resend_invitation(auth(&owner, pb::ResendInvitationRequest { invitation_id: id.clone(), skip_email: true }))
        .await
        .unwrap()
        .into_inner();
    assert_ne!(resent.invitation_token, first.invitation_token);
    assert_eq!(resent.invitation.unwrap().send_count, 2);
    let get = |token: &str| {
        let mut c = env.client();
        let token = token.to_owned();
        async move { c.get_invitation(pb::GetInvitationRequest { invitation_token: token }).await }
    };
    assert_err(get(&first.invitation_token).await, Code::FailedPrecondition, "INVITATION_REVOKED");
    get(&resent.invitation_token).await.unwrap();
    assert_err(get("not a token").await, Code::InvalidArgument, "INVITATION_TOKEN_MALFORMED");
    assert_err(get(&"ab".repeat(32)).await, Code::NotFound, "INVITATION_NOT_FOUND");
    tokio::time::sleep(std::time::Duration::from_millis(1700)).await;
    assert_err(get(&resent.invitation_token).await, Code::FailedPrecondition, "INVITATION_EXPIRED");

    // Revoking removes the pending user; the email is free again.
    let second = invite(&env, &owner, "rae@a.example", TENANT_A, "client_user").await;
    let inv = second.invitation.unwrap();
    let revoked = env
        .client()
        .revoke_invitation(auth(&owner, pb::RevokeInvitationRequest { invitation_id: inv.invitation_id.clone() }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(revoked.invitation.unwrap().status, pb::InvitationStatus::Revoked as i32);
    assert_err(get(&second.invitation_token).await, Code::FailedPrecondition, "INVITATION_REVOKED");
    assert!(
        env.client()
            .get_user(auth(&owner, pb::GetUserRequest { user_id: inv.user_id.clone() }))
            .await
            .unwrap()
            .into_inner()
            .user
            .unwrap()
            .deleted
    );
    invite(&env, &owner, "rae@a.example", TENANT_A, "client_user").await;
}

#[tokio::test]
async fn client_admins_invite_only_into_their_tenant() {
    let env = Env::start().await;
    let owner = env.owner_token().await;
    let admin = env.create(&owner, "adm@a.example", "Ada Admin", TENANT_A, "client_admin", false).await;
    env.authz.grant(&admin.user_id, TENANT_A, "client_admin");
    let ada = env.login("adm@a.example", PASSWORD).await;
    invite(&env, &ada, "sam@a.example", TENANT_A, "client_user").await;
    let attempt = |tenant: &str, role: &str, staff: bool| pb::CreateInvitationRequest {
        email: "tim@b.example".into(),
        tenant_id: tenant.into(),
        role: role.into(),
        is_msp_staff: staff,
        ..Default::default()
    };
    assert_err(
        env.client().create_invitation(auth(&ada, attempt(TENANT_B, "client_user", false))).await,
        Code::NotFound,
        "TENANT_NOT_FOUND",
    );
    assert_err(
        env.client().create_invitation(auth(&ada, attempt("", "msp_admin", true))).await,
        Code::PermissionDenied,
        "MSP_STAFF_REQUIRED",
    );
    assert_err(
        env.client().create_invitation(auth(&ada, attempt(TENANT_A, "msp_admin", false))).await,
        Code::PermissionDenied,
        "ROLE_ABOVE_OWN",
    );
    // The owner's invitation into another tenant is not in Ada's list.
    invite(&env, &owner, "uma@b.example", TENANT_B, "client_user").await;
    let listed =
        env.client().list_invitations(auth(&ada, pb::ListInvitationsRequest::default())).await.unwrap().into_inner();
    assert_eq!(listed.invitations.iter().map(|i| i.email.clone()).collect::<Vec<_>>(), vec!["sam@a.example"]);
}

#[tokio::test]
async fn the_invitee_sees_which_organisation_invited_them() {
    use std::sync::atomic::Ordering;
    let env = Env::start().await;
    let owner = env.owner_token().await;
    env.tenancy.names.lock().unwrap().insert(TENANT_A.into(), "Kestrel Works".into());
    let created = invite(&env, &owner, "pia@a.example", TENANT_A, "client_user").await;
    let view = |token: &str| pb::GetInvitationRequest { invitation_token: token.into() };
    let seen = env.client().get_invitation(view(&created.invitation_token)).await.unwrap().into_inner();
    assert_eq!((seen.tenant_id.as_str(), seen.tenant_name.as_str()), (TENANT_A, "Kestrel Works"));
    assert_eq!(seen.role, "client_user");

    // The current name (asked live): a rename shows; an outage only leaves the name out.
    env.tenancy.names.lock().unwrap().insert(TENANT_A.into(), "Kestrel Works Ltd".into());
    let seen = env.client().get_invitation(view(&created.invitation_token)).await.unwrap().into_inner();
    assert_eq!(seen.tenant_name, "Kestrel Works Ltd");
    env.tenancy.failing.store(true, Ordering::SeqCst);
    let seen = env.client().get_invitation(view(&created.invitation_token)).await.unwrap().into_inner();
    assert_eq!((seen.email.as_str(), seen.tenant_name.as_str()), ("pia@a.example", ""));
}

/// An administrator who deactivates or deletes an invitee before they accept has the last
/// word: the link no longer activates the account, and nothing about it changes.
#[tokio::test]
async fn a_deactivated_or_deleted_invitee_cannot_accept() {
    let env = Env::start().await;
    let owner = env.owner_token().await;
    let accept = |token: &str| {
        let mut c = env.client();
        let request = pb::AcceptInvitationRequest {
            invitation_token: token.to_owned(),
            password: "a long pass phrase for me".into(),
            start_session: true,
            ..Default::default()
        };
        async move { c.accept_invitation(request).await }
    };
    let user = |id: String| {
        let mut c = env.client();
        let owner = owner.clone();
        async move { c.get_user(auth(&owner, pb::GetUserRequest { user_id: id })).await.unwrap().into_inner().user.unwrap() }
    };

    let sam = invite(&env, &owner, "sam@a.example", TENANT_A, "client_user").await;
    let sam_id = sam.invitation.clone().unwrap().user_id;
    // Before accepting, a login fails with the generic answer; the trail says why.
    assert_err(env.try_login("sam@a.example", "any guess at all").await, Code::Unauthenticated, "LOGIN_FAILED");
    assert!(env.audit().await.iter().any(|e| e.reason == "INVITATION_NOT_ACCEPTED"));
    env.client()
        .deactivate_user(auth(&owner, pb::DeactivateUserRequest { user_id: sam_id.clone(), reason: "left".into() }))
        .await
        .unwrap();
    assert_err(accept(&sam.invitation_token).await, Code::FailedPrecondition, "INVITATION_REVOKED");
    assert_eq!(user(sam_id).await.status, pb::UserStatus::Suspended as i32);
    assert_err(
        env.try_login("sam@a.example", "a long pass phrase for me").await,
        Code::Unauthenticated,
        "LOGIN_FAILED",
    );

    let tia = invite(&env, &owner, "tia@a.example", TENANT_A, "client_user").await;
    let tia_invitation = tia.invitation.clone().unwrap();
    env.client()
        .delete_user(auth(&owner, pb::DeleteUserRequest { user_id: tia_invitation.user_id.clone() }))
        .await
        .unwrap();
    assert_err(accept(&tia.invitation_token).await, Code::FailedPrecondition, "INVITATION_REVOKED");
    assert!(user(tia_invitation.user_id.clone()).await.deleted);
    // The invitation is no longer listed as pending.
    let pending =
        env.client().list_invitations(auth(&owner, pb::ListInvitationsRequest::default())).await.unwrap().into_inner();
    assert!(pending.invitations.iter().all(|i| i.invitation_id != tia_invitation.invitation_id));
}

/// Seed 003: a MANAGER may invite people (up to their own rank) without managing users. identity
/// leaves that to authz-svc's CheckRoleGrant, which knows the pack's invite permission.
#[tokio::test]
async fn a_role_with_the_invite_permission_invites_up_to_its_rank() {
    let env = Env::start().await;
    let owner = env.owner_token().await;
    let mia = env.create(&owner, "mia@a.example", "Mia", TENANT_A, "client_manager", false).await;
    env.authz.grant(&mia.user_id, TENANT_A, "client_manager");
    let ned = env.create(&owner, "ned@a.example", "Ned", TENANT_A, "client_user", false).await;
    env.authz.grant(&ned.user_id, TENANT_A, "client_user");
    let mia_token = env.login("mia@a.example", PASSWORD).await;
    let ned_token = env.login("ned@a.example", PASSWORD).await;
    let invite_as = |token: &str, email: &str, role: &str| {
        let mut c = env.client();
        let request = auth(
            token,
            pb::CreateInvitationRequest {
                email: email.into(),
                tenant_id: TENANT_A.into(),
                role: role.into(),
                ..Default::default()
            },
        );
        async move { c.create_invitation(request).await }
    };
    invite_as(&mia_token, "new1@a.example", "client_user").await.unwrap();
    assert_err(invite_as(&mia_token, "new2@a.example", "client_admin").await, Code::PermissionDenied, "ROLE_ABOVE_OWN");
    assert_err(
        invite_as(&ned_token, "new3@a.example", "client_user").await,
        Code::PermissionDenied,
        "PERMISSION_DENIED",
    );
}

/// Oversized client fields are refused as Login refuses them, not cut short; the link stays
/// usable.
#[tokio::test]
async fn accepting_with_oversized_client_fields_is_refused_like_login() {
    let env = Env::start().await;
    let owner = env.owner_token().await;
    let created = invite(&env, &owner, "oli@a.example", TENANT_A, "client_user").await;
    let accept = |client_ip: String, user_agent: String| {
        from_edge(pb::AcceptInvitationRequest {
            invitation_token: created.invitation_token.clone(),
            display_name: "Oli".into(),
            password: PASSWORD.into(),
            start_session: true,
            client_ip,
            user_agent,
        })
    };
    for (ip, agent, field) in
        [("1".repeat(101), String::new(), "client_ip"), (String::new(), "a".repeat(501), "user_agent")]
    {
        let status = env.client().accept_invitation(accept(ip, agent)).await.expect_err(field);
        assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
        assert_eq!(tether_runtime::error::reason_of(&status).as_deref(), Some("FIELD_TOO_LONG"));
        assert_eq!(field_of(&status).as_deref(), Some(field));
    }
    let login = |ip: String, user_agent: String| {
        from_edge(pb::LoginRequest {
            email: "oli@a.example".into(),
            password: PASSWORD.into(),
            client_ip: ip,
            user_agent,
            ..Default::default()
        })
    };
    let status = env.client().login(login("1".repeat(101), String::new())).await.expect_err("login");
    assert_eq!(field_of(&status).as_deref(), Some("client_ip"));
    env.client().accept_invitation(accept("192.0.2.8".into(), "a".repeat(500))).await.unwrap();
}

/// A retried CreateInvitation returns the first invitation only to a caller who may see it.
#[tokio::test]
async fn a_retried_invitation_is_shown_only_to_callers_who_may_see_it() {
    const RID: &str = "00000000-0000-4000-8000-000000000456";
    let env = Env::start().await;
    let owner = env.owner_token().await;
    let bea = env.create(&owner, "bea@b.example", "Bea", TENANT_B, "client_admin", false).await;
    env.authz.grant(&bea.user_id, TENANT_B, "client_admin");
    let bea_session = env.login("bea@b.example", PASSWORD).await;
    let request = |email: &str, tenant: &str| pb::CreateInvitationRequest {
        email: email.into(),
        tenant_id: tenant.into(),
        role: "client_user".into(),
        request_id: RID.into(),
        ..Default::default()
    };
    let first = env.client().create_invitation(auth(&owner, request("ola@a.example", TENANT_A))).await.unwrap();
    let first_id = first.into_inner().invitation.unwrap().invitation_id;
    let again = env.client().create_invitation(auth(&owner, request("ola@a.example", TENANT_A))).await.unwrap();
    assert_eq!(again.into_inner().invitation.unwrap().invitation_id, first_id);
    let status = env
        .client()
        .create_invitation(auth(&bea_session, request("pip@b.example", TENANT_B)))
        .await
        .expect_err("a reused request_id");
    assert_eq!(status.code(), Code::AlreadyExists, "{status:?}");
    assert!(!status.message().contains("ola"), "{status:?}");
}

/// With an SMTP host configured, mail goes through it and never in clear text: identity greets
/// the server and asks for STARTTLS before sending anything. The stand-in server offers
/// STARTTLS and stops there (it cannot do TLS), so the invitation is made and the failed
/// delivery only logged; the link is still returned to the inviter to share.
#[tokio::test]
async fn smtp_mail_starts_with_starttls() {
    use std::io::{BufRead, BufReader, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port().to_string();
    let heard = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let log = heard.clone();
    std::thread::spawn(move || {
        let (stream, _) = listener.accept().unwrap();
        let mut out = stream.try_clone().unwrap();
        out.write_all(b"220 stand-in ESMTP\r\n").unwrap();
        for line in BufReader::new(stream).lines().map_while(Result::ok) {
            let verb = line.split_whitespace().next().unwrap_or_default().to_uppercase();
            log.lock().unwrap().push(verb.clone());
            match verb.as_str() {
                "EHLO" => out.write_all(b"250-stand-in\r\n250 STARTTLS\r\n").unwrap(),
                "STARTTLS" => {
                    out.write_all(b"220 go ahead\r\n").unwrap();
                    return;
                }
                _ => out.write_all(b"502 not here\r\n").unwrap(),
            }
        }
    });
    let env =
        Env::start_with(&[("TETHER_IDENTITY_SMTP_HOST", "127.0.0.1"), ("TETHER_IDENTITY_SMTP_PORT", port.as_str())])
            .await;
    let owner = env.owner_token().await;
    let created = invite(&env, &owner, "sid@a.example", TENANT_A, "client_user").await;
    assert_eq!(created.invitation_token.len(), 64);
    for _ in 0..100 {
        if heard.lock().unwrap().contains(&"STARTTLS".to_owned()) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let heard = heard.lock().unwrap().clone();
    assert_eq!(heard.first().map(String::as_str), Some("EHLO"), "{heard:?}");
    assert!(heard.contains(&"STARTTLS".to_owned()), "{heard:?}");
    assert!(!heard.iter().any(|v| v == "MAIL" || v == "AUTH"), "nothing sent before TLS: {heard:?}");
    // No file outbox either: SMTP replaces it.
    assert!(std::fs::read_dir(&env.mail_dir).map(|d| d.count() == 0).unwrap_or(true));
}

/// An invitation whose membership has not reached tenancy-svc when the invitee accepts (made a
/// moment ago, or during a tenancy outage, with a slow delivery): the accept waits for the
/// delivery, so the login that follows at once, or the session the accept starts, succeeds
/// instead of LOGIN_FAILED (MEMBERSHIP_PENDING); a delivery waiting out a retry delay is tried
/// again at once. And the accept's token names tenancy's revision of the membership.
#[tokio::test]
async fn a_login_right_after_accepting_succeeds_even_while_the_membership_is_on_its_way() {
    use std::sync::atomic::Ordering;
    // A failed delivery is retried only after 5 s, longer than anyone waits for it.
    let env = Env::start_with(&[
        ("TETHER_IDENTITY_PROVISION_WAIT_MS", "2000"),
        ("TETHER_IDENTITY_RELAY_RETRY_MS", "5000"),
        ("TETHER_IDENTITY_RELAY_MAX_RETRY_MS", "5000"),
    ])
    .await;
    let owner = env.owner_token().await;
    for (i, start_session) in [(0, false), (1, true)] {
        let email = format!("late{i}@a.example");
        // tenancy takes no writes while the invitation is made: the delivery is still pending
        // when CreateInvitation stops waiting for it.
        env.tenancy.failing_writes.store(true, Ordering::SeqCst);
        let created = invite(&env, &owner, &email, TENANT_A, "client_user").await;
        assert!(env.tenancy.membership(&created.invitation.unwrap().user_id).is_empty());
        // tenancy is back, but slow: the relay's next delivery lands a while later.
        env.tenancy.write_delay_ms.store(600, Ordering::SeqCst);
        env.tenancy.failing_writes.store(false, Ordering::SeqCst);
        let accepted = env
            .client()
            .accept_invitation(pb::AcceptInvitationRequest {
                invitation_token: created.invitation_token.clone(),
                password: PASSWORD.into(),
                start_session,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        env.tenancy.write_delay_ms.store(0, Ordering::SeqCst);
        if start_session {
            assert!(
                matches!(accepted.outcome.and_then(|o| o.outcome), Some(pb::login_outcome::Outcome::Session(_))),
                "the accept starts the session it was asked for"
            );
        } else {
            env.login(&email, PASSWORD).await;
        }
        let sources: Vec<i32> =
            accepted.consistency_token.unwrap_or_default().revisions.iter().map(|r| r.source).collect();
        assert!(sources.contains(&(tether_proto::common::v1::RevisionSource::Tenancy as i32)), "{sources:?}");
    }
}
