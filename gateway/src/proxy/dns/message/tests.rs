use std::str::FromStr;

use hickory_proto::{
    op::{Edns, Message, MessageType, OpCode, Query, ResponseCode},
    rr::{rdata::A, Name, RData, Record, RecordType},
};

use super::*;

fn query(name: &str, t: RecordType) -> Message {
    let mut m = Message::new(0x1234, MessageType::Query, OpCode::Query);
    m.metadata.recursion_desired = true;
    m.add_query(Query::query(Name::from_str(name).unwrap(), t));
    m
}

#[test]
fn a_plain_question_is_read_with_its_name_lowered() {
    let q = parse_question(&query("Api.Example.COM.", RecordType::A).to_vec().unwrap()).unwrap();
    assert_eq!(q.id, 0x1234);
    assert_eq!(q.text, "api.example.com");
    assert_eq!(q.labels.len(), 3);
    assert_eq!(qtype_text(q.qtype), "A");
    assert!(q.recursion_desired);
    assert_eq!(qtype_text(RecordType::Unknown(65280)), "TYPE65280");
}

#[test]
fn odd_bytes_in_labels_are_escaped_in_the_text() {
    let name = Name::from_labels(vec![b"a.b".to_vec(), b"x\x00y".to_vec(), b"com".to_vec()]).unwrap();
    let mut m = Message::new(1, MessageType::Query, OpCode::Query);
    m.add_query(Query::query(name, RecordType::TXT));
    let q = parse_question(&m.to_vec().unwrap()).unwrap();
    assert_eq!(q.text, "a\\046b.x\\000y.com");
}

#[test]
fn anything_but_one_plain_question_is_refused_with_its_id() {
    let mut two = query("a.example.", RecordType::A);
    two.add_query(Query::query(Name::from_str("b.example.").unwrap(), RecordType::A));
    let mut carrying = query("a.example.", RecordType::A);
    carrying.answers.push(Record::from_rdata(
        Name::from_str("data.example.").unwrap(),
        60,
        RData::A(A::new(10, 0, 0, 1)),
    ));
    let mut answer = query("a.example.", RecordType::A);
    answer.metadata.message_type = MessageType::Response;
    let mut none = query("a.example.", RecordType::A);
    none.queries.clear();
    for m in [two, carrying, answer, none] {
        match parse_question(&m.to_vec().unwrap()) {
            Err(Malformed::Shape { id, .. }) => assert_eq!(id, 0x1234),
            other => panic!("{other:?}"),
        }
    }
    assert!(matches!(parse_question(b"\x12"), Err(Malformed::Unreadable(_))));
    assert!(matches!(parse_question(&[]), Err(Malformed::Unreadable(_))));
}

#[test]
fn every_truncation_of_a_query_is_an_error_not_a_panic() {
    let mut m = query("www.example.org.", RecordType::AAAA);
    let mut edns = Edns::new();
    edns.set_max_payload(1232);
    m.set_edns(edns);
    let bytes = m.to_vec().unwrap();
    for n in 0..bytes.len() {
        assert!(parse_question(&bytes[..n]).is_err(), "prefix of {n} bytes");
    }
    let q = parse_question(&bytes).unwrap();
    assert_eq!(q.edns, Some((1232, false)));
}

#[test]
fn the_upstream_query_carries_the_question_under_the_gateways_id() {
    let q = parse_question(&query("api.example.com.", RecordType::A).to_vec().unwrap()).unwrap();
    let sent = Message::from_vec(&upstream_query(&q, 7).unwrap()).unwrap();
    assert_eq!(sent.metadata.id, 7);
    assert_eq!(sent.queries.len(), 1);
    assert!(sent.additionals.is_empty() && sent.edns.is_none());
}

#[test]
fn answers_are_checked_against_the_question_and_read() {
    let q = parse_question(&query("api.example.com.", RecordType::A).to_vec().unwrap()).unwrap();
    let mut reply = query("api.example.com.", RecordType::A);
    reply.metadata.id = 7;
    reply.metadata.message_type = MessageType::Response;
    reply.answers.push(Record::from_rdata(
        Name::from_str("api.example.com.").unwrap(),
        300,
        RData::A(A::new(192, 0, 2, 7)),
    ));
    let bytes = reply.to_vec().unwrap();
    let answer = read_answer(&bytes, &q, 7).unwrap();
    assert_eq!(answer.rcode, ResponseCode::NoError);
    assert_eq!(answer.addresses, vec![("192.0.2.7".parse().unwrap(), 300)]);
    assert_eq!(answer.answers[0].data, "192.0.2.7");
    assert!(read_answer(&bytes, &q, 8).is_err(), "another id");
    let other = parse_question(&query("evil.example.", RecordType::A).to_vec().unwrap()).unwrap();
    assert!(read_answer(&bytes, &other, 7).is_err(), "another question");
    let back = with_id(bytes, q.id);
    assert_eq!(Message::from_vec(&back).unwrap().metadata.id, 0x1234);
}

#[test]
fn a_refusal_echoes_the_question() {
    let q = parse_question(&query("x.example.", RecordType::TXT).to_vec().unwrap()).unwrap();
    let m = Message::from_vec(&refusal(q.id, Some(&q), ResponseCode::Refused)).unwrap();
    assert_eq!(m.metadata.id, 0x1234);
    assert_eq!(m.metadata.response_code, ResponseCode::Refused);
    assert_eq!(m.queries.len(), 1);
    let bare = Message::from_vec(&refusal(9, None, ResponseCode::FormErr)).unwrap();
    assert_eq!(bare.metadata.response_code, ResponseCode::FormErr);
}
