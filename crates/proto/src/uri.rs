//! URI rules (Basic Profile, "Identifiers"): loose and strict checks.

/// Which URI rule a realm enforces.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum UriCheck {
    /// Components must be non-empty and contain no `.`, `#` or whitespace.
    #[default]
    Loose,
    /// Components must be non-empty and only `[0-9a-z_]`.
    Strict,
}

/// Checks `uri` against `rule`. `allow_empty` permits empty components
/// (pattern-based subscriptions and registrations). On failure, returns a
/// human-readable reason.
pub fn check(uri: &str, rule: UriCheck, allow_empty: bool) -> Result<(), String> {
    if uri.is_empty() {
        return Err("URI is empty".into());
    }
    for (i, comp) in uri.split('.').enumerate() {
        if comp.is_empty() {
            if allow_empty {
                continue;
            }
            return Err(format!(
                "URI \"{uri}\" has an empty component (position {i})"
            ));
        }
        let bad = match rule {
            UriCheck::Loose => comp.chars().find(|c| *c == '#' || c.is_whitespace()),
            UriCheck::Strict => comp
                .chars()
                .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '_')),
        };
        if let Some(c) = bad {
            let rule_text = match rule {
                UriCheck::Loose => "'#' and whitespace are not allowed",
                UriCheck::Strict => "strict URIs allow only lower-case letters, digits and '_'",
            };
            return Err(format!("URI \"{uri}\" contains {c:?}: {rule_text}"));
        }
    }
    Ok(())
}

/// Whether `uri` lies in the reserved `wamp.` namespace.
pub fn is_reserved(uri: &str) -> bool {
    uri == "wamp" || uri.starts_with("wamp.")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loose_rules() {
        for ok in ["com.myapp.topic1", "a", "com.MyApp.Topic-1", "ünïcode.ok"] {
            assert!(check(ok, UriCheck::Loose, false).is_ok(), "{ok}");
        }
        for bad in ["", "com..x", ".com", "com.", "has space", "a.#", "tab\t.x"] {
            assert!(check(bad, UriCheck::Loose, false).is_err(), "{bad}");
        }
        assert!(check("com..x", UriCheck::Loose, true).is_ok());
    }

    #[test]
    fn strict_rules() {
        assert!(check("com.my_app.topic1", UriCheck::Strict, false).is_ok());
        for bad in ["com.MyApp", "com.my-app", "com.x y"] {
            let e = check(bad, UriCheck::Strict, false).unwrap_err();
            assert!(e.contains("strict"), "{e}");
        }
    }

    #[test]
    fn reserved() {
        assert!(is_reserved("wamp.session.count"));
        assert!(!is_reserved("wampx.foo"));
    }
}
