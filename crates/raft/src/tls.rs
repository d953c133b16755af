//! Mutual TLS for the node-to-node port, and the node identity a certificate carries.
//!
//! The cluster CA is the only trust root: the server requires a client certificate chaining to
//! it, and the client accepts only a server certificate chaining to it. A node with a
//! certificate from any other CA (the client CA included) can neither join nor send a single
//! Raft message: the handshake fails before any request is read.
//!
//! Chaining to the cluster CA is not enough to be obeyed: a node certificate names its node id
//! as the DNS name `node-<id>.arca` ([`node_name`]), and the node-to-node service acts only for
//! certificates that name a current member (or the node being joined). Identity is the id, not
//! the address, so a node keeps its certificate when it moves, and a certificate can be renewed
//! without touching the membership.

use std::fmt;
use std::path::Path;

use rustls::pki_types::{CertificateDer, ServerName};
use rustls::server::ParsedCertificate;
use tonic::transport::{Certificate, ClientTlsConfig, Identity, ServerTlsConfig};

use crate::{Error, Result};

/// A peer slower than this to finish its TLS handshake on the node-to-node port is dropped.
const HANDSHAKE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// The DNS name a node certificate must carry for node `id`.
pub fn node_name(id: u64) -> String {
    format!("node-{id}.arca")
}

/// Whether `cert` (DER, the end entity) names node `id` ([`node_name`]). Says nothing about
/// its chain: the TLS handshake has checked that.
pub(crate) fn cert_names_node(cert: &CertificateDer<'_>, id: u64) -> bool {
    let Ok(parsed) = ParsedCertificate::try_from(cert) else { return false };
    let Ok(name) = ServerName::try_from(node_name(id)) else { return false };
    rustls::client::verify_server_name(&parsed, &name).is_ok()
}

/// PEM material of one node: the cluster CA, and this node's certificate chain and key.
#[derive(Clone)]
pub struct TlsConfig {
    pub ca_pem: Vec<u8>,
    pub cert_pem: Vec<u8>,
    pub key_pem: Vec<u8>,
}

impl fmt::Debug for TlsConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsConfig").finish_non_exhaustive()
    }
}

impl TlsConfig {
    /// Reads the three PEM files, naming the one that cannot be read.
    pub fn from_files(ca: &Path, cert: &Path, key: &Path) -> Result<Self> {
        let read = |p: &Path, what: &str| {
            std::fs::read(p).map_err(|e| Error::Tls(format!("cannot read the {what} file {}: {e}", p.display())))
        };
        let cfg =
            TlsConfig { ca_pem: read(ca, "CA")?, cert_pem: read(cert, "certificate")?, key_pem: read(key, "key")? };
        cfg.check()?;
        Ok(cfg)
    }

    /// Catches the common mistakes up front, instead of as an opaque handshake failure later.
    pub fn check(&self) -> Result<()> {
        for (what, pem, marker) in [
            ("CA", &self.ca_pem, "CERTIFICATE"),
            ("certificate", &self.cert_pem, "CERTIFICATE"),
            ("key", &self.key_pem, "PRIVATE KEY"),
        ] {
            let text = std::str::from_utf8(pem).unwrap_or("");
            if !text.contains("-----BEGIN") || !text.contains(marker) {
                return Err(Error::Tls(format!("the {what} is not PEM containing a {marker}")));
            }
        }
        Ok(())
    }

    /// A node's own certificate must name its id, or every peer would refuse it. Checked at
    /// startup so the operator hears it from this node, not as refusals elsewhere.
    pub fn check_names_node(&self, id: u64) -> Result<()> {
        use rustls::pki_types::pem::PemObject;
        let first = CertificateDer::pem_slice_iter(&self.cert_pem)
            .next()
            .and_then(|c| c.ok())
            .ok_or_else(|| Error::Tls("the cluster certificate file holds no certificate".into()))?;
        if cert_names_node(&first, id) {
            Ok(())
        } else {
            Err(Error::Tls(format!(
                "the cluster certificate does not name this node: node {id} needs one with the DNS name {} \
                 (peers obey only certificates that name a member)",
                node_name(id)
            )))
        }
    }

    /// Server side: this node's identity, and client certificates checked against the cluster
    /// CA. The node-to-node port requires one; the client API accepts one when presented.
    pub fn server(&self, require_client_cert: bool) -> ServerTlsConfig {
        ServerTlsConfig::new()
            .identity(Identity::from_pem(&self.cert_pem, &self.key_pem))
            .client_ca_root(Certificate::from_pem(&self.ca_pem))
            .client_auth_optional(!require_client_cert)
            // tonic waits for a handshake without limit by default: anyone who can reach the
            // port could hold sockets and tasks open by never finishing one.
            .timeout(HANDSHAKE_TIMEOUT)
    }

    /// Client side. Dialling a known node, its server certificate must name that node's id;
    /// dialling a configured address whose node is not known yet (a join), it must name the
    /// address's host, as for any TLS server.
    pub(crate) fn client(&self, target: Option<u64>) -> ClientTlsConfig {
        let config = ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(&self.ca_pem))
            .identity(Identity::from_pem(&self.cert_pem, &self.key_pem));
        match target {
            Some(id) => config.domain_name(node_name(id)),
            None => config,
        }
    }
}
