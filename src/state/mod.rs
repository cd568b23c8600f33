//! The state directory of a site: `$XDG_STATE_HOME/groundwork/<site>/` (or `--state DIR`).
//! It holds the generated secrets (0600), and later the known_hosts file, the run journal and
//! the logs. The directory itself is 0700.

pub mod secrets;

use std::fs;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

pub use secrets::Secrets;

#[derive(Debug, Clone)]
pub struct StateDir {
    pub root: PathBuf,
}

impl StateDir {
    /// `explicit` wins; otherwise `$XDG_STATE_HOME/groundwork/<site>`, falling back to
    /// `~/.local/state/groundwork/<site>`.
    pub fn for_site(explicit: Option<&Path>, site: &str) -> StateDir {
        if let Some(p) = explicit {
            return StateDir { root: p.to_path_buf() };
        }
        let base = std::env::var_os("XDG_STATE_HOME")
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/state")))
            .unwrap_or_else(|| PathBuf::from("/var/lib"));
        StateDir {
            root: base.join("groundwork").join(site),
        }
    }

    /// Create the directory (0700) if needed.
    pub fn ensure(&self) -> io::Result<()> {
        fs::create_dir_all(&self.root)?;
        fs::set_permissions(&self.root, fs::Permissions::from_mode(0o700))
    }

    pub fn secrets_path(&self) -> PathBuf {
        self.root.join("secrets.toml")
    }
}

/// Write `contents` to `path` with `mode`, atomically: a temporary file beside it, then rename.
pub fn write_private(path: &Path, contents: &[u8], mode: u32) -> io::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt;
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let name = path.file_name().map(|n| n.to_string_lossy().to_string()).unwrap_or_default();
    let tmp = dir.join(format!(".{name}.tmp-{}", std::process::id()));
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(&tmp)?;
    f.write_all(contents)?;
    f.sync_all()?;
    drop(f);
    fs::set_permissions(&tmp, fs::Permissions::from_mode(mode))?;
    fs::rename(&tmp, path)
}
