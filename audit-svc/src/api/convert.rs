//! Records as export files: CSV rows (RFC 4180, through the `csv` crate) and JSON Lines (an
//! AuditRecord in proto3 JSON: lowerCamelCase names, enums by name, 64-bit integers as strings,
//! RFC 3339 times, default values left out).

use serde_json::{Map, Value};
use tether_proto::common::v1::{ActorKind, AuditOutcome};

use crate::store::StoredRecord;

pub const CSV_HEADER: [&str; 25] = [
    "sequence",
    "event_id",
    "occurred_at",
    "received_at",
    "source_service",
    "actor_kind",
    "actor_user_id",
    "actor_name",
    "actor_email",
    "actor_is_msp_staff",
    "actor_system_name",
    "action",
    "resource_type",
    "resource_id",
    "tenant_id",
    "client_ip",
    "user_agent",
    "outcome",
    "reason",
    "trace_id",
    "span_id",
    "before_json",
    "after_json",
    "metadata_json",
    "chain_hash",
];

fn outcome_name(outcome: i32) -> &'static str {
    AuditOutcome::try_from(outcome).map(|o| o.as_str_name()).unwrap_or("AUDIT_OUTCOME_UNSPECIFIED")
}

fn kind_name(kind: i32) -> &'static str {
    ActorKind::try_from(kind).map(|k| k.as_str_name()).unwrap_or("ACTOR_KIND_UNSPECIFIED")
}

fn time(micros: i64) -> String {
    tether_runtime::db::timestamp(micros).to_string()
}

/// One CSV row, in [`CSV_HEADER`] order.
pub fn csv_row(r: &StoredRecord) -> Vec<String> {
    let e = &r.event;
    let actor = e.actor.clone().unwrap_or_default();
    vec![
        r.sequence.to_string(),
        e.event_id.clone(),
        time(r.occurred_at()),
        time(r.received_at),
        e.source_service.clone(),
        kind_name(actor.kind).to_owned(),
        actor.user_id,
        actor.display_name,
        actor.email,
        actor.is_msp_staff.to_string(),
        actor.system_name,
        e.action.clone(),
        e.resource_type.clone(),
        e.resource_id.clone(),
        e.tenant_id.clone(),
        e.client_ip.clone(),
        e.user_agent.clone(),
        outcome_name(e.outcome).to_owned(),
        e.reason.clone(),
        e.trace_id.clone(),
        e.span_id.clone(),
        e.before_json.clone(),
        e.after_json.clone(),
        e.metadata_json.clone(),
        r.hash.clone(),
    ]
}

fn put(map: &mut Map<String, Value>, key: &str, value: &str) {
    if !value.is_empty() {
        map.insert(key.to_owned(), Value::String(value.to_owned()));
    }
}

/// One JSON Lines line (without its newline).
pub fn json_line(r: &StoredRecord) -> String {
    let e = &r.event;
    let a = e.actor.clone().unwrap_or_default();
    let mut actor = Map::new();
    if a.kind != 0 {
        actor.insert("kind".into(), Value::String(kind_name(a.kind).into()));
    }
    put(&mut actor, "userId", &a.user_id);
    put(&mut actor, "displayName", &a.display_name);
    put(&mut actor, "email", &a.email);
    if a.is_msp_staff {
        actor.insert("isMspStaff".into(), Value::Bool(true));
    }
    put(&mut actor, "sessionId", &a.session_id);
    put(&mut actor, "systemName", &a.system_name);
    let mut event = Map::new();
    put(&mut event, "eventId", &e.event_id);
    event.insert("occurredAt".into(), Value::String(time(r.occurred_at())));
    put(&mut event, "sourceService", &e.source_service);
    event.insert("actor".into(), Value::Object(actor));
    for (key, value) in [
        ("action", &e.action),
        ("resourceType", &e.resource_type),
        ("resourceId", &e.resource_id),
        ("tenantId", &e.tenant_id),
        ("clientIp", &e.client_ip),
    ] {
        put(&mut event, key, value);
    }
    if e.outcome != 0 {
        event.insert("outcome".into(), Value::String(outcome_name(e.outcome).into()));
    }
    for (key, value) in [
        ("reason", &e.reason),
        ("traceId", &e.trace_id),
        ("beforeJson", &e.before_json),
        ("afterJson", &e.after_json),
        ("metadataJson", &e.metadata_json),
        ("spanId", &e.span_id),
        ("userAgent", &e.user_agent),
    ] {
        put(&mut event, key, value);
    }
    let mut record = Map::new();
    record.insert("event".into(), Value::Object(event));
    record.insert("sequence".into(), Value::String(r.sequence.to_string()));
    record.insert("receivedAt".into(), Value::String(time(r.received_at)));
    put(&mut record, "chainHash", &r.hash);
    put(&mut record, "previousChainHash", &r.prev_hash);
    Value::Object(record).to_string()
}
