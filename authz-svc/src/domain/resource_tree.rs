//! The rules a product's resource tree keeps, on facts the caller has looked up in the index.

/// Deepest resource tree accepted.
pub const MAX_RESOURCE_DEPTH: usize = 16;

/// Why a resource may not be placed or removed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TreeRuleError {
    /// The parent is the resource itself or one of its descendants.
    Cycle,
    /// The resource would sit deeper than [`MAX_RESOURCE_DEPTH`].
    TooDeep,
    /// The resource has children and removing them too was not asked for.
    HasChildren,
}

/// Placing resource `id` under `parent`, where `parent_under_id` tells whether `id` is
/// `parent` or above it, and `parent_depth` is how deep `parent` sits (a root: 1): never
/// under itself, and no deeper than [`MAX_RESOURCE_DEPTH`].
pub fn check_placement(
    id: &str,
    parent: &str,
    parent_under_id: bool,
    parent_depth: usize,
) -> Result<(), TreeRuleError> {
    if parent == id || parent_under_id {
        return Err(TreeRuleError::Cycle);
    }
    if parent_depth + 1 > MAX_RESOURCE_DEPTH {
        return Err(TreeRuleError::TooDeep);
    }
    Ok(())
}

/// Removing a resource whose subtree (itself included) holds `subtree` resources: its
/// children go only with it when `cascade` is asked for.
pub fn check_removal(subtree: usize, cascade: bool) -> Result<(), TreeRuleError> {
    if subtree > 1 && !cascade {
        return Err(TreeRuleError::HasChildren);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_resource_never_moves_under_itself() {
        assert_eq!(check_placement("site-1", "region-1", false, 1), Ok(()));
        assert_eq!(check_placement("site-1", "site-1", false, 1), Err(TreeRuleError::Cycle));
        assert_eq!(check_placement("region-1", "site-1", true, 2), Err(TreeRuleError::Cycle));
    }

    #[test]
    fn the_tree_is_bounded_in_depth() {
        assert_eq!(check_placement("leaf", "parent", false, MAX_RESOURCE_DEPTH - 1), Ok(()));
        assert_eq!(check_placement("leaf", "parent", false, MAX_RESOURCE_DEPTH), Err(TreeRuleError::TooDeep));
        // A cycle is named before the depth.
        assert_eq!(check_placement("leaf", "leaf", false, MAX_RESOURCE_DEPTH), Err(TreeRuleError::Cycle));
    }

    #[test]
    fn children_go_only_when_asked() {
        assert_eq!(check_removal(1, false), Ok(()));
        assert_eq!(check_removal(1, true), Ok(()));
        assert_eq!(check_removal(3, true), Ok(()));
        assert_eq!(check_removal(3, false), Err(TreeRuleError::HasChildren));
    }
}
