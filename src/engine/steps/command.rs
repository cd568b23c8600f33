//! Command steps: a command with guards (`creates`, `unless`, `onlyif`), whose exit statuses
//! are facts gathered with the others; the command runs only when the guards say so.

use super::{Action, Decision, Detail};
use crate::engine::facts::sh_quote;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Guard {
    /// Skip when this path exists.
    Creates,
    /// Skip when this check succeeds.
    Unless,
    /// Run only when this check succeeds.
    Onlyif,
}

/// A command step, rendered.
#[derive(Debug, Clone)]
pub struct Command {
    pub command: String,
    /// What the command changes or makes (the `creates` path, then `changes`): the ledger
    /// keeps them as they were before it runs, for `reset`.
    pub changes: Vec<String>,
    /// Each guard with the shell check behind it, in the order creates, unless, onlyif.
    pub guards: Vec<(Guard, String)>,
}

/// The shell checks behind a step's guards.
pub fn guards(creates: Option<&str>, unless: Option<String>, onlyif: Option<String>) -> Vec<(Guard, String)> {
    let creates = creates.map(|path| format!("test -e {}", sh_quote(path)));
    [(Guard::Creates, creates), (Guard::Unless, unless), (Guard::Onlyif, onlyif)]
        .into_iter()
        .filter_map(|(g, check)| check.map(|c| (g, c)))
        .collect()
}

/// Decide a command step from the exit status of each of its guards' checks (in the order of
/// [`Command::guards`]).
pub fn decide(c: &Command, codes: &[i32]) -> Decision {
    let skip = c.guards.iter().zip(codes).any(|((g, _), rc)| match g {
        Guard::Creates | Guard::Unless => *rc == 0,
        Guard::Onlyif => *rc != 0,
    });
    if skip {
        return Decision::converged();
    }
    Decision {
        actions: vec![Action::Run { command: c.command.clone(), changes: c.changes.clone() }],
        detail: Some(Detail::Text(format!("$ {}", c.command))),
        ..Decision::default()
    }
}
