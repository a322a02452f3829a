//! Outbound gRPC: a channel that carries the caller's W3C trace context.

use std::{
    task::{Context, Poll},
    time::Duration,
};

use opentelemetry::global;
use tonic::transport::{Channel, Endpoint};
use tower::{Layer, Service};

use crate::telemetry::{HeaderInjector, current_context};

/// A channel to another service; every call it makes carries `traceparent` of the current span.
pub type TracedChannel = InjectTraceContext<Channel>;

/// A lazily connecting channel to `addr` (`http://host:port`); connection errors surface per call
/// as UNAVAILABLE, so services can start in any order.
pub fn connect_lazy(addr: &str) -> Result<TracedChannel, tonic::transport::Error> {
    let channel = Endpoint::from_shared(addr.to_owned())?
        .connect_timeout(Duration::from_secs(2))
        .tcp_nodelay(true)
        .connect_lazy();
    Ok(InjectTraceContextLayer.layer(channel))
}

#[derive(Debug, Clone, Copy, Default)]
pub struct InjectTraceContextLayer;

impl<S> Layer<S> for InjectTraceContextLayer {
    type Service = InjectTraceContext<S>;
    fn layer(&self, inner: S) -> Self::Service {
        InjectTraceContext { inner }
    }
}

/// Writes the current span's context into each outgoing request's headers.
#[derive(Debug, Clone)]
pub struct InjectTraceContext<S> {
    inner: S,
}

impl<S, B> Service<http::Request<B>> for InjectTraceContext<S>
where
    S: Service<http::Request<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<B>) -> Self::Future {
        let context = current_context();
        global::get_text_map_propagator(|propagator| {
            propagator.inject_context(&context, &mut HeaderInjector(request.headers_mut()));
        });
        self.inner.call(request)
    }
}
