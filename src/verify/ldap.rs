//! LDAP, checked as an application sees it (ldap3, from the machine running groundwork, to the
//! site address of the host with the ldap role):
//!
//! - The certificate slapd must present is read first, over SSH (whose host key the state
//!   directory pins): the self-signed one groundwork generated, or the copy of the answers'
//!   `tls-cert`. TLS connections accept exactly that certificate (or, for `tls-cert`, a chain
//!   that verifies against this machine's trust store: /etc/ssl/certs or SSL_CERT_FILE); any
//!   other fails the handshake, so no password is ever sent to it, and the check says what was
//!   presented. Without the pinned certificate no TLS check runs.
//! - StartTLS on ldap:// (389) and LDAPS (636) complete a TLS handshake.
//! - The read-only service account, `cn=groundwork-reader,ou=services,<suffix>`, binds over
//!   StartTLS with its generated password, and a one-level search of the suffix finds the OUs
//!   people, groups, services and the answers' `extra-ous`: the least privilege that proves
//!   an application can use the directory.
//! - The admin (`cn=admin,<suffix>`) is checked on the host, over the SSH session: a simple
//!   bind over ldapi:/// with the password on stdin. The most powerful password of the
//!   directory never crosses the network, even to a verified server.
//! - Anonymous clients read nothing below the suffix.
//!
//! What the ldap role lays down is in `playbooks/ldap/` (the names below must match it).

use std::sync::Arc;
use std::time::{Duration, Instant};

use ldap3::{LdapConnAsync, LdapConnSettings, LdapError, Scope, SearchEntry};

use super::tls::{PinnedCert, PinnedVerifier, fetch};
use super::{Cause, Failure, Row, connect, timed};
use crate::answers::model::{Answers, Host, Role, ldap_suffix};
use crate::ssh::Session;
use crate::state::{Secrets, StateDir};

/// The certificate the ldap role generates when the answers have no `tls-cert`.
pub const SELF_SIGNED_CERT: &str = "/etc/ldap/tls/selfsigned.crt";
/// Where the ldap role copies the answers' `tls-cert`.
pub const SITE_CERT: &str = "/etc/ldap/tls/site.crt";

const SERVICE: &str = "ldap";
/// Connect and handshake; a whole check gets [`CHECK_TIMEOUT`].
const TIMEOUT: Duration = Duration::from_secs(5);
const CHECK_TIMEOUT: Duration = Duration::from_secs(10);

/// A check that does not finish in time fails (a server that accepts and never answers).
async fn within(f: impl std::future::Future<Output = Result<String, Failure>>) -> Result<String, Failure> {
    tokio::time::timeout(CHECK_TIMEOUT, f)
        .await
        .unwrap_or_else(|_| Err(Failure::timeout(format!("no answer within {} s", CHECK_TIMEOUT.as_secs()))))
}

/// The rootDN the ldap role configures.
pub fn admin_dn(suffix: &str) -> String {
    format!("cn=admin,{suffix}")
}

/// The read-only service account the ldap role creates.
pub fn reader_dn(suffix: &str) -> String {
    format!("cn=groundwork-reader,ou=services,{suffix}")
}

/// The OUs the ldap role creates: people, groups, services, then the answers' extra ones.
pub fn expected_ous(a: &Answers) -> Vec<String> {
    let mut ous: Vec<String> = ["people", "groups", "services"].iter().map(|s| s.to_string()).collect();
    if let Some(l) = &a.ldap {
        ous.extend(l.extra_ous.iter().cloned());
    }
    ous
}

/// How a check reaches the server.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Transport {
    Plain,
    StartTls,
    Ldaps,
}

struct Target<'a> {
    host: &'a Host,
    /// What a TLS server must present; `Err`: why there is nothing to trust (no TLS check runs).
    verifier: Result<Arc<PinnedVerifier>, String>,
}

impl Target<'_> {
    fn url(&self, t: Transport) -> String {
        match t {
            Transport::Ldaps => format!("ldaps://{}:636", self.host.address),
            _ => format!("ldap://{}:389", self.host.address),
        }
    }

    async fn connect(&self, t: Transport) -> Result<ldap3::Ldap, Failure> {
        let url = self.url(t);
        let mut settings = LdapConnSettings::new().set_conn_timeout(TIMEOUT).set_starttls(t == Transport::StartTls);
        let verifier = if t == Transport::Plain {
            None
        } else {
            let v = self.verifier.as_ref().map_err(|e| Failure::untrusted(format!("{url}: not connecting: {e}")))?;
            settings = settings.set_config(v.client_config()?);
            Some(v)
        };
        let (conn, ldap) = tokio::time::timeout(TIMEOUT, LdapConnAsync::with_settings(settings, &url))
            .await
            .map_err(|_| Failure::timeout(format!("{url}: no answer within {} s", TIMEOUT.as_secs())))?
            .map_err(|e| match verifier.and_then(|v| v.refused()) {
                Some(r) => Failure::untrusted(format!(
                    "{url}: the server presented {}: {}; nothing was sent",
                    r.presented, r.why
                )),
                None => failure(&e).prefixed(&url),
            })?;
        ldap3::drive!(conn);
        Ok(ldap)
    }

    fn cert_note(&self) -> String {
        match &self.verifier {
            Ok(v) => v.describe(),
            Err(e) => e.clone(),
        }
    }
}

fn describe(e: &LdapError) -> String {
    let s = e.to_string();
    if s.is_empty() { format!("{e:?}") } else { s }
}

/// An ldap3 error as a failed check: a result code other than success is the server refusing
/// the operation; ldap3's own timeout is a timeout; the rest (I/O, TLS, protocol) an error.
fn failure(e: &LdapError) -> Failure {
    let cause = match e {
        LdapError::LdapResult { .. } => Cause::Refused,
        LdapError::Timeout { .. } => Cause::Timeout,
        _ => Cause::Error,
    };
    Failure::new(cause, describe(e))
}

/// Bind with `dn` / `password`; `Ok(())` on success (result code 0).
async fn bind(ldap: &mut ldap3::Ldap, dn: &str, password: &str) -> Result<(), Failure> {
    let r = ldap.simple_bind(dn, password).await.map_err(|e| failure(&e).prefixed(format!("bind as {dn}")))?;
    if r.rc == 0 {
        Ok(())
    } else {
        let text = if r.text.is_empty() { String::new() } else { format!(": {}", r.text) };
        Err(Failure::refused(format!("bind as {dn} refused (result {}{text})", r.rc)))
    }
}

async fn starttls_handshake(t: &Target<'_>, transport: Transport) -> Result<String, Failure> {
    let mut ldap = t.connect(transport).await?;
    // The root DSE is readable by anyone: one round trip through the encrypted channel.
    let r =
        ldap.search("", Scope::Base, "(objectClass=*)", vec!["supportedLDAPVersion"]).await.map_err(|e| failure(&e))?;
    let _ = ldap.unbind().await;
    r.success().map_err(|e| failure(&e).prefixed("root DSE"))?;
    let what = if transport == Transport::Ldaps { "LDAPS on 636" } else { "StartTLS on 389" };
    Ok(format!("{what}: TLS up ({})", t.cert_note()))
}

async fn bind_as(t: &Target<'_>, who: &str, dn: &str, password: Option<&str>) -> Result<String, Failure> {
    let password = password.ok_or_else(|| format!("no {who} password in the secrets file (run apply first)"))?;
    let mut ldap = t.connect(Transport::StartTls).await?;
    let r = bind(&mut ldap, dn, password).await;
    let whoami = if r.is_ok() {
        ldap.extended(ldap3::exop::WhoAmI)
            .await
            .ok()
            .and_then(|r| r.success().ok())
            .and_then(|(exop, _)| exop.val)
            .map(|v| String::from_utf8_lossy(&v).to_string())
    } else {
        None
    };
    let _ = ldap.unbind().await;
    r?;
    Ok(match whoami {
        Some(w) if !w.is_empty() => format!("bound as {dn} over StartTLS (whoami: {w})"),
        _ => format!("bound as {dn} over StartTLS"),
    })
}

/// The admin password, proven on the host: a simple bind over ldapi:/// with the password on
/// stdin (never an argument), through the SSH session.
async fn admin_on_host(session: &Session, host: &str, dn: &str, password: Option<&str>) -> Result<String, Failure> {
    let password = password.ok_or_else(|| Failure::error("no admin password in the secrets file (run apply first)"))?;
    let cmd = format!("ldapwhoami -x -H ldapi:/// -D {} -y /dev/stdin", crate::engine::facts::sh_quote(dn));
    let out = session.exec(&cmd, Some(password.as_bytes())).await.map_err(|e| e.to_string())?;
    if !out.ok() {
        let said = out.stderr_str();
        let said = said.lines().rfind(|l| !l.trim().is_empty() && !l.starts_with("Warning")).unwrap_or("").trim();
        let said = format!("bind as {dn} over ldapi:/// on {host} refused (exit {}): {said}", out.status);
        // ldapwhoami exits with slapd's result code (49: invalid credentials); 127 is no
        // ldapwhoami, 255 no slapd to ask.
        return Err(if out.status < 127 { Failure::refused(said) } else { Failure::error(said) });
    }
    let how = if session.is_local() { "on this machine" } else { "through SSH" };
    Ok(format!("bound as {dn} over ldapi:/// on {host}, {how} (the admin password does not cross the network)"))
}

async fn search_ous(t: &Target<'_>, a: &Answers, suffix: &str, password: Option<&str>) -> Result<String, Failure> {
    let password =
        password.ok_or_else(|| Failure::error("no service account password in the secrets file (run apply first)"))?;
    let mut ldap = t.connect(Transport::StartTls).await?;
    bind(&mut ldap, &reader_dn(suffix), password).await?;
    let r = ldap
        .search(suffix, Scope::OneLevel, "(objectClass=organizationalUnit)", vec!["ou"])
        .await
        .map_err(|e| failure(&e))?;
    let _ = ldap.unbind().await;
    let (entries, _) = r.success().map_err(|e| failure(&e).prefixed(format!("search {suffix}")))?;
    let found: Vec<String> = entries
        .into_iter()
        .map(SearchEntry::construct)
        .filter_map(|e| e.attrs.get("ou").and_then(|v| v.first().cloned()))
        .collect();
    let missing: Vec<String> =
        expected_ous(a).into_iter().filter(|ou| !found.iter().any(|f| f.eq_ignore_ascii_case(ou))).collect();
    if missing.is_empty() {
        Ok(format!("as the service account: {} OUs under {suffix} ({})", found.len(), found.join(", ")))
    } else {
        Err(Failure::mismatch(format!(
            "missing OU(s) {} under {suffix}; found: {}",
            missing.join(", "),
            found.join(", ")
        )))
    }
}

async fn anonymous_refused(t: &Target<'_>, suffix: &str) -> Result<String, Failure> {
    let mut ldap = t.connect(Transport::StartTls).await?;
    let r = ldap.search(suffix, Scope::Subtree, "(objectClass=*)", vec!["1.1"]).await.map_err(|e| failure(&e))?;
    let _ = ldap.unbind().await;
    let n = r.0.len();
    match (r.1.rc, n) {
        // 32 (no such object): the suffix is invisible to anonymous clients.
        (32, _) | (_, 0) => Ok(format!("anonymous search of {suffix}: nothing visible (result {})", r.1.rc)),
        _ => Err(Failure::mismatch(format!("an anonymous client sees {n} entries under {suffix}"))),
    }
}

/// The certificate slapd must present, read on the host; and the admin check on the host.
async fn on_host(
    host: &Host,
    state: &StateDir,
    cert: &str,
    admin_dn: &str,
    admin: Option<&str>,
) -> (Result<PinnedCert, String>, Result<String, Failure>, Duration) {
    let t = Instant::now();
    let session = match connect(host, state).await {
        Ok(s) => s,
        Err(e) => return (Err(e.clone()), Err(Failure::error(e)), t.elapsed()),
    };
    let pin = fetch(&session, &host.name, cert).await;
    let (admin, took) = timed(admin_on_host(&session, &host.name, admin_dn, admin)).await;
    session.close().await;
    (pin, admin, took)
}

/// Every LDAP check of the site (none when no host has the ldap role).
pub async fn verify(a: &Answers, secrets: &Secrets, state: &StateDir) -> Vec<Row> {
    let Some((_, host)) = a.hosts_with(Role::Ldap).next() else {
        return Vec::new();
    };
    let suffix = ldap_suffix(&a.site.internal_domain);
    let from_answers = a.ldap.as_ref().is_some_and(|l| l.tls.is_some());
    let cert = if from_answers { SITE_CERT } else { SELF_SIGNED_CERT };
    let admin = secrets.get("ldap", "admin");
    let reader = secrets.get("ldap", "service");
    let name = host.name.as_str();
    let (admin_dn, reader_dn) = (admin_dn(&suffix), reader_dn(&suffix));

    let (pin, admin_bind, admin_took) =
        tokio::time::timeout(CHECK_TIMEOUT, on_host(host, state, cert, &admin_dn, admin)).await.unwrap_or_else(|_| {
            let e = format!("ssh to {name}: no answer within {} s", CHECK_TIMEOUT.as_secs());
            (Err(e.clone()), Err(Failure::timeout(e)), CHECK_TIMEOUT)
        });
    let verifier = match pin {
        Ok(p) => Ok(PinnedVerifier::new(Some(p), from_answers)),
        // A certificate of the answers may still verify against the trust store.
        Err(_) if from_answers => Ok(PinnedVerifier::new(None, true)),
        Err(e) => {
            Err(format!("the certificate groundwork generated could not be read, so no server can be trusted ({e})"))
        }
    };
    let t = Target { host, verifier };

    let (starttls, ldaps, reader_bind, ous, anon) = tokio::join!(
        timed(within(starttls_handshake(&t, Transport::StartTls))),
        timed(within(starttls_handshake(&t, Transport::Ldaps))),
        timed(within(bind_as(&t, "service account", &reader_dn, reader))),
        timed(within(search_ous(&t, a, &suffix, reader))),
        timed(within(anonymous_refused(&t, &suffix))),
    );
    let mut rows = vec![
        Row::from_result(SERVICE, name, "StartTLS (389)", starttls.0, starttls.1),
        Row::from_result(SERVICE, name, "LDAPS (636)", ldaps.0, ldaps.1),
        Row::from_result(SERVICE, name, "bind as admin (on the host)", admin_bind, admin_took),
        Row::from_result(SERVICE, name, "bind as service account", reader_bind.0, reader_bind.1),
        Row::from_result(SERVICE, name, "search the OUs", ous.0, ous.1),
        Row::from_result(SERVICE, name, "anonymous read refused", anon.0, anon.1),
    ];
    // Plain ldap:// must answer too (applications that cannot do TLS); a bind there would send
    // the password in clear, so only the root DSE is read.
    let (plain, took) = timed(within(async {
        let mut ldap = t.connect(Transport::Plain).await?;
        let r =
            ldap.search("", Scope::Base, "(objectClass=*)", vec!["namingContexts"]).await.map_err(|e| failure(&e))?;
        let _ = ldap.unbind().await;
        let (entries, _) = r.success().map_err(|e| failure(&e))?;
        let contexts: Vec<String> = entries
            .into_iter()
            .map(SearchEntry::construct)
            .flat_map(|e| e.attrs.get("namingContexts").cloned().unwrap_or_default())
            .collect();
        if contexts.iter().any(|c| c.eq_ignore_ascii_case(&suffix)) {
            Ok(format!("ldap:// on 389 serves {suffix}"))
        } else {
            Err(Failure::mismatch(format!("naming contexts {contexts:?}, expected {suffix}")))
        }
    }))
    .await;
    rows.insert(0, Row::from_result(SERVICE, name, "suffix (root DSE)", plain, took));
    rows
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_suffix() {
        let s = ldap_suffix("id.example.org");
        assert_eq!(admin_dn(&s), "cn=admin,dc=id,dc=example,dc=org");
        assert_eq!(reader_dn(&s), "cn=groundwork-reader,ou=services,dc=id,dc=example,dc=org");
    }

    /// Without the certificate to pin, no TLS connection is even attempted.
    #[tokio::test]
    async fn without_a_pinned_certificate_tls_checks_are_untrusted() {
        let a = crate::answers::load_str(crate::LAB_EXAMPLE.0, crate::LAB_EXAMPLE.1).unwrap().answers;
        let (_, host) = a.hosts_with(Role::Ldap).next().unwrap();
        let t = Target { host, verifier: Err("the certificate groundwork generated could not be read".into()) };
        for transport in [Transport::StartTls, Transport::Ldaps] {
            let e = starttls_handshake(&t, transport).await.unwrap_err();
            assert_eq!(e.cause, Cause::Untrusted, "{e}");
            assert_eq!(
                e.message,
                format!("{}: not connecting: the certificate groundwork generated could not be read", t.url(transport))
            );
        }
    }

    #[test]
    fn a_result_code_from_the_server_is_a_refusal() {
        let insufficient = ldap3::LdapResult {
            rc: 50,
            matched: String::new(),
            text: "no read access".into(),
            refs: Vec::new(),
            ctrls: Vec::new(),
        };
        let e = insufficient.success().map_err(|e| failure(&e).prefixed("search dc=example")).unwrap_err();
        assert_eq!(e.cause, Cause::Refused, "{e}");
        assert!(e.message.starts_with("search dc=example: "), "{e}");
        let io = LdapError::from(std::io::Error::from(std::io::ErrorKind::ConnectionReset));
        assert_eq!(failure(&io).cause, Cause::Error);
    }
}
