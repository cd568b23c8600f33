//! Running the real binary against lab hosts and reading its `--json` events.

use std::path::Path;
use std::process::Command;
use std::time::Instant;

use serde_json::Value;

use super::lab;

/// One `groundwork apply --yes --json` run.
pub struct Run {
    pub code: i32,
    pub events: Vec<Value>,
    pub stdout: String,
    pub stderr: String,
    pub secs: f64,
}

impl Run {
    /// The `run-finished` event, if the run got that far.
    pub fn finished_event(&self) -> Option<&Value> {
        self.events.iter().rev().find(|e| e["event"] == "run-finished")
    }
    pub fn finished(&self) -> &Value {
        self.finished_event().unwrap_or_else(|| panic!("no run-finished event; stderr:\n{}", self.stderr))
    }
    /// A host's count of `ok`, `changed`, `failed` or `skipped` steps.
    pub fn count(&self, host: &str, what: &str) -> u64 {
        self.finished()["hosts"][host][what].as_u64().unwrap_or(u64::MAX)
    }
    pub fn changed(&self, host: &str) -> u64 {
        self.count(host, "changed")
    }
    pub fn failed(&self, host: &str) -> u64 {
        self.count(host, "failed")
    }
    pub fn error(&self, host: &str) -> String {
        self.finished()["hosts"][host]["error"].as_str().unwrap_or("").to_string()
    }
    /// The last `step-finished` event of a step on a host.
    pub fn step(&self, host: &str, name: &str) -> Option<&Value> {
        self.events.iter().rev().find(|e| e["event"] == "step-finished" && e["host"] == host && e["step"] == name)
    }
    /// The last `step-finished` event of a role on a host (roles of one step, as `proxmox`).
    pub fn role_step(&self, host: &str, role: &str) -> Option<&Value> {
        self.events.iter().rev().find(|e| e["event"] == "step-finished" && e["host"] == host && e["role"] == role)
    }
    /// What it printed: standard output, then standard error.
    pub fn text(&self) -> String {
        format!("{}\n{}", self.stdout, self.stderr)
    }
    pub fn failed_steps(&self) -> Vec<&Value> {
        self.events.iter().filter(|e| e["event"] == "step-finished" && e["status"] == "failed").collect()
    }
    /// The names (`role / step`) of the steps that changed on `host`.
    pub fn changed_steps(&self, host: &str) -> Vec<String> {
        self.events
            .iter()
            .filter(|e| e["event"] == "step-finished" && e["host"] == host && e["status"] == "changed")
            .map(|e| format!("{} / {}", e["role"].as_str().unwrap_or(""), e["step"].as_str().unwrap_or("")))
            .collect()
    }
    /// Everything the run said, for assertion messages: what failed first (a long message is
    /// cut in the middle by CI's log), then standard error and every event.
    pub fn all_text(&self) -> String {
        let failed: Vec<String> = self.failed_steps().iter().map(|e| e.to_string()).collect();
        let events: Vec<String> = self.events.iter().map(|e| e.to_string()).collect();
        format!(
            "failed steps:\n{}\nrun-finished: {}\n\n{}\n{}",
            failed.join("\n"),
            self.finished_event().map(|e| e.to_string()).unwrap_or_else(|| "none".into()),
            self.stderr,
            events.join("\n")
        )
    }
}

impl Run {
    /// Runs `cmd` (a groundwork, here or inside a lab host) to its end; the JSON events are
    /// parsed from its standard output.
    pub fn of(cmd: &mut Command) -> Run {
        let t = Instant::now();
        let out = cmd.output().unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout).to_string();
        Run {
            code: out.status.code().unwrap_or(-1),
            events: stdout.lines().filter_map(|l| serde_json::from_str(l).ok()).collect(),
            stdout,
            stderr: String::from_utf8_lossy(&out.stderr).to_string(),
            secs: t.elapsed().as_secs_f64(),
        }
    }
}

/// `groundwork ARGS... --state STATE`, its JSON events parsed from standard output.
pub fn groundwork(state: &Path, args: &[&str]) -> Run {
    Run::of(Command::new(env!("CARGO_BIN_EXE_groundwork")).args(args).arg("--state").arg(state))
}

/// `groundwork apply --yes --json ANSWERS EXTRA... --state STATE`
pub fn apply(answers: &str, state: &Path, extra: &[&str]) -> Run {
    let mut args = vec!["apply", "--yes", "--json", answers];
    args.extend_from_slice(extra);
    groundwork(state, &args)
}

/// Fresh hosts: every `lab up` gives new machines (and new host keys).
pub fn fresh(hosts: &[(&str, &str)]) {
    let names: Vec<&str> = hosts.iter().map(|(n, _)| *n).collect();
    lab::down(&names);
    lab::up(hosts).unwrap();
}

/// A runtime for the library's async checks.
pub fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap()
}

/// Run a shell command inside a lab host (nsenter: works without its network).
pub fn on(host: &str, cmd: &str) -> String {
    lab::lab(&["exec", host, "sh", "-c", cmd]).unwrap_or_else(|e| panic!("{host}: {e}"))
}
