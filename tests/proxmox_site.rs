//! The Proxmox example of the wizard (`wizard/examples/proxmox-k3s.toml`) from "no host" to
//! a converged, verified site on the lab, its 8 hosts provisioned first.
//!
//! Two TEST DOUBLES stand in for what cannot run here, each labelled as one:
//! - the Proxmox VE API (`tests/common/pve.rs`): it creates the guests in its memory, and its
//!   start of a guest boots a real lab host with the guest's name and address, then does to it
//!   what Proxmox (a container's `ssh-public-keys`, `nameserver`, `searchdomain`) or cloud-init
//!   (a VM's `ciuser`, `sshkeys`, `nameserver`, `searchdomain`) would do, from the config the
//!   double was sent;
//! - k3s (`tests/doubles/k3s`), the k3s nodes' binary in the air-gap bundle.
//!
//! Everything else is real: SSH, systemd, apt, BIND, Kea, slapd, PostgreSQL, MariaDB, and
//! groundwork's verify, as a client, from this machine. The example is used as it is, with
//! only what names this machine's world changed: addresses (lab ones), the key, the bundle,
//! the Proxmox endpoint.

mod common;

use std::path::Path;
use std::sync::{Arc, Mutex};

use std::time::Instant;

use common::lab;
use common::pve::{self, Pve};
use common::run::{apply, groundwork, on};
use serde_json::Value;

const EXAMPLE: &str = "wizard/examples/proxmox-k3s.toml";
/// The example's hosts, the address the example gives each, and the lab address used here.
const HOSTS: &[(&str, &str, &str)] = &[
    ("infra1", "10.20.0.10", "10.77.0.160"),
    ("infra2", "10.20.0.11", "10.77.0.161"),
    ("data1", "10.20.0.20", "10.77.0.162"),
    ("k3s-s1", "10.20.1.11", "10.77.0.163"),
    ("k3s-s2", "10.20.1.12", "10.77.0.164"),
    ("k3s-s3", "10.20.1.13", "10.77.0.165"),
    ("k3s-a1", "10.20.1.21", "10.77.0.166"),
    ("k3s-a2", "10.20.1.22", "10.77.0.167"),
];

/// The example with this machine's world in it: lab addresses and network, the lab key, the
/// double's bundle and endpoint. Every other answer is the example's own.
fn localize(example: &str, pve: &Pve, bundle: &Path, secret_file: &Path) -> String {
    let key = lab::key();
    let mut text = example.to_string();
    for (_, theirs, ours) in HOSTS {
        text = text.replace(&format!("address = \"{theirs}\""), &format!("address = \"{ours}\""));
    }
    let replace = |text: String, from: &str, to: &str| {
        assert!(text.contains(from), "the example no longer has `{from}`");
        text.replace(from, to)
    };
    text = replace(text, "subnet = \"10.20.0.0/22\"", "subnet = \"10.77.0.0/24\"");
    text = replace(text, "gateway = \"10.20.0.1\"", "gateway = \"10.77.0.1\"");
    // Nothing is routed out of the lab: no forwarders.
    text = replace(text, "forwarders = [\"10.0.0.53\", \"10.0.1.53\"]", "forwarders = []");
    text =
        replace(text, "start = \"10.20.2.0\"\nend = \"10.20.2.255\"", "start = \"10.77.0.170\"\nend = \"10.77.0.174\"");
    text =
        replace(text, "start = \"10.20.3.0\"\nend = \"10.20.3.200\"", "start = \"10.77.0.175\"\nend = \"10.77.0.179\"");
    text = replace(text, "ssh-key = \"~/.ssh/pve_ed25519\"", &format!("ssh-key = \"{}\"", key.display()));
    text = replace(
        text,
        "airgap-bundle = \"/srv/groundwork/bundles/k3s-v1.35.6\"",
        &format!("airgap-bundle = \"{}\"", bundle.display()),
    );
    let (head, _) = text.split_once("[proxmox]").expect("the example has [proxmox]");
    assert!(!head.contains("10.20."), "an address of the example was not mapped:\n{head}");
    let section = pve
        .section("UNUSED")
        .replace("token-secret-env = \"UNUSED\"", &format!("token-secret-file = \"{}\"", secret_file.display()));
    format!("{head}{section}")
}

/// What Proxmox (containers) or cloud-init (VMs) does to a guest at its first boot, from the
/// config the double holds: the site key for root or the cloud-init user (with sudo), the
/// resolver. Plus the k3s double's needs on the k3s nodes (it is not k3s: see its header).
fn first_boot(state: &Arc<Mutex<pve::State>>, name: &str) -> Result<(), String> {
    let g = {
        let s = state.lock().unwrap();
        s.guests.iter().find(|g| g.name == name && !g.template).cloned().ok_or(format!("no guest {name}"))?
    };
    let c = |k: &str| g.config.get(k).cloned().unwrap_or_default();
    let quote = |s: &str| format!("'{}'", s.replace('\'', "'\\''"));
    let mut script = String::from("set -e\n");
    if g.kind == "lxc" {
        script += &format!(
            "mkdir -p /root/.ssh && printf '%s\\n' {} >> /root/.ssh/authorized_keys\n",
            quote(c("ssh-public-keys").trim())
        );
    } else {
        // sshkeys is URL-encoded in the config (Proxmox's format).
        let keys = pve::pct_decode(&c("sshkeys"));
        let user = c("ciuser");
        script += &format!(
            "id -u {u} >/dev/null 2>&1 || useradd -m -s /bin/bash {u}\n\
             mkdir -p ~{u}/.ssh && printf '%s\\n' {k} > ~{u}/.ssh/authorized_keys && chown -R {u}: ~{u}/.ssh\n\
             echo '{u} ALL=(ALL) NOPASSWD:ALL' > /etc/sudoers.d/90-cloud-init-users\n",
            u = user,
            k = quote(keys.trim())
        );
        let unit = if name.starts_with("k3s-a") { "k3s-agent" } else { "k3s" };
        // The double tells systemd it is ready from a child process: allowed for it alone.
        script += &format!(
            "mkdir -p /etc/systemd/system/{unit}.service.d && \
             printf '[Service]\\nNotifyAccess=all\\n' > /etc/systemd/system/{unit}.service.d/test-double.conf\n"
        );
    }
    let ns: Vec<String> = c("nameserver").split_whitespace().map(|n| format!("nameserver {n}")).collect();
    script += &format!(
        "printf '%s\\n' {} > /etc/resolv.conf\n",
        quote(&format!("search {}\n{}", c("searchdomain"), ns.join("\n")))
    );
    lab::lab(&["exec", name, "sh", "-c", &script]).map(|_| ())
}

#[test]
fn the_proxmox_example_goes_from_no_host_to_a_verified_site() {
    let names: Vec<&str> = HOSTS.iter().map(|(n, _, _)| *n).collect();
    if !lab::require() {
        return;
    }
    let _lock = lab::lock_dhcp();
    // Always taken down, even when an assertion fails.
    struct Down(Vec<&'static str>);
    impl Drop for Down {
        fn drop(&mut self) {
            lab::down(&self.0);
        }
    }
    let _down = Down(names.clone());
    lab::down(&names);
    for n in &names {
        assert!(lab::lab(&["ssh", n, "true"]).is_err(), "{n} runs before the test");
    }

    let pve = Pve::start();
    // The recorded "ready" answers of Argo CD's workloads and Application, for the k3s
    // double on the first server (it gives them only after the engine was applied).
    let recorded = format!(
        "mkdir -p /var/lib/k3s-double && cat > /var/lib/k3s-double/workloads.json <<'EOF'\n{}\nEOF\n\
         cat > /var/lib/k3s-double/application.json <<'EOF'\n{}\nEOF\n",
        std::fs::read_to_string("tests/fixtures/handoff/argocd-workloads-ready.json").unwrap(),
        std::fs::read_to_string("tests/fixtures/handoff/application-synced.json").unwrap()
    );
    let state = pve.state.clone();
    pve.with(|s| {
        s.on_start = Some(Arc::new(move |name: &str, ip: &str| {
            let (_, _, want) = HOSTS.iter().find(|(n, _, _)| *n == name).ok_or(format!("unknown guest {name}"))?;
            if ip != *want {
                return Err(format!("{name} was given {ip}, not {want}"));
            }
            lab::up(&[(name, ip)])?;
            first_boot(&state, name)?;
            if name == "k3s-s1" {
                lab::lab(&["exec", name, "sh", "-c", &recorded])?;
            }
            Ok(())
        }))
    });
    let dir = tempfile::tempdir().unwrap();
    let bundle = dir.path().join("bundle");
    // The example hands off to Argo CD.
    common::double::double_bundle_for(&bundle, "argocd", "3.2.0");
    let secret = dir.path().join("pve-token");
    std::fs::write(&secret, format!("{}\n", pve::SECRET)).unwrap();
    std::fs::set_permissions(&secret, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let example = std::fs::read_to_string(EXAMPLE).unwrap();
    let answers = dir.path().join("proxmox-k3s.toml");
    std::fs::write(&answers, localize(&example, &pve, &bundle, &secret)).unwrap();
    let (answers, state_dir) = (answers.to_str().unwrap(), dir.path().join("state"));

    let t = Instant::now();
    let first = apply(answers, &state_dir, &[]);
    let converged = t.elapsed();
    assert_eq!(first.code, 0, "{}", first.all_text());
    for n in &names {
        assert_eq!(first.step(n, "guest").map(|s| s["status"].clone()), Some("changed".into()), "{n}");
        assert_eq!(first.failed(n), 0, "{n}: {}", first.error(n));
    }
    // The guests came up side by side: the phase took as long as its slowest guest.
    let provisioned = names.iter().filter_map(|n| first.step(n, "guest")?["ms"].as_u64()).max().unwrap_or(0);
    let writes: Vec<String> = pve.writes().iter().map(|r| format!("{} {}", r.method, r.path)).collect();
    assert_eq!(writes.iter().filter(|w| *w == "POST /nodes/pve1/lxc").count(), 3, "{writes:?}");
    assert_eq!(writes.iter().filter(|w| w.ends_with("/clone")).count(), 5, "{writes:?}");
    // A VM was reached as its cloud-init user, a container as root.
    assert!(on("k3s-a1", "getent passwd debian").starts_with("debian:"));

    let v = groundwork(&state_dir, &["verify", "--json", answers]);
    let verified = t.elapsed();
    let doc: Value = serde_json::from_str(&v.stdout).unwrap_or_else(|e| panic!("{e}: {}", v.all_text()));
    assert_eq!(v.code, 0, "{}", v.all_text());
    let rows = doc["rows"].as_array().unwrap();
    let services = |host: &str| -> Vec<String> {
        let mut s: Vec<String> = rows
            .iter()
            .filter(|r| r["host"] == host)
            .map(|r| r["service"].as_str().unwrap_or("").to_string())
            .collect();
        s.dedup();
        s
    };
    for (n, want) in [
        ("infra1", &["proxmox", "dns", "dhcp"][..]),
        ("infra2", &["proxmox", "dns", "ldap"]),
        ("data1", &["proxmox", "postgresql", "mariadb"]),
        ("k3s-s1", &["proxmox", "k3s", "gitops"]),
        ("k3s-a2", &["proxmox", "k3s"]),
    ] {
        let have = services(n);
        for w in want {
            assert!(have.iter().any(|h| h == w), "{n}: no {w} row in {have:?}\n{doc}");
        }
    }
    assert!(rows.iter().all(|r| r["result"] == "ok" || r["result"] == "skip"), "{doc}");
    {
        use std::io::Write as _;
        let _ = writeln!(
            std::io::stderr(),
            "FIGURES: the Proxmox example, 8 guests from no host: all guests up (SSH answers) in {:.1} s, converged in {:.1} s, verified in {:.1} s",
            provisioned as f64 / 1000.0,
            converged.as_secs_f64(),
            verified.as_secs_f64()
        );
    }

    // Again: the guests are found, nothing is created or changed anywhere.
    let before = pve.writes().len();
    let again = apply(answers, &state_dir, &[]);
    eprintln!("re-run: {:.2} s", again.secs);
    assert_eq!(again.code, 0, "{}", again.all_text());
    for n in &names {
        assert_eq!(again.changed(n), 0, "{n}: {:?}", again.changed_steps(n));
        assert_eq!(again.step(n, "guest").map(|s| s["status"].clone()), Some("ok".into()), "{n}");
    }
    assert_eq!(pve.writes().len(), before, "{:?}", &pve.writes()[before..]);
    let all = format!("{}{}{}", first.all_text(), v.all_text(), again.all_text());
    assert!(!all.contains(pve::SECRET), "the token secret leaked");
}
