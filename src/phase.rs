//! A command is a list of phases (k0sctl's `phase.Manager` is the model): `apply` and
//! `plan --live` run [`crate::engine::phases::apply`] on every host, `verify` runs
//! [`crate::verify::phases`] over the site. A phase says whether it has work, does it (in a
//! dry run: says what it would do), and cleans up after a failure; the manager runs the list
//! in order and, when one fails, cleans up the ones that ran, in reverse.

use futures::future::LocalBoxFuture;

use crate::engine::error::RunError;

/// One unit of work on a stage `S` (a host of a run, the site being verified).
pub trait Phase<S> {
    /// For people and logs ("connect", "packages").
    fn title(&self) -> &'static str;
    /// Whether the phase has anything to do; a phase without work is passed.
    fn has_work(&self, _stage: &S) -> bool {
        true
    }
    /// Do the work.
    fn run<'h>(&'h self, stage: &'h mut S) -> LocalBoxFuture<'h, Result<(), RunError>>;
    /// Undo what must not outlive a failed run (it runs for the phases that ran, in reverse).
    fn clean_up<'h>(&'h self, _stage: &'h mut S) -> LocalBoxFuture<'h, ()> {
        Box::pin(async {})
    }
}

/// What the manager asks of the stage between phases.
pub trait Stage {
    /// Stop before the next phase (Ctrl-C), with the error that says so.
    fn stopped(&self) -> Option<RunError> {
        None
    }
    /// A phase failed: say so where the stage keeps its record.
    fn failed(&self, _phase: &str, _error: &RunError) {}
}

/// Run `phases` on `stage`, in order; on a failure, clean up the phases that ran.
pub async fn run<S: Stage>(phases: &[Box<dyn Phase<S> + '_>], stage: &mut S) -> Result<(), RunError> {
    let mut ran: Vec<&dyn Phase<S>> = Vec::new();
    let mut failure = None;
    for phase in phases {
        if let Some(e) = stage.stopped() {
            failure = Some(e);
            break;
        }
        if !phase.has_work(stage) {
            continue;
        }
        ran.push(phase.as_ref());
        if let Err(e) = phase.run(stage).await {
            stage.failed(phase.title(), &e);
            failure = Some(e);
            break;
        }
    }
    let Some(e) = failure else { return Ok(()) };
    for phase in ran.into_iter().rev() {
        phase.clean_up(stage).await;
    }
    Err(e)
}

#[cfg(test)]
mod tests {
    use std::cell::RefCell;

    use super::*;

    /// A stage that records what the manager did.
    #[derive(Default)]
    struct Log(RefCell<Vec<String>>);

    impl Stage for Log {}

    /// A phase that records what the manager asked of it.
    struct Probe {
        name: &'static str,
        work: bool,
        fails: bool,
    }

    impl Phase<Log> for Probe {
        fn title(&self) -> &'static str {
            self.name
        }
        fn has_work(&self, _: &Log) -> bool {
            self.work
        }
        fn run<'h>(&'h self, log: &'h mut Log) -> LocalBoxFuture<'h, Result<(), RunError>> {
            log.0.borrow_mut().push(format!("run {}", self.name));
            Box::pin(async move {
                if self.fails {
                    Err(RunError::Facts { host: "h1".into(), cause: format!("{} broke", self.name) })
                } else {
                    Ok(())
                }
            })
        }
        fn clean_up<'h>(&'h self, log: &'h mut Log) -> LocalBoxFuture<'h, ()> {
            log.0.borrow_mut().push(format!("clean {}", self.name));
            Box::pin(async {})
        }
    }

    fn phases(spec: &[(&'static str, bool, bool)]) -> Vec<Box<dyn Phase<Log>>> {
        spec.iter().map(|&(name, work, fails)| Box::new(Probe { name, work, fails }) as Box<dyn Phase<Log>>).collect()
    }

    fn run_on(list: &[Box<dyn Phase<Log>>]) -> (Result<(), RunError>, Vec<String>) {
        let mut log = Log::default();
        let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
        let r = rt.block_on(run(list, &mut log));
        (r, log.0.into_inner())
    }

    #[test]
    fn a_failed_phase_stops_the_list_and_the_phases_that_ran_are_cleaned_up_in_reverse() {
        let list = phases(&[
            ("a", true, false),
            ("idle", false, false),
            ("b", true, false),
            ("c", true, true),
            ("d", true, false),
        ]);
        let (r, log) = run_on(&list);
        assert_eq!(r.unwrap_err().to_string(), "c broke");
        assert_eq!(log, ["run a", "run b", "run c", "clean c", "clean b", "clean a"]);
    }

    #[test]
    fn a_run_that_succeeds_cleans_nothing_up() {
        let (r, log) = run_on(&phases(&[("a", true, false), ("b", true, false)]));
        assert!(r.is_ok());
        assert_eq!(log, ["run a", "run b"]);
    }
}
