//! `node.toml`: everything a node needs to start.
//!
//! Why one file of about 500 lines: the whole `node.toml` schema, its defaults and its checks in
//! one place an operator can read top to bottom (470 lines), and its tests.
//!
//! ```toml
//! node_id = 1
//! data_dir = "/var/lib/arca"
//! log_level = "info"            # optional: Arca at info, libraries at warn; or a full filter
//! # disable_mlock = false       # true: skip mlockall (only where swap is off or encrypted)
//! # disable_direct_io = false   # true: RocksDB tables through the page cache even where
//! #                             # the filesystem takes direct I/O (logged at start)
//!
//! [api]                         # client API (gRPC over TLS)
//! listen = "0.0.0.0:8200"
//! advertise = "node1:8200"
//!
//! [cluster]                     # node-to-node (Raft over mutual TLS)
//! listen = "0.0.0.0:8201"
//! advertise = "node1:8201"
//! bootstrap = true              # exactly one node of a new cluster
//! # join = ["node1:8201"]       # the others: any member's cluster address
//! # non_voter = false           # join as a learner: replicates and serves reads, no vote
//! # source_address = "10.0.0.5" # the local address of connections to peers (default: any)
//! ca = "/etc/arca/cluster-ca.pem"          # the cluster CA: node certificates only
//! cert = "/etc/arca/node1-cluster.pem"     # names this node: DNS name node-1.arca
//! key = "/etc/arca/node1-cluster-key.pem"
//!
//! [tls]                         # the client API
//! ca = "/etc/arca/ca.pem"       # the client-facing CA (must differ from cluster.ca)
//! cert = "/etc/arca/node1.pem"
//! key = "/etc/arca/node1-key.pem"
//!
//! [raft]                        # optional
//! heartbeat_ms = 75
//! election_min_ms = 250
//! election_max_ms = 500
//! leader_timeout_ms = 5000      # longest a request waits for a leader (election, forwarding)
//! apply_timeout_ms = 5000       # longest it waits for this node to apply its committed write
//! snapshot_every = 20000        # log entries between Raft snapshots (each holds the whole state)
//! keep_logs = 1000              # entries kept behind a snapshot for briefly lagging followers
//! commit_hold_ms = 10           # leader: longest a commit notice waits to ride the next message (0: none)
//!
//! [audit]                       # optional
//! flush_interval_ms = 0         # group commit: longest a batch waits for company (0: none)
//! max_in_flight = 1             # group commit: batches committing at once
//! max_batch = 512               # group commit: most records in one Raft entry
//! deadline_ms = 5000            # fail closed after this without a committed record
//! retention_days = 0            # leader trims older records (0: keep all)
//! retention_max_records = 0     # leader keeps at most this many (0: no limit)
//! mirror = ""                   # "stdout" or a file: committed records as JSON lines
//! max_batch_bytes = 1048576     # group commit: most bytes of records in one Raft entry
//!
//! [autopilot]                   # optional: remove members dead this long (off by default)
//! cleanup_dead_servers = false
//! dead_server_last_contact_threshold_s = 86400
//! min_quorum = 3                # never fewer voters than this
//!
//! [limits]                      # optional; per source address (IPv6: per /64), loopback too
//! unauthenticated_per_second = 10   # requests without a valid token (0: no limit)
//! unauthenticated_burst = 100
//! failed_logins_per_second = 1      # logins (and share ceremonies) refused
//! failed_logins_burst = 20
//! denied_per_second = 10            # valid tokens asking beyond their policies
//! denied_burst = 100
//! report_interval_s = 10        # one aggregated audit record per source, class and interval
//! max_sources = 65536           # sources tracked; beyond, new ones share one budget
//! refusals_per_second = 1000    # refusals answered per source; later ones wait (0: at once)
//! watch_streams_per_token = 16  # concurrent Watch streams of one token
//! audit_tails_per_token = 4     # concurrent audit tails of one token
//! idle_timeout_s = 60           # a connection silent this long is closed
//! ```

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::{Error, Result};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub node_id: u64,
    pub data_dir: PathBuf,
    #[serde(default = "default_log_level")]
    pub log_level: String,
    pub api: Listener,
    pub cluster: ClusterConfig,
    pub tls: TlsFiles,
    #[serde(default)]
    pub raft: RaftTiming,
    #[serde(default)]
    pub audit: AuditSettings,
    #[serde(default)]
    pub rotation: RotationFileSettings,
    /// Skips `mlockall` at start (Vault's option of the same name): only where swap is off or
    /// encrypted. Core dumps are disabled either way.
    #[serde(default)]
    pub disable_mlock: bool,
    /// Writes RocksDB's tables through the page cache even where the filesystem takes direct
    /// I/O (the node logs `direct_io` and why at start). Direct writes keep a flush's bulk
    /// from queueing ahead of the log syncs every request waits for.
    #[serde(default)]
    pub disable_direct_io: bool,
    #[serde(default)]
    pub limits: LimitsSettings,
    #[serde(default)]
    pub autopilot: AutopilotSettings,
}

/// Dead-member cleanup (OpenBao's autopilot). Off by default, as in OpenBao: removing a member
/// is for good (its id is retired), so an operator opts in and chooses the time.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AutopilotSettings {
    pub cleanup_dead_servers: bool,
    /// Seconds a member may be unreachable before it is removed.
    pub dead_server_last_contact_threshold_s: u64,
    /// Never remove a voter if fewer voters than this would be left.
    pub min_quorum: usize,
}

impl Default for AutopilotSettings {
    fn default() -> Self {
        let d = arca_raft::AutopilotConfig::default();
        AutopilotSettings {
            cleanup_dead_servers: d.cleanup_dead_servers,
            dead_server_last_contact_threshold_s: d.dead_after.as_secs(),
            min_quorum: d.min_quorum,
        }
    }
}

impl AutopilotSettings {
    pub fn config(&self) -> arca_raft::AutopilotConfig {
        arca_raft::AutopilotConfig {
            cleanup_dead_servers: self.cleanup_dead_servers,
            dead_after: Duration::from_secs(self.dead_server_last_contact_threshold_s),
            min_quorum: self.min_quorum,
        }
    }
}

/// What one source may cost the cluster before it is trusted, and per-token stream bounds.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsSettings {
    pub unauthenticated_per_second: f64,
    pub unauthenticated_burst: u32,
    pub failed_logins_per_second: f64,
    pub failed_logins_burst: u32,
    pub denied_per_second: f64,
    pub denied_burst: u32,
    pub report_interval_s: u64,
    pub max_sources: usize,
    pub refusals_per_second: f64,
    pub watch_streams_per_token: usize,
    pub audit_tails_per_token: usize,
    pub idle_timeout_s: u64,
}

impl Default for LimitsSettings {
    fn default() -> Self {
        let d = arca_core::LimitsConfig::default();
        LimitsSettings {
            unauthenticated_per_second: d.unauthenticated.per_second,
            unauthenticated_burst: d.unauthenticated.burst,
            failed_logins_per_second: d.failed_logins.per_second,
            failed_logins_burst: d.failed_logins.burst,
            denied_per_second: d.denied.per_second,
            denied_burst: d.denied.burst,
            report_interval_s: d.report_interval.as_secs(),
            max_sources: d.max_sources,
            refusals_per_second: d.refusals_per_second,
            watch_streams_per_token: 16,
            audit_tails_per_token: 4,
            idle_timeout_s: 60,
        }
    }
}

impl LimitsSettings {
    pub fn core_config(&self) -> arca_core::LimitsConfig {
        use arca_core::limits::Rate;
        arca_core::LimitsConfig {
            unauthenticated: Rate { per_second: self.unauthenticated_per_second, burst: self.unauthenticated_burst },
            failed_logins: Rate { per_second: self.failed_logins_per_second, burst: self.failed_logins_burst },
            denied: Rate { per_second: self.denied_per_second, burst: self.denied_burst },
            report_interval: Duration::from_secs(self.report_interval_s),
            max_sources: self.max_sources,
            refusals_per_second: self.refusals_per_second,
        }
    }

    pub fn idle_timeout(&self) -> Duration {
        Duration::from_secs(self.idle_timeout_s)
    }

    fn check(&self) -> Result<()> {
        for (name, per_second, burst) in [
            ("unauthenticated", self.unauthenticated_per_second, self.unauthenticated_burst),
            ("failed_logins", self.failed_logins_per_second, self.failed_logins_burst),
            ("denied", self.denied_per_second, self.denied_burst),
        ] {
            if !per_second.is_finite() || per_second < 0.0 {
                return Err(Error::Config(format!(
                    "limits.{name}_per_second: must be a number ≥ 0 (0 turns the limit off)"
                )));
            }
            if per_second > 0.0 && burst == 0 {
                return Err(Error::Config(format!("limits.{name}_burst: must be at least 1 while the limit is on")));
            }
        }
        if !self.refusals_per_second.is_finite() || self.refusals_per_second < 0.0 {
            return Err(Error::Config(
                "limits.refusals_per_second: must be a number ≥ 0 (0 answers refusals at once)".into(),
            ));
        }
        let positive = [
            ("limits.report_interval_s", self.report_interval_s as usize),
            ("limits.max_sources", self.max_sources),
            ("limits.watch_streams_per_token", self.watch_streams_per_token),
            ("limits.audit_tails_per_token", self.audit_tails_per_token),
            ("limits.idle_timeout_s", self.idle_timeout_s as usize),
        ];
        for (field, value) in positive {
            if value == 0 {
                return Err(Error::Config(format!("{field}: must be at least 1")));
            }
        }
        Ok(())
    }
}

/// What rotators may run and call on this node (never settable through the API).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RotationFileSettings {
    /// Directory of `command` rotator executables.
    pub functions_dir: Option<PathBuf>,
    /// URLs `webhook` rotators may call: exact, or a prefix ending in `*` (matched on parsed
    /// URLs: scheme, host and port exactly, the path on segment boundaries).
    pub webhook_allow: Vec<String>,
    /// PEM bundle that webhook endpoints' certificates must chain to.
    pub webhook_ca_file: Option<PathBuf>,
    /// PostgreSQL servers the `postgres` rotator may connect to: `host:port` (or `host`, port
    /// 5432). Empty (the default): none.
    pub postgres_allow: Vec<String>,
}

impl RotationFileSettings {
    pub fn settings(&self) -> arca_core::rotation::RotationSettings {
        arca_core::rotation::RotationSettings {
            functions_dir: self.functions_dir.clone(),
            webhook_allow: self.webhook_allow.clone(),
            webhook_ca_file: self.webhook_ca_file.clone(),
            postgres_allow: self.postgres_allow.clone(),
        }
    }
}

/// The audit pipeline of this node (see `arca_core::AuditConfig`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuditSettings {
    pub flush_interval_ms: u64,
    pub max_batch: usize,
    pub deadline_ms: u64,
    pub retention_days: u64,
    pub retention_max_records: u64,
    pub mirror: String,
    pub max_batch_bytes: usize,
    pub max_in_flight: usize,
}

impl Default for AuditSettings {
    fn default() -> Self {
        let d = arca_core::AuditConfig::default();
        AuditSettings {
            flush_interval_ms: d.flush_interval.as_millis() as u64,
            max_batch: d.max_batch,
            deadline_ms: d.deadline.as_millis() as u64,
            retention_days: 0,
            retention_max_records: 0,
            mirror: String::new(),
            max_batch_bytes: d.max_batch_bytes,
            max_in_flight: d.max_in_flight,
        }
    }
}

impl AuditSettings {
    pub fn core_config(&self) -> arca_core::AuditConfig {
        arca_core::AuditConfig {
            flush_interval: Duration::from_millis(self.flush_interval_ms),
            max_batch: self.max_batch.max(1),
            max_batch_bytes: self.max_batch_bytes.max(1),
            max_in_flight: self.max_in_flight.max(1),
            deadline: Duration::from_millis(self.deadline_ms.max(100)),
            retention_max_age: (self.retention_days > 0).then(|| Duration::from_secs(self.retention_days * 86_400)),
            retention_max_records: (self.retention_max_records > 0).then_some(self.retention_max_records),
            ..arca_core::AuditConfig::default()
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Listener {
    pub listen: SocketAddr,
    /// `host:port` others use to reach this listener.
    pub advertise: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterConfig {
    pub listen: SocketAddr,
    pub advertise: String,
    #[serde(default)]
    pub bootstrap: bool,
    #[serde(default)]
    pub join: Vec<String>,
    /// Join as a non-voting member (learner): replicates and serves reads, no vote.
    #[serde(default)]
    pub non_voter: bool,
    /// The local IP address of this node's connections to its peers (default: the system's
    /// choice), for hosts with several addresses whose firewall rules go by source.
    #[serde(default)]
    pub source_address: Option<std::net::IpAddr>,
    /// The node-to-node port's own CA and this node's certificate from it. Optional in the
    /// file only so that a config written before they existed gets an error that says what to
    /// do (see [`Config::check`]), instead of serde's "missing field".
    pub ca: Option<PathBuf>,
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
}

/// The files of the node-to-node port, once checked.
#[derive(Debug, Clone)]
pub struct ClusterTlsFiles {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsFiles {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RaftTiming {
    pub heartbeat_ms: u64,
    pub election_min_ms: u64,
    pub election_max_ms: u64,
    /// The longest a request waits for a leader to be elected or to answer a forward.
    pub leader_timeout_ms: u64,
    /// The longest a request waits for this node to apply what it committed.
    pub apply_timeout_ms: u64,
    /// Build a Raft snapshot (the whole state, audit trail included) after this many log
    /// entries since the last one; the log before it is then purged.
    pub snapshot_every: u64,
    /// Log entries kept behind a snapshot, so a briefly lagging follower catches up from the
    /// log instead of receiving the whole state.
    pub keep_logs: u64,
    /// The longest a leader holds a commit notice for the next message to the same follower;
    /// 0 sends each on its own.
    pub commit_hold_ms: u64,
}

impl Default for RaftTiming {
    fn default() -> Self {
        let t = arca_raft::Timing::default();
        RaftTiming {
            heartbeat_ms: t.heartbeat.as_millis() as u64,
            election_min_ms: t.election_min.as_millis() as u64,
            election_max_ms: t.election_max.as_millis() as u64,
            leader_timeout_ms: t.leader_timeout.as_millis() as u64,
            apply_timeout_ms: t.apply_timeout.as_millis() as u64,
            snapshot_every: t.snapshot_every,
            keep_logs: t.keep_logs,
            commit_hold_ms: t.commit_hold.as_millis() as u64,
        }
    }
}

fn default_log_level() -> String {
    "info".into()
}

impl Config {
    /// Reads and checks a config file. Errors name the file and the field.
    pub fn load(path: &Path) -> Result<Config> {
        let text =
            std::fs::read_to_string(path).map_err(|e| Error::Config(format!("cannot read {}: {e}", path.display())))?;
        Self::parse(&text).map_err(|e| match e {
            Error::Config(msg) => Error::Config(format!("{}: {msg}", path.display())),
            other => other,
        })
    }

    pub fn parse(text: &str) -> Result<Config> {
        let config: Config =
            toml::from_str(text).map_err(|e| Error::Config(e.to_string().trim().replace('\n', " ")))?;
        config.check()?;
        Ok(config)
    }

    fn check(&self) -> Result<()> {
        let bad = |msg: &str| Err(Error::Config(msg.to_string()));
        if self.node_id == 0 {
            return bad("node_id: must be a positive integer, unique in the cluster");
        }
        if self.cluster.bootstrap && !self.cluster.join.is_empty() {
            return bad(
                "cluster.bootstrap and cluster.join: set one, not both (bootstrap the first node, join the others)",
            );
        }
        if self.autopilot.cleanup_dead_servers
            && (self.autopilot.dead_server_last_contact_threshold_s < 1 || self.autopilot.min_quorum < 3)
        {
            return bad(
                "autopilot: dead_server_last_contact_threshold_s must be at least 1 and min_quorum at least 3 (fewer \
                 voters tolerate no failure)",
            );
        }
        if self.cluster.bootstrap && self.cluster.non_voter {
            return bad("cluster.non_voter: the node that bootstraps a cluster is its first voter; set one, not both");
        }
        for (field, addr) in [("api.advertise", &self.api.advertise), ("cluster.advertise", &self.cluster.advertise)] {
            if addr.rsplit_once(':').and_then(|(_, p)| p.parse::<u16>().ok()).is_none() {
                return Err(Error::Config(format!("{field}: {addr:?} is not host:port")));
            }
        }
        self.cluster_tls()?;
        let r = &self.raft;
        if r.heartbeat_ms == 0 || r.election_min_ms <= r.heartbeat_ms || r.election_max_ms <= r.election_min_ms {
            return bad("raft: need 0 < heartbeat_ms < election_min_ms < election_max_ms");
        }
        // A wait for a leader shorter than an election would fail every request made during a
        // routine failover.
        if r.leader_timeout_ms <= r.election_max_ms || r.apply_timeout_ms == 0 {
            return bad("raft: need leader_timeout_ms > election_max_ms and apply_timeout_ms > 0");
        }
        // A forwarded proposal may be resent for this long; audit retention keeps what
        // recognizes a resend for ten minutes at least (`Core::apply_audit_retention`).
        if r.leader_timeout_ms > 300_000 {
            return bad("raft.leader_timeout_ms: must be at most 300000 (5 minutes; default 5000)");
        }
        // A snapshot holds the whole state, audit trail included: one every few entries would
        // spend the node's disk and CPU rewriting it. Keeping more entries than that behind one
        // only makes the log longer.
        if !(100..=10_000_000).contains(&r.snapshot_every) {
            return bad("raft.snapshot_every: must be 100 to 10000000 log entries between snapshots (default 20000)");
        }
        if r.keep_logs > r.snapshot_every {
            return bad("raft.keep_logs: must not exceed raft.snapshot_every (default 1000)");
        }
        // A follower applies a held commit only when it arrives: held past a heartbeat, an idle
        // follower's state would lag for nothing.
        if r.commit_hold_ms >= r.heartbeat_ms {
            return bad("raft.commit_hold_ms: must be less than raft.heartbeat_ms (default 10; 0 holds none)");
        }
        // Each slot is a batch committing at once; a semaphore also refuses absurd counts (it
        // panics past usize::MAX >> 3), so a typo must not reach it.
        if !(1..=64).contains(&self.audit.max_in_flight) {
            return bad("audit.max_in_flight: must be 1 to 64 batches committing at once (default 1)");
        }
        // The queue holds eight batches' worth; a typo must not size it past memory.
        if !(1..=65_536).contains(&self.audit.max_batch) {
            return bad("audit.max_batch: must be 1 to 65536 records in one Raft entry (default 512)");
        }
        self.rotation.settings().check().map_err(|e| Error::Config(format!("rotation: {e}")))?;
        self.limits.check()?;
        if tracing_subscriber::EnvFilter::try_new(&self.log_level).is_err() {
            return Err(Error::Config(format!("log_level: {:?} is not a valid filter (try \"info\")", self.log_level)));
        }
        Ok(())
    }

    /// The node-to-node port's CA, certificate and key. There is no fallback to `tls.ca`: a
    /// node port that trusted the client-facing CA would let any client certificate it issues
    /// reach Raft and `forward` (DESIGN.md invariant 8), so a config without them does not
    /// start.
    pub fn cluster_tls(&self) -> Result<ClusterTlsFiles> {
        let c = &self.cluster;
        let (Some(ca), Some(cert), Some(key)) = (&c.ca, &c.cert, &c.key) else {
            return Err(Error::Config(format!(
                "cluster.ca, cluster.cert, cluster.key: required. The node-to-node port ({}) trusts only its own \
                 cluster CA, never tls.ca: create a CA that signs node certificates only, give node {} a \
                 certificate from it with the DNS name {} (server and client auth), and set the three paths \
                 (`arca dev certs` writes such files for a trial cluster)",
                c.listen,
                self.node_id,
                arca_raft::node_name(self.node_id)
            )));
        };
        if ca == &self.tls.ca {
            return Err(Error::Config(
                "cluster.ca: must not be the client-facing tls.ca; the node-to-node port needs a CA of its own, \
                 which issues node certificates only"
                    .into(),
            ));
        }
        Ok(ClusterTlsFiles { ca: ca.clone(), cert: cert.clone(), key: key.clone() })
    }

    pub fn timing(&self) -> arca_raft::Timing {
        arca_raft::Timing {
            heartbeat: Duration::from_millis(self.raft.heartbeat_ms),
            election_min: Duration::from_millis(self.raft.election_min_ms),
            election_max: Duration::from_millis(self.raft.election_max_ms),
            leader_timeout: Duration::from_millis(self.raft.leader_timeout_ms),
            apply_timeout: Duration::from_millis(self.raft.apply_timeout_ms),
            snapshot_every: self.raft.snapshot_every,
            keep_logs: self.raft.keep_logs,
            commit_hold: Duration::from_millis(self.raft.commit_hold_ms),
            ..Default::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
node_id = 1
data_dir = "/tmp/x"
[api]
listen = "127.0.0.1:8200"
advertise = "127.0.0.1:8200"
[cluster]
listen = "127.0.0.1:8201"
advertise = "127.0.0.1:8201"
bootstrap = true
ca = "cluster-ca.pem"
cert = "n-cluster.pem"
key = "n-cluster-key.pem"
[tls]
ca = "ca.pem"
cert = "n.pem"
key = "n-key.pem"
"#;

    #[test]
    fn good_config_parses_with_defaults() {
        let c = Config::parse(GOOD).unwrap();
        assert_eq!(c.log_level, "info");
        assert_eq!(c.raft.heartbeat_ms, 75);
        let limits = c.limits.core_config();
        assert_eq!(limits, arca_core::LimitsConfig::default(), "no [limits] section: the defaults");
        assert!(!c.disable_direct_io, "direct I/O where the filesystem takes it, unless turned off");
        let off =
            Config::parse(&GOOD.replace("data_dir = \"/tmp/x\"", "data_dir = \"/tmp/x\"\ndisable_direct_io = true"));
        assert!(off.unwrap().disable_direct_io);
        let c =
            Config::parse(&format!("{GOOD}\n[limits]\nunauthenticated_per_second = 2\nunauthenticated_burst = 5\n"))
                .unwrap();
        assert_eq!(c.limits.core_config().unauthenticated.per_second, 2.0);
    }

    #[test]
    fn errors_name_the_field() {
        for (edit, field) in [
            (GOOD.replace("node_id = 1", "node_id = 0"), "node_id"),
            (GOOD.replace("node_id = 1\n", ""), "node_id"),
            (GOOD.replace("bootstrap = true", "bootstrap = true\njoin = [\"a:1\"]"), "cluster.join"),
            (GOOD.replace("advertise = \"127.0.0.1:8200\"", "advertise = \"nohost\""), "api.advertise"),
            (GOOD.replace("listen = \"127.0.0.1:8200\"", "listen = \"nope\""), "listen"),
            (GOOD.replace("[tls]", "[tls]\nextra = 1"), "extra"),
            (format!("{GOOD}\n[raft]\nheartbeat_ms = 900"), "raft"),
            (format!("{GOOD}\n[raft]\nleader_timeout_ms = 400"), "leader_timeout_ms"),
            (format!("{GOOD}\n[raft]\napply_timeout_ms = 0"), "apply_timeout_ms"),
            (format!("{GOOD}\n[raft]\nsnapshot_every = 0"), "raft.snapshot_every"),
            (format!("{GOOD}\n[raft]\nsnapshot_every = 18446744073709551615"), "raft.snapshot_every"),
            (format!("{GOOD}\n[raft]\nleader_timeout_ms = 3600000"), "raft.leader_timeout_ms"),
            (format!("{GOOD}\n[raft]\nsnapshot_every = 500\nkeep_logs = 600"), "raft.keep_logs"),
            (format!("{GOOD}\n[raft]\ncommit_hold_ms = 75"), "raft.commit_hold_ms"),
            (GOOD.replace("ca = \"cluster-ca.pem\"\n", ""), "cluster.ca, cluster.cert, cluster.key: required"),
            (GOOD.replace("key = \"n-cluster-key.pem\"\n", ""), "never tls.ca"),
            (GOOD.replace("cluster-ca.pem", "ca.pem"), "must not be the client-facing tls.ca"),
            (format!("{GOOD}\n[limits]\ndenied_burst = 0"), "limits.denied_burst"),
            (format!("{GOOD}\n[limits]\nfailed_logins_per_second = -1"), "limits.failed_logins_per_second"),
            (format!("{GOOD}\n[limits]\nidle_timeout_s = 0"), "limits.idle_timeout_s"),
            (format!("{GOOD}\n[limits]\nper_second = 3"), "per_second"),
            (format!("{GOOD}\n[audit]\nmax_in_flight = 0"), "audit.max_in_flight"),
            (format!("{GOOD}\n[audit]\nmax_in_flight = 4611686018427387904"), "audit.max_in_flight"),
            (format!("{GOOD}\n[audit]\nmax_batch = 0"), "audit.max_batch"),
        ] {
            let err = Config::parse(&edit).unwrap_err().to_string();
            assert!(err.contains(field), "expected {field:?} in: {err}");
        }
    }
}
