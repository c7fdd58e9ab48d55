//! Where configuration comes from besides the file, for containers
//! (README "Configuration in containers"):
//!
//! - **environment variables** `SWITCHYARD__<KEY>__<KEY>...`: each sets the
//!   key at that path, a decimal segment indexing an array of tables
//!   (`SWITCHYARD__LISTENER__0__ADDRESS`, `SWITCHYARD__REALM__0__ROLE__1__NAME`),
//!   so every key of the file can be set, tables and arrays created as
//!   needed; the value is read as a TOML value when it is one (a number,
//!   `true`, `["a", "b"]`, `"quoted"`), else as a string;
//! - **secret files**: wherever a secret is configured, `<name>_file =
//!   "/run/secrets/x"` instead of `<name>` reads it from that file (one
//!   trailing newline removed), for the names in [`SECRET_KEYS`].
//!
//! Both are applied to the file's TOML before it is read as a `Config`, so
//! every check (`check-config` too) sees the result. When neither is used
//! the file's own text is read, and error lines are the file's.

use std::path::Path;

use toml::{Table, Value};

/// The prefix of the variables that set configuration keys.
pub const ENV_PREFIX: &str = "SWITCHYARD__";

/// The keys that hold secrets, each of which may instead be read from a
/// file named by `<key>_file`: signing and webhook secrets (`[[bridge.key]]`,
/// `[[bridge.webhook]]`, `[[bridge.subscriber]]`, `[realm.queue_http]`),
/// ticket and WAMP-CRA secrets (`[[realm.auth.ticket]]`,
/// `[[realm.auth.wampcra]]`), the NATS token (`[cluster]`).
pub const SECRET_KEYS: [&str; 4] = ["secret", "nats_token", "token", "password"];

/// A configuration with the environment applied.
#[derive(Debug, PartialEq, Eq)]
pub struct Applied {
    /// The TOML to parse.
    pub text: String,
    /// The variables that were applied, by name.
    pub vars: Vec<String>,
}

/// The configuration text to parse: `text` (None: no file) with the
/// environment's `SWITCHYARD__*` variables and the `*_file` secrets
/// applied; None when there is nothing to apply (the file's text stands).
pub fn apply(
    text: Option<&str>,
    vars: impl IntoIterator<Item = (String, String)>,
) -> Result<Option<Applied>, String> {
    let mut sets: Vec<(Vec<Segment>, String, String)> = Vec::new();
    for (name, value) in vars {
        let Some(rest) = name.strip_prefix(ENV_PREFIX) else {
            continue;
        };
        let path = parse_path(rest).map_err(|e| format!("environment variable {name}: {e}"))?;
        sets.push((path, name, value));
    }
    let text = text.unwrap_or("");
    if sets.is_empty() && !mentions_secret_file(text) {
        return Ok(None);
    }
    let mut root: Table = toml::from_str(text).map_err(|e| e.to_string())?;
    // Indexes in order (0 before 1 before 10), so arrays grow one by one.
    sets.sort_by(|a, b| a.0.cmp(&b.0));
    let mut names = Vec::with_capacity(sets.len());
    for (path, name, value) in sets {
        set(&mut root, &path, parse_value(&value))
            .map_err(|e| format!("environment variable {name}: {e}"))?;
        names.push(name);
    }
    read_secret_files(&mut root, "")?;
    let text = toml::to_string(&root)
        .map_err(|e| format!("cannot apply the environment to the configuration: {e}"))?;
    Ok(Some(Applied { text, vars: names }))
}

/// A segment of a variable's path: a key, or an index into an array.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Segment {
    Index(usize),
    Key(String),
}

fn parse_path(rest: &str) -> Result<Vec<Segment>, String> {
    let segments: Vec<Segment> = rest
        .split("__")
        .map(|s| {
            if s.is_empty() || s.starts_with('_') || s.ends_with('_') {
                Err(format!(
                    "segment \"{s}\": keys are separated by exactly two underscores (__), \
                     and no key starts or ends with one"
                ))
            } else if s.bytes().all(|b| b.is_ascii_digit()) {
                s.parse::<usize>()
                    .map(Segment::Index)
                    .map_err(|e| format!("index {s}: {e}"))
            } else {
                Ok(Segment::Key(s.to_ascii_lowercase()))
            }
        })
        .collect::<Result<_, _>>()?;
    match segments.first() {
        Some(Segment::Key(_)) => Ok(segments),
        _ => Err("the name must start with a key after SWITCHYARD__".into()),
    }
}

/// A variable's value: a TOML value if it is exactly one, else the string.
fn parse_value(raw: &str) -> Value {
    match toml::from_str::<Table>(&format!("v = {raw}")) {
        Ok(t) if t.len() == 1 => t.get("v").cloned().unwrap_or_else(|| raw.into()),
        _ => Value::String(raw.to_string()),
    }
}

fn describe(v: &Value) -> &'static str {
    v.type_str()
}

/// Sets `value` at `path` under `table`, creating tables and array entries.
fn set(table: &mut Table, path: &[Segment], value: Value) -> Result<(), String> {
    let Some((Segment::Key(key), rest)) = path.split_first() else {
        return Err("a path must start with a key".into());
    };
    if rest.is_empty() {
        table.insert(key.clone(), value);
        return Ok(());
    }
    let slot = table.entry(key.clone()).or_insert_with(|| match rest[0] {
        Segment::Index(_) => Value::Array(Vec::new()),
        Segment::Key(_) => Value::Table(Table::new()),
    });
    set_in(slot, key, rest, value)
}

fn set_in(slot: &mut Value, at: &str, rest: &[Segment], value: Value) -> Result<(), String> {
    match (&rest[0], slot) {
        (Segment::Key(_), Value::Table(t)) => set(t, rest, value),
        (Segment::Index(i), Value::Array(items)) => {
            let i = *i;
            if i > items.len() {
                return Err(format!(
                    "{at} has {} entries: index {i} would leave a gap (set index {} first)",
                    items.len(),
                    items.len()
                ));
            }
            let tail = &rest[1..];
            if tail.is_empty() {
                if i == items.len() {
                    items.push(value);
                } else {
                    items[i] = value;
                }
                return Ok(());
            }
            if i == items.len() {
                items.push(match tail[0] {
                    Segment::Index(_) => Value::Array(Vec::new()),
                    Segment::Key(_) => Value::Table(Table::new()),
                });
            }
            set_in(&mut items[i], &format!("{at}[{i}]"), tail, value)
        }
        (Segment::Key(k), other) => Err(format!(
            "{at} is {} in the file, so it has no key {k}",
            describe(other)
        )),
        (Segment::Index(i), other) => Err(format!(
            "{at} is {} in the file, so it has no index {i}",
            describe(other)
        )),
    }
}

/// Whether the text may use a `<secret>_file` key (a quick look; the TOML
/// decides).
fn mentions_secret_file(text: &str) -> bool {
    SECRET_KEYS
        .iter()
        .any(|k| text.contains(&format!("{k}_file")))
}

/// Replaces every `<secret>_file` by `<secret>` read from the file.
fn read_secret_files(table: &mut Table, at: &str) -> Result<(), String> {
    for key in SECRET_KEYS {
        let file_key = format!("{key}_file");
        let Some(v) = table.remove(&file_key) else {
            continue;
        };
        let name = if at.is_empty() {
            file_key.clone()
        } else {
            format!("{at}.{file_key}")
        };
        let Value::String(path) = v else {
            return Err(format!("{name}: must be a file path (a string)"));
        };
        if table.contains_key(key) {
            return Err(format!(
                "{name} and {key} are both set: give the secret one way"
            ));
        }
        table.insert(
            key.to_string(),
            Value::String(read_secret(&name, Path::new(&path))?),
        );
    }
    for (k, v) in table.iter_mut() {
        let here = if at.is_empty() {
            k.clone()
        } else {
            format!("{at}.{k}")
        };
        match v {
            Value::Table(t) => read_secret_files(t, &here)?,
            Value::Array(items) => {
                for (i, item) in items.iter_mut().enumerate() {
                    if let Value::Table(t) = item {
                        read_secret_files(t, &format!("{here}[{i}]"))?;
                    }
                }
            }
            _ => {}
        }
    }
    Ok(())
}

/// The secret in `path`: its text without one trailing newline.
fn read_secret(name: &str, path: &Path) -> Result<String, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("{name}: cannot read {}: {e}", path.display()))?;
    let secret = text
        .strip_suffix("\r\n")
        .or_else(|| text.strip_suffix('\n'))
        .unwrap_or(&text);
    if secret.is_empty() {
        return Err(format!("{name}: {} is empty", path.display()));
    }
    Ok(secret.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(v: &[(&str, &str)]) -> Vec<(String, String)> {
        v.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn table(text: &str) -> Table {
        toml::from_str(text).expect("toml")
    }

    #[test]
    fn nothing_to_apply_keeps_the_text() {
        assert_eq!(
            apply(Some("[log]\nlevel = \"info\"\n"), vars(&[("PATH", "/bin")])),
            Ok(None)
        );
    }

    #[test]
    fn variables_set_keys_at_any_depth() {
        let out = apply(
            Some("[[listener]]\ntype = \"websocket\"\naddress = \"127.0.0.1:8080\"\n"),
            vars(&[
                ("SWITCHYARD__LISTENER__0__ADDRESS", "0.0.0.0:8080"),
                ("SWITCHYARD__LISTENER__1__TYPE", "rawsocket"),
                ("SWITCHYARD__LISTENER__1__ADDRESS", "0.0.0.0:8081"),
                ("SWITCHYARD__LIMITS__MAX_MESSAGE_SIZE", "2097152"),
                ("SWITCHYARD__REALM__0__NAME", "\"12345\""),
                ("SWITCHYARD__REALM__0__ROLE__0__NAME", "backend"),
                (
                    "SWITCHYARD__REALM__0__ROLE__0__PERMISSION__0__ALLOW",
                    "[\"call\"]",
                ),
                ("SWITCHYARD__LOG__LEVEL", "debug"),
                ("OTHER", "x"),
            ]),
        )
        .expect("applied")
        .expect("changed")
        .text;
        let t = table(&out);
        let listeners = t["listener"].as_array().expect("array");
        assert_eq!(listeners[0]["address"].as_str(), Some("0.0.0.0:8080"));
        assert_eq!(listeners[0]["type"].as_str(), Some("websocket"));
        assert_eq!(listeners[1]["type"].as_str(), Some("rawsocket"));
        assert_eq!(
            t["limits"]["max_message_size"].as_integer(),
            Some(2_097_152)
        );
        assert_eq!(t["realm"][0]["name"].as_str(), Some("12345"));
        assert_eq!(
            t["realm"][0]["role"][0]["permission"][0]["allow"][0].as_str(),
            Some("call")
        );
        assert_eq!(t["log"]["level"].as_str(), Some("debug"));
    }

    #[test]
    fn indexes_apply_in_numeric_order_and_gaps_are_refused() {
        let many: Vec<(String, String)> = (0..12)
            .rev()
            .map(|i| (format!("SWITCHYARD__REALM__{i}__NAME"), format!("realm{i}")))
            .collect();
        let t = table(&apply(None, many).expect("applied").expect("changed").text);
        assert_eq!(t["realm"][11]["name"].as_str(), Some("realm11"));
        let gap = apply(None, vars(&[("SWITCHYARD__REALM__1__NAME", "x")]));
        assert!(gap.is_err_and(|e| e.contains("SWITCHYARD__REALM__1__NAME") && e.contains("gap")));
        for bad in [
            "SWITCHYARD__",
            "SWITCHYARD__LOG___LEVEL",
            "SWITCHYARD__0__X",
        ] {
            assert!(apply(None, vars(&[(bad, "1")])).is_err(), "{bad}");
        }
        let clash = apply(
            Some("[log]\nlevel = \"info\"\n"),
            vars(&[("SWITCHYARD__LOG__LEVEL__X", "1")]),
        );
        assert!(clash.is_err_and(|e| e.contains("no key x")));
    }

    #[test]
    fn secret_files_replace_their_key_anywhere() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("k");
        std::fs::write(&file, "s3cret-from-a-file\n").expect("write");
        let text = format!(
            "[[bridge]]\naddress = \"127.0.0.1:1\"\n[[bridge.key]]\nkey = \"k\"\nrole = \"r\"\nsecret_file = \"{}\"\n",
            file.display()
        );
        let t = table(
            &apply(Some(&text), vars(&[]))
                .expect("applied")
                .expect("changed")
                .text,
        );
        assert_eq!(
            t["bridge"][0]["key"][0]["secret"].as_str(),
            Some("s3cret-from-a-file")
        );
        assert!(t["bridge"][0]["key"][0].get("secret_file").is_none());
        // Through a variable too.
        let t = table(
            &apply(
                None,
                vars(&[(
                    "SWITCHYARD__CLUSTER__NATS_TOKEN_FILE",
                    &file.display().to_string(),
                )]),
            )
            .expect("applied")
            .expect("changed")
            .text,
        );
        assert_eq!(
            t["cluster"]["nats_token"].as_str(),
            Some("s3cret-from-a-file")
        );
        let both = format!("{text}secret = \"x\"\n");
        assert!(apply(Some(&both), vars(&[])).is_err_and(|e| e.contains("both")));
        let missing = "[cluster]\nnats_token_file = \"/nonexistent/x\"\n";
        assert!(apply(Some(missing), vars(&[]))
            .is_err_and(|e| e.contains("cluster.nats_token_file") && e.contains("/nonexistent/x")));
    }
}
