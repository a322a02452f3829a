//! TailEvents: new matching events as they are stored.
//!
//! Rules:
//!
//! 1. The stream starts after `after_sequence`, or at the chain's head when it is 0.
//! 2. It reads only records at or below the committed head, in sequence order, so nothing is
//!    skipped or sent twice however writers interleave; `position` is the last sequence
//!    considered, and resuming from it continues exactly there.
//! 3. It wakes when this replica stores records, and polls for other replicas' records every
//!    `TETHER_AUDIT_TAIL_POLL_MS`; with nothing to send it sends a heartbeat (position only) every
//!    `TETHER_AUDIT_TAIL_HEARTBEAT_MS`. It ends when the client goes away or shutdown begins.

use std::sync::Arc;

use tether_proto::audit::v1 as pb;
use tether_runtime::ApiError;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, codegen::BoxStream};

use super::{Audit, Reply};
use crate::{
    domain::filter::{Filter, Reach},
    store::{chain, search},
};

const BATCH: usize = 500;

impl Audit {
    pub(super) async fn tail_events(
        self: Arc<Self>,
        request: Request<pb::TailEventsRequest>,
    ) -> Reply<BoxStream<pb::TailEventsResponse>> {
        let (metadata, _, r) = request.into_parts();
        let filter = Filter::parse("filter", r.filter.as_ref())?;
        let (_, scope) = self.reader(&metadata).await?;
        let reach = self.reach(&scope, &filter).await?;
        let start = match r.after_sequence {
            0 => chain::head(self.database.pool()).await.map_err(ApiError::from)?.0,
            n => n,
        };
        let (tx, rx) = mpsc::channel(16);
        tokio::spawn(async move {
            if let Err(Some(e)) = self.follow(&filter, &reach, start, &tx).await {
                let _ = tx.send(Err(Status::from(e))).await;
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    /// Sends matching records after `position` until the client leaves (`Err(None)`).
    async fn follow(
        &self,
        filter: &Filter,
        reach: &Reach,
        mut position: u64,
        tx: &mpsc::Sender<Result<pb::TailEventsResponse, Status>>,
    ) -> Result<(), Option<ApiError>> {
        let mut last_sent = tokio::time::Instant::now();
        loop {
            // Armed before reading, so a commit between the read and the wait is not missed.
            let committed = self.database.committed();
            let (head, _) = chain::head(self.database.pool()).await.map_err(|e| Some(ApiError::from(e)))?;
            let records = search::after_sequence(&self.database, filter, reach, position, head, BATCH)
                .await
                .map_err(|e| Some(ApiError::from(e)))?;
            let full = records.len() == BATCH;
            for record in records {
                position = record.sequence;
                let message = pb::TailEventsResponse { position, record: Some(record.into_message()) };
                tx.send(Ok(message)).await.map_err(|_| None)?;
                last_sent = tokio::time::Instant::now();
            }
            if full {
                continue;
            }
            position = position.max(head);
            if last_sent.elapsed() >= self.tail_heartbeat {
                tx.send(Ok(pb::TailEventsResponse { position, record: None })).await.map_err(|_| None)?;
                last_sent = tokio::time::Instant::now();
            }
            let until_heartbeat = self.tail_heartbeat.saturating_sub(last_sent.elapsed());
            tokio::select! {
                _ = committed => {}
                _ = tokio::time::sleep(self.tail_poll.min(until_heartbeat)) => {}
                _ = tx.closed() => return Err(None),
                _ = self.stopping.cancelled() => return Err(None),
            }
        }
    }
}
