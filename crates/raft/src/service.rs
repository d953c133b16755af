//! The server side of the node-to-node API.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use futures::Stream;
use openraft::error::{ClientWriteError, RaftError};
use openraft::{ChangeMembers, Raft, Vote};
use rustls::pki_types::CertificateDer;
use serde::{Deserialize, Serialize};
use tonic::{Request, Response as GrpcResponse, Status, Streaming};
use tracing::{instrument, warn};

use crate::network::{decode, encode};
use crate::proto::raft_server;
use crate::proto::RaftMessage;
use crate::tls::{cert_names_node, node_name};
use crate::{Command, NodeInfo, Op, Response, TypeConfig};
use arca_storage::{Cf, StateReader};

/// Work a non-leader hands to the leader.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) enum LeaderRequest {
    Write(Command),
    /// The leader's read index: confirm leadership with a quorum and report the commit index.
    ReadIndex,
    /// Add a learner and wait up to `wait` for it to receive the log.
    AddLearner {
        id: u64,
        node: NodeInfo,
        wait: std::time::Duration,
    },
    Promote {
        id: u64,
    },
    Remove {
        id: u64,
    },
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) enum LeaderReply {
    Written(Response),
    ReadIndex(u64),
    MembershipChanged { index: u64 },
}

impl LeaderReply {
    /// The log index the forwarding follower waits to apply.
    fn index(&self) -> u64 {
        match self {
            LeaderReply::Written(response) => response.index,
            LeaderReply::ReadIndex(index) | LeaderReply::MembershipChanged { index } => *index,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) enum LeaderError {
    /// This node is not the leader; the leader it knows of, if any.
    NotLeader {
        leader: Option<(u64, NodeInfo)>,
    },
    Failed(String),
}

fn from_forward(f: openraft::error::ForwardToLeader<u64, NodeInfo>) -> LeaderError {
    LeaderError::NotLeader { leader: f.leader_id.zip(f.leader_node) }
}

fn from_write_err(e: RaftError<u64, ClientWriteError<u64, NodeInfo>>) -> LeaderError {
    match e {
        RaftError::APIError(ClientWriteError::ForwardToLeader(f)) => from_forward(f),
        other => LeaderError::Failed(other.to_string()),
    }
}

/// Key (system family) marking a node id as removed from the cluster. A removed id is never
/// admitted again: its certificate stays valid until it expires or the cluster CA is rotated,
/// and without this a removed (possibly compromised) node could ask to join again as itself.
/// Replacements get a new id, as etcd requires.
fn retired_key(id: u64) -> Vec<u8> {
    format!("raft/retired/{id}").into_bytes()
}

/// Refuses `id` if it was removed from this cluster (fails closed when the state cannot be read).
fn refuse_retired(reader: &StateReader, id: u64) -> Result<(), LeaderError> {
    match reader.get(Cf::Sys, &retired_key(id)) {
        Ok(None) => Ok(()),
        Ok(Some(_)) => Err(LeaderError::Failed(format!(
            "node {id} was removed from this cluster and is never admitted again; give the replacement a new \
             node_id and a cluster certificate naming its new name"
        ))),
        Err(e) => Err(LeaderError::Failed(format!("cannot check whether node {id} was removed: {e}"))),
    }
}

/// Executes `req` if this node is the leader.
pub(crate) async fn execute_on_leader(
    raft: &Raft<TypeConfig>,
    reader: &StateReader,
    req: LeaderRequest,
) -> Result<LeaderReply, LeaderError> {
    let membership = |r: Result<openraft::raft::ClientWriteResponse<TypeConfig>, _>| {
        r.map(|w| LeaderReply::MembershipChanged { index: w.log_id.index }).map_err(from_write_err)
    };
    match req {
        LeaderRequest::Write(cmd) => {
            raft.client_write(cmd).await.map(|w| LeaderReply::Written(w.data)).map_err(from_write_err)
        }
        LeaderRequest::ReadIndex => match raft.get_read_log_id().await {
            Ok((read, _applied)) => Ok(LeaderReply::ReadIndex(read.map_or(0, |l| l.index))),
            Err(RaftError::APIError(openraft::error::CheckIsLeaderError::ForwardToLeader(f))) => Err(from_forward(f)),
            // The leader did not hear from a quorum in time: cut off, or on a machine too loaded
            // to answer heartbeats promptly. Not a refusal of the request: `on_leader` asks again
            // (here or at a new leader) until its deadline, and fails with no leader after it.
            Err(RaftError::APIError(openraft::error::CheckIsLeaderError::QuorumNotEnough(_))) => {
                Err(LeaderError::NotLeader { leader: None })
            }
            Err(other) => Err(LeaderError::Failed(other.to_string())),
        },
        LeaderRequest::AddLearner { id, node, wait } => {
            refuse_retired(reader, id)?;
            add_learner(raft, id, node, wait).await
        }
        LeaderRequest::Promote { id } => {
            refuse_retired(reader, id)?;
            membership(raft.change_membership(ChangeMembers::AddVoterIds([id].into()), false).await)
        }
        LeaderRequest::Remove { id } => {
            // Marked first: if the membership change then fails, the node is still a member
            // (the operator retries), but it can never come back once out.
            let retire = Command::Txn {
                guards: vec![],
                ops: vec![Op::Put { cf: Cf::Sys, key: retired_key(id), value: vec![] }],
            };
            raft.client_write(retire).await.map_err(from_write_err)?;
            let is_voter = raft.metrics().borrow().membership_config.membership().voter_ids().any(|v| v == id);
            let change = if is_voter {
                // `retain = false` also drops the node itself once it is no longer a voter.
                ChangeMembers::RemoveVoters([id].into())
            } else {
                ChangeMembers::RemoveNodes([id].into())
            };
            membership(raft.change_membership(change, false).await)
        }
    }
}

/// Adds a learner and returns once it has received the log up to its own membership entry.
///
/// openraft's "blocking" add-learner counts a learner within `replication_lag_threshold`
/// (5000 entries) as caught up even if it never answered, so a node that cannot be reached at
/// all (wrong address, untrusted certificate) would "join". Here the learner must acknowledge;
/// if it does not within `wait`, it is removed again and the caller learns why.
async fn add_learner(
    raft: &Raft<TypeConfig>,
    id: u64,
    node: NodeInfo,
    wait: std::time::Duration,
) -> Result<LeaderReply, LeaderError> {
    let addr = node.raft_addr.clone();
    let added = raft.add_learner(id, node, false).await.map_err(from_write_err)?;
    let target = added.log_id.index;
    let caught_up = raft
        .wait(Some(wait))
        .metrics(
            |m| {
                let matched = m.replication.as_ref().and_then(|r| r.get(&id)).and_then(|l| l.as_ref());
                matched.is_some_and(|l| l.index >= target)
            },
            "learner received the log",
        )
        .await;
    if caught_up.is_ok() {
        return Ok(LeaderReply::MembershipChanged { index: target });
    }
    let undo = raft.change_membership(ChangeMembers::RemoveNodes([id].into()), false).await;
    Err(LeaderError::Failed(format!(
        "node {id} at {addr} did not acknowledge replication within {wait:?}; check that it is running, reachable, \
         and has a certificate from the cluster CA naming {}. It was {} the membership again",
        node_name(id),
        if undo.is_ok() { "removed from" } else { "NOT removed from (remove it by hand)" }
    )))
}

/// Serves the node-to-node API for one node.
///
/// Mutual TLS has already proven that the caller holds a certificate from the cluster CA; this
/// service decides what that certificate may do, from the node id it names (see
/// [`crate::tls`]):
///
/// * Raft messages (append entries, vote, install snapshot) come from a leader or candidate,
///   which the message names. The certificate must name that node, and it must be a voter in
///   this node's membership. A node with no membership yet (it is being joined) has nothing to
///   check against and takes the log from whichever certified node names itself as leader.
/// * `forward` runs on the leader on another node's behalf (writes, read index, membership
///   changes), so only members, voters or learners, may call it. The one exception is a node
///   being joined: a certificate naming node N may ask to add node N as a learner, and nothing
///   else.
#[derive(Clone)]
pub(crate) struct RaftService {
    pub(crate) id: u64,
    pub(crate) raft: Raft<TypeConfig>,
    pub(crate) reader: StateReader,
    /// When each distinct refusal was last logged, and how many repeats went unlogged since:
    /// a removed node that keeps campaigning must not fill the members' logs.
    pub(crate) refusals_logged: Arc<Mutex<HashMap<String, (std::time::Instant, u64)>>>,
    pub(crate) faults: crate::Faults,
    /// Set when the node stops: its server shuts down gracefully, waiting for every request in
    /// progress, and a replication stream stays open as long as its leader keeps it.
    pub(crate) closing: tokio::sync::watch::Receiver<bool>,
    /// The commit notices this node holds while it leads: none while it runs a forwarded
    /// request, all released when one ends (the follower waits for that commit).
    pub(crate) held: Arc<crate::network::HeldCommits>,
    /// AppendEntries received, on calls and streams (`RaftNode::append_entries_received`).
    pub(crate) received: Arc<std::sync::atomic::AtomicU64>,
}

/// A repeated refusal is logged once per this interval (with how many repeats were not).
const REFUSAL_LOG_INTERVAL: std::time::Duration = std::time::Duration::from_secs(60);
/// Distinct refusals remembered; past this the memory starts over (it only throttles logs).
const REFUSALS_REMEMBERED: usize = 1024;

type Reply = Result<GrpcResponse<RaftMessage>, Status>;

/// The answers on a replication stream, one per request, in order.
type Answers = Pin<Box<dyn Stream<Item = Result<RaftMessage, Status>> + Send>>;

/// A replication stream with no request for this long ends. A leader sends at least a
/// heartbeat every `Timing::heartbeat` (75 ms by default); a stream this quiet belongs to a
/// leader that is gone, or to a certificate holder that only holds it open.
const STREAM_IDLE: std::time::Duration = std::time::Duration::from_secs(30);

/// The caller's end-entity certificate. The port requires one, so its absence means the
/// service is served without mutual TLS: refuse rather than trust.
fn peer_cert<T>(request: &Request<T>) -> Result<CertificateDer<'static>, Status> {
    request
        .peer_certs()
        .and_then(|chain| chain.first().cloned())
        .ok_or_else(|| Status::unauthenticated("the node-to-node port requires a cluster certificate"))
}

impl RaftService {
    /// Whether an injected network fault stops a message from the holder of `cert` (see `faults`).
    async fn arrive(&self, cert: Option<&CertificateDer<'_>>) -> Result<(), Status> {
        self.faults.arrive(self.id, |id| cert.is_some_and(|c| cert_names_node(c, id))).await
    }

    /// A Raft message (`what`) from the holder of `cert`, decoded, if it arrives (injected
    /// faults) and its sender, the node its vote names, may send it (`check_raft_sender`).
    async fn raft_message<R: serde::de::DeserializeOwned>(
        &self,
        cert: &CertificateDer<'_>,
        message: &RaftMessage,
        what: &str,
        vote: fn(&R) -> &Vote<u64>,
    ) -> Result<R, Status> {
        self.arrive(Some(cert)).await?;
        let rpc: R = decode(message)?;
        self.check_raft_sender(cert, vote(&rpc), what)?;
        Ok(rpc)
    }

    /// One AppendEntries from the holder of `cert`, decided and answered.
    #[instrument(level = "trace", skip_all, fields(node = self.id))]
    async fn append_entries_from(
        &self,
        cert: &CertificateDer<'_>,
        message: &RaftMessage,
    ) -> Result<RaftMessage, Status> {
        let vote: fn(&openraft::raft::AppendEntriesRequest<TypeConfig>) -> &Vote<u64> = |r| &r.vote;
        let rpc = self.raft_message(cert, message, "append entries", vote).await?;
        self.received.fetch_add(1, Ordering::Relaxed);
        Ok(encode(&self.raft.append_entries(rpc).await))
    }

    fn refuse(&self, what: &str, reason: String) -> Status {
        let now = std::time::Instant::now();
        let repeats = {
            let mut logged = self.refusals_logged.lock().expect("refusal log lock");
            if logged.len() >= REFUSALS_REMEMBERED {
                logged.clear();
            }
            match logged.entry(format!("{what}: {reason}")) {
                std::collections::hash_map::Entry::Vacant(v) => {
                    v.insert((now, 0));
                    Some(0)
                }
                std::collections::hash_map::Entry::Occupied(mut o)
                    if now.duration_since(o.get().0) >= REFUSAL_LOG_INTERVAL =>
                {
                    Some(std::mem::replace(o.get_mut(), (now, 0)).1)
                }
                std::collections::hash_map::Entry::Occupied(mut o) => {
                    o.get_mut().1 += 1;
                    None
                }
            }
        };
        if let Some(repeats) = repeats {
            warn!(node = self.id, what, %reason, repeats_since_last_logged = repeats, "refused a node-to-node request");
        }
        Status::permission_denied(format!("{what} refused: {reason}"))
    }

    /// A Raft message claiming to come from the node in `vote` (leader or candidate).
    fn check_raft_sender(&self, cert: &CertificateDer<'_>, vote: &Vote<u64>, what: &str) -> Result<(), Status> {
        let Some(claimed) = vote.leader_id().voted_for() else {
            return Err(self.refuse(what, "the message names no sending node".into()));
        };
        if !cert_names_node(cert, claimed) {
            return Err(self.refuse(
                what,
                format!("the message claims node {claimed}, but the certificate does not name {}", node_name(claimed)),
            ));
        }
        let metrics = self.raft.metrics();
        let m = metrics.borrow();
        let membership = m.membership_config.membership();
        let being_joined = membership.nodes().next().is_none();
        if being_joined || membership.voter_ids().any(|v| v == claimed) {
            Ok(())
        } else {
            Err(self.refuse(what, format!("node {claimed} is not a voter of this cluster")))
        }
    }

    /// A request to run `req` on the leader: from a member, or from a node asking to join as itself.
    fn check_forwarder(&self, request: &Request<RaftMessage>, req: &LeaderRequest) -> Result<(), Status> {
        let cert = peer_cert(request)?;
        let members: Vec<u64> =
            self.raft.metrics().borrow().membership_config.membership().nodes().map(|(id, _)| *id).collect();
        if members.iter().any(|&id| cert_names_node(&cert, id)) {
            return Ok(());
        }
        match req {
            LeaderRequest::AddLearner { id, .. } if cert_names_node(&cert, *id) => Ok(()),
            LeaderRequest::AddLearner { id, .. } => Err(self.refuse(
                "forward",
                format!("a node may only ask to join as itself, and the certificate does not name {}", node_name(*id)),
            )),
            _ => Err(self.refuse("forward", "the certificate names no member of this cluster".into())),
        }
    }
}

#[tonic::async_trait]
impl raft_server::Raft for RaftService {
    async fn append_entries(&self, request: Request<RaftMessage>) -> Reply {
        let cert = peer_cert(&request)?;
        Ok(GrpcResponse::new(self.append_entries_from(&cert, request.get_ref()).await?))
    }

    type ReplicateStream = Answers;

    /// Each request is answered before the next is read, so answers come in order; the first
    /// refusal (or a lost message, with injected faults) ends the stream with its status. Each
    /// message is judged like a call of its own (`append_entries_from`: the certificate names
    /// the sender the message claims, and that sender is a voter now), not once per stream.
    async fn replicate(&self, request: Request<Streaming<RaftMessage>>) -> Result<GrpcResponse<Answers>, Status> {
        let cert = peer_cert(&request)?;
        let open = Some((self.clone(), cert, request.into_inner()));
        let answers = futures::stream::unfold(open, |open| async move {
            let (mut service, cert, mut requests) = open?;
            let message = tokio::select! {
                // A stopping node ends its streams even while a request is arriving.
                biased;
                _ = service.closing.wait_for(|closing| *closing) => return None,
                _ = tokio::time::sleep(STREAM_IDLE) => return None,
                message = requests.message() => match message {
                    Ok(Some(message)) => message,
                    // The sender closed its side: nothing more to answer.
                    Ok(None) => return None,
                    // Over the size limit, or the connection failed: said, and the end.
                    Err(status) => return Some((Err(status), None)),
                },
            };
            match service.append_entries_from(&cert, &message).await {
                Ok(answer) => Some((Ok(answer), Some((service, cert, requests)))),
                Err(refused) => Some((Err(refused), None)),
            }
        });
        Ok(GrpcResponse::new(Box::pin(answers)))
    }

    #[instrument(level = "debug", skip_all, fields(node = self.id))]
    async fn vote(&self, request: Request<RaftMessage>) -> Reply {
        let cert = peer_cert(&request)?;
        let vote: fn(&openraft::raft::VoteRequest<u64>) -> &Vote<u64> = |r| &r.vote;
        let rpc = self.raft_message(&cert, request.get_ref(), "vote", vote).await?;
        Ok(GrpcResponse::new(encode(&self.raft.vote(rpc).await)))
    }

    #[instrument(level = "debug", skip_all, fields(node = self.id))]
    async fn install_snapshot(&self, request: Request<RaftMessage>) -> Reply {
        let cert = peer_cert(&request)?;
        let vote: fn(&openraft::raft::InstallSnapshotRequest<TypeConfig>) -> &Vote<u64> = |r| &r.vote;
        let rpc = self.raft_message(&cert, request.get_ref(), "install snapshot", vote).await?;
        Ok(GrpcResponse::new(encode(&self.raft.install_snapshot(rpc).await)))
    }

    #[instrument(level = "debug", skip_all, fields(node = self.id))]
    async fn forward(&self, request: Request<RaftMessage>) -> Reply {
        let cert = request.peer_certs().and_then(|chain| chain.first().cloned());
        self.arrive(cert.as_ref()).await?;
        let req: LeaderRequest = decode(request.get_ref())?;
        self.check_forwarder(&request, &req)?;
        tracing::debug!(?req, "forwarded request");
        let forwarding = self.held.forwarding();
        let reply = execute_on_leader(&self.raft, &self.reader, req).await;
        forwarding.done(reply.as_ref().map_or(0, LeaderReply::index));
        self.held.release(&self.raft).await;
        Ok(GrpcResponse::new(encode(&reply)))
    }
}
