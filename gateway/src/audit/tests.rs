//! The store, chain and verification together, on a temporary SQLite file.
use serde_json::json;

use super::{
    keys::Identity,
    record::{Record, GENESIS},
    store::{Checkpoint, Reader, SqliteStore, Store},
    verify::{verify, Head},
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
    let head = Head {
        instance: id.instance.clone(),
        seq: 14,
    };
    let problem = verify(&mut store, std::slice::from_ref(&public), Some(&head))
        .unwrap()
        .problem
        .unwrap();
    assert_eq!(problem.seq, 13);
    assert!(problem.reason.contains("deleted"), "{problem}");
    let head = Head {
        instance: id.instance.clone(),
        seq: 12,
    };
    assert!(verify(&mut store, &[public], Some(&head)).unwrap().problem.is_none());
    // A key that did not sign the checkpoints is not trusted.
    let other = vec![7u8; 32];
    let problem = verify(&mut store, &[other], None).unwrap().problem.unwrap();
    assert!(problem.reason.contains("not trusted"), "{problem}");
}
