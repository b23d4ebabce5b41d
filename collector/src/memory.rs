//! The memory budget of ingestion: bytes of accepted data not yet in Parquet.
//! Receivers ask before they take a request; above the limit they refuse with a
//! retryable status, so an overloaded collector pushes back instead of growing.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

#[derive(Debug)]
pub struct MemoryBudget {
    used: AtomicUsize,
    limit: usize,
}

impl MemoryBudget {
    pub fn new(limit: usize) -> Arc<Self> {
        Arc::new(Self {
            used: AtomicUsize::new(0),
            limit,
        })
    }

    pub fn used(&self) -> usize {
        self.used.load(Ordering::Relaxed)
    }

    pub fn limit(&self) -> usize {
        self.limit
    }

    /// Reserves `bytes` unless the budget is already spent. A request is admitted
    /// while there is room left, so one reservation may end slightly over the
    /// limit; the next request is then refused.
    pub fn try_reserve(self: &Arc<Self>, bytes: usize) -> Option<Reservation> {
        let mut current = self.used.load(Ordering::Relaxed);
        loop {
            if current >= self.limit {
                return None;
            }
            match self.used.compare_exchange_weak(
                current,
                current + bytes,
                Ordering::AcqRel,
                Ordering::Relaxed,
            ) {
                Ok(_) => {
                    return Some(Reservation {
                        budget: Arc::clone(self),
                        bytes,
                    });
                }
                Err(actual) => current = actual,
            }
        }
    }
}

/// Bytes held against the budget until dropped.
#[derive(Debug)]
pub struct Reservation {
    budget: Arc<MemoryBudget>,
    bytes: usize,
}

impl Reservation {
    /// Changes the reservation to `bytes` (e.g. from an estimate to the real size).
    pub fn resize(&mut self, bytes: usize) {
        if bytes > self.bytes {
            self.budget
                .used
                .fetch_add(bytes - self.bytes, Ordering::AcqRel);
        } else {
            self.budget
                .used
                .fetch_sub(self.bytes - bytes, Ordering::AcqRel);
        }
        self.bytes = bytes;
    }

    pub fn bytes(&self) -> usize {
        self.bytes
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        self.budget.used.fetch_sub(self.bytes, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reservations_are_refused_over_the_limit_and_returned_on_drop() {
        let budget = MemoryBudget::new(100);
        let first = budget.try_reserve(80);
        assert!(first.is_some());
        let mut second = budget
            .try_reserve(80)
            .expect("room was left below the limit");
        assert!(budget.try_reserve(1).is_none());
        second.resize(10);
        assert_eq!(budget.used(), 90);
        drop(first);
        drop(second);
        assert_eq!(budget.used(), 0);
    }
}
