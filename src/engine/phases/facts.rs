//! Render the steps of the host's roles, gather what they need to know in one round trip, and
//! learn which machine this is.

use std::collections::HashSet;
use std::time::Instant;

use futures::future::LocalBoxFuture;

use super::Phase;
use crate::engine::error::RunError;
use crate::engine::facts::Probe;
use crate::engine::host::{Before, Host, Prepared, Work};
use crate::engine::journal::Entry;

pub struct Facts;

impl<'a> Phase<Host<'a>> for Facts {
    fn title(&self) -> &'static str {
        "facts"
    }

    fn run<'h>(&'h self, h: &'h mut Host<'a>) -> LocalBoxFuture<'h, Result<(), RunError>> {
        Box::pin(async move {
            let host = h.name.clone();
            gather(h)
                .await
                .map_err(|cause| RunError::in_phase(host, cause, |host, cause| RunError::Facts { host, cause }))
        })
    }
}

/// The facts phase: render the steps of the host's roles, gather what they need to know in
/// one round trip, and learn which machine this is (a resume applies only to the same one).
async fn gather<'a>(h: &mut Host<'a>) -> Result<(), String> {
    let mut probe = Probe::default();
    let mut prepared: Vec<Prepared<'a>> = Vec::new();
    let packages = crate::engine::packages::of_roles(&h.roles);
    let mut preseed: Vec<String> = Vec::new();
    let mut built_for: Vec<(&'a str, String)> = Vec::new();
    let roles = h.roles.clone();
    for role in roles {
        if let Some(arch) = &role.arch {
            let arch = h.render(arch)?;
            if !arch.is_empty() {
                built_for.push((&role.name, arch));
            }
        }
        for line in &role.preseed {
            preseed.push(h.render(line)?);
        }
        for (step, name, rendered) in h.role_steps(role)? {
            prepared.push(Prepared {
                role: &role.name,
                name,
                when: step.when.as_deref(),
                at: rendered.ask(&mut probe),
                step: rendered,
            });
        }
    }
    probe.packages = packages.clone();
    probe.arch = !built_for.is_empty();
    h.cx.reporter.set_length(&h.name, prepared.len() + 1);

    let t = Instant::now();
    let facts = h.gather(&probe).await?;
    h.cx.reporter.log(
        &h.name,
        &format!(
            "facts in {} ms: {} ({}), {} packages, {} files, {} checks, {} services, {} zones",
            t.elapsed().as_millis(),
            facts.os_pretty,
            facts.virtualization,
            probe.packages.len(),
            probe.files.len(),
            probe.checks.len(),
            probe.services.len(),
            probe.zones.len()
        ),
    );
    if facts.os_id != "debian" && facts.os_id != "ubuntu" {
        return Err(format!("{} is not a Debian-family system; groundwork's playbooks use apt", facts.os_pretty));
    }
    if let Some(e) = wrong_arch(&built_for, &facts.arch) {
        return Err(e);
    }
    let ctx = crate::engine::context::host_context(h.cx.site_ctx, &h.name, &facts);
    // Which machine this name reached: resume skips and restarts only for the same one.
    let identity = format!("{} {}", h.session()?.host_key_fingerprint(), facts.machine_id);
    if let Some(j) = h.cx.journal {
        j.write(&Entry::Host { run: h.cx.run.clone(), host: h.name.clone(), identity: identity.clone() });
    }
    let resumable = h.cx.resume.is_some_and(|r| r.done_for(&h.name, &identity));
    if let Some(r) = h.cx.resume.filter(|r| r.same_inputs && !resumable && r.identities.contains_key(&h.name)) {
        h.cx.reporter.note(
            &h.name,
            &format!(
                "is not the machine run {} reached (new host key or machine-id): every step is checked again",
                r.run
            ),
        );
    }
    let notified: HashSet<String> = h.cx.resume.map(|r| r.pending_for(&h.name, &identity)).unwrap_or_default();
    if !notified.is_empty() {
        let mut list: Vec<&String> = notified.iter().collect();
        list.sort();
        h.cx.reporter.note(
            &h.name,
            &format!(
                "an earlier run changed files that {} watch(es) and stopped before restarting; restarting now",
                list.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", ")
            ),
        );
    }
    h.work = Some(Work { prepared, packages, preseed, facts, ctx, before: Before::Nothing, resumable, notified });
    Ok(())
}

/// Why this host cannot take what its roles upload: their binaries are built for another
/// architecture (checked before any upload, which would only fail at the program's start).
fn wrong_arch(built_for: &[(&str, String)], host: &str) -> Option<String> {
    let (role, arch) = built_for.iter().find(|(_, a)| a != host)?;
    let host = if host.is_empty() { "unknown (dpkg --print-architecture printed nothing)" } else { host };
    Some(format!(
        "role {role} uploads binaries built for {arch}, and this host is {host}; \
         for k3s, make the air-gap bundle for it (`groundwork bundle --arch {host}`)"
    ))
}

#[cfg(test)]
mod tests {
    use super::wrong_arch;

    #[test]
    fn a_host_of_another_architecture_is_named_with_the_role_and_the_fix() {
        let k3s = [("k3s-server", "amd64".to_string())];
        assert_eq!(wrong_arch(&k3s, "amd64"), None);
        assert_eq!(wrong_arch(&[], "arm64"), None);
        let e = wrong_arch(&k3s, "arm64").unwrap();
        assert!(
            e.contains("role k3s-server") && e.contains("built for amd64") && e.contains("this host is arm64"),
            "{e}"
        );
        assert!(e.contains("--arch arm64"), "{e}");
        assert!(wrong_arch(&k3s, "").unwrap().contains("unknown"));
    }
}
