//! The answer file: one TOML document that describes a whole site.
//!
//! Keys are kebab-case and unknown keys are errors (`deny_unknown_fields`), so a typo never
//! silently turns into a default. Rules that involve more than one field live in
//! [`super::rules`]; this file only says what each field is.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;
use std::str::FromStr;

use ipnetwork::Ipv4Network;
use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A whole site: what `groundwork wizard` writes and every other command reads.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
#[schemars(title = "groundwork answer file")]
pub struct Answers {
    pub site: Site,
    pub network: Network,
    /// The inventory: every machine groundwork configures over SSH.
    #[serde(rename = "host", default)]
    pub hosts: Vec<Host>,
    #[serde(default, skip_serializing_if = "Databases::is_empty")]
    pub databases: Databases,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ldap: Option<Ldap>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub k3s: Option<K3s>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gitops: Option<GitOps>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proxmox: Option<Proxmox>,
}

/// The top-level sections, in the order the file is written.
pub const SECTIONS: &[&str] = &["site", "network", "host", "databases", "ldap", "k3s", "gitops", "proxmox"];

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct Site {
    /// Short name of the site: names the state directory (`[a-z0-9-]`).
    pub name: String,
    /// DNS domain served inside the site, e.g. `cluster.example.org`.
    pub internal_domain: String,
    /// Public domain that users reach the services under, e.g. `example.org`.
    pub external_domain: String,
    /// IANA time zone for every host, e.g. `Europe/Berlin` or `UTC`.
    #[serde(default = "default_timezone")]
    pub timezone: String,
    /// Where certificates and alerts go.
    pub admin_email: String,
    /// Directory on this machine made by `groundwork bundle --debs`: every host installs its
    /// roles' packages from its Debian packages only (uploaded over SSH), never from a mirror.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub package_bundle: Option<PathBuf>,
}

fn default_timezone() -> String {
    "UTC".into()
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct Network {
    /// The site's IPv4 subnet in CIDR form, e.g. `10.77.0.0/24`.
    pub subnet: Subnet,
    /// Default router handed out by DHCP.
    pub gateway: Ipv4Addr,
    /// Upstream resolvers that the site's DNS forwards to.
    #[serde(default)]
    pub forwarders: Vec<IpAddr>,
    /// DHCP lease time in seconds.
    #[serde(default = "default_lease_time")]
    pub lease_time: u32,
    /// Enable the DHCP server even if another DHCP server answers on the segment.
    #[serde(default, skip_serializing_if = "is_false")]
    pub allow_foreign_dhcp: bool,
    /// Dynamic address pools.
    #[serde(default, rename = "dhcp-range", skip_serializing_if = "Vec::is_empty")]
    pub dhcp_ranges: Vec<DhcpRange>,
    /// Fixed leases: MAC address -> address -> name.
    #[serde(default, rename = "reservation", skip_serializing_if = "Vec::is_empty")]
    pub reservations: Vec<Reservation>,
}

fn default_lease_time() -> u32 {
    3600
}

fn is_false(b: &bool) -> bool {
    !*b
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct DhcpRange {
    pub start: Ipv4Addr,
    pub end: Ipv4Addr,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct Reservation {
    pub mac: MacAddr,
    pub address: Ipv4Addr,
    /// Host name (a single DNS label) registered in the internal domain.
    pub name: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct Host {
    /// Host name, a single DNS label; the FQDN is `<name>.<internal-domain>`.
    pub name: String,
    /// Static address in the site subnet; groundwork connects to it over SSH.
    pub address: Ipv4Addr,
    #[serde(default = "default_ssh_user")]
    pub ssh_user: String,
    /// Private key (ed25519 or RSA); `~` is expanded. Default: `~/.ssh/id_ed25519`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ssh_key: Option<PathBuf>,
    #[serde(default = "default_ssh_port")]
    pub ssh_port: u16,
    /// `true`: this host is the machine groundwork runs on, converged through local processes
    /// with no SSH (no sshd, key or known_hosts entry needed). `false`: always over SSH.
    /// Unset: local when its address is one of this machine's (loopback excepted: 127.0.0.1
    /// with an ssh-port is a tunnel to another machine).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub local: Option<bool>,
    pub roles: Vec<Role>,
    /// Create this host as a Proxmox VE guest (see `[proxmox]`) before converging it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provision: Option<Provision>,
}

/// A guest groundwork creates on Proxmox VE when it does not exist yet: a container from
/// `[proxmox] ct-template`, or a VM cloned from `[proxmox] template` (cloud-init).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct Provision {
    /// `ct` (LXC container: dns, dhcp, ldap, databases) or `vm` (QEMU VM: required for k3s).
    pub kind: GuestKind,
    /// CPU cores.
    #[serde(default = "default_cores")]
    pub cores: u32,
    /// Memory in MiB.
    #[serde(default = "default_memory")]
    pub memory: u32,
    /// Root disk in GiB (a container's rootfs; a VM's boot disk is grown to it after the clone,
    /// never shrunk).
    #[serde(default = "default_disk")]
    pub disk: u32,
}

fn default_cores() -> u32 {
    1
}

fn default_memory() -> u32 {
    1024
}

fn default_disk() -> u32 {
    8
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum GuestKind {
    Ct,
    Vm,
}

impl GuestKind {
    pub fn as_str(self) -> &'static str {
        match self {
            GuestKind::Ct => "ct",
            GuestKind::Vm => "vm",
        }
    }
    /// The word for it in a sentence.
    pub fn noun(self) -> &'static str {
        match self {
            GuestKind::Ct => "container",
            GuestKind::Vm => "VM",
        }
    }
    /// The API's name of the guest type (`/nodes/{node}/{api}/...`, `type` in resources).
    pub fn api(self) -> &'static str {
        match self {
            GuestKind::Ct => "lxc",
            GuestKind::Vm => "qemu",
        }
    }
}

fn default_ssh_user() -> String {
    "root".into()
}

fn default_ssh_port() -> u16 {
    22
}

/// What a host does. Site-wide roles (gitops) are placed by the plan, not listed here.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Role {
    Dns,
    Dhcp,
    Ldap,
    Postgresql,
    Mariadb,
    K3sServer,
    K3sAgent,
}

impl Role {
    pub const ALL: [Role; 7] =
        [Role::Dns, Role::Dhcp, Role::Ldap, Role::Postgresql, Role::Mariadb, Role::K3sServer, Role::K3sAgent];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Dns => "dns",
            Role::Dhcp => "dhcp",
            Role::Ldap => "ldap",
            Role::Postgresql => "postgresql",
            Role::Mariadb => "mariadb",
            Role::K3sServer => "k3s-server",
            Role::K3sAgent => "k3s-agent",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Role {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Role::ALL.into_iter().find(|r| r.as_str() == s).ok_or_else(|| format!("unknown role `{s}`"))
    }
}

/// Databases and their owners. Every user gets a generated password in the secrets file.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct Databases {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub postgresql: Vec<Database>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub mariadb: Vec<Database>,
}

impl Databases {
    pub fn is_empty(&self) -> bool {
        self.postgresql.is_empty() && self.mariadb.is_empty()
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct Database {
    /// Database name: letters, digits and `_`, starting with a letter.
    pub name: String,
    /// Owner of the database; each database has its own user.
    pub user: String,
}

// The sections below whose keys hold alternatives are read through a raw form that mirrors
// the file (`*Keys`, which also gives the schema its keys and the rule, for editors and for
// the first pass of `validate`) and turned into the checked type by `TryFrom`, so code past the
// loader cannot see a combination the rule forbids. Each is written back through the same form.

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(try_from = "LdapKeys", into = "LdapKeys")]
pub struct Ldap {
    pub organisation: String,
    pub extra_ous: Vec<String>,
    /// The site's certificate; `None`: a self-signed one is generated.
    pub tls: Option<TlsPair>,
}

/// A PEM certificate and its private key, paths on the LDAP host.
#[derive(Debug, Clone, PartialEq)]
pub struct TlsPair {
    pub cert: PathBuf,
    pub key: PathBuf,
}

#[derive(Clone, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
#[schemars(extend("dependentRequired" = { "tls-cert": ["tls-key"], "tls-key": ["tls-cert"] }))]
pub struct LdapKeys {
    /// Organisation name of the directory's base entry.
    pub organisation: String,
    /// OUs beyond `people`, `groups` and `services`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub extra_ous: Vec<String>,
    /// PEM certificate for LDAPS/StartTLS; a self-signed one is generated when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_cert: Option<PathBuf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_key: Option<PathBuf>,
}

impl TryFrom<LdapKeys> for Ldap {
    type Error = &'static str;
    fn try_from(k: LdapKeys) -> Result<Self, Self::Error> {
        let tls = match (k.tls_cert, k.tls_key) {
            (Some(cert), Some(key)) => Some(TlsPair { cert, key }),
            (None, None) => None,
            _ => return Err("tls-cert and tls-key go together: give both, or neither"),
        };
        Ok(Ldap { organisation: k.organisation, extra_ous: k.extra_ous, tls })
    }
}

impl From<Ldap> for LdapKeys {
    fn from(l: Ldap) -> Self {
        let (tls_cert, tls_key) = l.tls.map(|t| (t.cert, t.key)).unzip();
        LdapKeys { organisation: l.organisation, extra_ous: l.extra_ous, tls_cert, tls_key }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct K3s {
    /// k3s release, e.g. `v1.35.6+k3s1`.
    pub version: String,
    /// Directory on this machine made by `groundwork bundle`: the k3s binary, the air-gap
    /// image tarball, the release's sha256 list and manifest.json.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub airgap_bundle: Option<PathBuf>,
    /// `single`: one server; `ha`: embedded etcd on an odd number of servers.
    #[serde(default)]
    pub mode: K3sMode,
    #[serde(default = "default_cluster_cidr")]
    pub cluster_cidr: Subnet,
    #[serde(default = "default_service_cidr")]
    pub service_cidr: Subnet,
    /// The name or address clients and agents reach the API at, put in every server's
    /// certificate. Default: `k3s.<internal-domain>`, which the site's DNS answers with every
    /// server's address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_endpoint: Option<String>,
    /// Packaged components k3s should not deploy (the same on every server).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub disable: Vec<K3sComponent>,
    /// Nodes share container images with each other (k3s's embedded registry mirror).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub embedded_registry: bool,
}

impl K3s {
    /// Where clients and agents reach the API (see `api_endpoint`).
    pub fn api_endpoint(&self, internal_domain: &str) -> String {
        self.api_endpoint.clone().unwrap_or_else(|| format!("k3s.{internal_domain}"))
    }

    /// The API endpoint's name in the site's zone, when it is one label under the internal
    /// domain: the zone answers it with every server's address (an address, or a name
    /// elsewhere, is the operator's to serve).
    pub fn api_label(&self, internal_domain: &str) -> Option<String> {
        self.api_endpoint(internal_domain)
            .strip_suffix(&format!(".{internal_domain}"))
            .filter(|l| !l.is_empty() && !l.contains('.'))
            .map(str::to_string)
    }
}

/// A component k3s deploys unless told not to (`disable`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum K3sComponent {
    Coredns,
    Servicelb,
    Traefik,
    LocalStorage,
    MetricsServer,
}

impl K3sComponent {
    pub fn as_str(self) -> &'static str {
        match self {
            K3sComponent::Coredns => "coredns",
            K3sComponent::Servicelb => "servicelb",
            K3sComponent::Traefik => "traefik",
            K3sComponent::LocalStorage => "local-storage",
            K3sComponent::MetricsServer => "metrics-server",
        }
    }
}

fn default_cluster_cidr() -> Subnet {
    Subnet(Ipv4Network::new(Ipv4Addr::new(10, 42, 0, 0), 16).expect("valid prefix"))
}

fn default_service_cidr() -> Subnet {
    Subnet(Ipv4Network::new(Ipv4Addr::new(10, 43, 0, 0), 16).expect("valid prefix"))
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum K3sMode {
    #[default]
    Single,
    Ha,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct GitOps {
    pub engine: GitOpsEngine,
    /// Git repository URL (https://, ssh:// or git@host:path).
    pub repository: String,
    #[serde(default = "default_branch")]
    pub branch: String,
    /// Folder inside the repository that the cluster reconciles.
    #[serde(default = "default_repo_path")]
    pub path: String,
    /// The Git host's public key(s) as `known_hosts` lines (`git.example.org ssh-ed25519
    /// AAAA...`; `[host]:port` for another port than 22), for an ssh repository: the cluster
    /// accepts no other key. `ssh-keyscan git.example.org` prints them; check them first.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub known_hosts: Option<String>,
    /// File holding an access token for an https repository (none: a public repository).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_file: Option<PathBuf>,
    /// Environment variable holding an access token for an https repository.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_env: Option<String>,
    /// User name sent with the token (default `git`; Bitbucket wants `x-token-auth`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_username: Option<String>,
    /// Namespaces that get a copy of the site contract (the `site` ConfigMap and the
    /// credential Secrets of `groundwork-site`), created if missing.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub contract_namespaces: Vec<String>,
}

fn default_branch() -> String {
    "main".into()
}

fn default_repo_path() -> String {
    "./".into()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum GitOpsEngine {
    Flux,
    Argocd,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(try_from = "ProxmoxKeys", into = "ProxmoxKeys")]
pub struct Proxmox {
    pub api_url: String,
    pub token_id: String,
    pub token_secret: TokenSecret,
    /// The operator accepts an inline secret (the rules refuse one without this).
    pub insecure_inline_secret: bool,
    pub fingerprint: Option<String>,
    pub node: String,
    pub storage: String,
    pub template: Option<String>,
    pub ct_template: Option<String>,
    pub bridge: String,
    pub task_timeout: u64,
}

/// Where the Proxmox API token secret comes from: one place, never two.
#[derive(Debug, Clone, PartialEq)]
pub enum TokenSecret {
    /// `token-secret-file`: a file on this machine.
    File(PathBuf),
    /// `token-secret-env`: an environment variable of the groundwork process.
    Env(String),
    /// `token-secret`: written in the answer file.
    Inline(Secret),
}

/// A secret value. Its `Debug` shows none of it, so a model printed whole (a failed test, a
/// debug log) does not carry it; the value is read with [`Secret::expose`].
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(********)")
    }
}

#[derive(Clone, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
#[schemars(extend("oneOf" = [
    { "required": ["token-secret-file"] },
    { "required": ["token-secret-env"] },
    { "required": ["token-secret"] },
]))]
pub struct ProxmoxKeys {
    /// API endpoint, e.g. `https://pve1.example.org:8006/api2/json`.
    pub api_url: String,
    /// API token id: `user@realm!token-name`.
    pub token_id: String,
    /// File holding the token secret (preferred).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_secret_file: Option<PathBuf>,
    /// Environment variable holding the token secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_secret_env: Option<String>,
    /// The secret inline: refused unless `insecure-inline-secret = true`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_secret: Option<String>,
    #[serde(default, skip_serializing_if = "is_false")]
    pub insecure_inline_secret: bool,
    /// SHA-256 fingerprint of the API certificate when it is self-signed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fingerprint: Option<String>,
    pub node: String,
    /// Where new guests' disks go (content `rootdir` for containers, `images` for VMs).
    pub storage: String,
    /// VM template (by name) that `vm` guests are cloned from; it has cloud-init.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template: Option<String>,
    /// Container template volume that `ct` guests are created from, e.g.
    /// `local:vztmpl/debian-12-standard_12.7-1_amd64.tar.zst`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ct_template: Option<String>,
    /// The bridge new guests are attached to.
    #[serde(default = "default_bridge")]
    pub bridge: String,
    /// How long one Proxmox task (create, clone, start) may take, in seconds.
    #[serde(default = "default_task_timeout")]
    pub task_timeout: u64,
}

fn default_bridge() -> String {
    "vmbr0".into()
}

fn default_task_timeout() -> u64 {
    600
}

impl fmt::Debug for ProxmoxKeys {
    // Only the checked `Proxmox` should be printed; this keeps the raw form safe all the same.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProxmoxKeys").field("token_id", &self.token_id).finish_non_exhaustive()
    }
}

impl TryFrom<ProxmoxKeys> for Proxmox {
    // The messages name keys, never a value: the inline one is a secret.
    type Error = &'static str;
    fn try_from(k: ProxmoxKeys) -> Result<Self, Self::Error> {
        let token_secret = match (k.token_secret_file, k.token_secret_env, k.token_secret) {
            (Some(path), None, None) => TokenSecret::File(path),
            (None, Some(name), None) => TokenSecret::Env(name),
            (None, None, Some(value)) => TokenSecret::Inline(Secret(value)),
            (None, None, None) => return Err("no token secret is given: set token-secret-file or token-secret-env"),
            _ => return Err("give the token secret one way only: token-secret-file, token-secret-env or token-secret"),
        };
        Ok(Proxmox {
            api_url: k.api_url,
            token_id: k.token_id,
            token_secret,
            insecure_inline_secret: k.insecure_inline_secret,
            fingerprint: k.fingerprint,
            node: k.node,
            storage: k.storage,
            template: k.template,
            ct_template: k.ct_template,
            bridge: k.bridge,
            task_timeout: k.task_timeout,
        })
    }
}

impl From<Proxmox> for ProxmoxKeys {
    fn from(p: Proxmox) -> Self {
        let (mut file, mut env, mut inline) = (None, None, None);
        match p.token_secret {
            TokenSecret::File(path) => file = Some(path),
            TokenSecret::Env(name) => env = Some(name),
            TokenSecret::Inline(secret) => inline = Some(secret.0),
        }
        ProxmoxKeys {
            api_url: p.api_url,
            token_id: p.token_id,
            token_secret_file: file,
            token_secret_env: env,
            token_secret: inline,
            insecure_inline_secret: p.insecure_inline_secret,
            fingerprint: p.fingerprint,
            node: p.node,
            storage: p.storage,
            template: p.template,
            ct_template: p.ct_template,
            bridge: p.bridge,
            task_timeout: p.task_timeout,
        }
    }
}

/// An IPv4 subnet in CIDR form whose address is the network address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Subnet(pub Ipv4Network);

impl Subnet {
    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        self.0.contains(ip)
    }
    pub fn network(&self) -> Ipv4Addr {
        self.0.network()
    }
    pub fn broadcast(&self) -> Ipv4Addr {
        self.0.broadcast()
    }
    pub fn prefix(&self) -> u8 {
        self.0.prefix()
    }
    pub fn overlaps(&self, other: &Subnet) -> bool {
        self.contains(other.network()) || other.contains(self.network())
    }
}

impl FromStr for Subnet {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let (addr, prefix) =
            s.split_once('/').ok_or_else(|| format!("`{s}` is not a subnet in CIDR form (e.g. 10.77.0.0/24)"))?;
        let addr: Ipv4Addr = addr.parse().map_err(|_| format!("`{addr}` is not an IPv4 address"))?;
        let prefix: u8 = prefix
            .parse()
            .ok()
            .filter(|p| *p <= 32)
            .ok_or_else(|| format!("`/{prefix}` is not a prefix length (0-32)"))?;
        let net = Ipv4Network::new(addr, prefix).map_err(|e| e.to_string())?;
        if net.network() != addr {
            return Err(format!("`{s}` has host bits set: the subnet is {}/{prefix}", net.network()));
        }
        Ok(Subnet(net))
    }
}

impl fmt::Display for Subnet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.0.network(), self.0.prefix())
    }
}

impl Serialize for Subnet {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Subnet {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

impl JsonSchema for Subnet {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Subnet".into()
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": "string",
            "description": "IPv4 subnet in CIDR form, e.g. 10.77.0.0/24",
            "format": "ipv4-network",
            "pattern": r"^\d{1,3}(\.\d{1,3}){3}/\d{1,2}$"
        })
    }
}

/// An Ethernet MAC address, written `aa:bb:cc:dd:ee:ff` (`-` separators are accepted).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct MacAddr(pub [u8; 6]);

impl FromStr for MacAddr {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || format!("`{s}` is not a MAC address (e.g. 52:54:00:12:34:56)");
        let parts: Vec<&str> = s.split([':', '-']).collect();
        if parts.len() != 6 {
            return Err(bad());
        }
        let mut out = [0u8; 6];
        for (i, p) in parts.iter().enumerate() {
            if p.len() != 2 {
                return Err(bad());
            }
            out[i] = u8::from_str_radix(p, 16).map_err(|_| bad())?;
        }
        Ok(MacAddr(out))
    }
}

impl fmt::Display for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = self.0;
        write!(f, "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}", b[0], b[1], b[2], b[3], b[4], b[5])
    }
}

impl Serialize for MacAddr {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for MacAddr {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

impl JsonSchema for MacAddr {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "MacAddr".into()
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": "string",
            "description": "Ethernet MAC address, e.g. 52:54:00:12:34:56",
            "format": "mac-address",
            "pattern": "^[0-9A-Fa-f]{2}([:-][0-9A-Fa-f]{2}){5}$"
        })
    }
}

impl Answers {
    pub fn hosts_with(&self, role: Role) -> impl Iterator<Item = (usize, &Host)> {
        self.hosts.iter().enumerate().filter(move |(_, h)| h.roles.contains(&role))
    }

    pub fn has_role(&self, role: Role) -> bool {
        self.hosts_with(role).next().is_some()
    }
}

/// The reverse zone of a subnet, on whole octets (`10.77.0.0/24` -> `0.77.10.in-addr.arpa`;
/// a /22 is served by its enclosing /16 zone).
pub fn reverse_zone(subnet: &Subnet) -> String {
    let octets = subnet.network().octets();
    let whole = usize::from(subnet.prefix() / 8).max(1);
    let mut labels: Vec<String> = octets[..whole].iter().map(u8::to_string).collect();
    labels.reverse();
    format!("{}.in-addr.arpa", labels.join("."))
}

/// The LDAP suffix of a domain: `cluster.example.org` -> `dc=cluster,dc=example,dc=org`.
pub fn ldap_suffix(domain: &str) -> String {
    domain.trim_end_matches('.').split('.').map(|l| format!("dc={l}")).collect::<Vec<_>>().join(",")
}
