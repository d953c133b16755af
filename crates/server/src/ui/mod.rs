//! The operators' web console at `/ui`, served by every node on the client port.
//!
//! A client of the core like the two API fronts, never a back door: every page and action
//! builds an [`Operation`] and goes through [`Core::handle`] with the session's token, so
//! authentication, policy and audit are the API's. The stack is server-rendered HTML
//! (minijinja templates compiled into the binary) with one small script for the audit trail's
//! live tail; every page works without it, and nothing is fetched from another host.
//!
//! Security choices, each for a reason:
//! * The session is a browser-session cookie (never written with an expiry) holding a token:
//!   `__Host-` prefixed, `HttpOnly` (no script reads it), `Secure`, `SameSite=Strict`. A sign-in
//!   makes a 30-minute child token for it when the credentials allow (the login's own token is
//!   then revoked; a token typed in is not kept); an AppRole or JWT login whose policies cannot
//!   create tokens keeps the login's token. Signing in again revokes the previous session;
//!   sign-out revokes it.
//! * CSRF: every form carries the value of an `HttpOnly`, `SameSite=Strict` cookie, compared in
//!   constant time, and a POST whose `Origin` names another site is refused.
//! * A strict Content-Security-Policy (no inline script or style, nothing from other hosts),
//!   `X-Frame-Options: DENY`, `no-store` caching, no referrer to other sites.
//! * Values are shown only on a click, as a read of that version (audited as one).

mod forms;
mod pages;
mod peers;

use std::net::SocketAddr;
use std::sync::Arc;

use arca_core::{Core, Error as CoreError, Operation, Reply, Request};
use axum::body::Body;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use minijinja::Environment;
use serde::Serialize;
use zeroize::Zeroizing;

pub(crate) use forms::Form;

/// The session cookie: a token. `__Host-`: the browser accepts it only from this origin over
/// HTTPS, with `Path=/` and no `Domain`, so a sibling subdomain or a plain-HTTP attacker cannot
/// plant one (a planted session would make the victim work under the attacker's token).
const SESSION: &str = "__Host-arca_session";
/// The CSRF cookie, whose value every form repeats.
const CSRF: &str = "__Host-arca_csrf";
/// How long a token sign-in's session token lives.
const SESSION_TTL: std::time::Duration = std::time::Duration::from_secs(30 * 60);

pub(crate) struct Ui {
    core: Core,
    env: Environment<'static>,
    peers: peers::Peers,
}

/// The router of everything under `/ui`. `client_ca` (PEM) signs every node's API certificate:
/// the cluster page asks each member for its seal state with it.
pub(crate) fn router(core: Core, client_ca: &[u8]) -> axum::Router {
    let ui = Arc::new(Ui { core, env: templates(), peers: peers::Peers::new(client_ca) });
    pages::routes().with_state(ui).layer(axum::middleware::map_response(security_headers))
}

/// Whether a request is for the console.
pub(crate) fn is_ui(path: &str) -> bool {
    path == "/ui" || path.starts_with("/ui/")
}

fn templates() -> Environment<'static> {
    let mut env = Environment::new();
    for (name, source) in [
        ("base.html", include_str!("templates/base.html")),
        ("login.html", include_str!("templates/login.html")),
        ("cluster.html", include_str!("templates/cluster.html")),
        ("secrets.html", include_str!("templates/secrets.html")),
        ("secret.html", include_str!("templates/secret.html")),
        ("rotation.html", include_str!("templates/rotation.html")),
        ("audit.html", include_str!("templates/audit.html")),
        ("policies.html", include_str!("templates/policies.html")),
        ("identities.html", include_str!("templates/identities.html")),
        ("error.html", include_str!("templates/error.html")),
    ] {
        env.add_template(name, source).expect("the console's templates parse (checked by its tests)");
    }
    env
}

async fn security_headers(mut response: Response) -> Response {
    let h = response.headers_mut();
    let set = |h: &mut HeaderMap, name: &'static str, value: &'static str| {
        h.insert(header::HeaderName::from_static(name), HeaderValue::from_static(value));
    };
    set(
        h,
        "content-security-policy",
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; \
         form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    );
    set(h, "x-frame-options", "DENY");
    set(h, "x-content-type-options", "nosniff");
    // Not `no-referrer`: with it, browsers send `Origin: null` on the console's own forms.
    set(h, "referrer-policy", "same-origin");
    set(h, "cache-control", "no-store");
    set(h, "strict-transport-security", "max-age=31536000");
    response
}

/// Who is asking: the session (if any), where from, and the CSRF value for forms.
pub(crate) struct Caller {
    pub token: Option<Zeroizing<String>>,
    pub remote: Option<SocketAddr>,
    pub csrf: String,
    /// A CSRF cookie to set (the browser had none).
    new_csrf: bool,
    /// The host the request names (HTTP/2's `:authority`, or HTTP/1.1's `Host`).
    host: String,
}

impl Caller {
    pub fn from(headers: &HeaderMap, authority: Option<&str>, remote: Option<SocketAddr>) -> Caller {
        let host =
            authority.or_else(|| headers.get(header::HOST).and_then(|h| h.to_str().ok())).unwrap_or("").to_string();
        // Two cookies of one name (one planted beside ours): `cookie` trusts neither.
        let token = cookie(headers, SESSION).filter(|t| !t.is_empty()).map(Zeroizing::new);
        let (csrf, new_csrf) = match cookie(headers, CSRF).filter(|c| c.len() == 64) {
            Some(c) => (c, false),
            None => (random_hex(), true),
        };
        Caller { token, remote, csrf, new_csrf, host }
    }

    pub fn signed_in(&self) -> bool {
        self.token.is_some()
    }

    /// Checks a state-changing request: the form repeats the CSRF cookie, and the request
    /// did not come from another site.
    pub fn check_csrf(&self, headers: &HeaderMap, form: &Form) -> Result<(), PageError> {
        if let Some(origin) = headers.get(header::ORIGIN).and_then(|o| o.to_str().ok()) {
            if self.host.is_empty() || origin != format!("https://{}", self.host) {
                return Err(PageError::forbidden(format!(
                    "refused: this form was sent from {origin}, not from this console (https://{})",
                    self.host
                )));
            }
        }
        let sent = form.get("csrf").unwrap_or("");
        let ok = !self.new_csrf && arca_crypto::constant_time_eq(sent.as_bytes(), self.csrf.as_bytes());
        if ok {
            Ok(())
        } else {
            Err(PageError::forbidden(
                "refused: the form's anti-forgery value is missing or stale; reload the page and try again",
            ))
        }
    }
}

fn random_hex() -> String {
    use rand::RngCore;
    let mut bytes = [0u8; 32];
    rand::thread_rng().fill_bytes(&mut bytes);
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A cookie's value from the request; none when the name appears more than once.
fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    let mut found = headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .filter(|(k, _)| *k == name)
        .map(|(_, v)| v.to_string());
    let first = found.next();
    if found.next().is_some() {
        return None;
    }
    first
}

/// A page that could not be shown: its status and the message for the person.
#[derive(Debug)]
pub(crate) struct PageError {
    pub status: StatusCode,
    pub message: String,
}

impl PageError {
    pub fn forbidden(message: impl Into<String>) -> PageError {
        PageError { status: StatusCode::FORBIDDEN, message: message.into() }
    }

    pub fn bad_request(message: impl Into<String>) -> PageError {
        PageError { status: StatusCode::BAD_REQUEST, message: message.into() }
    }
}

impl From<CoreError> for PageError {
    fn from(e: CoreError) -> PageError {
        let status = match &e {
            CoreError::MissingToken | CoreError::BadToken => StatusCode::UNAUTHORIZED,
            CoreError::PermissionDenied(_) => StatusCode::FORBIDDEN,
            CoreError::NotFound(_) => StatusCode::NOT_FOUND,
            CoreError::Sealed | CoreError::AuditUnavailable | CoreError::Cluster(_) => StatusCode::SERVICE_UNAVAILABLE,
            CoreError::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            CoreError::WriteUnconfirmed => StatusCode::GATEWAY_TIMEOUT,
            CoreError::Storage(_) | CoreError::Corrupt { .. } | CoreError::Internal(_) => {
                StatusCode::INTERNAL_SERVER_ERROR
            }
            _ => StatusCode::BAD_REQUEST,
        };
        PageError { status, message: e.to_string() }
    }
}

impl Ui {
    pub fn node_id(&self) -> u64 {
        self.core.node().id()
    }

    /// A member's seal state, in its own words (this node answers from its core).
    pub async fn peer_seal_state(&self, api_addr: &str) -> String {
        self.peers.seal_state(api_addr).await
    }

    /// Records a request refused before it reached the core (a failed anti-forgery check), so
    /// forgery attempts are in the audit trail like every other refusal.
    pub async fn reject(&self, caller: &Caller, path: &str, e: &PageError) {
        let rejection = arca_core::Rejection {
            token: caller.token.clone(),
            remote: caller.remote,
            request_id: None,
            kind: "POST".into(),
            path: path.to_string(),
            outcome: "permission_denied".into(),
            error: e.message.clone(),
        };
        if let Err(err) = self.core.record_rejection(rejection).await {
            tracing::debug!(error = %err, "a console refusal was not recorded");
        }
    }

    /// Runs `op` as the caller (with the session's token, if any).
    pub async fn call(&self, caller: &Caller, op: Operation) -> Result<Reply, CoreError> {
        self.call_with(caller.token.clone(), caller.remote, op).await
    }

    pub async fn call_with(
        &self,
        token: Option<Zeroizing<String>>,
        remote: Option<SocketAddr>,
        op: Operation,
    ) -> Result<Reply, CoreError> {
        self.core.handle(Request { token, remote, client_certs: Vec::new(), request_id: None, op }).await
    }

    /// Renders `template` with `ctx` and the fields every page has.
    pub fn render(&self, caller: &Caller, template: &str, page: &str, title: &str, ctx: minijinja::Value) -> Response {
        self.render_status(caller, StatusCode::OK, template, page, title, ctx)
    }

    pub fn render_status(
        &self,
        caller: &Caller,
        status: StatusCode,
        template: &str,
        page: &str,
        title: &str,
        ctx: minijinja::Value,
    ) -> Response {
        #[derive(Serialize)]
        struct Session {
            name: &'static str,
        }
        let common = minijinja::context! {
            page, title, csrf => caller.csrf,
            session => caller.signed_in().then_some(Session { name: "signed in" }),
            node_id => self.node_id(),
        };
        let html = self
            .env
            .get_template(template)
            .and_then(|t| t.render(minijinja::context! { ..ctx, ..common }))
            .unwrap_or_else(|e| {
                tracing::error!(template, error = %e, "a console template failed");
                "<!doctype html><title>Arca</title><p>This page could not be shown; the node's log says why.".into()
            });
        let mut response = (status, [(header::CONTENT_TYPE, "text/html; charset=utf-8")], html).into_response();
        self.set_csrf_cookie(caller, &mut response);
        response
    }

    fn set_csrf_cookie(&self, caller: &Caller, response: &mut Response) {
        if caller.new_csrf {
            let value = format!("{CSRF}={}; Path=/; HttpOnly; Secure; SameSite=Strict", caller.csrf);
            if let Ok(v) = HeaderValue::from_str(&value) {
                response.headers_mut().append(header::SET_COOKIE, v);
            }
        }
    }

    /// An error page, or the sign-in page when the session is missing, expired or revoked.
    pub fn error(&self, caller: &Caller, e: PageError) -> Response {
        if e.status == StatusCode::UNAUTHORIZED {
            let mut r = redirect("/ui/login?ended=1");
            clear_session(&mut r);
            return r;
        }
        let title = match e.status {
            StatusCode::FORBIDDEN => "Not allowed",
            StatusCode::NOT_FOUND => "Not found",
            StatusCode::SERVICE_UNAVAILABLE => "Unavailable",
            _ => "Refused",
        };
        self.render_status(caller, e.status, "error.html", "", title, minijinja::context! { error => e.message })
    }
}

/// A `303 See Other` to `to` (after a form, so a reload does not send it again).
pub(crate) fn redirect(to: &str) -> Response {
    let mut r = StatusCode::SEE_OTHER.into_response();
    if let Ok(v) = HeaderValue::from_str(to) {
        r.headers_mut().insert(header::LOCATION, v);
    }
    r
}

/// Sets the session cookie: no `Max-Age` (it ends with the browser session and is never
/// written to the profile with an expiry); the token's own TTL ends it sooner.
pub(crate) fn set_session(response: &mut Response, token: &str) {
    let value = Zeroizing::new(format!("{SESSION}={token}; Path=/; HttpOnly; Secure; SameSite=Strict"));
    if let Ok(v) = HeaderValue::from_str(&value) {
        response.headers_mut().append(header::SET_COOKIE, v);
    }
}

pub(crate) fn clear_session(response: &mut Response) {
    response.headers_mut().append(
        header::SET_COOKIE,
        HeaderValue::from_static("__Host-arca_session=; Path=/; HttpOnly; Secure; SameSite=Strict; Max-Age=0"),
    );
}

/// A time in Unix milliseconds as a person reads it (UTC, to the second); `-` for none.
pub(crate) fn date(ms: i64) -> String {
    if ms <= 0 {
        return "-".into();
    }
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| t.format("%Y-%m-%d %H:%M:%S UTC").to_string())
        .unwrap_or_else(|| ms.to_string())
}

/// A static asset.
pub(crate) fn asset(content_type: &'static str, body: &'static str) -> Response {
    (StatusCode::OK, [(header::CONTENT_TYPE, content_type)], Body::from(body)).into_response()
}
