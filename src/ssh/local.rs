//! The local transport: a [`super::Session`] on the machine groundwork runs on. Each command is
//! a `/bin/sh -c` process (through `sudo -n` when groundwork is not root), with the stdin,
//! output, line watching and exit status an SSH channel gives, so the facts, decisions,
//! journal, backups and progress are the same as for a remote host. No sshd, key or
//! known_hosts entry is involved.

use std::net::{IpAddr, Ipv4Addr};
use std::process::Stdio;
use std::sync::atomic::AtomicBool;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::{Input, Link, Output, Session, SshError, Target, append_watching};

/// What [`Session::host_key_fingerprint`] says for this machine: the journal's identity of a
/// local host is this word and its machine-id.
pub const LOCAL_FINGERPRINT: &str = "local";

/// The PATH an SSH login of root gets on Debian; the operator's own environment is not passed
/// on, so a command behaves here as it does over SSH.
const PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Whether `address` is one of this machine's, loopback excepted: a host at 127.0.0.1 is
/// reached through a tunnel or port forward (another machine), never taken for this one.
pub fn is_this_machine(address: Ipv4Addr) -> bool {
    if address.is_loopback() {
        return false;
    }
    if_addrs::get_if_addrs().is_ok_and(|l| l.iter().any(|i| i.ip() == IpAddr::V4(address)))
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

impl Session {
    /// A session on this machine. As root, nothing to check; otherwise `sudo -n true` must
    /// pass, as for an SSH user that is not root.
    pub(super) async fn local(t: &Target) -> Result<Session, SshError> {
        let sudo = !is_root();
        let session = Session {
            target: t.clone(),
            key_path: t.key_path.clone(),
            link: Link::Local { sudo },
            fingerprint: LOCAL_FINGERPRINT.to_string(),
            first_contact: false,
            sudo_proven: AtomicBool::new(true),
        };
        if sudo {
            let out = run(t, "sudo -n true", Input::Nothing, &|_| {}).await?;
            if !out.ok() {
                let said = out.stderr_str().trim().to_string();
                let said = if said.is_empty() { format!("exit status {}", out.status) } else { said };
                let user = std::env::var("USER").unwrap_or_else(|_| "this user".into());
                return Err(SshError::NoSudo { host: t.name.clone(), address: t.address.clone(), user, said });
            }
        }
        Ok(session)
    }
}

/// Runs `cmd` as given with `/bin/sh -c`: stdin written (then closed) while stdout and stderr
/// are read, `on_line` called with each complete stdout line. A signal n is status 128 + n.
pub(super) async fn run(
    t: &Target,
    cmd: &str,
    stdin: Input<'_>,
    on_line: &(dyn Fn(&str) + Sync),
) -> Result<Output, SshError> {
    let failed = |what: &str, e: std::io::Error| SshError::Protocol {
        host: t.name.clone(),
        address: t.address.clone(),
        what: format!("local process: {what}"),
        cause: e.to_string(),
    };
    let home = if is_root() { "/root".to_string() } else { std::env::var("HOME").unwrap_or_else(|_| "/".into()) };
    let mut child = tokio::process::Command::new("/bin/sh")
        .arg("-c")
        .arg(cmd)
        .env_clear()
        .env("PATH", PATH)
        .env("HOME", home)
        .env("LANG", "C.UTF-8")
        .current_dir("/")
        .stdin(if matches!(stdin, Input::Nothing) { Stdio::null() } else { Stdio::piped() })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // Its own process group: Ctrl-C at the terminal stops groundwork (which journals what
        // was done), not a package installation half way, as over SSH.
        .process_group(0)
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| failed("cannot start /bin/sh", e))?;
    let writer = child.stdin.take();
    let mut stdout = child.stdout.take().expect("stdout is piped");
    let mut stderr = child.stderr.take().expect("stderr is piped");

    // Write errors are ignored, as over SSH: a command may exit without reading its input.
    let write = async move {
        if let Some(mut w) = writer {
            match stdin {
                Input::Nothing => {}
                Input::Bytes(bytes) => {
                    let _ = w.write_all(bytes).await;
                }
                Input::File(mut file) => {
                    let _ = tokio::io::copy(&mut file, &mut w).await;
                }
            }
            let _ = w.shutdown().await;
        }
    };
    let read_out = async {
        let mut out = Vec::new();
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            match stdout.read(&mut buf).await {
                Ok(0) => return Ok(out),
                Ok(n) => append_watching(&mut out, &buf[..n], on_line),
                Err(e) => return Err(failed("reading its output", e)),
            }
        }
    };
    let read_err = async {
        let mut err = Vec::new();
        stderr.read_to_end(&mut err).await.map(|_| err).map_err(|e| failed("reading its errors", e))
    };
    let ((), out, err) = tokio::join!(write, read_out, read_err);
    let status = child.wait().await.map_err(|e| failed("waiting for it", e))?;
    use std::os::unix::process::ExitStatusExt;
    let status = match (status.code(), status.signal()) {
        (Some(c), _) => c as u32,
        (None, Some(sig)) => 128 + sig as u32,
        (None, None) => 255,
    };
    Ok(Output { stdout: out?, stderr: err?, status })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target() -> Target {
        Target {
            name: "me".into(),
            address: "127.0.0.1".into(),
            port: 22,
            user: "root".into(),
            key_path: "/nonexistent".into(),
            local: true,
        }
    }

    #[test]
    fn loopback_and_unassigned_addresses_are_not_this_machine() {
        assert!(!is_this_machine(Ipv4Addr::LOCALHOST));
        // An address that no interface here holds (checked against the list itself).
        let mine: Vec<IpAddr> = if_addrs::get_if_addrs().unwrap().iter().map(|i| i.ip()).collect();
        let other =
            (1..=254).map(|n| Ipv4Addr::new(198, 51, 100, n)).find(|a| !mine.contains(&IpAddr::V4(*a))).unwrap();
        assert!(!is_this_machine(other));
        // Every non-loopback IPv4 address of an interface is.
        for ip in mine {
            if let IpAddr::V4(v4) = ip
                && !v4.is_loopback()
            {
                assert!(is_this_machine(v4), "{v4}");
            }
        }
    }

    #[tokio::test]
    async fn a_local_command_reads_stdin_streams_lines_and_reports_its_status() {
        let t = target();
        let lines = std::sync::Mutex::new(Vec::new());
        let on_line = |l: &str| lines.lock().unwrap().push(l.to_string());
        let out = run(&t, "cat; echo two; echo err >&2; exit 3", Input::Bytes(b"one\n"), &on_line).await.unwrap();
        assert_eq!(out.stdout_str(), "one\ntwo\n");
        assert_eq!(out.stderr_str(), "err\n");
        assert_eq!(out.status, 3);
        assert_eq!(*lines.lock().unwrap(), ["one", "two"]);
        // The operator's environment is not passed on.
        let env = run(&t, "echo \"$PATH|${CARGO:-unset}\"", Input::Nothing, &|_| {}).await.unwrap();
        assert_eq!(env.stdout_str(), format!("{PATH}|unset\n"));
        let killed = run(&t, "kill -TERM $$", Input::Nothing, &|_| {}).await.unwrap();
        assert_eq!(killed.status, 128 + 15);
    }

    #[tokio::test]
    async fn a_local_session_uploads_and_runs_like_a_remote_one() {
        if !is_root() {
            eprintln!("SKIPPED: the local session needs root (or sudo) for its upload check");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let s = Session::connect(&target(), &super::super::SshOptions::default()).await.unwrap();
        assert!(s.is_local());
        assert_eq!(s.host_key_fingerprint(), LOCAL_FINGERPRINT);
        let path = format!("{}/up", dir.path().display());
        s.upload(&path, b"x'y").await.unwrap();
        let out = s.exec(&format!("stat -c %a {path} && cat {path}"), None).await.unwrap();
        assert_eq!(out.stdout_str(), "600\nx'y");
        s.close().await;
    }
}
