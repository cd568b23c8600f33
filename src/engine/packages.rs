//! The package transaction of a host: one POSIX sh script, run when packages are missing.
//!
//! Built so that what goes wrong in the field costs seconds and says what it was:
//! - it first waits for the package manager (another apt or dpkg, e.g. the orphaned install of
//!   a run whose controller was killed) up to [`LOCK_WAIT_S`], then finishes a transaction
//!   that was cut short (`dpkg --configure -a`);
//! - network work (`apt-get update`, the downloads) runs under a watchdog: when neither apt's
//!   output nor its partial files grow for [`STALL_S`] seconds it is stopped and tried again,
//!   instead of waiting minutes for a timeout;
//! - the install itself works from the local cache, in its own session, so a lost connection
//!   does not kill dpkg halfway (the next run waits for it);
//! - each part prints a marker, so a failure names the part (`failed_part`).
//!
//! Output of apt goes to `/var/log/groundwork/packages.log` on the host; the tail of it is in
//! the error of a failed part.

use crate::engine::facts::sh_quote;
use crate::engine::ledger;
use crate::engine::steps::file::Local;
use crate::playbook::catalog::RoleSpec;

/// Seconds without any progress after which a download is stopped and tried again.
pub const STALL_S: u32 = 15;
/// How long to wait for another package manager to let go of the dpkg lock.
pub const LOCK_WAIT_S: u32 = 1500;
/// Held for the whole transaction, by every process of it.
pub const LOCK: &str = "/run/lock/groundwork-packages.lock";
/// The host's package log.
pub const LOG: &str = "/var/log/groundwork/packages.log";

/// Where a package bundle's flat apt repository goes on a host (its `.deb` files, `Packages`
/// and `Release`).
pub const REPO: &str = "/var/lib/groundwork/apt";
/// The apt sources list groundwork owns for the bundle, and the (empty) parts directory and
/// package lists that go with it: apt reads no other source, and the host's own lists stay
/// as they are.
pub const REPO_LIST: &str = "/var/lib/groundwork/apt.list";
pub const REPO_PARTS: &str = "/var/lib/groundwork/apt.list.d";
pub const REPO_LISTS: &str = "/var/lib/groundwork/apt-lists";

/// The packages of `roles`, each once, in role order: what one host installs.
pub fn of_roles(roles: &[&RoleSpec]) -> Vec<String> {
    let mut packages: Vec<String> = Vec::new();
    for role in roles {
        for p in &role.packages {
            if !packages.contains(p) {
                packages.push(p.clone());
            }
        }
    }
    packages
}

/// A package bundle, checked on this machine: the files every host gets in [`REPO`].
#[derive(Debug, Clone, Default)]
pub struct Repo {
    /// The bundle directory, as the answer file names it (for messages).
    pub dir: String,
    pub files: Vec<Local>,
}

impl Repo {
    /// Each file with its path on a host: `REPO/<file name>`.
    pub fn destinations(&self) -> Vec<(String, Local)> {
        self.files
            .iter()
            .map(|l| {
                let name = l.path.rsplit('/').next().unwrap_or(&l.path);
                (format!("{REPO}/{name}"), l.clone())
            })
            .collect()
    }
}

/// Shell functions of the transaction (also used by the tests on this machine). Needs `$log`.
pub const FUNCTIONS: &str = r#"part() { printf 'groundwork-part\t%s\n' "$1"; printf '== %s\n' "$1" >>"$log"; }
fail() { printf 'groundwork-failed\t%s\n' "$1"; tail -n 20 "$log" >&2; exit 1; }
# watched LIMIT CMD...: CMD in its own session, output to the log; with LIMIT > 0 it is stopped
# (exit 124) when neither the log nor apt's partial downloads grow for LIMIT seconds.
watched() {
	limit=$1; shift
	rcf=$log.rc.$$
	rm -f "$rcf"
	setsid sh -c '"$@" </dev/null; echo $? >"$0"' "$rcf" "$@" >>"$log" 2>&1 &
	pid=$!
	last=; idle=0
	while [ ! -s "$rcf" ]; do
		sleep 0.2
		[ "$limit" -gt 0 ] || continue
		now="$(wc -c <"$log") $(du -sb /var/lib/apt/lists/partial /var/cache/apt/archives/partial 2>/dev/null | awk '{ s += $1 } END { print s + 0 }')"
		if [ "$now" = "$last" ]; then idle=$((idle + 1)); else idle=0; last=$now; fi
		if [ "$idle" -ge $((limit * 5)) ]; then
			printf 'no progress for %s s: stopped %s\n' "$limit" "$*" >>"$log"
			kill -TERM "-$pid" 2>/dev/null; sleep 1; kill -KILL "-$pid" 2>/dev/null
			wait "$pid" 2>/dev/null
			rm -f "$rcf"
			return 124
		fi
	done
	wait "$pid" 2>/dev/null
	rc=$(cat "$rcf"); rm -f "$rcf"
	return "$rc"
}
# tries N LIMIT CMD...: watched, up to N times.
tries() {
	n=$1; shift; i=1
	until watched "$@"; do
		[ "$i" -ge "$n" ] && return 1
		i=$((i + 1)); sleep 1
	done
}
"#;

/// The policy-rc.d of a transaction: maintainer scripts may start every unit but `held` (and
/// its instances, `postgresql@15-main`); the marker line tells ours from an operator's.
pub const POLICY: &str = "/usr/sbin/policy-rc.d";
const POLICY_MARK: &str = "# groundwork: held units start after their configuration";

fn policy(held: &[String]) -> String {
    let names: Vec<String> =
        held.iter().flat_map(|u| [u.clone(), format!("{u}.service"), format!("{u}@*")]).map(|p| pattern(&p)).collect();
    format!(
        "#!/bin/sh
{POLICY_MARK}, removed after the transaction
         while [ \"${{1#-}}\" != \"$1\" ]; do shift; done
         case \"$1\" in {}) case \"$2\" in *start* | *reload*) exit 101 ;; esac ;; esac
exit 0
",
        names.join(" | ")
    )
}

/// A case pattern of a unit name: its characters quoted, a trailing `*` left to match.
fn pattern(p: &str) -> String {
    match p.strip_suffix('*') {
        Some(stem) => format!("{}*", sh_quote(stem)),
        None => sh_quote(p),
    }
}

/// The transaction for `missing` packages, with debconf `preseed` lines first; with `bundle`,
/// apt reads only the package bundle's repository in [`REPO`] (uploaded before). The units in
/// `held` are not started by the packages (see `RoleSpec::start_after_config`), unless the
/// host has a policy-rc.d of its own: that one is left as it is.
pub fn script(missing: &[String], preseed: &[String], bundle: bool, held: &[String]) -> String {
    let list = missing.iter().map(|p| sh_quote(p)).collect::<Vec<_>>().join(" ");
    let mut s = String::from("trap '' HUP PIPE\nexport DEBIAN_FRONTEND=noninteractive\nmkdir -p /var/log/groundwork\n");
    s.push_str(&format!("log={}\nprintf '\\n=== %s\\n' \"$(date -Is)\" >>\"$log\"\n", sh_quote(LOG)));
    s.push_str(FUNCTIONS);
    s.push_str(&format!(
        "apt_opts='-o DPkg::Lock::Timeout={LOCK_WAIT_S} -o Acquire::Retries=3 -o Acquire::http::Timeout={STALL_S} -o Acquire::https::Timeout={STALL_S}'\n"
    ));
    if bundle {
        // Only the bundle: its own sources list, an empty parts directory, its own package
        // lists (an update against one source would drop the host's lists of its mirrors).
        // $apt_opts is split into words unquoted, so these constant paths go in as they are
        // (a test keeps them plain); quotes would reach apt as part of the value.
        s.push_str(&format!(
            "apt_opts=\"$apt_opts -o Dir::Etc::SourceList={REPO_LIST} -o Dir::Etc::SourceParts={REPO_PARTS} -o Dir::State::Lists={REPO_LISTS} -o Acquire::Languages=none\"\n",
        ));
    }
    // One transaction at a time: the lock is inherited by every apt and dpkg it starts, so the
    // orphaned install of a killed run keeps it until it has finished. Another apt/dpkg
    // (unattended-upgrades) holds dpkg's own lock: dpkg says so and exits; wait for it too, then
    // finish what was cut short.
    s.push_str(&format!(
        "part 'wait for the package manager'\n\
         exec 9>>{LOCK}\n\
         waited=0\n\
         until flock -n 9; do\n\
         \t[ $((waited % 10)) = 0 ] && [ $waited -gt 0 ] && part \"waiting for another package transaction ($waited s)\"\n\
         \t[ $waited -lt {LOCK_WAIT_S} ] || fail 'waiting for another package transaction'\n\
         \tsleep 1; waited=$((waited + 1))\n\
         done\n\
         end=$(( $(date +%s) + {LOCK_WAIT_S} ))\n\
         until out=$(dpkg --configure -a 2>&1); do\n\
         \tprintf '%s\\n' \"$out\" >>\"$log\"\n\
         \tcase $out in *lock*) ;; *) fail 'dpkg --configure -a' ;; esac\n\
         \t[ \"$(date +%s)\" -lt \"$end\" ] || fail 'waiting for the dpkg lock'\n\
         \tpart \"waiting for the dpkg lock ($(( $(date +%s) - end + {LOCK_WAIT_S} )) s)\"\n\
         \tsleep 1\n\
         done\n"
    ));
    if !preseed.is_empty() {
        let lines: Vec<String> = preseed.iter().map(|l| sh_quote(l)).collect();
        s.push_str(&format!(
            "part 'debconf answers'\nprintf '%s\\n' {} | debconf-set-selections >>\"$log\" 2>&1 || fail 'debconf answers'\n",
            lines.join(" ")
        ));
    }
    if bundle {
        // The bundle's lists are read from the host's own disk: every time, in a moment.
        s.push_str(&format!(
            "part 'apt-get update (package bundle)'\n\
             mkdir -p {parts} {lists}/partial || fail 'apt-get update (package bundle)'\n\
             printf 'deb [trusted=yes] file:%s ./\\n' {repo} >{list} || fail 'apt-get update (package bundle)'\n\
             tries 3 {STALL_S} apt-get $apt_opts update -q || fail 'apt-get update (package bundle)'\n",
            parts = sh_quote(REPO_PARTS),
            lists = sh_quote(REPO_LISTS),
            repo = sh_quote(REPO),
            list = sh_quote(REPO_LIST),
        ));
    } else {
        // Package lists are refreshed when missing or older than an hour.
        s.push_str(&format!(
            "stamp=/var/lib/apt/lists/.groundwork-updated\n\
             if [ -z \"$(find $stamp -mmin -60 2>/dev/null)\" ]; then\n\
             \tpart 'apt-get update'\n\
             \ttries 3 {STALL_S} apt-get $apt_opts update -q || fail 'apt-get update'\n\
             \ttouch $stamp\n\
             fi\n"
        ));
    }
    s.push_str(&format!(
        "part 'download'\n\
         tries 3 {STALL_S} apt-get $apt_opts install -y -q --download-only {list} || fail 'download'\n\
         part 'install'\n\
         mkdir -p {state}\n\
         {installed} > {was}\n\
         [ -e {before} ] || cp {was} {before}\n\
         {etc_dirs} > {was}-etc\n",
        // The ledger (engine::ledger): what was there before, and what this transaction added
        // (also when it failed halfway), so that `reset` purges only what groundwork brought.
        state = sh_quote(ledger::STATE),
        installed = ledger::INSTALLED,
        was = sh_quote(&format!("{}/packages.was", ledger::STATE)),
        before = sh_quote(ledger::PACKAGES_BEFORE),
        etc_dirs = ledger::ETC_DIRS,
    ));
    if held.is_empty() {
        s.push_str(&format!(
            "watched 0 apt-get $apt_opts install -y -q -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold {list}; rc=$?\n"
        ));
    } else {
        // Written and removed inside the detached command, so a lost connection cannot leave
        // it behind; one left by a killed host is ours (the marker) and replaced.
        let policy = sh_quote(&policy(held));
        let install = sh_quote(&format!(
            "if [ ! -e {POLICY} ] || grep -qxF {mark} {POLICY}; then printf %s {policy} >{POLICY} && chmod 755 {POLICY} && own=1; fi\n\
             apt-get $0 install -y -q -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold \"$@\"; rc=$?\n\
             [ -z \"$own\" ] || rm -f {POLICY}\n\
             exit $rc",
            mark = sh_quote(&format!("{POLICY_MARK}, removed after the transaction")),
        ));
        s.push_str(&format!("watched 0 sh -c {install} \"$apt_opts\" {list}; rc=$?\n"));
    }
    s.push_str(&format!(
        "{installed} | LC_ALL=C comm -13 {was} - >> {added}\n\
         {etc_dirs} | LC_ALL=C comm -13 {was}-etc - >> {etc_added}\n\
         [ $rc = 0 ] || fail 'install (dpkg)'\n\
         part done\n",
        installed = ledger::INSTALLED,
        was = sh_quote(&format!("{}/packages.was", ledger::STATE)),
        added = sh_quote(ledger::PACKAGES_ADDED),
        etc_dirs = ledger::ETC_DIRS,
        etc_added = sh_quote(ledger::ETC_DIRS_ADDED),
    ));
    s
}

/// The part that failed (from the markers on stdout), or the last one that started.
pub fn failed_part(stdout: &str) -> Option<&str> {
    let mut last = None;
    for l in stdout.lines() {
        if let Some(p) = l.strip_prefix("groundwork-failed\t") {
            return Some(p);
        }
        if let Some(p) = l.strip_prefix("groundwork-part\t") {
            last = Some(p);
        }
    }
    last
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;
    use std::time::{Duration, Instant};

    /// Runs `body` after the functions, with the log in a temporary directory, on this machine.
    fn sh(body: &str) -> (i32, String, Duration) {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("packages.log");
        let script = format!("log={}\n{FUNCTIONS}{body}", sh_quote(log.to_str().unwrap()));
        let t = Instant::now();
        let out = Command::new("sh").arg("-c").arg(&script).output().unwrap();
        let took = t.elapsed();
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        (out.status.code().unwrap_or(-1), text, took)
    }

    #[test]
    fn a_stalled_command_is_stopped_in_seconds_with_its_whole_group() {
        // A sleep of its own length, so another test run on the machine is not mistaken for it.
        let nap = format!("30.{:06}", std::process::id() % 1_000_000);
        let (rc, log, took) = sh(&format!("watched 1 sh -c 'echo start; sleep {nap} & wait'; echo rc=$?"));
        assert_eq!(rc, 0);
        assert!(took < Duration::from_secs(5), "took {took:?}");
        assert!(log.contains("start") && log.contains("no progress for 1 s"), "{log}");
        // the backgrounded sleep was in the same session and went with it
        let left = Command::new("pgrep").args(["-f", &format!("^sleep {nap}$")]).output().unwrap();
        assert!(left.stdout.is_empty(), "left behind: {}", String::from_utf8_lossy(&left.stdout));
    }

    #[test]
    fn progress_keeps_a_command_alive_and_its_status_comes_back() {
        let (rc, log, _) =
            sh("watched 1 sh -c 'for i in 1 2 3 4 5 6; do echo tick $i; sleep 0.4; done'; echo \"rc=$?\" >>\"$log\"\n\
             watched 1 sh -c 'exit 3'; echo \"rc=$?\" >>\"$log\"\n\
             watched 0 sleep 1.5; echo \"rc=$?\" >>\"$log\"");
        assert_eq!(rc, 0);
        assert!(log.contains("tick 6\nrc=0\nrc=3\nrc=0"), "{log}");
    }

    #[test]
    fn retries_then_names_the_failed_part() {
        let (rc, log, _) = sh(
            "part 'apt-get update'\ntries 2 1 sh -c 'echo try >>\"$0\"; exit 100' \"$log\" || fail 'apt-get update'",
        );
        assert_eq!(rc, 1);
        assert_eq!(log.matches("try").count(), 2, "{log}");
        let out = "groundwork-part\twait for the package manager\ngroundwork-part\tapt-get update\ngroundwork-failed\tapt-get update\n";
        assert_eq!(failed_part(out), Some("apt-get update"));
        assert_eq!(failed_part("groundwork-part\tdownload\n"), Some("download"));
    }

    #[test]
    fn the_script_is_valid_sh_and_quotes_package_names() {
        for bundle in [true, false] {
            let s = script(&["bind9".into()], &[], bundle, &["named".into()]);
            let out = Command::new("sh").args(["-n", "-c", &s]).output().unwrap();
            assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
            assert_eq!(s.contains("-o Dir::Etc::SourceList=/var/lib/groundwork/apt.list "), bundle, "{s}");
            assert_eq!(s.contains("-o Dir::Etc::SourceParts=/var/lib/groundwork/apt.list.d "), bundle, "{s}");
        }
        // They go into $apt_opts unquoted: plain paths only.
        for p in [REPO, REPO_LIST, REPO_PARTS, REPO_LISTS] {
            assert!(p.chars().all(|c| c.is_ascii_alphanumeric() || "/._-".contains(c)), "{p}");
        }
        let s =
            script(&["bind9".into(), "x'; reboot; '".into()], &["slapd slapd/domain string a'b".into()], false, &[]);
        let out = Command::new("sh").args(["-n", "-c", &s]).output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        assert!(s.contains(r"'x'\''; reboot; '\'''"), "{s}");
        assert!(s.contains(r"'slapd slapd/domain string a'\''b'"));
    }

    #[test]
    fn the_policy_holds_the_starts_of_held_units_and_their_instances_only() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("policy-rc.d");
        std::fs::write(&path, policy(&["postgresql".into(), "mariadb".into()])).unwrap();
        let code = |args: &[&str]| Command::new("sh").arg(&path).args(args).status().unwrap().code();
        // invoke-rc.d: `[--quiet] ID ACTION [RUNLEVEL]`; deb-systemd-invoke: `UNIT ACTION`.
        for held in [
            &["postgresql", "start"][..],
            &["--quiet", "postgresql", "start", "5"],
            &["postgresql.service", "start"],
            &["postgresql@15-main.service", "restart"],
            &["mariadb", "(restart)"],
            &["mariadb.service", "reload"],
        ] {
            assert_eq!(code(held), Some(101), "{held:?}");
        }
        for allowed in [
            &["postgresql", "stop"][..],
            &["chrony", "start"],
            &["chrony.service", "start"],
            &["postgresqlx", "start"],
            &["logrotate.timer", "start"],
        ] {
            assert_eq!(code(allowed), Some(0), "{allowed:?}");
        }
    }
}
