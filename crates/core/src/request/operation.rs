//! A request and the operation it asks for.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use zeroize::Zeroizing;

use super::reply::MountTable;
use crate::auth::{Credentials, Method, RoleConfig};
use crate::kv::SecretData;

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
