//! The transport-agnostic request and reply types.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use zeroize::{Zeroize, Zeroizing};

use crate::auth::{Credentials, Method, RoleConfig};
use crate::policy::Capability;
use crate::{SecretMetadata, TokenInfo, VersionMetadata};

/// A secret's key/value pairs. Zeroized when dropped; `Debug` shows only the key count.
#[derive(Default, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(transparent)]
pub struct SecretData(pub BTreeMap<String, String>);

impl Drop for SecretData {
    fn drop(&mut self) {
        for (mut k, mut v) in std::mem::take(&mut self.0) {
            k.zeroize();
            v.zeroize();
        }
    }
}

impl std::fmt::Debug for SecretData {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SecretData({} keys, values redacted)", self.0.len())
    }
}

/// One client request. `Debug` names the operation and the caller's address, never the token
/// or the certificates.
pub struct Request {
    /// The caller's token, if it sent one.
    pub token: Option<Zeroizing<String>>,
    /// The caller's address, for logs, audit and CIDR bindings.
    pub remote: Option<SocketAddr>,
    /// The certificate chain the client presented on the TLS connection (DER, end entity
    /// first). Only the handshake signature was checked; the TLS-certificate login method
    /// verifies the chain against a role's CA.
    pub client_certs: Vec<Vec<u8>>,
    /// The id the front end already gave this request (and will return to the client), from
    /// [`crate::audit::request_id`]; `None`: the core makes one.
    pub request_id: Option<String>,
    pub op: Operation,
}

impl std::fmt::Debug for Request {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Request")
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("remote", &self.remote)
            .field("client_certs", &self.client_certs.len())
            .field("request_id", &self.request_id)
            .field("op", &self.op)
            .finish()
    }
}

impl Request {
    pub fn new(token: Option<Zeroizing<String>>, op: Operation) -> Request {
        Request { token, remote: None, client_certs: Vec::new(), request_id: None, op }
    }
}

/// How to create a token.
#[derive(Debug, Default, Clone)]
pub struct TokenCreate {
    /// Empty: the caller's own policies.
    pub policies: Vec<String>,
    pub ttl: Option<Duration>,
    pub max_ttl: Option<Duration>,
    pub display_name: String,
    pub meta: BTreeMap<String, String>,
    /// No parent: not revoked with the caller.
    pub orphan: bool,
    pub no_default_policy: bool,
    pub renewable: bool,
    /// 0: unlimited.
    pub num_uses: u32,
}

/// Which token a token operation is about.
#[derive(Clone)]
pub enum TokenRef {
    /// The caller's own.
    SelfToken,
    Token(Zeroizing<String>),
    Accessor(String),
}

impl std::fmt::Debug for TokenRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TokenRef::SelfToken => f.write_str("self"),
            TokenRef::Token(_) => f.write_str("<token>"),
            TokenRef::Accessor(a) => write!(f, "accessor {a}"),
        }
    }
}

/// What a request asks for.
pub enum Operation {
    // System: no token needed for these four, and they work while sealed.
    SealStatus,
    Health,
    Unseal {
        share: Zeroizing<String>,
        reset: bool,
    },
    Init {
        shares: u8,
        threshold: u8,
    },
    // System, token required.
    Seal,
    Leader,
    Members,
    /// The secrets engines mounted (one: KV v2 at `secret/`), or the one serving `path`; or
    /// the auth methods, or the audit devices (`table`).
    Mounts {
        path: Option<String>,
        table: MountTable,
    },
    Join {
        peer: String,
        /// Join as a learner: replicate and serve reads, without a vote.
        non_voter: bool,
    },
    RemovePeer {
        id: u64,
    },
    // KV v2.
    KvPut {
        path: String,
        data: SecretData,
        cas: Option<u64>,
    },
    /// A merge patch of the current version (Vault's `PATCH secret/data/<path>`): `set` adds or
    /// replaces fields, `remove` drops them; one new version, checked and written in one step.
    KvPatch {
        path: String,
        set: SecretData,
        remove: Vec<String>,
        cas: Option<u64>,
    },
    KvGet {
        path: String,
        version: Option<u64>,
    },
    /// Reads the version carrying a stage label.
    KvGetStage {
        path: String,
        stage: crate::kv::Stage,
    },
    KvList {
        prefix: String,
    },
    /// Opens a watch of the secrets under `prefix` (needs `read` there): the stream itself is
    /// [`crate::Core::watch`].
    Watch {
        prefix: String,
    },
    KvDelete {
        path: String,
        versions: Vec<u64>,
    },
    KvUndelete {
        path: String,
        versions: Vec<u64>,
    },
    KvDestroy {
        path: String,
        versions: Vec<u64>,
    },
    KvMetadata {
        path: String,
    },
    /// Changes a secret's settings (`max_versions`, `cas_required`, custom metadata); creates
    /// its metadata if it has none yet.
    KvSetMetadata {
        path: String,
        settings: crate::kv::MetadataSettings,
    },
    /// Removes a secret for good: every version and its metadata.
    KvDeleteMetadata {
        path: String,
    },
    // Tokens.
    TokenCreate(TokenCreate),
    TokenLookup(TokenRef),
    /// Renews by `increment` (or the token's TTL), never past its max TTL.
    TokenRenew {
        target: TokenRef,
        increment: Option<Duration>,
    },
    /// Revokes the token and every descendant.
    TokenRevoke(TokenRef),
    /// Revokes the token alone; its children become orphans (Vault's `revoke-orphan`, sudo).
    TokenRevokeOrphan(TokenRef),
    TokenListAccessors,
    /// This node's metrics, Prometheus text (Vault's `sys/metrics`).
    Metrics,
    /// Every member's health as the leader sees it (Vault's `autopilot/state`).
    AutopilotState,
    /// A backup of the whole vault, streamed (Vault's `GET sys/storage/raft/snapshot`).
    SnapshotSave,
    /// Replaces the whole vault with a backup (Vault's `POST sys/storage/raft/snapshot`, or
    /// `snapshot-force` to restore another cluster's backup).
    SnapshotRestore {
        upload: crate::backup::Upload,
        force: bool,
    },
    /// What the token (or the caller) may do on each path.
    Capabilities {
        target: TokenRef,
        paths: Vec<String>,
    },
    // Policies.
    PolicyWrite {
        name: String,
        text: String,
    },
    PolicyRead {
        name: String,
    },
    PolicyList,
    PolicyDelete {
        name: String,
    },
    // Auth methods: roles, configuration, logins.
    RoleWrite(RoleConfig),
    RoleRead {
        method: Method,
        name: String,
    },
    RoleList {
        method: Method,
    },
    RoleDelete {
        method: Method,
        name: String,
    },
    AppRoleRoleId {
        name: String,
    },
    AppRoleSecretId {
        name: String,
    },
    JwtConfigWrite(crate::auth::JwtConfig),
    JwtConfigRead,
    /// Unauthenticated: the credentials are the authentication.
    Login(Credentials),
    /// Unauthenticated: a threshold of unseal shares, each with the ceremony's nonce, is the
    /// authorization; the token leaves only under the starter's one-time pad.
    GenerateRoot(crate::ceremony::CeremonyStep<crate::ceremony::GenerateRootParams>),
    // The audit trail.
    AuditList(crate::audit::AuditFilter),
    /// Recomputes this node's audit chain (through `upto`, if given).
    AuditVerify {
        upto: Option<u64>,
    },
    /// The audit HMAC of a value, to search the trail for it.
    AuditHash {
        value: Zeroizing<String>,
    },
    /// Policy rules no request used since `since_ms`, and who holds them.
    AuditUnusedGrants {
        since_ms: i64,
    },
    // Rotation.
    /// Sets (or replaces) the rotation of a secret.
    RotationSet(crate::rotation::RotationConfig),
    /// Disables a secret's rotation (its configuration and history stay).
    RotationDisable {
        path: String,
    },
    /// Asks the leader to rotate now, whatever the schedule.
    RotationNow {
        path: String,
    },
    /// The rotation status of one secret, or of every secret with a rotation (`None`).
    RotationStatus {
        path: Option<String>,
    },
    /// Registers an executable of the nodes' `rotation.functions_dir` by name and SHA-256.
    RotationFunctionRegister {
        name: String,
        sha256: String,
    },
    RotationFunctionList,
    // The vault's own keys.
    /// Adds a keyring term: new writes use it; a leader-driven rewrap moves old records to it.
    KeyringRotate,
    /// The keyring's terms and the rewrap's progress.
    KeyringStatus,
    /// Unauthenticated: a threshold of current unseal shares, each with the ceremony's nonce,
    /// authorizes a new root key and the new share set fixed when the ceremony started.
    Rekey(crate::ceremony::CeremonyStep<crate::ceremony::RekeyParams>),
}

impl std::fmt::Debug for Operation {
    /// Names the operation and its path; never prints shares, tokens or secret values.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Operation::KvPut { path, cas, .. } => write!(f, "KvPut({path:?}, cas={cas:?})"),
            Operation::KvPatch { path, cas, .. } => write!(f, "KvPatch({path:?}, cas={cas:?})"),
            Operation::KvGet { path, version } => write!(f, "KvGet({path:?}, version={version:?})"),
            Operation::KvGetStage { path, stage } => write!(f, "KvGetStage({path:?}, {stage:?})"),
            Operation::KvList { prefix } => write!(f, "KvList({prefix:?})"),
            Operation::Watch { prefix } => write!(f, "Watch({prefix:?})"),
            Operation::KvDelete { path, .. } => write!(f, "KvDelete({path:?})"),
            Operation::KvUndelete { path, .. } => write!(f, "KvUndelete({path:?})"),
            Operation::KvDestroy { path, .. } => write!(f, "KvDestroy({path:?})"),
            Operation::KvMetadata { path } => write!(f, "KvMetadata({path:?})"),
            Operation::KvSetMetadata { path, .. } => write!(f, "KvSetMetadata({path:?})"),
            Operation::KvDeleteMetadata { path } => write!(f, "KvDeleteMetadata({path:?})"),
            Operation::Init { shares, threshold } => write!(f, "Init({shares}, {threshold})"),
            Operation::Join { peer, non_voter } => write!(f, "Join({peer:?}, non_voter: {non_voter})"),
            Operation::RemovePeer { id } => write!(f, "RemovePeer({id})"),
            Operation::TokenLookup(t) | Operation::TokenRevoke(t) | Operation::TokenRevokeOrphan(t) => {
                write!(f, "{}({t:?})", self.name())
            }
            Operation::TokenRenew { target, .. } => write!(f, "TokenRenew({target:?})"),
            other => write!(f, "{}({})", other.name(), other.logical_path()),
        }
    }
}

/// How the request pipeline treats an operation: the column of the operation table that
/// invariant 3 (every request authenticated, authorized and audited) rests on. `Core::handle`
/// routes on it and nothing else, so an operation cannot skip a step by being left out of a
/// list somewhere.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OpClass {
    /// Served without a token and without an audit record: what a sealed node serves (seal
    /// status, health, unseal) and what a node in no cluster serves (init, join), neither of
    /// which has an audit key to record with.
    Unaudited,
    /// Audited, and the request proves itself with what it carries (a login's credentials, a
    /// ceremony's nonce and share) instead of a token.
    Credentials,
    /// Audited, and the caller's token must grant `Need` on the operation's logical path.
    Token(Need),
}

/// What a token-bearing operation needs on its logical path: any one of `any`, plus `sudo` on
/// the operations Vault marks as root-protected.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Need {
    pub any: &'static [Capability],
    pub sudo: bool,
}

impl Need {
    /// The capability as audit records name it (`read`, `create|update`, `update+sudo`).
    pub fn describe(&self) -> String {
        let mut s = self.any.iter().map(|c| c.name()).collect::<Vec<_>>().join("|");
        if self.sudo {
            s.push_str("+sudo");
        }
        s
    }
}

/// One row of the operation table: the name metrics, logs and audit records use, the path
/// policies match and records name (as in Vault, KV v2 mounted at `secret/`, so existing
/// Vault policies carry over), and the class.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Spec {
    pub name: &'static str,
    pub path: String,
    pub class: OpClass,
}

const fn token(any: &'static [Capability], sudo: bool) -> OpClass {
    OpClass::Token(Need { any, sudo })
}
const READ: OpClass = token(&[Capability::Read], false);
const READ_SUDO: OpClass = token(&[Capability::Read], true);
const LIST: OpClass = token(&[Capability::List], false);
const LIST_SUDO: OpClass = token(&[Capability::List], true);
const LIST_OR_READ: OpClass = token(&[Capability::List, Capability::Read], false);
const UPDATE: OpClass = token(&[Capability::Update], false);
const UPDATE_SUDO: OpClass = token(&[Capability::Update], true);
const DELETE: OpClass = token(&[Capability::Delete], false);
/// Vault: create for a new entry, update for an existing one. Which one applies to a secret is
/// decided where its write is guarded (`kv_put`), not from a read that may be stale.
const CREATE_OR_UPDATE: OpClass = token(&[Capability::Create, Capability::Update], false);

impl Operation {
    /// The operation table: every operation's name, logical path and class, in one place.
    /// Adding an operation is a row here and its handler (CONTRIBUTING.md shows one).
    pub fn spec(&self) -> Spec {
        use OpClass::{Credentials, Unaudited};
        let (name, path, class): (&'static str, String, OpClass) = match self {
            Operation::SealStatus => ("SealStatus", "sys/seal-status".into(), Unaudited),
            Operation::Health => ("Health", "sys/health".into(), Unaudited),
            Operation::Unseal { .. } => ("Unseal", "sys/unseal".into(), Unaudited),
            Operation::Init { .. } => ("Init", "sys/init".into(), Unaudited),
            Operation::Join { .. } => ("Join", "sys/storage/raft/join".into(), Unaudited),
            Operation::Seal => ("Seal", "sys/seal".into(), UPDATE_SUDO),
            Operation::Leader => ("Leader", "sys/leader".into(), READ),
            // Vault: listing audit devices needs sudo.
            Operation::Mounts { table: MountTable::Audit, .. } => ("Mounts", "sys/audit".into(), READ_SUDO),
            Operation::Mounts { table: MountTable::Auth, .. } => ("Mounts", "sys/auth".into(), READ),
            Operation::Mounts { path: None, .. } => ("Mounts", "sys/mounts".into(), READ),
            Operation::Mounts { path: Some(p), .. } => ("Mounts", format!("sys/internal/ui/mounts/{p}"), READ),
            Operation::Members => ("Members", "sys/storage/raft/configuration".into(), READ_SUDO),
            Operation::RemovePeer { .. } => ("RemovePeer", "sys/storage/raft/remove-peer".into(), UPDATE_SUDO),
            Operation::KvPut { path, .. } => ("KvPut", format!("secret/data/{path}"), CREATE_OR_UPDATE),
            Operation::KvPatch { path, .. } => ("KvPatch", format!("secret/data/{path}"), UPDATE),
            Operation::KvGet { path, .. } => ("KvGet", format!("secret/data/{path}"), READ),
            Operation::KvGetStage { path, .. } => ("KvGetStage", format!("secret/data/{path}"), READ),
            Operation::KvList { prefix } => ("KvList", format!("secret/metadata/{prefix}"), LIST),
            Operation::Watch { prefix } => ("Watch", format!("secret/data/{prefix}"), READ),
            // Deleting the latest version is a DELETE on the data path in Vault; named versions
            // go through `delete/`, with update.
            Operation::KvDelete { path, versions } if versions.is_empty() => {
                ("KvDelete", format!("secret/data/{path}"), DELETE)
            }
            Operation::KvDelete { path, .. } => ("KvDelete", format!("secret/delete/{path}"), UPDATE),
            Operation::KvUndelete { path, .. } => ("KvUndelete", format!("secret/undelete/{path}"), UPDATE),
            Operation::KvDestroy { path, .. } => ("KvDestroy", format!("secret/destroy/{path}"), UPDATE),
            Operation::KvMetadata { path } => ("KvMetadata", format!("secret/metadata/{path}"), READ),
            Operation::KvSetMetadata { path, .. } => ("KvSetMetadata", format!("secret/metadata/{path}"), UPDATE),
            Operation::KvDeleteMetadata { path } => ("KvDeleteMetadata", format!("secret/metadata/{path}"), DELETE),
            Operation::TokenCreate(c) if c.orphan => ("TokenCreate", "auth/token/create-orphan".into(), UPDATE),
            Operation::TokenCreate(_) => ("TokenCreate", "auth/token/create".into(), UPDATE),
            Operation::TokenLookup(t @ TokenRef::SelfToken) => ("TokenLookup", token_path("lookup", t), READ),
            Operation::TokenLookup(t) => ("TokenLookup", token_path("lookup", t), UPDATE),
            Operation::TokenRenew { target, .. } => ("TokenRenew", token_path("renew", target), UPDATE),
            Operation::TokenRevoke(t) => ("TokenRevoke", token_path("revoke", t), UPDATE),
            // Vault: orphaning a token's children takes it out of its tree's accounting.
            Operation::TokenRevokeOrphan(_) => ("TokenRevokeOrphan", "auth/token/revoke-orphan".into(), UPDATE_SUDO),
            Operation::TokenListAccessors => ("TokenListAccessors", "auth/token/accessors".into(), LIST_SUDO),
            Operation::Metrics => ("Metrics", "sys/metrics".into(), READ),
            Operation::AutopilotState => ("AutopilotState", "sys/storage/raft/autopilot/state".into(), READ_SUDO),
            Operation::SnapshotSave => ("SnapshotSave", "sys/storage/raft/snapshot".into(), READ_SUDO),
            // Replaces everything, keys included: sudo, as in Vault.
            Operation::SnapshotRestore { force: false, .. } => {
                ("SnapshotRestore", "sys/storage/raft/snapshot".into(), UPDATE_SUDO)
            }
            Operation::SnapshotRestore { force: true, .. } => {
                ("SnapshotRestore", "sys/storage/raft/snapshot-force".into(), UPDATE_SUDO)
            }
            Operation::Capabilities { target, .. } => {
                let path = match target {
                    TokenRef::SelfToken => "sys/capabilities-self",
                    TokenRef::Accessor(_) => "sys/capabilities-accessor",
                    TokenRef::Token(_) => "sys/capabilities",
                };
                ("Capabilities", path.into(), UPDATE)
            }
            Operation::PolicyWrite { name, .. } => ("PolicyWrite", format!("sys/policy/{name}"), CREATE_OR_UPDATE),
            Operation::PolicyRead { name } => ("PolicyRead", format!("sys/policy/{name}"), READ),
            Operation::PolicyList => ("PolicyList", "sys/policy".into(), LIST),
            Operation::PolicyDelete { name } => ("PolicyDelete", format!("sys/policy/{name}"), DELETE),
            Operation::RoleWrite(role) => ("RoleWrite", role.method().role_path(role.name()), CREATE_OR_UPDATE),
            Operation::RoleRead { method, name } => ("RoleRead", method.role_path(name), READ),
            Operation::RoleList { method } => ("RoleList", method.roles_path(), LIST),
            Operation::RoleDelete { method, name } => ("RoleDelete", method.role_path(name), DELETE),
            Operation::AppRoleRoleId { name } => {
                ("AppRoleRoleId", format!("{}/role-id", Method::AppRole.role_path(name)), READ)
            }
            Operation::AppRoleSecretId { name } => {
                ("AppRoleSecretId", format!("{}/secret-id", Method::AppRole.role_path(name)), UPDATE)
            }
            Operation::JwtConfigWrite(_) => ("JwtConfigWrite", "auth/jwt/config".into(), UPDATE),
            Operation::JwtConfigRead => ("JwtConfigRead", "auth/jwt/config".into(), READ),
            Operation::Login(c) => ("Login", format!("auth/{}/login", c.method().name()), Credentials),
            Operation::GenerateRoot(step) => {
                ("GenerateRoot", format!("sys/generate-root/{}", step.name()), Credentials)
            }
            Operation::Rekey(step) => ("Rekey", format!("sys/rekey/{}", step.name()), Credentials),
            Operation::AuditList(_) => ("AuditList", "sys/audit/list".into(), READ_SUDO),
            Operation::AuditVerify { .. } => ("AuditVerify", "sys/audit/verify".into(), READ_SUDO),
            Operation::AuditHash { .. } => ("AuditHash", "sys/audit/hash".into(), UPDATE_SUDO),
            Operation::AuditUnusedGrants { .. } => ("AuditUnusedGrants", "sys/audit/unused-grants".into(), READ_SUDO),
            // Setting, disabling or triggering a rotation also needs every grant the rotation
            // itself will use (invariant 7): `Core::authorize` checks those beyond this row.
            Operation::RotationSet(c) => ("RotationSet", format!("sys/rotation/config/{}", c.path), CREATE_OR_UPDATE),
            Operation::RotationDisable { path } => {
                ("RotationDisable", format!("sys/rotation/config/{path}"), CREATE_OR_UPDATE)
            }
            Operation::RotationNow { path } => ("RotationNow", format!("sys/rotation/rotate/{path}"), CREATE_OR_UPDATE),
            Operation::RotationStatus { path: Some(path) } => {
                ("RotationStatus", format!("sys/rotation/status/{path}"), READ)
            }
            Operation::RotationStatus { path: None } => ("RotationStatus", "sys/rotation/status".into(), LIST_OR_READ),
            // Registering code that the nodes will run: sudo.
            Operation::RotationFunctionRegister { name, .. } => {
                ("RotationFunctionRegister", format!("sys/rotation/function/{name}"), UPDATE_SUDO)
            }
            Operation::RotationFunctionList => ("RotationFunctionList", "sys/rotation/function".into(), LIST_OR_READ),
            Operation::KeyringRotate => ("KeyringRotate", "sys/rotate".into(), UPDATE_SUDO),
            Operation::KeyringStatus => ("KeyringStatus", "sys/key-status".into(), READ),
        };
        Spec { name, path, class }
    }

    /// The operation's name in metrics, logs and audit records (its table row's).
    pub fn name(&self) -> &'static str {
        self.spec().name
    }

    /// The path policies and audit records name this operation by (its table row's).
    pub fn logical_path(&self) -> String {
        self.spec().path
    }

    /// Whether a `Credentials` request carries credentials (a login, an unseal share or a
    /// ceremony's nonce): no token is checked, and it is charged as a login attempt. A
    /// ceremony's status or start carries none: it is an unauthenticated request like any other.
    pub fn checks_credentials(&self) -> bool {
        match self {
            Operation::Login(_) => true,
            Operation::GenerateRoot(step) => step.nonce().is_some(),
            Operation::Rekey(step) => step.nonce().is_some(),
            _ => false,
        }
    }
}

/// What a request produced. `Debug` names the variant only: replies carry tokens and secrets.
pub enum Reply {
    SealStatus(SealStatus),
    Health(HealthInfo),
    /// Prometheus text exposition.
    Metrics(String),
    Autopilot(arca_raft::AutopilotState),
    /// A backup being streamed.
    Snapshot(crate::backup::Download),
    Restored(crate::backup::Restored),
    Init(InitResult),
    Leader {
        leader: Option<Member>,
    },
    Members(Vec<Member>),
    Mounts(Vec<Mount>),
    Done,
    /// A new version, and the secret's custom metadata (Vault returns it with every write).
    KvWritten {
        version: VersionMetadata,
        custom_metadata: BTreeMap<String, String>,
    },
    KvSecret {
        data: SecretData,
        version: VersionMetadata,
        /// The secret's custom metadata labels (Vault returns them with every read).
        custom_metadata: std::collections::BTreeMap<String, String>,
    },
    KvKeys(Vec<String>),
    KvMetadata(SecretMetadata),
    TokenCreated {
        token: Zeroizing<String>,
        info: TokenInfo,
    },
    Token(TokenInfo),
    Accessors(Vec<String>),
    /// Per requested path, the capability names (`["deny"]` for none).
    Capabilities(Vec<(String, Vec<String>)>),
    Policy {
        name: String,
        text: String,
    },
    Names(Vec<String>),
    Role(RoleConfig),
    RoleId(String),
    SecretId {
        secret_id: Zeroizing<String>,
        accessor: String,
        expires_ms: Option<i64>,
    },
    JwtConfig(crate::auth::JwtConfig),
    /// A generate-root ceremony's state; once complete, the new root token XOR the starter's
    /// one-time pad, base64 (see `ceremony`).
    GenerateRoot {
        status: crate::ceremony::CeremonyStatus,
        encoded_token: Option<String>,
    },
    AuditRecords(Vec<crate::audit::AuditRecord>),
    AuditVerification {
        node: u64,
        verification: arca_raft::audit_log::Verification,
    },
    Hash(String),
    Grants(Vec<crate::GrantUse>),
    Rotations(Vec<crate::rotation::RotationStatus>),
    Functions(Vec<(String, String)>),
    /// The term `KeyringRotate` added.
    Term(u32),
    Keyring(crate::keyring::KeyringInfo),
    /// A rekey ceremony's state (progress towards the old threshold); the new shares once it
    /// is reached.
    Rekey {
        status: crate::ceremony::CeremonyStatus,
        shares: Vec<Zeroizing<String>>,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SealStatus {
    pub initialized: bool,
    pub sealed: bool,
    pub threshold: u8,
    pub shares: u8,
    pub progress: u8,
    /// Identifies the current unseal share set (not secret).
    pub share_set: String,
    pub node_id: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthInfo {
    pub initialized: bool,
    pub sealed: bool,
    pub node_id: u64,
    pub leader_id: Option<u64>,
    pub is_leader: bool,
    pub applied_index: u64,
}

pub struct InitResult {
    pub shares: Vec<Zeroizing<String>>,
    pub threshold: u8,
    pub root_token: Zeroizing<String>,
}

impl std::fmt::Debug for InitResult {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "InitResult({} shares, threshold {}, <root token>)", self.shares.len(), self.threshold)
    }
}

/// A secrets engine and where it is mounted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    /// With the trailing slash, as Vault reports it: `secret/`.
    pub path: String,
    /// Vault's engine type name: `kv`.
    pub kind: String,
    /// The engine's version option (`2` for KV v2).
    pub version: String,
    pub description: String,
}

/// Arca's one secrets engine: versioned KV (Vault's KV v2) at `secret/`.
/// Which of Vault's mount tables: Arca's are fixed, so these are what it has built in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MountTable {
    /// Secrets engines (`sys/mounts`).
    Secrets,
    /// Auth methods (`sys/auth`).
    Auth,
    /// Audit devices (`sys/audit`).
    Audit,
}

/// The mounts of `table`.
pub fn mounts(table: MountTable) -> Vec<Mount> {
    let mount = |path: &str, kind: &str, description: &str| Mount {
        path: path.into(),
        kind: kind.into(),
        version: String::new(),
        description: description.into(),
    };
    match table {
        MountTable::Secrets => {
            vec![Mount { version: "2".into(), ..mount("secret/", "kv", "versioned key/value secrets (KV v2)") }]
        }
        MountTable::Auth => vec![
            mount("token/", "token", "token based credentials"),
            mount("approle/", "approle", "AppRole: role id and secret id"),
            mount("cert/", "cert", "TLS client certificates from the client CA"),
            mount("jwt/", "jwt", "JWTs signed by the configured key"),
            mount("kubernetes/", "jwt", "Kubernetes service account tokens (the jwt method under Vault's path)"),
        ],
        MountTable::Audit => {
            vec![mount("arca/", "raft", "the replicated, hash-chained audit log (built in, always on)")]
        }
    }
}

/// The mount serving `path` (`secret`, `secret/`, `secret/app/db`), if any.
pub fn mount_serving(path: &str) -> Option<Mount> {
    let path = path.trim_start_matches('/');
    mounts(MountTable::Secrets).into_iter().find(|m| path.starts_with(&m.path) || format!("{path}/") == m.path)
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    pub id: u64,
    pub raft_addr: String,
    pub api_addr: String,
    pub voter: bool,
    pub leader: bool,
}

fn token_path(action: &str, target: &TokenRef) -> String {
    match target {
        TokenRef::SelfToken => format!("auth/token/{action}-self"),
        TokenRef::Token(_) => format!("auth/token/{action}"),
        TokenRef::Accessor(_) => format!("auth/token/{action}-accessor"),
    }
}

impl std::fmt::Debug for Reply {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let name = match self {
            Reply::SealStatus(_) => "SealStatus",
            Reply::Health(_) => "Health",
            Reply::Metrics(_) => "Metrics",
            Reply::Autopilot(_) => "Autopilot",
            Reply::Snapshot(_) => "Snapshot",
            Reply::Restored(_) => "Restored",
            Reply::Init(_) => "Init",
            Reply::Leader { .. } => "Leader",
            Reply::Members(_) => "Members",
            Reply::Mounts(_) => "Mounts",
            Reply::Done => "Done",
            Reply::KvWritten { .. } => "KvWritten",
            Reply::KvSecret { .. } => "KvSecret",
            Reply::KvKeys(_) => "KvKeys",
            Reply::KvMetadata(_) => "KvMetadata",
            Reply::TokenCreated { .. } => "TokenCreated",
            Reply::Token(_) => "Token",
            Reply::Accessors(_) => "Accessors",
            Reply::Capabilities(_) => "Capabilities",
            Reply::Policy { .. } => "Policy",
            Reply::Names(_) => "Names",
            Reply::Role(_) => "Role",
            Reply::RoleId(_) => "RoleId",
            Reply::SecretId { .. } => "SecretId",
            Reply::JwtConfig(_) => "JwtConfig",
            Reply::GenerateRoot { .. } => "GenerateRoot",
            Reply::AuditRecords(_) => "AuditRecords",
            Reply::AuditVerification { .. } => "AuditVerification",
            Reply::Hash(_) => "Hash",
            Reply::Grants(_) => "Grants",
            Reply::Rotations(_) => "Rotations",
            Reply::Functions(_) => "Functions",
            Reply::Term(_) => "Term",
            Reply::Keyring(_) => "Keyring",
            Reply::Rekey { .. } => "Rekey",
        };
        write!(f, "Reply::{name}")
    }
}

#[cfg(test)]
mod table {
    //! The operation table's decisions, checked for every operation: a new operation that is
    //! missing from them fails to compile (`variant`) or fails here (`ROWS`, the samples).

    use std::collections::BTreeSet;

    use super::*;
    use crate::auth::{AppRole, CertRole, JwtConfig, JwtRole};
    use crate::ceremony::{CeremonyStep, GenerateRootParams, RekeyParams};
    use crate::rotation::{RotationConfig, RotatorKind, Schedule};

    /// What the samples carry where a secret goes: it must never show in `Debug`.
    const SECRET: &str = "s3cr3t-must-not-print";

    /// Every operation's variant name. Exhaustive on purpose: a new operation does not compile
    /// until it is listed here, counted in `ROWS` and given a sample below.
    fn variant(op: &Operation) -> &'static str {
        match op {
            Operation::SealStatus => "SealStatus",
            Operation::Health => "Health",
            Operation::Unseal { .. } => "Unseal",
            Operation::Init { .. } => "Init",
            Operation::Seal => "Seal",
            Operation::Leader => "Leader",
            Operation::Members => "Members",
            Operation::Mounts { .. } => "Mounts",
            Operation::Join { .. } => "Join",
            Operation::RemovePeer { .. } => "RemovePeer",
            Operation::KvPut { .. } => "KvPut",
            Operation::KvPatch { .. } => "KvPatch",
            Operation::KvGet { .. } => "KvGet",
            Operation::KvGetStage { .. } => "KvGetStage",
            Operation::KvList { .. } => "KvList",
            Operation::Watch { .. } => "Watch",
            Operation::KvDelete { .. } => "KvDelete",
            Operation::KvUndelete { .. } => "KvUndelete",
            Operation::KvDestroy { .. } => "KvDestroy",
            Operation::KvMetadata { .. } => "KvMetadata",
            Operation::KvSetMetadata { .. } => "KvSetMetadata",
            Operation::KvDeleteMetadata { .. } => "KvDeleteMetadata",
            Operation::TokenCreate(_) => "TokenCreate",
            Operation::TokenLookup(_) => "TokenLookup",
            Operation::TokenRenew { .. } => "TokenRenew",
            Operation::TokenRevoke(_) => "TokenRevoke",
            Operation::TokenRevokeOrphan(_) => "TokenRevokeOrphan",
            Operation::TokenListAccessors => "TokenListAccessors",
            Operation::Metrics => "Metrics",
            Operation::AutopilotState => "AutopilotState",
            Operation::SnapshotSave => "SnapshotSave",
            Operation::SnapshotRestore { .. } => "SnapshotRestore",
            Operation::Capabilities { .. } => "Capabilities",
            Operation::PolicyWrite { .. } => "PolicyWrite",
            Operation::PolicyRead { .. } => "PolicyRead",
            Operation::PolicyList => "PolicyList",
            Operation::PolicyDelete { .. } => "PolicyDelete",
            Operation::RoleWrite(_) => "RoleWrite",
            Operation::RoleRead { .. } => "RoleRead",
            Operation::RoleList { .. } => "RoleList",
            Operation::RoleDelete { .. } => "RoleDelete",
            Operation::AppRoleRoleId { .. } => "AppRoleRoleId",
            Operation::AppRoleSecretId { .. } => "AppRoleSecretId",
            Operation::JwtConfigWrite(_) => "JwtConfigWrite",
            Operation::JwtConfigRead => "JwtConfigRead",
            Operation::Login(_) => "Login",
            Operation::GenerateRoot(_) => "GenerateRoot",
            Operation::AuditList(_) => "AuditList",
            Operation::AuditVerify { .. } => "AuditVerify",
            Operation::AuditHash { .. } => "AuditHash",
            Operation::AuditUnusedGrants { .. } => "AuditUnusedGrants",
            Operation::RotationSet(_) => "RotationSet",
            Operation::RotationDisable { .. } => "RotationDisable",
            Operation::RotationNow { .. } => "RotationNow",
            Operation::RotationStatus { .. } => "RotationStatus",
            Operation::RotationFunctionRegister { .. } => "RotationFunctionRegister",
            Operation::RotationFunctionList => "RotationFunctionList",
            Operation::KeyringRotate => "KeyringRotate",
            Operation::KeyringStatus => "KeyringStatus",
            Operation::Rekey(_) => "Rekey",
        }
    }
    /// The number of arms in `variant`.
    const ROWS: usize = 60;

    fn secret() -> Zeroizing<String> {
        Zeroizing::new(SECRET.into())
    }

    fn data() -> SecretData {
        SecretData([("password".to_string(), SECRET.to_string())].into())
    }

    /// At least one operation of every variant, and one of each shape the table treats apart.
    fn samples() -> Vec<Operation> {
        let path = || "app/db".to_string();
        let rotation = RotationConfig {
            path: path(),
            rotator: RotatorKind::Random,
            params: BTreeMap::new(),
            schedule: Schedule::Every { ms: 60_000 },
            window: None,
            max_attempts: 3,
            backoff_ms: 1_000,
            enabled: true,
            configured_by: String::new(),
        };
        let empty_upload = crate::backup::Upload(Box::pin(futures::stream::empty()));
        vec![
            Operation::SealStatus,
            Operation::Health,
            Operation::Unseal { share: secret(), reset: false },
            Operation::Init { shares: 5, threshold: 3 },
            Operation::Seal,
            Operation::Leader,
            Operation::Members,
            Operation::Mounts { path: None, table: MountTable::Secrets },
            Operation::Mounts { path: Some("secret/".into()), table: MountTable::Secrets },
            Operation::Mounts { path: None, table: MountTable::Auth },
            Operation::Mounts { path: None, table: MountTable::Audit },
            Operation::Join { peer: "127.0.0.1:8201".into(), non_voter: false },
            Operation::RemovePeer { id: 3 },
            Operation::KvPut { path: path(), data: data(), cas: None },
            Operation::KvPatch { path: path(), set: data(), remove: vec![], cas: Some(1) },
            Operation::KvGet { path: path(), version: None },
            Operation::KvGetStage { path: path(), stage: crate::kv::Stage::Current },
            Operation::KvList { prefix: "app/".into() },
            Operation::Watch { prefix: "app/".into() },
            Operation::KvDelete { path: path(), versions: vec![] },
            Operation::KvDelete { path: path(), versions: vec![1] },
            Operation::KvUndelete { path: path(), versions: vec![1] },
            Operation::KvDestroy { path: path(), versions: vec![1] },
            Operation::KvMetadata { path: path() },
            Operation::KvSetMetadata { path: path(), settings: Default::default() },
            Operation::KvDeleteMetadata { path: path() },
            Operation::TokenCreate(TokenCreate::default()),
            Operation::TokenCreate(TokenCreate { orphan: true, ..Default::default() }),
            Operation::TokenLookup(TokenRef::SelfToken),
            Operation::TokenLookup(TokenRef::Token(secret())),
            Operation::TokenLookup(TokenRef::Accessor("acc".into())),
            Operation::TokenRenew { target: TokenRef::Token(secret()), increment: None },
            Operation::TokenRevoke(TokenRef::Token(secret())),
            Operation::TokenRevokeOrphan(TokenRef::Token(secret())),
            Operation::TokenListAccessors,
            Operation::Metrics,
            Operation::AutopilotState,
            Operation::SnapshotSave,
            Operation::SnapshotRestore { upload: empty_upload, force: true },
            Operation::Capabilities { target: TokenRef::SelfToken, paths: vec![] },
            Operation::Capabilities { target: TokenRef::Token(secret()), paths: vec![] },
            Operation::PolicyWrite { name: "app".into(), text: String::new() },
            Operation::PolicyRead { name: "app".into() },
            Operation::PolicyList,
            Operation::PolicyDelete { name: "app".into() },
            Operation::RoleWrite(RoleConfig::AppRole(AppRole { name: "ci".into(), ..Default::default() })),
            Operation::RoleWrite(RoleConfig::Cert(CertRole::default())),
            Operation::RoleWrite(RoleConfig::Jwt(JwtRole::default())),
            Operation::RoleRead { method: Method::Cert, name: "web".into() },
            Operation::RoleList { method: Method::Jwt },
            Operation::RoleDelete { method: Method::AppRole, name: "ci".into() },
            Operation::AppRoleRoleId { name: "ci".into() },
            Operation::AppRoleSecretId { name: "ci".into() },
            Operation::JwtConfigWrite(JwtConfig::default()),
            Operation::JwtConfigRead,
            Operation::Login(Credentials::AppRole { role_id: "r".into(), secret_id: secret() }),
            Operation::Login(Credentials::Jwt { role: "svc".into(), jwt: secret() }),
            Operation::Login(Credentials::Cert { role: None }),
            Operation::GenerateRoot(CeremonyStep::<GenerateRootParams>::Status),
            Operation::GenerateRoot(CeremonyStep::Submit { nonce: secret(), share: secret() }),
            Operation::AuditList(Default::default()),
            Operation::AuditVerify { upto: None },
            Operation::AuditHash { value: secret() },
            Operation::AuditUnusedGrants { since_ms: 0 },
            Operation::RotationSet(rotation),
            Operation::RotationDisable { path: path() },
            Operation::RotationNow { path: path() },
            Operation::RotationStatus { path: Some(path()) },
            Operation::RotationStatus { path: None },
            Operation::RotationFunctionRegister { name: "f".into(), sha256: "00".into() },
            Operation::RotationFunctionList,
            Operation::KeyringRotate,
            Operation::KeyringStatus,
            Operation::Rekey(CeremonyStep::<RekeyParams>::Status),
            Operation::Rekey(CeremonyStep::Cancel { nonce: secret() }),
        ]
    }

    #[test]
    fn every_operation_has_a_consistent_row() {
        // What a sealed node or one in no cluster serves: the only operations with no record.
        let unaudited: BTreeSet<&str> = ["SealStatus", "Health", "Unseal", "Init", "Join"].into();
        // The only operations whose request is its own proof.
        let credentials: BTreeSet<&str> = ["Login", "GenerateRoot", "Rekey"].into();
        let mut seen = BTreeSet::new();
        for op in samples() {
            let spec = op.spec();
            let shown = format!("{op:?}");
            assert_eq!(spec.name, variant(&op), "{shown}: the table names it after another operation");
            assert_eq!(op.name(), spec.name);
            assert_eq!(op.logical_path(), spec.path);
            seen.insert(spec.name);
            let roots = ["sys/", "secret/", "auth/"];
            assert!(
                roots.iter().any(|r| spec.path.starts_with(r)),
                "{shown}: path {:?} outside sys/, secret/, auth/",
                spec.path
            );
            assert!(!spec.path.contains("//") && !spec.path.ends_with('/'), "{shown}: malformed path {:?}", spec.path);
            assert!(!shown.contains(SECRET), "Debug of {} prints a secret: {shown}", spec.name);
            assert_eq!(spec.class == OpClass::Unaudited, unaudited.contains(spec.name), "{shown}: audited or not");
            assert_eq!(
                spec.class == OpClass::Credentials,
                credentials.contains(spec.name),
                "{shown}: self-authenticating or not"
            );
            if op.checks_credentials() {
                assert_eq!(spec.class, OpClass::Credentials, "{shown} is charged as a login but checks a token");
            }
            if let OpClass::Token(need) = spec.class {
                assert!(!need.any.is_empty(), "{shown}: a token-bearing operation that needs nothing");
                assert!(
                    !need.any.contains(&Capability::Sudo) && !need.any.contains(&Capability::Deny),
                    "{shown}: sudo is a flag, deny no grant"
                );
                assert!(!(need.sudo && spec.path.starts_with("secret/")), "{shown}: sudo on a secret's path");
                assert!(!need.describe().is_empty());
            }
        }
        assert_eq!(seen.len(), ROWS, "an operation has no sample: {seen:?}");
    }

    #[test]
    fn writes_need_more_than_read_and_admin_operations_need_sudo() {
        let sudo: BTreeSet<&str> = [
            "Seal",
            "Members",
            "RemovePeer",
            "TokenRevokeOrphan",
            "TokenListAccessors",
            "AutopilotState",
            "SnapshotSave",
            "SnapshotRestore",
            "AuditList",
            "AuditVerify",
            "AuditHash",
            "AuditUnusedGrants",
            "RotationFunctionRegister",
            "KeyringRotate",
        ]
        .into();
        for op in samples() {
            let spec = op.spec();
            let OpClass::Token(need) = spec.class else { continue };
            let audit_devices = matches!(op, Operation::Mounts { table: MountTable::Audit, .. });
            assert_eq!(need.sudo, sudo.contains(spec.name) || audit_devices, "{op:?}: sudo or not");
            let writes =
                ["Put", "Patch", "Write", "Delete", "Destroy", "Create", "Revoke", "Set", "Rotate", "Register"];
            if writes.iter().any(|w| spec.name.contains(w)) {
                assert!(
                    !need.any.contains(&Capability::Read) && !need.any.contains(&Capability::List),
                    "{op:?}: a write allowed by read or list"
                );
            }
        }
    }
}
