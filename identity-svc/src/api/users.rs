//! Accounts: create now, read, list, edit, deactivate, reactivate, delete; and the Watch
//! snapshot.
//!
//! Rules for removing people:
//!
//! 1. Deactivation is the emergency stop: it works at once, for anyone the caller may manage, even
//!    a tenant's last administrator and while tenancy-svc is down.
//! 2. Deletion is irreversible, so identity first asks authz-svc's `CheckRoleGrant` to judge the
//!    removal of each role the client user holds (roles from tenancy-svc): a tenant's last
//!    administrator cannot be deleted (`LAST_ADMIN`), nor can someone the caller could not have
//!    appointed. Without tenancy's answer a deletion fails closed.
//! 3. MSP staff are covered by the owner guard instead: the MSP owner (tenancy's `GetOwner`) is
//!    neither deactivated nor deleted (`OWNER_NOT_REMOVABLE`) until ownership is transferred.
//! 4. Every write takes the next revision, records its `IdentityChange`s and an `AuditEvent`
//!    (before/after JSON without secrets) in the same transaction, and returns the revision;
//!    `Watch` serves them (snapshot: live users and pending invitations).

use tether_proto::{
    common::v1::{ConsistencyToken, ErrorReason, RevisionSource},
    identity::v1 as pb,
};
use tether_runtime::{
    ApiError,
    access::{Caller, RoleGrant, RoleGrantDecision},
    db::Database,
    events::{
        consistency::{self, merge},
        current_revision,
    },
};
use tonic::Request;

use super::{
    Identity, PERM_MANAGE, PERM_VIEW,
    convert::{self, session_revoked, upserted},
};
use crate::{
    domain::{
        account::{self, NewUser, Status, UserCursor, UserEdit, UserQuery, parse_id},
        policy::PersonalInfo,
    },
    events::{Write, audit},
    store::{
        accounts::{self as store, AccountRow},
        intents, sessions,
    },
};

/// authz-svc's refusal of a role change, as the caller hears it (a refusal without a reason
/// is PERMISSION_DENIED).
fn refused(decision: RoleGrantDecision) -> ApiError {
    let reason = match decision.denial_reason {
        ErrorReason::Unspecified => ErrorReason::PermissionDenied,
        r => r,
    };
    ApiError::new(reason, decision.summary)
}

/// The Watch snapshot: every live user, read with the revision in one consistent view.
pub async fn snapshot(db: Database) -> Result<(u64, Vec<pb::IdentityChange>), ApiError> {
    let mut tx = db.begin_snapshot().await?;
    let revision = current_revision(&mut *tx).await?;
    let rows = store::all_live(&mut tx).await?;
    let pending = crate::store::invitations::all_pending(&mut tx).await?;
    tx.commit().await?;
    let mut items: Vec<pb::IdentityChange> = rows.iter().map(upserted).collect();
    items.extend(pending.iter().map(convert::invitation_upserted));
    Ok((revision, items))
}

fn not_found() -> ApiError {
    ApiError::new(ErrorReason::UserNotFound, "no such user")
}

impl Identity {
    pub async fn load(&self, id: &str) -> Result<AccountRow, ApiError> {
        store::get(self.db.pool(), id).await?.ok_or_else(not_found)
    }

    /// Refuses a password that breaks the policy (reuse included when `account` is known).
    pub async fn check_password(
        &self,
        field: &str,
        password: &str,
        email: &str,
        name: &str,
        account: Option<&str>,
    ) -> Result<(), ApiError> {
        let policy = &self.config.password_policy;
        let mut rules = policy.violations(password, &PersonalInfo { email, display_name: name });
        if let Some(id) = account
            && policy.history_count > 0
        {
            let recent = store::recent_hashes(self.db.pool(), id, policy.history_count).await?;
            if self.hasher.matches_any(password, recent).await? {
                rules.push(crate::domain::policy::PasswordRule::Reused { last: policy.history_count });
            }
        }
        if rules.is_empty() { Ok(()) } else { Err(convert::password_rules(field, &rules)) }
    }

    pub async fn create_user(
        &self,
        request: Request<pb::CreateUserRequest>,
    ) -> Result<pb::CreateUserResponse, ApiError> {
        let caller = self.caller(&request).await?;
        let mut r = request.into_inner();
        let fresh = r.at_least_as_fresh.take();
        let new = NewUser::try_from(r).map_err(convert::input)?;
        // A retry is still a CreateUser: the same checks first.
        let tenant = self.tenant_of_new(&caller, new.is_msp_staff, new.tenant_id, &new.role, fresh.as_ref()).await?;
        if let Some(done) = self.created_before(&caller, new.request_id).await? {
            return Ok(done);
        }
        self.check_password("password", &new.password, new.email.as_str(), new.display_name.as_str(), None).await?;
        self.ensure_email_free(&new.email.normalized(), None).await?;
        let hash = self.hasher.hash(&new.password).await?;

        let mut write = Write::begin(&self.db).await?;
        let primary = (!new.is_msp_staff).then_some(tenant.as_str());
        let id = match store::insert_new(write.tx(), &new, primary, &hash).await {
            Ok(id) => id,
            Err(e) if store::is_unique_violation(&e) => {
                drop(write);
                // A concurrent call with the same request_id won the race: answer as its retry.
                if let Some(done) = self.created_before(&caller, new.request_id).await? {
                    return Ok(done);
                }
                return Err(ApiError::new(ErrorReason::EmailTaken, "the email is taken"));
            }
            Err(e) => return Err(convert::db(e)),
        };
        intents::insert(write.tx(), &id, intents::Op::Add, &tenant, &new.role).await?;
        let row = store::get(write.conn(), &id).await?.ok_or_else(not_found)?;
        write.change(upserted(&row));
        write.audit(
            audit(caller.audit_actor(), &caller.client_ip, "user.create", "user", &id)
                .tenant(&tenant)
                .after(convert::user_json(&row))
                .metadata(serde_json::json!({ "role": new.role, "tenant_id": tenant }))
                .build(),
        );
        let revision = write.commit().await?;
        self.relay.poke();
        let membership = self.membership_in_place(&id).await?;
        Ok(pb::CreateUserResponse {
            user: Some(convert::user(&row)),
            consistency_token: merge([convert::token(revision).as_ref(), membership.as_ref()]),
        })
    }

    /// After a write that queued a membership intent: waits (up to
    /// `TETHER_IDENTITY_PROVISION_WAIT_MS`) for the relay to deliver the account's intents to
    /// tenancy-svc, so the usual case answers with the account loginable and the membership in
    /// place. Returns tenancy's revision of the delivery as a consistency token (the caller's
    /// next check must see the membership too), `None` while the relay is still trying; the
    /// reason if tenancy refused the membership for good (the account was removed again).
    pub(super) async fn membership_in_place(&self, account_id: &str) -> Result<Option<ConsistencyToken>, ApiError> {
        if !self.relay.wait_provisioned(&self.db, account_id, self.config.relay.wait).await {
            tracing::warn!(user_id = %account_id, "membership not yet acknowledged by tenancy-svc; the relay keeps trying");
            return Ok(None);
        }
        if let Some(reason) = intents::refusal_for(self.db.pool(), account_id).await? {
            let reason = tether_runtime::error::reason_named(&reason).unwrap_or(ErrorReason::Unavailable);
            return Err(ApiError::new(reason, "tenancy-svc refused the membership; the user was not created"));
        }
        let revision = intents::tenancy_revision_for(self.db.pool(), account_id).await?;
        Ok((revision > 0).then(|| consistency::token(RevisionSource::Tenancy, revision)))
    }

    /// The answer to a retried CreateUser: the account an earlier call with this request_id
    /// made, if the caller may see it. A request_id someone else used for an account the caller
    /// cannot see is refused without saying whose (ALREADY_EXISTS, DUPLICATE_ENTRY).
    async fn created_before(
        &self,
        caller: &Caller,
        request_id: Option<uuid::Uuid>,
    ) -> Result<Option<pb::CreateUserResponse>, ApiError> {
        let Some(rid) = request_id else { return Ok(None) };
        let Some(existing) = store::get_by_request_id(self.db.pool(), &rid.to_string()).await? else {
            return Ok(None);
        };
        if let Err(e) = self.require_on(caller, PERM_VIEW, &existing).await {
            if e.code() != tonic::Code::NotFound {
                return Err(e);
            }
            return Err(ApiError::new(ErrorReason::RequestIdReused, "the request_id was already used")
                .with_metadata("field", "request_id"));
        }
        let revision = current_revision(self.db.pool()).await?;
        let membership = self.membership_in_place(&existing.id).await?;
        Ok(Some(pb::CreateUserResponse {
            user: Some(convert::user(&existing)),
            consistency_token: merge([convert::token(revision).as_ref(), membership.as_ref()]),
        }))
    }

    /// The tenant of a new user's first membership, after checking the caller may put them
    /// there with that role.
    pub(super) async fn tenant_of_new(
        &self,
        caller: &Caller,
        is_msp_staff: bool,
        tenant_id: Option<uuid::Uuid>,
        role: &str,
        at_least_as_fresh: Option<&ConsistencyToken>,
    ) -> Result<String, ApiError> {
        let tenant = if is_msp_staff {
            let admin = self.admin.id().await?;
            match tenant_id {
                Some(t) if t.to_string() != admin => {
                    return Err(ApiError::new(ErrorReason::ValueOutOfRange, "MSP staff belong to the admin tenancy")
                        .with_metadata("field", "tenant_id"));
                }
                _ => admin,
            }
        } else {
            tenant_id.map(|t| t.to_string()).unwrap_or_default()
        };
        if let Some(p) = caller.user() {
            if is_msp_staff && !p.is_msp_staff {
                return Err(ApiError::new(ErrorReason::MspStaffRequired, "only MSP staff create MSP staff"));
            }
            // A client user adds users to their home tenant or its departments only; any other
            // tenant is unknown to them.
            self.require_tenant_seen(caller, &tenant).await?;
            // authz-svc decides who may add whom: `users.manage`, or the pack's invite permission
            // (e.g. the "platform" pack's MANAGER invites), within the rank and tenant rules.
            let decision = self
                .authorizer
                .check_role_grant(&RoleGrant {
                    actor_user_id: p.user_id.clone(),
                    target_user_id: String::new(),
                    target_is_msp_staff: is_msp_staff,
                    tenant_id: tenant.clone(),
                    role: role.to_owned(),
                    previous_role: String::new(),
                    at_least_as_fresh: at_least_as_fresh.cloned(),
                })
                .await?;
            if !decision.allowed {
                // Someone who may not manage users here hears it the way every call says it.
                if matches!(decision.denial_reason, ErrorReason::PermissionDenied | ErrorReason::OutsideTenant) {
                    self.require_in_at(caller, PERM_MANAGE, &tenant, at_least_as_fresh).await?;
                }
                return Err(refused(decision));
            }
        }
        Ok(tenant)
    }

    /// EMAIL_TAKEN, or INVITATION_PENDING when the email belongs to a pending invitee.
    pub(super) async fn ensure_email_free(&self, normalized: &str, except: Option<&str>) -> Result<(), ApiError> {
        match store::get_by_email(self.db.pool(), normalized).await? {
            Some(a) if Some(a.id.as_str()) == except => Ok(()),
            Some(a) if a.status == Status::Pending => {
                Err(ApiError::new(ErrorReason::InvitationPending, "an invitation for this email is pending"))
            }
            Some(_) => Err(ApiError::new(ErrorReason::EmailTaken, "the email is taken")),
            None => Ok(()),
        }
    }

    pub async fn get_user(&self, request: Request<pb::GetUserRequest>) -> Result<pb::GetUserResponse, ApiError> {
        let caller = self.caller(&request).await?;
        let id = match (request.get_ref().user_id.trim(), caller.user()) {
            ("", Some(p)) => p.user_id.clone(),
            (raw, _) => parse_id("user_id", raw).map_err(convert::input)?.to_string(),
        };
        let row = self.load(&id).await?;
        if caller.user().is_none_or(|p| p.user_id != id) {
            self.require_on(&caller, PERM_VIEW, &row).await?;
        }
        Ok(pb::GetUserResponse { user: Some(convert::user(&row)) })
    }

    pub async fn batch_get_users(
        &self,
        request: Request<pb::BatchGetUsersRequest>,
    ) -> Result<pb::BatchGetUsersResponse, ApiError> {
        let caller = self.caller(&request).await?;
        let ids = &request.get_ref().user_ids;
        if ids.len() > 500 {
            return Err(ApiError::new(ErrorReason::BatchTooLarge, "at most 500 ids").with_metadata("limit", "500"));
        }
        let mut users = Vec::with_capacity(ids.len());
        let mut homes = super::Homes::new();
        for raw in ids {
            let id = parse_id("user_ids", raw).map_err(convert::input)?.to_string();
            let Some(row) = store::get(self.db.pool(), &id).await? else { continue };
            let own = caller.user().is_some_and(|p| p.user_id == id);
            if own || self.require_on_each(&caller, PERM_VIEW, &row, &mut homes).await.is_ok() {
                users.push(convert::user(&row));
            }
        }
        Ok(pb::BatchGetUsersResponse { users })
    }

    pub async fn list_users(&self, request: Request<pb::ListUsersRequest>) -> Result<pb::ListUsersResponse, ApiError> {
        let caller = self.caller(&request).await?;
        let mut query = UserQuery::try_from(request.get_ref()).map_err(convert::input)?;
        if let Some(p) = caller.user() {
            if p.is_msp_staff {
                let scope = match query.tenant_id {
                    Some(t) => t.to_string(),
                    None => self.admin.id().await?,
                };
                self.require_in(&caller, PERM_VIEW, &scope).await?;
            } else {
                // Client users see their own tenant's client users only.
                let own = p.primary_tenant_id.clone();
                if query.tenant_id.is_some_and(|t| t.to_string() != own) {
                    return Err(ApiError::new(ErrorReason::OutsideTenant, "not your tenant"));
                }
                self.require_in(&caller, PERM_VIEW, &own).await?;
                query.tenant_id = uuid::Uuid::parse_str(&own).ok();
                query.is_msp_staff = Some(false);
                if query.tenant_id.is_none() {
                    return Ok(pb::ListUsersResponse::default());
                }
            }
        }
        let mut rows = store::list(self.db.pool(), &query).await?;
        let more = rows.len() > query.page_size;
        rows.truncate(query.page_size);
        Ok(pb::ListUsersResponse {
            users: rows.iter().map(convert::user).collect(),
            next_page_token: rows
                .last()
                .filter(|_| more)
                .and_then(|u| UserCursor::after(query.sort, &u.display_name, u.last_login_at, u.created_at, &u.id))
                .map(|c| account::page_token(&query.filters, &c.token()))
                .unwrap_or_default(),
        })
    }

    pub async fn update_user(
        &self,
        request: Request<pb::UpdateUserRequest>,
    ) -> Result<pb::UpdateUserResponse, ApiError> {
        let caller = self.caller(&request).await?;
        let id = parse_id("user_id", &request.get_ref().user_id).map_err(convert::input)?.to_string();
        let edit = UserEdit::try_from(request.get_ref()).map_err(convert::input)?;
        let before = self.load(&id).await?;
        if before.status == Status::Deleted {
            return Err(not_found());
        }
        let own = caller.user().is_some_and(|p| p.user_id == id);
        if !(own && edit.is_self_service()) {
            self.require_on(&caller, PERM_MANAGE, &before).await?;
        }
        if let Some(email) = &edit.email {
            self.ensure_email_free(&email.normalized(), Some(&id)).await?;
        }
        let mut write = Write::begin(&self.db).await?;
        match store::apply_edit(write.tx(), &id, &edit).await {
            Ok(()) => {}
            Err(e) if store::is_unique_violation(&e) => {
                return Err(ApiError::new(ErrorReason::EmailTaken, "the email is taken"));
            }
            Err(e) => return Err(convert::db(e)),
        }
        if edit.email.is_some() {
            // Links sent to the old address must not work any more.
            crate::store::resets::void_all(write.tx(), &id).await?;
        }
        // Name and email travel in cached principals.
        sessions::bump_generation(write.tx()).await?;
        let after = store::get(write.conn(), &id).await?.ok_or_else(not_found)?;
        write.change(upserted(&after));
        write.audit(
            audit(caller.audit_actor(), &caller.client_ip, "user.update", "user", &id)
                .tenant(after.primary_tenant_id.as_deref().unwrap_or_default())
                .before(convert::user_json(&before))
                .after(convert::user_json(&after))
                .build(),
        );
        let revision = write.commit().await?;
        self.sessions_changed().await;
        Ok(pb::UpdateUserResponse { user: Some(convert::user(&after)), consistency_token: convert::token(revision) })
    }

    /// Checks shared by deactivate and delete: a user may not do it to themself, and the MSP
    /// owner must hand ownership over first. Who owns the MSP is tenancy-svc's to say (ownership
    /// moves with TransferOwnership), so it is asked, for MSP staff only (nobody else can own);
    /// while tenancy has no owner yet, the bootstrap owner (its transfer still pending) is it.
    /// If tenancy cannot answer, this fails closed (UNAVAILABLE).
    async fn check_removable(&self, caller: &Caller, target: &AccountRow) -> Result<(), ApiError> {
        if caller.user().is_some_and(|p| p.user_id == target.id) {
            return Err(ApiError::new(ErrorReason::SelfActionForbidden, "not on your own account"));
        }
        if !target.is_msp_staff {
            return Ok(());
        }
        let owner = match self.ask_tenancy("who owns the MSP", self.tenancy.owner_id()).await? {
            Some(owner) => Some(owner),
            None => store::bootstrap_owner_id(&self.db).await?,
        };
        if owner.as_deref() == Some(target.id.as_str()) {
            return Err(ApiError::new(ErrorReason::OwnerNotRemovable, "the MSP owner must transfer ownership first"));
        }
        Ok(())
    }

    /// A client user's deletion takes away each role they hold: authz-svc judges each as a
    /// removal (LAST_ADMIN for a tenant's last administrator, ROLE_ABOVE_OWN for someone the
    /// caller could not have appointed). Fails closed if tenancy cannot list the roles.
    /// Deactivation is not judged so: it must always work at once, as the emergency stop, even
    /// for a last administrator and while tenancy is down. Services acting on their own account
    /// are not people and are not judged.
    async fn check_roles_removable(&self, caller: &Caller, target: &AccountRow) -> Result<(), ApiError> {
        let Some(p) = caller.user() else { return Ok(()) };
        let held = self.ask_tenancy("the user's roles", self.tenancy.user_roles(&target.id)).await?;
        for h in held {
            let decision = self
                .authorizer
                .check_role_grant(&RoleGrant {
                    actor_user_id: p.user_id.clone(),
                    target_user_id: target.id.clone(),
                    target_is_msp_staff: false,
                    tenant_id: h.tenant_id.clone(),
                    role: String::new(),
                    previous_role: h.role.clone(),
                    at_least_as_fresh: None,
                })
                .await?;
            if !decision.allowed {
                return Err(refused(decision));
            }
        }
        Ok(())
    }

    /// Sets a status, ends every session if it leaves `active`, and records it all.
    async fn change_status(
        &self,
        caller: &Caller,
        id: &str,
        to: Status,
        action: &str,
        note: &str,
    ) -> Result<(AccountRow, u64), ApiError> {
        let before = self.load(id).await?;
        if before.status == Status::Deleted {
            return Err(not_found());
        }
        self.require_on(caller, PERM_MANAGE, &before).await?;
        if to == Status::Suspended {
            self.check_removable(caller, &before).await?;
        }
        if before.status == to || (to == Status::Active && before.status == Status::Pending) {
            let revision = current_revision(self.db.pool()).await?;
            return Ok((before, revision));
        }
        let mut write = Write::begin(&self.db).await?;
        store::set_status(write.tx(), id, to).await?;
        let ended = sessions::revoke_all(write.tx(), id, None).await?;
        let after = store::get(write.conn(), id).await?.ok_or_else(not_found)?;
        write.change(upserted(&after));
        write.changes(ended.iter().map(|s| session_revoked(s, id)));
        let mut event = audit(caller.audit_actor(), &caller.client_ip, action, "user", id)
            .tenant(after.primary_tenant_id.as_deref().unwrap_or_default())
            .before(convert::user_json(&before))
            .after(convert::user_json(&after));
        if !note.is_empty() {
            event = event.metadata(serde_json::json!({ "reason": note, "sessions_ended": ended.len() }));
        }
        write.audit(event.build());
        let revision = write.commit().await?;
        self.sessions_changed().await;
        Ok((after, revision))
    }

    pub async fn deactivate_user(
        &self,
        request: Request<pb::DeactivateUserRequest>,
    ) -> Result<pb::DeactivateUserResponse, ApiError> {
        let caller = self.caller(&request).await?;
        let r = request.get_ref();
        let id = parse_id("user_id", &r.user_id).map_err(convert::input)?.to_string();
        let note = account::parse_text("reason", &r.reason, 500).map_err(convert::input)?.unwrap_or_default();
        let (user, revision) = self.change_status(&caller, &id, Status::Suspended, "user.deactivate", &note).await?;
        Ok(pb::DeactivateUserResponse { user: Some(convert::user(&user)), consistency_token: convert::token(revision) })
    }

    pub async fn reactivate_user(
        &self,
        request: Request<pb::ReactivateUserRequest>,
    ) -> Result<pb::ReactivateUserResponse, ApiError> {
        let caller = self.caller(&request).await?;
        let id = parse_id("user_id", &request.get_ref().user_id).map_err(convert::input)?.to_string();
        let (user, revision) = self.change_status(&caller, &id, Status::Active, "user.reactivate", "").await?;
        Ok(pb::ReactivateUserResponse { user: Some(convert::user(&user)), consistency_token: convert::token(revision) })
    }

    pub async fn delete_user(
        &self,
        request: Request<pb::DeleteUserRequest>,
    ) -> Result<pb::DeleteUserResponse, ApiError> {
        let caller = self.caller(&request).await?;
        let id = parse_id("user_id", &request.get_ref().user_id).map_err(convert::input)?.to_string();
        let before = self.load(&id).await?;
        if before.status == Status::Deleted {
            return Err(not_found());
        }
        self.require_on(&caller, PERM_MANAGE, &before).await?;
        self.check_removable(&caller, &before).await?;
        if !before.is_msp_staff {
            self.check_roles_removable(&caller, &before).await?;
        }
        let mut write = Write::begin(&self.db).await?;
        let ended = sessions::revoke_all(write.tx(), &id, None).await?;
        let revoked = crate::store::invitations::revoke_pending_of(write.tx(), &id).await?;
        store::tombstone(write.tx(), &id).await?;
        intents::insert(write.tx(), &id, intents::Op::Clear, "", "").await?;
        let after = store::get(write.conn(), &id).await?.ok_or_else(not_found)?;
        write.changes(ended.iter().map(|s| session_revoked(s, &id)));
        write.changes(revoked.iter().map(convert::invitation_upserted));
        write.change(pb::IdentityChange {
            change: Some(pb::identity_change::Change::UserDeleted(pb::UserDeleted {
                user_id: id.clone(),
                display_name: after.display_name.clone(),
            })),
            ..Default::default()
        });
        write.audit(
            audit(caller.audit_actor(), &caller.client_ip, "user.delete", "user", &id)
                .tenant(before.primary_tenant_id.as_deref().unwrap_or_default())
                .before(convert::user_json(&before))
                .build(),
        );
        let revision = write.commit().await?;
        self.sessions_changed().await;
        self.relay.poke();
        Ok(pb::DeleteUserResponse { user: Some(convert::user(&after)), consistency_token: convert::token(revision) })
    }
}
