//! AppRole: a `role_id` (an identifier operators hand out, readable) plus a `secret_id`
//! (generated on demand, shown once, stored only as a hash, with its own TTL and use count).

use std::net::IpAddr;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use super::TokenParams;
use crate::{Error, Result};

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct AppRole {
    pub name: String,
    /// Generated when the role is first written; kept across updates.
    #[serde(default)]
    pub role_id: String,
    pub token: TokenParams,
    /// 0: secret ids never expire.
    pub secret_id_ttl_secs: u64,
    /// 0: unlimited logins per secret id.
    pub secret_id_num_uses: u32,
    /// Logins are accepted only from these networks; empty: from anywhere.
    pub bound_cidrs: Vec<String>,
}

impl AppRole {
    pub(crate) fn validate(&self) -> Result<()> {
        for c in &self.bound_cidrs {
            c.parse::<IpNet>().map_err(|_| {
                Error::InvalidArgument(format!("bound CIDR {c:?} is not a network such as 10.0.0.0/8 or ::1/128"))
            })?;
        }
        Ok(())
    }

    /// Whether a login from `remote` is allowed. Unknown origin with bound CIDRs: refused.
    pub fn allows(&self, remote: Option<IpAddr>) -> bool {
        if self.bound_cidrs.is_empty() {
            return true;
        }
        let Some(ip) = remote else { return false };
        // An IPv4 client on a dual-stack socket shows up as ::ffff:a.b.c.d.
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        self.bound_cidrs.iter().filter_map(|c| c.parse::<IpNet>().ok()).any(|net| net.contains(&ip))
    }
}

/// A stored secret id (under the hash of the secret id).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct SecretIdInfo {
    pub accessor: String,
    pub created_ms: i64,
    pub expires_ms: Option<i64>,
    pub uses_left: Option<u32>,
}

/// Storage key of the role-id index: the hash of the role id → the role name.
pub(crate) fn role_id_key(role_id: &str) -> Vec<u8> {
    format!("auth/approle/role-id/{}", crate::token::hash_hex(role_id)).into_bytes()
}

pub(crate) fn secret_ids_prefix(role: &str) -> Vec<u8> {
    format!("auth/approle/secret-id/{role}/").into_bytes()
}

pub(crate) fn secret_id_key(role: &str, secret_id: &str) -> Vec<u8> {
    let mut key = secret_ids_prefix(role);
    key.extend_from_slice(crate::token::hash_hex(secret_id).as_bytes());
    key
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bound_cidrs() {
        let role = AppRole { bound_cidrs: vec!["127.0.0.0/8".into()], ..Default::default() };
        role.validate().unwrap();
        assert!(role.allows(Some("127.0.0.5".parse().unwrap())));
        assert!(role.allows(Some("::ffff:127.0.0.1".parse().unwrap())));
        assert!(!role.allows(Some("10.0.0.1".parse().unwrap())));
        assert!(!role.allows(None));
        assert!(AppRole::default().allows(None));
        let bad = AppRole { bound_cidrs: vec!["10.0.0.0/33".into()], ..Default::default() };
        assert!(bad.validate().unwrap_err().to_string().contains("10.0.0.0/33"));
    }
}
