//! The owner rules.
//!
//! 1. The owner role is never granted (AddMembership, SetUserMemberships, ChangeMembershipRole):
//!    ownership is transferred (`ensure_grantable`).
//! 2. The owner is never removed from or demoted in the admin tenancy (`ensure_owner_kept`).
//! 3. A service caller's `TransferOwnership` is accepted only while there is no owner (identity's
//!    bootstrap); the same owner again is a no-op. Afterwards only the owner transfers, to a direct
//!    member of the admin tenancy; to themselves is a no-op (`plan_transfer`).
//! 4. The new owner gets the pack's owner role; a pack without one leaves them the role they hold
//!    (`new_owner_role`). The former owner gets the pack's former-owner role.

use tether_proto::common::v1::ErrorReason;

use super::{Rejection, TenantKind};

/// Who may transfer: the owner, or (only while there is none) a Tether service bootstrapping.
pub enum Transferor {
    Owner(String),
    Bootstrap,
}

pub fn owner_role_not_assignable() -> Rejection {
    Rejection::new(ErrorReason::OwnerRoleNotAssignable, "the owner role is never granted; ownership is transferred")
        .on("role")
}

fn owner_not_removable() -> Rejection {
    Rejection::new(
        ErrorReason::OwnerNotRemovable,
        "the MSP owner cannot be removed from or demoted in the admin tenancy; transfer ownership first",
    )
}

pub fn not_owner() -> Rejection {
    Rejection::new(ErrorReason::NotOwner, "only the owner may transfer ownership")
}

/// `role` may be given: it is not the pack's owner role (`owner_role` empty: the pack has none).
pub fn ensure_grantable(role: &str, owner_role: &str) -> Result<(), Rejection> {
    if !owner_role.is_empty() && role == owner_role {
        return Err(owner_role_not_assignable());
    }
    Ok(())
}

/// A change of one direct membership (`role_after` `None`: removal) keeps the owner's role in
/// the admin tenancy.
pub fn ensure_owner_kept(
    is_owner: bool,
    tenant: TenantKind,
    role_before: &str,
    role_after: Option<&str>,
) -> Result<(), Rejection> {
    if is_owner && tenant == TenantKind::Admin && role_after != Some(role_before) {
        return Err(owner_not_removable());
    }
    Ok(())
}

/// What a transfer does once accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransferStep {
    /// Nothing: the new owner already is the owner.
    Unchanged,
    Transfer,
}

/// Whether `by` may move ownership from `owner` to `new_owner`, who is
/// (`new_owner_is_admin_member`) or is not a direct member of the admin tenancy.
pub fn plan_transfer(
    by: &Transferor,
    owner: Option<&str>,
    new_owner: &str,
    new_owner_is_admin_member: bool,
) -> Result<TransferStep, Rejection> {
    match (by, owner) {
        (Transferor::Bootstrap, Some(o)) if o == new_owner => return Ok(TransferStep::Unchanged),
        (Transferor::Bootstrap, Some(_)) => return Err(not_owner()),
        (Transferor::Owner(user), Some(o)) if o == user => {}
        (Transferor::Owner(_), _) => return Err(not_owner()),
        (Transferor::Bootstrap, None) => {}
    }
    match by {
        Transferor::Owner(_) if !new_owner_is_admin_member => {
            Err(Rejection::new(ErrorReason::NotAMember, "the new owner must be a direct member of the admin tenancy")
                .on("new_owner_user_id"))
        }
        Transferor::Owner(user) if user == new_owner => Ok(TransferStep::Unchanged),
        _ => Ok(TransferStep::Transfer),
    }
}

/// The new owner's role in the admin tenancy: the pack's owner role, else the role they hold.
pub fn new_owner_role(owner_role: &str, held_role: Option<&str>) -> Result<String, Rejection> {
    match (owner_role, held_role) {
        ("", Some(held)) => Ok(held.to_owned()),
        ("", None) => Err(Rejection::new(ErrorReason::RoleNotFound, "the active role pack defines no owner role")),
        (role, _) => Ok(role.to_owned()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_owner_role_is_never_granted() {
        assert_eq!(ensure_grantable("owner", "owner").unwrap_err().reason, ErrorReason::OwnerRoleNotAssignable);
        assert!(ensure_grantable("admin", "owner").is_ok());
        assert!(ensure_grantable("owner", "").is_ok());
    }

    #[test]
    fn the_owner_stays_in_the_admin_tenancy() {
        let refused = |r: Result<(), Rejection>| r.unwrap_err().reason;
        assert_eq!(refused(ensure_owner_kept(true, TenantKind::Admin, "owner", None)), ErrorReason::OwnerNotRemovable);
        assert_eq!(
            refused(ensure_owner_kept(true, TenantKind::Admin, "owner", Some("admin"))),
            ErrorReason::OwnerNotRemovable
        );
        assert!(ensure_owner_kept(true, TenantKind::Admin, "owner", Some("owner")).is_ok());
        assert!(ensure_owner_kept(true, TenantKind::Client, "owner", None).is_ok());
        assert!(ensure_owner_kept(false, TenantKind::Admin, "admin", None).is_ok());
    }

    #[test]
    fn only_the_owner_or_a_first_bootstrap_transfers() {
        let owner = Transferor::Owner("a".into());
        assert_eq!(plan_transfer(&Transferor::Bootstrap, None, "a", false), Ok(TransferStep::Transfer));
        assert_eq!(plan_transfer(&Transferor::Bootstrap, Some("a"), "a", true), Ok(TransferStep::Unchanged));
        assert_eq!(
            plan_transfer(&Transferor::Bootstrap, Some("a"), "b", true).unwrap_err().reason,
            ErrorReason::NotOwner
        );
        assert_eq!(plan_transfer(&owner, Some("a"), "b", true), Ok(TransferStep::Transfer));
        assert_eq!(plan_transfer(&owner, Some("a"), "a", true), Ok(TransferStep::Unchanged));
        assert_eq!(plan_transfer(&owner, Some("z"), "b", true).unwrap_err().reason, ErrorReason::NotOwner);
        assert_eq!(plan_transfer(&owner, None, "b", true).unwrap_err().reason, ErrorReason::NotOwner);
        let err = plan_transfer(&owner, Some("a"), "b", false).unwrap_err();
        assert_eq!((err.reason, err.field.as_deref()), (ErrorReason::NotAMember, Some("new_owner_user_id")));
    }

    #[test]
    fn the_new_owner_gets_the_owner_role() {
        assert_eq!(new_owner_role("owner", Some("admin")).unwrap(), "owner");
        assert_eq!(new_owner_role("", Some("admin")).unwrap(), "admin");
        assert_eq!(new_owner_role("", None).unwrap_err().reason, ErrorReason::RoleNotFound);
    }
}
