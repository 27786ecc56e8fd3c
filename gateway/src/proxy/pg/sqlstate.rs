//! Every SQLSTATE the gateway itself speaks, and which error gets which: the
//! one place a refusal or a failure becomes a PostgreSQL error code (as
//! `proxy/http/failure.rs` is for HTTP statuses).
use super::{encoding::DecodeError, login::LoginError, wire::WireError};
use crate::types::Side;

/// 42501 insufficient_privilege: policy refused the statement or session.
pub const INSUFFICIENT_PRIVILEGE: &str = "42501";
/// 53400 configuration_limit_exceeded: a limit the operator set (request rate).
pub const CONFIGURATION_LIMIT_EXCEEDED: &str = "53400";
/// 54000 program_limit_exceeded: a message over the gateway's buffer budget.
pub const PROGRAM_LIMIT_EXCEEDED: &str = "54000";
/// 08P01 protocol_violation: the agent (or server) broke the protocol.
pub const PROTOCOL_VIOLATION: &str = "08P01";
/// 08006 connection_failure: the gateway could not set up the upstream side.
pub const CONNECTION_FAILURE: &str = "08006";
/// 28000 invalid_authorization_specification: the database refused the login.
pub const INVALID_AUTHORIZATION: &str = "28000";
/// 22021 character_not_in_repertoire: query text not valid in the
/// session's client_encoding (the server's own code for it).
pub const CHARACTER_NOT_IN_REPERTOIRE: &str = "22021";
/// 0A000 feature_not_supported: non-ASCII text in a client_encoding the
/// gateway cannot read.
pub const FEATURE_NOT_SUPPORTED: &str = "0A000";
/// 57P01 admin_shutdown: the session was cut (revoked, or the gateway stopping),
/// as the server says it when it is stopped.
pub const ADMIN_SHUTDOWN: &str = "57P01";

/// What the agent is told when the gateway cannot log in upstream.
pub fn of_login(e: &LoginError) -> &'static str {
    match e {
        LoginError::Rejected { .. } => INVALID_AUTHORIZATION,
        _ => CONNECTION_FAILURE,
    }
}

/// What the agent is told when its query text cannot be read.
pub fn of_decode(e: &DecodeError) -> &'static str {
    match e {
        DecodeError::Invalid(_) => CHARACTER_NOT_IN_REPERTOIRE,
        DecodeError::Unsupported(_) | DecodeError::Changing => FEATURE_NOT_SUPPORTED,
    }
}

/// What the agent is told when a session ends on a wire error, if anything:
/// an over-budget message is a limit; bytes the agent got wrong, or a
/// malformed server answer, a protocol violation; a connection that broke
/// leaves nobody to tell.
pub fn of_wire(e: &WireError) -> Option<&'static str> {
    match e {
        WireError::OverBudget { .. } => Some(PROGRAM_LIMIT_EXCEEDED),
        WireError::Malformed { .. } => Some(PROTOCOL_VIOLATION),
        e if e.side() == Side::Agent => Some(PROTOCOL_VIOLATION),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn logins_and_wire_errors_map_to_their_codes() {
        let rejected = LoginError::Rejected {
            code: "28P01".into(),
            message: "password authentication failed".into(),
        };
        assert_eq!(of_login(&rejected), INVALID_AUTHORIZATION);
        assert_eq!(of_login(&LoginError::Connect("refused".into())), CONNECTION_FAILURE);
        assert_eq!(of_login(&LoginError::Credential("unset".into())), CONNECTION_FAILURE);
        let malformed = WireError::malformed(Side::Upstream, "bad tag");
        assert_eq!(of_wire(&malformed), Some(PROTOCOL_VIOLATION));
        let agent_gone = WireError::Io {
            side: Side::Agent,
            source: std::io::ErrorKind::ConnectionReset.into(),
        };
        assert_eq!(of_wire(&agent_gone), Some(PROTOCOL_VIOLATION));
        let upstream_gone = WireError::Io {
            side: Side::Upstream,
            source: std::io::ErrorKind::ConnectionReset.into(),
        };
        assert_eq!(of_wire(&upstream_gone), None);
    }
}
