//! `arca policy …`.

use std::io::Read;

use arca_server::proto;
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
            client.policies().write(client.req(proto::WritePolicyRequest { name: name.clone(), policy })).await?;
            println!("policy {name} written");
        }
        PolicyCommand::Read { name } => {
            let p = client.policies().read(client.req(proto::ReadPolicyRequest { name })).await?.into_inner();
            match format {
                Format::Json | Format::Jsonl => print(format, &json!({"name": p.name, "policy": p.policy})),
                Format::Table => print!("{}", p.policy),
            }
        }
        PolicyCommand::List => {
            let r = client.policies().list(client.req(proto::ListPoliciesRequest {})).await?.into_inner();
            print(format, &json!(r.names));
        }
        PolicyCommand::Delete { name } => {
            client.policies().delete(client.req(proto::DeletePolicyRequest { name: name.clone() })).await?;
            println!("policy {name} deleted");
        }
    }
    Ok(())
}
