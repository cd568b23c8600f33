//! Steps: what a role does on a host, in order. A `[[step]]` table has a `name` and exactly
//! one kind key: `dest` (a file), `directory`, `command`, `service`, `wait` or `zone`.

use serde::{Deserialize, Serialize};

/// A step as written in `role.toml`. `templates` lists the role's template files; `files`
/// holds its `files/` folder.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct StepSpec {
    pub name: String,
    /// A minijinja expression; the step is skipped when it is false (e.g. `not host.container`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub when: Option<String>,
    /// A minijinja expression giving a list (e.g. `k3s.gitops_archives`): the step is made
    /// once per item, with `item` in its templates and its name (which must use it, so each
    /// is a step of its own in the journal). `when` does not see `item`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub each: Option<String>,

    // file
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dest: Option<String>,
    /// Template file under the role's `templates/`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template: Option<String>,
    /// Inline content (a template string).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content: Option<String>,
    /// A file of the role's `files/` folder, copied byte for byte (never rendered: helper
    /// scripts, whose `$` and braces are the shell's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub copy: Option<String>,
    /// A file on this machine (its path is a template), sent as it is: compared by sha256,
    /// streamed only when it differs, checked by sha256 on the host before it is used.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upload: Option<String>,
    /// Check the candidate before it replaces the live file; `{tmp}` is its path.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub validate: Option<String>,
    /// Service steps (by name) that restart or reload when this file changes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub notify: Vec<String>,
    /// File or directory mode, octal (`0644`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<String>,
    /// `user:group`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
    /// Never show this file's content in diffs or logs (it holds secrets as a whole).
    #[serde(default)]
    pub secret: bool,

    // directory
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub directory: Option<String>,

    // command
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<String>,
    /// Skip when this path exists.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub creates: Option<String>,
    /// Skip when this shell check succeeds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unless: Option<String>,
    /// Run only when this shell check succeeds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub onlyif: Option<String>,
    /// Paths the command changes or makes besides `creates`: before it runs, the ledger keeps
    /// each as it was (or notes that it was not there), so `reset` puts it back.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub changes: Vec<String>,

    // service
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<ServiceState>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
    /// What a notification does: `restart` (default) or `reload`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_notify: Option<OnNotify>,
    /// A start that goes on once this check says the service serves, not when systemd's start
    /// job ends: for a unit whose start lingers after that (Debian's pg_ctlcluster sleeps 2 s
    /// once PostgreSQL answers). Exit 0: ready; 1: not yet; any other: a failure waiting will
    /// not mend (its output says why). A failed unit ends the wait too. A later wait step of
    /// the role sees the start job through. Restarts still wait for the job (the old process
    /// could pass the check).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ready: Option<String>,

    // wait
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wait: Option<WaitFor>,
    /// Seconds (wait steps; default 30).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<u64>,

    // zone: the records groundwork owns in a dynamic zone, synced by signed updates
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub zone: Option<String>,
    /// The zone file with the wanted records (rendered and checked by an earlier file step).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub records: Option<String>,
    /// The TSIG key file (`named.conf` syntax) that signs the transfer and the update.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tsig_key: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ServiceState {
    Started,
    Stopped,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum OnNotify {
    Restart,
    Reload,
}

/// What a wait step waits for.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct WaitFor {
    /// A TCP port that accepts connections (on `host`, default 127.0.0.1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// A unix socket that exists.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub socket: Option<String>,
    /// A command that succeeds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<String>,
}

/// A checked step.
#[derive(Debug, Clone)]
pub enum Kind {
    File {
        dest: String,
        source: Source,
        validate: Option<String>,
        notify: Vec<String>,
        mode: String,
        owner: String,
        secret: bool,
    },
    Directory {
        path: String,
        mode: String,
        owner: String,
    },
    Command {
        command: String,
        creates: Option<String>,
        unless: Option<String>,
        onlyif: Option<String>,
        changes: Vec<String>,
    },
    Service {
        name: String,
        state: ServiceState,
        enabled: bool,
        on_notify: OnNotify,
        /// Checks the unit's whole configuration before a start, restart or reload.
        validate: Option<String>,
        /// Ends a start once the service serves (see [`StepSpec::ready`]).
        ready: Option<String>,
    },
    Wait {
        check: String,
        what: String,
        timeout: u64,
    },
    Zone {
        zone: String,
        records: String,
        key: String,
        onlyif: Option<String>,
    },
}

#[derive(Debug, Clone)]
pub enum Source {
    Template(String),
    Inline(String),
    /// A local file, streamed as it is (the path is rendered).
    Local(String),
    /// A file of the role's `files/` folder: its name and content, never rendered.
    Copy {
        name: String,
        content: String,
    },
}

#[derive(Debug, Clone)]
pub struct Step {
    pub name: String,
    pub when: Option<String>,
    pub each: Option<String>,
    pub kind: Kind,
}

fn check_mode(m: &str) -> Result<(), String> {
    let ok = (3..=4).contains(&m.len()) && m.chars().all(|c| ('0'..='7').contains(&c));
    if ok { Ok(()) } else { Err(format!("mode `{m}` is not octal like 0644")) }
}

/// The shell check behind a wait step.
pub fn wait_check(w: &WaitFor) -> Result<(String, String), String> {
    match (w.port, &w.socket, &w.command) {
        // The host and the socket path are templates: quoted after rendering (`filter sh`),
        // and the host reaches bash's /dev/tcp as an argument, never as script text.
        (Some(port), None, None) => {
            let host = w.host.clone().unwrap_or_else(|| "127.0.0.1".into());
            Ok((
                format!("timeout 2 bash -c '</dev/tcp/$0/$1' {{% filter sh %}}{host}{{% endfilter %}} {port}"),
                format!("tcp {host}:{port}"),
            ))
        }
        (None, Some(sock), None) => {
            Ok((format!("test -S {{% filter sh %}}{sock}{{% endfilter %}}"), format!("socket {sock}")))
        }
        (None, None, Some(cmd)) => Ok((cmd.clone(), format!("`{cmd}`"))),
        _ => Err("a wait needs exactly one of port, socket or command".into()),
    }
}

/// The first value a shell string interpolates without quoting it: a `{{ ... }}` outside a
/// `{% filter sh %}` block whose last filter is not `sh`. Quoting at the sink is the rule for
/// every shell string of a role, whatever the validator allows in the value today.
pub fn unquoted_value(shell: &str) -> Option<String> {
    let mut rest = shell;
    let mut in_filter = 0usize;
    loop {
        let next_expr = rest.find("{{");
        let next_tag = rest.find("{%");
        match (next_expr, next_tag) {
            (None, None) => return None,
            (Some(e), t) if t.is_none_or(|t| e < t) => {
                let end = rest[e..].find("}}").map(|x| e + x + 2)?;
                let inner = rest[e + 2..end - 2].trim().trim_start_matches('-').trim_end_matches('-').trim();
                let last = inner.rsplit('|').next().unwrap_or("").trim();
                if in_filter == 0 && (!inner.contains('|') || last != "sh") {
                    return Some(rest[e..end].to_string());
                }
                rest = &rest[end..];
            }
            (_, Some(t)) => {
                let end = rest[t..].find("%}").map(|x| t + x + 2)?;
                let tag: Vec<&str> = rest[t + 2..end - 2]
                    .trim_matches(|c: char| c == '-' || c.is_whitespace())
                    .split_whitespace()
                    .collect();
                match tag.as_slice() {
                    ["filter", "sh"] => in_filter += 1,
                    ["endfilter"] => in_filter = in_filter.saturating_sub(1),
                    _ => {}
                }
                rest = &rest[end..];
            }
            (Some(_), None) => unreachable!("matched above"),
        }
    }
}

impl StepSpec {
    /// Check the spec and turn it into a [`Step`]. `templates` lists the role's template files.
    pub fn check(
        &self,
        templates: &[String],
        files: &std::collections::BTreeMap<String, String>,
    ) -> Result<Step, String> {
        if self.name.trim().is_empty() {
            return Err("every step needs a name".into());
        }
        if self.each.is_some() && !self.name.contains("item") {
            return Err("a step with `each` names each of its steps by the item: use `{{ item... }}` in name".into());
        }
        let shell = [
            ("command", self.command.as_deref()),
            ("unless", self.unless.as_deref()),
            ("onlyif", self.onlyif.as_deref()),
            ("validate", self.validate.as_deref()),
            ("ready", self.ready.as_deref()),
            ("wait.command", self.wait.as_ref().and_then(|w| w.command.as_deref())),
        ];
        for (key, text) in shell {
            if let Some(v) = text.and_then(unquoted_value) {
                return Err(format!(
                    "`{key}` interpolates {v} without the shell filter: write `{{{{ ... | sh }}}}` (values are quoted where the command is built)"
                ));
            }
        }
        let kinds = [
            self.dest.is_some(),
            self.directory.is_some(),
            self.command.is_some(),
            self.service.is_some(),
            self.wait.is_some(),
            self.zone.is_some(),
        ];
        if kinds.iter().filter(|k| **k).count() != 1 {
            return Err("a step has exactly one of dest, directory, command, service, wait, zone".into());
        }
        let file_only = self.template.is_some()
            || self.content.is_some()
            || self.upload.is_some()
            || self.copy.is_some()
            || !self.notify.is_empty()
            || self.secret;
        if file_only && self.dest.is_none() {
            return Err("template/content/copy/upload/notify/secret belong to a file step (dest)".into());
        }
        if self.validate.is_some() && self.dest.is_none() && self.service.is_none() {
            return Err(
                "validate belongs to a file step (checks the candidate) or a service step (checks before a start, restart or reload)"
                    .into(),
            );
        }
        let cmd_only = self.creates.is_some() || self.unless.is_some() || self.onlyif.is_some();
        if cmd_only
            && self.command.is_none()
            && !(self.zone.is_some() && self.creates.is_none() && self.unless.is_none())
        {
            return Err("creates/unless belong to a command step, onlyif to a command or zone step".into());
        }
        if !self.changes.is_empty() && self.command.is_none() {
            return Err("changes belongs to a command step".into());
        }
        if (self.records.is_some() || self.tsig_key.is_some()) && self.zone.is_none() {
            return Err("records/tsig-key belong to a zone step".into());
        }
        let svc_only =
            self.state.is_some() || self.enabled.is_some() || self.on_notify.is_some() || self.ready.is_some();
        if svc_only && self.service.is_none() {
            return Err("state/enabled/on-notify/ready belong to a service step".into());
        }
        if self.ready.is_some() && self.state == Some(ServiceState::Stopped) {
            return Err("ready belongs to a service that is started".into());
        }
        if (self.mode.is_some() || self.owner.is_some()) && self.dest.is_none() && self.directory.is_none() {
            return Err("mode/owner belong to a file or directory step".into());
        }
        if self.timeout.is_some() && self.wait.is_none() {
            return Err("timeout belongs to a wait step".into());
        }
        let mode = self.mode.clone();
        if let Some(m) = &mode {
            check_mode(m)?;
        }
        let owner = self.owner.clone().unwrap_or_else(|| "root:root".into());
        if !owner.contains(':') {
            return Err(format!("owner `{owner}` must be user:group"));
        }
        let kind = if let Some(dest) = &self.dest {
            if !dest.starts_with('/') {
                return Err(format!("dest `{dest}` must be an absolute path"));
            }
            let source = match (&self.template, &self.content, &self.upload, &self.copy) {
                (Some(t), None, None, None) => {
                    if !templates.contains(t) {
                        return Err(format!("template `{t}` is not in the role's templates/"));
                    }
                    Source::Template(t.clone())
                }
                (None, Some(c), None, None) => Source::Inline(c.clone()),
                (None, None, Some(u), None) => Source::Local(u.clone()),
                (None, None, None, Some(name)) => match files.get(name) {
                    Some(content) => Source::Copy { name: name.clone(), content: content.clone() },
                    None => return Err(format!("copy `{name}` is not in the role's files/")),
                },
                _ => return Err("a file step has exactly one of template, content, copy or upload".into()),
            };
            if let Some(v) = &self.validate
                && !v.contains("{tmp}")
            {
                return Err(format!("validate `{v}` must check the candidate: use {{tmp}}"));
            }
            Kind::File {
                dest: dest.clone(),
                source,
                validate: self.validate.clone(),
                notify: self.notify.clone(),
                mode: mode.unwrap_or_else(|| "0644".into()),
                owner,
                secret: self.secret,
            }
        } else if let Some(path) = &self.directory {
            Kind::Directory { path: path.clone(), mode: mode.unwrap_or_else(|| "0755".into()), owner }
        } else if let Some(command) = &self.command {
            if !cmd_only {
                return Err(
                    "a command needs a guard (creates, unless or onlyif), or it would run on every apply".into()
                );
            }
            Kind::Command {
                command: command.clone(),
                creates: self.creates.clone(),
                unless: self.unless.clone(),
                onlyif: self.onlyif.clone(),
                changes: self.changes.clone(),
            }
        } else if let Some(name) = &self.service {
            Kind::Service {
                name: name.clone(),
                state: self.state.unwrap_or(ServiceState::Started),
                enabled: self.enabled.unwrap_or(true),
                on_notify: self.on_notify.unwrap_or(OnNotify::Restart),
                validate: self.validate.clone(),
                ready: self.ready.clone(),
            }
        } else if let Some(zone) = &self.zone {
            let (Some(records), Some(key)) = (&self.records, &self.tsig_key) else {
                return Err("a zone step needs records (the zone file) and tsig-key".into());
            };
            if !records.starts_with('/') || !key.starts_with('/') {
                return Err("a zone step's records and tsig-key are absolute paths".into());
            }
            Kind::Zone { zone: zone.clone(), records: records.clone(), key: key.clone(), onlyif: self.onlyif.clone() }
        } else {
            let w = self.wait.as_ref().expect("one kind is set");
            let (check, what) = wait_check(w)?;
            Kind::Wait { check, what, timeout: self.timeout.unwrap_or(30) }
        };
        Ok(Step { name: self.name.clone(), when: self.when.clone(), each: self.each.clone(), kind })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_shell_string_quotes_every_value_it_interpolates() {
        assert_eq!(unquoted_value("echo {{ host.name | sh }}"), None);
        assert_eq!(unquoted_value("echo {{ (a ~ b) | upper | sh }}"), None);
        assert_eq!(unquoted_value("test -S {% filter sh %}/run/{{ x }}/s{% endfilter %}"), None);
        assert_eq!(unquoted_value("{% for d in ds %} x{{ loop.index | sh }}{% endfor %}"), None);
        assert_eq!(unquoted_value("echo {{ host.name }}").as_deref(), Some("{{ host.name }}"));
        assert_eq!(unquoted_value("echo '{{ branch | lower }}'").as_deref(), Some("{{ branch | lower }}"));
        assert_eq!(unquoted_value("{% filter sh %}{{ a }}{% endfilter %} {{ b }}").as_deref(), Some("{{ b }}"));
        assert_eq!(unquoted_value("plain text, no values"), None);
    }

    #[test]
    fn bad_zone_copy_upload_and_ready_steps_are_refused_with_what_is_wrong() {
        let files: std::collections::BTreeMap<String, String> =
            [("helper.sh".to_string(), "#!/bin/sh\n".to_string())].into();
        let cases: Vec<(StepSpec, &str)> = vec![
            (
                StepSpec {
                    name: "w".into(),
                    wait: Some(WaitFor { port: Some(5432), host: None, socket: None, command: None }),
                    ready: Some("true".into()),
                    ..Default::default()
                },
                "state/enabled/on-notify/ready belong to a service step",
            ),
            (
                StepSpec {
                    name: "s".into(),
                    service: Some("postgresql".into()),
                    state: Some(ServiceState::Stopped),
                    ready: Some("true".into()),
                    ..Default::default()
                },
                "ready belongs to a service that is started",
            ),
            (
                StepSpec {
                    name: "s".into(),
                    service: Some("postgresql".into()),
                    ready: Some("pg_isready -h {{ host.address }}".into()),
                    ..Default::default()
                },
                "`ready` interpolates {{ host.address }} without the shell filter",
            ),
            (
                StepSpec { name: "z".into(), zone: Some("site.test".into()), ..Default::default() },
                "a zone step needs records (the zone file) and tsig-key",
            ),
            (
                StepSpec {
                    name: "z".into(),
                    zone: Some("site.test".into()),
                    records: Some("site.static".into()),
                    tsig_key: Some("/k".into()),
                    ..Default::default()
                },
                "a zone step's records and tsig-key are absolute paths",
            ),
            (
                StepSpec { name: "z".into(), records: Some("/r".into()), ..Default::default() },
                "a step has exactly one of dest, directory, command, service, wait, zone",
            ),
            (
                StepSpec {
                    name: "z".into(),
                    zone: Some("site.test".into()),
                    records: Some("/r".into()),
                    tsig_key: Some("/k".into()),
                    unless: Some("true".into()),
                    ..Default::default()
                },
                "creates/unless belong to a command step, onlyif to a command or zone step",
            ),
            (
                StepSpec {
                    name: "c".into(),
                    dest: Some("/x".into()),
                    copy: Some("nope.sh".into()),
                    ..Default::default()
                },
                "copy `nope.sh` is not in the role's files/",
            ),
            (
                StepSpec {
                    name: "c".into(),
                    dest: Some("/x".into()),
                    copy: Some("helper.sh".into()),
                    upload: Some("/srv/x".into()),
                    ..Default::default()
                },
                "a file step has exactly one of template, content, copy or upload",
            ),
            (
                StepSpec {
                    name: "u".into(),
                    directory: Some("/d".into()),
                    upload: Some("/srv/x".into()),
                    ..Default::default()
                },
                "template/content/copy/upload/notify/secret belong to a file step (dest)",
            ),
            (
                StepSpec {
                    name: "v".into(),
                    command: Some("true".into()),
                    validate: Some("named-checkconf -z".into()),
                    ..Default::default()
                },
                "validate belongs to a file step (checks the candidate) or a service step",
            ),
        ];
        for (spec, want) in cases {
            match spec.check(&[], &files) {
                Err(e) => assert!(e.contains(want), "{e}\n  wanted: {want}"),
                Ok(_) => panic!("accepted: {spec:?}"),
            }
        }
        let ok = StepSpec {
            name: "c".into(),
            dest: Some("/x".into()),
            copy: Some("helper.sh".into()),
            ..Default::default()
        };
        assert!(matches!(ok.check(&[], &files).unwrap().kind, Kind::File { source: Source::Copy { .. }, .. }));
    }

    #[test]
    fn a_step_whose_command_interpolates_a_raw_value_is_refused() {
        let spec = StepSpec {
            name: "checkout".into(),
            command: Some("git clone -b {{ gitops.branch }} repo".into()),
            creates: Some("/srv/repo".into()),
            ..Default::default()
        };
        let err = spec.check(&[], &Default::default()).unwrap_err();
        assert!(err.contains("`command` interpolates {{ gitops.branch }} without the shell filter"), "{err}");
    }
}
