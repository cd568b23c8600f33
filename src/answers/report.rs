//! Problems found in an answer file, and how they are shown: one line that names the file,
//! line, column and field, then the source line with the spot marked (miette).

use std::fmt::Write as _;
use std::ops::Range;

use miette::{GraphicalReportHandler, GraphicalTheme, LabeledSpan, NamedSource, SourceSpan};
use serde::Serialize;

use super::load::SpanIndex;

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
        Problem {
            field: field.into(),
            message: message.into(),
            help: None,
            span: None,
            related: Vec::new(),
        }
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
        self.related.push(Related {
            field: field.into(),
            label: label.into(),
            span: None,
        });
        self
    }
}

/// All problems of one file.
#[derive(Debug, Clone)]
pub struct Report {
    pub file: String,
    pub text: String,
    pub problems: Vec<Problem>,
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

impl Report {
    pub fn new(file: &str, text: &str) -> Self {
        Report {
            file: file.to_string(),
            text: text.to_string(),
            problems: Vec::new(),
        }
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
        self.problems
            .sort_by_key(|p| p.span.as_ref().map_or(0, |s| s.start));
        self
    }

    /// 1-based line and column (in characters) of a byte offset.
    pub fn line_col(&self, offset: usize) -> (usize, usize) {
        let offset = offset.min(self.text.len());
        let before = &self.text[..floor_char_boundary(&self.text, offset)];
        let line = before.matches('\n').count() + 1;
        let col = before.rsplit('\n').next().unwrap_or("").chars().count() + 1;
        (line, col)
    }

    pub fn located_problems(&self) -> Vec<Located<'_>> {
        self.problems
            .iter()
            .map(|p| {
                let (line, column) = self.line_col(p.span.as_ref().map_or(0, |s| s.start));
                Located {
                    file: &self.file,
                    line,
                    column,
                    problem: p,
                }
            })
            .collect()
    }

    /// `FILE:LINE:COL: FIELD: message` for each problem, one a line.
    pub fn one_line_each(&self) -> Vec<String> {
        self.located_problems()
            .iter()
            .map(|l| {
                let field = if l.problem.field.is_empty() {
                    String::new()
                } else {
                    format!("{}: ", l.problem.field)
                };
                format!(
                    "{}:{}:{}: {}{}",
                    l.file, l.line, l.column, field, l.problem.message
                )
            })
            .collect()
    }

    /// The full report: each problem's line, the source around it, and the help.
    pub fn render(&self, color: bool) -> String {
        let theme = if color {
            GraphicalTheme::unicode()
        } else {
            GraphicalTheme::unicode_nocolor()
        };
        let handler = GraphicalReportHandler::new_themed(theme).with_context_lines(1);
        let mut out = String::new();
        for (line, p) in self.one_line_each().into_iter().zip(&self.problems) {
            let diag = Snippet::new(self, line, p);
            if handler.render_report(&mut out, &diag).is_err() {
                let _ = writeln!(out, "{}", diag.message);
            }
            out.push('\n');
        }
        let n = self.problems.len();
        let _ = writeln!(
            out,
            "{}: {n} problem{}",
            self.file,
            if n == 1 { "" } else { "s" }
        );
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
    src: NamedSource<String>,
    labels: Vec<LabeledSpan>,
    help: Option<String>,
}

impl Snippet {
    fn new(report: &Report, message: String, p: &Problem) -> Self {
        let mut labels = Vec::new();
        let len = report.text.len();
        let clamp = |r: &Range<usize>| -> SourceSpan {
            let s = r.start.min(len);
            let e = r.end.min(len).max(s);
            (s, e - s).into()
        };
        if let Some(span) = &p.span {
            labels.push(LabeledSpan::new_primary_with_span(Some("here".into()), clamp(span)));
        }
        for r in &p.related {
            if let Some(span) = &r.span {
                labels.push(LabeledSpan::new_with_span(Some(r.label.clone()), clamp(span)));
            }
        }
        Snippet {
            message,
            src: NamedSource::new(&report.file, report.text.clone()),
            labels,
            help: p.help.clone(),
        }
    }
}

impl std::fmt::Display for Snippet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Snippet {}

impl miette::Diagnostic for Snippet {
    fn source_code(&self) -> Option<&dyn miette::SourceCode> {
        if self.src.inner().is_empty() {
            None
        } else {
            Some(&self.src)
        }
    }

    fn labels(&self) -> Option<Box<dyn Iterator<Item = LabeledSpan> + '_>> {
        if self.labels.is_empty() || self.src.inner().is_empty() {
            None
        } else {
            Some(Box::new(self.labels.iter().cloned()))
        }
    }

    fn help<'a>(&'a self) -> Option<Box<dyn std::fmt::Display + 'a>> {
        self.help
            .as_ref()
            .map(|h| Box::new(h) as Box<dyn std::fmt::Display>)
    }
}
