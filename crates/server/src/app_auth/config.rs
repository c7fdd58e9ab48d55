//! `[realm.http_auth]`: where the application's authenticator and
//! authorizer answer over HTTP, how requests to them are signed, and the
//! bounds of asking them (time, response size, requests at once, the cache
//! of authorizer answers, what happens when the app does not answer).

use std::time::Duration;

use serde::Deserialize;

/// `[realm.http_auth]`.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpAuthConfig {
    /// Where logins are POSTed (tickets of authids without a static
    /// principal), instead of `[realm.auth] authenticator`.
    #[serde(default)]
    pub authenticator_url: Option<String>,
    /// Where actions of sessions whose role is not listed are POSTed,
    /// instead of the realm's `authorizer` procedure.
    #[serde(default)]
    pub authorizer_url: Option<String>,
    /// The `key` query parameter of the signature (which secret the app
    /// checks with).
    #[serde(default = "default_key")]
    pub key: String,
    /// Signs every request (the scheme of HTTP subscribers and queue HTTP
    /// targets; at least 16 characters).
    pub secret: String,
    /// How long one request may take, the wait for a free slot included.
    #[serde(default = "default_timeout", with = "humantime_serde")]
    pub timeout: Duration,
    /// Largest response body read, bytes.
    #[serde(default = "default_max_response")]
    pub max_response_size: usize,
    /// Requests to the app in flight at once for this realm; more wait
    /// (within `timeout`) for a slot.
    #[serde(default = "default_max_concurrent")]
    pub max_concurrent: usize,
    /// How long an authorizer answer is reused for the same session, URI
    /// and action ("0s": not cached).
    #[serde(default = "default_cache_ttl", with = "humantime_serde")]
    pub cache_ttl: Duration,
    /// Authorizer answers kept at most (the oldest go first).
    #[serde(default = "default_cache_entries")]
    pub cache_entries: usize,
    /// The role of a login the app could not decide (it did not answer,
    /// answered late, or answered neither an answer nor a refusal). Absent
    /// (the default): such logins are refused. The session then gets a
    /// router-assigned authid, as a role-only answer does.
    #[serde(default)]
    pub fallback_role: Option<String>,
}

fn default_key() -> String {
    "switchyard".into()
}
fn default_timeout() -> Duration {
    Duration::from_secs(5)
}
fn default_max_response() -> usize {
    64 * 1024
}
fn default_max_concurrent() -> usize {
    64
}
fn default_cache_ttl() -> Duration {
    Duration::from_secs(60)
}
fn default_cache_entries() -> usize {
    10_000
}

// The secret never reaches a log line, not even through Debug.
impl std::fmt::Debug for HttpAuthConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpAuthConfig")
            .field("authenticator_url", &self.authenticator_url)
            .field("authorizer_url", &self.authorizer_url)
            .field("key", &self.key)
            .finish_non_exhaustive()
    }
}

impl HttpAuthConfig {
    /// Problems a config check reports, given whether the realm also names
    /// an authenticator / authorizer procedure.
    pub fn problems(
        &self,
        procedure_authenticator: bool,
        procedure_authorizer: bool,
    ) -> Vec<String> {
        let mut out = Vec::new();
        let urls = [
            ("authenticator_url", &self.authenticator_url),
            ("authorizer_url", &self.authorizer_url),
        ];
        for (name, url) in urls {
            if let Some(u) = url {
                if !crate::outbound::client::is_http_url(u) {
                    out.push(format!(
                        "http_auth.{name}: \"{u}\" must be an http:// or https:// URL"
                    ));
                }
            }
        }
        if self.authenticator_url.is_none() && self.authorizer_url.is_none() {
            out.push("http_auth: needs authenticator_url or authorizer_url".into());
        }
        if self.authenticator_url.is_some() && procedure_authenticator {
            out.push(
                "http_auth.authenticator_url: the realm's auth.authenticator procedure is set too; keep one"
                    .into(),
            );
        }
        if self.authorizer_url.is_some() && procedure_authorizer {
            out.push(
                "http_auth.authorizer_url: the realm's authorizer procedure is set too; keep one"
                    .into(),
            );
        }
        if self.secret.len() < 16 {
            out.push("http_auth.secret: must have at least 16 characters".into());
        }
        if self.max_concurrent == 0 || self.max_response_size == 0 || self.timeout.is_zero() {
            out.push(
                "http_auth: max_concurrent, max_response_size and timeout must be positive".into(),
            );
        }
        if self.fallback_role.as_deref() == Some("") {
            out.push("http_auth.fallback_role: must not be empty".into());
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(toml_text: &str) -> HttpAuthConfig {
        toml::from_str(toml_text).expect("parses")
    }

    #[test]
    fn problems_are_reported() {
        let ok = config(
            "authenticator_url = \"https://app.example.com/login\"\nsecret = \"0123456789abcdef\"\n",
        );
        assert!(ok.problems(false, false).is_empty());
        assert_eq!(
            ok.problems(true, false).len(),
            1,
            "both the procedure and the URL"
        );
        let bad = config("authorizer_url = \"ftp://x/\"\nsecret = \"short\"\nmax_concurrent = 0\n");
        let p = bad.problems(false, false).join("\n");
        for want in ["authorizer_url", "secret", "max_concurrent"] {
            assert!(p.contains(want), "{want}: {p}");
        }
        let none = config("secret = \"0123456789abcdef\"\n");
        assert!(none.problems(false, false)[0].contains("needs authenticator_url"));
    }
}
