//! SearchEvents, GetEvent, GetStats: the audit page.

use tether_proto::{
    audit::v1 as pb,
    common::v1::ErrorReason,
    values::{self, PageSize, PageToken},
};
use tether_runtime::{
    ApiError,
    db::{micros, now_micros, timestamp},
};
use tonic::{Request, Response};

use super::{Audit, Reply};
use crate::{
    domain::filter::Filter,
    store::search::{self, Cursor, Order},
};

const DAY_MICROS: i64 = 24 * 3600 * 1_000_000;
const MAX_WINDOW_DAYS: i64 = 366;

impl Audit {
    pub(super) async fn search_events(
        &self,
        request: Request<pb::SearchEventsRequest>,
    ) -> Reply<pb::SearchEventsResponse> {
        let (metadata, _, r) = request.into_parts();
        let size = PageSize::parse("page_size", r.page_size)?.get();
        let filter = Filter::parse("filter", r.filter.as_ref())?;
        let after = PageToken::decode("page_token", &r.page_token, &filter.fingerprint())?
            .map(|c| Cursor::decode(&c).ok_or_else(bad_token))
            .transpose()?;
        let (_, scope) = self.reader(&metadata).await?;
        let reach = self.reach(&scope, &filter).await?;
        let mut records = search::list(&self.database, &filter, &reach, Order::NewestFirst, after, size + 1)
            .await
            .map_err(ApiError::from)?;
        let next_page_token = if records.len() > size {
            records.truncate(size);
            records
                .last()
                .map(|last| {
                    PageToken::encode(
                        &filter.fingerprint(),
                        &Cursor { occurred_at: last.occurred_at(), sequence: last.sequence }.encode(),
                    )
                })
                .unwrap_or_default()
        } else {
            String::new()
        };
        Ok(Response::new(pb::SearchEventsResponse {
            records: records.into_iter().map(|r| r.into_message()).collect(),
            next_page_token,
        }))
    }

    pub(super) async fn get_event(&self, request: Request<pb::GetEventRequest>) -> Reply<pb::GetEventResponse> {
        let (metadata, _, r) = request.into_parts();
        let id = values::id("event_id", &r.event_id)?.to_string();
        let (_, scope) = self.reader(&metadata).await?;
        let reach = self.reach(&scope, &Filter::default()).await?;
        let record = search::get(&self.database, &id, &reach)
            .await
            .map_err(ApiError::from)?
            .ok_or_else(|| ApiError::new(ErrorReason::AuditEventNotFound, "no such audit event"))?;
        Ok(Response::new(pb::GetEventResponse { record: Some(record.into_message()) }))
    }

    pub(super) async fn get_stats(&self, request: Request<pb::GetStatsRequest>) -> Reply<pb::GetStatsResponse> {
        let (metadata, _, r) = request.into_parts();
        let tenant_id = values::optional_id("tenant_id", &r.tenant_id)?.map(|u| u.to_string());
        let window = match r.window {
            None => DAY_MICROS,
            Some(d) => {
                let micros = d.seconds.saturating_mul(1_000_000).saturating_add(i64::from(d.nanos / 1000));
                if micros <= 0 || micros > MAX_WINDOW_DAYS * DAY_MICROS {
                    return Err(ApiError::field(
                        ErrorReason::ValueOutOfRange,
                        "window",
                        format!("window must be positive and at most {MAX_WINDOW_DAYS} days"),
                    ));
                }
                micros
            }
        };
        let end = r.end_time.as_ref().map(micros).unwrap_or_else(now_micros);
        let top = match r.top_actions_limit {
            n if n < 0 => {
                return Err(ApiError::field(ErrorReason::ValueOutOfRange, "top_actions_limit", "must not be negative"));
            }
            0 => 10,
            n => usize::try_from(n).unwrap_or(100).min(100),
        };
        let start = end.saturating_sub(window);
        let filter =
            Filter { tenant_id, include_descendants: true, start: Some(start), end: Some(end), ..Filter::default() };
        let (_, scope) = self.reader(&metadata).await?;
        let reach = self.reach(&scope, &filter).await?;
        let stats = search::stats(&self.database, &filter, &reach, top).await.map_err(ApiError::from)?;
        Ok(Response::new(pb::GetStatsResponse {
            window_start: Some(timestamp(start)),
            window_end: Some(timestamp(end)),
            event_count: stats.events,
            active_user_count: stats.active_users,
            top_action: stats.actions.first().map(|(a, _)| a.clone()).unwrap_or_default(),
            action_counts: stats.actions.into_iter().map(|(action, count)| pb::ActionCount { action, count }).collect(),
            failure_count: stats.failure,
            denied_count: stats.denied,
            success_count: stats.success,
        }))
    }
}

fn bad_token() -> ApiError {
    ApiError::field(ErrorReason::InvalidPageToken, "page_token", "page_token is not valid for this request")
}
