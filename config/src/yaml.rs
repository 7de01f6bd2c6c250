//! YAML text → document tree → raw types, reporting every shape problem at once.
//!
//! serde stops at the first error, but a file with three typos should show all three. So the
//! text is parsed once into a [`Node`] tree (a syntax error or a duplicate key ends it there,
//! with line and column). The tree is then deserialized into the raw types by
//! [`NodeDeserializer`], which knows the dotted path of every node. When an attempt fails, the
//! error is reported at the failing node's path, that node is taken out of the tree and the
//! attempt is repeated: a value of the wrong type then reads as absent, an unknown key as never
//! written. Each round takes out one node, so the loop ends.

use std::cell::Cell;
use std::collections::BTreeSet;
use std::fmt;

use serde::Deserialize;
use serde::de::{self, DeserializeOwned, Deserializer, Visitor};
use thiserror::Error;

use crate::check::Check;

mod deserializer;

use self::deserializer::NodeDeserializer;

/// How many wrong types and unknown keys are reported before giving up on a file.
const MAX_SHAPE_PROBLEMS: usize = 100;

/// A parsed YAML document, with mapping keys as strings and entries in document order.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Node {
    Null,
    Bool(bool),
    Int(i128),
    Float(f64),
    Str(String),
    Seq(Vec<Self>),
    Map(Vec<(String, Self)>),
    /// A node taken out after its problem was reported; it reads as absent.
    Removed,
}

/// One step of a path: a map key or a list index.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Step {
    Key(String),
    Index(usize),
}

/// A shape problem: wrong type, unknown key, unknown value of a closed set.
#[derive(Debug, Error)]
#[error("{0}")]
pub(crate) struct ShapeError(String);

/// Parses `text` and deserializes it into `T`, reporting every problem into `check`.
///
/// Returns `None` when the text is not YAML, its root is not a map or it has more than
/// [`MAX_SHAPE_PROBLEMS`] shape problems; otherwise a `T` in which every value that had a
/// problem is absent.
pub(crate) fn from_str<T: DeserializeOwned>(text: &str, check: &mut Check) -> Option<T> {
    let mut tree = match parse(text) {
        Ok(tree) => tree,
        Err(message) => {
            check.error("", message);
            return None;
        }
    };
    // Each round walks the whole tree; the cap keeps a file of thousands of bad items from
    // costing quadratic time.
    for _ in 0..MAX_SHAPE_PROBLEMS {
        let site = Cell::new(None);
        match T::deserialize(NodeDeserializer::new(&tree, Vec::new(), &site)) {
            Ok(value) => return Some(value),
            Err(error) => {
                let steps = site.take().unwrap_or_default();
                check.shape_error(dotted(&steps), error.0);
                if !tree.remove(&steps) {
                    return None;
                }
            }
        }
    }
    let message =
        format!("stopped after {MAX_SHAPE_PROBLEMS} problems of type or key; fix those first");
    check.error("", message);
    None
}

/// Parses YAML text into a tree; an empty document is an empty map.
fn parse(text: &str) -> Result<Node, String> {
    let options = serde_saphyr::options! {
        with_snippet: false,
        strict_booleans: true,
        duplicate_keys: serde_saphyr::DuplicateKeyPolicy::Error,
    };
    match serde_saphyr::from_str_with_options::<Node>(text, options) {
        Ok(Node::Null) => Ok(Node::Map(Vec::new())),
        Ok(tree) => Ok(tree),
        Err(e) => Err(format!(
            "invalid yaml: {}",
            e.render_with_formatter(&serde_saphyr::UserMessageFormatter)
        )),
    }
}

/// Formats a path as the user reads it: `outbound.routes[2].identity`.
pub(crate) fn dotted(steps: &[Step]) -> String {
    let mut out = String::new();
    for step in steps {
        match step {
            Step::Key(key) if out.is_empty() => out.push_str(key),
            Step::Key(key) => {
                out.push('.');
                out.push_str(key);
            }
            Step::Index(i) => out.push_str(&format!("[{i}]")),
        }
    }
    out
}

// === impl Node ===

impl Node {
    /// Marks the node at `steps` as removed; `false` when there is none to remove (or it is the
    /// root, which cannot be).
    fn remove(&mut self, steps: &[Step]) -> bool {
        if steps.is_empty() {
            return false;
        }
        match self.get_mut(steps) {
            Some(Self::Removed) | None => false,
            Some(node) => {
                *node = Self::Removed;
                true
            }
        }
    }

    fn get_mut(&mut self, steps: &[Step]) -> Option<&mut Self> {
        let Some((step, rest)) = steps.split_first() else {
            return Some(self);
        };
        let child = match (self, step) {
            (Self::Seq(items), Step::Index(i)) => items.get_mut(*i),
            (Self::Map(entries), Step::Key(key)) => {
                entries.iter_mut().find(|(k, _)| k == key).map(|(_, v)| v)
            }
            _ => None,
        }?;
        child.get_mut(rest)
    }

    /// How the node reads in an error message: ``the string `x` ``, `a list`.
    fn describe(&self) -> String {
        match self {
            Self::Null | Self::Removed => "nothing".to_owned(),
            Self::Bool(b) => format!("`{b}`"),
            Self::Int(n) => format!("the number `{n}`"),
            Self::Float(f) => format!("the number `{f}`"),
            Self::Str(s) => format!("the string `{}`", s.escape_debug()),
            Self::Seq(_) => "a list".to_owned(),
            Self::Map(_) => "a map".to_owned(),
        }
    }
}

impl<'de> Deserialize<'de> for Node {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(NodeVisitor)
    }
}

/// Builds a [`Node`] from whatever the YAML parser reports.
struct NodeVisitor;

impl<'de> Visitor<'de> for NodeVisitor {
    type Value = Node;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a YAML value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Node, E> {
        Ok(Node::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Node, E> {
        Ok(Node::Int(v.into()))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Node, E> {
        Ok(Node::Int(v.into()))
    }

    fn visit_i128<E>(self, v: i128) -> Result<Node, E> {
        Ok(Node::Int(v))
    }

    fn visit_u128<E: de::Error>(self, v: u128) -> Result<Node, E> {
        i128::try_from(v)
            .map(Node::Int)
            .map_err(|_| E::custom(format!("`{v}` is too large a number")))
    }

    fn visit_f64<E>(self, v: f64) -> Result<Node, E> {
        Ok(Node::Float(v))
    }

    fn visit_str<E>(self, v: &str) -> Result<Node, E> {
        Ok(Node::Str(v.to_owned()))
    }

    fn visit_string<E>(self, v: String) -> Result<Node, E> {
        Ok(Node::Str(v))
    }

    fn visit_unit<E>(self) -> Result<Node, E> {
        Ok(Node::Null)
    }

    fn visit_none<E>(self) -> Result<Node, E> {
        Ok(Node::Null)
    }

    fn visit_some<D: Deserializer<'de>>(self, deserializer: D) -> Result<Node, D::Error> {
        deserializer.deserialize_any(self)
    }

    fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<Node, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element()? {
            items.push(item);
        }
        Ok(Node::Seq(items))
    }

    fn visit_map<A: de::MapAccess<'de>>(self, mut map: A) -> Result<Node, A::Error> {
        let mut seen = BTreeSet::new();
        let mut entries = Vec::new();
        while let Some(key) = map.next_key::<Node>()? {
            let key = match key {
                Node::Str(s) => s,
                Node::Int(n) => n.to_string(),
                Node::Bool(b) => b.to_string(),
                other => {
                    return Err(de::Error::custom(format!(
                        "a map key must be a string, found {}",
                        other.describe()
                    )));
                }
            };
            // The parser rejects duplicates too, but `1` and `"1"` differ in YAML and read the
            // same here.
            if !seen.insert(key.clone()) {
                return Err(de::Error::custom(format!("duplicate key `{key}`")));
            }
            entries.push((key, map.next_value()?));
        }
        Ok(Node::Map(entries))
    }
}

// === impl ShapeError ===

impl de::Error for ShapeError {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        Self(msg.to_string())
    }

    fn invalid_type(unexp: de::Unexpected<'_>, exp: &dyn de::Expected) -> Self {
        Self(format!("expected {exp}, found {}", unexpected(&unexp)))
    }

    fn invalid_value(unexp: de::Unexpected<'_>, exp: &dyn de::Expected) -> Self {
        Self(format!("expected {exp}, found {}", unexpected(&unexp)))
    }

    fn unknown_variant(variant: &str, expected: &'static [&'static str]) -> Self {
        Self(format!(
            "`{}` is not one of {}",
            variant.escape_debug(),
            one_of(expected)
        ))
    }

    fn unknown_field(_field: &str, expected: &'static [&'static str]) -> Self {
        match expected {
            [only] => Self(format!("unknown key; expected `{only}`")),
            _ => Self(format!("unknown key; expected one of {}", one_of(expected))),
        }
    }

    fn missing_field(field: &'static str) -> Self {
        Self(format!("`{field}` is required"))
    }
}

/// `` `a`, `b` or `c` ``
pub(crate) fn one_of(names: &[&str]) -> String {
    match names {
        [] => "nothing".to_owned(),
        [one] => format!("`{one}`"),
        [init @ .., last] => {
            let init: Vec<String> = init.iter().map(|n| format!("`{n}`")).collect();
            format!("{} or `{last}`", init.join(", "))
        }
    }
}

fn unexpected(unexp: &de::Unexpected<'_>) -> String {
    match unexp {
        de::Unexpected::Str(s) => format!("the string `{}`", s.escape_debug()),
        de::Unexpected::Signed(n) => format!("the number `{n}`"),
        de::Unexpected::Unsigned(n) => format!("the number `{n}`"),
        de::Unexpected::Float(n) => format!("the number `{n}`"),
        de::Unexpected::Bool(b) => format!("`{b}`"),
        de::Unexpected::Unit | de::Unexpected::Option => "nothing".to_owned(),
        de::Unexpected::Seq => "a list".to_owned(),
        de::Unexpected::Map => "a map".to_owned(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::path::PathBuf;

    use serde::Deserialize;

    use super::*;

    #[derive(Debug, Default, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Doc {
        name: Option<String>,
        count: Option<u64>,
        on: Option<bool>,
        items: Option<Vec<Option<Item>>>,
        map: Option<BTreeMap<String, String>>,
    }

    #[derive(Debug, Default, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Item {
        id: Option<String>,
    }

    fn run(text: &str) -> (Option<Doc>, Vec<String>) {
        let mut check = Check::new(PathBuf::from("/"));
        let doc = from_str::<Doc>(text, &mut check);
        (
            doc,
            check
                .into_errors()
                .iter()
                .map(ToString::to_string)
                .collect(),
        )
    }

    #[test]
    fn a_clean_document_has_no_problems() {
        let (doc, errors) = run("name: x\ncount: 3\non: true\nitems: [{id: a}]\nmap: {k: v}\n");
        assert!(errors.is_empty(), "{errors:?}");
        let doc = doc.unwrap();
        assert_eq!(doc.name.as_deref(), Some("x"));
        assert_eq!(doc.count, Some(3));
        assert_eq!(doc.on, Some(true));
        assert_eq!(doc.map.unwrap()["k"], "v");
    }

    #[test]
    fn every_shape_problem_is_reported_and_the_rest_still_reads() {
        let (doc, errors) = run(
            "name: [a]\ncount: many\non: yes\nitems: [{id: a, idd: b}, 7, {id: {x: 1}}]\nextra: 1\nmap: {k: [v]}\n",
        );
        assert_eq!(
            errors,
            [
                "name: expected a string, found a list",
                "count: expected a whole number of 0 or more, found the string `many`",
                "on: expected `true` or `false`, found the string `yes`",
                "items[0].idd: unknown key; expected `id`",
                "items[1]: expected a map, found the number `7`",
                "items[2].id: expected a string, found a map",
                "extra: unknown key; expected one of `name`, `count`, `on`, `items` or `map`",
                "map.k: expected a string, found a list",
            ]
        );
        let doc = doc.unwrap();
        assert!(doc.name.is_none() && doc.count.is_none() && doc.on.is_none());
        let items = doc.items.unwrap();
        assert_eq!(items.len(), 3, "dropped items keep their place");
        assert_eq!(items[0].as_ref().unwrap().id.as_deref(), Some("a"));
        assert!(items[1].is_none());
        assert!(items[2].as_ref().unwrap().id.is_none());
        assert!(doc.map.unwrap().is_empty());
    }

    #[test]
    fn reporting_stops_after_a_hundred_shape_problems() {
        let items = vec!["[]"; 150].join(", ");
        let (doc, errors) = run(&format!("items: [{items}]\n"));
        assert!(doc.is_none());
        assert_eq!(errors.len(), MAX_SHAPE_PROBLEMS + 1);
        assert_eq!(errors[99], "items[99]: expected a map, found a list");
        assert_eq!(
            errors[100],
            "stopped after 100 problems of type or key; fix those first"
        );
    }

    #[test]
    fn numbers_read_as_strings_keep_their_value() {
        let (doc, errors) = run("name: 8080\n");
        assert!(errors.is_empty());
        assert_eq!(doc.unwrap().name.as_deref(), Some("8080"));
    }

    #[test]
    fn a_syntax_error_is_one_problem_with_its_line_and_column() {
        let (doc, errors) = run("name: x\ncount: [1, 2\non: true\n");
        assert!(doc.is_none());
        assert_eq!(
            errors,
            ["invalid yaml: illegal placement of ':' indicator at line 3, column 3"]
        );
    }

    #[test]
    fn duplicate_keys_are_an_error() {
        let (doc, errors) = run("name: a\ncount: 1\nname: b\n");
        assert!(doc.is_none());
        assert_eq!(
            errors,
            ["invalid yaml: duplicate mapping key `name` is not allowed here at line 3, column 1"]
        );
        let (_, errors) = run("map: {1: a, '1': b}\n");
        assert_eq!(errors.len(), 1);
        assert!(
            errors[0].starts_with("invalid yaml: duplicate key `1`"),
            "{}",
            errors[0]
        );
    }

    #[test]
    fn map_keys_must_be_scalars() {
        let (doc, errors) = run("? [a, b]\n: x\n");
        assert!(doc.is_none());
        assert!(
            errors[0].contains("a map key must be a string, found a list"),
            "{}",
            errors[0]
        );
    }

    #[test]
    fn the_root_must_be_a_map_and_an_empty_file_is_one() {
        let (doc, errors) = run("- a\n- b\n");
        assert!(doc.is_none());
        assert_eq!(errors, ["expected a map, found a list"]);
        let (doc, errors) = run("");
        assert!(errors.is_empty());
        assert!(doc.unwrap().name.is_none());
        let (_, errors) = run("# only a comment\n");
        assert!(errors.is_empty());
    }

    #[test]
    fn paths_read_as_the_user_writes_them() {
        let steps = [
            Step::Key("outbound".into()),
            Step::Key("routes".into()),
            Step::Index(2),
            Step::Key("identity".into()),
        ];
        assert_eq!(dotted(&steps), "outbound.routes[2].identity");
        assert_eq!(dotted(&[]), "");
    }

    #[test]
    fn one_of_lists_names_in_prose() {
        assert_eq!(one_of(&[]), "nothing");
        assert_eq!(one_of(&["a"]), "`a`");
        assert_eq!(one_of(&["a", "b", "c"]), "`a`, `b` or `c`");
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_text_never_panics(text in proptest::prelude::any::<String>()) {
            let _ = run(&text);
        }

        #[test]
        fn yaml_like_text_never_panics(text in "[a-z:{}\\[\\], \n'\"0-9-]{0,80}") {
            let _ = run(&text);
        }
    }
}
