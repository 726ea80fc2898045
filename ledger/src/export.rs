//! The export file: everything a third party needs to verify the log offline.
//!
//! JSON Lines, one object per line, each with a `"type"`:
//! `header` (format name and version), `log_key` and `submitter` (vkey
//! strings), `checkpoint` (size and the signed note, verbatim), `batch` (root,
//! key id, signature, concatenated leaf hashes; binary fields in standard
//! base64, key id in hex), and `entry` (index, event id, the exact leaf bytes
//! in base64, batch root and position), entries in index order.
//! Offline verification trusts only the log keys the verifier brings; the
//! gateway keys come from the file itself (see docs/ledger.md for what that
//! does and does not prove).

use std::io::{BufRead, Write};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::keys::PublicKey;
use crate::store::{BatchRecord, CheckpointRecord, EntryRecord, LedgerStore, StoreError};
use crate::tree::Frontier;
use crate::verify::{Checker, Problem, Report, Trust};

pub const EXPORT_FORMAT: &str = "caracal-ledger-export";
pub const EXPORT_VERSION: u32 = 1;

/// Export reading and writing failures.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error("store: {0}")]
    Store(#[from] StoreError),
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    #[error("line {line}: {why}")]
    Malformed { line: usize, why: String },
    #[error("not a {EXPORT_FORMAT} version {EXPORT_VERSION} file")]
    WrongFormat,
}

#[derive(Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
enum Line {
    Header {
        format: String,
        version: u32,
    },
    LogKey {
        vkey: String,
    },
    Submitter {
        vkey: String,
    },
    Checkpoint {
        size: u64,
        note: String,
    },
    Batch {
        root: String,
        key_id: String,
        signature: String,
        leaf_hashes: String,
    },
    Entry {
        index: u64,
        event_id: Uuid,
        leaf: String,
        batch_root: String,
        batch_pos: u32,
    },
}

/// An export read back into memory.
#[derive(Clone, Debug, Default)]
pub struct Export {
    pub log_keys: Vec<String>,
    pub submitters: Vec<String>,
    pub checkpoints: Vec<CheckpointRecord>,
    pub batches: Vec<BatchRecord>,
    pub entries: Vec<EntryRecord>,
}

fn write_line(out: &mut impl Write, line: &Line) -> Result<(), ExportError> {
    serde_json::to_writer(&mut *out, line).map_err(std::io::Error::other)?;
    out.write_all(b"\n")?;
    Ok(())
}

/// Writes the whole log to `out`. Returns the number of entries written.
pub async fn write_export(
    store: &impl LedgerStore,
    out: &mut impl Write,
) -> Result<u64, ExportError> {
    write_line(
        out,
        &Line::Header {
            format: EXPORT_FORMAT.into(),
            version: EXPORT_VERSION,
        },
    )?;
    for vkey in store.log_keys().await? {
        write_line(out, &Line::LogKey { vkey })?;
    }
    for vkey in store.submitter_keys().await? {
        write_line(out, &Line::Submitter { vkey })?;
    }
    let checkpoints = store.checkpoints().await?;
    for c in &checkpoints {
        write_line(
            out,
            &Line::Checkpoint {
                size: c.size,
                note: c.note.clone(),
            },
        )?;
    }
    for b in store.batches().await? {
        write_line(
            out,
            &Line::Batch {
                root: STANDARD.encode(&b.root),
                key_id: hex::encode(&b.key_id),
                signature: STANDARD.encode(&b.signature),
                leaf_hashes: STANDARD.encode(&b.leaf_hashes),
            },
        )?;
    }
    let bound = store.entry_bound().await?;
    let mut written = 0;
    let mut next = 0;
    while next < bound {
        let end = (next + 20_000).min(bound);
        for e in store.entries(next, end).await? {
            write_line(
                out,
                &Line::Entry {
                    index: e.index,
                    event_id: e.event_id,
                    leaf: STANDARD.encode(&e.leaf),
                    batch_root: STANDARD.encode(&e.batch_root),
                    batch_pos: e.batch_pos,
                },
            )?;
            written += 1;
        }
        next = end;
    }
    out.flush()?;
    Ok(written)
}

/// Reads an export file.
pub fn read_export(input: impl BufRead) -> Result<Export, ExportError> {
    let mut export = Export::default();
    let mut saw_header = false;
    for (n, line) in input.lines().enumerate() {
        let line_no = n + 1;
        let line = line?;
        if line.is_empty() {
            continue;
        }
        let bad = |why: String| ExportError::Malformed { line: line_no, why };
        let b64 = |s: &str| {
            STANDARD
                .decode(s)
                .map_err(|e| bad(format!("bad base64: {e}")))
        };
        let parsed: Line = serde_json::from_str(&line).map_err(|e| bad(e.to_string()))?;
        match parsed {
            Line::Header { format, version } => {
                if format != EXPORT_FORMAT || version != EXPORT_VERSION || saw_header {
                    return Err(ExportError::WrongFormat);
                }
                saw_header = true;
            }
            _ if !saw_header => return Err(ExportError::WrongFormat),
            Line::LogKey { vkey } => export.log_keys.push(vkey),
            Line::Submitter { vkey } => export.submitters.push(vkey),
            Line::Checkpoint { size, note } => {
                export.checkpoints.push(CheckpointRecord { size, note })
            }
            Line::Batch {
                root,
                key_id,
                signature,
                leaf_hashes,
            } => export.batches.push(BatchRecord {
                root: b64(&root)?,
                key_id: hex::decode(&key_id).map_err(|e| bad(format!("bad key id: {e}")))?,
                signature: b64(&signature)?,
                leaf_hashes: b64(&leaf_hashes)?,
            }),
            Line::Entry {
                index,
                event_id,
                leaf,
                batch_root,
                batch_pos,
            } => export.entries.push(EntryRecord {
                index,
                event_id,
                leaf: b64(&leaf)?,
                batch_root: b64(&batch_root)?,
                batch_pos,
                recorded_hash: None,
            }),
        }
    }
    if !saw_header {
        return Err(ExportError::WrongFormat);
    }
    Ok(export)
}

/// Verifies an export offline. Checkpoints are trusted only under
/// `trust.log_keys` (the file's own log keys are ignored); the gateway keys
/// listed in the file are added to `trust.submitters`.
pub fn verify_export(export: &Export, mut trust: Trust) -> Report {
    trust.submitters.extend(
        export
            .submitters
            .iter()
            .filter_map(|v| PublicKey::from_vkey(v).ok()),
    );
    let mut checkpoints = export.checkpoints.clone();
    checkpoints.sort_by_key(|c| c.size);
    let mut checker = Checker::new(&trust, &checkpoints, &export.batches, 0, Frontier::new());
    let mut entries = export.entries.clone();
    entries.sort_by_key(|e| e.index);
    checker.feed_chunk(&entries);
    let bound = entries.last().map_or(0, |e| e.index.saturating_add(1));
    let mut report = checker.finish(bound, true);
    // An export whose entries are all covered by no checkpoint is reported
    // above; one with no entries and no trusted checkpoint has nothing wrong
    // in it, but nothing authenticated either, and must not pass as intact.
    if report.checkpoints_matched == 0 && report.problems.is_empty() {
        report.problems.push(Problem {
            index: None,
            checkpoint: None,
            what: "the export holds no checkpoint signed by a trusted log key, so nothing in it is authenticated".into(),
        });
    }
    report
}
