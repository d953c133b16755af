//! The `postgres` rotator: changes a PostgreSQL role's password over an admin connection whose
//! credentials are themselves a secret in Arca.
//!
//! Why one file of about 500 lines: some 430 lines of code (the connection with its TLS modes,
//! SCRAM-only authentication and host allow-list, and the two strategies, which share them) and
//! 80 of tests.
//!
//! Parameters: `admin` (the KV path of the admin credential: fields `username`, `password`),
//! `host` (default `127.0.0.1`), `port` (5432), `dbname` (`postgres`), `strategy` (`single` or
//! `alternating`), `username` (single) or `usernames` (`a,b`, alternating), `tls`
//! (`disable` or `verify-full`; `verify-full` by default when `ca` is given) with `ca` (the PEM
//! the server certificate must chain to), and the password policy of the `random` rotator
//! (`length`, `classes`, `exclude`).
//!
//! What the vault may be made to contact is the node's choice, not the caller's: `host:port`
//! must be in the node config's `rotation.postgres_allow`, checked when the rotation is set and
//! again on every connection. Passwords leave only through SCRAM-SHA-256: a server (or anyone
//! in the path) that asks for a cleartext or MD5 password is refused before it gets an answer.
//! Errors keep the SQLSTATE and a fixed reason, never the server's text.
//!
//! * single user: the role's password changes in place; between `set` and `finish` only the
//!   pending password works (clients retry with a refreshed secret).
//! * alternating users: two roles take turns; each rotation changes the role that is *not*
//!   current, so the previous credential keeps working until the next rotation.
//!
//! The password reaches PostgreSQL only as a SCRAM-SHA-256 verifier computed here, so the
//! plaintext never appears in the server's statement log or `pg_stat_activity`.

use std::collections::BTreeMap;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_postgres::config::SslMode;
use tokio_postgres::tls::{ChannelBinding, MakeTlsConnect, TlsConnect, TlsStream};
use tokio_postgres::NoTls;

use super::{random, RotationSettings};
use crate::{Error, Result, SecretData};

const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const DEFAULT_PORT: u16 = 5432;

/// A `rotation.postgres_allow` entry, or a rotation's target: host (lowercase) and port.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct HostPort {
    host: String,
    port: u16,
}

impl HostPort {
    /// `host:port`, `[v6]:port`, or `host` (port 5432).
    pub(crate) fn parse(entry: &str) -> Result<HostPort> {
        let bad = || Error::InvalidArgument(format!("postgres_allow entry {entry:?} is not host:port"));
        let port = |p: &str| p.parse::<u16>().map_err(|_| bad());
        let (host, port) = if let Some(rest) = entry.strip_prefix('[') {
            let (host, after) = rest.split_once(']').ok_or_else(bad)?;
            match after {
                "" => (host, DEFAULT_PORT),
                _ => (host, port(after.strip_prefix(':').ok_or_else(bad)?)?),
            }
        } else {
            match entry.split(':').count() {
                1 => (entry, DEFAULT_PORT),
                2 => {
                    let (h, p) = entry.split_once(':').expect("one colon");
                    (h, port(p)?)
                }
                _ => (entry, DEFAULT_PORT), // a bare IPv6 address
            }
        };
        let host = host.to_ascii_lowercase();
        if host.is_empty() || host.contains('/') || host.contains('@') || port == 0 {
            return Err(bad());
        }
        Ok(HostPort { host, port })
    }
}

/// The server a rotation with `params` connects to.
fn target(params: &BTreeMap<String, String>) -> Result<HostPort> {
    let port = match params.get("port") {
        None => DEFAULT_PORT,
        Some(p) => p
            .parse()
            .ok()
            .filter(|p| *p != 0)
            .ok_or_else(|| Error::InvalidArgument(format!("postgres rotator: port {p:?} is not a port number")))?,
    };
    let host = params.get("host").map(String::as_str).unwrap_or("127.0.0.1").to_ascii_lowercase();
    Ok(HostPort { host, port })
}

/// Refuses a target the node's allow-list does not name.
fn allowed(settings: &RotationSettings, params: &BTreeMap<String, String>) -> Result<HostPort> {
    let t = target(params)?;
    if settings.postgres_allow.iter().filter_map(|e| HostPort::parse(e).ok()).any(|e| e == t) {
        Ok(t)
    } else {
        Err(Error::InvalidArgument(format!(
            "postgres rotator: {}:{} is not in this node's rotation.postgres_allow list",
            t.host, t.port
        )))
    }
}

enum Strategy {
    Single(String),
    Alternating([String; 2]),
}

fn strategy(params: &BTreeMap<String, String>) -> Result<Strategy> {
    let bad = |m: &str| Error::InvalidArgument(format!("postgres rotator: {m}"));
    match params.get("strategy").map(String::as_str).unwrap_or("single") {
        "single" => Ok(Strategy::Single(params.get("username").cloned().ok_or_else(|| bad("'username' is required"))?)),
        "alternating" => {
            let users: Vec<String> = params
                .get("usernames")
                .ok_or_else(|| bad("'usernames' (two roles, comma-separated) is required"))?
                .split(',')
                .map(|u| u.trim().to_string())
                .collect();
            match <[String; 2]>::try_from(users) {
                Ok([a, b]) if !a.is_empty() && !b.is_empty() && a != b => Ok(Strategy::Alternating([a, b])),
                _ => Err(bad("'usernames' must name two different roles, like 'app_a,app_b'")),
            }
        }
        other => Err(bad(&format!("unknown strategy {other:?}: use single or alternating"))),
    }
}

/// Checks the parameters when a rotation is configured, so mistakes show up then and not at
/// the first scheduled run.
pub(crate) fn validate(settings: &RotationSettings, params: &BTreeMap<String, String>) -> Result<()> {
    strategy(params)?;
    allowed(settings, params)?;
    random::Policy::from_params(params)?;
    if !params.contains_key("admin") {
        return Err(Error::InvalidArgument(
            "postgres rotator: 'admin' (the KV path of the admin credential) is required".into(),
        ));
    }
    tls(params)?;
    Ok(())
}

/// The new credential: a fresh password for the role this rotation changes.
pub(crate) fn create(params: &BTreeMap<String, String>, current: Option<&SecretData>) -> Result<SecretData> {
    let user = match strategy(params)? {
        Strategy::Single(user) => user,
        Strategy::Alternating([a, b]) => {
            // The role that is not current; the first rotation starts with the first role.
            if current.and_then(|c| c.0.get("username")) == Some(&a) {
                b
            } else {
                a
            }
        }
    };
    let mut next = current.cloned().unwrap_or_default();
    let policy = random::Policy::from_params(params)?;
    next.0.insert("username".into(), user);
    next.0.insert("password".into(), policy.generate()?.to_string());
    Ok(next)
}

/// Applies the pending password to its role, as the admin.
pub(crate) async fn set(
    settings: &RotationSettings,
    params: &BTreeMap<String, String>,
    admin: &SecretData,
    pending: &SecretData,
) -> Result<()> {
    let (user, password) = credential(pending, "the pending value")?;
    let (admin_user, admin_password) = credential(admin, "the admin credential")?;
    let client = connect(settings, params, admin_user, admin_password).await?;
    let verifier = postgres_protocol::password::scram_sha_256(password.as_bytes());
    // Utility statements take no bind parameters: the role is quoted as an identifier and the
    // verifier (base64 and `$`, no quotes) as a literal.
    let sql = format!("ALTER ROLE {} WITH LOGIN PASSWORD '{verifier}'", quote_ident(user));
    client.batch_execute(&sql).await.map_err(|e| failed(&format!("ALTER ROLE {user}"), &e))?;
    Ok(())
}

/// Proves the pending credential works: logs in with it and runs a query.
pub(crate) async fn test(
    settings: &RotationSettings,
    params: &BTreeMap<String, String>,
    pending: &SecretData,
) -> Result<()> {
    let (user, password) = credential(pending, "the pending value")?;
    let client = connect(settings, params, user, password).await?;
    client.simple_query("SELECT 1").await.map_err(|e| failed("test query", &e))?;
    Ok(())
}

fn credential<'a>(data: &'a SecretData, what: &str) -> Result<(&'a str, &'a str)> {
    match (data.0.get("username"), data.0.get("password")) {
        (Some(u), Some(p)) => Ok((u, p)),
        _ => Err(Error::Rotation(format!("{what} needs the fields 'username' and 'password'"))),
    }
}

fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// A failure as the SQLSTATE and a fixed reason: the server's message text (which a hostile or
/// misconfigured server controls, and which may quote what it was sent) is never kept.
fn failed(what: &str, e: &tokio_postgres::Error) -> Error {
    let reason = match e.code() {
        Some(code) => {
            let class = match &code.code()[..2] {
                "28" => "authentication failed",
                "42" => "not permitted or not found",
                "08" => "connection failure",
                "53" | "57" => "the server is unavailable or shutting down",
                _ => "the server refused the statement",
            };
            format!("{class} (SQLSTATE {})", code.code())
        }
        None => match std::error::Error::source(e).and_then(|s| s.downcast_ref::<io::Error>()) {
            Some(io) => format!("connection error ({})", io.kind()),
            None => "connection, TLS or protocol error".into(),
        },
    };
    Error::Rotation(format!("postgres {what}: {reason}"))
}

fn tls(params: &BTreeMap<String, String>) -> Result<Option<rustls::ClientConfig>> {
    let default = if params.contains_key("ca") { "verify-full" } else { "disable" };
    match params.get("tls").map(String::as_str).unwrap_or(default) {
        "disable" => Ok(None),
        "verify-full" => {
            let pem = params
                .get("ca")
                .ok_or_else(|| Error::InvalidArgument("postgres rotator: tls=verify-full needs 'ca' (PEM)".into()))?;
            let mut roots = rustls::RootCertStore::empty();
            for cert in CertificateDer::pem_slice_iter(pem.as_bytes()) {
                let cert =
                    cert.map_err(|e| Error::InvalidArgument(format!("postgres rotator: 'ca' is not PEM: {e}")))?;
                roots
                    .add(cert)
                    .map_err(|e| Error::InvalidArgument(format!("postgres rotator: 'ca' certificate refused: {e}")))?;
            }
            let provider = Arc::new(rustls::crypto::ring::default_provider());
            let config = rustls::ClientConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .map_err(|e| Error::Internal(e.to_string()))?
                .with_root_certificates(roots)
                .with_no_client_auth();
            Ok(Some(config))
        }
        other => Err(Error::InvalidArgument(format!("postgres rotator: tls {other:?}: use disable or verify-full"))),
    }
}

async fn connect(
    settings: &RotationSettings,
    params: &BTreeMap<String, String>,
    user: &str,
    password: &str,
) -> Result<tokio_postgres::Client> {
    let target = allowed(settings, params).map_err(|e| Error::Rotation(e.to_string()))?;
    let mut config = tokio_postgres::Config::new();
    config
        .dbname(params.get("dbname").map(String::as_str).unwrap_or("postgres"))
        .user(user)
        .password(password)
        .application_name("arca-rotation");
    let what = format!("login as {user}");
    let refused = Arc::new(AtomicBool::new(false));
    let tls = tls(params)?;
    let connecting = async {
        // The allow-listed name is what is dialled: no second resolution inside the driver.
        let tcp = tokio::net::TcpStream::connect((target.host.as_str(), target.port))
            .await
            .map_err(|e| Error::Rotation(format!("postgres {what}: cannot connect ({})", e.kind())))?;
        let client = match tls {
            None => {
                config.ssl_mode(SslMode::Disable);
                let stream = ScramOnly { inner: tcp, watch: AuthWatch::new(refused.clone()) };
                let (client, conn) = config.connect_raw(stream, NoTls).await.map_err(|e| failed(&what, &e))?;
                tokio::spawn(conn);
                client
            }
            Some(tls) => {
                config.ssl_mode(SslMode::Require);
                let mut make = tokio_postgres_rustls::MakeRustlsConnect::new(tls);
                let inner = <_ as MakeTlsConnect<tokio::net::TcpStream>>::make_tls_connect(&mut make, &target.host)
                    .map_err(|e| Error::Rotation(format!("postgres {what}: bad server name: {e}")))?;
                let connector = ScramOnlyTls { inner, refused: refused.clone() };
                let (client, conn) = config.connect_raw(tcp, connector).await.map_err(|e| failed(&what, &e))?;
                tokio::spawn(conn);
                client
            }
        };
        Ok(client)
    };
    let result = tokio::time::timeout(CONNECT_TIMEOUT, connecting)
        .await
        .map_err(|_| Error::Rotation(format!("postgres {what}: no answer within {CONNECT_TIMEOUT:?}")))?;
    if refused.load(Ordering::SeqCst) {
        return Err(Error::Rotation(format!(
            "postgres {what}: the server asked for a cleartext or MD5 password; Arca sends passwords only \
             through SCRAM-SHA-256 (use scram-sha-256 in the server's pg_hba.conf)"
        )));
    }
    result
}

/// Watches what the server sends until authentication succeeds, and breaks the connection
/// if it asks for the password in a form that gives it away (cleartext or MD5), before the
/// driver can answer. Anything the server sends is a backend message: a tag byte, a 4-byte
/// length (counting itself), the body; an authentication request (`R`) starts with its type.
struct AuthWatch {
    header: [u8; 9],
    have: usize,
    skip: usize,
    done: bool,
    refused: Arc<AtomicBool>,
}

impl AuthWatch {
    fn new(refused: Arc<AtomicBool>) -> AuthWatch {
        AuthWatch { header: [0; 9], have: 0, skip: 0, done: false, refused }
    }

    /// Feeds bytes the server sent; an error refuses the connection.
    fn feed(&mut self, mut bytes: &[u8]) -> io::Result<()> {
        while !self.done && !bytes.is_empty() {
            if self.skip > 0 {
                let n = self.skip.min(bytes.len());
                self.skip -= n;
                bytes = &bytes[n..];
                continue;
            }
            let need = if self.have >= 5 && self.header[0] == b'R' { 9 } else { 5 };
            let n = (need - self.have).min(bytes.len());
            self.header[self.have..self.have + n].copy_from_slice(&bytes[..n]);
            self.have += n;
            bytes = &bytes[n..];
            if self.have < need {
                continue;
            }
            let len = u32::from_be_bytes(self.header[1..5].try_into().expect("4 bytes")) as usize;
            if len < 4 || (self.header[0] == b'R' && len < 8) {
                return Err(io::Error::new(io::ErrorKind::InvalidData, "malformed message from the server"));
            }
            if self.header[0] == b'R' && need == 5 {
                continue; // read the authentication type too
            }
            if self.header[0] == b'R' {
                match u32::from_be_bytes(self.header[5..9].try_into().expect("4 bytes")) {
                    0 => self.done = true,
                    // SASL (SCRAM-SHA-256, verified by the driver), its continuation and final.
                    10..=12 => {}
                    _ => {
                        self.refused.store(true, Ordering::SeqCst);
                        return Err(io::Error::new(
                            io::ErrorKind::PermissionDenied,
                            "the server asked for a password in a form other than SCRAM",
                        ));
                    }
                }
                self.skip = len - 8;
            } else {
                self.skip = len - 4;
            }
            self.have = 0;
        }
        Ok(())
    }
}

/// A stream whose incoming bytes pass through an [`AuthWatch`].
struct ScramOnly<S> {
    inner: S,
    watch: AuthWatch,
}

impl<S: AsyncRead + Unpin> AsyncRead for ScramOnly<S> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => Poll::Ready(this.watch.feed(&buf.filled()[before..])),
            other => other,
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for ScramOnly<S> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

impl<S: TlsStream + Unpin> TlsStream for ScramOnly<S> {
    fn channel_binding(&self) -> ChannelBinding {
        self.inner.channel_binding()
    }
}

/// A TLS connector whose sessions are [`ScramOnly`]: the watch sits above TLS.
struct ScramOnlyTls<T> {
    inner: T,
    refused: Arc<AtomicBool>,
}

impl<S, T> TlsConnect<S> for ScramOnlyTls<T>
where
    T: TlsConnect<S>,
    T::Future: Send + 'static,
    T::Stream: 'static,
{
    type Stream = ScramOnly<T::Stream>;
    type Error = T::Error;
    type Future = Pin<Box<dyn std::future::Future<Output = std::result::Result<Self::Stream, T::Error>> + Send>>;

    fn connect(self, stream: S) -> Self::Future {
        let handshake = self.inner.connect(stream);
        let watch = AuthWatch::new(self.refused);
        Box::pin(async move { handshake.await.map(|inner| ScramOnly { inner, watch }) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    fn local() -> RotationSettings {
        RotationSettings { postgres_allow: vec!["127.0.0.1:5432".into(), "[::1]".into()], ..Default::default() }
    }

    #[test]
    fn only_allow_listed_servers_are_contacted() {
        let s = local();
        s.check().unwrap();
        let base = [("admin", "a"), ("username", "u")];
        validate(&s, &params(&base)).unwrap();
        validate(&s, &params(&[base[0], base[1], ("host", "::1")])).unwrap();
        for (host, port) in [("10.0.0.5", "5432"), ("127.0.0.1", "5433"), ("localhost", "5432"), ("127.0.0.1", "0")] {
            let e = validate(&s, &params(&[base[0], base[1], ("host", host), ("port", port)])).unwrap_err();
            assert!(e.to_string().contains("postgres_allow") || e.to_string().contains("port"), "{e}");
        }
        for bad in ["", "h:x", "h:0", "/var/run/postgresql", "u@h:5432"] {
            let s = RotationSettings { postgres_allow: vec![bad.into()], ..Default::default() };
            assert!(s.check().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn cleartext_and_md5_requests_are_refused_and_scram_passes() {
        let msg = |tag: u8, body: &[u8]| [&[tag][..], &(body.len() as u32 + 4).to_be_bytes(), body].concat();
        // SASL request, then AuthenticationOk, then anything: passes, even one byte at a time.
        let ok = [msg(b'R', &[0, 0, 0, 10, b'S', 0, 0]), msg(b'R', &[0, 0, 0, 12, 1, 2]), msg(b'R', &[0; 4])].concat();
        let flag = Arc::new(AtomicBool::new(false));
        let mut w = AuthWatch::new(flag.clone());
        for b in &ok {
            w.feed(&[*b]).unwrap();
        }
        assert!(w.done && !flag.load(Ordering::SeqCst));
        for kind in [3u8, 5] {
            let flag = Arc::new(AtomicBool::new(false));
            let mut w = AuthWatch::new(flag.clone());
            let notice = msg(b'N', b"hello\0");
            let stream = [notice, msg(b'R', &[0, 0, 0, kind, 1, 2, 3, 4])].concat();
            assert!(w.feed(&stream).is_err(), "auth type {kind}");
            assert!(flag.load(Ordering::SeqCst));
        }
    }

    #[test]
    fn alternating_takes_the_role_that_is_not_current() {
        let p = params(&[("strategy", "alternating"), ("usernames", "app_a, app_b"), ("admin", "db/admin")]);
        let first = create(&p, None).unwrap();
        assert_eq!(first.0["username"], "app_a");
        let second = create(&p, Some(&first)).unwrap();
        assert_eq!(second.0["username"], "app_b");
        assert_eq!(create(&p, Some(&second)).unwrap().0["username"], "app_a");
        assert_ne!(first.0["password"], second.0["password"]);
    }

    #[test]
    fn configuration_mistakes_are_named() {
        for (ps, expect) in [
            (vec![("admin", "a")], "'username' is required"),
            (vec![("admin", "a"), ("strategy", "alternating"), ("usernames", "x,x")], "two different roles"),
            (vec![("username", "u")], "'admin'"),
            (vec![("admin", "a"), ("username", "u"), ("tls", "verify-full")], "needs 'ca'"),
            (vec![("admin", "a"), ("username", "u"), ("strategy", "dual")], "unknown strategy"),
        ] {
            let e = validate(&local(), &params(&ps)).err().unwrap().to_string();
            assert!(e.contains(expect), "{e}");
        }
        assert_eq!(quote_ident("we\"ird"), "\"we\"\"ird\"");
    }
}
