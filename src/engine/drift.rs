//! `groundwork drift` (and the drift section of `plan --live`): per host, what changed since
//! groundwork left it. Files from the ledger (see [`super::ledger`]): content, mode or owner
//! other than what groundwork last wrote, or the file gone (with the diff against the copy it
//! kept, secrets masked; none for secret files and uploads). Services of the host's roles
//! that should run and do not, or are not enabled; packages of its roles no longer installed.
//! Answers that changed since are not drift: `plan --live` shows those.
//!
//! Two round trips a host: the facts (services, packages, what the roles' `when` reads) with
//! the ledger's file records, then the live and kept content of the files whose content
//! changed. [`compare_file`] and [`services`] decide without I/O.

use std::collections::HashSet;

use serde::Serialize;

use super::context::{self, Redactor};
use super::facts::{Facts, FileFact, Probe, ServiceFact, sh_quote};
use super::ledger::{CONTENT, WROTE};
use super::steps::file::{BACKUPS, backup_name};
use super::steps::{Step, service};
use crate::answers::model::Answers;
use crate::playbook::catalog::Catalog;
use crate::ssh::{Session, SshOptions};
use crate::state::Secrets;

/// One file groundwork wrote, as it is now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FileDrift {
    pub path: String,
    /// What changed: `content`, `mode 644 -> 600`, `owner root:root -> bind:bind`, `gone`,
    /// `not a regular file`.
    pub changes: Vec<String>,
    /// The unified diff from what groundwork wrote to what is there (secrets masked).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub diff: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ServiceDrift {
    pub unit: String,
    /// `stopped`, `disabled`, `running` (should be stopped).
    pub state: String,
    /// What apply would do.
    pub repair: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct HostDrift {
    pub host: String,
    pub drifted: bool,
    pub files: Vec<FileDrift>,
    pub services: Vec<ServiceDrift>,
    /// Packages of its roles that are no longer installed.
    pub packages: Vec<String>,
    /// groundwork has no record of writing anything here (never applied, or reset).
    pub never_applied: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// The ledger's `.wrote` records with the live state of their paths: `wrote<TAB>NAME<TAB>SHA
/// MODE OWNER<TAB>LIVE`, LIVE being `MODE OWNER SHA`, `absent` or `other`.
pub fn read_script() -> String {
    format!(
        "( exec 2>/dev/null; cd {b} || exit 0\n\
         for w in *{WROTE}; do [ -e \"$w\" ] || continue; n=${{w%{WROTE}}}; \
         p=$(printf '%s\\n' \"$n\" | sed 's/%2F/\\//g; s/%25/%/g'); \
         if [ -f \"$p\" ]; then live=\"$(stat -c '%a %U:%G' -- \"$p\") $(sha256sum < \"$p\" | cut -d' ' -f1)\"; \
         elif [ -e \"$p\" ]; then live=other; else live=absent; fi; \
         printf 'wrote\\t%s\\t%s\\t%s\\n' \"$n\" \"$(cat \"$w\")\" \"$live\"; done )\n",
        b = sh_quote(BACKUPS)
    )
}

/// What the ledger says groundwork wrote at a path, and what is there now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Wrote {
    pub path: String,
    pub wrote: FileFact,
    /// `None`: absent; `Some(None)`: something other than a regular file.
    pub live: Option<Option<FileFact>>,
}

pub fn parse(out: &str) -> Vec<Wrote> {
    let octal = |s: &str| u32::from_str_radix(s, 8).unwrap_or(0);
    out.lines()
        .filter_map(|l| l.strip_prefix("wrote\t"))
        .filter_map(|l| {
            let mut cols = l.split('\t');
            let name = cols.next()?;
            let (path, _) = super::ledger::parse_entry(&format!("{name}{WROTE}"))?;
            let w: Vec<&str> = cols.next()?.split_whitespace().collect();
            let [sha, mode, owner] = w.as_slice() else { return None };
            let wrote = FileFact { mode: octal(mode), owner: owner.to_string(), sha256: sha.to_string() };
            let live = match cols.next()?.trim() {
                "absent" => None,
                "other" => Some(None),
                l => {
                    let v: Vec<&str> = l.split_whitespace().collect();
                    let [mode, owner, sha] = v.as_slice() else { return None };
                    Some(Some(FileFact { mode: octal(mode), owner: owner.to_string(), sha256: sha.to_string() }))
                }
            };
            Some(Wrote { path, wrote, live })
        })
        .collect()
}

/// How a file differs from what groundwork wrote; empty when it does not. Pure.
pub fn compare_file(w: &Wrote) -> Vec<String> {
    match &w.live {
        None => vec!["gone".into()],
        Some(None) => vec!["not a regular file".into()],
        Some(Some(live)) => {
            let mut out = Vec::new();
            if live.sha256 != w.wrote.sha256 {
                out.push("content".into());
            }
            if live.mode != w.wrote.mode {
                out.push(format!("mode {:o} -> {:o}", w.wrote.mode, live.mode));
            }
            if live.owner != w.wrote.owner {
                out.push(format!("owner {} -> {}", w.wrote.owner, live.owner));
            }
            out
        }
    }
}

/// The services of the host's roles (those whose `when` holds) against their facts. Pure.
pub fn services(
    wanted: &[service::Service],
    facts: &std::collections::HashMap<String, ServiceFact>,
) -> Vec<ServiceDrift> {
    let none = HashSet::new();
    let mut out = Vec::new();
    for s in wanted {
        let Some(fact) = facts.get(&s.name) else { continue };
        let Ok(d) = service::decide(s, Some(fact), &none) else { continue };
        if d.is_converged() {
            continue;
        }
        let mut state = Vec::new();
        if !fact.is_active() && s.state == crate::playbook::step::ServiceState::Started {
            state.push(format!("stopped ({})", fact.active));
        }
        if fact.is_active() && s.state == crate::playbook::step::ServiceState::Stopped {
            state.push("running".to_string());
        }
        if s.enabled != fact.is_enabled() {
            state.push(format!("{} ({})", if s.enabled { "disabled" } else { "enabled" }, fact.enabled));
        }
        let repair = d.actions.iter().map(|a| a.show()).collect::<Vec<_>>().join("; ");
        out.push(ServiceDrift { unit: s.name.clone(), state: state.join(", "), repair });
    }
    out
}

/// The unified diff from what groundwork wrote to what is there now.
pub fn changed_since(path: &str, wrote: &str, now: &str) -> String {
    similar::TextDiff::from_lines(wrote, now)
        .unified_diff()
        .context_radius(2)
        .header(&format!("{path} (as groundwork wrote it)"), &format!("{path} (now)"))
        .to_string()
        .trim_end()
        .to_string()
}

/// Check one host for drift over `session`.
pub async fn host(
    session: &Session,
    name: &str,
    roles: &[&crate::playbook::catalog::RoleSpec],
    env: &minijinja::Environment<'static>,
    site_ctx: &serde_json::Value,
    redactor: &Redactor,
) -> Result<HostDrift, String> {
    let base = context::host_context(site_ctx, name, &Facts::default());
    let mut probe = Probe::default();
    let mut wanted: Vec<(Option<&str>, service::Service)> = Vec::new();
    for role in roles {
        for (step, _, rendered) in context::role_steps(env, &base, role)? {
            if let Step::Service(s) = rendered {
                probe.service(&s.name);
                wanted.push((step.when.as_deref(), s));
            }
        }
    }
    probe.packages = super::packages::of_roles(roles);
    let exec = |cmd: String| async move {
        let out = session.exec(&cmd, None).await.map_err(|e| e.to_string())?;
        Ok::<_, String>(out)
    };
    let out = exec(format!("{}\n{}", read_script(), probe.script())).await?;
    let text = format!("{}\n{}", out.stderr_str(), out.stdout_str());
    let facts = Facts::parse(&text, &probe);
    if !facts.complete {
        return Err(format!("facts are incomplete (exit {})", out.status));
    }
    let ctx = context::host_context(site_ctx, name, &facts);
    let mut active: Vec<service::Service> = Vec::new();
    for (when, s) in wanted {
        if let Some(cond) = when {
            let keep =
                env.compile_expression(cond).and_then(|e| e.eval(&ctx)).map_err(|e| format!("`when = {cond}`: {e}"))?;
            if !keep.is_true() {
                continue;
            }
        }
        active.push(s);
    }
    let records = parse(&out.stdout_str());
    let mut d = HostDrift { host: name.to_string(), never_applied: records.is_empty(), ..HostDrift::default() };
    if d.never_applied {
        return Ok(d);
    }
    for w in &records {
        let changes = compare_file(w);
        if changes.is_empty() {
            continue;
        }
        let diff = if changes.iter().any(|c| c == "content") {
            let kept = format!("{}{CONTENT}", backup_name(&w.path));
            let cmd = format!(
                "[ -e {k} ] || exit 3; cat {k}; printf '\\n\\036groundwork-live\\036\\n'; cat {p}",
                k = sh_quote(&kept),
                p = sh_quote(&w.path)
            );
            let out = exec(cmd).await?;
            if out.status == 0 {
                let text = out.stdout_str();
                text.split_once("\n\u{1e}groundwork-live\u{1e}\n")
                    .map(|(wrote, now)| redactor.redact(&changed_since(&w.path, wrote, now)))
            } else {
                Some(format!("{}: no copy of what groundwork wrote (a secret file or an upload): not shown", w.path))
            }
        } else {
            None
        };
        d.files.push(FileDrift { path: w.path.clone(), changes, diff });
    }
    d.services = services(&active, &facts.services);
    let mut missing: Vec<String> =
        probe.packages.iter().filter(|p| facts.packages.get(*p) != Some(&true)).cloned().collect();
    missing.sort();
    d.packages = missing;
    d.drifted = !d.files.is_empty() || !d.services.is_empty() || !d.packages.is_empty();
    Ok(d)
}

/// Check every host of the answers (or `only` those) for drift, in parallel.
pub async fn run(
    a: &Answers,
    catalog: &Catalog,
    secrets: &Secrets,
    ssh: &SshOptions,
    only: &[String],
) -> Vec<HostDrift> {
    let plan = crate::plan::build(a, catalog);
    let env = context::environment(catalog);
    let site_ctx = context::site_context(a, secrets);
    let redactor = Redactor::new(secrets);
    let jobs = plan.hosts.iter().filter(|h| only.is_empty() || only.contains(&h.name)).map(|hp| {
        let host = a.hosts.iter().find(|h| h.name == hp.name).expect("plan hosts come from answers");
        let roles: Vec<&crate::playbook::catalog::RoleSpec> = hp.roles.iter().filter_map(|r| catalog.get(r)).collect();
        let (env, site_ctx, redactor) = (&env, &site_ctx, &redactor);
        async move {
            let name = host.name.clone();
            let result = async {
                let session = Session::connect(&super::target_of(host), ssh).await.map_err(|e| e.to_string())?;
                let r = self::host(&session, &name, &roles, env, site_ctx, redactor).await;
                session.close().await;
                r
            }
            .await;
            result.unwrap_or_else(|e| HostDrift { host: name, error: Some(e), ..HostDrift::default() })
        }
    });
    futures::future::join_all(jobs).await
}

/// The report for people: a block per host.
pub fn render(hosts: &[HostDrift]) -> String {
    let mut s = String::new();
    for h in hosts {
        if let Some(e) = &h.error {
            s.push_str(&format!("{}: could not be checked: {e}\n", h.host));
            continue;
        }
        if h.never_applied {
            s.push_str(&format!(
                "{}: groundwork has no record of writing anything here (not applied, or reset)\n",
                h.host
            ));
            continue;
        }
        if !h.drifted {
            s.push_str(&format!("{}: no drift\n", h.host));
            continue;
        }
        s.push_str(&format!("{}: DRIFT\n", h.host));
        for f in &h.files {
            s.push_str(&format!("  file {}: {}\n", f.path, f.changes.join(", ")));
            if let Some(d) = &f.diff {
                for l in d.lines() {
                    s.push_str(&format!("    {l}\n"));
                }
            }
        }
        for v in &h.services {
            s.push_str(&format!("  service {}: {} (apply: {})\n", v.unit, v.state, v.repair));
        }
        for p in &h.packages {
            s.push_str(&format!("  package {p}: removed (apply installs it)\n"));
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::playbook::step::{OnNotify, ServiceState};

    #[test]
    fn a_file_changed_by_hand_is_named_with_what_changed() {
        let out = "wrote\t%2Fetc%2Fbind%2Fgroundwork%2Flab.static\tab12 644 root:bind\t600 root:root cd34\n\
                   wrote\t%2Fetc%2Fhosts\tee 644 root:root\t644 root:root ee\n\
                   wrote\t%2Fetc%2Fgone\tee 640 root:root\tabsent\n";
        let w = parse(out);
        assert_eq!(w.len(), 3);
        assert_eq!(w[0].path, "/etc/bind/groundwork/lab.static");
        assert_eq!(compare_file(&w[0]), ["content", "mode 644 -> 600", "owner root:bind -> root:root"]);
        assert!(compare_file(&w[1]).is_empty());
        assert_eq!(compare_file(&w[2]), ["gone"]);
    }

    #[test]
    fn a_stopped_or_disabled_service_is_drift_and_says_how_apply_repairs_it() {
        let slapd = service::Service {
            name: "slapd".into(),
            state: ServiceState::Started,
            enabled: true,
            on_notify: OnNotify::Restart,
            validate: None,
            ready: None,
        };
        let mut facts = std::collections::HashMap::new();
        facts.insert("slapd".to_string(), ServiceFact { active: "inactive".into(), enabled: "enabled".into() });
        let d = services(std::slice::from_ref(&slapd), &facts);
        assert_eq!(d.len(), 1);
        assert_eq!(d[0].state, "stopped (inactive)");
        assert!(d[0].repair.contains("systemctl start 'slapd'"), "{}", d[0].repair);
        facts.insert("slapd".to_string(), ServiceFact { active: "active".into(), enabled: "disabled".into() });
        assert_eq!(services(std::slice::from_ref(&slapd), &facts)[0].state, "disabled (disabled)");
        facts.insert("slapd".to_string(), ServiceFact { active: "active".into(), enabled: "enabled".into() });
        assert!(services(&[slapd], &facts).is_empty());
    }

    #[test]
    fn the_read_script_is_valid_sh() {
        let out = std::process::Command::new("sh").args(["-n", "-c", &read_script()]).output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    }
}
