//! The steps of the host's roles in plan order, each role after the roles it needs (on any
//! host) have converged.

use std::sync::atomic::Ordering;

use futures::future::LocalBoxFuture;

use super::Phase;
use crate::engine::error::RunError;
use crate::engine::host::{Before, Host, Work};
use crate::engine::report::Status;

pub struct Converge;

impl<'a> Phase<Host<'a>> for Converge {
    fn title(&self) -> &'static str {
        "converge"
    }

    fn run<'h>(&'h self, h: &'h mut Host<'a>) -> LocalBoxFuture<'h, Result<(), RunError>> {
        Box::pin(async move {
            let Some(mut work) = h.work.take() else {
                return Err(RunError::Facts { host: h.name.clone(), cause: "no facts gathered".into() });
            };
            let result = roles(h, &mut work).await;
            h.work = Some(work);
            result
        })
    }
}

async fn roles<'a>(h: &Host<'a>, work: &mut Work<'a>) -> Result<(), RunError> {
    let interrupted = || RunError::Interrupted { host: h.name.clone() };
    for role in &h.roles {
        if !h.cx.dry_run {
            let waited = tokio::select! {
                w = h.cx.board.wait_for_needs(&role.name) => w,
                () = h.interrupted() => return Err(interrupted()),
            };
            if let Err(blocker) = waited {
                return Err(RunError::Blocked { host: h.name.clone(), role: role.name.clone(), blocker });
            }
        }
        for p in work.prepared.iter().filter(|p| p.role == role.name) {
            if h.cx.cancel.load(Ordering::SeqCst) {
                return Err(interrupted());
            }
            let resumed = h.done_before(p, work.resumable);
            let status = h.run_step(p, &work.facts, &work.ctx, work.before, work.resumable, &mut work.notified).await?;
            work.before = work.before.max(match status {
                Status::Changed => Before::Changed,
                Status::WouldChange => Before::Unsettled,
                Status::Skipped if resumed => Before::Unsettled,
                _ => Before::Nothing,
            });
        }
        h.cx.board.finished_on(&role.name, &h.name, true);
    }
    Ok(())
}
