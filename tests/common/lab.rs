//! The lab of real Debian hosts (`tests/lab/lab`, see tests/lab/README.md) for integration tests.
//!
//! Typical use, one guard per test:
//!
//! ```ignore
//! let Some(_lab) = common::lab::exclusive(&[("ssh1", "10.77.0.31")]) else { return };
//! ```
//!
//! [`exclusive`] serialises the tests of one test binary (a static mutex) and, with an exclusive
//! `flock` on [`LOCK_FILE`], the test processes using the lab. The lab's hosts share one
//! Ethernet segment, so a test that runs a DHCP server or client uses [`exclusive_dhcp`]
//! instead, which holds [`DHCP_LOCK_FILE`]: no two such tests overlap (each would see the
//! other's server, and groundwork refuses to start a second one), while one of them and one
//! other lab test may run side by side, each on its own hosts and addresses (tests/run runs the
//! test binaries at once). It boots the hosts (a no-op when they run) and, when no other test
//! of the binary is waiting for the lab, stops them again on drop. When the lab cannot run here
//! it prints `SKIPPED: ...` and returns `None`; under CI (`CI=true`) that is a failure instead.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard, OnceLock};

/// Held by the one test process at a time that uses the lab without DHCP.
pub const LOCK_FILE: &str = "/run/groundwork-lab.lock";
/// Held by the one test at a time that runs a DHCP server or client on the lab's segment.
pub const DHCP_LOCK_FILE: &str = "/run/groundwork-lab-dhcp.lock";

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
/// takes it once and counts its holders): the lab's lock, or the DHCP segment's.
static FLOCK: Mutex<(usize, Option<File>)> = Mutex::new((0, None));
static DHCP_FLOCK: Mutex<(usize, Option<File>)> = Mutex::new((0, None));

fn take(held: &Mutex<(usize, Option<File>)>, path: &str) {
    let mut held = held.lock().unwrap_or_else(|p| p.into_inner());
    if held.0 == 0 {
        let file = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(path)
            .unwrap_or_else(|e| panic!("cannot open {path}: {e}"));
        loop {
            // SAFETY: a valid open file descriptor.
            if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) } == 0 {
                break;
            }
            let err = std::io::Error::last_os_error();
            if err.kind() != std::io::ErrorKind::Interrupted {
                panic!("flock {path}: {err}");
            }
        }
        held.1 = Some(file);
    }
    held.0 += 1;
}

fn release(held: &Mutex<(usize, Option<File>)>) {
    let mut held = held.lock().unwrap_or_else(|p| p.into_inner());
    held.0 -= 1;
    if held.0 == 0 {
        held.1 = None; // closing the file releases the flock
    }
}

fn holds_dhcp() -> bool {
    DHCP_FLOCK.lock().unwrap_or_else(|p| p.into_inner()).0 > 0
}

/// This process may use the lab while a `LabLock` lives.
pub struct LabLock {
    dhcp: bool,
}

/// Takes the lab's lock (blocks until no other test process that runs no DHCP has it); a
/// process holding the DHCP segment already may use the lab. Reentrant within a process.
pub fn lock() -> LabLock {
    if holds_dhcp() {
        take(&DHCP_FLOCK, DHCP_LOCK_FILE);
        return LabLock { dhcp: true };
    }
    take(&FLOCK, LOCK_FILE);
    LabLock { dhcp: false }
}

/// Takes the DHCP segment (blocks until no other test process has it): for a test that runs
/// a DHCP server or client. Reentrant within a process.
pub fn lock_dhcp() -> LabLock {
    take(&DHCP_FLOCK, DHCP_LOCK_FILE);
    LabLock { dhcp: true }
}

impl Drop for LabLock {
    fn drop(&mut self) {
        release(if self.dhcp { &DHCP_FLOCK } else { &FLOCK });
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

/// Waits for the lab (in-process mutex, then the lab's lock), checks it is available (`None` after
/// printing SKIPPED; a panic under CI) and boots `hosts`. Panics when they do not come up. For
/// a test that runs no DHCP server or client.
pub fn exclusive(hosts: &[(&str, &str)]) -> Option<Exclusive> {
    exclusive_as(hosts, false, false)
}

/// `exclusive` for a test that runs a DHCP server or client: it has the segment to itself.
pub fn exclusive_dhcp(hosts: &[(&str, &str)]) -> Option<Exclusive> {
    exclusive_as(hosts, false, true)
}

/// `exclusive`, with fresh hosts fit to run k3s.
pub fn exclusive_k3s(hosts: &[(&str, &str)]) -> Option<Exclusive> {
    exclusive_as(hosts, true, false)
}

fn exclusive_as(hosts: &[(&str, &str)], k3s: bool, dhcp: bool) -> Option<Exclusive> {
    WAITING.fetch_add(1, Ordering::SeqCst);
    let serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    WAITING.fetch_sub(1, Ordering::SeqCst);
    if !require() {
        return None;
    }
    let guard = Exclusive { _lock: Some(if dhcp { lock_dhcp() } else { lock() }), _serial: serial };
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
        // down, whichever test booted it. A DHCP test's hosts always go down before the
        // segment is released: left up, a Kea of theirs would answer the next test's DHCP
        // probe or client (in tests/local.rs the wizard test's kl1 serves the very subnet the
        // next test's DHCP role probes before it starts Kea).
        let dhcp = self._lock.as_ref().is_some_and(|l| l.dhcp);
        if dhcp || WAITING.load(Ordering::SeqCst) == 0 {
            let mut booted = BOOTED.lock().unwrap_or_else(|p| p.into_inner());
            let names: Vec<&str> = booted.iter().map(String::as_str).collect();
            down(&names);
            booted.clear();
        }
        self._lock.take();
    }
}
