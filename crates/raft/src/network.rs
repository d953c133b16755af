//! The client side of the node-to-node API: openraft's `RaftNetwork` over gRPC + mutual TLS.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bincode::Options;
use hyper_util::client::legacy::connect::HttpConnector;
use openraft::error::{
    InstallSnapshotError, NetworkError, PayloadTooLarge, RPCError, RaftError, RemoteError, Unreachable,
};
use openraft::network::{Backoff, RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse, VoteRequest,
    VoteResponse,
};
use openraft::LogId;
use serde::de::DeserializeOwned;
use serde::Serialize;
use tonic::transport::{Channel, Endpoint};
use tonic::Code;

use arca_storage::Unsynced;

use crate::proto::raft_client::RaftClient;
use crate::proto::RaftMessage;
use crate::{Error, NodeInfo, Result, TlsConfig, TypeConfig};

/// The largest message either side of the node-to-node port sends or accepts. The largest
/// legitimate ones are a snapshot chunk (openraft's default chunk is 3 MiB) and a batch of log
/// entries, which the sender splits when it would exceed this (see [`sendable`]); a
/// single entry is bounded far below it by the client API's request limits. gRPC refuses a
/// larger frame from its length prefix, before reading or allocating its body.
pub const MAX_MESSAGE: usize = 16 * 1024 * 1024;

/// bincode as `bincode::serialize` writes it (fixed-width integers), but never reading a
/// length that would take it past `MAX_MESSAGE`.
fn bounded() -> impl Options {
    bincode::DefaultOptions::new().with_fixint_encoding().allow_trailing_bytes().with_limit(MAX_MESSAGE as u64)
}

pub(crate) fn encode<T: Serialize>(v: &T) -> RaftMessage {
    RaftMessage { payload: bincode::serialize(v).expect("in-memory messages always serialise").into() }
}

pub(crate) fn decode<T: DeserializeOwned>(m: &RaftMessage) -> std::result::Result<T, tonic::Status> {
    bounded().deserialize(&m.payload).map_err(|e| {
        tonic::Status::invalid_argument(format!("undecodable Raft message (version mismatch between nodes?): {e}"))
    })
}

/// Creates lazily-connecting channels to peers. Cheap to clone.
#[derive(Clone)]
pub struct Network {
    tls: TlsConfig,
    connect_timeout: Duration,
    source_address: Option<std::net::IpAddr>,
    /// When each peer last answered a Raft RPC (on the leader: every heartbeat), for autopilot.
    pub(crate) contacts: Contacts,
    /// One channel (one HTTP/2 connection) per peer, shared by every caller. openraft asks
    /// for a new client for every read index (the heartbeats of `ensure_linearizable`), not
    /// only per replication stream: a fresh channel each time cost a TCP connect and a mutual
    /// TLS handshake per peer on every write's read barrier (about 2 ms of a single writer's
    /// 5 ms, and the CPU of two handshakes).
    channels: Channels,
    /// The commit index this leader tells followers stops before its unsynced entries.
    pub(crate) commits: CommitNotice,
    /// Commit notices held back for the next message to the same follower.
    pub(crate) held: Arc<HeldCommits>,
}

/// Commit notices held back for the next message to the same follower.
///
/// openraft 0.9 tells each follower of every commit with an AppendEntries of its own (no
/// entries, the new commit index) as soon as the commit advances, and waits for its answer
/// before the next message to that follower. Under load the next entry follows within a few
/// milliseconds and carries the same commit index, so every entry cost each follower two
/// round trips, two wake-ups of its Raft core and two answers: a loaded follower spends most
/// of its CPU on hand-offs between threads, not on the work. A replication stream's connection
/// therefore answers such a notice itself (`Connection::hold`) and lets the next message carry
/// it: an entry, or the heartbeat `RaftNode` triggers once notices have been held without a
/// break for `hold`.
///
/// A follower needs the commit index only to apply, and its requests wait for that (a forwarded
/// write or read index, then `RaftNode::wait_applied`): no notice is held while this leader runs
/// a forwarded request, nor one that tells a follower of the index a forwarded request waits
/// for (it may go out later, once the leader's own sync covers it), and every held one goes out
/// when a forwarded request ends. Nothing Raft's safety rests on travels in a notice: the
/// follower has already acknowledged the entries it names, and only answers to messages that
/// were sent count as contact (`Contacts`, the quorum check of `RaftNode::local_barrier`).
pub(crate) struct HeldCommits {
    /// Longest a notice is held; zero holds none.
    pub(crate) hold: Duration,
    /// Connections holding a notice now.
    holding: AtomicUsize,
    /// When notices began to be held without a break (nanoseconds from `epoch`).
    held_since: AtomicU64,
    epoch: Instant,
    /// Bumped to release every notice held before (`HeldCommits::release`).
    generation: AtomicU64,
    /// Forwarded requests this leader is running (`HeldCommits::forwarding`).
    forwards: AtomicUsize,
    /// The highest log index a forwarded request waited for.
    forwarded: AtomicU64,
    /// Wakes the timer that releases held notices (`RaftNode::start`): one wake-up queued at a
    /// time is enough, since each release covers every notice held before it.
    wake: tokio::sync::mpsc::Sender<()>,
}

impl HeldCommits {
    /// The notices, and the receiver of the wake-ups for the timer that releases them; the
    /// receiver ends when the notices are dropped.
    pub(crate) fn new(hold: Duration) -> (Arc<HeldCommits>, tokio::sync::mpsc::Receiver<()>) {
        let (wake, woken) = tokio::sync::mpsc::channel(1);
        let held = HeldCommits {
            hold,
            holding: AtomicUsize::new(0),
            held_since: AtomicU64::new(0),
            epoch: Instant::now(),
            generation: AtomicU64::new(0),
            forwards: AtomicUsize::new(0),
            forwarded: AtomicU64::new(0),
            wake,
        };
        (Arc::new(held), woken)
    }

    /// Whether the notice held at `generation` has been released.
    fn released(&self, generation: u64) -> bool {
        self.generation.load(Ordering::SeqCst) != generation
    }

    /// A held notice went out (or its connection closed).
    fn sent(&self) {
        self.holding.fetch_sub(1, Ordering::SeqCst);
    }

    /// Whether to hold `rpc`, to a follower last told of commit `told` whose log last matched
    /// at `matched`, on a connection that holds the notice of release generation `holding`
    /// (updated): a commit notice, while notices may be held and this connection's has not
    /// been released.
    ///
    /// A notice is openraft's heartbeat: no entries, and the follower's acknowledged match as
    /// `prev_log_id`, so the `Success` answered for it says nothing the follower has not said.
    /// An empty message naming anything else (a probe for where the logs diverge) always goes.
    fn hold(
        &self,
        rpc: &AppendEntriesRequest<TypeConfig>,
        (told, matched): (Option<LogId<u64>>, Option<LogId<u64>>),
        holding: &mut Option<u64>,
    ) -> bool {
        let notice = rpc.entries.is_empty()
            && rpc.leader_commit > told
            && rpc.prev_log_id.is_some()
            && rpc.prev_log_id == matched;
        if !notice {
            return false;
        }
        if let Some(generation) = *holding {
            return self.may_hold(told) && !self.released(generation);
        }
        // The generation first, then the count, then the check: a forwarded request that ends
        // meanwhile either shows in the check (it records its index before it stops counting
        // as running) or finds this notice counted when it releases, and bumps the generation.
        let generation = self.generation.load(Ordering::SeqCst);
        if self.holding.fetch_add(1, Ordering::SeqCst) == 0 {
            self.held_since.store(self.epoch.elapsed().as_nanos() as u64, Ordering::SeqCst);
        }
        if !self.may_hold(told) {
            self.sent();
            return false;
        }
        let _ = self.wake.try_send(());
        *holding = Some(generation);
        true
    }

    /// Whether a notice may be held now, to a follower last told of commit `told`.
    fn may_hold(&self, told: Option<LogId<u64>>) -> bool {
        !self.hold.is_zero()
            && self.forwards.load(Ordering::SeqCst) == 0
            && self.forwarded.load(Ordering::SeqCst) <= told.map_or(0, |t| t.index)
    }

    /// Since when notices have been held without a break; `None` while none is.
    pub(crate) fn held_since(&self) -> Option<Instant> {
        let since = self.held_since.load(Ordering::SeqCst);
        (self.holding.load(Ordering::SeqCst) > 0).then(|| self.epoch + Duration::from_nanos(since))
    }

    /// Releases every notice held now, with a heartbeat from `raft` that carries them (none if
    /// nothing is held).
    pub(crate) async fn release(&self, raft: &openraft::Raft<TypeConfig>) {
        if self.released_now() {
            raft.trigger().heartbeat().await.ok();
        }
    }

    /// Marks every notice held now as released; whether there was one.
    fn released_now(&self) -> bool {
        if self.holding.load(Ordering::SeqCst) == 0 {
            return false;
        }
        self.generation.fetch_add(1, Ordering::SeqCst);
        true
    }

    /// Marks a forwarded request as running until the guard drops: a follower waits for its
    /// commit, so no notice is held meanwhile.
    pub(crate) fn forwarding(self: &Arc<Self>) -> Forwarding {
        self.forwards.fetch_add(1, Ordering::SeqCst);
        Forwarding(self.clone())
    }
}

/// A forwarded request running on this leader (`HeldCommits::forwarding`).
pub(crate) struct Forwarding(Arc<HeldCommits>);

impl Forwarding {
    /// The request ended; the follower waits to apply `index` (0: nothing).
    pub(crate) fn done(self, index: u64) {
        self.0.forwarded.fetch_max(index, Ordering::SeqCst);
    }
}

impl Drop for Forwarding {
    fn drop(&mut self) {
        self.0.forwards.fetch_sub(1, Ordering::SeqCst);
    }
}

/// What bounds the commit index a leader sends (its own entries acknowledged before they were
/// synced, see `arca_storage::Unsynced`), the highest commit index it held back, which is
/// sent with a heartbeat once the sync catches up (`RaftNode::start`), and the highest it told
/// any follower (`CommitNotice::told`).
#[derive(Clone, Default)]
pub(crate) struct CommitNotice {
    pub(crate) unsynced: Option<Unsynced>,
    pub(crate) owed: Arc<AtomicU64>,
    told: Arc<Mutex<Option<LogId<u64>>>>,
}

impl CommitNotice {
    /// The highest commit index this node has told a follower, recorded before the message
    /// left. Every commit a follower applies (and so every write a follower answered) reached
    /// it through here, so a leader that has applied this far has applied every write any
    /// node has answered: the read barrier of `RaftNode::local_barrier`, without a question
    /// to the Raft core.
    pub(crate) fn told(&self) -> Option<LogId<u64>> {
        *self.told.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// `rpc`'s commit index bounded (`CommitNotice::clamp`), and recorded as told.
    fn bound(&self, rpc: &mut AppendEntriesRequest<TypeConfig>) {
        self.clamp(rpc);
        if let Some(commit) = rpc.leader_commit {
            let mut told = self.told.lock().unwrap_or_else(|e| e.into_inner());
            if told.is_none_or(|t| t < commit) {
                *told = Some(commit);
            }
        }
    }

    /// `rpc`'s commit index, held below the first unsynced entry: the highest true log id
    /// within that bound that this leader knows (a follower needs a true log id, and keeps the
    /// highest commit it heard): the last of its own entries synced in the commit's term, or
    /// one the message names; none at all if there is none.
    fn clamp(&self, rpc: &mut AppendEntriesRequest<TypeConfig>) {
        let (Some(unsynced), Some(commit)) = (&self.unsynced, rpc.leader_commit) else { return };
        if unsynced.bound(commit.index) == Some(commit.index) {
            return;
        }
        // Owed before looking again: a sync that ends in between either shows in the second
        // look, or wakes `send_owed_commits` after this store, which then sees it.
        self.owed.fetch_max(commit.index, Ordering::SeqCst);
        let Some(bound) = unsynced.bound(commit.index) else {
            rpc.leader_commit = None;
            return;
        };
        if bound == commit.index {
            return;
        }
        // Entries of the commit's term are this leader's own, so its synced one is in its log.
        let synced = unsynced.synced_last().filter(|id| id.leader_id == commit.leader_id);
        let named = rpc.prev_log_id.into_iter().chain(rpc.entries.iter().map(|e| e.log_id));
        rpc.leader_commit = synced.into_iter().chain(named).filter(|id| id.index <= bound).max_by_key(|id| id.index);
    }
}

/// Channels by node id (`None`: not known yet) and address.
type Channels = Arc<Mutex<HashMap<(Option<u64>, String), RaftClient<Channel>>>>;

/// More cached channels than any membership needs means addresses churned; start afresh
/// (clones in use keep working).
const MAX_CHANNELS: usize = 64;

/// Last answer time per peer.
pub(crate) type Contacts = Arc<Mutex<HashMap<u64, Instant>>>;

impl Network {
    pub(crate) fn new(
        tls: TlsConfig,
        connect_timeout: Duration,
        source_address: Option<std::net::IpAddr>,
        unsynced: Option<Unsynced>,
    ) -> Self {
        Network {
            tls,
            connect_timeout,
            source_address,
            contacts: Contacts::default(),
            channels: Channels::default(),
            commits: CommitNotice { unsynced, ..CommitNotice::default() },
            // None held until the node gives the network its own (`RaftNode::start`).
            held: HeldCommits::new(Duration::ZERO).0,
        }
    }

    /// The channel to node `target` (if known) at `addr`: it connects on first use,
    /// reconnects after failures, and is shared by every caller (HTTP/2 multiplexes them).
    pub(crate) fn channel(&self, target: Option<u64>, addr: &str) -> Result<RaftClient<Channel>> {
        let mut channels = self.channels.lock().expect("channel cache lock");
        let key = (target, addr.to_string());
        if let Some(c) = channels.get(&key) {
            return Ok(c.clone());
        }
        let c = self.connect_lazy(target, addr)?;
        if channels.len() >= MAX_CHANNELS {
            channels.clear();
        }
        channels.insert(key, c.clone());
        Ok(c)
    }

    /// Drops the cached channels (their connections close once no clone is in use).
    pub(crate) fn forget_channels(&self) {
        self.channels.lock().expect("channel cache lock").clear();
    }

    fn connect_lazy(&self, target: Option<u64>, addr: &str) -> Result<RaftClient<Channel>> {
        let bad = |reason: String| Error::PeerAddress { addr: addr.to_string(), reason };
        let endpoint = Endpoint::from_shared(format!("https://{addr}"))
            .map_err(|e| bad(e.to_string()))?
            .tls_config(self.tls.client(target))
            .map_err(|e| bad(e.to_string()))?
            .connect_timeout(self.connect_timeout)
            // A shared connection that died silently (a peer's host gone, a middlebox that
            // dropped it) would fail every caller until noticed: ping often enough to notice
            // within seconds, an election's scale.
            .http2_keep_alive_interval(Duration::from_secs(2))
            .keep_alive_timeout(Duration::from_secs(5))
            .keep_alive_while_idle(true);
        // tonic's own connector (`connect_lazy`) bounds only the TCP connect by
        // `connect_timeout`: a name lookup that hangs (podman's DNS for a just-started
        // container) or a TLS handshake that stalls kept the channel "connecting" until it
        // gave up by itself, however soon the name resolved again, and openraft's 75 ms
        // timeout on every AppendEntries cancels the caller, never the connect. Given a
        // connector of its own, tonic bounds the whole attempt (lookup, TCP, TLS) by
        // `connect_timeout`: a stuck attempt fails and the next call dials afresh.
        let mut tcp = HttpConnector::new();
        tcp.enforce_http(false);
        // Small Raft messages must not wait for delayed ACKs (Nagle).
        tcp.set_nodelay(true);
        tcp.set_local_address(self.source_address);
        Ok(RaftClient::new(endpoint.connect_with_connector_lazy(tcp))
            .max_decoding_message_size(MAX_MESSAGE)
            .max_encoding_message_size(MAX_MESSAGE))
    }
}

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = Connection;

    async fn new_client(&mut self, target: u64, node: &NodeInfo) -> Connection {
        // Building a lazy channel cannot fail on I/O; a malformed address is kept as an error
        // that every RPC reports, so a bad membership entry is visible instead of a panic.
        Connection {
            target,
            addr: node.raft_addr.clone(),
            client: self.channel(Some(target), &node.raft_addr).map_err(|e| e.to_string()),
            contacts: self.contacts.clone(),
            channels: self.channels.clone(),
            commits: self.commits.clone(),
            replication: Replication::NotYet,
            held: self.held.clone(),
            commit_sent: None,
            matched: None,
            holding: None,
        }
    }
}

/// One peer, as seen by the replication stream of the leader (or a candidate's vote requests).
pub struct Connection {
    target: u64,
    addr: String,
    client: std::result::Result<RaftClient<Channel>, String>,
    contacts: Contacts,
    channels: Channels,
    commits: CommitNotice,
    replication: Replication,
    held: Arc<HeldCommits>,
    /// The highest commit index sent to this peer.
    commit_sent: Option<LogId<u64>>,
    /// The last log id this peer acknowledged matching the leader's.
    matched: Option<LogId<u64>>,
    /// The release generation of the commit notice this connection holds, if it holds one.
    holding: Option<u64>,
}

impl Drop for Connection {
    fn drop(&mut self) {
        self.end_hold();
    }
}

/// How a connection sends AppendEntries. A replication stream's connection lives until the
/// leadership or the membership changes (openraft 0.9 then builds its replication anew) and
/// sends a message every round, so it moves to one long-lived gRPC stream (`Replicate`) after
/// its first message; the connections openraft makes for a single heartbeat (each read index
/// asks for new ones) stay on plain calls, which need no stream opened first.
enum Replication {
    /// No AppendEntries sent yet: the first goes as a call of its own.
    NotYet,
    /// The next one opens a stream.
    Open,
    Streaming(Box<Stream>),
    /// The peer does not serve `Replicate` (an older release during a rolling upgrade).
    Calls,
}

/// One open `Replicate` stream. Answers come in order, one per request, and a request is sent
/// only once the previous one is answered (see [`Connection::streamed`]).
struct Stream {
    requests: tokio::sync::mpsc::Sender<RaftMessage>,
    answers: tonic::Streaming<RaftMessage>,
}

fn status_to_rpc<E: std::error::Error>(status: tonic::Status) -> RPCError<u64, NodeInfo, E> {
    match status.code() {
        // Connection refused / TLS failure: back off instead of hammering the peer.
        Code::Unavailable => RPCError::Unreachable(Unreachable::new(&status)),
        _ => RPCError::Network(NetworkError::new(&status)),
    }
}

/// `rpc` encoded, if it fits in a message. One over [`MAX_MESSAGE`] with more than one of its
/// `entries` log entries is refused here as `PayloadTooLarge`, and openraft resends them in
/// smaller batches, instead of the peer refusing the same batch forever.
fn sendable<Req: Serialize>(rpc: &Req, entries: usize) -> std::result::Result<RaftMessage, Box<PayloadTooLarge>> {
    let message = encode(rpc);
    if message.payload.len() > MAX_MESSAGE && entries > 1 {
        return Err(Box::new(PayloadTooLarge::new_entries_hint((entries / 2) as u64)));
    }
    Ok(message)
}

impl Connection {
    /// Whether to hold `rpc` back (`HeldCommits`): a commit notice, on a replication stream,
    /// while notices may be held and this one has not been released yet.
    ///
    /// Only a replication stream's connection holds: the heartbeats of a read index go on
    /// connections of their own (openraft asks for a new client for each), as calls, and their
    /// answers are what confirms the leadership; they are always sent.
    fn hold(&mut self, rpc: &AppendEntriesRequest<TypeConfig>) -> bool {
        matches!(self.replication, Replication::Streaming(_))
            && self.held.hold(rpc, (self.commit_sent, self.matched), &mut self.holding)
    }

    /// Ends the hold of this connection's notice, if it holds one.
    fn end_hold(&mut self) {
        if self.holding.take().is_some() {
            self.held.sent();
        }
    }

    /// `rpc` was sent and answered with `answer`. A held notice is done with either way: it
    /// went with `rpc`, or the failure ends this exchange and openraft sends the commit again
    /// with its next message.
    fn sent(
        &mut self,
        rpc: &AppendEntriesRequest<TypeConfig>,
        answer: &std::result::Result<AppendEntriesResponse<u64>, RPCError<u64, NodeInfo, RaftError<u64>>>,
    ) {
        self.end_hold();
        let Ok(answer) = answer else { return };
        self.commit_sent = self.commit_sent.max(rpc.leader_commit);
        self.matched = match answer {
            AppendEntriesResponse::Success => rpc.entries.last().map(|e| e.log_id).or(rpc.prev_log_id),
            AppendEntriesResponse::PartialSuccess(matched) => *matched,
            AppendEntriesResponse::Conflict | AppendEntriesResponse::HigherVote(_) => None,
        };
    }

    /// Sends one AppendEntries: on this connection's stream, or as a call of its own (see
    /// [`Replication`]). Either way the answer is decoded and handled as [`Connection::call`]'s.
    async fn append(
        &mut self,
        rpc: &AppendEntriesRequest<TypeConfig>,
        option: &RPCOption,
    ) -> std::result::Result<AppendEntriesResponse<u64>, RPCError<u64, NodeInfo, RaftError<u64>>> {
        match self.replication {
            Replication::NotYet => self.replication = Replication::Open,
            Replication::Calls => {}
            Replication::Open | Replication::Streaming(_) => return self.append_streamed(rpc, option).await,
        }
        self.call(rpc, rpc.entries.len(), option, Method::Append).await
    }

    /// [`Connection::append`] on the stream.
    async fn append_streamed(
        &mut self,
        rpc: &AppendEntriesRequest<TypeConfig>,
        option: &RPCOption,
    ) -> std::result::Result<AppendEntriesResponse<u64>, RPCError<u64, NodeInfo, RaftError<u64>>> {
        let message = sendable(rpc, rpc.entries.len()).map_err(|e| RPCError::PayloadTooLarge(*e))?;
        // openraft bounds the call by the same time, and its timeout usually fires first (the
        // stream goes with the dropped call either way); this one bounds callers that do not.
        match tokio::time::timeout(option.hard_ttl(), self.streamed(message)).await {
            Ok(Ok(answer)) => self.answered(&answer),
            Ok(Err(status)) if status.code() == Code::Unimplemented => {
                self.replication = Replication::Calls;
                self.call(rpc, rpc.entries.len(), option, Method::Append).await
            }
            Ok(Err(status)) => Err(self.failed(status)),
            Err(_) => Err(RPCError::Network(NetworkError::new(&std::io::Error::other(format!(
                "no answer from node {} within {:?}",
                self.target,
                option.hard_ttl()
            ))))),
        }
    }

    /// Sends `message` on the stream (opening one if there is none) and waits for its answer.
    /// The stream is taken out of the connection for the exchange and put back only once it is
    /// answered: an exchange cut short (openraft's timeout drops the call) or failed drops its
    /// stream, so a late answer is never taken for the next request's.
    async fn streamed(&mut self, message: RaftMessage) -> std::result::Result<RaftMessage, tonic::Status> {
        let mut stream = match std::mem::replace(&mut self.replication, Replication::Open) {
            Replication::Streaming(stream) => {
                let closed = |_| tonic::Status::unavailable("the replication stream closed");
                stream.requests.send(message).await.map_err(closed)?;
                stream
            }
            _ => self.open_stream(message).await?,
        };
        let answer = stream.answers.message().await?;
        let answer = answer.ok_or_else(|| tonic::Status::unavailable("the peer ended the replication stream"))?;
        self.replication = Replication::Streaming(stream);
        Ok(answer)
    }

    /// Opens a `Replicate` stream with `first` as its first request: it goes with the opening,
    /// not after a round trip for the stream's headers.
    async fn open_stream(&mut self, first: RaftMessage) -> std::result::Result<Box<Stream>, tonic::Status> {
        let client = self.client.as_mut().map_err(|e| tonic::Status::unavailable(e.clone()))?;
        let (requests, queued) = tokio::sync::mpsc::channel(1);
        requests.try_send(first).expect("a new channel has room for one");
        let outgoing = futures::stream::unfold(queued, |mut q| async move { q.recv().await.map(|m| (m, q)) });
        let answers = client.replicate(outgoing).await?.into_inner();
        Ok(Box::new(Stream { requests, answers }))
    }

    /// What a failed call means to openraft; a transport failure also drops the shared
    /// connection, which may be the fault (half-open after a partition, a peer that restarted):
    /// the next client openraft asks for dials afresh. Until then it waited for keep-alive to
    /// notice, where a fresh client per request used to reconnect.
    fn failed<E: std::error::Error>(&mut self, status: tonic::Status) -> RPCError<u64, NodeInfo, E> {
        if matches!(status.code(), Code::Unavailable | Code::DeadlineExceeded) {
            self.channels.lock().expect("channel cache lock").remove(&(Some(self.target), self.addr.clone()));
        }
        status_to_rpc(status)
    }

    /// An answer as openraft takes it: this peer's result, or its error.
    #[allow(clippy::result_large_err)] // openraft's own error type, handed to it as it is
    fn answered<Resp, E>(
        &mut self,
        reply: &RaftMessage,
    ) -> std::result::Result<Resp, RPCError<u64, NodeInfo, RaftError<u64, E>>>
    where
        Resp: DeserializeOwned,
        E: std::error::Error + DeserializeOwned,
    {
        self.contacts.lock().expect("contacts lock").insert(self.target, Instant::now());
        let result: std::result::Result<Resp, RaftError<u64, E>> =
            decode(reply).map_err(|s| RPCError::Network(NetworkError::new(&s)))?;
        result.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
    }

    /// Sends one RPC as a call of its own. `entries` is how many log entries it carries (see
    /// [`sendable`]).
    async fn call<Req, Resp, E>(
        &mut self,
        rpc: &Req,
        entries: usize,
        option: &RPCOption,
        method: Method,
    ) -> std::result::Result<Resp, RPCError<u64, NodeInfo, RaftError<u64, E>>>
    where
        Req: Serialize,
        Resp: DeserializeOwned,
        E: std::error::Error + DeserializeOwned,
    {
        let message = sendable(rpc, entries).map_err(|e| RPCError::PayloadTooLarge(*e))?;
        let client = match &mut self.client {
            Ok(c) => c,
            Err(e) => {
                return Err(RPCError::Unreachable(Unreachable::new(&std::io::Error::other(e.clone()))));
            }
        };
        let mut request = tonic::Request::new(message);
        request.set_timeout(option.hard_ttl());
        let reply = match method {
            Method::Append => client.append_entries(request).await,
            Method::Vote => client.vote(request).await,
            Method::Snapshot => client.install_snapshot(request).await,
        }
        .map_err(|status| self.failed(status))?;
        self.answered(reply.get_ref())
    }
}

#[derive(Clone, Copy)]
enum Method {
    Append,
    Vote,
    Snapshot,
}

impl RaftNetwork<TypeConfig> for Connection {
    /// How long the leader waits before it tries an unreachable peer again. openraft's default
    /// is a constant 500 ms, so a restarted node waited up to half a second for its leader to
    /// notice it (restart to first read measured 90–530 ms). A refused connection costs next to
    /// nothing; 10 ms doubling to 50 ms keeps a dead peer's cost at 20 attempts a second.
    fn backoff(&self) -> Backoff {
        Backoff::new((0u32..).map(|i| Duration::from_millis((10u64 << i.min(3)).min(50))))
    }

    async fn append_entries(
        &mut self,
        mut rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> std::result::Result<AppendEntriesResponse<u64>, RPCError<u64, NodeInfo, RaftError<u64>>> {
        self.commits.bound(&mut rpc);
        if self.hold(&rpc) {
            // The answer the follower would give: it acknowledged `prev_log_id`, this
            // connection's last match, when it took the entries the notice commits.
            return Ok(AppendEntriesResponse::Success);
        }
        let answer = self.append(&rpc, &option).await;
        self.sent(&rpc, &answer);
        answer
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> std::result::Result<InstallSnapshotResponse<u64>, RPCError<u64, NodeInfo, RaftError<u64, InstallSnapshotError>>>
    {
        self.call(&rpc, 0, &option, Method::Snapshot).await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<u64>,
        option: RPCOption,
    ) -> std::result::Result<VoteResponse<u64>, RPCError<u64, NodeInfo, RaftError<u64>>> {
        self.call(&rpc, 0, &option, Method::Vote).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::TestCa;

    /// A commit notice is held (answered here, its commit left for the next message) only
    /// while no follower can be waiting for it: never while a forwarded request runs, never
    /// past the index a forwarded request waited for until the follower has been told it, and
    /// only until released. Entries and plain heartbeats always go.
    #[test]
    fn a_commit_notice_is_held_only_while_no_follower_waits_for_it() {
        use openraft::{CommittedLeaderId, Entry, EntryPayload, Vote};
        let id = |index: u64| LogId::new(CommittedLeaderId::new(2, 1), index);
        let message = |commit: u64, entries: Vec<Entry<TypeConfig>>| AppendEntriesRequest {
            vote: Vote::new_committed(2, 1),
            prev_log_id: Some(id(4)),
            leader_commit: Some(id(commit)),
            entries,
        };
        let entry = Entry::<TypeConfig> { log_id: id(5), payload: EntryPayload::Blank };
        let (held, mut woken) = HeldCommits::new(Duration::from_millis(10));
        let mut holding = None;
        // The follower was told of commit 3 and matches the leader's log up to 4.
        let told = (Some(id(3)), Some(id(4)));

        // Entries, and a heartbeat that tells nothing new, are never held.
        assert!(!held.hold(&message(4, vec![entry]), told, &mut holding));
        assert!(!held.hold(&message(3, vec![]), told, &mut holding));
        assert_eq!(holding, None);

        // A notice of a new commit is held, the timer woken; asked again, it stays held.
        assert!(held.hold(&message(4, vec![]), told, &mut holding));
        assert!(woken.try_recv().is_ok(), "the release timer is woken");
        assert!(held.hold(&message(4, vec![]), told, &mut holding));
        // Released (the timer, or a forwarded request that ended): it goes.
        assert!(held.released_now());
        assert!(!held.hold(&message(4, vec![]), told, &mut holding));
        held.sent();
        holding = None;
        assert!(!held.released_now(), "nothing is held any more");

        // While a forwarded request runs, nothing is held.
        let forwarding = held.forwarding();
        assert!(!held.hold(&message(4, vec![]), told, &mut holding));
        // It waited for index 4: a notice to a follower not yet told of 4 goes at once (it may
        // be one the leader's own sync held back until after the request ended)...
        forwarding.done(4);
        assert!(!held.hold(&message(4, vec![]), told, &mut holding));
        // ...and once the follower has been told of 4, later notices are held again.
        assert!(held.hold(&message(5, vec![]), (Some(id(4)), Some(id(4))), &mut holding));
        held.sent();
        holding = None;

        // An empty message that names another log id than the follower's match (a probe) goes.
        assert!(!held.hold(&message(5, vec![]), (Some(id(4)), Some(id(3))), &mut holding));
        assert!(!held.hold(&message(5, vec![]), (Some(id(4)), None), &mut holding));

        // A hold of zero holds nothing.
        let (never, _woken) = HeldCommits::new(Duration::ZERO);
        assert!(!never.hold(&message(4, vec![]), told, &mut None));
    }

    /// A leader whose newest entries are not synced yet tells its followers a commit index
    /// short of them, naming a true log id from the message, or none; what it held back is
    /// owed, and sent once the sync catches up.
    #[test]
    fn the_commit_sent_to_followers_stops_before_unsynced_entries() {
        use openraft::{CommittedLeaderId, Entry, EntryPayload, Vote};
        let id = |term: u64, index: u64| LogId::new(CommittedLeaderId::new(term, 1), index);
        let entry = |index: u64| Entry::<TypeConfig> { log_id: id(2, index), payload: EntryPayload::Blank };
        let request = |prev: LogId<u64>, entries: Vec<Entry<TypeConfig>>, commit: u64| AppendEntriesRequest {
            vote: Vote::new_committed(2, 1),
            prev_log_id: Some(prev),
            leader_commit: Some(id(2, commit)),
            entries,
        };
        let notice_of = |unsynced| CommitNotice { unsynced: Some(unsynced), ..CommitNotice::default() };
        let notice = notice_of(Unsynced::fixed(Some(5), None, None));

        let mut rpc = request(id(1, 3), vec![entry(4), entry(5), entry(6)], 6);
        notice.bound(&mut rpc);
        assert_eq!(rpc.leader_commit, Some(id(2, 4)), "the highest entry named below the first unsynced");
        assert_eq!(notice.owed.load(Ordering::Relaxed), 6);
        assert_eq!(notice.told(), Some(id(2, 4)), "what a follower heard, not what was held back");

        let mut heartbeat = request(id(2, 6), vec![], 6);
        notice.bound(&mut heartbeat);
        assert_eq!(heartbeat.leader_commit, None, "nothing named below the bound: no commit at all");
        assert_eq!(notice.told(), Some(id(2, 4)), "the highest told stays");

        let mut synced = request(id(2, 3), vec![entry(4)], 4);
        notice.bound(&mut synced);
        assert_eq!(synced.leader_commit, Some(id(2, 4)), "a commit of synced entries goes as it is");

        // A follower already past the synced entries still hears the last synced one.
        let synced = notice_of(Unsynced::fixed(Some(5), Some(id(2, 4)), None));
        let mut heartbeat = request(id(2, 6), vec![], 6);
        synced.bound(&mut heartbeat);
        assert_eq!(heartbeat.leader_commit, Some(id(2, 4)), "the last synced entry of the commit's term");
        let older = notice_of(Unsynced::fixed(Some(5), Some(id(1, 4)), None));
        let mut heartbeat = request(id(2, 6), vec![], 6);
        older.bound(&mut heartbeat);
        assert_eq!(heartbeat.leader_commit, None, "one of another term may have been overwritten since");

        let failed = notice_of(Unsynced::fixed(None, None, Some("EIO".into())));
        let mut rpc = request(id(1, 3), vec![entry(4)], 4);
        failed.bound(&mut rpc);
        assert_eq!(rpc.leader_commit, None, "a failed sync vouches for nothing");
        assert_eq!(failed.told(), None);
    }

    /// openraft asks for a new client for every read index, not only per replication stream;
    /// each must share the peer's one channel (found: a TCP connect and a mutual TLS handshake
    /// per peer on every write's barrier, 1 223 connects in 3 s of a single writer).
    #[tokio::test]
    async fn asking_again_for_a_peer_gets_its_one_channel() {
        let mut network = Network::new(TestCa::new("net").node_cert(1), Duration::from_secs(1), None, None);
        let peer = |addr: &str| NodeInfo { raft_addr: addr.into(), api_addr: String::new() };
        for _ in 0..20 {
            network.new_client(2, &peer("127.0.0.1:7002")).await;
            network.new_client(3, &peer("127.0.0.1:7003")).await;
            network.clone().channel(Some(2), "127.0.0.1:7002").unwrap();
        }
        assert_eq!(network.channels.lock().unwrap().len(), 2);
        // A node that moved is another channel; the old one goes once the cache is full.
        network.new_client(2, &peer("127.0.0.1:7102")).await;
        assert_eq!(network.channels.lock().unwrap().len(), 3);
        for port in 0..MAX_CHANNELS {
            network.channel(None, &format!("127.0.0.1:{}", 8000 + port)).unwrap();
        }
        assert!(network.channels.lock().unwrap().len() <= MAX_CHANNELS);
    }

    /// A connection attempt that stalls (a name lookup that hangs, a peer that accepts the TCP
    /// connection and never answers the TLS handshake) must be given up for a fresh one. openraft
    /// cancels every AppendEntries after its heartbeat interval, which never cancels the
    /// channel's connect: a compose node could not join for 25 s, every call timing out.
    #[tokio::test]
    async fn a_stalled_connection_attempt_is_given_up_for_a_fresh_one() {
        let cluster = crate::testing::TestCluster::start(1, crate::Timing::default()).await;
        let node = cluster.config(1).listen;
        // The node's address as this client knows it: the first connection is accepted and
        // then left silent; later ones reach the node.
        let proxy = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = proxy.local_addr().unwrap().to_string();
        tokio::spawn(async move {
            let (silent, _) = proxy.accept().await.unwrap();
            while let Ok((mut inbound, _)) = proxy.accept().await {
                tokio::spawn(async move {
                    let mut outbound = tokio::net::TcpStream::connect(node).await.unwrap();
                    let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                });
            }
            drop(silent);
        });

        let mut network = Network::new(cluster.ca.node_cert(1), Duration::from_millis(500), None, None);
        let mut peer = network.new_client(1, &NodeInfo { raft_addr: addr, api_addr: String::new() }).await;
        // As openraft calls: 75 ms each, cancelled when they run out, tried again at once.
        let ttl = Duration::from_millis(75);
        let started = Instant::now();
        let mut answered = None;
        for _ in 0..200 {
            let vote = VoteRequest::new(openraft::Vote::new(1, 1), None);
            match tokio::time::timeout(ttl, peer.vote(vote, RPCOption::new(ttl))).await {
                Ok(Ok(_) | Err(RPCError::RemoteError(_))) => {
                    answered = Some(started.elapsed());
                    break;
                }
                _ => tokio::time::sleep(Duration::from_millis(10)).await,
            }
            if started.elapsed() > Duration::from_secs(10) {
                break;
            }
        }
        let answered = answered.expect("the node never answered: the stalled connection attempt was never given up");
        assert!(
            answered >= Duration::from_millis(400),
            "answered after {answered:?}, before the first attempt could fail"
        );
        cluster.shutdown().await;
    }

    /// A peer that answers AppendEntries with success, or a request whose payload starts with
    /// `echo:` with its own bytes (`echo:slow` after 300 ms); it serves `Replicate` unless
    /// `streams` is off, as an older release does not.
    #[derive(Clone, Default)]
    struct Echo {
        streams: bool,
        calls: Arc<AtomicU64>,
        opened: Arc<AtomicU64>,
    }

    impl Echo {
        async fn answer(message: RaftMessage) -> RaftMessage {
            if message.payload.starts_with(b"echo:") {
                if &message.payload[..] == b"echo:slow" {
                    tokio::time::sleep(Duration::from_millis(300)).await;
                }
                return message;
            }
            encode(&Ok::<_, RaftError<u64>>(AppendEntriesResponse::<u64>::Success))
        }

        /// Serves on loopback with node 2's certificate; returns the address.
        async fn serve(&self, ca: &TestCa) -> String {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap().to_string();
            let server = tonic::transport::Server::builder()
                .tls_config(ca.node_cert(2).server(true))
                .unwrap()
                .add_service(crate::proto::raft_server::RaftServer::new(self.clone()))
                .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener));
            tokio::spawn(server);
            addr
        }
    }

    type Reply<T> = std::result::Result<tonic::Response<T>, tonic::Status>;

    #[tonic::async_trait]
    impl crate::proto::raft_server::Raft for Echo {
        async fn append_entries(&self, request: tonic::Request<RaftMessage>) -> Reply<RaftMessage> {
            self.calls.fetch_add(1, Ordering::SeqCst);
            Ok(tonic::Response::new(Echo::answer(request.into_inner()).await))
        }

        type ReplicateStream =
            std::pin::Pin<Box<dyn futures::Stream<Item = std::result::Result<RaftMessage, tonic::Status>> + Send>>;

        async fn replicate(
            &self,
            request: tonic::Request<tonic::Streaming<RaftMessage>>,
        ) -> Reply<Self::ReplicateStream> {
            use futures::StreamExt;
            if !self.streams {
                return Err(tonic::Status::unimplemented("an older release"));
            }
            self.opened.fetch_add(1, Ordering::SeqCst);
            let answers = request.into_inner().then(|m| async move { Ok(Echo::answer(m?).await) });
            Ok(tonic::Response::new(Box::pin(answers)))
        }

        async fn vote(&self, _: tonic::Request<RaftMessage>) -> Reply<RaftMessage> {
            Err(tonic::Status::unimplemented("not in this test"))
        }

        async fn install_snapshot(&self, _: tonic::Request<RaftMessage>) -> Reply<RaftMessage> {
            Err(tonic::Status::unimplemented("not in this test"))
        }

        async fn forward(&self, _: tonic::Request<RaftMessage>) -> Reply<RaftMessage> {
            Err(tonic::Status::unimplemented("not in this test"))
        }
    }

    fn heartbeat() -> AppendEntriesRequest<TypeConfig> {
        AppendEntriesRequest {
            vote: openraft::Vote::new_committed(1, 1),
            prev_log_id: None,
            leader_commit: None,
            entries: vec![],
        }
    }

    /// A replication connection sends its first AppendEntries as a call and the rest on one
    /// stream; a peer without `Replicate` (an older release, mid-upgrade) gets calls throughout.
    #[tokio::test]
    async fn replication_moves_to_one_stream_and_falls_back_to_calls() {
        let ca = TestCa::new("stream");
        let option = RPCOption::new(Duration::from_secs(5));
        for streams in [true, false] {
            let echo = Echo { streams, ..Default::default() };
            let addr = echo.serve(&ca).await;
            let mut network = Network::new(ca.node_cert(1), Duration::from_secs(1), None, None);
            let mut peer = network.new_client(2, &NodeInfo { raft_addr: addr, api_addr: String::new() }).await;
            for n in 0..4 {
                let answer = peer.append_entries(heartbeat(), option.clone()).await;
                assert!(
                    matches!(answer, Ok(AppendEntriesResponse::Success)),
                    "streams {streams}, message {n}: {answer:?}"
                );
            }
            let (calls, opened) = (echo.calls.load(Ordering::SeqCst), echo.opened.load(Ordering::SeqCst));
            if streams {
                assert_eq!((calls, opened), (1, 1), "the first as a call, the other three on one stream");
            } else {
                assert_eq!((calls, opened), (4, 0), "all four as calls");
            }
        }
    }

    /// An exchange cut short (openraft's timeout drops the call) must not leave its answer to
    /// be taken for the next request's: the next request goes on a fresh stream.
    #[tokio::test]
    async fn a_late_answer_is_never_taken_for_the_next_requests() {
        let ca = TestCa::new("late");
        let echo = Echo { streams: true, ..Default::default() };
        let addr = echo.serve(&ca).await;
        let mut network = Network::new(ca.node_cert(1), Duration::from_secs(1), None, None);
        let mut peer = network.new_client(2, &NodeInfo { raft_addr: addr, api_addr: String::new() }).await;
        let message = |p: &[u8]| RaftMessage { payload: p.to_vec().into() };
        assert_eq!(&peer.streamed(message(b"echo:first")).await.unwrap().payload[..], b"echo:first");
        let cut = tokio::time::timeout(Duration::from_millis(50), peer.streamed(message(b"echo:slow"))).await;
        assert!(cut.is_err(), "the slow answer came early");
        let next = peer.streamed(message(b"echo:next")).await.unwrap();
        assert_eq!(&next.payload[..], b"echo:next", "the cut-short request's answer was taken for the next one's");
        assert_eq!(echo.opened.load(Ordering::SeqCst), 2, "the cut-short stream was replaced");
    }
}
