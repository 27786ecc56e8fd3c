//! The memory budget for messages the gateway must hold whole (a
//! PostgreSQL message before it is judged, an HTTP body read to be masked
//! or to find its `model`), across all sessions. Each message reserves
//! what it will cost before it is buffered; one that does not fit is
//! refused (SQLSTATE 54000, HTTP 413) instead, so many large messages at
//! once cannot take the gateway's memory, only wait for their turn.
use std::sync::{
    atomic::{AtomicUsize, Ordering},
    Arc,
};

/// What a held message costs per byte of it: the read buffer, the copy
/// that is parsed or masked (statement text, JSON value), and the copy
/// written on. Measured with a 100 MiB Query (RSS grew 5.8 times its size
/// before the budget; with the read buffer sized exactly, about 4).
pub const COST_PER_BYTE: usize = 4;

/// The budget.
#[derive(Debug)]
pub struct Budget {
    limit: usize,
    used: AtomicUsize,
}

/// A message that did not fit.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "a message of {bytes} bytes does not fit the gateway's buffer budget ({in_use} of {limit} bytes in use, \
     each held byte counted {COST_PER_BYTE} times; see limits.buffer_budget)"
)]
pub struct OverBudget {
    /// The message's size so far.
    pub bytes: usize,
    /// What was in use.
    pub in_use: usize,
    /// The budget.
    pub limit: usize,
}

/// Part of the budget, held by one message; given back on drop.
#[derive(Debug)]
pub struct Reserved {
    budget: Arc<Budget>,
    cost: usize,
    bytes: usize,
}

impl Budget {
    /// A budget of `limit` bytes.
    pub fn new(limit: usize) -> Arc<Self> {
        Arc::new(Self {
            limit,
            used: AtomicUsize::new(0),
        })
    }

    /// Bytes reserved now.
    pub fn in_use(&self) -> usize {
        self.used.load(Ordering::Relaxed)
    }

    /// Reserves for a message of `bytes`.
    pub fn reserve(self: &Arc<Self>, bytes: usize) -> Result<Reserved, OverBudget> {
        let mut held = Reserved {
            budget: self.clone(),
            cost: 0,
            bytes: 0,
        };
        held.grow_to(bytes)?;
        Ok(held)
    }

    fn take(&self, cost: usize, bytes: usize) -> Result<(), OverBudget> {
        let mut used = self.used.load(Ordering::Relaxed);
        loop {
            let next = used.saturating_add(cost);
            if next > self.limit {
                return Err(OverBudget {
                    bytes,
                    in_use: used,
                    limit: self.limit,
                });
            }
            match self
                .used
                .compare_exchange_weak(used, next, Ordering::AcqRel, Ordering::Relaxed)
            {
                Ok(_) => return Ok(()),
                Err(now) => used = now,
            }
        }
    }
}

impl Reserved {
    /// Grows the reservation to a message of `bytes` (a body whose length
    /// was not announced grows as it arrives).
    pub fn grow_to(&mut self, bytes: usize) -> Result<(), OverBudget> {
        if bytes <= self.bytes {
            return Ok(());
        }
        let cost = bytes.saturating_mul(COST_PER_BYTE);
        self.budget.take(cost - self.cost, bytes)?;
        self.cost = cost;
        self.bytes = bytes;
        Ok(())
    }
}

impl Drop for Reserved {
    fn drop(&mut self) {
        self.budget.used.fetch_sub(self.cost, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_past_the_budget_are_refused_until_room_is_given_back() {
        let budget = Budget::new(100 * COST_PER_BYTE);
        let a = budget.reserve(60).unwrap();
        let refused = budget.reserve(50).unwrap_err();
        assert_eq!((refused.bytes, refused.in_use), (50, 60 * COST_PER_BYTE));
        let mut b = budget.reserve(30).unwrap();
        assert!(b.grow_to(40).is_ok());
        assert!(b.grow_to(41).is_err(), "grown past the budget");
        assert!(b.grow_to(20).is_ok(), "never shrinks, never fails shrinking");
        drop(a);
        assert_eq!(budget.in_use(), 40 * COST_PER_BYTE);
        assert!(budget.reserve(60).is_ok());
        drop(b);
        assert_eq!(budget.in_use(), 0);
    }
}
