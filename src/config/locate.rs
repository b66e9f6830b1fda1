//! Turns a `toml` parse or deserialize error into a [`ConfigError`] that names
//! the key path (`server.listn`, `upstream[1].mode`) and the line and column.
//!
//! `toml` reports a byte span, not a path. For deserialize errors (unknown
//! key, wrong type, bad enum value) the document is syntactically valid, so it
//! is parsed again into a spanned tree and the narrowest key or value whose
//! span holds the error names the path. For syntax errors there is no tree:
//! the path is the nearest table header above the error. This file never
//! decides what is valid; it only explains what `toml` and serde rejected.

use std::ops::Range;

use toml::Spanned;
use toml::de::{DeTable, DeValue};

use super::ConfigError;

/// Maps an error from `toml::from_str` on `text` to a [`ConfigError`].
pub(crate) fn toml_error(file: &str, text: &str, err: &toml::de::Error) -> ConfigError {
    let span = err.span();
    let at = span.as_ref().map(|s| s.start.min(text.len()));
    let place = at.map(|at| {
        let (line, col) = line_col(text, at);
        format!("line {line}, column {col}")
    });
    let message = err.message().trim_end();

    match DeTable::parse(text) {
        // Syntax error: there is no tree to search.
        Err(_) => {
            let key = at.map(|at| enclosing_header(text, at)).unwrap_or_default();
            let reason = match place {
                Some(place) => format!("TOML syntax error at {place}: {message}"),
                None => format!("TOML syntax error: {message}"),
            };
            ConfigError::new(file, key, reason)
        }
        Ok(doc) => {
            let key = span.map(|span| path_at(doc.get_ref(), span)).unwrap_or_default();
            let mut reason = explain(message);
            if key == "upstream" && message.contains("invalid type: map") {
                reason.push_str("; write each upstream as an [[upstream]] table");
            }
            if let Some(place) = place {
                reason.push_str(&format!(" ({place})"));
            }
            ConfigError::new(file, key, reason)
        }
    }
}

/// 1-based line and column (in characters) of byte offset `at`.
fn line_col(text: &str, at: usize) -> (usize, usize) {
    let before = &text[..floor_char_boundary(text, at)];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    (line, before[line_start..].chars().count() + 1)
}

fn floor_char_boundary(text: &str, mut at: usize) -> usize {
    while !text.is_char_boundary(at) {
        at -= 1;
    }
    at
}

/// Rewrites serde's field vocabulary into this file's: TOML has keys.
fn explain(message: &str) -> String {
    if let Some(rest) = message.strip_prefix("unknown field `") {
        // "unknown field `x`, expected one of `a`, `b`" / ", expected `a`"
        let expected =
            rest.split_once('`').map(|(_, tail)| tail.trim_start_matches(',').trim()).unwrap_or("");
        return if expected.is_empty() || expected.starts_with("there are no") {
            "unknown key".to_owned()
        } else {
            format!("unknown key ({})", expected.replace('`', ""))
        };
    }
    if let Some(rest) = message.strip_prefix("missing field `") {
        let name = rest.trim_end_matches('`');
        return format!("missing required key {name:?}");
    }
    // serde speaks of Rust types; say what to write in TOML instead.
    let mut out = message.to_owned();
    if let Some(at) = out.find("expected struct ") {
        out.replace_range(at.., "expected a table");
    }
    for (rust, toml) in [
        ("invalid type: map", "invalid type: table"),
        ("invalid type: sequence", "invalid type: array"),
        ("expected a sequence", "expected an array"),
        ("expected i64", "expected an integer"),
    ] {
        out = out.replace(rust, toml);
    }
    out
}

/// The key path of the narrowest key or value whose span holds `span.start`.
fn path_at(doc: &DeTable<'_>, span: Range<usize>) -> String {
    let mut search = Search { at: span.start, path: Vec::new(), best: None };
    search.table(doc);
    search.best.map(|(_, path)| path).unwrap_or_default()
}

enum Segment<'a> {
    Key(&'a str),
    Index(usize),
}

struct Search<'a> {
    at: usize,
    path: Vec<Segment<'a>>,
    /// Width of the best span so far, and its rendered path.
    best: Option<(usize, String)>,
}

impl<'a> Search<'a> {
    fn table(&mut self, table: &'a DeTable<'a>) {
        for (key, value) in table.iter() {
            self.path.push(Segment::Key(key.get_ref()));
            self.consider(key.span());
            self.value(value);
            self.path.pop();
        }
    }

    fn value(&mut self, value: &'a Spanned<DeValue<'a>>) {
        self.consider(value.span());
        match value.get_ref() {
            DeValue::Table(table) => self.table(table),
            DeValue::Array(items) => {
                for (i, item) in items.iter().enumerate() {
                    self.path.push(Segment::Index(i));
                    self.value(item);
                    self.path.pop();
                }
            }
            _ => {}
        }
    }

    /// Parents are visited before children, so on a tie (`<=`) the deeper
    /// path wins.
    fn consider(&mut self, span: Range<usize>) {
        let holds = span.contains(&self.at) || (span.is_empty() && span.start == self.at);
        if !holds {
            return;
        }
        let width = span.len();
        if self.best.as_ref().is_none_or(|(best, _)| width <= *best) {
            self.best = Some((width, self.render()));
        }
    }

    fn render(&self) -> String {
        let mut out = String::new();
        for segment in &self.path {
            match segment {
                Segment::Key(key) => {
                    if !out.is_empty() {
                        out.push('.');
                    }
                    if is_bare_key(key) {
                        out.push_str(key);
                    } else {
                        out.push_str(&format!("{key:?}"));
                    }
                }
                Segment::Index(i) => out.push_str(&format!("[{i}]")),
            }
        }
        out
    }
}

fn is_bare_key(key: &str) -> bool {
    !key.is_empty() && key.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// Best-effort section for a syntax error: the last `[table]` or
/// `[[array]]` header before byte `at`, with its index for arrays.
fn enclosing_header(text: &str, at: usize) -> String {
    let before = &text[..floor_char_boundary(text, at)];
    let mut counts: Vec<(String, usize)> = Vec::new();
    let mut current = String::new();
    for line in before.lines() {
        let line = line.trim_start();
        if let Some(rest) = line.strip_prefix("[[") {
            let Some((name, _)) = rest.split_once("]]") else {
                continue;
            };
            let name = name.trim().to_owned();
            let index = match counts.iter_mut().find(|(n, _)| *n == name) {
                Some((_, count)) => {
                    *count += 1;
                    *count - 1
                }
                None => {
                    counts.push((name.clone(), 1));
                    0
                }
            };
            current = format!("{name}[{index}]");
        } else if let Some(rest) = line.strip_prefix('[') {
            if let Some((name, _)) = rest.split_once(']') {
                current = name.trim().to_owned();
            }
        }
    }
    current
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_and_column_are_one_based() {
        let text = "a = 1\nbé = x\n";
        assert_eq!(line_col(text, 0), (1, 1));
        assert_eq!(line_col(text, 6), (2, 1));
        // 'x' is after "bé = " (5 characters, 6 bytes).
        assert_eq!(line_col(text, text.find('x').unwrap()), (2, 6));
    }

    #[test]
    fn serde_messages_are_rewritten_in_key_terms() {
        assert_eq!(
            explain("unknown field `listn`, expected one of `listen`, `allow`"),
            "unknown key (expected one of listen, allow)"
        );
        assert_eq!(explain("unknown field `x`, expected `server`"), "unknown key (expected server)");
        assert_eq!(explain("unknown field `x`, there are no fields"), "unknown key");
        assert_eq!(explain("missing field `name`"), "missing required key \"name\"");
        assert_eq!(explain("something else"), "something else");
        assert_eq!(
            explain("invalid type: map, expected a sequence"),
            "invalid type: table, expected an array"
        );
        assert_eq!(
            explain("invalid type: sequence, expected struct RawServer"),
            "invalid type: array, expected a table"
        );
        assert_eq!(
            explain("invalid type: floating point `1.5`, expected i64"),
            "invalid type: floating point `1.5`, expected an integer"
        );
    }

    #[test]
    fn header_scan_counts_array_tables() {
        let text = "[server]\nx=1\n[[upstream]]\n[[upstream]]\nbad here\n";
        let at = text.find("bad").unwrap();
        assert_eq!(enclosing_header(text, at), "upstream[1]");
        assert_eq!(enclosing_header(text, 10), "server");
        assert_eq!(enclosing_header(text, 0), "");
    }

    #[test]
    fn span_search_finds_nested_keys_and_values() {
        let text = "[server]\nlisten = [\"a\", \"b\"]\n[[upstream]]\nname = \"x\"\n\
                    [[upstream]]\n\"odd key\" = 1\n";
        let doc = DeTable::parse(text).unwrap();
        let find = |needle: &str| {
            let at = text.find(needle).unwrap();
            path_at(doc.get_ref(), at..at + needle.len())
        };
        assert_eq!(find("\"b\""), "server.listen[1]");
        assert_eq!(find("\"x\""), "upstream[0].name");
        assert_eq!(find("name"), "upstream[0].name");
        assert_eq!(find("\"odd key\""), "upstream[1].\"odd key\"");
    }
}
