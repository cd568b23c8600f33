//! What templates see: the checked answers (keys in snake_case), derived values, this host,
//! its facts and the secrets. Secrets render into files only; the [`Redactor`] keeps them out
//! of logs, diffs and events.

use minijinja::{Environment, UndefinedBehavior, Value};
use serde_json::{Map, Value as Json, json};

use crate::answers::model::{Answers, ldap_suffix, reverse_zone};
use crate::playbook::catalog::Catalog;
use crate::state::Secrets;

/// kebab-case keys to snake_case, all the way down (`internal-domain` -> `internal_domain`).
fn snake(v: Json) -> Json {
    match v {
        Json::Object(m) => Json::Object(
            m.into_iter()
                .map(|(k, v)| (k.replace('-', "_"), snake(v)))
                .collect::<Map<_, _>>(),
        ),
        Json::Array(a) => Json::Array(a.into_iter().map(snake).collect()),
        other => other,
    }
}

/// The site-wide part of the context, shared by every host.
pub fn site_context(a: &Answers, secrets: &Secrets) -> Json {
    let mut root = snake(serde_json::to_value(a).expect("answers serialize"));
    let domain = &a.site.internal_domain;
    let hosts: Vec<Json> = a
        .hosts
        .iter()
        .map(|h| {
            json!({
                "name": h.name,
                "address": h.address.to_string(),
                "fqdn": format!("{}.{domain}", h.name),
                "roles": h.roles.iter().map(|r| r.as_str()).collect::<Vec<_>>(),
            })
        })
        .collect();
    let site = root["site"].as_object_mut().expect("site is a table");
    site.insert("reverse_zone".into(), json!(reverse_zone(&a.network.subnet)));
    site.insert("ldap_suffix".into(), json!(ldap_suffix(domain)));
    site.insert("subnet_prefix".into(), json!(a.network.subnet.prefix()));
    site.insert("subnet_netmask".into(), json!(a.network.subnet.0.mask().to_string()));
    root["hosts"] = Json::Array(hosts);
    // role -> names of its hosts, in answer-file order (`role_hosts.dns[0]` is the primary).
    let role_hosts: Map<String, Json> = crate::answers::model::Role::ALL
        .iter()
        .map(|r| {
            let names: Vec<&str> = a.hosts_with(*r).map(|(_, h)| h.name.as_str()).collect();
            (r.as_str().replace('-', "_"), json!(names))
        })
        .collect();
    root["role_hosts"] = Json::Object(role_hosts);
    root["secrets"] = secrets.to_json();
    root
}

/// The context of one host: the site plus `host` (with `container` and facts).
pub fn host_context(site: &Json, host_name: &str, facts: &super::facts::Facts) -> Value {
    let mut root = site.clone();
    let me = root["hosts"]
        .as_array()
        .and_then(|hs| hs.iter().find(|h| h["name"] == host_name))
        .cloned()
        .unwrap_or_else(|| json!({"name": host_name}));
    let mut me = me;
    me["container"] = json!(facts.container());
    me["virtualization"] = json!(facts.virtualization);
    me["os_id"] = json!(facts.os_id);
    me["os_codename"] = json!(facts.os_codename);
    root["host"] = me;
    Value::from_serialize(&root)
}

/// A minijinja environment with every template of the catalog, as `role/name`.
pub fn environment(catalog: &Catalog) -> Environment<'static> {
    let mut env = Environment::new();
    env.set_undefined_behavior(UndefinedBehavior::Strict);
    env.set_keep_trailing_newline(true);
    // `{{ value | sh }}`: one single-quoted POSIX sh word, whatever the value holds.
    env.add_filter("sh", |v: String| super::facts::sh_quote(&v));
    for (name, text) in &catalog.templates {
        env.add_template_owned(name.clone(), text.clone())
            .unwrap_or_else(|e| panic!("template {name}: {e}"));
    }
    env
}

/// Replaces every secret value with `********`.
#[derive(Debug, Clone, Default)]
pub struct Redactor {
    values: Vec<String>,
}

impl Redactor {
    pub fn new(secrets: &Secrets) -> Redactor {
        let mut values: Vec<String> = secrets
            .values()
            .filter(|v| v.len() >= 6)
            .map(str::to_string)
            .collect();
        // Longer first, so a secret that contains another is masked whole.
        values.sort_by_key(|v| std::cmp::Reverse(v.len()));
        Redactor { values }
    }

    pub fn redact(&self, text: &str) -> String {
        let mut out = text.to_string();
        for v in &self.values {
            if out.contains(v.as_str()) {
                out = out.replace(v.as_str(), "********");
            }
        }
        out
    }
}
