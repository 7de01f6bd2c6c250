//! A serde `Deserializer` over a [`Node`] tree that knows each node's path.
//!
//! Type checks happen here, before a visitor is called, so their messages are ours ("expected a
//! string, found a list"). When any error leaves a node, the deserializer records that node's
//! path as the error's site; errors travel outward, so the innermost node wins.

use std::cell::Cell;
use std::slice;

use serde::de::value::StrDeserializer;
use serde::de::{self, DeserializeSeed, Deserializer, IntoDeserializer, Visitor};
use serde::forward_to_deserialize_any;

use super::{Node, ShapeError, Step, one_of};

/// Deserializes one node; `site` receives the path of the first node an error leaves.
pub(super) struct NodeDeserializer<'a> {
    node: &'a Node,
    path: Vec<Step>,
    site: &'a Cell<Option<Vec<Step>>>,
}

/// The entries of a map, skipping removed ones.
struct MapAccess<'a> {
    entries: slice::Iter<'a, (String, Node)>,
    // The value of the key last handed out, with its path.
    pending: Option<(&'a Node, Vec<Step>)>,
    path: Vec<Step>,
    site: &'a Cell<Option<Vec<Step>>>,
}

/// The items of a list. A removed item is still handed out (it reads as absent) so that the
/// items after it keep their index.
struct SeqAccess<'a> {
    items: std::iter::Enumerate<slice::Iter<'a, Node>>,
    path: Vec<Step>,
    site: &'a Cell<Option<Vec<Step>>>,
}

// === impl NodeDeserializer ===

impl<'a> NodeDeserializer<'a> {
    pub(super) fn new(node: &'a Node, path: Vec<Step>, site: &'a Cell<Option<Vec<Step>>>) -> Self {
        Self { node, path, site }
    }

    /// Records this node as the error's site unless a deeper node already is.
    fn mark(&self, error: ShapeError) -> ShapeError {
        mark_site(self.site, &self.path, error)
    }

    fn expected(&self, what: &str) -> ShapeError {
        self.mark(ShapeError(format!(
            "expected {what}, found {}",
            self.node.describe()
        )))
    }

    fn map(&self) -> MapAccess<'a> {
        let entries: &'a [(String, Node)] = match self.node {
            Node::Map(entries) => entries,
            _ => &[],
        };
        MapAccess {
            entries: entries.iter(),
            pending: None,
            path: self.path.clone(),
            site: self.site,
        }
    }

    fn seq(&self) -> SeqAccess<'a> {
        let items: &'a [Node] = match self.node {
            Node::Seq(items) => items,
            _ => &[],
        };
        SeqAccess {
            items: items.iter().enumerate(),
            path: self.path.clone(),
            site: self.site,
        }
    }
}

fn mark_site(site: &Cell<Option<Vec<Step>>>, path: &[Step], error: ShapeError) -> ShapeError {
    let current = site.take();
    site.set(current.or_else(|| Some(path.to_vec())));
    error
}

fn visit_int<'de, V: Visitor<'de>>(n: i128, visitor: V) -> Result<V::Value, ShapeError> {
    if let Ok(n) = i64::try_from(n) {
        visitor.visit_i64(n)
    } else if let Ok(n) = u64::try_from(n) {
        visitor.visit_u64(n)
    } else {
        visitor.visit_i128(n)
    }
}

impl<'de> Deserializer<'de> for NodeDeserializer<'_> {
    type Error = ShapeError;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, ShapeError> {
        let result = match self.node {
            Node::Null | Node::Removed => visitor.visit_unit(),
            Node::Bool(b) => visitor.visit_bool(*b),
            Node::Int(n) => visit_int(*n, visitor),
            Node::Float(f) => visitor.visit_f64(*f),
            Node::Str(s) => visitor.visit_str(s),
            Node::Seq(_) => visitor.visit_seq(self.seq()),
            Node::Map(_) => visitor.visit_map(self.map()),
        };
        result.map_err(|e| self.mark(e))
    }

    fn deserialize_bool<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, ShapeError> {
        match self.node {
            Node::Bool(b) => visitor.visit_bool(*b).map_err(|e| self.mark(e)),
            _ => Err(self.expected("`true` or `false`")),
        }
    }

    fn deserialize_u64<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, ShapeError> {
        match self.node {
            Node::Int(n) if u64::try_from(*n).is_ok() => {
                visit_int(*n, visitor).map_err(|e| self.mark(e))
            }
            _ => Err(self.expected("a whole number of 0 or more")),
        }
    }

    // Numbers are accepted as their text: `listen: 8080` then fails as an address, and
    // `ttl: 60` as a duration without a unit, each with a message about the value.
    fn deserialize_str<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, ShapeError> {
        let result = match self.node {
            Node::Str(s) => visitor.visit_str(s),
            Node::Int(n) => visitor.visit_str(&n.to_string()),
            Node::Float(f) => visitor.visit_str(&f.to_string()),
            _ => return Err(self.expected("a string")),
        };
        result.map_err(|e| self.mark(e))
    }

    fn deserialize_string<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, ShapeError> {
        self.deserialize_str(visitor)
    }

    fn deserialize_identifier<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, ShapeError> {
        self.deserialize_str(visitor)
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, ShapeError> {
        match self.node {
            Node::Null | Node::Removed => visitor.visit_none().map_err(|e| self.mark(e)),
            _ => visitor.visit_some(self),
        }
    }

    fn deserialize_seq<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, ShapeError> {
        match self.node {
            Node::Seq(_) => visitor.visit_seq(self.seq()).map_err(|e| self.mark(e)),
            _ => Err(self.expected("a list")),
        }
    }

    fn deserialize_map<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, ShapeError> {
        match self.node {
            Node::Map(_) => visitor.visit_map(self.map()).map_err(|e| self.mark(e)),
            _ => Err(self.expected("a map")),
        }
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, ShapeError> {
        self.deserialize_map(visitor)
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _name: &'static str,
        variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, ShapeError> {
        match self.node {
            Node::Str(s) => {
                let variant: StrDeserializer<'_, ShapeError> = s.as_str().into_deserializer();
                visitor.visit_enum(variant).map_err(|e| self.mark(e))
            }
            _ => Err(self.expected(&format!("one of {}", one_of(variants)))),
        }
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, ShapeError> {
        visitor.visit_newtype_struct(self)
    }

    fn deserialize_ignored_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, ShapeError> {
        visitor.visit_unit()
    }

    forward_to_deserialize_any! {
        i8 i16 i32 i64 i128 u8 u16 u32 u128 f32 f64 char bytes byte_buf unit unit_struct
        tuple tuple_struct
    }
}

// === impl MapAccess ===

impl<'de> de::MapAccess<'de> for MapAccess<'_> {
    type Error = ShapeError;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, ShapeError> {
        let Some((key, value)) = self
            .entries
            .by_ref()
            .find(|(_, value)| !matches!(value, Node::Removed))
        else {
            return Ok(None);
        };
        let mut path = self.path.clone();
        path.push(Step::Key(key.clone()));
        // An unknown key fails here; its site is the key itself, so that entry is dropped.
        let key_deserializer: StrDeserializer<'_, ShapeError> = key.as_str().into_deserializer();
        let result = seed
            .deserialize(key_deserializer)
            .map_err(|e| mark_site(self.site, &path, e));
        self.pending = Some((value, path));
        result.map(Some)
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(
        &mut self,
        seed: V,
    ) -> Result<V::Value, ShapeError> {
        match self.pending.take() {
            Some((node, path)) => seed.deserialize(NodeDeserializer::new(node, path, self.site)),
            None => Err(mark_site(
                self.site,
                &self.path,
                ShapeError("a value was asked for before its key".to_owned()),
            )),
        }
    }
}

// === impl SeqAccess ===

impl<'de> de::SeqAccess<'de> for SeqAccess<'_> {
    type Error = ShapeError;

    fn next_element_seed<T: DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, ShapeError> {
        let Some((index, node)) = self.items.next() else {
            return Ok(None);
        };
        let mut path = self.path.clone();
        path.push(Step::Index(index));
        seed.deserialize(NodeDeserializer::new(node, path, self.site))
            .map(Some)
    }
}
