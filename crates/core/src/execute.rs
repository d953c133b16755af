//! The handlers: each operation, once the pipeline has routed it by its class. Token-bearing
//! operations reach `execute` only authenticated and authorized, after their record committed
//! (a KV write's record instead rides the write's own entry: `Core::propose_guarded`; a pure
//! read on a leader has its answer withheld until its record commits: `Recording::After`).

use std::sync::Arc;

use arca_crypto::Keyring;
use tracing::warn;

use crate::audit::AuditContext;
use crate::kv::engine::{not_found, VersionChange};
use crate::request::TokenRef;
use crate::token::Caller;
use crate::{validate_path, validate_prefix, Core, Error, Operation, Reply, Result};

impl Core {
    /// The operations a sealed node, or one in no cluster, serves: no token, no record.
    pub(crate) async fn execute_unaudited(&self, op: Operation) -> Result<Reply> {
        match op {
            Operation::SealStatus => self.seal_status().map(Reply::SealStatus),
            Operation::Health => self.health().map(Reply::Health),
            Operation::Unseal { share, reset } => self.unseal(&share, reset).await.map(Reply::SealStatus),
            Operation::Init { shares, threshold } => self.init(shares, threshold).await.map(Reply::Init),
            Operation::Join { peer, non_voter } => self.join(&peer, !non_voter).await.map(|()| Reply::Done),
            other => Err(misrouted(&other)),
        }
    }

    /// The operations whose request carries its own proof (a login's credentials, a
    /// ceremony's shares and nonce); audited like every other.
    pub(crate) async fn execute_with_credentials(
        &self,
        keyring: &Keyring,
        op: Operation,
        remote: Option<std::net::SocketAddr>,
        client_certs: &[Vec<u8>],
        ctx: &mut AuditContext,
    ) -> Result<Reply> {
        match op {
            Operation::Login(creds) => {
                let (token, info) = self.login(keyring, creds, remote, client_certs).await?;
                ctx.caller(&info);
                Ok(Reply::TokenCreated { token, info })
            }
            Operation::GenerateRoot(step) => self.generate_root(keyring, step).await,
            Operation::Rekey(step) => self.rekey(step).await,
            other => Err(misrouted(&other)),
        }
    }

    /// The token-bearing operations, once the caller is authenticated and authorized.
    pub(crate) async fn execute(
        &self,
        keyring: &Arc<Keyring>,
        caller: &Caller,
        op: Operation,
        request_id: Option<String>,
    ) -> Result<Reply> {
        match op {
            Operation::SnapshotSave => self.snapshot_save(keyring.clone()),
            Operation::SnapshotRestore { upload, force } => {
                let id = request_id.unwrap_or_default();
                self.snapshot_restore(keyring, caller, upload, force, &id).await
            }
            Operation::Seal => {
                self.sealer().seal();
                warn!("node sealed by request");
                Ok(Reply::Done)
            }
            Operation::Leader => Ok(Reply::Leader { leader: self.members().into_iter().find(|m| m.leader) }),
            Operation::Members => Ok(Reply::Members(self.members())),
            Operation::AutopilotState => Ok(Reply::Autopilot(self.node.autopilot_state(self.autopilot.dead_after))),
            Operation::Mounts { path: None, table } => Ok(Reply::Mounts(crate::request::mounts(table))),
            Operation::Mounts { path: Some(p), .. } => crate::request::mount_serving(&p)
                .map(|m| Reply::Mounts(vec![m]))
                .ok_or_else(|| Error::NotFound(format!("no secrets engine is mounted at {p:?}"))),
            Operation::RemovePeer { id } => {
                self.node.remove(id).await?;
                Ok(Reply::Done)
            }
            Operation::KvPut { path, data, cas } => {
                let caps = self.capabilities(&caller.info.policies, &format!("secret/data/{path}"));
                let (version, custom_metadata) = self.kv_put(keyring, &path, &data, cas, caps).await?;
                Ok(Reply::KvWritten { version, custom_metadata })
            }
            Operation::KvPatch { path, set, remove, cas } => {
                let (version, custom_metadata) = self.kv_patch(keyring, &path, &set, &remove, cas).await?;
                Ok(Reply::KvWritten { version, custom_metadata })
            }
            Operation::KvGet { path, version } => self.kv_get(keyring, &path, version),
            Operation::KvGetStage { path, stage } => {
                validate_path(&path)?;
                let (meta, _) = self.read_meta(keyring, &path)?.ok_or_else(|| not_found(&path))?;
                let version = meta
                    .stage_version(stage)
                    .ok_or_else(|| Error::NotFound(format!("no version of {path} is labelled {stage:?}")))?;
                self.kv_get(keyring, &path, Some(version))
            }
            Operation::KvList { prefix } => self.kv_list(&prefix).map(Reply::KvKeys),
            Operation::Watch { prefix } => {
                validate_prefix(&prefix)?;
                Ok(Reply::Done)
            }
            Operation::KvDelete { path, versions } => {
                self.kv_versions(keyring, &path, &versions, VersionChange::Delete).await.map(Reply::KvMetadata)
            }
            Operation::KvUndelete { path, versions } => {
                self.kv_versions(keyring, &path, &versions, VersionChange::Undelete).await.map(Reply::KvMetadata)
            }
            Operation::KvDestroy { path, versions } => {
                self.kv_versions(keyring, &path, &versions, VersionChange::Destroy).await.map(Reply::KvMetadata)
            }
            Operation::KvMetadata { path } => {
                validate_path(&path)?;
                self.read_meta(keyring, &path)?.map(|(m, _)| Reply::KvMetadata(m)).ok_or_else(|| not_found(&path))
            }
            Operation::KvSetMetadata { path, settings } => {
                self.kv_set_metadata(keyring, &path, &settings).await.map(Reply::KvMetadata)
            }
            Operation::KvDeleteMetadata { path } => self.kv_delete_all(keyring, &path).await.map(|()| Reply::Done),
            Operation::TokenCreate(spec) => {
                let (token, info) = self.create_token(keyring, caller, spec).await?;
                Ok(Reply::TokenCreated { token, info })
            }
            // The caller as authenticated: on a token's last use the record is already gone.
            Operation::TokenLookup(TokenRef::SelfToken) => Ok(Reply::Token(caller.info.clone())),
            Operation::TokenLookup(target) => Ok(Reply::Token(self.resolve(keyring, caller, &target)?.2)),
            Operation::TokenRenew { target, increment } => {
                let increment = increment.map(|d| crate::duration::millis(d, "increment")).transpose()?;
                self.renew(keyring, caller, &target, increment).await.map(Reply::Token)
            }
            Operation::TokenRevoke(target) => {
                let (_, _, info) = self.resolve(keyring, caller, &target)?;
                self.revoke(keyring, vec![info.accessor]).await?;
                Ok(Reply::Done)
            }
            Operation::TokenRevokeOrphan(target) => {
                let (key, raw, info) = self.resolve(keyring, caller, &target)?;
                self.revoke_orphan(keyring, key, raw, info).await.map(|_| Reply::Done)
            }
            Operation::TokenListAccessors => self.list_accessors().map(Reply::Accessors),
            Operation::Capabilities { target, paths } => {
                let policies = match target {
                    TokenRef::SelfToken => caller.info.policies.clone(),
                    other => self.resolve(keyring, caller, &other)?.2.policies,
                };
                let caps = paths.into_iter().map(|p| (p.clone(), self.capabilities(&policies, &p).names())).collect();
                Ok(Reply::Capabilities(caps))
            }
            Operation::PolicyWrite { name, text } => self.write_policy(&name, &text).await.map(|_| Reply::Done),
            Operation::PolicyRead { name } => Ok(Reply::Policy { text: self.read_policy(&name)?, name }),
            Operation::PolicyList => Ok(Reply::Names(self.list_policies())),
            Operation::PolicyDelete { name } => self.delete_policy(&name).await.map(|_| Reply::Done),
            Operation::RoleWrite(role) => self.write_role(keyring, role).await.map(|_| Reply::Done),
            Operation::RoleRead { method, name } => self
                .read_role(keyring, method, &name)?
                .map(Reply::Role)
                .ok_or_else(|| Error::NotFound(format!("no {} role named {name:?}", method.name()))),
            Operation::RoleList { method } => self.list_roles(method).map(Reply::Names),
            Operation::RoleDelete { method, name } => {
                self.delete_role(keyring, method, &name).await.map(|_| Reply::Done)
            }
            Operation::AppRoleRoleId { name } => self.role_id(keyring, &name).map(Reply::RoleId),
            Operation::AppRoleSecretId { name } => self.new_secret_id(keyring, &name).await,
            Operation::JwtConfigWrite(config) => self.write_jwt_config(keyring, &config).await.map(|_| Reply::Done),
            Operation::JwtConfigRead => self
                .jwt_config(keyring)?
                .map(Reply::JwtConfig)
                .ok_or_else(|| Error::NotFound("JWT auth is not configured".into())),
            Operation::AuditList(filter) => {
                // Decrypting thousands of records is CPU work: off the async workers, so Raft
                // heartbeats on this node are not held up.
                let (core, keyring) = (self.clone(), self.keyring()?);
                tokio::task::spawn_blocking(move || core.audit_list(&keyring, &filter))
                    .await
                    .map_err(|e| Error::Internal(e.to_string()))?
                    .map(Reply::AuditRecords)
            }
            Operation::AuditVerify { upto } => Ok(Reply::AuditVerification {
                node: self.node.id(),
                verification: arca_raft::audit_log::verify(self.node.reader(), upto)?,
            }),
            Operation::AuditUnusedGrants { since_ms } => {
                let (core, keyring) = (self.clone(), self.keyring()?);
                tokio::task::spawn_blocking(move || core.unused_grants(&keyring, since_ms))
                    .await
                    .map_err(|e| Error::Internal(e.to_string()))?
                    .map(Reply::Grants)
            }
            Operation::RotationSet(config) => {
                self.rotation_set(keyring, config, &caller.info.accessor).await.map(|_| Reply::Done)
            }
            Operation::RotationDisable { path } => self.rotation_disable(keyring, &path).await.map(|_| Reply::Done),
            Operation::RotationNow { path } => self.rotation_now(keyring, &path).await.map(|_| Reply::Done),
            Operation::RotationStatus { path } => {
                self.rotation_statuses(keyring, path.as_deref()).map(Reply::Rotations)
            }
            Operation::RotationFunctionRegister { name, sha256 } => {
                self.register_function(&name, &sha256).await.map(|_| Reply::Done)
            }
            Operation::RotationFunctionList => self.list_functions().map(Reply::Functions),
            Operation::KeyringRotate => self.keyring_rotate().await.map(Reply::Term),
            Operation::Metrics => Ok(Reply::Metrics(self.render_metrics())),
            Operation::KeyringStatus => {
                let (core, keyring) = (self.clone(), self.keyring()?);
                tokio::task::spawn_blocking(move || core.keyring_info(&keyring))
                    .await
                    .map_err(|e| Error::Internal(e.to_string()))?
                    .map(Reply::Keyring)
            }
            Operation::AuditHash { value } => Ok(Reply::Hash(self.audit_hasher(keyring).await?.hash(value.as_bytes()))),
            other @ (Operation::SealStatus
            | Operation::Health
            | Operation::Unseal { .. }
            | Operation::Init { .. }
            | Operation::Join { .. }
            | Operation::Login(_)
            | Operation::Rekey { .. }
            | Operation::GenerateRoot { .. }) => Err(misrouted(&other)),
        }
    }
}

/// An operation that reached a handler its class does not route to. `dispatch` routes by the
/// table, so this is a bug; it fails closed instead of panicking a worker.
fn misrouted(op: &Operation) -> Error {
    tracing::error!(op = op.name(), "an operation reached a handler its class does not route to");
    Error::Internal(format!("{} was routed to the wrong handler", op.name()))
}
