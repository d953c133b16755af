//! The `webhook` rotator: the same JSON as the `command` rotator, POSTed over HTTPS.
//!
//! Arbitrary URLs from the API would let anyone who may configure a rotation make the vault
//! call into the internal network (SSRF), so a URL is used only if it matches the node's own
//! `rotation.webhook_allow` list (exact, or a prefix written with a trailing `*`), checked when
//! the rotation is configured and again on every call. Only `https://`, verified against the
//! node's `rotation.webhook_ca_file`. The body is signed: `X-Arca-Timestamp` (ms) and
//! `X-Arca-Signature: sha256=<hex HMAC-SHA256(key, timestamp + "." + body)>`, the key read from
//! the KV secret named by the `signing_key` parameter (field `key`), so the receiver can reject
//! forged and replayed calls.

use std::sync::Arc;
use std::time::Duration;

use hmac::{Hmac, Mac};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use sha2::Sha256;

use super::RotationSettings;
use crate::{Error, Result};

const MAX_RESPONSE: usize = 1 << 20;

/// A URL taken apart for matching: never compared as a string, so `https://hooks.corp*`
/// cannot admit `hooks.corp.evil.net` or `hooks.corp@evil.net`.
#[derive(Debug, PartialEq, Eq)]
struct Target {
    host: String,
    port: u16,
    /// The path, starting with `/`.
    path: String,
    query: Option<String>,
}

impl Target {
    fn parse(url: &str) -> std::result::Result<Target, String> {
        let uri: hyper::Uri = url.parse().map_err(|_| "is not a URL".to_string())?;
        if uri.scheme_str() != Some("https") {
            return Err("must use https://".into());
        }
        let authority = uri.authority().ok_or("has no host")?;
        // Userinfo (`user@host`) is how `https://good@evil` reads as `good` to a person.
        if authority.as_str().contains('@') {
            return Err("must not contain user information ('@')".into());
        }
        let host = authority.host().to_ascii_lowercase();
        if host.is_empty() {
            return Err("has no host".into());
        }
        let path = if uri.path().is_empty() { "/".to_string() } else { uri.path().to_string() };
        // Dot segments and encoded dots or slashes let a receiver's normalisation move the
        // call outside the listed path.
        let lower = path.to_ascii_lowercase();
        if path.split('/').any(|seg| seg == "." || seg == "..")
            || lower.contains("%2e")
            || lower.contains("%2f")
            || lower.contains("%5c")
            || path.contains('\\')
        {
            return Err("must not contain dot segments or encoded '.', '/' or '\\'".into());
        }
        Ok(Target { host, port: authority.port_u16().unwrap_or(443), path, query: uri.query().map(str::to_string) })
    }
}

/// One `rotation.webhook_allow` entry: a URL (exact match, query included), or a URL ending
/// in `*` that admits the same scheme, host and port and any path at or below its path, on
/// segment boundaries (`https://h/rotate/*` admits `/rotate/db`, not `/rotate-all`).
#[derive(Debug)]
pub(crate) struct AllowEntry {
    target: Target,
    prefix: bool,
}

impl AllowEntry {
    pub(crate) fn parse(entry: &str) -> Result<AllowEntry> {
        let (url, prefix) = match entry.strip_suffix('*') {
            Some(u) => (u, true),
            None => (entry, false),
        };
        if url.contains('*') {
            return Err(Error::InvalidArgument(format!(
                "webhook_allow entry {entry:?}: '*' is allowed only at the end, after a '/' or the host"
            )));
        }
        let target =
            Target::parse(url).map_err(|why| Error::InvalidArgument(format!("webhook_allow entry {entry:?} {why}")))?;
        if prefix && target.query.is_some() {
            return Err(Error::InvalidArgument(format!("webhook_allow entry {entry:?}: a prefix cannot have a query")));
        }
        Ok(AllowEntry { target, prefix })
    }

    fn admits(&self, t: &Target) -> bool {
        let a = &self.target;
        if a.host != t.host || a.port != t.port {
            return false;
        }
        if !self.prefix {
            return a.path == t.path && a.query == t.query;
        }
        let base = a.path.trim_end_matches('/');
        t.path == a.path || t.path == base || t.path.strip_prefix(base).is_some_and(|rest| rest.starts_with('/'))
    }
}

/// Whether the node's allow-list admits `url`.
pub(crate) fn allowed(settings: &RotationSettings, url: &str) -> Result<()> {
    let target = Target::parse(url).map_err(|why| Error::InvalidArgument(format!("webhook URL {url:?} {why}")))?;
    let ok = settings
        .webhook_allow
        .iter()
        .filter_map(|entry| AllowEntry::parse(entry).ok())
        .any(|entry| entry.admits(&target));
    if ok {
        Ok(())
    } else {
        Err(Error::InvalidArgument(format!("webhook URL {url:?} is not in this node's rotation.webhook_allow list")))
    }
}

/// POSTs `body` to `url`, signed with `key`; returns the JSON object the endpoint answered.
pub(crate) async fn post(
    settings: &RotationSettings,
    url: &str,
    key: &[u8],
    timeout: Duration,
    body: Vec<u8>,
) -> Result<serde_json::Value> {
    allowed(settings, url).map_err(|e| Error::Rotation(e.to_string()))?;
    tokio::time::timeout(timeout, call(settings, url, key, body))
        .await
        .map_err(|_| Error::Rotation(format!("webhook {url} did not answer within {timeout:?}")))?
}

async fn call(settings: &RotationSettings, url: &str, key: &[u8], body: Vec<u8>) -> Result<serde_json::Value> {
    let fail = |m: String| Error::Rotation(format!("webhook {url}: {m}"));
    let uri: hyper::Uri = url.parse().map_err(|e| fail(format!("not a URL: {e}")))?;
    let host = uri.host().ok_or_else(|| fail("no host".into()))?.to_string();
    let port = uri.port_u16().unwrap_or(443);
    let ca = settings
        .webhook_ca_file
        .as_ref()
        .ok_or_else(|| fail("this node has no rotation.webhook_ca_file to verify the endpoint with".into()))?;
    let pem = tokio::fs::read(ca).await.map_err(|e| fail(format!("cannot read {}: {e}", ca.display())))?;
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(&pem) {
        roots.add(cert.map_err(|e| fail(format!("bad CA file: {e}")))?).map_err(|e| fail(format!("bad CA: {e}")))?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::Internal(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let name = ServerName::try_from(host.clone()).map_err(|e| fail(format!("bad host name: {e}")))?;
    let tcp = tokio::net::TcpStream::connect((host.as_str(), port)).await.map_err(|e| fail(e.to_string()))?;
    let stream = tokio_rustls::TlsConnector::from(Arc::new(tls))
        .connect(name, tcp)
        .await
        .map_err(|e| fail(format!("TLS: {e}")))?;
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.map_err(|e| fail(e.to_string()))?;
    tokio::spawn(conn);

    let timestamp = crate::now_ms().to_string();
    let mut mac = Hmac::<Sha256>::new_from_slice(key).map_err(|e| Error::Internal(e.to_string()))?;
    mac.update(timestamp.as_bytes());
    mac.update(b".");
    mac.update(&body);
    let signature = format!("sha256={}", hex::encode(mac.finalize().into_bytes()));
    let authority = uri.authority().map(|a| a.to_string()).unwrap_or(host);
    let request = hyper::Request::post(uri.path_and_query().map(|p| p.as_str()).unwrap_or("/"))
        .header("host", authority)
        .header("content-type", "application/json")
        .header("x-arca-timestamp", timestamp)
        .header("x-arca-signature", signature)
        .body(Full::new(Bytes::from(body)))
        .map_err(|e| Error::Internal(e.to_string()))?;
    let response = sender.send_request(request).await.map_err(|e| fail(e.to_string()))?;
    let status = response.status();
    let bytes = Limited::new(response.into_body(), MAX_RESPONSE)
        .collect()
        .await
        .map_err(|e| fail(format!("reading the answer: {e}")))?
        .to_bytes();
    // The endpoint's own words never reach status, logs or the audit trail: an endpoint
    // (or whoever controls it) could echo what it was sent.
    if !status.is_success() {
        return Err(fail(format!("answered HTTP {}", status.as_u16())));
    }
    match serde_json::from_slice::<serde_json::Value>(&bytes) {
        Ok(v @ serde_json::Value::Object(_)) => Ok(v),
        _ => Err(fail("answered something that is not a JSON object".into())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_listed_https_urls_are_called() {
        let s = RotationSettings {
            webhook_allow: vec![
                "https://hooks.internal/rotate/*".into(),
                "https://one.example/x".into(),
                "https://hooks.corp*".into(),
            ],
            ..Default::default()
        };
        s.check().unwrap();
        for good in [
            "https://hooks.internal/rotate/db",
            "https://HOOKS.internal:443/rotate/a/b",
            "https://one.example/x",
            "https://hooks.corp/anything",
            "https://hooks.corp",
        ] {
            allowed(&s, good).unwrap_or_else(|e| panic!("{good}: {e}"));
        }
        for bad in [
            "https://one.example/x/y",
            "https://one.example/x?y=1",
            "http://hooks.internal/rotate/db",
            "https://169.254.169.254/latest",
            "https://hooks.internal/rotate-all",
            "https://hooks.internal/rotate/../admin",
            "https://hooks.internal/rotate/%2e%2e/admin",
            "https://hooks.internal:8443/rotate/db",
            "https://hooks.corp.evil.net/x",
            "https://hooks.corp@evil.net/x",
            "https://hooks.corp:444/x",
            "https://evil.net/?https://hooks.corp",
        ] {
            assert!(allowed(&s, bad).is_err(), "{bad}");
        }
        for bad_entry in ["http://h/x", "https://h/*/x", "https://u@h/", "https://h/x?q=1*"] {
            let s = RotationSettings { webhook_allow: vec![bad_entry.into()], ..Default::default() };
            assert!(s.check().is_err(), "{bad_entry}");
        }
    }
}
