//! `arca status` and `arca operator …`.

use std::io::IsTerminal;

use arca_client::raw::proto;
use clap::Subcommand;
use serde_json::{json, Value};

use super::output::print;
use super::{CliError, CliResult, Client, Format};

/// Autopilot queries.
#[derive(Subcommand)]
pub enum AutopilotCommand {
    /// Each member's health, last contact and log index, and the cluster's failure tolerance.
    State,
}

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
    /// Autopilot: `state` shows each member's health as the leader sees it.
    #[command(subcommand)]
    Autopilot(AutopilotCommand),
    /// Make the node at ARCA_ADDR join the cluster of the node at PEER (its cluster address).
    Join {
        peer: String,
        /// Join as a non-voting member: it replicates and serves reads (linearizable, like any
        /// member) without counting towards quorum, for read scale-out.
        #[arg(long)]
        non_voter: bool,
    },
    /// Remove a node from the cluster.
    RemovePeer { id: u64 },
    /// Backups: `save FILE`, `restore FILE [--force]`, `inspect FILE`.
    #[command(subcommand)]
    Snapshot(super::snapshot::SnapshotCommand),
    /// The generate-root ceremony on the node at ARCA_ADDR. `--init` starts it (making a
    /// one-time pad unless --otp or --pgp-key is given) and prints the nonce and the pad: keep
    /// the pad, hand the nonce to the share holders. Each runs `--nonce N` (the share is
    /// prompted without echo if omitted); the last one gets the encoded token, which only
    /// `--decode` with the pad (or `base64 -d | gpg --decrypt` with --pgp-key) turns into the
    /// root token.
    #[command(group(clap::ArgGroup::new("action").args(["init", "status", "cancel", "decode"])))]
    GenerateRoot {
        share: Option<String>,
        #[arg(long)]
        init: bool,
        #[arg(long)]
        status: bool,
        /// Discard the ceremony (needs --nonce).
        #[arg(long)]
        cancel: bool,
        /// Decode an encoded token with --otp (local: talks to no server).
        #[arg(long, value_name = "ENCODED_TOKEN")]
        decode: Option<String>,
        #[arg(long, conflicts_with = "pgp_key")]
        otp: Option<String>,
        /// With --init: encrypt the root token to this OpenPGP public key file (`gpg --export`
        /// output, binary, base64 or armored) instead of a one-time pad.
        #[arg(long, value_name = "FILE", requires = "init")]
        pgp_key: Option<std::path::PathBuf>,
        #[arg(long)]
        nonce: Option<String>,
    },
    /// Add a keyring term: new writes use it at once; the leader then rewraps older records.
    Rotate,
    /// Keyring terms and the rewrap's progress.
    KeyStatus,
    /// The rekey ceremony on the node at ARCA_ADDR: `--init` fixes the new share set and
    /// prints the nonce; each holder of a current share runs `--nonce N` (the share is prompted
    /// without echo if omitted); the last one gets the new shares. Every other node seals
    /// itself when the rekey applies: unseal each with the new shares. With `--pgp-keys`, each
    /// new share is printed encrypted to its holder's key (`base64 -d | gpg --decrypt`).
    #[command(group(clap::ArgGroup::new("action").args(["init", "status", "cancel"])))]
    Rekey {
        share: Option<String>,
        #[arg(long)]
        init: bool,
        #[arg(long)]
        status: bool,
        /// Discard the ceremony (needs --nonce).
        #[arg(long)]
        cancel: bool,
        #[arg(long)]
        nonce: Option<String>,
        #[arg(long, default_value_t = 5)]
        key_shares: u32,
        #[arg(long, default_value_t = 3)]
        key_threshold: u32,
        /// With --init: one OpenPGP public key file per new share, comma-separated, in the
        /// order the shares go out (`gpg --export` output, binary, base64 or armored).
        #[arg(long, value_name = "FILES", value_delimiter = ',', requires = "init")]
        pgp_keys: Vec<std::path::PathBuf>,
    },
}

fn seal_json(s: &proto::SealStatusResponse) -> serde_json::Value {
    json!({
        "initialized": s.initialized, "sealed": s.sealed, "threshold": s.threshold,
        "shares": s.shares, "progress": s.progress, "share_set": s.share_set, "node_id": s.node_id,
    })
}

pub async fn status(client: &Client, format: Format) -> CliResult {
    let seal = rpc!(client, sys.seal_status(proto::SealStatusRequest {})).await?;
    let health = rpc!(client, sys.health(proto::HealthRequest {})).await?;
    let mut v = seal_json(&seal);
    v["leader_id"] = json!(health.leader_id);
    v["is_leader"] = json!(health.is_leader);
    v["applied_index"] = json!(health.applied_index);
    v["version"] = json!(health.version);
    print(format, &v);
    Ok(())
}

impl OperatorCommand {
    /// Commands about the node at ARCA_ADDR (its seal, a share for it, a ceremony step it
    /// holds, its joining), which must not fail over to another member.
    pub fn is_about_one_node(&self) -> bool {
        matches!(
            self,
            OperatorCommand::Init { .. }
                | OperatorCommand::Unseal { .. }
                | OperatorCommand::Seal
                | OperatorCommand::Join { .. }
                | OperatorCommand::GenerateRoot { .. }
                | OperatorCommand::Rekey { .. }
        )
    }

    /// Commands that talk to no server (`generate-root --decode`).
    pub fn is_local(&self) -> bool {
        matches!(self, OperatorCommand::GenerateRoot { decode: Some(_), .. })
    }
}

/// Runs a command that [`OperatorCommand::is_local`]: no connection, no CA needed.
pub fn run_local(cmd: OperatorCommand, format: Format) -> CliResult {
    let OperatorCommand::GenerateRoot { decode: Some(encoded), otp, .. } = cmd else {
        return Err(CliError::new("this operator command needs a server"));
    };
    let otp = otp.ok_or_else(|| CliError::new("--decode needs the --otp the ceremony was started with"))?;
    let token = arca_core::ceremony::decode_token(&encoded, &otp).map_err(|e| CliError::new(e.to_string()))?;
    match format {
        Format::Json | Format::Jsonl => print(format, &json!({ "root_token": token.as_str() })),
        Format::Table => println!("Root token: {}", token.as_str()),
    }
    Ok(())
}

pub async fn run(cmd: OperatorCommand, client: &Client, format: Format) -> CliResult {
    match cmd {
        OperatorCommand::Init { key_shares, key_threshold } => {
            let req = proto::InitRequest { shares: key_shares, threshold: key_threshold };
            let init = rpc!(client, sys.init(req)).await?;
            match format {
                Format::Json | Format::Jsonl => print(
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
            let share = share_arg(share, reset)?;
            let s = rpc!(client, sys.unseal(proto::UnsealRequest { share, reset })).await?;
            print(format, &seal_json(&s));
        }
        OperatorCommand::Seal => {
            let s = rpc!(client, sys.seal(proto::SealRequest {})).await?;
            print(format, &seal_json(&s));
        }
        OperatorCommand::Members => {
            let m = rpc!(client, sys.members(proto::MembersRequest {})).await?;
            match format {
                Format::Json | Format::Jsonl => print(format, &json!(m.members.iter().map(|m| json!({
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
        OperatorCommand::Autopilot(AutopilotCommand::State) => {
            let s = rpc!(client, sys.autopilot_state(proto::AutopilotStateRequest {})).await?;
            let servers: Vec<Value> = s
                .servers
                .iter()
                .map(|h| {
                    let m = h.member.clone().unwrap_or_default();
                    json!({
                        "id": m.id, "cluster_addr": m.raft_addr, "api_addr": m.api_addr, "voter": m.voter,
                        "leader": m.leader, "last_contact_ms": h.last_contact_ms, "last_index": h.last_index,
                        "healthy": h.healthy,
                    })
                })
                .collect();
            match format {
                Format::Json | Format::Jsonl => print(
                    format,
                    &json!({ "healthy": s.healthy, "failure_tolerance": s.failure_tolerance, "leader": s.leader,
                             "servers": servers }),
                ),
                Format::Table => {
                    let leader = s.leader.map_or("none".to_string(), |l| l.to_string());
                    println!("healthy {}  failure tolerance {}  leader {leader}", s.healthy, s.failure_tolerance);
                    println!(
                        "{:<6} {:<24} {:<8} {:<8} {:<14} {:<10} HEALTHY",
                        "ID", "CLUSTER", "VOTER", "LEADER", "LAST CONTACT", "INDEX"
                    );
                    for h in &s.servers {
                        let m = h.member.clone().unwrap_or_default();
                        let contact = h.last_contact_ms.map_or("-".to_string(), |ms| format!("{ms} ms"));
                        println!(
                            "{:<6} {:<24} {:<8} {:<8} {:<14} {:<10} {}",
                            m.id, m.raft_addr, m.voter, m.leader, contact, h.last_index, h.healthy
                        );
                    }
                }
            }
        }
        OperatorCommand::Join { peer, non_voter } => {
            rpc!(client, sys.join(proto::JoinRequest { peer: peer.clone(), non_voter })).await?;
            println!("joined the cluster of {peer}");
        }
        OperatorCommand::Snapshot(cmd) => super::snapshot::run(cmd, client, format).await?,
        OperatorCommand::RemovePeer { id } => {
            rpc!(client, sys.remove_peer(proto::RemovePeerRequest { node_id: id })).await?;
            println!("removed node {id}");
        }
        OperatorCommand::GenerateRoot { decode: Some(_), .. } => return run_local(cmd, format),
        OperatorCommand::GenerateRoot { share, init, status, cancel, decode: None, otp, pgp_key, nonce } => {
            let mut req = proto::GenerateRootRequest::default();
            let otp = match (init, otp, &pgp_key) {
                (false, _, _) | (true, None, Some(_)) => None,
                (true, Some(pad), _) => Some(pad),
                (true, None, None) => {
                    Some(arca_core::ceremony::generate_otp().map_err(|e| CliError::new(e.to_string()))?.to_string())
                }
            };
            if init {
                req.otp = otp.clone().unwrap_or_default();
                if let Some(file) = &pgp_key {
                    req.pgp_key = read_pgp_key(file)?;
                }
                req.set_action(proto::CeremonyAction::Init);
            } else {
                let (action, nonce, share) = ceremony_step(status, cancel, nonce, share)?;
                (req.nonce, req.share) = (nonce, share);
                req.set_action(action);
            }
            let r = rpc!(client, sys.generate_root(req)).await?;
            let st = r.status.unwrap_or_default();
            let mut out = ceremony_json(&st);
            if let Some(pad) = &otp {
                out["otp"] = json!(pad.as_str());
            }
            if !r.encoded_token.is_empty() {
                out["encoded_token"] = json!(r.encoded_token);
            }
            match format {
                Format::Json | Format::Jsonl => print(format, &out),
                Format::Table => {
                    print(format, &out);
                    if init && pgp_key.is_some() {
                        println!(
                            "\nGive the nonce to the share holders. Decrypt the result with\n  \
                             echo <encoded_token> | base64 -d | gpg --decrypt"
                        );
                    } else if init {
                        println!(
                            "\nKeep the OTP to yourself; give the nonce to the share holders. Decode the result with\n  \
                             arca operator generate-root --decode <encoded_token> --otp <otp>"
                        );
                    }
                }
            }
        }
        OperatorCommand::Rotate => {
            let r = rpc!(client, sys.rotate(proto::RotateRequest {})).await?;
            print(format, &json!({"term": r.term}));
        }
        OperatorCommand::KeyStatus => {
            let r = rpc!(client, sys.key_status(proto::KeyStatusRequest {})).await?;
            print(
                format,
                &json!({
                    "terms": r.terms, "active_term": r.active_term,
                    "rewrap_target_term": r.rewrap_target_term, "rewrap_done": r.rewrap_done,
                    "rewrapped": r.rewrapped, "records_on_old_terms": r.records_on_old_terms,
                }),
            );
        }
        OperatorCommand::Rekey { share, init, status, cancel, nonce, key_shares, key_threshold, pgp_keys } => {
            let mut req = proto::RekeyRequest::default();
            if init {
                req.shares = key_shares;
                req.threshold = key_threshold;
                req.pgp_keys = pgp_keys.iter().map(|f| read_pgp_key(f)).collect::<Result<_, _>>()?;
                req.set_action(proto::CeremonyAction::Init);
            } else {
                let (action, nonce, share) = ceremony_step(status, cancel, nonce, share)?;
                (req.nonce, req.share) = (nonce, share);
                req.set_action(action);
            }
            let r = rpc!(client, sys.rekey(req)).await?;
            let mut out = ceremony_json(&r.status.unwrap_or_default());
            if !r.shares.is_empty() {
                out["shares"] = json!(r.shares);
            }
            print(format, &out);
        }
    }
    Ok(())
}

fn ceremony_json(s: &proto::CeremonyStatus) -> serde_json::Value {
    let mut v = json!({
        "started": s.started, "progress": s.progress, "required": s.required, "complete": s.complete,
    });
    if !s.nonce.is_empty() {
        v["nonce"] = json!(s.nonce);
    }
    if s.new_shares != 0 {
        v["new_shares"] = json!(s.new_shares);
        v["new_threshold"] = json!(s.new_threshold);
    }
    if !s.pgp_fingerprints.is_empty() {
        v["pgp_fingerprints"] = json!(s.pgp_fingerprints);
    }
    v
}

/// An OpenPGP public key file as the API takes it: text (base64 or armor) as it is, a binary
/// export (`gpg --export <id> > key.gpg`) in base64. The server parses and checks it.
fn read_pgp_key(file: &std::path::Path) -> Result<String, CliError> {
    let bytes = std::fs::read(file)
        .map_err(|e| CliError::new(format!("cannot read the PGP key file {}: {e}", file.display())))?;
    // A binary key never is all ASCII (its first packet tag byte has the high bit set).
    Ok(if bytes.is_ascii() {
        String::from_utf8(bytes).expect("ASCII is UTF-8")
    } else {
        use base64::Engine as _;
        base64::engine::general_purpose::STANDARD.encode(bytes)
    })
}

/// A ceremony step other than `--init`: its status, or (with the nonce) a cancel or one share.
/// Returns the action, the nonce and the share to send.
fn ceremony_step(
    status: bool,
    cancel: bool,
    nonce: Option<String>,
    share: Option<String>,
) -> CliResult<(proto::CeremonyAction, String, String)> {
    if status {
        return Ok((proto::CeremonyAction::Status, String::new(), String::new()));
    }
    let nonce = nonce.ok_or_else(|| CliError::new("--nonce is needed: ask whoever ran --init for it"))?;
    if cancel {
        Ok((proto::CeremonyAction::Cancel, nonce, String::new()))
    } else {
        Ok((proto::CeremonyAction::Update, nonce, share_arg(share, false)?))
    }
}

fn share_arg(share: Option<String>, reset: bool) -> CliResult<String> {
    match (share, reset) {
        (_, true) => Ok(String::new()),
        (Some(s), false) => Ok(s),
        (None, false) => prompt_share(),
    }
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
