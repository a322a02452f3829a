//! What a search, an export, the stats or a tail asks for, parsed once, and who may see what.
//!
//! Rules:
//!
//! 1. Filter fields combine with AND; an empty field does not filter. `query` is a
//!    case-insensitive substring of an event's action, resource type, resource id, actor name,
//!    actor email or client address, at most 200 characters; it is matched as text, never as a
//!    pattern (`%` and `_` are literal).
//! 2. Ids are canonical UUIDs, `trace_id` 32 lower-case hex digits, the outcome a known one;
//!    a start after the end is INVALID_TIME_RANGE.
//! 3. Visibility ([`Reach`]): a caller reads either everything or a set of tenants. A tenant filter
//!    narrows that set (with its departments when asked); a tenant outside it leaves the set
//!    empty, which reads as a tenant with no events, never as an error.
//! 4. Client users never see platform-level events (no tenant) nor events whose actor is MSP
//!    staff.

use std::collections::BTreeSet;

use tether_proto::{
    audit::v1::EventFilter,
    common::v1::{AuditOutcome, ErrorReason},
    values::{self, FieldError},
};
use tether_runtime::db::micros;

const MAX_QUERY: usize = 200;
const MAX_NAME: usize = 256;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filter {
    /// Lower-cased.
    pub query: Option<String>,
    pub action: Option<String>,
    pub resource_type: Option<String>,
    pub resource_id: Option<String>,
    pub actor_user_id: Option<String>,
    pub tenant_id: Option<String>,
    pub include_descendants: bool,
    pub outcome: Option<i32>,
    pub source_service: Option<String>,
    pub trace_id: Option<String>,
    /// Unix microseconds, inclusive.
    pub start: Option<i64>,
    /// Unix microseconds, exclusive.
    pub end: Option<i64>,
}

fn some(value: String) -> Option<String> {
    (!value.is_empty()).then_some(value)
}

impl Filter {
    /// `prefix` is the request's name for the filter (`filter`), for field paths.
    pub fn parse(prefix: &str, raw: Option<&EventFilter>) -> Result<Self, FieldError> {
        let Some(raw) = raw else { return Ok(Self::default()) };
        let field = |name: &str| format!("{prefix}.{name}");
        let text = |name: &str, value: &str, max: usize| values::text(&field(name), value, max).map(some);
        let outcome = match AuditOutcome::try_from(raw.outcome) {
            Ok(AuditOutcome::Unspecified) => None,
            Ok(o) => Some(o as i32),
            Err(_) => {
                return Err(FieldError::new(
                    ErrorReason::ValueOutOfRange,
                    &field("outcome"),
                    "outcome is not a known outcome",
                ));
            }
        };
        let trace_id = some(raw.trace_id.clone());
        if let Some(t) = &trace_id
            && !(t.len() == 32 && t.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)))
        {
            return Err(FieldError::new(
                ErrorReason::InvalidFormat,
                &field("trace_id"),
                "trace_id is 32 lower-case hex digits",
            ));
        }
        let start = raw.start_time.as_ref().map(micros);
        let end = raw.end_time.as_ref().map(micros);
        if let (Some(s), Some(e)) = (start, end)
            && s > e
        {
            return Err(FieldError::new(
                ErrorReason::InvalidTimeRange,
                &field("start_time"),
                "start_time is after end_time",
            ));
        }
        Ok(Self {
            query: text("query", &raw.query, MAX_QUERY)?.map(|q| q.to_lowercase()),
            action: text("action", &raw.action, MAX_NAME)?,
            resource_type: text("resource_type", &raw.resource_type, MAX_NAME)?,
            resource_id: text("resource_id", &raw.resource_id, MAX_NAME)?,
            actor_user_id: values::optional_id(&field("actor_user_id"), &raw.actor_user_id)?.map(|u| u.to_string()),
            tenant_id: values::optional_id(&field("tenant_id"), &raw.tenant_id)?.map(|u| u.to_string()),
            include_descendants: raw.include_descendants,
            outcome,
            source_service: text("source_service", &raw.source_service, MAX_NAME)?,
            trace_id,
            start,
            end,
        })
    }

    /// A stable text of every field, to bind page tokens to the filter they were issued for.
    pub fn fingerprint(&self) -> String {
        format!("{self:?}")
    }
}

/// The lower-cased text free-text queries look in.
pub fn search_text(parts: &[&str]) -> String {
    parts.iter().map(|p| p.to_lowercase()).collect::<Vec<_>>().join("\n")
}

/// What one caller may read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    /// MSP staff with `audit.view` in the admin tenancy, and services.
    Everything,
    /// The tenants where the caller holds `audit.view`.
    Tenants { ids: BTreeSet<String>, hide_msp_actors: bool },
}

/// Which rows one query may return: `tenants` None means any tenant (and none).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reach {
    pub tenants: Option<BTreeSet<String>>,
    pub hide_msp_actors: bool,
}

impl Reach {
    /// The caller's scope narrowed by the filter's tenant; `subtree` holds the filter tenant and
    /// its departments when the filter asks for them (else just the tenant).
    pub fn new(scope: &Scope, subtree: Option<BTreeSet<String>>) -> Self {
        match (scope, subtree) {
            (Scope::Everything, tenants) => Self { tenants, hide_msp_actors: false },
            (Scope::Tenants { ids, hide_msp_actors }, None) => {
                Self { tenants: Some(ids.clone()), hide_msp_actors: *hide_msp_actors }
            }
            (Scope::Tenants { ids, hide_msp_actors }, Some(wanted)) => {
                Self { tenants: Some(ids.intersection(&wanted).cloned().collect()), hide_msp_actors: *hide_msp_actors }
            }
        }
    }

    /// Nothing can match.
    pub fn is_empty(&self) -> bool {
        self.tenants.as_ref().is_some_and(BTreeSet::is_empty)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(ids: &[&str]) -> BTreeSet<String> {
        ids.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn a_tenant_outside_the_callers_scope_reaches_nothing() {
        let client = Scope::Tenants { ids: set(&["a", "a1"]), hide_msp_actors: true };
        assert_eq!(Reach::new(&client, None).tenants, Some(set(&["a", "a1"])));
        assert_eq!(Reach::new(&client, Some(set(&["a1"]))).tenants, Some(set(&["a1"])));
        assert!(Reach::new(&client, Some(set(&["b", "b1"]))).is_empty());
        assert!(Reach::new(&client, None).hide_msp_actors);
        assert_eq!(Reach::new(&Scope::Everything, None).tenants, None);
        assert_eq!(Reach::new(&Scope::Everything, Some(set(&["b"]))).tenants, Some(set(&["b"])));
    }

    #[test]
    fn filters_are_checked_field_by_field() {
        let bad = |f: EventFilter| Filter::parse("filter", Some(&f)).unwrap_err();
        let e = bad(EventFilter { tenant_id: "nope".into(), ..Default::default() });
        assert_eq!((e.reason, e.field.as_str()), (ErrorReason::InvalidUuid, "filter.tenant_id"));
        let e = bad(EventFilter { outcome: 7, ..Default::default() });
        assert_eq!(e.reason, ErrorReason::ValueOutOfRange);
        let e = bad(EventFilter {
            start_time: Some(prost_types::Timestamp { seconds: 10, nanos: 0 }),
            end_time: Some(prost_types::Timestamp { seconds: 5, nanos: 0 }),
            ..Default::default()
        });
        assert_eq!(e.reason, ErrorReason::InvalidTimeRange);
        let e = bad(EventFilter { query: "q".repeat(201), ..Default::default() });
        assert_eq!(e.reason, ErrorReason::FieldTooLong);
        let ok =
            Filter::parse("filter", Some(&EventFilter { query: " Alice% ".into(), ..Default::default() })).unwrap();
        assert_eq!(ok.query.as_deref(), Some("alice%"));
    }
}
