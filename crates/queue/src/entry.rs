//! The encoding of store mutations as log records, shared by both logs of the crate: the
//! entries of cluster mode's JetStream log ([`replicated`](crate::replicated), whose format is
//! already in stored logs and so fixes this one) and the frame bodies of the embedded store's
//! write-ahead log (`wal`).
//!
//! A log entry (or frame body) is a sequence of records, each a tag byte and its fields
//! (little-endian; `str` and `bytes` are a u32 length and the bytes):
//!
//! ```text
//! 1 PutQueue          bytes config (JSON)
//! 2 PutCounters       str queue · u64 completed · u64 retried · u64 dead_lettered
//! 3 PutJob            bytes job record (the embedded store's record, format 2)
//! 4 PutPayload        u64 id · bytes payload row
//! 5 PutLease          u64 id · u64 epoch · u64 deadline_ms · u32 attempts
//! 6 RemoveLease       u64 id
//! 7 RemoveJob         u64 id
//! 8 PutIdempotencyKey str queue · str key · u64 job · u64 expires_ms
//! 9 RemoveQueue       str queue
//! 10 RemoveIdempotencyKey str queue · str key
//! 11 MaxJobId         u64 (checkpoints: ids never go down, even when the highest job is gone)
//! 12 PutResult        u64 id · str queue · u64 at_ms · u64 expires_ms · bytes record
//! ```
//!
//! [`Record`] is one record decoded without copying (the job record and payload row stay
//! encoded: the JetStream state keeps them as they are); [`Record::into_mutation`] turns it into
//! the [`Mutation`] the embedded store applies.

use std::sync::Arc;

use crate::codec::{self, put_bytes, put_str, put_u64, Reader};
use crate::config::QueueConfig;
use crate::error::StoreError;
use crate::model::JobId;
use crate::store::{Counters, Mutation};

const PUT_QUEUE: u8 = 1;
const PUT_COUNTERS: u8 = 2;
const PUT_JOB: u8 = 3;
const PUT_PAYLOAD: u8 = 4;
const PUT_LEASE: u8 = 5;
const REMOVE_LEASE: u8 = 6;
const REMOVE_JOB: u8 = 7;
const PUT_KEY: u8 = 8;
const REMOVE_QUEUE: u8 = 9;
const REMOVE_KEY: u8 = 10;
const MAX_JOB_ID: u8 = 11;
const PUT_RESULT: u8 = 12;

/// Appends the record of `m` to `out`; `scratch` is reused for the job record and payload row.
pub(crate) fn encode_mutation(
    m: &Mutation,
    out: &mut Vec<u8>,
    scratch: &mut Vec<u8>,
) -> Result<(), StoreError> {
    match m {
        Mutation::PutQueue(cfg) => {
            let json = serde_json::to_vec(&**cfg).map_err(StoreError::storage)?;
            put_queue(out, &json);
        }
        Mutation::PutCounters { queue, counters } => put_counters(out, queue, counters),
        Mutation::PutJob { job, status } => {
            codec::encode_job(job, status, scratch);
            put_job(out, scratch);
        }
        Mutation::PutPayload { id, payload } => {
            codec::encode_payload(payload, scratch);
            put_payload(out, id.0, scratch);
        }
        Mutation::PutLease {
            id,
            epoch,
            deadline_ms,
            attempts,
        } => put_lease(out, id.0, *epoch, *deadline_ms, *attempts),
        Mutation::RemoveLease(id) => {
            out.push(REMOVE_LEASE);
            put_u64(out, id.0);
        }
        Mutation::RemoveJob(id) => {
            out.push(REMOVE_JOB);
            put_u64(out, id.0);
        }
        Mutation::PutIdempotencyKey {
            queue,
            key,
            job,
            expires_ms,
        } => put_key(out, queue, key, job.0, *expires_ms),
        Mutation::RemoveQueue(name) => {
            out.push(REMOVE_QUEUE);
            put_str(out, name);
        }
        Mutation::RemoveIdempotencyKey { queue, key } => {
            out.push(REMOVE_KEY);
            put_str(out, queue);
            put_str(out, key);
        }
        Mutation::PutResult {
            id,
            queue,
            at_ms,
            expires_ms,
            record,
        } => put_result(out, id.0, queue, *at_ms, *expires_ms, record),
    }
    Ok(())
}

/// Appends a `PutQueue` record of a configuration's JSON.
pub(crate) fn put_queue(out: &mut Vec<u8>, json: &[u8]) {
    out.push(PUT_QUEUE);
    put_bytes(out, json);
}

/// Appends a `PutCounters` record.
pub(crate) fn put_counters(out: &mut Vec<u8>, queue: &str, c: &Counters) {
    out.push(PUT_COUNTERS);
    put_str(out, queue);
    put_u64(out, c.completed);
    put_u64(out, c.retried);
    put_u64(out, c.dead_lettered);
}

/// Appends a `PutJob` record of an encoded job record.
pub(crate) fn put_job(out: &mut Vec<u8>, record: &[u8]) {
    out.push(PUT_JOB);
    put_bytes(out, record);
}

/// Appends a `PutPayload` record of an encoded payload row.
pub(crate) fn put_payload(out: &mut Vec<u8>, id: u64, row: &[u8]) {
    out.push(PUT_PAYLOAD);
    put_u64(out, id);
    put_bytes(out, row);
}

/// Appends a `PutLease` record.
pub(crate) fn put_lease(out: &mut Vec<u8>, id: u64, epoch: u64, deadline_ms: u64, attempts: u32) {
    out.push(PUT_LEASE);
    put_u64(out, id);
    put_u64(out, epoch);
    put_u64(out, deadline_ms);
    out.extend_from_slice(&attempts.to_le_bytes());
}

/// Appends a `PutIdempotencyKey` record.
pub(crate) fn put_key(out: &mut Vec<u8>, queue: &str, key: &str, job: u64, expires_ms: u64) {
    out.push(PUT_KEY);
    put_str(out, queue);
    put_str(out, key);
    put_u64(out, job);
    put_u64(out, expires_ms);
}

/// Appends a `PutResult` record.
pub(crate) fn put_result(
    out: &mut Vec<u8>,
    id: u64,
    queue: &str,
    at_ms: u64,
    expires_ms: u64,
    record: &[u8],
) {
    out.push(PUT_RESULT);
    put_u64(out, id);
    put_str(out, queue);
    put_u64(out, at_ms);
    put_u64(out, expires_ms);
    put_bytes(out, record);
}

/// Appends a `MaxJobId` record (a checkpoint's id reservation).
pub(crate) fn put_max_job_id(out: &mut Vec<u8>, max: u64) {
    out.push(MAX_JOB_ID);
    put_u64(out, max);
}

/// One record, decoded; variable fields borrow from the entry.
#[derive(Debug)]
pub(crate) enum Record<'a> {
    /// The configuration's JSON.
    PutQueue(&'a [u8]),
    PutCounters {
        queue: String,
        counters: Counters,
    },
    /// The encoded job record.
    PutJob(&'a [u8]),
    PutPayload {
        id: u64,
        /// The encoded payload row.
        row: &'a [u8],
    },
    PutLease {
        id: u64,
        epoch: u64,
        deadline_ms: u64,
        attempts: u32,
    },
    RemoveLease(u64),
    RemoveJob(u64),
    PutKey {
        queue: String,
        key: String,
        job: u64,
        expires_ms: u64,
    },
    RemoveQueue(String),
    RemoveKey {
        queue: String,
        key: String,
    },
    MaxJobId(u64),
    PutResult {
        id: u64,
        queue: String,
        at_ms: u64,
        expires_ms: u64,
        record: &'a [u8],
    },
}

/// The records of one entry, in order; a record that does not decode is an error (and the end).
pub(crate) struct Records<'a> {
    r: Reader<'a>,
    failed: bool,
}

/// Reads the records of `entry`.
pub(crate) fn records(entry: &[u8]) -> Records<'_> {
    Records {
        r: Reader {
            data: entry,
            pos: 0,
        },
        failed: false,
    }
}

impl<'a> Records<'a> {
    fn record(&mut self) -> Result<Record<'a>, StoreError> {
        let r = &mut self.r;
        Ok(match r.u8("record tag")? {
            PUT_QUEUE => Record::PutQueue(r.bytes("queue configuration")?),
            PUT_COUNTERS => Record::PutCounters {
                queue: r.string("counters queue")?,
                counters: Counters {
                    completed: r.u64("completed")?,
                    retried: r.u64("retried")?,
                    dead_lettered: r.u64("dead_lettered")?,
                },
            },
            PUT_JOB => Record::PutJob(r.bytes("job record")?),
            PUT_PAYLOAD => Record::PutPayload {
                id: r.u64("payload id")?,
                row: r.bytes("payload")?,
            },
            PUT_LEASE => Record::PutLease {
                id: r.u64("lease id")?,
                epoch: r.u64("lease epoch")?,
                deadline_ms: r.u64("lease deadline")?,
                attempts: r.u32("lease attempts")?,
            },
            REMOVE_LEASE => Record::RemoveLease(r.u64("lease id")?),
            REMOVE_JOB => Record::RemoveJob(r.u64("job id")?),
            PUT_KEY => Record::PutKey {
                queue: r.string("key queue")?,
                key: r.string("key")?,
                job: r.u64("key job")?,
                expires_ms: r.u64("key expiry")?,
            },
            REMOVE_QUEUE => Record::RemoveQueue(r.string("queue")?),
            REMOVE_KEY => Record::RemoveKey {
                queue: r.string("key queue")?,
                key: r.string("key")?,
            },
            MAX_JOB_ID => Record::MaxJobId(r.u64("max job id")?),
            PUT_RESULT => Record::PutResult {
                id: r.u64("result id")?,
                queue: r.string("result queue")?,
                at_ms: r.u64("result time")?,
                expires_ms: r.u64("result expiry")?,
                record: r.bytes("result record")?,
            },
            t => return Err(StoreError::corrupt(format!("unknown log record tag {t}"))),
        })
    }
}

impl<'a> Iterator for Records<'a> {
    type Item = Result<Record<'a>, StoreError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed || self.r.pos >= self.r.data.len() {
            return None;
        }
        let rec = self.record();
        self.failed = rec.is_err();
        Some(rec)
    }
}

impl Record<'_> {
    /// The mutation this record describes; `None` for a `MaxJobId` (which only checkpoints of
    /// the JetStream log hold).
    pub(crate) fn into_mutation(self) -> Result<Option<Mutation>, StoreError> {
        Ok(Some(match self {
            Record::PutQueue(json) => {
                let cfg: QueueConfig = serde_json::from_slice(json).map_err(|e| {
                    StoreError::corrupt(format!("queue configuration in the log: {e}"))
                })?;
                Mutation::PutQueue(Arc::new(cfg))
            }
            Record::PutCounters { queue, counters } => Mutation::PutCounters {
                queue: queue.into(),
                counters,
            },
            Record::PutJob(record) => {
                let d = codec::decode_job(record, 0)?;
                Mutation::PutJob {
                    job: Arc::new(d.job),
                    status: d.status,
                }
            }
            Record::PutPayload { id, row } => Mutation::PutPayload {
                id: JobId(id),
                payload: codec::decode_payload(row)?,
            },
            Record::PutLease {
                id,
                epoch,
                deadline_ms,
                attempts,
            } => Mutation::PutLease {
                id: JobId(id),
                epoch,
                deadline_ms,
                attempts,
            },
            Record::RemoveLease(id) => Mutation::RemoveLease(JobId(id)),
            Record::RemoveJob(id) => Mutation::RemoveJob(JobId(id)),
            Record::PutKey {
                queue,
                key,
                job,
                expires_ms,
            } => Mutation::PutIdempotencyKey {
                queue: queue.into(),
                key,
                job: JobId(job),
                expires_ms,
            },
            Record::RemoveQueue(name) => Mutation::RemoveQueue(name.into()),
            Record::RemoveKey { queue, key } => Mutation::RemoveIdempotencyKey {
                queue: queue.into(),
                key,
            },
            Record::MaxJobId(_) => return Ok(None),
            Record::PutResult {
                id,
                queue,
                at_ms,
                expires_ms,
                record,
            } => Mutation::PutResult {
                id: JobId(id),
                queue: queue.into(),
                at_ms,
                expires_ms,
                record: bytes::Bytes::copy_from_slice(record),
            },
        }))
    }
}

/// The mutations of one entry, in order (`MaxJobId` records are skipped).
pub(crate) fn decode_mutations(entry: &[u8]) -> Result<Vec<Mutation>, StoreError> {
    let mut out = Vec::new();
    for rec in records(entry) {
        if let Some(m) = rec?.into_mutation()? {
            out.push(m);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Encoding, Payload};
    use bytes::Bytes;

    /// Every kind of mutation comes back from an entry as it went in (re-encoding the decoded
    /// mutations gives the same bytes).
    #[test]
    fn mutations_round_trip_through_a_log_frame() {
        let (job, status) = crate::codec::tests::sample();
        let q: Arc<str> = "pdf".into();
        let all = vec![
            Mutation::PutQueue(Arc::new(
                serde_json::from_str::<QueueConfig>(r#"{"name":"pdf","target":"x.y"}"#)
                    .expect("config"),
            )),
            Mutation::PutCounters {
                queue: q.clone(),
                counters: Counters {
                    completed: 1,
                    retried: 2,
                    dead_lettered: 3,
                },
            },
            Mutation::PutJob {
                job: Arc::new(job),
                status,
            },
            Mutation::PutPayload {
                id: JobId(42),
                payload: Payload {
                    encoding: Encoding::MsgPack,
                    bytes: Bytes::from_static(b"\x92\x01\x02"),
                },
            },
            Mutation::PutLease {
                id: JobId(42),
                epoch: 8,
                deadline_ms: 9000,
                attempts: 4,
            },
            Mutation::RemoveLease(JobId(42)),
            Mutation::PutResult {
                id: JobId(42),
                queue: q.clone(),
                at_ms: 1,
                expires_ms: 2,
                record: Bytes::from_static(b"r"),
            },
            Mutation::RemoveJob(JobId(42)),
            Mutation::PutIdempotencyKey {
                queue: q.clone(),
                key: "k1".into(),
                job: JobId(42),
                expires_ms: 77,
            },
            Mutation::RemoveIdempotencyKey {
                queue: q.clone(),
                key: "k1".into(),
            },
            Mutation::RemoveQueue(q),
        ];
        let (mut body, mut scratch) = (Vec::new(), Vec::new());
        for m in &all {
            encode_mutation(m, &mut body, &mut scratch).expect("encode");
        }
        let back = decode_mutations(&body).expect("decode");
        assert_eq!(back.len(), all.len());
        let mut again = Vec::new();
        for m in &back {
            encode_mutation(m, &mut again, &mut scratch).expect("encode");
        }
        assert_eq!(again, body);
        assert!(decode_mutations(&body[..body.len() - 1]).is_err());
        assert!(decode_mutations(&[99]).is_err());
    }

    /// The bytes are those of the JetStream log's entries, already in stored logs: pinned
    /// record by record, so that neither log's reader can drift from them.
    #[test]
    fn records_keep_the_stored_jetstream_encoding() {
        let q: Arc<str> = "q".into();
        let mut out = Vec::new();
        let mut scratch = Vec::new();
        for m in [
            Mutation::PutCounters {
                queue: q.clone(),
                counters: Counters {
                    completed: 1,
                    retried: 2,
                    dead_lettered: 3,
                },
            },
            Mutation::PutLease {
                id: JobId(5),
                epoch: 6,
                deadline_ms: 7,
                attempts: 8,
            },
            Mutation::RemoveLease(JobId(9)),
            Mutation::RemoveJob(JobId(10)),
            Mutation::RemoveIdempotencyKey {
                queue: q.clone(),
                key: "k".into(),
            },
        ] {
            encode_mutation(&m, &mut out, &mut scratch).expect("encode");
        }
        put_max_job_id(&mut out, 11);
        let le = |v: u64| v.to_le_bytes().to_vec();
        let mut want = vec![2u8, 1, 0, 0, 0, b'q'];
        for v in [1, 2, 3] {
            want.extend(le(v));
        }
        want.push(5);
        for v in [5, 6, 7] {
            want.extend(le(v));
        }
        want.extend(8u32.to_le_bytes());
        want.push(6);
        want.extend(le(9));
        want.push(7);
        want.extend(le(10));
        want.extend([10u8, 1, 0, 0, 0, b'q', 1, 0, 0, 0, b'k', 11]);
        want.extend(le(11));
        assert_eq!(out, want);
        let recs: Vec<Record<'_>> = records(&out).collect::<Result<_, _>>().expect("decode");
        assert_eq!(recs.len(), 6);
        assert!(matches!(recs[5], Record::MaxJobId(11)));
        assert_eq!(decode_mutations(&out).expect("decode").len(), 5);
    }
}
