//! Where in the text an error is: line and column of a key path, found in
//! the document read as keys and spans only.

use core::fmt;
use std::collections::BTreeSet;
use std::ops::Range;

use serde::Deserialize;
use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};
use toml::Spanned;

use super::ConfigFileError;

/// 1-based line and column (in characters) of byte `offset` in `text`.
pub(super) fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let before = text.get(..offset).unwrap_or(text);
    let line_start = before.rfind('\n').map_or(0, |n| n + 1);
    (before.matches('\n').count() + 1, before[line_start..].chars().count() + 1)
}

/// A TOML or type error from the deserialiser, located in `text`.
pub(super) fn toml_error(text: &str, e: &toml::de::Error) -> ConfigFileError {
    // The deserialiser's messages may span lines; ours are one line.
    let message = e.message().trim().replace('\n', "; ");
    let mut err = ConfigFileError::new(message);
    if let Some(span) = e.span() {
        let (line, column) = line_column(text, span.start);
        err.line = Some(line);
        err.column = Some(column);
        // The key path comes from a second, key-only read; a syntax error
        // fails it too, and then only the position is given.
        if let Ok(root) = toml::from_str::<Node>(text) {
            let mut path = String::new();
            if root.locate(span.start, &mut path) {
                err.key = Some(path);
            }
        }
    }
    err
}

/// A TOML value reduced to its structure, with the spans of keys and values.
pub(super) enum Node {
    Table(Vec<(Spanned<String>, Spanned<Self>)>),
    Array(Vec<Spanned<Self>>),
    Leaf,
}

impl Node {
    /// The text, as keys and spans; a syntax error leaves an empty table.
    pub(super) fn read(text: &str) -> Self {
        toml::from_str(text).unwrap_or(Self::Table(Vec::new()))
    }

    /// The span of the value at `path` (`service[0].real[1].addr`), or, when
    /// the file lacks it, of the nearest enclosing value it has; and whether
    /// that was the value itself.
    pub(super) fn find(&self, path: &str) -> Option<(Range<usize>, bool)> {
        let mut node = self;
        let mut found = None;
        for step in steps(path) {
            let next = match (node, step) {
                (Self::Table(entries), Step::Key(key)) => {
                    entries.iter().find(|(k, _)| k.get_ref() == key).map(|e| &e.1)
                }
                (Self::Array(items), Step::Index(i)) => items.get(i),
                _ => None,
            };
            let Some(next) = next else { return found.map(|span| (span, false)) };
            found = Some(next.span());
            node = next.get_ref();
        }
        found.map(|span| (span, true))
    }

    /// Extend `path` with the deepest key whose key or value text holds `offset`.
    fn locate(&self, offset: usize, path: &mut String) -> bool {
        let hit = |span: Range<usize>| span.contains(&offset) || span.start == offset;
        match self {
            Self::Table(entries) => entries.iter().any(|(k, v)| {
                let mut sub =
                    if path.is_empty() { k.get_ref().clone() } else { format!("{path}.{}", k.get_ref()) };
                let found = v.get_ref().locate(offset, &mut sub) || hit(k.span()) || hit(v.span());
                if found {
                    *path = sub;
                }
                found
            }),
            Self::Array(items) => items.iter().enumerate().any(|(i, v)| {
                let mut sub = format!("{path}[{i}]");
                let found = v.get_ref().locate(offset, &mut sub) || hit(v.span());
                if found {
                    *path = sub;
                }
                found
            }),
            Self::Leaf => false,
        }
    }
}

impl<'de> Deserialize<'de> for Node {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(NodeVisitor)
    }
}

struct NodeVisitor;

impl<'de> Visitor<'de> for NodeVisitor {
    type Value = Node;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any TOML value")
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Node, E> {
        Ok(Node::Leaf)
    }

    fn visit_i64<E: de::Error>(self, _: i64) -> Result<Node, E> {
        Ok(Node::Leaf)
    }

    fn visit_u64<E: de::Error>(self, _: u64) -> Result<Node, E> {
        Ok(Node::Leaf)
    }

    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Node, E> {
        Ok(Node::Leaf)
    }

    fn visit_str<E: de::Error>(self, _: &str) -> Result<Node, E> {
        Ok(Node::Leaf)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Node, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element()? {
            items.push(item);
        }
        Ok(Node::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Node, A::Error> {
        let mut entries = Vec::new();
        while let Some(key) = map.next_key()? {
            entries.push((key, map.next_value()?));
        }
        Ok(Node::Table(entries))
    }
}

/// One step of a key path: a key, or an index into an array.
#[derive(Clone, Copy)]
enum Step<'a> {
    Key(&'a str),
    Index(usize),
}

/// The steps of `service[0].real[1].addr`.
fn steps(path: &str) -> impl Iterator<Item = Step<'_>> {
    path.split('.').flat_map(|part| {
        let mut pieces = part.split('[');
        let key = pieces.next().filter(|k| !k.is_empty()).map(Step::Key);
        let indices = pieces.filter_map(|i| i.strip_suffix(']')?.parse().ok()).map(Step::Index);
        key.into_iter().chain(indices)
    })
}

/// The dotted path of the first leaf that differs between two tables, keys in order.
pub(super) fn first_difference(a: &toml::Table, b: &toml::Table, prefix: &str) -> Option<String> {
    let keys: BTreeSet<&String> = a.keys().chain(b.keys()).collect();
    keys.into_iter().find_map(|key| {
        let path = if prefix.is_empty() { key.clone() } else { format!("{prefix}.{key}") };
        match (a.get(key), b.get(key)) {
            (Some(toml::Value::Table(x)), Some(toml::Value::Table(y))) => first_difference(x, y, &path),
            (x, y) => (x != y).then_some(path),
        }
    })
}
