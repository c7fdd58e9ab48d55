//! Bridge bodies are JSON with every object key once. A key given twice
//! means different things to different parsers (serde_json keeps the last,
//! others the first, some refuse): a proxy, an audit log or a signer that
//! reads `{"topic": "a", "topic": "b"}` as `a` would see another request
//! than the router. Such bodies are refused before they are interpreted.

use std::collections::HashSet;
use std::fmt;

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use switchyard_router::logsafe::Clip;

/// Checks that `body` is JSON without a duplicate key in any object; the
/// parser's message otherwise (naming the key and its position).
pub fn check_unique_keys(body: &[u8]) -> Result<(), String> {
    serde_json::from_slice::<Unique>(body)
        .map(|_| ())
        .map_err(|e| e.to_string())
}

/// A JSON value whose objects have unique keys (nothing is kept).
struct Unique;

impl<'de> Deserialize<'de> for Unique {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Unique, D::Error> {
        d.deserialize_any(UniqueVisitor)
    }
}

struct UniqueVisitor;

impl<'de> Visitor<'de> for UniqueVisitor {
    type Value = Unique;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E>(self, _: bool) -> Result<Unique, E> {
        Ok(Unique)
    }
    fn visit_i64<E>(self, _: i64) -> Result<Unique, E> {
        Ok(Unique)
    }
    fn visit_u64<E>(self, _: u64) -> Result<Unique, E> {
        Ok(Unique)
    }
    fn visit_f64<E>(self, _: f64) -> Result<Unique, E> {
        Ok(Unique)
    }
    fn visit_str<E>(self, _: &str) -> Result<Unique, E> {
        Ok(Unique)
    }
    fn visit_unit<E>(self) -> Result<Unique, E> {
        Ok(Unique)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Unique, A::Error> {
        while seq.next_element::<Unique>()?.is_some() {}
        Ok(Unique)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Unique, A::Error> {
        let mut seen = HashSet::new();
        while let Some(key) = map.next_key::<String>()? {
            if seen.contains(&key) {
                return Err(de::Error::custom(format_args!(
                    "the key \"{}\" appears twice in one object (which one counts would \
                     depend on the parser)",
                    Clip(&key)
                )));
            }
            map.next_value::<Unique>()?;
            seen.insert(key);
        }
        Ok(Unique)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn duplicate_keys_at_any_depth_are_found() {
        assert!(check_unique_keys(br#"{"a": 1, "b": {"a": [{"a": null}]}}"#).is_ok());
        assert!(check_unique_keys(br#"[1, "x", true, null, 1.5, -3]"#).is_ok());
        for bad in [
            r#"{"a": 1, "a": 2}"#,
            r#"{"a": {"b": 1, "b": 1}}"#,
            r#"[{"x": 1}, {"y": 1, "y": 2}]"#,
            r#"{"\u0061": 1, "a": 2}"#,
        ] {
            let e = check_unique_keys(bad.as_bytes()).expect_err(bad);
            assert!(e.contains("appears twice"), "{bad}: {e}");
        }
        assert!(check_unique_keys(b"{").is_err());
    }
}
