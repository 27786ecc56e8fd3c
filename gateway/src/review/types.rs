//! How a held request ends, and why an operator's action on a review was
//! refused.
use crate::types::{Person, ReviewState, Scope};

/// How a held request ends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Approved: it proceeds.
    Approved(Person, Scope),
    /// Denied by a person.
    Denied(Person, String),
    /// Nobody decided in time.
    Expired,
    /// The gateway stopped or could not keep the review.
    Failed(String),
}

/// Why an operator's action on a review was refused.
#[derive(Debug, thiserror::Error)]
pub enum ReviewError {
    /// No such review.
    #[error("no review {0}")]
    Unknown(String),
    /// It is no longer pending.
    #[error("review {0} is already {1}")]
    Closed(String, ReviewState),
    /// This person already approved it.
    #[error("{0} has already approved {1}; it needs a different person")]
    Twice(String, String),
    /// The policy bars approving one's own agent's requests.
    #[error("{0} runs the agent of {1}; its policy forbids approving one's own agent's requests")]
    OwnAgent(String, String),
}
