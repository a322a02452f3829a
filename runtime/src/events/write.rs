//! The one write recipe every service follows.

use sqlx::{Any, AnyConnection, Transaction};
use tether_proto::common::v1::AuditEvent;

use super::changes::{ChangeMessage, current_revision, next_revision, record_audit, record_changes};
use crate::db::Database;

/// A service without a change stream (authz-svc) writes `Write<NoChanges>`.
pub type NoChanges = ();

/// A write in progress. [`Write::begin`] opens the write transaction and takes the next
/// revision; the service makes its change through [`Write::conn`] and names what it did with
/// [`Write::change`] (the change-stream events) and [`Write::audit`] (the audit events);
/// [`Write::commit`] records both in the outbox in the same transaction, commits, and wakes
/// local watchers and relays. Dropping a `Write` rolls everything back.
pub struct Write<C: ChangeMessage> {
    database: Database,
    tx: Transaction<'static, Any>,
    revision: u64,
    changes: Vec<C>,
    audits: Vec<AuditEvent>,
}

impl<C: ChangeMessage> Write<C> {
    pub async fn begin(database: &Database) -> Result<Self, sqlx::Error> {
        let mut tx = database.begin_write().await?;
        // First in the transaction: the counter's row lock, held until commit, is what makes
        // revisions visible in order.
        let revision = next_revision(&mut tx).await?;
        Ok(Self { database: database.clone(), tx, revision, changes: Vec::new(), audits: Vec::new() })
    }

    /// The revision this write commits as.
    pub fn revision(&self) -> u64 {
        self.revision
    }

    pub fn conn(&mut self) -> &mut AnyConnection {
        &mut self.tx
    }

    pub fn tx(&mut self) -> &mut Transaction<'static, Any> {
        &mut self.tx
    }

    pub fn change(&mut self, change: C) {
        self.changes.push(change);
    }

    pub fn changes(&mut self, changes: impl IntoIterator<Item = C>) {
        self.changes.extend(changes);
    }

    pub fn audit(&mut self, event: AuditEvent) {
        self.audits.push(event);
    }

    pub fn has_changes(&self) -> bool {
        !self.changes.is_empty()
    }

    pub fn has_audits(&self) -> bool {
        !self.audits.is_empty()
    }

    /// Records the changes and audit events, commits, and wakes followers; returns the
    /// revision.
    pub async fn commit(mut self) -> Result<u64, sqlx::Error> {
        if !self.changes.is_empty() {
            record_changes(&mut self.tx, self.revision, std::mem::take(&mut self.changes)).await?;
        }
        record_audit(&mut self.tx, &self.audits).await?;
        self.tx.commit().await?;
        self.database.notify_committed();
        Ok(self.revision)
    }

    /// Like [`Self::commit`] for a write that may turn out to change nothing (setting what is
    /// already set): without a change it is rolled back and answers the latest committed
    /// revision, so a repeated call costs no revision and leaves no audit event.
    pub async fn commit_if_changed(self) -> Result<u64, sqlx::Error> {
        if self.changes.is_empty() {
            let database = self.database.clone();
            self.tx.rollback().await?;
            return current_revision(database.pool()).await;
        }
        self.commit().await
    }
}

/// Records audit events of something that changed no state (a login, a switch of tenant, a
/// decision) without taking a revision; returns the latest committed revision. The events are
/// consumed as they are built, a group at a time, so a long batch never holds a runtime worker
/// for all of its events at once.
pub async fn record_audit_only(
    database: &Database,
    events: impl IntoIterator<Item = AuditEvent> + Send,
) -> Result<u64, sqlx::Error> {
    const GROUP: usize = 50;
    let mut tx = database.begin_write().await?;
    let mut group = Vec::with_capacity(GROUP);
    for event in events {
        group.push(event);
        if group.len() == GROUP {
            record_audit(&mut tx, &group).await?;
            group.clear();
        }
    }
    if !group.is_empty() {
        record_audit(&mut tx, &group).await?;
    }
    let revision = current_revision(&mut *tx).await?;
    tx.commit().await?;
    database.notify_committed();
    Ok(revision)
}
