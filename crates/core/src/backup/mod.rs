//! Backup and restore (`arca operator snapshot save|restore`, Vault's
//! `sys/storage/raft/snapshot`): the core's side. The file format is `arca_storage::backup`;
//! the replicated restore is `arca_raft`'s `Restore*` commands.
//!
//! * **Save** runs on any unsealed member after the read barrier, so the copy holds every
//!   write acknowledged before the request began; it streams from one RocksDB snapshot.
//! * **Restore** writes the upload to the node's scratch directory, checks the whole file
//!   before anything is proposed (framing, sizes, checksums, gzip trailer), refuses a backup
//!   of another cluster, or one whose checksums this keyring did not seal, unless forced, and
//!   then replicates the records in chunks and swaps them in with one committed entry.
//!   Nothing of the running state changes until that entry applies, and then it changes on
//!   every member at the same index.
//! * **Afterwards** every member holds the backup's init record: a member whose root key
//!   opens the restored keyring (a rollback on the same cluster) carries on; every other one
//!   seals itself (`keyring::follow_keyring`) and is unsealed with the backup cluster's shares.
//!   Tokens, policies, rotation schedules and the audit trail are the backup's.

use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;

use arca_crypto::Keyring;
use arca_raft::{Command, CommandResult};
use arca_storage::backup::{self, BackupMeta};
use futures::{Stream, StreamExt};
use tokio::io::AsyncWriteExt;
use tokio::sync::mpsc;
use tracing::{info, warn};

use crate::audit::{AuditCaller, AuditRecord, SYSTEM_RECORD_PREFIX};
use crate::init::{InitRecord, INIT_KEY};
use crate::seal::Seal;
use crate::token::Caller;
use crate::{now_ms, Error, Result};
use arca_storage::Cf;

/// Backups as the `Core` takes and restores them: a save streamed from one RocksDB snapshot, a restore checked whole and replicated through Raft.
mod snapshot;

/// AAD of `SHA256SUMS.sealed`.
const SUMS_AAD: &[u8] = b"sys/storage/raft/snapshot/SHA256SUMS";
/// Records per replicated chunk, by bytes (well under the Raft message limit).
const CHUNK_BYTES: usize = 1024 * 1024;
/// Bytes of the download buffered before they are handed to the front.
const DOWNLOAD_PIECE: usize = 256 * 1024;
/// The largest backup a node restores (its records, and the upload). The swap at the end holds
/// the records in memory on every node (as a Raft snapshot install does), so this bounds what a
/// restore can ask of each node's memory; vaults are far smaller (100 000 secrets with history
/// take tens of MiB).
const MAX_RESTORE_BYTES: u64 = 256 * 1024 * 1024;
/// One restore at a time in this process: each holds an upload on disk and a swap in memory.
static RESTORING: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The body of a restore request, as the front receives it.
pub struct Upload(pub Pin<Box<dyn Stream<Item = std::result::Result<Vec<u8>, String>> + Send>>);

impl std::fmt::Debug for Upload {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Upload")
    }
}

/// A backup on its way to the client: pieces of the file, or the error that cut it short (the
/// front must then fail the transfer, never end it as if complete).
pub struct Download(pub mpsc::Receiver<std::result::Result<Vec<u8>, String>>);

/// What a restore did.
#[derive(Debug, Clone)]
pub struct Restored {
    pub meta: BackupMeta,
    /// This node sealed itself: the restored keyring is another root key's (unseal every node
    /// with the shares of the cluster the backup came from).
    pub sealed: bool,
}

/// Hands what `export` writes to the front in pieces; fails once the front has gone away.
struct ChannelWriter {
    tx: mpsc::Sender<std::result::Result<Vec<u8>, String>>,
    buf: Vec<u8>,
}

impl ChannelWriter {
    fn send(&mut self) -> std::io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let piece = std::mem::replace(&mut self.buf, Vec::with_capacity(DOWNLOAD_PIECE));
        self.tx.blocking_send(Ok(piece)).map_err(|_| std::io::ErrorKind::BrokenPipe.into())
    }
}

impl std::io::Write for ChannelWriter {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.buf.extend_from_slice(data);
        if self.buf.len() >= DOWNLOAD_PIECE {
            self.send()?;
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.send()
    }
}

/// Deletes the uploaded file however the restore ends.
struct ScratchFile(PathBuf);

impl Drop for ScratchFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// A failure of this node (disk, task), naming what it was doing.
fn internal(what: &str, e: &dyn std::fmt::Display) -> Error {
    Error::Internal(format!("{what}: {e}"))
}

fn refused_backup(e: arca_storage::Error) -> Error {
    match e {
        arca_storage::Error::Backup(m) => {
            Error::InvalidArgument(format!("the backup file was refused, nothing was changed: {m}"))
        }
        other => Error::Storage(other),
    }
}
