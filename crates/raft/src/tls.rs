//! Mutual TLS for the node-to-node port.
//!
//! The cluster CA is the only trust root: the server requires a client certificate chaining to
//! it, and the client accepts only a server certificate chaining to it whose name matches the
//! address it dialled. A node with a certificate from any other CA can neither join nor send a
//! single Raft message: the handshake fails before any request is read.

use std::fmt;
use std::path::Path;

use tonic::transport::{Certificate, ClientTlsConfig, Identity, ServerTlsConfig};

use crate::{Error, Result};

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

    /// Server side: this node's identity, and client certificates checked against the cluster
    /// CA. The node-to-node port requires one; the client API accepts one when presented.
    pub fn server(&self, require_client_cert: bool) -> ServerTlsConfig {
        ServerTlsConfig::new()
            .identity(Identity::from_pem(&self.cert_pem, &self.key_pem))
            .client_ca_root(Certificate::from_pem(&self.ca_pem))
            .client_auth_optional(!require_client_cert)
    }

    pub(crate) fn client(&self) -> ClientTlsConfig {
        ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(&self.ca_pem))
            .identity(Identity::from_pem(&self.cert_pem, &self.key_pem))
    }
}
