//! The MSP's owner: exactly one, recorded at bootstrap, moved only by transfer.
//!
//! Rules:
//!
//! 1. Ownership is a one-row table.
//! 2. A service caller's `TransferOwnership` is accepted only while there is no owner (identity's
//!    bootstrap); the same owner again is a no-op. Afterwards only the owner transfers.
//! 3. A transfer leaves the former owner with the pack's former-owner role.

use tether_proto::common::v1::ErrorReason;
use tether_runtime::db::{Database, now_micros};

use super::{OwnershipRow, StoreResult, Write, memberships, owner, tenants};
use crate::{
    deps::PackInfo,
    domain::{HeldMembership, Rejection},
    events::{self, AuditContext, json_object},
};

pub async fn current(db: &Database) -> StoreResult<Option<OwnershipRow>> {
    let mut conn = db.pool().acquire().await?;
    owner(&mut conn).await
}

/// Who may transfer: the owner, or (only while there is none) a Tether service bootstrapping.
pub enum Transferor {
    Owner(String),
    Bootstrap,
}

/// Moves ownership to `new_owner`: they get the owner role in the admin tenancy (a direct
/// membership, created at bootstrap), the old owner the former-owner role.
pub async fn transfer(
    db: &Database,
    ctx: &AuditContext,
    by: Transferor,
    new_owner: &str,
    pack: &PackInfo,
) -> StoreResult<(OwnershipRow, Option<HeldMembership>, u64)> {
    let mut write = Write::begin(db).await?;
    let admin = tenants::admin(write.conn()).await?;
    let current = owner(write.conn()).await?;
    let not_owner = || Rejection::new(ErrorReason::NotOwner, "only the owner may transfer ownership");
    match (&by, &current) {
        (Transferor::Bootstrap, Some(o)) if o.owner_user_id == new_owner => {
            let revision = write.commit_if_changed().await?;
            return Ok((o.clone(), None, revision));
        }
        (Transferor::Bootstrap, Some(_)) => return Err(not_owner().into()),
        (Transferor::Owner(user), Some(o)) if &o.owner_user_id == user => {}
        (Transferor::Owner(_), _) => return Err(not_owner().into()),
        (Transferor::Bootstrap, None) => {}
    }
    let role = if pack.owner_role.is_empty() { None } else { Some(pack.owner_role.as_str()) };
    let target = memberships::direct(write.conn(), new_owner, &admin.id).await?;
    let specs_owner_role = role.map(str::to_owned);
    match (&by, &target) {
        (Transferor::Owner(_), None) => {
            return Err(Rejection::new(
                ErrorReason::NotAMember,
                "the new owner must be a direct member of the admin tenancy",
            )
            .on("new_owner_user_id")
            .into());
        }
        (Transferor::Owner(user), Some(_)) if user == new_owner => {
            let o = current.clone().ok_or_else(not_owner)?;
            let revision = write.commit_if_changed().await?;
            return Ok((o, None, revision));
        }
        _ => {}
    }
    let now = now_micros();
    let previous = current.as_ref().map(|o| o.owner_user_id.clone()).unwrap_or_default();
    sqlx::query("DELETE FROM ownership WHERE id = 1").execute(write.conn()).await?;
    sqlx::query("INSERT INTO ownership (id, owner_user_id, since, previous_owner_user_id) VALUES (1, $1, $2, $3)")
        .bind(new_owner.to_owned())
        .bind(now)
        .bind(previous.clone())
        .execute(write.conn())
        .await?;
    let row = super::OwnershipRow {
        owner_user_id: new_owner.to_owned(),
        since: now,
        previous_owner_user_id: previous.clone(),
    };
    write.change(events::ownership_transferred(&row));
    // The roles move inside this transaction, through the same admin-tenancy hooks as any
    // membership change, so shadow memberships follow.
    let owner_role = match (specs_owner_role, &target) {
        (Some(role), _) => role,
        (None, Some(m)) => m.role.clone(),
        (None, None) => {
            return Err(Rejection::new(ErrorReason::RoleNotFound, "the active role pack defines no owner role").into());
        }
    };
    memberships::set_admin_role(&mut write, &admin.id, new_owner, &owner_role).await?;
    let mut previous_membership = None;
    if !previous.is_empty() && !pack.former_owner_role.is_empty() {
        memberships::set_admin_role(&mut write, &admin.id, &previous, &pack.former_owner_role).await?;
        previous_membership = memberships::direct_membership(write.conn(), &previous, &admin.id).await?;
    }
    let mut audit = ctx.event("ownership.transfer", "tenant", &admin.id, &admin.id);
    audit.before_json = json_object(&[("owner_user_id", &previous)]);
    audit.after_json = json_object(&[("owner_user_id", new_owner)]);
    write.audit(audit);
    let revision = write.commit_if_changed().await?;
    Ok((row, previous_membership, revision))
}
