use std::io::Cursor;

use arca_storage::{Cf, StoreConfig, Transaction};
use serde::{Deserialize, Serialize};

use crate::NodeInfo;

openraft::declare_raft_types!(
    /// Arca's openraft type configuration.
    pub TypeConfig:
        D = Command,
        R = Response,
        NodeId = u64,
        Node = NodeInfo,
        Entry = openraft::Entry<TypeConfig>,
        SnapshotData = Cursor<Vec<u8>>,
        AsyncRuntime = openraft::TokioRuntime,
);

/// A replicated state change. Everything a command carries reaches the Raft log on every node,
/// so values are barrier ciphertext *before* they are put in a command (invariant 1), and the
/// proposer fixes any time or random value in the command (apply is deterministic).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Command {
    /// Does nothing; commits an entry (leader confirmation, tests, benchmarks).
    Noop,
    /// Stores barrier ciphertext at `path` in the KV family, replacing what was there.
    Put { path: String, ciphertext: Vec<u8> },
    /// Removes `path` from the KV family.
    Delete { path: String },
}

impl std::fmt::Debug for Command {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Ciphertext is harmless but long; its length is what a log reader wants.
        match self {
            Command::Noop => f.write_str("Noop"),
            Command::Put { path, ciphertext } => write!(f, "Put({path:?}, {} bytes)", ciphertext.len()),
            Command::Delete { path } => write!(f, "Delete({path:?})"),
        }
    }
}

/// What applying a command did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum CommandResult {
    Done,
    /// A put or delete; `existed` says whether the path held a value before.
    Written {
        existed: bool,
    },
}

/// The result of a committed entry, with the log index it was applied at: a node that has
/// applied at least this index reflects the write.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Response {
    pub index: u64,
    pub result: CommandResult,
}

impl StoreConfig for TypeConfig {
    fn apply(command: &Command, index: u64, tx: &mut Transaction<'_>) -> Response {
        let result = match command {
            Command::Noop => CommandResult::Done,
            Command::Put { path, ciphertext } => {
                let existed = exists(tx, path);
                tx.put(Cf::Kv, path.as_bytes(), ciphertext.as_slice());
                CommandResult::Written { existed }
            }
            Command::Delete { path } => {
                let existed = exists(tx, path);
                tx.delete(Cf::Kv, path.as_bytes());
                CommandResult::Written { existed }
            }
        };
        Response { index, result }
    }

    fn empty_response(index: u64) -> Response {
        Response { index, result: CommandResult::Done }
    }
}

fn exists(tx: &Transaction<'_>, path: &str) -> bool {
    // A read error here would be a local disk fault; answering "did not exist" only affects the
    // informational flag, never the stored state, which every node writes identically.
    matches!(tx.get(Cf::Kv, path.as_bytes()), Ok(Some(_)))
}
