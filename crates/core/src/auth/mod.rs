//! Login methods: AppRole, TLS certificates and JWTs. Each turns proven credentials into a
//! token whose policies and TTLs come from the role the login matched.
//!
//! Roles live in the `sys` family under `auth/<method>/role/<name>`, barrier-encrypted. The
//! verification logic of each method is a pure function over the role and the presented
//! credential, so it is tested without a cluster.

pub mod approle;
pub mod cert;
pub mod jwt;
/// Logins (the `Core` side of every method) and `generate-root`.
pub(crate) mod login;

use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

pub use approle::AppRole;
pub use cert::CertRole;
pub use jwt::{JwtConfig, JwtRole};

use crate::{Error, Result};

/// Longest accepted role name.
pub const MAX_ROLE_NAME: usize = 128;

/// An auth method that has roles.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    AppRole,
    Cert,
    Jwt,
}

impl Method {
    pub fn name(self) -> &'static str {
        match self {
            Method::AppRole => "approle",
            Method::Cert => "cert",
            Method::Jwt => "jwt",
        }
    }

    /// Vault's path for the method's roles (`auth/cert/certs/…` for certificates).
    pub fn roles_path(self) -> String {
        match self {
            Method::Cert => "auth/cert/certs".into(),
            m => format!("auth/{}/role", m.name()),
        }
    }

    pub fn role_path(self, name: &str) -> String {
        format!("{}/{name}", self.roles_path())
    }

    /// Storage key of a role (in the `sys` family).
    pub(crate) fn role_key(self, name: &str) -> Vec<u8> {
        format!("auth/{}/role/{name}", self.name()).into_bytes()
    }

    pub(crate) fn roles_prefix(self) -> Vec<u8> {
        format!("auth/{}/role/", self.name()).into_bytes()
    }
}

/// What every role grants: the token a successful login receives.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct TokenParams {
    pub policies: Vec<String>,
    /// 0: the default TTL.
    pub ttl_secs: u64,
    /// 0: the system maximum.
    pub max_ttl_secs: u64,
    /// 0: unlimited.
    pub num_uses: u32,
}

/// A role of any method.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub enum RoleConfig {
    AppRole(AppRole),
    Cert(CertRole),
    Jwt(JwtRole),
}

impl RoleConfig {
    pub fn method(&self) -> Method {
        match self {
            RoleConfig::AppRole(_) => Method::AppRole,
            RoleConfig::Cert(_) => Method::Cert,
            RoleConfig::Jwt(_) => Method::Jwt,
        }
    }

    pub fn name(&self) -> &str {
        match self {
            RoleConfig::AppRole(r) => &r.name,
            RoleConfig::Cert(r) => &r.name,
            RoleConfig::Jwt(r) => &r.name,
        }
    }

    pub fn token(&self) -> &TokenParams {
        match self {
            RoleConfig::AppRole(r) => &r.token,
            RoleConfig::Cert(r) => &r.token,
            RoleConfig::Jwt(r) => &r.token,
        }
    }

    /// Checks the role before it is stored, so a login never meets a role it cannot use.
    pub fn validate(&self) -> Result<()> {
        validate_role_name(self.name())?;
        for p in &self.token().policies {
            crate::policy::validate_name(p)?;
            if p == crate::policy::ROOT_POLICY {
                return Err(Error::InvalidArgument("roles cannot grant the root policy".into()));
            }
        }
        match self {
            RoleConfig::AppRole(r) => r.validate(),
            RoleConfig::Cert(r) => r.validate(),
            RoleConfig::Jwt(r) => r.validate(),
        }
    }
}

pub fn validate_role_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= MAX_ROLE_NAME
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(Error::InvalidArgument(format!(
            "invalid role name {name:?}: 1 to {MAX_ROLE_NAME} characters of A-Z, a-z, 0-9, '.', '_', '-'"
        )))
    }
}

/// Credentials presented to a login.
pub enum Credentials {
    AppRole {
        role_id: String,
        secret_id: Zeroizing<String>,
    },
    /// The certificate comes from the TLS connection; `role` narrows the roles tried.
    Cert {
        role: Option<String>,
    },
    Jwt {
        role: String,
        jwt: Zeroizing<String>,
    },
}

impl Credentials {
    pub fn method(&self) -> Method {
        match self {
            Credentials::AppRole { .. } => Method::AppRole,
            Credentials::Cert { .. } => Method::Cert,
            Credentials::Jwt { .. } => Method::Jwt,
        }
    }
}

/// A login failure. The message says what was wrong with the presented credential without
/// revealing the configuration it was checked against.
pub(crate) fn login_failed(method: Method, why: impl std::fmt::Display) -> Error {
    Error::LoginFailed(format!("{} login failed: {why}", method.name()))
}
