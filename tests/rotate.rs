//! Day two on the lab: `groundwork rotate` and `groundwork apply --try` / `confirm`.
//!
//! Hosts (tests/fixtures/lab/rotate.toml): kq1 (dns primary + dhcp), kq2 (ldap, postgresql,
//! mariadb), kq3 (dns secondary).
//!
//! rotate: every generated secret of the site gets a new value; `verify` passes; the real
//! clients of this machine (psql, mysql, ldapwhoami, nsupdate) get in with the new value and
//! are refused with the old one; no value is in any output or log; and while the TSIG key
//! changes, the key kea-dhcp-ddns runs with is accepted by BIND at every moment (a probe on
//! kq1 signs an update with it every 0.2 s).
//!
//! apply --try: a change that makes BIND stop answering this machine is reverted at once and
//! DNS answers again; a change confirmed in time stays after its deadline; a change whose
//! host this machine can no longer reach during the try window is reverted by the host's own
//! timer.
//!
//! k3s (kq4 server, kq5 agent): no k3s can run here, so the token's rotation runs against the
//! TEST DOUBLE of k3s (tests/doubles/k3s, its `token rotate` written from k3s's documented
//! behaviour): k3s's rotation on the first server, the rolling restart, the old token refused.
//! The decisions themselves are unit tests in src/rotate.rs.
//! Skipped with `SKIPPED:` where the lab cannot run; a failure under CI=true.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::lab;
use common::run::{self, on};
use groundwork::state::Secrets;
use serde_json::Value;

const HOSTS: &[(&str, &str)] = &[("kq1", "10.77.0.150"), ("kq2", "10.77.0.151"), ("kq3", "10.77.0.152")];
const ANSWERS: &str = "tests/fixtures/lab/rotate.toml";
const DOMAIN: &str = "kq.groundwork.test";
const SUFFIX: &str = "dc=kq,dc=groundwork,dc=test";

fn secrets(state: &Path) -> Secrets {
    Secrets::load(&state.join("secrets.toml")).unwrap()
}

fn sh(cmd: &mut Command) -> (bool, String) {
    let out = cmd.output().unwrap();
    (out.status.success(), format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)))
}

fn psql(password: &str) -> (bool, String) {
    sh(Command::new("psql")
        .args(["-X", "-w", "-tAc", "select 1", "host=10.77.0.151 dbname=keycloak user=keycloak connect_timeout=5"])
        .env("PGPASSWORD", password))
}

fn mysql(password: &str) -> (bool, String) {
    sh(Command::new("mysql")
        .args(["-h", "10.77.0.151", "-u", "nextcloud", "--ssl", "--connect-timeout=5", "nextcloud", "-e", "select 1"])
        .env("MYSQL_PWD", password))
}

fn ldap_reader(password: &str) -> (bool, String) {
    sh(Command::new("ldapwhoami")
        .args(["-x", "-ZZ", "-H", "ldap://10.77.0.151", "-D", &format!("cn=groundwork-reader,ou=services,{SUFFIX}")])
        .args(["-w", password])
        .env("LDAPTLS_REQCERT", "never"))
}

/// The admin on the host over ldapi (slapd lets it bind only there and with TLS).
fn ldap_admin(password: &str) -> (bool, String) {
    let out = on(
        "kq2",
        &format!(
            "ldapwhoami -x -H ldapi:/// -D 'cn=admin,{SUFFIX}' -w '{password}' >/dev/null 2>&1 && echo BOUND || echo REFUSED"
        ),
    );
    (out.trim() == "BOUND", out)
}

/// A TSIG-signed update to kq1 with `key` (the name is the secrets' key name).
fn nsupdate(name: &str, key: &str) -> (bool, String) {
    let mut child = Command::new("nsupdate")
        .args(["-y", &format!("hmac-sha256:{name}:{key}")])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write as _;
    let script = format!(
        "server 10.77.0.150\nzone {DOMAIN}\nupdate delete _rotate-test.{DOMAIN} TXT\nupdate add _rotate-test.{DOMAIN} 60 TXT \"x\"\nsend\n"
    );
    child.stdin.take().unwrap().write_all(script.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    (out.status.success(), format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)))
}

/// Every 0.2 s on kq1: the key kea-dhcp-ddns runs with (read from its configuration when its
/// process (re)starts) signs an update to BIND; each result is a line of /root/kea-probe.log.
const KEA_PROBE: &str = r#"
key() { sed -n 's/.*"name": "\([^"]*\)", "algorithm": "HMAC-SHA256", "secret": "\([^"]*\)".*/\1 \2/p' /etc/kea/kea-dhcp-ddns.conf; }
pid=''; : > /root/kea-probe.log
while [ ! -e /root/kea-probe.stop ]; do
  now=$(systemctl show -p MainPID --value kea-dhcp-ddns-server)
  if [ "$now" != "$pid" ]; then pid=$now; set -- $(key); name=$1; secret=$2; echo "kea $pid $name" >> /root/kea-probe.log; fi
  if printf 'server 127.0.0.1\nzone @DOMAIN@\nupdate delete _kea-probe.@DOMAIN@ TXT\nupdate add _kea-probe.@DOMAIN@ 60 TXT "p"\nsend\n' | nsupdate -t 2 -y "hmac-sha256:$name:$secret" >/dev/null 2>&1
  then echo "ok $name" >> /root/kea-probe.log; else echo "REFUSED $name" >> /root/kea-probe.log; fi
  sleep 0.2
done
"#;

fn apply_site(state: &Path) {
    let first = run::apply(ANSWERS, state, &[]);
    assert_eq!(first.code, 0, "apply: {}", first.all_text());
}

#[test]
fn rotate_renews_every_secret_verify_passes_and_the_old_values_are_refused() {
    let Some(_lab) = lab::exclusive_dhcp(HOSTS) else { return };
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    apply_site(&state);
    let old = secrets(&state);
    let old_of = |t: &str, k: &str| old.get(t, k).unwrap().to_string();
    assert!(psql(&old_of("postgresql", "keycloak")).0, "{}", psql(&old_of("postgresql", "keycloak")).1);

    on(
        "kq1",
        &format!(
            "rm -f /root/kea-probe.stop; systemd-run --unit kea-probe sh -c {}",
            shell_quote(&KEA_PROBE.replace("@DOMAIN@", DOMAIN))
        ),
    );
    let t = Instant::now();
    let r = run::groundwork(&state, &["rotate", "--file", ANSWERS, "--json"]);
    on("kq1", "touch /root/kea-probe.stop; sleep 0.5; systemctl stop kea-probe 2>/dev/null; true");
    let took = t.elapsed().as_secs_f64();
    let text = r.all_text();
    assert_eq!(r.code, 0, "{text}");
    let done = r.events.iter().find(|e| e["event"] == "rotate-finished").unwrap_or_else(|| panic!("{text}"));
    let names: Vec<&str> = done["secrets"].as_array().unwrap().iter().map(|s| s["secret"].as_str().unwrap()).collect();
    assert_eq!(
        names,
        ["postgresql.keycloak", "mariadb.nextcloud", "ldap.admin", "ldap.service", "tsig.ddns-key"],
        "{text}"
    );
    for s in done["secrets"].as_array().unwrap() {
        assert_eq!(s["ok"], true, "{s}");
        assert!(!s["verified"].as_array().unwrap().is_empty(), "{s}");
    }
    eprintln!("rotate of 5 secrets: {took:.1} s; {}", done);

    let new = secrets(&state);
    assert_eq!(new.get("previous", "postgresql.keycloak"), None, "the old value goes once verified");
    assert_eq!(new.get("tsig", "ddns-key-next"), None);
    for (t, k) in [
        ("postgresql", "keycloak"),
        ("mariadb", "nextcloud"),
        ("ldap", "admin"),
        ("ldap", "service"),
        ("tsig", "ddns-key"),
    ] {
        let (o, n) = (old.get(t, k).unwrap(), new.get(t, k).unwrap());
        assert_ne!(o, n, "{t}.{k}");
        // Never in what groundwork printed, nor in its logs.
        assert!(!text.contains(o) && !text.contains(n), "{t}.{k} in the output");
        for log in std::fs::read_dir(state.join("logs")).unwrap() {
            let log = std::fs::read_to_string(log.unwrap().path()).unwrap();
            assert!(!log.contains(o) && !log.contains(n), "{t}.{k} in a log");
        }
    }

    // Real clients: the new values get in, the old ones are refused.
    let new_of = |t: &str, k: &str| new.get(t, k).unwrap().to_string();
    for (what, check, key) in [
        ("psql", psql as fn(&str) -> (bool, String), ("postgresql", "keycloak")),
        ("mysql", mysql, ("mariadb", "nextcloud")),
        ("ldapwhoami reader", ldap_reader, ("ldap", "service")),
        ("ldapwhoami admin", ldap_admin, ("ldap", "admin")),
    ] {
        let (ok, said) = check(&new_of(key.0, key.1));
        assert!(ok, "{what} with the new value: {said}");
        let (ok, said) = check(&old_of(key.0, key.1));
        assert!(!ok, "{what} with the OLD value got in: {said}");
    }
    let (ok, said) = nsupdate("ddns-key", &new_of("tsig", "ddns-key"));
    assert!(ok, "nsupdate with the new key: {said}");
    let (ok, said) = nsupdate("ddns-key", &old_of("tsig", "ddns-key"));
    assert!(!ok, "nsupdate with the OLD key was accepted: {said}");

    // While the key changed, BIND accepted what Kea signed with at every moment.
    let probe = on("kq1", "cat /root/kea-probe.log");
    let refused = probe.lines().filter(|l| l.starts_with("REFUSED")).count();
    let accepted = probe.lines().filter(|l| l.starts_with("ok")).count();
    let keas: Vec<&str> = probe.lines().filter(|l| l.starts_with("kea ")).collect();
    eprintln!("kea probe: {accepted} accepted, {refused} refused; kea-dhcp-ddns runs: {keas:?}");
    assert_eq!(refused, 0, "{probe}");
    assert!(accepted > 10, "{probe}");
    assert!(probe.contains("ok ddns-key-next") && keas.len() >= 3, "Kea moved to the new key and back: {probe}");

    // verify with the new secrets passes; a second rotate of one name starts anew and passes.
    let v = run::groundwork(&state, &["verify", ANSWERS, "--json"]);
    assert_eq!(v.code, 0, "{}", v.stdout);
    let again = run::groundwork(&state, &["rotate", "postgresql.keycloak", "--file", ANSWERS]);
    assert_eq!(again.code, 0, "{}", again.all_text());
    assert!(again.stdout.contains("postgresql.keycloak: rotated; verified by"), "{}", again.stdout);
    let bad = run::groundwork(&state, &["rotate", "k3s", "--file", ANSWERS]);
    assert_eq!(bad.code, 2);
    assert!(bad.stderr.contains("`k3s` is not a secret of this site"), "{}", bad.stderr);
}

fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

fn dig(query: &str) -> String {
    let out = Command::new("dig")
        .args(["+short", "+time=1", "+tries=1", "@10.77.0.150"])
        .args(query.split_whitespace())
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn try_finished(r: &run::Run) -> Value {
    r.events.iter().find(|e| e["event"] == "try-finished").cloned().unwrap_or_else(|| panic!("{}", r.all_text()))
}

/// The answers with more hosts that this run leaves out (`--host`): new names in the zones.
fn with_hosts(dir: &Path, file: &str, hosts: &[(&str, &str)]) -> String {
    let mut text = std::fs::read_to_string(ANSWERS).unwrap();
    for (name, address) in hosts {
        text.push_str(&format!("\n[[host]]\nname = \"{name}\"\naddress = \"{address}\"\nroles = []\n"));
    }
    let path = dir.join(file);
    std::fs::write(&path, text).unwrap();
    path.display().to_string()
}

/// `apply FILE --yes --json --try SECONDS` on the three hosts of the site.
fn try_apply(state: &Path, file: &str, seconds: &str, extra: &[&str]) -> run::Run {
    let mut args =
        vec!["apply", file, "--yes", "--json", "--try", seconds, "--host", "kq1", "--host", "kq2", "--host", "kq3"];
    args.extend_from_slice(extra);
    run::groundwork(state, &args)
}

fn armed(host: &str) -> bool {
    on(host, "systemctl is-active groundwork-try-revert.timer || true").trim() == "active"
}

#[test]
fn apply_try_reverts_a_breaking_dns_change_keeps_a_confirmed_one_and_reverts_on_a_cut_connection() {
    let Some(_lab) = lab::exclusive_dhcp(HOSTS) else { return };
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    apply_site(&state);
    assert_eq!(dig(&format!("kq3.{DOMAIN}")), "10.77.0.152");

    // 1. BIND listens on loopback only: this machine gets no answer; reverted at once.
    let playbooks = dir.path().join("playbooks");
    std::fs::create_dir_all(&playbooks).unwrap();
    assert!(Command::new("cp").args(["-r", "playbooks/dns"]).arg(&playbooks).status().unwrap().success());
    let options = playbooks.join("dns/templates/named.conf.options.j2");
    let text = std::fs::read_to_string(&options).unwrap();
    assert!(text.contains("listen-on { any; };"));
    std::fs::write(&options, text.replace("listen-on { any; };", "listen-on { 127.0.0.1; };")).unwrap();
    let pb = playbooks.display().to_string();
    let t = Instant::now();
    let broken = try_apply(&state, ANSWERS, "120", &["--playbooks", &pb]);
    let f = try_finished(&broken);
    eprintln!("breaking change: exit {} in {:.1} s: {}", broken.code, t.elapsed().as_secs_f64(), f);
    assert_eq!(broken.code, 1, "{}", broken.all_text());
    assert_eq!(f["applied"], true);
    assert_eq!(f["reverted"], true);
    let dns_failed = f["checks"].as_array().unwrap().iter().any(|r| r["service"] == "dns" && r["result"] == "fail");
    assert!(dns_failed, "{f}");
    assert!(t.elapsed() < Duration::from_secs(100), "reverted by groundwork at once, not by the timer");
    assert!(f["after_revert"].as_array().unwrap().iter().all(|r| r["result"] != "fail"), "{f}");
    assert_eq!(dig(&format!("kq3.{DOMAIN}")), "10.77.0.152", "DNS answers again");
    assert!(on("kq1", "cat /etc/bind/named.conf.options").contains("listen-on { any; };"));
    for (h, _) in HOSTS {
        assert!(!armed(h), "{h} is still armed");
    }

    // 2. A new name in the zones (kq6, a host this run leaves out), confirmed in time: it stays
    // after the deadline.
    let two = with_hosts(dir.path(), "two.toml", &[("kq6", "10.77.0.155")]);
    let t = Instant::now();
    let kept = try_apply(&state, &two, "25", &[]);
    assert_eq!(kept.code, 0, "{}", kept.all_text());
    assert_eq!(try_finished(&kept)["reverted"], false);
    assert!(armed("kq1"));
    assert_eq!(dig(&format!("kq6.{DOMAIN}")), "10.77.0.155");
    let c = run::groundwork(&state, &["confirm", &two, "--json"]);
    eprintln!("confirmed {:.1} s after the try began: {}", t.elapsed().as_secs_f64(), c.stdout);
    assert_eq!(c.code, 0, "{}", c.all_text());
    let doc: Value = serde_json::from_str(&c.stdout).unwrap();
    for (h, _) in HOSTS {
        assert_eq!(doc["hosts"][h], "confirmed", "{doc}");
        assert!(!armed(h));
    }
    std::thread::sleep(Duration::from_secs(27).saturating_sub(t.elapsed()));
    assert_eq!(dig(&format!("kq6.{DOMAIN}")), "10.77.0.155", "the confirmed change stays");
    assert_eq!(dig("-x 10.77.0.155"), format!("kq6.{DOMAIN}."));

    // 3. One more name, and this machine loses its connection to kq1 during the window: kq1's
    // timer reverts it.
    let three = with_hosts(dir.path(), "three.toml", &[("kq6", "10.77.0.155"), ("kq5", "10.77.0.154")]);
    let t = Instant::now();
    let cut = try_apply(&state, &three, "20", &[]);
    assert_eq!(cut.code, 0, "{}", cut.all_text());
    assert_eq!(dig(&format!("kq5.{DOMAIN}")), "10.77.0.154");
    // The controller's connection is cut: kq1 no longer answers this machine (its own network
    // and services stay as they are).
    on("kq1", "ip route add blackhole 10.77.0.1/32");
    let deadline = Duration::from_secs(20);
    std::thread::sleep((deadline + Duration::from_secs(2)).saturating_sub(t.elapsed()));
    let local = format!("dig +short +time=1 +tries=1 @127.0.0.1 kq5.{DOMAIN}");
    let mut gone = false;
    for _ in 0..30 {
        if !armed("kq1") && on("kq1", &local).trim().is_empty() {
            gone = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    let reverted_at = t.elapsed().as_secs_f64();
    on("kq1", "ip route del blackhole 10.77.0.1/32");
    assert!(
        gone,
        "kq1 did not revert by itself; {}",
        on("kq1", "systemctl status groundwork-try-revert.timer 2>&1 | head -5")
    );
    eprintln!("cut connection: kq1 reverted by its timer ({reverted_at:.1} s after the try began, deadline 20 s)");
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(dig(&format!("kq5.{DOMAIN}")), "", "kq5 is gone with the revert");
    assert_eq!(dig(&format!("kq6.{DOMAIN}")), "10.77.0.155", "the confirmed change is still there");
    let c = run::groundwork(&state, &["confirm", &three, "--json"]);
    assert_eq!(c.code, 1, "{}", c.all_text());
    let doc: Value = serde_json::from_str(&c.stdout).unwrap();
    assert_eq!(doc["hosts"]["kq1"], "reverted", "{doc}");
}

const K3S_NODES: &[(&str, &str)] = &[("kq4", "10.77.0.153"), ("kq5", "10.77.0.154")];

/// Each start of k3s on a node (the double writes one line per start).
fn starts(host: &str) -> Vec<f64> {
    on(host, "cat /var/lib/k3s-double/starts 2>/dev/null || true")
        .lines()
        .filter_map(|l| l.split_whitespace().next()?.parse().ok())
        .collect()
}

/// A join as a node sends it to the first server's registry (the double's, on port 6443).
fn join(token: &str) -> String {
    let talk = format!(
        "exec 3<>/dev/tcp/10.77.0.153/6443; printf 'join rotate-probe agent %s\\n' {} >&3; read -r r <&3; echo \"$r\"",
        shell_quote(token.trim())
    );
    // bash: /dev/tcp is bash's.
    on("kq5", &format!("bash -c {}", shell_quote(&talk))).trim().to_string()
}

/// The k3s token with the TEST DOUBLE of k3s (tests/doubles/k3s; no k3s runs here): `k3s
/// token rotate` on the first server, then the rolling restart (the server, then the agent
/// with the server's new full token); verify's k3s rows pass; the old token no longer joins.
#[test]
fn rotate_k3s_token_rotates_on_the_first_server_then_restarts_the_nodes_k3s_test_double() {
    let Some(_lab) = lab::exclusive_k3s(K3S_NODES) else { return };
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let bundle = dir.path().join("bundle");
    common::double::double_bundle(&bundle);
    let key = lab::key();
    let answers = dir.path().join("k3s.toml");
    std::fs::write(
        &answers,
        format!(
            "[site]\nname = \"lab-rotate-k3s\"\ninternal-domain = \"kq.groundwork.test\"\nexternal-domain = \"groundwork.test\"\n\
             admin-email = \"ops@groundwork.test\"\n\n[network]\nsubnet = \"10.77.0.0/24\"\ngateway = \"10.77.0.1\"\n\n\
             [[host]]\nname = \"kq4\"\naddress = \"10.77.0.153\"\nssh-key = \"{k}\"\nroles = [\"k3s-server\"]\n\n\
             [[host]]\nname = \"kq5\"\naddress = \"10.77.0.154\"\nssh-key = \"{k}\"\nroles = [\"k3s-agent\"]\n\n\
             [k3s]\nversion = \"{v}\"\napi-endpoint = \"10.77.0.153\"\nairgap-bundle = \"{b}\"\n",
            k = key.display(),
            v = common::double::VERSION,
            b = bundle.display()
        ),
    )
    .unwrap();
    let answers = answers.display().to_string();
    let first = run::apply(&answers, &state, &[]);
    assert_eq!(first.code, 0, "{}", first.all_text());
    let old = secrets(&state).get("k3s", "token").unwrap().to_string();
    let old_full = on("kq4", "cat /var/lib/rancher/k3s/server/token");
    assert!(old_full.trim().ends_with(&format!("::server:{old}")), "{old_full}");
    let before = (starts("kq4").len(), starts("kq5").len());

    let r = run::groundwork(&state, &["rotate", "k3s", "--file", &answers, "--json"]);
    let text = r.all_text();
    assert_eq!(r.code, 0, "{text}");
    let done = r.events.iter().find(|e| e["event"] == "rotate-finished").unwrap_or_else(|| panic!("{text}"));
    eprintln!("rotate k3s: {:.1} s: {done}", r.secs);
    assert_eq!(done["secrets"][0]["secret"], "k3s.token");
    let verified = done["secrets"][0]["verified"].as_array().unwrap();
    assert!(verified.iter().any(|v| v.as_str().unwrap().starts_with("k3s / ")), "{done}");

    let new = secrets(&state).get("k3s", "token").unwrap().to_string();
    assert_ne!(new, old);
    assert_eq!(secrets(&state).get("previous", "k3s.token"), None);
    let new_full = on("kq4", "cat /var/lib/rancher/k3s/server/token");
    let ca = |t: &str| t.split("::server:").next().unwrap().to_string();
    assert_eq!(ca(&new_full), ca(&old_full), "the same cluster CA");
    assert!(new_full.trim().ends_with(&format!("::server:{new}")), "k3s's token rotate ran");
    assert_eq!(on("kq5", "cat /etc/rancher/k3s/join-token"), new_full, "the agent got the new full token");
    // Rolling: the server restarted, then the agent.
    let (s4, s5) = (starts("kq4"), starts("kq5"));
    assert_eq!((s4.len(), s5.len()), (before.0 + 1, before.1 + 1), "{s4:?} {s5:?}");
    assert!(s4.last() < s5.last(), "the server first: {s4:?} {s5:?}");
    // The old token no longer joins; the new one does.
    assert_eq!(join(&old_full), "refused");
    assert_eq!(join(&new_full), "ok");
    for t in [&old, &new, &old_full, &new_full] {
        assert!(!text.contains(t.trim()), "a token in the output");
    }
}
