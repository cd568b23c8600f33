//! The wizard's end: from a written answer file to a converged, verified site. This machine's
//! preflight verdict first (a FAIL is refused unless the operator overrides it, a WARN asks),
//! then `apply` as the command runs it (the dry run, a confirmation, progress per host and
//! role) and `verify`, ending with the verify table and what to do next. Declining leaves the
//! file and says the one command that applies it.

use std::io::Write as _;
use std::path::Path;
use std::time::Instant;

use super::{EngineArgs, Out, engine_cmd, engine_options, verify_cmd};
use crate::probe::preflight::{Level, Preflight};
use crate::ssh::shell_word;

/// `groundwork SUBCOMMAND FILE [--state DIR]`, quoted for a shell.
fn command(sub: &str, file: &Path, state: Option<&Path>) -> String {
    let state = state.map(|s| format!(" --state {}", shell_word(&s.to_string_lossy()))).unwrap_or_default();
    format!("groundwork {sub} {}{state}", shell_word(&file.to_string_lossy()))
}

/// The question after the preflight, and its default answer.
fn question(worst: Level) -> (&'static str, bool) {
    match worst {
        Level::Fail => ("This machine FAILS the preflight for its roles (above). Apply now anyway?", false),
        Level::Warn => ("The preflight warns (above). Apply now anyway? (a dry run first, then you confirm)", false),
        Level::Pass => ("Apply now? (a dry run first, then you confirm)", true),
    }
}

/// Shows the preflight, asks, and applies and verifies `file` when the operator says so.
pub(super) fn offer(out: &mut Out, file: &Path, state: Option<&Path>, preflight: &Preflight) -> i32 {
    let apply = command("apply", file, state);
    out.println(&format!("\n{}", console::style("This machine against its roles").bold()));
    out.print(&preflight.render());
    let _ = std::io::stdout().flush();
    let (prompt, default) = question(preflight.worst());
    match dialoguer::Confirm::new().with_prompt(prompt).default(default).interact() {
        Ok(true) => {}
        Ok(false) => {
            out.println(&format!("not applied; when you are ready: {apply}"));
            return 0;
        }
        Err(e) => {
            say!("error: {e}; not applied (to apply: {apply})");
            return 2;
        }
    }
    let started = Instant::now();
    let opts = engine_options(&EngineArgs::default(), false, false);
    let code = engine_cmd(out, Some(file), state, None, opts, false, None);
    if code != 0 {
        say!("not converged; after fixing what the run said: {apply}");
        return code;
    }
    out.println(&format!("\n{}", console::style("Verify: every service, as its clients see it").bold()));
    let _ = std::io::stdout().flush();
    let code = super::code(verify_cmd(out, Some(file), state, false));
    let took = humantime::format_duration(std::time::Duration::from_secs(started.elapsed().as_secs()));
    if code == 0 {
        out.println(&format!("\nconverged and verified in {took}"));
    } else {
        out.println(&format!("\nconverged, but verify found failures ({took}): {}", command("verify", file, state)));
    }
    out.println(&format!(
        "next:\n  add hosts:  a [[host]] in {0} per machine (address, ssh-user, ssh-key, roles), then {1}\n  check:      {2}\n  hand off:   {0} and the state directory (secrets.toml, 0600) are the site; keep both, and back them up",
        file.display(),
        apply,
        command("verify", file, state),
    ));
    code
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_are_quoted_and_a_fail_defaults_to_no() {
        assert_eq!(command("apply", Path::new("site.toml"), None), "groundwork apply site.toml");
        assert_eq!(
            command("verify", Path::new("my site.toml"), Some(Path::new("/s t"))),
            "groundwork verify 'my site.toml' --state '/s t'"
        );
        assert!(!question(Level::Fail).1 && !question(Level::Warn).1 && question(Level::Pass).1);
    }
}
