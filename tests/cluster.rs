//! The k3s roles' rendered configuration, per node, against golden files in
//! `tests/golden/k3s/` (single server, HA first and joining servers, an agent). No host, no
//! root. `GROUNDWORK_UPDATE_GOLDEN=1` rewrites the files; review the diff.

use std::path::Path;

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
    env.get_template(&format!("{role}/config.yaml.j2"))
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
    // What every server must share (k3s refuses to start on a mismatch) is the same.
    let shared = |c: &str| {
        c.lines()
            .filter(|l| {
                ["cluster-cidr", "service-cidr", "disable", "token", "embedded-registry"]
                    .iter()
                    .any(|k| l.starts_with(k))
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
fn values_land_as_yaml_scalars() {
    let mut a = load("wizard/examples/proxmox-k3s.toml");
    a.k3s.as_mut().unwrap().api_endpoint = Some("k3s.cluster.example.org\": x #".into());
    let got = config(&a, "k3s-server", "k3s-s1");
    assert!(got.contains(r#"tls-san: ["k3s.cluster.example.org\": x #", "k3s-s1.cluster.example.org"]"#), "{got}");
}
