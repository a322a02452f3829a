//! The catalog, custom roles, overrides, resource hierarchies and delegation over gRPC, stored
//! in authz's schema.

mod common;

use common::*;
use tether_proto::{
    authz::v1 as pb,
    common::v1::{ErrorReason, MembershipKind, RevisionSource},
};
use tether_runtime::error::reason_of;
use tether_tests::TestDatabase;
use tonic::Code;
use uuid::Uuid;

fn reason(status: &tonic::Status) -> String {
    reason_of(status).unwrap_or_default()
}

#[tokio::test]
async fn the_default_pack_is_seed_000_and_custom_roles_are_stored_and_decide() {
    let db = TestDatabase::fresh().await;
    let up = Upstreams::start().await;
    let w = World::seed(&up);
    let authz = start_serving(&db, &up, &[]).await;
    let mut c = authz.client.clone();

    let perms = c.list_permissions(pb::ListPermissionsRequest::default()).await.unwrap().into_inner().permissions;
    assert_eq!(perms.len(), 17);
    assert_eq!(perms.iter().filter(|p| p.platform).count(), 6);
    let pack = c.get_active_pack(pb::GetActivePackRequest {}).await.unwrap().into_inner().pack.unwrap();
    assert_eq!((pack.name.as_str(), pack.owner_role.as_str()), ("msp-assets", "msp_owner"));
    assert_eq!(pack.invite_permission, "users.manage", "msp-assets names no invite permission of its own");
    // The contract's hex SHA-256 (64 lower-case hex digits), not a shorter fingerprint.
    assert!(pack.policy_digest.len() == 64 && pack.policy_digest.bytes().all(|b| b.is_ascii_hexdigit()));
    let roles = c.list_roles(pb::ListRolesRequest::default()).await.unwrap().into_inner().roles;
    let names: Vec<&str> = roles.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(
        names,
        vec!["msp_owner", "msp_admin", "msp_technician", "client_admin", "client_manager", "client_viewer"]
    );

    let create = |name: &str, perms: &[&str], rank: i32| pb::CreateRoleRequest {
        name: name.into(),
        display_name: "Auditor".into(),
        description: String::new(),
        permissions: perms.iter().map(|p| p.to_string()).collect(),
        scope: pb::RoleScope::OwnTenant as i32,
        rank,
        assignable: true,
        msp_staff_only: false,
    };
    let mut bare = pb::authz_service_client::AuthzServiceClient::new(authz.channel.clone());
    let e = bare.create_role(create("auditor", &["audit.view"], 20)).await.unwrap_err();
    assert_eq!((e.code(), reason(&e).as_str()), (Code::Unauthenticated, "UNAUTHENTICATED"));
    let viewer = authz.sessions.login(w.viewer, false);
    let e = c.create_role(as_user(&viewer, create("auditor", &["audit.view"], 20))).await.unwrap_err();
    assert_eq!(reason(&e), "PERMISSION_DENIED");
    let admin = authz.sessions.login(w.admin, true);
    let e = c.create_role(as_user(&admin, create("auditor", &["audit.fly"], 20))).await.unwrap_err();
    assert_eq!(reason(&e), "PERMISSION_NOT_FOUND");
    let e = c.create_role(as_user(&admin, create("Auditor!", &["audit.view"], 20))).await.unwrap_err();
    assert_eq!(reason(&e), "INVALID_FORMAT");
    let e = c.create_role(as_user(&admin, create("auditor", &["audit.view"], 95))).await.unwrap_err();
    assert_eq!(reason(&e), "ROLE_ABOVE_OWN");
    let created = c
        .create_role(as_user(&admin, create("auditor", &["audit.view", "assets.view"], 20)))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(created.role.unwrap().permissions, vec!["assets.view", "audit.view"]);
    let e = c.create_role(as_service(create("auditor", &["audit.view"], 20))).await.unwrap_err();
    assert_eq!(reason(&e), "ROLE_EXISTS");
    let e = c.create_role(as_service(create("client_admin", &["audit.view"], 20))).await.unwrap_err();
    assert_eq!(reason(&e), "ROLE_EXISTS");

    // A membership with the custom role decides like any other.
    let auditor = Uuid::new_v4();
    up.identity.push(vec![user(auditor, tether_proto::identity::v1::UserStatus::Active, false)]);
    up.tenancy.push(vec![membership(auditor, w.a, "auditor", MembershipKind::Direct)]);
    authz.eventually(auditor, "audit.view", w.a1, true).await;
    assert!(!authz.allowed(auditor, "assets.edit", w.a).await);

    let e = c.delete_role(as_service(pb::DeleteRoleRequest { name: "auditor".into() })).await.unwrap_err();
    assert_eq!(reason(&e), "ROLE_IN_USE");
    let e = c.delete_role(as_service(pb::DeleteRoleRequest { name: "client_admin".into() })).await.unwrap_err();
    assert_eq!(reason(&e), "ROLE_BUILT_IN");
    let updated = c
        .update_role(as_service(pb::UpdateRoleRequest {
            name: "auditor".into(),
            permissions: Some(pb::RolePermissions { permissions: vec!["audit.view".into(), "assets.edit".into()] }),
            ..Default::default()
        }))
        .await
        .unwrap()
        .into_inner();
    let mut request = check(auditor, "assets.edit", w.a);
    request.at_least_as_fresh = updated.consistency_token;
    assert!(c.check(request).await.unwrap().into_inner().allowed);
    // No role ranks with the owner role, whoever asks.
    let e = c
        .update_role(as_service(pb::UpdateRoleRequest {
            name: "auditor".into(),
            rank: Some(100),
            ..Default::default()
        }))
        .await
        .unwrap_err();
    assert_eq!((e.code(), reason(&e).as_str()), (Code::PermissionDenied, "ROLE_ABOVE_OWN"));
    let e = c.get_role(pb::GetRoleRequest { name: "nope".into() }).await.unwrap_err();
    assert_eq!(reason(&e), "ROLE_NOT_FOUND");
    authz.service.stop().await.unwrap();
}

#[tokio::test]
async fn client_admins_set_overrides_only_for_what_they_hold_and_every_change_is_audited() {
    let db = TestDatabase::fresh().await;
    let up = Upstreams::start().await;
    let w = World::seed(&up);
    let authz = start_serving(&db, &up, &[]).await;
    let mut c = authz.client.clone();
    let cadmin = authz.sessions.login(w.cadmin, false);
    let set = |perm: &str, effect: pb::OverrideEffect, tenant: Uuid| pb::SetOverrideRequest {
        user_id: w.viewer.to_string(),
        permission: perm.into(),
        effect: effect as i32,
        tenant_id: tenant.to_string(),
        note: "ticket 42".into(),
    };
    let reply = c
        .set_override(as_user(&cadmin, set("assets.delete", pb::OverrideEffect::Grant, w.a)))
        .await
        .unwrap()
        .into_inner();
    let mut request = check(w.viewer, "assets.delete", w.a1);
    request.at_least_as_fresh = reply.consistency_token.clone();
    assert!(c.check(request).await.unwrap().into_inner().allowed);
    assert!(!authz.allowed(w.viewer, "assets.delete", w.b).await);

    let e = c.set_override(as_user(&cadmin, set("billing.manage", pb::OverrideEffect::Grant, w.a))).await.unwrap_err();
    assert_eq!(reason(&e), "PERMISSION_DENIED");
    let e = c.set_override(as_user(&cadmin, set("assets.view", pb::OverrideEffect::Deny, w.b))).await.unwrap_err();
    assert_eq!(reason(&e), "PERMISSION_DENIED");
    let e = c.set_override(as_service(set("assets.view", pb::OverrideEffect::Unspecified, w.a))).await.unwrap_err();
    assert_eq!(reason(&e), "FIELD_REQUIRED");
    let e = c
        .set_override(as_service(pb::SetOverrideRequest {
            user_id: Uuid::new_v4().to_string(),
            ..set("assets.view", pb::OverrideEffect::Deny, w.a)
        }))
        .await
        .unwrap_err();
    assert_eq!(reason(&e), "USER_NOT_FOUND");

    // Deny wins over the grant.
    let reply = c
        .set_override(as_service(pb::SetOverrideRequest {
            tenant_id: String::new(),
            ..set("assets.delete", pb::OverrideEffect::Deny, w.a)
        }))
        .await
        .unwrap()
        .into_inner();
    let mut request = check(w.viewer, "assets.delete", w.a);
    request.at_least_as_fresh = reply.consistency_token;
    assert!(!c.check(request).await.unwrap().into_inner().allowed);

    let listed = c
        .list_overrides(as_user(
            &cadmin,
            pb::ListOverridesRequest { tenant_id: w.a.to_string(), include_global: true, ..Default::default() },
        ))
        .await
        .unwrap()
        .into_inner()
        .permission_overrides;
    assert_eq!(listed.len(), 2);

    let remove = pb::RemoveOverrideRequest {
        user_id: w.viewer.to_string(),
        permission: "assets.delete".into(),
        tenant_id: w.a.to_string(),
    };
    c.remove_override(as_user(&cadmin, remove.clone())).await.unwrap();
    let e = c.remove_override(as_user(&cadmin, remove)).await.unwrap_err();
    assert_eq!(reason(&e), "OVERRIDE_NOT_FOUND");

    let pool = db.inspect("authz").await;
    let rows: Vec<String> = sqlx::query_scalar("SELECT payload FROM audit_outbox").fetch_all(&pool).await.unwrap();
    let actions: Vec<String> = rows
        .iter()
        .map(|p| {
            <tether_proto::common::v1::AuditEvent as prost::Message>::decode(hex::decode(p).unwrap().as_slice())
                .unwrap()
        })
        .filter(|e| e.action.starts_with("override."))
        .map(|e| {
            assert!(!e.after_json.is_empty() || !e.before_json.is_empty());
            e.action
        })
        .collect();
    assert_eq!(actions.iter().filter(|a| *a == "override.set").count(), 2);
    assert_eq!(actions.iter().filter(|a| *a == "override.remove").count(), 1);
    authz.service.stop().await.unwrap();
}

#[tokio::test]
async fn seed_001_channel_hierarchy_grants_cover_descendants() {
    let db = TestDatabase::fresh().await;
    let up = Upstreams::start().await;
    let w = World::seed(&up);
    let rep = Uuid::new_v4();
    up.identity.push(vec![user(rep, tether_proto::identity::v1::UserStatus::Active, false)]);
    up.tenancy.push(vec![membership(rep, w.a, "sales_rep", MembershipKind::Direct)]);
    let authz = start_serving(&db, &up, &[("TETHER_AUTHZ_ROLE_PACK", "demand-forecast")]).await;
    let mut c = authz.client.clone();
    let node = |id: &str, parent: &str, t: &str| pb::RegisterResourceRequest {
        tenant_id: w.a.to_string(),
        resource_id: id.into(),
        resource_type: t.into(),
        parent_resource_id: parent.into(),
        display_name: id.into(),
    };
    for (id, parent, t) in [
        ("all", "", "all_channels"),
        ("retail", "all", "channel_type"),
        ("retail:eu", "retail", "region"),
        ("shop-paris", "retail:eu", "channel"),
        ("retail:us", "retail", "region"),
        ("shop-nyc", "retail:us", "channel"),
    ] {
        c.register_resource(as_service(node(id, parent, t))).await.unwrap();
    }
    let e = c.register_resource(as_service(node("retail", "shop-paris", "channel_type"))).await.unwrap_err();
    assert_eq!(reason(&e), "TREE_CYCLE");
    let e = c.register_resource(as_service(node("x", "missing", "channel"))).await.unwrap_err();
    assert_eq!(reason(&e), "RESOURCE_NOT_FOUND");
    let e = c.register_resource(as_service(node("bad id", "", "channel"))).await.unwrap_err();
    assert_eq!(reason(&e), "INVALID_FORMAT");
    // Sixteen levels at most.
    for level in 1..=16 {
        let parent = if level == 1 { String::new() } else { format!("deep-{}", level - 1) };
        c.register_resource(as_service(node(&format!("deep-{level}"), &parent, "level"))).await.unwrap();
    }
    let e = c.register_resource(as_service(node("deep-17", "deep-16", "level"))).await.unwrap_err();
    assert_eq!((e.code(), reason(&e).as_str()), (Code::FailedPrecondition, "TREE_TOO_DEEP"));
    {
        use tonic_types::StatusExt;
        let info = e.get_details_error_info().unwrap_or_else(|| panic!("no ErrorInfo"));
        assert_eq!(info.metadata.get("limit").map(String::as_str), Some("16"));
    }

    let granted = c
        .grant_resource_access(as_service(pb::GrantResourceAccessRequest {
            user_id: rep.to_string(),
            tenant_id: w.a.to_string(),
            resource_id: "retail:eu".into(),
            access: Some(pb::grant_resource_access_request::Access::Permission("channels.view".into())),
        }))
        .await
        .unwrap()
        .into_inner();
    let on = |r: &str| {
        let mut req = check(rep, "channels.view", w.a);
        req.resource_id = r.into();
        req.at_least_as_fresh = granted.consistency_token.clone();
        req
    };
    assert!(c.check(on("shop-paris")).await.unwrap().into_inner().allowed);
    assert!(!c.check(on("shop-nyc")).await.unwrap().into_inner().allowed);
    assert!(!c.check(on("all")).await.unwrap().into_inner().allowed);
    let explained = c
        .explain(pb::ExplainRequest {
            subject_user_id: rep.to_string(),
            permission: "channels.view".into(),
            tenant_id: w.a.to_string(),
            resource_id: "shop-paris".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(explained.reason, pb::DecisionReason::GrantedByResourceGrant as i32);
    assert_eq!(explained.resource_grant.unwrap().grant_id, granted.grant.as_ref().unwrap().grant_id);

    let e = c
        .remove_resource(as_service(pb::RemoveResourceRequest {
            tenant_id: w.a.to_string(),
            resource_id: "retail".into(),
            cascade: false,
        }))
        .await
        .unwrap_err();
    assert_eq!(reason(&e), "RESOURCE_HAS_CHILDREN");
    let removed = c
        .remove_resource(as_service(pb::RemoveResourceRequest {
            tenant_id: w.a.to_string(),
            resource_id: "retail:eu".into(),
            cascade: true,
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(removed.resources_removed, 2);
    let mut gone = check(rep, "channels.view", w.a);
    gone.resource_id = "shop-paris".into();
    gone.at_least_as_fresh = removed.consistency_token;
    assert_eq!(reason(&c.check(gone).await.unwrap_err()), "RESOURCE_NOT_FOUND");
    let grants = c
        .list_resource_grants(pb::ListResourceGrantsRequest { tenant_id: w.a.to_string(), ..Default::default() })
        .await
        .unwrap()
        .into_inner()
        .grants;
    assert!(grants.is_empty(), "grants on removed nodes go with them");
    authz.service.stop().await.unwrap();
}

#[tokio::test]
async fn check_role_grant_applies_the_delegation_rules() {
    let db = TestDatabase::fresh().await;
    let up = Upstreams::start().await;
    let w = World::seed(&up);
    let authz = start_serving(&db, &up, &[]).await;
    let mut c = authz.client.clone();
    let ask = |actor: Uuid, target: Option<Uuid>, tenant: Uuid, role: &str, previous: &str| pb::CheckRoleGrantRequest {
        actor_user_id: actor.to_string(),
        target_user_id: target.map(|t| t.to_string()).unwrap_or_default(),
        target_is_msp_staff: false,
        tenant_id: tenant.to_string(),
        role: role.into(),
        previous_role: previous.into(),
        at_least_as_fresh: None,
    };
    let cases = [
        (ask(w.cadmin, Some(w.viewer), w.a, "client_manager", "client_viewer"), ErrorReason::Unspecified),
        // Another client, to a client admin, is as unknown as a tenant that does not exist.
        (ask(w.cadmin, None, w.b, "client_viewer", ""), ErrorReason::TenantNotFound),
        (ask(w.cadmin, None, Uuid::new_v4(), "client_viewer", ""), ErrorReason::TenantNotFound),
        (ask(w.cadmin, Some(w.admin), w.a, "client_viewer", ""), ErrorReason::UserNotFound),
        (ask(w.cadmin, None, w.a, "msp_admin", ""), ErrorReason::MspStaffOnlyRole),
        (ask(w.admin, Some(w.tech), w.msp, "msp_owner", "msp_technician"), ErrorReason::OwnerRoleNotAssignable),
        (ask(w.admin, Some(w.cadmin), w.a, "client_viewer", "client_admin"), ErrorReason::LastAdmin),
        (ask(w.viewer, None, w.a, "client_viewer", ""), ErrorReason::PermissionDenied),
        (ask(w.admin, None, w.a, "no_such_role", ""), ErrorReason::RoleNotFound),
    ];
    for (request, want) in cases {
        let reply = c.check_role_grant(request).await.unwrap().into_inner();
        assert_eq!(reply.denial_reason, want as i32, "{}", reply.summary);
        assert_eq!(reply.allowed, want == ErrorReason::Unspecified);
        assert!(!reply.summary.is_empty());
    }
    let mut staff = ask(w.cadmin, None, w.msp, "msp_technician", "");
    staff.target_is_msp_staff = true;
    let reply = c.check_role_grant(staff).await.unwrap().into_inner();
    // The admin tenancy is not a tenant client users see: unknown to them.
    assert_eq!(reply.denial_reason, ErrorReason::TenantNotFound as i32);
    let mut staff = ask(w.tech, None, w.msp, "msp_technician", "");
    staff.target_is_msp_staff = true;
    let reply = c.check_role_grant(staff).await.unwrap().into_inner();
    assert_eq!(reply.denial_reason, ErrorReason::PermissionDenied as i32, "{}", reply.summary);

    // A tenancy write that adds a second client admin lifts the last-admin rule.
    let rev = up.tenancy.push(vec![membership(w.viewer, w.a, "client_admin", MembershipKind::Direct)]);
    let mut request = ask(w.admin, Some(w.cadmin), w.a, "client_viewer", "client_admin");
    request.at_least_as_fresh = fresh(RevisionSource::Tenancy, rev);
    assert!(c.check_role_grant(request).await.unwrap().into_inner().allowed);
    authz.service.stop().await.unwrap();
}

#[tokio::test]
async fn a_policy_file_with_errors_stops_start_up_naming_the_line() {
    let db = TestDatabase::fresh().await;
    let up = Upstreams::start().await;
    let text = include_str!("../packs/msp-assets.toml").replacen(
        "permissions = [\"assets.view\", \"assets.export\"]",
        "permissions = [\"assets.view\", \"assets.teleport\"]",
        1,
    );
    let line = text.lines().position(|l| l.contains("assets.teleport")).unwrap() + 1;
    let path = std::env::temp_dir().join(format!("policy-{}.toml", Uuid::new_v4()));
    std::fs::write(&path, &text).unwrap();
    let loaded =
        authz_svc::Config::load(&config(&db, &up, &[("TETHER_AUTHZ_POLICY_FILE", path.to_str().unwrap())])).unwrap();
    let error = match authz_svc::prepare_with(
        loaded,
        authz_svc::Deps {
            authenticator: std::sync::Arc::new(Sessions::default()),
            audit: tether_tests::AcceptingAuditSink::new(),
        },
    )
    .await
    {
        Ok(_) => panic!("a broken policy must not start"),
        Err(e) => e.to_string(),
    };
    assert!(error.contains(&format!("line {line}")) && error.contains("assets.teleport"), "{error}");

    // A valid custom file is used instead of the pack.
    let custom = include_str!("../packs/msp-assets.toml").replace("name = \"msp-assets\"", "name = \"custom\"");
    std::fs::write(&path, custom).unwrap();
    let authz = start(config(&db, &up, &[("TETHER_AUTHZ_POLICY_FILE", path.to_str().unwrap())])).await;
    let pack =
        authz.client.clone().get_active_pack(pb::GetActivePackRequest {}).await.unwrap().into_inner().pack.unwrap();
    assert_eq!(pack.name, "custom");
    authz.service.stop().await.unwrap();
    let _ = std::fs::remove_file(path);
}

fn set_override(
    user: Uuid,
    permission: &str,
    effect: pb::OverrideEffect,
    tenant: Option<Uuid>,
) -> pb::SetOverrideRequest {
    pb::SetOverrideRequest {
        user_id: user.to_string(),
        permission: permission.into(),
        effect: effect as i32,
        tenant_id: tenant.map(|t| t.to_string()).unwrap_or_default(),
        note: String::new(),
    }
}

fn remove_override(user: Uuid, permission: &str, tenant: Option<Uuid>) -> pb::RemoveOverrideRequest {
    pb::RemoveOverrideRequest {
        user_id: user.to_string(),
        permission: permission.into(),
        tenant_id: tenant.map(|t| t.to_string()).unwrap_or_default(),
    }
}

#[tokio::test]
async fn overrides_follow_the_delegation_rules_for_their_target() {
    use pb::OverrideEffect::{Deny, Grant};
    use tether_proto::identity::v1::UserStatus::Active;
    let db = TestDatabase::fresh().await;
    let up = Upstreams::start().await;
    let w = World::seed(&up);
    // A manager with permissions.manage by override; a user who is client admin of department
    // A1 (and only a viewer in A); the MSP owner.
    let (manager, deptadmin, owner) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
    up.identity.push(vec![
        user_at(manager, Active, false, Some(w.a)),
        user_at(deptadmin, Active, false, Some(w.a1)),
        user(owner, Active, true),
    ]);
    let mut changes = vec![
        membership(manager, w.a, "client_manager", MembershipKind::Direct),
        membership(deptadmin, w.a, "client_viewer", MembershipKind::Direct),
        membership(deptadmin, w.a1, "client_admin", MembershipKind::Direct),
        membership(owner, w.msp, "msp_owner", MembershipKind::Direct),
    ];
    for t in [w.a, w.a1, w.b] {
        changes.push(membership(owner, t, "msp_owner", MembershipKind::Shadow));
    }
    up.tenancy.push(changes);
    let authz = start_serving(&db, &up, &[]).await;
    let mut c = authz.client.clone();
    c.set_override(as_service(set_override(manager, "permissions.manage", Grant, Some(w.a)))).await.unwrap();
    c.set_override(as_service(set_override(w.admin, "billing.manage", Deny, Some(w.b)))).await.unwrap();
    let staff_deny =
        c.set_override(as_service(set_override(w.tech, "assets.delete", Deny, Some(w.a)))).await.unwrap().into_inner();
    let mut probe = check(manager, "permissions.manage", w.a);
    probe.at_least_as_fresh = staff_deny.consistency_token;
    assert!(c.check(probe).await.unwrap().into_inner().allowed);
    let (cadmin, mgr, admin) = (
        authz.sessions.login(w.cadmin, false),
        authz.sessions.login(manager, false),
        authz.sessions.login(w.admin, true),
    );

    // Not on oneself, neither a grant of something held nor a deny.
    let e =
        c.set_override(as_user(&cadmin, set_override(w.cadmin, "assets.view", Grant, Some(w.a)))).await.unwrap_err();
    assert_eq!((e.code(), reason(&e).as_str()), (Code::FailedPrecondition, "SELF_ACTION_FORBIDDEN"));
    let e = c.set_override(as_user(&cadmin, set_override(w.cadmin, "assets.view", Deny, Some(w.a)))).await.unwrap_err();
    assert_eq!(reason(&e), "SELF_ACTION_FORBIDDEN");
    // MSP staff are unknown to a client admin, whether an override exists or not.
    let e = c.set_override(as_user(&cadmin, set_override(w.admin, "assets.view", Deny, Some(w.a)))).await.unwrap_err();
    assert_eq!((e.code(), reason(&e).as_str()), (Code::NotFound, "USER_NOT_FOUND"));
    let e = c.remove_override(as_user(&cadmin, remove_override(w.tech, "assets.delete", Some(w.a)))).await.unwrap_err();
    assert_eq!(reason(&e), "OVERRIDE_NOT_FOUND");
    // Nobody ranked above the actor wherever the override applies (A covers department A1).
    let e = c.set_override(as_user(&mgr, set_override(w.cadmin, "assets.view", Deny, Some(w.a)))).await.unwrap_err();
    assert_eq!(reason(&e), "ROLE_ABOVE_OWN");
    let e = c.set_override(as_user(&mgr, set_override(deptadmin, "assets.view", Deny, Some(w.a)))).await.unwrap_err();
    assert_eq!(reason(&e), "ROLE_ABOVE_OWN");
    // A grant only of what the actor holds; a deny of what they manage is fine, and removable.
    let e = c.set_override(as_user(&mgr, set_override(w.viewer, "assets.delete", Grant, Some(w.a)))).await.unwrap_err();
    assert_eq!(reason(&e), "PERMISSION_DENIED");
    c.set_override(as_user(&mgr, set_override(w.viewer, "assets.delete", Deny, Some(w.a)))).await.unwrap();
    c.remove_override(as_user(&mgr, remove_override(w.viewer, "assets.delete", Some(w.a)))).await.unwrap();
    c.set_override(as_user(&cadmin, set_override(w.viewer, "assets.delete", Grant, Some(w.a)))).await.unwrap();

    // MSP staff: a global grant only of what the actor holds in every tenant.
    let e = c.set_override(as_user(&admin, set_override(w.viewer, "billing.manage", Grant, None))).await.unwrap_err();
    assert_eq!(reason(&e), "PERMISSION_DENIED");
    c.set_override(as_user(&admin, set_override(w.viewer, "billing.manage", Grant, Some(w.a)))).await.unwrap();
    c.set_override(as_user(&admin, set_override(w.viewer, "users.view", Grant, None))).await.unwrap();
    c.remove_override(as_user(&admin, remove_override(w.tech, "assets.delete", Some(w.a)))).await.unwrap();
    let e = c.set_override(as_user(&admin, set_override(owner, "assets.view", Deny, None))).await.unwrap_err();
    assert_eq!(reason(&e), "ROLE_ABOVE_OWN");
    authz.service.stop().await.unwrap();
}

#[tokio::test]
async fn resource_grants_hand_out_only_what_the_granter_holds_to_whom_they_may_see() {
    let db = TestDatabase::fresh().await;
    let up = Upstreams::start().await;
    let w = World::seed(&up);
    let authz = start_serving(&db, &up, &[]).await;
    let mut c = authz.client.clone();
    c.register_resource(as_service(pb::RegisterResourceRequest {
        tenant_id: w.a.to_string(),
        resource_id: "site-1".into(),
        resource_type: "site".into(),
        parent_resource_id: String::new(),
        display_name: "Site 1".into(),
    }))
    .await
    .unwrap();
    // A low-ranked custom role holding billing.manage, which a client admin lacks.
    c.create_role(as_service(pb::CreateRoleRequest {
        name: "biller".into(),
        display_name: "Biller".into(),
        description: String::new(),
        permissions: vec!["billing.manage".into()],
        scope: pb::RoleScope::OwnTenant as i32,
        rank: 5,
        assignable: true,
        msp_staff_only: false,
    }))
    .await
    .unwrap();
    // A custom role that is not handed out directly.
    c.create_role(as_service(pb::CreateRoleRequest {
        name: "unlisted".into(),
        display_name: "Unlisted".into(),
        description: String::new(),
        permissions: vec!["assets.view".into()],
        scope: pb::RoleScope::OwnTenant as i32,
        rank: 5,
        assignable: false,
        msp_staff_only: false,
    }))
    .await
    .unwrap();
    use pb::grant_resource_access_request::Access;
    let grant = |user: Uuid, access: Access| pb::GrantResourceAccessRequest {
        user_id: user.to_string(),
        tenant_id: w.a.to_string(),
        resource_id: "site-1".into(),
        access: Some(access),
    };
    let (cadmin, admin) = (authz.sessions.login(w.cadmin, false), authz.sessions.login(w.admin, true));
    let refused = [
        (&cadmin, grant(w.viewer, Access::Permission("tenants.manage".into())), "PERMISSION_DENIED"),
        (&cadmin, grant(w.viewer, Access::Role("biller".into())), "PERMISSION_DENIED"),
        (&cadmin, grant(w.admin, Access::Permission("assets.view".into())), "USER_NOT_FOUND"),
        (&admin, grant(w.viewer, Access::Role("msp_technician".into())), "MSP_STAFF_ONLY_ROLE"),
        (&cadmin, grant(w.viewer, Access::Role("msp_technician".into())), "MSP_STAFF_ONLY_ROLE"),
    ];
    for (who, request, want) in refused {
        let e = c.grant_resource_access(as_user(who, request)).await.unwrap_err();
        assert_eq!(reason(&e), want, "{}", e.message());
    }
    let roles_refused = [("msp_owner", "OWNER_ROLE_NOT_ASSIGNABLE"), ("unlisted", "ROLE_NOT_ASSIGNABLE")];
    for (role, want) in roles_refused {
        let e = c.grant_resource_access(as_user(&admin, grant(w.viewer, Access::Role(role.into())))).await.unwrap_err();
        assert_eq!((e.code(), reason(&e).as_str()), (Code::PermissionDenied, want), "{}", e.message());
    }
    c.grant_resource_access(as_user(&cadmin, grant(w.viewer, Access::Role("client_manager".into())))).await.unwrap();
    c.grant_resource_access(as_user(&cadmin, grant(w.viewer, Access::Permission("assets.delete".into()))))
        .await
        .unwrap();
    c.grant_resource_access(as_user(&admin, grant(w.viewer, Access::Role("biller".into())))).await.unwrap();
    authz.service.stop().await.unwrap();
}

#[tokio::test]
async fn custom_roles_hold_only_permissions_their_author_holds_everywhere() {
    let db = TestDatabase::fresh().await;
    let up = Upstreams::start().await;
    let w = World::seed(&up);
    let authz = start_serving(&db, &up, &[]).await;
    let mut c = authz.client.clone();
    // A technician allowed to manage permissions (by a global override) but not billing.
    let written = c
        .set_override(as_service(set_override(w.tech, "permissions.manage", pb::OverrideEffect::Grant, None)))
        .await
        .unwrap()
        .into_inner();
    let mut probe = check(w.tech, "permissions.manage", w.msp);
    probe.at_least_as_fresh = written.consistency_token;
    assert!(c.check(probe).await.unwrap().into_inner().allowed);
    let tech = authz.sessions.login(w.tech, true);
    let create = |name: &str, perms: &[&str]| pb::CreateRoleRequest {
        name: name.into(),
        display_name: "Custom".into(),
        description: String::new(),
        permissions: perms.iter().map(|p| p.to_string()).collect(),
        scope: pb::RoleScope::OwnTenant as i32,
        rank: 10,
        assignable: true,
        msp_staff_only: false,
    };
    let e = c.create_role(as_user(&tech, create("biller", &["assets.view", "billing.manage"]))).await.unwrap_err();
    assert_eq!(reason(&e), "PERMISSION_DENIED");
    c.create_role(as_user(&tech, create("looker", &["assets.view", "assets.export"]))).await.unwrap();
    let widen = pb::UpdateRoleRequest {
        name: "looker".into(),
        permissions: Some(pb::RolePermissions { permissions: vec!["assets.view".into(), "billing.manage".into()] }),
        ..Default::default()
    };
    let e = c.update_role(as_user(&tech, widen.clone())).await.unwrap_err();
    assert_eq!(reason(&e), "PERMISSION_DENIED");
    let admin = authz.sessions.login(w.admin, true);
    c.update_role(as_user(&admin, widen)).await.unwrap();
    // A role ranked above the technician is not theirs to change, nor to raise one to.
    let senior = pb::CreateRoleRequest { rank: 80, ..create("senior", &["assets.view"]) };
    c.create_role(as_user(&admin, senior)).await.unwrap();
    let rename =
        pb::UpdateRoleRequest { name: "senior".into(), display_name: Some("Renamed".into()), ..Default::default() };
    let e = c.update_role(as_user(&tech, rename)).await.unwrap_err();
    assert_eq!((e.code(), reason(&e).as_str()), (Code::PermissionDenied, "ROLE_ABOVE_OWN"));
    c.create_role(as_user(&tech, create("peeker", &["assets.view"]))).await.unwrap();
    let raise = pb::UpdateRoleRequest { name: "peeker".into(), rank: Some(60), ..Default::default() };
    let e = c.update_role(as_user(&tech, raise)).await.unwrap_err();
    assert_eq!((e.code(), reason(&e).as_str()), (Code::PermissionDenied, "ROLE_ABOVE_OWN"));
    authz.service.stop().await.unwrap();
}

#[tokio::test]
async fn check_role_grant_takes_the_current_role_from_the_index_and_never_touches_the_owner() {
    use tether_proto::identity::v1::UserStatus::Active;
    let db = TestDatabase::fresh().await;
    let up = Upstreams::start().await;
    let w = World::seed(&up);
    let (senior, owner) = (Uuid::new_v4(), Uuid::new_v4());
    up.identity.push(vec![user_at(senior, Active, false, Some(w.a)), user(owner, Active, true)]);
    let authz = start_serving(&db, &up, &[]).await;
    let mut c = authz.client.clone();
    // A client role ranked above client_admin, held by `senior` in A; the owner in the MSP.
    c.create_role(as_service(pb::CreateRoleRequest {
        name: "senior_admin".into(),
        display_name: "Senior admin".into(),
        description: String::new(),
        permissions: vec!["users.manage".into()],
        scope: pb::RoleScope::OwnTenant as i32,
        rank: 60,
        assignable: true,
        msp_staff_only: false,
    }))
    .await
    .unwrap();
    let rev = up.tenancy.push(vec![
        membership(senior, w.a, "senior_admin", MembershipKind::Direct),
        membership(owner, w.msp, "msp_owner", MembershipKind::Direct),
        tether_proto::tenancy::v1::TenancyChange {
            change: Some(tether_proto::tenancy::v1::tenancy_change::Change::OwnershipTransferred(
                tether_proto::tenancy::v1::OwnershipTransferred {
                    ownership: Some(tether_proto::tenancy::v1::Ownership {
                        owner_user_id: owner.to_string(),
                        ..Default::default()
                    }),
                },
            )),
            ..Default::default()
        },
    ]);
    let ask = |actor: Uuid, target: Uuid, tenant: Uuid, role: &str, previous: &str| pb::CheckRoleGrantRequest {
        actor_user_id: actor.to_string(),
        target_user_id: target.to_string(),
        target_is_msp_staff: false,
        tenant_id: tenant.to_string(),
        role: role.into(),
        previous_role: previous.into(),
        at_least_as_fresh: fresh(RevisionSource::Tenancy, rev),
    };
    // The caller understates what the target holds: the index knows better.
    let cases = [
        (ask(w.cadmin, senior, w.a, "client_viewer", "client_viewer"), ErrorReason::RoleAboveOwn),
        (ask(w.cadmin, senior, w.a, "", "client_viewer"), ErrorReason::RoleAboveOwn),
        (ask(w.cadmin, senior, w.a, "client_viewer", ""), ErrorReason::RoleAboveOwn),
        (ask(w.admin, owner, w.msp, "msp_admin", "msp_admin"), ErrorReason::OwnerNotRemovable),
        (ask(w.admin, owner, w.msp, "", "msp_technician"), ErrorReason::OwnerNotRemovable),
        (ask(w.admin, senior, w.a, "client_viewer", "client_viewer"), ErrorReason::Unspecified),
    ];
    for (request, want) in cases {
        let reply = c.check_role_grant(request).await.unwrap().into_inner();
        assert_eq!(reply.denial_reason, want as i32, "{}", reply.summary);
    }
    authz.service.stop().await.unwrap();
}

#[tokio::test]
async fn a_stored_override_with_a_malformed_tenant_never_becomes_a_global_grant() {
    let db = TestDatabase::fresh().await;
    let up = Upstreams::start().await;
    let w = World::seed(&up);
    let authz = start_serving(&db, &up, &[]).await;
    let pool = db.inspect("authz").await;
    for (perm, effect) in [("assets.delete", "grant"), ("assets.export", "deny")] {
        sqlx::query(
            "INSERT INTO overrides (user_id, permission, tenant_id, effect, note, created_by, created_at) \
             VALUES ($1, $2, 'NOT-A-TENANT', $3, '', '', 0)",
        )
        .bind(w.viewer.to_string())
        .bind(perm)
        .bind(effect)
        .execute(&pool)
        .await
        .unwrap();
    }
    // Any write makes the replica reload its own data.
    let written = authz
        .client
        .clone()
        .set_override(as_service(set_override(w.cadmin, "audit.view", pb::OverrideEffect::Deny, Some(w.b))))
        .await
        .unwrap()
        .into_inner();
    let mut c = authz.client.clone();
    let probe = |perm: &str| {
        let mut r = check(w.viewer, perm, w.a);
        r.at_least_as_fresh = written.consistency_token.clone();
        r
    };
    assert!(!c.check(probe("assets.delete")).await.unwrap().into_inner().allowed, "a grant is skipped");
    assert!(!c.check(probe("assets.export")).await.unwrap().into_inner().allowed, "a deny fails closed");
    assert!(c.check(probe("assets.view")).await.unwrap().into_inner().allowed);
    authz.service.stop().await.unwrap();
}

/// A refusal for a full quota: RESOURCE_EXHAUSTED `LIMIT_REACHED`, the bound in the metadata.
fn assert_limit(e: &tonic::Status, limit: &str) {
    use tonic_types::StatusExt;
    assert_eq!((e.code(), reason(e).as_str()), (Code::ResourceExhausted, "LIMIT_REACHED"), "{}", e.message());
    let info = e.get_details_error_info().unwrap_or_else(|| panic!("no ErrorInfo"));
    assert_eq!(info.metadata.get("limit").map(String::as_str), Some(limit));
}

#[tokio::test]
async fn resources_grants_overrides_and_custom_roles_are_capped() {
    let db = TestDatabase::fresh().await;
    let up = Upstreams::start().await;
    let w = World::seed(&up);
    let limits = [
        ("TETHER_AUTHZ_MAX_RESOURCES_PER_TENANT", "2"),
        ("TETHER_AUTHZ_MAX_GRANTS_PER_TENANT", "2"),
        ("TETHER_AUTHZ_MAX_OVERRIDES_PER_TENANT", "2"),
        ("TETHER_AUTHZ_MAX_CUSTOM_ROLES", "1"),
    ];
    let authz = start_serving(&db, &up, &limits).await;
    let mut c = authz.client.clone();

    // Resources: per tenant; re-registering an existing one is an update, not one more.
    let node = |tenant: Uuid, id: &str| pb::RegisterResourceRequest {
        tenant_id: tenant.to_string(),
        resource_id: id.into(),
        resource_type: "site".into(),
        parent_resource_id: String::new(),
        display_name: id.into(),
    };
    c.register_resource(as_service(node(w.a, "site-1"))).await.unwrap();
    c.register_resource(as_service(node(w.a, "site-2"))).await.unwrap();
    let e = c.register_resource(as_service(node(w.a, "site-3"))).await.unwrap_err();
    assert_limit(&e, "2");
    c.register_resource(as_service(pb::RegisterResourceRequest {
        display_name: "Site one".into(),
        ..node(w.a, "site-1")
    }))
    .await
    .unwrap();
    c.register_resource(as_service(node(w.b, "site-3"))).await.unwrap();
    let listed = c
        .list_resources(pb::ListResourcesRequest { tenant_id: w.a.to_string(), ..Default::default() })
        .await
        .unwrap()
        .into_inner()
        .resources;
    assert_eq!(listed.len(), 2, "nothing of the refused write was stored");

    // Resource grants: per tenant; repeating an identical grant adds nothing.
    use pb::grant_resource_access_request::Access;
    let grant = |tenant: Uuid, perm: &str| pb::GrantResourceAccessRequest {
        user_id: w.viewer.to_string(),
        tenant_id: tenant.to_string(),
        resource_id: if tenant == w.a { "site-1" } else { "site-3" }.into(),
        access: Some(Access::Permission(perm.into())),
    };
    c.grant_resource_access(as_service(grant(w.a, "assets.edit"))).await.unwrap();
    c.grant_resource_access(as_service(grant(w.a, "assets.delete"))).await.unwrap();
    c.grant_resource_access(as_service(grant(w.a, "assets.delete"))).await.unwrap();
    let e = c.grant_resource_access(as_service(grant(w.a, "assets.create"))).await.unwrap_err();
    assert_limit(&e, "2");
    c.grant_resource_access(as_service(grant(w.b, "assets.create"))).await.unwrap();

    // Overrides: per tenant, those applying everywhere counted on their own; removing one
    // makes room again.
    let set = |perm: &str, tenant: Option<Uuid>| pb::SetOverrideRequest {
        user_id: w.viewer.to_string(),
        permission: perm.into(),
        effect: pb::OverrideEffect::Deny as i32,
        tenant_id: tenant.map(|t| t.to_string()).unwrap_or_default(),
        note: String::new(),
    };
    c.set_override(as_service(set("assets.view", Some(w.a)))).await.unwrap();
    c.set_override(as_service(set("assets.export", Some(w.a)))).await.unwrap();
    let e = c.set_override(as_service(set("audit.view", Some(w.a)))).await.unwrap_err();
    assert_limit(&e, "2");
    c.set_override(as_service(pb::SetOverrideRequest { note: "changed".into(), ..set("assets.view", Some(w.a)) }))
        .await
        .unwrap();
    c.set_override(as_service(set("audit.view", Some(w.b)))).await.unwrap();
    c.set_override(as_service(set("audit.view", None))).await.unwrap();
    c.set_override(as_service(set("assets.view", None))).await.unwrap();
    let e = c.set_override(as_service(set("assets.export", None))).await.unwrap_err();
    assert_limit(&e, "2");
    c.remove_override(as_service(pb::RemoveOverrideRequest {
        user_id: w.viewer.to_string(),
        permission: "assets.export".into(),
        tenant_id: w.a.to_string(),
    }))
    .await
    .unwrap();
    c.set_override(as_service(set("audit.view", Some(w.a)))).await.unwrap();

    // Custom roles: in all; updating the one there is fine.
    let role = |name: &str| pb::CreateRoleRequest {
        name: name.into(),
        display_name: name.into(),
        description: String::new(),
        permissions: vec!["assets.view".into()],
        scope: pb::RoleScope::OwnTenant as i32,
        rank: 5,
        assignable: true,
        msp_staff_only: false,
    };
    c.create_role(as_service(role("looker"))).await.unwrap();
    let e = c.create_role(as_service(role("auditor"))).await.unwrap_err();
    assert_limit(&e, "1");
    c.update_role(as_service(pb::UpdateRoleRequest {
        name: "looker".into(),
        display_name: Some("Looker".into()),
        ..Default::default()
    }))
    .await
    .unwrap();
    authz.service.stop().await.unwrap();
}
