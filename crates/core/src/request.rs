//! The transport-agnostic request and reply types.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use zeroize::{Zeroize, Zeroizing};

use crate::auth::{Credentials, Method, RoleConfig};
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

impl Operation {
    /// Whether the request proves who the caller is with credentials of its own (a login, an
    /// unseal share or a ceremony's nonce) instead of a token: no token is checked, and it is
    /// charged as a login attempt. A ceremony's status or start carries none: it is an
    /// unauthenticated request like any other.
    pub fn checks_credentials(&self) -> bool {
        match self {
            Operation::Login(_) => true,
            Operation::GenerateRoot(step) => step.nonce().is_some(),
            Operation::Rekey(step) => step.nonce().is_some(),
            _ => false,
        }
    }

    /// The path policies and audit records name this operation by, as in Vault (KV v2 mounted
    /// at `secret/`), so existing Vault policies carry over.
    pub fn logical_path(&self) -> String {
        match self {
            Operation::SealStatus => "sys/seal-status".into(),
            Operation::Health => "sys/health".into(),
            Operation::Unseal { .. } => "sys/unseal".into(),
            Operation::Init { .. } => "sys/init".into(),
            Operation::Seal => "sys/seal".into(),
            Operation::Leader => "sys/leader".into(),
            Operation::Mounts { table: MountTable::Auth, .. } => "sys/auth".into(),
            Operation::Mounts { table: MountTable::Audit, .. } => "sys/audit".into(),
            Operation::Mounts { path: None, .. } => "sys/mounts".into(),
            Operation::Mounts { path: Some(p), .. } => format!("sys/internal/ui/mounts/{p}"),
            Operation::Members => "sys/storage/raft/configuration".into(),
            Operation::Join { .. } => "sys/storage/raft/join".into(),
            Operation::RemovePeer { .. } => "sys/storage/raft/remove-peer".into(),
            Operation::KvPut { path, .. } | Operation::KvPatch { path, .. } | Operation::KvGet { path, .. } => {
                format!("secret/data/{path}")
            }
            Operation::KvGetStage { path, .. } => format!("secret/data/{path}"),
            Operation::KvList { prefix } => format!("secret/metadata/{prefix}"),
            Operation::Watch { prefix } => format!("secret/data/{prefix}"),
            // Deleting the latest version is a DELETE on the data path in Vault; named versions
            // go through `delete/`.
            Operation::KvDelete { path, versions } if versions.is_empty() => format!("secret/data/{path}"),
            Operation::KvDelete { path, .. } => format!("secret/delete/{path}"),
            Operation::KvUndelete { path, .. } => format!("secret/undelete/{path}"),
            Operation::KvDestroy { path, .. } => format!("secret/destroy/{path}"),
            Operation::KvMetadata { path }
            | Operation::KvSetMetadata { path, .. }
            | Operation::KvDeleteMetadata { path } => {
                format!("secret/metadata/{path}")
            }
            Operation::TokenCreate(c) if c.orphan => "auth/token/create-orphan".into(),
            Operation::TokenCreate(_) => "auth/token/create".into(),
            Operation::TokenLookup(t) => token_path("lookup", t),
            Operation::TokenRenew { target, .. } => token_path("renew", target),
            Operation::TokenRevoke(t) => token_path("revoke", t),
            Operation::TokenRevokeOrphan(_) => "auth/token/revoke-orphan".into(),
            Operation::TokenListAccessors => "auth/token/accessors".into(),
            Operation::Metrics => "sys/metrics".into(),
            Operation::AutopilotState => "sys/storage/raft/autopilot/state".into(),
            Operation::SnapshotSave | Operation::SnapshotRestore { force: false, .. } => {
                "sys/storage/raft/snapshot".into()
            }
            Operation::SnapshotRestore { force: true, .. } => "sys/storage/raft/snapshot-force".into(),
            Operation::Capabilities { target: TokenRef::SelfToken, .. } => "sys/capabilities-self".into(),
            Operation::Capabilities { target: TokenRef::Accessor(_), .. } => "sys/capabilities-accessor".into(),
            Operation::Capabilities { .. } => "sys/capabilities".into(),
            Operation::PolicyWrite { name, .. } | Operation::PolicyRead { name } | Operation::PolicyDelete { name } => {
                format!("sys/policy/{name}")
            }
            Operation::PolicyList => "sys/policy".into(),
            Operation::RoleWrite(role) => role.method().role_path(role.name()),
            Operation::RoleRead { method, name } | Operation::RoleDelete { method, name } => method.role_path(name),
            Operation::RoleList { method } => method.roles_path(),
            Operation::AppRoleRoleId { name } => format!("{}/role-id", Method::AppRole.role_path(name)),
            Operation::AppRoleSecretId { name } => format!("{}/secret-id", Method::AppRole.role_path(name)),
            Operation::JwtConfigWrite(_) | Operation::JwtConfigRead => "auth/jwt/config".into(),
            Operation::Login(c) => format!("auth/{}/login", c.method().name()),
            Operation::GenerateRoot(step) => format!("sys/generate-root/{}", step.name()),
            Operation::AuditList(_) => "sys/audit/list".into(),
            Operation::AuditVerify { .. } => "sys/audit/verify".into(),
            Operation::AuditHash { .. } => "sys/audit/hash".into(),
            Operation::AuditUnusedGrants { .. } => "sys/audit/unused-grants".into(),
            Operation::RotationSet(c) => format!("sys/rotation/config/{}", c.path),
            Operation::RotationDisable { path } => format!("sys/rotation/config/{path}"),
            Operation::RotationNow { path } => format!("sys/rotation/rotate/{path}"),
            Operation::RotationStatus { path: Some(path) } => format!("sys/rotation/status/{path}"),
            Operation::RotationStatus { path: None } => "sys/rotation/status".into(),
            Operation::RotationFunctionRegister { name, .. } => format!("sys/rotation/function/{name}"),
            Operation::RotationFunctionList => "sys/rotation/function".into(),
            Operation::KeyringRotate => "sys/rotate".into(),
            Operation::KeyringStatus => "sys/key-status".into(),
            Operation::Rekey(step) => format!("sys/rekey/{}", step.name()),
        }
    }

    pub fn name(&self) -> &'static str {
        match self {
            Operation::SealStatus => "SealStatus",
            Operation::Health => "Health",
            Operation::Unseal { .. } => "Unseal",
            Operation::Init { .. } => "Init",
            Operation::Seal => "Seal",
            Operation::Leader => "Leader",
            Operation::Mounts { .. } => "Mounts",
            Operation::Members => "Members",
            Operation::Join { .. } => "Join",
            Operation::RemovePeer { .. } => "RemovePeer",
            Operation::KvPut { .. } => "KvPut",
            Operation::KvPatch { .. } => "KvPatch",
            Operation::KvGet { .. } => "KvGet",
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
            Operation::KvGetStage { .. } => "KvGetStage",
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
