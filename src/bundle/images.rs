//! The GitOps engine's container images as docker-archives that k3s imports from
//! `/var/lib/rancher/k3s/agent/images/`: one `skopeo copy` per image (Debian 12's skopeo 1.9.3;
//! groundwork speaks no registry protocol itself), pulled for the nodes' architecture, from
//! the image's own registry or from `--registry-mirror`, and always named in the archive by
//! the reference the install manifest uses (so k3s finds it under that name). Each archive is
//! written to `<file>.part` in the same directory, hashed, then renamed: a failure leaves
//! nothing half-written.

use std::path::{Path, PathBuf};
use std::time::Instant;

use super::Arch;

/// Where the archives go, inside the bundle.
pub const DIR: &str = "gitops/images";

/// What people are told when skopeo is missing.
pub const INSTALL_SKOPEO: &str = "apt-get install skopeo";

/// An image reference of an install manifest, split into its parts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageRef {
    /// As the manifest writes it.
    pub original: String,
    /// The registry host (`docker.io` for a name without one).
    pub registry: String,
    /// The repository path on the registry (`library/redis` for `redis`).
    pub repository: String,
    pub tag: String,
}

impl ImageRef {
    /// `ghcr.io/fluxcd/source-controller:v1.5.0`, `redis:7.0.15-alpine`, `quay.io/x/y` (tag
    /// `latest`). A digest (`@sha256:...`) is refused: a docker-archive names its image by a
    /// tag, and the archive's manifest is not the registry's, so a digest would never match.
    pub fn parse(s: &str) -> Result<ImageRef, String> {
        if s.contains('@') {
            return Err(format!(
                "image `{s}` is pinned by digest; a docker-archive can only name it by tag (not supported yet)"
            ));
        }
        let ok = !s.is_empty()
            && s.len() <= 255
            && s.chars().all(|c| c.is_ascii_alphanumeric() || "._-/:".contains(c))
            && s.starts_with(|c: char| c.is_ascii_alphanumeric());
        if !ok {
            return Err(format!("`{s}` is not an image reference"));
        }
        let (first, rest) = match s.split_once('/') {
            Some((first, rest)) if first.contains('.') || first.contains(':') || first == "localhost" => {
                (first.to_string(), rest.to_string())
            }
            _ => ("docker.io".to_string(), s.to_string()),
        };
        // The tag is after the last `:` of the last path element (a `:` before is a port).
        let last = rest.rsplit('/').next().unwrap_or(&rest);
        let (repository, tag) = match last.rsplit_once(':') {
            Some((_, tag)) => (rest[..rest.len() - tag.len() - 1].to_string(), tag.to_string()),
            None => (rest.clone(), "latest".to_string()),
        };
        if repository.is_empty() || tag.is_empty() || repository.split('/').any(str::is_empty) {
            return Err(format!("`{s}` is not an image reference"));
        }
        let repository = if first == "docker.io" && !repository.contains('/') {
            format!("library/{repository}")
        } else {
            repository
        };
        Ok(ImageRef { original: s.to_string(), registry: first, repository, tag })
    }

    /// The reference to pull: through `mirror` (`HOST[:PORT]`) in place of the registry.
    pub fn pull(&self, mirror: Option<&str>) -> String {
        format!("{}/{}:{}", mirror.unwrap_or(&self.registry), self.repository, self.tag)
    }

    /// The name the archive gives the image: the manifest's own reference (with `:latest`
    /// where it has no tag, as the container runtime reads it).
    pub fn archive_name(&self) -> String {
        let last = self.original.rsplit('/').next().unwrap_or(&self.original);
        if last.contains(':') { self.original.clone() } else { format!("{}:latest", self.original) }
    }

    /// The archive's file name: the reference with every `/` and `:` as `_`
    /// (`ghcr.io_fluxcd_source-controller_v1.5.0.tar`).
    pub fn file_name(&self) -> String {
        let safe: String = self
            .archive_name()
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() || c == '.' || c == '-' || c == '_' { c } else { '_' })
            .collect();
        format!("{safe}.tar")
    }

    /// The archive's path in the bundle.
    pub fn path(&self) -> String {
        format!("{DIR}/{}", self.file_name())
    }
}

/// `--registry-mirror HOST[:PORT]`: a host name or IPv4 address, or `[IPv6]`, and a port.
pub fn check_mirror(m: &str) -> Result<(), String> {
    let bad = || format!("--registry-mirror `{m}` is not HOST[:PORT] (e.g. registry.example.org:5000)");
    let (host, port) = if let Some(rest) = m.strip_prefix('[') {
        let (h, after) = rest.split_once(']').ok_or_else(bad)?;
        if h.parse::<std::net::Ipv6Addr>().is_err() {
            return Err(bad());
        }
        match after {
            "" => (h, None),
            _ => (h, Some(after.strip_prefix(':').ok_or_else(bad)?)),
        }
    } else {
        match m.split_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (m, None),
        }
    };
    let host_ok = !host.is_empty()
        && host.len() <= 253
        && (host.parse::<std::net::Ipv6Addr>().is_ok()
            || host.chars().all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-'));
    let port_ok = port.is_none_or(|p| p.parse::<u16>().is_ok_and(|p| p > 0));
    if host_ok && port_ok { Ok(()) } else { Err(bad()) }
}

/// Whether the mirror is on this machine (127.0.0.0/8, `localhost`, `[::1]`): the one kind
/// pulled from without TLS verification unless `--registry-insecure` says so.
pub fn is_loopback(mirror: &str) -> bool {
    let host = match mirror.strip_prefix('[') {
        Some(rest) => rest.split(']').next().unwrap_or(""),
        None => mirror.split(':').next().unwrap_or(""),
    };
    host == "localhost"
        || host.parse::<std::net::Ipv4Addr>().is_ok_and(|a| a.is_loopback())
        || host.parse::<std::net::Ipv6Addr>().is_ok_and(|a| a.is_loopback())
}

/// `skopeo` on PATH, or what to do about it.
pub fn find_skopeo() -> Result<PathBuf, String> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    for dir in std::env::split_paths(&path) {
        let candidate = dir.join("skopeo");
        if let Ok(meta) = std::fs::metadata(&candidate)
            && meta.is_file()
            && std::os::unix::fs::PermissionsExt::mode(&meta.permissions()) & 0o111 != 0
        {
            return Ok(candidate);
        }
    }
    Err(format!(
        "skopeo is not installed on this machine (it copies the GitOps images into archives): {INSTALL_SKOPEO}"
    ))
}

/// One image to copy.
pub struct Copy<'a> {
    pub skopeo: &'a Path,
    pub image: &'a ImageRef,
    /// The archive's final path.
    pub dest: &'a Path,
    pub arch: Arch,
    pub mirror: Option<&'a str>,
    /// Pull without TLS verification (a loopback mirror, or `--registry-insecure`).
    pub insecure: bool,
}

/// A copy that failed: the image, where it was pulled from and why.
#[derive(Debug, Clone, PartialEq)]
pub struct Failure {
    pub image: String,
    pub pull: String,
    pub cause: String,
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.pull == format!("docker://{}", self.image) {
            write!(f, "image {}: {}", self.image, self.cause)
        } else {
            write!(f, "image {} (pulled as {}): {}", self.image, self.pull, self.cause)
        }
    }
}

/// An archive now in place.
#[derive(Debug, Clone)]
pub struct Copied {
    pub size: u64,
    pub sha256: String,
    pub seconds: f64,
}

impl Copy<'_> {
    /// `docker://<pull ref>`, as the manifest records the archive's source.
    pub fn source(&self) -> String {
        format!("docker://{}", self.image.pull(self.mirror))
    }

    /// skopeo's arguments (run without a shell), with the archive written to `part`, a
    /// file name relative to the archive's directory (docker-archive's path ends at the
    /// first `:`, so the directory's own path is never put there).
    pub fn args(&self, part: &str) -> Vec<String> {
        let mut args = vec!["copy".to_string()];
        if self.insecure {
            args.push("--src-tls-verify=false".into());
        }
        args.extend([
            "--override-arch".to_string(),
            self.arch.as_str().to_string(),
            "--override-os".to_string(),
            "linux".to_string(),
            self.source(),
            format!("docker-archive:{part}:{}", self.image.archive_name()),
        ]);
        args
    }

    /// Copy the image into `dest` through `dest.part`; on failure nothing is left.
    pub async fn run(&self, label: &str) -> Result<Copied, Failure> {
        let part = super::download::part_path(self.dest);
        let result = self.copy_to(&part, label).await;
        if result.is_err() {
            let _ = std::fs::remove_file(&part);
        }
        result
    }

    async fn copy_to(&self, part: &Path, label: &str) -> Result<Copied, Failure> {
        let fail = |cause: String| Failure { image: self.image.original.clone(), pull: self.source(), cause };
        let started = Instant::now();
        let dir = part.parent().unwrap_or(Path::new("."));
        let part_name = part.file_name().unwrap_or_default().to_string_lossy().into_owned();
        // skopeo refuses to write into an existing docker-archive: a leftover goes first.
        match std::fs::remove_file(part) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(fail(format!("cannot remove {}: {e}", part.display()))),
        }
        let bar = super::download::progress_bar(label, None);
        bar.enable_steady_tick(std::time::Duration::from_millis(200));
        let out = tokio::process::Command::new(self.skopeo)
            .args(self.args(&part_name))
            .current_dir(dir)
            .stdin(std::process::Stdio::null())
            .kill_on_drop(true)
            .output()
            .await;
        bar.finish_and_clear();
        let out = out.map_err(|e| fail(format!("cannot run {}: {e}", self.skopeo.display())))?;
        if !out.status.success() {
            let stderr = String::from_utf8_lossy(&out.stderr);
            let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
            let tail = lines[lines.len().saturating_sub(5)..].join("\n  ");
            let status = out.status.code().map_or("a signal".to_string(), |c| format!("exit {c}"));
            return Err(fail(format!("skopeo copy failed ({status}):\n  {tail}")));
        }
        let meta = std::fs::metadata(part)
            .map_err(|e| fail(format!("skopeo succeeded but left no {}: {e}", part.display())))?;
        let sha256 =
            super::check::sha256_file(part, label).map_err(|e| fail(format!("cannot read {}: {e}", part.display())))?;
        std::fs::rename(part, self.dest)
            .map_err(|e| fail(format!("cannot rename {} to {}: {e}", part.display(), self.dest.display())))?;
        Ok(Copied { size: meta.len(), sha256, seconds: started.elapsed().as_secs_f64() })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_split_into_registry_repository_and_tag() {
        let r = ImageRef::parse("ghcr.io/fluxcd/source-controller:v1.5.0").unwrap();
        assert_eq!(
            (r.registry.as_str(), r.repository.as_str(), r.tag.as_str()),
            ("ghcr.io", "fluxcd/source-controller", "v1.5.0")
        );
        assert_eq!(r.pull(None), "ghcr.io/fluxcd/source-controller:v1.5.0");
        assert_eq!(r.pull(Some("127.0.0.1:5000")), "127.0.0.1:5000/fluxcd/source-controller:v1.5.0");
        assert_eq!(r.archive_name(), "ghcr.io/fluxcd/source-controller:v1.5.0");
        assert_eq!(r.path(), "gitops/images/ghcr.io_fluxcd_source-controller_v1.5.0.tar");

        let r = ImageRef::parse("redis:7.0.15-alpine").unwrap();
        assert_eq!(r.pull(None), "docker.io/library/redis:7.0.15-alpine");
        assert_eq!(r.pull(Some("m:5000")), "m:5000/library/redis:7.0.15-alpine");
        assert_eq!(r.archive_name(), "redis:7.0.15-alpine", "named as the manifest writes it");

        let r = ImageRef::parse("registry.local:5000/team/app").unwrap();
        assert_eq!(
            (r.registry.as_str(), r.repository.as_str(), r.tag.as_str()),
            ("registry.local:5000", "team/app", "latest")
        );
        assert_eq!(r.archive_name(), "registry.local:5000/team/app:latest");
        assert_eq!(r.file_name(), "registry.local_5000_team_app_latest.tar");

        assert!(ImageRef::parse("ghcr.io/x/y@sha256:abc").unwrap_err().contains("digest"));
        for bad in ["", "/x", "ghcr.io/", "a b", "ghcr.io//x:1", "x:"] {
            assert!(ImageRef::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn mirrors_are_host_and_port_and_only_loopback_is_trusted_without_tls() {
        for good in ["127.0.0.1:5000", "registry.example.org", "registry.example.org:443", "[::1]:5000", "localhost"] {
            assert!(check_mirror(good).is_ok(), "{good}");
        }
        for bad in ["[::1]x", "http://127.0.0.1:5000", "127.0.0.1:5000/path", "h:0", "h:99999", "", "a b", "::1:5000"] {
            assert!(check_mirror(bad).is_err(), "{bad}");
        }
        assert!(is_loopback("127.0.0.1:5000") && is_loopback("127.1.2.3") && is_loopback("localhost:5000"));
        assert!(is_loopback("[::1]:5000"));
        assert!(
            !is_loopback("10.77.0.1:5000") && !is_loopback("registry.example.org") && !is_loopback("127.example.org")
        );
    }

    #[test]
    fn skopeo_is_given_arguments_never_a_shell_line() {
        let image = ImageRef::parse("ghcr.io/fluxcd/source-controller:v1.5.0").unwrap();
        let c = Copy {
            skopeo: Path::new("/usr/bin/skopeo"),
            image: &image,
            dest: Path::new("/b/gitops/images/x.tar"),
            arch: Arch::Arm64,
            mirror: Some("127.0.0.1:5000"),
            insecure: true,
        };
        assert_eq!(
            c.args("x.tar.part"),
            [
                "copy",
                "--src-tls-verify=false",
                "--override-arch",
                "arm64",
                "--override-os",
                "linux",
                "docker://127.0.0.1:5000/fluxcd/source-controller:v1.5.0",
                "docker-archive:x.tar.part:ghcr.io/fluxcd/source-controller:v1.5.0",
            ]
        );
        let c = Copy { mirror: None, insecure: false, ..c };
        assert_eq!(c.args("p")[1], "--override-arch");
        assert_eq!(c.source(), "docker://ghcr.io/fluxcd/source-controller:v1.5.0");
    }
}
