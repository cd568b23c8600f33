//! `groundwork drift` and `groundwork reset` end to end, on two real lab hosts: kz1 with DNS,
//! DHCP, OpenLDAP and MariaDB, kz2 with PostgreSQL (tests/fixtures/lab/reset.toml):
//!
//! 1. fresh hosts: their package lists and the sha256, mode and owner of everything under /etc;
//! 2. apply; `drift` finds nothing (exit 0);
//! 3. the zone file (the internal domain's static records) is edited by hand, with a secret in
//!    the edit, a file's mode is changed and slapd is stopped: `drift` (text, --json) and
//!    `plan --live` name all three, exit 2, the diff shows the edit with the secret masked;
//! 4. apply repairs them: `drift` finds nothing again, dig does not see the hand-made record,
//!    ldapsearch reaches slapd;
//! 5. `reset` without a terminal and without --yes refuses; `reset --dry-run --json` says what
//!    it would do; `reset --host kz2` resets kz2 alone and takes its records (its name, `pg`,
//!    its PTR) out of kz1's zones (dig); then `reset --yes --json` resets the site;
//! 6. on both hosts the package list equals the fresh one, and so does every file under /etc
//!    except the account databases (see [`LEGITIMATE`]);
//! 7. apply again converges and `verify` passes.
//!
//! Skipped with `SKIPPED:` where the lab cannot run; a failure under CI=true.

mod common;

use std::collections::BTreeMap;
use std::process::Command;

use common::lab;
use common::run::{self, fresh, groundwork, on};
use serde_json::Value;

const HOSTS: &[(&str, &str)] = &[("kz1", "10.77.0.140"), ("kz2", "10.77.0.141")];
const ANSWERS: &str = "tests/fixtures/lab/reset.toml";
const ZONE: &str = "/etc/bind/groundwork/rz.groundwork.test.static";

/// What differs under /etc after a reset, and why it may: Debian's packages keep the system
/// accounts they made (bind, _kea, openldap, postgres, mysql, _chrony...) when they are
/// purged, by policy: files those accounts own may remain (MariaDB's purge keeps
/// /var/lib/mysql unless asked), and a later install must find the same owner. groundwork
/// does the same. The `-` files are the copies shadow's tools keep of the previous version.
const LEGITIMATE: &[&str] =
    &["./passwd", "./passwd-", "./group", "./group-", "./shadow", "./shadow-", "./gshadow", "./gshadow-"];

/// Every path under /etc: `PATH<TAB>TYPE MODE OWNER LINK-TARGET`, then `SHA256  PATH` for
/// every file (one find and one sha256sum for all).
const SNAPSHOT: &str =
    r"cd /etc && find . -xdev -printf '%p\t%y %m %u:%g %l\n' && find . -xdev -type f -print0 | xargs -0 sha256sum";
const PACKAGES: &str =
    r"dpkg-query -W -f='${db:Status-Abbrev} ${Package}\n' | awk '$1 !~ /^.n/ { print $2 }' | LC_ALL=C sort";

/// Path -> its type, mode, owner, link target and sha256.
fn etc(host: &str) -> BTreeMap<String, String> {
    let mut m: BTreeMap<String, String> = BTreeMap::new();
    for l in on(host, SNAPSHOT).lines() {
        if let Some((path, meta)) = l.split_once('\t') {
            m.entry(path.to_string()).or_default().insert_str(0, meta);
        } else if let Some((sha, path)) = l.split_once("  ") {
            m.entry(path.to_string()).or_default().push_str(&format!(" sha256 {sha}"));
        }
    }
    m
}

fn json_of(r: &run::Run) -> Value {
    serde_json::from_str(&r.stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {}", r.all_text()))
}

fn have(cmd: &str) -> bool {
    Command::new("sh").args(["-c", &format!("command -v {cmd}")]).output().is_ok_and(|o| o.status.success())
}

/// dig and ldapsearch on this machine: installed with apt-get when missing.
fn ensure_clients() {
    let need: Vec<&str> = [("dig", "bind9-dnsutils"), ("ldapsearch", "ldap-utils")]
        .into_iter()
        .filter(|(cmd, _)| !have(cmd))
        .map(|(_, pkg)| pkg)
        .collect();
    if need.is_empty() {
        return;
    }
    let out = Command::new("apt-get")
        .args(["-o", "DPkg::Lock::Timeout=300", "install", "-y", "-q"])
        .args(&need)
        .env("DEBIAN_FRONTEND", "noninteractive")
        .output()
        .unwrap();
    assert!(out.status.success(), "apt-get install {need:?}: {}", String::from_utf8_lossy(&out.stderr));
}

fn dig(args: &[&str]) -> String {
    let out = Command::new("dig").args(["+time=1", "+tries=2", "+short", "@10.77.0.140"]).args(args).output().unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// slapd answers a client on the site address (the root DSE, anonymously).
fn ldap_answers() -> bool {
    Command::new("ldapsearch")
        .args(["-x", "-H", "ldap://10.77.0.140", "-s", "base", "-b", "", "namingContexts"])
        .output()
        .is_ok_and(|o| o.status.success() && String::from_utf8_lossy(&o.stdout).contains("dc=rz,dc=groundwork,dc=test"))
}

#[test]
fn drift_is_reported_and_repaired_and_reset_leaves_the_host_as_it_was_found() {
    let Some(_lab) = lab::exclusive_dhcp(HOSTS) else { return };
    ensure_clients();
    fresh(HOSTS);
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let state_arg = state.to_str().unwrap();

    // 1. The fresh hosts.
    let packages_fresh: Vec<String> = HOSTS.iter().map(|(h, _)| on(h, PACKAGES)).collect();
    let etc_fresh: Vec<BTreeMap<String, String>> = HOSTS.iter().map(|(h, _)| etc(h)).collect();
    let passwd_fresh: Vec<String> = HOSTS.iter().map(|(h, _)| on(h, "cat /etc/passwd")).collect();
    let nothing = groundwork(&state, &["reset", "--dry-run", ANSWERS]);
    assert_eq!(nothing.code, 0, "{}", nothing.all_text());
    assert!(nothing.stderr.contains("kz1: nothing to reset"), "{}", nothing.all_text());

    // 2. Applied: no drift.
    let first = run::apply(ANSWERS, &state, &[]);
    assert_eq!(first.code, 0, "{}", first.all_text());
    let clean = groundwork(&state, &["drift", ANSWERS, "--json"]);
    assert_eq!(clean.code, 0, "{}", clean.all_text());
    assert_eq!(json_of(&clean)["drifted"], false);

    // 3. Changed by hand: a record in the zone file (with a secret in it), a mode, slapd.
    let secrets = groundwork::state::Secrets::load(&state.join("secrets.toml")).unwrap();
    let secret = secrets.get("ldap", "admin").expect("the ldap admin password").to_string();
    on(
        "kz1",
        &format!(
            "printf 'handmade IN A 10.77.0.99\\n; {secret}\\n' >> {ZONE} && chmod 600 /etc/bind/named.conf.options && systemctl stop slapd"
        ),
    );
    let drifted = groundwork(&state, &["drift", ANSWERS, "--json"]);
    assert_eq!(drifted.code, 2, "exit 2 when something drifted: {}", drifted.all_text());
    let doc = json_of(&drifted);
    assert_eq!(doc["drifted"], true);
    let host = doc["hosts"].as_array().unwrap().iter().find(|h| h["host"] == "kz1").unwrap();
    let kz2 = doc["hosts"].as_array().unwrap().iter().find(|h| h["host"] == "kz2").unwrap();
    assert_eq!(kz2["drifted"], false, "{kz2}");
    let files = host["files"].as_array().unwrap();
    let zone = files.iter().find(|f| f["path"] == ZONE).unwrap_or_else(|| panic!("zone file not named: {doc}"));
    assert_eq!(zone["changes"], serde_json::json!(["content"]));
    let diff = zone["diff"].as_str().unwrap();
    assert!(diff.contains("+handmade IN A 10.77.0.99") && diff.contains("+; ********"), "{diff}");
    let options = files.iter().find(|f| f["path"] == "/etc/bind/named.conf.options").expect("the mode change");
    assert_eq!(options["changes"], serde_json::json!(["mode 644 -> 600"]));
    let slapd = host["services"].as_array().unwrap().iter().find(|s| s["unit"] == "slapd").expect("slapd stopped");
    assert!(slapd["state"].as_str().unwrap().starts_with("stopped"), "{slapd}");
    assert!(!drifted.stdout.contains(&secret), "the secret is masked");
    let text = groundwork(&state, &["drift", ANSWERS]);
    assert_eq!(text.code, 2);
    assert!(text.stdout.contains("kz1: DRIFT") && text.stdout.contains("service slapd: stopped"), "{}", text.stdout);
    let live = groundwork(&state, &["plan", "--live", ANSWERS]);
    assert!(live.stderr.contains("drift (changed since groundwork left the hosts)"), "{}", live.all_text());
    assert!(live.stderr.contains(&format!("file {ZONE}: content")), "{}", live.all_text());
    assert!(!live.stderr.contains(&secret) && !live.stdout.contains(&secret));

    // 4. apply repairs them.
    let repair = run::apply(ANSWERS, &state, &[]);
    assert_eq!(repair.code, 0, "{}", repair.all_text());
    let repaired = groundwork(&state, &["drift", ANSWERS]);
    assert_eq!(repaired.code, 0, "{}", repaired.all_text());
    assert!(repaired.stdout.contains("kz1: no drift"), "{}", repaired.stdout);
    assert_eq!(dig(&["handmade.rz.groundwork.test"]), "", "the hand-made record never reached the zone");
    assert_eq!(dig(&["kz1.rz.groundwork.test"]), "10.77.0.140");
    assert!(ldap_answers(), "slapd runs again");

    // 5. reset: asks (no terminal: refused), shows, then does it.
    let asks = Command::new(env!("CARGO_BIN_EXE_groundwork"))
        .args(["reset", ANSWERS, "--state", state_arg])
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    assert_eq!(asks.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&asks.stderr).contains("add --yes"));
    assert!(on("kz1", "systemctl is-active slapd").trim() == "active", "nothing was changed");
    let dry = groundwork(&state, &["reset", "--dry-run", "--json", ANSWERS]);
    assert_eq!(dry.code, 0, "{}", dry.all_text());
    let plan = &json_of(&dry)["hosts"][0]["plan"];
    assert_eq!(json_of(&dry)["hosts"][0]["host"], "kz1");
    let count = |k: &str| plan[k].as_array().map_or(0, Vec::len);
    assert!(count("purge") > 50 && count("restore") >= 5 && count("remove") >= 20, "{plan}");
    assert!(plan["purge"].as_array().unwrap().iter().any(|p| p == "slapd"), "{plan}");
    assert!(!plan["purge"].as_array().unwrap().iter().any(|p| p == "openssh-server"), "there before: {plan}");
    assert!(plan["restore"].as_array().unwrap().iter().any(|p| p == "/etc/hosts"), "{plan}");
    assert_eq!(on("kz1", "dpkg-query -W -f='${Status}' slapd"), "install ok installed", "a dry run changes nothing");
    // kz2 alone: its records leave kz1's zones.
    assert_eq!(dig(&["pg.rz.groundwork.test"]), "kz2.rz.groundwork.test.\n10.77.0.141");
    let one = groundwork(&state, &["reset", "--yes", "--json", "--host", "kz2", ANSWERS]);
    assert_eq!(one.code, 0, "{}", one.all_text());
    let kz2 = &json_of(&one)["hosts"][0];
    assert_eq!((kz2["host"].as_str(), kz2["ok"].as_bool()), (Some("kz2"), Some(true)), "{kz2}");
    let removed: Vec<&str> = kz2["dns_removed"].as_array().unwrap().iter().filter_map(Value::as_str).collect();
    for r in ["kz2.rz.groundwork.test. A", "pg.rz.groundwork.test. CNAME", "141.0.77.10.in-addr.arpa. PTR"] {
        assert!(removed.contains(&r), "{r} not removed: {removed:?}");
    }
    assert_eq!(dig(&["kz2.rz.groundwork.test"]), "");
    assert_eq!(dig(&["pg.rz.groundwork.test"]), "");
    assert_eq!(dig(&["-x", "10.77.0.141"]), "");
    assert_eq!(dig(&["kz1.rz.groundwork.test"]), "10.77.0.140", "kz1 keeps its records");
    assert_eq!(on("kz1", "systemctl is-active slapd named").trim(), "active\nactive", "kz1 was not touched");
    // Then the site.
    let reset = groundwork(&state, &["reset", "--yes", "--json", ANSWERS]);
    assert_eq!(reset.code, 0, "{}", reset.all_text());
    let done = &json_of(&reset)["hosts"][0];
    assert_eq!(done["ok"], true, "{done}");
    let kz2_again = json_of(&reset)["hosts"].as_array().unwrap().iter().find(|h| h["host"] == "kz2").cloned().unwrap();
    assert_eq!(kz2_again["plan"]["purge"], serde_json::json!([]), "kz2 was reset already: {kz2_again}");

    // 6. As they were found.
    let mut differ: Vec<String> = Vec::new();
    for (i, (h, _)) in HOSTS.iter().enumerate() {
        assert_eq!(on(h, PACKAGES), packages_fresh[i], "{h}: the package list is the fresh host's");
        let after = etc(h);
        let before = &etc_fresh[i];
        let mut paths: Vec<&String> = before.keys().chain(after.keys()).collect();
        paths.sort();
        paths.dedup();
        let changed: Vec<&String> = paths.into_iter().filter(|p| before.get(*p) != after.get(*p)).collect();
        let unexplained: Vec<String> = changed
            .iter()
            .filter(|p| !LEGITIMATE.contains(&p.as_str()))
            .map(|p| format!("{p}: fresh {:?}, after {:?}", before.get(*p), after.get(*p)))
            .collect();
        assert!(unexplained.is_empty(), "{h}: /etc differs from the fresh host:\n{}", unexplained.join("\n"));
        differ.extend(changed.iter().map(|p| format!("{h}:{p}")));
        // The account databases only gained the packages' system accounts; nothing else changed.
        let now = on(h, "cat /etc/passwd");
        for line in passwd_fresh[i].lines() {
            assert!(now.lines().any(|l| l == line), "{h}: {line} is gone or changed");
        }
        for line in now.lines().filter(|l| !passwd_fresh[i].lines().any(|f| f == *l)) {
            let uid: u32 = line.split(':').nth(2).unwrap().parse().unwrap();
            assert!(uid < 1000, "{h}: only system accounts were added: {line}");
        }
        assert_eq!(on(h, "ls /var/backups/groundwork /var/lib/groundwork 2>/dev/null | wc -l").trim(), "0", "{h}");
    }
    let again = groundwork(&state, &["reset", "--dry-run", ANSWERS]);
    assert!(again.stderr.contains("kz1: nothing to reset"), "{}", again.all_text());

    // 7. Apply again converges.
    let second = run::apply(ANSWERS, &state, &[]);
    assert_eq!(second.code, 0, "{}", second.all_text());
    let verify = groundwork(&state, &["verify", ANSWERS]);
    assert_eq!(verify.code, 0, "{}", verify.all_text());
    assert_eq!(dig(&["kz1.rz.groundwork.test"]), "10.77.0.140");
    assert!(ldap_answers());
    let plan = &json_of(&reset)["hosts"][0]["plan"];
    let kz2_plan = &json_of(&one)["hosts"][0]["plan"];
    eprintln!(
        "FIGURES: kz2 alone: {} packages purged, {} files restored, {} paths removed, {:.1} s",
        kz2_plan["purge"].as_array().map_or(0, Vec::len),
        kz2_plan["restore"].as_array().map_or(0, Vec::len),
        kz2_plan["remove"].as_array().map_or(0, Vec::len),
        one.secs
    );
    eprintln!(
        "FIGURES: apply {:.1} s; repair {:.1} s; reset of kz1 {:.1} s: {} packages purged, {} files restored, {} paths removed, {} leftovers of the purge removed; apply after reset {:.1} s; /etc differs only in {}",
        first.secs,
        repair.secs,
        reset.secs,
        plan["purge"].as_array().map_or(0, Vec::len),
        plan["restore"].as_array().map_or(0, Vec::len),
        plan["remove"].as_array().map_or(0, Vec::len),
        json_of(&reset)["hosts"][0]["leftovers"].as_array().map_or(0, Vec::len),
        second.secs,
        differ.join(" ")
    );
}
