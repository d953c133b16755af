//! What the fuzz targets that go through the client port share: one vault (a one-node cluster
//! on real RocksDB and TLS, initialized and unsealed) and its router, built once per process.

use std::sync::OnceLock;
use std::time::Duration;

use arca_core::{Core, Operation, Reply, Request};
use arca_raft::testing::TestCluster;
use arca_raft::Timing;
use axum::body::Body;
use http_body_util::BodyExt;
use tower::ServiceExt;
use zeroize::Zeroizing;

pub struct Vault {
    pub runtime: tokio::runtime::Runtime,
    pub router: axum::Router,
    pub root: String,
    _cluster: TestCluster,
}

/// Requests that would stop the vault from serving the next input (sealing it, revoking the
/// root token, restoring or rekeying) are not sent with the root token: a fuzz run explores
/// what each request does to a working vault.
pub const ROOT_SKIPS: [&str; 9] =
    ["seal", "Seal", "revoke", "Revoke", "step-down", "rekey", "Rekey", "generate-root", "remove-peer"];

pub fn vault() -> &'static Vault {
    static VAULT: OnceLock<Vault> = OnceLock::new();
    VAULT.get_or_init(|| {
        let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        let (cluster, core, root) = runtime.block_on(async {
            let cluster = TestCluster::start(1, Timing::default()).await;
            cluster.wait_for_leader(Duration::from_secs(10)).await;
            let core = Core::new(cluster.running().next().unwrap().clone());
            let call = |op| core.handle(Request::new(None, op));
            let Reply::Init(init) = call(Operation::Init { shares: 2, threshold: 2 }).await.unwrap() else {
                panic!("init")
            };
            for share in &init.shares {
                let share = Zeroizing::new(share.to_string());
                call(Operation::Unseal { share, reset: false }).await.unwrap();
            }
            (cluster, core.clone(), init.root_token.to_string())
        });
        let router = arca_server::fuzzing::client_routes(core).unwrap();
        Vault { runtime, router, root, _cluster: cluster }
    })
}

impl Vault {
    /// Sends one request through the client port's router and reads the whole answer.
    pub fn send(&self, request: axum::http::Request<Body>) {
        self.runtime.block_on(async {
            let call = self.router.clone().oneshot(request);
            // A stream (watch, audit tail) is read for 200 ms: long enough for its first
            // frames, short enough not to stall the run.
            if let Ok(Ok(response)) = tokio::time::timeout(Duration::from_secs(10), call).await {
                let _ = tokio::time::timeout(Duration::from_millis(200), response.into_body().collect()).await;
            }
        })
    }
}
