//! Service steps: a systemd unit started or stopped, enabled or not, and restarted or reloaded
//! when a file that notifies it changed.

use std::collections::HashSet;

use super::{Action, Decision, Detail};
use crate::engine::facts::{ServiceFact, sh_quote};
use crate::playbook::step::{OnNotify, ServiceState};

/// A service step, rendered.
#[derive(Debug, Clone)]
pub struct Service {
    pub name: String,
    pub state: ServiceState,
    pub enabled: bool,
    pub on_notify: OnNotify,
    /// The unit's whole configuration checked before a start, restart or reload (the pieces
    /// were checked one by one as they were written; this sees them together).
    pub validate: Option<String>,
    /// A start ends once this check passes (see [`script`]).
    pub ready: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verb {
    Start,
    Stop,
    Restart,
    Reload,
    Enable,
    Disable,
}

impl Verb {
    /// Whether the unit runs its (new) configuration afterwards.
    pub fn runs_it(self) -> bool {
        matches!(self, Verb::Start | Verb::Restart | Verb::Reload)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Verb::Start => "start",
            Verb::Stop => "stop",
            Verb::Restart => "restart",
            Verb::Reload => "reload",
            Verb::Enable => "enable",
            Verb::Disable => "disable",
        }
    }
}

/// Decide a service step from the unit's state and the services notified so far on this host.
pub fn decide(s: &Service, fact: Option<&ServiceFact>, notified: &HashSet<String>) -> Result<Decision, String> {
    let fact = fact.ok_or_else(|| format!("no facts about service {}", s.name))?;
    let was_notified = notified.contains(&s.name);
    let mut verbs = Vec::new();
    match s.state {
        ServiceState::Started => {
            if !fact.is_active() {
                verbs.push(Verb::Start);
            } else if was_notified {
                verbs.push(match s.on_notify {
                    OnNotify::Restart => Verb::Restart,
                    OnNotify::Reload => Verb::Reload,
                });
            }
        }
        ServiceState::Stopped => {
            if fact.is_active() {
                verbs.push(Verb::Stop);
            }
        }
    }
    if s.enabled && !fact.is_enabled() {
        verbs.push(Verb::Enable);
    } else if !s.enabled && fact.is_enabled() && fact.enabled != "static" {
        verbs.push(Verb::Disable);
    }
    let settles = was_notified.then(|| s.name.clone());
    if verbs.is_empty() {
        return Ok(Decision { settles, ..Decision::default() });
    }
    Ok(Decision {
        detail: Some(Detail::Text(show(
            &s.name,
            &verbs,
            s.validate.as_deref().filter(|_| verbs.iter().any(|v| v.runs_it())),
        ))),
        actions: vec![Action::Systemctl {
            unit: s.name.clone(),
            validate: s.validate.clone().filter(|_| verbs.iter().any(|v| v.runs_it())),
            ready: s.ready.clone().filter(|_| verbs.contains(&Verb::Start)),
            verbs,
            then_active: s.state == ServiceState::Started,
        }],
        notify: Vec::new(),
        settles,
    })
}

/// How long a start with a `ready` check waits for it.
pub const READY_WAIT_S: u32 = 120;

/// The verbs, one after the other; a unit that should run is checked to run afterwards, and
/// if it does not, its status says why. A configuration the validator refuses stops before
/// any verb: the unit keeps running what it runs. With `ready`, a start does not wait for
/// systemd's start job (`--no-block`) but polls the check: exit 0 ends it, 1 is "not yet",
/// another status, a failed unit or [`READY_WAIT_S`] fail it with the unit's status and then
/// what the check said (last: the run's one-line error quotes the last line).
pub fn script(unit: &str, verbs: &[Verb], then_active: bool, validate: Option<&str>, ready: Option<&str>) -> String {
    let q = sh_quote(unit);
    // The unit's state before groundwork first acts on it, for `reset`.
    let mut s = crate::engine::ledger::record_unit(unit);
    if let Some(v) = validate {
        s.push_str(&format!(
            "if ! sh -c {} >&2; then echo {} >&2; exit 1; fi; ",
            sh_quote(v),
            sh_quote(&format!("`{v}` refuses the configuration: {unit} was left as it was"))
        ));
    }
    let ready = ready.filter(|_| then_active && verbs.contains(&Verb::Start));
    let verb = |v: &Verb| match (v, ready) {
        (Verb::Start, Some(_)) => format!("systemctl start --no-block {q}"),
        _ => format!("systemctl {} {q}", v.as_str()),
    };
    s.push_str(&verbs.iter().map(verb).collect::<Vec<_>>().join(" && "));
    if let Some(r) = ready {
        let late = sh_quote(&format!("{unit}: not ready after {READY_WAIT_S} s (`{r}`)"));
        s.push_str(&format!(
            " && {{ end=$(( $(date +%s) + {READY_WAIT_S} )); while :; do out=$(sh -c {check} 2>&1) && break; rc=$?; \
             if [ $rc != 1 ] || [ \"$(systemctl show --property=ActiveState --value -- {q})\" = failed ]; then systemctl status --no-pager -n 15 {q}; printf '%s\\n' \"$out\"; exit 1; fi; \
             if [ \"$(date +%s)\" -ge \"$end\" ]; then echo {late}; systemctl status --no-pager -n 15 {q}; exit 1; fi; sleep 0.1; done; }} || {{ systemctl status --no-pager -n 15 {q}; exit 1; }}",
            check = sh_quote(r),
        ));
    } else if then_active {
        // systemctl returns once a forking, notify or oneshot unit has started (or failed); a
        // simple one counts as started at its exec, so a daemon that refuses its configuration
        // dies a moment later: only those get the moment before the check.
        s.push_str(&format!(
            " && {{ case $(systemctl show --property=Type --value -- {q}) in simple | exec | idle) sleep 0.2 ;; esac; systemctl is-active --quiet {q}; }} || {{ systemctl status --no-pager -n 15 {q}; exit 1; }}"
        ));
    }
    s
}

/// The verbs for people.
pub fn show(unit: &str, verbs: &[Verb], validate: Option<&str>) -> String {
    let q = sh_quote(unit);
    let verbs = verbs.iter().map(|v| format!("systemctl {} {q}", v.as_str())).collect::<Vec<_>>().join("; ");
    match validate {
        Some(v) => format!("{v} (the whole configuration); {verbs}"),
        None => verbs,
    }
}
