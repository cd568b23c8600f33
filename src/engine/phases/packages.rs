//! One apt transaction for every package of the host's roles; a dry run says what it would
//! install.

use std::time::Instant;

use futures::future::LocalBoxFuture;

use super::Phase;
use crate::engine::error::RunError;
use crate::engine::host::{Before, Host};
use crate::engine::packages;
use crate::engine::report::Status;

pub struct Packages;

impl<'a> Phase<Host<'a>> for Packages {
    fn title(&self) -> &'static str {
        "packages"
    }

    fn run<'h>(&'h self, h: &'h mut Host<'a>) -> LocalBoxFuture<'h, Result<(), RunError>> {
        Box::pin(async move {
            let host = h.name.clone();
            install(h)
                .await
                .map_err(|cause| RunError::in_phase(host, cause, |host, cause| RunError::Packages { host, cause }))
        })
    }
}

/// The packages phase: one apt transaction for every role of this host.
async fn install(h: &mut Host<'_>) -> Result<(), String> {
    let Some(work) = h.work.as_ref() else { return Err("no facts".into()) };
    let t = Instant::now();
    let missing: Vec<String> =
        work.packages.iter().filter(|p| work.facts.packages.get(*p) != Some(&true)).cloned().collect();
    if missing.is_empty() {
        h.finish_step("packages", "install", Status::Ok, t.elapsed(), None);
        return Ok(());
    }
    let list = missing.join(" ");
    let source = match h.cx.package_repo {
        Some(r) => format!(" from the package bundle {} only", r.dir),
        None => String::new(),
    };
    if h.cx.dry_run {
        if let Some(w) = h.work.as_mut() {
            w.before = w.before.max(Before::Unsettled);
        }
        h.finish_step(
            "packages",
            "install",
            Status::WouldChange,
            t.elapsed(),
            Some(&format!("apt-get install {list}{source}")),
        );
        return Ok(());
    }
    h.cx.reporter.step_started(&h.name, "packages", "install");
    if let Some(repo) = h.cx.package_repo {
        // The bundle's repository on the host first: only files it does not have yet.
        h.cx.reporter.progress(&h.name, "packages", "upload the package bundle");
        let up = Instant::now();
        let uploaded = h.sync_files(&repo.destinations()).await.map_err(|e| {
            let e = format!("upload of the package bundle to {}: {e}", packages::REPO);
            h.finish_step("packages", "install", Status::Failed, t.elapsed(), Some(&e));
            e
        });
        let (sent, bytes) = uploaded?;
        h.cx.reporter.note(
            &h.name,
            &format!(
                "package bundle: {sent} of {} files uploaded to {} ({}) in {:.2} s",
                repo.files.len(),
                packages::REPO,
                crate::engine::steps::file::size(bytes),
                up.elapsed().as_secs_f64()
            ),
        );
    }
    let mut held: Vec<String> = Vec::new();
    for unit in h.roles.iter().flat_map(|r| &r.start_after_config) {
        if !held.contains(unit) {
            held.push(unit.clone());
        }
    }
    let script = packages::script(&missing, &work.preseed, h.cx.package_repo.is_some(), &held);
    match h.packages(&script).await {
        Ok(()) => {
            if let Some(w) = h.work.as_mut() {
                w.before = Before::Changed;
            }
            h.finish_step(
                "packages",
                "install",
                Status::Changed,
                t.elapsed(),
                Some(&format!("installed {list}{source}")),
            );
            Ok(())
        }
        Err(e) => {
            h.finish_step("packages", "install", Status::Failed, t.elapsed(), Some(&e));
            Err(e)
        }
    }
}
