//! `sys/storage/raft/snapshot` (and `snapshot-force`): the backup file as the body, streamed
//! both ways, as `bao operator raft snapshot save|restore` use it.

use arca_core::{Operation, Reply, Upload};
use axum::body::Body;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use futures::StreamExt;

use super::{no_content, Ctx, HttpError, HttpResult, Verb};

/// The snapshot routes; `None` for every other path (routed as JSON requests).
pub(crate) fn is_snapshot_route(route: &str) -> Option<bool> {
    match route {
        "sys/storage/raft/snapshot" => Some(false),
        "sys/storage/raft/snapshot-force" => Some(true),
        _ => None,
    }
}

pub(crate) async fn route(ctx: &Ctx, force: bool, body: Body) -> HttpResult {
    match (ctx.verb, force) {
        (Verb::Read, false) => save(ctx).await,
        (Verb::Write, _) => restore(ctx, force, body).await,
        (verb, _) => Err(HttpError::unsupported(
            verb,
            if force { "sys/storage/raft/snapshot-force" } else { "sys/storage/raft/snapshot" },
        )),
    }
}

async fn save(ctx: &Ctx) -> HttpResult {
    let download = ctx.call_as(Operation::SnapshotSave, Reply::into_snapshot).await?;
    // An error from the core aborts the body: the client sees a failed transfer, never a
    // short file that looks complete.
    let stream = futures::stream::unfold(download.0, |mut rx| async move {
        let item = rx.recv().await?.map(axum::body::Bytes::from).map_err(std::io::Error::other);
        Some((item, rx))
    });
    Ok((StatusCode::OK, [(header::CONTENT_TYPE, "application/gzip")], Body::from_stream(stream)).into_response())
}

async fn restore(ctx: &Ctx, force: bool, body: Body) -> HttpResult {
    let pieces = body.into_data_stream().map(|piece| piece.map(|b| b.to_vec()).map_err(|e| e.to_string()));
    let _ = ctx
        .call_as(Operation::SnapshotRestore { upload: Upload(Box::pin(pieces)), force }, Reply::into_restored)
        .await?;
    Ok(no_content())
}
