//! Export and offline verification, and proofs served from a store.

use caracal_ledger::export::{read_export, verify_export, write_export};
use caracal_ledger::keys::KeyPair;
use caracal_ledger::prove::{ProveError, prove_consistency, prove_event};
use caracal_ledger::store::{Ledger, LedgerStore};
use caracal_ledger::verify::{Scope, Trust, verify_store};
use sqlx::{Connection, Executor, PgConnection};

use crate::common::*;

async fn small_log(url: &str) -> (Ledger, KeyPair, caracal_ledger::BatchSigner) {
    let ledger = Ledger::open(url).await.unwrap();
    let key = log_key();
    let gw = gateway();
    filled(&ledger, &key, &gw, 3, 9).await;
    (ledger, key, gw)
}

fn trust(key: &KeyPair) -> Trust {
    Trust {
        log_keys: vec![key.public().clone()],
        ..Trust::default()
    }
}

#[tokio::test]
async fn export_verifies_offline_and_tampering_is_caught() {
    let file = TestFile::new();
    let (ledger, key, _) = small_log(&file.url()).await;
    let mut out = Vec::new();
    assert_eq!(write_export(&ledger, &mut out).await.unwrap(), 27);
    let text = String::from_utf8(out).unwrap();

    let export = read_export(text.as_bytes()).unwrap();
    let report = verify_export(&export, trust(&key));
    assert!(report.is_intact(), "{:?}", report.problems);
    assert_eq!(
        (
            report.entries_checked,
            report.checkpoints_matched,
            report.batches_checked
        ),
        (27, 3, 3)
    );

    // A different log key proves nothing.
    let stranger = KeyPair::generate(ORIGIN).unwrap();
    assert!(!verify_export(&export, trust(&stranger)).is_intact());

    // Nor does an export of nothing: its header alone, or everything but
    // its entries and checkpoints.
    let header = text.lines().next().unwrap();
    let bare = read_export(format!("{header}\n").as_bytes()).unwrap();
    let report = verify_export(&bare, trust(&key));
    assert!(!report.is_intact(), "{report:?}");
    assert!(
        report.problems[0]
            .what
            .contains("nothing in it is authenticated"),
        "{report:?}"
    );

    // One entry's bytes changed (a token count), everything else kept.
    let mut tampered = export.clone();
    let e = &mut tampered.entries[11];
    let pos = e.leaf.windows(8).position(|w| w == b"\"input\":").unwrap() + 8;
    e.leaf[pos] = if e.leaf[pos] == b'9' { b'8' } else { b'9' };
    assert_eq!(
        verify_export(&tampered, trust(&key)).first_bad_index(),
        Some(11)
    );

    // An entry dropped from the file.
    let mut dropped = export.clone();
    dropped.entries.remove(20);
    assert_eq!(
        verify_export(&dropped, trust(&key)).first_bad_index(),
        Some(20)
    );

    // The file's tail cut off (entries and the last checkpoint kept apart).
    let mut cut = export.clone();
    cut.entries.truncate(22);
    assert_eq!(verify_export(&cut, trust(&key)).first_bad_index(), Some(22));

    // Not an export at all.
    assert!(read_export(&b"{\"type\":\"entry\"}\n"[..]).is_err());
    assert!(read_export(&b""[..]).is_err());
}

#[tokio::test]
async fn proofs_are_served_and_a_damaged_node_is_refused() {
    let db = TestDb::new().await;
    let (ledger, key, _) = small_log(&db.url).await;
    let t = trust(&key);
    let event = caracal_ledger::MeteringEvent::example(13);
    let p = prove_event(&ledger, event.id, &t).await.unwrap();
    assert_eq!((p.index, p.checkpoint.size), (13, 27));
    assert_eq!(p.leaf, event.encode().unwrap());
    let c = prove_consistency(&ledger, 9, None, &t).await.unwrap();
    assert_eq!((c.old.size, c.new.size), (9, 27));
    assert!(!c.proof.is_empty());
    let missing = prove_consistency(&ledger, 10, None, &t).await;
    let Err(
        e @ ProveError::NoCheckpoint {
            size: 10,
            before: Some(b),
            after: Some(a),
        },
    ) = missing
    else {
        panic!("{missing:?}");
    };
    assert!(b < 10 && a > 10, "{e}");
    assert_eq!(
        e.to_string(),
        format!("no signed checkpoint at size 10 (the nearest are at sizes {b} and {a})")
    );
    let unknown = caracal_ledger::MeteringEvent::example(999).id;
    assert!(matches!(
        prove_event(&ledger, unknown, &t).await,
        Err(ProveError::UnknownEvent(_))
    ));
    let stranger = trust(&KeyPair::generate(ORIGIN).unwrap());
    assert!(matches!(
        prove_event(&ledger, event.id, &stranger).await,
        Err(ProveError::BadCheckpoint { .. })
    ));

    // Corrupt a node the proof for index 13 needs: the proof is refused, never printed.
    let mut attacker = PgConnection::connect(&db.url).await.unwrap();
    attacker
        .execute("SET session_replication_role = replica")
        .await
        .unwrap();
    attacker
        .execute("UPDATE ledger_nodes SET hash = sha256(hash) WHERE level = 0 AND idx = 12")
        .await
        .unwrap();
    assert!(matches!(
        prove_event(&ledger, event.id, &t).await,
        Err(ProveError::Invalid(_))
    ));
}

#[tokio::test]
async fn sqlite_tampering_is_caught_too() {
    let file = TestFile::new();
    let (ledger, key, gw) = small_log(&file.url()).await;
    let Ledger::Sqlite(lite) = &ledger else {
        unreachable!()
    };
    sqlx::raw_sql(
        "DROP TRIGGER ledger_entries_no_delete;
         DELETE FROM ledger_entries WHERE idx = 4;",
    )
    .execute(lite.pool())
    .await
    .unwrap();
    let t = Trust {
        submitters: vec![gw.public().clone()],
        ..trust(&key)
    };
    let report = verify_store(&ledger, &t, Scope::Full).await.unwrap();
    assert_eq!(report.first_bad_index(), Some(4), "{:#?}", report.problems);
}

/// An entry inserted far beyond the end of a SQLite log (inserts are not
/// refused by the append-only triggers): named at once, not after walking
/// every empty range up to it.
#[tokio::test]
async fn sqlite_entry_inserted_far_beyond_the_end_is_caught_at_once() {
    let file = TestFile::new();
    let (ledger, key, gw) = small_log(&file.url()).await;
    let Ledger::Sqlite(lite) = &ledger else {
        unreachable!()
    };
    sqlx::raw_sql(
        "INSERT INTO ledger_entries (idx, event_id, leaf, batch_root, batch_pos, event_time, agent)
         VALUES (4611686018427387904, randomblob(16), x'7b7d', zeroblob(32), 0, 0, 'a/b');",
    )
    .execute(lite.pool())
    .await
    .unwrap();
    assert_eq!(ledger.first_index_from(27).await.unwrap(), Some(1 << 62));
    assert_eq!(ledger.first_index_from(3).await.unwrap(), Some(3));
    assert_eq!(ledger.first_index_from((1 << 62) + 1).await.unwrap(), None);
    assert_eq!(ledger.first_index_from(u64::MAX).await.unwrap(), None);
    let t = Trust {
        submitters: vec![gw.public().clone()],
        ..trust(&key)
    };
    let report = tokio::time::timeout(
        std::time::Duration::from_secs(30),
        verify_store(&ledger, &t, Scope::Full),
    )
    .await
    .expect("verification walked empty ranges")
    .unwrap();
    assert_eq!(report.first_bad_index(), Some(27), "{:#?}", report.problems);
    assert_eq!(report.entries_checked, 27);
}
