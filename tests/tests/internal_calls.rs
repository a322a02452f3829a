//! The internal RPCs (identity's Authenticate and Watch, tenancy's Watch, audit's Ingest) across
//! the four real services: the services reach them with the service token, nobody else does.

// Test code: a failed set-up or assertion should panic.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod stack;

use std::time::Duration;

use tether_proto::{
    audit::v1::{self as audit, audit_service_client::AuditServiceClient},
    identity::v1::{self as identity, identity_service_client::IdentityServiceClient},
    tenancy::v1::{self as tenancy, tenancy_service_client::TenancyServiceClient},
};
use tether_runtime::{access::ServiceToken, error::reason_of};
use tether_tests::{RunningService, TestDatabase};
use tonic::{Code, Request};

fn anonymous<T>(message: T) -> Request<T> {
    Request::new(message)
}

fn as_person<T>(session: &str, message: T) -> Request<T> {
    let mut request = Request::new(message);
    request.metadata_mut().insert("authorization", format!("Bearer {session}").parse().unwrap());
    request
}

fn as_service<T>(message: T) -> Request<T> {
    let mut request = Request::new(message);
    ServiceToken::new(stack::SERVICE_TOKEN).attach("authz", &mut request);
    request
}

fn refused<T: std::fmt::Debug>(result: Result<T, tonic::Status>) -> (Code, String) {
    let status = result.expect_err("the call should be refused");
    (status.code(), reason_of(&status).unwrap_or_default())
}

fn unauthenticated() -> (Code, String) {
    (Code::Unauthenticated, "UNAUTHENTICATED".into())
}

fn permission_denied() -> (Code, String) {
    (Code::PermissionDenied, "PERMISSION_DENIED".into())
}

fn service<'a>(running: &'a [RunningService], name: &str) -> &'a RunningService {
    running.iter().find(|s| s.name == name).unwrap()
}

/// Logs the bootstrap owner in, once identity has delivered their membership to tenancy.
async fn owner_session(identity: &mut IdentityServiceClient<tonic::transport::Channel>) -> String {
    for _ in 0..200 {
        let login = identity::LoginRequest {
            email: "owner@msp.example".into(),
            password: stack::OWNER_PASSWORD.into(),
            ..Default::default()
        };
        if let Ok(reply) = identity.login(login).await
            && let Some(identity::login_outcome::Outcome::Session(s)) =
                reply.into_inner().outcome.and_then(|o| o.outcome)
        {
            return s.session_token;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the owner never became loginable");
}

#[tokio::test]
async fn internal_rpcs_answer_only_services_presenting_the_token() {
    let db = TestDatabase::fresh().await;
    // authz-svc turns SERVING only once it follows identity's and tenancy's streams, which it
    // opens with the service token.
    let running = stack::start_all(&db, None::<fn() -> std::future::Ready<()>>).await;
    let mut identity = IdentityServiceClient::new(service(&running, "identity").channel().await);
    let mut tenancy = TenancyServiceClient::new(service(&running, "tenancy").channel().await);
    let mut audit = AuditServiceClient::new(service(&running, "audit").channel().await);
    let owner = owner_session(&mut identity).await;

    // A person's call to tenancy works: tenancy resolves the session with identity's
    // Authenticate, presenting the token.
    tenancy.get_admin_tenancy(as_person(&owner, tenancy::GetAdminTenancyRequest {})).await.unwrap();

    // tenancy's Watch: the whole tree and every membership (from 0), or their history (from 1).
    for from_revision in [0, 1] {
        let watch = || tenancy::WatchRequest { from_revision };
        assert_eq!(refused(tenancy.watch(anonymous(watch())).await), unauthenticated(), "from {from_revision}");
        assert_eq!(refused(tenancy.watch(as_person(&owner, watch())).await), permission_denied());
        let mut stream = tenancy.watch(as_service(watch())).await.unwrap().into_inner();
        assert!(stream.message().await.unwrap().is_some(), "the service gets the stream");
    }

    // identity's Authenticate: whose a token is, for services only.
    let ask = || identity::AuthenticateRequest { session_token: owner.clone() };
    assert_eq!(refused(identity.authenticate(anonymous(ask())).await), unauthenticated());
    assert_eq!(refused(identity.authenticate(as_person(&owner, ask())).await), permission_denied());
    let principal = identity.authenticate(as_service(ask())).await.unwrap().into_inner().principal.unwrap();
    assert_eq!(principal.email, "owner@msp.example");
    // And its Watch.
    let watch = || identity::WatchRequest { from_revision: 0 };
    assert_eq!(refused(identity.watch(anonymous(watch())).await), unauthenticated());
    assert_eq!(refused(identity.watch(as_person(&owner, watch())).await), permission_denied());
    identity.watch(as_service(watch())).await.unwrap();

    // audit-svc: Ingest is for services; the owner (MSP staff with audit.view in the admin
    // tenancy) reads the trail.
    let ingest = || audit::IngestRequest::default();
    assert_eq!(refused(audit.ingest(anonymous(ingest())).await), unauthenticated());
    assert_eq!(refused(audit.ingest(as_person(&owner, ingest())).await), permission_denied());
    let stored = audit.ingest(as_service(ingest())).await.unwrap().into_inner();
    assert_eq!((stored.accepted, stored.duplicates, stored.rejected.len()), (0, 0, 0));
    assert_eq!(refused(audit.search_events(anonymous(audit::SearchEventsRequest::default())).await), unauthenticated());
    audit.search_events(as_person(&owner, audit::SearchEventsRequest::default())).await.unwrap();

    for service in running {
        service.stop().await.unwrap();
    }
}
