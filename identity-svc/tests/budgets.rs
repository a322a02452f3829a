//! A storm of logins (the expensive, unauthenticated calls) cannot take identity from the
//! signed-in users or make it look down: Authenticate and the health check have budgets of
//! their own, and one client address gets only a share of the login budget.

// Test code: a failed set-up or assertion should panic.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::{
    net::{IpAddr, Ipv4Addr},
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use common::*;
use tether_proto::identity::v1::{self as pb, identity_service_client::IdentityServiceClient};
use tonic::{
    Code,
    transport::{Channel, Endpoint},
};
use tonic_health::pb::{HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient};

/// Budgets far below the storm, so it runs over them at once. The same total limit is what an
/// unchanged server would apply to every call.
const SMALL_BUDGETS: &[(&str, &str)] = &[
    ("TETHER_IDENTITY_MAX_CONCURRENT_REQUESTS", "8"),
    ("TETHER_IDENTITY_MAX_CONCURRENT_HOT_REQUESTS", "8"),
    ("TETHER_IDENTITY_MAX_CONCURRENT_EXPENSIVE_REQUESTS", "8"),
    ("TETHER_IDENTITY_MAX_CONCURRENT_EXPENSIVE_REQUESTS_PER_CLIENT", "4"),
    // A correct password is never locked out, but keep the address counter out of the way.
    ("TETHER_IDENTITY_LOCKOUT_IP_FREE_ATTEMPTS", "100000"),
    ("TETHER_IDENTITY_LOCKOUT_IP_LOCK_AFTER", "100000"),
];

/// A channel whose connections come from `local` (another loopback address is another client).
async fn channel_from(env: &Env, local: IpAddr) -> Channel {
    let addr = env.service.as_ref().unwrap().addr;
    Endpoint::from_shared(format!("http://{addr}")).unwrap().local_address(Some(local)).connect().await.unwrap()
}

fn login_request(email: &str) -> pb::LoginRequest {
    pb::LoginRequest { email: email.into(), password: PASSWORD.into(), ..Default::default() }
}

struct Storm {
    running: Arc<AtomicBool>,
    shed: Arc<AtomicUsize>,
    logged_in: Arc<AtomicUsize>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

/// `callers` callers on `channel`, each logging in with the right password again and again,
/// retrying at once when refused, until [`Storm::stop`].
fn storm(channel: &Channel, email: &str, callers: usize) -> Storm {
    let running = Arc::new(AtomicBool::new(true));
    let (shed, logged_in) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let tasks = (0..callers)
        .map(|_| {
            let mut client = IdentityServiceClient::new(channel.clone());
            let (running, shed, logged_in, email) =
                (running.clone(), shed.clone(), logged_in.clone(), email.to_owned());
            tokio::spawn(async move {
                while running.load(Ordering::SeqCst) {
                    match client.login(login_request(&email)).await {
                        Ok(_) => logged_in.fetch_add(1, Ordering::SeqCst),
                        Err(status) => {
                            assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
                            // Back off a little, so the refusals do not take the test's own CPU.
                            tokio::time::sleep(Duration::from_millis(10)).await;
                            shed.fetch_add(1, Ordering::SeqCst)
                        }
                    };
                }
            })
        })
        .collect();
    Storm { running, shed, logged_in, tasks }
}

impl Storm {
    async fn stop(self) -> (usize, usize) {
        self.running.store(false, Ordering::SeqCst);
        for task in self.tasks {
            task.await.expect("a storm caller failed");
        }
        (self.logged_in.load(Ordering::SeqCst), self.shed.load(Ordering::SeqCst))
    }
}

#[tokio::test]
async fn a_login_storm_leaves_authenticate_and_the_health_check_answering() {
    let env = Env::start_with(SMALL_BUDGETS).await;
    let owner = env.owner_token().await;
    env.create(&owner, "lea@a.example", "Lea", TENANT_A, "client_user", false).await;
    let token = env.login("lea@a.example", PASSWORD).await;

    let storm_channel = env.service.as_ref().unwrap().channel().await;
    let storm = storm(&storm_channel, "lea@a.example", 24);
    tokio::time::sleep(Duration::from_millis(200)).await;

    let mut health = HealthClient::new(env.service.as_ref().unwrap().channel().await);
    let mut client = env.client();
    let until = Instant::now() + Duration::from_millis(1_500);
    let mut calls = 0;
    while Instant::now() < until {
        let principal = client
            .authenticate(as_service(pb::AuthenticateRequest { session_token: token.clone() }))
            .await
            .unwrap_or_else(|s| panic!("Authenticate during the storm: {s:?}"))
            .into_inner()
            .principal
            .unwrap();
        assert_eq!(principal.email, "lea@a.example");
        for service in ["", "tether.identity.v1.IdentityService"] {
            let reply = health
                .check(HealthCheckRequest { service: service.into() })
                .await
                .unwrap_or_else(|s| panic!("health {service:?} during the storm: {s:?}"));
            assert_eq!(reply.get_ref().status, ServingStatus::Serving as i32);
        }
        calls += 1;
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let (logged_in, shed) = storm.stop().await;
    assert!(calls > 20, "only {calls} rounds of Authenticate and health in 1.5 s");
    assert!(logged_in > 0, "logins within the budget still succeed");
    assert!(shed > 0, "the storm ran over the login budget");
}

#[tokio::test]
async fn one_address_gets_only_its_share_of_the_login_budget() {
    let env = Env::start_with(SMALL_BUDGETS).await;
    let owner = env.owner_token().await;
    env.create(&owner, "max@a.example", "Max", TENANT_A, "client_user", false).await;

    let flooding = channel_from(&env, IpAddr::V4(Ipv4Addr::new(127, 0, 0, 1))).await;
    let storm = storm(&flooding, "max@a.example", 24);
    tokio::time::sleep(Duration::from_millis(200)).await;

    // Another address still has the rest of the budget: its logins are not refused.
    let mut other = IdentityServiceClient::new(channel_from(&env, IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2))).await);
    for _ in 0..6 {
        let logins: Vec<_> = (0..4)
            .map(|_| {
                let mut client = other.clone();
                tokio::spawn(async move { client.login(login_request("max@a.example")).await })
            })
            .collect();
        for login in logins {
            login.await.unwrap().expect("a login from another address during the storm");
        }
    }
    other.login(login_request("max@a.example")).await.expect("and once more");
    let (_, shed) = storm.stop().await;
    assert!(shed > 0, "the flooding address ran over its share");
}

#[tokio::test]
async fn a_login_over_the_budget_is_refused_at_once_with_a_reason() {
    let env = Env::start_with(SMALL_BUDGETS).await;
    let owner = env.owner_token().await;
    env.create(&owner, "ida@a.example", "Ida", TENANT_A, "client_user", false).await;
    let channel = env.service.as_ref().unwrap().channel().await;
    // Many more logins at once than the address's share: the ones over it are refused, quickly.
    let logins: Vec<_> = (0..40)
        .map(|_| {
            let mut client = IdentityServiceClient::new(channel.clone());
            tokio::spawn(async move {
                let started = Instant::now();
                (client.login(login_request("ida@a.example")).await, started.elapsed())
            })
        })
        .collect();
    let (mut admitted, mut refused) = (0, 0);
    for login in logins {
        match login.await.unwrap() {
            (Ok(_), _) => admitted += 1,
            (Err(status), took) => {
                assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
                assert_eq!(tether_runtime::error::reason_of(&status).as_deref(), Some("OVERLOADED"));
                assert!(took < Duration::from_millis(500), "refused after {took:?}, not at once");
                refused += 1;
            }
        }
    }
    assert!(admitted >= 4, "the share itself is admitted ({admitted})");
    assert!(refused > 0, "40 logins at once did not run over a share of 4");
}
