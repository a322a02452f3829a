//! The two hot spots of authentication: password hashing (CPU-bound, run on a bounded pool of
//! low-priority threads off the async runtime) and `Authenticate` (answered from an in-memory
//! cache).
//!
//! Rules for hashing:
//!
//! 1. Hashes are computed on a pool of `TETHER_IDENTITY_HASH_CONCURRENCY` (default: cores)
//!    dedicated OS threads behind a semaphore; the queue is async, in front of the pool, so a login
//!    storm queues there instead of taking the runtime.
//! 2. The hashing threads lower their own priority (`TETHER_IDENTITY_HASH_PRIORITY`): by default
//!    Linux's `SCHED_IDLE`, under which any request-serving thread that wakes preempts a hashing
//!    thread at once, so `Authenticate` stays fast during a storm. Plain nice 10 was measured first:
//!    under the EEVDF scheduler a woken request thread could still wait out the hashing thread's
//!    slice (4-7 ms in Authenticate's p99). The price of `SCHED_IDLE`: if other work kept every
//!    core busy for long, logins would wait for it; a nice value (`=10`) gives hashing a small fair
//!    share instead.
//!
//! Rules for `Authenticate`:
//!
//! 3. Answers come from an in-memory cache keyed by token hash. Every early end of a session
//!    (logout, revoke, deactivation, deletion, password reset, 2FA reset) and every change to what a
//!    principal carries bumps the one-row `auth_generation` counter in the same transaction. A
//!    cached answer is used only while the replica's last read of that counter shows the
//!    generation the entry was read under; a newer generation empties the cache.
//! 4. The lease (`GenerationReads`, `TETHER_IDENTITY_REVOCATION_LEASE_MS`, default 20 ms): a call
//!    may rely on a read that *started* less than the lease ago, and every revocation, after it
//!    commits, waits the lease out before it answers. So a call that starts after the revocation
//!    answered relies only on reads that started after the commit: a revoked session is refused on
//!    every replica's very next call, with no database read on the warm path. Only each replica's
//!    own monotonic clock matters. Lease 0 is the strict form (each call waits for a read that
//!    starts after it arrived).
//! 5. Reads are refreshed in the background once half the lease has passed; an idle replica's
//!    first call waits for a fresh read, shared with every call waiting at that moment. Generation
//!    reads use a pool of their own, so they never queue behind login writes.
//! 6. `Prepared::authenticator` exposes the same path in-process (no gRPC), for the benchmark.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, RwLock},
    time::{Duration, Instant},
};

use futures_util::future::BoxFuture;
use tether_runtime::ApiError;
use tokio::sync::Semaphore;

use crate::{config::HashPriority, domain::password};

/// Hashing and verification on a pool of dedicated OS threads, at most `permits` at a time: a
/// login storm queues here (asynchronously) instead of taking the runtime's workers. The pool's
/// threads run at a lowered scheduling priority ([`HashPriority`]), so on a busy machine the
/// kernel prefers the threads that answer requests (Authenticate) while hashing still takes
/// every idle cycle.
#[derive(Clone)]
pub struct Hasher {
    permits: Arc<Semaphore>,
    pool: Arc<HashPool>,
    /// A real hash of a random password: unknown emails are verified against it, so they cost
    /// the same time as a wrong password.
    dummy: Arc<String>,
}

type Job = Box<dyn FnOnce() + Send>;

/// `threads` OS threads taking jobs from one queue; they end when the pool is dropped.
struct HashPool {
    jobs: std::sync::mpsc::Sender<Job>,
}

impl HashPool {
    fn new(threads: usize, priority: HashPriority) -> std::io::Result<Self> {
        let (tx, rx) = std::sync::mpsc::channel::<Job>();
        let rx = Arc::new(Mutex::new(rx));
        for i in 0..threads.max(1) {
            let rx = rx.clone();
            std::thread::Builder::new().name(format!("identity-hash-{i}")).spawn(move || {
                lower_priority(priority);
                loop {
                    // The lock is held only while waiting for the next job.
                    let job = match rx.lock().unwrap_or_else(|e| e.into_inner()).recv() {
                        Ok(job) => job,
                        Err(_) => return,
                    };
                    // A panicking job must not take a worker with it (its caller sees INTERNAL).
                    let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(job));
                }
            })?;
        }
        Ok(Self { jobs: tx })
    }

    async fn run<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> Result<T, ApiError> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let job: Job = Box::new(move || {
            let _ = tx.send(f());
        });
        self.jobs.send(job).map_err(|_| ApiError::internal("the hashing pool has stopped"))?;
        rx.await.map_err(|_| ApiError::internal("a hashing job failed"))
    }
}

/// Applies `priority` to the calling thread. Best effort: without it the pool still works,
/// only without the preference for request threads.
fn lower_priority(priority: HashPriority) {
    #[cfg(target_os = "linux")]
    {
        let result = match priority {
            HashPriority::Idle => {
                use thread_priority::{
                    NormalThreadSchedulePolicy, ThreadPriority, ThreadSchedulePolicy, set_thread_priority_and_policy,
                    thread_native_id,
                };
                set_thread_priority_and_policy(
                    thread_native_id(),
                    ThreadPriority::Min,
                    ThreadSchedulePolicy::Normal(NormalThreadSchedulePolicy::Idle),
                )
                .map_err(|e| format!("{e:?}"))
            }
            HashPriority::Nice(0) => Ok(()),
            HashPriority::Nice(n) => {
                rustix::process::setpriority_process(Some(rustix::thread::gettid()), n).map_err(|e| e.to_string())
            }
        };
        if let Err(error) = result {
            tracing::warn!(%error, %priority, "could not lower the hashing threads' priority");
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = priority;
}

impl Hasher {
    /// `concurrency` hashing threads scheduled at `priority`.
    pub async fn new(concurrency: usize, priority: HashPriority) -> Result<Self, ApiError> {
        let concurrency = concurrency.max(1);
        let pool = Arc::new(HashPool::new(concurrency, priority).map_err(ApiError::internal)?);
        let random = password::generate(24).map_err(ApiError::internal)?;
        let dummy = pool.run(move || password::hash(&random)).await?.map_err(ApiError::internal)?;
        Ok(Self { permits: Arc::new(Semaphore::new(concurrency)), pool, dummy: Arc::new(dummy) })
    }

    async fn run<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> Result<T, ApiError> {
        // The queue is here, in front of the pool: a waiting login holds no thread, and one
        // whose caller gave up leaves the queue without costing a hash.
        let _permit = self.permits.acquire().await.map_err(ApiError::internal)?;
        self.pool.run(f).await
    }

    pub async fn hash(&self, plain: &str) -> Result<String, ApiError> {
        let plain = plain.to_owned();
        self.run(move || password::hash(&plain)).await?.map_err(ApiError::internal)
    }

    /// Verifies against `phc`, or against the dummy hash when there is none (same cost).
    pub async fn verify(&self, plain: &str, phc: Option<&str>) -> Result<bool, ApiError> {
        let plain = plain.to_owned();
        let (phc, real) = match phc {
            Some(p) => (p.to_owned(), true),
            None => (self.dummy.as_ref().clone(), false),
        };
        Ok(self.run(move || password::verify(&plain, &phc)).await? && real)
    }

    /// True if `plain` matches any of `hashes` (password reuse).
    pub async fn matches_any(&self, plain: &str, hashes: Vec<String>) -> Result<bool, ApiError> {
        let plain = plain.to_owned();
        self.run(move || hashes.iter().any(|h| password::verify(&plain, h))).await
    }
}

/// One read of the revocation generation: the database query, boxed so tests can count reads.
pub type GenerationRead = Arc<dyn Fn() -> BoxFuture<'static, Result<i64, String>> + Send + Sync>;

/// Reads of the revocation generation, shared by the calls that wait at the same moment and
/// relied on for a short lease.
///
/// A call may take the answer of a read that *started after the call arrived*: that read sees
/// every revocation committed before the call. It may also take the answer of a read that
/// started less than `lease` ago, provided every revocation waits out the lease after it
/// commits and before it answers ([`GenerationReads::wait_out_lease`]). Then a call that
/// starts after a revocation has answered starts more than `lease` after the commit, so any
/// read it relies on started after the commit too: "a revoked session is refused on the very
/// next call" holds on every replica, while a warm replica answers Authenticate without
/// touching the database. A read older than half the lease is refreshed in the background,
/// so steady traffic never waits for one. Reads run as their own tasks, so a caller that gives
/// up does not leave the others waiting.
pub struct GenerationReads {
    rounds: Mutex<Rounds>,
    finished: tokio::sync::watch::Sender<Finished>,
    read: GenerationRead,
    lease: Duration,
}

/// Read rounds are numbered; a call needs the first round that starts after it arrives.
#[derive(Default)]
struct Rounds {
    started: u64,
    reading: bool,
    /// The highest round a waiting call needs (started when the current one finishes).
    wanted: u64,
}

#[derive(Clone)]
struct Finished {
    round: u64,
    /// When the round's read was issued: its answer includes every commit before this moment.
    started_at: Instant,
    generation: Result<i64, String>,
}

impl GenerationReads {
    /// `lease`: how long a read's answer may be relied on (zero: every call waits for a read
    /// that starts after it).
    pub fn new(read: GenerationRead, lease: Duration) -> Arc<Self> {
        let (finished, _) =
            tokio::sync::watch::channel(Finished { round: 0, started_at: Instant::now(), generation: Ok(0) });
        Arc::new(Self { rounds: Mutex::new(Rounds::default()), finished, read, lease })
    }

    /// The generation as of some moment after this call began, or less than the lease before.
    pub async fn current(self: &Arc<Self>) -> Result<i64, ApiError> {
        if let Some(generation) = self.within_lease() {
            return Ok(generation);
        }
        let mut finished = self.finished.subscribe();
        let need = {
            let mut rounds = self.rounds.lock().unwrap_or_else(|e| e.into_inner());
            let need = rounds.started + 1;
            if rounds.reading {
                rounds.wanted = rounds.wanted.max(need);
            } else {
                rounds.started = need;
                rounds.reading = true;
                self.start_round(need);
            }
            need
        };
        let result = finished
            .wait_for(|f| f.round >= need)
            .await
            .map_err(|_| ApiError::internal("the generation reader has stopped"))?
            .generation
            .clone();
        result.map_err(ApiError::internal)
    }

    /// What a revocation does after it commits and before it answers: waits until no replica
    /// can still rely on a read from before the commit.
    pub async fn wait_out_lease(&self) {
        if !self.lease.is_zero() {
            tokio::time::sleep(self.lease).await;
        }
    }

    /// The last successful read's answer if it started within the lease; past half the lease a
    /// background read is started so the next calls find a fresh one.
    fn within_lease(self: &Arc<Self>) -> Option<i64> {
        if self.lease.is_zero() {
            return None;
        }
        let (age, generation) = {
            let last = self.finished.borrow();
            match (last.round, &last.generation) {
                (0, _) | (_, Err(_)) => return None,
                (_, Ok(generation)) => (last.started_at.elapsed(), *generation),
            }
        };
        if age >= self.lease {
            return None;
        }
        if age >= self.lease / 2 {
            let mut rounds = self.rounds.lock().unwrap_or_else(|e| e.into_inner());
            if !rounds.reading {
                rounds.started += 1;
                rounds.reading = true;
                self.start_round(rounds.started);
            }
        }
        Some(generation)
    }

    fn start_round(self: &Arc<Self>, round: u64) {
        let this = self.clone();
        tokio::spawn(async move {
            let started_at = Instant::now();
            let generation = (this.read)().await;
            {
                let mut rounds = this.rounds.lock().unwrap_or_else(|e| e.into_inner());
                if rounds.wanted > round {
                    rounds.started = round + 1;
                    this.start_round(round + 1);
                } else {
                    rounds.reading = false;
                }
            }
            this.finished.send_replace(Finished { round, started_at, generation });
        });
    }
}

/// A cached Authenticate answer.
#[derive(Clone)]
pub struct CachedSession {
    pub principal: tether_proto::identity::v1::Principal,
    pub expires_at: i64,
    pub last_seen_at: i64,
}

/// Authenticate answers keyed by token hash. Valid only while the database's revocation
/// generation is the one they were read under (this module's rules 3 and 4).
#[derive(Default)]
pub struct SessionCache {
    inner: RwLock<CacheState>,
}

#[derive(Default)]
struct CacheState {
    generation: i64,
    entries: HashMap<String, CachedSession>,
}

/// More entries than this and the cache starts over (simple and bounded).
const MAX_ENTRIES: usize = 100_000;

impl SessionCache {
    /// The entry for `token_hash` if the cache is at `generation`; a newer generation empties
    /// the cache first.
    pub fn get(&self, token_hash: &str, generation: i64) -> Option<CachedSession> {
        {
            let state = self.inner.read().unwrap_or_else(|e| e.into_inner());
            if state.generation == generation {
                return state.entries.get(token_hash).cloned();
            }
        }
        let mut state = self.inner.write().unwrap_or_else(|e| e.into_inner());
        if state.generation < generation {
            state.entries.clear();
            state.generation = generation;
        }
        None
    }

    /// Remembers an answer read under `generation` (ignored if the cache has moved on).
    pub fn put(&self, token_hash: String, generation: i64, entry: CachedSession) {
        let mut state = self.inner.write().unwrap_or_else(|e| e.into_inner());
        if state.generation != generation {
            return;
        }
        if state.entries.len() >= MAX_ENTRIES {
            state.entries.clear();
        }
        state.entries.insert(token_hash, entry);
    }

    pub fn touch(&self, token_hash: &str, at: i64) {
        let mut state = self.inner.write().unwrap_or_else(|e| e.into_inner());
        if let Some(e) = state.entries.get_mut(token_hash) {
            e.last_seen_at = at;
        }
    }

    /// Drops everything at once (a local revocation: the next call re-reads).
    pub fn clear(&self) {
        let mut state = self.inner.write().unwrap_or_else(|e| e.into_inner());
        state.entries.clear();
    }

    pub fn remove(&self, token_hash: &str) {
        let mut state = self.inner.write().unwrap_or_else(|e| e.into_inner());
        state.entries.remove(token_hash);
    }
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    /// The calling thread's scheduling policy (0 normal, 5 idle) and nice value, from /proc
    /// (fields 41 and 19 of `stat`; the fields after the command name start at field 3).
    fn own_scheduling() -> Option<(u32, i32)> {
        let stat = std::fs::read_to_string("/proc/thread-self/stat").ok()?;
        let fields: Vec<&str> = stat[stat.rfind(')')? + 1..].split_whitespace().collect();
        Some((fields.get(38)?.parse().ok()?, fields.get(16)?.parse().ok()?))
    }

    const SCHED_IDLE: u32 = 5;

    #[tokio::test]
    async fn hashing_threads_run_at_the_configured_priority_and_the_caller_does_not() {
        let before = own_scheduling();
        let idle = HashPool::new(2, HashPriority::Idle).unwrap_or_else(|e| panic!("{e}"));
        let in_pool = idle.run(own_scheduling).await.unwrap_or_else(|e| panic!("{e:?}"));
        assert_eq!(in_pool.map(|(policy, _)| policy), Some(SCHED_IDLE));
        let nice = HashPool::new(2, HashPriority::Nice(10)).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(nice.run(own_scheduling).await.unwrap_or_else(|e| panic!("{e:?}")), Some((0, 10)));
        assert_eq!(own_scheduling(), before);
        let unchanged = HashPool::new(1, HashPriority::Nice(0)).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(unchanged.run(own_scheduling).await.unwrap_or_else(|e| panic!("{e:?}")), before);
    }

    type Counters = (Arc<GenerationReads>, Arc<std::sync::atomic::AtomicI64>, Arc<std::sync::atomic::AtomicU64>);

    /// A stand-in database: the generation is a counter; each read is counted and takes 2 ms.
    fn counting_reads() -> Counters {
        counting_reads_with_lease(Duration::ZERO)
    }

    fn counting_reads_with_lease(lease: Duration) -> Counters {
        use std::sync::atomic::Ordering;
        let generation = Arc::new(std::sync::atomic::AtomicI64::new(0));
        let reads = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let (g, r) = (generation.clone(), reads.clone());
        let read: GenerationRead = Arc::new(move || {
            let (g, r) = (g.clone(), r.clone());
            Box::pin(async move {
                r.fetch_add(1, Ordering::SeqCst);
                let value = g.load(Ordering::SeqCst);
                tokio::time::sleep(std::time::Duration::from_millis(2)).await;
                Ok(value)
            })
        });
        (GenerationReads::new(read, lease), generation, reads)
    }

    /// Eight tasks calling `current` in a loop until stopped.
    struct BackgroundCallers {
        stop: Arc<std::sync::atomic::AtomicBool>,
        tasks: Vec<tokio::task::JoinHandle<()>>,
    }

    impl BackgroundCallers {
        fn start(shared: &Arc<GenerationReads>) -> Self {
            let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
            let tasks = (0..8)
                .map(|_| {
                    let (shared, stop) = (shared.clone(), stop.clone());
                    tokio::spawn(async move {
                        while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                            let _ = shared.current().await;
                            tokio::task::yield_now().await;
                        }
                    })
                })
                .collect();
            Self { stop, tasks }
        }

        async fn stop(self) {
            self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
            for task in self.tasks {
                let _ = task.await;
            }
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_calls_share_reads() {
        let (shared, _, reads) = counting_reads();
        let calls: Vec<_> = (0..64)
            .map(|_| {
                let shared = shared.clone();
                tokio::spawn(async move { shared.current().await })
            })
            .collect();
        for call in calls {
            assert_eq!(call.await.unwrap_or_else(|e| panic!("{e}")).ok(), Some(0));
        }
        let n = reads.load(std::sync::atomic::Ordering::SeqCst);
        assert!((1..=4).contains(&n), "64 concurrent calls made {n} reads");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_call_never_sees_a_generation_older_than_its_start() {
        use std::sync::atomic::Ordering;
        let (shared, generation, _) = counting_reads();
        // Background callers keep rounds in flight, so new calls often arrive mid-read.
        let background = BackgroundCallers::start(&shared);
        for _ in 0..50 {
            // A revocation commits, then a call starts: it must see it.
            let committed = generation.fetch_add(1, Ordering::SeqCst) + 1;
            let seen = shared.current().await.unwrap_or_else(|e| panic!("{e:?}"));
            assert!(seen >= committed, "saw generation {seen} after {committed} committed");
        }
        background.stop().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn within_the_lease_calls_do_not_wait_for_reads() {
        use std::sync::atomic::Ordering;
        let (shared, _, reads) = counting_reads_with_lease(Duration::from_secs(60));
        shared.current().await.unwrap_or_else(|e| panic!("{e:?}"));
        let started = Instant::now();
        for _ in 0..1000 {
            assert_eq!(shared.current().await.ok(), Some(0));
        }
        // Each read takes 2 ms: 1,000 calls that waited for one would take seconds.
        assert!(started.elapsed() < Duration::from_millis(500), "calls waited: {:?}", started.elapsed());
        assert_eq!(reads.load(Ordering::SeqCst), 1);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_call_after_a_revocation_waited_out_the_lease_sees_it() {
        use std::sync::atomic::Ordering;
        let lease = Duration::from_millis(30);
        let (shared, generation, reads) = counting_reads_with_lease(lease);
        // Background callers keep the lease fresh (refreshes ahead of its end).
        let background = BackgroundCallers::start(&shared);
        let mut stale_within_lease = 0;
        for _ in 0..20 {
            let committed = generation.fetch_add(1, Ordering::SeqCst) + 1;
            // Right after the commit a call may still rely on an earlier read...
            if shared.current().await.unwrap_or_else(|e| panic!("{e:?}")) < committed {
                stale_within_lease += 1;
            }
            // ...but not once the revocation has waited out the lease.
            shared.wait_out_lease().await;
            let seen = shared.current().await.unwrap_or_else(|e| panic!("{e:?}"));
            assert!(seen >= committed, "saw generation {seen} after {committed} committed and the lease passed");
        }
        background.stop().await;
        // The lease is what spared the reads: without it the callers above would read constantly.
        assert!(stale_within_lease > 0, "no call relied on the lease");
        let n = reads.load(Ordering::SeqCst);
        assert!(n < 200, "{n} reads in about 20 leases");
    }

    #[test]
    fn priorities_parse_from_config_text() {
        assert_eq!("idle".parse(), Ok(HashPriority::Idle));
        assert_eq!("10".parse(), Ok(HashPriority::Nice(10)));
        assert_eq!("0".parse(), Ok(HashPriority::Nice(0)));
        assert_eq!("20".parse::<HashPriority>(), Err(()));
        assert_eq!("low".parse::<HashPriority>(), Err(()));
    }
}
