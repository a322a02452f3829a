//! The trail as its users see it: services deliver events once however often they send them,
//! bad events are refused one by one, and administrators search, count, export and tail what
//! they may see, and nothing else.

mod common;

use std::time::Duration;

use common::*;
use sha2::{Digest, Sha256};
use tether_proto::{
    audit::v1::*,
    common::v1::{AuditEvent, AuditOutcome, ErrorReason},
};
use tokio_stream::StreamExt;

#[tokio::test]
async fn only_services_may_ingest() {
    let audit = Audit::start().await;
    let person = audit.doubles.person(true, ADMIN_TENANCY, &[ADMIN_TENANCY]);
    let request = || IngestRequest { events: vec![event("user.create", "", "")] };
    let anonymous = audit.client.clone().ingest(request()).await.unwrap_err();
    assert_eq!(anonymous.code(), tonic::Code::Unauthenticated);
    let people = audit.client.clone().ingest(as_user(&person, request())).await.unwrap_err();
    assert_eq!(people.code(), tonic::Code::PermissionDenied);
    let mut wrong = tonic::Request::new(request());
    wrong.metadata_mut().insert("x-tether-service-token", "not-the-token-0000000000000000000000".parse().unwrap());
    assert_eq!(audit.client.clone().ingest(wrong).await.unwrap_err().code(), tonic::Code::Unauthenticated);
    assert!(audit.search_all(&person, EventFilter::default()).await.is_empty(), "nothing was stored");
}

#[tokio::test]
async fn every_read_needs_a_caller_and_the_whole_trail_rpcs_refuse_client_admins() {
    let audit = Audit::start().await;
    let tenant = uuid::Uuid::new_v4().to_string();
    let client_admin = audit.doubles.person(false, &tenant, &[&tenant]);
    let hold = || SetLegalHoldRequest { tenant_id: tenant.clone(), reason: "case".into() };
    let remove = || RemoveLegalHoldRequest { tenant_id: tenant.clone() };
    let mut c = audit.client.clone();
    let anonymous = [
        c.search_events(SearchEventsRequest::default()).await.map(|_| ()),
        c.get_event(GetEventRequest { event_id: uuid::Uuid::new_v4().to_string() }).await.map(|_| ()),
        c.get_stats(GetStatsRequest::default()).await.map(|_| ()),
        c.export_events(ExportEventsRequest { filter: None, format: ExportFormat::Csv as i32 }).await.map(|_| ()),
        c.tail_events(TailEventsRequest::default()).await.map(|_| ()),
        c.verify_integrity(VerifyIntegrityRequest::default()).await.map(|_| ()),
        c.list_checkpoints(ListCheckpointsRequest::default()).await.map(|_| ()),
        c.set_legal_hold(hold()).await.map(|_| ()),
        c.remove_legal_hold(remove()).await.map(|_| ()),
        c.list_legal_holds(ListLegalHoldsRequest {}).await.map(|_| ()),
        c.purge_expired(PurgeExpiredRequest {}).await.map(|_| ()),
    ];
    for (i, result) in anonymous.into_iter().enumerate() {
        assert_eq!(result.unwrap_err().code(), tonic::Code::Unauthenticated, "call {i} without credentials");
    }
    let client = [
        c.verify_integrity(as_user(&client_admin, VerifyIntegrityRequest::default())).await.map(|_| ()),
        c.list_checkpoints(as_user(&client_admin, ListCheckpointsRequest::default())).await.map(|_| ()),
        c.set_legal_hold(as_user(&client_admin, hold())).await.map(|_| ()),
        c.remove_legal_hold(as_user(&client_admin, remove())).await.map(|_| ()),
        c.list_legal_holds(as_user(&client_admin, ListLegalHoldsRequest {})).await.map(|_| ()),
        c.purge_expired(as_user(&client_admin, PurgeExpiredRequest {})).await.map(|_| ()),
    ];
    for (i, result) in client.into_iter().enumerate() {
        assert_eq!(result.unwrap_err().code(), tonic::Code::PermissionDenied, "call {i} by a client admin");
    }
    // A client admin reads their own tenant, tail included.
    c.search_events(as_user(&client_admin, SearchEventsRequest::default())).await.unwrap();
    c.tail_events(as_user(&client_admin, TailEventsRequest::default())).await.unwrap();
}

#[tokio::test]
async fn a_redelivered_event_is_stored_once() {
    let audit = Audit::start().await;
    let reader = audit.doubles.person(true, ADMIN_TENANCY, &[ADMIN_TENANCY]);
    let batch: Vec<AuditEvent> = (0..3).map(|_| event("user.create", "", "")).collect();
    let first = audit.ingest(batch.clone()).await;
    assert_eq!((first.accepted, first.duplicates), (3, 0));
    let again = audit.ingest(batch.clone()).await;
    assert_eq!((again.accepted, again.duplicates), (0, 3));
    // Repeated inside one batch, and mixed with a new one.
    let mixed = audit.ingest(vec![batch[0].clone(), event("user.delete", "", ""), batch[0].clone()]).await;
    assert_eq!((mixed.accepted, mixed.duplicates), (1, 2));
    let stored = audit.search_all(&reader, EventFilter::default()).await;
    assert_eq!(stored.len(), 4);
    let mut sequences: Vec<u64> = stored.iter().map(|r| r.sequence).collect();
    sequences.sort();
    assert_eq!(sequences, vec![1, 2, 3, 4], "gap-free from 1");
}

#[tokio::test]
async fn a_bad_event_is_refused_alone_with_its_reason() {
    let audit = Audit::start().await;
    let reader = audit.doubles.person(true, ADMIN_TENANCY, &[ADMIN_TENANCY]);
    let future = prost_types::Timestamp { seconds: 4_000_000_000, nanos: 0 };
    let old = prost_types::Timestamp { seconds: 900_000_000, nanos: 0 };
    let bad: Vec<(AuditEvent, ErrorReason, &str)> = vec![
        (
            AuditEvent { metadata_json: format!(r#"{{"x":"{}"}}"#, "a".repeat(70 * 1024)), ..event("a.b", "", "") },
            ErrorReason::FieldTooLong,
            "metadata_json",
        ),
        (AuditEvent { before_json: "{oops".into(), ..event("a.b", "", "") }, ErrorReason::InvalidFormat, "before_json"),
        (AuditEvent { action: String::new(), ..event("a.b", "", "") }, ErrorReason::FieldRequired, "action"),
        (AuditEvent { outcome: 42, ..event("a.b", "", "") }, ErrorReason::ValueOutOfRange, "outcome"),
        (AuditEvent { occurred_at: Some(future), ..event("a.b", "", "") }, ErrorReason::ValueOutOfRange, "occurred_at"),
        (AuditEvent { occurred_at: Some(old), ..event("a.b", "", "") }, ErrorReason::ValueOutOfRange, "occurred_at"),
        (AuditEvent { event_id: "1".into(), ..event("a.b", "", "") }, ErrorReason::InvalidUuid, "event_id"),
    ];
    let good = event("user.create", "", "");
    let mut events = vec![good.clone()];
    events.extend(bad.iter().map(|(e, _, _)| e.clone()));
    let reply = audit.ingest(events).await;
    assert_eq!(reply.accepted, 1, "the good event is stored");
    assert_eq!(reply.rejected.len(), bad.len());
    for (i, (_, reason, field)) in bad.iter().enumerate() {
        let r = &reply.rejected[i];
        assert_eq!((r.index as usize, r.reason, r.field.as_str()), (i + 1, *reason as i32, *field), "event {i}");
    }
    let stored = audit.search_all(&reader, EventFilter::default()).await;
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0].event.as_ref().unwrap().event_id, good.event_id);

    let too_many: Vec<AuditEvent> = (0..501).map(|_| event("a.b", "", "")).collect();
    let status = audit.client.clone().ingest(as_service(IngestRequest { events: too_many })).await.unwrap_err();
    assert_eq!((status.code(), reason(&status).as_str()), (tonic::Code::InvalidArgument, "BATCH_TOO_LARGE"));
}

#[tokio::test]
async fn search_filters_and_pages_newest_first_while_events_keep_arriving() {
    let audit = Audit::start().await;
    let reader = audit.doubles.person(true, ADMIN_TENANCY, &[ADMIN_TENANCY]);
    let mitch = uuid::Uuid::new_v4().to_string();
    let tenant = uuid::Uuid::new_v4().to_string();
    let mut first = Vec::new();
    for i in 0..120 {
        let mut e = event(if i % 3 == 0 { "user.delete" } else { "user.update" }, &tenant, &mitch);
        if i % 10 == 0 {
            e.outcome = AuditOutcome::Denied as i32;
            e.client_ip = "198.51.100.99".into();
        }
        first.push(e);
    }
    audit.ingest(first.clone()).await;

    // Page through newest first while new events arrive: every old event exactly once, in order.
    let mut seen = Vec::new();
    let mut page_token = String::new();
    let mut arrived = 0;
    loop {
        let request = SearchEventsRequest { page_size: 50, page_token, filter: None };
        let reply = audit.client.clone().search_events(as_user(&reader, request)).await.unwrap().into_inner();
        seen.extend(reply.records);
        audit.ingest(vec![event("user.create", &tenant, &mitch)]).await;
        arrived += 1;
        if reply.next_page_token.is_empty() {
            break;
        }
        page_token = reply.next_page_token;
    }
    assert_eq!(seen.len(), 120, "no event skipped or repeated, newer ones not mixed in");
    let total = 120 + arrived;
    assert!(
        seen.windows(2).all(|w| {
            let t = |r: &AuditRecord| {
                let t = r.event.as_ref().unwrap().occurred_at.unwrap();
                (t.seconds, t.nanos, r.sequence)
            };
            t(&w[0]) > t(&w[1])
        }),
        "newest first"
    );

    let count = |filter: EventFilter| {
        let audit = &audit;
        let reader = reader.clone();
        async move { audit.search_all(&reader, filter).await.len() }
    };
    assert_eq!(count(EventFilter { action: "user.delete".into(), ..Default::default() }).await, 40);
    assert_eq!(count(EventFilter { outcome: AuditOutcome::Denied as i32, ..Default::default() }).await, 12);
    assert_eq!(count(EventFilter { query: "198.51.100".into(), ..Default::default() }).await, 12, "address");
    assert_eq!(
        count(EventFilter { query: "MITCH@client".into(), ..Default::default() }).await,
        total,
        "email, any case"
    );
    assert_eq!(count(EventFilter { query: "%".into(), ..Default::default() }).await, 0, "a literal percent sign");
    assert_eq!(count(EventFilter { query: "' OR 1=1 --".into(), ..Default::default() }).await, 0);
    assert_eq!(count(EventFilter { actor_user_id: uuid::Uuid::new_v4().to_string(), ..Default::default() }).await, 0);
    let target = &first[5];
    let one =
        audit.search_all(&reader, EventFilter { resource_id: target.resource_id.clone(), ..Default::default() }).await;
    assert_eq!(one.len(), 1);
    let shown = one[0].event.as_ref().unwrap();
    assert_eq!(
        (shown.before_json.as_str(), shown.after_json.as_str()),
        (r#"{"role":"viewer"}"#, r#"{"role":"admin"}"#)
    );
    let start = target.occurred_at.unwrap();
    let windowed = count(EventFilter {
        start_time: Some(start),
        end_time: Some(prost_types::Timestamp { seconds: start.seconds + 3600, nanos: 0 }),
        ..Default::default()
    })
    .await;
    assert!(windowed >= total - 5 && windowed < total, "{windowed}");

    // A page token belongs to its filter.
    let reply = audit
        .client
        .clone()
        .search_events(as_user(&reader, SearchEventsRequest { page_size: 10, ..Default::default() }))
        .await
        .unwrap()
        .into_inner();
    let other = SearchEventsRequest {
        page_size: 10,
        page_token: reply.next_page_token,
        filter: Some(EventFilter { action: "user.delete".into(), ..Default::default() }),
    };
    let status = audit.client.clone().search_events(as_user(&reader, other)).await.unwrap_err();
    assert_eq!(reason(&status), "INVALID_PAGE_TOKEN");
}

#[tokio::test]
async fn client_admins_see_their_tenant_and_departments_only() {
    let audit = Audit::start().await;
    let [a, a1, b] = [(); 3].map(|_| uuid::Uuid::new_v4().to_string());
    audit.doubles.department(&a, &a1);
    let admin_a = audit.doubles.person(false, &a, &[&a, &a1]);
    let manager_a = audit.doubles.person(false, &a, &[]);
    let msp = audit.doubles.person(true, ADMIN_TENANCY, &[ADMIN_TENANCY]);
    let technician = uuid::Uuid::new_v4().to_string();
    let mut by_msp = event("user.update", &a, &technician);
    by_msp.actor.as_mut().unwrap().is_msp_staff = true;
    let in_a = event("user.update", &a, &admin_a);
    let in_a1 = event("user.update", &a1, &admin_a);
    let in_b = event("user.update", &b, "");
    let platform = event("user.create", "", "");
    audit.ingest(vec![in_a.clone(), in_a1.clone(), in_b.clone(), platform, by_msp]).await;

    let ids = |records: Vec<AuditRecord>| {
        let mut ids: Vec<String> = records.into_iter().map(|r| r.event.unwrap().event_id).collect();
        ids.sort();
        ids
    };
    let mut expected = vec![in_a.event_id.clone(), in_a1.event_id.clone()];
    expected.sort();
    assert_eq!(
        ids(audit.search_all(&admin_a, EventFilter::default()).await),
        expected,
        "A and A1; no MSP actor, no B, no platform"
    );
    let with_departments = EventFilter { tenant_id: a.clone(), include_descendants: true, ..Default::default() };
    assert_eq!(ids(audit.search_all(&admin_a, with_departments).await), expected);
    let only_a = EventFilter { tenant_id: a.clone(), ..Default::default() };
    assert_eq!(ids(audit.search_all(&admin_a, only_a).await), vec![in_a.event_id.clone()]);
    let other = EventFilter { tenant_id: b.clone(), include_descendants: true, ..Default::default() };
    assert!(audit.search_all(&admin_a, other).await.is_empty(), "another tenant reads as one without events");
    assert_eq!(audit.search_all(&msp, EventFilter::default()).await.len(), 5, "MSP staff see everything");

    let get = |who: &str, id: &str| {
        let mut client = audit.client.clone();
        let request = as_user(who, GetEventRequest { event_id: id.to_owned() });
        async move { client.get_event(request).await }
    };
    let hidden = get(&admin_a, &in_b.event_id).await.unwrap_err();
    let missing = get(&admin_a, &uuid::Uuid::new_v4().to_string()).await.unwrap_err();
    assert_eq!((hidden.code(), reason(&hidden)), (missing.code(), reason(&missing)), "hidden answers as missing");
    assert_eq!(reason(&hidden), "AUDIT_EVENT_NOT_FOUND");
    let shown = get(&admin_a, &in_a.event_id).await.unwrap().into_inner().record.unwrap();
    assert!(shown.sequence > 0 && shown.chain_hash.len() == 64 && shown.previous_chain_hash.len() == 64);

    let denied =
        audit.client.clone().search_events(as_user(&manager_a, SearchEventsRequest::default())).await.unwrap_err();
    assert_eq!(denied.code(), tonic::Code::PermissionDenied, "no audit.view, no trail");
    let stats = audit
        .client
        .clone()
        .get_stats(as_user(&admin_a, GetStatsRequest { tenant_id: b.clone(), ..Default::default() }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(stats.event_count, 0);
    let verify =
        audit.client.clone().verify_integrity(as_user(&admin_a, VerifyIntegrityRequest::default())).await.unwrap_err();
    assert_eq!(verify.code(), tonic::Code::PermissionDenied, "verification is for the whole trail's readers");
}

#[tokio::test]
async fn stats_count_the_window_as_the_audit_page_shows_them() {
    let audit = Audit::start().await;
    let reader = audit.doubles.person(true, ADMIN_TENANCY, &[ADMIN_TENANCY]);
    let tenant = uuid::Uuid::new_v4().to_string();
    let [u1, u2] = [(); 2].map(|_| uuid::Uuid::new_v4().to_string());
    let mut events = Vec::new();
    for _ in 0..5 {
        events.push(event("user.update", &tenant, &u1));
    }
    for _ in 0..3 {
        let mut e = event("auth.login", &tenant, &u2);
        e.outcome = AuditOutcome::Failure as i32;
        events.push(e);
    }
    let mut old = event("user.delete", &tenant, &u1);
    old.occurred_at = Some(prost_types::Timestamp { seconds: old.occurred_at.unwrap().seconds - 2 * 86_400, nanos: 0 });
    events.push(old);
    events.push(event("tenant.create", "", ""));
    audit.ingest(events).await;
    let stats = audit
        .client
        .clone()
        .get_stats(as_user(&reader, GetStatsRequest { tenant_id: tenant.clone(), ..Default::default() }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(stats.event_count, 8, "the last 24 hours of that tenant");
    assert_eq!(stats.active_user_count, 2);
    assert_eq!(stats.top_action, "user.update");
    assert_eq!(stats.failure_count, 3);
    assert_eq!(stats.success_count, 5);
    let counts: Vec<(String, i64)> = stats.action_counts.iter().map(|c| (c.action.clone(), c.count)).collect();
    assert_eq!(counts, vec![("user.update".to_owned(), 5), ("auth.login".to_owned(), 3)]);
    let week =
        GetStatsRequest { window: Some(prost_types::Duration { seconds: 7 * 86_400, nanos: 0 }), ..Default::default() };
    let all = audit.client.clone().get_stats(as_user(&reader, week)).await.unwrap().into_inner();
    assert_eq!(all.event_count, 10);
    let too_long = GetStatsRequest {
        window: Some(prost_types::Duration { seconds: 400 * 86_400, nanos: 0 }),
        ..Default::default()
    };
    let status = audit.client.clone().get_stats(as_user(&reader, too_long)).await.unwrap_err();
    assert_eq!(reason(&status), "VALUE_OUT_OF_RANGE");
}

#[tokio::test]
async fn exports_stream_csv_and_json_lines_with_a_summary() {
    let audit = Audit::start().await;
    let reader = audit.doubles.person(true, ADMIN_TENANCY, &[ADMIN_TENANCY]);
    let tenant = uuid::Uuid::new_v4().to_string();
    for _ in 0..6 {
        let events: Vec<AuditEvent> = (0..500)
            .map(|i| {
                let mut e = event("user.update", &tenant, "");
                e.metadata_json = format!(r#"{{"i":{i}}}"#);
                e.reason = "line one\nline, \"two\"".into();
                e
            })
            .collect();
        audit.ingest(events).await;
    }
    audit.ingest(vec![event("user.delete", &tenant, "")]).await;
    let filter = EventFilter { action: "user.update".into(), ..Default::default() };
    let (csv, summary, chunks) = export(&audit, &reader, ExportFormat::Csv, filter.clone()).await;
    assert_eq!(summary.event_count, 3000);
    assert_eq!(summary.byte_count as usize, csv.len());
    assert_eq!(summary.sha256, hex::encode(Sha256::digest(&csv)));
    assert!(chunks > 2, "streamed in chunks");
    let mut reader_csv = csv::Reader::from_reader(csv.as_slice());
    assert_eq!(&reader_csv.headers().unwrap()[0], "sequence");
    let rows: Vec<csv::StringRecord> = reader_csv.records().map(Result::unwrap).collect();
    assert_eq!(rows.len(), 3000, "embedded newlines and quotes stay inside their field");
    assert_eq!(&rows[0][18], "line one\nline, \"two\"");
    let sequences: Vec<u64> = rows.iter().map(|r| r[0].parse().unwrap()).collect();
    assert!(sequences.windows(2).all(|w| w[0] < w[1]), "oldest first");

    // audit's own events (the first export's) are left out by source.
    let from_identity = EventFilter { source_service: "identity-svc".into(), ..Default::default() };
    let (lines, summary, _) = export(&audit, &reader, ExportFormat::JsonLines, from_identity).await;
    assert_eq!(summary.event_count, 3001);
    let text = String::from_utf8(lines).unwrap();
    let first: serde_json::Value = serde_json::from_str(text.lines().next().unwrap()).unwrap();
    assert_eq!(first["sequence"], "1");
    assert_eq!(first["event"]["action"], "user.update");
    assert_eq!(first["event"]["outcome"], "AUDIT_OUTCOME_SUCCESS");
    assert_eq!(text.lines().count(), 3001);

    let status = audit
        .client
        .clone()
        .export_events(as_user(&reader, ExportEventsRequest { filter: None, format: 0 }))
        .await
        .unwrap_err();
    assert_eq!(reason(&status), "FIELD_REQUIRED");
}

#[tokio::test]
async fn a_client_that_leaves_stops_its_export_and_the_cut_export_is_audited() {
    let audit = Audit::start().await;
    let reader = audit.doubles.person(true, ADMIN_TENANCY, &[ADMIN_TENANCY]);
    for _ in 0..10 {
        audit.ingest((0..500).map(|_| event("user.update", "", "")).collect()).await;
    }
    let request = ExportEventsRequest { filter: None, format: ExportFormat::JsonLines as i32 };
    let mut stream = audit.client.clone().export_events(as_user(&reader, request)).await.unwrap().into_inner();
    let first = stream.next().await.unwrap().unwrap();
    assert!(first.summary.is_none() && !first.data.is_empty());
    drop(stream);
    let exports = EventFilter { action: "audit.export".into(), ..Default::default() };
    let cut = eventually(|| async {
        let found = audit.search_all(&reader, exports.clone()).await;
        found.into_iter().next()
    })
    .await;
    let event = cut.event.unwrap();
    assert_eq!((event.outcome, event.reason.as_str()), (AuditOutcome::Failure as i32, "CANCELLED"));
    assert_eq!(event.actor.unwrap().user_id, reader);
}

#[tokio::test]
async fn a_tail_delivers_new_matching_events_and_resumes_from_its_position() {
    let audit = Audit::start().await;
    let reader = audit.doubles.person(true, ADMIN_TENANCY, &[ADMIN_TENANCY]);
    audit.ingest(vec![event("user.delete", "", "")]).await;
    let filter = EventFilter { action: "user.delete".into(), ..Default::default() };
    let request = TailEventsRequest { filter: Some(filter.clone()), after_sequence: 0 };
    let mut tail = audit.client.clone().tail_events(as_user(&reader, request)).await.unwrap().into_inner();
    let wanted = event("user.delete", "", "");
    audit.ingest(vec![event("user.update", "", ""), wanted.clone()]).await;
    let got = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            let message = tail.next().await.unwrap().unwrap();
            if let Some(record) = message.record {
                return (record, message.position);
            }
        }
    })
    .await
    .expect("the new event arrives");
    assert_eq!(got.0.event.unwrap().event_id, wanted.event_id, "only new matching events, not the older one");
    drop(tail);

    // Resume from the position: what arrived meanwhile comes next, then heartbeats.
    let later = event("user.delete", "", "");
    audit.ingest(vec![later.clone()]).await;
    let request = TailEventsRequest { filter: Some(filter), after_sequence: got.1 };
    let mut tail = audit.client.clone().tail_events(as_user(&reader, request)).await.unwrap().into_inner();
    let next = tokio::time::timeout(Duration::from_secs(5), tail.next()).await.unwrap().unwrap().unwrap();
    assert_eq!(next.record.unwrap().event.unwrap().event_id, later.event_id);
    let heartbeat = tokio::time::timeout(Duration::from_secs(5), tail.next()).await.unwrap().unwrap().unwrap();
    assert!(heartbeat.record.is_none() && heartbeat.position >= next.position);
}
