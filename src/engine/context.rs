//! What templates see: the checked answers (keys in snake_case), derived values, this host,
//! its facts and the secrets. Secrets render into files only; the [`Redactor`] keeps them out
//! of logs, diffs and events.

use minijinja::{Environment, UndefinedBehavior, Value};
use serde_json::{Map, Value as Json, json};

use crate::answers::model::{Answers, ldap_suffix, reverse_zone};
use std::borrow::Cow;

use super::steps;
use crate::playbook::catalog::{Catalog, RoleSpec};
use crate::playbook::step::Step;
use crate::state::Secrets;

/// kebab-case keys to snake_case, all the way down (`internal-domain` -> `internal_domain`).
fn snake(v: Json) -> Json {
    match v {
        Json::Object(m) => {
            Json::Object(m.into_iter().map(|(k, v)| (k.replace('-', "_"), snake(v))).collect::<Map<_, _>>())
        }
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
                // Converged on this machine without SSH: its SSH set-up is left as it is.
                "local": super::target_of(h).local,
            })
        })
        .collect();
    let site = root["site"].as_object_mut().expect("site is a table");
    site.insert("reverse_zone".into(), json!(reverse_zone(&a.network.subnet)));
    site.insert("ldap_suffix".into(), json!(ldap_suffix(domain)));
    site.insert("subnet_prefix".into(), json!(a.network.subnet.prefix()));
    site.insert("subnet_netmask".into(), json!(a.network.subnet.0.mask().to_string()));
    root["hosts"] = Json::Array(hosts);
    if let Some(k) = &a.k3s {
        // `k3s.api_endpoint` always set; `k3s.api_label` when the site's DNS serves it (one
        // label under the internal domain): the zone answers it with every server's address.
        root["k3s"]["api_endpoint"] = json!(k.api_endpoint(domain));
        root["k3s"]["api_label"] = json!(k.api_label(domain));
        // The bundle's files for the nodes' architecture (the manifest says which; amd64
        // names have no suffix on the binary).
        let bundle = k.airgap_bundle.as_deref().map(|p| p.to_string_lossy().into_owned()).unwrap_or_default();
        let manifest = std::fs::read(std::path::Path::new(&bundle).join("manifest.json"))
            .ok()
            .and_then(|b| serde_json::from_slice::<Json>(&b).ok())
            .unwrap_or(Json::Null);
        let arch = manifest["arch"].as_str().map_or_else(|| "amd64".into(), str::to_string);
        // The GitOps engine's image archives (`groundwork bundle --gitops`): `name` (the file
        // name on the node), `path` (on this machine), `image` (the reference it holds).
        let archives: Vec<Json> = manifest["files"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|f| {
                let image = f["image"].as_str()?;
                let path = f["path"].as_str()?;
                let name = path.rsplit('/').next()?;
                Some(json!({"name": name, "path": format!("{bundle}/{path}"), "image": image}))
            })
            .collect();
        root["k3s"]["gitops_archives"] = Json::Array(archives);
        let binary = if arch == "amd64" { "k3s".to_string() } else { format!("k3s-{arch}") };
        let images = format!("k3s-airgap-images-{arch}.tar.zst");
        root["k3s"]["bundle_binary"] = json!(format!("{bundle}/k3s/{binary}"));
        root["k3s"]["bundle_images"] = json!(format!("{bundle}/k3s/{images}"));
        root["k3s"]["images_name"] = json!(images);
        root["k3s"]["arch"] = json!(arch);
        // The token nodes start with (secret: only in 0600 files).
        root["k3s_token"] = json!(secrets.get("k3s", "token").unwrap_or_default());
    }
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
    // The TSIG key Kea and the secondaries sign with (the next one while a rotation rolls it out).
    if let Some((name, secret)) = secrets.tsig_client() {
        root["tsig_client"] = json!({"name": name, "secret": secret});
    }
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

/// A step of a role, its name (with its item) and its rendered form.
pub type RoleStep<'r> = (&'r Step, Cow<'r, str>, steps::Step);

/// The steps of `role` with their paths, commands and checks rendered in `ctx` (a host's
/// context without facts): a step with `each` becomes one step per item of its list, with
/// `item` in its templates and its name.
pub fn role_steps<'r>(
    env: &Environment<'static>,
    ctx: &Value,
    role: &'r RoleSpec,
) -> Result<Vec<RoleStep<'r>>, String> {
    let render = |s: &str, ctx: &Value| {
        if !s.contains("{{") && !s.contains("{%") {
            return Ok(s.to_string());
        }
        env.render_str(s, ctx).map_err(|e| format!("cannot render `{s}`: {e}"))
    };
    let mut out = Vec::new();
    for step in &role.steps {
        let Some(each) = &step.each else {
            out.push((step, Cow::Borrowed(step.name.as_str()), steps::Step::render(&step.kind, &|s| render(s, ctx))?));
            continue;
        };
        let bad = |e: minijinja::Error| format!("step `{}`: cannot evaluate each `{each}`: {e}", step.name);
        let list = env.compile_expression(each).map_err(bad)?.eval(ctx).map_err(bad)?;
        if list.is_undefined() || list.is_none() {
            continue;
        }
        for item in list.try_iter().map_err(bad)? {
            let ctx = minijinja::context! { item => item, ..ctx.clone() };
            let name = render(&step.name, &ctx)?;
            out.push((step, Cow::Owned(name), steps::Step::render(&step.kind, &|s| render(s, &ctx))?));
        }
    }
    Ok(out)
}

/// A minijinja environment with every template of the catalog, as `role/name`.
pub fn environment(catalog: &Catalog) -> Environment<'static> {
    let mut env = Environment::new();
    quoting::register(&mut env);
    env.set_undefined_behavior(UndefinedBehavior::Strict);
    env.set_keep_trailing_newline(true);
    for (name, text) in &catalog.templates {
        env.add_template_owned(name.clone(), text.clone()).unwrap_or_else(|e| panic!("template {name}: {e}"));
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
        let mut values: Vec<String> = secrets.values().filter(|v| v.len() >= 6).map(str::to_string).collect();
        // Longer first, so a secret that contains another is masked whole.
        values.sort_by_key(|v| std::cmp::Reverse(v.len()));
        Redactor { values }
    }

    /// Also mask `value` (a secret that is not in the secrets file, e.g. an API token).
    pub fn also(mut self, value: &str) -> Redactor {
        if value.len() >= 6 {
            self.values.push(value.to_string());
            self.values.sort_by_key(|v| std::cmp::Reverse(v.len()));
        }
        self
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

/// Filters that make an answer value safe where a template puts it: `sh` (a shell word),
/// `pg_literal`, `pg_hba_name`, `mysql_literal`, `mysql_grant_db`, `ldap_dn_value`,
/// `ldif(attr)`, `pgpass`, `cnf_value`. A value that cannot be written safely at all (a NUL
/// byte, a line break where none can be represented) fails the render instead of being mangled.
pub(crate) mod quoting {
    use base64::Engine as _;
    use minijinja::{Environment, Error, ErrorKind, Value};

    fn text(v: &Value) -> String {
        v.as_str().map_or_else(|| v.to_string(), str::to_string)
    }

    fn refuse(filter: &str, why: &str) -> Error {
        Error::new(ErrorKind::InvalidOperation, format!("{filter}: the value {why}"))
    }

    fn no_nul(filter: &str, s: &str) -> Result<(), Error> {
        if s.contains('\0') { Err(refuse(filter, "contains a NUL byte")) } else { Ok(()) }
    }

    /// One shell word: `'...'`, a `'` inside as `'\''`.
    pub fn sh(v: &Value) -> Result<String, Error> {
        let s = text(v);
        no_nul("sh", &s)?;
        Ok(crate::engine::facts::sh_quote(&s))
    }

    /// A PostgreSQL string literal (standard_conforming_strings = on: only `'` is special).
    pub fn pg_literal(v: &Value) -> Result<String, Error> {
        let s = text(v);
        no_nul("pg_literal", &s)?;
        Ok(format!("'{}'", s.replace('\'', "''")))
    }

    /// A database or user name in pg_hba.conf, double-quoted so that a keyword (`all`,
    /// `sameuser`, `replication`...) or a `+group`, `@file` or `/regex` form matches literally.
    pub fn pg_hba_name(v: &Value) -> Result<String, Error> {
        let s = text(v);
        if s.is_empty() || s.contains('"') || s.chars().any(char::is_control) {
            return Err(refuse(
                "pg_hba_name",
                "cannot be quoted in pg_hba.conf (empty, a `\"` or a control character)",
            ));
        }
        Ok(format!("\"{s}\""))
    }

    /// A MariaDB string literal (default sql_mode: backslash escapes), with no raw control
    /// character left, so the client splits statements where the server does.
    pub fn mysql_literal(v: &Value) -> String {
        let s = text(v);
        let mut out = String::with_capacity(s.len() + 2);
        out.push('\'');
        for c in s.chars() {
            match c {
                '\0' => out.push_str(r"\0"),
                '\n' => out.push_str(r"\n"),
                '\r' => out.push_str(r"\r"),
                '\x1a' => out.push_str(r"\Z"),
                '\\' => out.push_str(r"\\"),
                '\'' => out.push_str(r"\'"),
                c => out.push(c),
            }
        }
        out.push('\'');
        out
    }

    /// A database name as GRANT reads it: `_` and `%` are wildcards there, so they (and the
    /// escape character) get a backslash; the owner of `app_db` must not get `appXdb`.
    pub fn mysql_grant_db(v: &Value) -> String {
        let s = text(v);
        let mut out = String::with_capacity(s.len() + 4);
        for c in s.chars() {
            if matches!(c, '\\' | '_' | '%') {
                out.push('\\');
            }
            out.push(c);
        }
        out
    }

    /// An attribute value inside a DN (RFC 4514): the specials escaped, and every byte that is
    /// not printable ASCII as `\hh`, so the DN is one line of ASCII.
    pub fn ldap_dn_value(v: &Value) -> String {
        let s = text(v);
        let last = s.len().saturating_sub(1);
        let mut out = String::with_capacity(s.len() + 4);
        for (i, b) in s.bytes().enumerate() {
            match b {
                b',' | b'+' | b'"' | b'\\' | b'<' | b'>' | b';' | b'=' => {
                    out.push('\\');
                    out.push(b as char);
                }
                b'#' if i == 0 => out.push_str(r"\#"),
                b' ' if i == 0 || i == last => out.push_str(r"\ "),
                0x21..=0x7e | b' ' => out.push(b as char),
                _ => out.push_str(&format!("\\{b:02x}")),
            }
        }
        out
    }

    /// `attr: value`, or `attr:: <base64>` when the value is not an RFC 2849 SAFE-STRING
    /// (non-ASCII, a control character, a leading space, `:` or `<`, a trailing space).
    pub fn ldif(v: &Value, attr: &str) -> String {
        let s = text(v);
        let safe = s.bytes().all(|b| (0x20..0x7f).contains(&b)) && !s.starts_with([' ', ':', '<']) && !s.ends_with(' ');
        if safe {
            format!("{attr}: {s}")
        } else {
            format!("{attr}:: {}", base64::engine::general_purpose::STANDARD.encode(s.as_bytes()))
        }
    }

    /// A field of a libpq password file: `\` and `:` escaped; a line break cannot be written.
    pub fn pgpass(v: &Value) -> Result<String, Error> {
        let s = text(v);
        if s.contains(['\0', '\n', '\r']) {
            return Err(refuse("pgpass", "contains a line break or a NUL byte"));
        }
        Ok(s.replace('\\', r"\\").replace(':', r"\:"))
    }

    /// A value in a MariaDB option file: double-quoted, with the escapes the option parser
    /// undoes (`\\`, `\"`, `\'`, `\n`, `\r`, `\t`), so `#`, quotes and spaces survive.
    pub fn cnf_value(v: &Value) -> Result<String, Error> {
        let s = text(v);
        no_nul("cnf_value", &s)?;
        let mut out = String::from("\"");
        for c in s.chars() {
            match c {
                '\\' => out.push_str(r"\\"),
                '"' => out.push_str(r#"\""#),
                '\'' => out.push_str(r"\'"),
                '\n' => out.push_str(r"\n"),
                '\r' => out.push_str(r"\r"),
                '\t' => out.push_str(r"\t"),
                c => out.push(c),
            }
        }
        out.push('"');
        Ok(out)
    }

    /// A YAML double-quoted scalar: JSON's string escapes, which YAML reads the same (`\"`,
    /// `\\`, `\n`, `\uXXXX`), so `:`, `#`, quotes, a leading `-` or `*` stay text. A list
    /// becomes a flow sequence of such scalars.
    pub fn yaml(v: &Value) -> Result<String, Error> {
        if v.kind() == minijinja::value::ValueKind::Seq {
            let items: Result<Vec<String>, Error> = v.try_iter()?.map(|i| yaml(&i)).collect();
            return Ok(format!("[{}]", items?.join(", ")));
        }
        let s = text(v);
        no_nul("yaml", &s)?;
        Ok(serde_json::to_string(&s).expect("a string serializes"))
    }

    pub fn register(env: &mut Environment<'_>) {
        env.add_filter("sh", |v: Value| sh(&v));
        env.add_filter("pg_literal", |v: Value| pg_literal(&v));
        env.add_filter("pg_hba_name", |v: Value| pg_hba_name(&v));
        env.add_filter("mysql_literal", |v: Value| mysql_literal(&v));
        env.add_filter("mysql_grant_db", |v: Value| mysql_grant_db(&v));
        env.add_filter("ldap_dn_value", |v: Value| ldap_dn_value(&v));
        env.add_filter("ldif", |v: Value, attr: String| ldif(&v, &attr));
        env.add_filter("pgpass", |v: Value| pgpass(&v));
        env.add_filter("cnf_value", |v: Value| cnf_value(&v));
        env.add_filter("yaml", |v: Value| yaml(&v));
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        fn v(s: &str) -> Value {
            Value::from(s)
        }

        #[test]
        fn shell_words_survive_quotes_and_substitutions() {
            assert_eq!(sh(&v("/x'; touch /tmp/p; echo '")).unwrap(), r"'/x'\''; touch /tmp/p; echo '\'''");
            assert_eq!(sh(&v("$(id) `id` \\ \n")).unwrap(), "'$(id) `id` \\ \n'");
            assert!(sh(&v("a\0b")).is_err());
        }

        #[test]
        fn sql_literals_and_names() {
            assert_eq!(pg_literal(&v(r"o'k\")).unwrap(), r"'o''k\'");
            assert_eq!(mysql_literal(&v("o'k\\\n;")), r"'o\'k\\\n;'");
            assert_eq!(mysql_grant_db(&v(r"app_db%\")), r"app\_db\%\\");
            assert_eq!(pg_hba_name(&v("all")).unwrap(), "\"all\"");
            assert!(pg_hba_name(&v("a\"b")).is_err() && pg_hba_name(&v("a\nb")).is_err());
        }

        #[test]
        fn ldap_values() {
            assert_eq!(ldap_dn_value(&v("a,b+c=d")), r"a\,b\+c\=d");
            assert_eq!(ldap_dn_value(&v("#x ")), r"\#x\ ");
            assert_eq!(ldap_dn_value(&v("é\n")), r"\c3\a9\0a");
            assert_eq!(ldif(&v("Plain Org"), "o"), "o: Plain Org");
            assert_eq!(ldif(&v("x\ndn: cn=evil"), "o"), "o:: eApkbjogY249ZXZpbA==");
            assert_eq!(ldif(&v(" lead"), "o"), "o:: IGxlYWQ=");
        }

        #[test]
        fn option_and_password_files() {
            assert_eq!(pgpass(&v(r"a:b\c")).unwrap(), r"a\:b\\c");
            assert!(pgpass(&v("a\nb")).is_err());
            assert_eq!(cnf_value(&v(r#"p#w"'\"#)).unwrap(), r#""p#w\"\'\\""#);
        }

        #[test]
        fn yaml_scalars_and_lists() {
            assert_eq!(yaml(&v("k3s.example.org")).unwrap(), r#""k3s.example.org""#);
            assert_eq!(yaml(&v("a: b # c\n- \"d\"\\")).unwrap(), r#""a: b # c\n- \"d\"\\""#);
            assert_eq!(yaml(&Value::from(vec!["traefik", "x\"y"])).unwrap(), r#"["traefik", "x\"y"]"#);
            assert!(yaml(&v("a\0b")).is_err());
        }
    }
}
