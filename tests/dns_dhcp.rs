//! The dns (BIND9) and dhcp (Kea + kea-dhcp-ddns) roles.
//!
//! Offline: the templates render for a primary, a secondary and the DHCP server, the Kea
//! configurations are JSON with the answer file's values, service names and forwarders appear
//! when the answers have them.
//!
//! On the lab (tests/lab/README.md): dn1 (dns primary + dhcp), dn2 (dns secondary) and dc1, a
//! client that boots with DHCP. apply converges; dc1 takes a lease from the range and its name
//! resolves both ways through dn1 (and dn2) within seconds, checked with `dig` and with
//! `groundwork::verify`; a second apply changes nothing and the dynamic records are still
//! there; a broken zone template (--playbooks override) is refused by named-checkzone while
//! DNS keeps answering; another DHCP server on the segment stops the run and is named.
//! Skipped with `SKIPPED:` where the lab cannot run; a failure under CI=true.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::lab;
use common::run::{self, Run, fresh, on, rt};
use groundwork::answers::{self, model::Answers};
use groundwork::engine::{context, facts::Facts};
use groundwork::playbook::catalog::Catalog;
use groundwork::state::{Secrets, StateDir};
use groundwork::verify::{self, Outcome};
use serde_json::Value;

const HOSTS: &[(&str, &str)] = &[("dn1", "10.77.0.32"), ("dn2", "10.77.0.33"), ("dc1", "dhcp")];
const ANSWERS: &str = "tests/fixtures/lab/dns-dhcp.toml";
const DOMAIN: &str = "dd.groundwork.test";

// ------------------------------------------------------------------ offline: the templates

fn load(path: &str) -> Answers {
    answers::load_file(Path::new(path)).unwrap_or_else(|r| panic!("{path}: {:?}", r.one_line_each())).answers
}

/// Every dns/dhcp template rendered for `host`, by file name, plus the inline `server role`.
fn render(a: &Answers, host: &str) -> (std::collections::BTreeMap<String, String>, Secrets) {
    let mut secrets = Secrets::default();
    secrets.ensure_for(a);
    let catalog = Catalog::load(None).unwrap();
    let env = context::environment(&catalog);
    let site = context::site_context(a, &secrets);
    let ctx = context::host_context(&site, host, &Facts::default());
    let mut out = std::collections::BTreeMap::new();
    for t in catalog.templates.keys().filter(|k| k.starts_with("dns/") || k.starts_with("dhcp/")) {
        let text = env.get_template(t).unwrap().render(&ctx).unwrap_or_else(|e| panic!("{t} for {host}: {e:#}"));
        out.insert(t.split('/').nth(1).unwrap().to_string(), text);
    }
    let dns = catalog.get("dns").unwrap();
    let role_step = dns.step_specs.iter().find(|s| s.name == "server role").expect("server role step");
    let role = env.render_str(role_step.content.as_deref().unwrap(), &ctx).unwrap();
    out.insert("role".into(), role);
    (out, secrets)
}

/// Kea's configuration as JSON: its `//` comments dropped, the interface include filled in.
fn kea_json(text: &str) -> Value {
    let plain: String = text
        .lines()
        .filter(|l| !l.trim_start().starts_with("//"))
        .map(|l| l.replace(r#"<?include "/etc/kea/groundwork-interface.json"?>"#, "\"eth0\""))
        .collect::<Vec<_>>()
        .join("\n");
    serde_json::from_str(&plain).unwrap_or_else(|e| panic!("not JSON: {e}\n{plain}"))
}

/// The k3s API endpoint resolves in the site's zone, with every server's address, when it is a
/// name the site serves; an address, or a name elsewhere, is the operator's to publish.
#[test]
fn the_k3s_api_endpoint_name_resolves_to_every_server() {
    let mut a = load("wizard/examples/proxmox-k3s.toml");
    let ns1 = a.hosts.iter().find(|h| h.roles.iter().any(|r| r.as_str() == "dns")).unwrap().name.clone();
    let servers = "k3s\tIN\tA\t10.20.1.11\nk3s\tIN\tA\t10.20.1.12\nk3s\tIN\tA\t10.20.1.13";
    let fwd = render(&a, &ns1).0["forward.zone.j2"].clone();
    assert!(
        fwd.contains(&format!("; the k3s API (k3s.cluster.example.org): every server (round robin)\n{servers}")),
        "{fwd}"
    );
    let k = a.k3s.as_mut().unwrap();
    k.api_endpoint = Some("api.cluster.example.org".into());
    let fwd = render(&a, &ns1).0["forward.zone.j2"].clone();
    assert!(fwd.contains("api\tIN\tA\t10.20.1.11\napi\tIN\tA\t10.20.1.12") && !fwd.contains("\nk3s\t"), "{fwd}");
    for elsewhere in ["10.20.1.5", "k3s.example.net"] {
        a.k3s.as_mut().unwrap().api_endpoint = Some(elsewhere.into());
        let fwd = render(&a, &ns1).0["forward.zone.j2"].clone();
        assert!(!fwd.contains("the k3s API"), "{elsewhere}: {fwd}");
    }
    // Without the field: the default name.
    a.k3s.as_mut().unwrap().api_endpoint = None;
    assert!(render(&a, &ns1).0["forward.zone.j2"].contains(servers));
}

#[test]
fn templates_render_a_primary_a_secondary_and_the_dhcp_server() {
    let a = load(ANSWERS);
    let (dn1, secrets) = render(&a, "dn1");
    let (dn2, _) = render(&a, "dn2");
    assert_eq!(dn1["role"], "primary\n");
    assert_eq!(dn2["role"], "secondary\n");

    let local1 = &dn1["named.conf.local.j2"];
    assert!(local1.contains("type primary;") && !local1.contains("type secondary;"), "{local1}");
    assert!(local1.contains("file \"/var/lib/bind/db.dd.groundwork.test\";"), "{local1}");
    assert!(local1.contains("update-policy { grant ddns-key zonesub ANY; };"), "{local1}");
    assert!(local1.contains("10.77.0.33 key ddns-key;"), "also-notify the secondary:\n{local1}");
    assert!(local1.contains("zone \"0.77.10.in-addr.arpa\""), "{local1}");
    let local2 = &dn2["named.conf.local.j2"];
    assert!(local2.contains("type secondary;") && !local2.contains("type primary;"), "{local2}");
    assert!(local2.contains("primaries { 10.77.0.32 key ddns-key; };"), "{local2}");

    let fwd = &dn1["forward.zone.j2"];
    assert!(fwd.contains("$ORIGIN dd.groundwork.test."), "{fwd}");
    assert!(
        fwd.contains("SOA\tdn1.dd.groundwork.test. ops\\.team.groundwork.test. ("),
        "rname escapes the dot:\n{fwd}"
    );
    assert!(fwd.contains("@\tIN\tNS\tdn1.dd.groundwork.test.\n@\tIN\tNS\tdn2.dd.groundwork.test."), "{fwd}");
    assert!(fwd.contains("dn1\tIN\tA\t10.77.0.32\ndn2\tIN\tA\t10.77.0.33\n"), "{fwd}");
    assert!(!fwd.contains("CNAME"), "no service roles, no service names:\n{fwd}");
    let rev = &dn1["reverse.zone.j2"];
    assert!(rev.contains("$ORIGIN 0.77.10.in-addr.arpa."), "{rev}");
    assert!(rev.contains("33.0.77.10.in-addr.arpa.\tIN\tPTR\tdn2.dd.groundwork.test."), "{rev}");

    let opts = &dn1["named.conf.options.j2"];
    assert!(opts.contains("\t10.77.0.0/24;\n\tlocalhost;"), "{opts}");
    assert!(opts.contains("allow-recursion { groundwork-site; };"), "{opts}");
    assert!(opts.contains("dnssec-validation no;") && !opts.contains("forwarders {"), "{opts}");
    let key = &dn1["ddns.key.j2"];
    assert!(key.contains(&format!("secret \"{}\";", secrets.get("tsig", "ddns-key").unwrap())), "{key}");

    let d4 = kea_json(&dn1["kea-dhcp4.conf.j2"]);
    let d4 = &d4["Dhcp4"];
    assert_eq!(d4["interfaces-config"]["interfaces"][0], "eth0");
    assert_eq!(d4["valid-lifetime"], 600);
    assert_eq!(d4["lease-database"]["persist"], true);
    assert_eq!(d4["ddns-qualifying-suffix"], "dd.groundwork.test.");
    assert_eq!(d4["ddns-send-updates"], true);
    let opt =
        |name: &str| d4["option-data"].as_array().unwrap().iter().find(|o| o["name"] == name).unwrap()["data"].clone();
    assert_eq!(opt("domain-name-servers"), "10.77.0.32, 10.77.0.33");
    assert_eq!(opt("domain-search"), "dd.groundwork.test");
    let subnet = &d4["subnet4"][0];
    assert_eq!(subnet["subnet"], "10.77.0.0/24");
    assert_eq!(subnet["pools"][0]["pool"], "10.77.0.100 - 10.77.0.199");
    assert_eq!(subnet["option-data"][0]["data"], "10.77.0.1");
    assert_eq!(subnet["reservations"][0]["hw-address"], "02:00:00:77:00:50");
    assert_eq!(subnet["reservations"][0]["hostname"], "printer");

    let d2 = kea_json(&dn1["kea-dhcp-ddns.conf.j2"]);
    let d2 = &d2["DhcpDdns"];
    assert_eq!(d2["tsig-keys"][0]["secret"], secrets.get("tsig", "ddns-key").unwrap());
    assert_eq!(d2["forward-ddns"]["ddns-domains"][0]["name"], "dd.groundwork.test.");
    assert_eq!(d2["reverse-ddns"]["ddns-domains"][0]["name"], "0.77.10.in-addr.arpa.");
    assert_eq!(d2["forward-ddns"]["ddns-domains"][0]["dns-servers"][0]["ip-address"], "10.77.0.32");
}

#[test]
fn service_names_and_forwarders_follow_the_answers() {
    let text = std::fs::read_to_string("wizard/examples/lab.toml")
        .unwrap()
        .replace("forwarders = []", "forwarders = [\"192.0.2.53\", \"192.0.2.54\"]");
    let a = answers::load_str("lab-with-forwarders.toml", &text).unwrap().answers;
    let (ns1, _) = render(&a, "ns1");
    let fwd = &ns1["forward.zone.j2"];
    for line in [
        "ldap\tIN\tCNAME\tid1.lab.groundwork.test.",
        "pg\tIN\tCNAME\tdb1.lab.groundwork.test.",
        "mariadb\tIN\tCNAME\tdb1.lab.groundwork.test.",
        "id1\tIN\tA\t10.77.0.12",
    ] {
        assert!(fwd.contains(line), "missing {line:?}:\n{fwd}");
    }
    let opts = &ns1["named.conf.options.j2"];
    assert!(opts.contains("\t\t192.0.2.53;\n\t\t192.0.2.54;\n"), "{opts}");
    assert!(opts.contains("forward only;") && opts.contains("dnssec-validation auto;"), "{opts}");
}

// ------------------------------------------------------------------ the lab

fn apply(state: &Path, extra: &[&str]) -> Run {
    run::apply(ANSWERS, state, extra)
}

/// `plan --live` leaves every file of dn1 and dn2 as it was: logs and systemd's own state
/// aside (a login writes them), and the secondary's zone copies, which its named writes on its
/// own schedule (an IXFR of the primary's last sync can land at any moment after a converge).
fn dry_run_changes_nothing(state: &Path) -> Run {
    for h in ["dn1", "dn2"] {
        on(h, "touch /run/groundwork-dry-run-marker");
    }
    std::thread::sleep(Duration::from_millis(1100));
    let dry = run::groundwork(state, &["plan", "--live", "--json", ANSWERS]);
    assert_eq!(dry.code, 0, "{}", dry.all_text());
    for h in ["dn1", "dn2"] {
        let touched = on(
            h,
            "find /etc /var /usr /root /srv /opt -xdev -newer /run/groundwork-dry-run-marker \
             -not -path '/var/log/*' -not -path '/var/lib/systemd/*' -not -path '/var/cache/bind*' -print",
        );
        assert!(touched.trim().is_empty(), "{h}: plan --live changed:\n{touched}");
    }
    dry
}

/// `dig` on this machine (bind9-dnsutils is installed when missing).
fn dig(args: &[&str]) -> String {
    let out = Command::new("dig").args(["+time=1", "+tries=2"]).args(args).output().unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn ensure_dig() {
    if Command::new("dig").arg("-v").output().is_ok_and(|o| o.status.success()) {
        return;
    }
    let st = Command::new("apt-get")
        .args(["-o", "DPkg::Lock::Timeout=300", "install", "-y", "-q", "bind9-dnsutils"])
        .env("DEBIAN_FRONTEND", "noninteractive")
        .status()
        .unwrap();
    assert!(st.success(), "apt-get install bind9-dnsutils failed");
}

/// Poll `f` every 100 ms for up to `limit`; the seconds it took, or None.
fn within(limit: Duration, mut f: impl FnMut() -> bool) -> Option<f64> {
    let t = Instant::now();
    while t.elapsed() < limit {
        if f() {
            return Some(t.elapsed().as_secs_f64());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    None
}

/// A copy of the shipped dns role in `dir/playbooks/dns`, with a zone template that renders a
/// record named-checkzone refuses.
fn broken_dns_role(dir: &Path) -> PathBuf {
    let root = dir.join("playbooks");
    let dns = root.join("dns");
    std::fs::create_dir_all(dns.join("templates")).unwrap();
    std::fs::copy("playbooks/dns/role.toml", dns.join("role.toml")).unwrap();
    for e in std::fs::read_dir("playbooks/dns/templates").unwrap() {
        let p = e.unwrap().path();
        std::fs::copy(&p, dns.join("templates").join(p.file_name().unwrap())).unwrap();
    }
    let t = dns.join("templates/forward.zone.j2");
    let mut text = std::fs::read_to_string(&t).unwrap();
    text.push_str("www\tIN\tA\t10.77.0.300\n");
    std::fs::write(&t, text).unwrap();
    root
}

/// busybox's udhcpd on dn2 (installed by the test): it offers 10.77.0.250, the one address of
/// its range, with dn2's address (10.77.0.33) as its server identifier; ARP check cut to 100 ms.
const FAKE_DHCP_CONF: &str = "interface eth0\nstart 10.77.0.250\nend 10.77.0.250\nmax_leases 1\n\
                              lease_file /run/gw-fake-dhcp.leases\noption subnet 255.255.255.0\noption lease 600\n";

#[test]
fn dns_and_dhcp_converge_and_a_dhcp_client_resolves_at_once() {
    let Some(_lab) = lab::exclusive_dhcp(HOSTS) else { return };
    fresh(HOSTS);
    ensure_dig();
    // dc1 booted with DHCP and its client retries in the background: stopped until step 2, so
    // no lease (and no DDNS update) lands while the dry runs below look for changed files.
    on("dc1", "ifdown eth0 >/dev/null 2>&1 || true");
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");

    // 0. A dry run changes nothing on fresh hosts; the DHCP probe's broadcast is reported as
    //    what apply would run, not run.
    let dry = dry_run_changes_nothing(&state);
    let probe = dry.step("dn1", "no other DHCP server on the segment").expect("probe step");
    assert_eq!(probe["status"], "would-change", "{probe}");

    // 1. First converge.
    let first = apply(&state, &[]);
    assert_eq!(first.code, 0, "{}", first.all_text());
    for h in ["dn1", "dn2"] {
        assert_eq!(first.count(h, "failed"), 0, "{}", first.all_text());
        assert!(first.count(h, "changed") >= 10, "{h}: {}", first.all_text());
    }
    eprintln!("first converge: {:.1} s", first.secs);
    // The hosts of the answer file resolve both ways at both servers.
    for server in ["@10.77.0.32", "@10.77.0.33"] {
        assert_eq!(dig(&[server, "+short", &format!("dn2.{DOMAIN}"), "A"]), "10.77.0.33", "{server}");
        assert_eq!(dig(&[server, "+short", "-x", "10.77.0.32"]), format!("dn1.{DOMAIN}."), "{server}");
    }

    // ... and a dry run on the converged hosts changes nothing either.
    let dry = dry_run_changes_nothing(&state);
    assert_eq!(dry.changed("dn1") + dry.changed("dn2"), 0, "{}", dry.all_text());

    // 2. The client takes a lease; its name resolves through dn1 at once.
    let ifup = on("dc1", "ifdown eth0 >/dev/null 2>&1; ifup eth0 2>&1");
    let bound = Instant::now();
    let addr = on("dc1", "ip -4 -o addr show dev eth0 | awk '{print $4}' | cut -d/ -f1");
    let addr = addr.trim().to_string();
    let last: u8 = addr.rsplit('.').next().unwrap().parse().unwrap_or(0);
    assert!(addr.starts_with("10.77.0.") && (100..=199).contains(&last), "dc1 has {addr:?}:\n{ifup}");
    let name = format!("dc1.{DOMAIN}");
    let secs = within(Duration::from_secs(10), || dig(&["@10.77.0.32", "+short", &name, "A"]) == addr)
        .unwrap_or_else(|| panic!("{name} does not resolve to {addr} at dn1"));
    let since_bound = bound.elapsed().as_secs_f64();
    assert_eq!(dig(&["@10.77.0.32", "+short", "-x", &addr]), format!("{name}."));
    eprintln!(
        "lease {addr} -> A and PTR at dn1: {secs:.2} s after the first query ({since_bound:.2} s after ifup returned)"
    );
    let secondary = within(Duration::from_secs(15), || {
        dig(&["@10.77.0.33", "+short", &name, "A"]) == addr
            && dig(&["@10.77.0.33", "+short", "-x", &addr]) == format!("{name}.")
    })
    .expect("the secondary serves the lease's records (NOTIFY/IXFR)");
    eprintln!("... and at dn2 {secondary:.2} s later");
    // The client got the site's DNS servers and search domain.
    let resolv = on("dc1", "cat /etc/resolv.conf");
    assert!(resolv.contains("nameserver 10.77.0.32") && resolv.contains("nameserver 10.77.0.33"), "{resolv}");
    assert!(resolv.contains(&format!("search {DOMAIN}")), "{resolv}");

    // 3. verify, as `groundwork verify` will run it.
    let a = load(ANSWERS);
    let sd = StateDir { root: state.clone() };
    let secrets = Secrets::load(&sd.secrets_path()).unwrap();
    let t = Instant::now();
    let rows = rt().block_on(verify::verify(&a, &secrets, &sd));
    eprintln!("verify in {:.1} s:\n{}", t.elapsed().as_secs_f64(), verify::render_table(&rows));
    assert!(verify::all_ok(&rows), "{}", verify::render_table(&rows));
    let row = |host: &str, check: &str| {
        rows.iter()
            .find(|r| r.host == host && r.check == check)
            .unwrap_or_else(|| panic!("no row {host} / {check}:\n{}", verify::render_table(&rows)))
    };
    for (host, check) in [
        ("dn1", "SOA dd.groundwork.test."),
        ("dn2", "SOA dd.groundwork.test."),
        ("dn2", "SOA 0.77.10.in-addr.arpa."),
        ("dn1", "A records"),
        ("dn2", "PTR records"),
        ("dn1", "recursion for the site"),
        ("dn1", "unsigned update refused"),
        ("dn1", "signed update + delete"),
        ("dn2", "update reaches the secondary"),
        ("dn1", "kea-dhcp4 status"),
        ("dn1", "kea-dhcp4 configuration"),
        ("dn1", "kea-dhcp-ddns status"),
        ("dn1", verify::dhcp::DISCOVER_CHECK),
    ] {
        assert_eq!(row(host, check).result, Outcome::Ok, "{host} / {check}");
    }
    let lease = row("dn1", &format!("lease {addr}"));
    assert_eq!(lease.result, Outcome::Ok);
    assert!(lease.detail.contains(&name), "{}", lease.detail);
    let json = verify::to_json(&rows);
    assert_eq!(json["ok"], true);

    // 4. A second apply changes nothing, and the lease's records are still there.
    let again = apply(&state, &[]);
    assert_eq!(again.code, 0, "{}", again.all_text());
    for h in ["dn1", "dn2"] {
        assert_eq!(again.count(h, "changed"), 0, "{h} changed on the re-run: {}", again.all_text());
    }
    eprintln!("re-run: {:.1} s, 0 changed", again.secs);
    assert_eq!(dig(&["@10.77.0.32", "+short", &name, "A"]), addr);
    assert_eq!(dig(&["@10.77.0.32", "+short", "-x", &addr]), format!("{name}."));
    assert!(on("dn1", "ls /var/lib/bind").contains(&format!("db.{DOMAIN}.jnl")));

    // 4b. Records changed by hand: a managed record with another TTL, a stray record at a
    //     managed name and one at a name groundwork does not manage. apply restores exactly its
    //     own records with one signed update (decided on the controller, sent by the host's
    //     nsupdate), and leaves the other name alone. (Both names are the zone's name servers:
    //     BIND refuses an update that leaves one without an address.)
    on(
        "dn1",
        &format!(
            "printf 'server 127.0.0.1\\nzone {DOMAIN}.\\nupdate delete dn2.{DOMAIN}. A\\n\
             update add dn2.{DOMAIN}. 60 IN A 10.77.0.33\\nupdate add dn1.{DOMAIN}. 3600 IN A 10.77.0.99\\nupdate add hand.{DOMAIN}. 300 IN A 10.77.0.98\\nsend\\n' \
             | nsupdate -k /etc/bind/groundwork/ddns.key"
        ),
    );
    assert!(dig(&["@10.77.0.32", "+noall", "+answer", &format!("dn2.{DOMAIN}"), "A"]).contains("\t60\t"));
    let fix = apply(&state, &[]);
    assert_eq!(fix.code, 0, "{}", fix.all_text());
    let sync = fix.step("dn1", "static records in the internal domain").expect("the zone step");
    assert_eq!(sync["status"], "changed", "{sync}");
    let detail = sync["detail"].as_str().unwrap_or("");
    assert!(
        detail.contains(&format!("missing: dn2.{DOMAIN}. 3600 IN A 10.77.0.33"))
            && detail.contains(&format!("extra:   dn1.{DOMAIN}. 3600 IN A 10.77.0.99"))
            && detail.contains(&format!("extra:   dn2.{DOMAIN}. 60 IN A 10.77.0.33"))
            && !detail.contains("hand."),
        "{detail}"
    );
    assert_eq!((fix.changed("dn1"), fix.changed("dn2")), (1, 0), "{}", fix.all_text());
    let dn2 = dig(&["@10.77.0.32", "+noall", "+answer", &format!("dn2.{DOMAIN}"), "A"]);
    assert!(dn2.contains("\t3600\tIN\tA\t10.77.0.33") && dn2.lines().count() == 1, "{dn2}");
    assert_eq!(dig(&["@10.77.0.32", "+short", &format!("dn1.{DOMAIN}"), "A"]), "10.77.0.32");
    assert_eq!(dig(&["@10.77.0.32", "+short", &format!("hand.{DOMAIN}"), "A"]), "10.77.0.98");
    assert_eq!(dig(&["@10.77.0.32", "+short", &name, "A"]), addr, "the lease's record");

    // 5. A zone template that named-checkzone refuses: the run fails, the live data stays.
    let static_file = format!("/etc/bind/groundwork/{DOMAIN}.static");
    let before = on("dn1", &format!("sha256sum {static_file}"));
    let broken = broken_dns_role(dir.path());
    let bad = apply(&state, &["--playbooks", broken.to_str().unwrap()]);
    assert_ne!(bad.code, 0, "{}", bad.all_text());
    let failed = bad.failed_steps();
    assert!(
        failed.iter().any(|e| e["host"] == "dn1"
            && e["step"] == "static records of the internal domain"
            && e["detail"].as_str().unwrap_or("").contains("refused the new")
            && e["detail"].as_str().unwrap_or("").contains("bad dotted quad")),
        "{}",
        bad.all_text()
    );
    assert_eq!(on("dn1", &format!("sha256sum {static_file}")), before, "the live static file changed");
    assert_eq!(dig(&["@10.77.0.32", "+short", &name, "A"]), addr, "DNS stopped answering");
    assert!(dig(&["@10.77.0.32", "+norecurse", DOMAIN, "SOA"]).contains("status: NOERROR"));

    // 5b. A zone that cannot load, in a file groundwork does not manage, and a managed file
    //     changed by hand: apply rewrites the file, and before named reloads,
    //     `named-checkconf -z` (the service step's validate) refuses the whole configuration.
    //     named keeps serving what it served; once the zone is gone, the pending reload happens.
    on(
        "dn2",
        "cp -a /etc/bind/named.conf.default-zones /root/default-zones.keep && \
         echo 'zone \"broken.test\" { type master; file \"/nonexistent/db.broken\"; };' >> /etc/bind/named.conf.default-zones && \
         echo '# by hand' >> /etc/bind/named.conf.options",
    );
    let refused = apply(&state, &[]);
    assert_ne!(refused.code, 0, "{}", refused.all_text());
    assert!(
        refused.failed_steps().iter().any(|e| e["host"] == "dn2"
            && e["step"] == "named"
            && e["detail"].as_str().unwrap_or("").contains("refuses the configuration: named was left as it was")),
        "{}",
        refused.all_text()
    );
    assert_eq!(on("dn2", "systemctl is-active named").trim(), "active");
    assert!(dig(&["@10.77.0.33", "+norecurse", DOMAIN, "SOA"]).contains("status: NOERROR"), "dn2 stopped answering");
    on("dn2", "mv /root/default-zones.keep /etc/bind/named.conf.default-zones");
    let reloaded = apply(&state, &[]);
    assert_eq!(reloaded.code, 0, "{}", reloaded.all_text());
    let named = reloaded.step("dn2", "named").expect("the named step");
    assert_eq!(named["status"], "changed", "the pending reload: {named}");

    // 6. Another DHCP server on the segment, while Kea does not serve it yet (the probe runs
    //    before Kea is enabled, not on every re-run): the run stops and names it.
    on("dn1", "systemctl stop kea-dhcp4-server");
    on(
        "dn2",
        "DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=300 install -y -q --no-install-recommends busybox >/dev/null",
    );
    on("dn2", &format!("printf '{FAKE_DHCP_CONF}' > /run/gw-fake-dhcp.conf"));
    // Each start forgets earlier offers (its one address is held for a client it offered it to).
    let fake_dhcp = |up: bool| {
        let cmd = if up {
            ": > /run/gw-fake-dhcp.leases; systemd-run --unit gw-fake-dhcp busybox udhcpd -f -a 100 /run/gw-fake-dhcp.conf"
        } else {
            "systemctl stop gw-fake-dhcp"
        };
        lab::lab(&["ssh", "dn2", cmd]).unwrap();
        std::thread::sleep(Duration::from_millis(500));
    };
    fake_dhcp(true);
    let foreign = apply(&state, &[]);
    fake_dhcp(false);
    // verify's DISCOVER from this machine names it too.
    fake_dhcp(true);
    let dn1 = a.hosts.iter().find(|h| h.name == "dn1").unwrap();
    let row = rt().block_on(verify::dhcp::discover_row(dn1, &a));
    fake_dhcp(false);
    eprintln!("with another server and Kea stopped:\n{}", verify::render_table(std::slice::from_ref(&row)));
    assert_eq!((row.result, row.cause), (Outcome::Fail, Some(verify::Cause::Timeout)), "{}", row.detail);
    assert_eq!(
        row.detail,
        "no offer from 10.77.0.32 on labbr0 within 2 s; other servers answer: 10.77.0.33 (offers 10.77.0.250)"
    );
    assert_ne!(foreign.code, 0, "{}", foreign.all_text());
    let failed = foreign.failed_steps();
    let probe = failed
        .iter()
        .find(|e| e["host"] == "dn1" && e["step"] == "no other DHCP server on the segment")
        .unwrap_or_else(|| panic!("the probe did not fail: {}", foreign.all_text()));
    let detail = probe["detail"].as_str().unwrap_or("");
    eprintln!("the probe's failure on dn1: {detail}");
    assert!(
        detail.contains(
            "another DHCP server answers on the segment of 10.77.0.32 (eth0): server 10.77.0.33 offers 10.77.0.250"
        ),
        "{detail}"
    );

    // 7. With the other server gone, Kea starts again; then nothing is left to change.
    let restart = apply(&state, &[]);
    assert_eq!(restart.code, 0, "{}", restart.all_text());
    let last = apply(&state, &[]);
    assert_eq!(last.code, 0, "{}", last.all_text());
    for h in ["dn1", "dn2"] {
        assert_eq!(last.count(h, "changed"), 0, "{h}: {}", last.all_text());
    }
    assert_eq!(dig(&["@10.77.0.32", "+short", &name, "A"]), addr);
}
