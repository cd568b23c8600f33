//! The run journal (`journal.jsonl` in the state directory): one JSON line per finished step
//! and per pending service notification, appended as it happens. After a failure, a cut
//! connection or Ctrl-C, the next run reads it to skip what was done and to restart services
//! whose configuration changed before the run stopped.

use std::collections::{HashMap, HashSet};
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
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

/// What an unfinished earlier run left.
#[derive(Debug, Clone, Default)]
pub struct Resume {
    pub run: String,
    /// The earlier run had the same answers and playbooks: its finished steps can be skipped.
    pub same_inputs: bool,
    /// (host, role, step) finished in that run.
    pub done: HashSet<(String, String, String)>,
    /// Services notified but not yet restarted, by host (from every earlier run).
    pub pending: HashMap<String, HashSet<String>>,
}

impl Resume {
    pub fn done_on(&self, host: &str) -> usize {
        self.done.iter().filter(|(h, _, _)| h == host).count()
    }
}

pub struct Journal {
    path: PathBuf,
    file: Mutex<File>,
}

impl Journal {
    pub fn open(path: &Path) -> std::io::Result<Journal> {
        use std::os::unix::fs::OpenOptionsExt;
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(path)?;
        Ok(Journal {
            path: path.to_path_buf(),
            file: Mutex::new(file),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Append one entry; it reaches the file before the call returns.
    pub fn write(&self, e: &Entry) {
        let mut line = serde_json::to_string(e).expect("journal entries serialize");
        line.push('\n');
        let mut f = self.file.lock().unwrap_or_else(|p| p.into_inner());
        // A journal that cannot be written only costs a resume; the run goes on.
        let _ = f.write_all(line.as_bytes());
    }

    /// Read the journal: the last run if it did not end well, and every pending notification.
    pub fn resume_point(path: &Path, inputs: &str) -> Option<Resume> {
        let f = File::open(path).ok()?;
        let entries: Vec<Entry> = BufReader::new(f)
            .lines()
            .map_while(Result::ok)
            .filter_map(|l| serde_json::from_str(&l).ok())
            .collect();
        let mut pending: HashMap<String, HashSet<String>> = HashMap::new();
        for e in &entries {
            match e {
                Entry::Notify { host, service, .. } => {
                    pending.entry(host.clone()).or_default().insert(service.clone());
                }
                Entry::Handled { host, service, .. } => {
                    if let Some(s) = pending.get_mut(host) {
                        s.remove(service);
                    }
                }
                _ => {}
            }
        }
        pending.retain(|_, s| !s.is_empty());
        let last_start = entries.iter().rposition(|e| matches!(e, Entry::Start { .. }))?;
        let Entry::Start { run, inputs: was, .. } = &entries[last_start] else {
            return None;
        };
        let ended_ok = entries[last_start..]
            .iter()
            .any(|e| matches!(e, Entry::End { run: r, ok: true, .. } if r == run));
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
                        if r == run && (status == "ok" || status == "changed") =>
                    {
                        Some((host.clone(), role.clone(), step.clone()))
                    }
                    _ => None,
                })
                .collect()
        };
        Some(Resume {
            run: run.clone(),
            same_inputs: was == inputs && !ended_ok,
            done,
            pending,
        })
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

    #[test]
    fn an_unfinished_run_is_resumed_and_notifications_survive() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("journal.jsonl");
        let j = Journal::open(&path).unwrap();
        let start = |run: &str| Entry::Start {
            run: run.into(),
            inputs: "abc".into(),
            hosts: vec!["ns1".into()],
            time: "t".into(),
        };
        j.write(&start("r1"));
        j.write(&step("r1", "ns1", "hosts file"));
        j.write(&Entry::End { run: "r1".into(), ok: true, time: "t".into() });
        assert!(Journal::resume_point(&path, "abc").is_none(), "a finished run leaves nothing");

        j.write(&start("r2"));
        j.write(&step("r2", "ns1", "hosts file"));
        j.write(&Entry::Notify { run: "r2".into(), host: "ns1".into(), service: "ssh".into() });
        // cut here: no Handled, no End
        let r = Journal::resume_point(&path, "abc").unwrap();
        assert_eq!(r.run, "r2");
        assert!(r.same_inputs);
        assert!(r.done.contains(&("ns1".into(), "base".into(), "hosts file".into())));
        assert!(r.pending["ns1"].contains("ssh"));
        assert!(!Journal::resume_point(&path, "changed").unwrap().same_inputs);

        j.write(&start("r3"));
        j.write(&Entry::Handled { run: "r3".into(), host: "ns1".into(), service: "ssh".into() });
        j.write(&Entry::End { run: "r3".into(), ok: true, time: "t".into() });
        assert!(Journal::resume_point(&path, "abc").is_none());
    }
}
