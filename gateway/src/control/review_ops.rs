//! Approvals on the control socket: list, show, approve and deny held
//! requests. The person is the socket peer (root or a member of the admin
//! group); an approval with a grant scope also adds the grant.
use super::{ControlState, GrantRequest, Response};
use crate::review::{Person, Scope};

/// The socket peer as a person.
pub fn unix_person(uid: u32) -> Person {
    let user = nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid))
        .ok()
        .flatten()
        .map(|u| u.name);
    Person {
        issuer: "unix".into(),
        subject: format!("uid:{uid}"),
        name: format!("{} (uid {uid})", user.as_deref().unwrap_or("?")),
        email: None,
        unix_user: user,
    }
}

/// `interlock approvals list`.
pub fn list(state: &ControlState) -> Response {
    Response::Reviews {
        reviews: state.reviews.list(),
    }
}

/// `interlock approvals show ID`.
pub fn show(state: &ControlState, id: &str) -> Response {
    match state.reviews.get(id) {
        Some(review) => Response::Review {
            review: Box::new(review),
        },
        None => Response::Error {
            message: format!("no review {id}"),
        },
    }
}

/// `interlock approvals approve ID [--for-identical M | --grant M]`.
pub async fn approve(state: &ControlState, id: &str, scope: Scope, person: Person) -> Response {
    let by = person.name.clone();
    let (review, done) = match state.reviews.approve(id, person, scope).await {
        Ok(ok) => ok,
        Err(e) => return Response::Error { message: e.to_string() },
    };
    if !done {
        let left = review.approvals_needed as usize - review.approvals.len();
        return Response::Ok {
            message: format!("approval of {id} recorded; {left} more distinct approver(s) needed"),
        };
    }
    if let Scope::Grant { minutes } = scope {
        let grant = GrantRequest {
            agent: review.agent.clone(),
            target: review.target.clone(),
            actions: vec![review.action.clone()],
            seconds: minutes * 60,
            reason: format!("approved review {id}"),
        };
        if let Response::Error { message } = super::grant_ops::add(state, grant, &by).await {
            return Response::Error {
                message: format!("{id} approved, but the grant failed: {message}"),
            };
        }
    }
    Response::Ok {
        message: format!("{id} approved; the held request proceeds"),
    }
}

/// `interlock approvals deny ID --reason R`.
pub async fn deny(state: &ControlState, id: &str, reason: String, person: Person) -> Response {
    match state.reviews.deny(id, person, reason).await {
        Ok(_) => Response::Ok {
            message: format!("{id} denied; the held request is refused"),
        },
        Err(e) => Response::Error { message: e.to_string() },
    }
}
