//! Who is calling, and may they: the two questions every user-facing RPC asks other services.
//!
//! [`Authenticator`] turns the call's `authorization: Bearer <token>` into a [`Principal`]
//! (identity-svc's `Authenticate`); [`Authorizer`] asks authz-svc whether that principal may do
//! something. Services hold them as trait objects, so tests can put doubles in their place; the
//! gRPC implementations here are what the binaries and the dev stack use.
//!
//! Rules:
//!
//! 1. A caller is a person with a valid bearer session token, else a service presenting the
//!    deployment's service token on its own account ([`caller`]); UNAUTHENTICATED otherwise.
//! 2. Calls a service makes on its own account (relays, Watch followers, `Authenticate`,
//!    bootstrap) carry `x-tether-service-token` (`TETHER_SERVICE_TOKEN`, one secret per deployment;
//!    the dev stack generates one) and the caller's name in `x-tether-service`. No service starts
//!    without the token.
//! 3. The internal RPCs (identity's `Authenticate` and `Watch`, tenancy's `Watch`, audit's
//!    `Ingest`) pass [`require_service`]: without the token UNAUTHENTICATED, a person's session
//!    (even forwarded by the edge) PERMISSION_DENIED.
//! 4. The edge forwards a person's call with both: the session decides who acts, the service token
//!    vouches for the address in `x-client-ip`. A person's own claim of an address is never
//!    believed; the connection's peer address is used instead ([`client_ip`]).

use std::sync::Arc;

use tether_proto::{
    authz::v1::{CheckRequest, CheckRoleGrantRequest, authz_service_client::AuthzServiceClient},
    common::v1::{ConsistencyToken, ErrorReason},
    identity::v1::{AuthenticateRequest, identity_service_client::IdentityServiceClient},
};
use tonic::metadata::MetadataMap;

use crate::{client::TracedChannel, error::ApiError};

/// The authenticated person behind a call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub user_id: String,
    pub is_msp_staff: bool,
    /// Empty for MSP staff.
    pub primary_tenant_id: String,
    pub session_id: String,
    pub display_name: String,
    pub email: String,
}

/// Who made a call: a person with a session, or another Tether service acting on its own
/// account (an outbox relay, a bootstrap step).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Actor {
    User(Principal),
    /// The calling service's name, as it sent it in `x-tether-service`.
    Service(String),
}

/// The actor plus what the call says about where it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    pub actor: Actor,
    /// From `x-client-ip` (set by the edge), else empty.
    pub client_ip: String,
}

impl Caller {
    /// The actor as the audit trail records it.
    pub fn audit_actor(&self) -> tether_proto::common::v1::Actor {
        use tether_proto::common::v1::{Actor as AuditActor, ActorKind};
        match &self.actor {
            Actor::User(p) => AuditActor {
                kind: ActorKind::User as i32,
                user_id: p.user_id.clone(),
                display_name: p.display_name.clone(),
                email: p.email.clone(),
                is_msp_staff: p.is_msp_staff,
                session_id: p.session_id.clone(),
                system_name: String::new(),
            },
            Actor::Service(name) => {
                AuditActor { kind: ActorKind::System as i32, system_name: name.clone(), ..Default::default() }
            }
        }
    }

    /// The person behind the call, if it is not a service.
    pub fn user(&self) -> Option<&Principal> {
        match &self.actor {
            Actor::User(p) => Some(p),
            Actor::Service(_) => None,
        }
    }
}

/// The secret Tether services present to each other (`TETHER_SERVICE_TOKEN`, the same value in
/// every service of a deployment), in `x-tether-service-token`, with the caller's name in
/// `x-tether-service`. Every service needs it, so [`ServiceToken::load`] refuses to start
/// without it; the empty `Default` (test doubles only) presents nothing and accepts nothing.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct ServiceToken(Option<String>);

impl std::fmt::Debug for ServiceToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_some() { "ServiceToken(set)" } else { "ServiceToken(unset)" })
    }
}

impl ServiceToken {
    pub const KEY: &'static str = "TETHER_SERVICE_TOKEN";
    pub(crate) const HEADER: &'static str = "x-tether-service-token";
    const NAME_HEADER: &'static str = "x-tether-service";

    /// Reads `TETHER_SERVICE_TOKEN`, which is required and at least 32 characters: without it a
    /// service could neither call the others on its own account nor answer their calls, and
    /// would only fail later with a misleading refusal.
    pub fn load(source: &crate::ConfigSource) -> Result<Self, crate::ConfigError> {
        const EXPECTED: &str = "the secret (at least 32 characters) every service of the deployment shares";
        match source.get(Self::KEY) {
            None | Some("") => {
                Err(crate::ConfigError::Missing { key: Self::KEY.to_owned(), expected: EXPECTED.to_owned() })
            }
            Some(t) if t.len() >= 32 => Ok(Self(Some(t.to_owned()))),
            Some(_) => Err(crate::config::invalid(Self::KEY, "***", EXPECTED)),
        }
    }

    pub fn new(token: impl Into<String>) -> Self {
        Self(Some(token.into()))
    }

    /// Marks an outgoing request as made by `service` itself.
    pub fn attach<T>(&self, service: &str, request: &mut tonic::Request<T>) {
        if let (Some(token), Ok(name)) = (&self.0, service.parse())
            && let Ok(value) = token.parse()
        {
            request.metadata_mut().insert(Self::HEADER, value);
            request.metadata_mut().insert(Self::NAME_HEADER, name);
        }
    }

    /// The calling service's name if the request carries this deployment's token.
    pub(crate) fn verify(&self, metadata: &MetadataMap) -> Option<String> {
        let expected = self.0.as_deref()?;
        let presented = metadata.get(Self::HEADER)?.to_str().ok()?;
        // Compare without an early exit, so timing does not reveal a matching prefix.
        let matches = presented.len() == expected.len()
            && presented.bytes().zip(expected.bytes()).fold(0u8, |acc, (a, b)| acc | (a ^ b)) == 0;
        matches.then(|| metadata.get(Self::NAME_HEADER).and_then(|v| v.to_str().ok()).unwrap_or("service").to_owned())
    }
}

#[tonic::async_trait]
pub trait Authenticator: Send + Sync + 'static {
    /// The principal a session token belongs to; UNAUTHENTICATED if it is not valid now.
    async fn authenticate(&self, token: &str) -> Result<Principal, ApiError>;
}

/// The answer to "may this actor give that role?".
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoleGrantDecision {
    pub allowed: bool,
    /// Why not, when refused (pass it straight back to the caller).
    pub denial_reason: ErrorReason,
    pub summary: String,
}

/// A role change to be judged by [`Authorizer::check_role_grant`].
#[derive(Debug, Clone, PartialEq, Default)]
pub struct RoleGrant {
    pub actor_user_id: String,
    pub target_user_id: String,
    pub target_is_msp_staff: bool,
    pub tenant_id: String,
    /// The role to give; empty when the role is being removed.
    pub role: String,
    /// The role held now; empty when there is none.
    pub previous_role: String,
    /// What authz-svc must have seen before it judges (see [`Authorizer::check`]).
    pub at_least_as_fresh: Option<ConsistencyToken>,
}

#[tonic::async_trait]
pub trait Authorizer: Send + Sync + 'static {
    /// May `user_id` do `permission` in `tenant_id`? Any doubt is `Ok(false)` or an error,
    /// never `Ok(true)`.
    ///
    /// `at_least_as_fresh`: the caller's consistency token (and what the asking service's own
    /// earlier steps produced), so authz-svc decides on state that includes those writes, e.g. a
    /// tenant created a moment ago; UNAVAILABLE if it cannot catch up in time.
    async fn check(
        &self,
        user_id: &str,
        permission: &str,
        tenant_id: &str,
        at_least_as_fresh: Option<&ConsistencyToken>,
    ) -> Result<bool, ApiError>;

    /// May the actor give (or change, or remove) this role? The delegation rules live in
    /// authz-svc; services ask instead of re-implementing them.
    async fn check_role_grant(&self, grant: &RoleGrant) -> Result<RoleGrantDecision, ApiError>;
}

/// Resolves the caller of a request: a person with a valid bearer session token, else a service
/// presenting this deployment's service token on its own account; UNAUTHENTICATED otherwise.
///
/// The edge forwards a person's call with both: the person's session (whose permissions apply)
/// and the service token, which vouches for the `x-client-ip` it names. So `client_ip` is that
/// header only when the service token is presented; otherwise it is empty here, and a service
/// that has the connection fills in the peer address (see [`client_ip`]).
pub async fn caller(
    metadata: &MetadataMap,
    authenticator: &dyn Authenticator,
    service_token: &ServiceToken,
) -> Result<Caller, ApiError> {
    let service = service_token.verify(metadata);
    let client_ip = match service {
        Some(_) => metadata.get("x-client-ip").and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned(),
        None => String::new(),
    };
    match (bearer(metadata), service) {
        (Some(token), _) => {
            let principal = authenticator.authenticate(token).await?;
            Ok(Caller { actor: Actor::User(principal), client_ip })
        }
        (None, Some(service)) => Ok(Caller { actor: Actor::Service(service), client_ip }),
        (None, None) => Err(ApiError::new(ErrorReason::Unauthenticated, "a session token is required")),
    }
}

/// Admits only another Tether service acting on its own account, by this deployment's service
/// token: the internal RPCs (identity's Authenticate, the Watch change streams, audit's Ingest).
/// Returns the calling service's name.
///
/// A call without the service token, or with a wrong one, is UNAUTHENTICATED; a person's call
/// (a valid session, even one the edge forwards with the service token) is PERMISSION_DENIED;
/// an invalid session is refused as [`Authenticator::authenticate`] refuses it.
pub async fn require_service(
    metadata: &MetadataMap,
    authenticator: &dyn Authenticator,
    service_token: &ServiceToken,
) -> Result<String, ApiError> {
    if let Some(session) = bearer(metadata) {
        // A person: a bad session is answered as everywhere else, a good one is still refused.
        authenticator.authenticate(session).await?;
        return Err(ApiError::new(
            ErrorReason::PermissionDenied,
            "this call is for Tether services on their own account, not for people",
        ));
    }
    service_token.verify(metadata).ok_or_else(|| {
        ApiError::new(
            ErrorReason::Unauthenticated,
            format!("this call is for Tether services: the service token ({}) is required", ServiceToken::HEADER),
        )
    })
}

/// The session token of `authorization: Bearer <token>`, if the call carries one.
fn bearer(metadata: &MetadataMap) -> Option<&str> {
    metadata
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")))
        .map(str::trim)
        .filter(|t| !t.is_empty())
}

/// Whether a call presents any credentials at all (a session token or a service token), right
/// or wrong.
pub fn has_credentials(metadata: &MetadataMap) -> bool {
    metadata.contains_key("authorization") || metadata.contains_key(ServiceToken::HEADER)
}

/// Where a call came from. An address the call claims (`claimed`, e.g. a request field, else
/// the `x-client-ip` header) counts only when a service presenting the service token makes the
/// call, as the edge does for the person behind it; anyone else is placed at the connection's
/// peer address, so rotating a claimed address cannot get around per-address limits.
pub fn client_ip<T>(request: &tonic::Request<T>, service_token: &ServiceToken, claimed: &str) -> String {
    let peer = || request.remote_addr().map(|a| a.ip().to_string()).unwrap_or_default();
    if service_token.verify(request.metadata()).is_none() {
        return peer();
    }
    if !claimed.is_empty() {
        return claimed.to_owned();
    }
    request.metadata().get("x-client-ip").and_then(|v| v.to_str().ok()).map(str::to_owned).unwrap_or_else(peer)
}

/// [`Authenticator`] backed by identity-svc.
#[derive(Clone)]
pub struct GrpcAuthenticator {
    client: IdentityServiceClient<TracedChannel>,
    service_token: ServiceToken,
    service: &'static str,
}

impl GrpcAuthenticator {
    /// `service` is the calling service's name; Authenticate is an internal RPC, so every call
    /// carries the service token.
    pub fn new(channel: TracedChannel, service_token: ServiceToken, service: &'static str) -> Arc<Self> {
        Arc::new(Self { client: IdentityServiceClient::new(channel), service_token, service })
    }
}

#[tonic::async_trait]
impl Authenticator for GrpcAuthenticator {
    async fn authenticate(&self, token: &str) -> Result<Principal, ApiError> {
        let mut request = tonic::Request::new(AuthenticateRequest { session_token: token.to_owned() });
        self.service_token.attach(self.service, &mut request);
        let reply = self
            .client
            .clone()
            .authenticate(request)
            .await
            .map_err(|s| ApiError::from_downstream("identity-svc", &s))?
            .into_inner();
        let p = reply
            .principal
            .ok_or_else(|| ApiError::new(ErrorReason::Unauthenticated, "the session token is not valid"))?;
        Ok(Principal {
            user_id: p.user_id,
            is_msp_staff: p.is_msp_staff,
            primary_tenant_id: p.primary_tenant_id,
            session_id: p.session_id,
            display_name: p.display_name,
            email: p.email,
        })
    }
}

/// [`Authorizer`] backed by authz-svc.
#[derive(Clone)]
pub struct GrpcAuthorizer {
    client: AuthzServiceClient<TracedChannel>,
    service_token: ServiceToken,
    service: &'static str,
}

impl GrpcAuthorizer {
    /// `service` is the calling service's name; authz-svc answers decision calls only from
    /// callers that identify themselves, so every call carries the service token.
    pub fn new(channel: TracedChannel, service_token: ServiceToken, service: &'static str) -> Arc<Self> {
        Arc::new(Self { client: AuthzServiceClient::new(channel), service_token, service })
    }

    fn request<T>(&self, message: T) -> tonic::Request<T> {
        let mut request = tonic::Request::new(message);
        self.service_token.attach(self.service, &mut request);
        request
    }
}

#[tonic::async_trait]
impl Authorizer for GrpcAuthorizer {
    async fn check(
        &self,
        user_id: &str,
        permission: &str,
        tenant_id: &str,
        at_least_as_fresh: Option<&ConsistencyToken>,
    ) -> Result<bool, ApiError> {
        let request = CheckRequest {
            subject_user_id: user_id.to_owned(),
            permission: permission.to_owned(),
            tenant_id: tenant_id.to_owned(),
            at_least_as_fresh: at_least_as_fresh.cloned(),
            ..Default::default()
        };
        let reply = self
            .client
            .clone()
            .check(self.request(request))
            .await
            .map_err(|s| ApiError::from_downstream("authz-svc", &s))?;
        Ok(reply.get_ref().allowed)
    }

    async fn check_role_grant(&self, grant: &RoleGrant) -> Result<RoleGrantDecision, ApiError> {
        let request = CheckRoleGrantRequest {
            actor_user_id: grant.actor_user_id.clone(),
            target_user_id: grant.target_user_id.clone(),
            target_is_msp_staff: grant.target_is_msp_staff,
            tenant_id: grant.tenant_id.clone(),
            role: grant.role.clone(),
            previous_role: grant.previous_role.clone(),
            at_least_as_fresh: grant.at_least_as_fresh.clone(),
        };
        let reply = self
            .client
            .clone()
            .check_role_grant(self.request(request))
            .await
            .map_err(|s| ApiError::from_downstream("authz-svc", &s))?
            .into_inner();
        Ok(RoleGrantDecision { allowed: reply.allowed, denial_reason: reply.denial_reason(), summary: reply.summary })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct NoSessions;

    #[tonic::async_trait]
    impl Authenticator for NoSessions {
        async fn authenticate(&self, _token: &str) -> Result<Principal, ApiError> {
            Err(ApiError::new(ErrorReason::Unauthenticated, "no"))
        }
    }

    #[tokio::test]
    async fn services_are_recognised_only_by_the_right_token() {
        let token = ServiceToken::new("s".repeat(40));
        let mut request = tonic::Request::new(());
        token.attach("identity", &mut request);
        let caller = caller(request.metadata(), &NoSessions, &token).await.unwrap();
        assert_eq!(caller.actor, Actor::Service("identity".into()));

        let other = ServiceToken::new("t".repeat(40));
        let refused = super::caller(request.metadata(), &NoSessions, &other).await.unwrap_err();
        assert_eq!(refused.code(), tonic::Code::Unauthenticated);
        let unset = super::caller(request.metadata(), &NoSessions, &ServiceToken::default()).await.unwrap_err();
        assert_eq!(unset.code(), tonic::Code::Unauthenticated);
    }

    struct OneSession;

    #[tonic::async_trait]
    impl Authenticator for OneSession {
        async fn authenticate(&self, token: &str) -> Result<Principal, ApiError> {
            if token == "good" {
                Ok(Principal {
                    user_id: "u1".into(),
                    is_msp_staff: false,
                    primary_tenant_id: String::new(),
                    session_id: String::new(),
                    display_name: String::new(),
                    email: String::new(),
                })
            } else {
                Err(ApiError::new(ErrorReason::Unauthenticated, "no"))
            }
        }
    }

    /// The edge forwards a person's call: the person's session decides who acts, the service
    /// token vouches for the address it names. Without the token the address is not believed.
    #[tokio::test]
    async fn a_forwarded_call_acts_as_the_person_from_the_address_the_edge_names() {
        let token = ServiceToken::new("s".repeat(40));
        let mut forwarded = tonic::Request::new(());
        token.attach("edge", &mut forwarded);
        forwarded.metadata_mut().insert("authorization", "Bearer good".parse().unwrap());
        forwarded.metadata_mut().insert("x-client-ip", "198.51.100.9".parse().unwrap());
        let who = caller(forwarded.metadata(), &OneSession, &token).await.unwrap();
        assert_eq!(who.user().map(|p| p.user_id.as_str()), Some("u1"));
        assert_eq!(who.client_ip, "198.51.100.9");

        let mut direct = tonic::Request::new(());
        direct.metadata_mut().insert("authorization", "Bearer good".parse().unwrap());
        direct.metadata_mut().insert("x-client-ip", "198.51.100.9".parse().unwrap());
        let who = caller(direct.metadata(), &OneSession, &token).await.unwrap();
        assert_eq!(who.user().map(|p| p.user_id.as_str()), Some("u1"));
        assert_eq!(who.client_ip, "", "a person's own claim is not believed");

        // A bad session is refused even when the edge vouches for the call.
        forwarded.metadata_mut().insert("authorization", "Bearer stale".parse().unwrap());
        assert!(caller(forwarded.metadata(), &OneSession, &token).await.is_err());
    }

    /// Internal RPCs: only the service token on its own admits; a person is refused even when
    /// the edge forwards their call.
    #[tokio::test]
    async fn internal_calls_admit_only_services() {
        let token = ServiceToken::new("s".repeat(40));
        let mut service = tonic::Request::new(());
        token.attach("authz", &mut service);
        assert_eq!(require_service(service.metadata(), &OneSession, &token).await.unwrap(), "authz");

        let anonymous = tonic::Request::new(());
        let err = require_service(anonymous.metadata(), &OneSession, &token).await.unwrap_err();
        assert_eq!((err.code(), err.reason), (tonic::Code::Unauthenticated, ErrorReason::Unauthenticated));
        let err =
            require_service(service.metadata(), &OneSession, &ServiceToken::new("t".repeat(40))).await.unwrap_err();
        assert_eq!((err.code(), err.reason), (tonic::Code::Unauthenticated, ErrorReason::Unauthenticated));

        let mut person = tonic::Request::new(());
        person.metadata_mut().insert("authorization", "Bearer good".parse().unwrap());
        let err = require_service(person.metadata(), &OneSession, &token).await.unwrap_err();
        assert_eq!((err.code(), err.reason), (tonic::Code::PermissionDenied, ErrorReason::PermissionDenied));
        token.attach("edge", &mut person);
        let err = require_service(person.metadata(), &OneSession, &token).await.unwrap_err();
        assert_eq!((err.code(), err.reason), (tonic::Code::PermissionDenied, ErrorReason::PermissionDenied));
        person.metadata_mut().insert("authorization", "Bearer stale".parse().unwrap());
        let err = require_service(person.metadata(), &OneSession, &token).await.unwrap_err();
        assert_eq!(err.code(), tonic::Code::Unauthenticated);
    }

    #[test]
    fn the_service_token_is_required() {
        let missing = ServiceToken::load(&crate::ConfigSource::default()).unwrap_err();
        assert!(missing.to_string().contains(ServiceToken::KEY), "{missing}");
        let short = ServiceToken::load(&crate::ConfigSource::from_pairs([(ServiceToken::KEY, "short")])).unwrap_err();
        assert!(short.to_string().contains(ServiceToken::KEY), "{short}");
        assert!(!short.to_string().contains("short\""), "the value is not shown: {short}");
        assert!(ServiceToken::load(&crate::ConfigSource::from_pairs([(ServiceToken::KEY, "s".repeat(32))])).is_ok());
    }

    #[tokio::test]
    async fn a_call_without_credentials_is_unauthenticated() {
        let request = tonic::Request::new(());
        let err = caller(request.metadata(), &NoSessions, &ServiceToken::default()).await.unwrap_err();
        assert_eq!(err.reason, ErrorReason::Unauthenticated);
    }
}
