//! The tree and membership rules.
//!
//! 1. A tenant under the admin tenancy is a client; under a client or department, a department.
//! 2. A tenant sits at most `TETHER_TENANCY_MAX_DEPTH` levels (default 6) below the admin tenancy
//!    (`TREE_TOO_DEEP`).
//! 3. Only departments move, under a client or a department, never under themselves or their
//!    descendants (`TREE_CYCLE`), and the moved subtree must still fit the depth bound.
//! 4. Last administrator: a change that takes a tenant's administrators from some to none is
//!    refused (`LAST_ADMIN`).
//! 5. Kinds rank direct, then assigned, then shadow: the strongest shows where a user holds several,
//!    and decides where the default tenant moves.

use tether_proto::common::v1::ErrorReason;

use super::{MembershipKind, Rejection, TenantKind};

/// What a new tenant under `parent` is: a client under the admin tenancy, else a department.
pub fn child_kind(parent: TenantKind) -> TenantKind {
    match parent {
        TenantKind::Admin => TenantKind::Client,
        TenantKind::Client | TenantKind::Department => TenantKind::Department,
    }
}

/// A tenant may sit at most `max_depth` levels below the admin tenancy.
pub fn ensure_depth(depth: usize, max_depth: usize) -> Result<(), Rejection> {
    if depth > max_depth {
        return Err(Rejection::new(
            ErrorReason::TreeTooDeep,
            format!("the tree may be at most {max_depth} levels deep; this would make {depth}"),
        ));
    }
    Ok(())
}

/// A tenant about to move, seen from the rules: its kind and id, plus the new parent's kind,
/// depth and ancestor chain (ids from the root down, the parent included), and how many levels
/// the moved subtree spans below the moved tenant.
pub struct MovePlan<'a> {
    pub moving_id: &'a str,
    pub moving_kind: TenantKind,
    pub parent_kind: TenantKind,
    pub parent_depth: usize,
    pub parent_chain: &'a [String],
    pub subtree_height: usize,
}

/// Only departments move, under a client or a department, never under themselves, and the
/// moved subtree must still fit the depth bound.
pub fn ensure_movable(plan: &MovePlan<'_>, max_depth: usize) -> Result<(), Rejection> {
    match plan.moving_kind {
        TenantKind::Admin => {
            return Err(Rejection::new(ErrorReason::AdminTenancyImmutable, "the admin tenancy cannot be moved"));
        }
        TenantKind::Client => {
            return Err(Rejection::new(ErrorReason::NotADepartment, "only departments can be moved"));
        }
        TenantKind::Department => {}
    }
    if plan.parent_kind == TenantKind::Admin {
        return Err(Rejection::new(ErrorReason::InvalidParent, "a department's parent is a client or a department")
            .on("new_parent_id"));
    }
    if plan.parent_chain.iter().any(|id| id == plan.moving_id) {
        return Err(Rejection::new(ErrorReason::TreeCycle, "a tenant cannot move under itself or its descendants"));
    }
    ensure_depth(plan.parent_depth + 1 + plan.subtree_height, max_depth)
}

/// The last-administrator rule: a change that takes a tenant's administrators from some to
/// none is refused. `other_admins` counts the tenant's administrators besides this member.
pub fn ensure_admin_kept(was_admin: bool, stays_admin: bool, other_admins: usize) -> Result<(), Rejection> {
    if was_admin && !stays_admin && other_admins == 0 {
        return Err(Rejection::new(
            ErrorReason::LastAdmin,
            "this is the tenant's last administrator; add another administrator first (two are recommended)",
        ));
    }
    Ok(())
}

/// Lower is stronger: a tenant where a user holds several kinds shows the strongest.
pub fn strongest_kind_rank(kind: MembershipKind) -> u8 {
    match kind {
        MembershipKind::Direct => 0,
        MembershipKind::Assigned => 1,
        MembershipKind::Shadow => 2,
    }
}

/// A slug derived from a display name: lower-case ASCII letters and digits joined by single
/// hyphens, starting with a letter, at most 50 characters (room for a `-N` suffix).
pub fn slug_from_name(name: &str) -> String {
    let mut slug = String::new();
    for c in name.chars().flat_map(char::to_lowercase) {
        if c.is_ascii_lowercase() || c.is_ascii_digit() {
            slug.push(c);
        } else if !slug.is_empty() && !slug.ends_with('-') {
            slug.push('-');
        }
    }
    if !slug.starts_with(|c: char| c.is_ascii_lowercase()) {
        slug.insert_str(0, "t-");
    }
    slug.truncate(50);
    while slug.ends_with('-') {
        slug.pop();
    }
    if slug.len() < 2 {
        slug = "tenant".to_owned();
    }
    slug
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::TenantSlug;

    #[test]
    fn clients_go_under_the_admin_tenancy_and_departments_below() {
        assert_eq!(child_kind(TenantKind::Admin), TenantKind::Client);
        assert_eq!(child_kind(TenantKind::Client), TenantKind::Department);
        assert_eq!(child_kind(TenantKind::Department), TenantKind::Department);
    }

    #[test]
    fn depth_is_bounded() {
        assert!(ensure_depth(6, 6).is_ok());
        assert_eq!(ensure_depth(7, 6).unwrap_err().reason, ErrorReason::TreeTooDeep);
    }

    #[test]
    fn moves_refuse_cycles_and_wrong_kinds() {
        let chain = vec!["root".to_owned(), "client".to_owned(), "dept".to_owned(), "sub".to_owned()];
        let plan = |kind, parent_kind, chain: &'static [String]| MovePlan {
            moving_id: "dept",
            moving_kind: kind,
            parent_kind,
            parent_depth: chain.len() - 1,
            parent_chain: chain,
            subtree_height: 1,
        };
        let chain: &'static [String] = Box::leak(chain.into_boxed_slice());
        let err = ensure_movable(&plan(TenantKind::Department, TenantKind::Department, chain), 6).unwrap_err();
        assert_eq!(err.reason, ErrorReason::TreeCycle);
        let err = ensure_movable(&plan(TenantKind::Client, TenantKind::Department, &chain[..2]), 6).unwrap_err();
        assert_eq!(err.reason, ErrorReason::NotADepartment);
        let err = ensure_movable(&plan(TenantKind::Department, TenantKind::Admin, &chain[..1]), 6).unwrap_err();
        assert_eq!(err.reason, ErrorReason::InvalidParent);
        assert!(ensure_movable(&plan(TenantKind::Department, TenantKind::Client, &chain[..2]), 6).is_ok());
        let err = ensure_movable(&plan(TenantKind::Department, TenantKind::Client, &chain[..2]), 2).unwrap_err();
        assert_eq!(err.reason, ErrorReason::TreeTooDeep);
    }

    #[test]
    fn the_last_admin_stays() {
        assert_eq!(ensure_admin_kept(true, false, 0).unwrap_err().reason, ErrorReason::LastAdmin);
        assert!(ensure_admin_kept(true, false, 1).is_ok());
        assert!(ensure_admin_kept(true, true, 0).is_ok());
        assert!(ensure_admin_kept(false, false, 0).is_ok());
    }

    #[test]
    fn derived_slugs_are_valid() {
        for name in ["Acme Dental", "  ÄÖ GmbH & Co. ", "42 Club", "!!", &"long name ".repeat(20)] {
            let slug = slug_from_name(name);
            assert!(TenantSlug::parse(&slug).is_ok(), "{name:?} gave {slug:?}");
        }
        assert_eq!(slug_from_name("Acme Dental"), "acme-dental");
    }
}
