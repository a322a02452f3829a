//! `Watch(from_revision)`: a snapshot (from 0) or a resume (from N), then live changes.
//!
//! Rules:
//!
//! 1. From 0: a snapshot of the current state, ending in `SnapshotEnd{revision}`, then live
//!    changes. From N: every change after N. A revision past the latest is OUT_OF_RANGE; one older
//!    than the log retains is FAILED_PRECONDITION / `REVISION_COMPACTED` (ask for a snapshot).
//! 2. Events carry full state (upserts and tombstones), so applying one twice is harmless.
//! 3. A revision that carries no change (a login, a no-op) is announced by a heartbeat as soon as
//!    the stream sees it committed: the stream reads the committed revision before it looks for
//!    changes, so when it finds none after its last one, every revision up to that read carried
//!    nothing and can be claimed. Otherwise a reader waiting for a token naming it would wait for
//!    the next change.
//! 4. Local writes wake the stream at once (`ChangeFeed::notify`); other replicas' writes are found
//!    by polling. The stream ends cleanly at shutdown rather than holding the drain open.
//! 5. Only other Tether services may call Watch (`access::require_service`): a stream carries
//!    every tenant, membership and user.

use std::{future::Future, pin::Pin, time::Duration};

use futures_util::Stream;
use tether_proto::common::v1::ErrorReason;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::Status;

use super::changes::{ChangeFeed, ChangeMessage as _};
use crate::{db::now_micros, error::ApiError};

pub use tether_proto::stream::WatchMessage;

#[derive(Debug, Clone, Copy)]
pub struct WatchOptions {
    /// How often an idle stream looks for changes written by other replicas. Local writes wake
    /// it at once.
    pub poll_interval: Duration,
    /// An idle stream sends a heartbeat this often.
    pub heartbeat_interval: Duration,
    /// Most revisions read per round trip to the database.
    pub batch_revisions: usize,
}

impl Default for WatchOptions {
    fn default() -> Self {
        Self {
            poll_interval: Duration::from_millis(250),
            heartbeat_interval: Duration::from_secs(5),
            batch_revisions: 256,
        }
    }
}

pub type WatchStream<R> = Pin<Box<dyn Stream<Item = Result<R, Status>> + Send>>;

/// Serves a Watch call. From 0 it sends `snapshot()` (the current state and the revision it was
/// read at), then `SnapshotEnd`; from N it sends every change after N. Then it follows the log
/// until the client goes away or the service stops (`stopping`), when the stream ends cleanly.
pub async fn watch_stream<R, S, Fut>(
    feed: ChangeFeed,
    from_revision: u64,
    snapshot: S,
    stopping: CancellationToken,
    options: WatchOptions,
) -> Result<WatchStream<R>, ApiError>
where
    R: WatchMessage,
    S: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = Result<(u64, Vec<R::Change>), ApiError>> + Send + 'static,
{
    if from_revision > 0 {
        // A revision past the latest is OUT_OF_RANGE (gRPC's code for reading past the end);
        // one older than retained is FAILED_PRECONDITION (ask for a snapshot instead).
        let current = feed.current_revision().await.map_err(ApiError::internal)?;
        if from_revision > current {
            return Err(ApiError::new(
                ErrorReason::RevisionAhead,
                format!("revision {from_revision} is ahead of the latest ({current})"),
            ));
        }
        let oldest = feed.oldest_retained().await.map_err(ApiError::internal)?;
        if oldest > 0 && from_revision + 1 < oldest {
            return Err(ApiError::new(
                ErrorReason::RevisionCompacted,
                format!("changes before revision {oldest} are no longer kept; watch from 0 for a snapshot"),
            ));
        }
    }
    let (tx, rx) = mpsc::channel::<Result<R, Status>>(64);
    tokio::spawn(async move {
        if let Err(status) = follow(feed, from_revision, snapshot, stopping, options, &tx).await {
            let _ = tx.send(Err(status)).await;
        }
    });
    Ok(Box::pin(ReceiverStream::new(rx)))
}

/// `Err` ends the stream with that status; `Ok` ends it cleanly.
async fn follow<R, S, Fut>(
    feed: ChangeFeed,
    from_revision: u64,
    snapshot: S,
    stopping: CancellationToken,
    options: WatchOptions,
    tx: &mpsc::Sender<Result<R, Status>>,
) -> Result<(), Status>
where
    R: WatchMessage,
    S: FnOnce() -> Fut,
    Fut: Future<Output = Result<(u64, Vec<R::Change>), ApiError>>,
{
    let mut last = from_revision;
    if from_revision == 0 {
        let (revision, items) = snapshot().await?;
        let committed_at = crate::db::timestamp(now_micros());
        let count = items.len();
        for (i, mut item) in items.into_iter().enumerate() {
            item.stamp(revision, committed_at, i + 1 == count);
            if tx.send(Ok(R::change(item))).await.is_err() {
                return Ok(());
            }
        }
        if tx.send(Ok(R::snapshot_end(revision))).await.is_err() {
            return Ok(());
        }
        last = revision;
    }
    let mut idle_since = tokio::time::Instant::now();
    loop {
        // Register for the wake-up before reading, so a commit between the read and the wait
        // is not missed.
        let notified = feed.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();

        // Read before the changes: every revision up to it has committed (revisions commit in
        // order), so if the read below finds nothing after `last`, the revisions between carry
        // no change and can be announced.
        let committed = feed.current_revision().await.map_err(|e| Status::from(ApiError::internal(e)))?;
        let batch = feed
            .read_after::<R::Change>(last, options.batch_revisions)
            .await
            .map_err(|e| Status::from(ApiError::internal(e)))?;
        if !batch.is_empty() {
            for stored in batch {
                last = stored.revision;
                if tx.send(Ok(R::change(stored.change))).await.is_err() {
                    return Ok(());
                }
            }
            idle_since = tokio::time::Instant::now();
            continue;
        }
        // A write that changed nothing followers see (a login, a no-op) still took a revision
        // and may have handed it out in a consistency token: announce it at once, or a reader
        // waiting for that token would wait for the next change.
        if committed > last || idle_since.elapsed() >= options.heartbeat_interval {
            last = last.max(committed);
            if tx.send(Ok(R::heartbeat(last, crate::db::timestamp(now_micros())))).await.is_err() {
                return Ok(());
            }
            idle_since = tokio::time::Instant::now();
        }
        tokio::select! {
            () = stopping.cancelled() => return Ok(()),
            () = tx.closed() => return Ok(()),
            () = &mut notified => {}
            () = tokio::time::sleep(options.poll_interval) => {}
        }
    }
}
