//! DNS messages, parsed apart from acting: an agent's datagram becomes a
//! [`Question`] (exactly one question, nothing else the gateway would have
//! to forward), the upstream's answer is checked against it, and refusals
//! are built. Framing is hickory-proto's; nothing here writes DNS by hand.
use hickory_proto::{
    op::{Edns, Message, MessageType, OpCode, Query, ResponseCode},
    rr::{DNSClass, Name, RData, RecordType},
};

use crate::audit::DnsAnswer;

/// Why a message from the agent is not a question the gateway serves.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Malformed {
    /// Not a DNS message at all (no id can even be read back).
    #[error("not a DNS message ({0})")]
    Unreadable(String),
    /// A DNS message, but not one plain question.
    #[error("{reason}")]
    Shape {
        /// Its id, for the FORMERR answer.
        id: u16,
        /// What is wrong with it.
        reason: String,
    },
}

/// One question, as the agent asked it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Question {
    /// The agent's message id.
    pub id: u16,
    /// The name as hickory holds it (sent upstream as it was asked).
    pub name: Name,
    /// The name as text: lower case, no final dot, odd bytes as `\DDD`.
    pub text: String,
    /// The labels' raw bytes (for the guards).
    pub labels: Vec<Vec<u8>>,
    /// The record type.
    pub qtype: RecordType,
    /// The class (IN, almost always).
    pub qclass: DNSClass,
    /// Recursion desired.
    pub recursion_desired: bool,
    /// Checking disabled (DNSSEC).
    pub checking_disabled: bool,
    /// EDNS: the agent's payload size and DO bit, when it sent an OPT record.
    pub edns: Option<(u16, bool)>,
}

/// A label as text: letters lower-cased, anything but letters, digits, `-`
/// and `_` written `\DDD` (so the text names exactly the bytes).
fn label_text(label: &[u8], out: &mut String) {
    for &b in label {
        match b {
            b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' => out.push(char::from(b)),
            b'A'..=b'Z' => out.push(char::from(b.to_ascii_lowercase())),
            _ => out.push_str(&format!("\\{b:03}")),
        }
    }
}

/// Parses an agent's message into its one question.
pub fn parse_question(bytes: &[u8]) -> Result<Question, Malformed> {
    let msg = Message::from_vec(bytes).map_err(|e| Malformed::Unreadable(e.to_string()))?;
    let id = msg.metadata.id;
    let shape = |reason: &str| Malformed::Shape {
        id,
        reason: reason.to_owned(),
    };
    if msg.metadata.message_type != MessageType::Query || msg.metadata.op_code != OpCode::Query {
        return Err(shape("only standard queries are served"));
    }
    if msg.queries.len() != 1 {
        return Err(shape("a query must hold exactly one question"));
    }
    // Records in a query would travel upstream unexamined: a channel.
    if !msg.answers.is_empty() || !msg.authorities.is_empty() || !msg.additionals.is_empty() || msg.signature.is_some()
    {
        return Err(shape("a query may carry no records besides EDNS"));
    }
    let q = &msg.queries[0];
    let name = q.name().clone();
    let labels: Vec<Vec<u8>> = name.iter().map(<[u8]>::to_vec).collect();
    let mut text = String::with_capacity(name.len());
    for (i, label) in labels.iter().enumerate() {
        if i > 0 {
            text.push('.');
        }
        label_text(label, &mut text);
    }
    Ok(Question {
        id,
        name,
        text,
        labels,
        qtype: q.query_type(),
        qclass: q.query_class(),
        recursion_desired: msg.metadata.recursion_desired,
        checking_disabled: msg.metadata.checking_disabled,
        edns: msg.edns.as_ref().map(|e| (e.max_payload(), e.flags().dnssec_ok)),
    })
}

/// The record type as policies see it (`A`, `TXT`, `TYPE65280`).
pub fn qtype_text(t: RecordType) -> String {
    match t {
        RecordType::Unknown(n) => format!("TYPE{n}"),
        other => other.to_string(),
    }
}

/// The query the gateway sends upstream: the agent's question and flags
/// under an id of the gateway's own, and EDNS reduced to its payload size
/// and DO bit (options such as client subnet or cookies would carry the
/// agent's bytes to a server of its choosing).
pub fn upstream_query(q: &Question, id: u16) -> Result<Vec<u8>, String> {
    let mut msg = Message::new(id, MessageType::Query, OpCode::Query);
    msg.metadata.recursion_desired = q.recursion_desired;
    msg.metadata.checking_disabled = q.checking_disabled;
    let mut query = Query::query(q.name.clone(), q.qtype);
    query.set_query_class(q.qclass);
    msg.add_query(query);
    if let Some((payload, dnssec_ok)) = q.edns {
        let mut edns = Edns::new();
        edns.set_max_payload(payload.min(4096));
        edns.set_dnssec_ok(dnssec_ok);
        msg.set_edns(edns);
    }
    msg.to_vec().map_err(|e| format!("building the upstream query: {e}"))
}

/// What an upstream answer says, once checked against the question.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    /// Its response code.
    pub rcode: ResponseCode,
    /// The answer section, as text.
    pub answers: Vec<DnsAnswer>,
    /// The addresses in it, with their TTLs.
    pub addresses: Vec<(std::net::IpAddr, u32)>,
}

/// Checks an upstream's answer to the query sent with `id` for `q`, and
/// reads it. A reply to another id or question is the upstream's fault.
pub fn read_answer(bytes: &[u8], q: &Question, id: u16) -> Result<Answer, String> {
    let msg = Message::from_vec(bytes).map_err(|e| format!("upstream answer unreadable: {e}"))?;
    if msg.metadata.id != id || msg.metadata.message_type != MessageType::Response {
        return Err("upstream answer does not answer the query sent".into());
    }
    let same = msg.queries.len() == 1
        && msg.queries[0].query_type() == q.qtype
        && msg.queries[0].name().to_lowercase() == q.name.to_lowercase();
    if !same {
        return Err("upstream answer is for another question".into());
    }
    Ok(describe(&msg))
}

/// What an answer says: its code, its answer section as text and the
/// addresses in it.
pub fn describe(msg: &Message) -> Answer {
    let mut answers = Vec::with_capacity(msg.answers.len());
    let mut addresses = Vec::new();
    for r in &msg.answers {
        match &r.data {
            RData::A(a) => addresses.push((std::net::IpAddr::V4(a.0), r.ttl)),
            RData::AAAA(a) => addresses.push((std::net::IpAddr::V6(a.0), r.ttl)),
            _ => {}
        }
        let mut name = String::new();
        for (i, label) in r.name.iter().enumerate() {
            if i > 0 {
                name.push('.');
            }
            label_text(label, &mut name);
        }
        answers.push(DnsAnswer {
            name,
            rtype: qtype_text(r.record_type()),
            data: r.data.to_string(),
            ttl: r.ttl,
        });
    }
    Answer {
        rcode: msg.metadata.response_code,
        answers,
        addresses,
    }
}

/// The answer bytes with the agent's id put back.
pub fn with_id(mut bytes: Vec<u8>, id: u16) -> Vec<u8> {
    if bytes.len() >= 2 {
        bytes[..2].copy_from_slice(&id.to_be_bytes());
    }
    bytes
}

/// The mnemonic of a response code as `dig` prints it (`NOERROR`,
/// `REFUSED`), or `RCODE<n>` for codes without one: a stable audit value.
pub fn rcode_name(rcode: ResponseCode) -> String {
    let name = match rcode {
        ResponseCode::NoError => "NOERROR",
        ResponseCode::FormErr => "FORMERR",
        ResponseCode::ServFail => "SERVFAIL",
        ResponseCode::NXDomain => "NXDOMAIN",
        ResponseCode::NotImp => "NOTIMP",
        ResponseCode::Refused => "REFUSED",
        ResponseCode::YXDomain => "YXDOMAIN",
        ResponseCode::YXRRSet => "YXRRSET",
        ResponseCode::NXRRSet => "NXRRSET",
        ResponseCode::NotAuth => "NOTAUTH",
        ResponseCode::NotZone => "NOTZONE",
        ResponseCode::BADVERS => "BADVERS",
        other => return format!("RCODE{}", u16::from(other)),
    };
    name.to_owned()
}

/// An answer the gateway gives itself: `rcode`, the question echoed (when
/// there is one), nothing else.
pub fn refusal(id: u16, q: Option<&Question>, rcode: ResponseCode) -> Vec<u8> {
    let mut msg = Message::error_msg(id, OpCode::Query, rcode);
    if let Some(q) = q {
        msg.metadata.recursion_desired = q.recursion_desired;
        msg.metadata.recursion_available = true;
        let mut query = Query::query(q.name.clone(), q.qtype);
        query.set_query_class(q.qclass);
        msg.add_query(query);
    }
    // A header and one question always encode; should it ever fail, a bare
    // header with the code still tells the resolver.
    msg.to_vec().unwrap_or_else(|_| {
        let mut header = vec![0u8; 12];
        header[..2].copy_from_slice(&id.to_be_bytes());
        header[2] = 0x80;
        header[3] = rcode.low();
        header
    })
}

#[cfg(test)]
mod tests;
