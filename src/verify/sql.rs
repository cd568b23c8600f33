//! PostgreSQL and MariaDB, checked as the site's applications use them: from the machine
//! running groundwork (which must be inside the site subnet, as the roles only admit it),
//! connect over TCP to the site address of the database host as each user of the answer file,
//! to its own database, with the generated password of the secrets file, and run `select 1`.
//!
//! No password is offered to a server that has not proven it is the one groundwork set up:
//! the certificate each role generated is read over SSH first (the host key is pinned), and
//! - PostgreSQL: TLS is required, the server must present that certificate, and the login is
//!   SCRAM-SHA-256-PLUS with channel binding (tokio-postgres refuses a cleartext or MD5
//!   password request when channel binding is required, before sending anything);
//! - MariaDB: TLS is required with that certificate as the only trusted root (its address is
//!   in the certificate); the login is mysql_native_password (a challenge), and the cleartext
//!   plugin stays disabled (mysql_async's default).

use std::sync::Arc;
use std::time::{Duration, Instant};

use mysql_async::prelude::Queryable as _;

use super::tls::{PgTls, PinnedCert, PinnedVerifier, fetch};
use super::{Outcome, Row, connect, timed};
use crate::answers::model::{Answers, Database, Host, Role};
use crate::state::{Secrets, StateDir};

/// Connect, authenticate and query.
const TIMEOUT: Duration = Duration::from_secs(8);
/// The certificate the postgresql role generates.
pub const POSTGRESQL_CERT: &str = "/etc/groundwork/postgresql/server.crt";
/// The certificate the mariadb role generates.
pub const MARIADB_CERT: &str = "/etc/mysql/tls/groundwork.crt";

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

/// `select 1` on PostgreSQL as `d.user` in `d.name`, over TLS with the pinned certificate and
/// channel binding.
pub async fn postgresql_select_1(
    host: &Host,
    d: &Database,
    password: &str,
    pin: &PinnedCert,
) -> Result<String, String> {
    let verifier = PinnedVerifier::new(Some(pin.clone()), false);
    let mut cfg = tokio_postgres::Config::new();
    cfg.host(host.address.to_string())
        .port(5432)
        .user(&d.user)
        .password(password)
        .dbname(&d.name)
        .application_name("groundwork verify")
        .ssl_mode(tokio_postgres::config::SslMode::Require)
        .channel_binding(tokio_postgres::config::ChannelBinding::Require)
        .connect_timeout(TIMEOUT);
    let (client, conn) = cfg.connect(PgTls::new(&verifier)?).await.map_err(|e| {
        let to = format!("{}:5432", host.address);
        match verifier.refused() {
            Some(r) => format!("{to}: the server presented {}: {}; no password was sent", r.presented, r.why),
            None if pg_error(&e).contains("channel binding") => format!(
                "{to} as {}: the server did not offer SCRAM with channel binding over TLS ({}); no password was sent",
                d.user,
                pg_error(&e)
            ),
            None => format!("connect to {to} as {}: {}", d.user, pg_error(&e)),
        }
    })?;
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
        Ok(format!(
            "select 1 = 1 as {} in {} (PostgreSQL {version}; TLS, {}; SCRAM-SHA-256-PLUS)",
            d.user,
            d.name,
            verifier.describe()
        ))
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

/// `select 1` on MariaDB as `d.user` in `d.name`, over TLS with the pinned certificate as the
/// only trusted root.
pub async fn mariadb_select_1(
    host: &Host,
    d: &Database,
    password: &str,
    pin: &PinnedCert,
) -> Result<String, String> {
    let ssl = mysql_async::SslOpts::default()
        .with_root_certs(vec![pin.pem.clone().into()])
        .with_disable_built_in_roots(true);
    let opts = mysql_async::OptsBuilder::default()
        .ip_or_hostname(host.address.to_string())
        .tcp_port(3306)
        .prefer_socket(false)
        .ssl_opts(Some(ssl))
        .user(Some(d.user.clone()))
        .pass(Some(password.to_string()))
        .db_name(Some(d.name.clone()))
        .stmt_cache_size(0);
    let mut conn = mysql_async::Conn::new(opts).await.map_err(|e| {
        use mysql_async::{DriverError, Error};
        let to = format!("{}:3306", host.address);
        match &e {
            Error::Driver(DriverError::NoClientSslFlagFromServer) => format!("{to} does not offer TLS; no password was sent"),
            Error::Driver(DriverError::CleartextPluginDisabled) => {
                format!("{to} asked for the password in clear (mysql_clear_password): refused")
            }
            Error::Io(_) if e.to_string().to_lowercase().contains("certificate") => format!(
                "{to}: TLS refused, the server's certificate is not {} from {} ({e}); no password was sent",
                pin.fingerprint(),
                pin.source
            ),
            _ => format!("connect to {to} as {}: {e}", d.user),
        }
    })?;
    let result = async {
        let one: Option<i64> = conn.query_first("SELECT 1").await.map_err(|e| format!("SELECT 1: {e}"))?;
        let me: Option<String> = conn.query_first("SELECT CURRENT_USER()").await.unwrap_or(None);
        if one != Some(1) {
            return Err(format!("SELECT 1 returned {one:?}"));
        }
        let (ma, mi, pa) = conn.server_version();
        Ok(format!(
            "SELECT 1 = 1 as {} in {} (MariaDB {ma}.{mi}.{pa}; TLS, certificate pinned: {} from {})",
            me.unwrap_or_else(|| d.user.clone()),
            d.name,
            pin.fingerprint(),
            pin.source
        ))
    }
    .await;
    let _ = conn.disconnect().await;
    result
}

/// The certificate at `path` on `host`, read over SSH.
async fn read_pin(host: &Host, state: &StateDir, path: &str) -> Result<PinnedCert, String> {
    let session = connect(host, state).await?;
    let pin = fetch(&session, &host.name, path).await;
    session.close().await;
    pin
}

/// One row per database of `engine` in the answers (none without the role), each connecting
/// as the database's user with `select` and running SELECT 1, trusting only the certificate
/// at `cert` on the host.
async fn per_database<'a, F, Fut>(
    a: &'a Answers,
    secrets: &'a Secrets,
    state: &'a StateDir,
    role: Role,
    dbs: &'a [Database],
    (check, cert): (&'static str, &'static str),
    select: F,
) -> Vec<Row>
where
    F: Fn(&'a Host, &'a Database, &'a str, Arc<PinnedCert>) -> Fut,
    Fut: std::future::Future<Output = Result<String, String>>,
{
    let engine = role.as_str();
    let Some((_, host)) = a.hosts_with(role).next() else {
        return Vec::new();
    };
    if dbs.is_empty() {
        return vec![Row::new(engine, &host.name, check, Outcome::Skip, "no databases in the answers", Duration::ZERO)];
    }
    let t = Instant::now();
    let pin = tokio::time::timeout(TIMEOUT, read_pin(host, state, cert))
        .await
        .unwrap_or_else(|_| Err(format!("ssh to {}: no answer within {} s", host.name, TIMEOUT.as_secs())))
        .map(Arc::new)
        .map_err(|e| format!("not connecting: the certificate groundwork generated could not be read, so no server can be trusted ({e})"));
    let pin_took = t.elapsed();
    let (select, pin) = (&select, &pin);
    let checks = dbs.iter().map(|d| async move {
        let (r, took) = timed(within(async {
            let pin = pin.clone()?;
            let pw = password(secrets, engine, &d.user)?;
            select(host, d, pw, pin).await
        }))
        .await;
        Row::from_result(
            engine,
            &host.name,
            format!("{}@{} {check}", d.user, d.name),
            r,
            took + pin_took,
        )
    });
    futures::future::join_all(checks).await
}

/// One row per PostgreSQL database of the answers (none without the postgresql role).
pub async fn verify_postgresql(a: &Answers, secrets: &Secrets, state: &StateDir) -> Vec<Row> {
    per_database(
        a,
        secrets,
        state,
        Role::Postgresql,
        &a.databases.postgresql,
        ("select 1", POSTGRESQL_CERT),
        |h, d, pw, pin| async move { postgresql_select_1(h, d, pw, &pin).await },
    )
    .await
}

/// One row per MariaDB database of the answers (none without the mariadb role).
pub async fn verify_mariadb(a: &Answers, secrets: &Secrets, state: &StateDir) -> Vec<Row> {
    per_database(
        a,
        secrets,
        state,
        Role::Mariadb,
        &a.databases.mariadb,
        ("SELECT 1", MARIADB_CERT),
        |h, d, pw, pin| async move { mariadb_select_1(h, d, pw, &pin).await },
    )
    .await
}

/// PostgreSQL and MariaDB checks, concurrently.
pub async fn verify(a: &Answers, secrets: &Secrets, state: &StateDir) -> Vec<Row> {
    let (mut rows, maria) = tokio::join!(
        verify_postgresql(a, secrets, state),
        verify_mariadb(a, secrets, state)
    );
    rows.extend(maria);
    rows
}
