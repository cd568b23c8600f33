//! `groundwork bundle`: on a machine with Internet access, put what an air-gapped site needs
//! for k3s into one directory (the k3s binary, the air-gap image tarball and the release's
//! sha256 list, and optionally the GitOps engine's install.yaml and an archive of each image
//! it names), every file checked, with a manifest that `validate` reads and `apply` verifies
//! before it connects to any host.
//!
//! Layout: `DIR/k3s/<file>`, `DIR/gitops/<engine>-install.yaml`, `DIR/gitops/images/*.tar`,
//! `DIR/manifest.json`. The sha256 list comes first and every k3s file is checked against it;
//! the GitOps YAML and the image archives have no published sum, so the manifest records the
//! one each had when it was made. A re-run requests nothing that is already there and right.
//! The manifest is written last, so a run that fails leaves none (and the bundle is refused
//! until a run finishes).

pub mod check;
pub mod debs;
pub mod download;
pub mod images;
pub mod manifest;

use std::path::{Path, PathBuf};
use std::time::Instant;

use serde::{Deserialize, Serialize};

use crate::answers::model::GitOpsEngine;
pub(crate) use crate::engine::steps::file::size;
use download::{Failure, Request as Download};
use manifest::{DebsPart, FileEntry, GitOpsPart, K3sPart, Manifest};

pub const K3S_URL: &str = "https://github.com/k3s-io/k3s/releases/download";
pub const FLUX_URL: &str = "https://github.com/fluxcd/flux2/releases/download";
pub const ARGOCD_URL: &str = "https://raw.githubusercontent.com/argoproj/argo-cd";

/// The architecture of the k3s nodes (not of this machine).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Arch {
    Amd64,
    Arm64,
}

impl Arch {
    pub fn as_str(self) -> &'static str {
        match self {
            Arch::Amd64 => "amd64",
            Arch::Arm64 => "arm64",
        }
    }

    /// The release's name of the binary: amd64 has no suffix.
    pub fn k3s_binary(self) -> &'static str {
        match self {
            Arch::Amd64 => "k3s",
            Arch::Arm64 => "k3s-arm64",
        }
    }

    pub fn images(self) -> String {
        format!("k3s-airgap-images-{self}.tar.zst")
    }

    pub fn sums(self) -> String {
        format!("sha256sum-{self}.txt")
    }

    pub fn k3s_binary_path(self) -> String {
        format!("k3s/{}", self.k3s_binary())
    }

    pub fn images_path(self) -> String {
        format!("k3s/{}", self.images())
    }

    pub fn sums_path(self) -> String {
        format!("k3s/{}", self.sums())
    }
}

impl std::fmt::Display for Arch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What to put into the bundle.
#[derive(Debug, Clone)]
pub struct Request {
    /// A k3s release tag, `v1.35.6+k3s1`; `None`: no k3s files (a bundle of packages).
    pub k3s_version: Option<String>,
    /// The engine and its version (`2.4.0`; a leading `v` is dropped).
    pub gitops: Option<(GitOpsEngine, String)>,
    pub out: PathBuf,
    pub arch: Arch,
    pub k3s_url: String,
    pub flux_url: String,
    pub argocd_url: String,
    /// Pull the GitOps images from this registry (`HOST[:PORT]`) instead of each image's own.
    pub registry_mirror: Option<String>,
    /// Pull without TLS verification from a mirror that is not on loopback.
    pub registry_insecure: bool,
    /// The Debian packages of an answer file's roles (`--debs`).
    pub debs: Option<debs::Request>,
}

/// Why a bundle run stopped.
#[derive(Debug)]
pub enum Error {
    /// The request itself is wrong; nothing was requested.
    Input(String),
    /// A download failed; earlier files stay, no manifest is written.
    Download(Failure),
    /// An image could not be archived; earlier files stay, no manifest is written.
    Image(images::Failure),
    /// This machine could not do its part (a directory, the manifest).
    Local(String),
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Error::Input(e) | Error::Local(e) => f.write_str(e),
            Error::Download(e) => write!(f, "download failed: {e}"),
            Error::Image(e) => write!(f, "image archive failed: {e}"),
        }
    }
}

/// `--gitops ENGINE VERSION` into the engine and the version without a leading `v`.
pub fn parse_gitops(engine: &str, version: &str) -> Result<(GitOpsEngine, String), String> {
    let engine = match engine {
        "flux" => GitOpsEngine::Flux,
        "argocd" => GitOpsEngine::Argocd,
        other => return Err(format!("--gitops: `{other}` is not a GitOps engine (flux or argocd)")),
    };
    let v = version.strip_prefix('v').unwrap_or(version);
    // It goes into a URL path as it is: digits and dots, a pre-release suffix at most.
    let ok = v.len() <= 64
        && v.starts_with(|c: char| c.is_ascii_digit())
        && v.chars().all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-');
    if !ok {
        return Err(format!("--gitops: `{version}` is not a release version (e.g. 2.4.0)"));
    }
    Ok((engine, v.to_string()))
}

fn engine_name(e: GitOpsEngine) -> &'static str {
    match e {
        GitOpsEngine::Flux => "flux",
        GitOpsEngine::Argocd => "argocd",
    }
}

/// A base URL without its trailing `/`, or why it is not one.
fn base_url(option: &str, url: &str) -> Result<String, String> {
    let ok = (url.starts_with("https://") || url.starts_with("http://"))
        && url.len() > "https://".len()
        && !url.chars().any(|c| c.is_whitespace() || c.is_control());
    if ok {
        Ok(url.trim_end_matches('/').to_string())
    } else {
        Err(format!("{option} `{url}` is not an http:// or https:// URL"))
    }
}

/// One file of the bundle: where it goes, what it is, where it comes from.
struct Spec {
    path: String,
    what: String,
    version: String,
    url: String,
}

impl Request {
    /// Refuses what is not what it claims to be, before any request.
    fn check(&self) -> Result<(), String> {
        let Some(k3s_version) = &self.k3s_version else {
            if self.gitops.is_some() {
                return Err("--gitops goes with --k3s: the engine is installed on the k3s cluster".into());
            }
            if self.debs.is_none() {
                return Err("bundle needs --k3s VERSION or --debs ANSWERS (or both)".into());
            }
            return Ok(());
        };
        crate::answers::rules::check_k3s_version(k3s_version).map_err(|e| format!("--k3s: {e}"))?;
        base_url("--k3s-url", &self.k3s_url)?;
        if let Some((engine, version)) = &self.gitops {
            parse_gitops(engine_name(*engine), version)?;
            match engine {
                GitOpsEngine::Flux => base_url("--flux-url", &self.flux_url)?,
                GitOpsEngine::Argocd => base_url("--argocd-url", &self.argocd_url)?,
            };
        }
        if let Some(m) = &self.registry_mirror {
            images::check_mirror(m)?;
            if self.gitops.is_none() {
                return Err("--registry-mirror: there are no images to pull without --gitops".into());
            }
        }
        if self.registry_insecure && self.registry_mirror.is_none() {
            return Err(
                "--registry-insecure goes with --registry-mirror (the images' own registries are always verified)"
                    .into(),
            );
        }
        Ok(())
    }

    /// Pull without TLS verification: from a mirror on loopback (plain http there is the
    /// usual test and cache setup), or where `--registry-insecure` says so.
    fn insecure(&self) -> bool {
        self.registry_mirror.as_deref().is_some_and(|m| self.registry_insecure || images::is_loopback(m))
    }

    fn k3s_spec(&self, path: String, name: &str, what: &str) -> Result<Spec, String> {
        // The tag's `+` is a space in a URL's query and unsafe in a path: %2B, as GitHub links it.
        let version = self.k3s_version.clone().unwrap_or_default();
        let tag = version.replace('+', "%2B");
        let url = format!("{}/{tag}/{name}", base_url("--k3s-url", &self.k3s_url)?);
        Ok(Spec { path, what: what.into(), version, url })
    }

    fn gitops_spec(&self) -> Result<Option<Spec>, String> {
        let Some((engine, version)) = &self.gitops else {
            return Ok(None);
        };
        let (what, url) = match engine {
            GitOpsEngine::Flux => (
                "Flux install manifest",
                format!("{}/v{version}/install.yaml", base_url("--flux-url", &self.flux_url)?),
            ),
            GitOpsEngine::Argocd => (
                "Argo CD install manifest",
                format!("{}/v{version}/manifests/install.yaml", base_url("--argocd-url", &self.argocd_url)?),
            ),
        };
        let path = format!("gitops/{}-install.yaml", engine_name(*engine));
        Ok(Some(Spec { path, what: what.into(), version: version.clone(), url }))
    }
}

/// One file of a finished run.
#[derive(Debug, Clone)]
pub struct FileOutcome {
    pub entry: FileEntry,
    /// The seconds its download took; `None`: it was there and right, nothing was requested.
    pub downloaded: Option<f64>,
}

fn rate(bytes: u64, seconds: f64) -> String {
    format!("{}/s", size((bytes as f64 / seconds.max(0.001)) as u64))
}

impl FileOutcome {
    /// The line people see when the file is in place.
    pub fn line(&self) -> String {
        let e = &self.entry;
        if let Some(image) = &e.image {
            return match self.downloaded {
                Some(s) => format!("copied         {}  {} in {s:.2} s ({image})", e.path, size(e.size)),
                None => format!("already there  {}  {} (sha256 checked, not copied)", e.path, size(e.size)),
            };
        }
        match self.downloaded {
            Some(s) => format!("downloaded     {}  {} in {s:.2} s ({})", e.path, size(e.size), rate(e.size, s)),
            None => format!("already there  {}  {} (sha256 checked, not requested)", e.path, size(e.size)),
        }
    }
}

/// A finished bundle run.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub dir: PathBuf,
    pub files: Vec<FileOutcome>,
    pub seconds: f64,
    /// The debs part's own line (`debs: N packages ...`), when it had one.
    pub debs_summary: Option<String>,
    /// What the earlier manifest listed that this run was not asked for (it is left out now).
    pub dropped: Vec<String>,
}

impl Outcome {
    fn fetched(&self) -> impl Iterator<Item = (&FileEntry, f64)> {
        self.files.iter().filter_map(|f| f.downloaded.map(|s| (&f.entry, s)))
    }

    pub fn bytes_downloaded(&self) -> u64 {
        self.fetched().map(|(e, _)| e.size).sum()
    }

    pub fn total_line(&self) -> String {
        let all: u64 = self.files.iter().map(|f| f.entry.size).sum();
        let n = self.fetched().count();
        let secs: f64 = self.fetched().map(|(_, s)| s).sum();
        let got = self.bytes_downloaded();
        let downloaded = if n == 0 {
            "0 downloaded".to_string()
        } else {
            format!("{n} downloaded ({} in {secs:.2} s, {})", size(got), rate(got, secs))
        };
        format!(
            "total: {} files, {}: {downloaded}, {} already there; manifest {} ({:.2} s)",
            self.files.len(),
            size(all),
            self.files.len() - n,
            self.dir.join(manifest::MANIFEST).display(),
            self.seconds
        )
    }

    pub fn to_json(&self) -> serde_json::Value {
        let files: Vec<serde_json::Value> = self
            .files
            .iter()
            .map(|f| {
                let mut v = serde_json::to_value(&f.entry).expect("entries serialize");
                v["status"] = match (f.downloaded, &f.entry.image) {
                    (None, _) => "already there",
                    (Some(_), Some(_)) => "copied",
                    (Some(_), None) => "downloaded",
                }
                .into();
                v["seconds"] = f.downloaded.unwrap_or(0.0).into();
                v
            })
            .collect();
        serde_json::json!({
            "ok": true,
            "debs": self.debs_summary,
            "dir": self.dir.display().to_string(),
            "manifest": self.dir.join(manifest::MANIFEST).display().to_string(),
            "files": files,
            "files_downloaded": self.fetched().count(),
            "bytes_downloaded": self.bytes_downloaded(),
            "seconds": self.seconds,
        })
    }
}

/// A run's state: the manifest an earlier run left (it vouches for files), and whether it
/// was taken away yet (before the first change: it would describe files being replaced).
struct Run<'a> {
    dir: &'a Path,
    client: reqwest::Client,
    previous: Option<Manifest>,
    manifest_removed: bool,
    on_file: &'a mut dyn FnMut(&FileOutcome),
}

impl Run<'_> {
    /// The sum an earlier finished run recorded for this very file (same version, same URL).
    fn vouched(&self, spec: &Spec) -> Option<String> {
        let entry = self.previous.as_ref()?.file(&spec.path)?;
        (entry.version == spec.version && entry.source == spec.url).then(|| entry.sha256.clone())
    }

    /// The old manifest goes before the first change: it would describe files being replaced.
    fn drop_manifest(&mut self) -> Result<(), Error> {
        if !self.manifest_removed {
            match std::fs::remove_file(self.dir.join(manifest::MANIFEST)) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(Error::Local(format!("cannot remove the old manifest: {e}"))),
            }
            self.manifest_removed = true;
        }
        Ok(())
    }

    /// The file of `spec` in place: kept without a request where it hashes to `known` (the
    /// sha256 list's sum, or the sum an earlier run recorded), else downloaded and checked
    /// against `expected` (with the file that says so).
    async fn obtain(
        &mut self,
        spec: &Spec,
        known: Option<&str>,
        expected: Option<(&str, &str)>,
    ) -> Result<FileOutcome, Error> {
        let dest = self.dir.join(&spec.path);
        let entry = |size, sha256| FileEntry {
            path: spec.path.clone(),
            what: spec.what.clone(),
            package: None,
            version: spec.version.clone(),
            source: spec.url.clone(),
            sha256,
            size,
            image: None,
        };
        if let Some(known) = known
            && let Ok(meta) = std::fs::metadata(&dest)
            && meta.is_file()
            && check::sha256_file(&dest, &spec.path).is_ok_and(|sum| sum == known)
        {
            let outcome = FileOutcome { entry: entry(meta.len(), known.to_string()), downloaded: None };
            (self.on_file)(&outcome);
            return Ok(outcome);
        }
        self.drop_manifest()?;
        let req = Download { path: &spec.path, dest: &dest, url: &spec.url, expected };
        let got = download::download(&self.client, &req).await.map_err(Error::Download)?;
        let outcome = FileOutcome { entry: entry(got.size, got.sha256), downloaded: Some(got.seconds) };
        (self.on_file)(&outcome);
        Ok(outcome)
    }

    /// The archive of `copy.image` in place: kept without a pull where an earlier finished
    /// run recorded it (same image, same source) and it still hashes to that sum.
    async fn archive(&mut self, copy: &images::Copy<'_>, version: &str) -> Result<FileOutcome, Error> {
        let path = copy.image.path();
        let source = copy.source();
        let entry = |size, sha256| FileEntry {
            path: path.clone(),
            what: "container image archive".into(),
            version: version.to_string(),
            source: source.clone(),
            sha256,
            size,
            image: Some(copy.image.original.clone()),
            package: None,
        };
        let known = self
            .previous
            .as_ref()
            .and_then(|m| m.file(&path))
            .filter(|e| e.image.as_deref() == Some(copy.image.original.as_str()) && e.source == source);
        if let Some(known) = known
            && let Ok(meta) = std::fs::metadata(copy.dest)
            && meta.is_file()
            && check::sha256_file(copy.dest, &path).is_ok_and(|sum| sum == known.sha256)
        {
            let outcome = FileOutcome { entry: entry(meta.len(), known.sha256.clone()), downloaded: None };
            (self.on_file)(&outcome);
            return Ok(outcome);
        }
        self.drop_manifest()?;
        let got = copy.run(&format!("copying {}", copy.image.original)).await.map_err(Error::Image)?;
        let outcome = FileOutcome { entry: entry(got.size, got.sha256), downloaded: Some(got.seconds) };
        (self.on_file)(&outcome);
        Ok(outcome)
    }
}

/// Make (or complete) the bundle of `req`; `on_file` hears of each file once it is in place.
pub async fn make(req: &Request, on_file: &mut dyn FnMut(&FileOutcome)) -> Result<Outcome, Error> {
    req.check().map_err(Error::Input)?;
    let started = Instant::now();
    let dir = req.out.as_path();
    let arch = req.arch;
    if req.debs.is_some() {
        // Before anything is downloaded: the packages are this machine's apt's.
        debs::check_machine(arch).map_err(Error::Input)?;
    }
    // The images are copied by skopeo: missing, it is said before any download.
    let skopeo = match (&req.k3s_version, &req.gitops) {
        (Some(_), Some(_)) => Some(images::find_skopeo().map_err(Error::Local)?),
        _ => None,
    };
    std::fs::create_dir_all(dir).map_err(|e| Error::Local(format!("cannot create {}: {e}", dir.display())))?;
    // An unreadable manifest vouches for nothing; the run replaces it.
    let previous = Manifest::read(dir).ok().flatten().filter(|m| m.arch == arch);
    let mut dropped = Vec::new();
    if let Some(p) = &previous {
        if p.k3s.is_some() && req.k3s_version.is_none() {
            dropped.push("its k3s files (give --k3s too to keep them)".to_string());
        }
        if p.debs.is_some() && req.debs.is_none() {
            dropped.push("its Debian packages (give --debs too to keep them)".to_string());
        }
    }
    let client = download::client().map_err(Error::Local)?;
    let mut run = Run { dir, client, previous, manifest_removed: false, on_file };

    let mut done = Vec::new();
    let mut gitops = None;
    let mut first: Vec<String> = Vec::new();
    if let Some(version) = &req.k3s_version {
        let sums_spec = req.k3s_spec(arch.sums_path(), &arch.sums(), "k3s sha256 list").map_err(Error::Input)?;
        let binary_spec =
            req.k3s_spec(arch.k3s_binary_path(), arch.k3s_binary(), "k3s binary").map_err(Error::Input)?;
        let images_spec =
            req.k3s_spec(arch.images_path(), &arch.images(), "k3s air-gap images").map_err(Error::Input)?;
        let gitops_spec = req.gitops_spec().map_err(Error::Input)?;
        for sub in ["k3s"].into_iter().chain(gitops_spec.as_ref().map(|_| "gitops")) {
            let d = dir.join(sub);
            std::fs::create_dir_all(&d).map_err(|e| Error::Local(format!("cannot create {}: {e}", d.display())))?;
        }

        // The sha256 list: kept only where a finished run of this same release recorded it (a
        // list left by another version's run would vouch for that version's binary).
        let known = run.vouched(&sums_spec);
        done.push(run.obtain(&sums_spec, known.as_deref(), None).await?);
        let sums_file = dir.join(&sums_spec.path);
        let sums = std::fs::read_to_string(&sums_file)
            .map_err(|e| e.to_string())
            .and_then(|t| manifest::parse_sums(&t))
            .map_err(|e| {
                let _ = std::fs::remove_file(&sums_file);
                Error::Local(format!("{}: {} is not a sha256 list: {e}", sums_spec.path, sums_spec.url))
            })?;
        for (spec, name) in [(&binary_spec, arch.k3s_binary().to_string()), (&images_spec, arch.images())] {
            let sum = sums.get(&name).ok_or_else(|| {
                Error::Local(format!(
                    "{}: {} lists no {name}; is {version} released for {arch}?",
                    spec.path, sums_spec.url
                ))
            })?;
            done.push(run.obtain(spec, Some(sum), Some((sum, &sums_spec.path))).await?);
        }

        if let (Some(spec), Some((engine, version))) = (&gitops_spec, &req.gitops) {
            let known = run.vouched(spec);
            done.push(run.obtain(spec, known.as_deref(), None).await?);
            let yaml = std::fs::read_to_string(dir.join(&spec.path))
                .map_err(|e| Error::Local(format!("cannot read {}: {e}", spec.path)))?;
            let names = manifest::images_in(&yaml);
            let refs = image_refs(&names, &spec.path)?;
            let images_dir = dir.join(images::DIR);
            std::fs::create_dir_all(&images_dir)
                .map_err(|e| Error::Local(format!("cannot create {}: {e}", images_dir.display())))?;
            let skopeo = skopeo.as_deref().expect("found above when there is a GitOps engine");
            for image in &refs {
                let dest = dir.join(image.path());
                let copy = images::Copy {
                    skopeo,
                    image,
                    dest: &dest,
                    arch,
                    mirror: req.registry_mirror.as_deref(),
                    insecure: req.insecure(),
                };
                done.push(run.archive(&copy, version).await?);
            }
            gitops = Some(GitOpsPart { engine: *engine, version: version.clone(), images: names });
        }
        first = vec![binary_spec.path, images_spec.path, sums_spec.path];
    }

    let mut debs_part: Option<DebsPart> = None;
    let mut debs_summary = None;
    if let Some(debs_req) = &req.debs {
        let d = debs::make(&mut run, arch, debs_req)?;
        done.extend(d.files);
        debs_part = Some(d.part);
        debs_summary = Some(d.summary);
    }
    if !dropped.is_empty() {
        // The manifest changes: it lists only what this run was asked for.
        run.drop_manifest()?;
    }

    // The manifest lists what a node needs first: binary, images, then the list, then GitOps,
    // then the packages.
    let mut files: Vec<FileEntry> = done.iter().map(|o| o.entry.clone()).collect();
    files.sort_by_key(|e| {
        let rank = first.iter().position(|p| *p == e.path).unwrap_or(first.len());
        (rank, e.path.starts_with("debs/"))
    });
    let notes = Vec::new();
    let m = Manifest {
        format: manifest::FORMAT,
        arch,
        k3s: req.k3s_version.clone().map(|version| K3sPart { version }),
        gitops,
        debs: debs_part,
        files,
        notes,
    };
    m.write(dir).map_err(|e| Error::Local(format!("cannot write {}: {e}", dir.join(manifest::MANIFEST).display())))?;
    Ok(Outcome { dir: dir.to_path_buf(), files: done, seconds: started.elapsed().as_secs_f64(), debs_summary, dropped })
}

/// The install manifest's images, parsed, each with a file name of its own.
fn image_refs(names: &[String], yaml_path: &str) -> Result<Vec<images::ImageRef>, Error> {
    let mut refs: Vec<images::ImageRef> = Vec::new();
    for name in names {
        let r = images::ImageRef::parse(name).map_err(|e| Error::Local(format!("{yaml_path}: {e}")))?;
        if let Some(other) = refs.iter().find(|o| o.file_name() == r.file_name()) {
            return Err(Error::Local(format!(
                "{yaml_path}: images {} and {name} would share the archive {}",
                other.original,
                r.path()
            )));
        }
        refs.push(r);
    }
    Ok(refs)
}
