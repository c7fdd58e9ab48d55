//! The log pipeline, safe against what clients send:
//!
//! - **Escaping at the root.** Every line goes through [`SafeStderr`], which
//!   escapes every control character (and U+2028/U+2029, bidirectional
//!   overrides and zero-width characters: `logsafe::needs_escape`) except
//!   the line's final newline: `\n`, `\r`, `\t`, `\u{..}` in text, `\uXXXX` in JSON
//!   (so a JSON line stays valid JSON). A client value with a newline cannot
//!   forge a log line, whatever the call site does. Colours are off: the
//!   escape character would be escaped too (and a client's own terminal
//!   escape sequences are neutralised).
//! - **Line cap.** A line longer than `max_line_bytes` is cut, with its
//!   length noted (in JSON: replaced by a valid object with its head).
//! - **Rate limit.** [`RateLimit`] lets at most `max_lines_per_callsite`
//!   INFO/WARN/ERROR lines per call site through per `rate_interval`; the
//!   rest are counted and reported as one "suppressed K similar messages"
//!   line per call site and interval. DEBUG and TRACE, which an operator
//!   turns on to diagnose, are not limited.
//!
//! Call sites still clip client values with
//! [`switchyard_router::logsafe::Clip`], which keeps lines short and
//! readable; this module is the backstop.

use std::collections::HashMap;
use std::io::Write;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use parking_lot::Mutex;
use switchyard_router::logsafe::{needs_escape, write_escaped};
use tracing::callsite::Identifier;
use tracing::{Event, Level, Metadata, Subscriber};
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::{Context, Layer, SubscriberExt};
use tracing_subscriber::util::SubscriberInitExt;

use crate::config::{LogConfig, LogFormat};

/// Installs the global subscriber: `level` filter, the format, escaping,
/// the line cap and the per-call-site rate limit of `config`.
///
/// A filter that is a bare level ("info", "debug", ...) and no `RUST_LOG`
/// is installed as a plain maximum level rather than an `EnvFilter`: every
/// connection's tasks run inside its span (`peer.rs`), and an `EnvFilter`
/// takes a process-wide read lock each time a span is entered or left,
/// which is each time a connection's task is polled. Per-module filters
/// still get the `EnvFilter`, and that cost.
pub fn init(format: LogFormat, level: &str, config: &LogConfig) {
    let plain = match std::env::var_os("RUST_LOG") {
        None => level
            .trim()
            .parse::<tracing_subscriber::filter::LevelFilter>()
            .ok(),
        Some(_) => None,
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .or_else(|_| tracing_subscriber::EnvFilter::try_new(level))
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let json = format == LogFormat::Json;
    let writer = SafeStderr {
        json,
        max_line_bytes: config.max_line_bytes,
    };
    let rate = RateLimit::start(
        config.max_lines_per_callsite,
        config.rate_interval,
        writer.clone(),
    );
    let builder = tracing_subscriber::fmt()
        .with_writer(writer)
        .with_ansi(false);
    macro_rules! install {
        ($b:expr) => {
            if json {
                $b.json().finish().with(rate).init()
            } else {
                $b.finish().with(rate).init()
            }
        };
    }
    match plain {
        Some(level) => install!(builder.with_max_level(level)),
        None => install!(builder.with_env_filter(filter)),
    }
}

/// Writes each log line to stderr, escaped and capped.
#[derive(Clone)]
pub struct SafeStderr {
    json: bool,
    max_line_bytes: usize,
}

impl<'a> MakeWriter<'a> for SafeStderr {
    type Writer = LineWriter;

    fn make_writer(&'a self) -> LineWriter {
        LineWriter {
            buf: Vec::new(),
            to: self.clone(),
        }
    }
}

impl SafeStderr {
    fn emit(&self, line: &[u8]) {
        let out = sanitize(line, self.json, self.max_line_bytes);
        // Nowhere to report a failed write to stderr.
        let _ = std::io::stderr().lock().write_all(out.as_bytes());
    }
}

/// Collects one formatted event (tracing-subscriber writes an event with
/// one `write_all`) and writes it, sanitized, when dropped.
pub struct LineWriter {
    buf: Vec<u8>,
    to: SafeStderr,
}

impl Write for LineWriter {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.buf.extend_from_slice(b);
        Ok(b.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for LineWriter {
    fn drop(&mut self) {
        if !self.buf.is_empty() {
            self.to.emit(&self.buf);
        }
    }
}

/// One log line: control characters escaped (but a final newline), cut to
/// `max` bytes (0: no cap), ending with one newline.
pub fn sanitize(line: &[u8], json: bool, max: usize) -> String {
    let text = String::from_utf8_lossy(line);
    let body = text.strip_suffix('\n').unwrap_or(&text);
    let mut out = String::with_capacity(body.len() + 1);
    for c in body.chars() {
        if json && needs_escape(c) {
            // All escaped characters are in the BMP: one \uXXXX each.
            out.push_str(&format!("\\u{:04x}", c as u32));
        } else {
            // Infallible: writing to a String.
            let _ = write_escaped(&mut out, c);
        }
    }
    if max > 0 && out.len() > max {
        let total = out.len();
        let mut cut = max.min(total);
        while !out.is_char_boundary(cut) {
            cut -= 1;
        }
        if json {
            let head: String = out[..cut].to_string();
            out = serde_json::json!({
                "timestamp": timestamp(),
                "level": "WARN",
                "fields": {
                    "message": format!("log line truncated: {total} bytes (max_line_bytes = {max})"),
                    "head": head,
                },
                "target": "switchyard::log",
            })
            .to_string();
        } else {
            out.truncate(cut);
            out.push_str(&format!(
                "...(log line truncated: {total} bytes, max_line_bytes = {max})"
            ));
        }
    }
    out.push('\n');
    out
}

fn timestamp() -> String {
    humantime::format_rfc3339_micros(SystemTime::now()).to_string()
}

/// Per-call-site rate limit of INFO, WARN and ERROR lines.
pub struct RateLimit {
    state: Arc<RateState>,
}

struct RateState {
    max: u32,
    interval: Duration,
    sites: Mutex<HashMap<Identifier, Site>>,
}

struct Site {
    meta: &'static Metadata<'static>,
    window: Instant,
    count: u32,
    suppressed: u64,
}

impl RateLimit {
    /// The layer, and a thread that reports suppressed lines once per
    /// `interval` through `writer`. `max` 0: no limit.
    pub fn start(max: u32, interval: Duration, writer: SafeStderr) -> RateLimit {
        let state = Arc::new(RateState {
            max,
            interval: interval.max(Duration::from_millis(10)),
            sites: Mutex::new(HashMap::new()),
        });
        if max > 0 {
            let s = state.clone();
            let spawned = std::thread::Builder::new()
                .name("log-suppressed".into())
                .spawn(move || loop {
                    std::thread::sleep(s.interval);
                    for line in s.summaries(writer.json) {
                        writer.emit(line.as_bytes());
                    }
                });
            if let Err(e) = spawned {
                eprintln!("cannot start the log rate limiter's reporter: {e}");
            }
        }
        RateLimit { state }
    }
}

impl RateState {
    /// Whether an event of `meta` may be written now.
    fn admit(&self, meta: &'static Metadata<'static>) -> bool {
        // Supervised processes' output: one call site for every line of
        // every process, which the operator configured (not client input).
        if self.max == 0
            || *meta.level() > Level::INFO
            || meta.target() == crate::process::OUTPUT_TARGET
        {
            return true;
        }
        let now = Instant::now();
        let mut sites = self.sites.lock();
        let site = sites.entry(meta.callsite()).or_insert(Site {
            meta,
            window: now,
            count: 0,
            suppressed: 0,
        });
        if now.duration_since(site.window) >= self.interval {
            site.window = now;
            site.count = 0;
        }
        if site.count < self.max {
            site.count += 1;
            true
        } else {
            site.suppressed += 1;
            false
        }
    }

    /// One line per call site that suppressed lines since the last call.
    fn summaries(&self, json: bool) -> Vec<String> {
        let mut sites = self.sites.lock();
        let mut out = Vec::new();
        for site in sites.values_mut().filter(|s| s.suppressed > 0) {
            let k = std::mem::take(&mut site.suppressed);
            let m = site.meta;
            let from = format!(
                "{} ({}:{})",
                m.target(),
                m.file().unwrap_or("?"),
                m.line().unwrap_or(0)
            );
            let message = format!(
                "suppressed {k} similar {} messages from {from} in the last {} s \
                 (at most {} per call site per interval: [log] max_lines_per_callsite)",
                m.level(),
                self.interval.as_secs_f64(),
                self.max
            );
            out.push(if json {
                serde_json::json!({
                    "timestamp": timestamp(),
                    "level": "WARN",
                    "fields": {"message": message, "suppressed": k, "callsite": from},
                    "target": "switchyard::log",
                })
                .to_string()
            } else {
                format!("{}  WARN switchyard::log: {message}", timestamp())
            });
        }
        out
    }
}

impl<S: Subscriber> Layer<S> for RateLimit {
    fn event_enabled(&self, event: &Event<'_>, _ctx: Context<'_, S>) -> bool {
        self.state.admit(event.metadata())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_are_escaped_but_the_final_newline() {
        assert_eq!(
            sanitize(b"a\nb\rc\x1b[31m\n", false, 0),
            "a\\nb\\rc\\u{1b}[31m\n"
        );
        assert_eq!(
            sanitize("{\"m\":\"x\u{85}\u{2028}\"}\n".as_bytes(), true, 0),
            "{\"m\":\"x\\u0085\\u2028\"}\n"
        );
        // Bidi overrides and zero-width characters: escaped, still JSON.
        let line = sanitize("{\"m\":\"a\u{202e}b\u{200b}\"}\n".as_bytes(), true, 0);
        assert_eq!(line, "{\"m\":\"a\\u202eb\\u200b\"}\n");
        let v: serde_json::Value = serde_json::from_str(&line).expect("still JSON");
        assert_eq!(v["m"], "a\u{202e}b\u{200b}");
        let v: serde_json::Value =
            serde_json::from_str(&sanitize("{\"m\":\"\u{7f}\"}\n".as_bytes(), true, 0))
                .expect("still JSON");
        assert_eq!(v["m"], "\u{7f}");
    }

    #[test]
    fn long_lines_are_cut() {
        let line = format!("{}\n", "x".repeat(100));
        let out = sanitize(line.as_bytes(), false, 10);
        assert_eq!(
            out,
            "xxxxxxxxxx...(log line truncated: 100 bytes, max_line_bytes = 10)\n"
        );
        let json = format!("{{\"m\":\"{}\"}}\n", "é".repeat(100));
        let out = sanitize(json.as_bytes(), true, 11);
        let v: serde_json::Value = serde_json::from_str(&out).expect("valid JSON");
        assert_eq!(v["fields"]["head"], "{\"m\":\"éé");
    }
}
