//! The first pass over an answer file: every key, type, allowed value and address against the
//! JSON schema of the model, and every string through its field check, in one walk that
//! reports all it finds. (serde, which builds the model afterwards, stops at the first problem
//! of a section: alone, it would report missing keys one run at a time.)

use std::collections::HashSet;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::OnceLock;

use serde_json::Value as Json;
use toml::Spanned;
use toml::de::{DeTable, DeValue};

use super::model::{Answers, MacAddr, SECTIONS, Subnet};
use super::report::{Problem, nearest, shown};
use super::rules::{self, MAX_PATH};

/// A string without a field check of its own (an address, a role) is refused past this.
const MAX_STRING: usize = MAX_PATH;

fn schema() -> &'static Json {
    static SCHEMA: OnceLock<Json> = OnceLock::new();
    SCHEMA.get_or_init(|| serde_json::to_value(schemars::schema_for!(Answers)).expect("the schema is JSON"))
}

/// Every problem the schema and the field checks find in `doc`, in no particular order.
pub fn check(doc: &Spanned<DeTable<'_>>) -> Vec<Problem> {
    let mut walk = Walk { root: schema(), out: Vec::new() };
    walk.table("", "", walk.root, doc.get_ref(), doc.span());
    walk.out
}

static NOTHING: Json = Json::Null;

/// `s` with `$ref`s followed and optional values (`anyOf: [T, null]`) unwrapped.
pub(crate) fn resolve<'s>(root: &'s Json, mut s: &'s Json) -> &'s Json {
    for _ in 0..16 {
        if let Some(r) = s.get("$ref").and_then(Json::as_str) {
            s = r.strip_prefix("#/$defs/").and_then(|name| root.get("$defs")?.get(name)).unwrap_or(&NOTHING);
        } else if let Some(any) = s.get("anyOf").and_then(Json::as_array) {
            s = any.iter().find(|alt| alt.get("type").and_then(Json::as_str) != Some("null")).unwrap_or(&NOTHING);
        } else {
            break;
        }
    }
    s
}

/// The JSON type of a schema node (`["string", "null"]` is a string).
pub(crate) fn kind(s: &Json) -> Option<&str> {
    match s.get("type")? {
        Json::String(t) => Some(t),
        Json::Array(ts) => ts.iter().filter_map(Json::as_str).find(|t| *t != "null"),
        _ => None,
    }
}

struct Walk<'s> {
    root: &'s Json,
    out: Vec<Problem>,
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() { key.to_string() } else { format!("{path}.{key}") }
}

/// The keys of a `oneOf` alternative that is only `{"required": [...]}`; nothing else is read.
fn keys_of(alt: &Json) -> Option<Vec<&str>> {
    let required = alt.get("required")?.as_array()?;
    (alt.as_object()?.len() == 1).then(|| required.iter().filter_map(Json::as_str).collect())
}

impl<'s> Walk<'s> {
    fn value(&mut self, path: &str, pattern: &str, s: &'s Json, v: &Spanned<DeValue<'_>>) {
        let s = resolve(self.root, s);
        let span = v.span();
        match (kind(s), v.get_ref()) {
            (Some("object"), DeValue::Table(t)) => self.table(path, pattern, s, t, span),
            (Some("array"), DeValue::Array(items)) => {
                let item = s.get("items").unwrap_or(&NOTHING);
                for (i, it) in items.iter().enumerate() {
                    self.value(&format!("{path}[{i}]"), &format!("{pattern}[]"), item, it);
                }
            }
            (Some("string"), DeValue::String(text)) => self.string(path, pattern, s, text, span),
            (Some("integer"), DeValue::Integer(n)) => {
                let value = i128::from_str_radix(n.as_str(), n.radix()).ok();
                let (min, max) = integer_range(s);
                if !value.is_some_and(|x| (min..=max).contains(&x)) {
                    self.out.push(
                        Problem::new(path, format!("{} is out of range ({min} to {max})", shown(&n.to_string())))
                            .at(span),
                    );
                }
            }
            (Some("boolean"), DeValue::Boolean(_)) => {}
            (Some(want), found) => {
                let p = if path == "host" {
                    Problem::new("host", "`host` must be a list of tables")
                        .help("write each host as its own [[host]] table")
                } else {
                    let found = if rules::SECRET_FIELDS.contains(&pattern) {
                        "a value of another type".to_string()
                    } else {
                        describe(found)
                    };
                    Problem::new(path, format!("wrong type: {found}, expected {}", expected(want)))
                };
                self.out.push(p.at(span));
            }
            (None, _) => {}
        }
    }

    fn table(&mut self, path: &str, pattern: &str, s: &'s Json, t: &DeTable<'_>, span: std::ops::Range<usize>) {
        let props = s.get("properties").and_then(Json::as_object);
        let closed = s.get("additionalProperties") == Some(&Json::Bool(false));
        let mut present = HashSet::new();
        // A misspelt key already says "did you mean `address`?": `address` is not also missing.
        let mut suggested = HashSet::new();
        for (key, v) in t.iter() {
            let name: &str = key.get_ref();
            present.insert(name);
            match props.and_then(|p| p.get(name)) {
                Some(ps) => self.value(&join(path, name), &join(pattern, name), ps, v),
                None if closed => {
                    let (p, close) = self.unknown(path, name, props);
                    suggested.extend(close);
                    self.out.push(p.at(key.span()));
                }
                None => {}
            }
        }
        let required = s.get("required").and_then(Json::as_array);
        for r in required.into_iter().flatten().filter_map(Json::as_str) {
            if !present.contains(r) && !suggested.contains(r) {
                let p = if path.is_empty() {
                    Problem::new(r, format!("the [{r}] section is missing")).at(0..0)
                } else {
                    Problem::new(join(path, r), format!("required key `{r}` is missing")).at(span.clone())
                };
                self.out.push(p);
            }
        }
        self.alternatives(path, s, t, &present, span);
    }

    /// The schema's rules between the keys of a table: `oneOf` alternatives (exactly one of
    /// them given) and `dependentRequired` (a key that needs others). The model turns such
    /// keys into one typed value (`model::TokenSecret`, `model::TlsPair`) and would stop at the
    /// first problem of the section; here each is reported with the rest.
    fn alternatives(
        &mut self,
        path: &str,
        s: &Json,
        t: &DeTable<'_>,
        present: &HashSet<&str>,
        span: std::ops::Range<usize>,
    ) {
        let key_span = |name: &str| t.iter().find(|(k, _)| k.get_ref() == name).map(|(k, _)| k.span());
        if let Some(alts) = s.get("oneOf").and_then(Json::as_array) {
            let alts: Option<Vec<Vec<&str>>> = alts.iter().map(keys_of).collect();
            let alts = alts.unwrap_or_default();
            let named: Vec<String> = alts.iter().map(|a| format!("`{}`", a.join("` + `"))).collect();
            let choices = match named.split_last() {
                Some((last, [])) => last.clone(),
                Some((last, rest)) => format!("{} or {last}", rest.join(", ")),
                None => String::new(),
            };
            let mut given: Vec<&Vec<&str>> = alts.iter().filter(|a| a.iter().all(|k| present.contains(k))).collect();
            // The first one in the file stands; the later ones are the extra.
            given.sort_by_key(|a| key_span(a[0]).map_or(0, |r| r.start));
            match given.as_slice() {
                [] if !alts.is_empty() => {
                    self.out.push(Problem::new(path, format!("one of {choices} is needed")).at(span.clone()));
                }
                [first, others @ ..] => {
                    for other in others {
                        let p = Problem::new(
                            join(path, other[0]),
                            format!("`{}` is given besides `{}`: they are alternatives", other[0], first[0]),
                        )
                        .help(format!("give only one of {choices}"))
                        .see(join(path, first[0]), "the other one");
                        self.out.push(p.at(key_span(other[0]).unwrap_or(span.clone())));
                    }
                }
                [] => {}
            }
        }
        if let Some(deps) = s.get("dependentRequired").and_then(Json::as_object) {
            for (key, needs) in deps {
                if !present.contains(key.as_str()) {
                    continue;
                }
                for need in needs.as_array().into_iter().flatten().filter_map(Json::as_str) {
                    if !present.contains(need) {
                        let p = Problem::new(join(path, key), format!("`{key}` is given without `{need}`"))
                            .help(format!("`{key}` and `{need}` go together: give both, or neither"));
                        self.out.push(p.at(key_span(key).unwrap_or(span.clone())));
                    }
                }
            }
        }
    }

    /// The problem of an unknown key, and the known key it is probably a typo of.
    fn unknown(
        &self,
        path: &str,
        name: &str,
        props: Option<&'s serde_json::Map<String, Json>>,
    ) -> (Problem, Option<&'s str>) {
        let known: Vec<&'s str> = props.map(|p| p.keys().map(String::as_str).collect()).unwrap_or_default();
        // An edit distance over a long key would cost more than it could find.
        let close = if name.len() <= 64 { nearest(name, &known) } else { None };
        // The key goes into the field's path too: shortened like any quoted value.
        let name = &shown(name);
        if path.is_empty() {
            let p = Problem::new(name, format!("unknown section `{name}`"));
            let p = match close {
                Some(s) => p.help(format!("did you mean `{s}`?")),
                None => p.help(format!("known sections: {}", SECTIONS.join(", "))),
            };
            return (p, close);
        }
        let p = Problem::new(join(path, name), format!("unknown key `{name}`"));
        let p = match close {
            Some(s) => p.help(format!("did you mean `{s}`?")),
            None if !known.is_empty() => p.help(format!("known keys here: {}", known.join(", "))),
            None => p,
        };
        (p, close)
    }

    fn string(&mut self, path: &str, pattern: &str, s: &Json, text: &str, span: std::ops::Range<usize>) {
        // The field's own check first: each starts with its length limit, so a value of any
        // size is refused at the cost of reading its length.
        if let Some(check) = rules::field_check(pattern) {
            if let Err(e) = check(text) {
                self.out.push(Problem::new(path, e).at(span));
            }
            return;
        }
        if text.len() > MAX_STRING {
            self.out.push(Problem::new(path, format!("the value is longer than {MAX_STRING} characters")).at(span));
            return;
        }
        if let Some(choices) = s.get("enum").and_then(Json::as_array) {
            let choices: Vec<&str> = choices.iter().filter_map(Json::as_str).collect();
            if !choices.contains(&text) {
                let p = Problem::new(path, format!("`{}` is not one of the allowed values", shown(text)));
                let p = match nearest(text, &choices) {
                    Some(c) => p.help(format!("did you mean `{c}`? allowed: {}", choices.join(", "))),
                    None => p.help(format!("allowed: {}", choices.join(", "))),
                };
                self.out.push(p.at(span));
            }
            return;
        }
        let problem = match s.get("format").and_then(Json::as_str) {
            Some("ipv4") => text
                .parse::<Ipv4Addr>()
                .err()
                .map(|_| format!("`{}` is not an IPv4 address (e.g. 10.77.0.10)", shown(text))),
            Some("ip") => text
                .parse::<IpAddr>()
                .err()
                .map(|_| format!("`{}` is not an IP address (e.g. 10.77.0.10)", shown(text))),
            Some("ipv4-network") => text.parse::<Subnet>().err(),
            Some("mac-address") => text.parse::<MacAddr>().err(),
            _ => None,
        };
        if let Some(message) = problem {
            self.out.push(Problem::new(path, message).at(span));
        }
    }
}

/// Bounds of an integer field: its schema's minimum/maximum, else its format's.
fn integer_range(s: &Json) -> (i128, i128) {
    let (min, max) = match s.get("format").and_then(Json::as_str) {
        Some("uint8") => (0, i128::from(u8::MAX)),
        Some("uint16") => (0, i128::from(u16::MAX)),
        Some("uint32") => (0, i128::from(u32::MAX)),
        Some("int32") => (i128::from(i32::MIN), i128::from(i32::MAX)),
        Some("uint64" | "uint") => (0, i128::from(u64::MAX)),
        _ => (i128::from(i64::MIN), i128::from(i64::MAX)),
    };
    let bound = |k: &str| s.get(k).and_then(|v| v.as_i64().map(i128::from).or(v.as_u64().map(i128::from)));
    (bound("minimum").unwrap_or(min), bound("maximum").unwrap_or(max))
}

fn describe(v: &DeValue<'_>) -> String {
    match v {
        DeValue::String(s) => format!("string \"{}\"", shown(s)),
        DeValue::Integer(i) => format!("integer {}", shown(&i.to_string())),
        DeValue::Float(f) => format!("float {}", shown(f.as_str())),
        DeValue::Boolean(b) => format!("boolean {b}"),
        DeValue::Datetime(d) => format!("date-time {d}"),
        DeValue::Array(_) => "a list".into(),
        DeValue::Table(_) => "a table".into(),
    }
}

fn expected(kind: &str) -> &str {
    match kind {
        "string" => "a string",
        "integer" => "a whole number",
        "boolean" => "true or false",
        "array" => "a list",
        "object" => "a table",
        other => other,
    }
}
