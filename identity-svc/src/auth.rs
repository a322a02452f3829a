//! The two hot spots of authentication: password hashing (CPU-bound, run in a bounded pool off
//! the async runtime) and `Authenticate` (answered from an in-memory cache).

use std::{
    collections::HashMap,
    sync::{Arc, RwLock},
};

use tether_runtime::ApiError;
use tokio::sync::Semaphore;

use crate::domain::password;

/// Hashing and verification on the blocking pool, at most `permits` at a time: a login storm
/// queues here instead of taking every runtime worker.
#[derive(Clone)]
pub struct Hasher {
    permits: Arc<Semaphore>,
    /// A real hash of a random password: unknown emails are verified against it, so they cost
    /// the same time as a wrong password.
    dummy: Arc<String>,
}

impl Hasher {
    pub async fn new(concurrency: usize) -> Result<Self, ApiError> {
        let random = password::generate(24).map_err(ApiError::internal)?;
        let dummy = tokio::task::spawn_blocking(move || password::hash(&random))
            .await
            .map_err(ApiError::internal)?
            .map_err(ApiError::internal)?;
        Ok(Self { permits: Arc::new(Semaphore::new(concurrency.max(1))), dummy: Arc::new(dummy) })
    }

    async fn run<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> Result<T, ApiError> {
        let _permit = self.permits.acquire().await.map_err(ApiError::internal)?;
        tokio::task::spawn_blocking(f).await.map_err(ApiError::internal)
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
