//! Error types of the queue subsystem.

use std::sync::Arc;

use crate::model::JobId;

/// A configuration or input value that failed validation.
///
/// `field` names the offending field with its path (e.g. `retry.factor`, `run_at`), so a user can
/// find it in a config file or a request.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct InvalidField {
    /// Dotted path of the field, e.g. `retry.jitter`.
    pub field: String,
    /// What is wrong with it, in words a user understands.
    pub message: String,
}

impl InvalidField {
    /// Builds an error for `field`.
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        InvalidField {
            field: field.into(),
            message: message.into(),
        }
    }

    /// Prefixes the field path, e.g. `factor` inside `retry` becomes `retry.factor`.
    pub fn within(mut self, parent: &str) -> Self {
        self.field = if self.field.is_empty() {
            parent.to_owned()
        } else {
            format!("{parent}.{}", self.field)
        };
        self
    }
}

/// A failure of the durable store. Cloneable, so one failed commit can be reported to every
/// operation of its batch.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    /// An I/O or database engine error. After it the store refuses further writes until it is
    /// reopened (redb repairs the file on open).
    #[error("storage failure: {0}")]
    Storage(Arc<str>),
    /// The stored data could not be decoded.
    #[error("corrupt store: {0}")]
    Corrupt(Arc<str>),
    /// The store was closed (shut down) before the operation was committed.
    #[error("store closed")]
    Closed,
}

impl StoreError {
    pub(crate) fn storage(e: impl std::fmt::Display) -> Self {
        StoreError::Storage(e.to_string().into())
    }
    pub(crate) fn corrupt(msg: impl Into<String>) -> Self {
        StoreError::Corrupt(msg.into().into())
    }
}

/// Errors returned by [`crate::Queues`] operations.
#[derive(Debug, Clone, thiserror::Error)]
pub enum QueueError {
    /// No queue of that name is declared.
    #[error("unknown queue `{0}`")]
    UnknownQueue(String),
    /// A request or configuration value is invalid; nothing was stored.
    #[error("invalid {0}")]
    Invalid(#[from] InvalidField),
    /// The payload is larger than the queue's `max_payload_bytes`; nothing was stored.
    #[error("payload of {size} bytes exceeds the limit of {limit} bytes of queue `{queue}`")]
    PayloadTooLarge {
        /// Queue name.
        queue: String,
        /// Payload size in bytes.
        size: usize,
        /// The queue's limit in bytes.
        limit: u32,
    },
    /// The queue holds its `max_jobs` jobs (waiting or in flight); nothing was stored.
    #[error("queue `{queue}` is full: it holds its limit of {limit} jobs waiting or in flight (max_jobs)")]
    QueueFull {
        /// Queue name.
        queue: String,
        /// The queue's `max_jobs`.
        limit: u64,
    },
    /// The queue's workers are behind (`backpressure.ready` jobs ready to run) and did not
    /// catch up within `backpressure.max_wait`; nothing was stored.
    #[error("queue `{queue}` is backlogged: {ready} jobs are ready and its workers did not take it under {limit} within {waited_ms} ms (backpressure); try again later")]
    Backlogged {
        /// Queue name.
        queue: String,
        /// Ready jobs when the push gave up.
        ready: u64,
        /// The queue's `backpressure.ready`.
        limit: u64,
        /// How long the push waited.
        waited_ms: u64,
    },
    /// `declare` of an existing queue with a different configuration.
    #[error(
        "queue `{queue}` is already declared with a different configuration (differs in: {fields})"
    )]
    ConfigConflict {
        /// Queue name.
        queue: String,
        /// Comma-separated names of the fields that differ.
        fields: String,
    },
    /// A run-time declaration beyond the store's `max_queues`; nothing was stored.
    #[error("the realm holds its limit of {limit} queues (max_queues): delete one first (switchyard.queue.delete)")]
    TooManyQueues {
        /// The limit.
        limit: usize,
    },
    /// One `push_many` carries more jobs or payload bytes than the store allows; nothing was
    /// stored.
    #[error("one push_many may carry at most {limit}; this one carries {what}: split it")]
    BatchTooLarge {
        /// What the batch carries, e.g. `1500 jobs`.
        what: String,
        /// The limit and its name.
        limit: String,
    },
    /// The queues declared at run time hold, together, their realm-wide limit of jobs or
    /// payload bytes; nothing was stored.
    #[error("queue `{queue}` cannot take this push: the queues declared at run time hold {held} {what} together, at most {limit} ([realm.queue_limits] {key}); purge or delete run-time queues, or declare the queue in the config file")]
    RuntimeFull {
        /// A run-time queue of the push.
        queue: String,
        /// `jobs` or `payload bytes`.
        what: &'static str,
        /// What they hold.
        held: u64,
        /// The limit.
        limit: u64,
        /// The limit's config key.
        key: &'static str,
    },
    /// The disk holding the store would keep less than its reserve free; nothing was stored.
    #[error("no space for this push: the disk of the queue store has {free} bytes free (counting room the store can reuse), too little for this push above the reserve of {reserve} bytes ([realm.queue_limits] min_free_disk_bytes): complete, purge or delete jobs, or free disk space")]
    DiskFull {
        /// Free bytes counted.
        free: u64,
        /// The reserve.
        reserve: u64,
    },
    /// A queue of the config file cannot be deleted at run time.
    #[error("queue `{0}` is declared in the config file: remove it there (only queues declared at run time can be deleted)")]
    ConfiguredQueue(String),
    /// Deleting a queue that still holds jobs, without `force`.
    #[error("queue `{queue}` holds {jobs} jobs (waiting, in flight or dead): purge it first, or delete with force = true")]
    NotEmpty {
        /// Queue name.
        queue: String,
        /// Jobs it holds.
        jobs: usize,
    },
    /// No job with that id exists (never existed, completed, or purged).
    #[error("unknown job {0}")]
    UnknownJob(JobId),
    /// The job exists but the given lease epoch is not its current lease: the lease expired (and
    /// the job may have been leased again), or the job is not leased at all. The operation was
    /// refused and nothing changed (fencing).
    #[error("stale lease for job {job}: epoch {epoch} is not its current lease")]
    StaleLease {
        /// The job.
        job: JobId,
        /// The epoch the caller presented.
        epoch: u64,
    },
    /// The durable store failed or is closed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl QueueError {
    /// A WAMP-style error URI for this error, for the router to send to the caller.
    pub fn uri(&self) -> &'static str {
        match self {
            QueueError::UnknownQueue(_) => "switchyard.queue.error.unknown_queue",
            QueueError::Invalid(_) => "switchyard.queue.error.invalid_argument",
            QueueError::PayloadTooLarge { .. } => "switchyard.queue.error.payload_too_large",
            QueueError::QueueFull { .. }
            | QueueError::Backlogged { .. }
            | QueueError::RuntimeFull { .. }
            | QueueError::DiskFull { .. } => "switchyard.queue.error.queue_full",
            QueueError::ConfigConflict { .. } => "switchyard.queue.error.config_conflict",
            QueueError::UnknownJob(_) => "switchyard.queue.error.unknown_job",
            QueueError::TooManyQueues { .. } | QueueError::BatchTooLarge { .. } => {
                "switchyard.queue.error.limit_exceeded"
            }
            QueueError::ConfiguredQueue(_) => "switchyard.queue.error.configured_queue",
            QueueError::NotEmpty { .. } => "switchyard.queue.error.not_empty",
            QueueError::StaleLease { .. } => "switchyard.queue.error.stale_lease",
            QueueError::Store(_) => "switchyard.queue.error.store",
        }
    }

    pub(crate) fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        QueueError::Invalid(InvalidField::new(field, message))
    }
}
