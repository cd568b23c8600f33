//! The k3s roles' rendered configuration, per node, against golden files in
//! `tests/golden/k3s/` (single server, HA first and joining servers, an agent): no host, no
//! root. `GROUNDWORK_UPDATE_GOLDEN=1` rewrites the files; review the diff. And the cluster
//! preflight on lab hosts (listeners really opened, paths really cut).

mod common;

use std::path::Path;

use common::lab;
use common::run::{fresh, groundwork, on};
use serde_json::Value;

use groundwork::answers::{self, model::Answers};
use groundwork::engine::context;
use groundwork::engine::facts::Facts;
use groundwork::playbook::catalog::Catalog;
use groundwork::state::Secrets;

fn load(path: &str) -> Answers {
    answers::load_file(Path::new(path)).unwrap_or_else(|r| panic!("{path}: {:?}", r.one_line_each())).answers
}

/// `role/config.yaml.j2` rendered for `host`, with a known token.
fn config(a: &Answers, role: &str, host: &str) -> String {
    template(a, role, "config.yaml.j2", host)
}

/// `role/name` rendered for `host`, with a known token.
fn template(a: &Answers, role: &str, name: &str, host: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("secrets.toml");
    std::fs::write(&file, "[k3s]\ntoken = \"golden-token-not-a-secret\"\n").unwrap();
    std::fs::set_permissions(&file, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let mut secrets = Secrets::load(&file).unwrap();
    secrets.ensure_for(a);
    let catalog = Catalog::load(None).unwrap();
    let env = context::environment(&catalog);
    let site = context::site_context(a, &secrets);
    let ctx = context::host_context(&site, host, &Facts::default());
    env.get_template(&format!("{role}/{name}"))
        .unwrap()
        .render(&ctx)
        .unwrap_or_else(|e| panic!("{role} for {host}: {e:#}"))
}

fn golden(name: &str, got: &str) {
    let path = Path::new("tests/golden/k3s").join(name);
    if std::env::var_os("GROUNDWORK_UPDATE_GOLDEN").is_some() {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, got).unwrap();
    }
    let want = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert_eq!(got, want, "{} differs (GROUNDWORK_UPDATE_GOLDEN=1 rewrites it)", path.display());
}

#[test]
fn a_single_server_has_no_etcd_and_names_itself() {
    let a = load("wizard/examples/single-server.toml");
    let server = a.hosts.iter().find(|h| h.roles.iter().any(|r| r.as_str() == "k3s-server")).unwrap();
    let got = config(&a, "k3s-server", &server.name);
    assert!(!got.contains("cluster-init") && !got.contains("\nserver:"), "{got}");
    golden("single-server.yaml", &got);
}

#[test]
fn ha_servers_init_once_and_join_through_the_first() {
    let a = load("wizard/examples/proxmox-k3s.toml");
    let first = config(&a, "k3s-server", "k3s-s1");
    assert!(first.contains("\ncluster-init: true\n") && !first.contains("\nserver:"), "{first}");
    golden("ha-first-server.yaml", &first);
    let second = config(&a, "k3s-server", "k3s-s2");
    assert!(!second.contains("cluster-init") && second.contains("\nserver: \"https://10.20.1.11:6443\"\n"), "{second}");
    golden("ha-joining-server.yaml", &second);
    // The first server defines the secret; a joiner reads the first server's full token (its
    // CA's hash in it) from the file the cluster phase writes.
    assert!(first.contains("\ntoken: \"golden-token-not-a-secret\"\n") && !first.contains("token-file"), "{first}");
    assert!(
        second.contains("\ntoken-file: \"/etc/rancher/k3s/join-token\"\n") && !second.contains("\ntoken:"),
        "{second}"
    );
    // What every server must share (k3s refuses to start on a mismatch) is the same.
    let shared = |c: &str| {
        c.lines()
            .filter(|l| {
                ["cluster-cidr", "service-cidr", "disable", "embedded-registry"].iter().any(|k| l.starts_with(k))
            })
            .map(str::to_string)
            .collect::<Vec<_>>()
    };
    assert_eq!(shared(&first), shared(&second));
    assert_eq!(shared(&first), shared(&config(&a, "k3s-server", "k3s-s3")));
}

#[test]
fn an_agent_joins_through_the_api_endpoint() {
    let a = load("wizard/examples/proxmox-k3s.toml");
    let agent = a.hosts.iter().find(|h| h.roles.iter().any(|r| r.as_str() == "k3s-agent")).unwrap();
    let got = config(&a, "k3s-agent", &agent.name);
    assert!(got.contains("\nserver: \"https://k3s.cluster.example.org:6443\"\n"), "{got}");
    golden("agent.yaml", &got);
}

#[test]
fn the_units_start_k3s_with_no_flags_and_no_start_timeout() {
    let a = load("wizard/examples/proxmox-k3s.toml");
    let server = template(&a, "k3s-server", "k3s.service.j2", "k3s-s1");
    assert!(
        server.contains("\nExecStart=/usr/local/bin/k3s server\n") && server.contains("\nTimeoutStartSec=0\n"),
        "{server}"
    );
    golden("k3s.service", &server);
    let agent = template(&a, "k3s-agent", "k3s-agent.service.j2", "k3s-a1");
    assert!(agent.contains("\nExecStart=/usr/local/bin/k3s agent\n"), "{agent}");
    golden("k3s-agent.service", &agent);
}

#[test]
fn values_land_as_yaml_scalars() {
    let mut a = load("wizard/examples/proxmox-k3s.toml");
    a.k3s.as_mut().unwrap().api_endpoint = Some("k3s.cluster.example.org\": x #".into());
    let got = config(&a, "k3s-server", "k3s-s1");
    assert!(got.contains(r#"tls-san: ["k3s.cluster.example.org\": x #", "k3s-s1.cluster.example.org"]"#), "{got}");
}

/// The k3s role's steps for `host` as the engine renders them before the facts: one line per
/// step, `name | dest <- source` for files (with `when`, if any).
fn role_steps(a: &Answers, role: &str, host: &str) -> String {
    let catalog = Catalog::load(None).unwrap();
    let env = context::environment(&catalog);
    let site = context::site_context(a, &Secrets::default());
    let ctx = context::host_context(&site, host, &Facts::default());
    let spec = catalog.get(role).unwrap();
    let mut out = String::new();
    for (step, name, rendered) in context::role_steps(&env, &ctx, spec).unwrap() {
        let when = step.when.as_deref().map(|w| format!("  [when: {w}]")).unwrap_or_default();
        let what = match &rendered {
            groundwork::engine::steps::Step::File(f) => match &f.source {
                groundwork::playbook::step::Source::Local(p) => format!("{} <- {p}", f.dest),
                _ => f.dest.clone(),
            },
            groundwork::engine::steps::Step::Directory(d) => format!("{}/", d.path),
            _ => String::new(),
        };
        out.push_str(&format!("{name} | {what}{when}\n"));
    }
    out
}

/// A bundle directory with a manifest listing two GitOps image archives (no files needed:
/// the steps are rendered, not run).
fn bundle_with_archives(dir: &Path) {
    let file = |path: &str, image: Option<&str>| {
        let mut f = serde_json::json!({"path": path, "what": "x", "version": "2.4.0", "source": "test", "sha256": "00", "size": 1});
        if let Some(i) = image {
            f["image"] = i.into();
        }
        f
    };
    let manifest = serde_json::json!({
        "format": 1, "arch": "amd64", "k3s": {"version": "v1.35.6+k3s1"},
        "gitops": {"engine": "flux", "version": "2.4.0", "images": ["ghcr.io/fluxcd/kustomize-controller:v1.4.0", "ghcr.io/fluxcd/source-controller:v1.4.1"]},
        "files": [file("k3s/k3s", None), file("k3s/k3s-airgap-images-amd64.tar.zst", None), file("k3s/sha256sum-amd64.txt", None),
                  file("gitops/flux-install.yaml", None),
                  file("gitops/images/ghcr.io_fluxcd_kustomize-controller_v1.4.0.tar", Some("ghcr.io/fluxcd/kustomize-controller:v1.4.0")),
                  file("gitops/images/ghcr.io_fluxcd_source-controller_v1.4.1.tar", Some("ghcr.io/fluxcd/source-controller:v1.4.1"))],
    });
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join("manifest.json"), serde_json::to_vec_pretty(&manifest).unwrap()).unwrap();
}

#[test]
fn every_gitops_image_archive_of_the_bundle_is_uploaded_to_the_images_directory() {
    let tmp = tempfile::tempdir().unwrap();
    let bundle = tmp.path().join("bundle");
    bundle_with_archives(&bundle);
    let mut a = load("wizard/examples/proxmox-k3s.toml");
    a.k3s.as_mut().unwrap().airgap_bundle = Some(bundle.clone());
    let b = bundle.display().to_string();
    let server = role_steps(&a, "k3s-server", "k3s-s1").replace(&b, "BUNDLE");
    golden("server-steps.txt", &server);
    let agent = role_steps(&a, "k3s-agent", "k3s-a1").replace(&b, "BUNDLE");
    golden("agent-steps.txt", &agent);
    // One upload per archive, into the directory k3s imports from at its first start, before
    // the configuration and the unit (so before the cluster phase starts anything).
    for image in ["ghcr.io/fluxcd/kustomize-controller:v1.4.0", "ghcr.io/fluxcd/source-controller:v1.4.1"] {
        let file = image.replace(['/', ':'], "_");
        let line = format!(
            "GitOps image {image} (from the bundle) | /var/lib/rancher/k3s/agent/images/{file}.tar <- BUNDLE/gitops/images/{file}.tar"
        );
        let at = server.lines().position(|l| l == line).unwrap_or_else(|| panic!("{line}\n{server}"));
        assert!(at < server.lines().position(|l| l.starts_with("k3s unit")).unwrap(), "{server}");
        assert!(
            agent.lines().any(|l| l.starts_with(&line) && l.ends_with("[when: not k3s.embedded_registry]")),
            "{agent}"
        );
    }

    // no archives in the bundle (no --gitops, or no bundle yet): no such step
    let mut a = load("wizard/examples/proxmox-k3s.toml");
    a.k3s.as_mut().unwrap().airgap_bundle = Some(tmp.path().join("not-made"));
    assert!(!role_steps(&a, "k3s-server", "k3s-s1").contains("GitOps image"));
}

/// Three lab hosts as an HA control plane (never started: only the ports k3s would use are
/// opened, by the preflight, for a few seconds).
const NODES: &[(&str, &str)] = &[("kr1", "10.77.0.84"), ("kr2", "10.77.0.85"), ("kr3", "10.77.0.86")];

fn preflight_answers(dir: &Path) -> String {
    let hosts: String = NODES
        .iter()
        .map(|(n, ip)| {
            format!(
                "[[host]]\nname = \"{n}\"\naddress = \"{ip}\"\nssh-key = \"{}\"\nroles = [\"k3s-server\"]\n\n",
                lab::key().display()
            )
        })
        .collect();
    let text = format!(
        "[site]\nname = \"reach\"\ninternal-domain = \"reach.groundwork.test\"\nexternal-domain = \"groundwork.test\"\n\
         admin-email = \"ops@groundwork.test\"\n\n[network]\nsubnet = \"10.77.0.0/24\"\ngateway = \"10.77.0.1\"\n\n{hosts}\
         [k3s]\nversion = \"v1.35.6+k3s1\"\nmode = \"ha\"\nembedded-registry = true\n"
    );
    let path = dir.join("reach.toml");
    std::fs::write(&path, text).unwrap();
    path.to_string_lossy().into_owned()
}

fn preflight(answers: &str, state: &Path) -> (i32, Value) {
    let run = groundwork(state, &["preflight", "--json", answers]);
    let doc: Value =
        serde_json::from_str(&run.stdout).unwrap_or_else(|e| panic!("{e}: {}\n{}", run.stdout, run.stderr));
    (run.code, doc)
}

fn failed_paths(doc: &Value) -> Vec<String> {
    doc["paths"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["result"] != "ok")
        .map(|p| {
            format!(
                "{}->{} {}/{} {}",
                p["from"].as_str().unwrap(),
                p["to"].as_str().unwrap(),
                p["port"],
                p["proto"].as_str().unwrap(),
                p["result"].as_str().unwrap()
            )
        })
        .collect()
}

#[test]
fn the_preflight_opens_the_ports_between_nodes_and_names_what_is_cut_or_taken() {
    let Some(_lab) = lab::exclusive(NODES) else { return };
    let t = std::time::Instant::now();
    fresh(NODES);
    eprintln!("hosts up in {:.1} s", t.elapsed().as_secs_f64());
    let dir = tempfile::tempdir().unwrap();
    let answers = preflight_answers(dir.path());
    let state = dir.path().join("state");

    // 1. Every path open: 3 servers, HA, the embedded registry: per ordered pair 6443, 2379,
    //    2380, 10250, 5001 (tcp) and 8472 (udp).
    let t = std::time::Instant::now();
    let (code, doc) = preflight(&answers, &state);
    eprintln!("preflight in {:.1} s: {} paths", t.elapsed().as_secs_f64(), doc["paths"].as_array().unwrap().len());
    assert_eq!(code, 0, "{doc:#}");
    assert_eq!(doc["paths"].as_array().unwrap().len(), 6 * 6, "{doc:#}");
    assert!(failed_paths(&doc).is_empty(), "{:?}", failed_paths(&doc));
    assert_eq!(doc["fits"].as_array().unwrap().len(), 3);
    for (n, _) in NODES {
        // Nothing is left: no listener, no marker directory.
        let left = on(n, "ls -d /run/groundwork-reach-* 2>/dev/null; pgrep -f '[s]ystemd-socket-activate' || true");
        assert!(left.trim().is_empty(), "{n} kept {left}");
    }

    // 2. kr3 cannot reach kr1 (a blackhole route: the answers never get back either way), and
    //    something already listens on kr2's kubelet port.
    let t = std::time::Instant::now();
    on("kr3", "ip route add blackhole 10.77.0.84/32");
    on("kr2", "setsid timeout 60 systemd-socket-activate -l 0.0.0.0:10250 --accept cat </dev/null >/dev/null 2>&1 &");
    std::thread::sleep(std::time::Duration::from_millis(300));
    eprintln!("path cut and port taken in {:.1} s", t.elapsed().as_secs_f64());
    let t = std::time::Instant::now();
    let (code, doc) = preflight(&answers, &state);
    eprintln!("preflight with failures in {:.1} s", t.elapsed().as_secs_f64());
    assert_eq!(code, 1, "{doc:#}");
    let failed = failed_paths(&doc);
    eprintln!("with a cut path and a taken port:\n  {}", failed.join("\n  "));
    for want in [
        "kr3->kr1 6443/tcp unreachable",
        "kr1->kr3 2380/tcp unreachable",
        "kr3->kr1 8472/udp unreachable",
        "kr1->kr2 10250/tcp busy",
        "kr3->kr2 10250/tcp busy",
    ] {
        assert!(failed.iter().any(|f| f == want), "missing {want} in {failed:?}");
    }
    // Only those: kr1<->kr3 (5 TCP ports each way), kr3's datagrams to kr1 (kr1's to kr3
    // arrive: UDP needs no way back), and the taken port (from 2 nodes).
    assert_eq!(failed.len(), 10 + 1 + 2, "{failed:?}");
    let busy = doc["paths"].as_array().unwrap().iter().find(|p| p["result"] == "busy").unwrap();
    assert!(busy["detail"].as_str().unwrap().contains("systemd-socket"), "{busy}");
    on("kr3", "ip route del blackhole 10.77.0.84/32");
    on("kr2", "pkill -f '[s]ystemd-socket-activate -l 0.0.0.0:10250' || true");
}

/// A test-made bundle: a "k3s binary" and an "image tarball" of random bytes (never started:
/// this machine cannot have a real k3s, see the SKIPPED test below), with the sum list and a
/// manifest as `groundwork bundle` writes them.
fn fake_bundle(dir: &Path, version: &str, arch: &str) -> (Vec<u8>, Vec<u8>) {
    use sha2::{Digest, Sha256};
    let k = dir.join("k3s");
    std::fs::create_dir_all(&k).unwrap();
    let random = |n: usize| (0..n).map(|_| rand::random::<u8>()).collect::<Vec<u8>>();
    let (binary, images) = (random(3 << 20), random(5 << 20));
    let hex = |b: &[u8]| Sha256::digest(b).iter().map(|x| format!("{x:02x}")).collect::<String>();
    let name = if arch == "amd64" { "k3s".to_string() } else { format!("k3s-{arch}") };
    let tarball = format!("k3s-airgap-images-{arch}.tar.zst");
    std::fs::write(k.join(&name), &binary).unwrap();
    std::fs::write(k.join(&tarball), &images).unwrap();
    let sums = format!("{}  {name}\n{}  {tarball}\n", hex(&binary), hex(&images));
    std::fs::write(k.join(format!("sha256sum-{arch}.txt")), &sums).unwrap();
    let entry = |path: &str, what: &str, bytes: &[u8]| {
        serde_json::json!({"path": path, "what": what, "version": version, "source": "test-made",
                           "sha256": hex(bytes), "size": bytes.len()})
    };
    let manifest = serde_json::json!({
        "format": 1, "arch": arch, "k3s": {"version": version}, "gitops": null,
        "files": [entry(&format!("k3s/{name}"), "k3s binary", &binary),
                  entry(&format!("k3s/{tarball}"), "air-gap images", &images),
                  entry(&format!("k3s/sha256sum-{arch}.txt"), "sha256 list", sums.as_bytes())],
    });
    std::fs::write(dir.join("manifest.json"), serde_json::to_vec_pretty(&manifest).unwrap()).unwrap();
    (binary, images)
}

/// A k3s server and an agent on lab hosts: the bundle's files reach both, a re-run sends
/// nothing, and the cluster phase refuses to start a binary that does not run (the test-made
/// one) before anything starts.
#[test]
fn the_bundles_files_reach_the_nodes_once_and_a_binary_that_does_not_run_is_never_started() {
    const HOSTS: &[(&str, &str)] = &[("kf1", "10.77.0.87"), ("kf2", "10.77.0.88")];
    let Some(_lab) = lab::exclusive(HOSTS) else { return };
    fresh(HOSTS);
    let dir = tempfile::tempdir().unwrap();
    let bundle = dir.path().join("bundle");
    let (binary, images) = fake_bundle(&bundle, "v1.35.6+k3s1", "amd64");
    let key = lab::key();
    let text = format!(
        "[site]\nname = \"kfiles\"\ninternal-domain = \"kf.groundwork.test\"\nexternal-domain = \"groundwork.test\"\n\
         admin-email = \"ops@groundwork.test\"\n\n[network]\nsubnet = \"10.77.0.0/24\"\ngateway = \"10.77.0.1\"\n\n\
         [[host]]\nname = \"kf1\"\naddress = \"10.77.0.87\"\nssh-key = \"{k}\"\nroles = [\"k3s-server\"]\n\n\
         [[host]]\nname = \"kf2\"\naddress = \"10.77.0.88\"\nssh-key = \"{k}\"\nroles = [\"k3s-agent\"]\n\n\
         [k3s]\nversion = \"v1.35.6+k3s1\"\nairgap-bundle = \"{b}\"\n",
        k = key.display(),
        b = bundle.display()
    );
    let answers = dir.path().join("kfiles.toml");
    std::fs::write(&answers, text).unwrap();
    let state = dir.path().join("state");
    let answers = answers.to_str().unwrap();

    // A bundle for another architecture: each node is refused at its facts, before any upload.
    let arm = dir.path().join("bundle-arm64");
    fake_bundle(&arm, "v1.35.6+k3s1", "arm64");
    let arm_answers = dir.path().join("kfiles-arm64.toml");
    let text = std::fs::read_to_string(answers).unwrap();
    std::fs::write(&arm_answers, text.replace(&bundle.display().to_string(), &arm.display().to_string())).unwrap();
    let wrong = common::run::apply(arm_answers.to_str().unwrap(), &dir.path().join("state-arm64"), &[]);
    assert_eq!(wrong.code, 1, "{}", wrong.all_text());
    for (h, role) in [("kf1", "k3s-server"), ("kf2", "k3s-agent")] {
        let failure = &wrong.finished()["hosts"][h]["failure"];
        assert_eq!(failure["phase"], "facts", "{h}: {}", wrong.all_text());
        let want = format!("role {role} uploads binaries built for arm64, and this host is amd64");
        assert!(failure["cause"].as_str().unwrap().contains(&want), "{h}: {failure}");
        assert!(on(h, "ls /usr/local/bin/k3s 2>&1 || true").contains("No such file"), "{h} got the arm64 binary");
    }

    // A path cut between the nodes: the preflight refuses before anything is installed.
    on("kf2", "ip route add blackhole 10.77.0.87/32");
    let cut = common::run::apply(answers, &state, &[]);
    on("kf2", "ip route del blackhole 10.77.0.87/32");
    assert_eq!(cut.code, 2, "{}", cut.all_text());
    assert!(cut.stderr.contains("the cluster preflight failed; nothing was installed"), "{}", cut.stderr);
    assert!(
        cut.stderr.contains("FAIL  kf2 -> kf1 6443/tcp (the API and the supervisor): no connection within 3 s"),
        "{}",
        cut.stderr
    );
    for h in ["kf1", "kf2"] {
        assert!(on(h, "ls /usr/local/bin/k3s 2>&1 || true").contains("No such file"), "{h} got files");
    }

    let first = common::run::apply(answers, &state, &[]);
    eprintln!("first apply: {:.1} s, exit {}", first.secs, first.code);
    assert!(first.stdout.contains("cluster preflight"), "{}", first.all_text());
    assert_eq!(first.code, 1, "{}", first.all_text());
    for h in ["kf1", "kf2"] {
        for step in ["k3s binary (from the bundle)", "air-gap images (from the bundle)"] {
            let s = first.step(h, step).unwrap_or_else(|| panic!("{h}: {step}: {}", first.all_text()));
            assert_eq!(s["status"], "changed", "{h}: {s}");
        }
        use sha2::{Digest, Sha256};
        let hex = |b: &[u8]| Sha256::digest(b).iter().map(|x| format!("{x:02x}")).collect::<String>();
        let on_host =
            on(h, "sha256sum /usr/local/bin/k3s /var/lib/rancher/k3s/agent/images/k3s-airgap-images-amd64.tar.zst");
        assert!(on_host.contains(&hex(&binary)) && on_host.contains(&hex(&images)), "{h}: {on_host}");
        assert_eq!(on(h, "stat -c %a /etc/rancher/k3s/config.yaml").trim(), "600");
        let token_line = if h == "kf1" { "^token: " } else { "^token-file: " };
        assert_eq!(on(h, &format!("grep -c '{token_line}' /etc/rancher/k3s/config.yaml")).trim(), "1", "{h}");
    }
    assert!(on("kf1", "cat /etc/systemd/system/k3s.service").contains("ExecStart=/usr/local/bin/k3s server"));
    assert!(on("kf2", "cat /etc/systemd/system/k3s-agent.service").contains("ExecStart=/usr/local/bin/k3s agent"));
    // The cluster phase looked at the binary first and started nothing.
    let failure = &first.finished()["hosts"]["kf1"]["failure"];
    assert_eq!(failure["phase"], "cluster", "{}", first.all_text());
    assert!(failure["cause"].as_str().unwrap().starts_with("the k3s binary on kf1 does not run"), "{failure}");
    for (h, unit) in [("kf1", "k3s"), ("kf2", "k3s-agent")] {
        assert_ne!(on(h, &format!("systemctl is-active {unit} || true")).trim(), "active", "{h} started {unit}");
        assert!(on(h, "ls /var/lib/groundwork/k3s.started 2>&1 || true").contains("No such file"));
    }

    // Again: nothing is sent (the sums match), the same refusal.
    let again = common::run::apply(answers, &state, &[]);
    eprintln!("second apply: {:.1} s, exit {}", again.secs, again.code);
    assert_eq!(again.code, 1, "{}", again.all_text());
    for h in ["kf1", "kf2"] {
        assert_eq!(again.changed(h), 0, "{h}: {:?}", again.changed_steps(h));
    }
    assert_eq!(again.finished()["hosts"]["kf1"]["failure"]["phase"], "cluster");
}

/// The answers of a k3s site on lab hosts: `(name, address, roles)`, the first one serves DNS.
fn k3s_site(name: &str, nodes: &[(&str, &str, &str)], mode: &str, version: &str, bundle: &Path) -> String {
    let key = lab::key();
    let mut text = format!(
        "[site]\nname = \"{name}\"\ninternal-domain = \"{name}.groundwork.test\"\nexternal-domain = \"groundwork.test\"\n\
         admin-email = \"ops@groundwork.test\"\n\n[network]\nsubnet = \"10.77.0.0/24\"\ngateway = \"10.77.0.1\"\n"
    );
    for (i, (host, address, role)) in nodes.iter().enumerate() {
        let roles = if i == 0 { format!("\"dns\", \"{role}\"") } else { format!("\"{role}\"") };
        text += &format!(
            "\n[[host]]\nname = \"{host}\"\naddress = \"{address}\"\nssh-key = \"{}\"\nroles = [{roles}]\n",
            key.display()
        );
    }
    text += &format!("\n[k3s]\nversion = \"{version}\"\nmode = \"{mode}\"\nairgap-bundle = \"{}\"\n", bundle.display());
    text
}

/// `systemctl show -p InvocationID` of each node's unit: a new one means it was (re)started.
fn invocations(nodes: &[(&str, &str, &str)]) -> Vec<String> {
    nodes
        .iter()
        .map(|(h, _, role)| {
            let unit = if *role == "k3s-agent" { "k3s-agent" } else { "k3s" };
            on(h, &format!("systemctl show -p InvocationID --value {unit}")).trim().to_string()
        })
        .collect()
}

/// `groundwork verify --json`: every row ok, and each k3s check present for its nodes.
fn verify_cluster(answers: &str, state: &Path, nodes: &[(&str, &str, &str)], ha: bool) {
    let run = common::run::groundwork(state, &["verify", "--json", answers]);
    let doc: Value = serde_json::from_str(&run.stdout).unwrap_or_else(|e| panic!("{e}: {}", run.all_text()));
    eprintln!("{}", serde_json::to_string_pretty(&doc["rows"]).unwrap());
    assert_eq!(run.code, 0, "{}", run.all_text());
    assert_eq!(doc["ok"], true, "{doc}");
    let rows = doc["rows"].as_array().unwrap();
    let has = |host: &str, check: &str| {
        rows.iter().any(|r| r["service"] == "k3s" && r["host"] == host && r["check"] == check && r["result"] == "ok")
    };
    let first = nodes[0].0;
    assert!(has(first, "API ready (/readyz)") && has(first, "CoreDNS available"), "{doc}");
    for (h, _, role) in nodes {
        assert!(has(h, "node Ready"), "{h}: {doc}");
        if ha && *role == "k3s-server" {
            assert!(has(h, "etcd voter"), "{h}: {doc}");
        }
    }
}

/// With a real air-gap bundle (`GROUNDWORK_K3S_BUNDLE`, made by `groundwork bundle` on a
/// connected machine) on lab hosts fit for k3s: a single server, then HA (3 servers and an
/// agent) converge and verify; a re-run changes and restarts nothing; a hand edit of one
/// server's config.yaml is repaired and restarts that server alone.
#[test]
fn a_real_bundle_builds_single_and_ha_clusters_and_a_rerun_restarts_only_what_changed() {
    let Some(bundle) = std::env::var_os("GROUNDWORK_K3S_BUNDLE").map(std::path::PathBuf::from) else {
        common::lab::skip(
            "no k3s bundle (set GROUNDWORK_K3S_BUNDLE): no k3s binary can be had on this machine \
             (not in Debian 12, no Internet), and a made-up one would prove nothing about a cluster",
        );
        return;
    };
    let manifest: Value = serde_json::from_slice(&std::fs::read(bundle.join("manifest.json")).unwrap()).unwrap();
    let version = manifest["k3s"]["version"].as_str().expect("the bundle's k3s version").to_string();
    let dir = tempfile::tempdir().unwrap();

    // One server (and the site's DNS on it).
    const SINGLE: &[(&str, &str, &str)] = &[("ks1", "10.77.0.93", "k3s-server")];
    {
        let hosts: Vec<(&str, &str)> = SINGLE.iter().map(|(n, a, _)| (*n, *a)).collect();
        let Some(_lab) = lab::exclusive_k3s(&hosts) else { return };
        let answers = dir.path().join("ksingle.toml");
        std::fs::write(&answers, k3s_site("ksingle", SINGLE, "single", &version, &bundle)).unwrap();
        let (answers, state) = (answers.to_str().unwrap(), dir.path().join("state-single"));
        let first = common::run::apply(answers, &state, &[]);
        eprintln!("single server, first apply: {:.1} s", first.secs);
        assert_eq!(first.code, 0, "{}", first.all_text());
        verify_cluster(answers, &state, SINGLE, false);
        let path = groundwork(&state, &["kubeconfig", answers]);
        assert_eq!(path.code, 0, "{}", path.all_text());
        let path = Path::new(path.stdout.trim());
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(path).unwrap().permissions().mode() & 0o777, 0o600);
        assert!(std::fs::read_to_string(path).unwrap().contains("server: https://"), "{}", path.display());
        let before = invocations(SINGLE);
        let again = common::run::apply(answers, &state, &[]);
        eprintln!("single server, re-run: {:.2} s", again.secs);
        assert_eq!(again.code, 0, "{}", again.all_text());
        assert_eq!(again.changed("ks1"), 0, "{:?}", again.changed_steps("ks1"));
        assert_eq!(invocations(SINGLE), before, "a re-run restarted k3s");
    }

    // HA: three servers joined one at a time, then an agent.
    const HA: &[(&str, &str, &str)] = &[
        ("kh1", "10.77.0.94", "k3s-server"),
        ("kh2", "10.77.0.95", "k3s-server"),
        ("kh3", "10.77.0.96", "k3s-server"),
        ("ka1", "10.77.0.97", "k3s-agent"),
    ];
    let hosts: Vec<(&str, &str)> = HA.iter().map(|(n, a, _)| (*n, *a)).collect();
    let Some(_lab) = lab::exclusive_k3s(&hosts) else { return };
    let answers = dir.path().join("kha.toml");
    std::fs::write(&answers, k3s_site("kha", HA, "ha", &version, &bundle)).unwrap();
    let (answers, state) = (answers.to_str().unwrap(), dir.path().join("state-ha"));
    let first = common::run::apply(answers, &state, &[]);
    eprintln!("HA, first apply: {:.1} s", first.secs);
    assert_eq!(first.code, 0, "{}", first.all_text());
    verify_cluster(answers, &state, HA, true);

    let before = invocations(HA);
    let again = common::run::apply(answers, &state, &[]);
    eprintln!("HA, re-run: {:.2} s", again.secs);
    assert_eq!(again.code, 0, "{}", again.all_text());
    for (h, _, _) in HA {
        assert_eq!(again.changed(h), 0, "{h}: {:?}", again.changed_steps(h));
    }
    assert_eq!(invocations(HA), before, "a re-run restarted a node");

    // A hand edit on one server, read by a restart by hand: its config is written back and
    // it alone restarts.
    on("kh2", "printf '# edited by hand\\n' >> /etc/rancher/k3s/config.yaml && systemctl restart k3s");
    let before: Vec<String> = invocations(HA);
    let repair = common::run::apply(answers, &state, &[]);
    eprintln!("HA, one server's config changed: {:.1} s", repair.secs);
    assert_eq!(repair.code, 0, "{}", repair.all_text());
    assert!(repair.step("kh2", "restart k3s").is_some(), "{}", repair.all_text());
    let after = invocations(HA);
    for (i, (h, _, _)) in HA.iter().enumerate() {
        assert_eq!(
            after[i] != before[i],
            *h == "kh2",
            "{h}: restarted {} ({} -> {})",
            after[i] != before[i],
            before[i],
            after[i]
        );
        if *h != "kh2" {
            assert_eq!(repair.changed(h), 0, "{h}: {:?}", repair.changed_steps(h));
        }
    }
    verify_cluster(answers, &state, HA, true);
}
