//! What a run shows and keeps: a progress bar per host (indicatif) or plain lines when there is
//! no terminal, one JSON event per line with `--json`, and a log file with every command, its
//! output and timing. Everything passes through the [`Redactor`] first.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde::Serialize;
use serde_json::json;

use super::context::Redactor;
use super::error::RunError;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Status {
    Ok,
    Changed,
    /// Dry run: this step would change the host.
    WouldChange,
    Failed,
    Skipped,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Ok => "ok",
            Status::Changed => "changed",
            Status::WouldChange => "would change",
            Status::Failed => "failed",
            Status::Skipped => "skipped",
        }
    }
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct HostSummary {
    pub ok: usize,
    pub changed: usize,
    pub failed: usize,
    pub skipped: usize,
    /// Commands run on the host after connecting: its round trips (a no-op costs one).
    pub commands: usize,
    pub ms: u128,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The same, typed: the phase it stopped in, and the role and step of a failed step.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failure: Option<serde_json::Value>,
}

pub struct Reporter {
    json: bool,
    redactor: Redactor,
    log: Mutex<File>,
    log_path: PathBuf,
    multi: MultiProgress,
    bars: Mutex<BTreeMap<String, ProgressBar>>,
    interactive: bool,
    started: Instant,
    pub summaries: Mutex<BTreeMap<String, HostSummary>>,
}

fn now() -> String {
    humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string()
}

impl Reporter {
    pub fn new(log_path: &Path, json: bool, redactor: Redactor) -> std::io::Result<Reporter> {
        use std::os::unix::fs::OpenOptionsExt;
        if let Some(dir) = log_path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let log = std::fs::OpenOptions::new().create(true).append(true).mode(0o600).open(log_path)?;
        let interactive = !json && console::Term::stderr().is_term();
        let multi = if interactive {
            MultiProgress::with_draw_target(ProgressDrawTarget::stderr())
        } else {
            MultiProgress::with_draw_target(ProgressDrawTarget::hidden())
        };
        Ok(Reporter {
            json,
            redactor,
            log: Mutex::new(log),
            log_path: log_path.to_path_buf(),
            multi,
            bars: Mutex::new(BTreeMap::new()),
            interactive,
            started: Instant::now(),
            summaries: Mutex::new(BTreeMap::new()),
        })
    }

    pub fn log_path(&self) -> &Path {
        &self.log_path
    }

    pub fn redact(&self, s: &str) -> String {
        self.redactor.redact(s)
    }

    fn redact_json(&self, v: serde_json::Value) -> serde_json::Value {
        match v {
            serde_json::Value::String(s) => serde_json::Value::String(self.redact(&s)),
            serde_json::Value::Object(m) => m.into_iter().map(|(k, v)| (k, self.redact_json(v))).collect(),
            other => other,
        }
    }

    /// Write to the log file only.
    pub fn log(&self, host: &str, text: &str) {
        let text = self.redactor.redact(text);
        let mut f = self.log.lock().unwrap_or_else(|p| p.into_inner());
        for line in text.lines() {
            let _ = writeln!(f, "{} {host:<10} {line}", now());
        }
    }

    /// A command and its result, for the log.
    pub fn command(&self, host: &str, cmd: &str, status: u32, stdout: &str, stderr: &str, took: Duration) {
        if let Some(s) = self.summaries.lock().unwrap_or_else(|p| p.into_inner()).get_mut(host) {
            s.commands += 1;
        }
        let mut text = format!("$ {cmd}\n  -> exit {status} in {} ms", took.as_millis());
        for (label, s) in [("stdout", stdout), ("stderr", stderr)] {
            if !s.trim().is_empty() {
                text.push_str(&format!("\n  {label}:"));
                for l in s.lines().take(200) {
                    text.push_str(&format!("\n    {l}"));
                }
            }
        }
        self.log(host, &text);
    }

    fn emit(&self, value: serde_json::Value) {
        if self.json {
            let line = self.redactor.redact(&value.to_string());
            let stdout = std::io::stdout();
            let mut lock = stdout.lock();
            let _ = writeln!(lock, "{line}");
            let _ = lock.flush();
        }
    }

    /// A line for people: above the bars at a terminal, plain on stderr otherwise.
    pub fn say(&self, text: &str) {
        if self.json {
            return;
        }
        let text = self.redactor.redact(text);
        if self.interactive {
            let _ = self.multi.println(&text);
        } else {
            eprintln!("{text}");
        }
    }

    pub fn run_started(&self, run: &str, hosts: &[String], dry_run: bool) {
        self.log(
            "-",
            &format!("run {run} started ({}) on {}", if dry_run { "dry run" } else { "apply" }, hosts.join(", ")),
        );
        self.emit(json!({"event": "run-started", "run": run, "hosts": hosts, "dry_run": dry_run, "time": now()}));
    }

    pub fn host_started(&self, host: &str, steps: usize) {
        if self.interactive {
            let bar = self.multi.add(ProgressBar::new(steps as u64));
            bar.set_style(
                ProgressStyle::with_template("{prefix:<10} {bar:24.cyan/blue} {pos:>3}/{len:<3} {wide_msg}")
                    .expect("valid template")
                    .progress_chars("=> "),
            );
            bar.set_prefix(host.to_string());
            bar.set_message("connecting");
            self.bars.lock().unwrap_or_else(|p| p.into_inner()).insert(host.to_string(), bar);
        }
        // A host provisioned before its phases keeps what the provisioning counted.
        self.summaries.lock().unwrap_or_else(|p| p.into_inner()).entry(host.to_string()).or_default();
    }

    pub fn set_length(&self, host: &str, steps: usize) {
        if let Some(bar) = self.bars.lock().unwrap_or_else(|p| p.into_inner()).get(host) {
            bar.set_length(steps as u64);
        }
    }

    pub fn connected(&self, host: &str, fingerprint: &str, first_contact: bool, took: Duration) {
        let local = fingerprint == crate::ssh::LOCAL_FINGERPRINT;
        let how = if local {
            "this machine: local processes, no SSH"
        } else if first_contact {
            "first contact, host key recorded"
        } else {
            "host key known"
        };
        self.log(host, &format!("connected in {} ms; {fingerprint} ({how})", took.as_millis()));
        if first_contact {
            self.say(&format!("{host}: first contact, recorded host key {fingerprint}"));
        }
        self.emit(json!({"event": "connected", "host": host, "fingerprint": fingerprint, "first_contact": first_contact, "local": local, "ms": took.as_millis()}));
    }

    /// Something people should know; `host` is `-` for the run as a whole.
    pub fn note(&self, host: &str, text: &str) {
        self.log(host, text);
        if host == "-" {
            self.say(text);
        } else {
            self.say(&format!("{host}: {text}"));
        }
        self.emit(json!({"event": "note", "host": host, "text": self.redact(text)}));
    }

    pub fn step_started(&self, host: &str, role: &str, step: &str) {
        if let Some(bar) = self.bars.lock().unwrap_or_else(|p| p.into_inner()).get(host) {
            bar.set_message(format!("{role}: {step}"));
        }
        self.emit(json!({"event": "step-started", "host": host, "role": role, "step": step}));
    }

    /// What a long step is doing now (the bar, the log, a `progress` event).
    pub fn progress(&self, host: &str, role: &str, text: &str) {
        if let Some(bar) = self.bars.lock().unwrap_or_else(|p| p.into_inner()).get(host) {
            bar.set_message(format!("{role}: {text}"));
        }
        self.log(host, &format!("{role}: {text}"));
        self.emit(json!({"event": "progress", "host": host, "role": role, "text": self.redact(text)}));
    }

    /// A finished step; `detail` is a diff, the command that ran, or why it failed.
    pub fn step_finished(
        &self,
        host: &str,
        role: &str,
        step: &str,
        status: Status,
        took: Duration,
        detail: Option<&str>,
    ) {
        let detail = detail.map(|d| self.redactor.redact(d));
        {
            let mut sums = self.summaries.lock().unwrap_or_else(|p| p.into_inner());
            let s = sums.entry(host.to_string()).or_default();
            match status {
                Status::Ok => s.ok += 1,
                Status::Changed | Status::WouldChange => s.changed += 1,
                Status::Failed => s.failed += 1,
                Status::Skipped => s.skipped += 1,
            }
        }
        self.log(
            host,
            &format!(
                "{role} / {step}: {} ({} ms){}",
                status.as_str(),
                took.as_millis(),
                detail.as_deref().map(|d| format!("\n{d}")).unwrap_or_default()
            ),
        );
        if let Some(bar) = self.bars.lock().unwrap_or_else(|p| p.into_inner()).get(host) {
            bar.inc(1);
        }
        if matches!(status, Status::Changed | Status::WouldChange | Status::Failed) {
            let mut text = format!("{host:<10} {role:<11} {step:<28} {}", status.as_str());
            // An apply was shown its dry run already (or said --yes): what changed is one line
            // here, the diffs are in the log. A failure always says why.
            let shown = if status == Status::Changed { None } else { detail.as_ref() };
            if let Some(d) = shown {
                for l in d.lines() {
                    text.push_str(&format!("\n    {l}"));
                }
            }
            self.say(&text);
        }
        self.emit(json!({
            "event": "step-finished", "host": host, "role": role, "step": step,
            "status": status, "ms": took.as_millis(), "detail": detail,
        }));
    }

    /// A host whose own phases finished, failed in a phase of the site after them (the
    /// cluster): its summary carries the error.
    pub fn late_failure(&self, host: &str, error: &RunError) {
        {
            let mut sums = self.summaries.lock().unwrap_or_else(|p| p.into_inner());
            let s = sums.entry(host.to_string()).or_default();
            s.error = Some(self.redactor.redact(&error.to_string()));
            s.failure = Some(self.redact_json(serde_json::to_value(error).expect("errors serialize")));
        }
        self.say(&format!("{host}: FAILED: {}", self.redactor.redact(&error.to_string())));
        self.log(host, &format!("failed after its phases: {error}"));
    }

    pub fn host_finished(&self, host: &str, error: Option<&RunError>, took: Duration) {
        let summary = {
            let mut sums = self.summaries.lock().unwrap_or_else(|p| p.into_inner());
            let s = sums.entry(host.to_string()).or_default();
            s.ms = took.as_millis();
            s.error = error.map(|e| self.redactor.redact(&e.to_string()));
            s.failure = error.map(|e| self.redact_json(serde_json::to_value(e).expect("errors serialize")));
            s.clone()
        };
        if let Some(bar) = self.bars.lock().unwrap_or_else(|p| p.into_inner()).get(host) {
            bar.finish_with_message(match error {
                Some(_) => "FAILED".to_string(),
                None => format!("done: {} changed", summary.changed),
            });
        }
        if let Some(e) = &summary.error {
            self.say(&format!("{host}: FAILED: {e}"));
        }
        self.log(host, &format!("finished in {} ms: {summary:?}", took.as_millis()));
        self.emit(json!({"event": "host-finished", "host": host, "summary": summary}));
    }

    /// The table at the end; returns whether every host succeeded.
    pub fn finish(&self, run: &str, dry_run: bool) -> bool {
        let sums = self.summaries.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let ok = sums.values().all(|s| s.failed == 0 && s.error.is_none());
        let took = self.started.elapsed();
        self.log("-", &format!("run {run} finished in {} ms, ok={ok}", took.as_millis()));
        self.emit(json!({"event": "run-finished", "run": run, "ok": ok, "ms": took.as_millis(), "hosts": sums}));
        if !self.json {
            let _ = self.multi.clear();
            let changed = if dry_run { "to change" } else { "changed" };
            let mut t =
                format!("\n{:<10} {:>4} {:>9} {:>6} {:>7} {:>8}\n", "host", "ok", changed, "failed", "skipped", "time");
            for (h, s) in &sums {
                t.push_str(&format!(
                    "{h:<10} {:>4} {:>9} {:>6} {:>7} {:>7.2}s{}\n",
                    s.ok,
                    s.changed,
                    s.failed,
                    s.skipped,
                    s.ms as f64 / 1000.0,
                    if s.error.is_some() { "  FAILED" } else { "" }
                ));
            }
            t.push_str(&format!(
                "{} in {:.2}s; log: {}",
                if dry_run { "dry run" } else { "apply" },
                took.as_secs_f64(),
                self.log_path.display()
            ));
            eprintln!("{t}");
        }
        ok
    }
}
