//! `arca kv …`.

use std::collections::HashMap;
use std::io::Read;

use arca_client::raw::proto;
use clap::Subcommand;
use serde_json::json;

use super::output::{date, print};
use super::{CliError, CliResult, Client, Format};

#[derive(Subcommand)]
pub enum KvCommand {
    /// Write a new version: `k=v` pairs, `k=@file` to read a value from a file, or `-` to read a
    /// JSON object from stdin.
    Put {
        path: String,
        #[arg(required = true)]
        pairs: Vec<String>,
        /// Check-and-set: 0 = only create, N = only if the current version is N.
        #[arg(long)]
        cas: Option<u64>,
    },
    /// Read a secret (the current version unless --version).
    Get {
        path: String,
        #[arg(long, conflicts_with = "stage")]
        version: Option<u64>,
        /// Read the version labelled current, pending or previous (rotation stages).
        #[arg(long)]
        stage: Option<String>,
        /// Print only this field's value.
        #[arg(long)]
        field: Option<String>,
    },
    /// List the keys under a prefix.
    List {
        #[arg(default_value = "")]
        prefix: String,
    },
    /// Soft-delete versions (default: the current one).
    Delete {
        path: String,
        #[arg(long, value_delimiter = ',')]
        versions: Vec<u64>,
    },
    /// Restore soft-deleted versions.
    Undelete {
        path: String,
        #[arg(long, value_delimiter = ',', required = true)]
        versions: Vec<u64>,
    },
    /// Remove the data of versions for good.
    Destroy {
        path: String,
        #[arg(long, value_delimiter = ',', required = true)]
        versions: Vec<u64>,
    },
    /// Secret metadata.
    #[command(subcommand)]
    Metadata(MetadataCommand),
}

#[derive(Subcommand)]
pub enum MetadataCommand {
    /// Show versions and their state.
    Get { path: String },
    /// Set how many versions to keep.
    Put {
        path: String,
        #[arg(long)]
        max_versions: u32,
    },
}

fn parse_pairs(pairs: &[String]) -> CliResult<HashMap<String, String>> {
    if pairs == ["-"] {
        let mut text = String::new();
        std::io::stdin().read_to_string(&mut text).map_err(|e| CliError::new(format!("reading stdin: {e}")))?;
        let value: serde_json::Value =
            serde_json::from_str(&text).map_err(|e| CliError::usage(format!("stdin is not JSON: {e}")))?;
        let obj = value.as_object().ok_or_else(|| CliError::usage("stdin must hold a JSON object"))?;
        return obj
            .iter()
            .map(|(k, v)| match v {
                serde_json::Value::String(s) => Ok((k.clone(), s.clone())),
                other => Ok((k.clone(), other.to_string())),
            })
            .collect();
    }
    pairs
        .iter()
        .map(|p| {
            let (k, v) = p.split_once('=').ok_or_else(|| CliError::usage(format!("{p:?} is not key=value")))?;
            if k.is_empty() {
                return Err(CliError::usage(format!("{p:?} has an empty key")));
            }
            let v = match v.strip_prefix('@') {
                Some(file) => std::fs::read_to_string(file)
                    .map_err(|e| CliError::new(format!("cannot read {file} for key {k}: {e}")))?,
                None => v.to_string(),
            };
            Ok((k.to_string(), v))
        })
        .collect()
}

fn version_json(v: &proto::VersionMetadata) -> serde_json::Value {
    json!({
        "version": v.version, "created_ms": v.created_ms,
        "deleted_ms": if v.deleted_ms == 0 { serde_json::Value::Null } else { json!(v.deleted_ms) },
        "destroyed": v.destroyed,
    })
}

fn print_metadata(format: Format, m: &proto::SecretMetadata) {
    match format {
        Format::Json | Format::Jsonl => print(
            format,
            &json!({
                "path": m.path, "current_version": m.current_version, "max_versions": m.max_versions,
                "created_ms": m.created_ms, "updated_ms": m.updated_ms,
                "pending_version": if m.pending_version == 0 { serde_json::Value::Null } else { json!(m.pending_version) },
                "previous_version": if m.previous_version == 0 { serde_json::Value::Null } else { json!(m.previous_version) },
                "versions": m.versions.iter().map(version_json).collect::<Vec<_>>(),
            }),
        ),
        Format::Table => {
            println!("path             {}", m.path);
            println!("current_version  {}", m.current_version);
            println!("max_versions     {}", m.max_versions);
            if m.pending_version != 0 {
                println!("pending_version  {}", m.pending_version);
            }
            if m.previous_version != 0 {
                println!("previous_version {}", m.previous_version);
            }
            println!("\n{:<8} {:<21} {:<21} DESTROYED", "VERSION", "CREATED", "DELETED");
            for v in &m.versions {
                println!("{:<8} {:<21} {:<21} {}", v.version, date(v.created_ms), date(v.deleted_ms), v.destroyed);
            }
        }
    }
}

pub async fn run(cmd: KvCommand, client: &Client, format: Format) -> CliResult {
    match cmd {
        KvCommand::Put { path, pairs, cas } => {
            let data = parse_pairs(&pairs)?;
            let v = rpc!(client, kv.put(proto::PutRequest { path, data, cas })).await?;
            print(format, &version_json(&v));
        }
        KvCommand::Get { path, version, stage, field } => {
            let req = proto::GetRequest {
                path: path.clone(),
                version: version.unwrap_or(0),
                stage: stage.unwrap_or_default(),
            };
            let got = rpc!(client, kv.get(req)).await?;
            if let Some(f) = field {
                let v = got.data.get(&f).ok_or_else(|| CliError::new(format!("secret {path} has no field {f:?}")))?;
                println!("{v}");
                return Ok(());
            }
            let data: serde_json::Map<String, serde_json::Value> =
                got.data.into_iter().map(|(k, v)| (k, json!(v))).collect();
            match format {
                Format::Json | Format::Jsonl => {
                    print(format, &json!({"data": data, "metadata": got.metadata.as_ref().map(version_json)}))
                }
                Format::Table => print(format, &serde_json::Value::Object(data.into_iter().collect())),
            }
        }
        KvCommand::List { prefix } => {
            let keys = rpc!(client, kv.list(proto::ListRequest { prefix })).await?.keys;
            print(format, &json!(keys));
        }
        KvCommand::Delete { path, versions } => {
            print_metadata(format, &rpc!(client, kv.delete(proto::VersionsRequest { path, versions })).await?);
        }
        KvCommand::Undelete { path, versions } => {
            print_metadata(format, &rpc!(client, kv.undelete(proto::VersionsRequest { path, versions })).await?);
        }
        KvCommand::Destroy { path, versions } => {
            print_metadata(format, &rpc!(client, kv.destroy(proto::VersionsRequest { path, versions })).await?);
        }
        KvCommand::Metadata(MetadataCommand::Get { path }) => {
            print_metadata(format, &rpc!(client, kv.get_metadata(proto::MetadataRequest { path })).await?);
        }
        KvCommand::Metadata(MetadataCommand::Put { path, max_versions }) => {
            let req = proto::SetMaxVersionsRequest { path, max_versions };
            print_metadata(format, &rpc!(client, kv.set_max_versions(req)).await?);
        }
    }
    Ok(())
}
