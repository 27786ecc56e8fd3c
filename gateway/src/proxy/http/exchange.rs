//! One HTTP exchange through its phases: request filter (policy), upstream
//! request filter (credentials, request masking), upstream, response filter
//! (masking), logging (the `http_exchange` event, recorded before the
//! response goes to the agent).
use std::{sync::Arc, time::Instant};

use http::{header, Request, Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Incoming;

use super::{capture, failure::Failure, forward, headers, json_response, mask, upgrade, vet, Body, HttpSession};
use crate::{
    audit::{self, Event, ExchangeBodies, HttpExchangeEvent},
    config::TargetProtocol,
    masking::MaskedValue,
    policy::{ActionKind, Decision},
    proxy::judge::{self, Judgement, Protocol as _},
};

/// What the allowed phases leave for the exchange's event.
#[derive(Default)]
struct Recorded {
    /// The target's credential was injected.
    injected: bool,
    /// What request masking replaced.
    masked_request: Vec<MaskedValue>,
    /// The bodies, when the whole response was at hand.
    bodies: Option<ExchangeBodies>,
    /// What response masking replaced, once it has.
    masked_response: mask::Findings,
}

/// Serves one request: the agent gets the response only once the
/// exchange's event is recorded.
pub(super) async fn handle(mut req: Request<Incoming>, s: &Arc<HttpSession>) -> Response<Body> {
    let started = Instant::now();
    let time = audit::now();
    let exchange = s.exchanges.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
    let method = req.method().to_string();
    let vetted = vet::vet(&mut req, s).and_then(|path| match s.ctx.limits.admit_request(&s.agent) {
        Ok(()) => Ok(path),
        Err(limited) => Err(vet::Vetoed {
            status: StatusCode::TOO_MANY_REQUESTS,
            reason: limited.reason,
            record: limited.record,
        }),
    });
    let path = vetted.clone().unwrap_or_else(|_| req.uri().path().to_owned());
    let mut upstream_error = None;
    let mut recorded = Recorded::default();
    let (decision, response) = match vetted {
        Err(vetoed) => {
            tracing::debug!(conn = %s.conn_id, target = %s.target.name, "request refused: {}", vetoed.reason);
            let body =
                serde_json::json!({"error": {"type": "gateway", "target": s.target.name, "message": vetoed.reason}});
            let mut response = json_response(vetoed.status, body);
            if vetoed.status == StatusCode::TOO_MANY_REQUESTS {
                response
                    .headers_mut()
                    .insert(header::RETRY_AFTER, http::HeaderValue::from_static("1"));
            }
            if !vetoed.record {
                // Counted into the burst's `limited` event instead.
                return response;
            }
            (Decision::deny(Vec::new(), vetoed.reason), response)
        }
        Ok(_) => {
            let served = decide_and_serve(req, s, &method, &path, exchange, &mut recorded, &mut upstream_error);
            match served.await {
                Ok(done) => done,
                Err(resp) => return resp,
            }
        }
    };
    let event = HttpExchangeEvent {
        time,
        conn_id: s.conn_id,
        agent: s.agent.clone(),
        identity: s.identity.clone(),
        target: s.target.name.clone(),
        method,
        path,
        exchange,
        status: response.status().as_u16(),
        decision,
        credential_injected: recorded.injected,
        masked_request: recorded.masked_request,
        // Nobody reads the response body before this event is recorded but
        // `settle`: what its masker has not found by now goes in a `masked`
        // event when the stream ends, after this one.
        masked_response: recorded.masked_response.for_exchange(),
        upstream_error,
        duration_ms: started.elapsed().as_millis() as u64,
        bodies: recorded.bodies,
    };
    if let Err(e) = s.ctx.events.record(Event::HttpExchange(Box::new(event))).await {
        // The exchange is not in the audit trail: the agent does not get its answer.
        tracing::error!(conn = %s.conn_id, "exchange event not recorded, response withheld: {e}");
        let body = serde_json::json!({"error": {"type": "gateway", "message": e.to_string()}});
        return json_response(StatusCode::SERVICE_UNAVAILABLE, body);
    }
    response
}

/// Policy on a vetted request, then its allowed phases: the decision and
/// the response (`Err`: a body that could not be read, answered as is).
async fn decide_and_serve(
    req: Request<Incoming>,
    s: &Arc<HttpSession>,
    method: &str,
    path: &str,
    exchange: u64,
    recorded: &mut Recorded,
    upstream_error: &mut Option<String>,
) -> Result<(Decision, Response<Body>), Response<Body>> {
    let (req, model, body_size) = mask::body_facts(req.map(|b| b.boxed()), s.spec.llm, &s.ctx.limits.budget).await?;
    // Request filter: policy on this request.
    let action = ActionKind::HttpRequest {
        method: method.to_owned(),
        path: path.to_owned(),
        model,
        body_size,
    };
    let caller = judge::Caller {
        agent: &s.agent,
        identity: &s.identity,
        target: &s.target,
        review_webhook: s.spec.review_webhook.as_deref(),
    };
    // A review holds the agent's call until a person settles it.
    let judged = judge::judge(&s.ctx, &caller, &action, &Http).await;
    let response = if !judged.allowed() {
        Http.refusal(&judged.decision)
    } else {
        let bodies = capture::Bodies::new(s, exchange, path);
        match allowed(req, s, &judged, bodies, recorded).await {
            Ok(resp) => resp,
            Err(failure) => {
                let side = failure.side();
                tracing::info!(conn = %s.conn_id, target = %s.target.name, "{side} error: {failure}");
                *upstream_error = Some(failure.to_string());
                failure.response(&s.target.name)
            }
        }
    };
    Ok((judged.decision, response))
}

/// The phases after an allow: credentials, request masking, upstream,
/// response masking.
async fn allowed(
    mut req: Request<Body>,
    s: &Arc<HttpSession>,
    judged: &Judgement,
    bodies: capture::Bodies,
    recorded: &mut Recorded,
) -> Result<Response<Body>, Failure> {
    let decision = &judged.decision;
    let secret = prepare(&mut req, s).await?;
    // Recorded as injected only once the request went upstream: a failed
    // connect or TLS verification sent nothing.
    let injected = secret.is_some();
    if upgrade::is_upgrade(&req) {
        // WebSocket and other upgrades pass through once allowed.
        let resp = upgrade::forward(req, s).await?;
        recorded.injected = injected;
        return Ok(resp);
    }
    if let Some(plan) = &judged.plan {
        // Prompt redaction: the request body, with the policy's detectors only.
        let seal = |v: &[u8]| s.ctx.sealer.seal(v);
        let (masked_req, fired) = match mask::request(req, plan, &seal, &s.ctx.limits.budget).await {
            Ok(ok) => ok,
            Err(resp) => return Ok(resp),
        };
        req = masked_req;
        recorded.masked_request = fired;
    }
    // Responses are masked with the policy's detectors, and scrubbed of the
    // injected secret should the upstream echo it back.
    let masker = if decision.mask.is_empty() && secret.is_none() {
        None
    } else {
        // Compressed answers cannot be masked: ask for plain ones.
        req.headers_mut().remove(header::ACCEPT_ENCODING);
        Some(
            s.ctx
                .mask_plan(&decision.mask, secret.as_ref().map(|m| m.secret.as_str()))?,
        )
    };
    let req = req.map(|b| bodies.request(b));
    let resp = forward(req, s).await?;
    recorded.injected = injected;
    // Read before masking, which streams without a length: a small body
    // announced by the upstream is still worth its short wait in `settle`.
    let announced = resp
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse().ok());
    let Some(m) = masker else {
        return Ok(settle(resp, bodies, announced, &mut recorded.bodies).await);
    };
    let (events, conn, agent, target, path) = (
        s.ctx.events.clone(),
        s.conn_id,
        s.agent.clone(),
        s.target.name.clone(),
        bodies.path().to_owned(),
    );
    let late = move |fired: Vec<MaskedValue>| {
        tokio::spawn(async move {
            let event = Event::Masked {
                time: audit::now(),
                conn_id: conn,
                agent,
                target,
                path,
                direction: "response".into(),
                detectors: fired,
            };
            if let Err(e) = events.record(event).await {
                tracing::error!("masking event lost: {e}");
            }
        });
    };
    let findings = recorded.masked_response.clone();
    let resp = mask::response(resp, m, &s.ctx.limits.budget, move |fired| findings.finish(fired, late)).await;
    Ok(settle(resp, bodies, announced, &mut recorded.bodies).await)
}

/// The response as it goes to the agent, its bodies in `settled` when they
/// are recorded with the exchange (see [`capture::Bodies::settle`]).
/// `announced` is the upstream's Content-Length: a masker streams without one.
async fn settle(
    resp: Response<Body>,
    bodies: capture::Bodies,
    announced: Option<u64>,
    settled: &mut Option<ExchangeBodies>,
) -> Response<Body> {
    let (parts, body) = resp.into_parts();
    let (body, kept) = bodies.settle(body, announced).await;
    *settled = kept;
    Response::from_parts(parts, body)
}

/// HTTP on the decision path: no checks of its own; a refusal (by policy,
/// by a reviewer, or a review that timed out) is a 403 with the decision in
/// JSON.
struct Http;

impl judge::Protocol for Http {
    type Refusal = Response<Body>;

    fn refusal(&self, decision: &Decision) -> Response<Body> {
        let body = serde_json::json!({
            "error": {
                "type": "policy",
                "outcome": decision.outcome,
                "policies": decision.policies,
                "message": decision.reason,
            }
        });
        json_response(StatusCode::FORBIDDEN, body)
    }
}

/// Strips placeholders and hop-by-hop headers and injects the credential.
/// Returns the injected credential, if one was injected.
async fn prepare(
    req: &mut Request<Body>,
    s: &HttpSession,
) -> Result<Option<Arc<crate::credentials::Material>>, Failure> {
    let upgrading = upgrade::is_upgrade(req);
    headers::strip_hop_by_hop(req.headers_mut(), upgrading);
    let Some(credential) = &s.credential else {
        return Ok(None);
    };
    // Only to an upstream whose identity is established: verified TLS, an
    // operator-set address, or an address inside the target's networks.
    let verified = s.spec.protocol == TargetProtocol::Https
        || s.spec.upstream.is_some()
        || s.spec.cidrs.iter().any(|c| c.contains(&s.upstream.0.ip()));
    if !verified {
        return Err(Failure::Withheld(format!(
            "{} is not an address of target {}",
            s.upstream, s.target.name
        )));
    }
    let headers = req.headers_mut();
    for name in headers::SECRET_HEADERS {
        headers.remove(name);
    }
    if let Some(oauth) = credential.needs_token() {
        let (token, lifetime) = crate::credentials::client_credentials(&s.ctx.net, oauth).await?;
        credential.store_token(token, lifetime)?;
    }
    let material = credential.material()?;
    headers.remove(&material.name);
    headers.insert(material.name.clone(), material.value.clone());
    Ok(Some(material))
}
