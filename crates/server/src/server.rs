//! Starting, running and stopping one node.

use std::future::Future;
use std::time::Duration;

use arca_core::Core;
use arca_raft::{DirectIo, NodeConfig, NodeInfo, RaftNode, TlsConfig};
use tracing::{info, warn};

use crate::api::Api;
use crate::proto;
use crate::{Config, Error, Result};

/// HTTP/2 flow-control window of one request stream on the client port (see `run`).
const STREAM_WINDOW: u32 = 64 * 1024;
/// HTTP/2 flow-control window of one client connection, shared by its streams.
const CONNECTION_WINDOW: u32 = 2 * 1024 * 1024;

/// Runs a node until `shutdown` resolves, then stops gracefully: the client API stops
/// accepting, in-flight requests finish, Raft shuts down and the data directory is released.
/// The node starts sealed, whatever its data directory holds.
pub async fn run(config: Config, shutdown: impl Future<Output = ()>) -> Result<()> {
    let tls = TlsConfig::from_files(&config.tls.ca, &config.tls.cert, &config.tls.key)?;
    let cluster_files = config.cluster_tls()?;
    let cluster_tls = TlsConfig::from_files(&cluster_files.ca, &cluster_files.cert, &cluster_files.key)?;
    check_distinct_cas(&tls.ca_pem, &cluster_tls.ca_pem)?;
    let info = NodeInfo { raft_addr: config.cluster.advertise.clone(), api_addr: config.api.advertise.clone() };
    let node = RaftNode::start(NodeConfig {
        id: config.node_id,
        listen: config.cluster.listen,
        info: info.clone(),
        data_dir: config.data_dir.clone(),
        tls: cluster_tls,
        timing: config.timing(),
        faults: Default::default(),
        source_address: config.cluster.source_address,
        direct_io: if config.disable_direct_io { DirectIo::Off } else { DirectIo::Auto },
    })
    .await?;

    if config.cluster.bootstrap && !node.is_member() {
        match node.bootstrap(info).await {
            Ok(()) => info!("bootstrapped a new cluster with this node as its first member"),
            Err(arca_raft::Error::AlreadyInitialized) => {}
            Err(e) => return Err(e.into()),
        }
    }
    let joiner = (!config.cluster.join.is_empty())
        .then(|| tokio::spawn(join_until_member(node.clone(), config.cluster.join.clone(), !config.cluster.non_voter)));

    let listener = tokio::net::TcpListener::bind(config.api.listen)
        .await
        .map_err(|source| Error::Listen { addr: config.api.listen.to_string(), source })?;
    let core = Core::with_audit(node.clone(), config.audit.core_config())
        .with_rotation(config.rotation.settings())
        .with_limits(config.limits.core_config());
    let core = core.with_autopilot(config.autopilot.config());
    let duties = tokio::spawn(core.clone().run_leader_duties());
    let autopilot = tokio::spawn(node.clone().run_autopilot(config.autopilot.config()));
    let limit_reports = tokio::spawn(core.clone().run_rate_limit_reports());
    let mirror = match config.audit.mirror.as_str() {
        "" => None,
        "stdout" => Some(tokio::spawn(core.clone().mirror_audit(Box::new(std::io::stdout())))),
        path => {
            let file = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .map_err(|e| Error::Serve(format!("cannot open the audit mirror file {path}: {e}")))?;
            Some(tokio::spawn(core.clone().mirror_audit(Box::new(file))))
        }
    };
    let streams = std::sync::Arc::new(crate::limits::StreamSlots::new(
        config.limits.watch_streams_per_token,
        config.limits.audit_tails_per_token,
    ));
    let acceptor = crate::tls::acceptor(&tls)?;
    info!(api = %config.api.listen, cluster = %config.cluster.listen, node = config.node_id, "arca server listening (sealed)");
    let routes = client_routes(core, streams, &tls.ca_pem)?;
    // One port, two fronts: gRPC (HTTP/2) and the Vault-compatible HTTP API (HTTP/1.1 or 2),
    // told apart by content type.
    // Idle connections: a connection silent for `idle_timeout` is closed (tls.rs); HTTP/2
    // pings a third as often, so a live client's quiet connection (a watch between progress
    // events, a following tail) is not silent, and a dead one is detected. HTTP/1 keep-alive
    // connections also fall under hyper's 30 s header-read timeout.
    let idle = config.limits.idle_timeout();
    // Flow-control windows bound what a request costs before it is refused. hyper's default
    // stream window (1 MiB) lets a client push a whole oversized or rate-limited message before
    // the refusal reaches it, and every byte of it is read and decrypted here; with HTTP/2's
    // own 64 KiB (what grpc-go starts with) a refused request costs at most 64 KiB. The
    // connection window stays large so concurrent streams of one client are not serialized.
    let served = tonic::transport::Server::builder()
        .timeout(Duration::from_secs(30))
        .initial_stream_window_size(STREAM_WINDOW)
        .initial_connection_window_size(CONNECTION_WINDOW)
        .accept_http1(true)
        .http2_keepalive_interval(Some(idle / 3))
        .http2_keepalive_timeout(Some(idle / 3))
        .add_routes(tonic::service::Routes::from(routes))
        .serve_with_incoming_shutdown(crate::tls::incoming(listener, acceptor, idle), shutdown)
        .await;
    duties.abort();
    autopilot.abort();
    limit_reports.abort();
    if let Some(m) = mirror {
        m.abort();
    }
    info!("shutting down");
    if let Some(j) = joiner {
        j.abort();
    }
    node.shutdown().await;
    served.map_err(|e| Error::Serve(e.to_string()))
}

/// Everything the client port serves, gRPC and the Vault HTTP API, before TLS and HTTP/2
/// settings. Also the fuzz targets' way in (`fuzzing`).
fn client_routes(
    core: Core,
    streams: std::sync::Arc<crate::limits::StreamSlots>,
    client_ca: &[u8],
) -> Result<axum::Router> {
    let api = Api { core, streams };
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(proto::FILE_DESCRIPTOR_SET)
        .build_v1()
        .map_err(|e| Error::Serve(e.to_string()))?;
    let core = api.core.clone();
    // Every message decoded on the client port is bounded like an HTTP body (tonic's default
    // is 4 MiB): a request's size is what an unauthenticated caller controls.
    const MAX: usize = crate::limits::MAX_GRPC_MESSAGE_BYTES;
    let grpc = tonic::service::Routes::builder()
        .add_service(proto::sys_server::SysServer::new(api.clone()).max_decoding_message_size(MAX))
        .add_service(proto::kv_server::KvServer::new(api.clone()).max_decoding_message_size(MAX))
        .add_service(proto::token_server::TokenServer::new(api.clone()).max_decoding_message_size(MAX))
        .add_service(proto::policy_server::PolicyServer::new(api.clone()).max_decoding_message_size(MAX))
        .add_service(proto::auth_server::AuthServer::new(api.clone()).max_decoding_message_size(MAX))
        .add_service(proto::audit_server::AuditServer::new(api.clone()).max_decoding_message_size(MAX))
        .add_service(proto::rotation_server::RotationServer::new(api.clone()).max_decoding_message_size(MAX))
        .add_service(proto::watch_server::WatchServer::new(api).max_decoding_message_size(MAX))
        .add_service(reflection)
        .clone()
        .routes()
        .into_axum_router();
    Ok(crate::http::serve_both(grpc, core, client_ca))
}

/// Entry points for the fuzz targets in `fuzz/` (built only with `--cfg fuzzing`).
#[cfg(fuzzing)]
#[doc(hidden)]
pub mod fuzzing {
    /// The client port's routes over `core`, with the default stream limits.
    pub fn client_routes(core: arca_core::Core) -> crate::Result<axum::Router> {
        let limits = crate::config::LimitsSettings::default();
        let streams = std::sync::Arc::new(crate::limits::StreamSlots::new(
            limits.watch_streams_per_token,
            limits.audit_tails_per_token,
        ));
        // No CA: the console asks no other member (there is none).
        super::client_routes(core, streams, &[])
    }
}

/// The same CA in `tls.ca` and `cluster.ca` (under two file names) would let the client-facing
/// PKI reach the node-to-node port: refuse to start.
fn check_distinct_cas(client_ca: &[u8], cluster_ca: &[u8]) -> Result<()> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::CertificateDer;
    let ders = |pem: &[u8]| -> Vec<Vec<u8>> {
        CertificateDer::pem_slice_iter(pem).filter_map(|c| c.ok()).map(|c| c.to_vec()).collect()
    };
    let client = ders(client_ca);
    if ders(cluster_ca).iter().any(|c| client.contains(c)) {
        return Err(Error::Config(
            "cluster.ca and tls.ca hold the same CA certificate: the node-to-node port needs a CA of its own, \
             which issues node certificates only"
                .into(),
        ));
    }
    Ok(())
}

/// Asks the configured peers, in turn, to let this node join, until it is a voter (or a
/// member, for a non-voter). Runs in the background for the life of the process: peers may
/// start after this node.
async fn join_until_member(node: RaftNode, peers: Vec<String>, voter: bool) {
    let mut attempt = 0u32;
    // A node that was added as a learner but not yet promoted (say, it crashed in between)
    // asks again: both steps are idempotent.
    while !(if voter { node.is_voter() } else { node.is_member() }) {
        let peer = &peers[attempt as usize % peers.len()];
        match node.join(peer, voter).await {
            Ok(()) => return,
            Err(e) => warn!(peer, error = %e, "join failed; retrying"),
        }
        attempt = attempt.saturating_add(1);
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// Resolves on SIGINT or SIGTERM.
pub async fn wait_for_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).expect("SIGTERM handler");
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}
