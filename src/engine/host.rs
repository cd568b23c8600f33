//! One host's run: render its steps, gather facts in one round trip, then decide each step
//! from the facts and change only what differs. Once something changed on the host, later
//! steps are checked live (the snapshot may be stale); a run that changes nothing costs one
//! round trip.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use minijinja::{Environment, Value};
use sha2::{Digest, Sha256};

use super::board::Board;
use super::facts::{Facts, PathFact, Probe, sh_quote};
use super::journal::{Entry, Journal, Resume};
use super::packages;
use super::report::{Reporter, Status};
use crate::playbook::catalog::{RoleSpec, hex};
use crate::playbook::step::{Kind, OnNotify, ServiceState, Source};
use crate::ssh::{Output, Session};

/// A step with its paths, commands and checks rendered for this host.
struct Prepared<'c> {
    role: &'c str,
    name: &'c str,
    when: Option<&'c str>,
    kind: &'c Kind,
    what: What,
}

enum What {
    File { dest: String, fact: usize, validate: Option<String> },
    Directory { path: String, fact: usize },
    /// Guards: kind, index in the probe's checks, the check itself.
    Command { command: String, checks: Vec<(Guard, usize, String)> },
    Service { name: String },
    Wait { check: String, fact: usize },
}

#[derive(Clone, Copy, PartialEq)]
enum Guard {
    Creates,
    Unless,
    Onlyif,
}

pub struct HostRun<'a> {
    pub host: String,
    pub run: String,
    pub session: &'a Session,
    pub reporter: &'a Reporter,
    pub journal: Option<&'a Journal>,
    pub resume: Option<&'a Resume>,
    pub board: &'a Board,
    pub cancel: &'a AtomicBool,
    pub dry_run: bool,
    pub env: &'a Environment<'static>,
    /// Context without facts (paths, commands, checks).
    pub base_ctx: Value,
    /// Builds the full context once facts are known.
    pub full_ctx: &'a (dyn Fn(&Facts) -> Value + Send + Sync),
}

type StepResult = Result<(Status, Option<String>), String>;

/// How long one command may take before its step fails.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(300);
/// The package transaction of a host (downloads and unpacks everything at once).
const PACKAGES_TIMEOUT: Duration = Duration::from_secs(1800);
const INTERRUPTED: &str = "interrupted; the next apply continues from here";

impl<'a> HostRun<'a> {
    fn render(&self, s: &str) -> Result<String, String> {
        if !s.contains("{{") && !s.contains("{%") {
            return Ok(s.to_string());
        }
        self.env
            .render_str(s, &self.base_ctx)
            .map_err(|e| format!("cannot render `{s}`: {e}"))
    }

    async fn exec(&self, cmd: &str, stdin: Option<&[u8]>) -> Result<Output, String> {
        self.exec_within(cmd, stdin, COMMAND_TIMEOUT).await
    }

    /// Run a command; give up after `limit` (the remote command may go on; the step fails).
    async fn exec_within(&self, cmd: &str, stdin: Option<&[u8]>, limit: Duration) -> Result<Output, String> {
        self.exec_watching(cmd, stdin, limit, &|_| {}).await
    }

    /// [`Self::exec_within`], with each line of output passed to `on_line` as it arrives.
    async fn exec_watching(
        &self,
        cmd: &str,
        stdin: Option<&[u8]>,
        limit: Duration,
        on_line: &(dyn Fn(&str) + Sync),
    ) -> Result<Output, String> {
        let t = Instant::now();
        let out = match tokio::time::timeout(limit, self.session.exec_watching(cmd, stdin, on_line)).await {
            Ok(r) => r.map_err(|e| e.to_string())?,
            Err(_) => {
                let first = cmd.lines().find(|l| !l.trim().is_empty()).unwrap_or(cmd);
                self.reporter.log(&self.host, &format!("$ {cmd}\n  -> no answer within {} s", limit.as_secs()));
                return Err(format!("no answer within {} s from `{first}`", limit.as_secs()));
            }
        };
        self.reporter.command(
            &self.host,
            cmd,
            out.status,
            &out.stdout_str(),
            &out.stderr_str(),
            t.elapsed(),
        );
        Ok(out)
    }

    /// Run a change; non-zero exit is an error carrying the command's output.
    async fn change(&self, what: &str, cmd: &str, stdin: Option<&[u8]>) -> Result<Output, String> {
        let out = self.exec_within(cmd, stdin, COMMAND_TIMEOUT).await?;
        if out.ok() {
            Ok(out)
        } else {
            let mut msg = format!("{what} failed (exit {})", out.status);
            let text = format!("{}{}", out.stdout_str(), out.stderr_str());
            let tail: Vec<&str> = text.lines().rev().take(15).collect();
            for l in tail.into_iter().rev() {
                msg.push_str(&format!("\n  {l}"));
            }
            Err(msg)
        }
    }

    /// The package transaction; a failure names the part that failed, with apt's last words.
    async fn packages(&self, script: &str) -> Result<(), String> {
        // The part running now (a wait for another apt included) shows on the progress bar.
        let on_line = |line: &str| {
            if let Some(part) = line.strip_prefix("groundwork-part\t") {
                self.reporter.progress(&self.host, "packages", part);
            }
        };
        let out = self.exec_watching(script, None, PACKAGES_TIMEOUT, &on_line).await?;
        if out.ok() {
            return Ok(());
        }
        let stdout = out.stdout_str();
        let part = packages::failed_part(&stdout).unwrap_or("the package transaction");
        let mut msg = format!("{part} failed (exit {}; {} on the host)", out.status, packages::LOG);
        for l in out.stderr_str().lines().rev().take(15).collect::<Vec<_>>().into_iter().rev() {
            msg.push_str(&format!("\n  {l}"));
        }
        Err(msg)
    }

    /// Resolves once the run is interrupted (Ctrl-C).
    async fn interrupted(&self) {
        while !self.cancel.load(Ordering::SeqCst) {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// A read-only command (facts, a wait) that an interrupt stops at once.
    async fn look(&self, cmd: &str, limit: Duration) -> Result<Output, String> {
        tokio::select! {
            out = self.exec_within(cmd, None, limit) => out,
            () = self.interrupted() => Err(INTERRUPTED.into()),
        }
    }

    async fn gather(&self, probe: &Probe) -> Result<Facts, String> {
        let out = self.look(&probe.script(), COMMAND_TIMEOUT).await?;
        let facts = Facts::parse(&out.stdout_str(), probe);
        if !facts.complete {
            return Err(format!(
                "facts are incomplete (exit {}): {}",
                out.status,
                out.stderr_str().trim()
            ));
        }
        Ok(facts)
    }

    /// Converge (or, in a dry run, compare) `roles` on this host, in order.
    pub async fn run(&self, roles: &[&RoleSpec]) -> Result<(), String> {
        // 1. Render what the probe needs.
        let mut probe = Probe::default();
        let mut prepared: Vec<Prepared<'_>> = Vec::new();
        let mut packages: Vec<String> = Vec::new();
        let mut preseed: Vec<String> = Vec::new();
        for role in roles {
            for p in &role.packages {
                if !packages.contains(p) {
                    packages.push(p.clone());
                }
            }
            for line in &role.preseed {
                preseed.push(self.render(line)?);
            }
            for step in &role.steps {
                let what = match &step.kind {
                    Kind::File { dest, validate, .. } => {
                        let dest = self.render(dest)?;
                        let validate = validate.as_deref().map(|v| self.render(v)).transpose()?;
                        What::File { fact: probe.file(&dest), dest, validate }
                    }
                    Kind::Directory { path, .. } => {
                        let path = self.render(path)?;
                        What::Directory { fact: probe.dir(&path), path }
                    }
                    Kind::Command { command, creates, unless, onlyif } => {
                        let mut checks = Vec::new();
                        let guards = [
                            (Guard::Creates, creates.as_ref().map(|c| self.render(c).map(|c| format!("test -e {}", sh_quote(&c))))),
                            (Guard::Unless, unless.as_ref().map(|c| self.render(c))),
                            (Guard::Onlyif, onlyif.as_ref().map(|c| self.render(c))),
                        ];
                        for (g, c) in guards {
                            if let Some(c) = c {
                                let c = c?;
                                checks.push((g, probe.check(&c), c));
                            }
                        }
                        What::Command { command: self.render(command)?, checks }
                    }
                    Kind::Service { name, .. } => {
                        let name = self.render(name)?;
                        probe.service(&name);
                        What::Service { name }
                    }
                    Kind::Wait { check, .. } => {
                        let check = self.render(check)?;
                        What::Wait { fact: probe.check(&check), check }
                    }
                };
                prepared.push(Prepared {
                    role: &role.name,
                    name: &step.name,
                    when: step.when.as_deref(),
                    kind: &step.kind,
                    what,
                });
            }
        }
        probe.packages = packages.clone();
        self.reporter.set_length(&self.host, prepared.len() + 1);

        // 2. Facts, one round trip.
        let t = Instant::now();
        let facts = self.gather(&probe).await?;
        self.reporter.log(
            &self.host,
            &format!("facts in {} ms: {} ({}), {} packages, {} files, {} checks, {} services",
                t.elapsed().as_millis(), facts.os_pretty, facts.virtualization,
                probe.packages.len(), probe.files.len(), probe.checks.len(), probe.services.len()),
        );
        if facts.os_id != "debian" && facts.os_id != "ubuntu" {
            return Err(format!("{} is not a Debian-family system; groundwork's playbooks use apt", facts.os_pretty));
        }
        let ctx = (self.full_ctx)(&facts);
        let mut dirty = false;
        // Which machine this name reached: resume skips and restarts only for the same one.
        let identity = format!("{} {}", self.session.host_key_fingerprint(), facts.machine_id);
        if let Some(j) = self.journal {
            j.write(&Entry::Host { run: self.run.clone(), host: self.host.clone(), identity: identity.clone() });
        }
        let resumable = self.resume.is_some_and(|r| r.done_for(&self.host, &identity));
        if let Some(r) = self.resume.filter(|r| r.same_inputs && !resumable && r.identities.contains_key(&self.host)) {
            self.reporter.note(
                &self.host,
                &format!("is not the machine run {} reached (new host key or machine-id): every step is checked again", r.run),
            );
        }
        let mut notified: HashSet<String> =
            self.resume.map(|r| r.pending_for(&self.host, &identity)).unwrap_or_default();
        if !notified.is_empty() {
            let mut list: Vec<&String> = notified.iter().collect();
            list.sort();
            self.reporter.note(
                &self.host,
                &format!("an earlier run changed files that {} watch(es) and stopped before restarting; restarting now",
                    list.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", ")),
            );
        }

        // 3. Packages: one apt transaction for every role of this host.
        let t = Instant::now();
        let missing: Vec<&String> = packages
            .iter()
            .filter(|p| facts.packages.get(*p) != Some(&true))
            .collect();
        if missing.is_empty() {
            self.finish_step("packages", "install", Status::Ok, t.elapsed(), None);
        } else {
            let list = missing.iter().map(|p| p.as_str()).collect::<Vec<_>>().join(" ");
            if self.dry_run {
                self.finish_step("packages", "install", Status::WouldChange, t.elapsed(), Some(&format!("apt-get install {list}")));
            } else {
                self.reporter.step_started(&self.host, "packages", "install");
                let script = packages::script(&missing.iter().map(|p| p.to_string()).collect::<Vec<_>>(), &preseed);
                match self.packages(&script).await {
                    Ok(()) => {
                        dirty = true;
                        self.finish_step("packages", "install", Status::Changed, t.elapsed(), Some(&format!("installed {list}")));
                    }
                    Err(e) => {
                        self.finish_step("packages", "install", Status::Failed, t.elapsed(), Some(&e));
                        return Err(format!("packages: {e}"));
                    }
                }
            }
        }

        // 4. Steps, role by role, after the roles they need (on any host) have converged.
        for role in roles {
            if !self.dry_run {
                let waited = tokio::select! {
                    w = self.board.wait_for_needs(&role.name) => w,
                    () = self.interrupted() => return Err(INTERRUPTED.into()),
                };
                if let Err(blocker) = waited {
                    return Err(format!("role {} not started: {blocker}", role.name));
                }
            }
            for p in prepared.iter().filter(|p| p.role == role.name) {
                if self.cancel.load(Ordering::SeqCst) {
                    return Err(INTERRUPTED.into());
                }
                let status = self.run_step(p, &facts, &ctx, dirty, resumable, &mut notified).await?;
                if status == Status::Changed {
                    dirty = true;
                }
            }
            self.board.finished_on(&role.name, &self.host, true);
        }
        Ok(())
    }

    /// One step with its bookkeeping: resume skip, `when`, status, journal.
    async fn run_step(
        &self,
        p: &Prepared<'_>,
        facts: &Facts,
        ctx: &Value,
        dirty: bool,
        resumable: bool,
        notified: &mut HashSet<String>,
    ) -> Result<Status, String> {
        let key = (self.host.clone(), p.role.to_string(), p.name.to_string());
        if resumable && self.resume.is_some_and(|r| r.done.contains(&key)) {
            self.finish_step(p.role, p.name, Status::Skipped, Duration::ZERO, Some("done by the interrupted run"));
            // Carried into this run's journal: a resume of this run still knows it.
            if let Some(j) = self.journal {
                j.write(&Entry::Step {
                    run: self.run.clone(),
                    host: self.host.clone(),
                    role: p.role.to_string(),
                    step: p.name.to_string(),
                    status: "done".into(),
                });
            }
            return Ok(Status::Skipped);
        }
        self.reporter.step_started(&self.host, p.role, p.name);
        let t = Instant::now();
        if let Some(cond) = p.when {
            let keep = self
                .env
                .compile_expression(cond)
                .and_then(|e| e.eval(ctx))
                .map_err(|e| format!("{} / {}: `when = {cond}`: {e}", p.role, p.name))?;
            if !keep.is_true() {
                self.finish_step(p.role, p.name, Status::Skipped, t.elapsed(), Some(&format!("when: {cond}")));
                return Ok(Status::Skipped);
            }
        }
        match self.step(p, facts, ctx, dirty, notified).await {
            Ok((status, detail)) => {
                self.finish_step(p.role, p.name, status, t.elapsed(), detail.as_deref());
                Ok(status)
            }
            Err(e) => {
                self.finish_step(p.role, p.name, Status::Failed, t.elapsed(), Some(&e));
                // The run's one-line error: what failed, and the last thing it said.
                let first = e.lines().next().unwrap_or("");
                let last = e.lines().skip(1).map(str::trim).filter(|l| !l.is_empty()).last();
                Err(match last {
                    Some(l) => format!("{} / {}: {first}: {l}", p.role, p.name),
                    None => format!("{} / {}: {first}", p.role, p.name),
                })
            }
        }
    }

    fn finish_step(&self, role: &str, step: &str, status: Status, took: Duration, detail: Option<&str>) {
        self.reporter.step_finished(&self.host, role, step, status, took, detail);
        if let Some(j) = self.journal {
            if role != "packages" && matches!(status, Status::Ok | Status::Changed | Status::Failed) {
                j.write(&Entry::Step {
                    run: self.run.clone(),
                    host: self.host.clone(),
                    role: role.to_string(),
                    step: step.to_string(),
                    status: status.as_str().to_string(),
                });
            }
        }
    }

    fn changed(&self) -> Status {
        if self.dry_run { Status::WouldChange } else { Status::Changed }
    }

    async fn live(&self, probe: &Probe) -> Result<Facts, String> {
        self.gather(probe).await
    }

    /// A file's or directory's state: from the snapshot, or live once the host has changed.
    async fn path_fact(&self, dirty: bool, facts: &Facts, idx: usize, path: &str, dir: bool) -> Result<PathFact, String> {
        if !dirty {
            return Ok(if dir { facts.dirs[idx].clone() } else { facts.files[idx].clone() });
        }
        let mut probe = Probe::default();
        if dir {
            probe.dir(path);
            Ok(self.live(&probe).await?.dirs.remove(0))
        } else {
            probe.file(path);
            Ok(self.live(&probe).await?.files.remove(0))
        }
    }

    async fn step(
        &self,
        p: &Prepared<'_>,
        facts: &Facts,
        ctx: &Value,
        dirty: bool,
        notified: &mut HashSet<String>,
    ) -> StepResult {
        match (p.kind, &p.what) {
            (Kind::File { source, notify, mode, owner, secret, .. }, What::File { dest, fact, validate }) => {
                let content = match source {
                    Source::Template(t) => self
                        .env
                        .get_template(&format!("{}/{t}", p.role))
                        .and_then(|tpl| tpl.render(ctx)),
                    Source::Inline(text) => self.env.render_str(text, ctx),
                }
                .map_err(|e| format!("template: {e:#}"))?;
                let current = self.path_fact(dirty, facts, *fact, dest, false).await?;
                let mode = u32::from_str_radix(mode, 8).unwrap_or(0o644);
                self.file(dest, content.as_bytes(), &current, validate.as_deref(), notify, mode, owner, *secret, notified).await
            }
            (Kind::Directory { mode, owner, .. }, What::Directory { path, fact }) => {
                let current = self.path_fact(dirty, facts, *fact, path, true).await?;
                let mode = u32::from_str_radix(mode, 8).unwrap_or(0o755);
                let (user, group) = owner.split_once(':').unwrap_or((owner, owner));
                let needed = match &current {
                    PathFact::Dir { mode: m, owner: o } => *m != mode || o != owner,
                    _ => true,
                };
                if !needed {
                    return Ok((Status::Ok, None));
                }
                let cmd = format!("install -d -m {mode:o} -o {} -g {} {}", sh_quote(user), sh_quote(group), sh_quote(path));
                if !self.dry_run {
                    self.change("directory", &cmd, None).await?;
                }
                Ok((self.changed(), Some(format!("{path} (mode {mode:o}, {owner})"))))
            }
            (Kind::Command { .. }, What::Command { command, checks }) => {
                let results: Vec<(Guard, i32)> = if dirty {
                    let mut probe = Probe::default();
                    let live: Vec<(Guard, usize)> =
                        checks.iter().map(|(g, _, c)| (*g, probe.check(c))).collect();
                    let f = self.live(&probe).await?;
                    live.iter().map(|(g, i)| (*g, f.checks[*i])).collect()
                } else {
                    checks.iter().map(|(g, i, _)| (*g, facts.checks[*i])).collect()
                };
                let skip = results.iter().any(|(g, rc)| match g {
                    Guard::Creates | Guard::Unless => *rc == 0,
                    Guard::Onlyif => *rc != 0,
                });
                if skip {
                    return Ok((Status::Ok, None));
                }
                if !self.dry_run {
                    self.change("command", command, None).await?;
                }
                Ok((self.changed(), Some(format!("$ {command}"))))
            }
            (Kind::Service { state, enabled, on_notify, .. }, What::Service { name }) => {
                let fact = if dirty || self.dry_run && notified.contains(name) {
                    let mut probe = Probe::default();
                    probe.service(name);
                    self.live(&probe).await?.services.remove(name)
                } else {
                    facts.services.get(name).cloned()
                };
                let fact = fact.ok_or_else(|| format!("no facts about service {name}"))?;
                let mut actions: Vec<String> = Vec::new();
                let was_notified = notified.contains(name);
                match state {
                    ServiceState::Started => {
                        if !fact.is_active() {
                            actions.push(format!("systemctl start {}", sh_quote(name)));
                        } else if was_notified {
                            let verb = match on_notify {
                                OnNotify::Restart => "restart",
                                OnNotify::Reload => "reload",
                            };
                            actions.push(format!("systemctl {verb} {}", sh_quote(name)));
                        }
                    }
                    ServiceState::Stopped => {
                        if fact.is_active() {
                            actions.push(format!("systemctl stop {}", sh_quote(name)));
                        }
                    }
                }
                if *enabled && !fact.is_enabled() {
                    actions.push(format!("systemctl enable {}", sh_quote(name)));
                } else if !*enabled && fact.is_enabled() && fact.enabled != "static" {
                    actions.push(format!("systemctl disable {}", sh_quote(name)));
                }
                if actions.is_empty() {
                    if was_notified {
                        self.handled(name, notified);
                    }
                    return Ok((Status::Ok, None));
                }
                let detail = actions.join("; ");
                if self.dry_run {
                    return Ok((Status::WouldChange, Some(detail)));
                }
                let mut script = actions.join(" && ");
                if *state == ServiceState::Started {
                    script.push_str(&format!(
                        " && sleep 0.2 && systemctl is-active --quiet {q} || {{ systemctl status --no-pager -n 15 {q}; exit 1; }}",
                        q = sh_quote(name)
                    ));
                }
                self.change(&format!("service {name}"), &script, None).await?;
                if was_notified {
                    self.handled(name, notified);
                }
                Ok((Status::Changed, Some(detail)))
            }
            (Kind::Wait { what, timeout, .. }, What::Wait { check, fact }) => {
                if !dirty && facts.checks[*fact] == 0 {
                    return Ok((Status::Ok, None));
                }
                if self.dry_run {
                    return Ok((Status::Ok, Some(format!("would wait for {what}"))));
                }
                let script = format!(
                    "end=$(( $(date +%s) + {timeout} )); while ! sh -c {} >/dev/null 2>&1; do [ \"$(date +%s)\" -ge \"$end\" ] && exit 1; sleep 0.2; done",
                    sh_quote(check)
                );
                let out = self.look(&script, Duration::from_secs(timeout + 30)).await?;
                if out.ok() {
                    Ok((Status::Ok, None))
                } else {
                    Err(format!("still no {what} after {timeout} s"))
                }
            }
            _ => Err("internal: step and its rendering disagree".into()),
        }
    }

    fn handled(&self, service: &str, notified: &mut HashSet<String>) {
        notified.remove(service);
        if let Some(j) = self.journal {
            j.write(&Entry::Handled {
                run: self.run.clone(),
                host: self.host.clone(),
                service: service.to_string(),
            });
        }
    }

    #[allow(clippy::too_many_arguments)]
    async fn file(
        &self,
        dest: &str,
        content: &[u8],
        current: &PathFact,
        validate: Option<&str>,
        notify: &[String],
        mode: u32,
        owner: &str,
        secret: bool,
        notified: &mut HashSet<String>,
    ) -> StepResult {
        let sha = hex(&Sha256::digest(content));
        let (content_differs, meta_differs) = match current {
            PathFact::File(f) => (f.sha256 != sha, f.mode != mode || f.owner != owner),
            PathFact::Absent => (true, false),
            PathFact::Other | PathFact::Dir { .. } => {
                return Err(format!("{dest} exists but is not a regular file; groundwork will not replace it"));
            }
        };
        if !content_differs && !meta_differs {
            return Ok((Status::Ok, None));
        }
        let detail = if content_differs {
            if secret {
                Some(format!("{dest}: content changed (secret file: not shown)"))
            } else {
                let old = if matches!(current, PathFact::File(_)) {
                    self.exec(&format!("cat -- {}", sh_quote(dest)), None).await?.stdout_str()
                } else {
                    String::new()
                };
                let new = String::from_utf8_lossy(content);
                let diff = similar::TextDiff::from_lines(old.as_str(), new.as_ref())
                    .unified_diff()
                    .context_radius(2)
                    .header(&format!("{dest} (live)"), &format!("{dest} (groundwork)"))
                    .to_string();
                Some(diff.trim_end().to_string())
            }
        } else {
            Some(format!("{dest}: mode {mode:o}, owner {owner}"))
        };
        if self.dry_run {
            for n in notify {
                notified.insert(n.clone());
            }
            return Ok((Status::WouldChange, detail));
        }
        // Record the notification first: if the run dies after the change, the next run
        // still restarts the service.
        let mut fresh: Vec<&String> = Vec::new();
        for n in notify {
            if notified.insert(n.clone()) {
                fresh.push(n);
                if let Some(j) = self.journal {
                    j.write(&Entry::Notify {
                        run: self.run.clone(),
                        host: self.host.clone(),
                        service: n.clone(),
                    });
                }
            }
        }
        let result = self.write_file(dest, content, validate, mode, owner, content_differs).await;
        if result.is_err() {
            // The live file did not change: nothing to restart for it.
            for n in fresh {
                self.handled(n, notified);
            }
        }
        result.map(|()| (Status::Changed, detail))
    }

    /// Put `content` in place (validated, old file kept), or only fix mode and owner.
    async fn write_file(
        &self,
        dest: &str,
        content: &[u8],
        validate: Option<&str>,
        mode: u32,
        owner: &str,
        content_differs: bool,
    ) -> Result<(), String> {
        let (user, group) = owner.split_once(':').unwrap_or((owner, owner));
        if content_differs {
            let dir = dest.rsplit_once('/').map_or("/", |(d, _)| if d.is_empty() { "/" } else { d });
            let base = dest.rsplit('/').next().unwrap_or("file");
            // Unique per run: two runs (or a killed one) never share a candidate file.
            let tmp = format!("{}/.{base}.groundwork-{}", dir.trim_end_matches('/'), self.run);
            let flat = dest.trim_start_matches('/').replace('/', "_");
            let mut script = format!(
                "set -e\numask 077\ndest={d}\ntmp={t}\nmkdir -p {dir}\ncat > \"$tmp\"\nchmod {mode:o} \"$tmp\"\nchown {u}:{g} \"$tmp\"\n",
                d = sh_quote(dest),
                t = sh_quote(&tmp),
                dir = sh_quote(dir),
                u = sh_quote(user),
                g = sh_quote(group),
            );
            if let Some(v) = validate {
                let cmd = v.replace("{tmp}", &sh_quote(&tmp));
                script.push_str(&format!(
                    "if ! out=$( {cmd} 2>&1 ); then rm -f \"$tmp\"; printf '%s\\n' \"$out\" >&2; exit 97; fi\n"
                ));
            }
            script.push_str(&format!(
                "if [ -e \"$dest\" ]; then mkdir -p /var/backups/groundwork; cp -a \"$dest\" \"/var/backups/groundwork/{flat}.$(date +%Y%m%dT%H%M%S)\"; \
                 ls -1t /var/backups/groundwork/{flat}.* 2>/dev/null | tail -n +6 | xargs -r rm -f; fi\nmv -f \"$tmp\" \"$dest\"\n"
            ));
            let out = self.exec(&script, Some(content)).await?;
            if out.status == 97 {
                let v = validate.unwrap_or_default();
                let mut msg = format!("the validator `{v}` refused the new {dest}; the live file is unchanged");
                for l in out.stderr_str().lines().take(15) {
                    msg.push_str(&format!("\n  {l}"));
                }
                return Err(msg);
            }
            if !out.ok() {
                return Err(format!("writing {dest} failed (exit {}): {}", out.status, out.stderr_str().trim()));
            }
        } else {
            let cmd = format!(
                "chmod {mode:o} {d} && chown {}:{} {d}",
                sh_quote(user),
                sh_quote(group),
                d = sh_quote(dest)
            );
            self.change("chmod/chown", &cmd, None).await?;
        }
        Ok(())
    }
}
