//! Rendered files: replaced atomically, never truncated, and the after-change command.

use std::io::Write;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use tracing::{info, warn};
use zeroize::Zeroize;

use crate::{Error, Result};

/// Writes `contents` to `dest` unless it already holds exactly that with this mode: a temporary
/// file in the same directory (created new, with the final mode from the start), synced, given
/// its owner, renamed over `dest`, and the directory synced. A reader sees the old file or the
/// new one, never a partial one, and a crash leaves one of the two. Returns whether it changed.
pub fn write_atomic(dest: &Path, contents: &[u8], mode: u32, owner: Option<(u32, Option<u32>)>) -> Result<bool> {
    let io = |what: &str, p: &Path, e: std::io::Error| Error::Io(format!("{what} {}: {e}", p.display()));
    if let Ok(meta) = std::fs::metadata(dest) {
        let same_owner = owner.is_none_or(|(u, g)| meta.uid() == u && g.is_none_or(|g| meta.gid() == g));
        if meta.permissions().mode() & 0o7777 == mode && same_owner {
            if let Ok(mut old) = std::fs::read(dest) {
                let same = old == contents;
                old.zeroize();
                if same {
                    return Ok(false);
                }
            }
        }
    }
    let dir = dest.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let name = dest.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let tmp: PathBuf = dir.join(format!(".{name}.arca-{}.tmp", std::process::id()));
    // A leftover from a crash of this very pid is ours to replace.
    let _ = std::fs::remove_file(&tmp);
    let write = || -> std::io::Result<()> {
        let mut f = std::fs::OpenOptions::new().write(true).create_new(true).mode(mode).open(&tmp)?;
        // The umask may have narrowed the mode at creation.
        f.set_permissions(std::fs::Permissions::from_mode(mode))?;
        f.write_all(contents)?;
        f.sync_all()?;
        if let Some((uid, gid)) = owner {
            std::os::unix::fs::fchown(&f, Some(uid), gid)?;
        }
        Ok(())
    };
    if let Err(e) = write() {
        let _ = std::fs::remove_file(&tmp);
        return Err(io("cannot write", &tmp, e));
    }
    std::fs::rename(&tmp, dest).map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        io("cannot replace", dest, e)
    })?;
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(true)
}

/// Runs `command` with `sh -c`, killing it past `timeout`. Its output goes where the agent's
/// goes; only its exit status is logged.
pub async fn run_command(command: &str, timeout: Duration, for_file: &Path) {
    let child = tokio::process::Command::new("sh").arg("-c").arg(command).kill_on_drop(true).spawn();
    let mut child = match child {
        Ok(c) => c,
        Err(e) => {
            warn!(file = %for_file.display(), error = %e, "cannot start the after-change command");
            return;
        }
    };
    match tokio::time::timeout(timeout, child.wait()).await {
        Ok(Ok(status)) if status.success() => info!(file = %for_file.display(), "after-change command ran"),
        Ok(Ok(status)) => warn!(file = %for_file.display(), %status, "the after-change command failed"),
        Ok(Err(e)) => warn!(file = %for_file.display(), error = %e, "waiting for the after-change command"),
        Err(_) => {
            let _ = child.kill().await;
            warn!(file = %for_file.display(), ?timeout, "the after-change command ran too long and was killed");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_is_replaced_only_when_it_changes_and_keeps_its_mode() {
        let dir = tempfile::TempDir::new().unwrap();
        let f = dir.path().join("db.env");
        assert!(write_atomic(&f, b"a=1\n", 0o640, None).unwrap());
        assert!(!write_atomic(&f, b"a=1\n", 0o640, None).unwrap(), "same contents: untouched");
        assert!(write_atomic(&f, b"a=2\n", 0o640, None).unwrap());
        assert_eq!(std::fs::read(&f).unwrap(), b"a=2\n");
        assert_eq!(std::fs::metadata(&f).unwrap().permissions().mode() & 0o7777, 0o640);
        assert!(write_atomic(&f, b"a=2\n", 0o600, None).unwrap(), "a new mode is a change");
        let names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names.len(), 1, "no temporary file left: {names:?}");
    }

    #[test]
    fn a_failed_write_leaves_the_old_file() {
        let dir = tempfile::TempDir::new().unwrap();
        let f = dir.path().join("x");
        write_atomic(&f, b"old", 0o600, None).unwrap();
        // Owning it by another user needs a privilege the test may not have; as root, a
        // directory the rename cannot enter stands in.
        let missing = dir.path().join("no-such-dir").join("x");
        assert!(write_atomic(&missing, b"new", 0o600, None).is_err());
        assert_eq!(std::fs::read(&f).unwrap(), b"old");
    }
}
