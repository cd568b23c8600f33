//! The site contract: what groundwork built, handed to the applications in the cluster.
//!
//! - Namespace `groundwork-site`.
//! - ConfigMap `site`: the site's coordinates, with keys that are Flux substitution variables
//!   (`^[_a-zA-Z][_a-zA-Z0-9]*$`), so a repository can write `${site_internal_domain}`.
//! - One Secret per credential, with the keys common charts expect: `ldap-reader` (the
//!   directory's read-only account) and `postgresql-<db>` / `mariadb-<db>` (each database's
//!   owner), values from secrets.toml.
//! - The same ConfigMap and Secrets in each namespace of `[gitops] contract-namespaces`.
//!
//! Services are named as the site's DNS serves them (`ldap.`, `pg.`, `mariadb.<internal-domain>`,
//! or the host's own name when another host has taken the alias); a site without a dns role
//! gets the host's address. LDAP is `ldaps://` (636) when the answers give the directory a
//! certificate (`tls-cert`), else `ldap://` (389): applications cannot verify the self-signed
//! certificate groundwork generates otherwise.

use std::collections::BTreeMap;

use minijinja::Value as JinjaValue;

use super::HandoffError;
use super::objects::*;
use crate::answers::model::{Answers, Role, ldap_suffix};
use crate::engine::context::quoting::ldap_dn_value;
use crate::http::percent_encode as percent;
use crate::state::Secrets;
use crate::verify::ldap::{expected_ous, reader_dn};

pub const NAMESPACE: &str = "groundwork-site";
pub const CONFIGMAP: &str = "site";
pub const LDAP_SECRET: &str = "ldap-reader";
pub const POSTGRESQL_PORT: u16 = 5432;
pub const MARIADB_PORT: u16 = 3306;

/// The contract's values: the ConfigMap's data and each Secret's name and data.
#[derive(Debug, Clone)]
pub struct Contract {
    pub site: String,
    pub config: BTreeMap<String, String>,
    pub secrets: Vec<(String, Vec<(&'static str, Sensitive)>)>,
    /// Namespaces that get a copy.
    pub copies: Vec<String>,
}

/// Is `s` usable as a Flux substitution variable (and so as a ConfigMap key)?
pub fn is_variable(s: &str) -> bool {
    s.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
        && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Is `s` a DNS-1123 label (a namespace, or a name groundwork gives an object)?
pub fn is_dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

/// `s` made a DNS-1123 label: lower case, anything but letters and digits as `-`, no `-` at
/// either end, at most 63 characters. `None` when nothing is left.
pub fn dns_label(s: &str) -> Option<String> {
    let mapped: String =
        s.chars().map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_lowercase() } else { '-' }).collect();
    let cut: String = mapped.trim_matches('-').chars().take(63).collect();
    let label = cut.trim_end_matches('-').to_string();
    (!label.is_empty()).then_some(label)
}

/// `s` made a variable-name part: anything but letters, digits and `_` as `_`, lower case.
fn variable_part(s: &str) -> String {
    s.chars().map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_lowercase() } else { '_' }).collect()
}

/// Where a service is reached from the cluster (see the module's notes).
fn service_host(a: &Answers, role: Role, alias: &str) -> Option<String> {
    let (_, h) = a.hosts_with(role).next()?;
    if !a.has_role(Role::Dns) {
        return Some(h.address.to_string());
    }
    let domain = &a.site.internal_domain;
    let alias_taken = a.hosts.iter().any(|x| x.name == alias && x.name != h.name);
    Some(if alias_taken { format!("{}.{domain}", h.name) } else { format!("{alias}.{domain}") })
}

/// Keys and names already given, with the answer field each came from (to name both when
/// two collide).
#[derive(Default)]
struct Taken(BTreeMap<String, String>);

impl Taken {
    fn take(&mut self, what: &str, name: &str, field: &str) -> Result<(), HandoffError> {
        if let Some(first) = self.0.get(name) {
            return Err(HandoffError::answer(
                field,
                format!("gives the {what} `{name}`, which {first} gives already; rename one of them"),
            ));
        }
        self.0.insert(name.to_string(), field.to_string());
        Ok(())
    }
}

struct Builder {
    config: BTreeMap<String, String>,
    keys: Taken,
}

impl Builder {
    fn put(&mut self, key: String, value: String, field: &str) -> Result<(), HandoffError> {
        if !is_variable(&key) {
            return Err(HandoffError::answer(field, format!("gives `{key}`, which is not a usable variable name")));
        }
        self.keys.take("ConfigMap key", &key, field)?;
        self.config.insert(key, value);
        Ok(())
    }
}

fn secret_of<'s>(secrets: &'s Secrets, table: &str, key: &str) -> Result<&'s str, HandoffError> {
    secrets.get(table, key).ok_or_else(|| HandoffError::MissingSecret { table: table.into(), key: key.into() })
}

/// The contract of `a`, with the passwords from `secrets`.
pub fn contract(a: &Answers, secrets: &Secrets) -> Result<Contract, HandoffError> {
    let site = &a.site;
    if !is_dns_label(&site.name) {
        return Err(HandoffError::answer("site.name", "is not a DNS label, so not a label value either"));
    }
    let mut b = Builder { config: BTreeMap::new(), keys: Taken::default() };
    let mut names = Taken::default();
    let mut out_secrets = Vec::new();

    b.put("site_name".into(), site.name.clone(), "site.name")?;
    b.put("site_internal_domain".into(), site.internal_domain.clone(), "site.internal-domain")?;
    b.put("site_external_domain".into(), site.external_domain.clone(), "site.external-domain")?;
    b.put("site_timezone".into(), site.timezone.clone(), "site.timezone")?;
    let dns: Vec<String> = a.hosts_with(Role::Dns).map(|(_, h)| h.address.to_string()).collect();
    b.put("site_dns_servers".into(), dns.join(","), "host[].roles")?;
    if let Some(k) = &a.k3s {
        b.put("k3s_api_endpoint".into(), k.api_endpoint(&site.internal_domain), "k3s.api-endpoint")?;
    }

    if let (Some(l), Some(host)) = (&a.ldap, service_host(a, Role::Ldap, "ldap")) {
        let suffix = ldap_suffix(&site.internal_domain);
        let url = match l.tls {
            Some(_) => format!("ldaps://{host}:636"),
            None => format!("ldap://{host}:389"),
        };
        let ou_dn = |ou: &str| format!("ou={},{suffix}", ldap_dn_value(&JinjaValue::from(ou)));
        b.put("ldap_url".into(), url.clone(), "ldap")?;
        b.put("ldap_host".into(), host.clone(), "ldap")?;
        b.put("ldap_port".into(), if l.tls.is_some() { "636" } else { "389" }.into(), "ldap")?;
        b.put("ldap_base_dn".into(), suffix.clone(), "site.internal-domain")?;
        b.put("ldap_bind_dn".into(), reader_dn(&suffix), "ldap")?;
        b.put("ldap_users_dn".into(), ou_dn("people"), "ldap")?;
        b.put("ldap_groups_dn".into(), ou_dn("groups"), "ldap")?;
        b.put("ldap_services_dn".into(), ou_dn("services"), "ldap")?;
        for ou in expected_ous(a).iter().skip(3) {
            let i = l.extra_ous.iter().position(|x| x == ou).unwrap_or_default();
            b.put(format!("ldap_{}_dn", variable_part(ou)), ou_dn(ou), &format!("ldap.extra-ous[{i}]"))?;
        }
        let password = secret_of(secrets, "ldap", "service")?;
        names.take("Secret name", LDAP_SECRET, "ldap")?;
        out_secrets.push((
            LDAP_SECRET.to_string(),
            vec![
                ("url", Sensitive::new(url)),
                ("bind-dn", Sensitive::new(reader_dn(&suffix))),
                ("username", Sensitive::new(reader_dn(&suffix))),
                ("password", Sensitive::new(password)),
                ("base-dn", Sensitive::new(suffix)),
            ],
        ));
    }

    for (engine, list, role, alias, port, scheme, jdbc) in [
        ("postgresql", &a.databases.postgresql, Role::Postgresql, "pg", POSTGRESQL_PORT, "postgresql", "postgresql"),
        ("mariadb", &a.databases.mariadb, Role::Mariadb, "mariadb", MARIADB_PORT, "mysql", "mariadb"),
    ] {
        if list.is_empty() {
            continue;
        }
        let host = service_host(a, role, alias).ok_or_else(|| {
            HandoffError::answer(format!("databases.{engine}"), format!("no host has the {engine} role"))
        })?;
        for (i, d) in list.iter().enumerate() {
            let field = format!("databases.{engine}[{i}].name");
            let var = format!("{engine}_{}", variable_part(&d.name));
            b.put(format!("{var}_host"), host.clone(), &field)?;
            b.put(format!("{var}_port"), port.to_string(), &field)?;
            b.put(format!("{var}_database"), d.name.clone(), &field)?;
            let name = dns_label(&format!("{engine}-{}", d.name))
                .ok_or_else(|| HandoffError::answer(&field, "gives no usable Secret name"))?;
            names.take("Secret name", &name, &field)?;
            let password = secret_of(secrets, engine, &d.user)?;
            let uri =
                format!("{scheme}://{}:{}@{host}:{port}/{}", percent(&d.user), percent(password), percent(&d.name));
            out_secrets.push((
                name,
                vec![
                    ("host", Sensitive::new(host.clone())),
                    ("port", Sensitive::new(port.to_string())),
                    ("database", Sensitive::new(d.name.clone())),
                    ("username", Sensitive::new(d.user.clone())),
                    ("password", Sensitive::new(password)),
                    ("uri", Sensitive::new(uri)),
                    ("jdbc-url", Sensitive::new(format!("jdbc:{jdbc}://{host}:{port}/{}", percent(&d.name)))),
                ],
            ));
        }
    }

    let mut copies = Taken::default();
    copies.take("namespace", NAMESPACE, "the contract")?;
    let list = a.gitops.as_ref().map(|g| g.contract_namespaces.clone()).unwrap_or_default();
    for (i, ns) in list.iter().enumerate() {
        let field = format!("gitops.contract-namespaces[{i}]");
        if !is_dns_label(ns) {
            return Err(HandoffError::answer(field, "is not a namespace name (a DNS label)"));
        }
        copies.take("namespace", ns, &field)?;
    }
    Ok(Contract { site: site.name.clone(), config: b.config, secrets: out_secrets, copies: list })
}

impl Contract {
    /// The objects of the contract in `namespace`: the ConfigMap, then the Secrets.
    fn in_namespace(&self, namespace: &str) -> Vec<Object> {
        let meta = |name: &str| ObjectMeta::new(&self.site, Some(namespace), name);
        let mut out = vec![
            Object::Namespace(Namespace {
                api_version: CoreV1,
                kind: NamespaceKind,
                metadata: ObjectMeta::new(&self.site, None, namespace),
            }),
            Object::ConfigMap(ConfigMap {
                api_version: CoreV1,
                kind: ConfigMapKind,
                metadata: meta(CONFIGMAP),
                data: self.config.clone(),
            }),
        ];
        for (name, data) in &self.secrets {
            out.push(Object::Secret(Secret::opaque(meta(name), data.iter().cloned())));
        }
        out
    }

    /// Every object of the contract, in apply order: `groundwork-site` (namespace, ConfigMap,
    /// Secrets), then each copy.
    pub fn objects(&self) -> Vec<Object> {
        let mut out = self.in_namespace(NAMESPACE);
        for ns in &self.copies {
            out.extend(self.in_namespace(ns));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_variables() {
        assert_eq!(dns_label("postgresql-matrix_synapse").as_deref(), Some("postgresql-matrix-synapse"));
        assert_eq!(dns_label("mariadb-_x_").as_deref(), Some("mariadb--x"));
        assert_eq!(dns_label("__").as_deref(), None);
        assert_eq!(dns_label(&"a".repeat(80)).map(|s| s.len()), Some(63));
        assert!(is_variable("site_internal_domain") && is_variable("_x1"));
        assert!(!is_variable("1x") && !is_variable("a-b") && !is_variable(""));
        assert!(is_dns_label("groundwork-site") && !is_dns_label("Apps") && !is_dns_label("-a"));
    }

    #[test]
    fn uri_parts_are_percent_encoded() {
        assert_eq!(percent("p@ss:w/rd %#?é"), "p%40ss%3Aw%2Frd%20%25%23%3F%C3%A9");
        assert_eq!(percent("Ab9-._~"), "Ab9-._~");
    }
}
