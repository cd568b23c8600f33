//! The order in which k3s nodes start, or restart after a change, and what must hold before
//! the next one goes: pure decisions, tested without a cluster.
//!
//! Servers go strictly one at a time. After each server (re)starts, the API must answer
//! `/readyz` on it and every server started so far must be an etcd voter (`EtcdIsVoter`):
//! a joining server is a learner until it is promoted, and starting the next one before that
//! is how a three-server control plane loses quorum (k3s-ansible #485, which restarts every
//! node at once). Agents come after the servers, all at once, each until its node is Ready.
//! A re-run restarts only the nodes whose config, binary or unit changed, with the same gates,
//! and checks before each running server's restart that every other server is a ready voter:
//! restarting a server while another is down would leave an HA cluster without quorum, so
//! that restart is never made. Servers that are down start first (a start takes nothing down).

use std::collections::BTreeSet;

/// What a node runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Server,
    Agent,
}

/// A node of the cluster, in the answer file's order (the first server initialises it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    pub name: String,
    pub kind: Kind,
}

/// A condition checked from a server (with the kubectl built into k3s, over SSH) before the
/// rollout goes on. `on` is the server the check runs on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Gate {
    /// `k3s kubectl get --raw=/readyz` answers `ok` on this server.
    ApiReady { on: String },
    /// Every one of `servers` is an etcd voter (condition `EtcdIsVoter=True` on its node).
    Voters { on: String, servers: Vec<String> },
    /// The node's condition `Ready` is `True`.
    NodeReady { on: String, node: String },
}

/// Nodes (re)started together, the gates that must hold before (`before`) and after (`after`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Stage {
    pub nodes: Vec<String>,
    pub before: Vec<Gate>,
    pub after: Vec<Gate>,
}

/// Why a rollout cannot be planned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RolloutError {
    NoServer,
    /// Embedded etcd keeps quorum with a majority: 1, 3, 5... servers.
    EvenServers(usize),
}

impl std::fmt::Display for RolloutError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RolloutError::NoServer => write!(f, "a k3s cluster needs at least one k3s-server host"),
            RolloutError::EvenServers(n) => write!(
                f,
                "{n} k3s servers: embedded etcd needs an odd number (1, 3, 5...) to keep a majority when one is down"
            ),
        }
    }
}

fn split(nodes: &[Node]) -> Result<(Vec<&str>, Vec<&str>), RolloutError> {
    let servers: Vec<&str> = nodes.iter().filter(|n| n.kind == Kind::Server).map(|n| n.name.as_str()).collect();
    let agents: Vec<&str> = nodes.iter().filter(|n| n.kind == Kind::Agent).map(|n| n.name.as_str()).collect();
    if servers.is_empty() {
        return Err(RolloutError::NoServer);
    }
    if servers.len().is_multiple_of(2) {
        return Err(RolloutError::EvenServers(servers.len()));
    }
    Ok((servers, agents))
}

fn names(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

/// The gates after a server started: its API answers, every server up to it is a voter, and
/// its node is Ready.
fn server_up(server: &str, started: &[&str]) -> Vec<Gate> {
    vec![
        Gate::ApiReady { on: server.to_string() },
        Gate::Voters { on: server.to_string(), servers: names(started) },
        Gate::NodeReady { on: server.to_string(), node: server.to_string() },
    ]
}

fn agents_stage(first: &str, agents: &[&str], before: Vec<Gate>) -> Option<Stage> {
    (!agents.is_empty()).then(|| Stage {
        nodes: names(agents),
        before,
        after: agents.iter().map(|a| Gate::NodeReady { on: first.to_string(), node: a.to_string() }).collect(),
    })
}

/// The first start of a cluster: the first server alone, then each other server alone, then
/// every agent at once.
pub fn first_start(nodes: &[Node]) -> Result<Vec<Stage>, RolloutError> {
    let (servers, agents) = split(nodes)?;
    let mut stages = Vec::new();
    for (i, s) in servers.iter().enumerate() {
        stages.push(Stage { nodes: vec![s.to_string()], before: Vec::new(), after: server_up(s, &servers[..=i]) });
    }
    stages.extend(agents_stage(servers[0], &agents, Vec::new()));
    Ok(stages)
}

/// The (re)starts a re-run makes for the nodes in `changed` (their config, binary or unit
/// changed, or k3s does not run there): servers that are down start first, one at a time (a
/// start takes nothing down; with a majority down it is how quorum comes back); then each
/// running server that changed restarts alone, after every other server is checked to be a
/// ready voter; then the changed agents at once. Nothing changed: no stage.
pub fn restarts(
    nodes: &[Node],
    changed: &BTreeSet<String>,
    running: &BTreeSet<String>,
) -> Result<Vec<Stage>, RolloutError> {
    let (servers, agents) = split(nodes)?;
    let mut stages = Vec::new();
    for s in servers.iter().filter(|s| changed.contains(**s) && !running.contains(**s)) {
        stages.push(Stage { nodes: vec![s.to_string()], before: Vec::new(), after: server_up(s, &[s]) });
    }
    for s in servers.iter().filter(|s| changed.contains(**s) && running.contains(**s)) {
        // Checked on another server where there is one: this one is about to go down.
        let on = servers.iter().find(|o| *o != s).unwrap_or(s);
        let others: Vec<&str> = servers.iter().copied().filter(|o| o != s).collect();
        let mut before = vec![Gate::ApiReady { on: on.to_string() }];
        if !others.is_empty() {
            before.push(Gate::Voters { on: on.to_string(), servers: names(&others) });
        }
        stages.push(Stage { nodes: vec![s.to_string()], before, after: server_up(s, &servers) });
    }
    let changed_agents: Vec<&str> = agents.iter().copied().filter(|a| changed.contains(*a)).collect();
    let before = vec![Gate::ApiReady { on: servers[0].to_string() }];
    stages.extend(agents_stage(servers[0], &changed_agents, before));
    Ok(stages)
}

/// The servers a stage (re)starts: the rollout never takes two down at once.
pub fn servers_in(stage: &Stage, nodes: &[Node]) -> usize {
    stage.nodes.iter().filter(|n| nodes.iter().any(|x| &x.name == *n && x.kind == Kind::Server)).count()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn site(servers: usize, agents: usize) -> Vec<Node> {
        let s = (1..=servers).map(|i| Node { name: format!("s{i}"), kind: Kind::Server });
        let a = (1..=agents).map(|i| Node { name: format!("a{i}"), kind: Kind::Agent });
        s.chain(a).collect()
    }

    fn set(names: &[&str]) -> BTreeSet<String> {
        names.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn a_single_server_starts_then_its_agents_together() {
        let stages = first_start(&site(1, 2)).unwrap();
        assert_eq!(stages.len(), 2);
        assert_eq!(stages[0].nodes, ["s1"]);
        assert_eq!(
            stages[0].after,
            [
                Gate::ApiReady { on: "s1".into() },
                Gate::Voters { on: "s1".into(), servers: vec!["s1".into()] },
                Gate::NodeReady { on: "s1".into(), node: "s1".into() },
            ]
        );
        assert_eq!(stages[1].nodes, ["a1", "a2"]);
        assert_eq!(
            stages[1].after,
            [
                Gate::NodeReady { on: "s1".into(), node: "a1".into() },
                Gate::NodeReady { on: "s1".into(), node: "a2".into() }
            ]
        );
    }

    #[test]
    fn servers_join_one_at_a_time_each_waiting_for_every_voter_so_far() {
        for n in [3, 5] {
            let nodes = site(n, 2);
            let stages = first_start(&nodes).unwrap();
            assert_eq!(stages.len(), n + 1, "{stages:?}");
            for (i, st) in stages[..n].iter().enumerate() {
                let me = format!("s{}", i + 1);
                assert_eq!(st.nodes, std::slice::from_ref(&me));
                let want: Vec<String> = (1..=i + 1).map(|k| format!("s{k}")).collect();
                assert!(st.after.contains(&Gate::Voters { on: me.clone(), servers: want }), "{st:?}");
                assert!(st.after.contains(&Gate::ApiReady { on: me }), "{st:?}");
            }
            assert!(stages.iter().all(|s| servers_in(s, &nodes) <= 1));
            assert_eq!(stages[n].nodes, ["a1", "a2"]);
        }
    }

    #[test]
    fn an_even_number_of_servers_or_none_is_refused() {
        assert_eq!(first_start(&site(2, 1)), Err(RolloutError::EvenServers(2)));
        assert_eq!(restarts(&site(4, 0), &set(&["s1"]), &set(&["s1"])), Err(RolloutError::EvenServers(4)));
        assert_eq!(first_start(&site(0, 3)), Err(RolloutError::NoServer));
        assert!(RolloutError::EvenServers(2).to_string().contains("odd number"));
    }

    #[test]
    fn a_rerun_restarts_only_what_changed_and_never_two_servers_at_once() {
        let nodes = site(3, 2);
        let up = set(&["s1", "s2", "s3", "a1", "a2"]);
        assert!(restarts(&nodes, &BTreeSet::new(), &up).unwrap().is_empty());
        let stages = restarts(&nodes, &set(&["s2"]), &up).unwrap();
        assert_eq!(stages.len(), 1);
        // Checked on s1 (s2 is about to go down): s1 and s3 answer and vote first.
        assert_eq!(
            stages[0].before,
            [
                Gate::ApiReady { on: "s1".into() },
                Gate::Voters { on: "s1".into(), servers: vec!["s1".into(), "s3".into()] }
            ]
        );
        assert!(
            stages[0]
                .after
                .contains(&Gate::Voters { on: "s2".into(), servers: vec!["s1".into(), "s2".into(), "s3".into()] })
        );

        // Every node changed (a new k3s binary): three server stages, one agent stage.
        let all = set(&["s1", "s2", "s3", "a1", "a2"]);
        let stages = restarts(&nodes, &all, &up).unwrap();
        let order: Vec<Vec<String>> = stages.iter().map(|s| s.nodes.clone()).collect();
        assert_eq!(order, [vec!["s1"], vec!["s2"], vec!["s3"], vec!["a1", "a2"]]);
        assert!(stages.iter().all(|s| servers_in(s, &nodes) <= 1));
        // s1's restart is checked from s2.
        assert_eq!(stages[0].before[0], Gate::ApiReady { on: "s2".into() });

        // Only an agent changed: no server is touched.
        let stages = restarts(&nodes, &set(&["a2"]), &up).unwrap();
        assert_eq!(stages.len(), 1);
        assert_eq!(stages[0].nodes, ["a2"]);
        assert_eq!(stages[0].before, [Gate::ApiReady { on: "s1".into() }]);
    }

    #[test]
    fn a_single_server_restart_checks_itself() {
        let stages = restarts(&site(1, 0), &set(&["s1"]), &set(&["s1"])).unwrap();
        assert_eq!(stages[0].before, [Gate::ApiReady { on: "s1".into() }]);
    }

    #[test]
    fn servers_that_are_down_start_first_without_waiting_for_the_others() {
        // s2 and s3 stopped (quorum lost), s1 runs with a new config: s2 and s3 start first,
        // each alone and each checked up; only then is s1 restarted, behind both as voters.
        let nodes = site(3, 0);
        let stages = restarts(&nodes, &set(&["s1", "s2", "s3"]), &set(&["s1"])).unwrap();
        let order: Vec<Vec<String>> = stages.iter().map(|s| s.nodes.clone()).collect();
        assert_eq!(order, [vec!["s2"], vec!["s3"], vec!["s1"]]);
        assert!(stages[0].before.is_empty() && stages[1].before.is_empty());
        assert!(stages[0].after.contains(&Gate::ApiReady { on: "s2".into() }));
        assert_eq!(stages[2].before[1], Gate::Voters { on: "s2".into(), servers: vec!["s2".into(), "s3".into()] });
    }
}
