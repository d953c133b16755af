//! The transport-agnostic request and reply types.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use zeroize::{Zeroize, Zeroizing};

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

/// One client request.
#[derive(Debug)]
pub struct Request {
    /// The caller's token, if it sent one.
    pub token: Option<Zeroizing<String>>,
    /// The caller's address, for logs (and, later, audit and CIDR bindings).
    pub remote: Option<SocketAddr>,
    pub op: Operation,
}

/// What a request asks for.
pub enum Operation {
    // System: no token needed for these four, and they work while sealed.
    SealStatus,
    Health,
    Unseal { share: Zeroizing<String>, reset: bool },
    Init { shares: u8, threshold: u8 },
    // System, token required.
    Seal,
    Leader,
    Members,
    Join { peer: String },
    RemovePeer { id: u64 },
    // KV v2.
    KvPut { path: String, data: SecretData, cas: Option<u64> },
    KvGet { path: String, version: Option<u64> },
    KvList { prefix: String },
    KvDelete { path: String, versions: Vec<u64> },
    KvUndelete { path: String, versions: Vec<u64> },
    KvDestroy { path: String, versions: Vec<u64> },
    KvMetadata { path: String },
    KvSetMaxVersions { path: String, max_versions: u32 },
    // Tokens.
    TokenCreate { policies: Vec<String>, ttl: Option<Duration>, display_name: String },
    TokenLookupSelf,
    TokenRevoke { token: Option<Zeroizing<String>> },
}

impl std::fmt::Debug for Operation {
    /// Names the operation and its path; never prints shares, tokens or secret values.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Operation::KvPut { path, cas, .. } => write!(f, "KvPut({path:?}, cas={cas:?})"),
            Operation::KvGet { path, version } => write!(f, "KvGet({path:?}, version={version:?})"),
            Operation::KvList { prefix } => write!(f, "KvList({prefix:?})"),
            Operation::KvDelete { path, .. } => write!(f, "KvDelete({path:?})"),
            Operation::KvUndelete { path, .. } => write!(f, "KvUndelete({path:?})"),
            Operation::KvDestroy { path, .. } => write!(f, "KvDestroy({path:?})"),
            Operation::KvMetadata { path } => write!(f, "KvMetadata({path:?})"),
            Operation::KvSetMaxVersions { path, .. } => write!(f, "KvSetMaxVersions({path:?})"),
            Operation::Init { shares, threshold } => write!(f, "Init({shares}, {threshold})"),
            Operation::Join { peer } => write!(f, "Join({peer:?})"),
            Operation::RemovePeer { id } => write!(f, "RemovePeer({id})"),
            other => f.write_str(other.name()),
        }
    }
}

impl Operation {
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
            Operation::Members => "sys/storage/raft/configuration".into(),
            Operation::Join { .. } => "sys/storage/raft/join".into(),
            Operation::RemovePeer { .. } => "sys/storage/raft/remove-peer".into(),
            Operation::KvPut { path, .. } | Operation::KvGet { path, .. } => format!("secret/data/{path}"),
            Operation::KvList { prefix } => format!("secret/metadata/{prefix}"),
            Operation::KvDelete { path, .. } => format!("secret/delete/{path}"),
            Operation::KvUndelete { path, .. } => format!("secret/undelete/{path}"),
            Operation::KvDestroy { path, .. } => format!("secret/destroy/{path}"),
            Operation::KvMetadata { path } | Operation::KvSetMaxVersions { path, .. } => {
                format!("secret/metadata/{path}")
            }
            Operation::TokenCreate { .. } => "auth/token/create".into(),
            Operation::TokenLookupSelf => "auth/token/lookup-self".into(),
            Operation::TokenRevoke { token: None } => "auth/token/revoke-self".into(),
            Operation::TokenRevoke { token: Some(_) } => "auth/token/revoke".into(),
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
            Operation::Members => "Members",
            Operation::Join { .. } => "Join",
            Operation::RemovePeer { .. } => "RemovePeer",
            Operation::KvPut { .. } => "KvPut",
            Operation::KvGet { .. } => "KvGet",
            Operation::KvList { .. } => "KvList",
            Operation::KvDelete { .. } => "KvDelete",
            Operation::KvUndelete { .. } => "KvUndelete",
            Operation::KvDestroy { .. } => "KvDestroy",
            Operation::KvMetadata { .. } => "KvMetadata",
            Operation::KvSetMaxVersions { .. } => "KvSetMaxVersions",
            Operation::TokenCreate { .. } => "TokenCreate",
            Operation::TokenLookupSelf => "TokenLookupSelf",
            Operation::TokenRevoke { .. } => "TokenRevoke",
        }
    }
}

/// What a request produced.
#[derive(Debug)]
pub enum Reply {
    SealStatus(SealStatus),
    Health(HealthInfo),
    Init(InitResult),
    Leader { leader: Option<Member> },
    Members(Vec<Member>),
    Done,
    KvWritten(VersionMetadata),
    KvSecret { data: SecretData, version: VersionMetadata },
    KvKeys(Vec<String>),
    KvMetadata(SecretMetadata),
    TokenCreated { token: Zeroizing<String>, info: TokenInfo },
    Token(TokenInfo),
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

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    pub id: u64,
    pub raft_addr: String,
    pub api_addr: String,
    pub voter: bool,
    pub leader: bool,
}
