//! Generated secrets: made once, kept 0600 in the state directory, never printed.
//!
//! The file is TOML with one table per service, e.g. `[postgresql] keycloak = "..."`.
//! `Debug` shows the names only, so a stray `{:?}` cannot leak a value.

use std::collections::BTreeMap;
use std::fmt;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use rand::{Rng, RngExt};

use toml::de::{DeTable, DeValue};

use crate::answers::model::{Answers, Role};
use crate::answers::report::shown;

#[derive(Clone, Default, PartialEq)]
pub struct Secrets {
    tables: Tables,
}

impl fmt::Debug for Secrets {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<String> =
            self.tables.iter().flat_map(|(t, m)| m.keys().map(move |k| format!("{t}.{k}"))).collect();
        write!(f, "Secrets({} values: {})", names.len(), names.join(", "))
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SecretsError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    /// Names the line and the table or key, never a value: the file is all secrets.
    #[error("{path}:{line}: not a secrets file: {message}")]
    Parse { path: PathBuf, line: usize, message: String },
    #[error("{path} is readable by other users (mode {mode:04o}); run `chmod 600 {path}` and check who has seen it")]
    Exposed { path: PathBuf, mode: u32 },
}

/// The site's TSIG key (its table and key here are also its name in BIND and Kea).
pub const TSIG: (&str, &str) = ("tsig", "ddns-key");
/// The key a TSIG rotation rolls out, beside [`TSIG`] until every server and client has it.
pub const TSIG_NEXT: (&str, &str) = ("tsig", "ddns-key-next");
/// The table where `groundwork rotate` keeps a value it replaces (`"postgresql.keycloak" =
/// "<old>"`) until a client has logged in with the new one; then the entry goes.
pub const PREVIOUS: &str = "previous";

type Tables = BTreeMap<String, BTreeMap<String, String>>;

/// `[table] key = "value"` and nothing else. On error, the byte offset and a message that
/// names the table or key but no value (serde's type errors quote the value they got, so the
/// shape is checked here instead).
fn parse(text: &str) -> Result<Tables, (usize, String)> {
    let root = DeTable::parse(text).map_err(|e| {
        // The parser's messages describe what it expected, never the text it read.
        let at = e.span().map_or(0, |s| s.start);
        (at, format!("TOML syntax: {}", e.message().trim()))
    })?;
    let mut tables = Tables::new();
    for (table, value) in root.get_ref().iter() {
        let name = shown(table.get_ref());
        let DeValue::Table(entries) = value.get_ref() else {
            return Err((table.span().start, format!("`{name}` is not a table ([{name}])")));
        };
        let slot = tables.entry(table.get_ref().to_string()).or_default();
        for (key, value) in entries.iter() {
            let DeValue::String(secret) = value.get_ref() else {
                return Err((key.span().start, format!("[{name}] `{}` is not a string", shown(key.get_ref()))));
            };
            slot.insert(key.get_ref().to_string(), secret.to_string());
        }
    }
    Ok(tables)
}

const PASSWORD_CHARS: &[u8] = b"ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz23456789";

/// A random password of `len` characters without look-alikes (no 0/O, 1/l/I) or shell
/// metacharacters, so it survives every config format and command line unquoted.
pub fn password(len: usize) -> String {
    let mut rng = rand::rng();
    (0..len).map(|_| PASSWORD_CHARS[rng.random_range(0..PASSWORD_CHARS.len())] as char).collect()
}

/// `n` random bytes, base64-encoded (a TSIG key is 32 bytes for hmac-sha256).
pub fn random_base64(n: usize) -> String {
    let mut bytes = vec![0u8; n];
    rand::rng().fill_bytes(&mut bytes);
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

impl Secrets {
    /// Read the file, or start empty if it does not exist. Refuses a file others can read.
    pub fn load(path: &Path) -> Result<Secrets, SecretsError> {
        let io = |source| SecretsError::Io { path: path.to_path_buf(), source };
        let meta = match fs::metadata(path) {
            Ok(m) => m,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Secrets::default()),
            Err(e) => return Err(io(e)),
        };
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(SecretsError::Exposed { path: path.to_path_buf(), mode });
        }
        let text = fs::read_to_string(path).map_err(io)?;
        let tables = parse(&text).map_err(|(offset, message)| SecretsError::Parse {
            path: path.to_path_buf(),
            line: text[..offset.min(text.len())].matches('\n').count() + 1,
            message,
        })?;
        Ok(Secrets { tables })
    }

    pub fn save(&self, path: &Path) -> Result<(), SecretsError> {
        let mut text = String::from(
            "# Generated by groundwork. Keep this file private (0600); back it up with the state directory.\n",
        );
        text.push_str(&toml::to_string(&self.tables).expect("string tables serialize"));
        super::write_private(path, text.as_bytes(), 0o600)
            .map_err(|source| SecretsError::Io { path: path.to_path_buf(), source })
    }

    /// The secrets as a JSON object of tables, for templates (`secrets.tsig.ddns_key`).
    pub fn to_json(&self) -> serde_json::Value {
        let tables: serde_json::Map<String, serde_json::Value> = self
            .tables
            .iter()
            .filter(|(t, _)| t.as_str() != PREVIOUS)
            .map(|(t, m)| {
                let inner: serde_json::Map<String, serde_json::Value> =
                    m.iter().map(|(k, v)| (k.replace('-', "_"), serde_json::Value::String(v.clone()))).collect();
                (t.replace('-', "_"), serde_json::Value::Object(inner))
            })
            .collect();
        serde_json::Value::Object(tables)
    }

    pub fn get(&self, table: &str, key: &str) -> Option<&str> {
        self.tables.get(table)?.get(key).map(String::as_str)
    }

    /// Sets one value (a test's fixed secrets; a value made elsewhere).
    pub fn insert(&mut self, table: &str, key: &str, value: &str) {
        self.tables.entry(table.to_string()).or_default().insert(key.to_string(), value.to_string());
    }

    /// Removes one value; `None` when it was not there.
    pub fn remove(&mut self, table: &str, key: &str) -> Option<String> {
        let t = self.tables.get_mut(table)?;
        let old = t.remove(key);
        if t.is_empty() {
            self.tables.remove(table);
        }
        old
    }

    /// The TSIG key clients sign with (kea-dhcp-ddns, zone transfers and NOTIFY between the
    /// servers, `verify`): its name and value. While `groundwork rotate tsig` rolls a new key
    /// out, `tsig.ddns-key-next` holds it: every server learns it first and forgets it last, so
    /// the clients move to it and back without a moment where their updates are refused.
    pub fn tsig_client(&self) -> Option<(&'static str, &str)> {
        let main = self.get(TSIG.0, TSIG.1)?;
        match self.get(TSIG_NEXT.0, TSIG_NEXT.1) {
            Some(next) if next != main => Some((TSIG_NEXT.1, next)),
            _ => Some((TSIG.1, main)),
        }
    }

    /// Every value, for redacting logs and plans.
    pub fn values(&self) -> impl Iterator<Item = &str> {
        self.tables.values().flat_map(|m| m.values().map(String::as_str))
    }

    fn ensure(&mut self, table: &str, key: &str, make: impl FnOnce() -> String, made: &mut Vec<String>) {
        let t = self.tables.entry(table.to_string()).or_default();
        if !t.contains_key(key) {
            t.insert(key.to_string(), make());
            made.push(format!("{table}.{key}"));
        }
    }

    /// Generate whatever the site needs and does not have yet; existing values are kept.
    /// Returns the names (never the values) of what was generated.
    pub fn ensure_for(&mut self, a: &Answers) -> Vec<String> {
        let mut made = Vec::new();
        if a.has_role(Role::Dns) {
            self.ensure(TSIG.0, TSIG.1, || random_base64(32), &mut made);
        }
        if a.has_role(Role::Ldap) {
            self.ensure("ldap", "admin", || password(24), &mut made);
            self.ensure("ldap", "service", || password(24), &mut made);
        }
        for d in &a.databases.postgresql {
            self.ensure("postgresql", &d.user, || password(24), &mut made);
        }
        for d in &a.databases.mariadb {
            self.ensure("mariadb", &d.user, || password(24), &mut made);
        }
        if a.k3s.is_some() {
            self.ensure("k3s", "token", || password(48), &mut made);
        }
        // The deploy key the cluster reads an ssh repository with (its public half is shown).
        if let Some(g) = &a.gitops
            && crate::handoff::sync::RepoUrl::parse(&g.repository)
                .is_ok_and(|r| r.scheme == crate::handoff::sync::Scheme::Ssh)
        {
            let (table, key) = crate::handoff::sync::DEPLOY_KEY;
            self.ensure(table, key, || crate::handoff::sync::new_deploy_key(&a.site.name), &mut made);
        }
        made
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_long_random_and_plain() {
        let a = password(24);
        let b = password(24);
        assert_eq!(a.len(), 24);
        assert_ne!(a, b);
        assert!(a.bytes().all(|c| PASSWORD_CHARS.contains(&c)));
        let key = base64::engine::general_purpose::STANDARD.decode(random_base64(32)).unwrap();
        assert_eq!(key.len(), 32);
    }

    #[test]
    fn saved_file_is_private_and_reloads_and_refuses_when_exposed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secrets.toml");
        let mut s = Secrets::default();
        let mut made = Vec::new();
        s.ensure("ldap", "admin", || "x".repeat(8), &mut made);
        s.save(&path).unwrap();
        let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert_eq!(Secrets::load(&path).unwrap(), s);
        assert!(!format!("{s:?}").contains("xxxxxxxx"));
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
        let err = Secrets::load(&path).unwrap_err().to_string();
        assert!(err.contains("readable by other users"), "{err}");
    }

    #[test]
    fn a_damaged_file_is_named_with_its_line_and_no_value() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secrets.toml");
        for (text, line, words) in [
            ("[ldap]\nadmin = \"Sup3rS3cret\"\nservice = 42\n", 3, "[ldap] `service` is not a string"),
            ("[ldap]\nadmin = \"Sup3rS3cret\"\n[tsig]\nddns-key = \"Sup3rS3cret", 4, "TOML syntax"),
            ("# x\nadmin = \"Sup3rS3cret\"\n", 2, "`admin` is not a table"),
            ("[ldap]\nadmin = [\"Sup3rS3cret\"]\n", 2, "`admin` is not a string"),
            ("[ldap]\nadmin = \"Sup3rS3cret\"\nadmin = \"Sup3rS3cret\"\n", 3, "duplicate key"),
        ] {
            fs::write(&path, text).unwrap();
            fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).unwrap();
            let err = Secrets::load(&path).unwrap_err().to_string();
            let at = format!("{}:{line}: ", path.display());
            assert!(err.starts_with(&at) && err.contains(words), "{text:?}: {err}");
            assert!(!err.contains("Sup3rS3cret") && !err.contains("S3cret"), "{err}");
        }
    }
}
