//! Rows of `audit_events` to and from the contract's messages. Every field is a column, so a
//! row reads back as exactly the event that was hashed.

use sqlx::{Row, any::AnyRow};
use tether_proto::{
    audit::v1::AuditRecord,
    common::v1::{Actor, AuditEvent},
};
use tether_runtime::db::timestamp;

/// The columns of a record, in the order [`StoredRecord::from_row`] reads them.
pub const COLUMNS: &str = "seq, event_id, occurred_at, received_at, source_service, actor_kind, actor_user_id, \
     actor_name, actor_email, actor_is_msp_staff, actor_session_id, actor_system_name, action, resource_type, \
     resource_id, tenant_id, client_ip, user_agent, outcome, reason, trace_id, span_id, before_json, after_json, \
     metadata_json, prev_hash, hash";

/// The columns an insert writes: [`COLUMNS`] and the derived search text.
pub const INSERT_COLUMNS: usize = 28;

/// One stored record.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredRecord {
    pub sequence: u64,
    pub received_at: i64,
    pub event: AuditEvent,
    pub prev_hash: String,
    pub hash: String,
}

fn micros(t: Option<&prost_types::Timestamp>) -> i64 {
    t.map(tether_runtime::db::micros).unwrap_or_default()
}

impl StoredRecord {
    pub fn occurred_at(&self) -> i64 {
        micros(self.event.occurred_at.as_ref())
    }

    pub fn from_row(row: &AnyRow) -> Result<Self, sqlx::Error> {
        let text = |i: usize| row.try_get::<String, _>(i);
        let int = |i: usize| row.try_get::<i64, _>(i);
        let event = AuditEvent {
            event_id: text(1)?,
            occurred_at: Some(timestamp(int(2)?)),
            source_service: text(4)?,
            actor: Some(Actor {
                kind: i32::try_from(int(5)?).unwrap_or_default(),
                user_id: text(6)?,
                display_name: text(7)?,
                email: text(8)?,
                is_msp_staff: int(9)? != 0,
                session_id: text(10)?,
                system_name: text(11)?,
            }),
            action: text(12)?,
            resource_type: text(13)?,
            resource_id: text(14)?,
            tenant_id: text(15)?,
            client_ip: text(16)?,
            user_agent: text(17)?,
            outcome: i32::try_from(int(18)?).unwrap_or_default(),
            reason: text(19)?,
            trace_id: text(20)?,
            span_id: text(21)?,
            before_json: text(22)?,
            after_json: text(23)?,
            metadata_json: text(24)?,
        };
        Ok(Self {
            sequence: u64::try_from(int(0)?).unwrap_or_default(),
            received_at: int(3)?,
            event,
            prev_hash: text(25)?,
            hash: text(26)?,
        })
    }

    /// Binds this record's [`INSERT_COLUMNS`] values, in [`COLUMNS`] order then the search text.
    pub fn bind<'q>(
        &self,
        query: sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments>,
    ) -> sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments> {
        let e = &self.event;
        let actor = e.actor.clone().unwrap_or_default();
        let search = crate::domain::filter::search_text(&[
            &e.action,
            &e.resource_type,
            &e.resource_id,
            &actor.display_name,
            &actor.email,
            &e.client_ip,
        ]);
        query
            .bind(self.sequence as i64)
            .bind(e.event_id.clone())
            .bind(micros(e.occurred_at.as_ref()))
            .bind(self.received_at)
            .bind(e.source_service.clone())
            .bind(i64::from(actor.kind))
            .bind(actor.user_id)
            .bind(actor.display_name)
            .bind(actor.email)
            .bind(i64::from(actor.is_msp_staff))
            .bind(actor.session_id)
            .bind(actor.system_name)
            .bind(e.action.clone())
            .bind(e.resource_type.clone())
            .bind(e.resource_id.clone())
            .bind(e.tenant_id.clone())
            .bind(e.client_ip.clone())
            .bind(e.user_agent.clone())
            .bind(i64::from(e.outcome))
            .bind(e.reason.clone())
            .bind(e.trace_id.clone())
            .bind(e.span_id.clone())
            .bind(e.before_json.clone())
            .bind(e.after_json.clone())
            .bind(e.metadata_json.clone())
            .bind(self.prev_hash.clone())
            .bind(self.hash.clone())
            .bind(search)
    }

    pub fn into_message(self) -> AuditRecord {
        AuditRecord {
            event: Some(self.event),
            sequence: self.sequence,
            received_at: Some(timestamp(self.received_at)),
            chain_hash: self.hash,
            previous_chain_hash: self.prev_hash,
        }
    }
}
