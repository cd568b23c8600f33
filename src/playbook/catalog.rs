//! The role catalog: `playbooks/<role>/role.toml` and `templates/` of every role, embedded at
//! build time; a user directory can override whole roles (`--playbooks DIR`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use include_dir::{Dir, include_dir};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::step::{Kind, Step, StepSpec};
use crate::answers::model::Role;

static EMBEDDED: Dir<'_> = include_dir!("$CARGO_MANIFEST_DIR/playbooks");

/// Catalog order: the order roles are shown and converged within a phase.
pub const ORDER: &[&str] =
    &["base", "dns", "dhcp", "postgresql", "mariadb", "ldap", "k3s-server", "k3s-agent", "gitops"];

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
}

fn embedded_role(name: &str) -> Option<RoleFiles> {
    let dir = EMBEDDED.get_dir(name)?;
    let role_toml = dir.get_file(format!("{name}/role.toml"))?.contents_utf8()?.to_string();
    let mut templates = BTreeMap::new();
    if let Some(t) = dir.get_dir(format!("{name}/templates")) {
        for f in t.files() {
            let file_name = f.path().file_name()?.to_string_lossy().to_string();
            templates.insert(file_name, f.contents_utf8()?.to_string());
        }
    }
    Some(RoleFiles { origin: format!("playbooks/{name}"), role_toml, templates })
}

fn dir_role(dir: &Path, name: &str) -> Result<Option<RoleFiles>, CatalogError> {
    let root: PathBuf = dir.join(name);
    let toml_path = root.join("role.toml");
    if !toml_path.exists() {
        return Ok(None);
    }
    let err = |p: &Path, e: std::io::Error| CatalogError { file: p.display().to_string(), message: e.to_string() };
    let role_toml = std::fs::read_to_string(&toml_path).map_err(|e| err(&toml_path, e))?;
    let mut templates = BTreeMap::new();
    let tdir = root.join("templates");
    if tdir.is_dir() {
        for entry in std::fs::read_dir(&tdir).map_err(|e| err(&tdir, e))? {
            let path = entry.map_err(|e| err(&tdir, e))?.path();
            if path.is_file() {
                let text = std::fs::read_to_string(&path).map_err(|e| err(&path, e))?;
                templates.insert(path.file_name().unwrap_or_default().to_string_lossy().to_string(), text);
            }
        }
    }
    Ok(Some(RoleFiles { origin: root.display().to_string(), role_toml, templates }))
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
            .check(&names)
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
fn check_override_dir(dir: &Path) -> Result<(), CatalogError> {
    let err = |message: String| CatalogError { file: dir.display().to_string(), message };
    let known = ORDER.join(", ");
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
        if !ORDER.contains(&name.as_str()) {
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

impl Catalog {
    /// The embedded roles, overridden role by role from `dir` when given.
    pub fn load(dir: Option<&Path>) -> Result<Catalog, CatalogError> {
        if let Some(d) = dir {
            check_override_dir(d)?;
        }
        let mut roles = Vec::new();
        let mut templates = BTreeMap::new();
        let mut hasher = Sha256::new();
        for name in ORDER {
            let files = match dir.map(|d| dir_role(d, name)).transpose()?.flatten() {
                Some(f) => f,
                None => embedded_role(name).ok_or_else(|| CatalogError {
                    file: format!("playbooks/{name}/role.toml"),
                    message: "missing from the build".into(),
                })?,
            };
            hasher.update(files.role_toml.as_bytes());
            for (t, text) in &files.templates {
                hasher.update(t.as_bytes());
                hasher.update(text.as_bytes());
                templates.insert(format!("{name}/{t}"), text.clone());
            }
            compile_templates(name, &files)?;
            roles.push(parse_role(name, &files)?);
        }
        Ok(Catalog { roles, templates, digest: hex(&hasher.finalize()) })
    }

    /// The embedded catalog. Its files are part of the program: a broken one is a build
    /// defect, caught by the catalog tests.
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

/// Every embedded role, in catalog order.
pub fn roles() -> &'static [RoleSpec] {
    &Catalog::embedded().roles
}

pub fn get(name: &str) -> Option<&'static RoleSpec> {
    Catalog::embedded().get(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_host_role_has_a_spec() {
        for r in Role::ALL {
            assert!(get(r.as_str()).is_some(), "no playbooks/{r}/role.toml");
        }
        assert_eq!(roles().len(), ORDER.len());
    }

    #[test]
    fn needs_point_backwards_in_phase_order() {
        for spec in roles() {
            for need in &spec.needs {
                let dep = get(&need.role).unwrap_or_else(|| panic!("{} needs unknown role {}", spec.name, need.role));
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
