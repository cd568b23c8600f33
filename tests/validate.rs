//! `groundwork validate`: every rule has a bad-input fixture under tests/fixtures/bad/, and
//! the report must name the right line and field. Plus the examples, the schema copy, and a
//! mutation run that must never panic.

use std::path::Path;

use groundwork::answers::{self, Report};

/// fixture, line, field, words the message must contain.
const EXPECT: &[(&str, usize, &str, &str)] = &[
    ("range-outside-subnet", 14, "network.dhcp-range[0].end", "10.0.1.20 is outside network.subnet 10.0.0.0/24"),
    ("ranges-overlap", 17, "network.dhcp-range[1].start", "overlaps range 10.0.0.100-10.0.0.199"),
    ("range-holds-host", 13, "network.dhcp-range[0].start", "holds the static address of host ns1 (10.0.0.10)"),
    ("range-holds-gateway", 13, "network.dhcp-range[0].start", "holds the gateway 10.0.0.150"),
    ("range-backwards", 14, "network.dhcp-range[0].end", "ends (10.0.0.100) before it starts (10.0.0.199)"),
    ("reservation-holds-host", 18, "network.reservation[0].address", "static address of host `ns1`"),
    ("reservation-holds-gateway", 18, "network.reservation[0].address", "is the gateway"),
    ("reservation-other-subnet", 18, "network.reservation[0].address", "192.168.1.20 is outside network.subnet"),
    ("reservation-duplicate-mac", 22, "network.reservation[1].mac", "already reserved by reservation 0"),
    ("bad-mac", 17, "network.reservation[0].mac", "is not a MAC address"),
    ("duplicate-host-name", 22, "host[1].name", "host name `ns1` is used twice"),
    ("duplicate-host-address", 23, "host[1].address", "address 10.0.0.10 is used by host `ns1` too"),
    ("host-outside-subnet", 18, "host[0].address", "10.9.0.10 is outside network.subnet"),
    ("dhcp-without-dns", 19, "host[0].roles[0]", "role `dhcp` needs a host with role `dns`"),
    ("databases-without-host", 21, "databases.postgresql", "no host has the postgresql role"),
    ("ldap-section-without-host", 21, "ldap", "no host has the ldap role"),
    ("ldap-role-without-section", 19, "host[0].roles[2]", "needs an [ldap] section"),
    ("k3s-even-servers", 29, "host[2].roles[0]", "2 k3s servers: etcd needs an odd number"),
    ("k3s-single-with-three", 36, "k3s.mode", "mode is single but 3 hosts have the k3s-server role"),
    ("k3s-agent-without-server", 24, "host[1].roles[0]", "role `k3s-agent` needs a host with role `k3s-server`"),
    ("k3s-agent-without-server", 26, "k3s", "no host has the k3s-server role"),
    ("k3s-bad-version", 27, "k3s.version", "is not a k3s release"),
    ("k3s-cidr-overlap", 17, "k3s.cluster-cidr", "overlaps the site subnet 10.42.0.0/24"),
    ("domain-not-fqdn", 4, "site.internal-domain", "`intranet` is not a fully qualified domain name"),
    ("domain-bad-chars", 5, "site.external-domain", "`My_Site.org` is not a valid domain name"),
    ("domains-same", 5, "site.external-domain", "same as the internal domain"),
    ("gitops-without-k3s", 21, "gitops", "needs a k3s cluster"),
    ("gitops-http", 31, "gitops.repository", "uses plain http"),
    ("proxmox-not-https", 22, "proxmox.api-url", "is not an https:// URL"),
    ("proxmox-inline-secret", 24, "proxmox.token-secret", "written in plain text"),
    ("unknown-key", 14, "network.dhcp-range[0].edn", "unknown key `edn`"),
    ("unknown-section", 21, "databses", "unknown section `databses`"),
    ("unknown-role", 19, "host[0].roles[1]", "`dchp` is not one of the allowed values"),
    ("forwarder-not-address", 11, "network.forwarders[0]", "not an IP address"),
    ("subnet-host-bits", 9, "network.subnet", "has host bits set"),
    ("wrong-type", 19, "host[0].ssh-port", "wrong type: string \"22\""),
    ("missing-key", 16, "host[0].address", "required key `address` is missing"),
    ("syntax-error", 9, "", "TOML syntax"),
    ("database-name-space", 22, "databases.mariadb[0].name", "`next cloud` contains a space"),
    ("database-user-twice", 27, "databases.postgresql[1].user", "user `apps` is listed twice"),
    ("role-on-two-hosts", 24, "host[1].roles[1]", "role `dhcp` is on 2 hosts"),
    ("server-and-agent", 24, "host[1].roles[1]", "cannot also be a k3s agent"),
    ("many-problems", 6, "site.admin-email", "is not an e-mail address"),
    ("many-problems", 13, "network.dhcp-range[0].start", "holds the static address of host Bad_Name"),
    ("many-problems", 22, "host[1].name", "`Bad_Name` has uppercase letters"),
    ("host-typo-and-section-typo", 11, "network.lease-time", "wrong type"),
    ("host-typo-and-section-typo", 15, "host[0].adress", "unknown key `adress`"),
    ("forwarder-is-own-dns", 11, "network.forwarders[1]", "10.0.0.10 is this site's own DNS server"),
    ("dhcp-nothing-to-hand-out", 15, "host[0].roles[1]", "the dhcp role has nothing to hand out"),
    ("lease-time-too-short", 11, "network.lease-time", "30 s is not a sensible lease time"),
    ("reservation-name-is-host", 19, "network.reservation[0].name", "`ns1` is already the name of a host"),
    ("ldap-organisation-multiline", 22, "ldap.organisation", "must be one line"),
];

/// Suggestions for typos: fixture, the help text it must contain.
const HELP: &[(&str, &str)] = &[
    ("unknown-key", "did you mean `end`?"),
    ("unknown-section", "did you mean `databases`?"),
    ("unknown-role", "did you mean `dhcp`?"),
    ("host-typo-and-section-typo", "did you mean `address`?"),
];

fn fixture(name: &str) -> Report {
    let path = format!("tests/fixtures/bad/{name}.toml");
    match answers::load_file(Path::new(&path)) {
        Ok(_) => panic!("{path} was accepted"),
        Err(r) => r,
    }
}

#[test]
fn every_bad_fixture_names_its_line_and_field() {
    for (name, line, field, words) in EXPECT {
        let report = fixture(name);
        let found = report.located_problems().into_iter().any(|l| {
            l.line == *line && l.problem.field == *field && l.problem.message.contains(words)
        });
        assert!(
            found,
            "{name}: expected line {line}, field `{field}`, message with {words:?}; got:\n{}",
            report.one_line_each().join("\n")
        );
        // The one-line form carries file, line, column and field.
        let lines = report.one_line_each();
        let prefix = format!("tests/fixtures/bad/{name}.toml:{line}:");
        assert!(lines.iter().any(|l| l.starts_with(&prefix)), "{lines:?}");
    }
}

#[test]
fn every_fixture_file_is_checked() {
    for entry in std::fs::read_dir("tests/fixtures/bad").unwrap() {
        let name = entry.unwrap().path();
        let stem = name.file_stem().unwrap().to_str().unwrap().to_string();
        assert!(
            EXPECT.iter().any(|(n, ..)| *n == stem),
            "tests/fixtures/bad/{stem}.toml has no expectation in EXPECT"
        );
    }
}

#[test]
fn typos_get_a_suggestion() {
    for (name, help) in HELP {
        let report = fixture(name);
        assert!(
            report.problems.iter().any(|p| p.help.as_deref().is_some_and(|h| h.contains(help))),
            "{name}: no help containing {help:?} in {:?}",
            report.problems
        );
    }
}

#[test]
fn several_sections_report_together() {
    assert_eq!(fixture("many-problems").problems.len(), 3);
    assert_eq!(fixture("host-typo-and-section-typo").problems.len(), 2);
}

#[test]
fn the_examples_are_valid() {
    let mut n = 0;
    for entry in std::fs::read_dir("wizard/examples").unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "toml") {
            if let Err(r) = answers::load_file(&path) {
                panic!("{}", r.render(false));
            }
            n += 1;
        }
    }
    assert!(n >= 3, "want at least 3 examples, found {n}");
}

#[test]
fn the_schema_copy_is_current() {
    let kept = std::fs::read_to_string("wizard/answer.schema.json").unwrap();
    assert!(
        kept == answers::schema::json(),
        "wizard/answer.schema.json is stale: run `cargo run -- schema --out wizard/answer.schema.json`"
    );
    let v: serde_json::Value = serde_json::from_str(&kept).unwrap();
    assert_eq!(v["additionalProperties"], serde_json::json!(false));
    assert!(v["$defs"]["Host"]["properties"]["ssh-key"].is_object(), "kebab-case keys");
}

#[test]
fn the_wizard_output_form_round_trips() {
    for name in ["lab", "single-server", "proxmox-k3s"] {
        let path = format!("wizard/examples/{name}.toml");
        let a = answers::load_file(Path::new(&path)).unwrap().answers;
        let text = groundwork::wizard::render(&a);
        let again = answers::load_str("rendered", &text)
            .unwrap_or_else(|r| panic!("{}", r.render(false)))
            .answers;
        assert_eq!(a, again, "{name}");
    }
}

/// A small deterministic generator, so a failure can be replayed from its seed.
struct Lcg(u64);
impl Lcg {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        self.0 >> 33
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

const SPLICE: &[&str] = &[
    "\"", "[", "]", "[[host]]", "=", "\n", "10.77.0.300", "-1", "99999999999999999999", "ü",
    "roles = [\"dns\"]", "}", "{", "'''", "0x", "\\u00", "name = \"\"", ".", "/33", "#",
];

#[test]
fn a_thousand_mutated_files_never_panic() {
    let bases: Vec<String> = ["lab", "single-server", "proxmox-k3s"]
        .iter()
        .map(|n| std::fs::read_to_string(format!("wizard/examples/{n}.toml")).unwrap())
        .collect();
    let mut rng = Lcg(0x5eed_0001);
    let mut rejected = 0;
    for i in 0..1000 {
        let base = &bases[i % bases.len()];
        let mut text: Vec<char> = base.chars().collect();
        for _ in 0..1 + rng.below(4) {
            let at = rng.below(text.len());
            match rng.below(4) {
                0 => {
                    let n = 1 + rng.below(20);
                    let end = (at + n).min(text.len());
                    text.drain(at..end);
                }
                1 => {
                    let s = SPLICE[rng.below(SPLICE.len())];
                    for (k, c) in s.chars().enumerate() {
                        text.insert(at + k, c);
                    }
                }
                2 => {
                    let lines: Vec<&str> = base.lines().collect();
                    let l = lines[rng.below(lines.len())];
                    for (k, c) in format!("{l}\n").chars().enumerate() {
                        text.insert(at.min(text.len()) + k, c);
                    }
                }
                _ => {
                    if at < text.len() {
                        text[at] = char::from(b' ' + rng.below(95) as u8);
                    }
                }
            }
        }
        let mutated: String = text.into_iter().collect();
        let outcome = std::panic::catch_unwind(|| {
            if let Err(r) = answers::load_str("mutated.toml", &mutated) {
                // Rendering walks spans and must not panic either.
                let _ = r.render(false);
                let _ = r.one_line_each();
                true
            } else {
                false
            }
        });
        match outcome {
            Ok(true) => rejected += 1,
            Ok(false) => {}
            Err(_) => panic!("mutation {i} panicked on:\n{mutated}"),
        }
    }
    // Most mutations break something; a run where none is rejected checks nothing.
    assert!(rejected > 500, "only {rejected} of 1000 mutations were rejected");
}
