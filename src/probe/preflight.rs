//! Preflight: judge this machine against what its roles need (`[requires]` and
//! `[recommends]` in each `playbooks/<role>/role.toml`).

use std::fmt::Write as _;

use serde::Serialize;

use super::{Facts, human_bytes};
use crate::answers::model::Answers;
use crate::playbook::catalog::{Catalog, RoleSpec};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    Pass,
    Warn,
    Fail,
}

#[derive(Debug, Clone, Serialize)]
pub struct Verdict {
    /// A role name, `total` for all roles together, or `disks`.
    pub scope: String,
    pub check: String,
    pub level: Level,
    pub message: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct Preflight {
    /// The answer-file host this machine was recognised as, if any.
    pub host: Option<String>,
    pub roles: Vec<String>,
    pub note: String,
    pub verdicts: Vec<Verdict>,
}

impl Preflight {
    pub fn worst(&self) -> Level {
        self.verdicts.iter().map(|v| v.level).max().unwrap_or(Level::Pass)
    }

    pub fn render(&self) -> String {
        let mut o = String::new();
        let _ = writeln!(o, "\npreflight: {}", self.note);
        for v in &self.verdicts {
            let tag = match v.level {
                Level::Pass => "pass",
                Level::Warn => "WARN",
                Level::Fail => "FAIL",
            };
            let _ = writeln!(o, "  {tag}  {:<11} {:<7} {}", v.scope, v.check, v.message);
        }
        let (w, f) = self.verdicts.iter().fold((0, 0), |(w, f), v| match v.level {
            Level::Warn => (w + 1, f),
            Level::Fail => (w, f + 1),
            Level::Pass => (w, f),
        });
        let _ = writeln!(o, "  => {f} failed, {w} warnings");
        o
    }
}

/// Judge `facts` against the roles that `answers` gives this machine, as `catalog` defines them.
pub fn judge(facts: &Facts, answers: &Answers, catalog: &Catalog) -> Preflight {
    let mine = facts.ipv4_addresses();
    let short = facts.hostname.split('.').next().unwrap_or("");
    let host = answers.hosts.iter().position(|h| h.local == Some(true) || mine.contains(&h.address) || h.name == short);
    let plan = crate::plan::build(answers, catalog);
    let (host_name, roles, note) = match host {
        Some(i) => {
            let h = &answers.hosts[i];
            let roles: Vec<String> =
                plan.hosts.iter().find(|p| p.name == h.name).map(|p| p.roles.clone()).unwrap_or_default();
            let note = format!(
                "this machine is host `{}` ({}) of site `{}`: roles {}",
                h.name,
                h.address,
                answers.site.name,
                if roles.is_empty() { "none".into() } else { roles.join(", ") }
            );
            (Some(h.name.clone()), roles, note)
        }
        None => {
            let roles: Vec<String> = plan.steps.iter().map(|s| s.role.clone()).collect();
            let note = format!(
                "this machine ({}, {}) is none of the answer file's hosts; judging it as if it ran every role of site `{}`",
                facts.hostname,
                if mine.is_empty() {
                    "no IPv4 address".to_string()
                } else {
                    mine.iter().map(|a| a.to_string()).collect::<Vec<_>>().join(", ")
                },
                answers.site.name
            );
            (None, roles, note)
        }
    };
    let specs: Vec<&RoleSpec> = roles.iter().filter_map(|r| catalog.get(r)).collect();
    Preflight { host: host_name, verdicts: verdicts(facts, &specs), roles, note }
}

fn verdicts(facts: &Facts, specs: &[&RoleSpec]) -> Vec<Verdict> {
    let mut out = Vec::new();
    let cpus = facts.cpus.count as u64;
    let mem_mib = facts.memory.total_bytes / (1024 * 1024);
    let disk_gib = facts.var_free_bytes / (1024 * 1024 * 1024);

    for s in specs {
        let checks = [
            ("cpus", cpus, u64::from(s.requires.cpus), u64::from(s.recommends.cpus), "CPUs"),
            ("memory", mem_mib, s.requires.memory_mib, s.recommends.memory_mib, "MiB RAM"),
            ("disk", disk_gib, s.requires.disk_gib, s.recommends.disk_gib, "GiB free on /var"),
        ];
        for (check, have, need, want, unit) in checks {
            if need == 0 && want == 0 {
                continue;
            }
            let (level, message) = if have < need {
                (Level::Fail, format!("needs {need} {unit}, this machine has {have}"))
            } else if have < want {
                (Level::Warn, format!("{have} {unit}; {want} recommended (minimum {need})"))
            } else {
                (Level::Pass, format!("{have} {unit} (needs {need})"))
            };
            out.push(Verdict { scope: s.name.clone(), check: check.into(), level, message });
        }
    }

    if !specs.is_empty() {
        // The base role stands for the operating system itself.
        let mem_need = specs.iter().map(|s| s.requires.memory_mib).sum::<u64>();
        let disk_need = specs.iter().map(|s| s.requires.disk_gib).sum::<u64>();
        let cpu_need = specs.iter().map(|s| u64::from(s.requires.cpus)).max().unwrap_or(0);
        for (check, have, need, unit) in [
            ("cpus", cpus, cpu_need, "CPUs"),
            ("memory", mem_mib, mem_need, "MiB RAM"),
            ("disk", disk_gib, disk_need, "GiB free on /var"),
        ] {
            let (level, message) = if have < need {
                (Level::Fail, format!("all roles together need {need} {unit}, this machine has {have}"))
            } else {
                (Level::Pass, format!("{have} {unit} for {need} needed by all roles"))
            };
            out.push(Verdict { scope: "total".into(), check: check.into(), level, message });
        }
    }

    let blank: Vec<String> = facts
        .disks
        .iter()
        .filter(|d| d.blank && !d.read_only)
        .map(|d| format!("{} ({})", d.path, human_bytes(d.size_bytes)))
        .collect();
    if !blank.is_empty() {
        out.push(Verdict {
            scope: "disks".into(),
            check: "blank".into(),
            level: Level::Pass,
            message: format!(
                "unused: {}; groundwork leaves them alone, mount one on /var/lib for service data",
                blank.join(", ")
            ),
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::probe::{Cpus, Memory};

    fn facts(cpus: usize, mem_mib: u64, free_gib: u64) -> Facts {
        Facts {
            hostname: "test".into(),
            os: "Debian".into(),
            kernel: "6".into(),
            virtualization: "none".into(),
            cpus: Cpus { model: "x".into(), count: cpus },
            memory: Memory { total_bytes: mem_mib << 20, available_bytes: mem_mib << 20 },
            disks: vec![],
            nics: vec![],
            default_route: None,
            nameservers: vec![],
            var_free_bytes: free_gib << 30,
        }
    }

    #[test]
    fn small_machine_fails_k3s_server_and_big_one_passes() {
        let catalog = Catalog::load(None).unwrap();
        let spec = catalog.get("k3s-server").unwrap();
        let small = verdicts(&facts(1, 1024, 5), &[spec]);
        assert!(small.iter().any(|v| v.scope == "k3s-server" && v.check == "cpus" && v.level == Level::Fail));
        assert!(small.iter().any(|v| v.scope == "total" && v.check == "memory" && v.level == Level::Fail));
        let big = verdicts(&facts(8, 16384, 100), &[spec]);
        assert!(big.iter().all(|v| v.level == Level::Pass), "{big:?}");
    }

    #[test]
    fn between_minimum_and_recommended_is_a_warning() {
        let catalog = Catalog::load(None).unwrap();
        let spec = catalog.get("postgresql").unwrap();
        let v = verdicts(&facts(1, 1024, 10), &[spec]);
        let mem = v.iter().find(|v| v.scope == "postgresql" && v.check == "memory").unwrap();
        assert_eq!(mem.level, Level::Warn);
    }
}
