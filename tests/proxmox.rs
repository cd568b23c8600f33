//! Proxmox VE: online checks, provisioning and the token's secrecy, against the TEST DOUBLE of
//! the Proxmox API in tests/common/pve.rs (HTTPS with a self-signed certificate made at start;
//! it is not Proxmox, see its header). The end-to-end test boots a real lab host (pn1) when
//! the double "starts" the container, then converges and verifies DNS on it.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::Instant;

use common::pve::{self, Pve};
use common::run::Run;
use serde_json::Value;

const ENV: &str = "GW_TEST_PVE_SECRET";

/// `groundwork ARGS...` with the token secret in the environment (`secret`).
fn gw(args: &[&str], secret: &str) -> Run {
    Run::of(Command::new(env!("CARGO_BIN_EXE_groundwork")).args(args).env(ENV, secret))
}

/// A key pair on disk (only the public half is read by the provisioning).
fn keys(dir: &Path) -> String {
    let key = dir.join("id_ed25519");
    std::fs::write(&key, "not used by these tests\n").unwrap();
    std::fs::write(
        dir.join("id_ed25519.pub"),
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIEHr0eRkPlwoXxk4tO6aDNd0j2aELq1lIrBz3Y2bNd7e test@double\n",
    )
    .unwrap();
    key.display().to_string()
}

fn answers(pve: &Pve, subnet: &str, gateway: &str, hosts: &str, extra: &str) -> String {
    format!(
        "[site]\nname = \"pn\"\ninternal-domain = \"pn.groundwork.test\"\nexternal-domain = \"groundwork.test\"\nadmin-email = \"ops@groundwork.test\"\n\n[network]\nsubnet = \"{subnet}\"\ngateway = \"{gateway}\"\nforwarders = []\n\n{hosts}\n{}{extra}",
        pve.section(ENV)
    )
}

fn host(name: &str, address: &str, key: &str, port: u16, roles: &str, provision: &str) -> String {
    format!(
        "[[host]]\nname = \"{name}\"\naddress = \"{address}\"\nssh-key = \"{key}\"\nssh-port = {port}\nroles = [{roles}]\nprovision = {{ {provision} }}\n\n"
    )
}

/// The 1-based line of the first line of `text` that starts with `prefix` (after `after`).
fn line_of(text: &str, after: &str, prefix: &str) -> usize {
    let start = text.find(after).unwrap_or(0);
    let before = text[..start].lines().count();
    before + text[start..].lines().position(|l| l.trim_start().starts_with(prefix)).expect(prefix) + 1
}

fn write(dir: &Path, name: &str, text: &str) -> String {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p.display().to_string()
}

/// A provisioned DNS host and a VM k3s server in a small site, as a file.
fn site(pve: &Pve, dir: &Path) -> (String, String) {
    let key = keys(dir);
    let hosts = host("pn1", "10.77.0.101", &key, 22, "\"dns\"", "kind = \"ct\", cores = 2, memory = 2048, disk = 8")
        + &host("pk1", "10.77.0.102", &key, 22, "\"k3s-server\"", "kind = \"vm\", cores = 4, memory = 4096");
    let text = answers(pve, "10.77.0.0/24", "10.77.0.1", &hosts, "\n[k3s]\nversion = \"v1.35.6+k3s1\"\n");
    (write(dir, "site.toml", &text), text)
}

#[test]
fn validate_online_passes_against_the_double() {
    let pve = Pve::start();
    let dir = tempfile::tempdir().unwrap();
    let (file, _) = site(&pve, dir.path());
    let out = gw(&["validate", "--online", &file], pve::SECRET);
    assert_eq!(out.code, 0, "{}", out.text());
    assert!(out.stdout.contains("online: Proxmox VE 8.2.4"), "{}", out.stdout);
    // Without --online nothing is asked of the API.
    let before = pve.requests().len();
    assert_eq!(gw(&["validate", &file], pve::SECRET).code, 0);
    assert_eq!(pve.requests().len(), before);
}

/// Each failure of the online checks names the answer file, the line and the field to fix.
#[test]
fn each_online_failure_names_file_line_and_field() {
    type Setup = fn(&Pve);
    let cases: Vec<(&str, Setup, &str, &str, &str)> = vec![
        ("wrong secret (401)", |_| {}, "token-id", "proxmox.token-id", "401"),
        ("node offline", |p| p.with(|s| s.node_status = "offline".into()), "node", "proxmox.node", "offline"),
        ("storage inactive", |p| p.with(|s| s.storage_active = false), "storage", "proxmox.storage", "not active"),
        (
            "storage without rootdir",
            |p| p.with(|s| s.storage_content = "images".into()),
            "storage",
            "proxmox.storage",
            "does not hold `rootdir`",
        ),
        (
            "no CT template",
            |p| p.with(|s| s.vztmpl.clear()),
            "ct-template",
            "proxmox.ct-template",
            "no container template",
        ),
        (
            "no VM template",
            |p| p.with(|s| s.guests.retain(|g| !g.template)),
            "template",
            "proxmox.template",
            "no VM template named",
        ),
        (
            "privilege missing",
            |p| p.with(|s| s.deny.push(("/vms".into(), "VM.Allocate".into()))),
            "token-id",
            "proxmox.token-id",
            "lacks on `/vms`: VM.Allocate",
        ),
        (
            "SDN.Use missing on the bridge",
            |p| p.with(|s| s.deny.push(("/sdn/zones/localnetwork/vmbr0".into(), "SDN.Use".into()))),
            "token-id",
            "proxmox.token-id",
            "SDN.Use",
        ),
        ("API error (500)", |p| p.with(|s| s.fail_500.push("/version".into())), "api-url", "proxmox.api-url", "500"),
    ];
    for (what, setup, key, field, words) in cases {
        let pve = Pve::start();
        setup(&pve);
        let dir = tempfile::tempdir().unwrap();
        let (file, text) = site(&pve, dir.path());
        let secret = if what.contains("401") { "00000000-wrong-secret-0000" } else { pve::SECRET };
        let out = gw(&["validate", "--online", &file], secret);
        assert_eq!(out.code, 1, "{what}: {}", out.text());
        let line = line_of(&text, "[proxmox]", &format!("{key} ="));
        let located = format!("{file}:{line}:");
        let hit = out.stderr.lines().find(|l| l.contains(&located) && l.contains(field));
        assert!(
            hit.is_some_and(|l| l.contains(words)),
            "{what}: wanted `{located}... {field}: ...{words}`:\n{}",
            out.stderr
        );
        assert!(!out.text().contains(secret), "{what}: the secret was printed");
    }
}

/// A certificate other than the pinned one is refused before any request is sent (so the
/// token never travels); with no pin, a self-signed certificate is not trusted either.
#[test]
fn a_fingerprint_mismatch_is_refused() {
    let pve = Pve::start();
    let dir = tempfile::tempdir().unwrap();
    let (_, text) = site(&pve, dir.path());
    let wrong = pve.fingerprint.replace(&pve.fingerprint[..2], if &pve.fingerprint[..2] == "00" { "11" } else { "00" });
    let file = write(dir.path(), "wrong.toml", &text.replace(&pve.fingerprint, &wrong));
    let out = gw(&["validate", "--online", &file], pve::SECRET);
    assert_eq!(out.code, 1, "{}", out.text());
    let line = line_of(&text, "[proxmox]", "fingerprint =");
    assert!(out.stderr.contains(&format!("{file}:{line}:")), "{}", out.stderr);
    assert!(out.stderr.contains("proxmox.fingerprint") && out.stderr.contains("refused"), "{}", out.stderr);
    assert!(out.stderr.contains(&pve.fingerprint), "the presented fingerprint is shown: {}", out.stderr);
    assert!(pve.requests().is_empty(), "a request got through: {:?}", pve.requests());

    let unpinned: String = text.lines().filter(|l| !l.starts_with("fingerprint")).map(|l| format!("{l}\n")).collect();
    let file = write(dir.path(), "unpinned.toml", &unpinned);
    let out = gw(&["validate", "--online", "--json", &file], pve::SECRET);
    assert_eq!(out.code, 1, "{}", out.text());
    let doc: Value = serde_json::from_str(&out.stdout).unwrap();
    let p = &doc[0]["problems"][0];
    assert_eq!(p["field"], "proxmox.api-url", "{doc}");
    assert_eq!(p["line"], line_of(&unpinned, "[proxmox]", "api-url =") as u64, "{doc}");
    assert!(p["message"].as_str().unwrap().contains("not trusted by this machine"), "{doc}");
    assert!(pve.requests().is_empty());
}

/// The rules of provision, offline.
#[test]
fn provision_rules_offline() {
    let pve = Pve::start();
    let dir = tempfile::tempdir().unwrap();
    let key = keys(dir.path());
    let hosts = host("pk1", "10.77.0.102", &key, 22, "\"k3s-server\"", "kind = \"ct\", cores = 0");
    let text = answers(&pve, "10.77.0.0/24", "10.77.0.1", &hosts, "\n[k3s]\nversion = \"v1.35.6+k3s1\"\n");
    let file = write(dir.path(), "a.toml", &text);
    let out = gw(&["validate", &file], pve::SECRET);
    assert_eq!(out.code, 1);
    let line = line_of(&text, "name = \"pk1\"", "provision =");
    for want in
        ["host[0].provision.kind: role `k3s-server` does not run in a container", "host[0].provision.cores: 0 cores"]
    {
        assert!(
            out.stderr.contains(&format!("{file}:{line}:")) && out.stderr.contains(want),
            "{want}:\n{}",
            out.stderr
        );
    }
    // A container is reached as root: Proxmox installs the key for no one else.
    let ops = text
        .replace("kind = \"ct\", cores = 0", "kind = \"ct\"")
        .replace("[[host]]\n", "[[host]]\nssh-user = \"ops\"\n");
    let file = write(dir.path(), "u.toml", &ops);
    let out = gw(&["validate", &file], pve::SECRET);
    let line = line_of(&ops, "[[host]]", "ssh-user =");
    assert!(
        out.stderr.contains(&format!("{file}:{line}:"))
            && out.stderr.contains("host[0].ssh-user: a container gets the site's SSH key for root only"),
        "{}",
        out.stderr
    );
    let no_section = text[..text.find("[proxmox]").unwrap()].replace("kind = \"ct\", cores = 0", "kind = \"vm\"");
    let file = write(dir.path(), "b.toml", &no_section);
    let out = gw(&["validate", &file], pve::SECRET);
    assert!(
        out.stderr.contains("host[0].provision: this host is to be provisioned, but there is no [proxmox] section"),
        "{}",
        out.stderr
    );
}

/// A site on loopback: the guest's "SSH" is a banner that the double's start opens on
/// 127.0.0.2 (enough for the provisioning's wait; the later SSH phases then fail, which these
/// tests do not look at).
fn loopback_site(pve: &Pve, dir: &Path, extra: &str) -> (String, u16) {
    loopback_site_with(pve, dir, extra, "kind = \"ct\", cores = 2, memory = 2048, disk = 8")
}

/// A free port on 127.0.0.2, and the double's start of a guest opens an SSH banner there on
/// the guest's address (enough for the provisioning's wait).
fn banner_on_start(pve: &Pve) -> u16 {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.2:0").unwrap();
        l.local_addr().unwrap().port()
    };
    pve.with(|s| {
        s.on_start = Some(std::sync::Arc::new(move |_name: &str, ip: &str| {
            let l = std::net::TcpListener::bind((ip, port)).map_err(|e| e.to_string())?;
            std::thread::spawn(move || {
                for c in l.incoming().flatten() {
                    use std::io::Write as _;
                    let mut c = c;
                    let _ = c.write_all(b"SSH-2.0-double\r\n");
                }
            });
            Ok(())
        }))
    });
    port
}

/// [`loopback_site`] with another `provision`.
fn loopback_site_with(pve: &Pve, dir: &Path, extra: &str, provision: &str) -> (String, u16) {
    let port = banner_on_start(pve);
    let key = keys(dir);
    let hosts = host("pn1", "127.0.0.2", &key, port, "\"dns\"", provision);
    (write(dir, "site.toml", &answers(pve, "127.0.0.0/24", "127.0.0.1", &hosts, extra)), port)
}

/// Three guests are created side by side: every create is sent before the first start (a
/// run does not wait for one guest to finish before the next begins), each takes its own
/// VMID from one `nextid`, and a VMID another creator takes meanwhile is skipped.
#[test]
fn guests_are_created_side_by_side_each_with_its_own_vmid() {
    let pve = Pve::start();
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state").display().to_string();
    let port = banner_on_start(&pve);
    // nextid answers 100; someone creates 101 just before groundwork's create of it.
    pve.with(|s| s.taken_meanwhile = vec![101]);
    let key = keys(dir.path());
    let hosts: String = [("pn1", "127.0.0.2"), ("pn2", "127.0.0.3"), ("pn3", "127.0.0.4")]
        .iter()
        .map(|(n, ip)| host(n, ip, &key, port, "\"dns\"", "kind = \"ct\", cores = 1, memory = 512, disk = 4"))
        .collect();
    let file = write(dir.path(), "site.toml", &answers(&pve, "127.0.0.0/24", "127.0.0.1", &hosts, ""));
    let apply = gw(
        &["apply", "--yes", "--json", &file, "--state", &state, "--host", "pn1", "--host", "pn2", "--host", "pn3"],
        pve::SECRET,
    );
    for h in ["pn1", "pn2", "pn3"] {
        assert_eq!(
            apply.role_step(h, "proxmox").map(|s| s["status"].clone()),
            Some("changed".into()),
            "{h}: {}",
            apply.text()
        );
    }
    let writes: Vec<String> = pve.writes().iter().map(|r| format!("{} {}", r.method, r.path)).collect();
    let creates = writes.iter().filter(|w| *w == "POST /nodes/pve1/lxc").count();
    assert_eq!(creates, 4, "3 guests, one create refused (101 was taken): {writes:?}");
    let first_start = writes.iter().position(|w| w.ends_with("/status/start")).unwrap();
    let last_create = writes.iter().rposition(|w| *w == "POST /nodes/pve1/lxc").unwrap();
    assert!(last_create < first_start, "the creates went one guest after the other: {writes:?}");
    let mut ids: Vec<(String, u64)> =
        pve.with(|s| s.guests.iter().filter(|g| g.name.starts_with("pn")).map(|g| (g.name.clone(), g.vmid)).collect());
    ids.sort_by_key(|(_, id)| *id);
    let vmids: Vec<u64> = ids.iter().map(|(_, id)| *id).collect();
    assert_eq!(vmids, [100, 102, 103], "{ids:?}");
    assert!(apply.text().contains("VMID 101 was taken meanwhile: trying the next one"), "{}", apply.text());
    assert!(pve.with(|s| s.guests.iter().any(|g| g.vmid == 101 && g.name == "someone-else")));
}

/// The run's log files, all of them.
fn logs(state: &Path) -> String {
    let mut all = String::new();
    if let Ok(rd) = std::fs::read_dir(state.join("logs")) {
        for e in rd.flatten() {
            all.push_str(&std::fs::read_to_string(e.path()).unwrap_or_default());
        }
    }
    all
}

#[test]
fn provisioning_sends_the_right_parameters_and_a_second_run_creates_nothing() {
    let pve = Pve::start();
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let (file, _) = loopback_site(&pve, dir.path(), "");
    let st = state.display().to_string();

    // plan --live: would create, creates nothing.
    let plan = gw(&["plan", "--live", "--json", &file, "--state", &st], pve::SECRET);
    let step = plan.role_step("pn1", "proxmox").unwrap_or_else(|| panic!("{}", plan.text()));
    assert_eq!(step["status"], "would-change", "{}", plan.text());
    assert!(step["detail"].as_str().unwrap().contains("create ct pn1 on pve1: 2 cores, 2048 MiB, 8 GiB"), "{step}");
    assert!(pve.writes().is_empty(), "a dry run wrote: {:?}", pve.writes());

    let first = gw(&["apply", "--yes", "--json", &file, "--state", &st], pve::SECRET);
    let step = first.role_step("pn1", "proxmox").unwrap_or_else(|| panic!("{}", first.text()));
    assert_eq!(step["status"], "changed", "{}", first.text());
    let writes = pve.writes();
    let paths: Vec<String> = writes.iter().map(|r| format!("{} {}", r.method, r.path)).collect();
    assert_eq!(paths, ["POST /nodes/pve1/lxc", "POST /nodes/pve1/lxc/100/status/start"], "{writes:?}");
    let p = &writes[0].params;
    let want = [
        ("vmid", "100"),
        ("ostemplate", pve::CT_TEMPLATE),
        ("hostname", "pn1"),
        ("cores", "2"),
        ("memory", "2048"),
        ("rootfs", "local-lvm:8"),
        ("net0", "name=eth0,bridge=vmbr0,ip=127.0.0.2/24,gw=127.0.0.1"),
        ("searchdomain", "pn.groundwork.test"),
        ("nameserver", "127.0.0.2"),
        ("unprivileged", "1"),
    ];
    for (k, v) in want {
        assert_eq!(p.get(k).map(String::as_str), Some(v), "{k} in {p:?}");
    }
    assert!(p["ssh-public-keys"].starts_with("ssh-ed25519 AAAA"), "{p:?}");
    let tags: Vec<&str> = p["tags"].split(';').collect();
    assert_eq!(&tags[..3], ["groundwork", "gw-pn", "dns"], "{p:?}");
    assert!(tags[3].starts_with("tpl-"), "{p:?}");
    // Tasks were polled by their UPID, percent-encoded (the double refuses it otherwise).
    assert!(pve.requests().iter().any(|r| r.path.contains("/tasks/UPID:pve1:") && r.path.ends_with("/status")));

    let second = gw(&["apply", "--yes", "--json", &file, "--state", &st], pve::SECRET);
    assert_eq!(second.role_step("pn1", "proxmox").unwrap()["status"], "ok", "{}", second.text());
    assert_eq!(pve.writes().len(), 2, "the second run wrote: {:?}", pve.writes());

    // The token never reaches the output or a log.
    let everything = format!("{}{}{}{}", plan.text(), first.text(), second.text(), logs(&state));
    assert!(!logs(&state).is_empty());
    assert!(!everything.contains(pve::SECRET), "the token secret leaked");
}

/// A VM clone gets its boot disk grown to the `disk` answer (`PUT .../resize` with the
/// template's boot disk and `<N>G`, a task whose UPID is waited for); a second run sends none;
/// an answer smaller than the template's disk is said in plan --live, and nothing shrinks.
#[test]
fn a_vm_clone_grows_its_boot_disk_to_the_answer_once() {
    let pve = Pve::start();
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state").display().to_string();
    let (file, _) = loopback_site_with(&pve, dir.path(), "", "kind = \"vm\", cores = 2, memory = 2048, disk = 8");
    let first = gw(&["apply", "--yes", "--json", &file, "--state", &state], pve::SECRET);
    assert_eq!(first.role_step("pn1", "proxmox").unwrap()["status"], "changed", "{}", first.text());
    let writes = pve.writes();
    let paths: Vec<String> = writes.iter().map(|r| format!("{} {}", r.method, r.path)).collect();
    assert_eq!(
        paths,
        [
            "POST /nodes/pve1/qemu/9000/clone",
            "POST /nodes/pve1/qemu/100/config",
            "PUT /nodes/pve1/qemu/100/resize",
            "POST /nodes/pve1/qemu/100/status/start"
        ],
        "{writes:?}"
    );
    let resize = &writes[2].params;
    assert_eq!(resize.get("disk").map(String::as_str), Some("scsi0"), "{resize:?}");
    assert_eq!(resize.get("size").map(String::as_str), Some("8G"), "{resize:?}");
    // The resize task was waited for.
    assert!(pve.requests().iter().any(|r| r.path.contains(":qmresize:100:") && r.path.ends_with("/status")));
    let disk = pve.with(|s| s.guests.iter().find(|g| g.vmid == 100).unwrap().config["scsi0"].clone());
    assert_eq!(disk, "local-lvm:vm-100-disk-0,size=8G");

    let second = gw(&["apply", "--yes", "--json", &file, "--state", &state], pve::SECRET);
    assert_eq!(second.role_step("pn1", "proxmox").unwrap()["status"], "ok", "{}", second.text());
    assert_eq!(pve.writes().len(), 4, "the second run wrote: {:?}", pve.writes());

    // Smaller than the template's 2G disk: said, and no resize is sent.
    let pve = Pve::start();
    pve.with(|s| s.resize_sync = true);
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state").display().to_string();
    let (file, _) = loopback_site_with(&pve, dir.path(), "", "kind = \"vm\", disk = 1");
    let plan = gw(&["plan", "--live", "--json", &file, "--state", &state], pve::SECRET);
    assert!(
        plan.stdout.contains("the VM template's disk: scsi0 is 2G, larger than the answer's 1 GiB: kept as it is (disks only grow, never shrink)"),
        "{}",
        plan.text()
    );
    let apply = gw(&["apply", "--yes", "--json", &file, "--state", &state], pve::SECRET);
    assert_eq!(apply.role_step("pn1", "proxmox").unwrap()["status"], "changed", "{}", apply.text());
    assert!(!pve.writes().iter().any(|r| r.path.ends_with("/resize")), "{:?}", pve.writes());

    // A version that resizes at once (`null`, no task): the same call, nothing to wait for.
    let pve = Pve::start();
    pve.with(|s| s.resize_sync = true);
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state").display().to_string();
    let (file, _) = loopback_site_with(&pve, dir.path(), "", "kind = \"vm\", disk = 4");
    let sync = gw(&["apply", "--yes", "--json", &file, "--state", &state], pve::SECRET);
    assert_eq!(sync.role_step("pn1", "proxmox").unwrap()["status"], "changed", "{}", sync.text());
    let resize: Vec<_> = pve.writes().into_iter().filter(|r| r.path.ends_with("/resize")).collect();
    assert_eq!(resize.len(), 1, "{resize:?}");
    assert_eq!(resize[0].params.get("size").map(String::as_str), Some("4G"));

    let everything = format!("{}{}{}{}{}", first.text(), second.text(), plan.text(), apply.text(), sync.text());
    assert!(!everything.contains(pve::SECRET), "the token secret leaked");
}

/// A state directory as `apply` leaves it (0700, an empty secrets.toml 0600).
fn state_dir(dir: &Path) -> String {
    use std::os::unix::fs::PermissionsExt as _;
    let state = dir.join("state");
    std::fs::create_dir(&state).unwrap();
    std::fs::set_permissions(&state, std::fs::Permissions::from_mode(0o700)).unwrap();
    let secrets = state.join("secrets.toml");
    std::fs::write(&secrets, "").unwrap();
    std::fs::set_permissions(&secrets, std::fs::Permissions::from_mode(0o600)).unwrap();
    state.display().to_string()
}

/// A running groundwork guest `pn1` (VMID 100) in the double, with these tags.
fn put_guest(pve: &Pve, tags: &str) {
    let mut config = std::collections::BTreeMap::new();
    config.insert("hostname".to_string(), "pn1".to_string());
    config.insert("cores".to_string(), "2".to_string());
    config.insert("memory".to_string(), "2048".to_string());
    config.insert("rootfs".to_string(), "local-lvm:vm-100-disk-0,size=8G".to_string());
    config.insert("net0".to_string(), "name=eth0,bridge=vmbr0,ip=127.0.0.2/24,gw=127.0.0.1".to_string());
    config.insert("tags".to_string(), tags.to_string());
    pve.with(|s| {
        s.guests.retain(|g| g.vmid != 100);
        s.guests.push(pve::Guest {
            vmid: 100,
            name: "pn1".into(),
            kind: "lxc",
            status: "running".into(),
            template: false,
            config,
        })
    });
}

/// The `proxmox` row of `verify --json` for pn1.
fn proxmox_row(out: &Run) -> Value {
    let doc: Value = serde_json::from_str(&out.stdout).unwrap_or_else(|_| panic!("{}", out.text()));
    doc["rows"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["service"] == "proxmox" && r["host"] == "pn1")
        .cloned()
        .unwrap_or_else(|| panic!("no proxmox row: {doc}"))
}

/// verify has a `proxmox` row per provisioned host: ok with the template it was built from;
/// FAIL (mismatch) for an older template, naming the rebuild command; skip when the API is
/// unreachable or the token cannot be read.
#[test]
fn verify_reports_the_template_of_each_guest() {
    let pve = Pve::start();
    let dir = tempfile::tempdir().unwrap();
    let state = state_dir(dir.path());
    let (file, _) = loopback_site(&pve, dir.path(), "");
    // No roles: the only checks are the host's reach and its guest (no service to wait for).
    let text = std::fs::read_to_string(&file).unwrap().replace("roles = [\"dns\"]", "roles = []");
    let file = write(dir.path(), "bare.toml", &text);
    let current = groundwork::proxmox::provision::template_tag(pve::CT_TEMPLATE);
    put_guest(&pve, &format!("groundwork;gw-pn;{current}"));
    let out = gw(&["verify", "--json", &file, "--state", &state], pve::SECRET);
    let row = proxmox_row(&out);
    assert_eq!(row["result"], "ok", "{row}");
    assert_eq!(row["detail"], format!("built from {} ({current})", pve::CT_TEMPLATE), "{row}");

    put_guest(&pve, "groundwork;gw-pn;tpl-0badc0de");
    let out = gw(&["verify", "--json", &file, "--state", &state], pve::SECRET);
    assert_eq!(out.code, 1, "{}", out.text());
    let row = proxmox_row(&out);
    assert_eq!((row["result"].as_str(), row["cause"].as_str()), (Some("fail"), Some("mismatch")), "{row}");
    assert_eq!(
        row["detail"],
        format!(
            "built from an older template (tpl-0badc0de), the answers name {} ({current}); `groundwork rebuild pn1` recreates it",
            pve::CT_TEMPLATE
        ),
        "{row}"
    );
    let table = gw(&["verify", &file, "--state", &state], pve::SECRET);
    assert!(table.stdout.contains("built from an older template (tpl-0badc0de)"), "{}", table.text());
    assert!(!format!("{}{}", out.text(), table.text()).contains(pve::SECRET), "the token secret leaked");
    assert!(pve.writes().is_empty(), "verify wrote: {:?}", pve.writes());

    // No token to read: skip, and why.
    let out = Run::of(
        Command::new(env!("CARGO_BIN_EXE_groundwork"))
            .args(["verify", "--json", &file, "--state", &state])
            .env_remove(ENV),
    );
    let row = proxmox_row(&out);
    assert_eq!(row["result"], "skip", "{row}");
    assert!(row["detail"].as_str().unwrap().contains("[proxmox] has no token to use"), "{row}");
    assert!(row["detail"].as_str().unwrap().contains(ENV), "{row}");

    // The API unreachable (nothing listens there): skip, and why.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let text =
        std::fs::read_to_string(&file).unwrap().replace(&pve.url, &format!("https://127.0.0.1:{closed}/api2/json"));
    let moved = write(dir.path(), "moved.toml", &text);
    let out = gw(&["verify", "--json", &moved, "--state", &state], pve::SECRET);
    let row = proxmox_row(&out);
    assert_eq!(row["result"], "skip", "{row}");
    assert!(row["detail"].as_str().unwrap().contains("the Proxmox API is unreachable"), "{row}");
}

/// `groundwork rebuild HOST`: lists what will be lost (VMID, disks and sizes); refuses without
/// --yes and a terminal; with --yes stops, destroys (purge), forgets the host key, creates and
/// starts the guest in that order; refuses a guest without the `groundwork` tag; the token is
/// never in the output.
#[test]
fn rebuild_lists_the_loss_asks_then_stops_destroys_and_creates() {
    let pve = Pve::start();
    let dir = tempfile::tempdir().unwrap();
    let state = state_dir(dir.path());
    let (file, port) = loopback_site(&pve, dir.path(), "");
    let known = Path::new(&state).join("known_hosts");
    let other = "10.9.9.9 ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIEHr0eRkPlwoXxk4tO6aDNd0j2aELq1lIrBz3Y2bNd7e\n";
    std::fs::write(
        &known,
        format!("[127.0.0.2]:{port} ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIEHr0eRkPlwoXxk4tO6aDNd0j2aELq1lIrBz3Y2bNd7e\n{other}"),
    )
    .unwrap();
    put_guest(&pve, "groundwork;gw-pn;dns;tpl-0badc0de");

    // No --yes, no terminal: the listing, then a refusal; nothing is written.
    let dry = gw(&["rebuild", "pn1", &file, "--state", &state], pve::SECRET);
    assert_eq!(dry.code, 2, "{}", dry.text());
    for want in [
        "destroys guest 100 (`pn1`, lxc on pve1, running, built from tpl-0badc0de)",
        "  rootfs: local-lvm:vm-100-disk-0 (8G)",
        "everything on its disks: databases, zone files, leases, LDAP data that are not elsewhere",
        "keeps the site's secrets (passwords, keys, tokens), not data",
    ] {
        assert!(dry.stdout.contains(want), "`{want}` not in:\n{}", dry.stdout);
    }
    assert!(dry.stderr.contains("there is no terminal to ask at; nothing was changed (add --yes)"), "{}", dry.stderr);
    assert!(pve.writes().is_empty(), "{:?}", pve.writes());
    assert!(std::fs::read_to_string(&known).unwrap().contains("127.0.0.2"));

    // --yes: stop, destroy with purge, create, start, in that order; the old key is forgotten.
    let done = gw(&["rebuild", "pn1", &file, "--yes", "--state", &state], pve::SECRET);
    assert_eq!(done.code, 0, "{}", done.text());
    let writes = pve.writes();
    let paths: Vec<String> = writes.iter().map(|r| format!("{} {}", r.method, r.path)).collect();
    assert_eq!(
        paths,
        [
            "POST /nodes/pve1/lxc/100/status/stop",
            "DELETE /nodes/pve1/lxc/100",
            "POST /nodes/pve1/lxc",
            "POST /nodes/pve1/lxc/100/status/start"
        ],
        "{writes:?}"
    );
    assert_eq!(writes[1].params.get("purge").map(String::as_str), Some("1"), "{writes:?}");
    let current = groundwork::proxmox::provision::template_tag(pve::CT_TEMPLATE);
    assert!(writes[2].params["tags"].ends_with(&current), "{writes:?}");
    assert_eq!(std::fs::read_to_string(&known).unwrap(), other, "the old key stays");
    assert!(done.stdout.contains("next: groundwork apply"), "{}", done.stdout);

    // What the new guest needs is checked before anything is destroyed.
    pve.with(|s| s.vztmpl.clear());
    let before = pve.writes().len();
    let unchecked = gw(&["rebuild", "pn1", &file, "--yes", "--state", &state], pve::SECRET);
    assert_eq!(unchecked.code, 1, "{}", unchecked.text());
    assert!(unchecked.stderr.contains("the Proxmox checks failed; nothing was changed"), "{}", unchecked.stderr);
    assert_eq!(pve.writes().len(), before, "{:?}", pve.writes());
    pve.with(|s| s.vztmpl.push(pve::CT_TEMPLATE.into()));

    // A guest of that name without the tag is never touched.
    put_guest(&pve, "gw-pn;dns");
    let before = pve.writes().len();
    let refused = gw(&["rebuild", "pn1", &file, "--yes", "--state", &state], pve::SECRET);
    assert_eq!(refused.code, 2, "{}", refused.text());
    assert!(refused.stderr.contains("without the `groundwork` tag"), "{}", refused.stderr);
    assert_eq!(pve.writes().len(), before, "{:?}", pve.writes());

    let everything = format!("{}{}{}{}", dry.text(), done.text(), unchecked.text(), refused.text());
    assert!(!everything.contains(pve::SECRET), "the token secret leaked");
}

/// A guest with other cores, memory and tags: plan --live shows the difference (and that its
/// template is older), apply changes it in place; nothing is created or destroyed.
#[test]
fn drift_is_shown_then_changed_the_disk_grown_and_an_old_template_is_flagged_outdated() {
    let pve = Pve::start();
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state").display().to_string();
    let (file, _) = loopback_site(&pve, dir.path(), "");
    let first = gw(&["apply", "--yes", "--json", &file, "--state", &state], pve::SECRET);
    assert_eq!(first.role_step("pn1", "proxmox").unwrap()["status"], "changed", "{}", first.text());
    pve.with(|s| {
        let g = s.guests.iter_mut().find(|g| g.name == "pn1").unwrap();
        g.config.insert("cores".into(), "1".into());
        g.config.insert("tags".into(), "groundwork;gw-pn;tpl-0badc0de".into());
        // A root volume smaller than the answer's 8 GiB (made by hand, or an older answer).
        g.config.insert("rootfs".into(), "local-lvm:vm-100-disk-0,size=4G".into());
        // The template volume the answers name now is another one.
    });
    let plan = gw(&["plan", "--live", "--json", &file, "--state", &state], pve::SECRET);
    let step = plan.role_step("pn1", "proxmox").unwrap_or_else(|| panic!("{}", plan.text()));
    assert_eq!(step["status"], "would-change");
    let detail = step["detail"].as_str().unwrap();
    assert!(detail.contains("cores: 1 -> 2"), "{detail}");
    assert!(detail.contains("tags: groundwork;gw-pn;tpl-0badc0de -> dns;groundwork;gw-pn;tpl-0badc0de"), "{detail}");
    assert!(detail.contains("disk rootfs: 4G -> 8G"), "{detail}");
    assert!(plan.stdout.contains("OUTDATED: the guest was built from template tpl-0badc0de"), "{}", plan.stdout);
    let before = pve.writes().len();
    let apply = gw(&["apply", "--yes", "--json", &file, "--state", &state], pve::SECRET);
    assert_eq!(apply.role_step("pn1", "proxmox").unwrap()["status"], "changed", "{}", apply.text());
    let writes = pve.writes();
    assert_eq!(writes.len(), before + 2, "{writes:?}");
    let put = &writes[before];
    assert_eq!((put.method.as_str(), put.path.as_str()), ("PUT", "/nodes/pve1/lxc/100/config"));
    assert_eq!(put.params.get("cores").map(String::as_str), Some("2"));
    assert!(!put.params.contains_key("rootfs"), "the disk is never set through the config: {put:?}");
    let grow = &writes[before + 1];
    assert_eq!((grow.method.as_str(), grow.path.as_str()), ("PUT", "/nodes/pve1/lxc/100/resize"));
    assert_eq!(grow.params.get("disk").map(String::as_str), Some("rootfs"));
    assert_eq!(grow.params.get("size").map(String::as_str), Some("8G"));
    assert!(pve.requests().iter().any(|r| r.path.contains(":resize:100:") && r.path.ends_with("/status")));
    let rootfs = pve.with(|s| s.guests.iter().find(|g| g.name == "pn1").unwrap().config["rootfs"].clone());
    assert_eq!(rootfs, "local-lvm:vm-100-disk-0,size=8G");
    // Changed: the next run finds nothing to do, and a smaller answer never shrinks the disk.
    let again = gw(&["apply", "--yes", "--json", &file, "--state", &state], pve::SECRET);
    assert_eq!(again.role_step("pn1", "proxmox").unwrap()["status"], "ok", "{}", again.text());
    assert_eq!(pve.writes().len(), before + 2, "{:?}", pve.writes());
    let smaller = std::fs::read_to_string(&file).unwrap().replace("disk = 8", "disk = 6");
    std::fs::write(&file, smaller).unwrap();
    let plan = gw(&["plan", "--live", "--json", &file, "--state", &state], pve::SECRET);
    assert!(
        plan.stdout.contains("the container's disk: rootfs is 8G, larger than the answer's 6 GiB: kept as it is"),
        "{}",
        plan.text()
    );
    assert_eq!(pve.with(|s| s.guests.iter().filter(|g| g.name == "pn1").count()), 1);
}

/// A failed task says its exit status and last log lines; a task that never ends stops at
/// task-timeout; a 403 says which privilege on which path; the secret appears in none.
#[test]
fn failed_and_endless_tasks_and_refusals_say_what_happened() {
    type Setup = fn(&Pve);
    let cases: Vec<(&str, Setup, &str, Vec<&str>)> = vec![
        (
            "failing create",
            |p| p.with(|s| s.fail_task.push("vzcreate".into())),
            "",
            vec!["failed: command 'lxc-usernsexec' failed: exit code 1", "no space left on device (told to fail)"],
        ),
        (
            "endless start",
            |p| p.with(|s| s.hang_task.push("vzstart".into())),
            "task-timeout = 2\n",
            vec!["still running after 2 s (task-timeout)", "starting task vzstart"],
        ),
        (
            "403 on create",
            |p| p.with(|s| s.forbid.push(("POST".into(), "/nodes/pve1/lxc".into()))),
            "",
            vec!["403 on POST /nodes/pve1/lxc: Permission check failed (/nodes/pve1/lxc, VM.Allocate)"],
        ),
    ];
    for (what, setup, extra, words) in cases {
        let pve = Pve::start();
        setup(&pve);
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state");
        let (file, _) = loopback_site(&pve, dir.path(), extra);
        let t = Instant::now();
        let out = gw(&["apply", "--yes", "--json", &file, "--state", &state.display().to_string()], pve::SECRET);
        assert_eq!(out.code, 1, "{what}: {}", out.text());
        let step = out.role_step("pn1", "proxmox").unwrap_or_else(|| panic!("{what}: {}", out.text()));
        assert_eq!(step["status"], "failed", "{what}");
        let detail = step["detail"].as_str().unwrap();
        for w in words {
            assert!(detail.contains(w), "{what}: `{w}` not in {detail}");
        }
        assert!(t.elapsed().as_secs() < 30, "{what}: took {:?}", t.elapsed());
        let fin = out.finished();
        assert_eq!(fin["hosts"]["pn1"]["failure"]["phase"], "provision", "{what}: {fin}");
        assert!(!out.text().contains(pve::SECRET) && !logs(&state).contains(pve::SECRET), "{what}: secret leaked");
    }
}

/// End to end on the lab: pn1 does not exist; the double's start of its container boots the
/// real lab host pn1 (10.77.0.101); apply converges DNS on it and verify passes.
#[test]
fn apply_provisions_a_dns_host_from_nothing_to_verified() {
    const HOSTS: &[(&str, &str)] = &[("pn1", "10.77.0.101")];
    if !common::lab::require() {
        return;
    }
    let _lock = common::lab::lock();
    // Always taken down, even when an assertion fails.
    struct Down;
    impl Drop for Down {
        fn drop(&mut self) {
            common::lab::down(&["pn1"]);
        }
    }
    let _down = Down;
    common::lab::down(&["pn1"]);
    let pve = Pve::start();
    pve.with(|s| {
        s.on_start = Some(std::sync::Arc::new(|name: &str, ip: &str| {
            assert_eq!((name, ip), HOSTS[0], "the double was asked to start another guest");
            common::lab::up(&[(name, ip)])
        }))
    });
    let dir = tempfile::tempdir().unwrap();
    let key = common::lab::key().display().to_string();
    let hosts = host("pn1", "10.77.0.101", &key, 22, "\"dns\"", "kind = \"ct\", cores = 2, memory = 2048, disk = 8");
    let file = write(dir.path(), "site.toml", &answers(&pve, "10.77.0.0/24", "10.77.0.1", &hosts, ""));
    let state = dir.path().join("state").display().to_string();
    assert!(common::lab::lab(&["ssh", "pn1", "true"]).is_err(), "pn1 runs before the test");

    let t = Instant::now();
    let apply = gw(&["apply", "--yes", "--json", &file, "--state", &state], pve::SECRET);
    let applied = t.elapsed();
    assert_eq!(apply.code, 0, "{}", apply.text());
    assert_eq!(apply.role_step("pn1", "proxmox").unwrap()["status"], "changed");
    let verify = gw(&["verify", &file, "--state", &state], pve::SECRET);
    let total = t.elapsed();
    assert_eq!(verify.code, 0, "{}", verify.text());
    {
        use std::io::Write as _;
        let _ = writeln!(
            std::io::stderr(),
            "FIGURES: pn1 from no host to converged in {:.1} s, to verified in {:.1} s",
            applied.as_secs_f64(),
            total.as_secs_f64()
        );
    }
    let again = gw(&["apply", "--yes", "--json", &file, "--state", &state], pve::SECRET);
    assert_eq!(again.code, 0, "{}", again.text());
    assert_eq!(again.role_step("pn1", "proxmox").unwrap()["status"], "ok");
    let creates = pve.writes().iter().filter(|r| r.path == "/nodes/pve1/lxc").count();
    assert_eq!(creates, 1);
    let all = format!("{}{}{}{}", apply.text(), verify.text(), again.text(), logs(Path::new(&state)));
    assert!(!all.contains(pve::SECRET), "the token secret leaked");
}

/// The Proxmox example of the wizard passes the online checks against the double, and
/// `plan --live` plans its container hosts as guests to create without writing anything.
#[test]
fn the_proxmox_example_checks_online_and_plans_its_guests() {
    let pve = Pve::start();
    let dir = tempfile::tempdir().unwrap();
    let key = keys(dir.path());
    let text = std::fs::read_to_string("wizard/examples/proxmox-k3s.toml").unwrap();
    let (head, _) = text.split_once("[proxmox]").unwrap();
    let head: String = head
        .replace("~/.ssh/pve_ed25519", &key)
        .lines()
        .filter(|l| !l.starts_with("airgap-bundle"))
        .map(|l| format!("{l}\n"))
        .collect();
    let file = write(dir.path(), "pve.toml", &format!("{head}{}", pve.section(ENV)));
    let out = gw(&["validate", "--online", &file], pve::SECRET);
    assert_eq!(out.code, 0, "{}", out.text());
    let state = dir.path().join("state").display().to_string();
    // The k3s hosts need an air-gap bundle to be planned at all: the others here.
    let only = ["--host", "infra1", "--host", "infra2", "--host", "data1"];
    let mut args = vec!["plan", "--live", "--json", &file, "--state", &state];
    args.extend(only);
    let plan = gw(&args, pve::SECRET);
    let creates: Vec<String> = plan
        .events
        .iter()
        .filter(|e| e["event"] == "step-finished" && e["role"] == "proxmox" && e["status"] == "would-change")
        .map(|e| e["detail"].as_str().unwrap().split(':').next().unwrap().to_string())
        .collect();
    assert_eq!(
        creates,
        ["create ct infra1 on pve1", "create ct infra2 on pve1", "create ct data1 on pve1"],
        "{}",
        plan.text()
    );
    assert!(pve.writes().is_empty(), "{:?}", pve.writes());
}
