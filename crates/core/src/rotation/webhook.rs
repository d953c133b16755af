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

/// Whether the node's allow-list admits `url`.
pub(crate) fn allowed(settings: &RotationSettings, url: &str) -> Result<()> {
    if !url.starts_with("https://") {
        return Err(Error::InvalidArgument(format!("webhook URL {url:?} must use https://")));
    }
    let ok = settings.webhook_allow.iter().any(|entry| match entry.strip_suffix('*') {
        Some(prefix) => url.starts_with(prefix),
        None => url == entry,
    });
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
    if !status.is_success() {
        let text = String::from_utf8_lossy(&bytes[..bytes.len().min(512)]).into_owned();
        return Err(fail(format!("answered {status}: {text}")));
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
            webhook_allow: vec!["https://hooks.internal/rotate/*".into(), "https://one.example/x".into()],
            ..Default::default()
        };
        allowed(&s, "https://hooks.internal/rotate/db").unwrap();
        allowed(&s, "https://one.example/x").unwrap();
        for bad in ["https://one.example/x/y", "http://hooks.internal/rotate/db", "https://169.254.169.254/latest"] {
            assert!(allowed(&s, bad).is_err(), "{bad}");
        }
    }
}
