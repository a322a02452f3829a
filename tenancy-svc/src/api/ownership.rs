//! The MSP owner's RPCs: GetOwner and TransferOwnership.

use tether_proto::{common::v1::ErrorReason, tenancy::v1 as pb};
use tether_runtime::access::Actor;
use tonic::{Request, Response, Status};

use super::{Tenancy, guard, id, reject, store_error, token};
use crate::{
    domain::{Rejection, Transferor},
    events::{AuditContext, convert as cv},
    store::ownership,
};

impl Tenancy {
    pub(super) async fn get_owner(
        &self,
        request: Request<pb::GetOwnerRequest>,
    ) -> Result<Response<pb::GetOwnerResponse>, Status> {
        let caller = self.caller(&request).await?;
        let admin = self.admin().await?;
        self.see(&caller, &admin.id).await?;
        let owner = ownership::current(&self.database)
            .await
            .map_err(store_error)?
            .ok_or_else(|| reject(Rejection::new(ErrorReason::UserNotFound, "the MSP has no owner yet")))?;
        Ok(Response::new(pb::GetOwnerResponse { ownership: Some(cv::ownership(&owner)) }))
    }

    pub(super) async fn transfer_ownership(
        &self,
        request: Request<pb::TransferOwnershipRequest>,
    ) -> Result<Response<pb::TransferOwnershipResponse>, Status> {
        let caller = self.caller(&request).await?;
        let new_owner = id("new_owner_user_id", &request.get_ref().new_owner_user_id)?;
        let pack = self.pack().await?;
        let by = match &caller.actor {
            Actor::Service(_) => Transferor::Bootstrap,
            Actor::User(p) => {
                let owner = ownership::current(&self.database).await.map_err(store_error)?;
                if owner.is_none_or(|o| o.owner_user_id != p.user_id) {
                    return Err(reject(Rejection::new(ErrorReason::NotOwner, "only the owner may transfer ownership")));
                }
                let target =
                    self.user_info(&caller, &new_owner).await.map_err(|s| guard::on_field(s, "new_owner_user_id"))?;
                if !target.is_msp_staff {
                    return Err(reject(
                        Rejection::new(ErrorReason::NotMspStaff, "the new owner must be MSP staff")
                            .on("new_owner_user_id"),
                    ));
                }
                if !target.active {
                    return Err(reject(
                        Rejection::new(ErrorReason::UserNotActive, "the new owner must be an active user")
                            .on("new_owner_user_id"),
                    ));
                }
                Transferor::Owner(p.user_id.clone())
            }
        };
        let ctx = AuditContext::from_caller(&caller);
        let (ownership, previous_owner_membership, revision) =
            ownership::transfer(&self.database, &ctx, by, &new_owner, &pack).await.map_err(store_error)?;
        Ok(Response::new(pb::TransferOwnershipResponse {
            ownership: Some(cv::ownership(&ownership)),
            previous_owner_membership: previous_owner_membership.as_ref().map(cv::held),
            consistency_token: token(revision),
        }))
    }
}
