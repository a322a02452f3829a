//! The two hot spots of authentication: password hashing (CPU-bound, run on a bounded pool of
//! low-priority threads off the async runtime) and `Authenticate` (answered from an in-memory
//! cache).

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, RwLock},
};

use tether_runtime::ApiError;
use tokio::sync::Semaphore;

use crate::domain::password;

/// Hashing and verification on a pool of dedicated OS threads, at most `permits` at a time: a
/// login storm queues here (asynchronously) instead of taking the runtime's workers. The pool's
/// threads run at a lowered scheduling priority (nice), so on a busy machine the kernel prefers
/// the threads that answer requests (Authenticate) while hashing still takes every idle cycle.
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
    fn new(threads: usize, nice: i32) -> std::io::Result<Self> {
        let (tx, rx) = std::sync::mpsc::channel::<Job>();
        let rx = Arc::new(Mutex::new(rx));
        for i in 0..threads.max(1) {
            let rx = rx.clone();
            std::thread::Builder::new().name(format!("identity-hash-{i}")).spawn(move || {
                lower_priority(nice);
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

/// Lowers the calling thread's priority (Linux: per-thread nice). Best effort: without it the
/// pool still works, only without the preference for request threads.
fn lower_priority(nice: i32) {
    #[cfg(target_os = "linux")]
    if nice > 0
        && let Err(e) = rustix::process::setpriority_process(Some(rustix::thread::gettid()), nice)
    {
        tracing::warn!(error = %e, nice, "could not lower the hashing threads' priority");
    }
    #[cfg(not(target_os = "linux"))]
    let _ = nice;
}

impl Hasher {
    /// `concurrency` hashing threads at nice `nice` (0: unchanged).
    pub async fn new(concurrency: usize, nice: i32) -> Result<Self, ApiError> {
        let concurrency = concurrency.max(1);
        let pool = Arc::new(HashPool::new(concurrency, nice).map_err(ApiError::internal)?);
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

/// A cached Authenticate answer.
#[derive(Clone)]
pub struct CachedSession {
    pub principal: tether_proto::identity::v1::Principal,
    pub expires_at: i64,
    pub last_seen_at: i64,
}

/// Authenticate answers keyed by token hash. Valid only while the database's revocation
/// generation is the one they were read under (see ARCHITECTURE.md, "Authenticate").
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

    /// The calling thread's nice value, from /proc.
    fn own_nice() -> Option<i32> {
        let stat = std::fs::read_to_string("/proc/thread-self/stat").ok()?;
        let after_name = &stat[stat.rfind(')')? + 1..];
        after_name.split_whitespace().nth(16)?.parse().ok()
    }

    #[tokio::test]
    async fn hashing_threads_run_at_the_configured_nice_and_the_caller_does_not() {
        let before = own_nice();
        let pool = HashPool::new(2, 10).unwrap_or_else(|e| panic!("{e}"));
        let in_pool = pool.run(own_nice).await.unwrap_or_else(|e| panic!("{e:?}"));
        assert_eq!(in_pool, Some(10));
        assert_eq!(own_nice(), before);
        let unchanged = HashPool::new(1, 0).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(unchanged.run(own_nice).await.unwrap_or_else(|e| panic!("{e:?}")), before);
    }
}
