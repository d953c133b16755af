//! The Vault-compatible HTTP API, on the same TLS port as gRPC (requests are told apart by
//! content type; see [`serve_both`]).
//!
//! This is a second front over the same core: every handler builds an [`Operation`] and calls
//! [`Core::handle`], so authentication, policy and audit are the ones gRPC requests get. What
//! lives here is translation only: Vault's paths, verbs (including `LIST`), JSON shapes and
//! status codes. The supported surface is listed in `docs/vault-compatibility.md`.

mod auth;
mod kv;
mod snapshot;
mod sys;

use std::collections::HashMap;

use arca_core::{Core, Error as CoreError, Operation, Reply, Request};
use axum::body::Body;
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};
use tower::ServiceExt;
use tracing::{info_span, Instrument};
use zeroize::Zeroizing;

/// Largest request body accepted (Vault's default is 32 MiB; a secret here is at most 512 KiB).
pub const MAX_BODY_BYTES: usize = 1024 * 1024;

/// Serves gRPC and the Vault HTTP API from one router: `application/grpc*` requests go to the
/// gRPC services, everything else to the HTTP API.
pub(crate) fn serve_both(grpc: axum::Router, core: Core, client_ca: &[u8]) -> axum::Router {
    let http = axum::Router::new().fallback(handle).with_state(core.clone());
    let ui = crate::ui::router(core.clone(), client_ca);
    axum::Router::new().fallback(move |req: axum::extract::Request| async move {
        if crate::ui::is_ui(req.uri().path()) {
            return match ui.oneshot(req).await {
                Ok(response) => response,
                Err(never) => match never {},
            };
        }
        let is_grpc = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|ct| ct.starts_with("application/grpc"));
        if is_grpc {
            grpc_audited(grpc, core, req).await
        } else {
            match http.oneshot(req).await {
                Ok(response) => response,
                Err(never) => match never {},
            }
        }
    })
}

/// A gRPC request, with the ones refused before they reached the core (a message over the size
/// limit, an unknown method, arguments the service could not translate, too many watch
/// prefixes, a stream limit) audited as rejections, under the same rate limits as the rest.
async fn grpc_audited(grpc: axum::Router, core: Core, mut req: axum::extract::Request) -> Response {
    let seen = crate::limits::Seen::default();
    req.extensions_mut().insert(seen.clone());
    let token = crate::limits::bearer(req.headers());
    let remote = req.extensions().get::<crate::tls::ClientInfo>().and_then(|c| c.remote);
    let method = req.uri().path().to_string();
    let response = match grpc.oneshot(req).await {
        Ok(response) => response,
        Err(never) => match never {},
    };
    if seen.is_marked() {
        return response;
    }
    let Some(status) = crate::limits::grpc_error(&response) else { return response };
    let status = crate::limits::oversized(&status).unwrap_or(status);
    let rejection = arca_core::Rejection {
        token,
        remote,
        request_id: None,
        kind: "grpc".into(),
        path: method,
        outcome: crate::limits::outcome_name(status.code()).into(),
        error: status.message().to_string(),
    };
    match core.record_rejection(rejection).await {
        Ok(()) | Err(CoreError::Sealed) => status.into_http(),
        Err(refused) => crate::api::status(refused).into_http(),
    }
}

/// Vault's verbs: `LIST` is its own (or `GET ?list=true`); `PUT` and `POST` are the same.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verb {
    Read,
    Write,
    Patch,
    Delete,
    List,
    Head,
}

/// What a handler needs of the HTTP request.
pub(crate) struct Ctx {
    core: Core,
    /// Marked once the core has the request: failures before that are audited as rejections.
    seen: crate::limits::Seen,
    token: Option<Zeroizing<String>>,
    remote: Option<std::net::SocketAddr>,
    certs: Vec<Vec<u8>>,
    pub request_id: String,
    pub verb: Verb,
    pub query: HashMap<String, String>,
    pub body: Value,
}

impl Ctx {
    /// Runs `op` through the core, as a request of this HTTP caller.
    pub async fn call(&self, op: Operation) -> Result<Reply, HttpError> {
        self.seen.mark();
        let request = Request {
            token: self.token.clone(),
            remote: self.remote,
            client_certs: self.certs.clone(),
            request_id: Some(self.request_id.clone()),
            op,
        };
        self.core.handle(request).await.map_err(HttpError::from)
    }

    /// Runs `op` and takes its reply as `into` (one of `Reply::into_*`) gives it.
    pub async fn call_as<T>(&self, op: Operation, into: fn(Reply) -> arca_core::Result<T>) -> Result<T, HttpError> {
        Ok(into(self.call(op).await?)?)
    }

    /// The caller's token, for replies that name it back (Vault's `lookup-self`, `renew-self`).
    pub fn token(&self) -> Option<&str> {
        self.token.as_deref().map(String::as_str)
    }

    /// A string field of the body.
    pub fn str(&self, field: &str) -> Result<Option<String>, HttpError> {
        match self.body.get(field) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(other) => Err(HttpError::bad_request(format!("{field} must be a string, got {other}"))),
        }
    }

    pub fn required(&self, field: &str) -> Result<String, HttpError> {
        self.str(field)?.filter(|s| !s.is_empty()).ok_or_else(|| HttpError::bad_request(format!("missing {field}")))
    }

    /// A non-negative integer field (JSON number or numeric string).
    pub fn uint(&self, field: &str) -> Result<Option<u64>, HttpError> {
        match self.body.get(field) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Number(n)) => n
                .as_u64()
                .map(Some)
                .ok_or_else(|| HttpError::bad_request(format!("{field} must be a whole number ≥ 0"))),
            Some(Value::String(s)) => {
                s.parse().map(Some).map_err(|_| HttpError::bad_request(format!("{field} must be a whole number ≥ 0")))
            }
            Some(other) => Err(HttpError::bad_request(format!("{field} must be a number, got {other}"))),
        }
    }

    /// A duration field: seconds as a number, or a string like `30s`, `1h30m`.
    pub fn duration_secs(&self, field: &str) -> Result<Option<u64>, HttpError> {
        match self.body.get(field) {
            Some(Value::String(s)) if !s.is_empty() => {
                arca_core::parse_duration_secs(s).map(Some).map_err(|e| HttpError::bad_request(format!("{field}: {e}")))
            }
            Some(Value::String(_)) => Ok(None),
            _ => self.uint(field),
        }
    }

    pub fn bool(&self, field: &str) -> Result<Option<bool>, HttpError> {
        match self.body.get(field) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(Value::String(s)) if s == "true" || s == "false" => Ok(Some(s == "true")),
            Some(other) => Err(HttpError::bad_request(format!("{field} must be true or false, got {other}"))),
        }
    }

    /// A list of strings: a JSON array, or a comma-separated string (Vault takes both).
    pub fn strings(&self, field: &str) -> Result<Option<Vec<String>>, HttpError> {
        match self.body.get(field) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => {
                Ok(Some(s.split(',').map(str::trim).filter(|p| !p.is_empty()).map(String::from).collect()))
            }
            Some(Value::Array(items)) => items
                .iter()
                .map(|v| match v {
                    Value::String(s) => Ok(s.clone()),
                    other => Err(HttpError::bad_request(format!("{field} must hold strings, got {other}"))),
                })
                .collect::<Result<Vec<_>, _>>()
                .map(Some),
            Some(other) => Err(HttpError::bad_request(format!("{field} must be a list of strings, got {other}"))),
        }
    }

    /// `200` with Vault's response envelope around `data`.
    pub fn data(&self, data: Value) -> Response {
        self.envelope(data, Value::Null)
    }

    /// `200` with Vault's envelope carrying an `auth` block (logins, token creation, renewal).
    pub fn auth(&self, auth: Value) -> Response {
        self.envelope(Value::Null, auth)
    }

    fn envelope(&self, data: Value, auth: Value) -> Response {
        let body = json!({
            "request_id": self.request_id,
            "lease_id": "",
            "renewable": false,
            "lease_duration": 0,
            "data": data,
            "wrap_info": null,
            "warnings": null,
            "auth": auth,
        });
        (StatusCode::OK, axum::Json(body)).into_response()
    }
}

/// `204`: done, nothing to say (Vault's answer to most writes and deletes).
pub(crate) fn no_content() -> Response {
    StatusCode::NO_CONTENT.into_response()
}

/// A bare JSON body (the `sys/` endpoints that Vault answers without the envelope).
pub(crate) fn bare(status: StatusCode, body: Value) -> Response {
    (status, axum::Json(body)).into_response()
}

/// A failed request, answered as Vault does: `{"errors": ["…"]}` with its status code.
#[derive(Debug)]
pub(crate) struct HttpError {
    pub status: StatusCode,
    pub message: String,
    /// Seconds, for `Retry-After` (429).
    pub retry_after: Option<u64>,
}

impl HttpError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> HttpError {
        HttpError { status, message: message.into(), retry_after: None }
    }

    pub fn bad_request(message: impl Into<String>) -> HttpError {
        HttpError::new(StatusCode::BAD_REQUEST, message)
    }

    pub fn unsupported(verb: Verb, path: &str) -> HttpError {
        HttpError::new(StatusCode::METHOD_NOT_ALLOWED, format!("unsupported operation: {verb:?} on {path}"))
    }

    pub fn no_route(path: &str) -> HttpError {
        HttpError::new(StatusCode::NOT_FOUND, format!("no handler for route {path:?}: see docs/vault-compatibility.md"))
    }
}

impl From<CoreError> for HttpError {
    /// Vault's codes for the core's errors (the one place they are decided for HTTP). The
    /// message is the core's, written for users and free of secrets.
    fn from(e: CoreError) -> HttpError {
        let status = match &e {
            CoreError::NotInitialized
            | CoreError::Cluster(_)
            | CoreError::JoinFailed { .. }
            | CoreError::AuditUnavailable => StatusCode::SERVICE_UNAVAILABLE,
            CoreError::AlreadyInitialized
            | CoreError::InvalidArgument(_)
            | CoreError::Share(_)
            | CoreError::LoginFailed(_)
            | CoreError::FailedPrecondition(_)
            | CoreError::Rotation(_) => StatusCode::BAD_REQUEST,
            // Vault answers a missing or invalid token with 403, like a denied one.
            CoreError::MissingToken | CoreError::BadToken | CoreError::PermissionDenied(_) => StatusCode::FORBIDDEN,
            CoreError::NotFound(_) => StatusCode::NOT_FOUND,
            // As Vault: a check-and-set mismatch is a 400 whose message says so.
            CoreError::CasMismatch { .. } => StatusCode::BAD_REQUEST,
            CoreError::Conflict => StatusCode::CONFLICT,
            CoreError::WriteUnconfirmed => StatusCode::GATEWAY_TIMEOUT,
            CoreError::Storage(_) | CoreError::Corrupt { .. } | CoreError::Internal(_) => {
                StatusCode::INTERNAL_SERVER_ERROR
            }
            // Vault's clients recognise a sealed node by this text (`bao status` and
            // `bao operator unseal` show the seal state instead of failing on it).
            CoreError::Sealed => {
                return HttpError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "Vault is sealed: this Arca node is sealed; unseal it with 'arca operator unseal' (or 'bao \
                     operator unseal')",
                )
            }
            CoreError::RateLimited { retry_after_s, .. } => {
                return HttpError {
                    status: StatusCode::TOO_MANY_REQUESTS,
                    message: e.to_string(),
                    retry_after: Some(*retry_after_s),
                }
            }
        };
        HttpError::new(status, e.to_string())
    }
}

impl IntoResponse for HttpError {
    fn into_response(self) -> Response {
        let mut response = bare(self.status, json!({ "errors": [self.message] }));
        if let Some(secs) = self.retry_after {
            response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        response
    }
}

/// The audit trail's name for an HTTP error status.
fn outcome_name(status: StatusCode) -> &'static str {
    match status {
        StatusCode::NOT_FOUND => "not_found",
        StatusCode::METHOD_NOT_ALLOWED => "unimplemented",
        StatusCode::PAYLOAD_TOO_LARGE | StatusCode::URI_TOO_LONG => "resource_exhausted",
        s if s.is_server_error() => "internal",
        _ => "invalid_argument",
    }
}

pub(crate) type HttpResult = Result<Response, HttpError>;

fn token(headers: &HeaderMap) -> Option<Zeroizing<String>> {
    let from = |name: header::HeaderName| headers.get(name).and_then(|v| v.to_str().ok()).map(str::trim);
    let raw = from(header::HeaderName::from_static("x-vault-token"))
        .filter(|t| !t.is_empty())
        .or_else(|| from(header::AUTHORIZATION).and_then(|a| a.strip_prefix("Bearer ")).map(str::trim))?;
    (!raw.is_empty()).then(|| Zeroizing::new(raw.to_string()))
}

fn verb(method: &Method, query: &HashMap<String, String>) -> Option<Verb> {
    Some(match method.as_str() {
        "GET" if query.get("list").is_some_and(|v| v.eq_ignore_ascii_case("true") || v == "1") => Verb::List,
        "GET" => Verb::Read,
        "HEAD" => Verb::Head,
        "PUT" | "POST" => Verb::Write,
        "PATCH" => Verb::Patch,
        "DELETE" => Verb::Delete,
        "LIST" => Verb::List,
        _ => return None,
    })
}

/// Reads the body as JSON, as Vault does: whatever the content type says, except that `PATCH`
/// needs `application/merge-patch+json` and types that are plainly not JSON are refused.
async fn json_body(headers: &HeaderMap, verb: Verb, body: Body) -> Result<Value, HttpError> {
    let content_type = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
    let essence = content_type.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
    let bytes = axum::body::to_bytes(body, MAX_BODY_BYTES).await.map_err(|_| {
        HttpError::new(StatusCode::PAYLOAD_TOO_LARGE, format!("request body over the {MAX_BODY_BYTES}-byte limit"))
    })?;
    if verb == Verb::Patch && essence != "application/merge-patch+json" {
        return Err(HttpError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            format!("PATCH needs Content-Type application/merge-patch+json, got {content_type:?}"),
        ));
    }
    // Vault reads any body as JSON (curl's -d sends form-encoded headers over JSON bodies);
    // these are certainly something else.
    if essence.starts_with("multipart/") || essence.starts_with("text/") || essence.ends_with("/xml") {
        return Err(HttpError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            format!("unsupported content type {content_type:?}: send JSON (application/json)"),
        ));
    }
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(Value::Object(Default::default()));
    }
    let value: Value = serde_json::from_slice(&bytes)
        .map_err(|e| HttpError::bad_request(format!("failed to parse JSON input: {e}")))?;
    match value {
        // `bao write -f PATH` (no fields) sends `null`; Vault reads it as no fields.
        Value::Null => Ok(Value::Object(Default::default())),
        Value::Object(_) => Ok(value),
        _ => Err(HttpError::bad_request("the request body must be a JSON object")),
    }
}

fn query(uri: &axum::http::Uri) -> HashMap<String, String> {
    uri.query()
        .unwrap_or("")
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (k.to_string(), v.to_string())
        })
        .collect()
}

/// Every HTTP request: parse, route by path, translate the result.
async fn handle(axum::extract::State(core): axum::extract::State<Core>, req: axum::extract::Request) -> Response {
    let (parts, body) = req.into_parts();
    let request_id = arca_core::audit::request_id();
    let path = parts.uri.path().to_string();
    let span =
        info_span!("http", method = %parts.method, path = %arca_core::audit::cap(&path), request_id = %request_id);
    let seen = crate::limits::Seen::default();
    let client = parts.extensions.get::<crate::tls::ClientInfo>();
    let remote = client.and_then(|c| c.remote);
    let result = async {
        let query = query(&parts.uri);
        let Some(verb) = verb(&parts.method, &query) else {
            return Err(HttpError::new(StatusCode::METHOD_NOT_ALLOWED, format!("unsupported method {}", parts.method)));
        };
        let Some(route) = path.strip_prefix("/v1/") else { return Err(HttpError::no_route(&path)) };
        // A backup is the body itself, streamed: not JSON, and not held under the JSON limit.
        let (body, snapshot) = match snapshot::is_snapshot_route(route) {
            Some(force) => (Value::Object(Default::default()), Some((force, body))),
            None => (json_body(&parts.headers, verb, body).await?, None),
        };
        let ctx = Ctx {
            core: core.clone(),
            seen: seen.clone(),
            token: token(&parts.headers),
            remote,
            certs: client.map(|c| c.certs.to_vec()).unwrap_or_default(),
            request_id: request_id.clone(),
            verb,
            query,
            body,
        };
        if let Some((force, raw)) = snapshot {
            snapshot::route(&ctx, force, raw).await
        } else if let Some(rest) = route.strip_prefix("sys/") {
            sys::route(&ctx, rest).await
        } else if let Some(rest) = route.strip_prefix("secret/") {
            kv::route(&ctx, rest).await
        } else if let Some(rest) = route.strip_prefix("auth/") {
            auth::route(&ctx, rest).await
        } else {
            Err(HttpError::no_route(route))
        }
    }
    .instrument(span)
    .await;
    let mut response = match result {
        Ok(response) => response,
        // Refused here, before the core had it (malformed, unknown route, body too large):
        // audited like any other request, and under the same limits.
        Err(e) if !seen.is_marked() => {
            let rejection = arca_core::Rejection {
                token: token(&parts.headers),
                remote,
                request_id: Some(request_id.clone()),
                kind: parts.method.to_string(),
                path: path.clone(),
                outcome: outcome_name(e.status).into(),
                error: e.message.clone(),
            };
            match core.record_rejection(rejection).await {
                // Sealed: there is no audit key to record with, and the refusal says nothing.
                Ok(()) | Err(CoreError::Sealed) => e.into_response(),
                Err(refused) => HttpError::from(refused).into_response(),
            }
        }
        Err(e) => e.into_response(),
    };
    if let Ok(id) = HeaderValue::from_str(&request_id) {
        response.headers_mut().insert("x-request-id", id);
    }
    response
}
