//! A linearizability workload over a real cluster: clients on every node read, write,
//! check-and-set and delete a few hot secrets over gRPC and the Vault HTTP API (curl), and
//! record what they saw; closing reads on every node end the history, and [`check`] runs
//! `arca_check` over it. Used by the crash (kill -9) and partition tests.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arca_check::{check_kv, KvInput, KvOperation, KvOutput, Operation as Op, Verdict};
use arca_server::proto::kv_client::KvClient;
use arca_server::proto::{GetRequest, PutRequest, VersionsRequest};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint};

use super::DevCluster;

pub const KEYS: [&str; 3] = ["hot/a", "hot/b", "hot/c"];
const TIMEOUT: Duration = Duration::from_secs(4);

/// What the client learnt from one request.
pub enum Seen {
    Output(KvOutput),
    /// The server answered that it did nothing (sealed, or the audit record could not be
    /// committed: fail closed): the operation is left out of the history.
    NoEffect,
    /// Lost on the way (timeout, connection cut by the kill): it may or may not have happened.
    Unknown,
}

/// Answers the server gives when it did not act on a request at all.
fn did_nothing(message: &str) -> bool {
    message.contains("sealed") || message.contains("audit log unavailable")
}

pub struct Target {
    pub api: String,
    pub port: u16,
    pub ca: std::path::PathBuf,
    pub token: String,
}

pub fn grpc(t: &Target) -> KvClient<Channel> {
    let tls = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(std::fs::read(&t.ca).unwrap()));
    let channel = Endpoint::from_shared(t.api.clone())
        .unwrap()
        .tls_config(tls)
        .unwrap()
        .connect_timeout(Duration::from_secs(1))
        .timeout(TIMEOUT)
        .connect_lazy();
    KvClient::new(channel)
}

pub async fn over_grpc(kv: &mut KvClient<Channel>, token: &str, key: &str, input: &KvInput) -> Seen {
    fn req<T>(msg: T, token: &str) -> tonic::Request<T> {
        let mut r = tonic::Request::new(msg);
        r.metadata_mut().insert("authorization", format!("Bearer {token}").parse().unwrap());
        r
    }
    let put = |value: &str, cas: Option<u64>| PutRequest {
        path: key.into(),
        data: [("v".to_string(), value.to_string())].into(),
        cas,
    };
    let result = match input {
        KvInput::Read => {
            match kv.get(req(GetRequest { path: key.into(), version: 0, stage: String::new() }, token)).await {
                Ok(r) => {
                    let r = r.into_inner();
                    let version = r.metadata.map_or(0, |m| m.version);
                    return Seen::Output(KvOutput::Read(Some((version, r.data["v"].clone()))));
                }
                Err(s) if s.code() == tonic::Code::NotFound => return Seen::Output(KvOutput::Read(None)),
                Err(s) => Err(s),
            }
        }
        KvInput::Write(v) => kv.put(req(put(v, None), token)).await.map(|r| r.into_inner().version),
        KvInput::Cas { value, cas } => kv.put(req(put(value, Some(*cas)), token)).await.map(|r| r.into_inner().version),
        KvInput::Delete => {
            kv.delete(req(VersionsRequest { path: key.into(), versions: vec![] }, token)).await.map(|_| 0)
        }
    };
    match (input, result) {
        (KvInput::Delete, Ok(_)) => Seen::Output(KvOutput::Deleted),
        (_, Ok(version)) => Seen::Output(KvOutput::Written(version)),
        (_, Err(s)) if s.message().contains("check-and-set") => Seen::Output(KvOutput::CasMismatch),
        // Deleting a secret that has no version: refused, nothing changed.
        (KvInput::Delete, Err(s)) if s.code() == tonic::Code::NotFound => Seen::NoEffect,
        (_, Err(s)) if did_nothing(s.message()) => Seen::NoEffect,
        // No connection (the node is down): the request was never sent.
        (_, Err(s)) if s.code() == tonic::Code::Unavailable && s.message().contains("tcp connect error") => {
            Seen::NoEffect
        }
        (KvInput::Read, Err(_)) => Seen::NoEffect,
        (_, Err(_)) => Seen::Unknown,
    }
}

/// The same through the Vault HTTP API, with curl (a separate client stack).
pub async fn over_http(t: &Target, key: &str, input: &KvInput) -> Seen {
    let url = format!("https://127.0.0.1:{}/v1/secret/data/{key}", t.port);
    let body = |value: &str, cas: Option<u64>| match cas {
        Some(cas) => serde_json::json!({"data": {"v": value}, "options": {"cas": cas}}).to_string(),
        None => serde_json::json!({"data": {"v": value}}).to_string(),
    };
    let (method, data) = match input {
        KvInput::Read => ("GET", None),
        KvInput::Write(v) => ("POST", Some(body(v, None))),
        KvInput::Cas { value, cas } => ("POST", Some(body(value, Some(*cas)))),
        KvInput::Delete => ("DELETE", None),
    };
    let mut cmd = tokio::process::Command::new("curl");
    cmd.args(["-sS", "--max-time", &TIMEOUT.as_secs().to_string(), "--cacert"]).arg(&t.ca).args([
        "-H",
        &format!("X-Vault-Token: {}", t.token),
        "-X",
        method,
        "-w",
        "\n%{http_code}",
    ]);
    if let Some(d) = data {
        cmd.args(["-H", "Content-Type: application/json", "--data", &d]);
    }
    let out = cmd.arg(&url).output().await.expect("run curl");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, status) = text.rsplit_once('\n').unwrap_or(("", ""));
    let status: u16 = status.trim().parse().unwrap_or(0);
    let json: serde_json::Value = serde_json::from_str(body).unwrap_or_default();
    let errors = json["errors"].to_string();
    // curl exit 7: the connection was refused, nothing was sent.
    if out.status.code() == Some(7) || (status >= 400 && did_nothing(&errors)) {
        return Seen::NoEffect;
    }
    match (input, status) {
        (KvInput::Read, 200) => {
            let version = json["data"]["metadata"]["version"].as_u64().unwrap();
            Seen::Output(KvOutput::Read(Some((version, json["data"]["data"]["v"].as_str().unwrap().to_string()))))
        }
        (KvInput::Read, 404) => Seen::Output(KvOutput::Read(None)),
        (KvInput::Read, _) => Seen::NoEffect,
        (KvInput::Delete, 204) => Seen::Output(KvOutput::Deleted),
        (KvInput::Delete, 404) => Seen::NoEffect,
        (_, 200) => Seen::Output(KvOutput::Written(json["data"]["version"].as_u64().unwrap())),
        (_, 400) if errors.contains("check-and-set") => Seen::Output(KvOutput::CasMismatch),
        _ => Seen::Unknown,
    }
}

#[derive(Default)]
pub struct History(pub Mutex<Vec<KvOperation>>);

/// One client: operations on the hot keys through one node until `until` (at most 20 000).
pub async fn client(id: usize, target: Target, http: bool, started: Instant, until: Instant, history: Arc<History>) {
    let mut kv = grpc(&target);
    let mut seen_version = [0u64; KEYS.len()];
    let mut seq = 0;
    while Instant::now() < until && seq < 20_000 {
        seq += 1;
        let k = (id + seq) % KEYS.len();
        let value = format!("c{id}-{seq}");
        let input = match (id * 7 + seq * 13) % 20 {
            0..=7 => KvInput::Read,
            8..=13 => KvInput::Write(value),
            14..=18 => KvInput::Cas { value, cas: seen_version[k] },
            _ => KvInput::Delete,
        };
        let call = started.elapsed().as_nanos() as u64;
        let seen = if http {
            over_http(&target, KEYS[k], &input).await
        } else {
            over_grpc(&mut kv, &target.token, KEYS[k], &input).await
        };
        let ret = started.elapsed().as_nanos() as u64;
        let (output, ret) = match seen {
            Seen::NoEffect => {
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
            Seen::Unknown => (KvOutput::Unknown, None),
            Seen::Output(o) => {
                match &o {
                    KvOutput::Written(v) | KvOutput::Read(Some((v, _))) => seen_version[k] = *v,
                    _ => {}
                }
                (o, Some(ret))
            }
        };
        history.0.lock().unwrap().push((KEYS[k].to_string(), Op { client: id, call, ret, input, output }));
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Where a client of node `node` of `c` sends its requests.
pub fn target(c: &DevCluster, node: u64) -> Target {
    let port = c.base + 10 * (node as u16 - 1);
    Target { api: format!("https://127.0.0.1:{port}"), port, ca: c.ca.clone(), token: c.token.clone() }
}

/// Six clients, two on each node (the last two over HTTP), until `until`.
pub fn spawn_clients(
    rt: &tokio::runtime::Runtime,
    c: &DevCluster,
    started: Instant,
    until: Instant,
    history: &Arc<History>,
) -> Vec<tokio::task::JoinHandle<()>> {
    (0..6)
        .map(|id| rt.spawn(client(id, target(c, 1 + id as u64 % 3), id >= 4, started, until, history.clone())))
        .collect()
}

/// Reads every hot key on every node (retrying for up to 30 s while a node comes back): with
/// the history, these make every acknowledged write that was lost a violation.
pub fn closing_reads(rt: &tokio::runtime::Runtime, c: &DevCluster, started: Instant) -> Vec<KvOperation> {
    rt.block_on(async {
        let mut ops = Vec::new();
        for node in 1..=3 {
            let t = target(c, node);
            let mut kv = grpc(&t);
            for key in KEYS {
                let deadline = Instant::now() + Duration::from_secs(30);
                loop {
                    let call = started.elapsed().as_nanos() as u64;
                    match over_grpc(&mut kv, &t.token, key, &KvInput::Read).await {
                        Seen::Output(output) => {
                            let ret = Some(started.elapsed().as_nanos() as u64);
                            ops.push((key.to_string(), Op { client: 100, call, ret, input: KvInput::Read, output }));
                            break;
                        }
                        _ if Instant::now() < deadline => tokio::time::sleep(Duration::from_millis(200)).await,
                        _ => panic!("node {node} serves no read of {key}"),
                    }
                }
            }
        }
        ops
    })
}

/// Checks the history (with its closing reads) and returns how many writes were acknowledged;
/// panics if it is not linearizable, leaving the failing key's history, by invocation time,
/// in `$TMPDIR/NAME-history.txt` for a person to read.
pub fn check(ops: &[KvOperation], name: &str, what: &str) -> usize {
    let acked = ops.iter().filter(|(_, o)| matches!(o.output, KvOutput::Written(_))).count();
    let (verdict, key) = check_kv(ops);
    if verdict != Verdict::Linearizable {
        let stuck = match verdict {
            Verdict::NotLinearizable { stuck_at } => Some(stuck_at),
            _ => None,
        };
        let mut lines: Vec<(u64, String)> = ops
            .iter()
            .filter(|(k, _)| Some(k) == key.as_ref())
            .enumerate()
            .map(|(i, (_, o))| (o.call, format!("{}{o:?}", if Some(i) == stuck { ">>> " } else { "" })))
            .collect();
        lines.sort();
        let text: Vec<String> = lines.into_iter().map(|(_, l)| l).collect();
        let kept = std::env::temp_dir().join(format!("{name}-history.txt"));
        std::fs::write(&kept, text.join("\n")).unwrap();
        panic!(
            "the history of {key:?} is not linearizable ({verdict:?}; {} operations, {what}): see {}",
            ops.len(),
            kept.display()
        );
    }
    acked
}
