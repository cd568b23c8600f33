//! The cluster as its users see it, asked on a server over SSH with the kubectl built into k3s
//! (nothing here needs a route to port 6443): the API answers `/readyz`, every node of the
//! answers is a node and Ready, every server is an etcd voter (HA), CoreDNS is available.
//! Reading the answers is pure ([`judge`]), tested with recorded kubectl output.

use std::collections::BTreeMap;
use std::time::Instant;

use serde_json::Value;

use super::{Failure, Row, connect};
use crate::answers::model::{Answers, K3sComponent, K3sMode, Role};
use crate::cluster::ready::{nodes, readyz};
use crate::state::StateDir;

const SERVICE: &str = "k3s";

/// What the server said, one string per question (`None`: it could not be asked).
#[derive(Debug, Clone, Default)]
pub struct Said {
    pub readyz: String,
    pub nodes: String,
    pub coredns: Option<String>,
}

/// The rows from what a server said: `(host, check, result)`.
pub fn judge(a: &Answers, said: &Said) -> Vec<(String, String, Result<String, Failure>)> {
    let mut out = Vec::new();
    let Some(k) = &a.k3s else { return out };
    let servers: Vec<&str> = a.hosts_with(Role::K3sServer).map(|(_, h)| h.name.as_str()).collect();
    let agents: Vec<&str> = a.hosts_with(Role::K3sAgent).map(|(_, h)| h.name.as_str()).collect();
    let Some(first) = servers.first() else { return out };
    out.push((
        first.to_string(),
        "API ready (/readyz)".into(),
        readyz(&said.readyz).map(|()| "ok".into()).map_err(Failure::mismatch),
    ));
    let listed = nodes(&said.nodes);
    for n in servers.iter().chain(&agents) {
        let node = listed.as_ref().map_err(|e| Failure::error(e.clone())).and_then(|all| {
            all.iter()
                .find(|x| x.name == *n)
                .cloned()
                .ok_or_else(|| Failure::mismatch(format!("{n} is not a node of the cluster")))
        });
        out.push((
            n.to_string(),
            "node Ready".into(),
            node.clone().and_then(|x| {
                if x.ready {
                    Ok(format!(
                        "Ready; roles: {}",
                        if x.roles.is_empty() { "worker".into() } else { x.roles.join(", ") }
                    ))
                } else {
                    Err(Failure::mismatch(format!(
                        "not Ready: {}",
                        x.why.unwrap_or_else(|| "no Ready condition".into())
                    )))
                }
            }),
        ));
        if k.mode == K3sMode::Ha && servers.contains(n) {
            out.push((
                n.to_string(),
                "etcd voter".into(),
                node.and_then(|x| match x.etcd_voter {
                    Some(true) => Ok("EtcdIsVoter=True".into()),
                    Some(false) => Err(Failure::mismatch("EtcdIsVoter=False: a learner, not yet promoted")),
                    None => Err(Failure::mismatch("no EtcdIsVoter condition: not an etcd member")),
                }),
            ));
        }
    }
    if !k.disable.contains(&K3sComponent::Coredns) {
        let r = match &said.coredns {
            None => Err(Failure::error("not asked")),
            Some(text) => coredns(text),
        };
        out.push((first.to_string(), "CoreDNS available".into(), r));
    }
    out
}

/// `kubectl -n kube-system get deployment coredns -o json`: the Available condition.
fn coredns(text: &str) -> Result<String, Failure> {
    let v: Value = serde_json::from_str(text)
        .map_err(|_| Failure::mismatch(format!("no coredns deployment: {}", text.lines().next().unwrap_or(""))))?;
    let available = v["status"]["conditions"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["type"] == "Available"))
        .is_some_and(|c| c["status"] == "True");
    let ready = v["status"]["readyReplicas"].as_u64().unwrap_or(0);
    if available {
        Ok(format!("Available, {ready} ready replica(s)"))
    } else {
        Err(Failure::mismatch(format!("not Available ({ready} ready replica(s))")))
    }
}

/// Asks the first reachable server; a cluster without one gets a row saying so.
pub async fn verify(a: &Answers, state: &StateDir, down: &BTreeMap<String, String>) -> Vec<Row> {
    let t = Instant::now();
    let Some(server) = a.hosts_with(Role::K3sServer).map(|(_, h)| h).find(|h| !down.contains_key(&h.name)) else {
        return Vec::new();
    };
    let fail = |f: Failure| vec![Row::failed(SERVICE, &server.name, "API ready (/readyz)", f, t.elapsed())];
    let session = match connect(server, state).await {
        Ok(s) => s,
        Err(e) => return fail(Failure::error(e)),
    };
    let ask = |cmd: &'static str| {
        let session = &session;
        async move {
            match session.exec(cmd, None).await {
                Ok(o) => Ok(format!("{}{}", o.stdout_str(), o.stderr_str())),
                Err(e) => Err(Failure::error(e.to_string())),
            }
        }
    };
    let installed = ask("command -v k3s >/dev/null && systemctl is-active k3s").await;
    match installed {
        Ok(s) if s.trim() == "active" => {}
        Ok(s) => {
            return fail(Failure::error(format!(
                "k3s does not run on {} ({}): the cluster has not been built",
                server.name,
                if s.trim().is_empty() { "not installed" } else { s.trim() }
            )));
        }
        Err(e) => return fail(e),
    }
    let (readyz_out, nodes_out, coredns_out) = tokio::join!(
        ask("k3s kubectl get --raw='/readyz?verbose' 2>&1"),
        ask("k3s kubectl get nodes -o json 2>&1"),
        ask("k3s kubectl -n kube-system get deployment coredns -o json 2>&1"),
    );
    session.close().await;
    let said = Said {
        readyz: readyz_out.unwrap_or_default(),
        nodes: nodes_out.unwrap_or_default(),
        coredns: coredns_out.ok(),
    };
    // The rows come from one set of answers: each shows the time they took together.
    let took = t.elapsed();
    judge(a, &said).into_iter().map(|(host, check, r)| Row::from_result(SERVICE, &host, check, r, took)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::verify::Cause;

    const READYZ_OK: &str = include_str!("../../tests/fixtures/k3s/readyz-verbose-ok.txt");
    const NODES: &str = include_str!("../../tests/fixtures/k3s/nodes-s3-learner.json");
    const COREDNS: &str = include_str!("../../tests/fixtures/k3s/coredns-available.json");

    /// Three servers s1-s3 in HA and an agent a1, as in the recorded node list.
    fn site() -> Answers {
        let text = include_str!("../../wizard/examples/proxmox-k3s.toml");
        let mut a = crate::answers::load_str("proxmox-k3s.toml", text).unwrap().answers;
        let mut k = 0;
        let mut g = 0;
        for h in a.hosts.iter_mut() {
            if h.roles.contains(&Role::K3sServer) {
                k += 1;
                h.name = format!("s{k}");
            } else if h.roles.contains(&Role::K3sAgent) {
                g += 1;
                h.name = format!("a{g}");
            }
        }
        a
    }

    #[test]
    fn a_learner_and_a_missing_node_fail_their_rows_and_the_rest_pass() {
        let a = site();
        let said = Said { readyz: READYZ_OK.into(), nodes: NODES.into(), coredns: Some(COREDNS.into()) };
        let rows = judge(&a, &said);
        let row = |host: &str, check: &str| {
            rows.iter()
                .find(|r| r.0 == host && r.1 == check)
                .unwrap_or_else(|| panic!("{host}/{check}: {rows:?}"))
                .2
                .clone()
        };
        assert_eq!(row("s1", "API ready (/readyz)"), Ok("ok".into()));
        assert!(row("s1", "node Ready").unwrap().contains("control-plane"));
        assert_eq!(row("s1", "etcd voter"), Ok("EtcdIsVoter=True".into()));
        let learner = row("s3", "etcd voter").unwrap_err();
        assert_eq!(learner.cause, Cause::Mismatch);
        assert!(learner.message.contains("learner"));
        assert!(row("a1", "node Ready").is_ok());
        // The example has two agents; the recorded list knows one.
        assert_eq!(row("a2", "node Ready").unwrap_err().message, "a2 is not a node of the cluster");
        assert!(!rows.iter().any(|r| r.0 == "a1" && r.1 == "etcd voter"), "agents have no etcd row");
        assert_eq!(row("s1", "CoreDNS available"), Ok("Available, 1 ready replica(s)".into()));
    }

    #[test]
    fn an_api_that_is_not_ready_and_coredns_without_replicas_fail() {
        let mut a = site();
        let said = Said {
            readyz: include_str!("../../tests/fixtures/k3s/readyz-verbose-etcd-failed.txt").into(),
            nodes: "error: the server doesn't have a resource type \"nodes\"".into(),
            coredns: Some(COREDNS.replace("\"True\"", "\"False\"").replace("\"readyReplicas\": 1,", "")),
        };
        let rows = judge(&a, &said);
        let api = &rows.iter().find(|r| r.1 == "API ready (/readyz)").unwrap().2;
        assert_eq!(api.as_ref().unwrap_err().message, "not ready: etcd, etcd-readiness");
        assert!(rows.iter().filter(|r| r.1 == "node Ready").all(|r| r.2.as_ref().unwrap_err().cause == Cause::Error));
        let dns = &rows.iter().find(|r| r.1 == "CoreDNS available").unwrap().2;
        assert_eq!(dns.as_ref().unwrap_err().message, "not Available (0 ready replica(s))");
        // CoreDNS disabled: no row for it.
        a.k3s.as_mut().unwrap().disable.push(K3sComponent::Coredns);
        assert!(!judge(&a, &said).iter().any(|r| r.1 == "CoreDNS available"));
    }
}
