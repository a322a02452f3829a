//! Logs and traces, set up once per process.
//!
//! Log lines go to stderr, pretty or JSON (`TETHER_LOG_FORMAT`), filtered by `TETHER_LOG`
//! (default `info`). Spans are exported over OTLP/gRPC when `OTEL_EXPORTER_OTLP_ENDPOINT` is set.
//! The W3C trace-context propagator is installed globally so the server and client layers in
//! `server` and [`crate::client`] read and write `traceparent`.
//!
//! Installing all this needs the `server` feature. The client part ([`current_trace_id`] and the
//! header injection of [`crate::client`]) needs only the OpenTelemetry API: without `server`
//! there is no bridge from `tracing` spans, so the context is OpenTelemetry's current one (what
//! a client that attaches contexts itself has set; empty otherwise).

use opentelemetry::{Context, propagation::Injector, trace::TraceContextExt};

#[cfg(feature = "server")]
mod install;
#[cfg(feature = "server")]
pub use install::{LogFormat, TelemetryError, TelemetryGuard, TelemetrySettings, init, install_propagator, otel_layer};

/// The OpenTelemetry context of the current `tracing` span (with `server`, which bridges spans
/// to OpenTelemetry), else OpenTelemetry's current context.
pub(crate) fn current_context() -> Context {
    #[cfg(feature = "server")]
    {
        tracing_opentelemetry::OpenTelemetrySpanExt::context(&tracing::Span::current())
    }
    #[cfg(not(feature = "server"))]
    {
        Context::current()
    }
}

/// The W3C trace id (32 hex digits) of the current span, if it belongs to a trace.
pub fn current_trace_id() -> Option<String> {
    let cx = current_context();
    let span_context = cx.span().span_context().clone();
    span_context.is_valid().then(|| span_context.trace_id().to_string())
}

/// The W3C span id of the current span, if it is part of a trace.
pub fn current_span_id() -> Option<String> {
    let cx = current_context();
    let span_context = cx.span().span_context().clone();
    span_context.is_valid().then(|| span_context.span_id().to_string())
}

/// Reads propagation headers out of an HTTP/2 header map.
#[cfg(feature = "server")]
pub(crate) struct HeaderExtractor<'a>(pub &'a http::HeaderMap);

#[cfg(feature = "server")]
impl opentelemetry::propagation::Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }
    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(http::HeaderName::as_str).collect()
    }
}

/// Writes propagation headers into an HTTP/2 header map.
pub(crate) struct HeaderInjector<'a>(pub &'a mut http::HeaderMap);

impl Injector for HeaderInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        if let (Ok(name), Ok(value)) = (http::HeaderName::try_from(key), http::HeaderValue::try_from(value)) {
            self.0.insert(name, value);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outside_a_trace_there_is_no_trace_id() {
        assert_eq!(current_trace_id(), None);
    }

    #[test]
    fn the_injector_keeps_only_valid_headers() {
        let mut headers = http::HeaderMap::new();
        let mut injector = HeaderInjector(&mut headers);
        injector.set("traceparent", "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01".to_owned());
        injector.set("bad header", "x".to_owned());
        injector.set("tracestate", "a\nb".to_owned());
        assert_eq!(headers.len(), 1);
        assert!(headers.contains_key("traceparent"));
    }

    #[cfg(not(feature = "server"))]
    #[test]
    fn a_client_reads_the_context_it_attached() {
        use opentelemetry::trace::{SpanContext, SpanId, TraceFlags, TraceId, TraceState};
        let trace_id = TraceId::from_bytes([7; 16]);
        let span =
            SpanContext::new(trace_id, SpanId::from_bytes([9; 8]), TraceFlags::SAMPLED, true, TraceState::default());
        let _attached = Context::new().with_remote_span_context(span).attach();
        assert_eq!(current_trace_id(), Some(trace_id.to_string()));
    }
}
