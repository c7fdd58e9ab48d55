//! Binary encoding of a job record (immutable job + status) and of a payload row for the
//! embedded store.
//!
//! Job record, format version 2, little-endian, every variable field length-prefixed:
//!
//! ```text
//! u8 version (2)
//! u64 id · str queue · u32 payload size
//! u8 target kind: 0 = procedure (str) | 1 = http (str url, str method, u16 n, n × u16 status)
//! u8 priority · u64 created_at_ms · u64 run_at_ms · u32 attempts · u64 epoch
//! opt u32 max_attempts · opt str retry policy (JSON) · opt str idempotency key
//! opt str result topic · opt (str uri, str message, u64 at_ms) last error
//! u8 state: 0 = waiting (ready/scheduled by run_at) | 1 = dead (u8 reason, u64 at_ms)
//! ```
//!
//! `str`/`bytes` are a u32 length and the bytes; `opt` is a u8 0/1 and the value. Leases are not
//! in the record: they are small separate rows, so the hot path never rewrites payloads.
//!
//! The payload is a row of its own (`u8 encoding · the bytes`), read only when the job is
//! dispatched or shown. Version 1 records (stores written before) carried it inline, as
//! `u8 encoding · bytes payload` after the queue name; they are still read (the store moves
//! their payloads out when it opens).

use std::sync::Arc;

use bytes::Bytes;

use crate::error::StoreError;
use crate::model::{
    DeadReason, Encoding, ErrorInfo, Job, JobId, JobState, JobStatus, Payload, Priority, Target,
};
use crate::policy::RetryPolicy;

const VERSION: u8 = 2;
/// Records with the payload inline.
const VERSION_INLINE: u8 = 1;

/// The format version of a record (its first byte).
pub(crate) fn version(data: &[u8]) -> Option<u8> {
    data.first().copied()
}

/// Encodes a payload row.
pub(crate) fn encode_payload(p: &Payload, out: &mut Vec<u8>) {
    out.clear();
    out.reserve(1 + p.len());
    out.push(p.encoding.tag());
    out.extend_from_slice(&p.bytes);
}

/// Decodes a payload row.
pub(crate) fn decode_payload(data: &[u8]) -> Result<Payload, StoreError> {
    let (&tag, bytes) = data
        .split_first()
        .ok_or_else(|| StoreError::corrupt("empty payload row"))?;
    let encoding = Encoding::from_tag(tag)
        .ok_or_else(|| StoreError::corrupt(format!("unknown payload encoding {tag}")))?;
    Ok(Payload {
        encoding,
        bytes: Bytes::copy_from_slice(bytes),
    })
}

/// A decoded job record.
pub(crate) struct Decoded {
    pub(crate) job: Job,
    pub(crate) status: JobStatus,
    /// The payload of a version 1 record (inline); `None` for version 2 (a row of its own).
    pub(crate) inline: Option<Payload>,
}

/// Encodes a job record. `Leased` states are written as waiting (the lease lives elsewhere).
pub(crate) fn encode_job(job: &Job, status: &JobStatus, out: &mut Vec<u8>) {
    out.clear();
    out.reserve(96 + job.queue.len());
    out.push(VERSION);
    put_u64(out, job.id.0);
    put_str(out, &job.queue);
    out.extend_from_slice(&job.payload_bytes.to_le_bytes());
    match &job.target {
        Target::Procedure(p) => {
            out.push(0);
            put_str(out, p);
        }
        Target::Http {
            url,
            method,
            accepted_statuses,
        } => {
            out.push(1);
            put_str(out, url);
            put_str(out, method);
            let n = u16::try_from(accepted_statuses.len()).unwrap_or(u16::MAX);
            out.extend_from_slice(&n.to_le_bytes());
            for s in accepted_statuses.iter().take(usize::from(n)) {
                out.extend_from_slice(&s.to_le_bytes());
            }
        }
    }
    out.push(job.priority.get());
    put_u64(out, job.created_at_ms);
    put_u64(out, status.run_at_ms);
    out.extend_from_slice(&status.attempts.to_le_bytes());
    put_u64(out, status.epoch);
    match job.max_attempts {
        Some(n) => {
            out.push(1);
            out.extend_from_slice(&n.to_le_bytes());
        }
        None => out.push(0),
    }
    let policy = job
        .retry
        .as_ref()
        .and_then(|p| serde_json::to_string(p).ok());
    put_opt_str(out, policy.as_deref());
    put_opt_str(out, job.idempotency_key.as_deref());
    put_opt_str(out, job.result_topic.as_deref());
    match &status.last_error {
        Some(e) => {
            out.push(1);
            put_str(out, &e.uri);
            put_str(out, &e.message);
            put_u64(out, e.at_ms);
        }
        None => out.push(0),
    }
    match status.state {
        JobState::Dead { reason, at_ms } => {
            out.push(1);
            out.push(reason.tag());
            put_u64(out, at_ms);
        }
        _ => out.push(0),
    }
}

/// Decodes a job record written by [`encode_job`] (or a version 1 record, with its payload).
/// `now_ms` decides Ready vs Scheduled.
pub(crate) fn decode_job(data: &[u8], now_ms: u64) -> Result<Decoded, StoreError> {
    let mut r = Reader { data, pos: 0 };
    let version = r.u8("version")?;
    if version != VERSION && version != VERSION_INLINE {
        return Err(StoreError::corrupt(format!(
            "job record has unknown format version {version}"
        )));
    }
    let id = JobId(r.u64("id")?);
    let ctx = |e: StoreError| match e {
        StoreError::Corrupt(m) => StoreError::corrupt(format!("job {id}: {m}")),
        other => other,
    };
    let rest = (|| {
        let queue: Arc<str> = r.string("queue")?.into();
        let (payload_bytes, inline) = if version == VERSION_INLINE {
            let enc_tag = r.u8("encoding")?;
            let encoding = Encoding::from_tag(enc_tag).ok_or_else(|| {
                StoreError::corrupt(format!("unknown payload encoding {enc_tag}"))
            })?;
            let bytes = r.bytes("payload")?;
            let size = u32::try_from(bytes.len())
                .map_err(|_| StoreError::corrupt("payload larger than 4 GiB"))?;
            (
                size,
                Some(Payload {
                    encoding,
                    bytes: Bytes::copy_from_slice(bytes),
                }),
            )
        } else {
            (r.u32("payload size")?, None)
        };
        let target = match r.u8("target kind")? {
            0 => Target::Procedure(r.string("target procedure")?),
            1 => {
                let url = r.string("target url")?;
                let method = r.string("target method")?;
                let n = r.u16("accepted status count")?;
                let mut accepted_statuses = Vec::with_capacity(usize::from(n));
                for _ in 0..n {
                    accepted_statuses.push(r.u16("accepted status")?);
                }
                Target::Http {
                    url,
                    method,
                    accepted_statuses,
                }
            }
            k => return Err(StoreError::corrupt(format!("unknown target kind {k}"))),
        };
        let prio = r.u8("priority")?;
        let priority =
            Priority::new(prio).map_err(|_| StoreError::corrupt(format!("priority {prio}")))?;
        let created_at_ms = r.u64("created_at")?;
        let run_at_ms = r.u64("run_at")?;
        let attempts = r.u32("attempts")?;
        let epoch = r.u64("epoch")?;
        let max_attempts = match r.u8("max_attempts flag")? {
            0 => None,
            _ => Some(r.u32("max_attempts")?),
        };
        let retry = match r.opt_string("retry policy")? {
            None => None,
            Some(json) => Some(
                serde_json::from_str::<RetryPolicy>(&json)
                    .map_err(|e| StoreError::corrupt(format!("retry policy: {e}")))?,
            ),
        };
        let idempotency_key = r.opt_string("idempotency key")?;
        let result_topic = r.opt_string("result topic")?;
        let last_error = match r.u8("last error flag")? {
            0 => None,
            _ => Some(ErrorInfo {
                uri: r.string("error uri")?,
                message: r.string("error message")?,
                at_ms: r.u64("error time")?,
            }),
        };
        let state = match r.u8("state")? {
            0 if run_at_ms <= now_ms => JobState::Ready,
            0 => JobState::Scheduled,
            1 => {
                let tag = r.u8("dead reason")?;
                let reason = DeadReason::from_tag(tag)
                    .ok_or_else(|| StoreError::corrupt(format!("unknown dead reason {tag}")))?;
                JobState::Dead {
                    reason,
                    at_ms: r.u64("dead time")?,
                }
            }
            s => return Err(StoreError::corrupt(format!("unknown state {s}"))),
        };
        if r.pos != r.data.len() {
            return Err(StoreError::corrupt("trailing bytes"));
        }
        Ok(Decoded {
            job: Job {
                id,
                queue,
                payload_bytes,
                target,
                priority,
                created_at_ms,
                max_attempts,
                retry,
                idempotency_key,
                result_topic,
            },
            status: JobStatus {
                state,
                run_at_ms,
                attempts,
                epoch,
                last_error,
            },
            inline,
        })
    })();
    rest.map_err(ctx)
}

/// Decodes a stored job record (either format version) and encodes it again
/// as the store writes records now (a version 1 record loses its inline
/// payload, which lives in a row of its own). A corrupt record is an error,
/// never a panic. For tools that check records read from a store file, and
/// the fuzz target `queue_record` (fuzz/).
pub fn reencode_job_record(data: &[u8], now_ms: u64) -> Result<Vec<u8>, StoreError> {
    let d = decode_job(data, now_ms)?;
    let mut out = Vec::new();
    encode_job(&d.job, &d.status, &mut out);
    Ok(out)
}

/// Decodes a stored payload row and encodes it again ([`reencode_job_record`]'s
/// counterpart for payload rows).
pub fn reencode_payload_row(data: &[u8]) -> Result<Vec<u8>, StoreError> {
    let p = decode_payload(data)?;
    let mut out = Vec::new();
    encode_payload(&p, &mut out);
    Ok(out)
}

pub(crate) fn put_u64(out: &mut Vec<u8>, v: u64) {
    out.extend_from_slice(&v.to_le_bytes());
}

pub(crate) fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    // Lengths are bounded far below 4 GiB by validation (payload limit 64 MiB, names 2 KiB).
    let n = u32::try_from(b.len()).unwrap_or(u32::MAX);
    out.extend_from_slice(&n.to_le_bytes());
    out.extend_from_slice(&b[..n as usize]);
}

pub(crate) fn put_str(out: &mut Vec<u8>, s: &str) {
    put_bytes(out, s.as_bytes());
}

fn put_opt_str(out: &mut Vec<u8>, s: Option<&str>) {
    match s {
        Some(s) => {
            out.push(1);
            put_str(out, s);
        }
        None => out.push(0),
    }
}

pub(crate) struct Reader<'a> {
    pub(crate) data: &'a [u8],
    pub(crate) pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8], StoreError> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&e| e <= self.data.len())
            .ok_or_else(|| StoreError::corrupt(format!("record truncated at {what}")))?;
        let s = &self.data[self.pos..end];
        self.pos = end;
        Ok(s)
    }
    fn array<const N: usize>(&mut self, what: &str) -> Result<[u8; N], StoreError> {
        let s = self.take(N, what)?;
        let mut a = [0u8; N];
        a.copy_from_slice(s);
        Ok(a)
    }
    pub(crate) fn u8(&mut self, what: &str) -> Result<u8, StoreError> {
        Ok(self.array::<1>(what)?[0])
    }
    fn u16(&mut self, what: &str) -> Result<u16, StoreError> {
        Ok(u16::from_le_bytes(self.array(what)?))
    }
    pub(crate) fn u32(&mut self, what: &str) -> Result<u32, StoreError> {
        Ok(u32::from_le_bytes(self.array(what)?))
    }
    pub(crate) fn u64(&mut self, what: &str) -> Result<u64, StoreError> {
        Ok(u64::from_le_bytes(self.array(what)?))
    }
    pub(crate) fn bytes(&mut self, what: &str) -> Result<&'a [u8], StoreError> {
        let n = self.u32(what)? as usize;
        self.take(n, what)
    }
    pub(crate) fn string(&mut self, what: &str) -> Result<String, StoreError> {
        let b = self.bytes(what)?;
        String::from_utf8(b.to_vec())
            .map_err(|_| StoreError::corrupt(format!("{what} is not UTF-8")))
    }
    fn opt_string(&mut self, what: &str) -> Result<Option<String>, StoreError> {
        match self.u8(what)? {
            0 => Ok(None),
            1 => self.string(what).map(Some),
            f => Err(StoreError::corrupt(format!("{what}: bad option flag {f}"))),
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::time::Duration;

    pub(crate) fn sample() -> (Job, JobStatus) {
        (
            Job {
                id: JobId(42),
                queue: "pdf".into(),
                payload_bytes: 12,
                target: Target::Http {
                    url: "https://example.com/hook".into(),
                    method: "POST".into(),
                    accepted_statuses: vec![200, 409],
                },
                priority: Priority::HIGH,
                created_at_ms: 1000,
                max_attempts: Some(3),
                retry: Some(RetryPolicy::Fixed {
                    times: 2,
                    spacing: Duration::from_secs(5),
                }),
                idempotency_key: Some("k1".into()),
                result_topic: Some("com.example.done".into()),
            },
            JobStatus {
                state: JobState::Dead {
                    reason: DeadReason::AttemptsExhausted,
                    at_ms: 5000,
                },
                run_at_ms: 2000,
                attempts: 3,
                epoch: 7,
                last_error: Some(ErrorInfo {
                    uri: "com.example.error".into(),
                    message: "boom".into(),
                    at_ms: 4999,
                }),
            },
        )
    }

    #[test]
    fn round_trip() {
        let (job, status) = sample();
        let mut buf = Vec::new();
        encode_job(&job, &status, &mut buf);
        let d = decode_job(&buf, 0).unwrap();
        assert_eq!(d.job, job);
        assert_eq!(d.status, status);
        assert!(d.inline.is_none());
        let p = Payload::json(&b"{\"args\":[1]}"[..]);
        encode_payload(&p, &mut buf);
        assert_eq!(decode_payload(&buf).unwrap(), p);
        assert!(decode_payload(&[]).is_err());
        assert!(decode_payload(&[9]).is_err());
    }

    #[test]
    fn version_1_records_carry_their_payload() {
        let (job, status) = sample();
        let mut v2 = Vec::new();
        encode_job(&job, &status, &mut v2);
        // A version 1 record: the encoding and the payload in place of the payload size.
        let at = 1 + 8 + 4 + job.queue.len();
        let mut v1 = vec![1u8];
        v1.extend_from_slice(&v2[1..at]);
        v1.push(0);
        v1.extend_from_slice(&3u32.to_le_bytes());
        v1.extend_from_slice(b"[1]");
        v1.extend_from_slice(&v2[at + 4..]);
        let d = decode_job(&v1, 0).unwrap();
        assert_eq!(d.inline, Some(Payload::json(&b"[1]"[..])));
        assert_eq!(d.job.payload_bytes, 3);
        assert_eq!(d.status, status);
    }

    #[test]
    fn records_reencode_in_the_current_format() {
        let (job, status) = sample();
        let mut v2 = Vec::new();
        encode_job(&job, &status, &mut v2);
        assert_eq!(reencode_job_record(&v2, 0).unwrap(), v2);
        // A version 1 record: its payload moves out, the rest is the same.
        let at = 1 + 8 + 4 + job.queue.len();
        let mut v1 = vec![1u8];
        v1.extend_from_slice(&v2[1..at]);
        v1.push(0);
        v1.extend_from_slice(&12u32.to_le_bytes());
        v1.extend_from_slice(b"{\"args\":[1]}");
        v1.extend_from_slice(&v2[at + 4..]);
        assert_eq!(reencode_job_record(&v1, 0).unwrap(), v2);
        assert!(reencode_job_record(&v2[..v2.len() - 1], 0).is_err());
        assert_eq!(reencode_payload_row(b"\x01\x90").unwrap(), b"\x01\x90");
        assert!(reencode_payload_row(b"\x09").is_err());
    }

    #[test]
    fn corrupt_records_are_errors() {
        let (job, status) = sample();
        let mut buf = Vec::new();
        encode_job(&job, &status, &mut buf);
        for n in 0..buf.len() {
            assert!(decode_job(&buf[..n], 0).is_err(), "truncated at {n}");
        }
        let mut bad = buf.clone();
        bad[0] = 9;
        assert!(decode_job(&bad, 0).is_err());
        let mut long = buf.clone();
        long.push(0);
        assert!(decode_job(&long, 0).is_err());
    }
}
