//! tenancy-svc's change-stream messages. The impls live here because the orphan rule forbids
//! them in tenancy-svc (both the traits and the generated types are foreign there).

use tether_proto::{
    common::v1::{Heartbeat, SnapshotEnd},
    tenancy::v1::{TenancyChange, WatchResponse, watch_response::Kind},
};

use super::{ChangeMessage, WatchMessage};

impl ChangeMessage for TenancyChange {
    fn stamp(&mut self, revision: u64, committed_at: prost_types::Timestamp, end_of_revision: bool) {
        self.revision = revision;
        self.committed_at = Some(committed_at);
        self.end_of_revision = end_of_revision;
    }
}

impl WatchMessage for WatchResponse {
    type Change = TenancyChange;

    fn change(change: TenancyChange) -> Self {
        Self { kind: Some(Kind::Change(change)) }
    }

    fn snapshot_end(revision: u64) -> Self {
        Self { kind: Some(Kind::SnapshotEnd(SnapshotEnd { revision })) }
    }

    fn heartbeat(revision: u64, sent_at: prost_types::Timestamp) -> Self {
        Self { kind: Some(Kind::Heartbeat(Heartbeat { revision, sent_at: Some(sent_at) })) }
    }
}
