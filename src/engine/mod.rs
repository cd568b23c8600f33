//! The engine: a run prepares (secrets, log, journal, resume point), runs the list of
//! [`phases`] on every host in parallel (connect, facts in one round trip, packages, the steps
//! of its roles in plan order, disconnect), changing only what differs, then sums up. A dry run
//! (`plan --live`) runs the same phases up to the point of changing anything.

pub mod board;
pub mod context;
pub mod drift;
pub mod error;
pub mod facts;
pub mod host;
pub mod journal;
pub mod ledger;
pub mod packages;
pub mod phases;
pub mod report;
pub mod reset;
pub mod steps;

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

use crate::answers::model::{Answers, Role};
use crate::engine::report::Status;
use crate::playbook::catalog::{Catalog, RoleSpec, hex};
use crate::ssh::{SshOptions, Target};
use crate::state::{Secrets, StateDir};

use board::Board;
use context::Redactor;
use host::{Host, RunContext};
use journal::{Entry, Journal, Resume};
use report::Reporter;

#[derive(Debug, Clone, Default)]
pub struct Options {
    pub dry_run: bool,
    pub json: bool,
    /// Only these hosts (all when empty).
    pub hosts: Vec<String>,
    /// Local files whose size and sha256 are known already (the air-gap bundle, verified
    /// before the run): uploads of them are not hashed again.
    pub local_files: Vec<steps::file::Local>,
    /// `[site] package-bundle`, checked before the run: every host installs its packages from
    /// it only (uploaded to [`packages::REPO`] first).
    pub package_repo: Option<packages::Repo>,
}

#[derive(Debug, Clone)]
pub struct Outcome {
    pub ok: bool,
    pub run: String,
    pub changed: usize,
    pub log: PathBuf,
}

pub(crate) fn run_id() -> String {
    let t = humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string();
    let compact: String = t.chars().filter(|c| c.is_ascii_alphanumeric()).collect();
    format!("{compact}-{:04x}", rand::random::<u16>())
}

/// What identifies the inputs of a run: a journal is resumed only with the same.
fn inputs_digest(a: &Answers, catalog: &Catalog) -> String {
    let mut h = Sha256::new();
    h.update(serde_json::to_vec(a).expect("answers serialize"));
    h.update(catalog.digest.as_bytes());
    hex(&h.finalize())
}

/// The target of a host of the answer file: this machine (`local = true`, or unset and its
/// address one of this machine's: no SSH), or over SSH with its key (`~` expanded; default
/// `~/.ssh/id_ed25519`).
pub(crate) fn target_of(host: &crate::answers::model::Host) -> Target {
    Target {
        local: host.local.unwrap_or_else(|| crate::ssh::is_this_machine(host.address)),
        name: host.name.clone(),
        address: host.address.to_string(),
        port: host.ssh_port,
        user: host.ssh_user.clone(),
        key_path: crate::ssh::expand_tilde(
            host.ssh_key.as_deref().unwrap_or(std::path::Path::new("~/.ssh/id_ed25519")),
        ),
    }
}

/// Whether this run builds the cluster for the first time: every k3s node is in it and no
/// kubeconfig was fetched yet (a re-run, or a run of some hosts, skips the preflight).
fn first_cluster_build(a: &Answers, in_run: &[String], state: &StateDir) -> bool {
    let nodes = crate::cluster::nodes(a);
    a.k3s.is_some()
        && !nodes.is_empty()
        && nodes.iter().all(|(h, _)| in_run.contains(&h.name))
        && !state.root.join("kubeconfig").exists()
}

/// After every host has its files: the k3s nodes started or restarted in rollout order
/// (src/cluster/). It needs every node of the cluster in the run; `false` when it failed.
async fn cluster_phase(
    a: &Answers,
    in_run: &[String],
    reporter: &Reporter,
    ssh_opts: &SshOptions,
    state: &StateDir,
    dry_run: bool,
) -> bool {
    let nodes = crate::cluster::nodes(a);
    if nodes.is_empty() || a.k3s.is_none() {
        return true;
    }
    let left_out: Vec<&str> =
        nodes.iter().filter(|(h, _)| !in_run.contains(&h.name)).map(|(h, _)| h.name.as_str()).collect();
    if !left_out.is_empty() {
        reporter.note("-", &format!("cluster: not started or restarted: {} left out of this run", left_out.join(", ")));
        return true;
    }
    let targets: Vec<Target> = nodes.iter().map(|(h, _)| target_of(h)).collect();
    let sessions = futures::future::join_all(targets.iter().map(|t| crate::ssh::Session::connect(t, ssh_opts))).await;
    let mut held = Vec::new();
    for ((h, _), s) in nodes.iter().zip(sessions) {
        match s {
            Ok(s) => held.push(s),
            Err(e) => {
                let err = error::RunError::Cluster { host: h.name.clone(), cause: format!("ssh: {e}") };
                reporter.late_failure(&h.name, &err);
                return false;
            }
        }
    }
    let members: Vec<crate::cluster::start::Member<'_>> = nodes
        .iter()
        .zip(&held)
        .map(|((h, kind), s)| crate::cluster::start::Member { name: h.name.clone(), kind: *kind, session: s })
        .collect();
    let result = crate::cluster::start::run(a, &members, reporter, dry_run, state).await;
    drop(members);
    for s in held {
        s.close().await;
    }
    match result {
        Ok(()) => true,
        Err((host, cause)) => {
            reporter.late_failure(&host, &error::RunError::Cluster { host: host.clone(), cause });
            false
        }
    }
}

/// After the cluster: the GitOps engine installed from the bundle on the first k3s server,
/// then the site contract, the repository access and the sync objects applied, stage by stage
/// (src/handoff/), unless that server applied exactly these bytes before. How the sync goes
/// is reported, never a failure of the run: a deploy key just printed is not added yet, an
/// empty repository is the operator's to fill (`verify` shows both). Needs the first server
/// in the run; `false` when it failed.
async fn handoff_phase(
    a: &Answers,
    secrets: &Secrets,
    in_run: &[String],
    reporter: &Reporter,
    ssh_opts: &SshOptions,
    dry_run: bool,
) -> bool {
    use crate::handoff::{self, Stage, install, ready::Sync};
    let (Some(g), Some(_)) = (&a.gitops, &a.k3s) else { return true };
    let Some((_, first)) = a.hosts_with(Role::K3sServer).next() else { return true };
    if !in_run.contains(&first.name) {
        reporter.note(
            "-",
            &format!("hand-off: not applied: {} (the first k3s server) is left out of this run", first.name),
        );
        return true;
    }
    let host = first.name.clone();
    let fail = |cause: String| {
        reporter.late_failure(&host, &error::RunError::Handoff { host: host.clone(), cause });
        false
    };
    let Some((_, bundle)) = crate::bundle::check::bundle_dir(a) else {
        return fail("[k3s] names no airgap-bundle".into());
    };
    let engine = match install::engine_manifest(a, &bundle) {
        Ok(e) => e,
        Err(e) => return fail(e),
    };
    let docs = match handoff::documents(a, secrets) {
        Ok(d) => d,
        Err(e) => return fail(e.to_string()),
    };
    let titled: Vec<(String, String)> = docs.iter().map(|d| (d.title(), d.yaml().to_string())).collect();
    let stamp = install::stamp(&engine, &titled);
    let install_step = format!("install {} {}", install::engine_name(engine.engine), engine.version);
    let stages =
        [(Stage::Contract, "site contract"), (Stage::Repository, "repository access"), (Stage::Sync, "sync objects")];
    let server = match crate::ssh::Session::connect(&target_of(first), ssh_opts).await {
        Ok(s) => s,
        Err(e) => return fail(format!("ssh: {e}")),
    };
    let result = async {
        let all_steps = std::iter::once(install_step.clone()).chain(stages.iter().map(|(_, n)| n.to_string()));
        let (changed, gone) = install::changes(&install::applied_before(&server).await?, &stamp);
        if !gone.is_empty() {
            reporter
                .note(&host, &format!("hand-off: no longer in the answers, left in the cluster: {}", gone.join(", ")));
        }
        if changed.is_empty() {
            for step in all_steps {
                reporter.step_finished(&host, "handoff", &step, Status::Ok, Duration::ZERO, None);
            }
            return Ok(());
        }
        if dry_run {
            for step in all_steps {
                reporter.step_finished(&host, "handoff", &step, Status::WouldChange, Duration::ZERO, None);
            }
            // What would be applied anew, secrets masked: the titles shown, the documents logged.
            reporter.note(&host, &format!("hand-off would apply: {}", changed.join(", ")));
            let masked: Vec<handoff::Document> =
                docs.iter().filter(|d| changed.contains(&d.title())).cloned().collect();
            reporter.log(&host, &handoff::masked_stream(&masked));
            return Ok(());
        }
        reporter.log(&host, &format!("hand-off: new or changed: {}", changed.join(", ")));
        if engine.patched > 0 {
            reporter.log(
                &host,
                &format!(
                    "hand-off: {} image pull policies set to IfNotPresent (no registry mirror in the air gap)",
                    engine.patched
                ),
            );
        }
        reporter.step_started(&host, "handoff", &install_step);
        let t = Instant::now();
        let progress = |m: &str| reporter.progress(&host, "handoff", m);
        if let Err(e) = install::install(&server, &engine, &progress).await {
            reporter.step_finished(&host, "handoff", &install_step, Status::Failed, t.elapsed(), Some(&e));
            return Err(e);
        }
        reporter.step_finished(&host, "handoff", &install_step, Status::Changed, t.elapsed(), None);
        // Stage by stage: the sync objects' kinds exist once the engine's CRDs do, and the
        // engine reads the contract and its access the moment they appear.
        for (stage, name) in stages {
            let part: Vec<handoff::Document> = docs.iter().filter(|d| d.stage == stage).cloned().collect();
            if part.is_empty() {
                continue;
            }
            reporter.step_started(&host, "handoff", name);
            let t = Instant::now();
            match install::apply(&server, None, &handoff::stream(&part)).await {
                Ok(()) => reporter.step_finished(&host, "handoff", name, Status::Changed, t.elapsed(), None),
                Err(e) => {
                    reporter.step_finished(&host, "handoff", name, Status::Failed, t.elapsed(), Some(&e));
                    return Err(format!("{name}: {e}"));
                }
            }
        }
        install::record(&server, &stamp).await?;
        let states = install::wait_sync(&server, engine.engine, Duration::from_secs(60), &progress).await;
        for (what, state) in states {
            let said = match state {
                Sync::Ready(rev) => format!(
                    "hand-off: {what} ready{}",
                    if rev.is_empty() { String::new() } else { format!(" at {rev}") }
                ),
                Sync::Pending(m) => format!("hand-off: {what} not reconciled yet: {m}"),
                Sync::Failed(m) => {
                    format!("hand-off: {what} failed: {m} (groundwork verify shows it; fix the repository access)")
                }
            };
            reporter.note("-", &said);
        }
        Ok::<(), String>(())
    }
    .await;
    server.close().await;
    // The deploy key's public half, to add to the repository (the private half never leaves
    // secrets.toml and the cluster's Secret).
    if let Ok(repo) = handoff::sync::RepoUrl::parse(&g.repository)
        && repo.scheme == handoff::sync::Scheme::Ssh
        && let Ok(notice) = handoff::sync::deploy_key_notice(secrets, &repo)
    {
        reporter.note("-", &notice);
    }
    match result {
        Ok(()) => true,
        Err(e) => fail(e),
    }
}

/// The hosts of this run (`only`: `--host`, empty for all) that are provisioned on Proxmox.
fn provisioned<'a>(a: &'a Answers, only: &'a [String]) -> impl Iterator<Item = &'a crate::answers::model::Host> {
    a.hosts.iter().filter(move |h| h.provision.is_some() && (only.is_empty() || only.contains(&h.name)))
}

/// The provisioning phase (src/proxmox/provision.rs), before any SSH connection: each
/// provisioned host of the run is found, created and started, or changed, all of them side by
/// side (Proxmox runs each guest's tasks as its own worker). Returns the hosts that the later
/// phases leave out: absent ones in a dry run (nothing to connect to yet), and those whose
/// guest failed (with their error).
async fn provision_phase(
    a: &Answers,
    client: &crate::proxmox::Client,
    reporter: &Reporter,
    opts: &Options,
    in_run: &[String],
) -> Result<Vec<(String, Option<error::RunError>)>, String> {
    use crate::proxmox::provision as pv;
    let p = a.proxmox.as_ref().expect("a client is made only with [proxmox]");
    let hosts: Vec<&crate::answers::model::Host> =
        provisioned(a, &opts.hosts).filter(|h| in_run.contains(&h.name)).collect();
    reporter.note("-", &format!("proxmox: {} guest(s) of this run on node {}", hosts.len(), p.node));
    let all = pv::guests(client).await.map_err(|e| format!("proxmox: {e}"))?;
    let vm_template = pv::vm_template(p, &all);
    let vmids = pv::Vmids::new(&all);
    let guests = Guests { a, client, reporter, opts, all: &all, vm_template, vmids: &vmids };
    let done = futures::future::join_all(hosts.iter().map(|h| guests.provision(h))).await;
    Ok(done.into_iter().flatten().collect())
}

/// What every host's provisioning shares in one run.
struct Guests<'r> {
    a: &'r Answers,
    client: &'r crate::proxmox::Client,
    reporter: &'r Reporter,
    opts: &'r Options,
    all: &'r [crate::proxmox::provision::Guest],
    vm_template: Option<(u64, &'r str)>,
    vmids: &'r crate::proxmox::provision::Vmids,
}

impl Guests<'_> {
    /// One host's guest: `Some` when the later phases leave the host out (see
    /// [`provision_phase`]).
    async fn provision(&self, h: &crate::answers::model::Host) -> Option<(String, Option<error::RunError>)> {
        use crate::proxmox::provision::{self as pv, Action};
        const ROLE: &str = "proxmox";
        let (a, client, reporter, opts, vm_template) =
            (self.a, self.client, self.reporter, self.opts, self.vm_template);
        let p = a.proxmox.as_ref().expect("a client is made only with [proxmox]");
        let name = h.name.as_str();
        let step = "guest";
        let started = Instant::now();
        let fail = |cause: String| {
            reporter.step_finished(name, ROLE, step, Status::Failed, started.elapsed(), Some(&cause));
            Some((name.to_string(), Some(error::RunError::Provision { host: name.to_string(), cause })))
        };
        let plan = match pv::compare(a, h, self.all, client, vm_template).await {
            Ok(plan) => plan,
            Err(e) => return fail(e),
        };
        for n in &plan.notes {
            reporter.note(name, &format!("proxmox: {n}"));
        }
        if let Some(built) = &plan.outdated {
            reporter.note(
                name,
                &format!(
                    "proxmox: OUTDATED: the guest was built from template {built}, the answers name {} now; it keeps running as it is (`groundwork rebuild {name}` recreates it and loses what is on its disk)",
                    pv::template_tag(&pv::template_identity(p, plan.kind, vm_template))
                ),
            );
        }
        let progress = |m: &str| reporter.progress(name, ROLE, m);
        let result = match &plan.action {
            Action::Nothing => {
                reporter.step_finished(name, ROLE, step, Status::Ok, started.elapsed(), None);
                return None;
            }
            Action::Create(what) if opts.dry_run => {
                reporter.step_finished(name, ROLE, step, Status::WouldChange, started.elapsed(), Some(what));
                reporter.note(name, "proxmox: its other steps are planned once the guest exists");
                return Some((name.to_string(), None));
            }
            Action::Change { diff, start, .. } if opts.dry_run => {
                let d = pv::describe(diff, *start);
                reporter.step_finished(name, ROLE, step, Status::WouldChange, started.elapsed(), Some(&d));
                // Stopped: nothing to connect to in a dry run.
                return start.then(|| (name.to_string(), None));
            }
            Action::Create(what) => {
                reporter.step_started(name, ROLE, step);
                reporter.say(&format!("{name}: proxmox: {what}"));
                pv::create(a, h, client, vm_template, self.vmids, &progress)
                    .await
                    .map(|vmid| reporter.log(name, &format!("proxmox: guest {vmid} created and started")))
            }
            Action::Change { vmid, node, diff, start } => {
                reporter.step_started(name, ROLE, step);
                let mut r = pv::change(client, node, plan.kind, *vmid, diff, &progress).await;
                if r.is_ok() && *start {
                    r = pv::start(client, node, plan.kind, *vmid, &progress).await;
                }
                r
            }
        };
        let deadline = Duration::from_secs(p.task_timeout);
        let result = match result {
            Ok(()) => pv::wait_ssh(&h.address.to_string(), h.ssh_port, deadline, &progress)
                .await
                .map(|took| reporter.log(name, &format!("proxmox: SSH answered after {} ms", took.as_millis()))),
            e => e,
        };
        match result {
            Ok(()) => {
                let d = match &plan.action {
                    Action::Change { diff, start, .. } => pv::describe(diff, *start),
                    Action::Create(what) => what.clone(),
                    Action::Nothing => String::new(),
                };
                reporter.step_finished(name, ROLE, step, Status::Changed, started.elapsed(), Some(&d));
                None
            }
            Err(e) => fail(e),
        }
    }
}

/// Apply (or dry-run) the answers on their hosts, with the roles of `catalog` (the one the
/// answers were checked and planned with).
pub async fn run(a: &Answers, catalog: &Catalog, state: &StateDir, opts: &Options) -> Result<Outcome, String> {
    let plan = crate::plan::build(a, catalog);
    plan.refuse_roles_without_steps(&opts.hosts)?;
    // The caller (cli) holds the state directory's lock; this only checks it again.
    state.ensure().map_err(|e| e.to_string())?;

    let secrets_path = state.secrets_path();
    let mut secrets = Secrets::load(&secrets_path).map_err(|e| e.to_string())?;
    let made = secrets.ensure_for(a);
    if !made.is_empty() && !opts.dry_run {
        secrets.save(&secrets_path).map_err(|e| e.to_string())?;
    }

    let run = run_id();
    // The Proxmox client (its token read now) when hosts of this run are provisioned: its
    // secret is masked in everything the run writes.
    let proxmox = match &a.proxmox {
        Some(px) if provisioned(a, &opts.hosts).next().is_some() => {
            Some(crate::proxmox::Client::new(px).map_err(|e| format!("proxmox: {e}"))?)
        }
        _ => None,
    };
    let mut redactor = Redactor::new(&secrets);
    if let Some(c) = &proxmox {
        redactor = redactor.also(c.secret().expose());
    }
    // new_log keeps the last state::KEEP_LOGS run logs.
    let log_path = state.new_log(&run).map_err(|e| format!("log file: {e}"))?;
    let reporter = Reporter::new(&log_path, opts.json, redactor).map_err(|e| format!("log file: {e}"))?;
    for w in crate::ssh::known_hosts_warnings(&state.known_hosts_path()) {
        reporter.note("-", &format!("warning: {w}"));
    }
    if !made.is_empty() {
        let how = if opts.dry_run { "would generate" } else { "generated" };
        reporter.note("-", &format!("{how} secrets {} in {}", made.join(", "), secrets_path.display()));
    }

    let inputs = inputs_digest(a, catalog);
    let journal_path = state.root.join("journal.jsonl");
    let resume: Option<Resume> = Journal::resume_point(&journal_path, &inputs);
    if let Some(r) = &resume {
        if r.same_inputs {
            reporter.note(
                "-",
                &format!(
                    "resuming run {}, which stopped before it finished: {} finished step(s) are skipped",
                    r.run,
                    r.done.len()
                ),
            );
        } else if !r.done.is_empty() || r.pending.is_empty() {
            reporter.note("-", &format!(
                "run {} stopped before it finished; the answers or playbooks changed since, so every step is checked again",
                r.run
            ));
        }
    }
    let journal = if opts.dry_run {
        None
    } else {
        Some(Journal::open(&journal_path).map_err(|e| format!("{}: {e}", journal_path.display()))?)
    };

    let selected: Vec<&crate::plan::HostPlan> =
        plan.hosts.iter().filter(|h| opts.hosts.is_empty() || opts.hosts.contains(&h.name)).collect();
    for h in &opts.hosts {
        if !plan.hosts.iter().any(|p| &p.name == h) {
            return Err(format!("--host {h}: no such host in the answer file"));
        }
    }
    let mut host_names: Vec<String> = selected.iter().map(|h| h.name.clone()).collect();
    reporter.run_started(&run, &host_names, opts.dry_run);
    // Before any SSH connection: the site's guests on Proxmox VE exist and run.
    let mut not_run: Vec<(String, Option<error::RunError>)> = Vec::new();
    if let Some(client) = &proxmox {
        not_run = provision_phase(a, client, &reporter, opts, &host_names).await?;
        host_names.retain(|h| !not_run.iter().any(|(n, _)| n == h));
    }
    let selected: Vec<&crate::plan::HostPlan> = selected.into_iter().filter(|h| host_names.contains(&h.name)).collect();
    if !opts.dry_run && first_cluster_build(a, &host_names, state) {
        // Before anything is installed: can the nodes carry their roles and reach each other
        // on k3s's ports? (Listeners are opened for seconds: not in a dry run.)
        reporter.note("-", "cluster preflight: CPUs, memory and the paths between the k3s nodes");
        let report = crate::cluster::reach::run(a, catalog, state).await?;
        if !report.ok() {
            return Err(format!(
                "the cluster preflight failed; nothing was installed:\n{}(`groundwork preflight` checks again)",
                report.render()
            ));
        }
        reporter.log("-", &report.render());
    }
    if let Some(j) = &journal {
        j.write(&Entry::Start {
            run: run.clone(),
            inputs: inputs.clone(),
            hosts: host_names.clone(),
            time: humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string(),
        });
    }

    let env = context::environment(catalog);
    let site_ctx = context::site_context(a, &secrets);
    let board = Board::new(&plan, catalog);
    // Hosts left out by --host count as converged for the roles others wait for.
    // Hosts not provisioned in this dry run count as converged too; a host whose guest could
    // not be made fails, and so do the roles waiting for it.
    for h in &plan.hosts {
        if !host_names.contains(&h.name) {
            let failed = not_run.iter().any(|(n, e)| n == &h.name && e.is_some());
            for r in &h.roles {
                board.finished_on(r, &h.name, !failed);
            }
        }
    }
    for (name, err) in &not_run {
        if let Some(e) = err {
            reporter.host_finished(name, Some(e), Duration::ZERO);
        }
    }
    let cancel = Arc::new(AtomicBool::new(false));
    {
        // First Ctrl-C: said at once; waits and fact gathering stop, a command that is changing
        // a host finishes, then each host stops (the journal says where). Second: abort now.
        let cancel = cancel.clone();
        tokio::spawn(async move {
            if tokio::signal::ctrl_c().await.is_ok() {
                cancel.store(true, Ordering::SeqCst);
                eprintln!(
                    "\ninterrupted: stopping after the commands that are changing hosts now; \
                     the next apply resumes from here (Ctrl-C again aborts at once)"
                );
                if tokio::signal::ctrl_c().await.is_ok() {
                    eprintln!("aborted; the journal keeps what was done, and the next apply resumes");
                    std::process::exit(130);
                }
            }
        });
    }
    let ssh_opts = SshOptions { known_hosts: state.root.join("known_hosts"), ..SshOptions::default() };

    let uploads = host::LocalFiles::known(&opts.local_files);
    let cx = RunContext {
        run: run.clone(),
        reporter: &reporter,
        journal: journal.as_ref(),
        resume: resume.as_ref(),
        board: &board,
        cancel: &cancel,
        dry_run: opts.dry_run,
        env: &env,
        site_ctx: &site_ctx,
        ssh: &ssh_opts,
        uploads: &uploads,
        package_repo: opts.package_repo.as_ref(),
    };
    let phases = phases::apply();
    let jobs = selected.iter().map(|hp| {
        let host = a.hosts.iter().find(|h| h.name == hp.name).expect("plan hosts come from answers");
        let roles: Vec<&RoleSpec> = hp.roles.iter().filter_map(|r| catalog.get(r)).collect();
        let target = target_of(host);
        let (cx, phases) = (&cx, &phases);
        async move {
            let started = Instant::now();
            cx.reporter.host_started(&target.name, roles.iter().map(|r| r.steps.len()).sum::<usize>() + 1);
            let mut h = Host::new(target, roles, cx);
            let result = crate::phase::run(phases, &mut h).await;
            cx.board.host_done(&h.name);
            cx.reporter.host_finished(&h.name, result.as_ref().err(), started.elapsed());
            result.is_ok()
        }
    });
    let results = futures::future::join_all(jobs).await;
    let mut ok =
        results.iter().all(|r| *r) && !cancel.load(Ordering::SeqCst) && not_run.iter().all(|(_, e)| e.is_none());
    if ok || opts.dry_run {
        ok &= cluster_phase(a, &host_names, &reporter, &ssh_opts, state, opts.dry_run).await;
    }
    if ok || opts.dry_run {
        ok &= handoff_phase(a, &secrets, &host_names, &reporter, &ssh_opts, opts.dry_run).await;
    }
    if let Some(j) = &journal {
        j.write(&Entry::End {
            run: run.clone(),
            ok,
            time: humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string(),
        });
    }
    let all_ok = reporter.finish(&run, opts.dry_run) && ok;
    let changed = reporter.summaries.lock().unwrap_or_else(|p| p.into_inner()).values().map(|s| s.changed).sum();
    Ok(Outcome { ok: all_ok, run, changed, log: reporter.log_path().to_path_buf() })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The single-server example is the machine it runs on (no SSH); the lab example's hosts
    /// are reached over SSH (none of their addresses is this machine's).
    #[test]
    fn the_single_server_example_is_local_and_the_lab_is_not() {
        let single = include_str!("../../wizard/examples/single-server.toml");
        let a = crate::answers::load_str("single-server.toml", single).unwrap().answers;
        assert!(a.hosts.iter().all(|h| target_of(h).local));
        let mut lab = crate::answers::load_str(crate::LAB_EXAMPLE.0, crate::LAB_EXAMPLE.1).unwrap().answers;
        assert!(lab.hosts.iter().all(|h| !target_of(h).local));
        // 127.0.0.1 (a tunnel's end, or a test's closed port) is never taken for this machine;
        // `local = false` keeps SSH even for one of its addresses.
        lab.hosts[0].address = std::net::Ipv4Addr::LOCALHOST;
        assert!(!target_of(&lab.hosts[0]).local);
        if let Some(mine) = crate::probe::probe().ipv4_addresses().first() {
            lab.hosts[0].address = *mine;
            assert!(target_of(&lab.hosts[0]).local);
            lab.hosts[0].local = Some(false);
            assert!(!target_of(&lab.hosts[0]).local);
        }
    }
}
