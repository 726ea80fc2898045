//! The verifier: recomputes the log from its entries and checks everything
//! that is signed, trusting no stored hash, size or column.
//!
//! What is checked, in order:
//! 1. every checkpoint note verifies under a trusted log key (and origin);
//! 2. every batch verifies under a registered gateway key, over the root of
//!    its own leaf hashes;
//! 3. entries run densely from the start index with no gaps; each entry's
//!    bytes name its event id and hash to the leaf its gateway signed;
//! 4. the tree recomputed from the entries has, at every checkpoint size, the
//!    root that checkpoint signed;
//! 5. no entry lies beyond the latest checkpoint, and none is missing below it.
//!
//! [`Checker`] is pure and fed in index order; [`verify_store`] and
//! [`crate::export::verify_export`] only feed it.

use std::collections::BTreeMap;

use crate::batch::verify_batch_record;
use crate::hash::{Hash, hash_from_slice, leaf_hash};
use crate::keys::PublicKey;
use crate::note::open_checkpoint;
use crate::store::{BatchRecord, CheckpointRecord, EntryRecord, LedgerStore, StoreError};
use crate::tile::TILE_WIDTH;
use crate::tree::{Frontier, frontier_keys};

mod drive;
mod rows;
mod signed;
mod tiles;

use signed::{BatchVerdict, SignedBatches};

pub use tiles::{TileInput, TileRun};

/// Problems after this many are counted but not listed.
const MAX_LISTED: usize = 20;
/// What an entry whose bytes disagree with its recorded level-0 node is called.
const MOVED: &str = "bytes differ from the leaf hash the tree recorded when this index was sequenced (entries moved or rewritten)";

/// One entry as the checker sees it, borrowed from a row or a data tile.
#[derive(Clone, Copy, Debug)]
pub struct EntryRef<'a> {
    pub index: u64,
    pub event_id: uuid::Uuid,
    pub leaf: &'a [u8],
    pub batch_root: &'a [u8],
    pub batch_pos: u32,
    /// The level-0 node stored for this index, where the read provides it.
    pub recorded_hash: Option<&'a [u8]>,
}

impl<'a> From<&'a EntryRecord> for EntryRef<'a> {
    fn from(e: &'a EntryRecord) -> Self {
        Self {
            index: e.index,
            event_id: e.event_id,
            leaf: &e.leaf,
            batch_root: &e.batch_root,
            batch_pos: e.batch_pos,
            recorded_hash: e.recorded_hash.as_deref(),
        }
    }
}

/// One thing wrong with the log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    /// The first entry index concerned, when one can be named.
    pub index: Option<u64>,
    /// The checkpoint concerned, by tree size, if any.
    pub checkpoint: Option<u64>,
    pub what: String,
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (self.index, self.checkpoint) {
            (Some(i), _) => write!(f, "index {i}: {}", self.what),
            (None, Some(s)) => write!(f, "checkpoint at size {s}: {}", self.what),
            (None, None) => write!(f, "{}", self.what),
        }
    }
}

/// The outcome of a verification.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Report {
    /// Entries whose bytes were hashed.
    pub entries_checked: u64,
    /// Checkpoints whose root was compared with the recomputed tree.
    pub checkpoints_matched: u64,
    pub batches_checked: u64,
    /// Tree size and root recomputed at the end of the checked range.
    pub size: u64,
    pub root: Option<Hash>,
    pub problems: Vec<Problem>,
    /// Problems found beyond those listed.
    pub more_problems: u64,
}

impl Report {
    pub fn is_intact(&self) -> bool {
        self.problems.is_empty()
    }

    /// The lowest entry index any problem names.
    pub fn first_bad_index(&self) -> Option<u64> {
        self.problems.iter().filter_map(|p| p.index).min()
    }
}

/// What to trust and what to check.
#[derive(Clone, Debug, Default)]
pub struct Trust {
    /// Log keys whose checkpoint signatures are accepted.
    pub log_keys: Vec<PublicKey>,
    /// Gateway keys whose batch signatures are accepted.
    pub submitters: Vec<PublicKey>,
    /// When set, checkpoints must carry this origin.
    pub origin: Option<String>,
    /// Checkpoint notes obtained outside the store (kept by a monitor, a
    /// client or a previous verification). They are checked like stored ones,
    /// so a log rolled back or forked behind their back is caught.
    pub known_checkpoints: Vec<String>,
}

/// Which part of the log to check.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scope {
    /// Everything, from index 0.
    Full,
    /// Entries from `from` on, through the first checkpoint at or past `to`.
    Range { from: u64, to: u64 },
}

/// The pure core of verification.
#[derive(Debug)]
pub struct Checker {
    start: u64,
    frontier: Frontier,
    /// Verified checkpoint roots by size.
    checkpoints: BTreeMap<u64, Hash>,
    batches: SignedBatches,
    /// The batch of the entry checked last ([`SignedBatches::fault`]).
    last_batch: Option<usize>,
    /// Set once the recomputed tree can no longer be trusted (after a gap).
    broken: bool,
    /// Set when no stored entry is left at or after the next index: there is
    /// nothing more to read, however far the range was meant to run.
    exhausted: bool,
    report: Report,
    /// Where the tiles being fed are unpacked (kept to be reused).
    scratch: Vec<u8>,
}

impl Checker {
    /// Checks signatures on checkpoints and batches. `start` is the first
    /// index to be fed and `frontier` the tree right edge at that index
    /// (empty for a full check).
    pub fn new(
        trust: &Trust,
        checkpoints: &[CheckpointRecord],
        batches: &[BatchRecord],
        start: u64,
        frontier: Frontier,
    ) -> Self {
        let mut this = Self {
            start,
            frontier,
            checkpoints: BTreeMap::new(),
            batches: SignedBatches::default(),
            last_batch: None,
            broken: false,
            exhausted: false,
            report: Report::default(),
            scratch: Vec::new(),
        };
        let known = trust
            .known_checkpoints
            .iter()
            .map(|note| (None, note.as_str()));
        let stored = checkpoints.iter().map(|r| (Some(r.size), r.note.as_str()));
        for (stored_size, note) in stored.chain(known) {
            let place = stored_size.unwrap_or(0);
            match open_checkpoint(note, &trust.log_keys, trust.origin.as_deref()) {
                Ok((cp, _)) if stored_size.is_some_and(|s| s != cp.size) => this.problem(
                    None,
                    Some(place),
                    format!(
                        "stored under size {place} but the signed note says {}",
                        cp.size
                    ),
                ),
                Ok((cp, _)) => match this.checkpoints.get(&cp.size) {
                    Some(root) if *root != cp.root => this.problem(
                        None,
                        Some(cp.size),
                        "two validly signed checkpoints disagree on the root (a fork)".into(),
                    ),
                    _ => {
                        this.checkpoints.insert(cp.size, cp.root);
                    }
                },
                Err(e) => this.problem(
                    None,
                    stored_size,
                    format!(
                        "note rejected: {e}{}",
                        if stored_size.is_none() {
                            " (known checkpoint)"
                        } else {
                            ""
                        }
                    ),
                ),
            }
        }
        for (b, verdict) in batches.iter().zip(check_batches(trust, batches)) {
            if verdict.is_ok() {
                this.report.batches_checked += 1;
            }
            this.batches.insert(&b.root, verdict);
        }
        this
    }

    fn problem(&mut self, index: Option<u64>, checkpoint: Option<u64>, what: String) {
        if self.report.problems.len() < MAX_LISTED {
            self.report.problems.push(Problem {
                index,
                checkpoint,
                what,
            });
        } else {
            self.report.more_problems += 1;
        }
    }

    /// The next index the checker expects.
    pub fn next_index(&self) -> u64 {
        self.frontier.size()
    }

    /// Feeds a run of entries in index order, hashing their bytes on all
    /// available cores first (hashing is most of the work).
    pub fn feed_chunk(&mut self, entries: &[EntryRecord]) {
        let refs: Vec<EntryRef<'_>> = entries.iter().map(EntryRef::from).collect();
        self.feed_refs(&refs);
    }

    /// Like [`Checker::feed_chunk`], over borrowed entries.
    pub fn feed_refs(&mut self, entries: &[EntryRef<'_>]) {
        // Hashing is most of the work: on all cores when there is enough.
        let leaves = entries.iter().map(|e| e.leaf).collect();
        let hashes = on_all_cores(leaves, 1024, leaf_hash);
        for (entry, hash) in entries.iter().zip(hashes) {
            self.feed_hashed(entry, hash);
        }
    }

    /// Whether reading further can tell anything: not after a gap (nothing
    /// beyond it is checked) nor once the stored entries have run out.
    pub(super) fn done(&self) -> bool {
        self.broken || self.exhausted
    }

    /// Feeds one entry (entries must come in increasing index order).
    pub fn feed(&mut self, entry: &EntryRecord) {
        self.feed_hashed(&EntryRef::from(entry), leaf_hash(&entry.leaf));
    }

    fn feed_hashed(&mut self, entry: &EntryRef<'_>, hash: Hash) {
        let expected = self.frontier.size();
        if entry.index != expected {
            if !self.broken {
                let what = if entry.index > expected {
                    format!(
                        "entry missing (the next stored entry is index {})",
                        entry.index
                    )
                } else {
                    format!(
                        "entry out of order (index {} after {})",
                        entry.index, expected
                    )
                };
                self.problem(Some(expected.min(entry.index)), None, what);
                self.broken = true;
            }
            return;
        }
        self.check_entry(entry, &hash);
        self.frontier.push_hash(hash);
        self.report.entries_checked += 1;
        self.check_root_here();
    }

    /// Everything checked about one entry apart from its place in the tree.
    fn check_entry(&mut self, entry: &EntryRef<'_>, hash: &Hash) {
        if !names_event(entry.leaf, &entry.event_id) {
            self.unnamed(entry.index, &entry.event_id);
        }
        self.check_signed(entry, hash);
    }

    /// Reports an entry whose bytes do not carry its event id.
    fn unnamed(&mut self, index: u64, event_id: &uuid::Uuid) {
        self.problem(
            Some(index),
            None,
            format!("bytes do not carry event id {event_id}"),
        );
    }

    /// Checks an entry against the batch its gateway signed, and against the
    /// level-0 node recorded for it.
    fn check_signed(&mut self, entry: &EntryRef<'_>, hash: &Hash) {
        let fault = (self.batches).fault(
            &mut self.last_batch,
            entry.batch_root,
            entry.batch_pos,
            hash,
        );
        if let Some(why) = fault {
            self.problem(Some(entry.index), None, why);
        } else if let Some(recorded) = entry.recorded_hash
            && recorded[..] != hash[..]
        {
            self.problem(Some(entry.index), None, MOVED.into());
        }
    }

    fn check_root_here(&mut self) {
        let size = self.frontier.size();
        if let Some(root) = self.checkpoints.get(&size).copied() {
            if self.frontier.root() == root {
                self.report.checkpoints_matched += 1;
            } else {
                let previous = self
                    .checkpoints
                    .range(..size)
                    .next_back()
                    .map_or(0, |(s, _)| *s);
                let from = previous.max(self.start);
                self.problem(
                    None,
                    Some(size),
                    format!(
                        "signed root differs from the root of the stored entries (a forked checkpoint, \
                         or entries altered somewhere in indexes {from}..{size})"
                    ),
                );
            }
        }
    }

    /// Finishes: checks for entries beyond the last checkpoint and for
    /// truncation, and returns the report. `stored_bound` is one past the
    /// highest index the source holds.
    pub fn finish(mut self, stored_bound: u64, full: bool) -> Report {
        let size = self.frontier.size();
        let latest = self.checkpoints.keys().next_back().copied().unwrap_or(0);
        if full && !self.broken {
            if size < latest {
                self.problem(
                    Some(size),
                    Some(latest),
                    format!("log truncated: {size} entries stored but a signed checkpoint covers {latest}"),
                );
            } else if stored_bound > latest {
                self.problem(
                    Some(latest),
                    None,
                    format!(
                        "entries up to index {} are not covered by any signed checkpoint",
                        stored_bound - 1
                    ),
                );
            }
        }
        if self.broken {
            self.report.root = None;
        } else {
            self.report.root = Some(self.frontier.root());
        }
        self.report.size = size;
        self.report
    }
}

/// Canonical event bytes start with `{"v":1,"id":"<uuid>"`; checking the id
/// this way keeps verification fast (the full decode is for readers).
pub(crate) fn names_event(bytes: &[u8], id: &uuid::Uuid) -> bool {
    let prefix = br#"{"v":1,"id":""#;
    let mut buf = uuid::Uuid::encode_buffer();
    let text = id.hyphenated().encode_lower(&mut buf).as_bytes();
    bytes.len() > prefix.len() + text.len()
        && bytes.starts_with(prefix)
        && &bytes[prefix.len()..prefix.len() + text.len()] == text
        && bytes[prefix.len() + text.len()] == b'"'
}

/// [`check_batch`] for every batch, on all available cores (a signature
/// check and a tree over each batch's leaf hashes add up in a large log).
fn check_batches(trust: &Trust, batches: &[BatchRecord]) -> Vec<BatchVerdict> {
    on_all_cores(batches.iter().collect(), 8, |b| check_batch(trust, b))
}

/// `f` of every item, in order, the items split evenly over the available
/// cores (up to 8) when there are at least `min` of them.
pub(super) fn on_all_cores<T: Send, R: Send>(
    items: Vec<T>,
    min: usize,
    f: impl Fn(T) -> R + Sync,
) -> Vec<R> {
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(8);
    if threads < 2 || items.len() < min.max(2) {
        return items.into_iter().map(f).collect();
    }
    let per = items.len().div_ceil(threads);
    let mut parts: Vec<Vec<T>> = Vec::with_capacity(threads);
    let mut items = items.into_iter().peekable();
    while items.peek().is_some() {
        parts.push(items.by_ref().take(per).collect());
    }
    let f = &f;
    std::thread::scope(|scope| {
        let handles: Vec<_> = parts
            .into_iter()
            .map(|part| scope.spawn(move || part.into_iter().map(f).collect::<Vec<_>>()))
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().expect("verifier thread panicked"))
            .collect()
    })
}

fn check_batch(trust: &Trust, b: &BatchRecord) -> BatchVerdict {
    let key = trust
        .submitters
        .iter()
        .find(|k| k.key_id()[..] == b.key_id[..])
        .ok_or_else(|| {
            format!(
                "key id {} is not a registered gateway key",
                hex::encode(&b.key_id)
            )
        })?;
    if !b.leaf_hashes.len().is_multiple_of(32) {
        return Err("leaf hash list is not a whole number of hashes".into());
    }
    let leaves: Vec<Hash> = b
        .leaf_hashes
        .chunks(32)
        .filter_map(hash_from_slice)
        .collect();
    let root = hash_from_slice(&b.root).ok_or("batch root is not 32 bytes")?;
    verify_batch_record(key, &leaves, &root, &b.signature).map_err(|e| e.to_string())?;
    Ok(leaves)
}

/// Verifies a store. With [`Scope::Range`], the tree's right edge at `from`
/// is read from the stored nodes; if those were altered the roots will not
/// match, so the check still fails closed. A store that keeps data tiles is
/// read tile by tile where whole tiles cover the range, and compares its rows
/// with those tiles itself (see `drive`).
pub async fn verify_store(
    store: &impl LedgerStore,
    trust: &Trust,
    scope: Scope,
) -> Result<Report, StoreError> {
    let checkpoints = store.checkpoints().await?;
    let bound = store.entry_bound().await?;
    let latest = checkpoints.last().map_or(0, |c| c.size);
    let (start, end, full) = match scope {
        Scope::Full => (0, bound.max(latest), true),
        Scope::Range { from, to } => {
            let end = checkpoints
                .iter()
                .map(|c| c.size)
                .find(|s| *s >= to.max(from.saturating_add(1)))
                .unwrap_or(bound.max(latest));
            (from, end, false)
        }
    };
    let frontier = if start == 0 {
        Frontier::new()
    } else {
        let keys = frontier_keys(start);
        let nodes = store.nodes(&keys).await?;
        let hashes: Option<Vec<Hash>> = keys.iter().map(|k| nodes.get(k).copied()).collect();
        match hashes.and_then(|h| Frontier::from_hashes(start, &h)) {
            Some(f) => f,
            None => {
                let mut report = Report::default();
                report.problems.push(Problem {
                    index: Some(start),
                    checkpoint: None,
                    what: "stored tree nodes needed to start a range check here are missing".into(),
                });
                return Ok(report);
            }
        }
    };
    // Rows up to the first whole tile, tiles, then the rows after the last one.
    let (first_tile, end_tile) = if store.keeps_tiles() {
        (start.div_ceil(TILE_WIDTH), end / TILE_WIDTH)
    } else {
        (0, 0)
    };
    // Checking every batch (a signature and a tree each) needs no entries,
    // so the first tiles are read meanwhile.
    let (checker, first_read) = tokio::join!(
        async {
            let batches = store.batches().await?;
            Ok::<_, StoreError>(Checker::new(trust, &checkpoints, &batches, start, frontier))
        },
        drive::first_tile_read(store, first_tile, end_tile)
    );
    let checker = checker?;
    let checker = if first_tile < end_tile {
        let checker = drive::feed_rows(store, checker, start, first_tile * TILE_WIDTH).await?;
        let checker = drive::feed_tiles(store, checker, first_tile, end_tile, first_read).await?;
        drive::feed_rows(store, checker, end_tile * TILE_WIDTH, end).await?
    } else {
        drive::feed_rows(store, checker, start, end).await?
    };
    let mut report = checker.finish(bound, full);
    // A full check names truncation itself. A range that stops short of its
    // end, with no gap inside it to report, lost its last entries: the read
    // just ended early, which must not pass for an intact range.
    if !full && report.root.is_some() && report.size < end {
        report.problems.push(Problem {
            index: Some(report.size),
            checkpoint: None,
            what: format!(
                "entry missing: the range should run to index {} but the stored entries end here",
                end - 1
            ),
        });
        report.root = None;
    }
    Ok(report)
}
