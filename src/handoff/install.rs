//! The hand-off's work on the first k3s server, over SSH with the kubectl built into k3s:
//! the engine's install manifest from the air-gap bundle applied server-side (Argo CD's CRDs
//! are too big for a client-side apply's annotation), its CRDs and controllers waited for,
//! then groundwork's own objects applied. Every apply goes through standard input: no file of
//! ours is left on the server, and secrets never appear on a command line.
//!
//! A re-run that would apply the same bytes applies nothing: a stamp of what was applied
//! (its sha256) is kept on the server and read in the same round trip as the rest.

use std::path::Path;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

use super::ready::{self, Part, Sync};
use crate::answers::model::{Answers, GitOpsEngine};
use crate::engine::facts::sh_quote;
use crate::ssh::Session;

/// How long the engine's controllers may take to come up (images imported, pods scheduled).
pub const DEADLINE: Duration = Duration::from_secs(300);
const POLL: Duration = Duration::from_secs(3);
/// Where the sha256 of the last applied install manifest and objects is kept.
pub const STAMP: &str = "/var/lib/groundwork/handoff.applied";
const APPLY: &str = "k3s kubectl apply --server-side --force-conflicts --field-manager=groundwork -f -";

/// The engine as the bundle has it, ready to apply.
#[derive(Debug, Clone)]
pub struct EngineManifest {
    pub engine: GitOpsEngine,
    pub version: String,
    /// The namespace the controllers run in (Argo CD's manifest names none: applied into it).
    pub namespace: &'static str,
    pub yaml: String,
    /// Its CRDs and controllers, to wait for.
    pub parts: Vec<Part>,
    /// Lines changed for the air gap (Argo CD's `imagePullPolicy: Always`).
    pub patched: usize,
}

pub fn namespace(engine: GitOpsEngine) -> &'static str {
    match engine {
        GitOpsEngine::Flux => "flux-system",
        GitOpsEngine::Argocd => "argocd",
    }
}

/// Reads the install manifest of the answers' engine from the bundle (whose sums `apply`
/// checked before connecting). Without k3s's embedded registry mirror nothing can pull in an
/// air gap, so Argo CD's images are used as imported.
pub fn engine_manifest(a: &Answers, bundle: &Path) -> Result<EngineManifest, String> {
    let g = a.gitops.as_ref().ok_or("the answers have no [gitops] section")?;
    let m = crate::bundle::manifest::Manifest::read(bundle)?
        .ok_or_else(|| format!("{}: no manifest.json (make the bundle with `groundwork bundle`)", bundle.display()))?;
    let part = m.gitops.as_ref().filter(|p| p.engine == g.engine).ok_or_else(|| {
        format!(
            "the air-gap bundle {} has no {} install manifest: make it with `groundwork bundle --gitops {} VERSION`",
            bundle.display(),
            engine_name(g.engine),
            engine_name(g.engine)
        )
    })?;
    let path = bundle.join(format!("gitops/{}-install.yaml", engine_name(g.engine)));
    let yaml = std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    let embedded_registry = a.k3s.as_ref().is_some_and(|k| k.embedded_registry);
    let (yaml, patched) = match g.engine {
        GitOpsEngine::Argocd if !embedded_registry => ready::pull_if_not_present(&yaml),
        _ => (yaml, 0),
    };
    let ns = namespace(g.engine);
    let mut parts = ready::parts(&yaml);
    for p in &mut parts {
        if p.kind != "CustomResourceDefinition" && p.namespace.is_none() {
            p.namespace = Some(ns.to_string());
        }
    }
    if !parts.iter().any(|p| p.kind != "CustomResourceDefinition") {
        return Err(format!("{}: no Deployment in it: is this the engine's install manifest?", path.display()));
    }
    Ok(EngineManifest { engine: g.engine, version: part.version.clone(), namespace: ns, yaml, parts, patched })
}

pub fn engine_name(e: GitOpsEngine) -> &'static str {
    match e {
        GitOpsEngine::Flux => "flux",
        GitOpsEngine::Argocd => "argocd",
    }
}

/// What one hand-off applies, each with its sha256, in order: the engine's install manifest,
/// then `(title, yaml)` of each of groundwork's documents. Kept on the server as the stamp.
pub fn stamp(engine: &EngineManifest, documents: &[(String, String)]) -> Vec<(String, String)> {
    let hash = |text: &str| Sha256::digest(text.as_bytes()).iter().map(|b| format!("{b:02x}")).collect::<String>();
    let title = format!("{} {} install manifest", engine_name(engine.engine), engine.version);
    std::iter::once((title, hash(&engine.yaml)))
        .chain(documents.iter().map(|(t, yaml)| (t.clone(), hash(yaml))))
        .collect()
}

/// The stamp as its file holds it: `sha256<TAB>title` per line.
pub fn stamp_text(stamp: &[(String, String)]) -> String {
    stamp.iter().map(|(title, sum)| format!("{sum}\t{title}\n")).collect()
}

/// Against the stamp of the last hand-off on the server: what would be applied anew (new or
/// changed, in apply order), and what it applied that the answers no longer make (left in
/// place: groundwork deletes nothing in the cluster).
pub fn changes(previous: &str, now: &[(String, String)]) -> (Vec<String>, Vec<String>) {
    let before: Vec<(&str, &str)> = previous.lines().filter_map(|l| l.split_once('\t')).collect();
    let changed = now
        .iter()
        .filter(|(title, sum)| !before.iter().any(|(s, t)| t == title && s == sum))
        .map(|(title, _)| title.clone())
        .collect();
    let gone =
        before.iter().filter(|(_, t)| !now.iter().any(|(title, _)| title == t)).map(|(_, t)| t.to_string()).collect();
    (changed, gone)
}

/// The stamp of the last hand-off on this server (one short command; empty when none).
pub async fn applied_before(server: &Session) -> Result<String, String> {
    let out = server.exec(&format!("cat {STAMP} 2>/dev/null || true"), None).await.map_err(|e| e.to_string())?;
    Ok(out.stdout_str())
}

/// Applies YAML documents from standard input; the error is kubectl's.
pub async fn apply(server: &Session, namespace: Option<&str>, yaml: &str) -> Result<(), String> {
    let cmd = match namespace {
        Some(ns) => format!("{APPLY} -n {}", sh_quote(ns)),
        None => APPLY.to_string(),
    };
    let out = server.exec(&format!("{cmd} 2>&1"), Some(yaml.as_bytes())).await.map_err(|e| e.to_string())?;
    if out.status != 0 {
        let said = out.stdout_str();
        let tail: Vec<&str> = said.lines().rev().take(5).collect::<Vec<_>>().into_iter().rev().collect();
        return Err(format!("kubectl apply failed (exit {}): {}", out.status, tail.join(" | ")));
    }
    Ok(())
}

/// Applies the engine's install manifest and waits until its CRDs are established and its
/// controllers available; at the deadline, says what is missing and the namespace's last
/// warnings. `progress` hears what is still awaited.
pub async fn install(server: &Session, engine: &EngineManifest, progress: &dyn Fn(&str)) -> Result<Duration, String> {
    let t = Instant::now();
    if engine.engine == GitOpsEngine::Argocd {
        // Its manifest names no namespace: it is applied into one that must exist.
        let ns = format!("apiVersion: v1\nkind: Namespace\nmetadata:\n  name: {}\n", engine.namespace);
        apply(server, None, &ns).await?;
    }
    let into = (engine.engine == GitOpsEngine::Argocd).then_some(engine.namespace);
    apply(server, into, &engine.yaml).await?;
    let mut last = String::new();
    loop {
        let said = server
            .exec("k3s kubectl get crd,deployment,statefulset -A -o json 2>&1", None)
            .await
            .map(|o| o.stdout_str())
            .unwrap_or_else(|e| format!("ssh: {e}"));
        let missing = ready::not_ready(&engine.parts, &said).unwrap_or_else(|e| vec![e]);
        if missing.is_empty() {
            return Ok(t.elapsed());
        }
        let now = missing.join("; ");
        if now != last {
            progress(&now);
            last = now;
        }
        if t.elapsed() >= DEADLINE {
            let events = server
                .exec(&format!("k3s kubectl -n {} get events -o json 2>&1", sh_quote(engine.namespace)), None)
                .await
                .map(|o| ready::last_warnings(&o.stdout_str(), 5))
                .unwrap_or_default();
            let why =
                if events.is_empty() { String::new() } else { format!("; last warnings: {}", events.join(" | ")) };
            return Err(format!(
                "{} {} not ready after {} s: {last}{why}",
                engine_name(engine.engine),
                engine.version,
                DEADLINE.as_secs()
            ));
        }
        tokio::time::sleep(POLL).await;
    }
}

/// Records what was applied, so an identical re-run applies nothing.
pub async fn record(server: &Session, stamp: &[(String, String)]) -> Result<(), String> {
    let cmd = format!("mkdir -p /var/lib/groundwork && printf '%s' {} > {STAMP}", sh_quote(&stamp_text(stamp)));
    let out = server.exec(&cmd, None).await.map_err(|e| e.to_string())?;
    if out.status != 0 {
        return Err(format!("cannot write {STAMP}: {}", out.stderr_str().trim()));
    }
    Ok(())
}

/// The commands that read the sync objects' state, per engine: `(what, command)`.
pub fn sync_commands(engine: GitOpsEngine) -> Vec<(&'static str, String)> {
    use super::sync::{ARGOCD_APPLICATION, ARGOCD_NAMESPACE, FLUX_NAME, FLUX_NAMESPACE};
    let get = |ns: &str, kind: &str, name: &str| {
        format!("k3s kubectl -n {} get {kind} {} -o json 2>&1", sh_quote(ns), sh_quote(name))
    };
    match engine {
        GitOpsEngine::Flux => vec![
            ("GitRepository", get(FLUX_NAMESPACE, "gitrepository", FLUX_NAME)),
            ("Kustomization", get(FLUX_NAMESPACE, "kustomization", FLUX_NAME)),
        ],
        GitOpsEngine::Argocd => vec![("Application", get(ARGOCD_NAMESPACE, "application", ARGOCD_APPLICATION))],
    }
}

/// Reads each sync object's state once.
pub async fn sync_state(server: &Session, engine: GitOpsEngine) -> Vec<(&'static str, Sync)> {
    let mut out = Vec::new();
    for (what, cmd) in sync_commands(engine) {
        let said = server.exec(&cmd, None).await.map(|o| o.stdout_str()).unwrap_or_else(|e| format!("ssh: {e}"));
        let state = match engine {
            GitOpsEngine::Flux => ready::flux(&said),
            GitOpsEngine::Argocd => ready::argocd(&said),
        };
        out.push((what, state));
    }
    out
}

/// Waits until every sync object is ready, one failed, or `limit` passed (then the pending
/// state is the answer: an empty repository is the operator's to fill, not a failure).
pub async fn wait_sync(
    server: &Session,
    engine: GitOpsEngine,
    limit: Duration,
    progress: &dyn Fn(&str),
) -> Vec<(&'static str, Sync)> {
    let t = Instant::now();
    loop {
        let states = sync_state(server, engine).await;
        let settled = states.iter().all(|(_, s)| matches!(s, Sync::Ready(_)))
            || states.iter().any(|(_, s)| matches!(s, Sync::Failed(_)));
        if settled || t.elapsed() >= limit {
            return states;
        }
        let waiting: Vec<String> = states
            .iter()
            .filter_map(|(w, s)| match s {
                Sync::Pending(m) => Some(format!("{w}: {m}")),
                _ => None,
            })
            .collect();
        progress(&waiting.join("; "));
        tokio::time::sleep(POLL).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answers(engine: &str, embedded_registry: bool) -> Answers {
        let text = include_str!("../../wizard/examples/proxmox-k3s.toml");
        let mut a = crate::answers::load_str("proxmox-k3s.toml", text).unwrap().answers;
        let g = a.gitops.as_mut().expect("the example hands off");
        g.engine = if engine == "flux" { GitOpsEngine::Flux } else { GitOpsEngine::Argocd };
        a.k3s.as_mut().unwrap().embedded_registry = embedded_registry;
        a
    }

    fn bundle(engine: &str, yaml: &str) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("gitops")).unwrap();
        std::fs::write(dir.path().join(format!("gitops/{engine}-install.yaml")), yaml).unwrap();
        let manifest = serde_json::json!({
            "format": 1, "arch": "amd64", "k3s": {"version": "v1.35.6+k3s1"},
            "gitops": {"engine": engine, "version": "3.1.0", "images": []}, "files": []
        });
        std::fs::write(dir.path().join("manifest.json"), manifest.to_string()).unwrap();
        dir
    }

    const ARGO: &str = "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: argocd-repo-server\nspec:\n  template:\n    spec:\n      containers:\n      - image: quay.io/argoproj/argocd:v3.1.0\n        imagePullPolicy: Always\n---\napiVersion: apps/v1\nkind: StatefulSet\nmetadata:\n  name: argocd-application-controller\n";

    #[test]
    fn argo_cd_is_patched_for_the_air_gap_only_without_the_registry_mirror() {
        let b = bundle("argocd", ARGO);
        let e = engine_manifest(&answers("argocd", false), b.path()).unwrap();
        assert_eq!((e.namespace, e.patched), ("argocd", 1));
        assert!(e.yaml.contains("imagePullPolicy: IfNotPresent") && !e.yaml.contains("Always"));
        // Its parts get the namespace it is applied into.
        assert!(e.parts.iter().all(|p| p.namespace.as_deref() == Some("argocd")), "{:?}", e.parts);
        let mirrored = engine_manifest(&answers("argocd", true), b.path()).unwrap();
        assert_eq!(mirrored.patched, 0);
        assert!(mirrored.yaml.contains("imagePullPolicy: Always"));
    }

    #[test]
    fn a_bundle_without_the_answers_engine_says_how_to_make_one() {
        let b = bundle("argocd", ARGO);
        let e = engine_manifest(&answers("flux", false), b.path()).unwrap_err();
        assert!(e.contains("has no flux install manifest") && e.contains("--gitops flux VERSION"), "{e}");
        let empty = bundle("argocd", "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: x\n");
        let e = engine_manifest(&answers("argocd", false), empty.path()).unwrap_err();
        assert!(e.contains("no Deployment in it"), "{e}");
    }

    #[test]
    fn what_changed_since_the_last_hand_off_is_named_in_apply_order() {
        let b = bundle("argocd", ARGO);
        let e = engine_manifest(&answers("argocd", false), b.path()).unwrap();
        let docs = |a: &str| {
            vec![("ConfigMap x/site".to_string(), a.to_string()), ("Secret x/db".to_string(), "p: 1".to_string())]
        };
        let first = stamp(&e, &docs("a: 1"));
        assert_eq!(first[0].0, "argocd 3.1.0 install manifest");
        assert!(first.iter().all(|(_, sum)| sum.len() == 64));
        let text = stamp_text(&first);
        assert_eq!(changes(&text, &first), (vec![], vec![]));
        // Nothing applied yet: everything, in order.
        let titles: Vec<String> = first.iter().map(|(t, _)| t.clone()).collect();
        assert_eq!(changes("", &first).0, titles);
        // One byte of one document.
        assert_eq!(changes(&text, &stamp(&e, &docs("a: 2"))).0, ["ConfigMap x/site"]);
        // A document the answers no longer make is named as left in place.
        let fewer = stamp(&e, &docs("a: 1")[..1]);
        assert_eq!(changes(&text, &fewer), (vec![], vec!["Secret x/db".to_string()]));
    }
}
