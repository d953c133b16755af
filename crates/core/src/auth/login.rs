//! Auth method roles and logins, and `generate-root`.

use std::net::SocketAddr;

use arca_crypto::Keyring;
use arca_raft::{Command, Guard, Op};
use arca_storage::Cf;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use tracing::{instrument, warn};
use zeroize::Zeroizing;

use crate::auth::approle::{self, SecretIdInfo};
use crate::auth::{login_failed, Credentials, JwtConfig, Method, RoleConfig};
use crate::ceremony::{self, CeremonyStep, GenerateRootParams, Stepped};
use crate::codec::{decrypt_json, encrypt_json};
use std::collections::BTreeMap;

use crate::policy::DEFAULT_POLICY;
use crate::token::NewToken;
use crate::token::{self, AuthSource, TokenInfo};
use crate::{now_ms, Core, Error, Reply, Result};

/// Sys key of the JWT method's configuration.
const JWT_CONFIG_KEY: &[u8] = b"auth/jwt/config";
/// Prefix of generated AppRole secret ids, so a leaked one is recognisable.
pub const SECRET_ID_PREFIX: &str = "arcas_";
const MAX_ROLES: usize = 10_000;

impl Core {
    pub(crate) fn read_role(&self, keyring: &Keyring, method: Method, name: &str) -> Result<Option<RoleConfig>> {
        crate::auth::validate_role_name(name)?;
        let key = method.role_key(name);
        match self.node.reader().get(Cf::Sys, &key)? {
            Some(raw) => Ok(Some(decrypt_json(keyring, &key, &raw)?)),
            None => Ok(None),
        }
    }

    fn role_not_found(method: Method, name: &str) -> Error {
        Error::NotFound(format!("no {} role named {name:?}", method.name()))
    }

    pub(crate) async fn write_role(&self, keyring: &Keyring, mut role: RoleConfig) -> Result<()> {
        role.validate()?;
        let method = role.method();
        let key = method.role_key(role.name());
        let mut ops = Vec::new();
        if let RoleConfig::AppRole(r) = &mut role {
            // The role id survives updates: operators handed it out.
            r.role_id = match self.read_role(keyring, method, &r.name)? {
                Some(RoleConfig::AppRole(old)) => old.role_id,
                _ => uuid_like()?,
            };
            ops.push(Op::Put {
                cf: Cf::Sys,
                key: approle::role_id_key(&r.role_id),
                value: r.name.clone().into_bytes(),
            });
        }
        ops.push(Op::Put { cf: Cf::Sys, value: encrypt_json(keyring, &key, &role)?, key });
        self.node.write(Command::Txn { guards: vec![], ops }).await?;
        Ok(())
    }

    pub(crate) async fn delete_role(&self, keyring: &Keyring, method: Method, name: &str) -> Result<()> {
        let role = self.read_role(keyring, method, name)?.ok_or_else(|| Self::role_not_found(method, name))?;
        let mut ops = vec![Op::Delete { cf: Cf::Sys, key: method.role_key(name) }];
        if let RoleConfig::AppRole(r) = role {
            ops.push(Op::Delete { cf: Cf::Sys, key: approle::role_id_key(&r.role_id) });
            for (k, _) in self.node.reader().scan_prefix(Cf::Sys, &approle::secret_ids_prefix(name), usize::MAX)? {
                ops.push(Op::Delete { cf: Cf::Sys, key: k });
            }
        }
        self.node.write(Command::Txn { guards: vec![], ops }).await?;
        Ok(())
    }

    pub(crate) fn list_roles(&self, method: Method) -> Result<Vec<String>> {
        let prefix = method.roles_prefix();
        let scan = self.node.reader().scan_prefix(Cf::Sys, &prefix, MAX_ROLES)?;
        Ok(scan.into_iter().map(|(k, _)| String::from_utf8_lossy(&k[prefix.len()..]).into_owned()).collect())
    }

    fn approle(&self, keyring: &Keyring, name: &str) -> Result<crate::auth::AppRole> {
        match self.read_role(keyring, Method::AppRole, name)? {
            Some(RoleConfig::AppRole(r)) => Ok(r),
            _ => Err(Self::role_not_found(Method::AppRole, name)),
        }
    }

    pub(crate) fn role_id(&self, keyring: &Keyring, name: &str) -> Result<String> {
        Ok(self.approle(keyring, name)?.role_id)
    }

    /// A new secret id for `name`: shown once, stored as a hash.
    pub(crate) async fn new_secret_id(&self, keyring: &Keyring, name: &str) -> Result<Reply> {
        let role = self.approle(keyring, name)?;
        let mut raw = Zeroizing::new([0u8; 32]);
        arca_crypto::random_bytes(&mut raw[..]).map_err(|e| Error::Internal(e.to_string()))?;
        let secret_id = Zeroizing::new(format!("{SECRET_ID_PREFIX}{}", URL_SAFE_NO_PAD.encode(&raw[..])));
        let now = now_ms();
        let info = SecretIdInfo {
            accessor: token::random_id(12)?,
            created_ms: now,
            expires_ms: (role.secret_id_ttl_secs > 0).then(|| now + role.secret_id_ttl_secs as i64 * 1000),
            uses_left: (role.secret_id_num_uses > 0).then_some(role.secret_id_num_uses),
        };
        let key = approle::secret_id_key(name, &secret_id);
        let ops = vec![Op::Put { cf: Cf::Sys, value: encrypt_json(keyring, &key, &info)?, key }];
        self.node.write(Command::Txn { guards: vec![], ops }).await?;
        Ok(Reply::SecretId { secret_id, accessor: info.accessor, expires_ms: info.expires_ms })
    }

    pub(crate) fn jwt_config(&self, keyring: &Keyring) -> Result<Option<JwtConfig>> {
        match self.node.reader().get(Cf::Sys, JWT_CONFIG_KEY)? {
            Some(raw) => Ok(Some(decrypt_json(keyring, JWT_CONFIG_KEY, &raw)?)),
            None => Ok(None),
        }
    }

    pub(crate) async fn write_jwt_config(&self, keyring: &Keyring, config: &JwtConfig) -> Result<()> {
        config.validate()?;
        let value = encrypt_json(keyring, JWT_CONFIG_KEY, config)?;
        let ops = vec![Op::Put { cf: Cf::Sys, key: JWT_CONFIG_KEY.to_vec(), value }];
        self.node.write(Command::Txn { guards: vec![], ops }).await?;
        Ok(())
    }

    /// Verifies credentials and issues a token. Failures say what was wrong with what was
    /// presented, never what the role expected.
    #[instrument(level = "info", skip_all, fields(method = creds.method().name()))]
    pub(crate) async fn login(
        &self,
        keyring: &Keyring,
        creds: Credentials,
        remote: Option<SocketAddr>,
        client_certs: &[Vec<u8>],
    ) -> Result<(Zeroizing<String>, TokenInfo)> {
        match creds {
            Credentials::AppRole { role_id, secret_id } => {
                self.approle_login(keyring, &role_id, &secret_id, remote).await
            }
            Credentials::Cert { role } => {
                let names = match role {
                    Some(r) => vec![r],
                    None => self.list_roles(Method::Cert)?,
                };
                if client_certs.is_empty() {
                    return Err(login_failed(
                        Method::Cert,
                        "no client certificate was presented on the TLS connection",
                    ));
                }
                let mut why = "no certificate role is configured".to_string();
                let now = rustls::pki_types::UnixTime::now();
                for name in names {
                    let Some(RoleConfig::Cert(role)) = self.read_role(keyring, Method::Cert, &name)? else {
                        why = format!("no cert role named {name:?}");
                        continue;
                    };
                    match role.verify(client_certs, now) {
                        Ok(id) => {
                            let auth = AuthSource { method: "cert".into(), role: name, identity: id.common_name };
                            return self.write_token(keyring, login_token(&role.token, auth), vec![], vec![]).await;
                        }
                        Err(e) => why = e,
                    }
                }
                Err(login_failed(Method::Cert, why))
            }
            Credentials::Jwt { role, jwt } => {
                let Some(RoleConfig::Jwt(r)) = self.read_role(keyring, Method::Jwt, &role)? else {
                    return Err(login_failed(Method::Jwt, format!("no JWT role named {role:?}")));
                };
                let config = self
                    .jwt_config(keyring)?
                    .ok_or_else(|| login_failed(Method::Jwt, "JWT verification keys are not configured"))?;
                let identity = r.verify(&config, &jwt).map_err(|e| login_failed(Method::Jwt, e))?;
                let auth = AuthSource { method: "jwt".into(), role, identity };
                self.write_token(keyring, login_token(&r.token, auth), vec![], vec![]).await
            }
        }
    }

    async fn approle_login(
        &self,
        keyring: &Keyring,
        role_id: &str,
        secret_id: &str,
        remote: Option<SocketAddr>,
    ) -> Result<(Zeroizing<String>, TokenInfo)> {
        let invalid = || login_failed(Method::AppRole, "invalid role_id or secret_id (unknown, expired or used up)");
        for _ in 0..crate::MAX_TXN_ATTEMPTS {
            let name = self.node.reader().get(Cf::Sys, &approle::role_id_key(role_id))?.ok_or_else(invalid)?;
            let name = String::from_utf8_lossy(&name).into_owned();
            let role = self.approle(keyring, &name).map_err(|_| invalid())?;
            if !role.allows(remote.map(|a| a.ip())) {
                return Err(login_failed(Method::AppRole, "logins for this role are not allowed from this address"));
            }
            let key = approle::secret_id_key(&name, secret_id);
            let raw = self.node.reader().get(Cf::Sys, &key)?.ok_or_else(invalid)?;
            let mut info: SecretIdInfo = decrypt_json(keyring, &key, &raw)?;
            if info.expires_ms.is_some_and(|e| e <= now_ms()) {
                return Err(invalid());
            }
            // Consuming a use and issuing the token are one command, guarded on the secret id
            // being unchanged: two concurrent logins cannot both take the last use.
            let op = match info.uses_left {
                Some(n) if n <= 1 => Op::Delete { cf: Cf::Sys, key: key.clone() },
                Some(n) => {
                    info.uses_left = Some(n - 1);
                    Op::Put { cf: Cf::Sys, value: encrypt_json(keyring, &key, &info)?, key: key.clone() }
                }
                None => Op::Put { cf: Cf::Sys, key: key.clone(), value: raw.clone() },
            };
            let guards = vec![Guard::unchanged(Cf::Sys, key.clone(), Some(&raw))];
            let auth = AuthSource { method: "approle".into(), role: name.clone(), identity: name };
            match self.write_token(keyring, login_token(&role.token, auth), guards, vec![op]).await {
                Err(Error::Conflict) => {
                    self.node.read_barrier().await?;
                }
                other => return other,
            }
        }
        Err(Error::Conflict)
    }

    /// One step of this node's generate-root ceremony. At the threshold the shares must
    /// reconstruct the root key (checked against the sealed keyring); then a root token is
    /// made and returned only under the one-time pad or PGP key fixed at the ceremony's start.
    pub(crate) async fn generate_root(
        &self,
        keyring: &Keyring,
        step: CeremonyStep<GenerateRootParams>,
    ) -> Result<Reply> {
        let init = self.init_record()?.ok_or(Error::NotInitialized)?;
        let (params, root, status) = match ceremony::step(&self.root_generation, &init, "generate-root", step)? {
            Stepped::Status(status) => return Ok(Reply::GenerateRoot { status, encoded_token: None }),
            Stepped::Done { params, root, status } => (params, root, status),
        };
        drop(root);
        let new = NewToken::root("generate-root");
        let (token, _) = self.write_token(keyring, new, vec![], vec![]).await?;
        let encoded = params.wrap(&token)?;
        warn!("a new root token was generated with unseal shares");
        Ok(Reply::GenerateRoot { status, encoded_token: Some(encoded) })
    }
}

/// 16 random bytes as a UUID-shaped string (role ids: identifiers, not secrets).
fn uuid_like() -> Result<String> {
    let h = token::random_id(16)?;
    Ok(format!("{}-{}-{}-{}-{}", &h[0..8], &h[8..12], &h[12..16], &h[16..20], &h[20..32]))
}

/// A token a login hands out: an orphan with the role's policies plus `default`.
pub(crate) fn login_token(params: &crate::auth::TokenParams, auth: AuthSource) -> NewToken {
    let mut policies = params.policies.clone();
    if !policies.iter().any(|p| p == DEFAULT_POLICY) {
        policies.push(DEFAULT_POLICY.into());
    }
    // Sorted, as every other token's (and as Vault lists them).
    policies.sort();
    policies.dedup();
    NewToken {
        policies,
        ttl_ms: (params.ttl_secs > 0).then(|| params.ttl_secs as i64 * 1000),
        max_ttl_ms: (params.max_ttl_secs > 0).then(|| params.max_ttl_secs as i64 * 1000),
        display_name: format!("{}-{}", auth.method, auth.role),
        meta: BTreeMap::new(),
        parent: None,
        renewable: true,
        num_uses: params.num_uses,
        auth,
        root: false,
    }
}
