//! Rules for answer files. Each rule reports the path of the field at fault, so the report can
//! point at the line.
//!
//! Two kinds: the check of each string field on its own ([`field_check`], by the field's path;
//! the wizard runs them on each answer as it is typed, and `validate` on every string of the
//! file before anything else), and the rules across fields and sections ([`check_cross`]).
//! Every string field has a check, and every check starts with a length limit, so no value of
//! any size costs more than a glance.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr};

use super::model::*;
use super::report::{Problem, shown};

/// Every problem in `a`, in file order as far as possible, but the needs between roles: they
/// come from the role catalog (`plan::needs_problems`).
pub fn check(a: &Answers) -> Vec<Problem> {
    let mut out = check_fields(a);
    out.extend(check_cross(a));
    out
}

/// The rules across fields and sections, for answers whose strings were checked already.
pub fn check_cross(a: &Answers) -> Vec<Problem> {
    let mut out = Vec::new();
    cross(a, &mut out);
    out
}

fn cross(a: &Answers, out: &mut Vec<Problem>) {
    site(a, out);
    network(a, out);
    hosts(a, out);
    databases(a, out);
    ldap(a, out);
    k3s(a, out);
    gitops(a, out);
    proxmox(a, out);
}

/// The field check of every string in `a` (as serialized: the same paths as in the file).
pub fn check_fields(a: &Answers) -> Vec<Problem> {
    let mut out = Vec::new();
    match serde_json::to_value(a) {
        Ok(v) => strings_of(&v, &mut String::new(), &mut String::new(), &mut out),
        Err(e) => out.push(Problem::new("", format!("the answers cannot be checked: {e}"))),
    }
    out
}

fn strings_of(v: &serde_json::Value, path: &mut String, pattern: &mut String, out: &mut Vec<Problem>) {
    let (path_len, pattern_len) = (path.len(), pattern.len());
    match v {
        serde_json::Value::String(s) => {
            if let Some(check) = field_check(pattern) {
                push(out, path.clone(), check(s));
            }
        }
        serde_json::Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                path.push_str(&format!("[{i}]"));
                pattern.push_str("[]");
                strings_of(item, path, pattern, out);
                path.truncate(path_len);
                pattern.truncate(pattern_len);
            }
        }
        serde_json::Value::Object(map) => {
            for (k, item) in map {
                let dot = if path.is_empty() { "" } else { "." };
                path.push_str(dot);
                path.push_str(k);
                pattern.push_str(dot);
                pattern.push_str(k);
                strings_of(item, path, pattern, out);
                path.truncate(path_len);
                pattern.truncate(pattern_len);
            }
        }
        _ => {}
    }
}

// ---------------------------------------------------------------- single fields

/// The check of one string field.
pub type Check = fn(&str) -> Result<(), String>;

/// The check of the string field at `pattern`: its path with the list indexes left out
/// (`host[].name`). `None` for strings that are not free-form (addresses, subnets, roles:
/// their type decides), and for paths that are not fields.
pub fn field_check(pattern: &str) -> Option<Check> {
    Some(match pattern {
        "site.name" => check_site_name,
        "site.internal-domain" | "site.external-domain" => check_fqdn,
        "site.timezone" => check_timezone,
        "site.admin-email" => check_email,
        "host[].name" | "network.reservation[].name" => check_host_name,
        "host[].ssh-user" => check_unix_user,
        "host[].ssh-key" | "k3s.airgap-bundle" | "site.package-bundle" | "proxmox.token-secret-file" => {
            check_local_path
        }
        "databases.postgresql[].name" => check_pg_database,
        "databases.postgresql[].user" => check_pg_user,
        "databases.mariadb[].name" => check_mariadb_database,
        "databases.mariadb[].user" => check_mariadb_user,
        "ldap.organisation" => check_organisation,
        "ldap.extra-ous[]" => check_ou,
        "ldap.tls-cert" | "ldap.tls-key" => check_host_path,
        "k3s.version" => check_k3s_version,
        "k3s.api-endpoint" => check_api_endpoint,
        "gitops.repository" => check_git_url,
        "gitops.branch" => check_branch,
        "gitops.path" => check_repo_path,
        "gitops.known-hosts" => check_known_hosts_text,
        "gitops.token-file" => check_local_path,
        "gitops.token-env" => check_env_name,
        "gitops.token-username" => check_token_username,
        "gitops.contract-namespaces[]" => check_namespace,
        "proxmox.api-url" => check_https_url,
        "proxmox.token-id" => check_token_id,
        "proxmox.token-secret" => check_inline_secret,
        "proxmox.token-secret-env" => check_env_name,
        "proxmox.fingerprint" => check_fingerprint,
        "proxmox.node" => check_proxmox_node,
        "proxmox.storage" | "proxmox.template" => check_proxmox_name,
        "proxmox.ct-template" => check_ct_template,
        "proxmox.bridge" => check_bridge,
        _ => return None,
    })
}

/// Free text that reaches a template as it is: any printable character, quotes included, so
/// the places that use it must quote it. The injection test lists these; keep them few.
pub const FREE_TEXT_FIELDS: &[&str] = &[
    "ldap.organisation",
    "host[].ssh-key",
    "k3s.airgap-bundle",
    "site.package-bundle",
    "proxmox.token-secret-file",
    "gitops.token-file",
];

/// Fields whose value is a secret: never quoted in a message nor drawn in a report.
pub const SECRET_FIELDS: &[&str] = &["proxmox.token-secret"];

/// Longest path accepted (PATH_MAX on Linux).
pub const MAX_PATH: usize = 4096;
/// Longest URL accepted.
const MAX_URL: usize = 2048;

/// More than `max` characters (counting no further than needed).
fn longer_than(s: &str, max: usize) -> bool {
    s.len() > max && s.chars().nth(max).is_some()
}

fn too_long(what: &str, max: usize) -> String {
    format!("{what} is longer than {max} characters")
}

/// Characters no value of an answer file has a use for: control characters (NUL, line
/// breaks, tabs, DEL, C1), line/paragraph separators and the invisible format characters
/// that make text read differently from what it is (bidi overrides, zero-width).
pub fn is_hidden_char(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{200b}'..='\u{200f}'
                | '\u{2028}'..='\u{202e}'
                | '\u{2060}'..='\u{2064}'
                | '\u{2066}'..='\u{2069}'
                | '\u{feff}'
        )
}

/// A character as a message names it.
fn named(c: char) -> String {
    match c {
        ' ' => "a space".into(),
        '\n' | '\r' => "a line break".into(),
        '\t' => "a tab".into(),
        '\0' => "a NUL character".into(),
        '`' => "a backtick".into(),
        c if is_hidden_char(c) => format!("the control character U+{:04X}", u32::from(c)),
        c => format!("`{c}`"),
    }
}

/// The first character of `s` that `ok` refuses.
fn first_bad(s: &str, ok: impl Fn(char) -> bool) -> Option<char> {
    s.chars().find(|c| !ok(*c))
}

/// A fully qualified domain name: two or more labels, lowercase, no trailing dot.
pub fn check_fqdn(s: &str) -> Result<(), String> {
    if s.is_empty() {
        return Err("a domain name is required".into());
    }
    if s.len() > 253 {
        return Err(too_long("a domain name", 253));
    }
    if s.ends_with('.') {
        return Err(format!("`{}` ends with a dot; write the domain without it (e.g. example.org)", shown(s)));
    }
    let labels: Vec<&str> = s.split('.').collect();
    if labels.len() < 2 {
        return Err(format!("`{s}` is not a fully qualified domain name (it needs a dot, e.g. `{s}.example.org`)"));
    }
    for l in &labels {
        check_label(l).map_err(|e| format!("`{s}` is not a valid domain name: {e}"))?;
    }
    if labels.last().is_some_and(|l| l.chars().all(|c| c.is_ascii_digit())) {
        return Err(format!("`{s}` ends in a numeric label, which no domain can"));
    }
    Ok(())
}

/// One DNS label: `a-z`, `0-9`, `-`, at most 63, no leading/trailing `-`.
pub fn check_label(l: &str) -> Result<(), String> {
    if l.is_empty() {
        return Err("empty label (two dots in a row?)".into());
    }
    if l.len() > 63 {
        return Err(format!("label `{}` is longer than 63 characters", shown(l)));
    }
    if l.chars().any(|c| c.is_ascii_uppercase()) {
        return Err(format!("`{l}` has uppercase letters; write it in lowercase"));
    }
    if let Some(c) = first_bad(l, |c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-') {
        return Err(format!("`{}` contains {}; only a-z, 0-9 and - are allowed", shown(l), named(c)));
    }
    if l.starts_with('-') || l.ends_with('-') {
        return Err(format!("`{l}` starts or ends with `-`"));
    }
    Ok(())
}

/// A host name: a label (RFC 1123) that is neither all digits (it would read as an address)
/// nor `localhost` (every machine's name for itself).
pub fn check_host_name(s: &str) -> Result<(), String> {
    check_label(s)?;
    if s.chars().all(|c| c.is_ascii_digit()) {
        return Err(format!("`{s}` is all digits; a host name needs a letter (RFC 1123), or it reads as an address"));
    }
    if s == "localhost" {
        return Err("`localhost` is every machine's name for itself; choose another name".into());
    }
    Ok(())
}

/// An address that fits everywhere it goes (the SOA record, certificates, alerts): a local
/// part of letters, digits and `. _ + -`, and a domain name.
pub fn check_email(s: &str) -> Result<(), String> {
    if s.len() > 254 {
        return Err(too_long("an e-mail address", 254));
    }
    let bad = |why: String| format!("`{}` is not an e-mail address (e.g. ops@example.org): {why}", shown(s));
    let Some((local, domain)) = s.split_once('@') else {
        return Err(bad("it has no @".into()));
    };
    if local.is_empty() || local.len() > 64 {
        return Err(bad("the part before @ must be 1 to 64 characters".into()));
    }
    if let Some(c) = first_bad(local, |c| c.is_ascii_alphanumeric() || "._+-".contains(c)) {
        return Err(bad(format!("the part before @ contains {}; use letters, digits and . _ + -", named(c))));
    }
    if local.starts_with('.') || local.ends_with('.') || local.contains("..") {
        return Err(bad("the part before @ starts or ends with a dot, or has two in a row".into()));
    }
    check_fqdn(domain).map_err(bad)
}

pub fn check_timezone(s: &str) -> Result<(), String> {
    if s.len() > 64 {
        return Err(too_long("a time zone name", 64));
    }
    let ok_syntax = !s.is_empty()
        && s.split('/')
            .all(|part| !part.is_empty() && part.chars().all(|c| c.is_ascii_alphanumeric() || "_+-".contains(c)));
    if !ok_syntax {
        return Err(format!("`{}` is not a time zone name (e.g. Europe/Berlin, UTC)", shown(s)));
    }
    let zoneinfo = std::path::Path::new("/usr/share/zoneinfo");
    if zoneinfo.join("UTC").exists() && !zoneinfo.join(s).is_file() {
        return Err(format!("`{s}` is not a known time zone (see /usr/share/zoneinfo)"));
    }
    Ok(())
}

pub fn check_site_name(s: &str) -> Result<(), String> {
    check_label(s).map_err(|e| format!("site name: {e}"))
}

/// A database or database user name that no engine needs quoted: lowercase letters, digits
/// and `_`, starting with a letter or `_`. (`_` is a wildcard in MariaDB's GRANT ... ON
/// `db`.*; the grant escapes it.)
pub fn check_sql_name(s: &str, what: &str, max: usize) -> Result<(), String> {
    if s.is_empty() {
        return Err(format!("{what} is empty"));
    }
    if s.len() > max {
        return Err(format!("{what} `{}` is longer than {max} characters", shown(s)));
    }
    if let Some(c) = first_bad(s, |c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_') {
        return Err(format!("{what} `{}` contains {}; use lowercase letters, digits and _", shown(s), named(c)));
    }
    if !s.starts_with(|c: char| c.is_ascii_lowercase() || c == '_') {
        return Err(format!("{what} `{s}` must start with a letter or _"));
    }
    Ok(())
}

/// Words that pg_hba.conf reads as keywords in its database and user columns.
const PG_HBA_KEYWORDS: &[&str] = &["all", "sameuser", "samerole", "samegroup", "replication"];

/// PostgreSQL's reserved key words (reserved, and reserved but allowed as function or type
/// names: neither is a database name without quotes). Appendix C of the manual, as of 16.
#[rustfmt::skip]
const PG_RESERVED: &[&str] = &[
    "all", "analyse", "analyze", "and", "any", "array", "as", "asc", "asymmetric", "authorization",
    "binary", "both", "case", "cast", "check", "collate", "collation", "column", "concurrently",
    "constraint", "create", "cross", "current_catalog", "current_date", "current_role",
    "current_schema", "current_time", "current_timestamp", "current_user", "default", "deferrable",
    "desc", "distinct", "do", "else", "end", "except", "false", "fetch", "for", "foreign",
    "freeze", "from", "full", "grant", "group", "having", "ilike", "in", "initially", "inner",
    "intersect", "into", "is", "isnull", "join", "lateral", "leading", "left", "like", "limit",
    "localtime", "localtimestamp", "natural", "not", "notnull", "null", "offset", "on", "only",
    "or", "order", "outer", "overlaps", "placing", "primary", "references", "returning", "right",
    "select", "session_user", "similar", "some", "symmetric", "system_user", "table",
    "tablesample", "then", "to", "trailing", "true", "union", "unique", "user", "using",
    "variadic", "verbose", "when", "where", "window", "with",
];

/// The PostgreSQL rules every name shares: pg_hba keywords, key words, the `pg_` prefix.
fn check_pg_name(s: &str, what: &str) -> Result<(), String> {
    check_sql_name(s, what, 63)?;
    if PG_HBA_KEYWORDS.contains(&s) {
        return Err(format!(
            "`{s}` is a keyword in pg_hba.conf (all, sameuser, samerole, samegroup, replication): the access rule would match more than this {what}"
        ));
    }
    if PG_RESERVED.contains(&s) {
        return Err(format!("`{s}` is a reserved word of PostgreSQL's SQL; choose another {what}"));
    }
    if s.starts_with("pg_") {
        return Err(format!("names starting with pg_ are reserved by PostgreSQL; choose another {what}"));
    }
    Ok(())
}

pub fn check_pg_database(s: &str) -> Result<(), String> {
    check_pg_name(s, "database name")?;
    if ["postgres", "template0", "template1"].contains(&s) {
        return Err(format!("`{s}` is a system database of postgresql"));
    }
    Ok(())
}

pub fn check_pg_user(s: &str) -> Result<(), String> {
    check_pg_name(s, "user name")?;
    if ["postgres", "root"].contains(&s) {
        return Err(format!("`{s}` is a system account of postgresql"));
    }
    // Role names PostgreSQL reserves for the pseudo-roles of GRANT and SET ROLE.
    if ["public", "none"].contains(&s) {
        return Err(format!("`{s}` is a reserved role name of postgresql"));
    }
    Ok(())
}

pub fn check_mariadb_database(s: &str) -> Result<(), String> {
    check_sql_name(s, "database name", 64)?;
    if ["mysql", "information_schema", "performance_schema", "sys"].contains(&s) {
        return Err(format!("`{s}` is a system database of mariadb"));
    }
    Ok(())
}

pub fn check_mariadb_user(s: &str) -> Result<(), String> {
    // 80 characters: the user column of MariaDB 10.11 (Debian 12).
    check_sql_name(s, "user name", 80)?;
    if ["root", "mysql", "mariadb"].contains(&s) {
        return Err(format!("`{s}` is a system account of mariadb"));
    }
    // PUBLIC (GRANT ... TO PUBLIC, 10.11), NONE (SET ROLE NONE), CURRENT_USER/CURRENT_ROLE.
    if ["public", "none", "current_user", "current_role"].contains(&s) {
        return Err(format!("`{s}` is a reserved role name of mariadb"));
    }
    Ok(())
}

pub fn check_unix_user(s: &str) -> Result<(), String> {
    let ok = !s.is_empty()
        && s.len() <= 32
        && s.starts_with(|c: char| c.is_ascii_lowercase() || c == '_')
        && s.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "`{}` is not a valid user name (at most 32 of a-z, 0-9, _ and -, starting with a letter or _)",
            shown(s)
        ))
    }
}

/// The organisation: one line of printable text of at most 64 characters (X.520's bound for
/// `o`), that LDIF takes as it is (no leading space, `:`, `<` or `#`, no trailing space).
/// Quotes and other punctuation are allowed: "O'Reilly & Co." is a name.
pub fn check_organisation(s: &str) -> Result<(), String> {
    if longer_than(s, 64) {
        return Err(too_long("the organisation name", 64));
    }
    if s.trim().is_empty() {
        return Err("the organisation name is empty".into());
    }
    if s.contains(['\n', '\r']) {
        return Err("the organisation name must be one line".into());
    }
    if let Some(c) = s.chars().find(|c| is_hidden_char(*c)) {
        return Err(format!("the organisation name contains {}", named(c)));
    }
    if s.starts_with([' ', ':', '<', '#']) || s.ends_with(' ') {
        return Err(
            "the organisation name must not start with a space, `:`, `<` or `#`, nor end with a space (it becomes the `o` attribute of the directory's base entry)"
                .into(),
        );
    }
    Ok(())
}

pub fn check_ou(s: &str) -> Result<(), String> {
    let ok = !s.is_empty() && s.len() <= 64 && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if !ok {
        return Err(format!("`{}` is not a usable OU name (1 to 64 letters, digits, - and _)", shown(s)));
    }
    if ["people", "groups", "services"].contains(&s.to_ascii_lowercase().as_str()) {
        return Err(format!("`{s}` is always created; it needs no entry here"));
    }
    Ok(())
}

/// A file on a managed host, which commands on that host name: absolute, and only characters
/// that mean nothing to a shell (letters, digits and `/ . _ - + , = @ % :`).
pub fn check_host_path(s: &str) -> Result<(), String> {
    if s.is_empty() {
        return Err("the path is empty".into());
    }
    if s.len() > MAX_PATH {
        return Err(too_long("the path", MAX_PATH));
    }
    if let Some(c) = first_bad(s, |c| c.is_ascii_alphanumeric() || "/._-+,=@%:".contains(c)) {
        return Err(format!(
            "`{}` contains {}; a path on the host may use letters, digits and / . _ - + , = @ % :",
            shown(s),
            named(c)
        ));
    }
    if !s.starts_with('/') {
        return Err(format!(
            "`{}` is not an absolute path (it is read on the host, e.g. /etc/ssl/private/ldap.pem)",
            shown(s)
        ));
    }
    if s.ends_with('/') {
        return Err(format!("`{}` names a directory, not a file", shown(s)));
    }
    Ok(())
}

/// A file or directory on this machine (the one groundwork runs on), which groundwork opens
/// itself: any printable characters, `~` for the home directory.
pub fn check_local_path(s: &str) -> Result<(), String> {
    if s.is_empty() {
        return Err("the path is empty".into());
    }
    if s.len() > MAX_PATH {
        return Err(too_long("the path", MAX_PATH));
    }
    if let Some(c) = s.chars().find(|c| is_hidden_char(*c)) {
        return Err(format!("the path contains {}", named(c)));
    }
    Ok(())
}

/// A DNS name or an IPv4 address: what agents and kubectl connect to, and a SAN of the API
/// certificate.
pub fn check_api_endpoint(s: &str) -> Result<(), String> {
    if s.parse::<Ipv4Addr>().is_ok() {
        return Ok(());
    }
    check_fqdn(s).map_err(|e| format!("{e} (the API endpoint is a DNS name or an IPv4 address)"))
}

pub fn check_k3s_version(s: &str) -> Result<(), String> {
    let bad = || format!("`{}` is not a k3s release (e.g. v1.35.6+k3s1)", shown(s));
    if s.len() > 64 {
        return Err(bad());
    }
    let rest = s.strip_prefix('v').ok_or_else(bad)?;
    let (semver, build) = rest.split_once("+k3s").ok_or_else(bad)?;
    let parts: Vec<&str> = semver.split('.').collect();
    let num = |p: &str| !p.is_empty() && p.chars().all(|c| c.is_ascii_digit());
    if parts.len() == 3 && parts.iter().all(|p| num(p)) && num(build) { Ok(()) } else { Err(bad()) }
}

/// The characters a URL here may use: unreserved, `:/@%+` and `[]` for IPv6 hosts. No
/// quotes, `$`, `;`, `&`, spaces: none is needed to name a repository or an API.
fn url_chars(s: &str, what: &str) -> Result<(), String> {
    if s.len() > MAX_URL {
        return Err(too_long(what, MAX_URL));
    }
    match first_bad(s, |c| c.is_ascii_alphanumeric() || "-._~:/@%+[]".contains(c)) {
        Some(c) => Err(format!(
            "`{}` contains {}; a URL here may use letters, digits and - . _ ~ : / @ % + [ ]",
            shown(s),
            named(c)
        )),
        None => Ok(()),
    }
}

pub fn check_git_url(s: &str) -> Result<(), String> {
    url_chars(s, "the repository URL")?;
    if let Some(rest) = s.strip_prefix("https://").or_else(|| s.strip_prefix("ssh://")) {
        let host = rest.split(['/', ':', '@']).find(|p| !p.is_empty() && p.contains('.'));
        if host.is_some() && rest.contains('/') {
            return Ok(());
        }
    } else if let Some(rest) = s.strip_prefix("git@") {
        if let Some((host, path)) = rest.split_once(':')
            && !host.is_empty()
            && !path.is_empty()
            && !path.starts_with('-')
        {
            return Ok(());
        }
    } else if s.starts_with("http://") {
        return Err(format!(
            "`{}` uses plain http; the cluster would pull its state unauthenticated: use https:// or ssh://",
            shown(s)
        ));
    }
    Err(format!(
        "`{}` is not a git repository URL (https://host/org/repo.git, ssh://git@host/org/repo.git or git@host:org/repo.git)",
        shown(s)
    ))
}

/// A branch name as `git check-ref-format --branch` takes it, narrowed to letters, digits and
/// `- . _ /` (so it cannot be an option or a shell word).
pub fn check_branch(s: &str) -> Result<(), String> {
    let ok = !s.is_empty()
        && s.len() <= 255
        && s.chars().all(|c| c.is_ascii_alphanumeric() || "-._/".contains(c))
        && !s.starts_with(['-', '/', '.'])
        && !s.ends_with(['/', '.'])
        && !s.ends_with(".lock")
        && !s.contains("..")
        && !s.contains("//")
        && !s.contains("/.");
    if ok {
        Ok(())
    } else {
        Err(format!("`{}` is not a branch name (letters, digits, - . _ and /, not starting with - or /)", shown(s)))
    }
}

/// A folder inside the repository: relative, letters, digits and `- . _ /`, no `..`.
pub fn check_repo_path(s: &str) -> Result<(), String> {
    let outside = s.starts_with('/') || s.split('/').any(|p| p == "..");
    let ok = !s.is_empty()
        && s.len() <= MAX_PATH
        && s.chars().all(|c| c.is_ascii_alphanumeric() || "-._/".contains(c))
        && !s.starts_with('-');
    if outside || !ok {
        return Err(format!(
            "`{}` must be a path inside the repository (letters, digits, - . _ and /; e.g. ./clusters/site)",
            shown(s)
        ));
    }
    Ok(())
}

/// `known_hosts` lines for one Git host, at most 64: host patterns, key types, base64 keys,
/// comments made of letters, digits and `@ . - _`. Whether each line is a key for the
/// repository's host is a rule across fields.
pub fn check_known_hosts_text(s: &str) -> Result<(), String> {
    if s.len() > 65536 || s.lines().count() > 64 {
        return Err("known-hosts is longer than 64 lines or 64 KiB".into());
    }
    if let Some(c) = first_bad(s, |c| c.is_ascii_alphanumeric() || " \t\n[]:*?!,|.-_+/=@#".contains(c)) {
        return Err(format!(
            "known-hosts contains {}; it holds known_hosts lines (`host ssh-ed25519 AAAA...`)",
            named(c)
        ));
    }
    if s.trim().is_empty() {
        return Err("known-hosts is empty".into());
    }
    Ok(())
}

/// The user name sent with an https token: letters, digits and `- _ . @`.
pub fn check_token_username(s: &str) -> Result<(), String> {
    let ok = !s.is_empty() && s.len() <= 128 && s.chars().all(|c| c.is_ascii_alphanumeric() || "-_.@".contains(c));
    if ok { Ok(()) } else { Err(format!("`{}` is not a user name (letters, digits and - _ . @)", shown(s))) }
}

/// A Kubernetes namespace name: a DNS-1123 label, and not one of the cluster's own.
pub fn check_namespace(s: &str) -> Result<(), String> {
    if !crate::handoff::contract::is_dns_label(s) {
        return Err(format!(
            "`{}` is not a namespace name (1 to 63 lowercase letters, digits and -, not starting or ending with -)",
            shown(s)
        ));
    }
    if s.starts_with("kube-") || s == "default" {
        return Err(format!("`{s}` is one of the cluster's own namespaces; name the applications' namespaces"));
    }
    if s == crate::handoff::contract::NAMESPACE {
        return Err(format!("`{s}` holds the contract already"));
    }
    Ok(())
}

pub fn check_https_url(s: &str) -> Result<(), String> {
    let Some(rest) = s.strip_prefix("https://") else {
        return Err(format!(
            "`{}` is not an https:// URL; the API token must not cross the network in clear",
            shown(s)
        ));
    };
    url_chars(s, "the URL")?;
    let host = rest.split(['/', '?']).next().unwrap_or("");
    let host =
        host.rsplit_once(':').map_or(host, |(h, port)| if port.chars().all(|c| c.is_ascii_digit()) { h } else { host });
    if host.is_empty() {
        return Err(format!("`{}` has no host name", shown(s)));
    }
    Ok(())
}

/// `user@realm!token-name`, each part letters, digits and `- _ .`.
pub fn check_token_id(s: &str) -> Result<(), String> {
    let part = |p: &str| !p.is_empty() && p.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
    let ok = s.len() <= 128
        && s.split_once('@').is_some_and(|(user, rest)| {
            part(user) && rest.split_once('!').is_some_and(|(realm, name)| part(realm) && part(name))
        });
    if ok { Ok(()) } else { Err(format!("`{}` is not an API token id (user@realm!token-name)", shown(s))) }
}

/// An inline token secret (a UUID for Proxmox). Never quoted back: it is a secret.
pub fn check_inline_secret(s: &str) -> Result<(), String> {
    let ok = !s.is_empty() && s.len() <= 256 && s.chars().all(|c| c.is_ascii_alphanumeric() || "-_.:+/=".contains(c));
    if ok {
        Ok(())
    } else {
        Err("the token secret is not a token secret (1 to 256 letters, digits and - _ . : + / =)".into())
    }
}

pub fn check_env_name(s: &str) -> Result<(), String> {
    let ok = !s.is_empty()
        && s.len() <= 128
        && !s.starts_with(|c: char| c.is_ascii_digit())
        && s.chars().all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_');
    if ok { Ok(()) } else { Err(format!("`{}` is not an environment variable name (e.g. PVE_TOKEN)", shown(s))) }
}

pub fn check_fingerprint(s: &str) -> Result<(), String> {
    let parts: Vec<&str> = if s.len() == 95 { s.split(':').collect() } else { Vec::new() };
    let ok = parts.len() == 32 && parts.iter().all(|x| x.len() == 2 && x.chars().all(|c| c.is_ascii_hexdigit()));
    if ok { Ok(()) } else { Err("not a SHA-256 fingerprint (32 hex pairs separated by `:`)".into()) }
}

/// A Proxmox node: its host name.
pub fn check_proxmox_node(s: &str) -> Result<(), String> {
    if s.trim().is_empty() {
        return Err("node is empty".into());
    }
    let ok = s.len() <= 63 && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '-');
    if ok { Ok(()) } else { Err(format!("`{}` is not a node name (letters, digits and -)", shown(s))) }
}

/// A Proxmox storage id or template name.
pub fn check_proxmox_name(s: &str) -> Result<(), String> {
    if s.trim().is_empty() {
        return Err("the name is empty".into());
    }
    let ok = s.len() <= 128 && s.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
    if ok { Ok(()) } else { Err(format!("`{}` is not a usable name (letters, digits, - _ and .)", shown(s))) }
}

/// A container template volume: `storage:vztmpl/file.tar.[gz|xz|zst]`.
pub fn check_ct_template(s: &str) -> Result<(), String> {
    let bad = || {
        format!(
            "`{}` is not a container template volume (storage:vztmpl/file, e.g. local:vztmpl/debian-12-standard_12.7-1_amd64.tar.zst)",
            shown(s)
        )
    };
    if s.len() > 255 {
        return Err(bad());
    }
    let Some((storage, rest)) = s.split_once(':') else { return Err(bad()) };
    let Some(file) = rest.strip_prefix("vztmpl/") else { return Err(bad()) };
    let name_ok = |x: &str| !x.is_empty() && x.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
    if !name_ok(storage) || !name_ok(file) || file.starts_with('.') {
        return Err(bad());
    }
    Ok(())
}

/// A Linux bridge (or SDN VNet) name: at most 15 of letters, digits and `- _ .`.
pub fn check_bridge(s: &str) -> Result<(), String> {
    let ok = !s.is_empty() && s.len() <= 15 && s.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
    if ok { Ok(()) } else { Err(format!("`{}` is not a bridge name (at most 15 letters, digits, - _ .)", shown(s))) }
}

fn usable_in(subnet: &Subnet, ip: Ipv4Addr) -> Result<(), String> {
    if !subnet.contains(ip) {
        return Err(format!("{ip} is outside network.subnet {subnet}"));
    }
    if ip == subnet.network() {
        return Err(format!("{ip} is the network address of {subnet}"));
    }
    if ip == subnet.broadcast() {
        return Err(format!("{ip} is the broadcast address of {subnet}"));
    }
    Ok(())
}

// ---------------------------------------------------------------- across fields
//
// Every rule here is linear (or n log n) in the size of the file: maps and sorted lists, no
// comparison of each item with every other, so a file of a thousand ranges or hosts is
// checked as fast as a small one and reports at most a few problems per item.

fn push(out: &mut Vec<Problem>, field: String, r: Result<(), String>) {
    if let Err(e) = r {
        out.push(Problem::new(field, e));
    }
}

fn site(a: &Answers, out: &mut Vec<Problem>) {
    let s = &a.site;
    if s.internal_domain == s.external_domain {
        out.push(
            Problem::new("site.external-domain", "the external domain is the same as the internal domain")
                .help("use a subdomain inside, e.g. internal-domain = \"int.example.org\"")
                .see("site.internal-domain", "internal domain"),
        );
    }
}

fn network(a: &Answers, out: &mut Vec<Problem>) {
    let n = &a.network;
    let subnet = n.subnet;
    if !(8..=30).contains(&subnet.prefix()) {
        out.push(
            Problem::new("network.subnet", format!("/{} is not a usable site subnet", subnet.prefix()))
                .help("use a prefix between /8 and /30"),
        );
    }
    push(out, "network.gateway".into(), usable_in(&subnet, n.gateway));
    forwarders(a, out);
    if !(60..=31_536_000).contains(&n.lease_time) {
        out.push(Problem::new(
            "network.lease-time",
            format!("{} s is not a sensible lease time (60 s to one year)", n.lease_time),
        ));
    }
    dhcp_ranges(a, out);
    reservations(a, out);

    let has_dhcp_config = !n.dhcp_ranges.is_empty() || !n.reservations.is_empty();
    if let Some((i, _)) = a.hosts_with(Role::Dhcp).next() {
        if !has_dhcp_config {
            out.push(
                Problem::new(role_field(a, i, Role::Dhcp), "the dhcp role has nothing to hand out")
                    .help("add a [[network.dhcp-range]] or a [[network.reservation]]"),
            );
        }
    } else if !n.dhcp_ranges.is_empty() {
        out.push(
            Problem::new("network.dhcp-range", "DHCP ranges are set but no host has the dhcp role")
                .help("add \"dhcp\" to the roles of the host that should serve them"),
        );
    }
}

/// Forwarders are resolvers outside the site: not this machine (loopback), not nothing
/// (unspecified), not a group (multicast, broadcast), not one of the site's own hosts.
fn forwarders(a: &Answers, out: &mut Vec<Problem>) {
    let host_at: HashMap<Ipv4Addr, usize> = a.hosts.iter().enumerate().rev().map(|(i, h)| (h.address, i)).collect();
    for (i, f) in a.network.forwarders.iter().enumerate() {
        let field = format!("network.forwarders[{i}]");
        let written = *f;
        // ::ffff:127.0.0.1 is 127.0.0.1.
        let f = f.to_canonical();
        if f.is_loopback() {
            out.push(
                Problem::new(field, format!("{written} is a loopback address"))
                    .help("forwarders are the upstream resolvers; the DNS server would ask itself"),
            );
        } else if f.is_unspecified() || f.is_multicast() || f == IpAddr::V4(Ipv4Addr::BROADCAST) {
            out.push(Problem::new(field, format!("{written} cannot be a DNS forwarder")));
        } else if let Some(j) = match f {
            IpAddr::V4(v4) => host_at.get(&v4).copied(),
            IpAddr::V6(_) => None,
        } {
            let h = &a.hosts[j];
            let message = if h.roles.contains(&Role::Dns) {
                format!("{f} is this site's own DNS server")
            } else {
                format!("{f} is the address of host `{}`, inside the site", shown(&h.name))
            };
            out.push(
                Problem::new(field, message)
                    .help("forwarders are the upstream resolvers; forwarding to the site itself loops")
                    .see(format!("host[{j}].address"), "host"),
            );
        }
    }
}

fn dhcp_ranges(a: &Answers, out: &mut Vec<Problem>) {
    let n = &a.network;
    // Host addresses in order, to find the ones inside a range by binary search.
    let mut hosts: Vec<(u32, usize)> = a.hosts.iter().enumerate().map(|(i, h)| (u32::from(h.address), i)).collect();
    hosts.sort_unstable();
    // Ranges fit to compare with each other: (start, end, index).
    let mut sound: Vec<(u32, u32, usize)> = Vec::new();
    for (i, r) in n.dhcp_ranges.iter().enumerate() {
        let base = format!("network.dhcp-range[{i}]");
        let mut inside = true;
        for (key, ip) in [("start", r.start), ("end", r.end)] {
            if let Err(e) = usable_in(&n.subnet, ip) {
                inside = false;
                out.push(Problem::new(format!("{base}.{key}"), e));
            }
        }
        let (start, end) = (u32::from(r.start), u32::from(r.end));
        if start > end {
            out.push(Problem::new(
                format!("{base}.end"),
                format!("the range ends ({}) before it starts ({})", r.end, r.start),
            ));
            continue;
        }
        if !inside {
            continue;
        }
        sound.push((start, end, i));
        if (start..=end).contains(&u32::from(n.gateway)) {
            out.push(
                Problem::new(format!("{base}.start"), format!("the range holds the gateway {}", n.gateway))
                    .see("network.gateway", "gateway"),
            );
        }
        let from = hosts.partition_point(|(ip, _)| *ip < start);
        let to = hosts.partition_point(|(ip, _)| *ip <= end);
        let held = &hosts[from..to];
        if !held.is_empty() {
            const LISTED: usize = 5;
            let mut list: Vec<String> = held
                .iter()
                .take(LISTED)
                .map(|(_, j)| format!("{} ({})", shown(&a.hosts[*j].name), a.hosts[*j].address))
                .collect();
            if held.len() > LISTED {
                list.push(format!("and {} more", held.len() - LISTED));
            }
            let mut p = Problem::new(
                format!("{base}.start"),
                format!(
                    "the range {}-{} holds the static address of host{} {}",
                    r.start,
                    r.end,
                    if held.len() == 1 { "" } else { "s" },
                    list.join(", ")
                ),
            )
            .help("shrink the range or move the hosts out of it");
            for (_, j) in held.iter().take(LISTED) {
                p = p.see(format!("host[{j}].address"), "static address");
            }
            out.push(p);
        }
    }
    // Overlaps: sorted by start, each range is compared with the one reaching furthest before
    // it, so every range that overlaps another is reported once, against one of them.
    sound.sort_unstable();
    let mut reach: Option<(u32, usize)> = None; // furthest end so far, and its range
    for &(start, end, i) in &sound {
        match reach {
            Some((far, j)) if start <= far => {
                let (at, other) = (i.max(j), i.min(j));
                let (r, o) = (&n.dhcp_ranges[at], &n.dhcp_ranges[other]);
                out.push(
                    Problem::new(
                        format!("network.dhcp-range[{at}].start"),
                        format!("the range {}-{} overlaps range {}-{}", r.start, r.end, o.start, o.end),
                    )
                    .see(format!("network.dhcp-range[{other}]"), "overlapping range"),
                );
                if end > far {
                    reach = Some((end, i));
                }
            }
            _ => reach = Some((end, i)),
        }
    }
}

fn reservations(a: &Answers, out: &mut Vec<Problem>) {
    let n = &a.network;
    let host_at: HashMap<Ipv4Addr, usize> = a.hosts.iter().enumerate().rev().map(|(i, h)| (h.address, i)).collect();
    let host_named: HashMap<&str, usize> =
        a.hosts.iter().enumerate().rev().map(|(i, h)| (h.name.as_str(), i)).collect();
    let mut macs: HashMap<MacAddr, usize> = HashMap::new();
    let mut addrs: HashMap<Ipv4Addr, usize> = HashMap::new();
    let mut names: HashMap<&str, usize> = HashMap::new();
    for (i, r) in n.reservations.iter().enumerate() {
        let base = format!("network.reservation[{i}]");
        if let Err(e) = usable_in(&n.subnet, r.address) {
            out.push(Problem::new(format!("{base}.address"), e));
        }
        if r.address == n.gateway {
            out.push(
                Problem::new(format!("{base}.address"), format!("{} is the gateway", r.address))
                    .see("network.gateway", "gateway"),
            );
        }
        if let Some(j) = host_at.get(&r.address) {
            out.push(
                Problem::new(
                    format!("{base}.address"),
                    format!("{} is the static address of host `{}`", r.address, shown(&a.hosts[*j].name)),
                )
                .see(format!("host[{j}].address"), "static address"),
            );
        }
        if let Some(j) = host_named.get(r.name.as_str()) {
            out.push(
                Problem::new(format!("{base}.name"), format!("`{}` is already the name of a host", shown(&r.name)))
                    .see(format!("host[{j}].name"), "host"),
            );
        }
        let dups = [
            (first_or_insert(&mut macs, r.mac, i), "mac", "MAC address"),
            (first_or_insert(&mut addrs, r.address, i), "address", "address"),
            (first_or_insert(&mut names, r.name.as_str(), i), "name", "name"),
        ];
        for (first, field, what) in dups {
            if let Some(first) = first {
                out.push(
                    Problem::new(
                        format!("{base}.{field}"),
                        format!("this {what} is already reserved by reservation {first}"),
                    )
                    .see(format!("network.reservation[{first}].{field}"), "first here"),
                );
            }
        }
    }
}

/// The index where `k` was first seen, or None (and remember `i`) if this is the first time.
fn first_or_insert<K: std::hash::Hash + Eq>(m: &mut HashMap<K, usize>, k: K, i: usize) -> Option<usize> {
    match m.get(&k) {
        Some(first) => Some(*first),
        None => {
            m.insert(k, i);
            None
        }
    }
}

/// The path of `role` in the roles of host `host`.
pub fn role_field(a: &Answers, host: usize, role: Role) -> String {
    match a.hosts[host].roles.iter().position(|r| *r == role) {
        Some(j) => format!("host[{host}].roles[{j}]"),
        None => format!("host[{host}].roles"),
    }
}

fn hosts(a: &Answers, out: &mut Vec<Problem>) {
    if a.hosts.is_empty() {
        out.push(
            Problem::new("host", "no [[host]] tables: there is nothing to configure")
                .help("add a [[host]] with name, address and roles"),
        );
    }
    let subnet = a.network.subnet;
    let mut names: HashMap<&str, usize> = HashMap::new();
    let mut addrs: HashMap<Ipv4Addr, usize> = HashMap::new();
    for (i, h) in a.hosts.iter().enumerate() {
        let base = format!("host[{i}]");
        if let Some(first) = first_or_insert(&mut names, h.name.as_str(), i) {
            out.push(
                Problem::new(format!("{base}.name"), format!("host name `{}` is used twice", shown(&h.name)))
                    .see(format!("host[{first}].name"), "first here"),
            );
        }
        push(out, format!("{base}.address"), usable_in(&subnet, h.address));
        if h.address == a.network.gateway {
            out.push(
                Problem::new(format!("{base}.address"), format!("{} is the gateway", h.address))
                    .see("network.gateway", "gateway"),
            );
        }
        if let Some(first) = first_or_insert(&mut addrs, h.address, i) {
            out.push(
                Problem::new(
                    format!("{base}.address"),
                    format!("address {} is used by host `{}` too", h.address, shown(&a.hosts[first].name)),
                )
                .see(format!("host[{first}].address"), "first here"),
            );
        }
        if h.ssh_port == 0 {
            out.push(Problem::new(format!("{base}.ssh-port"), "port 0 is not a port"));
        }
        if h.local == Some(true)
            && let Some(first) = a.hosts[..i].iter().position(|o| o.local == Some(true))
        {
            out.push(
                Problem::new(
                    format!("{base}.local"),
                    format!(
                        "host `{}` is local too: only one host can be the machine groundwork runs on",
                        shown(&a.hosts[first].name)
                    ),
                )
                .see(format!("host[{first}].local"), "first here"),
            );
        }
        let mut seen: HashMap<Role, usize> = HashMap::new();
        for (j, r) in h.roles.iter().enumerate() {
            if let Some(first) = first_or_insert(&mut seen, *r, j) {
                out.push(
                    Problem::new(format!("{base}.roles[{j}]"), format!("role `{r}` is listed twice"))
                        .see(format!("{base}.roles[{first}]"), "first here"),
                );
            }
        }
        if seen.contains_key(&Role::K3sServer) && seen.contains_key(&Role::K3sAgent) {
            out.push(
                Problem::new(
                    role_field(a, i, Role::K3sAgent),
                    "a k3s server already runs workloads; it cannot also be a k3s agent",
                )
                .help("keep only k3s-server on this host"),
            );
        }
    }
    for (role, why) in [
        (Role::Dhcp, "Kea high availability is not managed by groundwork yet"),
        (Role::Ldap, "LDAP replication is not managed by groundwork yet"),
        (Role::Postgresql, "PostgreSQL replication is not managed by groundwork yet"),
        (Role::Mariadb, "MariaDB replication is not managed by groundwork yet"),
    ] {
        let mut holders = a.hosts_with(role).map(|(i, _)| i);
        let (Some(first), Some(second)) = (holders.next(), holders.next()) else {
            continue;
        };
        let n = 2 + holders.count();
        out.push(
            Problem::new(role_field(a, second, role), format!("role `{role}` is on {n} hosts; a site has one"))
                .help(why)
                .see(role_field(a, first, role), "first here"),
        );
    }
}

fn databases(a: &Answers, out: &mut Vec<Problem>) {
    for (engine, list, role) in
        [("postgresql", &a.databases.postgresql, Role::Postgresql), ("mariadb", &a.databases.mariadb, Role::Mariadb)]
    {
        if !list.is_empty() && !a.has_role(role) {
            out.push(
                Problem::new(
                    format!("databases.{engine}"),
                    format!("databases are listed for {engine} but no host has the {engine} role"),
                )
                .help(format!("add \"{engine}\" to the roles of a host")),
            );
        }
        let mut names: HashMap<&str, usize> = HashMap::new();
        let mut users: HashMap<&str, usize> = HashMap::new();
        for (i, d) in list.iter().enumerate() {
            let base = format!("databases.{engine}[{i}]");
            if let Some(j) = first_or_insert(&mut names, d.name.as_str(), i) {
                out.push(
                    Problem::new(format!("{base}.name"), format!("database `{}` is listed twice", shown(&d.name)))
                        .see(format!("databases.{engine}[{j}].name"), "first here"),
                );
            }
            if let Some(j) = first_or_insert(&mut users, d.user.as_str(), i) {
                out.push(
                    Problem::new(
                        format!("{base}.user"),
                        format!(
                            "user `{}` is listed twice (already the owner of `{}`)",
                            shown(&d.user),
                            shown(&list[j].name)
                        ),
                    )
                    .help("each database gets its own user and generated password")
                    .see(format!("databases.{engine}[{j}].user"), "first here"),
                );
            }
        }
    }
}

fn ldap(a: &Answers, out: &mut Vec<Problem>) {
    match (&a.ldap, a.hosts_with(Role::Ldap).next()) {
        (None, Some((i, _))) => out.push(
            Problem::new(role_field(a, i, Role::Ldap), "role `ldap` needs an [ldap] section")
                .help("add [ldap] with organisation = \"Your Org\""),
        ),
        (Some(_), None) => out.push(
            Problem::new("ldap", "an [ldap] section is set but no host has the ldap role")
                .help("add \"ldap\" to the roles of a host"),
        ),
        _ => {}
    }
    let Some(l) = &a.ldap else { return };
    let mut seen: HashMap<String, usize> = HashMap::new();
    for (i, ou) in l.extra_ous.iter().enumerate() {
        if let Some(j) = first_or_insert(&mut seen, ou.to_ascii_lowercase(), i) {
            out.push(
                Problem::new(format!("ldap.extra-ous[{i}]"), format!("OU `{}` is listed twice", shown(ou)))
                    .see(format!("ldap.extra-ous[{j}]"), "first here"),
            );
        }
    }
}

fn k3s(a: &Answers, out: &mut Vec<Problem>) {
    let servers: Vec<usize> = a.hosts_with(Role::K3sServer).map(|(i, _)| i).collect();
    let agents: Vec<usize> = a.hosts_with(Role::K3sAgent).map(|(i, _)| i).collect();
    let Some(k) = &a.k3s else {
        if let Some(i) = servers.first().or(agents.first()) {
            let role = if servers.is_empty() { Role::K3sAgent } else { Role::K3sServer };
            out.push(
                Problem::new(role_field(a, *i, role), format!("role `{role}` needs a [k3s] section"))
                    .help("add [k3s] with version = \"v1.35.6+k3s1\""),
            );
        }
        return;
    };
    if servers.is_empty() {
        out.push(
            Problem::new("k3s", "a [k3s] section is set but no host has the k3s-server role")
                .help("add \"k3s-server\" to the roles of one or three hosts"),
        );
    }
    let n = servers.len();
    match k.mode {
        K3sMode::Single if n > 1 => out.push(
            Problem::new("k3s.mode", format!("mode is single but {n} hosts have the k3s-server role"))
                .help("set mode = \"ha\" (embedded etcd) or keep one k3s-server"),
        ),
        K3sMode::Ha if n == 1 => {
            out.push(Problem::new("k3s.mode", "mode is ha but only one host has the k3s-server role").help(
                "HA runs embedded etcd on 3 or 5 servers: add k3s-server to two more hosts, or set mode = \"single\"",
            ))
        }
        K3sMode::Ha if n > 1 && n.is_multiple_of(2) => out.push(
            Problem::new(
                role_field(a, servers[n - 1], Role::K3sServer),
                format!("{n} k3s servers: etcd needs an odd number to keep quorum"),
            )
            .help(format!(
                "use {} or {} servers; {n} tolerate no more failures than {}",
                n - 1,
                n + 1,
                n - 1
            )),
        ),
        _ => {}
    }
    for (key, cidr) in [("cluster-cidr", k.cluster_cidr), ("service-cidr", k.service_cidr)] {
        if cidr.overlaps(&a.network.subnet) {
            out.push(
                Problem::new(format!("k3s.{key}"), format!("{cidr} overlaps the site subnet {}", a.network.subnet))
                    .see("network.subnet", "site subnet"),
            );
        }
    }
    if let Some(ip) = k.api_endpoint.as_deref().and_then(|e| e.parse::<Ipv4Addr>().ok())
        && let Some(i) = a.network.dhcp_ranges.iter().position(|r| r.start <= ip && ip <= r.end)
    {
        out.push(
            Problem::new("k3s.api-endpoint", format!("{ip} is inside a DHCP range: a client could be given it"))
                .see(format!("network.dhcp-range[{i}]"), "the range"),
        );
    }
    if k.cluster_cidr.overlaps(&k.service_cidr) {
        out.push(Problem::new(
            "k3s.service-cidr",
            format!("{} overlaps cluster-cidr {}", k.service_cidr, k.cluster_cidr),
        ));
    }
}

fn gitops(a: &Answers, out: &mut Vec<Problem>) {
    use crate::handoff::sync::{RepoUrl, Scheme};
    if a.gitops.is_some() && (a.k3s.is_none() || !a.has_role(Role::K3sServer)) {
        out.push(
            Problem::new("gitops", "a [gitops] section needs a k3s cluster to hand off to")
                .help("add a [k3s] section and a host with the k3s-server role, or drop [gitops]"),
        );
    }
    let Some(g) = &a.gitops else { return };
    let mut seen: HashMap<&str, usize> = HashMap::new();
    for (i, ns) in g.contract_namespaces.iter().enumerate() {
        if let Some(j) = first_or_insert(&mut seen, ns.as_str(), i) {
            out.push(
                Problem::new(format!("gitops.contract-namespaces[{i}]"), format!("`{}` is listed twice", shown(ns)))
                    .see(format!("gitops.contract-namespaces[{j}]"), "first here"),
            );
        }
    }
    if g.token_file.is_some() && g.token_env.is_some() {
        out.push(
            Problem::new("gitops.token-env", "the token is given twice")
                .help("give it one way: token-file (preferred) or token-env")
                .see("gitops.token-file", "also here"),
        );
    }
    // The URL's own form is the field check's (check_git_url).
    let Ok(repo) = RepoUrl::parse(&g.repository) else { return };
    let token = ["token-file", "token-env", "token-username"]
        .into_iter()
        .zip([g.token_file.is_some(), g.token_env.is_some(), g.token_username.is_some()])
        .find(|(_, set)| *set)
        .map(|(k, _)| k);
    match repo.scheme {
        Scheme::Ssh => {
            if let Some(key) = token {
                out.push(
                    Problem::new(format!("gitops.{key}"), "a token is for an https repository")
                        .help("an ssh repository is read with the deploy key groundwork generates; drop the token keys")
                        .see("gitops.repository", "the repository"),
                );
            }
            match &g.known_hosts {
                None => out.push(
                    Problem::new("gitops", "an ssh repository needs the Git host's key (known-hosts): the cluster accepts no other")
                        .help(format!(
                            "add known-hosts = \"{} ssh-ed25519 AAAA...\" ([gitops]); `ssh-keyscan` prints the lines: check them against the Git host",
                            crate::ssh::known_hosts::host_field(&repo.host, repo.ssh_port())
                        )),
                ),
                Some(text) => {
                    if let Err(e) = crate::ssh::known_hosts::pinned_lines(text, &repo.host, repo.ssh_port()) {
                        out.push(
                            Problem::new("gitops.known-hosts", format!("known-hosts, {e}"))
                                .see("gitops.repository", "the repository"),
                        );
                    }
                }
            }
        }
        Scheme::Https => {
            if g.known_hosts.is_some() {
                out.push(
                    Problem::new("gitops.known-hosts", "known-hosts is for an ssh repository")
                        .help("an https repository is checked through its certificate; drop known-hosts")
                        .see("gitops.repository", "the repository"),
                );
            }
            if g.token_username.is_some() && g.token_file.is_none() && g.token_env.is_none() {
                out.push(
                    Problem::new("gitops.token-username", "a user name without a token")
                        .help("add token-file (or token-env), or drop token-username"),
                );
            }
        }
    }
}

/// Hosts created on Proxmox: the section that says where, the template of their kind, a VM
/// for k3s (it does not run in an unprivileged container), sizes a guest can have.
fn provisions(a: &Answers, out: &mut Vec<Problem>) {
    for (i, h) in a.hosts.iter().enumerate() {
        let Some(pr) = &h.provision else { continue };
        let base = format!("host[{i}].provision");
        match &a.proxmox {
            None => out.push(
                Problem::new(&base, "this host is to be provisioned, but there is no [proxmox] section")
                    .help("add [proxmox] (api-url, token-id, token secret, node, storage), or drop provision"),
            ),
            Some(px) => match pr.kind {
                GuestKind::Ct if px.ct_template.is_none() => out.push(
                    Problem::new(format!("{base}.kind"), "a container needs [proxmox] ct-template")
                        .help("set ct-template = \"local:vztmpl/debian-12-standard_12.7-1_amd64.tar.zst\" (a volume of the node)"),
                ),
                GuestKind::Vm if px.template.is_none() => out.push(
                    Problem::new(format!("{base}.kind"), "a VM needs [proxmox] template (the VM template to clone)")
                        .help("set template = \"debian-12-cloudinit\" (a VM template with cloud-init)"),
                ),
                _ => {}
            },
        }
        // Proxmox puts a container's `ssh-public-keys` in root's authorized_keys, and a CT
        // template has no other account: another user could never log in.
        if pr.kind == GuestKind::Ct && h.ssh_user != "root" {
            out.push(
                Problem::new(
                    format!("host[{i}].ssh-user"),
                    "a container gets the site's SSH key for root only: no other user can log in",
                )
                .help("set ssh-user = \"root\" for this host (a VM gets its user from cloud-init)")
                .see(format!("{base}.kind"), "a container"),
            );
        }
        if pr.kind == GuestKind::Ct {
            for role in [Role::K3sServer, Role::K3sAgent] {
                if h.roles.contains(&role) {
                    out.push(
                        Problem::new(format!("{base}.kind"), format!("role `{role}` does not run in a container"))
                            .help("k3s needs its own kernel features: use kind = \"vm\"")
                            .see(role_field(a, i, role), "the role"),
                    );
                }
            }
        }
        if !(1..=512).contains(&pr.cores) {
            out.push(Problem::new(format!("{base}.cores"), format!("{} cores: give 1 to 512", pr.cores)));
        }
        if !(128..=4_194_304).contains(&pr.memory) {
            out.push(Problem::new(format!("{base}.memory"), format!("{} MiB: give 128 MiB or more", pr.memory)));
        }
        if !(1..=65_536).contains(&pr.disk) {
            out.push(Problem::new(format!("{base}.disk"), format!("{} GiB: give 1 to 65536 GiB", pr.disk)));
        }
    }
}

/// (That the secret comes from exactly one place is the type's rule: see `model::ProxmoxKeys`.)
fn proxmox(a: &Answers, out: &mut Vec<Problem>) {
    provisions(a, out);
    let Some(p) = &a.proxmox else { return };
    if p.task_timeout == 0 {
        out.push(Problem::new("proxmox.task-timeout", "a task timeout of 0 seconds lets no task finish"));
    }
    if matches!(p.token_secret, TokenSecret::Inline(_)) && !p.insecure_inline_secret {
        out.push(
            Problem::new("proxmox.token-secret", "the token secret is written in plain text here")
                .help("keep it in a file (token-secret-file) or the environment (token-secret-env); set insecure-inline-secret = true only if you accept it"),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_string_field_of_the_model_has_a_check() {
        // Every plain string in the schema (no format, enum or custom type) must be checked;
        // a new field without a check would take any value of any length.
        let schema = serde_json::to_value(schemars::schema_for!(Answers)).unwrap();
        let mut missing = Vec::new();
        fn walk(
            s: &serde_json::Value,
            root: &serde_json::Value,
            pattern: String,
            missing: &mut Vec<String>,
            depth: usize,
        ) {
            if depth > 8 {
                return;
            }
            let s = super::super::shape::resolve(root, s);
            match super::super::shape::kind(s) {
                Some("object") => {
                    if let Some(props) = s.get("properties").and_then(|p| p.as_object()) {
                        for (k, v) in props {
                            let p = if pattern.is_empty() { k.clone() } else { format!("{pattern}.{k}") };
                            walk(v, root, p, missing, depth + 1);
                        }
                    }
                }
                Some("array") => walk(&s["items"], root, format!("{pattern}[]"), missing, depth + 1),
                Some("string")
                    if s.get("format").is_none() && s.get("enum").is_none() && field_check(&pattern).is_none() =>
                {
                    missing.push(pattern)
                }
                _ => {}
            }
        }
        walk(&schema, &schema, String::new(), &mut missing, 0);
        assert!(missing.is_empty(), "string fields without a check: {missing:?}");
        for f in FREE_TEXT_FIELDS {
            assert!(field_check(f).is_some(), "{f}");
        }
    }

    #[test]
    fn domains_refuse_trailing_dots_and_empty_labels() {
        assert!(check_fqdn("example.org").is_ok());
        for bad in ["example.org.", "x..", "x.", "a..b", ".a.b", &format!("{}.org", "a".repeat(250))] {
            assert!(check_fqdn(bad).is_err(), "{bad}");
        }
        assert!(check_fqdn("x..").unwrap_err().contains("ends with a dot"));
    }

    #[test]
    fn host_names_are_rfc1123_labels_with_a_letter() {
        assert!(check_host_name("ns1").is_ok());
        assert!(check_host_name("1a").is_ok());
        assert!(check_host_name("123").unwrap_err().contains("all digits"));
        assert!(check_host_name("localhost").unwrap_err().contains("localhost"));
    }

    #[test]
    fn e_mail_addresses_keep_to_a_safe_syntax() {
        for ok in ["ops@example.org", "ops.team+dns@example.org", "A_b-c@x.example.org"] {
            assert!(check_email(ok).is_ok(), "{ok}");
        }
        for bad in [
            "ops;x@example.org",
            "o(p)s@example.org",
            "\"ops\"@example.org",
            "$(id)@example.org",
            "o ps@example.org",
            "ops\n@example.org",
            ".ops@example.org",
            "o..ps@example.org",
            "ops@example.org.",
            "ops",
            "@example.org",
            "ops@localhost",
        ] {
            assert!(check_email(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn sql_names_that_are_keywords_or_reserved_are_refused() {
        for bad in [
            "all",
            "sameuser",
            "samerole",
            "samegroup",
            "replication",
            "public",
            "none",
            "pg_monitor",
            "current_user",
            "session_user",
            "user",
            "select",
            "postgres",
        ] {
            assert!(check_pg_user(bad).is_err(), "user {bad}");
        }
        for bad in ["all", "replication", "pg_x", "select", "template1", "left"] {
            assert!(check_pg_database(bad).is_err(), "database {bad}");
        }
        assert!(check_pg_user("keycloak").is_ok());
        assert!(check_pg_database("app_db").is_ok());
        assert!(check_pg_user(&"a".repeat(63)).is_ok());
        assert!(check_pg_user(&"a".repeat(64)).is_err(), "63 bytes is PostgreSQL's limit");
        assert!(check_mariadb_database(&"a".repeat(64)).is_ok());
        assert!(check_mariadb_database(&"a".repeat(65)).is_err());
        assert!(check_mariadb_user(&"a".repeat(80)).is_ok());
        assert!(check_mariadb_user(&"a".repeat(81)).is_err());
        assert!(check_mariadb_user("app_user").is_ok(), "_ is escaped in the grant, not refused");
        for bad in ["public", "root", "a%b", "a-b", "`x`"] {
            assert!(check_mariadb_user(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn host_paths_are_absolute_and_plain() {
        assert!(check_host_path("/etc/ssl/private/ldap.key").is_ok());
        for bad in [
            "/x'; touch /tmp/p; echo '",
            "etc/x",
            "/x y",
            "/x\"",
            "/x$(id)",
            "/x`id`",
            "/x;y",
            "/x\ny",
            "/x\0",
            "~/x",
            "/etc/",
            "",
        ] {
            assert!(check_host_path(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn overlapping_ranges_are_reported_once_each() {
        let mut a = crate::answers::load_str(crate::LAB_EXAMPLE.0, crate::LAB_EXAMPLE.1).unwrap().answers;
        let r = a.network.dhcp_ranges[0].clone();
        a.network.dhcp_ranges = vec![r; 50];
        let overlaps = check_cross(&a).into_iter().filter(|p| p.message.contains("overlaps range")).count();
        assert_eq!(overlaps, 49);
    }
}
