//! Propagation end to end: from a deactivation committed in identity-svc to the first denial
//! from authz-svc, through the real services (identity's Watch stream, authz's index), and to
//! its audit event being searchable in audit-svc (identity's outbox, its relay, audit's Ingest);
//! then the relay's throughput: a burst of denials (each an event in authz's outbox) until all are
//! in audit-svc. All four services run in this process on SQLite (or PostgreSQL with
//! `TETHER_TEST_DATABASE_URL`).
//!
//! `cargo bench -p tether-tests --bench propagation` (`-- --rounds N`, default 100;
//! `BENCH_RELAY_EVENTS`, default 20000, for the burst of denials).
//!
//! Each round deactivates a client user through identity, timing from the request (the commit
//! happens inside it; the answer waits out identity's revocation lease), and polls authz's Check
//! while the call runs, without a consistency token, until it denies; then
//! reactivates and waits for the allow. It also measures the read-your-writes path: a Check that
//! carries the deactivation's consistency token, answered as soon as authz has applied it.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../tests/stack/mod.rs"]
mod stack;

use std::time::{Duration, Instant};

use tether_proto::{
    audit::v1::{EventFilter, SearchEventsRequest, audit_service_client::AuditServiceClient},
    authz::v1::{CheckRequest, authz_service_client::AuthzServiceClient},
    identity::v1::{self as idp, identity_service_client::IdentityServiceClient},
    tenancy::v1::{self as tnp, tenancy_service_client::TenancyServiceClient},
};
use tether_tests::TestDatabase;
use tonic::{Request, transport::Channel};

const TOKEN: &str = stack::SERVICE_TOKEN;

fn as_service<T>(message: T) -> Request<T> {
    let mut request = Request::new(message);
    request.metadata_mut().insert("x-tether-service-token", TOKEN.parse().unwrap());
    request.metadata_mut().insert("x-tether-service", "bench".parse().unwrap());
    request
}

async fn authz_allows(authz: &mut AuthzServiceClient<Channel>, request: CheckRequest) -> Result<bool, tonic::Code> {
    authz.check(as_service(request)).await.map(|r| r.into_inner().allowed).map_err(|s| s.code())
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn rounds() -> usize {
    let args: Vec<String> = std::env::args().collect();
    args.iter().position(|a| a == "--rounds").and_then(|i| args.get(i + 1)).and_then(|v| v.parse().ok()).unwrap_or(100)
}

#[tokio::main]
async fn main() {
    let db = TestDatabase::fresh().await;
    // Every denial audited one by one (no per-second budget), for the relay burst below.
    let services = stack::start_all_with(&db, &[("TETHER_AUTHZ_AUDIT_MAX_PER_SECOND", "0")]).await;
    let channel = |name: &str| services.iter().find(|s| s.name == name).unwrap().channel();
    let mut identity = IdentityServiceClient::new(channel("identity").await);
    let mut tenancy = TenancyServiceClient::new(channel("tenancy").await);
    let mut authz = AuthzServiceClient::new(channel("authz").await);
    let audit = AuditServiceClient::new(channel("audit").await);

    // One client with one client user, created as a service would.
    let client = tenancy
        .create_tenant(as_service(tnp::CreateTenantRequest { name: "Acme".into(), ..Default::default() }))
        .await
        .unwrap()
        .into_inner()
        .tenant
        .unwrap();
    let user = identity
        .create_user(as_service(idp::CreateUserRequest {
            email: "viewer@acme.example".into(),
            display_name: "Vera Viewer".into(),
            password: "correct horse battery staple 42".into(),
            tenant_id: client.tenant_id.clone(),
            role: "client_viewer".into(),
            ..Default::default()
        }))
        .await
        .unwrap()
        .into_inner()
        .user
        .unwrap();
    let check = || CheckRequest {
        subject_user_id: user.user_id.clone(),
        permission: "assets.view".into(),
        tenant_id: client.tenant_id.clone(),
        ..Default::default()
    };
    let started = Instant::now();
    while authz_allows(&mut authz, check()).await != Ok(true) {
        assert!(started.elapsed() < Duration::from_secs(30), "the new user never became allowed");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }

    let rounds = rounds();
    let (mut deny, mut allow, mut fresh, mut audited) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for round in 0..rounds {
        // The clock starts with the request, and authz is polled while it runs: the commit
        // happens inside the call, but the answer waits out identity's revocation lease (20 ms),
        // so timing from the answer would measure the lease, not the propagation.
        let started = Instant::now();
        // Searchable in audit-svc: the round's deactivation is the user's (round + 1)th.
        let searchable = tokio::spawn({
            let (audit, user_id) = (audit.clone(), user.user_id.clone());
            async move {
                let filter =
                    EventFilter { action: "user.deactivate".into(), resource_id: user_id, ..Default::default() };
                while audit_count(&audit, filter.clone()).await <= round {
                    assert!(started.elapsed() < Duration::from_secs(10), "the deactivation never reached audit");
                }
                started.elapsed().as_secs_f64() * 1000.0
            }
        });
        let deactivation = tokio::spawn({
            let mut identity = identity.clone();
            let user_id = user.user_id.clone();
            async move {
                identity
                    .deactivate_user(as_service(idp::DeactivateUserRequest { user_id, reason: "bench".into() }))
                    .await
            }
        });
        if round % 2 == 1 {
            // Read-your-writes: the deactivation's token in the check, sent once the call answers.
            let reply = deactivation.await.unwrap().unwrap().into_inner();
            let answered = Instant::now();
            let mut request = check();
            request.at_least_as_fresh = reply.consistency_token.clone();
            assert_eq!(authz_allows(&mut authz, request).await, Ok(false), "a check with the token must deny");
            fresh.push(answered.elapsed().as_secs_f64() * 1000.0);
        } else {
            while authz_allows(&mut authz, check()).await != Ok(false) {
                assert!(started.elapsed() < Duration::from_secs(10), "the deactivation never reached authz");
            }
            deny.push(started.elapsed().as_secs_f64() * 1000.0);
            deactivation.await.unwrap().unwrap();
        }
        audited.push(searchable.await.unwrap());
        let started = Instant::now();
        let reactivation = tokio::spawn({
            let mut identity = identity.clone();
            let user_id = user.user_id.clone();
            async move { identity.reactivate_user(as_service(idp::ReactivateUserRequest { user_id })).await }
        });
        while authz_allows(&mut authz, check()).await != Ok(true) {
            assert!(started.elapsed() < Duration::from_secs(10), "the reactivation never reached authz");
        }
        allow.push(started.elapsed().as_secs_f64() * 1000.0);
        reactivation.await.unwrap().unwrap();
    }
    for (label, samples) in [
        ("deactivation requested -> first denied Check (polling, no token)", &mut deny),
        ("deactivation answered -> Check with its consistency token answered (denied)", &mut fresh),
        ("reactivation requested -> first allowed Check", &mut allow),
        ("deactivation requested -> its audit event searchable in audit-svc", &mut audited),
    ] {
        samples.sort_by(f64::total_cmp);
        println!(
            "{label}: {} samples, p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
            samples.len(),
            percentile(samples, 0.5),
            percentile(samples, 0.99),
            samples.last().copied().unwrap_or_default()
        );
    }

    // The relay's throughput: a burst of denials, each one an audit event in authz's outbox
    // (no per-second budget here), delivered by authz's relay.
    let burst = relay_events().div_ceil(1000) * 1000;
    let denied = "authz.check_denied";
    let before = audit_total(&audit, denied).await;
    let items: Vec<_> = (0..1000)
        .map(|_| tether_proto::authz::v1::BatchCheckItem {
            subject_user_id: user.user_id.clone(),
            permission: "assets.delete".into(),
            tenant_id: client.tenant_id.clone(),
            ..Default::default()
        })
        .collect();
    let started = Instant::now();
    for _ in 0..burst / 1000 {
        let request = tether_proto::authz::v1::BatchCheckRequest { items: items.clone(), ..Default::default() };
        authz.batch_check(as_service(request)).await.unwrap();
    }
    let decided = started.elapsed();
    while audit_total(&audit, denied).await < before + burst {
        assert!(started.elapsed() < Duration::from_secs(600), "the burst never reached audit");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let delivered = started.elapsed();
    println!(
        "relay: {burst} denials decided in {:.0} ms, all in audit-svc after {:.0} ms: {:.0} events/s outbox to trail",
        decided.as_secs_f64() * 1000.0,
        delivered.as_secs_f64() * 1000.0,
        burst as f64 / delivered.as_secs_f64()
    );
    for service in services {
        service.stop().await.unwrap();
    }
}

async fn audit_count(audit: &AuditServiceClient<Channel>, filter: EventFilter) -> usize {
    let request = SearchEventsRequest { page_size: 500, filter: Some(filter), ..Default::default() };
    audit.clone().search_events(as_service(request)).await.map(|r| r.into_inner().records.len()).unwrap_or(0)
}

/// How many events of `action` audit-svc holds from the last day (its stats).
async fn audit_total(audit: &AuditServiceClient<Channel>, action: &str) -> usize {
    let request = tether_proto::audit::v1::GetStatsRequest { top_actions_limit: 100, ..Default::default() };
    let stats = audit.clone().get_stats(as_service(request)).await.unwrap().into_inner();
    stats.action_counts.iter().find(|c| c.action == action).map_or(0, |c| c.count as usize)
}

fn relay_events() -> usize {
    std::env::var("BENCH_RELAY_EVENTS").ok().and_then(|v| v.parse().ok()).unwrap_or(20_000)
}
