//! Reading an answer file: TOML syntax, then each section on its own (so one bad section does
//! not hide the errors of the others), then the cross-section rules. Every problem carries the
//! dotted path of the field it is about and the byte span of that field in the file.

use std::ops::Range;
use std::path::Path;

use serde::de::DeserializeOwned;
use toml::Spanned;
use toml::de::{DeTable, DeValue, ValueDeserializer};

use super::model::{Answers, Databases, SECTIONS};
use super::report::{Problem, Report};
use super::rules;

/// Where each key and value of a document sits, by dotted path (`network.dhcp-range[0].start`).
#[derive(Debug, Default, Clone)]
pub struct SpanIndex {
    entries: Vec<SpanEntry>,
}

#[derive(Debug, Clone)]
struct SpanEntry {
    path: String,
    key: Option<Range<usize>>,
    value: Range<usize>,
}

impl SpanIndex {
    fn build(root: &Spanned<DeTable<'_>>) -> Self {
        let mut index = SpanIndex::default();
        index.entries.push(SpanEntry {
            path: String::new(),
            key: None,
            value: root.span(),
        });
        index.walk_table("", root.get_ref());
        index
    }

    fn walk_table(&mut self, prefix: &str, table: &DeTable<'_>) {
        for (key, value) in table.iter() {
            let path = if prefix.is_empty() {
                key.get_ref().to_string()
            } else {
                format!("{prefix}.{}", key.get_ref())
            };
            self.entries.push(SpanEntry {
                path: path.clone(),
                key: Some(key.span()),
                value: value.span(),
            });
            self.walk_value(&path, value.get_ref());
        }
    }

    fn walk_value(&mut self, path: &str, value: &DeValue<'_>) {
        match value {
            DeValue::Table(t) => self.walk_table(path, t),
            DeValue::Array(items) => {
                for (i, item) in items.iter().enumerate() {
                    let p = format!("{path}[{i}]");
                    self.entries.push(SpanEntry {
                        path: p.clone(),
                        key: None,
                        value: item.span(),
                    });
                    self.walk_value(&p, item.get_ref());
                }
            }
            _ => {}
        }
    }

    /// The span of the value at `path`, or of its nearest ancestor that exists in the file.
    pub fn value_span(&self, path: &str) -> Range<usize> {
        let mut p = path;
        loop {
            if let Some(e) = self.entries.iter().find(|e| e.path == p) {
                return e.value.clone();
            }
            match p.rfind(['.', '[']) {
                Some(i) => p = &p[..i],
                None => return 0..0,
            }
        }
    }

    /// The span of the key at `path` (falls back to the value's span).
    pub fn key_span(&self, path: &str) -> Range<usize> {
        self.entries
            .iter()
            .find(|e| e.path == path)
            .and_then(|e| e.key.clone())
            .unwrap_or_else(|| self.value_span(path))
    }

    pub fn contains(&self, path: &str) -> bool {
        self.entries.iter().any(|e| e.path == path)
    }

    /// The innermost path whose key is `span` or whose value contains it.
    fn path_at(&self, span: &Range<usize>) -> Option<&str> {
        if let Some(e) = self.entries.iter().find(|e| e.key.as_ref() == Some(span)) {
            return Some(&e.path);
        }
        self.entries
            .iter()
            .filter(|e| e.value.start <= span.start && span.end <= e.value.end)
            // Tables span their header only, so `host` and `host[0]` can tie: take the deeper.
            .min_by_key(|e| (e.value.end - e.value.start, std::cmp::Reverse(e.path.len())))
            .map(|e| e.path.as_str())
    }
}

/// A parsed, checked answer file and the index that maps its fields back to the text.
#[derive(Debug, Clone)]
pub struct Loaded {
    pub answers: Answers,
    pub index: SpanIndex,
}

/// Read and check an answer file.
pub fn load_file(path: &Path) -> Result<Loaded, Report> {
    let name = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| {
        Report::new(&name, "").with(Problem::new("", format!("cannot read the file: {e}")))
    })?;
    load_str(&name, &text)
}

/// Parse and check answer-file text; `name` is what messages call the file.
pub fn load_str(name: &str, text: &str) -> Result<Loaded, Report> {
    let (answers, index) = parse_str(name, text)?;
    let problems = rules::check(&answers);
    if problems.is_empty() {
        Ok(Loaded { answers, index })
    } else {
        Err(Report::new(name, text).with_all(problems).located(&index).sorted())
    }
}

/// Types and keys only; no cross-section rules.
pub fn parse_str(name: &str, text: &str) -> Result<(Answers, SpanIndex), Report> {
    let report = Report::new(name, text);
    let root = match DeTable::parse(text) {
        Ok(root) => root,
        Err(e) => {
            let span = e.span().unwrap_or(0..0);
            return Err(report.with(Problem::new("", syntax_message(e.message())).at(span)));
        }
    };
    let index = SpanIndex::build(&root);
    let mut problems = Vec::new();
    let mut sections = Sections::default();

    for (key, value) in root.get_ref().iter() {
        let key_name = key.get_ref().as_ref();
        match key_name {
            "site" => sections.site = section(value, &index, &mut problems),
            "network" => sections.network = section(value, &index, &mut problems),
            "databases" => sections.databases = section(value, &index, &mut problems),
            "ldap" => sections.ldap = section(value, &index, &mut problems).map(Some),
            "k3s" => sections.k3s = section(value, &index, &mut problems).map(Some),
            "gitops" => sections.gitops = section(value, &index, &mut problems).map(Some),
            "proxmox" => sections.proxmox = section(value, &index, &mut problems).map(Some),
            "host" => match value.get_ref() {
                DeValue::Array(items) => {
                    let mut hosts = Some(Vec::new());
                    for item in items.iter() {
                        match (section(item, &index, &mut problems), hosts.as_mut()) {
                            (Some(h), Some(list)) => list.push(h),
                            _ => hosts = None,
                        }
                    }
                    sections.hosts = hosts;
                }
                _ => {
                    problems.push(
                        Problem::new("host", "`host` must be a list of tables")
                            .help("write each host as its own [[host]] table")
                            .at(value.span()),
                    );
                    sections.hosts = None;
                }
            },
            other => {
                let mut p = Problem::new(other, format!("unknown section `{other}`"))
                    .at(key.span());
                if let Some(s) = nearest(other, SECTIONS) {
                    p = p.help(format!("did you mean `{s}`?"));
                } else {
                    p = p.help(format!("known sections: {}", SECTIONS.join(", ")));
                }
                problems.push(p);
            }
        }
    }
    for (key, slot_missing) in [
        ("site", sections.site.is_none() && !index.contains("site")),
        ("network", sections.network.is_none() && !index.contains("network")),
    ] {
        if slot_missing {
            problems.push(
                Problem::new(key, format!("the [{key}] section is missing")).at(0..0),
            );
        }
    }
    if !problems.is_empty() {
        return Err(report.with_all(problems).sorted());
    }
    match sections.finish() {
        Some(answers) => Ok((answers, index)),
        None => Err(report.with(Problem::new("", "the file could not be read"))),
    }
}

#[derive(Default)]
struct Sections {
    site: Option<super::model::Site>,
    network: Option<super::model::Network>,
    hosts: Option<Vec<super::model::Host>>,
    databases: Option<Databases>,
    ldap: Option<Option<super::model::Ldap>>,
    k3s: Option<Option<super::model::K3s>>,
    gitops: Option<Option<super::model::GitOps>>,
    proxmox: Option<Option<super::model::Proxmox>>,
}

impl Sections {
    fn finish(self) -> Option<Answers> {
        Some(Answers {
            site: self.site?,
            network: self.network?,
            hosts: self.hosts.unwrap_or_default(),
            databases: self.databases.unwrap_or_default(),
            ldap: self.ldap.flatten(),
            k3s: self.k3s.flatten(),
            gitops: self.gitops.flatten(),
            proxmox: self.proxmox.flatten(),
        })
    }
}

fn section<T: DeserializeOwned>(
    value: &Spanned<DeValue<'_>>,
    index: &SpanIndex,
    problems: &mut Vec<Problem>,
) -> Option<T> {
    let whole = value.span();
    match T::deserialize(ValueDeserializer::from(value.clone())) {
        Ok(v) => Some(v),
        Err(e) => {
            let span = e.span().unwrap_or(whole);
            let path = index.path_at(&span).unwrap_or("").to_string();
            problems.push(describe(&path, e.message(), span));
            None
        }
    }
}

/// Turn serde's wording into an operator's: name the key, suggest the nearest known one.
fn describe(path: &str, message: &str, span: Range<usize>) -> Problem {
    if let Some(rest) = message.strip_prefix("unknown field ") {
        let (found, expected) = split_expected(rest);
        let mut p = Problem::new(path, format!("unknown key `{found}`")).at(span);
        if let Some(s) = nearest(&found, &expected.iter().map(String::as_str).collect::<Vec<_>>()) {
            p = p.help(format!("did you mean `{s}`?"));
        } else if !expected.is_empty() {
            p = p.help(format!("known keys here: {}", expected.join(", ")));
        }
        return p;
    }
    if let Some(rest) = message.strip_prefix("unknown variant ") {
        let (found, expected) = split_expected(rest);
        let mut p = Problem::new(path, format!("`{found}` is not one of the allowed values"))
            .at(span);
        let choices: Vec<&str> = expected.iter().map(String::as_str).collect();
        p = match nearest(&found, &choices) {
            Some(s) => p.help(format!("did you mean `{s}`? allowed: {}", choices.join(", "))),
            None => p.help(format!("allowed: {}", choices.join(", "))),
        };
        return p;
    }
    if let Some(rest) = message.strip_prefix("missing field ") {
        let field = rest.trim_matches('`');
        let full = if path.is_empty() {
            field.to_string()
        } else {
            format!("{path}.{field}")
        };
        return Problem::new(&full, format!("required key `{field}` is missing")).at(span);
    }
    let mut msg = message.trim().to_string();
    if let Some(rest) = msg.strip_prefix("invalid type: ") {
        msg = format!("wrong type: {rest}");
    }
    if msg.contains("invalid IP address syntax") {
        msg = "not an IP address (e.g. 10.77.0.10)".into();
    }
    Problem::new(path, msg).at(span)
}

fn syntax_message(m: &str) -> String {
    format!("TOML syntax: {}", m.trim())
}

/// "`x`, expected one of `a`, `b`" -> ("x", ["a", "b"])
fn split_expected(rest: &str) -> (String, Vec<String>) {
    let mut ticks = rest.split('`').skip(1).step_by(2);
    let found = ticks.next().unwrap_or_default().to_string();
    (found, ticks.map(str::to_string).collect())
}

/// The closest candidate by edit distance, if it is close enough to be a likely typo.
pub fn nearest<'a>(word: &str, candidates: &[&'a str]) -> Option<&'a str> {
    let limit = (word.chars().count() / 3).max(2);
    candidates
        .iter()
        .map(|c| (edit_distance(word, c), *c))
        .filter(|(d, _)| *d <= limit)
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            let cost = usize::from(ca != *cb);
            cur[j + 1] = (prev[j] + cost).min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_finds_typos_only() {
        let keys = ["dhcp-range", "reservation", "subnet"];
        assert_eq!(nearest("dhcp-rang", &keys), Some("dhcp-range"));
        assert_eq!(nearest("dhcp_range", &keys), Some("dhcp-range"));
        assert_eq!(nearest("zzz", &keys), None);
    }
}
