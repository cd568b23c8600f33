//! The errors of [`super::Session`]: every message names the host (`Target.name`) and its address.

use std::path::PathBuf;

/// Why a connection, a command or an upload failed.
///
/// `host` is `Target.name`, `address` is `Target.address` (with `:port` when the port is not 22).
#[derive(Debug, thiserror::Error)]
pub enum SshError {
    /// The private key file could not be read or parsed.
    #[error("host {host} ({address}): cannot read the private key {}: {cause}", path.display())]
    KeyUnreadable { host: String, address: String, path: PathBuf, cause: String },
    /// The private key is protected by a passphrase.
    #[error(
        "host {host} ({address}): the private key {} is encrypted (passphrase-protected); groundwork needs an unencrypted key",
        path.display()
    )]
    KeyEncrypted { host: String, address: String, path: PathBuf },
    /// TCP connect or SSH handshake failed on every attempt.
    #[error(
        "host {host} ({address}:{port}): cannot connect after {attempts} attempt{}: {cause}",
        if *attempts == 1 { "" } else { "s" }
    )]
    Connect {
        host: String,
        address: String,
        port: u16,
        attempts: u32,
        /// The cause of the last attempt.
        cause: String,
    },
    /// The server presented a key that differs from the one recorded in known_hosts.
    #[error(
        "host {host} ({address}): the host key changed ({fingerprint}) and does not match line {line} of {}; if the host was reinstalled, forget its old key with `{}` and run again",
        path.display(),
        forget_command(address, *port, path)
    )]
    HostKeyChanged {
        host: String,
        address: String,
        port: u16,
        /// SHA256 fingerprint of the key the server presented now.
        fingerprint: String,
        /// The known_hosts file.
        path: PathBuf,
        /// 1-based line of the recorded key that does not match.
        line: usize,
    },
    /// The server presented a key that an `@revoked` line of known_hosts lists.
    #[error(
        "host {host} ({address}): the host key ({fingerprint}) is revoked by line {line} of {}; groundwork never accepts it",
        path.display()
    )]
    HostKeyRevoked { host: String, address: String, fingerprint: String, path: PathBuf, line: usize },
    /// known_hosts could not be read, parsed or written.
    #[error("host {host} ({address}): cannot check the host key against {}: {cause}", path.display())]
    KnownHosts { host: String, address: String, path: PathBuf, cause: String },
    /// The server refused the public key.
    #[error(
        "host {host} ({address}): authentication as user {user} with the key {} failed: {cause}",
        path.display()
    )]
    Auth { host: String, address: String, user: String, path: PathBuf, cause: String },
    /// A non-root user cannot run `sudo -n true`.
    #[error(
        "host {host} ({address}): user {user} cannot run sudo without a password (sudo said: {said}); groundwork needs root or passwordless sudo"
    )]
    NoSudo {
        host: String,
        address: String,
        user: String,
        /// stderr of `sudo -n true` (trimmed), or its exit status when it printed nothing.
        said: String,
    },
    /// The connection was lost (or closed) while a command ran, or before it could start.
    #[error("host {host} ({address}): the connection was lost: {cause}")]
    Disconnected { host: String, address: String, cause: String },
    /// The server refused a request (channel, exec) on a live connection.
    #[error("host {host} ({address}): {what}: {cause}")]
    Protocol { host: String, address: String, what: String, cause: String },
    /// `upload` ran but the remote `cat > path` failed.
    #[error("host {host} ({address}): cannot write {path} (exit status {status}): {stderr}")]
    Upload { host: String, address: String, path: String, status: u32, stderr: String },
    /// The local file to stream to the host cannot be read.
    #[error("host {host}: cannot read the local file {path}: {cause}")]
    LocalFile { host: String, path: String, cause: String },
}

impl SshError {
    /// `Target.name` of the host the error is about.
    pub fn host(&self) -> &str {
        match self {
            SshError::KeyUnreadable { host, .. }
            | SshError::KeyEncrypted { host, .. }
            | SshError::Connect { host, .. }
            | SshError::HostKeyChanged { host, .. }
            | SshError::HostKeyRevoked { host, .. }
            | SshError::KnownHosts { host, .. }
            | SshError::Auth { host, .. }
            | SshError::NoSudo { host, .. }
            | SshError::Disconnected { host, .. }
            | SshError::Protocol { host, .. }
            | SshError::Upload { host, .. }
            | SshError::LocalFile { host, .. } => host,
        }
    }
}

/// The `groundwork forget-host` command line for a host's entry in `known_hosts` (its
/// directory is the state directory), quoted for a POSIX shell where needed.
pub(crate) fn forget_command(address: &str, port: u16, known_hosts: &std::path::Path) -> String {
    let host = super::known_hosts::host_field(address, port);
    let state = known_hosts.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(std::path::Path::new("."));
    format!("groundwork forget-host {} --state {}", shell_word(&host), shell_word(&state.to_string_lossy()))
}

/// `s` as one shell word: as is when it holds only safe characters, else in single quotes.
pub(crate) fn shell_word(s: &str) -> String {
    let safe = |c: char| c.is_ascii_alphanumeric() || "/._-+:@,=%".contains(c);
    if !s.is_empty() && s.chars().all(safe) { s.to_string() } else { format!("'{}'", s.replace('\'', r"'\''")) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_changed_key_error_names_the_line_and_the_forget_command() {
        let e = SshError::HostKeyChanged {
            host: "ns1".into(),
            address: "10.0.0.1".into(),
            port: 2222,
            fingerprint: "SHA256:x".into(),
            path: PathBuf::from("/var/lib/my state/known_hosts"),
            line: 7,
        };
        assert_eq!(
            e.to_string(),
            "host ns1 (10.0.0.1): the host key changed (SHA256:x) and does not match line 7 of /var/lib/my state/known_hosts; if the host was reinstalled, forget its old key with `groundwork forget-host '[10.0.0.1]:2222' --state '/var/lib/my state'` and run again"
        );
        assert_eq!(
            forget_command("10.0.0.1", 22, std::path::Path::new("/s/known_hosts")),
            "groundwork forget-host 10.0.0.1 --state /s"
        );
    }
}
