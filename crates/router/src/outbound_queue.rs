//! The queue between the router and a connection's writer, and the
//! deferred wake-ups that let a writer wake once per batch of frames.
//!
//! A bounded multi-producer, single-consumer queue: producers push under a
//! short lock, the consumer (the transport's writer) takes everything queued
//! at once. A producer wakes the consumer only if it sleeps (it found the
//! queue empty and left its waker), and only the first producer after it fell
//! asleep does: the waker is taken out of the queue by that push.
//!
//! **Deferred wake-ups.** A reader routes each frame of what its socket gave
//! it inside [`Batch::route`]; a deferrable push ([`Sender::try_send_deferred`],
//! the router's EVENTs) made meanwhile on that thread does not wake the
//! consumer but hands its waker to the batch, and the reader wakes
//! them all ([`Batch::flush`]) before it waits for its socket again, after
//! [`MAX_BATCH_FRAMES`] frames at the latest, and when the batch is dropped.
//! A publisher's burst of 32 PUBLISHes then wakes each subscriber's writer
//! once, and the writer writes the 32 EVENTs at once, instead of waking for
//! the first EVENT, writing it, and waking again for the next ones.
//!
//! A wake-up is never lost: a consumer that sleeps has left its waker in the
//! queue, the first push after that takes it, and a taken waker is either
//! woken at once or held by a batch, which wakes it when flushed or dropped
//! (also on unwinding). Later pushes find no waker and need none: the
//! consumer takes everything queued when it runs.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::future::poll_fn;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Waker};

use parking_lot::Mutex;

/// Most frames a reader routes before it wakes the writers its batch holds,
/// even when its socket keeps giving it more.
pub const MAX_BATCH_FRAMES: usize = 64;

/// A batch keeps room for this many deferred wake-ups between batches (a
/// publisher to many subscribers lets go of the rest).
const KEPT_WAKERS: usize = 1024;

/// The consumer's local queue keeps room for this many items while it
/// sleeps (an idle connection lets go of the room a burst made).
const KEPT_ITEMS: usize = 64;

thread_local! {
    /// The wake-ups deferred by the batch being routed on this thread, if
    /// any ([`Batch::route`]).
    static DEFERRED: RefCell<Option<Vec<Waker>>> = const { RefCell::new(None) };
}

/// Wakes `waker` now, or hands it to the batch being routed on this thread.
fn wake_or_defer(waker: Waker) {
    let waker = DEFERRED.with(|d| match d.try_borrow_mut() {
        Ok(mut slot) => match slot.as_mut() {
            Some(list) => {
                list.push(waker);
                None
            }
            None => Some(waker),
        },
        // Not reached (nothing borrows it around a push); waking now is
        // always correct.
        Err(_) => Some(waker),
    });
    if let Some(w) = waker {
        w.wake();
    }
}

/// The wake-ups a reader deferred while routing frames. Made once per
/// connection reader; holds nothing between batches but its (empty) list.
#[derive(Default)]
pub struct Batch {
    wakers: Vec<Waker>,
    frames: usize,
}

impl Batch {
    pub fn new() -> Self {
        Batch::default()
    }

    /// Runs `route` (the synchronous routing of one frame) with the wake-ups
    /// of the queues it fills deferred to this batch. Flushes once the batch
    /// has routed [`MAX_BATCH_FRAMES`] frames.
    pub fn route<R>(&mut self, route: impl FnOnce() -> R) -> R {
        /// Puts the lists back, also when `route` unwinds.
        struct Scope<'a> {
            batch: &'a mut Batch,
            outer: Option<Vec<Waker>>,
        }
        impl Drop for Scope<'_> {
            fn drop(&mut self) {
                let outer = self.outer.take();
                let mine = DEFERRED.with(|d| d.replace(outer));
                self.batch.wakers = mine.unwrap_or_default();
            }
        }
        let mine = std::mem::take(&mut self.wakers);
        let outer = DEFERRED.with(|d| d.replace(Some(mine)));
        let scope = Scope { batch: self, outer };
        let result = route();
        drop(scope);
        self.frames += 1;
        if self.frames >= MAX_BATCH_FRAMES {
            self.flush();
        }
        result
    }

    /// Wakes every writer this batch deferred. The reader calls it before it
    /// waits for anything (its socket, an authorizer).
    pub fn flush(&mut self) {
        self.frames = 0;
        for w in self.wakers.drain(..) {
            w.wake();
        }
        if self.wakers.capacity() > KEPT_WAKERS {
            self.wakers.shrink_to(KEPT_WAKERS);
        }
    }

    /// Wake-ups held, not yet flushed.
    pub fn pending(&self) -> usize {
        self.wakers.len()
    }
}

impl Drop for Batch {
    fn drop(&mut self) {
        self.flush();
    }
}

/// Why [`Sender::try_send`] refused an item (given back).
#[derive(Debug)]
pub enum TrySendError<T> {
    /// The queue holds its capacity.
    Full(T),
    /// The receiver is gone.
    Closed(T),
}

/// Why [`Receiver::try_recv`] returned nothing.
#[derive(Debug, PartialEq, Eq)]
pub enum TryRecvError {
    /// Nothing queued now.
    Empty,
    /// Nothing queued, and the sender is gone.
    Disconnected,
}

struct Chan<T> {
    state: Mutex<State<T>>,
    /// Items pushed and not yet taken out by the receiver (in the shared
    /// queue or in the receiver's local one).
    len: AtomicUsize,
    capacity: usize,
}

struct State<T> {
    items: VecDeque<T>,
    /// The receiver's waker while it sleeps on an empty queue; taken by the
    /// first push after that.
    waker: Option<Waker>,
    sender_gone: bool,
    receiver_gone: bool,
}

/// A bounded queue of at most `capacity` items (at least 1).
pub fn channel<T>(capacity: usize) -> (Sender<T>, Receiver<T>) {
    let chan = Arc::new(Chan {
        state: Mutex::new(State {
            items: VecDeque::new(),
            waker: None,
            sender_gone: false,
            receiver_gone: false,
        }),
        len: AtomicUsize::new(0),
        capacity: capacity.max(1),
    });
    (
        Sender { chan: chan.clone() },
        Receiver {
            chan,
            taken: VecDeque::new(),
            popped: 0,
        },
    )
}

/// The producers' end (shared by reference: `try_send` takes `&self`).
pub struct Sender<T> {
    chan: Arc<Chan<T>>,
}

impl<T> Sender<T> {
    /// Queues `item` and wakes the receiver if it sleeps.
    pub fn try_send(&self, item: T) -> Result<(), TrySendError<T>> {
        self.push(item, false)
    }

    /// Queues `item` and wakes the receiver if it sleeps, or defers that
    /// wake-up to the batch being routed on this thread, if any.
    pub fn try_send_deferred(&self, item: T) -> Result<(), TrySendError<T>> {
        self.push(item, true)
    }

    fn push(&self, item: T, defer: bool) -> Result<(), TrySendError<T>> {
        let mut st = self.chan.state.lock();
        if st.receiver_gone {
            return Err(TrySendError::Closed(item));
        }
        if self.chan.len.load(Ordering::Relaxed) >= self.chan.capacity {
            return Err(TrySendError::Full(item));
        }
        self.chan.len.fetch_add(1, Ordering::Relaxed);
        st.items.push_back(item);
        let waker = st.waker.take();
        drop(st);
        match waker {
            Some(w) if defer => wake_or_defer(w),
            Some(w) => w.wake(),
            None => {}
        }
        Ok(())
    }
}

impl<T> Drop for Sender<T> {
    /// The receiver gets None once it took what is queued; woken now.
    fn drop(&mut self) {
        let mut st = self.chan.state.lock();
        st.sender_gone = true;
        let waker = st.waker.take();
        drop(st);
        if let Some(w) = waker {
            w.wake();
        }
    }
}

/// The consumer's end. It takes the whole shared queue at once into a local
/// one and pops from that without locking.
pub struct Receiver<T> {
    chan: Arc<Chan<T>>,
    taken: VecDeque<T>,
    /// Items popped whose places are not yet given back to the producers
    /// ([`Receiver::settle`]): one atomic subtraction per batch, not one
    /// per item.
    popped: usize,
}

impl<T> Receiver<T> {
    fn pop_taken(&mut self) -> Option<T> {
        let item = self.taken.pop_front()?;
        self.popped += 1;
        Some(item)
    }

    /// Gives the places of the items popped so far back to the producers.
    /// Until then they count against the capacity: the consumer calls it
    /// once it has taken a batch (and it is called before the consumer
    /// sleeps, and by [`Receiver::try_recv`] when it finds nothing more).
    pub fn settle(&mut self) {
        if self.popped > 0 {
            self.chan.len.fetch_sub(self.popped, Ordering::Relaxed);
            self.popped = 0;
        }
    }

    /// The next item; None once the sender is gone and nothing is queued.
    pub fn poll_recv(&mut self, cx: &mut Context<'_>) -> Poll<Option<T>> {
        if let Some(item) = self.pop_taken() {
            return Poll::Ready(Some(item));
        }
        // The local queue is empty: its places go back before the consumer
        // takes more or sleeps.
        self.settle();
        let mut st = self.chan.state.lock();
        if !st.items.is_empty() {
            std::mem::swap(&mut st.items, &mut self.taken);
            // It runs: the pushes until it sleeps again need not wake it.
            st.waker = None;
            drop(st);
            return Poll::Ready(self.pop_taken());
        }
        if st.sender_gone {
            return Poll::Ready(None);
        }
        match &st.waker {
            Some(w) if w.will_wake(cx.waker()) => {}
            _ => st.waker = Some(cx.waker().clone()),
        }
        drop(st);
        // Asleep: let go of the room a burst made.
        if self.taken.capacity() > KEPT_ITEMS {
            self.taken.shrink_to(KEPT_ITEMS);
        }
        Poll::Pending
    }

    /// The next item; None once the sender is gone and nothing is queued.
    pub async fn recv(&mut self) -> Option<T> {
        poll_fn(|cx| self.poll_recv(cx)).await
    }

    /// The next item if one is queued.
    pub fn try_recv(&mut self) -> Result<T, TryRecvError> {
        if let Some(item) = self.pop_taken() {
            return Ok(item);
        }
        self.settle();
        let mut st = self.chan.state.lock();
        if st.items.is_empty() {
            return Err(if st.sender_gone {
                TryRecvError::Disconnected
            } else {
                TryRecvError::Empty
            });
        }
        std::mem::swap(&mut st.items, &mut self.taken);
        drop(st);
        self.pop_taken().ok_or(TryRecvError::Empty)
    }

    /// Refuses every later push; what is queued can still be taken.
    pub fn close(&mut self) {
        self.chan.state.lock().receiver_gone = true;
    }
}

impl<T> Drop for Receiver<T> {
    fn drop(&mut self) {
        let mut st = self.chan.state.lock();
        st.receiver_gone = true;
        let items = std::mem::take(&mut st.items);
        drop(st);
        drop(items);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;
    use std::task::Wake;

    /// A waker that counts its wake-ups.
    #[derive(Default)]
    struct Count(AtomicUsize);
    impl Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }
    impl Count {
        fn get(&self) -> usize {
            self.0.load(Ordering::SeqCst)
        }
    }

    /// Polls the receiver with the counting waker: Some(item) or None if pending.
    fn poll(rx: &mut Receiver<u32>, count: &Arc<Count>) -> Option<Option<u32>> {
        let waker = Waker::from(count.clone());
        match rx.poll_recv(&mut Context::from_waker(&waker)) {
            Poll::Ready(x) => Some(x),
            Poll::Pending => None,
        }
    }

    #[test]
    fn a_sleeping_receiver_is_woken_once_by_the_first_push() {
        let (tx, mut rx) = channel(8);
        let count = Arc::new(Count::default());
        assert_eq!(poll(&mut rx, &count), None);
        tx.try_send(1).unwrap();
        tx.try_send(2).unwrap();
        assert_eq!(count.get(), 1, "one wake-up for two pushes");
        assert_eq!(poll(&mut rx, &count), Some(Some(1)));
        assert_eq!(rx.try_recv(), Ok(2));
        assert_eq!(rx.try_recv(), Err(TryRecvError::Empty));
    }

    #[test]
    fn a_batch_defers_the_wake_up_until_it_is_flushed() {
        let (tx, mut rx) = channel(64);
        let count = Arc::new(Count::default());
        assert_eq!(poll(&mut rx, &count), None);
        let mut batch = Batch::new();
        for i in 0..3 {
            batch.route(|| tx.try_send_deferred(i).unwrap());
        }
        assert_eq!(count.get(), 0, "deferred");
        assert_eq!(batch.pending(), 1, "one wake-up held for three pushes");
        batch.flush();
        assert_eq!(count.get(), 1);
        assert_eq!(poll(&mut rx, &count), Some(Some(0)));
        // A push that may not wait (not an EVENT) wakes at once inside a
        // batch, and any push outside one.
        assert_eq!(rx.try_recv(), Ok(1));
        assert_eq!(rx.try_recv(), Ok(2));
        assert_eq!(poll(&mut rx, &count), None);
        batch.route(|| tx.try_send(3).unwrap());
        assert_eq!((count.get(), batch.pending()), (2, 0));
        assert_eq!(poll(&mut rx, &count), Some(Some(3)));
        assert_eq!(poll(&mut rx, &count), None);
        tx.try_send_deferred(9).unwrap();
        assert_eq!(count.get(), 3);
    }

    #[test]
    fn a_batch_flushes_after_max_frames_and_when_dropped() {
        let (tx, mut rx) = channel(1024);
        let count = Arc::new(Count::default());
        assert_eq!(poll(&mut rx, &count), None);
        let mut batch = Batch::new();
        for i in 0..MAX_BATCH_FRAMES as u32 {
            batch.route(|| tx.try_send_deferred(i).unwrap());
        }
        assert_eq!(count.get(), 1, "flushed after MAX_BATCH_FRAMES frames");
        while rx.try_recv().is_ok() {}
        assert_eq!(poll(&mut rx, &count), None);
        batch.route(|| tx.try_send_deferred(1).unwrap());
        assert_eq!(count.get(), 1);
        drop(batch);
        assert_eq!(count.get(), 2, "a dropped batch wakes what it held");
    }

    #[test]
    fn a_panic_while_routing_loses_no_wake_up() {
        let (tx, mut rx) = channel(8);
        let count = Arc::new(Count::default());
        assert_eq!(poll(&mut rx, &count), None);
        let mut batch = Batch::new();
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            batch.route(|| {
                tx.try_send_deferred(1).unwrap();
                panic!("routing failed");
            })
        }));
        assert!(r.is_err());
        assert_eq!(batch.pending(), 1, "the wake-up is back in the batch");
        drop(batch);
        assert_eq!(count.get(), 1);
        // And the thread has no batch left: a push wakes at once.
        assert_eq!(poll(&mut rx, &count), Some(Some(1)));
        assert_eq!(poll(&mut rx, &count), None);
        tx.try_send(2).unwrap();
        assert_eq!(count.get(), 2);
    }

    #[test]
    fn nested_batches_each_hold_their_own_wake_ups() {
        let (tx_a, mut rx_a) = channel(8);
        let (tx_b, mut rx_b) = channel(8);
        let (ca, cb) = (Arc::new(Count::default()), Arc::new(Count::default()));
        assert_eq!(poll(&mut rx_a, &ca), None);
        assert_eq!(poll(&mut rx_b, &cb), None);
        let mut outer = Batch::new();
        let mut inner = Batch::new();
        outer.route(|| {
            inner.route(|| tx_b.try_send_deferred(1).unwrap());
            tx_a.try_send_deferred(1).unwrap();
        });
        assert_eq!((outer.pending(), inner.pending()), (1, 1));
        inner.flush();
        assert_eq!((ca.get(), cb.get()), (0, 1));
        outer.flush();
        assert_eq!(ca.get(), 1);
    }

    #[test]
    fn a_running_receiver_is_not_woken() {
        let (tx, mut rx) = channel(8);
        let count = Arc::new(Count::default());
        // Never slept: no waker left, nothing to wake.
        tx.try_send(1).unwrap();
        assert_eq!(poll(&mut rx, &count), Some(Some(1)));
        tx.try_send(2).unwrap();
        assert_eq!(count.get(), 0);
        let mut batch = Batch::new();
        batch.route(|| tx.try_send_deferred(3).unwrap());
        assert_eq!(batch.pending(), 0);
        assert_eq!(poll(&mut rx, &count), Some(Some(2)));
        assert_eq!(poll(&mut rx, &count), Some(Some(3)));
    }

    #[test]
    fn capacity_counts_what_the_receiver_has_not_popped() {
        let (tx, mut rx) = channel(2);
        tx.try_send(1).unwrap();
        tx.try_send(2).unwrap();
        assert!(matches!(tx.try_send(3), Err(TrySendError::Full(3))));
        // Taken into the receiver's local queue, one popped: its place is
        // given back once the receiver settles (after taking a batch).
        assert_eq!(rx.try_recv(), Ok(1));
        assert!(matches!(tx.try_send(3), Err(TrySendError::Full(3))));
        rx.settle();
        tx.try_send(3).unwrap();
        assert!(matches!(tx.try_send(4), Err(TrySendError::Full(4))));
        assert_eq!(rx.try_recv(), Ok(2));
        assert_eq!(rx.try_recv(), Ok(3));
    }

    #[test]
    fn closing_and_dropping_either_end() {
        let (tx, mut rx) = channel(4);
        let count = Arc::new(Count::default());
        tx.try_send(1).unwrap();
        rx.close();
        assert!(matches!(tx.try_send(2), Err(TrySendError::Closed(2))));
        assert_eq!(rx.try_recv(), Ok(1));
        assert_eq!(poll(&mut rx, &count), None);
        drop(tx);
        assert_eq!(count.get(), 1, "the sender's drop wakes the receiver");
        assert_eq!(poll(&mut rx, &count), Some(None));
        assert_eq!(rx.try_recv(), Err(TryRecvError::Disconnected));

        let (tx, rx) = channel::<u32>(4);
        drop(rx);
        assert!(matches!(tx.try_send(1), Err(TrySendError::Closed(1))));
    }
}
