//! One host: what its phases share (the run's context, the SSH session, the rendered steps
//! and the facts), and the runner of its steps. Each step is decided from the facts by the
//! pure decisions of [`super::steps`]; the runner carries out the actions over SSH, with the
//! journal, notifications and progress. Once something changed on the host, later steps are
//! checked live (the snapshot may be stale); a run that changes nothing costs one round trip.

use std::cell::RefCell;
use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use minijinja::{Environment, Value};

use super::board::Board;
use super::error::RunError;
use super::facts::{Facts, PathFact, Probe, sh_quote};
use super::journal::{Entry, Journal, Resume};
use super::packages;
use super::report::{Reporter, Status};
use super::steps::{Action, Decision, Detail, Step, command, directory, file, service, wait, zone};
use crate::playbook::catalog::RoleSpec;
use crate::playbook::step::Source;
use crate::ssh::{Output, Session, SshOptions, Target};

/// What every host of a run shares.
pub struct RunContext<'a> {
    pub run: String,
    pub reporter: &'a Reporter,
    pub journal: Option<&'a Journal>,
    pub resume: Option<&'a Resume>,
    pub board: &'a Board,
    pub cancel: &'a AtomicBool,
    pub dry_run: bool,
    pub env: &'a Environment<'static>,
    /// The template context of the site (answers, derived values, secrets).
    pub site_ctx: &'a serde_json::Value,
    pub ssh: &'a SshOptions,
    /// Local files to upload, hashed once per run whatever the number of hosts.
    pub uploads: &'a LocalFiles,
    /// The package bundle every host installs from (`[site] package-bundle`).
    pub package_repo: Option<&'a packages::Repo>,
}

/// The size and sha256 of the local files steps upload, by path.
#[derive(Default)]
pub struct LocalFiles(tokio::sync::Mutex<std::collections::HashMap<String, file::Local>>);

impl LocalFiles {
    /// Starting with files hashed before the run.
    pub fn known(files: &[file::Local]) -> LocalFiles {
        let known = files.iter().map(|l| (l.path.clone(), l.clone())).collect();
        LocalFiles(tokio::sync::Mutex::new(known))
    }

    /// The file at `path`, hashed on a blocking thread the first time it is asked for.
    pub async fn get(&self, path: &str) -> Result<file::Local, String> {
        // Held while hashing: hosts that upload the same file wait for one hash.
        let mut known = self.0.lock().await;
        if let Some(l) = known.get(path) {
            return Ok(l.clone());
        }
        let owned = path.to_string();
        let local = tokio::task::spawn_blocking(move || hash_file(&owned))
            .await
            .map_err(|e| format!("hashing {path}: {e}"))?
            .map_err(|e| format!("cannot read {path} on this machine: {e}"))?;
        known.insert(path.to_string(), local.clone());
        Ok(local)
    }
}

fn hash_file(path: &str) -> std::io::Result<file::Local> {
    use sha2::{Digest, Sha256};
    use std::io::Read;
    let mut f = std::fs::File::open(path)?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut size = 0u64;
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        size += n as u64;
        h.update(&buf[..n]);
    }
    Ok(file::Local { path: path.to_string(), size, sha256: crate::playbook::catalog::hex(&h.finalize()) })
}

/// A step of a role, rendered for this host.
pub struct Prepared<'c> {
    pub role: &'c str,
    /// Rendered with its item for a step with `each`.
    pub name: std::borrow::Cow<'c, str>,
    pub when: Option<&'c str>,
    pub step: Step,
    /// Where its facts are in the snapshot (see [`Step::ask`]).
    pub at: Vec<usize>,
}

/// What the facts phase learned, and what converging keeps track of.
pub struct Work<'c> {
    pub prepared: Vec<Prepared<'c>>,
    /// The packages of the host's roles, and the debconf answers they need.
    pub packages: Vec<String>,
    pub preseed: Vec<String>,
    pub facts: Facts,
    /// The template context with the facts.
    pub ctx: Value,
    /// What this run did to the host so far.
    pub before: Before,
    /// An interrupted run on this same machine: its finished steps are skipped.
    pub resumable: bool,
    /// Services to restart or reload (from this run, or one that stopped before it could).
    pub notified: HashSet<String>,
}

/// What a run did to a host before a step.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Before {
    /// Nothing changed on the host.
    Nothing,
    /// Changes a wait must still allow for that this run's facts already show: what a dry run
    /// would change, or the steps an interrupted run finished before this one resumed it.
    Unsettled,
    /// This run changed the host: its facts are stale, later steps are checked live.
    Changed,
}

impl Before {
    pub fn dirty(self) -> bool {
        self == Before::Changed
    }
}

/// One host of a run, as its phases see it.
pub struct Host<'a> {
    pub name: String,
    pub target: Target,
    pub roles: Vec<&'a RoleSpec>,
    pub cx: &'a RunContext<'a>,
    /// Set by the connect phase.
    pub session: Option<Session>,
    /// Set by the facts phase.
    pub work: Option<Work<'a>>,
    /// The template context without facts (paths, commands, checks).
    base_ctx: Value,
}

type StepResult = Result<(Status, Option<String>), String>;

/// How long one command may take before its step fails.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(300);
/// The package transaction of a host (downloads and unpacks everything at once).
const PACKAGES_TIMEOUT: Duration = Duration::from_secs(1800);
pub const INTERRUPTED: &str = "interrupted; the next apply continues from here";

impl<'a> Host<'a> {
    pub fn new(target: Target, roles: Vec<&'a RoleSpec>, cx: &'a RunContext<'a>) -> Host<'a> {
        let base_ctx = super::context::host_context(cx.site_ctx, &target.name, &Facts::default());
        Host { name: target.name.clone(), target, roles, cx, base_ctx, session: None, work: None }
    }

    pub(crate) fn session(&self) -> Result<&Session, String> {
        self.session.as_ref().ok_or_else(|| "not connected".to_string())
    }

    pub(crate) fn render(&self, s: &str) -> Result<String, String> {
        if !s.contains("{{") && !s.contains("{%") {
            return Ok(s.to_string());
        }
        self.cx.env.render_str(s, &self.base_ctx).map_err(|e| format!("cannot render `{s}`: {e}"))
    }

    /// The steps of `role` rendered for this host (see [`super::context::role_steps`]).
    pub(crate) fn role_steps<'r>(&self, role: &'r RoleSpec) -> Result<Vec<super::context::RoleStep<'r>>, String> {
        super::context::role_steps(self.cx.env, &self.base_ctx, role)
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
        let out = match tokio::time::timeout(limit, self.session()?.exec_watching(cmd, stdin, on_line)).await {
            Ok(r) => r.map_err(|e| e.to_string())?,
            Err(_) => {
                let first = cmd.lines().find(|l| !l.trim().is_empty()).unwrap_or(cmd);
                self.cx.reporter.log(&self.name, &format!("$ {cmd}\n  -> no answer within {} s", limit.as_secs()));
                return Err(format!("no answer within {} s from `{first}`", limit.as_secs()));
            }
        };
        self.cx.reporter.command(&self.name, cmd, out.status, &out.stdout_str(), &out.stderr_str(), t.elapsed());
        Ok(out)
    }

    /// Run `script` with a local file streamed to its stdin; the time limit allows for the
    /// file's size at a slow 1 MiB/s.
    async fn upload(&self, script: &str, local: &file::Local) -> Result<Output, String> {
        let limit = COMMAND_TIMEOUT + Duration::from_secs(local.size >> 20);
        let t = Instant::now();
        let session = self.session()?;
        let out = tokio::time::timeout(limit, session.exec_file(script, std::path::Path::new(&local.path)))
            .await
            .map_err(|_| format!("the upload of {} took more than {} s", local.path, limit.as_secs()))?
            .map_err(|e| e.to_string())?;
        let secs = t.elapsed().as_secs_f64();
        self.cx.reporter.command(&self.name, script, out.status, &out.stdout_str(), &out.stderr_str(), t.elapsed());
        self.cx.reporter.log(
            &self.name,
            &format!(
                "uploaded {} ({}) in {secs:.2} s: {:.1} MiB/s",
                local.path,
                file::size(local.size),
                local.size as f64 / (1u64 << 20) as f64 / secs.max(1e-3)
            ),
        );
        Ok(out)
    }

    /// The package transaction; a failure names the part that failed, with apt's last words.
    pub(crate) async fn packages(&self, script: &str) -> Result<(), String> {
        // The part running now (a wait for another apt included) shows on the progress bar.
        let on_line = |line: &str| {
            if let Some(part) = line.strip_prefix("groundwork-part\t") {
                self.cx.reporter.progress(&self.name, "packages", part);
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

    /// Puts local files at their paths on the host, as file steps do with uploads (streamed,
    /// checked against their sha256 on the host, moved into place), skipping those whose
    /// sha256 the host's copy has already: one round trip finds which. Returns how many files
    /// and bytes were sent.
    pub(crate) async fn sync_files(&self, files: &[(String, file::Local)]) -> Result<(usize, u64), String> {
        let mut probe = Probe::default();
        let at: Vec<usize> = files.iter().map(|(dest, _)| probe.file(dest)).collect();
        let facts = self.live(&probe).await?;
        let (mut sent, mut bytes) = (0, 0);
        for ((dest, local), i) in files.iter().zip(at) {
            let step = file::File {
                dest: dest.clone(),
                source: Source::Local(local.path.clone()),
                validate: None,
                notify: Vec::new(),
                mode: 0o644,
                owner: "root:root".into(),
                secret: false,
            };
            let decision = file::decide_upload(&step, local, &facts.files[i], &self.cx.run)?;
            for a in &decision.actions {
                self.act(a).await.map_err(|e| format!("{dest}: {e}"))?;
            }
            if decision.actions.iter().any(|a| matches!(a, Action::Write(_))) {
                sent += 1;
                bytes += local.size;
            }
        }
        Ok((sent, bytes))
    }

    /// Resolves once the run is interrupted (Ctrl-C).
    pub(crate) async fn interrupted(&self) {
        while !self.cx.cancel.load(Ordering::SeqCst) {
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

    pub(crate) async fn gather(&self, probe: &Probe) -> Result<Facts, String> {
        let out = self.look(&probe.script(), COMMAND_TIMEOUT).await?;
        // Checks report on standard error (see [`Probe::script`]), the rest on standard output.
        let facts = Facts::parse(&format!("{}\n{}", out.stderr_str(), out.stdout_str()), probe);
        if !facts.complete {
            return Err(format!(
                "facts are incomplete (exit {}): {}",
                out.status,
                out.stderr_str().trim().lines().last().unwrap_or("")
            ));
        }
        Ok(facts)
    }

    /// One step with its bookkeeping: resume skip, `when`, status, journal.
    pub(crate) async fn run_step(
        &self,
        p: &Prepared<'_>,
        facts: &Facts,
        ctx: &Value,
        before: Before,
        resumable: bool,
        notified: &RefCell<HashSet<String>>,
    ) -> Result<Status, RunError> {
        let failed = |cause: String| RunError::Step {
            host: self.name.clone(),
            role: p.role.to_string(),
            step: p.name.to_string(),
            cause,
        };
        if self.done_before(p, resumable) {
            self.finish_step(p.role, &p.name, Status::Skipped, Duration::ZERO, Some("done by the interrupted run"));
            // Carried into this run's journal: a resume of this run still knows it.
            if let Some(j) = self.cx.journal {
                j.write(&Entry::Step {
                    run: self.cx.run.clone(),
                    host: self.name.clone(),
                    role: p.role.to_string(),
                    step: p.name.to_string(),
                    status: "done".into(),
                });
            }
            return Ok(Status::Skipped);
        }
        self.cx.reporter.step_started(&self.name, p.role, &p.name);
        let t = Instant::now();
        if let Some(cond) = p.when {
            let keep = self
                .cx
                .env
                .compile_expression(cond)
                .and_then(|e| e.eval(ctx))
                .map_err(|e| failed(format!("`when = {cond}`: {e}")))?;
            if !keep.is_true() {
                self.finish_step(p.role, &p.name, Status::Skipped, t.elapsed(), Some(&format!("when: {cond}")));
                return Ok(Status::Skipped);
            }
        }
        match self.step(p, facts, ctx, before, notified).await {
            Ok((status, detail)) => {
                self.finish_step(p.role, &p.name, status, t.elapsed(), detail.as_deref());
                Ok(status)
            }
            Err(e) => {
                self.finish_step(p.role, &p.name, Status::Failed, t.elapsed(), Some(&e));
                if e == INTERRUPTED {
                    return Err(RunError::Interrupted { host: self.name.clone() });
                }
                // The run's one-line error: what failed, and the last thing it said.
                let first = e.lines().next().unwrap_or("");
                let last = e.lines().skip(1).map(str::trim).filter(|l| !l.is_empty()).last();
                Err(failed(match last {
                    Some(l) => format!("{first}: {l}"),
                    None => first.to_string(),
                }))
            }
        }
    }

    /// Whether the interrupted run this one resumes finished the step.
    pub(crate) fn done_before(&self, p: &Prepared<'_>, resumable: bool) -> bool {
        let key = (self.name.clone(), p.role.to_string(), p.name.to_string());
        resumable && self.cx.resume.is_some_and(|r| r.done.contains(&key))
    }

    pub(crate) fn finish_step(&self, role: &str, step: &str, status: Status, took: Duration, detail: Option<&str>) {
        self.cx.reporter.step_finished(&self.name, role, step, status, took, detail);
        if let Some(j) = self.cx.journal
            && role != "packages"
            && matches!(status, Status::Ok | Status::Changed | Status::Failed)
        {
            j.write(&Entry::Step {
                run: self.cx.run.clone(),
                host: self.name.clone(),
                role: role.to_string(),
                step: step.to_string(),
                status: status.as_str().to_string(),
            });
        }
    }

    /// A step's facts now, after something changed on the host.
    async fn live(&self, probe: &Probe) -> Result<Facts, String> {
        self.gather(&Probe { steps_only: true, ..probe.clone() }).await
    }

    /// A file's or directory's state: from the snapshot, or live once the host has changed.
    async fn path_fact(
        &self,
        dirty: bool,
        facts: &Facts,
        idx: usize,
        path: &str,
        dir: bool,
    ) -> Result<PathFact, String> {
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

    /// Decide a step from the facts (live ones once the host changed), then carry it out.
    async fn step(
        &self,
        p: &Prepared<'_>,
        facts: &Facts,
        ctx: &Value,
        before: Before,
        notified: &RefCell<HashSet<String>>,
    ) -> StepResult {
        let dirty = before.dirty();
        let decision = match &p.step {
            Step::File(f) if matches!(f.source, Source::Local(_)) => {
                let Source::Local(path) = &f.source else { unreachable!("matched above") };
                let local = self.cx.uploads.get(path).await?;
                let current = self.path_fact(dirty, facts, p.at[0], &f.dest, false).await?;
                file::decide_upload(f, &local, &current, &self.cx.run)?
            }
            Step::File(f) => {
                let content = match &f.source {
                    Source::Template(t) => {
                        self.cx.env.get_template(&format!("{}/{t}", p.role)).and_then(|tpl| tpl.render(ctx))
                    }
                    Source::Inline(text) => self.cx.env.render_str(text, ctx),
                    Source::Copy { content, .. } => Ok(content.clone()),
                    Source::Local(_) => unreachable!("uploads are decided above"),
                }
                .map_err(|e| format!("template: {e:#}"))?;
                let current = self.path_fact(dirty, facts, p.at[0], &f.dest, false).await?;
                file::decide(f, content.as_bytes(), &current, &self.cx.run)?
            }
            Step::Directory(d) => {
                let current = self.path_fact(dirty, facts, p.at[0], &d.path, true).await?;
                directory::decide(d, &current)
            }
            Step::Command(c) => {
                let codes: Vec<i32> = if dirty {
                    let mut probe = Probe::default();
                    let at = p.step.ask(&mut probe);
                    let live = self.live(&probe).await?;
                    at.iter().map(|i| live.checks[*i]).collect()
                } else {
                    p.at.iter().map(|i| facts.checks[*i]).collect()
                };
                command::decide(c, &codes)
            }
            Step::Service(s) => {
                let fact = if dirty || self.cx.dry_run && notified.borrow().contains(&s.name) {
                    let mut probe = Probe::default();
                    probe.service(&s.name);
                    self.live(&probe).await?.services.remove(&s.name)
                } else {
                    facts.services.get(&s.name).cloned()
                };
                service::decide(s, fact.as_ref(), &notified.borrow())?
            }
            // Once the host changed the snapshot says nothing: the wait itself looks.
            // A wait is for what changed before it; on a host where nothing did, it has nothing to
            // wait for (and a no-op asks nothing for it).
            Step::Wait(w) => wait::decide(w, before != Before::Nothing),
            Step::Zone(z) => {
                let fact = if dirty {
                    let mut probe = Probe::default();
                    probe.zone(z);
                    self.live(&probe).await?.zones.remove(0)
                } else {
                    facts.zones[p.at[0]].clone()
                };
                zone::decide(z, &fact, &self.cx.run, self.cx.dry_run)?
            }
        };
        self.carry_out(&decision, notified).await
    }

    /// Take a decision's actions (or, in a dry run, say what they would do), with its
    /// notifications.
    async fn carry_out(&self, d: &Decision, notified: &RefCell<HashSet<String>>) -> StepResult {
        if d.is_converged() {
            if let Some(s) = &d.settles {
                self.handled(s, notified);
            }
            return Ok((Status::Ok, None));
        }
        let live = match &d.detail {
            Some(Detail::Diff { path, live: true, .. }) => {
                Some(self.exec(&format!("cat -- {}", sh_quote(path)), None).await?.stdout_str())
            }
            _ => None,
        };
        let (status, detail) = d.outcome(self.cx.dry_run, live.as_deref());
        if self.cx.dry_run {
            notified.borrow_mut().extend(d.notify.iter().cloned());
            return Ok((status, detail));
        }
        // Record the notification first: if the run dies after the change, the next run
        // still restarts the service.
        let mut fresh: Vec<&String> = Vec::new();
        for n in &d.notify {
            if notified.borrow_mut().insert(n.clone()) {
                fresh.push(n);
                if let Some(j) = self.cx.journal {
                    j.write(&Entry::Notify { run: self.cx.run.clone(), host: self.name.clone(), service: n.clone() });
                }
            }
        }
        for a in &d.actions {
            if let Err(e) = self.act(a).await {
                // The live file did not change: nothing to restart for it.
                for n in fresh {
                    self.handled(n, notified);
                }
                return Err(e);
            }
        }
        if let Some(s) = &d.settles {
            self.handled(s, notified);
        }
        Ok((status, detail))
    }

    /// One action on the host. A wait is read-only, so an interrupt stops it at once.
    async fn act(&self, a: &Action) -> Result<(), String> {
        let script = a.script();
        let out = match a {
            Action::Wait { timeout, .. } => self.look(&script, Duration::from_secs(timeout + 30)).await?,
            _ if a.stdin_file().is_some() => {
                let local = a.stdin_file().expect("checked");
                self.upload(&script, local).await?
            }
            _ => self.exec(&script, a.stdin()).await?,
        };
        a.verdict(out.status, &out.stdout_str(), &out.stderr_str())
    }

    fn handled(&self, service: &str, notified: &RefCell<HashSet<String>>) {
        notified.borrow_mut().remove(service);
        if let Some(j) = self.cx.journal {
            j.write(&Entry::Handled {
                run: self.cx.run.clone(),
                host: self.name.clone(),
                service: service.to_string(),
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_known_before_the_run_are_not_read_again() {
        let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
        let bundle = file::Local { path: "/nonexistent/bundle/k3s/k3s".into(), size: 7, sha256: "ab".repeat(32) };
        let files = LocalFiles::known(std::slice::from_ref(&bundle));
        // The path does not exist: only the known sum can answer.
        assert_eq!(rt.block_on(files.get(&bundle.path)).unwrap(), bundle);
        let err = rt.block_on(files.get("/nonexistent/other")).unwrap_err();
        assert!(err.contains("cannot read /nonexistent/other"), "{err}");
    }
}
