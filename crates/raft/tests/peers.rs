//! The node-to-node port obeys only cluster members (DESIGN.md invariant 8), shown by attacks
//! through the real port of a real 3-node cluster, with real certificates.

use std::time::Duration;

use arca_raft::openraft::raft::{AppendEntriesRequest, VoteRequest};
use arca_raft::openraft::{LogId, Vote};
use arca_raft::proto::{raft_client::RaftClient, RaftMessage};
use arca_raft::testing::{TestCa, TestCluster};
use arca_raft::{Command, NodeInfo, Op, Timing, TlsConfig, TypeConfig, MAX_MESSAGE};
use arca_storage::Cf;
use serde::Serialize;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};
use tonic::Code;

fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()))
        .with_test_writer()
        .try_init();
}

/// The wire shape of the `forward` request (crate-private in arca-raft): what an attacker
/// would encode. The control calls below show the service decodes it.
#[derive(Serialize)]
#[allow(dead_code)]
enum LeaderRequest {
    Write(Command),
    ReadIndex,
    AddLearner { id: u64, node: NodeInfo, wait: Duration },
    Promote { id: u64 },
    Remove { id: u64 },
}

fn msg<T: Serialize>(v: &T) -> RaftMessage {
    RaftMessage { payload: bincode::serialize(v).unwrap().into() }
}

/// A client of `target`'s node port presenting `tls` (and trusting `tls.ca_pem` for the server).
async fn client(tls: &TlsConfig, target: &NodeInfo) -> Result<RaftClient<Channel>, tonic::Status> {
    let config = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(&tls.ca_pem))
        .identity(Identity::from_pem(&tls.cert_pem, &tls.key_pem))
        .domain_name("localhost");
    let channel = Endpoint::from_shared(format!("https://{}", target.raft_addr))
        .unwrap()
        .tls_config(config)
        .unwrap()
        .connect_timeout(Duration::from_secs(2))
        .timeout(Duration::from_secs(5))
        .connect()
        .await
        .map_err(|e| tonic::Status::unavailable(format!("connect: {e}")))?;
    Ok(RaftClient::new(channel).max_encoding_message_size(usize::MAX))
}

#[derive(Clone, Copy, Debug)]
enum Rpc {
    Vote,
    Append,
    Forward,
}

async fn send(tls: &TlsConfig, target: &NodeInfo, rpc: Rpc, m: RaftMessage) -> Result<RaftMessage, tonic::Status> {
    let mut c = client(tls, target).await?;
    let reply = match rpc {
        Rpc::Vote => c.vote(m).await,
        Rpc::Append => c.append_entries(m).await,
        Rpc::Forward => c.forward(m).await,
    };
    reply.map(|r| r.into_inner())
}

fn vote_from(node: u64, term: u64) -> RaftMessage {
    msg(&VoteRequest::<u64>::new(Vote::new(term, node), None))
}

/// An append-entries "from leader `leader`" at `term`, carrying no entries: enough, if obeyed, to
/// move every follower's term and make them follow the sender.
fn append_from(leader: u64, term: u64) -> RaftMessage {
    msg(&AppendEntriesRequest::<TypeConfig> {
        vote: Vote::new_committed(term, leader),
        prev_log_id: None,
        leader_commit: None,
        entries: vec![],
    })
}

fn policy_write() -> LeaderRequest {
    LeaderRequest::Write(Command::Txn {
        guards: vec![],
        ops: vec![Op::Put {
            cf: Cf::Sys,
            key: b"policy/owned".to_vec(),
            value: br#"path "*" { capabilities = ["read", "update", "sudo"] }"#.to_vec(),
        }],
    })
}

/// What an attack must not change: each running node's term, log and membership.
fn state(cluster: &TestCluster) -> Vec<(u64, u64, Option<u64>, Vec<u64>)> {
    cluster
        .running()
        .map(|n| {
            let m = n.metrics();
            let members = m.membership_config.membership().nodes().map(|(id, _)| *id).collect();
            (n.id(), m.current_term, m.last_log_index, members)
        })
        .collect()
}

/// A quiet cluster: every node has applied everything committed, so a baseline is stable.
async fn settle(cluster: &TestCluster) {
    for n in cluster.running() {
        n.read_barrier().await.unwrap();
    }
}

fn assert_no_policy(cluster: &TestCluster) {
    for n in cluster.running() {
        assert_eq!(n.reader().get(Cf::Sys, b"policy/owned").unwrap(), None, "node {} holds the policy", n.id());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn certificates_from_the_client_ca_are_refused_on_the_node_port() {
    init_tracing();
    let cluster = TestCluster::start(3, Timing::default()).await;
    let leader = cluster.wait_for_leader(Duration::from_secs(5)).await;
    settle(&cluster).await;
    let before = state(&cluster);

    // The client-facing CA, even issuing a certificate that names a member's node id.
    let client_ca = TestCa::new("client CA");
    let mut stolen_name = client_ca.node_cert(leader);
    // Trust the cluster's server certificate, so only the server's check of ours is tested.
    stolen_name.ca_pem = cluster.ca.node_cert(1).ca_pem;
    let plain_client = TlsConfig { ca_pem: stolen_name.ca_pem.clone(), ..client_ca.node_tls("some-client") };
    for tls in [&stolen_name, &plain_client] {
        for id in 1..=3 {
            let target = &cluster.config(id).info;
            for (rpc, m) in [
                (Rpc::Vote, vote_from(leader, 1_000)),
                (Rpc::Append, append_from(leader, 1_000)),
                (Rpc::Forward, msg(&policy_write())),
                (Rpc::Forward, msg(&LeaderRequest::Promote { id: 99 })),
            ] {
                let r = send(tls, target, rpc, m).await;
                let err = r.expect_err(&format!("node {id} accepted {rpc:?} from a client-CA certificate"));
                assert!(
                    matches!(err.code(), Code::Unavailable | Code::Unknown | Code::Internal | Code::Cancelled),
                    "{rpc:?} to node {id}: expected a TLS failure, got {err:?}"
                );
            }
        }
    }
    assert_no_policy(&cluster);
    assert_eq!(state(&cluster), before, "a client certificate changed the cluster");
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_cluster_certificate_naming_a_non_member_is_obeyed_in_nothing() {
    init_tracing();
    let cluster = TestCluster::start(3, Timing::default()).await;
    let leader = cluster.wait_for_leader(Duration::from_secs(5)).await;
    let follower = (1..=3).find(|&i| i != leader).unwrap();
    settle(&cluster).await;
    let before = state(&cluster);

    // Issued by the real cluster CA, for node 99, which never joined.
    let outsider = cluster.ca.node_cert(99);
    let refused = |r: Result<RaftMessage, tonic::Status>, what: &str| {
        let err = r.expect_err(&format!("{what} was obeyed"));
        assert_eq!(err.code(), Code::PermissionDenied, "{what}: {err:?}");
    };
    for id in [leader, follower] {
        let target = &cluster.config(id).info;
        refused(send(&outsider, target, Rpc::Forward, msg(&policy_write())).await, "forward of a policy write");
        refused(send(&outsider, target, Rpc::Forward, msg(&LeaderRequest::Promote { id: 99 })).await, "add voter");
        refused(send(&outsider, target, Rpc::Forward, msg(&LeaderRequest::Remove { id: follower })).await, "remove");
        let learner = LeaderRequest::AddLearner { id: 7, node: NodeInfo::default(), wait: Duration::from_secs(1) };
        refused(send(&outsider, target, Rpc::Forward, msg(&learner)).await, "adding another node");
        refused(send(&outsider, target, Rpc::Forward, msg(&LeaderRequest::ReadIndex)).await, "read index");
        refused(send(&outsider, target, Rpc::Vote, vote_from(99, 1_000)).await, "vote from 99");
        refused(send(&outsider, target, Rpc::Append, append_from(99, 1_000)).await, "append from 99");
        // Claiming to be a member does not help: the certificate names 99.
        refused(send(&outsider, target, Rpc::Append, append_from(leader, 1_000)).await, "append claiming the leader");
        refused(send(&outsider, target, Rpc::Vote, vote_from(follower, 1_000)).await, "vote claiming a member");
    }
    // A member cannot speak for another member either.
    let other = (1..=3).find(|&i| i != leader && i != follower).unwrap();
    let member = cluster.ca.node_cert(other);
    refused(
        send(&member, &cluster.config(follower).info, Rpc::Append, append_from(leader, 1_000)).await,
        "a member impersonating the leader",
    );
    assert_no_policy(&cluster);
    assert_eq!(state(&cluster), before, "a refused peer changed the cluster");

    // Controls: the same messages from a member's certificate get past the identity check (the
    // stale vote is then simply not granted), so the refusals above were about identity.
    let target = &cluster.config(leader).info;
    send(&member, target, Rpc::Vote, vote_from(other, 0)).await.expect("a member's vote is heard");
    send(&member, target, Rpc::Forward, msg(&LeaderRequest::ReadIndex)).await.expect("a member may forward");
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn oversized_messages_are_refused_before_they_are_read() {
    init_tracing();
    let cluster = TestCluster::start(3, Timing::default()).await;
    let leader = cluster.wait_for_leader(Duration::from_secs(5)).await;
    let member_id = (1..=3).find(|&i| i != leader).unwrap();
    let member = cluster.ca.node_cert(member_id);
    let target = &cluster.config(leader).info;

    // A valid (stale) vote padded past the limit, from a member: refused from the gRPC length
    // prefix, before the body is buffered or decoded.
    let mut big = bincode::serialize(&VoteRequest::<u64>::new(Vote::new(0, member_id), None)).unwrap();
    big.resize(MAX_MESSAGE + 1024, 0);
    let err = send(&member, target, Rpc::Vote, RaftMessage { payload: big.into() })
        .await
        .expect_err("an oversized message was accepted");
    assert_eq!(err.code(), Code::OutOfRange, "{err:?}");

    // A small message declaring a vector of 2^40 entries: refused by the bounded decoder.
    let vote = Vote::new_committed(0, leader);
    // Fields in order: vote, prev_log_id, then the entries' length.
    let mut huge = bincode::serialize(&(vote, Option::<LogId<u64>>::None)).unwrap();
    huge.extend_from_slice(&(1u64 << 40).to_le_bytes());
    let err = send(&member, target, Rpc::Append, RaftMessage { payload: huge.into() })
        .await
        .expect_err("a message declaring 2^40 entries was accepted");
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");

    // The node still serves.
    send(&member, target, Rpc::Vote, vote_from(member_id, 0)).await.expect("the node still answers");
    cluster.node(member_id).read_barrier().await.expect("the cluster still works");
    cluster.shutdown().await;
}
