use std::{
    collections::VecDeque,
    sync::{Arc, Mutex},
};

use bytes::{BufMut, BytesMut};

use super::{ClientEncoding, EncodingCell, Finished, Responses, SessionView};
use crate::{
    audit::{Ran, SqlProtocol},
    masking::{Masker, Style},
    policy::{Decision, Ruling},
    proxy::pg::{
        columns::MaskedColumns,
        wire::{self, ErrorFields},
        Expect, Run, Statement,
    },
    types::Side,
};

const NONCE: &str = "n0nce42";

fn statement(detectors: Option<Arc<Masker>>, denial: Option<ErrorFields>) -> Arc<Statement> {
    let decision = match &denial {
        Some(_) => Decision::deny(Vec::new(), "no".into()),
        None => Decision {
            outcome: Ruling::Allow,
            policies: Vec::new(),
            reason: String::new(),
            mask: Vec::new(),
        },
    };
    Arc::new(Statement {
        sql: "SELECT email FROM t".into(),
        kind: "select".into(),
        tables_read: vec!["t".into()],
        tables_written: Vec::new(),
        decision,
        detectors,
        denial,
        computed: false,
        counted: false,
    })
}

fn query(st: Arc<Statement>) -> Mutex<VecDeque<Expect>> {
    Mutex::new(VecDeque::from([Expect::Query(Box::new(Run::new(
        st,
        SqlProtocol::Simple,
        Vec::new(),
    )))]))
}

/// RowDescription of text columns.
fn row_description(out: &mut BytesMut, names: &[&str]) {
    wire::message(out, b'T', |b| {
        b.put_i16(names.len() as i16);
        for (i, name) in names.iter().enumerate() {
            wire::put_cstr(b, name.as_bytes());
            b.put_i32(16_384); // table oid
            b.put_i16(i as i16 + 1);
            b.put_i32(25); // text
            b.put_i16(-1);
            b.put_i32(-1);
            b.put_i16(0);
        }
    });
}

fn data_row(out: &mut BytesMut, values: &[Option<&str>]) {
    wire::message(out, b'D', |b| {
        b.put_i16(values.len() as i16);
        for v in values {
            match v {
                Some(v) => {
                    b.put_i32(v.len() as i32);
                    b.put_slice(v.as_bytes());
                }
                None => b.put_i32(-1),
            }
        }
    });
}

fn complete(out: &mut BytesMut, tag: &str) {
    wire::message(out, b'C', |b| wire::put_cstr(b, tag.as_bytes()));
}

fn ready(out: &mut BytesMut) {
    wire::ready_for_query(out, b'I');
}

fn run(
    responses: &mut Responses,
    masked: &MaskedColumns,
    input: &[u8],
    pending: &Mutex<VecDeque<Expect>>,
) -> Result<(BytesMut, Vec<Finished>), wire::WireError> {
    let encoding = EncodingCell::new(ClientEncoding::Utf8);
    let view = SessionView {
        masked,
        nonce: NONCE,
        encoding: &encoding,
    };
    let (mut buf, mut out, mut done) = (BytesMut::from(input), BytesMut::new(), Vec::new());
    responses.handle(&view, &mut buf, pending, &mut out, &mut done)?;
    assert!(buf.is_empty(), "whole messages left unread");
    Ok((out, done))
}

fn select_two(values: [&str; 2]) -> BytesMut {
    let mut input = BytesMut::new();
    row_description(&mut input, &["email"]);
    data_row(&mut input, &[Some(values[0])]);
    data_row(&mut input, &[Some(values[1])]);
    complete(&mut input, "SELECT 2");
    ready(&mut input);
    input
}

#[test]
fn an_unmasked_result_passes_as_it_came_and_ends_its_statement() {
    let input = select_two(["a", "b"]);
    let pending = query(statement(None, None));
    let mut responses = Responses::default();
    let (out, done) = run(&mut responses, &MaskedColumns::default(), &input, &pending).unwrap();
    assert_eq!(&out[..], &input[..]);
    assert_eq!(done.len(), 1);
    let (run, how) = &done[0];
    assert_eq!(*how, Ran::Ok);
    assert_eq!((run.rows, run.affected), (2, Some(2)));
    assert_eq!(responses.status, b'I');
    assert!(pending.lock().unwrap().is_empty());
}

#[test]
fn a_result_split_anywhere_comes_out_the_same() {
    let input = select_two(["a", "b"]);
    for cut in 0..input.len() {
        let pending = query(statement(None, None));
        let mut responses = Responses::default();
        let masked = MaskedColumns::default();
        let encoding = EncodingCell::new(ClientEncoding::Utf8);
        let view = SessionView {
            masked: &masked,
            nonce: NONCE,
            encoding: &encoding,
        };
        let (mut buf, mut out, mut done) = (BytesMut::from(&input[..cut]), BytesMut::new(), Vec::new());
        responses
            .handle(&view, &mut buf, &pending, &mut out, &mut done)
            .unwrap();
        // A partial message waits in the buffer, untouched.
        buf.extend_from_slice(&input[cut..]);
        responses
            .handle(&view, &mut buf, &pending, &mut out, &mut done)
            .unwrap();
        assert_eq!(&out[..], &input[..], "cut at {cut}");
        assert_eq!(done.len(), 1, "cut at {cut}");
    }
}

#[test]
fn detectors_mask_result_values_and_count_them() {
    let email = Arc::new(Masker::new(&["email".into()], &[], Style::Redact).unwrap());
    let input = select_two(["ann@example.com", "plain"]);
    let pending = query(statement(Some(email), None));
    let mut responses = Responses::default();
    let (out, done) = run(&mut responses, &MaskedColumns::default(), &input, &pending).unwrap();
    let text = String::from_utf8_lossy(&out);
    assert!(!text.contains("ann@example.com"), "{text}");
    assert!(text.contains("[REDACTED:email]") && text.contains("plain"), "{text}");
    let (run, how) = &done[0];
    assert_eq!(*how, Ran::Ok);
    assert_eq!(run.masked.values().sum::<u64>(), 1, "{:?}", run.masked);
}

#[test]
fn the_servers_error_for_a_denied_statement_becomes_the_policys_refusal() {
    let denial = ErrorFields::error("42501", "interlock denied this statement: no (no policy permits it)");
    let pending = query(statement(None, Some(denial)));
    let mut input = BytesMut::new();
    let syntax = ErrorFields::error("42601", format!("syntax error at or near \"{NONCE}\""));
    syntax.write(&mut input);
    ready(&mut input);
    let mut responses = Responses::default();
    let (out, done) = run(&mut responses, &MaskedColumns::default(), &input, &pending).unwrap();
    let text = String::from_utf8_lossy(&out);
    assert!(text.contains("42501") && text.contains("interlock denied"), "{text}");
    assert!(
        !text.contains(NONCE) && !text.contains("42601"),
        "the substitute leaked: {text}"
    );
    assert_eq!(done[0].1, Ran::Denied);
    // The same error for a statement that was not denied passes through.
    let pending = query(statement(None, None));
    let (out, done) = run(&mut responses, &MaskedColumns::default(), &input, &pending).unwrap();
    assert_eq!(&out[..], &input[..]);
    assert_eq!(done[0].1, Ran::Error);
}

#[test]
fn answers_nobody_asked_for_end_the_session_as_the_upstreams_fault() {
    let unasked: Vec<(&str, BytesMut)> = vec![
        ("row", {
            let mut b = BytesMut::new();
            data_row(&mut b, &[Some("x")]);
            b
        }),
        ("completion", {
            let mut b = BytesMut::new();
            complete(&mut b, "SELECT 1");
            b
        }),
        ("description", {
            let mut b = BytesMut::new();
            row_description(&mut b, &["a"]);
            b
        }),
        ("unknown type", {
            let mut b = BytesMut::new();
            wire::message(&mut b, b'X', |_| {});
            b
        }),
        ("bad length", BytesMut::from(&[b'D', 0, 0, 0, 2][..])),
    ];
    for (what, input) in unasked {
        let pending = Mutex::new(VecDeque::new());
        let mut responses = Responses::default();
        let masked = MaskedColumns::default();
        let encoding = EncodingCell::new(ClientEncoding::Utf8);
        let view = SessionView {
            masked: &masked,
            nonce: NONCE,
            encoding: &encoding,
        };
        let (mut buf, mut out, mut done) = (input, BytesMut::new(), Vec::new());
        let e = responses
            .handle(&view, &mut buf, &pending, &mut out, &mut done)
            .expect_err(what);
        assert_eq!(e.side(), Side::Upstream, "{what}: {e}");
        assert!(out.is_empty(), "{what}: passed on {out:?}");
    }
}

#[test]
fn rows_without_a_description_in_a_masked_session_fail_closed() {
    let email = Arc::new(Masker::new(&["email".into()], &[], Style::Redact).unwrap());
    let pending = query(statement(Some(email), None));
    let mut input = BytesMut::new();
    data_row(&mut input, &[Some("ann@example.com")]);
    let mut responses = Responses::default();
    let Err(e) = run(&mut responses, &MaskedColumns::default(), &input, &pending) else {
        panic!("undescribed rows passed in a masked session");
    };
    assert!(e.to_string().contains("without a description"), "{e}");
}

#[test]
fn a_reported_client_encoding_is_followed_and_passed_on() {
    let mut input = BytesMut::new();
    wire::message(&mut input, b'S', |b| {
        wire::put_cstr(b, b"client_encoding");
        wire::put_cstr(b, b"LATIN9");
    });
    wire::message(&mut input, b'S', |b| {
        wire::put_cstr(b, b"application_name");
        wire::put_cstr(b, b"x");
    });
    let pending = Mutex::new(VecDeque::new());
    let masked = MaskedColumns::default();
    let encoding = EncodingCell::new(ClientEncoding::Utf8);
    let view = SessionView {
        masked: &masked,
        nonce: NONCE,
        encoding: &encoding,
    };
    let (mut buf, mut out, mut done) = (input.clone(), BytesMut::new(), Vec::new());
    Responses::default()
        .handle(&view, &mut buf, &pending, &mut out, &mut done)
        .unwrap();
    assert_eq!(&out[..], &input[..]);
    assert_eq!(encoding.get(), ClientEncoding::named("LATIN9"));
    // A ParameterStatus cut short is the server's fault.
    let mut bad = BytesMut::new();
    wire::message(&mut bad, b'S', |b| b.extend_from_slice(b"client_encoding"));
    let e = Responses::default()
        .handle(&view, &mut bad, &pending, &mut BytesMut::new(), &mut done)
        .expect_err("short ParameterStatus");
    assert_eq!(e.side(), Side::Upstream);
}
