//! PostgreSQL and MariaDB, checked as the site's applications use them: from the machine
//! running groundwork (which must be inside the site subnet, as the roles only admit it),
//! connect over TCP to the site address of the database host as each user of the answer file,
//! to its own database, with the generated password of the secrets file, and run `select 1`.
//!
//! PostgreSQL authenticates with SCRAM-SHA-256 (the password never crosses the wire);
//! MariaDB with mysql_native_password (a challenge, no password on the wire either).

use std::time::Duration;

use mysql_async::prelude::Queryable as _;

use super::{Outcome, Row, timed};
use crate::answers::model::{Answers, Database, Host, Role};
use crate::state::Secrets;

/// Connect, authenticate and query.
const TIMEOUT: Duration = Duration::from_secs(8);

async fn within(f: impl std::future::Future<Output = Result<String, String>>) -> Result<String, String> {
    tokio::time::timeout(TIMEOUT, f)
        .await
        .unwrap_or_else(|_| Err(format!("no answer within {} s", TIMEOUT.as_secs())))
}

fn password<'s>(secrets: &'s Secrets, engine: &str, user: &str) -> Result<&'s str, String> {
    secrets
        .get(engine, user)
        .ok_or_else(|| format!("no password for {user} in the secrets file ([{engine}] {user}; run apply first)"))
}

/// `select 1` on PostgreSQL as `d.user` in `d.name`.
pub async fn postgresql_select_1(host: &Host, d: &Database, password: &str) -> Result<String, String> {
    let mut cfg = tokio_postgres::Config::new();
    cfg.host(host.address.to_string())
        .port(5432)
        .user(&d.user)
        .password(password)
        .dbname(&d.name)
        .application_name("groundwork verify")
        .connect_timeout(TIMEOUT);
    let (client, conn) = cfg
        .connect(tokio_postgres::NoTls)
        .await
        .map_err(|e| format!("connect to {}:5432 as {}: {}", host.address, d.user, pg_error(&e)))?;
    let driver = tokio::spawn(conn);
    let result = async {
        let one: i32 = client
            .query_one("select 1", &[])
            .await
            .map_err(|e| format!("select 1: {}", pg_error(&e)))?
            .get(0);
        let version: String = client
            .query_one("show server_version", &[])
            .await
            .map(|r| r.get(0))
            .unwrap_or_default();
        if one != 1 {
            return Err(format!("select 1 returned {one}"));
        }
        let version = version.split_whitespace().next().unwrap_or("").to_string();
        Ok(format!("select 1 = 1 as {} in {} (PostgreSQL {version}, scram-sha-256)", d.user, d.name))
    }
    .await;
    drop(client);
    let _ = driver.await;
    result
}

/// The server's message (e.g. `password authentication failed for user "x"`), not only
/// "db error".
fn pg_error(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("{}: {}", db.severity(), db.message()),
        None => {
            let mut s = e.to_string();
            let mut src = std::error::Error::source(e);
            while let Some(inner) = src {
                s.push_str(&format!(": {inner}"));
                src = inner.source();
            }
            s
        }
    }
}

/// `select 1` on MariaDB as `d.user` in `d.name`.
pub async fn mariadb_select_1(host: &Host, d: &Database, password: &str) -> Result<String, String> {
    let opts = mysql_async::OptsBuilder::default()
        .ip_or_hostname(host.address.to_string())
        .tcp_port(3306)
        .prefer_socket(false)
        .user(Some(d.user.clone()))
        .pass(Some(password.to_string()))
        .db_name(Some(d.name.clone()))
        .stmt_cache_size(0);
    let mut conn = mysql_async::Conn::new(opts)
        .await
        .map_err(|e| format!("connect to {}:3306 as {}: {e}", host.address, d.user))?;
    let result = async {
        let one: Option<i64> = conn.query_first("SELECT 1").await.map_err(|e| format!("SELECT 1: {e}"))?;
        let me: Option<String> = conn.query_first("SELECT CURRENT_USER()").await.unwrap_or(None);
        if one != Some(1) {
            return Err(format!("SELECT 1 returned {one:?}"));
        }
        let (ma, mi, pa) = conn.server_version();
        Ok(format!(
            "SELECT 1 = 1 as {} in {} (MariaDB {ma}.{mi}.{pa})",
            me.unwrap_or_else(|| d.user.clone()),
            d.name
        ))
    }
    .await;
    let _ = conn.disconnect().await;
    result
}

/// One row per database of `engine` in the answers (none without the role), each connecting
/// as the database's user with `select` and running SELECT 1.
async fn per_database<'a, F, Fut>(
    a: &'a Answers,
    secrets: &'a Secrets,
    role: Role,
    dbs: &'a [Database],
    check: &'static str,
    select: F,
) -> Vec<Row>
where
    F: Fn(&'a Host, &'a Database, &'a str) -> Fut,
    Fut: std::future::Future<Output = Result<String, String>>,
{
    let engine = role.as_str();
    let Some((_, host)) = a.hosts_with(role).next() else {
        return Vec::new();
    };
    if dbs.is_empty() {
        return vec![Row::new(engine, &host.name, check, Outcome::Skip, "no databases in the answers", Duration::ZERO)];
    }
    let select = &select;
    let checks = dbs.iter().map(|d| async move {
        let (r, took) = timed(within(async {
            let pw = password(secrets, engine, &d.user)?;
            select(host, d, pw).await
        }))
        .await;
        Row::from_result(engine, &host.name, format!("{}@{} {check}", d.user, d.name), r, took)
    });
    futures::future::join_all(checks).await
}

/// One row per PostgreSQL database of the answers (none without the postgresql role).
pub async fn verify_postgresql(a: &Answers, secrets: &Secrets) -> Vec<Row> {
    per_database(a, secrets, Role::Postgresql, &a.databases.postgresql, "select 1", postgresql_select_1).await
}

/// One row per MariaDB database of the answers (none without the mariadb role).
pub async fn verify_mariadb(a: &Answers, secrets: &Secrets) -> Vec<Row> {
    per_database(a, secrets, Role::Mariadb, &a.databases.mariadb, "SELECT 1", mariadb_select_1).await
}

/// PostgreSQL and MariaDB checks, concurrently.
pub async fn verify(a: &Answers, secrets: &Secrets) -> Vec<Row> {
    let (mut rows, maria) = tokio::join!(verify_postgresql(a, secrets), verify_mariadb(a, secrets));
    rows.extend(maria);
    rows
}
