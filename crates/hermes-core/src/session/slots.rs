//! `server.max_concurrent_sessions` as permits that a reload can raise or lower
//! without touching the sessions that hold one.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// One permit per authenticated session.
#[derive(Debug)]
pub struct SessionSlots {
    permits: Arc<Semaphore>,
    max: AtomicU32,
}

impl SessionSlots {
    /// `max` slots, all free.
    pub fn new(max: u32) -> Self {
        SessionSlots {
            permits: Arc::new(Semaphore::new(max as usize)),
            max: AtomicU32::new(max),
        }
    }

    /// A slot, or None when all are taken.
    pub fn try_take(&self) -> Option<OwnedSemaphorePermit> {
        Arc::clone(&self.permits).try_acquire_owned().ok()
    }

    /// The configured number of slots.
    pub fn max(&self) -> u32 {
        self.max.load(Ordering::Relaxed)
    }

    /// Sets the number of slots. Lowering it never ends a session: free slots go at
    /// once, and the rest as the sessions holding them end.
    pub fn resize(&self, max: u32) {
        let old = self.max.swap(max, Ordering::Relaxed);
        if max > old {
            self.permits.add_permits((max - old) as usize);
        } else if max < old {
            let excess = (old - max) as usize;
            let gone = self.permits.forget_permits(excess);
            let owed = excess - gone;
            if owed > 0 {
                let permits = Arc::clone(&self.permits);
                tokio::spawn(async move {
                    if let Ok(taken) = permits.acquire_many_owned(owed as u32).await {
                        taken.forget();
                    }
                });
            }
        }
    }

    /// Slots free now.
    pub fn free(&self) -> usize {
        self.permits.available_permits()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn lowering_waits_for_sessions_and_raising_frees_at_once() {
        let slots = SessionSlots::new(3);
        let a = slots.try_take().expect("a");
        let b = slots.try_take().expect("b");
        slots.resize(1);
        assert_eq!(slots.max(), 1);
        // Both sessions keep their slots; nothing is free until one more has ended.
        assert!(slots.try_take().is_none());
        drop(a);
        tokio::task::yield_now().await;
        assert!(slots.try_take().is_none(), "b still holds the one slot");
        drop(b);
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
        let c = slots.try_take().expect("one slot again");
        assert!(slots.try_take().is_none());
        slots.resize(3);
        assert_eq!(slots.free(), 2);
        drop(c);
        assert_eq!(slots.free(), 3);
    }
}
