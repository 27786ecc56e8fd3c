//! Tamper evidence: verification names the first modified, deleted or
//! reordered record, and a store writer without the signing key cannot
//! pass it (checkpoints deleted and the chain re-hashed; the tail after the
//! last checkpoint rewritten); checkpoints come by count, by interval and at
//! stop.
use std::process::Command;

use interlock_tests::{unique, wait_for, Gateway, GatewayOptions, TestCgroup, Upstream};

use super::{curl, search, web_target};

/// Runs Python's sqlite3 on the store.
fn sql(db: &std::path::Path, script: &str) {
    let code = format!(
        "import sqlite3, sys\nc = sqlite3.connect(sys.argv[1])\nc.executescript({script:?})\nc.commit()\nc.execute('PRAGMA wal_checkpoint(TRUNCATE)')\nc.close()"
    );
    let out = Command::new("python3").args(["-c", &code]).arg(db).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn verify_names_the_first_modified_deleted_or_reordered_record() {
    let cg = TestCgroup::new(&unique("auditverify"));
    let web = Upstream::start("127.0.0.42");
    let mut gw = Gateway::start(
        &cg,
        GatewayOptions {
            extra_toml: vec![web_target(&web), "[audit]\ncheckpoint_every = 5\n".into()],
            ..Default::default()
        },
    );
    for i in 0..8 {
        assert!(curl(&cg, &format!("http://{}/r{i}", web.addr)).ends_with("200"));
    }
    wait_for(10, || {
        (search(&gw, &["--kind", "http_exchange"]).len() == 8).then_some(())
    });
    assert!(gw.stop().success());
    let db = gw.state_dir().join("audit.db");
    sql(&db, "SELECT 1;");
    let backup = gw.state_dir().join("audit.db.good");
    std::fs::copy(&db, &backup).unwrap();
    let verify = |gw: &Gateway| {
        let out = gw.cli(&["audit", "verify"]);
        (out.status.success(), String::from_utf8_lossy(&out.stderr).into_owned())
    };
    assert!(verify(&gw).0, "{}", verify(&gw).1);
    let total = search(&gw, &[]).len() as i64;
    assert!(total >= 16, "{total}");
    let cases: Vec<(&str, String, &str)> = vec![
        ("modified", "UPDATE events SET body = replace(body, '/r3', '/r9') WHERE body LIKE '%/r3%' AND kind = 'http_exchange';".into(), "modified"),
        ("deleted", "DELETE FROM events WHERE seq = 9;".into(), "seq 9: missing"),
        (
            "reordered",
            "UPDATE events SET seq = -1 WHERE seq = 6; UPDATE events SET seq = 6 WHERE seq = 7; UPDATE events SET seq = 7 WHERE seq = -1;".into(),
            "seq 6",
        ),
        ("tail removed", format!("DELETE FROM events WHERE seq > {};", total - 3), "deleted"),
        // Checkpoints fall at the end of the store's batches, so at no fixed seq.
        ("checkpoint forged", "UPDATE checkpoints SET signature = (CASE WHEN substr(signature, 1, 2) = 'ff' THEN '00' ELSE 'ff' END) || substr(signature, 3) WHERE seq = (SELECT min(seq) FROM checkpoints);".into(), "signature"),
    ];
    for (what, script, expected) in cases {
        std::fs::copy(&backup, &db).unwrap();
        sql(&db, &script);
        let (ok, err) = verify(&gw);
        assert!(!ok, "{what}: verify passed");
        assert!(err.contains(expected), "{what}: {err}");
    }
    // Rewriting a record and re-hashing the rest of the chain is caught by
    // the next signed checkpoint.
    std::fs::copy(&backup, &db).unwrap();
    rehash_from(&db, 3, false);
    let (ok, err) = verify(&gw);
    assert!(!ok && err.contains("signed checkpoint"), "{err}");
    std::fs::copy(&backup, &db).unwrap();
    assert!(verify(&gw).0);
}

/// The store's newest record's seq and newest checkpoint's seq (0 for none).
fn newest_seqs(db: &std::path::Path) -> (i64, i64) {
    let script = "import sqlite3, sys\nc = sqlite3.connect(sys.argv[1])\nprint(c.execute('SELECT coalesce(max(seq), 0) FROM events').fetchone()[0], c.execute('SELECT coalesce(max(seq), 0) FROM checkpoints').fetchone()[0])";
    let out = Command::new("python3").args(["-c", script]).arg(db).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let mut it = text.split_whitespace().map(|n| n.parse::<i64>().unwrap_or(-1));
    (it.next().unwrap_or(-1), it.next().unwrap_or(-1))
}

/// Re-hashes the chain from the record at `from` on (after changing its
/// body), as a store writer without the signing key would; with
/// `drop_checkpoints`, deletes every checkpoint first.
fn rehash_from(db: &std::path::Path, from: i64, drop_checkpoints: bool) {
    let code = format!(
        "import hashlib, sqlite3, sys
def h(parts):
    m = hashlib.sha256()
    for p in parts:
        b = p.encode()
        m.update(len(b).to_bytes(8, 'big')); m.update(b)
    return m.hexdigest()
c = sqlite3.connect(sys.argv[1])
if {drop}:
    c.execute('DELETE FROM checkpoints')
rows = c.execute('SELECT id, instance, seq, time, kind, body, prev_hash FROM events WHERE seq >= {from} ORDER BY seq').fetchall()
prev = None
for (id, inst, seq, time, kind, body, prev_hash) in rows:
    if seq == {from}:
        body = body.replace('\"time\"', '\"time\" ')
        prev = prev_hash
    new = h([inst, str(seq), time, kind, body, prev])
    c.execute('UPDATE events SET body = ?, prev_hash = ?, hash = ? WHERE id = ?', (body, prev, new, id))
    prev = new
c.commit()
c.execute('PRAGMA wal_checkpoint(TRUNCATE)')
",
        drop = if drop_checkpoints { "True" } else { "False" }
    );
    let out = Command::new("python3").args(["-c", &code]).arg(db).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn a_store_writer_without_the_signing_key_cannot_pass_verify() {
    let cg = TestCgroup::new(&unique("auditforge"));
    let web = Upstream::start("127.0.0.43");
    let mut gw = Gateway::start(
        &cg,
        GatewayOptions {
            extra_toml: vec![web_target(&web), "[audit]\ncheckpoint_every = 5\n".into()],
            ..Default::default()
        },
    );
    // Requests until the newest records are past the last checkpoint (a
    // batch that crosses a multiple of 5 ends on one).
    let checkpoint_at_end = |gw: &Gateway| {
        let (last, checkpoint) = newest_seqs(&gw.state_dir().join("audit.db"));
        last == checkpoint
    };
    let mut sent = 0;
    while sent < 6 || checkpoint_at_end(&gw) {
        assert!(sent < 30, "every batch ended on a checkpoint");
        assert!(curl(&cg, &format!("http://{}/f{sent}", web.addr)).ends_with("200"));
        sent += 1;
        wait_for(10, || {
            (search(&gw, &["--kind", "http_exchange"]).len() == sent).then_some(())
        });
        // The connection event follows the exchange.
        wait_for(10, || {
            (search(&gw, &["--kind", "connection"]).len() == sent).then_some(())
        });
    }
    // Killed: no checkpoint at stop, so the newest records are covered by
    // the signed head file alone.
    gw.kill9();
    let db = gw.state_dir().join("audit.db");
    let head = gw.state_dir().join("audit-head");
    let key = gw.state_dir().join("audit-signing.pub");
    let (backup, head_backup) = (
        gw.state_dir().join("audit.db.good"),
        gw.state_dir().join("audit-head.good"),
    );
    sql(&db, "SELECT 1;");
    std::fs::copy(&db, &backup).unwrap();
    std::fs::copy(&head, &head_backup).unwrap();
    let verify = |gw: &Gateway| {
        let out = gw.cli(&["audit", "verify", "--key", key.to_str().unwrap()]);
        (out.status.success(), String::from_utf8_lossy(&out.stderr).into_owned())
    };
    let (ok, err) = verify(&gw);
    assert!(ok, "{err}");
    let total = search(&gw, &[]).len() as i64;
    let last_checkpoint = newest_seqs(&db).1;
    assert!(
        last_checkpoint < total,
        "the test needs records after the last checkpoint"
    );

    // Every checkpoint deleted and the chain re-hashed from a modified record.
    rehash_from(&db, 3, true);
    let (ok, err) = verify(&gw);
    assert!(!ok, "verify passed with the checkpoints deleted");
    assert!(
        err.contains(&format!("seq {total}")) && err.contains("signed head"),
        "{err}"
    );
    // ... and verified away from the gateway's host (no head file): no
    // signature covers any record.
    std::fs::remove_file(&head).unwrap();
    let (ok, err) = verify(&gw);
    assert!(
        !ok && err.contains(&format!("no signature covers records 1 to {total}")),
        "{err}"
    );

    // The records after the last checkpoint rewritten and re-hashed.
    std::fs::copy(&backup, &db).unwrap();
    std::fs::copy(&head_backup, &head).unwrap();
    rehash_from(&db, last_checkpoint + 1, false);
    let (ok, err) = verify(&gw);
    assert!(!ok, "verify passed with the tail rewritten");
    assert!(err.contains("signed head"), "{err}");
    // ... with the head file rewritten along with them: not signed.
    let line = std::fs::read_to_string(&head).unwrap();
    let mut parts = line.split_whitespace();
    let (instance, seq) = (parts.next().unwrap(), parts.next().unwrap());
    std::fs::write(&head, format!("{instance} {seq} {}\n", "0".repeat(64))).unwrap();
    let (ok, err) = verify(&gw);
    assert!(!ok && err.contains("not signed"), "{err}");
    // The gateway itself does not go on over a store it did not write.
    std::fs::copy(&head_backup, &head).unwrap();
    let out = Command::new("timeout")
        .arg("20")
        .arg(interlock_tests::gateway::binary())
        .arg("--config")
        .arg(gw.config_path())
        .arg("run")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "the gateway started on a rewritten store");
    assert!(stderr.contains("changed while the gateway was down"), "{stderr}");
}

#[test]
fn checkpoints_come_at_least_every_interval_and_when_the_gateway_stops() {
    let cg = TestCgroup::new(&unique("auditinterval"));
    let web = Upstream::start("127.0.0.44");
    let mut gw = Gateway::start(
        &cg,
        GatewayOptions {
            extra_toml: vec![web_target(&web), "[audit]\ncheckpoint_interval = \"1s\"\n".into()],
            ..Default::default()
        },
    );
    let covered = |gw: &Gateway| newest_seqs(&gw.state_dir().join("audit.db"));
    assert!(curl(&cg, &format!("http://{}/a", web.addr)).ends_with("200"));
    // Quiet afterwards: signed once the interval is up, not 1000 records later.
    let signed = wait_for(10, || {
        let (last, cp) = covered(&gw);
        (last > 0 && last == cp).then_some(())
    });
    assert!(
        signed.is_some(),
        "no checkpoint covers the newest records: {:?}",
        covered(&gw)
    );
    assert!(curl(&cg, &format!("http://{}/b", web.addr)).ends_with("200"));
    assert!(gw.stop().success());
    let (last, cp) = covered(&gw);
    assert_eq!(last, cp, "the stop left records no checkpoint covers");
}
