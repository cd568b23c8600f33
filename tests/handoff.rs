//! The hand-off's rendered objects: golden files in `tests/golden/handoff/` (Flux and Argo CD
//! over ssh and https, the site contract of two examples), every document read back into its
//! typed struct, the core kinds checked offline by `kubernetes-validate --strict`, hostile
//! values landing as data, and the answers' new `[gitops]` rules. No cluster, no root.
//! `GROUNDWORK_UPDATE_GOLDEN=1` rewrites the golden files; review the diff.
//!
//! Secrets are fixed test values (`tests/fixtures/handoff/deploy-key` is a key made for the
//! tests alone), never generated ones.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::lab::{in_ci, skip};
use serde_json::Value;

use groundwork::answers::{self, model::*};
use groundwork::handoff::objects::{Object, Sensitive};
use groundwork::handoff::{self, HandoffError, Stage, contract, sync};
use groundwork::state::Secrets;

const TOKEN: &str = "test-token-not-a-secret";

fn load(path: &str) -> Answers {
    answers::load_file(Path::new(path)).unwrap_or_else(|r| panic!("{path}: {:?}", r.one_line_each())).answers
}

/// Fixed secrets for every user of `a`: `test-<table>-<key>`, and the fixture's deploy key.
fn secrets_for(a: &Answers) -> Secrets {
    let mut s = Secrets::default();
    s.insert("ldap", "admin", "test-ldap-admin");
    s.insert("ldap", "service", "test-ldap-service");
    for d in &a.databases.postgresql {
        s.insert("postgresql", &d.user, &format!("test-postgresql-{}", d.user));
    }
    for d in &a.databases.mariadb {
        s.insert("mariadb", &d.user, &format!("test-mariadb-{}", d.user));
    }
    let key = std::fs::read_to_string("tests/fixtures/handoff/deploy-key").unwrap();
    s.insert(sync::DEPLOY_KEY.0, sync::DEPLOY_KEY.1, &key);
    s
}

fn golden(name: &str, got: &str) {
    let path = Path::new("tests/golden/handoff").join(name);
    if std::env::var_os("GROUNDWORK_UPDATE_GOLDEN").is_some() {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, got).unwrap();
    }
    let want = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert_eq!(got, want, "{} differs (GROUNDWORK_UPDATE_GOLDEN=1 rewrites it)", path.display());
}

/// The four engine/transport cases: (golden name, answers, https token).
fn cases() -> Vec<(&'static str, Answers, Option<Sensitive>)> {
    let ssh = load("wizard/examples/proxmox-k3s.toml");
    let https = load("wizard/examples/single-server.toml");
    let with = |a: &Answers, engine: GitOpsEngine, repo: Option<&str>| {
        let mut a = a.clone();
        let g = a.gitops.as_mut().unwrap();
        g.engine = engine;
        if let Some(r) = repo {
            g.repository = r.into();
        }
        a
    };
    let token = || Some(Sensitive::new(TOKEN));
    vec![
        // Flux over ssh, written scp-like: converted to ssh://.
        ("flux-ssh.yaml", with(&ssh, GitOpsEngine::Flux, Some("git@git.example.org:platform/prod-cluster.git")), None),
        ("flux-https.yaml", with(&https, GitOpsEngine::Flux, None), token()),
        ("argocd-ssh.yaml", with(&ssh, GitOpsEngine::Argocd, None), None),
        ("argocd-https.yaml", with(&https, GitOpsEngine::Argocd, None), token()),
    ]
}

fn objects(a: &Answers, token: Option<Sensitive>) -> Vec<(Stage, Object)> {
    handoff::objects_with_token(a, &secrets_for(a), token).unwrap_or_else(|e| panic!("{e}"))
}

fn stream_of(objects: &[(Stage, Object)], stages: &[Stage]) -> String {
    objects.iter().filter(|(s, _)| stages.contains(s)).map(|(_, o)| format!("---\n{}", o.to_yaml())).collect()
}

/// Every document of a YAML stream, as a YAML 1.1 parser (libyaml's) reads it.
fn parse_stream(text: &str) -> Vec<Value> {
    serde_yaml_ng::Deserializer::from_str(text)
        .map(|d| serde::Deserialize::deserialize(d).unwrap_or_else(|e| panic!("{e}\n{text}")))
        .collect()
}

/// Reads `text` back and checks each document is, typed, the object it was rendered from.
fn round_trip(text: &str, objects: &[&Object]) {
    let docs = parse_stream(text);
    assert_eq!(docs.len(), objects.len(), "{text}");
    for (doc, want) in docs.into_iter().zip(objects) {
        let got = Object::from_value(doc).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(&got, *want);
    }
}

#[test]
fn engines_over_ssh_and_https_match_their_golden_files_and_read_back() {
    for (name, a, token) in cases() {
        let objects = objects(&a, token);
        let text = stream_of(&objects, &[Stage::Repository, Stage::Sync]);
        golden(name, &text);
        let engine: Vec<&Object> = objects.iter().filter(|(s, _)| *s != Stage::Contract).map(|(_, o)| o).collect();
        round_trip(&text, &engine);
        // The contract comes first, the sync objects last.
        let stages: Vec<Stage> = objects.iter().map(|(s, _)| *s).collect();
        assert!(stages.is_sorted(), "{name}: {stages:?}");
        assert_eq!(stages.first(), Some(&Stage::Contract));
    }
}

#[test]
fn site_contracts_match_their_golden_files_and_read_back() {
    for (name, example) in [
        ("contract-lab.yaml", "wizard/examples/lab.toml"),
        ("contract-single-server.yaml", "wizard/examples/single-server.toml"),
    ] {
        let a = load(example);
        let objects = objects(&a, Some(Sensitive::new(TOKEN)));
        let text = stream_of(&objects, &[Stage::Contract]);
        golden(name, &text);
        let contract: Vec<&Object> = objects.iter().filter(|(s, _)| *s == Stage::Contract).map(|(_, o)| o).collect();
        round_trip(&text, &contract);
    }
}

#[test]
fn the_contract_has_the_documented_names_and_keys() {
    let a = load("wizard/examples/proxmox-k3s.toml");
    let c = contract::contract(&a, &secrets_for(&a)).unwrap();
    let get = |k: &str| c.config.get(k).map(String::as_str).unwrap_or_else(|| panic!("no {k}: {:?}", c.config));
    assert_eq!(get("site_internal_domain"), "cluster.example.org");
    assert_eq!(get("site_dns_servers"), "10.20.0.10,10.20.0.11");
    assert_eq!(get("ldap_url"), "ldap://ldap.cluster.example.org:389");
    assert_eq!(get("ldap_base_dn"), "dc=cluster,dc=example,dc=org");
    assert_eq!(get("ldap_users_dn"), "ou=people,dc=cluster,dc=example,dc=org");
    assert_eq!(get("ldap_apps_dn"), "ou=apps,dc=cluster,dc=example,dc=org");
    assert_eq!(get("postgresql_synapse_host"), "pg.cluster.example.org");
    assert_eq!(get("mariadb_nextcloud_port"), "3306");
    assert_eq!(get("k3s_api_endpoint"), "k3s.cluster.example.org");
    assert!(c.config.keys().all(|k| contract::is_variable(k)), "{:?}", c.config.keys());
    let names: Vec<&str> = c.secrets.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        ["ldap-reader", "postgresql-keycloak", "postgresql-openproject", "postgresql-synapse", "mariadb-nextcloud"]
    );
    let (_, keycloak) = &c.secrets[1];
    let value = |k: &str| keycloak.iter().find(|(n, _)| *n == k).map(|(_, v)| v.expose()).unwrap();
    assert_eq!(value("uri"), "postgresql://keycloak:test-postgresql-keycloak@pg.cluster.example.org:5432/keycloak");
    // The contract is copied into each listed namespace.
    let objects = c.objects();
    for ns in ["groundwork-site", "keycloak", "nextcloud"] {
        assert!(objects.iter().any(|o| o.kind() == "Namespace" && o.metadata().name == ns), "{ns}");
        assert!(objects.iter().any(|o| o.metadata().namespace.as_deref() == Some(ns) && o.metadata().name == "site"));
    }
    // With the directory's own certificate, LDAPS.
    let mut tls = a.clone();
    tls.ldap.as_mut().unwrap().tls =
        Some(TlsPair { cert: "/etc/ssl/ldap.pem".into(), key: "/etc/ssl/ldap.key".into() });
    let c = contract::contract(&tls, &secrets_for(&tls)).unwrap();
    assert_eq!(c.config["ldap_url"], "ldaps://ldap.cluster.example.org:636");
}

#[test]
fn every_object_carries_the_site_labels_and_flux_substitutes_from_its_namespace() {
    for (name, a, token) in cases() {
        let all = objects(&a, token);
        for (_, o) in &all {
            let labels = &o.metadata().labels;
            assert_eq!(labels.get("app.kubernetes.io/managed-by").map(String::as_str), Some("groundwork"), "{name}");
            assert_eq!(labels.get("groundwork.dev/site"), Some(&a.site.name), "{name}");
            if let Object::Kustomization(k) = o {
                let from = &k.spec.post_build.substitute_from[0];
                let ns = k.metadata.namespace.as_deref();
                let found = all.iter().any(|(_, c)| {
                    c.kind() == from.kind && c.metadata().name == from.name && c.metadata().namespace.as_deref() == ns
                });
                assert!(found, "{name}: the substitution ConfigMap is not in the Kustomization's namespace");
            }
            if let Object::Application(app) = o {
                let secret = all.iter().find_map(|(_, c)| match c {
                    Object::Secret(s) if s.metadata.name == sync::ARGOCD_REPO_SECRET => Some(s),
                    _ => None,
                });
                let url = secret.unwrap().string_data["url"].expose().to_string();
                assert_eq!(url, app.spec.source.repo_url, "{name}: Argo CD matches the repository by its exact URL");
            }
        }
    }
}

#[test]
fn crd_required_fields_are_enforced_by_the_types() {
    let (_, a, token) = cases().remove(0);
    let all = objects(&a, token);
    let kustomization = all.iter().find(|(_, o)| o.kind() == "Kustomization").unwrap().1.to_value();
    let mut no_prune = kustomization.clone();
    no_prune["spec"].as_object_mut().unwrap().remove("prune");
    assert!(Object::from_value(no_prune).unwrap_err().contains("missing field `prune`"));
    let (_, a, token) = cases().remove(2);
    let all = objects(&a, token);
    let app = all.iter().find(|(_, o)| o.kind() == "Application").unwrap().1.to_value();
    let mut no_destination = app.clone();
    no_destination["spec"].as_object_mut().unwrap().remove("destination");
    assert!(Object::from_value(no_destination).unwrap_err().contains("missing field `destination`"));
    let mut typo = app;
    typo["spec"]["syncPolicy"]["automated"]["selfHeall"] = true.into();
    assert!(Object::from_value(typo).unwrap_err().contains("unknown field `selfHeall`"));
}

/// The validator: `$GROUNDWORK_KUBERNETES_VALIDATE`, else where tests/run installs it.
fn validator() -> Option<PathBuf> {
    let candidates = [
        std::env::var_os("GROUNDWORK_KUBERNETES_VALIDATE").map(PathBuf::from),
        Some(PathBuf::from("/var/cache/groundwork-test/kubernetes-validate/bin/kubernetes-validate")),
        Some(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/kubernetes-validate/bin/kubernetes-validate")),
    ];
    candidates.into_iter().flatten().find(|p| p.is_file())
}

fn validate(bin: &Path, text: &str) -> (bool, String) {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("core.yaml");
    std::fs::write(&file, text).unwrap();
    let out = Command::new(bin).args(["-k", "1.33.0", "--strict"]).arg(&file).output().unwrap();
    (out.status.success(), format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)))
}

#[test]
fn core_kinds_pass_kubernetes_validate_strict() {
    let Some(bin) = validator() else {
        let why = "kubernetes-validate is not installed (tests/run installs it: pip install kubernetes-validate==1.37.0 into a venv)";
        assert!(!in_ci(), "{why}");
        skip(why);
        return;
    };
    let mut sets: Vec<(String, Vec<(Stage, Object)>)> =
        cases().into_iter().map(|(n, a, t)| (n.to_string(), objects(&a, t))).collect();
    let lab = load("wizard/examples/lab.toml");
    sets.push(("lab".into(), objects(&lab, None)));
    sets.push(("hostile".into(), objects(&hostile(), None)));
    let mut checked = 0;
    for (name, objects) in sets {
        let core: Vec<&Object> = objects
            .iter()
            .map(|(_, o)| o)
            .filter(|o| matches!(o, Object::Namespace(_) | Object::ConfigMap(_) | Object::Secret(_)))
            .collect();
        checked += core.len();
        let text: String = core.iter().map(|o| format!("---\n{}", o.to_yaml())).collect();
        let (ok, out) = validate(&bin, &text);
        assert!(ok, "{name}: {out}");
    }
    // The validator does refuse in strict mode: an unknown field, a number where a string goes.
    let (ok, out) = validate(&bin, "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: x\ndatta: {}\n");
    assert!(!ok && out.contains("datta"), "{out}");
    let (ok, out) = validate(&bin, "apiVersion: v1\nkind: Secret\nmetadata:\n  name: x\nstringData:\n  a: [1]\n");
    assert!(!ok, "{out}");
    eprintln!("kubernetes-validate --strict (1.33): {checked} core documents valid");
}

/// The lab site with values no validator would let through, built past it: quotes, colons,
/// line breaks, YAML indicators, in a database, its user and password, an OU, the domain.
fn hostile() -> Answers {
    let mut a = load("wizard/examples/lab.toml");
    a.databases.postgresql.push(Database { name: "we\"ird: db\n- x # {y}".into(), user: "u:s\"er\n&a *b".into() });
    a.ldap.as_mut().unwrap().extra_ous.push("ou\"x: y\n#z, =q".into());
    a.site.external_domain = "ext.example\n---\nkind: Secret".into();
    a
}

#[test]
fn hostile_values_land_as_data_not_structure() {
    let a = hostile();
    let mut secrets = secrets_for(&a);
    let password = "p@ss:w/rd\"\n---\nkind: Namespace\n# '";
    secrets.insert("postgresql", "u:s\"er\n&a *b", password);
    let objects = handoff::objects_with_token(&a, &secrets, None).unwrap();
    let text = stream_of(&objects, &[Stage::Contract, Stage::Repository, Stage::Sync]);
    let all: Vec<&Object> = objects.iter().map(|(_, o)| o).collect();
    round_trip(&text, &all);
    let c = contract::contract(&a, &secrets).unwrap();
    assert_eq!(c.config["site_external_domain"], "ext.example\n---\nkind: Secret");
    assert_eq!(c.config["postgresql_we_ird__db___x____y__database"], "we\"ird: db\n- x # {y}");
    assert_eq!(c.config["ldap_ou_x__y__z___q_dn"], r#"ou=ou\"x: y\0a#z\, \=q,dc=lab,dc=groundwork,dc=test"#);
    let (name, data) = c.secrets.iter().find(|(n, _)| n.starts_with("postgresql-we")).unwrap();
    assert_eq!(name, "postgresql-we-ird--db---x----y");
    let uri = data.iter().find(|(k, _)| *k == "uri").unwrap().1.expose();
    assert_eq!(
        uri,
        "postgresql://u%3As%22er%0A%26a%20%2Ab:p%40ss%3Aw%2Frd%22%0A---%0Akind%3A%20Namespace%0A%23%20%27@pg.lab.groundwork.test:5432/we%22ird%3A%20db%0A-%20x%20%23%20%7By%7D"
    );
    // The password reaches the applied document, and nothing else of it shows.
    let docs = handoff::documents_with_token(&a, &secrets, None).unwrap();
    assert!(handoff::stream(&docs).contains(r#""p@ss:w/rd\"\n---\nkind: Namespace\n# '""#));
    let shown = format!("{}{docs:?}", handoff::masked_stream(&docs));
    for s in [password, "test-ldap-service", "test-postgresql-keycloak", "OPENSSH PRIVATE"] {
        assert!(!shown.contains(s), "{s} shows in:\n{shown}");
    }
    assert!(shown.contains("\"<secret: "), "{shown}");
}

#[test]
fn collisions_and_missing_secrets_are_clear_errors_without_values() {
    let mut a = load("wizard/examples/lab.toml");
    a.ldap.as_mut().unwrap().extra_ous.push("users".into());
    let e = contract::contract(&a, &secrets_for(&a)).unwrap_err().to_string();
    assert!(e.starts_with("ldap.extra-ous[1]: gives the ConfigMap key `ldap_users_dn`"), "{e}");

    let mut a = load("wizard/examples/lab.toml");
    a.databases.postgresql.push(Database { name: "keycloak_".into(), user: "kc2".into() });
    let e = contract::contract(&a, &secrets_for(&a)).unwrap_err().to_string();
    assert!(e.contains("databases.postgresql[2].name: gives the Secret name `postgresql-keycloak`, which databases.postgresql[0].name gives already"), "{e}");

    let a = load("wizard/examples/lab.toml");
    let mut s = Secrets::default();
    s.insert("ldap", "service", "Sup3rS3cretValue");
    let e = contract::contract(&a, &s).unwrap_err();
    assert!(matches!(&e, HandoffError::MissingSecret { table, key } if table == "postgresql" && key == "keycloak"));
    assert!(!format!("{e}{e:?}").contains("Sup3rS3cret"));

    let mut a = load("wizard/examples/proxmox-k3s.toml");
    a.gitops.as_mut().unwrap().contract_namespaces.push("Not A Namespace".into());
    let e = contract::contract(&a, &secrets_for(&a)).unwrap_err().to_string();
    assert!(e.starts_with("gitops.contract-namespaces[2]: is not a namespace name"), "{e}");
}

#[test]
fn https_tokens_come_from_their_file_or_variable_and_never_show() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("token");
    std::fs::write(&file, "tok-from-file-123\n").unwrap();
    let mut a = load("wizard/examples/single-server.toml");
    a.gitops.as_mut().unwrap().token_file = Some(file.clone());
    let docs = handoff::documents(&a, &secrets_for(&a)).unwrap();
    let secret = docs.iter().find(|d| d.is_secret && d.namespace.as_deref() == Some("flux-system")).unwrap();
    assert!(secret.yaml().contains("password: \"tok-from-file-123\""), "{}", secret.yaml());
    assert!(!secret.masked().contains("tok-from-file") && !format!("{docs:?}").contains("tok-from-file"));

    std::fs::remove_file(&file).unwrap();
    let e = handoff::documents(&a, &secrets_for(&a)).unwrap_err().to_string();
    assert!(e.starts_with("gitops.token-file: cannot read ") && e.contains("token"), "{e}");

    let g = a.gitops.as_mut().unwrap();
    g.token_file = None;
    g.token_env = Some("GROUNDWORK_TEST_NO_SUCH_TOKEN".into());
    let e = handoff::documents(&a, &secrets_for(&a)).unwrap_err().to_string();
    assert!(e.contains("GROUNDWORK_TEST_NO_SUCH_TOKEN is not set"), "{e}");

    // A public repository: no Secret, no secretRef.
    let g = a.gitops.as_mut().unwrap();
    g.token_env = None;
    let docs = handoff::documents(&a, &secrets_for(&a)).unwrap();
    assert!(!docs.iter().any(|d| d.namespace.as_deref() == Some("flux-system") && d.is_secret));
    assert!(!handoff::stream(&docs).contains("secretRef"));
}

#[test]
fn a_deploy_key_is_made_once_for_an_ssh_repository_only() {
    let a = load("wizard/examples/proxmox-k3s.toml");
    let mut s = Secrets::default();
    assert!(s.ensure_for(&a).contains(&"gitops.deploy-key".to_string()));
    let public = sync::deploy_public_key(&s).unwrap();
    assert!(public.starts_with("ssh-ed25519 ") && public.ends_with(" groundwork@pve-prod"), "{public}");
    assert!(!s.ensure_for(&a).contains(&"gitops.deploy-key".to_string()));
    assert_eq!(sync::deploy_public_key(&s).unwrap(), public);
    let mut https = Secrets::default();
    https.ensure_for(&load("wizard/examples/single-server.toml"));
    assert!(https.get("gitops", "deploy-key").is_none());
}

/// The answers' `[gitops]` rules, reported at the field's line.
#[test]
fn gitops_answers_are_checked_at_their_line() {
    let text = std::fs::read_to_string("wizard/examples/proxmox-k3s.toml").unwrap();
    let known = text.lines().find(|l| l.starts_with("known-hosts = ")).unwrap().to_string();
    let line_of = |t: &str, needle: &str| t.lines().position(|l| l.contains(needle)).unwrap() + 1;
    let cases: Vec<(String, &str, &str)> = vec![
        (text.replace(&format!("{known}\n"), ""), "[gitops]", "needs the Git host's key"),
        (
            text.replace("known-hosts = \"git.example.org", "known-hosts = \"git.other.org"),
            "known-hosts = ",
            "is not for the repository's host `git.example.org`",
        ),
        (
            text.replace("known-hosts = \"git.example.org", "known-hosts = \"[git.example.org]:2222"),
            "known-hosts = ",
            "is not for the repository's host",
        ),
        (
            text.replace(
                "known-hosts = \"git.example.org ssh-ed25519 AAAA",
                "known-hosts = \"git.example.org ssh-ed25519 BBBB",
            ),
            "known-hosts = ",
            "does not parse",
        ),
        (
            text.replace(&known, &format!("{known}\ntoken-file = \"/etc/t\"")),
            "token-file = ",
            "a token is for an https repository",
        ),
        (
            text.replace(
                "contract-namespaces = [\"keycloak\", \"nextcloud\"]",
                "contract-namespaces = [\"keycloak\", \"keycloak\"]",
            ),
            "contract-namespaces = ",
            "`keycloak` is listed twice",
        ),
        (
            text.replace(
                "contract-namespaces = [\"keycloak\", \"nextcloud\"]",
                "contract-namespaces = [\"kube-system\"]",
            ),
            "contract-namespaces = ",
            "one of the cluster's own namespaces",
        ),
    ];
    for (bad, needle, words) in cases {
        let r = answers::load_str("site.toml", &bad).unwrap_err();
        let lines = r.one_line_each();
        let at = format!("site.toml:{}:", line_of(&bad, needle));
        assert!(lines.iter().any(|l| l.starts_with(&at) && l.contains(words)), "want {at} {words}: {lines:?}");
    }
    // https: known-hosts has no use; two token sources are one too many.
    let https = std::fs::read_to_string("wizard/examples/single-server.toml").unwrap();
    let bad = https.replace("token-file = ", &format!("{known}\ntoken-env = \"GIT_TOKEN\"\ntoken-file = "));
    let lines = answers::load_str("site.toml", &bad).unwrap_err().one_line_each();
    assert!(lines.iter().any(|l| l.contains("known-hosts is for an ssh repository")), "{lines:?}");
    assert!(lines.iter().any(|l| l.contains("gitops.token-env: the token is given twice")), "{lines:?}");
}
