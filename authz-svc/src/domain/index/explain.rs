//! Explaining a decision: what it rests on, one readable line, the rules evaluated.

use uuid::Uuid;

use super::{Basis, Decision, GrantAccess, GrantRecord, Index, MemberKind, NONE, OverrideRecord, Reason};

impl Index {
    pub fn basis(&self, d: &Decision) -> Option<Basis> {
        let (t, r, kind) = d.member?;
        let role = &self.roles[r as usize];
        Some(Basis { tenant: self.tenants[t as usize].id, kind, role: role.name.clone(), scope: role.scope })
    }
    pub fn decision_override(&self, d: &Decision) -> Option<&OverrideRecord> {
        self.override_records.get(d.override_record? as usize)
    }
    pub fn decision_grant(&self, d: &Decision) -> Option<&GrantRecord> {
        self.grant_records.get(d.grant_record? as usize)
    }
    pub fn blocking_tenant(&self, d: &Decision) -> Option<Uuid> {
        (d.blocking_tenant != NONE).then(|| self.tenants[d.blocking_tenant as usize].id)
    }

    /// One readable line for a decision.
    pub fn summary(&self, user: &Uuid, permission: &str, tenant: &Uuid, d: &Decision) -> String {
        let kind = |k: MemberKind| match k {
            MemberKind::Direct => "direct",
            MemberKind::Shadow => "shadow",
            MemberKind::Assigned => "assigned",
        };
        let scope_of = |o: &OverrideRecord| o.tenant.map_or("everywhere".to_owned(), |t| format!("in tenant {t}"));
        match d.reason {
            Reason::GrantedByMembership
            | Reason::DeniedPermissionNotInRole
            | Reason::DeniedOutsideAssignedTenants
            | Reason::DeniedNotMspStaff => {
                let b = self.basis(d);
                let (k, t, r, sc) = b.map_or(("?", String::new(), String::new(), "?"), |b| {
                    (kind(b.kind), b.tenant.to_string(), b.role, b.scope.as_str())
                });
                match d.reason {
                    Reason::GrantedByMembership => format!(
                        "allowed: {k} membership in tenant {t} (role {r}, scope {sc}) grants {permission} in tenant {tenant}"
                    ),
                    Reason::DeniedPermissionNotInRole => format!(
                        "denied: {k} membership in tenant {t} reaches tenant {tenant} but role {r} lacks {permission}"
                    ),
                    Reason::DeniedNotMspStaff => format!(
                        "denied: role {r} ({k} membership in tenant {t}) is for MSP staff only and user {user} is not MSP staff, so no membership reaches tenant {tenant}"
                    ),
                    _ => format!(
                        "denied: role {r} ({k} membership in tenant {t}) is scoped to assigned tenants and tenant {tenant} is not under a client assigned to user {user}"
                    ),
                }
            }
            Reason::GrantedByOverride => match self.decision_override(d) {
                Some(o) => format!("allowed: a grant override of {permission} for user {user} {}", scope_of(o)),
                None => format!("allowed: a grant override of {permission}"),
            },
            Reason::DeniedByOverride => match self.decision_override(d) {
                Some(o) => {
                    format!("denied: a deny override of {permission} for user {user} {} (deny wins)", scope_of(o))
                }
                None => format!("denied: a deny override of {permission}"),
            },
            Reason::GrantedByResourceGrant => match self.decision_grant(d) {
                Some(g) => format!(
                    "allowed: resource grant {} on {} ({}) covers the resource",
                    g.grant_id,
                    g.resource_id,
                    match &g.access {
                        GrantAccess::Role(r) => format!("role {r}"),
                        GrantAccess::Permission(p) => format!("permission {p}"),
                    }
                ),
                None => "allowed: a resource grant".to_owned(),
            },
            Reason::DeniedNoMembership => {
                format!(
                    "denied: user {user} has no membership in tenant {tenant} or its ancestors granting {permission}"
                )
            }
            Reason::DeniedUserSuspended => format!("denied: user {user} is suspended"),
            Reason::DeniedUserPending => format!("denied: user {user} has not accepted their invitation"),
            Reason::DeniedUserDeleted => format!("denied: user {user} is deleted"),
            Reason::DeniedUserUnknown => format!("denied: user {user} is unknown"),
            Reason::DeniedTenantSuspended => format!(
                "denied: tenant {} is suspended",
                self.blocking_tenant(d).map_or(tenant.to_string(), |t| t.to_string())
            ),
            Reason::DeniedTenantArchived => format!(
                "denied: tenant {} is archived",
                self.blocking_tenant(d).map_or(tenant.to_string(), |t| t.to_string())
            ),
            Reason::DeniedTenantUnknown => format!("denied: tenant {tenant} is unknown"),
            Reason::DeniedTenantChainBroken => {
                format!("denied: the ancestors of tenant {tenant} form a cycle or too deep a chain (tenant unknown)")
            }
            Reason::DeniedUnknownPermission => format!("denied: permission {permission:?} is not in the catalog"),
            Reason::DeniedResourceUnknown => format!("denied: no such resource in tenant {tenant}"),
        }
    }

    /// The rules evaluated, in order, one line each.
    pub fn steps(&self, d: &Decision) -> Vec<String> {
        let order = [
            ("permission is in the catalog", Reason::DeniedUnknownPermission),
            ("user is known", Reason::DeniedUserUnknown),
            ("user is not deleted", Reason::DeniedUserDeleted),
            ("user is not pending", Reason::DeniedUserPending),
            ("user is not suspended", Reason::DeniedUserSuspended),
            ("tenant is known", Reason::DeniedTenantUnknown),
            ("tenant's ancestor chain is well formed", Reason::DeniedTenantChainBroken),
            ("tenant and its ancestors are not suspended", Reason::DeniedTenantSuspended),
            ("tenant and its ancestors are not archived", Reason::DeniedTenantArchived),
            ("resource is known", Reason::DeniedResourceUnknown),
            ("no deny override applies", Reason::DeniedByOverride),
        ];
        // A grant override counts only with a membership reaching the tenant: said in the tail.
        let mut steps = Vec::new();
        for (text, reason) in order {
            if d.reason == reason {
                steps.push(format!("{text}: no -> denied"));
                return steps;
            }
            steps.push(format!("{text}: yes"));
        }
        let tail = match d.reason {
            Reason::GrantedByOverride => "a membership reaches the tenant and a grant override applies: yes -> allowed",
            Reason::GrantedByMembership => "a membership reaching the tenant holds the permission: yes -> allowed",
            Reason::GrantedByResourceGrant => {
                "a membership grants it: no; a resource grant on the resource or an ancestor: yes -> allowed"
            }
            Reason::DeniedPermissionNotInRole => {
                "membership reaches the tenant but its role lacks the permission -> denied"
            }
            Reason::DeniedOutsideAssignedTenants => {
                "membership's role is scoped to assigned tenants; not assigned -> denied"
            }
            Reason::DeniedNotMspStaff => {
                "the only memberships reaching the tenant hold MSP-staff-only roles; the user is not MSP staff -> denied"
            }
            _ => "no override, membership or resource grant gives the permission -> denied",
        };
        steps.push(tail.to_owned());
        steps
    }
}
