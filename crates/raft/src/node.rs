//! One running member of an Arca cluster.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arca_storage::StateReader;
use openraft::error::{InitializeError, RaftError};
use openraft::{Raft, RaftMetrics, SnapshotPolicy};
use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tracing::{info, instrument, warn};

use crate::network::{decode, encode, HeldCommits, Network, MAX_MESSAGE};
use crate::proto::raft_server::RaftServer;
use crate::service::{execute_on_leader, LeaderError, LeaderReply, LeaderRequest, RaftService};
use crate::{Command, Error, Response, Result, TlsConfig, TypeConfig};

/// How peers reach a node; stored in the replicated membership.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeInfo {
    /// Node-to-node address (`host:port`, port 8201 by default).
    pub raft_addr: String,
    /// Client API address (`host:port`, port 8200 by default), for redirecting clients.
    pub api_addr: String,
}

/// Timeouts and log-retention knobs. The defaults suit a LAN: a dead leader is replaced in
/// roughly one second.
#[derive(Debug, Clone)]
pub struct Timing {
    pub heartbeat: Duration,
    /// A follower that hears nothing for a random time in `[election_min, election_max)` stands
    /// for election.
    pub election_min: Duration,
    pub election_max: Duration,
    /// Per-chunk deadline for snapshot transfer. openraft's 200 ms default makes a slow chunk be
    /// resent forever; this is generous on purpose.
    pub install_snapshot_timeout: Duration,
    /// Build a snapshot after this many entries since the last one. A snapshot is the whole
    /// state, audit trail included, written on every node: every 5 000 entries it rewrote about
    /// eight times the bytes the log itself received (a 100 MB state, 2.4 KB entries of a
    /// batched audit trail), and cost a loaded node 5-7 % of its throughput.
    pub snapshot_every: u64,
    /// Entries kept behind a snapshot, so a briefly lagging follower catches up from the log.
    pub keep_logs: u64,
    /// How long a request may wait for a leader (election, forwarding) before failing.
    pub leader_timeout: Duration,
    /// How long to wait for this node to apply a committed index (read barrier, read-your-writes).
    pub apply_timeout: Duration,
    pub connect_timeout: Duration,
    /// Longest a leader holds a commit notice for the next message to the same follower
    /// (`network::HeldCommits`); zero sends each at once, as openraft does.
    pub commit_hold: Duration,
}

impl Default for Timing {
    fn default() -> Self {
        Timing {
            heartbeat: Duration::from_millis(75),
            election_min: Duration::from_millis(250),
            election_max: Duration::from_millis(500),
            install_snapshot_timeout: Duration::from_secs(10),
            snapshot_every: 20_000,
            keep_logs: 1000,
            leader_timeout: Duration::from_secs(5),
            apply_timeout: Duration::from_secs(5),
            connect_timeout: Duration::from_secs(1),
            // Longer than a loaded leader's gap between entries (2-5 ms measured at 16-64
            // audited readers), far shorter than a heartbeat.
            commit_hold: Duration::from_millis(10),
        }
    }
}

/// Everything needed to start a node.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    /// Unique for the life of the cluster: never reuse the id of a removed node.
    pub id: u64,
    /// Where the node-to-node server listens.
    pub listen: SocketAddr,
    /// How peers and clients reach this node.
    pub info: NodeInfo,
    pub data_dir: PathBuf,
    pub tls: TlsConfig,
    pub timing: Timing,
    /// Injected network faults (tests); a server's is empty.
    pub faults: crate::Faults,
    /// The local address of connections to peers (`None`: the system chooses), for hosts
    /// whose firewall tells cluster traffic by its source.
    pub source_address: Option<std::net::IpAddr>,
    /// Whether RocksDB may write its tables with direct I/O (where the filesystem takes it).
    pub direct_io: arca_storage::DirectIo,
}

/// A running node. Cheap to clone; [`RaftNode::shutdown`] stops it.
#[derive(Clone)]
pub struct RaftNode {
    inner: Arc<Inner>,
}

struct Inner {
    id: u64,
    info: NodeInfo,
    raft: Raft<TypeConfig>,
    reader: StateReader,
    network: Network,
    timing: Timing,
    data_dir: PathBuf,
    server: Mutex<Option<(oneshot::Sender<()>, JoinHandle<()>)>>,
    /// Callers of `local_barrier` waiting for the Raft core's answer.
    leader_state: Mutex<LeaderStateAsks>,
    /// AppendEntries this node has received.
    received: Arc<std::sync::atomic::AtomicU64>,
}

/// What `local_barrier` learns from the Raft core: the term this node leads in and its commit
/// index, if it has committed an entry of that term; `Err` for a core that did not answer.
type LeaderState = std::result::Result<Option<(u64, u64)>, String>;

/// Resets the shared question if the task asking it ends without doing so itself.
struct Asking<'a> {
    asks: &'a Mutex<LeaderStateAsks>,
    done: bool,
}

impl Drop for Asking<'_> {
    fn drop(&mut self) {
        if !self.done {
            let mut asks = self.asks.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            asks.asking = false;
            // Dropped senders: each waiter learns at once that the question was dropped.
            asks.waiting.clear();
        }
    }
}

/// Concurrent `local_barrier` calls share one question to the Raft core (every request on a
/// leader makes one, and each is a message the core handles between Raft messages): a caller
/// waits for the first question asked after it arrived, so the answer is as fresh as its own.
#[derive(Default)]
struct LeaderStateAsks {
    /// A question is being asked, and whoever asked it will ask again for `waiting`.
    asking: bool,
    waiting: Vec<oneshot::Sender<LeaderState>>,
}

/// Sends the commit index the leader held back from its followers (it named entries not yet
/// synced here, see `arca_storage::Unsynced`) as soon as the sync catches up, with a heartbeat,
/// rather than at the next replication or heartbeat: a follower's read barrier waits for it.
/// Ends when the node is dropped or its log syncer stops.
async fn send_owed_commits(node: std::sync::Weak<Inner>, mut unsynced: arca_storage::Unsynced) {
    while unsynced.changed().await {
        let Some(inner) = node.upgrade() else { return };
        let owed = &inner.network.commits.owed;
        let held = owed.load(Ordering::SeqCst);
        // Cleared only if nothing newer was held back meanwhile (that waits for its own sync).
        if held != 0
            && unsynced.bound(held) == Some(held)
            && owed.compare_exchange(held, 0, Ordering::SeqCst, Ordering::SeqCst).is_ok()
        {
            inner.raft.trigger().heartbeat().await.ok();
        }
    }
}

/// Releases the commit notices the leader holds (`network::HeldCommits`) once notices have
/// been held without a break for `hold`, with a heartbeat that carries them (a release sends
/// every follower one, so under load, where each notice rides the next entry within a few
/// milliseconds, none is sent). Ends when the notices are dropped (the node stopped) or the
/// node is.
async fn release_held_commits(node: std::sync::Weak<Inner>, mut woken: tokio::sync::mpsc::Receiver<()>) {
    while woken.recv().await.is_some() {
        let Some(held) = node.upgrade().map(|inner| inner.network.held.clone()) else { return };
        while let Some(since) = held.held_since() {
            tokio::time::sleep_until((since + held.hold).into()).await;
            if held.held_since() != Some(since) {
                // Every notice went with a message meanwhile; later ones count afresh.
                continue;
            }
            let Some(inner) = node.upgrade() else { return };
            held.release(&inner.raft).await;
            break;
        }
    }
}

impl RaftNode {
    /// Opens the data directory, starts Raft and serves the node-to-node API. A node restarted
    /// from an existing data directory rejoins its cluster with no further action.
    #[instrument(skip_all, fields(node = config.id))]
    pub async fn start(config: NodeConfig) -> Result<RaftNode> {
        config.tls.check()?;
        config.tls.check_names_node(config.id)?;
        let t = &config.timing;
        let raft_config = openraft::Config {
            cluster_name: "arca".into(),
            heartbeat_interval: t.heartbeat.as_millis() as u64,
            election_timeout_min: t.election_min.as_millis() as u64,
            election_timeout_max: t.election_max.as_millis() as u64,
            install_snapshot_timeout: t.install_snapshot_timeout.as_millis() as u64,
            snapshot_policy: SnapshotPolicy::LogsSinceLast(t.snapshot_every),
            max_in_snapshot_log_to_keep: t.keep_logs,
            ..Default::default()
        }
        .validate()
        .map_err(|e| Error::Fatal(format!("invalid Raft timing: {e}")))?;
        // A held commit notice swallows the heartbeats that come while it is held: held for a
        // heartbeat or longer, an idle follower could go an election timeout without one.
        if t.commit_hold >= t.heartbeat {
            return Err(Error::Fatal(format!(
                "invalid Raft timing: commit_hold ({:?}) must be shorter than the heartbeat ({:?})",
                t.commit_hold, t.heartbeat
            )));
        }

        let (log_store, state_machine) =
            arca_storage::open_node::<TypeConfig>(&config.data_dir, config.id, config.direct_io)?;
        let reader = state_machine.reader();
        let unsynced = log_store.unsynced();
        let mut network =
            Network::new(config.tls.clone(), t.connect_timeout, config.source_address, Some(unsynced.clone()));
        let (held, held_woken) = HeldCommits::new(t.commit_hold);
        let received = Arc::new(std::sync::atomic::AtomicU64::new(0));
        network.held = held.clone();
        let raft = Raft::new(config.id, Arc::new(raft_config), network.clone(), log_store, state_machine)
            .await
            .map_err(|e| Error::Fatal(e.to_string()))?;

        // Files a dead process left in transit (see `scratch_dir`).
        let _ = std::fs::remove_dir_all(config.data_dir.join("scratch"));
        let (closing, closing_rx) = tokio::sync::watch::channel(false);
        let listener = tokio::net::TcpListener::bind(config.listen)
            .await
            .map_err(|source| Error::Listen { addr: config.listen.to_string(), source })?;
        let service = RaftServer::new(RaftService {
            id: config.id,
            raft: raft.clone(),
            reader: reader.clone(),
            refusals_logged: Default::default(),
            faults: config.faults.clone(),
            closing: closing_rx,
            held,
            received: received.clone(),
        })
        .max_decoding_message_size(MAX_MESSAGE)
        .max_encoding_message_size(MAX_MESSAGE);
        let (stop_tx, stop_rx) = oneshot::channel::<()>();
        let server = tonic::transport::Server::builder()
            .tls_config(config.tls.server(true))
            .map_err(|e| Error::Tls(e.to_string()))?
            // A peer whose host vanished leaves its connection, and any replication stream on
            // it, open until noticed: ping as the peers' own channels do.
            .http2_keepalive_interval(Some(Duration::from_secs(2)))
            .http2_keepalive_timeout(Some(Duration::from_secs(5)))
            .add_service(service)
            // Small Raft messages must not wait for delayed ACKs (Nagle): it costs ~40 ms a round.
            .serve_with_incoming_shutdown(
                tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true)),
                async move {
                    let _ = stop_rx.await;
                    // Replication streams end too, or the graceful shutdown would wait for them.
                    let _ = closing.send(true);
                },
            );
        let id = config.id;
        let handle = tokio::spawn(async move {
            if let Err(e) = server.await {
                warn!(node = id, error = %e, "node-to-node server stopped with an error");
            }
        });
        info!(listen = %config.listen, "node started");
        let node = RaftNode {
            inner: Arc::new(Inner {
                id: config.id,
                info: config.info.clone(),
                raft,
                reader,
                network,
                timing: config.timing,
                data_dir: config.data_dir.clone(),
                server: Mutex::new(Some((stop_tx, handle))),
                leader_state: Mutex::default(),
                received,
            }),
        };
        tokio::spawn(send_owed_commits(Arc::downgrade(&node.inner), unsynced));
        tokio::spawn(release_held_commits(Arc::downgrade(&node.inner), held_woken));
        Ok(node)
    }

    pub fn id(&self) -> u64 {
        self.inner.id
    }

    /// AppendEntries messages (entries, commit notices and heartbeats) this node has received
    /// as a follower since it started.
    pub fn append_entries_received(&self) -> u64 {
        self.inner.received.load(Ordering::Relaxed)
    }

    /// The openraft handle, for metrics and advanced use.
    pub fn raft(&self) -> &Raft<TypeConfig> {
        &self.inner.raft
    }

    /// Reads this node's applied state. Pair with [`RaftNode::read_barrier`] for linearizable reads.
    /// A directory on this node's data volume for files in transit (an uploaded backup before
    /// it is verified and restored), created if missing. Emptied when the node starts: what
    /// is there then was left by a process that died.
    pub fn scratch_dir(&self) -> std::io::Result<PathBuf> {
        let dir = self.inner.data_dir.join("scratch");
        std::fs::create_dir_all(&dir)?;
        Ok(dir)
    }

    pub fn reader(&self) -> &StateReader {
        &self.inner.reader
    }

    /// When each peer last answered this node's Raft RPCs.
    pub(crate) fn contacts(&self) -> std::collections::HashMap<u64, std::time::Instant> {
        self.inner.network.contacts.lock().expect("contacts lock").clone()
    }

    pub fn metrics(&self) -> RaftMetrics<u64, NodeInfo> {
        self.inner.raft.metrics().borrow().clone()
    }

    pub fn current_leader(&self) -> Option<u64> {
        self.inner.raft.metrics().borrow().current_leader
    }

    /// Makes this node a one-member cluster. Fails with [`Error::AlreadyInitialized`] if this
    /// node already belongs to a cluster.
    #[instrument(skip_all, fields(node = self.inner.id))]
    pub async fn bootstrap(&self, info: NodeInfo) -> Result<()> {
        match self
            .inner
            .raft
            .initialize([(self.inner.id, info)].into_iter().collect::<std::collections::BTreeMap<_, _>>())
            .await
        {
            Ok(()) => Ok(()),
            Err(RaftError::APIError(InitializeError::NotAllowed(_))) => Err(Error::AlreadyInitialized),
            Err(e) => Err(Error::Fatal(e.to_string())),
        }
    }

    /// Commits `command` through the leader (forwarding from a follower) and returns once this
    /// node has applied it, so a read here afterwards sees it.
    #[instrument(level = "debug", skip_all, fields(node = self.inner.id, command = ?command))]
    pub async fn write(&self, command: Command) -> Result<Response> {
        match self.on_leader(LeaderRequest::Write(command)).await? {
            LeaderReply::Written(resp) => {
                self.wait_applied(resp.index).await?;
                Ok(resp)
            }
            other => Err(Error::Rejected(format!("unexpected reply to a write: {other:?}"))),
        }
    }

    /// Read barrier: returns once this node has applied everything committed before the call,
    /// so a read of [`RaftNode::reader`] afterwards is linearizable, on any node. Costs one
    /// leader round trip (read index); returns the index waited for.
    #[instrument(level = "debug", skip_all, fields(node = self.inner.id))]
    pub async fn read_barrier(&self) -> Result<u64> {
        match self.on_leader(LeaderRequest::ReadIndex).await? {
            LeaderReply::ReadIndex(index) => {
                self.wait_applied(index).await?;
                Ok(index)
            }
            other => Err(Error::Rejected(format!("unexpected reply to a read index: {other:?}"))),
        }
    }

    /// The read barrier of a leader, without a quorum round: if this node leads and has
    /// committed an entry of its own term (so its commit index covers every entry committed
    /// before its election), waits until it has applied that index and returns the term.
    /// `None` on a follower, or on a leader still committing its first entry: use
    /// [`RaftNode::read_barrier`].
    ///
    /// A node cannot know it still leads without asking a quorum, so what it reads after this
    /// is current only while the returned term's leadership lasts. A write decided on it must
    /// therefore commit in that term (`Command::AuditBatchInTerms`): the quorum that commits
    /// an entry of the term is the proof that nobody was elected after it.
    #[instrument(level = "debug", skip_all, fields(node = self.inner.id))]
    pub async fn local_barrier(&self) -> Result<Option<u64>> {
        // Safety does not rest on this, the term does; but a leader cut off from its quorum
        // (openraft 0.9 keeps leading) would decide writes that can only time out, where a
        // read index fails over cleanly. So: only with a quorum heard within an election timeout.
        if !self.quorum_heard_within(self.inner.timing.election_min) {
            return Ok(None);
        }
        if let Some((term, index)) = self.leading_as_told() {
            self.wait_applied(index).await?;
            return Ok(Some(term));
        }
        let (answer, asked) = oneshot::channel();
        let ask = {
            let mut asks = self.inner.leader_state.lock().expect("leader state lock");
            asks.waiting.push(answer);
            !std::mem::replace(&mut asks.asking, true)
        };
        if ask {
            // Its own task: a caller that gives up (its client went away) must not strand the
            // others waiting on the same question.
            let node = self.clone();
            tokio::spawn(async move { node.ask_leader_state().await });
        }
        // Bounded like one question of its own: a caller that arrived just after a question
        // went out waits for that one and the next, and the read index path has its deadline.
        let (term, index) = match tokio::time::timeout(self.inner.timing.leader_timeout, asked).await {
            Ok(Ok(Ok(Some(at)))) => at,
            Ok(Ok(Ok(None))) | Err(_) => return Ok(None),
            Ok(Ok(Err(e))) => return Err(Error::Fatal(e)),
            Ok(Err(_)) => return Err(Error::Fatal("the leader state question was dropped".into())),
        };
        self.wait_applied(index).await?;
        Ok(Some(term))
    }

    /// The term this node leads in by its published metrics, and the highest commit index it
    /// has told a follower, if that is an entry of this term (`CommitNotice::told`): the read
    /// barrier without a question to the Raft core, which cost every read on a leader a
    /// message through the core's queue (0.19 ms on average at 16 concurrent readers, time in
    /// which the request holds its batch back).
    ///
    /// Every write some node has answered was applied there after a commit that this node, as
    /// leader, either applied itself or told a follower (all commit indexes a follower hears
    /// pass through `CommitNotice::bound`, which records them before sending). So once this
    /// node has applied the told index, and everything it applied itself, it has every write
    /// answered before the call. A commit of this term also covers every entry committed
    /// before the election. Metrics may lag the core: a node that no longer leads reads as
    /// leading a moment longer, which the term binding of what it decides answers for, as for
    /// the core's answer (see `local_barrier`).
    fn leading_as_told(&self) -> Option<(u64, u64)> {
        let term = {
            let metrics = self.inner.raft.metrics();
            let m = metrics.borrow();
            // A core that stopped (shutdown, a fatal storage error) leaves its last metrics.
            if m.running_state.is_err() {
                return None;
            }
            leads_by(m.state, &m.vote, self.inner.id)?
        };
        let told = self.inner.network.commits.told()?;
        (told.leader_id.term == term && told.leader_id.node_id == self.inner.id).then_some((term, told.index))
    }

    /// Asks the Raft core for the leader state until nobody is left waiting: each question
    /// answers the callers that arrived before it was asked.
    async fn ask_leader_state(&self) {
        let me = self.inner.id;
        // Should this task end any other way than below (a panic, its runtime going away), the
        // next caller must ask afresh, and those waiting must hear that nobody will answer.
        let mut asking = Asking { asks: &self.inner.leader_state, done: false };
        loop {
            let waiting = {
                let mut asks = self.inner.leader_state.lock().expect("leader state lock");
                if asks.waiting.is_empty() {
                    asks.asking = false;
                    asking.done = true;
                    return;
                }
                std::mem::take(&mut asks.waiting)
            };
            let leading_at = self.raft_state(move |st| match (leading_term(st, me), st.committed) {
                (Some(term), Some(c)) if c.leader_id.term == term => Some((term, c.index)),
                _ => None,
            });
            let answer = match leading_at.await {
                Ok(at) => Ok(at),
                // A Raft core too busy to answer promptly: the read index path has its own
                // deadline.
                Err(Error::Timeout(_)) => Ok(None),
                // Passed on as it came (`local_barrier` wraps it again).
                Err(Error::Fatal(why)) => Err(why),
                Err(e) => Err(e.to_string()),
            };
            for w in waiting {
                let _ = w.send(answer.clone());
            }
        }
    }

    /// Whether this node leads in `term` now. Leading in one term is one unbroken stretch, so
    /// a node that led in `term` when it decided something and still does now led throughout.
    pub async fn leads_in(&self, term: u64) -> Result<bool> {
        let me = self.inner.id;
        self.raft_state(move |st| leading_term(st, me) == Some(term)).await
    }

    /// Runs `f` on openraft's own state in its core task (so it sees votes and commits in
    /// order), within the leader timeout.
    async fn raft_state<V: Send + 'static>(
        &self,
        f: impl FnOnce(&openraft::RaftState<u64, NodeInfo, tokio::time::Instant>) -> V + Send + 'static,
    ) -> Result<V> {
        let limit = self.inner.timing.leader_timeout;
        tokio::time::timeout(limit, self.inner.raft.with_raft_state(f))
            .await
            .map_err(|_| Error::Timeout(limit))?
            .map_err(|e| Error::Fatal(e.to_string()))
    }

    /// Whether a quorum of voters (this node included) answered a Raft RPC within `window`.
    fn quorum_heard_within(&self, window: Duration) -> bool {
        let voters: Vec<u64> = self.inner.raft.metrics().borrow().membership_config.membership().voter_ids().collect();
        let contacts = self.inner.network.contacts.lock().expect("contacts lock");
        let heard = voters
            .iter()
            .filter(|&&v| v == self.inner.id || contacts.get(&v).is_some_and(|t| t.elapsed() < window))
            .count();
        heard * 2 > voters.len()
    }

    /// Adds a node as a learner and waits until it has caught up with the log.
    pub async fn add_learner(&self, id: u64, info: NodeInfo) -> Result<u64> {
        // Leave time within the request deadline for the leader to report a failure itself.
        let wait = self.inner.timing.leader_timeout.mul_f32(0.8);
        self.membership(LeaderRequest::AddLearner { id, node: info, wait }).await
    }

    /// Makes a learner a voter.
    pub async fn promote(&self, id: u64) -> Result<u64> {
        self.membership(LeaderRequest::Promote { id }).await
    }

    /// Removes a voter or learner from the cluster.
    pub async fn remove(&self, id: u64) -> Result<u64> {
        self.membership(LeaderRequest::Remove { id }).await
    }

    async fn membership(&self, req: LeaderRequest) -> Result<u64> {
        match self.on_leader(req).await? {
            LeaderReply::MembershipChanged { index } => {
                self.wait_applied(index).await?;
                Ok(index)
            }
            other => Err(Error::Rejected(format!("unexpected reply to a membership change: {other:?}"))),
        }
    }

    /// Waits until this node has applied `index`.
    pub async fn wait_applied(&self, index: u64) -> Result<()> {
        // Every audited read waits here: on the state's own applied index
        // (`StateReader::wait_applied`), not on openraft's metrics, which wake every waiter on
        // every change.
        let timeout = self.inner.timing.apply_timeout;
        match tokio::time::timeout(timeout, self.inner.reader.wait_applied(index)).await {
            Ok(true) => Ok(()),
            Err(_) => Err(Error::ApplyTimeout(timeout)),
            Ok(false) => Err(Error::Fatal("shutting down".into())),
        }
    }

    /// Runs `req` on the leader: locally if this node leads, otherwise forwarded. Retries while
    /// no leader is known or leadership moves, within `leader_timeout`.
    async fn on_leader(&self, req: LeaderRequest) -> Result<LeaderReply> {
        let limit = self.inner.timing.leader_timeout;
        let deadline = Instant::now() + limit;
        let mut backoff = Duration::from_millis(10);
        loop {
            let remaining = deadline.saturating_duration_since(Instant::now());
            let local =
                tokio::time::timeout(remaining, execute_on_leader(&self.inner.raft, &self.inner.reader, req.clone()))
                    .await
                    .map_err(|_| Error::Timeout(limit))?;
            let last_error = match local {
                Ok(reply) => return Ok(reply),
                Err(LeaderError::Failed(msg)) => return Err(Error::Rejected(msg)),
                Err(LeaderError::NotLeader { leader: Some((leader, node)) }) if leader != self.inner.id => {
                    match self.send(leader, &node.raft_addr, &req, deadline).await {
                        Ok(Ok(reply)) => return Ok(reply),
                        Ok(Err(LeaderError::Failed(msg))) => return Err(Error::Rejected(msg)),
                        // Leadership moved while the request was in flight: ask again.
                        Ok(Err(LeaderError::NotLeader { .. })) => None,
                        Err(e) => Some(e),
                    }
                }
                Err(LeaderError::NotLeader { .. }) => None,
            };
            if Instant::now() + backoff >= deadline {
                return Err(last_error.unwrap_or(Error::NoLeader(limit)));
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_millis(200));
        }
    }

    /// Sends `req` to the node at `addr` (node `to`, 0 if unknown) over the node-to-node API.
    async fn send(
        &self,
        to: u64,
        addr: &str,
        req: &LeaderRequest,
        deadline: Instant,
    ) -> Result<std::result::Result<LeaderReply, LeaderError>> {
        let mut client = self.inner.network.channel((to != 0).then_some(to), addr)?;
        let mut request = tonic::Request::new(encode(req));
        request.set_timeout(deadline.saturating_duration_since(Instant::now()));
        let fail = |reason: String| Error::Forward { leader: to, reason: format!("{addr}: {reason}") };
        let reply = client.forward(request).await.map_err(|s| fail(s.message().to_string()))?;
        decode(reply.get_ref()).map_err(|s| fail(s.message().to_string()))
    }

    /// Whether this node is in its cluster's membership (bootstrapped, or joined).
    pub fn is_member(&self) -> bool {
        self.inner.raft.metrics().borrow().membership_config.membership().get_node(&self.inner.id).is_some()
    }

    /// Whether this node is a voting member.
    pub fn is_voter(&self) -> bool {
        self.inner.raft.metrics().borrow().membership_config.membership().voter_ids().any(|v| v == self.inner.id)
    }

    /// Joins the cluster that the node at `peer` (a node-to-node address) belongs to: asks its
    /// leader to add this node as a learner, waits until it has the log, then becomes a voter.
    /// The request is authenticated by this node's cluster certificate (mutual TLS). With
    /// `voter` false the node stays a learner (a non-voting member): it replicates and serves
    /// reads but does not count towards quorum.
    #[instrument(skip(self), fields(node = self.inner.id))]
    pub async fn join(&self, peer: &str, voter: bool) -> Result<()> {
        let wait = self.inner.timing.leader_timeout.mul_f32(0.8);
        let add = LeaderRequest::AddLearner { id: self.inner.id, node: self.inner.info.clone(), wait };
        self.ask_cluster(peer, &add).await?;
        if voter {
            self.ask_cluster(peer, &LeaderRequest::Promote { id: self.inner.id }).await?;
        }
        info!(peer, voter, "joined the cluster");
        Ok(())
    }

    /// Sends `req` to `peer`, following it to the leader it names, within `leader_timeout`.
    async fn ask_cluster(&self, peer: &str, req: &LeaderRequest) -> Result<LeaderReply> {
        let limit = self.inner.timing.leader_timeout;
        let deadline = Instant::now() + limit;
        // The configured peer's id is not known; a leader it names is.
        let (mut to, mut addr) = (0, peer.to_string());
        let mut last_error = None;
        while Instant::now() < deadline {
            match self.send(to, &addr, req, deadline).await {
                Ok(Ok(reply)) => return Ok(reply),
                Ok(Err(LeaderError::Failed(msg))) => return Err(Error::Rejected(msg)),
                Ok(Err(LeaderError::NotLeader { leader: Some((id, node)) })) if node.raft_addr != addr => {
                    (to, addr) = (id, node.raft_addr);
                    continue;
                }
                Ok(Err(LeaderError::NotLeader { .. })) => {}
                Err(e) => last_error = Some(e),
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Err(last_error.unwrap_or(Error::NoLeader(limit)))
    }

    /// Stops Raft and the node-to-node server and releases the data directory (once every
    /// clone of this handle and of its reader is dropped).
    pub async fn shutdown(&self) {
        if let Err(e) = self.inner.raft.shutdown().await {
            warn!(node = self.inner.id, error = %e, "raft shutdown");
        }
        let server = self.inner.server.lock().expect("server lock").take();
        if let Some((stop, handle)) = server {
            let _ = stop.send(());
            let _ = handle.await;
        }
        self.inner.network.forget_channels();
        info!(node = self.inner.id, "node stopped");
    }
}

/// The term `me` leads in, by openraft's state: leader, with a committed vote of its own.
fn leading_term<I: openraft::Instant>(st: &openraft::RaftState<u64, NodeInfo, I>, me: u64) -> Option<u64> {
    leads_by(st.server_state, st.vote_ref(), me)
}

/// The term `me` leads in, given a server state and vote (the core's, or its published metrics).
fn leads_by(state: openraft::ServerState, vote: &openraft::Vote<u64>, me: u64) -> Option<u64> {
    let leads =
        state == openraft::ServerState::Leader && vote.is_committed() && vote.leader_id().voted_for() == Some(me);
    leads.then_some(vote.leader_id().term)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use arca_storage::Cf;

    use crate::testing::TestCluster;
    use crate::{Command, Op, Timing};

    /// A follower hears of a commit only through the leader's `CommitNotice`, which records it
    /// first: so once the leader has applied what it told, it has every write a follower
    /// answered, and its barrier needs no question to the Raft core.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn a_leader_has_told_every_commit_a_follower_applied() {
        let cluster = TestCluster::start(3, Timing::default()).await;
        let id = cluster.wait_for_leader(Duration::from_secs(5)).await;
        let term = cluster.own_barrier(id).await;
        let leader = cluster.node(id);
        let follower = cluster.running().find(|n| n.id() != id).expect("a follower").clone();
        for i in 0..20 {
            let key = format!("k{i}").into_bytes();
            let put = Op::Put { cf: Cf::Kv, key: key.clone(), value: b"v".to_vec() };
            // Returns once the follower has applied it: a write it could answer.
            let written = follower.write(Command::Txn { guards: vec![], ops: vec![put] }).await.unwrap();
            let (told_term, told) = leader.leading_as_told().expect("a leader that told a commit of its term");
            assert_eq!(told_term, term);
            assert!(told >= written.index, "write {} applied on a follower, leader told only {told}", written.index);
            assert_eq!(leader.local_barrier().await.unwrap(), Some(term));
            assert!(leader.reader().get(Cf::Kv, &key).unwrap().is_some(), "write {i} missing on the leader");
        }
        cluster.shutdown().await;
    }

    /// A wait for an index that will not apply ends when Raft stops, not at the apply timeout:
    /// every request waiting on a node that is shutting down (or whose storage failed) hears
    /// so at once.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn waiting_for_an_apply_ends_when_raft_stops() {
        let mut cluster = TestCluster::start(3, Timing::default()).await;
        let id = cluster.wait_for_leader(Duration::from_secs(5)).await;
        let node = cluster.node(id);
        assert!(node.inner.timing.apply_timeout > Duration::from_secs(3));
        let waiting = tokio::spawn(async move { node.wait_applied(u64::MAX).await });
        tokio::time::sleep(Duration::from_millis(100)).await;
        cluster.stop(id).await;
        let ended = tokio::time::timeout(Duration::from_secs(2), waiting).await;
        let result = ended.expect("the wait ended with Raft, not at the apply timeout").unwrap();
        assert!(result.is_err());
        cluster.shutdown().await;
    }
}
