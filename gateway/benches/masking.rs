//! Masking throughput, with criterion: a JSON response streamed through the
//! built-in detectors (the HTTP response filter), and PostgreSQL DataRows
//! through column rules and value detectors (the PostgreSQL response filter).
use std::{collections::HashMap, hint::black_box, sync::Arc};

use bytes::{BufMut, BytesMut};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use gateway::{
    config::ColumnStyle,
    masking::{Masker, SseMasker, StreamMasker, Style, BUILTIN_NAMES},
    proxy::pg::columns::{Column, Shape},
};
use postgres_protocol::message::backend::Message;

/// A chat-completion-like JSON document of about `size` bytes: mostly plain
/// text, one e-mail address and one card number in every few hundred bytes.
fn json_document(size: usize) -> Vec<u8> {
    let mut out = String::from(r#"{"id":"chatcmpl-1","choices":["#);
    let mut i = 0;
    while out.len() < size {
        out.push_str(&format!(
            r#"{{"index":{i},"message":{{"role":"assistant","content":"Order {i} shipped to the customer on file; contact jane.doe{i}@example.com about card 4111 1111 1111 1111 if the total of 120.50 looks wrong. The rest of this sentence is ordinary prose that no detector should match at all."}}}},"#
        ));
        i += 1;
    }
    out.push_str(r#"{}]}"#);
    out.into_bytes()
}

/// DataRows of (id int4, email text, note text, total numeric), text format.
fn data_rows(n: usize) -> Vec<BytesMut> {
    (0..n)
        .map(|i| {
            let values = [
                i.to_string(),
                format!("customer{i}@example.com"),
                format!("delivery note {i}: leave at the door, call 555-0100 first"),
                format!("{}.{:02}", i * 7, i % 100),
            ];
            let mut body = BytesMut::new();
            body.put_u16(values.len() as u16);
            for v in &values {
                body.put_i32(v.len() as i32);
                body.put_slice(v.as_bytes());
            }
            let mut msg = BytesMut::new();
            msg.put_u8(b'D');
            msg.put_i32(body.len() as i32 + 4);
            msg.put_slice(&body);
            msg
        })
        .collect()
}

fn masking(c: &mut Criterion) {
    let names: Vec<String> = BUILTIN_NAMES.iter().map(|n| (*n).to_owned()).collect();
    let masker = Arc::new(Masker::new(&names, &[], Style::Redact).expect("built-in detectors"));
    let doc = json_document(64 << 10);
    let mut g = c.benchmark_group("masking");
    g.throughput(Throughput::Bytes(doc.len() as u64));
    g.bench_function("JSON response, 64 KiB in 16 KiB chunks, built-in detectors", |b| {
        b.iter(|| {
            let mut stream = StreamMasker::new(masker.clone());
            let mut out = 0;
            for chunk in doc.chunks(16 << 10) {
                out += stream.push(chunk).0.len();
            }
            out += stream.finish().0.len();
            black_box(out)
        })
    });
    // An LLM token stream: 5,000 chat-completion chunks, one choice each.
    let mut sse = String::new();
    for i in 0..5000 {
        sse.push_str(&format!(
            "data: {{\"id\":\"c\",\"object\":\"chat.completion.chunk\",\"choices\":[{{\"index\":0,\"delta\":{{\"content\":\" token{i}\"}},\"finish_reason\":null}}]}}\n\n"
        ));
    }
    sse.push_str("data: [DONE]\n\n");
    g.throughput(Throughput::Bytes(sse.len() as u64));
    g.bench_function("SSE chat-completion stream, 5000 chunks, built-in detectors", |b| {
        b.iter(|| {
            let mut stream = SseMasker::new(masker.clone());
            let mut out = 0;
            for chunk in sse.as_bytes().chunks(4096) {
                out += stream.push(chunk).len();
            }
            out += stream.finish().len();
            black_box(out)
        })
    });
    let rows = data_rows(1000);
    let bytes: usize = rows.iter().map(BytesMut::len).sum();
    let text = |rule: Option<(ColumnStyle, Arc<str>)>, type_oid| Column {
        rule,
        type_oid,
        format: 0,
    };
    let shape = Shape(vec![
        text(None, 23),
        text(Some((ColumnStyle::Partial, Arc::from("customers.email"))), 25),
        text(None, 25),
        text(None, 1700),
    ]);
    let parsed: Vec<_> = rows
        .iter()
        .map(|r| match Message::parse(&mut r.clone()) {
            Ok(Some(Message::DataRow(body))) => body,
            _ => panic!("not a DataRow"),
        })
        .collect();
    g.throughput(Throughput::Bytes(bytes as u64));
    g.bench_function("PostgreSQL DataRows, 1000 rows, column rule + detectors", |b| {
        b.iter(|| {
            let mut counts = HashMap::new();
            let mut out = BytesMut::with_capacity(bytes * 2);
            for row in &parsed {
                shape
                    .mask_row(row, Some(&masker), &mut counts, &mut out)
                    .expect("masks");
            }
            black_box(out.len())
        })
    });
    g.finish();
}

criterion_group!(benches, masking);
criterion_main!(benches);
