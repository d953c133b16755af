//! An application that queries PostgreSQL with credentials it reads from Arca, and keeps
//! working while Arca rotates them.
//!
//! ```text
//! ARCA_ADDR=https://127.0.0.1:8200,https://127.0.0.1:8210 \
//! ARCA_CACERT=/path/to/ca.pem ARCA_ROLE_ID=… ARCA_SECRET_ID=… \
//! cargo run --example postgres_app -- db/app
//! ```
//!
//! The secret at `db/app` holds `username` and `password` and is rotated by the `postgres`
//! rotator (`arca rotation set db/app --rotator postgres --param admin=db/admin …`). What makes
//! rotation invisible to the application:
//!
//! * the cache keeps the credentials for 30 s at most, and drops them the moment the watch
//!   reports a change under `db/` (a rotation's new version, its promotion);
//! * [`SecretCache::with_secret`] turns "password authentication failed" into one fresh read
//!   and one retry. With the single-user strategy there is a moment when the database already
//!   has the new password and `current` still names the old one; the retry then uses the
//!   rotation's `pending` version. With the alternating-users strategy, the previous user stays
//!   valid until the next rotation, so the retry is never needed.

use std::time::Duration;

use arca_client::{Auth, CacheConfig, Client, SecretCache, UseError, WithSecretError};
use tokio_postgres::error::SqlState;

fn env(name: &str) -> Result<String, String> {
    std::env::var(name).map_err(|_| format!("set {name}"))
}

/// One query on a fresh connection (a pool would validate credentials the same way when it
/// opens a connection).
async fn count_tables(cache: &SecretCache, path: &str) -> Result<i64, WithSecretError<tokio_postgres::Error>> {
    cache
        .with_secret(path, |secret| async move {
            let mut config = tokio_postgres::Config::new();
            config
                .host(secret.get("host").unwrap_or("127.0.0.1"))
                .port(secret.get("port").and_then(|p| p.parse().ok()).unwrap_or(5432))
                .dbname(secret.get("dbname").unwrap_or("postgres"))
                .user(secret.get("username").unwrap_or_default())
                .password(secret.get("password").unwrap_or_default())
                .connect_timeout(Duration::from_secs(5));
            let (db, connection) = match config.connect(tokio_postgres::NoTls).await {
                Ok(pair) => pair,
                // The one error that means "your credentials are stale": refresh and retry.
                Err(e) if e.code() == Some(&SqlState::INVALID_PASSWORD) => return Err(UseError::RetryWithRefresh(e)),
                Err(e) => return Err(UseError::Fail(e)),
            };
            tokio::spawn(connection);
            let row = db.query_one("SELECT count(*) FROM pg_catalog.pg_tables", &[]).await.map_err(UseError::Fail)?;
            Ok(row.get::<_, i64>(0))
        })
        .await
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt().with_env_filter("arca_client=info").init();
    let path = std::env::args().nth(1).unwrap_or_else(|| "db/app".into());
    let client = Client::builder()
        .addrs(env("ARCA_ADDR")?.split(','))
        .ca_cert_file(env("ARCA_CACERT")?)
        .auth(Auth::app_role(env("ARCA_ROLE_ID")?, env("ARCA_SECRET_ID")?))
        .build()
        .await?;
    let prefix = path.rsplit_once('/').map_or(String::new(), |(dir, _)| format!("{dir}/"));
    let cache = client.secret_cache(CacheConfig { watch: vec![prefix], ..Default::default() })?;
    let mut tick = tokio::time::interval(Duration::from_millis(200));
    for i in 0u64.. {
        tick.tick().await;
        match count_tables(&cache, &path).await {
            Ok(n) => println!("query {i}: {n} tables (credentials v{})", cache.get(&path).await?.version()),
            Err(WithSecretError::Secret(e)) => eprintln!("query {i}: cannot read {path}: {e}"),
            Err(WithSecretError::Use(e)) => eprintln!("query {i}: database error: {e}"),
        }
    }
    Ok(())
}
