//! `auth/`: tokens, AppRole (roles, role ids, secret ids, login), certificate, JWT and
//! Kubernetes logins.

use std::time::Duration;

use arca_core::auth::{AppRole, Credentials, Method, RoleConfig, TokenParams};
use arca_core::{Operation, Reply, TokenCreate, TokenInfo, TokenRef};
use serde_json::{json, Value};
use zeroize::Zeroizing;

use super::kv::time;
use super::{no_content, Ctx, HttpError, HttpResult, Verb};

pub(super) async fn route(ctx: &Ctx, path: &str) -> HttpResult {
    use Verb::*;
    if let Some(rest) = path.strip_prefix("token/") {
        return token(ctx, rest).await;
    }
    if let Some(rest) = path.strip_prefix("approle/role") {
        return approle_role(ctx, rest.strip_prefix('/').unwrap_or(rest)).await;
    }
    match (path, ctx.verb) {
        ("approle/login", Write) => {
            let creds = Credentials::AppRole {
                role_id: ctx.required("role_id")?,
                secret_id: Zeroizing::new(ctx.str("secret_id")?.unwrap_or_default()),
            };
            login(ctx, creds).await
        }
        ("cert/login", Write) => {
            login(ctx, Credentials::Cert { role: ctx.str("name")?.filter(|n| !n.is_empty()) }).await
        }
        // Kubernetes service-account tokens are JWTs: the JWT method verifies them, with a
        // role that binds the service account's claims.
        ("jwt/login" | "kubernetes/login", Write) => {
            let creds = Credentials::Jwt { role: ctx.required("role")?, jwt: Zeroizing::new(ctx.required("jwt")?) };
            login(ctx, creds).await
        }
        ("approle/login" | "cert/login" | "jwt/login" | "kubernetes/login", verb) => {
            Err(HttpError::unsupported(verb, &format!("auth/{path}")))
        }
        _ => Err(HttpError::no_route(&format!("auth/{path}"))),
    }
}

/// The path a token came from, as Vault names it: `auth/token/create`, `auth/approle/login`.
pub(super) fn token_path(info: &TokenInfo) -> String {
    if info.auth.method.is_empty() || info.auth.method == "token" {
        "auth/token/create".to_string()
    } else {
        format!("auth/{}/login", info.auth.method)
    }
}

pub(super) fn secs_until(ms: Option<i64>) -> i64 {
    ms.map_or(0, |e| ((e - arca_core::now_ms()) / 1000).max(0))
}

/// Vault's `auth` block for a new or renewed token.
fn auth_block(token: Option<&str>, info: &TokenInfo) -> Value {
    let token_policies: Vec<&String> = info.policies.iter().collect();
    json!({
        "client_token": token.unwrap_or_default(),
        "accessor": info.accessor,
        "policies": token_policies,
        "token_policies": token_policies,
        "metadata": info.meta,
        "lease_duration": secs_until(info.expires_ms),
        "renewable": info.renewable,
        "entity_id": "",
        "token_type": "service",
        "orphan": info.parent.is_none(),
        "num_uses": info.uses_left.unwrap_or(0),
        "mfa_requirement": null,
    })
}

/// Vault's token lookup data.
fn lookup_json(token: Option<&str>, info: &TokenInfo) -> Value {
    json!({
        "accessor": info.accessor,
        "creation_time": info.created_ms / 1000,
        "creation_ttl": info.ttl_ms / 1000,
        "display_name": info.display_name,
        "entity_id": "",
        "expire_time": info.expires_ms.map(time),
        "explicit_max_ttl": info.max_expires_ms.map_or(0, |m| (m - info.created_ms) / 1000),
        "id": token.unwrap_or_default(),
        "issue_time": time(info.created_ms),
        "meta": info.meta,
        "num_uses": info.uses_left.unwrap_or(0),
        "orphan": info.parent.is_none(),
        "path": token_path(info),
        "policies": info.policies,
        "renewable": info.renewable,
        "ttl": secs_until(info.expires_ms),
        "type": "service",
    })
}

async fn login(ctx: &Ctx, creds: Credentials) -> HttpResult {
    let arca_core::TokenCreated { token, info } =
        ctx.call_as(Operation::Login(creds), Reply::into_token_created).await?;
    Ok(ctx.auth(auth_block(Some(&token), &info)))
}

fn target(ctx: &Ctx, action: &str) -> Result<Option<TokenRef>, HttpError> {
    Ok(match action {
        "self" => Some(TokenRef::SelfToken),
        "" => Some(TokenRef::Token(Zeroizing::new(ctx.required("token")?))),
        "accessor" => Some(TokenRef::Accessor(ctx.required("accessor")?)),
        _ => None,
    })
}

/// The token a request names (Vault echoes it back as `id` / `client_token`); never for an
/// accessor.
fn named(ctx: &Ctx, target: &TokenRef) -> Option<String> {
    match target {
        TokenRef::SelfToken => ctx.token().map(str::to_string),
        TokenRef::Token(t) => Some(t.to_string()),
        TokenRef::Accessor(_) => None,
    }
}

async fn token(ctx: &Ctx, path: &str) -> HttpResult {
    use Verb::*;
    let (action, whose) = path.split_once('-').unwrap_or((path, ""));
    match (path, ctx.verb) {
        ("create" | "create-orphan", Write) => create_token(ctx, path == "create-orphan").await,
        ("lookup-self", Read | Write) | ("lookup" | "lookup-accessor", Write) => {
            let Some(target) = target(ctx, whose)? else { return Err(HttpError::no_route(path)) };
            let named = named(ctx, &target);
            let info = ctx.call_as(Operation::TokenLookup(target), Reply::into_token).await?;
            Ok(ctx.data(lookup_json(named.as_deref(), &info)))
        }
        ("renew" | "renew-self" | "renew-accessor", Write) => {
            let Some(target) = target(ctx, whose)? else { return Err(HttpError::no_route(path)) };
            let named = named(ctx, &target);
            let increment = ctx.duration_secs("increment")?.filter(|s| *s > 0).map(Duration::from_secs);
            let info = ctx.call_as(Operation::TokenRenew { target, increment }, Reply::into_token).await?;
            Ok(ctx.auth(auth_block(named.as_deref(), &info)))
        }
        ("revoke-orphan", Write) => {
            let target = TokenRef::Token(Zeroizing::new(ctx.required("token")?));
            ctx.call(Operation::TokenRevokeOrphan(target)).await?;
            Ok(no_content())
        }
        ("revoke" | "revoke-self" | "revoke-accessor", Write) => {
            let Some(target) = target(ctx, whose)? else { return Err(HttpError::no_route(path)) };
            ctx.call(Operation::TokenRevoke(target)).await?;
            Ok(no_content())
        }
        (_, verb) if matches!(action, "create" | "lookup" | "renew" | "revoke") => {
            Err(HttpError::unsupported(verb, &format!("auth/token/{path}")))
        }
        _ => Err(HttpError::no_route(&format!("auth/token/{path}"))),
    }
}

async fn create_token(ctx: &Ctx, orphan: bool) -> HttpResult {
    let meta = match ctx.body.get("meta") {
        None | Some(Value::Null) => Default::default(),
        Some(Value::Object(m)) => m
            .iter()
            .map(|(k, v)| match v {
                Value::String(s) => Ok((k.clone(), s.clone())),
                other => Err(HttpError::bad_request(format!("meta.{k} must be a string, got {other}"))),
            })
            .collect::<Result<_, _>>()?,
        Some(other) => Err(HttpError::bad_request(format!("meta must be an object, got {other}")))?,
    };
    let spec = TokenCreate {
        policies: ctx.strings("policies")?.unwrap_or_default(),
        // A periodic token (Vault's `period`): its TTL is the period and every renewal grants
        // the period again, up to Arca's maximum lifetime (only root tokens live forever).
        ttl: ctx
            .duration_secs("period")?
            .filter(|s| *s > 0)
            .or(ctx.duration_secs("ttl")?.filter(|s| *s > 0))
            .map(Duration::from_secs),
        max_ttl: ctx.duration_secs("explicit_max_ttl")?.filter(|s| *s > 0).map(Duration::from_secs),
        display_name: ctx.str("display_name")?.unwrap_or_default(),
        meta,
        orphan: orphan || ctx.bool("no_parent")?.unwrap_or(false),
        no_default_policy: ctx.bool("no_default_policy")?.unwrap_or(false),
        renewable: ctx.bool("renewable")?.unwrap_or(true),
        num_uses: u32::try_from(ctx.uint("num_uses")?.unwrap_or(0))
            .map_err(|_| HttpError::bad_request("num_uses is too large"))?,
    };
    let arca_core::TokenCreated { token, info } =
        ctx.call_as(Operation::TokenCreate(spec), Reply::into_token_created).await?;
    Ok(ctx.auth(auth_block(Some(&token), &info)))
}

async fn approle_role(ctx: &Ctx, path: &str) -> HttpResult {
    use Verb::*;
    if path.is_empty() {
        return match ctx.verb {
            List => {
                let keys = ctx.call_as(Operation::RoleList { method: Method::AppRole }, Reply::into_names).await?;
                Ok(ctx.data(json!({ "keys": keys })))
            }
            verb => Err(HttpError::unsupported(verb, "auth/approle/role")),
        };
    }
    let (name, sub) = path.split_once('/').unwrap_or((path, ""));
    let name = name.to_string();
    match (sub, ctx.verb) {
        ("", Read) => match ctx
            .call_as(Operation::RoleRead { method: Method::AppRole, name: name.clone() }, Reply::into_role)
            .await?
        {
            RoleConfig::AppRole(r) => Ok(ctx.data(json!({
                "bind_secret_id": true,
                "secret_id_bound_cidrs": r.bound_cidrs,
                "secret_id_num_uses": r.secret_id_num_uses,
                "secret_id_ttl": r.secret_id_ttl_secs,
                "token_policies": r.token.policies,
                "token_ttl": r.token.ttl_secs,
                "token_max_ttl": r.token.max_ttl_secs,
                "token_explicit_max_ttl": 0,
                "token_num_uses": r.token.num_uses,
                "token_no_default_policy": false,
                "token_period": 0,
                "token_strictly_bind_ip": false,
                "token_type": "default",
                "token_bound_cidrs": [],
                "local_secret_ids": false,
            }))),
            _ => Err(HttpError::bad_request(format!("{name} is not an AppRole role"))),
        },
        ("", Write) => {
            if ctx.bool("bind_secret_id")? == Some(false) {
                return Err(HttpError::bad_request(
                    "bind_secret_id=false is not supported: AppRole logins need a secret id",
                ));
            }
            let policies = match ctx.strings("token_policies")? {
                Some(p) => p,
                None => ctx.strings("policies")?.unwrap_or_default(),
            };
            let num = |field: &str| -> Result<u32, HttpError> {
                u32::try_from(ctx.uint(field)?.unwrap_or(0))
                    .map_err(|_| HttpError::bad_request(format!("{field} is too large")))
            };
            let role = AppRole {
                name: name.clone(),
                role_id: String::new(),
                token: TokenParams {
                    policies,
                    ttl_secs: ctx.duration_secs("token_ttl")?.unwrap_or(0),
                    max_ttl_secs: ctx.duration_secs("token_max_ttl")?.unwrap_or(0),
                    num_uses: num("token_num_uses")?,
                },
                secret_id_ttl_secs: ctx.duration_secs("secret_id_ttl")?.unwrap_or(0),
                secret_id_num_uses: num("secret_id_num_uses")?,
                bound_cidrs: ctx.strings("secret_id_bound_cidrs")?.unwrap_or_default(),
            };
            ctx.call(Operation::RoleWrite(RoleConfig::AppRole(role))).await.map(|_| no_content())
        }
        ("", Delete) => ctx.call(Operation::RoleDelete { method: Method::AppRole, name }).await.map(|_| no_content()),
        ("role-id", Read) => {
            let role_id = ctx.call_as(Operation::AppRoleRoleId { name }, Reply::into_role_id).await?;
            Ok(ctx.data(json!({ "role_id": role_id })))
        }
        ("secret-id", Write) => {
            let arca_core::SecretIdIssued { secret_id, accessor, expires_ms } =
                ctx.call_as(Operation::AppRoleSecretId { name }, Reply::into_secret_id).await?;
            Ok(ctx.data(json!({
                "secret_id": secret_id.as_str(),
                "secret_id_accessor": accessor,
                "secret_id_ttl": secs_until(expires_ms),
                "secret_id_num_uses": 0,
            })))
        }
        ("" | "role-id" | "secret-id", verb) => Err(HttpError::unsupported(verb, &format!("auth/approle/role/{path}"))),
        _ => Err(HttpError::no_route(&format!("auth/approle/role/{path}"))),
    }
}
