//! The engine end to end, on real lab hosts (systemd, sshd, apt): `apply` converges the base
//! role on four hosts (one through a sudo user), a second apply changes nothing, a template
//! that fails its validator leaves the live file alone, a connection cut mid-run is resumed,
//! and a changed host key is refused. Skipped with `SKIPPED:` where the lab cannot run; a
//! failure under CI=true.

mod common;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use common::lab;
use common::run::{self, Run, fresh, on};
use serde_json::Value;

const HOSTS: &[(&str, &str)] =
    &[("b1", "10.77.0.21"), ("b2", "10.77.0.22"), ("b3", "10.77.0.23"), ("b4", "10.77.0.24")];
const ANSWERS: &str = "tests/fixtures/lab/base.toml";

fn apply(state: &Path, extra: &[&str]) -> Run {
    run::apply(ANSWERS, state, extra)
}

/// A copy of the embedded base role in `dir/base`, changed by `edit`.
fn base_override(dir: &Path, edit: impl FnOnce(&Path)) -> PathBuf {
    let root = dir.join("playbooks");
    let base = root.join("base");
    std::fs::create_dir_all(base.join("templates")).unwrap();
    for f in ["role.toml", "templates/hosts.j2", "templates/sshd-hardening.conf.j2"] {
        std::fs::copy(Path::new("playbooks/base").join(f), base.join(f)).unwrap();
    }
    edit(&base);
    root
}

/// The base role with `steps` (TOML) appended; the `--playbooks` argument for it.
fn base_with_steps(dir: &Path, steps: &str) -> String {
    let root = base_override(dir, |base| {
        let p = base.join("role.toml");
        std::fs::write(&p, std::fs::read_to_string(&p).unwrap() + "\n" + steps).unwrap();
    });
    root.to_str().unwrap().to_string()
}

#[test]
fn base_converges_on_four_hosts_then_a_second_apply_changes_nothing() {
    let Some(_lab) = lab::exclusive(HOSTS) else { return };
    fresh(HOSTS);
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");

    let first = apply(&state, &[]);
    assert_eq!(first.code, 0, "{}", first.all_text());
    for (h, _) in HOSTS {
        assert!(first.changed(h) >= 4, "{h} changed {}: {}", first.changed(h), first.all_text());
        assert_eq!(first.failed(h), 0);
    }
    // What a client of the host sees.
    for (h, _) in HOSTS {
        let hosts = on(h, "cat /etc/hosts");
        assert!(hosts.contains("10.77.0.23\tb3.base.groundwork.test\tb3"), "{h}: {hosts}");
        assert_eq!(on(h, "readlink /etc/localtime").trim(), "/usr/share/zoneinfo/Europe/Berlin");
        assert!(on(h, "dpkg-query -W -f='${Status}' chrony").contains("install ok installed"));
        let sshd = on(h, "/usr/sbin/sshd -T | grep -i '^passwordauthentication'");
        assert_eq!(sshd.trim(), "passwordauthentication no", "{h}");
        assert_eq!(on(h, "systemctl is-active ssh").trim(), "active");
    }
    // b2 is reached as `ops` through sudo: the files are root's all the same.
    assert_eq!(on("b2", "stat -c %U /etc/ssh/sshd_config.d/50-groundwork.conf").trim(), "root");
    // The replaced /etc/hosts is kept under its own name (`/` escaped), one backup.
    let backups = on("b1", "ls /var/backups/groundwork");
    let stamped =
        |l: &&str| l.strip_prefix("%2Fetc%2Fhosts.").is_some_and(|r| r.starts_with(|c: char| c.is_ascii_digit()));
    assert_eq!(backups.lines().filter(stamped).count(), 1, "{backups}");
    // The ledger keeps the file as it was found (for reset) and what groundwork wrote (drift).
    assert!(
        backups.lines().any(|l| l == "%2Fetc%2Fhosts.orig") && backups.contains("%2Fetc%2Fhosts.wrote"),
        "{backups}"
    );

    let second = apply(&state, &[]);
    assert_eq!(second.code, 0, "{}", second.all_text());
    for (h, _) in HOSTS {
        assert_eq!(second.changed(h), 0, "{h}: {}", second.all_text());
    }
    assert!(state.join("known_hosts").exists());
    let log = std::fs::read_dir(state.join("logs")).unwrap().count();
    assert_eq!(log, 2, "one log file per run");
    eprintln!("FIGURES: first converge of base on 4 hosts {:.2} s; no-op re-run {:.2} s", first.secs, second.secs);
}

#[test]
fn a_template_that_fails_its_validator_leaves_the_live_file_untouched() {
    let hosts = &HOSTS[..1];
    let Some(_lab) = lab::exclusive(hosts) else { return };
    fresh(hosts);
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let good = apply(&state, &["--host", "b1"]);
    assert_eq!(good.code, 0, "{}", good.all_text());
    let live = "/etc/ssh/sshd_config.d/50-groundwork.conf";
    let before = on("b1", &format!("sha256sum {live}"));

    let broken = base_override(dir.path(), |base| {
        let t = base.join("templates/sshd-hardening.conf.j2");
        let mut text = std::fs::read_to_string(&t).unwrap();
        text.push_str("PermitRootLogin sometimes\n");
        std::fs::write(t, text).unwrap();
    });
    let run = apply(&state, &["--host", "b1", "--playbooks", broken.to_str().unwrap()]);
    assert_eq!(run.code, 1, "{}", run.all_text());
    let step = run.step("b1", "ssh hardening").expect("the step ran");
    assert_eq!(step["status"], "failed");
    let detail = step["detail"].as_str().unwrap();
    assert!(detail.contains("refused the new /etc/ssh/sshd_config.d/50-groundwork.conf"), "{detail}");
    assert!(detail.contains("live file is unchanged"), "{detail}");
    assert!(detail.contains("unsupported option \"sometimes\""), "the validator's words: {detail}");
    // --json consumers match on the failure's fields, not its words.
    let failure = &run.finished()["hosts"]["b1"]["failure"];
    assert_eq!(failure["phase"], "step", "{failure}");
    assert_eq!((failure["role"].as_str(), failure["step"].as_str()), (Some("base"), Some("ssh hardening")));
    assert!(failure["cause"].as_str().unwrap_or("").contains("refused the new"), "{failure}");
    assert_eq!(on("b1", &format!("sha256sum {live}")), before, "live file changed");
    assert_eq!(on("b1", "ls -a /etc/ssh/sshd_config.d/ | grep -c groundwork-new || true").trim(), "0");
    assert_eq!(on("b1", "systemctl is-active ssh").trim(), "active");
    // The good role still converges afterwards.
    let again = apply(&state, &["--host", "b1"]);
    assert_eq!(again.code, 0, "{}", again.all_text());
    assert_eq!(again.changed("b1"), 0);
}

#[test]
fn a_connection_cut_mid_run_is_resumed_and_the_pending_reload_happens() {
    let hosts = &HOSTS[2..3];
    let Some(_lab) = lab::exclusive(hosts) else { return };
    fresh(hosts);
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    // A slow step between the sshd drop-in (which notifies ssh) and the ssh service step:
    // cutting the connection there leaves a changed file whose reload has not happened.
    let playbooks = base_override(dir.path(), |base| {
        let p = base.join("role.toml");
        let text = std::fs::read_to_string(&p).unwrap();
        let slow = "[[step]]\nname = \"slow marker\"\ncommand = \"sleep 6 && touch /var/tmp/gw-slow\"\ncreates = \"/var/tmp/gw-slow\"\n\n";
        let text = text.replacen("[[step]]\nname = \"sshd\"", &format!("{slow}[[step]]\nname = \"sshd\""), 1);
        assert!(text.contains("slow marker"));
        std::fs::write(p, text).unwrap();
    });
    let pb = playbooks.to_str().unwrap().to_string();

    let mut child = Command::new(env!("CARGO_BIN_EXE_groundwork"))
        .args(["apply", "--yes", "--json", ANSWERS, "--host", "b3", "--playbooks", &pb])
        .arg("--state")
        .arg(&state)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = BufReader::new(child.stdout.take().unwrap());
    let mut seen = Vec::new();
    let mut cut = false;
    for line in stdout.lines() {
        let line = line.unwrap();
        let v: Value = serde_json::from_str(&line).unwrap_or(Value::Null);
        if !cut && v["event"] == "step-started" && v["step"] == "slow marker" {
            std::thread::sleep(std::time::Duration::from_millis(500));
            // Kill the host's side of our SSH connection (nsenter: not through SSH itself).
            on("b3", "pkill -f '[s]shd: root@notty' || true");
            cut = true;
        }
        seen.push(v);
    }
    let status = child.wait().unwrap();
    assert!(cut, "never reached the slow step: {seen:?}");
    assert_eq!(status.code(), Some(1), "the cut run fails: {seen:?}");
    let finished = seen.iter().rev().find(|e| e["event"] == "run-finished").unwrap();
    let err = finished["hosts"]["b3"]["error"].as_str().unwrap_or("");
    assert!(err.contains("b3"), "the error names the host: {err}");
    assert_eq!(on("b3", "test -e /var/tmp/gw-slow && echo yes || echo no").trim(), "no");

    let resumed = apply(&state, &["--host", "b3", "--playbooks", &pb]);
    assert_eq!(resumed.code, 0, "{}", resumed.all_text());
    assert!(resumed.all_text().contains("resuming run"), "{}", resumed.all_text());
    let skipped = resumed.step("b3", "hosts file").unwrap();
    assert_eq!(skipped["status"], "skipped", "done before the cut: {skipped}");
    assert_eq!(resumed.step("b3", "slow marker").unwrap()["status"], "changed");
    let sshd = resumed.step("b3", "sshd").unwrap();
    assert_eq!(sshd["status"], "changed", "the reload left pending by the cut: {sshd}");
    assert!(sshd["detail"].as_str().unwrap().contains("reload"), "{sshd}");
    assert_eq!(on("b3", "test -e /var/tmp/gw-slow && echo yes || echo no").trim(), "yes");

    let third = apply(&state, &["--host", "b3", "--playbooks", &pb]);
    assert_eq!(third.code, 0, "{}", third.all_text());
    assert_eq!(third.changed("b3"), 0, "{}", third.all_text());
    assert!(!third.all_text().contains("resuming run"));
}

#[test]
fn a_changed_host_key_is_refused() {
    let hosts = &HOSTS[3..4];
    let Some(_lab) = lab::exclusive(hosts) else { return };
    fresh(hosts);
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let first = apply(&state, &["--host", "b4"]);
    assert_eq!(first.code, 0, "{}", first.all_text());
    let recorded = std::fs::read_to_string(state.join("known_hosts")).unwrap();

    fresh(hosts); // same address, new machine, new host key
    let run = apply(&state, &["--host", "b4"]);
    assert_eq!(run.code, 1, "{}", run.all_text());
    let err = run.error("b4");
    let kh = state.join("known_hosts");
    assert!(err.contains("b4") && err.contains("10.77.0.24"), "{err}");
    assert!(err.contains(&kh.display().to_string()) && err.contains("line 1"), "{err}");
    assert_eq!(std::fs::read_to_string(&kh).unwrap(), recorded, "known_hosts is not rewritten");
    assert!(run.step("b4", "hosts file").is_none(), "nothing ran on the impostor");
}

/// Sends SIGINT to `child`.
fn interrupt(child: &std::process::Child) {
    // SAFETY: kill(2) on a child we started and have not reaped.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
}

/// Waits for `child` up to `limit`; its exit code, or None if it still runs.
fn exited_within(child: &mut std::process::Child, limit: std::time::Duration) -> Option<i32> {
    let t = std::time::Instant::now();
    while t.elapsed() < limit {
        if let Some(s) = child.try_wait().unwrap() {
            return Some(s.code().unwrap_or(-1));
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    None
}

/// Starts an apply of `--host h` and returns it once `step` has started on it.
fn apply_until_step(state: &Path, pb: &str, h: &str, step: &str) -> std::process::Child {
    let mut child = Command::new(env!("CARGO_BIN_EXE_groundwork"))
        .args(["apply", "--yes", "--json", ANSWERS, "--host", h, "--playbooks", pb])
        .arg("--state")
        .arg(state)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    loop {
        line.clear();
        assert!(stdout.read_line(&mut line).unwrap() > 0, "the run ended before `{step}`");
        let v: Value = serde_json::from_str(&line).unwrap_or(Value::Null);
        if v["event"] == "step-started" && v["step"] == step {
            break;
        }
    }
    // Keep draining the events so the run never blocks on a full pipe.
    std::thread::spawn(move || for _ in stdout.lines() {});
    child
}

#[test]
fn ctrl_c_stops_waits_at_once_lets_a_change_finish_and_a_second_one_aborts() {
    let hosts = &HOSTS[0..1];
    let Some(_lab) = lab::exclusive(hosts) else { return };
    fresh(hosts);
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let pb = base_with_steps(
        dir.path(),
        "[[step]]\nname = \"slow change\"\ncommand = \"sleep 6 && touch /var/tmp/gw-slow\"\ncreates = \"/var/tmp/gw-slow\"\n\n\
         [[step]]\nname = \"endless wait\"\nwait = { command = \"test -e /var/tmp/never\" }\ntimeout = 300\n",
    );

    // During a change: the first Ctrl-C is acknowledged and the command goes on; the second aborts.
    let mut child = apply_until_step(&state, &pb, "b1", "slow change");
    std::thread::sleep(std::time::Duration::from_millis(500));
    interrupt(&child);
    assert_eq!(exited_within(&mut child, std::time::Duration::from_secs(2)), None, "the change is let finish");
    interrupt(&child);
    let code = exited_within(&mut child, std::time::Duration::from_secs(3));
    assert_eq!(code, Some(130), "a second Ctrl-C aborts at once");
    let mut err = String::new();
    std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut err).unwrap();
    assert!(err.contains("interrupted: stopping after the commands") && err.contains("aborted"), "{err}");

    // During a wait: one Ctrl-C stops the run within a second or two; the journal says where.
    let mut child = apply_until_step(&state, &pb, "b1", "endless wait");
    std::thread::sleep(std::time::Duration::from_millis(300));
    let t = std::time::Instant::now();
    interrupt(&child);
    let code = exited_within(&mut child, std::time::Duration::from_secs(5));
    assert_eq!(code, Some(1), "an interrupted run stops, and fails");
    eprintln!("Ctrl-C during a wait: the run stopped in {} ms", t.elapsed().as_millis());
    let journal = std::fs::read_to_string(state.join("journal.jsonl")).unwrap();
    assert!(journal.contains("\"step\":\"slow change\",\"status\":\"changed\""), "{journal}");
    assert!(!journal.contains("\"ok\":true"), "{journal}");
}

#[test]
fn a_rebuilt_host_is_not_resumed_as_the_old_machine() {
    let hosts = &HOSTS[1..2];
    let Some(_lab) = lab::exclusive(hosts) else { return };
    fresh(hosts);
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let pb = base_with_steps(
        dir.path(),
        "[[step]]\nname = \"fails once\"\ncommand = \"touch /var/tmp/gw-second; exit 1\"\ncreates = \"/var/tmp/gw-second\"\n",
    );
    let failed = apply(&state, &["--host", "b2", "--playbooks", &pb]);
    assert_eq!(failed.code, 1, "{}", failed.all_text());
    assert_eq!(failed.step("b2", "hosts file").unwrap()["status"], "changed");

    // Same name and address, a new machine: its key is forgotten on purpose, the journal is not.
    fresh(hosts);
    std::fs::remove_file(state.join("known_hosts")).unwrap();
    let next = apply(&state, &["--host", "b2", "--playbooks", &pb]);
    assert!(next.all_text().contains("is not the machine run"), "{}", next.all_text());
    assert_eq!(next.step("b2", "hosts file").unwrap()["status"], "changed", "checked again, not skipped");
    assert_eq!(next.code, 1, "the step that fails once fails again on the new machine");
    let third = apply(&state, &["--host", "b2", "--playbooks", &pb]);
    assert_eq!(third.code, 0, "{}", third.all_text());
    assert!(third.all_text().contains("resuming run"), "{}", third.all_text());
    assert_eq!(third.step("b2", "hosts file").unwrap()["status"], "skipped", "same machine now: resumed");
}

#[test]
fn a_package_transaction_waits_for_another_and_says_so() {
    let hosts = &HOSTS[0..1];
    let Some(_lab) = lab::exclusive(hosts) else { return };
    fresh(hosts);
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    // Another transaction (an orphan of a killed run) holds the lock for 13 s.
    on("b1", "setsid flock /run/lock/groundwork-packages.lock sleep 13 >/dev/null 2>&1 < /dev/null & sleep 0.3");
    let run = apply(&state, &["--host", "b1"]);
    assert_eq!(run.code, 0, "{}", run.all_text());
    let parts: Vec<&str> = run
        .events
        .iter()
        .filter(|e| e["event"] == "progress" && e["host"] == "b1")
        .filter_map(|e| e["text"].as_str())
        .collect();
    assert!(parts.iter().any(|p| p.starts_with("waiting for another package transaction (10 s)")), "{parts:?}");
    assert!(parts.contains(&"install") && parts.last() == Some(&"done"), "{parts:?}");
    assert!(run.secs > 12.0, "it waited: {:.1} s", run.secs);
}

/// A 100 MiB local file: the first apply streams it (sha256 checked on the host before it
/// replaces anything), the second sends nothing, and a changed local file is sent again.
#[test]
fn a_big_local_file_is_streamed_once_and_skipped_while_its_sha256_matches() {
    let hosts = &HOSTS[..1];
    let Some(_lab) = lab::exclusive(hosts) else { return };
    fresh(hosts);
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    // Incompressible bytes (xorshift), so the transport's compression cannot flatter the rate.
    let blob = dir.path().join("bundle.bin");
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let bytes: Vec<u8> = (0..100usize << 20)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    std::fs::write(&blob, &bytes).unwrap();
    let sha = |b: &[u8]| -> String {
        use sha2::{Digest, Sha256};
        Sha256::digest(b).iter().map(|x| format!("{x:02x}")).collect()
    };
    let dest = "/var/tmp/groundwork-bundle.bin";
    let pb = base_with_steps(
        dir.path(),
        &format!("[[step]]\nname = \"bundle\"\ndest = \"{dest}\"\nupload = \"{}\"\nmode = \"0640\"\n", blob.display()),
    );
    let args = ["--host", "b1", "--playbooks", pb.as_str()];
    let remote_sha = || on("b1", &format!("sha256sum {dest} | cut -d' ' -f1")).trim().to_string();

    let first = apply(&state, &args);
    assert_eq!(first.code, 0, "{}", first.all_text());
    let step = first.step("b1", "bundle").expect("the upload step");
    assert_eq!(step["status"], "changed", "{step}");
    let ms = step["ms"].as_f64().unwrap().max(1.0);
    eprintln!("upload of 100 MiB: {:.2} s, {:.1} MiB/s", ms / 1000.0, 100.0 / (ms / 1000.0));
    assert_eq!(remote_sha(), sha(&bytes));
    assert_eq!(on("b1", &format!("stat -c %a {dest}")).trim(), "640");

    let second = apply(&state, &args);
    assert_eq!(second.code, 0, "{}", second.all_text());
    assert_eq!(second.step("b1", "bundle").unwrap()["status"], "ok");
    assert_eq!(second.changed("b1"), 0, "{}", second.all_text());
    eprintln!("second apply (nothing sent): {:.2} s", second.secs);

    let first_sha = sha(&bytes);
    let mut changed = bytes;
    changed[50 << 20] ^= 0xff;
    std::fs::write(&blob, &changed).unwrap();
    let third = apply(&state, &args);
    assert_eq!(third.code, 0, "{}", third.all_text());
    assert_eq!(third.step("b1", "bundle").unwrap()["status"], "changed");
    assert_eq!(remote_sha(), sha(&changed));
    // One earlier version is kept (an upload keeps one), and it is the first.
    let kept =
        on("b1", "sha256sum /var/backups/groundwork/%2Fvar%2Ftmp%2Fgroundwork-bundle.bin.[0-9]* | cut -d' ' -f1");
    assert_eq!(kept.trim(), first_sha, "{kept}");
    on("b1", &format!("rm -f {dest} /var/backups/groundwork/%2Fvar%2Ftmp%2Fgroundwork-bundle.bin.*"));
}
