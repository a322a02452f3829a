//! Each service starts in-process on an ephemeral port and answers health SERVING, and offers
//! reflection so stock gRPC tools work without the .proto files.

mod stack;

use tether_tests::TestDatabase;
use tonic_health::pb::{HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient};
use tonic_reflection::pb::v1::{
    ServerReflectionRequest, server_reflection_client::ServerReflectionClient,
    server_reflection_request::MessageRequest, server_reflection_response::MessageResponse,
};

const SERVICE_NAMES: [(&str, &str); 4] = [
    ("identity", "tether.identity.v1.IdentityService"),
    ("tenancy", "tether.tenancy.v1.TenancyService"),
    ("authz", "tether.authz.v1.AuthzService"),
    ("audit", "tether.audit.v1.AuditService"),
];

#[tokio::test]
async fn every_service_answers_serving_and_lists_its_api() {
    let db = TestDatabase::fresh().await;
    // authz-svc turns SERVING only once it has loaded identity's and tenancy's snapshots, so
    // this also shows the three found each other by their configured addresses.
    let running = stack::start_all(&db, None::<fn() -> std::future::Ready<()>>).await;
    for service in &running {
        let grpc_name = SERVICE_NAMES.iter().find(|(n, _)| *n == service.name).unwrap().1;
        let mut health = HealthClient::new(service.channel().await);
        for checked in ["", grpc_name] {
            let reply = health.check(HealthCheckRequest { service: checked.into() }).await.unwrap();
            assert_eq!(reply.get_ref().status, ServingStatus::Serving as i32, "{} {checked:?}", service.name);
        }
        let unknown = health.check(HealthCheckRequest { service: "no.such.Service".into() }).await.unwrap_err();
        assert_eq!(unknown.code(), tonic::Code::NotFound);

        let mut reflection = ServerReflectionClient::new(service.channel().await);
        let request = ServerReflectionRequest {
            host: String::new(),
            message_request: Some(MessageRequest::ListServices(String::new())),
        };
        let mut replies = reflection.server_reflection_info(tokio_stream::iter([request])).await.unwrap().into_inner();
        let reply = replies.message().await.unwrap().unwrap();
        let Some(MessageResponse::ListServicesResponse(list)) = reply.message_response else {
            panic!("{}: unexpected reflection reply", service.name);
        };
        let names: Vec<_> = list.service.into_iter().map(|s| s.name).collect();
        assert!(names.iter().any(|n| n == grpc_name), "{}: {names:?}", service.name);
        assert!(names.iter().any(|n| n == "grpc.health.v1.Health"), "{}: {names:?}", service.name);
    }
    for service in running {
        service.stop().await.unwrap();
    }
}
