//! Ticket authentication (spec "Ticket-based Authentication") against
//! Argon2id hashes.

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};
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
/// wrong authid costs the same time as a wrong ticket: made with the
/// Argon2 algorithm, version and parameters (memory, passes, lanes, output
/// length) most of the realm's ticket hashes have, not the router's
/// defaults. The cost of an Argon2 check is set by those parameters, so a
/// realm whose hashes were made by another tool (libsodium, argon2-cffi)
/// with other ones would otherwise fail unknown authids faster or slower
/// than known ones, and the time would tell which authids exist.
pub struct Decoy {
    /// The PHC string of one principal whose parameters are the usual ones.
    model: Option<String>,
    /// Shared by every realm whose usual parameters are the same.
    hash: Arc<OnceLock<String>>,
}

/// Decoy hashes by parameters (`$argon2id$v=19$m=19456,t=2,p=1` and output
/// length): realms that hash alike share one, made once.
fn shared(key: String) -> Arc<OnceLock<String>> {
    static BY_PARAMS: OnceLock<Mutex<HashMap<String, Arc<OnceLock<String>>>>> = OnceLock::new();
    BY_PARAMS
        .get_or_init(Mutex::default)
        .lock()
        .entry(key)
        .or_default()
        .clone()
}

impl Decoy {
    /// The decoy for a realm whose ticket principals have these hashes.
    pub fn new(hashes: &[&str]) -> Self {
        let usual = |h: &PasswordHash<'_>| {
            (
                h.algorithm.as_str().to_string(),
                h.version,
                h.params.to_string(),
                h.hash.map(|o| o.len()),
            )
        };
        let parsed: Vec<(&str, _)> = hashes
            .iter()
            .filter_map(|h| PasswordHash::new(h).ok().map(|p| (*h, usual(&p))))
            .collect();
        let mut best: Option<(&str, usize, String)> = None;
        for (h, key) in &parsed {
            let n = parsed.iter().filter(|(_, k)| k == key).count();
            if best.as_ref().is_none_or(|(_, m, _)| n > *m) {
                best = Some((h, n, format!("{key:?}")));
            }
        }
        let key = best
            .as_ref()
            .map_or_else(|| "default".to_string(), |(_, _, k)| k.clone());
        Decoy {
            model: best.map(|(h, _, _)| h.to_string()),
            hash: shared(key),
        }
    }

    /// Makes the decoy hash now, on a thread of its own, so that the first
    /// unknown authid does not wait for it (which would take twice as long
    /// as a known one, once).
    pub fn warm_up(self: &Arc<Self>) {
        if self.hash.get().is_some() {
            return;
        }
        let me = self.clone();
        let spawned = std::thread::Builder::new()
            .name("ticket-decoy".into())
            .spawn(move || {
                me.hash();
            });
        if let Err(e) = spawned {
            tracing::debug!("ticket decoy made on first use: {e}");
        }
    }

    /// The decoy hash (made on first use: Argon2 is slow on purpose).
    fn hash(&self) -> &str {
        self.hash.get_or_init(|| {
            let random = hex::encode(rand::random::<[u8; 16]>());
            self.model
                .as_deref()
                .and_then(|m| like(m, &random))
                .or_else(|| hash_secret(&random).ok())
                .unwrap_or_default()
        })
    }
}

/// A hash of `secret` with the algorithm, version and parameters of `model`.
fn like(model: &str, secret: &str) -> Option<String> {
    let model = PasswordHash::new(model).ok()?;
    let params = argon2::Params::try_from(&model).ok()?;
    let salt = SaltString::encode_b64(&rand::random::<[u8; 16]>()).ok()?;
    Argon2::default()
        .hash_password_customized(
            secret.as_bytes(),
            Some(model.algorithm),
            model.version,
            params,
            &salt,
        )
        .ok()
        .map(|h| h.to_string())
}

/// Whether `ticket` matches `hash` (None: unknown authid, checked against
/// `decoy`, never a match). Slow on purpose (Argon2): run it off the async
/// workers, holding a [`CheckPermit`]. `blocks` is the Argon2 working
/// memory, reused from check to check (it grows to what the hash's `m`
/// asks for).
pub fn verify_with(
    ticket: &str,
    hash: Option<&str>,
    decoy: &Decoy,
    blocks: &mut Vec<Block>,
) -> bool {
    let known = hash.is_some();
    let ok = check(
        ticket.as_bytes(),
        hash.unwrap_or_else(|| decoy.hash()),
        blocks,
    )
    .unwrap_or(false);
    ok && known
}

/// [`verify_with`] with working memory of its own (tests, tools).
pub fn verify(ticket: &str, hash: Option<&str>, decoy: &Decoy) -> bool {
    verify_with(ticket, hash, decoy, &mut Vec::new())
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
        let d = Decoy::new(&[]);
        assert!(verify("s3cret", Some(&h), &d));
        assert!(!verify("s3cret!", Some(&h), &d));
        assert!(!verify("s3cret", None, &d));
        assert!(!verify("s3cret", Some("not a hash"), &d));
    }

    #[test]
    fn the_decoy_has_the_realms_usual_parameters() {
        let cheap = |s: &str| {
            let params = argon2::Params::new(1024, 1, 1, Some(32)).expect("params");
            let salt = SaltString::encode_b64(b"0123456789abcdef").expect("salt");
            Argon2::new(argon2::Algorithm::Argon2i, argon2::Version::V0x13, params)
                .hash_password(s.as_bytes(), &salt)
                .expect("hash")
                .to_string()
        };
        let (a, b) = (cheap("a"), cheap("b"));
        let default = hash_secret("c").expect("hash");
        let d = Decoy::new(&[&a, &default, &b]);
        let decoy = PasswordHash::new(d.hash()).expect("phc");
        assert_eq!(decoy.algorithm.as_str(), "argon2i");
        assert_eq!(decoy.params.to_string(), "m=1024,t=1,p=1");
        assert!(!verify("a", None, &d));
        // no principals: the router's defaults
        let none = Decoy::new(&[]);
        assert!(PasswordHash::new(none.hash())
            .expect("phc")
            .params
            .to_string()
            .starts_with("m=19456,t=2,p=1"));
    }
}
