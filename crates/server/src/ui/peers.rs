//! Every member's seal state, for the cluster page: each member's own answer to the Vault API's
//! unauthenticated `GET /v1/sys/seal-status` (what any client may ask), over HTTPS trusting the
//! client-facing CA that signs every node's API certificate. All members at once, 2 s each.

use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const TIMEOUT: Duration = Duration::from_secs(2);
/// A seal-status answer is a few hundred bytes.
const MAX_ANSWER: u64 = 64 * 1024;

/// How to reach the other members; `None`: no CA to trust, so no member is asked.
#[derive(Clone)]
pub(crate) struct Peers {
    tls: Option<Arc<rustls::ClientConfig>>,
}

impl Peers {
    pub fn new(ca_pem: &[u8]) -> Peers {
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_slice_iter(ca_pem).flatten() {
            let _ = roots.add(cert);
        }
        let tls = (!roots.is_empty())
            .then(|| {
                rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                    .with_safe_default_protocol_versions()
                    .ok()
                    .map(|b| Arc::new(b.with_root_certificates(roots).with_no_client_auth()))
            })
            .flatten();
        Peers { tls }
    }

    /// `api_addr`'s seal state: "unsealed", "sealed (2 of 3 shares)", or why it is unknown.
    pub async fn seal_state(&self, api_addr: &str) -> String {
        let Some(tls) = &self.tls else { return "-".into() };
        match tokio::time::timeout(TIMEOUT, ask(tls.clone(), api_addr)).await {
            Ok(Ok(v)) => describe(&v),
            Ok(Err(e)) => format!("unknown ({e})"),
            Err(_) => "unknown (no answer in 2 s)".into(),
        }
    }
}

fn describe(v: &Value) -> String {
    match (v["initialized"].as_bool(), v["sealed"].as_bool()) {
        (Some(false), _) => "not initialized".into(),
        (_, Some(false)) => "unsealed".into(),
        (_, Some(true)) => {
            format!("sealed ({} of {} shares)", v["progress"].as_u64().unwrap_or(0), v["t"].as_u64().unwrap_or(0))
        }
        _ => "unknown (an unexpected answer)".into(),
    }
}

async fn ask(tls: Arc<rustls::ClientConfig>, api_addr: &str) -> Result<Value, String> {
    let host = match api_addr.rsplit_once(':') {
        Some((h, _)) => h.trim_start_matches('[').trim_end_matches(']'),
        None => api_addr,
    };
    let name = ServerName::try_from(host.to_string()).map_err(|_| format!("{host} is not a host name"))?;
    let tcp = tokio::net::TcpStream::connect(api_addr).await.map_err(|e| e.to_string())?;
    let mut stream = tokio_rustls::TlsConnector::from(tls).connect(name, tcp).await.map_err(|e| e.to_string())?;
    let request = format!("GET /v1/sys/seal-status HTTP/1.1\r\nHost: {api_addr}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.map_err(|e| e.to_string())?;
    let mut raw = Vec::new();
    (&mut stream).take(MAX_ANSWER).read_to_end(&mut raw).await.map_err(|e| e.to_string())?;
    let text = String::from_utf8_lossy(&raw);
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("");
    serde_json::from_str(body.trim()).map_err(|_| "an answer that is not the seal status".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seal_states_read_as_words() {
        assert_eq!(describe(&serde_json::json!({"initialized": true, "sealed": false})), "unsealed");
        assert_eq!(
            describe(&serde_json::json!({"initialized": true, "sealed": true, "progress": 1, "t": 3})),
            "sealed (1 of 3 shares)"
        );
        assert_eq!(describe(&serde_json::json!({"initialized": false, "sealed": true})), "not initialized");
    }
}
