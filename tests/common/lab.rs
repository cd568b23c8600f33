//! The lab of real Debian hosts (`tests/lab/lab`, see tests/lab/README.md) for integration tests.
//!
//! Typical use, one guard per test:
//!
//! ```ignore
//! let Some(_lab) = common::lab::exclusive(&[("ssh1", "10.77.0.31")]) else { return };
//! ```
//!
//! [`exclusive`] serialises the tests of one test binary (a static mutex) and, with an exclusive
//! `flock` on [`LOCK_FILE`], all test processes using the lab. It boots the hosts (a no-op when
//! they run) and, when no other test of the binary is waiting for the lab, stops them again on
//! drop. When the lab cannot run here it prints `SKIPPED: ...` and returns `None`; under CI
//! (`CI=true`) that is a failure instead.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard, OnceLock};

/// Lock file shared by every test process that uses the lab.
pub const LOCK_FILE: &str = "/run/groundwork-lab.lock";

/// The lab script.
pub fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/lab/lab")
}

/// `CI=true` (or `1`): the lab must work, unavailability fails the test.
pub fn in_ci() -> bool {
    matches!(std::env::var("CI").as_deref(), Ok("true") | Ok("1"))
}

/// Prints `SKIPPED: <reason>` to stderr. Written to the stream itself, not through `eprintln!`,
/// so the test harness does not capture it: a skipped test says so even when it shows "ok".
pub fn skip(reason: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "SKIPPED: {reason}");
}

/// Can the lab run here: root, the script present, `lab deps` succeeds. Checked once per process.
pub fn lab_available() -> Result<(), String> {
    static CHECK: OnceLock<Result<(), String>> = OnceLock::new();
    CHECK
        .get_or_init(|| {
            // SAFETY: geteuid has no preconditions and cannot fail.
            if unsafe { libc::geteuid() } != 0 {
                return Err("the lab needs root".into());
            }
            let script = script();
            if !script.is_file() {
                return Err(format!("{} is missing", script.display()));
            }
            let out = Command::new(&script)
                .arg("deps")
                .output()
                .map_err(|e| format!("cannot run {} deps: {e}", script.display()))?;
            if !out.status.success() {
                return Err(format!(
                    "{} deps failed: {}",
                    script.display(),
                    String::from_utf8_lossy(&out.stderr).trim()
                ));
            }
            Ok(())
        })
        .clone()
}

/// `true` when the lab is available. Otherwise prints SKIPPED and returns `false`, or panics
/// under CI.
pub fn require() -> bool {
    match lab_available() {
        Ok(()) => true,
        Err(reason) if in_ci() => panic!("the lab is required under CI but unavailable: {reason}"),
        Err(reason) => {
            skip(&format!("lab unavailable: {reason}"));
            false
        }
    }
}

/// Holder count and lock file of this process's flock (flock is per open file, so the process
/// takes it once and counts its holders).
static FLOCK: Mutex<(usize, Option<File>)> = Mutex::new((0, None));

/// This process holds the cross-process lab lock while a `LabLock` lives.
pub struct LabLock(());

/// Takes the exclusive lab lock (blocks until other test processes release it). Reentrant
/// within a process.
pub fn lock() -> LabLock {
    let mut held = FLOCK.lock().unwrap_or_else(|p| p.into_inner());
    if held.0 == 0 {
        let file = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(LOCK_FILE)
            .unwrap_or_else(|e| panic!("cannot open {LOCK_FILE}: {e}"));
        loop {
            // SAFETY: a valid open file descriptor.
            if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) } == 0 {
                break;
            }
            let err = std::io::Error::last_os_error();
            if err.kind() != std::io::ErrorKind::Interrupted {
                panic!("flock {LOCK_FILE}: {err}");
            }
        }
        held.1 = Some(file);
    }
    held.0 += 1;
    LabLock(())
}

impl Drop for LabLock {
    fn drop(&mut self) {
        let mut held = FLOCK.lock().unwrap_or_else(|p| p.into_inner());
        held.0 -= 1;
        if held.0 == 0 {
            held.1 = None; // closing the file releases the flock
        }
    }
}

/// Runs `tests/lab/lab ARGS...`; its stdout, or an error with its stderr.
pub fn lab(args: &[&str]) -> Result<String, String> {
    let out =
        Command::new(script()).args(args).output().map_err(|e| format!("cannot run lab {}: {e}", args.join(" ")))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!("lab {} failed ({}): {}", args.join(" "), out.status, String::from_utf8_lossy(&out.stderr).trim()))
    }
}

/// Boots `(name, address)` hosts (address `10.77.0.x` or `dhcp`); running hosts are kept.
pub fn up(hosts: &[(&str, &str)]) -> Result<(), String> {
    up_as(hosts, false)
}

/// Boots hosts as `up`; with `k3s`, fit to run k3s (`LAB_K3S=1`: see tests/lab/lab).
fn up_as(hosts: &[(&str, &str)], k3s: bool) -> Result<(), String> {
    let _lock = lock();
    let mut cmd = Command::new(script());
    cmd.arg("up").args(hosts.iter().map(|(n, a)| format!("{n}={a}")));
    if k3s {
        cmd.env("LAB_K3S", "1");
    }
    let out = cmd.output().map_err(|e| format!("cannot run lab up: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!("lab up failed ({}): {}", out.status, String::from_utf8_lossy(&out.stderr).trim()))
    }
}

/// Stops hosts (a failure is printed, not raised: this runs in cleanups).
pub fn down(names: &[&str]) {
    if names.is_empty() {
        return; // `lab down` with no name would stop every host
    }
    let _lock = lock();
    let mut args = vec!["down"];
    args.extend_from_slice(names);
    if let Err(e) = lab(&args) {
        eprintln!("warning: {e}");
    }
}

/// The lab's private key (ed25519); its public key is next to it with `.pub`.
pub fn key() -> PathBuf {
    lab(&["key"])
        .map(|s| PathBuf::from(s.trim()))
        .unwrap_or_else(|_| PathBuf::from("/var/cache/groundwork-lab/id_ed25519"))
}

static SERIAL: Mutex<()> = Mutex::new(());
static WAITING: AtomicUsize = AtomicUsize::new(0);
/// Every host a test of this process booted and did not take down yet.
static BOOTED: Mutex<Vec<String>> = Mutex::new(Vec::new());

/// Exclusive use of lab hosts by one test; see the module documentation.
pub struct Exclusive {
    _lock: Option<LabLock>,
    _serial: MutexGuard<'static, ()>,
}

/// Waits for the lab (in-process mutex, then the cross-process lock), checks it is available
/// (`None` after printing SKIPPED; a panic under CI) and boots `hosts`. Panics when they do not
/// come up.
pub fn exclusive(hosts: &[(&str, &str)]) -> Option<Exclusive> {
    exclusive_as(hosts, false)
}

/// `exclusive`, with fresh hosts fit to run k3s.
pub fn exclusive_k3s(hosts: &[(&str, &str)]) -> Option<Exclusive> {
    exclusive_as(hosts, true)
}

fn exclusive_as(hosts: &[(&str, &str)], k3s: bool) -> Option<Exclusive> {
    WAITING.fetch_add(1, Ordering::SeqCst);
    let serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    WAITING.fetch_sub(1, Ordering::SeqCst);
    if !require() {
        return None;
    }
    let guard = Exclusive { _lock: Some(lock()), _serial: serial };
    {
        let mut booted = BOOTED.lock().unwrap_or_else(|p| p.into_inner());
        for (n, _) in hosts {
            if !booted.iter().any(|b| b == n) {
                booted.push(n.to_string());
            }
        }
    }
    if k3s {
        // Hosts booted without the k3s profile would keep running without it.
        down(&hosts.iter().map(|(n, _)| *n).collect::<Vec<_>>());
    }
    if let Err(e) = up_as(hosts, k3s) {
        // The guard's drop takes down whatever did come up.
        drop(guard);
        panic!("lab hosts did not come up: {e}");
    }
    Some(guard)
}

impl Drop for Exclusive {
    fn drop(&mut self) {
        // While another test waits the hosts stay up for it (tests must not rely on what an
        // earlier test left on a host); when none waits, every host this process booted goes
        // down, whichever test booted it.
        if WAITING.load(Ordering::SeqCst) == 0 {
            let mut booted = BOOTED.lock().unwrap_or_else(|p| p.into_inner());
            let names: Vec<&str> = booted.iter().map(String::as_str).collect();
            down(&names);
            booted.clear();
        }
        self._lock.take();
    }
}
