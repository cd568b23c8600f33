//! Rules across fields and sections. Each rule reports the path of the field at fault, so the
//! report can point at the line. The single-field checks are public: the wizard runs them on
//! each answer as it is typed.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr};

use super::model::*;
use super::report::Problem;
use crate::playbook::catalog;

/// Every problem in `a`, in file order as far as possible.
pub fn check(a: &Answers) -> Vec<Problem> {
    let mut out = check_except_needs(a);
    role_needs(a, &mut out);
    out
}

/// Every rule but the dependencies between roles, which only make sense once all hosts are
/// known (the wizard checks them after the last host).
pub fn check_except_needs(a: &Answers) -> Vec<Problem> {
    let mut out = Vec::new();
    site(a, &mut out);
    network(a, &mut out);
    hosts(a, &mut out);
    databases(a, &mut out);
    ldap(a, &mut out);
    k3s(a, &mut out);
    gitops(a, &mut out);
    proxmox(a, &mut out);
    out
}

// ---------------------------------------------------------------- single fields

/// A fully qualified domain name: two or more labels, lowercase.
pub fn check_fqdn(s: &str) -> Result<(), String> {
    let name = s.strip_suffix('.').unwrap_or(s);
    if name.is_empty() {
        return Err("a domain name is required".into());
    }
    if name.len() > 253 {
        return Err(format!("`{s}` is longer than 253 characters"));
    }
    let labels: Vec<&str> = name.split('.').collect();
    if labels.len() < 2 {
        return Err(format!(
            "`{s}` is not a fully qualified domain name (it needs a dot, e.g. `{s}.example.org`)"
        ));
    }
    for l in &labels {
        check_label(l).map_err(|e| format!("`{s}` is not a valid domain name: {e}"))?;
    }
    if labels.last().is_some_and(|l| l.chars().all(|c| c.is_ascii_digit())) {
        return Err(format!("`{s}` ends in a numeric label, which no domain can"));
    }
    Ok(())
}

/// One DNS label (a host name): `a-z`, `0-9`, `-`, at most 63, no leading/trailing `-`.
pub fn check_label(l: &str) -> Result<(), String> {
    if l.is_empty() {
        return Err("empty label (two dots in a row?)".into());
    }
    if l.len() > 63 {
        return Err(format!("label `{l}` is longer than 63 characters"));
    }
    if l.chars().any(|c| c.is_ascii_uppercase()) {
        return Err(format!("`{l}` has uppercase letters; write it in lowercase"));
    }
    if let Some(c) = l
        .chars()
        .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '-'))
    {
        return Err(format!("`{l}` contains `{c}`; only a-z, 0-9 and - are allowed"));
    }
    if l.starts_with('-') || l.ends_with('-') {
        return Err(format!("`{l}` starts or ends with `-`"));
    }
    Ok(())
}

pub fn check_email(s: &str) -> Result<(), String> {
    match s.split_once('@') {
        Some((local, domain))
            if !local.is_empty()
                && !local.contains(char::is_whitespace)
                && check_fqdn(domain).is_ok() =>
        {
            Ok(())
        }
        _ => Err(format!("`{s}` is not an e-mail address (e.g. ops@example.org)")),
    }
}

pub fn check_timezone(s: &str) -> Result<(), String> {
    let ok_syntax = !s.is_empty()
        && s.split('/').all(|part| {
            !part.is_empty()
                && part
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "_+-".contains(c))
        });
    if !ok_syntax {
        return Err(format!("`{s}` is not a time zone name (e.g. Europe/Berlin, UTC)"));
    }
    let zoneinfo = std::path::Path::new("/usr/share/zoneinfo");
    if zoneinfo.join("UTC").exists() && !zoneinfo.join(s).is_file() {
        return Err(format!("`{s}` is not a known time zone (see /usr/share/zoneinfo)"));
    }
    Ok(())
}

pub fn check_site_name(s: &str) -> Result<(), String> {
    check_label(s).map_err(|e| format!("site name: {e}"))
}

/// A database or database user name: lowercase letters, digits and `_`.
pub fn check_sql_name(s: &str, what: &str, max: usize) -> Result<(), String> {
    if s.is_empty() {
        return Err(format!("{what} is empty"));
    }
    if s.len() > max {
        return Err(format!("{what} `{s}` is longer than {max} characters"));
    }
    let first_ok = s.starts_with(|c: char| c.is_ascii_lowercase() || c == '_');
    if let Some(c) = s
        .chars()
        .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '_'))
    {
        let shown = if c == ' ' { "a space".to_string() } else { format!("`{c}`") };
        return Err(format!(
            "{what} `{s}` contains {shown}; use lowercase letters, digits and _"
        ));
    }
    if !first_ok {
        return Err(format!("{what} `{s}` must start with a letter or _"));
    }
    Ok(())
}

pub fn check_unix_user(s: &str) -> Result<(), String> {
    let ok = !s.is_empty()
        && s.len() <= 32
        && s.starts_with(|c: char| c.is_ascii_lowercase() || c == '_')
        && s
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-');
    if ok {
        Ok(())
    } else {
        Err(format!("`{s}` is not a valid user name"))
    }
}

pub fn check_k3s_version(s: &str) -> Result<(), String> {
    let bad = || format!("`{s}` is not a k3s release (e.g. v1.31.4+k3s1)");
    let rest = s.strip_prefix('v').ok_or_else(bad)?;
    let (semver, build) = rest.split_once("+k3s").ok_or_else(bad)?;
    let parts: Vec<&str> = semver.split('.').collect();
    let num = |p: &str| !p.is_empty() && p.chars().all(|c| c.is_ascii_digit());
    if parts.len() == 3 && parts.iter().all(|p| num(p)) && num(build) {
        Ok(())
    } else {
        Err(bad())
    }
}

pub fn check_git_url(s: &str) -> Result<(), String> {
    if let Some(rest) = s.strip_prefix("https://").or_else(|| s.strip_prefix("ssh://")) {
        let host = rest.split(['/', ':', '@']).find(|p| !p.is_empty() && p.contains('.'));
        if host.is_some() && rest.contains('/') {
            return Ok(());
        }
    } else if let Some(rest) = s.strip_prefix("git@") {
        if let Some((host, path)) = rest.split_once(':') {
            if !host.is_empty() && !path.is_empty() {
                return Ok(());
            }
        }
    } else if s.starts_with("http://") {
        return Err(format!(
            "`{s}` uses plain http; the cluster would pull its state unauthenticated: use https:// or ssh://"
        ));
    }
    Err(format!(
        "`{s}` is not a git repository URL (https://host/org/repo.git, ssh://git@host/org/repo.git or git@host:org/repo.git)"
    ))
}

pub fn check_https_url(s: &str) -> Result<(), String> {
    let Some(rest) = s.strip_prefix("https://") else {
        return Err(format!(
            "`{s}` is not an https:// URL; the API token must not cross the network in clear"
        ));
    };
    let host = rest.split(['/', '?']).next().unwrap_or("");
    let host = host.rsplit_once(':').map_or(host, |(h, port)| {
        if port.chars().all(|c| c.is_ascii_digit()) { h } else { host }
    });
    if host.is_empty() {
        return Err(format!("`{s}` has no host name"));
    }
    Ok(())
}

fn usable_in(subnet: &Subnet, ip: Ipv4Addr) -> Result<(), String> {
    if !subnet.contains(ip) {
        return Err(format!("{ip} is outside network.subnet {subnet}"));
    }
    if ip == subnet.network() {
        return Err(format!("{ip} is the network address of {subnet}"));
    }
    if ip == subnet.broadcast() {
        return Err(format!("{ip} is the broadcast address of {subnet}"));
    }
    Ok(())
}

// ---------------------------------------------------------------- sections

fn push(out: &mut Vec<Problem>, field: String, r: Result<(), String>) {
    if let Err(e) = r {
        out.push(Problem::new(field, e));
    }
}

fn site(a: &Answers, out: &mut Vec<Problem>) {
    let s = &a.site;
    push(out, "site.name".into(), check_site_name(&s.name));
    push(out, "site.internal-domain".into(), check_fqdn(&s.internal_domain));
    push(out, "site.external-domain".into(), check_fqdn(&s.external_domain));
    if s.internal_domain.trim_end_matches('.') == s.external_domain.trim_end_matches('.') {
        out.push(
            Problem::new(
                "site.external-domain",
                "the external domain is the same as the internal domain",
            )
            .help("use a subdomain inside, e.g. internal-domain = \"int.example.org\"")
            .see("site.internal-domain", "internal domain"),
        );
    }
    push(out, "site.timezone".into(), check_timezone(&s.timezone));
    push(out, "site.admin-email".into(), check_email(&s.admin_email));
}

fn network(a: &Answers, out: &mut Vec<Problem>) {
    let n = &a.network;
    let subnet = n.subnet;
    if !(8..=30).contains(&subnet.prefix()) {
        out.push(
            Problem::new(
                "network.subnet",
                format!("/{} is not a usable site subnet", subnet.prefix()),
            )
            .help("use a prefix between /8 and /30"),
        );
    }
    push(out, "network.gateway".into(), usable_in(&subnet, n.gateway));

    let dns_addrs: Vec<Ipv4Addr> = a.hosts_with(Role::Dns).map(|(_, h)| h.address).collect();
    for (i, f) in n.forwarders.iter().enumerate() {
        let field = format!("network.forwarders[{i}]");
        if f.is_unspecified() || f.is_multicast() || *f == IpAddr::V4(Ipv4Addr::BROADCAST) {
            out.push(Problem::new(field, format!("{f} cannot be a DNS forwarder")));
        } else if let IpAddr::V4(v4) = f {
            if dns_addrs.contains(v4) {
                out.push(
                    Problem::new(field, format!("{f} is this site's own DNS server"))
                        .help("forwarders are the upstream resolvers; forwarding to itself loops"),
                );
            }
        }
    }
    if !(60..=31_536_000).contains(&n.lease_time) {
        out.push(Problem::new(
            "network.lease-time",
            format!("{} s is not a sensible lease time (60 s to one year)", n.lease_time),
        ));
    }

    let host_at: HashMap<Ipv4Addr, usize> =
        a.hosts.iter().enumerate().map(|(i, h)| (h.address, i)).collect();

    for (i, r) in n.dhcp_ranges.iter().enumerate() {
        let base = format!("network.dhcp-range[{i}]");
        let mut inside = true;
        for (key, ip) in [("start", r.start), ("end", r.end)] {
            if let Err(e) = usable_in(&subnet, ip) {
                inside = false;
                out.push(Problem::new(format!("{base}.{key}"), e));
            }
        }
        if u32::from(r.start) > u32::from(r.end) {
            out.push(Problem::new(
                format!("{base}.end"),
                format!("the range ends ({}) before it starts ({})", r.end, r.start),
            ));
            continue;
        }
        if !inside {
            continue;
        }
        let holds = |ip: Ipv4Addr| (u32::from(r.start)..=u32::from(r.end)).contains(&u32::from(ip));
        if holds(n.gateway) {
            out.push(
                Problem::new(format!("{base}.start"), format!("the range holds the gateway {}", n.gateway))
                    .see("network.gateway", "gateway"),
            );
        }
        let held: Vec<(usize, &Host)> =
            a.hosts.iter().enumerate().filter(|(_, h)| holds(h.address)).collect();
        if !held.is_empty() {
            let list: Vec<String> =
                held.iter().map(|(_, h)| format!("{} ({})", h.name, h.address)).collect();
            let mut p = Problem::new(
                format!("{base}.start"),
                format!(
                    "the range {}-{} holds the static address of host{} {}",
                    r.start,
                    r.end,
                    if held.len() == 1 { "" } else { "s" },
                    list.join(", ")
                ),
            )
            .help("shrink the range or move the hosts out of it");
            for (j, _) in held {
                p = p.see(format!("host[{j}].address"), "static address");
            }
            out.push(p);
        }
        for (j, other) in n.dhcp_ranges.iter().enumerate().take(i) {
            let overlap = u32::from(r.start) <= u32::from(other.end)
                && u32::from(other.start) <= u32::from(r.end);
            if overlap {
                out.push(
                    Problem::new(
                        format!("{base}.start"),
                        format!(
                            "the range {}-{} overlaps range {}-{}",
                            r.start, r.end, other.start, other.end
                        ),
                    )
                    .see(format!("network.dhcp-range[{j}]"), "overlapping range"),
                );
            }
        }
    }

    let mut macs: HashMap<MacAddr, usize> = HashMap::new();
    let mut addrs: HashMap<Ipv4Addr, usize> = HashMap::new();
    let mut names: HashMap<&str, usize> = HashMap::new();
    for (i, r) in n.reservations.iter().enumerate() {
        let base = format!("network.reservation[{i}]");
        if let Err(e) = usable_in(&subnet, r.address) {
            out.push(Problem::new(format!("{base}.address"), e));
        }
        if r.address == n.gateway {
            out.push(
                Problem::new(format!("{base}.address"), format!("{} is the gateway", r.address))
                    .see("network.gateway", "gateway"),
            );
        }
        if let Some(j) = host_at.get(&r.address) {
            out.push(
                Problem::new(
                    format!("{base}.address"),
                    format!(
                        "{} is the static address of host `{}`",
                        r.address, a.hosts[*j].name
                    ),
                )
                .see(format!("host[{j}].address"), "static address"),
            );
        }
        push(out, format!("{base}.name"), check_label(&r.name));
        if let Some(j) = a.hosts.iter().position(|h| h.name == r.name) {
            out.push(
                Problem::new(
                    format!("{base}.name"),
                    format!("`{}` is already the name of a host", r.name),
                )
                .see(format!("host[{j}].name"), "host"),
            );
        }
        let dups = [
            (first_or_insert(&mut macs, r.mac, i), "mac", "MAC address"),
            (first_or_insert(&mut addrs, r.address, i), "address", "address"),
            (first_or_insert(&mut names, r.name.as_str(), i), "name", "name"),
        ];
        for (first, field, what) in dups {
            if let Some(first) = first {
                out.push(
                    Problem::new(
                        format!("{base}.{field}"),
                        format!("this {what} is already reserved by reservation {first}"),
                    )
                    .see(format!("network.reservation[{first}].{field}"), "first here"),
                );
            }
        }
    }

    let has_dhcp_config = !n.dhcp_ranges.is_empty() || !n.reservations.is_empty();
    if a.has_role(Role::Dhcp) && !has_dhcp_config {
        let (i, _) = a.hosts_with(Role::Dhcp).next().expect("has_role");
        out.push(
            Problem::new(
                role_field(a, i, Role::Dhcp),
                "the dhcp role has nothing to hand out",
            )
            .help("add a [[network.dhcp-range]] or a [[network.reservation]]"),
        );
    }
    if !n.dhcp_ranges.is_empty() && !a.has_role(Role::Dhcp) {
        out.push(
            Problem::new("network.dhcp-range", "DHCP ranges are set but no host has the dhcp role")
                .help("add \"dhcp\" to the roles of the host that should serve them"),
        );
    }
}

/// The index where `k` was first seen, or None (and remember `i`) if this is the first time.
fn first_or_insert<K: std::hash::Hash + Eq>(m: &mut HashMap<K, usize>, k: K, i: usize) -> Option<usize> {
    match m.get(&k) {
        Some(first) => Some(*first),
        None => {
            m.insert(k, i);
            None
        }
    }
}

fn role_field(a: &Answers, host: usize, role: Role) -> String {
    match a.hosts[host].roles.iter().position(|r| *r == role) {
        Some(j) => format!("host[{host}].roles[{j}]"),
        None => format!("host[{host}].roles"),
    }
}

fn hosts(a: &Answers, out: &mut Vec<Problem>) {
    if a.hosts.is_empty() {
        out.push(
            Problem::new("host", "no [[host]] tables: there is nothing to configure")
                .help("add a [[host]] with name, address and roles"),
        );
    }
    let subnet = a.network.subnet;
    let mut names: HashMap<&str, usize> = HashMap::new();
    let mut addrs: HashMap<Ipv4Addr, usize> = HashMap::new();
    for (i, h) in a.hosts.iter().enumerate() {
        let base = format!("host[{i}]");
        push(out, format!("{base}.name"), check_label(&h.name));
        if let Some(first) = names.get(h.name.as_str()) {
            out.push(
                Problem::new(format!("{base}.name"), format!("host name `{}` is used twice", h.name))
                    .see(format!("host[{first}].name"), "first here"),
            );
        } else {
            names.insert(&h.name, i);
        }
        push(out, format!("{base}.address"), usable_in(&subnet, h.address));
        if h.address == a.network.gateway {
            out.push(
                Problem::new(format!("{base}.address"), format!("{} is the gateway", h.address))
                    .see("network.gateway", "gateway"),
            );
        }
        if let Some(first) = addrs.get(&h.address) {
            out.push(
                Problem::new(
                    format!("{base}.address"),
                    format!("address {} is used by host `{}` too", h.address, a.hosts[*first].name),
                )
                .see(format!("host[{first}].address"), "first here"),
            );
        } else {
            addrs.insert(h.address, i);
        }
        push(out, format!("{base}.ssh-user"), check_unix_user(&h.ssh_user));
        if h.ssh_port == 0 {
            out.push(Problem::new(format!("{base}.ssh-port"), "port 0 is not a port"));
        }
        if let Some(k) = &h.ssh_key {
            if k.as_os_str().is_empty() {
                out.push(Problem::new(format!("{base}.ssh-key"), "the key path is empty"));
            }
        }
        for (j, r) in h.roles.iter().enumerate() {
            if let Some(first) = h.roles[..j].iter().position(|x| x == r) {
                out.push(
                    Problem::new(format!("{base}.roles[{j}]"), format!("role `{r}` is listed twice"))
                        .see(format!("{base}.roles[{first}]"), "first here"),
                );
            }
        }
        if h.roles.contains(&Role::K3sServer) && h.roles.contains(&Role::K3sAgent) {
            out.push(
                Problem::new(
                    role_field(a, i, Role::K3sAgent),
                    "a k3s server already runs workloads; it cannot also be a k3s agent",
                )
                .help("keep only k3s-server on this host"),
            );
        }
    }
    for (role, why) in [
        (Role::Dhcp, "Kea high availability is not managed by groundwork yet"),
        (Role::Ldap, "LDAP replication is not managed by groundwork yet"),
        (Role::Postgresql, "PostgreSQL replication is not managed by groundwork yet"),
        (Role::Mariadb, "MariaDB replication is not managed by groundwork yet"),
    ] {
        let holders: Vec<usize> = a.hosts_with(role).map(|(i, _)| i).collect();
        if holders.len() > 1 {
            out.push(
                Problem::new(
                    role_field(a, holders[1], role),
                    format!("role `{role}` is on {} hosts; a site has one", holders.len()),
                )
                .help(why)
                .see(role_field(a, holders[0], role), "first here"),
            );
        }
    }
}

/// Hard dependencies between roles come from the playbooks' `needs`.
pub fn role_needs(a: &Answers, out: &mut Vec<Problem>) {
    for spec in catalog::roles() {
        let Some(role) = spec.host_role() else { continue };
        let Some((i, _)) = a.hosts_with(role).next() else { continue };
        for need in spec.needs.iter().filter(|n| !n.optional) {
            let present = need.role.parse::<Role>().is_ok_and(|r| a.has_role(r));
            if !present {
                out.push(
                    Problem::new(
                        role_field(a, i, role),
                        format!("role `{role}` needs a host with role `{}`", need.role),
                    )
                    .help(need.why.clone()),
                );
            }
        }
    }
}

fn databases(a: &Answers, out: &mut Vec<Problem>) {
    for (engine, list, role, max_user, reserved_db, reserved_user) in [
        (
            "postgresql",
            &a.databases.postgresql,
            Role::Postgresql,
            63,
            &["postgres", "template0", "template1"][..],
            &["postgres", "root"][..],
        ),
        (
            "mariadb",
            &a.databases.mariadb,
            Role::Mariadb,
            32,
            &["mysql", "information_schema", "performance_schema", "sys"][..],
            &["root", "mysql", "mariadb"][..],
        ),
    ] {
        if !list.is_empty() && !a.has_role(role) {
            out.push(
                Problem::new(
                    format!("databases.{engine}"),
                    format!("databases are listed for {engine} but no host has the {engine} role"),
                )
                .help(format!("add \"{engine}\" to the roles of a host")),
            );
        }
        for (i, d) in list.iter().enumerate() {
            let base = format!("databases.{engine}[{i}]");
            push(out, format!("{base}.name"), check_sql_name(&d.name, "database name", 63));
            push(out, format!("{base}.user"), check_sql_name(&d.user, "user name", max_user));
            if reserved_db.contains(&d.name.as_str()) {
                out.push(Problem::new(
                    format!("{base}.name"),
                    format!("`{}` is a system database of {engine}", d.name),
                ));
            }
            if reserved_user.contains(&d.user.as_str()) {
                out.push(Problem::new(
                    format!("{base}.user"),
                    format!("`{}` is a system account of {engine}", d.user),
                ));
            }
            if let Some(j) = list[..i].iter().position(|o| o.name == d.name) {
                out.push(
                    Problem::new(format!("{base}.name"), format!("database `{}` is listed twice", d.name))
                        .see(format!("databases.{engine}[{j}].name"), "first here"),
                );
            }
            if let Some(j) = list[..i].iter().position(|o| o.user == d.user) {
                out.push(
                    Problem::new(
                        format!("{base}.user"),
                        format!(
                            "user `{}` is listed twice (already the owner of `{}`)",
                            d.user, list[j].name
                        ),
                    )
                    .help("each database gets its own user and generated password")
                    .see(format!("databases.{engine}[{j}].user"), "first here"),
                );
            }
        }
    }
}

fn ldap(a: &Answers, out: &mut Vec<Problem>) {
    match (&a.ldap, a.hosts_with(Role::Ldap).next()) {
        (None, Some((i, _))) => out.push(
            Problem::new(role_field(a, i, Role::Ldap), "role `ldap` needs an [ldap] section")
                .help("add [ldap] with organisation = \"Your Org\""),
        ),
        (Some(_), None) => out.push(
            Problem::new("ldap", "an [ldap] section is set but no host has the ldap role")
                .help("add \"ldap\" to the roles of a host"),
        ),
        _ => {}
    }
    let Some(l) = &a.ldap else { return };
    if l.organisation.trim().is_empty() {
        out.push(Problem::new("ldap.organisation", "the organisation name is empty"));
    } else if l.organisation.contains(['\n', '\r'])
        || l.organisation.starts_with([' ', ':', '<', '#'])
        || l.organisation.ends_with(' ')
    {
        out.push(
            Problem::new("ldap.organisation", "the organisation name must be one line, without a leading space, `:`, `<` or `#`")
                .help("it becomes the `o` attribute of the directory's base entry"),
        );
    }
    for (i, ou) in l.extra_ous.iter().enumerate() {
        let field = format!("ldap.extra-ous[{i}]");
        let ok = !ou.is_empty()
            && ou.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
        if !ok {
            out.push(Problem::new(
                field.clone(),
                format!("`{ou}` is not a usable OU name (letters, digits, - and _)"),
            ));
        }
        if ["people", "groups", "services"].contains(&ou.to_ascii_lowercase().as_str()) {
            out.push(Problem::new(
                field.clone(),
                format!("`{ou}` is always created; it needs no entry here"),
            ));
        }
        if l.extra_ous[..i].iter().any(|o| o.eq_ignore_ascii_case(ou)) {
            out.push(Problem::new(field, format!("OU `{ou}` is listed twice")));
        }
    }
    if l.tls_cert.is_some() != l.tls_key.is_some() {
        let field = if l.tls_cert.is_some() { "ldap.tls-cert" } else { "ldap.tls-key" };
        out.push(
            Problem::new(field, "tls-cert and tls-key go together")
                .help("give both, or neither for a generated self-signed certificate"),
        );
    }
}

fn k3s(a: &Answers, out: &mut Vec<Problem>) {
    let servers: Vec<usize> = a.hosts_with(Role::K3sServer).map(|(i, _)| i).collect();
    let agents: Vec<usize> = a.hosts_with(Role::K3sAgent).map(|(i, _)| i).collect();
    let Some(k) = &a.k3s else {
        if let Some(i) = servers.first().or(agents.first()) {
            let role = if servers.is_empty() { Role::K3sAgent } else { Role::K3sServer };
            out.push(
                Problem::new(role_field(a, *i, role), format!("role `{role}` needs a [k3s] section"))
                    .help("add [k3s] with version = \"v1.31.4+k3s1\""),
            );
        }
        return;
    };
    if servers.is_empty() {
        out.push(
            Problem::new("k3s", "a [k3s] section is set but no host has the k3s-server role")
                .help("add \"k3s-server\" to the roles of one or three hosts"),
        );
    }
    push(out, "k3s.version".into(), check_k3s_version(&k.version));
    let n = servers.len();
    match k.mode {
        K3sMode::Single if n > 1 => out.push(
            Problem::new(
                "k3s.mode",
                format!("mode is single but {n} hosts have the k3s-server role"),
            )
            .help("set mode = \"ha\" (embedded etcd) or keep one k3s-server"),
        ),
        K3sMode::Ha if n > 1 && n % 2 == 0 => out.push(
            Problem::new(
                role_field(a, servers[n - 1], Role::K3sServer),
                format!("{n} k3s servers: etcd needs an odd number to keep quorum"),
            )
            .help(format!(
                "use {} or {} servers; {n} tolerate no more failures than {}",
                n - 1,
                n + 1,
                n - 1
            )),
        ),
        _ => {}
    }
    for (key, cidr) in [("cluster-cidr", k.cluster_cidr), ("service-cidr", k.service_cidr)] {
        if cidr.overlaps(&a.network.subnet) {
            out.push(
                Problem::new(
                    format!("k3s.{key}"),
                    format!("{cidr} overlaps the site subnet {}", a.network.subnet),
                )
                .see("network.subnet", "site subnet"),
            );
        }
    }
    if k.cluster_cidr.overlaps(&k.service_cidr) {
        out.push(Problem::new(
            "k3s.service-cidr",
            format!("{} overlaps cluster-cidr {}", k.service_cidr, k.cluster_cidr),
        ));
    }
}

fn gitops(a: &Answers, out: &mut Vec<Problem>) {
    let Some(g) = &a.gitops else { return };
    if a.k3s.is_none() || !a.has_role(Role::K3sServer) {
        out.push(
            Problem::new("gitops", "a [gitops] section needs a k3s cluster to hand off to")
                .help("add a [k3s] section and a host with the k3s-server role, or drop [gitops]"),
        );
    }
    push(out, "gitops.repository".into(), check_git_url(&g.repository));
    if g.branch.is_empty() || g.branch.contains(char::is_whitespace) || g.branch.contains("..") {
        out.push(Problem::new("gitops.branch", format!("`{}` is not a branch name", g.branch)));
    }
    if g.path.starts_with('/') || g.path.split('/').any(|p| p == "..") {
        out.push(
            Problem::new("gitops.path", format!("`{}` must be a path inside the repository", g.path))
                .help("write it relative to the repository root, e.g. ./clusters/site"),
        );
    }
}

fn proxmox(a: &Answers, out: &mut Vec<Problem>) {
    let Some(p) = &a.proxmox else { return };
    push(out, "proxmox.api-url".into(), check_https_url(&p.api_url));
    let token_ok = p.token_id.split_once('@').is_some_and(|(user, rest)| {
        !user.is_empty()
            && rest.split_once('!').is_some_and(|(realm, name)| {
                !realm.is_empty()
                    && !name.is_empty()
                    && name.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
            })
    });
    if !token_ok {
        out.push(Problem::new(
            "proxmox.token-id",
            format!("`{}` is not an API token id (user@realm!token-name)", p.token_id),
        ));
    }
    let sources = [
        p.token_secret_file.is_some(),
        p.token_secret_env.is_some(),
        p.token_secret.is_some(),
    ]
    .iter()
    .filter(|x| **x)
    .count();
    if sources == 0 {
        out.push(
            Problem::new("proxmox", "no token secret is given")
                .help("set token-secret-file = \"/path/to/secret\" or token-secret-env = \"PVE_TOKEN\""),
        );
    } else if sources > 1 {
        out.push(Problem::new(
            "proxmox",
            "give the token secret one way only: token-secret-file, token-secret-env or token-secret",
        ));
    }
    if p.token_secret.is_some() && !p.insecure_inline_secret {
        out.push(
            Problem::new("proxmox.token-secret", "the token secret is written in plain text here")
                .help("keep it in a file (token-secret-file) or the environment (token-secret-env); set insecure-inline-secret = true only if you accept it"),
        );
    }
    if let Some(env) = &p.token_secret_env {
        let ok = !env.is_empty()
            && !env.starts_with(|c: char| c.is_ascii_digit())
            && env.chars().all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_');
        if !ok {
            out.push(Problem::new(
                "proxmox.token-secret-env",
                format!("`{env}` is not an environment variable name (e.g. PVE_TOKEN)"),
            ));
        }
    }
    if let Some(fp) = &p.fingerprint {
        let parts: Vec<&str> = fp.split(':').collect();
        let ok = parts.len() == 32
            && parts
                .iter()
                .all(|x| x.len() == 2 && x.chars().all(|c| c.is_ascii_hexdigit()));
        if !ok {
            out.push(Problem::new(
                "proxmox.fingerprint",
                "not a SHA-256 fingerprint (32 hex pairs separated by `:`)",
            ));
        }
    }
    for (key, v) in [("node", &p.node), ("storage", &p.storage)] {
        if v.trim().is_empty() {
            out.push(Problem::new(format!("proxmox.{key}"), format!("{key} is empty")));
        }
    }
}
