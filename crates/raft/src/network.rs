//! The client side of the node-to-node API: openraft's `RaftNetwork` over gRPC + mutual TLS.

use std::time::Duration;

use openraft::error::{InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Unreachable};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse, VoteRequest,
    VoteResponse,
};
use serde::de::DeserializeOwned;
use serde::Serialize;
use tonic::transport::{Channel, Endpoint};
use tonic::Code;

use crate::proto::raft_client::RaftClient;
use crate::proto::RaftMessage;
use crate::{Error, NodeInfo, Result, TlsConfig, TypeConfig};

pub(crate) fn encode<T: Serialize>(v: &T) -> RaftMessage {
    RaftMessage { payload: bincode::serialize(v).expect("in-memory messages always serialise").into() }
}

pub(crate) fn decode<T: DeserializeOwned>(m: &RaftMessage) -> std::result::Result<T, tonic::Status> {
    bincode::deserialize(&m.payload).map_err(|e| {
        tonic::Status::invalid_argument(format!("undecodable Raft message (version mismatch between nodes?): {e}"))
    })
}

/// Creates lazily-connecting channels to peers. Cheap to clone.
#[derive(Clone)]
pub struct Network {
    tls: TlsConfig,
    connect_timeout: Duration,
}

impl Network {
    pub(crate) fn new(tls: TlsConfig, connect_timeout: Duration) -> Self {
        Network { tls, connect_timeout }
    }

    /// A channel to `addr` that connects on first use and reconnects after failures.
    pub(crate) fn channel(&self, addr: &str) -> Result<RaftClient<Channel>> {
        let bad = |reason: String| Error::PeerAddress { addr: addr.to_string(), reason };
        let endpoint = Endpoint::from_shared(format!("https://{addr}"))
            .map_err(|e| bad(e.to_string()))?
            .tls_config(self.tls.client())
            .map_err(|e| bad(e.to_string()))?
            .connect_timeout(self.connect_timeout)
            .tcp_nodelay(true)
            .http2_keep_alive_interval(Duration::from_secs(10))
            .keep_alive_while_idle(true);
        Ok(RaftClient::new(endpoint.connect_lazy()).max_decoding_message_size(usize::MAX))
    }
}

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = Connection;

    async fn new_client(&mut self, target: u64, node: &NodeInfo) -> Connection {
        // Building a lazy channel cannot fail on I/O; a malformed address is kept as an error
        // that every RPC reports, so a bad membership entry is visible instead of a panic.
        Connection { target, client: self.channel(&node.raft_addr).map_err(|e| e.to_string()) }
    }
}

/// One peer, as seen by the replication stream of the leader (or a candidate's vote requests).
pub struct Connection {
    target: u64,
    client: std::result::Result<RaftClient<Channel>, String>,
}

fn status_to_rpc<E: std::error::Error>(status: tonic::Status) -> RPCError<u64, NodeInfo, E> {
    match status.code() {
        // Connection refused / TLS failure: back off instead of hammering the peer.
        Code::Unavailable => RPCError::Unreachable(Unreachable::new(&status)),
        _ => RPCError::Network(NetworkError::new(&status)),
    }
}

impl Connection {
    async fn call<Req, Resp, E>(
        &mut self,
        rpc: &Req,
        option: &RPCOption,
        method: Method,
    ) -> std::result::Result<Resp, RPCError<u64, NodeInfo, RaftError<u64, E>>>
    where
        Req: Serialize,
        Resp: DeserializeOwned,
        E: std::error::Error + DeserializeOwned,
    {
        let client = match &mut self.client {
            Ok(c) => c,
            Err(e) => {
                return Err(RPCError::Unreachable(Unreachable::new(&std::io::Error::other(e.clone()))));
            }
        };
        let mut request = tonic::Request::new(encode(rpc));
        request.set_timeout(option.hard_ttl());
        let reply = match method {
            Method::Append => client.append_entries(request).await,
            Method::Vote => client.vote(request).await,
            Method::Snapshot => client.install_snapshot(request).await,
        }
        .map_err(status_to_rpc)?;
        let result: std::result::Result<Resp, RaftError<u64, E>> =
            decode(reply.get_ref()).map_err(|s| RPCError::Network(NetworkError::new(&s)))?;
        result.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
    }
}

#[derive(Clone, Copy)]
enum Method {
    Append,
    Vote,
    Snapshot,
}

impl RaftNetwork<TypeConfig> for Connection {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> std::result::Result<AppendEntriesResponse<u64>, RPCError<u64, NodeInfo, RaftError<u64>>> {
        self.call(&rpc, &option, Method::Append).await
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> std::result::Result<InstallSnapshotResponse<u64>, RPCError<u64, NodeInfo, RaftError<u64, InstallSnapshotError>>>
    {
        self.call(&rpc, &option, Method::Snapshot).await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<u64>,
        option: RPCOption,
    ) -> std::result::Result<VoteResponse<u64>, RPCError<u64, NodeInfo, RaftError<u64>>> {
        self.call(&rpc, &option, Method::Vote).await
    }
}
