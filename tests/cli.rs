//! The real binary, as an operator runs it.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

mod common;
use common::pty::{self, key, step, wait};

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
    let order: Vec<&str> = v["steps"].as_array().unwrap().iter().map(|s| s["role"].as_str().unwrap()).collect();
    // Ties within a phase go by name (mariadb before postgresql): the order is not a list.
    assert_eq!(order, ["base", "dns", "dhcp", "mariadb", "postgresql", "ldap", "k3s-server", "k3s-agent", "gitops"]);
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

/// `dir/playbooks/postgresql`: the embedded role, with a hard need on ldap added.
fn postgresql_needs_ldap(dir: &std::path::Path) -> std::path::PathBuf {
    let root = dir.join("playbooks");
    let pg = root.join("postgresql");
    for sub in ["templates", "files"] {
        std::fs::create_dir_all(pg.join(sub)).unwrap();
        for entry in std::fs::read_dir(format!("playbooks/postgresql/{sub}")).unwrap() {
            let path = entry.unwrap().path();
            std::fs::copy(&path, pg.join(sub).join(path.file_name().unwrap())).unwrap();
        }
    }
    let toml = std::fs::read_to_string("playbooks/postgresql/role.toml").unwrap();
    let extra = "\n[[needs]]\nrole = \"ldap\"\nwhy = \"database accounts are checked against the directory\"\n";
    std::fs::write(pg.join("role.toml"), toml + extra).unwrap();
    root
}

fn role_order(plan: &serde_json::Value) -> Vec<String> {
    plan["steps"].as_array().unwrap().iter().map(|s| s["role"].as_str().unwrap().to_string()).collect()
}

#[test]
fn plan_follows_a_playbooks_override_of_needs() {
    let dir = tempfile::tempdir().unwrap();
    let pb = postgresql_needs_ldap(dir.path());
    let pb = pb.to_str().unwrap();
    let lab = "wizard/examples/lab.toml";

    let (code, out, err) = run(&["plan", "--json", lab]);
    assert_eq!(code, 0, "{err}");
    let order = role_order(&serde_json::from_str(&out).unwrap());
    let at = |o: &[String], r: &str| o.iter().position(|x| x == r).unwrap();
    assert!(at(&order, "postgresql") < at(&order, "ldap"), "built in, postgresql comes first: {order:?}");

    let (code, out, err) = run(&["plan", "--json", "--playbooks", pb, lab]);
    assert_eq!(code, 0, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let order = role_order(&v);
    assert!(at(&order, "ldap") < at(&order, "postgresql"), "the override's need counts: {order:?}");
    let pg = &v["steps"][at(&order, "postgresql")];
    assert!(
        pg["after"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["role"] == "ldap" && r["why"] == "database accounts are checked against the directory"),
        "{pg}"
    );

    let (code, out, err) = run(&["plan", "--playbooks", pb, lab]);
    assert_eq!(code, 0, "{err}");
    let ldap = out.find(". ldap ").unwrap();
    let pg = out.find(". postgresql ").unwrap();
    assert!(ldap < pg, "{out}");
    assert!(out[pg..].contains("after ldap: database accounts are checked against the directory"), "{out}");

    // A hard need of the override that the site lacks is a problem of the file, with its line.
    let file = dir.path().join("db-only.toml");
    std::fs::write(&file, DB_ONLY).unwrap();
    let file = file.to_str().unwrap();
    let (code, _, err) = run(&["validate", file]);
    assert_eq!(code, 0, "built in, postgresql needs no ldap: {err}");
    let (code, out, err) = run(&["plan", "--playbooks", pb, file]);
    assert_eq!(code, 1, "{out}");
    assert!(
        err.contains(&format!("{file}:16:"))
            && err.contains("host[0].roles[0]: role `postgresql` needs a host with role `ldap`"),
        "{err}"
    );
}

/// One database host, nothing else.
const DB_ONLY: &str = r#"
[site]
name = "db"
internal-domain = "db.example.org"
external-domain = "example.org"
admin-email = "it@example.org"

[network]
subnet = "10.77.0.0/24"
gateway = "10.77.0.1"

[[host]]
name = "db9"
address = "10.77.0.249"
ssh-key = "/nonexistent/groundwork-test-key"
roles = ["postgresql"]

[[databases.postgresql]]
name = "app"
user = "app"
"#;

/// A k3s cluster (a server, an agent) and the GitOps hand-off: roles whose steps do not
/// exist yet. Addresses nothing answers on, a key that does not exist.
const K3S_ONLY: &str = r#"
[site]
name = "k3s-only"
internal-domain = "k3s.example.org"
external-domain = "example.org"
admin-email = "it@example.org"

[network]
subnet = "10.77.0.0/24"
gateway = "10.77.0.1"

[[host]]
name = "k1"
address = "10.77.0.250"
ssh-key = "/nonexistent/groundwork-test-key"
roles = ["k3s-server"]

[[host]]
name = "w1"
address = "10.77.0.251"
ssh-key = "/nonexistent/groundwork-test-key"
roles = ["k3s-agent"]

[k3s]
version = "v1.35.6+k3s1"
mode = "single"

[gitops]
engine = "flux"
repository = "https://git.example.org/platform/cluster.git"
branch = "main"
path = "./clusters/k3s"
"#;

/// A copy of the shipped roles in which `role` lost its steps.
fn playbooks_without_steps(dir: &Path, role: &str) -> PathBuf {
    let copy = dir.join("playbooks");
    let status = Command::new("cp").arg("-r").arg("playbooks").arg(&copy).status().unwrap();
    assert!(status.success());
    let path = copy.join(role).join("role.toml");
    let text = std::fs::read_to_string(&path).unwrap();
    std::fs::write(&path, &text[..text.find("[[step]]").unwrap()]).unwrap();
    copy
}

#[test]
fn roles_without_steps_are_shown_by_plan_and_refused_by_apply() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("k3s.toml");
    std::fs::write(&file, K3S_ONLY).unwrap();
    let file = file.to_str().unwrap();
    let state = dir.path().join("state");
    let st = state.to_str().unwrap();

    // gitops has no steps: the hand-off phase carries it out, and plan says so.
    let (code, out, err) = run(&["plan", file, "--state", st]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(out.matches("NO STEPS YET").count(), 0, "{out}");
    assert!(out.contains("by the hand-off phase"), "{out}");

    let playbooks = playbooks_without_steps(dir.path(), "k3s-agent");
    let pb = playbooks.to_str().unwrap();
    let (code, out, err) = run(&["plan", "--playbooks", pb, file, "--state", st]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(out.matches("NO STEPS YET").count(), 1, "only k3s-agent: {out}");
    let (code, out, _) = run(&["plan", "--json", "--playbooks", pb, file]);
    assert_eq!(code, 0);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let step = |role: &str| v["steps"].as_array().unwrap().iter().find(|s| s["role"] == role).unwrap().clone();
    assert_eq!(step("k3s-agent")["step_count"], 0, "{v}");
    assert_eq!(step("gitops")["step_count"], 0, "{v}");
    assert!(step("gitops")["carried_out_by"].as_str().unwrap().starts_with("the hand-off phase"), "{v}");
    assert!(step("k3s-server")["step_count"].as_u64().unwrap() > 0, "{v}");

    for cmd in [&["apply", "--yes"][..], &["apply"], &["plan", "--live"], &["apply", "--yes", "--json"]] {
        let mut args = cmd.to_vec();
        args.extend(["--playbooks", pb, file, "--state", st]);
        let t = std::time::Instant::now();
        let (code, out, err) = run(&args);
        assert_eq!(code, 2, "{args:?}: {out}{err}");
        assert!(
            err.contains("role k3s-agent has no steps yet: groundwork cannot converge it (on w1)"),
            "{args:?}: {err}"
        );
        assert!(!err.contains("gitops has no steps") && !err.contains("k3s-server has no steps"), "{args:?}: {err}");
        assert!(!err.contains("converged") && !err.contains("connect"), "{args:?}: {err}");
        assert!(t.elapsed().as_secs() < 10, "{args:?} took {:?}", t.elapsed());
    }
    assert!(!state.exists(), "refused before the state directory (and any connection)");
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
            common::lab::skip(&format!("cannot attach a loop device here ({other:?})"));
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
    cmd.args(["wizard", "--out"]).arg(&out).arg("--state").arg(&state).env("TERM", "xterm");
    let mut p = pty::spawn(cmd, 20_000);
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
    // This machine's preflight, then the offer to apply: declined, it names the command.
    key(&mut p, &mut seen, "Apply now", "n");
    let rest = p.exp_eof().unwrap();
    seen.push_str(&rest);
    assert!(seen.contains("wrote") && seen.contains("(mode 0600)"), "{seen}");
    assert!(seen.contains("secrets: generated"), "{seen}");
    assert!(seen.contains("preflight:"), "{seen}");
    assert!(rest.contains(&format!("not applied; when you are ready: groundwork apply {}", out.display())), "{rest}");

    let loaded = groundwork::answers::load_file(&out).unwrap_or_else(|r| panic!("{}", r.render(false))).answers;
    assert_eq!(loaded.site.internal_domain, "pty.example.org");
    assert_eq!(loaded.network.dhcp_ranges[0].start.to_string(), "10.99.0.100");
    assert_eq!(loaded.ldap.unwrap().organisation, "Pty Org");
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&out), 0o600);
    let secrets_path = state.join("secrets.toml");
    assert_eq!(mode(&secrets_path), 0o600);
    let secrets = groundwork::state::Secrets::load(&secrets_path).unwrap();
    for (table, key) in [("tsig", "ddns-key"), ("ldap", "admin"), ("postgresql", "keycloak"), ("mariadb", "nextcloud")]
    {
        let value = secrets.get(table, key).unwrap_or_else(|| panic!("no {table}.{key}"));
        assert!(!seen.contains(value), "secret {table}.{key} was echoed");
        assert!(!std::fs::read_to_string(&out).unwrap().contains(value));
    }
    let (code, _, err) = run(&["validate", out.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
}

/// A site whose one host cannot be reached (its key file does not exist): `plan --live` and
/// `apply` get as far as opening the state directory and the log, then fail that host at once.
const UNREACHABLE: &str = r#"
[site]
name = "mini"
internal-domain = "mini.example.org"
external-domain = "example.org"
admin-email = "it@example.org"

[network]
subnet = "10.99.0.0/24"
gateway = "10.99.0.1"

[[host]]
name = "h1"
address = "10.99.0.10"
ssh-key = "/nonexistent/groundwork-test-key"
roles = []
"#;

/// A temporary directory with the unreachable site's answer file in it.
fn unreachable_site() -> (tempfile::TempDir, String) {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("mini.toml");
    std::fs::write(&file, UNREACHABLE).unwrap();
    let file = file.to_str().unwrap().to_string();
    (dir, file)
}

fn mode_of(p: &std::path::Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o7777
}

fn run_in(args: &[&str], stdout: std::process::Stdio) -> (i32, String) {
    let out = groundwork().args(args).stdout(stdout).stderr(std::process::Stdio::piped()).output().unwrap();
    (out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stderr).to_string())
}

/// The write end of a pipe whose read end is already closed: every write fails with EPIPE,
/// as when `| head -c1` has gone away.
fn closed_pipe() -> std::process::Stdio {
    use std::os::fd::FromRawFd as _;
    let mut fds = [0; 2];
    // SAFETY: pipe fills two descriptors that this function then owns.
    assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
    // SAFETY: both descriptors are fresh and owned here.
    unsafe {
        drop(std::os::fd::OwnedFd::from_raw_fd(fds[0]));
        std::process::Stdio::from(std::os::fd::OwnedFd::from_raw_fd(fds[1]))
    }
}

#[test]
fn closed_or_full_standard_output_is_an_exit_code_not_a_panic() {
    let (dir, mini) = unreachable_site();
    let state = dir.path().join("state");
    let st = state.to_str().unwrap();
    // verify needs a secrets file; with no roles it checks nothing and prints an empty table
    let (code, _, err) = run(&["plan", "--live", &mini, "--state", st]);
    assert_eq!(code, 1, "{err}");
    let secrets = state.join("secrets.toml");
    std::fs::write(&secrets, "").unwrap();
    std::fs::set_permissions(&secrets, std::fs::Permissions::from_mode(0o600)).unwrap();
    let cases: &[(&[&str], i32)] = &[
        (&["plan"], 0),
        (&["plan", "--json"], 0),
        (&["validate", "wizard/examples/lab.toml"], 0),
        (&["validate", "--json", "tests/fixtures/bad/many-problems.toml"], 1),
        (&["schema"], 0),
        (&["probe"], 0),
        (&["probe", "--json"], 0),
        (&["verify", &mini, "--state", st], 0),
        (&["verify", "--json", &mini, "--state", st], 0),
        (&["forget-host", "h1", &mini, "--state", st], 0),
    ];
    for (args, code) in cases {
        let (got, err) = run_in(args, closed_pipe());
        assert!(!err.contains("panicked"), "{args:?}: {err}");
        assert_eq!(got, *code, "{args:?} into a closed pipe: a quiet exit with its own code: {err}");
        assert!(!err.contains("cannot write"), "{args:?}: {err}");

        let full = std::fs::OpenOptions::new().write(true).open("/dev/full").unwrap();
        let (got, err) = run_in(args, full.into());
        assert!(!err.contains("panicked"), "{args:?}: {err}");
        assert_eq!(got, 2, "{args:?} into /dev/full: {err}");
        assert!(err.contains("error: cannot write to standard output: No space left on device"), "{args:?}: {err}");
    }
}

#[test]
fn a_state_directory_open_to_others_is_refused_and_never_changed() {
    let (dir, mini) = unreachable_site();
    let shared = dir.path().join("shared");
    std::fs::create_dir(&shared).unwrap();
    // like /tmp: world-writable with the sticky bit
    std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o1777)).unwrap();
    let s = shared.to_str().unwrap();
    for args in [
        vec!["plan", "--live", &mini, "--state", s],
        vec!["apply", "--yes", &mini, "--state", s],
        vec!["--state", s, "apply", "--yes", &mini],
        vec!["forget-host", "h1", &mini, "--state", s],
    ] {
        let (code, _, err) = run(&args);
        assert_eq!(code, 2, "{args:?}: {err}");
        assert!(err.contains(&format!("state directory {s} is open to other users (mode 1777")), "{args:?}: {err}");
        assert!(err.contains(&format!("chmod 700 {s}")), "{err}");
        assert_eq!(mode_of(&shared), 0o1777, "{args:?} changed the mode");
        assert_eq!(std::fs::read_dir(&shared).unwrap().count(), 0, "{args:?} wrote into it");
    }
    // a missing one is made private, parents included
    let fresh = dir.path().join("new/state");
    let (code, _, err) = run(&["plan", "--live", &mini, "--state", fresh.to_str().unwrap()]);
    assert_eq!(code, 1, "the host fails, the directory is fine: {err}");
    assert_eq!(mode_of(&fresh), 0o700);
    assert_eq!(mode_of(&dir.path().join("new")), 0o700);
    assert_eq!(mode_of(&fresh.join("logs")), 0o700);
}

/// Another run (here flock(1), as a stand-in that holds the lock as long as needed) holds the
/// state directory: every command that uses it is refused at once, naming the holder.
#[test]
fn a_second_run_on_a_locked_state_directory_is_refused() {
    let (dir, mini) = unreachable_site();
    let state = dir.path().join("state");
    let st = state.to_str().unwrap();
    let (code, _, err) = run(&["plan", "--live", &mini, "--state", st]);
    assert_eq!(code, 1, "{err}");
    let secrets = state.join("secrets.toml");
    std::fs::write(&secrets, "").unwrap();
    std::fs::set_permissions(&secrets, std::fs::Permissions::from_mode(0o600)).unwrap();

    // flock(1) holds the lock itself (-o: its command does not inherit it) until its command
    // ends, which is when the test closes the command's standard input.
    let hold = |mode: &str| {
        let mut child = Command::new("flock")
            .args([mode, "-o"])
            .arg(state.join("lock"))
            .args(["sh", "-c", "echo locked; read _"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("flock(1)");
        let mut line = String::new();
        std::io::BufRead::read_line(&mut std::io::BufReader::new(child.stdout.take().unwrap()), &mut line).unwrap();
        assert_eq!(line, "locked\n");
        child
    };

    let mut writer = hold("-x");
    for args in [
        vec!["apply", "--yes", &mini, "--state", st],
        vec!["plan", "--live", &mini, "--state", st],
        vec!["verify", &mini, "--state", st],
        vec!["forget-host", "h1", &mini, "--state", st],
    ] {
        let (code, _, err) = run(&args);
        assert_eq!(code, 2, "{args:?}: {err}");
        assert!(err.contains(&format!("state directory {st} is in use by another groundwork run")), "{err}");
        assert!(err.contains(&format!("pid {}", writer.id())), "the holder is named: {err}");
    }
    drop(writer.stdin.take());
    writer.wait().unwrap();

    // readers share: a dry run goes ahead beside another reader, an apply does not
    let mut reader = hold("-s");
    let (code, _, err) = run(&["plan", "--live", &mini, "--state", st]);
    assert_eq!(code, 1, "the dry run ran (and failed its unreachable host): {err}");
    let (code, _, err) = run(&["apply", "--yes", &mini, "--state", st]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("in use by another groundwork run"), "{err}");
    drop(reader.stdin.take());
    reader.wait().unwrap();
    let (code, _, err) = run(&["apply", "--yes", &mini, "--state", st]);
    assert_eq!(code, 1, "free again: {err}");
}

#[test]
fn forget_host_removes_only_that_hosts_lines_and_warns_about_unreadable_ones() {
    let (dir, mini) = unreachable_site();
    let state = dir.path().join("state");
    let st = state.to_str().unwrap();
    // nothing recorded yet, and no state directory is made for that
    let (code, out, err) = run(&["forget-host", "h1", &mini, "--state", st]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("nothing to forget for host h1 (10.99.0.10)"), "{out}");
    assert!(!state.exists());

    let (code, _, err) = run(&["plan", "--live", &mini, "--state", st]);
    assert_eq!(code, 1, "{err}");
    let k1 = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIJdD7y3aLq454yWBdwLWbieU1ebz9/cu7/QEXn9OIeZJ";
    let k2 = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIA6rWI3G2sz07DnfFlrouTcysQlj2P+jpNSOEWD9OJ3X";
    let kh = state.join("known_hosts");
    let mut text = format!("# mine\n10.99.0.10\t{k1}\nother,10.99.0.10 {k2} keep\n").into_bytes();
    text.extend_from_slice(b"10.99.0.77 ssh-ed25519 \xff\n");
    text.extend_from_slice(format!("[10.99.0.10]:2222 {k1}\n").as_bytes());
    std::fs::write(&kh, &text).unwrap();
    std::fs::set_permissions(&kh, std::fs::Permissions::from_mode(0o600)).unwrap();

    // a run names the unreadable line and goes on
    let (code, _, err) = run(&["plan", "--live", &mini, "--state", st]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains(&format!("warning: {}:4: ", kh.display())), "{err}");

    let (code, out, err) = run(&["forget-host", "h1", &mini, "--state", st]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("forgot the recorded key(s) of host h1 (10.99.0.10)"), "{out}");
    assert!(out.contains("removed line(s) 2") && out.contains("out of line(s) 3"), "{out}");
    let mut want = format!("# mine\nother {k2} keep\n").into_bytes();
    want.extend_from_slice(b"10.99.0.77 ssh-ed25519 \xff\n");
    want.extend_from_slice(format!("[10.99.0.10]:2222 {k1}\n").as_bytes());
    assert_eq!(std::fs::read(&kh).unwrap(), want);
    assert_eq!(mode_of(&kh), 0o600);

    let (code, out, _) = run(&["forget-host", "[10.99.0.10]:2222", &mini, "--state", st]);
    assert_eq!(code, 0);
    assert!(out.contains("removed line(s) 4"), "{out}");
    let (code, out, _) = run(&["forget-host", "h2", &mini, "--state", st]);
    assert_eq!(code, 0);
    assert!(out.contains("nothing recorded for h2") && out.contains("not a host name"), "{out}");
}

fn broken_template_override(dir: &std::path::Path) -> std::path::PathBuf {
    let root = dir.join("playbooks");
    let base = root.join("base");
    std::fs::create_dir_all(base.join("templates")).unwrap();
    for f in ["role.toml", "templates/hosts.j2", "templates/sshd-hardening.conf.j2"] {
        std::fs::copy(std::path::Path::new("playbooks/base").join(f), base.join(f)).unwrap();
    }
    std::fs::write(base.join("templates/hosts.j2"), "127.0.0.1 localhost\n{% for h in hosts %}\n{{ h.name \n").unwrap();
    root
}

#[test]
fn playbooks_that_do_not_load_are_refused_before_anything_runs() {
    let (dir, mini) = unreachable_site();
    let st = dir.path().join("state");
    let st = st.to_str().unwrap();
    let pb = broken_template_override(dir.path());
    let hosts_j2 = pb.join("base/templates/hosts.j2");
    for cmd in [&["plan", "--live"][..], &["apply", "--yes"], &["plan"]] {
        let mut args = cmd.to_vec();
        args.extend(["--playbooks", pb.to_str().unwrap(), &mini, "--state", st]);
        let (code, _, err) = run(&args);
        assert_eq!(code, 2, "{args:?}: {err}");
        assert!(!err.contains("panicked"), "{err}");
        assert!(
            err.contains(&format!("{}:3: role `base`: template syntax error", hosts_j2.display())),
            "{args:?}: {err}"
        );
    }
    let empty = dir.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    for (p, want) in [
        ("/nonexistent/playbooks", "/nonexistent/playbooks: no such directory"),
        (empty.to_str().unwrap(), "no role folder in it"),
    ] {
        for cmd in [&["plan", "--live"][..], &["apply", "--yes"], &["plan"]] {
            let mut args = cmd.to_vec();
            args.extend(["--playbooks", p, &mini, "--state", st]);
            let (code, _, err) = run(&args);
            assert_eq!(code, 2, "{args:?}: {err}");
            assert!(err.contains(want), "{args:?}: {err}");
        }
    }
    assert!(!std::path::Path::new(st).exists(), "refused before the state directory is made");
}

#[test]
fn help_documents_the_options_and_state_only_where_it_applies() {
    let help = |args: &[&str]| {
        let (code, out, err) = run(args);
        assert_eq!(code, 0, "{err}");
        out
    };
    assert!(!help(&["--help"]).contains("--state"));
    for c in ["validate", "schema", "probe"] {
        assert!(!help(&[c, "--help"]).contains("--state"), "{c}");
    }
    for c in ["wizard", "plan", "apply", "verify", "forget-host", "rotate", "confirm"] {
        let h = help(&[c, "--help"]);
        assert!(h.contains("--state <DIR>") && h.contains("created with mode 0700"), "{c}: {h}");
    }
    assert!(help(&["validate", "--help"]).contains("Answer files to check"));
    for c in ["validate", "probe", "plan", "verify", "apply", "rotate", "confirm"] {
        let h = help(&[c, "--help"]);
        let line = h.lines().find(|l| l.contains("--json")).unwrap_or_default().to_string();
        assert!(line.trim().len() > "--json".len() + 4, "{c}: --json is undocumented: {h}");
    }
    assert!(help(&["wizard", "--help"]).contains("Where to write the answer file"));
    let (code, _, err) = run(&["--state", "/tmp", "validate", "wizard/examples/lab.toml"]);
    assert_eq!(code, 2);
    assert!(err.contains("--state does nothing for `groundwork validate`"), "{err}");
}

#[test]
fn run_logs_are_kept_for_the_last_runs_only() {
    let (dir, mini) = unreachable_site();
    let state = dir.path().join("state");
    let st = state.to_str().unwrap();
    let (code, _, err) = run(&["plan", "--live", &mini, "--state", st]);
    assert_eq!(code, 1, "{err}");
    let logs = state.join("logs");
    for i in 0..30 {
        std::fs::write(logs.join(format!("20000101T0000{i:02}Z-0000.log")), "old").unwrap();
    }
    let (code, _, err) = run(&["plan", "--live", &mini, "--state", st]);
    assert_eq!(code, 1, "{err}");
    let mut names: Vec<String> =
        std::fs::read_dir(&logs).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    names.sort();
    assert_eq!(names.len(), groundwork::state::KEEP_LOGS, "{names:?}");
    // the two runs' own logs are the newest and stay; the oldest went
    assert!(!names.contains(&"20000101T000011Z-0000.log".to_string()), "{names:?}");
    assert!(names.contains(&"20000101T000012Z-0000.log".to_string()), "{names:?}");
    assert_eq!(names.iter().filter(|n| !n.starts_with("2000")).count(), 2, "{names:?}");
}

#[test]
fn kubeconfig_prints_the_path_once_apply_fetched_it() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let s = state.to_str().unwrap();
    let (code, out, err) = run(&["kubeconfig", "wizard/examples/single-server.toml", "--state", s]);
    assert_eq!((code, out.as_str()), (1, ""), "{err}");
    assert!(err.contains("does not exist yet: `groundwork apply` fetches it once the cluster is up"), "{err}");
    std::fs::create_dir_all(&state).unwrap();
    std::fs::write(state.join("kubeconfig"), "apiVersion: v1\n").unwrap();
    let (code, out, err) = run(&["kubeconfig", "wizard/examples/single-server.toml", "--state", s]);
    assert_eq!((code, out.trim()), (0, state.join("kubeconfig").to_str().unwrap()), "{err}");
    let (code, _, err) = run(&["kubeconfig", "wizard/examples/lab.toml", "--state", s]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("no [k3s] section"), "{err}");
}

#[test]
fn k3s_without_an_airgap_bundle_is_refused_before_anything_connects() {
    let dir = tempfile::tempdir().unwrap();
    let text = std::fs::read_to_string("wizard/examples/single-server.toml").unwrap();
    // Without the bundle (and without [gitops], the last section, which needs it too).
    let text = &text[..text.find("[gitops]").unwrap()];
    let text: String = text.lines().filter(|l| !l.starts_with("airgap-bundle")).map(|l| format!("{l}\n")).collect();
    let file = dir.path().join("nobundle.toml");
    std::fs::write(&file, text).unwrap();
    let state = dir.path().join("state");
    for cmd in [&["apply", "--yes"][..], &["plan", "--live"]] {
        let mut args = cmd.to_vec();
        args.extend([file.to_str().unwrap(), "--state", state.to_str().unwrap()]);
        let (code, _, err) = run(&args);
        assert_eq!(code, 2, "{args:?}: {err}");
        assert!(err.contains("the k3s roles install from an air-gap bundle: set [k3s] airgap-bundle"), "{err}");
        assert!(err.contains("nothing was connected"), "{err}");
    }
    assert!(!state.exists());
}

#[test]
fn bundle_debs_names_the_answer_file_line_and_field_of_garbage_and_makes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("bundle");
    let cases: &[(&str, &[u8], &str)] = &[
        ("syntax.toml", b"vm\n", ":1:3: TOML syntax"),
        ("field.toml", b"[site]\nname = 3\n", ":1:1: site.internal-domain: required key"),
        ("bytes.toml", b"\xff\xfe\x00garbage", "bytes.toml"),
    ];
    for (name, text, want) in cases {
        let file = dir.path().join(name);
        std::fs::write(&file, text).unwrap();
        let (code, _, err) = run(&["bundle", "--debs", file.to_str().unwrap(), "--out", out.to_str().unwrap()]);
        assert_eq!(code, 1, "{name}: {err}");
        assert!(err.contains(want) && !err.contains("panicked"), "{name}: {err}");
        assert!(!out.join("manifest.json").exists() && !out.join("debs").exists(), "{name}: made something");
    }
}

#[test]
fn reset_and_drift_refuse_before_connecting() {
    let (dir, mini) = unreachable_site();
    let st = dir.path().join("state");
    let st = st.to_str().unwrap();
    // No terminal to ask at and no --yes: refused before anything connects or changes.
    let (code, _, err) = run(&["reset", &mini, "--state", st]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("there is no terminal to ask at; nothing was changed (add --yes"), "{err}");
    let (code, _, err) = run(&["reset", "--dry-run", &mini, "--host", "h9", "--state", st]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("--host h9: no such host in the answer file"), "{err}");
    let (code, _, err) = run(&["reset", "--dry-run", &mini, "--role", "dns", "--state", st]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("--role dns: no host of the answer file has this role"), "{err}");
    let (code, _, err) = run(&["drift", &mini, "--host", "h9", "--state", st]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("--host h9: no such host"), "{err}");
    for c in ["reset", "drift"] {
        let (code, out, _) = run(&[c, "--help"]);
        assert_eq!(code, 0);
        assert!(out.contains("--state <DIR>") && out.contains("--json"), "{c}: {out}");
    }
}
