use std::time::Duration;

use thiserror::Error;

/// Errors of the Raft layer. Every message says what failed and what an operator can check.
#[derive(Debug, Error)]
pub enum Error {
    #[error(transparent)]
    Storage(#[from] arca_storage::Error),

    #[error("TLS configuration is invalid: {0}")]
    Tls(String),

    #[error("cannot listen on the node address {addr}: {source}")]
    Listen { addr: String, source: std::io::Error },

    #[error("invalid peer address {addr:?}: {reason}")]
    PeerAddress { addr: String, reason: String },

    #[error("no leader reachable within {0:?}: the cluster may have lost quorum or still be electing; check that a majority of nodes is up")]
    NoLeader(Duration),

    #[error("the request did not complete within {0:?}; for a membership change, check that the new node is reachable and has a certificate from the cluster CA")]
    Timeout(Duration),

    #[error("the leader (node {leader}) could not be reached to forward the request: {reason}")]
    Forward { leader: u64, reason: String },

    #[error("the leader rejected the request: {0}")]
    Rejected(String),

    #[error("timed out after {0:?} waiting for this node to apply the committed state; it may be partitioned from the leader")]
    ApplyTimeout(Duration),

    #[error("the cluster is already initialized")]
    AlreadyInitialized,

    #[error("this node stopped leading while the request was decided on its state; nothing was written: retry")]
    LeadershipChanged,

    #[error("raft has stopped on this node: {0}")]
    Fatal(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
