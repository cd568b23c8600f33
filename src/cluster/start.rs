//! The cluster phase of `apply`: after every host has its k3s files (binary, images,
//! config.yaml, unit: the k3s roles' steps), start or restart the nodes that need it in the
//! order [`rollout`] decides, checking each gate on a server over SSH before going on.
//!
//! Which nodes need it is read on the nodes themselves, so an interrupted run is picked up by
//! the next: a node needs a (re)start when k3s is not active there, or when its files are not
//! the ones it was last started with (a stamp written after each successful start: the
//! sha256 of config.yaml and the unit, and the binary's size, mtime and inode, which an
//! upload's atomic move always changes). Before anything starts, every node's binary must run
//! and be the version the answers pin.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use super::ready;
use super::rollout::{self, Gate, Kind, Node, Stage};
use crate::answers::model::{Answers, Role};
use crate::engine::facts::sh_quote;
use crate::engine::report::{Reporter, Status};
use crate::ssh::Session;
use crate::state::StateDir;

/// Where the stamp of the files a node last started with lives.
const STAMP: &str = "/var/lib/groundwork/k3s.started";
/// How long one gate may take: the first server initialises etcd, a joiner syncs it.
const GATE_DEADLINE: Duration = Duration::from_secs(300);
const POLL: Duration = Duration::from_secs(2);

/// A k3s node of the run, with its session.
pub struct Member<'s> {
    pub name: String,
    pub kind: Kind,
    pub session: &'s Session,
}

fn unit(kind: Kind) -> &'static str {
    match kind {
        Kind::Server => "k3s",
        Kind::Agent => "k3s-agent",
    }
}

/// The first server's full token (`K10<sha256 of its CA>::server:<secret>`), which k3s
/// writes at its first start.
pub const SERVER_TOKEN: &str = "/var/lib/rancher/k3s/server/token";
/// Where the other nodes read it from (`token-file` in their config.yaml): with the CA's hash
/// in it, a joining node checks the cluster's CA before it sends the secret.
pub const JOIN_TOKEN: &str = "/etc/rancher/k3s/join-token";

/// The sha256 of the files k3s starts with: config.yaml, the unit, the join token, and the
/// binary's size, mtime and inode (an upload's atomic move always changes the inode).
fn stamp_script(unit: &str) -> String {
    format!(
        "{{ sha256sum /etc/rancher/k3s/config.yaml /etc/systemd/system/{unit}.service {JOIN_TOKEN}; stat -c '%s %Y %i' /usr/local/bin/k3s; }} 2>&1 | sha256sum | cut -d' ' -f1"
    )
}

/// The sha256 of a token file's content without its trailing line break (empty: no file).
fn token_sum(path: &str) -> String {
    format!("$( [ -s {path} ] && printf '%s' \"$(cat {path})\" | sha256sum | cut -d' ' -f1)")
}

/// One round trip: the binary's version line, whether the unit runs, the current files'
/// stamp and the stamp of the last start, the times that tell who started it last, and the
/// sums of the server token (a server's) and the join token.
pub fn look_script(kind: Kind) -> String {
    let u = unit(kind);
    format!(
        "printf 'version\\t%s\\n' \"$(/usr/local/bin/k3s --version 2>&1 | head -n 1)\"\n\
         printf 'active\\t%s\\n' \"$(systemctl is-active {u} 2>/dev/null)\"\n\
         printf 'stamp\\t%s\\n' \"$({stamp})\"\n\
         printf 'started\\t%s\\n' \"$(cat {STAMP} 2>/dev/null)\"\n\
         t=$(systemctl show -p ExecMainStartTimestamp --value {u} 2>/dev/null); p=; [ -n \"$t\" ] && p=$(date -d \"$t\" +%s 2>/dev/null)\n\
         printf 'times\\t%s\\t%s\\t%s\\n' \"$p\" \"$(stat -c %Y {STAMP} 2>/dev/null)\" \"$(stat -c %Y /etc/rancher/k3s/config.yaml /etc/systemd/system/{u}.service /usr/local/bin/k3s {JOIN_TOKEN} 2>/dev/null | sort -n | tail -n 1)\"\n\
         printf 'tokens\\t%s\\t%s\\n' \"{server}\" \"{join}\"\n",
        stamp = stamp_script(u),
        server = token_sum(SERVER_TOKEN),
        join = token_sum(JOIN_TOKEN),
    )
}

/// What [`look_script`] said.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Look {
    pub version: String,
    pub active: bool,
    pub stamp: String,
    pub started: String,
    /// Seconds since the epoch: when the running process started, when groundwork wrote its
    /// stamp, when the newest of the files was written.
    pub process_start: Option<u64>,
    pub stamped: Option<u64>,
    pub files_written: Option<u64>,
    /// The sums of the server token (servers that have started) and of the join token.
    pub server_token: String,
    pub join_token: String,
}

impl Look {
    pub fn parse(out: &str) -> Look {
        let mut l = Look::default();
        for line in out.lines() {
            match line.split_once('\t') {
                Some(("version", v)) => l.version = v.trim().to_string(),
                Some(("active", v)) => l.active = v.trim() == "active",
                Some(("stamp", v)) => l.stamp = v.trim().to_string(),
                Some(("started", v)) => l.started = v.trim().to_string(),
                Some(("tokens", v)) => {
                    let (server, join) = v.split_once('\t').unwrap_or((v, ""));
                    l.server_token = server.trim().to_string();
                    l.join_token = join.trim().to_string();
                }
                Some(("times", v)) => {
                    let t: Vec<Option<u64>> = v.split('\t').map(|x| x.trim().parse().ok()).collect();
                    l.process_start = t.first().copied().flatten();
                    l.stamped = t.get(1).copied().flatten();
                    l.files_written = t.get(2).copied().flatten();
                }
                _ => {}
            }
        }
        l
    }

    /// k3s runs with the files it has now: groundwork started it with these files, and no
    /// later start (by hand, or after a crash) can have read other ones. A process started
    /// after the stamp, with files written since it started, read what is gone (a hand edit
    /// that groundwork has just put back): it must restart. The same second counts as after.
    pub fn settled(&self) -> bool {
        let read_other_files = match (self.process_start, self.stamped, self.files_written) {
            (Some(p), Some(s), Some(f)) => p > s && f >= p,
            _ => false,
        };
        self.active && !self.stamp.is_empty() && self.stamp == self.started && !read_other_files
    }
}

/// The binary runs and is the pinned release (`k3s version v1.35.6+k3s1 (abcdef12)`).
pub fn check_version(node: &str, said: &str, want: &str) -> Result<(), String> {
    match said.strip_prefix("k3s version ").and_then(|r| r.split_whitespace().next()) {
        Some(v) if v == want => Ok(()),
        Some(v) => Err(format!("k3s on {node} is {v}; the answers pin {want}")),
        None => {
            // A file that is no program makes the shell quote its bytes: the first line, cut.
            let line = said.lines().next().unwrap_or("").trim();
            let mut shown: String = line.chars().take(120).collect();
            if shown.len() < line.len() {
                shown.push_str("...");
            }
            Err(format!(
                "the k3s binary on {node} does not run: {}",
                if shown.is_empty() { "no output" } else { &shown }
            ))
        }
    }
}

/// The stages this run makes, from what the nodes said: the first start when no server runs,
/// otherwise the (re)starts of the nodes that are not settled.
pub fn plan(nodes: &[Node], looks: &[Look]) -> Result<Vec<Stage>, rollout::RolloutError> {
    let any_server_runs = nodes.iter().zip(looks).any(|(n, l)| n.kind == Kind::Server && l.active);
    if !any_server_runs {
        return rollout::first_start(nodes);
    }
    let changed: BTreeSet<String> =
        nodes.iter().zip(looks).filter(|(_, l)| !l.settled()).map(|(n, _)| n.name.clone()).collect();
    let running: BTreeSet<String> =
        nodes.iter().zip(looks).filter(|(_, l)| l.active).map(|(n, _)| n.name.clone()).collect();
    rollout::restarts(nodes, &changed, &running)
}

/// Polls `gate` on its server until it holds or the deadline passes.
async fn wait_for(gate: &Gate, members: &[Member<'_>], reporter: &Reporter) -> Result<(), String> {
    let on = match gate {
        Gate::ApiReady { on } | Gate::Voters { on, .. } | Gate::NodeReady { on, .. } => on,
    };
    let m = members.iter().find(|m| &m.name == on).ok_or_else(|| format!("{on} is not a node of this run"))?;
    let cmd = ready::command(gate);
    let t = Instant::now();
    let mut last = String::new();
    loop {
        let said = match m.session.exec(&format!("{cmd} 2>&1"), None).await {
            Ok(o) => o.stdout_str(),
            Err(e) => format!("ssh: {e}"),
        };
        match ready::judge(gate, &said) {
            Ok(()) => return Ok(()),
            Err(e) => {
                if e != last {
                    reporter.progress(on, "cluster", &e);
                    last = e;
                }
            }
        }
        if t.elapsed() > GATE_DEADLINE {
            return Err(format!("after {} s: {last}", GATE_DEADLINE.as_secs()));
        }
        tokio::time::sleep(POLL).await;
    }
}

/// The first server's full token. Never shown: an error says what is wrong with it, not it.
async fn read_token(first: &Member<'_>) -> Result<String, String> {
    let out = first.session.exec(&format!("cat {SERVER_TOKEN}"), None).await.map_err(|e| e.to_string())?;
    let token = out.stdout_str().trim().to_string();
    if out.status != 0 || !(token.starts_with("K10") && token.contains("::server:")) {
        return Err(format!(
            "{SERVER_TOKEN} on {} is missing or not k3s's full token (K10<CA sha256>::server:...)",
            first.name
        ));
    }
    Ok(token)
}

/// The join token on a node (0600), written through standard input, only when it differs.
async fn write_join_token(m: &Member<'_>, token: &str) -> Result<(), String> {
    let cmd = format!(
        "umask 077 && mkdir -p /etc/rancher/k3s && t=$(cat) && if [ \"$(cat {JOIN_TOKEN} 2>/dev/null)\" != \"$t\" ]; then \
         printf '%s\\n' \"$t\" > {JOIN_TOKEN}.new && mv {JOIN_TOKEN}.new {JOIN_TOKEN}; fi"
    );
    let out = m.session.exec(&cmd, Some(token.as_bytes())).await.map_err(|e| e.to_string())?;
    if out.status != 0 {
        return Err(format!("cannot write {JOIN_TOKEN} on {}: {}", m.name, out.stderr_str().trim()));
    }
    Ok(())
}

/// The kubeconfig of the first server, its API address set to the endpoint, into the state
/// directory (0600). Returns its path.
async fn fetch_kubeconfig(server: &Member<'_>, endpoint: &str, state: &StateDir) -> Result<std::path::PathBuf, String> {
    let out = server.session.exec("cat /etc/rancher/k3s/k3s.yaml", None).await.map_err(|e| e.to_string())?;
    if out.status != 0 {
        return Err(format!("cannot read /etc/rancher/k3s/k3s.yaml on {}", server.name));
    }
    let text = out.stdout_str().replace("https://127.0.0.1:6443", &format!("https://{endpoint}:6443"));
    let path = state.root.join("kubeconfig");
    crate::state::write_private(&path, text.as_bytes(), 0o600).map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(path)
}

/// The cluster phase. `members` are every k3s node of the answers, connected.
pub async fn run(
    a: &Answers,
    members: &[Member<'_>],
    reporter: &Reporter,
    dry_run: bool,
    state: &StateDir,
) -> Result<(), (String, String)> {
    let Some(k) = &a.k3s else { return Ok(()) };
    let fail = |node: &str, e: String| (node.to_string(), e);
    let mut looks: Vec<Look> = futures::future::join_all(members.iter().map(|m| async move {
        m.session.exec(&look_script(m.kind), None).await.map(|o| Look::parse(&o.stdout_str())).unwrap_or_default()
    }))
    .await;
    let first_name = a.hosts_with(Role::K3sServer).next().map(|(_, h)| h.name.clone()).unwrap_or_default();
    let first = members.iter().position(|m| m.name == first_name);
    // Once the first server has run, every other node must read its token (a first server
    // built anew has a new CA): a node that does not gets it, and restarts.
    let mut token: Option<String> = None;
    if let Some(fi) = first.filter(|&fi| !looks[fi].server_token.is_empty()) {
        let want = looks[fi].server_token.clone();
        let stale: Vec<usize> = (0..members.len()).filter(|&i| i != fi && looks[i].join_token != want).collect();
        for i in stale {
            if !dry_run {
                if token.is_none() {
                    token = Some(read_token(&members[fi]).await.map_err(|e| fail(&first_name, e))?);
                }
                let t = token.as_deref().expect("read above");
                write_join_token(&members[i], t).await.map_err(|e| fail(&members[i].name, e))?;
            }
            looks[i].stamp.clear(); // its files changed: it restarts
        }
    }
    let nodes: Vec<Node> = members.iter().map(|m| Node { name: m.name.clone(), kind: m.kind }).collect();
    let stages = plan(&nodes, &looks).map_err(|e| fail(&nodes[0].name, e.to_string()))?;
    if !dry_run {
        for (m, l) in members.iter().zip(&looks) {
            check_version(&m.name, &l.version, &k.version).map_err(|e| fail(&m.name, e))?;
        }
    }
    for stage in &stages {
        let verb = |n: &str| {
            if looks[nodes.iter().position(|x| x.name == n).unwrap_or(0)].active { "restart" } else { "start" }
        };
        if dry_run {
            for n in &stage.nodes {
                reporter.step_finished(
                    n,
                    "cluster",
                    &format!("{} k3s", verb(n)),
                    Status::WouldChange,
                    Duration::ZERO,
                    None,
                );
            }
            continue;
        }
        for g in &stage.before {
            wait_for(g, members, reporter)
                .await
                .map_err(|e| fail(&stage.nodes[0], format!("before {}: {e}", stage.nodes.join(", "))))?;
        }
        let t = Instant::now();
        let mut stamps: Vec<(String, String)> = Vec::new();
        for n in &stage.nodes {
            let m = members.iter().find(|m| &m.name == n).expect("stage nodes are members");
            reporter.step_started(n, "cluster", &format!("{} k3s", verb(n)));
            // Every node but the first joins with the first server's full token: there since
            // the first server's stage (a new cluster starts it alone, first).
            if *n != first_name
                && let Some(fi) = first
            {
                if token.is_none() {
                    token = Some(read_token(&members[fi]).await.map_err(|e| fail(n, e))?);
                }
                let t = token.as_deref().expect("read above");
                write_join_token(m, t).await.map_err(|e| fail(n, e))?;
            }
            // --no-block: the unit's start waits for the node to be up, for ever if it cannot
            // be. The stamp is of the files as they are when it starts.
            let u = unit(m.kind);
            let cmd = format!(
                "s=$({}) && systemctl daemon-reload && systemctl enable --quiet {q} && systemctl restart --no-block {q} && printf '%s' \"$s\"",
                stamp_script(u),
                q = sh_quote(u)
            );
            let out = m.session.exec(&cmd, None).await.map_err(|e| fail(n, e.to_string()))?;
            if out.status != 0 {
                return Err(fail(n, format!("starting {u}: {}", out.stderr_str().trim())));
            }
            stamps.push((n.clone(), out.stdout_str().trim().to_string()));
        }
        for g in &stage.after {
            if let Err(e) = wait_for(g, members, reporter).await {
                for n in &stage.nodes {
                    reporter.step_finished(
                        n,
                        "cluster",
                        &format!("{} k3s", verb(n)),
                        Status::Failed,
                        t.elapsed(),
                        Some(&e),
                    );
                }
                return Err(fail(&stage.nodes[0], e));
            }
        }
        for (n, stamp) in &stamps {
            let m = members.iter().find(|m| &m.name == n).expect("stage nodes are members");
            let write = format!("mkdir -p /var/lib/groundwork && printf '%s\\n' {} > {STAMP}", sh_quote(stamp));
            m.session.exec(&write, None).await.map_err(|e| fail(n, e.to_string()))?;
            reporter.step_finished(n, "cluster", &format!("{} k3s", verb(n)), Status::Changed, t.elapsed(), None);
        }
    }
    if !dry_run && let Some(server) = first.map(|fi| &members[fi]) {
        let endpoint = k.api_endpoint(&a.site.internal_domain);
        let path = fetch_kubeconfig(server, &endpoint, state).await.map_err(|e| fail(&first_name, e))?;
        reporter.log("-", &format!("kubeconfig: {}", path.display()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(name: &str, kind: Kind) -> Node {
        Node { name: name.into(), kind }
    }

    fn look(active: bool, stamp: &str, started: &str) -> Look {
        Look {
            version: "k3s version v1.35.6+k3s1 (1234abcd)".into(),
            active,
            stamp: stamp.into(),
            started: started.into(),
            ..Look::default()
        }
    }

    #[test]
    fn what_the_nodes_say_reads_back() {
        let l = Look::parse("version\tk3s version v1.35.6+k3s1 (1234abcd)\nactive\tactive\nstamp\tabc\nstarted\tabc\n");
        assert!(l.settled());
        assert!(!Look::parse("version\t\nactive\tinactive\nstamp\tabc\nstarted\tabc\n").settled());
        assert!(!Look::parse("active\tactive\nstamp\tabc\nstarted\t\n").settled(), "never started by groundwork");
        let with = |times: &str| Look::parse(&format!("active\tactive\nstamp\tabc\nstarted\tabc\ntimes\t{times}\n"));
        // Started by groundwork (stamp after the start), files written before: settled.
        assert!(with("1000\t1005\t900").settled());
        // A file rewritten after groundwork's start, same content (a hand edit put back
        // before anyone restarted): the process read the right one. Settled.
        assert!(with("1000\t1005\t2000").settled());
        // Restarted after the stamp (a crash, Restart=always) with files older: settled.
        assert!(with("3000\t1005\t900").settled());
        // Restarted after the stamp, files written since: it read what groundwork put back.
        assert!(!with("3000\t1005\t4000").settled());
        assert!(!with("3000\t1005\t3000").settled(), "the same second counts as after");
        // Times unknown (an old node, a parse failure): the stamp decides.
        assert!(with("\t\t").settled());
    }

    #[test]
    fn the_binary_must_run_and_be_the_pinned_release() {
        assert_eq!(check_version("s1", "k3s version v1.35.6+k3s1 (1234abcd)", "v1.35.6+k3s1"), Ok(()));
        assert_eq!(
            check_version("s1", "k3s version v1.34.9+k3s1 (1234abcd)", "v1.35.6+k3s1"),
            Err("k3s on s1 is v1.34.9+k3s1; the answers pin v1.35.6+k3s1".into())
        );
        assert_eq!(
            check_version("s1", "sh: 1: /usr/local/bin/k3s: Exec format error", "v1.35.6+k3s1"),
            Err("the k3s binary on s1 does not run: sh: 1: /usr/local/bin/k3s: Exec format error".into())
        );
        let junk =
            format!("/usr/local/bin/k3s: line 1: syntax error near unexpected token `{}'\nmore", "\\236".repeat(80));
        let e = check_version("s1", &junk, "v1.35.6+k3s1").unwrap_err();
        assert!(e.ends_with("...") && e.len() < 200 && !e.contains("more"), "{e}");
    }

    #[test]
    fn a_new_cluster_starts_in_order_and_a_settled_one_only_restarts_what_changed() {
        let nodes =
            [node("s1", Kind::Server), node("s2", Kind::Server), node("s3", Kind::Server), node("a1", Kind::Agent)];
        let fresh = vec![Look::default(); 4];
        let stages = plan(&nodes, &fresh).unwrap();
        let order: Vec<Vec<String>> = stages.iter().map(|s| s.nodes.clone()).collect();
        assert_eq!(order, [vec!["s1"], vec!["s2"], vec!["s3"], vec!["a1"]]);

        let settled = vec![look(true, "x", "x"); 4];
        assert!(plan(&nodes, &settled).unwrap().is_empty());

        // s2's config changed, a1 stopped: s2 alone behind the others' gates, then a1.
        let mut some = settled.clone();
        some[1] = look(true, "new", "old");
        some[3] = look(false, "x", "x");
        let order: Vec<Vec<String>> = plan(&nodes, &some).unwrap().iter().map(|s| s.nodes.clone()).collect();
        assert_eq!(order, [vec!["s2"], vec!["a1"]]);
    }

    #[test]
    fn the_look_script_reads_the_unit_of_the_node_kind() {
        assert!(look_script(Kind::Agent).contains("systemctl is-active k3s-agent"));
        assert!(look_script(Kind::Server).contains("/etc/systemd/system/k3s.service"));
    }
}
