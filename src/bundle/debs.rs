//! `groundwork bundle --debs ANSWERS`: the Debian packages of the roles the site's hosts have,
//! with their dependency closure, as a flat apt repository in `DIR/debs` that hosts install
//! from without a Debian mirror (`[site] package-bundle`).
//!
//! It uses this machine's apt, so this machine must be of the hosts' release (Debian 12) and
//! architecture. The closure comes from `apt-cache depends --recurse` (hard dependencies only),
//! with each group of alternatives resolved to one package (the first one apt knows; a
//! virtual package to its first provider; nothing more where one is in already). The sha256
//! and size of every file come from apt first (`apt-get download --print-uris`): a file that is
//! there with them is not requested again, the others are downloaded with `apt-get download`
//! into a directory of their own inside `debs/`, checked, and only then moved in. The
//! `Packages` index (control fields from `dpkg-deb -f`, then `Filename`, `Size`, `SHA256`) and a
//! `Release` file with its sum are written by groundwork, so no other package is needed.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use super::manifest::{DebsPart, FileEntry};
use super::{Arch, Error, FileOutcome, Run};
use crate::answers::model::Answers;
use crate::playbook::catalog::{Catalog, RoleSpec};

/// The directory of the packages in a bundle.
pub const DIR: &str = "debs";
/// The Debian release of the hosts (and of the machine that makes the bundle).
pub const RELEASE: &str = "bookworm";
pub const PACKAGES: &str = "Packages";
pub const RELEASE_FILE: &str = "Release";
/// What the manifest calls a `.deb` and the two indexes.
pub const WHAT_DEB: &str = "Debian package";
pub const WHAT_INDEX: &str = "apt repository index";

/// What the answer file asks of the bundle: the roles its hosts have and their packages.
#[derive(Debug, Clone)]
pub struct Request {
    pub roles: Vec<String>,
    pub packages: Vec<String>,
}

/// The roles the site's hosts have (in plan order, those with packages) and their packages,
/// each once: per host as the engine installs them ([`crate::engine::packages::of_roles`]).
pub fn site_packages(a: &Answers, catalog: &Catalog) -> Request {
    let plan = crate::plan::build(a, catalog);
    let (mut roles, mut packages) = (Vec::new(), Vec::new());
    for h in &plan.hosts {
        let specs: Vec<&RoleSpec> = h.roles.iter().filter_map(|r| catalog.get(r)).collect();
        for r in specs.iter().filter(|r| !r.packages.is_empty()) {
            if !roles.contains(&r.name) {
                roles.push(r.name.clone());
            }
        }
        for p in crate::engine::packages::of_roles(&specs) {
            if !packages.contains(&p) {
                packages.push(p);
            }
        }
    }
    Request { roles, packages }
}

// ------------------------------------------------------------------ the closure

/// One alternative of a dependency.
#[derive(Debug, Clone, PartialEq)]
enum Target {
    Real(String),
    /// A virtual package and the real packages that provide it.
    Virtual(Vec<String>),
}

/// The real packages of `apt-cache depends --recurse` and their hard dependencies, each a
/// group of alternatives (`a | b`).
#[derive(Debug, Default)]
pub struct Graph {
    real: BTreeMap<String, Vec<Vec<Target>>>,
}

/// A package name without its architecture qualifier: `perl:any` and `libc6:<arch>` are the
/// package; another architecture's is `None` (hosts install their own architecture's).
fn native(name: &str, arch: &str) -> Option<String> {
    match name.split_once(':') {
        None => Some(name.to_string()),
        Some((n, q)) if q == "any" || q == arch => Some(n.to_string()),
        Some(_) => None,
    }
}

/// Reads the output of `apt-cache depends --recurse --no-recommends ...` for architecture
/// `arch`. A package's block is its name on a line of its own (`<name>` for a virtual one),
/// then its dependencies, `  Depends: x` (` |Depends: x` when or-ed with the next line), each
/// followed by the packages that provide it, indented by four.
pub fn parse_depends(text: &str, arch: &str) -> Result<Graph, String> {
    let mut g = Graph::default();
    let mut current: Option<String> = None;
    let mut group: Vec<Target> = Vec::new();
    let mut open = false;
    let flush = |g: &mut Graph, current: &Option<String>, group: &mut Vec<Target>| {
        if let Some(p) = current
            && !group.is_empty()
        {
            g.real.entry(p.clone()).or_default().push(std::mem::take(group));
        }
        group.clear();
    };
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        if !line.starts_with(' ') {
            flush(&mut g, &current, &mut group);
            open = false;
            let name = line.trim();
            current = if name.starts_with('<') { None } else { native(name, arch) };
            if let Some(p) = &current {
                g.real.entry(p.clone()).or_default();
            }
            continue;
        }
        if current.is_none() {
            continue;
        }
        if let Some(provider) = line.strip_prefix("    ") {
            // A provider of the dependency above it: counts only for a virtual one.
            if let (Some(Target::Virtual(providers)), Some(p)) = (group.last_mut(), native(provider.trim(), arch)) {
                providers.push(p);
            }
            continue;
        }
        let (or, rest) = match (line.strip_prefix(" |"), line.strip_prefix("  ")) {
            (Some(rest), _) => (true, rest),
            (None, Some(rest)) => (false, rest),
            _ => return Err(format!("line {}: `{line}` is not a dependency line of apt-cache depends", i + 1)),
        };
        let Some((kind, target)) = rest.split_once(": ") else {
            return Err(format!("line {}: `{line}` is not a dependency line of apt-cache depends", i + 1));
        };
        if !open {
            flush(&mut g, &current, &mut group);
        }
        open = or;
        if !matches!(kind, "Depends" | "PreDepends") {
            continue;
        }
        let target = target.trim();
        match target.strip_prefix('<').and_then(|t| t.strip_suffix('>')) {
            Some(_) => group.push(Target::Virtual(Vec::new())),
            None => {
                if let Some(name) = native(target, arch) {
                    group.push(Target::Real(name));
                }
            }
        }
    }
    flush(&mut g, &current, &mut group);
    Ok(g)
}

impl Graph {
    /// The packages `roots` need on a fresh host: the roots, and for every group of
    /// alternatives of a package in, one package (none where one is in already; else the
    /// first real one, a virtual one by its first provider), breadth first. Sorted.
    pub fn closure(&self, roots: &[String]) -> Result<Vec<String>, String> {
        let mut chosen: BTreeSet<String> = BTreeSet::new();
        let mut queue: VecDeque<String> = VecDeque::new();
        let unknown: Vec<&str> = roots.iter().filter(|r| !self.real.contains_key(*r)).map(String::as_str).collect();
        if !unknown.is_empty() {
            return Err(format!("apt on this machine knows no package {}", unknown.join(", ")));
        }
        for r in roots {
            if chosen.insert(r.clone()) {
                queue.push_back(r.clone());
            }
        }
        while let Some(p) = queue.pop_front() {
            for group in &self.real[&p] {
                let options: Vec<&String> = group
                    .iter()
                    .flat_map(|t| match t {
                        Target::Real(n) => std::slice::from_ref(n),
                        Target::Virtual(providers) => providers.as_slice(),
                    })
                    .filter(|n| self.real.contains_key(*n))
                    .collect();
                if options.iter().any(|o| chosen.contains(*o)) {
                    continue;
                }
                let Some(pick) = options.first() else {
                    return Err(format!("no package apt knows satisfies a dependency of {p}"));
                };
                chosen.insert((*pick).clone());
                queue.push_back((*pick).clone());
            }
        }
        Ok(chosen.into_iter().collect())
    }
}

// ------------------------------------------------------------------ apt's URIs

/// A package file as `apt-get download --print-uris` names it.
#[derive(Debug, Clone, PartialEq)]
pub struct Uri {
    pub url: String,
    /// The name `apt-get download` saves it under (`bind9_1%3a9.18.47-1~deb12u1_amd64.deb`).
    pub saved_as: String,
    pub package: String,
    pub version: String,
    pub arch: String,
    pub size: u64,
    pub sha256: String,
}

impl Uri {
    /// The name in the bundle: `package_version_arch.deb` without the epoch, as Debian's
    /// pool names it (a `:` or its `%3a` in a `file:` URI is trouble).
    pub fn file_name(&self) -> String {
        let version = self.version.split_once(':').map_or(self.version.as_str(), |(_, v)| v);
        format!("{}_{version}_{}.deb", self.package, self.arch)
    }
}

/// The lines of `apt-get download --print-uris`: `'URL' FILE SIZE SHA256:HEX`.
pub fn parse_uris(text: &str) -> Result<Vec<Uri>, String> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        let bad =
            || format!("line {} of apt-get download --print-uris is not `'URL' FILE SIZE SHA256:SUM`: {line}", i + 1);
        let rest = line.strip_prefix('\'').ok_or_else(bad)?;
        let (url, rest) = rest.split_once('\'').ok_or_else(bad)?;
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let [saved_as, size, sum] = fields.as_slice() else { return Err(bad()) };
        let sha256 = sum.strip_prefix("SHA256:").ok_or_else(|| format!("{saved_as}: apt gives no SHA256 ({sum})"))?;
        if sha256.len() != 64 || !sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(bad());
        }
        let stem = saved_as.strip_suffix(".deb").ok_or_else(bad)?;
        let parts: Vec<&str> = stem.split('_').collect();
        let [package, version, arch] = parts.as_slice() else { return Err(bad()) };
        out.push(Uri {
            url: url.to_string(),
            saved_as: saved_as.to_string(),
            package: package.to_string(),
            version: version.replace("%3a", ":").replace("%3A", ":"),
            arch: arch.to_string(),
            size: size.parse().map_err(|_| bad())?,
            sha256: sha256.to_ascii_lowercase(),
        });
    }
    Ok(out)
}

// ------------------------------------------------------------------ the indexes

/// A package's stanza of the `Packages` index: its control fields, then where it is and its
/// size and sum.
pub fn stanza(control: &str, file: &str, size: u64, sha256: &str) -> String {
    format!("{}\nFilename: ./{file}\nSize: {size}\nSHA256: {sha256}\n", control.trim_end_matches('\n'))
}

/// The stanzas of a `Packages` index by file name (`Filename: ./NAME`), with their SHA256.
pub fn stanzas_by_file(index: &str) -> BTreeMap<&str, (&str, String)> {
    let mut out = BTreeMap::new();
    for block in index.split("\n\n") {
        let field = |k: &str| block.lines().find_map(|l| l.strip_prefix(k)).map(str::trim);
        if let (Some(file), Some(sha)) = (field("Filename:"), field("SHA256:")) {
            let mut text = block.trim_end_matches('\n').to_string();
            text.push('\n');
            out.insert(file.trim_start_matches("./"), (sha, text));
        }
    }
    out
}

/// The `Release` file of the repository: what apt reads first, with the sum of `Packages`
/// (the hosts trust the repository: it is a directory groundwork put there itself).
pub fn release(packages: &[u8], date: &str) -> String {
    format!("Origin: groundwork\nLabel: groundwork package bundle\nDate: {date}\nSHA256:\n{}", sum_line(packages))
}

/// The line of a `Release` file that vouches for `Packages`.
fn sum_line(packages: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    format!(" {} {} {PACKAGES}\n", crate::playbook::catalog::hex(&Sha256::digest(packages)), packages.len())
}

/// A time as an RFC 1123 date in UTC, the form of a `Release` file's `Date`.
pub fn rfc1123(t: SystemTime) -> String {
    let secs = t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    const DAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const MONTHS: [&str; 12] = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];
    format!(
        "{}, {day:02} {} {year} {:02}:{:02}:{:02} UTC",
        DAYS[days.rem_euclid(7) as usize],
        MONTHS[(month - 1) as usize],
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

// ------------------------------------------------------------------ this machine

/// The machine's apt must be of the hosts' release and architecture.
pub fn check_machine(arch: Arch) -> Result<(), String> {
    let os = std::fs::read_to_string("/etc/os-release").unwrap_or_default();
    let field = |k: &str| {
        os.lines()
            .find_map(|l| l.strip_prefix(k)?.strip_prefix('='))
            .map(|v| v.trim_matches('"').to_string())
            .unwrap_or_default()
    };
    let (id, codename, pretty) = (field("ID"), field("VERSION_CODENAME"), field("PRETTY_NAME"));
    if id != "debian" || codename != RELEASE {
        let this = if pretty.is_empty() { "not Debian (no /etc/os-release)".to_string() } else { pretty };
        return Err(format!(
            "bundle --debs downloads the packages with this machine's apt, so it must run on Debian 12 ({RELEASE}), \
             the release of the hosts; this machine is {this}"
        ));
    }
    let out = run_tool(Command::new("dpkg").arg("--print-architecture"), "dpkg --print-architecture")?;
    let this = out.trim();
    if this != arch.as_str() {
        return Err(format!(
            "bundle --debs downloads the packages of this machine's architecture, and this machine is {this}, \
             the hosts are {arch} (--arch): run it on a Debian 12 {arch} machine"
        ));
    }
    Ok(())
}

/// A command's standard output, or what went wrong with it (its last lines of stderr).
fn run_tool(cmd: &mut Command, what: &str) -> Result<String, String> {
    let out = cmd.output().map_err(|e| format!("cannot run {what}: {e}"))?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        let tail: Vec<&str> = err.lines().filter(|l| !l.trim().is_empty()).collect();
        let tail = tail[tail.len().saturating_sub(6)..].join("\n  ");
        return Err(format!("{what} failed ({}):\n  {tail}", out.status));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// apt as a fresh host sees the archive: with no package installed (what this machine has
/// installed, maybe newer than the archive, is not a version a host can get).
const FRESH: [&str; 2] = ["-o", "Dir::State::Status=/dev/null"];

/// apt-get as a fresh host sees the archive. As root it would drop to `_apt` to download,
/// which may not enter the bundle directory.
fn apt_get() -> Command {
    let mut c = Command::new("apt-get");
    c.args(FRESH);
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } == 0 {
        c.args(["-o", "APT::Sandbox::User=root"]);
    }
    c
}

const DEPENDS_FLAGS: &[&str] = &[
    "depends",
    "--recurse",
    "--no-recommends",
    "--no-suggests",
    "--no-conflicts",
    "--no-breaks",
    "--no-replaces",
    "--no-enhances",
];

/// A directory of its own inside `debs/` for one run's downloads, removed when dropped.
struct Scratch(PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The debs part of a finished run.
pub struct Done {
    pub part: DebsPart,
    pub files: Vec<FileOutcome>,
    pub summary: String,
}

/// Put the packages of `req` and their closure into `dir/debs`, as a flat apt repository.
pub(super) fn make(run: &mut Run<'_>, arch: Arch, req: &Request) -> Result<Done, Error> {
    let started = Instant::now();
    check_machine(arch).map_err(Error::Input)?;
    let depends = run_tool(
        Command::new("apt-cache").args(FRESH).args(DEPENDS_FLAGS).args(&req.packages),
        "apt-cache depends (is apt's package list here current? apt-get update)",
    )
    .map_err(Error::Local)?;
    let graph = parse_depends(&depends, arch.as_str()).map_err(|e| Error::Local(format!("apt-cache depends: {e}")))?;
    let closure = graph.closure(&req.packages).map_err(Error::Local)?;
    let uris_text =
        run_tool(apt_get().args(["download", "--print-uris"]).args(&closure), "apt-get download --print-uris")
            .map_err(Error::Local)?;
    let uris = parse_uris(&uris_text).map_err(Error::Local)?;
    let listed: BTreeSet<&str> = uris.iter().map(|u| u.package.as_str()).collect();
    let unlisted: Vec<&str> = closure.iter().map(String::as_str).filter(|p| !listed.contains(p)).collect();
    if !unlisted.is_empty() {
        return Err(Error::Local(format!("apt-get download names no file for {}", unlisted.join(", "))));
    }

    let debs = run.dir.join(DIR);
    std::fs::create_dir_all(&debs).map_err(|e| Error::Local(format!("cannot create {}: {e}", debs.display())))?;
    let entry = |u: &Uri| FileEntry {
        path: format!("{DIR}/{}", u.file_name()),
        what: WHAT_DEB.into(),
        package: Some(u.package.clone()),
        image: None,
        version: u.version.clone(),
        source: u.url.clone(),
        sha256: u.sha256.clone(),
        size: u.size,
    };
    let mut files: Vec<FileOutcome> = Vec::new();
    let mut missing: Vec<&Uri> = Vec::new();
    for u in &uris {
        let path = debs.join(u.file_name());
        let there = std::fs::metadata(&path).is_ok_and(|m| m.is_file() && m.len() == u.size)
            && super::check::sha256_file(&path, &format!("{DIR}/{}", u.file_name())).is_ok_and(|s| s == u.sha256);
        if there {
            let outcome = FileOutcome { entry: entry(u), downloaded: None };
            (run.on_file)(&outcome);
            files.push(outcome);
        } else {
            missing.push(u);
        }
    }

    let mut download_secs = 0.0;
    if !missing.is_empty() {
        run.drop_manifest()?;
        let scratch = Scratch(debs.join(format!(".download-{}", std::process::id())));
        let _ = std::fs::remove_dir_all(&scratch.0);
        std::fs::create_dir(&scratch.0)
            .map_err(|e| Error::Local(format!("cannot create {}: {e}", scratch.0.display())))?;
        let specs: Vec<String> = missing.iter().map(|u| format!("{}={}", u.package, u.version)).collect();
        let t = Instant::now();
        let got = run_tool(apt_get().args(["download", "-q"]).args(&specs).current_dir(&scratch.0), "apt-get download");
        download_secs = t.elapsed().as_secs_f64();
        let total: u64 = missing.iter().map(|u| u.size).sum::<u64>().max(1);
        // What arrived whole and right goes in, even when apt failed on another file.
        let mut bad = Vec::new();
        for u in &missing {
            let from = scratch.0.join(&u.saved_as);
            let rel = format!("{DIR}/{}", u.file_name());
            let sum = super::check::sha256_file(&from, &rel);
            match sum {
                Ok(s) if s == u.sha256 => {
                    let to = debs.join(u.file_name());
                    std::fs::rename(&from, &to).map_err(|e| {
                        Error::Local(format!("cannot move {} to {}: {e}", from.display(), to.display()))
                    })?;
                    let share = download_secs * u.size as f64 / total as f64;
                    let outcome = FileOutcome { entry: entry(u), downloaded: Some(share) };
                    (run.on_file)(&outcome);
                    files.push(outcome);
                }
                Ok(s) => bad.push(format!("{rel}: {} has sha256 {s}, apt's index says {}", u.url, u.sha256)),
                Err(e) if got.is_ok() => bad.push(format!("{rel}: apt-get download left no {}: {e}", u.saved_as)),
                Err(_) => {}
            }
        }
        got.map_err(Error::Local)?;
        if !bad.is_empty() {
            return Err(Error::Local(bad.join("\n")));
        }
    }

    // Files of an earlier run that this one does not list: the repository is what it says.
    let keep: BTreeSet<String> = uris.iter().map(Uri::file_name).collect();
    let mut stale = Vec::new();
    for e in std::fs::read_dir(&debs).map_err(|e| Error::Local(format!("cannot read {}: {e}", debs.display())))? {
        let Ok(e) = e else { continue };
        let name = e.file_name().to_string_lossy().into_owned();
        if name.ends_with(".deb") && !keep.contains(&name) {
            stale.push(e.path());
        }
    }
    if !stale.is_empty() {
        run.drop_manifest()?;
        for p in &stale {
            std::fs::remove_file(p).map_err(|e| Error::Local(format!("cannot remove {}: {e}", p.display())))?;
        }
    }

    // The indexes, from the files as they are now; the stanza of a file the old index lists
    // with the same sha256 is kept as it is (no dpkg-deb for it).
    files.sort_by(|a, b| a.entry.package.cmp(&b.entry.package));
    let packages_path = debs.join(PACKAGES);
    let old = std::fs::read_to_string(&packages_path).unwrap_or_default();
    let known = stanzas_by_file(&old);
    let mut index = String::new();
    for f in &files {
        let name = f.entry.path.rsplit('/').next().unwrap_or(&f.entry.path);
        let one = match known.get(name) {
            Some((sha256, text)) if *sha256 == f.entry.sha256 => text.to_string(),
            _ => {
                let path = run.dir.join(&f.entry.path);
                let what = format!("dpkg-deb -f {}", f.entry.path);
                let control = run_tool(Command::new("dpkg-deb").arg("-f").arg(&path), &what).map_err(Error::Local)?;
                stanza(&control, name, f.entry.size, &f.entry.sha256)
            }
        };
        if !index.is_empty() {
            index.push('\n');
        }
        index.push_str(&one);
    }
    let release_path = debs.join(RELEASE_FILE);
    let same = std::fs::read(&packages_path).is_ok_and(|old| old == index.as_bytes())
        && std::fs::read_to_string(&release_path).is_ok_and(|r| r.contains(&sum_line(index.as_bytes())));
    if !same {
        run.drop_manifest()?;
        let write = |p: &Path, bytes: &[u8]| {
            crate::state::write_private(p, bytes, 0o644)
                .map_err(|e| Error::Local(format!("cannot write {}: {e}", p.display())))
        };
        write(&packages_path, index.as_bytes())?;
        write(&release_path, release(index.as_bytes(), &rfc1123(SystemTime::now())).as_bytes())?;
    }
    let mut indexes = Vec::new();
    for (name, path) in [(PACKAGES, &packages_path), (RELEASE_FILE, &release_path)] {
        let rel = format!("{DIR}/{name}");
        let sha256 = super::check::sha256_file(path, &rel).map_err(|e| Error::Local(format!("{rel}: {e}")))?;
        let size = std::fs::metadata(path).map_err(|e| Error::Local(format!("{rel}: {e}")))?.len();
        indexes.push(FileOutcome {
            entry: FileEntry {
                path: rel,
                what: WHAT_INDEX.into(),
                package: None,
                image: None,
                version: RELEASE.into(),
                source: "groundwork".into(),
                sha256,
                size,
            },
            downloaded: None,
        });
    }

    let fetched = files.iter().filter(|f| f.downloaded.is_some()).count();
    let bytes: u64 = files.iter().map(|f| f.entry.size).sum();
    let summary = format!(
        "debs: {} packages ({}) for the {} packages of roles {}: {fetched} downloaded in {download_secs:.2} s, {} already there, {} stale removed; Packages index {} ({:.2} s)",
        files.len(),
        super::size(bytes),
        req.packages.len(),
        req.roles.join(", "),
        files.len() - fetched,
        stale.len(),
        if same { "unchanged" } else { "written" },
        started.elapsed().as_secs_f64()
    );
    files.extend(indexes);
    let part = DebsPart { release: RELEASE.into(), roles: req.roles.clone(), packages: req.packages.clone() };
    Ok(Done { part, files, summary })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Recorded here (Debian 12, amd64): `apt-cache depends --recurse --no-recommends
    /// --no-suggests --no-conflicts --no-breaks --no-replaces --no-enhances bind9-dnsutils`,
    /// shortened, with a foreign-architecture dependency added.
    const DEPENDS: &str = "bind9-dnsutils
 |Depends: bind9-host
  Depends: <host>
    bind9-host
  Depends: bind9-libs
  Depends: libc6
bind9-host
  Depends: bind9-libs
  Depends: libc6
bind9-libs
  Depends: libuv1
  Depends: libc6
 |Depends: debconf
  Depends: <debconf-2.0>
    cdebconf
    debconf
  Depends: lsb-base
    sysvinit-utils
  Depends: <perl:any>
    perl
  Depends: libfoo:i386
libuv1
  Depends: libc6
libc6
  Depends: libgcc-s1
libgcc-s1
  PreDepends: libc6
debconf
  PreDepends: perl-base
cdebconf
  Depends: libc6
  Depends: libdebian-installer4
libdebian-installer4
  Depends: libc6
lsb-base
  Depends: sysvinit-utils
sysvinit-utils
  PreDepends: libc6
perl
  Depends: perl-base
perl-base
  PreDepends: libc6
sysvinit-utils:i386
<host>
<debconf-2.0>
<perl:any>
";

    #[test]
    fn the_closure_takes_one_of_each_alternative_and_providers_for_virtual_packages() {
        let g = parse_depends(DEPENDS, "amd64").unwrap();
        let c = g.closure(&["bind9-dnsutils".into()]).unwrap();
        assert_eq!(
            c,
            [
                "bind9-dnsutils",
                "bind9-host",
                "bind9-libs",
                "debconf",
                "libc6",
                "libgcc-s1",
                "libuv1",
                "lsb-base",
                "perl",
                "perl-base",
                "sysvinit-utils"
            ],
            "cdebconf (the other provider of debconf-2.0) and another architecture's package stay out"
        );
        // A virtual dependency alone is its first provider.
        let g = parse_depends("a\n  Depends: <v>\n    b\n    c\nb\nc\n<v>\n", "amd64").unwrap();
        assert_eq!(g.closure(&["a".into()]).unwrap(), ["a", "b"]);
        // ...unless another provider is in already.
        assert_eq!(g.closure(&["c".into(), "a".into()]).unwrap(), ["a", "c"]);
        // Unknown roots and unsatisfiable dependencies are named.
        assert!(g.closure(&["nope".into()]).unwrap_err().contains("knows no package nope"));
        let g = parse_depends("a\n  Depends: <gone>\n", "amd64").unwrap();
        assert!(g.closure(&["a".into()]).unwrap_err().contains("a dependency of a"));
        assert!(parse_depends("a\n Depends x\n", "amd64").unwrap_err().contains("line 2"));
    }

    #[test]
    fn apt_uris_give_name_version_size_and_sum() {
        let text = "'http://deb.debian.org/debian/pool/main/b/bind9/bind9_9.18.47-1%7edeb12u1_amd64.deb' bind9_1%3a9.18.47-1~deb12u1_amd64.deb 250424 SHA256:6a8b9118bdbf8632315919f4394aa094d9f310068c4b85213c6db14428599098\n\
'http://deb.debian.org/debian/pool/main/t/tzdata/tzdata_2025b-0+deb12u1_all.deb' tzdata_2025b-0+deb12u1_all.deb 260000 SHA256:BA4F88F73DBC3AE9055F3C20F4523BFDBAF1AD13FF95E258924F77D20B4FBEDF\n";
        let u = parse_uris(text).unwrap();
        assert_eq!(u.len(), 2);
        assert_eq!(
            (u[0].package.as_str(), u[0].version.as_str(), u[0].arch.as_str()),
            ("bind9", "1:9.18.47-1~deb12u1", "amd64")
        );
        assert_eq!(u[0].file_name(), "bind9_9.18.47-1~deb12u1_amd64.deb", "the epoch is not in the name");
        assert_eq!(u[0].saved_as, "bind9_1%3a9.18.47-1~deb12u1_amd64.deb");
        assert_eq!(u[0].size, 250424);
        assert_eq!(u[1].file_name(), "tzdata_2025b-0+deb12u1_all.deb");
        assert_eq!(u[1].sha256, "ba4f88f73dbc3ae9055f3c20f4523bfdbaf1ad13ff95e258924f77d20b4fbedf");
        assert!(parse_uris("'http://x/a.deb' a_1_all.deb 10 MD5Sum:abc\n").unwrap_err().contains("no SHA256"));
        assert!(parse_uris("E: nope\n").unwrap_err().contains("line 1"));
    }

    #[test]
    fn a_stanza_is_the_control_fields_then_where_the_file_is() {
        let control = "Package: bind9-host\nVersion: 1:9.18.47-1~deb12u1\nArchitecture: amd64\nDescription: DNS Lookup Utility\n This package provides the 'host' utility.\n";
        let s = stanza(control, "bind9-host_9.18.47-1~deb12u1_amd64.deb", 54840, &"ab".repeat(32));
        assert_eq!(
            s,
            format!(
                "Package: bind9-host\nVersion: 1:9.18.47-1~deb12u1\nArchitecture: amd64\nDescription: DNS Lookup Utility\n This package provides the 'host' utility.\nFilename: ./bind9-host_9.18.47-1~deb12u1_amd64.deb\nSize: 54840\nSHA256: {}\n",
                "ab".repeat(32)
            )
        );
        let two = format!("{s}\n{}", stanza("Package: tzdata\nVersion: 1\n", "tzdata_1_all.deb", 10, &"cd".repeat(32)));
        let by = stanzas_by_file(&two);
        assert_eq!(by["bind9-host_9.18.47-1~deb12u1_amd64.deb"], ("ab".repeat(32).as_str(), s.clone()));
        assert_eq!(by["tzdata_1_all.deb"].0, "cd".repeat(32));
        assert!(
            by["tzdata_1_all.deb"].1.ends_with("SHA256: cdcd".to_string().as_str())
                || by["tzdata_1_all.deb"].1.contains("SHA256: cdcd")
        );
        let r = release(b"Package: a\n", "Thu, 01 Jan 1970 00:00:00 UTC");
        assert!(r.contains("Date: Thu, 01 Jan 1970 00:00:00 UTC\n"), "{r}");
        assert!(r.ends_with(" 11 Packages\n") && r.contains("SHA256:\n "), "{r}");
        assert_eq!(
            rfc1123(UNIX_EPOCH + std::time::Duration::from_secs(1_717_243_200)),
            "Sat, 01 Jun 2024 12:00:00 UTC"
        );
        assert_eq!(rfc1123(UNIX_EPOCH + std::time::Duration::from_secs(951_825_600)), "Tue, 29 Feb 2000 12:00:00 UTC");
    }
}
