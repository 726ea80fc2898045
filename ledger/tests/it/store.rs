//! Both stores against the same expectations: submission, idempotency,
//! sequencing, proofs from stored nodes, append-only triggers.

use caracal_ledger::batch::{Batch, BatchSigner};
use caracal_ledger::hash::leaf_hash;
use caracal_ledger::keys::KeyPair;
use caracal_ledger::proof::{
    consistency_ranges, inclusion_ranges, verify_consistency, verify_inclusion,
};
use caracal_ledger::store::{Ledger, LedgerStore, PgStore, SequenceOutcome, StoreError};
use caracal_ledger::tree::{MemoryTree, range_hash, range_keys};
use caracal_ledger::verify::{Scope, Trust, verify_store};

use crate::common::*;

/// Trust in `key`'s checkpoints (origin [`ORIGIN`]) and `gw`'s batches.
fn trust_of(key: &KeyPair, gw: &BatchSigner) -> Trust {
    Trust {
        log_keys: vec![key.public().clone()],
        submitters: vec![gw.public().clone()],
        origin: Some(ORIGIN.into()),
        known_checkpoints: vec![],
    }
}

async fn exercise(ledger: Ledger) {
    let key = log_key();
    let gw = gateway();

    // Unknown gateways are refused before anything is stored.
    let refused = ledger.submit(batch(&gw, 0..3)).await;
    assert!(matches!(refused, Err(StoreError::Batch(_))), "{refused:?}");

    filled(&ledger, &key, &gw, 3, 7).await;

    // Resubmitting a batch, or an overlapping one, adds only the new events.
    let again = ledger.submit(batch(&gw, 0..7)).await.unwrap();
    assert_eq!((again.accepted, again.duplicates), (0, 7));
    let overlap = ledger.submit(batch(&gw, 19..25)).await.unwrap();
    assert_eq!((overlap.accepted, overlap.duplicates), (4, 2));
    let queued_twice = ledger.submit(batch(&gw, 21..25)).await.unwrap();
    assert_eq!(queued_twice.accepted, 0);
    assert!(ledger.has_pending().await.unwrap());
    let seq = ledger.sequence_pending(&key).await.unwrap();
    assert_eq!((seq.appended, seq.size), (4, 25));
    assert!(!ledger.has_pending().await.unwrap());
    let idle = ledger.sequence_pending(&key).await.unwrap();
    assert_eq!((idle.appended, idle.checkpoint), (0, None));

    // The stored log equals an in-memory tree over the same bytes.
    let entries = ledger.entries(0, 100).await.unwrap();
    assert_eq!(entries.len(), 25);
    let mut mem = MemoryTree::new();
    for (i, e) in entries.iter().enumerate() {
        assert_eq!(e.index, i as u64);
        mem.push(leaf_hash(&e.leaf));
    }
    assert_eq!(mem.root(), seq.root);

    // Proofs assembled from stored nodes verify against the signed roots.
    let checkpoints = ledger.checkpoints().await.unwrap();
    assert_eq!(
        checkpoints.iter().map(|c| c.size).collect::<Vec<_>>(),
        vec![7, 14, 21, 25]
    );
    for index in [0u64, 6, 13, 24] {
        let ranges = inclusion_ranges(index, 25).unwrap();
        let keys: Vec<_> = ranges.iter().flat_map(|r| range_keys(*r)).collect();
        let nodes = ledger.nodes(&keys).await.unwrap();
        let proof: Vec<_> = ranges
            .iter()
            .map(|r| range_hash(*r, &|k| nodes.get(&k).copied()).unwrap())
            .collect();
        verify_inclusion(
            index,
            25,
            &leaf_hash(&entries[index as usize].leaf),
            &proof,
            &seq.root,
        )
        .unwrap();
    }
    let ranges = consistency_ranges(7, 25).unwrap();
    let keys: Vec<_> = ranges.iter().flat_map(|r| range_keys(*r)).collect();
    let nodes = ledger.nodes(&keys).await.unwrap();
    let proof: Vec<_> = ranges
        .iter()
        .map(|r| range_hash(*r, &|k| nodes.get(&k).copied()).unwrap())
        .collect();
    verify_consistency(7, 25, &mem.root_at(7).unwrap(), &seq.root, &proof).unwrap();

    // Lookups.
    let e = caracal_ledger::event::MeteringEvent::example(22);
    assert_eq!(
        ledger.entry_by_event(e.id).await.unwrap().unwrap().index,
        22
    );
    let status = ledger.status().await.unwrap();
    assert_eq!((status.entries, status.pending), (25, 0));
    assert_eq!(status.latest_checkpoint.unwrap().size, 25);
    assert_eq!(status.log_keys, vec![key.public().to_vkey()]);
    let agent = ledger
        .entries_matching(Some("team-a/agent-3"), None, None)
        .await
        .unwrap();
    assert_eq!(
        agent.iter().map(|e| e.index).collect::<Vec<_>>(),
        vec![3, 10, 17, 24]
    );

    // The whole thing verifies, fully and by range.
    let trust = trust_of(&key, &gw);
    let report = verify_store(&ledger, &trust, Scope::Full).await.unwrap();
    assert!(report.is_intact(), "{:?}", report.problems);
    assert_eq!(
        (report.entries_checked, report.checkpoints_matched),
        (25, 4)
    );
    let ranged = verify_store(&ledger, &trust, Scope::Range { from: 9, to: 15 })
        .await
        .unwrap();
    assert!(ranged.is_intact(), "{:?}", ranged.problems);
    assert_eq!(ranged.entries_checked, 21 - 9);

    // A rotated log key keeps extending the same log; both keys verify it.
    let rotated = KeyPair::generate(ORIGIN).unwrap();
    ledger.submit(batch(&gw, 25..30)).await.unwrap();
    ledger.sequence_pending(&rotated).await.unwrap();
    let trust = Trust {
        log_keys: vec![key.public().clone(), rotated.public().clone()],
        ..trust
    };
    let report = verify_store(&ledger, &trust, Scope::Full).await.unwrap();
    assert!(report.is_intact(), "{:?}", report.problems);
    assert_eq!(report.checkpoints_matched, 5);

    // A batch larger than one multi-row statement (SQLite writes 128 rows
    // per statement), overlapping what is logged: only new events land, in
    // order, and the log still verifies.
    let big = ledger.submit(batch(&gw, 28..330)).await.unwrap();
    assert_eq!((big.accepted, big.duplicates), (300, 2));
    let seq = ledger.sequence_pending(&rotated).await.unwrap();
    assert_eq!((seq.appended, seq.size), (300, 330));
    let e = caracal_ledger::event::MeteringEvent::example(200);
    assert_eq!(
        ledger.entry_by_event(e.id).await.unwrap().unwrap().index,
        200
    );
    let report = verify_store(&ledger, &trust, Scope::Full).await.unwrap();
    assert!(report.is_intact(), "{:?}", report.problems);
    assert_eq!(report.entries_checked, 330);
}

#[tokio::test]
async fn postgres_store_behaves() {
    let db = TestDb::new().await;
    exercise(Ledger::open(&db.url).await.unwrap()).await;
}

#[tokio::test]
async fn sqlite_store_behaves() {
    let file = TestFile::new();
    exercise(Ledger::open(&file.url()).await.unwrap()).await;
}

#[tokio::test]
async fn postgres_refuses_update_delete_truncate() {
    let db = TestDb::new().await;
    let ledger = Ledger::open(&db.url).await.unwrap();
    filled(&ledger, &log_key(), &gateway(), 1, 3).await;
    let Ledger::Postgres(pg) = &ledger else {
        unreachable!()
    };
    for sql in [
        "UPDATE ledger_entries SET agent = 'x' WHERE idx = 0",
        "DELETE FROM ledger_entries WHERE idx = 2",
        "TRUNCATE ledger_entries",
        "UPDATE ledger_checkpoints SET note = 'x'",
        "DELETE FROM ledger_nodes",
        "DELETE FROM ledger_batches",
        "UPDATE ledger_log_keys SET vkey = 'x'",
        "DELETE FROM ledger_submitters",
    ] {
        let err = sqlx::query(sql).execute(pg.pool()).await.expect_err(sql);
        assert!(err.to_string().contains("append-only"), "{sql}: {err}");
    }
    assert_eq!(ledger.entry_bound().await.unwrap(), 3);
}

/// Pages of `ledger_entries` that the visibility map marks all-visible
/// (set by VACUUM, and 0 until the first one).
async fn all_visible_pages(pg: &PgStore) -> i32 {
    sqlx::query_scalar("SELECT relallvisible FROM pg_class WHERE oid = 'ledger_entries'::regclass")
        .fetch_one(pg.pool())
        .await
        .unwrap()
}

/// A database that cannot be reached is reported as what is wrong, at once,
/// not as a pool that timed out half a minute later.
#[tokio::test]
async fn postgres_that_cannot_be_reached_is_reported_at_once() {
    let admin = admin_url();
    let base = admin.rsplit_once('/').map(|(b, _)| b).unwrap_or(&admin);
    let cases = [
        // Nothing listens on port 1.
        (
            "postgres://postgres@127.0.0.1:1/caracal".to_owned(),
            "refused",
        ),
        (
            format!("{base}/caracal_no_such_database"),
            "caracal_no_such_database",
        ),
    ];
    for (url, says) in cases {
        let started = std::time::Instant::now();
        let Err(error) = PgStore::open(&url).await else {
            panic!("{url}: opened a store");
        };
        assert!(
            started.elapsed() < std::time::Duration::from_secs(5),
            "{url}: took {:?}",
            started.elapsed()
        );
        let text = error.to_string();
        assert!(text.contains(says), "{url}: {text}");
    }
}

/// The sequencer keeps the entry table's visibility map current, so that
/// full verification reads the verify records from the index alone: once
/// its floor of new entries has passed it vacuums `ledger_entries` in the
/// background, and not before.
#[tokio::test]
async fn postgres_sequencer_vacuums_the_entries_behind_itself() {
    let db = TestDb::new().await;
    let ledger = Ledger::Postgres(PgStore::open(&db.url).await.unwrap().with_vacuum_floor(100));
    let Ledger::Postgres(pg) = &ledger else {
        unreachable!()
    };
    let (key, gw) = (log_key(), gateway());
    ledger.register_submitter(gw.public()).await.unwrap();
    ledger.submit(batch(&gw, 0..99)).await.unwrap();
    assert_eq!(ledger.sequence_pending(&key).await.unwrap().size, 99);
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert_eq!(all_visible_pages(pg).await, 0, "below the floor: no vacuum");

    ledger.submit(batch(&gw, 99..150)).await.unwrap();
    assert_eq!(ledger.sequence_pending(&key).await.unwrap().size, 150);
    let mut waited = 0;
    while all_visible_pages(pg).await == 0 {
        assert!(waited < 100, "no vacuum within 5 s of passing the floor");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        waited += 1;
    }
    // The log verifies as before.
    let report = verify_store(&ledger, &trust_of(&key, &gw), Scope::Full)
        .await
        .unwrap();
    assert!(report.problems.is_empty(), "{:?}", report.problems);
}

#[tokio::test]
async fn sqlite_refuses_update_delete() {
    let file = TestFile::new();
    let ledger = Ledger::open(&file.url()).await.unwrap();
    filled(&ledger, &log_key(), &gateway(), 1, 3).await;
    let Ledger::Sqlite(lite) = &ledger else {
        unreachable!()
    };
    for sql in [
        "UPDATE ledger_entries SET agent = 'x' WHERE idx = 0",
        "DELETE FROM ledger_entries WHERE idx = 2",
        "UPDATE ledger_checkpoints SET note = 'x'",
        "DELETE FROM ledger_nodes",
    ] {
        let err = sqlx::query(sql).execute(lite.pool()).await.expect_err(sql);
        assert!(err.to_string().contains("append-only"), "{sql}: {err}");
    }
}

#[tokio::test]
async fn concurrent_sequencers_keep_indexes_dense() {
    let db = TestDb::new().await;
    let ledger = Ledger::open(&db.url).await.unwrap();
    let key = log_key();
    let gw = gateway();
    ledger.register_submitter(gw.public()).await.unwrap();
    for b in 0..8u64 {
        ledger
            .submit(batch(&gw, b * 50..(b + 1) * 50))
            .await
            .unwrap();
    }
    let mut tasks = vec![];
    for _ in 0..4 {
        let (l, k) = (ledger.clone(), key.clone());
        tasks.push(tokio::spawn(async move {
            l.sequence_pending(&k).await.unwrap()
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(ledger.entry_bound().await.unwrap(), 400);
    let trust = trust_of(&key, &gw);
    let report = verify_store(&ledger, &trust, Scope::Full).await.unwrap();
    assert!(report.is_intact(), "{:?}", report.problems);
}

/// An event queued again after it was logged (a submission racing the
/// sequencer) is dropped from the queue, never logged twice.
#[tokio::test]
async fn requeued_logged_event_is_dropped_not_appended() {
    let db = TestDb::new().await;
    let ledger = Ledger::open(&db.url).await.unwrap();
    let key = log_key();
    let gw = gateway();
    filled(&ledger, &key, &gw, 1, 4).await;
    let Ledger::Postgres(pg) = &ledger else {
        unreachable!()
    };
    // Recreate the race's end state: a logged event back in the queue.
    sqlx::query(
        "INSERT INTO ledger_pending (event_id, batch_root, batch_pos, leaf, event_time, agent)
         SELECT event_id, batch_root, batch_pos, leaf, event_time, agent FROM ledger_entries WHERE idx = 2",
    )
    .execute(pg.pool())
    .await
    .unwrap();
    ledger.submit(batch(&gw, 4..6)).await.unwrap();
    let out = ledger.sequence_pending(&key).await.unwrap();
    assert_eq!((out.appended, out.size), (2, 6));
    assert_eq!(ledger.status().await.unwrap().pending, 0);
    let only_dup = ledger.sequence_pending(&key).await.unwrap();
    assert_eq!(only_dup.appended, 0);
    let trust = trust_of(&key, &gw);
    assert!(
        verify_store(&ledger, &trust, Scope::Full)
            .await
            .unwrap()
            .is_intact()
    );
}

/// How a test calls `Ledger::submit_and_sequence`: from the async task, or
/// through `submit_and_sequence_blocking` from a thread that may block.
#[derive(Clone, Copy)]
enum Caller {
    Async,
    Blocking,
}

impl Caller {
    async fn submit_and_sequence(
        self,
        ledger: &Ledger,
        batch: Batch,
        key: &KeyPair,
    ) -> Result<SequenceOutcome, StoreError> {
        match self {
            Caller::Async => ledger.submit_and_sequence(batch, key).await,
            Caller::Blocking => {
                let runtime = tokio::runtime::Handle::current();
                tokio::task::block_in_place(|| {
                    ledger.submit_and_sequence_blocking(batch, key, &runtime)
                })
            }
        }
    }
}

/// `Ledger::submit_and_sequence`, the path of a process that is its own
/// sequencer: SQLite writes straight into the log, Postgres queues and steps.
async fn submit_and_sequence_appends_in_order(ledger: Ledger, caller: Caller) {
    let key = log_key();
    let gw = gateway();
    let refused = caller
        .submit_and_sequence(&ledger, batch(&gw, 0..3), &key)
        .await;
    assert!(matches!(refused, Err(StoreError::Batch(_))), "{refused:?}");
    assert_eq!(ledger.status().await.unwrap().entries, 0);
    ledger.register_submitter(gw.public()).await.unwrap();

    let first = caller
        .submit_and_sequence(&ledger, batch(&gw, 0..5), &key)
        .await
        .unwrap();
    assert_eq!((first.appended, first.size), (5, 5));
    assert!(first.checkpoint.is_some());

    // Events queued by plain `submit` go first, so arrival order holds.
    ledger.submit(batch(&gw, 5..8)).await.unwrap();
    let after_queue = caller
        .submit_and_sequence(&ledger, batch(&gw, 8..10), &key)
        .await
        .unwrap();
    assert_eq!(after_queue.size, 10);
    assert_eq!(ledger.status().await.unwrap().pending, 0);

    // Resubmitting adds only what is new; a full repeat signs nothing.
    let overlap = caller
        .submit_and_sequence(&ledger, batch(&gw, 8..12), &key)
        .await
        .unwrap();
    assert_eq!((overlap.appended, overlap.size), (2, 12));
    let repeat = caller
        .submit_and_sequence(&ledger, batch(&gw, 8..12), &key)
        .await
        .unwrap();
    assert_eq!((repeat.appended, repeat.checkpoint), (0, None));

    // More rows than one multi-row statement holds.
    let big = caller
        .submit_and_sequence(&ledger, batch(&gw, 12..312), &key)
        .await
        .unwrap();
    assert_eq!((big.appended, big.size), (300, 312));

    let entries = ledger.entries(0, 400).await.unwrap();
    let ids: Vec<_> = entries.iter().map(|e| e.event_id).collect();
    let want: Vec<_> = events(0..312).iter().map(|e| e.id).collect();
    assert_eq!(ids, want, "every event once, at its own index");
    let agent = ledger
        .entries_matching(Some("team-a/agent-3"), None, None)
        .await
        .unwrap();
    assert_eq!(
        agent.iter().map(|e| e.index).collect::<Vec<_>>(),
        (0..312).filter(|i| i % 7 == 3).collect::<Vec<_>>()
    );
    let trust = trust_of(&key, &gw);
    let report = verify_store(&ledger, &trust, Scope::Full).await.unwrap();
    assert!(report.is_intact(), "{:?}", report.problems);
    assert_eq!(report.entries_checked, 312);
}

#[tokio::test]
async fn sqlite_submit_and_sequence_appends_in_order() {
    let file = TestFile::new();
    let ledger = Ledger::open(&file.url()).await.unwrap();
    submit_and_sequence_appends_in_order(ledger, Caller::Async).await;
}

/// The same from a thread that may block, as `caracal dev` stores batches.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_submit_and_sequence_blocking_appends_in_order() {
    let file = TestFile::new();
    let ledger = Ledger::open(&file.url()).await.unwrap();
    submit_and_sequence_appends_in_order(ledger, Caller::Blocking).await;
}

/// Two processes appending to one SQLite file in turn: each reads the right
/// edge the other left instead of reusing its own from its last batch.
#[tokio::test]
async fn sqlite_submit_and_sequence_by_turns_from_two_stores() {
    let file = TestFile::new();
    let (one, two) = (
        Ledger::open(&file.url()).await.unwrap(),
        Ledger::open(&file.url()).await.unwrap(),
    );
    let key = log_key();
    let gw = gateway();
    one.register_submitter(gw.public()).await.unwrap();
    let mut root = None;
    for (ledger, range) in [(&one, 0..5), (&two, 5..9), (&one, 9..12), (&two, 12..13)] {
        let end = range.end;
        let out = ledger
            .submit_and_sequence(batch(&gw, range), &key)
            .await
            .unwrap();
        assert_eq!(out.size, end);
        root = Some(out.root);
    }
    let mut mem = MemoryTree::new();
    for e in events(0..13) {
        mem.push(leaf_hash(&e.encode().unwrap()));
    }
    assert_eq!(one.status().await.unwrap().entries, 13);
    let report = verify_store(&two, &trust_of(&key, &gw), Scope::Full)
        .await
        .unwrap();
    assert!(report.is_intact(), "{:?}", report.problems);
    assert_eq!(root, Some(mem.root()));
}

#[tokio::test]
async fn postgres_submit_and_sequence_appends_in_order() {
    let db = TestDb::new().await;
    let ledger = Ledger::open(&db.url).await.unwrap();
    submit_and_sequence_appends_in_order(ledger, Caller::Async).await;
}
