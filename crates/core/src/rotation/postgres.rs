//! The `postgres` rotator: changes a PostgreSQL role's password over an admin connection whose
//! credentials are themselves a secret in Arca.
//!
//! Parameters: `admin` (the KV path of the admin credential: fields `username`, `password`),
//! `host` (default `127.0.0.1`), `port` (5432), `dbname` (`postgres`), `strategy` (`single` or
//! `alternating`), `username` (single) or `usernames` (`a,b`, alternating), `tls`
//! (`disable` or `verify-full`) with `ca` (the PEM the server certificate must chain to), and
//! the password policy of the `random` rotator (`length`, `classes`, `exclude`).
//!
//! * single user: the role's password changes in place; between `set` and `finish` only the
//!   pending password works (clients retry with a refreshed secret).
//! * alternating users: two roles take turns; each rotation changes the role that is *not*
//!   current, so the previous credential keeps working until the next rotation.
//!
//! The password reaches PostgreSQL only as a SCRAM-SHA-256 verifier computed here, so the
//! plaintext never appears in the server's statement log or `pg_stat_activity`.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use tokio_postgres::config::SslMode;
use tokio_postgres::NoTls;

use super::random;
use crate::{Error, Result, SecretData};

const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

enum Strategy {
    Single(String),
    Alternating([String; 2]),
}

fn strategy(params: &BTreeMap<String, String>) -> Result<Strategy> {
    let bad = |m: &str| Error::InvalidArgument(format!("postgres rotator: {m}"));
    match params.get("strategy").map(String::as_str).unwrap_or("single") {
        "single" => Ok(Strategy::Single(params.get("username").cloned().ok_or_else(|| bad("'username' is required"))?)),
        "alternating" => {
            let users: Vec<String> = params
                .get("usernames")
                .ok_or_else(|| bad("'usernames' (two roles, comma-separated) is required"))?
                .split(',')
                .map(|u| u.trim().to_string())
                .collect();
            match <[String; 2]>::try_from(users) {
                Ok([a, b]) if !a.is_empty() && !b.is_empty() && a != b => Ok(Strategy::Alternating([a, b])),
                _ => Err(bad("'usernames' must name two different roles, like 'app_a,app_b'")),
            }
        }
        other => Err(bad(&format!("unknown strategy {other:?}: use single or alternating"))),
    }
}

/// Checks the parameters when a rotation is configured, so mistakes show up then and not at
/// the first scheduled run.
pub(crate) fn validate(params: &BTreeMap<String, String>) -> Result<()> {
    strategy(params)?;
    random::Policy::from_params(params)?;
    if !params.contains_key("admin") {
        return Err(Error::InvalidArgument(
            "postgres rotator: 'admin' (the KV path of the admin credential) is required".into(),
        ));
    }
    tls(params)?;
    Ok(())
}

/// The new credential: a fresh password for the role this rotation changes.
pub(crate) fn create(params: &BTreeMap<String, String>, current: Option<&SecretData>) -> Result<SecretData> {
    let user = match strategy(params)? {
        Strategy::Single(user) => user,
        Strategy::Alternating([a, b]) => {
            // The role that is not current; the first rotation starts with the first role.
            if current.and_then(|c| c.0.get("username")) == Some(&a) {
                b
            } else {
                a
            }
        }
    };
    let mut next = current.cloned().unwrap_or_default();
    let policy = random::Policy::from_params(params)?;
    next.0.insert("username".into(), user);
    next.0.insert("password".into(), policy.generate()?.to_string());
    Ok(next)
}

/// Applies the pending password to its role, as the admin.
pub(crate) async fn set(params: &BTreeMap<String, String>, admin: &SecretData, pending: &SecretData) -> Result<()> {
    let (user, password) = credential(pending, "the pending value")?;
    let (admin_user, admin_password) = credential(admin, "the admin credential")?;
    let client = connect(params, admin_user, admin_password).await?;
    let verifier = postgres_protocol::password::scram_sha_256(password.as_bytes());
    // Utility statements take no bind parameters: the role is quoted as an identifier and the
    // verifier (base64 and `$`, no quotes) as a literal.
    let sql = format!("ALTER ROLE {} WITH LOGIN PASSWORD '{verifier}'", quote_ident(user));
    client.batch_execute(&sql).await.map_err(|e| failed(&format!("ALTER ROLE {user}"), &e))?;
    Ok(())
}

/// Proves the pending credential works: logs in with it and runs a query.
pub(crate) async fn test(params: &BTreeMap<String, String>, pending: &SecretData) -> Result<()> {
    let (user, password) = credential(pending, "the pending value")?;
    let client = connect(params, user, password).await?;
    client.simple_query("SELECT 1").await.map_err(|e| failed("test query", &e))?;
    Ok(())
}

fn credential<'a>(data: &'a SecretData, what: &str) -> Result<(&'a str, &'a str)> {
    match (data.0.get("username"), data.0.get("password")) {
        (Some(u), Some(p)) => Ok((u, p)),
        _ => Err(Error::Rotation(format!("{what} needs the fields 'username' and 'password'"))),
    }
}

fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

fn failed(what: &str, e: &tokio_postgres::Error) -> Error {
    // tokio-postgres errors carry the server's message and code, never the password sent.
    Error::Rotation(format!("postgres {what}: {e}"))
}

fn tls(params: &BTreeMap<String, String>) -> Result<Option<rustls::ClientConfig>> {
    match params.get("tls").map(String::as_str).unwrap_or("disable") {
        "disable" => Ok(None),
        "verify-full" => {
            let pem = params
                .get("ca")
                .ok_or_else(|| Error::InvalidArgument("postgres rotator: tls=verify-full needs 'ca' (PEM)".into()))?;
            let mut roots = rustls::RootCertStore::empty();
            for cert in CertificateDer::pem_slice_iter(pem.as_bytes()) {
                let cert =
                    cert.map_err(|e| Error::InvalidArgument(format!("postgres rotator: 'ca' is not PEM: {e}")))?;
                roots
                    .add(cert)
                    .map_err(|e| Error::InvalidArgument(format!("postgres rotator: 'ca' certificate refused: {e}")))?;
            }
            let provider = Arc::new(rustls::crypto::ring::default_provider());
            let config = rustls::ClientConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .map_err(|e| Error::Internal(e.to_string()))?
                .with_root_certificates(roots)
                .with_no_client_auth();
            Ok(Some(config))
        }
        other => Err(Error::InvalidArgument(format!("postgres rotator: tls {other:?}: use disable or verify-full"))),
    }
}

async fn connect(params: &BTreeMap<String, String>, user: &str, password: &str) -> Result<tokio_postgres::Client> {
    let port = match params.get("port") {
        None => 5432,
        Some(p) => {
            p.parse().map_err(|_| Error::InvalidArgument(format!("postgres rotator: port {p:?} is not a number")))?
        }
    };
    let mut config = tokio_postgres::Config::new();
    config
        .host(params.get("host").map(String::as_str).unwrap_or("127.0.0.1"))
        .port(port)
        .dbname(params.get("dbname").map(String::as_str).unwrap_or("postgres"))
        .user(user)
        .password(password)
        .connect_timeout(CONNECT_TIMEOUT)
        .application_name("arca-rotation");
    let what = format!("login as {user}");
    let client = match tls(params)? {
        None => {
            let (client, conn) = config.connect(NoTls).await.map_err(|e| failed(&what, &e))?;
            tokio::spawn(conn);
            client
        }
        Some(tls) => {
            config.ssl_mode(SslMode::Require);
            let connector = tokio_postgres_rustls::MakeRustlsConnect::new(tls);
            let (client, conn) = config.connect(connector).await.map_err(|e| failed(&what, &e))?;
            tokio::spawn(conn);
            client
        }
    };
    Ok(client)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn alternating_takes_the_role_that_is_not_current() {
        let p = params(&[("strategy", "alternating"), ("usernames", "app_a, app_b"), ("admin", "db/admin")]);
        let first = create(&p, None).unwrap();
        assert_eq!(first.0["username"], "app_a");
        let second = create(&p, Some(&first)).unwrap();
        assert_eq!(second.0["username"], "app_b");
        assert_eq!(create(&p, Some(&second)).unwrap().0["username"], "app_a");
        assert_ne!(first.0["password"], second.0["password"]);
    }

    #[test]
    fn configuration_mistakes_are_named() {
        for (ps, expect) in [
            (vec![("admin", "a")], "'username' is required"),
            (vec![("admin", "a"), ("strategy", "alternating"), ("usernames", "x,x")], "two different roles"),
            (vec![("username", "u")], "'admin'"),
            (vec![("admin", "a"), ("username", "u"), ("tls", "verify-full")], "needs 'ca'"),
            (vec![("admin", "a"), ("username", "u"), ("strategy", "dual")], "unknown strategy"),
        ] {
            let e = validate(&params(&ps)).err().unwrap().to_string();
            assert!(e.contains(expect), "{e}");
        }
        assert_eq!(quote_ident("we\"ird"), "\"we\"\"ird\"");
    }
}
