//! The payload rules of typed arguments, without a router.

use serde::de::IgnoredAny;
use serde::{Deserialize, Serialize};
use switchyard_proto::{Dict, Payload, Value};

use super::*;

#[derive(Debug, PartialEq, Serialize, Deserialize)]
struct Point {
    x: i64,
    y: i64,
}

fn parts(p: &Payload) -> (Vec<Value>, Dict) {
    decode(p).expect("decodes")
}

fn read<T: FromPayload>(args: Vec<Value>, kwargs: Dict) -> Result<T, ValueError> {
    T::from_parts(args, kwargs)
}

#[test]
fn sending_follows_the_shape() {
    let (a, k) = parts(&(2u8, "x").to_payload().expect("tuple"));
    assert_eq!(
        (a, k),
        (vec![Value::UInt(2), Value::from("x")], Dict::new())
    );
    let (a, k) = parts(&Point { x: 1, y: -2 }.to_payload().expect("struct"));
    assert!(a.is_empty());
    assert_eq!(k, Dict::new().with("x", 1i64).with("y", -2i64));
    assert!(().to_payload().expect("unit").is_empty());
    assert!(None::<u8>.to_payload().expect("none").is_empty());
    assert_eq!(
        parts(&5u8.to_payload().expect("one")).0,
        vec![Value::UInt(5)]
    );
    // A list or struct as one positional argument: a 1-tuple.
    let (a, _) = parts(&(vec![1u8, 2],).to_payload().expect("1-tuple"));
    assert_eq!(a, vec![Value::List(vec![Value::UInt(1), Value::UInt(2)])]);
    // Both parts.
    let both = ArgsKw {
        args: ("a",),
        kwargs: Point { x: 0, y: 0 },
    };
    let (a, k) = parts(&both.to_payload().expect("both"));
    assert_eq!(a, vec![Value::from("a")]);
    assert_eq!(k.len(), 2);
    let bad = ArgsKw {
        args: 1u8,
        kwargs: (),
    };
    assert!(bad.to_payload().is_err());
}

#[test]
fn receiving_finds_the_reading_that_fits() {
    let five = || vec![Value::UInt(5)];
    assert_eq!(read::<u64>(five(), Dict::new()), Ok(5));
    assert_eq!(read::<(u64,)>(five(), Dict::new()), Ok((5,)));
    assert_eq!(read::<Vec<u64>>(five(), Dict::new()), Ok(vec![5]));
    // One list argument (what Python's `return [1, 2]` sends).
    let one_list = || vec![Value::List(vec![Value::UInt(1), Value::UInt(2)])];
    assert_eq!(read::<Vec<u64>>(one_list(), Dict::new()), Ok(vec![1, 2]));
    assert_eq!(read::<(u64, u64)>(one_list(), Dict::new()), Ok((1, 2)));
    assert_eq!(
        read::<Vec<Vec<u64>>>(one_list(), Dict::new()),
        Ok(vec![vec![1, 2]])
    );
    // Several positional arguments.
    let two = vec![Value::UInt(1), Value::from("b")];
    assert_eq!(read::<(u8, String)>(two, Dict::new()), Ok((1, "b".into())));
    // Keyword arguments, or one dict argument, into a struct.
    let kw = || Dict::new().with("x", 1u64).with("y", 2u64);
    assert_eq!(read::<Point>(vec![], kw()), Ok(Point { x: 1, y: 2 }));
    assert_eq!(
        read::<Point>(vec![Value::Dict(kw())], Dict::new()),
        Ok(Point { x: 1, y: 2 })
    );
    // Both present: positional first, keyword arguments if that fails.
    assert_eq!(read::<u64>(five(), kw()), Ok(5));
    assert_eq!(read::<Point>(five(), kw()), Ok(Point { x: 1, y: 2 }));
    let both: ArgsKw<(u64,), Point> = read(five(), kw()).expect("both");
    assert_eq!(both.args, (5,));
    assert_eq!(both.kwargs, Point { x: 1, y: 2 });
}

#[test]
fn nothing_reads_as_empty() {
    assert_eq!(read::<()>(vec![], Dict::new()), Ok(()));
    assert_eq!(read::<Option<u8>>(vec![], Dict::new()), Ok(None));
    assert_eq!(read::<Vec<u8>>(vec![], Dict::new()), Ok(vec![]));
    #[derive(Debug, PartialEq, Deserialize)]
    struct Opts {
        limit: Option<u32>,
        #[serde(default)]
        verbose: bool,
    }
    assert_eq!(
        read::<Opts>(vec![], Dict::new()),
        Ok(Opts {
            limit: None,
            verbose: false
        })
    );
    let e = read::<Point>(vec![], Dict::new()).expect_err("needs x");
    assert_eq!(e.to_string(), "missing field `x`");
    let e = read::<(u8, u8)>(vec![], Dict::new()).expect_err("needs two");
    assert!(e.to_string().contains("invalid length 0"), "{e}");
    assert!(read::<IgnoredAny>(vec![Value::UInt(1)], Dict::new().with("a", 1u64)).is_ok());
}

#[test]
fn errors_are_the_first_readings() {
    // One argument: the error is about that argument, not its list.
    let e = read::<Point>(vec![Value::Dict(Dict::new().with("x", "a"))], Dict::new())
        .expect_err("bad x");
    assert!(
        e.to_string()
            .starts_with("at x: invalid type: string \"a\""),
        "{e}"
    );
    let e = read::<u8>(vec![Value::from("a"), Value::UInt(1)], Dict::new()).expect_err("list");
    assert!(e.to_string().contains("invalid type: sequence"), "{e}");
}
