//! The Vagrant lab (`Vagrantfile`, `wizard/examples/vagrant.toml`, `images/vagrant/`), for real
//! with the lxc provider: `vagrant validate` with each of lxc, libvirt and virtualbox; the
//! machines are the answer file's hosts plus the appliance and the client; then the cycle:
//! `vagrant up --provider=lxc` (the box built if needed; the appliance applies and verifies, the
//! client takes a lease from the site's Kea and resolves by name), `groundwork verify --json`
//! on the appliance, `vagrant provision` (0 changed), `vagrant destroy -f` (no container left).
//! Prints the times. Without root or vagrant it says `SKIPPED:`; a failure under CI=true.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Instant;

use common::lab;
use serde_json::Value;

const ANSWERS: &str = "wizard/examples/vagrant.toml";
const APPLIANCE: &str = "vg-app";
const CLIENT: &str = "vg-client";
/// Where the Vagrantfile puts the answer file and the state on the appliance.
const ON_APPLIANCE: &str = "/etc/groundwork/vagrant.toml --state /var/lib/groundwork/vagrant";

/// One vagrant command: its exit code, everything it printed (stdout and stderr), its time.
struct Ran {
    code: i32,
    out: String,
    secs: f64,
}

fn vagrant_cmd(args: &[&str]) -> Command {
    let mut cmd = Command::new("vagrant");
    cmd.args(args)
        .arg("--no-color")
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env("GROUNDWORK_BIN", env!("CARGO_BIN_EXE_groundwork"))
        .env("VAGRANT_DEFAULT_PROVIDER", "lxc")
        // No version check over the Internet.
        .env("VAGRANT_CHECKPOINT_DISABLE", "1");
    cmd
}

/// Runs `vagrant ARGS...`, showing its lines as they come (written to the stream itself so the
/// harness does not hold them back: these take minutes).
fn vagrant(args: &[&str]) -> Ran {
    let t = Instant::now();
    let mut child = vagrant_cmd(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run vagrant: {e}"));
    let stderr = child.stderr.take().unwrap();
    let errs = std::thread::spawn(move || pass_on(BufReader::new(stderr)));
    let mut out = pass_on(BufReader::new(child.stdout.take().unwrap()));
    out.push_str(&errs.join().unwrap());
    let code = child.wait().unwrap().code().unwrap_or(-1);
    Ran { code, out, secs: t.elapsed().as_secs_f64() }
}

fn pass_on(r: impl BufRead) -> String {
    let mut all = String::new();
    for line in r.lines().map_while(Result::ok) {
        say(&format!("  | {line}"));
        all.push_str(&line);
        all.push('\n');
    }
    all
}

/// Standard output of a command on a machine (`vagrant ssh -c`).
fn on(machine: &str, cmd: &str) -> String {
    let out = vagrant_cmd(&["ssh", machine, "-c", cmd]).output().unwrap();
    assert!(out.status.success(), "{machine}: {cmd}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The rows of apply's summary table (`host ok changed failed skipped time`) in a provisioner's
/// output, as (host, changed, failed); the last table wins.
fn apply_table(out: &str, hosts: &[String]) -> Vec<(String, u64, u64)> {
    let mut rows: Vec<(String, u64, u64)> = Vec::new();
    for line in out.lines() {
        let Some((_, text)) = line.split_once(&format!("{APPLIANCE}: ")) else { continue };
        let f: Vec<&str> = text.split_whitespace().collect();
        if f.len() < 6 || !hosts.iter().any(|h| h == f[0]) || !f[5].ends_with('s') {
            continue;
        }
        let n: Vec<u64> = f[1..5].iter().filter_map(|x| x.parse().ok()).collect();
        if n.len() == 4 {
            rows.retain(|(h, ..)| h != f[0]);
            rows.push((f[0].to_string(), n[1], n[2]));
        }
    }
    rows
}

fn dig(args: &[&str]) -> String {
    let out = Command::new("dig").args(["+time=1", "+tries=2", "+short"]).args(args).output().unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// No vg- container left behind, and no Vagrant machine created.
fn nothing_left() -> Result<(), String> {
    let lxc = Command::new("lxc-ls").arg("-1").output().map_err(|e| e.to_string())?;
    let left: Vec<String> = String::from_utf8_lossy(&lxc.stdout)
        .split_whitespace()
        .filter(|n| n.starts_with("vg-"))
        .map(String::from)
        .collect();
    if !left.is_empty() {
        return Err(format!("containers left: {left:?}"));
    }
    let status = vagrant_cmd(&["status", "--machine-readable"]).output().map_err(|e| e.to_string())?;
    let created: Vec<String> = String::from_utf8_lossy(&status.stdout)
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split(',').collect();
            (f.len() >= 4 && f[2] == "state" && f[3] != "not_created").then(|| format!("{} {}", f[1], f[3]))
        })
        .collect();
    if created.is_empty() { Ok(()) } else { Err(format!("machines left: {created:?}")) }
}

/// Destroys the lab on drop, also when the test fails half-way.
struct Teardown;

impl Drop for Teardown {
    fn drop(&mut self) {
        let r = vagrant_cmd(&["destroy", "-f"]).output();
        if let Err(e) = r.map_err(|e| e.to_string()).and_then(|_| nothing_left()) {
            eprintln!("warning: teardown: {e}");
        }
    }
}

fn skip_or_fail(reason: &str) {
    if lab::in_ci() {
        panic!("the Vagrant lab is required under CI: {reason}");
    }
    lab::skip(reason);
}

#[test]
fn vagrant_up_converges_and_verifies_the_site_then_provision_changes_nothing_and_destroy_removes_it() {
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        return skip_or_fail("the Vagrant lab needs root (vagrant-lxc runs lxc-* as root)");
    }
    if Command::new("vagrant").arg("--version").output().map(|o| !o.status.success()).unwrap_or(true) {
        return skip_or_fail(
            "vagrant is not installed (tests/run installs vagrant, vagrant-lxc, vagrant-libvirt, lxc)",
        );
    }
    // The Vagrantfile is valid for each provider. VirtualBox is not in Debian: without its
    // VBoxManage, Vagrant checks everything but the provider's own block (vb.memory...).
    let validating = Instant::now();
    for provider in ["lxc", "libvirt", "virtualbox"] {
        let mut cmd = vagrant_cmd(&["validate"]);
        cmd.env("VAGRANT_DEFAULT_PROVIDER", provider);
        let vbox = Command::new("VBoxManage").arg("--version").output().is_ok_and(|o| o.status.success());
        if provider == "virtualbox" && !vbox {
            cmd.arg("--ignore-provider");
            say("virtualbox: VBoxManage is missing, so its provider block is not validated");
        }
        let out = cmd.output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success() && text.contains("validated successfully"), "validate with {provider}:\n{text}");
    }
    let validate_secs = validating.elapsed().as_secs_f64();
    // The machines are the answer file's hosts, the appliance and the client.
    let answers = groundwork::answers::load_file(Path::new(ANSWERS)).unwrap_or_else(|e| panic!("{e:?}")).answers;
    let hosts: Vec<String> = answers.hosts.iter().map(|h| h.name.clone()).collect();
    let status = vagrant_cmd(&["status", "--machine-readable"]).output().unwrap();
    let mut machines: Vec<String> = String::from_utf8_lossy(&status.stdout)
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split(',').collect();
            (f.len() >= 3 && f[2] == "state").then(|| f[1].to_string())
        })
        .collect();
    let mut want: Vec<String> = hosts.iter().cloned().chain([APPLIANCE.into(), CLIENT.into()]).collect();
    machines.sort();
    want.sort();
    assert_eq!(machines, want, "vagrant status");

    if !lab::require() {
        return;
    }
    // Other lab tests (other processes) wait; their hosts and these machines share labbr0.
    let waited = Instant::now();
    let _lock = lab::lock_dhcp();
    say(&format!("lab lock taken after {:.1} s", waited.elapsed().as_secs_f64()));
    let _teardown = Teardown;
    // A run that died half-way may have left machines.
    let _ = vagrant_cmd(&["destroy", "-f"]).output();

    // 1. Up: targets, then the appliance's apply and verify, then the client's lease.
    let up = vagrant(&["up", "--provider=lxc"]);
    assert_eq!(up.code, 0, "vagrant up failed (output above)");
    let box_built = up.out.contains("[build-box] done");
    let table = apply_table(&up.out, &hosts);
    assert_eq!(table.len(), hosts.len(), "apply's table names every host: {table:?}");
    for (h, changed, failed) in &table {
        assert_eq!(*failed, 0, "{h} failed");
        assert!(*changed > 0, "{h}: a first apply changes things");
    }
    assert!(up.out.contains("took the lease"), "the client's provisioner reports its lease");

    // 2. verify's rows, as a program reads them, from the appliance.
    let json = on(APPLIANCE, &format!("groundwork verify --json {ON_APPLIANCE}"));
    let v: Value = serde_json::from_str(json.trim()).unwrap_or_else(|e| panic!("{e}: {json}"));
    let rows = v["rows"].as_array().unwrap();
    let failed: Vec<&Value> = rows.iter().filter(|r| r["result"] == "fail").collect();
    assert!(failed.is_empty() && v["failed"] == 0, "verify failed rows: {failed:#?}");
    for service in ["dns", "dhcp", "postgresql"] {
        assert!(rows.iter().any(|r| r["service"] == service && r["result"] == "ok"), "no ok {service} row: {json}");
    }

    // 3. The client's lease from the site's Kea (by its server identifier) and its name in DNS.
    let dhcp = answers.hosts.iter().find(|h| h.name == "vg-ns1").unwrap().address.to_string();
    let lease = on(CLIENT, "cat /var/lib/dhcp/dhclient.eth1.leases");
    let ours = lease
        .split("lease {")
        .filter(|l| l.contains(&format!("dhcp-server-identifier {dhcp};")))
        .last()
        .unwrap_or_else(|| panic!("no lease from {dhcp}:\n{lease}"));
    let address =
        ours.lines().find_map(|l| l.trim().strip_prefix("fixed-address ")?.strip_suffix(';')).unwrap().to_string();
    let fqdn = format!("{CLIENT}.{}", answers.site.internal_domain);
    assert_eq!(dig(&[&format!("@{dhcp}"), &fqdn, "A"]), address, "{fqdn} at the site's DNS");
    assert_eq!(dig(&[&format!("@{dhcp}"), "-x", &address]), format!("{fqdn}."), "PTR of {address}");
    let lease_row = rows.iter().find(|r| r["check"] == format!("lease {address}"));
    assert!(lease_row.is_some_and(|r| r["result"] == "ok"), "verify checks the client's lease: {json}");

    // 4. Provision again: nothing changes, verify passes again.
    let again = vagrant(&["provision"]);
    assert_eq!(again.code, 0, "vagrant provision failed (output above)");
    let table = apply_table(&again.out, &hosts);
    assert_eq!(table.len(), hosts.len(), "{table:?}");
    assert!(table.iter().all(|(_, changed, failed)| *changed == 0 && *failed == 0), "a no-op: {table:?}");

    // 5. Destroy: nothing left.
    let destroy = vagrant(&["destroy", "-f"]);
    assert_eq!(destroy.code, 0, "vagrant destroy failed (output above)");
    nothing_left().unwrap();

    say(&format!(
        "vagrant cycle: validate x3 {validate_secs:.1} s, up {:.1} s ({}), provision {:.1} s (0 changed), destroy {:.1} s",
        up.secs,
        if box_built { "box built" } else { "box cached" },
        again.secs,
        destroy.secs
    ));
}

/// A line on the test's own stderr, past the harness's capture (like the vagrant output).
fn say(line: &str) {
    let _ = writeln!(std::io::stderr(), "{line}");
}
