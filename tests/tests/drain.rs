//! The shared server's drain, timeout and load-shedding behaviour, shown on a test double whose
//! one RPC takes as long as the test asks.

use std::time::{Duration, Instant};

use tether_proto::tenancy::v1::{
    GetAdminTenancyRequest, GetAdminTenancyResponse,
    tenancy_service_client::TenancyServiceClient,
    tenancy_service_server::{TenancyService, TenancyServiceServer},
};
use tether_runtime::{
    ServiceHost, ServiceSettings,
    db::Database,
    server::{HealthReporter, ServedApi},
};
use tether_tests::{RunningService, TestDatabase};
use tonic::{Code, Request, Response, Status, service::Routes};
use tonic_health::pb::{HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient};

/// Answers GetAdminTenancy after sleeping for the milliseconds given in `x-sleep-ms`.
struct SlowDouble;

#[tonic::async_trait]
impl TenancyService for SlowDouble {
    async fn get_admin_tenancy(
        &self,
        request: Request<GetAdminTenancyRequest>,
    ) -> Result<Response<GetAdminTenancyResponse>, Status> {
        let ms = request.metadata().get("x-sleep-ms").and_then(|v| v.to_str().ok()?.parse().ok()).unwrap_or(0);
        tokio::time::sleep(Duration::from_millis(ms)).await;
        Ok(Response::new(GetAdminTenancyResponse::default()))
    }
}

async fn host(extra: &[(&str, &str)]) -> ServiceHost {
    let db = TestDatabase::fresh().await;
    let mut source = db.config();
    for (k, v) in extra {
        source = source.with(*k, *v);
    }
    let settings = ServiceSettings::load(&source, "double", 0).unwrap();
    let database = Database::open(&settings.database, "double", &[]).await.unwrap();
    let health = HealthReporter::new(&["tether.tenancy.v1.TenancyService"]);
    health.set_serving(true);
    ServiceHost {
        settings,
        api: ServedApi { name: "tether.tenancy.v1.TenancyService", classes: &[] },
        routes: Routes::new(TenancyServiceServer::new(SlowDouble)),
        health,
        database,
        stopping: Default::default(),
    }
}

fn call_sleeping(ms: u64) -> Request<GetAdminTenancyRequest> {
    let mut request = Request::new(GetAdminTenancyRequest::default());
    request.metadata_mut().insert("x-sleep-ms", ms.to_string().parse().unwrap());
    request
}

#[tokio::test]
async fn a_call_in_flight_at_shutdown_completes() {
    let service = RunningService::spawn("double", host(&[]).await).await;
    let mut client = TenancyServiceClient::new(service.channel().await);
    let in_flight = tokio::spawn(async move { client.get_admin_tenancy(call_sleeping(800)).await });
    tokio::time::sleep(Duration::from_millis(200)).await;

    let addr = service.addr;
    let started = Instant::now();
    service.stop().await.unwrap();
    assert!(started.elapsed() < Duration::from_secs(5));
    assert!(started.elapsed() >= Duration::from_millis(400), "stop returned before the call finished");
    in_flight.await.unwrap().expect("the in-flight call completes with OK");

    // Once stopped, the port no longer accepts.
    assert!(tokio::net::TcpStream::connect(addr).await.is_err());
}

#[tokio::test]
async fn calls_outliving_the_grace_period_are_cut_and_shutdown_still_ends() {
    let service = RunningService::spawn("double", host(&[("TETHER_DOUBLE_SHUTDOWN_GRACE_MS", "300")]).await).await;
    let mut client = TenancyServiceClient::new(service.channel().await);
    let stuck = tokio::spawn(async move { client.get_admin_tenancy(call_sleeping(60_000)).await });
    tokio::time::sleep(Duration::from_millis(100)).await;
    let started = Instant::now();
    service.stop().await.unwrap();
    assert!(started.elapsed() < Duration::from_secs(2), "took {:?}", started.elapsed());
    assert!(stuck.await.unwrap().is_err(), "the cut call fails rather than hanging");
}

#[tokio::test]
async fn a_call_past_the_timeout_gets_deadline_exceeded_with_a_reason() {
    let service = RunningService::spawn("double", host(&[("TETHER_DOUBLE_REQUEST_TIMEOUT_MS", "100")]).await).await;
    let mut client = TenancyServiceClient::new(service.channel().await);
    let status = client.get_admin_tenancy(call_sleeping(2_000)).await.unwrap_err();
    assert_eq!(status.code(), Code::DeadlineExceeded);
    assert_eq!(tether_runtime::error::reason_of(&status).as_deref(), Some("DEADLINE_EXCEEDED"));
    client.get_admin_tenancy(call_sleeping(0)).await.expect("fast calls still pass");
    service.stop().await.unwrap();
}

#[tokio::test]
async fn calls_beyond_the_concurrency_limit_are_shed_at_once() {
    let service = RunningService::spawn("double", host(&[("TETHER_DOUBLE_MAX_CONCURRENT_REQUESTS", "2")]).await).await;
    let channel = service.channel().await;
    let mut busy = Vec::new();
    for _ in 0..2 {
        let mut client = TenancyServiceClient::new(channel.clone());
        busy.push(tokio::spawn(async move { client.get_admin_tenancy(call_sleeping(1_000)).await }));
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let started = Instant::now();
    let status = TenancyServiceClient::new(channel.clone()).get_admin_tenancy(call_sleeping(0)).await.unwrap_err();
    assert_eq!(status.code(), Code::ResourceExhausted);
    assert_eq!(tether_runtime::error::reason_of(&status).as_deref(), Some("OVERLOADED"));
    assert!(started.elapsed() < Duration::from_millis(500), "shed, not queued");
    // The health check is never shed: a busy server is not a down one.
    let reply = HealthClient::new(channel.clone()).check(HealthCheckRequest { service: String::new() }).await;
    assert_eq!(reply.expect("health answers while the budget is full").get_ref().status, ServingStatus::Serving as i32);
    for call in busy {
        call.await.unwrap().expect("the admitted calls complete");
    }
    service.stop().await.unwrap();
}
