//! The hand-off as a client of the cluster sees it, asked on the first k3s server with the
//! kubectl built into k3s: the engine's controllers available and the CRDs of its sync
//! objects established; the source fetched; the sync state with its message. A repository
//! that has nothing to reconcile yet is the operator's to fill: a `skip` row that says so,
//! not a failure of groundwork.

use std::collections::BTreeMap;
use std::time::Instant;

use serde_json::Value;

use super::{Failure, Row, connect};
use crate::answers::model::{Answers, GitOpsEngine, Role};
use crate::handoff::install::{engine_name, namespace, sync_commands};
use crate::handoff::ready::{self, Part, Sync};
use crate::state::StateDir;

const SERVICE: &str = "gitops";

/// The CRDs the sync objects need.
fn crds(engine: GitOpsEngine) -> &'static [&'static str] {
    match engine {
        GitOpsEngine::Flux => {
            &["gitrepositories.source.toolkit.fluxcd.io", "kustomizations.kustomize.toolkit.fluxcd.io"]
        }
        GitOpsEngine::Argocd => &["applications.argoproj.io"],
    }
}

/// What the server said: the engine namespace's workloads, the CRDs, each sync object.
pub struct Said {
    pub workloads: String,
    pub crds: String,
    pub sync: Vec<(&'static str, String)>,
}

/// One check's verdict.
#[derive(Debug)]
pub enum Verdict {
    Passed(String),
    /// Waiting for something outside groundwork (an empty repository): a `skip` row.
    Pending(String),
    Failed(Failure),
}

/// The rows from what the server said: `(check, verdict)`.
pub fn judge(engine: GitOpsEngine, said: &Said) -> Vec<(String, Verdict)> {
    let mut out = Vec::new();
    let ns = namespace(engine);
    // Every workload of the engine's namespace must be ready: the parts are the ones listed.
    let listed: Result<Vec<Part>, String> = serde_json::from_str::<Value>(&said.workloads)
        .map_err(|_| said.workloads.lines().next().unwrap_or("no answer").to_string())
        .map(|v| {
            v["items"]
                .as_array()
                .map(|items| {
                    items
                        .iter()
                        .filter(|o| o["kind"] == "Deployment" || o["kind"] == "StatefulSet")
                        .map(|o| Part {
                            kind: o["kind"].as_str().unwrap_or("").to_string(),
                            namespace: Some(ns.to_string()),
                            name: o["metadata"]["name"].as_str().unwrap_or("").to_string(),
                        })
                        .collect()
                })
                .unwrap_or_default()
        });
    let crd_parts: Vec<Part> = crds(engine)
        .iter()
        .map(|c| Part { kind: "CustomResourceDefinition".into(), namespace: None, name: c.to_string() })
        .collect();
    let controllers = match listed {
        Err(e) => Verdict::Failed(Failure::error(format!("kubectl -n {ns} get deployment,statefulset: {e}"))),
        Ok(parts) if parts.is_empty() => Verdict::Failed(Failure::mismatch(format!(
            "{} is not installed: no controller in namespace {ns}",
            engine_name(engine)
        ))),
        Ok(parts) => {
            let missing = ready::not_ready(&parts, &said.workloads).unwrap_or_else(|e| vec![e]);
            let crds_missing = ready::not_ready(&crd_parts, &said.crds).unwrap_or_else(|e| vec![e]);
            let all: Vec<String> = missing.into_iter().chain(crds_missing).collect();
            if all.is_empty() {
                Verdict::Passed(format!("{} controllers available in {ns}; CRDs established", parts.len()))
            } else {
                Verdict::Failed(Failure::mismatch(all.join("; ")))
            }
        }
    };
    out.push(("controllers available".to_string(), controllers));
    for (what, text) in &said.sync {
        let state = match engine {
            GitOpsEngine::Flux => ready::flux(text),
            GitOpsEngine::Argocd => ready::argocd(text),
        };
        let check = match *what {
            "GitRepository" => "source fetched (GitRepository)".to_string(),
            "Kustomization" => "Kustomization applied".to_string(),
            other => format!("{other} synced and healthy"),
        };
        let r = match state {
            Sync::Ready(rev) => {
                Verdict::Passed(if rev.is_empty() { "Ready".into() } else { format!("Ready at {rev}") })
            }
            Sync::Pending(m) => Verdict::Pending(format!("not reconciled yet: {m}")),
            Sync::Failed(m) => Verdict::Failed(Failure::mismatch(m)),
        };
        out.push((check, r));
    }
    out
}

/// Asks the first reachable k3s server.
pub async fn verify(a: &Answers, state: &StateDir, down: &BTreeMap<String, String>) -> Vec<Row> {
    let t = Instant::now();
    let Some(g) = &a.gitops else { return Vec::new() };
    let Some(server) = a.hosts_with(Role::K3sServer).map(|(_, h)| h).find(|h| !down.contains_key(&h.name)) else {
        return Vec::new();
    };
    let fail = |f: Failure| vec![Row::failed(SERVICE, &server.name, "controllers available", f, t.elapsed())];
    let session = match connect(server, state).await {
        Ok(s) => s,
        Err(e) => return fail(Failure::error(e)),
    };
    let ask = |cmd: String| {
        let session = &session;
        async move {
            match session.exec(&cmd, None).await {
                Ok(o) => format!("{}{}", o.stdout_str(), o.stderr_str()),
                Err(e) => format!("ssh: {e}"),
            }
        }
    };
    let ns = namespace(g.engine);
    let (workloads, crds_said, sync) = tokio::join!(
        ask(format!("k3s kubectl -n {ns} get deployment,statefulset -o json 2>&1")),
        ask("k3s kubectl get crd -o json 2>&1".to_string()),
        futures::future::join_all(
            sync_commands(g.engine).into_iter().map(|(what, cmd)| async move { (what, ask(cmd).await) })
        ),
    );
    session.close().await;
    let took = t.elapsed();
    judge(g.engine, &Said { workloads, crds: crds_said, sync })
        .into_iter()
        .map(|(check, r)| match r {
            Verdict::Passed(detail) => Row::passed(SERVICE, &server.name, check, detail, took),
            Verdict::Pending(why) => Row::skipped(SERVICE, &server.name, check, why, took),
            Verdict::Failed(f) => Row::failed(SERVICE, &server.name, check, f, took),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> String {
        std::fs::read_to_string(format!("{}/tests/fixtures/handoff/{name}", env!("CARGO_MANIFEST_DIR"))).unwrap()
    }

    #[test]
    fn an_installed_and_reconciled_flux_passes_every_row() {
        let said = Said {
            workloads: fixture("flux-workloads-ready.json"),
            crds: fixture("flux-workloads-ready.json"),
            sync: vec![
                ("GitRepository", fixture("gitrepository-ready.json")),
                ("Kustomization", fixture("gitrepository-ready.json")),
            ],
        };
        let rows = judge(GitOpsEngine::Flux, &said);
        let checks: Vec<&str> = rows.iter().map(|(c, _)| c.as_str()).collect();
        assert_eq!(checks, ["controllers available", "source fetched (GitRepository)", "Kustomization applied"]);
        assert!(
            rows.iter().skip(1).all(|(_, r)| matches!(r, Verdict::Passed(d) if d.contains("main@sha1:"))),
            "{rows:?}"
        );
    }

    #[test]
    fn an_empty_repository_is_pending_and_bad_credentials_fail() {
        let said = Said {
            workloads: fixture("deployment-deadline-exceeded.json"),
            crds: fixture("flux-workloads-progressing.json"),
            sync: vec![
                ("GitRepository", fixture("gitrepository-auth-failed.json")),
                ("Kustomization", fixture("kustomization-empty-path.json")),
            ],
        };
        let rows = judge(GitOpsEngine::Flux, &said);
        match &rows[0].1 {
            Verdict::Failed(f) => {
                assert!(f.message.contains("ProgressDeadlineExceeded"), "{}", f.message);
                assert!(f.message.contains("kustomizations.kustomize.toolkit.fluxcd.io"), "{}", f.message);
            }
            other => panic!("{other:?}"),
        }
        assert!(
            matches!(&rows[1].1, Verdict::Failed(f) if f.message.contains("unable to authenticate")),
            "{:?}",
            rows[1]
        );
        assert!(
            matches!(&rows[2].1, Verdict::Pending(m) if m.starts_with("not reconciled yet: BuildFailed")),
            "{:?}",
            rows[2]
        );
    }

    #[test]
    fn no_controller_means_not_installed() {
        let said = Said {
            workloads: r#"{"apiVersion":"v1","kind":"List","items":[]}"#.into(),
            crds: r#"{"apiVersion":"v1","kind":"List","items":[]}"#.into(),
            sync: vec![(
                "Application",
                "Error from server (NotFound): applications.argoproj.io \"groundwork-site\" not found".into(),
            )],
        };
        let rows = judge(GitOpsEngine::Argocd, &said);
        assert!(
            matches!(&rows[0].1, Verdict::Failed(f) if f.message == "argocd is not installed: no controller in namespace argocd")
        );
        assert!(matches!(&rows[1].1, Verdict::Pending(m) if m.contains("NotFound")), "{:?}", rows[1]);
        assert_eq!(rows[1].0, "Application synced and healthy");
    }
}
