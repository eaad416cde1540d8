//! Where a config file's problems are collected: each located by line and column (from toml's
//! spans) under its key path, with a hint, errors and warnings apart, and reported in file
//! order.

use std::ops::Range;
use std::path::Path;
use std::time::Duration;

use super::Problem;

/// Line and column (1-based) of a byte offset.
pub(super) fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let column = before
        .rsplit('\n')
        .next()
        .map(|l| l.chars().count())
        .unwrap_or(0)
        + 1;
    (line, column)
}

/// Collects problems against one file.
pub(super) struct Report<'a> {
    /// The file's text (spans are offsets into it).
    pub text: &'a str,
    /// The file as parsed, to locate a key a check names without a span of its own.
    pub parsed: Option<toml::de::DeTable<'a>>,
    /// The file, named in every problem.
    pub path: &'a Path,
    /// The errors found so far.
    pub problems: Vec<Problem>,
    /// The warnings found so far.
    pub warnings: Vec<Problem>,
    /// What read without a problem, for `check-config` to check further when other keys
    /// have problems.
    pub readable: super::Readable,
}

impl Report<'_> {
    pub(super) fn problem(
        &self,
        span: Option<Range<usize>>,
        key: &str,
        message: String,
        hint: &str,
    ) -> Problem {
        // A check of a value (a range, a rule between keys) names its key: it is located
        // where the key is written.
        let span = span.or_else(|| {
            self.parsed
                .as_ref()
                .and_then(|root| super::collect::span_of(root, key))
        });
        let (line, column) = span.map(|s| line_col(self.text, s.start)).unwrap_or((0, 0));
        Problem {
            file: self.path.to_owned(),
            line,
            column,
            key: key.to_owned(),
            message,
            hint: hint.to_owned(),
        }
    }

    pub(super) fn error(
        &mut self,
        span: Option<Range<usize>>,
        key: &str,
        message: String,
        hint: &str,
    ) {
        let p = self.problem(span, key, message, hint);
        self.problems.push(p);
    }

    pub(super) fn warn(
        &mut self,
        span: Option<Range<usize>>,
        key: &str,
        message: String,
        hint: &str,
    ) {
        let p = self.problem(span, key, message, hint);
        self.warnings.push(p);
    }
}

/// A hint for a serde message.
pub(super) fn hint_for_serde(message: &str) -> &'static str {
    if message.starts_with("unknown field") {
        "check the spelling; config/example.toml lists every key"
    } else if message.starts_with("missing field") {
        "add the key; config/example.toml shows it"
    } else if message.starts_with("invalid type") {
        "check the value's type: numbers and booleans are written without quotes, durations and names with quotes"
    } else if message.contains("expected one of") {
        "use one of the listed values"
    } else {
        ""
    }
}

/// Problems sorted by where they are in the file; those without a place keep their order,
/// after the others.
pub(super) fn in_file_order(mut problems: Vec<Problem>) -> Vec<Problem> {
    problems.sort_by_key(|p| {
        if p.line == 0 {
            (usize::MAX, 0)
        } else {
            (p.line, p.column)
        }
    });
    problems
}

pub(super) fn duration_of(
    report: &mut Report,
    value: &toml::Spanned<String>,
    key: &str,
) -> Option<Duration> {
    match crate::duration::parse(value.get_ref()) {
        Ok(d) => Some(d),
        Err(e) => {
            report.error(Some(value.span()), key, e.to_string(), "");
            None
        }
    }
}
