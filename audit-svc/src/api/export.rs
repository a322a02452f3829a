//! ExportEvents: a filtered range as a file, streamed.
//!
//! Rules:
//!
//! 1. Records are read oldest first in pages of 1,000 and cut into chunks of at most 64 KiB, so
//!    an export of any size holds about one page in memory, never the whole result.
//! 2. The stream is produced as fast as the client reads it (a channel of two chunks); a client
//!    that goes away stops the export at the next chunk, and so does shutdown.
//! 3. The last message carries the summary (rows, bytes, SHA-256 of the file, last sequence), and
//!    the export itself is audited (`audit.export`), also when it was cut short.

use std::sync::Arc;

use sha2::{Digest, Sha256};
use tether_proto::{audit::v1 as pb, common::v1::ErrorReason};
use tether_runtime::ApiError;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, codegen::BoxStream};

use super::{Audit, Reply, convert};
use crate::{
    domain::filter::{Filter, Reach},
    events,
    store::search::{self, Cursor, Order},
};

const PAGE: usize = 1000;
const CHUNK: usize = 64 * 1024;

impl Audit {
    pub(super) async fn export_events(
        self: Arc<Self>,
        request: Request<pb::ExportEventsRequest>,
    ) -> Reply<BoxStream<pb::ExportEventsResponse>> {
        let (metadata, _, r) = request.into_parts();
        let filter = Filter::parse("filter", r.filter.as_ref())?;
        let format = match pb::ExportFormat::try_from(r.format) {
            Ok(pb::ExportFormat::Unspecified) => {
                return Err(ApiError::field(ErrorReason::FieldRequired, "format", "format is required"));
            }
            Ok(f) => f,
            Err(_) => {
                return Err(ApiError::field(ErrorReason::ValueOutOfRange, "format", "format is not a known format"));
            }
        };
        let (caller, scope) = self.reader(&metadata).await?;
        let reach = self.reach(&scope, &filter).await?;
        let (tx, rx) = mpsc::channel(2);
        tokio::spawn(async move {
            let outcome = self.write_export(&filter, &reach, format, &tx).await;
            let summary = match &outcome {
                Ok(summary) => Some(summary.clone()),
                Err(_) => None,
            };
            if let Err(Some(e)) = &outcome {
                let _ = tx.send(Err(Status::from(e.clone()))).await;
            }
            let event = events::export(&caller, format.as_str_name(), &filter, summary.as_ref(), outcome.is_ok());
            if let Err(e) = events::record(&self.database, event).await {
                tracing::error!(error = %e, "could not record the export in the audit trail");
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    /// Writes the file into `tx`; `Err(None)` when the client went away or shutdown began.
    async fn write_export(
        &self,
        filter: &Filter,
        reach: &Reach,
        format: pb::ExportFormat,
        tx: &mpsc::Sender<Result<pb::ExportEventsResponse, Status>>,
    ) -> Result<pb::ExportSummary, Option<ApiError>> {
        let mut file = Sha256::new();
        let mut summary = pb::ExportSummary::default();
        let mut buffer = Vec::with_capacity(CHUNK * 2);
        if format == pb::ExportFormat::Csv {
            buffer.extend(csv_lines(&[convert::CSV_HEADER.map(str::to_owned).to_vec()]).map_err(Some)?);
        }
        let mut after: Option<Cursor> = None;
        loop {
            if self.stopping.is_cancelled() {
                return Err(None);
            }
            let page = search::list(&self.database, filter, reach, Order::OldestFirst, after, PAGE)
                .await
                .map_err(|e| Some(ApiError::from(e)))?;
            let done = page.len() < PAGE;
            match format {
                pb::ExportFormat::Csv => {
                    let rows: Vec<Vec<String>> = page.iter().map(convert::csv_row).collect();
                    buffer.extend(csv_lines(&rows).map_err(Some)?);
                }
                _ => {
                    for record in &page {
                        buffer.extend(convert::json_line(record).into_bytes());
                        buffer.push(b'\n');
                    }
                }
            }
            summary.event_count += page.len() as i64;
            if let Some(last) = page.last() {
                summary.last_sequence = last.sequence;
            }
            while buffer.len() >= CHUNK {
                let rest = buffer.split_off(CHUNK);
                send(tx, &mut file, &mut summary, std::mem::replace(&mut buffer, rest)).await?;
            }
            after = page.last().map(|r| Cursor { occurred_at: r.occurred_at(), sequence: r.sequence });
            if done {
                break;
            }
        }
        if !buffer.is_empty() {
            send(tx, &mut file, &mut summary, buffer).await?;
        }
        summary.sha256 = hex::encode(file.finalize());
        tx.send(Ok(pb::ExportEventsResponse { data: Vec::new(), summary: Some(summary.clone()) }))
            .await
            .map_err(|_| None)?;
        Ok(summary)
    }
}

async fn send(
    tx: &mpsc::Sender<Result<pb::ExportEventsResponse, Status>>,
    file: &mut Sha256,
    summary: &mut pb::ExportSummary,
    chunk: Vec<u8>,
) -> Result<(), Option<ApiError>> {
    file.update(&chunk);
    summary.byte_count += chunk.len() as i64;
    tx.send(Ok(pb::ExportEventsResponse { data: chunk, summary: None })).await.map_err(|_| None)
}

fn csv_lines(rows: &[Vec<String>]) -> Result<Vec<u8>, ApiError> {
    let mut writer = csv::WriterBuilder::new().terminator(csv::Terminator::CRLF).from_writer(Vec::new());
    for row in rows {
        writer.write_record(row).map_err(ApiError::internal)?;
    }
    writer.into_inner().map_err(ApiError::internal)
}
