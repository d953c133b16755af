//! The Audit service.

use std::pin::Pin;
use std::time::Duration;

use arca_core::{AuditFilter, AuditRecord, Operation, Reply};
use futures::Stream;
use tonic::{Request as GrpcRequest, Response, Status};
use zeroize::Zeroizing;

use super::{status, Api, R};
use crate::proto;

/// How often a following tail looks for newly committed records.
const TAIL_POLL: Duration = Duration::from_millis(200);

fn record(r: AuditRecord) -> proto::AuditRecord {
    proto::AuditRecord {
        seq: r.seq,
        time_ms: r.time_ms,
        request_id: r.request_id,
        node: r.node,
        remote: r.remote,
        operation: r.operation,
        path: r.path,
        auth_method: r.caller.auth_method,
        accessor: r.caller.accessor,
        identity: r.caller.identity,
        policies: r.caller.policies,
        decision: r.decision,
        capability: r.capability,
        outcome: r.outcome,
        error: r.error,
        duration_us: r.duration_us,
        request_hmacs: r.request_hmacs.into_iter().collect(),
        response_hmacs: r.response_hmacs.into_iter().collect(),
        dropped: r.dropped,
        details: r.details.into_iter().collect(),
    }
}

impl Api {
    async fn records<T>(&self, req: &GrpcRequest<T>, filter: AuditFilter) -> Result<Vec<AuditRecord>, Status> {
        let records = self.call_as(req, Operation::AuditList(filter), Reply::into_audit_records).await?;
        Ok(records)
    }
}

type TailStream = Pin<Box<dyn Stream<Item = Result<proto::AuditRecord, Status>> + Send>>;

#[tonic::async_trait]
impl proto::audit_server::Audit for Api {
    async fn list(&self, req: GrpcRequest<proto::ListAuditRequest>) -> R<proto::ListAuditResponse> {
        let r = req.get_ref();
        let filter = AuditFilter {
            from_seq: r.from_seq,
            since_ms: (r.since_ms != 0).then_some(r.since_ms),
            until_ms: (r.until_ms != 0).then_some(r.until_ms),
            path_prefix: r.path_prefix.clone(),
            accessor: r.accessor.clone(),
            identity: r.identity.clone(),
            outcome: r.outcome.clone(),
            limit: r.limit as usize,
        };
        let records = self.records(&req, filter).await?;
        Ok(Response::new(proto::ListAuditResponse { records: records.into_iter().map(record).collect() }))
    }

    type TailStream = TailStream;

    async fn tail(&self, req: GrpcRequest<proto::TailAuditRequest>) -> R<Self::TailStream> {
        let (last, follow) = (req.get_ref().last as u64, req.get_ref().follow);
        // A following tail is held open until its client leaves: bounded per token.
        let slot = match follow {
            true => Some(self.streams.acquire(crate::limits::StreamKind::AuditTail, super::token(&req).as_ref())?),
            false => None,
        };
        // The opening request is authorized and audited like any other; what follows on the
        // stream continues it.
        let from_seq = self.core.audit_head().saturating_sub(last) + 1;
        let first = self.records(&req, AuditFilter { from_seq, limit: 10_000, ..Default::default() }).await?;
        let core = self.core.clone();
        let token = super::token(&req);
        let stream = async_stream(first, follow, slot, move |from_seq| {
            let filter = AuditFilter { from_seq, limit: 10_000, ..Default::default() };
            core.audit_records_after_authorization(token.as_ref(), &filter).map_err(status)
        });
        Ok(Response::new(Box::pin(stream)))
    }

    async fn verify(&self, req: GrpcRequest<proto::VerifyAuditRequest>) -> R<proto::VerifyAuditResponse> {
        let upto = req.get_ref().upto_seq;
        let (node, v) = self
            .call_as(&req, Operation::AuditVerify { upto: (upto != 0).then_some(upto) }, Reply::into_audit_verification)
            .await?;
        Ok(Response::new(proto::VerifyAuditResponse {
            node_id: node,
            head_seq: v.head.seq,
            head_hash: hex(&v.head.hash),
            checked: v.checked,
            first_bad_seq: v.first_bad.unwrap_or(0),
        }))
    }

    async fn unused_grants(&self, req: GrpcRequest<proto::UnusedGrantsRequest>) -> R<proto::UnusedGrantsResponse> {
        let grants = self
            .call_as(&req, Operation::AuditUnusedGrants { since_ms: req.get_ref().since_ms }, Reply::into_grants)
            .await?;
        Ok(Response::new(proto::UnusedGrantsResponse {
            grants: grants
                .into_iter()
                .map(|g| proto::GrantUse {
                    policy: g.policy,
                    pattern: g.pattern,
                    capability: g.capability,
                    used: g.used,
                    holders: g.holders,
                })
                .collect(),
        }))
    }

    async fn hash(&self, req: GrpcRequest<proto::HashRequest>) -> R<proto::HashResponse> {
        let op = Operation::AuditHash { value: Zeroizing::new(req.get_ref().value.clone()) };
        let hash = self.call_as(&req, op, Reply::into_hash).await?;
        Ok(Response::new(proto::HashResponse { hash }))
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The records already read, then (when following) newly committed ones, polled every
/// [`TAIL_POLL`]. Ends when the client goes away or the node can no longer read (sealed).
fn async_stream(
    first: Vec<AuditRecord>,
    follow: bool,
    slot: Option<crate::limits::Slot>,
    next: impl Fn(u64) -> Result<Vec<AuditRecord>, Status> + Send + 'static,
) -> impl Stream<Item = Result<proto::AuditRecord, Status>> + Send {
    let (tx, rx) = tokio::sync::mpsc::channel(256);
    tokio::spawn(async move {
        // Given back when the tail ends (the client went away, or its token no longer may).
        let _slot = slot;
        let mut after = first.last().map_or(0, |r| r.seq);
        for r in first {
            if tx.send(Ok(record(r))).await.is_err() {
                return;
            }
        }
        while follow && !tx.is_closed() {
            tokio::time::sleep(TAIL_POLL).await;
            match next(after + 1) {
                Ok(records) => {
                    for r in records {
                        after = r.seq;
                        if tx.send(Ok(record(r))).await.is_err() {
                            return;
                        }
                    }
                }
                Err(e) => {
                    let _ = tx.send(Err(e)).await;
                    return;
                }
            }
        }
    });
    futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|item| (item, rx)) })
}
