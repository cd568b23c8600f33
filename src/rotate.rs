//! `groundwork rotate [NAME...]`: a new value for generated secrets, rolled out by the same
//! engine as `apply` and proven by the same client checks as `verify`.
//!
//! A rotation is a list of [`Step`]s decided from the secrets file alone ([`steps`], pure), so
//! a rotation cut short resumes where it stopped: the old value waits in `[previous]` until a
//! client has used the new one, and only then goes. The TSIG key changes in three applies
//! (BIND learns the new key beside the old, the clients move to it, BIND drops the spare), so
//! BIND never refuses what kea-dhcp-ddns signs. The k3s token changes with k3s's own
//! `k3s token rotate` on the first server, then the apply's rolling restart.

use crate::answers::model::{Answers, Role};
use crate::state::secrets::{self, PREVIOUS, Secrets, TSIG, TSIG_NEXT};

/// What a secret is, which decides how it is rolled out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A database user's or an LDAP account's password: one apply sets it.
    Password,
    /// The site's TSIG key (BIND and Kea).
    Tsig,
    /// The k3s cluster token.
    K3sToken,
}

/// A secret `rotate` can renew.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rotatable {
    pub table: String,
    pub key: String,
    pub kind: Kind,
    /// The `verify` services whose checks must pass with the new value.
    pub services: &'static [&'static str],
}

impl Rotatable {
    /// How it is named on the command line and in `[previous]`: `postgresql.keycloak`.
    pub fn name(&self) -> String {
        format!("{}.{}", self.table, self.key)
    }

    fn new_value(&self) -> String {
        match self.kind {
            Kind::Password => secrets::password(24),
            Kind::Tsig => secrets::random_base64(32),
            Kind::K3sToken => secrets::password(48),
        }
    }
}

/// Every secret of the site that can be rotated, in the order `rotate` without names takes
/// them (the cluster last: its restart is the longest).
pub fn rotatable(a: &Answers) -> Vec<Rotatable> {
    let mut out = Vec::new();
    let password = |table: &str, key: &str, services| Rotatable {
        table: table.into(),
        key: key.into(),
        kind: Kind::Password,
        services,
    };
    for d in &a.databases.postgresql {
        out.push(password("postgresql", &d.user, &["postgresql"]));
    }
    for d in &a.databases.mariadb {
        out.push(password("mariadb", &d.user, &["mariadb"]));
    }
    if a.has_role(Role::Ldap) {
        out.push(password("ldap", "admin", &["ldap"]));
        out.push(password("ldap", "service", &["ldap"]));
    }
    if a.has_role(Role::Dns) {
        out.push(Rotatable { table: TSIG.0.into(), key: TSIG.1.into(), kind: Kind::Tsig, services: &["dns", "dhcp"] });
    }
    if a.k3s.is_some() && a.has_role(Role::K3sServer) {
        out.push(Rotatable { table: "k3s".into(), key: "token".into(), kind: Kind::K3sToken, services: &["k3s"] });
    }
    // The same user in two databases is one secret.
    out.dedup();
    out
}

/// The secrets `names` pick (none: all): a full name (`postgresql.keycloak`), a table
/// (`postgresql`, `ldap`), `tsig` or `k3s`. An unknown name is refused with what there is.
pub fn select(all: &[Rotatable], names: &[String]) -> Result<Vec<Rotatable>, String> {
    if names.is_empty() {
        return Ok(all.to_vec());
    }
    let mut out: Vec<Rotatable> = Vec::new();
    for n in names {
        let hits: Vec<&Rotatable> = all.iter().filter(|r| r.name() == *n || r.table == *n).collect();
        if hits.is_empty() {
            let known: Vec<String> = all.iter().map(Rotatable::name).collect();
            return Err(format!(
                "`{n}` is not a secret of this site that can be rotated; there are: {}",
                if known.is_empty() { "none".to_string() } else { known.join(", ") }
            ));
        }
        for r in hits {
            if !out.contains(r) {
                out.push(r.clone());
            }
        }
    }
    Ok(out)
}

/// One move of a rotation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// A new value, with the old one kept in `[previous]` (for the TSIG key: the new one as
    /// `ddns-key-next`, beside the old).
    Begin,
    /// On the first k3s server: `k3s token rotate` from the previous to the new token.
    K3sRotate,
    /// `apply` with the secrets file as it is now.
    Apply,
    /// The clients' checks (`verify`) of the secret's services, with the secrets as they are now.
    Verify,
    /// TSIG: `ddns-key` takes the next key's value (every server knows both names by now).
    Promote,
    /// TSIG: the spare name `ddns-key-next` goes.
    DropNext,
    /// The old value leaves `[previous]`: the rotation is done.
    Forget,
}

/// The steps left for `r`, from the secrets file alone: a rotation cut short goes on from
/// where the file says it is (a new value is made only when no rotation of it is under way).
pub fn steps(r: &Rotatable, s: &Secrets) -> Vec<Step> {
    use Step::*;
    let under_way = s.get(PREVIOUS, &r.name()).is_some();
    let mut out = if under_way { Vec::new() } else { vec![Begin] };
    match r.kind {
        Kind::Password => out.extend([Apply, Verify, Forget]),
        Kind::K3sToken => out.extend([K3sRotate, Apply, Verify, Forget]),
        Kind::Tsig => {
            let next = s.get(TSIG_NEXT.0, TSIG_NEXT.1);
            let main = s.get(TSIG.0, TSIG.1);
            if !under_way || (next.is_some() && next != main) {
                // BIND learns the new key beside the old; Kea and the secondaries sign with it.
                out.extend([Apply, Verify, Promote]);
            }
            if !under_way || next.is_some() {
                // BIND's ddns-key takes the new value while the clients still sign with the
                // spare name; they move back to ddns-key; then the spare goes.
                out.extend([Apply, DropNext]);
            }
            out.extend([Apply, Verify, Forget]);
        }
    }
    out
}

/// Makes the change a step makes to the secrets file (in memory; the caller saves it).
/// `Begin` returns the new value's name; the value itself is never returned.
pub fn edit(r: &Rotatable, step: &Step, s: &mut Secrets) {
    match step {
        Step::Begin => {
            let old = s.get(&r.table, &r.key).unwrap_or_default().to_string();
            s.insert(PREVIOUS, &r.name(), &old);
            let new = r.new_value();
            match r.kind {
                Kind::Tsig => s.insert(TSIG_NEXT.0, TSIG_NEXT.1, &new),
                _ => s.insert(&r.table, &r.key, &new),
            }
        }
        Step::Promote => {
            if let Some(next) = s.get(TSIG_NEXT.0, TSIG_NEXT.1).map(str::to_string) {
                s.insert(TSIG.0, TSIG.1, &next);
            }
        }
        Step::DropNext => {
            s.remove(TSIG_NEXT.0, TSIG_NEXT.1);
        }
        Step::Forget => {
            s.remove(PREVIOUS, &r.name());
        }
        Step::K3sRotate | Step::Apply | Step::Verify => {}
    }
}

/// The shell that rotates the token on the first k3s server: old and new token on standard
/// input (never on a command line), k3s's own `token rotate`; nothing when the server's token
/// is the new one already (a rotation cut short after this step).
pub fn k3s_rotate_command() -> String {
    format!(
        "read -r old; read -r new; case \"$(cat {token} 2>/dev/null)\" in *\"::server:$new\") echo 'the server token is the new one already'; exit 0;; esac; K3S_TOKEN=\"$old\" K3S_NEW_TOKEN=\"$new\" /usr/local/bin/k3s token rotate 2>&1",
        token = crate::cluster::start::SERVER_TOKEN
    )
}

/// What one secret's rotation came to (names and checks only, never a value).
#[derive(Debug, Clone, serde::Serialize)]
pub struct Outcome {
    pub secret: String,
    pub ok: bool,
    /// The steps taken, in order (`begin`, `apply`, `verify`, ...).
    pub steps: Vec<String>,
    /// The client checks that passed with the new value: `service / host / check`.
    pub verified: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

fn step_name(s: &Step) -> &'static str {
    match s {
        Step::Begin => "new value (the old one kept in [previous])",
        Step::K3sRotate => "k3s token rotate on the first server",
        Step::Apply => "apply",
        Step::Verify => "verify with a client",
        Step::Promote => "ddns-key takes the new value",
        Step::DropNext => "ddns-key-next goes",
        Step::Forget => "old value forgotten",
    }
}

/// Rotates `chosen` one after the other; stops at the first that fails (its old value stays
/// in `[previous]`, and the next `rotate` of it resumes). `progress(secret, message)` hears
/// each step. The caller holds the state directory's lock.
pub async fn run(
    a: &Answers,
    catalog: &crate::playbook::catalog::Catalog,
    state: &crate::state::StateDir,
    opts: &crate::engine::Options,
    chosen: &[Rotatable],
    progress: &(dyn Fn(&str, &str) + Sync),
) -> Vec<Outcome> {
    let path = state.secrets_path();
    let mut out = Vec::new();
    for r in chosen {
        let name = r.name();
        let mut done =
            Outcome { secret: name.clone(), ok: false, steps: Vec::new(), verified: Vec::new(), error: None };
        let plan = match Secrets::load(&path) {
            Ok(s) if s.get(&r.table, &r.key).is_none() => {
                done.error = Some(format!("{} has no {name} yet: run `groundwork apply` first", path.display()));
                out.push(done);
                break;
            }
            Ok(s) => steps(r, &s),
            Err(e) => {
                done.error = Some(e.to_string());
                out.push(done);
                break;
            }
        };
        if plan.first() != Some(&Step::Begin) {
            progress(&name, "a rotation of it was cut short: it goes on with the value it started");
        }
        for step in plan {
            progress(&name, step_name(&step));
            let result = one_step(a, catalog, state, opts, r, &step, &mut done.verified).await;
            done.steps.push(step_name(&step).to_string());
            if let Err(e) = result {
                done.error = Some(format!("{}: {e}", step_name(&step)));
                break;
            }
        }
        done.ok = done.error.is_none();
        let stop = !done.ok;
        out.push(done);
        if stop {
            break;
        }
    }
    out
}

async fn one_step(
    a: &Answers,
    catalog: &crate::playbook::catalog::Catalog,
    state: &crate::state::StateDir,
    opts: &crate::engine::Options,
    r: &Rotatable,
    step: &Step,
    verified: &mut Vec<String>,
) -> Result<(), String> {
    let path = state.secrets_path();
    let mut s = Secrets::load(&path).map_err(|e| e.to_string())?;
    match step {
        Step::Apply => {
            let o = crate::engine::run(a, catalog, state, opts).await?;
            if o.ok { Ok(()) } else { Err(format!("the run failed (log: {})", o.log.display())) }
        }
        Step::Verify => {
            let rows = crate::verify::verify_only(a, &s, state, Some(r.services)).await;
            let mine: Vec<&crate::verify::Row> =
                rows.iter().filter(|w| r.services.contains(&w.service.as_str())).collect();
            let redactor = crate::engine::context::Redactor::new(&s);
            let failed: Vec<String> = mine
                .iter()
                .filter(|w| !w.ok())
                .map(|w| redactor.redact(&format!("{} / {} / {}: {}", w.service, w.host, w.check, w.detail)))
                .collect();
            if !failed.is_empty() {
                return Err(format!("a client check failed: {}", failed.join("; ")));
            }
            let passed: Vec<String> = mine
                .iter()
                .filter(|w| w.result == crate::verify::Outcome::Ok)
                .map(|w| format!("{} / {} / {}", w.service, w.host, w.check))
                .collect();
            if passed.is_empty() {
                return Err(format!("no client check of {} ran (every one skipped)", r.services.join(", ")));
            }
            *verified = passed;
            Ok(())
        }
        Step::K3sRotate => k3s_rotate(a, state, r, &s).await,
        _ => {
            edit(r, step, &mut s);
            s.save(&path).map_err(|e| e.to_string())
        }
    }
}

/// `k3s token rotate` on the first k3s server, from the previous token to the new one.
async fn k3s_rotate(a: &Answers, state: &crate::state::StateDir, r: &Rotatable, s: &Secrets) -> Result<(), String> {
    let (_, first) = a.hosts_with(Role::K3sServer).next().ok_or("the answers have no k3s server")?;
    let old = s.get(PREVIOUS, &r.name()).ok_or("no previous token in the secrets file")?;
    let new = s.get(&r.table, &r.key).ok_or("no token in the secrets file")?;
    let opts = crate::ssh::SshOptions { known_hosts: state.known_hosts_path(), ..crate::ssh::SshOptions::default() };
    let session =
        crate::ssh::Session::connect(&crate::engine::target_of(first), &opts).await.map_err(|e| format!("ssh: {e}"))?;
    let input = format!("{old}\n{new}\n");
    let result = session.exec(&k3s_rotate_command(), Some(input.as_bytes())).await;
    session.close().await;
    let o = result.map_err(|e| format!("{}: {e}", first.name))?;
    if o.ok() {
        return Ok(());
    }
    let redactor = crate::engine::context::Redactor::new(s);
    Err(format!("{}: k3s token rotate failed: {}", first.name, redactor.redact(o.stdout_str().trim())))
}

#[cfg(test)]
mod tests {
    use super::*;
    use Step::*;

    fn site() -> Answers {
        crate::plan::load_str("lab.toml", crate::LAB_EXAMPLE.1, crate::playbook::catalog::Catalog::embedded())
            .unwrap()
            .answers
    }

    fn tsig() -> Rotatable {
        rotatable(&site()).into_iter().find(|r| r.kind == Kind::Tsig).unwrap()
    }

    #[test]
    fn the_lab_example_rotates_its_database_users_ldap_accounts_and_tsig_key() {
        let names: Vec<String> = rotatable(&site()).iter().map(Rotatable::name).collect();
        assert_eq!(
            names,
            [
                "postgresql.keycloak",
                "postgresql.openproject",
                "mariadb.nextcloud",
                "ldap.admin",
                "ldap.service",
                "tsig.ddns-key"
            ]
        );
        let all = rotatable(&site());
        let picked: Vec<String> =
            select(&all, &["ldap".into(), "tsig".into()]).unwrap().iter().map(Rotatable::name).collect();
        assert_eq!(picked, ["ldap.admin", "ldap.service", "tsig.ddns-key"]);
        let err = select(&all, &["k3s".into()]).unwrap_err();
        assert!(err.contains("`k3s` is not a secret") && err.contains("mariadb.nextcloud"), "{err}");
    }

    /// Walks a rotation to its end, saving after each edit as `rotate` does, and returns what
    /// the clients sign with at each apply.
    fn walk(r: &Rotatable, s: &mut Secrets) -> Vec<(Step, Option<String>)> {
        let mut seen = Vec::new();
        for step in steps(r, s) {
            edit(r, &step, s);
            seen.push((step, s.tsig_client().map(|(n, _)| n.to_string())));
        }
        seen
    }

    #[test]
    fn a_password_is_applied_verified_then_the_old_one_forgotten() {
        let r = rotatable(&site()).remove(0);
        let mut s = Secrets::default();
        s.insert("postgresql", "keycloak", "old-value");
        assert_eq!(steps(&r, &s), [Begin, Apply, Verify, Forget]);
        edit(&r, &Begin, &mut s);
        assert_eq!(s.get(PREVIOUS, "postgresql.keycloak"), Some("old-value"));
        let new = s.get("postgresql", "keycloak").unwrap().to_string();
        assert_ne!(new, "old-value");
        // Cut short here: the next rotate applies the same new value, it does not make another.
        assert_eq!(steps(&r, &s), [Apply, Verify, Forget]);
        edit(&r, &Forget, &mut s);
        assert_eq!(s.get(PREVIOUS, "postgresql.keycloak"), None);
        assert_eq!(s.get("postgresql", "keycloak"), Some(new.as_str()));
        assert!(!format!("{s:?}").contains(&new));
    }

    #[test]
    fn the_tsig_clients_move_to_the_new_key_only_while_both_servers_know_it() {
        let r = tsig();
        let mut s = Secrets::default();
        s.insert("tsig", "ddns-key", "OLD=");
        let seen = walk(&r, &mut s);
        let client = |n: &str| Some(n.to_string());
        assert_eq!(
            seen,
            [
                (Begin, client("ddns-key-next")),
                // BIND: ddns-key OLD + ddns-key-next NEW; clients sign with next.
                (Apply, client("ddns-key-next")),
                (Verify, client("ddns-key-next")),
                (Promote, client("ddns-key")),
                // BIND: ddns-key NEW + ddns-key-next NEW: both accepted while Kea moves back.
                (Apply, client("ddns-key")),
                (DropNext, client("ddns-key")),
                (Apply, client("ddns-key")),
                (Verify, client("ddns-key")),
                (Forget, client("ddns-key")),
            ]
        );
        let new = s.get("tsig", "ddns-key").unwrap();
        assert_ne!(new, "OLD=");
        assert_eq!(s.get("tsig", "ddns-key-next"), None);
        assert_eq!(s.get(PREVIOUS, "tsig.ddns-key"), None);
    }

    #[test]
    fn a_tsig_rotation_cut_short_resumes_at_its_stage() {
        let r = tsig();
        let mut s = Secrets::default();
        s.insert("tsig", "ddns-key", "OLD=");
        edit(&r, &Begin, &mut s);
        // Cut after Begin (or during the first apply): the first apply again.
        assert_eq!(steps(&r, &s), [Apply, Verify, Promote, Apply, DropNext, Apply, Verify, Forget]);
        edit(&r, &Promote, &mut s);
        // Cut after Promote: BIND may not have the new ddns-key yet; clients stay on next.
        assert_eq!(steps(&r, &s), [Apply, DropNext, Apply, Verify, Forget]);
        edit(&r, &DropNext, &mut s);
        assert_eq!(steps(&r, &s), [Apply, Verify, Forget]);
        assert_eq!(s.get(PREVIOUS, "tsig.ddns-key"), Some("OLD="));
    }

    #[test]
    fn the_k3s_token_is_rotated_by_k3s_then_rolled_out_and_never_on_a_command_line() {
        let mut a = site();
        let k3s = crate::plan::load_file(
            std::path::Path::new("wizard/examples/proxmox-k3s.toml"),
            crate::playbook::catalog::Catalog::embedded(),
        );
        if let Ok(l) = k3s {
            a = l.answers;
        }
        let r = rotatable(&a).into_iter().find(|r| r.kind == Kind::K3sToken).expect("a k3s site");
        let mut s = Secrets::default();
        s.insert("k3s", "token", "old-token");
        assert_eq!(steps(&r, &s), [Begin, K3sRotate, Apply, Verify, Forget]);
        edit(&r, &Begin, &mut s);
        assert_eq!(s.get(PREVIOUS, "k3s.token"), Some("old-token"));
        assert_eq!(s.get("k3s", "token").unwrap().len(), 48);
        let cmd = k3s_rotate_command();
        assert!(cmd.starts_with("read -r old; read -r new;") && cmd.contains("k3s token rotate"), "{cmd}");
        assert!(!cmd.contains("old-token") && !cmd.contains("--token"), "{cmd}");
    }
}
