//! The wizard's question flow, scripted: same rules as `validate`, checked per answer.

use groundwork::answers;
use groundwork::wizard::{self, Defaults, ScriptedPrompter};

fn defaults() -> Defaults {
    Defaults {
        site_name: "lab".into(),
        hostname: "ns1".into(),
        domain: None,
        timezone: "UTC".into(),
        subnet: "10.77.0.0/24".parse().unwrap(),
        gateway: Some("10.77.0.1".parse().unwrap()),
        address: Some("10.77.0.10".parse().unwrap()),
        forwarders: vec![],
        k3s_version: "v1.35.6+k3s1".into(),
        this_machine: vec![],
    }
}

#[test]
fn defaults_alone_make_a_valid_single_server_site() {
    // Enter everywhere, except the external domain, which has no default.
    let mut script = vec![""; 60];
    script[2] = "example.org";
    let mut p = ScriptedPrompter::new(script);
    let a = wizard::run(&mut p, &defaults()).unwrap();
    assert!(p.rejected.is_empty(), "{:?}", p.rejected);
    assert_eq!(a.hosts.len(), 1);
    assert_eq!(a.hosts[0].address.to_string(), "10.77.0.10");
    let r = &a.network.dhcp_ranges[0];
    assert_eq!((r.start.to_string(), r.end.to_string()), ("10.77.0.100".into(), "10.77.0.199".into()));
    answers::load_str("wizard", &wizard::render(&a)).unwrap_or_else(|r| panic!("{}", r.render(false)));
}

#[test]
fn this_machine_as_a_host_is_asked_no_ssh_questions() {
    let d = Defaults { this_machine: vec!["10.77.0.10".parse().unwrap()], ..defaults() };
    let mut script = vec![""; 60];
    script[2] = "example.org";
    let mut p = ScriptedPrompter::new(script);
    let a = wizard::run(&mut p, &d).unwrap();
    assert!(p.rejected.is_empty(), "{:?}", p.rejected);
    assert!(p.transcript.iter().any(|l| l.contains("10.77.0.10 is this machine")), "{:#?}", p.transcript);
    assert!(
        !p.transcript.iter().any(|l| l.contains("SSH user") || l.contains("SSH private key")),
        "{:#?}",
        p.transcript
    );
    let text = wizard::render(&a);
    assert!(!text.contains("ssh-key"), "{text}");
    answers::load_str("wizard", &text).unwrap_or_else(|r| panic!("{}", r.render(false)));
}

#[test]
fn answers_that_break_a_rule_are_refused_with_the_rules_words() {
    let script = [
        "",
        "Not_A_Domain",
        "int.example.org",
        "int.example.org",
        "example.org",
        "",
        "",
        "10.77.0.0/33",
        "",
        "10.88.0.1",
        "",
        "dns.google",
        "",
        "",
        "10.77.0.1",
        "",
        "",
        "",
        "dns, dchp",
        "dns, dhcp",
        "n",
        "10.77.0.5-10.77.0.20",
        "",
        "",
        "",
        "n",
    ];
    let mut p = ScriptedPrompter::new(script);
    let a = wizard::run(&mut p, &defaults()).unwrap();
    let why: Vec<(&str, &str)> = p.rejected.iter().map(|(f, _, e)| (f.as_str(), e.as_str())).collect();
    let has = |field: &str, words: &str| why.iter().any(|(f, e)| *f == field && e.contains(words));
    assert!(has("site.internal-domain", "not a fully qualified domain name"), "{why:?}");
    assert!(has("site.external-domain", "same as the internal domain"), "{why:?}");
    assert!(has("network.subnet", "prefix length"), "{why:?}");
    assert!(has("network.gateway", "outside network.subnet"), "{why:?}");
    assert!(has("network.forwarders", "not an IP address"), "{why:?}");
    assert!(has("host[0].address", "is the gateway"), "{why:?}");
    assert!(has("host[0].roles", "did you mean `dhcp`?"), "{why:?}");
    assert!(has("network.dhcp-range", "holds the static address of host ns1"), "{why:?}");
    assert_eq!(why.len(), 8, "{why:?}");
    assert_eq!(a.network.dhcp_ranges[0].start.to_string(), "10.77.0.100");
}

#[test]
fn a_dhcp_host_without_dns_is_caught_before_the_host_list_closes() {
    // Host 1: dhcp only; the wizard says DNS is missing and asks for another host.
    let script = [
        "",
        "",
        "example.org",
        "",
        "",
        "",
        "",
        "",
        "",
        "",
        "",
        "",
        "dhcp",
        "n",
        "ns2",
        "",
        "",
        "",
        "dns",
        "n",
        "",
        "",
        "n",
    ];
    let mut p = ScriptedPrompter::new(script);
    let a = wizard::run(&mut p, &defaults()).unwrap();
    assert!(p.transcript.iter().any(|t| t.contains("needs a host with role `dns`")), "{:?}", p.transcript);
    assert_eq!(a.hosts.len(), 2);
    assert_eq!(a.hosts[1].address.to_string(), "10.77.0.11");
}

/// k3s with GitOps over ssh: the wizard asks for the Git host's key (refusing none and a key
/// for another host); over https, for a token file.
#[test]
fn gitops_over_ssh_asks_for_the_git_hosts_key_and_https_for_a_token_file() {
    let key = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAILN9oBt9gGT5IZb+wFF7aklAH5CzIKUIY37008ez0Utd";
    let other = format!("git.other.org {key}");
    let right = format!("git.example.org {key}");
    let mut script = vec![""; 60];
    script[2] = "example.org";
    script[12] = "dns, dhcp, k3s-server";
    script[20] = "git@git.example.org:platform/site.git";
    script[22] = &other;
    script[23] = &right;
    let mut p = ScriptedPrompter::new(script.clone());
    let a = wizard::run(&mut p, &defaults()).unwrap();
    let why: Vec<(&str, &str)> = p.rejected.iter().map(|(f, _, e)| (f.as_str(), e.as_str())).collect();
    assert!(why.iter().any(|(f, e)| *f == "gitops.known-hosts" && e.contains("needs the Git host's key")), "{why:?}");
    assert!(
        why.iter().any(|(f, e)| *f == "gitops.known-hosts" && e.contains("not for the repository's host")),
        "{why:?}"
    );
    assert_eq!(why.len(), 2, "{why:?}");
    assert_eq!(a.gitops.as_ref().unwrap().known_hosts.as_deref(), Some(right.as_str()));
    answers::load_str("wizard", &wizard::render(&a)).unwrap_or_else(|r| panic!("{}", r.render(false)));

    script[20] = "https://git.example.org/platform/site.git";
    script[21] = "/etc/groundwork/git-token";
    script[22] = "";
    script[23] = "";
    let mut p = ScriptedPrompter::new(script);
    let a = wizard::run(&mut p, &defaults()).unwrap();
    assert!(p.rejected.is_empty(), "{:?}", p.rejected);
    let g = a.gitops.as_ref().unwrap();
    assert_eq!(
        (g.token_file.as_deref(), g.known_hosts.as_deref()),
        (Some(std::path::Path::new("/etc/groundwork/git-token")), None)
    );
    answers::load_str("wizard", &wizard::render(&a)).unwrap_or_else(|r| panic!("{}", r.render(false)));
}
