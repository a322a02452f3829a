//! gRPC handlers: decode the request, call the domain, encode the reply. No SQL, no rules.
//!
//! None of the audit RPCs is built yet: each answers UNIMPLEMENTED / NOT_IMPLEMENTED, as the
//! contract says an RPC of v1 not implemented yet does. Ingest, being internal, first refuses
//! anyone but a Tether service.

mod call_classes;
pub use call_classes::SERVED;

use std::sync::Arc;

use tether_proto::{
    audit::v1::{self as pb, audit_service_server::AuditService},
    common::v1::ErrorReason,
};
use tether_runtime::{
    ApiError,
    access::{Authenticator, ServiceToken, require_service},
    db::Database,
};
use tonic::{Request, Response, Status};

pub struct AuditApi {
    #[allow(dead_code)] // used as the audit RPCs land
    database: Database,
    authenticator: Arc<dyn Authenticator>,
    service_token: ServiceToken,
}

impl AuditApi {
    pub fn new(database: Database, authenticator: Arc<dyn Authenticator>, service_token: ServiceToken) -> Self {
        Self { database, authenticator, service_token }
    }
}

type Reply<T> = Result<Response<T>, Status>;

fn not_implemented<T>(rpc: &str) -> Reply<T> {
    Err(ApiError::new(ErrorReason::NotImplemented, format!("{rpc} is not implemented yet")).into())
}

#[tonic::async_trait]
impl AuditService for AuditApi {
    async fn ingest(&self, request: Request<pb::IngestRequest>) -> Reply<pb::IngestResponse> {
        require_service(request.metadata(), self.authenticator.as_ref(), &self.service_token).await?;
        not_implemented("Ingest")
    }
    async fn search_events(&self, _request: Request<pb::SearchEventsRequest>) -> Reply<pb::SearchEventsResponse> {
        not_implemented("SearchEvents")
    }
    async fn get_event(&self, _request: Request<pb::GetEventRequest>) -> Reply<pb::GetEventResponse> {
        not_implemented("GetEvent")
    }
    async fn get_stats(&self, _request: Request<pb::GetStatsRequest>) -> Reply<pb::GetStatsResponse> {
        not_implemented("GetStats")
    }
    async fn export_events(
        &self,
        _request: Request<pb::ExportEventsRequest>,
    ) -> Reply<tonic::codegen::BoxStream<pb::ExportEventsResponse>> {
        not_implemented("ExportEvents")
    }
    async fn verify_integrity(
        &self,
        _request: Request<pb::VerifyIntegrityRequest>,
    ) -> Reply<pb::VerifyIntegrityResponse> {
        not_implemented("VerifyIntegrity")
    }
}
