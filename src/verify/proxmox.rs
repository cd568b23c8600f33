//! The `proxmox` rows of `verify`: for each provisioned host, its guest and the template it
//! was built from, found with the provisioning phase's own lookup
//! ([`crate::proxmox::provision::compare`]). An API that cannot be reached, or a `[proxmox]`
//! whose token cannot be read, makes the rows `skip` (said in their detail).

use std::time::Instant;

use super::{Failure, Row};
use crate::answers::model::Answers;
use crate::proxmox::provision as pv;
use crate::proxmox::{Client, Error};

const SERVICE: &str = "proxmox";
const CHECK: &str = "guest template";

/// One row per provisioned host (none without provisioned hosts).
pub async fn rows(a: &Answers) -> Vec<Row> {
    let hosts: Vec<&crate::answers::model::Host> = a.hosts.iter().filter(|h| h.provision.is_some()).collect();
    let Some(p) = a.proxmox.as_ref().filter(|_| !hosts.is_empty()) else { return Vec::new() };
    let started = Instant::now();
    let every = |f: &dyn Fn(&str) -> Row| hosts.iter().map(|h| f(&h.name)).collect::<Vec<Row>>();
    let client = match Client::new(p) {
        Ok(c) => c,
        Err(e) => {
            let why = format!("[proxmox] has no token to use ({e}): the guests were not checked");
            return every(&|h| Row::skipped(SERVICE, h, CHECK, why.clone(), started.elapsed()));
        }
    };
    let all = match pv::guests(&client).await {
        Ok(all) => all,
        Err(e @ Error::Connect(_)) => {
            let why = format!("the Proxmox API is unreachable ({e}): the guests were not checked");
            return every(&|h| Row::skipped(SERVICE, h, CHECK, why.clone(), started.elapsed()));
        }
        Err(e) => {
            let failure = match &e {
                Error::Certificate { .. } => Failure::untrusted(e.to_string()),
                Error::Unauthorized { .. } | Error::Forbidden { .. } => Failure::refused(e.to_string()),
                _ => Failure::error(e.to_string()),
            };
            return every(&|h| Row::failed(SERVICE, h, CHECK, failure.clone(), started.elapsed()));
        }
    };
    let vm_template = pv::vm_template(p, &all);
    let mut out = Vec::new();
    for h in hosts {
        let t = Instant::now();
        let kind = h.provision.expect("filtered").kind;
        let identity = pv::template_identity(p, kind, vm_template);
        let current = pv::template_tag(&identity);
        let row = |r: Result<String, Failure>| Row::from_result(SERVICE, &h.name, CHECK, r, t.elapsed());
        out.push(match pv::compare(a, h, &all, &client, vm_template).await {
            Err(e) => row(Err(Failure::mismatch(e))),
            Ok(plan) if plan.guest.is_none() => row(Err(Failure::mismatch(format!(
                "no guest named `{}` with the `{}` tag on Proxmox VE: `groundwork apply` creates it",
                h.name,
                pv::TAG
            )))),
            Ok(plan) => match (plan.outdated, plan.built_from) {
                (Some(old), _) => row(Err(Failure::mismatch(format!(
                    "built from an older template ({old}), the answers name {identity} ({current}); `groundwork rebuild {}` recreates it",
                    h.name
                )))),
                (None, Some(_)) => row(Ok(format!("built from {identity} ({current})"))),
                (None, None) => Row::skipped(
                    SERVICE,
                    &h.name,
                    CHECK,
                    "the guest has no `tpl-` tag: which template it was built from is not recorded",
                    t.elapsed(),
                ),
            },
        });
    }
    out
}
