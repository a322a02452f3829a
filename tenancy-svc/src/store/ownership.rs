//! The MSP's owner: exactly one, recorded at bootstrap, moved only by transfer.
//!
//! Ownership is a one-row table. Who may transfer to whom, and the roles that follow, are
//! `domain::ownership`'s rules; this module reads the facts, asks them, and moves the roles
//! through the same admin-tenancy hooks as any membership change.

use tether_runtime::db::{Database, now_micros};

use super::{OwnershipRow, StoreResult, Write, memberships, owner, tenants};
use crate::{
    deps::PackInfo,
    domain::{
        HeldMembership, Transferor,
        ownership::{TransferStep, new_owner_role, not_owner, plan_transfer},
    },
    events::{self, AuditContext, json_object},
};

pub async fn current(db: &Database) -> StoreResult<Option<OwnershipRow>> {
    let mut conn = db.pool().acquire().await?;
    owner(&mut conn).await
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
    let target = memberships::direct(write.conn(), new_owner, &admin.id).await?;
    let owner = current.as_ref().map(|o| o.owner_user_id.as_str());
    if plan_transfer(&by, owner, new_owner, target.is_some())? == TransferStep::Unchanged {
        let o = current.ok_or_else(not_owner)?;
        let revision = write.commit_if_changed().await?;
        return Ok((o, None, revision));
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
    let owner_role = new_owner_role(&pack.owner_role, target.as_ref().map(|m| m.role.as_str()))?;
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
