//! Sessions to the target hosts: SSH (russh), one connection per host and a channel per
//! command; or, for the machine groundwork runs on, local processes ([`local`]) behind the same
//! [`Session`] API, so the engine, verify and the cluster code never tell the two apart.
//!
//! [`Session::connect`] loads the key, checks the host key against the state directory's
//! known_hosts (learning it on first contact, refusing a changed one) and authenticates.
//! [`Session::exec`] runs a command as root (through `sudo -n` for other users, whose first
//! command also proves that sudo works) on a fresh channel of the one connection.
//!
//! A command killed by a signal is reported like a shell does: status `128 + n` (Linux signal
//! numbers; 255 for a signal name this module does not know).

mod error;
pub(crate) mod known_hosts;
mod local;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use russh::client;
use russh::keys::{HashAlg, PrivateKeyWithHashAlg, PublicKey, PublicKeyOrCertificate};
use russh::{ChannelMsg, Disconnect, Sig};

pub use error::SshError;
pub(crate) use error::shell_word;
pub(crate) use known_hosts::host_field;
pub use known_hosts::{Forgotten, Note};
pub use local::{LOCAL_FINGERPRINT, is_this_machine};

/// Forgets the recorded host keys of `address`:`port` in the known_hosts file `path` (see
/// `groundwork forget-host`): the file is rewritten atomically, every other line byte for byte.
pub fn forget_host(path: &Path, address: &str, port: u16) -> Result<Forgotten, String> {
    known_hosts::forget(path, address, port)
}

/// Lines of the known_hosts file `path` that cannot be read or are not used, each as
/// "path:line: what" (empty when the file is absent).
pub fn known_hosts_warnings(path: &Path) -> Vec<String> {
    match known_hosts::notes(path) {
        Ok(notes) => notes.iter().map(|n| format!("{}:{}: {}", path.display(), n.line, n.message)).collect(),
        Err(e) => vec![format!("{}: {e}", path.display())],
    }
}

/// A host to connect to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// The host's name in the answer file (used in every message).
    pub name: String,
    /// IP address or DNS name.
    pub address: String,
    pub port: u16,
    /// `root`, or a user with passwordless sudo.
    pub user: String,
    /// Private key (OpenSSH or PEM, unencrypted); a leading `~` is expanded via `$HOME`.
    pub key_path: PathBuf,
    /// The machine groundwork runs on: commands run as local processes, no SSH at all.
    pub local: bool,
}

/// Connection settings shared by all hosts of a run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SshOptions {
    /// The state directory's known_hosts file (created 0600 if absent).
    pub known_hosts: PathBuf,
    /// Limit per connect attempt (TCP connect + SSH handshake), and for authentication.
    pub connect_timeout: Duration,
    /// Keepalive interval; 3 unanswered keepalives close the connection.
    pub keepalive: Duration,
    /// Connect attempts, with backoff 0.5 s, 1 s, 2 s... between them. Only TCP and handshake
    /// failures are retried, never host-key or authentication errors.
    pub connect_attempts: u32,
}

impl Default for SshOptions {
    fn default() -> Self {
        SshOptions {
            known_hosts: PathBuf::from("known_hosts"),
            connect_timeout: Duration::from_secs(10),
            keepalive: Duration::from_secs(15),
            connect_attempts: 3,
        }
    }
}

/// What a command produced.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Output {
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    /// Exit status; `128 + n` when killed by signal `n`.
    pub status: u32,
}

impl Output {
    pub fn ok(&self) -> bool {
        self.status == 0
    }
    pub fn stdout_str(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }
    pub fn stderr_str(&self) -> String {
        String::from_utf8_lossy(&self.stderr).into_owned()
    }
}

const KEEPALIVE_MAX: usize = 3;

/// State the russh handler shares with the [`Session`].
#[derive(Debug, Default)]
struct Shared {
    fingerprint: String,
    first_contact: bool,
    /// Why the connection ended, once it has.
    disconnect: Option<String>,
}

/// Error type of the handler: russh's, or a refusal carrying the final message.
#[derive(Debug)]
enum HandlerError {
    Russh(russh::Error),
    Refused(Box<SshError>),
}

impl From<russh::Error> for HandlerError {
    fn from(e: russh::Error) -> Self {
        HandlerError::Russh(e)
    }
}

struct Client {
    host: String,
    address: String,
    port: u16,
    known_hosts: PathBuf,
    shared: Arc<Mutex<Shared>>,
}

impl Client {
    fn verify(&self, key: &PublicKey) -> Result<(), SshError> {
        let fingerprint = key.fingerprint(HashAlg::Sha256).to_string();
        let kh_err = |cause: String| SshError::KnownHosts {
            host: self.host.clone(),
            address: self.address.clone(),
            path: self.known_hosts.clone(),
            cause,
        };
        let _guard = known_hosts::FILE_LOCK.lock().unwrap_or_else(|p| p.into_inner());
        let verdict = known_hosts::check(&self.known_hosts, &self.address, self.port, key).map_err(kh_err)?;
        let mut shared = self.shared.lock().unwrap_or_else(|p| p.into_inner());
        match verdict {
            known_hosts::Verdict::Known => {}
            known_hosts::Verdict::Unknown => {
                known_hosts::learn(&self.known_hosts, &self.address, self.port, key).map_err(kh_err)?;
                shared.first_contact = true;
            }
            known_hosts::Verdict::Changed { line } => {
                return Err(SshError::HostKeyChanged {
                    host: self.host.clone(),
                    address: self.address.clone(),
                    port: self.port,
                    fingerprint,
                    path: self.known_hosts.clone(),
                    line,
                });
            }
            known_hosts::Verdict::Revoked { line } => {
                return Err(SshError::HostKeyRevoked {
                    host: self.host.clone(),
                    address: self.address.clone(),
                    fingerprint,
                    path: self.known_hosts.clone(),
                    line,
                });
            }
            known_hosts::Verdict::Unreadable { line, reason } => {
                // Learning a key beside it could accept what that line was meant to refuse.
                return Err(kh_err(format!(
                    "line {line} is for this host but cannot be read ({reason}); fix or remove that line"
                )));
            }
        }
        shared.fingerprint = fingerprint;
        Ok(())
    }
}

impl client::Handler for Client {
    type Error = HandlerError;

    async fn check_server_key(&mut self, server_public_key: &PublicKeyOrCertificate) -> Result<bool, Self::Error> {
        // A certificate is checked by the host key it certifies, like a plain key.
        let key = match server_public_key {
            PublicKeyOrCertificate::PublicKey { key, .. } => key.clone(),
            PublicKeyOrCertificate::Certificate(cert) => PublicKey::from(cert.public_key().clone()),
        };
        self.verify(&key).map(|()| true).map_err(|e| HandlerError::Refused(Box::new(e)))
    }

    async fn disconnected(&mut self, reason: client::DisconnectReason<Self::Error>) -> Result<(), Self::Error> {
        let (text, result) = match reason {
            client::DisconnectReason::ReceivedDisconnect(info) => {
                (format!("the server closed the connection ({:?}: {})", info.reason_code, info.message), Ok(()))
            }
            client::DisconnectReason::Error(e) => (describe(&e), Err(e)),
        };
        self.shared.lock().unwrap_or_else(|p| p.into_inner()).disconnect = Some(text);
        result
    }
}

fn describe(e: &HandlerError) -> String {
    match e {
        HandlerError::Russh(russh::Error::IO(io)) => io.to_string(),
        HandlerError::Russh(russh::Error::KeepaliveTimeout) => "the server did not answer keepalives".to_string(),
        HandlerError::Russh(e) => e.to_string(),
        HandlerError::Refused(e) => e.to_string(),
    }
}

/// One SSH connection to a host for the whole run. `Send + Sync`: share it with `Arc` or move
/// it into a tokio task; [`Session::exec`] takes `&self` and may run concurrently (a channel per
/// call).
pub struct Session {
    target: Target,
    key_path: PathBuf,
    link: Link,
    fingerprint: String,
    first_contact: bool,
    /// A non-root SSH user's sudo has been seen to work. Until then each command proves it:
    /// no extra round trip at connect (see [`SUDO_MARK`]).
    sudo_proven: AtomicBool,
}

/// What a command run through sudo first prints on standard error, so a refusal by sudo
/// itself (no such line) is told apart from the command's own failure. Removed from the
/// output before anyone sees it.
const SUDO_MARK: &str = "groundwork: sudo ok";

/// How commands reach the host.
enum Link {
    Ssh {
        handle: client::Handle<Client>,
        shared: Arc<Mutex<Shared>>,
    },
    /// This machine; `sudo`: the commands need `sudo -n` (groundwork does not run as root).
    Local {
        sudo: bool,
    },
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("target", &self.target)
            .field("fingerprint", &self.fingerprint)
            .field("first_contact", &self.first_contact)
            .finish_non_exhaustive()
    }
}

const _: () = {
    const fn send_sync<T: Send + Sync>() {}
    send_sync::<Session>();
};

/// `'…'` for sh, with `'` written as `'\''`.
fn sh_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// `~/...` under $HOME (a path on this machine, as the answer file may write it).
pub fn expand_tilde(p: &Path) -> PathBuf {
    let Ok(rest) = p.strip_prefix("~") else {
        return p.to_path_buf();
    };
    match std::env::var_os("HOME") {
        Some(home) => PathBuf::from(home).join(rest),
        None => p.to_path_buf(),
    }
}

fn signal_number(sig: &Sig) -> Option<u32> {
    Some(match sig {
        Sig::HUP => 1,
        Sig::INT => 2,
        Sig::QUIT => 3,
        Sig::ILL => 4,
        Sig::ABRT => 6,
        Sig::FPE => 8,
        Sig::KILL => 9,
        Sig::USR1 => 10,
        Sig::SEGV => 11,
        Sig::PIPE => 13,
        Sig::ALRM => 14,
        Sig::TERM => 15,
        Sig::Custom(name) => match name.trim_start_matches("SIG") {
            "TRAP" => 5,
            "BUS" => 7,
            "USR2" => 12,
            "STKFLT" => 16,
            "CHLD" => 17,
            "CONT" => 18,
            "STOP" => 19,
            "TSTP" => 20,
            "TTIN" => 21,
            "TTOU" => 22,
            "URG" => 23,
            "XCPU" => 24,
            "XFSZ" => 25,
            "VTALRM" => 26,
            "PROF" => 27,
            "WINCH" => 28,
            "IO" => 29,
            "PWR" => 30,
            "SYS" => 31,
            _ => return None,
        },
    })
}

impl Session {
    /// Connects, checks the host key and authenticates; a non-root user's passwordless sudo is
    /// proven by the first command (a refusal is [`SshError::NoSudo`] there). A local target
    /// checks that commands can run as root.
    pub async fn connect(t: &Target, o: &SshOptions) -> Result<Session, SshError> {
        if t.local {
            return Session::local(t).await;
        }
        let address = if t.port == 22 { t.address.clone() } else { format!("{}:{}", t.address, t.port) };
        let key_path = expand_tilde(&t.key_path);
        let key = match russh::keys::load_secret_key(&key_path, None) {
            Ok(k) => k,
            Err(russh::keys::Error::KeyIsEncrypted) => {
                return Err(SshError::KeyEncrypted { host: t.name.clone(), address, path: key_path });
            }
            Err(e) => {
                return Err(SshError::KeyUnreadable {
                    host: t.name.clone(),
                    address,
                    path: key_path,
                    cause: e.to_string(),
                });
            }
        };
        known_hosts::ensure_file(&o.known_hosts).map_err(|e| SshError::KnownHosts {
            host: t.name.clone(),
            address: address.clone(),
            path: o.known_hosts.clone(),
            cause: e.to_string(),
        })?;

        let config = Arc::new(client::Config {
            keepalive_interval: Some(o.keepalive),
            keepalive_max: KEEPALIVE_MAX,
            // keepalive answers count as activity: this only fires when even those stop
            inactivity_timeout: Some(o.keepalive * (KEEPALIVE_MAX as u32 + 2)),
            nodelay: true,
            ..Default::default()
        });
        let shared = Arc::new(Mutex::new(Shared::default()));
        let attempts = o.connect_attempts.max(1);
        let mut backoff = Duration::from_millis(500);
        let mut attempt = 0;
        let mut handle = loop {
            attempt += 1;
            let handler = Client {
                host: t.name.clone(),
                address: t.address.clone(),
                port: t.port,
                known_hosts: o.known_hosts.clone(),
                shared: shared.clone(),
            };
            let fut = client::connect(config.clone(), (t.address.as_str(), t.port), handler);
            let cause = match tokio::time::timeout(o.connect_timeout, fut).await {
                Ok(Ok(h)) => break h,
                Ok(Err(HandlerError::Refused(e))) => return Err(*e),
                Ok(Err(e)) => describe(&e),
                Err(_) => format!("no SSH handshake within {}", humantime::format_duration(o.connect_timeout)),
            };
            if attempt >= attempts {
                return Err(SshError::Connect {
                    host: t.name.clone(),
                    address: t.address.clone(),
                    port: t.port,
                    attempts,
                    cause,
                });
            }
            tokio::time::sleep(backoff).await;
            backoff *= 2;
        };

        let auth_err = |cause: String| SshError::Auth {
            host: t.name.clone(),
            address: address.clone(),
            user: t.user.clone(),
            path: key_path.clone(),
            cause,
        };
        let auth = async {
            let hash = if key.algorithm().is_rsa() { handle.best_supported_rsa_hash().await?.flatten() } else { None };
            let key = PrivateKeyWithHashAlg::new(Arc::new(key), hash);
            handle.authenticate_publickey(t.user.as_str(), key).await
        };
        match tokio::time::timeout(o.connect_timeout, auth).await {
            Ok(Ok(r)) if r.success() => {}
            Ok(Ok(_)) => return Err(auth_err("the server refused the key".into())),
            Ok(Err(e)) => return Err(auth_err(e.to_string())),
            Err(_) => {
                return Err(auth_err(format!("no answer within {}", humantime::format_duration(o.connect_timeout))));
            }
        }

        let (fingerprint, first_contact) = {
            let s = shared.lock().unwrap_or_else(|p| p.into_inner());
            (s.fingerprint.clone(), s.first_contact)
        };
        // A non-root user's sudo is checked by the first command itself (see SUDO_MARK): a
        // refusal is the same NoSudo error, one round trip sooner.
        Ok(Session {
            target: t.clone(),
            key_path,
            link: Link::Ssh { handle, shared },
            fingerprint,
            first_contact,
            sudo_proven: AtomicBool::new(false),
        })
    }

    pub fn target(&self) -> &Target {
        &self.target
    }

    /// The private key file in use (`~` expanded).
    pub fn key_path(&self) -> &Path {
        &self.key_path
    }

    /// SHA256 fingerprint of the server's host key, e.g. "SHA256:abc..." (as ssh-keygen -l
    /// prints it); [`LOCAL_FINGERPRINT`] for this machine.
    pub fn host_key_fingerprint(&self) -> &str {
        &self.fingerprint
    }

    /// true when this connection recorded the host key for the first time in known_hosts.
    pub fn first_contact(&self) -> bool {
        self.first_contact
    }

    /// Runs a shell command as root: as-is for root, otherwise as
    /// `sudo -n -- sh -c '<cmd>'`. `stdin` (if any) is written, then EOF is sent.
    /// A command killed by signal n reports status 128+n.
    pub async fn exec(&self, cmd: &str, stdin: Option<&[u8]>) -> Result<Output, SshError> {
        self.exec_watching(cmd, stdin, &|_| {}).await
    }

    /// [`Session::exec`], calling `on_line` with each line of standard output as it arrives
    /// (a long command's progress).
    pub async fn exec_watching(
        &self,
        cmd: &str,
        stdin: Option<&[u8]>,
        on_line: &(dyn Fn(&str) + Sync),
    ) -> Result<Output, SshError> {
        let input = match stdin {
            Some(bytes) => Input::Bytes(bytes),
            None => Input::Nothing,
        };
        self.run_as_root(cmd, input, on_line).await
    }

    /// [`Session::exec`] with the local file at `path` as standard input, streamed in the
    /// channel's window-sized chunks (never read into memory whole).
    pub async fn exec_file(&self, cmd: &str, path: &Path) -> Result<Output, SshError> {
        let file = tokio::fs::File::open(path).await.map_err(|e| SshError::LocalFile {
            host: self.target.name.clone(),
            path: path.display().to_string(),
            cause: e.to_string(),
        })?;
        self.run_as_root(cmd, Input::File(file), &|_| {}).await
    }

    /// Runs `cmd` as root: as-is for root, else through `sudo -n`. Until sudo has worked once
    /// on this connection the command first prints [`SUDO_MARK`] on standard error; without
    /// it, exit status 1 is sudo's own refusal (NoSudo, with what sudo said).
    async fn run_as_root(
        &self,
        cmd: &str,
        input: Input<'_>,
        on_line: &(dyn Fn(&str) + Sync),
    ) -> Result<Output, SshError> {
        let root = match self.link {
            Link::Ssh { .. } => self.target.user == "root",
            Link::Local { sudo } => !sudo,
        };
        if root {
            return self.run(cmd, input, on_line).await;
        }
        let prove = matches!(self.link, Link::Ssh { .. }) && !self.sudo_proven.load(Ordering::Relaxed);
        if !prove {
            return self.run(&format!("sudo -n -- sh -c {}", sh_quote(cmd)), input, on_line).await;
        }
        let marked = format!("printf '%s\\n' {} >&2\n{cmd}", sh_quote(SUDO_MARK));
        let mut out = self.run(&format!("sudo -n -- sh -c {}", sh_quote(&marked)), input, on_line).await?;
        if take_sudo_mark(&mut out.stderr) {
            self.sudo_proven.store(true, Ordering::Relaxed);
        } else if out.status == 1 {
            let said = out.stderr_str().trim().to_string();
            let said = if said.is_empty() { format!("exit status {}", out.status) } else { said };
            return Err(SshError::NoSudo {
                host: self.target.name.clone(),
                address: self.address(),
                user: self.target.user.clone(),
                said,
            });
        }
        Ok(out)
    }

    /// Writes `bytes` to the remote `path` as root (`umask 077; cat > path`).
    pub async fn upload(&self, path: &str, bytes: &[u8]) -> Result<(), SshError> {
        let out = self.exec(&format!("umask 077 && cat > {}", sh_quote(path)), Some(bytes)).await?;
        if out.ok() {
            Ok(())
        } else {
            Err(SshError::Upload {
                host: self.target.name.clone(),
                address: self.address(),
                path: path.to_string(),
                status: out.status,
                stderr: out.stderr_str().trim().to_string(),
            })
        }
    }

    /// Closes the connection (waits at most 2 s for the server to see it).
    pub async fn close(self) {
        if let Link::Ssh { handle, .. } = self.link {
            let _ = handle.disconnect(Disconnect::ByApplication, "groundwork done", "en").await;
            let _ = tokio::time::timeout(Duration::from_secs(2), handle).await;
        }
    }

    /// Whether commands run on this machine (no SSH).
    pub fn is_local(&self) -> bool {
        matches!(self.link, Link::Local { .. })
    }

    fn address(&self) -> String {
        if self.target.port == 22 {
            self.target.address.clone()
        } else {
            format!("{}:{}", self.target.address, self.target.port)
        }
    }

    fn lost(&self, fallback: impl Into<String>) -> SshError {
        let reason = match &self.link {
            Link::Ssh { shared, .. } => shared.lock().unwrap_or_else(|p| p.into_inner()).disconnect.clone(),
            Link::Local { .. } => None,
        };
        SshError::Disconnected {
            host: self.target.name.clone(),
            address: self.address(),
            cause: reason.unwrap_or_else(|| fallback.into()),
        }
    }

    /// Runs `cmd` exactly as given: on a new channel, or as a local process.
    async fn run(&self, cmd: &str, stdin: Input<'_>, on_line: &(dyn Fn(&str) + Sync)) -> Result<Output, SshError> {
        let handle = match &self.link {
            Link::Ssh { handle, .. } => handle,
            Link::Local { .. } => return local::run(&self.target, cmd, stdin, on_line).await,
        };
        let channel = match handle.channel_open_session().await {
            Ok(c) => c,
            Err(e) if handle.is_closed() => return Err(self.lost(e.to_string())),
            Err(e) => {
                return Err(SshError::Protocol {
                    host: self.target.name.clone(),
                    address: self.address(),
                    what: "cannot open a channel".into(),
                    cause: e.to_string(),
                });
            }
        };
        if let Err(e) = channel.exec(true, cmd).await {
            return Err(self.lost(e.to_string()));
        }
        let (mut rx, tx) = channel.split();

        // stdin is written while output is read (a command like `cat` needs both); write errors
        // are ignored: a command may exit without reading, and a lost connection shows in `read`.
        let write = async {
            match stdin {
                Input::Nothing => {}
                Input::Bytes(bytes) => {
                    let _ = tx.data(bytes).await;
                }
                Input::File(file) => {
                    let _ = tx.data(file).await;
                }
            }
            let _ = tx.eof().await;
            std::future::pending::<()>().await
        };
        let read = async {
            let mut out = Output::default();
            let mut status = None;
            loop {
                match rx.wait().await {
                    Some(ChannelMsg::Data { data }) => {
                        append_watching(&mut out.stdout, &data, on_line);
                    }
                    Some(ChannelMsg::ExtendedData { data, ext: 1 }) => out.stderr.extend_from_slice(&data),
                    Some(ChannelMsg::ExitStatus { exit_status }) => status = Some(exit_status),
                    Some(ChannelMsg::ExitSignal { signal_name, .. }) => {
                        status = Some(signal_number(&signal_name).map_or(255, |n| 128 + n))
                    }
                    Some(ChannelMsg::Failure) => {
                        return Err(SshError::Protocol {
                            host: self.target.name.clone(),
                            address: self.address(),
                            what: "the server refused to run a command".into(),
                            cause: cmd.to_string(),
                        });
                    }
                    Some(ChannelMsg::Close) | None => break,
                    Some(_) => {}
                }
            }
            match status {
                Some(s) => {
                    out.status = s;
                    Ok(out)
                }
                None => Err(self.lost("the channel closed without an exit status")),
            }
        };
        tokio::select! {
            r = read => r,
            () = write => unreachable!("the stdin writer never completes"),
        }
    }
}

/// Removes the [`SUDO_MARK`] line from a command's standard error; false when it is not there.
/// sudo may warn before it runs the command ("unable to resolve host ..." on a host whose name
/// is not in /etc/hosts yet), so the mark is the first line or follows one of sudo's.
fn take_sudo_mark(stderr: &mut Vec<u8>) -> bool {
    let mark = format!("{SUDO_MARK}\n");
    let mark = mark.as_bytes();
    let at = (0..=stderr.len().saturating_sub(mark.len()))
        .find(|&i| (i == 0 || stderr[i - 1] == b'\n') && stderr[i..].starts_with(mark));
    match at {
        Some(i) => {
            stderr.drain(i..i + mark.len());
            true
        }
        None => false,
    }
}

/// Appends `data` to `stdout`, calling `on_line` with each line the chunk completed.
fn append_watching(stdout: &mut Vec<u8>, data: &[u8], on_line: &(dyn Fn(&str) + Sync)) {
    let seen = stdout.len();
    stdout.extend_from_slice(data);
    let start = stdout[..seen].iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
    if let Some(end) = stdout.iter().rposition(|b| *b == b'\n').filter(|e| *e >= seen) {
        for line in stdout[start..end].split(|b| *b == b'\n') {
            on_line(&String::from_utf8_lossy(line));
        }
    }
}

/// What a command reads on standard input.
enum Input<'a> {
    Nothing,
    Bytes(&'a [u8]),
    File(tokio::fs::File),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting() {
        assert_eq!(sh_quote("echo 'a b'"), r"'echo '\''a b'\'''");
        assert_eq!(sh_quote(""), "''");
    }

    #[test]
    fn the_sudo_mark_is_found_after_sudos_own_warnings_and_only_at_a_line_start() {
        let mark = format!("{SUDO_MARK}\n");
        let mut first = format!("{mark}own\n").into_bytes();
        assert!(take_sudo_mark(&mut first));
        assert_eq!(first, b"own\n");
        let warned = "sudo: unable to resolve host fresh: Name or service not known\n";
        let mut after = format!("{warned}{mark}own\n").into_bytes();
        assert!(take_sudo_mark(&mut after));
        assert_eq!(String::from_utf8(after).unwrap(), format!("{warned}own\n"));
        // sudo refused: no mark; a mark inside a line is not one
        let mut refused = b"sudo: a password is required\n".to_vec();
        assert!(!take_sudo_mark(&mut refused));
        let mut inside = format!("x{mark}").into_bytes();
        assert!(!take_sudo_mark(&mut inside));
        assert!(!take_sudo_mark(&mut Vec::new()));
    }

    #[test]
    fn tilde() {
        let home = std::env::var("HOME").unwrap_or_default();
        if !home.is_empty() {
            assert_eq!(expand_tilde(Path::new("~/.ssh/id")), Path::new(&home).join(".ssh/id"));
        }
        assert_eq!(expand_tilde(Path::new("/k")), Path::new("/k"));
        assert_eq!(expand_tilde(Path::new("~x/k")), Path::new("~x/k"));
    }

    #[test]
    fn signals() {
        assert_eq!(signal_number(&Sig::KILL), Some(9));
        assert_eq!(signal_number(&Sig::Custom("USR2".into())), Some(12));
        assert_eq!(signal_number(&Sig::Custom("NOPE".into())), None);
    }
}
