//! One error contract and one vocabulary across the services, through the real gRPC API: the
//! same bad value gets the same code, reason and `google.rpc.BadRequest` field from identity,
//! tenancy and authz; a reason always travels with the code `common.proto` gives it; page sizes
//! are coerced to the maximum everywhere.

mod stack;

use stack::{as_user, eventually};

use tether_proto::{
    authz::v1::{self as az, authz_service_client::AuthzServiceClient},
    identity::v1::{self as id, identity_service_client::IdentityServiceClient},
    tenancy::v1::{self as tn, tenancy_service_client::TenancyServiceClient},
};
use tether_tests::{RunningService, TestDatabase};
use tonic::{Code, Status, transport::Channel};
use tonic_types::StatusExt;

/// Code, reason and the BadRequest field of a refusal.
fn refusal<T: std::fmt::Debug>(result: Result<T, Status>) -> (Code, String, Option<String>) {
    let status = result.expect_err("refused");
    let details = status.get_error_details();
    let reason = details.error_info().map(|i| i.reason.clone()).unwrap_or_default();
    let field = details.bad_request().and_then(|b| b.field_violations.first()).map(|v| v.field.clone());
    (status.code(), reason, field)
}

fn invalid(reason: &str, field: &str) -> (Code, String, Option<String>) {
    (Code::InvalidArgument, reason.to_owned(), Some(field.to_owned()))
}

struct Stack {
    _services: Vec<RunningService>,
    identity: IdentityServiceClient<Channel>,
    tenancy: TenancyServiceClient<Channel>,
    authz: AuthzServiceClient<Channel>,
    owner: String,
    client: String,
}

impl Stack {
    async fn start(db: &TestDatabase) -> Self {
        let services = stack::start_all_with(db, &[]).await;
        let identity = IdentityServiceClient::new(services[0].channel().await);
        let tenancy = TenancyServiceClient::new(services[1].channel().await);
        let authz = AuthzServiceClient::new(services[2].channel().await);
        let owner = eventually("owner login", || {
            let mut identity = identity.clone();
            async move {
                let request = id::LoginRequest {
                    email: stack::OWNER_EMAIL.into(),
                    password: stack::OWNER_PASSWORD.into(),
                    ..Default::default()
                };
                match identity.login(request).await?.into_inner().outcome.and_then(|o| o.outcome) {
                    Some(id::login_outcome::Outcome::Session(s)) => Ok(s.session_token),
                    other => Err(Status::failed_precondition(format!("no session: {other:?}"))),
                }
            }
        })
        .await;
        let client = eventually("create a client", || {
            let (mut tenancy, owner) = (tenancy.clone(), owner.clone());
            async move {
                let request = tn::CreateTenantRequest { name: "Client A".into(), ..Default::default() };
                let reply = tenancy.create_tenant(as_user(&owner, request)).await?;
                Ok(reply.into_inner().tenant.unwrap_or_default().tenant_id)
            }
        })
        .await;
        Self { _services: services, identity, tenancy, authz, owner, client }
    }
}

#[tokio::test]
async fn the_services_refuse_the_same_bad_values_the_same_way() {
    let db = TestDatabase::fresh().await;
    let s = Stack::start(&db).await;

    // An id in another spelling than the canonical one is not an id, in every service.
    let upper = s.client.to_uppercase();
    let spaced = format!(" {} ", s.client);
    for bad in [&upper, &spaced] {
        let got =
            s.tenancy.clone().get_tenant(as_user(&s.owner, tn::GetTenantRequest { tenant_id: bad.clone() })).await;
        assert_eq!(refusal(got), invalid("INVALID_UUID", "tenant_id"), "tenancy, {bad:?}");
        let got = s
            .identity
            .clone()
            .list_users(as_user(&s.owner, id::ListUsersRequest { tenant_id: bad.clone(), ..Default::default() }))
            .await;
        assert_eq!(refusal(got), invalid("INVALID_UUID", "tenant_id"), "identity, {bad:?}");
        let request = az::ListEffectivePermissionsRequest {
            subject_user_id: bad.clone(),
            tenant_id: s.client.clone(),
            ..Default::default()
        };
        let got = s.authz.clone().list_effective_permissions(as_user(&s.owner, request)).await;
        assert_eq!(refusal(got), invalid("INVALID_UUID", "subject_user_id"), "authz, {bad:?}");
    }

    // A role name follows one rule: identity refuses what tenancy would refuse.
    let long_role = "r".repeat(65);
    for (role, reason) in [(long_role.as_str(), "FIELD_TOO_LONG"), (" client_admin", "INVALID_FORMAT")] {
        let request = id::CreateUserRequest {
            email: "new@a.example".into(),
            display_name: "New".into(),
            password: "a long pass phrase for tests".into(),
            tenant_id: s.client.clone(),
            role: role.into(),
            ..Default::default()
        };
        let got = s.identity.clone().create_user(as_user(&s.owner, request)).await;
        assert_eq!(refusal(got), invalid(reason, "role"), "identity, {role:?}");
        let request = tn::AddMembershipRequest {
            user_id: uuid::Uuid::new_v4().to_string(),
            tenant_id: s.client.clone(),
            role: role.into(),
            ..Default::default()
        };
        let got = s.tenancy.clone().add_membership(as_user(&s.owner, request)).await;
        assert_eq!(refusal(got), invalid(reason, "role"), "tenancy, {role:?}");
    }

    // A negative page size is refused everywhere, naming the field.
    let got = s
        .identity
        .clone()
        .list_users(as_user(&s.owner, id::ListUsersRequest { page_size: -1, ..Default::default() }))
        .await;
    assert_eq!(refusal(got), invalid("VALUE_OUT_OF_RANGE", "page_size"), "identity");
    let got = s
        .tenancy
        .clone()
        .list_tenants(as_user(&s.owner, tn::ListTenantsRequest { page_size: -1, ..Default::default() }))
        .await;
    assert_eq!(refusal(got), invalid("VALUE_OUT_OF_RANGE", "page_size"), "tenancy");
    let got = s
        .authz
        .clone()
        .list_roles(as_user(&s.owner, az::ListRolesRequest { page_size: -1, ..Default::default() }))
        .await;
    assert_eq!(refusal(got), invalid("VALUE_OUT_OF_RANGE", "page_size"), "authz");
}

#[tokio::test]
async fn a_page_size_above_the_maximum_is_served_not_refused_everywhere() {
    let db = TestDatabase::fresh().await;
    let s = Stack::start(&db).await;
    let big = 100_000;
    let (mut identity, mut tenancy, mut authz) = (s.identity.clone(), s.tenancy.clone(), s.authz.clone());
    let users = identity.list_users(as_user(&s.owner, id::ListUsersRequest { page_size: big, ..Default::default() }));
    assert!(!users.await.expect("identity coerces").into_inner().users.is_empty());
    let tenants =
        tenancy.list_tenants(as_user(&s.owner, tn::ListTenantsRequest { page_size: big, ..Default::default() }));
    assert!(!tenants.await.expect("tenancy coerces").into_inner().tenants.is_empty());
    let roles = authz.list_roles(as_user(&s.owner, az::ListRolesRequest { page_size: big, ..Default::default() }));
    assert!(!roles.await.expect("authz coerces").into_inner().roles.is_empty());
}

#[tokio::test]
async fn a_role_only_msp_staff_may_hold_is_the_same_refusal_from_identity_and_tenancy() {
    let db = TestDatabase::fresh().await;
    let s = Stack::start(&db).await;
    // Giving a client user an MSP-staff-only role: FAILED_PRECONDITION, as the contract says,
    // whichever service is asked.
    let request = id::CreateUserRequest {
        email: "client.user@a.example".into(),
        display_name: "Client User".into(),
        password: "a long pass phrase for tests".into(),
        tenant_id: s.client.clone(),
        role: "msp_admin".into(),
        ..Default::default()
    };
    // authz follows tenancy's stream: until it knows the new client, the tenant is unknown.
    let got = eventually("authz knows the client", || {
        let (mut identity, owner, request) = (s.identity.clone(), s.owner.clone(), request.clone());
        async move {
            match identity.create_user(as_user(&owner, request)).await {
                Err(e) if e.code() == Code::NotFound => Err(e),
                other => Ok(other),
            }
        }
    })
    .await;
    let (code, reason, _) = refusal(got);
    assert_eq!((code, reason.as_str()), (Code::FailedPrecondition, "MSP_STAFF_ONLY_ROLE"), "identity");

    let user = eventually("create a client user", || {
        let (mut identity, owner) = (s.identity.clone(), s.owner.clone());
        let request = id::CreateUserRequest { role: "client_viewer".into(), ..request.clone() };
        async move {
            Ok(identity.create_user(as_user(&owner, request)).await?.into_inner().user.unwrap_or_default().user_id)
        }
    })
    .await;
    let request = tn::ChangeMembershipRoleRequest {
        user_id: user.clone(),
        tenant_id: s.client.clone(),
        role: "msp_admin".into(),
        ..Default::default()
    };
    let got = eventually("tenancy knows the user", || {
        let (mut tenancy, owner, request) = (s.tenancy.clone(), s.owner.clone(), request.clone());
        async move {
            match tenancy.change_membership_role(as_user(&owner, request)).await {
                Err(e) if e.code() == Code::NotFound => Err(e),
                other => Ok(other),
            }
        }
    })
    .await;
    let (code, reason, _) = refusal(got);
    assert_eq!((code, reason.as_str()), (Code::FailedPrecondition, "MSP_STAFF_ONLY_ROLE"), "tenancy");
}
