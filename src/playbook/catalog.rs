//! The role catalog: `playbooks/<role>/role.toml` of every role, embedded at build time.

use std::sync::OnceLock;

use serde::{Deserialize, Serialize};

use crate::answers::model::Role;

/// Embedded role definitions, in catalog order (the order roles are shown in a phase).
const EMBEDDED: &[(&str, &str)] = &[
    ("dns", include_str!("../../playbooks/dns/role.toml")),
    ("dhcp", include_str!("../../playbooks/dhcp/role.toml")),
    ("postgresql", include_str!("../../playbooks/postgresql/role.toml")),
    ("mariadb", include_str!("../../playbooks/mariadb/role.toml")),
    ("ldap", include_str!("../../playbooks/ldap/role.toml")),
    ("k3s-server", include_str!("../../playbooks/k3s-server/role.toml")),
    ("k3s-agent", include_str!("../../playbooks/k3s-agent/role.toml")),
    ("gitops", include_str!("../../playbooks/gitops/role.toml")),
];

/// The layers of a site, converged in this order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Phase {
    Foundation,
    Identity,
    Cluster,
    Handoff,
}

impl Phase {
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Foundation => "foundation",
            Phase::Identity => "identity",
            Phase::Cluster => "cluster",
            Phase::Handoff => "handoff",
        }
    }
}

/// Where a role runs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Placement {
    /// On every host that lists the role.
    #[default]
    Host,
    /// Site-wide, run from the first k3s server (gitops).
    FirstK3sServer,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct RoleSpec {
    pub name: String,
    pub phase: Phase,
    pub summary: String,
    #[serde(default)]
    pub placement: Placement,
    #[serde(default)]
    pub needs: Vec<Need>,
    #[serde(default)]
    pub requires: Resources,
    #[serde(default)]
    pub recommends: Resources,
}

/// A dependency on another role. Optional needs only order; required ones must be present.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct Need {
    pub role: String,
    #[serde(default)]
    pub optional: bool,
    pub why: String,
}

/// Hardware a role needs on its host (minimum) or should have (recommended).
#[derive(Debug, Clone, Copy, Default, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct Resources {
    #[serde(default)]
    pub cpus: u32,
    #[serde(default)]
    pub memory_mib: u64,
    #[serde(default)]
    pub disk_gib: u64,
}

impl RoleSpec {
    /// The answer-file role this spec implements, if hosts list it.
    pub fn host_role(&self) -> Option<Role> {
        self.name.parse().ok()
    }
}

/// Every role, parsed once. The embedded files are part of the program: a broken one is a
/// build defect, caught by the catalog tests.
pub fn roles() -> &'static [RoleSpec] {
    static ROLES: OnceLock<Vec<RoleSpec>> = OnceLock::new();
    ROLES.get_or_init(|| {
        EMBEDDED
            .iter()
            .map(|(name, text)| {
                toml::from_str::<RoleSpec>(text)
                    .unwrap_or_else(|e| panic!("playbooks/{name}/role.toml: {e}"))
            })
            .collect()
    })
}

pub fn get(name: &str) -> Option<&'static RoleSpec> {
    roles().iter().find(|r| r.name == name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_role_parses_and_is_named_like_its_folder() {
        for ((folder, _), spec) in EMBEDDED.iter().zip(roles()) {
            assert_eq!(*folder, spec.name);
        }
    }

    #[test]
    fn every_host_role_has_a_spec() {
        for r in Role::ALL {
            assert!(get(r.as_str()).is_some(), "no playbooks/{r}/role.toml");
        }
    }

    #[test]
    fn needs_point_backwards_in_phase_order() {
        for spec in roles() {
            for need in &spec.needs {
                let dep = get(&need.role)
                    .unwrap_or_else(|| panic!("{} needs unknown role {}", spec.name, need.role));
                assert!(
                    dep.phase <= spec.phase,
                    "{} ({:?}) needs {} of a later phase ({:?})",
                    spec.name,
                    spec.phase,
                    dep.name,
                    dep.phase
                );
            }
        }
    }
}
