//! The policy file: a role pack's permission catalog and built-in roles, parsed from TOML and
//! validated once at start-up. Errors name the line of the offending entry.
//!
//! Rules:
//!
//! 1. A role pack is a TOML file (`authz-svc/packs/*.toml`, embedded, chosen by
//!    `TETHER_AUTHZ_ROLE_PACK`; or `TETHER_AUTHZ_POLICY_FILE`): the permission catalog (at most 128
//!    permissions), the built-in roles (permissions, scope `all_tenants | assigned_tenants |
//!    own_tenant`, rank, `assignable`, `msp_staff_only`), the owner, former-owner and admin roles,
//!    and optionally `invite_permission`.
//! 2. `invite_permission`, besides `users.manage`, lets a person add a *new* user with a role
//!    (`users.manage` when unset); changing an existing user's role always needs `users.manage`.
//! 3. Start-up refuses, naming the line: an unknown permission in a role or as
//!    `invite_permission`, a duplicate permission or role, a missing platform permission, an owner
//!    role that is not the unique top rank, TOML errors.
//! 4. `RolePack.policy_digest` is the hex SHA-256 of the file's text.
//! 5. Every shipped pack defines an owner role, never assignable, even where the product it
//!    reproduces names none.
//! 6. `demand-forecast`: a Sales Rep's role holds only what is not per channel (SKUs, the command
//!    palette); forecasts, sales history and channels come from resource grants on channel nodes
//!    (the `sales_channel` bundle, plus `forecasts.edit` where editing is granted).
//! 7. `msp-panel`: `departments.create` lets an MSP User create departments in assigned clients
//!    (tenancy's CreateTenant accepts it, or `tenants.manage`, on a client or department parent).
//!    End clients get one `end_client` membership per client they serve (tenancy assigns clients
//!    to MSP staff only, so `assigned_tenants` does not fit them).

use std::collections::HashMap;

use serde::Deserialize;
use toml::Spanned;

/// Permissions every pack must define: Tether's own services check them.
pub const PLATFORM_PERMISSIONS: &[&str] =
    &["users.view", "users.manage", "tenants.manage", "permissions.manage", "settings.manage", "audit.view"];

/// Bitsets are `u128`, so a catalog holds at most 128 permissions.
pub const MAX_PERMISSIONS: usize = 128;

/// The shipped packs, by name (`TETHER_AUTHZ_ROLE_PACK`).
pub const SHIPPED_PACKS: &[(&str, &str)] = &[
    ("msp-assets", include_str!("../../packs/msp-assets.toml")),
    ("demand-forecast", include_str!("../../packs/demand-forecast.toml")),
    ("msp-panel", include_str!("../../packs/msp-panel.toml")),
    ("platform", include_str!("../../packs/platform.toml")),
    ("password-manager", include_str!("../../packs/password-manager.toml")),
];

pub fn shipped_pack(name: &str) -> Option<&'static str> {
    SHIPPED_PACKS.iter().find(|(n, _)| *n == name).map(|(_, text)| *text)
}

/// Which tenants a role's permissions reach from a membership.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Scope {
    AllTenants,
    AssignedTenants,
    OwnTenant,
}

impl Scope {
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "all_tenants" => Some(Self::AllTenants),
            "assigned_tenants" => Some(Self::AssignedTenants),
            "own_tenant" => Some(Self::OwnTenant),
            _ => None,
        }
    }
    pub fn as_str(self) -> &'static str {
        match self {
            Self::AllTenants => "all_tenants",
            Self::AssignedTenants => "assigned_tenants",
            Self::OwnTenant => "own_tenant",
        }
    }
}

/// A set of permissions as bits of the catalog's order.
pub type PermSet = u128;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PermissionDef {
    pub name: String,
    pub category: String,
    pub description: String,
    pub platform: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoleDef {
    pub name: String,
    pub display_name: String,
    pub description: String,
    pub permissions: PermSet,
    pub scope: Scope,
    pub rank: i32,
    pub assignable: bool,
    pub msp_staff_only: bool,
    pub built_in: bool,
    pub created_at_micros: i64,
    pub updated_at_micros: i64,
}

/// A loaded, valid pack.
#[derive(Debug, Clone)]
pub struct Policy {
    pub name: String,
    pub display_name: String,
    pub description: String,
    pub owner_role: String,
    pub former_owner_role: String,
    pub admin_roles: Vec<String>,
    /// The permission that lets a person add a new user with a role (invite or create),
    /// besides `users.manage` (`[pack] invite_permission`; `users.manage` when not set). Seed
    /// 003's MANAGER invites with `users.invite`. Changing or removing an existing user's role
    /// always needs `users.manage`.
    pub invite_permission: String,
    /// In file order; a permission's index is its bit.
    pub permissions: Vec<PermissionDef>,
    pub roles: Vec<RoleDef>,
    /// Hex SHA-256 of the policy file's text.
    pub digest: String,
    by_name: HashMap<String, u8>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("policy file, line {line}: {message}")]
pub struct PolicyError {
    pub line: usize,
    pub message: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    pack: PackHeader,
    #[serde(default)]
    roles: Vec<RoleFile>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PackHeader {
    name: String,
    #[serde(default)]
    display_name: String,
    #[serde(default)]
    description: String,
    owner_role: Spanned<String>,
    former_owner_role: Spanned<String>,
    admin_roles: Vec<Spanned<String>>,
    #[serde(default)]
    invite_permission: Option<Spanned<String>>,
    permissions: Vec<Spanned<PermissionFile>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PermissionFile {
    name: String,
    #[serde(default)]
    category: String,
    #[serde(default)]
    description: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RoleFile {
    name: Spanned<String>,
    #[serde(default)]
    display_name: String,
    #[serde(default)]
    description: String,
    scope: Spanned<String>,
    rank: i32,
    assignable: bool,
    msp_staff_only: bool,
    permissions: Vec<Spanned<String>>,
}

fn line_of(text: &str, offset: usize) -> usize {
    text.get(..offset).map_or(1, |head| head.bytes().filter(|b| *b == b'\n').count() + 1)
}

/// A permission name: lower-case dotted words, at most 100 characters.
pub fn valid_permission_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 100
        && name.split('.').count() >= 2
        && name
            .split('.')
            .all(|w| !w.is_empty() && w.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_'))
}

/// A role name: the contract's rule (1-64 of `[A-Za-z0-9_]`); custom roles are lower-case
/// besides, checked where they are created.
pub fn valid_role_name(name: &str) -> bool {
    tether_proto::values::RoleName::is_valid(name)
}

impl Policy {
    /// Parses and validates a policy file.
    pub fn parse(text: &str, loaded_at_micros: i64) -> Result<Self, PolicyError> {
        let file: File = toml::from_str(text).map_err(|e| PolicyError {
            line: e.span().map_or(1, |s| line_of(text, s.start)),
            message: e.message().to_owned(),
        })?;
        let err =
            |span: std::ops::Range<usize>, message: String| PolicyError { line: line_of(text, span.start), message };

        let mut permissions = Vec::new();
        let mut by_name = HashMap::new();
        for p in &file.pack.permissions {
            let def = p.get_ref();
            if !valid_permission_name(&def.name) {
                return Err(err(p.span(), format!("invalid permission name {:?}", def.name)));
            }
            if by_name.contains_key(&def.name) {
                return Err(err(p.span(), format!("duplicate permission {:?}", def.name)));
            }
            if permissions.len() == MAX_PERMISSIONS {
                return Err(err(p.span(), format!("more than {MAX_PERMISSIONS} permissions")));
            }
            by_name.insert(def.name.clone(), permissions.len() as u8);
            permissions.push(PermissionDef {
                name: def.name.clone(),
                category: def.category.clone(),
                description: def.description.clone(),
                platform: PLATFORM_PERMISSIONS.contains(&def.name.as_str()),
            });
        }
        for required in PLATFORM_PERMISSIONS {
            if !by_name.contains_key(*required) {
                return Err(PolicyError { line: 1, message: format!("platform permission {required:?} is missing") });
            }
        }
        let all: PermSet =
            if permissions.len() == MAX_PERMISSIONS { u128::MAX } else { (1u128 << permissions.len()) - 1 };

        let mut roles: Vec<RoleDef> = Vec::new();
        for r in &file.roles {
            let name = r.name.get_ref();
            if !valid_role_name(name) {
                return Err(err(r.name.span(), format!("invalid role name {name:?}")));
            }
            if roles.iter().any(|x| &x.name == name) {
                return Err(err(r.name.span(), format!("duplicate role {name:?}")));
            }
            let scope = Scope::parse(r.scope.get_ref()).ok_or_else(|| {
                err(
                    r.scope.span(),
                    format!("unknown scope {:?} (all_tenants, assigned_tenants, own_tenant)", r.scope.get_ref()),
                )
            })?;
            let mut set: PermSet = 0;
            for p in &r.permissions {
                if p.get_ref() == "*" {
                    set = all;
                    continue;
                }
                let bit = by_name.get(p.get_ref()).ok_or_else(|| {
                    err(p.span(), format!("role {name:?} names unknown permission {:?}", p.get_ref()))
                })?;
                if set & (1u128 << bit) != 0 {
                    return Err(err(p.span(), format!("role {name:?} names permission {:?} twice", p.get_ref())));
                }
                set |= 1u128 << bit;
            }
            roles.push(RoleDef {
                name: name.clone(),
                display_name: if r.display_name.is_empty() { name.clone() } else { r.display_name.clone() },
                description: r.description.clone(),
                permissions: set,
                scope,
                rank: r.rank,
                assignable: r.assignable,
                msp_staff_only: r.msp_staff_only,
                built_in: true,
                created_at_micros: loaded_at_micros,
                updated_at_micros: loaded_at_micros,
            });
        }
        let role_named = |s: &Spanned<String>, what: &str| -> Result<String, PolicyError> {
            if roles.iter().any(|r| &r.name == s.get_ref()) {
                Ok(s.get_ref().clone())
            } else {
                Err(err(s.span(), format!("{what} {:?} is not a role of the pack", s.get_ref())))
            }
        };
        let owner_role = role_named(&file.pack.owner_role, "owner_role")?;
        let former_owner_role = role_named(&file.pack.former_owner_role, "former_owner_role")?;
        let admin_roles =
            file.pack.admin_roles.iter().map(|s| role_named(s, "admin role")).collect::<Result<Vec<_>, _>>()?;
        let invite_permission = match &file.pack.invite_permission {
            None => "users.manage".to_owned(),
            Some(p) if by_name.contains_key(p.get_ref()) => p.get_ref().clone(),
            Some(p) => {
                return Err(err(p.span(), format!("invite_permission {:?} is not in the catalog", p.get_ref())));
            }
        };
        let max_rank = roles.iter().map(|r| r.rank).max().unwrap_or_default();
        if let Some(owner) = roles.iter().find(|r| r.name == owner_role)
            && (owner.assignable
                || roles.iter().any(|r| r.name != owner_role && r.rank >= owner.rank)
                || owner.rank != max_rank)
        {
            return Err(err(
                file.pack.owner_role.span(),
                "the owner role must be not assignable and ranked above every other role".into(),
            ));
        }
        Ok(Self {
            name: file.pack.name,
            display_name: file.pack.display_name,
            description: file.pack.description,
            owner_role,
            former_owner_role,
            admin_roles,
            invite_permission,
            permissions,
            roles,
            digest: digest(text),
            by_name,
        })
    }

    pub fn permission_bit(&self, name: &str) -> Option<u8> {
        self.by_name.get(name).copied()
    }

    /// Permission names of a set, in catalog order.
    pub fn names(&self, set: PermSet) -> Vec<String> {
        self.permissions
            .iter()
            .enumerate()
            .filter(|(i, _)| set & (1u128 << i) != 0)
            .map(|(_, p)| p.name.clone())
            .collect()
    }

    /// The set of a list of names; the first unknown name is the error.
    pub fn set_of<'a>(&self, names: impl IntoIterator<Item = &'a str>) -> Result<PermSet, String> {
        let mut set = 0;
        for n in names {
            let bit = self.permission_bit(n).ok_or_else(|| n.to_owned())?;
            set |= 1u128 << bit;
        }
        Ok(set)
    }
}

/// Hex SHA-256 of the policy text, as the contract (`RolePack.policy_digest`) says: operators
/// and replicas compare it to see that they loaded the same file.
fn digest(text: &str) -> String {
    use sha2::{Digest, Sha256};
    hex::encode(Sha256::digest(text.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pack(name: &str) -> Policy {
        Policy::parse(shipped_pack(name).unwrap_or_default(), 0).unwrap()
    }

    #[test]
    fn every_shipped_pack_loads_with_the_platform_permissions_and_an_owner() {
        for (name, _) in SHIPPED_PACKS {
            let p = pack(name);
            assert_eq!(&p.name, name);
            let owner = p.roles.iter().find(|r| r.name == p.owner_role).unwrap();
            assert!(!owner.assignable);
            for perm in PLATFORM_PERMISSIONS {
                assert!(p.permission_bit(perm).is_some(), "{name} lacks {perm}");
            }
        }
    }

    #[test]
    fn seed_000_has_17_permissions_and_its_five_roles() {
        let p = pack("msp-assets");
        assert_eq!(p.permissions.len(), 17);
        let role = |n: &str| p.roles.iter().find(|r| r.name == n).unwrap();
        assert_eq!(role("msp_admin").permissions.count_ones(), 17);
        assert_eq!(role("msp_admin").scope, Scope::AllTenants);
        let tech = p.names(role("msp_technician").permissions);
        assert!(tech.contains(&"assets.checkout".to_owned()) && tech.contains(&"people.manage".to_owned()));
        assert!(!tech.iter().any(|n| n == "billing.manage" || n == "tenants.manage" || n == "users.manage"));
        let admin = p.names(role("client_admin").permissions);
        assert_eq!(admin.len(), 15);
        assert!(!admin.iter().any(|n| n == "tenants.manage" || n == "billing.manage"));
        assert_eq!(role("client_admin").scope, Scope::OwnTenant);
        let manager = p.names(role("client_manager").permissions);
        assert!(!manager.iter().any(|n| n == "assets.delete" || n == "users.manage" || n == "settings.manage"));
        assert_eq!(p.names(role("client_viewer").permissions), vec!["assets.view", "assets.export"]);
        assert!(role("client_admin").rank < role("msp_technician").rank);
    }

    #[test]
    fn the_digest_is_the_hex_sha256_of_the_policy_text() {
        let text = shipped_pack("msp-assets").unwrap_or_default();
        let p = Policy::parse(text, 0).unwrap();
        assert_eq!(p.digest.len(), 64);
        // SHA-256 of the empty string and of "abc" (FIPS 180-2 test vectors).
        assert_eq!(digest(""), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
        assert_eq!(digest("abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
        assert_eq!(p.digest, digest(text));
    }

    #[test]
    fn errors_name_the_line() {
        let text = shipped_pack("msp-assets").unwrap_or_default();
        let bad = text.replacen("\"assets.view\", \"assets.export\"]", "\"assets.view\", \"assets.fly\"]", 1);
        let e = Policy::parse(&bad, 0).unwrap_err();
        assert!(e.message.contains("assets.fly"), "{e}");
        let expected = bad.lines().position(|l| l.contains("assets.fly")).unwrap() + 1;
        assert_eq!(e.line, expected);

        let dup = text.replacen("name = \"client_viewer\"", "name = \"client_manager\"", 1);
        let e = Policy::parse(&dup, 0).unwrap_err();
        assert!(e.message.contains("duplicate role"), "{e}");
        assert_eq!(
            e.line,
            dup.lines().collect::<Vec<_>>().iter().rposition(|l| l.contains("name = \"client_manager\"")).unwrap() + 1
        );

        let dup_perm = text.replacen("{ name = \"assets.create\"", "{ name = \"assets.view\"", 1);
        let e = Policy::parse(&dup_perm, 0).unwrap_err();
        assert!(e.message.contains("duplicate permission"), "{e}");
        assert_eq!(e.line, dup_perm.lines().position(|l| l.contains("Create assets")).unwrap() + 1);

        let invite = text.replacen("admin_roles = [", "invite_permission = \"users.beckon\"\nadmin_roles = [", 1);
        let e = Policy::parse(&invite, 0).unwrap_err();
        assert!(e.message.contains("users.beckon"), "{e}");
        assert_eq!(e.line, invite.lines().position(|l| l.contains("users.beckon")).unwrap() + 1);

        let syntax = text.replacen("rank = 10", "rank = ten", 1);
        let e = Policy::parse(&syntax, 0).unwrap_err();
        assert_eq!(e.line, syntax.lines().position(|l| l.contains("rank = ten")).unwrap() + 1);
    }
}
