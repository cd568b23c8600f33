//! Reading a gate's answer: the commands run on a server over SSH with the kubectl built into
//! k3s (nothing on this machine needs a route to port 6443), and what their output means.
//! Pure: the outputs are strings, tested with recorded ones.

use serde_json::Value;

use super::rollout::Gate;
use crate::engine::facts::sh_quote;

/// The command that answers a gate, run on the gate's server.
pub fn command(gate: &Gate) -> String {
    match gate {
        Gate::ApiReady { .. } => "k3s kubectl get --raw='/readyz?verbose'".into(),
        Gate::Voters { .. } => "k3s kubectl get nodes -o json".into(),
        Gate::NodeReady { node, .. } => format!("k3s kubectl get node {} -o json", sh_quote(node)),
    }
}

/// Whether the gate holds, from its command's output; `Err` says what is missing.
pub fn judge(gate: &Gate, output: &str) -> Result<(), String> {
    match gate {
        Gate::ApiReady { on } => readyz(output).map_err(|e| format!("the API on {on}: {e}")),
        Gate::Voters { servers, .. } => {
            let nodes = nodes(output)?;
            let missing: Vec<String> = servers
                .iter()
                .filter_map(|s| match nodes.iter().find(|n| &n.name == s) {
                    None => Some(format!("{s} (not a node yet)")),
                    Some(n) if n.etcd_voter != Some(true) => Some(format!("{s} (learner or not in etcd)")),
                    Some(_) => None,
                })
                .collect();
            if missing.is_empty() { Ok(()) } else { Err(format!("not etcd voters: {}", missing.join(", "))) }
        }
        Gate::NodeReady { node, .. } => {
            let n = node_state(&serde_json::from_str(output).map_err(|e| format!("node {node}: not JSON ({e})"))?)?;
            if n.ready {
                Ok(())
            } else {
                Err(format!("node {node} is not Ready{}", n.why.map(|w| format!(": {w}")).unwrap_or_default()))
            }
        }
    }
}

/// `/readyz?verbose`: `[+]name ok` and `[-]name failed: ...` lines, then `readyz check passed`
/// (or `failed`); plain `/readyz` says `ok`. A failing check answers 500, which kubectl prints
/// as one error line with the body's newlines escaped.
pub fn readyz(output: &str) -> Result<(), String> {
    let output = output.replace("\\n", "\n").replace("\") has prevented", "\n\") has prevented");
    let failed: Vec<&str> = output
        .lines()
        .filter_map(|l| l.trim().strip_prefix("[-]"))
        .map(|l| l.split_whitespace().next().unwrap_or(l))
        .collect();
    if !failed.is_empty() {
        return Err(format!("not ready: {}", failed.join(", ")));
    }
    let last = output.lines().map(str::trim).rfind(|l| !l.is_empty()).unwrap_or("");
    if last == "ok" || last.ends_with("check passed") {
        Ok(())
    } else {
        Err(format!("not ready: {}", if last.is_empty() { "no answer" } else { last }))
    }
}

/// What a node object says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeState {
    pub name: String,
    pub ready: bool,
    /// The condition k3s sets on servers with embedded etcd; `None` on agents.
    pub etcd_voter: Option<bool>,
    /// `node-role.kubernetes.io/<role>` labels.
    pub roles: Vec<String>,
    /// The Ready condition's message when the node is not Ready.
    pub why: Option<String>,
}

fn node_state(v: &Value) -> Result<NodeState, String> {
    let name = v["metadata"]["name"].as_str().ok_or("a node without metadata.name")?.to_string();
    let condition =
        |kind: &str| v["status"]["conditions"].as_array().and_then(|cs| cs.iter().find(|c| c["type"] == kind)).cloned();
    let ready = condition("Ready");
    let roles = v["metadata"]["labels"]
        .as_object()
        .map(|l| l.keys().filter_map(|k| k.strip_prefix("node-role.kubernetes.io/")).map(str::to_string).collect())
        .unwrap_or_default();
    Ok(NodeState {
        ready: ready.as_ref().is_some_and(|c| c["status"] == "True"),
        why: ready.as_ref().filter(|c| c["status"] != "True").and_then(|c| c["message"].as_str().map(str::to_string)),
        etcd_voter: condition("EtcdIsVoter").map(|c| c["status"] == "True"),
        roles,
        name,
    })
}

/// `kubectl get nodes -o json`: a `List` of nodes.
pub fn nodes(output: &str) -> Result<Vec<NodeState>, String> {
    let v: Value = serde_json::from_str(output).map_err(|e| format!("nodes: not JSON ({e})"))?;
    v["items"].as_array().ok_or("nodes: no items")?.iter().map(node_state).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const READYZ_OK: &str = include_str!("../../tests/fixtures/k3s/readyz-verbose-ok.txt");
    const READYZ_ETCD: &str = include_str!("../../tests/fixtures/k3s/readyz-verbose-etcd-failed.txt");
    const READYZ_ERROR: &str = include_str!("../../tests/fixtures/k3s/readyz-kubectl-error.txt");
    const NODES_LEARNER: &str = include_str!("../../tests/fixtures/k3s/nodes-s3-learner.json");
    const NODE_NOT_READY: &str = include_str!("../../tests/fixtures/k3s/node-a1-not-ready.json");

    fn voters(servers: &[&str]) -> Gate {
        Gate::Voters { on: "s1".into(), servers: servers.iter().map(|s| s.to_string()).collect() }
    }

    #[test]
    fn readyz_passes_on_ok_and_names_the_failed_checks() {
        assert_eq!(readyz("ok"), Ok(()));
        assert_eq!(readyz(READYZ_OK), Ok(()));
        assert_eq!(readyz(READYZ_ETCD), Err("not ready: etcd, etcd-readiness".into()));
        assert_eq!(readyz(""), Err("not ready: no answer".into()));
        assert_eq!(readyz(READYZ_ERROR), Err("not ready: etcd".into()));
        let gate = Gate::ApiReady { on: "s2".into() };
        assert_eq!(judge(&gate, READYZ_ETCD), Err("the API on s2: not ready: etcd, etcd-readiness".into()));
    }

    #[test]
    fn a_learner_is_not_a_voter_and_an_agent_has_no_etcd_condition() {
        let all = nodes(NODES_LEARNER).unwrap();
        let by = |n: &str| all.iter().find(|x| x.name == n).unwrap().clone();
        assert_eq!(by("s1").etcd_voter, Some(true));
        assert_eq!(by("s3").etcd_voter, Some(false));
        assert_eq!(by("a1").etcd_voter, None);
        assert!(by("s1").roles.contains(&"etcd".to_string()) && by("s1").roles.contains(&"control-plane".to_string()));
        assert_eq!(judge(&voters(&["s1", "s2"]), NODES_LEARNER), Ok(()));
        assert_eq!(
            judge(&voters(&["s1", "s2", "s3", "s4"]), NODES_LEARNER),
            Err("not etcd voters: s3 (learner or not in etcd), s4 (not a node yet)".into())
        );
    }

    #[test]
    fn node_ready_reads_the_ready_condition_and_says_why_not() {
        let gate = Gate::NodeReady { on: "s1".into(), node: "a1".into() };
        assert_eq!(
            judge(&gate, NODE_NOT_READY),
            Err("node a1 is not Ready: container runtime network not ready: NetworkReady=false reason:NetworkPluginNotReady message:Network plugin returns error: cni plugin not initialized".into())
        );
        let ready = NODE_NOT_READY.replace(
            "\"status\": \"False\",\n        \"type\": \"Ready\"",
            "\"status\": \"True\",\n        \"type\": \"Ready\"",
        );
        assert_ne!(ready, NODE_NOT_READY, "the fixture's Ready condition");
        assert_eq!(judge(&gate, &ready), Ok(()));
        assert!(judge(&gate, "error: nodes \"a1\" not found").unwrap_err().contains("not JSON"));
    }

    #[test]
    fn gate_commands_quote_the_node_name() {
        assert_eq!(
            command(&Gate::NodeReady { on: "s1".into(), node: "a'1".into() }),
            r"k3s kubectl get node 'a'\''1' -o json"
        );
        assert_eq!(command(&Gate::ApiReady { on: "s1".into() }), "k3s kubectl get --raw='/readyz?verbose'");
    }
}
