//! What reviews are made of, as operators and the audit trail see them: the
//! person acting, the approval's scope, and the review's record.
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

/// Where a review stands. Recorded as `pending`, `approved`, `denied`,
/// `expired` or `failed`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReviewState {
    /// Waiting for people.
    Pending,
    /// Enough people approved it.
    Approved,
    /// A person denied it.
    Denied,
    /// Nobody decided in time.
    Expired,
    /// The gateway stopped or could not keep it.
    Failed,
}

impl ReviewState {
    /// As recorded.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Approved => "approved",
            Self::Denied => "denied",
            Self::Expired => "expired",
            Self::Failed => "failed",
        }
    }
}

impl std::fmt::Display for ReviewState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
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
    /// Where it stands.
    pub state: ReviewState,
    /// Who denied it, or gave the last approval.
    pub decided_by: Option<Person>,
    /// The approval's scope.
    pub scope: Option<Scope>,
    /// A denial's reason, or why it failed.
    pub note: Option<String>,
}
