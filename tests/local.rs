//! The fresh server itself, end to end in lab hosts (issue #16). The groundwork binary is copied
//! into kl1 and run there, entered with `lab exec` (nsenter: no SSH involved):
//!
//! - the wizard at a pseudo-terminal: typed answers (kl1 is host 1 and is asked no SSH
//!   question), confirm, the dry run, confirm, progress per role, the verify table; kl1 carries
//!   dns, dhcp, ldap, postgresql and mariadb through the local transport; the answer file and
//!   the secrets are 0600; the services answer clients of this machine (dig, psql, mysql,
//!   ldapwhoami, and a DHCP offer to kl2);
//! - a second apply changes 0; with sshd stopped on kl1 an apply still changes 0 and `verify`
//!   passes from inside;
//! - a mixed run: kl1 (local) plus kl2 and kl3 over SSH (DNS secondaries) in one apply, verified.
//!
//! Skipped with `SKIPPED:` where the lab cannot run; a failure under CI=true.

mod common;

use std::io::Write as _;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Instant;

use common::lab;
use common::pty::{self, key, step, wait};
use common::run::{Run, fresh, on};

const HOSTS: &[(&str, &str)] = &[("kl1", "10.77.0.110"), ("kl2", "10.77.0.111"), ("kl3", "10.77.0.112")];
const DOMAIN: &str = "kl.example.test";
const SITE: &str = "/root/site.toml";
const STATE: &str = "/root/.local/state/groundwork/kl";
/// What an SSH login of root has; the test's own environment stays out of the host.
const ENV: &[&str] = &["env", "-i", "HOME=/root", "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"];

/// `lab exec HOST env -i ... ARGS...` as a command to spawn.
fn inside(host: &str, args: &[&str]) -> Command {
    let mut c = Command::new(lab::script());
    c.args(["exec", host]).args(ENV).args(args);
    c
}

/// Copies the binary under test into `host` as /usr/local/bin/groundwork.
fn install_binary(host: &str) {
    let bin = std::fs::read(env!("CARGO_BIN_EXE_groundwork")).unwrap();
    let mut child =
        inside(host, &["sh", "-c", "cat > /usr/local/bin/groundwork && chmod 755 /usr/local/bin/groundwork"])
            .stdin(Stdio::piped())
            .spawn()
            .unwrap();
    child.stdin.take().unwrap().write_all(&bin).unwrap();
    assert!(child.wait().unwrap().success(), "copying the binary into {host}");
}

/// `groundwork ARGS...` inside kl1, its `--json` events parsed.
fn groundwork_in_kl1(args: &[&str]) -> Run {
    groundwork_in("kl1", args)
}

/// `groundwork ARGS...` inside `host`, its `--json` events parsed.
fn groundwork_in(host: &str, args: &[&str]) -> Run {
    let mut all = vec!["groundwork"];
    all.extend_from_slice(args);
    Run::of(&mut inside(host, &all))
}

fn apply_in_kl1(file: &str) -> Run {
    groundwork_in_kl1(&["apply", "--yes", "--json", file])
}

/// The `connected` event of `host`: its `local` flag.
fn connected_locally(run: &Run, host: &str) -> bool {
    let e = run.events.iter().find(|e| e["event"] == "connected" && e["host"] == host);
    e.unwrap_or_else(|| panic!("no connected event for {host}:\n{}", run.all_text()))["local"] == true
}

fn client(cmd: &str, args: &[&str], env: &[(&str, &str)]) -> (bool, String) {
    let out = Command::new(cmd).args(args).envs(env.iter().copied()).output().unwrap_or_else(|e| panic!("{cmd}: {e}"));
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.success(), text.trim().to_string())
}

/// A 0600 file holding `text`.
fn private_file(dir: &Path, name: &str, text: &str) -> String {
    use std::os::unix::fs::OpenOptionsExt;
    let p = dir.join(name);
    let mut f = std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(&p).unwrap();
    f.write_all(text.as_bytes()).unwrap();
    p.to_str().unwrap().to_string()
}

/// dig, psql, mysql and ldapwhoami from this machine (the lab's gateway) against kl1.
fn clients_reach_kl1(dir: &Path) {
    let copy = private_file(dir, "secrets.toml", &on("kl1", &format!("cat {STATE}/secrets.toml")));
    let secrets = groundwork::state::Secrets::load(Path::new(&copy)).unwrap();
    let (ok, out) =
        client("dig", &["+time=2", "+tries=2", "+short", "@10.77.0.110", &format!("kl1.{DOMAIN}"), "A"], &[]);
    assert!(ok && out == "10.77.0.110", "dig: {out}");
    let pg = secrets.get("postgresql", "app").unwrap();
    let (ok, out) = client(
        "psql",
        &["-XtA", "-h", "10.77.0.110", "-U", "app", "-d", "app", "-c", "select 1"],
        &[("PGPASSWORD", pg), ("PGCONNECT_TIMEOUT", "5")],
    );
    assert!(ok && out == "1", "psql: {out}");
    let my = secrets.get("mariadb", "wiki").unwrap();
    let extra = private_file(dir, "my.cnf", &format!("[client]\nuser=wiki\npassword=\"{my}\"\n"));
    let (ok, out) = client(
        "mysql",
        &[
            &format!("--defaults-extra-file={extra}"),
            "--connect-timeout=5",
            "-h",
            "10.77.0.110",
            "-NB",
            "wiki",
            "-e",
            "SELECT 1",
        ],
        &[],
    );
    assert!(ok && out == "1", "mysql: {out}");
    std::fs::write(dir.join("ldap.crt"), on("kl1", "cat /etc/ldap/tls/selfsigned.crt")).unwrap();
    let pw = private_file(dir, "ldap.pw", secrets.get("ldap", "admin").unwrap());
    let suffix = groundwork::answers::model::ldap_suffix(DOMAIN);
    let cacert = dir.join("ldap.crt");
    let (ok, out) = client(
        "ldapwhoami",
        &["-ZZ", "-x", "-H", "ldap://10.77.0.110", "-D", &format!("cn=admin,{suffix}"), "-y", &pw],
        &[("LDAPTLS_CACERT", cacert.to_str().unwrap()), ("LDAPTLS_REQCERT", "demand")],
    );
    assert!(ok && out.contains(&format!("cn=admin,{suffix}")), "ldapwhoami: {out}");
}

#[test]
fn the_wizard_makes_this_machine_the_server_without_ssh_then_a_mixed_run() {
    let Some(_lab) = lab::exclusive_dhcp(HOSTS) else { return };
    for (cmd, pkg) in [
        ("dig", "bind9-dnsutils"),
        ("ldapwhoami", "ldap-utils"),
        ("psql", "postgresql-client"),
        ("mysql", "mariadb-client"),
    ] {
        if Command::new("sh").args(["-c", &format!("command -v {cmd}")]).output().is_ok_and(|o| !o.status.success()) {
            let st = Command::new("apt-get")
                .args(["install", "-y", "-q", pkg])
                .env("DEBIAN_FRONTEND", "noninteractive")
                .status();
            assert!(st.is_ok_and(|s| s.success()), "apt-get install {pkg}");
        }
    }
    fresh(HOSTS);
    install_binary("kl1");
    let dir = tempfile::tempdir().unwrap();

    // 1. The wizard at a terminal inside kl1, through to the verify table.
    let mut cmd = inside("kl1", &["TERM=xterm", "groundwork", "wizard", "--out", SITE]);
    cmd.env("TERM", "xterm");
    let mut p = pty::spawn(cmd, 900_000);
    let mut seen = String::new();
    step(&mut p, &mut seen, "Site name", "kl");
    step(&mut p, &mut seen, "Internal domain", DOMAIN);
    step(&mut p, &mut seen, "External domain", "example.test");
    step(&mut p, &mut seen, "Time zone", "UTC");
    step(&mut p, &mut seen, "Administrator e-mail", "");
    step(&mut p, &mut seen, "Site subnet", "10.77.0.0/24");
    step(&mut p, &mut seen, "Gateway", "10.77.0.1");
    step(&mut p, &mut seen, "forwarders", "none");
    step(&mut p, &mut seen, "Host 1 name", "kl1");
    step(&mut p, &mut seen, "address", "10.77.0.110");
    wait(&mut p, &mut seen, "10.77.0.110 is this machine");
    step(&mut p, &mut seen, "roles (", "dns, dhcp, ldap, postgresql, mariadb");
    key(&mut p, &mut seen, "Add another host?", "n");
    step(&mut p, &mut seen, "Dynamic range", "10.77.0.116-10.77.0.119");
    step(&mut p, &mut seen, "Lease time", "");
    step(&mut p, &mut seen, "postgresql databases", "app");
    step(&mut p, &mut seen, "mariadb databases", "wiki");
    step(&mut p, &mut seen, "Organisation name", "KL Org");
    key(&mut p, &mut seen, "Proxmox VE API?", "n");
    wait(&mut p, &mut seen, "Summary");
    key(&mut p, &mut seen, "Write ", "y");
    wait(&mut p, &mut seen, "preflight:");
    key(&mut p, &mut seen, "Apply now", "y");
    key(&mut p, &mut seen, "Apply these changes?", "y");
    let confirmed = Instant::now();
    wait(&mut p, &mut seen, "Verify: every service");
    let applied = confirmed.elapsed();
    wait(&mut p, &mut seen, "converged and verified in");
    let verified = confirmed.elapsed();
    let rest = p.exp_eof().unwrap();
    seen.push_str(&rest);
    eprintln!(
        "wizard: confirm -> converged {:.1} s, -> verified {:.1} s\n--- the wizard's screen after the summary ---\n{}",
        applied.as_secs_f64(),
        verified.as_secs_f64(),
        &seen[seen.find("Summary").unwrap_or(0)..]
    );
    assert!(!seen.contains("SSH user"), "kl1 is this machine: no SSH question");
    for role in ["dns", "dhcp", "ldap", "postgresql", "mariadb"] {
        assert!(
            seen.lines().any(|l| l.starts_with("kl1") && l.contains(role) && l.contains("changed")),
            "no progress of {role}:\n{seen}"
        );
    }
    assert!(!seen.contains("recorded host key"), "kl1 is not reached over SSH:\n{seen}");
    assert!(rest.contains("next:") && rest.contains("add hosts"), "{rest}");
    assert!(seen.contains(" 0 failed"), "a verify row failed:\n{seen}");
    assert_eq!(on("kl1", &format!("stat -c %a {SITE} {STATE}/secrets.toml")).trim(), "600\n600");
    // No known_hosts entry and no key were needed for it.
    assert_eq!(on("kl1", &format!("test -s {STATE}/known_hosts && echo has || echo none")).trim(), "none");
    clients_reach_kl1(dir.path());

    // 2. Again: nothing to change. With sshd stopped: still nothing, and verify passes inside.
    let again = apply_in_kl1(SITE);
    assert_eq!(again.code, 0, "{}", again.all_text());
    assert_eq!(again.changed("kl1"), 0, "{:?}", again.changed_steps("kl1"));
    assert!(connected_locally(&again, "kl1"));
    on("kl1", "systemctl stop ssh.socket ssh.service 2>/dev/null; systemctl stop ssh; ! systemctl is-active -q ssh");
    let no_sshd = apply_in_kl1(SITE);
    assert_eq!(no_sshd.code, 0, "{}", no_sshd.all_text());
    assert_eq!(no_sshd.changed("kl1"), 0, "{:?}", no_sshd.changed_steps("kl1"));
    eprintln!("apply of kl1 with sshd stopped: 0 changed in {:.1} s", no_sshd.secs);
    let verify = groundwork_in_kl1(&["verify", SITE]);
    assert_eq!(verify.code, 0, "verify inside kl1:\n{}{}", verify.stdout, verify.stderr);
    assert!(verify.stdout.contains("postgresql") && verify.stdout.contains("kl1"), "{}", verify.stdout);
    assert_eq!(on("kl1", "systemctl is-active ssh || true").trim(), "inactive", "the run left sshd alone");
    // A DHCPDISCOVER from this machine on the lab's bridge gets kl1's offer of a range address
    // (an offer only: no lease, so no name lands in the zone).
    let offers = common::run::rt().block_on(groundwork::verify::discover::listen("labbr0")).unwrap();
    let range = ["10.77.0.116".parse().unwrap(), "10.77.0.119".parse().unwrap()];
    let offer = groundwork::verify::discover::judge(
        &offers,
        "10.77.0.110".parse().unwrap(),
        &[(range[0], range[1])],
        true,
        "labbr0",
    );
    assert!(offer.is_ok(), "{offers:?}");

    // 3. A mixed run from kl1: itself locally, kl2 and kl3 (DNS secondaries) over SSH with the
    // lab's key.
    let key_text = std::fs::read(lab::key()).unwrap();
    let mut c = inside("kl1", &["sh", "-c", "umask 077 && cat > /root/lab_key"]).stdin(Stdio::piped()).spawn().unwrap();
    c.stdin.take().unwrap().write_all(&key_text).unwrap();
    assert!(c.wait().unwrap().success());
    on(
        "kl1",
        &format!(
            "cp {SITE} /root/mixed.toml && printf '%s\\n' '' '[[host]]' 'name = \"kl2\"' 'address = \"10.77.0.111\"' \
             'ssh-key = \"/root/lab_key\"' 'roles = [\"dns\"]' '' '[[host]]' 'name = \"kl3\"' 'address = \"10.77.0.112\"' \
             'ssh-key = \"/root/lab_key\"' 'roles = [\"dns\"]' >> /root/mixed.toml"
        ),
    );
    // `[[host]]` tables after other sections are still hosts (TOML arrays of tables).
    let mixed = apply_in_kl1("/root/mixed.toml");
    assert_eq!(mixed.code, 0, "{}", mixed.all_text());
    assert!(connected_locally(&mixed, "kl1"));
    assert!(!connected_locally(&mixed, "kl2") && !connected_locally(&mixed, "kl3"));
    for h in ["kl2", "kl3"] {
        assert!(mixed.changed(h) > 0 && mixed.failed(h) == 0, "{h}: {}", mixed.all_text());
    }
    eprintln!(
        "mixed run: kl1 {} changed, kl2 {}, kl3 {}, in {:.1} s",
        mixed.changed("kl1"),
        mixed.changed("kl2"),
        mixed.changed("kl3"),
        mixed.secs
    );
    let verify = groundwork_in_kl1(&["verify", "/root/mixed.toml"]);
    assert_eq!(verify.code, 0, "verify of the mixed site:\n{}{}", verify.stdout, verify.stderr);
    for h in ["kl2", "kl3"] {
        let (ok, out) = client(
            "dig",
            &[
                "+time=2",
                "+tries=2",
                "+short",
                &format!("@{}", if h == "kl2" { "10.77.0.111" } else { "10.77.0.112" }),
                &format!("kl1.{DOMAIN}"),
                "A",
            ],
            &[],
        );
        assert!(ok && out == "10.77.0.110", "{h} as a secondary: {out}");
    }
    // The remote hosts' keys were learnt; kl1 has none.
    let known = on("kl1", &format!("cat {STATE}/known_hosts"));
    assert!(
        known.contains("10.77.0.111") && known.contains("10.77.0.112") && !known.contains("10.77.0.110"),
        "{known}"
    );
}

/// `wizard/examples/single-server.toml` as it is, on the machine it runs on (kl4): the example's
/// address (192.168.10.5) is given to kl4 beside its lab one, its k3s bundle and Git token are
/// where the example says (the bundle's k3s is the labelled TEST DOUBLE, tests/doubles/k3s: no
/// k3s can run here), and kl4 has no route out of the lab (the example's forwarders are public
/// resolvers). Then apply converges every role of it locally, verify passes inside, and a
/// second apply changes nothing.
#[test]
fn the_single_server_example_applies_as_it_is_on_the_machine_it_runs_on() {
    const HOST: &[(&str, &str)] = &[("kl4", "10.77.0.113")];
    const EXAMPLE: &str = "/root/single-server.toml";
    let Some(_lab) = lab::exclusive_dhcp(HOST) else { return };
    install_binary("kl4");
    on("kl4", "ip addr add 192.168.10.5/24 dev eth0 && ip route del default 2>/dev/null; true");
    // The air-gap bundle at the example's path, and the token file it names.
    let dir = tempfile::tempdir().unwrap();
    let bundle = dir.path().join("bundle");
    common::double::double_bundle(&bundle);
    let tar = Command::new("tar").arg("-C").arg(&bundle).args(["-cf", "-", "."]).output().unwrap();
    assert!(tar.status.success());
    let mut c = inside(
        "kl4",
        &[
            "sh",
            "-c",
            "mkdir -p /srv/groundwork/bundles/k3s-v1.35.6 && tar -C /srv/groundwork/bundles/k3s-v1.35.6 -xf -",
        ],
    )
    .stdin(Stdio::piped())
    .spawn()
    .unwrap();
    c.stdin.take().unwrap().write_all(&tar.stdout).unwrap();
    assert!(c.wait().unwrap().success(), "the bundle into kl4");
    let example = std::fs::read_to_string("wizard/examples/single-server.toml").unwrap();
    let mut c =
        inside("kl4", &["sh", "-c", &format!("umask 077 && cat > {EXAMPLE}")]).stdin(Stdio::piped()).spawn().unwrap();
    c.stdin.take().unwrap().write_all(example.as_bytes()).unwrap();
    assert!(c.wait().unwrap().success());
    on("kl4", "mkdir -p /etc/groundwork && umask 077 && echo kl4-test-token-71c2 > /etc/groundwork/git-token");
    // What the k3s double needs (it is not k3s): systemd's readiness from its child, and the
    // recorded "ready" answers of Flux's controllers and objects.
    let mut setup = String::from(
        "mkdir -p /etc/systemd/system/k3s.service.d /var/lib/k3s-double && \
         printf '[Service]\\nNotifyAccess=all\\n' > /etc/systemd/system/k3s.service.d/test-double.conf\n",
    );
    for (file, fixture) in [
        ("workloads.json", "flux-workloads-ready.json"),
        ("gitrepository.json", "gitrepository-ready.json"),
        ("kustomization.json", "kustomization-ready.json"),
    ] {
        let text = std::fs::read_to_string(format!("tests/fixtures/handoff/{fixture}")).unwrap();
        setup += &format!("cat > /var/lib/k3s-double/{file} <<'EOF'\n{text}\nEOF\n");
    }
    on("kl4", &setup);

    let first = groundwork_in("kl4", &["apply", "--yes", "--json", EXAMPLE]);
    assert_eq!(first.code, 0, "{}", first.all_text());
    assert!(connected_locally(&first, "srv1"));
    assert_eq!(first.failed("srv1"), 0, "{}", first.error("srv1"));
    for step in ["named", "kea-dhcp4", "slapd", "postgresql", "mariadb", "start k3s", "install flux 2.4.0"] {
        assert_eq!(first.step("srv1", step).map(|s| s["status"].clone()), Some("changed".into()), "{step}");
    }
    let verify = groundwork_in("kl4", &["verify", EXAMPLE]);
    assert_eq!(verify.code, 0, "verify inside kl4:\n{}{}", verify.stdout, verify.stderr);
    for service in ["dns", "dhcp", "ldap", "postgresql", "mariadb", "k3s", "gitops"] {
        assert!(verify.stdout.contains(service), "no {service} row:\n{}", verify.stdout);
    }
    let again = groundwork_in("kl4", &["apply", "--yes", "--json", EXAMPLE]);
    assert_eq!(again.code, 0, "{}", again.all_text());
    assert_eq!(again.changed("srv1"), 0, "{:?}", again.changed_steps("srv1"));
    eprintln!("the single-server example on kl4: converged in {:.1} s, again in {:.1} s", first.secs, again.secs);
    assert!(!first.all_text().contains("kl4-test-token-71c2"), "the Git token leaked");
}
