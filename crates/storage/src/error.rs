use std::path::PathBuf;

use thiserror::Error;

/// Errors opening or reading the node's data directory. Errors inside Raft storage calls are
/// reported to openraft as `StorageError`s instead (see `io_err`).
#[derive(Debug, Error)]
pub enum Error {
    #[error("cannot open the data directory {path}: {source}; check that it exists, is writable, and that no other arca process is using it")]
    Open { path: PathBuf, source: rocksdb::Error },

    #[error("cannot create {path}: {source}")]
    CreateDir { path: PathBuf, source: std::io::Error },

    #[error("RocksDB read failed: {0}")]
    Read(#[from] rocksdb::Error),

    #[error("stored data is corrupted: {0}")]
    Corrupt(String),

    /// A backup file that cannot be restored; nothing was changed.
    #[error("invalid backup: {0}")]
    Backup(String),

    #[error("cannot read or write the backup: {0}")]
    BackupIo(std::io::Error),

    #[error("cannot start the thread that syncs the Raft log: {source}")]
    Thread { source: std::io::Error },

    #[error("this store already has a state machine; open the data directory once per node")]
    SecondStateMachine,
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
