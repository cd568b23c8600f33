//! Quoting at the sink, without a host: every shell string of every role (commands, guards,
//! wait checks, validators) is rendered with every answer value replaced by a hostile one, and
//! each place the value lands must be inside single quotes, where sh interprets nothing.

use std::path::Path;

use groundwork::answers;
use groundwork::engine::{context, facts::Facts};
use groundwork::playbook::catalog::Catalog;
use groundwork::state::Secrets;
use serde_json::Value;

/// What an attacker would put in an answer: quotes, a command substitution, backticks, a
/// separator, a newline and a brace.
const HOSTILE: &str = "x'\"$(touch /tmp/gw-pwned)`touch /tmp/gw-pwned`;\n}";

/// Replaces every string of the answers (not the secrets) by the hostile value.
fn poison(v: &mut Value, key: &str) {
    match v {
        Value::String(s) if key != "secrets" => *s = HOSTILE.to_string(),
        Value::Array(a) => a.iter_mut().for_each(|x| poison(x, key)),
        Value::Object(m) => {
            for (k, x) in m.iter_mut() {
                if k != "secrets" {
                    poison(x, k);
                }
            }
        }
        _ => {}
    }
}

/// The quoting state of sh at each byte of `cmd`: true where the byte is inside '...'.
fn single_quoted(cmd: &str) -> Vec<bool> {
    #[derive(PartialEq)]
    enum S {
        Plain,
        Single,
        Double,
    }
    let mut s = S::Plain;
    let mut escaped = false;
    let mut out = Vec::with_capacity(cmd.len());
    for b in cmd.bytes() {
        out.push(s == S::Single && b != b'\'');
        if escaped {
            escaped = false;
            continue;
        }
        match (&s, b) {
            (S::Plain, b'\\') | (S::Double, b'\\') => escaped = true,
            (S::Plain, b'\'') => s = S::Single,
            (S::Single, b'\'') => s = S::Plain,
            (S::Plain, b'"') => s = S::Double,
            (S::Double, b'"') => s = S::Plain,
            _ => {}
        }
    }
    out
}

/// Every place the hostile value's active parts land in `cmd` is single-quoted.
fn assert_inert(role: &str, step: &str, what: &str, cmd: &str) {
    let quoted = single_quoted(cmd);
    for needle in ["$(touch /tmp/gw-pwned)", "`touch /tmp/gw-pwned`", ";\n}"] {
        for (i, _) in cmd.match_indices(needle) {
            assert!(
                (i..i + needle.len()).all(|j| quoted[j]),
                "{role} / {step} ({what}): `{needle}` is not inside single quotes:\n{cmd}"
            );
        }
    }
}

#[test]
fn a_wait_for_a_port_or_socket_quotes_its_host_and_path() {
    use groundwork::playbook::step::{WaitFor, wait_check};
    let env = context::environment(&Catalog::load(None).unwrap());
    let ctx = minijinja::context! { h => HOSTILE };
    for w in [
        WaitFor { port: Some(389), host: Some("{{ h }}".into()), socket: None, command: None },
        WaitFor { port: None, host: None, socket: Some("/run/{{ h }}/sock".into()), command: None },
    ] {
        let cmd = env.render_str(&wait_check(&w).unwrap().0, &ctx).unwrap();
        assert_inert("wait", "port/socket", "check", &cmd);
        if w.socket.is_some() {
            // Run for real (the port form is not: it would look the hostile name up).
            let out = std::process::Command::new("sh").args(["-c", &cmd]).output().unwrap();
            assert!(!out.status.success() && !Path::new("/tmp/gw-pwned").exists(), "{cmd}");
        }
    }
}

#[test]
fn the_checker_tells_quoted_from_unquoted() {
    assert!(single_quoted("echo 'a$(b)'")[8]);
    assert!(!single_quoted("echo \"a$(b)\"")[8]);
    assert!(!single_quoted("echo 'a'$(b)")[8]);
    assert!(single_quoted(r"echo 'it'\''s $(x)'")[14]);
}

#[test]
fn answer_values_land_quoted_in_every_role_command() {
    let a = answers::load_file(Path::new("wizard/examples/lab.toml")).unwrap().answers;
    let mut secrets = Secrets::default();
    secrets.ensure_for(&a);
    let catalog = Catalog::load(None).unwrap();
    let env = context::environment(&catalog);
    let mut site = context::site_context(&a, &secrets);
    poison(&mut site, "");
    let ctx = context::host_context(&site, HOSTILE, &Facts::default());
    let mut checked = 0;
    for spec in &catalog.roles {
        let role = spec.name.as_str();
        for step in &spec.step_specs {
            let shell = [
                ("command", step.command.as_deref()),
                ("unless", step.unless.as_deref()),
                ("onlyif", step.onlyif.as_deref()),
                ("validate", step.validate.as_deref()),
            ];
            // A wait's check as the engine builds it (port and socket forms included).
            let wait = step.wait.as_ref().map(|w| groundwork::playbook::step::wait_check(w).unwrap().0);
            let shell = shell.into_iter().chain([("wait", wait.as_deref())]);
            for (what, text) in shell {
                let Some(text) = text else { continue };
                let cmd =
                    env.render_str(text, &ctx).unwrap_or_else(|e| panic!("{role} / {} ({what}): {e:#}", step.name));
                assert_inert(role, &step.name, what, &cmd);
                checked += 1;
            }
        }
    }
    assert!(checked >= 40, "only {checked} shell strings checked");
}
