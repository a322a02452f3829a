//! `grpc.health.v1.Health`, with a shutdown that ends Watch streams.
//!
//! The stock implementation keeps Watch streams open forever, which would hold a graceful
//! shutdown until its grace period runs out. Here, shutting down flips every service to
//! NOT_SERVING, sends that to watchers, then ends their streams so connections can drain.

use std::{collections::HashMap, pin::Pin, sync::Arc};

use futures_util::Stream;
use tokio::sync::watch;
use tonic::{Request, Response, Status};
use tonic_health::pb::{
    HealthCheckRequest, HealthCheckResponse,
    health_check_response::ServingStatus,
    health_server::{Health, HealthServer},
};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Slot {
    status: ServingStatus,
    /// Set once at shutdown: watchers get the final status, then their stream ends.
    closing: bool,
}

/// The handle a service uses to say whether it is ready; cheap to clone.
#[derive(Debug, Clone)]
pub struct HealthReporter {
    slots: Arc<HashMap<String, watch::Sender<Slot>>>,
}

impl HealthReporter {
    /// Registers the overall server (`""`) and each named gRPC service, all NOT_SERVING.
    pub fn new(services: &[&str]) -> Self {
        let initial = Slot { status: ServingStatus::NotServing, closing: false };
        let slots = std::iter::once("")
            .chain(services.iter().copied())
            .map(|name| (name.to_owned(), watch::Sender::new(initial)))
            .collect();
        Self { slots: Arc::new(slots) }
    }

    /// Marks the server and every registered service SERVING or NOT_SERVING.
    pub fn set_serving(&self, serving: bool) {
        let status = if serving { ServingStatus::Serving } else { ServingStatus::NotServing };
        for slot in self.slots.values() {
            slot.send_if_modified(|s| {
                let changed = !s.closing && s.status != status;
                if changed {
                    s.status = status;
                }
                changed
            });
        }
    }

    pub fn is_serving(&self) -> bool {
        self.slots.get("").is_some_and(|s| s.borrow().status == ServingStatus::Serving)
    }

    pub(crate) fn begin_shutdown(&self) {
        for slot in self.slots.values() {
            slot.send_replace(Slot { status: ServingStatus::NotServing, closing: true });
        }
    }

    pub(crate) fn server(&self) -> HealthServer<HealthService> {
        HealthServer::new(HealthService { reporter: self.clone() })
    }
}

pub struct HealthService {
    reporter: HealthReporter,
}

type WatchStream = Pin<Box<dyn Stream<Item = Result<HealthCheckResponse, Status>> + Send>>;

impl HealthService {
    fn slot(&self, service: &str) -> Result<&watch::Sender<Slot>, Status> {
        self.reporter.slots.get(service).ok_or_else(|| Status::not_found("service not registered"))
    }
}

#[tonic::async_trait]
impl Health for HealthService {
    async fn check(&self, request: Request<HealthCheckRequest>) -> Result<Response<HealthCheckResponse>, Status> {
        let status = self.slot(&request.get_ref().service)?.borrow().status;
        Ok(Response::new(HealthCheckResponse { status: status.into() }))
    }

    type WatchStream = WatchStream;

    async fn watch(&self, request: Request<HealthCheckRequest>) -> Result<Response<Self::WatchStream>, Status> {
        let receiver = self.slot(&request.get_ref().service)?.subscribe();
        // State: (receiver, last status sent, stream finished).
        let stream = futures_util::stream::unfold((receiver, None, false), |(mut rx, last, done)| async move {
            if done {
                return None;
            }
            loop {
                let slot = *rx.borrow_and_update();
                if last != Some(slot.status) || slot.closing {
                    let reply = HealthCheckResponse { status: slot.status.into() };
                    return Some((Ok(reply), (rx, Some(slot.status), slot.closing)));
                }
                if rx.changed().await.is_err() {
                    return None;
                }
            }
        });
        Ok(Response::new(Box::pin(stream)))
    }
}
