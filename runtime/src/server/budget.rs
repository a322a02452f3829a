//! Concurrency budgets per class of call, so that one kind of work cannot starve another.
//!
//! A single limit over every call let a storm of logins (each spends an argon2 hash, and anyone
//! may send one) take every slot, and then Authenticate, which every other service calls on
//! every request, and the health check were refused too: the platform looked down. Here each
//! class has its own budget, declared per method by the service ([`ServedApi`]):
//!
//! - probes (`grpc.health.v1.Health`, reflection) are never limited nor shed;
//! - the hot path ([`CallClass::HotPath`]: Authenticate, Check, ...) has a budget of its own;
//! - expensive calls ([`CallClass::Expensive`]: whatever spends a password hash) have a budget
//!   of their own, and each client address gets only a share of it;
//! - everything else ([`CallClass::Standard`]) shares the last budget.
//!
//! A call over its budget is answered at once with RESOURCE_EXHAUSTED / `OVERLOADED` (metadata
//! `limit`), never queued: a queue would only make it later. The expensive budget also bounds
//! the password-hashing queue behind it: at most that many such calls wait for a hash.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    task::{Context, Poll},
    time::Duration,
};

use prost::bytes::Buf;

use tether_proto::common::v1::ErrorReason;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tonic::{metadata::MetadataMap, transport::server::TcpConnectInfo};
use tower::{Layer, Service};

use crate::{access::ServiceToken, config::CallBudgets, error::ApiError};

/// How a method's calls are budgeted. Methods a service does not name are [`CallClass::Standard`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallClass {
    /// Called by other services on the path of every request they serve.
    HotPath,
    /// Spends a password hash (or is a credential check anyone may send): costly, and open to
    /// a flood from one address.
    Expensive,
    /// Everything else.
    Standard,
}

/// The one gRPC service a port serves: its full name (`tether.identity.v1.IdentityService`) and
/// the class of each of its methods that is not [`CallClass::Standard`].
#[derive(Debug, Clone, Copy)]
pub struct ServedApi {
    pub name: &'static str,
    pub classes: &'static [(&'static str, CallClass)],
}

impl ServedApi {
    fn class_of(&self, path: &str) -> Option<CallClass> {
        let (service, method) = path.trim_start_matches('/').split_once('/')?;
        if service == "grpc.health.v1.Health" || service.starts_with("grpc.reflection.") {
            return None;
        }
        if service != self.name {
            return Some(CallClass::Standard);
        }
        let class = self.classes.iter().find(|(name, _)| *name == method).map(|(_, class)| *class);
        Some(class.unwrap_or(CallClass::Standard))
    }
}

struct Budgets {
    api: ServedApi,
    limits: CallBudgets,
    hot_path: Arc<Semaphore>,
    expensive: Arc<Semaphore>,
    standard: Arc<Semaphore>,
    /// Expensive calls in flight per client address (entries at zero are removed).
    per_client: Mutex<HashMap<String, usize>>,
    /// Vouches for the client address (`x-client-ip`) a forwarding service names.
    service_token: ServiceToken,
}

/// What an admitted call holds until its answer is ready.
struct Admission {
    _permit: OwnedSemaphorePermit,
    _share: Option<ClientShare>,
}

/// One expensive call of one client address; given back on drop.
struct ClientShare {
    budgets: Arc<Budgets>,
    client: String,
}

impl Drop for ClientShare {
    fn drop(&mut self) {
        let mut per_client = self.budgets.per_client.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = per_client.get_mut(&self.client) {
            *n -= 1;
            if *n == 0 {
                per_client.remove(&self.client);
            }
        }
    }
}

fn overloaded(message: String, limit: usize) -> ApiError {
    ApiError::new(ErrorReason::Overloaded, message).with_metadata("limit", limit.to_string())
}

impl Budgets {
    /// `Ok(None)`: a probe, not budgeted.
    fn admit<B>(self: &Arc<Self>, request: &http::Request<B>) -> Result<Option<Admission>, ApiError> {
        let Some(class) = self.api.class_of(request.uri().path()) else { return Ok(None) };
        let (semaphore, limit, what) = match class {
            CallClass::HotPath => (&self.hot_path, self.limits.hot_path, "hot-path"),
            CallClass::Expensive => (&self.expensive, self.limits.expensive, "expensive"),
            CallClass::Standard => (&self.standard, self.limits.standard, "standard"),
        };
        // The client's share first: a flooding address is refused without touching the budget.
        let share = match class {
            CallClass::Expensive => self.client_of(request).map(|client| self.take_share(client)).transpose()?,
            _ => None,
        };
        let permit = semaphore.clone().try_acquire_owned().map_err(|_| {
            overloaded(format!("{} calls at once is this server's limit for {what} calls; retry later", limit), limit)
        })?;
        Ok(Some(Admission { _permit: permit, _share: share }))
    }

    /// The address an expensive call counts against: the one a forwarding service names in
    /// `x-client-ip` when it presents the service token, else the connection's peer. A service's
    /// own calls without an address (the edge naming it in the request body) have no share:
    /// the budget and identity's per-address lockout still apply.
    fn client_of<B>(&self, request: &http::Request<B>) -> Option<String> {
        let headers = request.headers();
        if headers.contains_key(ServiceToken::HEADER) {
            let metadata = MetadataMap::from_headers(headers.clone());
            if self.service_token.verify(&metadata).is_some() {
                return headers.get("x-client-ip").and_then(|v| v.to_str().ok()).map(str::to_owned);
            }
        }
        let peer = request.extensions().get::<TcpConnectInfo>().and_then(TcpConnectInfo::remote_addr);
        Some(peer.map(|addr| addr.ip().to_string()).unwrap_or_default())
    }

    fn take_share(self: &Arc<Self>, client: String) -> Result<ClientShare, ApiError> {
        let share = self.limits.expensive_per_client;
        let mut per_client = self.per_client.lock().unwrap_or_else(|e| e.into_inner());
        let n = per_client.entry(client.clone()).or_insert(0);
        if *n >= share {
            return Err(overloaded(
                format!("{share} expensive calls at once is the limit for one client address; retry later"),
                share,
            ));
        }
        *n += 1;
        Ok(ClientShare { budgets: self.clone(), client })
    }
}

/// Applies the budgets of [`CallBudgets`] to the classes `api` declares.
#[derive(Clone)]
pub struct CallBudgetLayer {
    budgets: Arc<Budgets>,
}

impl CallBudgetLayer {
    pub fn new(api: ServedApi, limits: CallBudgets, service_token: ServiceToken) -> Self {
        let budgets = Budgets {
            api,
            hot_path: Arc::new(Semaphore::new(limits.hot_path)),
            expensive: Arc::new(Semaphore::new(limits.expensive)),
            standard: Arc::new(Semaphore::new(limits.standard)),
            limits,
            per_client: Mutex::default(),
            service_token,
        };
        Self { budgets: Arc::new(budgets) }
    }
}

impl<S> Layer<S> for CallBudgetLayer {
    type Service = CallBudget<S>;
    fn layer(&self, inner: S) -> Self::Service {
        CallBudget { inner, budgets: self.budgets.clone() }
    }
}

#[derive(Clone)]
pub struct CallBudget<S> {
    inner: S,
    budgets: Arc<Budgets>,
}

use super::BoxFuture;

impl<S, B, ResB> Service<http::Request<B>> for CallBudget<S>
where
    S: Service<http::Request<B>, Response = http::Response<ResB>>,
    S::Future: Send + 'static,
    B: http_body::Body + Send + 'static,
    ResB: Default + Send + 'static,
    S::Error: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = BoxFuture<Result<S::Response, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        match self.budgets.admit(&request) {
            Ok(admission) => {
                let response = self.inner.call(request);
                Box::pin(async move {
                    let result = response.await;
                    drop(admission);
                    result
                })
            }
            Err(refused) => {
                let body = request.into_body();
                Box::pin(async move {
                    let _ = tokio::time::timeout(DRAIN_WAIT, drain(body)).await;
                    Ok(tonic::Status::from(refused).into_http())
                })
            }
        }
    }
}

/// How long a refused call's body may take to arrive, and how much of it is read.
const DRAIN_WAIT: Duration = Duration::from_millis(200);
const DRAIN_LIMIT: usize = 64 * 1024;

/// Reads the rest of a refused call's body (a small unary message, as a rule) before the answer.
/// Answering with it unread makes h2 reset the stream, and after 1,024 such resets on one
/// connection h2 closes the whole connection (GOAWAY ENHANCE_YOUR_CALM), failing every other
/// call on it: a flood over one connection, the edge's, would take its neighbours' calls along.
async fn drain<B: http_body::Body>(body: B) {
    let mut body = std::pin::pin!(body);
    let mut read = 0;
    while let Some(Ok(frame)) = std::future::poll_fn(|cx| body.as_mut().poll_frame(cx)).await {
        read += frame.data_ref().map_or(0, Buf::remaining);
        if read > DRAIN_LIMIT {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const API: ServedApi =
        ServedApi { name: "tether.identity.v1.IdentityService", classes: &[("Login", CallClass::Expensive)] };

    #[test]
    fn methods_fall_in_their_declared_class() {
        assert_eq!(API.class_of("/tether.identity.v1.IdentityService/Login"), Some(CallClass::Expensive));
        assert_eq!(API.class_of("/tether.identity.v1.IdentityService/GetUser"), Some(CallClass::Standard));
        assert_eq!(API.class_of("/tether.tenancy.v1.TenancyService/Login"), Some(CallClass::Standard));
        assert_eq!(API.class_of("/grpc.health.v1.Health/Check"), None);
        assert_eq!(API.class_of("/grpc.reflection.v1.ServerReflection/ServerReflectionInfo"), None);
    }
}
