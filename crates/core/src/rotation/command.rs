//! The `command` rotator: the operator's own rotation function, run on the leader.
//!
//! Running code on vault nodes is the most dangerous thing rotation does, so every door is
//! narrow:
//! * the executable is named, never given as a path: it must be a plain file name inside the
//!   node's own `rotation.functions_dir` (from its config file, never from an API call);
//! * it is registered by name with its SHA-256 (`arca rotation function register`, sudo), and
//!   the node hashes the file before every run and refuses one that no longer matches;
//! * the hashed bytes themselves are what runs: they are copied into a fresh private temporary
//!   directory and executed from there, so swapping the file after the check changes nothing;
//! * no shell, an empty environment but `PATH`, `LANG` and `HOME` (the temporary directory,
//!   also the working directory), a timeout after which the process is killed.
//!
//! Protocol: the step as JSON on stdin, `{"step", "path", "pending", "current"}`; a JSON object
//! on stdout (`create` may answer `{"value": {...}}` with the new value). A non-zero exit, a
//! timeout or output that is not a JSON object fails the step with the exit status and a
//! fixed reason. The function's stderr is discarded, never kept: a function handed secrets
//! could print them there, and status, logs and the audit trail must not carry them. To debug
//! a function, run it by hand with the same JSON on stdin.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;

use crate::{Error, Result};

/// Sys key prefix of registered functions (name → SHA-256; not secret, integrity via Raft).
pub(crate) const FUNCTION_PREFIX: &str = "rotation/function/";
/// Largest stdout accepted from a function.
const MAX_OUTPUT: usize = 1 << 20;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Function {
    pub sha256: String,
}

/// A function name: a plain file name (letters, digits, `.`, `_`, `-`), not hidden, so it
/// can only ever name a file directly inside the functions directory.
pub(crate) fn valid_name(name: &str) -> Result<()> {
    let plain = !name.is_empty()
        && name.len() <= 64
        && !name.starts_with('.')
        && name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if plain {
        Ok(())
    } else {
        Err(Error::InvalidArgument(format!(
            "function name {name:?} is not a plain file name (letters, digits, '.', '_', '-'; not hidden, no path): \
             functions run only from the node's rotation.functions_dir"
        )))
    }
}

pub(crate) fn valid_sha256(hex_digest: &str) -> Result<String> {
    let d = hex_digest.trim().to_ascii_lowercase();
    if d.len() == 64 && d.chars().all(|c| c.is_ascii_hexdigit()) {
        Ok(d)
    } else {
        Err(Error::InvalidArgument("sha256 must be 64 hex digits (as printed by sha256sum)".into()))
    }
}

/// Runs function `name` (registered with `expected`) from `dir` with `input` on stdin.
pub(crate) async fn run(
    dir: Option<&Path>,
    name: &str,
    expected: &str,
    timeout: Duration,
    input: &serde_json::Value,
) -> Result<serde_json::Value> {
    valid_name(name)?;
    let dir = dir.ok_or_else(|| {
        Error::Rotation(
            "this node has no rotation.functions_dir in its config; command rotators cannot run here".into(),
        )
    })?;
    let file = dir.join(name);
    let meta = tokio::fs::symlink_metadata(&file)
        .await
        .map_err(|e| Error::Rotation(format!("function {name}: cannot read {}: {e}", file.display())))?;
    if !meta.is_file() {
        return Err(Error::Rotation(format!("function {name}: {} is not a regular file", file.display())));
    }
    let bytes =
        tokio::fs::read(&file).await.map_err(|e| Error::Rotation(format!("function {name}: cannot read: {e}")))?;
    let actual = hex::encode(Sha256::digest(&bytes));
    if actual != expected {
        return Err(Error::Rotation(format!(
            "function {name} changed since it was registered (its SHA-256 is now {actual}); review it and register it again"
        )));
    }
    let work = tempfile::Builder::new()
        .prefix("arca-rotation-")
        .tempdir()
        .map_err(|e| Error::Rotation(format!("cannot create a working directory: {e}")))?;
    let exe = work.path().join(name);
    write_executable(&exe, &bytes).await?;

    let mut child = spawn(&exe, work.path()).await?;
    let mut stdin = child.stdin.take().expect("stdin is piped");
    let payload = serde_json::to_vec(input).map_err(|e| Error::Internal(e.to_string()))?;
    let output = async move {
        // A function that does not read its input must not block the write forever.
        let _ = stdin.write_all(&payload).await;
        drop(stdin);
        child.wait_with_output().await
    };
    let output = match tokio::time::timeout(timeout, output).await {
        Ok(Ok(o)) => o,
        Ok(Err(e)) => return Err(Error::Rotation(format!("function {name}: {e}"))),
        // Dropping the future drops the child, which `kill_on_drop` kills.
        Err(_) => return Err(Error::Rotation(format!("function {name} timed out after {timeout:?} and was killed"))),
    };
    if !output.status.success() {
        return Err(Error::Rotation(format!("function {name} failed ({})", output.status)));
    }
    if output.stdout.len() > MAX_OUTPUT {
        return Err(Error::Rotation(format!("function {name} printed more than {MAX_OUTPUT} bytes")));
    }
    match serde_json::from_slice::<serde_json::Value>(&output.stdout) {
        Ok(v @ serde_json::Value::Object(_)) => Ok(v),
        Ok(_) => Err(Error::Rotation(format!("function {name} printed JSON that is not an object"))),
        // The parser's position only: its message can quote the output.
        Err(e) => Err(Error::Rotation(format!(
            "function {name} printed malformed output (expected a JSON object; error at line {} column {})",
            e.line(),
            e.column()
        ))),
    }
}

async fn write_executable(path: &Path, bytes: &[u8]) -> Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let path = path.to_path_buf();
    let bytes = bytes.to_vec();
    tokio::task::spawn_blocking(move || {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o700).open(&path)?;
        f.write_all(&bytes)?;
        f.sync_all()
    })
    .await
    .map_err(|e| Error::Internal(e.to_string()))?
    .map_err(|e| Error::Rotation(format!("cannot stage the function: {e}")))
}

async fn spawn(exe: &Path, work: &Path) -> Result<tokio::process::Child> {
    // Another thread forking while the copy was open for writing can hold the file open in
    // its child for a moment (ETXTBSY); that passes quickly.
    let mut attempts = 0;
    loop {
        let spawned = tokio::process::Command::new(exe)
            .env_clear()
            .env("PATH", "/usr/local/bin:/usr/bin:/bin")
            .env("LANG", "C.UTF-8")
            .env("HOME", work)
            .current_dir(work)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn();
        match spawned {
            Ok(child) => return Ok(child),
            Err(e) if e.raw_os_error() == Some(ETXTBSY) && attempts < 20 => {
                attempts += 1;
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            Err(e) => return Err(Error::Rotation(format!("cannot start the function: {e}"))),
        }
    }
}

/// "Text file busy" on Linux.
const ETXTBSY: i32 = 26;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_cannot_leave_the_functions_dir() {
        for bad in ["../x", "/bin/sh", "a/b", ".hidden", "", "x y", "..", "a\\b"] {
            assert!(valid_name(bad).is_err(), "{bad:?} accepted");
        }
        for good in ["rotate.sh", "my_func-2", "x"] {
            valid_name(good).unwrap();
        }
        assert!(valid_sha256("abc").is_err());
        assert_eq!(valid_sha256(&"AB".repeat(32)).unwrap(), "ab".repeat(32));
    }
}
