//! The ldap (OpenLDAP), postgresql and mariadb roles, and their client checks.
//!
//! Offline: the roles render for both lab shapes; every generated password appears only in
//! files marked `secret = true` (never in a command, a guard, a path or a non-secret file,
//! which would reach the target's process list or a diff); pg_hba and the MariaDB accounts
//! admit the site subnet only; the LDAP settings name the suffix, the service account and the
//! extra OUs.
//!
//! Hostile answer values (quotes, `$(...)`, backticks, `;`, newlines, `}`, backslashes,
//! keywords) land quoted in every command, guard, SQL, LDIF, pg_hba and option file of the
//! three roles: the commands and guards are even run by a real shell (with no external command
//! reachable), and no payload gets to act.
//!
//! On the lab (tests/lab/README.md):
//! - two hosts, ld1 (ldap) and sq1 (postgresql + mariadb, reached through a sudo user): apply
//!   converges; `groundwork::verify::{ldap, sql}` pass; the same checks with the real clients
//!   from this machine (ldapsearch/ldapwhoami over StartTLS and LDAPS with the host's
//!   certificate, psql, mysql), plus what must be refused (anonymous reads, another user's
//!   database, a database matching the owner's name as a GRANT wildcard, root over TCP);
//!   memberOf works; the admin password is a salted hash in slapd's configuration; a second
//!   apply changes nothing (with a MariaDB database named test_x); no generated password
//!   appears in the log files, the apply output or `plan --live`. Then: passwords changed by
//!   hand converge on the next apply (and the one after changes nothing); and with slapd
//!   serving another certificate, `verify` sends no password (slapd logs no bind) and says why.
//! - the single-server shape: ldap, postgresql and mariadb on s1.
//!
//! Skipped with `SKIPPED:` where the lab cannot run; a failure under CI=true. The clients
//! (ldap-utils, postgresql-client, mariadb-client) are installed with apt-get when missing.

mod common;

use std::collections::BTreeMap;
use std::io::Write as _;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use common::lab;
use common::run::{self, Run, fresh, groundwork, on, rt};
use groundwork::answers::{
    self,
    model::{Answers, TlsPair},
};
use groundwork::engine::{context, facts::Facts};
use groundwork::playbook::catalog::Catalog;
use groundwork::state::{Secrets, StateDir};
use groundwork::verify::{self, Outcome};

const TWO: &[(&str, &str)] = &[("ld1", "10.77.0.52"), ("sq1", "10.77.0.53")];
const TWO_ANSWERS: &str = "tests/fixtures/lab/identity-data.toml";
const ONE: &[(&str, &str)] = &[("s1", "10.77.0.40")];
const ONE_ANSWERS: &str = "tests/fixtures/lab/single-server.toml";
const ROLES: &[&str] = &["ldap", "postgresql", "mariadb"];

// ------------------------------------------------------------------ offline: the roles render

fn load(path: &str) -> Answers {
    answers::load_file(Path::new(path)).unwrap_or_else(|r| panic!("{path}: {:?}", r.one_line_each())).answers
}

/// Everything of the identity/data roles rendered for `host`: file contents by dest (with
/// the step's `secret` flag), and every other string (commands, guards, paths, waits).
struct Rendered {
    files: BTreeMap<String, (String, bool)>,
    strings: Vec<String>,
    /// What a shell runs: commands, guards, validators, wait conditions (`role / step`, text).
    shell: Vec<(String, String)>,
    secrets: Secrets,
}

fn render(a: &Answers, host: &str) -> Rendered {
    let mut secrets = Secrets::default();
    secrets.ensure_for(a);
    render_with(a, host, secrets)
}

fn render_with(a: &Answers, host: &str, secrets: Secrets) -> Rendered {
    let catalog = Catalog::load(None).unwrap();
    let env = context::environment(&catalog);
    let site = context::site_context(a, &secrets);
    let ctx = context::host_context(&site, host, &Facts::default());
    let me = a.hosts.iter().find(|h| h.name == host).unwrap();
    let mut files = BTreeMap::new();
    let mut strings = Vec::new();
    let mut shell = Vec::new();
    for role in ROLES {
        if !me.roles.iter().any(|r| r.as_str() == *role) {
            continue;
        }
        let spec = catalog.get(role).unwrap();
        for line in &spec.preseed {
            strings.push(env.render_str(line, &ctx).unwrap());
        }
        for s in &spec.step_specs {
            let r = |t: &str| env.render_str(t, &ctx).unwrap_or_else(|e| panic!("{role} / {}: {e:#}", s.name));
            for t in [&s.dest, &s.directory, &s.command, &s.creates, &s.unless, &s.onlyif, &s.validate, &s.when]
                .into_iter()
                .flatten()
            {
                strings.push(r(t));
            }
            for t in [&s.command, &s.unless, &s.onlyif, &s.validate].into_iter().flatten() {
                shell.push((format!("{role} / {}", s.name), r(t)));
            }
            if let Some(w) = &s.wait {
                strings.extend([&w.command, &w.host, &w.socket].into_iter().flatten().map(|t| r(t)));
                if let Some(c) = &w.command {
                    shell.push((format!("{role} / {}", s.name), r(c)));
                }
            }
            if let Some(dest) = &s.dest {
                let text = match (&s.template, &s.content) {
                    // A helper script of the role's files/: copied as it is.
                    _ if s.copy.is_some() => {
                        std::fs::read_to_string(format!("playbooks/{role}/files/{}", s.copy.as_ref().unwrap())).unwrap()
                    }
                    (Some(t), _) => env
                        .get_template(&format!("{role}/{t}"))
                        .unwrap()
                        .render(&ctx)
                        .unwrap_or_else(|e| panic!("{role}/{t} for {host}: {e:#}")),
                    (_, Some(c)) => r(c),
                    _ => unreachable!(),
                };
                files.insert(r(dest), (text, s.secret));
            }
        }
    }
    Rendered { files, strings, shell, secrets }
}

fn secret_values(s: &Secrets) -> Vec<String> {
    s.values().map(str::to_string).collect()
}

#[test]
fn passwords_only_render_into_secret_files() {
    for (path, hosts) in [(TWO_ANSWERS, &["ld1", "sq1"][..]), (ONE_ANSWERS, &["s1"][..])] {
        let a = load(path);
        for host in hosts {
            let r = render(&a, host);
            let values = secret_values(&r.secrets);
            assert!(!values.is_empty());
            let mut secret_files_with_values = 0;
            for (dest, (text, secret)) in &r.files {
                let holds = values.iter().any(|v| text.contains(v.as_str()));
                assert!(!holds || *secret, "{host}: {dest} holds a password but is not `secret = true`");
                if holds {
                    secret_files_with_values += 1;
                }
            }
            assert!(secret_files_with_values >= 1, "{host}: no secret file carries the passwords");
            for s in &r.strings {
                for v in &values {
                    assert!(!s.contains(v.as_str()), "{host}: a password in a command/guard/path: {s}");
                }
            }
        }
    }
}

#[test]
fn settings_admit_the_site_subnet_and_name_the_directory() {
    let a = load(TWO_ANSWERS);
    let db = render(&a, "sq1");
    let hba = &db.files["/etc/groundwork/postgresql/pg_hba.conf"].0;
    assert!(hba.contains("host    \"keycloak\"\t\"keycloak\"\t10.77.0.0/24\tscram-sha-256"), "{hba}");
    assert!(hba.contains("host    \"matrix_synapse\"\t\"synapse\"\t10.77.0.0/24\tscram-sha-256"), "{hba}");
    assert!(!hba.contains("0.0.0.0/0") && !hba.contains(" trust"), "{hba}");
    let conf = &db.files["/etc/groundwork/postgresql/groundwork.conf"].0;
    assert!(conf.contains("listen_addresses = 'localhost,10.77.0.53'"), "{conf}");
    assert!(
        conf.contains("ssl = on") && conf.contains("ssl_cert_file = '/etc/groundwork/postgresql/server.crt'"),
        "{conf}"
    );
    let (setup, secret) = &db.files["/etc/groundwork/postgresql/setup.sql"];
    assert!(*secret);
    assert!(setup.contains("SET log_statement = 'none';"), "{setup}");
    assert!(setup.contains(&format!("'{}'", db.secrets.get("postgresql", "synapse").unwrap())));
    let cnf = &db.files["/etc/mysql/mariadb.conf.d/60-groundwork.cnf"].0;
    assert!(cnf.contains("bind-address = 127.0.0.1,10.77.0.53") && cnf.contains("skip-name-resolve"), "{cnf}");
    assert!(cnf.contains("ssl-cert = /etc/mysql/tls/groundwork.crt"), "{cnf}");
    let (msetup, _) = &db.files["/etc/groundwork/mariadb/setup.sql"];
    assert!(
        msetup.contains(
            "SET @db = 'wiki', @grant_db = 'wiki',\n    @user = 'wiki_app', @host = '10.77.0.0/255.255.255.0',"
        ),
        "{msetup}"
    );
    // test_x as GRANT reads it: the `_` escaped (in a string literal: two backslashes).
    assert!(msetup.contains(r"SET @db = 'test_x', @grant_db = 'test\\_x',"), "{msetup}");
    assert!(msetup.contains(r"DELETE FROM mysql.db WHERE Db = 'test_x' AND User = 'tester'"), "{msetup}");
    assert!(msetup.contains("EXECUTE IMMEDIATE CONCAT('ALTER USER ', QUOTE(@user), '@', QUOTE(@host), ' IDENTIFIED BY ', QUOTE(@password));"), "{msetup}");
    assert!(!msetup.contains("'%'"), "no account open to every address:\n{msetup}");
    let secure = &db.files["/etc/groundwork/mariadb/secure.sql"].0;
    assert!(
        secure.contains("DROP DATABASE IF EXISTS test;") && secure.contains("IDENTIFIED VIA unix_socket"),
        "{secure}"
    );
    assert!(
        secure.contains(r"AND NOT (Db = 'test\\_x' AND User = 'tester' AND Host = '10.77.0.0/255.255.255.0')"),
        "{secure}"
    );
    let check = &db.files["/etc/groundwork/mariadb/secure-check.sql"].0;
    assert!(check.contains(r"AND NOT (Db = 'test\\_x' AND User = 'tester'"), "{check}");
    let (logins, secret) = &db.files["/etc/groundwork/mariadb/logins.cnf"];
    assert!(
        *secret && logins.contains("[client-gw2]\nuser = \"wiki_app\"\n") && logins.contains("host = 10.77.0.53\n"),
        "{logins}"
    );
    let (pgpass, secret) = &db.files["/etc/groundwork/postgresql/pgpass"];
    assert!(*secret && pgpass.starts_with("*:*:keycloak:keycloak:"), "{pgpass}");
    // The password guards log in as each user, over TCP to the site address.
    let pg_guard = db.strings.iter().find(|s| s.contains("PGPASSFILE")).expect("a PostgreSQL login guard");
    assert!(
        pg_guard.contains("PGHOST='10.77.0.53'")
            && pg_guard
                .contains("PGUSER='synapse' PGDATABASE='matrix_synapse' /usr/local/sbin/groundwork-pg psql -X -w"),
        "{pg_guard}"
    );
    let my_guard = db.strings.iter().find(|s| s.contains("--defaults-file=")).expect("a MariaDB login guard");
    assert!(my_guard.contains("--defaults-group-suffix='-gw3' --skip-ssl -NBe 'SELECT 1'"), "{my_guard}");

    let id = render(&a, "ld1");
    let cfg = &id.files["/etc/groundwork/ldap/config.ldif"].0;
    assert!(cfg.contains("olcModuleLoad: memberof"), "{cfg}");
    assert!(
        cfg.contains("olcDbIndex: mail eq")
            && cfg.contains("olcDbIndex: cn,uid eq")
            && cfg.contains("olcDbIndex: member,memberUid eq"),
        "{cfg}"
    );
    assert!(cfg.contains("by dn.exact=\"cn=groundwork-reader,ou=services,dc=id,dc=groundwork,dc=test\" read"), "{cfg}");
    assert!(cfg.contains("olcTLSCertificateFile: /etc/ldap/tls/selfsigned.crt"), "no tls-cert: self-signed\n{cfg}");
    let dir = &id.files["/etc/groundwork/ldap/directory.ldif"].0;
    for ou in ["people", "groups", "services", "machines", "sudoers"] {
        assert!(dir.contains(&format!("dn: ou={ou},dc=id,dc=groundwork,dc=test\n")), "{ou}:\n{dir}");
    }
    // Not ASCII: base64 (RFC 2849), "Groundwork Lab Société".
    assert!(dir.contains("o:: R3JvdW5kd29yayBMYWIgU29jacOpdMOp\ndc: id\n"), "{dir}");
    let defaults = &id.files["/etc/default/slapd"].0;
    assert!(
        defaults.contains("SLAPD_SERVICES=\"ldap://127.0.0.1/ ldap://10.77.0.52/ ldaps://10.77.0.52/ ldapi:///\""),
        "{defaults}"
    );
    assert!(id.strings.iter().any(|s| s == "slapd slapd/domain string id.groundwork.test"), "preseeded domain");

    // With tls-cert/tls-key the site's pair is used instead.
    let mut b = a.clone();
    let l = b.ldap.as_mut().unwrap();
    l.tls = Some(TlsPair { cert: PathBuf::from("/etc/ssl/ldap.pem"), key: PathBuf::from("/etc/ssl/private/ldap.key") });
    let id = render(&b, "ld1");
    let cfg = &id.files["/etc/groundwork/ldap/config.ldif"].0;
    assert!(cfg.contains("olcTLSCertificateFile: /etc/ldap/tls/site.crt"), "{cfg}");
    assert!(
        id.strings
            .iter()
            .any(|s| s.contains("install -m 0644 -o root -g root -- '/etc/ssl/ldap.pem' /etc/ldap/tls/site.crt"))
    );
}

// ------------------------------------------------------------------ offline: hostile values

/// Payloads that only act if they escape their quoting. Each writes `marker` with shell
/// builtins alone (the shell that runs the commands below finds no external command), or
/// tries to end a SQL string, an LDIF line, a pg_hba field or an option value.
fn hostile_answers(marker: &str) -> Answers {
    let mut a = load(TWO_ANSWERS);
    let l = a.ldap.as_mut().unwrap();
    l.organisation = format!("Org'; : >{marker}; echo '$(: >{marker})\ndn: cn=evil \\ }}");
    l.extra_ous = vec!["a,b=c+d".into(), format!("q'$(: >{marker})`: >{marker}`;"), "x\ny: z".into(), "#lead ".into()];
    l.tls = Some(TlsPair {
        cert: PathBuf::from(format!("/x'; : >{marker}; echo '")),
        key: PathBuf::from(format!("/k\"$(: >{marker})`: >{marker}`;\n}}")),
    });
    a.databases.postgresql = vec![
        groundwork::answers::model::Database { name: "all".into(), user: "sameuser".into() },
        groundwork::answers::model::Database {
            name: format!("d'b;$(: >{marker})`: >{marker}`\\x"),
            user: "u'; DROP ROLE postgres; --".into(),
        },
    ];
    a.databases.mariadb = vec![
        groundwork::answers::model::Database { name: "app_db".into(), user: "owner".into() },
        groundwork::answers::model::Database {
            name: "m%`x'; DROP DATABASE mysql; -- \\".into(),
            user: format!("m'@'%'; DROP USER root; --\n\\! : >{marker}"),
        },
    ];
    a
}

/// The generated secrets of `a`, with every password replaced by a hostile one.
fn hostile_secrets(a: &Answers, dir: &Path) -> Secrets {
    let mut s = Secrets::default();
    s.ensure_for(a);
    let path = dir.join("secrets.toml");
    s.save(&path).unwrap();
    let mut t: toml::Table = std::fs::read_to_string(&path).unwrap().parse().unwrap();
    for (table, v) in t.iter_mut() {
        if table == "tsig" {
            continue;
        }
        for (_, pw) in v.as_table_mut().unwrap().iter_mut() {
            *pw = toml::Value::String("p'w\"$(id)`id`;\\ #x:y".into());
        }
    }
    std::fs::write(&path, toml::to_string(&t).unwrap()).unwrap();
    Secrets::load(&path).unwrap()
}

/// The string literals of a SQL text, decoded, and the text outside them (comments dropped),
/// read the way the MariaDB client and server read it (`\` escapes, `''`), or PostgreSQL's
/// (standard_conforming_strings: only `''`).
fn sql_split(text: &str, backslash_escapes: bool) -> (Vec<String>, String) {
    let mut literals = Vec::new();
    let mut code = String::new();
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\'' => {
                let mut lit = String::new();
                loop {
                    match chars.next().expect("an unterminated string literal") {
                        '\\' if backslash_escapes => {
                            let e = chars.next().unwrap();
                            // `\_` and `\%` keep their backslash (LIKE and GRANT patterns).
                            if matches!(e, '_' | '%') {
                                lit.push('\\');
                            }
                            lit.push(match e {
                                'n' => '\n',
                                'r' => '\r',
                                '0' => '\0',
                                'Z' => '\x1a',
                                e => e,
                            });
                        }
                        '\'' if chars.peek() == Some(&'\'') => {
                            chars.next();
                            lit.push('\'');
                        }
                        '\'' => break,
                        c => lit.push(c),
                    }
                }
                literals.push(lit);
                code.push_str("''");
            }
            '-' if chars.peek() == Some(&'-') => {
                for c in chars.by_ref() {
                    if c == '\n' {
                        code.push('\n');
                        break;
                    }
                }
            }
            c => code.push(c),
        }
    }
    (literals, code)
}

/// An LDIF text as (dn, [(attribute, decoded value)]) records.
fn ldif_records(text: &str) -> Vec<(String, Vec<(String, String)>)> {
    use base64::Engine as _;
    let mut out: Vec<(String, Vec<(String, String)>)> = Vec::new();
    let mut current: Option<(String, Vec<(String, String)>)> = None;
    for line in text.lines() {
        if line.starts_with('#') {
            continue;
        }
        if line.is_empty() {
            out.extend(current.take());
            continue;
        }
        assert!(!line.starts_with(' '), "a continuation line: {line:?}");
        let (attr, rest) = line.split_once(':').unwrap_or_else(|| panic!("not `attr: value`: {line:?}"));
        let value = match rest.strip_prefix(':') {
            Some(b64) => {
                String::from_utf8(base64::engine::general_purpose::STANDARD.decode(b64.trim()).unwrap()).unwrap()
            }
            None => rest.strip_prefix(' ').unwrap_or(rest).to_string(),
        };
        if attr == "dn" {
            out.extend(current.take());
            current = Some((value, Vec::new()));
        } else {
            current.as_mut().expect("an attribute before any dn").1.push((attr.to_string(), value));
        }
    }
    out.extend(current);
    out
}

#[test]
fn hostile_answer_values_land_quoted_in_every_command_sql_ldif_and_option_file() {
    let dir = tempfile::tempdir().unwrap();
    let marker = dir.path().join("PWNED");
    let m = marker.to_str().unwrap();
    let a = hostile_answers(m);
    let secrets = hostile_secrets(&a, dir.path());
    let pw = "p'w\"$(id)`id`;\\ #x:y";
    let empty = dir.path().join("no-commands");
    std::fs::create_dir(&empty).unwrap();

    for host in ["ld1", "sq1"] {
        let r = render_with(&a, host, hostile_secrets(&a, dir.path()));
        assert!(!r.shell.is_empty());
        // Every command and guard is one valid shell text, and running it (no external
        // command reachable: only builtins act) never lets a payload write the marker.
        for (step, cmd) in &r.shell {
            let syntax = Command::new("/bin/sh").args(["-n", "-c", cmd]).output().unwrap();
            assert!(
                syntax.status.success(),
                "{step}: not valid shell: {cmd}\n{}",
                String::from_utf8_lossy(&syntax.stderr)
            );
            let run = Command::new("/bin/sh")
                .args(["-c", cmd])
                .env_clear()
                .env("PATH", &empty)
                .current_dir(dir.path())
                .output()
                .unwrap();
            assert!(!marker.exists(), "{step}: a payload ran (exit {:?}): {cmd}", run.status.code());
        }
        for (_, text) in &r.shell {
            assert!(!text.contains(pw), "a password in a command: {text}");
        }
    }

    let ld = render_with(&a, "ld1", hostile_secrets(&a, dir.path()));
    let l = a.ldap.as_ref().unwrap();
    let cert = l.tls.as_ref().unwrap().cert.to_str().unwrap();
    let sh_word = |v: &str| format!("'{}'", v.replace('\'', r"'\''"));
    let install = ld.shell.iter().find(|(s, _)| s.contains("from the answers")).map(|(_, c)| c.as_str()).unwrap();
    assert!(
        install.contains(&format!("install -m 0644 -o root -g root -- {} /etc/ldap/tls/site.crt", sh_word(cert))),
        "{install}"
    );

    // LDIF: exactly the expected entries; every value is the answer's, whole.
    let dirl = &ld.files["/etc/groundwork/ldap/directory.ldif"].0;
    let records = ldif_records(dirl);
    let dns: Vec<&str> = records.iter().map(|(dn, _)| dn.as_str()).collect();
    let suffix = "dc=id,dc=groundwork,dc=test";
    assert_eq!(
        dns,
        [
            suffix.to_string(),
            format!("ou=people,{suffix}"),
            format!("ou=groups,{suffix}"),
            format!("ou=services,{suffix}"),
            format!(r"ou=a\,b\=c\+d,{suffix}"),
            format!(r"ou=q'$(: \>{m})`: \>{m}`\;,{suffix}"),
            format!(r"ou=x\0ay: z,{suffix}"),
            format!(r"ou=\#lead\ ,{suffix}"),
            format!("cn=groundwork-reader,ou=services,{suffix}"),
        ],
        "{dirl}"
    );
    assert!(records[0].1.contains(&("o".to_string(), l.organisation.clone())), "{dirl}");
    for (i, ou) in l.extra_ous.iter().enumerate() {
        assert_eq!(records[4 + i].1.last().unwrap(), &("ou".to_string(), ou.clone()));
    }

    let sq = render_with(&a, "sq1", hostile_secrets(&a, dir.path()));
    // pg_hba: names quoted, so the keywords `all` and `sameuser` mean themselves.
    let hba = &sq.files["/etc/groundwork/postgresql/pg_hba.conf"].0;
    assert!(hba.contains("host    \"all\"\t\"sameuser\"\t10.77.0.0/24\tscram-sha-256\n"), "{hba}");
    assert!(
        hba.contains(&format!("host    \"d'b;$(: >{m})`: >{m}`\\x\"\t\"u'; DROP ROLE postgres; --\"\t10.77.0.0/24")),
        "{hba}"
    );
    // PostgreSQL SQL: every answer value is one literal; outside them, nothing of the payloads.
    for f in ["setup.sql", "check.sql"] {
        let text = &sq.files[&format!("/etc/groundwork/postgresql/{f}")].0;
        let (lits, code) = sql_split(text, false);
        for d in &a.databases.postgresql {
            assert!(lits.contains(&d.name) && lits.contains(&d.user), "{f}: {d:?} not a whole literal:\n{text}");
        }
        if f == "setup.sql" {
            assert!(lits.iter().any(|l| l == pw), "{f}: the password is not one literal");
        }
        assert!(
            !code.contains("DROP") && !code.contains(": >") && !code.contains('`'),
            "{f}: payload outside a literal:\n{code}"
        );
    }
    let pgpass = &sq.files["/etc/groundwork/postgresql/pgpass"].0;
    for line in pgpass.lines() {
        let fields = line.replace(r"\\", "").replace(r"\:", "").matches(':').count() + 1;
        assert_eq!(fields, 5, "{line}");
    }
    // MariaDB SQL, read as the client and server read it.
    for f in ["setup.sql", "check.sql", "secure.sql", "secure-check.sql"] {
        let text = &sq.files[&format!("/etc/groundwork/mariadb/{f}")].0;
        let (lits, code) = sql_split(text, true);
        for d in &a.databases.mariadb {
            assert!(lits.contains(&d.user), "{f}: user {:?} not a whole literal:\n{text}", d.user);
            let grant = d.name.replace('\\', r"\\").replace('_', r"\_").replace('%', r"\%");
            assert!(lits.contains(&grant), "{f}: {grant:?} (GRANT form) not a whole literal:\n{text}");
        }
        assert!(
            !code.contains("DROP DATABASE mysql") && !code.contains("DROP USER root") && !code.contains(r"\!"),
            "{f}: payload outside a literal:\n{code}"
        );
    }
    let setup = &sq.files["/etc/groundwork/mariadb/setup.sql"].0;
    let (lits, _) = sql_split(setup, true);
    assert!(
        lits.iter().any(|l| l == pw) && lits.contains(&"app_db".to_string()) && lits.contains(&r"app\_db".to_string()),
        "{setup}"
    );
    let logins = &sq.files["/etc/groundwork/mariadb/logins.cnf"].0;
    assert_eq!(logins.matches("\n[").count(), 2, "one group per user, nothing injected:\n{logins}");
    assert!(logins.contains(r#"user = "m\'@\'%\'; DROP USER root; --\n\\! : >"#), "{logins}");
    assert!(logins.contains(r#"password = "p\'w\"$(id)`id`;\\ #x:y""#), "{logins}");

    // What cannot be written safely at all fails the render, naming the filter.
    let catalog = Catalog::load(None).unwrap();
    let env = context::environment(&catalog);
    for (name, user) in [("x", "a\"b"), ("x", "a\nb")] {
        let mut b = a.clone();
        b.databases.postgresql = vec![groundwork::answers::model::Database { name: name.into(), user: user.into() }];
        let site = context::site_context(&b, &secrets);
        let ctx = context::host_context(&site, "sq1", &Facts::default());
        let e = env.get_template("postgresql/pg_hba.conf.j2").unwrap().render(&ctx).unwrap_err();
        assert!(format!("{e:#}").contains("pg_hba_name"), "{e:#}");
    }
}

// ------------------------------------------------------------------ on the lab

fn apply(state: &Path, answers: &str) -> Run {
    run::apply(answers, state, &[])
}

/// ldapsearch, psql and mysql on this machine: installed with apt-get when one is missing.
fn ensure_clients() {
    let have = |cmd: &str| {
        Command::new("sh").args(["-c", &format!("command -v {cmd}")]).output().is_ok_and(|o| o.status.success())
    };
    let mut need = Vec::new();
    for (cmd, pkg) in [("ldapsearch", "ldap-utils"), ("psql", "postgresql-client"), ("mysql", "mariadb-client")] {
        if !have(cmd) {
            need.push(pkg);
        }
    }
    if need.is_empty() {
        return;
    }
    let st = Command::new("apt-get")
        .args(["install", "-y", "-q"])
        .args(&need)
        .env("DEBIAN_FRONTEND", "noninteractive")
        .output()
        .unwrap();
    assert!(st.status.success(), "apt-get install {need:?}: {}", String::from_utf8_lossy(&st.stderr));
}

/// A client run: (exit code, stdout, stderr).
fn client(cmd: &str, args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
    let out = Command::new(cmd)
        .args(args)
        .envs(env.iter().copied())
        .env("LDAPTLS_REQCERT", "demand")
        .output()
        .unwrap_or_else(|e| panic!("{cmd}: {e}"));
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).trim().to_string(),
        String::from_utf8_lossy(&out.stderr).trim().to_string(),
    )
}

/// A 0600 file with `text` (a password file for `-y`, a `--defaults-extra-file`).
fn private_file(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    let mut f = std::fs::File::create(&p).unwrap();
    f.write_all(text.as_bytes()).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
    p
}

/// No generated password in the state's log files or in `texts`.
fn assert_no_password_leaks(state: &Path, secrets: &Secrets, texts: &[(&str, &str)]) {
    let values = secret_values(secrets);
    assert!(values.len() >= 2);
    let logs = state.join("logs");
    let mut n = 0;
    for e in std::fs::read_dir(&logs).unwrap() {
        let p = e.unwrap().path();
        let text = std::fs::read_to_string(&p).unwrap();
        n += 1;
        for v in &values {
            assert!(!text.contains(v.as_str()), "a generated password is in {}", p.display());
        }
    }
    assert!(n >= 1, "no log files in {}", logs.display());
    for (what, text) in texts {
        for v in &values {
            assert!(!text.contains(v.as_str()), "a generated password is in {what}");
        }
    }
}

/// The LDAP checks with the OpenLDAP clients, from this machine.
fn ldap_clients(dir: &Path, host: &str, ip: &str, a: &Answers, secrets: &Secrets) {
    let suffix = groundwork::answers::model::ldap_suffix(&a.site.internal_domain);
    let cert = dir.join(format!("{host}-ldap.crt"));
    std::fs::write(&cert, on(host, "cat /etc/ldap/tls/selfsigned.crt")).unwrap();
    let cacert = cert.to_str().unwrap();
    let tls = [("LDAPTLS_CACERT", cacert)];
    let admin_pw = private_file(dir, "ldap-admin.pw", secrets.get("ldap", "admin").unwrap());
    let reader_pw = private_file(dir, "ldap-reader.pw", secrets.get("ldap", "service").unwrap());
    let admin = format!("cn=admin,{suffix}");
    let reader = format!("cn=groundwork-reader,ou=services,{suffix}");
    let url = format!("ldap://{ip}");
    let ldaps = format!("ldaps://{ip}");

    // StartTLS (-ZZ: TLS required, the certificate checked against the host's own) as the admin.
    let (rc, out, err) =
        client("ldapwhoami", &["-ZZ", "-x", "-H", &url, "-D", &admin, "-y", admin_pw.to_str().unwrap()], &tls);
    assert_eq!(rc, 0, "ldapwhoami as admin: {out} {err}");
    assert_eq!(out, format!("dn:{admin}"));
    // LDAPS as the service account: the OUs.
    let (rc, out, err) = client(
        "ldapsearch",
        &[
            "-x",
            "-H",
            &ldaps,
            "-D",
            &reader,
            "-y",
            reader_pw.to_str().unwrap(),
            "-b",
            &suffix,
            "-s",
            "one",
            "-LLL",
            "(objectClass=organizationalUnit)",
            "ou",
        ],
        &tls,
    );
    assert_eq!(rc, 0, "ldapsearch over LDAPS as the service account: {err}");
    let mut ous = vec!["people".to_string(), "groups".into(), "services".into()];
    ous.extend(a.ldap.as_ref().unwrap().extra_ous.iter().cloned());
    for ou in &ous {
        assert!(out.contains(&format!("ou: {ou}\n")) || out.ends_with(&format!("ou: {ou}")), "ou={ou} missing:\n{out}");
    }
    // A wrong password and an anonymous client get nothing.
    let wrong = private_file(dir, "wrong.pw", "not-the-password");
    let (rc, _, err) =
        client("ldapwhoami", &["-ZZ", "-x", "-H", &url, "-D", &reader, "-y", wrong.to_str().unwrap()], &tls);
    assert_eq!(rc, 49, "a wrong password must be refused (invalid credentials): {err}");
    let (rc, out, _) = client("ldapsearch", &["-ZZ", "-x", "-H", &url, "-b", &suffix, "-LLL", "dn"], &tls);
    assert!(rc == 32 || out.is_empty(), "anonymous read: rc {rc}:\n{out}");
    // memberOf: a group made on the host shows on its member, as the service account sees it.
    on(
        host,
        &format!(
            "printf 'dn: uid=gw-test,ou=people,{s}\\nobjectClass: inetOrgPerson\\nuid: gw-test\\ncn: T\\nsn: T\\nmail: gw-test@example.org\\n\\n\
             dn: cn=gw-testers,ou=groups,{s}\\nobjectClass: groupOfNames\\ncn: gw-testers\\nmember: uid=gw-test,ou=people,{s}\\n' \
             | ldapadd -Q -Y EXTERNAL -H ldapi:/// >/dev/null",
            s = suffix
        ),
    );
    let (rc, out, err) = client(
        "ldapsearch",
        &[
            "-ZZ",
            "-x",
            "-H",
            &url,
            "-D",
            &reader,
            "-y",
            reader_pw.to_str().unwrap(),
            "-b",
            &suffix,
            "-LLL",
            "(mail=gw-test@example.org)",
            "memberOf",
        ],
        &tls,
    );
    on(
        host,
        &format!(
            "ldapdelete -Q -Y EXTERNAL -H ldapi:/// 'cn=gw-testers,ou=groups,{suffix}' 'uid=gw-test,ou=people,{suffix}'"
        ),
    );
    assert_eq!(rc, 0, "{err}");
    assert!(out.contains(&format!("memberOf: cn=gw-testers,ou=groups,{suffix}")), "memberof overlay:\n{out}");
    // The admin password is a salted hash in slapd's configuration, never the password itself.
    let root_pw =
        on(host, "ldapsearch -Q -LLL -Y EXTERNAL -H ldapi:/// -b 'olcDatabase={1}mdb,cn=config' -s base olcRootPW");
    assert!(root_pw.contains("olcRootPW: {SSHA}"), "{root_pw}");
    let plain = on(
        host,
        "grep -rlF -f /etc/groundwork/ldap/admin.pw /etc/ldap/slapd.d /var/lib/ldap /etc/default/slapd || true",
    );
    assert!(plain.trim().is_empty(), "the admin password in plain text on the host: {plain}");
    assert_eq!(
        on(host, "stat -c '%a %U' /etc/groundwork/ldap/admin.pw /etc/groundwork/ldap/reader.pw").trim(),
        "600 root\n600 root"
    );
}

/// psql and mysql as every user of the answers, from this machine; what must be refused.
fn sql_clients(dir: &Path, ip: &str, a: &Answers, secrets: &Secrets) {
    for d in &a.databases.postgresql {
        let pw = secrets.get("postgresql", &d.user).unwrap();
        let env = [("PGPASSWORD", pw), ("PGCONNECT_TIMEOUT", "5")];
        let (rc, out, err) = client("psql", &["-XtA", "-h", ip, "-U", &d.user, "-d", &d.name, "-c", "select 1"], &env);
        assert_eq!((rc, out.as_str()), (0, "1"), "psql as {} to {}: {err}", d.user, d.name);
        let (rc, out, _) = client(
            "psql",
            &[
                "-XtA",
                "-h",
                ip,
                "-U",
                &d.user,
                "-d",
                &d.name,
                "-c",
                "select pg_get_userbyid(datdba) from pg_database where datname = current_database()",
            ],
            &env,
        );
        assert_eq!((rc, out.as_str()), (0, d.user.as_str()), "owner of {}", d.name);
        // Another site database is not this user's.
        if let Some(other) = a.databases.postgresql.iter().find(|o| o.name != d.name) {
            let (rc, _, err) =
                client("psql", &["-XtA", "-h", ip, "-U", &d.user, "-d", &other.name, "-c", "select 1"], &env);
            assert_ne!(rc, 0, "{} reaches {}", d.user, other.name);
            assert!(err.contains("no pg_hba.conf entry"), "{err}");
        }
    }
    let (rc, _, err) = client(
        "psql",
        &["-XtA", "-h", ip, "-U", "postgres", "-d", "postgres", "-c", "select 1"],
        &[("PGPASSWORD", "x"), ("PGCONNECT_TIMEOUT", "5")],
    );
    assert_ne!(rc, 0, "postgres over TCP from the subnet must be refused");
    assert!(err.contains("no pg_hba.conf entry"), "{err}");

    for d in &a.databases.mariadb {
        let pw = secrets.get("mariadb", &d.user).unwrap();
        let cnf = private_file(dir, &format!("{}.cnf", d.user), &format!("[client]\nuser={}\npassword={pw}\n", d.user));
        let extra = format!("--defaults-extra-file={}", cnf.display());
        let (rc, out, err) =
            client("mysql", &[&extra, "--connect-timeout=5", "-h", ip, "-NB", &d.name, "-e", "SELECT 1"], &[]);
        assert_eq!((rc, out.as_str()), (0, "1"), "mysql as {} to {}: {err}", d.user, d.name);
        let (rc, out, _) = client("mysql", &[&extra, "-h", ip, "-NB", "-e", "SHOW DATABASES"], &[]);
        assert_eq!(rc, 0);
        let dbs: Vec<&str> = out.lines().collect();
        assert!(
            dbs.contains(&d.name.as_str()) && !dbs.contains(&"test") && !dbs.contains(&"mysql"),
            "{} sees {dbs:?}",
            d.user
        );
    }
    let (rc, _, err) = client(
        "mysql",
        &["--no-defaults", "--connect-timeout=5", "-h", ip, "-u", "root", "-NB", "-e", "SELECT 1"],
        &[],
    );
    assert_ne!(rc, 0, "root over TCP must be refused");
    assert!(err.contains("Access denied") || err.contains("not allowed"), "{err}");
}

/// verify::ldap and verify::sql, as `groundwork verify` runs them.
fn verify_all(a: &Answers, secrets: &Secrets, state: &Path) -> (Vec<verify::Row>, f64) {
    let t = Instant::now();
    let dir = StateDir { root: state.to_path_buf() };
    let rows = rt().block_on(async {
        let (mut l, s) = tokio::join!(verify::ldap::verify(a, secrets, &dir), verify::sql::verify(a, secrets, &dir));
        l.extend(s);
        l
    });
    (rows, t.elapsed().as_secs_f64())
}

/// verify::ldap and verify::sql: every row ok.
fn verify_rows(a: &Answers, secrets: &Secrets, state: &Path) -> (Vec<verify::Row>, f64) {
    let (rows, secs) = verify_all(a, secrets, state);
    eprintln!("verify in {secs:.2} s:\n{}", verify::render_table(&rows));
    assert!(rows.iter().all(|r| r.result == Outcome::Ok), "{}", verify::render_table(&rows));
    (rows, secs)
}

fn row<'r>(rows: &'r [verify::Row], service: &str, check: &str) -> &'r verify::Row {
    rows.iter()
        .find(|r| r.service == service && r.check == check)
        .unwrap_or_else(|| panic!("no {service} / {check} row:\n{}", verify::render_table(rows)))
}

/// Passwords changed by hand on sq1 (a PostgreSQL and a MariaDB user): verify sees it, the
/// next apply sets them again (one change per engine), verify passes, and the apply after
/// that changes nothing.
fn drifted_passwords_converge(state: &Path, a: &Answers, secrets: &Secrets) -> (f64, f64) {
    on("sq1", "cd / && runuser -u postgres -- psql -XqAt -c \"ALTER ROLE keycloak PASSWORD 'changed-by-hand'\"");
    on("sq1", "mariadb -e \"ALTER USER 'nextcloud'@'10.77.0.0/255.255.255.0' IDENTIFIED BY 'changed-by-hand'\"");
    let (rows, _) = verify_all(a, secrets, state);
    for check in ["keycloak@keycloak select 1", "nextcloud@nextcloud SELECT 1"] {
        let r = rows.iter().find(|r| r.check == check).unwrap();
        assert_eq!(r.result, Outcome::Fail, "the drifted password must fail verify:\n{}", verify::render_table(&rows));
        assert_eq!(r.cause, Some(verify::Cause::Refused), "{}", r.detail);
    }
    let fix = apply(state, TWO_ANSWERS);
    assert_eq!(fix.code, 0, "{}", fix.all_text());
    assert_eq!(fix.changed("ld1"), 0, "{:?}", fix.changed_steps("ld1"));
    // Exactly these two steps (the roles' order on the host is the catalog's business).
    let mut changed = fix.changed_steps("sq1");
    changed.sort();
    assert_eq!(
        changed,
        [
            "mariadb / databases and their users (site subnet only), each able to log in with its password",
            "postgresql / databases and their owners, each able to log in with its password",
        ],
    );
    verify_rows(a, secrets, state);
    let again = apply(state, TWO_ANSWERS);
    assert_eq!(again.code, 0, "{}", again.all_text());
    for (h, _) in TWO {
        assert_eq!(again.changed(h), 0, "{h}: {:?}", again.changed_steps(h));
    }
    (fix.secs, again.secs)
}

/// Where ld1's journal ends now (a cursor: journal times have whole seconds only).
fn journal_mark() -> String {
    let out = on("ld1", "journalctl -n 0 --show-cursor --no-pager");
    out.lines().find_map(|l| l.strip_prefix("-- cursor: ")).expect("a journal cursor").trim().to_string()
}

/// Binds of the service account that slapd logged (olcLogLevel stats) after `mark`.
fn reader_binds_after(mark: &str) -> usize {
    let log = on("ld1", &format!("journalctl -q -u slapd --after-cursor '{mark}' --no-pager -o cat || true"));
    log.lines().filter(|l| l.contains("BIND dn=\"cn=groundwork-reader")).count()
}

/// slapd made to serve another self-signed certificate (same name, same address): verify
/// refuses every TLS connection, says which certificate it was shown and which one it wanted,
/// and slapd logs no bind from it; the admin check (on the host, over SSH) still passes.
/// Then the original certificate is put back.
fn an_impostor_certificate_gets_no_password(state: &Path, a: &Answers, secrets: &Secrets) {
    let set_cert = |name: &str| {
        on(
            "ld1",
            &format!(
                "printf 'dn: cn=config\\nchangetype: modify\\nreplace: olcTLSCertificateFile\\nolcTLSCertificateFile: /etc/ldap/tls/{name}.crt\\n-\\n\
                 replace: olcTLSCertificateKeyFile\\nolcTLSCertificateKeyFile: /etc/ldap/tls/{name}.key\\n' \
                 | ldapmodify -Q -Y EXTERNAL -H ldapi:/// >/dev/null && systemctl restart slapd"
            ),
        )
    };
    on(
        "ld1",
        "printf 'dn: cn=config\\nchangetype: modify\\nreplace: olcLogLevel\\nolcLogLevel: stats\\n' | ldapmodify -Q -Y EXTERNAL -H ldapi:/// >/dev/null && \
         cd /etc/ldap/tls && openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -sha256 -days 30 -nodes \
         -subj '/CN=ld1.id.groundwork.test' -addext 'subjectAltName=DNS:ld1.id.groundwork.test,IP:10.77.0.52' \
         -keyout impostor.key -out impostor.crt 2>/dev/null && chgrp openldap impostor.key && chmod 0640 impostor.key",
    );
    let pinned = on("ld1", "openssl x509 -in /etc/ldap/tls/selfsigned.crt -noout -fingerprint -sha256")
        .trim()
        .replace("sha256 Fingerprint=", "SHA256:");
    let impostor = on("ld1", "openssl x509 -in /etc/ldap/tls/impostor.crt -noout -fingerprint -sha256")
        .trim()
        .replace("sha256 Fingerprint=", "SHA256:");

    // With the right certificate the service account binds, and slapd logs it.
    let mark = journal_mark();
    verify_rows(a, secrets, state);
    assert!(
        reader_binds_after(&mark) >= 1,
        "slapd logged no bind of the service account: the log check would prove nothing"
    );

    set_cert("impostor");
    let mark = journal_mark();
    let (rows, _) = verify_all(a, secrets, state);
    eprintln!("verify against the impostor certificate:\n{}", verify::render_table(&rows));
    for check in
        ["StartTLS (389)", "LDAPS (636)", "bind as service account", "search the OUs", "anonymous read refused"]
    {
        let r = row(&rows, "ldap", check);
        assert_eq!((r.result, r.cause), (Outcome::Fail, Some(verify::Cause::Untrusted)), "{check}: {}", r.detail);
        assert!(
            r.detail.contains(&impostor)
                && r.detail.contains(&pinned)
                && r.detail.contains("not the certificate groundwork generated"),
            "{check} must name what it was shown and what it wanted ({impostor} / {pinned}): {}",
            r.detail
        );
    }
    assert_eq!(row(&rows, "ldap", "bind as admin (on the host)").result, Outcome::Ok);
    assert_eq!(reader_binds_after(&mark), 0, "a password reached the server with the impostor certificate");

    set_cert("selfsigned");
    on("ld1", "rm -f /etc/ldap/tls/impostor.crt /etc/ldap/tls/impostor.key");
    verify_rows(a, secrets, state);
}

#[test]
fn ldap_and_databases_on_two_hosts_pass_client_checks_and_a_second_apply_changes_nothing() {
    let Some(_lab) = lab::exclusive(TWO) else { return };
    fresh(TWO);
    ensure_clients();
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");

    let first = apply(&state, TWO_ANSWERS);
    assert_eq!(first.code, 0, "{}", first.all_text());
    for (h, _) in TWO {
        assert_eq!(first.failed(h), 0, "{}", first.all_text());
        assert!(first.changed(h) >= 10, "{h}: {:?}", first.changed_steps(h));
    }
    // The run says when the LDAP certificate is a generated self-signed one.
    assert!(
        first.changed_steps("ld1").iter().any(|s| s.contains("TLS certificate: self-signed, generated")),
        "{:?}",
        first.changed_steps("ld1")
    );

    let a = load(TWO_ANSWERS);
    let secrets = Secrets::load(&StateDir { root: state.clone() }.secrets_path()).unwrap();
    let (rows, verify_secs) = verify_rows(&a, &secrets, &state);
    assert_eq!(rows.iter().filter(|r| r.service == "ldap").count(), 7);
    assert_eq!(rows.iter().filter(|r| r.service == "postgresql").count(), 2);
    assert_eq!(rows.iter().filter(|r| r.service == "mariadb").count(), 3);
    assert!(
        row(&rows, "ldap", "StartTLS (389)").detail.contains("certificate pinned: SHA256:"),
        "{}",
        verify::render_table(&rows)
    );
    assert!(
        row(&rows, "postgresql", "keycloak@keycloak select 1").detail.contains("SCRAM-SHA-256-PLUS"),
        "{}",
        verify::render_table(&rows)
    );

    let t = Instant::now();
    ldap_clients(dir.path(), "ld1", "10.77.0.52", &a, &secrets);
    sql_clients(dir.path(), "10.77.0.53", &a, &secrets);
    let clients_secs = t.elapsed().as_secs_f64();
    // MariaDB's secure defaults, seen from the inside.
    let users = on("sq1", "mariadb -NBe \"SELECT CONCAT(User, '@', Host) FROM mysql.user ORDER BY 1\"");
    assert_eq!(
        users.lines().collect::<Vec<_>>(),
        [
            "mariadb.sys@localhost",
            "mysql@localhost",
            "nextcloud@10.77.0.0/255.255.255.0",
            "root@localhost",
            "tester@10.77.0.0/255.255.255.0",
            "wiki_app@10.77.0.0/255.255.255.0"
        ],
    );
    assert_eq!(
        on("sq1", "mariadb -NBe 'SHOW CREATE USER root@localhost'").trim(),
        "CREATE USER `root`@`localhost` IDENTIFIED VIA unix_socket"
    );
    // test_x's owner gets test_x only, not testyx (`_` is a GRANT wildcard).
    on("sq1", "mariadb -e 'CREATE DATABASE testyx'");
    let pw = secrets.get("mariadb", "tester").unwrap();
    let cnf = private_file(dir.path(), "tester.cnf", &format!("[client]\nuser=tester\npassword={pw}\n"));
    let extra = format!("--defaults-extra-file={}", cnf.display());
    let (rc, out, err) =
        client("mysql", &[&extra, "--connect-timeout=5", "-h", "10.77.0.53", "-NB", "-e", "SHOW DATABASES"], &[]);
    assert_eq!(rc, 0, "{err}");
    assert!(out.lines().any(|l| l == "test_x") && !out.lines().any(|l| l == "testyx"), "tester sees: {out}");
    on("sq1", "mariadb -e 'DROP DATABASE testyx'");

    let second = apply(&state, TWO_ANSWERS);
    assert_eq!(second.code, 0, "{}", second.all_text());
    for (h, _) in TWO {
        assert_eq!(second.changed(h), 0, "{h}: {:?}", second.changed_steps(h));
    }
    let plan = groundwork(&state, &["plan", "--live", TWO_ANSWERS]);
    assert_eq!(plan.code, 0, "{}\n{}", plan.stdout, plan.stderr);
    assert_no_password_leaks(
        &state,
        &secrets,
        &[
            ("plan --live", &format!("{}{}", plan.stdout, plan.stderr)),
            ("the first apply's output", &format!("{}{}", first.stdout, first.stderr)),
            ("the second apply's output", &format!("{}{}", second.stdout, second.stderr)),
        ],
    );

    let t = Instant::now();
    let (fix_secs, again_secs) = drifted_passwords_converge(&state, &a, &secrets);
    let drift_secs = t.elapsed().as_secs_f64();
    let t = Instant::now();
    an_impostor_certificate_gets_no_password(&state, &a, &secrets);
    let pin_secs = t.elapsed().as_secs_f64();
    eprintln!(
        "FIGURES: ldap on ld1 + postgresql/mariadb on sq1: first converge {:.1} s; no-op re-run {:.2} s; \
         verify {verify_secs:.2} s ({} checks); client checks {clients_secs:.1} s; \
         drifted passwords: converge {fix_secs:.1} s, re-run {again_secs:.1} s (phase {drift_secs:.1} s); \
         impostor certificate phase {pin_secs:.1} s",
        first.secs,
        second.secs,
        rows.len()
    );
}

#[test]
fn the_single_server_shape_converges_with_ldap_and_both_databases_on_one_host() {
    let Some(_lab) = lab::exclusive(ONE) else { return };
    fresh(ONE);
    ensure_clients();
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");

    let first = apply(&state, ONE_ANSWERS);
    assert_eq!(first.code, 0, "{}", first.all_text());
    assert_eq!(first.failed("s1"), 0);
    let a = load(ONE_ANSWERS);
    let secrets = Secrets::load(&StateDir { root: state.clone() }.secrets_path()).unwrap();
    let (rows, _) = verify_rows(&a, &secrets, &state);
    assert!(rows.iter().all(|r| r.host == "s1"));
    ldap_clients(dir.path(), "s1", "10.77.0.40", &a, &secrets);
    sql_clients(dir.path(), "10.77.0.40", &a, &secrets);

    let second = apply(&state, ONE_ANSWERS);
    assert_eq!(second.code, 0, "{}", second.all_text());
    assert_eq!(second.changed("s1"), 0, "{:?}", second.changed_steps("s1"));
    assert_no_password_leaks(
        &state,
        &secrets,
        &[("apply output", &format!("{}{}{}", first.stdout, first.stderr, second.stdout))],
    );
    let (broken_secs, back_secs) = a_cluster_that_fails_to_start_is_reported_then_started(&state);
    eprintln!(
        "FIGURES: single server (ldap + postgresql + mariadb on s1): first converge {:.1} s; no-op re-run {:.2} s; \
         a cluster that cannot start: failed in {broken_secs:.1} s, started once fixed in {back_secs:.1} s",
        first.secs, second.secs
    );
}

/// postgresql.service stays active when its cluster's unit fails: the next apply must see the
/// cluster itself, fail at once with systemd's words while it cannot start (not after a
/// wait's timeout), and start it once it can; verify then passes.
fn a_cluster_that_fails_to_start_is_reported_then_started(state: &Path) -> (f64, f64) {
    on("s1", "systemctl stop postgresql@15-main && chmod 0777 /var/lib/postgresql/15/main");
    assert_eq!(on("s1", "systemctl is-active postgresql || true").trim(), "active");
    let broken = apply(state, ONE_ANSWERS);
    assert_ne!(broken.code, 0, "{}", broken.all_text());
    let failed = broken.step("s1", "every cluster runs").unwrap_or_else(|| panic!("{}", broken.all_text()));
    assert_eq!(failed["status"], "failed", "{failed}");
    let error = broken.error("s1");
    assert!(error.contains("Failed to start postgresql@15-main.service"), "{error}");
    assert!(broken.secs < 30.0, "the failure took {:.1} s: a wait ran out instead", broken.secs);

    on("s1", "chmod 0700 /var/lib/postgresql/15/main");
    let back = apply(state, ONE_ANSWERS);
    assert_eq!(back.code, 0, "{}", back.all_text());
    assert_eq!(back.changed_steps("s1"), ["postgresql / every cluster runs"]);
    assert_eq!(on("s1", "systemctl is-active postgresql@15-main || true").trim(), "active");
    let verified = groundwork(state, &["verify", "--json", ONE_ANSWERS]);
    assert_eq!(verified.code, 0, "{}", verified.text());
    (broken.secs, back.secs)
}
