//! The real binary, as an operator runs it.

use std::os::unix::fs::PermissionsExt;
use std::process::Command;

fn groundwork() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_groundwork"));
    c.env("NO_COLOR", "1");
    c
}

fn run(args: &[&str]) -> (i32, String, String) {
    let out = groundwork().args(args).output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).to_string(),
        String::from_utf8_lossy(&out.stderr).to_string(),
    )
}

#[test]
fn validate_accepts_the_examples() {
    let (code, out, err) = run(&[
        "validate",
        "wizard/examples/lab.toml",
        "wizard/examples/single-server.toml",
        "wizard/examples/proxmox-k3s.toml",
    ]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(out.matches(": ok (site").count(), 3, "{out}");
}

#[test]
fn validate_shows_file_line_column_field_and_the_source_line() {
    let (code, _, err) = run(&["validate", "tests/fixtures/bad/range-holds-host.toml"]);
    assert_eq!(code, 1);
    assert!(
        err.contains("tests/fixtures/bad/range-holds-host.toml:13:9: network.dhcp-range[0].start: the range 10.0.0.5-10.0.0.50 holds"),
        "{err}"
    );
    assert!(err.contains("start = \"10.0.0.5\""), "the source line is shown: {err}");
    assert!(err.contains("help: shrink the range"), "{err}");
}

#[test]
fn validate_json_lists_every_problem() {
    let (code, out, _) = run(&["validate", "--json", "tests/fixtures/bad/many-problems.toml"]);
    assert_eq!(code, 1);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let problems = v[0]["problems"].as_array().unwrap();
    assert_eq!(problems.len(), 3);
    assert_eq!(problems[0]["field"], "site.admin-email");
    assert_eq!(problems[0]["line"], 6);
}

#[test]
fn validate_names_a_missing_file() {
    let (code, _, err) = run(&["validate", "/nonexistent/site.toml"]);
    assert_eq!(code, 1);
    assert!(err.contains("/nonexistent/site.toml") && err.contains("cannot read the file"), "{err}");
}

#[test]
fn plan_orders_roles_by_phase_and_needs() {
    let (code, out, err) = run(&["plan", "--json", "wizard/examples/proxmox-k3s.toml"]);
    assert_eq!(code, 0, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let order: Vec<&str> = v["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["role"].as_str().unwrap())
        .collect();
    assert_eq!(
        order,
        ["base", "dns", "dhcp", "postgresql", "mariadb", "ldap", "k3s-server", "k3s-agent", "gitops"]
    );
    assert_eq!(v["steps"][0]["hosts"].as_array().unwrap().len(), 8, "base is on every host");
    let gitops = &v["steps"][8];
    assert_eq!(gitops["hosts"], serde_json::json!(["k3s-s1"]));
    assert!(gitops["after"].as_array().unwrap().iter().any(|r| r["role"] == "k3s-server"));
    let dhcp = &v["steps"][2];
    assert!(dhcp["after"][0]["why"].as_str().unwrap().contains("TSIG"));
}

#[test]
fn plan_without_a_file_shows_the_bundled_lab() {
    let (code, out, err) = run(&["plan"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("bundled lab example"), "{out}");
    assert!(out.contains("foundation") && out.contains("identity"), "{out}");
    let dns = out.find("dns ").unwrap();
    let ldap = out.find("ldap ").unwrap();
    assert!(dns < ldap, "dns comes before ldap:\n{out}");
}

#[test]
fn plan_refuses_an_invalid_file() {
    let (code, out, err) = run(&["plan", "tests/fixtures/bad/dhcp-without-dns.toml"]);
    assert_eq!(code, 1);
    assert!(out.is_empty(), "no plan for a bad file: {out}");
    assert!(err.contains("needs a host with role `dns`"), "{err}");
}

#[test]
fn schema_command_prints_the_kept_schema() {
    let (code, out, _) = run(&["schema"]);
    assert_eq!(code, 0);
    assert_eq!(out, std::fs::read_to_string("wizard/answer.schema.json").unwrap());
}

#[test]
fn probe_json_has_cpus_memory_disks_and_nics() {
    let (code, out, err) = run(&["probe", "--json"]);
    assert_eq!(code, 0, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert!(v["cpus"]["count"].as_u64().unwrap() >= 1);
    assert!(v["memory"]["total_bytes"].as_u64().unwrap() > 0);
    assert!(!v["disks"].as_array().unwrap().is_empty(), "{out}");
    let nics = v["nics"].as_array().unwrap();
    assert!(nics.iter().any(|n| n["name"] == "lo" && n["kind"] == "loopback"));
    assert!(v["kernel"].as_str().is_some_and(|k| !k.is_empty()));
}

/// A real, unmounted block device: a loop device over a sparse file. It must show up as a
/// blank disk of the right size (mounted-only tools miss it).
#[test]
fn probe_sees_an_unmounted_blank_disk() {
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("blank.img");
    std::fs::File::create(&img).unwrap().set_len(96 << 20).unwrap();
    let attach = Command::new("losetup").args(["-f", "--show"]).arg(&img).output();
    let dev = match attach {
        Ok(o) if o.status.success() => String::from_utf8_lossy(&o.stdout).trim().to_string(),
        other => {
            eprintln!("SKIPPED: cannot attach a loop device here ({other:?})");
            return;
        }
    };
    let (code, out, _) = run(&["probe", "--json"]);
    let _ = Command::new("losetup").args(["-d", &dev]).status();
    assert_eq!(code, 0);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let disk = v["disks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["path"] == dev.as_str())
        .unwrap_or_else(|| panic!("{dev} not in {out}"));
    assert_eq!(disk["size_bytes"], 96u64 << 20);
    assert_eq!(disk["blank"], true);
    assert_eq!(disk["kind"], "loop");
}

#[test]
fn probe_for_judges_the_roles() {
    let (code, out, _) = run(&["probe", "--for", "wizard/examples/single-server.toml"]);
    assert!(out.contains("preflight:"), "{out}");
    assert!(out.contains("k3s-server") && out.contains("total"), "{out}");
    let failed = out.contains("FAIL");
    assert_eq!(code, i32::from(failed), "exit code follows the verdict:\n{out}");
}

#[test]
fn wizard_without_a_terminal_points_to_the_answer_file() {
    let out = groundwork()
        .args(["wizard", "--out", "/tmp/never-written.toml"])
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("not one") && err.contains("groundwork validate FILE"), "{err}");
    assert!(!std::path::Path::new("/tmp/never-written.toml").exists());
}

/// The real binary at a pseudo-terminal: typed answers, a rejected domain and a rejected
/// DHCP range, the summary, and files that `validate` accepts.
#[test]
fn wizard_through_a_pty_writes_a_valid_answer_file() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("site.toml");
    let state = dir.path().join("state");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_groundwork"));
    cmd.args(["--state"])
        .arg(&state)
        .args(["wizard", "--out"])
        .arg(&out)
        .env("TERM", "xterm");
    let opts = rexpect::reader::Options::new()
        .timeout_ms(Some(20_000))
        .strip_ansi_escape_codes(true);
    let mut p = rexpect::session::spawn_with_options(cmd, opts).unwrap();
    let mut seen = String::new();
    step(&mut p, &mut seen, "Site name", "pty");
    step(&mut p, &mut seen, "Internal domain", "not a domain");
    step(&mut p, &mut seen, "is not a fully qualified domain name", "pty.example.org");
    step(&mut p, &mut seen, "External domain", "example.org");
    step(&mut p, &mut seen, "Time zone", "UTC");
    step(&mut p, &mut seen, "Administrator e-mail", "");
    step(&mut p, &mut seen, "Site subnet", "10.99.0.0/24");
    step(&mut p, &mut seen, "Gateway", "10.99.0.1");
    step(&mut p, &mut seen, "forwarders", "none");
    step(&mut p, &mut seen, "Host 1 name", "srv1");
    step(&mut p, &mut seen, "address", "10.99.0.10");
    step(&mut p, &mut seen, "SSH user", "root");
    step(&mut p, &mut seen, "SSH private key", "~/.ssh/id_ed25519");
    step(&mut p, &mut seen, "roles (", "dns, dhcp, ldap, postgresql, mariadb");
    key(&mut p, &mut seen, "Add another host?", "n");
    step(&mut p, &mut seen, "Dynamic range", "10.99.0.5-10.99.0.50");
    step(&mut p, &mut seen, "holds the static address of host srv1", "10.99.0.100-10.99.0.199");
    step(&mut p, &mut seen, "Lease time", "");
    step(&mut p, &mut seen, "postgresql databases", "keycloak");
    step(&mut p, &mut seen, "mariadb databases", "nextcloud");
    step(&mut p, &mut seen, "Organisation name", "Pty Org");
    key(&mut p, &mut seen, "Proxmox VE API?", "n");
    wait(&mut p, &mut seen, "Summary");
    key(&mut p, &mut seen, "Write ", "y");
    let rest = p.exp_eof().unwrap();
    seen.push_str(&rest);
    assert!(rest.contains("wrote") && rest.contains("(mode 0600)"), "{rest}");
    assert!(rest.contains("secrets: generated"), "{rest}");

    let loaded = groundwork::answers::load_file(&out)
        .unwrap_or_else(|r| panic!("{}", r.render(false)))
        .answers;
    assert_eq!(loaded.site.internal_domain, "pty.example.org");
    assert_eq!(loaded.network.dhcp_ranges[0].start.to_string(), "10.99.0.100");
    assert_eq!(loaded.ldap.unwrap().organisation, "Pty Org");
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&out), 0o600);
    let secrets_path = state.join("secrets.toml");
    assert_eq!(mode(&secrets_path), 0o600);
    let secrets = groundwork::state::Secrets::load(&secrets_path).unwrap();
    for (table, key) in [("tsig", "ddns-key"), ("ldap", "admin"), ("postgresql", "keycloak"), ("mariadb", "nextcloud")] {
        let value = secrets.get(table, key).unwrap_or_else(|| panic!("no {table}.{key}"));
        assert!(!seen.contains(value), "secret {table}.{key} was echoed");
        assert!(!std::fs::read_to_string(&out).unwrap().contains(value));
    }
    let (code, _, err) = run(&["validate", out.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
}

type Pty = rexpect::session::PtySession;

fn wait(p: &mut Pty, seen: &mut String, expect: &str) {
    match p.exp_string(expect) {
        Ok(text) => seen.push_str(&text),
        Err(e) => panic!("waiting for {expect:?}: {e}\nso far:\n{seen}"),
    }
}

/// Wait for a prompt, type a line and press Enter.
fn step(p: &mut Pty, seen: &mut String, expect: &str, send: &str) {
    wait(p, seen, expect);
    p.send(send).unwrap();
    p.send("\r").unwrap();
    p.flush().unwrap();
}

/// Wait for a yes/no prompt and press one key.
fn key(p: &mut Pty, seen: &mut String, expect: &str, k: &str) {
    wait(p, seen, expect);
    p.send(k).unwrap();
    p.flush().unwrap();
}
