//! `arca operator snapshot save|restore|inspect`: backups of the whole vault.

use std::path::{Path, PathBuf};

use arca_client::raw::proto;
use arca_storage::backup::{self, BackupMeta};
use clap::Subcommand;
use serde_json::json;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::output::print;
use super::{CliError, CliResult, Client, Format};

/// Bytes per message of an upload.
const UPLOAD_PIECE: usize = 256 * 1024;

#[derive(Subcommand)]
pub enum SnapshotCommand {
    /// Write a consistent backup of the whole vault to FILE (ciphertext only; it opens only
    /// with this cluster's unseal shares). Needs read + sudo on sys/storage/raft/snapshot.
    Save { file: PathBuf },
    /// Replace the whole vault with the backup in FILE: every secret, token, policy, rotation
    /// and audit record becomes the backup's, on every node. The file is checked whole first.
    /// A backup of another cluster needs --force; every node then seals itself and is unsealed
    /// with the shares of the cluster the backup came from.
    Restore {
        file: PathBuf,
        #[arg(long)]
        force: bool,
    },
    /// Check FILE (sizes, checksums, framing; no keys needed) and show what it holds.
    Inspect { file: PathBuf },
}

pub async fn run(cmd: SnapshotCommand, client: &Client, format: Format) -> CliResult {
    match cmd {
        SnapshotCommand::Save { file } => {
            let meta = save(client, &file).await?;
            show(format, &meta, &format!("saved to {}", file.display()));
        }
        SnapshotCommand::Restore { file, force } => {
            let meta = inspect(&file).await?;
            let r = restore(client, &file, force).await?;
            let after = if r.sealed {
                format!(
                    "restored; the nodes sealed themselves: unseal each with the unseal shares of cluster {}",
                    r.cluster_id
                )
            } else {
                "restored; the cluster's keys open the backup, so the nodes stay unsealed".to_string()
            };
            show(format, &meta, &after);
        }
        SnapshotCommand::Inspect { file } => {
            let meta = inspect(&file).await?;
            show(format, &meta, "the backup is intact");
        }
    }
    Ok(())
}

fn show(format: Format, meta: &BackupMeta, outcome: &str) {
    match format {
        Format::Json | Format::Jsonl => {
            let mut v = serde_json::to_value(meta).unwrap_or_default();
            v["result"] = json!(outcome);
            print(format, &v);
        }
        Format::Table => {
            println!("{outcome}");
            println!("cluster       {}", meta.cluster_id);
            println!("keyring term  {}", meta.keyring_term);
            println!("raft index    {} (term {})", meta.index, meta.raft_term);
            println!("taken         {} by node {}", super::output::date(meta.created_ms), meta.node);
            println!("records       {} ({} bytes)", meta.records, meta.state_bytes);
            println!("sha256        {}", meta.state_sha256);
        }
    }
}

async fn inspect(file: &Path) -> CliResult<BackupMeta> {
    let path = file.to_path_buf();
    let inspected = tokio::task::spawn_blocking(move || backup::inspect(&path))
        .await
        .map_err(|e| CliError::new(e.to_string()))?
        .map_err(|e| CliError::new(format!("{}: {e}", file.display())))?;
    Ok(inspected.meta)
}

/// Streams the backup to `FILE.partial`, syncs it, checks it, then renames it into place, so
/// FILE is only ever a whole, checked backup.
async fn save(client: &Client, file: &Path) -> CliResult<BackupMeta> {
    let partial = PathBuf::from(format!("{}.partial", file.display()));
    let io = |e: std::io::Error| CliError::new(format!("{}: {e}", partial.display()));
    let client = client.unhurried().await?;
    // Only once the server has accepted the request: a refusal leaves no file behind.
    let mut stream = rpc!(client, sys.snapshot_save(proto::SnapshotSaveRequest {})).await?;
    let _ = tokio::fs::remove_file(&partial).await;
    // New, owner-only (never through a link someone left at that name).
    let mut out =
        tokio::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&partial).await.map_err(io)?;
    let result = async {
        while let Some(chunk) = stream.message().await? {
            out.write_all(&chunk.data).await.map_err(io)?;
        }
        out.sync_all().await.map_err(io)?;
        inspect(&partial).await
    }
    .await;
    match result {
        Ok(meta) => {
            tokio::fs::rename(&partial, file).await.map_err(|e| CliError::new(format!("{}: {e}", file.display())))?;
            // The rename itself durable: a crash now leaves the whole backup at FILE.
            let dir = file.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
            if let Ok(d) = std::fs::File::open(dir) {
                let _ = d.sync_all();
            }
            Ok(meta)
        }
        Err(e) => {
            let _ = tokio::fs::remove_file(&partial).await;
            Err(CliError::new(format!("the backup was not saved: {}", e.message)))
        }
    }
}

async fn restore(client: &Client, file: &Path, force: bool) -> CliResult<proto::SnapshotRestoreResponse> {
    let f = tokio::fs::File::open(file).await.map_err(|e| CliError::new(format!("{}: {e}", file.display())))?;
    // Read as the upload goes: the file is never in memory whole. (A read error ends the
    // upload short, which the server's check of the whole file refuses.)
    let pieces = futures::stream::unfold((f, true), move |(mut reader, first)| async move {
        let mut buf = vec![0u8; UPLOAD_PIECE];
        let mut filled = 0;
        while filled < buf.len() {
            match reader.read(&mut buf[filled..]).await {
                Ok(0) => break,
                Ok(n) => filled += n,
                Err(_) => break,
            }
        }
        if filled == 0 && !first {
            return None;
        }
        buf.truncate(filled);
        Some((proto::SnapshotChunk { data: buf, force: first && force }, (reader, false)))
    });
    // One attempt: an upload stream cannot be sent twice.
    let mut sys = client.unhurried().await?.services().sys;
    Ok(sys.snapshot_restore(pieces).await?.into_inner())
}
