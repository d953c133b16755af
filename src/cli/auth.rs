//! `arca login …`, `arca approle …` and `arca auth cert|jwt …`.

use std::path::{Path, PathBuf};

use arca_client::raw::proto;
use clap::{Args as ClapArgs, Subcommand};
use serde_json::{json, Value};

use super::output::print;
use super::token::token_json;
use super::{parse_duration, CliError, CliResult, Client, Format};

/// The token a role's logins receive.
#[derive(ClapArgs)]
pub struct TokenParamsArgs {
    /// Policies of the issued tokens (comma-separated or repeated).
    #[arg(long, value_delimiter = ',')]
    policies: Vec<String>,
    /// TTL of the issued tokens, e.g. 1h (default: the max TTL).
    #[arg(long)]
    token_ttl: Option<String>,
    /// Max TTL of the issued tokens (default and ceiling: 32 days).
    #[arg(long)]
    token_max_ttl: Option<String>,
    /// Uses of each issued token (0: unlimited).
    #[arg(long, default_value_t = 0)]
    token_uses: u32,
}

impl TokenParamsArgs {
    fn into_proto(self) -> CliResult<Option<proto::TokenParams>> {
        Ok(Some(proto::TokenParams {
            policies: self.policies,
            ttl_seconds: parse_duration("--token-ttl", self.token_ttl.as_deref())?,
            max_ttl_seconds: parse_duration("--token-max-ttl", self.token_max_ttl.as_deref())?,
            num_uses: self.token_uses,
        }))
    }
}

fn params_json(p: Option<&proto::TokenParams>) -> Value {
    let p = p.cloned().unwrap_or_default();
    json!({"policies": p.policies, "token_ttl_seconds": p.ttl_seconds,
           "token_max_ttl_seconds": p.max_ttl_seconds, "token_uses": p.num_uses})
}

/// Read, list and delete, shared by the role commands of every method.
#[derive(Subcommand)]
pub enum RoleAdmin {
    Read { name: String },
    List,
    Delete { name: String },
}

#[derive(Subcommand)]
pub enum LoginCommand {
    /// Log in with an AppRole role id and secret id.
    Approle {
        #[arg(long)]
        role_id: String,
        /// The secret id (`-` reads it from stdin).
        #[arg(long, env = "ARCA_SECRET_ID", hide_env_values = true)]
        secret_id: String,
        #[command(flatten)]
        store: Store,
    },
    /// Log in with the client certificate given by --client-cert/--client-key.
    Cert {
        /// Try only this role (default: every cert role).
        #[arg(long)]
        role: Option<String>,
        #[command(flatten)]
        store: Store,
    },
    /// Log in with a JWT read from FILE (`-`: stdin).
    Jwt {
        #[arg(long)]
        role: String,
        #[arg(long)]
        jwt: String,
        #[command(flatten)]
        store: Store,
    },
}

#[derive(ClapArgs)]
pub struct Store {
    /// Do not write the token to ~/.arca-token.
    #[arg(long)]
    no_store: bool,
}

#[derive(Subcommand)]
pub enum AppRoleCommand {
    /// Roles: write, read, list, delete.
    #[command(subcommand)]
    Role(AppRoleRole),
    /// Print a role's role id (an identifier, not a secret).
    RoleId { name: String },
    /// Generate a secret id for a role (shown once).
    SecretId { name: String },
}

#[derive(Subcommand)]
pub enum AppRoleRole {
    /// Create or update a role.
    Write {
        name: String,
        #[command(flatten)]
        token: TokenParamsArgs,
        /// Secret ids expire after this (default: never).
        #[arg(long)]
        secret_id_ttl: Option<String>,
        /// Logins per secret id (0: unlimited).
        #[arg(long, default_value_t = 0)]
        secret_id_uses: u32,
        /// Accept logins only from these networks (comma-separated or repeated).
        #[arg(long = "bound-cidr", value_delimiter = ',')]
        bound_cidrs: Vec<String>,
    },
    #[command(flatten)]
    Admin(RoleAdmin),
}

#[derive(Subcommand)]
pub enum AuthCommand {
    /// TLS-certificate login roles.
    #[command(subcommand)]
    Cert(CertCommand),
    /// JWT login: verification keys and roles.
    #[command(subcommand)]
    Jwt(JwtCommand),
}

#[derive(Subcommand)]
pub enum CertCommand {
    #[command(subcommand)]
    Role(CertRole),
}

#[derive(Subcommand)]
pub enum CertRole {
    /// Create or update a role: which CA, which names, which policies.
    Write {
        name: String,
        /// PEM file of the CA that issues the client certificates.
        #[arg(long)]
        ca: PathBuf,
        /// Allowed subject common names (`*` globs; comma-separated or repeated).
        #[arg(long = "allowed-common-name", value_delimiter = ',')]
        allowed_common_names: Vec<String>,
        /// Allowed DNS subject alternative names.
        #[arg(long = "allowed-dns-san", value_delimiter = ',')]
        allowed_dns_sans: Vec<String>,
        #[command(flatten)]
        token: TokenParamsArgs,
    },
    #[command(flatten)]
    Admin(RoleAdmin),
}

#[derive(Subcommand)]
pub enum JwtCommand {
    /// Set the verification keys (replaces the previous ones).
    Config {
        /// A PEM public key file (RSA, EC P-256, Ed25519; repeatable).
        #[arg(long = "pem-key")]
        pem_keys: Vec<PathBuf>,
        /// A JWKS file ({"keys": [...]}), e.g. a cluster's service-account issuer keys.
        #[arg(long)]
        jwks: Option<PathBuf>,
        /// Require this `iss`.
        #[arg(long, default_value = "")]
        bound_issuer: String,
    },
    #[command(subcommand)]
    Role(JwtRole),
}

#[derive(Subcommand)]
pub enum JwtRole {
    /// Create or update a role.
    Write(Box<JwtRoleWrite>),
    #[command(flatten)]
    Admin(RoleAdmin),
}

#[derive(ClapArgs)]
pub struct JwtRoleWrite {
    name: String,
    /// Accepted `aud` values (at least one; comma-separated or repeated).
    #[arg(long = "bound-audience", value_delimiter = ',', required = true)]
    bound_audiences: Vec<String>,
    #[arg(long, default_value = "")]
    bound_subject: String,
    /// `claim=value` that must hold (repeatable; several values for one claim: any of them).
    #[arg(long = "bound-claim")]
    bound_claims: Vec<String>,
    /// Claim naming the identity (default: sub).
    #[arg(long, default_value = "")]
    user_claim: String,
    /// Accepted algorithms (default: RS256, ES256, EdDSA).
    #[arg(long = "allowed-alg", value_delimiter = ',')]
    allowed_algs: Vec<String>,
    /// Clock leeway on exp/nbf (default 10s).
    #[arg(long)]
    leeway: Option<String>,
    #[command(flatten)]
    token: TokenParamsArgs,
}

fn read_file(path: &Path, what: &str) -> CliResult<String> {
    std::fs::read_to_string(path).map_err(|e| CliError::new(format!("cannot read the {what} {}: {e}", path.display())))
}

fn arg_or_stdin(value: String, what: &str) -> CliResult<String> {
    if value == "-" {
        super::read_stdin_line(what)
    } else {
        Ok(value)
    }
}

/// Prints a login's token and stores it in ~/.arca-token (mode 0600) unless told not to.
fn logged_in(format: Format, r: proto::LoginResponse, store: Store) -> CliResult {
    if !store.no_store {
        super::store_token(&r.token)?;
    }
    let mut v = r.info.as_ref().map(token_json).unwrap_or_default();
    v["token"] = json!(r.token);
    print(format, &v);
    Ok(())
}

pub async fn login(cmd: LoginCommand, client: &Client, format: Format) -> CliResult {
    match cmd {
        LoginCommand::Approle { role_id, secret_id, store } => {
            let secret_id = arg_or_stdin(secret_id, "secret id")?;
            let r = rpc!(client, auth.login_app_role(proto::AppRoleLoginRequest { role_id, secret_id })).await?;
            logged_in(format, r, store)
        }
        LoginCommand::Cert { role, store } => {
            if !client.has_identity() {
                return Err(CliError::usage("arca login cert needs --client-cert and --client-key"));
            }
            let r = rpc!(client, auth.login_cert(proto::CertLoginRequest { role: role.unwrap_or_default() })).await?;
            logged_in(format, r, store)
        }
        LoginCommand::Jwt { role, jwt, store } => {
            let jwt = if jwt == "-" { super::read_stdin_line("JWT")? } else { read_file(Path::new(&jwt), "JWT")? };
            let jwt = jwt.trim().to_string();
            let r = rpc!(client, auth.login_jwt(proto::JwtLoginRequest { role, jwt })).await?;
            logged_in(format, r, store)
        }
    }
}

async fn role_admin(method: proto::AuthMethod, cmd: RoleAdmin, client: &Client, format: Format) -> CliResult {
    match cmd {
        RoleAdmin::Read { name } => {
            let v = match method {
                proto::AuthMethod::Approle => {
                    let r = rpc!(client, auth.read_app_role(proto::RoleName { name })).await?;
                    json!({"name": r.name, "role_id": r.role_id, "token": params_json(r.token.as_ref()),
                           "secret_id_ttl_seconds": r.secret_id_ttl_seconds,
                           "secret_id_uses": r.secret_id_num_uses, "bound_cidrs": r.bound_cidrs})
                }
                proto::AuthMethod::Cert => {
                    let r = rpc!(client, auth.read_cert_role(proto::RoleName { name })).await?;
                    json!({"name": r.name, "allowed_common_names": r.allowed_common_names,
                           "allowed_dns_sans": r.allowed_dns_sans, "token": params_json(r.token.as_ref()),
                           "ca_pem": r.ca_pem})
                }
                _ => {
                    let r = rpc!(client, auth.read_jwt_role(proto::RoleName { name })).await?;
                    let claims: serde_json::Map<String, Value> =
                        r.bound_claims.into_iter().map(|(k, v)| (k, json!(v.values))).collect();
                    json!({"name": r.name, "bound_audiences": r.bound_audiences, "bound_subject": r.bound_subject,
                           "bound_claims": claims, "user_claim": r.user_claim, "allowed_algs": r.allowed_algs,
                           "leeway_seconds": r.leeway_seconds, "token": params_json(r.token.as_ref())})
                }
            };
            print(format, &v);
        }
        RoleAdmin::List => {
            let r = rpc!(client, auth.list_roles(proto::ListRolesRequest { method: method as i32 })).await?;
            print(format, &json!(r.names));
        }
        RoleAdmin::Delete { name } => {
            rpc!(client, auth.delete_role(proto::DeleteRoleRequest { method: method as i32, name: name.clone() }))
                .await?;
            println!("role {name} deleted");
        }
    }
    Ok(())
}

pub async fn approle(cmd: AppRoleCommand, client: &Client, format: Format) -> CliResult {
    match cmd {
        AppRoleCommand::Role(AppRoleRole::Write { name, token, secret_id_ttl, secret_id_uses, bound_cidrs }) => {
            let role = proto::AppRole {
                name: name.clone(),
                role_id: String::new(),
                token: token.into_proto()?,
                secret_id_ttl_seconds: parse_duration("--secret-id-ttl", secret_id_ttl.as_deref())?,
                secret_id_num_uses: secret_id_uses,
                bound_cidrs,
            };
            rpc!(client, auth.write_app_role(role)).await?;
            println!("approle role {name} written");
        }
        AppRoleCommand::Role(AppRoleRole::Admin(a)) => {
            return role_admin(proto::AuthMethod::Approle, a, client, format).await
        }
        AppRoleCommand::RoleId { name } => {
            let r = rpc!(client, auth.read_role_id(proto::RoleName { name })).await?;
            print(format, &json!({"role_id": r.role_id}));
        }
        AppRoleCommand::SecretId { name } => {
            let r = rpc!(client, auth.generate_secret_id(proto::RoleName { name })).await?;
            let expires = if r.expires_ms == 0 { Value::Null } else { json!(r.expires_ms) };
            print(format, &json!({"secret_id": r.secret_id, "secret_id_accessor": r.accessor, "expires_ms": expires}));
        }
    }
    Ok(())
}

fn claims(items: Vec<String>) -> CliResult<std::collections::HashMap<String, proto::StringList>> {
    let mut out: std::collections::HashMap<String, proto::StringList> = Default::default();
    for item in items {
        let (k, v) = item
            .split_once('=')
            .ok_or_else(|| CliError::usage(format!("--bound-claim {item:?}: expected claim=value")))?;
        out.entry(k.to_string()).or_default().values.push(v.to_string());
    }
    Ok(out)
}

pub async fn auth(cmd: AuthCommand, client: &Client, format: Format) -> CliResult {
    match cmd {
        AuthCommand::Cert(CertCommand::Role(CertRole::Write {
            name,
            ca,
            allowed_common_names,
            allowed_dns_sans,
            token,
        })) => {
            let role = proto::CertRole {
                name: name.clone(),
                ca_pem: read_file(&ca, "CA certificate")?,
                allowed_common_names,
                allowed_dns_sans,
                token: token.into_proto()?,
            };
            rpc!(client, auth.write_cert_role(role)).await?;
            println!("cert role {name} written");
        }
        AuthCommand::Cert(CertCommand::Role(CertRole::Admin(a))) => {
            return role_admin(proto::AuthMethod::Cert, a, client, format).await
        }
        AuthCommand::Jwt(JwtCommand::Config { pem_keys, jwks, bound_issuer }) => {
            let config = proto::JwtConfig {
                pem_keys: pem_keys.iter().map(|p| read_file(p, "PEM key")).collect::<CliResult<_>>()?,
                jwks: jwks.map(|p| read_file(&p, "JWKS file")).transpose()?.unwrap_or_default(),
                bound_issuer,
            };
            rpc!(client, auth.write_jwt_config(config)).await?;
            println!("JWT verification keys written");
        }
        AuthCommand::Jwt(JwtCommand::Role(JwtRole::Write(w))) => {
            let JwtRoleWrite {
                name,
                bound_audiences,
                bound_subject,
                bound_claims,
                user_claim,
                allowed_algs,
                leeway,
                token,
            } = *w;
            let role = proto::JwtRole {
                name: name.clone(),
                bound_audiences,
                bound_subject,
                bound_claims: claims(bound_claims)?,
                user_claim,
                allowed_algs,
                leeway_seconds: parse_duration("--leeway", leeway.as_deref())?,
                token: token.into_proto()?,
            };
            rpc!(client, auth.write_jwt_role(role)).await?;
            println!("JWT role {name} written");
        }
        AuthCommand::Jwt(JwtCommand::Role(JwtRole::Admin(a))) => {
            return role_admin(proto::AuthMethod::Jwt, a, client, format).await
        }
    }
    Ok(())
}
