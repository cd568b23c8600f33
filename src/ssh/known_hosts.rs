//! known_hosts checking and learning for the state directory's file.
//!
//! Matching (plain and hashed `|1|` entries) is russh's `known_host_keys_path`. Its line numbers
//! skip comment lines, so they are mapped back to the real line numbers of the file here. New
//! keys are appended in OpenSSH's plain form (`addr` for port 22, `[addr]:port` otherwise).

use std::fs::OpenOptions;
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::sync::Mutex;

use russh::keys::PublicKey;

/// Serialises check-then-learn within the process (several sessions may connect at once).
pub(crate) static FILE_LOCK: Mutex<()> = Mutex::new(());

/// What known_hosts says about a host key.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// The key is recorded for this host.
    Known,
    /// Nothing is recorded for this host.
    Unknown,
    /// Keys are recorded for this host, none is this one; `line` is the first (1-based) that
    /// does not match (same algorithm first, else any algorithm).
    Changed { line: usize },
}

/// The `host` field as OpenSSH writes and matches it.
pub(crate) fn host_field(host: &str, port: u16) -> String {
    if port == 22 {
        host.to_string()
    } else {
        format!("[{host}]:{port}")
    }
}

/// Creates `path` (mode 0600, and its parent directories) when absent.
pub(crate) fn ensure_file(path: &Path) -> std::io::Result<()> {
    if let Some(parent) = path.parent()
        && !parent.as_os_str().is_empty()
    {
        std::fs::create_dir_all(parent)?;
    }
    OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o600)
        .open(path)?;
    Ok(())
}

/// Checks `key` for `host`:`port` against `path`. Never accepts a key of another algorithm
/// when keys are recorded for the host: that counts as changed.
pub(crate) fn check(
    path: &Path,
    host: &str,
    port: u16,
    key: &PublicKey,
) -> Result<Verdict, String> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Verdict::Unknown),
        Err(e) => return Err(e.to_string()),
    };
    let recorded = russh::keys::known_hosts::known_host_keys_path(host, port, path)
        .map_err(|e| e.to_string())?;
    if recorded.is_empty() {
        return Ok(Verdict::Unknown);
    }
    if recorded.iter().any(|(_, k)| k == key) {
        return Ok(Verdict::Known);
    }
    // russh counts only lines that do not start with '#': map its numbers back to real lines.
    let real: Vec<usize> = text
        .split_inclusive('\n')
        .enumerate()
        .filter(|(_, l)| !l.starts_with('#'))
        .map(|(i, _)| i + 1)
        .collect();
    let line_of = |n: usize| real.get(n.wrapping_sub(1)).copied().unwrap_or(n);
    let (line, _) = recorded
        .iter()
        .find(|(_, k)| k.algorithm() == key.algorithm())
        .unwrap_or(&recorded[0]);
    Ok(Verdict::Changed {
        line: line_of(*line),
    })
}

/// Appends `key` for `host`:`port` to `path` in one write (creating the file 0600).
pub(crate) fn learn(path: &Path, host: &str, port: u16, key: &PublicKey) -> Result<(), String> {
    let openssh = key.to_openssh().map_err(|e| e.to_string())?;
    let mut file = OpenOptions::new()
        .read(true)
        .append(true)
        .create(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| e.to_string())?;
    let mut line = String::new();
    if file.seek(SeekFrom::End(-1)).is_ok() {
        let mut last = [0u8; 1];
        file.read_exact(&mut last).map_err(|e| e.to_string())?;
        if last[0] != b'\n' {
            line.push('\n');
        }
    }
    line.push_str(&host_field(host, port));
    line.push(' ');
    line.push_str(openssh.trim_end());
    line.push('\n');
    file.write_all(line.as_bytes()).map_err(|e| e.to_string())?;
    file.sync_data().map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    const K1: &str =
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIJdD7y3aLq454yWBdwLWbieU1ebz9/cu7/QEXn9OIeZJ";
    const K2: &str =
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIA6rWI3G2sz07DnfFlrouTcysQlj2P+jpNSOEWD9OJ3X";

    fn key(s: &str) -> PublicKey {
        PublicKey::from_openssh(s).unwrap()
    }

    #[test]
    fn learn_then_check_and_changed_line_counts_comments() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/known_hosts");
        ensure_file(&path).unwrap();
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        std::fs::write(&path, "# comment\n\nother.example ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIA6rWI3G2sz07DnfFlrouTcysQlj2P+jpNSOEWD9OJ3X").unwrap();
        assert_eq!(
            check(&path, "10.0.0.1", 2222, &key(K1)).unwrap(),
            Verdict::Unknown
        );
        learn(&path, "10.0.0.1", 2222, &key(K1)).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(
            text.ends_with(&format!("\n[10.0.0.1]:2222 {K1}\n")),
            "{text}"
        );
        assert_eq!(
            check(&path, "10.0.0.1", 2222, &key(K1)).unwrap(),
            Verdict::Known
        );
        assert_eq!(
            check(&path, "10.0.0.1", 22, &key(K1)).unwrap(),
            Verdict::Unknown
        );
        assert_eq!(
            check(&path, "10.0.0.1", 2222, &key(K2)).unwrap(),
            Verdict::Changed { line: 4 }
        );
    }

    #[test]
    fn hashed_entries_match() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("known_hosts");
        // from russh's own test: |1|... is "example.com"-style hashed host, check via its key
        std::fs::write(
            &path,
            "|1|O33ESRMWPVkMYIwJ1Uw+n877jTo=|nuuC5vEqXlEZ/8BXQR7m619W6Ak= ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAILIG2T/B0l0gaqj3puu510tu9N1OkQ4znY3LYuEm5zCF\n",
        )
        .unwrap();
        let k =
            key("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAILIG2T/B0l0gaqj3puu510tu9N1OkQ4znY3LYuEm5zCF");
        assert_eq!(check(&path, "example.com", 22, &k).unwrap(), Verdict::Known);
        assert_eq!(
            check(&path, "example.com", 22, &key(K1)).unwrap(),
            Verdict::Changed { line: 1 }
        );
    }
}
