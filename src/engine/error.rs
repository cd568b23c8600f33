//! Why a host's run stopped, typed: the phase it stopped in, and for a step its role and name,
//! so `--json` consumers (and later `reset`) match on fields rather than on words. The text of
//! each is what people read in the summary.

use serde::Serialize;

/// What ended a host's run early.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, thiserror::Error)]
#[serde(tag = "phase", rename_all = "kebab-case")]
pub enum RunError {
    /// The host's Proxmox guest could not be found, created, changed or started.
    #[error("proxmox: {cause}")]
    Provision { host: String, cause: String },
    /// No session: unreachable, refused key, changed host key, no sudo...
    #[error("{cause}")]
    Connect { host: String, cause: String },
    /// The facts could not be gathered, or say the host is not one groundwork can converge.
    #[error("{cause}")]
    Facts { host: String, cause: String },
    /// The package transaction failed; `cause` names the part (update, download, install...).
    #[error("packages: {cause}")]
    Packages { host: String, cause: String },
    /// A step failed: `cause` is its first line and the last thing it said.
    #[error("{role} / {step}: {cause}")]
    Step { host: String, role: String, step: String, cause: String },
    /// A role waited for a role it needs, which failed on another host.
    #[error("role {role} not started: {blocker}")]
    Blocked { host: String, role: String, blocker: String },
    /// The cluster phase stopped at this node: its binary, a start, or a gate after it.
    #[error("cluster: {cause}")]
    Cluster { host: String, cause: String },
    /// The hand-off stopped on the first k3s server: the engine's install, or an object.
    #[error("hand-off: {cause}")]
    Handoff { host: String, cause: String },
    /// Ctrl-C: the next apply resumes from here.
    #[error("interrupted; the next apply continues from here")]
    Interrupted { host: String },
}

impl RunError {
    /// A phase's error from its text: an interrupt is [`RunError::Interrupted`] wherever it
    /// came from, anything else is what `make` builds.
    pub fn in_phase(host: String, cause: String, make: impl FnOnce(String, String) -> RunError) -> RunError {
        if cause == crate::engine::host::INTERRUPTED { RunError::Interrupted { host } } else { make(host, cause) }
    }

    pub fn host(&self) -> &str {
        match self {
            RunError::Connect { host, .. }
            | RunError::Provision { host, .. }
            | RunError::Facts { host, .. }
            | RunError::Packages { host, .. }
            | RunError::Step { host, .. }
            | RunError::Blocked { host, .. }
            | RunError::Cluster { host, .. }
            | RunError::Handoff { host, .. }
            | RunError::Interrupted { host } => host,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_step_failure_reads_as_before_and_carries_its_fields_in_json() {
        let e = RunError::Step {
            host: "b1".into(),
            role: "base".into(),
            step: "ssh hardening".into(),
            cause: "the validator refused".into(),
        };
        assert_eq!(e.to_string(), "base / ssh hardening: the validator refused");
        assert_eq!(
            serde_json::to_value(&e).unwrap(),
            serde_json::json!({"phase": "step", "host": "b1", "role": "base", "step": "ssh hardening", "cause": "the validator refused"})
        );
        assert_eq!(e.host(), "b1");
    }
}
