//! The gRPC server every service runs.
//!
//! [`serve`] adds health and reflection (describing the one service the port serves) to the
//! service's own routes, wraps them in the shared layers (server span, per-call timeout, a
//! concurrency budget per class of call with load shedding, see [`budget`]), and serves until
//! the shutdown future resolves. Shutdown then drains: health turns NOT_SERVING,
//! new connections are refused, in-flight calls finish, and whatever is still running after the
//! grace period is cut off.

pub mod budget;
mod cut;
mod health;
mod layers;

use std::future::Future;

use futures_util::StreamExt;
use prost::Message;
use prost_types::{FileDescriptorProto, FileDescriptorSet};
use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;
use tokio_util::sync::CancellationToken;
use tonic::{service::Routes, transport::Server};
use tower::ServiceBuilder;

pub use budget::{CallBudgetLayer, CallClass, ServedApi};
pub use health::HealthReporter;
pub use layers::{RequestTimeoutLayer, ServerSpanLayer};

use crate::config::ServiceSettings;

/// The future the server's own tower layers return.
type BoxFuture<T> = std::pin::Pin<Box<dyn Future<Output = T> + Send>>;

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("reflection: {0}")]
    Reflection(#[from] tonic_reflection::server::Error),
    #[error("reflection: the descriptor set does not decode: {0}")]
    Descriptors(#[from] prost::DecodeError),
    #[error("transport: {0}")]
    Transport(#[from] tonic::transport::Error),
}

/// Serves `routes` (the service `api`, plus health and reflection) on `listener` until
/// `shutdown` resolves, then drains for at most `settings.shutdown_grace`.
pub async fn serve(
    settings: &ServiceSettings,
    api: ServedApi,
    routes: Routes,
    health: &HealthReporter,
    stopping: &CancellationToken,
    listener: TcpListener,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ServeError> {
    // Reflection describes what this port serves, not every Tether service: its own API (and
    // the files it needs), health, and reflection itself.
    let own_files = files_describing(api.name)?;
    let reflection_v1 = tonic_reflection::server::Builder::configure()
        .register_file_descriptor_set(own_files.clone())
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .with_service_name(api.name)
        .with_service_name(HEALTH)
        .with_service_name("grpc.reflection.v1.ServerReflection")
        .build_v1()?;
    // Older grpcurl and grpcui builds still ask the v1alpha service.
    let reflection_v1alpha = tonic_reflection::server::Builder::configure()
        .register_file_descriptor_set(own_files)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .with_service_name(api.name)
        .with_service_name(HEALTH)
        .with_service_name("grpc.reflection.v1alpha.ServerReflection")
        .build_v1alpha()?;

    let layers = ServiceBuilder::new()
        .layer(ServerSpanLayer)
        .layer(RequestTimeoutLayer { timeout: settings.request_timeout })
        .layer(CallBudgetLayer::new(api, settings.budgets, settings.service_token.clone()));

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

const HEALTH: &str = "grpc.health.v1.Health";

/// The files of Tether's descriptor set that describe `service` (`tether.identity.v1.IdentityService`):
/// the one that defines it and every file it imports, directly or not.
fn files_describing(service: &str) -> Result<FileDescriptorSet, prost::DecodeError> {
    let all = FileDescriptorSet::decode(tether_proto::FILE_DESCRIPTOR_SET)?;
    let defines =
        |file: &FileDescriptorProto| file.service.iter().any(|s| format!("{}.{}", file.package(), s.name()) == service);
    let mut wanted: Vec<String> = all.file.iter().filter(|f| defines(f)).map(|f| f.name().to_owned()).collect();
    let mut i = 0;
    while let Some(name) = wanted.get(i).cloned() {
        if let Some(file) = all.file.iter().find(|f| f.name() == name) {
            for dependency in &file.dependency {
                if !wanted.contains(dependency) {
                    wanted.push(dependency.clone());
                }
            }
        }
        i += 1;
    }
    Ok(FileDescriptorSet { file: all.file.into_iter().filter(|f| wanted.iter().any(|w| w == f.name())).collect() })
}
