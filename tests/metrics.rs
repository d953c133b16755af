//! Metrics as an operator uses them: a real Prometheus (Debian's `prometheus` package) scrapes
//! `GET /v1/sys/metrics?format=prometheus` on every node of a 3-node `arca dev cluster`, over
//! TLS, with a token whose only grant is `read` on `sys/metrics`; after a workload, its query
//! API shows the request rate per node and every target up.

mod common;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::DevCluster;
use serde_json::Value;

fn prometheus_path() -> String {
    std::env::var("ARCA_PROMETHEUS").unwrap_or_else(|_| "/usr/bin/prometheus".into())
}

struct Prometheus(Child);

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// An instant query against Prometheus's HTTP API (with curl, as an operator would).
fn query(port: u16, promql: &str) -> Vec<Value> {
    let out = Command::new("curl")
        .args(["-s", "--max-time", "5", "-G", &format!("http://127.0.0.1:{port}/api/v1/query")])
        .args(["--data-urlencode", &format!("query={promql}")])
        .output()
        .expect("curl (scripts/test.sh installs it)");
    let body: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    body["data"]["result"].as_array().cloned().unwrap_or_default()
}

fn value(series: &Value) -> f64 {
    series["value"][1].as_str().and_then(|v| v.parse().ok()).unwrap_or(0.0)
}

#[test]
fn prometheus_scrapes_every_node_and_sees_the_request_rate() {
    let c = DevCluster::start(3);
    let dir = c.dir.path();
    // A scraper's token: read on sys/metrics and nothing else.
    let hcl = dir.join("metrics.hcl");
    std::fs::write(&hcl, "path \"sys/metrics\" { capabilities = [\"read\"] }\n").unwrap();
    c.ok(1, &["policy", "write", "metrics", hcl.to_str().unwrap()]);
    let created: Value = serde_json::from_str(
        &c.ok(1, &["token", "create", "--policy", "metrics", "--no-default-policy", "--ttl", "1h", "--format", "json"]),
    )
    .unwrap();
    let token = created["token"].as_str().unwrap();
    let refused = c.arca_with_token(1, Some(token), &["kv", "get", "app/x"]);
    assert!(!refused.status.success(), "the scraper's token reads nothing else");

    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let targets: Vec<String> = (1..=3).map(|n| format!("\"{}\"", c.api(n).trim_start_matches("https://"))).collect();
    let config = format!(
        "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\nscrape_configs:\n  - job_name: arca\n    scheme: https\n    \
         metrics_path: /v1/sys/metrics\n    params:\n      format: [prometheus]\n    tls_config:\n      ca_file: {}\n    \
         authorization:\n      credentials: {token}\n    static_configs:\n      - targets: [{}]\n",
        c.ca.display(),
        targets.join(", ")
    );
    std::fs::write(dir.join("prometheus.yml"), config).unwrap();
    let log = std::fs::File::create(dir.join("prometheus.log")).unwrap();
    let _prometheus = Prometheus(
        Command::new(prometheus_path())
            .arg(format!("--config.file={}", dir.join("prometheus.yml").display()))
            .arg(format!("--storage.tsdb.path={}", dir.join("tsdb").display()))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start prometheus (scripts/test.sh installs Debian's package)"),
    );

    // A workload on every node while Prometheus scrapes; bounded in count and time.
    c.ok(1, &["kv", "put", "app/config", "v=1"]);
    let deadline = Instant::now() + Duration::from_secs(60);
    let (mut up, mut rates) = (Vec::new(), Vec::new());
    let mut reads = 0;
    while Instant::now() < deadline && reads < 2000 {
        for node in 1..=3 {
            c.ok(node, &["kv", "get", "app/config"]);
            reads += 1;
        }
        up = query(port, "up{job=\"arca\"}");
        rates = query(port, "sum by (instance) (rate(arca_requests_total{operation=\"KvGet\",outcome=\"ok\"}[5s]))");
        if up.len() == 3
            && up.iter().all(|s| value(s) == 1.0)
            && rates.len() == 3
            && rates.iter().all(|s| value(s) > 0.0)
        {
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let log = std::fs::read_to_string(dir.join("prometheus.log")).unwrap_or_default();
    assert_eq!(up.len(), 3, "every node is a target: {up:?}\n{log}");
    assert!(up.iter().all(|s| value(s) == 1.0), "every target is up (TLS, token): {up:?}\n{log}");
    assert_eq!(rates.len(), 3, "a read-rate series per node: {rates:?}");
    assert!(rates.iter().all(|s| value(s) > 0.0), "{rates:?}");
    // The state series are there too, with one leader among the three.
    let leaders = query(port, "sum(arca_raft_is_leader)");
    assert_eq!(leaders.first().map(value), Some(1.0), "{leaders:?}");
    let sealed = query(port, "max(arca_sealed)");
    assert_eq!(sealed.first().map(value), Some(0.0), "{sealed:?}");
}
