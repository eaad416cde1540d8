//! Deserializing the config file while collecting every problem, not only the first: serde
//! stops at the first error, so each broken key is reported, set aside (removed, so its default
//! applies, or given a stand-in when it is required), and the file is read again. What was set
//! aside is remembered, so the later cross-key checks can leave out problems it would cause.

use std::ops::Range;

use serde_path_to_error::Segment;
use toml::Spanned;
use toml::de::{DeTable, DeValue};

use super::schema::ConfigFile;

/// Enough rounds for every key of a large config to be broken once.
const MAX_ROUNDS: usize = 200;

/// One problem serde found.
pub(super) struct SerdeProblem {
    /// Where, when known.
    pub span: Option<Range<usize>>,
    /// The key path, e.g. `accounts[1].credentials.source`.
    pub key: String,
    /// What serde said.
    pub message: String,
}

/// What reading the file gave.
pub(super) struct Collected {
    /// The file, when it could be read once the broken keys were set aside.
    pub file: Option<ConfigFile>,
    /// Every problem, in the order found.
    pub problems: Vec<SerdeProblem>,
    /// Key paths whose cross-key problems would only echo what was reported: the keys set
    /// aside, and every entry that got a stand-in (its other keys are checked against it).
    pub set_aside: Vec<String>,
}

/// Reads `root` into a `ConfigFile`, collecting every problem.
pub(super) fn deserialize(mut root: Spanned<DeTable<'_>>) -> Collected {
    let mut problems = Vec::new();
    let mut set_aside: Vec<String> = Vec::new();
    let mut stand_ins: Vec<String> = Vec::new();
    let mut stand_in_entries: Vec<String> = Vec::new();
    for _ in 0..MAX_ROUNDS {
        let deserializer = toml::Deserializer::from(root.clone());
        let error = match serde_path_to_error::deserialize::<_, ConfigFile>(deserializer) {
            Ok(file) => {
                set_aside.extend(stand_in_entries);
                return Collected {
                    file: Some(file),
                    problems,
                    set_aside,
                };
            }
            Err(error) => error,
        };
        let segments = segments(error.path());
        let key = key_of(&segments);
        let inner = error.into_inner();
        let message = inner.message().trim().to_owned();
        let missing = missing_field(&message).map(str::to_owned);
        let target_key = match &missing {
            Some(field) => join(&key, field),
            None => key.clone(),
        };
        // A stand-in of ours that the type does not accept: try the value it asks for.
        if stand_ins.contains(&target_key) {
            if let Some(variant) = first_expected(&message)
                && put(root.get_mut(), &segments, None, variant)
            {
                continue;
            }
            break;
        }
        let already_reported = set_aside
            .iter()
            .any(|k| k == &target_key || is_within(&target_key, k));
        if !already_reported {
            problems.push(SerdeProblem {
                span: inner.span(),
                key: if key == "." {
                    String::new()
                } else {
                    key.clone()
                },
                message,
            });
        }
        let repaired = match missing {
            // A required key: a stand-in lets the rest of its table be read.
            Some(field) => {
                stand_ins.push(target_key.clone());
                stand_in_entries.push(key.clone());
                put(root.get_mut(), &segments, Some(&field), "?")
            }
            None => remove(root.get_mut(), &segments),
        };
        if !repaired {
            break;
        }
        set_aside.push(target_key);
    }
    Collected {
        file: None,
        problems,
        set_aside,
    }
}

/// Path segments, without toml's internal `Spanned` wrapper segments.
fn segments(path: &serde_path_to_error::Path) -> Vec<Segment> {
    path.iter()
        .filter(|s| !matches!(s, Segment::Map { key } if key.starts_with("$__")))
        .filter(|s| !matches!(s, Segment::Unknown | Segment::Enum { .. }))
        .cloned()
        .collect()
}

/// `accounts[1].credentials.source` from segments.
fn key_of(segments: &[Segment]) -> String {
    let mut key = String::new();
    for segment in segments {
        match segment {
            Segment::Map { key: name } => {
                if !key.is_empty() {
                    key.push('.');
                }
                key.push_str(name);
            }
            Segment::Seq { index } => key.push_str(&format!("[{index}]")),
            Segment::Enum { .. } | Segment::Unknown => {}
        }
    }
    if key.is_empty() { ".".into() } else { key }
}

fn join(parent: &str, field: &str) -> String {
    if parent == "." || parent.is_empty() {
        field.to_owned()
    } else {
        format!("{parent}.{field}")
    }
}

/// Whether `key` lies inside `outer` (`accounts[0].name` inside `accounts[0]`).
pub(super) fn is_within(key: &str, outer: &str) -> bool {
    key.len() > outer.len()
        && key.starts_with(outer)
        && matches!(key.as_bytes()[outer.len()], b'.' | b'[')
}

/// The field of a "missing field `x`" message.
fn missing_field(message: &str) -> Option<&str> {
    message
        .strip_prefix("missing field `")?
        .split('`')
        .next()
        .filter(|f| !f.is_empty())
}

/// The first value an "expected one of `a`, `b`" (serde) or "expected one of: a, b" (this
/// crate's closed enums) message lists.
fn first_expected(message: &str) -> Option<&str> {
    let (_, rest) = message.split_once("expected one of")?;
    let rest = rest.trim_start_matches([':', ' ']);
    let first = match rest.strip_prefix('`') {
        Some(quoted) => quoted.split('`').next()?,
        None => rest.split([',', ' ']).next()?,
    };
    (!first.is_empty()).then_some(first)
}

/// The table that `segments` name (all but `last` segments walked).
fn walk<'a, 'i>(table: &'a mut DeTable<'i>, segments: &[Segment]) -> Option<&'a mut DeValue<'i>> {
    let (first, rest) = segments.split_first()?;
    let Segment::Map { key } = first else {
        return None;
    };
    let mut value = table.get_mut(key.as_str())?.get_mut();
    for segment in rest {
        value = match (segment, value) {
            (Segment::Map { key }, DeValue::Table(t)) => t.get_mut(key.as_str())?.get_mut(),
            (Segment::Seq { index }, DeValue::Array(a)) => a.get_mut(*index)?.get_mut(),
            _ => return None,
        };
    }
    Some(value)
}

/// The table at `segments` (the root when there are none).
fn table_at<'a, 'i>(
    root: &'a mut DeTable<'i>,
    segments: &[Segment],
) -> Option<&'a mut DeTable<'i>> {
    if segments.is_empty() {
        return Some(root);
    }
    match walk(root, segments) {
        Some(DeValue::Table(table)) => Some(table),
        _ => None,
    }
}

/// Removes the key `segments` name; an array element takes its whole array with it (arrays
/// cannot lose one element here), so the array's default applies.
fn remove(root: &mut DeTable<'_>, segments: &[Segment]) -> bool {
    let Some(end) = segments
        .iter()
        .rposition(|s| matches!(s, Segment::Map { .. }))
    else {
        return false;
    };
    let Segment::Map { key } = &segments[end] else {
        return false;
    };
    table_at(root, &segments[..end]).is_some_and(|table| table.remove(key.as_str()).is_some())
}

/// Sets a string at `segments` (+ `field`, when the key is missing from its table).
fn put(root: &mut DeTable<'_>, segments: &[Segment], field: Option<&str>, value: &str) -> bool {
    let (parent, name) = match (field, segments.split_last()) {
        (Some(field), _) => (segments, field.to_owned()),
        (None, Some((Segment::Map { key }, parent))) => (parent, key.clone()),
        (None, _) => return false,
    };
    let Some(table) = table_at(root, parent) else {
        return false;
    };
    table.remove(name.as_str());
    table.insert(
        Spanned::new(0..0, name.into()),
        Spanned::new(0..0, DeValue::String(value.to_owned().into())),
    );
    true
}

/// Where the value at `key` (`scan.concurrency`, `limits.max_spend_per_day.CNY`,
/// `accounts[0].rate_limit`) is written in the file, when it is.
pub(super) fn span_of(root: &DeTable<'_>, key: &str) -> Option<Range<usize>> {
    let mut parts = key.split('.').flat_map(|part| {
        // `accounts[0]` is a table key then an index.
        let (name, index) = match part.split_once('[') {
            Some((name, rest)) => (name, rest.trim_end_matches(']').parse::<usize>().ok()),
            None => (part, None),
        };
        std::iter::once(Step::Key(name)).chain(index.map(Step::Index))
    });
    let Some(Step::Key(first)) = parts.next() else {
        return None;
    };
    let mut value = root.get(first)?;
    for step in parts {
        value = match (step, value.get_ref()) {
            (Step::Key(name), DeValue::Table(t)) => t.get(name)?,
            (Step::Index(i), DeValue::Array(a)) => a.get(i)?,
            _ => return None,
        };
    }
    Some(value.span())
}

/// One step of a key path.
enum Step<'k> {
    Key(&'k str),
    Index(usize),
}
