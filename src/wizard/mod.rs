//! The interactive wizard: asks for the answers, checks each one with the same rules as
//! `groundwork validate` as it is typed, shows the result and writes the answer file.
//!
//! Questions go through a [`Prompter`]: [`terminal::TerminalPrompter`] at a terminal,
//! [`ScriptedPrompter`] for tests and tooling.

pub mod defaults;
pub mod terminal;

use std::collections::VecDeque;
use std::net::Ipv4Addr;
use std::path::PathBuf;

use crate::answers::model::*;
use crate::answers::rules;

pub use defaults::Defaults;

#[derive(Debug, thiserror::Error)]
pub enum WizardError {
    #[error("cancelled")]
    Cancelled,
    #[error("the script ran out of answers at `{0}`")]
    OutOfAnswers(String),
    #[error("prompt failed: {0}")]
    Io(String),
}

/// One question: `field` is the answer-file path it fills (the key that errors are filtered by).
pub struct Question<'a> {
    pub field: &'a str,
    pub prompt: &'a str,
    pub default: Option<String>,
    pub check: &'a dyn Fn(&str) -> Result<(), String>,
}

/// Where answers come from.
pub trait Prompter {
    /// Tell the operator something (section headings, summaries).
    fn say(&mut self, text: &str);
    /// Ask until the answer passes `q.check`; an empty answer takes the default.
    fn ask(&mut self, q: &Question<'_>) -> Result<String, WizardError>;
    fn confirm(&mut self, prompt: &str, default: bool) -> Result<bool, WizardError>;
}

/// Answers from a list, in order; an empty string takes the default, like pressing Enter.
/// A rejected answer is recorded and the next one is tried, like an operator typing again.
#[derive(Debug, Default)]
pub struct ScriptedPrompter {
    answers: VecDeque<String>,
    pub rejected: Vec<(String, String, String)>,
    pub transcript: Vec<String>,
}

impl ScriptedPrompter {
    pub fn new<I: IntoIterator<Item = S>, S: Into<String>>(answers: I) -> Self {
        ScriptedPrompter { answers: answers.into_iter().map(Into::into).collect(), ..Default::default() }
    }

    fn next(&mut self, what: &str) -> Result<String, WizardError> {
        self.answers.pop_front().ok_or_else(|| WizardError::OutOfAnswers(what.to_string()))
    }
}

impl Prompter for ScriptedPrompter {
    fn say(&mut self, text: &str) {
        self.transcript.push(text.to_string());
    }

    fn ask(&mut self, q: &Question<'_>) -> Result<String, WizardError> {
        loop {
            let raw = self.next(q.field)?;
            let value = if raw.is_empty() { q.default.clone().unwrap_or_default() } else { raw.clone() };
            match (q.check)(&value) {
                Ok(()) => {
                    self.transcript.push(format!("{}: {value}", q.prompt));
                    return Ok(value);
                }
                Err(e) => self.rejected.push((q.field.to_string(), raw, e)),
            }
        }
    }

    fn confirm(&mut self, prompt: &str, default: bool) -> Result<bool, WizardError> {
        let raw = self.next(prompt)?;
        Ok(match raw.to_ascii_lowercase().as_str() {
            "" => default,
            "y" | "yes" => true,
            _ => false,
        })
    }
}

/// Problems of `draft` that belong to `field` (the field itself or anything below it).
fn problems_of(draft: &Answers, field: &str, with_needs: bool) -> Result<(), String> {
    let mut all = rules::check(draft);
    if with_needs {
        // The wizard offers the built-in roles only: their needs are those of the embedded catalog.
        all.extend(crate::plan::needs_problems(draft, crate::playbook::catalog::Catalog::embedded()));
    }
    let mine: Vec<String> = all
        .into_iter()
        .filter(|p| {
            p.field == field || p.field.starts_with(&format!("{field}.")) || p.field.starts_with(&format!("{field}["))
        })
        .map(|p| match p.help {
            Some(h) => format!("{} ({h})", p.message),
            None => p.message,
        })
        .collect();
    if mine.is_empty() { Ok(()) } else { Err(mine.join("; ")) }
}

type Apply<'f> = &'f dyn Fn(&mut Answers, &str) -> Result<(), String>;

/// Ask for one field: the answer is applied to a copy of the draft and the whole rule set
/// runs on it, so cross-field rules (a range holding a host's address...) bite at once.
fn ask_field(
    p: &mut dyn Prompter,
    draft: &mut Answers,
    field: &str,
    prompt: &str,
    default: Option<String>,
    apply: Apply<'_>,
) -> Result<String, WizardError> {
    let snapshot = draft.clone();
    let check = |input: &str| -> Result<(), String> {
        let mut d = snapshot.clone();
        apply(&mut d, input.trim())?;
        problems_of(&d, field, false)
    };
    let value = p.ask(&Question { field, prompt, default, check: &check })?;
    apply(draft, value.trim()).map_err(WizardError::Io)?;
    Ok(value)
}

fn parse<T: std::str::FromStr>(s: &str, what: &str) -> Result<T, String> {
    s.parse().map_err(|_| format!("`{s}` is not {what}"))
}

fn list(s: &str) -> Vec<String> {
    s.split([',', ' ']).map(str::trim).filter(|x| !x.is_empty() && *x != "none").map(str::to_string).collect()
}

/// The whole question flow, with defaults from `d` (usually from the probe).
pub fn run(p: &mut dyn Prompter, d: &Defaults) -> Result<Answers, WizardError> {
    let mut a = d.draft();

    p.say("Site");
    ask_field(p, &mut a, "site.name", "Site name (names the state directory)", Some(d.site_name.clone()), &|a, v| {
        a.site.name = v.to_string();
        Ok(())
    })?;
    let internal_default = d.domain.clone().unwrap_or_else(|| format!("{}.home.arpa", a.site.name));
    ask_field(
        p,
        &mut a,
        "site.internal-domain",
        "Internal domain (served by the site's DNS)",
        Some(internal_default),
        &|a, v| {
            a.site.internal_domain = v.to_string();
            Ok(())
        },
    )?;
    ask_field(p, &mut a, "site.external-domain", "External domain (public names of the services)", None, &|a, v| {
        a.site.external_domain = v.to_string();
        Ok(())
    })?;
    ask_field(p, &mut a, "site.timezone", "Time zone", Some(d.timezone.clone()), &|a, v| {
        a.site.timezone = v.to_string();
        Ok(())
    })?;
    let email_default = format!("admin@{}", a.site.external_domain);
    ask_field(p, &mut a, "site.admin-email", "Administrator e-mail", Some(email_default), &|a, v| {
        a.site.admin_email = v.to_string();
        Ok(())
    })?;

    p.say("Network");
    ask_field(p, &mut a, "network.subnet", "Site subnet (CIDR)", Some(d.subnet.to_string()), &|a, v| {
        a.network.subnet = v.parse()?;
        Ok(())
    })?;
    let gw_default =
        d.gateway.filter(|g| a.network.subnet.contains(*g)).unwrap_or_else(|| first_usable(&a.network.subnet));
    ask_field(p, &mut a, "network.gateway", "Gateway", Some(gw_default.to_string()), &|a, v| {
        a.network.gateway = parse(v, "an IPv4 address")?;
        Ok(())
    })?;
    let fw_default = if d.forwarders.is_empty() { "none".to_string() } else { d.forwarders.join(", ") };
    ask_field(
        p,
        &mut a,
        "network.forwarders",
        "Upstream DNS forwarders (comma-separated, or none)",
        Some(fw_default),
        &|a, v| {
            a.network.forwarders = list(v).iter().map(|x| parse(x, "an IP address")).collect::<Result<_, _>>()?;
            Ok(())
        },
    )?;

    p.say("Hosts (this machine, and those groundwork configures over SSH)");
    loop {
        let i = a.hosts.len();
        a.hosts.push(Host {
            name: String::new(),
            address: Ipv4Addr::UNSPECIFIED,
            ssh_user: "root".into(),
            ssh_key: None,
            ssh_port: 22,
            local: None,
            roles: Vec::new(),
            provision: None,
        });
        let base = format!("host[{i}]");
        let name_default = if i == 0 { d.hostname.clone() } else { format!("host{}", i + 1) };
        ask_field(p, &mut a, &format!("{base}.name"), &format!("Host {} name", i + 1), Some(name_default), &|a, v| {
            a.hosts[i].name = v.to_string();
            Ok(())
        })?;
        let addr_default = if i == 0 { d.address.filter(|x| a.network.subnet.contains(*x)) } else { None }
            .unwrap_or_else(|| next_free(&a));
        ask_field(p, &mut a, &format!("{base}.address"), "  address", Some(addr_default.to_string()), &|a, v| {
            a.hosts[i].address = parse(v, "an IPv4 address")?;
            Ok(())
        })?;
        if d.this_machine.contains(&a.hosts[i].address) {
            p.say(&format!(
                "  {} is this machine: groundwork converges it here, with no SSH (no sshd, key or user needed)",
                a.hosts[i].address
            ));
        } else {
            let user_default =
                a.hosts.iter().find(|h| h.ssh_key.is_some()).map_or("root".to_string(), |h| h.ssh_user.clone());
            ask_field(
                p,
                &mut a,
                &format!("{base}.ssh-user"),
                "  SSH user (root, or a user with sudo)",
                Some(user_default),
                &|a, v| {
                    a.hosts[i].ssh_user = v.to_string();
                    Ok(())
                },
            )?;
            let key_default =
                a.hosts.iter().find_map(|h| h.ssh_key.clone()).unwrap_or_else(|| PathBuf::from("~/.ssh/id_ed25519"));
            ask_field(
                p,
                &mut a,
                &format!("{base}.ssh-key"),
                "  SSH private key",
                Some(key_default.display().to_string()),
                &|a, v| {
                    if v.is_empty() {
                        return Err("a key path is required".into());
                    }
                    a.hosts[i].ssh_key = Some(PathBuf::from(v));
                    Ok(())
                },
            )?;
        }
        let roles_default = if i == 0 { "dns, dhcp, ldap, postgresql, mariadb".to_string() } else { String::new() };
        let all_roles: Vec<&str> = Role::ALL.iter().map(|r| r.as_str()).collect();
        let prompt = format!("  roles ({})", all_roles.join(", "));
        ask_field(p, &mut a, &format!("{base}.roles"), &prompt, Some(roles_default), &|a, v| {
            a.hosts[i].roles = list(v)
                .iter()
                .map(|r| {
                    r.parse::<Role>().map_err(|e| match crate::answers::report::nearest(r, &all_roles) {
                        Some(s) => format!("{e}; did you mean `{s}`?"),
                        None => e,
                    })
                })
                .collect::<Result<_, _>>()?;
            fill_sections(a, d);
            Ok(())
        })?;
        if p.confirm("Add another host?", false)? {
            continue;
        }
        match problems_of(&a, "host", true) {
            Ok(()) => break,
            Err(e) => p.say(&format!("Not yet complete: {e}. Add a host that covers it.")),
        }
    }

    if a.has_role(Role::Dhcp) {
        p.say("DHCP");
        a.network.dhcp_ranges.clear();
        let range_default = defaults::free_range(&a).map(|(s, e)| format!("{s}-{e}")).unwrap_or_default();
        ask_field(p, &mut a, "network.dhcp-range", "Dynamic range (start-end)", Some(range_default), &|a, v| {
            let (s, e) = v
                .split_once('-')
                .ok_or_else(|| format!("`{v}` is not a range (start-end, e.g. 10.0.0.100-10.0.0.199)"))?;
            a.network.dhcp_ranges = vec![DhcpRange {
                start: parse(s.trim(), "an IPv4 address")?,
                end: parse(e.trim(), "an IPv4 address")?,
            }];
            Ok(())
        })?;
        let lease_default = a.network.lease_time.to_string();
        ask_field(p, &mut a, "network.lease-time", "Lease time in seconds", Some(lease_default), &|a, v| {
            a.network.lease_time = parse(v, "a number of seconds")?;
            Ok(())
        })?;
    }

    for (engine, role, default) in
        [("postgresql", Role::Postgresql, "keycloak, openproject"), ("mariadb", Role::Mariadb, "nextcloud")]
    {
        if !a.has_role(role) {
            continue;
        }
        let field = format!("databases.{engine}");
        let prompt = format!("{engine} databases to create (name or name:user, comma-separated)");
        ask_field(p, &mut a, &field, &prompt, Some(default.into()), &|a, v| {
            let dbs: Vec<Database> = list(v)
                .iter()
                .map(|x| {
                    let (name, user) = x.split_once(':').unwrap_or((x, x));
                    Database { name: name.to_string(), user: user.to_string() }
                })
                .collect();
            if engine == "postgresql" {
                a.databases.postgresql = dbs;
            } else {
                a.databases.mariadb = dbs;
            }
            Ok(())
        })?;
    }

    if a.has_role(Role::Ldap) {
        p.say("Directory");
        let org_default = a.ldap.as_ref().map(|l| l.organisation.clone()).unwrap_or_default();
        ask_field(p, &mut a, "ldap.organisation", "Organisation name", Some(org_default), &|a, v| {
            if let Some(l) = a.ldap.as_mut() {
                l.organisation = v.to_string();
            }
            Ok(())
        })?;
    }

    if a.has_role(Role::K3sServer) {
        p.say("k3s");
        let version_default = a.k3s.as_ref().map(|k| k.version.clone());
        ask_field(p, &mut a, "k3s.version", "k3s release", version_default, &|a, v| {
            if let Some(k) = a.k3s.as_mut() {
                k.version = v.to_string();
            }
            Ok(())
        })?;
        ask_field(
            p,
            &mut a,
            "k3s.airgap-bundle",
            "Air-gap bundle directory (empty: none)",
            Some(String::new()),
            &|a, v| {
                if let Some(k) = a.k3s.as_mut() {
                    k.airgap_bundle = (!v.is_empty()).then(|| PathBuf::from(v));
                }
                Ok(())
            },
        )?;
        if p.confirm("Hand the cluster over to GitOps (Flux or Argo CD)?", true)? {
            a.gitops = Some(GitOps {
                engine: GitOpsEngine::Flux,
                repository: "https://git.example.org/platform/cluster.git".into(),
                branch: "main".into(),
                path: format!("./clusters/{}", a.site.name),
                known_hosts: None,
                token_file: None,
                token_env: None,
                token_username: None,
                contract_namespaces: Vec::new(),
            });
            ask_field(p, &mut a, "gitops.engine", "Engine (flux or argocd)", Some("flux".into()), &|a, v| {
                let e = match v {
                    "flux" => GitOpsEngine::Flux,
                    "argocd" => GitOpsEngine::Argocd,
                    _ => return Err(format!("`{v}` is neither flux nor argocd")),
                };
                if let Some(g) = a.gitops.as_mut() {
                    g.engine = e;
                }
                Ok(())
            })?;
            ask_field(p, &mut a, "gitops.repository", "Git repository URL", None, &|a, v| {
                if let Some(g) = a.gitops.as_mut() {
                    g.repository = v.to_string();
                }
                Ok(())
            })?;
            let ssh = a.gitops.as_ref().and_then(|g| crate::handoff::sync::RepoUrl::parse(&g.repository).ok());
            if ssh.is_some_and(|r| r.scheme == crate::handoff::sync::Scheme::Ssh) {
                ask_field(
                    p,
                    &mut a,
                    "gitops.known-hosts",
                    "The Git host's key as a known_hosts line (ssh-keyscan HOST prints it; check it)",
                    None,
                    &|a, v| {
                        if v.is_empty() {
                            return Err(
                                "an ssh repository needs the Git host's key: the cluster accepts no other".into()
                            );
                        }
                        if let Some(g) = a.gitops.as_mut() {
                            g.known_hosts = Some(v.to_string());
                        }
                        Ok(())
                    },
                )?;
            } else {
                ask_field(
                    p,
                    &mut a,
                    "gitops.token-file",
                    "File holding an access token (empty: a public repository)",
                    Some(String::new()),
                    &|a, v| {
                        if let Some(g) = a.gitops.as_mut() {
                            g.token_file = (!v.is_empty()).then(|| PathBuf::from(v));
                        }
                        Ok(())
                    },
                )?;
            }
            ask_field(p, &mut a, "gitops.branch", "Branch", Some("main".into()), &|a, v| {
                if let Some(g) = a.gitops.as_mut() {
                    g.branch = v.to_string();
                }
                Ok(())
            })?;
            let path_default = format!("./clusters/{}", a.site.name);
            ask_field(p, &mut a, "gitops.path", "Path in the repository", Some(path_default), &|a, v| {
                if let Some(g) = a.gitops.as_mut() {
                    g.path = v.to_string();
                }
                Ok(())
            })?;
        }
    }

    if p.confirm("Create guests through a Proxmox VE API?", false)? {
        p.say("Proxmox VE");
        a.proxmox = Some(Proxmox {
            api_url: String::new(),
            token_id: String::new(),
            token_secret: TokenSecret::File(PathBuf::from("/etc/groundwork/pve-token")),
            insecure_inline_secret: false,
            fingerprint: None,
            node: "pve".into(),
            storage: "local-lvm".into(),
            template: None,
            ct_template: None,
            bridge: "vmbr0".into(),
            task_timeout: 600,
        });
        let fields: [(&str, &str, Option<String>); 7] = [
            ("proxmox.api-url", "API URL (https://host:8006/api2/json)", None),
            ("proxmox.token-id", "API token id (user@realm!name)", Some("root@pam!groundwork".into())),
            ("proxmox.token-secret-file", "File that holds the token secret", Some("/etc/groundwork/pve-token".into())),
            ("proxmox.node", "Node", Some("pve".into())),
            ("proxmox.storage", "Storage", Some("local-lvm".into())),
            ("proxmox.template", "VM template to clone VMs from (empty: none)", Some(String::new())),
            (
                "proxmox.ct-template",
                "Container template volume (empty: none)",
                Some("local:vztmpl/debian-12-standard_12.7-1_amd64.tar.zst".into()),
            ),
        ];
        for (field, prompt, default) in fields {
            ask_field(p, &mut a, field, prompt, default, &|a, v| {
                let px = a.proxmox.as_mut().expect("set above");
                match field {
                    "proxmox.api-url" => px.api_url = v.to_string(),
                    "proxmox.token-id" => px.token_id = v.to_string(),
                    "proxmox.token-secret-file" => px.token_secret = TokenSecret::File(PathBuf::from(v)),
                    "proxmox.node" => px.node = v.to_string(),
                    "proxmox.storage" => px.storage = v.to_string(),
                    "proxmox.ct-template" => px.ct_template = (!v.is_empty()).then(|| v.to_string()),
                    _ => px.template = (!v.is_empty()).then(|| v.to_string()),
                }
                Ok(())
            })?;
        }
        // Which hosts groundwork creates there: a container or a VM, and its size.
        for i in 0..a.hosts.len() {
            let name = a.hosts[i].name.clone();
            let k3s = a.hosts[i].roles.iter().any(|r| matches!(r, Role::K3sServer | Role::K3sAgent));
            let default = if k3s { "vm 2 4096 32" } else { "ct 1 1024 8" };
            let prompt = format!("  create {name} on Proxmox as: ct|vm [cores memory-MiB disk-GiB], or none");
            ask_field(p, &mut a, &format!("host[{i}].provision"), &prompt, Some(default.into()), &|a, v| {
                a.hosts[i].provision = parse_provision(v)?;
                Ok(())
            })?;
        }
    }
    Ok(a)
}

/// `ct|vm [cores memory disk]` or `none`, as the wizard asks it.
fn parse_provision(v: &str) -> Result<Option<Provision>, String> {
    let words: Vec<&str> = v.split_whitespace().collect();
    let kind = match words.first().copied() {
        None | Some("none") => return Ok(None),
        Some("ct") => GuestKind::Ct,
        Some("vm") => GuestKind::Vm,
        Some(other) => return Err(format!("`{}` is not ct, vm or none", crate::answers::report::shown(other))),
    };
    let num = |i: usize, default: u32, what: &str| -> Result<u32, String> {
        words.get(i).map_or(Ok(default), |w| {
            w.parse().map_err(|_| format!("`{}` is not a number of {what}", crate::answers::report::shown(w)))
        })
    };
    if words.len() > 4 {
        return Err("at most: kind cores memory disk".into());
    }
    Ok(Some(Provision { kind, cores: num(1, 1, "cores")?, memory: num(2, 1024, "MiB")?, disk: num(3, 8, "GiB")? }))
}

/// Sections that a role needs get a provisional value as soon as the role is chosen, so the
/// rules do not complain about questions that come later.
fn fill_sections(a: &mut Answers, d: &Defaults) {
    if a.has_role(Role::Ldap) && a.ldap.is_none() {
        a.ldap = Some(Ldap { organisation: capitalise(&a.site.name), extra_ous: Vec::new(), tls: None });
    }
    if !a.has_role(Role::Ldap) {
        a.ldap = None;
    }
    let servers = a.hosts_with(Role::K3sServer).count();
    if (servers > 0 || a.has_role(Role::K3sAgent)) && a.k3s.is_none() {
        a.k3s = Some(K3s {
            version: d.k3s_version.clone(),
            airgap_bundle: None,
            mode: K3sMode::Single,
            cluster_cidr: "10.42.0.0/16".parse().expect("valid"),
            service_cidr: "10.43.0.0/16".parse().expect("valid"),
            api_endpoint: None,
            disable: Vec::new(),
            embedded_registry: false,
        });
    }
    if let Some(k) = a.k3s.as_mut() {
        k.mode = if servers > 1 { K3sMode::Ha } else { K3sMode::Single };
    }
    if a.has_role(Role::Dhcp)
        && a.network.dhcp_ranges.is_empty()
        && let Some((start, end)) = defaults::free_range(a)
    {
        a.network.dhcp_ranges.push(DhcpRange { start, end });
    }
}

fn capitalise(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(f) => f.to_uppercase().chain(c).collect(),
        None => String::new(),
    }
}

fn first_usable(s: &Subnet) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(s.network()) + 1)
}

/// The lowest address of the subnet's first half that nothing uses yet.
fn next_free(a: &Answers) -> Ipv4Addr {
    let s = &a.network.subnet;
    let used = |ip: Ipv4Addr| {
        ip == a.network.gateway
            || a.hosts.iter().any(|h| h.address == ip)
            || a.network.dhcp_ranges.iter().any(|r| (u32::from(r.start)..=u32::from(r.end)).contains(&u32::from(ip)))
    };
    let start = u32::from(s.network()) + 10;
    (start..u32::from(s.broadcast())).map(Ipv4Addr::from).find(|ip| !used(*ip)).unwrap_or_else(|| first_usable(s))
}

/// The answer file text the wizard writes.
pub fn render(a: &Answers) -> String {
    let body = toml::to_string_pretty(a).expect("answers serialize");
    format!(
        "# groundwork answer file for site `{}`, written by `groundwork wizard`.\n# Check it with `groundwork validate FILE`; see wizard/answer.schema.json for every key.\n\n{body}",
        a.site.name
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn provision_answers_read_kind_and_sizes() {
        assert_eq!(parse_provision("none"), Ok(None));
        assert_eq!(parse_provision(""), Ok(None));
        assert_eq!(parse_provision("ct"), Ok(Some(Provision { kind: GuestKind::Ct, cores: 1, memory: 1024, disk: 8 })));
        assert_eq!(
            parse_provision("vm 4 8192 32"),
            Ok(Some(Provision { kind: GuestKind::Vm, cores: 4, memory: 8192, disk: 32 }))
        );
        assert!(parse_provision("lxc").is_err());
        assert!(parse_provision("vm four").is_err());
        assert!(parse_provision("vm 1 2 3 4").is_err());
    }
}
