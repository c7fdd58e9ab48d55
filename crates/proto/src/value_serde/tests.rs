//! Edge cases of the `Value` serializer and deserializer.

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};

use super::*;

/// Binary data the way `serde_bytes` marks it (no extra dependency here).
#[derive(Debug, PartialEq)]
struct Blob(Vec<u8>);

impl Serialize for Blob {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(&self.0)
    }
}

impl<'de> Deserialize<'de> for Blob {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = Blob;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("bytes")
            }
            fn visit_bytes<E>(self, v: &[u8]) -> Result<Blob, E> {
                Ok(Blob(v.to_vec()))
            }
        }
        d.deserialize_bytes(V)
    }
}

#[derive(Debug, PartialEq, Serialize, Deserialize)]
enum Shape {
    Empty,
    Circle(f64),
    Rect(u32, u32),
    Named { name: String, sides: u8 },
}

#[derive(Debug, PartialEq, Serialize, Deserialize)]
struct Everything {
    max: u64,
    min: i64,
    small: i8,
    ratio: f32,
    letter: char,
    blob: Blob,
    maybe: Option<String>,
    none: Option<u8>,
    shapes: Vec<Shape>,
    by_id: BTreeMap<u64, String>,
    by_neg: BTreeMap<i32, bool>,
    flags: HashMap<bool, u8>,
    nested: BTreeMap<String, BTreeMap<String, Vec<u16>>>,
    pair: (String, u64),
    unit: (),
    dynamic: Value,
}

fn everything() -> Everything {
    Everything {
        max: u64::MAX,
        min: i64::MIN,
        small: -3,
        ratio: 0.5,
        letter: 'é',
        blob: Blob(vec![0, 159, 255]),
        maybe: Some("x".into()),
        none: None,
        shapes: vec![
            Shape::Empty,
            Shape::Circle(1.5),
            Shape::Rect(2, 3),
            Shape::Named {
                name: "tri".into(),
                sides: 3,
            },
        ],
        by_id: [(u64::MAX, "max".to_string()), (7, "seven".into())].into(),
        by_neg: [(-1, true)].into(),
        flags: [(true, 1)].into(),
        nested: [("a".to_string(), [("b".to_string(), vec![1u16, 2])].into())].into(),
        pair: ("p".into(), 9),
        unit: (),
        dynamic: Value::List(vec![Value::Bytes(vec![1, 2]), Value::Int(-5), Value::Null]),
    }
}

#[test]
fn everything_round_trips() {
    let e = everything();
    let v = to_value(&e).expect("to_value");
    let d = v.as_dict().expect("a struct is a dict");
    assert_eq!(d.get("max"), Some(&Value::UInt(u64::MAX)));
    assert_eq!(d.get("min"), Some(&Value::Int(i64::MIN)));
    assert_eq!(d.get("blob"), Some(&Value::Bytes(vec![0, 159, 255])));
    assert_eq!(d.get("none"), Some(&Value::Null));
    assert_eq!(
        d.get("by_id")
            .and_then(Value::as_dict)
            .map(|m| m.get("18446744073709551615").is_some()),
        Some(true)
    );
    // A `Value` inside typed data stays as it is (bytes included).
    assert_eq!(d.get("dynamic"), Some(&e.dynamic));
    let back: Everything = from_value(v).expect("from_value");
    assert_eq!(back, e);
}

#[test]
fn enums_take_the_external_tag_form() {
    assert_eq!(to_value(&Shape::Empty), Ok(Value::from("Empty")));
    assert_eq!(
        to_value(&Shape::Rect(2, 3)),
        Ok(Value::Dict(Dict::new().with(
            "Rect",
            Value::List(vec![Value::UInt(2), Value::UInt(3)])
        )))
    );
    let e = from_value::<Shape>(Value::from("Nope")).expect_err("unknown variant");
    assert!(e.to_string().contains("unknown variant `Nope`"), "{e}");
}

#[test]
fn integers_keep_their_full_range_and_sign_rule() {
    assert_eq!(to_value(&5i32), Ok(Value::UInt(5)));
    assert_eq!(to_value(&-5i32), Ok(Value::Int(-5)));
    assert_eq!(to_value(&u128::from(u64::MAX)), Ok(Value::UInt(u64::MAX)));
    assert!(to_value(&(u128::from(u64::MAX) + 1)).is_err());
    assert_eq!(from_value::<u64>(Value::UInt(u64::MAX)), Ok(u64::MAX));
    assert_eq!(
        from_value::<i128>(Value::Int(i64::MIN)),
        Ok(i128::from(i64::MIN))
    );
    let e = from_value::<u8>(Value::UInt(256)).expect_err("out of range");
    assert!(e.to_string().contains("256"), "{e}");
    let e = from_value::<u64>(Value::Int(-1)).expect_err("negative");
    assert!(e.to_string().contains("-1"), "{e}");
    // No guessing from floats; floats accept integers.
    assert!(from_value::<u64>(Value::Float(3.0)).is_err());
    assert_eq!(from_value::<f64>(Value::UInt(3)), Ok(3.0));
}

#[test]
fn binary_data_reads_into_bytes_and_vec_u8() {
    let v = Value::Bytes(vec![1, 2, 3]);
    assert_eq!(from_value::<Blob>(v.clone()), Ok(Blob(vec![1, 2, 3])));
    assert_eq!(from_value::<Vec<u8>>(v.clone()), Ok(vec![1, 2, 3]));
    let borrowed: &[u8] = from_value_ref(&v).expect("borrowed bytes");
    assert_eq!(borrowed, &[1, 2, 3]);
    // A Vec<u8> (no serde_bytes) is a list of integers.
    assert_eq!(
        to_value(&vec![1u8, 2]),
        Ok(Value::List(vec![Value::UInt(1), Value::UInt(2)]))
    );
}

#[test]
fn strict_points_give_located_messages() {
    #[derive(Debug, Deserialize)]
    #[allow(dead_code)]
    struct User {
        name: String,
        age: u8,
    }
    // A struct is not read from a list.
    let list = Value::List(vec![Value::from("ann"), Value::UInt(3)]);
    assert!(from_value::<User>(list).is_err());
    // Where the bad field is.
    let v = Value::List(vec![Value::Dict(
        Dict::new().with("name", "ann").with("age", "old"),
    )]);
    let e = from_value::<Vec<User>>(v).expect_err("bad age");
    assert_eq!(e.path(), "[0].age");
    assert!(
        e.to_string()
            .starts_with("at [0].age: invalid type: string \"old\""),
        "{e}"
    );
    let e = from_value::<User>(Value::Dict(Dict::new().with("name", "ann"))).expect_err("missing");
    assert_eq!(e.to_string(), "missing field `age`");
    // Tuples have an exact length.
    let three = Value::List(vec![Value::UInt(1), Value::UInt(2), Value::UInt(3)]);
    assert!(from_value::<(u8, u8)>(three.clone()).is_err());
    assert!(from_value::<(u8, u8, u8, u8)>(three.clone()).is_err());
    assert_eq!(from_value::<(u8, u8, u8)>(three), Ok((1, 2, 3)));
}

#[test]
fn options_units_and_newtypes() {
    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Meters(f64);
    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Marker;
    assert_eq!(to_value(&None::<u8>), Ok(Value::Null));
    assert_eq!(to_value(&Some(3u8)), Ok(Value::UInt(3)));
    assert_eq!(from_value::<Option<u8>>(Value::Null), Ok(None));
    assert_eq!(from_value::<Option<u8>>(Value::UInt(3)), Ok(Some(3)));
    assert_eq!(to_value(&Meters(1.5)), Ok(Value::Float(1.5)));
    assert_eq!(from_value::<Meters>(Value::Float(1.5)), Ok(Meters(1.5)));
    assert_eq!(to_value(&Marker), Ok(Value::Null));
    assert_eq!(from_value::<Marker>(Value::Null), Ok(Marker));
    assert_eq!(from_value::<()>(Value::Null), Ok(()));
    #[derive(Debug, PartialEq, Deserialize)]
    struct Opt {
        a: Option<u8>,
        #[serde(default)]
        b: u8,
    }
    assert_eq!(
        from_value::<Opt>(Value::Dict(Dict::new())),
        Ok(Opt { a: None, b: 0 })
    );
}

#[test]
fn map_keys_that_wamp_cannot_carry_are_refused() {
    let m: HashMap<(u8, u8), u8> = [((1, 2), 3)].into();
    let e = to_value(&m).expect_err("tuple keys");
    assert!(e.to_string().contains("map key"), "{e}");
    let m: BTreeMap<char, u8> = [('x', 1)].into();
    assert_eq!(
        from_value::<BTreeMap<char, u8>>(to_value(&m).expect("char keys")),
        Ok(m)
    );
}

#[test]
fn values_and_dicts_read_themselves() {
    let v = Value::Dict(
        Dict::new()
            .with("b", Value::Bytes(vec![0]))
            .with("l", Value::List(vec![Value::Int(-1), Value::Float(0.25)])),
    );
    assert_eq!(from_value::<Value>(v.clone()), Ok(v.clone()));
    assert_eq!(to_value(&v), Ok(v.clone()));
    let d: Dict = from_value(v.clone()).expect("dict");
    assert_eq!(Value::Dict(d), v);
    assert!(from_value::<Dict>(Value::UInt(1)).is_err());
    // The JSON form of a Value is unchanged: WAMP's "\0base64" text.
    assert_eq!(
        serde_json::to_string(&Value::Bytes(vec![1, 2])).expect("json"),
        "\"\\u0000AQI=\""
    );
}
