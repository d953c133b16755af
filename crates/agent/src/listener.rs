//! The local cache endpoint: a loopback listener answering the Vault KV v2 read API
//! (`GET /v1/<mount>/data/<path>[?version=N]`) from the agent's cache, which a watch empties
//! the moment a secret changes. `curl` or hvac in the application's container reads secrets
//! without a token of its own; only the configured folders and paths are served, only to
//! requests that name a loopback host (a DNS-rebinding page names its own) and, unless
//! configured otherwise, carry `X-Vault-Request: true` (which a forged request from the
//! application's own URL fetching cannot add).

use std::sync::Arc;

use arca_client::{CacheConfig, Client, Code, Error as ClientError, SecretCache, Which};
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{json, Value};
use tracing::{info, warn};

use crate::config::ListenerConfig;
use crate::{Error, Result};

struct Served {
    cache: SecretCache,
    /// Folders (ending in `/`) and exact secret paths.
    paths: Vec<String>,
    require_request_header: bool,
}

/// Whether `path` is under one of the folders (ending in `/`) or is one of the exact paths.
fn serves(paths: &[String], path: &str) -> bool {
    !path.split('/').any(|s| s == ".." || s == "." || s.is_empty())
        && paths.iter().any(|p| if p.ends_with('/') { path.starts_with(p.as_str()) } else { path == p })
}

/// Whether the request names a loopback host (`127.0.0.1:8100`, `localhost:8100`, `[::1]:8100`).
fn loopback_host(headers: &HeaderMap) -> bool {
    let Some(host) = headers.get(header::HOST).and_then(|h| h.to_str().ok()) else { return false };
    let name = match host.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or(""),
        None => host.rsplit_once(':').map_or(host, |(h, _)| h),
    };
    name == "localhost" || name.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// Binds the listener and serves until the task is dropped.
pub async fn serve(client: &Client, config: &ListenerConfig) -> Result<tokio::task::JoinHandle<()>> {
    let cache = client.secret_cache(CacheConfig { watch: config.paths.clone(), ..Default::default() })?;
    let served =
        Arc::new(Served { cache, paths: config.paths.clone(), require_request_header: config.require_request_header });
    let app = Router::new()
        .route(&format!("/v1/{}/data/{{*path}}", config.mount), get(read))
        .route(
            "/v1/sys/health",
            get(|| async { Json(json!({"initialized": true, "sealed": false, "standby": false})) }),
        )
        .fallback(|| async {
            refuse(StatusCode::NOT_FOUND, "the agent serves only KV v2 reads of its configured paths")
        })
        .with_state(served);
    let listener = tokio::net::TcpListener::bind(config.address)
        .await
        .map_err(|e| Error::Io(format!("listener.address {}: {e}", config.address)))?;
    info!(address = %config.address, paths = ?config.paths, "local cache endpoint listening");
    Ok(tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            warn!(error = %e, "the local cache endpoint stopped");
        }
    }))
}

/// Vault's error body: `{"errors": [...]}` (empty for a secret that does not exist).
fn refuse(status: StatusCode, message: &str) -> Response {
    let errors: Vec<&str> = if message.is_empty() { vec![] } else { vec![message] };
    (status, Json(json!({ "errors": errors }))).into_response()
}

async fn read(State(served): State<Arc<Served>>, Path(path): Path<String>, uri: Uri, headers: HeaderMap) -> Response {
    if !loopback_host(&headers) {
        return refuse(StatusCode::FORBIDDEN, "permission denied: the agent answers requests for a loopback host only");
    }
    let header_ok = headers.get("x-vault-request").and_then(|v| v.to_str().ok()).is_some_and(|v| v == "true");
    if served.require_request_header && !header_ok {
        return refuse(StatusCode::PRECONDITION_FAILED, "missing the X-Vault-Request: true header");
    }
    if !serves(&served.paths, &path) {
        return refuse(StatusCode::FORBIDDEN, "permission denied: the agent does not serve this path");
    }
    let version = uri
        .query()
        .unwrap_or("")
        .split('&')
        .find_map(|kv| kv.strip_prefix("version="))
        .map(|v| v.parse::<u64>())
        .transpose();
    let which = match version {
        Ok(Some(v)) if v > 0 => Which::Version(v),
        Ok(_) => Which::Current,
        Err(_) => return refuse(StatusCode::BAD_REQUEST, "version: not a number"),
    };
    match served.cache.get_which(&path, which).await {
        Ok(secret) => {
            let data: serde_json::Map<String, Value> =
                secret.keys().filter_map(|k| Some((k.to_string(), json!(secret.get(k)?)))).collect();
            Json(json!({
                "request_id": "", "lease_id": "", "renewable": false, "lease_duration": 0,
                "data": { "data": data, "metadata": {
                    "version": secret.version(), "created_time": "", "deletion_time": "", "destroyed": false,
                    "custom_metadata": null } },
                "wrap_info": null, "warnings": null, "auth": null
            }))
            .into_response()
        }
        Err(ClientError::Status { code: Code::NotFound, .. }) => refuse(StatusCode::NOT_FOUND, ""),
        Err(ClientError::Status { code: Code::PermissionDenied, .. }) => {
            refuse(StatusCode::FORBIDDEN, "permission denied: the agent's token cannot read this path")
        }
        Err(e) => {
            warn!(path = %path, error = %e, "the local endpoint could not read a secret");
            refuse(StatusCode::SERVICE_UNAVAILABLE, "the agent cannot read this secret now; its log says why")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn folders_and_exact_paths() {
        let paths = vec!["app/".to_string(), "db/x".to_string()];
        assert!(serves(&paths, "app/db") && serves(&paths, "app/a/b") && serves(&paths, "db/x"));
        assert!(!serves(&paths, "app-other/x") && !serves(&paths, "db/xy") && !serves(&paths, "app/../db/y"));
        assert!(!serves(&paths, "app//x") && !serves(&paths, "db/x/"));
    }

    #[test]
    fn hosts_that_are_loopback() {
        let h = |host: &str| {
            let mut m = HeaderMap::new();
            m.insert(header::HOST, host.parse().unwrap());
            loopback_host(&m)
        };
        assert!(h("127.0.0.1:8100") && h("localhost:8100") && h("[::1]:8100") && h("localhost"));
        assert!(!h("evil.example:8100") && !h("10.0.0.1:8100") && !h("127.0.0.1.nip.io:8100"));
    }
}
