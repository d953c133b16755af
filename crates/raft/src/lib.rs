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

pub use autopilot::{AutopilotConfig, AutopilotState, ServerHealth};
pub use command::{Command, CommandResult, Guard, Op, Response, TypeConfig};
pub use error::{Error, Result};
pub use faults::Faults;
pub use network::MAX_MESSAGE;
pub use node::{NodeConfig, NodeInfo, RaftNode, Timing};
pub use openraft;
pub use tls::{node_name, TlsConfig};
