//! The `caracal dev` ledger path (a program, not a test). Run in release mode:
//!
//! ```text
//! cargo run --release -p caracal-ledger --example bench_dev_ledger
//! BENCH_EVENTS=64000 BENCH_BATCH_SIZES=32,512 cargo run --release -p caracal-ledger --example bench_dev_ledger
//! ```
//!
//! A gateway that is its own sequencer (`caracal dev`) signs each spool
//! batch and appends it to a SQLite log with a signed checkpoint
//! (`SqliteStore::submit_and_sequence`). For each batch size this program
//! measures that path — signing, the batch checks, the tree and the
//! checkpoint, SQLite — against a baseline measured in the same run: the
//! same event bytes inserted into a plain SQLite table (an id and the
//! bytes, one transaction per batch, the same multi-row statements and the
//! same journal settings). The path runs on a blocking thread per batch, as
//! in `caracal dev`, and is measured twice: with the batch checked on that
//! thread (`submit_and_sequence_blocking`, what `caracal dev` calls) and
//! through the async call, which hands the check to another thread. It prints CPU time (the whole process, every
//! thread) and wall time per event and per batch, and the ratio to the
//! baseline. Each run uses fresh database files in the temporary folder.

use std::str::FromStr;
use std::time::{Duration, Instant};

use anyhow::Context;
use caracal_ledger::batch::BatchSigner;
use caracal_ledger::event::MeteringEvent;
use caracal_ledger::keys::KeyPair;
use caracal_ledger::store::{Ledger, LedgerStore};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions};

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// CPU time of the whole process (every thread) so far, from `/proc`.
fn process_cpu() -> anyhow::Result<Duration> {
    let stat = std::fs::read_to_string("/proc/self/stat")?;
    // Fields after the command name, which is in parentheses.
    let rest = stat.rsplit_once(')').context("/proc/self/stat")?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = fields[11].parse::<u64>()? + fields[12].parse::<u64>()?;
    // Linux reports these in USER_HZ, 100 per second on every architecture
    // it supports for this interface.
    Ok(Duration::from_millis(ticks * 10))
}

/// A database file in the temporary folder, removed (with its WAL) on drop.
struct TempDb(std::path::PathBuf);

impl TempDb {
    fn new(tag: &str) -> Self {
        TempDb(std::env::temp_dir().join(format!(
            "caracal-bench-{tag}-{}.db",
            uuid::Uuid::now_v7().simple()
        )))
    }
    fn url(&self) -> String {
        format!("sqlite:{}", self.0.display())
    }
}

impl Drop for TempDb {
    fn drop(&mut self) {
        for suffix in ["", "-wal", "-shm"] {
            let mut p = self.0.clone().into_os_string();
            p.push(suffix);
            std::fs::remove_file(p).ok();
        }
    }
}

/// CPU and wall time spent on `events` events in `batches` batches.
struct Cost {
    cpu: Duration,
    wall: Duration,
}

impl Cost {
    fn line(&self, label: &str, events: u64, batches: u64) -> String {
        format!(
            "{label:<34} CPU {:>6.2} µs/event {:>8.0} µs/batch   wall {:>6.2} µs/event",
            self.cpu.as_secs_f64() * 1e6 / events as f64,
            self.cpu.as_secs_f64() * 1e6 / batches as f64,
            self.wall.as_secs_f64() * 1e6 / events as f64,
        )
    }
}

async fn measure<F, Fut>(mut step: F, batches: u64) -> anyhow::Result<Cost>
where
    F: FnMut(u64) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<()>>,
{
    let (cpu0, wall0) = (process_cpu()?, Instant::now());
    for b in 0..batches {
        step(b).await?;
    }
    Ok(Cost {
        cpu: process_cpu()? - cpu0,
        wall: wall0.elapsed(),
    })
}

/// Signing and sequencing `batches` batches of `size` events, as
/// `caracal dev` ships its spool: each batch on a blocking thread, which
/// either checks the batch itself (`check_here`, as `caracal dev` does since
/// the tenth session) or drives the async call, which hands the check to
/// another blocking thread (as before).
async fn sequencing(
    encoded: &[Vec<Vec<u8>>],
    gateway: &str,
    check_here: bool,
) -> anyhow::Result<Cost> {
    let db = TempDb::new("dev-ledger");
    let ledger = std::sync::Arc::new(Ledger::open(&db.url()).await?);
    let signer = BatchSigner::new(KeyPair::generate(gateway)?);
    ledger.register_submitter(signer.public()).await?;
    let log_key = KeyPair::generate("caracal.bench/dev")?;
    let runtime = tokio::runtime::Handle::current();
    measure(
        |b| {
            let batch = signer.sign_encoded(encoded[b as usize].clone());
            let (ledger, log_key, runtime) = (ledger.clone(), log_key.clone(), runtime.clone());
            async move {
                tokio::task::spawn_blocking(move || {
                    if check_here {
                        ledger.submit_and_sequence_blocking(batch, &log_key, &runtime)
                    } else {
                        runtime.block_on(ledger.submit_and_sequence(batch, &log_key))
                    }
                })
                .await??;
                Ok(())
            }
        },
        encoded.len() as u64,
    )
    .await
}

/// The baseline: the same bytes into a plain table, one transaction per
/// batch, in statements of at most 128 rows.
async fn raw_inserts(encoded: &[Vec<Vec<u8>>]) -> anyhow::Result<Cost> {
    let db = TempDb::new("raw");
    let options = SqliteConnectOptions::from_str(&db.url())?
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal);
    let pool = SqlitePoolOptions::new()
        .max_connections(1)
        .connect_with(options)
        .await?;
    sqlx::query("CREATE TABLE raw (idx INTEGER PRIMARY KEY, bytes BLOB NOT NULL)")
        .execute(&pool)
        .await?;
    let mut next = 0i64;
    measure(
        |b| {
            let rows = &encoded[b as usize];
            let first = next;
            next += rows.len() as i64;
            let pool = &pool;
            async move {
                let mut tx = pool.begin().await?;
                for (c, chunk) in rows.chunks(128).enumerate() {
                    let sql = format!(
                        "INSERT INTO raw (idx, bytes) VALUES {}",
                        vec!["(?, ?)"; chunk.len()].join(", ")
                    );
                    let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
                    for (i, bytes) in chunk.iter().enumerate() {
                        q = q.bind(first + (c * 128 + i) as i64).bind(bytes);
                    }
                    q.execute(&mut *tx).await?;
                }
                tx.commit().await?;
                Ok(())
            }
        },
        encoded.len() as u64,
    )
    .await
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let events = env_u64("BENCH_EVENTS", 64_000);
    let sizes: Vec<u64> = std::env::var("BENCH_BATCH_SIZES")
        .unwrap_or_else(|_| "32,512".into())
        .split(',')
        .map(|s| s.trim().parse().context("BENCH_BATCH_SIZES: numbers"))
        .collect::<anyhow::Result<_>>()?;
    let gateway = MeteringEvent::example(0).gateway_id;
    println!(
        "caracal dev ledger: {events} events per run, SQLite in WAL mode, CPU of the whole process"
    );
    for size in sizes {
        let encoded: Vec<Vec<Vec<u8>>> = (0..events / size)
            .map(|b| {
                (b * size..(b + 1) * size)
                    .map(|n| MeteringEvent::example(n).encode())
                    .collect::<Result<_, _>>()
            })
            .collect::<Result<_, _>>()?;
        let (n, batches) = (size * encoded.len() as u64, encoded.len() as u64);
        let raw = raw_inserts(&encoded).await?;
        let from_task = sequencing(&encoded, &gateway, false).await?;
        let dev = sequencing(&encoded, &gateway, true).await?;
        println!("batches of {size}:");
        println!("  {}", raw.line("raw INSERT (baseline)", n, batches));
        println!(
            "  {}",
            from_task.line("sign + check + sequence, async", n, batches)
        );
        println!(
            "  {}",
            dev.line("the same, blocking (caracal dev)", n, batches)
        );
        println!(
            "  ratio to the baseline: CPU {:.2}, wall {:.2}",
            dev.cpu.as_secs_f64() / raw.cpu.as_secs_f64(),
            dev.wall.as_secs_f64() / raw.wall.as_secs_f64()
        );
    }
    Ok(())
}
