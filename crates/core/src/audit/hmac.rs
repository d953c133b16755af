//! HMACs of the sensitive fields of requests and replies: a record names a token, a secret id
//! or a secret value only as `hmac-sha256:<hex>` under the cluster audit key.

use std::collections::BTreeMap;

use arca_crypto::AuditHasher;
use serde::Serialize;

use crate::auth::Credentials;
use crate::{Operation, Reply, Request, TokenRef};

fn json_hmac<T: Serialize>(hasher: &AuditHasher, value: &T) -> String {
    let bytes = zeroize::Zeroizing::new(serde_json::to_vec(value).unwrap_or_default());
    hasher.hash(&bytes)
}

/// HMACs of the sensitive values a request carries.
pub(crate) fn request_hmacs(hasher: &AuditHasher, req: &Request) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    if let Some(t) = &req.token {
        out.insert("token".into(), hasher.hash(t.as_bytes()));
    }
    match &req.op {
        Operation::KvPut { data, .. } | Operation::KvPatch { set: data, .. } => {
            out.insert("data".into(), json_hmac(hasher, data));
        }
        Operation::Login(Credentials::AppRole { role_id, secret_id }) => {
            out.insert("role_id".into(), hasher.hash(role_id.as_bytes()));
            out.insert("secret_id".into(), hasher.hash(secret_id.as_bytes()));
        }
        Operation::Login(Credentials::Jwt { jwt, .. }) => {
            out.insert("jwt".into(), hasher.hash(jwt.as_bytes()));
        }
        Operation::GenerateRoot(step) => {
            if let crate::ceremony::CeremonyStep::Start(crate::ceremony::GenerateRootParams::Otp(otp)) = step {
                out.insert("otp".into(), hasher.hash(otp.as_bytes()));
            }
            ceremony_hmacs(hasher, step.nonce(), step.share(), &mut out);
        }
        Operation::Rekey(step) => ceremony_hmacs(hasher, step.nonce(), step.share(), &mut out),
        Operation::TokenLookup(TokenRef::Token(t))
        | Operation::TokenRevoke(TokenRef::Token(t))
        | Operation::TokenRevokeOrphan(TokenRef::Token(t))
        | Operation::TokenRenew { target: TokenRef::Token(t), .. }
        | Operation::Capabilities { target: TokenRef::Token(t), .. } => {
            out.insert("target_token".into(), hasher.hash(t.as_bytes()));
        }
        Operation::AuditHash { value } => {
            out.insert("value".into(), hasher.hash(value.as_bytes()));
        }
        _ => {}
    }
    out
}

/// A ceremony's nonce authorizes submitting to it, so audit records hold only its HMAC.
fn ceremony_hmacs(hasher: &AuditHasher, nonce: Option<&str>, share: Option<&str>, out: &mut BTreeMap<String, String>) {
    if let Some(n) = nonce {
        out.insert("nonce".into(), hasher.hash(n.as_bytes()));
    }
    if let Some(s) = share {
        out.insert("share".into(), hasher.hash(s.as_bytes()));
    }
}

/// HMACs of the sensitive values a reply carries.
pub(crate) fn response_hmacs(hasher: &AuditHasher, reply: &Reply) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    match reply {
        Reply::KvSecret { data, .. } => {
            out.insert("data".into(), json_hmac(hasher, data));
        }
        Reply::TokenCreated { token, .. } => {
            out.insert("token".into(), hasher.hash(token.as_bytes()));
        }
        Reply::SecretId { secret_id, .. } => {
            out.insert("secret_id".into(), hasher.hash(secret_id.as_bytes()));
        }
        Reply::Rekey { shares, status } => {
            for (i, share) in shares.iter().enumerate() {
                out.insert(format!("share_{}", i + 1), hasher.hash(share.as_bytes()));
            }
            ceremony_hmacs(hasher, status.nonce.as_deref(), None, &mut out);
        }
        Reply::GenerateRoot { encoded_token, status } => {
            if let Some(t) = encoded_token {
                out.insert("encoded_token".into(), hasher.hash(t.as_bytes()));
            }
            ceremony_hmacs(hasher, status.nonce.as_deref(), None, &mut out);
        }
        _ => {}
    }
    out
}
