//! Reading the hand-off's state from kubectl's JSON (run on the first server over SSH with the
//! kubectl built into k3s): the install manifest's CRDs established, its controllers
//! available, then the sync objects. Pure: outputs are strings, tested with recorded ones in
//! the Kubernetes formats (`tests/fixtures/handoff/`).

use serde_json::Value;

/// An object of the engine's install manifest that must be ready before the sync objects are
/// applied: CRDs (else "no matches for kind") and the controllers that act on them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Part {
    pub kind: String,
    pub namespace: Option<String>,
    pub name: String,
}

/// The CRDs, Deployments and StatefulSets an install manifest creates, in its order. Read
/// line by line (the manifest is the upstream file, applied as it is): each document's
/// top-level `kind:` and its `metadata:` block's `name:` and `namespace:`.
pub fn parts(manifest: &str) -> Vec<Part> {
    let mut out = Vec::new();
    for doc in documents(manifest) {
        let (mut kind, mut name, mut namespace) = (None, None, None);
        let mut in_metadata = false;
        for line in doc.lines() {
            if line.trim().is_empty() || line.trim_start().starts_with('#') {
                continue;
            }
            let top = !line.starts_with(' ');
            if top {
                in_metadata = line.trim_end() == "metadata:";
                if let Some(k) = line.strip_prefix("kind:") {
                    kind = Some(unquote(k));
                }
            } else if in_metadata {
                // Only the block's own keys: two spaces in, not labels' or annotations'.
                if let Some(n) = line.strip_prefix("  name:") {
                    name.get_or_insert_with(|| unquote(n));
                } else if let Some(n) = line.strip_prefix("  namespace:") {
                    namespace.get_or_insert_with(|| unquote(n));
                }
            }
        }
        if let (Some(kind), Some(name)) = (kind, name)
            && matches!(kind.as_str(), "CustomResourceDefinition" | "Deployment" | "StatefulSet")
        {
            out.push(Part { kind, namespace, name });
        }
    }
    out
}

fn documents(text: &str) -> Vec<String> {
    let mut docs = vec![String::new()];
    for line in text.lines() {
        if line.starts_with("---") {
            docs.push(String::new());
        } else if let Some(d) = docs.last_mut() {
            d.push_str(line);
            d.push('\n');
        }
    }
    docs.retain(|d| !d.trim().is_empty());
    docs
}

fn unquote(s: &str) -> String {
    s.trim().trim_matches('"').trim_matches('\'').to_string()
}

/// Argo CD's install manifest pulls every image on each start (`imagePullPolicy: Always`):
/// in an air gap without k3s's embedded registry mirror no pull can succeed, so the images
/// imported from the bundle are used as they are (`IfNotPresent`). Returns the manifest and
/// how many lines changed.
pub fn pull_if_not_present(manifest: &str) -> (String, usize) {
    let mut n = 0;
    let mut out = String::with_capacity(manifest.len());
    for line in manifest.lines() {
        let (indent, rest) = line.split_at(line.len() - line.trim_start().len());
        if rest.trim_end() == "imagePullPolicy: Always" {
            out.push_str(indent);
            out.push_str("imagePullPolicy: IfNotPresent");
            n += 1;
        } else {
            out.push_str(line);
        }
        out.push('\n');
    }
    (out, n)
}

/// Items of a kubectl `-o json` answer: a `List`'s items, or the one object.
fn items(output: &str) -> Result<Vec<Value>, String> {
    let v: Value = serde_json::from_str(output).map_err(|_| first_line(output))?;
    Ok(match v["items"].as_array() {
        Some(list) => list.clone(),
        None => vec![v],
    })
}

fn first_line(s: &str) -> String {
    let l = s.lines().find(|l| !l.trim().is_empty()).unwrap_or("no output").trim();
    l.chars().take(200).collect()
}

fn condition<'v>(obj: &'v Value, kind: &str) -> Option<&'v Value> {
    obj["status"]["conditions"].as_array()?.iter().find(|c| c["type"] == kind)
}

fn holds(obj: &Value, kind: &str) -> bool {
    condition(obj, kind).is_some_and(|c| c["status"] == "True")
}

/// Why a condition is not True: its reason and message.
fn why(obj: &Value, kind: &str) -> String {
    match condition(obj, kind) {
        None => format!("no {kind} condition yet"),
        Some(c) => {
            let reason = c["reason"].as_str().unwrap_or("");
            let message = c["message"].as_str().unwrap_or("");
            match (reason.is_empty(), message.is_empty()) {
                (true, true) => format!("{kind}={}", c["status"].as_str().unwrap_or("?")),
                (false, true) => reason.to_string(),
                (true, false) => message.to_string(),
                (false, false) => format!("{reason}: {message}"),
            }
        }
    }
}

/// Of `wanted`, what is not ready yet, from `kubectl get crd,deployment,statefulset -A -o
/// json`; empty when all are. A part missing from the answer counts as not ready.
pub fn not_ready(wanted: &[Part], output: &str) -> Result<Vec<String>, String> {
    let all = items(output)?;
    let find = |p: &Part| {
        all.iter().find(|o| {
            o["kind"] == p.kind.as_str()
                && o["metadata"]["name"] == p.name.as_str()
                && p.namespace.as_deref().is_none_or(|ns| o["metadata"]["namespace"] == ns)
        })
    };
    let mut out = Vec::new();
    for p in wanted {
        let label = match &p.namespace {
            Some(ns) => format!("{} {ns}/{}", p.kind, p.name),
            None => format!("{} {}", p.kind, p.name),
        };
        let Some(o) = find(p) else {
            out.push(format!("{label}: not created"));
            continue;
        };
        let problem = match p.kind.as_str() {
            "CustomResourceDefinition" => (!holds(o, "Established")).then(|| why(o, "Established")),
            "Deployment" => deployment(o),
            _ => statefulset(o),
        };
        if let Some(problem) = problem {
            out.push(format!("{label}: {problem}"));
        }
    }
    Ok(out)
}

/// A Deployment is ready when Available and every replica runs the current template.
fn deployment(o: &Value) -> Option<String> {
    let want = o["spec"]["replicas"].as_u64().unwrap_or(1);
    let updated = o["status"]["updatedReplicas"].as_u64().unwrap_or(0);
    let available = o["status"]["availableReplicas"].as_u64().unwrap_or(0);
    if let Some(c) = condition(o, "Progressing")
        && c["status"] == "False"
    {
        return Some(format!("not progressing ({})", why(o, "Progressing")));
    }
    if !holds(o, "Available") {
        return Some(format!("not Available: {} ({available}/{want} available)", why(o, "Available")));
    }
    (updated < want || available < want).then(|| format!("{updated}/{want} updated, {available}/{want} available"))
}

fn statefulset(o: &Value) -> Option<String> {
    let want = o["spec"]["replicas"].as_u64().unwrap_or(1);
    let ready = o["status"]["readyReplicas"].as_u64().unwrap_or(0);
    (ready < want).then(|| format!("{ready}/{want} ready"))
}

/// A deadline passed: the last warning events of the namespace, newest last, to say why
/// (an image that cannot be pulled, a pod that does not schedule).
pub fn last_warnings(output: &str, n: usize) -> Vec<String> {
    let Ok(mut all) = items(output) else { return Vec::new() };
    all.retain(|e| e["type"] == "Warning");
    let when = |e: &Value| e["lastTimestamp"].as_str().or(e["eventTime"].as_str()).unwrap_or("").to_string();
    all.sort_by_key(when);
    all.iter()
        .rev()
        .take(n)
        .rev()
        .map(|e| {
            format!(
                "{} {}: {}: {}",
                e["involvedObject"]["kind"].as_str().unwrap_or("?"),
                e["involvedObject"]["name"].as_str().unwrap_or("?"),
                e["reason"].as_str().unwrap_or("?"),
                e["message"].as_str().unwrap_or("").trim()
            )
        })
        .collect()
}

/// Where a sync object stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Sync {
    /// Reconciled: the revision (`main@sha1:...`) or Argo CD's sync and health.
    Ready(String),
    /// Still working, or waiting for something outside groundwork (an empty repository).
    Pending(String),
    /// Failed in a way waiting will not cure (authentication, known_hosts, a bad path).
    Failed(String),
}

/// A Flux `GitRepository` or `Kustomization` (`kubectl get ... -o json`): Ready when the
/// status is of the current generation and `Ready=True`; `Stalled=True` is a failure.
pub fn flux(output: &str) -> Sync {
    let o: Value = match serde_json::from_str(output) {
        Ok(v) => v,
        Err(_) => return Sync::Pending(first_line(output)),
    };
    let current = o["metadata"]["generation"].as_i64().is_some_and(|g| o["status"]["observedGeneration"] == g);
    let revision = o["status"]["artifact"]["revision"]
        .as_str()
        .or(o["status"]["lastAppliedRevision"].as_str())
        .unwrap_or("")
        .to_string();
    if holds(&o, "Stalled") {
        return Sync::Failed(why(&o, "Stalled"));
    }
    if current && holds(&o, "Ready") {
        return Sync::Ready(revision);
    }
    let reason = why(&o, "Ready");
    // Reasons that waiting does not fix: the credentials or the host key.
    let auth = ["AuthenticationFailed", "unable to authenticate", "knownhosts", "handshake failed"];
    if auth.iter().any(|a| reason.contains(a)) {
        return Sync::Failed(reason);
    }
    Sync::Pending(reason)
}

/// An Argo CD `Application`: Ready when `Synced` and `Healthy`; a comparison, spec or sync
/// error is a failure.
pub fn argocd(output: &str) -> Sync {
    let o: Value = match serde_json::from_str(output) {
        Ok(v) => v,
        Err(_) => return Sync::Pending(first_line(output)),
    };
    let errors: Vec<String> = o["status"]["conditions"]
        .as_array()
        .map(|cs| {
            cs.iter()
                .filter(|c| c["type"].as_str().is_some_and(|t| t.ends_with("Error")))
                .map(|c| format!("{}: {}", c["type"].as_str().unwrap_or(""), c["message"].as_str().unwrap_or("")))
                .collect()
        })
        .unwrap_or_default();
    if !errors.is_empty() {
        return Sync::Failed(errors.join("; "));
    }
    let sync = o["status"]["sync"]["status"].as_str().unwrap_or("Unknown");
    let health = o["status"]["health"]["status"].as_str().unwrap_or("Unknown");
    let revision = o["status"]["sync"]["revision"].as_str().unwrap_or("");
    if sync == "Synced" && health == "Healthy" {
        Sync::Ready(revision.to_string())
    } else if health == "Degraded" {
        let m = o["status"]["health"]["message"].as_str().unwrap_or("");
        Sync::Failed(format!("{sync}, Degraded{}", if m.is_empty() { String::new() } else { format!(": {m}") }))
    } else {
        Sync::Pending(format!("{sync}, {health}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FLUX_INSTALL: &str = include_str!("../../tests/fixtures/handoff/flux-install-excerpt.yaml");
    const WORKLOADS: &str = include_str!("../../tests/fixtures/handoff/flux-workloads-ready.json");

    fn fixture(name: &str) -> String {
        std::fs::read_to_string(format!("{}/tests/fixtures/handoff/{name}", env!("CARGO_MANIFEST_DIR"))).unwrap()
    }

    #[test]
    fn the_install_manifest_names_its_crds_and_controllers_in_order() {
        let p = parts(FLUX_INSTALL);
        let names: Vec<String> = p.iter().map(|p| format!("{} {}", p.kind, p.name)).collect();
        assert_eq!(
            names,
            [
                "CustomResourceDefinition gitrepositories.source.toolkit.fluxcd.io",
                "CustomResourceDefinition kustomizations.kustomize.toolkit.fluxcd.io",
                "Deployment kustomize-controller",
                "Deployment source-controller",
            ]
        );
        // The namespace is the metadata's, not a label's or a selector's.
        assert!(p[2..].iter().all(|p| p.namespace.as_deref() == Some("flux-system")), "{p:?}");
        assert!(p[..2].iter().all(|p| p.namespace.is_none()), "{p:?}");
    }

    #[test]
    fn ready_when_crds_are_established_and_controllers_available() {
        let p = parts(FLUX_INSTALL);
        assert_eq!(not_ready(&p, WORKLOADS).unwrap(), Vec::<String>::new());
        let waiting = not_ready(&p, &fixture("flux-workloads-progressing.json")).unwrap();
        assert_eq!(
            waiting,
            [
                "CustomResourceDefinition kustomizations.kustomize.toolkit.fluxcd.io: NamesAccepted: the initial names have been accepted",
                "Deployment flux-system/kustomize-controller: not Available: MinimumReplicasUnavailable: Deployment does not have minimum availability. (0/1 available)",
                "Deployment flux-system/source-controller: not created",
            ]
        );
        let stuck = not_ready(&p[3..], &fixture("deployment-deadline-exceeded.json")).unwrap();
        assert_eq!(stuck.len(), 1);
        assert!(stuck[0].contains("not progressing (ProgressDeadlineExceeded"), "{stuck:?}");
        assert!(
            not_ready(&p, "error: the server doesn't have a resource type \"crd\"")
                .unwrap_err()
                .contains("resource type")
        );
    }

    #[test]
    fn warnings_say_why_a_controller_does_not_come_up() {
        let w = last_warnings(&fixture("events.json"), 2);
        assert_eq!(
            w,
            [
                "Pod source-controller-6d4b9c7d5-x2x7q: Failed: Failed to pull image \"ghcr.io/fluxcd/source-controller:v1.5.0\": dial tcp: lookup ghcr.io: no such host",
                "Pod source-controller-6d4b9c7d5-x2x7q: BackOff: Back-off pulling image \"ghcr.io/fluxcd/source-controller:v1.5.0\"",
            ]
        );
    }

    #[test]
    fn argo_cd_images_are_used_as_imported() {
        let m = "spec:\n  containers:\n  - image: quay.io/argoproj/argocd:v3.1.0\n    imagePullPolicy: Always\n    name: x\n  # imagePullPolicy: Always stays in a comment\n";
        let (patched, n) = pull_if_not_present(m);
        assert_eq!(n, 1);
        assert!(patched.contains("    imagePullPolicy: IfNotPresent\n"));
        assert!(patched.contains("# imagePullPolicy: Always stays"));
        assert_eq!(pull_if_not_present(&patched).1, 0);
    }

    #[test]
    fn flux_objects_ready_pending_or_failed() {
        assert_eq!(flux(&fixture("gitrepository-ready.json")), Sync::Ready("main@sha1:5d2c8a1e0b7f".into()));
        match flux(&fixture("gitrepository-auth-failed.json")) {
            Sync::Failed(m) => assert!(m.contains("unable to authenticate"), "{m}"),
            other => panic!("{other:?}"),
        }
        // Ready=True of an older generation is not ready for the current spec.
        assert!(matches!(flux(&fixture("kustomization-old-generation.json")), Sync::Pending(_)));
        match flux(&fixture("kustomization-empty-path.json")) {
            Sync::Pending(m) => assert!(m.contains("BuildFailed") && m.contains("no such file"), "{m}"),
            other => panic!("{other:?}"),
        }
        assert!(matches!(flux("Error from server (NotFound): ..."), Sync::Pending(m) if m.contains("NotFound")));
    }

    #[test]
    fn argo_cd_applications_ready_pending_or_failed() {
        assert_eq!(argocd(&fixture("application-synced.json")), Sync::Ready("5d2c8a1e0b7f".into()));
        match argocd(&fixture("application-comparison-error.json")) {
            Sync::Failed(m) => assert!(m.starts_with("ComparisonError: "), "{m}"),
            other => panic!("{other:?}"),
        }
        assert_eq!(
            argocd(r#"{"status":{"sync":{"status":"OutOfSync"},"health":{"status":"Progressing"}}}"#),
            Sync::Pending("OutOfSync, Progressing".into())
        );
    }
}
