//! The request pipeline: [`Core::handle`] takes every request through the same steps, each
//! decided by the operation's row of the table (`Operation::spec`): admission of untrusted
//! requests, the audit record's commit (which is also the read barrier; a KV write's record
//! rides in the write's own entry instead, and a pure read's on a leader follows it, outcome
//! included: see `Recording`), authentication, authorization, the handler (`execute`), and the
//! outcome.

use std::sync::{Arc, Mutex};
use std::time::Instant;

use arca_crypto::Keyring;
use arca_raft::{Command, CommandResult, Guard, GuardedWrite, Op};
use arca_storage::Cf;
use tracing::{info, warn, Instrument};
use zeroize::Zeroizing;

use crate::audit::{AuditContext, AuditOutcome, AuditRecord};
use crate::codec::decrypt_json;
use crate::limits::{Class, Refusal, Ticket};
use crate::request::{OpClass, Recording, Spec};
use crate::text::cap;
use crate::token::{self, Caller, TokenInfo};
use crate::{now_ms, Core, Error, Operation, Reply, Request, Result};

impl Core {
    /// Handles one request end to end, and audits it: the reply leaves only once the request's
    /// audit record is committed (see `audit`). Seal status, health, unseal and init are not
    /// audited (a sealed node has no audit key; unseal attempts go to the node's log only).
    pub async fn handle(&self, req: Request) -> Result<Reply> {
        // The operation's row in the table (`Operation::spec`) decides everything below: its
        // name and path for the span, metrics and record, and whether and how it is authorized.
        let spec = req.op.spec();
        let span = tracing::info_span!("handle", node = self.node.id(), op = spec.name, path = %cap(&spec.path), remote = ?req.remote);
        let (started, operation) = (std::time::Instant::now(), spec.name);
        let result = self.handle_recorded(req, spec).instrument(span).await;
        let outcome = match &result {
            Ok(_) => "ok",
            Err(e) => crate::audit::outcome(e),
        };
        self.metrics.request(operation, outcome, started.elapsed().as_secs_f64());
        result
    }

    pub(crate) async fn handle_recorded(&self, mut req: Request, spec: Spec) -> Result<Reply> {
        let audited = spec.class != OpClass::Unaudited;
        #[cfg(feature = "bench-unaudited")]
        let audited = audited && self.audited;
        if !audited {
            return self.dispatch(req, &spec, &mut AuditContext::default(), true).await.inspect_err(log_failure);
        }
        let keyring = self.keyring()?;
        // The decision as this node sees it now (read-only: no use of a use-limited token is
        // taken). It goes into the record, whose commit is then the read barrier (a KV write's
        // barrier is a read index of its own, and its record rides the write); the request is
        // decided again on the current state right after, and the outcome says what happened.
        let mut pre = AuditContext::default();
        let known = self.precheck(&keyring, &req, &spec, &mut pre);
        // Bounded cost before trust: an untrusted request over its source's budget is refused
        // here, before any record is built or replicated; it is only counted.
        let remote = req.remote;
        let ticket = match untrusted(&req.op, &pre.decision) {
            Some(class) => self.admit(remote, class).await?,
            None => None,
        };
        let hasher = self.audit_hasher(&keyring).await?;
        let started = std::time::Instant::now();
        let mut record = AuditRecord {
            time_ms: now_ms(),
            request_id: match &req.request_id {
                Some(id) => id.clone(),
                None => crate::audit::request_id(),
            },
            node: self.node.id(),
            remote: req.remote.map(|r| r.to_string()).unwrap_or_default(),
            operation: spec.name.to_string(),
            path: cap(&spec.path).into_owned(),
            request_hmacs: crate::audit::hmac::request_hmacs(&hasher, &req),
            ..Default::default()
        };
        let login = req.op.checks_credentials();
        req.request_id = Some(record.request_id.clone());
        pre.fill(&mut record);
        // A seal needs no quorum (it protects): it is handled first, recorded after.
        let seal = matches!(req.op, Operation::Seal);
        // Taking a use of a use-limited token is a write of its own, which must not happen
        // before the record is committed: such a request is recorded first, whatever its row.
        let unlimited = known.as_ref().is_some_and(|(_, info)| info.uses_left.is_none());
        // A KV write that looks allowed carries its record in its own Raft entry (one commit
        // for both, see `Recording::WithWrite`).
        let with_write = spec.record == Recording::WithWrite && record.decision == "allowed" && unlimited;
        // A pure read on a leader is decided on its own state, and its record, outcome folded
        // in, commits after it in an entry of that leader's term (`Recording::After`).
        let read_term = match spec.record {
            Recording::After if unlimited => self.leader_state().await,
            _ => None,
        };
        let unrecorded = with_write || read_term.is_some();
        let mut ctx = AuditContext { known, unrecorded, ..Default::default() };
        // `folded`: the outcome goes in the record, committed before the reply leaves; with
        // `Some(term)`, in an entry of that term, the term the request was decided in.
        let (result, folded, folded_term) = if with_write {
            // The read barrier the record's commit would have been: authentication and the
            // write's decision see every write that completed before this request began.
            let term = self.write_barrier(started).await?;
            let slot = RecordSlot::holding(Deferred { record: record.seal(&keyring)?, started, term });
            let result = DEFERRED.scope(slot.clone(), self.dispatch(req, &spec, &mut ctx, false)).await;
            // Still in the slot: the request ended without writing (a CAS mismatch, a secret
            // not found, a refusal), so its record goes now, bound to the term it was decided
            // in if that was on this leader's own state.
            match slot.take() {
                Some(unwritten) => (result, true, unwritten.term),
                None => (result, false, None),
            }
        } else if let Some(term) = read_term {
            (self.dispatch(req, &spec, &mut ctx, false).await, true, Some(term))
        } else {
            // Fail closed: without a committed record the request is not handled at all.
            if !seal {
                self.batcher.commit(record.seal(&keyring)?, started).await?;
            }
            (self.dispatch(req, &spec, &mut ctx, false).await, seal, None)
        };
        // A refusal decided inside the operation (a write judged create or update on the state
        // it is guarded on) is a denial, whatever authorization saw before it.
        if matches!(result, Err(Error::PermissionDenied(_))) && ctx.decision == "allowed" {
            ctx.decision = "denied".into();
        }
        self.settle(remote, ticket, untrusted_outcome(login, &ctx.decision, &result));
        // The outcome carries only what the record does not already say.
        let changed = ctx.decision != record.decision || ctx.capability != record.capability;
        let mut outcome = AuditOutcome {
            request_id: record.request_id.clone(),
            decision: if changed { ctx.decision.clone() } else { String::new() },
            capability: if changed { ctx.capability.clone() } else { String::new() },
            duration_us: started.elapsed().as_micros() as u64,
            caller: if record.caller.accessor.is_empty() { ctx.caller.clone() } else { Default::default() },
            ..Default::default()
        };
        match &result {
            Ok(reply) => {
                outcome.outcome = "ok".into();
                outcome.response_hmacs = crate::audit::hmac::response_hmacs(&hasher, reply);
            }
            Err(e) => {
                log_failure(e);
                outcome.outcome = crate::audit::outcome(e).into();
                outcome.error = cap(&e.to_string()).into_owned();
            }
        }
        if folded {
            // One record with its outcome folded in, committed before the reply leaves.
            outcome.merge_into(&mut record);
            let sealed = record.seal(&keyring)?;
            let committed = match folded_term {
                None => self.batcher.commit(sealed, started).await.map(|()| true),
                Some(term) => self.batcher.commit_in_term(sealed, term, started).await,
            };
            let (failed, cluster_up) = match committed {
                Ok(true) => return result,
                // Committed in a later leader's term: this leader was replaced without knowing
                // it, and may have answered from what it missed.
                Ok(false) => (Error::from(arca_raft::Error::LeadershipChanged), true),
                Err(e) => (e, false),
            };
            // The answer is withheld. The record says what it would have been, and may be
            // committed (or commit yet): a stored outcome overrides the folded one. After a
            // term mismatch the cluster is up, so it is committed before the error goes; after
            // a failed commit it is committed off the reply path (a wait would only double the
            // client's), waiting for room in the queue rather than dropped when it is full.
            let correction = AuditOutcome {
                request_id: record.request_id.clone(),
                outcome: crate::audit::outcome(&failed).into(),
                error: cap(&failed.to_string()).into_owned(),
                duration_us: record.duration_us,
                ..Default::default()
            };
            let (id, sealed) = (correction.request_id.clone(), correction.seal(&keyring)?);
            if cluster_up {
                if let Err(e) = self.batcher.outcome_committed(id, sealed, started).await {
                    warn!(error = %e, "the outcome of a withheld answer was not committed");
                }
            } else {
                let batcher = self.batcher.clone();
                tokio::spawn(async move {
                    if let Err(e) = batcher.outcome_committed(id, sealed, started).await {
                        warn!(error = %e, "the outcome of a withheld answer was not committed");
                    }
                });
            }
            return Err(failed);
        } else if matches!(result, Ok(Reply::Restored(_))) {
            // The trail this request's record went into was replaced; the restored trail has
            // its own record of the restore (see `backup`), which an outcome sealed with this
            // keyring could not attach to.
        } else {
            self.batcher.outcome(outcome.request_id.clone(), outcome.seal(&keyring)?);
        }
        result
    }

    /// The term this node leads in, once its own state holds every write committed before
    /// now (`RaftNode::local_barrier`); `None` when it is no such leader, or cannot tell.
    async fn leader_state(&self) -> Option<u64> {
        self.node.local_barrier().await.unwrap_or_else(|e| {
            warn!(error = %e, "no local read barrier");
            None
        })
    }

    /// A KV write's read barrier. On the leader it is local (no quorum round; the write must
    /// then commit in the returned term, see `RaftNode::local_barrier`); elsewhere, and on a
    /// leader whose first entry is not committed yet, it is a read index through the leader.
    async fn write_barrier(&self, started: Instant) -> Result<Option<u64>> {
        if let Some(term) = self.leader_state().await {
            return Ok(Some(term));
        }
        self.batcher.barrier(started).await.map(|()| None)
    }

    /// Proposes a guarded write (`ops` if every guard holds); returns whether it applied. The
    /// first write of a request whose record travels with its write (`Recording::WithWrite`)
    /// takes that record along in the same entry; any later one goes alone. A write that was
    /// sent and not confirmed is `WriteUnconfirmed` either way: it may still apply.
    pub(crate) async fn propose_guarded(&self, guards: Vec<Guard>, ops: Vec<Op>) -> Result<bool> {
        match DEFERRED.try_with(RecordSlot::take).ok().flatten() {
            Some(Deferred { record, started, term }) => {
                let applied = self.batcher.write(record, GuardedWrite { guards, ops }, term, started).await?;
                // Decided on this leader's own state: a write that did not apply may have been
                // refused for its term, and then the decision itself (authentication included)
                // may have missed a newer leader's writes. Only a node that still leads in the
                // same term knows its entry was of that term, so its guards refused it.
                if let Some(term) = term.filter(|_| !applied) {
                    if !self.node.leads_in(term).await? {
                        return Err(arca_raft::Error::LeadershipChanged.into());
                    }
                }
                Ok(applied)
            }
            None => match self.node.write(Command::Txn { guards, ops }).await {
                Ok(resp) => Ok(resp.result == CommandResult::Applied),
                Err(e) => {
                    warn!(error = %e, "a guarded write was not confirmed");
                    Err(Error::WriteUnconfirmed)
                }
            },
        }
    }

    /// Takes a token from `remote`'s bucket of `class`, or refuses: after the source's pace, so
    /// a flood of refusals cannot take the CPU from everyone else (see `limits`).
    pub(crate) async fn admit(&self, remote: Option<std::net::SocketAddr>, class: Class) -> Result<Option<Ticket>> {
        match self.limiter.admit(remote, class) {
            Ok(ticket) => Ok(ticket),
            Err(Refusal { error, pace }) => {
                if !pace.is_zero() {
                    tokio::time::sleep(pace).await;
                }
                Err(error)
            }
        }
    }

    /// Squares a request's charge with its outcome: the token taken up front is kept if the
    /// request was what it looked like, given back if not (a login that succeeded), and a
    /// request that turned out untrusted after all is charged.
    pub(crate) fn settle(&self, remote: Option<std::net::SocketAddr>, ticket: Option<Ticket>, class: Option<Class>) {
        match (ticket, class) {
            (Some(t), Some(c)) if t.class() == c => {}
            (Some(t), c) => {
                self.limiter.refund(t);
                if let Some(c) = c {
                    self.limiter.charge(remote, c);
                }
            }
            (None, Some(c)) => self.limiter.charge(remote, c),
            (None, None) => {}
        }
    }

    /// Audits a request that a front refused before it became an operation (malformed, over a
    /// size limit, an unknown route, too many watch prefixes), like any other: one record,
    /// committed before the refusal is answered, and subject to the same limits, so refusals
    /// cannot become a way to make the cluster write. `Ok` once recorded; the front then sends
    /// its own error. `Err` (sealed, over the limit, audit unavailable) replaces it.
    pub async fn record_rejection(&self, r: Rejection) -> Result<()> {
        let keyring = self.keyring()?;
        let caller = self.stored_caller(&keyring, r.token.as_deref());
        if caller.is_none() {
            self.admit(r.remote, Class::Unauthenticated).await?;
        }
        let hasher = self.audit_hasher(&keyring).await?;
        let started = std::time::Instant::now();
        let mut record = AuditRecord {
            time_ms: now_ms(),
            request_id: match r.request_id {
                Some(id) => cap(&id).into_owned(),
                None => crate::audit::request_id(),
            },
            node: self.node.id(),
            remote: r.remote.map(|a| a.to_string()).unwrap_or_default(),
            operation: format!("Rejected.{}", cap(&r.kind)),
            path: cap(&r.path).into_owned(),
            decision: if caller.is_some() { "none" } else { "unauthenticated" }.into(),
            outcome: cap(&r.outcome).into_owned(),
            error: cap(&r.error).into_owned(),
            ..Default::default()
        };
        if let Some((_, c)) = &caller {
            record.caller = crate::audit::AuditCaller::of(&c.info);
        }
        if let Some(t) = &r.token {
            record.request_hmacs.insert("token".into(), hasher.hash(t.as_bytes()));
        }
        self.batcher.commit(record.seal(&keyring)?, started).await
    }

    /// The caller and the decision on this node's current state, without side effects. Returns
    /// the token record it decrypted, so authentication after the barrier can skip decrypting
    /// it again when it is unchanged.
    pub(crate) fn precheck(
        &self,
        keyring: &Keyring,
        req: &Request,
        spec: &Spec,
        ctx: &mut AuditContext,
    ) -> Option<(Vec<u8>, TokenInfo)> {
        if req.op.checks_credentials() {
            ctx.decision = "none".into();
            return None;
        }
        ctx.decision = "unauthenticated".into();
        let (raw, caller) = self.stored_caller(keyring, req.token.as_deref())?;
        ctx.caller(&caller.info);
        if let OpClass::Token(need) = spec.class {
            let _ = self.authorize(&caller, &req.op, &spec.path, need, ctx);
        }
        Some((raw, caller.info))
    }

    /// The token's stored record and its caller, if the token is valid now (read-only: no use
    /// of a use-limited token is taken).
    pub(crate) fn stored_caller(&self, keyring: &Keyring, token: Option<&String>) -> Option<(Vec<u8>, Caller)> {
        let t = token.filter(|t| token::well_formed(t))?;
        let key = token::storage_key(t);
        let raw = self.node.reader().get(Cf::Tokens, &key).ok()??;
        let info = decrypt_json::<TokenInfo>(keyring, &key, &raw).ok()?;
        if info.expired_at(now_ms()) {
            return None;
        }
        Some((raw, Caller { key, info }))
    }

    /// Whether `token` may still do `op`, on this node's current state, without a record of its
    /// own: for the later pages of a stream whose opening request was authorized and audited.
    /// A stream must end when its token is revoked, expires or loses the policy.
    pub fn still_allowed(&self, token: Option<&Zeroizing<String>>, op: Operation) -> Result<()> {
        let keyring = self.keyring()?;
        let mut ctx = AuditContext::default();
        let spec = op.spec();
        self.precheck(&keyring, &Request::new(token.cloned(), op), &spec, &mut ctx);
        let path = spec.path;
        match ctx.decision.as_str() {
            "allowed" => Ok(()),
            "unauthenticated" => Err(Error::PermissionDenied(
                "the stream's token is no longer valid (expired or revoked); log in again".into(),
            )),
            _ => Err(Error::PermissionDenied(format!(
                "the stream's token no longer has '{}' on '{path}'",
                ctx.capability
            ))),
        }
    }

    /// Routes a request by its class (its row in the table): unaudited ones to
    /// `execute_unaudited`, self-authenticating ones to `execute_with_credentials`, and every
    /// other one through authentication and authorization of its token to `execute`.
    /// `barrier`: whether this request still needs its read barrier (an audited request had
    /// it with its record's commit).
    pub(crate) async fn dispatch(
        &self,
        req: Request,
        spec: &Spec,
        ctx: &mut AuditContext,
        barrier: bool,
    ) -> Result<Reply> {
        let need = match spec.class {
            OpClass::Unaudited => return self.execute_unaudited(req.op).await,
            OpClass::Credentials => None,
            OpClass::Token(need) => Some(need),
        };
        let Request { token, remote, client_certs, op, request_id } = req;
        let keyring = self.keyring()?;
        // The read barrier: the next group commit through the leader (or a read index, when
        // there is nothing to commit), applied here, makes this node current, so the token
        // check and any read below see every write that completed before this request began
        // (linearizable on any node). Sealing skips it: an operator must be able to seal a node
        // that has lost its quorum (it is a protective action, so a token checked against this
        // node's own state is enough).
        if barrier && !matches!(op, Operation::Seal) {
            self.batcher.barrier(std::time::Instant::now()).await?;
        }
        let Some(need) = need else {
            ctx.decision = "none".into();
            return self.execute_with_credentials(&keyring, op, remote, &client_certs, ctx).await;
        };
        ctx.decision = "unauthenticated".into();
        let caller = self
            .authenticate(&keyring, token.as_deref().map(String::as_str), ctx.known.take(), !ctx.unrecorded)
            .await?;
        ctx.caller(&caller.info);
        self.authorize(&caller, &op, &spec.path, need, ctx)?;
        self.execute(&keyring, &caller, op, request_id).await
    }
}

tokio::task_local! {
    /// The sealed record of the request this task is handling, while it waits to travel with
    /// the request's first write (`Core::propose_guarded`). Task-local rather than a parameter:
    /// the handlers between the pipeline and the write know nothing of audit records.
    static DEFERRED: RecordSlot;
}

/// A request's sealed record, waiting for its first write.
struct Deferred {
    record: Vec<u8>,
    /// When the request arrived.
    started: Instant,
    /// The leader term the request is decided in, when its barrier was this leader's own
    /// state (`RaftNode::local_barrier`); its write must commit in that term.
    term: Option<u64>,
}

/// A request's sealed record and its arrival time, until a write takes it.
#[derive(Clone)]
struct RecordSlot(Arc<Mutex<Option<Deferred>>>);

impl RecordSlot {
    fn holding(deferred: Deferred) -> RecordSlot {
        RecordSlot(Arc::new(Mutex::new(Some(deferred))))
    }

    fn take(&self) -> Option<Deferred> {
        self.0.lock().expect("record slot lock").take()
    }
}

fn log_failure(e: &Error) {
    // Refusals over a rate limit are counted and reported in aggregate, not logged one by one.
    if matches!(e, Error::RateLimited { .. }) {
        return;
    }
    // The message never holds secrets (see `Error`); it may quote what the caller sent.
    info!(error = %cap(&e.to_string()), "request failed");
}

/// The class of untrusted request `op` is, from the pre-barrier decision: credentials checks
/// (logins, share ceremonies) are charged up front and refunded if they succeed.
fn untrusted(op: &Operation, decision: &str) -> Option<Class> {
    if op.checks_credentials() {
        return Some(Class::FailedLogin);
    }
    decided_class(decision)
}

/// The class of a request a token check or policy refused, by its decision.
fn decided_class(decision: &str) -> Option<Class> {
    match decision {
        "unauthenticated" => Some(Class::Unauthenticated),
        "denied" => Some(Class::Denied),
        _ => None,
    }
}

/// The class a handled request turned out to be, if untrusted.
fn untrusted_outcome(login: bool, decision: &str, result: &Result<Reply>) -> Option<Class> {
    match result {
        // A failure of the cluster is not the caller's.
        Err(
            Error::Cluster(_)
            | Error::AuditUnavailable
            | Error::WriteUnconfirmed
            | Error::Storage(_)
            | Error::Internal(_)
            | Error::Sealed,
        ) => None,
        Err(_) if login => Some(Class::FailedLogin),
        // Only a login that succeeded gets its charge back: a ceremony step (status, start)
        // succeeds without proving anything, so it stays charged.
        Ok(Reply::TokenCreated { .. }) if login => None,
        _ if login => Some(Class::FailedLogin),
        // Refused after authorization (a create-only token meeting an existing secret).
        Err(Error::PermissionDenied(_)) => Some(Class::Denied),
        _ => decided_class(decision),
    }
}

/// A request a front refused before it became an [`Operation`]; see [`Core::record_rejection`].
pub struct Rejection {
    /// The token the request carried, if any (only its HMAC is recorded).
    pub token: Option<Zeroizing<String>>,
    pub remote: Option<std::net::SocketAddr>,
    /// The id the front gave the request, if it made one.
    pub request_id: Option<String>,
    /// How it arrived: the HTTP method, or `grpc`.
    pub kind: String,
    /// The HTTP path or the gRPC method.
    pub path: String,
    /// The error kind, as in records (`invalid_argument`, `not_found`, …).
    pub outcome: String,
    /// The message the client gets.
    pub error: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_debug_prints_no_token() {
        let req = Request::new(Some(Zeroizing::new("arca.s.secret-token".into())), Operation::Leader);
        let printed = format!("{req:?}");
        assert!(printed.contains("redacted") && !printed.contains("secret-token"), "{printed}");
    }
}
