//! Denied decisions (and a sample of allowed ones) become audit events in authz's outbox,
//! carrying the caller's trace id.

mod common;

use std::time::Duration;

use common::*;
use prost::Message;
use sqlx::Row;
use tether_proto::common::v1::AuditEvent;
use tether_tests::TestDatabase;
use tracing_subscriber::{layer::SubscriberExt, util::SubscriberInitExt};

/// Trace ids exist only with the OpenTelemetry layer installed (as the binaries do).
fn telemetry() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder().build();
        tracing_subscriber::registry().with(tether_runtime::telemetry::otel_layer(&provider)).init();
    });
}

#[tokio::test]
async fn denied_checks_become_audit_events_with_the_trace_id() {
    telemetry();
    let db = TestDatabase::fresh().await;
    let up = Upstreams::start().await;
    let w = World::seed(&up);
    let authz = start_serving(&db, &up, &[]).await;
    let trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let mut request = tonic::Request::new(check(w.viewer, "assets.delete", w.a));
    request.metadata_mut().insert("traceparent", format!("00-{trace}-00f067aa0ba902b7-01").parse().unwrap());
    let reply = authz.client.clone().check(request).await.unwrap().into_inner();
    assert!(!reply.allowed);
    assert!(authz.allowed(w.cadmin, "assets.delete", w.a).await);

    let pool = db.inspect("authz").await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    let events = loop {
        let rows = sqlx::query("SELECT payload FROM audit_outbox").fetch_all(&pool).await.unwrap();
        let events: Vec<AuditEvent> = rows
            .iter()
            .map(|r| AuditEvent::decode(hex::decode(r.get::<String, _>("payload")).unwrap().as_slice()).unwrap())
            .collect();
        if !events.is_empty() || tokio::time::Instant::now() > deadline {
            break events;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(events.len(), 1, "only the denial is recorded (no allowed sample configured)");
    let e = &events[0];
    assert_eq!(e.action, "authz.check_denied");
    assert_eq!(e.reason, "DECISION_REASON_DENIED_PERMISSION_NOT_IN_ROLE");
    assert_eq!(e.trace_id, trace);
    assert_eq!(e.tenant_id, w.a.to_string());
    assert!(e.metadata_json.contains(&reply.decision_id));
    let metadata: serde_json::Value = serde_json::from_str(&e.metadata_json).unwrap();
    assert_eq!(
        metadata["summary"],
        format!("denied: a membership of user {} reaches tenant {} but its role lacks assets.delete", w.viewer, w.a),
        "the SRE reads why without asking Explain"
    );
    assert_eq!(
        (metadata["permission"].as_str(), metadata["subject_user_id"].as_str()),
        (Some("assets.delete"), Some(w.viewer.to_string().as_str()))
    );

    // Every denied item of a batch is recorded, as `{batch id}/{item}`.
    let item = tether_proto::authz::v1::BatchCheckItem {
        subject_user_id: w.viewer.to_string(),
        permission: "assets.delete".into(),
        tenant_id: w.a.to_string(),
        resource_id: String::new(),
    };
    let batch = authz
        .client
        .clone()
        .batch_check(tether_proto::authz::v1::BatchCheckRequest { items: vec![item; 150], at_least_as_fresh: None })
        .await
        .unwrap()
        .into_inner();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM audit_outbox").fetch_one(&pool).await.unwrap();
        if n == 151 {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{n} events recorded, 151 expected");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let last: String = sqlx::query_scalar("SELECT payload FROM audit_outbox")
        .fetch_all(&pool)
        .await
        .unwrap()
        .into_iter()
        .find(|p| {
            let e = AuditEvent::decode(hex::decode(p).unwrap().as_slice()).unwrap();
            e.metadata_json.contains(&format!("{}/149", batch.decision_id))
        })
        .expect("the batch's last item is recorded");
    assert!(!last.is_empty());
    // The relay delivers all 151 to audit-svc (in batches) and marks them delivered.
    assert_eq!(tether_tests::wait_audit_delivered(&pool).await, 151);
    authz.service.stop().await.unwrap();
}

/// Every audit event in authz's outbox, decoded.
async fn outbox_events(pool: &sqlx::AnyPool) -> Vec<AuditEvent> {
    let rows = sqlx::query("SELECT payload FROM audit_outbox").fetch_all(pool).await.unwrap_or_else(|e| panic!("{e}"));
    rows.iter()
        .map(|r| {
            let bytes = hex::decode(r.get::<String, _>("payload")).unwrap_or_else(|e| panic!("{e}"));
            AuditEvent::decode(bytes.as_slice()).unwrap_or_else(|e| panic!("{e}"))
        })
        .collect()
}

#[tokio::test]
async fn denials_over_the_per_second_budget_are_counted_in_a_summary_event() {
    telemetry();
    let db = TestDatabase::fresh().await;
    let up = Upstreams::start().await;
    let w = World::seed(&up);
    let authz = start_serving(&db, &up, &[("TETHER_AUTHZ_AUDIT_MAX_PER_SECOND", "100")]).await;
    let item = tether_proto::authz::v1::BatchCheckItem {
        subject_user_id: w.viewer.to_string(),
        permission: "assets.delete".into(),
        tenant_id: w.a.to_string(),
        resource_id: String::new(),
    };
    // 10 batches of 150 denials in well under a second or two: the budget takes the first
    // batch of each second whole, and counts the rest. Each batch comes with its own trace.
    let sent = 10 * 150;
    let traces: Vec<String> = (0..10).map(|i| format!("{:032x}", 0x4bf9_2f35_77b3_4da6_u128 + i)).collect();
    for trace in &traces {
        let mut request = tonic::Request::new(tether_proto::authz::v1::BatchCheckRequest {
            items: vec![item.clone(); 150],
            at_least_as_fresh: None,
        });
        request.metadata_mut().insert("traceparent", format!("00-{trace}-00f067aa0ba902b7-01").parse().unwrap());
        let reply = authz.client.clone().batch_check(request).await.unwrap().into_inner();
        assert!(reply.decisions.iter().all(|d| !d.allowed), "the budget never changes a decision");
    }

    let pool = db.inspect("authz").await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let events = outbox_events(&pool).await;
        let recorded = events.iter().filter(|e| e.action == "authz.check_denied").count() as u64;
        let mut sampled: Vec<String> = Vec::new();
        let summarised: u64 = events
            .iter()
            .filter(|e| e.action == "authz.decision_audit_suppressed")
            .map(|e| {
                let m: serde_json::Value = serde_json::from_str(&e.metadata_json).unwrap();
                assert_eq!(m["max_per_second"], 100);
                assert_eq!(m["allowed"], 0);
                let ids = m["trace_ids"].as_array().expect("a summary names trace ids of what it counts");
                assert!(ids.len() <= 10, "{} trace ids in one summary", ids.len());
                sampled.extend(ids.iter().map(|t| t.as_str().unwrap().to_owned()));
                m["denied"].as_u64().unwrap()
            })
            .sum();
        if recorded + summarised == sent {
            assert!(recorded <= 3 * 150, "{recorded} denials recorded one by one over a budget of 100/s");
            assert!(summarised >= 7 * 150, "only {summarised} denials in summaries");
            // A batch is recorded whole or counted whole: the summaries name exactly the
            // traces whose denials were only counted (fewer than 10 here, so all of them).
            let mut recorded_traces: Vec<String> =
                events.iter().filter(|e| e.action == "authz.check_denied").map(|e| e.trace_id.clone()).collect();
            recorded_traces.sort();
            recorded_traces.dedup();
            sampled.sort();
            assert!(sampled.windows(2).all(|p| p[0] != p[1]), "a trace id sampled twice: {sampled:?}");
            assert!(sampled.iter().all(|t| !recorded_traces.contains(t)), "a recorded batch's trace was sampled");
            let mut all: Vec<String> = recorded_traces.into_iter().chain(sampled).collect();
            all.sort();
            let mut want = traces.clone();
            want.sort();
            assert_eq!(all, want, "every suppressed batch's trace id is in a summary");
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{recorded} recorded + {summarised} summarised of {sent} denials"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    authz.service.stop().await.unwrap();
}
