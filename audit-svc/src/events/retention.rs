//! The purge job: every `TETHER_AUDIT_PURGE_INTERVAL_MS`, the coming months' partitions are
//! made (`store::partitions`, PostgreSQL), expired records go (`store::retention`), and each
//! purge that removed something is audited as `audit.purge`.

use std::time::Duration;

use serde_json::json;
use tether_proto::common::v1::Actor;
use tether_runtime::{
    db::{Database, now_micros},
    events::{Audit, audit::system_actor},
};
use tokio_util::sync::CancellationToken;

use super::{SOURCE, record};
use crate::store::{
    partitions,
    retention::{self, Purged},
};

pub fn spawn(database: Database, retention: Duration, interval: Duration, stopping: CancellationToken) {
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = tokio::time::sleep(interval) => {}
                _ = stopping.cancelled() => return,
            }
            if let Err(e) = purge(&database, retention, system_actor("audit-svc/retention"), "").await {
                tracing::warn!(error = %e, "audit purge failed; retrying at the next interval");
            }
        }
    });
}

/// Purges what expired `retention` before now; returns the cutoff and what was done.
pub async fn purge(
    database: &Database,
    retention: Duration,
    actor: Actor,
    client_ip: &str,
) -> Result<(i64, Purged), sqlx::Error> {
    let now = now_micros();
    // Next months first, and any month whose records wait in the default partition.
    partitions::ensure(database, now).await?;
    let cutoff = now.saturating_sub(retention.as_micros() as i64);
    let purged = retention::purge(database, cutoff).await?;
    if purged.removed > 0 || purged.held > 0 {
        tracing::info!(
            removed = purged.removed,
            held = purged.held,
            through = purged.through,
            "expired audit events purged"
        );
        let event = Audit::new(SOURCE, actor, client_ip, "audit.purge", "audit_trail", "")
            .metadata(json!({
                "removed": purged.removed,
                "held": purged.held,
                "purged_through_sequence": purged.through,
                "cutoff_micros": cutoff,
            }))
            .build();
        record(database, event).await?;
    }
    Ok((cutoff, purged))
}
