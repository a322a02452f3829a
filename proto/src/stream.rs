//! The shape every `Watch` change stream shares. Each streaming service's `…Change` message
//! carries `revision`, `committed_at` and `end_of_revision`, and its `WatchResponse` is one of a
//! change, a `SnapshotEnd` or a `Heartbeat`. The outbox and the Watch server (in the runtime
//! crate) work on these traits only; the impls sit here, next to the generated types.

use prost_types::Timestamp;

use crate::common::v1::{Heartbeat, SnapshotEnd};

/// A change-stream message: a service's `…Change` type. The outbox stamps it with its revision,
/// commit time and whether it closes its revision.
pub trait ChangeMessage: prost::Message + Default + Clone + Send + Sync + 'static {
    fn stamp(&mut self, revision: u64, committed_at: Timestamp, end_of_revision: bool);
}

/// A service's `WatchResponse`, built from its parts.
pub trait WatchMessage: Send + 'static {
    type Change: ChangeMessage;
    fn change(change: Self::Change) -> Self;
    fn snapshot_end(revision: u64) -> Self;
    fn heartbeat(revision: u64, sent_at: Timestamp) -> Self;
}

/// What a service without a change stream records: nothing.
impl ChangeMessage for () {
    fn stamp(&mut self, _revision: u64, _committed_at: Timestamp, _end_of_revision: bool) {}
}

/// The stream of package `$package` (`crate::$package::v1`), whose change message is `$change`.
macro_rules! change_stream {
    ($package:ident, $change:ident) => {
        impl ChangeMessage for crate::$package::v1::$change {
            fn stamp(&mut self, revision: u64, committed_at: Timestamp, end_of_revision: bool) {
                self.revision = revision;
                self.committed_at = Some(committed_at);
                self.end_of_revision = end_of_revision;
            }
        }

        impl WatchMessage for crate::$package::v1::WatchResponse {
            type Change = crate::$package::v1::$change;

            fn change(change: Self::Change) -> Self {
                Self { kind: Some(crate::$package::v1::watch_response::Kind::Change(change)) }
            }

            fn snapshot_end(revision: u64) -> Self {
                Self { kind: Some(crate::$package::v1::watch_response::Kind::SnapshotEnd(SnapshotEnd { revision })) }
            }

            fn heartbeat(revision: u64, sent_at: Timestamp) -> Self {
                let heartbeat = Heartbeat { revision, sent_at: Some(sent_at) };
                Self { kind: Some(crate::$package::v1::watch_response::Kind::Heartbeat(heartbeat)) }
            }
        }
    };
}

change_stream!(identity, IdentityChange);
change_stream!(tenancy, TenancyChange);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{identity::v1 as identity, tenancy::v1 as tenancy};

    fn at(seconds: i64) -> Timestamp {
        Timestamp { seconds, nanos: 0 }
    }

    #[test]
    fn a_change_is_stamped_with_its_revision_time_and_end() {
        let mut change = identity::IdentityChange::default();
        change.stamp(7, at(70), true);
        assert_eq!((change.revision, change.committed_at, change.end_of_revision), (7, Some(at(70)), true));
        let mut change = tenancy::TenancyChange::default();
        change.stamp(8, at(80), false);
        assert_eq!((change.revision, change.committed_at, change.end_of_revision), (8, Some(at(80)), false));
    }

    #[test]
    fn a_watch_response_is_a_change_a_snapshot_end_or_a_heartbeat() {
        use identity::watch_response::Kind;
        let change = identity::IdentityChange { revision: 3, ..Default::default() };
        let sent = <identity::WatchResponse as WatchMessage>::change(change.clone());
        assert_eq!(sent.kind, Some(Kind::Change(change)));
        let end = <identity::WatchResponse as WatchMessage>::snapshot_end(4);
        assert_eq!(end.kind, Some(Kind::SnapshotEnd(SnapshotEnd { revision: 4 })));
        let beat = <tenancy::WatchResponse as WatchMessage>::heartbeat(5, at(50));
        let expected = Heartbeat { revision: 5, sent_at: Some(at(50)) };
        assert_eq!(beat.kind, Some(tenancy::watch_response::Kind::Heartbeat(expected)));
    }
}
