//! Test and benchmark support: throwaway certificate authorities and in-process clusters whose
//! nodes talk real gRPC over mutual TLS on loopback, each with its own RocksDB on disk.

use std::collections::BTreeMap;
use std::net::{SocketAddr, TcpListener};
use std::time::{Duration, Instant};

use rcgen::{BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair};
use tempfile::TempDir;

use crate::{NodeConfig, NodeInfo, RaftNode, Timing, TlsConfig};

/// A certificate authority that exists only for one test.
pub struct TestCa {
    cert: rcgen::Certificate,
    key: KeyPair,
}

impl TestCa {
    pub fn new(name: &str) -> TestCa {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        let key = KeyPair::generate().expect("CA key");
        let cert = params.self_signed(&key).expect("self-signed CA");
        TestCa { cert, key }
    }

    /// The certificate of cluster node `id`: it names the node ([`crate::tls::node_name`]) and
    /// loopback, valid as both TLS server and client.
    pub fn node_cert(&self, id: u64) -> TlsConfig {
        self.issue(&format!("node{id}"), vec![crate::tls::node_name(id)])
    }

    /// A certificate valid as both TLS server and client, for `name` and loopback, naming no
    /// cluster node.
    pub fn node_tls(&self, name: &str) -> TlsConfig {
        self.issue(name, vec![])
    }

    /// A certificate for `name`, loopback and the `extra` DNS names.
    pub fn issue(&self, name: &str, extra: Vec<String>) -> TlsConfig {
        let mut sans = vec![name.to_string(), "localhost".to_string(), "127.0.0.1".to_string()];
        sans.extend(extra);
        let mut params = CertificateParams::new(sans).expect("node params");
        params.distinguished_name.push(DnType::CommonName, name);
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth];
        let key = KeyPair::generate().expect("node key");
        let cert = params.signed_by(&key, &self.cert, &self.key).expect("signed node cert");
        TlsConfig {
            ca_pem: self.cert.pem().into_bytes(),
            cert_pem: cert.pem().into_bytes(),
            key_pem: key.serialize_pem().into_bytes(),
        }
    }
}

/// A loopback address with a port that was free a moment ago.
pub fn free_addr() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("free loopback port")
}

/// Config for node `id` listening on `listen`, storing under `dir`.
pub fn node_config(id: u64, listen: SocketAddr, dir: &std::path::Path, tls: TlsConfig, timing: Timing) -> NodeConfig {
    NodeConfig {
        id,
        listen,
        info: NodeInfo { raft_addr: listen.to_string(), api_addr: String::new() },
        data_dir: dir.to_path_buf(),
        tls,
        timing,
        faults: Default::default(),
        source_address: None,
        direct_io: Default::default(),
    }
}

/// An in-process cluster. Node ids are 1..=n.
pub struct TestCluster {
    pub ca: TestCa,
    pub timing: Timing,
    /// The network between the nodes: partition, lose and delay messages (see `Faults`).
    pub faults: crate::Faults,
    configs: BTreeMap<u64, NodeConfig>,
    nodes: BTreeMap<u64, RaftNode>,
    _dirs: Vec<TempDir>,
}

impl TestCluster {
    /// Starts `n` nodes, bootstraps node 1 and adds the others as voters.
    pub async fn start(n: u64, timing: Timing) -> TestCluster {
        let ca = TestCa::new("arca test cluster CA");
        let mut cluster = TestCluster {
            ca,
            timing,
            faults: crate::Faults::default(),
            configs: BTreeMap::new(),
            nodes: BTreeMap::new(),
            _dirs: Vec::new(),
        };
        for id in 1..=n {
            let dir = TempDir::new().expect("temp dir");
            let mut cfg = node_config(id, free_addr(), dir.path(), cluster.ca.node_cert(id), cluster.timing.clone());
            cfg.faults = cluster.faults.clone();
            cluster._dirs.push(dir);
            cluster.configs.insert(id, cfg);
            cluster.restart(id).await;
        }
        let first = cluster.node(1);
        first.bootstrap(cluster.configs[&1].info.clone()).await.expect("bootstrap");
        first.raft().wait(Some(Duration::from_secs(10))).current_leader(1, "bootstrap").await.expect("node 1 leads");
        for id in 2..=n {
            first.add_learner(id, cluster.configs[&id].info.clone()).await.expect("add learner");
            first.promote(id).await.expect("promote");
        }
        cluster
    }

    pub fn node(&self, id: u64) -> RaftNode {
        self.nodes.get(&id).unwrap_or_else(|| panic!("node {id} is not running")).clone()
    }

    pub fn running(&self) -> impl Iterator<Item = &RaftNode> {
        self.nodes.values()
    }

    pub fn config(&self, id: u64) -> &NodeConfig {
        &self.configs[&id]
    }

    /// Stops a node; its data directory stays for [`TestCluster::restart`].
    pub async fn stop(&mut self, id: u64) {
        if let Some(node) = self.nodes.remove(&id) {
            node.shutdown().await;
        }
    }

    /// Starts (or restarts) a node from its data directory.
    pub async fn restart(&mut self, id: u64) -> RaftNode {
        let cfg = self.configs[&id].clone();
        // The previous incarnation may still be releasing the RocksDB lock for a moment.
        let deadline = Instant::now() + Duration::from_secs(10);
        let node = loop {
            match RaftNode::start(cfg.clone()).await {
                Ok(node) => break node,
                Err(e) if Instant::now() < deadline => {
                    tracing::debug!(error = %e, "node not restartable yet");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(e) => panic!("node {id} failed to start: {e}"),
            }
        };
        self.nodes.insert(id, node.clone());
        node
    }

    /// Waits until every running node agrees on one leader, and returns it.
    pub async fn wait_for_leader(&self, limit: Duration) -> u64 {
        let deadline = Instant::now() + limit;
        loop {
            let leaders: Vec<Option<u64>> = self.nodes.values().map(|n| n.current_leader()).collect();
            if let Some(Some(l)) = leaders.first() {
                if self.nodes.contains_key(l) && leaders.iter().all(|x| x == &Some(*l)) {
                    return *l;
                }
            }
            assert!(Instant::now() < deadline, "no agreed leader within {limit:?}: {leaders:?}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// The term of node `id`'s own barrier (`RaftNode::local_barrier`), once it has one: it
    /// needs an entry of its term committed, and a quorum heard within an election timeout (a
    /// loaded machine may delay both a little).
    pub async fn own_barrier(&self, id: u64) -> u64 {
        let node = self.node(id);
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match node.local_barrier().await.expect("the local barrier") {
                Some(term) => return term,
                None if Instant::now() < deadline => tokio::time::sleep(Duration::from_millis(10)).await,
                None => panic!("node {id} has no barrier of its own after 10 s"),
            }
        }
    }

    pub async fn shutdown(mut self) {
        let ids: Vec<u64> = self.nodes.keys().copied().collect();
        for id in ids {
            self.stop(id).await;
        }
    }
}
