//! Prometheus metrics of one node (issue 19): what its requests did, how its Raft, audit
//! pipeline, rotations, storage and process are doing. Served as `GET /v1/sys/metrics` (Vault's
//! path), in the Prometheus text format.
//!
//! Events (requests, audit batches, rotation runs) are counted as they happen; state (Raft
//! indexes and lag, seal state, column family sizes, process CPU and memory, time to each
//! rotation's next run) is read when scraped, so it is never stale. Each core has its own
//! registry (no process-global recorder: a test process runs several nodes). Labels carry
//! operation names, outcomes, column family names, node ids and secret paths that have a
//! rotation configured; never a secret value, a token or a client address.

use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::{Metric, Registry, Unit};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct RequestLabels {
    pub operation: &'static str,
    pub outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OperationLabel {
    operation: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabel {
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PathLabel {
    path: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PeerLabel {
    node: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StorageLabels {
    cf: String,
    kind: String,
}

type FloatGauge = Gauge<f64, AtomicU64>;

/// Request latencies: 0.5 ms to 16 s.
fn request_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.0005, 2.0, 16))
}

/// Registers `metric` under `name` and returns it (a handle sharing the registered value).
fn add<M: Metric + Clone>(r: &mut Registry, name: &str, help: &str, metric: M) -> M {
    r.register(name, help, metric.clone());
    metric
}

/// [`add`] with a unit (which Prometheus appends to the name).
fn add_in<M: Metric + Clone>(r: &mut Registry, name: &str, help: &str, unit: Unit, metric: M) -> M {
    r.register_with_unit(name, help, unit, metric.clone());
    metric
}

/// A node's metrics. Cheap to clone (shared).
#[derive(Clone)]
pub(crate) struct Metrics {
    inner: Arc<Inner>,
}

struct Inner {
    /// Also the lock that keeps two scrapes from interleaving their gauge updates.
    registry: Mutex<Registry>,
    requests: Family<RequestLabels, Counter>,
    request_seconds: Family<OperationLabel, Histogram>,
    audit_batch_items: Histogram,
    audit_commit_seconds: Histogram,
    audit_batch_wait_seconds: Histogram,
    audit_batch_raft_seconds: Histogram,
    audit_fail_closed: Counter,
    rotation_runs: Family<OutcomeLabel, Counter>,
    rotation_step_failures: Counter,
    rotation_next_run: Family<PathLabel, FloatGauge>,
    rotation_failing: Family<PathLabel, Gauge>,
    raft_term: Gauge,
    raft_leader: Gauge,
    raft_is_leader: Gauge,
    raft_leader_changes: Counter,
    raft_last_log_index: Gauge,
    raft_commit_index: Gauge,
    raft_applied_index: Gauge,
    raft_apply_lag: Gauge,
    raft_replication_lag: Family<PeerLabel, Gauge>,
    raft_voters: Gauge,
    sealed: Gauge,
    storage_bytes: Family<StorageLabels, Gauge>,
    process_cpu_seconds: FloatGauge,
    process_resident_bytes: Gauge,
    process_open_fds: Gauge,
    last_leader: Mutex<Option<u64>>,
}

/// What the scrape reads from the node's state.
pub(crate) struct Snapshot {
    pub sealed: bool,
    pub term: u64,
    pub leader: Option<u64>,
    pub is_leader: bool,
    pub last_log_index: u64,
    pub applied_index: u64,
    /// On the leader: each other member's matched log index.
    pub replication: Vec<(u64, u64)>,
    pub voters: usize,
    /// `(column family, SST bytes, memtable bytes)`.
    pub storage: Vec<(&'static str, u64, u64)>,
    /// `(path, seconds until the next run, last run gave up)`.
    pub rotations: Vec<(String, f64, bool)>,
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("arca");
        let r = &mut registry;
        let requests = add(r, "requests", "Requests handled, by operation and outcome", Family::default());
        let request_seconds = add_in(
            r,
            "request_duration",
            "Time from a request's arrival to its reply, by operation",
            Unit::Seconds,
            Family::<OperationLabel, Histogram>::new_with_constructor(request_histogram),
        );
        let audit_batch_items = add(
            r,
            "audit_batch_items",
            "Records, outcomes and barriers per audit Raft entry",
            // 1 to 1024 items.
            Histogram::new(exponential_buckets(1.0, 2.0, 11)),
        );
        let audit_commit_seconds = add_in(
            r,
            "audit_commit",
            "Time from a request's arrival until its audit record (or read barrier) is applied here",
            Unit::Seconds,
            request_histogram(),
        );
        // 0.1 ms to 0.8 s: a batch's wait is capped at a few milliseconds, and a healthy
        // commit takes about one.
        let batch_histogram = || Histogram::new(exponential_buckets(0.0001, 2.0, 14));
        let audit_batch_wait_seconds = add_in(
            r,
            "audit_batch_wait",
            "Time an audit batch waited for more requests (the requests the last commit answered, flush_interval) before it was proposed",
            Unit::Seconds,
            batch_histogram(),
        );
        let audit_batch_raft_seconds = add_in(
            r,
            "audit_batch_raft",
            "Time from proposing an audit batch to its being applied here: replication and the disks' syncs",
            Unit::Seconds,
            batch_histogram(),
        );
        let audit_fail_closed = add(
            r,
            "audit_fail_closed",
            "Requests refused because their audit record could not be committed (lost quorum, full disk)",
            Counter::default(),
        );
        let rotation_runs = add(
            r,
            "rotation_runs",
            "Rotations this node drove to an end, by outcome (finished, failed)",
            Family::default(),
        );
        let rotation_step_failures = add(
            r,
            "rotation_step_failures",
            "Rotation steps that failed here (each is retried with backoff)",
            Counter::default(),
        );
        let rotation_next_run = add_in(
            r,
            "rotation_next_run",
            "Time until each configured rotation's next run (negative: overdue)",
            Unit::Seconds,
            Family::default(),
        );
        let rotation_failing =
            add(r, "rotation_failing", "1 when a rotation's last run gave up after max_attempts", Family::default());
        let raft_term = add(r, "raft_term", "The Raft term this node is in", Gauge::default());
        let raft_leader =
            add(r, "raft_leader", "The node id of the leader this node knows (0: none)", Gauge::default());
        let raft_is_leader = add(r, "raft_is_leader", "1 on the leader", Gauge::default());
        let raft_leader_changes =
            add(r, "raft_leader_changes", "Times this node saw the leader change", Counter::default());
        let raft_last_log_index =
            add(r, "raft_last_log_index", "Index of the last entry in this node's log", Gauge::default());
        let raft_commit_index = add(
            r,
            "raft_commit_index",
            "On the leader: the index a quorum of voters holds (committed)",
            Gauge::default(),
        );
        let raft_applied_index =
            add(r, "raft_applied_index", "Index of the last entry applied to this node's state", Gauge::default());
        let raft_apply_lag = add(r, "raft_apply_lag", "Entries in this node's log not yet applied", Gauge::default());
        let raft_replication_lag = add(
            r,
            "raft_replication_lag",
            "On the leader: entries each other member is behind the leader's log",
            Family::default(),
        );
        let raft_voters =
            add(r, "raft_voters", "Voting members in this node's view of the membership", Gauge::default());
        let sealed = add(r, "sealed", "1 while this node is sealed", Gauge::default());
        let storage_bytes = add_in(
            r,
            "storage",
            "RocksDB bytes per column family: kind=sst on disk, kind=memtable in memory",
            Unit::Bytes,
            Family::default(),
        );
        let process = r.sub_registry_with_prefix("process");
        let process_cpu_seconds =
            add_in(process, "cpu", "User and system CPU time of this process", Unit::Seconds, FloatGauge::default());
        let process_resident_bytes =
            add_in(process, "resident_memory", "Resident memory of this process", Unit::Bytes, Gauge::default());
        let process_open_fds = add(process, "open_fds", "Open file descriptors of this process", Gauge::default());
        Metrics {
            inner: Arc::new(Inner {
                registry: Mutex::new(registry),
                requests,
                request_seconds,
                audit_batch_items,
                audit_commit_seconds,
                audit_batch_wait_seconds,
                audit_batch_raft_seconds,
                audit_fail_closed,
                rotation_runs,
                rotation_step_failures,
                rotation_next_run,
                rotation_failing,
                raft_term,
                raft_leader,
                raft_is_leader,
                raft_leader_changes,
                raft_last_log_index,
                raft_commit_index,
                raft_applied_index,
                raft_apply_lag,
                raft_replication_lag,
                raft_voters,
                sealed,
                storage_bytes,
                process_cpu_seconds,
                process_resident_bytes,
                process_open_fds,
                last_leader: Mutex::new(None),
            }),
        }
    }

    /// On every request: label values are static names, so recording allocates nothing.
    pub fn request(&self, operation: &'static str, outcome: &'static str, seconds: f64) {
        let i = &self.inner;
        i.requests.get_or_create(&RequestLabels { operation, outcome }).inc();
        i.request_seconds.get_or_create(&OperationLabel { operation }).observe(seconds);
    }

    pub fn audit_batch(&self, items: usize) {
        self.inner.audit_batch_items.observe(items as f64);
    }

    pub fn audit_commit(&self, seconds: f64) {
        self.inner.audit_commit_seconds.observe(seconds);
    }

    /// How long a batch gathered company before it was proposed.
    pub fn audit_batch_waited(&self, seconds: f64) {
        self.inner.audit_batch_wait_seconds.observe(seconds);
    }

    /// How long a proposed batch took to commit and apply here.
    pub fn audit_batch_committed(&self, seconds: f64) {
        self.inner.audit_batch_raft_seconds.observe(seconds);
    }

    pub fn audit_fail_closed(&self) {
        self.inner.audit_fail_closed.inc();
    }

    pub fn rotation_run(&self, outcome: &'static str) {
        self.inner.rotation_runs.get_or_create(&OutcomeLabel { outcome }).inc();
    }

    pub fn rotation_step_failed(&self) {
        self.inner.rotation_step_failures.inc();
    }

    /// The leader this node knows now; a change to another leader is counted.
    pub fn leader_seen(&self, leader: Option<u64>) {
        let mut last = self.inner.last_leader.lock().expect("metrics lock");
        if *last != leader {
            if leader.is_some() {
                self.inner.raft_leader_changes.inc();
            }
            *last = leader;
        }
    }

    /// The text exposition, with the state gauges set from `state` first.
    pub fn render(&self, state: &Snapshot) -> String {
        let i = &self.inner;
        let registry = i.registry.lock().expect("metrics lock");
        self.leader_seen(state.leader);
        i.sealed.set(i64::from(state.sealed));
        i.raft_term.set(state.term as i64);
        i.raft_leader.set(state.leader.unwrap_or(0) as i64);
        i.raft_is_leader.set(i64::from(state.is_leader));
        i.raft_last_log_index.set(state.last_log_index as i64);
        i.raft_applied_index.set(state.applied_index as i64);
        i.raft_apply_lag.set(state.last_log_index.saturating_sub(state.applied_index) as i64);
        i.raft_voters.set(state.voters as i64);
        i.raft_replication_lag.clear();
        for (node, matched) in &state.replication {
            let lag = state.last_log_index.saturating_sub(*matched) as i64;
            i.raft_replication_lag.get_or_create(&PeerLabel { node: node.to_string() }).set(lag);
        }
        i.raft_commit_index.set(if state.is_leader { commit_index(state) as i64 } else { 0 });
        for (cf, sst, mem) in &state.storage {
            let set = |kind: &str, v: u64| {
                i.storage_bytes.get_or_create(&StorageLabels { cf: (*cf).into(), kind: kind.into() }).set(v as i64)
            };
            set("sst", *sst);
            set("memtable", *mem);
        }
        i.rotation_next_run.clear();
        i.rotation_failing.clear();
        for (path, next, failing) in &state.rotations {
            i.rotation_next_run.get_or_create(&PathLabel { path: path.clone() }).set(*next);
            i.rotation_failing.get_or_create(&PathLabel { path: path.clone() }).set(i64::from(*failing));
        }
        if let Some(p) = process_stats() {
            i.process_cpu_seconds.set(p.cpu_seconds);
            i.process_resident_bytes.set(p.resident_bytes as i64);
            i.process_open_fds.set(p.open_fds as i64);
        }
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &registry).expect("writing to a String cannot fail");
        out
    }
}

/// The highest index a majority of voters holds: the leader's own log and each follower's
/// matched index.
fn commit_index(state: &Snapshot) -> u64 {
    let mut held: Vec<u64> =
        std::iter::once(state.last_log_index).chain(state.replication.iter().map(|(_, m)| *m)).collect();
    held.sort_unstable_by(|a, b| b.cmp(a));
    let quorum = state.voters / 2 + 1;
    held.get(quorum.saturating_sub(1)).copied().unwrap_or(0)
}

struct ProcessStats {
    cpu_seconds: f64,
    resident_bytes: u64,
    open_fds: u64,
}

/// From /proc (Linux); `None` elsewhere.
fn process_stats() -> Option<ProcessStats> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the command name (which may hold spaces, so split after its ')').
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let ticks = |n: usize| fields.get(n).and_then(|f| f.parse::<u64>().ok());
    // utime and stime are fields 14 and 15 of stat: 12 and 13 after the name and state.
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    let cpu_seconds = (ticks(11)? + ticks(12)?) as f64 / hz;
    // rss (field 24) is in pages.
    // SAFETY: as above.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) }.max(1) as u64;
    let resident_bytes = ticks(21)? * page;
    let open_fds = std::fs::read_dir("/proc/self/fd").map(|d| d.count() as u64).unwrap_or(0);
    Some(ProcessStats { cpu_seconds, resident_bytes, open_fds })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn snapshot() -> Snapshot {
        Snapshot {
            sealed: false,
            term: 3,
            leader: Some(1),
            is_leader: true,
            last_log_index: 100,
            applied_index: 98,
            replication: vec![(2, 100), (3, 40)],
            voters: 3,
            storage: vec![("kv", 4096, 1024)],
            rotations: vec![("db/app".into(), 42.0, false)],
        }
    }

    #[test]
    fn the_exposition_carries_events_and_state() {
        let m = Metrics::new();
        m.request("KvGet", "ok", 0.002);
        m.request("KvGet", "permission_denied", 0.001);
        m.audit_batch(4);
        m.audit_batch_waited(0.0004);
        m.audit_batch_committed(0.0012);
        let text = m.render(&snapshot());
        for line in [
            "arca_requests_total{operation=\"KvGet\",outcome=\"ok\"} 1",
            "arca_requests_total{operation=\"KvGet\",outcome=\"permission_denied\"} 1",
            "arca_request_duration_seconds_count{operation=\"KvGet\"} 2",
            "arca_audit_batch_wait_seconds_count 1",
            "arca_audit_batch_wait_seconds_bucket{le=\"0.0004\"} 1",
            "arca_audit_batch_raft_seconds_count 1",
            "arca_raft_term 3",
            "arca_raft_apply_lag 2",
            "arca_raft_replication_lag{node=\"3\"} 60",
            "arca_raft_commit_index 100",
            "arca_storage_bytes{cf=\"kv\",kind=\"sst\"} 4096",
            "arca_rotation_next_run_seconds{path=\"db/app\"} 42.0",
            "arca_sealed 0",
            "arca_raft_leader_changes_total 1",
        ] {
            assert!(text.contains(line), "missing {line:?} in:\n{text}");
        }
        assert!(text.contains("arca_process_open_fds") && text.contains("arca_process_cpu_seconds"), "{text}");
        // The same leader again is no change.
        assert!(m.render(&snapshot()).contains("arca_raft_leader_changes_total 1"));
    }

    #[test]
    fn the_commit_index_is_what_a_majority_holds() {
        let mut s = snapshot();
        s.replication = vec![(2, 90), (3, 40)];
        assert_eq!(commit_index(&s), 90);
        s.voters = 5;
        s.replication = vec![(2, 90), (3, 80), (4, 10), (5, 5)];
        assert_eq!(commit_index(&s), 80);
    }
}
