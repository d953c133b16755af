//! TLS-certificate login. The TLS layer only proves the client holds the private key of the
//! certificate it presented (the handshake signature); *trust* is decided here, per role: the
//! chain must verify against the role's CA for client authentication, and the subject must match
//! the role's allowed names.

use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, UnixTime};
use rustls::server::WebPkiClientVerifier;
use rustls::RootCertStore;
use serde::{Deserialize, Serialize};
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::{FromDer, X509Certificate};

use super::TokenParams;
use crate::{Error, Result};

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct CertRole {
    pub name: String,
    /// PEM of the CA (one or more certificates) that must have issued the client certificate.
    pub ca_pem: String,
    /// Allowed subject common names; `*` matches any run of characters. Empty (with no DNS
    /// SANs either): any certificate the CA issued.
    pub allowed_common_names: Vec<String>,
    pub allowed_dns_sans: Vec<String>,
    pub token: TokenParams,
}

/// Who a verified certificate names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertIdentity {
    pub common_name: String,
    pub dns_sans: Vec<String>,
}

impl CertRole {
    pub(crate) fn validate(&self) -> Result<()> {
        self.roots().map(|_| ())
    }

    fn roots(&self) -> Result<RootCertStore> {
        let bad = |why: String| Error::InvalidArgument(format!("cert role {:?}: CA certificate {why}", self.name));
        let mut roots = RootCertStore::empty();
        for cert in CertificateDer::pem_slice_iter(self.ca_pem.as_bytes()) {
            let cert = cert.map_err(|e| bad(format!("is not valid PEM: {e}")))?;
            roots.add(cert).map_err(|e| bad(format!("is not usable as a trust anchor: {e}")))?;
        }
        if roots.is_empty() {
            return Err(bad("is missing (give the PEM of the issuing CA)".into()));
        }
        Ok(roots)
    }

    /// Verifies `chain` (DER, end entity first) against this role; returns the identity.
    pub fn verify(&self, chain: &[Vec<u8>], now: UnixTime) -> std::result::Result<CertIdentity, String> {
        let (end_entity, intermediates) = chain.split_first().ok_or("no client certificate was presented")?;
        let roots = self.roots().map_err(|e| e.to_string())?;
        let verifier = WebPkiClientVerifier::builder_with_provider(
            Arc::new(roots),
            Arc::new(rustls::crypto::ring::default_provider()),
        )
        .build()
        .map_err(|e| e.to_string())?;
        let intermediates: Vec<CertificateDer<'_>> =
            intermediates.iter().map(|c| CertificateDer::from(c.as_slice())).collect();
        verifier
            .verify_client_cert(&CertificateDer::from(end_entity.as_slice()), &intermediates, now)
            .map_err(|e| format!("the certificate is not trusted by this role ({e})"))?;
        let identity = identity(end_entity)?;
        let names_given = !self.allowed_common_names.is_empty() || !self.allowed_dns_sans.is_empty();
        let cn_ok = self.allowed_common_names.iter().any(|p| glob(p, &identity.common_name));
        let san_ok = self.allowed_dns_sans.iter().any(|p| identity.dns_sans.iter().any(|s| glob(p, s)));
        if names_given && !cn_ok && !san_ok {
            return Err("the certificate's names are not allowed by this role".into());
        }
        Ok(identity)
    }
}

fn identity(der: &[u8]) -> std::result::Result<CertIdentity, String> {
    let (_, cert) = X509Certificate::from_der(der).map_err(|e| format!("unreadable certificate: {e}"))?;
    let common_name =
        cert.subject().iter_common_name().next().and_then(|cn| cn.as_str().ok()).unwrap_or_default().to_string();
    let dns_sans = match cert.subject_alternative_name() {
        Ok(Some(san)) => san
            .value
            .general_names
            .iter()
            .filter_map(|n| match n {
                GeneralName::DNSName(d) => Some(d.to_string()),
                _ => None,
            })
            .collect(),
        _ => Vec::new(),
    };
    Ok(CertIdentity { common_name, dns_sans })
}

/// `*` matches any run of characters (including none); everything else literally.
pub fn glob(pattern: &str, value: &str) -> bool {
    match pattern.split_once('*') {
        None => pattern == value,
        Some((head, rest)) => {
            let Some(tail) = value.strip_prefix(head) else { return false };
            (0..=tail.len()).filter(|i| tail.is_char_boundary(*i)).any(|i| glob(rest, &tail[i..]))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs() {
        assert!(glob("app.example.com", "app.example.com"));
        assert!(glob("*.example.com", "a.example.com"));
        assert!(!glob("*.example.com", "example.org"));
        assert!(glob("svc-*-prod", "svc-billing-prod"));
        assert!(glob("*", ""));
        assert!(!glob("app", "apps"));
    }
}
