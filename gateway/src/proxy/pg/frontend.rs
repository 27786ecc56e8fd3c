//! The agent's messages after startup, parsed into typed values before the
//! request filter acts on them (parse apart from acting): every length,
//! count and string of an untrusted frame is checked here, and the filter
//! only reads fields. Counts are unsigned 16-bit, as the server reads them.
//! Query text and the names of statements and portals stay bytes: they are
//! in the session's client_encoding (see `encoding`), not always UTF-8.
use bytes::{BufMut, BytesMut};

use super::wire::{self, Cursor, Frame, WireError};
use crate::types::Side;

/// Who sent the bytes parsed here.
const SIDE: Side = Side::Agent;

/// What a Describe or Close names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Named {
    /// A prepared statement (`S`).
    Statement,
    /// A portal (`P`).
    Portal,
}

impl Named {
    fn parse(byte: u8, message: &str) -> Result<Self, WireError> {
        match byte {
            b'S' => Ok(Self::Statement),
            b'P' => Ok(Self::Portal),
            other => Err(WireError::malformed(SIDE, format!("{message} of kind {other}"))),
        }
    }

    fn byte(self) -> u8 {
        match self {
            Self::Statement => b'S',
            Self::Portal => b'P',
        }
    }
}

/// A Bind: a portal from a prepared statement and its parameters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bind<'a> {
    /// The portal made (`""`: the unnamed one).
    pub portal: &'a [u8],
    /// The prepared statement bound.
    pub statement: &'a [u8],
    /// Parameter format codes: none (all text), one (for all), or one each.
    pub formats: Vec<i16>,
    /// Parameter values; `None` is NULL.
    pub params: Vec<Option<&'a [u8]>>,
    /// Result column format codes.
    pub result_formats: Vec<i16>,
}

impl Bind<'_> {
    /// Whether parameter `i` is sent in binary.
    pub fn binary(&self, i: usize) -> bool {
        match self.formats.as_slice() {
            [] => false,
            [one] => *one == 1,
            many => many.get(i).is_some_and(|f| *f == 1),
        }
    }
}

/// One message from the agent after startup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frontend<'a> {
    /// A simple query (one or more statements).
    Query {
        /// The SQL.
        sql: &'a [u8],
    },
    /// Parse: prepares `sql` as `name`.
    Parse {
        /// The statement's name (`""`: the unnamed one).
        name: &'a [u8],
        /// The SQL.
        sql: &'a [u8],
        /// Parameter type oids given (0: left to the server).
        param_types: Vec<u32>,
    },
    /// Bind.
    Bind(Bind<'a>),
    /// Describe a statement or portal.
    Describe {
        /// Which kind.
        kind: Named,
        /// Its name.
        name: &'a [u8],
    },
    /// Execute a portal.
    Execute {
        /// The portal.
        portal: &'a [u8],
        /// Most rows to return (0: all).
        max_rows: i32,
    },
    /// Close a statement or portal.
    Close {
        /// Which kind.
        kind: Named,
        /// Its name.
        name: &'a [u8],
    },
    /// Sync.
    Sync,
    /// Flush.
    Flush,
    /// Terminate.
    Terminate,
    /// The fast-path function call (refused; its body is not read).
    FunctionCall(&'a [u8]),
    /// CopyData, passed as it is.
    CopyData(&'a [u8]),
    /// CopyDone.
    CopyDone,
    /// CopyFail, with the agent's reason (passed as it is).
    CopyFail(&'a [u8]),
}

/// A count, read as the server does (unsigned 16-bit).
fn count(c: &mut Cursor<'_>) -> Result<usize, WireError> {
    Ok(usize::from(c.i16()? as u16))
}

/// Parses one whole frame from the agent.
pub fn parse(frame: &Frame) -> Result<Frontend<'_>, WireError> {
    let mut c = Cursor::new(frame.body(), SIDE);
    let message = match frame.tag {
        b'Q' => Frontend::Query { sql: c.cbytes()? },
        b'P' => {
            let name = c.cbytes()?;
            let sql = c.cbytes()?;
            let n = count(&mut c)?;
            let param_types = (0..n).map(|_| c.i32().map(|t| t as u32)).collect::<Result<_, _>>()?;
            Frontend::Parse { name, sql, param_types }
        }
        b'B' => {
            let portal = c.cbytes()?;
            let statement = c.cbytes()?;
            let formats = (0..count(&mut c)?).map(|_| c.i16()).collect::<Result<_, _>>()?;
            let n = count(&mut c)?;
            let mut params = Vec::with_capacity(n.min(c.remaining() / 4));
            for _ in 0..n {
                params.push(match c.i32()? {
                    -1 => None,
                    len if len < 0 => return Err(WireError::malformed(SIDE, format!("parameter length {len}"))),
                    len => Some(c.bytes(len as usize)?),
                });
            }
            let result_formats = (0..count(&mut c)?).map(|_| c.i16()).collect::<Result<_, _>>()?;
            Frontend::Bind(Bind {
                portal,
                statement,
                formats,
                params,
                result_formats,
            })
        }
        b'D' => Frontend::Describe {
            kind: Named::parse(c.u8()?, "Describe")?,
            name: c.cbytes()?,
        },
        b'E' => Frontend::Execute {
            portal: c.cbytes()?,
            max_rows: c.i32()?,
        },
        b'C' => Frontend::Close {
            kind: Named::parse(c.u8()?, "Close")?,
            name: c.cbytes()?,
        },
        b'S' => Frontend::Sync,
        b'H' => Frontend::Flush,
        b'X' => Frontend::Terminate,
        b'F' => return Ok(Frontend::FunctionCall(frame.body())),
        b'd' => return Ok(Frontend::CopyData(frame.body())),
        b'c' => Frontend::CopyDone,
        b'f' => return Ok(Frontend::CopyFail(frame.body())),
        other => {
            return Err(WireError::malformed(
                SIDE,
                format!("unexpected message type {:?} after startup", other as char),
            ))
        }
    };
    c.end()?;
    Ok(message)
}

impl Frontend<'_> {
    /// Writes the message as the agent would have sent it (for round-trip
    /// checks of the parser: `parse` then `encode` gives back the frame).
    pub fn encode(&self, out: &mut BytesMut) {
        let cstr = |b: &mut BytesMut, s: &[u8]| wire::put_cstr(b, s);
        let i16s = |b: &mut BytesMut, v: &[i16]| {
            b.put_u16(v.len() as u16);
            v.iter().for_each(|x| b.put_i16(*x));
        };
        match self {
            Self::Query { sql } => wire::message(out, b'Q', |b| cstr(b, sql)),
            Self::Parse { name, sql, param_types } => wire::message(out, b'P', |b| {
                cstr(b, name);
                cstr(b, sql);
                b.put_u16(param_types.len() as u16);
                param_types.iter().for_each(|t| b.put_u32(*t));
            }),
            Self::Bind(bind) => wire::message(out, b'B', |b| {
                cstr(b, bind.portal);
                cstr(b, bind.statement);
                i16s(b, &bind.formats);
                b.put_u16(bind.params.len() as u16);
                for p in &bind.params {
                    match p {
                        None => b.put_i32(-1),
                        Some(v) => {
                            b.put_i32(v.len() as i32);
                            b.put_slice(v);
                        }
                    }
                }
                i16s(b, &bind.result_formats);
            }),
            Self::Describe { kind, name } | Self::Close { kind, name } => {
                let tag = if matches!(self, Self::Describe { .. }) {
                    b'D'
                } else {
                    b'C'
                };
                wire::message(out, tag, |b| {
                    b.put_u8(kind.byte());
                    cstr(b, name);
                })
            }
            Self::Execute { portal, max_rows } => wire::message(out, b'E', |b| {
                cstr(b, portal);
                b.put_i32(*max_rows);
            }),
            Self::Sync => wire::message(out, b'S', |_| {}),
            Self::Flush => wire::message(out, b'H', |_| {}),
            Self::Terminate => wire::message(out, b'X', |_| {}),
            Self::FunctionCall(body) => wire::message(out, b'F', |b| b.put_slice(body)),
            Self::CopyData(body) => wire::message(out, b'd', |b| b.put_slice(body)),
            Self::CopyDone => wire::message(out, b'c', |_| {}),
            Self::CopyFail(body) => wire::message(out, b'f', |b| b.put_slice(body)),
        }
    }
}

#[cfg(test)]
mod tests;
