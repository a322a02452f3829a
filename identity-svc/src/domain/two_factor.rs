//! Which per-role 2FA policies apply to a user: the matching rule, without I/O.

/// A role the user holds in a tenant (any membership kind), with that tenant's ancestors,
/// nearest first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeldRole {
    pub tenant_id: String,
    pub ancestors: Vec<String>,
    pub role: String,
    /// A direct membership (not a shadow one of MSP staff, nor a technician's assigned one):
    /// what a tenant's `require_all` policy covers.
    pub direct: bool,
}

/// The roles a policy names, and its scope: empty for platform-wide (a role held in any
/// tenant), else a tenant id (a role held in that tenant or one of its departments).
#[derive(Debug, Clone, Copy)]
pub struct RoleRequirement<'a> {
    pub scope: &'a str,
    pub roles: &'a [String],
}

impl RoleRequirement<'_> {
    /// True if one of `held` is a named role inside the policy's scope.
    pub fn applies_to(&self, held: &[HeldRole]) -> bool {
        held.iter().any(|h| {
            self.roles.contains(&h.role)
                && (self.scope.is_empty() || h.tenant_id == self.scope || h.ancestors.iter().any(|a| a == self.scope))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn held(tenant: &str, ancestors: &[&str], role: &str) -> HeldRole {
        HeldRole {
            tenant_id: tenant.into(),
            ancestors: ancestors.iter().map(|a| a.to_string()).collect(),
            role: role.into(),
            direct: true,
        }
    }

    #[test]
    fn platform_wide_roles_match_in_any_tenant() {
        let roles = vec!["client_admin".to_owned()];
        let req = RoleRequirement { scope: "", roles: &roles };
        assert!(req.applies_to(&[held("t1", &["msp"], "client_user"), held("t2", &["msp"], "client_admin")]));
        assert!(!req.applies_to(&[held("t1", &["msp"], "client_user")]));
        assert!(!req.applies_to(&[]));
    }

    #[test]
    fn tenant_roles_match_in_the_tenant_and_its_departments_only() {
        let roles = vec!["client_admin".to_owned()];
        let req = RoleRequirement { scope: "client", roles: &roles };
        assert!(req.applies_to(&[held("client", &["msp"], "client_admin")]));
        assert!(req.applies_to(&[held("dept-2", &["dept-1", "client", "msp"], "client_admin")]));
        assert!(!req.applies_to(&[held("other", &["msp"], "client_admin")]));
        assert!(!req.applies_to(&[held("client", &["msp"], "client_user")]));
    }
}
