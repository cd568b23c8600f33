//! The cluster preflight: before k3s is installed, can every node reach every other on the
//! ports k3s needs, are those ports free, and does each node have the CPUs and memory its role
//! asks for? Listeners are opened on each node with `systemd-socket-activate` (part of systemd,
//! on every Debian host) for a few seconds, and every other node connects to them over its
//! site address: TCP with bash's `/dev/tcp`, UDP (flannel's VXLAN) with datagrams that the
//! listener writes down with the sender's name. Nothing is installed and nothing is left.
//!
//! The decisions (which paths, what the answers mean) are pure; [`run`] does the SSH part.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::net::Ipv4Addr;

use serde::Serialize;

use super::rollout::Kind;
use crate::engine::facts::sh_quote;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Proto {
    Tcp,
    Udp,
}

impl Proto {
    pub fn as_str(self) -> &'static str {
        match self {
            Proto::Tcp => "tcp",
            Proto::Udp => "udp",
        }
    }
}

/// A node of the cluster with its site address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    pub name: String,
    pub address: Ipv4Addr,
    pub kind: Kind,
}

/// One connection k3s needs: `from` reaches `to` on `port`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct Path {
    pub from: String,
    pub to: String,
    pub port: u16,
    pub proto: Proto,
    pub why: &'static str,
}

/// The ports k3s uses between nodes (k3s's documented networking requirements, with the
/// default flannel VXLAN backend): the API on servers from every node, etcd between servers
/// (HA), the kubelet and VXLAN between all nodes, the embedded registry between all nodes
/// when it is on.
pub fn paths(nodes: &[Member], ha: bool, embedded_registry: bool) -> Vec<Path> {
    let mut out = Vec::new();
    let mut add = |from: &Member, to: &Member, port: u16, proto: Proto, why: &'static str| {
        out.push(Path { from: from.name.clone(), to: to.name.clone(), port, proto, why });
    };
    for to in nodes {
        for from in nodes.iter().filter(|f| f.name != to.name) {
            if to.kind == Kind::Server {
                add(from, to, 6443, Proto::Tcp, "the API and the supervisor");
                if ha && from.kind == Kind::Server {
                    add(from, to, 2379, Proto::Tcp, "etcd clients");
                    add(from, to, 2380, Proto::Tcp, "etcd peers");
                }
            }
            add(from, to, 10250, Proto::Tcp, "the kubelet (logs, exec, metrics)");
            add(from, to, 8472, Proto::Udp, "flannel VXLAN (pod traffic)");
            if embedded_registry {
                add(from, to, 5001, Proto::Tcp, "the embedded registry (images between nodes)");
            }
        }
    }
    out.sort();
    out
}

/// The ports `node` listens on for `paths`.
pub fn listening(paths: &[Path], node: &str) -> BTreeSet<(Proto, u16)> {
    paths.iter().filter(|p| p.to == node).map(|p| (p.proto, p.port)).collect()
}

/// The directory of one preflight's markers on a node.
pub fn run_dir(run: &str) -> String {
    format!("/run/groundwork-reach-{run}")
}

/// Opens a listener on each port for `secs` seconds (a port in use is reported, not opened),
/// then waits until they all listen. Prints `busy<TAB>proto<TAB>port<TAB>who` or
/// `listening<TAB>proto<TAB>port`.
pub fn listen_script(run: &str, address: Ipv4Addr, ports: &BTreeSet<(Proto, u16)>, secs: u64) -> String {
    let dir = run_dir(run);
    let mut s = format!("mkdir -p {d} && chmod 700 {d}\n", d = sh_quote(&dir));
    for (proto, port) in ports {
        let flag = if *proto == Proto::Tcp { "t" } else { "u" };
        let handler = match proto {
            Proto::Tcp => "cat >/dev/null".to_string(),
            Proto::Udp => format!(
                "while dd bs=512 count=1 status=none <&3 >>{f}; do echo >>{f}; done",
                f = sh_quote(&format!("{dir}/udp-{port}"))
            ),
        };
        let mode = if *proto == Proto::Tcp { "--accept" } else { "--datagram" };
        // An empty file per UDP port: the collection waits for each to fill (or 2 s).
        if *proto == Proto::Udp {
            let _ = writeln!(s, ": > {}", sh_quote(&format!("{dir}/udp-{port}")));
        }
        let _ = writeln!(
            s,
            "who=$(ss -Hln{flag}p 'sport = :{port}' | head -n 1)\n\
             if [ -n \"$who\" ]; then printf 'busy\\t{p}\\t{port}\\t%s\\n' \"$who\"; else \
             setsid timeout {secs} systemd-socket-activate -l {address}:{port} {mode} sh -c {h} </dev/null >/dev/null 2>&1 & \
             echo $! >>{pids}; printf 'listening\\t{p}\\t{port}\\n'; fi",
            p = proto.as_str(),
            h = sh_quote(&handler),
            pids = sh_quote(&format!("{dir}/pids")),
        );
    }
    // Up within 2 s, or the probes would race them.
    let _ = writeln!(
        s,
        "for i in $(seq 20); do n=0; for pp in {}; do ss -Hln$(echo \"${{pp%%/*}}\" | cut -c1) \"sport = :${{pp#*/}}\" | grep -q . || n=1; done; [ $n = 0 ] && break; sleep 0.1; done",
        ports.iter().map(|(p, n)| format!("{}/{n}", p.as_str())).collect::<Vec<_>>().join(" ")
    );
    s
}

/// Connects from this node along `paths` (all at once): `tcp<TAB>to<TAB>port<TAB>ok|fail` for
/// TCP; three datagrams naming this node for UDP (the listener writes them down).
pub fn probe_script(me: &str, paths: &[(Path, Ipv4Addr)]) -> String {
    let mut s = String::new();
    for (p, addr) in paths.iter().filter(|(p, _)| p.from == me) {
        match p.proto {
            Proto::Tcp => {
                let _ = writeln!(
                    s,
                    "{{ if timeout 3 bash -c '</dev/tcp/$0/$1' {addr} {port} 2>/dev/null; then r=ok; else r=fail; fi; printf 'tcp\\t%s\\t{port}\\t%s\\n' {to} \"$r\"; }} &",
                    port = p.port,
                    to = sh_quote(&p.to)
                );
            }
            Proto::Udp => {
                let _ = writeln!(
                    s,
                    "for i in 1 2 3; do bash -c 'echo \"$2\" > /dev/udp/$0/$1' {addr} {port} {who} 2>/dev/null; sleep 0.1; done &",
                    port = p.port,
                    who = sh_quote(&format!("from {me}"))
                );
            }
        }
    }
    s.push_str("wait\n");
    s
}

/// Reads what the UDP listeners heard (`udp<TAB>port<TAB>from NAME`), stops the listeners and
/// removes the markers.
pub fn collect_script(run: &str) -> String {
    let dir = sh_quote(&run_dir(run));
    // The handler of a datagram starts when it arrives: on a busy host, after the probes end.
    // `timeout` passes the signal on to the listener it runs; the ports are free once they are
    // gone (up to 2 s; a zombie holds no port), so what runs next can listen on them.
    format!(
        "for i in $(seq 20); do e=0; for f in {dir}/udp-*; do [ -f \"$f\" ] && ! [ -s \"$f\" ] && e=1; done; [ $e = 0 ] && break; sleep 0.1; done\n\
         for f in {dir}/udp-*; do [ -f \"$f\" ] || continue; p=${{f##*/udp-}}; grep . \"$f\" | sed \"s/^/udp\\t$p\\t/\"; done\n\
         if [ -f {dir}/pids ]; then kill $(cat {dir}/pids) 2>/dev/null; \
         for i in $(seq 20); do a=0; for p in $(cat {dir}/pids); do s=$(cut -d' ' -f3 /proc/$p/stat 2>/dev/null); [ -n \"$s\" ] && [ \"$s\" != Z ] && a=1; done; [ $a = 0 ] && break; sleep 0.1; done; fi\n\
         rm -rf {dir}; true\n"
    )
}

/// What one node's scripts said.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Heard {
    /// (proto, port) -> the listener that holds it.
    pub busy: BTreeMap<(Proto, u16), String>,
    /// (to, port) -> reached, from this node's TCP probes.
    pub tcp: BTreeMap<(String, u16), bool>,
    /// port -> the nodes whose datagrams arrived here.
    pub udp_from: BTreeMap<u16, BTreeSet<String>>,
}

impl Heard {
    /// Reads the lines of the listen, probe and collect scripts.
    pub fn read(&mut self, out: &str) {
        for line in out.lines() {
            let cols: Vec<&str> = line.split('\t').collect();
            let proto = |s: &str| if s == "udp" { Proto::Udp } else { Proto::Tcp };
            match cols.as_slice() {
                ["busy", p, port, who] => {
                    if let Ok(port) = port.parse() {
                        self.busy.insert((proto(p), port), who.split_whitespace().collect::<Vec<_>>().join(" "));
                    }
                }
                ["tcp", to, port, r] => {
                    if let Ok(port) = port.parse() {
                        self.tcp.insert((to.to_string(), port), *r == "ok");
                    }
                }
                ["udp", port, from] => {
                    if let (Ok(port), Some(name)) = (port.parse(), from.trim().strip_prefix("from ")) {
                        self.udp_from.entry(port).or_default().insert(name.to_string());
                    }
                }
                _ => {}
            }
        }
    }
}

/// The verdict on one path.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "result", content = "detail", rename_all = "kebab-case")]
pub enum Verdict {
    Ok,
    /// Nothing answered (TCP) or nothing arrived (UDP).
    Unreachable(String),
    /// The port is taken on the target: k3s could not listen there.
    Busy(String),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Row {
    #[serde(flatten)]
    pub path: Path,
    #[serde(flatten)]
    pub verdict: Verdict,
}

/// Every path judged from what the nodes heard (`heard` by node name).
pub fn judge(paths: &[Path], heard: &BTreeMap<String, Heard>) -> Vec<Row> {
    let empty = Heard::default();
    paths
        .iter()
        .map(|p| {
            let at = heard.get(&p.to).unwrap_or(&empty);
            let from = heard.get(&p.from).unwrap_or(&empty);
            let verdict = if let Some(who) = at.busy.get(&(p.proto, p.port)) {
                Verdict::Busy(format!("{} {}/{} is already in use: {who}", p.to, p.port, p.proto.as_str()))
            } else {
                let reached = match p.proto {
                    Proto::Tcp => from.tcp.get(&(p.to.clone(), p.port)).copied().unwrap_or(false),
                    Proto::Udp => at.udp_from.get(&p.port).is_some_and(|s| s.contains(&p.from)),
                };
                if reached {
                    Verdict::Ok
                } else {
                    Verdict::Unreachable(match p.proto {
                        Proto::Tcp => "no connection within 3 s".into(),
                        Proto::Udp => "none of 3 datagrams arrived".into(),
                    })
                }
            };
            Row { path: p.clone(), verdict }
        })
        .collect()
}

/// A node's CPUs and memory against what its role asks for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Fit {
    pub node: String,
    pub role: &'static str,
    pub cpus: u32,
    pub memory_mib: u64,
    /// What falls short of the role's `requires` (empty: it fits).
    pub short: Vec<String>,
}

/// `nproc` and MemTotal (kB) against the role's needs.
pub fn fit(node: &str, role: &'static str, out: &str, needs: &crate::playbook::catalog::Resources) -> Fit {
    let mut lines = out.lines().map(str::trim);
    let cpus = lines.next().and_then(|l| l.parse().ok()).unwrap_or(0);
    let memory_mib = lines.next().and_then(|l| l.parse::<u64>().ok()).unwrap_or(0) / 1024;
    let mut short = Vec::new();
    if cpus < needs.cpus {
        short.push(format!("{cpus} CPU(s), {role} needs {}", needs.cpus));
    }
    if memory_mib < needs.memory_mib {
        short.push(format!("{memory_mib} MiB of memory, {role} needs {}", needs.memory_mib));
    }
    Fit { node: node.to_string(), role, cpus, memory_mib, short }
}

/// The preflight of a site's cluster nodes.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Report {
    pub fits: Vec<Fit>,
    pub paths: Vec<Row>,
    /// Why the paths were not checked (k3s already runs on a node: verify checks it then).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub skipped: Option<String>,
}

impl Report {
    pub fn ok(&self) -> bool {
        self.fits.iter().all(|f| f.short.is_empty()) && self.paths.iter().all(|r| r.verdict == Verdict::Ok)
    }

    /// For people: the nodes, then each path that failed, then a count.
    pub fn render(&self) -> String {
        let mut s = String::new();
        for f in &self.fits {
            let verdict = if f.short.is_empty() { "ok".to_string() } else { format!("FAIL: {}", f.short.join("; ")) };
            let _ = writeln!(s, "{:<16} {:<10} {:>3} CPU {:>7} MiB  {verdict}", f.node, f.role, f.cpus, f.memory_mib);
        }
        if let Some(why) = &self.skipped {
            let _ = writeln!(s, "paths between nodes: not checked: {why}");
            return s;
        }
        let bad: Vec<&Row> = self.paths.iter().filter(|r| r.verdict != Verdict::Ok).collect();
        for r in &bad {
            let detail = match &r.verdict {
                Verdict::Unreachable(d) | Verdict::Busy(d) => d.as_str(),
                Verdict::Ok => "",
            };
            let _ = writeln!(
                s,
                "FAIL  {} -> {} {}/{} ({}): {detail}",
                r.path.from,
                r.path.to,
                r.path.port,
                r.path.proto.as_str(),
                r.path.why
            );
        }
        let _ = writeln!(s, "paths between nodes: {} checked, {} failed", self.paths.len(), bad.len());
        s
    }
}

/// How long the listeners live: long enough for every probe (3 s each, all at once).
const LISTEN_SECS: u64 = 15;

/// Connects to every k3s node of the answers and runs the preflight.
pub async fn run(
    a: &crate::answers::model::Answers,
    catalog: &crate::playbook::catalog::Catalog,
    state: &crate::state::StateDir,
) -> Result<Report, String> {
    let members: Vec<(Member, &crate::answers::model::Host)> = super::nodes(a)
        .into_iter()
        .map(|(h, kind)| (Member { name: h.name.clone(), address: h.address, kind }, h))
        .collect();
    if members.is_empty() {
        return Err("no host has the k3s-server or k3s-agent role: there is no cluster to check".into());
    }
    let sessions =
        futures::future::join_all(members.iter().map(|(_, h)| crate::verify::connect_learning(h, state))).await;
    let mut live = Vec::new();
    for ((m, _), s) in members.iter().zip(sessions) {
        live.push((m, s.map_err(|e| format!("{}: {e}", m.name))?));
    }
    let exec = |i: usize, cmd: String| {
        let (m, session) = &live[i];
        async move { session.exec(&cmd, None).await.map(|o| o.stdout_str()).map_err(|e| format!("{}: {e}", m.name)) }
    };
    let each = |make: &dyn Fn(&Member) -> String| {
        futures::future::try_join_all((0..live.len()).map(|i| exec(i, make(live[i].0))))
    };

    // What each node has, and whether k3s runs there already.
    let looks = each(&|_| {
        "nproc; awk '/^MemTotal:/ { print $2 }' /proc/meminfo; \
         if systemctl is-active --quiet k3s || systemctl is-active --quiet k3s-agent; then echo running; fi"
            .to_string()
    })
    .await?;
    let mut report = Report::default();
    let mut running = Vec::new();
    for ((m, _), out) in live.iter().zip(&looks) {
        let role = if m.kind == Kind::Server { "k3s-server" } else { "k3s-agent" };
        let needs = catalog.get(role).map(|r| r.requires).unwrap_or_default();
        report.fits.push(fit(&m.name, role, out, &needs));
        if out.lines().any(|l| l.trim() == "running") {
            running.push(m.name.clone());
        }
    }
    if !running.is_empty() {
        report.skipped = Some(format!(
            "k3s already runs on {} (its ports are its own): `groundwork verify` checks a running cluster",
            running.join(", ")
        ));
        return Ok(report);
    }

    let k = a.k3s.as_ref();
    let ha = k.is_some_and(|k| k.mode == crate::answers::model::K3sMode::Ha);
    let nodes: Vec<Member> = live.iter().map(|(m, _)| (*m).clone()).collect();
    let all = paths(&nodes, ha, k.is_some_and(|k| k.embedded_registry));
    let addr = |name: &str| nodes.iter().find(|n| n.name == name).map(|n| n.address).unwrap_or(Ipv4Addr::UNSPECIFIED);
    let with_addr: Vec<(Path, Ipv4Addr)> = all.iter().map(|p| (p.clone(), addr(&p.to))).collect();
    let run_id = format!("{}-{}", std::process::id(), chrono_free_stamp());
    let mut heard: BTreeMap<String, Heard> = BTreeMap::new();
    // Listeners everywhere first, then every probe, then what the listeners heard.
    let outs = each(&|m| listen_script(&run_id, m.address, &listening(&all, &m.name), LISTEN_SECS)).await?;
    for ((m, _), out) in live.iter().zip(&outs) {
        heard.entry(m.name.clone()).or_default().read(out);
    }
    let probes = each(&|m| probe_script(&m.name, &with_addr)).await;
    // The listeners are stopped whatever the probes did.
    let collected = each(&|_| collect_script(&run_id)).await?;
    for ((m, _), out) in live.iter().zip(probes?.iter().zip(&collected)) {
        let h = heard.entry(m.name.clone()).or_default();
        h.read(out.0);
        h.read(out.1);
    }
    for (_, session) in live {
        session.close().await;
    }
    report.paths = judge(&all, &heard);
    Ok(report)
}

/// Seconds since the epoch: enough to tell two preflights apart with the process id.
fn chrono_free_stamp() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(name: &str, last: u8, kind: Kind) -> Member {
        Member { name: name.into(), address: Ipv4Addr::new(10, 0, 0, last), kind }
    }

    #[test]
    fn paths_follow_the_roles() {
        let single = [m("s1", 1, Kind::Server), m("a1", 2, Kind::Agent), m("a2", 3, Kind::Agent)];
        let p = paths(&single, false, false);
        let has = |from: &str, to: &str, port: u16| p.iter().any(|x| x.from == from && x.to == to && x.port == port);
        assert!(has("a1", "s1", 6443) && has("a2", "s1", 6443));
        assert!(!has("s1", "a1", 6443), "agents serve no API");
        assert!(has("s1", "a1", 10250) && has("a1", "a2", 10250) && has("a2", "a1", 8472));
        assert!(!p.iter().any(|x| x.port == 2379 || x.port == 5001));
        // 3 nodes: 2 API paths + 6 kubelet + 6 VXLAN.
        assert_eq!(p.len(), 14);

        let ha =
            [m("s1", 1, Kind::Server), m("s2", 2, Kind::Server), m("s3", 3, Kind::Server), m("a1", 4, Kind::Agent)];
        let p = paths(&ha, true, true);
        let etcd: Vec<_> = p.iter().filter(|x| x.port == 2380).map(|x| (x.from.as_str(), x.to.as_str())).collect();
        assert_eq!(etcd.len(), 6, "server to server only: {etcd:?}");
        assert!(!etcd.iter().any(|(f, t)| *f == "a1" || *t == "a1"));
        assert_eq!(p.iter().filter(|x| x.port == 5001).count(), 12);
        assert_eq!(listening(&p, "a1"), BTreeSet::from([(Proto::Tcp, 5001), (Proto::Tcp, 10250), (Proto::Udp, 8472)]));
    }

    #[test]
    fn what_the_nodes_heard_decides_each_path() {
        let nodes = [m("s1", 1, Kind::Server), m("a1", 2, Kind::Agent)];
        let p = paths(&nodes, false, false);
        let mut s1 = Heard::default();
        s1.read(
            "busy\ttcp\t10250\tLISTEN 0 4096 *:10250 *:* users:((\"kubelet\",pid=77,fd=3))\nlistening\ttcp\t6443\n\
                 udp\t8472\tfrom a1\ntcp\ta1\t10250\tok\n",
        );
        let mut a1 = Heard::default();
        a1.read("listening\ttcp\t10250\nlistening\tudp\t8472\ntcp\ts1\t6443\tfail\n");
        let heard = BTreeMap::from([("s1".to_string(), s1), ("a1".to_string(), a1)]);
        let rows = judge(&p, &heard);
        let v = |from: &str, to: &str, port: u16| {
            rows.iter().find(|r| r.path.from == from && r.path.to == to && r.path.port == port).unwrap().verdict.clone()
        };
        assert_eq!(v("a1", "s1", 6443), Verdict::Unreachable("no connection within 3 s".into()));
        assert!(matches!(v("a1", "s1", 10250), Verdict::Busy(w) if w.contains("kubelet")));
        assert_eq!(v("a1", "s1", 8472), Verdict::Ok);
        assert_eq!(v("s1", "a1", 10250), Verdict::Ok);
        assert_eq!(v("s1", "a1", 8472), Verdict::Unreachable("none of 3 datagrams arrived".into()));
    }

    #[test]
    fn scripts_quote_names_and_clean_up_after_themselves() {
        let ports = BTreeSet::from([(Proto::Tcp, 6443), (Proto::Udp, 8472)]);
        let l = listen_script("r1", Ipv4Addr::new(10, 0, 0, 1), &ports, 20);
        assert!(l.contains("setsid timeout 20 systemd-socket-activate -l 10.0.0.1:6443 --accept"), "{l}");
        assert!(l.contains("-l 10.0.0.1:8472 --datagram"), "{l}");
        assert!(l.contains("/run/groundwork-reach-r1/udp-8472"), "{l}");
        let p = Path { from: "a'1".into(), to: "s1".into(), port: 8472, proto: Proto::Udp, why: "" };
        let s = probe_script("a'1", &[(p, Ipv4Addr::new(10, 0, 0, 1))]);
        assert!(s.contains(r"'from a'\''1'"), "{s}");
        let c = collect_script("r1");
        assert!(
            c.contains("kill $(cat '/run/groundwork-reach-r1'/pids)")
                && c.contains("rm -rf '/run/groundwork-reach-r1'"),
            "{c}"
        );
    }

    /// The scripts for real, on this machine's loopback: a listener and a probe of each kind.
    #[test]
    fn listeners_and_probes_work_on_loopback() {
        if std::process::Command::new("systemd-socket-activate").arg("--version").output().is_err() {
            eprintln!("SKIPPED: no systemd-socket-activate here");
            return;
        }
        let run = format!("test{}", std::process::id());
        // Ports free right now (the system's choice), so parallel runs do not meet.
        let free_tcp = || std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let (tcp, udp) = (free_tcp(), std::net::UdpSocket::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port());
        let closed = free_tcp();
        let ports = BTreeSet::from([(Proto::Tcp, tcp), (Proto::Udp, udp)]);
        let sh = |script: &str| {
            let out = std::process::Command::new("sh").arg("-c").arg(script).output().unwrap();
            String::from_utf8_lossy(&out.stdout).into_owned()
        };
        let lo = Ipv4Addr::LOCALHOST;
        let mut heard = Heard::default();
        heard.read(&sh(&listen_script(&run, lo, &ports, 10)));
        assert!(heard.busy.is_empty(), "{heard:?}");
        let paths = [
            (Path { from: "me".into(), to: "lo".into(), port: tcp, proto: Proto::Tcp, why: "" }, lo),
            (Path { from: "me".into(), to: "lo".into(), port: udp, proto: Proto::Udp, why: "" }, lo),
            (Path { from: "me".into(), to: "lo".into(), port: closed, proto: Proto::Tcp, why: "" }, lo),
        ];
        heard.read(&sh(&probe_script("me", &paths)));
        // The listener is busy for a second look at the same port.
        let mut again = Heard::default();
        again.read(&sh(&listen_script(&run, lo, &BTreeSet::from([(Proto::Tcp, tcp)]), 10)));
        heard.read(&sh(&collect_script(&run)));
        assert_eq!(heard.tcp.get(&("lo".to_string(), tcp)), Some(&true), "{heard:?}");
        assert_eq!(heard.tcp.get(&("lo".to_string(), closed)), Some(&false), "{heard:?}");
        assert!(heard.udp_from.get(&udp).is_some_and(|s| s.contains("me")), "{heard:?}");
        assert!(again.busy.get(&(Proto::Tcp, tcp)).is_some_and(|w| w.contains("systemd-socket")), "{again:?}");
        assert!(!std::path::Path::new(&run_dir(&run)).exists());
        assert!(sh(&format!("ss -Hltn 'sport = :{tcp}'")).trim().is_empty(), "the listener was stopped");
    }
}
