use std::{sync::Arc, sync::atomic::Ordering, time::Duration};

use caracal_gateway::{
    config::{Limits, ProviderKind},
    spool::{Spool, SpoolConfig},
};
use serde_json::json;

use crate::{harness::*, openai::budgeted_snapshot};

async fn wait_for(sink: &MemorySink, n: usize) {
    for _ in 0..300 {
        if sink.events.lock().unwrap().len() >= n {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!(
        "sink has {} of {n} records",
        sink.events.lock().unwrap().len()
    );
}

/// Open the spool in a directory a dropped spool used: its flusher may still
/// be finishing a batch for a moment, holding the directory's lock.
async fn reopen(config: SpoolConfig, sink: Arc<MemorySink>) -> Spool {
    for _ in 0..200 {
        match Spool::open(config.clone(), sink.clone()) {
            Ok(spool) => return spool,
            Err(e)
                if e.to_string()
                    .contains("another process is using this spool") =>
            {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            Err(e) => panic!("{e}"),
        }
    }
    panic!("the spool directory stayed locked after its spool was dropped");
}

/// What the sink received, as text, in order.
fn shipped_text(sink: &MemorySink) -> Vec<String> {
    sink.events
        .lock()
        .unwrap()
        .iter()
        .map(|b| String::from_utf8(b.clone()).unwrap())
        .collect()
}

#[tokio::test]
async fn unshipped_records_are_replayed_after_a_restart() {
    let dir = TempDir::new();
    let failing = Arc::new(MemorySink::default());
    failing.failing.store(true, Ordering::SeqCst);
    {
        let spool = Spool::open(SpoolConfig::new(&dir.0), failing.clone()).unwrap();
        for i in 0..25u32 {
            spool
                .append(format!("event-{i}").into_bytes())
                .await
                .unwrap();
        }
        assert_eq!(spool.status().pending_records, 25);
    }
    // A torn record, as a crash in the middle of a write leaves.
    tokio::time::sleep(Duration::from_millis(50)).await;
    let path = dir.0.join("events.spool");
    let mut bytes = std::fs::read(&path).unwrap();
    bytes.extend_from_slice(&[0xCA, 9, 0, 0, 0, 1, 2]);
    std::fs::write(&path, &bytes).unwrap();

    let sink = Arc::new(MemorySink::default());
    let spool = reopen(SpoolConfig::new(&dir.0), sink.clone()).await;
    wait_for(&sink, 25).await;
    let got = shipped_text(&sink);
    let want: Vec<String> = (0..25).map(|i| format!("event-{i}")).collect();
    assert_eq!(got, want);
    // The torn tail was cut; new appends land after the valid records.
    spool.append(b"after".to_vec()).await.unwrap();
    wait_for(&sink, 26).await;
    // The sink has the batch before the flusher advances its mark: wait for
    // the mark rather than race it.
    for _ in 0..300 {
        if spool.status().pending_records == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(spool.status().pending_records, 0);
}

#[tokio::test]
async fn shipped_records_are_not_shipped_again() {
    let dir = TempDir::new();
    let sink = Arc::new(MemorySink::default());
    {
        let spool = Spool::open(SpoolConfig::new(&dir.0), sink.clone()).unwrap();
        for i in 0..5u32 {
            spool.append(vec![i as u8]).await.unwrap();
        }
        wait_for(&sink, 5).await;
        for _ in 0..100 {
            if spool.status().pending_records == 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
    let again = Arc::new(MemorySink::default());
    let spool = reopen(SpoolConfig::new(&dir.0), again.clone()).await;
    assert_eq!(spool.status().pending_records, 0);
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(again.events.lock().unwrap().is_empty());
    drop(spool);
    tokio::time::sleep(Duration::from_millis(50)).await;

    // A mark that does not check out (digits torn by a crash, or a bare
    // number as older versions wrote) is not trusted, even when it names a
    // record boundary (14 bytes: after the first record): everything ships
    // again, nothing is skipped.
    let mark = dir.0.join("shipped.offset");
    let mut torn = std::fs::read(&mark).unwrap();
    assert_eq!(torn.len(), 38, "{:?}", String::from_utf8_lossy(&torn));
    torn[..20].copy_from_slice(b"00000000000000000014");
    for bytes in [torn, b"14".to_vec()] {
        std::fs::write(&mark, &bytes).unwrap();
        let replayed = Arc::new(MemorySink::default());
        let spool = reopen(SpoolConfig::new(&dir.0), replayed.clone()).await;
        assert_eq!(spool.status().pending_records, 5);
        wait_for(&replayed, 5).await;
        drop(spool);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn a_full_spool_denies_until_the_ledger_is_back() {
    let upstream = FakeUpstream::start(Arc::new(|_: &Seen| {
        json_response(json!({"choices": [], "usage": {"prompt_tokens": 1, "completion_tokens": 1}}))
    }))
    .await;
    let gw = start(Setup {
        providers: vec![provider(
            "openai",
            ProviderKind::Openai,
            Some(&upstream.url),
        )],
        snapshot: Some(budgeted_snapshot(10_000_000)),
        agent: "team/bot".into(),
        limits: Limits::default(),
    })
    .await;
    // The harness's spool has the default 64 MiB limit; use a small one here.
    drop(gw);
    let dir = TempDir::new();
    let sink = Arc::new(MemorySink::default());
    sink.failing.store(true, Ordering::SeqCst);
    let mut config = SpoolConfig::new(&dir.0);
    config.max_pending_bytes = 1500;
    config.flush_interval = Duration::from_millis(20);
    let spool = Spool::open(config, sink.clone()).unwrap();
    let mut accepted = 0;
    while spool.check_room().is_ok() {
        spool.append(vec![7u8; 200]).await.unwrap();
        accepted += 1;
        assert!(accepted < 100);
    }
    let err = spool.append(vec![1]).await.unwrap_err().to_string();
    assert!(err.contains("not taking events"), "{err}");
    sink.failing.store(false, Ordering::SeqCst);
    wait_for(&sink, accepted).await;
    for _ in 0..100 {
        if spool.check_room().is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    spool.append(vec![1]).await.unwrap();
}

#[tokio::test]
async fn a_fully_shipped_spool_is_truncated_and_keeps_working() {
    let dir = TempDir::new();
    let sink = Arc::new(MemorySink::default());
    let config = || {
        let mut c = SpoolConfig::new(&dir.0);
        c.compact_after_bytes = 1000;
        c.flush_interval = Duration::from_millis(10);
        c
    };
    let path = dir.0.join("events.spool");
    {
        let spool = Spool::open(config(), sink.clone()).unwrap();
        for i in 0..20u8 {
            spool.append(vec![i; 100]).await.unwrap();
        }
        wait_for(&sink, 20).await;
        for _ in 0..100 {
            if std::fs::metadata(&path).unwrap().len() == 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(
            std::fs::metadata(&path).unwrap().len(),
            0,
            "shipped file was truncated"
        );
        // Appends after the truncation land at offset 0 and ship normally.
        spool.append(vec![99; 10]).await.unwrap();
        wait_for(&sink, 21).await;
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
    // Nothing is shipped twice after a restart.
    let again = Arc::new(MemorySink::default());
    let spool = reopen(config(), again.clone()).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(spool.status().pending_records, 0);
    assert!(again.events.lock().unwrap().is_empty());
    assert_eq!(sink.events.lock().unwrap().len(), 21);
}

#[tokio::test]
async fn ack_on_write_still_replays_everything_after_a_restart() {
    let dir = TempDir::new();
    let failing = Arc::new(MemorySink::default());
    failing.failing.store(true, Ordering::SeqCst);
    let config = || {
        let mut c = SpoolConfig::new(&dir.0);
        c.ack_after = caracal_gateway::spool::AckAfter::Write;
        c.flush_interval = Duration::from_millis(10);
        c
    };
    {
        let spool = Spool::open(config(), failing.clone()).unwrap();
        for i in 0..10u8 {
            spool.append(vec![i]).await.unwrap();
        }
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
    let sink = Arc::new(MemorySink::default());
    let _spool = reopen(config(), sink.clone()).await;
    wait_for(&sink, 10).await;
    let got: Vec<u8> = sink.events.lock().unwrap().iter().map(|r| r[0]).collect();
    assert_eq!(got, (0..10).collect::<Vec<u8>>());
}

#[tokio::test]
async fn a_backlog_larger_than_the_read_window_ships_whole_and_in_order() {
    let dir = TempDir::new();
    let failing = Arc::new(MemorySink::default());
    failing.failing.store(true, Ordering::SeqCst);
    // 3,000 records of 1 KB (3 MB unshipped) and one of 3 MB: more than
    // one read window each.
    let record = |i: u32| {
        let mut r = format!("{i:08}").into_bytes();
        r.resize(if i == 1500 { 3 << 20 } else { 1024 }, b'.');
        r
    };
    {
        let spool = Spool::open(SpoolConfig::new(&dir.0), failing.clone()).unwrap();
        for i in 0..3000 {
            spool.append(record(i)).await.unwrap();
        }
    }
    let sink = Arc::new(MemorySink::default());
    let _spool = reopen(SpoolConfig::new(&dir.0), sink.clone()).await;
    wait_for(&sink, 3000).await;
    let got = sink.events.lock().unwrap().clone();
    assert_eq!(got.len(), 3000);
    for (i, r) in got.iter().enumerate() {
        assert_eq!(r, &record(i as u32), "record {i}");
    }
}

#[tokio::test]
async fn concurrent_appends_are_all_acknowledged_durable_and_shipped_in_batches() {
    let dir = TempDir::new();
    let sink = Arc::new(MemorySink::default());
    let spool = Spool::open(SpoolConfig::new(&dir.0), sink.clone()).unwrap();
    let tasks: Vec<_> = (0..400u32)
        .map(|i| {
            let spool = spool.clone();
            tokio::spawn(async move { spool.append(format!("e{i}").into_bytes()).await })
        })
        .collect();
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    // Every acknowledged record is in the file already.
    let on_disk = caracal_gateway::spool::scan(
        &std::fs::read(dir.0.join("events.spool")).unwrap(),
        usize::MAX,
    );
    assert_eq!(on_disk.records.len(), 400);
    assert!(!on_disk.torn_tail);
    wait_for(&sink, 400).await;
    let mut got = shipped_text(&sink);
    got.sort();
    let mut want: Vec<String> = (0..400).map(|i| format!("e{i}")).collect();
    want.sort();
    assert_eq!(got, want, "each record shipped exactly once");
    // Events gathered until enough wait travel together, not one by one.
    let batches = sink.batches.load(Ordering::SeqCst);
    assert!(batches <= 40, "400 events in {batches} batches");
}

/// The flusher ships as soon as `ship_records` events wait, without waiting
/// out the ship delay; fewer wait for the delay, then ship anyway.
#[tokio::test]
async fn enough_waiting_events_ship_at_once_and_a_trickle_after_the_delay() {
    let dir = TempDir::new();
    let sink = Arc::new(MemorySink::default());
    let config = SpoolConfig {
        ship_records: 8,
        ship_delay: Duration::from_millis(1500),
        ..SpoolConfig::new(&dir.0)
    };
    let spool = Spool::open(config, sink.clone()).unwrap();
    let started = std::time::Instant::now();
    for i in 0..8 {
        spool.append(format!("e{i}").into_bytes()).await.unwrap();
    }
    wait_for(&sink, 8).await;
    assert!(
        started.elapsed() < Duration::from_millis(1000),
        "8 waiting events took {:?} to ship",
        started.elapsed()
    );
    // Three more are fewer than the threshold: they wait for the delay.
    let trickle = std::time::Instant::now();
    for i in 8..11 {
        spool.append(format!("e{i}").into_bytes()).await.unwrap();
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        sink.events.lock().unwrap().len(),
        8,
        "shipped before the delay"
    );
    wait_for(&sink, 11).await;
    assert!(trickle.elapsed() >= Duration::from_millis(1500));
    assert_eq!(shipped_text(&sink)[8..], ["e8", "e9", "e10"]);
}

/// A record damaged in the middle of the file (a bad sector, a flipped bit)
/// loses only itself: every record after it is still shipped, and the
/// damaged file is kept aside for inspection.
#[tokio::test]
async fn damage_in_the_middle_loses_only_the_damaged_record() {
    let dir = TempDir::new();
    let failing = Arc::new(MemorySink::default());
    failing.failing.store(true, Ordering::SeqCst);
    {
        let spool = Spool::open(SpoolConfig::new(&dir.0), failing.clone()).unwrap();
        for i in 0..5u32 {
            spool
                .append(format!("event-{i}").into_bytes())
                .await
                .unwrap();
        }
    }
    let path = dir.0.join("events.spool");
    let mut bytes = std::fs::read(&path).unwrap();
    // Flip a byte inside the payload of the third record.
    let record = bytes.len() / 5;
    bytes[2 * record + record - 2] ^= 0x20;
    std::fs::write(&path, &bytes).unwrap();

    let sink = Arc::new(MemorySink::default());
    let _spool = reopen(SpoolConfig::new(&dir.0), sink.clone()).await;
    wait_for(&sink, 4).await;
    assert_eq!(
        shipped_text(&sink),
        ["event-0", "event-1", "event-3", "event-4"]
    );
    let kept: Vec<_> = std::fs::read_dir(&dir.0)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().contains(".damaged-"))
        .collect();
    assert_eq!(kept.len(), 1, "the damaged file is kept aside");
    assert_eq!(std::fs::read(kept[0].path()).unwrap(), bytes);
}

/// Two spools on one directory would each count, ship and cut the file
/// without knowing of the other's records: the second open is refused.
#[tokio::test]
async fn a_spool_directory_is_used_by_one_spool_at_a_time() {
    let dir = TempDir::new();
    let sink = Arc::new(MemorySink::default());
    let first = Spool::open(SpoolConfig::new(&dir.0), sink.clone()).unwrap();
    let second = Spool::open(SpoolConfig::new(&dir.0), sink.clone());
    let Err(err) = second else {
        panic!("a second spool on the same directory was opened");
    };
    let err = err.to_string();
    assert!(err.contains("another process is using this spool"), "{err}");
    drop(first);
    // Free again once the first is dropped.
    reopen(SpoolConfig::new(&dir.0), sink).await;
}

/// Bytes that hold no record where shipping stands (a partial write whose
/// cleanup failed) are reported as a failure, not as an empty batch that
/// would stop shipping for good while looking healthy.
#[tokio::test]
async fn junk_where_shipping_stands_is_an_error_not_an_empty_batch() {
    use std::io::Write;
    let dir = TempDir::new();
    let sink = Arc::new(MemorySink::default());
    let mut config = SpoolConfig::new(&dir.0);
    config.flush_interval = Duration::from_secs(3600);
    config.ship_delay = Duration::from_secs(3600);
    config.ship_records = 1000;
    let spool = Spool::open(config, sink.clone()).unwrap();
    spool.append(b"event-0".to_vec()).await.unwrap();
    std::fs::OpenOptions::new()
        .append(true)
        .open(dir.0.join("events.spool"))
        .unwrap()
        .write_all(&[0xCA, 0xFF, 0xFF, 0, 0, 1, 2])
        .unwrap();
    spool.append(b"event-1".to_vec()).await.unwrap();
    let flushed = tokio::time::timeout(Duration::from_secs(10), spool.flush_now(sink.as_ref()))
        .await
        .expect("flush_now returns");
    let err = flushed.expect_err("the junk is reported");
    assert!(err.contains("no valid record"), "{err}");
    assert_eq!(shipped_text(&sink), ["event-0"]);
}
