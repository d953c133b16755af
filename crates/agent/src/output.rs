//! Rendered files: replaced atomically, never truncated, and the after-change command.

use std::io::{Read, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use tracing::{info, warn};
use zeroize::Zeroize;

use crate::{Error, Result};

/// Largest rendered file compared before a write (a bigger one is simply written again).
const COMPARE_LIMIT: u64 = 16 << 20;

/// Writes `contents` to `dest` unless it already holds exactly that with this mode and owner:
/// a temporary file in the same directory (a random name, created new and owner-only), given
/// its owner and then its mode, written, synced, renamed over `dest`, and the directory synced.
/// A reader sees the old file or the new one, never a partial one, and a crash leaves one of
/// the two. Returns whether it changed.
///
/// A directory that other users may write to without the sticky bit is refused: anyone could
/// swap the temporary file before the rename.
pub fn write_atomic(dest: &Path, contents: &[u8], mode: u32, owner: Option<(u32, Option<u32>)>) -> Result<bool> {
    let io = |what: &str, p: &Path, e: std::io::Error| Error::Io(format!("{what} {}: {e}", p.display()));
    if unchanged(dest, contents, mode, owner) {
        return Ok(false);
    }
    let dir = dest.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let dmeta = std::fs::metadata(dir).map_err(|e| io("cannot use the directory", dir, e))?;
    if dmeta.permissions().mode() & 0o1002 == 0o002 {
        return Err(Error::Io(format!(
            "{}: every user may write to this directory and it has no sticky bit; render into a directory only the agent (and the application) can write",
            dir.display()
        )));
    }
    let name = dest.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let tmp: PathBuf = dir.join(format!(".{name}.{:016x}.arca-tmp", rand::random::<u64>()));
    let write = || -> std::io::Result<()> {
        // Owner-only until it has its owner: no one else can open it meanwhile.
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&tmp)?;
        if let Some((uid, gid)) = owner {
            std::os::unix::fs::fchown(&f, Some(uid), gid)?;
        }
        f.set_permissions(std::fs::Permissions::from_mode(mode))?;
        f.write_all(contents)?;
        f.sync_all()
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

/// Whether `dest` is a regular file (not a link, a pipe or a device) holding exactly
/// `contents` with this mode and owner.
fn unchanged(dest: &Path, contents: &[u8], mode: u32, owner: Option<(u32, Option<u32>)>) -> bool {
    let Ok(meta) = std::fs::symlink_metadata(dest) else { return false };
    let same_owner = owner.is_none_or(|(u, g)| meta.uid() == u && g.is_none_or(|g| meta.gid() == g));
    if !meta.file_type().is_file()
        || meta.len() != contents.len() as u64
        || meta.len() > COMPARE_LIMIT
        || meta.permissions().mode() & 0o7777 != mode
        || !same_owner
    {
        return false;
    }
    let read = || -> std::io::Result<Vec<u8>> {
        let mut f =
            std::fs::OpenOptions::new().read(true).custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK).open(dest)?;
        let mut buf = Vec::with_capacity(contents.len());
        (&mut f).take(COMPARE_LIMIT).read_to_end(&mut buf)?;
        Ok(buf)
    };
    match read() {
        Ok(mut old) => {
            let same = old == contents;
            old.zeroize();
            same
        }
        Err(_) => false,
    }
}

/// Runs `command` with `sh -c` in a process group of its own, killing the whole group past
/// `timeout`. Its output goes where the agent's goes; only its exit status is logged.
pub async fn run_command(command: &str, timeout: Duration, for_file: &Path) {
    let child = tokio::process::Command::new("sh").arg("-c").arg(command).process_group(0).kill_on_drop(true).spawn();
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
            if let Some(pid) = child.id() {
                // SAFETY: killpg(2) on the group this child leads (process_group(0) above).
                unsafe { libc::killpg(pid as i32, libc::SIGKILL) };
            }
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
    fn a_link_or_a_pipe_at_the_destination_is_replaced_not_followed() {
        let dir = tempfile::TempDir::new().unwrap();
        let target = dir.path().join("elsewhere");
        std::fs::write(&target, b"a=1\n").unwrap();
        let f = dir.path().join("db.env");
        std::os::unix::fs::symlink(&target, &f).unwrap();
        assert!(write_atomic(&f, b"a=1\n", 0o600, None).unwrap(), "a link is not our file");
        assert!(std::fs::symlink_metadata(&f).unwrap().file_type().is_file());
        assert_eq!(std::fs::read(&target).unwrap(), b"a=1\n", "the link's target is untouched");
        let pipe = dir.path().join("fifo");
        let c = std::ffi::CString::new(pipe.to_str().unwrap()).unwrap();
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        assert!(write_atomic(&pipe, b"x", 0o600, None).unwrap(), "a pipe is replaced without being read");
    }

    #[test]
    fn a_directory_anyone_may_write_without_the_sticky_bit_is_refused() {
        let dir = tempfile::TempDir::new().unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
        let e = write_atomic(&dir.path().join("x"), b"x", 0o600, None).unwrap_err();
        assert!(e.to_string().contains("sticky bit"), "{e}");
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o1777)).unwrap();
        assert!(write_atomic(&dir.path().join("x"), b"x", 0o600, None).unwrap());
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
