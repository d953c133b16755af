//! `arca token …`.

use std::collections::HashMap;

use arca_client::raw::proto;
use clap::{Args as ClapArgs, Subcommand};
use serde_json::{json, Value};

use super::output::print;
use super::{parse_duration, CliError, CliResult, Client, Format};

/// Which token a command is about: a token, an accessor, or (neither) the caller's own.
#[derive(ClapArgs)]
pub struct Target {
    /// The token (`-` reads it from stdin, keeping it out of shell history). Default: your own.
    // Its own id: `token` is the global --token/ARCA_TOKEN, which must not fill this in.
    #[arg(id = "target_token", value_name = "TOKEN")]
    token: Option<String>,
    /// Name the token by its accessor instead.
    #[arg(long, conflicts_with = "target_token")]
    accessor: Option<String>,
}

impl Target {
    fn into_proto(self) -> CliResult<proto::TokenTarget> {
        use proto::token_target::Target as T;
        let target = match (self.token, self.accessor) {
            (_, Some(a)) => Some(T::Accessor(a)),
            (Some(t), None) if t == "-" => Some(T::Token(super::read_stdin_line("token")?)),
            (Some(t), None) => Some(T::Token(t)),
            (None, None) => None,
        };
        Ok(proto::TokenTarget { target })
    }
}

#[derive(Subcommand)]
pub enum TokenCommand {
    /// Create a token: a child of yours (revoked with it) unless --orphan.
    Create {
        /// Policy to attach (repeatable). Default: your own policies.
        #[arg(long = "policy")]
        policies: Vec<String>,
        /// Lifetime, e.g. 30s, 15m, 1h, 7d. Default: the max TTL.
        #[arg(long)]
        ttl: Option<String>,
        /// Renewals never extend past this (default and ceiling: 32 days).
        #[arg(long)]
        max_ttl: Option<String>,
        #[arg(long, default_value = "")]
        display_name: String,
        /// Not revoked with the creating token.
        #[arg(long)]
        orphan: bool,
        /// Without the `default` policy (no self lookup/renew/revoke).
        #[arg(long)]
        no_default_policy: bool,
        /// Cannot be renewed.
        #[arg(long)]
        not_renewable: bool,
        /// Number of requests after which the token is revoked (0: unlimited).
        #[arg(long, default_value_t = 0)]
        uses: u32,
        /// Metadata `key=value` (repeatable).
        #[arg(long = "meta")]
        meta: Vec<String>,
    },
    /// Show a token's properties (never the token itself).
    Lookup(Target),
    /// Extend a token's expiry, up to its max TTL.
    Renew {
        #[command(flatten)]
        target: Target,
        /// By how much (default: the token's TTL).
        #[arg(long)]
        increment: Option<String>,
    },
    /// Revoke a token and every token created from it (or, with --orphan, the token alone).
    Revoke {
        #[command(flatten)]
        target: Target,
        /// Revoke only this token: its children become orphans and live on (needs sudo on
        /// auth/token/revoke-orphan).
        #[arg(long)]
        orphan: bool,
    },
    /// List the accessors of all live tokens (needs sudo).
    ListAccessors,
    /// What a token (default: yours) may do on each path.
    Capabilities {
        #[arg(required = true)]
        paths: Vec<String>,
        /// Ask about the token with this accessor.
        #[arg(long)]
        accessor: Option<String>,
    },
}

pub fn token_json(t: &proto::TokenInfo) -> Value {
    let ms = |v: i64| if v == 0 { Value::Null } else { json!(v) };
    json!({
        "accessor": t.accessor, "policies": t.policies, "display_name": t.display_name,
        "created_ms": t.created_ms, "expires_ms": ms(t.expires_ms), "max_expires_ms": ms(t.max_expires_ms),
        "renewable": t.renewable, "uses_left": t.uses_left, "parent_accessor": t.parent_accessor,
        "meta": t.meta, "auth_method": t.auth_method, "role": t.role, "identity": t.identity,
    })
}

fn pairs(items: &[String]) -> CliResult<HashMap<String, String>> {
    items
        .iter()
        .map(|p| {
            p.split_once('=')
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .ok_or_else(|| CliError::usage(format!("--meta {p:?}: expected key=value")))
        })
        .collect()
}

pub async fn run(cmd: TokenCommand, client: &Client, format: Format) -> CliResult {
    match cmd {
        TokenCommand::Create {
            policies,
            ttl,
            max_ttl,
            display_name,
            orphan,
            no_default_policy,
            not_renewable,
            uses,
            meta,
        } => {
            let req = proto::CreateTokenRequest {
                policies,
                ttl_seconds: parse_duration("--ttl", ttl.as_deref())?,
                display_name,
                max_ttl_seconds: parse_duration("--max-ttl", max_ttl.as_deref())?,
                orphan,
                no_default_policy,
                renewable: Some(!not_renewable),
                num_uses: uses,
                meta: pairs(&meta)?,
            };
            let created = rpc!(client, token.create(req)).await?;
            let mut v = created.info.as_ref().map(token_json).unwrap_or_default();
            v["token"] = json!(created.token);
            print(format, &v);
        }
        TokenCommand::Lookup(target) => {
            let t = rpc!(client, token.lookup(target.into_proto()?)).await?;
            print(format, &token_json(&t));
        }
        TokenCommand::Renew { target, increment } => {
            let req = proto::RenewRequest {
                target: Some(target.into_proto()?),
                increment_seconds: parse_duration("--increment", increment.as_deref())?,
            };
            let t = rpc!(client, token.renew(req)).await?;
            print(format, &token_json(&t));
        }
        TokenCommand::Revoke { target, orphan: false } => {
            rpc!(client, token.revoke(target.into_proto()?)).await?;
            println!("token revoked, with every token created from it");
        }
        TokenCommand::Revoke { target, orphan: true } => {
            rpc!(client, token.revoke_orphan(target.into_proto()?)).await?;
            println!("token revoked; the tokens created from it are now orphans");
        }
        TokenCommand::ListAccessors => {
            let r = rpc!(client, token.list_accessors(proto::ListAccessorsRequest {})).await?;
            print(format, &json!(r.accessors));
        }
        TokenCommand::Capabilities { paths, accessor } => {
            let target = proto::TokenTarget { target: accessor.map(proto::token_target::Target::Accessor) };
            let req = proto::CapabilitiesRequest { target: Some(target), paths };
            let r = rpc!(client, token.capabilities(req)).await?;
            let v: serde_json::Map<String, Value> =
                r.paths.into_iter().map(|p| (p.path, json!(p.capabilities.join(", ")))).collect();
            print(format, &Value::Object(v));
        }
    }
    Ok(())
}
