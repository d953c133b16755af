//! `arca policy …`.

use std::io::Read;

use arca_client::raw::proto;
use clap::Subcommand;
use serde_json::json;

use super::output::print;
use super::{CliError, CliResult, Client, Format};

#[derive(Subcommand)]
pub enum PolicyCommand {
    /// Create or replace a policy from an HCL file (`-`: stdin).
    Write { name: String, file: String },
    /// Print a policy's HCL.
    Read { name: String },
    /// List policy names.
    List,
    /// Delete a policy (tokens naming it keep the name, which then grants nothing).
    Delete { name: String },
}

fn read_source(file: &str) -> CliResult<String> {
    if file == "-" {
        let mut text = String::new();
        std::io::stdin().read_to_string(&mut text).map_err(|e| CliError::new(format!("reading stdin: {e}")))?;
        return Ok(text);
    }
    std::fs::read_to_string(file).map_err(|e| CliError::new(format!("cannot read {file}: {e}")))
}

pub async fn run(cmd: PolicyCommand, client: &Client, format: Format) -> CliResult {
    match cmd {
        PolicyCommand::Write { name, file } => {
            let policy = read_source(&file)?;
            rpc!(client, policy.write(proto::WritePolicyRequest { name: name.clone(), policy })).await?;
            println!("policy {name} written");
        }
        PolicyCommand::Read { name } => {
            let p = rpc!(client, policy.read(proto::ReadPolicyRequest { name })).await?;
            match format {
                Format::Json | Format::Jsonl => print(format, &json!({"name": p.name, "policy": p.policy})),
                Format::Table => print!("{}", p.policy),
            }
        }
        PolicyCommand::List => {
            let r = rpc!(client, policy.list(proto::ListPoliciesRequest {})).await?;
            print(format, &json!(r.names));
        }
        PolicyCommand::Delete { name } => {
            rpc!(client, policy.delete(proto::DeletePolicyRequest { name: name.clone() })).await?;
            println!("policy {name} deleted");
        }
    }
    Ok(())
}
