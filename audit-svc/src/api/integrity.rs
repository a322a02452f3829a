//! VerifyIntegrity and ListCheckpoints (`domain::chain`, `domain::checkpoint`).

use tether_proto::{
    audit::v1 as pb,
    common::v1::ErrorReason,
    values::{PageSize, PageToken},
};
use tether_runtime::{
    ApiError,
    db::{micros, timestamp},
};
use tonic::{Request, Response};

use super::{Audit, Reply};
use crate::{
    domain::chain::{self, GENESIS},
    events,
    store::{self, checkpoints},
};

/// Records recomputed per read.
const PAGE: usize = 5000;

impl Audit {
    pub(super) async fn verify_integrity(
        &self,
        request: Request<pb::VerifyIntegrityRequest>,
    ) -> Reply<pb::VerifyIntegrityResponse> {
        let (metadata, _, r) = request.into_parts();
        let caller = &self.auditor(&metadata).await?;
        let (head, _) = store::chain::head(self.database.pool()).await.map_err(ApiError::from)?;

        // Where to start and what the record before the start must hash to.
        let (from, to, anchor) = if !r.checkpoint.is_empty() {
            let key = self.checkpoint_key.as_ref().ok_or_else(|| {
                ApiError::field(ErrorReason::CheckpointInvalid, "checkpoint", "no checkpoint signing key is configured")
            })?;
            let state = key
                .open(&r.checkpoint)
                .map_err(|e| ApiError::field(ErrorReason::CheckpointInvalid, "checkpoint", e.to_string()))?;
            let (purged, purge_anchor) = store::retention::purged_through(&self.database).await?;
            if state.sequence < purged {
                // Its record was purged: the kept chain is checked from the purge boundary instead.
                let to = if r.to_sequence == 0 { head } else { r.to_sequence.min(head) };
                return self.check_chain(caller, purged + 1, to, chain::parse_hash(&purge_anchor)).await;
            }
            let stored = match state.sequence == purged {
                true => Some(purge_anchor),
                false => store::chain::hash_at(&self.database, state.sequence).await.map_err(ApiError::from)?,
            };
            if stored.as_deref() != Some(hex::encode(state.chain_hash).as_str()) {
                let detail = match stored {
                    None => format!("sequence {} of the checkpoint is missing", state.sequence),
                    Some(_) => format!("record {} differs from the checkpoint", state.sequence),
                };
                let reply = broken(state.sequence, state.sequence, state.sequence, String::new(), detail, 0, "");
                return self.verified(caller, reply).await;
            }
            let to = if r.to_sequence == 0 { head } else { r.to_sequence.min(head) };
            (state.sequence + 1, to, Some(state.chain_hash))
        } else if r.from_sequence != 0 || r.to_sequence != 0 {
            let from = r.from_sequence.max(1);
            let to = if r.to_sequence == 0 { head } else { r.to_sequence.min(head) };
            (from, to, None)
        } else if r.start_time.is_some() || r.end_time.is_some() {
            let range = store::chain::sequences_received(
                &self.database,
                r.start_time.as_ref().map(micros),
                r.end_time.as_ref().map(micros),
            )
            .await
            .map_err(ApiError::from)?;
            match range {
                Some((a, b)) => (a, b, None),
                None => (1, 0, None),
            }
        } else {
            (1, head, None)
        };
        self.check_chain(caller, from, to, anchor).await
    }

    /// Recomputes `from..=to`, the record before `from` hashing to `anchor` (read from the store
    /// when not given), and answers with the first break.
    async fn check_chain(
        &self,
        caller: &tether_runtime::access::Caller,
        from: u64,
        to: u64,
        anchor: Option<[u8; 32]>,
    ) -> Reply<pb::VerifyIntegrityResponse> {
        // Purged records are gone on purpose: the kept chain starts after the purge boundary,
        // from its hash.
        let (purged, purge_anchor) = store::retention::purged_through(&self.database).await?;
        let (from, anchor) = match (anchor, chain::parse_hash(&purge_anchor)) {
            (None, Some(hash)) if purged > 0 && from <= purged + 1 => (from.max(purged + 1), Some(hash)),
            (anchor, _) => (from, anchor),
        };
        if from > to {
            return self.verified(caller, ok_reply(from, to, 0, String::new())).await;
        }
        let mut previous = match anchor {
            Some(hash) => hash,
            None if from == 1 => GENESIS,
            None => {
                let before = store::chain::hash_at(&self.database, from - 1).await.map_err(ApiError::from)?;
                match before.as_deref().and_then(chain::parse_hash) {
                    Some(hash) => hash,
                    None => {
                        let detail = format!("sequence {} missing", from - 1);
                        let reply = broken(from, to, from - 1, String::new(), detail, 0, "");
                        return self.verified(caller, reply).await;
                    }
                }
            }
        };

        let mut expected = from;
        let mut checked = 0i64;
        while expected <= to {
            let page = store::chain::read_range(&self.database, expected, to, PAGE).await.map_err(ApiError::from)?;
            if page.is_empty() {
                break;
            }
            for record in page {
                let last = hex::encode(previous);
                if record.sequence != expected {
                    let detail = format!("sequence {expected} missing");
                    return self
                        .verified(caller, broken(from, to, expected, String::new(), detail, checked, &last))
                        .await;
                }
                let recomputed = chain::link(&previous, record.sequence, record.received_at, &record.event);
                if record.prev_hash != last {
                    let detail = format!("link to the previous record broken at sequence {expected}");
                    let reply = broken(from, to, expected, record.event.event_id, detail, checked, &last);
                    return self.verified(caller, reply).await;
                }
                if record.hash != hex::encode(recomputed) {
                    let detail = format!("hash mismatch at sequence {expected}");
                    let reply = broken(from, to, expected, record.event.event_id, detail, checked, &last);
                    return self.verified(caller, reply).await;
                }
                previous = recomputed;
                expected += 1;
                checked += 1;
            }
        }
        if expected <= to {
            let detail = format!("sequence {expected} missing");
            let last = hex::encode(previous);
            return self.verified(caller, broken(from, to, expected, String::new(), detail, checked, &last)).await;
        }
        self.verified(caller, ok_reply(from, to, checked, hex::encode(previous))).await
    }

    /// Records the verification in the trail, then answers it.
    async fn verified(
        &self,
        caller: &tether_runtime::access::Caller,
        reply: pb::VerifyIntegrityResponse,
    ) -> Reply<pb::VerifyIntegrityResponse> {
        events::record(&self.database, events::verification(caller, &reply)).await.map_err(ApiError::from)?;
        Ok(Response::new(reply))
    }

    pub(super) async fn list_checkpoints(
        &self,
        request: Request<pb::ListCheckpointsRequest>,
    ) -> Reply<pb::ListCheckpointsResponse> {
        let (metadata, _, r) = request.into_parts();
        let size = PageSize::parse("page_size", r.page_size)?.get();
        let before = PageToken::decode("page_token", &r.page_token, "checkpoints")?
            .map(|c| {
                c.parse::<u64>().map_err(|_| {
                    ApiError::field(ErrorReason::InvalidPageToken, "page_token", "page_token is not valid here")
                })
            })
            .transpose()?;
        self.auditor(&metadata).await?;
        let mut page = checkpoints::page(&self.database, before, size + 1).await.map_err(ApiError::from)?;
        let next_page_token = if page.len() > size {
            page.truncate(size);
            page.last().map(|c| PageToken::encode("checkpoints", &c.sequence.to_string())).unwrap_or_default()
        } else {
            String::new()
        };
        Ok(Response::new(pb::ListCheckpointsResponse {
            checkpoints: page
                .into_iter()
                .map(|c| pb::Checkpoint {
                    sequence: c.sequence,
                    chain_hash: c.chain_hash,
                    signed_at: Some(timestamp(c.signed_at)),
                    note: c.note,
                })
                .collect(),
            next_page_token,
            verifier_key: self.checkpoint_key.as_ref().map(|k| k.verifier_key()).unwrap_or_default(),
        }))
    }
}

fn ok_reply(from: u64, to: u64, checked: i64, last: String) -> pb::VerifyIntegrityResponse {
    pb::VerifyIntegrityResponse {
        ok: true,
        events_checked: checked,
        from_sequence: from,
        to_sequence: to,
        last_chain_hash: last,
        ..Default::default()
    }
}

fn broken(
    from: u64,
    to: u64,
    at: u64,
    event_id: String,
    detail: String,
    checked: i64,
    last: &str,
) -> pb::VerifyIntegrityResponse {
    pb::VerifyIntegrityResponse {
        ok: false,
        events_checked: checked,
        first_broken_event_id: event_id,
        first_broken_sequence: at,
        detail,
        from_sequence: from,
        to_sequence: to,
        last_chain_hash: last.to_owned(),
    }
}
