//! Human-friendly durations and timestamps.
//!
//! * A duration is a string such as `"250ms"`, `"1s"`, `"5m"`, `"1h"`, `"1h 30m"`, `"2days"`
//!   (the `humantime` syntax) or a non-negative number of milliseconds. It serialises as a string
//!   in the same syntax, so configs round-trip.
//! * A timestamp (`run_at`) is an RFC 3339 string (`"2026-11-22T10:00:00Z"`,
//!   `"2026-11-22T11:00:00.250+01:00"`) or a number of unix milliseconds (also as a string of
//!   digits).

use std::fmt;
use std::time::Duration;

use serde::de::{self, Visitor};
use serde::{Deserializer, Serializer};

use crate::clock::duration_ms;

/// Parses a human duration (`"250ms"`, `"1s"`, `"5m"`, `"1h"`) or a plain number of milliseconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let t = s.trim();
    if t.is_empty() {
        return Err("empty duration".into());
    }
    if t.starts_with('-') {
        return Err(format!("negative duration `{s}`"));
    }
    if t.bytes().all(|b| b.is_ascii_digit()) {
        return t
            .parse::<u64>()
            .map(Duration::from_millis)
            .map_err(|_| format!("duration `{s}` is too large"));
    }
    humantime::parse_duration(t).map_err(|e| {
        format!(
            "invalid duration `{s}` ({e}); expected e.g. \"250ms\", \"1s\", \"5m\", \"1h\" or a number of milliseconds"
        )
    })
}

/// Formats a duration in the syntax [`parse_duration`] reads (`"1s"`, `"5m"`, `"1h 30m"`).
pub fn format_duration(d: Duration) -> String {
    if d.is_zero() {
        return "0ms".into();
    }
    // Whole days read better than humantime's months ("365days", not "11months 30days ...").
    const DAY: u64 = 24 * 3600;
    if d.subsec_nanos() == 0 && d.as_secs().is_multiple_of(DAY) {
        return format!("{}days", d.as_secs() / DAY);
    }
    // Whole milliseconds: everything the queue does is at millisecond resolution.
    humantime::format_duration(Duration::from_millis(duration_ms(d))).to_string()
}

/// Parses a `run_at` timestamp: RFC 3339 with `Z` or a numeric offset, or unix milliseconds
/// (a string of digits). Returns unix milliseconds.
pub fn parse_timestamp_ms(s: &str) -> Result<u64, String> {
    let t = s.trim();
    if !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit()) {
        return t
            .parse::<u64>()
            .map_err(|_| format!("timestamp `{s}` is too large"));
    }
    let bad = || {
        format!("invalid timestamp `{s}`: expected RFC 3339 (e.g. \"2026-11-22T10:00:00Z\") or unix milliseconds")
    };
    let at = time::OffsetDateTime::parse(t, &time::format_description::well_known::Rfc3339)
        .map_err(|e| format!("{} ({e})", bad()))?;
    let ms = at.unix_timestamp_nanos() / 1_000_000;
    u64::try_from(ms).map_err(|_| format!("timestamp `{s}` is before 1970"))
}

struct DurationVisitor;

impl Visitor<'_> for DurationVisitor {
    type Value = Duration;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(
            "a duration such as \"250ms\", \"1s\", \"5m\", \"1h\" or a number of milliseconds",
        )
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Duration, E> {
        parse_duration(v).map_err(E::custom)
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Duration, E> {
        Ok(Duration::from_millis(v))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Duration, E> {
        u64::try_from(v)
            .map(Duration::from_millis)
            .map_err(|_| E::custom(format!("negative duration {v}")))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Duration, E> {
        if !v.is_finite() || v < 0.0 {
            return Err(E::custom(format!("invalid duration {v}")));
        }
        Duration::try_from_secs_f64(v / 1000.0)
            .map_err(|e| E::custom(format!("invalid duration {v}: {e}")))
    }
}

/// Serde adapter for `Duration` fields: `#[serde(with = "crate::human::duration")]`.
pub mod duration {
    use super::*;

    /// Serialises as a human string (`"1s"`, `"5m"`).
    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format_duration(*d))
    }

    /// Reads a human string or a number of milliseconds.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        d.deserialize_any(DurationVisitor)
    }
}

/// Serde adapter for `Option<Duration>` fields.
pub mod opt_duration {
    use super::*;

    /// Serialises `Some` as a human string, `None` as none.
    pub fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => s.serialize_some(&format_duration(*d)),
            None => s.serialize_none(),
        }
    }

    /// Reads an optional human string or number of milliseconds.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        struct OptVisitor;
        impl<'de> Visitor<'de> for OptVisitor {
            type Value = Option<Duration>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                DurationVisitor.expecting(f)
            }
            fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
                Ok(None)
            }
            fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
                Ok(None)
            }
            fn visit_some<D2: Deserializer<'de>>(self, d: D2) -> Result<Self::Value, D2::Error> {
                d.deserialize_any(DurationVisitor).map(Some)
            }
        }
        d.deserialize_option(OptVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("1s"), Ok(Duration::from_secs(1)));
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse_duration("1500"), Ok(Duration::from_millis(1500)));
        assert!(parse_duration("-1s").is_err());
        assert!(parse_duration("soon").is_err());
        assert_eq!(format_duration(Duration::from_millis(250)), "250ms");
        assert_eq!(format_duration(Duration::from_secs(300)), "5m");
        for s in ["250ms", "1s", "5m", "1h", "1h 30m", "1s 500ms"] {
            let d = parse_duration(s).unwrap();
            assert_eq!(parse_duration(&format_duration(d)), Ok(d), "{s}");
        }
    }

    #[test]
    fn timestamps() {
        assert_eq!(parse_timestamp_ms("1700000000000"), Ok(1_700_000_000_000));
        assert_eq!(parse_timestamp_ms("1970-01-01T00:00:01Z"), Ok(1000));
        assert_eq!(parse_timestamp_ms("1970-01-01T00:00:01.250Z"), Ok(1250));
        assert_eq!(parse_timestamp_ms("1970-01-01T01:00:01+01:00"), Ok(1000));
        assert_eq!(
            parse_timestamp_ms("1970-01-01T00:00:01-00:30"),
            Ok(1000 + 1_800_000)
        );
        assert_eq!(
            parse_timestamp_ms("2026-11-22T10:00:00Z"),
            parse_timestamp_ms("2026-11-22T11:00:00+01:00")
        );
        assert!(parse_timestamp_ms("tomorrow").is_err());
        assert!(parse_timestamp_ms("2026-11-22T10:00:00+1:00").is_err());
        assert!(parse_timestamp_ms("2026-13-22T10:00:00Z").is_err());
        assert!(parse_timestamp_ms("").is_err());
    }
}
