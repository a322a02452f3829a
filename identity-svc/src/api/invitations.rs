//! Invitations: a pending account and a single-use link, accepted by the invitee.
//!
//! Rules:
//!
//! 1. An invitation is a pending account, a membership intent and a link token (stored hashed). A
//!    resend voids the previous link, which then answers `INVITATION_REVOKED`.
//! 2. Accepting activates the account only if it is still pending: an invitee deactivated or
//!    deleted meanwhile gets `INVITATION_REVOKED`.
//! 3. Deleting an account revokes its pending invitations and purges its second factor, recovery
//!    codes, reset links and login steps with the password.
//! 4. Mail goes through `crate::mail`: SMTP with STARTTLS when `TETHER_IDENTITY_SMTP_HOST` is set,
//!    else one `.eml` file per message in `TETHER_IDENTITY_MAIL_OUTBOX_DIR` (the dev stack).

use tether_proto::{common::v1::ErrorReason, identity::v1 as pb};
use tether_runtime::{
    ApiError,
    db::now_micros,
    events::{consistency::merge, current_revision},
};
use tonic::Request;

use super::{
    Identity, PERM_MANAGE, PERM_VIEW,
    convert::{self, bounded, invitation, invitation_json, invitation_status, invitation_upserted, upserted},
};
use crate::{
    domain::{
        account::{self, Status, parse_email, parse_id, parse_name, parse_opt_id, parse_password, parse_role},
        tokens,
    },
    events::{Write, anonymous, audit},
    store::{
        accounts, intents,
        invitations::{self as store, InvitationRow},
        sessions,
    },
};

fn not_found() -> ApiError {
    ApiError::new(ErrorReason::InvitationNotFound, "no such invitation")
}

impl Identity {
    fn invitation_url(&self, token: &str) -> String {
        format!("{}{token}", self.config.invitations.base_url)
    }

    /// Emails the link; a mail failure is logged, not fatal (the inviter also gets the link).
    async fn mail_invitation(&self, row: &InvitationRow, token: &str) {
        let body = format!(
            "Hello {},\n\nYou have been invited to Tether. Open this link to set your password and join \
             (it expires in {} days):\n\n{}\n",
            row.display_name,
            self.config.invitations.ttl.as_secs() / 86_400,
            self.invitation_url(token)
        );
        if let Err(e) = self.mailer.send(&row.email, "You are invited to Tether", &body).await {
            tracing::warn!(invitation_id = %row.id, error = %e, "could not email the invitation");
        }
    }

    pub async fn create_invitation(
        &self,
        request: Request<pb::CreateInvitationRequest>,
    ) -> Result<pb::CreateInvitationResponse, ApiError> {
        let caller = self.caller(&request).await?;
        let r = request.into_inner();
        let email = parse_email("email", &r.email).map_err(convert::input)?;
        let name = match r.display_name.trim() {
            "" => email.as_str().split('@').next().unwrap_or_default().to_owned(),
            raw => parse_name("display_name", raw).map_err(convert::input)?.as_str().to_owned(),
        };
        let role = parse_role("role", &r.role).map_err(convert::input)?;
        let tenant_id = parse_opt_id("tenant_id", &r.tenant_id).map_err(convert::input)?;
        if !r.is_msp_staff && tenant_id.is_none() {
            return Err(ApiError::new(ErrorReason::FieldRequired, "tenant_id is required for client users")
                .with_metadata("field", "tenant_id"));
        }
        let request_id = parse_opt_id("request_id", &r.request_id).map_err(convert::input)?.map(|u| u.to_string());
        let tenant =
            self.tenant_of_new(&caller, r.is_msp_staff, tenant_id, &role, r.at_least_as_fresh.as_ref()).await?;
        if let Some(rid) = &request_id
            && let Some(existing) = store::get_by_request_id(self.db.pool(), rid).await?
        {
            // A retry: the token cannot be shown again; the caller may resend. Only to someone
            // who may see that invitation: a request_id is not a way to read another's.
            if self.require_invitation(&caller, PERM_VIEW, &existing).await.is_err() {
                return Err(ApiError::new(ErrorReason::RequestIdReused, "the request_id was already used")
                    .with_metadata("field", "request_id"));
            }
            let revision = current_revision(self.db.pool()).await?;
            return Ok(pb::CreateInvitationResponse {
                invitation: Some(invitation(&existing)),
                consistency_token: convert::token(revision),
                ..Default::default()
            });
        }
        self.ensure_email_free(&email.normalized(), None).await?;
        let token = tokens::generate().map_err(ApiError::internal)?;
        let inviter = caller.user().map(|p| p.user_id.clone()).unwrap_or_default();
        let now = now_micros();

        let mut write = Write::begin(&self.db).await?;
        let primary = (!r.is_msp_staff).then_some(tenant.as_str());
        let account_id = match accounts::insert_pending(write.tx(), &email, &name, r.is_msp_staff, primary).await {
            Ok(id) => id,
            Err(e) if accounts::is_unique_violation(&e) => {
                return Err(ApiError::new(ErrorReason::EmailTaken, "the email is taken"));
            }
            Err(e) => return Err(convert::db(e)),
        };
        intents::insert(write.tx(), &account_id, intents::Op::Add, &tenant, &role).await?;
        let row = InvitationRow {
            id: uuid::Uuid::now_v7().to_string(),
            account_id: account_id.clone(),
            email: email.as_str().to_owned(),
            display_name: name,
            tenant_id: tenant.clone(),
            role,
            is_msp_staff: r.is_msp_staff,
            status: "pending".into(),
            invited_by: inviter,
            created_at: now,
            expires_at: now + self.config.invitations.ttl.as_micros() as i64,
            last_sent_at: now,
            send_count: 1,
            accepted_at: None,
        };
        store::insert(write.tx(), &row, &tokens::digest(&token), request_id).await?;
        let account = accounts::get(write.conn(), &account_id).await?.ok_or_else(not_found)?;
        write.changes([upserted(&account), invitation_upserted(&row)]);
        write.audit(
            audit(caller.audit_actor(), &caller.client_ip, "invitation.create", "invitation", &row.id)
                .tenant(&tenant)
                .after(invitation_json(&row))
                .build(),
        );
        let revision = write.commit().await?;
        self.relay.poke();
        // As CreateUser: the pending membership in place before the link goes out, so an
        // invitee who accepts at once can log in (and a refusal is answered, not mailed).
        let membership = self.membership_in_place(&account_id).await?;
        if !r.skip_email {
            self.mail_invitation(&row, &token).await;
        }
        Ok(pb::CreateInvitationResponse {
            invitation: Some(invitation(&row)),
            invitation_url: self.invitation_url(&token),
            invitation_token: token,
            consistency_token: merge([convert::token(revision).as_ref(), membership.as_ref()]),
        })
    }

    /// The caller may see / manage invitations into `tenant`. An invitation the caller may not
    /// see (client users: MSP staff's, and those into tenants outside their home; anyone: one
    /// without `users.view` there) is INVITATION_NOT_FOUND, exactly as a random id.
    async fn require_invitation(
        &self,
        caller: &tether_runtime::access::Caller,
        permission: &str,
        row: &InvitationRow,
    ) -> Result<(), ApiError> {
        if caller.user().is_some_and(|p| !p.is_msp_staff && row.is_msp_staff) {
            return Err(not_found());
        }
        self.require_tenant_seen(caller, &row.tenant_id)
            .await
            .map_err(|e| if e.code() == tonic::Code::NotFound { not_found() } else { e })?;
        match self.require_permission_in(caller, permission, &row.tenant_id, None).await {
            Ok(()) => Ok(()),
            Err(_) if permission == PERM_VIEW => Err(not_found()),
            Err(e) => match self.require_permission_in(caller, PERM_VIEW, &row.tenant_id, None).await {
                Ok(()) => Err(e),
                Err(_) => Err(not_found()),
            },
        }
    }

    pub async fn list_invitations(
        &self,
        request: Request<pb::ListInvitationsRequest>,
    ) -> Result<pb::ListInvitationsResponse, ApiError> {
        let caller = self.caller(&request).await?;
        let r = request.get_ref();
        let size = account::page_size(r.page_size).map_err(convert::input)?;
        let filters = format!("invitations|{}|{:?}", r.status, r.tenant_id);
        let offset = account::page_offset(&r.page_token, &filters).map_err(convert::input)?;
        let status = match pb::InvitationStatus::try_from(r.status) {
            Ok(pb::InvitationStatus::Unspecified | pb::InvitationStatus::Pending) => "pending",
            Ok(pb::InvitationStatus::Accepted) => "accepted",
            Ok(pb::InvitationStatus::Expired) => "expired",
            Ok(pb::InvitationStatus::Revoked) => "revoked",
            Err(_) => return Err(ApiError::new(ErrorReason::ValueOutOfRange, "unknown status")),
        };
        let mut tenant = parse_opt_id("tenant_id", &r.tenant_id).map_err(convert::input)?.map(|t| t.to_string());
        if let Some(p) = caller.user() {
            if p.is_msp_staff {
                let scope = match &tenant {
                    Some(t) => t.clone(),
                    None => self.admin.id().await?,
                };
                self.require_in(&caller, PERM_VIEW, &scope).await?;
            } else {
                if tenant.as_ref().is_some_and(|t| *t != p.primary_tenant_id) {
                    return Err(ApiError::new(ErrorReason::OutsideTenant, "not your tenant"));
                }
                self.require_in(&caller, PERM_VIEW, &p.primary_tenant_id).await?;
                tenant = Some(p.primary_tenant_id.clone());
            }
        }
        let mut rows = store::list(self.db.pool(), status, tenant.as_deref(), now_micros(), size + 1, offset).await?;
        let more = rows.len() > size;
        rows.truncate(size);
        Ok(pb::ListInvitationsResponse {
            invitations: rows.iter().map(invitation).collect(),
            next_page_token: if more { account::offset_token(&filters, offset + size) } else { String::new() },
        })
    }

    pub async fn resend_invitation(
        &self,
        request: Request<pb::ResendInvitationRequest>,
    ) -> Result<pb::ResendInvitationResponse, ApiError> {
        let caller = self.caller(&request).await?;
        let r = request.get_ref();
        let id = parse_id("invitation_id", &r.invitation_id).map_err(convert::input)?.to_string();
        let before = store::get(self.db.pool(), &id).await?.ok_or_else(not_found)?;
        self.require_invitation(&caller, PERM_MANAGE, &before).await?;
        match before.status.as_str() {
            "accepted" => return Err(ApiError::new(ErrorReason::InvitationUsed, "already accepted")),
            "revoked" => return Err(ApiError::new(ErrorReason::InvitationRevoked, "revoked")),
            _ => {}
        }
        let token = tokens::generate().map_err(ApiError::internal)?;
        let expires_at = now_micros() + self.config.invitations.ttl.as_micros() as i64;
        let mut write = Write::begin(&self.db).await?;
        store::reissue(write.tx(), &id, Some(&tokens::digest(&token)), expires_at).await?;
        let after = store::get(write.conn(), &id).await?.ok_or_else(not_found)?;
        write.change(invitation_upserted(&after));
        write.audit(
            audit(caller.audit_actor(), &caller.client_ip, "invitation.resend", "invitation", &id)
                .tenant(&after.tenant_id)
                .before(invitation_json(&before))
                .after(invitation_json(&after))
                .build(),
        );
        let revision = write.commit().await?;
        if !r.skip_email {
            self.mail_invitation(&after, &token).await;
        }
        Ok(pb::ResendInvitationResponse {
            invitation: Some(invitation(&after)),
            invitation_url: self.invitation_url(&token),
            invitation_token: token,
            consistency_token: convert::token(revision),
        })
    }

    pub async fn revoke_invitation(
        &self,
        request: Request<pb::RevokeInvitationRequest>,
    ) -> Result<pb::RevokeInvitationResponse, ApiError> {
        let caller = self.caller(&request).await?;
        let id = parse_id("invitation_id", &request.get_ref().invitation_id).map_err(convert::input)?.to_string();
        let before = store::get(self.db.pool(), &id).await?.ok_or_else(not_found)?;
        self.require_invitation(&caller, PERM_MANAGE, &before).await?;
        match before.status.as_str() {
            "accepted" => return Err(ApiError::new(ErrorReason::InvitationUsed, "already accepted")),
            "revoked" => {
                let revision = current_revision(self.db.pool()).await?;
                return Ok(pb::RevokeInvitationResponse {
                    invitation: Some(invitation(&before)),
                    consistency_token: convert::token(revision),
                });
            }
            _ => {}
        }
        let mut write = Write::begin(&self.db).await?;
        store::reissue(write.tx(), &id, None, 0).await?;
        store::set_status(write.tx(), &id, "revoked").await?;
        // The pending user goes too, and its membership with it.
        accounts::tombstone(write.tx(), &before.account_id).await?;
        intents::insert(write.tx(), &before.account_id, intents::Op::Clear, "", "").await?;
        let after = store::get(write.conn(), &id).await?.ok_or_else(not_found)?;
        let deleted = pb::IdentityChange {
            change: Some(pb::identity_change::Change::UserDeleted(pb::UserDeleted {
                user_id: before.account_id.clone(),
                display_name: before.display_name.clone(),
            })),
            ..Default::default()
        };
        write.changes([invitation_upserted(&after), deleted]);
        write.audit(
            audit(caller.audit_actor(), &caller.client_ip, "invitation.revoke", "invitation", &id)
                .tenant(&after.tenant_id)
                .before(invitation_json(&before))
                .after(invitation_json(&after))
                .build(),
        );
        let revision = write.commit().await?;
        self.relay.poke();
        Ok(pb::RevokeInvitationResponse {
            invitation: Some(invitation(&after)),
            consistency_token: convert::token(revision),
        })
    }

    /// The invitation a raw link token opens, or the precise reason it does not.
    async fn open_invitation(&self, raw: &str) -> Result<InvitationRow, ApiError> {
        if !tokens::well_formed(raw) {
            return Err(ApiError::new(ErrorReason::InvitationTokenMalformed, "the invitation link is garbled"));
        }
        let (id, voided) = store::by_token(self.db.pool(), &tokens::digest(raw)).await?.ok_or_else(not_found)?;
        let row = store::get(self.db.pool(), &id).await?.ok_or_else(not_found)?;
        match invitation_status(&row, now_micros()) {
            pb::InvitationStatus::Accepted => {
                Err(ApiError::new(ErrorReason::InvitationUsed, "this invitation was already accepted"))
            }
            pb::InvitationStatus::Revoked => {
                Err(ApiError::new(ErrorReason::InvitationRevoked, "this invitation was revoked"))
            }
            _ if voided => Err(ApiError::new(ErrorReason::InvitationRevoked, "this link was replaced by a newer one")),
            pb::InvitationStatus::Expired => {
                Err(ApiError::new(ErrorReason::InvitationExpired, "this invitation has expired"))
            }
            _ => Ok(row),
        }
    }

    pub async fn get_invitation(
        &self,
        request: Request<pb::GetInvitationRequest>,
    ) -> Result<pb::GetInvitationResponse, ApiError> {
        let row = self.open_invitation(&request.get_ref().invitation_token).await?;
        let inviter = match row.invited_by.as_str() {
            "" => String::new(),
            id => accounts::get(self.db.pool(), id).await?.map(|a| a.display_name).unwrap_or_default(),
        };
        // Asked live (the contract: "from tenancy-svc; empty if unavailable"): the page shows
        // the organisation's current name, and an outage only leaves the name out.
        let tenant_name = match row.tenant_id.as_str() {
            "" => String::new(),
            id => match tokio::time::timeout(self.config.tenancy_timeout, self.tenancy.tenant_name(id)).await {
                Ok(Ok(name)) => name.unwrap_or_default(),
                Ok(Err(e)) => {
                    tracing::warn!(error = %e, "tenancy-svc: no tenant name for the invitation page");
                    String::new()
                }
                Err(_) => String::new(),
            },
        };
        Ok(pb::GetInvitationResponse {
            email: row.email.clone(),
            display_name: row.display_name.clone(),
            tenant_id: row.tenant_id.clone(),
            tenant_name,
            role: row.role.clone(),
            invited_by_display_name: inviter,
            expires_at: convert::ts(row.expires_at),
            password_policy: Some(convert::policy(&self.config.password_policy)),
        })
    }

    pub async fn accept_invitation(
        &self,
        request: Request<pb::AcceptInvitationRequest>,
    ) -> Result<pb::AcceptInvitationResponse, ApiError> {
        // Oversized fields are refused, as Login refuses them, rather than cut short.
        let claimed = bounded("client_ip", &request.get_ref().client_ip, 100)?;
        let ip = tether_runtime::access::client_ip(&request, &self.service_token, &claimed);
        let r = request.into_inner();
        let user_agent = bounded("user_agent", &r.user_agent, 500)?;
        let row = self.open_invitation(&r.invitation_token).await?;
        let name = match r.display_name.trim() {
            "" => row.display_name.clone(),
            raw => parse_name("display_name", raw).map_err(convert::input)?.as_str().to_owned(),
        };
        let password = parse_password("password", &r.password).map_err(convert::input)?;
        self.check_password("password", &password, &row.email, &name, None).await?;
        let hash = self.hasher.hash(&password).await?;

        let mut write = Write::begin(&self.db).await?;
        // Re-checked under the write lock: two accepts of one link cannot both win.
        let current = store::get(write.conn(), &row.id).await?.ok_or_else(not_found)?;
        if current.status != "pending" {
            return Err(ApiError::new(ErrorReason::InvitationUsed, "this invitation was already accepted"));
        }
        // An administrator may have deactivated or deleted the invitee meanwhile: the link
        // must not bring the account back.
        if !accounts::activate_invited(write.tx(), &row.account_id, &name, &hash).await? {
            return Err(ApiError::new(
                ErrorReason::InvitationRevoked,
                "this invitation is no longer valid; ask for a new one",
            ));
        }
        store::set_status(write.tx(), &row.id, "accepted").await?;
        store::reissue(write.tx(), &row.id, None, 0).await?;
        sessions::bump_generation(write.tx()).await?;
        let account = accounts::get(write.conn(), &row.account_id).await?.ok_or_else(not_found)?;
        let after = store::get(write.conn(), &row.id).await?.ok_or_else(not_found)?;
        write.changes([upserted(&account), invitation_upserted(&after)]);
        write.audit(
            audit(anonymous(&row.email), &ip, "invitation.accept", "invitation", &row.id)
                .tenant(&row.tenant_id)
                .after(invitation_json(&after))
                .build(),
        );
        let revision = write.commit().await?;
        // Login refuses an account whose membership has not reached tenancy-svc yet. The
        // invitation's delivery normally landed long ago, but one accepted right after it was
        // made (or while tenancy was down) must not answer "accepted" and then refuse the login
        // that follows: wait for the delivery as CreateUser does, and have a delivery waiting out
        // a retry delay tried again now (someone is waiting for it).
        // The accept is committed: from here on nothing turns it into an error.
        if !account.provisioned {
            if let Err(e) = intents::retry_now(self.db.pool(), &row.account_id).await {
                tracing::warn!(user_id = %row.account_id, error = %e, "could not hurry the membership delivery");
            }
            self.relay.poke();
        }
        let membership = match self.membership_in_place(&row.account_id).await {
            Ok(token) => token,
            Err(e) => {
                tracing::warn!(user_id = %row.account_id, error = %e, "invitation accepted; membership not confirmed");
                None
            }
        };
        let account = if account.provisioned {
            account
        } else {
            accounts::get(self.db.pool(), &row.account_id).await.ok().flatten().unwrap_or(account)
        };
        let mut outcome = None;
        let mut last = revision;
        if r.start_session {
            if account.provisioned && account.status == Status::Active {
                // The invitation is accepted and used up: a failed first login step must not
                // turn that into an error (a retry would find the link used); the user logs in.
                match self.next_step(&account, &ip, &user_agent, false).await {
                    Ok((o, rev)) => {
                        outcome = Some(o);
                        last = rev;
                    }
                    Err(e) => tracing::warn!(user_id = %account.id, error = %e, "invitation accepted; no session"),
                }
            } else {
                tracing::info!(user_id = %account.id, "invitation accepted; session deferred until the membership is in place");
            }
        }
        Ok(pb::AcceptInvitationResponse {
            user: Some(convert::user(&account)),
            outcome,
            consistency_token: merge([convert::token(last).as_ref(), membership.as_ref()]),
        })
    }
}
