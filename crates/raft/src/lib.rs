//! Arca's Raft layer.
//!
//! * [`TypeConfig`] and the replicated [`Command`] set (the storage crate applies them through
//!   [`arca_storage::StoreConfig`]).
//! * A node-to-node gRPC network over **mutual TLS** ([`TlsConfig`]): each node presents a
//!   certificate from the cluster CA naming its node id, and obeys only current members.
//! * [`audit_log`]: the hash-chained audit records that commands append.
//! * [`RaftNode`]: one running member: bootstrap, membership changes, writes and read barriers
//!   that work on any node (followers forward to the leader).

pub mod audit_log;
mod autopilot;
mod command;
mod error;
mod faults;
mod network;
mod node;
mod restore;
mod service;
mod tls;

#[cfg(feature = "testing")]
pub mod testing;

pub mod proto {
    tonic::include_proto!("arca.raft.v1");
}

pub use arca_storage::DirectIo;
pub use autopilot::{AutopilotConfig, AutopilotState, ServerHealth};
pub use command::{AuditBatch, Command, CommandResult, Guard, GuardedWrite, Op, Response, TypeConfig};
pub use error::{Error, Result};
pub use faults::Faults;
pub use network::MAX_MESSAGE;
pub use node::{NodeConfig, NodeInfo, RaftNode, Timing};
pub use openraft;
pub use tls::{node_name, TlsConfig};

/// Entry points for the fuzz targets in `fuzz/` (built only with `--cfg fuzzing`, which
/// cargo-fuzz sets).
#[cfg(fuzzing)]
#[doc(hidden)]
pub mod fuzzing {
    use crate::proto::RaftMessage;

    /// A node-to-node message as the Raft service decodes it, as each of the four kinds.
    pub fn node_message(payload: &[u8]) {
        let m = RaftMessage { payload: payload.to_vec().into() };
        let _ = crate::network::decode::<openraft::raft::AppendEntriesRequest<crate::TypeConfig>>(&m);
        let _ = crate::network::decode::<openraft::raft::VoteRequest<u64>>(&m);
        let _ = crate::network::decode::<openraft::raft::InstallSnapshotRequest<crate::TypeConfig>>(&m);
        let _ = crate::network::decode::<crate::service::LeaderRequest>(&m);
        let _ = crate::network::decode::<Result<crate::service::LeaderReply, crate::service::LeaderError>>(&m);
    }
}
