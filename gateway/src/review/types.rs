//! What reviews are made of: the person acting, the approval's scope, how a
//! held request ends, and the record operators and the audit trail see.
use serde::{Deserialize, Serialize};

/// A person acting on a review, as the API or socket authenticated them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Person {
    /// Who vouches for them: an OIDC issuer, or `unix` for the local socket.
    pub issuer: String,
    /// Their id at that issuer (`uid:0` on the socket).
    pub subject: String,
    /// Display name.
    pub name: String,
    /// E-mail, when the issuer gives one.
    pub email: Option<String>,
    /// Their user name on this host, when known (for the self-approval rule).
    pub unix_user: Option<String>,
}

/// What an approval covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "scope", rename_all = "snake_case")]
pub enum Scope {
    /// This request only.
    Once,
    /// This agent's identical requests for some minutes.
    Identical {
        /// For how long.
        minutes: u64,
    },
    /// A time-limited grant for the agent on the target.
    Grant {
        /// For how long.
        minutes: u64,
    },
}

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

/// A review, as operators and the audit trail see it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReviewRecord {
    /// `rv-N`.
    pub id: String,
    /// Opened (RFC 3339).
    pub opened: String,
    /// Expires (unix seconds).
    pub expires_unix: u64,
    /// The agent.
    pub agent: String,
    /// Its pid.
    pub pid: u32,
    /// The user it runs as.
    pub user: Option<String>,
    /// Its executable.
    pub exe: Option<String>,
    /// The target.
    pub target: String,
    /// The request, exactly (`POST /v1/chat/completions`, or the SQL).
    pub request: String,
    /// `http_request` or `sql_statement`.
    pub action: String,
    /// The policies that asked for review, and why.
    pub policies: Vec<String>,
    /// Their reason.
    pub reason: String,
    /// Distinct approvals needed.
    pub approvals_needed: u32,
    /// Whether people may approve their own agents' requests.
    pub no_self_approval: bool,
    /// Approvals so far.
    pub approvals: Vec<Person>,
    /// `pending`, `approved`, `denied`, `expired` or `failed`.
    pub state: String,
    /// Who denied it, or gave the last approval.
    pub decided_by: Option<Person>,
    /// The approval's scope.
    pub scope: Option<Scope>,
    /// A denial's reason, or why it failed.
    pub note: Option<String>,
}

/// Why an operator's action on a review was refused.
#[derive(Debug, thiserror::Error)]
pub enum ReviewError {
    /// No such review.
    #[error("no review {0}")]
    Unknown(String),
    /// It is no longer pending.
    #[error("review {0} is already {1}")]
    Closed(String, String),
    /// This person already approved it.
    #[error("{0} has already approved {1}; it needs a different person")]
    Twice(String, String),
    /// The policy bars approving one's own agent's requests.
    #[error("{0} runs the agent of {1}; its policy forbids approving one's own agent's requests")]
    OwnAgent(String, String),
}
