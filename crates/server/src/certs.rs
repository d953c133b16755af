//! Development certificate authorities, for `arca dev cluster`, `arca server --dev` and the
//! compose file's `certs` service; production clusters bring certificates from their own PKI.
//!
//! Two CAs, never one: the node-to-node port must not accept anything the client-facing CA
//! signs (DESIGN.md invariant 8).
//!
//! * the **client CA** (`ca.pem`) signs each node's API server certificate (`<name>.pem`);
//!   clients trust it (`ARCA_CACERT`), and a deployment may also issue client certificates
//!   from it for the cert login method;
//! * the **cluster CA** (`cluster-ca.pem`) signs only node certificates for the node-to-node
//!   port (`<name>-cluster.pem`), each naming its node id as `node-<id>.arca` plus the node's
//!   name and loopback, valid as TLS server and client.

use std::io::Write;
use std::path::{Path, PathBuf};

use rcgen::{BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair};

use crate::{Error, Result};

/// Paths of one node's TLS files.
pub struct NodeFiles {
    /// The client-facing CA, and this node's API certificate and key.
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
    /// The cluster CA, and this node's node-to-node certificate and key.
    pub cluster_ca: PathBuf,
    pub cluster_cert: PathBuf,
    pub cluster_key: PathBuf,
}

/// Writes a file; `private` makes it readable by its owner only (keys, shares, tokens).
///
/// The contents go to a new file in the same directory, created exclusively (no symlink is
/// followed) with its final mode, and then renamed over `path`: a private file is never
/// readable by others, not even between creation and a chmod.
pub fn write(path: &Path, contents: &str, private: bool) -> Result<()> {
    let io = |source| Error::Io { path: path.display().to_string(), source };
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(if private { 0o600 } else { 0o644 });
    }
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let tmp = dir.join(format!(".{name}.{}.{:x}.tmp", std::process::id(), rand::random::<u64>()));
    let result = (|| {
        let mut file = options.open(&tmp)?;
        file.write_all(contents.as_bytes())?;
        file.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result.map_err(io)
}

/// A new directory under the system temp dir, with a random name, created by this call (never
/// an existing one, so nothing planted there beforehand is reused) and private to this user.
pub fn private_temp_dir(prefix: &str) -> Result<PathBuf> {
    let base = std::env::temp_dir();
    let mut last = None;
    for _ in 0..16 {
        let dir = base.join(format!("{prefix}-{:016x}", rand::random::<u64>()));
        let mut builder = std::fs::DirBuilder::new();
        #[cfg(unix)]
        {
            use std::os::unix::fs::DirBuilderExt;
            builder.mode(0o700);
        }
        match builder.create(&dir) {
            Ok(()) => return Ok(dir),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => last = Some(e),
            Err(source) => return Err(Error::Io { path: dir.display().to_string(), source }),
        }
    }
    Err(Error::Io {
        path: base.display().to_string(),
        source: last.unwrap_or_else(|| std::io::Error::other("no free temporary directory name")),
    })
}

fn read(p: &Path) -> Result<String> {
    std::fs::read_to_string(p).map_err(|source| Error::Io { path: p.display().to_string(), source })
}

/// Loads the CA at `cert`/`key`, or creates it there if neither exists.
fn ca(cert: &Path, key: &Path, name: &str) -> Result<(rcgen::Certificate, KeyPair)> {
    let err = |e: rcgen::Error| Error::Certs(e.to_string());
    if cert.exists() && key.exists() {
        #[cfg(unix)]
        {
            use std::os::unix::fs::MetadataExt;
            let meta =
                std::fs::metadata(key).map_err(|source| Error::Io { path: key.display().to_string(), source })?;
            // SAFETY: geteuid has no preconditions.
            let me = unsafe { libc::geteuid() };
            if meta.uid() != me || meta.mode() & 0o077 != 0 {
                return Err(Error::Certs(format!(
                    "refusing to reuse the CA key {}: it must be owned by this user and readable by no one else \
                     (mode 0600); a key others could read or plant signs certificates they control",
                    key.display()
                )));
            }
        }
        let key_pair = KeyPair::from_pem(&read(key)?).map_err(err)?;
        let params = CertificateParams::from_ca_cert_pem(&read(cert)?).map_err(err)?;
        return Ok((params.self_signed(&key_pair).map_err(err)?, key_pair));
    }
    let mut params = CertificateParams::new(Vec::<String>::new()).map_err(err)?;
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, name);
    let key_pair = KeyPair::generate().map_err(err)?;
    let ca_cert = params.self_signed(&key_pair).map_err(err)?;
    write(key, &key_pair.serialize_pem(), true)?;
    write(cert, &ca_cert.pem(), false)?;
    Ok((ca_cert, key_pair))
}

/// Issues `cert`/`key` from the CA unless both exist.
fn issue(
    cert_path: &Path,
    key_path: &Path,
    common_name: &str,
    sans: Vec<String>,
    usages: Vec<ExtendedKeyUsagePurpose>,
    (ca_cert, ca_key): &(rcgen::Certificate, KeyPair),
) -> Result<()> {
    if cert_path.exists() && key_path.exists() {
        return Ok(());
    }
    let err = |e: rcgen::Error| Error::Certs(e.to_string());
    let mut params = CertificateParams::new(sans).map_err(err)?;
    params.distinguished_name.push(DnType::CommonName, common_name);
    params.extended_key_usages = usages;
    let key = KeyPair::generate().map_err(err)?;
    let cert = params.signed_by(&key, ca_cert, ca_key).map_err(err)?;
    write(key_path, &key.serialize_pem(), true)?;
    write(cert_path, &cert.pem(), false)?;
    Ok(())
}

/// Creates (or reuses, if present in `dir` and private to this user) a client CA and a cluster
/// CA, and for the node named `nodes[i]`, node id `i + 1`: an API certificate from the client
/// CA, valid for its name, `localhost`, 127.0.0.1 and ::1; and a node-to-node certificate from
/// the cluster CA naming `node-<id>.arca` and the same names.
pub fn generate(dir: &Path, nodes: &[String]) -> Result<Vec<NodeFiles>> {
    std::fs::create_dir_all(dir).map_err(|source| Error::Io { path: dir.display().to_string(), source })?;
    let client_ca = ca(&dir.join("ca.pem"), &dir.join("ca-key.pem"), "Arca development client CA")?;
    let cluster_ca = ca(&dir.join("cluster-ca.pem"), &dir.join("cluster-ca-key.pem"), "Arca development cluster CA")?;
    let mut out = Vec::new();
    for (i, name) in nodes.iter().enumerate() {
        let id = i as u64 + 1;
        let loopback = || vec![name.clone(), "localhost".into(), "127.0.0.1".into(), "::1".into()];
        let files = NodeFiles {
            ca: dir.join("ca.pem"),
            cert: dir.join(format!("{name}.pem")),
            key: dir.join(format!("{name}-key.pem")),
            cluster_ca: dir.join("cluster-ca.pem"),
            cluster_cert: dir.join(format!("{name}-cluster.pem")),
            cluster_key: dir.join(format!("{name}-cluster-key.pem")),
        };
        issue(&files.cert, &files.key, name, loopback(), vec![ExtendedKeyUsagePurpose::ServerAuth], &client_ca)?;
        let mut sans = vec![arca_raft::node_name(id)];
        sans.extend(loopback());
        issue(
            &files.cluster_cert,
            &files.cluster_key,
            &arca_raft::node_name(id),
            sans,
            vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth],
            &cluster_ca,
        )?;
        out.push(files);
    }
    Ok(out)
}
