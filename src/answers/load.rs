//! Reading an answer file: TOML syntax; then one walk over the whole document against the
//! schema and the field checks (every unknown or missing key, wrong type and bad value at
//! once); then each section into the model on its own (so one bad section does not hide the
//! others); then the rules across sections. Every problem carries the dotted path of the field
//! it is about and the byte span of that field in the file.
//!
//! Size is bounded before any of it: a file past [`MAX_FILE`] is refused after reading that
//! much, each string by its field's limit, and the text is shared, never copied per problem.

use std::io::Read;
use std::ops::Range;
use std::path::Path;
use std::sync::Arc;

use serde::de::DeserializeOwned;
use toml::Spanned;
use toml::de::{DeTable, DeValue, ValueDeserializer};

use super::model::{Answers, Databases};
use super::report::{Problem, Report, nearest};
use super::span::SpanIndex;
use super::{rules, shape};

/// The largest answer file read. A site of a thousand hosts is about 100 KiB.
pub const MAX_FILE: usize = 4 << 20;

/// A parsed, checked answer file and the index that maps its fields back to the text.
#[derive(Debug, Clone)]
pub struct Loaded {
    pub answers: Answers,
    pub index: SpanIndex,
}

/// Checks of answers that need more than the answer file (the role graph of a catalog: see
/// `plan::load_file`); their problems are reported with the file's own.
pub type Extra<'a> = &'a dyn Fn(&Answers) -> Vec<Problem>;

/// Read and check an answer file on its own (without the role graph: `plan::load_file` adds it).
pub fn load_file(path: &Path) -> Result<Loaded, Report> {
    load_file_with(path, &|_| Vec::new())
}

/// Read and check an answer file, with `extra` checks.
pub fn load_file_with(path: &Path, extra: Extra<'_>) -> Result<Loaded, Report> {
    let name = path.display().to_string();
    let cannot =
        |e: std::io::Error| Report::new(&name, "").with(Problem::new("", format!("cannot read the file: {e}")));
    let mut bytes = Vec::new();
    std::fs::File::open(path).and_then(|f| f.take(MAX_FILE as u64 + 1).read_to_end(&mut bytes)).map_err(cannot)?;
    if bytes.len() > MAX_FILE {
        return Err(too_big(&name, &bytes));
    }
    match String::from_utf8(bytes) {
        Ok(text) => load_shared(&name, Arc::from(text), extra),
        Err(e) => {
            let at = e.utf8_error().valid_up_to();
            let bytes = e.into_bytes();
            let before = String::from_utf8_lossy(&bytes[..at]).into_owned();
            Err(Report::new(&name, &before).with(
                Problem::new("", format!("the file is not UTF-8 text (byte 0x{:02x} here)", bytes[at]))
                    .help("save it as UTF-8")
                    .at(at..at),
            ))
        }
    }
}

/// Parse and check answer-file text on its own; `name` is what messages call the file.
pub fn load_str(name: &str, text: &str) -> Result<Loaded, Report> {
    load_str_with(name, text, &|_| Vec::new())
}

/// Parse and check answer-file text, with `extra` checks.
pub fn load_str_with(name: &str, text: &str, extra: Extra<'_>) -> Result<Loaded, Report> {
    if text.len() > MAX_FILE {
        return Err(too_big(name, text.as_bytes()));
    }
    load_shared(name, Arc::from(text), extra)
}

/// A file past [`MAX_FILE`]: refused without parsing, at its first very long line (where a
/// runaway value usually is), named by the key at the start of that line.
fn too_big(name: &str, bytes: &[u8]) -> Report {
    const LONG: usize = 64 << 10;
    let mut start = 0;
    let mut long_line = None;
    for line in bytes.split(|b| *b == b'\n') {
        if line.len() > LONG {
            long_line = Some((start, line));
            break;
        }
        start += line.len() + 1;
    }
    let shown_to = long_line.map_or(0, |(at, _)| at + 200).min(bytes.len());
    let text = String::from_utf8_lossy(&bytes[..shown_to]).into_owned();
    let mib = MAX_FILE >> 20;
    let p = match long_line {
        Some((at, line)) => Problem::new(
            key_before(&bytes[..at], line),
            format!("the file is larger than {mib} MiB, and this line alone is longer than {} KiB", LONG >> 10),
        )
        .at(at..at),
        None => {
            Problem::new("", format!("the file is larger than {mib} MiB; an answer file is a few kilobytes")).at(0..0)
        }
    };
    Report::new(name, &text).with(p)
}

/// `table.key` for a line `key = ...` under the last `[table]` header before it, or "".
fn key_before(before: &[u8], line: &[u8]) -> String {
    let bare =
        |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.');
    let head = &line[..line.len().min(256)];
    let head = String::from_utf8_lossy(head);
    let Some(key) = head.split_once('=').map(|(k, _)| k.trim()).filter(|k| bare(k)) else {
        return String::new();
    };
    let table = before
        .rsplit(|b| *b == b'\n')
        .map(|l| String::from_utf8_lossy(&l[..l.len().min(256)]).trim().to_string())
        .find(|l| l.starts_with('['))
        .map(|l| l.trim_matches(['[', ']']).trim().to_string())
        .filter(|t| bare(t));
    match table {
        Some(t) => format!("{t}.{key}"),
        None => key.to_string(),
    }
}

fn load_shared(name: &str, text: Arc<str>, extra: Extra<'_>) -> Result<Loaded, Report> {
    let report = Report::shared(name, text.clone());
    // The parser recovers after a syntax error, so several are reported in one run; the
    // document it made of the rest is not checked further (its gaps would read as missing keys).
    let (root, errors) = DeTable::parse_recoverable(&text);
    if !errors.is_empty() {
        return Err(syntax_problems(report, &errors));
    }
    let index = SpanIndex::build(&root);
    let secrets = rules::SECRET_FIELDS.iter().filter_map(|f| index.exact_value_span(f));
    let report = report.hiding(secrets.collect());
    let mut problems = shape::check(&root);
    let answers = sections(&root, &index, &mut problems);
    if let Some(a) = &answers {
        problems.extend(rules::check_cross(a));
        problems.extend(extra(a));
    }
    match answers {
        Some(answers) if problems.is_empty() => Ok(Loaded { answers, index }),
        _ => {
            if problems.is_empty() {
                problems.push(Problem::new("", "the file could not be read").at(0..0));
            }
            Err(report.with_all(problems).located(&index).sorted())
        }
    }
}

/// Each section into the model. A section that fails adds serde's problem only if the walk
/// found nothing there (the walk says it better); `None` if any section failed.
fn sections(root: &Spanned<DeTable<'_>>, index: &SpanIndex, problems: &mut Vec<Problem>) -> Option<Answers> {
    let seen: std::collections::HashSet<String> =
        problems.iter().map(|p| p.field.split(['.', '[']).next().unwrap_or("").to_string()).collect();
    let mut failed = false;
    let mut sections = Sections::default();
    for (key, value) in root.get_ref().iter() {
        let mut mine = Vec::new();
        macro_rules! into {
            ($slot:expr) => {
                section(value, index, &mut mine).map(|v| $slot = Some(v)).is_some()
            };
        }
        let ok = match key.get_ref().as_ref() {
            "site" => into!(sections.site),
            "network" => into!(sections.network),
            "host" => into!(sections.hosts),
            "databases" => into!(sections.databases),
            "ldap" => into!(sections.ldap),
            "k3s" => into!(sections.k3s),
            "gitops" => into!(sections.gitops),
            "proxmox" => into!(sections.proxmox),
            _ => true, // unknown: the walk reported it, the rest can still be checked
        };
        if !ok {
            failed = true;
            if !seen.contains(key.get_ref().as_ref()) {
                problems.extend(mine);
            }
        }
    }
    if failed { None } else { sections.finish() }
}

#[derive(Default)]
struct Sections {
    site: Option<super::model::Site>,
    network: Option<super::model::Network>,
    hosts: Option<Vec<super::model::Host>>,
    databases: Option<Databases>,
    ldap: Option<super::model::Ldap>,
    k3s: Option<super::model::K3s>,
    gitops: Option<super::model::GitOps>,
    proxmox: Option<super::model::Proxmox>,
}

impl Sections {
    fn finish(self) -> Option<Answers> {
        Some(Answers {
            site: self.site?,
            network: self.network?,
            hosts: self.hosts.unwrap_or_default(),
            databases: self.databases.unwrap_or_default(),
            ldap: self.ldap,
            k3s: self.k3s,
            gitops: self.gitops,
            proxmox: self.proxmox,
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
        if let Some(s) =
            nearest(&found, &expected.iter().map(String::as_str).collect::<Vec<_>>()).filter(|_| found.len() <= 64)
        {
            p = p.help(format!("did you mean `{s}`?"));
        } else if !expected.is_empty() {
            p = p.help(format!("known keys here: {}", expected.join(", ")));
        }
        return p;
    }
    if let Some(rest) = message.strip_prefix("unknown variant ") {
        let (found, expected) = split_expected(rest);
        let mut p = Problem::new(path, format!("`{found}` is not one of the allowed values")).at(span);
        let choices: Vec<&str> = expected.iter().map(String::as_str).collect();
        p = match nearest(&found, &choices).filter(|_| found.len() <= 64) {
            Some(s) => p.help(format!("did you mean `{s}`? allowed: {}", choices.join(", "))),
            None => p.help(format!("allowed: {}", choices.join(", "))),
        };
        return p;
    }
    if let Some(rest) = message.strip_prefix("missing field ") {
        let field = rest.trim_matches('`');
        let full = if path.is_empty() { field.to_string() } else { format!("{path}.{field}") };
        return Problem::new(&full, format!("required key `{field}` is missing")).at(span);
    }
    // Only reached where the walk found nothing; keep serde's wording short all the same.
    let mut msg: String = message.trim().chars().take(200).collect();
    if let Some(rest) = msg.strip_prefix("invalid type: ") {
        msg = format!("wrong type: {rest}");
    }
    if msg.contains("invalid IP address syntax") {
        msg = "not an IP address (e.g. 10.77.0.10)".into();
    }
    Problem::new(path, msg).at(span)
}

/// At most one syntax error a line, and the first ten: one unclosed bracket makes every line
/// after it an error too, and those say nothing the first does not.
fn syntax_problems(report: Report, errors: &[toml::de::Error]) -> Report {
    const SHOWN: usize = 10;
    let mut errors: Vec<(usize, Range<usize>, &str)> = errors
        .iter()
        .map(|e| {
            let span = e.span().unwrap_or(0..0);
            (report.line_col(span.start).0, span, e.message())
        })
        .collect();
    errors.sort_by_key(|(line, span, _)| (*line, span.start));
    errors.dedup_by_key(|(line, ..)| *line);
    let more = errors.len().saturating_sub(SHOWN);
    let mut problems: Vec<Problem> =
        errors.iter().take(SHOWN).map(|(_, span, m)| Problem::new("", syntax_message(m)).at(span.clone())).collect();
    if more > 0 {
        let (_, span, _) = &errors[SHOWN];
        problems.push(
            Problem::new("", format!("TOML syntax: {more} more lines with errors from here on"))
                .help("one unclosed bracket or quote above can make every line after it an error")
                .at(span.clone()),
        );
    }
    report.with_all(problems)
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
