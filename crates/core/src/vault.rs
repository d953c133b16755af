//! [`Core`]: request handling for one node.

use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use crate::codec::{decrypt_json, encrypt_json};
use arca_crypto::shamir::ShareCollector;
use arca_crypto::{AuditHasher, Keyring, SecretKey};
use arca_raft::{Command, CommandResult, Guard, Op, RaftNode};
use arca_storage::Cf;
use tracing::{info, instrument, warn, Instrument};
use zeroize::Zeroizing;

use crate::audit::{cap, AuditConfig, AuditContext, AuditFilter, AuditOutcome, AuditRecord, Batcher, AUDIT_KEY};
use crate::ceremony::{Ceremony, GenerateRootParams, RekeyParams};
use crate::kv::{self, SecretMetadata, VersionMetadata, MAX_VALUE_BYTES};
use crate::limits::{Class, Limiter, LimitsConfig, Refusal, Ticket};
use crate::policy::{Capability, Caps, PolicySet};
use crate::request::{OpClass, Spec, TokenRef};
use crate::seal::{InitRecord, PendingRoot, Seal, Sealer, INIT_KEY};
use crate::token;
use crate::token::store::{Caller, NewToken};
use crate::token::TokenInfo;
use crate::{
    now_ms, validate_path, validate_prefix, Error, HealthInfo, InitResult, Member, Operation, Reply, Request, Result,
    SealStatus, SecretData,
};

/// How often a guarded write is re-decided after losing a race before giving up.
pub(crate) const MAX_TXN_ATTEMPTS: usize = 16;
/// How often the leader looks for expired tokens.
const PURGE_INTERVAL: Duration = Duration::from_secs(5);
/// Most keys a single list returns.
const MAX_LIST: usize = 10_000;

/// The vault on one node: its seal state and the replicated state behind the barrier.
#[derive(Clone)]
pub struct Core {
    pub(crate) node: RaftNode,
    seal: Arc<Mutex<Seal>>,
    /// Compiled policies, kept current at apply time (see `policies`).
    pub(crate) policies: Arc<RwLock<PolicySet>>,
    /// This node's generate-root ceremony, if one is in progress.
    pub(crate) root_generation: Arc<Mutex<Option<Ceremony<GenerateRootParams>>>>,
    /// This node's rekey ceremony, if one is in progress.
    pub(crate) rekey_progress: Arc<Mutex<Option<Ceremony<RekeyParams>>>>,
    /// Moves on every seal (see `Sealer`).
    pub(crate) seal_epoch: Arc<tokio::sync::watch::Sender<u64>>,
    /// The root key a rekey on this node is publishing.
    pub(crate) pending_root: PendingRoot,
    /// This node's audit group-commit queue.
    pub(crate) batcher: Batcher,
    /// What this node's config file allows rotators to run and call.
    pub(crate) rotation_settings: Arc<crate::rotation::RotationSettings>,
    audit_config: AuditConfig,
    /// Only in benchmark builds: whether requests are audited.
    #[cfg(feature = "bench-unaudited")]
    audited: bool,
    /// The cluster audit HMAC key, loaded on first use after unseal; dropped on seal.
    audit_hasher: Arc<Mutex<Option<Arc<AuditHasher>>>>,
    /// This node's feed of applied changes, for watchers.
    pub(crate) feed: Arc<crate::watch::Feed>,
    /// Budgets of untrusted requests per source address (see `limits`).
    limiter: Arc<Limiter>,
    pub(crate) metrics: crate::metrics::Metrics,
    /// This node's autopilot settings (its `dead_after` judges health in `AutopilotState`).
    autopilot: arca_raft::AutopilotConfig,
    /// Held while a join is in progress: a join needs no token, so without this anyone who can
    /// reach a new node could keep it dialling addresses many times over at once.
    joining: Arc<tokio::sync::Mutex<()>>,
}

impl Core {
    /// A core over a started node, with the default audit settings. The node starts sealed,
    /// whatever its data directory holds. Must be called within a Tokio runtime.
    pub fn new(node: RaftNode) -> Core {
        Core::with_audit(node, AuditConfig::default())
    }

    pub fn with_audit(node: RaftNode, audit: AuditConfig) -> Core {
        let metrics = crate::metrics::Metrics::new();
        let batcher = Batcher::start(node.clone(), audit, metrics.clone());
        // Every leader change this node sees, not only those a scrape happens to catch.
        let mut raft_metrics = node.raft().metrics();
        let seen = metrics.clone();
        tokio::spawn(async move {
            while raft_metrics.changed().await.is_ok() {
                let leader = raft_metrics.borrow().current_leader;
                seen.leader_seen(leader);
            }
        });
        let policies = Arc::new(RwLock::new(crate::policy::store::sealed_set()));
        let sealer = Sealer {
            seal: Arc::new(Mutex::new(Seal::Sealed(None))),
            audit_hasher: Arc::new(Mutex::new(None)),
            root_generation: Arc::new(Mutex::new(None)),
            rekey: Arc::new(Mutex::new(None)),
            policies: policies.clone(),
            epoch: Arc::new(tokio::sync::watch::channel(0).0),
        };
        let pending_root = PendingRoot::default();
        crate::keyring::follow_keyring(node.reader(), sealer.clone(), pending_root.clone());
        // After the keyring's observer: a policy written under a term added in the same batch
        // decrypts.
        crate::policy::store::follow_policies(node.reader(), sealer.seal.clone(), policies.clone());
        let feed = crate::watch::Feed::start(node.reader());
        Core {
            feed,
            node,
            seal: sealer.seal,
            policies,
            root_generation: sealer.root_generation,
            rekey_progress: sealer.rekey,
            seal_epoch: sealer.epoch,
            pending_root,
            batcher,
            audit_hasher: sealer.audit_hasher,
            audit_config: audit,
            rotation_settings: Arc::default(),
            limiter: Arc::new(Limiter::new(LimitsConfig::default())),
            metrics,
            autopilot: arca_raft::AutopilotConfig::default(),
            joining: Arc::default(),
            #[cfg(feature = "bench-unaudited")]
            audited: true,
        }
    }

    /// The autopilot settings of this node's config file.
    pub fn with_autopilot(self, autopilot: arca_raft::AutopilotConfig) -> Core {
        Core { autopilot, ..self }
    }

    /// The rate limits of this node's config file.
    pub fn with_limits(self, limits: LimitsConfig) -> Core {
        Core { limiter: Arc::new(Limiter::new(limits)), ..self }
    }

    /// Commits, every report interval, one record per source and class of untrusted requests
    /// refused over the limit since the last one, until the task is dropped. While sealed the
    /// counts wait for the next interval.
    pub async fn run_rate_limit_reports(self) {
        let mut tick = tokio::time::interval(self.limiter.config().report_interval.max(Duration::from_millis(100)));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        loop {
            tick.tick().await;
            match self.report_rate_limited().await {
                Ok(_) | Err(Error::Sealed) => {}
                Err(e) => warn!(error = %e, "rate-limit report not committed; it is retried with the next one"),
            }
        }
    }

    /// Commits the aggregated records of requests refused over the limit since the previous
    /// report (`RateLimited`, one per source and class, `dropped` = how many); returns how many
    /// records. Counts that cannot be committed are kept for the next report.
    pub async fn report_rate_limited(&self) -> Result<usize> {
        let reports = self.limiter.take_reports();
        if reports.is_empty() {
            return Ok(0);
        }
        let keyring = match self.keyring() {
            Ok(k) => k,
            Err(e) => {
                self.limiter.restore(reports);
                return Err(e);
            }
        };
        let started = std::time::Instant::now();
        let now = now_ms();
        let mut commits = tokio::task::JoinSet::new();
        for r in reports {
            let rate = match r.class {
                Class::Unauthenticated => self.limiter.config().unauthenticated,
                Class::FailedLogin => self.limiter.config().failed_logins,
                Class::Denied => self.limiter.config().denied,
            };
            warn!(source = %r.source, class = r.class.name(), dropped = r.dropped, "requests refused over the rate limit");
            let record = AuditRecord {
                time_ms: now,
                request_id: crate::audit::request_id()?,
                node: self.node.id(),
                remote: r.source.clone(),
                operation: "RateLimited".into(),
                path: format!("sys/rate-limit/{}", r.class.name()),
                decision: r.class.name().into(),
                outcome: "rate_limited".into(),
                error: format!(
                    "{} requests ({}) refused over the limit of {}/s (burst {}) in the {} ms since the first",
                    r.dropped,
                    r.class.name(),
                    rate.per_second,
                    rate.burst,
                    now - r.since_ms
                ),
                dropped: r.dropped,
                ..Default::default()
            };
            let (batcher, sealed) = (self.batcher.clone(), record.seal(&keyring)?);
            commits.spawn(async move { (batcher.commit(sealed, started).await, r) });
        }
        let (mut committed, mut last_error) = (0, None);
        while let Some(joined) = commits.join_next().await {
            let Ok((result, report)) = joined else { continue };
            match result {
                Ok(()) => committed += 1,
                Err(e) => {
                    self.limiter.restore(vec![report]);
                    last_error = Some(e);
                }
            }
        }
        match last_error {
            Some(e) => Err(e),
            None => Ok(committed),
        }
    }

    /// The rotation settings of this node's config file (functions dir, webhook allow-list).
    pub fn with_rotation(self, settings: crate::rotation::RotationSettings) -> Core {
        Core { rotation_settings: Arc::new(settings), ..self }
    }

    /// Benchmark builds only: a core whose requests skip the audit pipeline (the baseline that
    /// audited throughput is measured against).
    #[cfg(feature = "bench-unaudited")]
    pub fn unaudited(node: RaftNode) -> Core {
        Core { audited: false, ..Core::new(node) }
    }

    /// Background duties of the leader, until the task is dropped: purging expired tokens and
    /// applying audit retention.
    pub async fn run_maintenance(self) {
        let mut tick = tokio::time::interval(PURGE_INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            if let Err(e) = self.purge_expired().await {
                warn!(error = %e, "purging expired tokens failed; retrying later");
            }
            if let Err(e) = self.apply_audit_retention().await {
                warn!(error = %e, "audit retention failed; retrying later");
            }
        }
    }

    /// Leader only: trims the audit log to the configured age and count with one committed
    /// command (the decision and its time travel in it), leaving a checkpoint so the rest of the
    /// chain still verifies. Returns how many records were trimmed.
    pub async fn apply_audit_retention(&self) -> Result<u64> {
        let (max_age, max_records) = (self.audit_config.retention_max_age, self.audit_config.retention_max_records);
        if (max_age.is_none() && max_records.is_none()) || self.node.current_leader() != Some(self.node.id()) {
            return Ok(0);
        }
        let Ok(keyring) = self.keyring() else { return Ok(0) };
        let reader = self.node.reader();
        let head = arca_raft::audit_log::head(reader).seq;
        let mut through = max_records.map_or(0, |n| head.saturating_sub(n));
        if let Some(age) = max_age {
            let cutoff = now_ms() - age.as_millis() as i64;
            // Records are in commit order, so times rise (up to clock skew between nodes): the
            // first young record ends the scan. Bounded per round.
            for (seq, raw) in arca_raft::audit_log::read(reader, through + 1, 10_000)? {
                match AuditRecord::open(&keyring, seq, &raw) {
                    Ok(r) if r.time_ms >= cutoff => break,
                    Ok(_) => {}
                    // Unreadable under this keyring (see `AuditRecord::unreadable`): its age is
                    // unknown, and keeping it forever would stop retention at it.
                    Err(e) => warn!(seq, error = %e, "an unreadable audit record is trimmed with its neighbours"),
                }
                through = seq;
            }
        }
        if through <= arca_raft::audit_log::checkpoint(reader).seq {
            return Ok(0);
        }
        let resp = self.node.write(Command::AuditTrim { through, decided_ms: now_ms() }).await?;
        let removed = match resp.result {
            CommandResult::Trimmed { removed } => removed,
            _ => 0,
        };
        info!(through, removed, "audit retention applied");
        Ok(removed)
    }

    /// Writes every record committed from now on as a JSON line to `out` (a log shipper's
    /// input), while this node is unsealed. The replicated log stays the source of truth.
    pub async fn mirror_audit(self, mut out: Box<dyn std::io::Write + Send>) {
        let mut next = arca_raft::audit_log::head(self.node.reader()).seq + 1;
        loop {
            tokio::time::sleep(Duration::from_millis(200)).await;
            let Ok(keyring) = self.keyring() else { continue };
            let Ok(page) = arca_raft::audit_log::read(self.node.reader(), next, 1000) else { continue };
            for (seq, raw) in page {
                let opened = AuditRecord::open_with_outcome(&keyring, self.node.reader(), seq, &raw);
                // Outcomes follow their records: give one up to 2 s to arrive before writing.
                if matches!(&opened, Ok(r) if r.outcome == "unknown" && now_ms() - r.time_ms < 2_000) {
                    break;
                }
                next = seq + 1;
                match opened {
                    Ok(r) => {
                        let line = serde_json::to_string(&r).unwrap_or_default();
                        if writeln!(out, "{line}").and_then(|_| out.flush()).is_err() {
                            warn!("the audit mirror cannot be written; it stops (the replicated log is unaffected)");
                            return;
                        }
                    }
                    Err(e) => warn!(seq, error = %e, "audit record unreadable for the mirror"),
                }
            }
        }
    }

    pub fn node(&self) -> &RaftNode {
        &self.node
    }

    /// This node's metrics in the Prometheus text format (what `sys/metrics` serves).
    pub fn render_metrics(&self) -> String {
        let raft = self.node.metrics();
        let me = self.node.id();
        let replication = raft
            .replication
            .as_ref()
            .map(|r| r.iter().filter(|(id, _)| **id != me).map(|(id, m)| (*id, m.map_or(0, |l| l.index))).collect())
            .unwrap_or_default();
        let keyring = self.keyring().ok();
        let rotations = match &keyring {
            Some(keyring) => self.rotation_statuses(keyring, None).unwrap_or_default(),
            None => Vec::new(),
        };
        let now = now_ms();
        let snapshot = crate::metrics::Snapshot {
            sealed: keyring.is_none(),
            term: raft.current_term,
            leader: raft.current_leader,
            is_leader: raft.current_leader == Some(me),
            last_log_index: raft.last_log_index.unwrap_or(0),
            applied_index: raft.last_applied.map_or(0, |l| l.index),
            replication,
            voters: raft.membership_config.membership().voter_ids().count(),
            storage: self.node.reader().sizes().unwrap_or_default(),
            rotations: rotations
                .iter()
                .filter(|r| r.config.enabled)
                .map(|r| {
                    let next = r.state.retry_at_ms.unwrap_or(r.state.next_run_ms);
                    (r.config.path.clone(), (next - now) as f64 / 1000.0, r.state.failed)
                })
                .collect(),
        };
        self.metrics.render(&snapshot)
    }

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

    async fn handle_recorded(&self, mut req: Request, spec: Spec) -> Result<Reply> {
        let audited = spec.class != OpClass::Unaudited;
        #[cfg(feature = "bench-unaudited")]
        let audited = audited && self.audited;
        if !audited {
            return self.dispatch(req, &spec, &mut AuditContext::default(), true).await.inspect_err(log_failure);
        }
        let keyring = self.keyring()?;
        // The decision as this node sees it now (read-only: no use of a use-limited token is
        // taken). It goes into the record, whose commit is then the read barrier; the request is
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
                None => crate::audit::request_id()?,
            },
            node: self.node.id(),
            remote: req.remote.map(|r| r.to_string()).unwrap_or_default(),
            operation: spec.name.to_string(),
            path: cap(&spec.path).into_owned(),
            request_hmacs: crate::audit::request_hmacs(&hasher, &req),
            ..Default::default()
        };
        let login = req.op.checks_credentials();
        req.request_id = Some(record.request_id.clone());
        pre.fill(&mut record);
        // A seal needs no quorum (it protects): it is handled first, recorded after.
        let seal = matches!(req.op, Operation::Seal);
        // Fail closed: without a committed record the request is not handled at all.
        if !seal {
            self.batcher.commit(record.seal(&keyring)?, started).await?;
        }
        let mut ctx = AuditContext { known, ..Default::default() };
        let result = self.dispatch(req, &spec, &mut ctx, false).await;
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
                outcome.response_hmacs = crate::audit::response_hmacs(&hasher, reply);
            }
            Err(e) => {
                log_failure(e);
                outcome.outcome = crate::audit::outcome(e).into();
                outcome.error = cap(&e.to_string()).into_owned();
            }
        }
        if seal {
            outcome.clone().merge_into(&mut record);
            self.batcher.commit(record.seal(&keyring)?, started).await?;
        } else if matches!(result, Ok(Reply::Restored(_))) {
            // The trail this request's record went into was replaced; the restored trail has
            // its own record of the restore (see `backup`), which an outcome sealed with this
            // keyring could not attach to.
        } else {
            self.batcher.outcome(outcome.request_id.clone(), outcome.seal(&keyring)?);
        }
        result
    }

    /// Takes a token from `remote`'s bucket of `class`, or refuses: after the source's pace, so
    /// a flood of refusals cannot take the CPU from everyone else (see `limits`).
    async fn admit(&self, remote: Option<std::net::SocketAddr>, class: Class) -> Result<Option<Ticket>> {
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
    fn settle(&self, remote: Option<std::net::SocketAddr>, ticket: Option<Ticket>, class: Option<Class>) {
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
                None => crate::audit::request_id()?,
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
    fn precheck(
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

    /// Committed audit records for a following tail: re-checks the caller's token first.
    pub fn audit_records_after_authorization(
        &self,
        token: Option<&Zeroizing<String>>,
        filter: &AuditFilter,
    ) -> Result<Vec<AuditRecord>> {
        self.still_allowed(token, Operation::AuditList(filter.clone()))?;
        self.audit_list(&*self.keyring()?, filter)
    }

    /// The sequence number of the newest committed audit record on this node.
    pub fn audit_head(&self) -> u64 {
        arca_raft::audit_log::head(self.node.reader()).seq
    }

    /// Decrypts and filters committed audit records, oldest first, from `filter.from_seq`.
    pub(crate) fn audit_list(&self, keyring: &Keyring, filter: &AuditFilter) -> Result<Vec<AuditRecord>> {
        const PAGE: usize = 2048;
        let mut out = Vec::new();
        let mut from = filter.from_seq;
        loop {
            let page = arca_raft::audit_log::read(self.node.reader(), from, PAGE)?;
            let done = page.len() < PAGE;
            for (seq, raw) in page {
                from = seq + 1;
                // One record this keyring cannot open (written under another cluster's keys by a
                // request that raced a restore) must not hide the rest of the trail.
                let record = AuditRecord::open_with_outcome(keyring, self.node.reader(), seq, &raw)
                    .unwrap_or_else(|e| AuditRecord::unreadable(seq, &e));
                if filter.matches(&record) {
                    out.push(record);
                    if out.len() >= filter.limit() {
                        return Ok(out);
                    }
                }
            }
            if done {
                return Ok(out);
            }
        }
    }

    /// The cluster audit key, created (once, guarded) on first use if the cluster predates it.
    async fn audit_hasher(&self, keyring: &Keyring) -> Result<Arc<AuditHasher>> {
        if let Some(h) = self.audit_hasher.lock().expect("audit key lock").clone() {
            return Ok(h);
        }
        let raw = match self.node.reader().get(Cf::Sys, AUDIT_KEY)? {
            Some(raw) => raw,
            None => {
                let fresh = SecretKey::generate().map_err(|e| Error::Internal(e.to_string()))?;
                let sealed = keyring.encrypt(AUDIT_KEY, fresh.expose()).map_err(|e| Error::Internal(e.to_string()))?;
                let guards = vec![Guard::unchanged(Cf::Sys, AUDIT_KEY, None)];
                let ops = vec![Op::Put { cf: Cf::Sys, key: AUDIT_KEY.to_vec(), value: sealed }];
                self.node.write(Command::Txn { guards, ops }).await.map_err(|_| Error::AuditUnavailable)?;
                self.node.reader().get(Cf::Sys, AUDIT_KEY)?.ok_or(Error::AuditUnavailable)?
            }
        };
        let corrupt = |reason: String| Error::Corrupt { path: "sys/audit/key".into(), reason };
        let plain = keyring.decrypt(AUDIT_KEY, &raw).map_err(|e| corrupt(e.to_string()))?;
        let key = SecretKey::from_slice(&plain).ok_or_else(|| corrupt("the audit key has the wrong length".into()))?;
        let hasher = Arc::new(AuditHasher::new(key));
        *self.audit_hasher.lock().expect("audit key lock") = Some(hasher.clone());
        Ok(hasher)
    }

    /// Routes a request by its class (its row in the table): unaudited ones to
    /// `execute_unaudited`, self-authenticating ones to `execute_with_credentials`, and every
    /// other one through authentication and authorization of its token to `execute`.
    /// `barrier`: whether this request still needs its read barrier (an audited request had
    /// it with its record's commit).
    async fn dispatch(&self, req: Request, spec: &Spec, ctx: &mut AuditContext, barrier: bool) -> Result<Reply> {
        let need = match spec.class {
            OpClass::Unaudited => return self.execute_unaudited(req.op).await,
            OpClass::Credentials => None,
            OpClass::Token(need) => Some(need),
        };
        let Request { token, remote, client_certs, op, request_id } = req;
        let keyring = self.keyring()?;
        // The read barrier: the next group commit through the leader, applied here, makes this
        // node current, so the token check and any read below see every write that completed
        // before this request began (linearizable on any node). Sealing skips it: an
        // operator must be able to seal a node that has lost its quorum (it is a protective
        // action, so a token checked against this node's own state is enough).
        if barrier && !matches!(op, Operation::Seal) {
            self.batcher.barrier(std::time::Instant::now()).await?;
        }
        let Some(need) = need else {
            ctx.decision = "none".into();
            return self.execute_with_credentials(&keyring, op, remote, &client_certs, ctx).await;
        };
        ctx.decision = "unauthenticated".into();
        let caller = self.authenticate(&keyring, token.as_deref().map(String::as_str), ctx.known.take()).await?;
        ctx.caller(&caller.info);
        self.authorize(&caller, &op, &spec.path, need, ctx)?;
        self.execute(&keyring, &caller, op, request_id).await
    }

    /// The operations a sealed node, or one in no cluster, serves: no token, no record.
    async fn execute_unaudited(&self, op: Operation) -> Result<Reply> {
        match op {
            Operation::SealStatus => self.seal_status().map(Reply::SealStatus),
            Operation::Health => self.health().map(Reply::Health),
            Operation::Unseal { share, reset } => self.unseal(&share, reset).await.map(Reply::SealStatus),
            Operation::Init { shares, threshold } => self.init(shares, threshold).await.map(Reply::Init),
            Operation::Join { peer, non_voter } => self.join(&peer, !non_voter).await.map(|()| Reply::Done),
            other => Err(misrouted(&other)),
        }
    }

    /// The operations whose request carries its own proof (a login's credentials, a
    /// ceremony's shares and nonce); audited like every other.
    async fn execute_with_credentials(
        &self,
        keyring: &Keyring,
        op: Operation,
        remote: Option<std::net::SocketAddr>,
        client_certs: &[Vec<u8>],
        ctx: &mut AuditContext,
    ) -> Result<Reply> {
        match op {
            Operation::Login(creds) => {
                let (token, info) = self.login(keyring, creds, remote, client_certs).await?;
                ctx.caller(&info);
                Ok(Reply::TokenCreated { token, info })
            }
            Operation::GenerateRoot(step) => self.generate_root(keyring, step).await,
            Operation::Rekey(step) => self.rekey(step).await,
            other => Err(misrouted(&other)),
        }
    }

    /// The token-bearing operations, once the caller is authenticated and authorized.
    async fn execute(
        &self,
        keyring: &Arc<Keyring>,
        caller: &Caller,
        op: Operation,
        request_id: Option<String>,
    ) -> Result<Reply> {
        match op {
            Operation::SnapshotSave => self.snapshot_save(keyring.clone()),
            Operation::SnapshotRestore { upload, force } => {
                let id = request_id.unwrap_or_default();
                self.snapshot_restore(keyring, caller, upload, force, &id).await
            }
            Operation::Seal => {
                self.sealer().seal();
                warn!("node sealed by request");
                Ok(Reply::Done)
            }
            Operation::Leader => Ok(Reply::Leader { leader: self.members().into_iter().find(|m| m.leader) }),
            Operation::Members => Ok(Reply::Members(self.members())),
            Operation::AutopilotState => Ok(Reply::Autopilot(self.node.autopilot_state(self.autopilot.dead_after))),
            Operation::Mounts { path: None, table } => Ok(Reply::Mounts(crate::request::mounts(table))),
            Operation::Mounts { path: Some(p), .. } => crate::request::mount_serving(&p)
                .map(|m| Reply::Mounts(vec![m]))
                .ok_or_else(|| Error::NotFound(format!("no secrets engine is mounted at {p:?}"))),
            Operation::RemovePeer { id } => {
                self.node.remove(id).await?;
                Ok(Reply::Done)
            }
            Operation::KvPut { path, data, cas } => {
                let caps = self.capabilities(&caller.info.policies, &format!("secret/data/{path}"));
                let (version, custom_metadata) = self.kv_put(keyring, &path, &data, cas, caps).await?;
                Ok(Reply::KvWritten { version, custom_metadata })
            }
            Operation::KvPatch { path, set, remove, cas } => {
                let (version, custom_metadata) = self.kv_patch(keyring, &path, &set, &remove, cas).await?;
                Ok(Reply::KvWritten { version, custom_metadata })
            }
            Operation::KvGet { path, version } => self.kv_get(keyring, &path, version),
            Operation::KvGetStage { path, stage } => {
                validate_path(&path)?;
                let (meta, _) = self.read_meta(keyring, &path)?.ok_or_else(|| not_found(&path))?;
                let version = meta
                    .stage_version(stage)
                    .ok_or_else(|| Error::NotFound(format!("no version of {path} is labelled {stage:?}")))?;
                self.kv_get(keyring, &path, Some(version))
            }
            Operation::KvList { prefix } => self.kv_list(&prefix).map(Reply::KvKeys),
            Operation::Watch { prefix } => {
                validate_prefix(&prefix)?;
                Ok(Reply::Done)
            }
            Operation::KvDelete { path, versions } => {
                self.kv_versions(keyring, &path, &versions, VersionChange::Delete).await.map(Reply::KvMetadata)
            }
            Operation::KvUndelete { path, versions } => {
                self.kv_versions(keyring, &path, &versions, VersionChange::Undelete).await.map(Reply::KvMetadata)
            }
            Operation::KvDestroy { path, versions } => {
                self.kv_versions(keyring, &path, &versions, VersionChange::Destroy).await.map(Reply::KvMetadata)
            }
            Operation::KvMetadata { path } => {
                validate_path(&path)?;
                self.read_meta(keyring, &path)?.map(|(m, _)| Reply::KvMetadata(m)).ok_or_else(|| not_found(&path))
            }
            Operation::KvSetMetadata { path, settings } => {
                self.kv_set_metadata(keyring, &path, &settings).await.map(Reply::KvMetadata)
            }
            Operation::KvDeleteMetadata { path } => self.kv_delete_all(keyring, &path).await.map(|()| Reply::Done),
            Operation::TokenCreate(spec) => {
                let (token, info) = self.create_token(keyring, caller, spec).await?;
                Ok(Reply::TokenCreated { token, info })
            }
            // The caller as authenticated: on a token's last use the record is already gone.
            Operation::TokenLookup(TokenRef::SelfToken) => Ok(Reply::Token(caller.info.clone())),
            Operation::TokenLookup(target) => Ok(Reply::Token(self.resolve(keyring, caller, &target)?.2)),
            Operation::TokenRenew { target, increment } => {
                let increment = increment.map(|d| crate::duration::millis(d, "increment")).transpose()?;
                self.renew(keyring, caller, &target, increment).await.map(Reply::Token)
            }
            Operation::TokenRevoke(target) => {
                let (_, _, info) = self.resolve(keyring, caller, &target)?;
                self.revoke(keyring, vec![info.accessor]).await?;
                Ok(Reply::Done)
            }
            Operation::TokenRevokeOrphan(target) => {
                let (key, raw, info) = self.resolve(keyring, caller, &target)?;
                self.revoke_orphan(keyring, key, raw, info).await.map(|_| Reply::Done)
            }
            Operation::TokenListAccessors => self.list_accessors().map(Reply::Accessors),
            Operation::Capabilities { target, paths } => {
                let policies = match target {
                    TokenRef::SelfToken => caller.info.policies.clone(),
                    other => self.resolve(keyring, caller, &other)?.2.policies,
                };
                let caps = paths.into_iter().map(|p| (p.clone(), self.capabilities(&policies, &p).names())).collect();
                Ok(Reply::Capabilities(caps))
            }
            Operation::PolicyWrite { name, text } => self.write_policy(&name, &text).await.map(|_| Reply::Done),
            Operation::PolicyRead { name } => Ok(Reply::Policy { text: self.read_policy(&name)?, name }),
            Operation::PolicyList => Ok(Reply::Names(self.list_policies())),
            Operation::PolicyDelete { name } => self.delete_policy(&name).await.map(|_| Reply::Done),
            Operation::RoleWrite(role) => self.write_role(keyring, role).await.map(|_| Reply::Done),
            Operation::RoleRead { method, name } => self
                .read_role(keyring, method, &name)?
                .map(Reply::Role)
                .ok_or_else(|| Error::NotFound(format!("no {} role named {name:?}", method.name()))),
            Operation::RoleList { method } => self.list_roles(method).map(Reply::Names),
            Operation::RoleDelete { method, name } => {
                self.delete_role(keyring, method, &name).await.map(|_| Reply::Done)
            }
            Operation::AppRoleRoleId { name } => self.role_id(keyring, &name).map(Reply::RoleId),
            Operation::AppRoleSecretId { name } => self.new_secret_id(keyring, &name).await,
            Operation::JwtConfigWrite(config) => self.write_jwt_config(keyring, &config).await.map(|_| Reply::Done),
            Operation::JwtConfigRead => self
                .jwt_config(keyring)?
                .map(Reply::JwtConfig)
                .ok_or_else(|| Error::NotFound("JWT auth is not configured".into())),
            Operation::AuditList(filter) => {
                // Decrypting thousands of records is CPU work: off the async workers, so Raft
                // heartbeats on this node are not held up.
                let (core, keyring) = (self.clone(), self.keyring()?);
                tokio::task::spawn_blocking(move || core.audit_list(&keyring, &filter))
                    .await
                    .map_err(|e| Error::Internal(e.to_string()))?
                    .map(Reply::AuditRecords)
            }
            Operation::AuditVerify { upto } => Ok(Reply::AuditVerification {
                node: self.node.id(),
                verification: arca_raft::audit_log::verify(self.node.reader(), upto)?,
            }),
            Operation::AuditUnusedGrants { since_ms } => {
                let (core, keyring) = (self.clone(), self.keyring()?);
                tokio::task::spawn_blocking(move || core.unused_grants(&keyring, since_ms))
                    .await
                    .map_err(|e| Error::Internal(e.to_string()))?
                    .map(Reply::Grants)
            }
            Operation::RotationSet(config) => {
                self.rotation_set(keyring, config, &caller.info.accessor).await.map(|_| Reply::Done)
            }
            Operation::RotationDisable { path } => self.rotation_disable(keyring, &path).await.map(|_| Reply::Done),
            Operation::RotationNow { path } => self.rotation_now(keyring, &path).await.map(|_| Reply::Done),
            Operation::RotationStatus { path } => {
                self.rotation_statuses(keyring, path.as_deref()).map(Reply::Rotations)
            }
            Operation::RotationFunctionRegister { name, sha256 } => {
                self.register_function(&name, &sha256).await.map(|_| Reply::Done)
            }
            Operation::RotationFunctionList => self.list_functions().map(Reply::Functions),
            Operation::KeyringRotate => self.keyring_rotate().await.map(Reply::Term),
            Operation::Metrics => Ok(Reply::Metrics(self.render_metrics())),
            Operation::KeyringStatus => {
                let (core, keyring) = (self.clone(), self.keyring()?);
                tokio::task::spawn_blocking(move || core.keyring_info(&keyring))
                    .await
                    .map_err(|e| Error::Internal(e.to_string()))?
                    .map(Reply::Keyring)
            }
            Operation::AuditHash { value } => Ok(Reply::Hash(self.audit_hasher(keyring).await?.hash(value.as_bytes()))),
            other @ (Operation::SealStatus
            | Operation::Health
            | Operation::Unseal { .. }
            | Operation::Init { .. }
            | Operation::Join { .. }
            | Operation::Login(_)
            | Operation::Rekey { .. }
            | Operation::GenerateRoot { .. }) => Err(misrouted(&other)),
        }
    }

    pub(crate) fn keyring(&self) -> Result<Arc<Keyring>> {
        match &*self.seal.lock().expect("seal lock") {
            Seal::Unsealed { keyring, .. } => Ok(keyring.clone()),
            Seal::Sealed(_) => Err(Error::Sealed),
        }
    }

    pub(crate) fn root_key(&self) -> Result<Arc<SecretKey>> {
        match &*self.seal.lock().expect("seal lock") {
            Seal::Unsealed { root, .. } => Ok(root.clone()),
            Seal::Sealed(_) => Err(Error::Sealed),
        }
    }

    pub(crate) fn sealer(&self) -> Sealer {
        Sealer {
            seal: self.seal.clone(),
            audit_hasher: self.audit_hasher.clone(),
            root_generation: self.root_generation.clone(),
            rekey: self.rekey_progress.clone(),
            policies: self.policies.clone(),
            epoch: self.seal_epoch.clone(),
        }
    }

    pub(crate) fn init_record(&self) -> Result<Option<InitRecord>> {
        let Some(raw) = self.node.reader().get(Cf::Sys, INIT_KEY)? else { return Ok(None) };
        serde_json::from_slice(&raw)
            .map(Some)
            .map_err(|e| Error::Corrupt { path: "sys/core/init".into(), reason: e.to_string() })
    }

    fn seal_status(&self) -> Result<SealStatus> {
        let init = self.init_record()?;
        let seal = self.seal.lock().expect("seal lock");
        let (sealed, progress) = match &*seal {
            Seal::Unsealed { .. } => (false, 0),
            Seal::Sealed(c) => (true, c.as_ref().map_or(0, |c| c.progress().provided as u8)),
        };
        Ok(SealStatus {
            initialized: init.is_some(),
            sealed,
            threshold: init.as_ref().map_or(0, |i| i.threshold),
            shares: init.as_ref().map_or(0, |i| i.shares),
            progress,
            share_set: init.as_ref().map(|i| i.share_config().set.to_string()).unwrap_or_default(),
            node_id: self.node.id(),
        })
    }

    fn health(&self) -> Result<HealthInfo> {
        let m = self.node.metrics();
        let status = self.seal_status()?;
        Ok(HealthInfo {
            initialized: status.initialized,
            sealed: status.sealed,
            node_id: self.node.id(),
            leader_id: m.current_leader,
            is_leader: m.current_leader == Some(self.node.id()),
            applied_index: m.last_applied.map_or(0, |l| l.index),
        })
    }

    fn members(&self) -> Vec<Member> {
        let m = self.node.metrics();
        let membership = m.membership_config.membership();
        let voters: Vec<u64> = membership.voter_ids().collect();
        membership
            .nodes()
            .map(|(id, n)| Member {
                id: *id,
                raft_addr: n.raft_addr.clone(),
                api_addr: n.api_addr.clone(),
                voter: voters.contains(id),
                leader: m.current_leader == Some(*id),
            })
            .collect()
    }

    /// Creates the root key, keyring and root token, and replicates the init record. Once per
    /// cluster: the write is guarded on the init record being absent.
    #[instrument(level = "info", skip(self))]
    /// Makes a new node join the cluster of the member at `peer` (its cluster address). Like
    /// init, it needs no token: a node that is in no cluster has no tokens to check. The
    /// leader admits the node by its cluster certificate (mutual TLS), so all a caller can do
    /// is make a new node join the cluster its certificate is for; a member refuses.
    async fn join(&self, peer: &str, voter: bool) -> Result<()> {
        if self.node.is_member() {
            return Err(Error::InvalidArgument(
                "this node is already a member of a cluster; join is for a new node started without \
                 cluster.bootstrap (to move a node, remove it and start a new one with a new node_id)"
                    .into(),
            ));
        }
        let Ok(_one_at_a_time) = self.joining.try_lock() else {
            return Err(Error::InvalidArgument(
                "a join is already in progress on this node; wait for its result".into(),
            ));
        };
        self.node
            .join(peer, voter)
            .await
            .map_err(|e| Error::JoinFailed { peer: peer.to_string(), reason: e.to_string() })
    }

    async fn init(&self, shares: u8, threshold: u8) -> Result<InitResult> {
        if self.init_record()?.is_some() {
            return Err(Error::AlreadyInitialized);
        }
        let keyring = Keyring::generate().map_err(|e| Error::Internal(e.to_string()))?;
        let (record, split) = InitRecord::new_root(&keyring, shares, threshold)?;
        let (root_token, accessor) = token::generate()?;
        let token_key = token::storage_key(&root_token);
        let info = NewToken::root("init").into_info(accessor.clone(), now_ms());
        let audit_key = {
            let key = SecretKey::generate().map_err(|e| Error::Internal(e.to_string()))?;
            keyring.encrypt(AUDIT_KEY, key.expose()).map_err(|e| Error::Internal(e.to_string()))?
        };
        let ops = vec![
            Op::Put {
                cf: Cf::Sys,
                key: INIT_KEY.to_vec(),
                value: serde_json::to_vec(&record).map_err(|e| Error::Internal(e.to_string()))?,
            },
            Op::Put { cf: Cf::Tokens, key: token::accessor_key(&accessor), value: token_key.clone() },
            Op::Put { cf: Cf::Tokens, value: encrypt_json(&keyring, &token_key, &info)?, key: token_key },
            Op::Put { cf: Cf::Sys, key: AUDIT_KEY.to_vec(), value: audit_key },
        ];
        let guards = vec![Guard::unchanged(Cf::Sys, INIT_KEY, None)];
        match self.node.write(Command::Txn { guards, ops }).await?.result {
            CommandResult::Applied => {
                info!(threshold, shares, "cluster initialized");
                Ok(InitResult { shares: split.iter().map(|s| s.encode()).collect(), threshold, root_token })
            }
            _ => Err(Error::AlreadyInitialized),
        }
    }

    /// Adds one unseal share; at the threshold, reconstructs and verifies the root key.
    async fn unseal(&self, share: &str, reset: bool) -> Result<SealStatus> {
        let init = match self.init_record()? {
            Some(init) => init,
            None => {
                // This node may simply not have applied the init yet (it was just initialized
                // through another node): catch up once, if a leader is reachable, and look again.
                let _ = self.node.read_barrier().await;
                self.init_record()?.ok_or(Error::NotInitialized)?
            }
        };
        {
            let mut seal = self.seal.lock().expect("seal lock");
            if let Seal::Sealed(collector) = &mut *seal {
                if reset {
                    *collector = None;
                } else {
                    let c = collector.get_or_insert_with(|| ShareCollector::new(init.share_config()));
                    // The share itself is never logged, only the outcome.
                    c.add(share).map_err(Error::Share)?;
                    if c.is_complete() {
                        let recovered = c.recover(&init.sealed_keyring);
                        *collector = None;
                        let (root, keyring) = recovered.map_err(Error::Share)?;
                        // A cluster from before every term was root-sealed may still have
                        // terms in a chain of records (see `keyring`).
                        let keyring = crate::keyring::load_terms(self.node.reader(), &keyring)?.unwrap_or(keyring);
                        // Compiled before anyone can see the node unsealed, so no request is
                        // judged against the sealed node's (empty) policy set. The policy
                        // observer never holds the policy lock while taking this one.
                        crate::policy::store::recompile_policies(&self.policies, self.node.reader(), &keyring);
                        *seal = Seal::Unsealed { keyring: Arc::new(keyring), root: Arc::new(root) };
                        info!("node unsealed");
                    }
                }
            }
        }
        self.seal_status()
    }

    /// The metadata of `path` and its raw stored bytes (the guard for a later write).
    pub(crate) fn read_meta(&self, keyring: &Keyring, path: &str) -> Result<Option<(SecretMetadata, Vec<u8>)>> {
        let Some(raw) = self.node.reader().get(Cf::Kv, &kv::meta_key(path))? else { return Ok(None) };
        Ok(Some((decrypt_json(keyring, &kv::meta_aad(path), &raw)?, raw)))
    }

    /// The data of one version of `path`, which its metadata says exists.
    pub(crate) fn version_data(&self, keyring: &Keyring, path: &str, version: u64) -> Result<SecretData> {
        let raw = self.node.reader().get(Cf::Kv, &kv::data_key(path, version))?.ok_or_else(|| Error::Corrupt {
            path: path.into(),
            reason: format!("data of version {version} is missing"),
        })?;
        decrypt_json(keyring, &kv::data_aad(path, version), &raw)
    }

    /// Read-decide-propose with a guard on the metadata, retried while other writers win.
    async fn guarded_update<T>(
        &self,
        keyring: &Keyring,
        path: &str,
        mut decide: impl FnMut(Option<SecretMetadata>) -> Result<(SecretMetadata, Vec<Op>, T)>,
    ) -> Result<T> {
        for _ in 0..MAX_TXN_ATTEMPTS {
            let current = self.read_meta(keyring, path)?;
            let raw = current.as_ref().map(|(_, r)| r.clone());
            let (meta, mut ops, out) = decide(current.map(|(m, _)| m))?;
            let sealed_meta = encrypt_json(keyring, &kv::meta_aad(path), &meta)?;
            ops.push(Op::Put { cf: Cf::Kv, key: kv::meta_key(path), value: sealed_meta });
            let guards = vec![Guard::unchanged(Cf::Kv, kv::meta_key(path), raw.as_deref())];
            // Every value written is a fresh ciphertext (random nonce): finding any of them
            // stored proves this transaction applied (it applies whole or not at all).
            let puts: Vec<(Cf, Vec<u8>, Vec<u8>)> = ops
                .iter()
                .filter_map(|op| match op {
                    Op::Put { cf, key, value } => Some((*cf, key.clone(), value.clone())),
                    Op::Delete { .. } => None,
                })
                .collect();
            if self.node.write(Command::Txn { guards, ops }).await?.result == CommandResult::Applied {
                return Ok(out);
            }
            // A forwarded write whose reply was lost is resent: it applies once and the resend
            // fails its guard. If any value it wrote is stored, this write is the one that landed,
            // even if another writer has since moved the metadata on (found by the kill -9 test:
            // comparing only the metadata wrote such a write a second time, as a new version).
            // Otherwise another writer won: catch up and decide again.
            self.node.read_barrier().await?;
            let reader = self.node.reader();
            let landed = puts.iter().map(|(cf, k, v)| Ok(reader.get(*cf, k)?.as_deref() == Some(v.as_slice())));
            if landed.collect::<Result<Vec<bool>>>()?.into_iter().any(|l| l) {
                return Ok(out);
            }
        }
        Err(Error::Conflict)
    }

    async fn kv_put(
        &self,
        keyring: &Keyring,
        path: &str,
        data: &SecretData,
        cas: Option<u64>,
        caps: Caps,
    ) -> Result<(VersionMetadata, std::collections::BTreeMap<String, String>)> {
        validate_path(path)?;
        let plain = encode_value(data)?;
        let now = now_ms();
        self.guarded_update(keyring, path, |current| {
            // Decided on the metadata this write is guarded on: a secret created or deleted
            // since authorization is judged as it is now.
            let needed = if current.is_some() { Capability::Update } else { Capability::Create };
            if !caps.has(needed) {
                return Err(Error::PermissionDenied(format!(
                    "secret/data/{path} requires '{needed}', which this token lacks"
                )));
            }
            require_cas(current.as_ref(), cas)?;
            let mut meta = current.unwrap_or_else(|| SecretMetadata::new(path, now));
            let (ops, version) = new_version(keyring, path, &mut meta, &plain, cas, now)?;
            let labels = meta.custom_metadata.clone();
            Ok((meta, ops, (version, labels)))
        })
        .await
    }

    /// Merges `set` and `remove` into the current version and writes the result as a new
    /// version, guarded on the metadata it read: a concurrent write makes it decide again.
    async fn kv_patch(
        &self,
        keyring: &Keyring,
        path: &str,
        set: &SecretData,
        remove: &[String],
        cas: Option<u64>,
    ) -> Result<(VersionMetadata, std::collections::BTreeMap<String, String>)> {
        validate_path(path)?;
        let now = now_ms();
        self.guarded_update(keyring, path, |current| {
            let mut meta = current.ok_or_else(|| not_found(path))?;
            require_cas(Some(&meta), cas)?;
            let base = meta.readable(None)?.version;
            let mut data = self.version_data(keyring, path, base)?;
            for k in remove {
                data.0.remove(k);
            }
            data.0.extend(set.0.iter().map(|(k, v)| (k.clone(), v.clone())));
            let plain = encode_value(&data)?;
            // Without a CAS of the caller's, the patch is still based on exactly `base`.
            let (ops, version) = new_version(keyring, path, &mut meta, &plain, Some(cas.unwrap_or(base)), now)?;
            let labels = meta.custom_metadata.clone();
            Ok((meta, ops, (version, labels)))
        })
        .await
    }

    fn kv_get(&self, keyring: &Keyring, path: &str, version: Option<u64>) -> Result<Reply> {
        validate_path(path)?;
        let (meta, _) = self.read_meta(keyring, path)?.ok_or_else(|| not_found(path))?;
        let v = meta.readable(version)?.clone();
        let data = self.version_data(keyring, path, v.version)?;
        Ok(Reply::KvSecret { data, version: v, custom_metadata: meta.custom_metadata })
    }

    fn kv_list(&self, prefix: &str) -> Result<Vec<String>> {
        validate_prefix(prefix)?;
        let scan = self.node.reader().scan_prefix(Cf::Kv, &kv::meta_key(prefix), MAX_LIST)?;
        let paths: Vec<String> = scan.into_iter().map(|(k, _)| String::from_utf8_lossy(&k[2..]).into_owned()).collect();
        let keys = kv::children(prefix, paths.iter().map(String::as_str));
        if keys.is_empty() {
            return Err(Error::NotFound(format!("no secrets under {prefix:?}")));
        }
        Ok(keys)
    }

    async fn kv_versions(
        &self,
        keyring: &Keyring,
        path: &str,
        versions: &[u64],
        change: VersionChange,
    ) -> Result<SecretMetadata> {
        validate_path(path)?;
        let now = now_ms();
        self.guarded_update(keyring, path, |current| {
            let mut meta = current.ok_or_else(|| not_found(path))?;
            let mut ops = Vec::new();
            for v in meta.targets(versions)? {
                let entry = meta.versions.get_mut(&v).expect("targets exist");
                match change {
                    VersionChange::Delete => entry.deleted_ms = Some(entry.deleted_ms.map_or(now, |d| d.min(now))),
                    VersionChange::Undelete => entry.deleted_ms = None,
                    VersionChange::Destroy => {
                        entry.destroyed = true;
                        ops.push(Op::Delete { cf: Cf::Kv, key: kv::data_key(path, v) });
                    }
                }
            }
            meta.updated_ms = now;
            Ok((meta.clone(), ops, meta))
        })
        .await
    }

    /// Deletes every version's data and the metadata, in one guarded write.
    async fn kv_delete_all(&self, keyring: &Keyring, path: &str) -> Result<()> {
        validate_path(path)?;
        let meta_key = kv::meta_key(path);
        for _ in 0..MAX_TXN_ATTEMPTS {
            let Some((meta, raw)) = self.read_meta(keyring, path)? else { return Err(not_found(path)) };
            let mut ops: Vec<Op> =
                meta.versions.keys().map(|v| Op::Delete { cf: Cf::Kv, key: kv::data_key(path, *v) }).collect();
            ops.push(Op::Delete { cf: Cf::Kv, key: meta_key.clone() });
            let guards = vec![Guard::unchanged(Cf::Kv, meta_key.clone(), Some(&raw))];
            if self.node.write(Command::Txn { guards, ops }).await?.result == CommandResult::Applied {
                return Ok(());
            }
            // Lost a race, or a resend of this very delete found it done: gone is gone.
            self.node.read_barrier().await?;
            if self.node.reader().get(Cf::Kv, &meta_key)?.is_none() {
                return Ok(());
            }
        }
        Err(Error::Conflict)
    }

    async fn kv_set_metadata(
        &self,
        keyring: &Keyring,
        path: &str,
        settings: &crate::kv::MetadataSettings,
    ) -> Result<SecretMetadata> {
        validate_path(path)?;
        let now = now_ms();
        self.guarded_update(keyring, path, |current| {
            let mut meta = current.unwrap_or_else(|| SecretMetadata::new(path, now));
            settings.apply(&mut meta)?;
            meta.updated_ms = now;
            let ops = meta.prune().into_iter().map(|v| Op::Delete { cf: Cf::Kv, key: kv::data_key(path, v) }).collect();
            Ok((meta.clone(), ops, meta))
        })
        .await
    }
}

#[derive(Clone, Copy)]
enum VersionChange {
    Delete,
    Undelete,
    Destroy,
}

/// Refuses a write without check-and-set to a secret whose metadata requires it.
fn require_cas(meta: Option<&SecretMetadata>, cas: Option<u64>) -> Result<()> {
    if meta.is_some_and(|m| m.cas_required) && cas.is_none() {
        return Err(Error::InvalidArgument(
            "check-and-set parameter required for this call: this secret has cas_required set; send options.cas \
             (the version you read, or 0 to create)"
                .into(),
        ));
    }
    Ok(())
}

/// The write of a secret's metadata, encrypted and bound to its path.
/// A secret's value as stored (before encryption), refused when over the size limit.
fn encode_value(data: &SecretData) -> Result<Zeroizing<Vec<u8>>> {
    let plain = Zeroizing::new(serde_json::to_vec(data).map_err(|e| Error::Internal(e.to_string()))?);
    if plain.len() > MAX_VALUE_BYTES {
        return Err(Error::InvalidArgument(format!(
            "secret value is {} bytes, over the {MAX_VALUE_BYTES}-byte limit",
            plain.len()
        )));
    }
    Ok(plain)
}

/// Adds a version holding `plain` to `meta` (checked against `cas`): the ops that write it and
/// drop the versions it pushes out.
fn new_version(
    keyring: &Keyring,
    path: &str,
    meta: &mut SecretMetadata,
    plain: &[u8],
    cas: Option<u64>,
    now: i64,
) -> Result<(Vec<Op>, VersionMetadata)> {
    let (version, pruned) = meta.add_version(cas, now)?;
    let mut ops = vec![kv_data_op(keyring, path, version.version, plain)?];
    ops.extend(pruned.into_iter().map(|v| Op::Delete { cf: Cf::Kv, key: kv::data_key(path, v) }));
    Ok((ops, version))
}

pub(crate) fn kv_meta_op(keyring: &Keyring, path: &str, meta: &SecretMetadata) -> Result<Op> {
    Ok(Op::Put { cf: Cf::Kv, key: kv::meta_key(path), value: encrypt_json(keyring, &kv::meta_aad(path), meta)? })
}

/// The write of one version's data (its JSON), encrypted and bound to its path and version.
pub(crate) fn kv_data_op(keyring: &Keyring, path: &str, version: u64, plain: &[u8]) -> Result<Op> {
    let value = keyring.encrypt(&kv::data_aad(path, version), plain).map_err(|e| Error::Internal(e.to_string()))?;
    Ok(Op::Put { cf: Cf::Kv, key: kv::data_key(path, version), value })
}

/// An operation that reached a handler its class does not route to. `dispatch` routes by the
/// table, so this is a bug; it fails closed instead of panicking a worker.
fn misrouted(op: &Operation) -> Error {
    tracing::error!(op = op.name(), "an operation reached a handler its class does not route to");
    Error::Internal(format!("{} was routed to the wrong handler", op.name()))
}

fn not_found(path: &str) -> Error {
    Error::NotFound(format!("no secret at {path}"))
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
        Err(Error::Cluster(_) | Error::AuditUnavailable | Error::Storage(_) | Error::Internal(_) | Error::Sealed) => {
            None
        }
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
