//! Read-your-writes across the four real services: a new client's first steps, each building
//! on the one before at once, with nothing but the consistency tokens the calls hand back.
//!
//! Each round, as a client would: the MSP owner creates a client (CreateTenant) and its first
//! admin in it (CreateUser, passing the tenant's token); the admin logs in, creates a user
//! (passing every token so far, merged) and changes that user's role in tenancy-svc (passing
//! them again); after each step a Check with the merged tokens must answer as the step implies.
//! Every call must succeed on its first try: no retry, no sleep. Without the tokens keeping
//! their promise the steps fail now and then (PERMISSION_DENIED on a tenant authz has not heard
//! of, DENIED_NO_MEMBERSHIP on a membership it has not applied, NOT_CAUGHT_UP on a login's
//! revision no stream announces), so a thousand rounds in a row are run (about 2 minutes on
//! SQLite on a small machine; `TETHER_TEST_CHAIN_ROUNDS` sets another count).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod stack;

use stack::{as_service, as_user};

use std::time::Instant;

use tether_proto::{
    authz::v1::{CheckRequest, authz_service_client::AuthzServiceClient},
    common::v1::ConsistencyToken,
    identity::v1::{self as idp, identity_service_client::IdentityServiceClient, login_outcome::Outcome},
    tenancy::v1::{self as tnp, tenancy_service_client::TenancyServiceClient},
};
use tether_runtime::events::consistency::merge;
use tether_tests::TestDatabase;
use tonic::transport::Channel;

const PASSWORD: &str = "violet-kestrel-harbour-9";

fn rounds() -> usize {
    std::env::var("TETHER_TEST_CHAIN_ROUNDS").ok().and_then(|v| v.parse().ok()).unwrap_or(1000)
}

async fn login(
    identity: &mut IdentityServiceClient<Channel>,
    email: &str,
    password: &str,
) -> (String, ConsistencyToken) {
    let reply = identity
        .login(idp::LoginRequest { email: email.into(), password: password.into(), ..Default::default() })
        .await
        .unwrap_or_else(|s| panic!("login {email}: {s:?}"))
        .into_inner();
    match reply.outcome.and_then(|o| o.outcome) {
        Some(Outcome::Session(s)) => (s.session_token, reply.consistency_token.unwrap_or_default()),
        other => panic!("login {email}: no session but {other:?}"),
    }
}

/// Every token a client has received so far, merged as the contract allows.
#[derive(Default)]
struct Tokens(Option<ConsistencyToken>);

impl Tokens {
    fn add(&mut self, token: Option<ConsistencyToken>) {
        self.0 = merge([self.0.as_ref(), token.as_ref()]);
    }
    fn get(&self) -> Option<ConsistencyToken> {
        self.0.clone()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_step_of_a_new_clients_first_minutes_sees_the_one_before_on_the_first_try() {
    let db = TestDatabase::fresh().await;
    let services = stack::start_all::<fn() -> std::future::Ready<()>, _>(&db, None).await;
    let channel = |name: &str| services.iter().find(|s| s.name == name).unwrap().channel();
    let mut identity = IdentityServiceClient::new(channel("identity").await);
    let mut tenancy = TenancyServiceClient::new(channel("tenancy").await);
    let mut authz = AuthzServiceClient::new(channel("authz").await);

    // The owner's membership reaches tenancy through identity's relay just after start-up.
    let started = Instant::now();
    let owner = loop {
        let reply = identity
            .login(idp::LoginRequest {
                email: stack::OWNER_EMAIL.into(),
                password: stack::OWNER_PASSWORD.into(),
                ..Default::default()
            })
            .await;
        if let Ok(Some(Outcome::Session(s))) = reply.map(|r| r.into_inner().outcome.and_then(|o| o.outcome)) {
            break s.session_token;
        }
        assert!(started.elapsed().as_secs() < 10, "the owner never became loginable");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };

    let rounds = rounds();
    let started = Instant::now();
    for round in 0..rounds {
        let at = |step: &str| format!("round {round}: {step}");
        let mut tokens = Tokens::default();
        let mut check = async |tokens: &Tokens, user: &str, permission: &str, tenant: &str, step: &str| {
            let reply = authz
                .check(as_service(CheckRequest {
                    subject_user_id: user.into(),
                    permission: permission.into(),
                    tenant_id: tenant.into(),
                    at_least_as_fresh: tokens.get(),
                    ..Default::default()
                }))
                .await
                .unwrap_or_else(|s| panic!("{}: Check {permission}: {s:?}", at(step)))
                .into_inner();
            assert!(reply.allowed, "{}: Check {permission} denied (at {:?})", at(step), reply.evaluated_at);
        };

        // 1. A new client.
        let created = tenancy
            .create_tenant(as_user(
                &owner,
                tnp::CreateTenantRequest { name: format!("Client {round}"), ..Default::default() },
            ))
            .await
            .unwrap_or_else(|s| panic!("{}: {s:?}", at("CreateTenant")))
            .into_inner();
        let client = created.tenant.unwrap().tenant_id;
        tokens.add(created.consistency_token);

        // 2. Its first admin, created at once in it.
        let admin_email = format!("admin{round}@client.example");
        let created = identity
            .create_user(as_user(
                &owner,
                idp::CreateUserRequest {
                    email: admin_email.clone(),
                    display_name: format!("Admin {round}"),
                    password: PASSWORD.into(),
                    tenant_id: client.clone(),
                    role: "client_admin".into(),
                    at_least_as_fresh: tokens.get(),
                    ..Default::default()
                },
            ))
            .await
            .unwrap_or_else(|s| panic!("{}: {s:?}", at("CreateUser (first admin)")))
            .into_inner();
        let admin = created.user.unwrap().user_id;
        tokens.add(created.consistency_token);
        check(&tokens, &admin, "users.manage", &client, "after CreateUser (first admin)").await;

        // 3. The admin logs in.
        let (session, token) = login(&mut identity, &admin_email, PASSWORD).await;
        tokens.add(Some(token));
        check(&tokens, &admin, "users.manage", &client, "after the admin's Login").await;

        // 4. The admin creates a user.
        let created = identity
            .create_user(as_user(
                &session,
                idp::CreateUserRequest {
                    email: format!("user{round}@client.example"),
                    display_name: format!("User {round}"),
                    password: PASSWORD.into(),
                    tenant_id: client.clone(),
                    role: "client_viewer".into(),
                    at_least_as_fresh: tokens.get(),
                    ..Default::default()
                },
            ))
            .await
            .unwrap_or_else(|s| panic!("{}: {s:?}", at("CreateUser (by the admin)")))
            .into_inner();
        let user = created.user.unwrap().user_id;
        tokens.add(created.consistency_token);
        check(&tokens, &user, "assets.view", &client, "after CreateUser (by the admin)").await;

        // 5. And promotes them in tenancy-svc, which asks authz about both of them.
        let changed = tenancy
            .change_membership_role(as_user(
                &session,
                tnp::ChangeMembershipRoleRequest {
                    user_id: user.clone(),
                    tenant_id: client.clone(),
                    role: "client_manager".into(),
                    at_least_as_fresh: tokens.get(),
                },
            ))
            .await
            .unwrap_or_else(|s| panic!("{}: {s:?}", at("ChangeMembershipRole")))
            .into_inner();
        tokens.add(changed.consistency_token);
        check(&tokens, &user, "assets.create", &client, "after ChangeMembershipRole").await;
    }
    println!("{rounds} rounds in {:.1} s", started.elapsed().as_secs_f64());
    for service in services {
        service.stop().await.unwrap();
    }
}
