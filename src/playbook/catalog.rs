//! The role catalog: `playbooks/<role>/role.toml` and `templates/` of every role folder,
//! embedded at build time; a user directory can override whole roles (`--playbooks DIR`).
//!
//! The catalog is one value, loaded once per command and handed to the plan, the preflight
//! and the engine alike, so an override of a role's `needs` or `phase` counts everywhere.
//! Which roles exist is what `playbooks/` holds; the order they converge in follows from
//! their phases and needs ([`converge_order`]), not from a list.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use include_dir::{Dir, include_dir};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::step::{Kind, Step, StepSpec};
use crate::answers::model::Role;

static EMBEDDED: Dir<'_> = include_dir!("$CARGO_MANIFEST_DIR/playbooks");

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
    /// On every host of the site (base).
    EveryHost,
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
    /// Packages to install (one apt transaction per host with every role's packages).
    #[serde(default)]
    pub packages: Vec<String>,
    /// debconf answers set before the install, `package question type value` (templated).
    #[serde(default)]
    pub preseed: Vec<String>,
    /// Units its packages must not start when they are installed (a policy-rc.d for the
    /// transaction): the role writes its configuration first and its service step starts them
    /// once. A start with the package's defaults and a restart with groundwork's would cost
    /// both. Only for units that no step of the role needs running before its service step.
    #[serde(default)]
    pub start_after_config: Vec<String>,
    /// The Debian architecture (`dpkg --print-architecture`) the binaries this role uploads
    /// are built for (templated; k3s: the bundle's). A host of another one is refused before
    /// anything is uploaded: a binary that cannot run would only fail at its start.
    #[serde(default)]
    pub arch: Option<String>,
    /// A role whose work is a phase of the run (the hand-off), not steps: what does it.
    #[serde(default)]
    pub carried_out_by: Option<String>,
    #[serde(default, rename = "step")]
    pub step_specs: Vec<StepSpec>,
    /// Checked steps (filled when the catalog is loaded).
    #[serde(skip)]
    pub steps: Vec<Step>,
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

#[derive(Debug, thiserror::Error)]
#[error("{file}: {message}")]
pub struct CatalogError {
    pub file: String,
    pub message: String,
}

/// Roles with their templates.
#[derive(Debug, Clone)]
pub struct Catalog {
    /// Every role, in converge order ([`converge_order`] over all of them).
    pub roles: Vec<RoleSpec>,
    /// `role/name` -> template text.
    pub templates: BTreeMap<String, String>,
    /// sha256 over every role file and template: a run journal is only resumed with the same.
    pub digest: String,
}

struct RoleFiles {
    origin: String,
    role_toml: String,
    templates: BTreeMap<String, String>,
    /// `files/`: copied to hosts byte for byte, never rendered (helper scripts).
    files: BTreeMap<String, String>,
}

/// The role folders of the build: every folder of `playbooks/` with a `role.toml`, by name.
fn embedded_names() -> Vec<String> {
    let mut names: Vec<String> = EMBEDDED
        .dirs()
        .filter(|d| d.get_file(d.path().join("role.toml")).is_some())
        .filter_map(|d| Some(d.path().file_name()?.to_str()?.to_string()))
        .collect();
    names.sort();
    names
}

fn embedded_role(name: &str) -> Option<RoleFiles> {
    let dir = EMBEDDED.get_dir(name)?;
    let role_toml = dir.get_file(format!("{name}/role.toml"))?.contents_utf8()?.to_string();
    let folder = |sub: &str| -> Option<BTreeMap<String, String>> {
        let mut out = BTreeMap::new();
        if let Some(t) = dir.get_dir(format!("{name}/{sub}")) {
            for f in t.files() {
                out.insert(f.path().file_name()?.to_string_lossy().to_string(), f.contents_utf8()?.to_string());
            }
        }
        Some(out)
    };
    Some(RoleFiles {
        origin: format!("playbooks/{name}"),
        role_toml,
        templates: folder("templates")?,
        files: folder("files")?,
    })
}

fn dir_role(dir: &Path, name: &str) -> Result<Option<RoleFiles>, CatalogError> {
    let root: PathBuf = dir.join(name);
    let toml_path = root.join("role.toml");
    if !toml_path.exists() {
        return Ok(None);
    }
    let err = |p: &Path, e: std::io::Error| CatalogError { file: p.display().to_string(), message: e.to_string() };
    let role_toml = std::fs::read_to_string(&toml_path).map_err(|e| err(&toml_path, e))?;
    let folder = |sub: &str| -> Result<BTreeMap<String, String>, CatalogError> {
        let mut out = BTreeMap::new();
        let tdir = root.join(sub);
        if tdir.is_dir() {
            for entry in std::fs::read_dir(&tdir).map_err(|e| err(&tdir, e))? {
                let path = entry.map_err(|e| err(&tdir, e))?.path();
                if path.is_file() {
                    let text = std::fs::read_to_string(&path).map_err(|e| err(&path, e))?;
                    out.insert(path.file_name().unwrap_or_default().to_string_lossy().to_string(), text);
                }
            }
        }
        Ok(out)
    };
    Ok(Some(RoleFiles {
        origin: root.display().to_string(),
        role_toml,
        templates: folder("templates")?,
        files: folder("files")?,
    }))
}

fn parse_role(name: &str, files: &RoleFiles) -> Result<RoleSpec, CatalogError> {
    let file = format!("{}/role.toml", files.origin);
    let mut spec: RoleSpec = toml::from_str(&files.role_toml)
        .map_err(|e| CatalogError { file: file.clone(), message: e.to_string().trim().to_string() })?;
    if spec.name != name {
        return Err(CatalogError { file, message: format!("name = \"{}\" but the folder is `{name}`", spec.name) });
    }
    let names: Vec<String> = files.templates.keys().cloned().collect();
    let mut steps = Vec::new();
    for (i, s) in spec.step_specs.iter().enumerate() {
        let step = s
            .check(&names, &files.files)
            .map_err(|m| CatalogError { file: file.clone(), message: format!("step {} (`{}`): {m}", i + 1, s.name) })?;
        steps.push(step);
    }
    // A notification must name a service step that comes later in the same role.
    for (i, step) in steps.iter().enumerate() {
        if let Kind::File { notify, .. } = &step.kind {
            for n in notify {
                let later = steps[i + 1..].iter().any(|s| matches!(&s.kind, Kind::Service { name, .. } if name == n));
                if !later {
                    return Err(CatalogError {
                        file: file.clone(),
                        message: format!(
                            "step {} (`{}`) notifies `{n}`, but no later service step manages `{n}`",
                            i + 1,
                            step.name
                        ),
                    });
                }
            }
        }
    }
    spec.steps = steps;
    Ok(spec)
}

/// Refuses an override directory that is missing, is not a directory, holds a role folder
/// this build does not know (a typo would otherwise leave the built-in role in place), or holds
/// no role folder at all.
fn check_override_dir(dir: &Path, roles: &[String]) -> Result<(), CatalogError> {
    let err = |message: String| CatalogError { file: dir.display().to_string(), message };
    let known = roles.join(", ");
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(err(format!(
                "no such directory; --playbooks names a directory of role folders (`<role>/role.toml`; roles: {known})"
            )));
        }
        Err(e) if e.raw_os_error() == Some(libc::ENOTDIR) => {
            return Err(err("not a directory; --playbooks names a directory of role folders".into()));
        }
        Err(e) => return Err(err(e.to_string())),
    };
    let mut found = 0;
    for entry in entries {
        let entry = entry.map_err(|e| err(e.to_string()))?;
        if !entry.path().join("role.toml").is_file() {
            continue;
        }
        let name = entry.file_name().to_string_lossy().into_owned();
        if !roles.contains(&name) {
            return Err(CatalogError {
                file: entry.path().join("role.toml").display().to_string(),
                message: format!("`{name}` is not a role of groundwork (roles: {known})"),
            });
        }
        found += 1;
    }
    if found == 0 {
        return Err(err(format!(
            "no role folder in it; --playbooks names a directory of role folders (`<role>/role.toml`; roles: {known})"
        )));
    }
    Ok(())
}

/// Compiles every template of a role, so a syntax error is reported when the catalog loads,
/// naming the role, the file and the line, and never surfaces while a host is converged.
fn compile_templates(name: &str, files: &RoleFiles) -> Result<(), CatalogError> {
    let mut env = minijinja::Environment::new();
    for (t, text) in &files.templates {
        if let Err(e) = env.add_template_owned(format!("{name}/{t}"), text.clone()) {
            let line = e.line().map(|l| format!(":{l}")).unwrap_or_default();
            let detail = e.detail().map(|d| format!(": {d}")).unwrap_or_default();
            return Err(CatalogError {
                file: format!("{}/templates/{t}{line}", files.origin),
                message: format!("role `{name}`: template {}{detail}", e.kind()),
            });
        }
    }
    Ok(())
}

/// The order roles converge in: each after the roles it needs (those of `specs`; a need on a
/// role that is not there only orders nothing), and among the roles that are free to go, the
/// earlier phase first, then the name. Err: the roles that wait on each other in a circle
/// (and those waiting on them), none of which could ever start.
pub fn converge_order<'a>(specs: &[&'a RoleSpec]) -> Result<Vec<&'a RoleSpec>, Vec<String>> {
    let pos = |name: &str| specs.iter().position(|s| s.name == name);
    let deps: Vec<Vec<usize>> = specs.iter().map(|s| s.needs.iter().filter_map(|n| pos(&n.role)).collect()).collect();
    let mut done = vec![false; specs.len()];
    let mut out = Vec::with_capacity(specs.len());
    while out.len() < specs.len() {
        let next = (0..specs.len())
            .filter(|&i| !done[i] && deps[i].iter().all(|&d| done[d]))
            .min_by_key(|&i| (specs[i].phase, specs[i].name.as_str()));
        let Some(i) = next else {
            return Err((0..specs.len()).filter(|&i| !done[i]).map(|i| specs[i].name.clone()).collect());
        };
        done[i] = true;
        out.push(specs[i]);
    }
    Ok(out)
}

/// A circle among the roles `stuck` (those [`converge_order`] could not place): from the
/// first, follow needs that are stuck too until a role repeats; the circle starts there.
fn circle_in(specs: &[RoleSpec], stuck: &[String]) -> Vec<String> {
    let mut path: Vec<String> = vec![stuck[0].clone()];
    loop {
        let last = specs.iter().find(|s| s.name == path[path.len() - 1]);
        let next = last.and_then(|s| s.needs.iter().map(|n| &n.role).find(|r| stuck.contains(r)));
        let Some(next) = next else { return path };
        if let Some(at) = path.iter().position(|p| p == next) {
            let mut circle = path.split_off(at);
            circle.push(next.clone());
            return circle;
        }
        path.push(next.clone());
    }
}

impl Catalog {
    /// The embedded roles, overridden role by role from `dir` when given.
    pub fn load(dir: Option<&Path>) -> Result<Catalog, CatalogError> {
        let names = embedded_names();
        if let Some(d) = dir {
            check_override_dir(d, &names)?;
        }
        let mut specs = Vec::new();
        let mut origins = BTreeMap::new();
        let mut templates = BTreeMap::new();
        let mut hasher = Sha256::new();
        for name in &names {
            let files = match dir.map(|d| dir_role(d, name)).transpose()?.flatten() {
                Some(f) => f,
                None => embedded_role(name).ok_or_else(|| CatalogError {
                    file: format!("playbooks/{name}/role.toml"),
                    message: "role.toml or a template is not UTF-8 text".into(),
                })?,
            };
            hasher.update(name.as_bytes());
            hasher.update(files.role_toml.as_bytes());
            for (t, text) in &files.templates {
                hasher.update(t.as_bytes());
                hasher.update(text.as_bytes());
                templates.insert(format!("{name}/{t}"), text.clone());
            }
            for (f, text) in &files.files {
                hasher.update(b"files/");
                hasher.update(f.as_bytes());
                hasher.update(text.as_bytes());
            }
            compile_templates(name, &files)?;
            specs.push(parse_role(name, &files)?);
            origins.insert(name.clone(), format!("{}/role.toml", files.origin));
        }
        // Every role an answer file can name has a folder: a host's role is never dropped.
        for r in Role::ALL {
            if !names.iter().any(|n| n == r.as_str()) {
                return Err(CatalogError {
                    file: format!("playbooks/{r}/role.toml"),
                    message: "missing from the build (hosts can list this role)".into(),
                });
            }
        }
        for spec in &specs {
            for need in &spec.needs {
                if !names.contains(&need.role) {
                    return Err(CatalogError {
                        file: origins[&spec.name].clone(),
                        message: format!(
                            "needs role `{}`, which is not a role of groundwork (roles: {})",
                            need.role,
                            names.join(", ")
                        ),
                    });
                }
            }
        }
        let refs: Vec<&RoleSpec> = specs.iter().collect();
        let roles = match converge_order(&refs) {
            Ok(order) => order.into_iter().cloned().collect(),
            Err(stuck) => {
                let circle = circle_in(&specs, &stuck);
                // Name the file the user changed, if one of them is theirs.
                let theirs = circle.iter().find(|r| dir.is_some_and(|d| d.join(r).join("role.toml").is_file()));
                return Err(CatalogError {
                    file: origins[theirs.unwrap_or(&circle[0])].clone(),
                    message: format!(
                        "needs go round in a circle ({}): none of these roles could ever start",
                        circle.join(" needs ")
                    ),
                });
            }
        };
        Ok(Catalog { roles, templates, digest: hex(&hasher.finalize()) })
    }

    /// The embedded catalog, for the callers that take no `--playbooks` (the wizard). Its
    /// files are part of the program: a broken one is a build defect, caught by the catalog
    /// tests.
    pub fn embedded() -> &'static Catalog {
        static CATALOG: OnceLock<Catalog> = OnceLock::new();
        CATALOG.get_or_init(|| Catalog::load(None).unwrap_or_else(|e| panic!("{e}")))
    }

    pub fn get(&self, name: &str) -> Option<&RoleSpec> {
        self.roles.iter().find(|r| r.name == name)
    }
}

pub fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    bytes.iter().fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_role_folder_is_placed_and_every_host_role_has_one() {
        let c = Catalog::load(None).unwrap();
        for r in Role::ALL {
            assert!(c.get(r.as_str()).is_some(), "no playbooks/{r}/role.toml");
        }
        // A folder hosts cannot list must be placed another way, or it would never run.
        for spec in &c.roles {
            assert!(spec.host_role().is_some() || spec.placement != Placement::Host, "{} is never placed", spec.name);
        }
        assert_eq!(c.roles.len(), embedded_names().len());
    }

    #[test]
    fn the_order_follows_phases_and_needs_with_ties_by_name() {
        let c = Catalog::load(None).unwrap();
        let order: Vec<&str> = c.roles.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(
            order,
            ["base", "dns", "dhcp", "mariadb", "postgresql", "ldap", "k3s-server", "k3s-agent", "gitops"]
        );
    }

    #[test]
    fn shipped_needs_point_backwards_in_phase_order() {
        let c = Catalog::load(None).unwrap();
        for spec in &c.roles {
            for need in &spec.needs {
                let dep = c.get(&need.role).unwrap_or_else(|| panic!("{} needs unknown role {}", spec.name, need.role));
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

    /// `dir/<name>/role.toml` as the embedded one with `extra` appended.
    fn override_role(dir: &Path, name: &str, extra: &str) {
        let root = dir.join(name);
        std::fs::create_dir_all(&root).unwrap();
        let text = embedded_role(name).unwrap().role_toml;
        std::fs::write(root.join("role.toml"), text + extra).unwrap();
        for sub in ["templates", "files"] {
            if let Some(t) = EMBEDDED.get_dir(format!("{name}/{sub}")) {
                std::fs::create_dir_all(root.join(sub)).unwrap();
                for f in t.files() {
                    std::fs::write(root.join(sub).join(f.path().file_name().unwrap()), f.contents()).unwrap();
                }
            }
        }
    }

    #[test]
    fn an_override_of_needs_or_phase_changes_the_order() {
        let dir = tempfile::tempdir().unwrap();
        override_role(
            dir.path(),
            "postgresql",
            "\n[[needs]]\nrole = \"ldap\"\nwhy = \"accounts come from the directory\"\n",
        );
        let c = Catalog::load(Some(dir.path())).unwrap();
        let order: Vec<&str> = c.roles.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(
            order,
            ["base", "dns", "dhcp", "mariadb", "ldap", "postgresql", "k3s-server", "k3s-agent", "gitops"]
        );

        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("mariadb");
        override_role(dir.path(), "mariadb", "");
        let text = std::fs::read_to_string(root.join("role.toml")).unwrap();
        std::fs::write(root.join("role.toml"), text.replace("phase = \"foundation\"", "phase = \"identity\"")).unwrap();
        let c = Catalog::load(Some(dir.path())).unwrap();
        let order: Vec<&str> = c.roles.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(
            order,
            ["base", "dns", "dhcp", "postgresql", "ldap", "mariadb", "k3s-server", "k3s-agent", "gitops"]
        );
    }

    #[test]
    fn a_circle_of_needs_or_a_need_on_no_role_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        override_role(dir.path(), "dns", "\n[[needs]]\nrole = \"dhcp\"\nwhy = \"x\"\n");
        let err = Catalog::load(Some(dir.path())).unwrap_err().to_string();
        let file = dir.path().join("dns/role.toml");
        assert!(err.contains("needs go round in a circle (dhcp needs dns needs dhcp)"), "{err}");
        assert!(err.starts_with(&format!("{}: ", file.display())), "{err}");
        let dir = tempfile::tempdir().unwrap();
        override_role(dir.path(), "dns", "\n[[needs]]\nrole = \"ntp\"\nwhy = \"x\"\n");
        let err = Catalog::load(Some(dir.path())).unwrap_err().to_string();
        let file = dir.path().join("dns/role.toml");
        assert!(err.starts_with(&format!("{}: needs role `ntp`, which is not a role", file.display())), "{err}");
    }

    #[test]
    fn the_roles_without_steps_are_known() {
        let c = Catalog::load(None).unwrap();
        let empty: Vec<&str> = c.roles.iter().filter(|r| r.steps.is_empty()).map(|r| r.name.as_str()).collect();
        assert_eq!(empty, ["gitops"]);
    }

    #[test]
    fn an_override_directory_replaces_a_role_and_bad_steps_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let base = dir.path().join("base");
        std::fs::create_dir_all(&base).unwrap();
        std::fs::write(
            base.join("role.toml"),
            "name = \"base\"\nphase = \"foundation\"\nsummary = \"x\"\n[[step]]\nname = \"touch\"\ncommand = \"touch /x\"\n",
        )
        .unwrap();
        let err = Catalog::load(Some(dir.path())).unwrap_err().to_string();
        assert!(err.contains("base/role.toml: step 1 (`touch`): a command needs a guard"), "{err}");
        std::fs::write(
            base.join("role.toml"),
            "name = \"base\"\nphase = \"foundation\"\nsummary = \"x\"\n[[step]]\nname = \"touch\"\ncommand = \"touch /x\"\ncreates = \"/x\"\n",
        )
        .unwrap();
        let c = Catalog::load(Some(dir.path())).unwrap();
        assert_eq!(c.get("base").unwrap().steps.len(), 1);
        assert_ne!(c.digest, Catalog::embedded().digest);
    }

    #[test]
    fn a_template_syntax_error_names_the_role_file_and_line() {
        let dir = tempfile::tempdir().unwrap();
        let base = dir.path().join("base");
        std::fs::create_dir_all(base.join("templates")).unwrap();
        std::fs::write(
            base.join("role.toml"),
            "name = \"base\"\nphase = \"foundation\"\nsummary = \"x\"\n[[step]]\nname = \"motd\"\ndest = \"/etc/motd\"\ntemplate = \"motd.j2\"\n",
        )
        .unwrap();
        std::fs::write(base.join("templates/motd.j2"), "line one\n{{ site.name }}\n{% if x %}\nno endif\n").unwrap();
        let err = Catalog::load(Some(dir.path())).unwrap_err().to_string();
        let file = base.join("templates/motd.j2");
        assert!(err.starts_with(&format!("{}:", file.display())), "{err}");
        assert!(err.contains("role `base`: template syntax error"), "{err}");
        // minijinja reports where it noticed: the end of the file, line 4 or 5
        let line: usize = err[file.display().to_string().len() + 1..]
            .split(':')
            .next()
            .unwrap()
            .parse()
            .unwrap_or_else(|_| panic!("no line in {err}"));
        assert!((3..=5).contains(&line), "{err}");
        // the engine's environment holds only templates that compiled: it cannot panic
        std::fs::write(base.join("templates/motd.j2"), "{{ site.name }}\n").unwrap();
        let c = Catalog::load(Some(dir.path())).unwrap();
        let _ = crate::engine::context::environment(&c);
    }

    #[test]
    fn a_missing_or_empty_or_misspelt_override_directory_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("typo");
        let err = Catalog::load(Some(&missing)).unwrap_err().to_string();
        assert!(err.contains(&format!("{}: no such directory", missing.display())), "{err}");
        let err = Catalog::load(Some(dir.path())).unwrap_err().to_string();
        assert!(err.contains("no role folder in it"), "{err}");
        std::fs::create_dir_all(dir.path().join("bse")).unwrap();
        std::fs::write(dir.path().join("bse/role.toml"), "").unwrap();
        let err = Catalog::load(Some(dir.path())).unwrap_err().to_string();
        assert!(err.contains("bse/role.toml: `bse` is not a role of groundwork"), "{err}");
        let file = dir.path().join("bse/role.toml");
        let err = Catalog::load(Some(&file)).unwrap_err().to_string();
        assert!(err.contains("not a directory"), "{err}");
    }
}
