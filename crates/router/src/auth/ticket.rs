//! Ticket authentication (spec "Ticket-based Authentication") against
//! Argon2id hashes.

use std::sync::OnceLock;
use std::time::Duration;

use argon2::password_hash::{Output, PasswordHasher, SaltString};
use argon2::{Algorithm, Argon2, Block, Params, PasswordHash, Version};
use parking_lot::Mutex;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Hashes `secret` as an Argon2id PHC string (`switchyard hash-secret`).
pub fn hash_secret(secret: &str) -> Result<String, String> {
    let salt = SaltString::encode_b64(&rand::random::<[u8; 16]>()).map_err(|e| e.to_string())?;
    Argon2::default()
        .hash_password(secret.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| e.to_string())
}

/// A hash nobody's ticket matches, checked for unknown authids so that a
/// wrong authid costs the same time as a wrong ticket.
fn decoy() -> &'static str {
    static DECOY: OnceLock<String> = OnceLock::new();
    DECOY.get_or_init(|| {
        let random = hex::encode(rand::random::<[u8; 16]>());
        hash_secret(&random).unwrap_or_default()
    })
}

/// Whether `ticket` matches `hash` (None: unknown authid). Slow on purpose
/// (Argon2): run it off the async workers, holding a [`CheckPermit`].
/// `blocks` is the Argon2 working memory, reused from check to check (it
/// grows to what the hash's `m` asks for).
pub fn verify_with(ticket: &str, hash: Option<&str>, blocks: &mut Vec<Block>) -> bool {
    let known = hash.is_some();
    let ok = check(ticket.as_bytes(), hash.unwrap_or_else(|| decoy()), blocks).unwrap_or(false);
    ok && known
}

/// Whether `ticket` matches `hash` (None: unknown authid), with working
/// memory of its own (tests, tools).
pub fn verify(ticket: &str, hash: Option<&str>) -> bool {
    verify_with(ticket, hash, &mut Vec::new())
}

/// Argon2 verification of a PHC string into caller-provided memory.
fn check(password: &[u8], hash: &str, blocks: &mut Vec<Block>) -> Option<bool> {
    let parsed = PasswordHash::new(hash).ok()?;
    let expected = parsed.hash?;
    let params = Params::try_from(&parsed).ok()?;
    let algorithm = Algorithm::try_from(parsed.algorithm).ok()?;
    let version = match parsed.version {
        Some(v) => Version::try_from(v).ok()?,
        None => Version::default(),
    };
    let mut salt = [0u8; 64];
    let salt = parsed.salt?.decode_b64(&mut salt).ok()?;
    let n = params.block_count();
    if blocks.len() < n {
        blocks.resize(n, Block::default());
    }
    let mut out = [0u8; Output::MAX_LENGTH];
    let out = out.get_mut(..expected.len())?;
    Argon2::new(algorithm, version, params)
        .hash_password_into_with_memory(password, salt, out, &mut blocks[..n])
        .ok()?;
    // Output's equality is constant-time.
    Some(Output::new(out).ok()? == expected)
}

/// Concurrent ticket checks, process-wide: each Argon2 check needs its
/// `m` of memory (19 MiB with the defaults of `hash-secret`), so they are
/// bounded, and their working memory is kept in a pool of at most that many
/// buffers (freed memory of that size would stay with the allocator).
pub struct TicketChecks {
    permits: std::sync::Arc<Semaphore>,
    max: usize,
    wait: Duration,
    pool: Mutex<Vec<Vec<Block>>>,
}

/// The right to run one check, and its working memory.
pub struct CheckPermit {
    _permit: OwnedSemaphorePermit,
    blocks: Vec<Block>,
}

impl CheckPermit {
    pub fn blocks(&mut self) -> &mut Vec<Block> {
        &mut self.blocks
    }
}

impl Drop for CheckPermit {
    fn drop(&mut self) {
        if let Some(c) = CHECKS.get() {
            c.pool.lock().push(std::mem::take(&mut self.blocks));
        }
    }
}

static CHECKS: OnceLock<TicketChecks> = OnceLock::new();

/// Default of `max_concurrent_ticket_checks`: one per CPU, at most 4
/// (the pool keeps that many working buffers once used).
pub fn default_max_checks() -> usize {
    std::thread::available_parallelism().map_or(2, |n| n.get().min(4))
}

impl TicketChecks {
    /// Sets the bounds (`[limits] max_concurrent_ticket_checks`, 0: one per
    /// CPU up to 4, and `ticket_check_wait`); the first call wins. Without a call,
    /// the defaults apply.
    pub fn configure(max: usize, wait: Duration) {
        let max = if max == 0 { default_max_checks() } else { max };
        let _ = CHECKS.set(TicketChecks {
            permits: std::sync::Arc::new(Semaphore::new(max)),
            max,
            wait,
            pool: Mutex::new(Vec::new()),
        });
    }

    pub fn get() -> &'static TicketChecks {
        CHECKS.get_or_init(|| {
            let max = default_max_checks();
            TicketChecks {
                permits: std::sync::Arc::new(Semaphore::new(max)),
                max,
                wait: Duration::from_secs(5),
                pool: Mutex::new(Vec::new()),
            }
        })
    }

    /// Most checks at once.
    pub fn max(&self) -> usize {
        self.max
    }

    /// How long a login waits for a check slot.
    pub fn wait(&self) -> Duration {
        self.wait
    }

    /// A check slot, waiting at most [`TicketChecks::wait`]; None if every
    /// slot stayed busy that long.
    pub async fn acquire(&self) -> Option<CheckPermit> {
        let permit = tokio::time::timeout(self.wait, self.permits.clone().acquire_owned())
            .await
            .ok()?
            .ok()?;
        let blocks = self.pool.lock().pop().unwrap_or_default();
        Some(CheckPermit {
            _permit: permit,
            blocks,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_verify_and_unknown_authids_never_do() {
        let h = hash_secret("s3cret").expect("hash");
        assert!(h.starts_with("$argon2id$"));
        assert!(verify("s3cret", Some(&h)));
        assert!(!verify("s3cret!", Some(&h)));
        assert!(!verify("s3cret", None));
        assert!(!verify("s3cret", Some("not a hash")));
    }
}
