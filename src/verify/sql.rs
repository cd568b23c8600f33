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
use super::{Cause, Failure, Row, connect, timed};
use crate::answers::model::{Answers, Database, Host, Role};
use crate::state::{Secrets, StateDir};

/// Connect, authenticate and query.
const TIMEOUT: Duration = Duration::from_secs(8);
/// The certificate the postgresql role generates.
pub const POSTGRESQL_CERT: &str = "/etc/groundwork/postgresql/server.crt";
/// The certificate the mariadb role generates.
pub const MARIADB_CERT: &str = "/etc/mysql/tls/groundwork.crt";

async fn within(f: impl std::future::Future<Output = Result<String, Failure>>) -> Result<String, Failure> {
    tokio::time::timeout(TIMEOUT, f)
        .await
        .unwrap_or_else(|_| Err(Failure::timeout(format!("no answer within {} s", TIMEOUT.as_secs()))))
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
) -> Result<String, Failure> {
    let verifier = PinnedVerifier::new(Some(pin.clone()), false);
    let (client, conn) = pg_connect(&host.address.to_string(), 5432, &d.user, &d.name, password, &verifier).await?;
    let driver = tokio::spawn(conn);
    let result = async {
        let one: i32 = client.query_one("select 1", &[]).await.map_err(|e| pg_failure(&e).prefixed("select 1"))?.get(0);
        let version: String = client.query_one("show server_version", &[]).await.map(|r| r.get(0)).unwrap_or_default();
        if one != 1 {
            return Err(Failure::mismatch(format!("select 1 returned {one}")));
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

type PgConnection = tokio_postgres::Connection<tokio_postgres::Socket, super::tls::PgTlsStream<tokio_postgres::Socket>>;

/// Logs in over TLS trusting only `verifier`, with SCRAM channel binding required: a server
/// that asks for the password in clear or as MD5, or offers SCRAM without channel binding, is
/// refused before anything is sent. The error says which.
async fn pg_connect(
    address: &str,
    port: u16,
    user: &str,
    dbname: &str,
    password: &str,
    verifier: &Arc<PinnedVerifier>,
) -> Result<(tokio_postgres::Client, PgConnection), Failure> {
    let mut cfg = tokio_postgres::Config::new();
    cfg.host(address)
        .port(port)
        .user(user)
        .password(password)
        .dbname(dbname)
        .application_name("groundwork verify")
        .ssl_mode(tokio_postgres::config::SslMode::Require)
        .channel_binding(tokio_postgres::config::ChannelBinding::Require)
        .connect_timeout(TIMEOUT);
    cfg.connect(PgTls::new(verifier)?).await.map_err(|e| {
        let to = format!("{address}:{port}");
        match verifier.refused() {
            Some(r) => {
                Failure::untrusted(format!("{to}: the server presented {}: {}; no password was sent", r.presented, r.why))
            }
            None if pg_error(&e).contains("channel binding") => Failure::mismatch(format!(
                "{to} as {user}: the server did not offer SCRAM with channel binding over TLS ({}); no password was sent",
                pg_error(&e)
            )),
            None => pg_failure(&e).prefixed(format!("connect to {to} as {user}")),
        }
    })
}

/// A tokio-postgres error as a failed check: a login the server refused (SQLSTATE class 28:
/// password, pg_hba), a server without TLS, a connect that timed out, or else an error.
fn pg_failure(e: &tokio_postgres::Error) -> Failure {
    let said = pg_error(e);
    let timed_out = std::iter::successors(std::error::Error::source(e), |inner| inner.source()).any(|inner| {
        inner.downcast_ref::<std::io::Error>().is_some_and(|io| io.kind() == std::io::ErrorKind::TimedOut)
    });
    let cause = if e.code().is_some_and(|c| c.code().starts_with("28")) {
        Cause::Refused
    } else if said.contains("server does not support TLS") {
        Cause::Mismatch
    } else if timed_out {
        Cause::Timeout
    } else {
        Cause::Error
    };
    Failure::new(cause, said)
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
pub async fn mariadb_select_1(host: &Host, d: &Database, password: &str, pin: &PinnedCert) -> Result<String, Failure> {
    let mut conn = mariadb_connect(&host.address.to_string(), 3306, &d.user, &d.name, password, pin).await?;
    let result = async {
        let one: Option<i64> =
            conn.query_first("SELECT 1").await.map_err(|e| mariadb_failure(&e).prefixed("SELECT 1"))?;
        let me: Option<String> = conn.query_first("SELECT CURRENT_USER()").await.unwrap_or(None);
        if one != Some(1) {
            return Err(Failure::mismatch(format!("SELECT 1 returned {one:?}")));
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

/// Logs in over TLS with `pin` as the only trusted root: a server that does not offer TLS or
/// presents another certificate gets nothing (the login is sent inside TLS only).
async fn mariadb_connect(
    address: &str,
    port: u16,
    user: &str,
    db: &str,
    password: &str,
    pin: &PinnedCert,
) -> Result<mysql_async::Conn, Failure> {
    let ssl =
        mysql_async::SslOpts::default().with_root_certs(vec![pin.pem.clone().into()]).with_disable_built_in_roots(true);
    let opts = mysql_async::OptsBuilder::default()
        .ip_or_hostname(address)
        .tcp_port(port)
        .prefer_socket(false)
        .ssl_opts(Some(ssl))
        .user(Some(user))
        .pass(Some(password))
        .db_name(Some(db))
        .stmt_cache_size(0);
    mysql_async::Conn::new(opts).await.map_err(|e| {
        use mysql_async::{DriverError, Error};
        let to = format!("{address}:{port}");
        match &e {
            Error::Driver(DriverError::NoClientSslFlagFromServer) => {
                Failure::mismatch(format!("{to} does not offer TLS; no password was sent"))
            }
            Error::Driver(DriverError::CleartextPluginDisabled) => {
                Failure::mismatch(format!("{to} asked for the password in clear (mysql_clear_password): refused"))
            }
            Error::Io(_) if e.to_string().to_lowercase().contains("certificate") => Failure::untrusted(format!(
                "{to}: TLS refused, the server's certificate is not {} from {} ({e}); no password was sent",
                pin.fingerprint(),
                pin.source
            )),
            _ => mariadb_failure(&e).prefixed(format!("connect to {to} as {user}")),
        }
    })
}

/// A mysql_async error as a failed check: the server refusing the login or the database
/// (1044 database, 1045 password, 1130 host, 1698 no password), or else an error.
fn mariadb_failure(e: &mysql_async::Error) -> Failure {
    match e {
        mysql_async::Error::Server(s) if matches!(s.code, 1044 | 1045 | 1130 | 1698) => Failure::refused(e.to_string()),
        _ => Failure::error(e.to_string()),
    }
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
    Fut: std::future::Future<Output = Result<String, Failure>>,
{
    let engine = role.as_str();
    let Some((_, host)) = a.hosts_with(role).next() else {
        return Vec::new();
    };
    if dbs.is_empty() {
        return vec![Row::skipped(engine, &host.name, check, "no databases in the answers", Duration::ZERO)];
    }
    let t = Instant::now();
    let pin = tokio::time::timeout(TIMEOUT, read_pin(host, state, cert))
        .await
        .unwrap_or_else(|_| Err(format!("ssh to {}: no answer within {} s", host.name, TIMEOUT.as_secs())))
        .map(Arc::new)
        .map_err(|e| Failure::untrusted(format!("not connecting: the certificate groundwork generated could not be read, so no server can be trusted ({e})")));
    let pin_took = t.elapsed();
    let (select, pin) = (&select, &pin);
    let checks = dbs.iter().map(|d| async move {
        let (r, took) = timed(within(async {
            let pin = pin.clone()?;
            let pw = password(secrets, engine, &d.user)?;
            select(host, d, pw, pin).await
        }))
        .await;
        Row::from_result(engine, &host.name, format!("{}@{} {check}", d.user, d.name), r, took + pin_took)
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
    let (mut rows, maria) = tokio::join!(verify_postgresql(a, secrets, state), verify_mariadb(a, secrets, state));
    rows.extend(maria);
    rows
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWriteExt as _};

    const CERT_A: &str = include_str!("testdata/a.crt");
    const KEY_A: &str = include_str!("testdata/a.key");
    const CERT_B: &str = include_str!("testdata/b.crt");
    const PASSWORD: &str = "the-secret-password";

    /// How a fake PostgreSQL server answers.
    #[derive(Clone, Copy)]
    enum Server {
        /// Refuses TLS ('N' to the SSLRequest).
        NoTls,
        /// TLS with certificate A, then this authentication request.
        Asks(&'static [u8]),
    }

    async fn message(r: &mut (impl AsyncRead + Unpin)) -> Option<Vec<u8>> {
        let mut len = [0u8; 4];
        r.read_exact(&mut len).await.ok()?;
        let mut body = vec![0u8; (u32::from_be_bytes(len) as usize).saturating_sub(4)];
        r.read_exact(&mut body).await.ok()?;
        Some(body)
    }

    /// Everything the client sent after its startup message, as (type, body) messages.
    async fn fake_pg(server: Server) -> (u16, tokio::task::JoinHandle<Vec<(u8, Vec<u8>)>>) {
        use rustls::pki_types::pem::PemObject as _;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let task = tokio::spawn(async move {
            let (mut tcp, _) = listener.accept().await.unwrap();
            let _ssl_request = message(&mut tcp).await.unwrap();
            let auth = match server {
                Server::NoTls => {
                    tcp.write_all(b"N").await.unwrap();
                    let mut rest = Vec::new();
                    let _ = tcp.read_to_end(&mut rest).await;
                    return if rest.is_empty() { Vec::new() } else { vec![(b'?', rest)] };
                }
                Server::Asks(auth) => auth,
            };
            tcp.write_all(b"S").await.unwrap();
            let chain = vec![rustls::pki_types::CertificateDer::from_pem_slice(CERT_A.as_bytes()).unwrap()];
            let key = rustls::pki_types::PrivateKeyDer::from_pem_slice(KEY_A.as_bytes()).unwrap();
            let config =
                rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                    .with_safe_default_protocol_versions()
                    .unwrap()
                    .with_no_client_auth()
                    .with_single_cert(chain, key)
                    .unwrap();
            let Ok(mut tls) = tokio_rustls::TlsAcceptor::from(Arc::new(config)).accept(tcp).await else {
                return Vec::new();
            };
            let _startup = message(&mut tls).await.unwrap();
            tls.write_all(auth).await.unwrap();
            tls.flush().await.unwrap();
            let mut seen = Vec::new();
            loop {
                let mut t = [0u8; 1];
                if tls.read_exact(&mut t).await.is_err() {
                    break;
                }
                match message(&mut tls).await {
                    // An answer to the authentication request: recorded, then hang up.
                    Some(body) if t[0] == b'p' => {
                        seen.push((t[0], body));
                        break;
                    }
                    Some(body) => seen.push((t[0], body)),
                    None => break,
                }
            }
            seen
        });
        (port, task)
    }

    async fn login(server: Server, pin: &str) -> (Result<(), Failure>, Vec<(u8, Vec<u8>)>) {
        let (port, task) = fake_pg(server).await;
        let pin = PinnedCert::from_pem(pin.as_bytes(), "db:/server.crt").unwrap();
        let verifier = PinnedVerifier::new(Some(pin), false);
        let r = pg_connect("127.0.0.1", port, "app", "app", PASSWORD, &verifier).await.map(|_| ());
        let seen = tokio::time::timeout(Duration::from_secs(5), task).await.unwrap().unwrap();
        (r, seen)
    }

    fn no_password(seen: &[(u8, Vec<u8>)]) {
        // 'p': PasswordMessage, SASLInitialResponse; nothing else may carry a secret either.
        assert!(seen.iter().all(|(t, _)| *t != b'p'), "the client answered the authentication request: {seen:?}");
        assert!(!seen.iter().any(|(_, b)| b.windows(PASSWORD.len()).any(|w| w == PASSWORD.as_bytes())), "{seen:?}");
    }

    #[tokio::test]
    async fn postgresql_never_answers_a_cleartext_md5_or_unbound_scram_request() {
        let cleartext: &[u8] = b"R\0\0\0\x08\0\0\0\x03";
        let md5: &[u8] = b"R\0\0\0\x0c\0\0\0\x05salt";
        let scram_without_plus: &[u8] = b"R\0\0\0\x17\0\0\0\x0aSCRAM-SHA-256\0\0";
        for (what, auth) in
            [("cleartext", cleartext), ("md5", md5), ("SCRAM without channel binding", scram_without_plus)]
        {
            let (r, seen) = login(Server::Asks(auth), CERT_A).await;
            let e = r.expect_err(what);
            assert!(e.message.contains("channel binding") && e.message.contains("no password was sent"), "{what}: {e}");
            assert_eq!(e.cause, Cause::Mismatch, "{what}: {e}");
            no_password(&seen);
        }
        // The control: offered SCRAM-SHA-256-PLUS, the client starts the exchange (a 'p'
        // message: the recorder sees answers) with channel binding to this TLS connection.
        let plus: &[u8] = b"R\0\0\0\x1c\0\0\0\x0aSCRAM-SHA-256-PLUS\0\0";
        let (_, seen) = login(Server::Asks(plus), CERT_A).await;
        let first = seen.iter().find(|(t, _)| *t == b'p').expect("a SASLInitialResponse");
        assert!(first.1.starts_with(b"SCRAM-SHA-256-PLUS\0"), "{first:?}");
        assert!(first.1.windows(11).any(|w| w == b"p=tls-serve"), "channel binding requested: {first:?}");
    }

    /// A fake MariaDB server: its greeting (with or without CLIENT_SSL), then, when it offers
    /// TLS, a handshake with certificate B. Returns what it could read in clear and inside TLS.
    async fn fake_mariadb(offer_tls: bool) -> (u16, tokio::task::JoinHandle<(Vec<u8>, Vec<u8>)>) {
        use rustls::pki_types::pem::PemObject as _;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let task = tokio::spawn(async move {
            let (mut tcp, _) = listener.accept().await.unwrap();
            // CLIENT_LONG_PASSWORD | CONNECT_WITH_DB | PROTOCOL_41 | SECURE_CONNECTION | PLUGIN_AUTH (| SSL)
            let caps: u32 = 0x1 | 0x8 | 0x200 | 0x8000 | 0x80000 | if offer_tls { 0x800 } else { 0 };
            let mut p = vec![0x0a];
            p.extend_from_slice(b"5.5.5-10.11.6-MariaDB\0");
            p.extend_from_slice(&7u32.to_le_bytes());
            p.extend_from_slice(b"abcdefgh\0");
            p.extend_from_slice(&(caps as u16).to_le_bytes());
            p.push(45);
            p.extend_from_slice(&2u16.to_le_bytes());
            p.extend_from_slice(&((caps >> 16) as u16).to_le_bytes());
            p.push(21);
            p.extend_from_slice(&[0; 10]);
            p.extend_from_slice(b"ijklmnopqrst\0");
            p.extend_from_slice(b"mysql_native_password\0");
            let mut packet = (p.len() as u32).to_le_bytes()[..3].to_vec();
            packet.push(0);
            packet.extend_from_slice(&p);
            tcp.write_all(&packet).await.unwrap();
            if !offer_tls {
                let mut clear = Vec::new();
                let _ = tokio::time::timeout(Duration::from_secs(3), tcp.read_to_end(&mut clear)).await;
                return (clear, Vec::new());
            }
            // The SSLRequest (header and 32 bytes), then TLS with B, which the client must refuse.
            let mut clear = vec![0u8; 36];
            tcp.read_exact(&mut clear).await.unwrap();
            let chain = vec![rustls::pki_types::CertificateDer::from_pem_slice(CERT_B.as_bytes()).unwrap()];
            let key =
                rustls::pki_types::PrivateKeyDer::from_pem_slice(include_bytes!("testdata/b.key").as_slice()).unwrap();
            let config =
                rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                    .with_safe_default_protocol_versions()
                    .unwrap()
                    .with_no_client_auth()
                    .with_single_cert(chain, key)
                    .unwrap();
            let mut inside = Vec::new();
            if let Ok(mut tls) = tokio_rustls::TlsAcceptor::from(Arc::new(config)).accept(tcp).await {
                let _ = tokio::time::timeout(Duration::from_secs(3), tls.read_to_end(&mut inside)).await;
            }
            (clear, inside)
        });
        (port, task)
    }

    #[tokio::test]
    async fn mariadb_sends_no_login_without_tls_or_to_another_certificate() {
        let pin = PinnedCert::from_pem(CERT_A.as_bytes(), "db:/groundwork.crt").unwrap();
        for offer_tls in [false, true] {
            let (port, task) = fake_mariadb(offer_tls).await;
            let r = mariadb_connect("127.0.0.1", port, "app_user", "app", PASSWORD, &pin).await;
            let (clear, inside) = tokio::time::timeout(Duration::from_secs(5), task).await.unwrap().unwrap();
            let Err(e) = r else { panic!("the login must fail") };
            assert!(e.message.contains("no password was sent"), "TLS offered: {offer_tls}: {e}");
            // Without TLS the server is not what the site set up; with it, not the pinned one.
            let cause = if offer_tls { Cause::Untrusted } else { Cause::Mismatch };
            assert_eq!(e.cause, cause, "TLS offered: {offer_tls}: {e}");
            let user = b"app_user";
            assert!(!clear.windows(user.len()).any(|w| w == user), "a login in clear: {clear:?}");
            assert!(inside.is_empty(), "the impostor received {inside:?}");
        }
        // The control: pinned to B, the client logs in inside TLS, and the recorder sees it.
        let b = PinnedCert::from_pem(CERT_B.as_bytes(), "db:/groundwork.crt").unwrap();
        let (port, task) = fake_mariadb(true).await;
        let r = mariadb_connect("127.0.0.1", port, "app_user", "app", PASSWORD, &b).await;
        let (_, inside) = tokio::time::timeout(Duration::from_secs(5), task).await.unwrap().unwrap();
        assert!(r.is_err(), "the fake server never completes a login");
        assert!(inside.windows(8).any(|w| w == b"app_user"), "{inside:?}");
    }

    #[tokio::test]
    async fn postgresql_without_tls_or_with_another_certificate_gets_nothing() {
        let (r, seen) = login(Server::NoTls, CERT_A).await;
        let e = r.unwrap_err();
        assert_eq!(e.cause, Cause::Mismatch, "{e}");
        assert!(e.message.contains("server does not support TLS"), "{e}");
        assert!(seen.is_empty(), "{seen:?}");
        let cleartext: &[u8] = b"R\0\0\0\x08\0\0\0\x03";
        let (r, seen) = login(Server::Asks(cleartext), CERT_B).await;
        let e = r.unwrap_err();
        assert!(
            e.message.contains("not the certificate groundwork generated")
                && e.message.contains("no password was sent"),
            "{e}"
        );
        assert_eq!(e.cause, Cause::Untrusted, "{e}");
        assert!(seen.is_empty(), "{seen:?}");
    }

    /// The pinned server says the password is wrong (SQLSTATE 28P01): the login is refused.
    #[tokio::test]
    async fn postgresql_login_refused_by_the_server_is_refused() {
        let mut fields = Vec::new();
        for (code, value) in
            [(b'S', "FATAL"), (b'C', "28P01"), (b'M', "password authentication failed for user \"app\"")]
        {
            fields.push(code);
            fields.extend_from_slice(value.as_bytes());
            fields.push(0);
        }
        fields.push(0);
        let mut error_response = vec![b'E'];
        error_response.extend_from_slice(&(fields.len() as u32 + 4).to_be_bytes());
        error_response.extend_from_slice(&fields);
        let (r, seen) = login(Server::Asks(Box::leak(error_response.into_boxed_slice())), CERT_A).await;
        let e = r.unwrap_err();
        assert_eq!(e.cause, Cause::Refused, "{e}");
        assert!(e.message.ends_with("as app: FATAL: password authentication failed for user \"app\""), "{e}");
        no_password(&seen);
    }

    /// Nobody listens: an error on the way, not a verdict about the server.
    #[tokio::test]
    async fn postgresql_with_nobody_listening_is_an_error() {
        let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = closed.local_addr().unwrap().port();
        drop(closed);
        let pin = PinnedCert::from_pem(CERT_A.as_bytes(), "db:/server.crt").unwrap();
        let verifier = PinnedVerifier::new(Some(pin), false);
        let e = pg_connect("127.0.0.1", port, "app", "app", PASSWORD, &verifier).await.map(|_| ()).unwrap_err();
        assert_eq!(e.cause, Cause::Error, "{e}");
        assert!(e.message.starts_with(&format!("connect to 127.0.0.1:{port} as app: ")), "{e}");
    }
}
