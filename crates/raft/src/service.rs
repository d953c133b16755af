//! The server side of the node-to-node API.

use openraft::error::{ClientWriteError, RaftError};
use openraft::{ChangeMembers, Raft};
use serde::{Deserialize, Serialize};
use tonic::{Request, Response as GrpcResponse, Status};
use tracing::instrument;

use crate::network::{decode, encode};
use crate::proto::raft_server;
use crate::proto::RaftMessage;
use crate::{Command, NodeInfo, Response, TypeConfig};

/// Work a non-leader hands to the leader.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) enum LeaderRequest {
    Write(Command),
    /// The leader's read index: confirm leadership with a quorum and report the commit index.
    ReadIndex,
    AddLearner { id: u64, node: NodeInfo },
    Promote { id: u64 },
    Remove { id: u64 },
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) enum LeaderReply {
    Written(Response),
    ReadIndex(u64),
    MembershipChanged { index: u64 },
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) enum LeaderError {
    /// This node is not the leader; the leader it knows of, if any.
    NotLeader { leader: Option<(u64, NodeInfo)> },
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

/// Executes `req` if this node is the leader.
pub(crate) async fn execute_on_leader(raft: &Raft<TypeConfig>, req: LeaderRequest) -> Result<LeaderReply, LeaderError> {
    let membership = |r: Result<openraft::raft::ClientWriteResponse<TypeConfig>, _>| {
        r.map(|w| LeaderReply::MembershipChanged { index: w.log_id.index }).map_err(from_write_err)
    };
    match req {
        LeaderRequest::Write(cmd) => raft.client_write(cmd).await.map(|w| LeaderReply::Written(w.data)).map_err(from_write_err),
        LeaderRequest::ReadIndex => match raft.get_read_log_id().await {
            Ok((read, _applied)) => Ok(LeaderReply::ReadIndex(read.map_or(0, |l| l.index))),
            Err(RaftError::APIError(openraft::error::CheckIsLeaderError::ForwardToLeader(f))) => Err(from_forward(f)),
            Err(other) => Err(LeaderError::Failed(other.to_string())),
        },
        // Blocking: returns once the learner has caught up, so promoting it right after is safe.
        LeaderRequest::AddLearner { id, node } => membership(raft.add_learner(id, node, true).await),
        LeaderRequest::Promote { id } => {
            membership(raft.change_membership(ChangeMembers::AddVoterIds([id].into()), false).await)
        }
        LeaderRequest::Remove { id } => {
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

/// Serves the node-to-node API for one node.
pub(crate) struct RaftService {
    pub(crate) id: u64,
    pub(crate) raft: Raft<TypeConfig>,
}

type Reply = Result<GrpcResponse<RaftMessage>, Status>;

#[tonic::async_trait]
impl raft_server::Raft for RaftService {
    #[instrument(level = "trace", skip_all, fields(node = self.id))]
    async fn append_entries(&self, request: Request<RaftMessage>) -> Reply {
        let rpc = decode(request.get_ref())?;
        Ok(GrpcResponse::new(encode(&self.raft.append_entries(rpc).await)))
    }

    #[instrument(level = "debug", skip_all, fields(node = self.id))]
    async fn vote(&self, request: Request<RaftMessage>) -> Reply {
        let rpc = decode(request.get_ref())?;
        Ok(GrpcResponse::new(encode(&self.raft.vote(rpc).await)))
    }

    #[instrument(level = "debug", skip_all, fields(node = self.id))]
    async fn install_snapshot(&self, request: Request<RaftMessage>) -> Reply {
        let rpc = decode(request.get_ref())?;
        Ok(GrpcResponse::new(encode(&self.raft.install_snapshot(rpc).await)))
    }

    #[instrument(level = "debug", skip_all, fields(node = self.id))]
    async fn forward(&self, request: Request<RaftMessage>) -> Reply {
        let req: LeaderRequest = decode(request.get_ref())?;
        tracing::debug!(?req, "forwarded request");
        Ok(GrpcResponse::new(encode(&execute_on_leader(&self.raft, req).await)))
    }
}
