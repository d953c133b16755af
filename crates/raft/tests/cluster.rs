//! Real 3-node clusters in one process: RocksDB on disk, gRPC over mutual TLS on loopback.

use std::path::Path;
use std::time::{Duration, Instant};

use arca_crypto::Keyring;
use arca_raft::testing::{free_addr, node_config, TestCa, TestCluster};
use arca_raft::{AuditBatch, Command, CommandResult, Guard, GuardedWrite, NodeInfo, Op, RaftNode, Timing};
use arca_storage::Cf;

fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()))
        .with_test_writer()
        .try_init();
}

fn put(keyring: &Keyring, path: &str, value: &[u8]) -> Command {
    Command::Put { path: path.into(), ciphertext: keyring.encrypt(path.as_bytes(), value).unwrap() }
}

async fn read(node: &RaftNode, keyring: &Keyring, path: &str) -> Option<Vec<u8>> {
    node.read_barrier().await.expect("read barrier");
    let ct = node.reader().get(Cf::Kv, path.as_bytes()).unwrap()?;
    Some(keyring.decrypt(path.as_bytes(), &ct).unwrap().to_vec())
}

fn follower(cluster: &TestCluster, leader: u64) -> RaftNode {
    cluster.running().find(|n| n.id() != leader).expect("a follower").clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn writes_on_leader_and_follower_are_readable_on_every_node() {
    init_tracing();
    let cluster = TestCluster::start(3, Timing::default()).await;
    let keyring = Keyring::generate().unwrap();
    let leader = cluster.wait_for_leader(Duration::from_secs(5)).await;
    let via_follower = follower(&cluster, leader);

    let r1 = cluster.node(leader).write(put(&keyring, "app/db", b"from-leader")).await.unwrap();
    assert_eq!(r1.result, CommandResult::Written { existed: false });
    let r2 = via_follower.write(put(&keyring, "app/api", b"from-follower")).await.unwrap();
    assert!(r2.index > r1.index, "the forwarded write is a later entry");
    // Read-your-writes on the follower without a barrier: write() waits for the local apply.
    assert!(via_follower.reader().get(Cf::Kv, b"app/api").unwrap().is_some());

    for node in cluster.running() {
        assert_eq!(read(node, &keyring, "app/db").await.as_deref(), Some(&b"from-leader"[..]), "node {}", node.id());
        assert_eq!(read(node, &keyring, "app/api").await.as_deref(), Some(&b"from-follower"[..]), "node {}", node.id());
    }

    let del = via_follower.write(Command::Delete { path: "app/db".into() }).await.unwrap();
    assert_eq!(del.result, CommandResult::Written { existed: true });
    for node in cluster.running() {
        assert_eq!(read(node, &keyring, "app/db").await, None, "node {}", node.id());
    }
    let digests: Vec<_> = cluster.running().map(|n| n.reader().digest().unwrap()).collect();
    assert!(digests.windows(2).all(|w| w[0] == w[1]));
    cluster.shutdown().await;
}

/// One entry carries a batch's audit records and its guarded writes; each write is judged on
/// the state the writes before it left, and a resent batch is answered, not applied again.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_audit_batch_applies_its_writes_in_order_on_their_own_guards_and_once() {
    init_tracing();
    let cluster = TestCluster::start(3, Timing::default()).await;
    let leader = cluster.wait_for_leader(Duration::from_secs(5)).await;
    let via_follower = follower(&cluster, leader);
    let put = |key: &str, value: &[u8]| Op::Put { cf: Cf::Kv, key: key.into(), value: value.to_vec() };
    let absent = |key: &str| Guard::unchanged(Cf::Kv, key, None);
    let writes = vec![
        GuardedWrite { guards: vec![absent("a")], ops: vec![put("a", b"1")] },
        // Judged after the first: `a` is no longer absent.
        GuardedWrite { guards: vec![absent("a")], ops: vec![put("b", b"lost")] },
        GuardedWrite { guards: vec![Guard::unchanged(Cf::Kv, "a", Some(b"1"))], ops: vec![put("c", b"3")] },
    ];
    let batch = Command::AuditBatch(AuditBatch {
        batch_id: "batch-1".into(),
        records: vec![b"record-1".to_vec(), b"record-2".to_vec()],
        outcomes: vec![],
        writes,
    });
    let first = via_follower.write(batch.clone()).await.unwrap();
    let expected = CommandResult::Batched { first_seq: 1, applied: vec![true, false, true] };
    assert_eq!(first.result, expected);
    // A resend (a forwarded proposal whose reply was lost) gets the same answer and changes nothing.
    let resent = cluster.node(leader).write(batch).await.unwrap();
    assert_eq!(resent.result, expected);
    for node in cluster.running() {
        node.read_barrier().await.unwrap();
        let r = node.reader();
        let got = |k: &str| r.get(Cf::Kv, k.as_bytes()).unwrap();
        assert_eq!((got("a"), got("b"), got("c")), (Some(b"1".to_vec()), None, Some(b"3".to_vec())));
        assert_eq!(arca_raft::audit_log::head(r).seq, 2, "node {}: the records were appended once", node.id());
    }
    cluster.shutdown().await;
}

/// A leader's local barrier: its term, with its commit applied; none on a follower. A write
/// decided on it applies only in an entry of that term, so a write decided under a leader that
/// has since been replaced is refused, by every node alike.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_write_decided_in_a_term_applies_only_in_an_entry_of_that_term() {
    init_tracing();
    let mut cluster = TestCluster::start(3, Timing::default()).await;
    let leader = cluster.wait_for_leader(Duration::from_secs(5)).await;
    let term = cluster.own_barrier(leader).await;
    assert!(cluster.node(leader).leads_in(term).await.unwrap());
    let f = follower(&cluster, leader);
    assert_eq!(f.local_barrier().await.unwrap(), None, "a follower must ask the leader");
    assert!(!f.leads_in(term).await.unwrap());

    let put = |key: &str| Op::Put { cf: Cf::Kv, key: key.into(), value: b"v".to_vec() };
    let batch = |id: &str, terms: Vec<Option<u64>>| Command::AuditBatchInTerms {
        batch: AuditBatch {
            batch_id: id.into(),
            records: vec![b"r".to_vec(); terms.len()],
            outcomes: vec![],
            writes: (0..terms.len())
                .map(|i| GuardedWrite { guards: vec![], ops: vec![put(&format!("{id}-{i}"))] })
                .collect(),
        },
        terms,
    };
    // Proposed through the follower: it is the leader's entry either way.
    let first = f.write(batch("one", vec![Some(term), Some(term + 1), None])).await.unwrap();
    assert_eq!(first.result, CommandResult::Batched { first_seq: 1, applied: vec![true, false, true] });

    // Cut off from its quorum, the leader (which openraft keeps leading) stops deciding on its
    // own state: its writes take the read index, which fails over cleanly.
    let others: Vec<u64> = cluster.running().map(|n| n.id()).filter(|&id| id != leader).collect();
    cluster.faults.isolate(leader, &others);
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(cluster.node(leader).local_barrier().await.unwrap(), None, "an isolated leader decided alone");
    cluster.faults.heal();

    // A new leader: a write still carrying the old term is refused.
    cluster.stop(leader).await;
    let new = cluster.wait_for_leader(Duration::from_secs(10)).await;
    let new_term = cluster.own_barrier(new).await;
    assert!(new_term > term);
    let second = cluster.node(new).write(batch("two", vec![Some(term), Some(new_term)])).await.unwrap();
    assert_eq!(second.result, CommandResult::Batched { first_seq: 4, applied: vec![false, true] });
    for node in cluster.running() {
        node.read_barrier().await.unwrap();
        let r = node.reader();
        let got = |k: &str| r.get(Cf::Kv, k.as_bytes()).unwrap().is_some();
        let stored: Vec<bool> = ["one-0", "one-1", "one-2", "two-0", "two-1"].iter().map(|k| got(k)).collect();
        assert_eq!(stored, [true, false, true, false, true], "node {}", node.id());
    }
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn killing_the_leader_elects_a_new_one_that_accepts_writes() {
    init_tracing();
    let mut cluster = TestCluster::start(3, Timing::default()).await;
    let keyring = Keyring::generate().unwrap();
    let old = cluster.wait_for_leader(Duration::from_secs(5)).await;
    cluster.node(old).write(put(&keyring, "before", b"1")).await.unwrap();

    let killed_at = Instant::now();
    cluster.stop(old).await;
    let survivor = follower(&cluster, old);
    let new = cluster.wait_for_leader(Duration::from_secs(10)).await;
    let elected = killed_at.elapsed();
    assert_ne!(new, old);
    survivor.write(put(&keyring, "after", b"2")).await.expect("write after failover");
    let writable = killed_at.elapsed();
    println!("failover: new leader {new} elected {elected:?} after the leader died; first write committed after {writable:?}");
    assert!(elected < Duration::from_secs(5), "election took {elected:?}");

    for node in cluster.running() {
        assert_eq!(read(node, &keyring, "before").await.as_deref(), Some(&b"1"[..]));
        assert_eq!(read(node, &keyring, "after").await.as_deref(), Some(&b"2"[..]));
    }
    // The old leader comes back as a follower and catches up.
    let back = cluster.restart(old).await;
    back.wait_applied(survivor.metrics().last_applied.unwrap().index).await.unwrap();
    assert_eq!(read(&back, &keyring, "after").await.as_deref(), Some(&b"2"[..]));
    cluster.shutdown().await;
}

/// A cluster with a heartbeat of a second (elections after 2.5-3 s) and commit notices held for
/// `hold`, shorter than the heartbeat as `node.toml` requires; its leader and a follower, once
/// a first write has opened the replication streams.
async fn holding_cluster(hold: Duration, keyring: &Keyring) -> (TestCluster, RaftNode, RaftNode) {
    let timing = Timing {
        heartbeat: Duration::from_millis(1000),
        election_min: Duration::from_millis(2500),
        election_max: Duration::from_millis(3000),
        commit_hold: hold,
        ..Timing::default()
    };
    let cluster = TestCluster::start(3, timing).await;
    let leader = cluster.node(cluster.wait_for_leader(Duration::from_secs(10)).await);
    let other = follower(&cluster, leader.id());
    leader.write(put(keyring, "warm", b"w")).await.unwrap();
    (cluster, leader, other)
}

/// openraft tells a follower of each commit in a message of its own; the leader holds that
/// notice for the next message to the follower (`Timing::commit_hold`). A lone writer's
/// followers so get one AppendEntries per write instead of two, and still apply the last write
/// soon after the writes stop.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_follower_hears_each_commit_with_the_next_entry_and_the_last_one_soon_after() {
    init_tracing();
    // A hold and a heartbeat longer than the writes take, so the count is of entries and
    // notices, not of timers (a release sends every follower a heartbeat).
    let keyring = Keyring::generate().unwrap();
    let (cluster, leader, watched) = holding_cluster(Duration::from_millis(500), &keyring).await;

    const WRITES: u64 = 50;
    let before = watched.append_entries_received();
    let mut last = 0;
    for i in 0..WRITES {
        last = leader.write(put(&keyring, &format!("lone/{i}"), b"v")).await.unwrap().index;
    }
    let received = watched.append_entries_received() - before;
    // Each write's entry, and a heartbeat or a released notice now and then; without holding,
    // every write is two messages (98 for 50 measured).
    assert!(received < WRITES * 3 / 2, "a follower received {received} AppendEntries for {WRITES} writes");

    // Nothing more is written: the last commit reaches the follower once its hold is over.
    let caught_up = tokio::time::timeout(Duration::from_secs(3), watched.wait_applied(last)).await;
    assert!(matches!(caught_up, Ok(Ok(()))), "the follower did not apply the last write: {caught_up:?}");
    assert!(watched.reader().get(Cf::Kv, format!("lone/{}", WRITES - 1).as_bytes()).unwrap().is_some());
    cluster.shutdown().await;
}

/// A follower's own requests wait for a commit (a forwarded write, a read barrier), so held
/// commit notices must not hold them up: the leader holds none while it runs a forwarded
/// request and sends every held one when such a request ends. With a hold far longer than
/// a request takes, a follower that held up its requests for it would take seconds here.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_follower_request_is_not_held_up_by_held_commit_notices() {
    init_tracing();
    let keyring = Keyring::generate().unwrap();
    let (cluster, leader, via) = holding_cluster(Duration::from_millis(900), &keyring).await;

    const ROUNDS: usize = 10;
    let started = Instant::now();
    for i in 0..ROUNDS {
        // The leader's own write leaves its commit notice held...
        leader.write(put(&keyring, &format!("leader/{i}"), b"l")).await.unwrap();
        // ...and the follower's read barrier still sees that write at once,
        let seen = read(&via, &keyring, &format!("leader/{i}")).await;
        assert_eq!(seen.as_deref(), Some(&b"l"[..]), "round {i}");
        // as its own forwarded write applies there at once.
        via.write(put(&keyring, &format!("follower/{i}"), b"f")).await.unwrap();
    }
    let took = started.elapsed();
    assert!(took < Duration::from_millis(2500), "{ROUNDS} rounds took {took:?}: held up by held commit notices");
    cluster.shutdown().await;
}

/// Writes `count` entries with `concurrency` writers in flight.
async fn write_many(node: &RaftNode, keyring: &Keyring, prefix: &str, count: usize, concurrency: usize) {
    let mut tasks = Vec::new();
    for w in 0..concurrency {
        let node = node.clone();
        let cmds: Vec<Command> = (w..count)
            .step_by(concurrency)
            .map(|i| put(keyring, &format!("{prefix}/{i}"), format!("value-{i}").as_bytes()))
            .collect();
        tasks.push(tokio::spawn(async move {
            for cmd in cmds {
                node.write(cmd).await.expect("write");
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_node_behind_the_purged_log_catches_up_by_snapshot() {
    init_tracing();
    let timing = Timing { snapshot_every: 1000, keep_logs: 100, ..Timing::default() };
    let mut cluster = TestCluster::start(3, timing).await;
    let keyring = Keyring::generate().unwrap();
    let leader_id = cluster.wait_for_leader(Duration::from_secs(5)).await;
    let stopped = follower(&cluster, leader_id).id();
    cluster.node(leader_id).write(put(&keyring, "early", b"e")).await.unwrap();
    cluster.stop(stopped).await;

    let leader = cluster.node(leader_id);
    write_many(&leader, &keyring, "bulk", 10_000, 64).await;
    let purged = leader.metrics().purged.map(|l| l.index).unwrap_or(0);
    assert!(purged > 5_000, "the leader must have purged the log the stopped node needs (purged up to {purged})");

    let back = cluster.restart(stopped).await;
    let target = leader.metrics().last_applied.unwrap().index;
    back.wait_applied(target).await.expect("restarted node catches up");
    let snap = back.metrics().snapshot.expect("the restarted node installed a snapshot");
    assert!(snap.index > 5_000, "snapshot at {snap:?}");

    for node in cluster.running() {
        node.wait_applied(target).await.unwrap();
    }
    let digests: Vec<(u64, [u8; 32])> = cluster.running().map(|n| (n.id(), n.reader().digest().unwrap())).collect();
    assert!(digests.iter().all(|(_, d)| *d == digests[0].1), "state digests differ: {digests:?}");
    assert_eq!(back.reader().count(Cf::Kv).unwrap(), 10_001);
    assert_eq!(read(&back, &keyring, "bulk/9999").await.as_deref(), Some(&b"value-9999"[..]));
    cluster.shutdown().await;
}

fn count_hits(dir: &Path, needle: &[u8]) -> (usize, usize) {
    let (mut files, mut hits) = (0, 0);
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            let (f, h) = count_hits(&path, needle);
            files += f;
            hits += h;
        } else {
            files += 1;
            let bytes = std::fs::read(&path).unwrap();
            hits += bytes.windows(needle.len()).filter(|w| *w == needle).count();
        }
    }
    (files, hits)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn no_plaintext_reaches_any_file_of_any_data_dir() {
    init_tracing();
    let timing = Timing { snapshot_every: 50, keep_logs: 10, ..Timing::default() };
    let cluster = TestCluster::start(3, timing).await;
    let keyring = Keyring::generate().unwrap();
    let leader = cluster.node(cluster.wait_for_leader(Duration::from_secs(5)).await);
    let marker = format!("arca-secret-marker-{}", hex::encode(rand::random::<[u8; 16]>()));
    // The control marker is stored *without* the barrier: finding it proves the scan reads the
    // WAL, SSTs and snapshots, so zero hits for the real marker means something.
    let control = format!("arca-control-marker-{}", hex::encode(rand::random::<[u8; 16]>()));
    for i in 0..100 {
        leader.write(put(&keyring, &format!("s/{i}"), marker.as_bytes())).await.unwrap();
    }
    leader.write(Command::Put { path: "control".into(), ciphertext: control.clone().into_bytes() }).await.unwrap();
    for node in cluster.running() {
        node.read_barrier().await.unwrap();
        node.raft().trigger().snapshot().await.unwrap();
    }
    // A triggered snapshot is built in the background: wait (bounded) for every node's file.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !(1..=3).all(|id| cluster.config(id).data_dir.join("snapshots/current").exists()) {
        assert!(std::time::Instant::now() < deadline, "not every node wrote a snapshot within 10 s");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for node in cluster.running() {
        node.reader().flush().unwrap();
    }
    for id in 1..=3 {
        let dir = &cluster.config(id).data_dir;
        assert!(dir.join("snapshots/current").exists(), "node {id} has a snapshot file");
        let (files, hits) = count_hits(dir, marker.as_bytes());
        let (_, control_hits) = count_hits(dir, control.as_bytes());
        println!("node {id}: scanned {files} files: {hits} secret-marker hits, {control_hits} control hits");
        assert!(control_hits > 0, "the scan must find the unencrypted control marker on node {id}");
        assert_eq!(hits, 0, "plaintext secret found in the data dir of node {id}");
    }
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_peer_with_a_certificate_from_another_ca_can_neither_join_nor_send_raft_messages() {
    init_tracing();
    let timing = Timing { leader_timeout: Duration::from_secs(3), ..Timing::default() };
    let cluster = TestCluster::start(3, timing.clone()).await;
    let leader = cluster.node(cluster.wait_for_leader(Duration::from_secs(5)).await);
    let keyring = Keyring::generate().unwrap();
    leader.write(put(&keyring, "x", b"y")).await.unwrap();

    let rogue_ca = TestCa::new("rogue CA");
    let dir = tempfile::TempDir::new().unwrap();
    let rogue_cfg = node_config(99, free_addr(), dir.path(), rogue_ca.node_cert(99), timing);
    let rogue = RaftNode::start(rogue_cfg.clone()).await.unwrap();

    // Joining: the leader cannot replicate to it (its server certificate is untrusted), so the
    // blocking add-learner never completes and the rogue receives no data.
    let err =
        leader.add_learner(99, rogue_cfg.info.clone()).await.expect_err("joining with a foreign certificate must fail");
    assert!(err.to_string().contains("certificate from the cluster CA"), "{err}");
    assert!(err.to_string().contains("removed from the membership"), "{err}");
    let members = leader.metrics().membership_config.membership().nodes().map(|(id, _)| *id).collect::<Vec<_>>();
    assert_eq!(members, vec![1, 2, 3], "the rejected node must not stay in the membership");
    assert_eq!(rogue.metrics().last_log_index, None, "the rogue node received log entries");
    assert_eq!(rogue.reader().count(Cf::Kv).unwrap(), 0);

    // Sending: a vote request with a huge term, signed by the rogue CA, is refused during the
    // TLS handshake, so no member's term moves.
    let terms: Vec<u64> = cluster.running().map(|n| n.metrics().current_term).collect();
    for member in cluster.running() {
        let err = raw_vote(&rogue_ca.node_cert(99), 99, &cluster.config(member.id()).info, 1_000_000).await;
        assert!(err.is_err(), "member {} accepted a message from a foreign-CA peer", member.id());
    }
    // Control: the same raw request with a member's cluster certificate gets through.
    let member = cluster.running().find(|n| n.id() != leader.id()).unwrap().id();
    let ok = raw_vote(&cluster.ca.node_cert(member), member, &cluster.config(leader.id()).info, 0).await;
    assert!(ok.is_ok(), "control vote with a cluster certificate failed: {ok:?}");
    let after: Vec<u64> = cluster.running().map(|n| n.metrics().current_term).collect();
    assert_eq!(terms, after, "a rejected peer changed the term");

    rogue.shutdown().await;
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_removed_node_cannot_join_again_with_its_still_valid_certificate() {
    init_tracing();
    let timing = Timing { leader_timeout: Duration::from_secs(3), ..Timing::default() };
    let cluster = TestCluster::start(3, timing.clone()).await;
    let leader = cluster.node(cluster.wait_for_leader(Duration::from_secs(5)).await);
    let removed = cluster.running().find(|n| n.id() != leader.id()).unwrap().id();
    leader.remove(removed).await.unwrap();
    let members = || leader.metrics().membership_config.membership().nodes().map(|(id, _)| *id).collect::<Vec<_>>();
    assert!(!members().contains(&removed));

    // The removed node still runs and its certificate is still valid: it asks to join as
    // itself (the self-join flow), and an operator tries to add it back. Both are refused.
    let leader_addr = cluster.config(leader.id()).info.raft_addr.clone();
    let err = cluster.node(removed).join(&leader_addr, true).await.expect_err("a removed node joined again");
    assert!(err.to_string().contains("removed from this cluster"), "{err}");
    let info = cluster.config(removed).info.clone();
    let err = leader.add_learner(removed, info).await.expect_err("a removed id was added back");
    assert!(err.to_string().contains("never admitted again"), "{err}");
    assert!(!members().contains(&removed));

    // A replacement with a new id and its own certificate joins.
    let dir = tempfile::TempDir::new().unwrap();
    let cfg = node_config(7, free_addr(), dir.path(), cluster.ca.node_cert(7), timing);
    let fresh = RaftNode::start(cfg).await.unwrap();
    fresh.join(&leader_addr, true).await.unwrap();
    assert!(members().contains(&7));
    fresh.shutdown().await;
    cluster.shutdown().await;
}

/// Sends one raw RequestVote for `term` from candidate `from` to `target`, presenting `tls`.
async fn raw_vote(tls: &arca_raft::TlsConfig, from: u64, target: &NodeInfo, term: u64) -> Result<(), tonic::Status> {
    use arca_raft::openraft::raft::VoteRequest;
    use arca_raft::openraft::Vote;
    use arca_raft::proto::{raft_client::RaftClient, RaftMessage};
    use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity};

    let tls_config = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(&tls.ca_pem))
        .identity(Identity::from_pem(&tls.cert_pem, &tls.key_pem))
        .domain_name("localhost");
    let channel = Endpoint::from_shared(format!("https://{}", target.raft_addr))
        .unwrap()
        .tls_config(tls_config)
        .unwrap()
        .connect_timeout(Duration::from_secs(2))
        .connect()
        .await
        .map_err(|e| tonic::Status::unavailable(format!("connect: {e}")))?;
    let vote: VoteRequest<u64> = VoteRequest::new(Vote::new(term, from), None);
    let payload = bincode::serialize(&vote).unwrap();
    RaftClient::new(channel).vote(RaftMessage { payload: payload.into() }).await.map(|_| ())
}

/// A restore replaces the data families on every member at one index, and only when the
/// staged records are exactly the backup's; a member that was down during the restore ends
/// with the same state once it is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_restore_swaps_in_only_a_complete_backup_on_every_member() {
    use arca_storage::backup::RecordDigest;
    init_tracing();
    let mut cluster = TestCluster::start(3, Timing::default()).await;
    let keyring = Keyring::generate().unwrap();
    let leader = cluster.wait_for_leader(Duration::from_secs(5)).await;
    let node = cluster.node(leader);
    node.write(put(&keyring, "before", b"old")).await.unwrap();
    let absent = (1..=3).find(|id| *id != leader).unwrap();
    cluster.stop(absent).await;

    let records: Vec<(Cf, Vec<u8>, Vec<u8>)> =
        (0..40).map(|i| (Cf::Kv, format!("restored/{i:02}").into_bytes(), vec![i as u8; 64])).collect();
    let mut digest = RecordDigest::default();
    records.iter().for_each(|(cf, k, v)| digest.add(*cf, k, v));
    let sha256 = digest.finish();
    let step = |c: Command| {
        let node = node.clone();
        async move { node.write(c).await.unwrap().result }
    };
    let id = || "r1".to_string();
    assert!(matches!(step(Command::RestoreBegin { restore_id: id() }).await, CommandResult::Restored { .. }));
    // Half the records staged: the commit is refused and nothing changes.
    let half = Command::RestoreChunk { restore_id: id(), records: records[..20].to_vec() };
    assert!(matches!(step(half).await, CommandResult::Restored { records: 20 }));
    let commit =
        |n| Command::RestoreCommit { restore_id: id(), records: n, sha256, audit_record: b"restored".to_vec() };
    assert!(matches!(step(commit(40)).await, CommandResult::RestoreRefused { .. }));
    assert!(node.reader().get(Cf::Kv, b"before").unwrap().is_some(), "a refused commit replaced data");
    assert!(node.reader().get(Cf::Kv, b"restored/00").unwrap().is_none());

    // Staged in two chunks under a new restore (the refused commit emptied the staging area).
    assert!(matches!(step(Command::RestoreBegin { restore_id: id() }).await, CommandResult::Restored { .. }));
    for chunk in records.chunks(20) {
        step(Command::RestoreChunk { restore_id: id(), records: chunk.to_vec() }).await;
    }
    let stale = Command::RestoreChunk { restore_id: "other".into(), records: records[..1].to_vec() };
    assert!(matches!(step(stale).await, CommandResult::RestoreRefused { .. }));
    assert!(matches!(step(commit(40)).await, CommandResult::Restored { records: 40 }));
    assert!(node.reader().get(Cf::Kv, b"before").unwrap().is_none(), "the old data is gone");
    assert_eq!(node.reader().count(Cf::Kv).unwrap(), 40);
    assert!(node.reader().scan_prefix(Cf::Staging, b"r", 1).unwrap().is_empty(), "the staging area is emptied");
    // A commit resent after a lost reply is answered as done, and changes nothing.
    assert!(matches!(step(commit(40)).await, CommandResult::Restored { records: 40 }));
    assert_eq!(node.reader().count(Cf::Kv).unwrap(), 40);
    let head = arca_raft::audit_log::head(node.reader());
    assert_eq!(arca_raft::audit_log::read(node.reader(), head.seq, 1).unwrap()[0].1, b"restored");

    cluster.restart(absent).await;
    let want = node.reader().digest().unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while cluster.node(absent).reader().digest().unwrap() != want {
        assert!(Instant::now() < deadline, "the returning member did not reach the restored state");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    cluster.shutdown().await;
}

/// Retention drops the outcomes and batch markers whose ids (which begin with their proposer's
/// milliseconds) were made before the bound the leader gives it, with the records it trims, and
/// keeps the younger ones: before, they stayed forever, however short the retention. A batch
/// marker goes only with its records, whatever its id says (a clock running behind).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn retention_drops_the_outcomes_and_batch_markers_made_before_its_bound() {
    use arca_raft::audit_log;
    init_tracing();
    let cluster = TestCluster::start(3, Timing::default()).await;
    let leader = cluster.wait_for_leader(Duration::from_secs(5)).await;
    let node = cluster.node(leader);
    let id = |ms: i64, tail: &str| format!("{ms:012x}{tail}");
    let audit = |ms: i64, record: &str| Command::Audit {
        batch_id: id(ms, "b0"),
        records: vec![record.as_bytes().to_vec()],
        outcomes: vec![(id(ms, "a0"), b"ok".to_vec())],
    };
    let (old, young) = (1_700_000_000_000_i64, 1_700_000_900_000_i64);
    for (ms, record) in [(old, "one"), (old + 1, "two"), (young, "three"), (old + 2, "four")] {
        node.write(audit(ms, record)).await.unwrap();
    }
    let trim = Command::AuditTrimAll { through: 2, decided_ms: young, ids_before_ms: young - 600_000 };
    assert_eq!(node.write(trim).await.unwrap().result, CommandResult::Trimmed { removed: 2 });

    for n in cluster.running() {
        n.read_barrier().await.unwrap();
        let r = n.reader();
        let count = |prefix: &[u8]| r.scan_from(Cf::Audit, prefix, prefix, 100).unwrap().len();
        assert_eq!(count(b"o/"), 1, "node {}: only the young outcome is left", n.id());
        let markers = r.scan_from(Cf::Audit, b"b/", b"b/", 100).unwrap();
        let kept: Vec<String> = markers.iter().map(|(k, _)| String::from_utf8_lossy(&k[2..]).into_owned()).collect();
        assert_eq!(kept, vec![id(old + 2, "b0"), id(young, "b0")], "node {}: markers of kept records stay", n.id());
        assert_eq!(audit_log::outcome(r, &id(young, "a0")).unwrap().as_deref(), Some(&b"ok"[..]));
        assert_eq!(audit_log::outcome(r, &id(old, "a0")).unwrap(), None);
        let verified = audit_log::verify(r, None).unwrap();
        assert_eq!((verified.first_bad, verified.checked), (None, 2), "node {}", n.id());
    }
    // The young batch's marker still makes a resend apply once.
    let resent = node.write(audit(young, "three")).await.unwrap();
    assert_eq!(resent.result, CommandResult::Audited { first_seq: 3 });
    let digests: Vec<_> = cluster.running().map(|n| n.reader().digest().unwrap()).collect();
    assert!(digests.windows(2).all(|w| w[0] == w[1]), "every node dropped the same keys");
    cluster.shutdown().await;
}
