//! Tower layers every Tether server runs: a server span per call, and a per-call timeout.

use std::{
    task::{Context, Poll},
    time::Duration,
};

use opentelemetry::{global, trace::TraceContextExt};
use tether_proto::common::v1::ErrorReason;
use tonic::Code;
use tower::{Layer, Service};
use tracing::{Instrument, field::Empty};
use tracing_opentelemetry::OpenTelemetrySpanExt;

use crate::{error::ApiError, telemetry::HeaderExtractor};

use super::BoxFuture;

/// Opens a server span per call, parented on the caller's `traceparent` when there is one, and
/// records its trace id so every log line of the call carries it.
#[derive(Debug, Clone, Copy, Default)]
pub struct ServerSpanLayer;

impl<S> Layer<S> for ServerSpanLayer {
    type Service = ServerSpan<S>;
    fn layer(&self, inner: S) -> Self::Service {
        ServerSpan { inner }
    }
}

#[derive(Debug, Clone)]
pub struct ServerSpan<S> {
    inner: S,
}

impl<S, B, ResB> Service<http::Request<B>> for ServerSpan<S>
where
    S: Service<http::Request<B>, Response = http::Response<ResB>>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = BoxFuture<Result<S::Response, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let path = request.uri().path();
        let (service, method) = path.trim_start_matches('/').split_once('/').unwrap_or((path, ""));
        let span = tracing::info_span!(
            "grpc",
            otel.name = %path,
            otel.kind = "server",
            otel.status_code = Empty,
            rpc.system = "grpc",
            rpc.service = %service,
            rpc.method = %method,
            rpc.grpc.status_code = Empty,
            trace_id = Empty,
        );
        let parent = global::get_text_map_propagator(|p| p.extract(&HeaderExtractor(request.headers())));
        if parent.span().span_context().is_valid() {
            let _ = span.set_parent(parent);
        }
        let span_context = span.context().span().span_context().clone();
        if span_context.is_valid() {
            span.record("trace_id", tracing::field::display(span_context.trace_id()));
        }
        let response = self.inner.call(request);
        let record_span = span.clone();
        Box::pin(
            async move {
                let result = response.await;
                if let Ok(response) = &result {
                    // Unary errors are "trailers-only": the status is in the headers.
                    let code = response
                        .headers()
                        .get("grpc-status")
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| v.parse::<i32>().ok())
                        .unwrap_or(0);
                    record_span.record("rpc.grpc.status_code", code);
                    if is_server_fault(Code::from_i32(code)) {
                        record_span.record("otel.status_code", "ERROR");
                    }
                }
                result
            }
            .instrument(span),
        )
    }
}

/// Codes that mean the server failed, as opposed to the caller asking for something wrong.
fn is_server_fault(code: Code) -> bool {
    matches!(code, Code::Internal | Code::Unknown | Code::DataLoss | Code::Unavailable | Code::DeadlineExceeded)
}

/// Answers DEADLINE_EXCEEDED (reason `DEADLINE_EXCEEDED`) when a call runs past the limit.
/// For streaming calls it bounds the time to the first response, not the stream's life.
#[derive(Debug, Clone, Copy)]
pub struct RequestTimeoutLayer {
    pub timeout: Duration,
}

impl<S> Layer<S> for RequestTimeoutLayer {
    type Service = RequestTimeout<S>;
    fn layer(&self, inner: S) -> Self::Service {
        RequestTimeout { inner, timeout: self.timeout }
    }
}

#[derive(Debug, Clone)]
pub struct RequestTimeout<S> {
    inner: S,
    timeout: Duration,
}

impl<S, B, ResB> Service<http::Request<B>> for RequestTimeout<S>
where
    S: Service<http::Request<B>, Response = http::Response<ResB>>,
    S::Future: Send + 'static,
    ResB: Default,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = BoxFuture<Result<S::Response, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let response = self.inner.call(request);
        let timeout = self.timeout;
        Box::pin(async move {
            match tokio::time::timeout(timeout, response).await {
                Ok(result) => result,
                Err(_) => {
                    let error = ApiError::new(
                        ErrorReason::DeadlineExceeded,
                        format!("the call did not finish within {} ms", timeout.as_millis()),
                    );
                    Ok(tonic::Status::from(error).into_http())
                }
            }
        })
    }
}
