//! gRPC handlers: decode the request, resolve the caller and what they may see, call the store,
//! encode the reply. One file per family: `ingest`, `read` (search, one event, stats),
//! `export`, `tail`, `integrity` (verification, checkpoints), `retention` (legal holds, purges);
//! `guard` decides visibility and
//! `convert` writes records as files.

mod call_classes;
mod convert;
mod export;
mod guard;
pub(crate) mod ingest;
mod integrity;
mod read;
mod retention;
mod tail;

pub use call_classes::SERVED;

use std::{sync::Arc, time::Duration};

use tether_proto::audit::v1::{self as pb, audit_service_server::AuditService};
use tether_runtime::{
    ApiError,
    access::{Authenticator, Authorizer, ServiceToken},
    db::Database,
};
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status, codegen::BoxStream};

use crate::{
    deps::Directory,
    domain::{checkpoint::CheckpointKey, event::EventLimits},
};

/// What every handler shares.
pub struct Audit {
    pub database: Database,
    pub authenticator: Arc<dyn Authenticator>,
    pub authorizer: Arc<dyn Authorizer>,
    pub directory: Arc<dyn Directory>,
    pub service_token: ServiceToken,
    pub limits: EventLimits,
    pub checkpoint_key: Option<CheckpointKey>,
    pub tail_poll: Duration,
    pub tail_heartbeat: Duration,
    pub retention: Duration,
    /// Cancelled at shutdown: long streams (tail, export) end.
    pub stopping: CancellationToken,
}

#[derive(Clone)]
pub struct AuditApi {
    inner: Arc<Audit>,
}

impl AuditApi {
    pub fn new(inner: Arc<Audit>) -> Self {
        Self { inner }
    }
}

/// What a handler returns; the trait impl turns the error into a status.
type Reply<T> = Result<Response<T>, ApiError>;
type Answer<T> = Result<Response<T>, Status>;

#[tonic::async_trait]
impl AuditService for AuditApi {
    async fn ingest(&self, request: Request<pb::IngestRequest>) -> Answer<pb::IngestResponse> {
        self.inner.ingest(request).await.map_err(Status::from)
    }
    async fn search_events(&self, request: Request<pb::SearchEventsRequest>) -> Answer<pb::SearchEventsResponse> {
        self.inner.search_events(request).await.map_err(Status::from)
    }
    async fn get_event(&self, request: Request<pb::GetEventRequest>) -> Answer<pb::GetEventResponse> {
        self.inner.get_event(request).await.map_err(Status::from)
    }
    async fn get_stats(&self, request: Request<pb::GetStatsRequest>) -> Answer<pb::GetStatsResponse> {
        self.inner.get_stats(request).await.map_err(Status::from)
    }
    async fn export_events(
        &self,
        request: Request<pb::ExportEventsRequest>,
    ) -> Answer<BoxStream<pb::ExportEventsResponse>> {
        self.inner.clone().export_events(request).await.map_err(Status::from)
    }
    async fn verify_integrity(
        &self,
        request: Request<pb::VerifyIntegrityRequest>,
    ) -> Answer<pb::VerifyIntegrityResponse> {
        self.inner.verify_integrity(request).await.map_err(Status::from)
    }
    async fn tail_events(&self, request: Request<pb::TailEventsRequest>) -> Answer<BoxStream<pb::TailEventsResponse>> {
        self.inner.clone().tail_events(request).await.map_err(Status::from)
    }
    async fn list_checkpoints(
        &self,
        request: Request<pb::ListCheckpointsRequest>,
    ) -> Answer<pb::ListCheckpointsResponse> {
        self.inner.list_checkpoints(request).await.map_err(Status::from)
    }
    async fn set_legal_hold(&self, request: Request<pb::SetLegalHoldRequest>) -> Answer<pb::SetLegalHoldResponse> {
        self.inner.set_legal_hold(request).await.map_err(Status::from)
    }
    async fn remove_legal_hold(
        &self,
        request: Request<pb::RemoveLegalHoldRequest>,
    ) -> Answer<pb::RemoveLegalHoldResponse> {
        self.inner.remove_legal_hold(request).await.map_err(Status::from)
    }
    async fn list_legal_holds(
        &self,
        request: Request<pb::ListLegalHoldsRequest>,
    ) -> Answer<pb::ListLegalHoldsResponse> {
        self.inner.list_legal_holds(request).await.map_err(Status::from)
    }
    async fn purge_expired(&self, request: Request<pb::PurgeExpiredRequest>) -> Answer<pb::PurgeExpiredResponse> {
        self.inner.purge_expired(request).await.map_err(Status::from)
    }
}
