//! The per-session message rate limit (`max_messages_per_second`): a token
//! bucket the connection consults after each message of an established
//! session. Over the rate, the connection stops reading for a while
//! ([`super::Flow::Suspend`]) instead of refusing messages: a fast client is
//! slowed down, not cut.

use std::time::{Duration, Instant};

use crate::metrics::Metrics;
use crate::realm::Realm;
use crate::session::Session;

/// A token bucket: `rate` messages per second, bursts of up to `rate`.
pub(super) struct RateLimit {
    rate: f64,
    tokens: f64,
    at: Instant,
}

impl RateLimit {
    /// The realm's limit, or None when it sets none (0).
    pub(super) fn new(rate: u32) -> Option<Self> {
        (rate > 0).then(|| RateLimit {
            rate: f64::from(rate),
            tokens: f64::from(rate),
            at: Instant::now(),
        })
    }

    /// Takes a token; how long to wait before the next message, if any.
    fn take(&mut self) -> Option<Duration> {
        let now = Instant::now();
        let elapsed = now.duration_since(self.at).as_secs_f64();
        self.at = now;
        self.tokens = (self.tokens + elapsed * self.rate).min(self.rate) - 1.0;
        (self.tokens < 0.0).then(|| Duration::from_secs_f64(-self.tokens / self.rate))
    }

    /// Counts a message of `session`; how long to stop reading, if it is
    /// over its rate (counted, and logged once per connection: `logged`).
    pub(super) fn over(
        &mut self,
        logged: &mut bool,
        session: &Session,
        realm: &Realm,
    ) -> Option<Duration> {
        let wait = self.take()?;
        if !*logged {
            *logged = true;
            tracing::info!(
                session = session.id,
                limit = realm.config().max_messages_per_second,
                "session slowed down: over its message rate"
            );
        }
        Metrics::inc(&realm.metrics.rate_limited);
        Some(wait)
    }
}
