//! What a node serves before and while it is sealed: init, unseal, seal status, health, the
//! member list and join.

use std::sync::Arc;

use arca_crypto::shamir::ShareCollector;
use arca_crypto::{Keyring, SecretKey};
use arca_raft::{Command, CommandResult, Guard, Op};
use arca_storage::Cf;
use tracing::{info, instrument};

use crate::audit::AUDIT_KEY;
use crate::codec::encrypt_json;
use crate::init::{InitRecord, INIT_KEY};
use crate::seal::Seal;
use crate::token::{self, NewToken};
use crate::{now_ms, Core, Error, HealthInfo, InitResult, Member, Result, SealStatus};

impl Core {
    pub(crate) fn seal_status(&self) -> Result<SealStatus> {
        let init = self.init_record()?;
        let seal = self.seal.lock().expect("seal lock");
        let (sealed, progress) = match &*seal {
            Seal::Unsealed { .. } => (false, 0),
            Seal::Sealed(c) => (true, c.as_ref().map_or(0, |c| c.progress().provided as u8)),
        };
        Ok(SealStatus {
            initialized: init.is_some(),
            sealed,
            threshold: init.as_ref().map_or(0, |i| i.threshold),
            shares: init.as_ref().map_or(0, |i| i.shares),
            progress,
            share_set: init.as_ref().map(|i| i.share_config().set.to_string()).unwrap_or_default(),
            node_id: self.node.id(),
        })
    }

    pub(crate) fn health(&self) -> Result<HealthInfo> {
        let m = self.node.metrics();
        let status = self.seal_status()?;
        Ok(HealthInfo {
            initialized: status.initialized,
            sealed: status.sealed,
            node_id: self.node.id(),
            leader_id: m.current_leader,
            is_leader: m.current_leader == Some(self.node.id()),
            applied_index: m.last_applied.map_or(0, |l| l.index),
        })
    }

    pub(crate) fn members(&self) -> Vec<Member> {
        let m = self.node.metrics();
        let membership = m.membership_config.membership();
        let voters: Vec<u64> = membership.voter_ids().collect();
        membership
            .nodes()
            .map(|(id, n)| Member {
                id: *id,
                raft_addr: n.raft_addr.clone(),
                api_addr: n.api_addr.clone(),
                voter: voters.contains(id),
                leader: m.current_leader == Some(*id),
            })
            .collect()
    }

    /// Creates the root key, keyring and root token, and replicates the init record. Once per
    /// cluster: the write is guarded on the init record being absent.
    #[instrument(level = "info", skip(self))]
    /// Makes a new node join the cluster of the member at `peer` (its cluster address). Like
    /// init, it needs no token: a node that is in no cluster has no tokens to check. The
    /// leader admits the node by its cluster certificate (mutual TLS), so all a caller can do
    /// is make a new node join the cluster its certificate is for; a member refuses.
    pub(crate) async fn join(&self, peer: &str, voter: bool) -> Result<()> {
        if self.node.is_member() {
            return Err(Error::InvalidArgument(
                "this node is already a member of a cluster; join is for a new node started without \
                 cluster.bootstrap (to move a node, remove it and start a new one with a new node_id)"
                    .into(),
            ));
        }
        let Ok(_one_at_a_time) = self.joining.try_lock() else {
            return Err(Error::InvalidArgument(
                "a join is already in progress on this node; wait for its result".into(),
            ));
        };
        self.node
            .join(peer, voter)
            .await
            .map_err(|e| Error::JoinFailed { peer: peer.to_string(), reason: e.to_string() })
    }

    pub(crate) async fn init(&self, shares: u8, threshold: u8) -> Result<InitResult> {
        if self.init_record()?.is_some() {
            return Err(Error::AlreadyInitialized);
        }
        let keyring = Keyring::generate().map_err(|e| Error::Internal(e.to_string()))?;
        let (record, split) = InitRecord::new_root(&keyring, shares, threshold)?;
        let (root_token, accessor) = token::generate()?;
        let token_key = token::storage_key(&root_token);
        let info = NewToken::root("init").into_info(accessor.clone(), now_ms());
        let audit_key = {
            let key = SecretKey::generate().map_err(|e| Error::Internal(e.to_string()))?;
            keyring.encrypt(AUDIT_KEY, key.expose()).map_err(|e| Error::Internal(e.to_string()))?
        };
        let ops = vec![
            Op::Put {
                cf: Cf::Sys,
                key: INIT_KEY.to_vec(),
                value: serde_json::to_vec(&record).map_err(|e| Error::Internal(e.to_string()))?,
            },
            Op::Put { cf: Cf::Tokens, key: token::accessor_key(&accessor), value: token_key.clone() },
            Op::Put { cf: Cf::Tokens, value: encrypt_json(&keyring, &token_key, &info)?, key: token_key },
            Op::Put { cf: Cf::Sys, key: AUDIT_KEY.to_vec(), value: audit_key },
        ];
        let guards = vec![Guard::unchanged(Cf::Sys, INIT_KEY, None)];
        match self.node.write(Command::Txn { guards, ops }).await?.result {
            CommandResult::Applied => {
                info!(threshold, shares, "cluster initialized");
                Ok(InitResult { shares: split.iter().map(|s| s.encode()).collect(), threshold, root_token })
            }
            _ => Err(Error::AlreadyInitialized),
        }
    }

    /// Adds one unseal share; at the threshold, reconstructs and verifies the root key.
    pub(crate) async fn unseal(&self, share: &str, reset: bool) -> Result<SealStatus> {
        let init = match self.init_record()? {
            Some(init) => init,
            None => {
                // This node may simply not have applied the init yet (it was just initialized
                // through another node): catch up once, if a leader is reachable, and look again.
                let _ = self.node.read_barrier().await;
                self.init_record()?.ok_or(Error::NotInitialized)?
            }
        };
        {
            let mut seal = self.seal.lock().expect("seal lock");
            if let Seal::Sealed(collector) = &mut *seal {
                if reset {
                    *collector = None;
                } else {
                    let c = collector.get_or_insert_with(|| ShareCollector::new(init.share_config()));
                    // The share itself is never logged, only the outcome.
                    c.add(share).map_err(Error::Share)?;
                    if c.is_complete() {
                        let recovered = c.recover(&init.sealed_keyring);
                        *collector = None;
                        let (root, keyring) = recovered.map_err(Error::Share)?;
                        // A cluster from before every term was root-sealed may still have
                        // terms in a chain of records (see `keyring`).
                        let keyring = crate::keyring::load_terms(self.node.reader(), &keyring)?.unwrap_or(keyring);
                        // Compiled before anyone can see the node unsealed, so no request is
                        // judged against the sealed node's (empty) policy set. The policy
                        // observer never holds the policy lock while taking this one.
                        crate::policy::store::recompile_policies(&self.policies, self.node.reader(), &keyring);
                        *seal = Seal::Unsealed { keyring: Arc::new(keyring), root: Arc::new(root) };
                        info!("node unsealed");
                    }
                }
            }
        }
        self.seal_status()
    }
}
