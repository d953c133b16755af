//! Policies are authority, so they sit behind the barrier: a policy record that an unsealed
//! node did not write through the API (a forged Raft command, as a peer with a cluster
//! certificate could propose, or a record copied from another policy's key) grants nothing.

mod common;

use arca_core::{Error, Operation, Reply, TokenCreate};
use arca_raft::{Command, Op};
use arca_storage::Cf;
use common::{call, data, Vault};

const EVERYTHING: &str = r#"path "*" { capabilities = ["create", "read", "update", "delete", "list", "sudo"] }"#;

async fn token_with(v: &Vault, policies: &[&str]) -> String {
    let spec = TokenCreate { policies: policies.iter().map(|p| p.to_string()).collect(), ..Default::default() };
    let Reply::TokenCreated { token, .. } = v.root(0, Operation::TokenCreate(spec)).await else { panic!("token") };
    token.to_string()
}

async fn read_db(v: &Vault, node: usize, token: &str) -> Result<Reply, Error> {
    call(&v.cores[node], Some(token), Operation::KvGet { path: "app/db".into(), version: None }).await
}

fn denied(r: Result<Reply, Error>, what: &str) {
    assert!(matches!(r, Err(Error::PermissionDenied(_))), "{what}: expected permission denied, got {r:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_policy_record_not_written_through_the_barrier_grants_nothing() {
    let v = Vault::start().await;
    v.root(0, Operation::KvPut { path: "app/db".into(), data: data(&[("password", "s3cret")]), cas: None }).await;
    // A real policy, for the control and as the source of a copied record.
    v.root(0, Operation::PolicyWrite { name: "admin".into(), text: EVERYTHING.into() }).await;
    let admin = token_with(&v, &["admin"]).await;
    assert!(read_db(&v, 1, &admin).await.is_ok(), "control: a policy written through the API grants");

    // 1. A forged command: the plaintext record the old code stored, committed through Raft
    //    without the API (what a peer that may `forward` any write could do).
    let forged = Command::Txn {
        guards: vec![],
        ops: vec![Op::Put { cf: Cf::Sys, key: b"policy/evil".to_vec(), value: EVERYTHING.as_bytes().to_vec() }],
    };
    v.cores[2].node().write(forged).await.unwrap();
    // 2. Real ciphertext moved to another key: its AAD names `policy/admin`.
    let admin_record = v.cores[0].node().reader().get(Cf::Sys, b"policy/admin").unwrap().unwrap();
    let moved = Command::Txn {
        guards: vec![],
        ops: vec![Op::Put { cf: Cf::Sys, key: b"policy/copied".to_vec(), value: admin_record }],
    };
    v.cores[2].node().write(moved).await.unwrap();
    for core in &v.cores {
        core.node().read_barrier().await.unwrap();
    }

    let evil = token_with(&v, &["evil"]).await;
    let copied = token_with(&v, &["copied"]).await;
    for node in 0..3 {
        denied(read_db(&v, node, &evil).await, &format!("forged policy on node {node}"));
        denied(read_db(&v, node, &copied).await, &format!("copied policy on node {node}"));
    }
    let write_root_ish = Operation::PolicyWrite { name: "mine".into(), text: EVERYTHING.into() };
    denied(call(&v.cores[0], Some(&evil), write_root_ish).await, "policy write with the forged policy");
    for name in ["evil", "copied"] {
        let r = v.root(0, Operation::PolicyList).await;
        let Reply::Names(names) = r else { panic!("{r:?}") };
        assert!(!names.iter().any(|n| n == name), "{name} is listed as a policy: {names:?}");
    }

    // Unsealing again compiles from storage: the forged records still grant nothing, and the
    // real one still grants.
    call(&v.cores[1], Some(&v.root), Operation::Seal).await.unwrap();
    v.unseal(&v.cores[1]).await;
    denied(read_db(&v, 1, &evil).await, "forged policy after unseal");
    denied(read_db(&v, 1, &copied).await, "copied policy after unseal");
    assert!(read_db(&v, 1, &admin).await.is_ok(), "a real policy grants after unseal");

    // Written through the API, the same name is a real policy again.
    v.root(0, Operation::PolicyWrite { name: "evil".into(), text: EVERYTHING.into() }).await;
    v.cores[1].node().read_barrier().await.unwrap();
    assert!(read_db(&v, 1, &evil).await.is_ok(), "a policy rewritten through the API grants");
    v.cluster.shutdown().await;
}
