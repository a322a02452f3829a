//! gRPC handlers: decode the request, call the domain, encode the reply.
//!
//! RPCs not implemented yet answer UNIMPLEMENTED (the generated default).
//!
//! Rules for who may do what:
//!
//! 1. Every user-facing RPC asks `Authorizer::check` for `users.view` / `users.manage` in the
//!    target's home tenant (primary tenant, or the admin tenancy for MSP staff), and
//!    `check_role_grant` for the role of a new user.
//! 2. Client users never see MSP staff (`USER_NOT_FOUND`), and only MSP staff create MSP staff.
//! 3. A client user names only their home tenant and its departments, and users at home there
//!    (`within_home`: the home itself needs no call; a department is matched on its chain from
//!    tenancy-svc's `GetTenant`, once per tenant per call, failing closed). Any other tenant is
//!    `TENANT_NOT_FOUND` (CreateUser, CreateInvitation, 2FA policies; `require_tenant_seen`), any
//!    other user `USER_NOT_FOUND` (`require_on`), another tenant's invitation
//!    `INVITATION_NOT_FOUND`, as for random ids; a refused `users.manage` on an invitation the
//!    caller may not view is `INVITATION_NOT_FOUND` too.
//! 4. This is stricter than tenancy's tenant visibility (a client user with a membership in another
//!    client still names only their home here): identity's objects are the people of a home tenant.
//! 5. Writes that ask authz-svc about state other services own (CreateUser, CreateInvitation) pass
//!    the caller's `at_least_as_fresh` token on, so a client can build on a tenant made a moment ago.

mod call_classes;
pub use call_classes::SERVED;
pub(crate) mod convert;
mod invitations;
mod login;
mod resets;
mod two_factor;
mod users;

use std::sync::Arc;

use tether_proto::{
    common::v1::{ConsistencyToken, ErrorReason},
    identity::v1::{self as pb, identity_service_server::IdentityService},
};
use tether_runtime::{
    ApiError,
    access::{Authenticator, Authorizer, Caller, Principal, ServiceToken},
    db::Database,
    events::{ChangeFeed, WatchOptions, watch_stream},
};
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};

use crate::{
    auth::{GenerationReads, Hasher, SessionCache},
    config::Config,
    events::relay::{AdminTenancy, Relay, Tenancy},
    store::accounts::AccountRow,
};

/// Everything the handlers share.
pub struct Identity {
    pub db: Database,
    /// A pool of its own for `Authenticate`, so its reads never queue behind connections that
    /// login writes hold while waiting for the write lock.
    pub auth_db: Database,
    pub feed: ChangeFeed,
    pub config: Config,
    pub hasher: Hasher,
    pub cache: SessionCache,
    /// `Authenticate`'s reads of the revocation generation (from `auth_db`).
    pub generation: Arc<GenerationReads>,
    pub authorizer: Arc<dyn Authorizer>,
    pub admin: Arc<AdminTenancy>,
    /// tenancy-svc, for what identity must ask it at request time (roles, owner, names).
    pub tenancy: Arc<dyn Tenancy>,
    pub relay: Relay,
    pub service_token: ServiceToken,
    pub mailer: Arc<dyn crate::mail::Mailer>,
    pub stopping: CancellationToken,
}

pub struct IdentityApi {
    inner: Arc<Identity>,
}

impl IdentityApi {
    pub fn new(inner: Arc<Identity>) -> Self {
        Self { inner }
    }
}

impl Identity {
    /// Who is calling: a Tether service (service token) or a person with a session (resolved
    /// here, by this service's own Authenticate).
    pub async fn caller<T>(&self, request: &Request<T>) -> Result<Caller, ApiError> {
        let mut caller = tether_runtime::access::caller(request.metadata(), self, &self.service_token).await?;
        caller.client_ip = tether_runtime::access::client_ip(request, &self.service_token, "");
        Ok(caller)
    }

    /// Internal RPCs (Authenticate, Watch): only another Tether service presenting the service
    /// token, never a person; returns the service's name.
    pub async fn require_service<T>(&self, request: &Request<T>) -> Result<String, ApiError> {
        tether_runtime::access::require_service(request.metadata(), self, &self.service_token).await
    }

    /// After a committed change that bumped the revocation generation (its commit already told
    /// change-stream followers): drops this replica's cached answers, then waits out the
    /// generation lease, so that once the caller has the answer no replica's next Authenticate
    /// can miss the change.
    pub async fn sessions_changed(&self) {
        self.cache.clear();
        self.generation.wait_out_lease().await;
    }

    async fn authenticate_principal(&self, token: &str) -> Result<Principal, ApiError> {
        let p = self.authenticate(token).await?.principal.unwrap_or_default();
        Ok(Principal {
            user_id: p.user_id,
            is_msp_staff: p.is_msp_staff,
            primary_tenant_id: p.primary_tenant_id,
            session_id: p.session_id,
            display_name: p.display_name,
            email: p.email,
        })
    }

    /// The tenant a user belongs to for permission checks: their primary tenant, or the admin
    /// tenancy for MSP staff.
    pub async fn home_tenant(&self, a: &AccountRow) -> Result<String, ApiError> {
        match (&a.primary_tenant_id, a.is_msp_staff) {
            (Some(t), false) => Ok(t.clone()),
            _ => self.admin.id().await,
        }
    }

    /// May the caller do `permission` to `target`? Services may; people need the permission in
    /// the target's home tenant. A client user (not MSP staff) may only target users at home in
    /// their own home tenant or one of its departments, never MSP staff: anyone else is, to
    /// them, a random id (USER_NOT_FOUND). A refused `users.view` is reported as
    /// USER_NOT_FOUND too, so existence does not leak.
    pub async fn require_on(&self, caller: &Caller, permission: &str, target: &AccountRow) -> Result<(), ApiError> {
        self.require_on_each(caller, permission, target, &mut Homes::new()).await
    }

    /// [`Self::require_on`] for one of many targets of a call: `homes` remembers, for the
    /// call, which homes are within the caller's.
    pub async fn require_on_each(
        &self,
        caller: &Caller,
        permission: &str,
        target: &AccountRow,
        homes: &mut Homes,
    ) -> Result<(), ApiError> {
        let Some(p) = caller.user() else { return Ok(()) };
        let not_found = || ApiError::new(ErrorReason::UserNotFound, "no such user");
        if !p.is_msp_staff
            && (target.is_msp_staff
                || !self.within_home_each(p, target.primary_tenant_id.as_deref().unwrap_or(""), homes).await?)
        {
            return Err(not_found());
        }
        let tenant = self.home_tenant(target).await?;
        if self.authorizer.check(&p.user_id, permission, &tenant, None).await? {
            return Ok(());
        }
        if permission == PERM_VIEW || !self.authorizer.check(&p.user_id, PERM_VIEW, &tenant, None).await? {
            return Err(not_found());
        }
        Err(ApiError::new(ErrorReason::PermissionDenied, format!("{permission} is required")))
    }

    /// A question to tenancy-svc that a request cannot be answered without: bounded by
    /// `TETHER_IDENTITY_TENANCY_TIMEOUT_MS`, and any failure is UNAVAILABLE (reason
    /// UNAVAILABLE), so the caller fails closed.
    pub async fn ask_tenancy<T>(
        &self,
        what: &str,
        call: impl std::future::Future<Output = Result<T, ApiError>>,
    ) -> Result<T, ApiError> {
        let failed = |detail: String| {
            tracing::warn!(what, %detail, "tenancy-svc could not answer; failing closed");
            ApiError::new(ErrorReason::Unavailable, format!("tenancy-svc could not tell {what}; try again"))
                .with_metadata("service", "tenancy-svc")
        };
        match tokio::time::timeout(self.config.tenancy_timeout, call).await {
            Ok(Ok(answer)) => Ok(answer),
            Ok(Err(e)) => Err(failed(e.message)),
            Err(_) => Err(failed("timed out".to_owned())),
        }
    }

    /// Whether `tenant` is the home tenant of `p` (a client user) or one of its departments:
    /// the only tenants a client user may name here, and the only homes of users they may
    /// target. The one rule for client callers in identity.
    pub async fn within_home(&self, p: &Principal, tenant: &str) -> Result<bool, ApiError> {
        self.within_home_each(p, tenant, &mut Homes::new()).await
    }

    async fn within_home_each(&self, p: &Principal, tenant: &str, homes: &mut Homes) -> Result<bool, ApiError> {
        if p.primary_tenant_id.is_empty() || tenant.is_empty() {
            return Ok(false);
        }
        if tenant == p.primary_tenant_id {
            return Ok(true);
        }
        if let Some(within) = homes.get(tenant) {
            return Ok(*within);
        }
        let chain = self.ask_tenancy("where the tenant is", self.tenancy.tenant_chain(tenant)).await?;
        let within = chain.is_some_and(|c| c.contains(&p.primary_tenant_id));
        homes.insert(tenant.to_owned(), within);
        Ok(within)
    }

    /// A client caller naming a tenant outside their home (see [`Self::within_home`]) hears
    /// exactly what an unknown tenant gets: TENANT_NOT_FOUND (NOT_FOUND). Services and MSP
    /// staff pass.
    pub async fn require_tenant_seen(&self, caller: &Caller, tenant_id: &str) -> Result<(), ApiError> {
        match caller.user() {
            Some(p) if !p.is_msp_staff && !self.within_home(p, tenant_id).await? => {
                Err(ApiError::new(ErrorReason::TenantNotFound, "no such tenant"))
            }
            _ => Ok(()),
        }
    }

    /// May the caller do `permission` in `tenant_id`? A tenant a client caller may not name is
    /// TENANT_NOT_FOUND ([`Self::require_tenant_seen`]), before any permission is looked at.
    pub async fn require_in(&self, caller: &Caller, permission: &str, tenant_id: &str) -> Result<(), ApiError> {
        self.require_in_at(caller, permission, tenant_id, None).await
    }

    /// [`Self::require_in`], decided by authz-svc on state at least as fresh as the caller's
    /// consistency token (a tenant created a moment ago is known).
    pub async fn require_in_at(
        &self,
        caller: &Caller,
        permission: &str,
        tenant_id: &str,
        at_least_as_fresh: Option<&ConsistencyToken>,
    ) -> Result<(), ApiError> {
        self.require_tenant_seen(caller, tenant_id).await?;
        self.require_permission_in(caller, permission, tenant_id, at_least_as_fresh).await
    }

    /// The permission alone, for a scope that is no tenant (the platform).
    pub async fn require_permission_in(
        &self,
        caller: &Caller,
        permission: &str,
        tenant_id: &str,
        at_least_as_fresh: Option<&ConsistencyToken>,
    ) -> Result<(), ApiError> {
        let Some(p) = caller.user() else { return Ok(()) };
        if self.authorizer.check(&p.user_id, permission, tenant_id, at_least_as_fresh).await? {
            Ok(())
        } else {
            Err(ApiError::new(ErrorReason::PermissionDenied, format!("{permission} is required")))
        }
    }
}

/// Per call: whether each tenant seen so far is within the caller's home (asked once each).
pub type Homes = std::collections::HashMap<String, bool>;

pub const PERM_VIEW: &str = "users.view";
pub const PERM_MANAGE: &str = "users.manage";
/// Login step kinds (stored with each step token): a second factor is due, or 2FA enrolment.
pub const STEP_SECOND_FACTOR: &str = "second_factor";
pub const STEP_ENROLLMENT: &str = "enrollment";

/// For `access::caller`: recognises services only (people are authenticated locally).
#[tonic::async_trait]
impl Authenticator for Identity {
    async fn authenticate(&self, token: &str) -> Result<Principal, ApiError> {
        self.authenticate_principal(token).await
    }
}

type WatchStream = std::pin::Pin<Box<dyn futures_util::Stream<Item = Result<pb::WatchResponse, Status>> + Send>>;

type Reply<T> = Result<Response<T>, Status>;

fn reply<T>(r: Result<T, ApiError>) -> Reply<T> {
    r.map(Response::new).map_err(Status::from)
}

#[tonic::async_trait]
impl IdentityService for IdentityApi {
    async fn create_user(&self, request: Request<pb::CreateUserRequest>) -> Reply<pb::CreateUserResponse> {
        reply(self.inner.create_user(request).await)
    }
    async fn get_user(&self, request: Request<pb::GetUserRequest>) -> Reply<pb::GetUserResponse> {
        reply(self.inner.get_user(request).await)
    }
    async fn batch_get_users(&self, request: Request<pb::BatchGetUsersRequest>) -> Reply<pb::BatchGetUsersResponse> {
        reply(self.inner.batch_get_users(request).await)
    }
    async fn list_users(&self, request: Request<pb::ListUsersRequest>) -> Reply<pb::ListUsersResponse> {
        reply(self.inner.list_users(request).await)
    }
    async fn update_user(&self, request: Request<pb::UpdateUserRequest>) -> Reply<pb::UpdateUserResponse> {
        reply(self.inner.update_user(request).await)
    }
    async fn deactivate_user(&self, request: Request<pb::DeactivateUserRequest>) -> Reply<pb::DeactivateUserResponse> {
        reply(self.inner.deactivate_user(request).await)
    }
    async fn reactivate_user(&self, request: Request<pb::ReactivateUserRequest>) -> Reply<pb::ReactivateUserResponse> {
        reply(self.inner.reactivate_user(request).await)
    }
    async fn delete_user(&self, request: Request<pb::DeleteUserRequest>) -> Reply<pb::DeleteUserResponse> {
        reply(self.inner.delete_user(request).await)
    }
    async fn change_password(&self, request: Request<pb::ChangePasswordRequest>) -> Reply<pb::ChangePasswordResponse> {
        reply(self.inner.change_password(request).await)
    }
    async fn set_temporary_password(
        &self,
        request: Request<pb::SetTemporaryPasswordRequest>,
    ) -> Reply<pb::SetTemporaryPasswordResponse> {
        reply(self.inner.set_temporary_password(request).await)
    }
    async fn send_password_reset(
        &self,
        request: Request<pb::SendPasswordResetRequest>,
    ) -> Reply<pb::SendPasswordResetResponse> {
        reply(self.inner.send_password_reset(request).await)
    }
    async fn request_password_reset(
        &self,
        request: Request<pb::RequestPasswordResetRequest>,
    ) -> Reply<pb::RequestPasswordResetResponse> {
        reply(self.inner.request_password_reset(request).await)
    }
    async fn reset_password(&self, request: Request<pb::ResetPasswordRequest>) -> Reply<pb::ResetPasswordResponse> {
        reply(self.inner.reset_password(request).await)
    }
    async fn get_password_policy(
        &self,
        _request: Request<pb::GetPasswordPolicyRequest>,
    ) -> Reply<pb::GetPasswordPolicyResponse> {
        reply(Ok(pb::GetPasswordPolicyResponse { policy: Some(convert::policy(&self.inner.config.password_policy)) }))
    }
    async fn create_invitation(
        &self,
        request: Request<pb::CreateInvitationRequest>,
    ) -> Reply<pb::CreateInvitationResponse> {
        reply(self.inner.create_invitation(request).await)
    }
    async fn list_invitations(
        &self,
        request: Request<pb::ListInvitationsRequest>,
    ) -> Reply<pb::ListInvitationsResponse> {
        reply(self.inner.list_invitations(request).await)
    }
    async fn resend_invitation(
        &self,
        request: Request<pb::ResendInvitationRequest>,
    ) -> Reply<pb::ResendInvitationResponse> {
        reply(self.inner.resend_invitation(request).await)
    }
    async fn revoke_invitation(
        &self,
        request: Request<pb::RevokeInvitationRequest>,
    ) -> Reply<pb::RevokeInvitationResponse> {
        reply(self.inner.revoke_invitation(request).await)
    }
    async fn get_invitation(&self, request: Request<pb::GetInvitationRequest>) -> Reply<pb::GetInvitationResponse> {
        reply(self.inner.get_invitation(request).await)
    }
    async fn accept_invitation(
        &self,
        request: Request<pb::AcceptInvitationRequest>,
    ) -> Reply<pb::AcceptInvitationResponse> {
        reply(self.inner.accept_invitation(request).await)
    }
    async fn login(&self, request: Request<pb::LoginRequest>) -> Reply<pb::LoginResponse> {
        reply(self.inner.login(request).await)
    }
    async fn complete_password_change(
        &self,
        request: Request<pb::CompletePasswordChangeRequest>,
    ) -> Reply<pb::CompletePasswordChangeResponse> {
        reply(self.inner.complete_password_change(request).await)
    }
    async fn complete_second_factor(
        &self,
        request: Request<pb::CompleteSecondFactorRequest>,
    ) -> Reply<pb::CompleteSecondFactorResponse> {
        reply(self.inner.complete_second_factor(request).await)
    }
    async fn begin_totp_enrollment(
        &self,
        request: Request<pb::BeginTotpEnrollmentRequest>,
    ) -> Reply<pb::BeginTotpEnrollmentResponse> {
        reply(self.inner.begin_totp_enrollment(request).await)
    }
    async fn confirm_totp_enrollment(
        &self,
        request: Request<pb::ConfirmTotpEnrollmentRequest>,
    ) -> Reply<pb::ConfirmTotpEnrollmentResponse> {
        reply(self.inner.confirm_totp_enrollment(request).await)
    }
    async fn disable_totp(&self, request: Request<pb::DisableTotpRequest>) -> Reply<pb::DisableTotpResponse> {
        reply(self.inner.disable_totp(request).await)
    }
    async fn reset_totp(&self, request: Request<pb::ResetTotpRequest>) -> Reply<pb::ResetTotpResponse> {
        reply(self.inner.reset_totp(request).await)
    }
    async fn regenerate_recovery_codes(
        &self,
        request: Request<pb::RegenerateRecoveryCodesRequest>,
    ) -> Reply<pb::RegenerateRecoveryCodesResponse> {
        reply(self.inner.regenerate_recovery_codes(request).await)
    }
    async fn set_two_factor_policy(
        &self,
        request: Request<pb::SetTwoFactorPolicyRequest>,
    ) -> Reply<pb::SetTwoFactorPolicyResponse> {
        reply(self.inner.set_two_factor_policy(request).await)
    }
    async fn get_two_factor_policy(
        &self,
        request: Request<pb::GetTwoFactorPolicyRequest>,
    ) -> Reply<pb::GetTwoFactorPolicyResponse> {
        reply(self.inner.get_two_factor_policy(request).await)
    }
    async fn logout(&self, request: Request<pb::LogoutRequest>) -> Reply<pb::LogoutResponse> {
        reply(self.inner.logout(request).await)
    }
    async fn authenticate(&self, request: Request<pb::AuthenticateRequest>) -> Reply<pb::AuthenticateResponse> {
        // Internal: anyone else could resolve (and keep alive) a token they got hold of.
        self.inner.require_service(&request).await?;
        reply(self.inner.authenticate(&request.get_ref().session_token).await)
    }
    async fn list_sessions(&self, request: Request<pb::ListSessionsRequest>) -> Reply<pb::ListSessionsResponse> {
        reply(self.inner.list_sessions(request).await)
    }
    async fn revoke_session(&self, request: Request<pb::RevokeSessionRequest>) -> Reply<pb::RevokeSessionResponse> {
        reply(self.inner.revoke_session(request).await)
    }
    async fn revoke_user_sessions(
        &self,
        request: Request<pb::RevokeUserSessionsRequest>,
    ) -> Reply<pb::RevokeUserSessionsResponse> {
        reply(self.inner.revoke_user_sessions(request).await)
    }
    async fn list_lockouts(&self, request: Request<pb::ListLockoutsRequest>) -> Reply<pb::ListLockoutsResponse> {
        reply(self.inner.list_lockouts(request).await)
    }
    async fn clear_lockout(&self, request: Request<pb::ClearLockoutRequest>) -> Reply<pb::ClearLockoutResponse> {
        reply(self.inner.clear_lockout(request).await)
    }

    async fn watch(&self, request: Request<pb::WatchRequest>) -> Reply<WatchStream> {
        self.inner.require_service(&request).await?;
        let db = self.inner.db.clone();
        let stream = watch_stream::<pb::WatchResponse, _, _>(
            self.inner.feed.clone(),
            request.get_ref().from_revision,
            move || users::snapshot(db),
            self.inner.stopping.clone(),
            WatchOptions::default(),
        )
        .await?;
        Ok(Response::new(stream))
    }
}
