//! The frontend parser over valid, truncated and hostile frames.
use bytes::{Bytes, BytesMut};

use super::*;

fn frame(tag: u8, body: &[u8]) -> Frame {
    let mut raw = BytesMut::new();
    wire::message(&mut raw, tag, |b| b.extend_from_slice(body));
    Frame { tag, raw: raw.freeze() }
}

fn round_trip(f: &Frame) -> Frontend<'_> {
    let parsed = parse(f).unwrap_or_else(|e| panic!("{:?}: {e}", f.raw));
    let mut again = BytesMut::new();
    parsed.encode(&mut again);
    assert_eq!(Bytes::from(again), f.raw, "{parsed:?}");
    parsed
}

fn refused(f: &Frame) -> String {
    match parse(f) {
        Ok(m) => panic!("accepted {m:?}"),
        Err(e) => {
            assert_eq!(e.side(), Side::Agent);
            e.to_string()
        }
    }
}

/// A Bind of two parameters (text "7", NULL) with one result format.
fn bind_body() -> Vec<u8> {
    let mut b = b"p1\0s1\0".to_vec();
    b.extend_from_slice(&[0, 1, 0, 0]); // one format: text
    b.extend_from_slice(&[0, 2]); // two parameters
    b.extend_from_slice(&[0, 0, 0, 1, b'7']);
    b.extend_from_slice(&(-1i32).to_be_bytes());
    b.extend_from_slice(&[0, 1, 0, 1]); // one result format: binary
    b
}

#[test]
fn every_message_the_filter_reads_parses_and_encodes_back() {
    assert_eq!(
        round_trip(&frame(b'Q', b"SELECT 1\0")),
        Frontend::Query { sql: b"SELECT 1" }
    );
    let p = frame(b'P', b"s1\0SELECT $1\0\0\x01\0\0\0\x17");
    assert_eq!(
        round_trip(&p),
        Frontend::Parse {
            name: b"s1",
            sql: b"SELECT $1",
            param_types: vec![23]
        }
    );
    let b = frame(b'B', &bind_body());
    let Frontend::Bind(bind) = round_trip(&b) else { panic!() };
    assert_eq!((bind.portal, bind.statement), (&b"p1"[..], &b"s1"[..]));
    assert_eq!(bind.params, vec![Some(&b"7"[..]), None]);
    assert_eq!(bind.result_formats, vec![1]);
    assert!(!bind.binary(0) && !bind.binary(1));
    let d = frame(b'D', b"Pp1\0");
    assert_eq!(
        round_trip(&d),
        Frontend::Describe {
            kind: Named::Portal,
            name: b"p1"
        }
    );
    let e = frame(b'E', b"p1\0\0\0\0\x05");
    assert_eq!(
        round_trip(&e),
        Frontend::Execute {
            portal: b"p1",
            max_rows: 5
        }
    );
    let c = frame(b'C', b"Ss1\0");
    assert_eq!(
        round_trip(&c),
        Frontend::Close {
            kind: Named::Statement,
            name: b"s1"
        }
    );
    for (tag, want) in [
        (b'S', Frontend::Sync),
        (b'H', Frontend::Flush),
        (b'X', Frontend::Terminate),
        (b'c', Frontend::CopyDone),
    ] {
        assert_eq!(round_trip(&frame(tag, b"")), want);
    }
    assert_eq!(round_trip(&frame(b'd', b"1\t2\n")), Frontend::CopyData(b"1\t2\n"));
    assert_eq!(round_trip(&frame(b'f', b"stop\0")), Frontend::CopyFail(b"stop\0"));
    assert_eq!(
        round_trip(&frame(b'F', b"\0\0\0\x01")),
        Frontend::FunctionCall(b"\0\0\0\x01")
    );
}

#[test]
fn text_in_another_encoding_is_read_as_bytes() {
    // LATIN9's euro sign: not UTF-8, and not the parser's business.
    let q = frame(b'Q', b"SELECT '\xa4'\0");
    assert_eq!(round_trip(&q), Frontend::Query { sql: b"SELECT '\xa4'" });
}

#[test]
fn per_parameter_formats_say_which_is_binary() {
    let mut body = b"\0\0".to_vec();
    body.extend_from_slice(&[0, 2, 0, 0, 0, 1]); // text, binary
    body.extend_from_slice(&[0, 2, 0, 0, 0, 0, 0, 0, 0, 0]); // two empty values
    body.extend_from_slice(&[0, 0]);
    let f = frame(b'B', &body);
    let Frontend::Bind(bind) = round_trip(&f) else { panic!() };
    assert!(!bind.binary(0) && bind.binary(1) && !bind.binary(2));
    // One format code applies to every parameter.
    let mut body = b"\0\0".to_vec();
    body.extend_from_slice(&[0, 1, 0, 1, 0, 1, 0, 0, 0, 0, 0, 0]);
    let f = frame(b'B', &body);
    let Frontend::Bind(bind) = round_trip(&f) else { panic!() };
    assert!(bind.binary(0));
}

#[test]
fn every_truncation_of_a_valid_frame_is_refused_not_misread() {
    let valid: Vec<(u8, Vec<u8>)> = vec![
        (b'Q', b"SELECT 1\0".to_vec()),
        (b'P', b"s1\0SELECT $1\0\0\x01\0\0\0\x17".to_vec()),
        (b'B', bind_body()),
        (b'D', b"Pp1\0".to_vec()),
        (b'E', b"p1\0\0\0\0\x05".to_vec()),
        (b'C', b"Ss1\0".to_vec()),
    ];
    for (tag, body) in valid {
        for cut in 0..body.len() {
            let message = refused(&frame(tag, &body[..cut]));
            assert!(message.contains("too short"), "{} cut at {cut}: {message}", tag as char);
        }
    }
}

#[test]
fn hostile_frames_are_refused_with_the_reason() {
    let cases: Vec<(Frame, &str)> = vec![
        (frame(b'Q', b"SELECT 1\0junk"), "trailing bytes"),
        (frame(b'S', b"x"), "trailing bytes"),
        (frame(b'D', b"Zname\0"), "Describe of kind 90"),
        (frame(b'C', b"\0name\0"), "Close of kind 0"),
        (frame(b'Z', b""), "unexpected message type 'Z'"),
        // A parameter length below -1.
        (
            frame(b'B', b"\0\0\0\0\0\x01\xff\xff\xff\xfe\0\0"),
            "parameter length -2",
        ),
        // A length past the end of the message.
        (frame(b'B', b"\0\0\0\0\0\x01\x7f\xff\xff\xff\0\0"), "too short"),
        // 65535 parameter types announced, none sent.
        (frame(b'P', b"\0SELECT 1\0\xff\xff"), "too short"),
        // 65535 parameters announced, one sent.
        (frame(b'B', b"\0\0\0\0\xff\xff\0\0\0\0"), "too short"),
    ];
    for (f, want) in cases {
        let message = refused(&f);
        assert!(message.contains(want), "{:?}: {message} (wanted {want})", f.raw);
    }
}
