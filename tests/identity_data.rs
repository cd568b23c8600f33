//! The ldap (OpenLDAP), postgresql and mariadb roles, and their client checks.
//!
//! Offline: the roles render for both lab shapes; every generated password appears only in
//! files marked `secret = true` (never in a command, a guard, a path or a non-secret file,
//! which would reach the target's process list or a diff); pg_hba and the MariaDB accounts
//! admit the site subnet only; the LDAP settings name the suffix, the service account and the
//! extra OUs.
//!
//! On the lab (tests/lab/README.md):
//! - two hosts, id1 (ldap) and db1 (postgresql + mariadb, reached through a sudo user): apply
//!   converges; `groundwork::verify::{ldap, sql}` pass; the same checks with the real clients
//!   from this machine (ldapsearch/ldapwhoami over StartTLS and LDAPS with the host's
//!   certificate, psql, mysql), plus what must be refused (anonymous reads, another user's
//!   database, root over TCP); memberOf works; the admin password is a salted hash in slapd's
//!   configuration; a second apply changes nothing; no generated password appears in the
//!   log files, the apply output or `plan --live`.
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
use groundwork::answers::{self, model::Answers};
use groundwork::engine::{context, facts::Facts};
use groundwork::playbook::catalog::Catalog;
use groundwork::state::{Secrets, StateDir};
use groundwork::verify::{self, Outcome};

const TWO: &[(&str, &str)] = &[("id1", "10.77.0.12"), ("db1", "10.77.0.13")];
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
    secrets: Secrets,
}

fn render(a: &Answers, host: &str) -> Rendered {
    let mut secrets = Secrets::default();
    secrets.ensure_for(a);
    let catalog = Catalog::load(None).unwrap();
    let env = context::environment(&catalog);
    let site = context::site_context(a, &secrets);
    let ctx = context::host_context(&site, host, &Facts::default());
    let me = a.hosts.iter().find(|h| h.name == host).unwrap();
    let mut files = BTreeMap::new();
    let mut strings = Vec::new();
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
            for t in [&s.dest, &s.directory, &s.command, &s.creates, &s.unless, &s.onlyif, &s.validate, &s.when].into_iter().flatten() {
                strings.push(r(t));
            }
            if let Some(w) = &s.wait {
                strings.extend([&w.command, &w.host, &w.socket].into_iter().flatten().map(|t| r(t)));
            }
            if let Some(dest) = &s.dest {
                let text = match (&s.template, &s.content) {
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
    Rendered { files, strings, secrets }
}

fn secret_values(s: &Secrets) -> Vec<String> {
    s.values().map(str::to_string).collect()
}

#[test]
fn passwords_only_render_into_secret_files() {
    for (path, hosts) in [(TWO_ANSWERS, &["id1", "db1"][..]), (ONE_ANSWERS, &["s1"][..])] {
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
    let db = render(&a, "db1");
    let hba = &db.files["/etc/groundwork/postgresql/pg_hba.conf"].0;
    assert!(hba.contains("host    keycloak\tkeycloak\t10.77.0.0/24\tscram-sha-256"), "{hba}");
    assert!(hba.contains("host    matrix_synapse\tsynapse\t10.77.0.0/24\tscram-sha-256"), "{hba}");
    assert!(!hba.contains("0.0.0.0/0") && !hba.contains(" trust"), "{hba}");
    let conf = &db.files["/etc/groundwork/postgresql/groundwork.conf"].0;
    assert!(conf.contains("listen_addresses = 'localhost,10.77.0.13'"), "{conf}");
    let (setup, secret) = &db.files["/etc/groundwork/postgresql/setup.sql"];
    assert!(*secret);
    assert!(setup.contains("SET log_statement = 'none';"), "{setup}");
    assert!(setup.contains(&format!("'{}'", db.secrets.get("postgresql", "synapse").unwrap())));
    let cnf = &db.files["/etc/mysql/mariadb.conf.d/60-groundwork.cnf"].0;
    assert!(cnf.contains("bind-address = 127.0.0.1,10.77.0.13") && cnf.contains("skip-name-resolve"), "{cnf}");
    let (msetup, _) = &db.files["/etc/groundwork/mariadb/setup.sql"];
    assert!(msetup.contains("CREATE USER IF NOT EXISTS 'wiki_app'@'10.77.0.0/255.255.255.0' IDENTIFIED BY '"), "{msetup}");
    assert!(msetup.contains("GRANT ALL PRIVILEGES ON `wiki`.* TO 'wiki_app'@'10.77.0.0/255.255.255.0';"), "{msetup}");
    assert!(!msetup.contains("'%'"), "no account open to every address:\n{msetup}");
    let secure = &db.files["/etc/groundwork/mariadb/secure.sql"].0;
    assert!(secure.contains("DROP DATABASE IF EXISTS test;") && secure.contains("IDENTIFIED VIA unix_socket"), "{secure}");

    let id = render(&a, "id1");
    let cfg = &id.files["/etc/groundwork/ldap/config.ldif"].0;
    assert!(cfg.contains("olcModuleLoad: memberof"), "{cfg}");
    assert!(cfg.contains("olcDbIndex: mail eq") && cfg.contains("olcDbIndex: cn,uid eq") && cfg.contains("olcDbIndex: member,memberUid eq"), "{cfg}");
    assert!(cfg.contains("by dn.exact=\"cn=groundwork-reader,ou=services,dc=id,dc=groundwork,dc=test\" read"), "{cfg}");
    assert!(cfg.contains("olcTLSCertificateFile: /etc/ldap/tls/selfsigned.crt"), "no tls-cert: self-signed\n{cfg}");
    let dir = &id.files["/etc/groundwork/ldap/directory.ldif"].0;
    for ou in ["people", "groups", "services", "machines", "sudoers"] {
        assert!(dir.contains(&format!("dn: ou={ou},dc=id,dc=groundwork,dc=test\n")), "{ou}:\n{dir}");
    }
    assert!(dir.contains("o: Groundwork Lab Société\ndc: id\n"), "{dir}");
    let defaults = &id.files["/etc/default/slapd"].0;
    assert!(defaults.contains("SLAPD_SERVICES=\"ldap://127.0.0.1/ ldap://10.77.0.12/ ldaps://10.77.0.12/ ldapi:///\""), "{defaults}");
    assert!(id.strings.iter().any(|s| s == "slapd slapd/domain string id.groundwork.test"), "preseeded domain");

    // With tls-cert/tls-key the site's pair is used instead.
    let mut b = a.clone();
    let l = b.ldap.as_mut().unwrap();
    l.tls_cert = Some(PathBuf::from("/etc/ssl/ldap.pem"));
    l.tls_key = Some(PathBuf::from("/etc/ssl/private/ldap.key"));
    let id = render(&b, "id1");
    let cfg = &id.files["/etc/groundwork/ldap/config.ldif"].0;
    assert!(cfg.contains("olcTLSCertificateFile: /etc/ldap/tls/site.crt"), "{cfg}");
    assert!(id.strings.iter().any(|s| s.contains("install -m 0644 -o root -g root '/etc/ssl/ldap.pem' /etc/ldap/tls/site.crt")));
}

// ------------------------------------------------------------------ on the lab

fn apply(state: &Path, answers: &str) -> Run {
    run::apply(answers, state, &[])
}

/// ldapsearch, psql and mysql on this machine: installed with apt-get when one is missing.
fn ensure_clients() {
    let have = |cmd: &str| Command::new("sh").args(["-c", &format!("command -v {cmd}")]).output().is_ok_and(|o| o.status.success());
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
    let (rc, out, err) = client("ldapwhoami", &["-ZZ", "-x", "-H", &url, "-D", &admin, "-y", admin_pw.to_str().unwrap()], &tls);
    assert_eq!(rc, 0, "ldapwhoami as admin: {out} {err}");
    assert_eq!(out, format!("dn:{admin}"));
    // LDAPS as the service account: the OUs.
    let (rc, out, err) = client(
        "ldapsearch",
        &["-x", "-H", &ldaps, "-D", &reader, "-y", reader_pw.to_str().unwrap(), "-b", &suffix, "-s", "one", "-LLL", "(objectClass=organizationalUnit)", "ou"],
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
    let (rc, _, err) = client("ldapwhoami", &["-ZZ", "-x", "-H", &url, "-D", &reader, "-y", wrong.to_str().unwrap()], &tls);
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
        &["-ZZ", "-x", "-H", &url, "-D", &reader, "-y", reader_pw.to_str().unwrap(), "-b", &suffix, "-LLL", "(mail=gw-test@example.org)", "memberOf"],
        &tls,
    );
    on(host, &format!("ldapdelete -Q -Y EXTERNAL -H ldapi:/// 'cn=gw-testers,ou=groups,{suffix}' 'uid=gw-test,ou=people,{suffix}'"));
    assert_eq!(rc, 0, "{err}");
    assert!(out.contains(&format!("memberOf: cn=gw-testers,ou=groups,{suffix}")), "memberof overlay:\n{out}");
    // The admin password is a salted hash in slapd's configuration, never the password itself.
    let root_pw = on(host, "ldapsearch -Q -LLL -Y EXTERNAL -H ldapi:/// -b 'olcDatabase={1}mdb,cn=config' -s base olcRootPW");
    assert!(root_pw.contains("olcRootPW: {SSHA}"), "{root_pw}");
    let plain = on(host, "grep -rlF -f /etc/groundwork/ldap/admin.pw /etc/ldap/slapd.d /var/lib/ldap /etc/default/slapd || true");
    assert!(plain.trim().is_empty(), "the admin password in plain text on the host: {plain}");
    assert_eq!(on(host, "stat -c '%a %U' /etc/groundwork/ldap/admin.pw /etc/groundwork/ldap/reader.pw").trim(), "600 root\n600 root");
}

/// psql and mysql as every user of the answers, from this machine; what must be refused.
fn sql_clients(dir: &Path, ip: &str, a: &Answers, secrets: &Secrets) {
    for d in &a.databases.postgresql {
        let pw = secrets.get("postgresql", &d.user).unwrap();
        let env = [("PGPASSWORD", pw), ("PGCONNECT_TIMEOUT", "5")];
        let (rc, out, err) = client("psql", &["-XtA", "-h", ip, "-U", &d.user, "-d", &d.name, "-c", "select 1"], &env);
        assert_eq!((rc, out.as_str()), (0, "1"), "psql as {} to {}: {err}", d.user, d.name);
        let (rc, out, _) = client("psql", &["-XtA", "-h", ip, "-U", &d.user, "-d", &d.name, "-c", "select pg_get_userbyid(datdba) from pg_database where datname = current_database()"], &env);
        assert_eq!((rc, out.as_str()), (0, d.user.as_str()), "owner of {}", d.name);
        // Another site database is not this user's.
        if let Some(other) = a.databases.postgresql.iter().find(|o| o.name != d.name) {
            let (rc, _, err) = client("psql", &["-XtA", "-h", ip, "-U", &d.user, "-d", &other.name, "-c", "select 1"], &env);
            assert_ne!(rc, 0, "{} reaches {}", d.user, other.name);
            assert!(err.contains("no pg_hba.conf entry"), "{err}");
        }
    }
    let (rc, _, err) = client("psql", &["-XtA", "-h", ip, "-U", "postgres", "-d", "postgres", "-c", "select 1"], &[("PGPASSWORD", "x"), ("PGCONNECT_TIMEOUT", "5")]);
    assert_ne!(rc, 0, "postgres over TCP from the subnet must be refused");
    assert!(err.contains("no pg_hba.conf entry"), "{err}");

    for d in &a.databases.mariadb {
        let pw = secrets.get("mariadb", &d.user).unwrap();
        let cnf = private_file(dir, &format!("{}.cnf", d.user), &format!("[client]\nuser={}\npassword={pw}\n", d.user));
        let extra = format!("--defaults-extra-file={}", cnf.display());
        let (rc, out, err) = client("mysql", &[&extra, "--connect-timeout=5", "-h", ip, "-NB", &d.name, "-e", "SELECT 1"], &[]);
        assert_eq!((rc, out.as_str()), (0, "1"), "mysql as {} to {}: {err}", d.user, d.name);
        let (rc, out, _) = client("mysql", &[&extra, "-h", ip, "-NB", "-e", "SHOW DATABASES"], &[]);
        assert_eq!(rc, 0);
        let dbs: Vec<&str> = out.lines().collect();
        assert!(dbs.contains(&d.name.as_str()) && !dbs.contains(&"test") && !dbs.contains(&"mysql"), "{} sees {dbs:?}", d.user);
    }
    let (rc, _, err) = client("mysql", &["--no-defaults", "--connect-timeout=5", "-h", ip, "-u", "root", "-NB", "-e", "SELECT 1"], &[]);
    assert_ne!(rc, 0, "root over TCP must be refused");
    assert!(err.contains("Access denied") || err.contains("not allowed"), "{err}");
}

/// verify::ldap and verify::sql: every row ok.
fn verify_rows(a: &Answers, secrets: &Secrets) -> (Vec<verify::Row>, f64) {
    let t = Instant::now();
    let rows = rt().block_on(async {
        let (mut l, s) = tokio::join!(verify::ldap::verify(a, secrets), verify::sql::verify(a, secrets));
        l.extend(s);
        l
    });
    let secs = t.elapsed().as_secs_f64();
    eprintln!("verify in {secs:.2} s:\n{}", verify::render_table(&rows));
    assert!(rows.iter().all(|r| r.result == Outcome::Ok), "{}", verify::render_table(&rows));
    (rows, secs)
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
        first.changed_steps("id1").iter().any(|s| s.contains("TLS certificate: self-signed, generated")),
        "{:?}",
        first.changed_steps("id1")
    );

    let a = load(TWO_ANSWERS);
    let secrets = Secrets::load(&StateDir { root: state.clone() }.secrets_path()).unwrap();
    let (rows, verify_secs) = verify_rows(&a, &secrets);
    assert_eq!(rows.iter().filter(|r| r.service == "ldap").count(), 7);
    assert_eq!(rows.iter().filter(|r| r.service == "postgresql").count(), 2);
    assert_eq!(rows.iter().filter(|r| r.service == "mariadb").count(), 2);

    let t = Instant::now();
    ldap_clients(dir.path(), "id1", "10.77.0.12", &a, &secrets);
    sql_clients(dir.path(), "10.77.0.13", &a, &secrets);
    let clients_secs = t.elapsed().as_secs_f64();
    // MariaDB's secure defaults, seen from the inside.
    let users = on("db1", "mariadb -NBe \"SELECT CONCAT(User, '@', Host) FROM mysql.user ORDER BY 1\"");
    assert_eq!(
        users.lines().collect::<Vec<_>>(),
        ["mariadb.sys@localhost", "mysql@localhost", "nextcloud@10.77.0.0/255.255.255.0", "root@localhost", "wiki_app@10.77.0.0/255.255.255.0"],
    );
    assert_eq!(on("db1", "mariadb -NBe 'SHOW CREATE USER root@localhost'").trim(), "CREATE USER `root`@`localhost` IDENTIFIED VIA unix_socket");

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
    eprintln!(
        "FIGURES: ldap on id1 + postgresql/mariadb on db1: first converge {:.1} s; no-op re-run {:.2} s; \
         verify {verify_secs:.2} s ({} checks); client checks {clients_secs:.1} s",
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
    let (rows, _) = verify_rows(&a, &secrets);
    assert!(rows.iter().all(|r| r.host == "s1"));
    ldap_clients(dir.path(), "s1", "10.77.0.40", &a, &secrets);
    sql_clients(dir.path(), "10.77.0.40", &a, &secrets);

    let second = apply(&state, ONE_ANSWERS);
    assert_eq!(second.code, 0, "{}", second.all_text());
    assert_eq!(second.changed("s1"), 0, "{:?}", second.changed_steps("s1"));
    assert_no_password_leaks(&state, &secrets, &[("apply output", &format!("{}{}{}", first.stdout, first.stderr, second.stdout))]);
    eprintln!("FIGURES: single server (ldap + postgresql + mariadb on s1): first converge {:.1} s; no-op re-run {:.2} s", first.secs, second.secs);
}
