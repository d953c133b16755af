//! The Watch service: committed changes to secrets, streamed to caching clients.

use std::pin::Pin;

use arca_core::{Operation, Reply, WatchEvent, WatchKind};
use futures::Stream;
use tonic::{Request as GrpcRequest, Response, Status};
use tracing::info_span;

use super::{status, Api, R};
use crate::proto;

/// Most prefixes one stream may watch: each is authorized and audited on its own.
const MAX_PREFIXES: usize = 64;

fn kind(k: WatchKind) -> proto::watch_event::Kind {
    use proto::watch_event::Kind;
    match k {
        WatchKind::Written => Kind::Written,
        WatchKind::Deleted => Kind::Deleted,
        WatchKind::Metadata => Kind::Metadata,
        WatchKind::AccessRevoked => Kind::AccessRevoked,
        WatchKind::Reset => Kind::Reset,
        WatchKind::Progress => Kind::Progress,
    }
}

fn event(e: WatchEvent) -> proto::WatchEvent {
    proto::WatchEvent {
        seq: e.seq,
        kind: kind(e.kind).into(),
        path: e.path,
        version: e.version,
        current_version: e.current_version,
    }
}

type WatchStream = Pin<Box<dyn Stream<Item = Result<proto::WatchEvent, Status>> + Send>>;

#[tonic::async_trait]
impl proto::watch_server::Watch for Api {
    type WatchStream = WatchStream;

    async fn watch(&self, req: GrpcRequest<proto::WatchRequest>) -> R<Self::WatchStream> {
        let prefixes = req.get_ref().prefixes.clone();
        if prefixes.is_empty() || prefixes.len() > MAX_PREFIXES {
            return Err(Status::invalid_argument(format!(
                "a watch needs between 1 and {MAX_PREFIXES} prefixes, got {}",
                prefixes.len()
            )));
        }
        let slot = self.streams.acquire(crate::limits::StreamKind::Watch, super::token(&req).as_ref())?;
        // Each prefix is opened like a read of it: authorized (read on secret/data/<prefix>)
        // and audited. The events that follow are re-authorized one by one by the core.
        for prefix in &prefixes {
            self.call_as(&req, Operation::Watch { prefix: prefix.clone() }, Reply::into_done).await?;
        }
        let span = info_span!("watch", prefixes = prefixes.len(), after = ?req.get_ref().after_seq);
        let _entered = span.enter();
        let rx = self.core.watch(super::token(&req), prefixes, req.get_ref().after_seq);
        // The slot lives as long as the stream: tonic drops it when the client goes away.
        let stream = futures::stream::unfold((rx, slot), |(mut rx, slot)| async move {
            rx.recv().await.map(|item| (item.map(event).map_err(status), (rx, slot)))
        });
        Ok(Response::new(Box::pin(stream)))
    }
}
