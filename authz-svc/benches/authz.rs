//! authz-svc decision benchmark (in-process), and a check of Tether's answers against the
//! SpiceDB peer harness's expected outcomes.
//!
//! `cargo bench -p authz-svc --bench authz` builds the full MSP dataset directly into the index
//! (1 MSP, 10,000 clients x 2 departments, 200 MSP staff with a shadow membership in every
//! tenant, 500 technicians x 30 assigned clients, 100,000 client users, 1,000 overrides) and
//! prints build time, memory per membership, single-decision latency p50/p99 (lock included,
//! as a request takes it) and batch throughput.
//!
//! Options (after `--`): `--clients N --staff N --techs N --assign N --users N --overrides N
//! --samples N`, and `--spicedb DIR` (a `data/` folder written by
//! `../shared/peers/spicedb/gen_dataset.py`): loads its relationships into a fresh index and
//! compares every check with `checks_meta.tsv`'s expected outcome.
//!
//! `--grpc PATH` (PATH: a built `grpc-bytes-bench` binary, see `../shared/peers/`) serves the
//! same dataset through the real service instead: stream doubles of identity and tenancy feed a
//! replica (MSP staff reach every tenant through their all-tenants role in the admin tenancy
//! rather than 6 million shadow messages), then the tool drives `Check` and `BatchCheck` (100
//! items) at concurrency 1 and 16, interleaved with the same server's `Health/Check` (the
//! transport floor); finally the propagation delay from a deactivation committed upstream to a
//! denial here is measured.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a benchmark program: setup failures may panic

use std::{
    collections::HashMap,
    sync::RwLock,
    time::{Duration, Instant},
};

use authz_svc::domain::{
    index::{Index, MemberKind, OverrideRecord, OwnData, Subject, TenantKind, TenantState, UserState},
    policy::Policy,
};
use uuid::Uuid;

/// The benchmark's policy: the SpiceDB harness's model (manage = admin + technician, view =
/// manage + viewer, both inherited down the tree) as a role pack.
const POLICY: &str = r#"
[pack]
name = "bench"
owner_role = "msp_owner"
former_owner_role = "msp_admin"
admin_roles = ["msp_owner", "msp_admin", "client_admin"]
permissions = [
  { name = "tenant.view" }, { name = "tenant.manage" },
  { name = "users.view" }, { name = "users.manage" }, { name = "tenants.manage" },
  { name = "permissions.manage" }, { name = "settings.manage" }, { name = "audit.view" },
]
[[roles]]
name = "msp_owner"
scope = "all_tenants"
rank = 100
assignable = false
msp_staff_only = true
permissions = ["*"]
[[roles]]
name = "msp_admin"
scope = "all_tenants"
rank = 90
assignable = true
msp_staff_only = true
permissions = ["*"]
[[roles]]
name = "technician"
scope = "assigned_tenants"
rank = 50
assignable = true
msp_staff_only = true
permissions = ["tenant.view", "tenant.manage"]
[[roles]]
name = "client_admin"
scope = "own_tenant"
rank = 40
assignable = true
msp_staff_only = false
permissions = ["tenant.view", "tenant.manage", "users.view", "users.manage"]
[[roles]]
name = "client_viewer"
scope = "own_tenant"
rank = 10
assignable = true
msp_staff_only = false
permissions = ["tenant.view"]
"#;

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

fn arg(name: &str, default: usize) -> usize {
    let args: Vec<String> = std::env::args().collect();
    args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn arg_str(name: &str) -> Option<String> {
    let args: Vec<String> = std::env::args().collect();
    args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).cloned()
}

fn rss_kib() -> usize {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines().find(|l| l.starts_with("VmRSS:")).and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

fn percentile(sorted: &[u64], p: f64) -> f64 {
    sorted[((sorted.len() as f64 - 1.0) * p) as usize] as f64
}

struct Query {
    user: Uuid,
    permission: &'static str,
    tenant: Uuid,
    expect: Option<bool>,
    category: &'static str,
}

fn main() {
    if let Some(dir) = arg_str("--spicedb") {
        return spicedb(&dir);
    }
    if let Some(tool) = arg_str("--grpc") {
        return grpc::run(&tool);
    }
    let clients = arg("--clients", 10_000);
    let staff = arg("--staff", 200);
    let techs = arg("--techs", 500);
    let assign = arg("--assign", 30).min(clients);
    let users = arg("--users", 100_000);
    let overrides = arg("--overrides", 1_000);
    let samples = arg("--samples", 1_000_000);
    println!(
        "dataset: 1 MSP, {clients} clients x 2 departments, {staff} MSP staff (shadows everywhere), {techs} technicians x {assign} clients, {users} client users, {overrides} overrides"
    );

    let rss0 = rss_kib();
    let started = Instant::now();
    let policy = Policy::parse(POLICY, 0).expect("bench policy");
    let mut index = Index::new(policy);
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let root = Uuid::new_v4();
    index.upsert_tenant(root, None, TenantKind::Admin, TenantState::Active);
    let mut client_ids = Vec::with_capacity(clients);
    let mut depts: Vec<[Uuid; 2]> = Vec::with_capacity(clients);
    let mut all_tenants = vec![root];
    for _ in 0..clients {
        let c = Uuid::new_v4();
        index.upsert_tenant(c, Some(root), TenantKind::Client, TenantState::Active);
        let d = [Uuid::new_v4(), Uuid::new_v4()];
        for x in d {
            index.upsert_tenant(x, Some(c), TenantKind::Department, TenantState::Active);
        }
        client_ids.push(c);
        depts.push(d);
        all_tenants.push(c);
        all_tenants.extend(d);
    }
    let staff_ids: Vec<Uuid> = (0..staff).map(|_| Uuid::new_v4()).collect();
    for &s in &staff_ids {
        index.upsert_user(s, UserState::Active, true);
        index.upsert_membership(s, root, "msp_admin", MemberKind::Direct);
        for &t in &all_tenants[1..] {
            index.upsert_membership(s, t, "msp_admin", MemberKind::Shadow);
        }
    }
    let mut tech_ids = Vec::with_capacity(techs);
    let mut tech_clients: Vec<Vec<usize>> = Vec::with_capacity(techs);
    for _ in 0..techs {
        let t = Uuid::new_v4();
        index.upsert_user(t, UserState::Active, true);
        index.upsert_membership(t, root, "technician", MemberKind::Direct);
        let mut mine = Vec::with_capacity(assign);
        while mine.len() < assign {
            let c = rng.below(clients);
            if !mine.contains(&c) {
                mine.push(c);
            }
        }
        for &c in &mine {
            index.assign(t, client_ids[c]);
            index.upsert_membership(t, client_ids[c], "technician", MemberKind::Assigned);
        }
        tech_ids.push(t);
        tech_clients.push(mine);
    }
    let mut user_ids = Vec::with_capacity(users);
    let mut user_home = Vec::with_capacity(users);
    let mut user_admin = Vec::with_capacity(users);
    for _ in 0..users {
        let u = Uuid::new_v4();
        let c = rng.below(clients);
        let admin = rng.below(5) == 0;
        index.upsert_user(u, UserState::Active, false);
        index.upsert_membership(
            u,
            client_ids[c],
            if admin { "client_admin" } else { "client_viewer" },
            MemberKind::Direct,
        );
        user_ids.push(u);
        user_home.push(c);
        user_admin.push(admin);
    }
    let mut own = OwnData::default();
    for i in 0..overrides {
        let u = rng.below(users);
        own.overrides.push(OverrideRecord {
            user: user_ids[u],
            permission: if i % 2 == 0 { "tenant.manage" } else { "users.view" }.into(),
            tenant: (i % 3 != 0).then(|| client_ids[user_home[u]]),
            deny: i % 2 == 0,
            note: String::new(),
            created_by: String::new(),
            created_at_micros: 0,
        });
    }
    index.load_own(own);
    index.finish();
    index.compact();
    let build = started.elapsed();
    let rss1 = rss_kib();
    let m = index.membership_count();
    println!(
        "index: {} tenants, {} users, {} memberships, built in {:.2} s",
        index.tenant_count(),
        index.user_count(),
        m,
        build.as_secs_f64()
    );
    println!(
        "memory: membership structures {:.1} bytes/membership; whole index (estimate) {:.1} MiB = {:.1} bytes/membership; process RSS grew {:.1} MiB = {:.1} bytes/membership",
        index.membership_bytes() as f64 / m as f64,
        index.approx_bytes() as f64 / 1048576.0,
        index.approx_bytes() as f64 / m as f64,
        (rss1.saturating_sub(rss0)) as f64 / 1024.0,
        (rss1.saturating_sub(rss0) * 1024) as f64 / m as f64
    );

    // Queries mixing the SpiceDB harness's categories (half allowed, half denied), plus MSP
    // staff (the users with ~30,000 memberships each).
    let mut queries = Vec::with_capacity(20_000);
    let other = |rng: &mut Rng, not: &[usize]| loop {
        let c = rng.below(clients);
        if !not.contains(&c) {
            return c;
        }
    };
    for _ in 0..20_000 {
        let q = match rng.below(10) {
            0 | 1 => {
                let t = rng.below(techs);
                let c = tech_clients[t][rng.below(assign)];
                Query {
                    user: tech_ids[t],
                    permission: "tenant.view",
                    tenant: depts[c][rng.below(2)],
                    expect: Some(true),
                    category: "tech_view_assigned_dept",
                }
            }
            2 | 3 => {
                let t = rng.below(techs);
                let c = other(&mut rng, &tech_clients[t]);
                Query {
                    user: tech_ids[t],
                    permission: "tenant.view",
                    tenant: depts[c][rng.below(2)],
                    expect: Some(false),
                    category: "tech_view_unassigned_dept",
                }
            }
            4 | 5 => {
                let u = rng.below(users);
                Query {
                    user: user_ids[u],
                    permission: "tenant.view",
                    tenant: depts[user_home[u]][rng.below(2)],
                    expect: Some(true),
                    category: "user_view_own_dept",
                }
            }
            6 | 7 => {
                let u = rng.below(users);
                let c = other(&mut rng, &[user_home[u]]);
                Query {
                    user: user_ids[u],
                    permission: "tenant.view",
                    tenant: client_ids[c],
                    expect: Some(false),
                    category: "user_view_other_tenant",
                }
            }
            8 => {
                let s = rng.below(staff);
                let c = rng.below(clients);
                Query {
                    user: staff_ids[s],
                    permission: "tenant.manage",
                    tenant: depts[c][rng.below(2)],
                    expect: Some(true),
                    category: "msp_staff_manage_dept",
                }
            }
            _ => {
                let u = rng.below(users);
                // Overrides may turn this one either way.
                Query {
                    user: user_ids[u],
                    permission: "tenant.manage",
                    tenant: client_ids[user_home[u]],
                    expect: None,
                    category: "user_manage_own_tenant",
                }
            }
        };
        queries.push(q);
    }
    let index = RwLock::new(index);
    let mut wrong = 0;
    let mut allowed = 0;
    {
        let idx = index.read().expect("lock");
        for q in &queries {
            let ok = idx.decide_names(&q.user, q.permission, &q.tenant, None).allowed();
            allowed += usize::from(ok);
            if q.expect.is_some_and(|e| e != ok) {
                wrong += 1;
            }
        }
    }
    println!("queries: {} ({} allowed), {} answers differ from the expected outcome", queries.len(), allowed, wrong);

    // Single decisions: take the read lock, resolve ids, decide, as Check does.
    let mut lat = Vec::with_capacity(samples);
    for i in 0..samples {
        let q = &queries[i % queries.len()];
        let t0 = Instant::now();
        let idx = index.read().expect("lock");
        let d = idx.decide_names(&q.user, q.permission, &q.tenant, None);
        drop(idx);
        let dt = t0.elapsed();
        std::hint::black_box(d);
        lat.push(dt.as_nanos() as u64);
    }
    lat.sort_unstable();
    println!(
        "in-process decision latency over {samples} decisions: p50 {:.0} ns, p90 {:.0} ns, p99 {:.0} ns, p99.9 {:.0} ns, max {:.1} us",
        percentile(&lat, 0.50),
        percentile(&lat, 0.90),
        percentile(&lat, 0.99),
        percentile(&lat, 0.999),
        *lat.last().unwrap_or(&0) as f64 / 1000.0
    );
    for cat in ["tech_view_unassigned_dept", "msp_staff_manage_dept", "user_view_other_tenant"] {
        let mut l: Vec<u64> = Vec::new();
        for q in queries.iter().filter(|q| q.category == cat).take(5_000) {
            let t0 = Instant::now();
            let idx = index.read().expect("lock");
            std::hint::black_box(idx.decide_names(&q.user, q.permission, &q.tenant, None));
            drop(idx);
            l.push(t0.elapsed().as_nanos() as u64);
        }
        l.sort_unstable();
        println!("  {cat:<28} p50 {:>5.0} ns  p99 {:>5.0} ns", percentile(&l, 0.5), percentile(&l, 0.99));
    }

    // Batches of 100 under one lock (BatchCheck's shape), on one core.
    let idx = index.read().expect("lock");
    let resolved: Vec<Subject> =
        queries.iter().filter_map(|q| idx.resolve(&q.user, q.permission, &q.tenant, None).ok()).collect();
    drop(idx);
    let t0 = Instant::now();
    let mut n = 0usize;
    while t0.elapsed() < Duration::from_secs(2) {
        for chunk in queries.chunks(100) {
            let idx = index.read().expect("lock");
            for q in chunk {
                std::hint::black_box(idx.decide_names(&q.user, q.permission, &q.tenant, None));
            }
            n += chunk.len();
        }
    }
    let rate = n as f64 / t0.elapsed().as_secs_f64();
    let t1 = Instant::now();
    let mut k = 0usize;
    while t1.elapsed() < Duration::from_secs(1) {
        let idx = index.read().expect("lock");
        for s in &resolved {
            std::hint::black_box(idx.decide(*s));
        }
        k += resolved.len();
    }
    println!(
        "batch throughput (one core, 100 per lock): {:.0} decisions/s from UUIDs and names; {:.0} decisions/s on resolved handles",
        rate,
        k as f64 / t1.elapsed().as_secs_f64()
    );

    // LookupTenants ("which clients can this technician manage?"): the first page of 50.
    let idx = index.read().expect("lock");
    for (label, who, perm) in [
        ("technician (30 assigned clients)", tech_ids[0], "tenant.manage"),
        ("client user", user_ids[0], "tenant.view"),
        ("MSP staff (every tenant)", staff_ids[0], "tenant.view"),
    ] {
        let slot = idx.known_user_slot(&who).expect("user");
        let bit = idx.policy.permission_bit(perm).expect("permission");
        let t0 = Instant::now();
        let (mut calls, mut found) = (0u32, 0usize);
        while t0.elapsed() < Duration::from_millis(300) {
            found = idx.lookup_tenants(slot, bit, None, 50).0.len();
            calls += 1;
        }
        println!(
            "LookupTenants, first page of 50, for a {label}: {found} tenants, {:.1} us per page",
            t0.elapsed().as_secs_f64() * 1e6 / f64::from(calls)
        );
    }
}

// ---------- SpiceDB harness dataset ----------

#[derive(Clone, PartialEq, prost::Message)]
struct ObjectReference {
    #[prost(string, tag = "1")]
    object_type: String,
    #[prost(string, tag = "2")]
    object_id: String,
}
#[derive(Clone, PartialEq, prost::Message)]
struct SubjectReference {
    #[prost(message, optional, tag = "1")]
    object: Option<ObjectReference>,
}
#[derive(Clone, PartialEq, prost::Message)]
struct Relationship {
    #[prost(message, optional, tag = "1")]
    resource: Option<ObjectReference>,
    #[prost(string, tag = "2")]
    relation: String,
    #[prost(message, optional, tag = "3")]
    subject: Option<SubjectReference>,
}
#[derive(Clone, PartialEq, prost::Message)]
struct RelationshipUpdate {
    #[prost(int32, tag = "1")]
    operation: i32,
    #[prost(message, optional, tag = "2")]
    relationship: Option<Relationship>,
}
#[derive(Clone, PartialEq, prost::Message)]
struct WriteRelationshipsRequest {
    #[prost(message, repeated, tag = "1")]
    updates: Vec<RelationshipUpdate>,
}

fn records(path: &str) -> Vec<Vec<u8>> {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let mut out = Vec::new();
    let mut at = 0;
    while at + 4 <= bytes.len() {
        let len = u32::from_le_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]]) as usize;
        out.push(bytes[at + 4..at + 4 + len].to_vec());
        at += 4 + len;
    }
    out
}

/// Loads the harness's relationships (tenant tree; admin on root = MSP admin; technician on a
/// client = assignment; admin / viewer on a client = client roles) and compares every check.
fn spicedb(dir: &str) {
    use prost::Message;
    let mut ids: HashMap<String, Uuid> = HashMap::new();
    let mut id = |name: &str| *ids.entry(name.to_owned()).or_insert_with(Uuid::new_v4);
    let mut index = Index::new(Policy::parse(POLICY, 0).expect("bench policy"));
    let mut rels = Vec::new();
    for rec in records(&format!("{dir}/rels.bin")) {
        let batch = WriteRelationshipsRequest::decode(rec.as_slice()).expect("rels.bin");
        for u in batch.updates {
            let Some(r) = u.relationship else { continue };
            let res = r.resource.map(|o| o.object_id).unwrap_or_default();
            let sub = r.subject.and_then(|s| s.object).map(|o| o.object_id).unwrap_or_default();
            rels.push((res, r.relation, sub));
        }
    }
    let root = id("root");
    index.upsert_tenant(root, None, TenantKind::Admin, TenantState::Active);
    for (res, rel, sub) in &rels {
        if rel == "parent" {
            let kind = if res.contains("_d") { TenantKind::Department } else { TenantKind::Client };
            let (t, p) = (id(res), id(sub));
            index.upsert_tenant(t, Some(p), kind, TenantState::Active);
        }
    }
    index.finish();
    for (res, rel, sub) in &rels {
        let (t, u) = (id(res), id(sub));
        match (rel.as_str(), res == "root") {
            ("admin", true) => {
                index.upsert_user(u, UserState::Active, true);
                index.upsert_membership(u, t, "msp_admin", MemberKind::Direct);
            }
            ("technician", _) => {
                index.upsert_user(u, UserState::Active, true);
                index.upsert_membership(u, root, "technician", MemberKind::Direct);
                index.assign(u, t);
                index.upsert_membership(u, t, "technician", MemberKind::Assigned);
            }
            ("admin", false) | ("viewer", false) => {
                index.upsert_user(u, UserState::Active, false);
                index.upsert_membership(
                    u,
                    t,
                    if rel == "admin" { "client_admin" } else { "client_viewer" },
                    MemberKind::Direct,
                );
            }
            _ => {}
        }
    }
    let meta = std::fs::read_to_string(format!("{dir}/checks_meta.tsv")).expect("checks_meta.tsv");
    let (mut total, mut mismatches) = (0, 0);
    for line in meta.lines().skip(1) {
        let f: Vec<&str> = line.split('\t').collect();
        if f.len() < 6 {
            continue;
        }
        let expected = f[2] == "allowed";
        let tenant = id(f[3].trim_start_matches("tenant:"));
        let user = id(f[5].trim_start_matches("user:"));
        let perm = if f[4] == "manage" { "tenant.manage" } else { "tenant.view" };
        let got = index.decide_names(&user, perm, &tenant, None).allowed();
        total += 1;
        if got != expected {
            mismatches += 1;
            if mismatches <= 5 {
                println!("mismatch: {line} -> {got}");
            }
        }
    }
    println!(
        "spicedb harness dataset: {} relationships, {total} checks, {mismatches} mismatches with the expected outcomes",
        rels.len()
    );
}

#[path = "../tests/common/mod.rs"]
mod common;

mod grpc {
    use std::{
        io::Write,
        process::Command,
        time::{Duration, Instant},
    };

    use prost::Message;
    use tether_proto::{
        authz::v1 as pb,
        common::v1::MembershipKind,
        identity::v1::UserStatus,
        tenancy::v1::{TenantKind, TenantStatus},
    };
    use uuid::Uuid;

    use super::{Rng, arg, common, percentile};

    fn write_records(path: &std::path::Path, records: &[Vec<u8>]) {
        let mut f = std::fs::File::create(path).expect("records file");
        for r in records {
            f.write_all(&(r.len() as u32).to_le_bytes()).expect("write");
            f.write_all(r).expect("write");
        }
    }

    pub fn run(tool: &str) {
        let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("runtime");
        runtime.block_on(serve_and_measure(tool));
    }

    async fn serve_and_measure(tool: &str) {
        let clients = arg("--clients", 10_000);
        let staff = arg("--staff", 200);
        let techs = arg("--techs", 500);
        let assign = arg("--assign", 30).min(clients);
        let users = arg("--users", 100_000);
        let duration = arg("--duration", 5);
        let mut rng = Rng(0x2545_f491_4f6c_dd1d);
        let up = common::Upstreams::start().await;

        // The dataset as stream messages, a few thousand changes per revision.
        let root = Uuid::new_v4();
        let mut tenancy = vec![common::tenant(root, None, TenantKind::Admin, TenantStatus::Active)];
        let mut client_ids = Vec::new();
        let mut depts = Vec::new();
        for _ in 0..clients {
            let c = Uuid::new_v4();
            let d = [Uuid::new_v4(), Uuid::new_v4()];
            tenancy.push(common::tenant(c, Some(root), TenantKind::Client, TenantStatus::Active));
            for x in d {
                tenancy.push(common::tenant(x, Some(c), TenantKind::Department, TenantStatus::Active));
            }
            client_ids.push(c);
            depts.push(d);
        }
        let mut identity = Vec::new();
        let mut staff_ids = Vec::new();
        for _ in 0..staff {
            let s = Uuid::new_v4();
            identity.push(common::user(s, UserStatus::Active, true));
            tenancy.push(common::membership(s, root, "msp_admin", MembershipKind::Direct));
            staff_ids.push(s);
        }
        let mut tech_ids = Vec::new();
        let mut tech_clients = Vec::new();
        for _ in 0..techs {
            let t = Uuid::new_v4();
            identity.push(common::user(t, UserStatus::Active, true));
            tenancy.push(common::membership(t, root, "technician", MembershipKind::Direct));
            let mut mine: Vec<usize> = Vec::new();
            while mine.len() < assign {
                let c = rng.below(clients);
                if !mine.contains(&c) {
                    mine.push(c);
                }
            }
            for &c in &mine {
                tenancy.push(common::assignment(t, client_ids[c]));
                tenancy.push(common::membership(t, client_ids[c], "technician", MembershipKind::Assigned));
            }
            tech_ids.push(t);
            tech_clients.push(mine);
        }
        let mut user_ids = Vec::new();
        let mut homes = Vec::new();
        for i in 0..users {
            let u = Uuid::new_v4();
            let c = rng.below(clients);
            identity.push(common::user(u, UserStatus::Active, false));
            let role = if i % 5 == 0 { "client_admin" } else { "client_viewer" };
            tenancy.push(common::membership(u, client_ids[c], role, MembershipKind::Direct));
            user_ids.push(u);
            homes.push(c);
        }
        for chunk in identity.chunks(5_000) {
            up.identity.push(chunk.to_vec());
        }
        for chunk in tenancy.chunks(5_000) {
            up.tenancy.push(chunk.to_vec());
        }

        let dir = std::env::temp_dir().join(format!("authz-bench-{}", Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let policy = dir.join("policy.toml");
        std::fs::write(&policy, super::POLICY).expect("policy");
        let db = tether_tests::TestDatabase::fresh().await;
        let started = Instant::now();
        // Half the requests are denials, each an audit event up to the per-second budget;
        // `TETHER_AUTHZ_AUDIT_MAX_PER_SECOND=0` records every one, for comparison.
        let audit_budget = std::env::var("TETHER_AUTHZ_AUDIT_MAX_PER_SECOND").unwrap_or_else(|_| "5000".into());
        println!("decision audit budget: {audit_budget} events/s (0 = every denial recorded)");
        let authz = common::start(common::config(
            &db,
            &up,
            &[
                ("TETHER_AUTHZ_POLICY_FILE", policy.to_str().unwrap_or_default()),
                ("TETHER_AUTHZ_MAX_LAG_MS", "60000"),
                // The load generator replays bare messages and cannot send the service token.
                ("TETHER_AUTHZ_OPEN_DECISIONS", "true"),
                ("TETHER_AUTHZ_AUDIT_MAX_PER_SECOND", &audit_budget),
            ],
        ))
        .await;
        let mut client = authz.client.clone();
        loop {
            let s = client.get_index_status(pb::GetIndexStatusRequest {}).await.map(|r| r.into_inner());
            if s.as_ref().is_ok_and(|s| s.serving) {
                let s = s.unwrap_or_default();
                println!(
                    "replica loaded {} users, {} tenants, {} memberships from the stream doubles in {:.1} s",
                    s.user_count,
                    s.tenant_count,
                    s.membership_count,
                    started.elapsed().as_secs_f64()
                );
                break;
            }
            assert!(started.elapsed() < Duration::from_secs(300), "replica never served");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }

        // Requests: half allowed, half denied, as in the SpiceDB harness.
        let mut checks = Vec::new();
        let mut items = Vec::new();
        for i in 0..20_000 {
            let (u, p, t) = match i % 4 {
                0 => {
                    let k = rng.below(techs);
                    let c = tech_clients[k][rng.below(assign)];
                    (tech_ids[k], "tenant.view", depts[c][rng.below(2)])
                }
                1 => {
                    let k = rng.below(users);
                    (user_ids[k], "tenant.view", client_ids[(homes[k] + 1) % clients])
                }
                2 => {
                    let k = rng.below(users);
                    (user_ids[k], "tenant.view", depts[homes[k]][rng.below(2)])
                }
                _ => {
                    let k = rng.below(techs);
                    let c = (tech_clients[k][0] + 1 + rng.below(clients - 1)) % clients;
                    let c = if tech_clients[k].contains(&c) { (c + 1) % clients } else { c };
                    (tech_ids[k], "tenant.manage", client_ids[c])
                }
            };
            let item = pb::BatchCheckItem {
                subject_user_id: u.to_string(),
                permission: p.into(),
                tenant_id: t.to_string(),
                resource_id: String::new(),
            };
            checks.push(
                pb::CheckRequest {
                    subject_user_id: item.subject_user_id.clone(),
                    permission: item.permission.clone(),
                    tenant_id: item.tenant_id.clone(),
                    ..Default::default()
                }
                .encode_to_vec(),
            );
            items.push(item);
        }
        let batches: Vec<Vec<u8>> = items
            .chunks(100)
            .map(|c| pb::BatchCheckRequest { items: c.to_vec(), at_least_as_fresh: None }.encode_to_vec())
            .collect();
        let checks_file = dir.join("checks.bin");
        // Also batches of 1,000 (the most one call takes): the per-call cost spread thinner.
        let big_batches: Vec<Vec<u8>> = items
            .chunks(1_000)
            .map(|c| pb::BatchCheckRequest { items: c.to_vec(), at_least_as_fresh: None }.encode_to_vec())
            .collect();
        let big_batch_file = dir.join("batch1000.bin");
        write_records(&big_batch_file, &big_batches);
        let batch_file = dir.join("batch.bin");
        let empty_file = dir.join("empty.bin");
        write_records(&checks_file, &checks);
        write_records(&batch_file, &batches);
        write_records(&empty_file, &[Vec::new()]);
        let allowed = {
            let mut n = 0;
            for c in checks.iter().take(2_000) {
                let req = pb::CheckRequest::decode(c.as_slice()).unwrap_or_default();
                n += usize::from(client.check(req).await.is_ok_and(|r| r.get_ref().allowed));
            }
            n
        };
        println!("sanity: {allowed} of the first 2000 checks allowed (expected 1000)");

        let target = authz.service.addr.to_string();
        let pid = std::process::id().to_string();
        let json = dir.join("results.jsonl");
        let runs: Vec<(&str, &str, &std::path::Path, u32)> = vec![
            ("floor-c1", "/grpc.health.v1.Health/Check", &empty_file, 1),
            ("check-c1", "/tether.authz.v1.AuthzService/Check", &checks_file, 1),
            ("floor-c16", "/grpc.health.v1.Health/Check", &empty_file, 16),
            ("check-c16", "/tether.authz.v1.AuthzService/Check", &checks_file, 16),
            ("batch100-c1", "/tether.authz.v1.AuthzService/BatchCheck", &batch_file, 1),
            ("batch100-c16", "/tether.authz.v1.AuthzService/BatchCheck", &batch_file, 16),
            ("batch1000-c4", "/tether.authz.v1.AuthzService/BatchCheck", &big_batch_file, 4),
        ];
        for (label, method, file, concurrency) in runs {
            let tool = tool.to_owned();
            let args: Vec<String> = vec![
                "--target".into(),
                target.clone(),
                "--method".into(),
                method.into(),
                "--requests".into(),
                file.display().to_string(),
                "--concurrency".into(),
                concurrency.to_string(),
                "--duration".into(),
                duration.to_string(),
                "--warmup".into(),
                "1".into(),
                "--server-pid".into(),
                pid.clone(),
                "--label".into(),
                label.into(),
                "--json".into(),
                json.display().to_string(),
            ];
            let out = tokio::task::spawn_blocking(move || Command::new(tool).args(args).output()).await;
            match out {
                Ok(Ok(o)) => print!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr)),
                other => println!("{label}: cannot run the load generator: {other:?}"),
            }
        }
        println!("raw results: {}", json.display());
        // One summary line per run: decisions per second, and Check as a share of the floor.
        let lines = std::fs::read_to_string(&json).unwrap_or_default();
        let runs: Vec<serde_json::Value> = lines.lines().filter_map(|l| serde_json::from_str(l).ok()).collect();
        let rps =
            |label: &str| runs.iter().find(|r| r["label"] == label).and_then(|r| r["rps"].as_f64()).unwrap_or_default();
        let p99_ms = |label: &str| {
            runs.iter().find(|r| r["label"] == label).and_then(|r| r["latency_us"]["p99"].as_f64()).unwrap_or_default()
                / 1000.0
        };
        for c in ["c1", "c16"] {
            let (check, floor) = (rps(&format!("check-{c}")), rps(&format!("floor-{c}")));
            println!(
                "summary {c}: Check {check:.0}/s (p99 {:.2} ms) = {:.0} % of the floor's {floor:.0}/s (p99 {:.2} ms)",
                p99_ms(&format!("check-{c}")),
                100.0 * check / floor.max(1.0),
                p99_ms(&format!("floor-{c}")),
            );
        }
        for (label, items) in [("batch100-c1", 100.0), ("batch100-c16", 100.0), ("batch1000-c4", 1000.0)] {
            println!("summary {label}: {:.0} decisions/s", rps(label) * items);
        }

        // Propagation: a deactivation committed upstream, until a check here denies.
        let mut delays = Vec::new();
        for k in 0..200 {
            let u = user_ids[k * 7 % users];
            let t = client_ids[homes[k * 7 % users]];
            let started = Instant::now();
            up.identity.push(vec![common::user(u, UserStatus::Suspended, false)]);
            loop {
                let req = pb::CheckRequest {
                    subject_user_id: u.to_string(),
                    permission: "tenant.view".into(),
                    tenant_id: t.to_string(),
                    ..Default::default()
                };
                if client.check(req).await.is_ok_and(|r| !r.get_ref().allowed) {
                    break;
                }
            }
            delays.push(started.elapsed().as_micros() as u64);
        }
        delays.sort_unstable();
        println!(
            "propagation (deactivation pushed on the identity stream double -> first denied Check), 200 samples: p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
            percentile(&delays, 0.5) / 1000.0,
            percentile(&delays, 0.99) / 1000.0,
            *delays.last().unwrap_or(&0) as f64 / 1000.0
        );
        let _ = authz.service.stop().await;
    }
}
