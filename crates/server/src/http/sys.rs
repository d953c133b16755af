//! `sys/`: init, unseal, seal, health, leader, mounts, capabilities, policies, audit hash, raft
//! peers, key status.
//!
//! Why one file of about 700 lines: one short handler per Vault `sys/` endpoint, in the order of
//! the route table at its top.

use arca_core::ceremony::{self, CeremonyStatus, CeremonyStep, GenerateRootParams, RekeyParams};
use arca_core::{Error as CoreError, HealthInfo, Mount, MountTable, Operation, Reply, SealStatus, TokenRef};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use serde_json::{json, Map, Value};
use zeroize::Zeroizing;

use super::{bare, no_content, Ctx, HttpError, HttpResult, Verb};

pub(super) async fn route(ctx: &Ctx, path: &str) -> HttpResult {
    use Verb::*;
    match (path, ctx.verb) {
        ("init", Read) => {
            let status = seal_status_of(ctx).await?;
            Ok(bare(StatusCode::OK, json!({ "initialized": status.initialized })))
        }
        ("init", Write) => init(ctx).await,
        ("seal-status", Read) => Ok(bare(StatusCode::OK, seal_status_json(&seal_status_of(ctx).await?))),
        ("unseal", Write) => unseal(ctx).await,
        ("seal", Write) => ctx.call(Operation::Seal).await.map(|_| no_content()),
        ("health", Read | Head) => health(ctx).await,
        // OpenBao 2 names them generate-root-token/…, Vault generate-root/….
        ("generate-root/attempt" | "generate-root-token/attempt", Read | Write | Delete)
        | ("generate-root/update" | "generate-root-token/update", Write) => generate_root(ctx, path).await,
        ("rekey/init", Read | Write | Delete) | ("rekey/update", Write) => rekey(ctx, path).await,
        ("leader", Read) => leader(ctx).await,
        ("mounts", Read) => mounts(ctx, MountTable::Secrets).await,
        ("auth", Read) => mounts(ctx, MountTable::Auth).await,
        ("audit", Read) => mounts(ctx, MountTable::Audit).await,
        (p, verb) if p.starts_with("auth/") => enable(ctx, MountTable::Auth, &p["auth/".len()..], verb).await,
        (p, _) if p.starts_with("audit/") => Err(HttpError::bad_request(
            "Arca's audit log is built in and replicated through Raft: it is always on and cannot be enabled, \
             disabled or tuned (a local file copy is the node's [audit] mirror setting)",
        )),
        ("capabilities-self", Write) => capabilities(ctx, TokenRef::SelfToken).await,
        ("capabilities", Write) => {
            let token = ctx
                .str("token")?
                .filter(|t| !t.is_empty())
                .ok_or_else(|| HttpError::bad_request("missing token: the token whose capabilities to report"))?;
            capabilities(ctx, TokenRef::Token(Zeroizing::new(token))).await
        }
        ("capabilities-accessor", Write) => {
            let accessor = ctx.str("accessor")?.filter(|a| !a.is_empty()).ok_or_else(|| {
                HttpError::bad_request("missing accessor: the accessor of the token whose capabilities to report")
            })?;
            capabilities(ctx, TokenRef::Accessor(accessor)).await
        }
        ("storage/raft/configuration", Read) => raft_configuration(ctx).await,
        // `bao operator raft remove-peer <id>`: Vault's server ids are Arca's node ids.
        ("storage/raft/remove-peer", Write) => {
            let given = ctx.required("server_id")?;
            let id = given.parse::<u64>().map_err(|_| {
                HttpError::bad_request(format!("server_id {given:?} is not an Arca node id (a number; see list-peers)"))
            })?;
            ctx.call(Operation::RemovePeer { id }).await.map(|_| no_content())
        }
        ("leases/lookup" | "leases/renew" | "leases/revoke" | "renew" | "revoke", Write) => lease(ctx, path).await,
        (p, Write) if ["leases/renew/", "leases/revoke/", "renew/", "revoke/"].iter().any(|r| p.starts_with(r)) => {
            lease(ctx, p).await
        }
        (p, _) if p.starts_with("leases/") => Err(HttpError::bad_request(LEASES_INSTEAD)),
        ("storage/raft/join", Write) => raft_join(ctx).await,
        ("storage/raft/autopilot/state", Read) => autopilot_state(ctx).await,
        ("metrics", Read) => metrics(ctx).await,
        ("ha-status", Read) => ha_status(ctx).await,
        ("key-status", Read) => key_status(ctx).await,
        // `bao operator rotate` (OpenBao 2 posts to rotate/keyring, Vault to rotate).
        ("rotate" | "rotate/keyring", Write) => ctx.call(Operation::KeyringRotate).await.map(|_| no_content()),
        ("policy", Read | List) => list_policies(ctx, true).await,
        ("policies/acl", List) => list_policies(ctx, false).await,
        (p, _) if p.starts_with("policy/") => policy(ctx, &p["policy/".len()..], true).await,
        (p, _) if p.starts_with("policies/acl/") => policy(ctx, &p["policies/acl/".len()..], false).await,
        (p, Read) if p.starts_with("internal/ui/mounts/") => ui_mount(ctx, &p["internal/ui/mounts/".len()..]).await,
        (p, Write) if p.starts_with("audit-hash/") => audit_hash(ctx).await,
        // `bao auth tune` posts to sys/mounts/auth/<path>/tune.
        (p, verb) if p.starts_with("mounts/auth/") => {
            enable(ctx, MountTable::Auth, &p["mounts/auth/".len()..], verb).await
        }
        (p, verb) if p.starts_with("mounts/") => enable(ctx, MountTable::Secrets, &p["mounts/".len()..], verb).await,
        (
            "init"
            | "seal-status"
            | "unseal"
            | "seal"
            | "health"
            | "leader"
            | "mounts"
            | "auth"
            | "audit"
            | "capabilities-self"
            | "capabilities"
            | "capabilities-accessor"
            | "storage/raft/configuration"
            | "storage/raft/remove-peer"
            | "storage/raft/join"
            | "storage/raft/autopilot/state"
            | "metrics"
            | "ha-status"
            | "key-status"
            | "rotate"
            | "rotate/keyring"
            | "generate-root/attempt"
            | "generate-root/update"
            | "generate-root-token/attempt"
            | "generate-root-token/update"
            | "rekey/init"
            | "rekey/update",
            verb,
        ) => Err(HttpError::unsupported(verb, &format!("sys/{path}"))),
        (p, verb) if p.starts_with("internal/ui/mounts/") || p.starts_with("audit-hash/") => {
            Err(HttpError::unsupported(verb, &format!("sys/{path}")))
        }
        _ => Err(HttpError::no_route(&format!("sys/{path}"))),
    }
}

async fn seal_status_of(ctx: &Ctx) -> Result<SealStatus, HttpError> {
    let s = ctx.call_as(Operation::SealStatus, Reply::into_seal_status).await?;
    Ok(s)
}

fn seal_status_json(s: &SealStatus) -> Value {
    json!({
        "type": "shamir",
        "initialized": s.initialized,
        "sealed": s.sealed,
        "t": s.threshold,
        "n": s.shares,
        "progress": s.progress,
        "nonce": "",
        "version": env!("CARGO_PKG_VERSION"),
        "build_date": "",
        "migration": false,
        "cluster_name": "arca",
        "cluster_id": s.share_set,
        "recovery_seal": false,
        "storage_type": "raft",
    })
}

async fn init(ctx: &Ctx) -> HttpResult {
    refuse_fields(
        ctx,
        &["pgp_keys", "root_token_pgp_key", "recovery_shares", "recovery_threshold", "stored_shares"],
        "init hands out plain shares and a root token; rekey can then give each holder a PGP-encrypted share",
    )?;
    let byte = |field: &str| -> Result<u8, HttpError> {
        let n = ctx.uint(field)?.ok_or_else(|| HttpError::bad_request(format!("missing {field}")))?;
        u8::try_from(n).map_err(|_| HttpError::bad_request(format!("{field} must be at most 255")))
    };
    let op = Operation::Init { shares: byte("secret_shares")?, threshold: byte("secret_threshold")? };
    let init = ctx.call_as(op, Reply::into_init).await?;
    let keys: Vec<&str> = init.shares.iter().map(|s| s.as_str()).collect();
    Ok(bare(StatusCode::OK, json!({ "keys": keys, "keys_base64": keys, "root_token": init.root_token.as_str() })))
}

async fn unseal(ctx: &Ctx) -> HttpResult {
    let reset = ctx.bool("reset")?.unwrap_or(false);
    let key = ctx.str("key")?.unwrap_or_default();
    if key.is_empty() && !reset {
        return Err(HttpError::bad_request("missing key: send {\"key\": \"<unseal share>\"}"));
    }
    {
        let s = ctx.call_as(Operation::Unseal { share: Zeroizing::new(key), reset }, Reply::into_seal_status).await?;
        Ok(bare(StatusCode::OK, seal_status_json(&s)))
    }
}

/// Vault's ceremony verbs: `GET` the status, `PUT` the start, `DELETE` the cancel (Arca needs
/// the nonce there too, in the body or as `?nonce=`), `PUT …/update` a share with the nonce.
fn ceremony_step<P>(
    ctx: &Ctx,
    path: &str,
    start: impl FnOnce() -> Result<P, HttpError>,
) -> Result<CeremonyStep<P>, HttpError> {
    let nonce = || -> Result<Zeroizing<String>, HttpError> {
        let n = match ctx.str("nonce")? {
            Some(n) if !n.is_empty() => n,
            _ => ctx.query.get("nonce").cloned().unwrap_or_default(),
        };
        if n.is_empty() {
            return Err(HttpError::bad_request("missing nonce: the ceremony's nonce is given to whoever started it"));
        }
        Ok(Zeroizing::new(n))
    };
    Ok(match (path.ends_with("/update"), ctx.verb) {
        (true, _) => CeremonyStep::Submit { nonce: nonce()?, share: Zeroizing::new(ctx.required("key")?) },
        (false, Verb::Read) => CeremonyStep::Status,
        // Unlike Vault, anyone cannot cancel: a cancel carries the nonce (`bao … -cancel` sends
        // none, so it is refused saying how to cancel instead).
        (false, Verb::Delete) => CeremonyStep::Cancel {
            nonce: nonce().map_err(|_| {
                HttpError::bad_request(
                    "cancelling a ceremony needs its nonce, so that nobody else can end it: DELETE with ?nonce=<nonce>, \
                     or 'arca operator generate-root|rekey --cancel --nonce <nonce>'",
                )
            })?,
        },
        (false, _) => CeremonyStep::Start(start()?),
    })
}

fn refuse_fields(ctx: &Ctx, fields: &[&str], instead: &str) -> Result<(), HttpError> {
    for f in fields {
        let given =
            |v: &Value| !(v.is_null() || v == &json!("") || v == &json!(false) || v == &json!([]) || v == &json!(0));
        if ctx.body.get(*f).is_some_and(given) {
            return Err(HttpError::bad_request(format!("{f} is not supported by Arca; {instead}")));
        }
    }
    Ok(())
}

async fn generate_root(ctx: &Ctx, path: &str) -> HttpResult {
    // Vault 1.10+: a start with neither an OTP nor a PGP key gets a pad made here, returned
    // once to whoever started the ceremony (who alone can then decode the token).
    let mut made_otp = None;
    let step = ceremony_step(ctx, path, || {
        let field = |name: &str| -> Result<String, HttpError> { Ok(ctx.str(name)?.unwrap_or_default()) };
        let (mut otp, pgp_key) = (Zeroizing::new(field("otp")?), field("pgp_key")?);
        if otp.is_empty() && pgp_key.is_empty() {
            let pad = arca_core::ceremony::generate_otp()?;
            otp = pad.clone();
            made_otp = Some(pad);
        }
        Ok(GenerateRootParams::from_fields(&otp, &pgp_key)?)
    })?;
    let (status, encoded_token) = ctx.call_as(Operation::GenerateRoot(step), Reply::into_generate_root).await?;
    let encoded = encoded_token.unwrap_or_default();
    let mut body = ceremony_json(&status);
    body["encoded_token"] = json!(encoded);
    body["encoded_root_token"] = json!(encoded);
    body["pgp_fingerprint"] = json!(status.pgp_fingerprints.first().cloned().unwrap_or_default());
    body["otp_length"] = json!(status.otp_length);
    body["otp"] = json!(made_otp.as_deref().map_or("", |p| p.as_str()));
    // OpenBao 2's generate-root-token/… answer inside the usual envelope.
    if path.starts_with("generate-root-token/") {
        return Ok(ctx.data(body));
    }
    Ok(bare(StatusCode::OK, body))
}

async fn rekey(ctx: &Ctx, path: &str) -> HttpResult {
    let step = ceremony_step(ctx, path, || {
        refuse_fields(
            ctx,
            &["backup", "require_verification"],
            "keep the new shares (or their PGP-encrypted copies) with their holders yourself",
        )?;
        let byte = |field: &str| -> Result<u8, HttpError> {
            let n = ctx.uint(field)?.ok_or_else(|| HttpError::bad_request(format!("missing {field}")))?;
            u8::try_from(n).map_err(|_| HttpError::bad_request(format!("{field} must be at most 255")))
        };
        let pgp_keys = ceremony::parse_pgp_keys(&ctx.strings("pgp_keys")?.unwrap_or_default(), "pgp_keys")?;
        Ok(RekeyParams { shares: byte("secret_shares")?, threshold: byte("secret_threshold")?, pgp_keys })
    })?;
    let (status, shares) = ctx.call_as(Operation::Rekey(step), Reply::into_rekey).await?;
    let mut body = ceremony_json(&status);
    body["t"] = json!(status.new_threshold);
    body["n"] = json!(status.new_shares);
    body["pgp_fingerprints"] =
        if status.pgp_fingerprints.is_empty() { Value::Null } else { json!(status.pgp_fingerprints) };
    body["backup"] = json!(false);
    body["verification_required"] = json!(false);
    if status.complete {
        let keys: Vec<&str> = shares.iter().map(|s| s.as_str()).collect();
        // Vault's `keys` is hex; Arca's shares are base64 text, given the same in both
        // fields (a PGP-encrypted share is base64 of the OpenPGP message).
        body["keys"] = json!(keys);
        body["keys_base64"] = json!(keys);
    }
    Ok(bare(StatusCode::OK, body))
}

fn ceremony_json(s: &CeremonyStatus) -> Value {
    json!({
        "started": s.started,
        "nonce": s.nonce.clone().unwrap_or_default(),
        "progress": s.progress,
        "required": s.required,
        "complete": s.complete,
    })
}

/// Vault's `sys/health`: the status code says the node's state; query flags change the codes.
async fn health(ctx: &Ctx) -> HttpResult {
    let h: HealthInfo = ctx.call_as(Operation::Health, Reply::into_health).await?;
    // Clients send `standbyok`, `standbyok=true`, `=True` (Python) or `=1`.
    let flag =
        |name: &str| ctx.query.get(name).is_some_and(|v| v.is_empty() || v.eq_ignore_ascii_case("true") || v == "1");
    let code = |name: &str, default: u16| -> Result<StatusCode, HttpError> {
        match ctx.query.get(name) {
            None => Ok(StatusCode::from_u16(default).expect("valid default")),
            Some(v) => v
                .parse::<u16>()
                .ok()
                .and_then(|c| StatusCode::from_u16(c).ok())
                .ok_or_else(|| HttpError::bad_request(format!("{name} must be an HTTP status code, got {v:?}"))),
        }
    };
    let standby = h.initialized && !h.sealed && !h.is_leader;
    let status = if !h.initialized {
        code("uninitcode", 501)?
    } else if h.sealed {
        code("sealedcode", 503)?
    } else if standby && !flag("standbyok") {
        code("standbycode", 429)?
    } else {
        code("activecode", 200)?
    };
    if ctx.verb == Verb::Head {
        return Ok(status.into_response());
    }
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
    Ok(bare(
        status,
        json!({
            "initialized": h.initialized,
            "sealed": h.sealed,
            "standby": standby,
            "performance_standby": false,
            "replication_performance_mode": "disabled",
            "replication_dr_mode": "disabled",
            "server_time_utc": now,
            "version": env!("CARGO_PKG_VERSION"),
            "cluster_name": "arca",
            "cluster_id": "",
            "enterprise": false,
            "raft_applied_index": h.applied_index,
        }),
    ))
}

/// `sys/leader`. Vault answers it without a token, and `bao status` and `bao operator unseal`
/// ask it (usually without one). Arca keeps the cluster's addresses for callers whose token
/// may read them: without a token the answer says only whether this node leads.
async fn leader(ctx: &Ctx) -> HttpResult {
    let me = ctx.call_as(Operation::Health, Reply::into_health).await?;
    if me.sealed {
        return Err(CoreError::Sealed.into());
    }
    let leader = if ctx.token().is_none() { None } else { ctx.call_as(Operation::Leader, Reply::into_leader).await? };
    Ok(bare(
        StatusCode::OK,
        json!({
            "ha_enabled": true,
            "is_self": me.is_leader,
            "leader_address": leader.as_ref().map(|l| https(&l.api_addr)).unwrap_or_default(),
            "leader_cluster_address": leader.as_ref().map(|l| https(&l.raft_addr)).unwrap_or_default(),
            "performance_standby": false,
            "raft_applied_index": me.applied_index,
        }),
    ))
}

fn mount_json(m: &Mount, table: MountTable) -> Value {
    let accessor = match table {
        MountTable::Secrets => format!("{}_arca", m.kind),
        MountTable::Auth => format!("auth_{}_arca", m.path.trim_end_matches('/')),
        MountTable::Audit => {
            return json!({ "type": m.kind, "description": m.description, "path": m.path, "options": {}, "local": false })
        }
    };
    let mut config = json!({ "default_lease_ttl": 0, "max_lease_ttl": 0, "force_no_cache": false });
    if table == MountTable::Auth {
        config["token_type"] = json!("default-service");
    }
    json!({
        "type": m.kind,
        "description": m.description,
        "accessor": accessor,
        "config": config,
        "deprecation_status": "supported",
        "running_plugin_version": concat!("v", env!("CARGO_PKG_VERSION"), "+builtin.arca"),
        "running_sha256": "",
        "options": if m.version.is_empty() { Value::Null } else { json!({ "version": m.version }) },
        "local": false,
        "seal_wrap": false,
        "external_entropy_access": false,
        "plugin_version": "",
        "uuid": "",
    })
}

async fn mount_list(ctx: &Ctx, path: Option<&str>, table: MountTable) -> Result<Vec<Mount>, HttpError> {
    let m = ctx.call_as(Operation::Mounts { path: path.map(str::to_string), table }, Reply::into_mounts).await?;
    Ok(m)
}

/// Vault answers `sys/mounts`, `sys/auth` and `sys/audit` with the table both at the top level
/// (legacy) and under `data`. Arca's tables are fixed: what it has built in.
async fn mounts(ctx: &Ctx, table: MountTable) -> HttpResult {
    let list: Map<String, Value> =
        mount_list(ctx, None, table).await?.iter().map(|m| (m.path.clone(), mount_json(m, table))).collect();
    Ok(bare(StatusCode::OK, with_data(ctx, list)))
}

/// `bao operator raft autopilot state`: each member's health as the leader sees it, in Vault's
/// shape (ids as strings; `last_contact` as a Go duration).
async fn autopilot_state(ctx: &Ctx) -> HttpResult {
    let a = ctx.call_as(Operation::AutopilotState, Reply::into_autopilot).await?;
    let servers: Map<String, Value> = a
        .servers
        .iter()
        .map(|s| {
            let status = if s.leader {
                "leader"
            } else if s.voter {
                "voter"
            } else {
                "non-voter"
            };
            (
                s.id.to_string(),
                json!({
                    "id": s.id.to_string(),
                    "name": arca_raft::node_name(s.id),
                    "address": s.raft_addr,
                    "node_status": if s.healthy { "alive" } else { "failed" },
                    "last_contact": s.last_contact.map_or("".into(), |d| format!("{:.3}s", d.as_secs_f64())),
                    "last_term": 0,
                    "last_index": s.last_index,
                    "healthy": s.healthy,
                    "stable_since": "",
                    "status": status,
                    "meta": null,
                }),
            )
        })
        .collect();
    let voters: Vec<String> = a.servers.iter().filter(|s| s.voter).map(|s| s.id.to_string()).collect();
    Ok(ctx.data(json!({
        "healthy": a.healthy,
        "failure_tolerance": a.failure_tolerance,
        "leader": a.leader.map(|l| l.to_string()).unwrap_or_default(),
        "voters": voters,
        "servers": servers,
    })))
}

/// `bao operator raft join ADDR`, sent to a new node: it joins the cluster of the member at
/// ADDR. Arca's nodes join over the cluster port, authenticated by their cluster certificates,
/// so ADDR is a member's cluster address (`https://node1:8201` or `node1:8201`), where Vault
/// takes its API address; the TLS options are the node's `[cluster]` settings.
async fn raft_join(ctx: &Ctx) -> HttpResult {
    let given = ctx.required("leader_api_addr")?;
    let peer = given.trim_start_matches("https://").trim_start_matches("http://").trim_end_matches('/');
    let non_voter = ctx.bool("non_voter")?.unwrap_or(false);
    ctx.call(Operation::Join { peer: peer.to_string(), non_voter }).await?;
    Ok(bare(StatusCode::OK, json!({ "joined": true })))
}

/// `sys/metrics`: this node's metrics in the Prometheus text format (Vault's path and query;
/// Vault's default JSON rendering is not offered). Needs `read` on `sys/metrics`.
async fn metrics(ctx: &Ctx) -> HttpResult {
    match ctx.query.get("format").map(String::as_str) {
        None | Some("prometheus") => {}
        Some(other) => {
            return Err(HttpError::bad_request(format!(
                "format {other:?} is not offered: Arca serves metrics as format=prometheus"
            )))
        }
    }
    {
        let text = ctx.call_as(Operation::Metrics, Reply::into_metrics).await?;
        Ok((StatusCode::OK, [(axum::http::header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], text)
            .into_response())
    }
}

const LEASES_INSTEAD: &str = "Arca's only leases are tokens' (KV secrets have none: they are static and rotated in \
     place); lease lookup, renew and revoke take one token lease id, auth/<method path>/<accessor>. To find or \
     revoke many tokens, list auth/token/accessors and revoke by accessor, or revoke their parent token";

/// `sys/leases/{lookup,renew,revoke}` (and the older `sys/renew`, `sys/revoke`) for token
/// leases. A token's lease id is the path it came from and its accessor
/// (`auth/token/create/<accessor>`, `auth/approle/login/<accessor>`); each call is the token
/// operation by accessor, authorized and audited as that.
async fn lease(ctx: &Ctx, path: &str) -> HttpResult {
    let path = path.trim_start_matches("leases/");
    let (action, in_url) = path.split_once('/').unwrap_or((path, ""));
    let id = if in_url.is_empty() { ctx.required("lease_id")? } else { in_url.to_string() };
    let accessor = id
        .strip_prefix("auth/")
        .and_then(|rest| rest.rsplit_once('/'))
        .map(|(_, accessor)| accessor)
        .filter(|a| !a.is_empty())
        // Not quoted back: errors are audited, and a token pasted by mistake must not land there.
        .ok_or_else(|| HttpError::bad_request(format!("that lease id is not one Arca issued: {LEASES_INSTEAD}")))?;
    let target = TokenRef::Accessor(accessor.to_string());
    let info = match action {
        "revoke" => return ctx.call(Operation::TokenRevoke(target)).await.map(|_| no_content()),
        "renew" => {
            let increment = ctx.duration_secs("increment")?.filter(|s| *s > 0).map(std::time::Duration::from_secs);
            ctx.call(Operation::TokenRenew { target, increment }).await?
        }
        _ => ctx.call(Operation::TokenLookup(target)).await?,
    };
    let info = info.into_token()?;
    let id = format!("{}/{}", super::auth::token_path(&info), info.accessor);
    let ttl = super::auth::secs_until(info.expires_ms);
    if action == "renew" {
        return Ok(bare(
            StatusCode::OK,
            json!({
                "request_id": ctx.request_id,
                "lease_id": id,
                "renewable": info.renewable,
                "lease_duration": ttl,
                "data": null,
                "wrap_info": null,
                "warnings": null,
                "auth": null,
            }),
        ));
    }
    Ok(ctx.data(json!({
        "id": id,
        "issue_time": super::kv::time(info.created_ms),
        "expire_time": info.expires_ms.map(super::kv::time),
        "last_renewal": null,
        "renewable": info.renewable,
        "ttl": ttl,
    })))
}

/// `bao auth enable` / `bao secrets enable` (and disable, tune). Arca's mounts are built in:
/// enabling one that exists, at its own path and of its own type, succeeds without change (so
/// setup scripts written for Vault run), for a caller who may read the mount table; anything
/// else is refused with what Arca has instead.
async fn enable(ctx: &Ctx, table: MountTable, path: &str, verb: Verb) -> HttpResult {
    let (what, fixed) = match table {
        MountTable::Auth => (
            "auth method",
            "Arca's auth methods (token, approle, cert, jwt, kubernetes) are built in, each at its own path: \
             they are always on and cannot be moved, disabled or tuned; to stop logins through one, delete its \
             roles",
        ),
        _ => (
            "secrets engine",
            "Arca has one secrets engine, KV v2 at secret/: it cannot be mounted elsewhere, moved, disabled or \
             tuned; use paths under secret/ (with policies per prefix) where Vault would use another mount",
        ),
    };
    let path = path.trim_end_matches('/');
    if verb != Verb::Write || path.is_empty() || path.contains('/') {
        return Err(HttpError::bad_request(fixed));
    }
    let kind = ctx.str("type")?.unwrap_or_default();
    let version = ctx.body.get("options").and_then(|o| o.get("version")).and_then(|v| match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    });
    let existing = mount_list(ctx, None, table).await?;
    let same = existing.iter().find(|m| m.path.trim_end_matches('/') == path).is_some_and(|m| {
        let kind_matches = kind == m.kind || (m.kind == "kv" && m.version == "2" && kind == "kv-v2");
        let version_matches = kind == "kv-v2" || version.as_deref().is_none_or(|v| v == m.version);
        kind_matches && version_matches
    });
    if same {
        return Ok(no_content());
    }
    Err(HttpError::bad_request(format!("cannot enable the {what} {kind:?} at {path}/: {fixed}")))
}

/// The mount serving `path` (the Vault CLI asks before every `kv` command, to detect KV v2).
async fn ui_mount(ctx: &Ctx, path: &str) -> HttpResult {
    let mounts = mount_list(ctx, Some(path), MountTable::Secrets).await?;
    let m = mounts.first().ok_or_else(|| HttpError::no_route(path))?;
    let mut data = mount_json(m, MountTable::Secrets);
    data["path"] = json!(m.path);
    Ok(ctx.data(data))
}

/// `sys/capabilities-self`, `sys/capabilities` (another token's, in `token`) and
/// `sys/capabilities-accessor`: each path's capabilities, and `capabilities` alone for one path.
async fn capabilities(ctx: &Ctx, target: TokenRef) -> HttpResult {
    let paths = match ctx.strings("paths")? {
        Some(p) if !p.is_empty() => p,
        _ => ctx.strings("path")?.filter(|p| !p.is_empty()).ok_or_else(|| HttpError::bad_request("missing paths"))?,
    };
    let caps = ctx.call_as(Operation::Capabilities { target, paths }, Reply::into_capabilities).await?;
    let mut data: Map<String, Value> = caps.iter().map(|(p, c)| (p.clone(), json!(c))).collect();
    if let [(_, only)] = caps.as_slice() {
        data.insert("capabilities".into(), json!(only));
    }
    Ok(bare(StatusCode::OK, with_data(ctx, data)))
}

async fn members(ctx: &Ctx) -> Result<Vec<arca_core::Member>, HttpError> {
    let m = ctx.call_as(Operation::Members, Reply::into_members).await?;
    Ok(m)
}

/// A node address as Vault reports it (`https://host:port`), or empty when unknown.
fn https(addr: &str) -> String {
    if addr.is_empty() {
        String::new()
    } else {
        format!("https://{addr}")
    }
}

/// Vault's raft peer list (`bao operator raft list-peers`), from the cluster's members.
async fn raft_configuration(ctx: &Ctx) -> HttpResult {
    let servers: Vec<Value> = members(ctx)
        .await?
        .iter()
        .map(|m| {
            json!({
                "node_id": m.id.to_string(),
                "address": m.raft_addr,
                "leader": m.leader,
                "voter": m.voter,
                "protocol_version": "3",
            })
        })
        .collect();
    Ok(ctx.data(json!({ "config": { "servers": servers, "index": 0 } })))
}

/// Vault's HA status (`bao operator members`), from the cluster's members.
async fn ha_status(ctx: &Ctx) -> HttpResult {
    let nodes: Vec<Value> = members(ctx)
        .await?
        .iter()
        .map(|m| {
            json!({
                "hostname": arca_raft::node_name(m.id),
                "api_address": https(&m.api_addr),
                "cluster_address": https(&m.raft_addr),
                "active_node": m.leader,
                "last_echo": null,
                "version": env!("CARGO_PKG_VERSION"),
            })
        })
        .collect();
    let mut fields = Map::new();
    fields.insert("nodes".into(), json!(nodes));
    Ok(bare(StatusCode::OK, with_data(ctx, fields)))
}

/// Vault's `sys/key-status`: the active keyring term and when it was made. Arca does not count
/// encryptions per term (`encryptions` is 0); a cluster initialized before install times were
/// kept reports the epoch until its next rotation.
async fn key_status(ctx: &Ctx) -> HttpResult {
    let k = ctx.call_as(Operation::KeyringStatus, Reply::into_keyring).await?;
    let mut fields = Map::new();
    fields.insert("term".into(), json!(k.active_term));
    fields.insert("install_time".into(), json!(super::kv::time(k.active_since_ms.unwrap_or(0))));
    fields.insert("encryptions".into(), json!(0));
    Ok(bare(StatusCode::OK, with_data(ctx, fields)))
}

/// `sys/policy` (Vault's older shape: `policies` and `rules`) and `sys/policies/acl` (`keys`,
/// `policy`) over the same policies.
async fn list_policies(ctx: &Ctx, legacy: bool) -> HttpResult {
    let names = ctx.call_as(Operation::PolicyList, Reply::into_names).await?;
    if legacy {
        return Ok(bare(
            StatusCode::OK,
            json!({ "policies": names, "keys": names, "data": { "policies": names, "keys": names } }),
        ));
    }
    Ok(ctx.data(json!({ "keys": names })))
}

async fn policy(ctx: &Ctx, name: &str, legacy: bool) -> HttpResult {
    match ctx.verb {
        Verb::Read => {
            let (name, text) =
                ctx.call_as(Operation::PolicyRead { name: name.to_string() }, Reply::into_policy).await?;
            if legacy {
                let both = json!({ "name": name, "rules": text, "data": { "name": name, "rules": text } });
                return Ok(bare(StatusCode::OK, both));
            }
            Ok(ctx.data(json!({ "name": name, "policy": text })))
        }
        Verb::Write => {
            let text = match ctx.str("policy")? {
                Some(t) => t,
                None => ctx.str("rules")?.ok_or_else(|| HttpError::bad_request("missing policy"))?,
            };
            ctx.call(Operation::PolicyWrite { name: name.to_string(), text }).await?;
            Ok(no_content())
        }
        // Vault: deleting a policy that does not exist succeeds (DELETE is idempotent).
        Verb::Delete => match ctx.call(Operation::PolicyDelete { name: name.to_string() }).await {
            Ok(_) => Ok(no_content()),
            Err(e) if e.status == StatusCode::NOT_FOUND => Ok(no_content()),
            Err(e) => Err(e),
        },
        verb => Err(HttpError::unsupported(verb, name)),
    }
}

async fn audit_hash(ctx: &Ctx) -> HttpResult {
    let input = ctx.str("input")?.ok_or_else(|| HttpError::bad_request("missing input"))?;
    let hash = ctx.call_as(Operation::AuditHash { value: Zeroizing::new(input) }, Reply::into_hash).await?;
    Ok(bare(StatusCode::OK, json!({ "hash": hash, "data": { "hash": hash } })))
}

/// The shape of Vault's older `sys/` replies: the fields at the top level and again under
/// `data`.
fn with_data(ctx: &Ctx, fields: Map<String, Value>) -> Value {
    let mut body = fields.clone();
    body.insert("data".into(), Value::Object(fields));
    body.insert("request_id".into(), json!(ctx.request_id));
    Value::Object(body)
}
