//! The cluster and hand-off phases over real SSH and systemd on lab hosts, with a TEST DOUBLE
//! of k3s as the bundle's binary (`tests/doubles/k3s`: it runs no Kubernetes and says so; no
//! k3s can be had here). What this shows: the roles put the files on every node, the nodes
//! start in rollout order (servers one at a time, each behind its gates, then the agent), the
//! kubeconfig is fetched, the engine's install manifest is applied on the first server, a
//! re-run starts and applies nothing, and a changed server restarts alone. That a real
//! cluster forms is the real-bundle test's (`tests/cluster.rs`, `GROUNDWORK_K3S_BUNDLE`).
//! Skipped with `SKIPPED:` where the lab cannot run; a failure under CI=true.

mod common;

use std::path::Path;

use common::double::{VERSION, double_bundle};
use common::lab;
use common::run::{groundwork, on};
use serde_json::Value;

const NODES: &[(&str, &str, &str)] = &[
    ("kx1", "10.77.0.103", "k3s-server"),
    ("kx2", "10.77.0.104", "k3s-server"),
    ("kx3", "10.77.0.105", "k3s-server"),
    ("kx4", "10.77.0.106", "k3s-agent"),
];

fn site(bundle: &Path, token: &Path) -> String {
    let key = lab::key();
    let mut text = "[site]\nname = \"kx\"\ninternal-domain = \"kx.groundwork.test\"\nexternal-domain = \"groundwork.test\"\n\
                    admin-email = \"ops@groundwork.test\"\n\n[network]\nsubnet = \"10.77.0.0/24\"\ngateway = \"10.77.0.1\"\n"
        .to_string();
    for (i, (name, address, role)) in NODES.iter().enumerate() {
        let roles = if i == 0 { format!("\"dns\", \"{role}\"") } else { format!("\"{role}\"") };
        text += &format!(
            "\n[[host]]\nname = \"{name}\"\naddress = \"{address}\"\nssh-key = \"{}\"\nroles = [{roles}]\n",
            key.display()
        );
    }
    text += &format!(
        "\n[k3s]\nversion = \"{VERSION}\"\nmode = \"ha\"\napi-endpoint = \"10.77.0.103\"\nairgap-bundle = \"{}\"\n\n\
         [gitops]\nengine = \"flux\"\nrepository = \"https://git.kx.groundwork.test/site.git\"\ntoken-file = \"{}\"\n",
        bundle.display(),
        token.display()
    );
    text
}

/// Every file under `dir`.
fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() { out.extend(walk(&p)) } else { out.push(p) }
    }
    out
}

/// Each node's starts: `(time, role)` lines the double wrote.
fn starts(host: &str) -> Vec<f64> {
    on(host, "cat /var/lib/k3s-double/starts 2>/dev/null || true")
        .lines()
        .filter_map(|l| l.split_whitespace().next()?.parse().ok())
        .collect()
}

#[test]
fn nodes_start_in_rollout_order_the_engine_is_applied_once_and_a_changed_server_restarts_alone() {
    let hosts: Vec<(&str, &str)> = NODES.iter().map(|(n, a, _)| (*n, *a)).collect();
    let names: Vec<&str> = hosts.iter().map(|(n, _)| *n).collect();
    lab::down(&names);
    let Some(_lab) = lab::exclusive(&hosts) else { return };
    let dir = tempfile::tempdir().unwrap();
    let bundle = dir.path().join("bundle");
    double_bundle(&bundle);
    let answers = dir.path().join("kx.toml");
    let token = dir.path().join("git-token");
    std::fs::write(&token, "kx-test-token-3f9a\n").unwrap();
    std::fs::write(&answers, site(&bundle, &token)).unwrap();
    let (answers, state) = (answers.to_str().unwrap(), dir.path().join("state"));
    // The double tells systemd it is ready from a child process (systemd-notify): the units
    // groundwork writes accept that only from the main process. Part of the double, not of k3s.
    for (h, _, role) in NODES {
        let unit = if *role == "k3s-agent" { "k3s-agent" } else { "k3s" };
        on(
            h,
            &format!(
                "mkdir -p /etc/systemd/system/{unit}.service.d && \
                 printf '[Service]\\nNotifyAccess=all\\n' > /etc/systemd/system/{unit}.service.d/test-double.conf"
            ),
        );
    }
    // What the engine's controllers answer once its manifest is applied (the double returns
    // it only after an apply): the recorded "ready" state of Flux's CRDs and controllers.
    let workloads = std::fs::read_to_string("tests/fixtures/handoff/flux-workloads-ready.json").unwrap();
    on(
        "kx1",
        &format!("mkdir -p /var/lib/k3s-double && cat > /var/lib/k3s-double/workloads.json <<'EOF'\n{workloads}\nEOF"),
    );
    // And what Flux's objects answer once reconciled (recorded states).
    for (file, fixture) in
        [("gitrepository.json", "gitrepository-ready.json"), ("kustomization.json", "kustomization-ready.json")]
    {
        let text = std::fs::read_to_string(format!("tests/fixtures/handoff/{fixture}")).unwrap();
        on("kx1", &format!("cat > /var/lib/k3s-double/{file} <<'EOF'\n{text}\nEOF"));
    }

    // plan --live: what the hand-off would apply, named, its secrets nowhere.
    let plan = groundwork(&state, &["plan", "--live", answers]);
    assert!(
        plan.all_text().contains(
            "hand-off would apply: flux 2.4.0 install manifest, Namespace groundwork-site, ConfigMap groundwork-site/site"
        ),
        "{}",
        plan.all_text()
    );
    assert!(!plan.all_text().contains("kx-test-token-3f9a"));

    let first = common::run::apply(answers, &state, &[]);
    eprintln!("first apply: {:.1} s, exit {}", first.secs, first.code);
    assert_eq!(first.code, 0, "{}", first.all_text());
    // Servers strictly one after the other, then the agent.
    let t: Vec<Vec<f64>> = NODES.iter().map(|(h, _, _)| starts(h)).collect();
    assert!(t.iter().all(|s| s.len() == 1), "each node started once: {t:?}");
    assert!(t[0][0] < t[1][0] && t[1][0] < t[2][0] && t[2][0] < t[3][0], "start order: {t:?}");
    for (h, _, _) in NODES {
        let s = first.step(h, "start k3s").unwrap_or_else(|| panic!("{h}: {}", first.all_text()));
        assert_eq!(s["status"], "changed", "{h}: {s}");
    }
    // Every other node joined with the first server's full token (its CA's hash in it),
    // written 0600 by the cluster phase; the token is in no output and no log.
    let server_token = on("kx1", "cat /var/lib/rancher/k3s/server/token");
    assert!(server_token.starts_with("K10") && server_token.contains("::server:"), "{server_token}");
    for h in ["kx2", "kx3", "kx4"] {
        assert_eq!(on(h, "cat /etc/rancher/k3s/join-token"), server_token, "{h}");
        assert_eq!(on(h, "stat -c %a /etc/rancher/k3s/join-token").trim(), "600", "{h}");
    }
    assert!(!first.all_text().contains(server_token.trim()));
    // The kubeconfig, its server the API endpoint.
    let path = groundwork(&state, &["kubeconfig", answers]);
    let kubeconfig = std::fs::read_to_string(path.stdout.trim()).unwrap();
    assert!(kubeconfig.contains("server: https://10.77.0.103:6443"), "{kubeconfig}");
    // The engine's manifest went to the first server, once, server-side.
    let applied = on("kx1", "cat /var/lib/k3s-double/applied.yaml");
    assert!(applied.contains("apply --server-side --force-conflicts --field-manager=groundwork -f -"), "{applied}");
    assert!(applied.contains("name: gitrepositories.source.toolkit.fluxcd.io"), "{applied}");
    for step in ["install flux 2.4.0", "site contract", "repository access", "sync objects"] {
        assert_eq!(first.step("kx1", step).map(|s| s["status"].clone()), Some("changed".into()), "{step}");
    }
    // Then the site contract, the repository access and the sync objects, in that order.
    let at = |what: &str| applied.find(what).unwrap_or_else(|| panic!("{what} was not applied: {applied}"));
    let (crd, contract, access, sync) = (
        at("name: gitrepositories.source.toolkit.fluxcd.io"),
        at("name: \"groundwork-site\""),
        at("kind: \"Secret\"\nmetadata:\n  name: \"flux-system\""),
        at("kind: \"Kustomization\""),
    );
    assert!(crd < contract && contract < access && access < sync, "order: {applied}");
    assert!(applied.contains("kx-test-token-3f9a"), "the token reaches the cluster's Secret");
    // ...and nothing else: not the run's log, not its output.
    assert!(!first.all_text().contains("kx-test-token-3f9a"));
    let logs: Vec<_> = walk(&state).into_iter().filter(|p| p.extension().is_some_and(|e| e == "log")).collect();
    assert!(!logs.is_empty(), "no run log under {}", state.display());
    for log in logs {
        let text = std::fs::read_to_string(&log).unwrap();
        assert!(!text.contains("kx-test-token-3f9a") && !text.contains(server_token.trim()), "{}", log.display());
    }
    for h in ["kx2", "kx3", "kx4"] {
        assert!(on(h, "ls /var/lib/k3s-double/applied.yaml 2>&1 || true").contains("No such file"));
    }

    // verify: every k3s row passes, and the hand-off's.
    let v = groundwork(&state, &["verify", "--json", answers]);
    let doc: Value = serde_json::from_str(&v.stdout).unwrap_or_else(|e| panic!("{e}: {}", v.all_text()));
    let rows = doc["rows"].as_array().unwrap();
    let row = |service: &str, host: &str, check: &str| {
        rows.iter().find(|r| r["service"] == service && r["host"] == host && r["check"] == check).cloned()
    };
    for (h, _, role) in NODES {
        assert_eq!(row("k3s", h, "node Ready").map(|r| r["result"].clone()), Some("ok".into()), "{h}: {doc}");
        if *role == "k3s-server" {
            assert_eq!(row("k3s", h, "etcd voter").map(|r| r["result"].clone()), Some("ok".into()), "{h}: {doc}");
        }
    }
    assert_eq!(row("gitops", "kx1", "controllers available").map(|r| r["result"].clone()), Some("ok".into()), "{doc}");
    let source = row("gitops", "kx1", "source fetched (GitRepository)").expect("a GitRepository row");
    assert_eq!(source["result"], "ok", "{source}");
    assert_eq!(source["detail"], "Ready at main@sha1:5d2c8a1e0b7f", "{source}");
    let applied_row = row("gitops", "kx1", "Kustomization applied").expect("a Kustomization row");
    assert_eq!(applied_row["result"], "ok", "{applied_row}");
    assert!(
        first.all_text().contains("hand-off: GitRepository ready at main@sha1:5d2c8a1e0b7f"),
        "{}",
        first.all_text()
    );
    assert_eq!(v.code, 0, "{}", v.all_text());

    // Again: nothing changes, nothing starts, nothing is applied.
    let again = common::run::apply(answers, &state, &[]);
    eprintln!("re-run: {:.2} s", again.secs);
    assert_eq!(again.code, 0, "{}", again.all_text());
    for (h, _, _) in NODES {
        assert_eq!(again.changed(h), 0, "{h}: {:?}", again.changed_steps(h));
        assert_eq!(starts(h).len(), 1, "{h} was restarted");
    }
    assert_eq!(on("kx1", "cat /var/lib/k3s-double/applied.yaml"), applied, "the engine was applied again");

    // One namespace more for the contract: plan --live names only its objects, apply adds
    // them; back to the first answers, they are named as left in the cluster.
    let more = dir.path().join("kx-more.toml");
    let text = std::fs::read_to_string(answers).unwrap();
    std::fs::write(&more, text.replace("[gitops]\n", "[gitops]\ncontract-namespaces = [\"apps\"]\n")).unwrap();
    let more = more.to_str().unwrap();
    let plan = groundwork(&state, &["plan", "--live", more]);
    assert!(
        plan.all_text().contains("hand-off would apply: Namespace apps, ConfigMap apps/site\n"),
        "{}",
        plan.all_text()
    );
    let grown = common::run::apply(more, &state, &[]);
    assert_eq!(grown.code, 0, "{}", grown.all_text());
    assert!(on("kx1", "cat /var/lib/k3s-double/applied.yaml").contains("namespace: \"apps\""));
    let back = groundwork(&state, &["plan", "--live", answers]);
    assert!(
        back.all_text()
            .contains("hand-off: no longer in the answers, left in the cluster: Namespace apps, ConfigMap apps/site"),
        "{}",
        back.all_text()
    );

    // A hand edit of one server's config.yaml that k3s never read: written back, and
    // nothing restarts (k3s runs with what it has again).
    on("kx2", "printf '# edited by hand\\n' >> /etc/rancher/k3s/config.yaml");
    let repair = common::run::apply(answers, &state, &[]);
    eprintln!("repair: {:.1} s", repair.secs);
    assert_eq!(repair.code, 0, "{}", repair.all_text());
    assert_eq!(repair.changed_steps("kx2"), ["k3s-server / k3s configuration (secret: the token)"]);
    for (h, _, _) in NODES {
        assert_eq!(starts(h).len(), 1, "{h}: {:?}", repair.changed_steps(h));
    }

    // The same edit, and k3s restarted by hand: it runs with the edited file, so the
    // repaired file needs a restart: that server alone, behind the gates.
    on("kx2", "printf '# edited by hand\\n' >> /etc/rancher/k3s/config.yaml && systemctl restart k3s");
    assert_eq!(starts("kx2").len(), 2);
    let repair = common::run::apply(answers, &state, &[]);
    eprintln!("repair with a restart: {:.1} s", repair.secs);
    assert_eq!(repair.code, 0, "{}", repair.all_text());
    assert_eq!(repair.step("kx2", "restart k3s").map(|s| s["status"].clone()), Some("changed".into()));
    for (h, _, _) in NODES {
        assert_eq!(starts(h).len(), if *h == "kx2" { 3 } else { 1 }, "{h}: {:?}", repair.changed_steps(h));
    }
    let again = common::run::apply(answers, &state, &[]);
    assert!(NODES.iter().all(|(h, _, _)| again.changed(h) == 0), "{}", again.all_text());
    assert_eq!(starts("kx2").len(), 3, "restarted again");

    // The first server's token changes (a first server built anew has a new CA): every other
    // node gets the new one and restarts, one server at a time; the first server does not.
    on(
        "kx1",
        "sed -i 's/^K10[0-9a-f]*::/K10000000000000000000000000000000000000000000000000000000000000000::/' /var/lib/rancher/k3s/server/token",
    );
    let rotated = common::run::apply(answers, &state, &[]);
    assert_eq!(rotated.code, 0, "{}", rotated.all_text());
    let new_token = on("kx1", "cat /var/lib/rancher/k3s/server/token");
    for (h, before) in [("kx1", 1), ("kx2", 3), ("kx3", 1), ("kx4", 1)] {
        let restarted = h != "kx1";
        assert_eq!(starts(h).len(), before + usize::from(restarted), "{h}: {}", rotated.all_text());
        if restarted {
            assert_eq!(on(h, "cat /etc/rancher/k3s/join-token"), new_token, "{h}");
        }
    }
    assert!(!rotated.all_text().contains(new_token.trim()));
}
