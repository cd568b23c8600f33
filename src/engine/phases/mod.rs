//! The phases of `apply` and `plan --live` on each host, in parallel across hosts (the
//! manager is [`crate::phase`]): [`connect`], [`facts`], [`packages`], [`converge`],
//! [`disconnect`]. `plan --live` runs the same list as a dry run, where each phase says what it
//! would do instead of doing it. A phase may be something other than SSH steps: a later
//! provisioning phase (an HTTPS API) or a cluster hand-off has its place in the list. When a
//! phase fails, the phases that ran are cleaned up in reverse order (the session is closed).

pub mod connect;
pub mod converge;
pub mod disconnect;
pub mod facts;
pub mod packages;

use std::sync::atomic::Ordering;

use super::error::RunError;
use super::host::Host;
pub use crate::phase::Phase;
use crate::phase::Stage;

/// The phases of `apply` and `plan --live` on each host.
pub fn apply<'a>() -> Vec<Box<dyn Phase<Host<'a>>>> {
    vec![
        Box::new(connect::Connect),
        Box::new(facts::Facts),
        Box::new(packages::Packages),
        Box::new(converge::Converge),
        Box::new(disconnect::Disconnect),
    ]
}

impl Stage for Host<'_> {
    fn stopped(&self) -> Option<RunError> {
        self.cx.cancel.load(Ordering::SeqCst).then(|| RunError::Interrupted { host: self.name.clone() })
    }

    fn failed(&self, phase: &str, error: &RunError) {
        self.cx.reporter.log(&self.name, &format!("phase {phase} failed: {error}"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn apply_connects_gathers_installs_converges_and_disconnects_in_that_order() {
        let titles: Vec<&str> = apply().iter().map(|p| p.title()).collect();
        assert_eq!(titles, ["connect", "facts", "packages", "converge", "disconnect"]);
    }
}
