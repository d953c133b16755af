//! `arca rotation …`.

use std::collections::HashMap;

use arca_client::raw::proto;
use clap::Subcommand;
use serde_json::{json, Value};

use super::output::print;
use super::{parse_duration, CliError, CliResult, Client, Format};

#[derive(Subcommand)]
pub enum RotationCommand {
    /// Set (or replace) a secret's rotation.
    Set {
        path: String,
        /// random, postgres, command or webhook.
        #[arg(long)]
        rotator: String,
        /// Interval: `30s`, `12h`, `7d`.
        #[arg(long, conflicts_with = "cron", required_unless_present = "cron")]
        every: Option<String>,
        /// Cron expression, seconds first: `0 0 3 * * *`.
        #[arg(long)]
        cron: Option<String>,
        /// Only start scheduled rotations in this daily window, HH:MM-HH:MM (UTC).
        #[arg(long, default_value = "")]
        window: String,
        /// Rotator parameter KEY=VALUE (repeatable).
        #[arg(long = "param", value_name = "KEY=VALUE")]
        params: Vec<String>,
        /// Attempts of one rotation before it is marked failed.
        #[arg(long, default_value_t = 5)]
        max_attempts: u32,
        /// The first retry's delay (doubling after): `1s`, `30s`.
        #[arg(long, default_value = "1s")]
        backoff: String,
    },
    /// Rotate now, whatever the schedule.
    Now { path: String },
    /// Last and next run, step, attempts and error; every rotation without a path.
    Status { path: Option<String> },
    /// Stop rotating a secret (its history stays).
    Disable { path: String },
    /// Command rotator functions.
    #[command(subcommand)]
    Function(FunctionCommand),
}

#[derive(Subcommand)]
pub enum FunctionCommand {
    /// Register an executable of the nodes' rotation.functions_dir by name and SHA-256 (sudo).
    Register {
        name: String,
        #[arg(long)]
        sha256: String,
    },
    List,
}

fn params(pairs: &[String]) -> CliResult<HashMap<String, String>> {
    pairs
        .iter()
        .map(|p| {
            p.split_once('=')
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .ok_or_else(|| CliError::new(format!("--param {p:?} is not KEY=VALUE")))
        })
        .collect()
}

fn status_json(s: &proto::RotationStatus) -> Value {
    let c = s.config.clone().unwrap_or_default();
    json!({
        "path": c.path, "rotator": c.rotator, "enabled": s.enabled,
        "every_ms": c.every_ms, "cron": c.cron, "window": c.window,
        "step": s.step, "rotation_id": s.rotation_id, "pending_version": s.pending_version,
        "attempts": s.attempts, "max_attempts": c.max_attempts, "retry_at_ms": s.retry_at_ms,
        "next_run_ms": s.next_run_ms, "last_started_ms": s.last_started_ms,
        "last_finished_ms": s.last_finished_ms, "rotations": s.rotations,
        "failed": s.failed, "last_error": s.last_error,
    })
}

pub async fn run(cmd: RotationCommand, client: &Client, format: Format) -> CliResult {
    match cmd {
        RotationCommand::Set { path, rotator, every, cron, window, params: pairs, max_attempts, backoff } => {
            let every_ms = match every {
                Some(_) => parse_duration("--every", every.as_deref())? * 1000,
                None => 0,
            };
            let config = proto::RotationConfig {
                path: path.clone(),
                rotator,
                params: params(&pairs)?,
                every_ms,
                cron: cron.unwrap_or_default(),
                window,
                max_attempts,
                backoff_ms: parse_duration("--backoff", Some(&backoff))? * 1000,
            };
            rpc!(client, rotation.set(config)).await?;
            println!("rotation of {path} set");
        }
        RotationCommand::Now { path } => {
            rpc!(client, rotation.now(proto::RotationPath { path: path.clone() })).await?;
            println!("rotation of {path} requested; the leader starts it within a second");
        }
        RotationCommand::Disable { path } => {
            rpc!(client, rotation.disable(proto::RotationPath { path: path.clone() })).await?;
            println!("rotation of {path} disabled");
        }
        RotationCommand::Status { path } => {
            let list =
                rpc!(client, rotation.status(proto::RotationPath { path: path.unwrap_or_default() })).await?.rotations;
            match format {
                Format::Table => {
                    println!(
                        "{:<32} {:<9} {:<8} {:<8} {:>9} {:>8} {:>20} {:>20}  error",
                        "path", "rotator", "enabled", "step", "rotations", "attempts", "last_finished", "next_run"
                    );
                    for s in &list {
                        let c = s.config.clone().unwrap_or_default();
                        println!(
                            "{:<32} {:<9} {:<8} {:<8} {:>9} {:>8} {:>20} {:>20}  {}",
                            c.path,
                            c.rotator,
                            s.enabled,
                            if s.failed && s.step == "idle" { "failed" } else { &s.step },
                            s.rotations,
                            s.attempts,
                            super::output::date(s.last_finished_ms),
                            super::output::date(s.next_run_ms),
                            s.last_error
                        );
                    }
                }
                _ => print(format, &Value::Array(list.iter().map(status_json).collect())),
            }
        }
        RotationCommand::Function(FunctionCommand::Register { name, sha256 }) => {
            rpc!(client, rotation.register_function(proto::RotationFunction { name: name.clone(), sha256 })).await?;
            println!("function {name} registered");
        }
        RotationCommand::Function(FunctionCommand::List) => {
            let list = rpc!(client, rotation.list_functions(proto::RotationAck {})).await?.functions;
            let rows: Vec<Value> = list.iter().map(|f| json!({"name": f.name, "sha256": f.sha256})).collect();
            match format {
                Format::Table => list.iter().for_each(|f| println!("{:<32} {}", f.name, f.sha256)),
                _ => print(format, &Value::Array(rows)),
            }
        }
    }
    Ok(())
}
