//! The membership relay: delivers the intents identity committed with its account changes to
//! tenancy-svc, as a service call, retrying with backoff until tenancy acknowledges; only then
//! does the account become loginable (`provisioned`). tenancy's membership writes are
//! idempotent, so a delivery repeated after a crash is harmless.
//!
//! Rules (a user and their membership never diverge):
//!
//! 1. CreateUser, CreateInvitation and the bootstrap owner commit the account with
//!    `provisioned = 0` *and* a row in `membership_intents` in one transaction.
//! 2. The relay delivers each intent to tenancy-svc as a service call (`x-tether-service:
//!    identity`): `AddMembership` (the admin tenancy for MSP staff), `TransferOwnership` (bootstrap
//!    owner), or `SetUserMemberships([])` (deleted user, revoked invitation), retrying with capped
//!    exponential backoff until acknowledged; then it marks the intent delivered and the account
//!    provisioned in one transaction.
//! 3. Login refuses an unprovisioned account (audited as `MEMBERSHIP_PENDING`), so there is never a
//!    loginable user without a membership; tenancy is called only after identity committed, so
//!    there is never a membership without a user; after a crash the next start delivers the intent.
//! 4. CreateUser, CreateInvitation and AcceptInvitation wait up to
//!    `TETHER_IDENTITY_PROVISION_WAIT_MS` for the delivery, so the usual answer has both in place.
//!    The relay keeps tenancy's revision of each delivery with the intent (migration 0011), and
//!    those calls return it merged with identity's, whichever replica delivered.
//! 5. A permanent refusal by tenancy (NOT_FOUND, INVALID_ARGUMENT, FAILED_PRECONDITION,
//!    ALREADY_EXISTS, e.g. TENANT_NOT_FOUND) is compensated instead of retried: the never-loginable
//!    account becomes a tombstone (`UserDeleted`, audit `user.provision_failed` with the reason) and
//!    CreateUser or CreateInvitation answers that reason. Authentication and permission errors are
//!    retried (they are configuration).
//! 6. Calls to tenancy at request time (trait `Tenancy`; a double in tests): roles for 2FA
//!    policies; the MSP owner (`GetOwner`), asked before deactivating or deleting MSP staff since
//!    ownership may have moved (fails closed; while tenancy has no owner, the bootstrap owner
//!    counts); the tenant name for `GetInvitation`, asked live so the invitee sees the current name
//!    (empty if tenancy is unavailable).

use std::{sync::Arc, time::Duration};

use std::collections::HashMap;

use tether_proto::common::v1::{ConsistencyToken, RevisionSource};
use tether_proto::tenancy::v1::{
    AddMembershipRequest, GetAdminTenancyRequest, GetOwnerRequest, GetTenantRequest, ListUserTenantsRequest,
    SetUserMembershipsRequest, TransferOwnershipRequest, tenancy_service_client::TenancyServiceClient,
};
use tether_runtime::{
    ApiError,
    access::ServiceToken,
    client::TracedChannel,
    db::{Database, now_micros},
};
use tokio::sync::{Notify, OnceCell};
use tokio_util::sync::CancellationToken;

use crate::{
    config::RelayConfig,
    domain::two_factor::HeldRole,
    store::{accounts, intents},
};

/// What identity needs from tenancy-svc. Implemented over gRPC here; tests use a double.
#[tonic::async_trait]
pub trait Tenancy: Send + Sync + 'static {
    /// The admin tenancy's id.
    async fn admin_tenancy_id(&self) -> Result<String, ApiError>;
    /// Gives the user a direct membership (idempotent: the same one again is a success);
    /// returns tenancy's revision that holds it (its reply's consistency token).
    async fn add_membership(&self, user_id: &str, tenant_id: &str, role: &str) -> Result<u64, ApiError>;
    /// Removes every direct membership of the user (they were deleted).
    async fn clear_memberships(&self, user_id: &str) -> Result<(), ApiError>;
    /// Bootstrap: makes the user the MSP owner (accepted only while there is none); returns
    /// tenancy's revision that holds it.
    async fn transfer_ownership(&self, user_id: &str) -> Result<u64, ApiError>;
    /// Every role the user holds (memberships of any kind, active or not), each with its
    /// tenant's ancestors: what per-role 2FA policies are matched against.
    async fn user_roles(&self, user_id: &str) -> Result<Vec<HeldRole>, ApiError>;
    /// The MSP owner's user id; `None` while the MSP has none yet.
    async fn owner_id(&self) -> Result<Option<String>, ApiError>;
    /// A tenant's display name; `None` if tenancy-svc does not know the tenant.
    async fn tenant_name(&self, tenant_id: &str) -> Result<Option<String>, ApiError>;
    /// The tenant and its ancestors, nearest first; `None` if tenancy-svc does not know it.
    async fn tenant_chain(&self, tenant_id: &str) -> Result<Option<Vec<String>>, ApiError>;
}

pub const SERVICE_NAME: &str = "identity";

/// [`Tenancy`] over gRPC, calling as the identity service (service token attached).
pub struct GrpcTenancy {
    client: TenancyServiceClient<TracedChannel>,
    token: ServiceToken,
}

impl GrpcTenancy {
    pub fn new(channel: TracedChannel, token: ServiceToken) -> Arc<Self> {
        Arc::new(Self { client: TenancyServiceClient::new(channel), token })
    }

    fn request<T>(&self, message: T) -> tonic::Request<T> {
        let mut request = tonic::Request::new(message);
        self.token.attach(SERVICE_NAME, &mut request);
        request
    }
}

/// tenancy's revision in a reply's consistency token (0 if it names none).
fn tenancy_revision(token: Option<ConsistencyToken>) -> u64 {
    token
        .into_iter()
        .flat_map(|t| t.revisions)
        .filter(|r| r.source == RevisionSource::Tenancy as i32)
        .map(|r| r.value)
        .max()
        .unwrap_or(0)
}

fn from_status(status: tonic::Status) -> ApiError {
    let reason =
        tether_runtime::error::reason_from(&status).unwrap_or(tether_proto::common::v1::ErrorReason::Unavailable);
    ApiError::new(reason, format!("tenancy-svc: {}", status.message()))
}

#[tonic::async_trait]
impl Tenancy for GrpcTenancy {
    async fn admin_tenancy_id(&self) -> Result<String, ApiError> {
        let reply = self.client.clone().get_admin_tenancy(self.request(GetAdminTenancyRequest {})).await;
        let tenant = reply.map_err(from_status)?.into_inner().tenant;
        tenant.map(|t| t.tenant_id).ok_or_else(|| ApiError::internal("tenancy-svc returned no admin tenancy"))
    }

    async fn add_membership(&self, user_id: &str, tenant_id: &str, role: &str) -> Result<u64, ApiError> {
        let request = AddMembershipRequest {
            user_id: user_id.to_owned(),
            tenant_id: tenant_id.to_owned(),
            role: role.to_owned(),
            make_default: true,
            at_least_as_fresh: None,
        };
        let reply = self.client.clone().add_membership(self.request(request)).await.map_err(from_status)?;
        Ok(tenancy_revision(reply.into_inner().consistency_token))
    }

    async fn clear_memberships(&self, user_id: &str) -> Result<(), ApiError> {
        let request = SetUserMembershipsRequest {
            user_id: user_id.to_owned(),
            memberships: Vec::new(),
            default_tenant_id: String::new(),
            at_least_as_fresh: None,
        };
        self.client.clone().set_user_memberships(self.request(request)).await.map_err(from_status)?;
        Ok(())
    }

    async fn transfer_ownership(&self, user_id: &str) -> Result<u64, ApiError> {
        let request = TransferOwnershipRequest { new_owner_user_id: user_id.to_owned() };
        let reply = self.client.clone().transfer_ownership(self.request(request)).await.map_err(from_status)?;
        Ok(tenancy_revision(reply.into_inner().consistency_token))
    }

    async fn user_roles(&self, user_id: &str) -> Result<Vec<HeldRole>, ApiError> {
        self.list_roles(user_id).await
    }

    async fn owner_id(&self) -> Result<Option<String>, ApiError> {
        match self.client.clone().get_owner(self.request(GetOwnerRequest {})).await {
            Ok(reply) => Ok(reply.into_inner().ownership.map(|o| o.owner_user_id).filter(|id| !id.is_empty())),
            // "The MSP has no owner yet" (the bootstrap transfer is still pending).
            Err(status) if status.code() == tonic::Code::NotFound => Ok(None),
            Err(status) => Err(from_status(status)),
        }
    }

    async fn tenant_name(&self, tenant_id: &str) -> Result<Option<String>, ApiError> {
        let request = self.request(GetTenantRequest { tenant_id: tenant_id.to_owned() });
        match self.client.clone().get_tenant(request).await {
            Ok(reply) => Ok(reply.into_inner().tenant.map(|t| t.name)),
            Err(status) if status.code() == tonic::Code::NotFound => Ok(None),
            Err(status) => Err(from_status(status)),
        }
    }

    async fn tenant_chain(&self, tenant_id: &str) -> Result<Option<Vec<String>>, ApiError> {
        let mut chain = Vec::new();
        let mut next = tenant_id.to_owned();
        while !next.is_empty() && chain.len() < MAX_DEPTH {
            let request = self.request(GetTenantRequest { tenant_id: next.clone() });
            match self.client.clone().get_tenant(request).await {
                Ok(reply) => {
                    let parent = reply.into_inner().tenant.map(|t| t.parent_id).unwrap_or_default();
                    chain.push(std::mem::replace(&mut next, parent));
                }
                Err(status) if status.code() == tonic::Code::NotFound && chain.is_empty() => return Ok(None),
                Err(status) => return Err(from_status(status)),
            }
        }
        Ok(Some(chain))
    }
}

/// Pages read from ListUserTenants at most (500 each): far beyond any real user.
const MAX_MEMBERSHIP_PAGES: usize = 20;
/// Ancestors followed at most (the tree's depth is bounded by tenancy's configuration).
const MAX_DEPTH: usize = 32;

impl GrpcTenancy {
    async fn parent_of(&self, tenant_id: &str) -> Result<String, ApiError> {
        let request = self.request(GetTenantRequest { tenant_id: tenant_id.to_owned() });
        let reply = self.client.clone().get_tenant(request).await.map_err(from_status)?.into_inner();
        Ok(reply.tenant.map(|t| t.parent_id).unwrap_or_default())
    }

    /// ListUserTenants, every page, each membership with its tenant's ancestors.
    async fn list_roles(&self, user_id: &str) -> Result<Vec<HeldRole>, ApiError> {
        let mut listed = Vec::new();
        let mut page_token = String::new();
        for _ in 0..MAX_MEMBERSHIP_PAGES {
            let request = self.request(ListUserTenantsRequest {
                page_size: 500,
                page_token: page_token.clone(),
                user_id: user_id.to_owned(),
                kind: 0,
                include_inactive: true,
            });
            let reply = self.client.clone().list_user_tenants(request).await.map_err(from_status)?.into_inner();
            listed.extend(reply.tenants);
            if reply.next_page_token.is_empty() {
                break;
            }
            page_token = reply.next_page_token;
        }
        // Parents known from the list itself; others are asked once each.
        let mut parents: HashMap<String, String> = listed
            .iter()
            .filter_map(|ut| ut.tenant.as_ref())
            .map(|t| (t.tenant_id.clone(), t.parent_id.clone()))
            .collect();
        let mut out = Vec::new();
        for ut in listed {
            let (Some(t), Some(m)) = (ut.tenant, ut.membership) else { continue };
            let mut ancestors = Vec::new();
            let mut next = t.parent_id.clone();
            while !next.is_empty() && ancestors.len() < MAX_DEPTH {
                let parent = match parents.get(&next) {
                    Some(p) => p.clone(),
                    None => {
                        let p = self.parent_of(&next).await?;
                        parents.insert(next.clone(), p.clone());
                        p
                    }
                };
                ancestors.push(std::mem::replace(&mut next, parent));
            }
            let direct = m.kind == tether_proto::common::v1::MembershipKind::Direct as i32;
            out.push(HeldRole { tenant_id: t.tenant_id, ancestors, role: m.role, direct });
        }
        Ok(out)
    }
}

/// The admin tenancy id, asked once and remembered.
pub struct AdminTenancy {
    tenancy: Arc<dyn Tenancy>,
    id: OnceCell<String>,
}

impl AdminTenancy {
    pub fn new(tenancy: Arc<dyn Tenancy>) -> Self {
        Self { tenancy, id: OnceCell::new() }
    }

    pub async fn id(&self) -> Result<String, ApiError> {
        self.id.get_or_try_init(|| self.tenancy.admin_tenancy_id()).await.cloned()
    }
}

/// The relay task's handle: `poke` after committing an intent so it is delivered at once.
#[derive(Clone)]
pub struct Relay {
    wake: Arc<Notify>,
    /// Woken after each round of deliveries (CreateUser waits on it).
    delivered: Arc<Notify>,
}

impl Relay {
    pub fn poke(&self) {
        self.wake.notify_one();
    }

    /// Waits until the account has no undelivered intent, or `timeout` passes; true if
    /// delivered.
    pub async fn wait_provisioned(&self, db: &Database, account_id: &str, timeout: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let delivered = self.delivered.notified();
            tokio::pin!(delivered);
            delivered.as_mut().enable();
            match intents::pending_for(db.pool(), account_id).await {
                Ok(false) => return true,
                Ok(true) => {}
                Err(_) => return false,
            }
            if tokio::time::timeout_at(deadline, delivered).await.is_err() {
                return false;
            }
        }
    }
}

/// Starts the relay; it runs until `stopping` is cancelled.
pub fn spawn(
    db: Database,
    tenancy: Arc<dyn Tenancy>,
    admin: Arc<AdminTenancy>,
    config: RelayConfig,
    stopping: CancellationToken,
) -> Relay {
    let relay = Relay { wake: Arc::new(Notify::new()), delivered: Arc::new(Notify::new()) };
    let handle = relay.clone();
    tokio::spawn(async move {
        loop {
            let wait = match deliver_due(&db, tenancy.as_ref(), &admin, &config).await {
                Ok(wait) => wait,
                Err(e) => {
                    tracing::warn!(error = %e, "membership relay: database error");
                    config.retry
                }
            };
            handle.delivered.notify_waiters();
            tokio::select! {
                () = stopping.cancelled() => return,
                () = handle.wake.notified() => {}
                () = tokio::time::sleep(wait) => {}
            }
        }
    });
    relay
}

/// A refusal that retrying cannot change (unknown tenant or role, inactive tenant, a conflicting
/// membership). Authentication or permission errors are configuration problems and are retried.
fn is_permanent(e: &ApiError) -> bool {
    matches!(
        e.code(),
        tonic::Code::NotFound
            | tonic::Code::InvalidArgument
            | tonic::Code::FailedPrecondition
            | tonic::Code::AlreadyExists
    )
}

/// tenancy-svc refused the membership for good: the account (never loginable) is deleted
/// instead, so no user is left without a membership, and the refusal is recorded.
async fn compensate(db: &Database, intent: &intents::Intent, error: &ApiError) -> Result<(), sqlx::Error> {
    use tether_proto::identity::v1 as pb;
    let reason = tether_runtime::error::reason_name(error.reason);
    let mut write = super::Write::begin(db).await?;
    let account = accounts::get(write.conn(), &intent.account_id).await?;
    accounts::tombstone(write.tx(), &intent.account_id).await?;
    intents::mark_refused(write.tx(), &intent.id, reason).await?;
    let name = account.as_ref().map(|a| a.display_name.clone()).unwrap_or_default();
    let change = pb::IdentityChange {
        change: Some(pb::identity_change::Change::UserDeleted(pb::UserDeleted {
            user_id: intent.account_id.clone(),
            display_name: name,
        })),
        ..Default::default()
    };
    write.change(change);
    write.audit(
        super::audit(super::system("identity-svc/relay"), "", "user.provision_failed", "user", &intent.account_id)
            .tenant(&intent.tenant_id)
            .failed(reason)
            .metadata(serde_json::json!({ "role": intent.role, "detail": error.message }))
            .build(),
    );
    write.commit().await?;
    tracing::warn!(account_id = %intent.account_id, %reason, "tenancy-svc refused the membership; account removed");
    Ok(())
}

/// How long one delivery may take before it counts as failed.
const DELIVERY_TIMEOUT: Duration = Duration::from_secs(10);

/// Delivers every due intent; returns how long to sleep before the next one is due.
async fn deliver_due(
    db: &Database,
    tenancy: &dyn Tenancy,
    admin: &AdminTenancy,
    config: &RelayConfig,
) -> Result<Duration, sqlx::Error> {
    let now = now_micros();
    for intent in intents::due(db.pool(), now, 100).await? {
        let delivery = async {
            match intent.op {
                intents::Op::Add => {
                    let tenant = if intent.tenant_id.is_empty() { admin.id().await? } else { intent.tenant_id.clone() };
                    tenancy.add_membership(&intent.account_id, &tenant, &intent.role).await
                }
                intents::Op::Clear => tenancy.clear_memberships(&intent.account_id).await.map(|()| 0),
                intents::Op::Own => tenancy.transfer_ownership(&intent.account_id).await,
            }
        };
        // A hung call must not stall every later delivery; each operation is idempotent, so a
        // call that did land before the timeout is simply applied again on the retry.
        let outcome = tokio::time::timeout(DELIVERY_TIMEOUT, delivery).await.unwrap_or_else(|_| {
            Err(ApiError::new(tether_proto::common::v1::ErrorReason::Unavailable, "tenancy-svc did not answer in time"))
        });
        match outcome {
            Ok(tenancy_revision) => {
                // Delivery bookkeeping: `provisioned` is not streamed; the write that queued it was audited.
                let mut tx = db.begin_write().await?;
                intents::mark_delivered(&mut tx, &intent.id, tenancy_revision).await?;
                if intent.op != intents::Op::Clear {
                    accounts::mark_provisioned(&mut tx, &intent.account_id).await?;
                }
                tx.commit().await?;
                tracing::info!(account_id = %intent.account_id, op = ?intent.op, "membership delivered to tenancy-svc");
            }
            Err(e) if intent.op == intents::Op::Add && is_permanent(&e) => {
                compensate(db, &intent, &e).await?;
            }
            Err(e) => {
                let backoff =
                    config.retry.saturating_mul(1u32 << intent.attempts.clamp(0, 16) as u32).min(config.max_retry);
                tracing::warn!(account_id = %intent.account_id, error = %e, retry_in = ?backoff, "membership delivery failed");
                intents::mark_failed(db.pool(), &intent.id, &e.to_string(), now + backoff.as_micros() as i64).await?;
            }
        }
    }
    let next = intents::next_due(db.pool()).await?;
    Ok(match next {
        Some(at) => Duration::from_micros(u64::try_from(at - now_micros()).unwrap_or(0)).max(Duration::from_millis(5)),
        None => Duration::from_secs(60),
    })
}
