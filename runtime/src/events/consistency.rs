//! Consistency tokens ("at least as fresh as"): building them and merging them.
//!
//! Rules (read-your-writes):
//!
//! 1. Write responses return a `ConsistencyToken`: the revisions the write produced, each one the
//!    service's followers reach (see `watch`, rule 3).
//! 2. A decision request may demand "at least as fresh as" a token; an authz replica that cannot
//!    catch up within its bound answers UNAVAILABLE / `NOT_CAUGHT_UP`, never a stale answer.
//! 3. A write that waits for another service's write (identity's CreateUser, CreateInvitation and
//!    AcceptInvitation wait for the membership to reach tenancy) returns both revisions.
//! 4. Writes that ask authz-svc about state other services own (identity's CreateUser and
//!    CreateInvitation; tenancy's CreateTenant, AddMembership, SetUserMemberships,
//!    ChangeMembershipRole, RemoveMembership) take the caller's token in `at_least_as_fresh` and
//!    pass it on through `Authorizer` (`check`'s last argument, `RoleGrant::at_least_as_fresh`), so
//!    a client that merges the tokens it receives can build on a tenant or user made a moment ago.

use tether_proto::common::v1::{ConsistencyToken, Revision, RevisionSource};

/// A token naming one service's revision.
pub fn token(source: RevisionSource, revision: u64) -> ConsistencyToken {
    ConsistencyToken { revisions: vec![Revision { source: source as i32, value: revision }] }
}

/// The tokens merged, as the contract lets clients merge them: the highest revision per source
/// (revisions of 0 ask nothing and are left out). `None` when nothing is left.
pub fn merge<'a>(tokens: impl IntoIterator<Item = Option<&'a ConsistencyToken>>) -> Option<ConsistencyToken> {
    let mut revisions: Vec<Revision> = Vec::new();
    for revision in tokens.into_iter().flatten().flat_map(|t| t.revisions.iter()) {
        if revision.value == 0 {
            continue;
        }
        match revisions.iter_mut().find(|r| r.source == revision.source) {
            Some(held) => held.value = held.value.max(revision.value),
            None => revisions.push(*revision),
        }
    }
    revisions.sort_by_key(|r| r.source);
    (!revisions.is_empty()).then_some(ConsistencyToken { revisions })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merging_keeps_the_highest_revision_of_each_source() {
        let a = token(RevisionSource::Identity, 7);
        let b = ConsistencyToken {
            revisions: vec![
                Revision { source: RevisionSource::Tenancy as i32, value: 3 },
                Revision { source: RevisionSource::Identity as i32, value: 5 },
                Revision { source: RevisionSource::Authz as i32, value: 0 },
            ],
        };
        let merged = merge([Some(&a), None, Some(&b)]).unwrap_or_default();
        assert_eq!(
            merged.revisions,
            vec![
                Revision { source: RevisionSource::Identity as i32, value: 7 },
                Revision { source: RevisionSource::Tenancy as i32, value: 3 },
            ]
        );
        assert_eq!(merge([None, Some(&token(RevisionSource::Authz, 0))]), None);
    }
}
