//! The state directory of a site: `$XDG_STATE_HOME/groundwork/<site>/` (or `--state DIR`).
//! It holds the generated secrets (0600), the known_hosts file, the run journal and the logs.
//!
//! groundwork creates the directory (0700) when it is missing and never changes the mode of one
//! that exists: an existing directory must already be private to the current user, or it is
//! refused (`--state /tmp` must not lose its sticky bit, nor hold secrets). A run locks the
//! directory ([`StateDir::lock`]) so two runs cannot generate or push different secrets.

pub mod secrets;

use std::fs;
use std::io;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

pub use secrets::Secrets;

/// Run logs kept in `logs/` (the newest, by run id); older ones are removed when a run starts.
pub const KEEP_LOGS: usize = 20;

#[derive(Debug, Clone)]
pub struct StateDir {
    pub root: PathBuf,
}

/// Why the state directory cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("state directory {}: {source}", path.display())]
    Io { path: PathBuf, source: io::Error },
    #[error("state directory {} is not a directory", path.display())]
    NotADirectory { path: PathBuf },
    #[error(
        "state directory {} is open to other users (mode {mode:04o}: {what}); it holds secrets, and groundwork does not change a directory it did not create: name a new directory with --state (it is created with mode 0700), or, if this one is yours alone, run `chmod 700 {}`",
        path.display(),
        path.display()
    )]
    Exposed { path: PathBuf, mode: u32, what: String },
    #[error(
        "state directory {} belongs to uid {owner}, not to the user running groundwork (uid {me}); use a directory of your own with --state",
        path.display()
    )]
    NotOwned { path: PathBuf, owner: u32, me: u32 },
    #[error(
        "state directory {} is in use by another groundwork run ({holder}); wait for it to finish, then run again (lock: {})",
        path.display(),
        lock.display()
    )]
    Busy { path: PathBuf, lock: PathBuf, holder: String },
}

/// How a command uses the state directory while it runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Reads secrets and known_hosts (and may record a first host key): `plan --live`, `verify`.
    /// Several readers may run at once, never beside a writer.
    Shared,
    /// Writes secrets, the journal or known_hosts: `apply`, `wizard`, `forget-host`.
    Exclusive,
}

/// A held lock on the state directory; released when dropped (or when the process ends).
#[derive(Debug)]
pub struct StateLock {
    _file: fs::File,
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
        StateDir { root: base.join("groundwork").join(site) }
    }

    /// Creates the directory (and missing parents) with mode 0700 when it does not exist;
    /// checks an existing one is a directory of the current user that others cannot read or
    /// write. Never changes an existing directory.
    pub fn ensure(&self) -> Result<(), StateError> {
        let path = &self.root;
        let io_err = |source| StateError::Io { path: path.clone(), source };
        match fs::metadata(path) {
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                // The mode is given at mkdir (no chmod after): only directories made here get it.
                fs::DirBuilder::new().recursive(true).mode(0o700).create(path).map_err(io_err)?;
            }
            Err(e) => return Err(io_err(e)),
        }
        // Checked after creating too: someone else may have made it first.
        check_private(path, &fs::metadata(path).map_err(io_err)?)
    }

    /// [`ensure`](Self::ensure), then lock the directory for the rest of the run (`flock` on
    /// `<state>/lock`, never waiting): a second run is refused with [`StateError::Busy`].
    pub fn lock(&self, access: Access) -> Result<StateLock, StateError> {
        self.ensure()?;
        let lock = self.root.join("lock");
        let io_err = |source| StateError::Io { path: lock.clone(), source };
        let file = fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&lock)
            .map_err(io_err)?;
        let op = match access {
            Access::Shared => libc::LOCK_SH,
            Access::Exclusive => libc::LOCK_EX,
        };
        use std::os::fd::AsRawFd as _;
        // SAFETY: flock on a file descriptor this function owns; no memory is passed.
        if unsafe { libc::flock(file.as_raw_fd(), op | libc::LOCK_NB) } != 0 {
            let e = io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::EWOULDBLOCK) {
                let holder = file.metadata().map(|m| holders(m.ino())).unwrap_or_default();
                return Err(StateError::Busy {
                    path: self.root.clone(),
                    lock,
                    holder: if holder.is_empty() { "another process".into() } else { holder.join("; ") },
                });
            }
            return Err(io_err(e));
        }
        Ok(StateLock { _file: file })
    }

    pub fn secrets_path(&self) -> PathBuf {
        self.root.join("secrets.toml")
    }

    pub fn known_hosts_path(&self) -> PathBuf {
        self.root.join("known_hosts")
    }

    /// The log file of run `run`: `logs/<run>.log`. Creates `logs/` (0700) when missing and
    /// removes the oldest logs so that, with this one, at most [`KEEP_LOGS`] remain.
    pub fn new_log(&self, run: &str) -> io::Result<PathBuf> {
        let dir = self.root.join("logs");
        fs::DirBuilder::new().recursive(true).mode(0o700).create(&dir)?;
        prune_logs(&dir, KEEP_LOGS.saturating_sub(1));
        Ok(dir.join(format!("{run}.log")))
    }
}

/// Refuses a directory that is not ours, or that group or others can read or write.
fn check_private(path: &Path, meta: &fs::Metadata) -> Result<(), StateError> {
    if !meta.is_dir() {
        return Err(StateError::NotADirectory { path: path.to_path_buf() });
    }
    // SAFETY: geteuid has no preconditions and cannot fail.
    let me = unsafe { libc::geteuid() };
    if meta.uid() != me {
        return Err(StateError::NotOwned { path: path.to_path_buf(), owner: meta.uid(), me });
    }
    let mode = meta.mode() & 0o7777;
    if mode & 0o066 != 0 {
        let mut what = Vec::new();
        if mode & 0o044 != 0 {
            what.push("other users can list it");
        }
        if mode & 0o022 != 0 {
            what.push("other users can create, rename or delete files in it");
        }
        return Err(StateError::Exposed { path: path.to_path_buf(), mode, what: what.join(", ") });
    }
    Ok(())
}

/// Who holds a `flock` on inode `ino`: "pid N (command line)" for each other process, from
/// /proc/locks. Empty when /proc does not tell.
fn holders(ino: u64) -> Vec<String> {
    let Ok(locks) = fs::read_to_string("/proc/locks") else {
        return Vec::new();
    };
    let me = std::process::id();
    let mut pids: Vec<u32> = locks
        .lines()
        .filter_map(|l| {
            // "1: FLOCK  ADVISORY  WRITE 1234 08:01:5678 0 EOF"
            let f: Vec<&str> = l.split_whitespace().collect();
            if f.get(1) != Some(&"FLOCK") {
                return None;
            }
            let pid: u32 = f.get(4)?.parse().ok()?;
            let inode: u64 = f.get(5)?.rsplit(':').next()?.parse().ok()?;
            (inode == ino && pid != me && pid != 0).then_some(pid)
        })
        .collect();
    pids.sort_unstable();
    pids.dedup();
    pids.into_iter()
        .map(|pid| {
            let cmd = fs::read(format!("/proc/{pid}/cmdline"))
                .map(|b| {
                    let s: Vec<String> = b
                        .split(|c| *c == 0)
                        .filter(|a| !a.is_empty())
                        .map(|a| String::from_utf8_lossy(a).into_owned())
                        .collect();
                    s.join(" ")
                })
                .unwrap_or_default();
            if cmd.is_empty() {
                format!("pid {pid}")
            } else {
                let cmd: String = cmd.chars().take(120).collect();
                format!("pid {pid}: {cmd}")
            }
        })
        .collect()
}

/// Keeps the `keep` newest `*.log` files of `dir` (run ids sort by time) and removes the
/// rest. Best effort: a log that cannot be removed stays, and the run goes on.
fn prune_logs(dir: &Path, keep: usize) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    let mut logs: Vec<(std::ffi::OsString, PathBuf)> = entries
        .filter_map(Result::ok)
        .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
        .filter(|e| e.path().extension().is_some_and(|x| x == "log"))
        .map(|e| (e.file_name(), e.path()))
        .collect();
    if logs.len() <= keep {
        return;
    }
    logs.sort();
    let excess = logs.len() - keep;
    for (_, path) in logs.into_iter().take(excess) {
        let _ = fs::remove_file(path);
    }
}

/// Write `contents` to `path` with `mode`, atomically: a temporary file beside it, then rename.
pub fn write_private(path: &Path, contents: &[u8], mode: u32) -> io::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::PermissionsExt;
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let name = path.file_name().map(|n| n.to_string_lossy().to_string()).unwrap_or_default();
    let tmp = dir.join(format!(".{name}.tmp-{}", std::process::id()));
    let mut f = fs::OpenOptions::new().write(true).create(true).truncate(true).mode(mode).open(&tmp)?;
    f.write_all(contents)?;
    f.sync_all()?;
    drop(f);
    fs::set_permissions(&tmp, fs::Permissions::from_mode(mode))?;
    fs::rename(&tmp, path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn mode(p: &Path) -> u32 {
        fs::metadata(p).unwrap().permissions().mode() & 0o7777
    }

    #[test]
    fn a_missing_directory_is_created_0700_with_its_parents() {
        let t = tempfile::tempdir().unwrap();
        let root = t.path().join("a/b/site");
        let dir = StateDir { root: root.clone() };
        dir.ensure().unwrap();
        assert_eq!(mode(&root), 0o700);
        assert_eq!(mode(&t.path().join("a")), 0o700);
        // a second time it exists and is private: accepted as is
        dir.ensure().unwrap();
    }

    #[test]
    fn an_existing_shared_directory_is_refused_and_left_alone() {
        let t = tempfile::tempdir().unwrap();
        let root = t.path().join("shared");
        fs::create_dir(&root).unwrap();
        // like /tmp: sticky and world-writable
        fs::set_permissions(&root, fs::Permissions::from_mode(0o1777)).unwrap();
        let dir = StateDir { root: root.clone() };
        let err = dir.ensure().unwrap_err().to_string();
        assert!(err.contains(&root.display().to_string()), "{err}");
        assert!(err.contains("mode 1777"), "{err}");
        assert!(err.contains("chmod 700"), "{err}");
        assert_eq!(mode(&root), 0o1777, "the sticky bit and mode are kept");
        assert!(dir.lock(Access::Shared).is_err());
        assert!(!root.join("lock").exists(), "nothing is written into it");

        fs::set_permissions(&root, fs::Permissions::from_mode(0o750)).unwrap();
        let err = dir.ensure().unwrap_err().to_string();
        assert!(err.contains("other users can list it"), "{err}");
        assert_eq!(mode(&root), 0o750);
        // execute-only for others lists nothing: accepted, unchanged
        fs::set_permissions(&root, fs::Permissions::from_mode(0o711)).unwrap();
        dir.ensure().unwrap();
        assert_eq!(mode(&root), 0o711);
    }

    #[test]
    fn a_file_or_a_directory_of_another_user_is_refused() {
        let t = tempfile::tempdir().unwrap();
        let file = t.path().join("file");
        fs::write(&file, "x").unwrap();
        let err = StateDir { root: file }.ensure().unwrap_err().to_string();
        assert!(err.contains("is not a directory"), "{err}");
        // SAFETY: geteuid cannot fail.
        if unsafe { libc::geteuid() } == 0 {
            let other = t.path().join("other");
            fs::DirBuilder::new().mode(0o700).create(&other).unwrap();
            std::os::unix::fs::chown(&other, Some(65534), None).unwrap();
            let err = StateDir { root: other }.ensure().unwrap_err().to_string();
            assert!(err.contains("belongs to uid 65534"), "{err}");
        }
    }

    #[test]
    fn the_lock_refuses_a_second_writer_and_names_the_holder() {
        let t = tempfile::tempdir().unwrap();
        let dir = StateDir { root: t.path().join("s") };
        let held = dir.lock(Access::Exclusive).unwrap();
        assert_eq!(mode(&dir.root.join("lock")), 0o600);
        // A second open file description conflicts like another process would; the holder is
        // this process, which /proc/locks names only for others.
        let err = dir.lock(Access::Exclusive).unwrap_err();
        assert!(matches!(err, StateError::Busy { .. }), "{err}");
        assert!(err.to_string().contains("in use by another groundwork run"), "{err}");
        assert!(dir.lock(Access::Shared).is_err());
        drop(held);
        let r1 = dir.lock(Access::Shared).unwrap();
        let _r2 = dir.lock(Access::Shared).unwrap();
        assert!(dir.lock(Access::Exclusive).is_err());
        drop(r1);
    }

    #[test]
    fn holders_come_from_proc_locks() {
        let t = tempfile::tempdir().unwrap();
        let dir = StateDir { root: t.path().join("s") };
        dir.ensure().unwrap();
        // a child process holds the lock: flock(1) keeps it while `sleep` runs
        let lock = dir.root.join("lock");
        let mut child = match std::process::Command::new("flock").arg(&lock).args(["sleep", "30"]).spawn() {
            Ok(c) => c,
            Err(e) => {
                eprintln!("SKIPPED: no flock(1) here: {e}");
                return;
            }
        };
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        let err = loop {
            match dir.lock(Access::Shared) {
                Err(e) => break e.to_string(),
                Ok(l) => {
                    drop(l);
                    assert!(std::time::Instant::now() < deadline, "flock never took the lock");
                    std::thread::sleep(std::time::Duration::from_millis(20));
                }
            }
        };
        let _ = child.kill();
        let _ = child.wait();
        assert!(err.contains(&format!("pid {}", child.id())), "{err}");
        assert!(err.contains("sleep 30"), "{err}");
    }

    #[test]
    fn logs_keep_the_newest_runs() {
        let t = tempfile::tempdir().unwrap();
        let dir = StateDir { root: t.path().join("s") };
        dir.ensure().unwrap();
        for i in 0..KEEP_LOGS + 5 {
            let p = dir.new_log(&format!("20250101T0000{i:02}Z-0000")).unwrap();
            fs::write(p, "x").unwrap();
        }
        assert_eq!(mode(&dir.root.join("logs")), 0o700);
        let mut names: Vec<String> = fs::read_dir(dir.root.join("logs"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(names.len(), KEEP_LOGS);
        assert_eq!(names[0], "20250101T000005Z-0000.log");
        assert_eq!(names.last().unwrap(), &format!("20250101T0000{:02}Z-0000.log", KEEP_LOGS + 4));
    }
}
