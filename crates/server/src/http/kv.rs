//! `secret/`: KV v2 (`data/`, `delete/`, `undelete/`, `destroy/`, `metadata/`, `config`).

use std::collections::BTreeMap;

use arca_core::{
    KvSecret, MetadataSettings, MountTable, Operation, Reply, SecretData, SecretMetadata, VersionMetadata,
    DEFAULT_MAX_VERSIONS,
};
use axum::http::StatusCode;
use serde_json::{json, Map, Value};

use super::{no_content, Ctx, HttpError, HttpResult, Verb};

pub(super) async fn route(ctx: &Ctx, path: &str) -> HttpResult {
    use Verb::*;
    if path == "config" {
        return config(ctx).await;
    }
    let (kind, secret) = path.split_once('/').unwrap_or((path, ""));
    let secret = secret.to_string();
    match (kind, ctx.verb) {
        ("data", Read) => read(ctx, secret).await,
        ("data", Write) => write(ctx, secret).await,
        ("data", Patch) => patch(ctx, secret).await,
        ("data", Delete) => {
            ctx.call(Operation::KvDelete { path: secret, versions: vec![] }).await.map(|_| no_content())
        }
        ("delete", Write) => {
            ctx.call(Operation::KvDelete { path: secret, versions: versions(ctx)? }).await.map(|_| no_content())
        }
        ("undelete", Write) => {
            ctx.call(Operation::KvUndelete { path: secret, versions: versions(ctx)? }).await.map(|_| no_content())
        }
        ("destroy", Write) => {
            ctx.call(Operation::KvDestroy { path: secret, versions: versions(ctx)? }).await.map(|_| no_content())
        }
        ("metadata", Read) => {
            let m = ctx.call_as(Operation::KvMetadata { path: secret }, Reply::into_kv_metadata).await?;
            Ok(ctx.data(metadata_json(&m)))
        }
        ("metadata", Write) => write_metadata(ctx, secret, false).await,
        ("metadata", Patch) => write_metadata(ctx, secret, true).await,
        ("metadata", Delete) => ctx.call(Operation::KvDeleteMetadata { path: secret }).await.map(|_| no_content()),
        ("metadata", List) => {
            let keys = ctx.call_as(Operation::KvList { prefix: folder(secret) }, Reply::into_kv_keys).await?;
            // Vault answers an empty listing with 404.
            if keys.is_empty() {
                return Err(HttpError::new(StatusCode::NOT_FOUND, "no keys under this prefix"));
            }
            Ok(ctx.data(json!({ "keys": keys })))
        }
        ("data" | "delete" | "undelete" | "destroy" | "metadata", verb) => {
            Err(HttpError::unsupported(verb, &format!("secret/{path}")))
        }
        _ => Err(HttpError::no_route(&format!("secret/{path}"))),
    }
}

/// A listed path names a folder, with or without its trailing slash (`app` lists `app/`).
fn folder(mut prefix: String) -> String {
    if !prefix.is_empty() && !prefix.ends_with('/') {
        prefix.push('/');
    }
    prefix
}

/// Whole seconds as Go prints a duration (`0s`, `1m30s`, `3h0m0s`), as Vault writes them.
pub(super) fn go_duration(secs: i64) -> String {
    let (h, m, s) = (secs / 3600, secs % 3600 / 60, secs % 60);
    match (h, m) {
        (0, 0) => format!("{s}s"),
        (0, _) => format!("{m}m{s}s"),
        _ => format!("{h}h{m}m{s}s"),
    }
}

/// RFC 3339 with nanoseconds, UTC, as Vault writes times.
pub(super) fn time(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Nanos, true))
        .unwrap_or_default()
}

fn version_json(v: &VersionMetadata) -> Value {
    json!({
        "created_time": time(v.created_ms),
        "custom_metadata": null,
        "deletion_time": v.deleted_ms.map(time).unwrap_or_default(),
        "destroyed": v.destroyed,
        "version": v.version,
    })
}

/// A version as Vault describes it in reads and writes: with the secret's custom metadata.
fn version_with_labels(v: &VersionMetadata, custom_metadata: BTreeMap<String, String>) -> Value {
    let mut j = version_json(v);
    if !custom_metadata.is_empty() {
        j["custom_metadata"] = json!(custom_metadata);
    }
    j
}

fn metadata_json(m: &SecretMetadata) -> Value {
    let versions: Map<String, Value> = m
        .versions
        .values()
        .map(|v| {
            let mut j = version_json(v);
            if let Some(o) = j.as_object_mut() {
                o.remove("version");
                o.remove("custom_metadata");
            }
            (v.version.to_string(), j)
        })
        .collect();
    json!({
        "cas_required": m.cas_required,
        "created_time": time(m.created_ms),
        "current_metadata_version": m.metadata_version,
        "current_version": m.current_version,
        "custom_metadata": if m.custom_metadata.is_empty() { Value::Null } else { json!(m.custom_metadata) },
        "delete_version_after": go_duration(m.delete_version_after_ms / 1000),
        "max_versions": m.max_versions,
        // Arca does not take a check-and-set on metadata writes.
        "metadata_cas_required": false,
        "oldest_version": m.versions.keys().next().copied().unwrap_or(0),
        "updated_time": time(m.updated_ms),
        "versions": versions,
    })
}

async fn read(ctx: &Ctx, path: String) -> HttpResult {
    let version = match ctx.query.get("version").map(String::as_str) {
        None | Some("") | Some("0") => None,
        Some(v) => Some(v.parse::<u64>().map_err(|_| HttpError::bad_request(format!("invalid version {v:?}")))?),
    };
    let KvSecret { data, version, custom_metadata } =
        ctx.call_as(Operation::KvGet { path, version }, Reply::into_kv_secret).await?;
    let values: Map<String, Value> = data.0.iter().map(|(k, v)| (k.clone(), json!(v))).collect();
    let mut metadata = version_json(&version);
    if !custom_metadata.is_empty() {
        metadata["custom_metadata"] = json!(custom_metadata);
    }
    Ok(ctx.data(json!({ "data": values, "metadata": metadata })))
}

/// The `data` object of a write: Arca stores string values, so anything else is refused by
/// name rather than silently turned into text.
fn secret_data(value: Option<&Value>) -> Result<BTreeMap<String, Option<String>>, HttpError> {
    let Some(Value::Object(fields)) = value else {
        return Err(HttpError::bad_request("no data provided: send {\"data\": {\"key\": \"value\"}}"));
    };
    fields
        .iter()
        .map(|(k, v)| match v {
            Value::String(s) => Ok((k.clone(), Some(s.clone()))),
            Value::Null => Ok((k.clone(), None)),
            other => Err(HttpError::bad_request(format!(
                "data.{k} is {}, but Arca stores string values: send it as a string",
                match other {
                    Value::Number(_) => "a number",
                    Value::Bool(_) => "a boolean",
                    Value::Array(_) => "an array",
                    _ => "an object",
                }
            ))),
        })
        .collect()
}

fn cas(ctx: &Ctx) -> Result<Option<u64>, HttpError> {
    match ctx.body.get("options").and_then(|o| o.get("cas")) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v.as_u64().map(Some).ok_or_else(|| HttpError::bad_request("options.cas must be a whole number ≥ 0")),
    }
}

async fn put(ctx: &Ctx, path: String, data: BTreeMap<String, String>, cas: Option<u64>) -> HttpResult {
    let w = ctx.call_as(Operation::KvPut { path, data: SecretData(data), cas }, Reply::into_kv_written).await?;
    Ok(ctx.data(version_with_labels(&w.version, w.custom_metadata)))
}

async fn write(ctx: &Ctx, path: String) -> HttpResult {
    let mut data = BTreeMap::new();
    for (k, v) in secret_data(ctx.body.get("data"))? {
        let v = v.ok_or_else(|| HttpError::bad_request(format!("data.{k} is null: values must be strings")))?;
        data.insert(k, v);
    }
    put(ctx, path, data, cas(ctx)?).await
}

/// JSON merge patch of the current version (null removes a key): one core operation, so one
/// audit record and one guarded write (a concurrent write is never lost).
async fn patch(ctx: &Ctx, path: String) -> HttpResult {
    let (mut set, mut remove) = (BTreeMap::new(), Vec::new());
    for (k, v) in secret_data(ctx.body.get("data"))? {
        match v {
            Some(v) => {
                set.insert(k, v);
            }
            None => remove.push(k),
        }
    }
    let op = Operation::KvPatch { path, set: SecretData(set), remove, cas: cas(ctx)? };
    let w = ctx.call_as(op, Reply::into_kv_written).await?;
    Ok(ctx.data(version_with_labels(&w.version, w.custom_metadata)))
}

/// The `versions` field: numbers, numeric strings (the bao/vault CLI sends `["4"]`) or one
/// comma-separated string, as Vault's weak decoding takes them.
fn versions(ctx: &Ctx) -> Result<Vec<u64>, HttpError> {
    let missing = || HttpError::bad_request("missing versions: send {\"versions\": [1, 2]}");
    let items: Vec<Value> = match ctx.body.get("versions") {
        Some(Value::Array(items)) => items.clone(),
        Some(Value::String(s)) => s.split(',').map(|v| Value::String(v.trim().to_string())).collect(),
        Some(n @ Value::Number(_)) => vec![n.clone()],
        _ => return Err(missing()),
    };
    if items.is_empty() {
        return Err(HttpError::bad_request("no versions given"));
    }
    items
        .iter()
        .map(|v| {
            let n = match v {
                Value::Number(n) => n.as_u64(),
                Value::String(s) => s.trim().parse().ok(),
                _ => None,
            };
            n.ok_or_else(|| HttpError::bad_request(format!("version {v} is not a whole number")))
        })
        .collect()
}

/// `PUT secret/metadata/<path>` (settings given replace, custom metadata as a whole) and
/// `PATCH` (custom metadata merged: `null` removes a label).
async fn write_metadata(ctx: &Ctx, path: String, patch: bool) -> HttpResult {
    let delete_version_after_ms = ctx
        .duration_secs("delete_version_after")?
        .map(|s| i64::try_from(s).ok().and_then(|s| s.checked_mul(1000)))
        .map(|ms| ms.ok_or_else(|| HttpError::bad_request("delete_version_after is too long")))
        .transpose()?;
    let max_versions = match ctx.uint("max_versions")? {
        // Vault: 0 means the engine default.
        Some(0) => Some(DEFAULT_MAX_VERSIONS),
        Some(n) => Some(u32::try_from(n).map_err(|_| HttpError::bad_request("max_versions is too large"))?),
        None => None,
    };
    let custom_metadata = match ctx.body.get("custom_metadata") {
        None | Some(Value::Null) => BTreeMap::new(),
        Some(Value::Object(labels)) => labels
            .iter()
            .map(|(k, v)| match v {
                Value::String(s) => Ok((k.clone(), Some(s.clone()))),
                Value::Null if patch => Ok((k.clone(), None)),
                other => Err(HttpError::bad_request(format!("custom_metadata.{k} must be a string, got {other}"))),
            })
            .collect::<Result<_, _>>()?,
        Some(other) => {
            return Err(HttpError::bad_request(format!("custom_metadata must be an object of strings, got {other}")))
        }
    };
    let replace_custom_metadata = !patch && ctx.body.get("custom_metadata").is_some();
    let settings = MetadataSettings {
        max_versions,
        cas_required: ctx.bool("cas_required")?,
        delete_version_after_ms,
        custom_metadata,
        replace_custom_metadata,
    };
    ctx.call(Operation::KvSetMetadata { path, settings }).await.map(|_| no_content())
}

/// `secret/config`: the engine's fixed defaults, readable by whoever may see the mount.
async fn config(ctx: &Ctx) -> HttpResult {
    match ctx.verb {
        Verb::Read => {
            ctx.call(Operation::Mounts { path: Some("secret/".into()), table: MountTable::Secrets }).await?;
            Ok(ctx.data(json!({
                "cas_required": false,
                "delete_version_after": "0s",
                "max_versions": DEFAULT_MAX_VERSIONS,
                "metadata_cas_required": false,
            })))
        }
        Verb::Write => Err(HttpError::bad_request(
            "the KV engine's configuration is fixed; set max_versions per secret through secret/metadata/<path>",
        )),
        verb => Err(HttpError::unsupported(verb, "secret/config")),
    }
}
