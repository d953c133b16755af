//! The local cache endpoint: a loopback listener answering the Vault KV v2 read API
//! (`GET /v1/<mount>/data/<path>[?version=N]`) from the agent's cache, which a watch empties
//! the moment a secret changes. `curl` or hvac in the application's container reads secrets
//! without a token of its own; only the configured prefixes are served.

use std::sync::Arc;

use arca_client::{CacheConfig, Client, Code, Error as ClientError, SecretCache, Which};
use axum::extract::{Path, State};
use axum::http::{StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{json, Value};
use tracing::{info, warn};

use crate::config::ListenerConfig;
use crate::{Error, Result};

struct Served {
    cache: SecretCache,
    prefixes: Vec<String>,
}

/// Binds the listener and serves until the task is dropped.
pub async fn serve(client: &Client, config: &ListenerConfig) -> Result<tokio::task::JoinHandle<()>> {
    let cache = client.secret_cache(CacheConfig { watch: config.paths.clone(), ..Default::default() })?;
    let served = Arc::new(Served { cache, prefixes: config.paths.clone() });
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

async fn read(State(served): State<Arc<Served>>, Path(path): Path<String>, uri: Uri) -> Response {
    if path.split('/').any(|s| s == ".." || s == ".") || !served.prefixes.iter().any(|p| path.starts_with(p.as_str())) {
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
        Err(e) => refuse(StatusCode::SERVICE_UNAVAILABLE, &e.to_string()),
    }
}
