//! Arca's storage: one RocksDB per node holding the Raft log and the replicated state machine.
//!
//! Column families (see `Cf`): `logs` (Raft entries by index), `raft` (vote, committed,
//! purged), `meta` (last applied log id, membership) and the *state* families `kv`, `sys`,
//! `tokens`, `audit` that commands write (plus `staging`, where a restore's records gather). The state families only ever receive barrier
//! ciphertext or one-way hashes: encryption happens before a command is proposed, in layers
//! above this crate, so this crate never sees a plaintext secret to leak.
//!
//! Durability rules, each one a place where the upstream openraft example is weaker:
//! * `append` writes its entries in one `WriteBatch` with `sync = true` *before* telling Raft the
//!   entries are flushed; `save_vote` and `truncate` sync too.
//! * `apply` writes the data, the last-applied log id and any membership change in one atomic
//!   batch, so a crash never leaves data applied without its index or vice versa.
//! * `purge` flushes the WAL first, so state applied from entries about to be deleted is on disk.
//! * snapshots are files written to a temporary name, fsynced, then renamed.

// openraft's storage traits fix `StorageError` (over 200 bytes) as the error type; helper
// functions return it too rather than converting back and forth.
#![allow(clippy::result_large_err)]

pub mod backup;
mod error;
mod log_store;
mod snapshot;
mod state_machine;
mod store;
mod wal_sync;

use std::io::Cursor;

pub use error::{Error, Result};
pub use log_store::LogStore;
pub use state_machine::{StateMachine, Transaction};
pub use store::{
    open, open_node, Applied, Cf, ChangedKey, DirectIo, Observer, StateReader, Store, DATA_CFS, STATE_CFS,
};
pub use wal_sync::Unsynced;

/// What the storage needs to know about the Raft type configuration it stores.
///
/// `arca-raft` implements this for its type config: commands are opaque to this crate except
/// through [`StoreConfig::apply`], which must be deterministic (no clock, no randomness, no I/O
/// outside the transaction) because every node applies the same entries and must reach the same
/// state.
pub trait StoreConfig:
    openraft::RaftTypeConfig<Entry = openraft::Entry<Self>, SnapshotData = Cursor<Vec<u8>>, NodeId = u64>
{
    /// Applies the command of entry `log_id`, staging its writes in `tx`. The entry's term is
    /// part of the replicated input (every node applies the same entry with the same id).
    fn apply(command: &Self::D, log_id: &openraft::LogId<u64>, tx: &mut Transaction<'_>) -> Self::R;

    /// The response recorded for entries that carry no command (blank and membership entries).
    fn empty_response(index: u64) -> Self::R;
}

/// Entry points for the fuzz targets in `fuzz/` (built only with `--cfg fuzzing`, which
/// cargo-fuzz sets): the parsers of bytes that arrive from peers and operators.
#[cfg(fuzzing)]
#[doc(hidden)]
pub mod fuzzing {
    /// A Raft snapshot as a peer sends it.
    pub fn snapshot(data: &[u8]) {
        let _ = crate::snapshot::parse(data);
    }

    /// A backup file as an operator uploads it for a restore.
    pub fn backup(file: &std::path::Path) {
        if crate::backup::inspect(file).is_ok() {
            let _ = crate::backup::read_records(file, 64 * 1024, |_| Ok(()));
        }
    }
}
