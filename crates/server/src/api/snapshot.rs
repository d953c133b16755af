//! `Sys.SnapshotSave` and `Sys.SnapshotRestore`: a backup file streamed in pieces each way.

use std::pin::Pin;

use arca_core::{Download, Operation, Reply, Upload};
use futures::{Stream, StreamExt};
use tonic::{Request as GrpcRequest, Response, Status, Streaming};

use super::{Api, R};
use crate::proto;

pub(crate) type SaveStream = Pin<Box<dyn Stream<Item = Result<proto::SnapshotChunk, Status>> + Send>>;

/// The pieces of a download as chunk messages; an error from the core ends the stream with a
/// status, so a client never takes a cut-short backup for a whole one.
pub(crate) fn chunks(download: Download) -> SaveStream {
    Box::pin(futures::stream::unfold(download.0, |mut rx| async move {
        let item = match rx.recv().await? {
            Ok(data) => Ok(proto::SnapshotChunk { data, force: false }),
            Err(message) => Err(Status::internal(message)),
        };
        Some((item, rx))
    }))
}

impl Api {
    pub(crate) async fn snapshot_save(&self, req: GrpcRequest<proto::SnapshotSaveRequest>) -> R<SaveStream> {
        let download = self.call_as(&req, Operation::SnapshotSave, Reply::into_snapshot).await?;
        Ok(Response::new(chunks(download)))
    }

    pub(crate) async fn snapshot_restore(
        &self,
        req: GrpcRequest<Streaming<proto::SnapshotChunk>>,
    ) -> R<proto::SnapshotRestoreResponse> {
        let (metadata, extensions, mut stream) = req.into_parts();
        // Only the first message is read before the core has authenticated the caller: it says
        // whether the restore is forced, which decides the path the policy is checked on.
        let first = stream.message().await?.unwrap_or_default();
        let force = first.force;
        let rest = stream.map(|m| m.map(|c| c.data).map_err(|s| s.message().to_string()));
        let upload = Upload(Box::pin(futures::stream::once(async move { Ok(first.data) }).chain(rest)));
        let req = GrpcRequest::from_parts(metadata, extensions, ());
        let r = self.call_as(&req, Operation::SnapshotRestore { upload, force }, Reply::into_restored).await?;
        Ok(Response::new(proto::SnapshotRestoreResponse {
            cluster_id: r.meta.cluster_id,
            keyring_term: r.meta.keyring_term,
            index: r.meta.index,
            created_ms: r.meta.created_ms,
            records: r.meta.records,
            sealed: r.sealed,
        }))
    }
}
