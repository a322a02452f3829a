//! Tenant isolation through the four real services: a client user's view of another client.
//!
//! An MSP with two clients, A (with department A1) and B, each with an administrator and a
//! viewer. As A's administrator and as A's viewer, every RPC that names a user, a tenant, an
//! invitation or a policy is called once with an object of client B and once with a random id:
//! the two answers must be the same (code, reason, message and metadata, ids aside). Then the
//! takeover chain of a client administrator pulling B's users into A, and what MSP staff may do.

mod stack;

use stack::{as_service, as_user, eventually};

use std::collections::BTreeMap;

use tether_proto::{
    authz::v1::{self as az, authz_service_client::AuthzServiceClient},
    identity::v1::{self as id, identity_service_client::IdentityServiceClient},
    tenancy::v1::{self as tn, tenancy_service_client::TenancyServiceClient},
};
use tether_tests::{RunningService, TestDatabase};
use tonic::{Code, Status, transport::Channel};
use tonic_types::StatusExt;

const OWNER_EMAIL: &str = "owner@msp.example";
const PASSWORD: &str = "a long pass phrase for tests";

/// What a caller hears from a failed (or successful) call: code, reason, message and the
/// ErrorInfo metadata, with the ids named in the call replaced by `<id>`.
fn heard<T>(result: Result<T, Status>, ids: &[&str], ok: impl FnOnce(T) -> String) -> String {
    let scrub = |text: &str| ids.iter().fold(text.to_owned(), |t, id| t.replace(id, "<id>"));
    match result {
        Ok(reply) => format!("OK {}", scrub(&ok(reply))),
        Err(status) => {
            let info = status.get_details_error_info();
            let reason = info.as_ref().map(|i| i.reason.clone()).unwrap_or_default();
            let metadata: BTreeMap<String, String> =
                info.map(|i| i.metadata.into_iter().map(|(k, v)| (k, scrub(&v))).collect()).unwrap_or_default();
            format!("{:?} {reason} {:?} {metadata:?}", status.code(), scrub(status.message()))
        }
    }
}

/// A success with nothing to compare.
fn done<T>(_: T) -> String {
    String::new()
}

struct Clients {
    identity: IdentityServiceClient<Channel>,
    tenancy: TenancyServiceClient<Channel>,
    authz: AuthzServiceClient<Channel>,
}

/// The world: an MSP owner, clients A (department A1) and B, an administrator and a viewer in
/// each, a pending invitation into B, and a resource "r1" in A and in B.
struct World {
    services: Vec<RunningService>,
    c: Clients,
    owner: String,
    a: String,
    a1: String,
    b: String,
    a_admin: (String, String),
    a_viewer: (String, String),
    a1_user: String,
    b_admin: (String, String),
    b_viewer: (String, String),
    b_invitation: String,
}

async fn login(identity: &IdentityServiceClient<Channel>, email: &str) -> String {
    eventually(&format!("log in as {email}"), || {
        let mut identity = identity.clone();
        async move {
            let reply = identity
                .login(id::LoginRequest { email: email.into(), password: PASSWORD.into(), ..Default::default() })
                .await?
                .into_inner();
            match reply.outcome.and_then(|o| o.outcome) {
                Some(id::login_outcome::Outcome::Session(s)) => Ok(s.session_token),
                other => Err(Status::failed_precondition(format!("no session: {other:?}"))),
            }
        }
    })
    .await
}

impl World {
    async fn build(db: &TestDatabase) -> Self {
        let services = stack::start_all_with(db, &[("TETHER_IDENTITY_BOOTSTRAP_OWNER_PASSWORD", PASSWORD)]).await;
        let c = Clients {
            identity: IdentityServiceClient::new(services[0].channel().await),
            tenancy: TenancyServiceClient::new(services[1].channel().await),
            authz: AuthzServiceClient::new(services[2].channel().await),
        };
        let owner = login(&c.identity, OWNER_EMAIL).await;
        let tenant = |name: &'static str, parent: String| {
            let (mut tenancy, owner) = (c.tenancy.clone(), owner.clone());
            async move {
                let request = tn::CreateTenantRequest { name: name.into(), parent_id: parent, ..Default::default() };
                let reply = tenancy.create_tenant(as_user(&owner, request)).await?;
                Ok(reply.into_inner().tenant.unwrap_or_default().tenant_id)
            }
        };
        let a = eventually("create A", || tenant("Client A", String::new())).await;
        let a1 = eventually("create A1", || tenant("Department A1", a.clone())).await;
        let b = eventually("create B", || tenant("Client B", String::new())).await;
        let user = |email: &'static str, tenant: String, role: &'static str| {
            let (mut identity, owner) = (c.identity.clone(), owner.clone());
            async move {
                let request = id::CreateUserRequest {
                    email: email.into(),
                    display_name: email.into(),
                    password: PASSWORD.into(),
                    tenant_id: tenant,
                    role: role.into(),
                    ..Default::default()
                };
                let reply = identity.create_user(as_user(&owner, request)).await?;
                Ok(reply.into_inner().user.unwrap_or_default().user_id)
            }
        };
        let mut people = Vec::new();
        for (email, tenant, role) in [
            ("admin@a.example", &a, "client_admin"),
            ("viewer@a.example", &a, "client_viewer"),
            ("user@a1.example", &a1, "client_viewer"),
            ("admin@b.example", &b, "client_admin"),
            ("viewer@b.example", &b, "client_viewer"),
        ] {
            let user_id = eventually(email, || user(email, tenant.clone(), role)).await;
            people.push((user_id, login(&c.identity, email).await));
        }
        let [a_admin, a_viewer, (a1_user, _), b_admin, b_viewer]: [(String, String); 5] = people.try_into().unwrap();
        // authz knows everyone (and their homes) before anything is asked of it.
        for (user, tenant) in
            [(&a_admin.0, &a), (&a_viewer.0, &a), (&a1_user, &a1), (&b_admin.0, &b), (&b_viewer.0, &b)]
        {
            eventually("authz knows the user", || {
                let request = az::CheckRequest {
                    subject_user_id: user.clone(),
                    permission: "assets.view".into(),
                    tenant_id: tenant.clone(),
                    ..Default::default()
                };
                let mut authz = c.authz.clone();
                async move {
                    let allowed = authz.check(as_service(request)).await?.into_inner().allowed;
                    if allowed { Ok(()) } else { Err(Status::unavailable("not yet")) }
                }
            })
            .await;
        }
        for t in [&a, &b] {
            let request = az::RegisterResourceRequest {
                tenant_id: t.clone(),
                resource_id: "r1".into(),
                resource_type: "folder".into(),
                ..Default::default()
            };
            c.authz.clone().register_resource(as_service(request)).await.unwrap();
        }
        let b_invitation = c
            .identity
            .clone()
            .create_invitation(as_user(
                &b_admin.1,
                id::CreateInvitationRequest {
                    email: "invitee@b.example".into(),
                    tenant_id: b.clone(),
                    role: "client_viewer".into(),
                    skip_email: true,
                    ..Default::default()
                },
            ))
            .await
            .unwrap()
            .into_inner()
            .invitation
            .unwrap()
            .invitation_id;
        Self { services, c, owner, a, a1, b, a_admin, a_viewer, a1_user, b_admin, b_viewer, b_invitation }
    }

    async fn stop(self) {
        for service in self.services {
            service.stop().await.unwrap();
        }
    }
}

/// Every RPC of identity, tenancy and authz that names a user, a tenant, an invitation or a
/// policy, as `token` (whose user id is `me`), naming `other` where the object goes.
#[derive(Debug, Clone, Copy)]
enum Probe {
    // identity: users
    GetUser,
    BatchGetUsers,
    UpdateUser,
    SendPasswordReset,
    SetTemporaryPassword,
    ListSessions,
    RevokeUserSessions,
    ResetTotp,
    DeactivateUser,
    ReactivateUser,
    // identity: tenants, invitations, policies
    CreateUserIn,
    CreateInvitationIn,
    ListUsersIn,
    ListInvitationsIn,
    GetTwoFactorPolicy,
    SetTwoFactorPolicy,
    ResendInvitation,
    ClearLockoutOf,
    // tenancy: users
    ListUserTenants,
    AddMembership,
    ChangeMembershipRole,
    RemoveMembership,
    SetUserMemberships,
    SetDefaultTenant,
    // tenancy: tenants
    GetTenant,
    ListTenantsUnder,
    GetSubtree,
    ListTenantMembers,
    RenameTenant,
    SuspendTenant,
    CreateTenantUnder,
    AddMembershipIn,
    SwitchTenantTo,
    MoveTenantUnder,
    ReactivateTenant,
    // authz: about oneself in a tenant
    CheckSelfIn,
    BatchCheckSelfIn,
    ExplainSelfIn,
    EffectiveSelfIn,
    CheckRoleGrantIn,
    LookupSubjectsIn,
    ListResourcesIn,
    ListResourceGrantsIn,
    ListOverridesIn,
    SetOverrideIn,
    RegisterResourceIn,
    RemoveResourceIn,
    ListRolesGrantableIn,
    // authz: about another user
    CheckUser,
    ExplainUser,
    EffectiveUser,
    CheckRoleGrantOn,
    SetOverrideOn,
    RemoveOverrideOn,
    GrantResourceAccessTo,
    ListResourceGrantsOf,
    ListOverridesOf,
    LookupTenantsOf,
    // last: they would change B for good if they were let through
    DeleteUser,
    RevokeInvitation,
}

/// Which kind of object a probe names.
enum Names {
    User,
    Tenant,
    Invitation,
}

impl Probe {
    const ALL: [Probe; 60] = {
        use Probe::*;
        [
            GetUser,
            BatchGetUsers,
            UpdateUser,
            SendPasswordReset,
            SetTemporaryPassword,
            ListSessions,
            RevokeUserSessions,
            ResetTotp,
            DeactivateUser,
            ReactivateUser,
            CreateUserIn,
            CreateInvitationIn,
            ListUsersIn,
            ListInvitationsIn,
            GetTwoFactorPolicy,
            SetTwoFactorPolicy,
            ResendInvitation,
            ClearLockoutOf,
            ListUserTenants,
            AddMembership,
            ChangeMembershipRole,
            RemoveMembership,
            SetUserMemberships,
            SetDefaultTenant,
            GetTenant,
            ListTenantsUnder,
            GetSubtree,
            ListTenantMembers,
            RenameTenant,
            SuspendTenant,
            CreateTenantUnder,
            AddMembershipIn,
            SwitchTenantTo,
            MoveTenantUnder,
            ReactivateTenant,
            CheckSelfIn,
            BatchCheckSelfIn,
            ExplainSelfIn,
            EffectiveSelfIn,
            CheckRoleGrantIn,
            LookupSubjectsIn,
            ListResourcesIn,
            ListResourceGrantsIn,
            ListOverridesIn,
            SetOverrideIn,
            RegisterResourceIn,
            RemoveResourceIn,
            ListRolesGrantableIn,
            CheckUser,
            ExplainUser,
            EffectiveUser,
            CheckRoleGrantOn,
            SetOverrideOn,
            RemoveOverrideOn,
            GrantResourceAccessTo,
            ListResourceGrantsOf,
            ListOverridesOf,
            LookupTenantsOf,
            DeleteUser,
            RevokeInvitation,
        ]
    };

    /// The service the RPC belongs to.
    fn service(self) -> &'static str {
        let name = format!("{self:?}");
        let identity = [
            "GetUser",
            "BatchGetUsers",
            "UpdateUser",
            "SendPasswordReset",
            "SetTemporaryPassword",
            "ListSessions",
            "RevokeUserSessions",
            "ResetTotp",
            "DeactivateUser",
            "ReactivateUser",
            "CreateUserIn",
            "CreateInvitationIn",
            "ListUsersIn",
            "ListInvitationsIn",
            "GetTwoFactorPolicy",
            "SetTwoFactorPolicy",
            "ResendInvitation",
            "ClearLockoutOf",
            "DeleteUser",
            "RevokeInvitation",
        ];
        let tenancy = [
            "ListUserTenants",
            "AddMembership",
            "ChangeMembershipRole",
            "RemoveMembership",
            "SetUserMemberships",
            "SetDefaultTenant",
            "GetTenant",
            "ListTenantsUnder",
            "GetSubtree",
            "ListTenantMembers",
            "RenameTenant",
            "SuspendTenant",
            "CreateTenantUnder",
            "AddMembershipIn",
            "SwitchTenantTo",
            "MoveTenantUnder",
            "ReactivateTenant",
        ];
        if identity.contains(&name.as_str()) {
            "identity"
        } else if tenancy.contains(&name.as_str()) {
            "tenancy"
        } else {
            "authz"
        }
    }

    fn names(self) -> Names {
        use Probe::*;
        match self {
            CreateUserIn | CreateInvitationIn | ListUsersIn | ListInvitationsIn | GetTwoFactorPolicy
            | SetTwoFactorPolicy | GetTenant | ListTenantsUnder | GetSubtree | ListTenantMembers | RenameTenant
            | SuspendTenant | CreateTenantUnder | AddMembershipIn | CheckSelfIn | BatchCheckSelfIn | ExplainSelfIn
            | EffectiveSelfIn | CheckRoleGrantIn | LookupSubjectsIn | ListResourcesIn | ListResourceGrantsIn
            | ListOverridesIn | SetOverrideIn | RegisterResourceIn | SwitchTenantTo | MoveTenantUnder
            | ReactivateTenant | RemoveResourceIn | ListRolesGrantableIn => Names::Tenant,
            ResendInvitation | RevokeInvitation => Names::Invitation,
            _ => Names::User,
        }
    }

    /// Calls the RPC as `token` (user `me`, at home in `home`) naming `other`; what was heard.
    async fn call(self, c: &Clients, (me, token): (&str, &str), home: &str, other: &str) -> String {
        use Probe::*;
        let (mut i, mut t, mut z) = (c.identity.clone(), c.tenancy.clone(), c.authz.clone());
        let ids = [other];
        let o = other.to_owned();
        let check = |subject: &str, tenant: &str| az::CheckRequest {
            subject_user_id: subject.into(),
            permission: "assets.view".into(),
            tenant_id: tenant.into(),
            ..Default::default()
        };
        let explain = |subject: &str, tenant: &str| az::ExplainRequest {
            subject_user_id: subject.into(),
            permission: "assets.view".into(),
            tenant_id: tenant.into(),
            ..Default::default()
        };
        let effective = |subject: &str, tenant: &str| az::ListEffectivePermissionsRequest {
            subject_user_id: subject.into(),
            tenant_id: tenant.into(),
            ..Default::default()
        };
        let role_grant = |target: &str, tenant: &str| az::CheckRoleGrantRequest {
            actor_user_id: me.into(),
            target_user_id: target.into(),
            tenant_id: tenant.into(),
            role: "client_viewer".into(),
            ..Default::default()
        };
        let set_override = |user: &str, tenant: &str| az::SetOverrideRequest {
            user_id: user.into(),
            permission: "assets.view".into(),
            effect: az::OverrideEffect::Deny as i32,
            tenant_id: tenant.into(),
            note: String::new(),
        };
        let explained = |r: tonic::Response<az::ExplainResponse>| {
            let r = r.into_inner();
            format!("{} {} {:?} {:?}", r.allowed, r.reason, r.summary, r.steps)
        };
        let effective_of = |r: tonic::Response<az::ListEffectivePermissionsResponse>| {
            let r = r.into_inner();
            format!("{:?} {:?} {}", r.permissions, r.memberships, r.blocked_reason)
        };
        let granted = |r: tonic::Response<az::CheckRoleGrantResponse>| {
            let r = r.into_inner();
            format!("{} {} {:?}", r.allowed, r.denial_reason, r.summary)
        };
        let user = |user_id: &str| id::GetUserRequest { user_id: user_id.into() };
        match self {
            GetUser => heard(i.get_user(as_user(token, user(&o))).await, &ids, done),
            BatchGetUsers => heard(
                i.batch_get_users(as_user(token, id::BatchGetUsersRequest { user_ids: vec![o.clone()] })).await,
                &ids,
                |r| format!("{:?}", r.into_inner().users),
            ),
            UpdateUser => heard(
                i.update_user(as_user(
                    token,
                    id::UpdateUserRequest { user_id: o.clone(), notes: Some("x".into()), ..Default::default() },
                ))
                .await,
                &ids,
                done,
            ),
            SendPasswordReset => heard(
                i.send_password_reset(as_user(token, id::SendPasswordResetRequest { user_id: o.clone() })).await,
                &ids,
                done,
            ),
            SetTemporaryPassword => heard(
                i.set_temporary_password(as_user(
                    token,
                    id::SetTemporaryPasswordRequest {
                        user_id: o.clone(),
                        temporary_password: "another long pass phrase".into(),
                    },
                ))
                .await,
                &ids,
                done,
            ),
            ListSessions => heard(
                i.list_sessions(as_user(token, id::ListSessionsRequest { user_id: o.clone(), ..Default::default() }))
                    .await,
                &ids,
                done,
            ),
            RevokeUserSessions => heard(
                i.revoke_user_sessions(as_user(
                    token,
                    id::RevokeUserSessionsRequest { user_id: o.clone(), ..Default::default() },
                ))
                .await,
                &ids,
                done,
            ),
            ResetTotp => {
                heard(i.reset_totp(as_user(token, id::ResetTotpRequest { user_id: o.clone() })).await, &ids, done)
            }
            DeactivateUser => heard(
                i.deactivate_user(as_user(
                    token,
                    id::DeactivateUserRequest { user_id: o.clone(), ..Default::default() },
                ))
                .await,
                &ids,
                done,
            ),
            ReactivateUser => heard(
                i.reactivate_user(as_user(token, id::ReactivateUserRequest { user_id: o.clone() })).await,
                &ids,
                done,
            ),
            DeleteUser => {
                heard(i.delete_user(as_user(token, id::DeleteUserRequest { user_id: o.clone() })).await, &ids, done)
            }
            CreateUserIn => heard(
                i.create_user(as_user(
                    token,
                    id::CreateUserRequest {
                        email: "newcomer@example.com".into(),
                        display_name: "Newcomer".into(),
                        password: "a long pass phrase for newcomers".into(),
                        tenant_id: o.clone(),
                        role: "client_viewer".into(),
                        ..Default::default()
                    },
                ))
                .await,
                &ids,
                done,
            ),
            CreateInvitationIn => heard(
                i.create_invitation(as_user(
                    token,
                    id::CreateInvitationRequest {
                        email: "invited@example.com".into(),
                        tenant_id: o.clone(),
                        role: "client_viewer".into(),
                        skip_email: true,
                        ..Default::default()
                    },
                ))
                .await,
                &ids,
                done,
            ),
            ListUsersIn => heard(
                i.list_users(as_user(token, id::ListUsersRequest { tenant_id: o.clone(), ..Default::default() })).await,
                &ids,
                |r| format!("{:?}", r.into_inner().users),
            ),
            ListInvitationsIn => heard(
                i.list_invitations(as_user(
                    token,
                    id::ListInvitationsRequest { tenant_id: o.clone(), ..Default::default() },
                ))
                .await,
                &ids,
                |r| format!("{:?}", r.into_inner().invitations),
            ),
            GetTwoFactorPolicy => heard(
                i.get_two_factor_policy(as_user(token, id::GetTwoFactorPolicyRequest { tenant_id: o.clone() })).await,
                &ids,
                |r| format!("{:?}", r.into_inner().policy.map(|p| p.require_all)),
            ),
            SetTwoFactorPolicy => heard(
                i.set_two_factor_policy(as_user(
                    token,
                    id::SetTwoFactorPolicyRequest {
                        policy: Some(id::TwoFactorPolicy {
                            tenant_id: o.clone(),
                            require_all: true,
                            ..Default::default()
                        }),
                    },
                ))
                .await,
                &ids,
                done,
            ),
            ResendInvitation => heard(
                i.resend_invitation(as_user(
                    token,
                    id::ResendInvitationRequest { invitation_id: o.clone(), skip_email: true },
                ))
                .await,
                &ids,
                done,
            ),
            RevokeInvitation => heard(
                i.revoke_invitation(as_user(token, id::RevokeInvitationRequest { invitation_id: o.clone() })).await,
                &ids,
                done,
            ),
            ListUserTenants => heard(
                t.list_user_tenants(as_user(
                    token,
                    tn::ListUserTenantsRequest { user_id: o.clone(), ..Default::default() },
                ))
                .await,
                &ids,
                |r| format!("{:?}", r.into_inner().tenants),
            ),
            AddMembership => heard(
                t.add_membership(as_user(
                    token,
                    tn::AddMembershipRequest {
                        user_id: o.clone(),
                        tenant_id: home.into(),
                        role: "client_admin".into(),
                        make_default: false,
                        at_least_as_fresh: None,
                    },
                ))
                .await,
                &ids,
                done,
            ),
            AddMembershipIn => heard(
                t.add_membership(as_user(
                    token,
                    tn::AddMembershipRequest {
                        user_id: me.into(),
                        tenant_id: o.clone(),
                        role: "client_viewer".into(),
                        make_default: false,
                        at_least_as_fresh: None,
                    },
                ))
                .await,
                &ids,
                done,
            ),
            ChangeMembershipRole => heard(
                t.change_membership_role(as_user(
                    token,
                    tn::ChangeMembershipRoleRequest {
                        user_id: o.clone(),
                        tenant_id: home.into(),
                        role: "client_viewer".into(),
                        at_least_as_fresh: None,
                    },
                ))
                .await,
                &ids,
                done,
            ),
            RemoveMembership => heard(
                t.remove_membership(as_user(
                    token,
                    tn::RemoveMembershipRequest { user_id: o.clone(), tenant_id: home.into(), at_least_as_fresh: None },
                ))
                .await,
                &ids,
                done,
            ),
            SetUserMemberships => heard(
                t.set_user_memberships(as_user(
                    token,
                    tn::SetUserMembershipsRequest {
                        user_id: o.clone(),
                        memberships: vec![tn::MembershipSpec { tenant_id: home.into(), role: "client_viewer".into() }],
                        default_tenant_id: String::new(),
                        at_least_as_fresh: None,
                    },
                ))
                .await,
                &ids,
                done,
            ),
            SetDefaultTenant => heard(
                t.set_default_tenant(as_user(
                    token,
                    tn::SetDefaultTenantRequest { user_id: o.clone(), tenant_id: home.into(), at_least_as_fresh: None },
                ))
                .await,
                &ids,
                done,
            ),
            GetTenant => {
                heard(t.get_tenant(as_user(token, tn::GetTenantRequest { tenant_id: o.clone() })).await, &ids, done)
            }
            ListTenantsUnder => heard(
                t.list_tenants(as_user(token, tn::ListTenantsRequest { parent_id: o.clone(), ..Default::default() }))
                    .await,
                &ids,
                |r| format!("{:?}", r.into_inner().tenants),
            ),
            GetSubtree => heard(
                t.get_subtree(as_user(token, tn::GetSubtreeRequest { tenant_id: o.clone(), ..Default::default() }))
                    .await,
                &ids,
                done,
            ),
            ListTenantMembers => heard(
                t.list_tenant_members(as_user(
                    token,
                    tn::ListTenantMembersRequest { tenant_id: o.clone(), ..Default::default() },
                ))
                .await,
                &ids,
                |r| format!("{:?}", r.into_inner().memberships),
            ),
            RenameTenant => heard(
                t.rename_tenant(as_user(
                    token,
                    tn::RenameTenantRequest { tenant_id: o.clone(), name: "Renamed".into(), ..Default::default() },
                ))
                .await,
                &ids,
                done,
            ),
            SuspendTenant => heard(
                t.suspend_tenant(as_user(
                    token,
                    tn::SuspendTenantRequest { tenant_id: o.clone(), ..Default::default() },
                ))
                .await,
                &ids,
                done,
            ),
            CreateTenantUnder => heard(
                t.create_tenant(as_user(
                    token,
                    tn::CreateTenantRequest { name: "Sub".into(), parent_id: o.clone(), ..Default::default() },
                ))
                .await,
                &ids,
                done,
            ),
            CheckSelfIn => {
                heard(z.check(as_user(token, check(me, &o))).await, &ids, |r| r.into_inner().allowed.to_string())
            }
            BatchCheckSelfIn => heard(
                z.batch_check(as_user(
                    token,
                    az::BatchCheckRequest {
                        items: vec![az::BatchCheckItem {
                            subject_user_id: me.into(),
                            permission: "assets.view".into(),
                            tenant_id: o.clone(),
                            ..Default::default()
                        }],
                        ..Default::default()
                    },
                ))
                .await,
                &ids,
                |r| format!("{:?}", r.into_inner().decisions),
            ),
            ExplainSelfIn => heard(z.explain(as_user(token, explain(me, &o))).await, &ids, explained),
            EffectiveSelfIn => {
                heard(z.list_effective_permissions(as_user(token, effective(me, &o))).await, &ids, effective_of)
            }
            CheckRoleGrantIn => heard(z.check_role_grant(as_user(token, role_grant("", &o))).await, &ids, granted),
            LookupSubjectsIn => heard(
                z.lookup_subjects(as_user(
                    token,
                    az::LookupSubjectsRequest {
                        permission: "assets.view".into(),
                        tenant_id: o.clone(),
                        ..Default::default()
                    },
                ))
                .await,
                &ids,
                |r| format!("{:?}", r.into_inner().subjects),
            ),
            ListResourcesIn => heard(
                z.list_resources(as_user(
                    token,
                    az::ListResourcesRequest { tenant_id: o.clone(), ..Default::default() },
                ))
                .await,
                &ids,
                |r| format!("{:?}", r.into_inner().resources),
            ),
            ListResourceGrantsIn => heard(
                z.list_resource_grants(as_user(
                    token,
                    az::ListResourceGrantsRequest { tenant_id: o.clone(), user_id: me.into(), ..Default::default() },
                ))
                .await,
                &ids,
                |r| format!("{:?}", r.into_inner().grants),
            ),
            ListOverridesIn => heard(
                z.list_overrides(as_user(
                    token,
                    az::ListOverridesRequest { tenant_id: o.clone(), ..Default::default() },
                ))
                .await,
                &ids,
                |r| format!("{:?}", r.into_inner().permission_overrides),
            ),
            SetOverrideIn => heard(z.set_override(as_user(token, set_override(me, &o))).await, &ids, done),
            RegisterResourceIn => heard(
                z.register_resource(as_user(
                    token,
                    az::RegisterResourceRequest {
                        tenant_id: o.clone(),
                        resource_id: "r2".into(),
                        resource_type: "folder".into(),
                        ..Default::default()
                    },
                ))
                .await,
                &ids,
                done,
            ),
            CheckUser => {
                heard(z.check(as_user(token, check(&o, home))).await, &ids, |r| r.into_inner().allowed.to_string())
            }
            ExplainUser => heard(z.explain(as_user(token, explain(&o, home))).await, &ids, explained),
            EffectiveUser => {
                heard(z.list_effective_permissions(as_user(token, effective(&o, home))).await, &ids, effective_of)
            }
            CheckRoleGrantOn => heard(z.check_role_grant(as_user(token, role_grant(&o, home))).await, &ids, granted),
            SetOverrideOn => heard(z.set_override(as_user(token, set_override(&o, home))).await, &ids, done),
            RemoveOverrideOn => heard(
                z.remove_override(as_user(
                    token,
                    az::RemoveOverrideRequest {
                        user_id: o.clone(),
                        permission: "assets.view".into(),
                        tenant_id: home.into(),
                    },
                ))
                .await,
                &ids,
                done,
            ),
            GrantResourceAccessTo => heard(
                z.grant_resource_access(as_user(
                    token,
                    az::GrantResourceAccessRequest {
                        user_id: o.clone(),
                        tenant_id: home.into(),
                        resource_id: "r1".into(),
                        access: Some(az::grant_resource_access_request::Access::Permission("assets.view".into())),
                    },
                ))
                .await,
                &ids,
                done,
            ),
            ClearLockoutOf => heard(
                i.clear_lockout(as_user(
                    token,
                    id::ClearLockoutRequest { target: Some(id::clear_lockout_request::Target::UserId(o.clone())) },
                ))
                .await,
                &ids,
                done,
            ),
            SwitchTenantTo => heard(
                t.switch_tenant(as_user(token, tn::SwitchTenantRequest { tenant_id: o.clone() })).await,
                &ids,
                done,
            ),
            MoveTenantUnder => heard(
                t.move_tenant(as_user(
                    token,
                    tn::MoveTenantRequest { tenant_id: home.into(), new_parent_id: o.clone(), at_least_as_fresh: None },
                ))
                .await,
                &ids,
                done,
            ),
            ReactivateTenant => heard(
                t.reactivate_tenant(as_user(
                    token,
                    tn::ReactivateTenantRequest { tenant_id: o.clone(), at_least_as_fresh: None },
                ))
                .await,
                &ids,
                done,
            ),
            RemoveResourceIn => heard(
                z.remove_resource(as_user(
                    token,
                    az::RemoveResourceRequest { tenant_id: o.clone(), resource_id: "r1".into(), cascade: true },
                ))
                .await,
                &ids,
                done,
            ),
            ListRolesGrantableIn => heard(
                z.list_roles(as_user(
                    token,
                    az::ListRolesRequest { grantable_in_tenant_id: o.clone(), ..Default::default() },
                ))
                .await,
                &ids,
                |r| format!("{:?}", r.into_inner().roles.into_iter().map(|r| r.name).collect::<Vec<_>>()),
            ),
            ListOverridesOf => heard(
                z.list_overrides(as_user(
                    token,
                    az::ListOverridesRequest {
                        tenant_id: home.into(),
                        user_id: o.clone(),
                        include_global: true,
                        ..Default::default()
                    },
                ))
                .await,
                &ids,
                |r| format!("{:?}", r.into_inner().permission_overrides),
            ),
            LookupTenantsOf => heard(
                z.lookup_tenants(as_user(
                    token,
                    az::LookupTenantsRequest {
                        subject_user_id: o.clone(),
                        permission: "assets.view".into(),
                        ..Default::default()
                    },
                ))
                .await,
                &ids,
                |r| format!("{:?}", r.into_inner().tenant_ids),
            ),
            ListResourceGrantsOf => heard(
                z.list_resource_grants(as_user(
                    token,
                    az::ListResourceGrantsRequest { tenant_id: home.into(), user_id: o.clone(), ..Default::default() },
                ))
                .await,
                &ids,
                |r| format!("{:?}", r.into_inner().grants),
            ),
        }
    }
}

/// As A's administrator and as A's viewer, an object of client B answers exactly as a random
/// id, in every RPC of `service` that names one.
async fn another_clients_objects_answer_as_random_ids_in(service: &str) {
    let db = TestDatabase::fresh().await;
    let w = World::build(&db).await;
    let random = || uuid::Uuid::now_v7().to_string();
    let mut differing = Vec::new();
    let probes: Vec<Probe> = Probe::ALL.into_iter().filter(|p| p.service() == service).collect();
    assert!(!probes.is_empty());
    for probe in probes {
        for (who, caller) in [("admin of A", &w.a_admin), ("viewer of A", &w.a_viewer)] {
            let other = match probe.names() {
                Names::User if matches!(probe, Probe::ChangeMembershipRole | Probe::SetOverrideOn) => &w.b_admin.0,
                Names::User => &w.b_viewer.0,
                Names::Tenant => &w.b,
                Names::Invitation => &w.b_invitation,
            };
            let me = (caller.0.as_str(), caller.1.as_str());
            let of_b = probe.call(&w.c, me, &w.a, other).await;
            let of_nobody = probe.call(&w.c, me, &w.a, &random()).await;
            if of_b != of_nobody {
                differing.push(format!("{probe:?} as {who}:\n  B's:    {of_b}\n  random: {of_nobody}"));
            }
        }
    }
    assert!(
        differing.is_empty(),
        "{} answers tell B's objects from random ids:\n{}",
        differing.len(),
        differing.join("\n")
    );
    // B's people and invitation are untouched.
    let mut identity = w.c.identity.clone();
    let b_viewer = identity.get_user(as_user(&w.owner, id::GetUserRequest { user_id: w.b_viewer.0.clone() }));
    assert!(!b_viewer.await.unwrap().into_inner().user.unwrap().deleted);
    let mut tenancy = w.c.tenancy.clone();
    let request = tn::ListTenantMembersRequest { tenant_id: w.a.clone(), ..Default::default() };
    let members = tenancy.list_tenant_members(as_user(&w.owner, request));
    let members = members.await.unwrap().into_inner().memberships;
    assert!(
        members.iter().all(|m| m.user_id != w.b_viewer.0 && m.user_id != w.b_admin.0),
        "nobody of B was pulled into A"
    );
    w.stop().await;
}

#[tokio::test]
async fn identity_answers_for_another_clients_objects_as_for_random_ids() {
    another_clients_objects_answer_as_random_ids_in("identity").await;
}

#[tokio::test]
async fn tenancy_answers_for_another_clients_objects_as_for_random_ids() {
    another_clients_objects_answer_as_random_ids_in("tenancy").await;
}

#[tokio::test]
async fn authz_answers_for_another_clients_objects_as_for_random_ids() {
    another_clients_objects_answer_as_random_ids_in("authz").await;
}

/// Item 2's chain: A's administrator cannot pull B's users into A, change their role there,
/// override or grant them anything, or list them; a Check for them in A stays denied.
/// MSP staff may place a client user in another client; A's administrator still cannot act on
/// that user, nor see them in A's directory.
#[tokio::test]
async fn a_client_admin_cannot_pull_another_clients_users_in_but_msp_staff_may_place_them() {
    let db = TestDatabase::fresh().await;
    let w = World::build(&db).await;
    let (mut t, mut z) = (w.c.tenancy.clone(), w.c.authz.clone());
    let admin = &w.a_admin.1;
    let not_found = |r: Result<String, Status>| r.map_err(|s| (s.code(), tether_runtime::error::reason_of(&s)));
    let user_not_found = Err((Code::NotFound, Some("USER_NOT_FOUND".to_owned())));
    let add = |user: &str, role: &str| tn::AddMembershipRequest {
        user_id: user.into(),
        tenant_id: w.a.clone(),
        role: role.into(),
        make_default: false,
        at_least_as_fresh: None,
    };
    let pulled = t.add_membership(as_user(admin, add(&w.b_admin.0, "client_admin"))).await.map(|_| String::new());
    assert_eq!(not_found(pulled), user_not_found);
    let overridden = z
        .set_override(as_user(
            admin,
            az::SetOverrideRequest {
                user_id: w.b_admin.0.clone(),
                permission: "users.manage".into(),
                effect: az::OverrideEffect::Deny as i32,
                tenant_id: w.a.clone(),
                note: String::new(),
            },
        ))
        .await
        .map(|_| String::new());
    assert_eq!(not_found(overridden), user_not_found);
    let grant = az::GrantResourceAccessRequest {
        user_id: w.b_viewer.0.clone(),
        tenant_id: w.a.clone(),
        resource_id: "r1".into(),
        access: Some(az::grant_resource_access_request::Access::Permission("assets.view".into())),
    };
    let granted = z.grant_resource_access(as_user(admin, grant.clone())).await.map(|_| String::new());
    assert_eq!(not_found(granted), user_not_found);
    let probe = az::CheckRequest {
        subject_user_id: w.b_viewer.0.clone(),
        permission: "assets.view".into(),
        tenant_id: w.a.clone(),
        resource_id: "r1".into(),
        ..Default::default()
    };
    assert!(!z.check(as_service(probe.clone())).await.unwrap().into_inner().allowed, "B's viewer stays out of A");

    // MSP staff place B's viewer in A (one client user may serve several clients).
    let placed = t.add_membership(as_user(&w.owner, add(&w.b_viewer.0, "client_viewer"))).await.unwrap();
    assert_eq!(placed.into_inner().membership.unwrap().tenant_id, w.a);
    eventually("authz sees the placement", || {
        let mut z = z.clone();
        let probe = probe.clone();
        async move {
            if z.check(as_service(probe)).await?.into_inner().allowed { Ok(()) } else { Err(Status::unavailable("")) }
        }
    })
    .await;
    // A's administrator still cannot act on them, nor list them, though they are a member of A.
    let changed = t
        .change_membership_role(as_user(
            admin,
            tn::ChangeMembershipRoleRequest {
                user_id: w.b_viewer.0.clone(),
                tenant_id: w.a.clone(),
                role: "client_admin".into(),
                at_least_as_fresh: None,
            },
        ))
        .await
        .map(|_| String::new());
    assert_eq!(not_found(changed), user_not_found);
    let granted = z.grant_resource_access(as_user(admin, grant)).await.map(|_| String::new());
    assert_eq!(not_found(granted), user_not_found);
    let directory = |token: String| {
        let mut t = t.clone();
        let tenant = w.a.clone();
        async move {
            let request = tn::ListTenantMembersRequest { tenant_id: tenant, page_size: 1, ..Default::default() };
            let mut request = request;
            let mut seen = Vec::new();
            loop {
                let page = t.list_tenant_members(as_user(&token, request.clone())).await.unwrap().into_inner();
                seen.extend(page.memberships.into_iter().map(|m| m.user_id));
                if page.next_page_token.is_empty() {
                    return seen;
                }
                request.page_token = page.next_page_token;
            }
        }
    };
    let mut own = vec![w.a_admin.0.clone(), w.a_viewer.0.clone()];
    own.sort();
    assert_eq!(directory(admin.clone()).await, own, "A's directory, as A's administrator, lists A's own people");
    assert!(directory(w.owner.clone()).await.contains(&w.b_viewer.0), "MSP staff see everyone placed in A");
    // The department's user is A's: A's administrator may act on them.
    let dept_user = t
        .list_user_tenants(as_user(
            admin,
            tn::ListUserTenantsRequest { user_id: w.a1_user.clone(), ..Default::default() },
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(dept_user.tenants.len(), 1);
    assert_eq!(dept_user.tenants[0].tenant.as_ref().unwrap().tenant_id, w.a1);
    let _ = (&w.b, &w.b_admin.1, &w.b_viewer.1);
    w.stop().await;
}
