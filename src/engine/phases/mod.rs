//! A run is a list of phases (k0sctl's `phase.Manager` is the model). Per host, in parallel:
//! [`connect`], [`facts`], [`packages`], [`converge`], [`disconnect`]; `apply` and
//! `plan --live` run the same list, the latter as a dry run, where each phase says what it
//! would do instead of doing it. A phase may be something other than SSH steps: a later
//! provisioning phase (an HTTPS API) or a cluster hand-off has its place in the list.
//!
//! When a phase fails, the phases that ran are cleaned up in reverse order (the session is
//! closed), and the host's error names the phase.

pub mod connect;
pub mod converge;
pub mod disconnect;
pub mod facts;
pub mod packages;

use std::sync::atomic::Ordering;

use futures::future::LocalBoxFuture;

use super::error::RunError;
use super::host::Host;

/// One unit of work on one host.
pub trait Phase {
    /// For people and logs ("connect", "packages").
    fn title(&self) -> &'static str;
    /// Whether the phase has anything to do on this host; a phase without work is passed.
    fn has_work(&self, _host: &Host<'_>) -> bool {
        true
    }
    /// Do the work (in a dry run: say what would be done, change nothing).
    fn run<'h>(&'h self, host: &'h mut Host<'_>) -> LocalBoxFuture<'h, Result<(), RunError>>;
    /// Undo what must not outlive a failed run (it runs for the phases that ran, in reverse).
    fn clean_up<'h>(&'h self, _host: &'h mut Host<'_>) -> LocalBoxFuture<'h, ()> {
        Box::pin(async {})
    }
}

/// The phases of `apply` and `plan --live` on each host.
pub fn apply() -> Vec<Box<dyn Phase>> {
    vec![
        Box::new(connect::Connect),
        Box::new(facts::Facts),
        Box::new(packages::Packages),
        Box::new(converge::Converge),
        Box::new(disconnect::Disconnect),
    ]
}

/// Run `phases` on `host`, in order; on a failure, clean up the phases that ran.
pub async fn run(phases: &[Box<dyn Phase + '_>], host: &mut Host<'_>) -> Result<(), RunError> {
    let mut ran: Vec<&dyn Phase> = Vec::new();
    let mut failure = None;
    for phase in phases {
        if host.cx.cancel.load(Ordering::SeqCst) {
            failure = Some(RunError::Interrupted { host: host.name.clone() });
            break;
        }
        if !phase.has_work(host) {
            continue;
        }
        ran.push(phase.as_ref());
        if let Err(e) = phase.run(host).await {
            host.cx.reporter.log(&host.name, &format!("phase {} failed: {e}", phase.title()));
            failure = Some(e);
            break;
        }
    }
    let Some(e) = failure else { return Ok(()) };
    for phase in ran.into_iter().rev() {
        phase.clean_up(host).await;
    }
    Err(e)
}

#[cfg(test)]
mod tests {
    use std::cell::RefCell;
    use std::sync::atomic::AtomicBool;

    use super::*;
    use crate::engine::board::Board;
    use crate::engine::context::Redactor;
    use crate::engine::host::RunContext;
    use crate::engine::report::Reporter;
    use crate::plan::Plan;
    use crate::playbook::catalog::Catalog;
    use crate::ssh::{SshOptions, Target};
    use crate::state::Secrets;

    /// A phase that records what the manager asked of it.
    struct Probe<'l> {
        name: &'static str,
        work: bool,
        fails: bool,
        log: &'l RefCell<Vec<String>>,
    }

    impl Phase for Probe<'_> {
        fn title(&self) -> &'static str {
            self.name
        }
        fn has_work(&self, _: &Host<'_>) -> bool {
            self.work
        }
        fn run<'h>(&'h self, h: &'h mut Host<'_>) -> LocalBoxFuture<'h, Result<(), RunError>> {
            self.log.borrow_mut().push(format!("run {}", self.name));
            let host = h.name.clone();
            Box::pin(async move {
                if self.fails { Err(RunError::Facts { host, cause: format!("{} broke", self.name) }) } else { Ok(()) }
            })
        }
        fn clean_up<'h>(&'h self, _: &'h mut Host<'_>) -> LocalBoxFuture<'h, ()> {
            self.log.borrow_mut().push(format!("clean {}", self.name));
            Box::pin(async {})
        }
    }

    fn with_host(f: impl FnOnce(&mut Host<'_>)) {
        let dir = tempfile::tempdir().unwrap();
        let reporter = Reporter::new(&dir.path().join("log"), false, Redactor::new(&Secrets::default())).unwrap();
        let plan = Plan { site: "t".into(), internal_domain: "t.test".into(), steps: vec![], hosts: vec![] };
        let board = Board::new(&plan, &Catalog::load(None).unwrap());
        let cancel = AtomicBool::new(false);
        let env = minijinja::Environment::new();
        let site = serde_json::json!({});
        let ssh = SshOptions::default();
        let cx = RunContext {
            run: "r".into(),
            reporter: &reporter,
            journal: None,
            resume: None,
            board: &board,
            cancel: &cancel,
            dry_run: true,
            env: &env,
            site_ctx: &site,
            ssh: &ssh,
            uploads: &Default::default(),
        };
        let target = Target {
            name: "h1".into(),
            address: "127.0.0.1".into(),
            port: 22,
            user: "root".into(),
            key_path: "/nonexistent".into(),
        };
        let mut host = Host::new(target, vec![], &cx);
        f(&mut host);
    }

    fn phases<'l>(log: &'l RefCell<Vec<String>>, spec: &[(&'static str, bool, bool)]) -> Vec<Box<dyn Phase + 'l>> {
        spec.iter()
            .map(|&(name, work, fails)| Box::new(Probe { name, work, fails, log }) as Box<dyn Phase + 'l>)
            .collect()
    }

    #[test]
    fn a_failed_phase_stops_the_list_and_the_phases_that_ran_are_cleaned_up_in_reverse() {
        let log = RefCell::new(Vec::new());
        let list = phases(
            &log,
            &[("a", true, false), ("idle", false, false), ("b", true, false), ("c", true, true), ("d", true, false)],
        );
        with_host(|h| {
            let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
            let err = rt.block_on(run(&list, h)).unwrap_err();
            assert_eq!(err.to_string(), "c broke");
        });
        assert_eq!(*log.borrow(), ["run a", "run b", "run c", "clean c", "clean b", "clean a"]);
    }

    #[test]
    fn a_run_that_succeeds_cleans_nothing_up() {
        let log = RefCell::new(Vec::new());
        let list = phases(&log, &[("a", true, false), ("b", true, false)]);
        with_host(|h| {
            let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
            rt.block_on(run(&list, h)).unwrap();
        });
        assert_eq!(*log.borrow(), ["run a", "run b"]);
    }

    #[test]
    fn apply_connects_gathers_installs_converges_and_disconnects_in_that_order() {
        let titles: Vec<&str> = apply().iter().map(|p| p.title()).collect();
        assert_eq!(titles, ["connect", "facts", "packages", "converge", "disconnect"]);
    }
}
