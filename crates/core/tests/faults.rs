//! The vault under network faults: a real 3-node cluster in one process (RocksDB, mutual TLS on
//! loopback, the whole core with its audit pipeline and read barrier) whose node-to-node
//! messages pass through `arca_raft::Faults`. Clients spread over all nodes read, write,
//! check-and-set and delete a few hot secrets while the network is partitioned, lossy and slow;
//! every history is checked for linearizability (`arca_check`), and every acknowledged request
//! must have exactly one audit record on every node afterwards.
//!
//! Why one file of about 700 lines: the fault scenarios share one cluster harness, the clients and
//! the history checks.
//!
//! The short versions run in the default suite. `ARCA_SOAK=1` lengthens every scenario (60 s of
//! flapping partitions, as the issue asks) for the soak loop in `scripts/soak.sh`.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arca_check::{check_kv, KvInput, KvOperation, KvOutput, Operation as Op, Verdict};
use arca_core::{AuditConfig, AuditFilter, Core, Error, Operation, Reply, Request, SecretData, TokenCreate, WatchKind};
use arca_raft::testing::TestCluster;
use arca_raft::Timing;
use zeroize::Zeroizing;

const KEYS: [&str; 3] = ["hot/a", "hot/b", "hot/c"];
/// A request whose record cannot commit within this fails (fail closed).
const AUDIT_DEADLINE: Duration = Duration::from_secs(2);

fn soak() -> bool {
    std::env::var("ARCA_SOAK").is_ok_and(|v| v == "1")
}

struct Vault {
    cluster: TestCluster,
    cores: BTreeMap<u64, Core>,
    token: String,
    shares: Vec<String>,
    started: Instant,
    /// The writes that gave each hot secret its first version: the start of every history.
    seeds: Vec<KvOperation>,
}

impl Vault {
    async fn start() -> Vault {
        Vault::start_with(Timing::default()).await
    }

    /// Raft's waits for a leader and for an apply no longer than the audit deadline, as an
    /// operator who wants every request answered within it sets them: a write whose record
    /// committed just before a partition then fails within the deadline too, instead of after
    /// the default 5 s + 5 s.
    fn timing(timing: Timing) -> Timing {
        Timing { leader_timeout: AUDIT_DEADLINE, apply_timeout: AUDIT_DEADLINE, ..timing }
    }

    async fn start_with(timing: Timing) -> Vault {
        let cluster = TestCluster::start(3, Vault::timing(timing)).await;
        cluster.wait_for_leader(Duration::from_secs(10)).await;
        let audit = AuditConfig { deadline: AUDIT_DEADLINE, ..AuditConfig::default() };
        let cores: BTreeMap<u64, Core> =
            cluster.running().map(|n| (n.id(), Core::with_audit(n.clone(), audit))).collect();
        let Reply::Init(init) =
            cores[&1].handle(Request::new(None, Operation::Init { shares: 2, threshold: 2 })).await.unwrap()
        else {
            panic!("init")
        };
        for core in cores.values() {
            for share in &init.shares {
                let share = Zeroizing::new(share.to_string());
                core.handle(Request::new(None, Operation::Unseal { share, reset: false })).await.unwrap();
            }
        }
        let mut vault = Vault {
            cluster,
            cores,
            token: init.root_token.to_string(),
            shares: init.shares.iter().map(|s| s.to_string()).collect(),
            started: Instant::now(),
            seeds: vec![],
        };
        for key in KEYS {
            let call = vault.now();
            let Reply::KvWritten { version, .. } = vault.call(1, put(key, "initial", None)).await.expect("seed") else {
                panic!("seed write")
            };
            let ret = Some(vault.now());
            let (input, output) = (KvInput::Write("initial".into()), KvOutput::Written(version.version));
            vault.seeds.push((key.to_string(), Op { client: usize::MAX, call, ret, input, output }));
        }
        vault
    }

    fn now(&self) -> u64 {
        self.started.elapsed().as_nanos() as u64
    }

    async fn call(&self, node: u64, op: Operation) -> Result<Reply, Error> {
        self.call_as(node, op, None).await
    }

    async fn call_as(&self, node: u64, op: Operation, request_id: Option<String>) -> Result<Reply, Error> {
        let mut req = Request::new(Some(Zeroizing::new(self.token.clone())), op);
        req.request_id = request_id;
        self.cores[&node].handle(req).await
    }

    /// The leader some node knows of, waiting (bounded) through an election.
    async fn leader(&self) -> u64 {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(l) = self.cluster.running().find_map(|n| n.current_leader()) {
                return l;
            }
            assert!(Instant::now() < deadline, "no node knows a leader after 10 s");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

fn put(path: &str, value: &str, cas: Option<u64>) -> Operation {
    Operation::KvPut { path: path.into(), data: SecretData([("v".to_string(), value.to_string())].into()), cas }
}

/// One recorded operation, with the node it went to and its request id (acknowledged ones
/// must be audited exactly once everywhere).
struct Recorded {
    node: u64,
    request_id: String,
    /// How long the client waited for its answer (failed requests too).
    took: Duration,
    /// A read that failed: it changed nothing and is left out of the history, but it shows
    /// that the client asked.
    failed_read: bool,
    op: KvOperation,
}

#[derive(Default)]
struct History(Mutex<Vec<Recorded>>);

impl History {
    fn ops(&self, vault: &Vault) -> Vec<KvOperation> {
        let recorded = self.0.lock().unwrap();
        let ops = recorded.iter().filter(|r| !r.failed_read).map(|r| r.op.clone());
        vault.seeds.iter().cloned().chain(ops).collect()
    }
}

/// Runs one client: operations on the hot keys through `node` until `until`, at most `max`.
async fn client(vault: Arc<Vault>, history: Arc<History>, id: usize, node: u64, until: Instant, max: usize) {
    let mut seq = 0usize;
    let mut seen: HashMap<&str, u64> = HashMap::new();
    while Instant::now() < until && seq < max {
        seq += 1;
        let key = KEYS[(id + seq) % KEYS.len()];
        let roll = (id * 7 + seq * 13) % 20;
        let value = format!("c{id}-{seq}");
        let input = match roll {
            0..=7 => KvInput::Read,
            8..=13 => KvInput::Write(value.clone()),
            14..=18 => KvInput::Cas { value: value.clone(), cas: seen.get(key).copied().unwrap_or(1) },
            _ => KvInput::Delete,
        };
        let op = match &input {
            KvInput::Read => Operation::KvGet { path: key.into(), version: None },
            KvInput::Write(v) => put(key, v, None),
            KvInput::Cas { value, cas } => put(key, value, Some(*cas)),
            KvInput::Delete => Operation::KvDelete { path: key.into(), versions: vec![] },
        };
        let request_id = arca_core::audit::request_id();
        let call = vault.now();
        let result = vault.call_as(node, op, Some(request_id.clone())).await;
        let ret = vault.now();
        let (output, ret) = match (&input, result) {
            (_, Ok(Reply::KvWritten { version, .. })) => {
                seen.insert(key, version.version);
                (KvOutput::Written(version.version), Some(ret))
            }
            (_, Ok(Reply::KvSecret { data, version, .. })) => {
                seen.insert(key, version.version);
                (KvOutput::Read(Some((version.version, data.0["v"].clone()))), Some(ret))
            }
            (KvInput::Delete, Ok(_)) => (KvOutput::Deleted, Some(ret)),
            (KvInput::Read, Err(Error::NotFound(_))) => (KvOutput::Read(None), Some(ret)),
            (_, Err(Error::CasMismatch { current, .. })) => {
                seen.insert(key, current);
                (KvOutput::CasMismatch, Some(ret))
            }
            // A failed read changed nothing (see `Recorded::failed_read`).
            (KvInput::Read, Err(_)) => (KvOutput::Unknown, None),
            // A failed write may or may not have taken effect (its commit may land later).
            (_, Err(_)) => (KvOutput::Unknown, None),
            (_, Ok(other)) => panic!("unexpected reply {other:?}"),
        };
        history.0.lock().unwrap().push(Recorded {
            node,
            request_id,
            took: Duration::from_nanos(vault.now() - call),
            failed_read: matches!((&input, &output), (KvInput::Read, KvOutput::Unknown)),
            op: (key.to_string(), Op { client: id, call, ret, input, output }),
        });
        // Keep the histories small enough to check: a few hundred operations per key.
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Clients on every node for `duration`, while `faults` runs; returns the history.
async fn run_load<F: std::future::Future<Output = ()>>(
    vault: &Arc<Vault>,
    clients: usize,
    duration: Duration,
    faults: F,
) -> Arc<History> {
    let history = Arc::new(History::default());
    run_load_on(vault, &history, &[1, 2, 3], clients, duration, faults).await;
    history
}

/// Clients spread over `nodes` for `duration` (adding to `history`), while `faults` runs;
/// returns what `faults` returned.
async fn run_load_on<T, F: std::future::Future<Output = T>>(
    vault: &Arc<Vault>,
    history: &Arc<History>,
    nodes: &[u64],
    clients: usize,
    duration: Duration,
    faults: F,
) -> T {
    let until = Instant::now() + duration;
    let mut tasks = Vec::new();
    // Client ids stay distinct across phases, so every written value is.
    static NEXT_CLIENT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let first = NEXT_CLIENT.fetch_add(clients, std::sync::atomic::Ordering::Relaxed);
    for i in 0..clients {
        let (node, id) = (nodes[i % nodes.len()], first + i);
        tasks.push(tokio::spawn(client(vault.clone(), history.clone(), id, node, until, 20_000)));
    }
    let out = faults.await;
    for t in tasks {
        t.await.expect("client task");
    }
    out
}

fn assert_linearizable(vault: &Vault, history: &History) {
    let ops = history.ops(vault);
    let (verdict, key) = check_kv(&ops);
    assert_eq!(verdict, Verdict::Linearizable, "the history of {key:?} is not linearizable ({} operations)", ops.len());
}

/// After healing: every acknowledged request has exactly one record on every node, and every
/// node's chain verifies.
async fn assert_audited_once_everywhere(vault: &Vault, history: &History) {
    let acked: Vec<String> =
        history.0.lock().unwrap().iter().filter(|r| r.op.1.ret.is_some()).map(|r| r.request_id.clone()).collect();
    // Every node has applied everything committed so far (a write through each makes it so).
    for node in 1..=3 {
        vault.call(node, put("settle", &format!("n{node}"), None)).await.expect("the healed cluster serves");
    }
    for node in 1..=3 {
        let mut counts: HashMap<String, u32> = HashMap::new();
        let mut from_seq = 0;
        loop {
            let filter =
                AuditFilter { from_seq, path_prefix: "secret/data/hot/".into(), limit: 10_000, ..Default::default() };
            let Reply::AuditRecords(page) = vault.call(node, Operation::AuditList(filter)).await.unwrap() else {
                panic!("audit list")
            };
            let Some(last) = page.last() else { break };
            from_seq = last.seq + 1;
            for r in &page {
                *counts.entry(r.request_id.clone()).or_default() += 1;
            }
        }
        for id in &acked {
            assert_eq!(counts.get(id).copied().unwrap_or(0), 1, "node {node}: acknowledged request {id} recorded");
        }
        let Reply::AuditVerification { verification, .. } =
            vault.call(node, Operation::AuditVerify { upto: None }).await.expect("verify")
        else {
            panic!("verify")
        };
        assert_eq!(verification.first_bad, None, "node {node}'s audit chain");
    }
}

/// Scenario 1: the leader is cut off from both followers while its clients keep talking to
/// it. It must acknowledge no write and serve no read that began after the cut (they cannot
/// commit their audit records); the majority elects a leader and serves; after healing the
/// history is linearizable and the audit complete.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_isolated_leader_serves_nothing_and_the_majority_goes_on() {
    let vault = Arc::new(Vault::start().await);
    let old = vault.leader().await;
    let cut = Duration::from_secs(if soak() { 20 } else { 5 });
    let (mut cut_at, mut healed_at) = (0, 0);
    let faults = async {
        tokio::time::sleep(Duration::from_secs(1)).await;
        // Requests begun after `cut_at` start under the partition; ones ending before
        // `healed_at` ended under it.
        vault.cluster.faults.isolate(old, &[1, 2, 3]);
        cut_at = vault.now();
        tokio::time::sleep(cut).await;
        healed_at = vault.now();
        vault.cluster.faults.heal();
    };
    let history = run_load(&vault, 6, cut + Duration::from_secs(4), faults).await;
    let new = vault.leader().await;
    assert_ne!(new, old, "the majority elected another leader");

    {
        let recorded = history.0.lock().unwrap();
        // The fault really happened, and the old leader's clients noticed.
        let during: Vec<&Recorded> =
            recorded.iter().filter(|r| r.node == old && r.op.1.call > cut_at && r.op.1.call < healed_at).collect();
        assert!(!during.is_empty(), "no request reached the isolated leader");
        // The cut node answered nothing begun under the partition before it healed: no write
        // acknowledged, no read served (a failed read is not recorded; a failed write is Unknown).
        let answered: Vec<&&Recorded> =
            during.iter().filter(|r| r.op.1.ret.is_some_and(|ret| ret < healed_at)).collect();
        assert!(
            answered.is_empty(),
            "the isolated leader answered {} requests, e.g. {:?}",
            answered.len(),
            answered[0].op
        );
        // Meanwhile the majority acknowledged writes.
        let majority_writes = recorded
            .iter()
            .filter(|r| {
                r.node != old && r.op.1.call > cut_at + 2_000_000_000 && r.op.1.ret.is_some_and(|t| t < healed_at)
            })
            .filter(|r| matches!(r.op.1.output, KvOutput::Written(_)))
            .count();
        assert!(majority_writes > 0, "the majority acknowledged no write while the leader was cut off");
    }
    assert_linearizable(&vault, &history);
    assert_audited_once_everywhere(&vault, &history).await;
}

/// Scenario 2: a follower cut off from the others fails its clients' requests within the
/// audit deadline and never returns stale data.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_isolated_follower_fails_closed_within_the_deadline() {
    let vault = Arc::new(Vault::start().await);
    let leader = vault.leader().await;
    let follower = (1..=3).find(|n| *n != leader).unwrap();
    let (mut cut_at, mut healed_at) = (0, 0);
    let faults = async {
        tokio::time::sleep(Duration::from_secs(1)).await;
        vault.cluster.faults.isolate(follower, &[1, 2, 3]);
        cut_at = vault.now();
        tokio::time::sleep(Duration::from_secs(7)).await;
        healed_at = vault.now();
        vault.cluster.faults.heal();
    };
    let history = run_load(&vault, 6, Duration::from_secs(10), faults).await;
    {
        let recorded = history.0.lock().unwrap();
        let during: Vec<&Recorded> = recorded
            .iter()
            .filter(|r| r.node == follower && r.op.1.call > cut_at && r.op.1.ret.is_none_or(|ret| ret < healed_at))
            .collect();
        if during.is_empty() {
            let mine: Vec<String> = recorded
                .iter()
                .filter(|r| r.node == follower && r.op.1.call + 3_000_000_000 > cut_at)
                .map(|r| format!("call {} ret {:?} took {:?} {:?}", r.op.1.call, r.op.1.ret, r.took, r.op.1.output))
                .collect();
            panic!("no request to the isolated follower {follower} (cut {cut_at}, healed {healed_at}): {mine:#?}");
        }
        for r in &during {
            assert!(
                matches!(r.op.1.output, KvOutput::Unknown),
                "the isolated follower answered {:?} with {:?}",
                r.op.1.input,
                r.op.1.output
            );
            // The deadline, plus the time a loaded 2-core machine takes to notice it.
            assert!(r.took < AUDIT_DEADLINE + Duration::from_millis(1500), "a refusal took {:?}", r.took);
        }
        // Failed reads are not recorded; the writes that were show how long a refusal took.
        assert!(recorded.len() > during.len(), "the rest of the cluster served");
    }
    assert_linearizable(&vault, &history);
    assert_audited_once_everywhere(&vault, &history).await;
}

/// Scenario 3: partitions that come and go (a random node cut off, a one-way cut, the leader's
/// link to one follower) with 10% message loss and 0–50 ms delay throughout. The history stays
/// linearizable and the cluster serves again without help once the network heals.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn flapping_partitions_with_loss_and_delay_stay_linearizable() {
    let vault = Arc::new(Vault::start().await);
    let duration = Duration::from_secs(if soak() { 60 } else { 12 });
    let faults = async {
        let f = &vault.cluster.faults;
        f.set_loss(0.10, Duration::ZERO..Duration::from_millis(50));
        let until = Instant::now() + duration - Duration::from_secs(2);
        let mut round = 0u64;
        while Instant::now() < until && round < 1000 {
            round += 1;
            let node = 1 + round % 3;
            match round % 3 {
                0 => f.isolate(node, &[1, 2, 3]),
                1 => f.block(node, 1 + (node % 3)),
                _ => f.partition(&[vault.leader().await], &[node]),
            }
            tokio::time::sleep(Duration::from_millis(700)).await;
            f.heal_partitions();
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        f.heal();
    };
    let history = run_load(&vault, 6, duration, faults).await;
    assert!(history.0.lock().unwrap().iter().any(|r| matches!(r.op.1.output, KvOutput::Written(_))));
    assert_linearizable(&vault, &history);
    assert_audited_once_everywhere(&vault, &history).await;
}

/// Scenario 5: many clients on every node write one secret with the same `cas`: exactly one
/// succeeds, every other gets a check-and-set refusal, and there is one new version.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_cas_writes_have_exactly_one_winner() {
    let vault = Arc::new(Vault::start().await);
    for round in 0..5u64 {
        let current = match vault.call(1, Operation::KvGet { path: "hot/a".into(), version: None }).await.unwrap() {
            Reply::KvSecret { version, .. } => version.version,
            other => panic!("{other:?}"),
        };
        let tasks: Vec<_> = (0..12u64)
            .map(|c| {
                let vault = vault.clone();
                tokio::spawn(async move {
                    vault.call(1 + c % 3, put("hot/a", &format!("r{round}-c{c}"), Some(current))).await
                })
            })
            .collect();
        let mut won = Vec::new();
        for t in tasks {
            match t.await.unwrap() {
                Ok(Reply::KvWritten { version, .. }) => won.push(version.version),
                Err(Error::CasMismatch { .. }) => {}
                other => panic!("a CAS write neither won nor was refused as a CAS mismatch: {other:?}"),
            }
        }
        assert_eq!(won, vec![current + 1], "round {round}: one winner, at the next version");
        let Reply::KvSecret { version, .. } =
            vault.call(2, Operation::KvGet { path: "hot/a".into(), version: None }).await.unwrap()
        else {
            panic!("read")
        };
        assert_eq!(version.version, current + 1, "no second version for one CAS");
    }
}

/// Scenario 7: a node cut off while the cluster moves on far enough that the leader purges the
/// log it would need catches up by snapshot, and then holds the same vault as the others: the
/// same state, the policy written meanwhile compiled, the token created meanwhile valid, the
/// keyring term added meanwhile loaded (it reads a secret written under it), and a watch open on
/// it was told to start over (`Reset`).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_node_that_catches_up_by_snapshot_holds_the_same_vault() {
    // A write is one entry (its record rides it), so 200 writes pass two snapshots of 100.
    let timing = Timing { snapshot_every: 100, keep_logs: 30, ..Timing::default() };
    let vault = Vault::start_with(timing).await;
    let leader = vault.leader().await;
    let behind = (1..=3).find(|n| *n != leader).unwrap();
    let mut events = vault.cores[&behind].watch(Some(Zeroizing::new(vault.token.clone())), vec!["hot/".into()], None);
    let before = vault.cluster.node(behind).metrics().last_applied.map_or(0, |l| l.index);
    vault.cluster.faults.isolate(behind, &[1, 2, 3]);

    let hcl = "path \"secret/data/hot/*\" { capabilities = [\"read\"] }";
    vault.call(leader, Operation::PolicyWrite { name: "reader".into(), text: hcl.into() }).await.unwrap();
    let create = TokenCreate { policies: vec!["reader".into()], ..Default::default() };
    let Reply::TokenCreated { token: reader, .. } = vault.call(leader, Operation::TokenCreate(create)).await.unwrap()
    else {
        panic!("token create")
    };
    let Reply::Term(term) = vault.call(leader, Operation::KeyringRotate).await.unwrap() else { panic!("rotate") };
    vault.call(leader, put("hot/a", "under the new term", None)).await.unwrap();
    for i in 0..200 {
        vault.call(leader, put(&format!("bulk/{i}"), "x", None)).await.unwrap();
    }
    let purged = vault.cluster.node(leader).metrics().purged.map_or(0, |l| l.index);
    assert!(purged > before, "the leader kept the log the cut-off node needs (purged {purged}, it has {before})");

    vault.cluster.faults.heal();
    let target = vault.cluster.node(leader).metrics().last_applied.unwrap().index;
    let node = vault.cluster.node(behind);
    node.wait_applied(target).await.expect("the cut-off node catches up");
    let snapshot = node.metrics().snapshot.expect("it installed a snapshot");
    assert!(snapshot.index > before, "snapshot at {snapshot:?}");
    // Entries may still commit after `target` (the last request's outcome, when nothing came to
    // carry it, goes in an entry of its own within 100 ms): compare the nodes' states at one
    // index that every node has applied and none has passed.
    let applied =
        || vault.cluster.running().map(|n| n.metrics().last_applied.map_or(0, |l| l.index)).collect::<Vec<_>>();
    let mut digests: Vec<[u8; 32]> = Vec::new();
    for _ in 0..50 {
        let at = applied().into_iter().max().unwrap();
        for n in vault.cluster.running() {
            n.wait_applied(at).await.expect("every node applies what the leader has");
        }
        digests = vault.cluster.running().map(|n| n.reader().digest().unwrap()).collect();
        if applied().iter().all(|i| *i == at) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(digests.iter().all(|d| *d == digests[0]), "the nodes' states differ");

    // The token from the meantime reads under the policy from the meantime, on that node, a
    // secret encrypted under the keyring term from the meantime; and may do no more.
    let as_reader = |op| {
        let mut req = Request::new(Some(reader.clone()), op);
        req.request_id = None;
        vault.cores[&behind].handle(req)
    };
    match as_reader(Operation::KvGet { path: "hot/a".into(), version: None }).await {
        Ok(Reply::KvSecret { data, .. }) => assert_eq!(data.0["v"], "under the new term"),
        other => panic!("the reader token on the caught-up node: {other:?}"),
    }
    let denied = as_reader(put("hot/a", "no", None)).await;
    assert!(matches!(denied, Err(Error::PermissionDenied(_))), "{denied:?}");
    let Reply::Keyring(info) = vault.call(behind, Operation::KeyringStatus).await.unwrap() else { panic!("status") };
    assert_eq!(info.active_term, term);

    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let remaining = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(remaining, events.recv()).await {
            Ok(Some(Ok(e))) if e.kind == WatchKind::Reset => break,
            Ok(Some(Ok(_))) => {}
            other => panic!("the watch on the caught-up node saw no Reset: {other:?}"),
        }
    }
}

/// A node started outside the test cluster (a new member), with its core, unsealed. Its data
/// directory lives as long as the returned guard.
async fn add_member(vault: &Vault, id: u64) -> (arca_raft::RaftNode, Core, tempfile::TempDir) {
    let dir = tempfile::TempDir::new().unwrap();
    let mut cfg = arca_raft::testing::node_config(
        id,
        arca_raft::testing::free_addr(),
        dir.path(),
        vault.cluster.ca.node_cert(id),
        vault.cluster.timing.clone(),
    );
    cfg.faults = vault.cluster.faults.clone();
    let node = arca_raft::RaftNode::start(cfg).await.expect("start the new node");
    let peer = vault.cluster.config(1).info.raft_addr.clone();
    node.join(&peer, true).await.expect("the new node joins under load");
    let core = Core::with_audit(node.clone(), AuditConfig { deadline: AUDIT_DEADLINE, ..AuditConfig::default() });
    for share in &vault.shares {
        let share = Zeroizing::new(share.clone());
        core.handle(Request::new(None, Operation::Unseal { share, reset: false })).await.expect("unseal the new node");
    }
    (node, core, dir)
}

fn acked_writes(history: &History) -> usize {
    history.0.lock().unwrap().iter().filter(|r| matches!(r.op.1.output, KvOutput::Written(_))).count()
}

/// Scenario 6: membership changes while clients read and write: a 4th node joins, a node is
/// removed, a dead node is replaced by a fresh one. Writes are acknowledged in every phase
/// (quorum kept), the whole history is linearizable (no acknowledged write lost), and the
/// nodes that joined serve linearizable reads once caught up (closing reads on each member).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn membership_changes_under_load_lose_nothing() {
    let mut vault = Vault::start().await;
    let history = Arc::new(History::default());
    let phase = Duration::from_secs(4);

    // A: a 4th node joins while nodes 1-3 serve.
    let shared = Arc::new(vault);
    let (node4, core4, _dir4) = run_load_on(&shared, &history, &[1, 2, 3], 6, phase, add_member(&shared, 4)).await;
    let after_a = acked_writes(&history);
    assert!(after_a > 0, "no write acknowledged while node 4 joined");
    vault = Arc::into_inner(shared).expect("clients are done");
    vault.cores.insert(4, core4);

    // B: node 2 is removed while nodes 1, 3 and 4 serve.
    let shared = Arc::new(vault);
    let remove = async {
        shared.cluster.node(1).remove(2).await.expect("remove node 2");
    };
    run_load_on(&shared, &history, &[1, 3, 4], 6, phase, remove).await;
    let after_b = acked_writes(&history);
    assert!(after_b > after_a, "no write acknowledged while node 2 was removed");

    // C: node 3 dies; it is removed and a fresh node 5 takes its place while 1 and 4 serve.
    let replace = async {
        shared.cluster.node(3).shutdown().await;
        shared.cluster.node(1).remove(3).await.expect("remove the dead node 3");
        add_member(&shared, 5).await
    };
    let (node5, core5, _dir5) = run_load_on(&shared, &history, &[1, 4], 6, phase, replace).await;
    assert!(acked_writes(&history) > after_b, "no write acknowledged while node 3 was replaced");
    vault = Arc::into_inner(shared).expect("clients are done");
    vault.cores.insert(5, core5);
    vault.cores.remove(&2);
    vault.cores.remove(&3);

    // Closing reads on every member, the new ones included.
    let shared = Arc::new(vault);
    run_load_on(&shared, &history, &[1, 4, 5], 3, Duration::from_secs(1), async {}).await;
    let members: Vec<u64> = node5.metrics().membership_config.membership().voter_ids().collect();
    assert_eq!(members, vec![1, 4, 5], "the voters after the changes");
    assert_linearizable(&shared, &history);
    node4.shutdown().await;
    node5.shutdown().await;
}

/// A core for a node (re)started outside [`Vault::start`], unsealed.
async fn unsealed_core(vault: &Vault, node: arca_raft::RaftNode) -> Core {
    let core = Core::with_audit(node, AuditConfig { deadline: AUDIT_DEADLINE, ..AuditConfig::default() });
    for share in &vault.shares {
        let share = Zeroizing::new(share.clone());
        core.handle(Request::new(None, Operation::Unseal { share, reset: false })).await.expect("unseal");
    }
    core
}

/// Scenario 6, stale data directories, under load throughout.
/// A: a node down while the cluster moved on far enough to purge the log it needs comes back
/// from its old directory, catches up by snapshot and serves linearizable reads.
/// B: a node removed while it was down comes back from its old directory still believing it
/// is a voter. Its peers answer no member but their own, so it disrupts nothing (it never
/// leads, writes go on), serves no read and acknowledges no write, and its request to join
/// again is refused: a removed id is never admitted again.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn nodes_back_with_stale_data_disrupt_nothing() {
    let timing = Timing { snapshot_every: 300, keep_logs: 30, ..Timing::default() };
    let mut vault = Vault::start_with(timing).await;
    let history = Arc::new(History::default());
    let leader = vault.leader().await;
    let others: Vec<u64> = (1..=3).filter(|&n| n != leader).collect();
    let (stale, removed) = (others[0], others[1]);

    // A: `stale` is down while the others take load and enough writes to purge its log.
    let before = vault.cluster.node(stale).metrics().last_applied.map_or(0, |l| l.index);
    // The stopped node's core goes with it: it holds the node's storage open.
    vault.cores.remove(&stale);
    vault.cluster.stop(stale).await;
    let shared = Arc::new(vault);
    let bulk = async {
        for i in 0..200 {
            shared.call(leader, put(&format!("bulk/{i}"), "x", None)).await.expect("bulk write");
        }
    };
    run_load_on(&shared, &history, &[leader, removed], 4, Duration::from_secs(3), bulk).await;
    let mut vault = Arc::into_inner(shared).expect("clients are done");
    let purged = vault.cluster.node(leader).metrics().purged.map_or(0, |l| l.index);
    assert!(purged > before, "the leader kept the log the stopped node needs (purged {purged}, it has {before})");
    let node = vault.cluster.restart(stale).await;
    let core = unsealed_core(&vault, node.clone()).await;
    vault.cores.insert(stale, core);
    let target = vault.cluster.node(leader).metrics().last_applied.unwrap().index;
    node.wait_applied(target).await.expect("the returning node catches up");
    assert!(node.metrics().snapshot.is_some_and(|s| s.index > before), "it caught up without a snapshot");
    let shared = Arc::new(vault);
    run_load_on(&shared, &history, &[1, 2, 3], 6, Duration::from_secs(2), async {}).await;
    let mut vault = Arc::into_inner(shared).expect("clients are done");

    // B: `removed` is removed while down, then comes back from its old directory.
    vault.cores.remove(&removed);
    vault.cluster.stop(removed).await;
    vault.cluster.node(leader).remove(removed).await.expect("remove the stopped node");
    let node = vault.cluster.restart(removed).await;
    let core = unsealed_core(&vault, node.clone()).await;
    vault.cores.insert(removed, core);
    let acked_before = acked_writes(&history);
    let phase_b = history.0.lock().unwrap().len();
    let shared = Arc::new(vault);
    let rejoin = async {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let peer = shared.cluster.config(leader).info.raft_addr.clone();
        node.join(&peer, true).await
    };
    let joined = run_load_on(&shared, &history, &[1, 2, 3], 6, Duration::from_secs(4), rejoin).await;
    let refused = joined.expect_err("a removed node was admitted again").to_string();
    assert!(refused.contains("never admitted again"), "{refused}");
    assert!(acked_writes(&history) > acked_before, "no write acknowledged while the removed node was back");
    let (asked, served) = {
        let recorded = history.0.lock().unwrap();
        let on_removed: Vec<_> = recorded[phase_b..].iter().filter(|r| r.node == removed).collect();
        (on_removed.len(), on_removed.iter().filter(|r| r.op.1.ret.is_some()).count())
    };
    assert!(asked > 0, "no client asked the removed node");
    assert_eq!(served, 0, "the removed node answered {served} requests");
    assert!(shared.cluster.running().all(|n| n.current_leader() != Some(removed)), "the removed node leads");
    let voters: Vec<u64> = shared.cluster.node(leader).metrics().membership_config.membership().voter_ids().collect();
    assert_eq!(voters, others_than(removed), "the voters after the removed node came back");

    // Closing reads on the members.
    run_load_on(&shared, &history, &others_than(removed), 3, Duration::from_secs(1), async {}).await;
    assert_linearizable(&shared, &history);
}

fn others_than(node: u64) -> Vec<u64> {
    (1..=3).filter(|&n| n != node).collect()
}
