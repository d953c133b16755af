//! `arca audit …`.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use arca_client::raw::proto;
use clap::Subcommand;
use serde_json::{json, Value};

use super::output::print;
use super::{CliError, CliResult, Client, Format};

#[derive(Subcommand)]
pub enum AuditCommand {
    /// Committed records, oldest first.
    List {
        /// From this time: RFC 3339-free forms: `30m`, `2h`, `7d` ago, or Unix milliseconds.
        #[arg(long)]
        since: Option<String>,
        /// Before this time (same forms).
        #[arg(long)]
        until: Option<String>,
        /// Logical path prefix, e.g. secret/data/app/.
        #[arg(long, default_value = "")]
        path: String,
        #[arg(long, default_value = "")]
        accessor: String,
        #[arg(long, default_value = "")]
        identity: String,
        /// ok, denied, allowed, permission_denied, unauthenticated, …
        #[arg(long, default_value = "")]
        outcome: String,
        #[arg(long, default_value_t = 100)]
        limit: u32,
    },
    /// The newest records; with --follow, every record as it commits.
    Tail {
        #[arg(short = 'n', long, default_value_t = 20)]
        last: u32,
        #[arg(long)]
        follow: bool,
    },
    /// Every record, for archiving (use --format jsonl).
    Export,
    /// Recompute the hash chain on every member and compare their heads; exit 1 naming the
    /// first bad sequence number.
    Verify,
    /// The audit HMAC of a value, to search the trail for a known token or secret.
    Hash { value: String },
    /// Policy rules no request used in the window, and the tokens and roles holding them.
    UnusedGrants {
        /// The window: `30d`, `12h`, … back from now, or Unix milliseconds.
        #[arg(long, default_value = "30d")]
        since: String,
        /// Also list the rules that were used.
        #[arg(long)]
        all: bool,
    },
}

fn when(flag: &str, value: Option<&str>) -> CliResult<i64> {
    let Some(v) = value else { return Ok(0) };
    if let Ok(ms) = v.parse::<i64>() {
        return Ok(ms);
    }
    let ago = super::parse_duration(flag, Some(v))?;
    let now = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0);
    Ok(now - ago as i64 * 1000)
}

fn record_json(r: &proto::AuditRecord) -> Value {
    json!({
        "seq": r.seq, "time_ms": r.time_ms, "request_id": r.request_id, "node": r.node, "remote": r.remote,
        "operation": r.operation, "path": r.path, "auth_method": r.auth_method, "accessor": r.accessor,
        "identity": r.identity, "policies": r.policies, "decision": r.decision, "capability": r.capability,
        "outcome": r.outcome, "error": r.error, "duration_us": r.duration_us,
        "request_hmacs": r.request_hmacs, "response_hmacs": r.response_hmacs, "dropped": r.dropped,
        "details": r.details,
    })
}

fn print_records(format: Format, records: &[proto::AuditRecord]) {
    match format {
        Format::Table => {
            for r in records {
                println!(
                    "{:>8}  {}  node{}  {:<16} {:<40} {:<10} {:<18} {}",
                    r.seq,
                    super::output::date(r.time_ms),
                    r.node,
                    r.operation,
                    r.path,
                    r.decision,
                    r.outcome,
                    r.identity
                );
            }
        }
        _ => print(format, &Value::Array(records.iter().map(record_json).collect())),
    }
}

pub async fn run(cmd: AuditCommand, client: &Client, format: Format) -> CliResult {
    match cmd {
        AuditCommand::List { since, until, path, accessor, identity, outcome, limit } => {
            let req = proto::ListAuditRequest {
                from_seq: 0,
                since_ms: when("--since", since.as_deref())?,
                until_ms: when("--until", until.as_deref())?,
                path_prefix: path,
                accessor,
                identity,
                outcome,
                limit,
            };
            let r = rpc!(client, audit.list(req)).await?;
            print_records(format, &r.records);
        }
        AuditCommand::Tail { last, follow } => {
            let mut stream = rpc!(client, audit.tail(proto::TailAuditRequest { last, follow })).await?;
            while let Some(r) = stream.message().await? {
                print_records(if format == Format::Json { Format::Jsonl } else { format }, &[r]);
            }
        }
        AuditCommand::Export => {
            let mut from_seq = 0;
            loop {
                let req = proto::ListAuditRequest { from_seq, limit: 10_000, ..Default::default() };
                let page = rpc!(client, audit.list(req)).await?.records;
                let Some(last) = page.last() else { break };
                from_seq = last.seq + 1;
                print_records(if format == Format::Table { Format::Jsonl } else { format }, &page);
                // Each page request is itself audited: a short page means we reached the end
                // (as of that request), rather than chasing our own records forever.
                if page.len() < 10_000 {
                    break;
                }
            }
        }
        AuditCommand::Verify => return verify(client, format).await,
        AuditCommand::UnusedGrants { since, all } => {
            let req = proto::UnusedGrantsRequest { since_ms: when("--since", Some(&since))? };
            let grants = rpc!(client, audit.unused_grants(req)).await?.grants;
            let shown: Vec<_> = grants.iter().filter(|g| all || !g.used).collect();
            match format {
                Format::Table => {
                    for g in &shown {
                        let state = if g.used { "used" } else { "UNUSED" };
                        let holders = if g.holders.is_empty() { "-".to_string() } else { g.holders.join(",") };
                        println!("{state:<7} {:<16} {:<8} {:<40} held by {holders}", g.policy, g.capability, g.pattern);
                    }
                }
                _ => print(
                    format,
                    &Value::Array(
                        shown
                            .iter()
                            .map(|g| {
                                json!({"policy": g.policy, "pattern": g.pattern, "capability": g.capability,
                                            "used": g.used, "holders": g.holders})
                            })
                            .collect(),
                    ),
                ),
            }
        }
        AuditCommand::Hash { value } => {
            let r = rpc!(client, audit.hash(proto::HashRequest { value })).await?;
            print(format, &json!({ "hash": r.hash }));
        }
    }
    Ok(())
}

/// Asks every member to recompute its chain; heads must agree. A member still applying the
/// newest batch is asked again a few times before a difference counts.
async fn verify(client: &Client, format: Format) -> CliResult {
    let members = rpc!(client, sys.members(proto::MembersRequest {})).await?.members;
    // The verify requests are audited too, so heads move while we ask: compare every member at
    // the sequence number the first one reports, waiting for members that are behind.
    let first = rpc!(client, audit.verify(proto::VerifyAuditRequest { upto_seq: 0 })).await?;
    let upto_seq = first.head_seq;
    let mut reports = Vec::new();
    for m in &members {
        let node = client.member(&m.api_addr).await?;
        let mut report = None;
        for _ in 0..20 {
            let v = rpc!(node, audit.verify(proto::VerifyAuditRequest { upto_seq })).await?;
            let caught_up = v.head_seq >= upto_seq || v.first_bad_seq != 0;
            report = Some(v);
            if caught_up {
                break;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        reports.extend(report);
    }
    let rows: Vec<Value> = reports
        .iter()
        .map(|r| {
            json!({"node": r.node_id, "head_seq": r.head_seq, "head_hash": r.head_hash, "checked": r.checked,
                   "first_bad_seq": if r.first_bad_seq == 0 { Value::Null } else { json!(r.first_bad_seq) }})
        })
        .collect();
    match format {
        Format::Table => {
            for r in &reports {
                let state = match r.first_bad_seq {
                    0 => "ok".to_string(),
                    s => format!("BROKEN at sequence {s}"),
                };
                println!(
                    "node {}: {} records checked, head {} {}: {state}",
                    r.node_id, r.checked, r.head_seq, r.head_hash
                );
            }
        }
        _ => print(format, &Value::Array(rows)),
    }
    if let Some(bad) = reports.iter().find(|r| r.first_bad_seq != 0) {
        return Err(CliError::new(format!(
            "the audit chain of node {} is broken at sequence {}: that record was altered or removed",
            bad.node_id, bad.first_bad_seq
        )));
    }
    if let Some(w) = reports.windows(2).find(|w| (w[0].head_seq, &w[0].head_hash) != (w[1].head_seq, &w[1].head_hash)) {
        return Err(CliError::new(format!(
            "nodes {} and {} hold different audit chain heads ({} vs {})",
            w[0].node_id, w[1].node_id, w[0].head_seq, w[1].head_seq
        )));
    }
    Ok(())
}
