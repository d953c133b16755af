//! `arca status`, `arca operator …` and `arca token …`.

use std::io::IsTerminal;

use arca_server::proto;
use clap::Subcommand;
use serde_json::json;

use super::output::print;
use super::{CliError, CliResult, Client, Format};

#[derive(Subcommand)]
pub enum OperatorCommand {
    /// Initialize a new cluster: prints the unseal shares and the initial root token.
    Init {
        #[arg(long, default_value_t = 5)]
        key_shares: u32,
        #[arg(long, default_value_t = 3)]
        key_threshold: u32,
    },
    /// Provide one unseal share to the node at ARCA_ADDR (prompted without echo if omitted).
    Unseal {
        share: Option<String>,
        /// Discard the shares provided so far.
        #[arg(long)]
        reset: bool,
    },
    /// Seal the node at ARCA_ADDR: it erases its keys and serves nothing until unsealed.
    Seal,
    /// List the cluster's members.
    Members,
    /// Make the node at ARCA_ADDR join the cluster of the node at PEER (its cluster address).
    Join { peer: String },
    /// Remove a node from the cluster.
    RemovePeer { id: u64 },
}

#[derive(Subcommand)]
pub enum TokenCommand {
    /// Create a token.
    Create {
        /// Policy to attach (repeatable).
        #[arg(long = "policy")]
        policies: Vec<String>,
        /// Lifetime, e.g. 30s, 15m, 1h, 7d. Default: no expiry.
        #[arg(long)]
        ttl: Option<String>,
        #[arg(long, default_value = "")]
        display_name: String,
    },
    /// Show the calling token's properties.
    Lookup,
    /// Revoke a token (the calling token if none given).
    Revoke { token: Option<String> },
}

fn seal_json(s: &proto::SealStatusResponse) -> serde_json::Value {
    json!({
        "initialized": s.initialized, "sealed": s.sealed, "threshold": s.threshold,
        "shares": s.shares, "progress": s.progress, "share_set": s.share_set, "node_id": s.node_id,
    })
}

pub async fn status(client: &Client, format: Format) -> CliResult {
    let seal = client.sys().seal_status(client.req(proto::SealStatusRequest {})).await?.into_inner();
    let health = client.sys().health(client.req(proto::HealthRequest {})).await?.into_inner();
    let mut v = seal_json(&seal);
    v["leader_id"] = json!(health.leader_id);
    v["is_leader"] = json!(health.is_leader);
    v["applied_index"] = json!(health.applied_index);
    v["version"] = json!(health.version);
    print(format, &v);
    Ok(())
}

pub async fn run(cmd: OperatorCommand, client: &Client, format: Format) -> CliResult {
    match cmd {
        OperatorCommand::Init { key_shares, key_threshold } => {
            let req = proto::InitRequest { shares: key_shares, threshold: key_threshold };
            let init = client.sys().init(client.req(req)).await?.into_inner();
            match format {
                Format::Json => print(
                    format,
                    &json!({"shares": init.shares, "threshold": init.threshold, "root_token": init.root_token}),
                ),
                Format::Table => {
                    for (i, s) in init.shares.iter().enumerate() {
                        println!("Unseal share {}: {s}", i + 1);
                    }
                    println!("\nInitial root token: {}\n", init.root_token);
                    println!(
                        "The cluster is initialized with {} shares and a threshold of {}. Every node starts sealed:\n\
                         unseal each one with {} different shares ('arca operator unseal'). Store the shares apart;\n\
                         they are shown only now.",
                        init.shares.len(),
                        init.threshold,
                        init.threshold
                    );
                }
            }
        }
        OperatorCommand::Unseal { share, reset } => {
            let share = match (share, reset) {
                (_, true) => String::new(),
                (Some(s), false) => s,
                (None, false) => prompt_share()?,
            };
            let s = client.sys().unseal(client.req(proto::UnsealRequest { share, reset })).await?.into_inner();
            print(format, &seal_json(&s));
        }
        OperatorCommand::Seal => {
            let s = client.sys().seal(client.req(proto::SealRequest {})).await?.into_inner();
            print(format, &seal_json(&s));
        }
        OperatorCommand::Members => {
            let m = client.sys().members(client.req(proto::MembersRequest {})).await?.into_inner();
            match format {
                Format::Json => print(format, &json!(m.members.iter().map(|m| json!({
                    "id": m.id, "cluster_addr": m.raft_addr, "api_addr": m.api_addr, "voter": m.voter, "leader": m.leader,
                })).collect::<Vec<_>>())),
                Format::Table => {
                    println!("{:<6} {:<24} {:<24} {:<8} LEADER", "ID", "API", "CLUSTER", "VOTER");
                    for m in m.members {
                        println!("{:<6} {:<24} {:<24} {:<8} {}", m.id, m.api_addr, m.raft_addr, m.voter, m.leader);
                    }
                }
            }
        }
        OperatorCommand::Join { peer } => {
            client.sys().join(client.req(proto::JoinRequest { peer: peer.clone() })).await?;
            println!("joined the cluster of {peer}");
        }
        OperatorCommand::RemovePeer { id } => {
            client.sys().remove_peer(client.req(proto::RemovePeerRequest { node_id: id })).await?;
            println!("removed node {id}");
        }
    }
    Ok(())
}

fn prompt_share() -> CliResult<String> {
    if !std::io::stdin().is_terminal() {
        let mut line = String::new();
        std::io::stdin().read_line(&mut line).map_err(|e| CliError::new(format!("reading the share: {e}")))?;
        return Ok(line.trim().to_string());
    }
    rpassword::prompt_password("Unseal share (input hidden): ")
        .map_err(|e| CliError::new(format!("reading the share: {e}")))
}

/// Parses `30s`, `15m`, `1h`, `7d`.
fn parse_ttl(s: &str) -> CliResult<u64> {
    let (num, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: u64 =
        num.parse().map_err(|_| CliError::usage(format!("invalid --ttl {s:?}: expected e.g. 30s, 15m, 1h, 7d")))?;
    let mult = match unit {
        "" | "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86400,
        _ => return Err(CliError::usage(format!("invalid --ttl unit {unit:?}: use s, m, h or d"))),
    };
    Ok(n * mult)
}

fn token_json(t: &proto::TokenInfo) -> serde_json::Value {
    json!({
        "accessor": t.accessor, "policies": t.policies, "display_name": t.display_name,
        "created_ms": t.created_ms, "expires_ms": if t.expires_ms == 0 { serde_json::Value::Null } else { json!(t.expires_ms) },
    })
}

pub async fn token(cmd: TokenCommand, client: &Client, format: Format) -> CliResult {
    match cmd {
        TokenCommand::Create { policies, ttl, display_name } => {
            let ttl_seconds = ttl.as_deref().map(parse_ttl).transpose()?.unwrap_or(0);
            let req = proto::CreateTokenRequest { policies, ttl_seconds, display_name };
            let created = client.tokens().create(client.req(req)).await?.into_inner();
            let mut v = created.info.as_ref().map(token_json).unwrap_or_default();
            v["token"] = json!(created.token);
            print(format, &v);
        }
        TokenCommand::Lookup => {
            let t = client.tokens().lookup_self(client.req(proto::LookupSelfRequest {})).await?.into_inner();
            print(format, &token_json(&t));
        }
        TokenCommand::Revoke { token } => {
            client.tokens().revoke(client.req(proto::RevokeRequest { token: token.unwrap_or_default() })).await?;
            println!("token revoked");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ttl_units() {
        assert_eq!(parse_ttl("30s").ok(), Some(30));
        assert_eq!(parse_ttl("15m").ok(), Some(900));
        assert_eq!(parse_ttl("2d").ok(), Some(172800));
        assert!(parse_ttl("1w").is_err());
        assert!(parse_ttl("h").is_err());
    }
}
