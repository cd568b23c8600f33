//! The state directory's known_hosts, read as OpenSSH reads it (sshd(8), "SSH_KNOWN_HOSTS FILE
//! FORMAT"): `[marker] hostnames keytype base64-key [comment]`, fields separated by any run of
//! spaces or tabs; `#` comments and blank lines; host patterns in a comma list with `*`, `?` and
//! `!` negation, compared case-insensitively; `[host]:port` for a port other than 22; hashed
//! names (`|1|salt|hash`, HMAC-SHA1 of the name keyed with the salt).
//!
//! `@revoked` keys are refused for the hosts the line matches. `@cert-authority` lines are read
//! but not used: groundwork does not ask servers for host certificates (russh advertises none
//! unless told to), so a server always proves itself with a plain key.
//!
//! The file is read as bytes and line by line: a line that cannot be read (bad UTF-8 in a field,
//! a key that does not parse, an unknown marker) is reported with its number and skipped, and
//! the other lines still count. New keys are appended in OpenSSH's plain form.

use std::fs::OpenOptions;
use std::io::{Read, Seek, SeekFrom, Write};
use std::ops::Range;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::sync::Mutex;

use base64::Engine as _;
use russh::keys::PublicKey;

/// Serialises check-then-learn within the process (several sessions may connect at once).
pub(crate) static FILE_LOCK: Mutex<()> = Mutex::new(());

/// What known_hosts says about a host key.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// The key is recorded for this host.
    Known,
    /// Nothing is recorded for this host.
    Unknown,
    /// Keys are recorded for this host, none is this one; `line` is the first (1-based) that
    /// does not match (same algorithm first, else any algorithm).
    Changed { line: usize },
    /// An `@revoked` line that matches this host lists this key.
    Revoked { line: usize },
    /// Nothing readable is recorded for this host, but line `line` mentions it and cannot be
    /// read: learning a key next to it could accept what that line meant to refuse.
    Unreadable { line: usize, reason: String },
}

/// The `host` field as OpenSSH writes and matches it.
pub(crate) fn host_field(host: &str, port: u16) -> String {
    if port == 22 { host.to_string() } else { format!("[{host}]:{port}") }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Marker {
    None,
    Revoked,
    CertAuthority,
}

/// One readable line.
struct Entry {
    line: usize,
    marker: Marker,
    hosts: Hosts,
    /// Byte range of the host field within the line.
    hosts_at: Range<usize>,
    key: PublicKey,
}

enum Hosts {
    Hashed { salt: Vec<u8>, hash: Vec<u8> },
    Patterns(Vec<String>),
}

/// A line that cannot be read, or is read and not used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Note {
    pub line: usize,
    pub message: String,
}

/// A line that could not be read, with its host field when there is one (to tell whether it
/// was meant for a host).
struct Bad {
    line: usize,
    reason: String,
    hosts: Option<Hosts>,
}

/// The parsed file: its lines (as bytes, each with its `\n`), what could be read, and the notes.
struct File {
    lines: Vec<Vec<u8>>,
    entries: Vec<Entry>,
    bad: Vec<Bad>,
    notes: Vec<Note>,
}

fn is_space(b: &u8) -> bool {
    matches!(*b, b' ' | b'\t' | b'\r' | b'\x0b' | b'\x0c')
}

/// The fields of a line with their byte ranges.
fn fields(line: &[u8]) -> Vec<(Range<usize>, &[u8])> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < line.len() {
        while i < line.len() && is_space(&line[i]) {
            i += 1;
        }
        let start = i;
        while i < line.len() && !is_space(&line[i]) {
            i += 1;
        }
        if start < i {
            out.push((start..i, &line[start..i]));
        }
    }
    out
}

fn parse_hosts(field: &[u8]) -> Result<Hosts, String> {
    let text = std::str::from_utf8(field).map_err(|_| "the host field is not valid UTF-8".to_string())?;
    if let Some(rest) = text.strip_prefix('|') {
        let b64 = base64::engine::general_purpose::STANDARD;
        let mut parts = rest.split('|');
        let (Some("1"), Some(salt), Some(hash), None) = (parts.next(), parts.next(), parts.next(), parts.next()) else {
            return Err(format!("the hashed host name `{text}` is not of the form |1|salt|hash"));
        };
        let (Ok(salt), Ok(hash)) = (b64.decode(salt), b64.decode(hash)) else {
            return Err(format!("the hashed host name `{text}` does not decode (base64)"));
        };
        // HMAC-SHA1: a 20-byte salt (OpenSSH refuses other lengths) and a 20-byte digest.
        if salt.len() != 20 || hash.len() != 20 {
            return Err(format!("the hashed host name `{text}` has a salt or hash that is not 20 bytes"));
        }
        return Ok(Hosts::Hashed { salt, hash });
    }
    Ok(Hosts::Patterns(text.split(',').map(str::to_string).collect()))
}

fn parse_line(n: usize, line: &[u8]) -> Result<Option<Entry>, Bad> {
    let body = line.strip_suffix(b"\n").unwrap_or(line);
    let f = fields(body);
    let Some((_, first)) = f.first() else {
        return Ok(None);
    };
    if first.starts_with(b"#") {
        return Ok(None);
    }
    let bad = |reason: String, hosts_field: Option<&[u8]>| Bad {
        line: n,
        reason,
        hosts: hosts_field.and_then(|h| parse_hosts(h).ok()),
    };
    let (marker, rest) = match *first {
        b"@revoked" => (Marker::Revoked, &f[1..]),
        b"@cert-authority" => (Marker::CertAuthority, &f[1..]),
        m if m.starts_with(b"@") => {
            return Err(bad(
                format!("unknown marker `{}` (OpenSSH knows @revoked and @cert-authority)", String::from_utf8_lossy(m)),
                f.get(1).map(|x| x.1),
            ));
        }
        _ => (Marker::None, &f[..]),
    };
    let Some((hosts_at, hosts_field)) = rest.first() else {
        return Err(bad("a marker without host names".into(), None));
    };
    let hosts = parse_hosts(hosts_field).map_err(|reason| bad(reason, None))?;
    let (Some((_, kind)), Some((_, blob))) = (rest.get(1), rest.get(2)) else {
        return Err(bad(
            "expected `[marker] hostnames keytype key`; the key type or the key is missing".into(),
            Some(hosts_field),
        ));
    };
    let key = std::str::from_utf8(kind)
        .ok()
        .zip(std::str::from_utf8(blob).ok())
        .ok_or_else(|| "the key type or key is not valid UTF-8".to_string())
        .and_then(|(k, b)| {
            PublicKey::from_openssh(&format!("{k} {b}")).map_err(|e| format!("the `{k}` key does not parse ({e})"))
        })
        .map_err(|reason| bad(reason, Some(hosts_field)))?;
    Ok(Some(Entry { line: n, marker, hosts, hosts_at: hosts_at.clone(), key }))
}

fn parse(bytes: &[u8]) -> File {
    let lines: Vec<Vec<u8>> = bytes.split_inclusive(|b| *b == b'\n').map(<[u8]>::to_vec).collect();
    let mut entries = Vec::new();
    let mut bad = Vec::new();
    let mut notes = Vec::new();
    for (i, l) in lines.iter().enumerate() {
        match parse_line(i + 1, l) {
            Ok(Some(e)) => {
                if e.marker == Marker::CertAuthority {
                    notes.push(Note {
                        line: e.line,
                        message: "@cert-authority line not used: groundwork checks plain host keys and does not ask servers for certificates".into(),
                    });
                }
                entries.push(e);
            }
            Ok(None) => {}
            Err(b) => {
                notes.push(Note { line: b.line, message: format!("{}; line skipped", b.reason) });
                bad.push(b);
            }
        }
    }
    File { lines, entries, bad, notes }
}

/// OpenSSH's `match_pattern`: `*` any run of characters, `?` exactly one.
fn wildcard(pattern: &[u8], s: &[u8]) -> bool {
    let (mut p, mut i) = (0, 0);
    let mut back: Option<(usize, usize)> = None;
    while i < s.len() {
        if p < pattern.len() && (pattern[p] == b'?' || pattern[p] == s[i]) {
            p += 1;
            i += 1;
        } else if p < pattern.len() && pattern[p] == b'*' {
            back = Some((p, i));
            p += 1;
        } else if let Some((bp, bi)) = back {
            p = bp + 1;
            i = bi + 1;
            back = Some((bp, bi + 1));
        } else {
            return false;
        }
    }
    pattern[p..].iter().all(|c| *c == b'*')
}

impl Hosts {
    /// Whether the line is for `name` (already in known_hosts form, lower case). A negated
    /// pattern that matches makes the whole line not match, as in OpenSSH.
    fn matches(&self, name: &str) -> bool {
        match self {
            Hosts::Hashed { salt, hash } => {
                let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, salt);
                ring::hmac::verify(&key, name.as_bytes(), hash).is_ok()
            }
            Hosts::Patterns(patterns) => {
                let mut found = false;
                for p in patterns {
                    let p = p.to_ascii_lowercase();
                    match p.strip_prefix('!') {
                        Some(neg) if wildcard(neg.as_bytes(), name.as_bytes()) => return false,
                        Some(_) => {}
                        None => found |= wildcard(p.as_bytes(), name.as_bytes()),
                    }
                }
                found
            }
        }
    }
}

fn lookup_name(host: &str, port: u16) -> String {
    host_field(host, port).to_ascii_lowercase()
}

fn read(path: &Path) -> Result<Option<Vec<u8>>, String> {
    match std::fs::read(path) {
        Ok(b) => Ok(Some(b)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e.to_string()),
    }
}

/// Creates `path` (mode 0600, and its parent directories) when absent.
pub(crate) fn ensure_file(path: &Path) -> std::io::Result<()> {
    if let Some(parent) = path.parent()
        && !parent.as_os_str().is_empty()
    {
        std::fs::create_dir_all(parent)?;
    }
    OpenOptions::new().append(true).create(true).mode(0o600).open(path)?;
    Ok(())
}

/// Checks `key` for `host`:`port` against `path`. Never accepts a key of another algorithm
/// when keys are recorded for the host: that counts as changed.
pub(crate) fn check(path: &Path, host: &str, port: u16, key: &PublicKey) -> Result<Verdict, String> {
    let Some(bytes) = read(path)? else {
        return Ok(Verdict::Unknown);
    };
    let file = parse(&bytes);
    let name = lookup_name(host, port);
    let for_host: Vec<&Entry> = file.entries.iter().filter(|e| e.hosts.matches(&name)).collect();
    // A revoked key is refused even when a plain line also lists it.
    if let Some(e) = for_host.iter().find(|e| e.marker == Marker::Revoked && e.key.key_data() == key.key_data()) {
        return Ok(Verdict::Revoked { line: e.line });
    }
    let recorded: Vec<&&Entry> = for_host.iter().filter(|e| e.marker == Marker::None).collect();
    if recorded.iter().any(|e| e.key.key_data() == key.key_data()) {
        return Ok(Verdict::Known);
    }
    if let Some(e) = recorded.iter().find(|e| e.key.algorithm() == key.algorithm()).or(recorded.first()) {
        return Ok(Verdict::Changed { line: e.line });
    }
    if let Some(b) = file.bad.iter().find(|b| b.hosts.as_ref().is_some_and(|h| h.matches(&name))) {
        return Ok(Verdict::Unreadable { line: b.line, reason: b.reason.clone() });
    }
    Ok(Verdict::Unknown)
}

/// Checks `known_hosts` text given for one server (a Git host the cluster connects to):
/// every line that is not blank or a comment must be a plain key line (no marker) that is for
/// `host`:`port`. Returns the key lines; an error names the line (1-based) and why, never more
/// of it than its host field.
pub(crate) fn pinned_lines(text: &str, host: &str, port: u16) -> Result<Vec<String>, String> {
    let name = lookup_name(host, port);
    let mut keys = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let n = i + 1;
        match parse_line(n, line.as_bytes()) {
            Ok(None) => {}
            Ok(Some(e)) if e.marker != Marker::None => {
                return Err(format!("line {n}: a marker (@revoked, @cert-authority) has no use here"));
            }
            Ok(Some(e)) if !e.hosts.matches(&name) => {
                let shown = crate::answers::report::shown;
                return Err(format!(
                    "line {n}: `{}` is not for the repository's host `{}`",
                    shown(&String::from_utf8_lossy(&line.as_bytes()[e.hosts_at.clone()])),
                    shown(&name)
                ));
            }
            Ok(Some(_)) => keys.push(line.trim().to_string()),
            Err(b) => return Err(format!("line {n}: {}", b.reason)),
        }
    }
    if keys.is_empty() {
        return Err("no key line (`host keytype key`)".into());
    }
    Ok(keys)
}

/// Lines of `path` that cannot be read or are not used, for a warning at the start of a run.
pub(crate) fn notes(path: &Path) -> Result<Vec<Note>, String> {
    Ok(read(path)?.map(|b| parse(&b).notes).unwrap_or_default())
}

/// Appends `key` for `host`:`port` to `path` in one write (creating the file 0600).
pub(crate) fn learn(path: &Path, host: &str, port: u16, key: &PublicKey) -> Result<(), String> {
    let openssh = key.to_openssh().map_err(|e| e.to_string())?;
    let mut file =
        OpenOptions::new().read(true).append(true).create(true).mode(0o600).open(path).map_err(|e| e.to_string())?;
    let mut line = String::new();
    if file.seek(SeekFrom::End(-1)).is_ok() {
        let mut last = [0u8; 1];
        file.read_exact(&mut last).map_err(|e| e.to_string())?;
        if last[0] != b'\n' {
            line.push('\n');
        }
    }
    line.push_str(&host_field(host, port));
    line.push(' ');
    line.push_str(openssh.trim_end());
    line.push('\n');
    file.write_all(line.as_bytes()).map_err(|e| e.to_string())?;
    file.sync_data().map_err(|e| e.to_string())
}

/// What [`forget`] did, by line number of the file before the change.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Forgotten {
    /// Lines removed (they were for this host only).
    pub removed: Vec<usize>,
    /// Lines that also name other hosts: only this host's name was taken out of the list.
    pub narrowed: Vec<usize>,
    /// Lines that still apply to the host and were left as they are, with the reason.
    pub kept: Vec<Note>,
}

impl Forgotten {
    pub fn changed(&self) -> bool {
        !self.removed.is_empty() || !self.narrowed.is_empty()
    }
}

/// Forgets the recorded keys of `host`:`port` in `path`: lines for that host alone are
/// removed, the host's name is taken out of lists that name other hosts too, and every other
/// byte of the file stays as it was. `@revoked` lines and lines that match only through a
/// wildcard or negation are left alone (reported in `kept`). The new file replaces the old
/// one atomically (a temporary file beside it, fsync, rename), with mode 0600.
pub(crate) fn forget(path: &Path, host: &str, port: u16) -> Result<Forgotten, String> {
    let _guard = FILE_LOCK.lock().unwrap_or_else(|p| p.into_inner());
    let Some(bytes) = read(path)? else {
        return Ok(Forgotten::default());
    };
    let file = parse(&bytes);
    let name = lookup_name(host, port);
    let mut done = Forgotten::default();
    let mut lines = file.lines.clone();
    for e in &file.entries {
        if !e.hosts.matches(&name) {
            continue;
        }
        let i = e.line - 1;
        match (e.marker, &e.hosts) {
            (Marker::Revoked, _) => {
                done.kept.push(Note { line: e.line, message: "@revoked line kept: a revoked key stays refused".into() })
            }
            (Marker::CertAuthority, _) => {}
            (Marker::None, Hosts::Hashed { .. }) => {
                lines[i].clear();
                done.removed.push(e.line);
            }
            (Marker::None, Hosts::Patterns(patterns)) => {
                let (mine, others): (Vec<&String>, Vec<&String>) =
                    patterns.iter().partition(|p| p.eq_ignore_ascii_case(&name));
                if mine.is_empty() {
                    done.kept.push(Note {
                        line: e.line,
                        message: format!(
                            "matches through the pattern `{}`, which may stand for other hosts too: edit it by hand",
                            patterns.join(",")
                        ),
                    });
                } else if others.is_empty() {
                    lines[i].clear();
                    done.removed.push(e.line);
                } else {
                    let others: Vec<&str> = others.iter().map(|s| s.as_str()).collect();
                    let mut l = file.lines[i][..e.hosts_at.start].to_vec();
                    l.extend_from_slice(others.join(",").as_bytes());
                    l.extend_from_slice(&file.lines[i][e.hosts_at.end..]);
                    lines[i] = l;
                    let narrowed = Hosts::Patterns(others.iter().map(|s| s.to_string()).collect());
                    done.narrowed.push(e.line);
                    if narrowed.matches(&name) {
                        done.kept.push(Note {
                            line: e.line,
                            message: format!(
                                "still matches through the pattern `{}`: edit it by hand",
                                others.join(",")
                            ),
                        });
                    }
                }
            }
        }
    }
    if !done.changed() {
        return Ok(done);
    }
    let out: Vec<u8> = lines.concat();
    crate::state::write_private(path, &out, 0o600).map_err(|e| e.to_string())?;
    Ok(done)
}

#[cfg(test)]
mod tests {
    use super::*;

    const K1: &str = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIJdD7y3aLq454yWBdwLWbieU1ebz9/cu7/QEXn9OIeZJ";
    const K2: &str = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIA6rWI3G2sz07DnfFlrouTcysQlj2P+jpNSOEWD9OJ3X";

    fn key(s: &str) -> PublicKey {
        PublicKey::from_openssh(s).unwrap()
    }

    fn file_with(text: &[u8]) -> (tempfile::TempDir, std::path::PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("known_hosts");
        std::fs::write(&path, text).unwrap();
        (dir, path)
    }

    #[test]
    fn learn_then_check_and_changed_line_counts_comments() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/known_hosts");
        ensure_file(&path).unwrap();
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        std::fs::write(&path, format!("# comment\n\nother.example {K2}")).unwrap();
        assert_eq!(check(&path, "10.0.0.1", 2222, &key(K1)).unwrap(), Verdict::Unknown);
        learn(&path, "10.0.0.1", 2222, &key(K1)).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.ends_with(&format!("\n[10.0.0.1]:2222 {K1}\n")), "{text}");
        assert_eq!(check(&path, "10.0.0.1", 2222, &key(K1)).unwrap(), Verdict::Known);
        assert_eq!(check(&path, "10.0.0.1", 22, &key(K1)).unwrap(), Verdict::Unknown);
        assert_eq!(check(&path, "10.0.0.1", 2222, &key(K2)).unwrap(), Verdict::Changed { line: 4 });
    }

    #[test]
    fn tabs_and_runs_of_blanks_separate_fields() {
        let (_d, path) = file_with(
            format!(
                "10.0.0.1\tssh-ed25519\t{}\n  10.0.0.2 \t ssh-ed25519   {} comment\twith tab\n",
                &K1[12..],
                &K2[12..]
            )
            .as_bytes(),
        );
        assert_eq!(check(&path, "10.0.0.1", 22, &key(K1)).unwrap(), Verdict::Known);
        assert_eq!(check(&path, "10.0.0.2", 22, &key(K2)).unwrap(), Verdict::Known);
        // a different key is refused, not learned beside the tab-separated line
        assert_eq!(check(&path, "10.0.0.1", 22, &key(K2)).unwrap(), Verdict::Changed { line: 1 });
        assert!(notes(&path).unwrap().is_empty());
    }

    #[test]
    fn hashed_entries_match_by_hmac_sha1() {
        // `ssh-keygen -H` output for "example.com" (the salt and hash are from OpenSSH)
        let (_d, path) = file_with(
            b"|1|O33ESRMWPVkMYIwJ1Uw+n877jTo=|nuuC5vEqXlEZ/8BXQR7m619W6Ak= ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAILIG2T/B0l0gaqj3puu510tu9N1OkQ4znY3LYuEm5zCF\n",
        );
        let k = key("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAILIG2T/B0l0gaqj3puu510tu9N1OkQ4znY3LYuEm5zCF");
        assert_eq!(check(&path, "example.com", 22, &k).unwrap(), Verdict::Known);
        assert_eq!(check(&path, "EXAMPLE.com", 22, &k).unwrap(), Verdict::Known);
        assert_eq!(check(&path, "example.com", 22, &key(K1)).unwrap(), Verdict::Changed { line: 1 });
        assert_eq!(check(&path, "example.org", 22, &k).unwrap(), Verdict::Unknown);
    }

    /// A hashed line written by the real ssh-keygen, for a non-standard port.
    #[test]
    fn hashed_entries_from_ssh_keygen_with_a_port() {
        let (_d, path) = file_with(format!("[10.0.0.9]:2222 {K1}\n").as_bytes());
        let st = std::process::Command::new("ssh-keygen").args(["-q", "-H", "-f"]).arg(&path).output();
        match st {
            Ok(o) if o.status.success() => {}
            other => {
                eprintln!("SKIPPED: ssh-keygen -H not available: {other:?}");
                return;
            }
        }
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.starts_with("|1|"), "{text}");
        assert_eq!(check(&path, "10.0.0.9", 2222, &key(K1)).unwrap(), Verdict::Known);
        assert_eq!(check(&path, "10.0.0.9", 22, &key(K1)).unwrap(), Verdict::Unknown);
        assert_eq!(check(&path, "10.0.0.9", 2222, &key(K2)).unwrap(), Verdict::Changed { line: 1 });
    }

    #[test]
    fn revoked_keys_are_refused_with_their_line() {
        let (_d, path) = file_with(format!("# revoked\n10.0.0.1,10.0.0.2 {K1}\n@revoked * {K1}\n").as_bytes());
        assert_eq!(check(&path, "10.0.0.1", 22, &key(K1)).unwrap(), Verdict::Revoked { line: 3 });
        // another key for the host is a change (line 2), not a revocation
        assert_eq!(check(&path, "10.0.0.2", 22, &key(K2)).unwrap(), Verdict::Changed { line: 2 });
        // a revoked key for a host with nothing recorded is still refused
        assert_eq!(check(&path, "10.9.9.9", 22, &key(K1)).unwrap(), Verdict::Revoked { line: 3 });
        // a revocation scoped to other hosts does not apply
        let (_d2, path2) = file_with(format!("@revoked 10.0.0.7 {K1}\n").as_bytes());
        assert_eq!(check(&path2, "10.0.0.1", 22, &key(K1)).unwrap(), Verdict::Unknown);
    }

    #[test]
    fn cert_authority_lines_are_read_and_not_used() {
        let (_d, path) = file_with(format!("@cert-authority *.example.org {K2}\n").as_bytes());
        assert_eq!(check(&path, "h.example.org", 22, &key(K1)).unwrap(), Verdict::Unknown);
        assert_eq!(check(&path, "h.example.org", 22, &key(K2)).unwrap(), Verdict::Unknown);
        let n = notes(&path).unwrap();
        assert_eq!(n.len(), 1);
        assert_eq!(n[0].line, 1);
        assert!(n[0].message.contains("@cert-authority line not used"), "{n:?}");
    }

    #[test]
    fn bracketed_ports_comma_lists_wildcards_and_negation() {
        let (_d, path) = file_with(
            format!("web,[10.0.0.1]:2222,10.0.0.3 {K1}\n10.0.1.* {K1}\n10.0.2.*,!10.0.2.5 {K1}\nh?.lab {K1}\n")
                .as_bytes(),
        );
        for (host, port, want) in [
            ("10.0.0.1", 2222, Verdict::Known),
            ("10.0.0.1", 22, Verdict::Unknown),
            ("10.0.0.3", 22, Verdict::Known),
            ("WEB", 22, Verdict::Known),
            ("10.0.1.77", 22, Verdict::Known),
            ("10.0.2.4", 22, Verdict::Known),
            ("10.0.2.5", 22, Verdict::Unknown),
            ("h1.lab", 22, Verdict::Known),
            ("h12.lab", 22, Verdict::Unknown),
        ] {
            assert_eq!(check(&path, host, port, &key(K1)).unwrap(), want, "{host}:{port}");
        }
    }

    #[test]
    fn malformed_lines_are_named_and_skipped_not_fatal() {
        let mut text = format!("10.0.0.1 {K1}\n").into_bytes();
        text.extend_from_slice(b"10.0.0.2 ssh-ed25519\n"); // 2: no key
        text.extend_from_slice(b"\xff\xfe ssh-ed25519 AAAA\n"); // 3: not UTF-8
        text.extend_from_slice(b"10.0.0.4 ssh-ed25519 !!!notbase64\n"); // 4: bad key
        text.extend_from_slice(b"@trusted 10.0.0.5 ssh-ed25519 AAAA\n"); // 5: unknown marker
        text.extend_from_slice(format!("10.0.0.6 {K2} caf").as_bytes()); // 6: latin-1 comment
        text.extend_from_slice(b"\xe9\n");
        text.extend_from_slice(b"|1|bad|hash ssh-ed25519 AAAA\n"); // 7: bad hash
        let (_d, path) = file_with(&text);
        let n = notes(&path).unwrap();
        let lines: Vec<usize> = n.iter().map(|n| n.line).collect();
        assert_eq!(lines, [2, 3, 4, 5, 7], "{n:?}");
        assert!(n[0].message.contains("key is missing"), "{n:?}");
        assert!(n[1].message.contains("not valid UTF-8"), "{n:?}");
        assert!(n[2].message.contains("does not parse"), "{n:?}");
        assert!(n[3].message.contains("unknown marker `@trusted`"), "{n:?}");
        assert!(n[4].message.contains("|1|salt|hash") || n[4].message.contains("decode"), "{n:?}");
        // every readable line still counts
        assert_eq!(check(&path, "10.0.0.1", 22, &key(K1)).unwrap(), Verdict::Known);
        assert_eq!(check(&path, "10.0.0.6", 22, &key(K2)).unwrap(), Verdict::Known);
        assert_eq!(check(&path, "10.0.0.99", 22, &key(K1)).unwrap(), Verdict::Unknown);
        // a host that only an unreadable line mentions is not learned beside it
        assert_eq!(
            check(&path, "10.0.0.4", 22, &key(K1)).unwrap(),
            Verdict::Unreadable { line: 4, reason: n[2].message.trim_end_matches("; line skipped").to_string() }
        );
    }

    #[test]
    fn forget_removes_only_this_hosts_entries_byte_for_byte() {
        let mut text = b"# keep me\t\n".to_vec();
        text.extend_from_slice(format!("10.0.0.1 {K1}\n").as_bytes()); // 2: removed
        text.extend_from_slice(format!("web,10.0.0.1\t{K2} c\n").as_bytes()); // 3: narrowed
        text.extend_from_slice(b"\xff odd line\n"); // 4: kept as is
        text.extend_from_slice(format!("10.0.0.*  {K2}\n").as_bytes()); // 5: wildcard, kept
        text.extend_from_slice(format!("@revoked 10.0.0.1 {K2}\n").as_bytes()); // 6: kept
        text.extend_from_slice(format!("[10.0.0.1]:2222 {K1}\n").as_bytes()); // 7: other port
        text.extend_from_slice(format!("10.0.0.2 {K1}").as_bytes()); // 8: no newline at end
        let (_d, path) = file_with(&text);
        let done = forget(&path, "10.0.0.1", 22).unwrap();
        assert_eq!(done.removed, [2]);
        assert_eq!(done.narrowed, [3]);
        let kept: Vec<usize> = done.kept.iter().map(|n| n.line).collect();
        assert_eq!(kept, [5, 6], "{done:?}");
        let mut want = b"# keep me\t\n".to_vec();
        want.extend_from_slice(format!("web\t{K2} c\n").as_bytes());
        want.extend_from_slice(b"\xff odd line\n");
        want.extend_from_slice(format!("10.0.0.*  {K2}\n").as_bytes());
        want.extend_from_slice(format!("@revoked 10.0.0.1 {K2}\n").as_bytes());
        want.extend_from_slice(format!("[10.0.0.1]:2222 {K1}\n").as_bytes());
        want.extend_from_slice(format!("10.0.0.2 {K1}").as_bytes());
        assert_eq!(std::fs::read(&path).unwrap(), want);
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        // the port form, then nothing left to forget: the file is not rewritten
        assert_eq!(forget(&path, "10.0.0.1", 2222).unwrap().removed, [6]);
        let again = forget(&path, "10.0.0.1", 2222).unwrap();
        assert!(!again.changed());
        // the kept lines still speak for 10.0.0.1: the wildcard (now line 4) records K2, and
        // line 5 revokes K2
        assert_eq!(check(&path, "10.0.0.1", 22, &key(K1)).unwrap(), Verdict::Changed { line: 4 });
        assert_eq!(check(&path, "10.0.0.1", 22, &key(K2)).unwrap(), Verdict::Revoked { line: 5 });
    }

    #[test]
    fn forget_a_hashed_entry() {
        let (_d, path) = file_with(
            format!("|1|O33ESRMWPVkMYIwJ1Uw+n877jTo=|nuuC5vEqXlEZ/8BXQR7m619W6Ak= ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAILIG2T/B0l0gaqj3puu510tu9N1OkQ4znY3LYuEm5zCF\nexample.org {K1}\n").as_bytes(),
        );
        let done = forget(&path, "example.com", 22).unwrap();
        assert_eq!(done.removed, [1]);
        assert_eq!(std::fs::read_to_string(&path).unwrap(), format!("example.org {K1}\n"));
    }

    #[test]
    fn forget_without_a_file_changes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("known_hosts");
        assert!(!forget(&path, "10.0.0.1", 22).unwrap().changed());
        assert!(!path.exists());
    }
}
