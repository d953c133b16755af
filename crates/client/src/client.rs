//! [`Client`]: connections to the members, authentication and token lifecycle, retries.
//!
//! Why one file of about 700 lines: connection, failover, login and token renewal are one state
//! machine around one `Client`, and splitting it would spread that machine's fields over
//! files. The wire-level escape hatch is in `raw.rs`, the public views in `types.rs`.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock, Weak};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use arca_proto as proto;
use proto::{
    audit_client::AuditClient, auth_client::AuthClient, kv_client::KvClient, policy_client::PolicyClient,
    rotation_client::RotationClient, sys_client::SysClient, token_client::TokenClient, watch_client::WatchClient,
};
use rand::Rng;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};
use tonic::{Code, Status};
use tracing::{debug, info, warn};
use zeroize::{Zeroize, Zeroizing};

use crate::error::{describe, Cause};
use crate::{Error, Result, Secret, SecretMetadata, TokenInfo, Which};

/// How the client proves who it is. `Debug` never shows a credential.
#[derive(Clone)]
pub enum Auth {
    /// A token obtained elsewhere. It is renewed, but cannot be replaced when it runs out.
    Token(Zeroizing<String>),
    /// AppRole: a role id and a secret id.
    AppRole { role_id: String, secret_id: Zeroizing<String> },
    /// A signed JWT (OIDC, CI, a Kubernetes service account) for a JWT role.
    Jwt { role: String, jwt: Zeroizing<String> },
    /// Like [`Auth::Jwt`], reading the JWT from a file at every login (Kubernetes rotates
    /// projected service-account tokens in place).
    JwtFile { role: String, path: PathBuf },
    /// The TLS client certificate set with [`ClientBuilder::identity`], for a cert role.
    Cert { role: String },
    /// No credentials: only the calls that need none (seal status, health, unsealing, logins
    /// made through the raw stubs).
    None,
}

impl Auth {
    pub fn token(token: impl Into<String>) -> Auth {
        Auth::Token(Zeroizing::new(token.into()))
    }

    pub fn app_role(role_id: impl Into<String>, secret_id: impl Into<String>) -> Auth {
        Auth::AppRole { role_id: role_id.into(), secret_id: Zeroizing::new(secret_id.into()) }
    }

    pub fn jwt(role: impl Into<String>, jwt: impl Into<String>) -> Auth {
        Auth::Jwt { role: role.into(), jwt: Zeroizing::new(jwt.into()) }
    }

    pub fn cert(role: impl Into<String>) -> Auth {
        Auth::Cert { role: role.into() }
    }

    fn can_log_in(&self) -> bool {
        !matches!(self, Auth::Token(_) | Auth::None)
    }
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Auth::Token(_) => f.write_str("Token(<redacted>)"),
            Auth::AppRole { role_id, .. } => write!(f, "AppRole({role_id}, <secret id redacted>)"),
            Auth::Jwt { role, .. } => write!(f, "Jwt({role}, <redacted>)"),
            Auth::JwtFile { role, path } => write!(f, "JwtFile({role}, {})", path.display()),
            Auth::Cert { role } => write!(f, "Cert({role})"),
            Auth::None => f.write_str("None"),
        }
    }
}

/// How long and how often a call is retried when a member is unavailable (down, sealed,
/// without a leader). Sleeps are jittered so a fleet of clients does not retry in step.
#[derive(Debug, Clone)]
pub struct RetryPolicy {
    pub initial_backoff: Duration,
    pub max_backoff: Duration,
    /// A call gives up when its next retry would start later than this after the first try.
    pub max_elapsed: Duration,
}

impl RetryPolicy {
    /// One attempt, no retry and no failover: for requests that must reach the member they
    /// name (an unseal share is for that node, not whichever answers).
    pub fn none() -> RetryPolicy {
        RetryPolicy { max_elapsed: Duration::ZERO, ..RetryPolicy::default() }
    }
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            initial_backoff: Duration::from_millis(50),
            max_backoff: Duration::from_secs(2),
            max_elapsed: Duration::from_secs(30),
        }
    }
}

/// Builds a [`Client`]; see [`Client::builder`]. Cloning it keeps every setting, so a tool
/// can build a second client that differs in one (a longer timeout, one member).
#[derive(Clone)]
pub struct ClientBuilder {
    addrs: Vec<String>,
    ca: Option<CaSource>,
    identity: Option<(Vec<u8>, Zeroizing<Vec<u8>>)>,
    auth: Option<Auth>,
    request_timeout: Option<Duration>,
    retry: RetryPolicy,
    token_lifecycle: bool,
}

impl Default for ClientBuilder {
    fn default() -> Self {
        ClientBuilder {
            addrs: Vec::new(),
            ca: None,
            identity: None,
            auth: None,
            request_timeout: None,
            retry: RetryPolicy::default(),
            token_lifecycle: true,
        }
    }
}

#[derive(Clone)]
enum CaSource {
    Pem(Vec<u8>),
    File(PathBuf),
}

impl ClientBuilder {
    /// A member's client API (`https://host:8200`); call once per member. Calls fail over
    /// between them in order.
    pub fn addr(mut self, addr: impl Into<String>) -> Self {
        self.addrs.push(addr.into());
        self
    }

    pub fn addrs<S: Into<String>>(mut self, addrs: impl IntoIterator<Item = S>) -> Self {
        self.addrs.extend(addrs.into_iter().map(Into::into));
        self
    }

    /// The CA certificate (PEM) that signed the members' certificates.
    pub fn ca_cert(mut self, pem: impl Into<Vec<u8>>) -> Self {
        self.ca = Some(CaSource::Pem(pem.into()));
        self
    }

    /// Like [`ClientBuilder::ca_cert`], read from a file when the client is built.
    pub fn ca_cert_file(mut self, path: impl AsRef<Path>) -> Self {
        self.ca = Some(CaSource::File(path.as_ref().to_path_buf()));
        self
    }

    /// A client certificate and its key (PEM), presented on every connection (needed by
    /// [`Auth::Cert`]).
    pub fn identity(mut self, cert_pem: impl Into<Vec<u8>>, key_pem: impl Into<Vec<u8>>) -> Self {
        self.identity = Some((cert_pem.into(), Zeroizing::new(key_pem.into())));
        self
    }

    pub fn auth(mut self, auth: Auth) -> Self {
        self.auth = Some(auth);
        self
    }

    /// Deadline of one attempt of a unary call (default 30 s).
    pub fn request_timeout(mut self, timeout: Duration) -> Self {
        self.request_timeout = Some(timeout);
        self
    }

    pub fn retry(mut self, retry: RetryPolicy) -> Self {
        self.retry = retry;
        self
    }

    /// Replaces the member list (keeping every other setting).
    pub fn only_addr(mut self, addr: impl Into<String>) -> Self {
        self.addrs = vec![addr.into()];
        self
    }

    /// With `false`, a static token is used as given: not looked up when the client is built
    /// and not renewed. For short-lived tools (one command, one request), where a lookup would
    /// cost a round trip and an audit record. On by default.
    pub fn token_lifecycle(mut self, on: bool) -> Self {
        self.token_lifecycle = on;
        self
    }

    /// Sets up the connections (lazily: a member that is down now is tried again later) and
    /// logs in. With an auth method other than a static token, the token is then renewed at
    /// about two thirds of its TTL, and replaced by a new login when renewal is refused.
    pub async fn build(self) -> Result<Client> {
        if self.addrs.is_empty() {
            return Err(Error::Config("no member address: call .addr(\"https://host:8200\")".into()));
        }
        let auth = self.auth.ok_or_else(|| Error::Config("no authentication: call .auth(Auth::…)".into()))?;
        if matches!(auth, Auth::Cert { .. }) && self.identity.is_none() {
            return Err(Error::Config("Auth::Cert needs a client certificate: call .identity(cert, key)".into()));
        }
        let mut tls = ClientTlsConfig::new();
        match self.ca {
            Some(CaSource::Pem(pem)) => tls = tls.ca_certificate(Certificate::from_pem(pem)),
            Some(CaSource::File(path)) => {
                let pem = std::fs::read(&path)
                    .map_err(|e| Error::Config(format!("cannot read the CA certificate {}: {e}", path.display())))?;
                tls = tls.ca_certificate(Certificate::from_pem(pem));
            }
            None => {
                return Err(Error::Config(
                    "no CA certificate: call .ca_cert(pem) or .ca_cert_file(path) with the cluster's CA".into(),
                ))
            }
        }
        if let Some((cert, key)) = &self.identity {
            tls = tls.identity(Identity::from_pem(cert, key.as_slice()));
        }
        let timeout = self.request_timeout.unwrap_or(Duration::from_secs(30));
        let mut members = Vec::new();
        for addr in &self.addrs {
            let uri = if addr.contains("://") { addr.clone() } else { format!("https://{addr}") };
            let channel = Endpoint::from_shared(uri.clone())
                .map_err(|e| Error::Config(format!("invalid address {addr:?}: {e}")))?
                .tls_config(tls.clone())
                .map_err(|e| Error::Config(format!("TLS setup for {addr}: {e}")))?
                .connect_timeout(Duration::from_secs(2))
                .timeout(timeout)
                .tcp_nodelay(true)
                // Finds a dead member under a long-lived watch stream within seconds.
                .http2_keep_alive_interval(Duration::from_secs(5))
                .keep_alive_timeout(Duration::from_secs(5))
                .keep_alive_while_idle(true)
                .connect_lazy();
            members.push(Member { addr: uri, channel });
        }
        let inner = Arc::new(Inner {
            members,
            addrs: self.addrs.join(", "),
            current: AtomicUsize::new(0),
            token: Default::default(),
            lease: Mutex::new(None),
            auth,
            retry: self.retry,
            renewer: Default::default(),
        });
        let client = Client { inner };
        if let (false, Auth::Token(token)) = (self.token_lifecycle, &client.inner.auth) {
            *client.inner.token.write().expect("token lock") = Some(token.clone());
            return Ok(client);
        }
        client.log_in().await?;
        client.inner.renewer.set(tokio::spawn(renew_until_dropped(Arc::downgrade(&client.inner))));
        Ok(client)
    }
}

struct Member {
    addr: String,
    channel: Channel,
}

/// One login request, whichever the method.
#[derive(Clone)]
enum Login {
    AppRole(proto::AppRoleLoginRequest),
    Jwt(proto::JwtLoginRequest),
    Cert(proto::CertLoginRequest),
}

impl Login {
    /// Clears the credential it carries.
    fn zeroize(mut self) {
        match &mut self {
            Login::AppRole(r) => r.secret_id.zeroize(),
            Login::Jwt(r) => r.jwt.zeroize(),
            Login::Cert(_) => {}
        }
    }
}

/// What the client knows of its token's life, from the login or the last renewal.
#[derive(Debug, Clone, Copy)]
struct Lease {
    /// Unix ms; 0: never expires.
    expires_ms: i64,
    max_expires_ms: i64,
    renewable: bool,
    /// Local Unix ms when this lease was learned.
    learned_ms: i64,
}

struct Inner {
    members: Vec<Member>,
    /// The members' addresses, for errors.
    addrs: String,
    /// The member calls go to first; moves on when one is unavailable.
    current: AtomicUsize,
    /// Shared with every stub handed out, so a stub that outlives its `Client` still carries
    /// the token (and sees a new one after a login).
    token: Arc<RwLock<Option<Zeroizing<String>>>>,
    lease: Mutex<Option<Lease>>,
    auth: Auth,
    retry: RetryPolicy,
    renewer: crate::task::Background,
}

/// Adds the client's current token to every request.
#[derive(Clone)]
pub struct TokenInterceptor {
    token: Arc<RwLock<Option<Zeroizing<String>>>>,
}

impl tonic::service::Interceptor for TokenInterceptor {
    fn call(&mut self, mut req: tonic::Request<()>) -> Result<tonic::Request<()>, Status> {
        if let Some(token) = self.token.read().expect("token lock").as_ref() {
            let value = Zeroizing::new(format!("Bearer {}", token.as_str()));
            let value = value.parse().map_err(|_| Status::unauthenticated("the token is not valid header text"))?;
            req.metadata_mut().insert("authorization", value);
        }
        Ok(req)
    }
}

/// A channel that carries the client's token.
pub type AuthedChannel = InterceptedService<Channel, TokenInterceptor>;

/// Typed stubs of every service of the client API, on one member's connection, each request
/// carrying the client's token. Handed to the closure of `Client::call` (feature `raw`).
#[derive(Clone)]
pub struct Services {
    pub sys: SysClient<AuthedChannel>,
    pub kv: KvClient<AuthedChannel>,
    pub token: TokenClient<AuthedChannel>,
    pub policy: PolicyClient<AuthedChannel>,
    pub auth: AuthClient<AuthedChannel>,
    pub audit: AuditClient<AuthedChannel>,
    pub rotation: RotationClient<AuthedChannel>,
    pub watch: WatchClient<AuthedChannel>,
}

/// A connection to an Arca cluster. Cheap to clone; every clone shares connections and token.
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

/// Whether another attempt (on the next member) may succeed: the member is down, sealed, has no
/// leader, or the write lost a race and says to retry. A connection that broke under a call
/// (`UNKNOWN` from the transport) is not retried: a write may have landed, and a second copy
/// from the client would be a second version. (The watcher resumes its stream by itself.)
fn retryable(s: &Status) -> bool {
    matches!(s.code(), Code::Unavailable | Code::Aborted)
}

impl Client {
    pub fn builder() -> ClientBuilder {
        ClientBuilder::default()
    }

    pub(crate) fn services_on(&self, member: usize) -> Services {
        let channel = self.inner.members[member % self.inner.members.len()].channel.clone();
        let ch = InterceptedService::new(channel, TokenInterceptor { token: self.inner.token.clone() });
        Services {
            sys: SysClient::new(ch.clone()),
            kv: KvClient::new(ch.clone()),
            token: TokenClient::new(ch.clone()),
            policy: PolicyClient::new(ch.clone()),
            auth: AuthClient::new(ch.clone()),
            audit: AuditClient::new(ch.clone()),
            rotation: RotationClient::new(ch.clone()),
            watch: WatchClient::new(ch),
        }
    }

    /// The token in use now (a new login replaces it), for a token sink that other tools on
    /// the host read. Keep it out of logs.
    pub fn token(&self) -> Option<Zeroizing<String>> {
        self.inner.token.read().expect("token lock").clone()
    }

    /// The address calls go to first right now.
    pub fn current_member(&self) -> &str {
        let i = self.inner.current.load(Ordering::Relaxed);
        &self.inner.members[i % self.inner.members.len()].addr
    }

    /// Runs `f` against a member, with failover: on `UNAVAILABLE` (member down, sealed, no
    /// leader) it moves to the next member after a jittered backoff, within the retry policy's
    /// time budget; on `UNAUTHENTICATED` it logs in again once (when it can) and retries.
    /// Any other error is returned as is. `f` may run more than once: writes are retried too.
    pub(crate) async fn call_with<T, F, Fut>(&self, mut f: F, may_log_in: bool) -> Result<T>
    where
        F: FnMut(Services) -> Fut,
        Fut: std::future::Future<Output = Result<tonic::Response<T>, Status>>,
    {
        let policy = &self.inner.retry;
        let started = Instant::now();
        let mut backoff = policy.initial_backoff;
        let mut attempts = 0u32;
        let mut logged_in_again = false;
        loop {
            let member = self.inner.current.load(Ordering::Relaxed);
            let status = match f(self.services_on(member)).await {
                Ok(reply) => return Ok(reply.into_inner()),
                Err(s) => s,
            };
            attempts += 1;
            if status.code() == Code::Unauthenticated && may_log_in && !logged_in_again && self.inner.auth.can_log_in()
            {
                debug!("token refused; logging in again");
                // Boxed: logging in makes calls of its own.
                Box::pin(self.log_in()).await?;
                logged_in_again = true;
                continue;
            }
            // A member's own answer, with no budget to try another: that answer is the error.
            let answered = std::error::Error::source(&status).is_none();
            if !retryable(&status) || (answered && policy.max_elapsed.is_zero()) {
                return Err(Error::from_status(&status));
            }
            let sleep = jitter(backoff);
            let (cause, detail) = describe(&status);
            // A certificate the CA does not vouch for will not be different a moment later;
            // with other members there is still somewhere to go. (A name that does not resolve
            // may: DNS fails transiently.)
            let hopeless = self.inner.members.len() == 1 && cause == Cause::Untrusted;
            if hopeless || started.elapsed() + sleep > policy.max_elapsed {
                return Err(Error::Unreachable { addrs: self.inner.addrs.clone(), attempts, cause, detail });
            }
            let next = (member + 1) % self.inner.members.len();
            let _ = self.inner.current.compare_exchange(member, next, Ordering::Relaxed, Ordering::Relaxed);
            debug!(from = %self.inner.members[member].addr, to = %self.inner.members[next].addr, error = %status.message(), "member unavailable; failing over");
            tokio::time::sleep(sleep).await;
            backoff = (backoff * 2).min(policy.max_backoff);
        }
    }

    /// [`Client::call_with`] for one request message, cloned for each attempt.
    pub(crate) async fn send<R, T, F, Fut>(&self, req: R, mut f: F) -> Result<T>
    where
        R: Clone,
        F: FnMut(Services, R) -> Fut,
        Fut: std::future::Future<Output = Result<tonic::Response<T>, Status>>,
    {
        self.call_with(|s| f(s, req.clone()), true).await
    }

    /// Logs in with the configured method and installs the new token.
    pub async fn log_in(&self) -> Result<()> {
        let login = match &self.inner.auth {
            Auth::None => return Ok(()),
            Auth::Token(token) => {
                *self.inner.token.write().expect("token lock") = Some(token.clone());
                let info = self.lookup_self_wire().await?;
                self.set_lease(&info);
                return Ok(());
            }
            Auth::AppRole { role_id, secret_id } => Login::AppRole(proto::AppRoleLoginRequest {
                role_id: role_id.clone(),
                secret_id: secret_id.to_string(),
            }),
            Auth::Jwt { role, jwt } => Login::Jwt(proto::JwtLoginRequest { role: role.clone(), jwt: jwt.to_string() }),
            Auth::JwtFile { role, path } => {
                let jwt = Zeroizing::new(
                    std::fs::read_to_string(path)
                        .map_err(|e| Error::Login(format!("cannot read the JWT file {}: {e}", path.display())))?,
                );
                Login::Jwt(proto::JwtLoginRequest { role: role.clone(), jwt: jwt.trim().to_string() })
            }
            Auth::Cert { role } => Login::Cert(proto::CertLoginRequest { role: role.clone() }),
        };
        let response = self
            .call_with(
                |mut s| {
                    let login = login.clone();
                    async move {
                        match login {
                            Login::AppRole(req) => s.auth.login_app_role(req).await,
                            Login::Jwt(req) => s.auth.login_jwt(req).await,
                            Login::Cert(req) => s.auth.login_cert(req).await,
                        }
                    }
                },
                false,
            )
            .await
            .map_err(|e| match e {
                Error::Status { code: crate::Code::Unauthenticated | crate::Code::PermissionDenied, message } => {
                    Error::Login(message)
                }
                other => other,
            });
        login.zeroize();
        let mut response = response?;
        let token = Zeroizing::new(std::mem::take(&mut response.token));
        let info = response.info.unwrap_or_default();
        *self.inner.token.write().expect("token lock") = Some(token);
        self.set_lease(&info);
        info!(accessor = %info.accessor, expires_ms = info.expires_ms, "logged in");
        Ok(())
    }

    fn set_lease(&self, info: &proto::TokenInfo) {
        *self.inner.lease.lock().expect("lease lock") = Some(Lease {
            expires_ms: info.expires_ms,
            max_expires_ms: info.max_expires_ms,
            renewable: info.renewable,
            learned_ms: now_ms(),
        });
    }

    /// The client's own token, as the cluster sees it.
    pub async fn lookup_self(&self) -> Result<TokenInfo> {
        Ok(self.lookup_self_wire().await?.into())
    }

    async fn lookup_self_wire(&self) -> Result<proto::TokenInfo> {
        self.call_with(|mut s| async move { s.token.lookup(proto::TokenTarget { target: None }).await }, false).await
    }

    /// Renews the client's token now (the client also does it on its own).
    pub async fn renew_self(&self) -> Result<TokenInfo> {
        let info = self
            .call_with(
                |mut s| async move { s.token.renew(proto::RenewRequest { target: None, increment_seconds: 0 }).await },
                false,
            )
            .await?;
        self.set_lease(&info);
        Ok(info.into())
    }

    /// Reads a secret: its current version, a numbered one, or the one a stage label names.
    pub async fn read(&self, path: &str, which: Which) -> Result<Secret> {
        let (version, stage) = match which {
            Which::Current => (0, String::new()),
            Which::Version(v) => (v, String::new()),
            Which::Pending => (0, "pending".to_string()),
            Which::Previous => (0, "previous".to_string()),
        };
        let req = proto::GetRequest { path: path.to_string(), version, stage };
        let reply = self.send(req, |mut s, r| async move { s.kv.get(r).await }).await?;
        Ok(Secret::from_reply(path, reply))
    }

    /// Writes a new version of a secret; returns its number.
    pub async fn write(&self, path: &str, data: impl IntoIterator<Item = (String, String)>) -> Result<u64> {
        let req = proto::PutRequest { path: path.to_string(), data: data.into_iter().collect(), cas: None };
        let reply = self.send(req.clone(), |mut s, r| async move { s.kv.put(r).await }).await;
        let mut req = req;
        req.data.values_mut().for_each(Zeroize::zeroize);
        Ok(reply?.version)
    }

    /// The keys directly under a prefix (folders end in `/`).
    pub async fn list(&self, prefix: &str) -> Result<Vec<String>> {
        let req = proto::ListRequest { prefix: prefix.to_string() };
        let reply = self.send(req, |mut s, r| async move { s.kv.list(r).await }).await?;
        Ok(reply.keys)
    }

    /// A secret's metadata: versions, stage labels.
    pub async fn metadata(&self, path: &str) -> Result<SecretMetadata> {
        let req = proto::MetadataRequest { path: path.to_string() };
        let reply = self.send(req, |mut s, r| async move { s.kv.get_metadata(r).await }).await?;
        Ok(reply.into())
    }

    pub(crate) fn member_count(&self) -> usize {
        self.inner.members.len()
    }

    /// Moves calls to the member after `from` (a watch whose stream broke there).
    pub(crate) fn fail_over_from(&self, from: usize) -> usize {
        let next = (from + 1) % self.inner.members.len();
        let _ = self.inner.current.compare_exchange(from, next, Ordering::Relaxed, Ordering::Relaxed);
        self.inner.current.load(Ordering::Relaxed)
    }

    pub(crate) fn current_index(&self) -> usize {
        self.inner.current.load(Ordering::Relaxed)
    }

    pub(crate) fn retry_policy(&self) -> &RetryPolicy {
        &self.inner.retry
    }
}

/// A sleep between `backoff / 2` and `backoff`.
pub(crate) fn jitter(backoff: Duration) -> Duration {
    let half = backoff / 2;
    half + half.mul_f64(rand::thread_rng().gen::<f64>())
}

/// When to act on a lease: at two thirds of what remained when it was learned.
fn renew_at(lease: &Lease) -> Option<i64> {
    (lease.expires_ms != 0).then(|| lease.learned_ms + (lease.expires_ms - lease.learned_ms).max(0) * 2 / 3)
}

/// Keeps the client's token alive until the client is dropped: renews it at about two thirds
/// of its TTL, logs in again when renewal is refused or the token reached its max TTL.
async fn renew_until_dropped(inner: Weak<Inner>) {
    let mut failures = 0u32;
    loop {
        let Some(client) = inner.upgrade().map(|inner| Client { inner }) else { return };
        let Some(lease) = *client.inner.lease.lock().expect("lease lock") else { return };
        let Some(at) = renew_at(&lease) else { return };
        let wait = Duration::from_millis((at - now_ms()).max(0) as u64);
        drop(client);
        tokio::time::sleep(wait).await;
        let Some(client) = inner.upgrade().map(|inner| Client { inner }) else { return };
        let at_max = lease.max_expires_ms != 0 && lease.expires_ms >= lease.max_expires_ms;
        let renewed = if lease.renewable && !at_max {
            let before = lease.expires_ms;
            match client.renew_self().await {
                Ok(_) if client.inner.lease.lock().expect("lease lock").is_some_and(|l| l.expires_ms > before) => {
                    Ok(())
                }
                Ok(_) => Err("the token is at its max TTL".to_string()),
                Err(e) => Err(e.to_string()),
            }
        } else {
            Err("the token cannot be renewed further".into())
        };
        let Err(why) = renewed else {
            failures = 0;
            continue;
        };
        if !client.inner.auth.can_log_in() {
            warn!(reason = %why, "the static token cannot be renewed and will expire; configure a login method");
            return;
        }
        match client.log_in().await {
            Ok(()) => failures = 0,
            Err(e) => {
                failures += 1;
                let backoff = jitter(
                    (client.inner.retry.initial_backoff * 2u32.pow(failures.min(6))).min(Duration::from_secs(30)),
                );
                warn!(error = %e, retry_in = ?backoff, "logging in again failed");
                // Try again soon, whatever the old lease says.
                *client.inner.lease.lock().expect("lease lock") = Some(Lease {
                    expires_ms: now_ms() + backoff.as_millis() as i64 * 3 / 2 + 1,
                    max_expires_ms: 0,
                    renewable: false,
                    learned_ms: now_ms(),
                });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renewal_is_due_at_two_thirds_of_the_remaining_ttl() {
        let lease = Lease { expires_ms: 31_000, max_expires_ms: 0, renewable: true, learned_ms: 1_000 };
        assert_eq!(renew_at(&lease), Some(21_000));
        let forever = Lease { expires_ms: 0, ..lease };
        assert_eq!(renew_at(&forever), None);
    }

    #[test]
    fn jitter_stays_within_half_and_full_backoff() {
        for _ in 0..1000 {
            let j = jitter(Duration::from_millis(100));
            assert!(j >= Duration::from_millis(50) && j <= Duration::from_millis(100), "{j:?}");
        }
    }

    #[test]
    fn credentials_never_show_in_debug_output() {
        let shown = format!("{:?} {:?}", Auth::app_role("role-1", "s3cret-id"), Auth::token("hvs.tok"));
        assert!(!shown.contains("s3cret-id") && !shown.contains("hvs.tok"), "{shown}");
        assert!(shown.contains("role-1"));
    }
}
