//! Checking a bundle against its manifest, at three depths: `validate` reads sizes only (the
//! answer file is checked often, and the image tarball is hundreds of MB), `bundle --check`
//! and `apply` hash every file. `apply` refuses a damaged or missing bundle before it connects
//! to any host.

use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::time::Instant;

use serde::Serialize;
use sha2::{Digest, Sha256};

use super::manifest::{self, Manifest};
use crate::answers::Problem;
use crate::answers::model::{Answers, Role};
use crate::engine::packages::Repo;
use crate::engine::steps::file::Local;
use crate::playbook::catalog::Catalog;
use crate::playbook::catalog::hex;

/// How far a check reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Depth {
    /// Present with the manifest's size.
    Size,
    /// And the manifest's sha256 (reads every byte).
    Sha256,
}

/// One file of the manifest, as found.
#[derive(Debug, Clone, Serialize)]
pub struct FileCheck {
    pub path: String,
    pub size: u64,
    /// What is wrong with it; `None`: as the manifest says.
    pub problem: Option<String>,
}

/// A bundle checked against its manifest.
#[derive(Debug, Clone)]
pub struct Checked {
    pub dir: PathBuf,
    pub manifest: Manifest,
    pub files: Vec<FileCheck>,
    /// The manifest's own problems (a k3s file it does not list, an image without an archive).
    pub problems: Vec<String>,
    pub seconds: f64,
}

impl Checked {
    /// `DIR: N files (SIZE) match the manifest (T s)`, as apply and plan --live say it.
    pub fn summary(&self) -> String {
        format!(
            "{}: {} files ({}) match the manifest ({:.2} s)",
            self.dir.display(),
            self.files.len(),
            super::size(self.bytes()),
            self.seconds
        )
    }

    pub fn ok(&self) -> bool {
        self.problems.is_empty() && self.files.iter().all(|f| f.problem.is_none())
    }

    /// Every problem, file by file (`k3s/k3s: sha256 is ..., the manifest says ...`).
    pub fn all_problems(&self) -> Vec<String> {
        let files = self.files.iter().filter_map(|f| f.problem.as_ref().map(|p| format!("{}: {p}", f.path)));
        self.problems.iter().cloned().chain(files).collect()
    }

    pub fn bytes(&self) -> u64 {
        self.manifest.files.iter().map(|f| f.size).sum()
    }

    /// `bundle --check` for people: a line per file, then the count and the time.
    pub fn render(&self) -> String {
        let mut out = String::new();
        for p in &self.problems {
            out.push_str(&format!("{}: {p}\n", self.dir.join(manifest::MANIFEST).display()));
        }
        for f in &self.files {
            match &f.problem {
                None => out.push_str(&format!("ok       {}  {}\n", f.path, super::size(f.size))),
                Some(p) => out.push_str(&format!("DAMAGED  {}: {p}\n", f.path)),
            }
        }
        let bad = self.all_problems().len();
        out.push_str(&format!(
            "checked {} files ({}) of {} in {:.2} s: {}\n",
            self.files.len(),
            super::size(self.bytes()),
            self.dir.display(),
            self.seconds,
            match bad {
                0 => "every size and sha256 as the manifest says".to_string(),
                1 => "1 problem".to_string(),
                n => format!("{n} problems"),
            }
        ));
        out
    }

    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "ok": self.ok(),
            "dir": self.dir.display().to_string(),
            "problems": self.problems,
            "files": self.files,
            "bytes": self.bytes(),
            "seconds": self.seconds,
        })
    }

    /// The checked files as the engine's uploads know them (so they are not hashed again),
    /// under `dir` as the answer file writes it and as it was opened.
    pub fn as_locals(&self, written: &Path) -> Vec<Local> {
        let mut out = Vec::new();
        for f in &self.manifest.files {
            for dir in [written, self.dir.as_path()] {
                let path = dir.join(&f.path).display().to_string();
                if !out.iter().any(|l: &Local| l.path == path) {
                    out.push(Local { path, size: f.size, sha256: f.sha256.clone() });
                }
            }
        }
        out
    }
}

/// Check `dir` against its manifest. `Err`: no manifest, or one that cannot be read.
pub fn check_dir(dir: &Path, depth: Depth) -> Result<Checked, String> {
    let started = Instant::now();
    let Some(manifest) = Manifest::read(dir)? else {
        return Err(format!(
            "{} has no {}: it is not a bundle made by `groundwork bundle`",
            dir.display(),
            manifest::MANIFEST
        ));
    };
    let files = manifest.files.iter().map(|f| check_file(dir, f, depth)).collect();
    let mut problems: Vec<String> = manifest
        .missing_k3s_files()
        .into_iter()
        .map(|p| format!("the manifest does not list {p}, which every k3s node of arch {} needs", manifest.arch))
        .collect();
    // The engine's pods start from these archives in an air gap; a bundle made before
    // groundwork archived images lists them only.
    problems.extend(manifest.images_without_archive().into_iter().map(|i| {
        format!("gitops.images lists {i}, but the manifest lists no archive of it (the engine could not start offline)")
    }));
    problems.extend(
        manifest
            .missing_debs_files()
            .into_iter()
            .map(|p| format!("the manifest does not list {p}, the index of its packages that apt reads")),
    );
    Ok(Checked { dir: dir.to_path_buf(), manifest, files, problems, seconds: started.elapsed().as_secs_f64() })
}

fn check_file(dir: &Path, f: &manifest::FileEntry, depth: Depth) -> FileCheck {
    let found = |size: u64, problem: Option<String>| FileCheck { path: f.path.clone(), size, problem };
    // Manifest::read refuses paths that leave the bundle, so this stays inside it.
    let path = dir.join(&f.path);
    let size = match std::fs::metadata(&path) {
        Ok(m) if m.is_file() => m.len(),
        Ok(_) => return found(0, Some("is not a file".into())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return found(0, Some("is missing".into())),
        Err(e) => return found(0, Some(format!("cannot be read: {e}"))),
    };
    let size_problem = (size != f.size).then(|| format!("is {size} bytes, the manifest says {}", f.size));
    if depth == Depth::Size {
        return found(size, size_problem);
    }
    // Hashed even when the size is off already: the message gives both sums either way.
    let sum_problem = match sha256_file(&path, &f.path) {
        Ok(sum) if sum == f.sha256 => None,
        Ok(sum) => Some(format!("sha256 is {sum}, the manifest says {}", f.sha256)),
        Err(e) => Some(format!("cannot be read: {e}")),
    };
    let problem = match (size_problem, sum_problem) {
        (Some(s), Some(h)) => Some(format!("{s}; {h}")),
        (s, h) => s.or(h),
    };
    found(size, problem)
}

/// The sha256 of a file, read in 1 MiB pieces, with a bar at a terminal.
pub fn sha256_file(path: &Path, label: &str) -> std::io::Result<String> {
    let mut f = std::fs::File::open(path)?;
    let bar = super::download::progress_bar(&format!("checking {label}"), f.metadata().ok().map(|m| m.len()));
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        bar.inc(n as u64);
    }
    bar.finish_and_clear();
    Ok(hex(&hasher.finalize()))
}

/// The k3s version a bundle holds (`None`: a bundle without k3s).
fn held(m: &Manifest) -> Option<&str> {
    m.k3s.as_ref().map(|k| k.version.as_str())
}

/// What a bundle holds of k3s, for messages: `k3s v1.35.6+k3s1`, or `no k3s files`.
fn holds(m: &Manifest) -> String {
    held(m).map_or("no k3s files".to_string(), |v| format!("k3s {v}"))
}

/// The air-gap bundle of the answers, `~` expanded; relative paths are read from the current
/// directory, like the other paths on this machine (`ssh-key`).
pub fn bundle_dir(a: &Answers) -> Option<(&Path, PathBuf)> {
    let written = a.k3s.as_ref()?.airgap_bundle.as_deref()?;
    Some((written, crate::ssh::expand_tilde(written)))
}

/// `validate`'s look at the bundle: where `[k3s] airgap-bundle` names a directory of this
/// machine, its manifest must be readable, for the same k3s version, and its files present
/// with their sizes. A directory that does not exist yet is no problem here (the answer file
/// is often written before the bundle is made); `apply` refuses it.
pub fn answer_problems(a: &Answers) -> Vec<Problem> {
    const FIELD: &str = "k3s.airgap-bundle";
    let (Some(k3s), Some((written, dir))) = (&a.k3s, bundle_dir(a)) else {
        return Vec::new();
    };
    // A path its field check refuses is reported there already.
    let Some(text) = written.to_str() else {
        return Vec::new();
    };
    if crate::answers::rules::check_local_path(text).is_err() || !dir.exists() {
        return Vec::new();
    }
    let remake = format!("make it again: groundwork bundle --k3s {} --out {}", k3s.version, written.display());
    if !dir.is_dir() {
        return vec![Problem::new(FIELD, format!("{} is not a directory", dir.display()))];
    }
    let checked = match check_dir(&dir, Depth::Size) {
        Ok(c) => c,
        Err(e) => return vec![Problem::new(FIELD, e).help(remake)],
    };
    let mut out = Vec::new();
    if held(&checked.manifest) != Some(k3s.version.as_str()) {
        out.push(
            Problem::new(
                FIELD,
                format!(
                    "the bundle {} holds {}, but [k3s] version is {}",
                    dir.display(),
                    holds(&checked.manifest),
                    k3s.version
                ),
            )
            .see("k3s.version", "the version the site runs")
            .help(match held(&checked.manifest) {
                Some(v) => format!(
                    "make a bundle of {0} (groundwork bundle --k3s {0} --out DIR), or set version = \"{v}\"",
                    k3s.version
                ),
                None => format!("make a bundle of {0} (groundwork bundle --k3s {0} --out DIR)", k3s.version),
            }),
        );
    }
    if let Some(g) = &a.gitops {
        let engine = crate::handoff::install::engine_name(g.engine);
        let has = checked.manifest.gitops.as_ref().map(|p| p.engine);
        if has != Some(g.engine) {
            let holds = has.map_or("no GitOps engine".to_string(), |e| {
                format!("the {} install manifest", crate::handoff::install::engine_name(e))
            });
            out.push(
                Problem::new(
                    FIELD,
                    format!("the bundle {} holds {holds}, and the hand-off installs {engine}", dir.display()),
                )
                .see("gitops.engine", "the engine the site hands off to")
                .help(format!("{remake} --gitops {engine} VERSION")),
            );
        }
    }
    for p in checked.all_problems() {
        out.push(Problem::new(FIELD, format!("bundle {}: {p}", dir.display())).help(remake.clone()));
    }
    out
}

/// `apply`'s and `plan --live`'s check, before anything connects: when the hosts of the run
/// have k3s roles and the answers name an air-gap bundle, every file must hash to its manifest
/// sum. The files, hashed once here, for the run's uploads; `Err` says what is wrong.
pub fn verify_for_run(a: &Answers, only_hosts: &[String]) -> Result<Option<(Checked, Vec<Local>)>, String> {
    let k3s_roles = [Role::K3sServer, Role::K3sAgent];
    let k3s_in_run = a
        .hosts
        .iter()
        .filter(|h| only_hosts.is_empty() || only_hosts.contains(&h.name))
        .any(|h| h.roles.iter().any(|r| k3s_roles.contains(r)));
    let (Some(k3s), true) = (&a.k3s, k3s_in_run) else {
        return Ok(None);
    };
    // The k3s roles upload the bundle's binary and images: there is no other source.
    let Some((written, dir)) = bundle_dir(a) else {
        return Err(format!(
            "the k3s roles install from an air-gap bundle: set [k3s] airgap-bundle to a directory made with \
             `groundwork bundle --k3s {} --out DIR`; nothing was connected",
            k3s.version
        ));
    };
    let remake = format!("make it with `groundwork bundle --k3s {} --out {}`", k3s.version, written.display());
    if !dir.is_dir() {
        return Err(format!(
            "the air-gap bundle {} (k3s.airgap-bundle) does not exist on this machine: {remake}; nothing was connected",
            dir.display()
        ));
    }
    let checked = check_dir(&dir, Depth::Sha256)
        .map_err(|e| format!("the air-gap bundle (k3s.airgap-bundle): {e}; {remake}; nothing was connected"))?;
    let mut problems = checked.all_problems();
    if held(&checked.manifest) != Some(k3s.version.as_str()) {
        problems.insert(0, format!("it holds {}, but [k3s] version is {}", holds(&checked.manifest), k3s.version));
    }
    if !problems.is_empty() {
        return Err(format!(
            "the air-gap bundle {} (k3s.airgap-bundle) does not match its manifest:\n  {}\n{remake} again, or restore the files; nothing was connected",
            dir.display(),
            problems.join("\n  ")
        ));
    }
    let locals = checked.as_locals(written);
    Ok(Some((checked, locals)))
}

// ------------------------------------------------------------------ [site] package-bundle

const PACKAGE_FIELD: &str = "site.package-bundle";

/// The package bundle of the answers, as written and `~` expanded.
pub fn package_bundle_dir(a: &Answers) -> Option<(&Path, PathBuf)> {
    let written = a.site.package_bundle.as_deref()?;
    Some((written, crate::ssh::expand_tilde(written)))
}

/// Of the packages the roles of `hosts` (all when empty) need, those the bundle has no `.deb`
/// of, each with the roles that need it: `bind9 (dns)`.
fn uncovered(a: &Answers, catalog: &Catalog, m: &Manifest, hosts: &[String]) -> Vec<String> {
    let plan = crate::plan::build(a, catalog);
    let mut need: Vec<(String, Vec<String>)> = Vec::new();
    for h in plan.hosts.iter().filter(|h| hosts.is_empty() || hosts.contains(&h.name)) {
        for role in h.roles.iter().filter_map(|r| catalog.get(r)) {
            for p in &role.packages {
                match need.iter_mut().find(|(n, _)| n == p) {
                    Some((_, roles)) if !roles.contains(&role.name) => roles.push(role.name.clone()),
                    Some(_) => {}
                    None => need.push((p.clone(), vec![role.name.clone()])),
                }
            }
        }
    }
    let names: Vec<String> = need.iter().map(|(n, _)| n.clone()).collect();
    let missing = m.packages_missing(&names);
    need.into_iter()
        .filter(|(n, _)| missing.contains(&n.as_str()))
        .map(|(n, roles)| format!("{n} ({})", roles.join(", ")))
        .collect()
}

fn remake_debs(written: &Path) -> String {
    format!("make it with `groundwork bundle --debs ANSWER-FILE --out {}` (on Debian 12)", written.display())
}

/// `validate`'s look at `[site] package-bundle`: where it names a directory of this machine,
/// its manifest must be readable, hold Debian packages, cover the packages of every role of
/// the site, and its files must have their sizes. A directory that does not exist yet is no
/// problem here (`apply` refuses it).
pub fn package_problems(a: &Answers, catalog: &Catalog) -> Vec<Problem> {
    let Some((written, dir)) = package_bundle_dir(a) else {
        return Vec::new();
    };
    let Some(text) = written.to_str() else {
        return Vec::new();
    };
    if crate::answers::rules::check_local_path(text).is_err() || !dir.exists() {
        return Vec::new();
    }
    let remake = remake_debs(written);
    if !dir.is_dir() {
        return vec![Problem::new(PACKAGE_FIELD, format!("{} is not a directory", dir.display()))];
    }
    let checked = match check_dir(&dir, Depth::Size) {
        Ok(c) => c,
        Err(e) => return vec![Problem::new(PACKAGE_FIELD, e).help(remake)],
    };
    if checked.manifest.debs.is_none() {
        return vec![
            Problem::new(
                PACKAGE_FIELD,
                format!("the bundle {} holds no Debian packages (it was made without --debs)", dir.display()),
            )
            .help(remake),
        ];
    }
    let mut out = Vec::new();
    let missing = uncovered(a, catalog, &checked.manifest, &[]);
    if !missing.is_empty() {
        out.push(
            Problem::new(
                PACKAGE_FIELD,
                format!(
                    "the bundle {} has no package {}, which the site's roles need",
                    dir.display(),
                    missing.join(", ")
                ),
            )
            .help(format!("{remake} from this answer file")),
        );
    }
    for p in checked.all_problems() {
        out.push(Problem::new(PACKAGE_FIELD, format!("bundle {}: {p}", dir.display())).help(remake.clone()));
    }
    out
}

/// `apply`'s and `plan --live`'s check of `[site] package-bundle`, before anything connects:
/// every file hashes to its manifest sum and the packages of the run's hosts' roles are in
/// it. The repository the hosts get; `Err` says what is wrong.
/// `hashed`: a bundle this run has checked already (the air-gap bundle); when it is the same
/// directory, its files are not hashed a second time.
pub fn verify_packages_for_run(
    a: &Answers,
    catalog: &Catalog,
    only_hosts: &[String],
    hashed: Option<&Checked>,
) -> Result<Option<(Checked, Repo)>, String> {
    let Some((written, dir)) = package_bundle_dir(a) else {
        return Ok(None);
    };
    let remake = remake_debs(written);
    if !dir.is_dir() {
        return Err(format!(
            "the package bundle {} ({PACKAGE_FIELD}) does not exist on this machine: {remake}; nothing was connected",
            dir.display()
        ));
    }
    let same = |c: &&Checked| c.dir.canonicalize().ok().is_some_and(|d| Some(d) == dir.canonicalize().ok());
    let checked = match hashed.filter(same) {
        Some(c) => c.clone(),
        None => check_dir(&dir, Depth::Sha256)
            .map_err(|e| format!("the package bundle ({PACKAGE_FIELD}): {e}; {remake}; nothing was connected"))?,
    };
    let mut problems = checked.all_problems();
    if checked.manifest.debs.is_none() {
        problems.insert(0, "it holds no Debian packages (it was made without --debs)".into());
    } else {
        let missing = uncovered(a, catalog, &checked.manifest, only_hosts);
        if !missing.is_empty() {
            problems.insert(0, format!("it has no package {}, which the roles of the run need", missing.join(", ")));
        }
    }
    if !problems.is_empty() {
        return Err(format!(
            "the package bundle {} ({PACKAGE_FIELD}) cannot be used:\n  {}\n{remake} again, or restore the files; nothing was connected",
            dir.display(),
            problems.join("\n  ")
        ));
    }
    let files = checked
        .manifest
        .files
        .iter()
        .filter(|f| f.path.starts_with(&format!("{}/", super::debs::DIR)))
        .map(|f| Local { path: dir.join(&f.path).display().to_string(), size: f.size, sha256: f.sha256.clone() })
        .collect();
    let repo = Repo { dir: written.display().to_string(), files };
    Ok(Some((checked, repo)))
}
