//! `groundwork::ssh` against a real lab host (`ssh1` = 10.77.0.31, see tests/lab/README.md).
//! Skipped (with `SKIPPED:` on stderr) when the lab cannot run here; a failure under `CI=true`.

mod common;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::lab;
use groundwork::ssh::{Session, SshError, SshOptions, Target};
use sha2::{Digest, Sha256};

const HOST: (&str, &str) = ("ssh1", "10.77.0.31");

fn target(user: &str) -> Target {
    Target {
        name: HOST.0.into(),
        address: HOST.1.into(),
        port: 22,
        user: user.into(),
        key_path: lab::key(),
        local: false,
    }
}

fn opts(dir: &Path) -> SshOptions {
    SshOptions { known_hosts: dir.join("state/known_hosts"), ..SshOptions::default() }
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap()
}

async fn connect(t: &Target, o: &SshOptions) -> Session {
    let started = Instant::now();
    let s = Session::connect(t, o).await.unwrap_or_else(|e| panic!("connect as {}: {e}", t.user));
    eprintln!("connect as {} in {} ms", t.user, started.elapsed().as_millis());
    s
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Deterministic binary data covering every byte value.
fn noise(len: usize) -> Vec<u8> {
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

fn keygen(path: &Path, kind: &str, passphrase: &str) {
    let st = std::process::Command::new("ssh-keygen")
        .args(["-q", "-t", kind, "-N", passphrase, "-C", "groundwork-test", "-f"])
        .arg(path)
        .status()
        .expect("ssh-keygen");
    assert!(st.success());
}

#[test]
fn root_exec_keeps_streams_apart() {
    let Some(_lab) = lab::exclusive(&[HOST]) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    rt().block_on(async {
        let s = connect(&target("root"), &opts(dir.path())).await;
        assert_eq!(s.target().name, "ssh1");
        let out = s.exec("echo out; echo err >&2; exit 3", None).await.unwrap();
        assert_eq!(out.stdout_str(), "out\n");
        assert_eq!(out.stderr_str(), "err\n");
        assert_eq!(out.status, 3);
        assert!(!out.ok());
        assert!(s.exec("true", None).await.unwrap().ok());
        // killed by a signal: 128 + n
        assert_eq!(s.exec("kill -TERM $$", None).await.unwrap().status, 143);
        // the fingerprint is the one ssh-keygen prints for the host's ed25519 key
        let fp = s.exec("ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub", None).await.unwrap();
        assert!(fp.ok(), "{}", fp.stderr_str());
        assert!(s.host_key_fingerprint().starts_with("SHA256:"));
        assert_eq!(fp.stdout_str().split_whitespace().nth(1), Some(s.host_key_fingerprint()), "{}", fp.stdout_str());
        s.close().await;
    });
}

#[test]
fn stdin_round_trip_of_one_mib() {
    let Some(_lab) = lab::exclusive(&[HOST]) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    rt().block_on(async {
        let s = connect(&target("root"), &opts(dir.path())).await;
        let data = noise(1 << 20);
        let started = Instant::now();
        let out = s.exec("cat", Some(&data)).await.unwrap();
        eprintln!("1 MiB through cat in {} ms", started.elapsed().as_millis());
        assert!(out.ok(), "{}", out.stderr_str());
        assert_eq!(out.stdout.len(), data.len());
        assert_eq!(hex(&Sha256::digest(&out.stdout)), hex(&Sha256::digest(&data)));
        // a command that does not read its stdin still finishes
        let out = s.exec("echo done", Some(&data)).await.unwrap();
        assert_eq!(out.stdout_str(), "done\n");
        s.close().await;
    });
}

#[test]
fn upload_then_sha256sum() {
    let Some(_lab) = lab::exclusive(&[HOST]) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    rt().block_on(async {
        let s = connect(&target("root"), &opts(dir.path())).await;
        let data = noise(300_000);
        let path = "/root/it's an upload.bin";
        s.upload(path, &data).await.unwrap();
        let out = s
            .exec("cd /root && sha256sum \"it's an upload.bin\" && stat -c '%a %U' \"it's an upload.bin\"", None)
            .await
            .unwrap();
        assert!(out.ok(), "{}", out.stderr_str());
        let text = out.stdout_str();
        let mut lines = text.lines();
        assert_eq!(lines.next().unwrap().split_whitespace().next(), Some(hex(&Sha256::digest(&data)).as_str()));
        assert_eq!(lines.next(), Some("600 root"));
        // a failed upload names the host and the path
        let err = s.upload("/nonexistent/dir/f", b"x").await.unwrap_err();
        let msg = err.to_string();
        assert!(matches!(err, SshError::Upload { .. }), "{msg}");
        assert!(msg.contains("ssh1") && msg.contains("/nonexistent/dir/f"), "{msg}");
        s.close().await;
    });
}

#[test]
fn two_hundred_execs_on_one_session() {
    let Some(_lab) = lab::exclusive(&[HOST]) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    rt().block_on(async {
        let s = connect(&target("root"), &opts(dir.path())).await;
        let started = Instant::now();
        for i in 0..200 {
            let out = s.exec(&format!("echo {i}"), None).await.unwrap();
            assert_eq!(out.stdout_str(), format!("{i}\n"));
        }
        let mean = started.elapsed().as_secs_f64() * 1000.0 / 200.0;
        eprintln!("200 sequential execs on one session: mean {mean:.2} ms per exec");

        // the session is Send + Sync: concurrent execs from tokio tasks
        let s = Arc::new(s);
        let tasks: Vec<_> = (0..8)
            .map(|i| {
                let s = s.clone();
                tokio::spawn(async move { s.exec(&format!("sleep 0.2; echo {i}"), None).await })
            })
            .collect();
        for (i, t) in tasks.into_iter().enumerate() {
            assert_eq!(t.await.unwrap().unwrap().stdout_str(), format!("{i}\n"));
        }
        Arc::into_inner(s).unwrap().close().await;
    });
}

#[test]
fn ops_runs_as_root_through_sudo() {
    let Some(_lab) = lab::exclusive(&[HOST]) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    rt().block_on(async {
        // A host whose name does not resolve: sudo warns before it runs anything.
        let root = connect(&target("root"), &opts(dir.path())).await;
        assert!(root.exec("hostname ssh1-unresolvable", None).await.unwrap().ok());
        let s = connect(&target("ops"), &opts(dir.path())).await;
        // The first command also proves sudo; its mark never reaches the caller, sudo's
        // warning does.
        let out = s.exec("id -u; echo own >&2", None).await.unwrap();
        assert!(root.exec("hostname ssh1", None).await.unwrap().ok());
        assert_eq!(out.stdout_str(), "0\n", "{}", out.stderr_str());
        let err = out.stderr_str();
        assert!(err.starts_with("sudo: unable to resolve host ssh1-unresolvable") && err.ends_with("\nown\n"), "{err}");
        assert!(!err.contains("groundwork: sudo ok"), "{err}");
        root.close().await;
        // quoting survives the sudo wrapper
        let out = s.exec("printf '%s|%s\\n' \"it's\" '$HOME'; exit 4", None).await.unwrap();
        assert_eq!(out.stdout_str(), "it's|$HOME\n", "{}", out.stderr_str());
        assert_eq!(out.status, 4);
        let out = s.exec("cat", Some(b"through sudo")).await.unwrap();
        assert_eq!(out.stdout_str(), "through sudo");
        s.upload("/root/from-ops", b"secret").await.unwrap();
        let out = s.exec("stat -c '%a %U' /root/from-ops", None).await.unwrap();
        assert_eq!(out.stdout_str(), "600 root\n");
        s.close().await;
    });
}

#[test]
fn user_without_sudo_fails_fast_with_a_clear_error() {
    let Some(_lab) = lab::exclusive(&[HOST]) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let pubkey = std::fs::read(lab::key().with_extension("pub")).unwrap();
    rt().block_on(async {
        let root = connect(&target("root"), &opts(dir.path())).await;
        let out = root
            .exec(
                "id nosudo >/dev/null 2>&1 || useradd -m -s /bin/sh nosudo; usermod -p '*' nosudo \
                 && install -d -m 700 -o nosudo -g nosudo /home/nosudo/.ssh",
                None,
            )
            .await
            .unwrap();
        assert!(out.ok(), "{}", out.stderr_str());
        root.upload("/home/nosudo/.ssh/authorized_keys", &pubkey).await.unwrap();
        let out = root.exec("chown nosudo: /home/nosudo/.ssh/authorized_keys", None).await.unwrap();
        assert!(out.ok(), "{}", out.stderr_str());

        // No extra round trip at connect: the first command finds sudo refused, and says so.
        let started = Instant::now();
        let s = Session::connect(&target("nosudo"), &opts(dir.path())).await.unwrap();
        let err = s.exec("true", None).await.unwrap_err();
        eprintln!("sudo refusal reported in {} ms", started.elapsed().as_millis());
        let msg = err.to_string();
        eprintln!("{msg}");
        assert!(matches!(err, SshError::NoSudo { .. }), "{msg}");
        assert!(msg.contains("host ssh1 (10.77.0.31)"), "{msg}");
        assert!(msg.contains("user nosudo cannot run sudo without a password (sudo said: "), "{msg}");
        assert!(msg.contains("groundwork needs root or passwordless sudo"), "{msg}");
        root.close().await;
    });
}

#[test]
fn first_contact_learns_the_key_once() {
    let Some(_lab) = lab::exclusive(&[HOST]) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let o = opts(dir.path());
    rt().block_on(async {
        assert!(!o.known_hosts.exists());
        let s = connect(&target("root"), &o).await;
        assert!(s.first_contact());
        let fp = s.host_key_fingerprint().to_string();
        s.close().await;
        let text = std::fs::read_to_string(&o.known_hosts).unwrap();
        assert!(text.starts_with("10.77.0.31 ssh-ed25519 "), "{text}");
        assert_eq!(text.lines().count(), 1, "{text}");
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&o.known_hosts).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);

        let s = connect(&target("ops"), &o).await;
        assert!(!s.first_contact());
        assert_eq!(s.host_key_fingerprint(), fp);
        s.close().await;
        assert_eq!(std::fs::read_to_string(&o.known_hosts).unwrap(), text);
    });
}

#[test]
fn changed_host_key_is_refused() {
    let Some(_lab) = lab::exclusive(&[HOST]) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let o = opts(dir.path());
    let rt = rt();
    rt.block_on(async {
        let s = connect(&target("root"), &o).await;
        assert!(s.first_contact());
        s.close().await;
    });
    // a reinstalled host: every `up` gives it new host keys
    lab::down(&[HOST.0]);
    lab::up(&[HOST]).unwrap();
    let before = std::fs::read_to_string(&o.known_hosts).unwrap();
    rt.block_on(async {
        let err = Session::connect(&target("root"), &o).await.unwrap_err();
        let msg = err.to_string();
        eprintln!("{msg}");
        assert!(matches!(err, SshError::HostKeyChanged { line: 1, .. }), "{msg}");
        assert!(msg.contains("host ssh1 (10.77.0.31)"), "{msg}");
        assert!(msg.contains(&o.known_hosts.display().to_string()), "{msg}");
        assert!(msg.contains("line 1"), "{msg}");
        assert!(msg.contains("the host key changed (SHA256:"), "{msg}");
        let state = o.known_hosts.parent().unwrap().display().to_string();
        assert!(
            msg.contains(&format!("groundwork forget-host 10.77.0.31 --state {state}")),
            "the error names the command that forgets the key: {msg}"
        );
    });
    assert_eq!(std::fs::read_to_string(&o.known_hosts).unwrap(), before);
    // what that command does: the old key goes, the next connection records the new one
    let done = groundwork::ssh::forget_host(&o.known_hosts, HOST.1, 22).unwrap();
    assert_eq!(done.removed, [1]);
    rt.block_on(async {
        let s = connect(&target("root"), &o).await;
        assert!(s.first_contact());
        s.close().await;
    });
}

/// known_hosts as OpenSSH writes and reads it, against the real sshd: a tab-separated line
/// and a hashed one (`ssh-keygen -H`) are the recorded key, and an `@revoked` line refuses it.
#[test]
fn known_hosts_lines_in_openssh_forms() {
    let Some(_lab) = lab::exclusive(&[HOST]) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let o = opts(dir.path());
    let rt = rt();
    rt.block_on(async {
        connect(&target("root"), &o).await.close().await;
    });
    let learned = std::fs::read_to_string(&o.known_hosts).unwrap();
    let fields: Vec<&str> = learned.split_whitespace().collect();
    assert_eq!(fields.len(), 3, "{learned}");
    let key = format!("{} {}", fields[1], fields[2]);

    // tabs between the fields, a comment line before: known, nothing appended
    let tabbed = format!("# lab\n{}\t{}\t{}\n", fields[0], fields[1], fields[2]);
    std::fs::write(&o.known_hosts, &tabbed).unwrap();
    rt.block_on(async {
        let s = connect(&target("root"), &o).await;
        assert!(!s.first_contact());
        s.close().await;
    });
    assert_eq!(std::fs::read_to_string(&o.known_hosts).unwrap(), tabbed);

    // hashed by the real ssh-keygen
    std::fs::write(&o.known_hosts, &learned).unwrap();
    let st = std::process::Command::new("ssh-keygen")
        .args(["-q", "-H", "-f"])
        .arg(&o.known_hosts)
        .status()
        .expect("ssh-keygen");
    assert!(st.success());
    let hashed = std::fs::read_to_string(&o.known_hosts).unwrap();
    assert!(hashed.starts_with("|1|"), "{hashed}");
    rt.block_on(async {
        let s = connect(&target("root"), &o).await;
        assert!(!s.first_contact());
        s.close().await;
    });
    assert_eq!(std::fs::read_to_string(&o.known_hosts).unwrap(), hashed);

    // revoked: refused with the file and line, even though line 1 records it
    std::fs::write(&o.known_hosts, format!("{learned}@revoked * {key}\n")).unwrap();
    rt.block_on(async {
        let err = Session::connect(&target("root"), &o).await.unwrap_err();
        let msg = err.to_string();
        assert!(matches!(err, SshError::HostKeyRevoked { line: 2, .. }), "{msg}");
        assert!(msg.contains(&o.known_hosts.display().to_string()), "{msg}");
        assert!(msg.contains("is revoked by line 2"), "{msg}");
    });
}

#[test]
fn bad_keys_are_named() {
    let Some(_lab) = lab::exclusive(&[HOST]) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let o = opts(dir.path());
    let with_key = |user: &str, key: PathBuf| Target { key_path: key, ..target(user) };
    rt().block_on(async {
        // missing file
        let missing = dir.path().join("no-such-key");
        let err = Session::connect(&with_key("root", missing.clone()), &o).await.unwrap_err();
        let msg = err.to_string();
        assert!(matches!(err, SshError::KeyUnreadable { .. }), "{msg}");
        assert!(msg.contains(&missing.display().to_string()) && msg.contains("ssh1"), "{msg}");

        // a valid key the host does not know
        let stranger = dir.path().join("stranger");
        keygen(&stranger, "ed25519", "");
        let err = Session::connect(&with_key("root", stranger.clone()), &o).await.unwrap_err();
        let msg = err.to_string();
        eprintln!("{msg}");
        assert!(matches!(err, SshError::Auth { .. }), "{msg}");
        assert!(msg.contains(&stranger.display().to_string()), "{msg}");
        assert!(msg.contains("user root") && msg.contains("host ssh1 (10.77.0.31)"), "{msg}");

        // an encrypted key
        let locked = dir.path().join("locked");
        keygen(&locked, "ed25519", "a passphrase");
        let err = Session::connect(&with_key("root", locked.clone()), &o).await.unwrap_err();
        let msg = err.to_string();
        assert!(matches!(err, SshError::KeyEncrypted { .. }), "{msg}");
        assert!(msg.contains(&locked.display().to_string()), "{msg}");

        // an RSA key works once authorised (rsa-sha2-* chosen via best_supported_rsa_hash)
        let rsa = dir.path().join("rsa");
        keygen(&rsa, "rsa", "");
        let root = connect(&target("root"), &o).await;
        let pubkey = std::fs::read(rsa.with_extension("pub")).unwrap();
        let out = root.exec("cat >> /root/.ssh/authorized_keys", Some(&pubkey)).await.unwrap();
        assert!(out.ok());
        root.close().await;
        let s = connect(&with_key("root", rsa), &o).await;
        assert_eq!(s.exec("id -un", None).await.unwrap().stdout_str(), "root\n");
        s.close().await;
    });
}

#[test]
fn nothing_listening_is_a_connect_error_after_the_attempts() {
    let Some(_lab) = lab::exclusive(&[HOST]) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let o = SshOptions { connect_attempts: 2, connect_timeout: Duration::from_secs(3), ..opts(dir.path()) };
    let t = Target { address: "10.77.0.250".into(), ..target("root") };
    rt().block_on(async {
        let started = Instant::now();
        let err = Session::connect(&t, &o).await.unwrap_err();
        let msg = err.to_string();
        eprintln!("{msg} (after {} ms)", started.elapsed().as_millis());
        assert!(matches!(err, SshError::Connect { attempts: 2, .. }), "{msg}");
        assert!(msg.contains("host ssh1 (10.77.0.250:22)"), "{msg}");
        assert!(msg.contains("after 2 attempts"), "{msg}");
    });
}

#[test]
fn a_cut_connection_fails_the_running_command() {
    let Some(_lab) = lab::exclusive(&[HOST]) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let o = opts(dir.path());
    rt().block_on(async {
        let victim = Arc::new(connect(&target("root"), &o).await);
        let killer = connect(&target("root"), &o).await;
        let running = {
            let victim = victim.clone();
            tokio::spawn(async move { victim.exec("sleep 31.5", None).await })
        };
        // kill the sshd process serving the victim's connection (the parent of its sleep)
        let kill = "for i in $(seq 100); do p=$(pgrep -xf 'sleep 31.5') && break; sleep 0.1; done; \
                    pp=$(ps -o ppid= -p \"$p\" | tr -d ' '); ps -o args= -p \"$pp\"; kill -9 \"$pp\"";
        let cut = Instant::now();
        let out = killer.exec(kill, None).await.unwrap();
        assert!(out.ok(), "{}", out.stderr_str());
        assert!(out.stdout_str().starts_with("sshd: root@notty"), "{}", out.stdout_str());
        let result = tokio::time::timeout(Duration::from_secs(20), running)
            .await
            .expect("exec still running 20 s after the connection was cut")
            .unwrap();
        eprintln!("exec failed {} ms after the kill was sent", cut.elapsed().as_millis());
        let err = result.unwrap_err();
        let msg = err.to_string();
        eprintln!("{msg}");
        assert!(matches!(err, SshError::Disconnected { .. }), "{msg}");
        assert!(msg.contains("host ssh1 (10.77.0.31)"), "{msg}");
        // the dead session keeps failing, quickly
        let err = tokio::time::timeout(Duration::from_secs(5), victim.exec("true", None))
            .await
            .expect("exec on a dead session hangs")
            .unwrap_err();
        assert!(matches!(err, SshError::Disconnected { .. }), "{err}");
        killer.exec("pkill -xf 'sleep 31.5'", None).await.unwrap();
        killer.close().await;
    });
}
