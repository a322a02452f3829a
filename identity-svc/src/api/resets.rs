//! Password-reset links: sent by an administrator or requested by the user ("forgot
//! password"); using one sets a new password and ends every session.
//!
//! Rules:
//!
//! 1. `RequestPasswordReset` (the only unauthenticated call that sends mail) is limited per client
//!    address (`store::rate_limits`, a fixed-window counter, one upsert … RETURNING;
//!    `TETHER_IDENTITY_RESET_REQUESTS_PER_IP` per `TETHER_IDENTITY_RESET_WINDOW_MS`). Over the
//!    limit it is RESOURCE_EXHAUSTED / `RATE_LIMITED`, counted before the email is looked at, so the
//!    answer says nothing about it.

use std::time::Duration;

use tether_proto::{common::v1::ErrorReason, identity::v1 as pb};
use tether_runtime::{ApiError, access::Caller, db::now_micros};
use tonic::Request;

use super::{
    Identity, PERM_MANAGE,
    convert::{self, session_revoked, upserted},
};
use crate::{
    domain::{
        Email,
        account::{Status, parse_id, parse_password},
        tokens,
    },
    events::{Write, anonymous, audit},
    store::{
        accounts::{self, AccountRow},
        lockouts, rate_limits, resets, sessions,
    },
};

/// RequestPasswordReset always takes at least this long, so its timing reveals nothing.
const REQUEST_FLOOR: Duration = Duration::from_millis(300);

impl Identity {
    /// Issues a link (voiding older ones), records it, and emails it.
    async fn issue_reset(&self, caller: Option<&Caller>, a: &AccountRow, ip: &str) -> Result<(i64, u64), ApiError> {
        let token = tokens::generate().map_err(ApiError::internal)?;
        let expires_at = now_micros() + self.config.invitations.reset_ttl.as_micros() as i64;
        let email = a.email.clone().unwrap_or_default();
        let mut write = Write::begin(&self.db).await?;
        resets::issue(write.tx(), &a.id, &tokens::digest(&token), expires_at).await?;
        let actor = caller.map(|c| c.audit_actor()).unwrap_or_else(|| anonymous(&email));
        write.audit(
            audit(actor, ip, "user.password_reset_link", "user", &a.id)
                .tenant(a.primary_tenant_id.as_deref().unwrap_or_default())
                .build(),
        );
        let revision = write.commit().await?;
        let body = format!(
            "Hello {},\n\nOpen this link to choose a new password (it expires in {} minutes and works once):\n\n{}{}\n",
            a.display_name,
            self.config.invitations.reset_ttl.as_secs() / 60,
            self.config.invitations.reset_base_url,
            token
        );
        // Sent in the background: how long a mail server takes must not show in the answer time
        // (the self-service request would otherwise tell which emails exist).
        let mailer = self.mailer.clone();
        let user_id = a.id.clone();
        tokio::spawn(async move {
            if let Err(e) = mailer.send(&email, "Reset your Tether password", &body).await {
                tracing::warn!(%user_id, error = %e, "could not email the password-reset link");
            }
        });
        Ok((expires_at, revision))
    }

    pub async fn send_password_reset(
        &self,
        request: Request<pb::SendPasswordResetRequest>,
    ) -> Result<pb::SendPasswordResetResponse, ApiError> {
        let caller = self.caller(&request).await?;
        let id = parse_id("user_id", &request.get_ref().user_id).map_err(convert::input)?.to_string();
        let a = self.load(&id).await?;
        if a.status == Status::Deleted {
            return Err(ApiError::new(ErrorReason::UserNotFound, "no such user"));
        }
        self.require_on(&caller, PERM_MANAGE, &a).await?;
        if a.status != Status::Active {
            return Err(ApiError::new(ErrorReason::UserNotActive, "the user is not active"));
        }
        let (expires_at, revision) = self.issue_reset(Some(&caller), &a, &caller.client_ip).await?;
        Ok(pb::SendPasswordResetResponse {
            expires_at: convert::ts(expires_at),
            consistency_token: convert::token(revision),
        })
    }

    pub async fn request_password_reset(
        &self,
        request: Request<pb::RequestPasswordResetRequest>,
    ) -> Result<pb::RequestPasswordResetResponse, ApiError> {
        let started = tokio::time::Instant::now();
        let ip = tether_runtime::access::client_ip(&request, &self.service_token, "");
        // Counted before the email is even read, so the limit answers the same whether or not
        // the address belongs to someone: it reveals nothing, and caps the mail one client
        // address can cause.
        let limit = self.config.reset_rate;
        let window = i64::try_from(limit.window.as_micros()).unwrap_or(i64::MAX).max(1);
        let now = now_micros();
        let hits = rate_limits::hit(self.db.pool(), "password_reset_ip", &ip, now - now % window).await?;
        if hits > i64::from(limit.max) {
            return Err(ApiError::new(
                ErrorReason::RateLimited,
                "too many password-reset requests from this address; try again later",
            ));
        }
        let raw: String = request.get_ref().email.chars().take(300).collect();
        if let Ok(email) = Email::parse(&raw)
            && let Some(a) = accounts::get_by_email(self.db.pool(), &email.normalized()).await?
            && a.status == Status::Active
            && a.provisioned
            && let Err(e) = self.issue_reset(None, &a, &ip).await
        {
            tracing::warn!(error = %e, "password-reset request failed");
        }
        tokio::time::sleep_until(started + REQUEST_FLOOR).await;
        Ok(pb::RequestPasswordResetResponse {})
    }

    pub async fn reset_password(
        &self,
        request: Request<pb::ResetPasswordRequest>,
    ) -> Result<pb::ResetPasswordResponse, ApiError> {
        // The person's address when the edge vouches for it (`x-client-ip`), as Login does.
        let ip = tether_runtime::access::client_ip(&request, &self.service_token, "");
        let r = request.into_inner();
        let malformed = || ApiError::new(ErrorReason::PasswordResetTokenMalformed, "the reset link is not valid");
        if !tokens::well_formed(&r.reset_token) {
            return Err(malformed());
        }
        let digest = tokens::digest(&r.reset_token);
        let reset = resets::find(self.db.pool(), &digest).await?.ok_or_else(malformed)?;
        if reset.used {
            return Err(ApiError::new(ErrorReason::PasswordResetUsed, "the reset link was already used"));
        }
        if reset.voided {
            return Err(ApiError::new(ErrorReason::PasswordResetRevoked, "the reset link was replaced"));
        }
        if reset.expires_at <= now_micros() {
            return Err(ApiError::new(ErrorReason::PasswordResetExpired, "the reset link has expired"));
        }
        let new_password = parse_password("new_password", &r.new_password).map_err(convert::input)?;
        let a = self.load(&reset.account_id).await?;
        if a.status != Status::Active {
            return Err(ApiError::new(ErrorReason::PasswordResetRevoked, "the account is not active"));
        }
        let email = a.email.clone().unwrap_or_default();
        self.check_password("new_password", &new_password, &email, &a.display_name, Some(&a.id)).await?;
        let hash = self.hasher.hash(&new_password).await?;
        let mut write = Write::begin(&self.db).await?;
        if !resets::use_up(write.tx(), &digest).await? {
            return Err(ApiError::new(ErrorReason::PasswordResetUsed, "the reset link was already used"));
        }
        accounts::set_password(write.tx(), &a.id, &hash, false).await?;
        let ended = sessions::revoke_all(write.tx(), &a.id, None).await?;
        let after = accounts::get(write.conn(), &a.id).await?.ok_or_else(malformed)?;
        write.change(upserted(&after));
        write.changes(ended.iter().map(|s| session_revoked(s, &a.id)));
        write.audit(
            audit(anonymous(&email), &ip, "user.password_reset", "user", &a.id)
                .metadata(serde_json::json!({ "method": "link", "sessions_ended": ended.len() }))
                .build(),
        );
        let revision = write.commit().await?;
        lockouts::clear(self.db.pool(), lockouts::Kind::Account, &a.id).await?;
        self.sessions_changed().await;
        Ok(pb::ResetPasswordResponse { user_id: a.id, consistency_token: convert::token(revision) })
    }
}
