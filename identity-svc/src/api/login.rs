//! Login, sessions, Authenticate, passwords, brute-force protection.
//!
//! Rules:
//!
//! 1. Every failed login answers one generic `LOGIN_FAILED`; the real reason goes to the audit
//!    event. Unknown emails are verified against a dummy hash, at the same cost.
//! 2. Brute-force delays and lockouts: `domain::lockout`. ClearLockout's `client_ip` must parse as
//!    an IP address.
//! 3. The client address is the one a call names (`client_ip`, then `x-client-ip`) only when a
//!    service presenting the service token makes it, as the edge does; anyone else is placed at
//!    the connection's peer address (`tether_runtime::access::client_ip`), so a direct caller
//!    cannot rotate claimed addresses around the per-address limits.
//! 4. Step tokens (second factor, password change, 2FA enrolment) and session tokens are 256
//!    random bits, stored as SHA-256 (`domain::tokens`).
//! 5. A session's idle time is refreshed at most every min(idle timeout / 4, 60 s).

use std::time::Duration;

use tether_proto::{common::v1::ErrorReason, identity::v1 as pb};
use tether_runtime::{
    ApiError,
    access::Caller,
    db::now_micros,
    events::{current_revision, record_audit_only},
};
use tonic::Request;

use super::{
    Identity, PERM_MANAGE, STEP_ENROLLMENT, STEP_SECOND_FACTOR,
    convert::{self, bounded, session_revoked, upserted},
};
use crate::{
    auth::CachedSession,
    domain::{
        Email,
        account::{self, Status, parse_id, parse_password},
        login::{self, Candidate, Locked, LoginFailure},
        password, tokens,
    },
    events::{Write, anonymous, audit},
    store::{
        accounts::{self as accounts, AccountRow},
        lockouts::{self, Kind},
        sessions::{self, LoginStep, SessionRow},
    },
};

const STEP_PASSWORD_CHANGE: &str = "password_change";
/// A password change after a verified second factor (the session records it).
const STEP_PASSWORD_CHANGE_2FA: &str = "password_change_2fa";

fn login_failed() -> ApiError {
    ApiError::new(ErrorReason::LoginFailed, "the email or password is incorrect")
}

fn unauthenticated() -> ApiError {
    ApiError::new(ErrorReason::Unauthenticated, "the session token is not valid")
}

fn micros(d: Duration) -> i64 {
    i64::try_from(d.as_micros()).unwrap_or(i64::MAX / 4)
}

/// An IP address (the subject of an IP lockout), trimmed: INVALID_ARGUMENT naming the field if
/// it is missing or not an address.
fn parse_ip(field: &'static str, raw: &str) -> Result<String, ApiError> {
    let trimmed = bounded(field, raw, 100)?;
    if trimmed.is_empty() {
        return Err(
            ApiError::new(ErrorReason::FieldRequired, format!("{field} is required")).with_metadata("field", field)
        );
    }
    if trimmed.parse::<std::net::IpAddr>().is_err() {
        return Err(ApiError::new(ErrorReason::InvalidFormat, format!("{field} is not an IP address"))
            .with_metadata("field", field));
    }
    Ok(trimmed)
}

/// What [`Identity::credential_lockout`] found.
pub(super) struct Gate {
    pub locked: Option<Locked>,
    /// The account's counter had failures on record (a success clears them).
    pub account_had_failures: bool,
}

/// RESOURCE_EXHAUSTED / RATE_LIMITED: the client address is over its limit.
fn address_locked() -> ApiError {
    ApiError::new(ErrorReason::RateLimited, "too many failed attempts from this address; try again later")
}

fn bearer<T>(request: &Request<T>) -> Option<String> {
    request
        .metadata()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")))
        .map(|t| t.trim().to_owned())
}

impl Identity {
    pub async fn login(&self, request: Request<pb::LoginRequest>) -> Result<pb::LoginResponse, ApiError> {
        let claimed = bounded("client_ip", &request.get_ref().client_ip, 100)?;
        let ip = tether_runtime::access::client_ip(&request, &self.service_token, &claimed);
        let r = request.into_inner();
        let user_agent = bounded("user_agent", &r.user_agent, 500)?;
        let email_raw = bounded("email", &r.email, Email::MAX_LEN + 10)?;
        let now = now_micros();

        let normalized = Email::parse(&email_raw).map(|e| e.normalized()).ok();
        let account = match &normalized {
            Some(e) => accounts::get_by_email(self.db.pool(), e).await?,
            None => None,
        }
        .filter(|a| a.status != Status::Deleted);
        // Unknown addresses get counters of their own, with the same delays and lockout as
        // accounts: otherwise the delay a few failures bring would tell which emails exist.
        let counter_subject = match (&account, &normalized) {
            (Some(a), _) => a.id.clone(),
            (None, Some(e)) => format!("unknown:{e}"),
            (None, None) => format!("unknown:{}", email_raw.trim().to_lowercase()),
        };

        let gate = self.credential_lockout(&counter_subject, &ip).await?;
        // An address over its limit is refused outright; a locked account still pays for a
        // verification below, so the answer time says nothing.
        if gate.locked == Some(Locked::Ip) {
            self.audit_login_failure(&email_raw, &ip, None, LoginFailure::IpLocked).await?;
            return Err(address_locked());
        }
        let had_failures = gate.account_had_failures && account.is_some();
        // Always pay for one verification (the dummy hash for unknown emails), so the answer
        // time says nothing about which emails exist.
        let too_long = r.password.chars().count() > account::PASSWORD_HARD_MAX;
        let plain = if too_long { String::new() } else { r.password.clone() };
        let verified =
            self.hasher.verify(&plain, account.as_ref().and_then(|a| a.password_hash.as_deref())).await? && !too_long;
        let candidate = account.as_ref().map(|a| Candidate {
            status: a.status,
            has_password: a.password_hash.is_some(),
            provisioned: a.provisioned,
        });
        if let Err(reason) = login::password_verdict(gate.locked, candidate.as_ref(), verified) {
            if reason.counts_as_guess() {
                lockouts::record_failure(self.db.pool(), Kind::Ip, &ip, &self.config.ip_lockout, now).await?;
                lockouts::record_failure(
                    self.db.pool(),
                    Kind::Account,
                    &counter_subject,
                    &self.config.account_lockout,
                    now,
                )
                .await?;
            }
            self.audit_login_failure(&email_raw, &ip, account.as_ref(), reason).await?;
            return Err(login_failed());
        }
        let Some(account) = account else { return Err(login_failed()) };
        // The password alone does not clear the account's failures while a second factor is
        // still to come: wrong codes must keep counting towards the lockout.
        if had_failures && (!account.totp_enabled || r.second_factor.is_some()) {
            lockouts::clear(self.db.pool(), Kind::Account, &account.id).await?;
        }
        if let Some(phc) = &account.password_hash
            && password::needs_rehash(phc)
        {
            let fresh = self.hasher.hash(&plain).await?;
            accounts::rehash(self.db.pool(), &account.id, &fresh).await?;
        }
        let mut second_factor_done = false;
        if account.totp_enabled && r.second_factor.is_some() {
            let (totp_code, recovery) = match &r.second_factor {
                Some(pb::login_request::SecondFactor::TotpCode(c)) => (Some(c.as_str()), None),
                Some(pb::login_request::SecondFactor::RecoveryCode(c)) => (None, Some(c.as_str())),
                None => (None, None),
            };
            if !self.verify_second_factor(&account.id, totp_code, recovery).await? {
                self.count_failure(&account.id, &ip).await?;
                self.audit_login_failure(&email_raw, &ip, Some(&account), LoginFailure::SecondFactorInvalid).await?;
                return Err(login_failed());
            }
            second_factor_done = true;
        }
        let (outcome, revision) = match self.next_step(&account, &ip, &user_agent, second_factor_done).await {
            Ok(done) => done,
            Err(e) => {
                // Failed closed (tenancy-svc could not tell the roles): on the trail too.
                if e.code() == tonic::Code::Unavailable {
                    self.audit_login_failure(&email_raw, &ip, Some(&account), LoginFailure::RolesUnavailable).await?;
                }
                return Err(e);
            }
        };
        Ok(pb::LoginResponse { outcome: Some(outcome), consistency_token: convert::token(revision) })
    }

    pub(super) async fn audit_login_failure(
        &self,
        email: &str,
        ip: &str,
        account: Option<&AccountRow>,
        reason: LoginFailure,
    ) -> Result<(), ApiError> {
        let reason = convert::login_failure_reason(reason);
        let id = account.map(|a| a.id.as_str()).unwrap_or_default();
        let email: String = email.chars().take(256).collect();
        let event = audit(anonymous(&email), ip, "auth.login", "user", id).failed(reason).build();
        record_audit_only(&self.db, [event]).await?;
        Ok(())
    }

    /// After the password, in order: the second factor (if on), a password change (if
    /// required), 2FA enrollment (if policy requires it and there is none), then a session.
    pub(super) async fn next_step(
        &self,
        a: &AccountRow,
        ip: &str,
        ua: &str,
        second_factor_done: bool,
    ) -> Result<(pb::LoginOutcome, u64), ApiError> {
        use pb::login_outcome::Outcome;
        // Each step re-reads the account: one deactivated (or deleted) between two steps of a
        // login gets no further step and no session.
        if a.status != Status::Active || !a.provisioned {
            return Err(login_failed());
        }
        let kind = if a.totp_enabled && !second_factor_done {
            Some(STEP_SECOND_FACTOR)
        } else if a.must_change_password {
            Some(if second_factor_done { STEP_PASSWORD_CHANGE_2FA } else { STEP_PASSWORD_CHANGE })
        } else if !a.totp_enabled && self.requires_two_factor(a).await? {
            Some(STEP_ENROLLMENT)
        } else {
            None
        };
        if let Some(kind) = kind {
            let token = tokens::generate().map_err(ApiError::internal)?;
            let expires_at = now_micros() + micros(self.config.sessions.step_ttl);
            let step = LoginStep {
                account_id: a.id.clone(),
                kind: kind.to_owned(),
                client_ip: ip.to_owned(),
                user_agent: ua.to_owned(),
                expires_at,
                used: false,
            };
            // A step token only: no streamed state, and the login is audited when it ends.
            let mut tx = self.db.begin_write().await?;
            sessions::insert_step(&mut tx, &tokens::digest(&token), &step).await?;
            let revision = current_revision(&mut *tx).await?;
            tx.commit().await?;
            let outcome = match kind {
                STEP_SECOND_FACTOR => Outcome::SecondFactorRequired(pb::SecondFactorRequired {
                    challenge_token: token,
                    expires_at: convert::ts(expires_at),
                }),
                STEP_ENROLLMENT => Outcome::EnrollmentRequired(pb::EnrollmentRequired {
                    enrollment_token: token,
                    expires_at: convert::ts(expires_at),
                }),
                _ => Outcome::PasswordChangeRequired(pb::PasswordChangeRequired {
                    password_change_token: token,
                    expires_at: convert::ts(expires_at),
                    password_policy: Some(convert::policy(&self.config.password_policy)),
                }),
            };
            return Ok((pb::LoginOutcome { outcome: Some(outcome) }, revision));
        }
        let (issued, revision) = self.issue_session(a, ip, ua, second_factor_done).await?;
        Ok((pb::LoginOutcome { outcome: Some(Outcome::Session(issued)) }, revision))
    }

    /// A live, unused, unexpired step token of `kind`.
    pub(super) async fn open_step(&self, raw: &str, kind: &str) -> Result<LoginStep, ApiError> {
        let invalid = || ApiError::new(ErrorReason::LoginStepTokenInvalid, "the step token is not valid");
        if !tokens::well_formed(raw) {
            return Err(invalid());
        }
        let mut tx = self.db.pool().begin().await?;
        let step = sessions::find_step(&mut tx, &tokens::digest(raw), kind).await?;
        tx.commit().await?;
        let step = step.filter(|s| !s.used).ok_or_else(invalid)?;
        if step.expires_at <= now_micros() {
            return Err(ApiError::new(ErrorReason::LoginStepTokenExpired, "the step token has expired"));
        }
        Ok(step)
    }

    pub(super) async fn consume_step(&self, raw: &str) -> Result<(), ApiError> {
        // Marks a step token used: no streamed state, and the step it completes is audited.
        let mut tx = self.db.begin_write().await?;
        sessions::use_step(&mut tx, &tokens::digest(raw)).await?;
        tx.commit().await.map_err(ApiError::from)
    }

    /// The brute-force gate before a credential (password, second-factor code, a self-service
    /// change's current password) is checked: which limit is in force, if any; otherwise waits
    /// the address's and the account's progressive delays. `account` is the account's counter
    /// subject (its id, or `unknown:<email>` at login).
    pub(super) async fn credential_lockout(&self, account: &str, ip: &str) -> Result<Gate, ApiError> {
        let now = now_micros();
        let mut gate = Gate { locked: None, account_had_failures: false };
        let limits = [
            (Kind::Ip, ip, &self.config.ip_lockout, Locked::Ip),
            (Kind::Account, account, &self.config.account_lockout, Locked::Account),
        ];
        for (kind, subject, rules, locked) in limits {
            if let Some(c) = lockouts::get(self.db.pool(), kind, subject).await? {
                gate.account_had_failures |= kind == Kind::Account;
                if c.locked_until.is_some_and(|u| u > now) {
                    gate.locked = Some(locked);
                    return Ok(gate);
                }
                tokio::time::sleep(rules.delay(c.recent_failures(rules, now))).await;
            }
        }
        Ok(gate)
    }

    /// Counts a failed credential toward the account's and the IP's limits.
    pub(super) async fn count_failure(&self, account_id: &str, ip: &str) -> Result<(), ApiError> {
        let now = now_micros();
        lockouts::record_failure(self.db.pool(), Kind::Ip, ip, &self.config.ip_lockout, now).await?;
        lockouts::record_failure(self.db.pool(), Kind::Account, account_id, &self.config.account_lockout, now)
            .await
            .map_err(ApiError::from)
    }

    async fn issue_session(
        &self,
        a: &AccountRow,
        ip: &str,
        ua: &str,
        second_factor_verified: bool,
    ) -> Result<(pb::IssuedSession, u64), ApiError> {
        let token = tokens::generate().map_err(ApiError::internal)?;
        let now = now_micros();
        let row = SessionRow {
            id: uuid::Uuid::now_v7().to_string(),
            account_id: a.id.clone(),
            created_at: now,
            last_seen_at: now,
            expires_at: now + micros(self.config.sessions.lifetime),
            client_ip: ip.to_owned(),
            user_agent: ua.to_owned(),
            second_factor_verified,
        };
        let mut write = Write::begin(&self.db).await?;
        let ended = if self.config.sessions.single_session {
            sessions::revoke_all(write.tx(), &a.id, None).await?
        } else {
            Vec::new()
        };
        sessions::insert(write.tx(), &tokens::digest(&token), &row).await?;
        accounts::record_login(write.tx(), &a.id, now).await?;
        write.changes(ended.iter().map(|s| session_revoked(s, &a.id)));
        let actor = tether_proto::common::v1::Actor {
            kind: tether_proto::common::v1::ActorKind::User as i32,
            user_id: a.id.clone(),
            display_name: a.display_name.clone(),
            email: a.email.clone().unwrap_or_default(),
            is_msp_staff: a.is_msp_staff,
            session_id: row.id.clone(),
            system_name: String::new(),
        };
        write.audit(
            audit(actor, ip, "auth.login", "session", &row.id)
                .metadata(serde_json::json!({ "sessions_ended": ended.len() }))
                .build(),
        );
        // The revision is in the login's consistency token: the commit tells followers at once.
        let revision = write.commit().await?;
        if !ended.is_empty() {
            self.sessions_changed().await;
        }
        let issued = pb::IssuedSession {
            session_token: token,
            session: Some(convert::session(&row, micros(self.config.sessions.idle_timeout), true)),
            principal: Some(convert::principal(a, &row.id)),
        };
        Ok((issued, revision))
    }

    pub async fn complete_password_change(
        &self,
        request: Request<pb::CompletePasswordChangeRequest>,
    ) -> Result<pb::CompletePasswordChangeResponse, ApiError> {
        let r = request.into_inner();
        let invalid = || ApiError::new(ErrorReason::LoginStepTokenInvalid, "the step token is not valid");
        if !tokens::well_formed(&r.password_change_token) {
            return Err(invalid());
        }
        let new_password = parse_password("new_password", &r.new_password).map_err(convert::input)?;
        let digest = tokens::digest(&r.password_change_token);
        let (step, kind) = match self.open_step(&r.password_change_token, STEP_PASSWORD_CHANGE).await {
            Ok(step) => (step, STEP_PASSWORD_CHANGE),
            Err(e) if e.reason == ErrorReason::LoginStepTokenInvalid => {
                (self.open_step(&r.password_change_token, STEP_PASSWORD_CHANGE_2FA).await?, STEP_PASSWORD_CHANGE_2FA)
            }
            Err(e) => return Err(e),
        };
        let a = self.load(&step.account_id).await?;
        if a.status != Status::Active {
            return Err(invalid());
        }
        let email = a.email.clone().unwrap_or_default();
        self.check_password("new_password", &new_password, &email, &a.display_name, Some(&a.id)).await?;
        let hash = self.hasher.hash(&new_password).await?;
        let mut write = Write::begin(&self.db).await?;
        // Used up first: a second call with the same token finds it used.
        let still = sessions::find_step(write.tx(), &digest, kind).await?;
        if still.is_none_or(|s| s.used) {
            return Err(invalid());
        }
        sessions::use_step(write.tx(), &digest).await?;
        accounts::set_password(write.tx(), &a.id, &hash, false).await?;
        let after = accounts::get(write.conn(), &a.id).await?.ok_or_else(invalid)?;
        write.change(upserted(&after));
        write.audit(audit(anonymous(&email), &step.client_ip, "user.password_change", "user", &a.id).build());
        write.commit().await?;
        let (outcome, revision) =
            self.next_step(&after, &step.client_ip, &step.user_agent, kind == STEP_PASSWORD_CHANGE_2FA).await?;
        Ok(pb::CompletePasswordChangeResponse { outcome: Some(outcome), consistency_token: convert::token(revision) })
    }

    /// The principal of a session token: from the cache while the revocation generation is
    /// unchanged (one indexed single-row read, shared by concurrent calls), else from the
    /// database.
    pub async fn authenticate(&self, token: &str) -> Result<pb::AuthenticateResponse, ApiError> {
        if !tokens::well_formed(token) {
            return Err(unauthenticated());
        }
        let digest = tokens::digest(token);
        let generation = self.generation.current().await?;
        let now = now_micros();
        let idle = micros(self.config.sessions.idle_timeout);
        // Refresh the idle timer at most this often (the list shows last use coarsely).
        let touch_every = (idle / 4).min(60_000_000);
        if let Some(hit) = self.cache.get(&digest, generation) {
            if now < hit.expires_at && now < hit.last_seen_at + idle {
                if now - hit.last_seen_at > touch_every {
                    sessions::touch(self.auth_db.pool(), &hit.principal.session_id, now).await?;
                    self.cache.touch(&digest, now);
                }
                return Ok(pb::AuthenticateResponse {
                    principal: Some(hit.principal),
                    expires_at: convert::ts(hit.expires_at),
                });
            }
            // Maybe another replica kept it alive: re-read below.
            self.cache.remove(&digest);
        }
        let s = sessions::find_live(self.auth_db.pool(), &digest).await?.ok_or_else(unauthenticated)?;
        if now >= s.expires_at || now >= s.last_seen_at + idle {
            return Err(ApiError::new(ErrorReason::SessionExpired, "the session has expired"));
        }
        let a = accounts::get(self.auth_db.pool(), &s.account_id).await?.ok_or_else(unauthenticated)?;
        if a.status != Status::Active || !a.provisioned {
            return Err(unauthenticated());
        }
        let mut last_seen = s.last_seen_at;
        if now - last_seen > touch_every {
            sessions::touch(self.auth_db.pool(), &s.id, now).await?;
            last_seen = now;
        }
        let principal = convert::principal(&a, &s.id);
        self.cache.put(
            digest,
            generation,
            CachedSession { principal: principal.clone(), expires_at: s.expires_at, last_seen_at: last_seen },
        );
        Ok(pb::AuthenticateResponse { principal: Some(principal), expires_at: convert::ts(s.expires_at) })
    }

    pub async fn logout(&self, request: Request<pb::LogoutRequest>) -> Result<pb::LogoutResponse, ApiError> {
        let caller = self.caller(&request).await?;
        let p = caller.user().ok_or_else(unauthenticated)?.clone();
        let revision =
            self.end_sessions(&caller, &p.user_id, std::slice::from_ref(&p.session_id), "auth.logout").await?;
        if let Some(t) = bearer(&request) {
            self.cache.remove(&tokens::digest(&t));
        }
        Ok(pb::LogoutResponse { consistency_token: convert::token(revision) })
    }

    /// Ends the given sessions of one user, with their change events and one audit event.
    async fn end_sessions(
        &self,
        caller: &Caller,
        user_id: &str,
        ids: &[String],
        action: &str,
    ) -> Result<u64, ApiError> {
        let mut write = Write::begin(&self.db).await?;
        let mut ended = Vec::new();
        for id in ids {
            if sessions::revoke(write.tx(), id).await? {
                ended.push(id.clone());
            }
        }
        write.changes(ended.iter().map(|s| session_revoked(s, user_id)));
        write.audit(
            audit(caller.audit_actor(), &caller.client_ip, action, "user", user_id)
                .metadata(serde_json::json!({ "session_ids": ended }))
                .build(),
        );
        let revision = write.commit().await?;
        self.sessions_changed().await;
        Ok(revision)
    }

    /// The user a sessions call is about: the caller by default; another user needs
    /// `users.manage`.
    async fn session_subject(&self, caller: &Caller, raw: &str) -> Result<String, ApiError> {
        match (raw.trim(), caller.user()) {
            ("", Some(p)) => Ok(p.user_id.clone()),
            ("", None) => Err(ApiError::new(ErrorReason::FieldRequired, "user_id is required")),
            (raw, p) => {
                let id = parse_id("user_id", raw).map_err(convert::input)?.to_string();
                if p.is_none_or(|p| p.user_id != id) {
                    let target = self.load(&id).await?;
                    self.require_on(caller, PERM_MANAGE, &target).await?;
                }
                Ok(id)
            }
        }
    }

    pub async fn list_sessions(
        &self,
        request: Request<pb::ListSessionsRequest>,
    ) -> Result<pb::ListSessionsResponse, ApiError> {
        let caller = self.caller(&request).await?;
        let r = request.get_ref();
        let user_id = self.session_subject(&caller, &r.user_id).await?;
        let size = account::page_size(r.page_size).map_err(convert::input)?;
        let filters = format!("sessions|{:?}", r.user_id);
        let offset = account::page_offset(&r.page_token, &filters).map_err(convert::input)?;
        let mut rows = sessions::list_live(self.db.pool(), &user_id, now_micros(), size + 1, offset).await?;
        let more = rows.len() > size;
        rows.truncate(size);
        let current = caller.user().map(|p| p.session_id.clone()).unwrap_or_default();
        let idle = micros(self.config.sessions.idle_timeout);
        Ok(pb::ListSessionsResponse {
            sessions: rows.iter().map(|s| convert::session(s, idle, s.id == current)).collect(),
            next_page_token: if more { account::offset_token(&filters, offset + size) } else { String::new() },
        })
    }

    pub async fn revoke_session(
        &self,
        request: Request<pb::RevokeSessionRequest>,
    ) -> Result<pb::RevokeSessionResponse, ApiError> {
        let caller = self.caller(&request).await?;
        let id = parse_id("session_id", &request.get_ref().session_id).map_err(convert::input)?.to_string();
        let not_found = || ApiError::new(ErrorReason::SessionNotFound, "no such session");
        let s = sessions::get(self.db.pool(), &id).await?.ok_or_else(not_found)?;
        if caller.user().is_none_or(|p| p.user_id != s.account_id) {
            let owner = self.load(&s.account_id).await?;
            self.require_on(&caller, PERM_MANAGE, &owner).await.map_err(|_| not_found())?;
        }
        let revision = self.end_sessions(&caller, &s.account_id, &[id], "session.revoke").await?;
        Ok(pb::RevokeSessionResponse { consistency_token: convert::token(revision) })
    }

    pub async fn revoke_user_sessions(
        &self,
        request: Request<pb::RevokeUserSessionsRequest>,
    ) -> Result<pb::RevokeUserSessionsResponse, ApiError> {
        let caller = self.caller(&request).await?;
        let r = request.get_ref();
        let user_id = self.session_subject(&caller, &r.user_id).await?;
        let keep = caller.user().filter(|_| r.keep_current).map(|p| p.session_id.clone());
        let mut write = Write::begin(&self.db).await?;
        let ended = sessions::revoke_all(write.tx(), &user_id, keep.as_deref()).await?;
        write.changes(ended.iter().map(|s| session_revoked(s, &user_id)));
        write.audit(
            audit(caller.audit_actor(), &caller.client_ip, "session.revoke_all", "user", &user_id)
                .metadata(serde_json::json!({ "sessions_ended": ended.len() }))
                .build(),
        );
        let revision = write.commit().await?;
        self.sessions_changed().await;
        Ok(pb::RevokeUserSessionsResponse {
            sessions_ended: ended.len() as i32,
            consistency_token: convert::token(revision),
        })
    }

    pub async fn change_password(
        &self,
        request: Request<pb::ChangePasswordRequest>,
    ) -> Result<pb::ChangePasswordResponse, ApiError> {
        let caller = self.caller(&request).await?;
        let p = caller.user().ok_or_else(unauthenticated)?.clone();
        let r = request.into_inner();
        let new_password = parse_password("new_password", &r.new_password).map_err(convert::input)?;
        let a = self.load(&p.user_id).await?;
        // A session is not a licence to guess the password: wrong current passwords count
        // towards the same lockouts as failed logins, and a locked account cannot change it.
        match self.credential_lockout(&a.id, &caller.client_ip).await?.locked {
            Some(Locked::Ip) => return Err(address_locked()),
            Some(Locked::Account) => {
                return Err(ApiError::new(
                    ErrorReason::AccountLocked,
                    "too many failed attempts: the account is locked for now; try again later",
                ));
            }
            None => {}
        }
        let current_ok = r.current_password.chars().count() <= account::PASSWORD_HARD_MAX
            && self.hasher.verify(&r.current_password, a.password_hash.as_deref()).await?;
        if !current_ok {
            self.count_failure(&a.id, &caller.client_ip).await?;
            return Err(ApiError::new(ErrorReason::CurrentPasswordIncorrect, "the current password is incorrect")
                .with_metadata("field", "current_password"));
        }
        let email = a.email.clone().unwrap_or_default();
        self.check_password("new_password", &new_password, &email, &a.display_name, Some(&a.id)).await?;
        let hash = self.hasher.hash(&new_password).await?;
        let mut write = Write::begin(&self.db).await?;
        accounts::set_password(write.tx(), &a.id, &hash, false).await?;
        let ended = if r.end_other_sessions {
            sessions::revoke_all(write.tx(), &a.id, Some(&p.session_id)).await?
        } else {
            Vec::new()
        };
        let after = accounts::get(write.conn(), &a.id).await?.ok_or_else(unauthenticated)?;
        write.change(upserted(&after));
        write.changes(ended.iter().map(|s| session_revoked(s, &a.id)));
        write.audit(
            audit(caller.audit_actor(), &caller.client_ip, "user.password_change", "user", &a.id)
                .metadata(serde_json::json!({ "sessions_ended": ended.len() }))
                .build(),
        );
        let revision = write.commit().await?;
        self.sessions_changed().await;
        Ok(pb::ChangePasswordResponse {
            sessions_ended: ended.len() as i32,
            consistency_token: convert::token(revision),
        })
    }

    pub async fn set_temporary_password(
        &self,
        request: Request<pb::SetTemporaryPasswordRequest>,
    ) -> Result<pb::SetTemporaryPasswordResponse, ApiError> {
        let caller = self.caller(&request).await?;
        let r = request.into_inner();
        let id = parse_id("user_id", &r.user_id).map_err(convert::input)?.to_string();
        let temporary = parse_password("temporary_password", &r.temporary_password).map_err(convert::input)?;
        let before = self.load(&id).await?;
        if before.status == Status::Deleted {
            return Err(ApiError::new(ErrorReason::UserNotFound, "no such user"));
        }
        self.require_on(&caller, PERM_MANAGE, &before).await?;
        let email = before.email.clone().unwrap_or_default();
        self.check_password("temporary_password", &temporary, &email, &before.display_name, Some(&id)).await?;
        let hash = self.hasher.hash(&temporary).await?;
        let mut write = Write::begin(&self.db).await?;
        accounts::set_password(write.tx(), &id, &hash, true).await?;
        let ended = sessions::revoke_all(write.tx(), &id, None).await?;
        let after = accounts::get(write.conn(), &id).await?.ok_or_else(unauthenticated)?;
        write.change(upserted(&after));
        write.changes(ended.iter().map(|s| session_revoked(s, &id)));
        write.audit(
            audit(caller.audit_actor(), &caller.client_ip, "user.password_reset", "user", &id)
                .tenant(after.primary_tenant_id.as_deref().unwrap_or_default())
                .metadata(serde_json::json!({ "method": "temporary_password", "sessions_ended": ended.len() }))
                .build(),
        );
        let revision = write.commit().await?;
        self.sessions_changed().await;
        Ok(pb::SetTemporaryPasswordResponse {
            user: Some(convert::user(&after)),
            consistency_token: convert::token(revision),
        })
    }

    pub async fn list_lockouts(
        &self,
        request: Request<pb::ListLockoutsRequest>,
    ) -> Result<pb::ListLockoutsResponse, ApiError> {
        let caller = self.caller(&request).await?;
        let r = request.get_ref();
        let size = account::page_size(r.page_size).map_err(convert::input)?;
        let filters = format!("lockouts|{}|{}", r.subject, r.locked_only);
        let offset = account::page_offset(&r.page_token, &filters).map_err(convert::input)?;
        let mut kind = match pb::LockoutSubject::try_from(r.subject) {
            Ok(pb::LockoutSubject::Account) => Some(Kind::Account),
            Ok(pb::LockoutSubject::ClientIp) => Some(Kind::Ip),
            _ => None,
        };
        let staff = caller.user().is_none_or(|p| p.is_msp_staff);
        if staff {
            self.require_in(&caller, PERM_MANAGE, &self.admin.id().await?).await?;
        } else {
            // Client admins: their tenant's accounts only, never IP entries.
            kind = Some(Kind::Account);
        }
        let now = now_micros();
        let rows = lockouts::list(self.db.pool(), kind, r.locked_only.then_some(now), size + 1, offset).await?;
        let more = rows.len() > size;
        let mut out = Vec::new();
        let mut homes = super::Homes::new();
        for c in rows.into_iter().take(size) {
            let rules = if c.kind == Kind::Ip { &self.config.ip_lockout } else { &self.config.account_lockout };
            let mut entry = pb::Lockout {
                subject: if c.kind == Kind::Ip { pb::LockoutSubject::ClientIp } else { pb::LockoutSubject::Account }
                    as i32,
                failed_attempts: c.failed_attempts as i32,
                last_failure_at: convert::ts(c.last_failure_at),
                current_delay: prost_types::Duration::try_from(rules.delay(c.recent_failures(rules, now))).ok(),
                locked_until: c.locked_until.filter(|u| *u > now).and_then(convert::ts),
                ..Default::default()
            };
            if c.kind == Kind::Account {
                let Some(a) = accounts::get(self.db.pool(), &c.subject).await? else { continue };
                if !staff && self.require_on_each(&caller, PERM_MANAGE, &a, &mut homes).await.is_err() {
                    continue;
                }
                entry.user_id = a.id.clone();
                entry.email = a.email.clone().unwrap_or_default();
            } else {
                entry.client_ip = c.subject.clone();
            }
            out.push(entry);
        }
        Ok(pb::ListLockoutsResponse {
            lockouts: out,
            next_page_token: if more { account::offset_token(&filters, offset + size) } else { String::new() },
        })
    }

    pub async fn clear_lockout(
        &self,
        request: Request<pb::ClearLockoutRequest>,
    ) -> Result<pb::ClearLockoutResponse, ApiError> {
        let caller = self.caller(&request).await?;
        let (kind, subject) = match &request.get_ref().target {
            Some(pb::clear_lockout_request::Target::UserId(raw)) => {
                let id = parse_id("user_id", raw).map_err(convert::input)?.to_string();
                let a = self.load(&id).await?;
                self.require_on(&caller, PERM_MANAGE, &a).await?;
                (Kind::Account, id)
            }
            Some(pb::clear_lockout_request::Target::ClientIp(raw)) => {
                if caller.user().is_some_and(|p| !p.is_msp_staff) {
                    return Err(ApiError::new(ErrorReason::MspStaffRequired, "IP entries: MSP staff only"));
                }
                self.require_in(&caller, PERM_MANAGE, &self.admin.id().await?).await?;
                (Kind::Ip, parse_ip("client_ip", raw)?)
            }
            None => {
                return Err(ApiError::new(ErrorReason::FieldRequired, "user_id or client_ip is required"));
            }
        };
        let mut write = Write::begin(&self.db).await?;
        let cleared = lockouts::clear(write.conn(), kind, &subject).await?;
        write.audit(audit(caller.audit_actor(), &caller.client_ip, "lockout.clear", kind.as_str(), &subject).build());
        let revision = write.commit().await?;
        Ok(pb::ClearLockoutResponse { cleared, consistency_token: convert::token(revision) })
    }
}
