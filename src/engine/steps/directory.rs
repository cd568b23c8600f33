//! Directory steps: the directory exists with its mode and owner (`install -d` does both).

use super::{Action, Decision, Detail};
use crate::engine::facts::{PathFact, sh_quote};

/// A directory step, rendered.
#[derive(Debug, Clone)]
pub struct Directory {
    pub path: String,
    pub mode: u32,
    /// `user:group`.
    pub owner: String,
}

/// Decide a directory step from the state of its path. Something else in the way is left to
/// `install -d`, which fails and says so.
pub fn decide(d: &Directory, current: &PathFact) -> Decision {
    let needed = match current {
        PathFact::Dir { mode, owner } => *mode != d.mode || *owner != d.owner,
        _ => true,
    };
    if !needed {
        return Decision::converged();
    }
    Decision {
        actions: vec![Action::MakeDir { path: d.path.clone(), mode: d.mode, owner: d.owner.clone() }],
        detail: Some(Detail::Text(format!("{} (mode {:o}, {})", d.path, d.mode, d.owner))),
        ..Decision::default()
    }
}

/// Create the directory (and its parents), or fix its mode and owner: what people are shown.
pub fn install_command(path: &str, mode: u32, owner: &str) -> String {
    let (user, group) = owner.split_once(':').unwrap_or((owner, owner));
    format!("install -d -m {mode:o} -o {} -g {} {}", sh_quote(user), sh_quote(group), sh_quote(path))
}

/// [`install_command`], after the ledger's record of the directory as it was.
pub fn install_script(path: &str, mode: u32, owner: &str) -> String {
    format!("{}{}", crate::engine::ledger::record_directory(path), install_command(path, mode, owner))
}
