//! A vault on a real in-process 3-node cluster (RocksDB, mutual TLS on loopback), initialized
//! and unsealed on every node.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::time::Duration;

use arca_core::{AuditConfig, Core, Error, Operation, Reply, Request, SecretData};
use arca_raft::testing::TestCluster;
use arca_raft::Timing;
use zeroize::Zeroizing;

pub async fn call(core: &Core, token: Option<&str>, op: Operation) -> Result<Reply, Error> {
    core.handle(Request::new(token.map(|t| Zeroizing::new(t.to_string())), op)).await
}

pub fn data(pairs: &[(&str, &str)]) -> SecretData {
    SecretData(pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect::<BTreeMap<_, _>>())
}

pub struct Vault {
    pub cluster: TestCluster,
    pub cores: Vec<Core>,
    pub root: String,
    pub shares: Vec<String>,
}

impl Vault {
    pub async fn start() -> Vault {
        Vault::start_with(AuditConfig::default()).await
    }

    pub async fn start_with(audit: AuditConfig) -> Vault {
        let cluster = TestCluster::start(3, Timing::default()).await;
        cluster.wait_for_leader(Duration::from_secs(5)).await;
        let cores: Vec<Core> = cluster.running().map(|n| Core::with_audit(n.clone(), audit)).collect();
        let Reply::Init(init) = call(&cores[0], None, Operation::Init { shares: 3, threshold: 2 }).await.unwrap()
        else {
            panic!("init")
        };
        let shares: Vec<String> = init.shares.iter().map(|s| s.to_string()).collect();
        let vault = Vault { cluster, cores, root: init.root_token.to_string(), shares };
        for core in &vault.cores {
            vault.unseal(core).await;
        }
        vault
    }

    pub async fn unseal(&self, core: &Core) {
        for share in &self.shares[..2] {
            call(core, None, Operation::Unseal { share: Zeroizing::new(share.clone()), reset: false }).await.unwrap();
        }
    }

    /// Runs `op` as root on core `i`.
    pub async fn root(&self, i: usize, op: Operation) -> Reply {
        call(&self.cores[i], Some(&self.root), op).await.unwrap()
    }

    pub async fn leader_core(&self) -> Core {
        let id = self.cluster.wait_for_leader(Duration::from_secs(5)).await;
        self.cores.iter().find(|c| c.node().id() == id).unwrap().clone()
    }
}
