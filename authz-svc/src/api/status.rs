//! The index's own status, for operators.

use tether_proto::{
    authz::v1 as pb,
    common::v1::{ErrorReason, RevisionSource},
};
use tether_runtime::{access::caller, error::ApiError};
use tonic::{Request, Response};

use super::{Authz, Reply, convert as cv};
use tether_runtime::db::timestamp;

impl Authz {
    pub(super) async fn get_index_status(
        &self,
        request: Request<pb::GetIndexStatusRequest>,
    ) -> Reply<pb::GetIndexStatusResponse> {
        // Internal and MSP staff: a service by its token (not an anonymous caller, even where
        // decision calls are open), or a person who is MSP staff.
        let who = caller(request.metadata(), &*self.authenticator, &self.service_token).await?;
        if who.user().is_some_and(|p| !p.is_msp_staff) {
            return Err(ApiError::new(ErrorReason::PermissionDenied, "MSP staff only").into());
        }
        use std::sync::atomic::Ordering;
        let duration = |micros: i64| prost_types::Duration {
            seconds: micros / 1_000_000,
            nanos: ((micros % 1_000_000) * 1000) as i32,
        };
        let source = |kind: RevisionSource, s: &crate::events::SourceState| {
            let heard = s.last_heard.load(Ordering::SeqCst);
            pb::SourceStatus {
                source: kind as i32,
                applied_revision: s.applied.load(Ordering::SeqCst),
                latest_known_revision: s.latest_known.load(Ordering::SeqCst),
                snapshot_loaded: s.snapshot_loaded.load(Ordering::SeqCst),
                last_heard_at: (heard != 0).then(|| timestamp(heard)),
                lag: Some(duration(s.lag())),
            }
        };
        let index = self.state.read();
        // authz's own schema: "heard" is its last successful read, the lag the time since.
        let own = &self.state.own;
        let own_read = own.last_loaded.load(Ordering::SeqCst);
        let own_status = pb::SourceStatus {
            source: RevisionSource::Authz as i32,
            applied_revision: index.revisions.authz,
            latest_known_revision: own.latest_known.load(Ordering::SeqCst),
            snapshot_loaded: own_read != 0,
            last_heard_at: (own_read != 0).then(|| timestamp(own_read)),
            lag: Some(duration(if own_read == 0 { 0 } else { own.stale_for() })),
        };
        Ok(Response::new(pb::GetIndexStatusResponse {
            serving: self.state.ready().is_ok(),
            sources: vec![
                source(RevisionSource::Identity, &self.state.identity),
                source(RevisionSource::Tenancy, &self.state.tenancy),
                own_status,
            ],
            current: Some(cv::token(index.revisions)),
            user_count: index.user_count() as i64,
            tenant_count: index.tenant_count() as i64,
            membership_count: index.membership_count() as i64,
        }))
    }
}
