//! The gRPC server every service runs.
//!
//! [`serve`] adds health and reflection to the service's own routes, wraps them in the shared
//! layers (server span, per-call timeout, global concurrency limit with load shedding), and
//! serves until the shutdown future resolves. Shutdown then drains: health turns NOT_SERVING,
//! new connections are refused, in-flight calls finish, and whatever is still running after the
//! grace period is cut off.

mod cut;
mod health;
mod layers;

use std::future::Future;

use futures_util::StreamExt;
use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;
use tokio_util::sync::CancellationToken;
use tonic::{service::Routes, transport::Server};
use tower::{ServiceBuilder, limit::GlobalConcurrencyLimitLayer};

pub use health::HealthReporter;
pub use layers::{RequestTimeoutLayer, ServerSpanLayer};

use crate::config::ServiceSettings;

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("reflection: {0}")]
    Reflection(#[from] tonic_reflection::server::Error),
    #[error("transport: {0}")]
    Transport(#[from] tonic::transport::Error),
}

/// Serves `routes` (plus health and reflection) on `listener` until `shutdown` resolves, then
/// drains for at most `settings.shutdown_grace`.
pub async fn serve(
    settings: &ServiceSettings,
    routes: Routes,
    health: &HealthReporter,
    stopping: &CancellationToken,
    listener: TcpListener,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ServeError> {
    let reflection_v1 = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(tether_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()?;
    // Older grpcurl and grpcui builds still ask the v1alpha service.
    let reflection_v1alpha = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(tether_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1alpha()?;

    let layers = ServiceBuilder::new()
        .layer(ServerSpanLayer)
        .layer(RequestTimeoutLayer { timeout: settings.request_timeout })
        .layer(GlobalConcurrencyLimitLayer::new(settings.max_concurrent_requests));

    let cut = CancellationToken::new();
    let cut_on_accept = cut.clone();
    let incoming = TcpListenerStream::new(listener).map(move |conn| {
        conn.map(|stream| {
            // Small unary messages: don't let Nagle hold them back.
            let _ = stream.set_nodelay(true);
            cut::CuttableStream::new(stream, &cut_on_accept)
        })
    });

    let (drain_tx, drain_rx) = tokio::sync::oneshot::channel::<()>();
    let server = Server::builder()
        // Over the concurrency limit, calls are refused with RESOURCE_EXHAUSTED at once
        // rather than queued behind calls that may be slow.
        .load_shed(true)
        .layer(layers)
        .add_routes(routes)
        .add_service(health.server())
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .serve_with_incoming_shutdown(incoming, async {
            let _ = drain_rx.await;
        });
    tokio::pin!(server);

    tokio::select! {
        result = &mut server => return result.map_err(Into::into),
        () = shutdown => {}
    }
    tracing::info!(service = settings.service, "draining in-flight calls");
    health.begin_shutdown();
    stopping.cancel();
    let _ = drain_tx.send(());
    match tokio::time::timeout(settings.shutdown_grace, server).await {
        Ok(result) => result.map_err(Into::into),
        Err(_) => {
            tracing::warn!(service = settings.service, "shutdown grace elapsed; closing remaining calls");
            cut.cancel();
            Ok(())
        }
    }
}
