use std::str::FromStr;

use hickory_proto::{
    op::{Edns, Message, MessageType, OpCode, Query, ResponseCode},
    rr::{
        rdata::{A, SOA, TXT},
        Name, RData, Record, RecordType,
    },
};

use super::*;
use crate::proxy::dns::message::parse_question;

fn agent(n: &str) -> AgentName {
    AgentName(n.into())
}

fn route() -> OrigDst {
    OrigDst("127.0.0.53:53".parse().unwrap())
}

fn question(name: &str, edns: Option<u16>) -> Question {
    let mut m = Message::new(0x4242, MessageType::Query, OpCode::Query);
    m.metadata.recursion_desired = true;
    // from_ascii keeps the case (from_str lowers it).
    m.add_query(Query::query(Name::from_ascii(name).unwrap(), RecordType::A));
    if let Some(size) = edns {
        let mut e = Edns::new();
        e.set_max_payload(size);
        m.set_edns(e);
    }
    parse_question(&m.to_vec().unwrap()).unwrap()
}

/// The upstream's answer (id 7) with `records` A records of `ttl`.
fn answer(name: &str, ttl: u32, records: usize) -> Vec<u8> {
    let mut m = Message::new(7, MessageType::Response, OpCode::Query);
    m.metadata.recursion_desired = true;
    m.add_query(Query::query(Name::from_str(name).unwrap(), RecordType::A));
    for i in 0..records {
        m.answers.push(Record::from_rdata(
            Name::from_str(name).unwrap(),
            ttl,
            RData::A(A::new(192, 0, 2, i as u8)),
        ));
    }
    m.to_vec().unwrap()
}

#[test]
fn a_kept_answer_is_served_with_the_agents_id_and_lowered_ttls_until_it_expires() {
    let cache = AnswerCache::new(16, Duration::from_secs(300));
    let q = question("api.example.com.", None);
    let t0 = Instant::now();
    cache.put_at(
        t0,
        &agent("a"),
        route(),
        &q,
        route(),
        &answer("api.example.com.", 60, 2),
    );
    let hit = cache
        .get_at(t0 + Duration::from_millis(10_500), &agent("a"), route(), &q, true)
        .expect("kept");
    let msg = Message::from_vec(&hit.bytes).unwrap();
    assert_eq!(msg.metadata.id, 0x4242);
    assert_eq!(msg.answers.iter().map(|r| r.ttl).collect::<Vec<_>>(), vec![50, 50]);
    assert_eq!(hit.answer.addresses.len(), 2);
    assert_eq!(hit.answer.addresses[0].1, 50);
    assert_eq!(hit.answer.answers[1].ttl, 50);
    assert_eq!(hit.upstream, route());
    assert!(cache
        .get_at(t0 + Duration::from_secs(60), &agent("a"), route(), &q, true)
        .is_none());
    assert!(cache.is_empty(), "an expired entry is dropped when asked for");
}

#[test]
fn answers_are_kept_per_agent_route_name_case_and_flags() {
    let cache = AnswerCache::new(16, Duration::from_secs(300));
    let q = question("api.example.com.", None);
    cache.put(&agent("a"), route(), &q, route(), &answer("api.example.com.", 60, 1));
    assert!(cache.get(&agent("a"), route(), &q, true).is_some());
    assert!(cache.get(&agent("b"), route(), &q, true).is_none(), "another agent");
    let other = OrigDst("127.0.0.54:53".parse().unwrap());
    assert!(cache.get(&agent("a"), other, &q, true).is_none(), "another server");
    let upper = question("API.example.com.", None);
    assert!(
        cache.get(&agent("a"), route(), &upper, true).is_none(),
        "asked in another case"
    );
    let edns = question("api.example.com.", Some(1232));
    assert!(cache.get(&agent("a"), route(), &edns, true).is_none(), "with EDNS");
}

#[test]
fn the_ttl_is_capped_and_what_may_not_be_kept_is_not() {
    let cache = AnswerCache::new(16, Duration::from_secs(30));
    let q = question("api.example.com.", None);
    let t0 = Instant::now();
    cache.put_at(
        t0,
        &agent("a"),
        route(),
        &q,
        route(),
        &answer("api.example.com.", 3600, 1),
    );
    assert!(cache
        .get_at(t0 + Duration::from_secs(29), &agent("a"), route(), &q, true)
        .is_some());
    assert!(cache
        .get_at(t0 + Duration::from_secs(30), &agent("a"), route(), &q, true)
        .is_none());
    // No records (nothing says how long), TTL 0, SERVFAIL, truncated: not kept.
    for bytes in [
        answer("api.example.com.", 60, 0),
        answer("api.example.com.", 0, 1),
        {
            let mut m = Message::from_vec(&answer("api.example.com.", 60, 1)).unwrap();
            m.metadata.response_code = ResponseCode::ServFail;
            m.to_vec().unwrap()
        },
        {
            let mut m = Message::from_vec(&answer("api.example.com.", 60, 1)).unwrap();
            m.metadata.truncation = true;
            m.to_vec().unwrap()
        },
    ] {
        cache.put(&agent("b"), route(), &q, route(), &bytes);
        assert!(cache.get(&agent("b"), route(), &q, true).is_none());
    }
}

#[test]
fn a_negative_answer_is_kept_for_its_soa_ttl() {
    let cache = AnswerCache::new(16, Duration::from_secs(300));
    let q = question("gone.example.com.", None);
    let mut m = Message::new(7, MessageType::Response, OpCode::Query);
    m.metadata.response_code = ResponseCode::NXDomain;
    m.add_query(Query::query(
        Name::from_str("gone.example.com.").unwrap(),
        RecordType::A,
    ));
    let soa = SOA::new(
        Name::from_str("ns.example.com.").unwrap(),
        Name::from_str("root.example.com.").unwrap(),
        1,
        3600,
        600,
        86400,
        20,
    );
    m.authorities.push(Record::from_rdata(
        Name::from_str("example.com.").unwrap(),
        20,
        RData::SOA(soa),
    ));
    let t0 = Instant::now();
    cache.put_at(t0, &agent("a"), route(), &q, route(), &m.to_vec().unwrap());
    let hit = cache
        .get_at(t0 + Duration::from_secs(5), &agent("a"), route(), &q, true)
        .expect("kept");
    let back = Message::from_vec(&hit.bytes).unwrap();
    assert_eq!(back.metadata.response_code, ResponseCode::NXDomain);
    assert_eq!(back.authorities[0].ttl, 15);
    assert!(cache
        .get_at(t0 + Duration::from_secs(20), &agent("a"), route(), &q, true)
        .is_none());
}

#[test]
fn an_answer_larger_than_the_agent_accepts_over_udp_goes_upstream() {
    let cache = AnswerCache::new(16, Duration::from_secs(300));
    let name = "big.example.com.";
    let mut m = Message::new(7, MessageType::Response, OpCode::Query);
    m.add_query(Query::query(Name::from_str(name).unwrap(), RecordType::A));
    for _ in 0..4 {
        m.answers.push(Record::from_rdata(
            Name::from_str(name).unwrap(),
            60,
            RData::TXT(TXT::new(vec!["x".repeat(200)])),
        ));
    }
    let bytes = m.to_vec().unwrap();
    assert!(bytes.len() > 512);
    let plain = question(name, None);
    cache.put(&agent("a"), route(), &plain, route(), &bytes);
    assert!(
        cache.get(&agent("a"), route(), &plain, true).is_none(),
        "over 512 by UDP"
    );
    assert!(cache.get(&agent("a"), route(), &plain, false).is_some(), "fine by TCP");
}

#[test]
fn a_full_cache_sweeps_expired_answers_and_otherwise_keeps_nothing_new() {
    let cache = AnswerCache::new(2, Duration::from_secs(300));
    let t0 = Instant::now();
    let (a, b, c) = (
        question("a.example.", None),
        question("b.example.", None),
        question("c.example.", None),
    );
    cache.put_at(t0, &agent("x"), route(), &a, route(), &answer("a.example.", 5, 1));
    cache.put_at(t0, &agent("x"), route(), &b, route(), &answer("b.example.", 60, 1));
    cache.put_at(t0, &agent("x"), route(), &c, route(), &answer("c.example.", 60, 1));
    assert!(cache.get_at(t0, &agent("x"), route(), &c, true).is_none(), "full");
    assert_eq!(cache.len(), 2);
    let later = t0 + Duration::from_secs(6);
    cache.put_at(later, &agent("x"), route(), &c, route(), &answer("c.example.", 60, 1));
    // Swept at most once a second: d finds the cache full again and waits.
    let d = question("d.example.", None);
    cache.put_at(later, &agent("x"), route(), &d, route(), &answer("d.example.", 60, 1));
    assert!(cache.get_at(later, &agent("x"), route(), &d, true).is_none());
    assert!(
        cache.get_at(later, &agent("x"), route(), &c, true).is_some(),
        "a's place, once expired"
    );
    assert!(cache.get_at(later, &agent("x"), route(), &b, true).is_some());
    let none = AnswerCache::new(0, Duration::from_secs(300));
    none.put(&agent("x"), route(), &a, route(), &answer("a.example.", 60, 1));
    assert!(
        none.get(&agent("x"), route(), &a, true).is_none(),
        "capacity 0 keeps nothing"
    );
}
