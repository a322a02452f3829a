//! The rules a person defining, changing or handing out a role is held to, on values the caller
//! has looked up (ranks, the pack's owner role). Services pass `i32::MAX` as their rank.

use super::policy::RoleDef;

/// Why a role may not be defined, changed or handed out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RoleRuleError {
    /// The role would rank above the caller's own rank.
    RankAboveOwn,
    /// The role as it stands ranks above the caller: they may not change it at all.
    ChangesRoleAboveOwn,
    /// The role would rank as high as the owner role or higher: only the owner ranks there.
    RankNotBelowOwner,
    /// The owner role is never granted or assigned: ownership is only transferred.
    OwnerRole,
    /// The role is not one that may be handed out.
    NotAssignable,
}

/// A role being defined (`previous: None`) or changed from rank `previous` to `rank`, by a
/// caller of rank `caller_rank`: nobody defines or changes a role ranked above their own, and
/// no role ranks as high as the owner role (`owner_rank`).
pub fn check_role_rank(
    rank: i32,
    previous: Option<i32>,
    caller_rank: i32,
    owner_rank: i32,
) -> Result<(), RoleRuleError> {
    if rank > caller_rank {
        return Err(RoleRuleError::RankAboveOwn);
    }
    if previous.is_some_and(|p| p > caller_rank) {
        return Err(RoleRuleError::ChangesRoleAboveOwn);
    }
    if rank >= owner_rank {
        return Err(RoleRuleError::RankNotBelowOwner);
    }
    Ok(())
}

/// A role being handed out directly (a resource grant): never the owner role (`owner_role`,
/// the pack's), and only an assignable one.
pub fn check_grantable(role: &RoleDef, owner_role: &str) -> Result<(), RoleRuleError> {
    if role.name == owner_role {
        return Err(RoleRuleError::OwnerRole);
    }
    if !role.assignable {
        return Err(RoleRuleError::NotAssignable);
    }
    Ok(())
}

/// Whether a caller of rank `caller_rank` is offered the role as one they may grant: an
/// assignable role ranked no higher than their own.
pub fn offered_to(role: &RoleDef, caller_rank: i32) -> bool {
    role.assignable && role.rank <= caller_rank
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::policy::Scope;

    fn role(name: &str, rank: i32, assignable: bool) -> RoleDef {
        RoleDef {
            name: name.to_owned(),
            display_name: name.to_owned(),
            description: String::new(),
            permissions: 0,
            scope: Scope::OwnTenant,
            rank,
            assignable,
            msp_staff_only: false,
            built_in: false,
            created_at_micros: 0,
            updated_at_micros: 0,
        }
    }

    #[test]
    fn a_new_role_ranks_no_higher_than_its_author() {
        assert_eq!(check_role_rank(50, None, 50, 100), Ok(()));
        assert_eq!(check_role_rank(10, None, 50, 100), Ok(()));
        assert_eq!(check_role_rank(51, None, 50, 100), Err(RoleRuleError::RankAboveOwn));
    }

    #[test]
    fn a_role_ranked_above_the_caller_is_not_theirs_to_change() {
        assert_eq!(check_role_rank(10, Some(50), 50, 100), Ok(()));
        assert_eq!(check_role_rank(10, Some(60), 50, 100), Err(RoleRuleError::ChangesRoleAboveOwn));
        // Raising one's own role above oneself is refused as a rank above one's own.
        assert_eq!(check_role_rank(60, Some(40), 50, 100), Err(RoleRuleError::RankAboveOwn));
    }

    #[test]
    fn no_role_ranks_with_the_owner_even_for_services() {
        assert_eq!(check_role_rank(99, None, i32::MAX, 100), Ok(()));
        assert_eq!(check_role_rank(100, None, i32::MAX, 100), Err(RoleRuleError::RankNotBelowOwner));
        assert_eq!(check_role_rank(150, Some(10), i32::MAX, 100), Err(RoleRuleError::RankNotBelowOwner));
    }

    #[test]
    fn the_owner_role_is_never_granted() {
        assert_eq!(check_grantable(&role("owner", 100, true), "owner"), Err(RoleRuleError::OwnerRole));
        // Checked before assignability: the owner role is refused as such even when not assignable.
        assert_eq!(check_grantable(&role("owner", 100, false), "owner"), Err(RoleRuleError::OwnerRole));
    }

    #[test]
    fn only_assignable_roles_are_granted() {
        assert_eq!(check_grantable(&role("viewer", 10, true), "owner"), Ok(()));
        assert_eq!(check_grantable(&role("system", 10, false), "owner"), Err(RoleRuleError::NotAssignable));
    }

    #[test]
    fn callers_are_offered_assignable_roles_up_to_their_rank() {
        assert!(offered_to(&role("viewer", 10, true), 50));
        assert!(offered_to(&role("admin", 50, true), 50));
        assert!(!offered_to(&role("admin", 51, true), 50));
        assert!(!offered_to(&role("system", 10, false), 50));
    }
}
