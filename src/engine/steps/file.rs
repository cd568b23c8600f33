//! File steps: the content goes through a candidate beside the live file, the role's
//! validator, a backup of the live file and an atomic move; a file whose content is right but
//! whose mode or owner is not only gets chmod/chown.

use sha2::{Digest, Sha256};

use super::{Action, Decision, Detail};
use crate::engine::facts::{PathFact, sh_quote};
use crate::engine::ledger;
use crate::playbook::catalog::hex;
use crate::playbook::step::Source;

/// Where replaced files are kept, the last [`KEEP`] per file.
pub const BACKUPS: &str = "/var/backups/groundwork";
pub const KEEP: usize = 5;
/// An uploaded file (a binary, an image archive of hundreds of MB) keeps one earlier version.
pub const KEEP_UPLOADED: usize = 1;
/// The exit status of the write script when the validator refuses the candidate.
pub const REFUSED: u32 = 97;

/// A file step, rendered.
#[derive(Debug, Clone)]
pub struct File {
    pub dest: String,
    pub source: Source,
    /// The validator; `{tmp}` is the candidate.
    pub validate: Option<String>,
    pub notify: Vec<String>,
    pub mode: u32,
    /// `user:group`.
    pub owner: String,
    pub secret: bool,
}

/// New content for a file, and how it gets there.
#[derive(Clone, PartialEq, Eq)]
pub struct Write {
    pub dest: String,
    /// The candidate beside `dest`; unique per run, so two runs never share one.
    pub candidate: String,
    /// The backup names of `dest`, without the timestamp the host appends.
    pub backup: String,
    pub mode: u32,
    pub owner: String,
    pub validate: Option<String>,
    pub content: Vec<u8>,
    /// Instead of `content`: a local file streamed as it is, then checked on the host.
    pub local: Option<Local>,
    pub secret: bool,
}

/// A file on this machine, with what its upload is checked against.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Local {
    pub path: String,
    pub size: u64,
    pub sha256: String,
}

/// The exit status of the write script when an upload arrived damaged.
pub const DAMAGED: u32 = 98;

// The content stays out of debug output (it may be a secret file).
impl std::fmt::Debug for Write {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Write")
            .field("dest", &self.dest)
            .field("candidate", &self.candidate)
            .field("backup", &self.backup)
            .field("mode", &format_args!("{:o}", self.mode))
            .field("owner", &self.owner)
            .field("validate", &self.validate)
            .field("content", &format_args!("<{} bytes>", self.content.len()))
            .field("local", &self.local)
            .field("secret", &self.secret)
            .finish()
    }
}

/// Decide a file step from its new `content` and the state of its path. `run` names the
/// candidate file.
pub fn decide(f: &File, content: &[u8], current: &PathFact, run: &str) -> Result<Decision, String> {
    decide_new(f, New::Content(content), current, run)
}

/// Decide an upload (a file step whose source is a local file) from the local file's size
/// and sha256: nothing is sent when the host's file has the same sha256.
pub fn decide_upload(f: &File, local: &Local, current: &PathFact, run: &str) -> Result<Decision, String> {
    decide_new(f, New::Local(local), current, run)
}

enum New<'a> {
    Content(&'a [u8]),
    Local(&'a Local),
}

fn decide_new(f: &File, new: New<'_>, current: &PathFact, run: &str) -> Result<Decision, String> {
    let sha = match &new {
        New::Content(content) => hex(&Sha256::digest(content)),
        New::Local(l) => l.sha256.clone(),
    };
    let (content_differs, meta_differs) = match current {
        PathFact::File(c) => (c.sha256 != sha, c.mode != f.mode || c.owner != f.owner),
        PathFact::Absent => (true, false),
        PathFact::Other | PathFact::Dir { .. } => {
            return Err(format!("{} exists but is not a regular file; groundwork will not replace it", f.dest));
        }
    };
    if !content_differs && !meta_differs {
        return Ok(Decision::converged());
    }
    let (action, detail) = if content_differs && let New::Local(l) = &new {
        let detail = Detail::Text(format!(
            "{}: upload {} ({}, sha256 {})",
            f.dest,
            l.path,
            size(l.size),
            &l.sha256[..l.sha256.len().min(16)]
        ));
        (Action::Write(write(f, run, Vec::new(), Some((*l).clone()))), detail)
    } else if content_differs && let New::Content(content) = new {
        let detail = if f.secret {
            Detail::Text(format!("{}: content changed (secret file: not shown)", f.dest))
        } else {
            Detail::Diff {
                path: f.dest.clone(),
                new: String::from_utf8_lossy(content).into_owned(),
                live: matches!(current, PathFact::File(_)),
            }
        };
        (Action::Write(write(f, run, content.to_vec(), None)), detail)
    } else {
        let detail = Detail::Text(format!("{}: mode {:o}, owner {}", f.dest, f.mode, f.owner));
        (Action::SetMeta { path: f.dest.clone(), mode: f.mode, owner: f.owner.clone() }, detail)
    };
    Ok(Decision { actions: vec![action], detail: Some(detail), notify: f.notify.clone(), settles: None })
}

/// The write of new content (or of a local file) for `f`.
fn write(f: &File, run: &str, content: Vec<u8>, local: Option<Local>) -> Write {
    Write {
        dest: f.dest.clone(),
        candidate: candidate(&f.dest, run),
        backup: backup_name(&f.dest),
        mode: f.mode,
        owner: f.owner.clone(),
        validate: f.validate.clone(),
        content,
        local,
        secret: f.secret,
    }
}

/// The directory a path is in (`/` for a file at the root).
fn parent(path: &str) -> &str {
    path.rsplit_once('/').map_or("/", |(d, _)| if d.is_empty() { "/" } else { d })
}

/// The candidate for `dest` in run `run`: a hidden file beside it (same file system, so the
/// move is atomic).
pub fn candidate(dest: &str, run: &str) -> String {
    let base = dest.rsplit('/').next().unwrap_or("file");
    format!("{}/.{base}.groundwork-{run}", parent(dest).trim_end_matches('/'))
}

/// The backup name of `path`: one file name per path (`%` and `/` escaped, so `/etc/a_b` and
/// `/etc/a/b` never share backups), under [`BACKUPS`].
pub fn backup_name(path: &str) -> String {
    format!("{BACKUPS}/{}", path.replace('%', "%25").replace('/', "%2F"))
}

/// The timestamp the host appends to a backup name, as a glob: exactly these, so pruning the
/// backups of `/etc/hosts` never matches those of `/etc/hosts.allow`.
const STAMP_GLOB: &str = "[0-9][0-9][0-9][0-9][0-9][0-9][0-9][0-9]T[0-9][0-9][0-9][0-9][0-9][0-9]";

/// The script that puts `w.content` (its stdin) in place. Exit [`REFUSED`]: the validator
/// refused the candidate, which is removed; the live file is unchanged.
pub fn write_script(w: &Write) -> String {
    let (user, group) = w.owner.split_once(':').unwrap_or((&w.owner, &w.owner));
    let mut s = format!(
        "set -e\numask 077\ndest={d}\ntmp={t}\n{parents}mkdir -p {dir}\ncat > \"$tmp\"\nchmod {mode:o} \"$tmp\"\nchown {u}:{g} \"$tmp\"\n",
        parents = ledger::record_parents(&w.dest),
        d = sh_quote(&w.dest),
        t = sh_quote(&w.candidate),
        dir = sh_quote(parent(&w.dest)),
        mode = w.mode,
        u = sh_quote(user),
        g = sh_quote(group),
    );
    if let Some(l) = &w.local {
        s.push_str(&format!(
            "if [ \"$(sha256sum < \"$tmp\" | cut -d' ' -f1)\" != {sha} ]; then rm -f \"$tmp\"; exit {DAMAGED}; fi\n",
            sha = sh_quote(&l.sha256)
        ));
    }
    if let Some(v) = &w.validate {
        let cmd = v.replace("{tmp}", &sh_quote(&w.candidate));
        s.push_str(&format!(
            "if ! out=$( {cmd} 2>&1 ); then rm -f \"$tmp\"; printf '%s\\n' \"$out\" >&2; exit {REFUSED}; fi\n"
        ));
    }
    // The backups sort by their timestamp in the name: the glob lists them oldest first. An
    // upload's backup is a hard link where it can be (the move below gives dest a new inode,
    // so the link keeps the old file without copying hundreds of MB), a copy elsewhere.
    let (keep, save) = if w.local.is_some() {
        (
            KEEP_UPLOADED,
            "stamp=$(date +%Y%m%dT%H%M%S)\n  ln -f \"$dest\" \"$backup.$stamp\" 2>/dev/null || cp -a \"$dest\" \"$backup.$stamp\"",
        )
    } else {
        (KEEP, "cp -a \"$dest\" \"$backup.$(date +%Y%m%dT%H%M%S)\"")
    };
    // The ledger (engine::ledger) first: the file as groundwork found it, or that it made it.
    s.push_str(&format!(
        "if [ -e \"$dest\" ]; then\n  \
         {orig}  \
         backup={b}\n  \
         mkdir -p {dir}\n  \
         {save}\n  \
         set -- \"$backup\".{STAMP_GLOB}\n  \
         while [ $# -gt {keep} ]; do rm -f -- \"$1\"; shift; done\n\
         else\n  {created}\
         fi\nmv -f \"$tmp\" \"$dest\"\n",
        orig = ledger::record_original(&w.dest, &w.backup, w.local.is_some()),
        created = ledger::record_created_at(&w.backup),
        b = sh_quote(&w.backup),
        dir = sh_quote(parent(&w.backup)),
    ));
    let sha = match &w.local {
        Some(l) => l.sha256.clone(),
        None => hex(&Sha256::digest(&w.content)),
    };
    s.push_str(&ledger::record_wrote(&w.dest, &w.backup, &sha, w.mode, &w.owner, w.local.is_none() && !w.secret));
    s
}

/// chmod and chown of a file whose content is right: what people are shown.
pub fn meta_command(path: &str, mode: u32, owner: &str) -> String {
    let (user, group) = owner.split_once(':').unwrap_or((owner, owner));
    format!("chmod {mode:o} {d} && chown {}:{} {d}", sh_quote(user), sh_quote(group), d = sh_quote(path))
}

/// [`meta_command`] with the ledger: the file as it was before, and what it is now.
pub fn meta_script(path: &str, mode: u32, owner: &str) -> String {
    let b = sh_quote(&backup_name(path));
    format!(
        "set -e\n{orig}{cmd}\nprintf '%s %s %s\\n' \"$(sha256sum < {d} | cut -d' ' -f1)\" {mode:o} {o} > {b}{wrote}\n",
        orig = ledger::record_original(path, &backup_name(path), false),
        cmd = meta_command(path, mode, owner),
        d = sh_quote(path),
        o = sh_quote(owner),
        wrote = ledger::WROTE,
    )
}

/// A size for people.
pub fn size(bytes: u64) -> String {
    match bytes {
        b if b >= 1 << 20 => format!("{:.1} MiB", b as f64 / (1u64 << 20) as f64),
        b if b >= 1 << 10 => format!("{:.1} KiB", b as f64 / 1024.0),
        b => format!("{b} bytes"),
    }
}

/// A write for people: where, mode and owner, and whether a validator checks it.
pub fn show(w: &Write) -> String {
    let mut s = match &w.local {
        Some(l) => format!("upload {} ({}) to {} (mode {:o}, {}", l.path, size(l.size), w.dest, w.mode, w.owner),
        None => format!("write {} (mode {:o}, {}", w.dest, w.mode, w.owner),
    };
    if let Some(v) = &w.validate {
        s.push_str(&format!(", checked by `{v}`"));
    }
    if w.secret {
        s.push_str(", secret: content not shown");
    }
    s.push(')');
    s
}

/// How a write ended.
pub fn verdict(w: &Write, status: u32, stderr: &str) -> Result<(), String> {
    if status == REFUSED {
        let v = w.validate.as_deref().unwrap_or_default();
        let mut msg = format!("the validator `{v}` refused the new {}; the live file is unchanged", w.dest);
        for l in stderr.lines().take(15) {
            msg.push_str(&format!("\n  {l}"));
        }
        return Err(msg);
    }
    if status == DAMAGED
        && let Some(l) = &w.local
    {
        return Err(format!(
            "the upload of {} to {} arrived damaged (its sha256 is not {}); the live file is unchanged",
            l.path, w.dest, l.sha256
        ));
    }
    if status != 0 {
        return Err(format!("writing {} failed (exit {status}): {}", w.dest, stderr.trim()));
    }
    Ok(())
}

/// The unified diff shown for a changed file.
pub fn diff(path: &str, old: &str, new: &str) -> String {
    let diff = similar::TextDiff::from_lines(old, new)
        .unified_diff()
        .context_radius(2)
        .header(&format!("{path} (live)"), &format!("{path} (groundwork)"))
        .to_string();
    diff.trim_end().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backup_names_are_one_per_path() {
        assert_eq!(backup_name("/etc/hosts"), "/var/backups/groundwork/%2Fetc%2Fhosts");
        // The old flat name (`/` -> `_`) gave these two the same backups.
        assert_ne!(backup_name("/etc/a_b"), backup_name("/etc/a/b"));
        assert_ne!(backup_name("/etc/a%2Fb"), backup_name("/etc/a/b"));
        assert_eq!(backup_name("/etc/a%2Fb"), "/var/backups/groundwork/%2Fetc%2Fa%252Fb");
    }

    #[test]
    fn a_candidate_sits_beside_its_file() {
        assert_eq!(candidate("/etc/hosts", "R1"), "/etc/.hosts.groundwork-R1");
        assert_eq!(candidate("/top", "R1"), "/.top.groundwork-R1");
    }
}
