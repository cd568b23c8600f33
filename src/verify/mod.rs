//! `groundwork verify`: every service checked the way a client uses it, one row per check.
//!
//! [`verify`] first checks that every host answers at all (a TCP connect to its SSH port within
//! [`REACH_TIMEOUT`]; a refused connection counts as an answer): the checks of a host that does
//! not are replaced by one failed "host reachable" row, instead of each waiting for its own
//! timeout. Then it runs what applies to the answer file ([`dns`] for the dns role, [`dhcp`] for the
//! dhcp role, [`ldap`] and [`sql`] for the directory and the databases), showing which services
//! are still being checked when stderr is a terminal, and returns rows `service / host / check / result / detail / time`
//! (a failed row also has its [`Cause`]); [`render_table`] and [`to_json`] present them. A skipped check (something that cannot be
//! tested from here, said in its detail) is not a failure; [`all_ok`] is false on any failure.

pub mod dhcp;
pub mod discover;
pub mod dns;
pub mod gitops;
pub mod k3s;
pub mod ldap;
pub mod proxmox;
pub mod sql;
pub mod tls;

use std::collections::BTreeMap;
use std::io::IsTerminal as _;
use std::net::{IpAddr, SocketAddr};

use std::sync::Mutex;
use std::time::{Duration, Instant};

use futures::future::LocalBoxFuture;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde::Serialize;

use crate::answers::model::{Answers, Host, Role};
use crate::engine::error::RunError;
use crate::engine::target_of as target;
use crate::phase::Phase;
use crate::ssh::{Session, SshOptions};
use crate::state::{Secrets, StateDir};

/// The result of one check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    Ok,
    Fail,
    /// Not testable from here; the detail says why.
    Skip,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::Fail => "FAIL",
            Outcome::Skip => "skip",
        }
    }
}

/// Why a check failed, for programs (`cause` in a --json row); the detail says it for people.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Cause {
    /// The host did not answer on its SSH port (the reach phase).
    Unreachable,
    /// The service did not answer within the time allowed.
    Timeout,
    /// It answered and refused: a bind, a login, an update, a transfer.
    Refused,
    /// It answered, but not what the site's answers expect (a record, a serial, an offer, a
    /// subnet, missing OUs, a second DHCP server...).
    Mismatch,
    /// TLS: the certificate is not the pinned/trusted one, or could not be read to pin it.
    Untrusted,
    /// Anything else on the way: I/O, SSH, a tool on the host, a secret missing locally.
    Error,
}

/// A failed check: its cause and its words.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    pub cause: Cause,
    pub message: String,
}

impl Failure {
    pub fn new(cause: Cause, message: impl Into<String>) -> Failure {
        Failure { cause, message: message.into() }
    }

    pub fn unreachable(message: impl Into<String>) -> Failure {
        Failure::new(Cause::Unreachable, message)
    }

    pub fn timeout(message: impl Into<String>) -> Failure {
        Failure::new(Cause::Timeout, message)
    }

    pub fn refused(message: impl Into<String>) -> Failure {
        Failure::new(Cause::Refused, message)
    }

    pub fn mismatch(message: impl Into<String>) -> Failure {
        Failure::new(Cause::Mismatch, message)
    }

    pub fn untrusted(message: impl Into<String>) -> Failure {
        Failure::new(Cause::Untrusted, message)
    }

    pub fn error(message: impl Into<String>) -> Failure {
        Failure::new(Cause::Error, message)
    }

    /// The same cause, said after what was being done: `{what}: {message}`.
    pub fn prefixed(self, what: impl std::fmt::Display) -> Failure {
        Failure { message: format!("{what}: {}", self.message), ..self }
    }
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

/// Helpers that only have words fail with [`Cause::Error`]; a site that knows better says so.
impl From<String> for Failure {
    fn from(message: String) -> Failure {
        Failure::error(message)
    }
}

/// One check of one service on one host. `cause` is there exactly when the check failed.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    pub service: String,
    pub host: String,
    pub check: String,
    pub result: Outcome,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cause: Option<Cause>,
    pub detail: String,
    pub ms: u64,
}

impl Row {
    /// A passed check.
    pub fn passed(
        service: &str,
        host: &str,
        check: impl Into<String>,
        detail: impl Into<String>,
        took: Duration,
    ) -> Row {
        Row {
            service: service.to_string(),
            host: host.to_string(),
            check: check.into(),
            result: Outcome::Ok,
            cause: None,
            detail: detail.into(),
            ms: u64::try_from(took.as_millis()).unwrap_or(u64::MAX),
        }
    }

    /// A check that cannot be made from here; `why` says so.
    pub fn skipped(service: &str, host: &str, check: impl Into<String>, why: impl Into<String>, took: Duration) -> Row {
        Row { result: Outcome::Skip, ..Row::passed(service, host, check, why, took) }
    }

    /// A failed check: its cause, and its message as the detail.
    pub fn failed(service: &str, host: &str, check: impl Into<String>, failure: Failure, took: Duration) -> Row {
        Row {
            result: Outcome::Fail,
            cause: Some(failure.cause),
            ..Row::passed(service, host, check, failure.message, took)
        }
    }

    /// A row from a result: `Ok(detail)` passes, `Err(failure)` fails.
    pub fn from_result(
        service: &str,
        host: &str,
        check: impl Into<String>,
        r: Result<String, Failure>,
        took: Duration,
    ) -> Row {
        match r {
            Ok(d) => Row::passed(service, host, check, d, took),
            Err(f) => Row::failed(service, host, check, f, took),
        }
    }

    pub fn ok(&self) -> bool {
        self.result != Outcome::Fail
    }
}

/// How long a host may take to answer a TCP connect to its SSH port before it counts as down.
pub const REACH_TIMEOUT: Duration = Duration::from_secs(3);

/// The hosts that do not answer, with why: no answer within [`REACH_TIMEOUT`], or an error
/// such as "no route to host". A refused connection is an answer (the host is up).
pub async fn unreachable(hosts: &[Host]) -> BTreeMap<String, String> {
    // This machine is always there (and needs no sshd).
    let probes = hosts.iter().filter(|h| !target(h).local).map(|h| async move {
        let addr = SocketAddr::new(IpAddr::V4(h.address), h.ssh_port);
        let why = match tokio::time::timeout(REACH_TIMEOUT, tokio::net::TcpStream::connect(addr)).await {
            Ok(Ok(_)) => None,
            Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionRefused => None,
            Ok(Err(e)) => Some(format!("{addr}: {e}")),
            Err(_) => Some(format!("no answer from {addr} within {} s", REACH_TIMEOUT.as_secs())),
        };
        why.map(|w| (h.name.clone(), w))
    });
    futures::future::join_all(probes).await.into_iter().flatten().collect()
}

/// A spinner on stderr naming the services still being checked (hidden unless stderr is a
/// terminal, so piped and JSON output stay clean).
struct Progress {
    bar: ProgressBar,
    pending: Mutex<Vec<&'static str>>,
}

impl Progress {
    fn start(what: &str) -> Progress {
        let bar = if std::io::stderr().is_terminal() {
            let b = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
            if let Ok(style) = ProgressStyle::with_template("{spinner} verify: {msg} ({elapsed})") {
                b.set_style(style);
            }
            b.enable_steady_tick(Duration::from_millis(120));
            b
        } else {
            ProgressBar::hidden()
        };
        bar.set_message(what.to_string());
        Progress { bar, pending: Mutex::new(Vec::new()) }
    }

    fn show(&self, pending: &[&'static str]) {
        if !pending.is_empty() {
            self.bar.set_message(format!("checking {}", pending.join(", ")));
        }
    }

    /// Runs `f`, named in the message while it runs.
    async fn track<T>(&self, service: &'static str, f: impl std::future::Future<Output = T>) -> T {
        {
            let mut p = self.pending.lock().unwrap_or_else(|e| e.into_inner());
            p.push(service);
            self.show(&p);
        }
        let v = f.await;
        let mut p = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        p.retain(|s| *s != service);
        self.show(&p);
        v
    }
}

impl Progress {
    /// Clear the spinner: the table follows.
    fn done(&self) {
        self.bar.finish_and_clear();
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.bar.finish_and_clear();
    }
}

/// The row that stands for the checks of a host that did not answer.
fn down_row(service: &str, host: &str, why: &str, took: Duration) -> Row {
    Row::failed(
        service,
        host,
        "host reachable",
        Failure::unreachable(format!("unreachable ({why}): its {service} checks were not run")),
        took,
    )
}

/// Every check that applies to the site: the phases [`Reach`] (which hosts answer at all) and
/// [`Services`] (each service's checks, concurrently). Hosts that do not answer get one "host
/// reachable" row per service instead of their checks.
pub async fn verify(a: &Answers, secrets: &Secrets, state: &StateDir) -> Vec<Row> {
    verify_only(a, secrets, state, None).await
}

/// [`verify`] of some services only (`dns`, `dhcp`, `ldap`, `postgresql`, `mariadb`, `k3s`;
/// `None`: all, with the Proxmox rows): what `rotate` and `apply --try` check.
pub async fn verify_only(a: &Answers, secrets: &Secrets, state: &StateDir, only: Option<&[&str]>) -> Vec<Row> {
    let mut site = Site {
        a,
        secrets,
        state,
        only,
        progress: Progress::start(&format!("reaching {} host(s)", a.hosts.len())),
        down: BTreeMap::new(),
        reach_took: Duration::ZERO,
        rows: Vec::new(),
        unreachable_rows: Vec::new(),
    };
    let phases: Vec<Box<dyn Phase<Site<'_>>>> = vec![Box::new(Reach), Box::new(Services)];
    // Neither phase fails: a failed check is a row.
    let _ = crate::phase::run(&phases, &mut site).await;
    let mut out = std::mem::take(&mut site.rows);
    if only.is_none() {
        out.extend(proxmox::rows(a).await);
    }
    // Unreachable hosts last, next to each other.
    out.append(&mut site.unreachable_rows);
    out
}

/// The site as `verify`'s phases see it.
pub struct Site<'v> {
    a: &'v Answers,
    secrets: &'v Secrets,
    state: &'v StateDir,
    /// The services to check (None: all).
    only: Option<&'v [&'v str]>,
    progress: Progress,
    /// Hosts that did not answer, with why.
    down: BTreeMap<String, String>,
    reach_took: Duration,
    rows: Vec<Row>,
    unreachable_rows: Vec<Row>,
}

impl crate::phase::Stage for Site<'_> {}

/// Which hosts answer on their SSH port (3 s at most, all at once).
pub struct Reach;

impl<'v> Phase<Site<'v>> for Reach {
    fn title(&self) -> &'static str {
        "reach"
    }

    fn run<'h>(&'h self, site: &'h mut Site<'v>) -> LocalBoxFuture<'h, Result<(), RunError>> {
        Box::pin(async move {
            let (down, took) = timed(unreachable(&site.a.hosts)).await;
            site.down = down;
            site.reach_took = took;
            Ok(())
        })
    }
}

/// Each service's checks, concurrently; a service whose host is down gets its row instead.
pub struct Services;

impl<'v> Phase<Site<'v>> for Services {
    fn title(&self) -> &'static str {
        "services"
    }

    fn run<'h>(&'h self, site: &'h mut Site<'v>) -> LocalBoxFuture<'h, Result<(), RunError>> {
        Box::pin(async move {
            let (rows, unreachable_rows) = services(site).await;
            site.rows = rows;
            site.unreachable_rows = unreachable_rows;
            Ok(())
        })
    }
}

/// The services' rows, and the rows of hosts that did not answer.
async fn services(site: &Site<'_>) -> (Vec<Row>, Vec<Row>) {
    let (a, secrets, state, down, reach_took) = (site.a, site.secrets, site.state, &site.down, site.reach_took);
    let mut rows = Vec::new();
    let is_down = |h: &Host| down.get(&h.name);

    // DNS: without the primary nothing can be compared; an unreachable secondary is left out.
    let dns_hosts: Vec<&Host> = a.hosts_with(Role::Dns).map(|(_, h)| h).collect();
    let mut dns_answers = None;
    if let Some(primary) = dns_hosts.first() {
        if is_down(primary).is_some() {
            for h in &dns_hosts {
                match is_down(h) {
                    Some(why) => rows.push(down_row("dns", &h.name, why, reach_took)),
                    None => rows.push(Row::skipped(
                        "dns",
                        &h.name,
                        "host reachable",
                        format!("not checked: the primary ({}) is unreachable", primary.name),
                        Duration::ZERO,
                    )),
                }
            }
        } else {
            let mut b = a.clone();
            for h in b.hosts.iter_mut().filter(|h| down.contains_key(&h.name)) {
                if h.roles.contains(&Role::Dns) {
                    rows.push(down_row("dns", &h.name, &down[&h.name], reach_took));
                }
                h.roles.retain(|r| *r != Role::Dns);
            }
            dns_answers = Some(b);
        }
    }
    // The other services each live on one host.
    let first_down = |role: Role| a.hosts_with(role).next().and_then(|(_, h)| is_down(h).map(|why| (h, why)));
    for (role, service) in
        [(Role::Dhcp, "dhcp"), (Role::Ldap, "ldap"), (Role::Postgresql, "postgresql"), (Role::Mariadb, "mariadb")]
    {
        if let Some((h, why)) = first_down(role) {
            rows.push(down_row(service, &h.name, why, reach_took));
        }
    }
    // Every cluster node counts: each one that does not answer gets its row.
    if a.k3s.is_some() {
        for (h, _) in crate::cluster::nodes(a) {
            if let Some(why) = is_down(h) {
                rows.push(down_row("k3s", &h.name, why, reach_took));
            }
        }
    }
    let wanted = |service: &str| site.only.is_none_or(|o| o.contains(&service));
    let runs = |r: Role| a.has_role(r) && first_down(r).is_none() && wanted(r.as_str());

    let p = &site.progress;
    // Each service's checks are a large future: boxed, they live on the heap, not the stack.
    let (dns_rows, dhcp_rows, ldap_rows, pg_rows, maria_rows, k3s_rows) = tokio::join!(
        async {
            match &dns_answers {
                Some(b) if wanted("dns") => p.track("dns", Box::pin(dns::verify(b, secrets))).await,
                _ => Vec::new(),
            }
        },
        async {
            if runs(Role::Dhcp) { p.track("dhcp", Box::pin(dhcp::verify(a, state, down))).await } else { Vec::new() }
        },
        async {
            if runs(Role::Ldap) { p.track("ldap", Box::pin(ldap::verify(a, secrets, state))).await } else { Vec::new() }
        },
        async {
            if runs(Role::Postgresql) {
                p.track("postgresql", Box::pin(sql::verify_postgresql(a, secrets, state))).await
            } else {
                Vec::new()
            }
        },
        async {
            if runs(Role::Mariadb) {
                p.track("mariadb", Box::pin(sql::verify_mariadb(a, secrets, state))).await
            } else {
                Vec::new()
            }
        },
        async {
            if a.k3s.is_some() && a.has_role(Role::K3sServer) && wanted("k3s") {
                let mut rows = p.track("k3s", Box::pin(k3s::verify(a, state, down))).await;
                // The hand-off is asked only of a cluster whose API answers.
                let api = rows.iter().find(|r| r.check == "API ready (/readyz)" && r.result == Outcome::Ok);
                match (api, &a.gitops) {
                    (Some(_), Some(_)) => {
                        rows.extend(p.track("gitops", Box::pin(gitops::verify(a, state, down))).await)
                    }
                    (None, Some(_)) => {
                        let host = rows.first().map(|r| r.host.clone()).unwrap_or_default();
                        let why = "not checked: the cluster's API is not ready";
                        rows.push(Row::skipped("gitops", &host, "controllers available", why, Duration::ZERO));
                    }
                    _ => {}
                }
                rows
            } else {
                Vec::new()
            }
        },
    );
    site.progress.done();
    let mut out = dns_rows;
    out.extend(dhcp_rows);
    out.extend(ldap_rows);
    out.extend(pg_rows);
    out.extend(maria_rows);
    out.extend(k3s_rows);
    (out, rows)
}

/// No check failed.
pub fn all_ok(rows: &[Row]) -> bool {
    rows.iter().all(Row::ok)
}

/// A table: service, host, check, result, time, detail (the detail wraps under the row when long).
pub fn render_table(rows: &[Row]) -> String {
    use std::fmt::Write as _;
    let w = |f: fn(&Row) -> usize, title: &str| rows.iter().map(f).max().unwrap_or(0).max(title.len());
    let ws = w(|r| r.service.len(), "service");
    let wh = w(|r| r.host.len(), "host");
    let wc = w(|r| r.check.chars().count(), "check");
    let mut out = String::new();
    let _ = writeln!(out, "{:ws$}  {:wh$}  {:wc$}  {:6}  {:>7}  detail", "service", "host", "check", "result", "time");
    for r in rows {
        let _ = writeln!(
            out,
            "{:ws$}  {:wh$}  {:wc$}  {:6}  {:>7}  {}",
            r.service,
            r.host,
            r.check,
            r.result.as_str(),
            format!("{} ms", r.ms),
            r.detail
        );
    }
    let failed = rows.iter().filter(|r| r.result == Outcome::Fail).count();
    let skipped = rows.iter().filter(|r| r.result == Outcome::Skip).count();
    let _ = writeln!(
        out,
        "\n{} check(s): {} ok, {} failed, {} skipped",
        rows.len(),
        rows.len() - failed - skipped,
        failed,
        skipped
    );
    out
}

/// `{"ok": bool, "failed": n, "rows": [...]}`.
pub fn to_json(rows: &[Row]) -> serde_json::Value {
    serde_json::json!({
        "ok": all_ok(rows),
        "failed": rows.iter().filter(|r| r.result == Outcome::Fail).count(),
        "rows": rows,
    })
}

/// Times a future.
pub(crate) async fn timed<T>(f: impl std::future::Future<Output = T>) -> (T, Duration) {
    let t = Instant::now();
    let v = f.await;
    (v, t.elapsed())
}

/// An SSH session as `apply` opens one (first contact learns the host key, connecting is
/// retried), for a check that may run before any apply (the cluster preflight).
pub(crate) async fn connect_learning(h: &Host, state: &StateDir) -> Result<Session, String> {
    state.ensure().map_err(|e| e.to_string())?;
    let opts = SshOptions { known_hosts: state.root.join("known_hosts"), ..SshOptions::default() };
    Session::connect(&target(h), &opts).await.map_err(|e| format!("ssh: {e}"))
}

/// An SSH session to a host of the answer file, checked against the state directory's
/// known_hosts (as `apply` left it).
pub(crate) async fn connect(h: &Host, state: &StateDir) -> Result<Session, String> {
    let target = target(h);
    // The host answered the reachability probe: one attempt, a short limit.
    let opts = SshOptions {
        known_hosts: state.root.join("known_hosts"),
        connect_timeout: Duration::from_secs(5),
        connect_attempts: 1,
        ..SshOptions::default()
    };
    Session::connect(&target, &opts).await.map_err(|e| format!("ssh: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The lab example with every host moved to `192.0.2.0/24` (TEST-NET-1: nothing answers).
    fn site_of_absent_hosts() -> Answers {
        let mut a = crate::answers::load_str(crate::LAB_EXAMPLE.0, crate::LAB_EXAMPLE.1).unwrap().answers;
        for (i, h) in a.hosts.iter_mut().enumerate() {
            h.address = std::net::Ipv4Addr::new(192, 0, 2, 10 + i as u8);
        }
        a
    }

    #[tokio::test]
    async fn hosts_that_do_not_answer_get_one_row_per_service_within_seconds() {
        let a = site_of_absent_hosts();
        let dir = tempfile::tempdir().unwrap();
        let state = StateDir { root: dir.path().to_path_buf() };
        let t = Instant::now();
        let rows = verify(&a, &Secrets::default(), &state).await;
        let took = t.elapsed();
        assert!(took < REACH_TIMEOUT + Duration::from_secs(2), "verify took {took:?}:\n{}", render_table(&rows));
        // One failed "host reachable" row per service and host, each saying so.
        let mut want: Vec<(String, String)> = Vec::new();
        for (role, service) in [
            (Role::Dns, "dns"),
            (Role::Dhcp, "dhcp"),
            (Role::Ldap, "ldap"),
            (Role::Postgresql, "postgresql"),
            (Role::Mariadb, "mariadb"),
        ] {
            let hosts: Vec<&Host> = a.hosts_with(role).map(|(_, h)| h).collect();
            let n = if role == Role::Dns { hosts.len() } else { hosts.len().min(1) };
            want.extend(hosts.iter().take(n).map(|h| (service.to_string(), h.name.clone())));
        }
        let got: Vec<(String, String)> = rows.iter().map(|r| (r.service.clone(), r.host.clone())).collect();
        want.sort();
        let mut got_sorted = got.clone();
        got_sorted.sort();
        assert_eq!(got_sorted, want, "{}", render_table(&rows));
        for r in &rows {
            assert_eq!((r.check.as_str(), r.result), ("host reachable", Outcome::Fail), "{}", render_table(&rows));
            assert_eq!(r.cause, Some(Cause::Unreachable), "{}", r.detail);
            assert!(
                r.detail.starts_with("unreachable (")
                    && r.detail.contains(&format!("its {} checks were not run", r.service)),
                "{}",
                r.detail
            );
        }
    }

    #[tokio::test]
    async fn a_refused_connection_is_an_answer() {
        // A port nobody listens on: the host is up and says no.
        let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = closed.local_addr().unwrap().port();
        drop(closed);
        let mut a = site_of_absent_hosts();
        a.hosts[0].address = std::net::Ipv4Addr::LOCALHOST;
        a.hosts[0].ssh_port = port;
        let down = unreachable(&a.hosts).await;
        assert!(!down.contains_key(&a.hosts[0].name), "{down:?}");
        assert_eq!(down.len(), a.hosts.len() - 1, "{down:?}");
    }

    #[test]
    fn table_and_json_count_failures_but_not_skips() {
        let rows = vec![
            Row::passed("dns", "ns1", "SOA a.example", "serial 3", Duration::from_millis(2)),
            Row::skipped("dns", "ns1", "recursion refused outside", "no outside address", Duration::ZERO),
            Row::failed("dhcp", "ns1", "kea-dhcp4 status", Failure::error("no socket"), Duration::from_millis(40)),
        ];
        let t = render_table(&rows);
        assert!(t.contains("FAIL"), "{t}");
        assert!(t.contains("3 check(s): 1 ok, 1 failed, 1 skipped"), "{t}");
        let j = to_json(&rows);
        assert_eq!(j["ok"], false);
        assert_eq!(j["failed"], 1);
        assert_eq!(j["rows"][1]["result"], "skip");
        assert!(all_ok(&rows[..2]));
    }

    #[test]
    fn a_failed_row_carries_its_cause_in_json_and_other_rows_none() {
        let took = Duration::from_millis(5);
        let rows = vec![
            Row::from_result("ldap", "ld1", "StartTLS (389)", Ok("TLS up".into()), took),
            Row::skipped("dns", "ns1", "recursion refused outside", "no outside address", took),
            Row::from_result("ldap", "ld1", "search the OUs", Err(Failure::timeout("no answer within 10 s")), took),
            Row::failed("dhcp", "dn1", "kea-dhcp4 configuration", Failure::mismatch("runs without"), took),
        ];
        let causes: Vec<Option<Cause>> = rows.iter().map(|r| r.cause).collect();
        assert_eq!(causes, [None, None, Some(Cause::Timeout), Some(Cause::Mismatch)]);
        let j = to_json(&rows);
        for ok_or_skip in &j["rows"].as_array().unwrap()[..2] {
            assert!(ok_or_skip.get("cause").is_none(), "{ok_or_skip}");
        }
        assert_eq!(j["rows"][2]["cause"], "timeout");
        assert_eq!(j["rows"][2]["detail"], "no answer within 10 s");
        assert_eq!(j["rows"][3]["cause"], "mismatch");
        assert_eq!(j["failed"], 2);
    }

    #[test]
    fn causes_are_kebab_case_and_words_become_an_error() {
        let names: Vec<serde_json::Value> =
            [Cause::Unreachable, Cause::Timeout, Cause::Refused, Cause::Mismatch, Cause::Untrusted, Cause::Error]
                .iter()
                .map(|c| serde_json::to_value(c).unwrap())
                .collect();
        assert_eq!(names, ["unreachable", "timeout", "refused", "mismatch", "untrusted", "error"]);
        let f = Failure::from("ssh: connection reset".to_string());
        assert_eq!((f.cause, f.to_string()), (Cause::Error, "ssh: connection reset".to_string()));
        assert_eq!(Failure::refused("REFUSED").prefixed("signed update"), Failure::refused("signed update: REFUSED"));
    }
}
