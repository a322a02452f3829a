//! Watch: tenancy's change stream, for Tether services only.

use tether_proto::tenancy::v1 as pb;
use tether_runtime::events::watch_stream;
use tonic::{Request, Response, Status};

use super::{Tenancy, guard};
use crate::store::snapshot;

impl Tenancy {
    pub(super) async fn watch(
        &self,
        request: Request<pb::WatchRequest>,
    ) -> Result<Response<tonic::codegen::BoxStream<pb::WatchResponse>>, Status> {
        // The whole tree, every membership and its history: for Tether services only.
        self.require_service(&request).await?;
        let from = request.get_ref().from_revision;
        let database = self.database.clone();
        let stream = watch_stream(
            self.feed.clone(),
            from,
            move || async move { snapshot::read(&database).await.map_err(guard::store_api_error) },
            self.stopping.clone(),
            self.watch_options,
        )
        .await?;
        Ok(Response::new(stream))
    }
}
