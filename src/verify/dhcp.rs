//! DHCP, checked on the DHCP host over SSH and on the segment:
//!
//! - kea-dhcp4 and kea-dhcp-ddns answer `status-get` on their control sockets, and the subnet,
//!   pools and reservations kea-dhcp4 runs with (`config-get`) are the answer file's.
//! - From another host of the site (not the DHCP server itself: Kea's raw socket replies never
//!   loop back to its own host), a DHCPDISCOVER gets an offer from the DHCP host, with an
//!   address of a range; any other server answering is named (a failure unless
//!   allow-foreign-dhcp = true).
//! - Every active lease in Kea's lease file (the newest few) resolves both ways at the primary
//!   DNS server: the client's name to its address and back.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use super::dns::{Server, forward_and_reverse};
use super::{Outcome, Row, connect, timed};
use crate::answers::model::{Answers, Host, Role};
use crate::ssh::Session;
use crate::state::StateDir;

const SERVICE: &str = "dhcp";
/// The probe the dhcp role installs, run from another host (sent on stdin).
const PROBE: &str = include_str!("../../playbooks/dhcp/templates/dhcp-probe.py");
const SOCKET4: &str = "/run/kea/kea4-ctrl-socket";
const SOCKET_D2: &str = "/run/kea/kea-ddns-ctrl-socket";
const LEASES: &str = "/var/lib/kea/kea-leases4.csv";
/// How many leases (the newest) are checked in DNS.
const MAX_LEASES: usize = 5;

/// Sends one command to a Kea control socket and prints the answer (Kea closes the connection
/// after it). python3-minimal has no json module: the answer is parsed here.
const KEA_COMMAND: &str = r#"
import socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.settimeout(3)
s.connect(sys.argv[1])
s.sendall(('{"command": "%s"}' % sys.argv[2]).encode())
buf = b""
while True:
    try:
        chunk = s.recv(65536)
    except socket.timeout:
        break
    if not chunk:
        break
    buf += chunk
sys.stdout.write(buf.decode())
"#;

async fn kea(session: &Session, socket: &str, command: &str) -> Result<serde_json::Value, String> {
    let out = session
        .exec(&format!("python3 - '{socket}' '{command}'"), Some(KEA_COMMAND.as_bytes()))
        .await
        .map_err(|e| e.to_string())?;
    if !out.ok() {
        return Err(format!("{command} on {socket}: {}", out.stderr_str().trim().lines().last().unwrap_or("failed")));
    }
    parse_kea_answer(command, &out.stdout_str())
}

/// A control socket's answer: one object, or a list of them (from the agent) of which the
/// first counts. Anything else, an empty list included, is a failed check, not a panic.
fn parse_kea_answer(command: &str, text: &str) -> Result<serde_json::Value, String> {
    let text = text.trim();
    let v: serde_json::Value = serde_json::from_str(text).map_err(|e| format!("{command}: not JSON ({e}): {text}"))?;
    let v = match v {
        serde_json::Value::Array(a) => a
            .into_iter()
            .next()
            .ok_or_else(|| format!("{command}: kea answered an empty list ([]) instead of a result"))?,
        v => v,
    };
    if !v.is_object() {
        return Err(format!("{command}: kea answered {v} instead of a result object"));
    }
    if v["result"] != 0 {
        return Err(format!("{command}: result {} {}", v["result"], v["text"]));
    }
    Ok(v)
}

fn status_detail(v: &serde_json::Value) -> String {
    let a = &v["arguments"];
    format!("pid {}, up {} s", a["pid"], a["uptime"])
}

/// The subnet, pools and reservations Kea runs with, against the answers.
fn config_matches(v: &serde_json::Value, a: &Answers) -> Result<String, String> {
    let subnets = v["arguments"]["Dhcp4"]["subnet4"].as_array().cloned().unwrap_or_default();
    let want = a.network.subnet.to_string();
    let Some(s) = subnets.iter().find(|s| s["subnet"] == want.as_str()) else {
        return Err(format!("kea-dhcp4 runs without subnet {want}"));
    };
    let norm = |p: &str| p.split('-').map(str::trim).collect::<Vec<_>>().join("-");
    let pools: Vec<String> = s["pools"]
        .as_array()
        .map(|ps| ps.iter().filter_map(|p| p["pool"].as_str().map(norm)).collect())
        .unwrap_or_default();
    let mut missing = Vec::new();
    for r in &a.network.dhcp_ranges {
        let p = format!("{}-{}", r.start, r.end);
        if !pools.contains(&p) {
            missing.push(format!("pool {p}"));
        }
    }
    let reservations = s["reservations"].as_array().cloned().unwrap_or_default();
    for r in &a.network.reservations {
        let found = reservations.iter().any(|x| {
            x["ip-address"] == r.address.to_string().as_str()
                && x["hw-address"].as_str().map(str::to_lowercase) == Some(r.mac.to_string())
        });
        if !found {
            missing.push(format!("reservation {} {}", r.mac, r.address));
        }
    }
    if !missing.is_empty() {
        return Err(format!("kea-dhcp4 runs without {}", missing.join(", ")));
    }
    Ok(format!("subnet {want}, {} pool(s), {} reservation(s)", pools.len(), reservations.len()))
}

/// One lease from Kea's memfile CSV.
#[derive(Debug, Clone, PartialEq)]
pub struct Lease {
    pub address: Ipv4Addr,
    pub hwaddr: String,
    pub expire: u64,
    pub hostname: String,
    pub state: u32,
}

/// The current leases of memfile CSV text (oldest file first: the last line of an address wins).
pub fn parse_leases(text: &str, now: u64) -> Vec<Lease> {
    let mut cols: Vec<String> = Vec::new();
    let mut by_addr: BTreeMap<Ipv4Addr, Lease> = BTreeMap::new();
    for line in text.lines() {
        if line.starts_with("address,") {
            cols = line.split(',').map(str::to_string).collect();
            continue;
        }
        if cols.is_empty() {
            continue;
        }
        let f: Vec<&str> = line.split(',').collect();
        let get = |name: &str| cols.iter().position(|c| c == name).and_then(|i| f.get(i)).copied().unwrap_or("");
        let Ok(address) = get("address").parse::<Ipv4Addr>() else { continue };
        let lease = Lease {
            address,
            hwaddr: get("hwaddr").to_string(),
            expire: get("expire").parse().unwrap_or(0),
            hostname: get("hostname").replace("&#x2c", ","),
            state: get("state").parse().unwrap_or(0),
        };
        by_addr.insert(address, lease);
    }
    let mut live: Vec<Lease> =
        by_addr.into_values().filter(|l| l.state == 0 && l.expire > now && !l.hwaddr.is_empty()).collect();
    live.sort_by_key(|l| std::cmp::Reverse(l.expire));
    live
}

async fn discover_from(probe_host: &Host, state: &StateDir, dhcp_host: &Host, a: &Answers) -> Row {
    let check = format!("DHCPDISCOVER from {}", probe_host.name);
    let t = Instant::now();
    let session = match connect(probe_host, state).await {
        Ok(s) => s,
        Err(e) => return Row::new(SERVICE, &dhcp_host.name, check, Outcome::Fail, e, t.elapsed()),
    };
    let cmd = format!("command -v python3 >/dev/null || exit 3; python3 - --wait 2 '{}'", probe_host.address);
    let out = session.exec(&cmd, Some(PROBE.as_bytes())).await;
    session.close().await;
    let out = match out {
        Ok(o) => o,
        Err(e) => return Row::new(SERVICE, &dhcp_host.name, check, Outcome::Fail, e.to_string(), t.elapsed()),
    };
    if out.status == 3 {
        return Row::new(
            SERVICE,
            &dhcp_host.name,
            check,
            Outcome::Skip,
            format!("no python3 on {}", probe_host.name),
            t.elapsed(),
        );
    }
    if out.status == 2 {
        return Row::new(
            SERVICE,
            &dhcp_host.name,
            check,
            Outcome::Skip,
            format!("the probe could not run on {}: {}", probe_host.name, out.stderr_str().trim()),
            t.elapsed(),
        );
    }
    // "server <id> from <source> offers <address>"
    let mut ours = None;
    let mut others = Vec::new();
    for line in out.stdout_str().lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        if let ["server", id, "from", src, "offers", addr] = f.as_slice() {
            let ip: Option<Ipv4Addr> = addr.parse().ok();
            if *id == dhcp_host.address.to_string() || *src == dhcp_host.address.to_string() {
                ours = ip;
            } else {
                others.push(format!("{id} (from {src}, offers {addr})"));
            }
        }
    }
    let in_range = |ip: Ipv4Addr| {
        a.network.dhcp_ranges.iter().any(|r| (u32::from(r.start)..=u32::from(r.end)).contains(&u32::from(ip)))
    };
    let r = match ours {
        None => Err(format!("no offer from {} within 2 s", dhcp_host.address)),
        Some(ip) if !in_range(ip) && !a.network.dhcp_ranges.is_empty() => {
            Err(format!("offered {ip}, outside every range"))
        }
        Some(ip) if !others.is_empty() && !a.network.allow_foreign_dhcp => Err(format!(
            "offer of {ip} from {}, but other servers answer too: {}",
            dhcp_host.address,
            others.join(", ")
        )),
        Some(ip) => Ok(if others.is_empty() {
            format!("offer of {ip} from {}; no other server answered", dhcp_host.address)
        } else {
            format!("offer of {ip} from {}; also answering (allowed): {}", dhcp_host.address, others.join(", "))
        }),
    };
    Row::from_result(SERVICE, &dhcp_host.name, check, r, t.elapsed())
}

/// Every DHCP check of the site. `down`: hosts that did not answer (not used to probe).
pub async fn verify(a: &Answers, state: &StateDir, down: &BTreeMap<String, String>) -> Vec<Row> {
    let Some((_, host)) = a.hosts_with(Role::Dhcp).next() else {
        return Vec::new();
    };
    let mut rows = Vec::new();
    let t = Instant::now();
    let session = match connect(host, state).await {
        Ok(s) => s,
        Err(e) => return vec![Row::new(SERVICE, &host.name, "kea-dhcp4 status", Outcome::Fail, e, t.elapsed())],
    };
    let (r, took) = timed(kea(&session, SOCKET4, "status-get")).await;
    rows.push(Row::from_result(SERVICE, &host.name, "kea-dhcp4 status", r.map(|v| status_detail(&v)), took));
    let (r, took) = timed(kea(&session, SOCKET4, "config-get")).await;
    rows.push(Row::from_result(
        SERVICE,
        &host.name,
        "kea-dhcp4 configuration",
        r.and_then(|v| config_matches(&v, a)),
        took,
    ));
    let (r, took) = timed(kea(&session, SOCKET_D2, "status-get")).await;
    rows.push(Row::from_result(SERVICE, &host.name, "kea-dhcp-ddns status", r.map(|v| status_detail(&v)), took));

    // The leases, then the segment.
    let t = Instant::now();
    let leases = session
        .exec(&format!("cat {LEASES}.2 {LEASES}.1 {LEASES} 2>/dev/null; true"), None)
        .await
        .map(|o| o.stdout_str());
    session.close().await;
    let now = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    match leases {
        Err(e) => rows.push(Row::new(SERVICE, &host.name, "leases", Outcome::Fail, e.to_string(), t.elapsed())),
        Ok(text) => {
            let live = parse_leases(&text, now);
            let read = t.elapsed();
            if live.is_empty() {
                rows.push(Row::new(
                    SERVICE,
                    &host.name,
                    "leases",
                    Outcome::Skip,
                    "no client holds a lease: nothing to resolve",
                    read,
                ));
            }
            let dns_host = a.hosts_with(Role::Dns).next().map(|(_, h)| h);
            let dns = match dns_host {
                // Each lookup would wait for its own timeout.
                Some(h) if down.contains_key(&h.name) => {
                    if !live.is_empty() {
                        rows.push(Row::new(
                            SERVICE,
                            &host.name,
                            "leases",
                            Outcome::Skip,
                            format!("{} lease(s) not resolved: the DNS server {} is unreachable", live.len(), h.name),
                            read,
                        ));
                    }
                    None
                }
                Some(h) => Some(Server::new(IpAddr::V4(h.address))),
                None => None,
            };
            for l in live.iter().take(MAX_LEASES) {
                let check = format!("lease {}", l.address);
                let Some(dns) = &dns else { continue };
                if l.hostname.is_empty() {
                    rows.push(Row::new(
                        SERVICE,
                        &host.name,
                        check,
                        Outcome::Fail,
                        format!("{} has no name in DNS", l.hwaddr),
                        Duration::ZERO,
                    ));
                    continue;
                }
                let (r, took) = timed(forward_and_reverse(dns, &l.hostname, l.address)).await;
                let r = r.map(|d| format!("{d} ({}, expires in {} s)", l.hwaddr, l.expire.saturating_sub(now)));
                rows.push(Row::from_result(SERVICE, &host.name, check, r, took + read));
            }
        }
    }

    // Another host of the site sends the DISCOVER; the DHCP host itself cannot see Kea's offers.
    let others = a.hosts.iter().filter(|h| h.name != host.name).count();
    match a.hosts.iter().find(|h| h.name != host.name && !down.contains_key(&h.name)) {
        Some(other) => rows.push(discover_from(other, state, host, a).await),
        None if others > 0 => rows.push(Row::new(
            SERVICE,
            &host.name,
            "DHCPDISCOVER",
            Outcome::Fail,
            "every other host of the site is unreachable: no host to send the DISCOVER from",
            Duration::ZERO,
        )),
        None => rows.push(Row::new(
            SERVICE,
            &host.name,
            "DHCPDISCOVER",
            Outcome::Skip,
            "the DHCP server is the only host of the site; its own offers do not loop back to it",
            Duration::ZERO,
        )),
    }
    rows
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kea_answers_that_are_not_a_result_fail_the_check() {
        let e = parse_kea_answer("status-get", "[]").unwrap_err();
        assert!(e.contains("empty list"), "{e}");
        assert!(parse_kea_answer("status-get", "[1]").unwrap_err().contains("instead of a result object"));
        assert!(parse_kea_answer("status-get", "").unwrap_err().contains("not JSON"));
        let e = parse_kea_answer("status-get", r#"{"result": 1, "text": "no"}"#).unwrap_err();
        assert!(e.contains("result 1"), "{e}");
        let v = parse_kea_answer("status-get", r#"[{"result": 0, "arguments": {"pid": 7}}]"#).unwrap();
        assert_eq!(v["arguments"]["pid"], 7);
    }

    #[test]
    fn the_last_line_of_an_address_wins_and_expired_leases_drop() {
        let text = "address,hwaddr,client_id,valid_lifetime,expire,subnet_id,fqdn_fwd,fqdn_rev,hostname,state,user_context\n\
                    10.77.0.100,0a:77:01:02:03:04,,600,1000,1,1,1,c1.dd.groundwork.test.,0,\n\
                    10.77.0.101,0a:77:01:02:03:05,,600,900,1,1,1,old.dd.groundwork.test.,0,\n\
                    10.77.0.100,0a:77:01:02:03:04,,600,2000,1,1,1,c1.dd.groundwork.test.,0,\n\
                    10.77.0.102,0a:77:01:02:03:06,,600,2000,1,1,1,gone.dd.groundwork.test.,2,\n";
        let l = parse_leases(text, 1500);
        assert_eq!(l.len(), 1);
        assert_eq!(l[0].address, Ipv4Addr::new(10, 77, 0, 100));
        assert_eq!(l[0].expire, 2000);
        assert_eq!(l[0].hostname, "c1.dd.groundwork.test.");
    }
}
