//! `manifest.json`, the bundle's table of contents: what each file is, where it came from, its
//! size and sha256. `bundle` writes it last (atomically), `bundle --check`, `validate` and
//! `apply` read it. Also the two texts the bundle reads: the k3s release's sha256 list and the
//! `image:` lines of a GitOps install manifest.

use std::collections::BTreeMap;
use std::path::{Component, Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::Arch;
use crate::answers::model::GitOpsEngine;

/// The file name of the manifest in a bundle directory.
pub const MANIFEST: &str = "manifest.json";

/// The manifest format this groundwork writes and reads.
pub const FORMAT: u32 = 1;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    pub format: u32,
    pub arch: Arch,
    /// `null` when the bundle has no k3s files (a bundle of Debian packages only).
    #[serde(default)]
    pub k3s: Option<K3sPart>,
    /// `null` when the bundle has no GitOps engine.
    pub gitops: Option<GitOpsPart>,
    /// The Debian packages (`debs/`), when the bundle has them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub debs: Option<DebsPart>,
    /// Every file, paths relative to the bundle directory, in a stable order.
    pub files: Vec<FileEntry>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct K3sPart {
    pub version: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GitOpsPart {
    pub engine: GitOpsEngine,
    pub version: String,
    /// The container images the install manifest references, sorted, each once.
    pub images: Vec<String>,
}

/// The Debian packages of a bundle: a flat apt repository in `debs/` (the `.deb` files, and
/// the `Packages` and `Release` indexes groundwork wrote), for hosts of one release and
/// architecture.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DebsPart {
    /// The Debian release the packages are of (`bookworm`).
    pub release: String,
    /// The roles whose packages the bundle holds, and those packages (what the answer file
    /// asked for; the `.deb` files are these and their dependencies).
    pub roles: Vec<String>,
    pub packages: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FileEntry {
    pub path: String,
    pub what: String,
    /// The Debian package a `.deb` file holds (its `version` is the package's version).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub package: Option<String>,
    pub version: String,
    pub source: String,
    pub sha256: String,
    pub size: u64,
    /// An image archive: the image reference it holds (its name in the archive, as the
    /// install manifest writes it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
}

impl Manifest {
    /// The manifest of `dir`: `Ok(None)` when there is none, `Err` when it cannot be read or
    /// is not a manifest this groundwork reads.
    pub fn read(dir: &Path) -> Result<Option<Manifest>, String> {
        let path = dir.join(MANIFEST);
        let text = match std::fs::read(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(format!("cannot read {}: {e}", path.display())),
        };
        // The format first, so a newer bundle says so rather than failing on a missing field.
        let format = serde_json::from_slice::<serde_json::Value>(&text)
            .map_err(|e| format!("{} is not JSON: {e}", path.display()))?
            .get("format")
            .and_then(serde_json::Value::as_u64);
        if format != Some(u64::from(FORMAT)) {
            return Err(format!(
                "{} is not a bundle manifest of format {FORMAT} (its format: {}); remake the bundle with this groundwork",
                path.display(),
                format.map_or("none".into(), |f| f.to_string())
            ));
        }
        let m: Manifest =
            serde_json::from_slice(&text).map_err(|e| format!("{} cannot be read: {e}", path.display()))?;
        for f in &m.files {
            inside(dir, &f.path).map_err(|e| format!("{}: {e}", path.display()))?;
        }
        Ok(Some(m))
    }

    /// Written beside, then renamed over the old one: a reader sees the old or the new whole.
    pub fn write(&self, dir: &Path) -> std::io::Result<()> {
        let mut text = serde_json::to_string_pretty(self).expect("the manifest serializes");
        text.push('\n');
        crate::state::write_private(&dir.join(MANIFEST), text.as_bytes(), 0o644)
    }

    pub fn file(&self, path: &str) -> Option<&FileEntry> {
        self.files.iter().find(|f| f.path == path)
    }

    /// The k3s files a node needs that the manifest does not list (for its architecture);
    /// none for a bundle without k3s.
    pub fn missing_k3s_files(&self) -> Vec<String> {
        if self.k3s.is_none() {
            return Vec::new();
        }
        [self.arch.k3s_binary_path(), self.arch.images_path(), self.arch.sums_path()]
            .into_iter()
            .filter(|p| self.file(p).is_none())
            .collect()
    }

    /// The images of `gitops.images` that no archive of the manifest holds.
    pub fn images_without_archive(&self) -> Vec<String> {
        let Some(g) = &self.gitops else {
            return Vec::new();
        };
        g.images
            .iter()
            .filter(|i| !self.files.iter().any(|f| f.image.as_deref() == Some(i.as_str())))
            .cloned()
            .collect()
    }
}

impl Manifest {
    /// The indexes a bundle with packages must list (apt reads them first).
    pub fn missing_debs_files(&self) -> Vec<String> {
        if self.debs.is_none() {
            return Vec::new();
        }
        [super::debs::PACKAGES, super::debs::RELEASE_FILE]
            .into_iter()
            .map(|f| format!("{}/{f}", super::debs::DIR))
            .filter(|p| self.file(p).is_none())
            .collect()
    }

    /// The `.deb` files of the bundle (those with a package name).
    pub fn debs(&self) -> impl Iterator<Item = &FileEntry> {
        self.files.iter().filter(|f| f.package.is_some())
    }

    /// Of `wanted`, the packages no `.deb` of the bundle holds.
    pub fn packages_missing<'w>(&self, wanted: &'w [String]) -> Vec<&'w str> {
        let have: std::collections::HashSet<&str> = self.debs().filter_map(|f| f.package.as_deref()).collect();
        wanted.iter().map(String::as_str).filter(|p| !have.contains(p)).collect()
    }
}

/// `dir/rel` for a relative path that stays inside `dir` (a manifest names no other file).
pub fn inside(dir: &Path, rel: &str) -> Result<PathBuf, String> {
    let p = Path::new(rel);
    if rel.is_empty() || !p.components().all(|c| matches!(c, Component::Normal(_))) {
        return Err(format!("`{rel}` is not a path inside the bundle"));
    }
    Ok(dir.join(p))
}

/// The lines of a release's sha256 list (`<sha256>  <file>`, as `sha256sum` writes them; a
/// `*` before the name marks binary mode) by file name.
pub fn parse_sums(text: &str) -> Result<BTreeMap<String, String>, String> {
    let mut sums = BTreeMap::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        let mut parts = line.split_whitespace();
        let (Some(sum), Some(name), None) = (parts.next(), parts.next(), parts.next()) else {
            return Err(format!("line {} is not `<sha256>  <file>`", i + 1));
        };
        if sum.len() != 64 || !sum.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(format!("line {}: `{}` is not a sha256", i + 1, sum.chars().take(80).collect::<String>()));
        }
        let name = name.trim_start_matches('*');
        let name = name.rsplit('/').next().unwrap_or(name);
        sums.insert(name.to_string(), sum.to_ascii_lowercase());
    }
    if sums.is_empty() {
        return Err("it lists no file".into());
    }
    Ok(sums)
}

/// Every `image:` value of a Kubernetes manifest, each once, sorted. Read line by line (the
/// images of a workload are plain `image: ref` lines); a key `image:` with no value on its
/// line (a CRD's schema property) and values that cannot be image references are skipped.
pub fn images_in(yaml: &str) -> Vec<String> {
    let mut images: Vec<String> = yaml
        .lines()
        .filter_map(|line| {
            let line = line.trim_start();
            let line = line.strip_prefix("- ").unwrap_or(line).trim_start();
            let value = line.strip_prefix("image:")?;
            let value = value.split(" #").next().unwrap_or(value).trim();
            let value = value.trim_matches(|c| c == '"' || c == '\'');
            let is_reference = !value.is_empty()
                && value.chars().all(|c| c.is_ascii_alphanumeric() || "._-/:@".contains(c))
                && value.starts_with(|c: char| c.is_ascii_alphanumeric());
            is_reference.then(|| value.to_string())
        })
        .collect();
    images.sort();
    images.dedup();
    images
}

#[cfg(test)]
mod tests {
    use super::*;

    const SUM_A: &str = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";

    #[test]
    fn sha256_lists_read_as_sha256sum_writes_them() {
        let text = format!("{SUM_A}  k3s\n{}  *dist/k3s-airgap-images-amd64.tar.zst\n\n", SUM_A.to_uppercase());
        let sums = parse_sums(&text).unwrap();
        assert_eq!(sums["k3s"], SUM_A);
        assert_eq!(sums["k3s-airgap-images-amd64.tar.zst"], SUM_A, "lowercased, path and * dropped");
        assert!(parse_sums("<html>not found</html>\n").unwrap_err().contains("line 1"));
        assert!(parse_sums(&format!("{SUM_A}  k3s\nabc  k3s-arm64\n")).unwrap_err().contains("line 2"));
        assert!(parse_sums("\n").is_err());
    }

    #[test]
    fn images_are_every_image_value_once_and_sorted() {
        let yaml = r#"
spec:
  containers:
    - name: b
      image: ghcr.io/fluxcd/source-controller:v1.4.1
      imagePullPolicy: IfNotPresent
    - image: "ghcr.io/fluxcd/helm-controller:v1.1.0"   # quoted, with a comment
  initContainers:
  - image: ghcr.io/fluxcd/source-controller:v1.4.1
      image:
        description: a schema property, not an image
        type: object
"#;
        assert_eq!(
            images_in(yaml),
            vec!["ghcr.io/fluxcd/helm-controller:v1.1.0".to_string(), "ghcr.io/fluxcd/source-controller:v1.4.1".into()]
        );
    }

    #[test]
    fn manifest_paths_stay_inside_the_bundle() {
        let dir = Path::new("/b");
        assert_eq!(inside(dir, "k3s/k3s").unwrap(), Path::new("/b/k3s/k3s"));
        for bad in ["/etc/passwd", "../x", "k3s/../../x", "", "./k3s"] {
            assert!(inside(dir, bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_manifest_with_packages_reads_back_as_written_and_an_old_one_still_reads() {
        let dir = tempfile::tempdir().unwrap();
        let deb = |package: &str, path: &str| FileEntry {
            path: path.into(),
            what: "Debian package".into(),
            package: Some(package.into()),
            image: None,
            version: "1:9.18.47-1~deb12u1".into(),
            source: "http://deb.debian.org/debian/pool/main/b/bind9/x.deb".into(),
            sha256: SUM_A.into(),
            size: 250424,
        };
        let index = FileEntry {
            path: "debs/Packages".into(),
            what: "apt repository index".into(),
            package: None,
            image: None,
            version: "bookworm".into(),
            source: "groundwork".into(),
            sha256: SUM_A.into(),
            size: 10,
        };
        let m = Manifest {
            format: FORMAT,
            arch: Arch::Amd64,
            k3s: None,
            gitops: None,
            debs: Some(DebsPart {
                release: "bookworm".into(),
                roles: vec!["dns".into()],
                packages: vec!["bind9".into(), "bind9-utils".into()],
            }),
            files: vec![deb("bind9", "debs/bind9_9.18.47-1~deb12u1_amd64.deb"), index],
            notes: Vec::new(),
        };
        m.write(dir.path()).unwrap();
        let text = std::fs::read_to_string(dir.path().join(MANIFEST)).unwrap();
        assert!(text.contains("\"package\": \"bind9\"") && !text.contains("\"package\": null"), "{text}");
        let back = Manifest::read(dir.path()).unwrap().unwrap();
        assert_eq!(back, m);
        assert_eq!(back.debs().count(), 1);
        assert_eq!(back.packages_missing(&["bind9".into(), "bind9-utils".into()]), ["bind9-utils"]);
        assert_eq!(back.missing_debs_files(), ["debs/Release"]);
        assert!(back.missing_k3s_files().is_empty(), "no k3s part: no k3s file is missing");

        // A manifest of a k3s bundle as earlier groundwork wrote it (no debs, no package).
        let old = format!(
            r#"{{"format": 1, "arch": "amd64", "k3s": {{"version": "v1.35.6+k3s1"}}, "gitops": null,
               "files": [{{"path": "k3s/k3s", "what": "k3s binary", "version": "v1.35.6+k3s1",
                           "source": "https://x/k3s", "sha256": "{SUM_A}", "size": 3}}]}}"#
        );
        std::fs::write(dir.path().join(MANIFEST), old).unwrap();
        let m = Manifest::read(dir.path()).unwrap().unwrap();
        assert_eq!(m.k3s.unwrap().version, "v1.35.6+k3s1");
        assert!(m.debs.is_none() && m.files[0].package.is_none());
    }
}
