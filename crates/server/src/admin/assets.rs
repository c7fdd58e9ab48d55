//! The admin page's files, embedded in the binary (plain HTML, CSS and
//! JavaScript: no build step, nothing fetched from elsewhere).

/// One embedded file.
pub struct Asset {
    pub body: &'static [u8],
    pub content_type: &'static str,
    /// HTML may change with the binary: never cached. The scripts and the
    /// style sheet are revalidated too (a new binary may bring new ones).
    pub cache: &'static str,
}

const NO_STORE: &str = "no-store";
const REVALIDATE: &str = "no-cache";

/// The file at `name` (the part of the URL after the admin path's `/`).
pub fn get(name: &str) -> Option<Asset> {
    let (body, content_type, cache): (&'static [u8], _, _) = match name {
        "" | "index.html" => (
            include_bytes!("assets/index.html"),
            "text/html; charset=utf-8",
            NO_STORE,
        ),
        "admin.css" => (
            include_bytes!("assets/admin.css"),
            "text/css; charset=utf-8",
            REVALIDATE,
        ),
        "wamp.js" => (
            include_bytes!("assets/wamp.js"),
            "text/javascript; charset=utf-8",
            REVALIDATE,
        ),
        "chart.js" => (
            include_bytes!("assets/chart.js"),
            "text/javascript; charset=utf-8",
            REVALIDATE,
        ),
        "app.js" => (
            include_bytes!("assets/app.js"),
            "text/javascript; charset=utf-8",
            REVALIDATE,
        ),
        "favicon.svg" => (
            include_bytes!("assets/favicon.svg"),
            "image/svg+xml",
            REVALIDATE,
        ),
        _ => return None,
    };
    Some(Asset {
        body,
        content_type,
        cache,
    })
}
