//! A development certificate authority: one CA and one certificate per node, valid for both
//! the client API (server auth) and node-to-node mutual TLS (server and client auth).
//! For `arca dev cluster` and the compose file's `certs` service; production clusters bring
//! certificates from their own PKI.

use std::path::{Path, PathBuf};

use rcgen::{BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair};

use crate::{Error, Result};

/// Paths of one node's TLS files.
pub struct NodeFiles {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// Writes a file; `private` makes it readable by its owner only (keys, shares, tokens).
pub fn write(path: &Path, contents: &str, private: bool) -> Result<()> {
    let io = |source| Error::Io { path: path.display().to_string(), source };
    std::fs::write(path, contents).map_err(io)?;
    #[cfg(unix)]
    if private {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(io)?;
    }
    Ok(())
}

/// Creates (or reuses, if `dir/ca.pem` exists) a CA in `dir`, and certificates for each name
/// in `nodes`, valid for that name, `localhost`, 127.0.0.1 and ::1.
pub fn generate(dir: &Path, nodes: &[String]) -> Result<Vec<NodeFiles>> {
    let err = |e: rcgen::Error| Error::Certs(e.to_string());
    std::fs::create_dir_all(dir).map_err(|source| Error::Io { path: dir.display().to_string(), source })?;
    let (ca_pem, ca_key_pem) = (dir.join("ca.pem"), dir.join("ca-key.pem"));
    let (ca_cert, ca_key) = if ca_pem.exists() && ca_key_pem.exists() {
        let read =
            |p: &Path| std::fs::read_to_string(p).map_err(|source| Error::Io { path: p.display().to_string(), source });
        let key = KeyPair::from_pem(&read(&ca_key_pem)?).map_err(err)?;
        let params = CertificateParams::from_ca_cert_pem(&read(&ca_pem)?).map_err(err)?;
        (params.self_signed(&key).map_err(err)?, key)
    } else {
        let mut params = CertificateParams::new(Vec::<String>::new()).map_err(err)?;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, "Arca development CA");
        let key = KeyPair::generate().map_err(err)?;
        let cert = params.self_signed(&key).map_err(err)?;
        write(&ca_pem, &cert.pem(), false)?;
        write(&ca_key_pem, &key.serialize_pem(), true)?;
        (cert, key)
    };
    let mut out = Vec::new();
    for name in nodes {
        let (cert_path, key_path) = (dir.join(format!("{name}.pem")), dir.join(format!("{name}-key.pem")));
        if !(cert_path.exists() && key_path.exists()) {
            let sans = vec![name.clone(), "localhost".into(), "127.0.0.1".into(), "::1".into()];
            let mut params = CertificateParams::new(sans).map_err(err)?;
            params.distinguished_name.push(DnType::CommonName, name.as_str());
            params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth];
            let key = KeyPair::generate().map_err(err)?;
            let cert = params.signed_by(&key, &ca_cert, &ca_key).map_err(err)?;
            write(&cert_path, &cert.pem(), false)?;
            write(&key_path, &key.serialize_pem(), true)?;
        }
        out.push(NodeFiles { ca: ca_pem.clone(), cert: cert_path, key: key_path });
    }
    Ok(out)
}
