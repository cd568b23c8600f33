//! The GitOps engine's sync objects from `[gitops]`: where the repository is, how the cluster
//! gets in, and what it reconciles.
//!
//! - Repository URLs: `https://host[:port]/path`, `ssh://[user@]host[:port]/path`, and the
//!   scp-like `git@host:path`, which Flux does not accept: it becomes `ssh://git@host/path`
//!   (for both engines, so Argo CD's Application and its repository Secret name the same URL).
//!   A home-relative scp path (`git@host:repo.git` on a plain sshd) becomes `/repo.git`: write
//!   such a path absolute. Anything else is refused.
//! - ssh: a deploy key (ed25519, made once, kept in secrets.toml as `[gitops] deploy-key`),
//!   whose public half the operator adds to the repository, and the Git host's key pinned from
//!   `[gitops] known-hosts`.
//! - https: a token from `token-file` or `token-env` (none: a public repository), sent as
//!   `username` + `password` (both engines).
//!
//! Flux: Secret + `GitRepository` + `Kustomization` named `flux-system` in `flux-system` (the
//! names `flux bootstrap` gives them), the Kustomization substituting the site's variables
//! from the ConfigMap `groundwork-site` in `flux-system`. Argo CD: the repository Secret
//! `groundwork-repository`, `argocd-ssh-known-hosts-cm` (ssh) and the Application `groundwork`,
//! all in `argocd`.

use std::path::Path;

use russh::keys::ssh_key::LineEnding;
use russh::keys::{Algorithm, PrivateKey};

use super::HandoffError;
use super::objects::*;
use crate::answers::model::{GitOps, GitOpsEngine};
use crate::state::Secrets;

pub const FLUX_NAMESPACE: &str = "flux-system";
pub const FLUX_NAME: &str = "flux-system";
/// The copy of the site ConfigMap that Flux substitutes from (it must be in the
/// Kustomization's namespace).
pub const FLUX_SITE_CONFIGMAP: &str = "groundwork-site";
pub const ARGOCD_NAMESPACE: &str = "argocd";
pub const ARGOCD_APPLICATION: &str = "groundwork";
pub const ARGOCD_REPO_SECRET: &str = "groundwork-repository";
pub const ARGOCD_KNOWN_HOSTS: &str = "argocd-ssh-known-hosts-cm";
/// Where the deploy key is kept in secrets.toml.
pub const DEPLOY_KEY: (&str, &str) = ("gitops", "deploy-key");
const DEFAULT_TOKEN_USER: &str = "git";

/// A repository URL in the one form both engines are given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RepoUrl {
    pub scheme: Scheme,
    /// The URL as the engines get it (scp-like converted to ssh://).
    pub url: String,
    /// Host name or address (an IPv6 address without its brackets).
    pub host: String,
    pub port: Option<u16>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    Https,
    Ssh,
}

impl RepoUrl {
    /// Reads `https://`, `ssh://` and scp-like `user@host:path`; refuses anything else, and
    /// credentials written into an https URL (they would show in every plan).
    pub fn parse(s: &str) -> Result<RepoUrl, String> {
        let form = "use https://host/org/repo.git, ssh://git@host/org/repo.git or git@host:org/repo.git";
        let (scheme, rest) = if let Some(r) = s.strip_prefix("https://") {
            (Scheme::Https, r)
        } else if let Some(r) = s.strip_prefix("ssh://") {
            (Scheme::Ssh, r)
        } else if s.contains("://") {
            return Err(format!("`{s}` is neither an https:// nor an ssh:// repository URL: {form}"));
        } else {
            return scp_like(s).ok_or_else(|| format!("`{s}` is not a repository URL: {form}"));
        };
        let (authority, path) = rest.split_once('/').ok_or_else(|| format!("`{s}` has no path: {form}"))?;
        if path.is_empty() {
            return Err(format!("`{s}` has no path: {form}"));
        }
        let (user, hostport) = match authority.rsplit_once('@') {
            Some((u, h)) => (Some(u), h),
            None => (None, authority),
        };
        if let Some(u) = user {
            if scheme == Scheme::Https {
                return Err(format!(
                    "the https URL carries credentials before `@`: they would show in plans; put the token in token-file or token-env ({form})"
                ));
            }
            if u.is_empty() || u.contains(':') {
                return Err(format!("`{s}`: the ssh user `{u}` is empty or has a password: {form}"));
            }
        }
        let (host, port) = host_port(hostport).ok_or_else(|| format!("`{s}` has no usable host[:port]: {form}"))?;
        Ok(RepoUrl { scheme, url: s.to_string(), host, port })
    }

    /// The port an ssh client connects to (22 unless the URL says).
    pub fn ssh_port(&self) -> u16 {
        self.port.unwrap_or(22)
    }
}

/// `user@host:path` -> `ssh://user@host/path`.
fn scp_like(s: &str) -> Option<RepoUrl> {
    let (user, rest) = s.split_once('@')?;
    let (host, path) = rest.split_once(':')?;
    let valid_host = !host.is_empty() && host.chars().all(|c| c.is_ascii_alphanumeric() || ".-".contains(c));
    if user.is_empty() || user.contains(['/', ':']) || !valid_host || path.is_empty() || path.starts_with('-') {
        return None;
    }
    let path = path.trim_start_matches('/');
    if path.is_empty() {
        return None;
    }
    Some(RepoUrl { scheme: Scheme::Ssh, url: format!("ssh://{user}@{host}/{path}"), host: host.into(), port: None })
}

/// `host`, `host:port`, `[v6]`, `[v6]:port`.
fn host_port(s: &str) -> Option<(String, Option<u16>)> {
    let (host, port) = if let Some(rest) = s.strip_prefix('[') {
        let (h, after) = rest.split_once(']')?;
        match after {
            "" => (h, None),
            p => (h, Some(p.strip_prefix(':')?)),
        }
    } else {
        match s.split_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (s, None),
        }
    };
    if host.is_empty() {
        return None;
    }
    let port = match port {
        Some(p) => Some(p.parse::<u16>().ok().filter(|p| *p > 0)?),
        None => None,
    };
    Some((host.to_string(), port))
}

/// The Git host's key lines from `known-hosts`, checked against the repository's host.
pub fn known_hosts(g: &GitOps, repo: &RepoUrl) -> Result<Vec<String>, HandoffError> {
    let text = g.known_hosts.as_deref().ok_or_else(|| {
        HandoffError::answer(
            "gitops.known-hosts",
            format!(
                "an ssh repository needs the Git host's key: set known-hosts = \"{} ssh-ed25519 AAAA...\" (ssh-keyscan prints it; check it)",
                crate::ssh::known_hosts::host_field(&repo.host, repo.ssh_port())
            ),
        )
    })?;
    crate::ssh::known_hosts::pinned_lines(text, &repo.host, repo.ssh_port())
        .map_err(|e| HandoffError::answer("gitops.known-hosts", e))
}

/// A new deploy key: ed25519, OpenSSH format, comment `groundwork@<site>`.
pub fn new_deploy_key(site: &str) -> String {
    let mut key = PrivateKey::random(&mut rand::rng(), Algorithm::Ed25519).expect("ed25519 keys generate");
    key.set_comment(format!("groundwork@{site}"));
    key.to_openssh(LineEnding::LF).expect("a key encodes").to_string()
}

fn deploy_key(secrets: &Secrets) -> Result<PrivateKey, HandoffError> {
    let (table, key) = DEPLOY_KEY;
    let text =
        secrets.get(table, key).ok_or_else(|| HandoffError::MissingSecret { table: table.into(), key: key.into() })?;
    // The parser's errors describe the format, never the key's bytes.
    PrivateKey::from_openssh(text).map_err(|e| HandoffError::BadSecret {
        table: table.into(),
        key: key.into(),
        why: format!("not an OpenSSH private key ({e})"),
    })
}

/// The deploy key's public line (`ssh-ed25519 AAAA... groundwork@site`): what the operator
/// adds to the repository as a read-only deploy key.
pub fn deploy_public_key(secrets: &Secrets) -> Result<String, HandoffError> {
    let key = deploy_key(secrets)?;
    key.public_key().to_openssh().map_err(|e| HandoffError::BadSecret {
        table: DEPLOY_KEY.0.into(),
        key: DEPLOY_KEY.1.into(),
        why: e.to_string(),
    })
}

/// What apply prints for an ssh repository: the deploy key's public line, to be added to the
/// repository (read-only is enough).
pub fn deploy_key_notice(secrets: &Secrets, repo: &RepoUrl) -> Result<String, HandoffError> {
    Ok(format!(
        "add this to your repository {} as a read-only deploy key:\n  {}",
        repo.url,
        deploy_public_key(secrets)?
    ))
}

/// The https token of `[gitops]`, from its file (trailing line break dropped) or environment
/// variable; `None` for a public repository. Errors name the source, never the value.
pub fn read_token(g: &GitOps) -> Result<Option<Sensitive>, HandoffError> {
    let value = match (&g.token_file, &g.token_env) {
        (Some(path), None) => read_token_file(path)?,
        (None, Some(name)) => std::env::var(name).map_err(|_| {
            HandoffError::answer(
                "gitops.token-env",
                format!("the environment variable {name} is not set (or not UTF-8)"),
            )
        })?,
        (None, None) => return Ok(None),
        (Some(_), Some(_)) => {
            return Err(HandoffError::answer("gitops.token-env", "give the token one way: token-file or token-env"));
        }
    };
    let value = value.trim_end_matches(['\n', '\r']).to_string();
    if value.is_empty() || value.contains(['\n', '\r', '\0']) {
        let field = if g.token_file.is_some() { "gitops.token-file" } else { "gitops.token-env" };
        return Err(HandoffError::answer(field, "the token is empty or more than one line"));
    }
    Ok(Some(Sensitive::new(value)))
}

fn read_token_file(path: &Path) -> Result<String, HandoffError> {
    std::fs::read_to_string(path)
        .map_err(|e| HandoffError::answer("gitops.token-file", format!("cannot read {}: {}", path.display(), e.kind())))
}

/// How the cluster gets into the repository.
#[derive(Debug, Clone)]
pub enum Access {
    Ssh { identity: Sensitive, public: String, known_hosts: Vec<String> },
    Token { username: String, token: Sensitive },
    Public,
}

impl Access {
    /// From the answers and secrets (the token read from its file or variable).
    pub fn of(g: &GitOps, repo: &RepoUrl, secrets: &Secrets) -> Result<Access, HandoffError> {
        Access::with_token(g, repo, secrets, read_token(g)?)
    }

    /// As [`Access::of`], with the https token given (tests).
    pub fn with_token(
        g: &GitOps,
        repo: &RepoUrl,
        secrets: &Secrets,
        token: Option<Sensitive>,
    ) -> Result<Access, HandoffError> {
        match repo.scheme {
            Scheme::Ssh => {
                if token.is_some() || g.token_file.is_some() || g.token_env.is_some() {
                    return Err(HandoffError::answer(
                        "gitops.repository",
                        "a token is for https repositories; an ssh repository is read with the deploy key",
                    ));
                }
                let known_hosts = known_hosts(g, repo)?;
                let identity = secrets.get(DEPLOY_KEY.0, DEPLOY_KEY.1).map(Sensitive::new).ok_or_else(|| {
                    HandoffError::MissingSecret { table: DEPLOY_KEY.0.into(), key: DEPLOY_KEY.1.into() }
                })?;
                Ok(Access::Ssh { identity, public: deploy_public_key(secrets)?, known_hosts })
            }
            Scheme::Https => Ok(match token {
                Some(token) => Access::Token {
                    username: g.token_username.clone().unwrap_or_else(|| DEFAULT_TOKEN_USER.into()),
                    token,
                },
                None => Access::Public,
            }),
        }
    }
}

/// Argo CD reads the repository's root as `.`, and paths without `./`.
fn argocd_path(path: &str) -> String {
    let p = path.trim_start_matches("./").trim_end_matches('/');
    if p.is_empty() || p == "." { ".".into() } else { p.into() }
}

/// The engine's objects, in the order they are applied: the repository Secret (and Argo CD's
/// known hosts), then the sync objects. `site_config` is the contract's ConfigMap data (Flux
/// substitutes from a copy of it).
pub fn objects(
    site: &str,
    g: &GitOps,
    repo: &RepoUrl,
    access: &Access,
    site_config: &std::collections::BTreeMap<String, String>,
) -> Vec<Object> {
    match g.engine {
        GitOpsEngine::Flux => flux(site, g, repo, access, site_config),
        GitOpsEngine::Argocd => argocd(site, g, repo, access),
    }
}

fn flux(
    site: &str,
    g: &GitOps,
    repo: &RepoUrl,
    access: &Access,
    site_config: &std::collections::BTreeMap<String, String>,
) -> Vec<Object> {
    let meta = |name: &str| ObjectMeta::new(site, Some(FLUX_NAMESPACE), name);
    let mut out = vec![Object::ConfigMap(ConfigMap {
        api_version: CoreV1,
        kind: ConfigMapKind,
        metadata: meta(FLUX_SITE_CONFIGMAP),
        data: site_config.clone(),
    })];
    let secret = match access {
        Access::Ssh { identity, public, known_hosts } => Some(Secret::opaque(
            meta(FLUX_NAME),
            [
                ("identity", identity.clone()),
                ("identity.pub", Sensitive::new(public.clone())),
                ("known_hosts", Sensitive::new(known_hosts.join("\n") + "\n")),
            ],
        )),
        Access::Token { username, token } => Some(Secret::opaque(
            meta(FLUX_NAME),
            [("username", Sensitive::new(username.clone())), ("password", token.clone())],
        )),
        Access::Public => None,
    };
    let secret_ref = secret.as_ref().map(|s| LocalRef { name: s.metadata.name.clone() });
    out.extend(secret.map(Object::Secret));
    out.push(Object::GitRepository(GitRepository {
        api_version: SourceV1,
        kind: GitRepositoryKind,
        metadata: meta(FLUX_NAME),
        spec: GitRepositorySpec {
            interval: "1m0s".into(),
            url: repo.url.clone(),
            reference: GitRef { branch: g.branch.clone() },
            secret_ref,
        },
    }));
    out.push(Object::Kustomization(Kustomization {
        api_version: KustomizeV1,
        kind: KustomizationKind,
        metadata: meta(FLUX_NAME),
        spec: KustomizationSpec {
            interval: "10m0s".into(),
            path: g.path.clone(),
            prune: true,
            source_ref: KindRef { kind: GitRepositoryKind::VALUE.into(), name: FLUX_NAME.into() },
            post_build: PostBuild {
                substitute_from: vec![KindRef { kind: ConfigMapKind::VALUE.into(), name: FLUX_SITE_CONFIGMAP.into() }],
            },
        },
    }));
    out
}

fn argocd(site: &str, g: &GitOps, repo: &RepoUrl, access: &Access) -> Vec<Object> {
    let meta = |name: &str| ObjectMeta::new(site, Some(ARGOCD_NAMESPACE), name);
    let mut out = Vec::new();
    let mut data = vec![("type", Sensitive::new("git")), ("url", Sensitive::new(repo.url.clone()))];
    match access {
        Access::Ssh { identity, known_hosts, .. } => {
            data.push(("sshPrivateKey", identity.clone()));
            // The whole ConfigMap: install.yaml ships it with GitHub's, GitLab's and
            // Bitbucket's keys; a site trusts the hosts its answers pin, and no others.
            out.push(Object::ConfigMap(ConfigMap {
                api_version: CoreV1,
                kind: ConfigMapKind,
                metadata: meta(ARGOCD_KNOWN_HOSTS)
                    .label("app.kubernetes.io/name", ARGOCD_KNOWN_HOSTS)
                    .label("app.kubernetes.io/part-of", "argocd"),
                data: [("ssh_known_hosts".to_string(), known_hosts.join("\n") + "\n")].into(),
            }));
        }
        Access::Token { username, token } => {
            data.push(("username", Sensitive::new(username.clone())));
            data.push(("password", token.clone()));
        }
        Access::Public => {}
    }
    out.insert(
        0,
        Object::Secret(Secret::opaque(
            meta(ARGOCD_REPO_SECRET).label("argocd.argoproj.io/secret-type", "repository"),
            data,
        )),
    );
    out.push(Object::Application(Application {
        api_version: ArgoV1Alpha1,
        kind: ApplicationKind,
        metadata: meta(ARGOCD_APPLICATION),
        spec: ApplicationSpec {
            project: "default".into(),
            source: ApplicationSource {
                repo_url: repo.url.clone(),
                target_revision: g.branch.clone(),
                path: argocd_path(&g.path),
            },
            destination: Destination {
                server: "https://kubernetes.default.svc".into(),
                namespace: ARGOCD_NAMESPACE.into(),
            },
            sync_policy: SyncPolicy {
                automated: Automated { prune: true, self_heal: true },
                sync_options: vec!["ServerSideApply=true".into()],
            },
        },
    }));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_forms() {
        let u = RepoUrl::parse("git@git.example.org:platform/prod.git").unwrap();
        assert_eq!(
            (u.scheme, u.url.as_str(), u.host.as_str(), u.port),
            (Scheme::Ssh, "ssh://git@git.example.org/platform/prod.git", "git.example.org", None)
        );
        let u = RepoUrl::parse("git@srv:/srv/git/site.git").unwrap();
        assert_eq!(u.url, "ssh://git@srv/srv/git/site.git");
        let u = RepoUrl::parse("ssh://git@git.example.org:2222/platform/prod.git").unwrap();
        assert_eq!((u.url.as_str(), u.port), ("ssh://git@git.example.org:2222/platform/prod.git", Some(2222)));
        assert_eq!(u.ssh_port(), 2222);
        let u = RepoUrl::parse("ssh://git@[fd00::5]:2222/x.git").unwrap();
        assert_eq!((u.host.as_str(), u.port), ("fd00::5", Some(2222)));
        let u = RepoUrl::parse("https://git.example.org:8443/org/repo.git").unwrap();
        assert_eq!((u.scheme, u.host.as_str(), u.port), (Scheme::Https, "git.example.org", Some(8443)));
        for (bad, words) in [
            ("http://git.example.org/x.git", "neither an https:// nor an ssh://"),
            ("file:///srv/x.git", "neither"),
            ("git.example.org/x.git", "not a repository URL"),
            ("https://user:tok@git.example.org/x.git", "credentials"),
            ("https://git.example.org", "no path"),
            ("ssh://git@host:99999/x.git", "host[:port]"),
            ("ssh://git@host:/x.git", "host[:port]"),
            ("git@host:", "not a repository URL"),
            ("git@host:-oProxyCommand=x", "not a repository URL"),
        ] {
            let e = RepoUrl::parse(bad).unwrap_err();
            assert!(e.contains(words), "{bad}: {e}");
        }
    }

    #[test]
    fn argocd_paths() {
        assert_eq!(argocd_path("./"), ".");
        assert_eq!(argocd_path("./clusters/prod"), "clusters/prod");
        assert_eq!(argocd_path("clusters/prod/"), "clusters/prod");
    }

    #[test]
    fn deploy_keys_are_ed25519_and_give_their_public_line() {
        let mut s = Secrets::default();
        assert!(matches!(deploy_public_key(&s), Err(HandoffError::MissingSecret { .. })));
        let pem = new_deploy_key("lab");
        assert!(pem.starts_with("-----BEGIN OPENSSH PRIVATE KEY-----\n"), "{pem}");
        s.insert(DEPLOY_KEY.0, DEPLOY_KEY.1, &pem);
        let public = deploy_public_key(&s).unwrap();
        assert!(public.starts_with("ssh-ed25519 AAAA") && public.ends_with(" groundwork@lab"), "{public}");
        assert_ne!(new_deploy_key("lab"), pem);
        let repo = RepoUrl::parse("git@git.example.org:org/site.git").unwrap();
        let notice = deploy_key_notice(&s, &repo).unwrap();
        assert!(notice.contains("add this to your repository ssh://git@git.example.org/org/site.git"), "{notice}");
        assert!(notice.ends_with(&public) && !notice.contains("PRIVATE"), "{notice}");
        s.insert(DEPLOY_KEY.0, DEPLOY_KEY.1, "-----BEGIN OPENSSH PRIVATE KEY-----\nSup3rS3cret\n");
        let e = deploy_public_key(&s).unwrap_err().to_string();
        assert!(e.contains("[gitops] deploy-key") && !e.contains("Sup3rS3cret"), "{e}");
    }
}
