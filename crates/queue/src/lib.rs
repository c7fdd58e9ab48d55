//! Switchyard durable job queues: the job model, retry policies, the in-memory scheduler, the
//! [`Store`] trait and the embedded redb store with group commit.
//!
//! This crate knows nothing of WAMP sessions or sockets; the router drives it through
//! [`Queues`]:
//!
//! * producers: [`Queues::push`] / [`Queues::push_many`] resolve after the durable commit;
//! * dispatch: [`Queues::next_ready`] hands out a [`Lease`] (job + fencing epoch + deadline),
//!   [`Queues::notifier`] wakes the dispatcher, [`Wait::until_ms`] says when to look again;
//! * settlement: [`Queues::complete`], [`Queues::fail`], [`Queues::extend`],
//!   [`Queues::release`], all fenced by the lease epoch;
//! * time: [`Queues::maintain`] expires leases, forgets idempotency keys, prunes dead letters;
//! * operations: [`Queues::list`], [`Queues::stats`], [`Queues::peek`], [`Queues::dead`],
//!   [`Queues::requeue`], [`Queues::purge`], [`Queues::declare`].
//!
//! See the crate README for the model, the states and the durability guarantee.

#![warn(missing_docs)]

pub mod clock;
mod codec;
pub mod config;
mod disk;
mod engine;
mod entry;
pub mod error;
pub mod human;
pub mod model;
pub mod policy;
mod redb_store;
pub mod replicated;
mod scheduler;
pub mod store;
mod usage;
mod wal;

pub use clock::Clock;
pub use codec::{reencode_job_record, reencode_payload_row};
pub use config::{Backpressure, DeadLetterRetention, QueueConfig, RateLimit, NON_RETRYABLE};
pub use engine::{
    Declared, Deleted, Dispatch, Durable, Expired, Maintenance, Options, Purge, PushAck,
    QueueStats, Queues, Reconfigured, Requeue, Settled, MAX_WAITING_PUSHES,
};
pub use error::{InvalidField, QueueError, StoreError};
pub use model::{
    DeadReason, Encoding, ErrorInfo, Job, JobId, JobInfo, JobOptions, JobState, JobStatus, NewJob,
    Payload, Priority, RunAt, Target, When,
};
pub use policy::RetryPolicy;
pub use redb_store::{wal_path, RedbOptions, RedbStore, DEFAULT_WAL_BYTES};
pub use scheduler::{Lease, Outcome, Wait, WaitReason, LEASE_EXPIRED, LEASE_LOST};
pub use store::{Counters, Store, StoreStats};
