//! A connection to one node's client API.

use std::path::Path;
use std::time::Duration;

use arca_server::proto::{
    audit_client::AuditClient, auth_client::AuthClient, kv_client::KvClient, policy_client::PolicyClient,
    rotation_client::RotationClient, sys_client::SysClient, token_client::TokenClient, watch_client::WatchClient,
};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

use super::{CliError, CliResult};

pub struct Client {
    channel: Channel,
    /// For requests that may take long (backups): the same endpoint without the short
    /// per-request timeout.
    endpoint: Endpoint,
    token: Option<String>,
    identity: bool,
    pub addr: String,
}

impl Client {
    /// Connects to `addr` (`https://host:port`), trusting the CA certificate `cacert`.
    /// With `identity` (certificate and key files), presents that client certificate.
    pub async fn connect(
        addr: &str,
        cacert: Option<&Path>,
        token: Option<&str>,
        identity: Option<(&Path, &Path)>,
    ) -> CliResult<Client> {
        let uri = if addr.contains("://") { addr.to_string() } else { format!("https://{addr}") };
        let mut tls = ClientTlsConfig::new();
        if let Some(path) = cacert {
            let pem = std::fs::read(path)
                .map_err(|e| CliError::new(format!("cannot read the CA certificate {}: {e}", path.display())))?;
            tls = tls.ca_certificate(Certificate::from_pem(pem));
        }
        if let Some((cert, key)) = identity {
            let read =
                |p: &Path| std::fs::read(p).map_err(|e| CliError::new(format!("cannot read {}: {e}", p.display())));
            tls = tls.identity(Identity::from_pem(read(cert)?, read(key)?));
        }
        let endpoint = Endpoint::from_shared(uri.clone())
            .map_err(|e| CliError::usage(format!("invalid address {addr:?}: {e}")))?
            .tls_config(tls)
            .map_err(|e| CliError::usage(format!("TLS setup for {addr}: {e}")))?
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(30));
        let channel = endpoint.connect().await.map_err(|e| CliError::new(connect_error(&uri, &e, cacert.is_some())))?;
        Ok(Client { channel, endpoint, token: token.map(str::to_string), identity: identity.is_some(), addr: uri })
    }

    /// A request carrying the token, if any.
    pub fn req<T>(&self, msg: T) -> tonic::Request<T> {
        let mut r = tonic::Request::new(msg);
        if let Some(t) = &self.token {
            if let Ok(v) = format!("Bearer {t}").parse() {
                r.metadata_mut().insert("authorization", v);
            }
        }
        r
    }

    pub fn sys(&self) -> SysClient<Channel> {
        SysClient::new(self.channel.clone())
    }

    /// `sys()` on a connection whose requests may run for hours (a backup of a large vault).
    pub async fn sys_unhurried(&self) -> CliResult<SysClient<Channel>> {
        let endpoint = self.endpoint.clone().timeout(Duration::from_secs(24 * 3600));
        let channel = endpoint.connect().await.map_err(|e| CliError::new(format!("{}: {e}", self.addr)))?;
        Ok(SysClient::new(channel))
    }

    pub fn kv(&self) -> KvClient<Channel> {
        KvClient::new(self.channel.clone())
    }

    pub fn tokens(&self) -> TokenClient<Channel> {
        TokenClient::new(self.channel.clone())
    }

    pub fn policies(&self) -> PolicyClient<Channel> {
        PolicyClient::new(self.channel.clone())
    }

    pub fn audit(&self) -> AuditClient<Channel> {
        AuditClient::new(self.channel.clone())
    }

    pub fn auth(&self) -> AuthClient<Channel> {
        AuthClient::new(self.channel.clone())
    }

    pub fn rotation(&self) -> RotationClient<Channel> {
        RotationClient::new(self.channel.clone())
    }

    pub fn watch(&self) -> WatchClient<Channel> {
        WatchClient::new(self.channel.clone())
    }

    /// Whether a client certificate is presented.
    pub fn has_identity(&self) -> bool {
        self.identity
    }
}

/// One line for a failed connection: the innermost cause (transport errors nest the same
/// message several times) and the hint that fits it, so a refused connection does not send
/// the user after their CA file.
fn connect_error(uri: &str, e: &tonic::transport::Error, have_ca: bool) -> String {
    let mut causes: Vec<String> = Vec::new();
    let mut source: Option<&dyn std::error::Error> = Some(e);
    while let Some(s) = source {
        let m = s.to_string();
        if !causes.contains(&m) {
            causes.push(m);
        }
        source = s.source();
    }
    let all = causes.join(": ").to_lowercase();
    let cause = causes.last().cloned().unwrap_or_else(|| e.to_string());
    let hint = if all.contains("connection refused") {
        "nothing listens there: is the node running, and is ARCA_ADDR (--addr) right?"
    } else if ["certificate", "unknownissuer", "invalid peer", "handshake"].iter().any(|k| all.contains(k)) {
        if have_ca {
            "the server's certificate is not from the CA in ARCA_CACERT (--cacert), or does not name this host"
        } else {
            "the server's certificate is not trusted: set ARCA_CACERT (or --cacert) to the cluster's CA certificate"
        }
    } else if all.contains("timed out") || all.contains("timeout") {
        "no answer in time: check the address, the port and any firewall"
    } else if all.contains("lookup") || all.contains("resolve") || all.contains("name or service") {
        "the host name does not resolve"
    } else {
        ""
    };
    if hint.is_empty() {
        format!("cannot reach {uri}: {cause}")
    } else {
        format!("cannot reach {uri}: {cause} ({hint})")
    }
}
