//! audit-svc benchmark: sustained ingestion through gRPC, then the reads of the audit page on
//! the trail it filled, in one run; a table of the figures (and the settings) at the end.
//!
//! 1. Ingestion: `BENCH_SENDERS` concurrent senders (default 4, each on its own connection, as
//!    the services' outbox relays are) call `Ingest` with the service token, batches of 500
//!    valid events, until the store holds `BENCH_EVENTS` (default 5,000,000): events/s over the
//!    whole fill and over its first and last tenth (goal >= 20,000 events/s). Then as many
//!    senders ingest `BENCH_EVENTS / 20` (at most 100,000) more in batches of 50, for
//!    comparison (spread over the same 30 days).
//! 2. The events are realistic: `occurred_at` spread over the last 30 days in order, with more
//!    in working hours and fewer at weekends; 200 actions (`user.update`, `tenant.create`, …),
//!    50 tenants and 1,000 actors with names and emails, each drawn from a Zipf distribution
//!    (a few are very common, most are rare); 6 % system actors, 4 % platform-level events
//!    (no tenant), 95 % successes; before / after JSON of about 200 bytes each.
//! 3. Then, as MSP staff reading everything, `BENCH_QUERIES` calls (default 200, each kind
//!    stopping after 60 s) one after another, p50 / p99:
//!    SearchEvents over the last 24 hours with an action (drawn as the events were) and a page
//!    of 50 (goal p99 < 100 ms); SearchEvents with part of an actor's email (actor drawn
//!    uniformly) as free text and no other filter (same goal); GetStats over the last 24 hours
//!    (goal p99 < 50 ms). Then ExportEvents (CSV) of one tenant over 7 days, for the tenants
//!    ranked 1, 5 and 20 by volume: rows/s and MB/s; and VerifyIntegrity of the first
//!    `BENCH_VERIFY` records (default 1,000,000): records/s.
//!
//! `cargo bench -p audit-svc --bench audit` (SQLite in a temp dir; set
//! `TETHER_TEST_DATABASE_URL=postgres://…` for PostgreSQL, where the table is then
//! `VACUUM ANALYZE`d once, as autovacuum would have done to a trail filled over 30 days). The
//! database is removed at the end unless `BENCH_KEEP=1` keeps it for EXPLAIN.

// Test code: a failed set-up or assertion should panic.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{
    collections::BTreeSet,
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use base64::Engine;
use sqlx::Executor;
use tether_proto::{
    audit::v1::{self as pb, audit_service_client::AuditServiceClient},
    common::v1::{Actor, ActorKind, AuditEvent, AuditOutcome, ConsistencyToken, ErrorReason},
};
use tether_runtime::{
    ApiError,
    access::{Authenticator, Authorizer, Principal, RoleGrant, RoleGrantDecision},
    db::now_micros,
};
use tether_tests::{Backend, RunningService, SERVICE_TOKEN, TestDatabase};
use tokio_stream::StreamExt;

const STAFF_TOKEN: &str = "bench-msp-staff-session";
const ADMIN_TENANCY: &str = "00000000-0000-4000-8000-000000000001";
const HOUR: i64 = 3600 * 1_000_000;
const DAY: i64 = 24 * HOUR;
const FILL_BATCH: usize = 500;
const SMALL_BATCH: usize = 50;
const QUERY_TIME_CAP: Duration = Duration::from_secs(60);

// --- The callers: one MSP staff member with audit.view in the admin tenancy. -----------------

struct Staff;

#[tonic::async_trait]
impl Authenticator for Staff {
    async fn authenticate(&self, token: &str) -> Result<Principal, ApiError> {
        if token != STAFF_TOKEN {
            return Err(ApiError::new(ErrorReason::Unauthenticated, "unknown session"));
        }
        Ok(Principal {
            user_id: "6f1c2a9e-0d3b-4c5e-8f7a-1b2c3d4e5f60".into(),
            is_msp_staff: true,
            // As identity-svc says it: empty for MSP staff, whose home is the admin tenancy.
            primary_tenant_id: String::new(),
            session_id: "0b7c9a51-3e2d-4f6a-9b8c-7d6e5f4a3b2c".into(),
            display_name: "Bench Auditor".into(),
            email: "auditor@msp.example".into(),
        })
    }
}

#[tonic::async_trait]
impl Authorizer for Staff {
    async fn check(&self, _: &str, permission: &str, _: &str, _: Option<&ConsistencyToken>) -> Result<bool, ApiError> {
        Ok(permission == "audit.view")
    }
    async fn check_role_grant(&self, _: &RoleGrant) -> Result<RoleGrantDecision, ApiError> {
        Err(ApiError::new(ErrorReason::NotImplemented, "not used by audit"))
    }
}

#[tonic::async_trait]
impl audit_svc::deps::Directory for Staff {
    async fn tenants_with(&self, _: &str, _: &str) -> Result<BTreeSet<String>, ApiError> {
        Ok(BTreeSet::from([ADMIN_TENANCY.to_owned()]))
    }
    async fn subtree(&self, tenant_id: &str) -> Result<BTreeSet<String>, ApiError> {
        Ok(BTreeSet::from([tenant_id.to_owned()]))
    }
    async fn admin_tenancy(&self) -> Result<String, ApiError> {
        Ok(ADMIN_TENANCY.to_owned())
    }
}

fn as_service<T>(message: T) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.metadata_mut().insert("x-tether-service-token", SERVICE_TOKEN.parse().unwrap());
    request.metadata_mut().insert("x-tether-service", "identity".parse().unwrap());
    request
}

fn as_staff<T>(message: T) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.metadata_mut().insert("authorization", format!("Bearer {STAFF_TOKEN}").parse().unwrap());
    request
}

// --- Realistic events. ------------------------------------------------------------------------

/// SplitMix64: small, fast, and reproducible from a seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn uuid(&mut self) -> String {
        let bytes = (u128::from(self.next()) << 64 | u128::from(self.next())).to_be_bytes();
        uuid::Builder::from_random_bytes(bytes).into_uuid().to_string()
    }
    fn hex(&mut self, digits: usize) -> String {
        let mut s = String::with_capacity(digits);
        while s.len() < digits {
            s.push_str(&format!("{:016x}", self.next()));
        }
        s.truncate(digits);
        s
    }
}

/// Ranks 0..n drawn with weight 1 / (rank + 1)^s.
struct Zipf(Vec<f64>);

impl Zipf {
    fn new(n: usize, s: f64) -> Self {
        let mut total = 0.0;
        let mut cdf: Vec<f64> = (0..n)
            .map(|r| {
                total += 1.0 / ((r + 1) as f64).powf(s);
                total
            })
            .collect();
        cdf.iter_mut().for_each(|c| *c /= total);
        Self(cdf)
    }
    fn draw(&self, rng: &mut Rng) -> usize {
        let u = rng.unit();
        self.0.partition_point(|&c| c < u).min(self.0.len() - 1)
    }
}

const RESOURCES: [(&str, &str); 25] = [
    ("user", "identity-svc"),
    ("session", "identity-svc"),
    ("invitation", "identity-svc"),
    ("password", "identity-svc"),
    ("two_factor", "identity-svc"),
    ("api_key", "identity-svc"),
    ("lockout", "identity-svc"),
    ("email", "identity-svc"),
    ("tenant", "tenancy-svc"),
    ("department", "tenancy-svc"),
    ("membership", "tenancy-svc"),
    ("assignment", "tenancy-svc"),
    ("ownership", "tenancy-svc"),
    ("shadow_membership", "tenancy-svc"),
    ("branding", "tenancy-svc"),
    ("contract", "tenancy-svc"),
    ("role", "authz-svc"),
    ("role_pack", "authz-svc"),
    ("override", "authz-svc"),
    ("grant", "authz-svc"),
    ("resource", "authz-svc"),
    ("hierarchy", "authz-svc"),
    ("policy", "authz-svc"),
    ("audit_trail", "audit-svc"),
    ("checkpoint", "audit-svc"),
];
const VERBS: [&str; 8] = ["update", "read", "create", "login", "delete", "grant", "revoke", "export"];
const FIRST: [&str; 40] = [
    "anna", "ben", "carla", "david", "elena", "farid", "grace", "hiro", "ines", "jonas", "kira", "liam", "maya",
    "noah", "olga", "pablo", "quinn", "rosa", "sami", "tara", "umar", "vera", "wei", "xenia", "yusuf", "zoe", "mitch",
    "priya", "lars", "amara", "bruno", "chloe", "dmitri", "esme", "felix", "gita", "hugo", "isla", "jamal", "keiko",
];
const LAST: [&str; 25] = [
    "jones", "kowalski", "nakamura", "okafor", "schmidt", "garcia", "haddad", "larsen", "moreau", "novak", "patel",
    "rossi", "silva", "tanaka", "varga", "walsh", "yilmaz", "zhang", "andersen", "brennan", "costa", "dubois",
    "eriksen", "fischer", "gupta",
];
const AGENTS: [&str; 4] = [
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 Chrome/131.0 Safari/537.36",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_6) AppleWebKit/605.1.15 Version/18.1 Safari/605.1.15",
    "tether-cli/1.4.2",
    "Mozilla/5.0 (X11; Linux x86_64; rv:133.0) Gecko/20100101 Firefox/133.0",
];

struct Person {
    user_id: String,
    session_id: String,
    name: String,
    email: String,
    msp: bool,
    home: usize,
    ip: String,
}

/// Everything events are drawn from, and the timeline that spreads them over 30 days.
struct World {
    actions: Vec<(String, &'static str, &'static str)>,
    action_draw: Zipf,
    tenants: Vec<String>,
    tenant_draw: Zipf,
    people: Vec<Person>,
    people_draw: Zipf,
    /// Cumulative share of the events by the end of each hour of the 30 days (oldest first).
    hours: Vec<f64>,
    /// Start of the 30 days, unix µs.
    origin: i64,
}

impl World {
    fn new(now: i64) -> Self {
        let mut rng = Rng(0x7e7e_0001);
        // 200 actions; shuffled so the most common ones are not all of one resource.
        let mut actions: Vec<_> = RESOURCES
            .iter()
            .flat_map(|&(resource, source)| {
                VERBS.iter().map(move |verb| (format!("{resource}.{verb}"), resource, source))
            })
            .collect();
        for i in (1..actions.len()).rev() {
            actions.swap(i, rng.below(i + 1));
        }
        let tenants: Vec<String> = (0..50).map(|_| rng.uuid()).collect();
        let tenant_draw = Zipf::new(50, 0.9);
        let people: Vec<Person> = (0..1000)
            .map(|i| {
                let (first, last) = (FIRST[i % FIRST.len()], LAST[(i / FIRST.len()) % LAST.len()]);
                let msp = i % 20 == 7;
                let home = tenant_draw.draw(&mut rng);
                let domain = if msp { "msp.example".to_owned() } else { format!("client{home:02}.example") };
                Person {
                    user_id: rng.uuid(),
                    session_id: rng.uuid(),
                    name: format!("{} {}", capitalised(first), capitalised(last)),
                    email: format!("{first}.{last}@{domain}"),
                    msp,
                    home,
                    ip: format!("10.{}.{}.{}", rng.below(256), rng.below(256), 1 + rng.below(254)),
                }
            })
            .collect();
        let origin = now - 30 * DAY;
        let mut total = 0.0;
        let mut hours: Vec<f64> = (0..30 * 24)
            .map(|h| {
                let t = origin + h as i64 * HOUR;
                let hour_of_day = (t / HOUR) % 24;
                let weekday = ((t / DAY) + 3) % 7; // 1970-01-01 was a Thursday: 0 is Monday.
                let daily = match hour_of_day {
                    8..=17 => 1.0,
                    6 | 7 | 18..=21 => 0.35,
                    _ => 0.08,
                };
                total += if weekday >= 5 { daily * 0.2 } else { daily };
                total
            })
            .collect();
        hours.iter_mut().for_each(|c| *c /= total);
        Self {
            actions,
            action_draw: Zipf::new(200, 1.1),
            tenants,
            tenant_draw,
            people,
            people_draw: Zipf::new(1000, 1.0),
            hours,
            origin,
        }
    }

    /// When event `i` of `n` occurred: in order over the 30 days, dense in working hours.
    fn occurred_at(&self, i: usize, n: usize) -> i64 {
        let u = (i as f64 + 0.5) / n as f64;
        let h = self.hours.partition_point(|&c| c < u).min(self.hours.len() - 1);
        let before = if h == 0 { 0.0 } else { self.hours[h - 1] };
        let within = ((u - before) / (self.hours[h] - before)).clamp(0.0, 1.0);
        self.origin + h as i64 * HOUR + (within * HOUR as f64) as i64
    }

    /// The tenants ranked by how many events they get (rank 0: the most).
    fn tenant_by_rank(&self, rank: usize) -> &str {
        &self.tenants[rank]
    }

    fn event(&self, rng: &mut Rng, occurred_at: i64) -> AuditEvent {
        let (action, resource_type, source) = &self.actions[self.action_draw.draw(rng)];
        let roll = rng.unit();
        let (actor, tenant_id, ip) = if roll < 0.06 {
            let actor =
                Actor { kind: ActorKind::System as i32, system_name: format!("{source}/relay"), ..Default::default() };
            (actor, self.tenants[self.tenant_draw.draw(rng)].clone(), String::new())
        } else {
            let p = &self.people[self.people_draw.draw(rng)];
            let actor = Actor {
                kind: ActorKind::User as i32,
                user_id: p.user_id.clone(),
                display_name: p.name.clone(),
                email: p.email.clone(),
                is_msp_staff: p.msp,
                session_id: p.session_id.clone(),
                ..Default::default()
            };
            let tenant = if p.msp { self.tenant_draw.draw(rng) } else { p.home };
            (actor, self.tenants[tenant].clone(), p.ip.clone())
        };
        let tenant_id = if rng.unit() < 0.04 { String::new() } else { tenant_id };
        let outcome = match rng.unit() {
            u if u < 0.95 => AuditOutcome::Success,
            u if u < 0.98 => AuditOutcome::Failure,
            _ => AuditOutcome::Denied,
        };
        let reason = match outcome {
            AuditOutcome::Failure => "VALIDATION_FAILED",
            AuditOutcome::Denied => "PERMISSION_DENIED",
            _ => "",
        };
        let state = |rng: &mut Rng, role: &str| {
            format!(
                r#"{{"id":"{}","display_name":"{} {}","status":"active","role":"{role}","mfa_enabled":{},"locale":"en-GB","department_id":"{}","version":{}}}"#,
                rng.uuid(),
                capitalised(FIRST[rng.below(FIRST.len())]),
                capitalised(LAST[rng.below(LAST.len())]),
                rng.below(2) == 1,
                rng.uuid(),
                rng.below(100),
            )
        };
        AuditEvent {
            // As the producers' outbox names them: UUIDv7, in time order.
            event_id: uuid::Uuid::now_v7().to_string(),
            occurred_at: Some(tether_runtime::db::timestamp(occurred_at)),
            source_service: (*source).to_owned(),
            actor: Some(actor),
            action: action.clone(),
            resource_type: (*resource_type).to_owned(),
            resource_id: rng.uuid(),
            tenant_id,
            client_ip: ip,
            user_agent: AGENTS[rng.below(AGENTS.len())].to_owned(),
            outcome: outcome as i32,
            reason: reason.to_owned(),
            trace_id: rng.hex(32),
            span_id: rng.hex(16),
            before_json: state(rng, "technician"),
            after_json: state(rng, "tenant_admin"),
            metadata_json: format!(r#"{{"request_id":"{}"}}"#, rng.hex(16)),
        }
    }
}

fn capitalised(s: &str) -> String {
    let mut c = s.chars();
    c.next().map(|f| f.to_uppercase().chain(c).collect()).unwrap_or_default()
}

// --- Measuring. -------------------------------------------------------------------------------

fn env_or(key: &str, default: usize) -> usize {
    std::env::var(key).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|l| l.split_whitespace().next().map(str::to_owned))
        .unwrap_or_else(|| "?".into())
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1e3)
}

/// How an ingestion run went: its length, and when each tenth of it was stored.
struct Ingested {
    events: usize,
    elapsed: Duration,
    tenths: Vec<Duration>,
}

impl Ingested {
    fn rate(&self) -> f64 {
        self.events as f64 / self.elapsed.as_secs_f64()
    }
    /// Events/s between two tenths (0..=10).
    fn rate_between(&self, from: usize, to: usize) -> f64 {
        let at = |t: usize| if t == 0 { Duration::ZERO } else { self.tenths[t - 1] };
        (self.events as f64 * (to - from) as f64 / 10.0) / (at(to) - at(from)).as_secs_f64()
    }
}

/// `senders` concurrent senders, each on its own connection, ingest `total` events in batches of
/// `batch`; event `first + i` occurred at `when(first + i)`.
async fn ingest(
    service: &RunningService,
    world: &Arc<World>,
    senders: usize,
    total: usize,
    batch: usize,
    first: usize,
    when: Arc<dyn Fn(usize) -> i64 + Send + Sync>,
) -> Ingested {
    let next = Arc::new(AtomicUsize::new(0));
    let done = Arc::new(AtomicUsize::new(0));
    let tenths = Arc::new(Mutex::new(vec![Duration::ZERO; 10]));
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..senders {
        let mut client = AuditServiceClient::new(service.channel().await);
        let (world, next, done, tenths, when) =
            (world.clone(), next.clone(), done.clone(), tenths.clone(), when.clone());
        tasks.push(tokio::spawn(async move {
            loop {
                let b = next.fetch_add(1, Ordering::SeqCst);
                let from = b * batch;
                if from >= total {
                    return;
                }
                let to = (from + batch).min(total);
                let mut rng = Rng(0xa0d1_7000 ^ (first + from) as u64);
                let events: Vec<_> = (from..to).map(|i| world.event(&mut rng, when(first + i))).collect();
                let reply = client.ingest(as_service(pb::IngestRequest { events })).await.expect("ingest").into_inner();
                assert!(reply.rejected.is_empty(), "rejected: {:?}", reply.rejected.first());
                assert_eq!(reply.accepted as usize, to - from, "every event is new");
                let before = done.fetch_add(to - from, Ordering::SeqCst);
                let after = before + to - from;
                if before * 10 / total != after * 10 / total {
                    let tenth = after * 10 / total;
                    let elapsed = start.elapsed();
                    tenths.lock().unwrap()[tenth - 1] = elapsed;
                    if batch == FILL_BATCH {
                        println!(
                            "  {after} events stored in {:.0} s ({:.0} events/s so far; load {})",
                            elapsed.as_secs_f64(),
                            after as f64 / elapsed.as_secs_f64(),
                            load_average()
                        );
                    }
                }
            }
        }));
    }
    for t in tasks {
        t.await.expect("sender");
    }
    let elapsed = start.elapsed();
    let tenths = tenths.lock().unwrap().clone();
    Ingested { events: total, elapsed, tenths }
}

/// Calls `call` up to `n` times (or for [`QUERY_TIME_CAP`]), one after another, after two
/// unmeasured warm-up calls; every latency, sorted, and the last call's figure.
async fn measure<F, Fut>(n: usize, mut call: F) -> (Vec<Duration>, i64)
where
    F: FnMut(usize) -> Fut,
    Fut: std::future::Future<Output = i64>,
{
    call(usize::MAX).await;
    call(usize::MAX - 1).await;
    let began = Instant::now();
    let (mut out, mut figure) = (Vec::with_capacity(n), 0);
    for i in 0..n {
        let start = Instant::now();
        figure = call(i).await;
        out.push(start.elapsed());
        if began.elapsed() > QUERY_TIME_CAP {
            break;
        }
    }
    out.sort();
    (out, figure)
}

struct Table(Vec<[String; 4]>);

impl Table {
    fn row(&mut self, what: impl Into<String>, figure: impl Into<String>, goal: &str, met: Option<bool>) {
        let verdict = match met {
            Some(true) => "met",
            Some(false) => "MISSED",
            None => "",
        };
        self.0.push([what.into(), figure.into(), goal.to_owned(), verdict.to_owned()]);
    }

    fn print(&self) {
        let head = ["measurement", "figure", "goal", ""].map(str::to_owned);
        let rows: Vec<&[String; 4]> = std::iter::once(&head).chain(&self.0).collect();
        let widths: Vec<usize> = (0..4).map(|c| rows.iter().map(|r| r[c].chars().count()).max().unwrap_or(0)).collect();
        for (i, row) in rows.iter().enumerate() {
            let cells: Vec<String> = (0..4).map(|c| format!("{:<w$}", row[c], w = widths[c])).collect();
            println!("| {} |", cells.join(" | "));
            if i == 0 {
                println!("|{}|", widths.iter().map(|w| "-".repeat(w + 2)).collect::<Vec<_>>().join("|"));
            }
        }
    }
}

fn time_range(start: i64, end: i64) -> (Option<prost_types::Timestamp>, Option<prost_types::Timestamp>) {
    (Some(tether_runtime::db::timestamp(start)), Some(tether_runtime::db::timestamp(end)))
}

#[tokio::main]
async fn main() {
    let events = env_or("BENCH_EVENTS", 5_000_000);
    let senders = env_or("BENCH_SENDERS", 4);
    let queries = env_or("BENCH_QUERIES", 200);
    let verify = env_or("BENCH_VERIFY", 1_000_000);
    let small = (events / 20).clamp(1, 100_000);
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);

    let db = TestDatabase::fresh().await;
    let backend = match db.backend {
        Backend::Sqlite => format!("SQLite in {}", db.data_dir.as_ref().unwrap().display()),
        Backend::Postgres => format!("PostgreSQL {}", db.url.as_deref().unwrap_or_default()),
    };
    println!("audit-svc benchmark on {backend}; {cores} cores; load average (1 min) before: {}", load_average());
    let source = db
        .config()
        .with("TETHER_AUDIT_SIGNING_KEY", base64::engine::general_purpose::STANDARD.encode([7u8; 32]))
        // VerifyIntegrity of a million records is one call: give it the time it needs.
        .with("TETHER_AUDIT_REQUEST_TIMEOUT_MS", "600000");
    let config = audit_svc::Config::load(&source).expect("config");
    let staff = Arc::new(Staff);
    let deps = audit_svc::Deps { authenticator: staff.clone(), authorizer: staff.clone(), directory: staff };
    let host = audit_svc::prepare_with(config, deps).await.expect("prepare");
    let service = RunningService::spawn("audit", host).await;
    service.wait_serving().await;
    let client = AuditServiceClient::new(service.channel().await);

    let now = now_micros();
    let world = Arc::new(World::new(now));
    let sample = world.event(&mut Rng(1), now);
    let sample_size = prost::Message::encoded_len(&sample);

    // 1 and 2: the fill is the ingestion measurement, then batches of 50 for comparison.
    println!("filling: {events} events, {senders} senders, batches of {FILL_BATCH}");
    let timeline = world.clone();
    let fill =
        ingest(&service, &world, senders, events, FILL_BATCH, 0, Arc::new(move |i| timeline.occurred_at(i, events)))
            .await;
    println!("filled in {:.1} s; then {small} events in batches of {SMALL_BATCH}", fill.elapsed.as_secs_f64());
    // Spread over the 30 days as the fill was, so the windows read below keep their shape.
    let timeline = world.clone();
    let spread = Arc::new(move |i: usize| timeline.occurred_at(i - events, small));
    let small_run = ingest(&service, &world, senders, small, SMALL_BATCH, events, spread).await;
    let stored = events + small;

    let tables = db.inspect("audit").await;
    let size = match db.backend {
        Backend::Postgres => {
            let started = Instant::now();
            tables.execute("VACUUM ANALYZE audit_events").await.expect("vacuum");
            println!("VACUUM ANALYZE took {:.1} s", started.elapsed().as_secs_f64());
            let bytes: i64 = sqlx::query_scalar("SELECT COALESCE(SUM(pg_total_relation_size(inhrelid)), 0)::bigint FROM pg_inherits WHERE inhparent = 'audit_events'::regclass")
                .fetch_one(&tables)
                .await
                .expect("size");
            bytes as f64
        }
        Backend::Sqlite => {
            let file = db.data_dir.as_ref().unwrap().join("audit.db");
            std::fs::metadata(&file).map(|m| m.len() as f64).unwrap_or_default()
        }
    };
    tables.close().await;

    // 3: the reads, as MSP staff.
    let now = now_micros();
    let (day_start, day_end) = time_range(now - DAY, now);
    println!("searching: 24 hours and an action");
    let by_action = {
        let (client, world) = (client.clone(), world.clone());
        let mut rng = Rng(42);
        measure(queries, move |_| {
            let mut client = client.clone();
            let action = world.actions[world.action_draw.draw(&mut rng)].0.clone();
            let filter = pb::EventFilter { action, start_time: day_start, end_time: day_end, ..Default::default() };
            async move {
                let request =
                    pb::SearchEventsRequest { page_size: 50, page_token: String::new(), filter: Some(filter) };
                client.search_events(as_staff(request)).await.expect("search").into_inner().records.len() as i64
            }
        })
        .await
    };
    println!("searching: free text");
    let free_text = {
        let (client, world) = (client.clone(), world.clone());
        let mut rng = Rng(43);
        measure(queries, move |_| {
            let mut client = client.clone();
            let person = &world.people[rng.below(world.people.len())];
            let query = person.email.split('@').next().unwrap_or_default().to_owned();
            async move {
                let filter = pb::EventFilter { query, ..Default::default() };
                let request =
                    pb::SearchEventsRequest { page_size: 50, page_token: String::new(), filter: Some(filter) };
                client.search_events(as_staff(request)).await.expect("search").into_inner().records.len() as i64
            }
        })
        .await
    };
    println!("stats: 24 hours");
    let stats = {
        let client = client.clone();
        measure(queries, move |_| {
            let mut client = client.clone();
            async move {
                let request = pb::GetStatsRequest::default();
                client.get_stats(as_staff(request)).await.expect("stats").into_inner().event_count
            }
        })
        .await
    };

    println!("exporting: one tenant, 7 days");
    let (week_start, week_end) = time_range(now - 7 * DAY, now);
    let (mut rows, mut bytes, mut export_time) = (0i64, 0i64, Duration::ZERO);
    let mut exports = Vec::new();
    for rank in [0, 4, 19] {
        let filter = pb::EventFilter {
            tenant_id: world.tenant_by_rank(rank).to_owned(),
            start_time: week_start,
            end_time: week_end,
            ..Default::default()
        };
        let request = pb::ExportEventsRequest { filter: Some(filter), format: pb::ExportFormat::Csv as i32 };
        let started = Instant::now();
        let mut stream = client.clone().export_events(as_staff(request)).await.expect("export").into_inner();
        let mut summary = None;
        while let Some(message) = stream.next().await {
            let message = message.expect("export chunk");
            if message.summary.is_some() {
                summary = message.summary;
            }
        }
        let took = started.elapsed();
        let summary = summary.expect("summary");
        println!(
            "  tenant ranked {}: {} rows, {:.1} MB in {:.2} s",
            rank + 1,
            summary.event_count,
            summary.byte_count as f64 / 1e6,
            took.as_secs_f64()
        );
        exports.push((rank + 1, summary.event_count, took));
        rows += summary.event_count;
        bytes += summary.byte_count;
        export_time += took;
    }

    println!("verifying: the first {verify} records");
    let to = verify.min(stored) as u64;
    let started = Instant::now();
    let verdict = client
        .clone()
        .verify_integrity(as_staff(pb::VerifyIntegrityRequest { to_sequence: to, ..Default::default() }))
        .await
        .expect("verify")
        .into_inner();
    let verify_time = started.elapsed();
    assert!(verdict.ok, "the chain holds: {}", verdict.detail);

    // The figures.
    println!();
    println!("settings: {backend}");
    println!(
        "  BENCH_EVENTS={events} BENCH_SENDERS={senders} BENCH_QUERIES={queries} BENCH_VERIFY={verify}; {cores} cores; \
         load average (1 min) at the end: {}",
        load_average()
    );
    println!(
        "  events: ~{sample_size} bytes encoded, 200 actions, 50 tenants, 1000 actors, occurred_at over the last 30 \
         days; store after the fill: {:.2} GB",
        size / 1e9
    );
    println!();
    let mut table = Table(Vec::new());
    let goal_rate = 20_000.0;
    let rate_row = |table: &mut Table, what: String, rate: f64| {
        table.row(what, format!("{rate:.0} events/s"), ">= 20,000 events/s", Some(rate >= goal_rate));
    };
    rate_row(
        &mut table,
        format!("Ingest, batches of {FILL_BATCH}, {senders} senders, the whole fill of {events}"),
        fill.rate(),
    );
    rate_row(&mut table, "  first tenth of the fill".into(), fill.rate_between(0, 1));
    rate_row(&mut table, "  last tenth of the fill".into(), fill.rate_between(9, 10));
    rate_row(
        &mut table,
        format!("Ingest, batches of {SMALL_BATCH}, {senders} senders, {small} more"),
        small_run.rate(),
    );
    let latency = |table: &mut Table, what: &str, (sorted, _): &(Vec<Duration>, i64), goal: Option<Duration>| {
        table.row(
            format!("{what} ({} calls)", sorted.len()),
            format!("p50 {}, p99 {}", ms(percentile(sorted, 0.5)), ms(percentile(sorted, 0.99))),
            &goal.map(|g| format!("p99 < {}", ms(g))).unwrap_or_default(),
            goal.map(|g| percentile(sorted, 0.99) < g),
        );
    };
    latency(&mut table, "SearchEvents, 24 h + action, page of 50", &by_action, Some(Duration::from_millis(100)));
    latency(&mut table, "SearchEvents, free text (part of an email)", &free_text, Some(Duration::from_millis(100)));
    latency(&mut table, "GetStats, last 24 h", &stats, Some(Duration::from_millis(50)));
    table.row("  events in that window", stats.1.to_string(), "", None);
    table.row(
        format!("ExportEvents CSV, 1 tenant x 7 days (ranks 1, 5, 20: {rows} rows)"),
        format!(
            "{:.0} rows/s, {:.1} MB/s",
            rows as f64 / export_time.as_secs_f64(),
            bytes as f64 / 1e6 / export_time.as_secs_f64()
        ),
        "",
        None,
    );
    for (rank, n, took) in &exports {
        table.row(format!("  tenant ranked {rank}"), format!("{n} rows in {:.2} s", took.as_secs_f64()), "", None);
    }
    table.row(
        format!("VerifyIntegrity, sequences 1..{to}"),
        format!(
            "{:.0} records/s ({:.1} s)",
            verdict.events_checked as f64 / verify_time.as_secs_f64(),
            verify_time.as_secs_f64()
        ),
        "",
        None,
    );
    table.print();
    let _ = service.stop().await;
    // A filled trail takes gigabytes: removed unless kept for EXPLAIN.
    if std::env::var("BENCH_KEEP").is_err() {
        drop_store(&db).await;
    } else {
        println!("kept: {backend}");
    }
}

async fn drop_store(db: &TestDatabase) {
    if let Some(dir) = &db.data_dir {
        let _ = std::fs::remove_dir_all(dir);
    }
    if let (Some(url), Ok(admin)) = (&db.url, std::env::var(tether_tests::TEST_DATABASE_URL)) {
        let name = url.rsplit('/').next().unwrap_or_default().to_owned();
        sqlx::any::install_default_drivers();
        if let Ok(pool) = sqlx::any::AnyPoolOptions::new().max_connections(1).connect(&admin).await {
            let _ = sqlx::query(sqlx::AssertSqlSafe(format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")))
                .execute(&pool)
                .await;
        }
    }
}
