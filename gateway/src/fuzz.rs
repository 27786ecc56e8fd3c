//! Entry points for the fuzz targets (`fuzz/`, `cargo xtask fuzz`): every
//! parser that reads agent or upstream bytes, driven from raw input, with
//! the properties each must keep checked (a broken property panics, which
//! the fuzzer reports like a crash). Not an API: hidden from the docs.
#![allow(missing_docs)]

use std::collections::HashMap;

use bytes::BytesMut;

use crate::{
    config::{ColumnRule, ColumnStyle, MaskingConfig},
    masking::{Catalog, MaskPlan, SseMasker, StreamMasker, BUILTIN_NAMES},
    types::Side,
};

/// Protocol detection and TLS ClientHello peeking over any first bytes,
/// whole and cut short.
pub fn detect(data: &[u8]) {
    let whole = crate::detect::classify(data);
    if let Some(crate::detect::Protocol::Tls { sni: Some(sni), .. }) = &whole {
        assert!(sni.len() <= 255, "an SNI longer than DNS allows: {}", sni.len());
    }
    for cut in [1, data.len() / 2, data.len().saturating_sub(1)] {
        let _ = crate::detect::classify(&data[..cut.min(data.len())]);
    }
}

/// A request target as an agent sends it: parsed as a URI, its path
/// normalised. The normal form is a fixed point, starts with '/', has no
/// dot segments or empty segments, and never holds what was refused.
pub fn http_path(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let paths = [
        text.to_string(),
        text.parse::<http::Uri>()
            .map(|u| u.path().to_owned())
            .unwrap_or_default(),
    ];
    for path in paths.iter().filter(|p| !p.is_empty()) {
        for encoded_slashes in [false, true] {
            let Ok(normal) = crate::uri_path::normalise(path, encoded_slashes) else {
                continue;
            };
            let n = normal.as_str();
            if n == "*" {
                continue;
            }
            assert!(n.starts_with('/'), "{path:?} -> {n:?}");
            assert!(!n.contains("//"), "{path:?} -> {n:?}");
            for segment in n.split('/').skip(1) {
                assert!(segment != "." && segment != "..", "{path:?} -> {n:?}");
            }
            if !encoded_slashes {
                let upper = n.to_ascii_uppercase();
                assert!(
                    !upper.contains("%2F") && !upper.contains("%5C") && !n.contains('\\'),
                    "{path:?} -> {n:?}"
                );
            }
            let again = crate::uri_path::normalise(n, encoded_slashes).expect("the normal form is accepted");
            assert_eq!(again.as_str(), n, "not a fixed point: {path:?}");
        }
    }
}

/// Every built-in detector and an injected secret, built once (building
/// compiles the detectors' regexes).
fn plan() -> &'static MaskPlan {
    static PLAN: std::sync::LazyLock<MaskPlan> = std::sync::LazyLock::new(|| {
        let names: Vec<String> = BUILTIN_NAMES.iter().map(|n| (*n).to_owned()).collect();
        Catalog::new(&MaskingConfig::default())
            .plan(&names, Some("sk-fuzz-secret-0123456789"))
            .expect("the built-in detectors make a plan")
    });
    &PLAN
}

/// JSON bodies masked value by value: the result is still JSON.
pub fn mask_json(data: &[u8]) {
    let Ok(mut value) = serde_json::from_slice::<serde_json::Value>(data) else {
        return;
    };
    let _ = plan().mask_json(&mut value);
    let text = serde_json::to_vec(&value).expect("masked JSON serialises");
    serde_json::from_slice::<serde_json::Value>(&text).expect("masked JSON parses");
}

/// Cut points for streaming, from the input's first bytes.
fn cuts(data: &[u8]) -> (Vec<usize>, &[u8]) {
    let (head, rest) = data.split_at(data.len().min(3));
    let mut cuts: Vec<usize> = head.iter().map(|b| usize::from(*b) % (rest.len() + 1)).collect();
    cuts.sort_unstable();
    (cuts, rest)
}

/// A streamed body masks the same however it is cut into chunks (a value
/// split across two reads is caught whole).
pub fn stream_mask(data: &[u8]) {
    let Some(masker) = plan().any.clone() else { return };
    let (cuts, body) = cuts(data);
    let whole = masker.mask(body).0;
    let mut stream = StreamMasker::new(masker);
    let (mut out, mut last) = (Vec::new(), 0);
    for cut in cuts {
        out.extend(stream.push(&body[last..cut]).0);
        last = cut;
    }
    out.extend(stream.push(&body[last..]).0);
    out.extend(stream.finish().0);
    assert_eq!(out, whole, "chunked masking differs from whole masking");
}

/// Server-sent events masked per event, however the stream is cut.
pub fn sse(data: &[u8]) {
    let Some(masker) = plan().any.clone() else { return };
    let (cuts, body) = cuts(data);
    let mut whole = SseMasker::new(masker.clone());
    let mut expected = whole.push(body);
    expected.extend(whole.finish());
    let mut stream = SseMasker::new(masker);
    let (mut out, mut last) = (Vec::new(), 0);
    for cut in cuts {
        out.extend(stream.push(&body[last..cut]));
        last = cut;
    }
    out.extend(stream.push(&body[last..]));
    out.extend(stream.finish());
    assert_eq!(out, expected, "chunked event masking differs");
}

/// PostgreSQL frontend bytes: the startup-phase message, then tagged
/// messages cut from the stream the way the gateway cuts them, each parsed
/// as the request filter parses it (a parsed one must encode back to the
/// same bytes).
pub fn pg_frontend(data: &[u8]) {
    use crate::proxy::pg::wire;
    let _ = wire::parse_hello(data);
    let mut rest = data;
    while let Ok(Some(total)) = wire::complete_len(rest, Side::Agent) {
        assert!(total >= 5 && total <= rest.len());
        let frame = wire::Frame {
            tag: rest[0],
            raw: bytes::Bytes::copy_from_slice(&rest[..total]),
        };
        // What parses is exactly what was sent: encoded again, the same bytes.
        if let Ok(message) = crate::proxy::pg::frontend::parse(&frame) {
            let mut again = BytesMut::new();
            message.encode(&mut again);
            assert_eq!(&again[..], &frame.raw[..], "{message:?}");
        }
        rest = &rest[total..];
    }
}

/// PostgreSQL backend bytes: RowDescription and DataRow messages through
/// the column masking the gateway applies (a rule on every `email` column).
pub fn pg_backend(data: &[u8]) {
    use postgres_protocol::message::backend::Message;
    let rules = crate::proxy::pg::columns::ColumnRules::new(&[ColumnRule {
        column: "*.email".into(),
        style: ColumnStyle::Partial,
    }]);
    let Ok(masked) = crate::proxy::pg::columns::MaskedColumns::from_rows(rules, &[]) else {
        return;
    };
    let detectors = plan().any.clone();
    let mut buf = BytesMut::from(data);
    let mut shape = None;
    let mut counts = HashMap::new();
    let mut out = BytesMut::new();
    let encoding = crate::proxy::pg::encoding::ClientEncoding::named("LATIN9");
    while buf.len() >= 5 {
        let total = u32::from_be_bytes([buf[1], buf[2], buf[3], buf[4]]) as usize + 1;
        if total < 5 || buf.len() < total {
            break;
        }
        let mut frame = buf.split_to(total);
        if frame[0] == b'T' {
            let body = &frame[5..];
            shape = crate::proxy::pg::columns::Shape::describe(body, &masked, true, encoding, &mut out).ok();
        } else if let Ok(Some(Message::DataRow(row))) = Message::parse(&mut frame) {
            if let Some(shape) = &shape {
                let _ = shape.mask_row(&row, detectors.as_deref(), &mut counts, &mut out);
            }
        }
    }
    // What the gateway wrote parses as backend messages again.
    let mut written = out;
    while let Some(m) = Message::parse(&mut written).expect("the gateway writes valid messages") {
        drop(m);
    }
}

/// SQL classification, cached by shape and exact text, agrees with
/// classifying the text afresh; and a text the gateway passes as empty
/// (no policy asked) holds no statement the parser can find either.
pub fn sql(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    if crate::sql::is_empty(&text) {
        let parsed = sqlparser::parser::Parser::parse_sql(&sqlparser::dialect::PostgreSqlDialect {}, &text);
        assert!(
            !matches!(&parsed, Ok(statements) if !statements.is_empty()),
            "{text:?} passes as empty but parses as {parsed:?}"
        );
    }
    let fresh = crate::sql::classify_uncached(&text);
    for _ in 0..2 {
        let cached = crate::sql::classify(&text);
        match (&fresh, &cached) {
            (Ok(a), Ok(b)) => assert_eq!(a, b, "the cache answered differently for {text:?}"),
            (Err(_), Err(_)) => {}
            _ => panic!("cached and fresh classification disagree on {text:?}: {fresh:?} / {cached:?}"),
        }
    }
}

/// Audit records read back from journal lines (what recovery reads after
/// a crash) and event bodies' search columns.
pub fn audit_record(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let _ = crate::audit::record::columns_of(&text);
    if let Ok(record) = crate::audit::journal_parse(&text) {
        let _ = record.defect();
        if let Ok(line) = crate::audit::journal_line(&record) {
            let again = crate::audit::journal_parse(std::str::from_utf8(&line).expect("lines are UTF-8").trim_end())
                .expect("a written line reads back");
            assert_eq!(again.hash, record.hash);
            assert_eq!(again.body, record.body);
        }
    }
}

/// A fuzz target: raw input in, a panic on a broken property.
pub type Target = fn(&[u8]);

/// A DNS message from an agent: the question read from it; a question
/// read is built again for the upstream and reads back the same; the
/// gateway's own answers to it (and to a malformed one) are well formed;
/// the bytes read as an upstream's answer and through the guards never
/// panic.
pub fn dns_message(data: &[u8]) {
    use crate::proxy::dns::{message, Guards};
    use hickory_proto::op::{Message, MessageType, ResponseCode};
    let check_reply = |bytes: &[u8], id: u16| {
        let reply = Message::from_vec(bytes).expect("the gateway's own answer parses");
        assert_eq!(reply.metadata.id, id);
        assert_eq!(reply.metadata.message_type, MessageType::Response);
    };
    match message::parse_question(data) {
        Ok(q) => {
            let built = message::upstream_query(&q, 7).expect("a question read can be asked again");
            let again = message::parse_question(&built).expect("the gateway's query parses");
            assert_eq!((again.id, again.qtype, &again.text), (7, q.qtype, &q.text));
            check_reply(&message::refusal(q.id, Some(&q), ResponseCode::Refused), q.id);
            let _ = message::read_answer(data, &q, q.id);
            let guards = Guards::new(&crate::config::DnsConfig::default(), &[]);
            let _ = guards.check(&crate::types::AgentName("fuzz".into()), &q.text, &q.labels);
        }
        Err(message::Malformed::Shape { id, .. }) => {
            check_reply(&message::refusal(id, None, ResponseCode::FormErr), id);
        }
        Err(message::Malformed::Unreadable(_)) => {}
    }
}

/// Every target by name, for the runner and the tests.
pub const TARGETS: [(&str, Target); 10] = [
    ("detect", detect),
    ("http_path", http_path),
    ("mask_json", mask_json),
    ("stream_mask", stream_mask),
    ("sse", sse),
    ("pg_frontend", pg_frontend),
    ("pg_backend", pg_backend),
    ("sql", sql),
    ("audit_record", audit_record),
    ("dns_message", dns_message),
];

#[cfg(test)]
mod tests {
    #[test]
    fn every_target_takes_its_committed_corpus() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus");
        for (name, target) in super::TARGETS {
            let dir = root.join(name);
            let files: Vec<_> = std::fs::read_dir(&dir)
                .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
                .flatten()
                .collect();
            assert!(!files.is_empty(), "no corpus for {name}");
            for f in files {
                target(&std::fs::read(f.path()).unwrap());
            }
        }
    }
}
