//! The PostgreSQL the rotation tests use: `scripts/postgres-setup.sh` starts it on
//! 127.0.0.1:5432 with the admin role below.

use std::time::Duration;

pub const PG_ADMIN: (&str, &str) = ("arca_test_admin", "arca-test-admin");

pub async fn pg_connect(user: &str, password: &str) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
    let mut config = tokio_postgres::Config::new();
    config.host("127.0.0.1").port(5432).dbname("postgres").user(user).password(password);
    config.connect_timeout(Duration::from_secs(5));
    let (client, conn) = config.connect(tokio_postgres::NoTls).await?;
    tokio::spawn(conn);
    Ok(client)
}

pub async fn pg_role(name: &str, password: &str) {
    let admin = pg_connect(PG_ADMIN.0, PG_ADMIN.1)
        .await
        .expect("PostgreSQL on 127.0.0.1:5432 with role arca_test_admin: run scripts/postgres-setup.sh");
    admin.batch_execute(&format!("DROP ROLE IF EXISTS {name}")).await.unwrap();
    admin.batch_execute(&format!("CREATE ROLE {name} LOGIN PASSWORD '{password}'")).await.unwrap();
}

pub fn pg_error(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("{}: {}", db.code().code(), db.message()),
        None => e.to_string(),
    }
}
