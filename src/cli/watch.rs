//! `arca watch`: committed changes under some prefixes, as they happen (never values).

use arca_server::proto::{self, watch_event::Kind};
use serde_json::json;

use super::{CliError, CliResult, Client, Format};

pub async fn run(client: &Client, prefixes: Vec<String>, after: Option<u64>, format: Format) -> CliResult {
    let request = client.req(proto::WatchRequest { prefixes, after_seq: after });
    let mut stream = client.watch().watch(request).await?.into_inner();
    while let Some(e) = stream.message().await? {
        let kind = Kind::try_from(e.kind).unwrap_or(Kind::Unspecified);
        match format {
            // The periodic position reports are for programs resuming a stream.
            Format::Table if kind == Kind::Progress => {}
            Format::Table => println!(
                "{:>10}  {:<14} {:<40} v{:<6} current v{}",
                e.seq,
                kind.as_str_name(),
                e.path,
                e.version,
                e.current_version
            ),
            _ => println!(
                "{}",
                json!({ "seq": e.seq, "kind": kind.as_str_name(), "path": e.path, "version": e.version,
                        "current_version": e.current_version })
            ),
        }
        if kind == Kind::AccessRevoked {
            return Err(CliError::new(format!("the token lost access to {}; the watch ended", e.path)));
        }
    }
    Ok(())
}
