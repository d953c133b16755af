//! The audit trail: one record per request, committed through Raft before the response leaves.
//!
//! * A record names who (auth method, accessor, identity, policies, remote address), what
//!   (operation, Vault logical path), the decision and the outcome. Sensitive values (tokens,
//!   secret ids, JWTs, unseal shares, secret data in requests and replies) appear only as
//!   `hmac-sha256:<hex>` under the cluster audit key, which lives behind the barrier.
//! * The record (who, what, the decision) is committed *before* the request is handled: each
//!   node batches its records into one `Command::Audit` (group commit): once one of
//!   `max_in_flight` slots is free, everything queued goes, up to `max_batch` records, after
//!   waiting (`return_wait`, 5 ms by default, never longer than the last commit took) for the
//!   requests the last commit answered to come back (with a `flush_interval`, a batch behind
//!   another one in flight waits that long for company). If the record is not committed and
//!   applied on this node within `deadline`, the request fails with "audit log unavailable"
//!   without being handled: fail closed.
//! * That commit is also the request's read barrier: once applied here, this node has every
//!   write that completed before the request arrived (linearizable reads on any node), so a
//!   request costs one shared commit, not one for the barrier and one for the record.
//! * A KV write carries its record in its own Raft entry instead (`Command::AuditBatch`,
//!   `Recording::WithWrite` in the operation table): the record and the change it describes
//!   land together or not at all, and a lone writer waits for one replicated commit, not two.
//!   Its read barrier is a read index (a leader round trip, no log write), shared by
//!   concurrent requests. A write request that ends without writing (refused, invalid, not
//!   found) commits its record with the outcome folded in before it is answered.
//! * A pure read (KV get, list, metadata; policy read and list) on a leader is decided on the
//!   leader's own state (`RaftNode::local_barrier`) and its record, outcome folded in, is
//!   committed after it in an entry bound to the leader's term (`Recording::After`), before the
//!   reply leaves: one replicated item per read. The entry's term proves the state was current;
//!   in another term the answer is withheld (`LeadershipChanged`) and a stored outcome says so.
//!   A write request that ended without writing on a leader's own state commits the same way.
//! * The outcome (status, error, duration, HMACs of the reply) is attached to the record by
//!   request id in a later batch, off the reply path. Outcomes on their own wait up to 100 ms
//!   for a batch that is being sent anyway, so they rarely cost an entry of their own.
//! * Records are barrier-encrypted before they are proposed; apply numbers and chains them
//!   (`arca_raft::audit_log`).

mod batcher;
pub(crate) mod hmac;
mod record;
/// `Core`'s reading of the committed trail.
mod trail;

pub use crate::text::{cap, MAX_AUDIT_FIELD_BYTES};
pub use batcher::AuditConfig;
pub(crate) use batcher::Batcher;
/// The fuzz targets seal records the way the pipeline does (`crate::fuzzing`).
#[cfg(fuzzing)]
pub(crate) use record::RECORD_AAD;
pub(crate) use record::{outcome, AuditContext, AuditOutcome, AUDIT_KEY, SYSTEM_RECORD_PREFIX};
pub use record::{request_id, AuditCaller, AuditFilter, AuditRecord};
