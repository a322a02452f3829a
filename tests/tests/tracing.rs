//! A call carrying `traceparent` gets a server span in that trace, log lines of the call carry
//! the trace id, and an outbound call made while serving it carries the same trace id to the
//! next service.

use std::{
    io::Write,
    sync::{Arc, Mutex},
};

use opentelemetry::trace::{SpanKind, TraceId};
use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider};
use tether_proto::tenancy::v1::{
    GetAdminTenancyRequest, GetAdminTenancyResponse,
    tenancy_service_client::TenancyServiceClient,
    tenancy_service_server::{TenancyService, TenancyServiceServer},
};
use tether_runtime::{
    ServiceHost, ServiceSettings,
    client::{TracedChannel, connect_lazy},
    db::Database,
    server::{HealthReporter, ServedApi},
};
use tether_tests::{RunningService, TestDatabase};
use tonic::{Request, Response, Status, service::Routes};
use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};
use tracing_subscriber::{layer::SubscriberExt, util::SubscriberInitExt};

/// Serves GetAdminTenancy by calling the next service's health check: one hop downstream.
struct Relay {
    next: TracedChannel,
}

#[tonic::async_trait]
impl TenancyService for Relay {
    async fn get_admin_tenancy(
        &self,
        _request: Request<GetAdminTenancyRequest>,
    ) -> Result<Response<GetAdminTenancyResponse>, Status> {
        tracing::info!("relaying to the next service");
        HealthClient::new(self.next.clone()).check(HealthCheckRequest { service: String::new() }).await?;
        Ok(Response::new(GetAdminTenancyResponse::default()))
    }
}

#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trace_context_flows_in_and_out() {
    let exporter = InMemorySpanExporter::default();
    let provider = SdkTracerProvider::builder().with_simple_exporter(exporter.clone()).build();
    let logs = Captured::default();
    let writer = logs.clone();
    tracing_subscriber::registry()
        .with(tracing_subscriber::EnvFilter::new("info"))
        .with(tracing_subscriber::fmt::layer().json().with_current_span(true).with_writer(move || writer.clone()))
        .with(tether_runtime::telemetry::otel_layer(&provider))
        .init();

    let db = TestDatabase::fresh().await;
    // Downstream: the real identity service.
    let source = db.config().with("TETHER_SERVICE_TOKEN", "test-service-token-0123456789abcdef0123");
    let identity = identity_svc::prepare(identity_svc::Config::load(&source).unwrap()).await.unwrap();
    let downstream = RunningService::spawn("identity", identity.host).await;
    // Upstream: the relay, calling identity through the shared traced client.
    let settings = ServiceSettings::load(&db.config(), "relay", 0).unwrap();
    let database = Database::open(&settings.database, "relay", &[]).await.unwrap();
    let health = HealthReporter::new(&[]);
    health.set_serving(true);
    let relay = Relay { next: connect_lazy(&downstream.url()).unwrap() };
    let upstream = RunningService::spawn(
        "relay",
        ServiceHost {
            settings,
            api: ServedApi { name: "tether.tenancy.v1.TenancyService", classes: &[] },
            routes: Routes::new(TenancyServiceServer::new(relay)),
            health,
            database,
            stopping: Default::default(),
        },
    )
    .await;

    let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
    let mut request = Request::new(GetAdminTenancyRequest::default());
    request.metadata_mut().insert("traceparent", format!("00-{trace_id}-00f067aa0ba902b7-01").parse().unwrap());
    TenancyServiceClient::new(upstream.channel().await).get_admin_tenancy(request).await.unwrap();
    upstream.stop().await.unwrap();
    downstream.stop().await.unwrap();
    provider.force_flush().unwrap();

    let spans = exporter.get_finished_spans().unwrap();
    let server_span = |name: &str| {
        spans
            .iter()
            .find(|s| s.name == name && s.span_kind == SpanKind::Server)
            .unwrap_or_else(|| panic!("no server span {name}: {:?}", spans.iter().map(|s| &s.name).collect::<Vec<_>>()))
    };
    let expected = TraceId::from_hex(trace_id).unwrap();
    let inbound = server_span("/tether.tenancy.v1.TenancyService/GetAdminTenancy");
    assert_eq!(inbound.span_context.trace_id(), expected, "server span joins the caller's trace");
    assert_eq!(inbound.parent_span_id.to_string(), "00f067aa0ba902b7");
    let outbound = server_span("/grpc.health.v1.Health/Check");
    assert_eq!(outbound.span_context.trace_id(), expected, "the downstream call carried the trace");
    assert_eq!(outbound.parent_span_id, inbound.span_context.span_id());

    let logs = String::from_utf8(logs.0.lock().unwrap().clone()).unwrap();
    let relay_line = logs.lines().find(|l| l.contains("relaying to the next service")).expect("log line");
    assert!(relay_line.contains(trace_id), "log line carries the trace id: {relay_line}");
}
