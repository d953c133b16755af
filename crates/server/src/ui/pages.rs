//! The console's pages: each builds operations, runs them as the caller, and renders.
//!
//! Why one file of about 600 lines: the pages share their small request plumbing (`Incoming`,
//! capability checks, the reply conversions); each page is one handler and stays readable.

use std::collections::BTreeMap;
use std::sync::Arc;

use arca_core::auth::{Credentials, Method};
use arca_core::{
    AuditFilter, AuditRecord, Error as CoreError, MetadataSettings, OpClass, Operation, Reply, SecretData, TokenCreate,
    TokenCreated, TokenRef,
};
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use minijinja::context;
use serde::Serialize;
use serde_json::json;
use zeroize::{Zeroize, Zeroizing};

use super::{asset, clear_session, date, redirect, set_session, Caller, Form, PageError, Ui, SESSION_TTL};

type Shared = State<Arc<Ui>>;

pub(super) fn routes() -> Router<Arc<Ui>> {
    Router::new()
        .route("/ui", get(index))
        .route("/ui/", get(index))
        .route("/ui/login", get(login_page).post(login))
        .route("/ui/logout", post(logout))
        .route("/ui/cluster", get(cluster))
        .route("/ui/unseal", post(unseal))
        .route("/ui/secrets", get(secrets))
        .route("/ui/secret", get(secret))
        .route("/ui/secret/write", post(write_secret))
        .route("/ui/secret/versions", post(versions))
        .route("/ui/secret/metadata", post(set_metadata))
        .route("/ui/rotation", get(rotation))
        .route("/ui/rotation/now", post(rotate_now))
        .route("/ui/audit", get(audit))
        .route("/ui/audit/records", get(audit_records))
        .route("/ui/policies", get(policies))
        .route("/ui/identities", get(identities))
        .route("/ui/assets/ui.css", get(|| async { asset("text/css; charset=utf-8", include_str!("assets/ui.css")) }))
        .route(
            "/ui/assets/ui.js",
            get(|| async { asset("text/javascript; charset=utf-8", include_str!("assets/ui.js")) }),
        )
        .fallback(|State(ui): Shared, req: axum::extract::Request| async move {
            let (caller, _) = incoming(req, false).await;
            ui.error(&caller, PageError { status: StatusCode::NOT_FOUND, message: "no such page".into() })
        })
}

/// What a handler gets of the request: the caller and the query or form fields.
async fn incoming(req: axum::extract::Request, with_body: bool) -> (Caller, Incoming) {
    let remote = req.extensions().get::<crate::tls::ClientInfo>().and_then(|c| c.remote);
    let caller = Caller::from(req.headers(), req.uri().authority().map(|a| a.as_str()), remote);
    let headers = req.headers().clone();
    let query = Form::parse(req.uri().query().unwrap_or(""));
    let form = if with_body {
        // Forms here are small: a secret is at most 512 KiB, and a page's form a few fields.
        match axum::body::to_bytes(req.into_body(), 1 << 20).await {
            Ok(b) => {
                // The body may hold a token, a share or a secret: cleared once parsed.
                let mut bytes: Vec<u8> = b.into();
                let form = Form::parse(&String::from_utf8_lossy(&bytes));
                bytes.zeroize();
                form
            }
            Err(_) => Form::default(),
        }
    } else {
        Form::default()
    };
    (caller, Incoming { headers, query, form })
}

struct Incoming {
    headers: HeaderMap,
    query: Form,
    form: Form,
}

/// A POST: its form, once the CSRF check passed (a failed one is audited as a rejection).
async fn posted(ui: &Ui, req: axum::extract::Request) -> Result<(Caller, Form), (Caller, PageError)> {
    let path = req.uri().path().to_string();
    let (caller, inc) = incoming(req, true).await;
    match caller.check_csrf(&inc.headers, &inc.form) {
        Ok(()) => Ok((caller, inc.form)),
        Err(e) => {
            ui.reject(&caller, &path, &e).await;
            Err((caller, e))
        }
    }
}

/// A state-changing form: once the anti-forgery check passed, `build` makes the operation and
/// the page to go to after it, and the operation runs as the caller; a refusal is an error page.
async fn act(
    ui: &Ui,
    req: axum::extract::Request,
    build: impl FnOnce(&Form) -> Result<(Operation, String), PageError>,
) -> Response {
    let (caller, form) = match posted(ui, req).await {
        Ok(x) => x,
        Err((caller, e)) => return ui.error(&caller, e),
    };
    let result = match build(&form) {
        Ok((op, to)) => ui.call(&caller, op).await.map(|_| to).map_err(PageError::from),
        Err(e) => Err(e),
    };
    match result {
        Ok(to) => redirect(&to),
        Err(e) => ui.error(&caller, e),
    }
}

/// Which of `ops` the caller's policies allow (by each operation's own logical path and
/// capability, as the core will judge them). Shown buttons follow this; the core still decides.
async fn allowed(ui: &Ui, caller: &Caller, ops: Vec<Operation>) -> Vec<bool> {
    // Only the names and classes are kept across the await (an `Operation` is not `Sync`).
    let paths: Vec<String> = ops.iter().map(Operation::logical_path).collect();
    let classes: Vec<OpClass> = ops.iter().map(|op| op.spec().class).collect();
    drop(ops);
    let op = Operation::Capabilities { target: TokenRef::SelfToken, paths: paths.clone() };
    let caps = match ui.call(caller, op).await {
        Ok(Reply::Capabilities(c)) => c,
        _ => return vec![false; paths.len()],
    };
    classes
        .iter()
        .zip(&paths)
        .map(|(class, path)| {
            let OpClass::Token(need) = class else { return false };
            let held = caps.iter().filter(|(p, _)| p == path).flat_map(|(_, c)| c.iter()).collect::<Vec<_>>();
            held.iter().any(|c| *c == "root")
                || (need.any.iter().any(|n| held.iter().any(|c| *c == n.name()))
                    && (!need.sudo || held.iter().any(|c| *c == "sudo")))
        })
        .collect()
}

fn kv_put(path: &str) -> Operation {
    Operation::KvPut { path: path.into(), data: SecretData(BTreeMap::new()), cas: None }
}

async fn index(State(ui): Shared, req: axum::extract::Request) -> Response {
    let (caller, _) = incoming(req, false).await;
    match ui.call(&caller, Operation::SealStatus).await {
        Ok(Reply::SealStatus(s)) if s.sealed || !s.initialized => redirect("/ui/cluster"),
        _ if caller.signed_in() => redirect("/ui/secrets"),
        _ => redirect("/ui/login"),
    }
}

async fn login_page(State(ui): Shared, req: axum::extract::Request) -> Response {
    let (caller, inc) = incoming(req, false).await;
    let sealed = matches!(ui.call(&caller, Operation::SealStatus).await, Ok(Reply::SealStatus(s)) if s.sealed);
    let error = (inc.query.get("ended").is_some())
        .then_some("Your session ended (signed out, expired or revoked): sign in again.");
    let notice = inc.query.get("out").is_some().then_some("Signed out: the session's token is revoked.");
    ui.render(&caller, "login.html", "login", "Sign in", context! { sealed, error, notice })
}

async fn login(State(ui): Shared, req: axum::extract::Request) -> Response {
    let (caller, form) = match posted(&ui, req).await {
        Ok(x) => x,
        Err((caller, e)) => return ui.error(&caller, e),
    };
    let result = match form.get("method").unwrap_or("token") {
        "token" => session_from_token(&ui, &caller, Zeroizing::new(form.text("token"))).await,
        "approle" => {
            let creds =
                Credentials::AppRole { role_id: form.text("role"), secret_id: Zeroizing::new(form.text("secret")) };
            login_token(&ui, &caller, creds).await
        }
        "jwt" => {
            let creds = Credentials::Jwt { role: form.text("role"), jwt: Zeroizing::new(form.text("secret")) };
            login_token(&ui, &caller, creds).await
        }
        other => Err(PageError::bad_request(format!("unknown sign-in method {other:?}"))),
    };
    match result {
        Ok(token) => {
            // A new sign-in ends the session this browser had.
            if caller.signed_in() {
                let _ = ui.call(&caller, Operation::TokenRevoke(TokenRef::SelfToken)).await;
            }
            let mut r = redirect("/ui/secrets");
            set_session(&mut r, &token);
            r
        }
        Err(e) => {
            let status = if e.status == StatusCode::UNAUTHORIZED { StatusCode::FORBIDDEN } else { e.status };
            let error = format!("Sign-in refused: {}", e.message);
            ui.render_status(&caller, status, "login.html", "login", "Sign in", context! { error })
        }
    }
}

/// A 30-minute child of `parent` for the session.
async fn child_token(ui: &Ui, caller: &Caller, parent: Zeroizing<String>) -> Result<TokenCreated, CoreError> {
    let create = TokenCreate {
        policies: Vec::new(),
        ttl: Some(SESSION_TTL),
        max_ttl: Some(SESSION_TTL),
        display_name: "console".into(),
        meta: BTreeMap::from([("source".to_string(), "console".to_string())]),
        orphan: false,
        no_default_policy: false,
        renewable: false,
        num_uses: 0,
    };
    ui.call_with(Some(parent), caller.remote, Operation::TokenCreate(create)).await?.into_token_created()
}

/// A token sign-in: a 30-minute child of the token typed in, which is not kept.
async fn session_from_token(
    ui: &Ui,
    caller: &Caller,
    token: Zeroizing<String>,
) -> Result<Zeroizing<String>, PageError> {
    if token.is_empty() {
        return Err(PageError::bad_request("enter a token"));
    }
    let created = child_token(ui, caller, token).await.map_err(|e| match e {
        CoreError::PermissionDenied(m) => PageError::forbidden(format!(
            "{m}. The console signs in with a child token of the one given, which needs create on auth/token/create; sign in with AppRole or JWT instead"
        )),
        other => other.into(),
    })?;
    if created.info.policies.iter().all(|p| p == "default") {
        // A root token's child holds no root policy: the session could do nothing useful.
        let _ = ui.call_with(Some(created.token), caller.remote, Operation::TokenRevoke(TokenRef::SelfToken)).await;
        return Err(PageError::forbidden(
            "this token's policies do not pass to new tokens (a root token's do not): sign in with a token or role holding the policies you need",
        ));
    }
    Ok(created.token)
}

/// An AppRole or JWT sign-in: a 30-minute child of the login's token, which is then revoked;
/// or, when the role's policies may not create tokens, the login's own token (its role's TTL).
async fn login_token(ui: &Ui, caller: &Caller, creds: Credentials) -> Result<Zeroizing<String>, PageError> {
    let token = ui.call(caller, Operation::Login(creds)).await?.into_token_created()?.token;
    match child_token(ui, caller, token.clone()).await {
        Ok(child) => {
            let _ = ui.call_with(Some(token), caller.remote, Operation::TokenRevoke(TokenRef::SelfToken)).await;
            Ok(child.token)
        }
        Err(_) => Ok(token),
    }
}

async fn logout(State(ui): Shared, req: axum::extract::Request) -> Response {
    let (caller, _) = match posted(&ui, req).await {
        Ok(x) => x,
        Err((caller, e)) => return ui.error(&caller, e),
    };
    if caller.signed_in() {
        let _ = ui.call(&caller, Operation::TokenRevoke(TokenRef::SelfToken)).await;
    }
    let mut r = redirect("/ui/login?out=1");
    clear_session(&mut r);
    r
}

#[derive(Serialize)]
struct MemberRow {
    id: u64,
    api_addr: String,
    leader: bool,
    voter: bool,
    health: String,
    last_contact: String,
    last_index: String,
    /// The member's own answer: unsealed, sealed (with progress), or why it is unknown.
    seal: String,
    /// Whether its address may go into a link.
    link: bool,
}

async fn cluster(State(ui): Shared, req: axum::extract::Request) -> Response {
    let (caller, inc) = incoming(req, false).await;
    let _ = inc;
    cluster_page(&ui, &caller, None).await
}

async fn cluster_page(ui: &Ui, caller: &Caller, error: Option<String>) -> Response {
    let seal = match ui.call(caller, Operation::SealStatus).await {
        Ok(Reply::SealStatus(s)) => s,
        Ok(_) => return ui.error(caller, PageError::bad_request("unexpected reply")),
        Err(e) => return ui.error(caller, e.into()),
    };
    #[derive(Serialize)]
    struct Seal {
        node_id: u64,
        initialized: bool,
        sealed: bool,
        threshold: u8,
        shares: u8,
        progress: u8,
    }
    let seal_view = Seal {
        node_id: seal.node_id,
        initialized: seal.initialized,
        sealed: seal.sealed,
        threshold: seal.threshold,
        shares: seal.shares,
        progress: seal.progress,
    };
    if seal.sealed || !seal.initialized {
        return ui.render(caller, "cluster.html", "cluster", "Cluster", context! { seal => seal_view, error });
    }
    if !caller.signed_in() {
        return redirect("/ui/login");
    }
    let mut errors: Vec<String> = error.into_iter().collect();
    let health = match ui.call(caller, Operation::AutopilotState).await {
        Ok(Reply::Autopilot(a)) => Some(a),
        Ok(_) => None,
        Err(e) => {
            errors.push(format!("members: {e}"));
            None
        }
    };
    let seals: Vec<String> = match &health {
        // This node's own state is already at hand; the others are asked.
        Some(a) => {
            futures::future::join_all(a.servers.iter().map(|s| async move {
                if s.id == seal.node_id {
                    "unsealed".to_string()
                } else {
                    ui.peer_seal_state(&s.api_addr).await
                }
            }))
            .await
        }
        None => Vec::new(),
    };
    let members: Vec<MemberRow> = match &health {
        Some(a) => a
            .servers
            .iter()
            .zip(seals)
            .map(|(s, seal)| MemberRow {
                id: s.id,
                api_addr: s.api_addr.clone(),
                leader: s.leader,
                voter: s.voter,
                health: if s.healthy { "healthy".into() } else { "UNHEALTHY".into() },
                last_contact: s.last_contact.map_or("-".into(), |d| format!("{} ms ago", d.as_millis())),
                last_index: s.last_index.to_string(),
                seal,
                link: plain_host_port(&s.api_addr),
            })
            .collect(),
        None => Vec::new(),
    };
    let autopilot = health.as_ref().map(|a| json!({"healthy": a.healthy, "failure_tolerance": a.failure_tolerance}));
    let keyring = match ui.call(caller, Operation::KeyringStatus).await {
        Ok(Reply::Keyring(k)) => Some(json!({
            "active_term": k.active_term,
            "active_since": k.active_since_ms.map_or("-".into(), date),
            "terms": k.terms.iter().map(u32::to_string).collect::<Vec<_>>().join(", "),
            "records_on_old_terms": k.records_on_old_terms,
            "rewrap": match &k.rewrap {
                None => "none needed".to_string(),
                Some(r) if r.done => format!("to term {} done {} ({} records)", r.target_term, r.finished_ms.map_or("-".into(), date), r.rewrapped),
                Some(r) => format!("to term {}: {} records so far, started {}", r.target_term, r.rewrapped, date(r.started_ms)),
            },
        })),
        Ok(_) => None,
        Err(e) => {
            errors.push(format!("keyring: {e}"));
            None
        }
    };
    let error = (!errors.is_empty()).then(|| errors.join("; "));
    ui.render(
        caller,
        "cluster.html",
        "cluster",
        "Cluster",
        context! { seal => seal_view, members, autopilot, keyring, error },
    )
}

async fn unseal(State(ui): Shared, req: axum::extract::Request) -> Response {
    let (caller, form) = match posted(&ui, req).await {
        Ok(x) => x,
        Err((caller, e)) => return ui.error(&caller, e),
    };
    let op = Operation::Unseal { share: Zeroizing::new(form.text("share")), reset: false };
    match ui.call(&caller, op).await {
        Ok(_) => redirect("/ui/cluster"),
        Err(e) => cluster_page(&ui, &caller, Some(format!("The share was refused: {e}"))).await,
    }
}

#[derive(Serialize)]
struct Key {
    name: String,
    path: String,
    folder: bool,
}

async fn secrets(State(ui): Shared, req: axum::extract::Request) -> Response {
    let (caller, inc) = incoming(req, false).await;
    if !caller.signed_in() {
        return redirect("/ui/login");
    }
    let prefix = inc.query.text("prefix");
    let keys = match ui.call(&caller, Operation::KvList { prefix: prefix.clone() }).await {
        Ok(Reply::KvKeys(k)) => k,
        Ok(_) | Err(CoreError::NotFound(_)) => Vec::new(),
        Err(e) => return ui.error(&caller, e.into()),
    };
    let keys: Vec<Key> =
        keys.into_iter().map(|k| Key { path: format!("{prefix}{k}"), folder: k.ends_with('/'), name: k }).collect();
    let mut crumbs = Vec::new();
    let mut acc = String::new();
    for part in prefix.split('/').filter(|p| !p.is_empty()) {
        acc.push_str(part);
        acc.push('/');
        crumbs.push(json!({"name": part, "prefix": acc.clone()}));
    }
    let can_write = allowed(&ui, &caller, vec![kv_put(&format!("{prefix}new"))]).await[0];
    ui.render(&caller, "secrets.html", "secrets", "Secrets", context! { keys, crumbs, prefix, can_write })
}

async fn secret(State(ui): Shared, req: axum::extract::Request) -> Response {
    let (caller, inc) = incoming(req, false).await;
    if !caller.signed_in() {
        return redirect("/ui/login");
    }
    let path = inc.query.text("path");
    let meta = match ui.call(&caller, Operation::KvMetadata { path: path.clone() }).await {
        Ok(Reply::KvMetadata(m)) => m,
        Ok(_) => return ui.error(&caller, PageError::bad_request("unexpected reply")),
        Err(e) => return ui.error(&caller, e.into()),
    };
    // A value is shown only when asked for: that read is a request of its own, audited as one.
    let mut error = None;
    let revealed = match inc.query.get("reveal").and_then(|v| v.parse::<u64>().ok()) {
        Some(version) => {
            let op = Operation::KvGet { path: path.clone(), version: Some(version) };
            match ui.call(&caller, op).await.and_then(Reply::into_kv_secret) {
                Ok(s) => {
                    let fields: Vec<_> = s.data.0.iter().map(|(k, v)| json!({"key": k, "value": v})).collect();
                    Some(json!({"version": s.version.version, "fields": fields}))
                }
                Err(e) => {
                    error = Some(format!("Reveal refused: {e}"));
                    None
                }
            }
        }
        None => None,
    };
    let ops = vec![
        Operation::KvGet { path: path.clone(), version: None },
        kv_put(&path),
        Operation::KvDelete { path: path.clone(), versions: vec![] },
    ];
    let can = allowed(&ui, &caller, ops).await;
    let versions: Vec<_> = meta
        .versions
        .values()
        .rev()
        .map(|v| {
            let stage = if v.version == meta.current_version {
                "current"
            } else if meta.pending_version == Some(v.version) {
                "pending"
            } else if meta.previous_version == Some(v.version) {
                "previous"
            } else {
                ""
            };
            json!({"version": v.version, "stage": stage, "created": date(v.created_ms),
                   "deleted": v.deleted_ms.map_or("-".into(), date), "destroyed": v.destroyed})
        })
        .collect();
    let parent = path.rsplit_once('/').map_or(String::new(), |(p, _)| format!("{p}/"));
    let view = json!({"path": meta.path, "current_version": meta.current_version, "max_versions": meta.max_versions,
                      "cas_required": meta.cas_required, "custom_metadata": meta.custom_metadata,
                      "created": date(meta.created_ms), "updated": date(meta.updated_ms), "versions": versions});
    // Only a number is shown back: query text could carry any message to a victim's screen.
    let notice = inc.query.get("written").and_then(|v| v.parse::<u64>().ok()).map(|v| format!("Version {v} written."));
    let title = format!("Secret {path}");
    ui.render(
        &caller,
        "secret.html",
        "secrets",
        &title,
        context! { meta => view, revealed, parent, can_read => can[0], can_write => can[1], can_delete => can[2], error, notice },
    )
}

/// `key=value` lines.
fn parse_fields(text: &str) -> Result<SecretData, PageError> {
    let mut data = BTreeMap::new();
    for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
        // The line itself is not echoed: it may be a pasted secret.
        let (k, v) =
            line.split_once('=').ok_or_else(|| PageError::bad_request("every field line must be key=value"))?;
        if k.trim().is_empty() {
            return Err(PageError::bad_request("a field has an empty key"));
        }
        data.insert(k.trim().to_string(), v.to_string());
    }
    if data.is_empty() {
        return Err(PageError::bad_request("give at least one key=value field"));
    }
    Ok(SecretData(data))
}

async fn write_secret(State(ui): Shared, req: axum::extract::Request) -> Response {
    let (caller, form) = match posted(&ui, req).await {
        Ok(x) => x,
        Err((caller, e)) => return ui.error(&caller, e),
    };
    let path = form.text("path");
    let result = async {
        let data = parse_fields(form.get("data").unwrap_or(""))?;
        let cas = match form.text("cas").as_str() {
            "" => None,
            n => Some(n.parse::<u64>().map_err(|_| PageError::bad_request("cas must be a version number"))?),
        };
        let reply = ui.call(&caller, Operation::KvPut { path: path.clone(), data, cas }).await?;
        Ok::<_, PageError>(reply.into_kv_written()?.version.version)
    }
    .await;
    match result {
        Ok(version) => redirect(&format!("/ui/secret?path={}&written={version}", encode(&path))),
        Err(e) => ui.error(&caller, e),
    }
}

async fn versions(State(ui): Shared, req: axum::extract::Request) -> Response {
    act(&ui, req, |form| {
        let path = form.text("path");
        let version =
            form.text("version").parse::<u64>().map_err(|_| PageError::bad_request("version must be a number"))?;
        let (p, versions) = (path.clone(), vec![version]);
        let op = match form.get("action") {
            Some("delete") => Operation::KvDelete { path: p, versions },
            Some("undelete") => Operation::KvUndelete { path: p, versions },
            Some("destroy") => Operation::KvDestroy { path: p, versions },
            _ => return Err(PageError::bad_request("action must be delete, undelete or destroy")),
        };
        Ok((op, format!("/ui/secret?path={}", encode(&path))))
    })
    .await
}

async fn set_metadata(State(ui): Shared, req: axum::extract::Request) -> Response {
    act(&ui, req, |form| {
        let path = form.text("path");
        let max_versions = form
            .text("max_versions")
            .parse::<u32>()
            .map_err(|_| PageError::bad_request("versions to keep must be a number"))?;
        let settings = MetadataSettings { max_versions: Some(max_versions), ..Default::default() };
        let to = format!("/ui/secret?path={}", encode(&path));
        Ok((Operation::KvSetMetadata { path, settings }, to))
    })
    .await
}

async fn rotation(State(ui): Shared, req: axum::extract::Request) -> Response {
    let (caller, inc) = incoming(req, false).await;
    if !caller.signed_in() {
        return redirect("/ui/login");
    }
    let path = inc.query.get("path").filter(|p| !p.is_empty()).map(str::to_string);
    let list = match ui.call(&caller, Operation::RotationStatus { path: path.clone() }).await {
        Ok(Reply::Rotations(r)) => r,
        Ok(_) | Err(CoreError::NotFound(_)) => Vec::new(),
        Err(e) => return ui.error(&caller, e.into()),
    };
    let now_ops: Vec<Operation> = list.iter().map(|r| Operation::RotationNow { path: r.config.path.clone() }).collect();
    let can = allowed(&ui, &caller, now_ops).await;
    let rows: Vec<_> = list
        .iter()
        .zip(can)
        .map(|(r, can_rotate)| {
            let (c, s) = (&r.config, &r.state);
            json!({
                "path": c.path, "rotator": format!("{:?}", c.rotator).to_lowercase(),
                "schedule": match &c.schedule {
                    arca_core::rotation::Schedule::Every { ms } => format!("every {}", human(*ms)),
                    arca_core::rotation::Schedule::Cron { expr } => format!("cron {expr}"),
                } + if c.enabled { "" } else { " (disabled)" },
                "last_run": s.last_finished_ms.map_or("-".into(), date), "next_run": date(s.next_run_ms),
                "rotations": s.rotations, "attempts": s.attempts, "error": s.last_error, "failed": s.failed,
                "can_rotate": can_rotate,
            })
        })
        .collect();
    let timeline = match &path {
        Some(p) => {
            let filter =
                AuditFilter { path_prefix: format!("sys/rotation/rotate/{p}"), limit: 200, ..Default::default() };
            match ui.call(&caller, Operation::AuditList(filter)).await {
                Ok(Reply::AuditRecords(records)) => Some(
                    records
                        .iter()
                        .rev()
                        .map(|r| {
                            let step = r.operation.strip_prefix("RotationStep.").unwrap_or(&r.operation);
                            let what = if r.error.is_empty() {
                                format!("{step}: {}", r.outcome)
                            } else {
                                format!("{step}: {} ({})", r.outcome, r.error)
                            };
                            json!({"time": date(r.time_ms), "what": what})
                        })
                        .collect::<Vec<_>>(),
                ),
                _ => Some(Vec::new()),
            }
        }
        None => None,
    };
    let notice = inc.query.get("started").map(|_| "Rotation started; the leader runs it now.");
    ui.render(&caller, "rotation.html", "rotation", "Rotation", context! { rotations => rows, timeline, path, notice })
}

fn human(ms: u64) -> String {
    match ms {
        ms if ms % 86_400_000 == 0 => format!("{}d", ms / 86_400_000),
        ms if ms % 3_600_000 == 0 => format!("{}h", ms / 3_600_000),
        ms if ms % 60_000 == 0 => format!("{}m", ms / 60_000),
        ms if ms % 1000 == 0 => format!("{}s", ms / 1000),
        ms => format!("{ms}ms"),
    }
}

async fn rotate_now(State(ui): Shared, req: axum::extract::Request) -> Response {
    act(&ui, req, |form| {
        let path = form.text("path");
        let to = format!("/ui/rotation?path={}&started=1", encode(&path));
        Ok((Operation::RotationNow { path }, to))
    })
    .await
}

/// The audit filter from the query: `since` (a duration back from now, or an RFC 3339 time),
/// `path`, `who` (identity or accessor), `outcome`, and `after` (records after a sequence).
fn audit_filter(q: &Form) -> Result<AuditFilter, PageError> {
    let since = q.text("since");
    let since_ms = if since.is_empty() {
        None
    } else if let Ok(secs) = arca_core::parse_duration_secs(&since) {
        let back = i64::try_from(secs).unwrap_or(i64::MAX).saturating_mul(1000);
        Some(chrono::Utc::now().timestamp_millis().saturating_sub(back))
    } else {
        let t = chrono::DateTime::parse_from_rfc3339(&since)
            .map_err(|_| PageError::bad_request("since: a duration (1h) or a time (2026-11-28T10:00:00Z)"))?;
        Some(t.timestamp_millis())
    };
    let who = q.text("who");
    let (identity, accessor) = if who.len() == 24 && who.chars().all(|c| c.is_ascii_hexdigit()) {
        (String::new(), who)
    } else {
        (who, String::new())
    };
    Ok(AuditFilter {
        from_seq: q.text("after").parse::<u64>().map_or(0, |a| a + 1),
        since_ms,
        until_ms: None,
        path_prefix: q.text("path"),
        accessor,
        identity,
        outcome: q.text("outcome"),
        limit: 200,
    })
}

fn record_row(r: &AuditRecord) -> serde_json::Value {
    let who = if !r.caller.identity.is_empty() {
        r.caller.identity.clone()
    } else if !r.caller.accessor.is_empty() {
        format!("accessor {}", r.caller.accessor)
    } else {
        "-".into()
    };
    let class = if r.decision == "denied" || r.outcome == "permission_denied" || r.outcome == "unauthenticated" {
        "denied"
    } else if !r.error.is_empty() {
        "error"
    } else {
        ""
    };
    json!({"seq": r.seq, "time": date(r.time_ms), "node": r.node, "operation": r.operation, "path": r.path, "who": who,
           "decision": r.decision, "outcome": r.outcome, "error": r.error, "class": class})
}

async fn audit(State(ui): Shared, req: axum::extract::Request) -> Response {
    let (caller, inc) = incoming(req, false).await;
    if !caller.signed_in() {
        return redirect("/ui/login");
    }
    let filter = match audit_filter(&inc.query) {
        Ok(f) => f,
        Err(e) => return ui.error(&caller, e),
    };
    let records = match ui.call(&caller, Operation::AuditList(filter)).await {
        Ok(Reply::AuditRecords(r)) => r,
        Ok(_) => Vec::new(),
        Err(e) => return ui.error(&caller, e.into()),
    };
    let last_seq = records.iter().map(|r| r.seq).max().unwrap_or(0);
    let rows: Vec<_> = records.iter().rev().map(record_row).collect();
    // The chain check rehashes the whole trail and the grants report scans 30 days: on request
    // only, not on every load of the page.
    let verification = if inc.query.get("verify").is_none() {
        Vec::new()
    } else {
        match ui.call(&caller, Operation::AuditVerify { upto: None }).await.and_then(Reply::into_audit_verification) {
            Ok((node, v)) => {
                let hash: String = v.head.hash.iter().take(8).map(|b| format!("{b:02x}")).collect();
                vec![json!({
                    "node": node, "checked": v.checked, "head": format!("{} ({hash}…)", v.head.seq),
                    "result": match v.first_bad { Some(s) => format!("BROKEN at sequence {s}"), None => "intact".into() },
                })]
            }
            Err(e) => vec![json!({"node": "-", "checked": "-", "head": "-", "result": format!("not checked: {e}")})],
        }
    };
    let since_ms = chrono::Utc::now().timestamp_millis() - 30 * 86_400_000;
    let show_grants = inc.query.get("grants").is_some();
    let report =
        if show_grants { Some(ui.call(&caller, Operation::AuditUnusedGrants { since_ms }).await) } else { None };
    let grants: Vec<_> = match report {
        Some(Ok(Reply::Grants(g))) => g
            .iter()
            .filter(|g| !g.used)
            .map(|g| json!({"policy": g.policy, "capability": g.capability, "pattern": g.pattern, "anchor": anchor(&g.pattern),
                            "holders": if g.holders.is_empty() { "-".to_string() } else { g.holders.join(", ") }}))
            .collect(),
        _ => Vec::new(),
    };
    let others: Vec<_> = match ui.call(&caller, Operation::Members).await {
        Ok(Reply::Members(m)) => m
            .iter()
            .filter(|m| m.id != ui.node_id() && plain_host_port(&m.api_addr))
            .map(|m| json!({"id": m.id, "api_addr": m.api_addr}))
            .collect(),
        _ => Vec::new(),
    };
    let f = json!({"since": inc.query.text("since"), "path": inc.query.text("path"), "who": inc.query.text("who"), "outcome": inc.query.text("outcome")});
    ui.render(
        &caller,
        "audit.html",
        "audit",
        "Audit trail",
        context! { records => rows, last_seq, verification, grants, show_grants, f, others, query => audit_query(&inc.query) },
    )
}

/// The live tail's poll: records after `after`, as JSON (the filter of the page applies).
async fn audit_records(State(ui): Shared, req: axum::extract::Request) -> Response {
    let (caller, inc) = incoming(req, false).await;
    let filter = match audit_filter(&inc.query) {
        Ok(f) => f,
        Err(e) => return (e.status, Json(json!({"error": e.message}))).into_response(),
    };
    match ui.call(&caller, Operation::AuditList(filter)).await {
        Ok(Reply::AuditRecords(r)) => Json(r.iter().map(record_row).collect::<Vec<_>>()).into_response(),
        Ok(_) => Json(json!([])).into_response(),
        Err(e) => {
            let e = PageError::from(e);
            (e.status, Json(json!({"error": e.message}))).into_response()
        }
    }
}

/// The anchor of a policy rule's line, from its path pattern.
fn anchor(pattern: &str) -> String {
    pattern.chars().map(|c| if c.is_ascii_alphanumeric() { c } else { '-' }).collect()
}

/// HCL split into highlighted tokens per line; a line holding a `path "…"` gets that rule's
/// anchor, so the unused-grants report can point at it.
fn highlight(text: &str) -> Vec<serde_json::Value> {
    const CAPS: &[&str] = &["create", "read", "update", "patch", "delete", "list", "sudo", "deny"];
    text.lines()
        .map(|line| {
            let mut tokens = Vec::new();
            let mut anchor_of = String::new();
            let (code, comment) = match line.find('#') {
                Some(i) if !line[..i].contains('"') || line[..i].matches('"').count() % 2 == 0 => {
                    (&line[..i], &line[i..])
                }
                _ => (line, ""),
            };
            let mut rest = code;
            while !rest.is_empty() {
                if let Some(stripped) = rest.strip_prefix('"') {
                    let end = stripped.find('"').map_or(stripped.len(), |e| e + 1);
                    let s = &rest[..=end.min(rest.len() - 1)];
                    let inner = s.trim_matches('"');
                    let class = if CAPS.contains(&inner) { "cap" } else { "str" };
                    if anchor_of.is_empty() && code.trim_start().starts_with("path") {
                        anchor_of = anchor(inner);
                    }
                    tokens.push(json!({"class": class, "text": s}));
                    rest = &rest[s.len()..];
                } else {
                    let end = rest.find('"').unwrap_or(rest.len());
                    let chunk = &rest[..end];
                    let class = if ["path", "capabilities"].iter().any(|k| chunk.trim_start().starts_with(k)) {
                        "kw"
                    } else {
                        ""
                    };
                    tokens.push(json!({"class": class, "text": chunk}));
                    rest = &rest[end..];
                }
            }
            if !comment.is_empty() {
                tokens.push(json!({"class": "com", "text": comment}));
            }
            json!({"anchor": anchor_of, "tokens": tokens})
        })
        .collect()
}

async fn policies(State(ui): Shared, req: axum::extract::Request) -> Response {
    let (caller, inc) = incoming(req, false).await;
    if !caller.signed_in() {
        return redirect("/ui/login");
    }
    let names = match ui.call(&caller, Operation::PolicyList).await {
        Ok(Reply::Names(n)) => n,
        Ok(_) => Vec::new(),
        Err(e) => return ui.error(&caller, e.into()),
    };
    let name = inc.query.text("name");
    let mut error = None;
    let policy = if name.is_empty() {
        None
    } else {
        match ui.call(&caller, Operation::PolicyRead { name: name.clone() }).await {
            Ok(Reply::Policy { text, .. }) => Some(highlight(&text)),
            Ok(_) => None,
            Err(e) => {
                error = Some(e.to_string());
                None
            }
        }
    };
    let check = inc.query.text("check");
    let accessor = inc.query.text("accessor");
    let caps = if check.is_empty() {
        None
    } else {
        let target = if accessor.is_empty() { TokenRef::SelfToken } else { TokenRef::Accessor(accessor.clone()) };
        match ui.call(&caller, Operation::Capabilities { target, paths: vec![check.clone()] }).await {
            Ok(Reply::Capabilities(c)) => Some(c.into_iter().flat_map(|(_, caps)| caps).collect::<Vec<_>>().join(", ")),
            Ok(_) => None,
            Err(e) => {
                error = Some(e.to_string());
                None
            }
        }
    };
    ui.render(
        &caller,
        "policies.html",
        "policies",
        "Policies",
        context! { names, name, policy, check, accessor, caps, error },
    )
}

async fn identities(State(ui): Shared, req: axum::extract::Request) -> Response {
    let (caller, _) = incoming(req, false).await;
    if !caller.signed_in() {
        return redirect("/ui/login");
    }
    let mut methods = Vec::new();
    for (method, name, title) in [
        (Method::AppRole, "approle", "AppRole"),
        (Method::Cert, "cert", "TLS certificate"),
        (Method::Jwt, "jwt", "JWT"),
    ] {
        let (roles, error) = match ui.call(&caller, Operation::RoleList { method }).await {
            Ok(Reply::Names(names)) => {
                let mut roles = Vec::new();
                for n in names {
                    let summary = match ui.call(&caller, Operation::RoleRead { method, name: n.clone() }).await {
                        Ok(Reply::Role(r)) => {
                            let t = r.token();
                            format!("policies {}; ttl {}s; uses {}", t.policies.join(", "), t.ttl_secs, t.num_uses)
                        }
                        Ok(_) => String::new(),
                        Err(e) => format!("({e})"),
                    };
                    roles.push(json!({"name": n, "summary": summary}));
                }
                (roles, None)
            }
            Ok(_) => (Vec::new(), None),
            Err(e) => (Vec::new(), Some(e.to_string())),
        };
        methods.push(json!({"name": name, "title": title, "roles": roles, "error": error}));
    }
    ui.render(&caller, "identities.html", "identities", "Identities", context! { methods })
}

/// Whether a member's advertised address is a bare `host:port` (it goes into a link).
fn plain_host_port(addr: &str) -> bool {
    !addr.is_empty() && addr.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':' | '[' | ']'))
}

/// The page's own filter, for the verify and grants links.
fn audit_query(q: &Form) -> String {
    ["since", "path", "who", "outcome"]
        .iter()
        .filter(|k| !q.text(k).is_empty())
        .map(|k| format!("{k}={}&", encode(&q.text(k))))
        .collect()
}

/// Percent-encodes a query value.
fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' | b'/' => (b as char).to_string(),
            b => format!("%{b:02X}"),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policies_are_highlighted_with_an_anchor_per_rule() {
        let lines = highlight("# app\npath \"secret/data/app/*\" {\n  capabilities = [\"read\", \"list\"]\n}");
        assert_eq!(lines[0]["tokens"][0]["class"], "com");
        assert_eq!(lines[1]["anchor"], "secret-data-app--");
        assert!(lines[2]["tokens"].as_array().unwrap().iter().any(|t| t["class"] == "cap" && t["text"] == "\"read\""));
    }

    #[test]
    fn field_lines() {
        assert_eq!(parse_fields("a=1\n b = x=y \n").unwrap().0.get("b").map(String::as_str), Some(" x=y"));
        assert!(parse_fields("novalue").is_err());
        assert!(parse_fields("").is_err());
    }

    #[test]
    fn the_templates_parse_and_render() {
        let env = super::super::templates();
        for name in [
            "login.html",
            "cluster.html",
            "secrets.html",
            "secret.html",
            "rotation.html",
            "audit.html",
            "policies.html",
            "identities.html",
            "error.html",
        ] {
            assert!(env.get_template(name).is_ok(), "{name}");
        }
    }
}
