//! [`Core`]: the vault on one node, wiring its parts (seal state and keyring, the audit
//! pipeline, compiled policies, ceremonies, the watch feed, limits, metrics), its constructors
//! and the leader's maintenance. Each part's behaviour lives in its own module: the request
//! pipeline in `pipeline`, handlers in `execute`, the KV engine in `kv::engine`, identity in
//! `token::store`, `auth::login` and `policy`, and so on (see ARCHITECTURE.md).

use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use arca_crypto::{AuditHasher, Keyring, SecretKey};
use arca_raft::{Command, CommandResult, RaftNode};
use arca_storage::Cf;
use tracing::{info, warn};

use crate::audit::{AuditConfig, AuditRecord, Batcher};
use crate::ceremony::{Ceremony, GenerateRootParams, RekeyParams};
use crate::init::{InitRecord, INIT_KEY};
use crate::limits::{Class, Limiter, LimitsConfig};
use crate::policy::PolicySet;
use crate::seal::{PendingRoot, Seal, Sealer};
use crate::{now_ms, Error, Result};

/// How far apart nodes' clocks may be before retention could drop the outcome of a record it
/// keeps (see `apply_audit_retention`).
const ID_CLOCK_MARGIN: Duration = Duration::from_secs(600);

/// The vault on one node: its seal state and the replicated state behind the barrier.
#[derive(Clone)]
pub struct Core {
    pub(crate) node: RaftNode,
    pub(crate) seal: Arc<Mutex<Seal>>,
    /// Compiled policies, kept current at apply time (see `policy::store`).
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
    pub(crate) audit_config: AuditConfig,
    /// Only in benchmark builds: whether requests are audited.
    #[cfg(feature = "bench-unaudited")]
    pub(crate) audited: bool,
    /// The cluster audit HMAC key, loaded on first use after unseal; dropped on seal.
    pub(crate) audit_hasher: Arc<Mutex<Option<Arc<AuditHasher>>>>,
    /// This node's feed of applied changes, for watchers.
    pub(crate) feed: Arc<crate::watch::Feed>,
    /// Budgets of untrusted requests per source address (see `limits`).
    pub(crate) limiter: Arc<Limiter>,
    pub(crate) metrics: crate::metrics::Metrics,
    /// This node's autopilot settings (its `dead_after` judges health in `AutopilotState`).
    pub(crate) autopilot: arca_raft::AutopilotConfig,
    /// Held while a join is in progress: a join needs no token, so without this anyone who can
    /// reach a new node could keep it dialling addresses many times over at once.
    pub(crate) joining: Arc<tokio::sync::Mutex<()>>,
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
        let policies = Arc::new(RwLock::new(crate::policy::sealed_set()));
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
                request_id: crate::audit::request_id(),
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
        // Outcomes and batch markers are keyed by ids that begin with their proposer's clock:
        // those made well before the last record trimmed belonged to trimmed records. The margin
        // covers nodes whose clocks disagree; what it keeps is bounded by it. A record stamped
        // by a clock running ahead cannot push the bound past this leader's own clock, and a
        // batch marker goes only once its records have (`forget_before`). A last record that
        // cannot be read gives no time: nothing of the kind goes this round.
        let last_trimmed = arca_raft::audit_log::read(reader, through, 1)?
            .into_iter()
            .find(|(seq, _)| *seq == through)
            .and_then(|(seq, raw)| AuditRecord::open(&keyring, seq, &raw).ok());
        let ids_before_ms = last_trimmed.map_or(0, |r| r.time_ms.min(now_ms()) - ID_CLOCK_MARGIN.as_millis() as i64);
        let resp = self.node.write(Command::AuditTrimAll { through, decided_ms: now_ms(), ids_before_ms }).await?;
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

    /// Whether `key` holds exactly `ours` on current state (after a read barrier): how a write
    /// whose guard failed learns that a resent copy of it had already applied. `ours` is unique
    /// (sealed with a fresh nonce), so no other write could have stored it.
    pub(crate) async fn landed(&self, cf: Cf, key: &[u8], ours: &[u8]) -> Result<bool> {
        self.node.read_barrier().await?;
        Ok(self.node.reader().get(cf, key)?.as_deref() == Some(ours))
    }

    pub(crate) fn init_record(&self) -> Result<Option<InitRecord>> {
        let Some(raw) = self.node.reader().get(Cf::Sys, INIT_KEY)? else { return Ok(None) };
        serde_json::from_slice(&raw)
            .map(Some)
            .map_err(|e| Error::Corrupt { path: "sys/core/init".into(), reason: e.to_string() })
    }
}
