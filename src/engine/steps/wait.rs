//! Wait steps: a check (a TCP port, a socket, a command) that must succeed before the next
//! step. Waiting changes nothing, so a wait is never "changed".

use super::{Action, Decision, Detail};
use crate::engine::facts::sh_quote;

/// A wait step, rendered.
#[derive(Debug, Clone)]
pub struct Wait {
    /// The shell check.
    pub check: String,
    /// What it waits for, for people.
    pub what: String,
    /// Seconds.
    pub timeout: u64,
}

/// Decide a wait step: it waits for what changed before it on the host (a restart, a reload,
/// a package that started a service), so where nothing changed (or, in a dry run, would
/// change) there is nothing to wait for and nothing to ask. Otherwise the wait polls, and
/// returns at once if its check already holds.
pub fn decide(w: &Wait, changed_before: bool) -> Decision {
    if !changed_before {
        return Decision::converged();
    }
    Decision {
        actions: vec![Action::Wait { check: w.check.clone(), what: w.what.clone(), timeout: w.timeout }],
        detail: Some(Detail::Text(format!("would wait for {}", w.what))),
        ..Decision::default()
    }
}

/// Poll `check` every 0.2 s; exit 1 once `timeout` seconds have passed.
pub fn script(check: &str, timeout: u64) -> String {
    format!(
        "end=$(( $(date +%s) + {timeout} )); while ! sh -c {} >/dev/null 2>&1; do [ \"$(date +%s)\" -ge \"$end\" ] && exit 1; sleep 0.2; done",
        sh_quote(check)
    )
}

/// How a wait ended.
pub fn verdict(what: &str, timeout: u64, status: u32) -> Result<(), String> {
    if status == 0 { Ok(()) } else { Err(format!("still no {what} after {timeout} s")) }
}
