//! The audit trail: one record per request, committed through Raft before the response leaves.
//!
//! * A record names who (auth method, accessor, identity, policies, remote address), what
//!   (operation, Vault logical path), the decision and the outcome. Sensitive values (tokens,
//!   secret ids, JWTs, unseal shares, secret data in requests and replies) appear only as
//!   `hmac-sha256:<hex>` under the cluster audit key, which lives behind the barrier.
//! * The record (who, what, the decision) is committed *before* the request is handled: each
//!   node batches its records into one `Command::Audit` (group commit): a batch is sent at once
//!   when none is in flight, otherwise it collects for up to `flush_interval` or `max_batch`
//!   records. If the record is not committed and applied on this node within `deadline`, the
//!   request fails with "audit log unavailable" without being handled: fail closed.
//! * That commit is also the request's read barrier: once applied here, this node has every
//!   write that completed before the request arrived (linearizable reads on any node), so a
//!   request costs one shared commit, not one for the barrier and one for the record.
//! * The outcome (status, error, duration, HMACs of the reply) is attached to the record by
//!   request id in a later batch, off the reply path.
//! * Records are barrier-encrypted before they are proposed; apply numbers and chains them
//!   (`arca_raft::audit_log`).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use arca_crypto::{AuditHasher, Keyring};
use arca_raft::{Command, RaftNode};
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot, Semaphore};
use tracing::warn;

use crate::auth::Credentials;
use crate::{Error, Operation, Reply, Request, Result, TokenInfo, TokenRef};

/// The least time a record gets to commit, however long its request took.
const MIN_COMMIT_WINDOW: Duration = Duration::from_millis(500);

/// AAD of every audit record's ciphertext.
pub(crate) const RECORD_AAD: &[u8] = b"sys/audit/record";
/// Sys key of the audit HMAC key (barrier-encrypted, created at init).
pub(crate) const AUDIT_KEY: &[u8] = b"audit/key";

/// Group-commit and fail-closed settings of one node.
#[derive(Debug, Clone, Copy)]
pub struct AuditConfig {
    /// Longest a record waits for more records to share its Raft entry.
    pub flush_interval: Duration,
    /// Most records in one entry.
    pub max_batch: usize,
    /// Most bytes of records and outcomes in one entry (a single larger item goes alone).
    pub max_batch_bytes: usize,
    /// Batches in flight at once.
    pub max_in_flight: usize,
    /// A request whose record is not committed within this fails with "audit log unavailable".
    pub deadline: Duration,
    /// Retention, applied by the leader: records older than this are trimmed.
    pub retention_max_age: Option<Duration>,
    /// Retention: at most this many records are kept.
    pub retention_max_records: Option<u64>,
}

impl Default for AuditConfig {
    fn default() -> Self {
        AuditConfig {
            flush_interval: Duration::from_millis(2),
            max_batch: 512,
            max_batch_bytes: 1024 * 1024,
            max_in_flight: 4,
            deadline: Duration::from_secs(5),
            retention_max_age: None,
            retention_max_records: None,
        }
    }
}

/// Who made a request: empty for requests without a valid token.
///
/// Records and outcomes leave empty fields out when serialised: every byte of them is written
/// to the Raft log and the audit column family on every member, so their size is what audited
/// throughput pays for.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct AuditCaller {
    #[serde(skip_serializing_if = "String::is_empty")]
    pub auth_method: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub accessor: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub identity: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub policies: Vec<String>,
}

/// A new request id: 48 bits of milliseconds, then 80 random bits, hex (the layout of a
/// UUIDv7). Outcomes are stored under their request id, so ids that grow with time make those
/// inserts nearly sequential; random ids made RocksDB's memtable re-search its skip list on
/// every insert, a tenth of the audit pipeline's CPU.
pub fn request_id() -> Result<String> {
    let mut id = [0u8; 16];
    id[..6].copy_from_slice(&crate::now_ms().to_be_bytes()[2..]);
    arca_crypto::random_bytes(&mut id[6..]).map_err(|e| Error::Internal(e.to_string()))?;
    Ok(hex::encode(id))
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

impl AuditCaller {
    fn is_empty(&self) -> bool {
        self.accessor.is_empty() && self.identity.is_empty() && self.auth_method.is_empty() && self.policies.is_empty()
    }

    pub fn of(info: &TokenInfo) -> AuditCaller {
        AuditCaller {
            auth_method: info.auth.method.clone(),
            accessor: info.accessor.clone(),
            identity: if info.auth.identity.is_empty() {
                info.display_name.clone()
            } else {
                info.auth.identity.clone()
            },
            policies: info.policies.clone(),
        }
    }
}

/// One audit record, as stored (encrypted) and as listed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct AuditRecord {
    /// Sequence number in the cluster-wide chain (assigned at apply; 0 before).
    #[serde(skip_serializing_if = "is_zero")]
    pub seq: u64,
    pub time_ms: i64,
    pub request_id: String,
    pub node: u64,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub remote: String,
    pub operation: String,
    pub path: String,
    #[serde(flatten)]
    pub caller: AuditCaller,
    /// `allowed`, `denied`, `unauthenticated`, or `none` (no token needed: logins, generate-root).
    pub decision: String,
    /// The capability that was required (on allowed and denied requests).
    pub capability: String,
    /// `ok` or the error kind (`permission_denied`, `invalid_argument`, …).
    #[serde(skip_serializing_if = "String::is_empty")]
    pub outcome: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub error: String,
    #[serde(skip_serializing_if = "is_zero")]
    pub duration_us: u64,
    /// Sensitive request values by name, as HMACs.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub request_hmacs: BTreeMap<String, String>,
    /// Sensitive reply values by name, as HMACs.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub response_hmacs: BTreeMap<String, String>,
    /// On an aggregated `RateLimited` record: how many requests of its source and class were
    /// refused in its interval (each without a record of its own).
    #[serde(skip_serializing_if = "is_zero")]
    pub dropped: u64,
    /// Non-secret facts about an event the cluster recorded itself (a restore: the backup and
    /// the trail it replaced).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub details: BTreeMap<String, String>,
}

/// Longest audited text field: a longer one (a path no valid request has, an error quoting
/// one) is cut, so what an unauthenticated request can make every member store is bounded
/// whatever it sends. Valid logical paths (at most `MAX_PATH_BYTES` plus a mount prefix) fit.
pub const MAX_AUDIT_FIELD_BYTES: usize = 640;
/// What is kept of a field over the limit.
const CUT_FIELD_BYTES: usize = 128;

/// `text` if it is at most [`MAX_AUDIT_FIELD_BYTES`] long, otherwise its first bytes and how
/// long it was.
pub fn cap(text: &str) -> std::borrow::Cow<'_, str> {
    if text.len() <= MAX_AUDIT_FIELD_BYTES {
        return text.into();
    }
    let mut end = CUT_FIELD_BYTES;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…[cut: {} bytes]", &text[..end], text.len()).into()
}

/// What happened after a record was committed: attached to it by request id. Fields equal to
/// the record's own (decision, caller) are left empty and taken from the record.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct AuditOutcome {
    pub request_id: String,
    /// The decision on the current state (after the barrier); normally the record's own.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub decision: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub capability: String,
    pub outcome: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub error: String,
    pub duration_us: u64,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub response_hmacs: BTreeMap<String, String>,
    /// Who the request turned out to be (a login's new identity), when the record did not know.
    #[serde(skip_serializing_if = "AuditCaller::is_empty")]
    pub caller: AuditCaller,
}

/// AAD of outcome ciphertexts.
pub(crate) const OUTCOME_AAD: &[u8] = b"sys/audit/outcome";

fn outcome_aad(request_id: &str) -> Vec<u8> {
    [OUTCOME_AAD, b"/", request_id.as_bytes()].concat()
}

impl AuditOutcome {
    /// Sealed with its request id in the AAD: an outcome moved to another record's slot does
    /// not open there.
    pub(crate) fn seal(&self, keyring: &Keyring) -> Result<Vec<u8>> {
        crate::codec::encrypt_json(keyring, &outcome_aad(&self.request_id), self)
    }

    /// Opens the outcome stored for `request_id`, and refuses one that belongs to another
    /// request. Outcomes written before the AAD named the request open with the old AAD, and
    /// the id inside them must still match.
    fn open(keyring: &Keyring, request_id: &str, raw: &[u8]) -> Result<AuditOutcome> {
        let o: AuditOutcome = crate::codec::decrypt_json(keyring, &outcome_aad(request_id), raw)
            .or_else(|_| crate::codec::decrypt_json(keyring, OUTCOME_AAD, raw))?;
        if o.request_id != request_id {
            return Err(Error::Corrupt {
                path: format!("sys/audit/outcome/{request_id}"),
                reason: "the stored outcome belongs to another request".into(),
            });
        }
        Ok(o)
    }

    /// Writes this outcome into its record.
    pub(crate) fn merge_into(self, r: &mut AuditRecord) {
        if !self.decision.is_empty() {
            r.decision = self.decision;
            r.capability = self.capability;
        }
        if r.caller.accessor.is_empty() && !self.caller.accessor.is_empty() {
            r.caller = self.caller;
        }
        r.outcome = self.outcome;
        r.error = self.error;
        r.duration_us = self.duration_us;
        r.response_hmacs = self.response_hmacs;
    }
}

impl AuditRecord {
    pub(crate) fn seal(&self, keyring: &Keyring) -> Result<Vec<u8>> {
        crate::codec::encrypt_json(keyring, RECORD_AAD, self)
    }

    pub(crate) fn open(keyring: &Keyring, seq: u64, ciphertext: &[u8]) -> Result<AuditRecord> {
        let mut r: AuditRecord = match crate::backup::system_record(ciphertext) {
            Some(record) => record?,
            None => crate::codec::decrypt_json(keyring, RECORD_AAD, ciphertext)?,
        };
        r.seq = seq;
        Ok(r)
    }

    /// What a listing shows for a record this keyring cannot open.
    pub(crate) fn unreadable(seq: u64, e: &Error) -> AuditRecord {
        AuditRecord {
            seq,
            operation: "unreadable".into(),
            outcome: "invalid".into(),
            error: format!("this record does not open under the cluster's keyring: {e}"),
            ..Default::default()
        }
    }

    /// Opens a record and merges its outcome, if that has arrived (`unknown` otherwise: the
    /// serving node may have died between the record and the outcome).
    pub(crate) fn open_with_outcome(
        keyring: &Keyring,
        reader: &arca_storage::StateReader,
        seq: u64,
        ciphertext: &[u8],
    ) -> Result<AuditRecord> {
        let mut r = AuditRecord::open(keyring, seq, ciphertext)?;
        match arca_raft::audit_log::outcome(reader, &r.request_id)? {
            Some(raw) => match AuditOutcome::open(keyring, &r.request_id, &raw) {
                Ok(o) => o.merge_into(&mut r),
                // One bad outcome must not hide the rest of the trail: the record says so.
                Err(e) => {
                    r.outcome = "invalid".into();
                    r.error = format!("its stored outcome is not this request's: {e}");
                }
            },
            None if r.outcome.is_empty() => r.outcome = "unknown".into(),
            None => {}
        }
        Ok(r)
    }
}

/// The error kind of a failed request, for the record's outcome.
pub(crate) fn outcome(e: &Error) -> &'static str {
    match e {
        Error::Sealed => "sealed",
        Error::NotInitialized => "not_initialized",
        Error::AlreadyInitialized => "already_exists",
        Error::InvalidArgument(_) | Error::Share(_) => "invalid_argument",
        Error::MissingToken | Error::BadToken | Error::LoginFailed(_) => "unauthenticated",
        Error::PermissionDenied(_) => "permission_denied",
        Error::NotFound(_) => "not_found",
        Error::CasMismatch { .. } | Error::Rotation(_) | Error::FailedPrecondition(_) => "failed_precondition",
        Error::Conflict => "aborted",
        Error::Cluster(_) | Error::JoinFailed { .. } | Error::AuditUnavailable => "unavailable",
        Error::Storage(_) | Error::Corrupt { .. } | Error::Internal(_) => "internal",
        Error::RateLimited { .. } => "rate_limited",
    }
}

/// Which records `AuditList` returns. Empty fields do not filter.
#[derive(Debug, Clone, Default)]
pub struct AuditFilter {
    /// Records with a sequence number at or after this.
    pub from_seq: u64,
    pub since_ms: Option<i64>,
    pub until_ms: Option<i64>,
    /// Logical path prefix, e.g. `secret/data/app/`.
    pub path_prefix: String,
    pub accessor: String,
    pub identity: String,
    /// An outcome (`ok`, `permission_denied`, …) or a decision (`allowed`, `denied`).
    pub outcome: String,
    /// 0: the default (1 000); at most 10 000.
    pub limit: usize,
}

impl AuditFilter {
    pub fn matches(&self, r: &AuditRecord) -> bool {
        self.since_ms.is_none_or(|t| r.time_ms >= t)
            && self.until_ms.is_none_or(|t| r.time_ms < t)
            && r.path.starts_with(&self.path_prefix)
            && (self.accessor.is_empty() || r.caller.accessor == self.accessor)
            && (self.identity.is_empty() || r.caller.identity == self.identity)
            && (self.outcome.is_empty() || r.outcome == self.outcome || r.decision == self.outcome)
    }

    pub fn limit(&self) -> usize {
        match self.limit {
            0 => 1000,
            n => n.min(10_000),
        }
    }
}

/// What a request puts in the queue.
enum Item {
    /// A record; the request waits for its commit.
    Record(Vec<u8>),
    /// A read barrier: the request waits for the next batch's commit.
    Barrier,
    /// The outcome of an earlier record (request id, ciphertext); nobody waits for it.
    Outcome(String, Vec<u8>),
}

type Pending = (Item, Option<oneshot::Sender<std::result::Result<(), String>>>);

impl Item {
    /// Bytes this item adds to a batch's Raft entry.
    fn size(&self) -> usize {
        match self {
            Item::Record(r) => r.len(),
            Item::Barrier => 0,
            Item::Outcome(id, o) => id.len() + o.len(),
        }
    }
}

/// Adds `p` to `batch` unless that would take it over `max_bytes` (an empty batch takes
/// anything); returns `p` back if it has to wait for the next batch.
fn add(batch: &mut Vec<Pending>, bytes: &mut usize, max_bytes: usize, p: Pending) -> Option<Pending> {
    let size = p.0.size();
    if !batch.is_empty() && *bytes + size > max_bytes {
        return Some(p);
    }
    *bytes += size;
    batch.push(p);
    None
}

/// This node's group-commit queue.
#[derive(Clone)]
pub(crate) struct Batcher {
    queue: mpsc::Sender<Pending>,
    deadline: Duration,
    metrics: crate::metrics::Metrics,
}

impl Batcher {
    pub fn start(node: RaftNode, config: AuditConfig, metrics: crate::metrics::Metrics) -> Batcher {
        let (queue, rx) = mpsc::channel(config.max_batch * 8);
        tokio::spawn(run(node, config, rx, metrics.clone()));
        Batcher { queue, deadline: config.deadline, metrics }
    }

    /// Commits one sealed record; returns once it is applied on this node. The deadline counts
    /// from `started` (the request's arrival), so a request that already waited for a lost
    /// quorum fails promptly; a record always gets at least `MIN_COMMIT_WINDOW`.
    pub async fn commit(&self, record: Vec<u8>, started: std::time::Instant) -> Result<()> {
        self.enqueue(Item::Record(record), started).await
    }

    /// Queues the outcome of a committed record; it rides the next batch and nobody waits for
    /// it (it is not on the reply path). If the node dies first, the record stays, outcome
    /// `unknown`: the attempt is on record either way.
    pub fn outcome(&self, request_id: String, ciphertext: Vec<u8>) {
        if self.queue.try_send((Item::Outcome(request_id, ciphertext), None)).is_err() {
            warn!("audit queue full: an outcome is dropped (its record is committed)");
        }
    }

    /// The read barrier: returns once a batch proposed after this call is committed and applied
    /// on this node, so everything committed before the call is visible here (linearizable
    /// reads on any node). Concurrent requests share one commit, instead of one leader round
    /// trip each.
    pub async fn barrier(&self, started: std::time::Instant) -> Result<()> {
        self.enqueue(Item::Barrier, started).await
    }

    async fn enqueue(&self, item: Item, started: std::time::Instant) -> Result<()> {
        let (done, wait) = oneshot::channel();
        let committed = async {
            self.queue.send((item, Some(done))).await.map_err(|_| "the audit queue is closed".to_string())?;
            wait.await.map_err(|_| "the audit batch was dropped".to_string())?
        };
        let window = self.deadline.saturating_sub(started.elapsed()).max(MIN_COMMIT_WINDOW);
        match tokio::time::timeout(window, committed).await {
            Ok(Ok(())) => {
                self.metrics.audit_commit(started.elapsed().as_secs_f64());
                return Ok(());
            }
            Ok(Err(why)) => warn!(error = %why, "audit record not committed; failing the request closed"),
            Err(_) => {
                warn!(deadline = ?self.deadline, "audit record not committed in time; failing the request closed")
            }
        }
        self.metrics.audit_fail_closed();
        Err(Error::AuditUnavailable)
    }
}

async fn run(node: RaftNode, config: AuditConfig, mut rx: mpsc::Receiver<Pending>, metrics: crate::metrics::Metrics) {
    let in_flight = Arc::new(Semaphore::new(config.max_in_flight));
    // An item that did not fit the previous batch's byte budget opens the next one.
    let mut carried: Option<Pending> = None;
    loop {
        let first = match carried.take() {
            Some(p) => p,
            None => match rx.recv().await {
                Some(p) => p,
                None => return,
            },
        };
        let (mut batch, mut bytes) = (Vec::new(), 0);
        add(&mut batch, &mut bytes, config.max_batch_bytes, first);
        // Whatever is already queued goes along.
        while batch.len() < config.max_batch && carried.is_none() {
            match rx.try_recv() {
                Ok(p) => carried = add(&mut batch, &mut bytes, config.max_batch_bytes, p),
                Err(_) => break,
            }
        }
        // With a batch already on its way, wait a little for company: one entry for many
        // requests is what keeps audited throughput close to unaudited.
        if in_flight.available_permits() < config.max_in_flight {
            let until = tokio::time::Instant::now() + config.flush_interval;
            while batch.len() < config.max_batch && carried.is_none() {
                match tokio::time::timeout_at(until, rx.recv()).await {
                    Ok(Some(p)) => carried = add(&mut batch, &mut bytes, config.max_batch_bytes, p),
                    _ => break,
                }
            }
        }
        metrics.audit_batch(batch.len());
        let Ok(permit) = in_flight.clone().acquire_owned().await else { return };
        let node = node.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let (mut records, mut outcomes, mut waiters) = (Vec::new(), Vec::new(), Vec::new());
            for (item, waiter) in batch {
                match item {
                    Item::Record(r) => records.push(r),
                    Item::Outcome(id, o) => outcomes.push((id, o)),
                    Item::Barrier => {}
                }
                waiters.extend(waiter);
            }
            let command = if records.is_empty() && outcomes.is_empty() {
                Command::Noop
            } else {
                Command::Audit { batch_id: crate::token::random_id(16).unwrap_or_default(), records, outcomes }
            };
            let result = node.write(command).await.map(|_| ()).map_err(|e| e.to_string());
            for w in waiters {
                let _ = w.send(result.clone());
            }
        });
    }
}

/// What request handling learned about the caller, for the record.
#[derive(Debug, Default)]
pub(crate) struct AuditContext {
    pub caller: AuditCaller,
    pub decision: String,
    pub capability: String,
    /// The token record the pre-barrier check decrypted (raw bytes and contents).
    pub known: Option<(Vec<u8>, TokenInfo)>,
}

impl AuditContext {
    pub fn caller(&mut self, info: &TokenInfo) {
        self.caller = AuditCaller::of(info);
    }

    pub fn fill(self, record: &mut AuditRecord) {
        record.caller = self.caller;
        record.decision = if self.decision.is_empty() { "none".into() } else { self.decision };
        record.capability = self.capability;
    }
}

fn json_hmac<T: Serialize>(hasher: &AuditHasher, value: &T) -> String {
    let bytes = zeroize::Zeroizing::new(serde_json::to_vec(value).unwrap_or_default());
    hasher.hash(&bytes)
}

/// HMACs of the sensitive values a request carries.
pub(crate) fn request_hmacs(hasher: &AuditHasher, req: &Request) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    if let Some(t) = &req.token {
        out.insert("token".into(), hasher.hash(t.as_bytes()));
    }
    match &req.op {
        Operation::KvPut { data, .. } | Operation::KvPatch { set: data, .. } => {
            out.insert("data".into(), json_hmac(hasher, data));
        }
        Operation::Login(Credentials::AppRole { role_id, secret_id }) => {
            out.insert("role_id".into(), hasher.hash(role_id.as_bytes()));
            out.insert("secret_id".into(), hasher.hash(secret_id.as_bytes()));
        }
        Operation::Login(Credentials::Jwt { jwt, .. }) => {
            out.insert("jwt".into(), hasher.hash(jwt.as_bytes()));
        }
        Operation::GenerateRoot(step) => {
            if let crate::ceremony::CeremonyStep::Start(crate::ceremony::GenerateRootParams::Otp(otp)) = step {
                out.insert("otp".into(), hasher.hash(otp.as_bytes()));
            }
            ceremony_hmacs(hasher, step.nonce(), step.share(), &mut out);
        }
        Operation::Rekey(step) => ceremony_hmacs(hasher, step.nonce(), step.share(), &mut out),
        Operation::TokenLookup(TokenRef::Token(t))
        | Operation::TokenRevoke(TokenRef::Token(t))
        | Operation::TokenRevokeOrphan(TokenRef::Token(t))
        | Operation::TokenRenew { target: TokenRef::Token(t), .. }
        | Operation::Capabilities { target: TokenRef::Token(t), .. } => {
            out.insert("target_token".into(), hasher.hash(t.as_bytes()));
        }
        Operation::AuditHash { value } => {
            out.insert("value".into(), hasher.hash(value.as_bytes()));
        }
        _ => {}
    }
    out
}

/// A ceremony's nonce authorizes submitting to it, so audit records hold only its HMAC.
fn ceremony_hmacs(hasher: &AuditHasher, nonce: Option<&str>, share: Option<&str>, out: &mut BTreeMap<String, String>) {
    if let Some(n) = nonce {
        out.insert("nonce".into(), hasher.hash(n.as_bytes()));
    }
    if let Some(s) = share {
        out.insert("share".into(), hasher.hash(s.as_bytes()));
    }
}

/// HMACs of the sensitive values a reply carries.
pub(crate) fn response_hmacs(hasher: &AuditHasher, reply: &Reply) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    match reply {
        Reply::KvSecret { data, .. } => {
            out.insert("data".into(), json_hmac(hasher, data));
        }
        Reply::TokenCreated { token, .. } => {
            out.insert("token".into(), hasher.hash(token.as_bytes()));
        }
        Reply::SecretId { secret_id, .. } => {
            out.insert("secret_id".into(), hasher.hash(secret_id.as_bytes()));
        }
        Reply::Rekey { shares, status } => {
            for (i, share) in shares.iter().enumerate() {
                out.insert(format!("share_{}", i + 1), hasher.hash(share.as_bytes()));
            }
            ceremony_hmacs(hasher, status.nonce.as_deref(), None, &mut out);
        }
        Reply::GenerateRoot { encoded_token, status } => {
            if let Some(t) = encoded_token {
                out.insert("encoded_token".into(), hasher.hash(t.as_bytes()));
            }
            ceremony_hmacs(hasher, status.nonce.as_deref(), None, &mut out);
        }
        _ => {}
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_fields_are_cut_on_a_char_boundary() {
        assert_eq!(cap("secret/data/app/db"), "secret/data/app/db");
        let valid = format!("secret/metadata/{}", "a".repeat(crate::MAX_PATH_BYTES));
        assert_eq!(cap(&valid), valid.as_str(), "a valid logical path is kept whole");
        let long = format!("secret/data/{}", "é".repeat(20_000));
        let cut = cap(&long);
        assert!(cut.len() < 200 && cut.ends_with(&format!("[cut: {} bytes]", long.len())), "{cut}");
    }

    #[test]
    fn batches_are_bounded_by_bytes() {
        let (mut batch, mut bytes) = (Vec::new(), 0);
        let item = |n: usize| (Item::Record(vec![0; n]), None);
        // An empty batch takes even an oversized item; then items go in while they fit.
        assert!(add(&mut batch, &mut bytes, 100, item(150)).is_none());
        let (mut batch2, mut bytes2) = (Vec::new(), 0);
        assert!(add(&mut batch2, &mut bytes2, 100, item(60)).is_none());
        assert!(add(&mut batch2, &mut bytes2, 100, (Item::Barrier, None)).is_none());
        assert!(add(&mut batch2, &mut bytes2, 100, item(40)).is_none());
        assert!(add(&mut batch2, &mut bytes2, 100, item(1)).is_some(), "over the byte budget: next batch");
        assert_eq!((batch.len(), batch2.len(), bytes2), (1, 3, 100));
    }
}
