//! TOTP second factor: enrollment, login challenge, recovery codes, disable, admin reset, and
//! the policies that require it.
//!
//! Rules:
//!
//! 1. TOTP per RFC 6238 (HMAC-SHA1, ±1 step, a code accepted once); 10 recovery codes stored
//!    hashed; the secret sealed at rest (`domain::totp_keys`).
//! 2. Policies per platform (`require_all`, `require_msp_staff`, `required_roles`) and per tenant
//!    (`require_all` for every direct member of the tenant or one of its departments, home or not;
//!    shadow and assigned memberships do not count, and the admin tenancy's covers its staff, not
//!    the clients' users; `required_roles`), with a grace period.
//! 3. A policy records when it comes into force; an edit of a policy in force that still demands
//!    at least as much keeps it in force (anything it adds applies at once), so re-saving never
//!    reopens a grace period.
//! 4. Roles live in tenancy-svc, so when a role or tenant policy is in force login asks it
//!    (`ListUserTenants` as a service call, every membership kind, plus `GetTenant` for ancestors
//!    not in the list) and matches (`domain::two_factor`): a platform policy covers the role in any
//!    tenant, a tenant's covers it in that tenant and its departments. A match gives the enrolment
//!    step, not a session.
//! 5. If tenancy cannot answer within `TETHER_IDENTITY_TENANCY_TIMEOUT_MS`, login fails closed:
//!    UNAVAILABLE / `UNAVAILABLE`, no session, MSP staff included. Without tenant or role policies
//!    in force, login never calls tenancy.

use tether_proto::{common::v1::ErrorReason, identity::v1 as pb};
use tether_runtime::{ApiError, access::Caller, db::now_micros};
use tonic::Request;

use super::{
    Identity, PERM_MANAGE, PERM_VIEW, STEP_ENROLLMENT, STEP_SECOND_FACTOR,
    convert::{self, session_revoked, upserted},
};
use crate::{
    domain::{
        account::parse_id,
        login::LoginFailure,
        tokens, totp,
        totp_keys::KeyError,
        two_factor::{HeldRole, RoleRequirement},
    },
    events::{Write, audit},
    store::{
        accounts::{self, AccountRow},
        lockouts, sessions,
        two_factor::{self as store, Policy},
    },
};

/// An unconfirmed enrollment lapses after this long.
const ENROLLMENT_TTL_MICROS: i64 = 10 * 60 * 1_000_000;
const ISSUER: &str = "Tether";

fn recovery_hash(code: &str) -> String {
    tokens::digest(&totp::normalize_recovery(code))
}

fn unix_seconds() -> i64 {
    now_micros() / 1_000_000
}

/// A stored secret that cannot be decrypted fails closed: no code is accepted, and the caller
/// learns that this is the server's configuration, not a wrong code (recovery codes, hashed
/// separately, still work; an administrator can also reset the user's 2FA).
fn secret_unreadable(account_id: &str, e: KeyError) -> ApiError {
    tracing::error!(user_id = %account_id, error = %e, "cannot decrypt a TOTP secret; check TETHER_IDENTITY_TOTP_KEYS");
    ApiError::new(
        ErrorReason::ConfigInvalid,
        "the authenticator code cannot be checked: its secret does not decrypt with the configured keys; use a \
         recovery code or ask an administrator",
    )
}

impl Identity {
    /// True if a policy in force requires 2FA of this account (platform-wide, that of a tenant
    /// where it holds a direct membership or of an ancestor of one, or one naming a role it
    /// holds), once the policy's grace period has passed. Memberships and roles live in
    /// tenancy-svc: asked only when a tenant or role policy is in force, and if tenancy cannot
    /// answer this fails closed (UNAVAILABLE), so a login never yields a session that such a
    /// policy would have refused.
    pub(super) async fn requires_two_factor(&self, a: &AccountRow) -> Result<bool, ApiError> {
        let now = now_micros();
        let in_force = |p: &Policy| p.in_force(now);
        if let Some(p) = store::policy(self.db.pool(), "").await?
            && in_force(&p)
            && (p.require_all || (p.require_msp_staff && a.is_msp_staff))
        {
            return Ok(true);
        }
        // Tenant policies requiring everyone: the home tenant's applies at once (MSP staff's home
        // is the admin tenancy); any other tenant's covers its direct members and those of its
        // departments, which only tenancy knows.
        let tenant_policies: Vec<Policy> =
            store::tenant_wide_policies(self.db.pool()).await?.into_iter().filter(in_force).collect();
        // Fails closed: without the admin tenancy's id its policy cannot be ruled out.
        let admin = if tenant_policies.is_empty() { None } else { Some(self.admin.id().await?) };
        let home = match (&a.primary_tenant_id, a.is_msp_staff) {
            (Some(t), false) => Some(t.clone()),
            _ => admin.clone(),
        };
        if home.is_some_and(|h| tenant_policies.iter().any(|p| p.scope == h)) {
            return Ok(true);
        }
        let role_policies: Vec<Policy> =
            store::role_policies(self.db.pool()).await?.into_iter().filter(in_force).collect();
        if role_policies.is_empty() && tenant_policies.is_empty() {
            return Ok(false);
        }
        let held = self.ask_tenancy("the user's roles", self.tenancy.user_roles(&a.id)).await?;
        // Shadow and assigned memberships (MSP staff everywhere) are not direct: only the admin
        // tenancy's policy covers staff. Clients hang under the admin tenancy but are not its
        // departments, so its policy does not reach their users.
        let covers = |p: &Policy, h: &HeldRole| {
            h.tenant_id == p.scope || (admin.as_ref() != Some(&p.scope) && h.ancestors.contains(&p.scope))
        };
        if held.iter().filter(|h| h.direct).any(|h| tenant_policies.iter().any(|p| covers(p, h))) {
            return Ok(true);
        }
        Ok(role_policies
            .iter()
            .any(|p| RoleRequirement { scope: &p.scope, roles: &p.required_roles }.applies_to(&held)))
    }

    /// Checks a TOTP or recovery code of an account with 2FA on, using it up if right.
    pub(super) async fn verify_second_factor(
        &self,
        account_id: &str,
        totp_code: Option<&str>,
        recovery_code: Option<&str>,
    ) -> Result<bool, ApiError> {
        // Codes are a few characters; anything long is wrong without hashing it.
        if totp_code.or(recovery_code).is_some_and(|c| c.len() > 64) {
            return Ok(false);
        }
        if let Some(code) = totp_code {
            let Some(row) = store::get(self.db.pool(), account_id).await? else {
                return Ok(false);
            };
            if !row.confirmed {
                return Ok(false);
            }
            let secret = row.open(&self.config.totp_keys, account_id).map_err(|e| secret_unreadable(account_id, e))?;
            let Some(step) = totp::verify(&secret, code, unix_seconds(), row.last_used_step) else {
                return Ok(false);
            };
            // Replay bookkeeping: no streamed state, nothing to audit (the caller audits the outcome).
            let mut tx = self.db.begin_write().await?;
            let fresh = store::use_step(&mut tx, account_id, step).await?;
            tx.commit().await?;
            return Ok(fresh);
        }
        if let Some(code) = recovery_code {
            // As above: the code is used up; the caller audits the outcome.
            let mut tx = self.db.begin_write().await?;
            let used = store::use_recovery(&mut tx, account_id, &recovery_hash(code)).await?;
            tx.commit().await?;
            return Ok(used);
        }
        Ok(false)
    }

    pub async fn complete_second_factor(
        &self,
        request: Request<pb::CompleteSecondFactorRequest>,
    ) -> Result<pb::CompleteSecondFactorResponse, ApiError> {
        let r = request.into_inner();
        let step = self.open_step(&r.challenge_token, STEP_SECOND_FACTOR).await?;
        let (totp_code, recovery) = match &r.code {
            Some(pb::complete_second_factor_request::Code::TotpCode(c)) => (Some(c.as_str()), None),
            Some(pb::complete_second_factor_request::Code::RecoveryCode(c)) => (None, Some(c.as_str())),
            None => (None, None),
        };
        // Codes are short: the same lockouts as passwords apply, or a challenge token would
        // allow unlimited guesses.
        let gate = self.credential_lockout(&step.account_id, &step.client_ip).await?;
        let failure = match gate.locked {
            Some(locked) => Some(LoginFailure::from(locked)),
            None if !self.verify_second_factor(&step.account_id, totp_code, recovery).await? => {
                self.count_failure(&step.account_id, &step.client_ip).await?;
                Some(LoginFailure::SecondFactorInvalid)
            }
            None => None,
        };
        if let Some(reason) = failure {
            let a = self.load(&step.account_id).await?;
            self.audit_login_failure(a.email.as_deref().unwrap_or_default(), &step.client_ip, Some(&a), reason).await?;
            return Err(ApiError::new(ErrorReason::LoginFailed, "the code is not valid"));
        }
        lockouts::clear(self.db.pool(), lockouts::Kind::Account, &step.account_id).await?;
        self.consume_step(&r.challenge_token).await?;
        let a = self.load(&step.account_id).await?;
        let (outcome, revision) = self.next_step(&a, &step.client_ip, &step.user_agent, true).await?;
        Ok(pb::CompleteSecondFactorResponse { outcome: Some(outcome), consistency_token: convert::token(revision) })
    }

    /// The account to enroll: the enrollment token's, or the caller's.
    async fn enrollee<T>(
        &self,
        request: &Request<T>,
        token: &str,
    ) -> Result<(AccountRow, Option<sessions::LoginStep>), ApiError> {
        if token.trim().is_empty() {
            let caller = self.caller(request).await?;
            let p =
                caller.user().ok_or_else(|| ApiError::new(ErrorReason::Unauthenticated, "a session is required"))?;
            return Ok((self.load(&p.user_id).await?, None));
        }
        let step = self.open_step(token, STEP_ENROLLMENT).await?;
        Ok((self.load(&step.account_id).await?, Some(step)))
    }

    pub async fn begin_totp_enrollment(
        &self,
        request: Request<pb::BeginTotpEnrollmentRequest>,
    ) -> Result<pb::BeginTotpEnrollmentResponse, ApiError> {
        let (a, _) = self.enrollee(&request, &request.get_ref().enrollment_token).await?;
        if a.totp_enabled {
            return Err(ApiError::new(ErrorReason::TotpAlreadyEnabled, "2FA is already on"));
        }
        let secret = totp::new_secret().map_err(ApiError::internal)?;
        let sealed = self.config.totp_keys.seal(&a.id, &secret).map_err(ApiError::internal)?;
        let expires_at = now_micros() + ENROLLMENT_TTL_MICROS;
        store::begin(self.db.pool(), &a.id, &sealed, expires_at).await?;
        // An account without an email is labelled by its id (the URI needs an account name).
        let label = a.email.clone().unwrap_or_else(|| a.id.clone());
        let otpauth_uri = totp::otpauth_uri(ISSUER, &label, &secret).map_err(ApiError::internal)?;
        let qr_code_svg = totp::qr_svg(&otpauth_uri).map_err(ApiError::internal)?;
        Ok(pb::BeginTotpEnrollmentResponse { otpauth_uri, qr_code_svg, secret, expires_at: convert::ts(expires_at) })
    }

    pub async fn confirm_totp_enrollment(
        &self,
        request: Request<pb::ConfirmTotpEnrollmentRequest>,
    ) -> Result<pb::ConfirmTotpEnrollmentResponse, ApiError> {
        let (a, step) = self.enrollee(&request, &request.get_ref().enrollment_token).await?;
        let code = request.get_ref().totp_code.clone();
        let row = store::get(self.db.pool(), &a.id)
            .await?
            .filter(|t| !t.confirmed && t.expires_at > now_micros())
            .ok_or_else(|| ApiError::new(ErrorReason::TotpEnrollmentNotStarted, "start enrollment first"))?;
        let secret = row.open(&self.config.totp_keys, &a.id).map_err(|e| secret_unreadable(&a.id, e))?;
        let Some(used_step) = totp::verify(&secret, &code, unix_seconds(), None) else {
            return Err(ApiError::new(ErrorReason::InvalidTotpCode, "the code is not valid")
                .with_metadata("field", "totp_code"));
        };
        let codes = totp::recovery_codes().map_err(ApiError::internal)?;
        let hashes: Vec<String> = codes.iter().map(|c| recovery_hash(c)).collect();
        let mut write = Write::begin(&self.db).await?;
        store::confirm(write.tx(), &a.id, &hashes).await?;
        store::use_step(write.tx(), &a.id, used_step).await?;
        // Principals carry the 2FA state.
        sessions::bump_generation(write.tx()).await?;
        let after = accounts::get(write.conn(), &a.id).await?.ok_or_else(|| ApiError::internal("account vanished"))?;
        write.change(upserted(&after));
        let ip = step.as_ref().map(|s| s.client_ip.clone()).unwrap_or_default();
        let mut event = audit(
            crate::events::anonymous(after.email.as_deref().unwrap_or_default()),
            &ip,
            "user.2fa_enable",
            "user",
            &a.id,
        )
        .build();
        event.actor = Some(tether_proto::common::v1::Actor {
            kind: tether_proto::common::v1::ActorKind::User as i32,
            user_id: a.id.clone(),
            display_name: a.display_name.clone(),
            email: a.email.clone().unwrap_or_default(),
            is_msp_staff: a.is_msp_staff,
            ..Default::default()
        });
        write.audit(event);
        let revision = write.commit().await?;
        let mut outcome = None;
        let mut last = revision;
        if let Some(step) = step {
            // 2FA is on and the codes exist only in this answer: a failure of the login's next
            // step must not lose them (the user logs in again instead).
            let next = async {
                self.consume_step(&request.get_ref().enrollment_token).await?;
                self.next_step(&after, &step.client_ip, &step.user_agent, true).await
            };
            match next.await {
                Ok((o, rev)) => {
                    outcome = Some(o);
                    last = rev;
                }
                Err(e) => tracing::warn!(user_id = %after.id, error = %e, "2FA enrolled; the login's next step failed"),
            }
        }
        Ok(pb::ConfirmTotpEnrollmentResponse {
            recovery_codes: codes,
            outcome,
            consistency_token: convert::token(last),
        })
    }

    async fn own_account(&self, caller: &Caller) -> Result<AccountRow, ApiError> {
        let p = caller.user().ok_or_else(|| ApiError::new(ErrorReason::Unauthenticated, "a session is required"))?;
        self.load(&p.user_id).await
    }

    pub async fn disable_totp(
        &self,
        request: Request<pb::DisableTotpRequest>,
    ) -> Result<pb::DisableTotpResponse, ApiError> {
        let caller = self.caller(&request).await?;
        let a = self.own_account(&caller).await?;
        if !a.totp_enabled {
            return Err(ApiError::new(ErrorReason::TotpNotEnabled, "2FA is not on"));
        }
        if self.requires_two_factor(&a).await? {
            return Err(ApiError::new(ErrorReason::SecondFactorEnrollmentRequired, "a policy requires 2FA for you"));
        }
        let ok = match &request.get_ref().code {
            Some(pb::disable_totp_request::Code::TotpCode(c)) => {
                if !self.verify_second_factor(&a.id, Some(c), None).await? {
                    return Err(ApiError::new(ErrorReason::InvalidTotpCode, "the code is not valid"));
                }
                true
            }
            Some(pb::disable_totp_request::Code::RecoveryCode(c)) => {
                if !self.verify_second_factor(&a.id, None, Some(c)).await? {
                    return Err(ApiError::new(ErrorReason::InvalidRecoveryCode, "the code is not valid"));
                }
                true
            }
            None => false,
        };
        if !ok {
            return Err(ApiError::new(ErrorReason::FieldRequired, "a TOTP or recovery code is required"));
        }
        let revision = self.remove_totp(&caller, &a, "user.2fa_disable", false).await?;
        Ok(pb::DisableTotpResponse { consistency_token: convert::token(revision) })
    }

    async fn remove_totp(
        &self,
        caller: &Caller,
        a: &AccountRow,
        action: &str,
        end_sessions: bool,
    ) -> Result<u64, ApiError> {
        let mut write = Write::begin(&self.db).await?;
        store::remove(write.tx(), &a.id).await?;
        let ended = if end_sessions {
            sessions::revoke_all(write.tx(), &a.id, None).await?
        } else {
            sessions::bump_generation(write.tx()).await?;
            Vec::new()
        };
        let after = accounts::get(write.conn(), &a.id).await?.ok_or_else(|| ApiError::internal("account vanished"))?;
        write.change(upserted(&after));
        write.changes(ended.iter().map(|s| session_revoked(s, &a.id)));
        write.audit(
            audit(caller.audit_actor(), &caller.client_ip, action, "user", &a.id)
                .metadata(serde_json::json!({ "sessions_ended": ended.len() }))
                .build(),
        );
        let revision = write.commit().await?;
        self.sessions_changed().await;
        Ok(revision)
    }

    pub async fn reset_totp(&self, request: Request<pb::ResetTotpRequest>) -> Result<pb::ResetTotpResponse, ApiError> {
        let caller = self.caller(&request).await?;
        let id = parse_id("user_id", &request.get_ref().user_id).map_err(convert::input)?.to_string();
        let a = self.load(&id).await?;
        self.require_on(&caller, PERM_MANAGE, &a).await?;
        let revision = self.remove_totp(&caller, &a, "user.2fa_reset", true).await?;
        let after = self.load(&id).await?;
        Ok(pb::ResetTotpResponse { user: Some(convert::user(&after)), consistency_token: convert::token(revision) })
    }

    pub async fn regenerate_recovery_codes(
        &self,
        request: Request<pb::RegenerateRecoveryCodesRequest>,
    ) -> Result<pb::RegenerateRecoveryCodesResponse, ApiError> {
        let caller = self.caller(&request).await?;
        let a = self.own_account(&caller).await?;
        if !a.totp_enabled {
            return Err(ApiError::new(ErrorReason::TotpNotEnabled, "2FA is not on"));
        }
        if !self.verify_second_factor(&a.id, Some(&request.get_ref().totp_code), None).await? {
            return Err(ApiError::new(ErrorReason::InvalidTotpCode, "the code is not valid"));
        }
        let codes = totp::recovery_codes().map_err(ApiError::internal)?;
        let hashes: Vec<String> = codes.iter().map(|c| recovery_hash(c)).collect();
        let mut write = Write::begin(&self.db).await?;
        store::replace_codes(write.tx(), &a.id, &hashes).await?;
        write.audit(audit(caller.audit_actor(), &caller.client_ip, "user.2fa_recovery_codes", "user", &a.id).build());
        let revision = write.commit().await?;
        Ok(pb::RegenerateRecoveryCodesResponse { recovery_codes: codes, consistency_token: convert::token(revision) })
    }

    async fn policy_scope(&self, caller: &Caller, tenant_raw: &str, permissions: &[&str]) -> Result<String, ApiError> {
        let scope = match tenant_raw.trim() {
            "" => String::new(),
            raw => parse_id("tenant_id", raw).map_err(convert::input)?.to_string(),
        };
        let tenant = if scope.is_empty() { self.admin.id().await? } else { scope.clone() };
        // The platform policy is no tenant: only its permission (in the admin tenancy) counts.
        if !scope.is_empty() {
            self.require_tenant_seen(caller, &tenant).await?;
        }
        let mut last = None;
        for p in permissions {
            match self.require_permission_in(caller, p, &tenant, None).await {
                Ok(()) => return Ok(scope),
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| ApiError::new(ErrorReason::PermissionDenied, "not allowed")))
    }

    fn policy_proto(p: &Policy) -> pb::TwoFactorPolicy {
        pb::TwoFactorPolicy {
            tenant_id: p.scope.clone(),
            require_all: p.require_all,
            required_roles: p.required_roles.clone(),
            require_msp_staff: p.require_msp_staff,
            grace_period: prost_types::Duration::try_from(std::time::Duration::from_millis(p.grace_ms.max(0) as u64))
                .ok(),
            updated_at: (p.updated_at > 0).then(|| convert::timestamp(p.updated_at)),
            updated_by_user_id: p.updated_by.clone(),
            in_force_from: (p.updated_at > 0).then(|| convert::timestamp(p.in_force_from)),
        }
    }

    pub async fn set_two_factor_policy(
        &self,
        request: Request<pb::SetTwoFactorPolicyRequest>,
    ) -> Result<pb::SetTwoFactorPolicyResponse, ApiError> {
        let caller = self.caller(&request).await?;
        let given = request.get_ref().policy.clone().unwrap_or_default();
        let scope = self.policy_scope(&caller, &given.tenant_id, &["settings.manage"]).await?;
        if given.required_roles.len() > 100 {
            return Err(ApiError::new(ErrorReason::BatchTooLarge, "at most 100 roles").with_metadata("limit", "100"));
        }
        let roles = given
            .required_roles
            .iter()
            .map(|r| crate::domain::account::parse_role("required_roles", r).map_err(convert::input))
            .collect::<Result<Vec<_>, _>>()?;
        let grace_ms = given
            .grace_period
            .map(|d| d.seconds.saturating_mul(1000).saturating_add(i64::from(d.nanos) / 1_000_000))
            .unwrap_or(0);
        if !(0..=365 * 24 * 3600 * 1000).contains(&grace_ms) {
            return Err(ApiError::new(ErrorReason::ValueOutOfRange, "grace_period is out of range"));
        }
        if !scope.is_empty() && given.require_msp_staff {
            return Err(ApiError::new(ErrorReason::ValueOutOfRange, "require_msp_staff is platform-wide only"));
        }
        let now = now_micros();
        let mut policy = Policy {
            scope: scope.clone(),
            require_all: given.require_all,
            required_roles: roles,
            require_msp_staff: given.require_msp_staff,
            grace_ms,
            updated_at: now,
            updated_by: caller.user().map(|p| p.user_id.clone()).unwrap_or_default(),
            in_force_from: now.saturating_add(grace_ms.saturating_mul(1000)),
        };
        // An edit of a policy already in force that still demands at least as much stays in
        // force (fail closed): re-saving it must not give everyone a new grace period.
        if let Some(previous) = store::policy(self.db.pool(), &scope).await?
            && previous.in_force(now)
            && policy.demands_at_least(&previous)
        {
            policy.in_force_from = previous.in_force_from;
        }
        let mut write = Write::begin(&self.db).await?;
        store::set_policy(write.tx(), &policy).await?;
        let resource = if scope.is_empty() { "platform" } else { &scope };
        write.audit(
            audit(caller.audit_actor(), &caller.client_ip, "settings.2fa_policy", "policy", resource)
                .tenant(&scope)
                .after(serde_json::json!({
                    "require_all": policy.require_all,
                    "required_roles": policy.required_roles,
                    "require_msp_staff": policy.require_msp_staff,
                    "grace_ms": grace_ms,
                }))
                .build(),
        );
        let revision = write.commit().await?;
        Ok(pb::SetTwoFactorPolicyResponse {
            policy: Some(Self::policy_proto(&policy)),
            consistency_token: convert::token(revision),
        })
    }

    pub async fn get_two_factor_policy(
        &self,
        request: Request<pb::GetTwoFactorPolicyRequest>,
    ) -> Result<pb::GetTwoFactorPolicyResponse, ApiError> {
        let caller = self.caller(&request).await?;
        let scope = self.policy_scope(&caller, &request.get_ref().tenant_id, &["settings.manage", PERM_VIEW]).await?;
        let policy = store::policy(self.db.pool(), &scope).await?.unwrap_or(Policy { scope, ..Default::default() });
        Ok(pb::GetTwoFactorPolicyResponse { policy: Some(Self::policy_proto(&policy)) })
    }
}
