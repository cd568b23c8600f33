//! `groundwork verify`: every service checked the way a client uses it, one row per check.
//!
//! [`verify`] runs what applies to the answer file ([`dns`] for the dns role, [`dhcp`] for the
//! dhcp role, [`ldap`] and [`sql`] for the directory and the databases) and returns rows `service / host / check / result / detail / time`;
//! [`render_table`] and [`to_json`] present them. A skipped check (something that cannot be
//! tested from here, said in its detail) is not a failure; [`all_ok`] is false on any failure.

pub mod dhcp;
pub mod dns;
pub mod ldap;
pub mod sql;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::answers::model::{Answers, Host, Role};
use crate::ssh::{Session, SshOptions, Target};
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

/// One check of one service on one host.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    pub service: String,
    pub host: String,
    pub check: String,
    pub result: Outcome,
    pub detail: String,
    pub ms: u64,
}

impl Row {
    pub fn new(service: &str, host: &str, check: impl Into<String>, result: Outcome, detail: impl Into<String>, took: Duration) -> Row {
        Row {
            service: service.to_string(),
            host: host.to_string(),
            check: check.into(),
            result,
            detail: detail.into(),
            ms: u64::try_from(took.as_millis()).unwrap_or(u64::MAX),
        }
    }

    /// A row from a result: `Ok(detail)` passes, `Err(detail)` fails.
    pub fn from_result(service: &str, host: &str, check: impl Into<String>, r: Result<String, String>, took: Duration) -> Row {
        match r {
            Ok(d) => Row::new(service, host, check, Outcome::Ok, d, took),
            Err(d) => Row::new(service, host, check, Outcome::Fail, d, took),
        }
    }

    pub fn ok(&self) -> bool {
        self.result != Outcome::Fail
    }
}

/// Every check that applies to the site. Checks of different services run concurrently.
pub async fn verify(a: &Answers, secrets: &Secrets, state: &StateDir) -> Vec<Row> {
    let (mut rows, dhcp_rows, ldap_rows, sql_rows) = tokio::join!(
        dns::verify(a, secrets),
        async {
            if a.has_role(Role::Dhcp) { dhcp::verify(a, state).await } else { Vec::new() }
        },
        ldap::verify(a, secrets),
        sql::verify(a, secrets),
    );
    rows.extend(dhcp_rows);
    rows.extend(ldap_rows);
    rows.extend(sql_rows);
    rows
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

fn expand_home(p: &Path) -> PathBuf {
    match p.to_str().and_then(|s| s.strip_prefix("~/")) {
        Some(rest) => std::env::var_os("HOME").map(|h| PathBuf::from(h).join(rest)).unwrap_or_else(|| p.to_path_buf()),
        None => p.to_path_buf(),
    }
}

/// An SSH session to a host of the answer file, checked against the state directory's
/// known_hosts (as `apply` left it).
pub(crate) async fn connect(h: &Host, state: &StateDir) -> Result<Session, String> {
    let target = Target {
        name: h.name.clone(),
        address: h.address.to_string(),
        port: h.ssh_port,
        user: h.ssh_user.clone(),
        key_path: expand_home(h.ssh_key.as_deref().unwrap_or(Path::new("~/.ssh/id_ed25519"))),
    };
    let opts = SshOptions {
        known_hosts: state.root.join("known_hosts"),
        connect_attempts: 2,
        ..SshOptions::default()
    };
    Session::connect(&target, &opts).await.map_err(|e| format!("ssh: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_and_json_count_failures_but_not_skips() {
        let rows = vec![
            Row::new("dns", "ns1", "SOA a.example", Outcome::Ok, "serial 3", Duration::from_millis(2)),
            Row::new("dns", "ns1", "recursion refused outside", Outcome::Skip, "no outside address", Duration::ZERO),
            Row::new("dhcp", "ns1", "kea-dhcp4 status", Outcome::Fail, "no socket", Duration::from_millis(40)),
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
}
