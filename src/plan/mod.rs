//! The plan: which role lands on which host, in which order, and why.
//!
//! Roles are ordered by the role graph (`needs` in `playbooks/<role>/role.toml`): a role comes
//! after every role it needs that the site has, phases keep their order (foundation ->
//! identity -> cluster -> handoff), and within that the catalog's order decides.

use std::fmt::Write as _;

use serde::Serialize;

use crate::answers::model::{Answers, GitOpsEngine, Role};
use crate::playbook::catalog::{self, Phase, Placement, RoleSpec};

#[derive(Debug, Clone, Serialize)]
pub struct Plan {
    pub site: String,
    pub internal_domain: String,
    /// Role instances in the order they converge.
    pub steps: Vec<PlanStep>,
    /// Per host, its roles in converge order.
    pub hosts: Vec<HostPlan>,
}

#[derive(Debug, Clone, Serialize)]
pub struct PlanStep {
    pub order: usize,
    pub phase: Phase,
    pub role: String,
    pub summary: String,
    pub hosts: Vec<String>,
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

/// Build the plan of a validated answer file.
pub fn build(a: &Answers) -> Plan {
    let present: Vec<&RoleSpec> = catalog::roles().iter().filter(|spec| !hosts_for(a, spec).is_empty()).collect();
    let ordered = order(&present);

    let steps: Vec<PlanStep> = ordered
        .iter()
        .enumerate()
        .map(|(i, spec)| PlanStep {
            order: i + 1,
            phase: spec.phase,
            role: spec.name.clone(),
            summary: spec.summary.clone(),
            hosts: hosts_for(a, spec),
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

    Plan { site: a.site.name.clone(), internal_domain: a.site.internal_domain.clone(), steps, hosts }
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

/// Topological order (Kahn), choosing among ready roles by phase, then catalog position.
fn order<'a>(present: &[&'a RoleSpec]) -> Vec<&'a RoleSpec> {
    let pos = |name: &str| present.iter().position(|s| s.name == name);
    let deps: Vec<Vec<usize>> = present.iter().map(|s| s.needs.iter().filter_map(|n| pos(&n.role)).collect()).collect();
    let mut done = vec![false; present.len()];
    let mut out = Vec::with_capacity(present.len());
    while out.len() < present.len() {
        let next = (0..present.len())
            .filter(|&i| !done[i] && deps[i].iter().all(|&d| done[d]))
            .min_by_key(|&i| (present[i].phase, i));
        match next {
            Some(i) => {
                done[i] = true;
                out.push(present[i]);
            }
            // A cycle cannot come from the shipped catalog (its tests forbid needs that point
            // forward); if a user's override makes one, keep the rest in catalog order.
            None => {
                out.extend((0..present.len()).filter(|&i| !done[i]).map(|i| present[i]));
                break;
            }
        }
    }
    out
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
        let width = self.steps.iter().map(|s| s.role.len()).max().unwrap_or(0);
        let mut phase = None;
        for s in &self.steps {
            if phase != Some(s.phase) {
                phase = Some(s.phase);
                let _ = writeln!(out, "{}", s.phase.as_str());
            }
            let _ = writeln!(out, "  {:>2}. {:<width$}  on {}", s.order, s.role, s.hosts.join(", "));
            let _ = writeln!(out, "      {:<width$}  {}", "", s.summary);
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
