//! A cap on scripts running at once (`--max-children`), waited for with a deadline.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use crate::failure::Failure;

/// Counts running scripts; `acquire` waits up to the queue timeout for a free slot.
#[derive(Debug)]
pub struct Slots {
    max: usize,
    queue_timeout: Duration,
    running: Mutex<usize>,
    freed: Condvar,
    /// Wakes a waiter in [`Slots::acquire_async`] when a slot frees.
    freed_async: tokio::sync::Notify,
    /// Requests waiting in `acquire` now (the metrics' "waiting for a slot").
    waiting: AtomicUsize,
}

/// A held slot, released when dropped.
#[derive(Debug)]
pub struct SlotGuard {
    slots: Arc<Slots>,
}

impl Slots {
    /// At most `max` (at least 1) scripts at once; waiters give up after `queue_timeout`.
    pub fn new(max: usize, queue_timeout: Duration) -> Arc<Self> {
        Arc::new(Slots {
            max: max.max(1),
            queue_timeout,
            running: Mutex::new(0),
            freed: Condvar::new(),
            freed_async: tokio::sync::Notify::new(),
            waiting: AtomicUsize::new(0),
        })
    }

    /// Takes a slot, or fails with `Overloaded` (503) when none frees in time.
    pub fn acquire(self: &Arc<Self>) -> Result<SlotGuard, Failure> {
        let now = Instant::now();
        let deadline = now
            .checked_add(self.queue_timeout)
            .unwrap_or(now + Duration::from_secs(86_400 * 365));
        let mut running = self.running.lock().unwrap_or_else(|p| p.into_inner());
        if *running >= self.max {
            let _waiting = Waiting::enter(&self.waiting);
            while *running >= self.max {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return Err(Failure::Overloaded(self.queue_timeout));
                }
                running = self
                    .freed
                    .wait_timeout(running, left)
                    .unwrap_or_else(|p| p.into_inner())
                    .0;
            }
        }
        *running += 1;
        Ok(SlotGuard {
            slots: Arc::clone(self),
        })
    }

    /// A slot at once, or `None` when all are taken or others already wait for one (a caller
    /// that cannot wait goes another way without passing them).
    pub fn try_acquire(self: &Arc<Self>) -> Option<SlotGuard> {
        let mut running = self.running.lock().unwrap_or_else(|p| p.into_inner());
        if *running >= self.max || self.waiting.load(Ordering::Relaxed) > 0 {
            return None;
        }
        *running += 1;
        Some(SlotGuard {
            slots: Arc::clone(self),
        })
    }

    /// [`Slots::acquire`] for an async task: waits without blocking its thread, counted among
    /// the waiters, and fails with `Overloaded` (503) when none frees in time.
    pub async fn acquire_async(self: &Arc<Self>) -> Result<SlotGuard, Failure> {
        if let Some(slot) = self.try_acquire() {
            return Ok(slot);
        }
        let _waiting = Waiting::enter(&self.waiting);
        let deadline = tokio::time::Instant::now() + self.queue_timeout;
        loop {
            // Registered before looking, so a slot freed in between still wakes this waiter.
            let freed = self.freed_async.notified();
            tokio::pin!(freed);
            freed.as_mut().enable();
            if let Some(slot) = self.take_free() {
                return Ok(slot);
            }
            if tokio::time::timeout_at(deadline, freed).await.is_err() {
                return Err(Failure::Overloaded(self.queue_timeout));
            }
        }
    }

    /// A free slot, waiters or not.
    fn take_free(self: &Arc<Self>) -> Option<SlotGuard> {
        let mut running = self.running.lock().unwrap_or_else(|p| p.into_inner());
        if *running >= self.max {
            return None;
        }
        *running += 1;
        Some(SlotGuard {
            slots: Arc::clone(self),
        })
    }

    /// Scripts running now.
    pub fn in_use(&self) -> usize {
        *self.running.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Requests waiting for a slot now.
    pub fn waiting(&self) -> usize {
        self.waiting.load(Ordering::Relaxed)
    }
}

/// Counts one waiter for as long as it waits, however the wait ends.
struct Waiting<'a>(&'a AtomicUsize);

impl<'a> Waiting<'a> {
    fn enter(count: &'a AtomicUsize) -> Self {
        count.fetch_add(1, Ordering::Relaxed);
        Waiting(count)
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Drop for SlotGuard {
    fn drop(&mut self) {
        let mut running = self.slots.running.lock().unwrap_or_else(|p| p.into_inner());
        *running = running.saturating_sub(1);
        // One waiter of each kind: whichever takes the slot, the other waits on.
        self.slots.freed.notify_one();
        self.slots.freed_async.notify_one();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn full_slots_time_out_with_503_and_free_on_drop() {
        let slots = Slots::new(1, Duration::from_millis(50));
        let held = slots.acquire().unwrap();
        let err = slots.acquire().unwrap_err();
        assert_eq!(err.status(), 503);
        drop(held);
        assert!(slots.acquire().is_ok());
        assert_eq!(slots.in_use(), 0);
    }

    #[test]
    fn try_acquire_takes_a_free_slot_and_never_one_others_wait_for() {
        let slots = Slots::new(1, Duration::from_secs(30));
        let held = slots.try_acquire().expect("a free slot");
        assert!(slots.try_acquire().is_none(), "all taken");
        let other = Arc::clone(&slots);
        let waiter = std::thread::spawn(move || other.acquire().map(drop).is_ok());
        while slots.waiting() == 0 {
            std::thread::yield_now();
        }
        drop(held);
        // The waiter may not have run yet: the slot is free but it is the waiter's.
        assert!(slots.try_acquire().is_none() || slots.waiting() == 0);
        assert!(waiter.join().unwrap());
        assert!(slots.try_acquire().is_some());
    }

    #[tokio::test]
    async fn an_async_waiter_gets_the_slot_when_freed_or_a_503_in_time() {
        let slots = Slots::new(1, Duration::from_secs(30));
        let held = slots.acquire_async().await.unwrap();
        let other = Arc::clone(&slots);
        let waiter = tokio::spawn(async move { other.acquire_async().await.map(drop).is_ok() });
        while slots.waiting() == 0 {
            tokio::task::yield_now().await;
        }
        drop(held);
        assert!(waiter.await.unwrap());
        assert_eq!(slots.waiting(), 0);
        let short = Slots::new(1, Duration::from_millis(20));
        let _held = short.acquire_async().await.unwrap();
        let err = short.acquire_async().await.unwrap_err();
        assert_eq!(err.status(), 503);
    }

    #[test]
    fn a_waiter_gets_the_slot_when_freed() {
        let slots = Slots::new(1, Duration::from_secs(5));
        let held = slots.acquire().unwrap();
        let other = Arc::clone(&slots);
        let waiter = std::thread::spawn(move || other.acquire().map(drop).is_ok());
        std::thread::sleep(Duration::from_millis(50));
        drop(held);
        assert!(waiter.join().unwrap());
        assert_eq!(slots.waiting(), 0);
    }

    #[test]
    fn a_waiter_is_counted_while_it_waits() {
        let slots = Slots::new(1, Duration::from_secs(30));
        let held = slots.acquire().unwrap();
        assert_eq!(slots.waiting(), 0);
        let other = Arc::clone(&slots);
        let waiter = std::thread::spawn(move || other.acquire().map(drop).is_ok());
        // No timing assumption: wait until the waiter is seen, however long that takes.
        while slots.waiting() == 0 {
            std::thread::yield_now();
        }
        assert_eq!(slots.waiting(), 1);
        drop(held);
        assert!(waiter.join().unwrap());
        assert_eq!(slots.waiting(), 0);
    }
}
