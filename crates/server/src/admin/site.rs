//! Answers the HTTP requests under the admin path of a WebSocket listener:
//! the embedded files, `config.json` (the realm, role and WebSocket path
//! the page needs), and the headers that keep the page from being framed,
//! cached or made to run foreign scripts.

use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{self, HeaderName, HeaderValue};
use hyper::{Method, Response, StatusCode};

use super::assets;

/// The page never runs inline script or loads anything from elsewhere;
/// it talks to its own origin only (`'self'` covers ws:/wss: to it).
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
    img-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'none'; \
    frame-ancestors 'none'";

/// The admin page as served by one WebSocket listener.
#[derive(Debug, Clone)]
pub struct Site {
    /// e.g. "/admin" (no trailing '/').
    path: String,
    /// `config.json`, rendered once.
    config_json: Bytes,
}

impl crate::transport::websocket::Pages for Site {
    fn answer(&self, method: &Method, path: &str) -> Option<Response<Full<Bytes>>> {
        Site::answer(self, method, path)
    }
}

impl Site {
    /// The page at `path`, logging in to `realm` over the listener's
    /// WebSocket path `ws_path`, expecting role `role`.
    pub fn new(path: &str, realm: &str, role: &str, ws_path: &str) -> Site {
        let config = serde_json::json!({
            "realm": realm,
            "role": role,
            "ws_path": ws_path,
            "admin_path": path,
        });
        Site {
            path: path.to_string(),
            config_json: Bytes::from(config.to_string()),
        }
    }

    /// The answer to a request for `path`, or None if the path is not the
    /// admin page's.
    pub fn answer(&self, method: &Method, path: &str) -> Option<Response<Full<Bytes>>> {
        let rest = if path == self.path {
            None
        } else {
            Some(path.strip_prefix(&self.path)?.strip_prefix('/')?)
        };
        if method != Method::GET && method != Method::HEAD {
            let mut r = respond(
                StatusCode::METHOD_NOT_ALLOWED,
                "text/plain; charset=utf-8",
                "no-store",
                Bytes::from_static(b"the admin page only answers GET\n"),
            );
            r.headers_mut()
                .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
            return Some(r);
        }
        let Some(rest) = rest else {
            // "/admin" -> "/admin/": relative, so that it works behind a
            // proxy that serves the router under a prefix.
            let last = self.path.rsplit('/').next().unwrap_or_default();
            let mut r = respond(
                StatusCode::MOVED_PERMANENTLY,
                "text/plain; charset=utf-8",
                "no-store",
                Bytes::from_static(b"the admin page is at the path with a trailing /\n"),
            );
            if let Ok(v) = HeaderValue::from_str(&format!("{last}/")) {
                r.headers_mut().insert(header::LOCATION, v);
            }
            return Some(r);
        };
        let r = match (rest, assets::get(rest)) {
            ("config.json", _) => respond(
                StatusCode::OK,
                "application/json",
                "no-store",
                self.config_json.clone(),
            ),
            (_, Some(a)) => respond(
                StatusCode::OK,
                a.content_type,
                a.cache,
                Bytes::from_static(a.body),
            ),
            (_, None) => respond(
                StatusCode::NOT_FOUND,
                "text/plain; charset=utf-8",
                "no-store",
                Bytes::from_static(b"not found\n"),
            ),
        };
        Some(r)
    }
}

fn respond(
    status: StatusCode,
    content_type: &'static str,
    cache: &'static str,
    body: Bytes,
) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(body));
    *r.status_mut() = status;
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static(cache));
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(
        HeaderName::from_static("cross-origin-opener-policy"),
        HeaderValue::from_static("same-origin"),
    );
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    fn site() -> Site {
        Site::new("/ops/admin", "realm1", "admin", "/ws")
    }

    #[test]
    fn paths_outside_the_admin_path_are_not_its() {
        let s = site();
        for p in [
            "/",
            "/ws",
            "/ops",
            "/ops/adminx",
            "/ops/admin2/app.js",
            "/metrics",
        ] {
            assert!(s.answer(&Method::GET, p).is_none(), "{p}");
        }
    }

    #[test]
    fn the_bare_path_redirects_relatively() {
        let r = site().answer(&Method::GET, "/ops/admin").unwrap();
        assert_eq!(r.status(), StatusCode::MOVED_PERMANENTLY);
        assert_eq!(r.headers()[header::LOCATION], "admin/");
    }

    #[test]
    fn files_have_the_security_headers_and_html_is_not_cached() {
        let r = site().answer(&Method::GET, "/ops/admin/").unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(r.headers()[header::CACHE_CONTROL], "no-store");
        assert_eq!(r.headers()[header::X_FRAME_OPTIONS], "DENY");
        assert!(r.headers()[header::CONTENT_SECURITY_POLICY]
            .to_str()
            .unwrap()
            .contains("script-src 'self'"));
        let r = site().answer(&Method::GET, "/ops/admin/app.js").unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        let r = site().answer(&Method::GET, "/ops/admin/../x").unwrap();
        assert_eq!(r.status(), StatusCode::NOT_FOUND);
        let r = site().answer(&Method::POST, "/ops/admin/").unwrap();
        assert_eq!(r.status(), StatusCode::METHOD_NOT_ALLOWED);
    }
}
