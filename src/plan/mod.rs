//! The plan: which role lands on which host, in which order, and why.
//!
//! Everything comes from the catalog it is given (the embedded roles, or those of
//! `--playbooks`): roles are ordered by their `needs` in `role.toml` (a role comes after every
//! role it needs that the site has), then by phase (foundation -> identity -> cluster ->
//! handoff), then by name; and a hard need the site lacks is a problem of the answer file.

use std::fmt::Write as _;
use std::path::Path;

use serde::Serialize;

use crate::answers::model::{Answers, GitOpsEngine, Role};
use crate::answers::{Loaded, Problem, Report};
use crate::playbook::catalog::{Catalog, Phase, Placement, RoleSpec, converge_order};

#[derive(Debug, Clone, Serialize)]
pub struct Plan {
    pub site: String,
    pub internal_domain: String,
    /// Role instances in the order they converge.
    pub steps: Vec<PlanStep>,
    /// Per host, its roles in converge order.
    pub hosts: Vec<HostPlan>,
    /// Where the hosts' packages come from.
    pub packages: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct PlanStep {
    pub order: usize,
    pub phase: Phase,
    pub role: String,
    pub summary: String,
    pub hosts: Vec<String>,
    /// How many steps the role has; 0: shown here, but refused by `apply` and `plan --live`,
    /// unless a phase of the run carries it out (this says which).
    pub step_count: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub carried_out_by: Option<String>,
    /// Roles this one waits for, each with the reason.
    pub after: Vec<Reason>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Reason {
    pub role: String,
    pub why: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct HostPlan {
    pub name: String,
    pub address: String,
    pub roles: Vec<String>,
}

/// An answer file, checked with the role graph of `catalog` too (every problem at once).
pub fn load_file(path: &Path, catalog: &Catalog) -> Result<Loaded, Report> {
    crate::answers::load::load_file_with(path, &|a| needs_problems(a, catalog))
}

/// Answer-file text, checked as [`load_file`] checks a file; `name` is what messages call it.
pub fn load_str(name: &str, text: &str, catalog: &Catalog) -> Result<Loaded, Report> {
    crate::answers::load::load_str_with(name, text, &|a| needs_problems(a, catalog))
}

/// `validate`'s and `plan`'s reading: [`load_file`], and the air-gap bundle the answers name
/// where it exists on this machine (its manifest and sizes; `apply` refuses a missing or
/// damaged bundle itself, with every sum, before it connects).
pub fn validate_file(path: &Path, catalog: &Catalog) -> Result<Loaded, Report> {
    crate::answers::load::load_file_with(path, &|a| {
        let mut out = needs_problems(a, catalog);
        out.extend(crate::bundle::check::answer_problems(a));
        out.extend(crate::bundle::check::package_problems(a, catalog));
        out
    })
}

/// The hard needs (`[[needs]]` without `optional`) of the roles the site has that no host
/// of the site fills, at the first host with the role that needs it.
pub fn needs_problems(a: &Answers, catalog: &Catalog) -> Vec<Problem> {
    let mut out = Vec::new();
    for spec in &catalog.roles {
        let Some(role) = spec.host_role() else {
            continue;
        };
        let Some((i, _)) = a.hosts_with(role).next() else {
            continue;
        };
        for need in spec.needs.iter().filter(|n| !n.optional) {
            let present = catalog.get(&need.role).is_some_and(|dep| !hosts_for(a, dep).is_empty());
            if !present {
                out.push(
                    Problem::new(
                        crate::answers::rules::role_field(a, i, role),
                        format!("role `{role}` needs a host with role `{}`", need.role),
                    )
                    .help(need.why.clone()),
                );
            }
        }
    }
    out
}

/// Build the plan of a validated answer file.
pub fn build(a: &Answers, catalog: &Catalog) -> Plan {
    let present: Vec<&RoleSpec> = catalog.roles.iter().filter(|spec| !hosts_for(a, spec).is_empty()).collect();
    // The catalog refuses a circle of needs when it loads; the fallback keeps its order.
    let ordered = converge_order(&present).unwrap_or_else(|_| present.clone());

    let steps: Vec<PlanStep> = ordered
        .iter()
        .enumerate()
        .map(|(i, spec)| PlanStep {
            order: i + 1,
            phase: spec.phase,
            role: spec.name.clone(),
            summary: spec.summary.clone(),
            hosts: hosts_for(a, spec),
            step_count: spec.steps.len(),
            carried_out_by: spec.carried_out_by.clone(),
            after: spec
                .needs
                .iter()
                .filter(|n| present.iter().any(|p| p.name == n.role))
                .map(|n| Reason { role: n.role.clone(), why: n.why.clone() })
                .collect(),
            detail: detail(a, spec),
        })
        .collect();

    let hosts = a
        .hosts
        .iter()
        .map(|h| HostPlan {
            name: h.name.clone(),
            address: h.address.to_string(),
            roles: steps.iter().filter(|s| s.hosts.contains(&h.name)).map(|s| s.role.clone()).collect(),
        })
        .collect();

    let packages = match &a.site.package_bundle {
        Some(b) => format!(
            "from the package bundle {} only (site.package-bundle: uploaded to {} on each host; no mirror is used)",
            b.display(),
            crate::engine::packages::REPO
        ),
        None => "from each host's own apt sources".to_string(),
    };
    Plan { site: a.site.name.clone(), internal_domain: a.site.internal_domain.clone(), steps, hosts, packages }
}

fn hosts_for(a: &Answers, spec: &RoleSpec) -> Vec<String> {
    match spec.placement {
        Placement::Host => match spec.host_role() {
            Some(role) => a.hosts_with(role).map(|(_, h)| h.name.clone()).collect(),
            None => Vec::new(),
        },
        Placement::EveryHost => a.hosts.iter().map(|h| h.name.clone()).collect(),
        Placement::FirstK3sServer => {
            let wanted = match spec.name.as_str() {
                "gitops" => a.gitops.is_some(),
                _ => true,
            };
            a.hosts_with(Role::K3sServer).take(usize::from(wanted)).map(|(_, h)| h.name.clone()).collect()
        }
    }
}

fn detail(a: &Answers, spec: &RoleSpec) -> Option<String> {
    let n = &a.network;
    match spec.name.as_str() {
        "dns" => {
            let names: Vec<String> = a.hosts_with(Role::Dns).map(|(_, h)| h.name.clone()).collect();
            let roles = match names.as_slice() {
                [] => String::new(),
                [one] => format!("{one} primary"),
                [first, rest @ ..] => format!("{first} primary, {} secondary", rest.join(", ")),
            };
            Some(format!(
                "zones {} and {}; {roles}",
                a.site.internal_domain,
                crate::answers::model::reverse_zone(&n.subnet)
            ))
        }
        "dhcp" => Some(format!(
            "{} range(s), {} reservation(s), lease {} s",
            n.dhcp_ranges.len(),
            n.reservations.len(),
            n.lease_time
        )),
        "postgresql" => Some(names_of(&a.databases.postgresql)),
        "mariadb" => Some(names_of(&a.databases.mariadb)),
        "ldap" => Some(format!("suffix {}", crate::answers::model::ldap_suffix(&a.site.internal_domain))),
        "k3s-server" | "k3s-agent" => a.k3s.as_ref().map(|k| {
            let bundle =
                k.airgap_bundle.as_ref().map_or("no air-gap bundle".to_string(), |b| format!("bundle {}", b.display()));
            format!("{} ({:?} mode), {bundle}", k.version, k.mode).to_lowercase()
        }),
        "gitops" => a.gitops.as_ref().map(|g| {
            let engine = match g.engine {
                GitOpsEngine::Flux => "flux",
                GitOpsEngine::Argocd => "argocd",
            };
            format!("{engine} -> {} @ {} : {}", g.repository, g.branch, g.path)
        }),
        _ => None,
    }
}

fn names_of(dbs: &[crate::answers::model::Database]) -> String {
    if dbs.is_empty() {
        return "no databases listed".into();
    }
    dbs.iter().map(|d| format!("{} (owner {})", d.name, d.user)).collect::<Vec<_>>().join(", ")
}

impl Plan {
    /// Refuses a run that would converge a role without steps on one of `hosts` (all hosts
    /// when empty): it would report "converged" while doing nothing. Checked before anything
    /// connects.
    pub fn refuse_roles_without_steps(&self, hosts: &[String]) -> Result<(), String> {
        let mut found = Vec::new();
        for s in self.steps.iter().filter(|s| s.step_count == 0 && s.carried_out_by.is_none()) {
            let on: Vec<&str> =
                s.hosts.iter().filter(|h| hosts.is_empty() || hosts.contains(h)).map(String::as_str).collect();
            if !on.is_empty() {
                found.push(format!(
                    "role {} has no steps yet: groundwork cannot converge it (on {})",
                    s.role,
                    on.join(", ")
                ));
            }
        }
        if found.is_empty() {
            return Ok(());
        }
        Err(format!(
            "{}\nuntil its steps exist, leave the role out of the answer file, or these hosts out of the run (--host)",
            found.join("\n")
        ))
    }

    /// The plan for people.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let instances: usize = self.steps.iter().map(|s| s.hosts.len()).sum();
        let _ = writeln!(
            out,
            "Plan for site `{}` ({}): {} hosts, {} role instances\n",
            self.site,
            self.internal_domain,
            self.hosts.len(),
            instances
        );
        let _ = writeln!(out, "packages: {}\n", self.packages);
        let width = self.steps.iter().map(|s| s.role.len()).max().unwrap_or(0);
        let mut phase = None;
        for s in &self.steps {
            if phase != Some(s.phase) {
                phase = Some(s.phase);
                let _ = writeln!(out, "{}", s.phase.as_str());
            }
            let _ = writeln!(out, "  {:>2}. {:<width$}  on {}", s.order, s.role, s.hosts.join(", "));
            let _ = writeln!(out, "      {:<width$}  {}", "", s.summary);
            match &s.carried_out_by {
                Some(by) => {
                    let _ = writeln!(out, "      {:<width$}  by {by}", "");
                }
                None if s.step_count == 0 => {
                    let _ = writeln!(out, "      {:<width$}  NO STEPS YET: shown here, refused by apply", "");
                }
                None => {}
            }
            if let Some(d) = &s.detail {
                let _ = writeln!(out, "      {:<width$}  {d}", "");
            }
            for r in &s.after {
                let _ = writeln!(out, "      {:<width$}  after {}: {}", "", r.role, r.why);
            }
        }
        let _ = writeln!(out, "\nper host");
        let hw = self.hosts.iter().map(|h| h.name.len()).max().unwrap_or(0);
        for h in &self.hosts {
            let roles = if h.roles.is_empty() { "(no roles)".to_string() } else { h.roles.join(" -> ") };
            let _ = writeln!(out, "  {:<hw$}  {:<15}  {roles}", h.name, h.address);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn proxmox_k3s() -> (Answers, Catalog) {
        let catalog = Catalog::load(None).unwrap();
        let text = include_str!("../../wizard/examples/proxmox-k3s.toml");
        (load_str("proxmox-k3s.toml", text, &catalog).unwrap().answers, catalog)
    }

    #[test]
    fn roles_without_steps_are_refused_only_on_the_hosts_of_the_run() {
        let (a, mut catalog) = proxmox_k3s();
        // The hand-off phase carries out gitops: it has no steps, and is not refused.
        assert!(build(&a, &catalog).refuse_roles_without_steps(&[]).is_ok());
        catalog.roles.iter_mut().find(|r| r.name == "k3s-agent").unwrap().steps.clear();
        let plan = build(&a, &catalog);
        let err = plan.refuse_roles_without_steps(&[]).unwrap_err();
        assert!(
            err.contains("role k3s-agent has no steps yet: groundwork cannot converge it (on k3s-a1, k3s-a2)"),
            "{err}"
        );
        assert!(!err.contains("gitops") && !err.contains("k3s-server"), "{err}");
        assert!(plan.refuse_roles_without_steps(&["infra1".into(), "data1".into()]).is_ok());
        assert!(plan.refuse_roles_without_steps(&["infra1".into(), "k3s-a2".into()]).is_err());
    }

    #[test]
    fn a_hard_need_is_met_by_a_role_placed_without_hosts_listing_it() {
        // gitops needs k3s-server; an override making dns need base (on every host) is met too.
        let dir = tempfile::tempdir().unwrap();
        let dns = dir.path().join("dns");
        std::fs::create_dir_all(dns.join("templates")).unwrap();
        for entry in std::fs::read_dir("playbooks/dns/templates").unwrap() {
            let path = entry.unwrap().path();
            std::fs::copy(&path, dns.join("templates").join(path.file_name().unwrap())).unwrap();
        }
        let toml = std::fs::read_to_string("playbooks/dns/role.toml").unwrap();
        std::fs::write(dns.join("role.toml"), toml + "\n[[needs]]\nrole = \"base\"\nwhy = \"x\"\n").unwrap();
        let catalog = Catalog::load(Some(dir.path())).unwrap();
        let (a, _) = proxmox_k3s();
        assert!(needs_problems(&a, &catalog).is_empty(), "{:?}", needs_problems(&a, &catalog));
        let plan = build(&a, &catalog);
        let dns = plan.steps.iter().find(|s| s.role == "dns").unwrap();
        assert_eq!(dns.after.iter().map(|r| r.role.as_str()).collect::<Vec<_>>(), ["base"]);
    }
}
