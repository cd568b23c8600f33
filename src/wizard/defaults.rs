//! Defaults for the wizard, derived from the probe of the machine it runs on.

use std::net::Ipv4Addr;

use crate::answers::model::*;
use crate::probe::Facts;

#[derive(Debug, Clone)]
pub struct Defaults {
    pub site_name: String,
    /// This machine's short host name.
    pub hostname: String,
    /// The domain part of this machine's FQDN, if it has one.
    pub domain: Option<String>,
    pub timezone: String,
    pub subnet: Subnet,
    pub gateway: Option<Ipv4Addr>,
    /// This machine's address on the primary NIC.
    pub address: Option<Ipv4Addr>,
    pub forwarders: Vec<String>,
    pub k3s_version: String,
    /// This machine's IPv4 addresses: a host at one of them is converged here, with no SSH
    /// (so the wizard asks no SSH questions for it).
    pub this_machine: Vec<Ipv4Addr>,
}

impl Defaults {
    pub fn from_facts(f: &Facts) -> Defaults {
        let (short, domain) = match f.hostname.split_once('.') {
            Some((h, d)) if crate::answers::rules::check_fqdn(d).is_ok() => (h.to_string(), Some(d.to_string())),
            _ => (f.hostname.clone(), None),
        };
        let hostname = if crate::answers::rules::check_host_name(&short).is_ok() { short } else { "server1".into() };
        let primary = f.primary_nic().and_then(|n| {
            n.addresses.iter().find_map(|a| {
                let (ip, prefix) = a.split_once('/')?;
                let ip: Ipv4Addr = ip.parse().ok()?;
                let prefix: u8 = prefix.parse().ok()?;
                let net = ipnetwork::Ipv4Network::new(ip, prefix).ok()?;
                Some((ip, Subnet(ipnetwork::Ipv4Network::new(net.network(), prefix).ok()?)))
            })
        });
        let (address, subnet) = match primary {
            Some((ip, s)) if (8..=30).contains(&s.prefix()) => (Some(ip), s),
            _ => (None, "192.168.1.0/24".parse().expect("valid")),
        };
        Defaults {
            site_name: domain
                .as_deref()
                .and_then(|d| d.split('.').next())
                .filter(|l| crate::answers::rules::check_label(l).is_ok())
                .unwrap_or("site")
                .to_string(),
            hostname,
            domain,
            timezone: local_timezone(),
            subnet,
            gateway: f.default_route.as_ref().map(|r| r.gateway),
            address,
            forwarders: f
                .nameservers
                .iter()
                .filter(|n| n.parse::<std::net::IpAddr>().is_ok_and(|ip| !ip.is_loopback()))
                .cloned()
                .collect(),
            k3s_version: "v1.35.6+k3s1".into(),
            this_machine: f.ipv4_addresses(),
        }
    }

    /// The starting point of the flow: placeholders that the questions replace.
    pub fn draft(&self) -> Answers {
        Answers {
            site: Site {
                name: self.site_name.clone(),
                internal_domain: format!("{}.home.arpa", self.site_name),
                external_domain: "example.org".into(),
                timezone: self.timezone.clone(),
                admin_email: "admin@example.org".into(),
                package_bundle: None,
            },
            network: Network {
                subnet: self.subnet,
                gateway: self.gateway.unwrap_or_else(|| Ipv4Addr::from(u32::from(self.subnet.network()) + 1)),
                forwarders: Vec::new(),
                lease_time: 3600,
                allow_foreign_dhcp: false,
                dhcp_ranges: Vec::new(),
                reservations: Vec::new(),
            },
            hosts: Vec::new(),
            databases: Databases::default(),
            ldap: None,
            k3s: None,
            gitops: None,
            proxmox: None,
        }
    }
}

fn local_timezone() -> String {
    if let Ok(tz) = std::fs::read_to_string("/etc/timezone") {
        let tz = tz.trim();
        if !tz.is_empty() {
            return tz.to_string();
        }
    }
    std::fs::read_link("/etc/localtime")
        .ok()
        .and_then(|p| {
            let s = p.to_string_lossy().to_string();
            s.split_once("zoneinfo/").map(|(_, z)| z.to_string())
        })
        .unwrap_or_else(|| "UTC".into())
}

/// A DHCP range in the upper part of the subnet that holds no host, gateway or reservation:
/// the longest free run in the second half, capped at 100 addresses.
pub fn free_range(a: &Answers) -> Option<(Ipv4Addr, Ipv4Addr)> {
    let s = &a.network.subnet;
    let first = u32::from(s.network()) + 1;
    let last = u32::from(s.broadcast()) - 1;
    if last <= first {
        return None;
    }
    let taken = |ip: u32| {
        let ip = Ipv4Addr::from(ip);
        ip == a.network.gateway
            || a.hosts.iter().any(|h| h.address == ip)
            || a.network.reservations.iter().any(|r| r.address == ip)
    };
    let size = last - first + 1;
    let lo = if size >= 200 { first + 99 } else { first + size / 2 };
    let mut best: Option<(u32, u32)> = None;
    let mut run_start: Option<u32> = None;
    for ip in lo..=last + 1 {
        let free = ip <= last && !taken(ip);
        match (free, run_start) {
            (true, None) => run_start = Some(ip),
            (false, Some(st)) => {
                let len = ip - st;
                if best.is_none_or(|(b0, b1)| len > b1 - b0 + 1) {
                    best = Some((st, ip - 1));
                }
                run_start = None;
            }
            _ => {}
        }
    }
    best.map(|(s0, s1)| {
        let end = s1.min(s0 + 99);
        (Ipv4Addr::from(s0), Ipv4Addr::from(end))
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_machine_called_localhost_or_a_number_suggests_another_host_name() {
        let mut f = crate::probe::probe();
        for name in ["localhost", "localhost.localdomain", "1234"] {
            f.hostname = name.into();
            assert_eq!(super::Defaults::from_facts(&f).hostname, "server1", "{name}");
        }
    }
}
