//! The response filter of a PostgreSQL session (upstream -> agent). Every
//! message the agent sent that expects an answer was queued by the request
//! side, in order; each answer is matched to its entry. That is how a
//! DataRow is tied to its statement's columns and masking, how a refusal's
//! parse error is turned into the policy's 42501, and how a statement's
//! audit event gets its rows, errors and duration. Messages the gateway
//! does not change are copied through as they came.
use std::{
    collections::{HashMap, VecDeque},
    sync::{Arc, Mutex},
};

use bytes::BytesMut;
use postgres_protocol::message::backend::Message;

use super::{
    columns::MaskedColumns,
    columns::Shape,
    encoding::{ClientEncoding, EncodingCell},
    login::error_text,
    wire::{self, complete_len, WireError},
    Expect, Run, Statement,
};
use crate::{audit::Ran, types::Side};

const SIDE: Side = Side::Upstream;

/// A statement that finished, with how.
pub type Finished = (Box<Run>, Ran);

/// What the response side needs of its session: the masked columns, the
/// nonce that marks the statements the gateway substituted, and where the
/// client_encoding the server reports goes. (Not the whole session: the
/// filter is tested on bytes alone.)
pub struct SessionView<'a> {
    /// Columns the target's rules mask.
    pub masked: &'a MaskedColumns,
    /// The session's nonce.
    pub nonce: &'a str,
    /// The session's client_encoding, kept as the server reports it.
    pub encoding: &'a EncodingCell,
}

/// The `client_encoding` a ParameterStatus reports, if it is that one.
pub fn reported_encoding(raw: &[u8]) -> Result<Option<ClientEncoding>, WireError> {
    let mut c = wire::Cursor::new(raw.get(5..).unwrap_or_default(), SIDE);
    let name = c.cbytes()?;
    let value = c.cbytes()?;
    Ok((name == b"client_encoding").then(|| ClientEncoding::named(&String::from_utf8_lossy(value))))
}

/// Result shapes and session status, as the response side knows them.
#[derive(Default)]
pub struct Responses {
    /// Columns of the result a simple query is sending.
    shape: Option<Arc<Shape>>,
    /// Columns of each described portal.
    portals: HashMap<Vec<u8>, Arc<Shape>>,
    /// Transaction status from the last ReadyForQuery.
    pub status: u8,
}

fn parse(buf: &mut BytesMut) -> Result<Message, WireError> {
    match Message::parse(buf) {
        Ok(Some(m)) => Ok(m),
        Ok(None) => Err(WireError::malformed(SIDE, "incomplete message")),
        Err(e) => Err(WireError::malformed(SIDE, e.to_string())),
    }
}

/// Rows a CommandComplete tag reports (`INSERT 0 5`, `UPDATE 3`, `SELECT 7`).
fn tag_rows(tag: &str) -> Option<u64> {
    tag.rsplit(' ').next()?.parse().ok()
}

/// Rewrites an ErrorResponse or NoticeResponse so it cannot carry what the
/// results would have masked: detectors run on its text, and for a statement
/// that touches masked columns quoted values are withheld along with the
/// detail line (`Key (email)=(...) already exists`).
fn scrub_notice(
    tag: u8,
    mut fields: postgres_protocol::message::backend::ErrorFields<'_>,
    st: &Statement,
    out: &mut BytesMut,
) -> Result<(), WireError> {
    use fallible_iterator::FallibleIterator;
    let mut kept: Vec<(u8, Vec<u8>)> = Vec::new();
    while let Some(f) = fields.next().map_err(|e| WireError::malformed(SIDE, e.to_string()))? {
        let mut value = f.value_bytes().to_vec();
        if matches!(f.type_(), b'M' | b'D' | b'H' | b'W' | b'q') {
            if let Some(m) = &st.detectors {
                value = m.mask(&value).0;
            }
            if st.computed {
                if f.type_() == b'D' {
                    value = b"(detail withheld: the statement touches masked columns)".to_vec();
                } else {
                    value = QUOTED.replace_all(&value, &b"\"[REDACTED]\""[..]).into_owned();
                }
            }
        }
        kept.push((f.type_(), value));
    }
    wire::message(out, tag, |b| {
        for (kind, value) in &kept {
            b.extend_from_slice(&[*kind]);
            wire::put_cstr(b, value);
        }
        b.extend_from_slice(&[0]);
    });
    Ok(())
}

static QUOTED: std::sync::LazyLock<regex::bytes::Regex> =
    std::sync::LazyLock::new(|| regex::bytes::Regex::new(r#""[^"]*""#).expect("static regex"));

fn mismatch(tag: char) -> WireError {
    WireError::malformed(SIDE, format!("message {tag:?} did not parse as itself"))
}

fn front_run(pending: &mut VecDeque<Expect>) -> Option<&mut Run> {
    match pending.front_mut() {
        Some(Expect::Query(run) | Expect::Execute(run)) => Some(run),
        _ => None,
    }
}

impl Responses {
    /// Handles every whole message in `buf`, appending what the agent gets
    /// to `out` and finished statements to `done`.
    pub fn handle(
        &mut self,
        s: &SessionView<'_>,
        buf: &mut BytesMut,
        pending: &Mutex<VecDeque<Expect>>,
        out: &mut BytesMut,
        done: &mut Vec<Finished>,
    ) -> Result<(), WireError> {
        let mut pending = pending.lock().unwrap_or_else(|p| p.into_inner());
        while let Some(total) = complete_len(buf, SIDE)? {
            let tag = buf[0];
            match tag {
                b'D' => self.data_row(s, buf, total, &mut pending, out)?,
                b'T' => {
                    let raw = buf.split_to(total);
                    let (body, encoding) = (&raw[5..], s.encoding.get());
                    match pending.pop_front() {
                        Some(Expect::DescribePortal {
                            portal,
                            swallow,
                            computed,
                        }) => {
                            let mut scratch = BytesMut::new();
                            let target = if swallow { &mut scratch } else { &mut *out };
                            let shape = Shape::describe(body, s.masked, computed, encoding, target)?;
                            self.portals.insert(portal, Arc::new(shape));
                        }
                        Some(Expect::DescribeStatement { computed }) => {
                            Shape::describe(body, s.masked, computed, encoding, out)?;
                        }
                        Some(Expect::Query(run)) => {
                            let computed = run.statement.computed;
                            pending.push_front(Expect::Query(run));
                            self.shape = Some(Arc::new(Shape::describe(body, s.masked, computed, encoding, out)?));
                        }
                        _ => return Err(WireError::malformed(SIDE, "RowDescription nobody asked for")),
                    }
                }
                b'n' => match pending.pop_front() {
                    Some(Expect::DescribePortal { portal, swallow, .. }) => {
                        self.portals.insert(portal, Arc::new(Shape::default()));
                        let raw = buf.split_to(total);
                        if !swallow {
                            out.extend_from_slice(&raw);
                        }
                    }
                    Some(Expect::DescribeStatement { .. }) => out.extend_from_slice(&buf.split_to(total)),
                    _ => return Err(WireError::malformed(SIDE, "NoData nobody asked for")),
                },
                b'1' | b'2' | b'3' => {
                    let ok = matches!(
                        (tag, pending.pop_front()),
                        (b'1', Some(Expect::Parse(None))) | (b'2', Some(Expect::Bind)) | (b'3', Some(Expect::Close))
                    );
                    if !ok {
                        return Err(WireError::malformed(SIDE, format!("{:?} out of order", tag as char)));
                    }
                    out.extend_from_slice(&buf.split_to(total));
                }
                b'C' | b'I' | b's' => {
                    let raw = buf.split_to(total);
                    let rows = (tag == b'C')
                        .then(|| std::str::from_utf8(&raw[5..total - 1]).ok().and_then(tag_rows))
                        .flatten();
                    match pending.front_mut() {
                        Some(Expect::Query(run)) => {
                            self.shape = None;
                            if let Some(n) = rows {
                                run.affected = Some(run.affected.unwrap_or(0) + n);
                            }
                        }
                        Some(Expect::Execute(_)) => {
                            if let Some(Expect::Execute(mut run)) = pending.pop_front() {
                                run.affected = rows;
                                done.push((run, if tag == b's' { Ran::Suspended } else { Ran::Ok }));
                            }
                        }
                        _ => return Err(WireError::malformed(SIDE, "command completion nobody asked for")),
                    }
                    out.extend_from_slice(&raw);
                }
                b'E' => self.error(s, buf, &mut pending, out, done)?,
                b'Z' => {
                    let raw = buf.split_to(total);
                    self.status = raw.get(5).copied().unwrap_or(b'I');
                    // Whatever was outstanding before the Sync was answered or skipped.
                    loop {
                        match pending.pop_front() {
                            Some(Expect::Query(run)) => {
                                let how = match (&run.statement.denial, &run.error) {
                                    (Some(_), _) => Ran::Denied,
                                    (None, Some(_)) => Ran::Error,
                                    (None, None) => Ran::Ok,
                                };
                                done.push((run, how));
                                break;
                            }
                            Some(Expect::Sync) | None => break,
                            Some(_) => {}
                        }
                    }
                    out.extend_from_slice(&raw);
                }
                b'H' => {
                    let binary = buf.get(5).copied() == Some(1);
                    if binary && front_run(&mut pending).is_some_and(|r| r.statement.detectors.is_some()) {
                        return Err(WireError::malformed(SIDE, "binary COPY out of a masked session"));
                    }
                    out.extend_from_slice(&buf.split_to(total));
                }
                b'd' => match front_run(&mut pending) {
                    Some(run) if run.statement.detectors.is_some() => {
                        let raw = buf.split_to(total);
                        let masker = run.statement.detectors.clone();
                        let (masked, found) = masker
                            .as_deref()
                            .map_or((raw[5..].to_vec(), Vec::new()), |m| m.mask(&raw[5..]));
                        for f in found {
                            *run.masked.entry(format!("detector {}", f.detector)).or_default() += 1;
                        }
                        wire::message(out, b'd', |b| b.extend_from_slice(&masked));
                    }
                    _ => out.extend_from_slice(&buf.split_to(total)),
                },
                b'N' => match front_run(&mut pending).map(|r| r.statement.clone()) {
                    Some(st) if st.detectors.is_some() || st.computed => {
                        let Message::NoticeResponse(body) = parse(buf)? else {
                            return Err(mismatch('N'));
                        };
                        scrub_notice(b'N', body.fields(), &st, out)?;
                    }
                    _ => out.extend_from_slice(&buf.split_to(total)),
                },
                b'S' => {
                    let raw = buf.split_to(total);
                    if let Some(e) = reported_encoding(&raw)? {
                        s.encoding.set(e);
                    }
                    out.extend_from_slice(&raw);
                }
                // Copy start/end, notifications, parameter descriptions.
                b'G' | b'c' | b'A' | b't' => out.extend_from_slice(&buf.split_to(total)),
                other => {
                    return Err(WireError::malformed(
                        SIDE,
                        format!("unexpected message type {:?} in a session", other as char),
                    ))
                }
            }
        }
        Ok(())
    }

    fn data_row(
        &mut self,
        s: &SessionView<'_>,
        buf: &mut BytesMut,
        total: usize,
        pending: &mut VecDeque<Expect>,
        out: &mut BytesMut,
    ) -> Result<(), WireError> {
        let (shape, run) = match pending.front_mut() {
            Some(Expect::Query(run)) => (self.shape.clone(), run),
            Some(Expect::Execute(run)) => (self.portals.get(&run.portal).cloned(), run),
            _ => return Err(WireError::malformed(SIDE, "DataRow nobody asked for")),
        };
        run.rows += 1;
        let detectors = run.statement.detectors.clone();
        let must_mask = detectors.is_some() || !s.masked.is_empty();
        match shape {
            Some(shape) if !shape.passes(detectors.as_deref()) => {
                let Message::DataRow(row) = parse(buf)? else {
                    return Err(mismatch('D'));
                };
                shape.mask_row(&row, detectors.as_deref(), &mut run.masked, out)
            }
            Some(_) => {
                out.extend_from_slice(&buf.split_to(total));
                Ok(())
            }
            None if !must_mask => {
                out.extend_from_slice(&buf.split_to(total));
                Ok(())
            }
            // Rows whose columns were never described cannot be masked: fail closed.
            None => Err(WireError::malformed(
                SIDE,
                "rows without a description in a masked session",
            )),
        }
    }

    fn error(
        &mut self,
        s: &SessionView<'_>,
        buf: &mut BytesMut,
        pending: &mut VecDeque<Expect>,
        out: &mut BytesMut,
        done: &mut Vec<Finished>,
    ) -> Result<(), WireError> {
        let total = complete_len(buf, SIDE)?.unwrap_or(0);
        let raw = buf.split_to(total);
        let Message::ErrorResponse(body) = parse(&mut BytesMut::from(&raw[..]))? else {
            return Err(mismatch('E'));
        };
        let (code, message) = error_text(body.fields());
        let ours = message.contains(s.nonce);
        let scrub = front_run(pending).map(|r| r.statement.clone());
        let forward = |denial: Option<&wire::ErrorFields>, out: &mut BytesMut| match (denial, &scrub) {
            (Some(d), _) if ours => {
                d.write(out);
                Ok(())
            }
            (_, Some(st)) if st.detectors.is_some() || st.computed => scrub_notice(b'E', body.fields(), st, out),
            _ => {
                out.extend_from_slice(&raw);
                Ok::<_, WireError>(())
            }
        };
        let text = format!("{code}: {message}");
        match pending.pop_front() {
            Some(Expect::Query(mut run)) => {
                // A simple query goes on to its ReadyForQuery.
                forward(run.statement.denial.as_ref(), out)?;
                self.shape = None;
                run.error = Some(text);
                pending.push_front(Expect::Query(run));
                return Ok(());
            }
            Some(Expect::Parse(Some(run))) => {
                forward(run.statement.denial.as_ref(), out)?;
                done.push((run, Ran::Denied));
            }
            Some(Expect::Execute(mut run)) => {
                // Only an execution refused by a limit has a denial here
                // (one denied at Parse never gets this far).
                let refused = ours && run.statement.denial.is_some();
                forward(run.statement.denial.as_ref(), out)?;
                run.error = Some(text);
                done.push((run, if refused { Ran::Denied } else { Ran::Error }));
            }
            Some(Expect::Sync) => {
                forward(None, out)?;
                pending.push_front(Expect::Sync);
                return Ok(());
            }
            Some(_) => forward(None, out)?,
            None => {
                // Not an answer to anything: a FATAL the server sends on its own.
                forward(None, out)?;
                return Ok(());
            }
        }
        // After an error the server skips everything up to the next Sync.
        while let Some(next) = pending.front() {
            if matches!(next, Expect::Sync) {
                break;
            }
            if let Some(Expect::Parse(Some(run))) = pending.pop_front() {
                done.push((run, Ran::Denied));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
