//! Keeping the index current, and recording decisions.
//!
//! - [`follow`] consumes identity-svc's and tenancy-svc's `Watch` streams: a snapshot from 0,
//!   then live changes; a revision is applied under one write lock when its `end_of_revision`
//!   change arrives; after a broken stream it resumes from the last applied revision.
//! - [`follow_own`] reloads authz's own data (custom roles, overrides, resources, grants) when
//!   authz's revision moves, so replicas converge on writes other replicas made.
//! - [`State::ready`] is the fail-closed gate every decision passes.
//! - [`AuditSink`] records decision audit events through the outbox, off the hot path.
//!
//! Rules:
//!
//! 1. `follow` calls `Watch` as a service (the service token attached). From 0 it buffers the
//!    snapshot and applies it at `SnapshotEnd`, after resetting that source's part, on a copy
//!    swapped in at the end; then live changes, one revision at a time when `end_of_revision`
//!    arrives. Heartbeats advance the applied revision.
//! 2. A broken stream reconnects after `TETHER_AUTHZ_RECONNECT_MS` from the last applied revision,
//!    from 0 again on `REVISION_COMPACTED`.
//! 3. authz's own data is reloaded when its revision moves: its own writes at once, other
//!    replicas' within `TETHER_AUTHZ_OWN_POLL_MS` (which start-up requires below the lag bound), or
//!    at once when a request's token asks for a newer authz revision.
//! 4. Fail closed: until both snapshots are loaded, decisions are UNAVAILABLE `INDEX_NOT_LOADED`.
//!    Beyond `TETHER_AUTHZ_MAX_LAG_MS` they are `INDEX_STALE` when a stream has been silent (no
//!    change, no heartbeat), when a revision the replica has heard of waits unapplied without
//!    progress (heartbeats alone do not keep it ready), or when authz's own schema has not been
//!    read successfully (every successful poll refreshes it, a failing one does not). Health
//!    follows the same gate; GetIndexStatus reports the own schema as a third source (`AUTHZ`).
//! 5. `at_least_as_fresh` waits up to `TETHER_AUTHZ_CONSISTENCY_WAIT_MS` for the index to reach
//!    every revision of the token, else UNAVAILABLE `NOT_CAUGHT_UP`; never a stale answer.

pub mod audit;
mod convert;

use std::{
    future::Future,
    sync::{
        Arc, RwLock, RwLockReadGuard,
        atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering},
    },
    time::Duration,
};

use tether_proto::{
    common::v1::{ErrorReason, Revision, RevisionSource},
    identity::v1::{self as idp, identity_service_client::IdentityServiceClient},
    tenancy::v1::{self as tnp, tenancy_service_client::TenancyServiceClient},
};
use tether_runtime::{access::ServiceToken, client::TracedChannel, db::Database, db::now_micros, error::ApiError};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::{
    domain::index::{Index, PreparedOwn, Revisions},
    store,
};

/// One input stream's progress.
#[derive(Debug, Default)]
pub struct SourceState {
    pub snapshot_loaded: AtomicBool,
    pub applied: AtomicU64,
    pub latest_known: AtomicU64,
    /// Unix micros of the last change or heartbeat; 0 before any.
    pub last_heard: AtomicI64,
    /// Unix micros since which a known revision has waited unapplied with no progress towards
    /// it (0: applied is the latest known). A revision whose end marker never comes keeps it.
    behind_since: AtomicI64,
}

impl SourceState {
    fn heard(&self, revision: u64) {
        let now = now_micros();
        self.latest_known.fetch_max(revision, Ordering::SeqCst);
        self.last_heard.store(now, Ordering::SeqCst);
        if revision > self.applied.load(Ordering::SeqCst) {
            // Only the first unapplied revision starts the clock.
            let _ = self.behind_since.compare_exchange(0, now, Ordering::SeqCst, Ordering::SeqCst);
        }
    }
    /// Records that the index now holds every change up to `revision`.
    fn applied_up_to(&self, revision: u64) {
        self.applied.store(revision, Ordering::SeqCst);
        let caught_up = revision >= self.latest_known.load(Ordering::SeqCst);
        // Progress restarts the clock for what is still known and unapplied.
        self.behind_since.store(if caught_up { 0 } else { now_micros() }, Ordering::SeqCst);
    }
    /// Microseconds since the stream was last heard from.
    pub fn silent_for(&self) -> i64 {
        now_micros() - self.last_heard.load(Ordering::SeqCst)
    }
    /// Microseconds a known revision has waited unapplied without progress (0: none waits).
    pub fn behind_for(&self) -> i64 {
        match self.behind_since.load(Ordering::SeqCst) {
            0 => 0,
            since => (now_micros() - since).max(0),
        }
    }
    /// How far behind the source the index is, in time: silent, or holding back a revision.
    pub fn lag(&self) -> i64 {
        if self.last_heard.load(Ordering::SeqCst) == 0 { 0 } else { self.silent_for().max(self.behind_for()).max(0) }
    }
}

/// The progress of authz's own data (custom roles, overrides, resources, grants), read from
/// its own schema rather than a stream.
#[derive(Debug, Default)]
pub struct OwnState {
    /// Unix micros of the last successful read of the schema (its revision, and the data when
    /// it moved); 0 before any.
    pub last_loaded: AtomicI64,
    /// The schema's revision as last read.
    pub latest_known: AtomicU64,
}

impl OwnState {
    /// Microseconds since the schema was last read successfully.
    pub fn stale_for(&self) -> i64 {
        match self.last_loaded.load(Ordering::SeqCst) {
            0 => i64::MAX,
            at => (now_micros() - at).max(0),
        }
    }
}

/// The index and its freshness, shared by the API and the feeders.
pub struct State {
    pub index: RwLock<Index>,
    pub identity: SourceState,
    pub tenancy: SourceState,
    pub own: OwnState,
    /// Woken whenever a revision is applied (read-your-writes waits on it).
    pub applied: Notify,
    pub max_lag: Duration,
    pub consistency_wait: Duration,
    pub database: Database,
    reload: tokio::sync::Mutex<()>,
    /// Taken by every writer of the index, so a snapshot rebuilt on a copy loses no change
    /// applied meanwhile (readers never take it).
    writers: std::sync::Mutex<()>,
}

impl State {
    pub fn new(index: Index, database: Database, max_lag: Duration, consistency_wait: Duration) -> Arc<Self> {
        Arc::new(Self {
            index: RwLock::new(index),
            identity: SourceState::default(),
            tenancy: SourceState::default(),
            own: OwnState::default(),
            applied: Notify::new(),
            max_lag,
            consistency_wait,
            database,
            reload: tokio::sync::Mutex::new(()),
            writers: std::sync::Mutex::new(()),
        })
    }

    /// A read guard; a poisoned lock (a panic while writing) still reads the last state.
    pub fn read(&self) -> RwLockReadGuard<'_, Index> {
        self.index.read().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn write<T>(&self, f: impl FnOnce(&mut Index) -> T) -> T {
        let _writers = self.writers.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut guard = self.index.write().unwrap_or_else(std::sync::PoisonError::into_inner);
        let out = f(&mut guard);
        drop(guard);
        self.applied.notify_waiters();
        out
    }

    /// A large change (a whole snapshot: seconds of work at 100,000 users) made on a copy of
    /// the index while decisions go on reading the current one; then the two are swapped,
    /// which is all the write lock covers. Costs a second copy of the index meanwhile.
    fn rebuild(&self, f: impl FnOnce(&mut Index)) {
        let _writers = self.writers.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut next = self.read().clone();
        f(&mut next);
        {
            let mut guard = self.index.write().unwrap_or_else(std::sync::PoisonError::into_inner);
            std::mem::swap(&mut *guard, &mut next);
        }
        self.applied.notify_waiters();
        // `next` now holds the old index; it is freed here, outside the lock.
    }

    /// The fail-closed gate: both snapshots loaded; neither stream silent, nor holding back a
    /// known revision unapplied, beyond the bound; authz's own data read within the bound.
    pub fn ready(&self) -> Result<(), ApiError> {
        let bound = self.max_lag.as_micros() as i64;
        for (name, s) in [("identity", &self.identity), ("tenancy", &self.tenancy)] {
            if !s.snapshot_loaded.load(Ordering::SeqCst) {
                return Err(ApiError::new(
                    ErrorReason::IndexNotLoaded,
                    format!("the {name} snapshot is not loaded yet"),
                ));
            }
            let lag = s.silent_for();
            if lag > bound {
                return Err(ApiError::new(
                    ErrorReason::IndexStale,
                    format!("the {name} stream has been silent for {} ms", lag / 1000),
                ));
            }
            let behind = s.behind_for();
            if behind > bound {
                return Err(ApiError::new(
                    ErrorReason::IndexStale,
                    format!(
                        "the {name} stream's revision {} has waited unapplied for {} ms (applied: {})",
                        s.latest_known.load(Ordering::SeqCst),
                        behind / 1000,
                        s.applied.load(Ordering::SeqCst)
                    ),
                ));
            }
        }
        let own = self.own.stale_for();
        if own > bound {
            return Err(ApiError::new(
                ErrorReason::IndexStale,
                if own == i64::MAX {
                    "authz's own data has not been read yet".to_owned()
                } else {
                    format!("authz's own data could not be read for {} ms", own / 1000)
                },
            ));
        }
        Ok(())
    }

    pub fn revisions(&self) -> Revisions {
        self.read().revisions
    }

    /// Waits (bounded) until the index is at least as fresh as `token`; NOT_CAUGHT_UP otherwise.
    pub async fn at_least(&self, token: &[Revision]) -> Result<(), ApiError> {
        let mut want = Revisions::default();
        for r in token {
            match RevisionSource::try_from(r.source) {
                Ok(RevisionSource::Identity) => want.identity = want.identity.max(r.value),
                Ok(RevisionSource::Tenancy) => want.tenancy = want.tenancy.max(r.value),
                Ok(RevisionSource::Authz) => want.authz = want.authz.max(r.value),
                _ => {
                    return Err(ApiError::new(
                        ErrorReason::InvalidConsistencyToken,
                        "the consistency token names an unknown source",
                    ));
                }
            }
        }
        let deadline = tokio::time::Instant::now() + self.consistency_wait;
        loop {
            let notified = self.applied.notified();
            let have = self.revisions();
            if have.identity >= want.identity && have.tenancy >= want.tenancy && have.authz >= want.authz {
                return Ok(());
            }
            if have.authz < want.authz {
                // Our own schema: no stream to wait for, read it now.
                self.reload_own().await?;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                let have = self.revisions();
                if have.identity >= want.identity && have.tenancy >= want.tenancy && have.authz >= want.authz {
                    return Ok(());
                }
                return Err(ApiError::new(
                    ErrorReason::NotCaughtUp,
                    format!(
                        "this replica is at identity {} / tenancy {} / authz {}, behind the requested token",
                        have.identity, have.tenancy, have.authz
                    ),
                ));
            }
        }
    }

    /// Reloads authz's own data if its revision moved. Each successful read (even one that
    /// finds nothing new) marks the data fresh; failures leave [`OwnState::last_loaded`] where
    /// it was, so the replica fails closed once they last beyond the lag bound.
    pub async fn reload_own(&self) -> Result<(), ApiError> {
        let _one_at_a_time = self.reload.lock().await;
        let read_at = now_micros();
        let current = store::revision(&self.database).await.map_err(ApiError::internal)?;
        self.own.latest_known.fetch_max(current, Ordering::SeqCst);
        if current <= self.revisions().authz && current != 0 {
            self.own.last_loaded.fetch_max(read_at, Ordering::SeqCst);
            return Ok(());
        }
        let policy = self.read().policy.clone();
        let data = store::load_own(&self.database, &policy).await.map_err(ApiError::internal)?;
        self.replace_own(|index| (data.revision >= index.revisions.authz).then(|| index.prepare_own(data)));
        self.own.last_loaded.fetch_max(read_at, Ordering::SeqCst);
        Ok(())
    }

    /// Replaces authz's own data: `prepare` builds it from the current index while decisions
    /// go on reading it (every write to any replica's schema lands here, so it must not stall
    /// them); the write lock covers only the swap. The writers' mutex is held throughout, so
    /// the slots it planned are still free when it is installed. `None`: nothing to replace.
    fn replace_own(&self, prepare: impl FnOnce(&Index) -> Option<PreparedOwn>) {
        let _writers = self.writers.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let Some(prepared) = prepare(&self.read()) else { return };
        let replaced = {
            let mut guard = self.index.write().unwrap_or_else(std::sync::PoisonError::into_inner);
            guard.install_own(prepared)
        };
        self.applied.notify_waiters();
        // The old data is freed here, outside the lock.
        drop(replaced);
    }
}

/// A change-stream message, classified.
pub enum Msg<C> {
    Change { change: C, revision: u64, end_of_revision: bool },
    SnapshotEnd(u64),
    Heartbeat(u64),
}

/// How to open, read and apply one stream.
pub trait Source: Send + Sync + 'static {
    type Response: Send + 'static;
    type Change: Send + 'static;
    const NAME: &'static str;
    fn open(&self, from: u64) -> impl Future<Output = Result<tonic::Streaming<Self::Response>, tonic::Status>> + Send;
    fn classify(response: Self::Response) -> Option<Msg<Self::Change>>;
    fn apply(index: &mut Index, change: &Self::Change);
    fn reset(index: &mut Index);
    fn set_revision(index: &mut Index, revision: u64);
    fn progress(state: &State) -> &SourceState;
}

/// identity-svc's stream; Watch is a service call (the ServiceToken is attached).
pub struct IdentitySource(pub IdentityServiceClient<TracedChannel>, pub ServiceToken);
/// tenancy-svc's stream; Watch is a service call (the ServiceToken is attached).
pub struct TenancySource(pub TenancyServiceClient<TracedChannel>, pub ServiceToken);

impl Source for IdentitySource {
    type Response = idp::WatchResponse;
    type Change = idp::IdentityChange;
    const NAME: &'static str = "identity";
    async fn open(&self, from: u64) -> Result<tonic::Streaming<Self::Response>, tonic::Status> {
        let mut request = tonic::Request::new(idp::WatchRequest { from_revision: from });
        self.1.attach(crate::config::SERVICE, &mut request);
        Ok(self.0.clone().watch(request).await?.into_inner())
    }
    fn classify(response: Self::Response) -> Option<Msg<Self::Change>> {
        Some(match response.kind? {
            idp::watch_response::Kind::Change(c) => {
                Msg::Change { revision: c.revision, end_of_revision: c.end_of_revision, change: c }
            }
            idp::watch_response::Kind::SnapshotEnd(e) => Msg::SnapshotEnd(e.revision),
            idp::watch_response::Kind::Heartbeat(h) => Msg::Heartbeat(h.revision),
        })
    }
    fn apply(index: &mut Index, change: &Self::Change) {
        convert::apply_identity(index, change);
    }
    fn reset(index: &mut Index) {
        index.reset_identity();
    }
    fn set_revision(index: &mut Index, revision: u64) {
        index.revisions.identity = revision;
    }
    fn progress(state: &State) -> &SourceState {
        &state.identity
    }
}

impl Source for TenancySource {
    type Response = tnp::WatchResponse;
    type Change = tnp::TenancyChange;
    const NAME: &'static str = "tenancy";
    async fn open(&self, from: u64) -> Result<tonic::Streaming<Self::Response>, tonic::Status> {
        let mut request = tonic::Request::new(tnp::WatchRequest { from_revision: from });
        self.1.attach(crate::config::SERVICE, &mut request);
        Ok(self.0.clone().watch(request).await?.into_inner())
    }
    fn classify(response: Self::Response) -> Option<Msg<Self::Change>> {
        Some(match response.kind? {
            tnp::watch_response::Kind::Change(c) => {
                Msg::Change { revision: c.revision, end_of_revision: c.end_of_revision, change: c }
            }
            tnp::watch_response::Kind::SnapshotEnd(e) => Msg::SnapshotEnd(e.revision),
            tnp::watch_response::Kind::Heartbeat(h) => Msg::Heartbeat(h.revision),
        })
    }
    fn apply(index: &mut Index, change: &Self::Change) {
        convert::apply_tenancy(index, change);
    }
    fn reset(index: &mut Index) {
        index.reset_tenancy();
    }
    fn set_revision(index: &mut Index, revision: u64) {
        index.revisions.tenancy = revision;
    }
    fn progress(state: &State) -> &SourceState {
        &state.tenancy
    }
}

/// Follows one stream until `stopping`: snapshot, live changes, resume after breaks.
pub async fn follow<S: Source>(state: Arc<State>, source: S, reconnect: Duration, stopping: CancellationToken) {
    loop {
        let progress = S::progress(&state);
        let from =
            if progress.snapshot_loaded.load(Ordering::SeqCst) { progress.applied.load(Ordering::SeqCst) } else { 0 };
        let opened = tokio::select! {
            _ = stopping.cancelled() => return,
            opened = source.open(from) => opened,
        };
        match opened {
            Ok(mut stream) => {
                tracing::info!(source = S::NAME, from, "following change stream");
                if let Err(status) = read_stream::<S>(&state, &mut stream, from, &stopping).await {
                    let reason = tether_runtime::error::reason_of(&status);
                    if reason.as_deref() == Some("REVISION_COMPACTED") {
                        // Too far behind to resume: take a fresh snapshot.
                        progress.snapshot_loaded.store(false, Ordering::SeqCst);
                    }
                    tracing::warn!(source = S::NAME, error = %status.message(), "change stream broke; reconnecting");
                }
            }
            Err(status) => tracing::warn!(source = S::NAME, error = %status.message(), "cannot open change stream"),
        }
        if stopping.is_cancelled() {
            return;
        }
        tokio::select! {
            _ = stopping.cancelled() => return,
            _ = tokio::time::sleep(reconnect) => {}
        }
    }
}

async fn read_stream<S: Source>(
    state: &State,
    stream: &mut tonic::Streaming<S::Response>,
    from: u64,
    stopping: &CancellationToken,
) -> Result<(), tonic::Status> {
    let progress = S::progress(state);
    let mut in_snapshot = from == 0;
    let mut batch: Vec<S::Change> = Vec::new();
    loop {
        let message = tokio::select! {
            _ = stopping.cancelled() => return Ok(()),
            m = stream.message() => m?,
        };
        let Some(message) = message else {
            return Err(tonic::Status::unavailable("the stream ended"));
        };
        let Some(msg) = S::classify(message) else { continue };
        match msg {
            Msg::Change { change, revision, end_of_revision } => {
                progress.heard(revision);
                batch.push(change);
                if !in_snapshot && end_of_revision {
                    let changes = std::mem::take(&mut batch);
                    state.write(|index| {
                        for c in &changes {
                            S::apply(index, c);
                        }
                        index.finish();
                        S::set_revision(index, revision);
                    });
                    progress.applied_up_to(revision);
                }
            }
            Msg::SnapshotEnd(revision) => {
                progress.heard(revision);
                let changes = std::mem::take(&mut batch);
                state.rebuild(|index| {
                    S::reset(index);
                    for c in &changes {
                        S::apply(index, c);
                    }
                    index.finish();
                    index.compact();
                    S::set_revision(index, revision);
                });
                progress.applied_up_to(revision);
                progress.snapshot_loaded.store(true, Ordering::SeqCst);
                in_snapshot = false;
                tracing::info!(source = S::NAME, revision, "snapshot loaded");
            }
            Msg::Heartbeat(revision) => {
                progress.heard(revision);
                // Every change up to the heartbeat's revision has been sent: revisions that
                // carried nothing for us are applied too.
                // A revision still waiting for its end marker keeps the source behind (see
                // `SourceState::behind_for`), however often heartbeats come.
                if !in_snapshot && batch.is_empty() && revision > progress.applied.load(Ordering::SeqCst) {
                    state.write(|index| S::set_revision(index, revision));
                    progress.applied_up_to(revision);
                }
            }
        }
    }
}

/// Polls authz's schema for writes other replicas made.
pub async fn follow_own(state: Arc<State>, every: Duration, stopping: CancellationToken) {
    loop {
        if let Err(e) = state.reload_own().await {
            tracing::warn!(error = %e.message, "cannot reload authz data");
        }
        tokio::select! {
            _ = stopping.cancelled() => return,
            _ = tokio::time::sleep(every) => {}
        }
    }
}

/// Keeps health in step with the fail-closed gate.
pub async fn report_health(
    state: Arc<State>,
    health: tether_runtime::server::HealthReporter,
    stopping: CancellationToken,
) {
    loop {
        health.set_serving(state.ready().is_ok());
        tokio::select! {
            _ = stopping.cancelled() => return,
            _ = tokio::time::sleep(Duration::from_millis(100)) => {}
        }
    }
}

pub use audit::AuditSink;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::policy::{Policy, shipped_pack};

    #[tokio::test]
    async fn decisions_keep_reading_while_a_snapshot_is_rebuilt() {
        let dir = std::env::temp_dir().join(format!("authz-rebuild-{}", uuid::Uuid::new_v4().simple()));
        let target = tether_runtime::config::DatabaseTarget::Sqlite(dir.join("authz.db"));
        let database =
            Database::open(&target, "authz", crate::store::MIGRATIONS).await.unwrap_or_else(|e| panic!("{e}"));
        let policy = Policy::parse(shipped_pack("msp-assets").unwrap_or_default(), 0).unwrap_or_else(|e| panic!("{e}"));
        let state = State::new(Index::new(policy), database, Duration::from_secs(5), Duration::from_secs(1));
        state.rebuild(|index| {
            // The whole rebuild runs beside readers: the lock is free for them.
            assert!(state.index.try_read().is_ok(), "a reader would wait for the rebuild");
            index.revisions.identity = 7;
        });
        assert_eq!(state.revisions().identity, 7, "the rebuilt copy is what readers see afterwards");
        // A plain write excludes readers while it runs (the contrast the test relies on).
        state.write(|_| assert!(state.index.try_read().is_err()));
        let _ = std::fs::remove_dir_all(dir);
    }

    #[tokio::test]
    async fn decisions_keep_reading_while_authz_data_is_reloaded() {
        let dir = std::env::temp_dir().join(format!("authz-own-{}", uuid::Uuid::new_v4().simple()));
        let target = tether_runtime::config::DatabaseTarget::Sqlite(dir.join("authz.db"));
        let database =
            Database::open(&target, "authz", crate::store::MIGRATIONS).await.unwrap_or_else(|e| panic!("{e}"));
        let policy = Policy::parse(shipped_pack("msp-assets").unwrap_or_default(), 0).unwrap_or_else(|e| panic!("{e}"));
        let state = State::new(Index::new(policy), database.clone(), Duration::from_secs(5), Duration::from_secs(1));
        // A write to the schema (an override for a user the index has not seen yet).
        let user = uuid::Uuid::new_v4();
        let record = crate::domain::index::OverrideRecord {
            user,
            permission: "billing.manage".into(),
            tenant: None,
            deny: true,
            note: String::new(),
            created_by: String::new(),
            created_at_micros: 1,
        };
        let revision = store::set_override(&database, &record, 10, &[]).await.unwrap_or_else(|e| panic!("{e}"));
        let policy = state.read().policy.clone();
        let data = store::load_own(&database, &policy).await.unwrap_or_else(|e| panic!("{e}"));
        state.replace_own(|index| {
            // The whole build runs beside readers: the lock is free for them.
            assert!(state.index.try_read().is_ok(), "a reader would wait for the reload");
            Some(index.prepare_own(data))
        });
        assert_eq!(state.revisions().authz, revision, "the new data is what readers see afterwards");
        assert_eq!(state.read().overrides(), std::slice::from_ref(&record));
        // And the path every write takes builds it the same way.
        state.reload_own().await.unwrap_or_else(|e| panic!("{}", e.message));
        assert_eq!(state.read().overrides(), std::slice::from_ref(&record));
        let _ = std::fs::remove_dir_all(dir);
    }
}
