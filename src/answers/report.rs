//! Problems found in an answer file, and how they are shown: one line that names the file,
//! line, column and field, then the source line with the spot marked (miette).
//!
//! The text is shared (`Arc<str>`) by every problem's snippet and looked up through an index
//! of line starts, so a report costs the same whatever the number of problems or the size of
//! the file; lines too long to show are left out of the snippets, not the report.

use std::fmt::Write as _;
use std::ops::Range;
use std::sync::Arc;

use miette::{
    GraphicalReportHandler, GraphicalTheme, LabeledSpan, MietteError, MietteSpanContents, SourceCode, SourceSpan,
    SpanContents,
};
use serde::Serialize;

use super::span::SpanIndex;

/// A source line longer than this (in bytes) is not shown in a snippet: the one-line form
/// already says where the problem is, and nobody reads a 50 MB line on a terminal.
const LONGEST_SHOWN_LINE: usize = 1000;

/// The first this many problems are drawn with their source lines; the rest one line each.
const DRAWN: usize = 100;

/// One thing wrong with an answer file.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Problem {
    /// Dotted path of the field, e.g. `network.dhcp-range[1].start`; empty for the whole file.
    pub field: String,
    pub message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub help: Option<String>,
    #[serde(skip)]
    pub span: Option<Range<usize>>,
    /// Other places that explain the problem ("first used here").
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub related: Vec<Related>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Related {
    pub field: String,
    pub label: String,
    #[serde(skip)]
    pub span: Option<Range<usize>>,
}

impl Problem {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Problem { field: field.into(), message: message.into(), help: None, span: None, related: Vec::new() }
    }

    pub fn help(mut self, help: impl Into<String>) -> Self {
        self.help = Some(help.into());
        self
    }

    pub fn at(mut self, span: Range<usize>) -> Self {
        self.span = Some(span);
        self
    }

    pub fn see(mut self, field: impl Into<String>, label: impl Into<String>) -> Self {
        self.related.push(Related { field: field.into(), label: label.into(), span: None });
        self
    }
}

/// A value as messages quote it: at most 40 characters, control characters escaped, so a
/// hostile value can neither flood the terminal nor break the one-problem-a-line form.
pub fn shown(s: &str) -> String {
    const MAX: usize = 40;
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i == MAX {
            out.push('…');
            break;
        }
        if c.is_control() || matches!(c, '\u{2028}' | '\u{2029}') {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
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

/// The text of a file and where its lines start.
#[derive(Clone)]
struct Source {
    name: String,
    text: Arc<str>,
    /// Byte offset of the start of each line (the first is 0).
    starts: Arc<[usize]>,
    /// Values never drawn (secrets), nor the lines around them.
    hidden: Arc<[Range<usize>]>,
}

impl Source {
    fn new(name: &str, text: Arc<str>) -> Self {
        let mut starts = vec![0];
        starts.extend(text.bytes().enumerate().filter(|(_, b)| *b == b'\n').map(|(i, _)| i + 1));
        Source { name: name.to_string(), text, starts: starts.into(), hidden: Arc::new([]) }
    }

    /// 0-based line of a byte offset.
    fn line_of(&self, offset: usize) -> usize {
        self.starts.partition_point(|s| *s <= offset).saturating_sub(1)
    }

    /// Byte range of a line, without its newline.
    fn line_range(&self, line: usize) -> Range<usize> {
        let start = self.starts[line];
        let end = self.starts.get(line + 1).map_or(self.text.len(), |next| next - 1);
        start..end.max(start)
    }

    /// 1-based line and column (in characters) of a byte offset.
    fn line_col(&self, offset: usize) -> (usize, usize) {
        let offset = floor_char_boundary(&self.text, offset.min(self.text.len()));
        let line = self.line_of(offset);
        let col = self.text[self.starts[line]..offset].chars().count();
        (line + 1, col + 1)
    }

    /// Whether `span` and the lines around it can be drawn: short enough, and not a secret.
    fn drawable(&self, span: &Range<usize>) -> bool {
        if span.end > self.text.len() || span.start > span.end {
            return false;
        }
        let first = self.line_of(span.start).saturating_sub(1);
        let last = (self.line_of(span.end) + 1).min(self.starts.len() - 1);
        (first..=last).all(|l| self.line_range(l).len() <= LONGEST_SHOWN_LINE)
            && !self.hidden.iter().any(|h| {
                let (a, b) = (self.line_of(h.start), self.line_of(h.end));
                a <= last && first <= b
            })
    }
}

impl SourceCode for Source {
    fn read_span<'a>(
        &'a self,
        span: &SourceSpan,
        before: usize,
        after: usize,
    ) -> Result<Box<dyn SpanContents<'a> + 'a>, MietteError> {
        let (start, end) = (span.offset(), span.offset() + span.len());
        if end > self.text.len() {
            return Err(MietteError::OutOfBounds);
        }
        let first = self.line_of(start);
        let last = self.line_of(end.saturating_sub(1).max(start));
        let from = first.saturating_sub(before);
        let to = (last + after).min(self.starts.len() - 1);
        let data = self.starts[from]..self.line_range(to).end.max(end);
        let column = if before == 0 { self.text[self.starts[first]..start].chars().count() } else { 0 };
        Ok(Box::new(MietteSpanContents::new_named(
            self.name.clone(),
            &self.text.as_bytes()[data.clone()],
            (data.start, data.len()).into(),
            from,
            column,
            to - from + 1,
        )))
    }
}

/// All problems of one file.
#[derive(Clone)]
pub struct Report {
    pub file: String,
    pub problems: Vec<Problem>,
    source: Source,
}

/// Where a problem is, for people and for `--json`.
#[derive(Debug, Clone, Serialize)]
pub struct Located<'a> {
    pub file: &'a str,
    pub line: usize,
    pub column: usize,
    #[serde(flatten)]
    pub problem: &'a Problem,
}

impl std::fmt::Debug for Report {
    // The one-line form: a failed `unwrap()` shows the problems, not the whole file.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Report").field("file", &self.file).field("problems", &self.one_line_each()).finish()
    }
}

impl Report {
    pub fn new(file: &str, text: &str) -> Self {
        Self::shared(file, Arc::from(text))
    }

    /// A report on `text` without copying it.
    pub fn shared(file: &str, text: Arc<str>) -> Self {
        Report { file: file.to_string(), problems: Vec::new(), source: Source::new(file, text) }
    }

    /// Never draw these spans (secret values) or the lines next to them.
    pub fn hiding(mut self, spans: Vec<Range<usize>>) -> Self {
        self.source.hidden = spans.into();
        self
    }

    /// The text of the file.
    pub fn text(&self) -> &str {
        &self.source.text
    }

    pub fn with(mut self, p: Problem) -> Self {
        self.problems.push(p);
        self
    }

    pub fn with_all(mut self, ps: Vec<Problem>) -> Self {
        self.problems.extend(ps);
        self
    }

    /// Give every problem without a span the span of its field in the file.
    pub fn located(mut self, index: &SpanIndex) -> Self {
        for p in &mut self.problems {
            if p.span.is_none() {
                p.span = Some(index.value_span(&p.field));
            }
            for r in &mut p.related {
                if r.span.is_none() {
                    r.span = Some(index.value_span(&r.field));
                }
            }
        }
        self
    }

    /// In file order, so the operator can work down the file.
    pub fn sorted(mut self) -> Self {
        self.problems.sort_by_key(|p| p.span.as_ref().map_or(0, |s| s.start));
        self
    }

    /// 1-based line and column (in characters) of a byte offset.
    pub fn line_col(&self, offset: usize) -> (usize, usize) {
        self.source.line_col(offset)
    }

    pub fn located_problems(&self) -> Vec<Located<'_>> {
        // Problems come in file order: count the characters from the previous problem on the
        // same line rather than from the line start, so many problems on one long line stay
        // linear.
        let src = &self.source;
        let mut last: Option<(usize, usize, usize)> = None; // offset, 0-based line, column
        self.problems
            .iter()
            .map(|p| {
                let offset = p.span.as_ref().map_or(0, |s| s.start).min(src.text.len());
                let offset = floor_char_boundary(&src.text, offset);
                let line = src.line_of(offset);
                let column = match last {
                    Some((o, l, c)) if l == line && o <= offset => c + src.text[o..offset].chars().count(),
                    _ => src.text[src.starts[line]..offset].chars().count(),
                };
                last = Some((offset, line, column));
                Located { file: &self.file, line: line + 1, column: column + 1, problem: p }
            })
            .collect()
    }

    /// `FILE:LINE:COL: FIELD: message` for each problem, one a line.
    pub fn one_line_each(&self) -> Vec<String> {
        self.located_problems()
            .iter()
            .map(|l| {
                let field = if l.problem.field.is_empty() { String::new() } else { format!("{}: ", l.problem.field) };
                format!("{}:{}:{}: {}{}", l.file, l.line, l.column, field, l.problem.message)
            })
            .collect()
    }

    /// The full report: each problem's line, the source around it, and the help; past the
    /// first hundred problems, one line each.
    pub fn render(&self, color: bool) -> String {
        let theme = if color { GraphicalTheme::unicode() } else { GraphicalTheme::unicode_nocolor() };
        let handler = GraphicalReportHandler::new_themed(theme).with_context_lines(1);
        let mut out = String::new();
        let lines = self.one_line_each();
        for (i, (line, p)) in lines.into_iter().zip(&self.problems).enumerate() {
            if i == DRAWN {
                let _ = writeln!(out, "(the other {} problems, one a line)", self.problems.len() - DRAWN);
            }
            if i >= DRAWN {
                let _ = writeln!(out, "{line}");
                continue;
            }
            let diag = Snippet::new(self, line, p);
            if handler.render_report(&mut out, &diag).is_err() {
                let _ = writeln!(out, "{}", diag.message);
            }
            out.push('\n');
        }
        let n = self.problems.len();
        let _ = writeln!(out, "{}: {n} problem{}", self.file, if n == 1 { "" } else { "s" });
        out
    }
}

fn floor_char_boundary(s: &str, mut i: usize) -> usize {
    while i > 0 && !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}

#[derive(Debug)]
struct Snippet {
    message: String,
    src: Option<Source>,
    labels: Vec<LabeledSpan>,
    help: Option<String>,
}

impl std::fmt::Debug for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Source({}, {} bytes)", self.name, self.text.len())
    }
}

impl Snippet {
    fn new(report: &Report, message: String, p: &Problem) -> Self {
        let src = &report.source;
        let mut labels = Vec::new();
        // Only spans that can be drawn; without the primary one, no source at all.
        let primary = p.span.as_ref().filter(|s| src.drawable(s));
        if let Some(span) = primary {
            labels.push(LabeledSpan::new_primary_with_span(Some("here".into()), to_source_span(span)));
            for r in &p.related {
                if let Some(span) = r.span.as_ref().filter(|s| src.drawable(s)) {
                    labels.push(LabeledSpan::new_with_span(Some(r.label.clone()), to_source_span(span)));
                }
            }
        }
        Snippet {
            message,
            src: (!labels.is_empty() && !src.text.is_empty()).then(|| src.clone()),
            labels,
            help: p.help.clone(),
        }
    }
}

fn to_source_span(r: &Range<usize>) -> SourceSpan {
    (r.start, r.end - r.start).into()
}

impl std::fmt::Display for Snippet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Snippet {}

impl miette::Diagnostic for Snippet {
    fn source_code(&self) -> Option<&dyn miette::SourceCode> {
        self.src.as_ref().map(|s| s as &dyn miette::SourceCode)
    }

    fn labels(&self) -> Option<Box<dyn Iterator<Item = LabeledSpan> + '_>> {
        if self.src.is_none() { None } else { Some(Box::new(self.labels.iter().cloned())) }
    }

    fn help<'a>(&'a self) -> Option<Box<dyn std::fmt::Display + 'a>> {
        self.help.as_ref().map(|h| Box::new(h) as Box<dyn std::fmt::Display>)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_and_columns_come_from_the_index() {
        let r = Report::new("f", "a = 1\nbé = 2\n\nc");
        assert_eq!(r.line_col(0), (1, 1));
        assert_eq!(r.line_col(6), (2, 1));
        assert_eq!(r.line_col(9), (2, 3), "columns count characters");
        assert_eq!(r.line_col(14), (3, 1));
        assert_eq!(r.line_col(15), (4, 1));
        assert_eq!(r.line_col(999), (4, 2));
    }

    #[test]
    fn shown_values_are_short_and_one_line() {
        assert_eq!(shown("ok"), "ok");
        assert_eq!(shown("a\nb\0"), "a\\nb\\u{0}");
        assert_eq!(shown(&"x".repeat(100)).chars().count(), 41);
    }

    #[test]
    fn nearest_finds_typos_only() {
        let keys = ["dhcp-range", "reservation", "subnet"];
        assert_eq!(nearest("dhcp-rang", &keys), Some("dhcp-range"));
        assert_eq!(nearest("dhcp_range", &keys), Some("dhcp-range"));
        assert_eq!(nearest("zzz", &keys), None);
    }
}
