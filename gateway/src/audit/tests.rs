//! The store, chain and verification together, on a temporary SQLite file.
use serde_json::json;

use super::{
    head::SignedHead,
    keys::Identity,
    record::{Record, GENESIS},
    store::{Checkpoint, Reader, SqliteStore, Store},
    verify::verify,
};

struct Temp(std::path::PathBuf);

impl Drop for Temp {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A store with `n` events, a signed checkpoint every `every`.
fn filled(tag: &str, n: i64, every: i64) -> (Temp, SqliteStore, Identity, Vec<u8>) {
    let dir = std::env::temp_dir().join(format!("interlock-audit-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let temp = Temp(dir.clone());
    let identity = Identity::load_or_create(&dir).unwrap();
    let public = super::keys::read_public(&dir.join("audit-signing.pub")).unwrap();
    let mut store = SqliteStore::open(&dir.join("audit.db")).unwrap();
    let mut prev = GENESIS.to_owned();
    for seq in 1..=n {
        // Times an hour apart, oldest first.
        let time = format!("2026-01-01T{:02}:00:00.000Z", seq % 24);
        let time = if seq >= 24 {
            format!("2026-01-02T{:02}:00:00.000Z", seq - 24)
        } else {
            time
        };
        let event = json!({"event": "grant", "time": time, "n": seq});
        let mut r = Record::next(&identity.instance, "h", seq, &prev, event.to_string()).unwrap();
        prev = r.hash.clone();
        let cp = (seq % every == 0).then(|| {
            let (key_id, signature) = identity.sign(&identity.instance, seq, &r.hash);
            Checkpoint {
                instance: identity.instance.clone(),
                seq,
                hash: r.hash.clone(),
                time: r.time.clone(),
                key_id,
                signature,
            }
        });
        store.append(std::slice::from_mut(&mut r), cp.as_ref()).unwrap();
    }
    (temp, store, identity, public)
}

#[test]
fn retention_prunes_only_at_signed_checkpoints_and_the_rest_still_verifies() {
    let (_t, mut store, id, public) = filled("retention", 25, 5);
    // At most 10 records: the newest checkpoint at or below 25 - 10 is 15.
    assert_eq!(store.prune(&id.instance, None, Some(10)).unwrap(), 15);
    assert_eq!(store.pruned_to(&id.instance).unwrap(), 15);
    let first = store.chain(&id.instance, 0, 1).unwrap();
    assert_eq!(first[0].seq, 16);
    let report = verify(&mut store, std::slice::from_ref(&public), None).unwrap();
    assert!(report.problem.is_none(), "{:?}", report.problem);
    assert_eq!(report.chains[0].1, 10);
    // By age: everything before 2026-01-02T00:00 (seq 24), cut at checkpoint 20.
    assert_eq!(
        store
            .prune(&id.instance, Some("2026-01-02T00:00:00.000Z"), None)
            .unwrap(),
        5
    );
    assert!(verify(&mut store, &[public], None).unwrap().problem.is_none());
}

#[test]
fn a_deleted_tail_is_caught_by_the_head_the_gateway_wrote() {
    let (_t, mut store, id, public) = filled("tail", 12, 5);
    let hash_of = |store: &mut SqliteStore, seq: i64| store.chain(&id.instance, seq - 1, 1).unwrap()[0].hash.clone();
    let head = SignedHead::new(&id, &id.instance, 14, "feed");
    let problem = verify(&mut store, std::slice::from_ref(&public), Some(&head))
        .unwrap()
        .problem
        .unwrap();
    assert_eq!(problem.seq, 13);
    assert!(problem.reason.contains("deleted"), "{problem}");
    let head = SignedHead::new(&id, &id.instance, 12, &hash_of(&mut store, 12));
    assert!(verify(&mut store, std::slice::from_ref(&public), Some(&head))
        .unwrap()
        .problem
        .is_none());
    // Without the head (verifying elsewhere), the records after the last
    // checkpoint are covered by no signature.
    let problem = verify(&mut store, std::slice::from_ref(&public), None)
        .unwrap()
        .problem
        .unwrap();
    assert_eq!(problem.seq, 11);
    assert!(
        problem.reason.contains("no signature covers records 11 to 12"),
        "{problem}"
    );
    // A key that did not sign the checkpoints is not trusted.
    let other = vec![7u8; 32];
    let problem = verify(&mut store, &[other], None).unwrap().problem.unwrap();
    assert!(problem.reason.contains("not trusted"), "{problem}");
}

#[test]
fn a_store_writer_without_the_key_cannot_pass_verify() {
    let (t, mut store, id, public) = filled("forge", 12, 5);
    let real_last = store.chain(&id.instance, 11, 1).unwrap()[0].hash.clone();
    let head = SignedHead::new(&id, &id.instance, 12, &real_last);
    // Every checkpoint deleted and the chain re-hashed from a modified record.
    let db = t.0.join("audit.db");
    drop(store);
    let conn = rusqlite::Connection::open(&db).unwrap();
    conn.execute("DELETE FROM checkpoints", []).unwrap();
    let rows: Vec<(i64, i64, String, String, String, String)> = conn
        .prepare("SELECT id, seq, time, kind, body, prev_hash FROM events ORDER BY seq")
        .unwrap()
        .query_map([], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?))
        })
        .unwrap()
        .map(Result::unwrap)
        .collect();
    let mut prev = GENESIS.to_owned();
    for (rowid, seq, _time, _kind, body, _) in rows {
        let body = if seq == 3 {
            body.replace("\"n\":3", "\"n\":333")
        } else {
            body
        };
        let forged = Record::next(&id.instance, "h", seq, &prev, body).unwrap();
        conn.execute(
            "UPDATE events SET body = ?1, prev_hash = ?2, hash = ?3, time = ?4, kind = ?5 WHERE id = ?6",
            rusqlite::params![
                forged.body,
                forged.prev_hash,
                forged.hash,
                forged.time,
                forged.kind,
                rowid
            ],
        )
        .unwrap();
        prev = forged.hash;
    }
    drop(conn);
    let mut store = SqliteStore::open(&db).unwrap();
    // Elsewhere: nothing vouches for any record.
    let problem = verify(&mut store, std::slice::from_ref(&public), None)
        .unwrap()
        .problem
        .unwrap();
    assert_eq!(problem.seq, 1, "{problem}");
    assert!(
        problem.reason.contains("no signature covers records 1 to 12"),
        "{problem}"
    );
    // On the gateway's host: the signed head names the real last record.
    let problem = verify(&mut store, std::slice::from_ref(&public), Some(&head))
        .unwrap()
        .problem
        .unwrap();
    assert_eq!(problem.seq, 12, "{problem}");
    assert!(problem.reason.contains("signed head"), "{problem}");
    // A head rewritten along with the records does not verify.
    let rewritten = SignedHead {
        hash: prev.clone(),
        ..head.clone()
    };
    let problem = verify(&mut store, &[public], Some(&rewritten))
        .unwrap()
        .problem
        .unwrap();
    assert!(problem.reason.contains("signature is not valid"), "{problem}");
}
