//! The checkpoint publisher: every `TETHER_AUDIT_CHECKPOINT_INTERVAL_MS`, if records were added
//! since the latest checkpoint, signs the chain head and keeps the note. Several replicas may
//! publish; the first note for a sequence is kept.

use std::time::Duration;

use tether_runtime::db::{Database, now_micros};
use tokio_util::sync::CancellationToken;

use crate::{
    domain::{
        chain,
        checkpoint::{ChainState, CheckpointKey},
    },
    store::{self, checkpoints::StoredCheckpoint},
};

pub fn spawn(database: Database, key: CheckpointKey, interval: Duration, stopping: CancellationToken) {
    tokio::spawn(async move {
        loop {
            if let Err(e) = publish(&database, &key).await {
                tracing::warn!(error = %e, "could not publish an audit checkpoint; retrying at the next interval");
            }
            tokio::select! {
                _ = tokio::time::sleep(interval) => {}
                _ = stopping.cancelled() => return,
            }
        }
    });
}

/// Signs the head if it moved since the latest checkpoint; returns the new checkpoint.
pub async fn publish(database: &Database, key: &CheckpointKey) -> Result<Option<StoredCheckpoint>, sqlx::Error> {
    let (sequence, hash) = store::chain::head(database.pool()).await?;
    let latest = store::checkpoints::latest(database).await?;
    if sequence == 0 || latest.is_some_and(|c| c.sequence >= sequence) {
        return Ok(None);
    }
    let chain_hash = chain::parse_hash(&hash).ok_or_else(|| sqlx::Error::Protocol("chain head".into()))?;
    let state = ChainState { sequence, chain_hash, signed_at: now_micros() };
    let checkpoint =
        StoredCheckpoint { sequence, chain_hash: hash, signed_at: state.signed_at, note: key.sign(&state) };
    store::checkpoints::insert(database, &checkpoint).await?;
    tracing::info!(sequence, "audit checkpoint published");
    Ok(Some(checkpoint))
}
