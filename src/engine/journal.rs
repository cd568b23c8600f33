//! The run journal (`journal.jsonl` in the state directory): one JSON line per finished step
//! and per pending service notification, appended as it happens. After a failure, a cut
//! connection or Ctrl-C, the next run reads it to skip what was done and to restart services
//! whose configuration changed before the run stopped.
//!
//! What was done is tied to the machine, not its name: every run records each host's identity
//! (SSH host key and machine-id), and a host rebuilt under the same name and address starts
//! from scratch. Damaged lines (a crash mid-write, a stray byte) are skipped one by one, never
//! the rest of the file; entries that a resume depends on reach the disk (fsync) before the
//! change they announce. Opening the journal for a run compacts it to what can still matter.

use std::collections::{HashMap, HashSet};
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::Path;
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "event", rename_all = "kebab-case")]
pub enum Entry {
    Start {
        run: String,
        inputs: String,
        hosts: Vec<String>,
        time: String,
    },
    /// The machine the host name reached in this run.
    Host {
        run: String,
        host: String,
        identity: String,
    },
    /// `status`: ok, changed or failed; `done` for a step an earlier run finished and this
    /// one skipped (so a resume of a resume still knows it).
    Step {
        run: String,
        host: String,
        role: String,
        step: String,
        status: String,
    },
    /// A file a service watches changed; the service must restart even if the run dies now.
    Notify {
        run: String,
        host: String,
        service: String,
    },
    /// The notification was carried out.
    Handled {
        run: String,
        host: String,
        service: String,
    },
    End {
        run: String,
        ok: bool,
        time: String,
    },
}

impl Entry {
    fn run(&self) -> &str {
        match self {
            Entry::Start { run, .. }
            | Entry::Host { run, .. }
            | Entry::Step { run, .. }
            | Entry::Notify { run, .. }
            | Entry::Handled { run, .. }
            | Entry::End { run, .. } => run,
        }
    }

    /// Entries a resume depends on are synced to disk before the run goes on.
    fn must_sync(&self) -> bool {
        match self {
            Entry::Step { status, .. } => status != "ok" && status != "done",
            _ => true,
        }
    }
}

/// What an unfinished earlier run left.
#[derive(Debug, Clone, Default)]
pub struct Resume {
    pub run: String,
    /// The earlier run had the same answers and playbooks: its finished steps can be skipped.
    pub same_inputs: bool,
    /// (host, role, step) finished in that run.
    pub done: HashSet<(String, String, String)>,
    /// The identity each host had in that run.
    pub identities: HashMap<String, String>,
    /// Services notified but not yet restarted, by host, with the identity of the machine the
    /// notification was for (from every earlier run).
    pub pending: HashMap<String, HashSet<(String, String)>>,
    /// Lines that could not be read (damaged); they were skipped.
    pub damaged: usize,
}

impl Resume {
    /// Steps of `host` that can be skipped: only when it is still the same machine.
    pub fn done_for(&self, host: &str, identity: &str) -> bool {
        self.same_inputs && self.identities.get(host).is_some_and(|i| i == identity)
    }

    /// Services to restart on `host` for this machine; notifications for a machine that was
    /// since replaced are dropped.
    pub fn pending_for(&self, host: &str, identity: &str) -> HashSet<String> {
        self.pending
            .get(host)
            .map(|s| s.iter().filter(|(_, id)| id == identity).map(|(svc, _)| svc.clone()).collect())
            .unwrap_or_default()
    }
}

pub struct Journal {
    file: Mutex<File>,
}

/// Every readable entry; damaged lines are counted and skipped (a line is independent of the
/// next, so one bad byte or a cut-off last line cannot hide what follows it).
fn read(path: &Path) -> (Vec<Entry>, usize) {
    let Ok(bytes) = std::fs::read(path) else {
        return (Vec::new(), 0);
    };
    let mut damaged = 0;
    let entries = bytes
        .split(|b| *b == b'\n')
        .filter(|l| !l.iter().all(u8::is_ascii_whitespace))
        .filter_map(|l| match serde_json::from_slice(l) {
            Ok(e) => Some(e),
            Err(_) => {
                damaged += 1;
                None
            }
        })
        .collect();
    (entries, damaged)
}

/// The entries of the last run that did not end well, and of every run with a notification
/// that was not handled yet: what a resume can still need.
fn still_needed(entries: &[Entry]) -> Vec<Entry> {
    let last_start = entries.iter().rposition(|e| matches!(e, Entry::Start { .. }));
    let mut keep_runs: HashSet<&str> = HashSet::new();
    if let Some(i) = last_start {
        let run = entries[i].run();
        let ended_ok = entries[i..].iter().any(|e| matches!(e, Entry::End { run: r, ok: true, .. } if r == run));
        if !ended_ok {
            keep_runs.insert(run);
        }
    }
    // Notifications not handled later (by this run or another), found walking backwards.
    let mut handled_later: HashSet<(&str, &str)> = HashSet::new();
    let mut notify_runs: HashSet<&str> = HashSet::new();
    for e in entries.iter().rev() {
        match e {
            Entry::Handled { host, service, .. } => {
                handled_later.insert((host, service));
            }
            Entry::Notify { run, host, service } if !handled_later.contains(&(host.as_str(), service.as_str())) => {
                notify_runs.insert(run);
            }
            _ => {}
        }
    }
    let mut kept: Vec<Entry> = Vec::new();
    for e in entries {
        let run = e.run();
        let keep = keep_runs.contains(run)
            || (notify_runs.contains(run)
                && matches!(e, Entry::Host { .. } | Entry::Notify { .. } | Entry::Handled { .. }));
        if keep {
            kept.push(e.clone());
        }
    }
    kept
}

impl Journal {
    /// Open for a run: compact the file to what can still matter (atomically), then append.
    pub fn open(path: &Path) -> std::io::Result<Journal> {
        use std::os::unix::fs::OpenOptionsExt;
        if path.exists() {
            let (entries, _) = read(path);
            let mut text = String::new();
            for e in still_needed(&entries) {
                text.push_str(&serde_json::to_string(&e).expect("journal entries serialize"));
                text.push('\n');
            }
            crate::state::write_private(path, text.as_bytes(), 0o600)?;
        }
        let file = OpenOptions::new().create(true).append(true).mode(0o600).open(path)?;
        Ok(Journal { file: Mutex::new(file) })
    }

    /// Append one entry as one whole line; entries a resume depends on are synced first.
    pub fn write(&self, e: &Entry) {
        let mut line = serde_json::to_string(e).expect("journal entries serialize");
        line.push('\n');
        let mut f = self.file.lock().unwrap_or_else(|p| p.into_inner());
        // A journal that cannot be written only costs a resume; the run goes on.
        let _ = f.write_all(line.as_bytes());
        if e.must_sync() {
            let _ = f.sync_data();
        }
    }

    /// Read the journal: the last run if it did not end well, and every pending notification.
    pub fn resume_point(path: &Path, inputs: &str) -> Option<Resume> {
        let (entries, damaged) = read(path);
        // (run, host) -> identity
        let ids: HashMap<(&str, &str), &str> = entries
            .iter()
            .filter_map(|e| match e {
                Entry::Host { run, host, identity } => Some(((run.as_str(), host.as_str()), identity.as_str())),
                _ => None,
            })
            .collect();
        let mut pending: HashMap<String, HashSet<(String, String)>> = HashMap::new();
        for e in &entries {
            match e {
                Entry::Notify { run, host, service } => {
                    let id = ids.get(&(run.as_str(), host.as_str())).copied().unwrap_or_default();
                    pending.entry(host.clone()).or_default().insert((service.clone(), id.to_string()));
                }
                Entry::Handled { host, service, .. } => {
                    if let Some(s) = pending.get_mut(host) {
                        s.retain(|(svc, _)| svc != service);
                    }
                }
                _ => {}
            }
        }
        pending.retain(|_, s| !s.is_empty());
        let Some(last_start) = entries.iter().rposition(|e| matches!(e, Entry::Start { .. })) else {
            // Only notifications survive (the journal was compacted after a good run).
            return (!pending.is_empty()).then(|| Resume { pending, damaged, ..Resume::default() });
        };
        let Entry::Start { run, inputs: was, .. } = &entries[last_start] else {
            return None;
        };
        let ended_ok =
            entries[last_start..].iter().any(|e| matches!(e, Entry::End { run: r, ok: true, .. } if r == run));
        if ended_ok && pending.is_empty() {
            return None;
        }
        let done = if ended_ok {
            HashSet::new()
        } else {
            entries[last_start..]
                .iter()
                .filter_map(|e| match e {
                    Entry::Step { run: r, host, role, step, status }
                        if r == run && matches!(status.as_str(), "ok" | "changed" | "done") =>
                    {
                        Some((host.clone(), role.clone(), step.clone()))
                    }
                    _ => None,
                })
                .collect()
        };
        let identities =
            ids.iter().filter(|((r, _), _)| *r == run).map(|((_, h), id)| (h.to_string(), id.to_string())).collect();
        Some(Resume { run: run.clone(), same_inputs: was == inputs && !ended_ok, done, identities, pending, damaged })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn step(run: &str, host: &str, s: &str) -> Entry {
        Entry::Step {
            run: run.into(),
            host: host.into(),
            role: "base".into(),
            step: s.into(),
            status: "changed".into(),
        }
    }
    fn start(run: &str) -> Entry {
        Entry::Start { run: run.into(), inputs: "abc".into(), hosts: vec!["ns1".into()], time: "t".into() }
    }
    fn host(run: &str, id: &str) -> Entry {
        Entry::Host { run: run.into(), host: "ns1".into(), identity: id.into() }
    }
    fn key(s: &str) -> (String, String, String) {
        ("ns1".into(), "base".into(), s.into())
    }

    #[test]
    fn an_unfinished_run_is_resumed_and_notifications_survive() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("journal.jsonl");
        let j = Journal::open(&path).unwrap();
        j.write(&start("r1"));
        j.write(&host("r1", "m1"));
        j.write(&step("r1", "ns1", "hosts file"));
        j.write(&Entry::End { run: "r1".into(), ok: true, time: "t".into() });
        assert!(Journal::resume_point(&path, "abc").is_none(), "a finished run leaves nothing");

        j.write(&start("r2"));
        j.write(&host("r2", "m1"));
        j.write(&step("r2", "ns1", "hosts file"));
        j.write(&Entry::Notify { run: "r2".into(), host: "ns1".into(), service: "ssh".into() });
        // cut here: no Handled, no End
        let r = Journal::resume_point(&path, "abc").unwrap();
        assert_eq!(r.run, "r2");
        assert!(r.same_inputs && r.done_for("ns1", "m1"));
        assert!(r.done.contains(&key("hosts file")));
        assert!(r.pending_for("ns1", "m1").contains("ssh"));
        assert!(!Journal::resume_point(&path, "changed").unwrap().same_inputs);

        j.write(&start("r3"));
        j.write(&Entry::Handled { run: "r3".into(), host: "ns1".into(), service: "ssh".into() });
        j.write(&Entry::End { run: "r3".into(), ok: true, time: "t".into() });
        assert!(Journal::resume_point(&path, "abc").is_none());
    }

    #[test]
    fn a_rebuilt_host_is_not_skipped_and_gets_no_stale_restarts() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("journal.jsonl");
        let j = Journal::open(&path).unwrap();
        j.write(&start("r1"));
        j.write(&host("r1", "old-machine"));
        j.write(&step("r1", "ns1", "hosts file"));
        j.write(&Entry::Notify { run: "r1".into(), host: "ns1".into(), service: "ssh".into() });
        let r = Journal::resume_point(&path, "abc").unwrap();
        assert!(r.done_for("ns1", "old-machine"));
        assert!(!r.done_for("ns1", "new-machine"), "same name, another machine: check every step again");
        assert!(r.pending_for("ns1", "new-machine").is_empty());
        assert!(!r.done_for("other", "old-machine"), "a host the run never reached");
    }

    #[test]
    fn damaged_lines_do_not_hide_what_follows() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("journal.jsonl");
        let line = |e: &Entry| format!("{}\n", serde_json::to_string(e).unwrap()).into_bytes();
        let mut bytes = Vec::new();
        bytes.extend(line(&start("r1")));
        bytes.extend(line(&host("r1", "m1")));
        bytes.extend(b"{\"event\":\"step\",\"run\":\"r1\",\xff\xfe broken\n");
        bytes.extend(line(&Entry::End { run: "r1".into(), ok: true, time: "t".into() }));
        std::fs::write(&path, &bytes).unwrap();
        assert!(
            Journal::resume_point(&path, "abc").is_none(),
            "the run ended well after the damaged line: nothing to resume"
        );

        // A crash cut the last line; the next run's entries must not be glued to it.
        let mut cut = line(&start("r2"));
        cut.extend(br#"{"event":"step","run":"r2","ho"#);
        std::fs::write(&path, &cut).unwrap();
        let r = Journal::resume_point(&path, "abc").unwrap();
        assert_eq!((r.run.as_str(), r.damaged), ("r2", 1));
        let j = Journal::open(&path).unwrap();
        j.write(&start("r3"));
        j.write(&host("r3", "m1"));
        j.write(&step("r3", "ns1", "sshd"));
        let r = Journal::resume_point(&path, "abc").unwrap();
        assert_eq!((r.run.as_str(), r.damaged), ("r3", 0), "compaction dropped the cut line");
        assert!(r.done.contains(&key("sshd")) && r.done_for("ns1", "m1"));
    }

    #[test]
    fn skipped_steps_carry_over_to_the_next_resume() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("journal.jsonl");
        let j = Journal::open(&path).unwrap();
        j.write(&start("r1"));
        j.write(&host("r1", "m1"));
        j.write(&step("r1", "ns1", "a"));
        // r2 resumes r1, skips `a`, finishes `b`, then fails before the end
        j.write(&start("r2"));
        j.write(&host("r2", "m1"));
        j.write(&Entry::Step {
            run: "r2".into(),
            host: "ns1".into(),
            role: "base".into(),
            step: "a".into(),
            status: "done".into(),
        });
        j.write(&step("r2", "ns1", "b"));
        let r = Journal::resume_point(&path, "abc").unwrap();
        assert!(r.done.contains(&key("a")) && r.done.contains(&key("b")));
    }

    #[test]
    fn the_journal_is_compacted_when_a_run_opens_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("journal.jsonl");
        for i in 0..50 {
            let j = Journal::open(&path).unwrap();
            let run = format!("r{i}");
            j.write(&start(&run));
            j.write(&host(&run, "m1"));
            j.write(&step(&run, "ns1", "a"));
            j.write(&Entry::End { run, ok: true, time: "t".into() });
        }
        // An unhandled notification of an old run survives compaction with its identity.
        let j = Journal::open(&path).unwrap();
        j.write(&start("n1"));
        j.write(&host("n1", "m1"));
        j.write(&Entry::Notify { run: "n1".into(), host: "ns1".into(), service: "named".into() });
        j.write(&Entry::End { run: "n1".into(), ok: false, time: "t".into() });
        j.write(&start("n2"));
        j.write(&Entry::End { run: "n2".into(), ok: true, time: "t".into() });
        drop(j);
        let _ = Journal::open(&path).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.lines().count() <= 3, "{text}");
        let r = Journal::resume_point(&path, "abc").unwrap();
        assert!(r.pending_for("ns1", "m1").contains("named"));
    }
}
