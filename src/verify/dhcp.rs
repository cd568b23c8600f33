//! DHCP, checked on the DHCP host over SSH and on the segment:
//!
//! - kea-dhcp4 and kea-dhcp-ddns answer `status-get` on their control sockets (read with
//!   socat, which the dhcp role installs), and the subnet, pools and reservations kea-dhcp4 runs
//!   with (`config-get`) are the answer file's.
//! - From this machine, when it sits on the DHCP segment (not on the DHCP server itself: Kea's
//!   raw socket replies never loop back to its own host), a DHCPDISCOVER ([`super::discover`])
//!   gets an offer from the DHCP host, with an address of a range; any other server answering
//!   is named (a failure unless allow-foreign-dhcp = true). Off the segment, or without the
//!   right to listen on port 68, the row is `skip` and says why.
//! - Every active lease in Kea's lease file (the newest few) resolves both ways at the primary
//!   DNS server: the client's name to its address and back.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use super::discover::{self, Segment};
use super::dns::{Server, forward_and_reverse};
use super::{Failure, Row, connect, timed};
use crate::answers::model::{Answers, Host, Role};
use crate::ssh::Session;
use crate::state::StateDir;

const SERVICE: &str = "dhcp";
const SOCKET4: &str = "/run/kea/kea4-ctrl-socket";
const SOCKET_D2: &str = "/run/kea/kea-ddns-ctrl-socket";
const LEASES: &str = "/var/lib/kea/kea-leases4.csv";
/// How many leases (the newest) are checked in DNS.
const MAX_LEASES: usize = 5;
/// The check of the DISCOVER sent from this machine.
pub const DISCOVER_CHECK: &str = "DHCPDISCOVER from this machine";

/// The shell command that sends one command (on stdin) to a Kea control socket and prints the
/// answer; Kea closes the connection after it, which ends socat.
fn kea_command(socket: &str) -> String {
    format!(
        "command -v socat >/dev/null || {{ echo 'socat is not installed (the dhcp role installs it: run apply)' >&2; exit 127; }}; \
         exec timeout 10 socat -t 5 - UNIX-CONNECT:'{socket}'"
    )
}

async fn kea(session: &Session, socket: &str, command: &str) -> Result<serde_json::Value, Failure> {
    let out = session
        .exec(&kea_command(socket), Some(format!("{{\"command\": \"{command}\"}}").as_bytes()))
        .await
        .map_err(|e| e.to_string())?;
    if !out.ok() {
        let said = format!("{command} on {socket}: {}", out.stderr_str().trim().lines().last().unwrap_or("failed"));
        // 124: `timeout` stopped socat, Kea did not answer.
        return Err(if out.status == 124 { Failure::timeout(said) } else { Failure::error(said) });
    }
    parse_kea_answer(command, &out.stdout_str()).map_err(Failure::error)
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
fn config_matches(v: &serde_json::Value, a: &Answers) -> Result<String, Failure> {
    let subnets = v["arguments"]["Dhcp4"]["subnet4"].as_array().cloned().unwrap_or_default();
    let want = a.network.subnet.to_string();
    let Some(s) = subnets.iter().find(|s| s["subnet"] == want.as_str()) else {
        return Err(Failure::mismatch(format!("kea-dhcp4 runs without subnet {want}")));
    };
    let norm = |p: &str| match p.trim().parse::<ipnetwork::Ipv4Network>() {
        // Kea shows a pool that is exactly a prefix as one (10.0.0.116-10.0.0.119 as .116/30).
        Ok(net) if p.contains('/') => format!("{}-{}", net.network(), net.broadcast()),
        _ => p.split('-').map(str::trim).collect::<Vec<_>>().join("-"),
    };
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
        return Err(Failure::mismatch(format!("kea-dhcp4 runs without {}", missing.join(", "))));
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

/// The DISCOVER from this machine: the row, `skip` with the reason where it cannot be sent.
pub async fn discover_row(dhcp_host: &Host, a: &Answers) -> Row {
    let t = Instant::now();
    let skip = |why: String| Row::skipped(SERVICE, &dhcp_host.name, DISCOVER_CHECK, why, t.elapsed());
    let target = dhcp_host.address;
    let iface = match discover::local_ipv4().map(|l| discover::segment_of(&l, target)) {
        Err(e) => return skip(format!("not checked: {e}")),
        Ok(Segment::Off) => {
            return skip(format!(
                "not checked: this machine has no address in the subnet of {target}, so it is not on the DHCP segment"
            ));
        }
        Ok(Segment::Itself(i)) => {
            return skip(format!(
                "not checked: this machine is the DHCP server ({target} on {i}); its own offers do not loop back to it"
            ));
        }
        Ok(Segment::On(i)) => i,
    };
    match discover::listen(&iface).await {
        Err(e) => skip(format!("not checked: {e}")),
        Ok(offers) => {
            let ranges: Vec<(Ipv4Addr, Ipv4Addr)> = a.network.dhcp_ranges.iter().map(|r| (r.start, r.end)).collect();
            let r = discover::judge(&offers, target, &ranges, a.network.allow_foreign_dhcp, &iface);
            Row::from_result(SERVICE, &dhcp_host.name, DISCOVER_CHECK, r, t.elapsed())
        }
    }
}

/// Every DHCP check of the site. `down`: hosts that did not answer (the DNS server among them
/// is not asked about leases). The DISCOVER goes out while the DHCP host is asked over SSH.
pub async fn verify(a: &Answers, state: &StateDir, down: &BTreeMap<String, String>) -> Vec<Row> {
    let Some((_, host)) = a.hosts_with(Role::Dhcp).next() else {
        return Vec::new();
    };
    let (mut rows, discover) = tokio::join!(on_host(host, a, state, down), discover_row(host, a));
    rows.push(discover);
    rows
}

/// The checks made over SSH on the DHCP host: Kea's sockets and leases, and the leases in DNS.
async fn on_host(host: &Host, a: &Answers, state: &StateDir, down: &BTreeMap<String, String>) -> Vec<Row> {
    let mut rows = Vec::new();
    let t = Instant::now();
    let session = match connect(host, state).await {
        Ok(s) => s,
        Err(e) => return vec![Row::failed(SERVICE, &host.name, "kea-dhcp4 status", e.into(), t.elapsed())],
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
        Err(e) => rows.push(Row::failed(SERVICE, &host.name, "leases", Failure::error(e.to_string()), t.elapsed())),
        Ok(text) => {
            let live = parse_leases(&text, now);
            let read = t.elapsed();
            if live.is_empty() {
                rows.push(Row::skipped(
                    SERVICE,
                    &host.name,
                    "leases",
                    "no client holds a lease: nothing to resolve",
                    read,
                ));
            }
            let dns_host = a.hosts_with(Role::Dns).next().map(|(_, h)| h);
            let dns = match dns_host {
                // Each lookup would wait for its own timeout.
                Some(h) if down.contains_key(&h.name) => {
                    if !live.is_empty() {
                        rows.push(Row::skipped(
                            SERVICE,
                            &host.name,
                            "leases",
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
                    rows.push(Row::failed(
                        SERVICE,
                        &host.name,
                        check,
                        Failure::mismatch(format!("{} has no name in DNS", l.hwaddr)),
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

    rows
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::verify::{Cause, Outcome};

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

    /// The configuration Kea runs with must hold the answers' subnet, pools and reservations;
    /// anything missing is a mismatch, named.
    #[test]
    fn kea_without_the_subnet_or_a_pool_is_a_mismatch() {
        use serde_json::json;
        let a = crate::answers::load_str(crate::LAB_EXAMPLE.0, crate::LAB_EXAMPLE.1).unwrap().answers;
        assert!(!a.network.dhcp_ranges.is_empty(), "the lab example has DHCP ranges");
        let subnet = a.network.subnet.to_string();
        let pools: Vec<_> =
            a.network.dhcp_ranges.iter().map(|r| json!({"pool": format!("{} - {}", r.start, r.end)})).collect();
        let reservations: Vec<_> = a
            .network
            .reservations
            .iter()
            .map(|r| json!({"ip-address": r.address.to_string(), "hw-address": r.mac.to_string()}))
            .collect();
        let running = |subnet4: serde_json::Value| json!({"result": 0, "arguments": {"Dhcp4": {"subnet4": subnet4}}});

        let all = running(json!([{"subnet": subnet, "pools": pools, "reservations": reservations}]));
        assert!(config_matches(&all, &a).is_ok(), "{:?}", config_matches(&all, &a));
        // A range that is exactly a prefix, as Kea shows it.
        let mut prefixed = a.clone();
        prefixed.network.dhcp_ranges = vec![crate::answers::model::DhcpRange {
            start: "10.77.0.116".parse().unwrap(),
            end: "10.77.0.119".parse().unwrap(),
        }];
        let as_prefix =
            running(json!([{"subnet": subnet, "pools": [{"pool": "10.77.0.116/30"}], "reservations": reservations}]));
        config_matches(&as_prefix, &prefixed).unwrap();
        let other_subnet = running(json!([{"subnet": "10.99.0.0/24", "pools": pools}]));
        assert_eq!(
            config_matches(&other_subnet, &a).unwrap_err(),
            Failure::mismatch(format!("kea-dhcp4 runs without subnet {subnet}"))
        );
        let no_pools = running(json!([{"subnet": subnet, "reservations": reservations}]));
        let e = config_matches(&no_pools, &a).unwrap_err();
        assert_eq!(e.cause, Cause::Mismatch);
        assert!(e.message.starts_with("kea-dhcp4 runs without pool "), "{e}");
    }

    /// Off the DHCP segment the DISCOVER is not sent, and the row says so: `skip`, not a pass.
    #[tokio::test]
    async fn off_the_segment_the_discover_row_is_skipped_and_says_why() {
        let mut a = crate::answers::load_str(crate::LAB_EXAMPLE.0, crate::LAB_EXAMPLE.1).unwrap().answers;
        let target = Ipv4Addr::new(198, 51, 100, 10); // TEST-NET-2
        if discover::segment_of(&discover::local_ipv4().unwrap(), target) != Segment::Off {
            eprintln!("SKIPPED: this machine has an address in 198.51.100.0/24");
            return;
        }
        let host = a.hosts.iter_mut().find(|h| h.roles.contains(&Role::Dhcp)).unwrap();
        host.address = target;
        let host = host.clone();
        let row = discover_row(&host, &a).await;
        assert_eq!((row.check.as_str(), row.result), (DISCOVER_CHECK, Outcome::Skip), "{}", row.detail);
        assert_eq!(
            row.detail,
            "not checked: this machine has no address in the subnet of 198.51.100.10, so it is not on the DHCP segment"
        );
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
