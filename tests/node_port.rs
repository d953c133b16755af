//! End-to-end, against the real binary: the node-to-node port of `arca server` trusts only its
//! own cluster CA, a config without one does not start, and `arca server --dev` makes its
//! certificates in a fresh private directory.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use arca_raft::openraft::raft::VoteRequest;
use arca_raft::openraft::Vote;
use arca_raft::proto::{raft_client::RaftClient, RaftMessage};
use common::{free_base, DevCluster, ARCA};
use rcgen::{BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair};
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity};

/// A certificate from the CA in `dir` (`ca.pem`, `ca-key.pem`) for `names`, server and client auth.
fn issue(dir: &Path, names: &[&str]) -> (String, String) {
    let key = KeyPair::from_pem(&std::fs::read_to_string(dir.join("ca-key.pem")).unwrap()).unwrap();
    let ca = CertificateParams::from_ca_cert_pem(&std::fs::read_to_string(dir.join("ca.pem")).unwrap())
        .unwrap()
        .self_signed(&key)
        .unwrap();
    let mut params = CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>()).unwrap();
    params.distinguished_name.push(DnType::CommonName, names[0]);
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth];
    let leaf_key = KeyPair::generate().unwrap();
    let cert = params.signed_by(&leaf_key, &ca, &key).unwrap();
    (cert.pem(), leaf_key.serialize_pem())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_ca_certificate_cannot_reach_raft_or_forward() {
    let c = DevCluster::start(1);
    let certs = c.dir.path().join("certs");
    // A client certificate from the client-facing CA (what the cert login method accepts),
    // even one that names the node's id.
    let (cert, key) = issue(&certs, &["node-1.arca", "client", "localhost"]);
    let tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(std::fs::read(certs.join("cluster-ca.pem")).unwrap()))
        .identity(Identity::from_pem(cert, key))
        .domain_name("localhost");
    let vote = RaftMessage {
        payload: bincode::serialize(&VoteRequest::<u64>::new(Vote::new(1_000_000, 1), None)).unwrap().into(),
    };
    let attempt = async {
        let channel = Endpoint::from_shared(format!("https://127.0.0.1:{}", c.base + 1))
            .unwrap()
            .tls_config(tls)
            .unwrap()
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(5))
            .connect()
            .await
            .map_err(|e| tonic::Status::unavailable(e.to_string()))?;
        let mut client = RaftClient::new(channel);
        client.vote(vote.clone()).await?;
        client.forward(vote).await
    };
    let err = attempt.await.expect_err("the node port obeyed a client-CA certificate");
    assert!(
        !matches!(err.code(), tonic::Code::Ok | tonic::Code::InvalidArgument | tonic::Code::PermissionDenied),
        "refused only after the handshake: {err:?}"
    );
    // The node is still the healthy leader of term 1-ish, not of term 1,000,000.
    let members = c.ok(1, &["operator", "members", "--format", "json"]);
    assert!(members.contains("\"leader\": true"), "{members}");
}

#[test]
fn a_config_without_a_cluster_ca_does_not_start() {
    let dir = tempfile::TempDir::new().unwrap();
    let base = free_base(1);
    let config = dir.path().join("node.toml");
    std::fs::write(
        &config,
        format!(
            "node_id = 1\ndata_dir = {:?}\n[api]\nlisten = \"127.0.0.1:{base}\"\nadvertise = \"127.0.0.1:{base}\"\n\
             [cluster]\nlisten = \"127.0.0.1:{}\"\nadvertise = \"127.0.0.1:{}\"\nbootstrap = true\n\
             [tls]\nca = \"ca.pem\"\ncert = \"n.pem\"\nkey = \"n-key.pem\"\n",
            dir.path().join("data"),
            base + 1,
            base + 1
        ),
    )
    .unwrap();
    let out = Command::new(ARCA).arg("server").arg("--config").arg(&config).stdin(Stdio::null()).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(err.contains("cluster.ca, cluster.cert, cluster.key: required") && err.contains("node-1.arca"), "{err}");
}

#[cfg(unix)]
#[test]
fn server_dev_ignores_a_planted_ca_and_keeps_its_keys_private() {
    use std::os::unix::fs::PermissionsExt;

    let tmp = tempfile::TempDir::new().unwrap();
    // An attacker's CA, planted where the old `server --dev` looked (TMPDIR/arca-dev-<pid>) for
    // the pid the server will have (`exec` keeps the shell's pid), private so that no
    // permission check would reject it.
    let planted = tmp.path().join("planted");
    std::fs::create_dir(&planted).unwrap();
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, "attacker CA");
    let key = KeyPair::generate().unwrap();
    let ca = params.self_signed(&key).unwrap();
    std::fs::write(planted.join("ca.pem"), ca.pem()).unwrap();
    std::fs::write(planted.join("ca-key.pem"), key.serialize_pem()).unwrap();
    std::fs::set_permissions(planted.join("ca-key.pem"), std::fs::Permissions::from_mode(0o600)).unwrap();

    let port = free_base(1);
    let log = tmp.path().join("dev.log");
    let script = r#"d="$TMPDIR/arca-dev-$$/certs"; mkdir -p "$d" && cp "$PLANTED"/ca.pem "$PLANTED"/ca-key.pem "$d"/ && exec "$ARCA" server --dev"#;
    let mut child = Command::new("sh")
        .args(["-c", script])
        .env("TMPDIR", tmp.path())
        .env("PLANTED", &planted)
        .env("ARCA", ARCA)
        .env("ARCA_ADDR", format!("https://127.0.0.1:{port}"))
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&log).unwrap())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let cacert = loop {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        if let Some(line) = text.lines().find(|l| l.trim_start().starts_with("export ARCA_CACERT=")) {
            break line.trim_start().trim_start_matches("export ARCA_CACERT=").to_string();
        }
        if let Ok(Some(status)) = child.try_wait() {
            panic!("arca server --dev exited with {status}: {text}");
        }
        assert!(Instant::now() < deadline, "server --dev not up within 60 s: {text}");
        std::thread::sleep(Duration::from_millis(100));
    };
    let cacert = Path::new(&cacert).to_path_buf();
    let certs = cacert.parent().unwrap().to_path_buf();
    let dir = certs.parent().unwrap().to_path_buf();
    let planted_copy = tmp.path().join(format!("arca-dev-{}", child.id()));

    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        assert!(planted_copy.exists(), "the plant was made where the old code looked");
        assert!(
            !cacert.starts_with(&planted_copy),
            "server --dev used the planted directory {}",
            planted_copy.display()
        );
        assert_ne!(std::fs::read(&cacert).unwrap(), ca.pem().into_bytes(), "server --dev uses the planted CA");
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&dir), 0o700, "the dev directory {} is not private", dir.display());
        let mut keys = 0;
        for entry in std::fs::read_dir(&certs).unwrap() {
            let path = entry.unwrap().path();
            if path.to_string_lossy().ends_with("-key.pem") {
                keys += 1;
                assert_eq!(mode(&path), 0o600, "{} is readable by others", path.display());
            }
        }
        assert!(keys >= 4, "expected both CA keys and the node's two keys in {}", certs.display());
        // Clients trusting the planted CA cannot be served by this node; its own CA works.
        let status = |ca: &Path| {
            Command::new(ARCA)
                .arg("status")
                .env("ARCA_ADDR", format!("https://127.0.0.1:{port}"))
                .env("ARCA_CACERT", ca)
                .env_remove("ARCA_TOKEN")
                .stdin(Stdio::null())
                .output()
                .unwrap()
        };
        assert!(status(&cacert).status.success(), "control: the dev server's own CA verifies it");
        assert!(!status(&planted.join("ca.pem")).status.success(), "the dev server presented a planted-CA certificate");
    }));
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let stop = Instant::now() + Duration::from_secs(15);
    while Instant::now() < stop && matches!(child.try_wait(), Ok(None)) {
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
    if let Err(panic) = result {
        std::panic::resume_unwind(panic);
    }
}
