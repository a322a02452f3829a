//! Telemetry installation: the log subscriber, the tracer provider with its OTLP exporter, and
//! the W3C propagator. Server binaries only.

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::{Resource, propagation::TraceContextPropagator, trace::SdkTracerProvider};
use tracing_subscriber::{
    EnvFilter, Layer, Registry, filter::LevelFilter, layer::SubscriberExt, util::SubscriberInitExt,
};

use crate::config::{ConfigError, ConfigSource, invalid};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Pretty,
    Json,
}

#[derive(Debug, Clone)]
pub struct TelemetrySettings {
    /// `service.name` on exported spans.
    pub service_name: String,
    pub log_format: LogFormat,
    /// An `EnvFilter` directive such as `info,tether=debug`.
    pub log_filter: String,
    pub otlp_endpoint: Option<String>,
}

impl TelemetrySettings {
    pub fn load(source: &ConfigSource, service_name: &str) -> Result<Self, ConfigError> {
        let log_format = match source.get("TETHER_LOG_FORMAT") {
            None | Some("pretty") => LogFormat::Pretty,
            Some("json") => LogFormat::Json,
            Some(other) => return Err(invalid("TETHER_LOG_FORMAT", other, "pretty or json")),
        };
        let log_filter = source.get("TETHER_LOG").unwrap_or("info").to_owned();
        EnvFilter::try_new(&log_filter)
            .map_err(|_| invalid("TETHER_LOG", &log_filter, "a tracing filter such as info or tether=debug"))?;
        let otlp_endpoint = source.get("OTEL_EXPORTER_OTLP_ENDPOINT").map(str::to_owned);
        if let Some(endpoint) = &otlp_endpoint
            && !(endpoint.starts_with("http://") || endpoint.starts_with("https://"))
        {
            return Err(invalid("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint, "an http:// or https:// URL"));
        }
        let service_name = source.get("OTEL_SERVICE_NAME").unwrap_or(service_name).to_owned();
        Ok(Self { service_name, log_format, log_filter, otlp_endpoint })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    #[error("OTLP exporter: {0}")]
    Exporter(String),
    #[error("a global tracing subscriber is already installed")]
    AlreadyInstalled,
}

/// Flushes and stops span export when dropped (at the end of `main`).
pub struct TelemetryGuard {
    provider: SdkTracerProvider,
}

impl Drop for TelemetryGuard {
    fn drop(&mut self) {
        let _ = self.provider.shutdown();
    }
}

/// Installs the global subscriber, tracer provider and W3C propagator.
pub fn init(settings: &TelemetrySettings) -> Result<TelemetryGuard, TelemetryError> {
    let mut builder = SdkTracerProvider::builder()
        .with_resource(Resource::builder().with_service_name(settings.service_name.clone()).build());
    if let Some(endpoint) = &settings.otlp_endpoint {
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_tonic()
            .with_endpoint(endpoint.clone())
            .build()
            .map_err(|e| TelemetryError::Exporter(e.to_string()))?;
        builder = builder.with_batch_exporter(exporter);
    }
    let provider = builder.build();
    let filter = EnvFilter::try_new(&settings.log_filter).unwrap_or_else(|_| EnvFilter::new("info"));
    let fmt_layer = match settings.log_format {
        LogFormat::Pretty => tracing_subscriber::fmt::layer().with_writer(std::io::stderr).boxed(),
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .json()
            .with_current_span(true)
            .with_span_list(false)
            .with_writer(std::io::stderr)
            .boxed(),
    };
    // The log filter applies to log lines only: a quiet log level must not stop spans from
    // reaching the collector.
    Registry::default()
        .with(fmt_layer.with_filter(filter))
        .with(otel_layer(&provider).with_filter(LevelFilter::INFO))
        .try_init()
        .map_err(|_| TelemetryError::AlreadyInstalled)?;
    Ok(TelemetryGuard { provider })
}

/// The tracing layer that turns spans into OpenTelemetry spans of `provider`; also installs the
/// W3C propagator. Tests use it with an in-memory exporter.
pub fn otel_layer<S>(provider: &SdkTracerProvider) -> impl Layer<S> + 'static
where
    S: tracing::Subscriber + for<'span> tracing_subscriber::registry::LookupSpan<'span> + Send + Sync,
{
    install_propagator();
    opentelemetry::global::set_tracer_provider(provider.clone());
    tracing_opentelemetry::layer().with_tracer(provider.tracer("tether"))
}

pub fn install_propagator() {
    opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
}
