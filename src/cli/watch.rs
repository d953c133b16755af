//! `arca watch`: committed changes under some prefixes, as they happen (never values). Through
//! the SDK's watcher: when the member it listens to goes away, it resumes on another member
//! in `--addr` after the last position printed, so no change is missed.

use arca_client::WatchKind;
use serde_json::json;

use super::{CliError, CliResult, Client, Format};

pub async fn run(client: &Client, prefixes: Vec<String>, after: Option<u64>, format: Format) -> CliResult {
    let mut watcher = client.sdk().watch_after(prefixes, after).await?;
    loop {
        let e = match watcher.next().await {
            Ok(e) => e,
            Err(err) => {
                let resume = watcher.position().map(|p| format!(" (resume with --after {p})")).unwrap_or_default();
                return Err(CliError::new(format!("{}{resume}", CliError::from(err).message)));
            }
        };
        match format {
            // The periodic position reports are for programs resuming a stream.
            Format::Table if e.kind == WatchKind::Progress => {}
            Format::Table => println!(
                "{:>10}  {:<14} {:<40} v{:<6} current v{}",
                e.seq,
                e.kind.as_str(),
                e.path,
                e.version,
                e.current_version
            ),
            _ => println!(
                "{}",
                json!({ "seq": e.seq, "kind": e.kind.as_str(), "path": e.path, "version": e.version,
                        "current_version": e.current_version })
            ),
        }
        if e.kind == WatchKind::AccessRevoked {
            return Err(CliError::new(format!("the token lost access to {}; the watch ended", e.path)));
        }
    }
}
