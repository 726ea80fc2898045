//! `caracal dev`'s sink: batches sequenced into a SQLite ledger, from an
//! idle-priority thread while the machine has idle CPU.

use std::sync::Arc;

use caracal_gateway::{ledger_sink::SequencingSink, spool::LedgerSink};
use caracal_ledger::{
    batch::BatchSigner,
    event::MeteringEvent,
    keys::KeyPair,
    store::{Ledger, LedgerStore},
};

/// (thread name, scheduling policy) of every thread of this process; the
/// policy is field 41 of `/proc/self/task/TID/stat` (5 is `SCHED_IDLE`).
fn threads() -> Vec<(String, u32)> {
    let mut out = Vec::new();
    for task in std::fs::read_dir("/proc/self/task").unwrap().flatten() {
        let Ok(stat) = std::fs::read_to_string(task.path().join("stat")) else {
            continue; // the thread ended meanwhile
        };
        let (head, rest) = stat.rsplit_once(')').unwrap();
        let name = head.split_once('(').unwrap().1.to_owned();
        let policy = rest.split_whitespace().nth(38).unwrap().parse().unwrap();
        out.push((name, policy));
    }
    out
}

const SCHED_IDLE: u32 = 5;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_calm_lane_sequences_batches_from_idle_priority_threads() {
    let dir = std::env::temp_dir().join(format!("caracal-calm-{}", uuid::Uuid::now_v7().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    let url = format!("sqlite:{}", dir.join("ledger.db").display());
    let ledger = Arc::new(Ledger::open(&url).await.unwrap());
    let events: Vec<MeteringEvent> = (0..40).map(MeteringEvent::example).collect();
    let gateway_key = KeyPair::generate(&events[0].gateway_id).unwrap();
    ledger
        .register_submitter(gateway_key.public())
        .await
        .unwrap();
    let sink = SequencingSink::new(
        ledger.clone(),
        BatchSigner::new(gateway_key),
        KeyPair::generate("caracal.test/calm").unwrap(),
    )
    .with_calm_lane(&url)
    .await;
    assert!(sink.has_calm_lane());

    // The lane's thread and the SQLite worker of its connection (started
    // from that thread) run at idle priority; the process's others do not.
    let threads = threads();
    assert!(
        threads
            .iter()
            .any(|(name, policy)| name == "caracal-ledger" && *policy == SCHED_IDLE),
        "{threads:?}"
    );
    assert!(
        threads
            .iter()
            .any(|(name, policy)| name.starts_with("sqlx-sqlite") && *policy == SCHED_IDLE),
        "{threads:?}"
    );
    assert!(
        threads
            .iter()
            .any(|(name, policy)| name.starts_with("sqlx-sqlite") && *policy != SCHED_IDLE),
        "the gateway's own connection keeps normal priority: {threads:?}"
    );

    let encoded: Vec<Vec<u8>> = events.iter().map(|e| e.encode().unwrap()).collect();
    for chunk in encoded.chunks(16) {
        sink.submit(chunk).await.unwrap();
    }
    // Shipped again after a crash: accepted, nothing appended twice.
    sink.submit(&encoded[..16]).await.unwrap();
    let status = ledger.status().await.unwrap();
    assert_eq!(status.entries, 40);
    assert_eq!(status.latest_checkpoint.map(|c| c.size), Some(40));

    drop(sink);
    drop(ledger);
    std::fs::remove_dir_all(&dir).ok();
}
