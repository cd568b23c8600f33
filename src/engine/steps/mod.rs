//! Step decisions as pure functions. For each step kind, the rendered step and what the facts
//! say about it go in, and a [`Decision`] comes out: converged, or the [`Action`]s to take and
//! what people are shown. Nothing here does I/O: the runner (`engine::host`) gathers the facts,
//! executes the actions over SSH, and keeps the journal, notifications and progress. The shell
//! text of every action is built here too, so `tests/steps/` pins "facts in, commands out"
//! without a host (pyinfra's operation tests are the model).

pub mod command;
pub mod directory;
pub mod file;
pub mod service;
pub mod wait;
pub mod zone;

use super::facts::Probe;
use super::report::Status;
use crate::playbook::step::{Kind, Source};

/// A step with its paths, commands and checks rendered for one host.
#[derive(Debug, Clone)]
pub enum Step {
    File(file::File),
    Directory(directory::Directory),
    Command(command::Command),
    Service(service::Service),
    Wait(wait::Wait),
    Zone(zone::Zone),
}

impl Step {
    /// Render a checked step's paths, commands and checks with `render` (a file's content is
    /// rendered later: it may use the facts).
    pub fn render(kind: &Kind, render: &dyn Fn(&str) -> Result<String, String>) -> Result<Step, String> {
        Ok(match kind {
            Kind::File { dest, source, validate, notify, mode, owner, secret } => Step::File(file::File {
                dest: render(dest)?,
                source: match source {
                    Source::Local(path) => Source::Local(render(path)?),
                    other => other.clone(),
                },
                validate: validate.as_deref().map(render).transpose()?,
                notify: notify.clone(),
                mode: u32::from_str_radix(mode, 8).unwrap_or(0o644),
                owner: owner.clone(),
                secret: *secret,
            }),
            Kind::Directory { path, mode, owner } => Step::Directory(directory::Directory {
                path: render(path)?,
                mode: u32::from_str_radix(mode, 8).unwrap_or(0o755),
                owner: owner.clone(),
            }),
            Kind::Command { command, creates, unless, onlyif, changes } => {
                let creates = creates.as_deref().map(render).transpose()?;
                let guards = command::guards(
                    creates.as_deref(),
                    unless.as_deref().map(render).transpose()?,
                    onlyif.as_deref().map(render).transpose()?,
                );
                let changes =
                    creates.into_iter().map(Ok).chain(changes.iter().map(|p| render(p))).collect::<Result<_, _>>()?;
                Step::Command(command::Command { command: render(command)?, changes, guards })
            }
            Kind::Service { name, state, enabled, on_notify, validate, ready } => Step::Service(service::Service {
                name: render(name)?,
                state: *state,
                enabled: *enabled,
                on_notify: *on_notify,
                validate: validate.as_deref().map(render).transpose()?,
                ready: ready.as_deref().map(render).transpose()?,
            }),
            Kind::Wait { check, what, timeout } => {
                Step::Wait(wait::Wait { check: render(check)?, what: what.clone(), timeout: *timeout })
            }
            Kind::Zone { zone, records, key, onlyif } => Step::Zone(zone::Zone {
                zone: render(zone)?.trim_end_matches('.').to_string(),
                records: render(records)?,
                key: render(key)?,
                onlyif: onlyif.as_deref().map(render).transpose()?,
            }),
        })
    }

    /// Register what this step needs to know in `probe`; where its answers will be (the index
    /// of its path, or of each of its checks).
    pub fn ask(&self, probe: &mut Probe) -> Vec<usize> {
        match self {
            Step::File(f) => vec![probe.file(&f.dest)],
            Step::Directory(d) => vec![probe.dir(&d.path)],
            Step::Command(c) => c.guards.iter().map(|(_, check)| probe.check(check)).collect(),
            Step::Service(s) => {
                probe.service(&s.name);
                Vec::new()
            }
            // Asked only after something changed (see wait::decide): never in the facts.
            Step::Wait(_) => Vec::new(),
            Step::Zone(z) => vec![probe.zone(z)],
        }
    }
}

/// One thing to do on a host. Its shell text comes from [`Action::script`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// A command step's own command; `changes`: the paths it changes or makes (the ledger
    /// keeps them as they were first, for `reset`).
    Run { command: String, changes: Vec<String> },
    /// Create a directory, or fix its mode and owner.
    MakeDir { path: String, mode: u32, owner: String },
    /// New content for a file: a candidate beside it, the validator, a backup of the live
    /// file, an atomic move.
    Write(file::Write),
    /// Fix a file's mode and owner (its content is right).
    SetMeta { path: String, mode: u32, owner: String },
    /// systemctl verbs on one unit, in order, after `validate` when they start, restart or
    /// reload it; `then_active`: check that it runs afterwards; `ready`: a start ends once this
    /// check passes (see [`service::script`]).
    Systemctl {
        unit: String,
        verbs: Vec<service::Verb>,
        then_active: bool,
        validate: Option<String>,
        ready: Option<String>,
    },
    /// Poll a check until it succeeds, for up to `timeout` seconds. Changes nothing.
    Wait { check: String, what: String, timeout: u64 },
    /// A signed dynamic update of a zone: `input` is nsupdate's, on stdin.
    Update { key: String, zone: String, input: String, added: usize, deleted: usize, soa: bool },
}

impl Action {
    /// The shell script that does it.
    pub fn script(&self) -> String {
        match self {
            Action::Run { command, changes } => {
                let before: String = changes.iter().map(|p| crate::engine::ledger::record_before(p)).collect();
                format!("{before}{command}")
            }
            Action::MakeDir { path, mode, owner } => directory::install_script(path, *mode, owner),
            Action::Write(w) => file::write_script(w),
            Action::SetMeta { path, mode, owner } => file::meta_script(path, *mode, owner),
            Action::Systemctl { unit, verbs, then_active, validate, ready } => {
                service::script(unit, verbs, *then_active, validate.as_deref(), ready.as_deref())
            }
            Action::Wait { check, timeout, .. } => wait::script(check, *timeout),
            Action::Update { key, .. } => zone::nsupdate_script(key),
        }
    }

    /// The local file the script reads on stdin, streamed (an upload).
    pub fn stdin_file(&self) -> Option<&file::Local> {
        match self {
            Action::Write(w) => w.local.as_ref(),
            _ => None,
        }
    }

    /// What the script reads on stdin.
    pub fn stdin(&self) -> Option<&[u8]> {
        match self {
            Action::Write(w) => Some(&w.content),
            Action::Update { input, .. } => Some(input.as_bytes()),
            _ => None,
        }
    }

    /// One line for people; never a file's content.
    pub fn show(&self) -> String {
        match self {
            Action::Run { command, .. } => format!("$ {command}"),
            Action::Write(w) => file::show(w),
            Action::Systemctl { unit, verbs, validate, .. } => service::show(unit, verbs, validate.as_deref()),
            Action::Wait { what, timeout, .. } => format!("wait up to {timeout} s for {what}"),
            Action::Update { zone, added, deleted, soa, .. } => format!(
                "nsupdate {zone}: {added} record(s) added, {deleted} deleted{}",
                if *soa { ", SOA updated" } else { "" }
            ),
            Action::MakeDir { path, mode, owner } => directory::install_command(path, *mode, owner),
            Action::SetMeta { path, mode, owner } => file::meta_command(path, *mode, owner),
        }
    }

    /// Whether it changes the host (a wait only looks).
    pub fn changes(&self) -> bool {
        !matches!(self, Action::Wait { .. })
    }

    /// How the script ended, in the step's words: `Err` says what failed and why.
    pub fn verdict(&self, status: u32, stdout: &str, stderr: &str) -> Result<(), String> {
        let what = match self {
            Action::Write(w) => return file::verdict(w, status, stderr),
            Action::Wait { what, timeout, .. } => return wait::verdict(what, *timeout, status),
            Action::Run { .. } => "command".to_string(),
            Action::MakeDir { .. } => "directory".to_string(),
            Action::SetMeta { .. } => "chmod/chown".to_string(),
            Action::Systemctl { unit, .. } => format!("service {unit}"),
            Action::Update { zone, .. } => format!("the update of {zone}"),
        };
        if status == 0 {
            return Ok(());
        }
        let mut msg = format!("{what} failed (exit {status})");
        let text = format!("{stdout}{stderr}");
        let tail: Vec<&str> = text.lines().rev().take(15).collect();
        for l in tail.into_iter().rev() {
            msg.push_str(&format!("\n  {l}"));
        }
        Err(msg)
    }
}

/// What people are shown about a change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Detail {
    Text(String),
    /// A unified diff of the file at `path` against `new`. `live`: there is a live file, and the
    /// runner reads it to show the diff (only when the content differs, and never for secrets).
    Diff {
        path: String,
        new: String,
        live: bool,
    },
}

/// A step's decision.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Decision {
    /// What to do, in order; empty when the step is converged.
    pub actions: Vec<Action>,
    /// What people are shown once the actions are done, or in a dry run before. A decision
    /// that changes nothing (a wait) shows it only in a dry run.
    pub detail: Option<Detail>,
    /// Services to restart or reload once this change is made (a file's `notify`).
    pub notify: Vec<String>,
    /// The pending notification this step settles, converged or changed (a service step).
    pub settles: Option<String>,
}

impl Decision {
    pub fn converged() -> Decision {
        Decision::default()
    }

    pub fn is_converged(&self) -> bool {
        self.actions.is_empty()
    }

    /// Whether an action changes the host.
    pub fn changes(&self) -> bool {
        self.actions.iter().any(Action::changes)
    }

    /// The status and detail reported once the actions succeeded, or (`dry_run`) instead of
    /// taking them. `live` is the live file's content when the detail is a diff against it.
    pub fn outcome(&self, dry_run: bool, live: Option<&str>) -> (Status, Option<String>) {
        if self.is_converged() {
            return (Status::Ok, None);
        }
        let detail = self.detail.as_ref().map(|d| match d {
            Detail::Text(t) => t.clone(),
            Detail::Diff { path, new, .. } => file::diff(path, live.unwrap_or(""), new),
        });
        match (self.changes(), dry_run) {
            (false, true) => (Status::Ok, detail),
            (false, false) => (Status::Ok, None),
            (true, true) => (Status::WouldChange, detail),
            (true, false) => (Status::Changed, detail),
        }
    }
}
