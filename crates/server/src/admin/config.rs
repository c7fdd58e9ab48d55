//! The `[admin]` section: where the admin web page is served, which realm it
//! logs in to and which role it expects. Without the section the page does
//! not exist (its path answers 404 like any unknown path).

use std::net::SocketAddr;

use serde::Deserialize;

use crate::config::{Config, ListenerConfig};

/// `[admin]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminConfig {
    /// The page's HTTP path on the WebSocket listeners (e.g. "/admin"); the
    /// page lives at `<path>/`.
    pub path: String,
    /// The realm the page logs in to (default: the first configured realm).
    #[serde(default)]
    pub realm: Option<String>,
    /// The role the page expects after login (default "admin"). The page
    /// refuses another role with a clear message; what a session may do is
    /// decided by the router's authorization of every call either way.
    #[serde(default = "default_role")]
    pub role: String,
    /// Addresses of the WebSocket listeners that serve the page (default:
    /// every WebSocket listener).
    #[serde(default)]
    pub listeners: Option<Vec<SocketAddr>>,
}

fn default_role() -> String {
    "admin".into()
}

impl AdminConfig {
    /// The realm the page logs in to.
    pub fn realm_name(&self, config: &Config) -> String {
        self.realm.clone().unwrap_or_else(|| {
            config
                .realms
                .first()
                .map(|r| r.name.get_ref().clone())
                .unwrap_or_else(|| "realm1".into())
        })
    }

    /// Whether the WebSocket listener on `address` serves the page.
    pub fn served_on(&self, address: SocketAddr) -> bool {
        self.listeners.as_ref().is_none_or(|l| l.contains(&address))
    }

    /// What is wrong with the section, as `admin.<key>: ...` messages.
    pub fn problems(&self, config: &Config) -> Vec<String> {
        let mut out = Vec::new();
        let p = &self.path;
        let valid_chars = p
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"/-_.~".contains(&b));
        if !p.starts_with('/')
            || p.len() < 2
            || p.ends_with('/')
            || p.contains("//")
            || !valid_chars
        {
            out.push(format!(
                "admin.path: \"{p}\" must start with '/', name at least one segment, not end with '/', \
                 and use only A-Z a-z 0-9 / - _ . ~"
            ));
        }
        if p.split('/').any(|seg| seg == "." || seg == "..") {
            out.push(format!(
                "admin.path: \"{p}\" must not contain . or .. segments"
            ));
        }
        let websockets: Vec<(SocketAddr, String, Option<String>)> = config
            .listener_configs()
            .unwrap_or_default()
            .into_iter()
            .filter_map(|l| match l {
                ListenerConfig::Websocket {
                    address,
                    path,
                    metrics_path,
                    ..
                } => Some((address, path, metrics_path)),
                _ => None,
            })
            .collect();
        let under = |other: &str| other == p || other.starts_with(&format!("{p}/"));
        for (address, path, metrics) in &websockets {
            if !self.served_on(*address) {
                continue;
            }
            if under(path) {
                out.push(format!(
                    "admin.path: \"{p}\" would hide the WebSocket path \"{path}\" of listener {address}"
                ));
            }
            if metrics.as_deref().is_some_and(under) {
                out.push(format!(
                    "admin.path: \"{p}\" would hide the metrics_path of listener {address}"
                ));
            }
        }
        if websockets.is_empty() {
            out.push("admin: the page needs a websocket listener to be served on".into());
        }
        for a in self.listeners.iter().flatten() {
            if !websockets.iter().any(|(w, _, _)| w == a) {
                out.push(format!(
                    "admin.listeners: {a} is not the address of a websocket listener"
                ));
            }
        }
        if let Some(r) = &self.realm {
            if !config.realms.iter().any(|x| x.name.get_ref() == r) {
                out.push(format!("admin.realm: realm \"{r}\" is not configured"));
            }
        }
        if self.role.is_empty() {
            out.push("admin.role: must not be empty".into());
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use crate::config::Config;

    fn errors(admin: &str) -> String {
        let text = format!(
            "[[listener]]\ntype = \"websocket\"\naddress = \"127.0.0.1:8080\"\npath = \"/ws\"\n\n\
             [[realm]]\nname = \"realm1\"\n\n[admin]\n{admin}\n"
        );
        match Config::parse(&text) {
            Ok(_) => String::new(),
            Err(errs) => errs
                .iter()
                .map(|e| e.to_string())
                .collect::<Vec<_>>()
                .join("\n"),
        }
    }

    #[test]
    fn a_valid_section_is_accepted() {
        assert_eq!(errors("path = \"/admin\""), "");
        assert_eq!(
            errors("path = \"/ops/admin\"\nrealm = \"realm1\"\nrole = \"ops\"\nlisteners = [\"127.0.0.1:8080\"]"),
            ""
        );
    }

    #[test]
    fn bad_sections_are_refused_with_the_line_and_key() {
        for (admin, want) in [
            ("path = \"admin\"", "admin.path"),
            ("path = \"/admin/\"", "admin.path"),
            ("path = \"/\"", "admin.path"),
            ("path = \"/a/../b\"", "admin.path"),
            ("path = \"/ws\"", "would hide the WebSocket path"),
            ("path = \"/admin\"\nrealm = \"nope\"", "admin.realm"),
            (
                "path = \"/admin\"\nlisteners = [\"127.0.0.1:9\"]",
                "admin.listeners",
            ),
            ("path = \"/admin\"\nrole = \"\"", "admin.role"),
            ("path = \"/admin\"\ncolour = \"red\"", "colour"),
        ] {
            let e = errors(admin);
            assert!(e.contains(want), "{admin}: {e}");
            assert!(e.contains("line "), "{admin}: {e}");
        }
    }
}
