//! The steps of the host's roles, each role after the roles it needs (on any host, this one
//! included) have converged. On a real run the host's roles go side by side, each as soon as
//! its needs allow (postgresql's slow first start overlaps mariadb's steps); a dry run goes
//! in plan order, so its report reads role by role.

use std::cell::{Cell, RefCell};
use std::collections::HashSet;
use std::sync::atomic::Ordering;

use futures::future::LocalBoxFuture;

use super::Phase;
use crate::engine::error::RunError;
use crate::engine::host::{Before, Host, Work};
use crate::engine::report::Status;
use crate::playbook::catalog::RoleSpec;

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

/// What the host's roles share while they converge.
struct Shared {
    /// What the run did to the host so far, by any role.
    before: Cell<Before>,
    notified: RefCell<HashSet<String>>,
    /// The host's first failure: the other roles stop at their next step.
    failed: RefCell<Option<RunError>>,
    /// Set with `failed`: wakes the roles still waiting for their needs.
    stop: tokio::sync::watch::Sender<bool>,
}

async fn roles<'a>(h: &Host<'a>, work: &mut Work<'a>) -> Result<(), RunError> {
    let shared = Shared {
        before: Cell::new(work.before),
        notified: RefCell::new(std::mem::take(&mut work.notified)),
        failed: RefCell::new(None),
        stop: tokio::sync::watch::Sender::new(false),
    };
    let w: &Work<'a> = work;
    if h.cx.dry_run {
        for role in &h.roles {
            one_role(h, w, role, &shared).await;
        }
    } else {
        futures::future::join_all(h.roles.iter().map(|role| one_role(h, w, role, &shared))).await;
    }
    work.before = shared.before.get();
    work.notified = shared.notified.into_inner();
    match shared.failed.into_inner() {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// One role, with its outcome on the board: a failure is posted at once, so that a role of
/// this host that needs it is told instead of waiting for the host to finish.
async fn one_role<'a>(h: &Host<'a>, w: &Work<'a>, role: &RoleSpec, shared: &Shared) {
    match role_steps(h, w, role, shared).await {
        Ok(true) => h.cx.board.finished_on(&role.name, &h.name, true),
        // Stopped by another role's failure: not converged (a role waiting for it is told).
        Ok(false) => h.cx.board.finished_on(&role.name, &h.name, false),
        Err(e) => {
            h.cx.board.finished_on(&role.name, &h.name, false);
            shared.failed.borrow_mut().get_or_insert(e);
            shared.stop.send_replace(true);
        }
    }
}

/// Resolves once a role of the host has failed.
async fn another_failed(shared: &Shared) {
    // The sender lives as long as the roles that wait here: wait_for ends by seeing true.
    let _ = shared.stop.subscribe().wait_for(|stop| *stop).await;
}

/// The role's steps in order once its needs have converged; `Ok(false)` when it stopped
/// because another role of the host failed.
async fn role_steps<'a>(h: &Host<'a>, w: &Work<'a>, role: &RoleSpec, shared: &Shared) -> Result<bool, RunError> {
    let interrupted = || RunError::Interrupted { host: h.name.clone() };
    let stopped = || shared.failed.borrow().is_some();
    if stopped() {
        return Ok(false);
    }
    if !h.cx.dry_run {
        let waited = tokio::select! {
            w = h.cx.board.wait_for_needs(&role.name) => w,
            () = h.interrupted() => return Err(interrupted()),
            () = another_failed(shared) => return Ok(false),
        };
        if let Err(blocker) = waited {
            return Err(RunError::Blocked { host: h.name.clone(), role: role.name.clone(), blocker });
        }
    }
    for p in w.prepared.iter().filter(|p| p.role == role.name) {
        if h.cx.cancel.load(Ordering::SeqCst) {
            return Err(interrupted());
        }
        if stopped() {
            return Ok(false);
        }
        let resumed = h.done_before(p, w.resumable);
        let status = h.run_step(p, &w.facts, &w.ctx, shared.before.get(), w.resumable, &shared.notified).await?;
        shared.before.set(shared.before.get().max(match status {
            Status::Changed => Before::Changed,
            Status::WouldChange => Before::Unsettled,
            Status::Skipped if resumed => Before::Unsettled,
            _ => Before::Nothing,
        }));
    }
    Ok(true)
}
