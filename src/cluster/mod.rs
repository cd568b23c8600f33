//! The k3s cluster: the order nodes start and restart in, the gates between them, and how a
//! gate's answer is read. Pure decisions; the phase that runs them over SSH builds on these.

use crate::answers::model::{Answers, Host, Role};
use rollout::Kind;

pub mod reach;
pub mod ready;
pub mod rollout;
pub mod start;

/// The cluster's nodes in the answer file's order, each with what it runs (a host with both
/// roles is refused by validate; the server role wins here).
pub fn nodes(a: &Answers) -> Vec<(&Host, Kind)> {
    a.hosts
        .iter()
        .filter_map(|h| {
            if h.roles.contains(&Role::K3sServer) {
                Some((h, Kind::Server))
            } else if h.roles.contains(&Role::K3sAgent) {
                Some((h, Kind::Agent))
            } else {
                None
            }
        })
        .collect()
}
