//! tenancy-svc benchmark, end to end over gRPC against a real database.
//!
//! `cargo bench -p tenancy-svc --bench tenancy` (SQLite), or with
//! `TETHER_TEST_DATABASE_URL=postgres://postgres@127.0.0.1:55432/postgres` (PostgreSQL).
//!
//! 1. With `TENANCY_BENCH_STAFF` MSP staff (default 200): creating one client tenant, shadow
//!    memberships included, `TENANCY_BENCH_CREATES` times (default 200): p50 / p99 (goal p99 < 50 ms).
//! 2. Seeding `TENANCY_BENCH_SEED_TENANTS` tenants (default 1,000; the full figure is 10,000, i.e.
//!    2,000,000 shadow memberships) with `TENANCY_BENCH_CONCURRENCY` concurrent callers (default 4):
//!    total time, tenants/s, shadow rows/s, p99 per create.
//! 3. A client with `TENANCY_BENCH_MEMBERS` direct members (default 1,000): listing its whole
//!    directory (pages of 500), `TENANCY_BENCH_LISTS` times (default 200), as the MSP owner and as
//!    a client administrator: p50 / p99 (goal < 20 ms).
//!
//! The database (PostgreSQL database or SQLite folder) is removed at the end.
//!
//! Authorization and identity are in-process doubles that allow the owner everything, so the
//! figures are tenancy's own cost (gRPC + SQL), not authz-svc's.

// A failed set-up should stop the benchmark loudly.
#![allow(clippy::expect_used)]

use std::{
    collections::HashMap,
    sync::{Arc, OnceLock},
    time::{Duration, Instant},
};

use tenancy_svc::{Deps, PackInfo, RoleCatalog, RoleInfo, UserDirectory, UserInfo};
use tether_proto::{
    common::v1::ErrorReason,
    tenancy::v1::{self as pb, tenancy_service_client::TenancyServiceClient},
};
use tether_runtime::{
    ApiError,
    access::{Authenticator, Authorizer, Principal, RoleGrant, RoleGrantDecision, ServiceToken},
};
use tether_tests::{RunningService, TestDatabase};
use tonic::{Request, transport::Channel};

const TOKEN: &str = "bench-service-token-0123456789abcdef0123456789";

struct AllowAll;

/// The big client of step 3: every client user's home (identity's primary tenant), so its
/// administrator targets and sees its members.
static BIG_CLIENT: OnceLock<String> = OnceLock::new();

fn big_client() -> String {
    BIG_CLIENT.get().cloned().unwrap_or_default()
}

#[tonic::async_trait]
impl Authenticator for AllowAll {
    async fn authenticate(&self, token: &str) -> Result<Principal, ApiError> {
        Ok(Principal {
            user_id: token.to_owned(),
            is_msp_staff: true,
            primary_tenant_id: big_client(),
            session_id: "bench".into(),
            display_name: "Bench".into(),
            email: "bench@example.test".into(),
        })
    }
}

#[tonic::async_trait]
impl Authorizer for AllowAll {
    async fn check(
        &self,
        _: &str,
        _: &str,
        _: &str,
        _: Option<&tether_proto::common::v1::ConsistencyToken>,
    ) -> Result<bool, ApiError> {
        Ok(true)
    }
    async fn check_role_grant(&self, _: &RoleGrant) -> Result<RoleGrantDecision, ApiError> {
        Ok(RoleGrantDecision { allowed: true, denial_reason: ErrorReason::Unspecified, summary: String::new() })
    }
}

#[tonic::async_trait]
impl UserDirectory for AllowAll {
    async fn users(&self, ids: &[String]) -> Result<HashMap<String, UserInfo>, ApiError> {
        Ok(ids
            .iter()
            .map(|id| {
                (
                    id.clone(),
                    UserInfo { user_id: id.clone(), active: true, is_msp_staff: false, home_tenant_id: big_client() },
                )
            })
            .collect())
    }
}

#[tonic::async_trait]
impl RoleCatalog for AllowAll {
    async fn active_pack(&self) -> Result<PackInfo, ApiError> {
        Ok(PackInfo {
            owner_role: "msp_owner".into(),
            former_owner_role: "msp_admin".into(),
            admin_roles: vec!["msp_admin".into(), "client_admin".into()],
        })
    }
    async fn role(&self, name: &str) -> Result<Option<RoleInfo>, ApiError> {
        Ok(Some(RoleInfo { name: name.into(), assignable: name != "msp_owner", msp_staff_only: false }))
    }
}

fn env(key: &str, default: usize) -> usize {
    std::env::var(key).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn service<T>(message: T) -> Request<T> {
    let mut request = Request::new(message);
    ServiceToken::new(TOKEN).attach("identity", &mut request);
    request
}

fn as_user<T>(user: &str, message: T) -> Request<T> {
    let mut request = Request::new(message);
    request.metadata_mut().insert("authorization", format!("Bearer {user}").parse().expect("header"));
    request
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let index = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[index]
}

/// Latency percentiles, and the process's CPU time per operation since `cpu_before` (server and
/// client both run here): on a machine shared with other work, wall time swings with the load
/// while CPU time per operation mostly does not.
fn report(label: &str, mut samples: Vec<Duration>, cpu_before: Option<Duration>) {
    samples.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let cpu = match (cpu_before, cpu_time()) {
        (Some(before), Some(now)) if !samples.is_empty() => {
            format!(" cpu/op={:.2} ms", ms(now.saturating_sub(before)) / samples.len() as f64)
        }
        _ => String::new(),
    };
    println!(
        "{label}: n={} p50={:.2} ms p95={:.2} ms p99={:.2} ms max={:.2} ms{cpu}",
        samples.len(),
        ms(percentile(&samples, 0.50)),
        ms(percentile(&samples, 0.95)),
        ms(percentile(&samples, 0.99)),
        ms(samples.last().copied().unwrap_or_default()),
    );
}

/// User + system CPU time of this process, from /proc on Linux (`None` elsewhere).
fn cpu_time() -> Option<Duration> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the command name (which may hold spaces) start at the third: utime is the
    // 14th, stime the 15th, in clock ticks of 1/100 s (USER_HZ on Linux).
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let ticks = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    Some(Duration::from_millis(ticks * 10))
}

async fn create(client: &mut TenancyServiceClient<Channel>, owner: &str, name: String) -> Duration {
    let started = Instant::now();
    client
        .create_tenant(as_user(owner, pb::CreateTenantRequest { name, ..Default::default() }))
        .await
        .expect("create tenant");
    started.elapsed()
}

#[tokio::main]
async fn main() {
    let staff = env("TENANCY_BENCH_STAFF", 200);
    let creates = env("TENANCY_BENCH_CREATES", 200);
    let seed = env("TENANCY_BENCH_SEED_TENANTS", 1_000);
    let concurrency = env("TENANCY_BENCH_CONCURRENCY", 4).max(1);
    let members = env("TENANCY_BENCH_MEMBERS", 1_000);
    let lists = env("TENANCY_BENCH_LISTS", 200);

    let db = TestDatabase::fresh().await;
    println!("backend: {:?}", db.backend);
    let config = tenancy_svc::Config::load(&db.config().with("TETHER_SERVICE_TOKEN", TOKEN)).expect("config");
    let doubles = Arc::new(AllowAll);
    let deps = Deps {
        authenticator: doubles.clone(),
        authorizer: doubles.clone(),
        users: doubles.clone(),
        roles: doubles,
        audit: tether_tests::AcceptingAuditSink::new(),
        service_token: ServiceToken::new(TOKEN),
    };
    let host = tenancy_svc::prepare_with(config, deps).await.expect("prepare");
    let running = RunningService::spawn("tenancy", host).await;
    let mut client = TenancyServiceClient::new(running.channel().await);

    // The owner (bootstrap) and the rest of the staff, as identity's relay would add them.
    let owner = uuid::Uuid::new_v4().to_string();
    client
        .transfer_ownership(service(pb::TransferOwnershipRequest { new_owner_user_id: owner.clone() }))
        .await
        .expect("bootstrap owner");
    let admin_id = client
        .get_admin_tenancy(service(pb::GetAdminTenancyRequest {}))
        .await
        .expect("admin tenancy")
        .into_inner()
        .tenant
        .expect("tenant")
        .tenant_id;
    for _ in 1..staff {
        client
            .add_membership(service(pb::AddMembershipRequest {
                user_id: uuid::Uuid::new_v4().to_string(),
                tenant_id: admin_id.clone(),
                role: "msp_technician".into(),
                make_default: false,
                ..Default::default()
            }))
            .await
            .expect("add staff");
    }
    println!("MSP staff: {staff}");

    // 1. One client tenant at a time.
    let cpu = cpu_time();
    let mut samples = Vec::with_capacity(creates);
    for i in 0..creates {
        samples.push(create(&mut client, &owner, format!("Single {i:06}")).await);
    }
    report(&format!("create client tenant ({staff} shadow memberships each)"), samples, cpu);

    // 2. Seeding, end to end.
    let cpu = cpu_time();
    let started = Instant::now();
    let per_task = seed.div_ceil(concurrency);
    let mut tasks = Vec::new();
    for t in 0..concurrency {
        let mut client = client.clone();
        let owner = owner.clone();
        let count = per_task.min(seed.saturating_sub(t * per_task));
        tasks.push(tokio::spawn(async move {
            let mut samples = Vec::with_capacity(count);
            for i in 0..count {
                samples.push(create(&mut client, &owner, format!("Seed {t:02}-{i:06}")).await);
            }
            samples
        }));
    }
    let mut seed_samples = Vec::new();
    for task in tasks {
        seed_samples.extend(task.await.expect("seed task"));
    }
    let elapsed = started.elapsed();
    let seeded = seed_samples.len();
    println!(
        "seed {seeded} tenants ({} shadow memberships) with {concurrency} callers: {:.1} s, {:.0} tenants/s, {:.0} shadow rows/s",
        seeded * staff,
        elapsed.as_secs_f64(),
        seeded as f64 / elapsed.as_secs_f64(),
        (seeded * staff) as f64 / elapsed.as_secs_f64(),
    );
    report("  create during seeding", seed_samples, cpu);
    let cpu = cpu_time();
    let mut after = Vec::with_capacity(50);
    for i in 0..50 {
        after.push(create(&mut client, &owner, format!("After {i:06}")).await);
    }
    report(&format!("create client tenant after seeding ({} tenants exist)", creates + seeded + 1), after, cpu);

    // 3. A 1,000-member directory.
    let tenant = client
        .create_tenant(as_user(&owner, pb::CreateTenantRequest { name: "Big Client".into(), ..Default::default() }))
        .await
        .expect("big client")
        .into_inner()
        .tenant
        .expect("tenant")
        .tenant_id;
    BIG_CLIENT.set(tenant.clone()).ok();
    let mut first_member = None;
    for i in 0..members {
        let user_id = uuid::Uuid::new_v4().to_string();
        first_member.get_or_insert_with(|| user_id.clone());
        client
            .add_membership(service(pb::AddMembershipRequest {
                user_id,
                tenant_id: tenant.clone(),
                role: if i < 2 { "client_admin".into() } else { "client_user".into() },
                make_default: false,
                ..Default::default()
            }))
            .await
            .expect("add member");
    }
    // The directory is listed in the steady state a deployment runs in: planner statistics
    // current, as autovacuum's analyse would leave them a minute after bulk inserts (without
    // them PostgreSQL sorts a hash join instead of walking the covering index).
    {
        use sqlx::Executor;
        let pool = db.inspect("tenancy").await;
        for table in ["memberships", "default_tenants"] {
            pool.execute(sqlx::AssertSqlSafe(format!("ANALYZE {table}"))).await.expect("analyse");
        }
        pool.close().await;
        println!("planner statistics refreshed (ANALYZE) before listing");
    }
    // MSP staff (the owner) see everyone; a client administrator's pages are also checked for
    // MSP staff to hide (in the query) and for members at home elsewhere (one identity lookup
    // per page, here an in-process double).
    let mut callers = vec![("as MSP owner", owner.clone())];
    callers.extend(first_member.map(|m| ("as client admin", m)));
    for (who, caller) in &callers {
        let cpu = cpu_time();
        let mut samples = Vec::with_capacity(lists);
        for _ in 0..lists {
            let started = Instant::now();
            assert_eq!(list_directory(&mut client, caller, &tenant).await, members, "direct members only");
            samples.push(started.elapsed());
        }
        report(&format!("list a {members}-member directory (pages of 500) {who}"), samples, cpu);
    }
    running.stop().await.expect("stop");
    drop_database(&db).await;
}

/// Every page of a tenant's directory, as `caller`; returns how many members it listed.
async fn list_directory(client: &mut TenancyServiceClient<Channel>, caller: &str, tenant: &str) -> usize {
    let mut token = String::new();
    let mut seen = 0;
    loop {
        let page = client
            .list_tenant_members(as_user(
                caller,
                pb::ListTenantMembersRequest {
                    tenant_id: tenant.to_owned(),
                    page_size: 500,
                    page_token: token.clone(),
                    ..Default::default()
                },
            ))
            .await
            .expect("list members")
            .into_inner();
        seen += page.memberships.len();
        if page.next_page_token.is_empty() {
            return seen;
        }
        token = page.next_page_token;
    }
}

/// The benchmark's database goes when it is done: the PostgreSQL database (forcing out any
/// connection the stopped service's pool still holds), or the SQLite folder.
async fn drop_database(db: &TestDatabase) {
    use sqlx::Executor;
    if let Some(dir) = &db.data_dir {
        std::fs::remove_dir_all(dir).expect("remove the SQLite folder");
    }
    let (Some(url), Ok(admin_url)) = (&db.url, std::env::var(tether_tests::TEST_DATABASE_URL)) else { return };
    let name = url.rsplit('/').next().unwrap_or_default();
    assert!(name.starts_with("tether_") && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_'));
    let admin = sqlx::any::AnyPoolOptions::new().max_connections(1).connect(&admin_url).await.expect("connect");
    admin
        .execute(sqlx::AssertSqlSafe(format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")))
        .await
        .expect("drop the benchmark database");
    admin.close().await;
    println!("dropped database {name}");
}
