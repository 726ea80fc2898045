//! The spool file: appends from the request tasks, fsync on its own thread.
//!
//! An append is written with one `write(2)` under a mutex, straight from the
//! request's task, so the common path has no thread hop. A dedicated thread
//! runs `fdatasync` whenever something new was written and publishes how far
//! the file is durable; appends that must wait for the disk wait for that
//! mark (group commit: one fsync covers every append written before it).
//!
//! Positions are *logical*: bytes ever appended since the spool was opened.
//! When everything is shipped the file is truncated and the logical position
//! of its first byte (`base`) moves on, so waiters and marks never see a
//! position go backwards. The shipped mark on disk is a file offset.

use std::{
    fs::{File, OpenOptions},
    io::{Read, Write},
    os::unix::fs::FileExt,
    path::{Path, PathBuf},
    sync::{
        Arc, Condvar, Mutex,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::Duration,
};

use tokio::sync::watch;

use super::{AckAfter, Shared, SpoolConfig, SpoolError, format, gather, mark::MarkFile};

/// Bytes read per attempt when shipping (about 1,500 metering events).
const READ_WINDOW: u64 = 1 << 20;

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> SpoolError + '_ {
    move |source| SpoolError::Io {
        path: path.to_owned(),
        source,
    }
}

/// How far the file is known to be on disk.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(super) struct Durable {
    /// Logical position up to which every byte is fsync'd.
    pub upto: u64,
    /// An fsync failed: nothing written since can be promised.
    pub failed: bool,
}

/// Positions guarded by the append mutex.
struct Tail {
    /// Logical position of the file's first byte.
    base: u64,
    /// Logical position just past the last whole record written.
    written: u64,
}

/// Wakes the sync thread, and tells it to stop.
#[derive(Default)]
struct SyncSignal {
    /// (something was written since the sync thread last looked, stop)
    state: Mutex<(bool, bool)>,
    cv: Condvar,
    /// With `AckAfter::Write`: the sync thread waits for a write because
    /// everything written is durable. Appends look at this (and only then
    /// take the mutex), so the thread sleeps while the spool is idle instead
    /// of waking every sync interval.
    parked: AtomicBool,
    /// Times the sync thread woke, for tests.
    wakeups: AtomicU64,
}

impl SyncSignal {
    fn lock(&self) -> std::sync::MutexGuard<'_, (bool, bool)> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Something was written and waits for an fsync.
    fn written(&self) {
        self.lock().0 = true;
        self.cv.notify_one();
    }

    fn stop(&self) {
        self.lock().1 = true;
        self.cv.notify_one();
    }

    /// Block until something is written or a stop is asked; true on stop.
    fn wait_written(&self) -> bool {
        let mut s = self.lock();
        while !s.0 && !s.1 {
            s = self.cv.wait(s).unwrap_or_else(|p| p.into_inner());
        }
        s.0 = false;
        s.1
    }

    /// Block while `idle()` holds (nothing written waits for an fsync) until
    /// an append signals, or a stop is asked; true on stop.
    ///
    /// No wake-up is lost: the flag is set, with the mutex held, before
    /// `idle()` reads the written position, and an append stores its position
    /// before it reads the flag (both sequentially consistent), so either this
    /// thread sees the append or the append sees the flag and signals
    /// through the mutex, which the wait releases only atomically.
    fn wait_while_idle(&self, idle: impl Fn() -> bool) -> bool {
        let mut s = self.lock();
        loop {
            if s.1 {
                return true;
            }
            if s.0 {
                s.0 = false;
                return false;
            }
            self.parked.store(true, Ordering::SeqCst);
            if !idle() {
                self.parked.store(false, Ordering::SeqCst);
                return false;
            }
            s = self.cv.wait(s).unwrap_or_else(|p| p.into_inner());
            self.parked.store(false, Ordering::SeqCst);
            self.wakeups.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Wake the sync thread if it waits in [`Self::wait_while_idle`]. Called
    /// after the written position was stored.
    fn written_if_parked(&self) {
        std::sync::atomic::fence(Ordering::SeqCst);
        if self.parked.load(Ordering::SeqCst) {
            self.written();
        }
    }

    /// Block for `period` or until a stop is asked; true on stop.
    fn sleep(&self, period: Duration) -> bool {
        let s = self.lock();
        if s.1 {
            return true;
        }
        self.cv
            .wait_timeout(s, period)
            .unwrap_or_else(|p| p.into_inner())
            .0
            .1
    }
}

/// The open spool file.
pub(super) struct SpoolFile {
    /// Holds the spool's lock (see `open`) for as long as this handle lives.
    _lock: File,
    log: File,
    tail: Mutex<Tail>,
    log_path: PathBuf,
    mark: MarkFile,
    shared: Arc<Shared>,
    signal: Arc<SyncSignal>,
    durable: watch::Receiver<Durable>,
    compact_after_bytes: u64,
    ack_after: AckAfter,
    /// Pending events that make a batch worth shipping at once; the append
    /// that makes them wakes the flusher (see `gather`).
    ship_at: u64,
}

impl std::fmt::Debug for SpoolFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SpoolFile")
            .field("path", &self.log_path)
            .field("ack_after", &self.ack_after)
            .finish()
    }
}

impl Drop for SpoolFile {
    fn drop(&mut self) {
        self.signal.stop();
    }
}

/// A spool whose damage is not only a torn tail: whole records follow a
/// record that fails its check (a bad sector, a flipped bit). Cutting the
/// file at the damage, as for a torn tail, would throw away events that were
/// acknowledged. Instead the file is kept aside as
/// `events.spool.damaged-<unix ms>` and rewritten with every record that can
/// be read, and the bytes to use from now on are returned. The shipped mark
/// no longer fits and is set to 0, so everything is shipped again, which
/// the ledger takes idempotently (the caller resets the mark).
///
/// `bytes` is the file, known to hold `intact` whole records before its
/// first damage.
fn salvage_damaged(
    log_path: &Path,
    bytes: &[u8],
    intact: usize,
) -> Result<Option<Vec<u8>>, SpoolError> {
    let (records, damaged) = format::salvage(bytes);
    if records.len() == intact {
        return Ok(None); // a torn tail only: cut as usual
    }
    let kept = log_path.with_extension(format!(
        "spool.damaged-{}",
        chrono::Utc::now().timestamp_millis()
    ));
    // The copy and the salvaged file are both on disk before the salvaged
    // one replaces the original (by rename), so a crash at any point leaves
    // either the original or the salvaged file, never less.
    std::fs::copy(log_path, &kept).map_err(io(&kept))?;
    File::open(&kept)
        .and_then(|f| f.sync_all())
        .map_err(io(&kept))?;
    let mut out = Vec::with_capacity(bytes.len());
    for record in &records {
        format::encode(record, &mut out);
    }
    let salvaged = log_path.with_extension("spool.salvaged");
    File::create(&salvaged)
        .and_then(|mut f| {
            f.write_all(&out)?;
            f.sync_all()
        })
        .map_err(io(&salvaged))?;
    std::fs::rename(&salvaged, log_path).map_err(io(log_path))?;
    if let Some(dir) = log_path.parent() {
        File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(io(dir))?;
    }
    tracing::error!(
        path = %log_path.display(),
        kept = %kept.display(),
        records = records.len(),
        damaged_ranges = damaged,
        "the spool was damaged in the middle; every readable record was kept and the damaged file set aside"
    );
    Ok(Some(out))
}

impl SpoolFile {
    /// Open the files, cut off a torn tail, count what is unshipped and start
    /// the sync thread.
    pub(super) fn open(config: &SpoolConfig, shared: Arc<Shared>) -> Result<Self, SpoolError> {
        let dir = config.dir.clone();
        std::fs::create_dir_all(&dir).map_err(io(&dir))?;
        let log_path = dir.join("events.spool");
        let mark_path = dir.join("shipped.offset");
        let mut log = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .open(&log_path)
            .map_err(io(&log_path))?;
        // One process per spool: a second one would count, ship and cut
        // the file without knowing of the first one's records. The lock is
        // on a file of its own, held by this handle alone (the sync thread's
        // clone of the log must not keep it after the spool is dropped).
        let lock_path = dir.join("spool.lock");
        let lock = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .open(&lock_path)
            .map_err(io(&lock_path))?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                return Err(io(&lock_path)(std::io::Error::other(
                    "another process is using this spool (is another gateway running with the same state directory?)",
                )));
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(io(&lock_path)(e)),
        }
        let mut bytes = Vec::new();
        log.read_to_end(&mut bytes).map_err(io(&log_path))?;
        let mut whole = format::scan(&bytes, usize::MAX);
        let salvaged = match whole.torn_tail {
            true => salvage_damaged(&log_path, &bytes, whole.records.len())?,
            false => None,
        };
        let rewritten = salvaged.is_some();
        if let Some(salvaged) = salvaged {
            bytes = salvaged;
            whole = format::scan(&bytes, usize::MAX);
            // The file was replaced: use the new one.
            log = OpenOptions::new()
                .read(true)
                .append(true)
                .open(&log_path)
                .map_err(io(&log_path))?;
        }
        let (mark_file, mark) = MarkFile::open(&mark_path).map_err(io(&mark_path))?;
        // The mark is an offset into the file as it was: ship all again.
        let mark = if rewritten {
            mark_file.write(0, true).map_err(io(&mark_path))?;
            0
        } else {
            mark
        };
        // A mark past the valid data cannot be trusted: re-ship everything.
        let mark = if mark as usize > whole.valid_len {
            0
        } else {
            mark
        };
        if whole.torn_tail {
            tracing::warn!(path = %log_path.display(), at = whole.valid_len, "cutting a torn record off the spool");
            log.set_len(whole.valid_len as u64).map_err(io(&log_path))?;
        }
        // Whatever an earlier run wrote but had not synced is synced now.
        log.sync_all().map_err(io(&log_path))?;
        let unshipped = format::scan(&bytes[mark as usize..whole.valid_len], usize::MAX)
            .records
            .len();
        if unshipped > 0 {
            tracing::info!(
                records = unshipped,
                "replaying unshipped events from the spool"
            );
        }
        let valid = whole.valid_len as u64;
        shared.written.store(valid, Ordering::Release);
        shared.flushed.store(mark, Ordering::Release);
        shared
            .pending_records
            .store(unshipped as u64, Ordering::Release);
        let (durable_tx, durable) = watch::channel(Durable {
            upto: valid,
            failed: false,
        });
        let signal = Arc::new(SyncSignal::default());
        let syncer = Syncer {
            // Acknowledging after fsync: sync as soon as anything is written.
            // After write: every `sync_interval`, whatever was written.
            period: (config.ack_after == AckAfter::Write).then_some(config.sync_interval),
            log: log.try_clone().map_err(io(&log_path))?,
            shared: shared.clone(),
            signal: signal.clone(),
            durable: durable_tx,
        };
        std::thread::Builder::new()
            .name("caracal-spool".into())
            .spawn(move || syncer.run())
            .map_err(io(&dir))?;
        Ok(SpoolFile {
            _lock: lock,
            log,
            tail: Mutex::new(Tail {
                base: 0,
                written: valid,
            }),
            log_path,
            mark: mark_file,
            shared,
            signal,
            durable,
            compact_after_bytes: config.compact_after_bytes,
            ack_after: config.ack_after,
            ship_at: gather::enough(config),
        })
    }

    pub(super) fn shared(&self) -> &Shared {
        &self.shared
    }

    fn tail(&self) -> std::sync::MutexGuard<'_, Tail> {
        self.tail.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Write one record and return the logical position just past it. The
    /// record is in the page cache (safe from a killed process), not yet
    /// necessarily on disk.
    fn write(&self, record: &[u8]) -> Result<u64, SpoolError> {
        let mut buf = Vec::with_capacity(format::HEADER_LEN + record.len());
        format::encode(record, &mut buf);
        let mut tail = self.tail();
        // `&File` writes: the descriptor is in append mode, and the mutex
        // keeps records whole and in order.
        if let Err(e) = (&self.log).write_all(&buf) {
            tracing::error!(error = %e, "spool write failed; refusing the event");
            // Drop whatever part of the record reached the file. If even
            // that fails, the file holds a partial record that later records
            // would follow unseen: refuse every append from now on.
            if let Err(cut) = self.log.set_len(tail.written - tail.base) {
                tracing::error!(error = %cut, "could not cut a partly written record off the spool; refusing new events");
                self.shared.sync_failed.store(true, Ordering::Release);
            }
            return Err(io(&self.log_path)(e));
        }
        tail.written += buf.len() as u64;
        self.shared.written.store(tail.written, Ordering::SeqCst);
        if self.ack_after == AckAfter::Write {
            self.signal.written_if_parked();
        }
        let before = self.shared.pending_records.fetch_add(1, Ordering::AcqRel);
        if gather::wakes_flusher(before, self.ship_at) {
            self.shared.notify.notify_one();
        }
        Ok(tail.written)
    }

    /// Append one record; returns once it is as safe as `ack_after` asks.
    pub(super) async fn append(&self, record: &[u8]) -> Result<(), SpoolError> {
        let end = self.write(record)?;
        if self.ack_after == AckAfter::Write {
            // The sync thread catches up on its own schedule.
            return Ok(());
        }
        self.signal.written();
        let state = self.durable_past(end).await?;
        if state.upto >= end {
            return Ok(());
        }
        Err(SpoolError::Io {
            path: self.log_path.clone(),
            source: std::io::Error::other("fsync of the spool failed"),
        })
    }

    /// Wait until everything before logical position `upto` is durable or
    /// an fsync failed, and return how far the file is durable then; an
    /// error once the sync thread has stopped.
    pub(super) async fn durable_past(&self, upto: u64) -> Result<Durable, SpoolError> {
        let mut durable = self.durable.clone();
        let state = durable
            .wait_for(|d| d.failed || d.upto >= upto)
            .await
            .map_err(|_| SpoolError::Stopped)?;
        Ok(*state)
    }

    /// Read up to `max` durable, unshipped records and the logical position
    /// just past them. Reads a bounded window (grown only when one record is
    /// larger), so a long backlog is never pulled into memory whole.
    pub(super) fn read_batch(&self, max: usize) -> Result<(Vec<Vec<u8>>, u64), SpoolError> {
        // Only the flusher reads and truncates, so `base` cannot move here.
        let base = self.tail().base;
        let from = self.shared.flushed.load(Ordering::Acquire);
        let upto = self.durable.borrow().upto;
        let backlog = upto.saturating_sub(from);
        let mut window = backlog.min(READ_WINDOW);
        loop {
            let mut bytes = vec![0u8; window as usize];
            self.log
                .read_exact_at(&mut bytes, from - base)
                .map_err(io(&self.log_path))?;
            let scan = format::scan(&bytes, max);
            // A window that ends inside a record yields the whole records
            // before it; only a record larger than the window needs more.
            if !scan.records.is_empty() || backlog == 0 {
                return Ok((scan.records, from + scan.valid_len as u64));
            }
            if window == backlog {
                // Durable bytes that hold no whole record: the file is
                // damaged where shipping stands. Reporting an empty batch
                // would stop shipping for good while looking healthy.
                return Err(io(&self.log_path)(std::io::Error::other(format!(
                    "no valid record at spool offset {} of {backlog} unshipped bytes",
                    from - base
                ))));
            }
            window = (window * 2).min(backlog);
        }
    }

    /// Replace the shipped mark (a file offset) in place. `durable` syncs
    /// it; only the mark written before a truncation needs that. An ordinary
    /// mark lost in a crash leaves an older (smaller) mark or one that does
    /// not check out, which reads as 0: events are shipped again, which the
    /// ledger accepts idempotently, and none is skipped (see `mark`).
    fn write_mark(&self, offset: u64, durable: bool) -> Result<(), SpoolError> {
        self.mark
            .write(offset, durable)
            .map_err(io(self.mark.path()))
    }

    /// Record that everything before logical position `end` (`count`
    /// records) is in the ledger; truncate the file once all of it is.
    pub(super) fn mark_shipped(&self, end: u64, count: u64) -> Result<(), SpoolError> {
        let base = self.tail().base;
        self.write_mark(end - base, false)?;
        self.shared.flushed.store(end, Ordering::Release);
        self.shared
            .pending_records
            .fetch_sub(count, Ordering::AcqRel);
        self.shared
            .shipped_records
            .fetch_add(count, Ordering::AcqRel);
        if end - base < self.compact_after_bytes {
            return Ok(());
        }
        if self.tail().written != end {
            // Appended to since: not everything is shipped.
            return Ok(());
        }
        // Mark first, truncate second: a crash between re-ships, never
        // loses. The mark's fsync runs before the append lock is taken, so
        // requests appending meanwhile never wait for the disk here.
        self.write_mark(0, true)?;
        let mut tail = self.tail();
        if tail.written != end {
            // An append came in during the fsync: keep the file, and put
            // the real mark back (a crash before that reads 0, re-shipping).
            drop(tail);
            return self.write_mark(end - base, false);
        }
        // Appends wait while the file is cut; none can land in between.
        self.log.set_len(0).map_err(io(&self.log_path))?;
        tail.base = tail.written;
        drop(tail);
        // With `AckAfter::Fsync` the next append's fsync also covers the
        // cut; this one covers it when the next appends only `write(2)`.
        self.log.sync_all().map_err(|e| {
            // The kernel reports a write-back error to one fsync only: the
            // sync thread's next one could succeed and acknowledge records
            // whose pages were lost. Refuse everything from now on instead.
            tracing::error!(error = %e, "spool fsync after truncation failed; refusing new events");
            self.shared.sync_failed.store(true, Ordering::Release);
            io(&self.log_path)(e)
        })
    }
}

/// The thread that makes written records durable.
struct Syncer {
    period: Option<Duration>,
    log: File,
    shared: Arc<Shared>,
    signal: Arc<SyncSignal>,
    durable: watch::Sender<Durable>,
}

impl Syncer {
    fn run(self) {
        loop {
            let stop = match self.period {
                None => self.signal.wait_written(),
                // Let a period's writes gather, then sync them; while all
                // of it is durable, sleep until the next write.
                Some(period) => {
                    self.signal.wait_while_idle(|| self.all_durable()) || self.signal.sleep(period)
                }
            };
            self.signal.wakeups.fetch_add(1, Ordering::Relaxed);
            // A stop still syncs what was written before it.
            if !self.sync() || stop {
                return;
            }
        }
    }

    /// Whether everything written is durable.
    fn all_durable(&self) -> bool {
        self.shared.written.load(Ordering::SeqCst) <= self.durable.borrow().upto
    }

    /// Make everything written so far durable; false once fsync failed.
    fn sync(&self) -> bool {
        // Everything written before this load is covered by the fsync.
        let target = self.shared.written.load(Ordering::Acquire);
        if target <= self.durable.borrow().upto {
            return true;
        }
        match self.log.sync_data() {
            // Another fsync of the file (the truncation's) may have taken
            // the error this one would have seen.
            Ok(()) if self.shared.sync_failed.load(Ordering::Acquire) => {
                self.durable.send_modify(|d| d.failed = true);
                false
            }
            Ok(()) => {
                self.durable.send_modify(|d| d.upto = d.upto.max(target));
                true
            }
            Err(e) => {
                // The kernel may have dropped the unsynced pages: refuse
                // everything from now on rather than keep promising.
                tracing::error!(error = %e, "spool fsync failed; refusing new events");
                self.shared.sync_failed.store(true, Ordering::Release);
                self.durable.send_modify(|d| d.failed = true);
                false
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A spool directory of its own, removed afterwards.
    struct Dir(PathBuf);
    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn write_ack_spool(name: &str) -> (Dir, SpoolFile) {
        let dir =
            Dir(std::env::temp_dir().join(format!("caracal-spool-{name}-{}", std::process::id())));
        let _ = std::fs::remove_dir_all(&dir.0);
        let mut config = SpoolConfig::new(&dir.0);
        config.ack_after = AckAfter::Write;
        config.sync_interval = Duration::from_millis(5);
        let file = SpoolFile::open(&config, Arc::new(Shared::default())).unwrap();
        (dir, file)
    }

    fn wakeups(file: &SpoolFile) -> u64 {
        file.signal.wakeups.load(Ordering::Relaxed)
    }

    /// Within `within`, everything written so far becomes durable.
    async fn durable_within(file: &SpoolFile, end: u64, within: Duration) {
        let state = tokio::time::timeout(within, file.durable_past(end))
            .await
            .expect("the written records became durable in time")
            .unwrap();
        assert!(state.upto >= end && !state.failed, "{state:?}");
    }

    /// Over forty sync intervals with nothing written, the sync thread
    /// wakes at most once.
    async fn sleeps_while_idle(file: &SpoolFile) {
        let before = wakeups(file);
        tokio::time::sleep(Duration::from_millis(200)).await;
        let after = wakeups(file);
        assert!(after <= before + 1, "{before} -> {after}");
    }

    #[tokio::test]
    async fn with_write_acks_the_sync_thread_sleeps_while_nothing_is_written() {
        let (_dir, file) = write_ack_spool("idle");
        tokio::time::sleep(Duration::from_millis(50)).await;
        sleeps_while_idle(&file).await;

        // A write wakes it: synced within an interval or so, each time.
        for round in 0..20 {
            let end = file.write(format!("event {round}").as_bytes()).unwrap();
            durable_within(&file, end, Duration::from_secs(2)).await;
            if round % 5 == 0 {
                // Idle long enough to park in between.
                tokio::time::sleep(Duration::from_millis(30)).await;
            }
        }
        sleeps_while_idle(&file).await;
    }

    #[tokio::test]
    async fn with_write_acks_appends_from_many_threads_all_become_durable() {
        let (_dir, file) = write_ack_spool("many");
        let file = Arc::new(file);
        for _ in 0..50 {
            let writers: Vec<_> = (0..4)
                .map(|t| {
                    let file = file.clone();
                    std::thread::spawn(move || file.write(format!("from {t}").as_bytes()).unwrap())
                })
                .collect();
            let end = writers
                .into_iter()
                .map(|w| w.join().unwrap())
                .max()
                .unwrap();
            durable_within(&file, end, Duration::from_secs(2)).await;
        }
    }
}
