//! What groundwork found on a host and what it left there, recorded on the host itself by the
//! same scripts that make the changes (so no change can happen without its record): `reset`
//! reads it to put the host back as it was found, `drift` to see what changed since.
//!
//! Beside the backups of a path ([`file::backup_name`], under [`file::BACKUPS`]):
//! - `.orig`: the file as groundwork first found it (content, mode, owner); never pruned;
//! - `.created`: the path did not exist before groundwork made it (a file, a directory, or
//!   what a command with a `creates` guard makes);
//! - `.orig-dir`: `MODE OWNER` of a directory that was there before groundwork set them;
//! - `.wrote`: `SHA256 MODE OWNER` of what groundwork last wrote there;
//! - `.content`: a copy of what it last wrote (not for secret files or uploads): the diff of
//!   `drift`.
//!
//! In [`STATE`]: `packages.before` (every package the host had before groundwork's first
//! package transaction), `packages.added` (what each transaction added, dependencies
//! included), and `units/<unit>` (`ACTIVE ENABLED` of a unit before groundwork first started,
//! enabled or restarted it). The record lives on the host: it belongs to that machine (a
//! rebuilt one has none), and a lost controller does not lose it.

use super::facts::sh_quote;
use super::steps::file::{BACKUPS, backup_name};

/// groundwork's own directory on a host.
pub const STATE: &str = "/var/lib/groundwork";
pub const PACKAGES_BEFORE: &str = "/var/lib/groundwork/packages.before";
pub const PACKAGES_ADDED: &str = "/var/lib/groundwork/packages.added";
pub const UNITS: &str = "/var/lib/groundwork/units";
/// The directories under /etc that each package transaction added (`find` lines): what the
/// purge of those packages leaves there is theirs.
pub const ETC_DIRS_ADDED: &str = "/var/lib/groundwork/etc-dirs.added";
/// Sh: the directories under /etc, sorted.
pub const ETC_DIRS: &str = "find /etc -xdev -type d | LC_ALL=C sort";
/// The host's package log (kept by the package transaction).
pub const LOGS: &str = "/var/log/groundwork";

pub const ORIG: &str = ".orig";
pub const CREATED: &str = ".created";
pub const ORIG_DIR: &str = ".orig-dir";
pub const WROTE: &str = ".wrote";
pub const CONTENT: &str = ".content";

/// Sh: record that `path` is about to be made by groundwork, unless the ledger knows it
/// already (then what it knows stands: the first record is the one a reset needs).
pub fn record_created(path: &str) -> String {
    record_created_at(&backup_name(path))
}

/// [`record_created`] with the backup name given (`file::Write::backup`).
pub fn record_created_at(backup: &str) -> String {
    let b = sh_quote(backup);
    format!(
        "[ -e {b}{ORIG} ] || [ -e {b}{CREATED} ] || [ -e {b}{ORIG_DIR} ] || {{ mkdir -p {d} && : > {b}{CREATED}; }}\n",
        d = sh_quote(parent(backup))
    )
}

/// Sh: keep the file at `path` as groundwork first found it (`link`: a hard link, for large
/// uploads whose replacement gets a new inode), unless the ledger knows the path already.
pub fn record_original(path: &str, backup: &str, link: bool) -> String {
    let (b, p) = (sh_quote(backup), sh_quote(path));
    let keep = if link {
        format!("{{ ln -f {p} {b}{ORIG} 2>/dev/null || cp -a {p} {b}{ORIG}; }}")
    } else {
        format!("cp -a {p} {b}{ORIG}")
    };
    format!("[ -e {b}{ORIG} ] || [ -e {b}{CREATED} ] || {{ mkdir -p {d} && {keep}; }}\n", d = sh_quote(parent(backup)))
}

/// Sh: the path as it is before a command changes or makes it: kept (a file or a symbolic
/// link, copied as it is) or noted as absent. A directory is noted by its mode and owner.
pub fn record_before(path: &str) -> String {
    let p = sh_quote(path);
    format!(
        "if [ -d {p} ] && [ ! -L {p} ]; then {dir}elif [ -e {p} ] || [ -L {p} ]; then {orig}else {created}fi\n",
        dir = record_directory(path).trim_end().to_string() + "\n",
        orig = record_original(path, &backup_name(path), false),
        created = record_created(path),
    )
}

/// Sh: each missing directory above `path` (the nearest to `/` last), noted as created by
/// groundwork before something makes it (`mkdir -p`, `install -d`).
pub fn record_parents(path: &str) -> String {
    let mut s = String::new();
    let mut dir = path.trim_end_matches('/');
    while let Some((up, _)) = dir.rsplit_once('/') {
        if up.is_empty() {
            break;
        }
        s.push_str(&format!("[ -e {} ] || {}", sh_quote(up), record_created(up)));
        dir = up;
    }
    s
}

/// Sh: the state of the directory at `path` before groundwork first sets it (created, or its
/// mode and owner).
pub fn record_directory(path: &str) -> String {
    let (b, p) = (sh_quote(&backup_name(path)), sh_quote(path));
    format!(
        "{parents}if [ -d {p} ]; then [ -e {b}{ORIG_DIR} ] || [ -e {b}{CREATED} ] || {{ mkdir -p {d} && stat -c '%a %U:%G' {p} > {b}{ORIG_DIR}; }}; \
         elif [ ! -e {p} ]; then [ -e {b}{CREATED} ] || {{ mkdir -p {d} && : > {b}{CREATED}; }}; fi\n",
        d = sh_quote(BACKUPS),
        parents = record_parents(path),
    )
}

/// Sh: what groundwork just wrote at `path` (its sha256, mode and owner; with `copy`, its
/// content too), for `drift`.
pub fn record_wrote(path: &str, backup: &str, sha256: &str, mode: u32, owner: &str, copy: bool) -> String {
    let (b, p) = (sh_quote(backup), sh_quote(path));
    let content = if copy { format!("cat {p} > {b}{CONTENT}") } else { format!("rm -f {b}{CONTENT}") };
    format!("printf '%s %s %s\\n' {} {mode:o} {} > {b}{WROTE}\n{content}\n", sh_quote(sha256), sh_quote(owner))
}

/// The directory of a backup name.
fn parent(backup: &str) -> &str {
    backup.rsplit_once('/').map_or(BACKUPS, |(d, _)| d)
}

/// The file name under [`UNITS`] of a unit (`/` cannot be in a file name).
pub fn unit_record(unit: &str) -> String {
    format!("{UNITS}/{}", unit.replace('%', "%25").replace('/', "%2F"))
}

/// Sh: the unit's state before groundwork first acts on it.
pub fn record_unit(unit: &str) -> String {
    let (r, u) = (sh_quote(&unit_record(unit)), sh_quote(unit));
    format!(
        "[ -e {r} ] || {{ mkdir -p {units} && printf '%s %s\\n' \"$(systemctl is-active {u} 2>/dev/null || true)\" \"$(systemctl is-enabled {u} 2>/dev/null || true)\" > {r}; }}; ",
        units = sh_quote(UNITS)
    )
}

/// The path a backup-directory entry belongs to, and which record it is (its suffix); `None`
/// for a timestamped backup or anything else.
pub fn parse_entry(name: &str) -> Option<(String, &'static str)> {
    for suffix in [ORIG_DIR, ORIG, CREATED, WROTE, CONTENT] {
        if let Some(escaped) = name.strip_suffix(suffix)
            && escaped.starts_with("%2F")
        {
            return Some((escaped.replace("%2F", "/").replace("%25", "%"), suffix));
        }
    }
    None
}

/// Sh: the installed packages (dpkg knows them in any state but not-installed), sorted.
pub const INSTALLED: &str =
    "dpkg-query -W -f='${db:Status-Abbrev} ${Package}\\n' | awk '$1 !~ /^.n/ { print $2 }' | LC_ALL=C sort -u";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_name_their_path_and_record() {
        assert_eq!(parse_entry("%2Fetc%2Fhosts.orig"), Some(("/etc/hosts".into(), ORIG)));
        assert_eq!(parse_entry("%2Fetc%2Fbind%2Fgroundwork.orig-dir"), Some(("/etc/bind/groundwork".into(), ORIG_DIR)));
        assert_eq!(parse_entry("%2Fetc%2Fa%252Fb.created"), Some(("/etc/a%2Fb".into(), CREATED)));
        assert_eq!(parse_entry("%2Fetc%2Fhosts.20261130T120000"), None);
        assert_eq!(parse_entry("%2Fetc%2Fhosts.wrote"), Some(("/etc/hosts".into(), WROTE)));
    }

    #[test]
    fn missing_parents_are_noted_from_the_nearest() {
        let s = record_parents("/etc/groundwork/ldap/admin.pw");
        let at = |p: &str| s.find(&format!("[ -e '{p}' ]")).unwrap();
        assert!(at("/etc/groundwork/ldap") < at("/etc/groundwork") && at("/etc/groundwork") < at("/etc"), "{s}");
        assert!(!s.contains("[ -e '' ]"), "{s}");
    }

    #[test]
    fn the_snippets_are_valid_sh_and_quote_paths() {
        let nasty = "/etc/x'; reboot; '";
        for s in [
            record_created(nasty),
            record_original(nasty, &backup_name(nasty), true),
            record_directory(nasty),
            record_wrote(nasty, &backup_name(nasty), "ab", 0o640, "root:bind", true),
            record_unit("x'y"),
            record_before(nasty),
            record_parents(nasty),
        ] {
            let out = std::process::Command::new("sh").args(["-n", "-c", &s]).output().unwrap();
            assert!(out.status.success(), "{s}: {}", String::from_utf8_lossy(&out.stderr));
            assert!(!s.contains("'; reboot; '") || s.contains(r"'\''; reboot; '\''"), "{s}");
        }
    }
}
