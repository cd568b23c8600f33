//! `groundwork validate`: every rule has a bad-input fixture under tests/fixtures/bad/, and
//! the report must name the right line and field. Plus the examples, the schema copy, and a
//! mutation run that must never panic.

use std::path::Path;

use groundwork::answers::model::{TlsPair, TokenSecret};
use groundwork::answers::{self, Report};
use groundwork::playbook::catalog::Catalog;

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
    ("two-local-hosts", 21, "host[1].local", "only one host can be the machine groundwork runs on"),
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
    ("k3s-ha-one-server", 28, "k3s.mode", "mode is ha but only one host has the k3s-server role"),
    ("k3s-ha-one-server", 29, "k3s.api-endpoint", "10.0.0.150 is inside a DHCP range"),
    ("k3s-unknown-component", 29, "k3s.disable[1]", "`flannel` is not one of the allowed values"),
    ("k3s-bad-endpoint", 29, "k3s.api-endpoint", "(the API endpoint is a DNS name or an IPv4 address)"),
    ("domain-not-fqdn", 4, "site.internal-domain", "`intranet` is not a fully qualified domain name"),
    ("domain-bad-chars", 5, "site.external-domain", "`My_Site.org` is not a valid domain name"),
    ("domains-same", 5, "site.external-domain", "same as the internal domain"),
    ("gitops-without-k3s", 21, "gitops", "needs a k3s cluster"),
    ("gitops-http", 31, "gitops.repository", "uses plain http"),
    ("proxmox-not-https", 22, "proxmox.api-url", "is not an https:// URL"),
    ("proxmox-inline-secret", 24, "proxmox.token-secret", "written in plain text"),
    ("proxmox-no-secret", 21, "proxmox", "one of `token-secret-file`, `token-secret-env` or `token-secret` is needed"),
    ("proxmox-secret-two-ways", 17, "host[0].name", "has uppercase letters"),
    ("proxmox-secret-two-ways", 23, "proxmox.token-id", "is not an API token id"),
    ("proxmox-secret-two-ways", 25, "proxmox.token-secret-file", "given besides `token-secret-env`"),
    ("ldap-tls-cert-without-key", 23, "ldap.tls-cert", "`tls-cert` is given without `tls-key`"),
    ("unknown-key", 14, "network.dhcp-range[0].edn", "unknown key `edn`"),
    ("unknown-section", 21, "databses", "unknown section `databses`"),
    ("unknown-role", 19, "host[0].roles[1]", "`dchp` is not one of the allowed values"),
    ("forwarder-not-address", 11, "network.forwarders[0]", "not an IP address"),
    ("subnet-host-bits", 9, "network.subnet", "has host bits set"),
    ("wrong-type", 19, "host[0].ssh-port", "wrong type: string \"22\""),
    ("missing-key", 16, "host[0].address", "required key `address` is missing"),
    ("syntax-error", 9, "", "TOML syntax"),
    ("syntax-errors-several", 3, "", "TOML syntax: invalid basic string"),
    ("syntax-errors-several", 5, "", "TOML syntax: string values must be quoted"),
    ("syntax-errors-several", 10, "", "TOML syntax: invalid basic string"),
    ("syntax-errors-several", 12, "", "TOML syntax: unclosed array table"),
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
    ("ldap-tls-cert-quote", 23, "ldap.tls-cert", "contains `'`; a path on the host may use"),
    ("ldap-tls-key-relative", 24, "ldap.tls-key", "is not an absolute path"),
    ("postgresql-keyword-names", 22, "databases.postgresql[0].name", "`all` is a keyword in pg_hba.conf"),
    ("postgresql-keyword-names", 27, "databases.postgresql[1].user", "names starting with pg_ are reserved"),
    ("postgresql-keyword-names", 31, "databases.postgresql[2].user", "`public` is a reserved role name"),
    ("postgresql-keyword-names", 34, "databases.postgresql[3].name", "`select` is a reserved word"),
    ("mariadb-reserved-names", 23, "databases.mariadb[0].user", "`public` is a reserved role name of mariadb"),
    ("mariadb-reserved-names", 26, "databases.mariadb[1].name", "is longer than 64 characters"),
    ("domain-trailing-dot", 4, "site.internal-domain", "`int.example.org.` ends with a dot"),
    ("domain-trailing-dot", 5, "site.external-domain", "`x..` ends with a dot"),
    ("admin-email-shell", 6, "site.admin-email", "the part before @ contains `;`"),
    ("ldap-organisation-control-char", 22, "ldap.organisation", "contains a NUL character"),
    ("ldap-organisation-control-char", 23, "ldap.extra-ous[0]", "is not a usable OU name (1 to 64"),
    ("ldap-organisation-too-long", 22, "ldap.organisation", "is longer than 64 characters"),
    ("forwarder-loopback", 11, "network.forwarders[0]", "127.0.0.53 is a loopback address"),
    ("forwarder-loopback", 11, "network.forwarders[1]", "::1 is a loopback address"),
    ("forwarder-loopback", 11, "network.forwarders[2]", "0.0.0.0 cannot be a DNS forwarder"),
    ("forwarder-loopback", 11, "network.forwarders[3]", "10.0.0.20 is the address of host `db1`"),
    ("forwarder-loopback", 11, "network.forwarders[4]", "::ffff:127.0.0.1 is a loopback address"),
    ("host-name-not-a-name", 22, "host[1].name", "`localhost` is every machine's name for itself"),
    ("host-name-not-a-name", 27, "host[2].name", "`42` is all digits"),
    ("host-name-not-a-name", 34, "network.reservation[0].name", "`1234` is all digits"),
    ("missing-keys", 2, "site.external-domain", "required key `external-domain` is missing"),
    ("missing-keys", 2, "site.admin-email", "required key `admin-email` is missing"),
    ("missing-keys", 10, "network.dhcp-range[0].end", "required key `end` is missing"),
    ("missing-keys", 13, "host[0].address", "required key `address` is missing"),
    ("missing-keys", 17, "host[1].roles", "required key `roles` is missing"),
    ("missing-keys", 21, "host[2].name", "required key `name` is missing"),
    ("missing-keys", 23, "host[2].ssh-port", "wrong type: string \"22\", expected a whole number"),
    ("value-too-long", 19, "host[0].roles[2]", "the value is longer than 4096 characters"),
];

/// Suggestions for typos: fixture, the help text it must contain.
const HELP: &[(&str, &str)] = &[
    ("unknown-key", "did you mean `end`?"),
    ("unknown-section", "did you mean `databases`?"),
    ("unknown-role", "did you mean `dhcp`?"),
    ("host-typo-and-section-typo", "did you mean `address`?"),
];

/// What `groundwork validate` checks: the answer file, and the needs of the built-in roles.
fn fixture(name: &str) -> Report {
    let path = format!("tests/fixtures/bad/{name}.toml");
    match groundwork::plan::load_file(Path::new(&path), Catalog::embedded()) {
        Ok(_) => panic!("{path} was accepted"),
        Err(r) => r,
    }
}

#[test]
fn every_bad_fixture_names_its_line_and_field() {
    for (name, line, field, words) in EXPECT {
        let report = fixture(name);
        let found = report
            .located_problems()
            .into_iter()
            .any(|l| l.line == *line && l.problem.field == *field && l.problem.message.contains(words));
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
        assert!(EXPECT.iter().any(|(n, ..)| *n == stem), "tests/fixtures/bad/{stem}.toml has no expectation in EXPECT");
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
    // A secret given two ways, with a bad token id beside it and a bad host name elsewhere.
    assert_eq!(fixture("proxmox-secret-two-ways").problems.len(), 3);
    assert_eq!(fixture("host-typo-and-section-typo").problems.len(), 2);
    // Missing keys are not one per run (nor one per section): all seven at once.
    assert_eq!(fixture("missing-keys").problems.len(), 7);
    assert_eq!(fixture("syntax-errors-several").problems.len(), 4);
    assert_eq!(fixture("forwarder-loopback").problems.len(), 5, "9.9.9.9 is a forwarder");
}

#[test]
fn the_examples_are_valid() {
    let mut n = 0;
    for entry in std::fs::read_dir("wizard/examples").unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "toml") {
            if let Err(r) = groundwork::plan::load_file(&path, Catalog::embedded()) {
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
        let again = answers::load_str("rendered", &text).unwrap_or_else(|r| panic!("{}", r.render(false))).answers;
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
    "\"",
    "[",
    "]",
    "[[host]]",
    "=",
    "\n",
    "10.77.0.300",
    "-1",
    "99999999999999999999",
    "ü",
    "roles = [\"dns\"]",
    "}",
    "{",
    "'''",
    "0x",
    "\\u00",
    "name = \"\"",
    ".",
    "/33",
    "#",
    "\\u0000",
    "'",
    "$(id)",
    "`id`",
    ";",
    "localhost",
    "127.0.0.1",
    "\"all\"",
    "x..",
    "::1",
    "\"public\"",
    "tls-cert = \"/x'y\"",
    "\\n",
    "\u{202e}",
    "[[network.dhcp-range]]\nstart = \"10.77.0.100\"\nend = \"10.77.0.199\"\n",
];

/// CPU time of this thread: a hang is work, not waiting for a core another build holds.
fn cpu_time() -> std::time::Duration {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime writes one timespec, which lives on this stack frame.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    assert_eq!(rc, 0);
    std::time::Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// How many mutated files the mutation test checks: `GROUNDWORK_MUTATIONS`, else 10,000.
fn mutations() -> usize {
    std::env::var("GROUNDWORK_MUTATIONS").ok().and_then(|n| n.parse().ok()).unwrap_or(10_000)
}

/// Mutated copies of the examples (deletions, splices of syntax and hostile values, repeated
/// lines, replaced characters, now and then a line past column 65535): none may panic, none may
/// take 2 s, and every problem must point at a place in the file.
#[test]
fn ten_thousand_mutated_files_never_panic_nor_hang() {
    let bases: Vec<String> = ["lab", "single-server", "proxmox-k3s"]
        .iter()
        .map(|n| std::fs::read_to_string(format!("wizard/examples/{n}.toml")).unwrap())
        .collect();
    let long = "x".repeat(70_000);
    let n = mutations();
    let mut rng = Lcg(0x5eed_0001);
    let (mut rejected, mut problems, mut slowest) = (0, 0, std::time::Duration::ZERO);
    let mut most = (0, 0); // problems, mutation
    let started = std::time::Instant::now();
    for i in 0..n {
        let base = &bases[i % bases.len()];
        let mut text: Vec<char> = base.chars().collect();
        for _ in 0..1 + rng.below(4) {
            let at = rng.below(text.len());
            match rng.below(5) {
                0 => {
                    let n = 1 + rng.below(20);
                    let end = (at + n).min(text.len());
                    text.drain(at..end);
                }
                1 => {
                    let s = SPLICE[rng.below(SPLICE.len())];
                    text.splice(at..at, s.chars());
                }
                2 => {
                    let lines: Vec<&str> = base.lines().collect();
                    let l = lines[rng.below(lines.len())];
                    let at = at.min(text.len());
                    text.splice(at..at, format!("{l}\n").chars());
                }
                3 if rng.below(20) == 0 => {
                    text.splice(at..at, long.chars());
                }
                _ => {
                    if at < text.len() {
                        // Mostly printable ASCII, sometimes a control character.
                        text[at] = char::from(rng.below(127) as u8);
                    }
                }
            }
        }
        let mutated: String = text.into_iter().collect();
        let t = cpu_time();
        let catalog = Catalog::embedded();
        let outcome =
            std::panic::catch_unwind(|| match groundwork::plan::load_str("mutated.toml", &mutated, catalog) {
                Ok(_) => None,
                Err(r) => {
                    // Rendering walks spans and must not panic either.
                    let _ = r.render(false);
                    Some(r)
                }
            });
        let took = cpu_time() - t;
        slowest = slowest.max(took);
        assert!(took.as_secs_f64() < 2.0, "mutation {i} took {took:?} on:\n{mutated}");
        match outcome {
            Ok(Some(r)) => {
                rejected += 1;
                problems += r.problems.len();
                most = most.max((r.problems.len(), i));
                assert!(!r.problems.is_empty(), "mutation {i}: rejected without a problem");
                for line in r.one_line_each() {
                    assert!(line.len() < 1000, "mutation {i}: a value is echoed whole: {line:.200}");
                }
                let lines = mutated.lines().count().max(1);
                for (l, p) in r.located_problems().iter().zip(&r.problems) {
                    let span = p.span.clone().unwrap_or_else(|| panic!("mutation {i}: no place for {p:?}"));
                    assert!(span.start <= mutated.len(), "mutation {i}: {p:?} is past the end");
                    assert!((1..=lines + 1).contains(&l.line), "mutation {i}: line {} of {lines}", l.line);
                }
            }
            Ok(None) => {}
            Err(_) => panic!("mutation {i} panicked on:\n{mutated}"),
        }
    }
    eprintln!(
        "{n} mutated files: {rejected} rejected with {problems} problems (at most {} in one file, mutation {}), 0 panics, slowest {slowest:?} of CPU, all in {:?}",
        most.0,
        most.1,
        started.elapsed()
    );
    // Most mutations break something; a run where none is rejected checks nothing.
    assert!(rejected > n / 2, "only {rejected} of {n} mutations were rejected");
}

/// miette cannot draw past column 65535 (a format width): such a problem is reported with its
/// line and column, without the drawing, instead of exit 101.
#[test]
fn a_problem_past_column_65535_is_reported_not_a_panic() {
    let lab = std::fs::read_to_string("wizard/examples/lab.toml").unwrap();
    let many = "\"9.9.9.9\", ".repeat(7000);
    for (text, field) in [
        (lab.replace("forwarders = []", &format!("forwarders = [{many}\"127.0.0.1\"]")), "network.forwarders[7000]"),
        (lab.replace("forwarders = []", &format!("forwarders = [{many}\"1.1.1.1\"]]")), ""),
    ] {
        let r = answers::load_str("wide.toml", &text).unwrap_err();
        let drawn = r.render(false);
        let l = &r.located_problems()[0];
        let at = r.problems[0].span.clone().unwrap().start;
        let line_start = text[..at].rfind('\n').map_or(0, |i| i + 1);
        assert_eq!((l.problem.field.as_str(), l.column), (field, at - line_start + 1), "{drawn}");
        assert!(l.column > 65_535);
        assert!(drawn.contains(&format!("wide.toml:{}:{}:", l.line, l.column)), "{drawn}");
    }
}

/// Issue 9: 800 copies of one DHCP range took 184 s and 2.8 GB (a problem per overlapping pair,
/// the file copied into each). Now each range is compared with its neighbour in address order.
#[test]
fn a_thousand_overlapping_ranges_validate_in_well_under_a_second() {
    let lab = std::fs::read_to_string("wizard/examples/lab.toml").unwrap();
    let range = "[[network.dhcp-range]]\nstart = \"10.77.0.100\"\nend = \"10.77.0.199\"\n\n";
    let at = lab.find("[[network.dhcp-range]]").unwrap();
    let text = format!("{}{}{}", &lab[..at], range.repeat(999), &lab[at..]);
    let t = std::time::Instant::now();
    let r = answers::load_str("ranges.toml", &text).unwrap_err();
    let shown = r.render(false);
    let lines = r.one_line_each();
    let took = t.elapsed();
    assert_eq!(r.problems.len(), 999, "one overlap per range after the first");
    assert!(r.problems.iter().all(|p| p.message.contains("overlaps range 10.77.0.100-10.77.0.199")));
    assert_eq!(lines.len(), 999);
    assert!(shown.ends_with("ranges.toml: 999 problems\n"), "{}", &shown[shown.len() - 200..]);
    eprintln!("1,000 ranges: {took:?}");
    assert!(took.as_secs_f64() < 5.0, "{took:?}");
}

/// A 50 MB organisation is refused at once, at its line and under its field, before parsing.
#[test]
fn a_50_mb_value_is_refused_fast_by_its_line() {
    let text = std::fs::read_to_string("tests/fixtures/lab/identity-data.toml").unwrap();
    let (head, tail) = text.split_once("organisation = \"").unwrap();
    let tail = &tail[tail.find('"').unwrap()..];
    let big = format!("{head}organisation = \"{}{tail}", "O".repeat(50 << 20));
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("big.toml");
    std::fs::write(&path, &big).unwrap();
    let line = head.lines().count() + 1;
    let t = std::time::Instant::now();
    let r = answers::load_file(&path).unwrap_err();
    let shown = r.render(false);
    let took = t.elapsed();
    let l = &r.located_problems()[0];
    assert_eq!((l.line, l.problem.field.as_str()), (line, "ldap.organisation"), "{shown}");
    assert!(l.problem.message.contains("larger than 4 MiB"), "{shown}");
    assert!(shown.len() < 2000, "the value is not echoed: {} bytes", shown.len());
    assert!(took.as_secs_f64() < 5.0, "{took:?}");
    // Under the file limit, the field's own limit names it.
    let one_mb = format!("{head}organisation = \"{}{tail}", "O".repeat(1 << 20));
    let r = answers::load_str("1mb.toml", &one_mb).unwrap_err();
    assert_eq!(
        r.one_line_each(),
        [format!("1mb.toml:{line}:16: ldap.organisation: the organisation name is longer than 64 characters")]
    );
}

/// A file that is not UTF-8 is refused at the first bad byte.
#[test]
fn a_file_that_is_not_utf8_is_named_at_the_byte() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("latin1.toml");
    std::fs::write(&path, b"[site]\nname = \"caf\xe9\"\n").unwrap();
    let r = answers::load_file(&path).unwrap_err();
    let lines = r.one_line_each();
    assert!(lines[0].ends_with(":2:12: the file is not UTF-8 text (byte 0xe9 here)"), "{lines:?}");
}

// ---------------------------------------------------------------- injection

/// What each string field is fed, appended to a valid value.
const PAYLOADS: &[(&str, &str)] = &[
    ("quote", "'"),
    ("double quote", "\""),
    ("command substitution", "$(touch /tmp/p)"),
    ("backticks", "`touch /tmp/p`"),
    ("semicolon", "; touch /tmp/p"),
    ("newline", "\ntouch /tmp/p"),
    ("NUL", "\0"),
];

/// The payloads a free-text field keeps (printable characters); it refuses the others.
const KEPT_BY_FREE_TEXT: &[&str] = &["quote", "double quote", "command substitution", "backticks", "semicolon"];

/// Every plain string field of the schema, as a path into the base file (`host[0].name`) and
/// as a pattern (`host[].name`).
fn string_fields(schema: &serde_json::Value) -> Vec<(String, String)> {
    fn resolve<'a>(root: &'a serde_json::Value, mut s: &'a serde_json::Value) -> &'a serde_json::Value {
        loop {
            if let Some(r) = s.get("$ref").and_then(|r| r.as_str()) {
                s = &root["$defs"][r.trim_start_matches("#/$defs/")];
            } else if let Some(any) = s.get("anyOf").and_then(|a| a.as_array()) {
                s = any.iter().find(|a| a["type"] != "null").unwrap();
            } else {
                return s;
            }
        }
    }
    fn walk(
        root: &serde_json::Value,
        s: &serde_json::Value,
        path: String,
        pattern: String,
        out: &mut Vec<(String, String)>,
    ) {
        let s = resolve(root, s);
        let kind = match &s["type"] {
            serde_json::Value::String(t) => t.as_str(),
            serde_json::Value::Array(ts) => ts.iter().filter_map(|t| t.as_str()).find(|t| *t != "null").unwrap_or(""),
            _ => "",
        };
        match kind {
            "object" => {
                for (k, v) in s["properties"].as_object().unwrap() {
                    let join = |p: &str| if p.is_empty() { k.clone() } else { format!("{p}.{k}") };
                    walk(root, v, join(&path), join(&pattern), out);
                }
            }
            "array" => walk(root, &s["items"], format!("{path}[0]"), format!("{pattern}[]"), out),
            "string" if s.get("format").is_none() && s.get("enum").is_none() => out.push((path, pattern)),
            _ => {}
        }
    }
    let mut out = Vec::new();
    walk(schema, schema, String::new(), String::new(), &mut out);
    out
}

/// A valid answer file with every section and every optional string set (the Proxmox secret
/// is given all three ways here; each case keeps the one under test).
fn full_base() -> serde_json::Value {
    let mut a = answers::load_file(Path::new("wizard/examples/proxmox-k3s.toml")).unwrap().answers;
    a.hosts[0].ssh_key = Some("/root/.ssh/id_ed25519".into());
    a.site.package_bundle = Some("/srv/groundwork/bundles/site".into());
    a.network.reservations.push(answers::model::Reservation {
        mac: "52:54:00:00:00:01".parse().unwrap(),
        address: "10.20.1.50".parse().unwrap(),
        name: "printer".into(),
    });
    a.ldap.as_mut().unwrap().tls = Some(answers::model::TlsPair {
        cert: "/etc/ssl/certs/ldap.pem".into(),
        key: "/etc/ssl/private/ldap.key".into(),
    });
    a.proxmox.as_mut().unwrap().fingerprint = Some(vec!["ab"; 32].join(":"));
    let mut v = serde_json::to_value(&a).unwrap();
    v["proxmox"]["token-secret-file"] = "/etc/groundwork/pve-token".into();
    v["proxmox"]["token-secret"] = "0b5a3c2e-1111-2222-3333-444455556666".into();
    v["proxmox"]["insecure-inline-secret"] = true.into();
    v
}

fn at<'a>(mut v: &'a mut serde_json::Value, path: &str) -> &'a mut serde_json::Value {
    for part in path.split('.') {
        let (key, index) = match part.split_once('[') {
            Some((k, i)) => (k, Some(i.trim_end_matches(']').parse::<usize>().unwrap())),
            None => (part, None),
        };
        v = &mut v[key];
        if let Some(i) = index {
            v = &mut v[i];
        }
    }
    v
}

/// Issue 9: every free-text field fed quotes, `$(...)`, backticks, `;`, a newline, NUL and 1 MB.
/// Each is refused naming the field, except in the fields that are free text by design
/// (`rules::FREE_TEXT_FIELDS`), which keep the printable ones: those reach templates as they
/// are and must be quoted where they are used.
#[test]
fn every_string_field_refuses_injection_or_is_listed_as_free_text() {
    let schema: serde_json::Value = serde_json::from_str(&answers::schema::json()).unwrap();
    let fields = string_fields(&schema);
    assert!(fields.len() >= 30, "{fields:?}");
    let one_mb = "a".repeat(1 << 20);
    let mut payloads: Vec<(&str, &str)> = PAYLOADS.to_vec();
    payloads.push(("1 MB", &one_mb));
    let base = full_base();
    let mut kept_anywhere = Vec::new();
    for (path, pattern) in &fields {
        let free = answers::rules::FREE_TEXT_FIELDS.contains(&pattern.as_str());
        let mut kept = Vec::new();
        for (what, payload) in &payloads {
            let mut doc = base.clone();
            let secret = ["token-secret-env", "token-secret-file", "token-secret"];
            if let Some(key) = secret.iter().find(|k| pattern == &format!("proxmox.{k}")) {
                for k in secret.iter().filter(|k| *k != key) {
                    doc["proxmox"].as_object_mut().unwrap().remove(*k);
                }
            } else {
                for k in ["token-secret-file", "token-secret"] {
                    doc["proxmox"].as_object_mut().unwrap().remove(k);
                }
            }
            // The token keys are for an https repository (the base's is ssh).
            let token =
                [("token-file", "/etc/groundwork/git-token"), ("token-env", "GIT_TOKEN"), ("token-username", "git")];
            if let Some((key, value)) = token.iter().find(|(k, _)| pattern == &format!("gitops.{k}")) {
                let g = doc["gitops"].as_object_mut().unwrap();
                g.insert("repository".into(), "https://git.example.org/platform/prod-cluster.git".into());
                g.remove("known-hosts");
                g.insert(key.to_string(), (*value).into());
                if *key == "token-username" {
                    g.insert("token-file".into(), token[0].1.into());
                }
            }
            let slot = at(&mut doc, path);
            let valid = slot.as_str().unwrap_or_else(|| panic!("{path} is not set in the base")).to_string();
            *slot = format!("{valid}{payload}").into();
            let text = toml::to_string(&doc).unwrap();
            let refused = match answers::load_str("injected.toml", &text) {
                Ok(_) => false,
                Err(r) => {
                    let drawn = r.render(false);
                    assert!(drawn.len() < 20_000, "{path} {what}: the report echoes the value");
                    if *what != "1 MB" {
                        let others: Vec<_> = r.problems.iter().filter(|p| p.field != *path).collect();
                        assert!(others.is_empty(), "{path} {what}: the base is not valid: {others:?}");
                    }
                    r.problems.iter().any(|p| p.field == *path)
                }
            };
            if !refused {
                kept.push(*what);
            }
        }
        let expected: &[&str] = if free { KEPT_BY_FREE_TEXT } else { &[] };
        assert_eq!(kept, expected, "{path} kept {kept:?}");
        if free {
            kept_anywhere.push(path.clone());
        }
    }
    eprintln!(
        "{} string fields: all refuse the payloads but {kept_anywhere:?}, which keep quotes, $(...), backticks and ;",
        fields.len()
    );
}

/// An inline token secret is refused, and neither its problem nor a neighbour's draws the
/// line that holds it (a report ends up in CI logs).
#[test]
fn an_inline_secret_is_never_shown() {
    let secret = "3f0c5a6e-1b2d-4c3e-9f8a-7b6c5d4e3f2a";
    let text = std::fs::read_to_string("tests/fixtures/bad/proxmox-inline-secret.toml").unwrap();
    let wrong_type = text.replace(&format!("\"{secret}\""), "31415926535");
    let bad_neighbour = text.replace("root@pam!groundwork", "root pam");
    // Given two ways: the problem is on the secret's own line.
    let two_ways = text.replace("node = ", "token-secret-file = \"/etc/groundwork/pve-token\"\nnode = ");
    let cases = [(&text, secret), (&wrong_type, "31415926535"), (&bad_neighbour, secret), (&two_ways, secret)];
    for (text, value) in cases {
        let r = answers::load_str("secret.toml", text).unwrap_err();
        let out = format!("{}{}{r:?}", r.render(false), r.one_line_each().join("\n"));
        assert!(!out.contains(value), "{out}");
        assert!(!r.problems.is_empty());
    }
    // Accepted inline, it is in the model but not in the model's Debug form.
    let accepted = text.replace("node = ", "insecure-inline-secret = true\nnode = ");
    let loaded = answers::load_str("secret.toml", &accepted).unwrap();
    let debug = format!("{loaded:?}");
    assert!(!debug.contains(secret) && debug.contains("Inline(Secret(********))"), "{debug}");
    match &loaded.answers.proxmox.as_ref().unwrap().token_secret {
        TokenSecret::Inline(s) => assert_eq!(s.expose(), secret),
        other => panic!("{other:?}"),
    }
}

/// The "one of" keys reach the code as one typed value: for every combination of the keys in
/// the file, `validate` refuses exactly the ones the type cannot hold, naming the key (all of
/// them in one run, with a problem elsewhere in the file), and what it accepts is written back
/// with the same keys.
#[test]
fn alternatives_in_the_file_are_one_typed_value_in_the_model() {
    let base = std::fs::read_to_string("tests/fixtures/bad/proxmox-inline-secret.toml").unwrap();
    let base: String = base.lines().filter(|l| !l.starts_with("token-secret")).map(|l| format!("{l}\n")).collect();
    let sources = [
        ("token-secret-file", "\"/etc/groundwork/pve-token\""),
        ("token-secret-env", "\"PVE_TOKEN\""),
        ("token-secret", "\"0b5a3c2e-1111-2222-3333-444455556666\""),
    ];
    for mask in 0..8u8 {
        let given: Vec<_> = sources.iter().enumerate().filter(|(i, _)| mask & (1 << i) != 0).map(|(_, s)| s).collect();
        let lines: String = given.iter().map(|(k, v)| format!("{k} = {v}\n")).collect();
        let text = base.replace("node = ", &format!("{lines}insecure-inline-secret = true\nnode = "));
        let names: Vec<&str> = given.iter().map(|(k, _)| *k).collect();
        match answers::load_str("alt.toml", &text) {
            Ok(loaded) => {
                assert_eq!(names.len(), 1, "{names:?} accepted");
                let p = loaded.answers.proxmox.as_ref().unwrap();
                let kind = match &p.token_secret {
                    TokenSecret::File(f) => (sources[0].0, f.to_str().unwrap() == "/etc/groundwork/pve-token"),
                    TokenSecret::Env(e) => (sources[1].0, e == "PVE_TOKEN"),
                    TokenSecret::Inline(s) => (sources[2].0, s.expose().starts_with("0b5a3c2e")),
                };
                assert_eq!(kind, (names[0], true));
                let back = toml::to_string(&loaded.answers).unwrap();
                assert!(back.contains(&format!("{} = ", names[0])), "{back}");
                assert_eq!(answers::load_str("back.toml", &back).unwrap().answers, loaded.answers);
            }
            Err(r) => {
                assert_ne!(names.len(), 1, "{names:?} refused: {r:?}");
                let want = if names.is_empty() { "proxmox".to_string() } else { format!("proxmox.{}", names[1]) };
                assert!(r.problems.iter().any(|p| p.field == want), "{names:?}: {r:?}");
                // The walk reports it with the rest of the file.
                let with_other = text.replace("name = \"ns1\"", "name = \"Ns1\"");
                let r = answers::load_str("alt.toml", &with_other).unwrap_err();
                assert!(r.problems.iter().any(|p| p.field == want), "{r:?}");
                assert!(r.problems.iter().any(|p| p.field == "host[0].name"), "{r:?}");
            }
        }
    }

    let base = std::fs::read_to_string("tests/fixtures/bad/ldap-tls-key-relative.toml").unwrap();
    let base: String = base.lines().filter(|l| !l.starts_with("tls-")).map(|l| format!("{l}\n")).collect();
    let pair = [("tls-cert", "/etc/ssl/certs/ldap.pem"), ("tls-key", "/etc/ssl/private/ldap.key")];
    for mask in 0..4u8 {
        let given: Vec<_> = pair.iter().enumerate().filter(|(i, _)| mask & (1 << i) != 0).map(|(_, s)| s).collect();
        let text = format!("{base}{}", given.iter().map(|(k, v)| format!("{k} = \"{v}\"\n")).collect::<String>());
        match answers::load_str("tls.toml", &text) {
            Ok(loaded) => {
                let tls = &loaded.answers.ldap.as_ref().unwrap().tls;
                match tls {
                    Some(TlsPair { cert, key }) => {
                        assert_eq!(given.len(), 2);
                        assert_eq!((cert.to_str().unwrap(), key.to_str().unwrap()), (pair[0].1, pair[1].1));
                    }
                    None => assert!(given.is_empty()),
                }
                let back = toml::to_string(&loaded.answers).unwrap();
                assert_eq!(back.contains("tls-cert = ") && back.contains("tls-key = "), tls.is_some(), "{back}");
                assert_eq!(answers::load_str("back.toml", &back).unwrap().answers, loaded.answers);
            }
            Err(r) => {
                assert_eq!(given.len(), 1, "{r:?}");
                let want = format!("ldap.{}", given[0].0);
                assert!(r.problems.iter().any(|p| p.field == want && p.message.contains("is given without")), "{r:?}");
            }
        }
    }
}
