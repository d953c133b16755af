//! `arca dev …` and `arca server --dev`: a local cluster in one command, for trying Arca and
//! for end-to-end tests. Not for production: it writes the unseal shares and root token to disk.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use arca_client::raw::proto;
use clap::Subcommand;
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::client::Scope;
use super::{CliError, CliResult, Client};

#[derive(Subcommand)]
pub enum DevCommand {
    /// Start (or restart) a local cluster under DIR: certificates, configs, node processes,
    /// init (5 shares, threshold 3) and unseal. Stays in the foreground; Ctrl-C stops it.
    Cluster {
        #[arg(long, default_value_t = 3)]
        nodes: u64,
        #[arg(long)]
        dir: PathBuf,
        /// Client API port of node 1; node N uses base + 10(N-1) for its API and one more for
        /// its cluster port.
        #[arg(long, default_value_t = 8200)]
        base_port: u16,
        /// A TOML file appended to every node's config, e.g. a `[limits]` section.
        #[arg(long)]
        extra_config: Option<PathBuf>,
    },
    /// Write development CAs (a client CA and a separate cluster CA) and node certificates into
    /// DIR (for docker-compose).
    Certs {
        #[arg(long)]
        dir: PathBuf,
        /// Node names, comma separated; each certificate is valid for its name and loopback.
        /// The Nth name is node id N: its cluster certificate names `node-N.arca`.
        #[arg(long, value_delimiter = ',', default_value = "node1,node2,node3")]
        nodes: Vec<String>,
    },
}

/// `DIR/init.json`: what `operator init` printed. Mode 0600; dev only.
#[derive(Serialize, Deserialize)]
struct InitFile {
    shares: Vec<String>,
    threshold: u32,
    root_token: String,
}

#[derive(Serialize)]
struct NodeEntry {
    id: u64,
    api_addr: String,
    cluster_addr: String,
    pid: u32,
    data_dir: PathBuf,
    config: PathBuf,
}

pub async fn run(cmd: DevCommand) -> CliResult {
    match cmd {
        DevCommand::Certs { dir, nodes } => {
            arca_server::certs::generate(&dir, &nodes)?;
            println!(
                "wrote a development client CA, a cluster CA and certificates for {} to {}",
                nodes.join(", "),
                dir.display()
            );
            Ok(())
        }
        DevCommand::Cluster { nodes, dir, base_port, extra_config } => {
            let extra = match extra_config {
                Some(path) => std::fs::read_to_string(&path).map_err(io_err(&path))?,
                None => String::new(),
            };
            cluster(nodes, &dir, base_port, &extra).await
        }
    }
}

fn io_err(path: &Path) -> impl Fn(std::io::Error) -> CliError + '_ {
    move |e| CliError::new(format!("{}: {e}", path.display()))
}

fn write_private(path: &Path, contents: &str) -> CliResult {
    Ok(arca_server::certs::write(path, contents, true)?)
}

/// Writes one node's config and returns its path.
#[allow(clippy::too_many_arguments)]
fn node_config(
    dir: &Path,
    id: u64,
    api: u16,
    cluster: u16,
    certs: &arca_server::certs::NodeFiles,
    join: Option<u16>,
    extra: &str,
) -> CliResult<PathBuf> {
    let node_dir = dir.join(format!("node{id}"));
    std::fs::create_dir_all(&node_dir).map_err(io_err(&node_dir))?;
    // Command rotator functions of every node of the dev cluster: DIR/rotators.
    let rotators = dir.join("rotators");
    std::fs::create_dir_all(&rotators).map_err(io_err(&rotators))?;
    let formation = match join {
        None => "bootstrap = true".to_string(),
        Some(port) => format!("join = [\"127.0.0.1:{port}\"]"),
    };
    let text = format!(
        "node_id = {id}\ndata_dir = {data:?}\nlog_level = \"info\"\n\n[api]\nlisten = \"127.0.0.1:{api}\"\nadvertise = \"127.0.0.1:{api}\"\n\n\
         [cluster]\nlisten = \"127.0.0.1:{cluster}\"\nadvertise = \"127.0.0.1:{cluster}\"\n{formation}\n\
         ca = {cluster_ca:?}\ncert = {cluster_cert:?}\nkey = {cluster_key:?}\n\n\
         [tls]\nca = {ca:?}\ncert = {cert:?}\nkey = {key:?}\n\n[rotation]\nfunctions_dir = {functions:?}\n\
         # A dev cluster's postgres rotations may reach the local server only.\n\
         postgres_allow = [\"127.0.0.1:5432\", \"localhost:5432\"]\n\n{extra}",
        data = node_dir.join("data"),
        functions = rotators,
        ca = certs.ca,
        cert = certs.cert,
        key = certs.key,
        cluster_ca = certs.cluster_ca,
        cluster_cert = certs.cluster_cert,
        cluster_key = certs.cluster_key,
    );
    let path = node_dir.join("node.toml");
    std::fs::write(&path, text).map_err(io_err(&path))?;
    Ok(path)
}

/// Starts `arca server --config` as a child whose output is prefixed with `[nodeN]`.
fn spawn_node(id: u64, config: &Path) -> CliResult<Child> {
    let exe = std::env::current_exe().map_err(|e| CliError::new(format!("cannot find the arca executable: {e}")))?;
    let mut cmd = std::process::Command::new(exe);
    cmd.arg("server").arg("--config").arg(config).stdout(Stdio::piped()).stderr(Stdio::piped());
    #[cfg(target_os = "linux")]
    unsafe {
        use std::os::unix::process::CommandExt;
        // If this process dies without cleaning up (SIGKILL), the nodes die with it.
        cmd.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
            Ok(())
        });
    }
    let mut child = cmd.spawn().map_err(|e| CliError::new(format!("cannot start node {id}: {e}")))?;
    let out: Box<dyn std::io::Read + Send> = Box::new(child.stdout.take().expect("piped"));
    let err: Box<dyn std::io::Read + Send> = Box::new(child.stderr.take().expect("piped"));
    for stream in [out, err] {
        std::thread::spawn(move || {
            for line in BufReader::new(stream).lines().map_while(Result::ok) {
                println!("[node{id}] {line}");
            }
        });
    }
    Ok(child)
}

/// Polls the node's seal status until it answers (and, if `initialized`, reports initialized).
async fn wait_ready(addr: &str, ca: &Path, initialized: bool, limit: Duration) -> CliResult<Client> {
    let deadline = Instant::now() + limit;
    let mut last = String::new();
    while Instant::now() < deadline {
        match Client::connect(addr, Some(ca), None, None, Scope::Node).await {
            Ok(client) => match rpc!(client, sys.seal_status(proto::SealStatusRequest {})).await {
                Ok(s) if !initialized || s.initialized => return Ok(client),
                Ok(_) => last = "not initialized yet".into(),
                Err(e) => last = e.to_string(),
            },
            Err(e) => last = e.message,
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Err(CliError::new(format!("node at {addr} not ready within {limit:?}: {last}")))
}

async fn unseal(client: &Client, init: &InitFile) -> CliResult {
    for share in init.shares.iter().take(init.threshold as usize) {
        let s = rpc!(client, sys.unseal(proto::UnsealRequest { share: share.clone(), reset: false })).await?;
        if !s.sealed {
            return Ok(());
        }
    }
    Err(CliError::new(format!("{} is still sealed after {} shares", client.addr, init.threshold)))
}

async fn cluster(nodes: u64, dir: &Path, base_port: u16, extra: &str) -> CliResult {
    if nodes == 0 || nodes > 9 {
        return Err(CliError::usage("--nodes must be between 1 and 9"));
    }
    std::fs::create_dir_all(dir).map_err(io_err(dir))?;
    let dir = dir.canonicalize().map_err(io_err(dir))?;
    let names: Vec<String> = (1..=nodes).map(|i| format!("node{i}")).collect();
    let certs = arca_server::certs::generate(&dir.join("certs"), &names)?;
    let ca = certs[0].ca.clone();
    let port = |i: u64, off: u16| base_port + 10 * (i as u16 - 1) + off;

    let mut children = Vec::new();
    let mut entries = Vec::new();
    for i in 1..=nodes {
        let join = (i > 1).then(|| port(1, 1));
        let config = node_config(&dir, i, port(i, 0), port(i, 1), &certs[i as usize - 1], join, extra)?;
        let child = spawn_node(i, &config)?;
        entries.push(NodeEntry {
            id: i,
            api_addr: format!("https://127.0.0.1:{}", port(i, 0)),
            cluster_addr: format!("127.0.0.1:{}", port(i, 1)),
            pid: child.id(),
            data_dir: dir.join(format!("node{i}/data")),
            config,
        });
        children.push(child);
    }
    let result = bring_up(&dir, &ca, &entries).await;
    if let Err(e) = result {
        stop(&mut children);
        return Err(e);
    }
    println!("\narca dev cluster is up: {nodes} nodes, unsealed. In another terminal:\n\n    . {}/env\n    arca kv put app/db password=s3cret\n    arca kv get app/db\n\nCtrl-C stops the cluster; running this command again on the same --dir restarts it.", dir.display());
    arca_server::wait_for_signal().await;
    println!("stopping the cluster");
    stop(&mut children);
    Ok(())
}

async fn bring_up(dir: &Path, ca: &Path, entries: &[NodeEntry]) -> CliResult {
    let init_path = dir.join("init.json");
    let first = wait_ready(&entries[0].api_addr, ca, false, Duration::from_secs(60)).await?;
    let init: InitFile = if init_path.exists() {
        let text = std::fs::read_to_string(&init_path).map_err(io_err(&init_path))?;
        serde_json::from_str(&text).map_err(|e| CliError::new(format!("{}: {e}", init_path.display())))?
    } else {
        let resp = rpc!(first, sys.init(proto::InitRequest { shares: 5, threshold: 3 })).await?;
        let init = InitFile { shares: resp.shares, threshold: resp.threshold, root_token: resp.root_token };
        write_private(&init_path, &serde_json::to_string_pretty(&init).expect("serialisable"))?;
        init
    };
    for e in entries {
        let client = wait_ready(&e.api_addr, ca, true, Duration::from_secs(60)).await?;
        unseal(&client, &init).await?;
    }
    // Ready means fault tolerant: every node a voter, so losing any one keeps a quorum.
    let admin = Client::connect(&entries[0].api_addr, Some(ca), Some(&init.root_token), None, Scope::Node).await?;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let members = rpc!(admin, sys.members(proto::MembersRequest {})).await?.members;
        if members.iter().filter(|m| m.voter).count() == entries.len() {
            break;
        }
        if Instant::now() > deadline {
            return Err(CliError::new(format!("not every node became a voter within 60 s: {members:?}")));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The binary's directory goes on PATH so `. DIR/env` is all a second terminal needs.
    let bin_dir = std::env::current_exe().ok().and_then(|e| e.parent().map(Path::to_path_buf)).unwrap_or_default();
    let env = format!(
        "export ARCA_ADDR={}\nexport ARCA_CACERT={}\nexport ARCA_TOKEN={}\nexport PATH=\"{}:$PATH\"\n",
        entries[0].api_addr,
        ca.display(),
        init.root_token,
        bin_dir.display()
    );
    write_private(&dir.join("env"), &env)?;
    let cluster = json!({ "nodes": entries });
    let path = dir.join("cluster.json");
    std::fs::write(&path, serde_json::to_string_pretty(&cluster).expect("serialisable")).map_err(io_err(&path))?;
    Ok(())
}

fn stop(children: &mut [Child]) {
    for c in children.iter() {
        // SIGTERM: each node shuts down gracefully.
        unsafe { libc::kill(c.id() as libc::pid_t, libc::SIGTERM) };
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    for c in children.iter_mut() {
        while Instant::now() < deadline {
            if !matches!(c.try_wait(), Ok(None)) {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = c.kill();
        let _ = c.wait();
    }
}

/// `arca server --dev`: one node in a temporary directory, initialized and unsealed.
pub async fn server_dev(addr: &str, log_format: super::LogFormat) -> CliResult {
    // A fresh directory of our own: a predictable name could be created beforehand by another
    // user, with a CA of theirs for us to trust and use.
    let dir = arca_server::certs::private_temp_dir("arca-dev")?;
    let certs = arca_server::certs::generate(&dir.join("certs"), &["node1".to_string()])?;
    let api_port = addr.rsplit(':').next().and_then(|p| p.parse::<u16>().ok()).unwrap_or(8200);
    let config_path = node_config(&dir, 1, api_port, api_port + 1, &certs[0], None, "")?;
    let config = arca_server::Config::load(&config_path)?;
    super::init_logging("warn", log_format);
    super::harden::harden(!config.disable_mlock);
    let server = tokio::spawn(arca_server::run(config, arca_server::wait_for_signal()));
    let api = format!("https://127.0.0.1:{api_port}");
    let client = wait_ready(&api, &certs[0].ca, false, Duration::from_secs(30)).await?;
    let resp = rpc!(client, sys.init(proto::InitRequest { shares: 3, threshold: 2 })).await?;
    let init = InitFile { shares: resp.shares, threshold: resp.threshold, root_token: resp.root_token };
    unseal(&client, &init).await?;
    println!(
        "Arca dev server: one node, initialized and unsealed, data in {} (deleted on exit).\n\n    export ARCA_ADDR={api}\n    export ARCA_CACERT={}\n    export ARCA_TOKEN={}\n\nUnseal shares (threshold {}):\n{}\n\nNot for production: everything lives in a temporary directory.",
        dir.display(),
        certs[0].ca.display(),
        init.root_token,
        init.threshold,
        init.shares.join("\n")
    );
    let result = server.await.map_err(|e| CliError::new(e.to_string()))?;
    let _ = std::fs::remove_dir_all(&dir);
    Ok(result?)
}
