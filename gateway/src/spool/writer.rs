//! The spool's single writer: the only code that touches the files.
//!
//! Running every file operation on one thread keeps ordering trivial: an
//! append, a batch read and a truncation can never interleave.

use std::{
    fs::{File, OpenOptions},
    io::{Read, Seek, SeekFrom, Write},
    path::{Path, PathBuf},
    sync::{Arc, atomic::Ordering},
};

use tokio::sync::{mpsc, oneshot};

use super::{AckAfter, Shared, SpoolConfig, SpoolError, format};

/// Appends written by one `write` + `fsync`.
const MAX_GROUP: usize = 1024;

type Ack = oneshot::Sender<Result<(), SpoolError>>;
/// Records read for shipping, and the file offset just past them.
type BatchReply = oneshot::Sender<Result<(Vec<Vec<u8>>, u64), SpoolError>>;

pub(super) enum Command {
    Append {
        record: Vec<u8>,
        done: oneshot::Sender<Result<(), SpoolError>>,
    },
    ReadBatch {
        max: usize,
        done: BatchReply,
    },
    MarkShipped {
        end: u64,
        count: u64,
        done: oneshot::Sender<Result<(), SpoolError>>,
    },
}

pub(super) struct Writer {
    log: File,
    log_path: PathBuf,
    mark_path: PathBuf,
    dir: PathBuf,
    shared: Arc<Shared>,
    compact_after_bytes: u64,
    ack_after: AckAfter,
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> SpoolError + '_ {
    move |source| SpoolError::Io {
        path: path.to_owned(),
        source,
    }
}

impl Writer {
    /// Open the files, cut off a torn tail and count what is unshipped.
    pub(super) fn open(config: &SpoolConfig, shared: Arc<Shared>) -> Result<Writer, SpoolError> {
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
        let mut bytes = Vec::new();
        log.read_to_end(&mut bytes).map_err(io(&log_path))?;
        let mark = match std::fs::read_to_string(&mark_path) {
            Ok(s) => s.trim().parse::<u64>().unwrap_or(0),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => 0,
            Err(e) => return Err(io(&mark_path)(e)),
        };
        // A mark past the valid data cannot be trusted: re-ship everything.
        let whole = format::scan(&bytes, usize::MAX);
        let mark = if mark as usize > whole.valid_len {
            0
        } else {
            mark
        };
        if whole.torn_tail {
            tracing::warn!(path = %log_path.display(), at = whole.valid_len, "cutting a torn record off the spool");
            log.set_len(whole.valid_len as u64).map_err(io(&log_path))?;
            log.sync_all().map_err(io(&log_path))?;
        }
        let unshipped = format::scan(&bytes[mark as usize..whole.valid_len], usize::MAX)
            .records
            .len();
        if unshipped > 0 {
            tracing::info!(
                records = unshipped,
                "replaying unshipped events from the spool"
            );
        }
        shared
            .committed
            .store(whole.valid_len as u64, Ordering::Release);
        shared.flushed.store(mark, Ordering::Release);
        shared
            .pending_records
            .store(unshipped as u64, Ordering::Release);
        Ok(Writer {
            log,
            log_path,
            mark_path,
            dir,
            shared,
            compact_after_bytes: config.compact_after_bytes,
            ack_after: config.ack_after,
        })
    }

    pub(super) fn run(mut self, mut rx: mpsc::Receiver<Command>) {
        while let Some(first) = rx.blocking_recv() {
            let mut group = Vec::new();
            let mut next = Some(first);
            while let Some(cmd) = next.take() {
                match cmd {
                    Command::Append { record, done } => {
                        group.push((record, done));
                        if group.len() < MAX_GROUP {
                            next = rx.try_recv().ok();
                        }
                    }
                    other => {
                        self.commit(std::mem::take(&mut group));
                        self.handle(other);
                        next = rx.try_recv().ok();
                    }
                }
            }
            self.commit(group);
        }
    }

    fn commit(&mut self, group: Vec<(Vec<u8>, Ack)>) {
        if group.is_empty() {
            return;
        }
        let mut buf = Vec::new();
        for (record, _) in &group {
            format::encode(record, &mut buf);
        }
        // With `AckAfter::Fsync` nothing is acknowledged before it is on
        // disk; with `AckAfter::Write` it is acknowledged once in the page
        // cache (safe against a killed process, not a lost machine) and
        // fsync'd right after.
        let strict = self.ack_after == AckAfter::Fsync;
        let result = self
            .log
            .write_all(&buf)
            .and_then(|()| if strict { self.log.sync_data() } else { Ok(()) });
        match result {
            Ok(()) => {
                self.shared
                    .committed
                    .fetch_add(buf.len() as u64, Ordering::AcqRel);
                self.shared
                    .pending_records
                    .fetch_add(group.len() as u64, Ordering::AcqRel);
                for (_, done) in group {
                    let _ = done.send(Ok(()));
                }
                if !strict && let Err(e) = self.log.sync_data() {
                    // Acknowledged but maybe not durable: refuse everything
                    // from now on rather than keep promising.
                    tracing::error!(error = %e, "spool fsync failed after acknowledging; refusing new events");
                    self.shared.sync_failed.store(true, Ordering::Release);
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "spool write failed; refusing the group");
                // Drop whatever part of the group reached the file.
                let committed = self.shared.committed.load(Ordering::Acquire);
                let _ = self.log.set_len(committed);
                for (_, done) in group {
                    let _ = done.send(Err(SpoolError::Io {
                        path: self.log_path.clone(),
                        source: std::io::Error::new(e.kind(), e.to_string()),
                    }));
                }
            }
        }
    }

    fn handle(&mut self, cmd: Command) {
        match cmd {
            Command::Append { .. } => unreachable!("appends are grouped by run()"),
            Command::ReadBatch { max, done } => {
                let _ = done.send(self.read_batch(max));
            }
            Command::MarkShipped { end, count, done } => {
                let _ = done.send(self.mark_shipped(end, count));
            }
        }
    }

    fn read_batch(&mut self, max: usize) -> Result<(Vec<Vec<u8>>, u64), SpoolError> {
        let from = self.shared.flushed.load(Ordering::Acquire);
        let to = self.shared.committed.load(Ordering::Acquire);
        let mut bytes = vec![0u8; (to - from) as usize];
        let mut reader = File::open(&self.log_path).map_err(io(&self.log_path))?;
        reader
            .seek(SeekFrom::Start(from))
            .map_err(io(&self.log_path))?;
        reader.read_exact(&mut bytes).map_err(io(&self.log_path))?;
        let scan = format::scan(&bytes, max);
        Ok((scan.records, from + scan.valid_len as u64))
    }

    fn write_mark(&self, offset: u64) -> Result<(), SpoolError> {
        let tmp = self.dir.join("shipped.offset.tmp");
        let mut f = File::create(&tmp).map_err(io(&tmp))?;
        f.write_all(offset.to_string().as_bytes())
            .and_then(|()| f.sync_all())
            .map_err(io(&tmp))?;
        std::fs::rename(&tmp, &self.mark_path).map_err(io(&self.mark_path))?;
        File::open(&self.dir)
            .and_then(|d| d.sync_all())
            .map_err(io(&self.dir))
    }

    fn mark_shipped(&mut self, end: u64, count: u64) -> Result<(), SpoolError> {
        self.write_mark(end)?;
        self.shared.flushed.store(end, Ordering::Release);
        self.shared
            .pending_records
            .fetch_sub(count, Ordering::AcqRel);
        self.shared
            .shipped_records
            .fetch_add(count, Ordering::AcqRel);
        let committed = self.shared.committed.load(Ordering::Acquire);
        if end == committed && committed >= self.compact_after_bytes {
            // Mark first, truncate second: a crash between re-ships, never loses.
            self.write_mark(0)?;
            self.shared.flushed.store(0, Ordering::Release);
            self.log
                .set_len(0)
                .and_then(|()| self.log.sync_all())
                .map_err(io(&self.log_path))?;
            self.shared.committed.store(0, Ordering::Release);
        }
        Ok(())
    }
}
