//! The audit trail across the four services, as an administrator and an SRE use it: the events
//! every service records arrive in audit-svc (every outbox drains), a deleted user's name stays
//! on what they did, and the trace id of a denied request leads to the decision and its reason.

mod stack;

use tracing_subscriber::{layer::SubscriberExt, util::SubscriberInitExt};

use stack::*;
use tether_proto::{
    audit::v1::{self as au, audit_service_client::AuditServiceClient},
    authz::v1::{self as az, authz_service_client::AuthzServiceClient},
    identity::v1::{self as id, identity_service_client::IdentityServiceClient},
    tenancy::v1::{self as tn, tenancy_service_client::TenancyServiceClient},
};
use tether_tests::TestDatabase;
use tonic::{Status, transport::Channel};

const PASSWORD: &str = "a-long-pass-phrase-2026";

async fn login(identity: &IdentityServiceClient<Channel>, email: &str) -> String {
    eventually(&format!("log in as {email}"), || {
        let mut identity = identity.clone();
        async move {
            let request = id::LoginRequest { email: email.into(), password: PASSWORD.into(), ..Default::default() };
            match identity.login(request).await?.into_inner().outcome.and_then(|o| o.outcome) {
                Some(id::login_outcome::Outcome::Session(s)) => Ok(s.session_token),
                other => Err(Status::failed_precondition(format!("no session: {other:?}"))),
            }
        }
    })
    .await
}

async fn create_user(
    identity: &IdentityServiceClient<Channel>,
    session: &str,
    email: &str,
    tenant: &str,
    role: &str,
) -> String {
    eventually(email, || {
        let mut identity = identity.clone();
        let request = id::CreateUserRequest {
            email: email.into(),
            display_name: format!("Name of {email}"),
            password: PASSWORD.into(),
            tenant_id: tenant.into(),
            role: role.into(),
            ..Default::default()
        };
        let request = as_user(session, request);
        async move { Ok(identity.create_user(request).await?.into_inner().user.unwrap_or_default().user_id) }
    })
    .await
}

async fn search(audit: &AuditServiceClient<Channel>, session: &str, filter: au::EventFilter) -> Vec<au::AuditRecord> {
    let request = au::SearchEventsRequest { page_size: 500, filter: Some(filter), ..Default::default() };
    audit.clone().search_events(as_user(session, request)).await.unwrap().into_inner().records
}

/// Trace ids exist only with the OpenTelemetry layer installed (as the binaries do).
fn telemetry() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder().build();
        tracing_subscriber::registry().with(tether_runtime::telemetry::otel_layer(&provider)).init();
    });
}

#[tokio::test]
async fn the_trail_keeps_who_did_what_and_leads_from_a_trace_id_to_the_reason_of_a_denial() {
    telemetry();
    let db = TestDatabase::fresh().await;
    let services = start_all_with(&db, &[("TETHER_IDENTITY_BOOTSTRAP_OWNER_PASSWORD", PASSWORD)]).await;
    let identity = IdentityServiceClient::new(services[0].channel().await);
    let tenancy = TenancyServiceClient::new(services[1].channel().await);
    let authz = AuthzServiceClient::new(services[2].channel().await);
    let audit = AuditServiceClient::new(services[3].channel().await);
    let owner = login(&identity, OWNER_EMAIL).await;
    let a = eventually("create A", || {
        let request = as_user(&owner, tn::CreateTenantRequest { name: "Client A".into(), ..Default::default() });
        let mut tenancy = tenancy.clone();
        async move { Ok(tenancy.create_tenant(request).await?.into_inner().tenant.unwrap_or_default().tenant_id) }
    })
    .await;
    let leaver = create_user(&identity, &owner, "leaver@a.example", &a, "client_admin").await;
    create_user(&identity, &owner, "stays@a.example", &a, "client_admin").await;
    let leaver_session = login(&identity, "leaver@a.example").await;
    let viewer = create_user(&identity, &leaver_session, "viewer@a.example", &a, "client_viewer").await;

    // A request the edge traced is denied.
    let trace = "0af7651916cd43dd8448eb211c80319c";
    eventually("the viewer is known to authz", || {
        let request = as_service(az::CheckRequest {
            subject_user_id: viewer.clone(),
            permission: "assets.view".into(),
            tenant_id: a.clone(),
            ..Default::default()
        });
        let mut authz = authz.clone();
        async move {
            let allowed = authz.check(request).await?.into_inner().allowed;
            if allowed { Ok(()) } else { Err(Status::unavailable("not yet")) }
        }
    })
    .await;
    let mut request = as_service(az::CheckRequest {
        subject_user_id: viewer.clone(),
        permission: "assets.delete".into(),
        tenant_id: a.clone(),
        ..Default::default()
    });
    request.metadata_mut().insert("traceparent", format!("00-{trace}-b7ad6b7169203331-01").parse().unwrap());
    let denied = authz.clone().check(request).await.unwrap().into_inner();
    assert!(!denied.allowed);

    // The leaver goes; their name stays on what they did.
    identity.clone().delete_user(as_user(&owner, id::DeleteUserRequest { user_id: leaver.clone() })).await.unwrap();

    let by_trace = au::EventFilter { trace_id: trace.into(), ..Default::default() };
    let decision = eventually("the denial reaches the trail", || {
        let (audit, owner, filter) = (audit.clone(), owner.clone(), by_trace.clone());
        async move {
            search(&audit, &owner, filter)
                .await
                .into_iter()
                .find(|r| r.event.as_ref().is_some_and(|e| e.action == "authz.check_denied"))
                .ok_or_else(|| Status::unavailable("not yet"))
        }
    })
    .await;
    let event = decision.event.unwrap();
    assert_eq!(event.reason, "DECISION_REASON_DENIED_PERMISSION_NOT_IN_ROLE");
    assert_eq!(event.tenant_id, a);
    let metadata: serde_json::Value = serde_json::from_str(&event.metadata_json).unwrap();
    assert_eq!(metadata["subject_user_id"], viewer.as_str());
    assert_eq!(metadata["permission"], "assets.delete");
    assert!(metadata["summary"].as_str().unwrap().contains("lacks assets.delete"), "{metadata}");

    let by_leaver =
        au::EventFilter { actor_user_id: leaver.clone(), action: "user.create".into(), ..Default::default() };
    let created = eventually("the leaver's actions reach the trail", || {
        let (audit, owner, filter) = (audit.clone(), owner.clone(), by_leaver.clone());
        async move {
            let found = search(&audit, &owner, filter).await;
            if found.is_empty() { Err(Status::unavailable("not yet")) } else { Ok(found) }
        }
    })
    .await;
    let actor = created[0].event.as_ref().unwrap().actor.clone().unwrap();
    assert_eq!((actor.display_name.as_str(), actor.email.as_str()), ("Name of leaver@a.example", "leaver@a.example"));
    let deletion = au::EventFilter { action: "user.delete".into(), resource_id: leaver.clone(), ..Default::default() };
    eventually("the deletion reaches the trail", || {
        let (audit, owner, filter) = (audit.clone(), owner.clone(), deletion.clone());
        async move {
            if search(&audit, &owner, filter).await.is_empty() { Err(Status::unavailable("not yet")) } else { Ok(()) }
        }
    })
    .await;

    // Every service's outbox drains.
    for service in ["identity", "tenancy", "authz"] {
        let pool = db.inspect(service).await;
        eventually(&format!("{service}'s outbox drains"), || {
            let pool = pool.clone();
            async move {
                let pending: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM audit_outbox WHERE delivered_at IS NULL")
                    .fetch_one(&pool)
                    .await
                    .map_err(|e| Status::internal(e.to_string()))?;
                if pending == 0 { Ok(()) } else { Err(Status::unavailable(format!("{pending} pending"))) }
            }
        })
        .await;
    }
    let verified =
        audit.clone().verify_integrity(as_user(&owner, au::VerifyIntegrityRequest::default())).await.unwrap();
    assert!(verified.get_ref().ok, "{}", verified.get_ref().detail);
    for service in services {
        service.stop().await.unwrap();
    }
}
