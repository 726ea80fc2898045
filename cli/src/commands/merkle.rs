//! `caracal merkle`: status, verification and proofs for the ledger's
//! Merkle log. Verification exits non-zero whenever anything is wrong.

use std::path::PathBuf;

use anyhow::{Context, bail};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use caracal_ledger::export::{read_export, verify_export};
use caracal_ledger::keys::PublicKey;
use caracal_ledger::prove::{prove_consistency, prove_event};
use caracal_ledger::store::{Ledger, LedgerStore, shown_url};
use caracal_ledger::verify::{Report, Scope, Trust, verify_store};
use chrono::{DateTime, NaiveDate, Utc};

/// Where the ledger lives.
#[derive(Debug, clap::Args)]
pub struct Db {
    /// Ledger database: `postgres://...` or `sqlite:PATH`.
    #[arg(long, env = "CARACAL_DATABASE_URL", value_name = "URL")]
    pub database_url: String,
}

impl Db {
    pub async fn open(&self) -> anyhow::Result<Ledger> {
        Ledger::open(&self.database_url).await.with_context(|| {
            format!(
                "opening the ledger database {}",
                shown_url(&self.database_url)
            )
        })
    }
}

#[derive(Debug, clap::Args)]
#[command(about = "Inspect and verify the ledger's Merkle log (RFC 6962, signed checkpoints)")]
pub struct Args {
    #[command(subcommand)]
    command: MerkleCommand,
}

#[derive(Debug, clap::Subcommand)]
enum MerkleCommand {
    /// Show the log size, the latest signed checkpoint, pending events and keys.
    Status {
        #[command(flatten)]
        db: Db,
    },
    /// Recompute the log and check every signature; exit 1 naming the first bad index if anything is wrong.
    #[command(
        long_about = "Recompute the Merkle tree from the stored entries and check every checkpoint \
        signature, every gateway batch signature, that indexes are dense and that each checkpoint's root \
        matches. Exits 0 when intact and 1 otherwise, naming the first bad index.\n\n\
        Without --public-key, checkpoints are checked against the log keys stored in the database, which \
        only proves internal consistency: pass the log's published key to prove authenticity.\n\n\
        With --export, verifies an export file offline (no database)."
    )]
    Verify(VerifyArgs),
    /// Print an inclusion proof for one event against the latest checkpoint (JSON).
    Prove {
        #[command(flatten)]
        db: Db,
        /// Event id (UUID).
        #[arg(long, value_name = "ID")]
        event: uuid::Uuid,
        /// File of trusted log verifier keys (one vkey per line); default: keys stored in the database.
        #[arg(long, value_name = "VKEY-FILE")]
        public_key: Option<PathBuf>,
    },
    /// Print a consistency proof between two checkpoints (JSON).
    Consistency {
        #[command(flatten)]
        db: Db,
        /// Size of the older checkpoint.
        #[arg(long, value_name = "SIZE")]
        old: u64,
        /// Size of the newer checkpoint (default: the latest).
        #[arg(long, value_name = "SIZE")]
        new: Option<u64>,
        /// File of trusted log verifier keys (one vkey per line); default: keys stored in the database.
        #[arg(long, value_name = "VKEY-FILE")]
        public_key: Option<PathBuf>,
    },
}

#[derive(Debug, clap::Args)]
struct VerifyArgs {
    /// Ledger database (`postgres://...` or `sqlite:PATH`); not needed with --export.
    #[arg(
        long,
        env = "CARACAL_DATABASE_URL",
        value_name = "URL",
        required_unless_present = "export"
    )]
    database_url: Option<String>,
    /// Check everything from index 0 (the default).
    #[arg(long, conflicts_with_all = ["from", "start", "export"])]
    full: bool,
    /// First index of a range check.
    #[arg(long, value_name = "N", requires = "to", conflicts_with_all = ["start", "export"])]
    from: Option<u64>,
    /// End of a range check (checking runs on to the first checkpoint at or past it).
    #[arg(long, value_name = "M", requires = "from")]
    to: Option<u64>,
    /// Start of a time range (RFC 3339 or YYYY-MM-DD, UTC).
    #[arg(long, value_name = "T", requires = "end", value_parser = parse_time, conflicts_with = "export")]
    start: Option<DateTime<Utc>>,
    /// End of a time range (exclusive).
    #[arg(long, value_name = "T", requires = "start", value_parser = parse_time)]
    end: Option<DateTime<Utc>>,
    /// Verify this export file offline instead of a database (needs --public-key).
    #[arg(long, value_name = "FILE", requires = "public_key")]
    export: Option<PathBuf>,
    /// File of trusted log verifier keys, one `name+keyid+key` per line.
    #[arg(long, value_name = "VKEY-FILE")]
    public_key: Option<PathBuf>,
    /// Checkpoint notes kept elsewhere (by a monitor or an earlier run); the log must agree with them.
    #[arg(long = "checkpoint", value_name = "NOTE-FILE")]
    checkpoints: Vec<PathBuf>,
    /// Require this checkpoint origin.
    #[arg(long)]
    origin: Option<String>,
}

/// Accepts RFC 3339 (`2026-01-31T12:00:00Z`) or a UTC date (`2026-01-31`).
pub fn parse_time(s: &str) -> Result<DateTime<Utc>, String> {
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Ok(t.with_timezone(&Utc));
    }
    NaiveDate::parse_from_str(s, "%Y-%m-%d")
        .map(|d| d.and_hms_opt(0, 0, 0).expect("midnight exists").and_utc())
        .map_err(|_| format!("{s:?} is neither RFC 3339 nor YYYY-MM-DD"))
}

pub fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?)
}

fn read_vkeys(path: &PathBuf) -> anyhow::Result<Vec<PublicKey>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let keys = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(PublicKey::from_vkey)
        .collect::<Result<Vec<_>, _>>()?;
    if keys.is_empty() {
        bail!("{} holds no verifier keys", path.display());
    }
    Ok(keys)
}

async fn trust_for(
    ledger: &Ledger,
    public_key: Option<&PathBuf>,
    origin: Option<String>,
    known: Vec<String>,
) -> anyhow::Result<Trust> {
    let log_keys = match public_key {
        Some(path) => read_vkeys(path)?,
        None => {
            eprintln!(
                "note: trusting the log keys stored in the database; pass --public-key to check authenticity"
            );
            ledger
                .log_keys()
                .await?
                .iter()
                .map(|v| PublicKey::from_vkey(v))
                .collect::<Result<_, _>>()?
        }
    };
    let submitters = ledger
        .submitter_keys()
        .await?
        .iter()
        .map(|v| PublicKey::from_vkey(v))
        .collect::<Result<_, _>>()?;
    Ok(Trust {
        log_keys,
        submitters,
        origin,
        known_checkpoints: known,
    })
}

fn print_report(report: &Report) -> anyhow::Result<()> {
    println!("entries checked:     {}", report.entries_checked);
    println!("checkpoints matched: {}", report.checkpoints_matched);
    println!("batches verified:    {}", report.batches_checked);
    println!("tree size:           {}", report.size);
    if let Some(root) = report.root {
        println!("root:                {}", STANDARD.encode(root));
    }
    if report.is_intact() {
        println!("OK: the log is intact");
        return Ok(());
    }
    for p in &report.problems {
        println!("PROBLEM {p}");
    }
    if report.more_problems > 0 {
        println!("... and {} more problems", report.more_problems);
    }
    match report.first_bad_index() {
        Some(i) => bail!("ledger verification FAILED: first bad index {i}"),
        None => bail!("ledger verification FAILED (see problems above)"),
    }
}

pub fn run(args: Args) -> anyhow::Result<()> {
    runtime()?.block_on(async move {
        match args.command {
            MerkleCommand::Status { db } => status(&db.open().await?).await,
            MerkleCommand::Verify(v) => verify(v).await,
            MerkleCommand::Prove {
                db,
                event,
                public_key,
            } => {
                let ledger = db.open().await?;
                let trust = trust_for(&ledger, public_key.as_ref(), None, vec![]).await?;
                let p = prove_event(&ledger, event, &trust).await?;
                let out = serde_json::json!({
                    "event_id": event,
                    "index": p.index,
                    "tree_size": p.checkpoint.size,
                    "leaf": STANDARD.encode(&p.leaf),
                    "leaf_hash": STANDARD.encode(p.leaf_hash),
                    "proof": p.proof.iter().map(|h| STANDARD.encode(h)).collect::<Vec<_>>(),
                    "checkpoint": p.note,
                });
                println!("{}", serde_json::to_string_pretty(&out)?);
                Ok(())
            }
            MerkleCommand::Consistency {
                db,
                old,
                new,
                public_key,
            } => {
                let ledger = db.open().await?;
                let trust = trust_for(&ledger, public_key.as_ref(), None, vec![]).await?;
                let p = prove_consistency(&ledger, old, new, &trust).await?;
                let out = serde_json::json!({
                    "old_size": p.old.size,
                    "new_size": p.new.size,
                    "old_root": STANDARD.encode(p.old.root),
                    "new_root": STANDARD.encode(p.new.root),
                    "proof": p.proof.iter().map(|h| STANDARD.encode(h)).collect::<Vec<_>>(),
                    "old_checkpoint": p.old_note,
                    "new_checkpoint": p.new_note,
                });
                println!("{}", serde_json::to_string_pretty(&out)?);
                Ok(())
            }
        }
    })
}

async fn status(ledger: &Ledger) -> anyhow::Result<()> {
    let s = ledger.status().await?;
    println!("entries:  {}", s.entries);
    println!("pending:  {}", s.pending);
    match &s.latest_checkpoint {
        Some(c) => println!("latest checkpoint (size {}):\n{}", c.size, c.note),
        None => println!("latest checkpoint: none yet"),
    }
    println!("log keys:");
    s.log_keys.iter().for_each(|k| println!("  {k}"));
    println!("gateway keys:");
    s.submitters.iter().for_each(|k| println!("  {k}"));
    Ok(())
}

async fn verify(v: VerifyArgs) -> anyhow::Result<()> {
    let mut known = Vec::new();
    for path in &v.checkpoints {
        known.push(
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?,
        );
    }
    if let Some(path) = &v.export {
        let keys = read_vkeys(v.public_key.as_ref().expect("clap requires --public-key"))?;
        let file =
            std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
        let export = read_export(std::io::BufReader::new(file))?;
        let trust = Trust {
            log_keys: keys,
            submitters: vec![],
            origin: v.origin,
            known_checkpoints: known,
        };
        return print_report(&verify_export(&export, trust));
    }
    let url = v
        .database_url
        .as_deref()
        .expect("clap requires --database-url without --export");
    let ledger = Ledger::open(url)
        .await
        .with_context(|| format!("opening the ledger database {}", shown_url(url)))?;
    let trust = trust_for(&ledger, v.public_key.as_ref(), v.origin, known).await?;
    let scope = match (v.from, v.to, v.start, v.end) {
        (Some(from), Some(to), _, _) => Scope::Range { from, to },
        (_, _, Some(start), Some(end)) => match ledger.index_range_for_time(start, end).await? {
            Some((from, to)) => Scope::Range { from, to },
            None => {
                println!("no entries between {start} and {end}");
                return Ok(());
            }
        },
        _ => Scope::Full,
    };
    print_report(&verify_store(&ledger, &trust, scope).await?)
}
