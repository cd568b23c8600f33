//! DNS, checked as a client sees it (hickory over UDP, straight to each server of the dns role):
//!
//! - SOA of the internal domain and of the reverse zone: an authoritative answer from every
//!   server; a secondary must serve the primary's serial (it gets a few seconds to catch up).
//! - A of every host (and of the service names ldap/pg/mariadb/k3s), PTR of every host address.
//! - Recursion: available to this machine when its address is inside the site subnet (the RA
//!   flag of an answer; no upstream needed); refused when this machine has an address outside
//!   the subnet that the server answers to (a recursive query for an outside name from that
//!   address must get REFUSED). Without such an address the check is skipped and says so.
//! - On the primary: a TSIG-signed update that adds a TXT record under a scratch name, seen on
//!   the primary and (through NOTIFY and IXFR) on every secondary, then a signed delete; an
//!   unsigned update must be refused.

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use base64::Engine as _;
use futures::StreamExt as _;
use hickory_net::DnsHandle as _;
use hickory_net::proto::op::{
    DnsRequest, DnsRequestOptions, DnsResponse, Message, Query, ResponseCode, update_message,
};
use hickory_net::proto::rr::rdata::TXT;
use hickory_net::proto::rr::rdata::tsig::TsigAlgorithm;
use hickory_net::proto::rr::{Name, RData, Record, RecordSet, RecordType, TSigner};
use hickory_net::runtime::TokioRuntimeProvider;
use hickory_net::udp::UdpClientStream;

use super::{Cause, Failure, Row, timed};
use crate::answers::model::{Answers, Host, Role, reverse_zone};
use crate::state::Secrets;

const SERVICE: &str = "dns";
/// Per request; BIND answers the site's own zones in well under a millisecond.
const TIMEOUT: Duration = Duration::from_secs(2);
/// How long a secondary may take to show what the primary has (NOTIFY, then IXFR).
const CATCH_UP: Duration = Duration::from_secs(12);

/// A DNS server as a client reaches it.
#[derive(Clone)]
pub struct Server {
    pub addr: SocketAddr,
    /// Local address to send from (None: the kernel's choice).
    pub bind: Option<IpAddr>,
    pub signer: Option<TSigner>,
}

impl Server {
    pub fn new(ip: IpAddr) -> Server {
        Server { addr: SocketAddr::new(ip, 53), bind: None, signer: None }
    }

    /// The server's answer; hickory ends the stream without one when its own timeout passes.
    pub async fn send(&self, req: DnsRequest) -> Result<DnsResponse, Failure> {
        let exchange = UdpClientStream::builder(self.addr, TokioRuntimeProvider::new())
            .with_timeout(Some(TIMEOUT))
            .with_max_retries(1)
            .with_bind_addr(self.bind.map(|ip| SocketAddr::new(ip, 0)))
            .with_signer(self.signer.clone())
            .exchange();
        let mut stream = exchange.send(req);
        match tokio::time::timeout(TIMEOUT * 3, stream.next()).await {
            Ok(Some(Ok(r))) => Ok(r),
            Ok(Some(Err(e))) => Err(Failure::error(e.to_string())),
            Ok(None) => Err(Failure::timeout("no answer")),
            Err(_) => Err(Failure::timeout(format!("no answer within {} s", (TIMEOUT * 3).as_secs()))),
        }
    }

    pub async fn query(&self, name: &Name, rtype: RecordType, recursion: bool) -> Result<DnsResponse, Failure> {
        let mut opts = DnsRequestOptions::default();
        opts.recursion_desired = recursion;
        self.send(DnsRequest::from_query(Query::query(name.clone(), rtype), opts)).await
    }

    pub async fn update(&self, msg: Message) -> Result<ResponseCode, Failure> {
        self.send(DnsRequest::from(msg)).await.map(|r| r.response_code)
    }
}

/// The site's TSIG key from the secrets file, as its clients sign with it (during a
/// rotation, the key being rolled out: [`Secrets::tsig_client`]).
pub fn signer(secrets: &Secrets) -> Result<TSigner, String> {
    let (name, b64) = secrets
        .tsig_client()
        .ok_or("the secrets file has no tsig.ddns-key (has `apply` run with this state directory?)")?;
    let key =
        base64::engine::general_purpose::STANDARD.decode(b64).map_err(|e| format!("tsig.{name} is not base64: {e}"))?;
    let name = Name::from_ascii(format!("{name}.")).map_err(|e| e.to_string())?;
    TSigner::new(key, TsigAlgorithm::HmacSha256, name, 300).map_err(|e| e.to_string())
}

pub fn fqdn(s: &str) -> Result<Name, String> {
    let s = if s.ends_with('.') { s.to_string() } else { format!("{s}.") };
    Name::from_ascii(&s).map_err(|e| format!("`{s}`: {e}"))
}

/// `10.77.0.5` -> `5.0.77.10.in-addr.arpa.`
pub fn ptr_name(ip: Ipv4Addr) -> String {
    let o = ip.octets();
    format!("{}.{}.{}.{}.in-addr.arpa.", o[3], o[2], o[1], o[0])
}

fn a_records(r: &DnsResponse) -> BTreeSet<Ipv4Addr> {
    r.answers
        .iter()
        .filter_map(|rec| match &rec.data {
            RData::A(a) => Some(a.0),
            _ => None,
        })
        .collect()
}

fn ptr_records(r: &DnsResponse) -> BTreeSet<String> {
    r.answers
        .iter()
        .filter_map(|rec| match &rec.data {
            RData::PTR(p) => Some(p.0.to_ascii().to_lowercase()),
            _ => None,
        })
        .collect()
}

fn soa_serial(r: &DnsResponse) -> Option<u32> {
    r.answers.iter().find_map(|rec| match &rec.data {
        RData::SOA(s) => Some(s.serial),
        _ => None,
    })
}

/// The serial of an authoritative SOA answer.
async fn soa(server: &Server, zone: &Name) -> Result<u32, Failure> {
    let r = server.query(zone, RecordType::SOA, false).await?;
    match r.response_code {
        ResponseCode::NoError => {}
        ResponseCode::Refused => return Err(Failure::refused(format!("{}", r.response_code))),
        code => return Err(Failure::mismatch(format!("{code}"))),
    }
    if !r.authoritative {
        return Err(Failure::mismatch("answer is not authoritative (the zone is not loaded here)"));
    }
    soa_serial(&r).ok_or_else(|| Failure::mismatch("no SOA record in the answer"))
}

/// Each DNS server of the site answers its internal domain's SOA with authority, all at once:
/// the quick check `apply --try` makes first, so a server that stopped answering is reverted
/// in seconds, not after the timeouts of every later query.
pub async fn soa_rows(a: &Answers) -> Vec<Row> {
    let zone = match fqdn(&a.site.internal_domain) {
        Ok(z) => z,
        Err(e) => return vec![Row::failed(SERVICE, "-", "SOA", Failure::error(e), Duration::ZERO)],
    };
    let checks = a.hosts_with(Role::Dns).map(|(_, h)| {
        let zone = zone.clone();
        async move {
            let server = Server::new(IpAddr::V4(h.address));
            let (r, took) = timed(soa(&server, &zone)).await;
            let r = r.map(|serial| format!("authoritative, serial {serial}"));
            Row::from_result(SERVICE, &h.name, format!("SOA {zone}"), r, took)
        }
    });
    futures::future::join_all(checks).await
}

/// One failure for a list of names: the words of each, the cause of the first.
fn all_failures(bad: Vec<Failure>) -> Failure {
    let cause = bad.first().map_or(Cause::Error, |f| f.cause);
    Failure::new(cause, bad.iter().map(|f| f.message.as_str()).collect::<Vec<_>>().join("; "))
}

/// Names that must resolve to addresses: every host, plus the service names of the roles.
pub fn expected_addresses(a: &Answers) -> Vec<(String, BTreeSet<Ipv4Addr>)> {
    let domain = &a.site.internal_domain;
    let mut out: Vec<(String, BTreeSet<Ipv4Addr>)> =
        a.hosts.iter().map(|h| (format!("{}.{domain}.", h.name), BTreeSet::from([h.address]))).collect();
    let taken = |n: &str| a.hosts.iter().any(|h| h.name == n);
    // The API endpoint's label, when the zone serves it (as the dns role renders it).
    let k3s_label = a.k3s.as_ref().and_then(|k| k.api_label(domain));
    for (alias, role, all) in [
        ("ldap", Role::Ldap, false),
        ("pg", Role::Postgresql, false),
        ("mariadb", Role::Mariadb, false),
        (k3s_label.as_deref().unwrap_or(""), Role::K3sServer, true),
    ] {
        if alias.is_empty() || taken(alias) {
            continue;
        }
        let addrs: BTreeSet<Ipv4Addr> =
            a.hosts_with(role).take(if all { usize::MAX } else { 1 }).map(|(_, h)| h.address).collect();
        if !addrs.is_empty() {
            out.push((format!("{alias}.{domain}."), addrs));
        }
    }
    out
}

async fn check_a(server: &Server, expected: &[(String, BTreeSet<Ipv4Addr>)]) -> Result<String, Failure> {
    let mut bad = Vec::new();
    for (name, want) in expected {
        match server.query(&fqdn(name)?, RecordType::A, false).await {
            Ok(r) => {
                let got = a_records(&r);
                if !want.is_subset(&got) || got.is_empty() {
                    let got: Vec<String> = got.iter().map(|g| g.to_string()).collect();
                    bad.push(Failure::mismatch(format!(
                        "{name} -> {} ({}), want {}",
                        if got.is_empty() { "nothing".into() } else { got.join(",") },
                        r.response_code,
                        want.iter().map(|w| w.to_string()).collect::<Vec<_>>().join(",")
                    )));
                }
            }
            Err(e) => bad.push(e.prefixed(name)),
        }
    }
    if bad.is_empty() {
        Ok(format!("{} name(s) resolve to the answer file's addresses", expected.len()))
    } else {
        Err(all_failures(bad))
    }
}

async fn check_ptr(server: &Server, a: &Answers) -> Result<String, Failure> {
    let mut bad = Vec::new();
    for h in &a.hosts {
        let want = format!("{}.{}.", h.name, a.site.internal_domain).to_lowercase();
        let name = ptr_name(h.address);
        match server.query(&fqdn(&name)?, RecordType::PTR, false).await {
            Ok(r) => {
                let got = ptr_records(&r);
                if !got.contains(&want) {
                    bad.push(Failure::mismatch(format!(
                        "{} -> {:?} ({}), want {want}",
                        h.address, got, r.response_code
                    )));
                }
            }
            Err(e) => bad.push(e.prefixed(h.address)),
        }
    }
    if bad.is_empty() {
        Ok(format!("{} address(es) point back to their names", a.hosts.len()))
    } else {
        Err(all_failures(bad))
    }
}

/// This machine's source address towards `server` (no packet is sent).
fn source_towards(server: SocketAddr) -> Option<IpAddr> {
    let s = std::net::UdpSocket::bind(("0.0.0.0", 0)).ok()?;
    s.connect(server).ok()?;
    s.local_addr().ok().map(|a| a.ip())
}

/// IPv4 addresses of this machine outside `subnet` (not loopback).
fn outside_addresses(a: &Answers) -> Vec<Ipv4Addr> {
    if_addrs::get_if_addrs()
        .unwrap_or_default()
        .into_iter()
        .filter_map(|i| match i.addr {
            if_addrs::IfAddr::V4(v4) if !v4.ip.is_loopback() && !a.network.subnet.contains(v4.ip) => Some(v4.ip),
            _ => None,
        })
        .collect()
}

async fn recursion_inside(server: &Server, a: &Answers, zone: &Name) -> Row {
    let host_label = server.addr.ip().to_string();
    let src = source_towards(server.addr);
    let inside = matches!(src, Some(IpAddr::V4(ip)) if a.network.subnet.contains(ip));
    let check = "recursion for the site";
    if !inside {
        let from = src.map(|s| s.to_string()).unwrap_or_else(|| "?".into());
        return Row::skipped(
            SERVICE,
            &host_label,
            check,
            format!(
                "this machine reaches the server from {from}, outside {}; not testable from here",
                a.network.subnet
            ),
            Duration::ZERO,
        );
    }
    let (r, took) = timed(server.query(zone, RecordType::SOA, true)).await;
    let from = src.map(|s| s.to_string()).unwrap_or_default();
    let r = r.and_then(|r| {
        if r.recursion_available {
            Ok(format!("available to {from} (RA set)"))
        } else {
            Err(Failure::mismatch(format!("not available to {from}, which is inside {} (RA clear)", a.network.subnet)))
        }
    });
    Row::from_result(SERVICE, &host_label, check, r, took)
}

async fn recursion_outside(server: &Server, a: &Answers, zone: &Name) -> Row {
    let check = "recursion refused outside";
    let host_label = server.addr.ip().to_string();
    let t = Instant::now();
    let candidates = outside_addresses(a);
    // On the DNS server itself every source address is one of its own, which BIND's
    // `localhost` ACL (in the site's allow-recursion) admits: no query from here is outside.
    if let IpAddr::V4(v4) = server.addr.ip()
        && crate::ssh::is_this_machine(v4)
    {
        return Row::skipped(
            SERVICE,
            &host_label,
            check,
            format!(
                "not checked: this machine is the DNS server ({v4}); BIND counts all its own addresses as localhost, so run verify from another machine to check this"
            ),
            t.elapsed(),
        );
    }
    if candidates.is_empty() {
        return Row::skipped(
            SERVICE,
            &host_label,
            check,
            format!("this machine has no address outside {}; not testable from here", a.network.subnet),
            t.elapsed(),
        );
    }
    let mut tried = Vec::new();
    for ip in candidates.into_iter().take(3) {
        let from = Server { bind: Some(IpAddr::V4(ip)), ..server.clone() };
        // Does the server answer this address at all (its own zones are open to anyone)?
        let Ok(first) = from.query(zone, RecordType::SOA, true).await else {
            tried.push(ip.to_string());
            continue;
        };
        let outside_name = fqdn("groundwork-verify.example.com").expect("valid name");
        let r = from.query(&outside_name, RecordType::A, true).await;
        let result = match r {
            Ok(r) if r.response_code == ResponseCode::Refused && !first.recursion_available => {
                Ok(format!("from {ip}: recursive query REFUSED, RA clear"))
            }
            Ok(r) => Err(Failure::mismatch(format!(
                "from {ip}, outside {}: recursive query answered {} (RA {})",
                a.network.subnet,
                r.response_code,
                if r.recursion_available { "set" } else { "clear" }
            ))),
            Err(e) if e.message.contains("Refused") || e.message.contains("refused") => {
                Ok(format!("from {ip}: recursive query REFUSED"))
            }
            Err(e) => Err(e.prefixed(format!("from {ip}"))),
        };
        return Row::from_result(SERVICE, &host_label, check, result, t.elapsed());
    }
    Row::skipped(
        SERVICE,
        &host_label,
        check,
        format!(
            "no answer to this machine's outside address(es) {} (no route back from the server); not testable from here",
            tried.join(", ")
        ),
        t.elapsed(),
    )
}

/// Signed add, seen on every server, signed delete; unsigned update refused.
async fn update_round_trip(primary: (&Host, &Server), secondaries: &[(&Host, Server)], zone: &Name) -> Vec<Row> {
    let (ph, ps) = primary;
    let mut rows = Vec::new();
    let label = format!("_groundwork-verify-{:08x}", rand::random::<u32>());
    let name = match fqdn(&format!("{label}.{}", zone.to_ascii().trim_end_matches('.'))) {
        Ok(n) => n,
        Err(e) => return vec![Row::failed(SERVICE, &ph.name, "signed update", e.into(), Duration::ZERO)],
    };
    let text = format!("groundwork verify {}", humantime::format_rfc3339_seconds(std::time::SystemTime::now()));
    let record = Record::from_rdata(name.clone(), 60, RData::TXT(TXT::new(vec![text.clone()])));
    let rrset: RecordSet = record.into();

    // Unsigned first: it must change nothing.
    let unsigned = Server { signer: None, ..ps.clone() };
    let (r, took) = timed(unsigned.update(update_message::create(rrset.clone(), zone.clone(), true))).await;
    let r = match r {
        Ok(ResponseCode::Refused) => Ok("REFUSED".to_string()),
        Ok(code) => Err(Failure::mismatch(format!("answered {code}: the zone accepts updates without the key"))),
        Err(e) if e.message.to_lowercase().contains("refused") => Ok("REFUSED".to_string()),
        Err(e) => Err(e),
    };
    rows.push(Row::from_result(SERVICE, &ph.name, "unsigned update refused", r, took));

    let t = Instant::now();
    let added = match ps.update(update_message::create(rrset.clone(), zone.clone(), true)).await {
        Ok(ResponseCode::NoError) => match ps.query(&name, RecordType::TXT, false).await {
            Ok(r) if !r.answers.is_empty() => Ok(()),
            Ok(r) => {
                Err(Failure::mismatch(format!("update accepted but {name} TXT is not served ({})", r.response_code)))
            }
            Err(e) => Err(e.prefixed("update accepted but the query failed")),
        },
        Ok(code) => Err(Failure::refused(format!("signed update answered {code}"))),
        Err(e) => Err(e.prefixed("signed update")),
    };
    let add_took = t.elapsed();

    // The secondaries see it through NOTIFY and IXFR.
    let mut sec_rows = Vec::new();
    if added.is_ok() {
        for (sh, ss) in secondaries {
            let t = Instant::now();
            let mut seen = false;
            while t.elapsed() < CATCH_UP {
                if let Ok(r) = ss.query(&name, RecordType::TXT, false).await
                    && !r.answers.is_empty()
                {
                    seen = true;
                    break;
                }
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            let r = if seen {
                Ok(format!(
                    "the signed update reached {} after {:.1} s (NOTIFY, IXFR)",
                    sh.name,
                    t.elapsed().as_secs_f64()
                ))
            } else {
                Err(Failure::mismatch(format!(
                    "the signed update did not reach {} within {} s",
                    sh.name,
                    CATCH_UP.as_secs()
                )))
            };
            sec_rows.push(Row::from_result(SERVICE, &sh.name, "update reaches the secondary", r, t.elapsed()));
        }
    }

    let t = Instant::now();
    let deleted = match ps.update(update_message::delete_by_rdata(rrset, zone.clone(), true)).await {
        Ok(ResponseCode::NoError) => match ps.query(&name, RecordType::TXT, false).await {
            Ok(r) if r.answers.is_empty() => Ok(()),
            Ok(_) => Err(Failure::mismatch(format!("delete accepted but {name} TXT is still served"))),
            Err(e)
                if e.message.contains("NXDomain")
                    || e.message.contains("no records")
                    || e.message.contains("NoRecords") =>
            {
                Ok(())
            }
            Err(e) => Err(e.prefixed("delete accepted but the query failed")),
        },
        Ok(code) => Err(Failure::refused(format!("signed delete answered {code}"))),
        Err(e) => Err(e.prefixed("signed delete")),
    };
    let r = match (added, deleted) {
        (Ok(()), Ok(())) => {
            let key = ps.signer.as_ref().map(|s| s.signer_name().to_ascii()).unwrap_or_default();
            Ok(format!("TSIG {}: added and deleted TXT {name}", key.trim_end_matches('.')))
        }
        (Err(e), _) => Err(e),
        (Ok(()), Err(e)) => Err(e),
    };
    rows.push(Row::from_result(SERVICE, &ph.name, "signed update + delete", r, add_took + t.elapsed()));
    rows.extend(sec_rows);
    rows
}

/// Every DNS check of the site (nothing when no host has the dns role).
pub async fn verify(a: &Answers, secrets: &Secrets) -> Vec<Row> {
    let dns_hosts: Vec<&Host> = a.hosts_with(Role::Dns).map(|(_, h)| h).collect();
    let Some(primary) = dns_hosts.first().copied() else {
        return Vec::new();
    };
    let mut rows = Vec::new();
    let forward = match fqdn(&a.site.internal_domain) {
        Ok(n) => n,
        Err(e) => return vec![Row::failed(SERVICE, &primary.name, "zone name", e.into(), Duration::ZERO)],
    };
    let reverse = fqdn(&reverse_zone(&a.network.subnet)).expect("reverse zone names are valid");
    let servers: Vec<(&Host, Server)> = dns_hosts.iter().map(|h| (*h, Server::new(IpAddr::V4(h.address)))).collect();
    let expected = expected_addresses(a);

    // SOA: the primary's serial first; secondaries must reach it.
    for zone in [&forward, &reverse] {
        let (p, took) = timed(soa(&servers[0].1, zone)).await;
        let zone_s = zone.to_ascii();
        let pserial = p.as_ref().ok().copied();
        rows.push(Row::from_result(
            SERVICE,
            &primary.name,
            format!("SOA {zone_s}"),
            p.map(|s| format!("authoritative, serial {s} (primary)")),
            took,
        ));
        for (h, s) in &servers[1..] {
            let t = Instant::now();
            let r = loop {
                let r = soa(s, zone).await;
                match (&r, pserial) {
                    (Ok(serial), Some(want)) if *serial != want && t.elapsed() < CATCH_UP => {
                        tokio::time::sleep(Duration::from_millis(300)).await;
                    }
                    _ => break r,
                }
            };
            let r = r.and_then(|serial| match pserial {
                Some(want) if serial != want => {
                    Err(Failure::mismatch(format!("serial {serial}, the primary has {want}")))
                }
                _ => Ok(format!("authoritative, serial {serial} (secondary, in step)")),
            });
            rows.push(Row::from_result(SERVICE, &h.name, format!("SOA {zone_s}"), r, t.elapsed()));
        }
    }

    for (h, s) in &servers {
        let (r, took) = timed(check_a(s, &expected)).await;
        rows.push(Row::from_result(SERVICE, &h.name, "A records", r, took));
        let (r, took) = timed(check_ptr(s, a)).await;
        rows.push(Row::from_result(SERVICE, &h.name, "PTR records", r, took));
        let mut row = recursion_inside(s, a, &forward).await;
        row.host = h.name.clone();
        rows.push(row);
        let mut row = recursion_outside(s, a, &forward).await;
        row.host = h.name.clone();
        rows.push(row);
    }

    match signer(secrets) {
        Ok(key) => {
            let ps = Server { signer: Some(key), ..servers[0].1.clone() };
            let secs: Vec<(&Host, Server)> = servers[1..].iter().map(|(h, s)| (*h, s.clone())).collect();
            rows.extend(update_round_trip((primary, &ps), &secs, &forward).await);
        }
        Err(e) => rows.push(Row::failed(SERVICE, &primary.name, "signed update + delete", e.into(), Duration::ZERO)),
    }
    rows
}

/// Resolve `name` (A) and `ip` (PTR) at `server`: used for the leases of DHCP clients.
pub async fn forward_and_reverse(server: &Server, name: &str, ip: Ipv4Addr) -> Result<String, Failure> {
    let n = fqdn(name)?;
    let r = server.query(&n, RecordType::A, false).await.map_err(|e| e.prefixed(format!("A {name}")))?;
    let got = a_records(&r);
    if !got.contains(&ip) {
        return Err(Failure::mismatch(format!("A {name} -> {:?} ({}), want {ip}", got, r.response_code)));
    }
    let r = server
        .query(&fqdn(&ptr_name(ip))?, RecordType::PTR, false)
        .await
        .map_err(|e| e.prefixed(format!("PTR {ip}")))?;
    let want = n.to_ascii().to_lowercase();
    let got = ptr_records(&r);
    if !got.contains(&want) {
        return Err(Failure::mismatch(format!("PTR {ip} -> {:?} ({}), want {want}", got, r.response_code)));
    }
    Ok(format!("{name} <-> {ip}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_of_the_checks() {
        assert_eq!(ptr_name(Ipv4Addr::new(10, 77, 0, 5)), "5.0.77.10.in-addr.arpa.");
        assert_eq!(fqdn("a.example").unwrap().to_ascii(), "a.example.");
        let lab = crate::answers::load_str(crate::LAB_EXAMPLE.0, crate::LAB_EXAMPLE.1).unwrap().answers;
        let names: Vec<String> = expected_addresses(&lab).into_iter().map(|(n, _)| n).collect();
        assert!(names.contains(&"ldap.lab.groundwork.test.".to_string()), "{names:?}");
        assert!(names.contains(&"pg.lab.groundwork.test.".to_string()), "{names:?}");
        assert!(names.contains(&"ns1.lab.groundwork.test.".to_string()), "{names:?}");
    }

    #[test]
    fn the_api_endpoint_is_expected_only_where_the_zone_serves_it() {
        let text = include_str!("../../wizard/examples/proxmox-k3s.toml");
        let mut a = crate::answers::load_str("proxmox-k3s.toml", text).unwrap().answers;
        let domain = a.site.internal_domain.clone();
        let servers: BTreeSet<Ipv4Addr> = a.hosts_with(Role::K3sServer).map(|(_, h)| h.address).collect();
        let mut named = |endpoint: Option<&str>| {
            a.k3s.as_mut().unwrap().api_endpoint = endpoint.map(str::to_string);
            expected_addresses(&a)
                .into_iter()
                .filter(|(_, addrs)| *addrs == servers)
                .map(|(n, _)| n)
                .collect::<Vec<_>>()
        };
        assert_eq!(named(None), [format!("k3s.{domain}.")]);
        assert_eq!(named(Some(&format!("api.{domain}"))), [format!("api.{domain}.")]);
        assert!(named(Some("10.20.1.10")).is_empty());
        assert!(named(Some("k3s.elsewhere.example")).is_empty());
    }

    /// A DNS server on loopback answering each query with what `answer` makes of it (`None`:
    /// silence).
    async fn fake_dns(answer: fn(Message) -> Option<Message>) -> Server {
        let sock = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let addr = sock.local_addr().unwrap();
        tokio::spawn(async move {
            let mut buf = vec![0u8; 4096];
            while let Ok((n, from)) = sock.recv_from(&mut buf).await {
                let Ok(query) = Message::from_vec(&buf[..n]) else { continue };
                if let Some(r) = answer(query) {
                    let _ = sock.send_to(&r.to_vec().unwrap(), from).await;
                }
            }
        });
        Server { addr, bind: None, signer: None }
    }

    fn want_a() -> Vec<(String, BTreeSet<Ipv4Addr>)> {
        vec![("a.example.".to_string(), BTreeSet::from([Ipv4Addr::new(10, 77, 0, 5)]))]
    }

    #[tokio::test]
    async fn a_server_that_never_answers_is_a_timeout() {
        let silent = fake_dns(|_| None).await;
        let e = check_a(&silent, &want_a()).await.unwrap_err();
        assert_eq!(e, Failure::timeout("a.example.: no answer"));
    }

    #[tokio::test]
    async fn a_refused_query_is_refused_and_a_wrong_address_a_mismatch() {
        let refusing = fake_dns(|q| {
            let mut r = q.into_response();
            r.metadata.response_code = ResponseCode::Refused;
            Some(r)
        })
        .await;
        let e = soa(&refusing, &fqdn("a.example").unwrap()).await.unwrap_err();
        assert_eq!(e, Failure::refused("Query Refused"));

        let elsewhere = fake_dns(|q| {
            let name = q.queries[0].name().clone();
            let mut r = q.into_response();
            r.metadata.authoritative = true;
            r.answers.push(Record::from_rdata(name, 60, RData::A(Ipv4Addr::new(10, 77, 0, 99).into())));
            Some(r)
        })
        .await;
        let e = check_a(&elsewhere, &want_a()).await.unwrap_err();
        assert_eq!(e, Failure::mismatch("a.example. -> 10.77.0.99 (No Error), want 10.77.0.5"));
        // Not an SOA in the answer: the zone is not what this server serves.
        let e = soa(&elsewhere, &fqdn("a.example").unwrap()).await.unwrap_err();
        assert_eq!(e, Failure::mismatch("no SOA record in the answer"));
    }
}
