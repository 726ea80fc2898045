//! Ledger benchmark (a program, not a test). Run in release mode:
//!
//! ```text
//! cargo run --release -p caracal-ledger --example bench_ledger
//! BENCH_EVENTS=200000 BENCH_PROOF_SIZE=10000000 cargo run --release -p caracal-ledger --example bench_ledger
//! ```
//!
//! Uses a fresh Postgres database (CARACAL_TEST_DATABASE_URL, dropped at the
//! end) and prints, each against a baseline measured in the same run:
//! 1. append: submit (signature and canonical checks) + sequence with a signed
//!    checkpoint every `BENCH_STEP` events, against raw multi-row INSERT and
//!    COPY of the same entry rows into a plain table with the same indexes;
//! 2. full verify from Postgres (through the data tiles) right after the
//!    append (the sequencer vacuums the entries behind itself, but its last
//!    entries are still unmarked and the table has no statistics) and again
//!    after a database-wide `VACUUM ANALYZE`,
//!    against reading the same rows, each half of the verifier's read alone,
//!    and in memory;
//! 3. inclusion proofs served (from hash tiles and right-edge nodes) and
//!    verified, in a tree of `BENCH_PROOF_SIZE` leaves whose node table and
//!    hash tiles are generated inside Postgres (real SHA-256 nodes over
//!    synthetic 8-byte leaves, built level by level with SQL, so the index is
//!    as deep as a real log's), against the same proofs assembled from nodes
//!    alone (the path before hash tiles) and a single primary-key lookup.
//!
//! Switches: `BENCH_KEEP_DB=NAME` keeps the appended log (a later run only
//! verifies it, `BENCH_VERIFY_RUNS` times); `BENCH_PROOF_DB=NAME` keeps the
//! generated tree for later runs, and `BENCH_PROOF_SAMPLES=0` only builds it;
//! `BENCH_PROOF_PATHS=tiles` (or `nodes`, `lookup`, comma-separated) measures
//! only those; `BENCH_VERIFY_ONLY=1` skips the verify baselines (for profiling).

use std::time::{Duration, Instant};

use anyhow::Context;
use caracal_ledger::batch::{Batch, BatchSigner};
use caracal_ledger::event::MeteringEvent;
use caracal_ledger::hash::Hash;
use caracal_ledger::keys::KeyPair;
use caracal_ledger::note::Checkpoint;
use caracal_ledger::proof::{inclusion_ranges, verify_inclusion};
use caracal_ledger::prove::prove_index_at;
use caracal_ledger::store::{Ledger, LedgerStore, PgStore, RowChecks};
use caracal_ledger::tree::{Frontier, LeafRange, frontier_keys, range_hash, range_keys};
use caracal_ledger::verify::{Checker, Scope, Trust, verify_store};
use rand::Rng;
use sqlx::{Connection, PgConnection};

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn admin_url() -> String {
    std::env::var("CARACAL_TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

async fn fresh_db(tag: &str) -> anyhow::Result<(String, String)> {
    let name = format!("caracal_bench_{tag}_{}", uuid::Uuid::now_v7().simple());
    let admin = admin_url();
    let mut conn = PgConnection::connect(&admin).await?;
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(&mut conn)
        .await?;
    let url = database_url(&admin, &name)?;
    Ok((name, url))
}

async fn drop_db(name: &str) {
    if let Ok(mut conn) = PgConnection::connect(&admin_url()).await {
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
        )))
        .execute(&mut conn)
        .await
        .ok();
    }
}

fn rate(n: u64, d: Duration) -> f64 {
    n as f64 / d.as_secs_f64()
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let events = env_u64("BENCH_EVENTS", 200_000);
    let step = env_u64("BENCH_STEP", 5_000);
    let proof_size = env_u64("BENCH_PROOF_SIZE", 10_000_000);
    println!(
        "# caracal-ledger benchmark: {events} events, checkpoint every {step} events, proofs at size {proof_size}"
    );

    if events > 0 {
        // BENCH_KEEP_DB=NAME keeps the appended log in database NAME; a later
        // run with the same name only verifies it again (BENCH_VERIFY_RUNS times).
        match std::env::var("BENCH_KEEP_DB") {
            Ok(name) => {
                let url = kept_db(&name).await?;
                let ledger = Ledger::open(&url).await?;
                let stored = ledger.entry_bound().await?;
                if stored == 0 {
                    append_and_verify(&url, events, step).await?;
                } else {
                    println!("verifying the {stored} entries kept in {name}");
                    let trust = Trust {
                        log_keys: parse_vkeys(&ledger.log_keys().await?)?,
                        submitters: parse_vkeys(&ledger.submitter_keys().await?)?,
                        origin: Some("caracal.bench/log".into()),
                        known_checkpoints: vec![],
                    };
                    verify_section(&ledger, &trust, stored, false).await?;
                }
            }
            Err(_) => {
                let (name, url) = fresh_db("append").await?;
                let result = append_and_verify(&url, events, step).await;
                drop_db(&name).await;
                result?;
            }
        }
    }

    if proof_size > 0 {
        // BENCH_PROOF_DB=NAME keeps the generated tree in database NAME and
        // reuses it on the next run (building 10M leaves takes minutes).
        match std::env::var("BENCH_PROOF_DB") {
            Ok(name) => {
                let url = kept_db(&name).await?;
                proofs(&url, proof_size).await?;
            }
            Err(_) => {
                let (name, url) = fresh_db("proof").await?;
                let result = proofs(&url, proof_size).await;
                drop_db(&name).await;
                result?;
            }
        }
    }
    Ok(())
}

fn parse_vkeys(vkeys: &[String]) -> anyhow::Result<Vec<caracal_ledger::PublicKey>> {
    Ok(vkeys
        .iter()
        .map(|v| caracal_ledger::PublicKey::from_vkey(v))
        .collect::<Result<_, _>>()?)
}

/// A database that outlives the run (created if missing).
async fn kept_db(name: &str) -> anyhow::Result<String> {
    anyhow::ensure!(
        name.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'),
        "BENCH_PROOF_DB must be lowercase letters, digits and _"
    );
    let admin = admin_url();
    let mut conn = PgConnection::connect(&admin).await?;
    let exists: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)")
            .bind(name)
            .fetch_one(&mut conn)
            .await?;
    if !exists {
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&mut conn)
            .await?;
    }
    database_url(&admin, name)
}

/// The admin URL with its database replaced by `name`.
fn database_url(admin: &str, name: &str) -> anyhow::Result<String> {
    let (base, _) = admin.rsplit_once('/').context("admin url")?;
    Ok(format!("{base}/{name}"))
}

async fn append_and_verify(url: &str, events: u64, step: u64) -> anyhow::Result<()> {
    let ledger = Ledger::open(url).await?;
    let Ledger::Postgres(pg) = &ledger else {
        unreachable!()
    };
    let log = KeyPair::generate("caracal.bench/log")?;
    let gw = BatchSigner::new(KeyPair::generate("gw-node-1")?);
    ledger.register_submitter(gw.public()).await?;

    // Gateways sign batches of 1000; that is their cost, not the ledger's.
    let batches: Vec<Batch> = (0..events.div_ceil(1000))
        .map(|b| {
            let evs: Vec<_> = (b * 1000..((b + 1) * 1000).min(events))
                .map(MeteringEvent::example)
                .collect();
            gw.sign_events(&evs)
        })
        .collect::<Result<_, _>>()?;
    let bytes: u64 = batches
        .iter()
        .flat_map(|b| &b.events)
        .map(|e| e.len() as u64)
        .sum();
    println!("event size: {} bytes on average", bytes / events.max(1));

    // 1. Append with checkpoints. Two gateways submit concurrently while the
    // sequencer steps whenever events are queued (as in a deployment), or
    // one after the other with BENCH_SEQUENTIAL=1.
    let sequential = env_u64("BENCH_SEQUENTIAL", 0) == 1;
    let started = Instant::now();
    let mut last_checkpoint = Instant::now();
    let mut longest_gap = Duration::ZERO;
    let mut checkpoints = 0;
    let mut appended = 0;
    if sequential {
        let per_step = (step / 1000).max(1) as usize;
        for chunk in batches.chunks(per_step) {
            for b in chunk {
                ledger.submit(b.clone()).await?;
            }
            loop {
                let out = ledger.sequence_pending(&log).await?;
                if out.appended == 0 {
                    break;
                }
                appended += out.appended;
                checkpoints += 1;
                longest_gap = longest_gap.max(last_checkpoint.elapsed());
                last_checkpoint = Instant::now();
            }
        }
    } else {
        let mut submitters = Vec::new();
        for part in 0..2 {
            let mine: Vec<Batch> = batches.iter().skip(part).step_by(2).cloned().collect();
            let l = ledger.clone();
            submitters.push(tokio::spawn(async move {
                for b in mine {
                    l.submit(b).await?;
                }
                Ok::<_, caracal_ledger::StoreError>(())
            }));
        }
        while appended < events {
            let out = ledger.sequence_pending(&log).await?;
            if out.appended == 0 {
                tokio::time::sleep(Duration::from_millis(5)).await;
                continue;
            }
            appended += out.appended;
            checkpoints += 1;
            longest_gap = longest_gap.max(last_checkpoint.elapsed());
            last_checkpoint = Instant::now();
        }
        for s in submitters {
            s.await??;
        }
    }
    anyhow::ensure!(appended == events, "appended {appended} of {events}");
    let append = started.elapsed();
    let append_rate = rate(events, append);

    // Baselines: the same entry rows, no tree, no signatures, no queue.
    let entries = ledger.entries(0, events).await?;
    sqlx::raw_sql(
        "CREATE TABLE bench_raw (idx bigint PRIMARY KEY, event_id uuid NOT NULL UNIQUE, leaf bytea NOT NULL,
            batch_root bytea NOT NULL, batch_pos int NOT NULL, event_time timestamptz NOT NULL, agent text NOT NULL);
         CREATE INDEX ON bench_raw (event_time); CREATE INDEX ON bench_raw (agent, event_time);
         CREATE TABLE bench_copy (LIKE bench_raw INCLUDING ALL);",
    )
    .execute(pg.pool())
    .await?;
    let decoded: Vec<MeteringEvent> = entries
        .iter()
        .map(|e| MeteringEvent::decode(&e.leaf))
        .collect::<Result<_, _>>()?;
    // Same concurrency as the ledger's submitters: two connections.
    let chunks: Vec<(Vec<caracal_ledger::store::EntryRecord>, Vec<MeteringEvent>)> = entries
        .chunks(step as usize)
        .zip(decoded.chunks(step as usize))
        .map(|(c, e)| (c.to_vec(), e.to_vec()))
        .collect();
    let started = Instant::now();
    let mut inserters = Vec::new();
    for part in 0..2 {
        let mine: Vec<_> = chunks.iter().skip(part).step_by(2).cloned().collect();
        let pool = pg.pool().clone();
        inserters.push(tokio::spawn(async move {
            for (chunk, evs) in mine {
                sqlx::query(
                    "INSERT INTO bench_raw SELECT * FROM UNNEST($1::bigint[], $2::uuid[], $3::bytea[], $4::bytea[],
                         $5::int[], $6::timestamptz[], $7::text[])",
                )
                .bind(chunk.iter().map(|e| e.index as i64).collect::<Vec<_>>())
                .bind(chunk.iter().map(|e| e.event_id).collect::<Vec<_>>())
                .bind(chunk.iter().map(|e| e.leaf.clone()).collect::<Vec<_>>())
                .bind(chunk.iter().map(|e| e.batch_root.clone()).collect::<Vec<_>>())
                .bind(chunk.iter().map(|e| e.batch_pos as i32).collect::<Vec<_>>())
                .bind(evs.iter().map(|e| e.time).collect::<Vec<_>>())
                .bind(evs.iter().map(|e| e.agent.to_string()).collect::<Vec<_>>())
                .execute(&pool)
                .await?;
            }
            Ok::<_, sqlx::Error>(())
        }));
    }
    for i in inserters {
        i.await??;
    }
    let insert = started.elapsed();
    let started = Instant::now();
    let mut conn = pg.pool().acquire().await?;
    let mut copy = conn.copy_in_raw("COPY bench_copy FROM STDIN").await?;
    for (chunk, evs) in entries
        .chunks(step as usize)
        .zip(decoded.chunks(step as usize))
    {
        let mut buf = String::with_capacity(chunk.len() * 1400);
        for (e, ev) in chunk.iter().zip(evs) {
            buf.push_str(&format!(
                "{}\t{}\t\\\\x{}\t\\\\x{}\t{}\t{}\t{}\n",
                e.index,
                e.event_id,
                hex::encode(&e.leaf),
                hex::encode(&e.batch_root),
                e.batch_pos,
                ev.time.to_rfc3339(),
                ev.agent
            ));
        }
        copy.send(buf.into_bytes()).await?;
    }
    copy.finish().await?;
    drop(conn);
    let copy_time = started.elapsed();

    println!(
        "\n## append (Postgres, {})",
        if sequential {
            "submit then sequence, in turn"
        } else {
            "2 submitters + sequencer, concurrently"
        }
    );
    println!(
        "ledger append:     {append_rate:>10.0} events/s  ({checkpoints} checkpoints, longest gap between checkpoints {longest_gap:.2?})"
    );
    println!(
        "raw INSERT (2 conn): {:>10.0} rows/s    ledger/INSERT = {:.2}",
        rate(events, insert),
        append_rate / rate(events, insert)
    );
    println!(
        "raw COPY:          {:>10.0} rows/s    ledger/COPY   = {:.2}",
        rate(events, copy_time),
        append_rate / rate(events, copy_time)
    );

    // 2. Full verification.
    let trust = Trust {
        log_keys: vec![log.public().clone()],
        submitters: vec![gw.public().clone()],
        origin: Some("caracal.bench/log".into()),
        known_checkpoints: vec![],
    };
    verify_section(&ledger, &trust, events, true).await
}

/// Verifies the whole log `BENCH_VERIFY_RUNS` times; returns the fastest.
async fn verify_runs(
    ledger: &Ledger,
    trust: &Trust,
    events: u64,
    label: &str,
) -> anyhow::Result<Duration> {
    let mut fastest = Duration::MAX;
    for run in 0..env_u64("BENCH_VERIFY_RUNS", 1) {
        let started = Instant::now();
        let report = verify_store(ledger, trust, Scope::Full).await?;
        let took = started.elapsed();
        anyhow::ensure!(
            report.is_intact() && report.entries_checked == events,
            "benchmark log failed to verify: {:?}",
            report.problems
        );
        println!("{label} {run}: {:>10.0} entries/s", rate(events, took));
        fastest = fastest.min(took);
    }
    Ok(fastest)
}

/// `fresh`: the log was just appended. It is verified as it is (only the
/// sequencer's own vacuums have run: its newest entries are not marked in
/// the visibility map, and there are no statistics), then again after
/// `VACUUM ANALYZE` of the whole database.
async fn verify_section(
    ledger: &Ledger,
    trust: &Trust,
    events: u64,
    fresh: bool,
) -> anyhow::Result<()> {
    let Ledger::Postgres(pg) = ledger else {
        unreachable!()
    };
    let trust = trust.clone();
    let verify = verify_runs(ledger, &trust, events, "verify run").await?;
    let vacuumed = if fresh {
        sqlx::raw_sql("VACUUM ANALYZE").execute(pg.pool()).await?;
        Some(verify_runs(ledger, &trust, events, "verify after VACUUM, run").await?)
    } else {
        None
    };
    if std::env::var("BENCH_VERIFY_ONLY").is_ok_and(|v| v == "1") {
        return Ok(());
    }
    let entries = ledger.entries(0, events).await?;
    let started = Instant::now();
    let mut read = 0u64;
    let mut next = 0;
    while next < events {
        let rows = sqlx::query("SELECT idx, event_id, leaf, batch_root, batch_pos FROM bench_raw WHERE idx >= $1 AND idx < $2 ORDER BY idx")
            .bind(next as i64)
            .bind((next + 20_000) as i64)
            .fetch_all(pg.pool())
            .await?;
        read += rows.len() as u64;
        next += 20_000;
    }
    let read_time = started.elapsed();
    let started = Instant::now();
    let mut fetched = 0u64;
    let mut next = 0;
    while next < events {
        fetched += ledger
            .entries(next, (next + 20_000).min(events))
            .await?
            .len() as u64;
        next += 20_000;
    }
    let fetch_time = started.elapsed();
    // The two halves of the tiled path, each alone.
    let tiles = events / caracal_ledger::tile::TILE_WIDTH;
    let started = Instant::now();
    let mut tiled = 0u64;
    let mut next = 0;
    while next < tiles {
        tiled += ledger
            .tiles(next, (next + 64).min(tiles))
            .await?
            .tiles
            .len() as u64
            * caracal_ledger::tile::TILE_WIDTH;
        next += 64;
    }
    let tile_time = started.elapsed();
    let started = Instant::now();
    let mut records = 0u64;
    let mut next = 0;
    while next < tiles {
        match ledger.row_checks(next, (next + 64).min(tiles)).await? {
            RowChecks::Records(chunk) => records += chunk.rows.len() as u64,
            RowChecks::Unavailable(why) => anyhow::bail!("verify records refused: {why}"),
        }
        next += 64;
    }
    let records_time = started.elapsed();
    let checkpoints_all = ledger.checkpoints().await?;
    let batch_rows = ledger.batches().await?;
    let started = Instant::now();
    let mut checker = Checker::new(&trust, &checkpoints_all, &batch_rows, 0, Frontier::new());
    checker.feed_chunk(&entries);
    let mem = checker.finish(events, true);
    let mem_time = started.elapsed();
    anyhow::ensure!(mem.is_intact(), "in-memory verify failed");
    println!("\n## full verify");
    println!(
        "verify from Postgres: {:>10.0} entries/s{}",
        rate(events, verify),
        if fresh {
            "  (right after the append: the sequencer's own vacuums only)"
        } else {
            ""
        }
    );
    if let Some(vacuumed) = vacuumed {
        println!(
            "  after VACUUM:        {:>10.0} entries/s  (VACUUM ANALYZE of the database; the reads below also run after it)",
            rate(events, vacuumed)
        );
    }
    // The plain read ran in the same state as the last verification.
    let comparable = vacuumed.unwrap_or(verify);
    println!(
        "plain read of rows:   {:>10.0} rows/s     verify/read = {:.2}",
        rate(read, read_time),
        rate(events, comparable) / rate(read, read_time)
    );
    println!(
        "row read (COPY):      {:>10.0} rows/s     (the verifier's row read alone, no hashing)",
        rate(fetched, fetch_time)
    );
    println!(
        "tile read (COPY):     {:>10.0} entries/s  (the verifier's tile read alone, no hashing)",
        rate(tiled, tile_time)
    );
    println!(
        "verify records read:  {:>10.0} rows/s     (the rows' verify records alone, catalog check included)",
        rate(records, records_time)
    );
    println!(
        "verify in memory:     {:>10.0} entries/s  (checkpoint signatures included)",
        rate(events, mem_time)
    );
    Ok(())
}

async fn proofs(url: &str, size: u64) -> anyhow::Result<()> {
    let store = PgStore::open(url).await?;
    println!("\n## inclusion proofs at size {size}");
    let leaves: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM ledger_nodes WHERE level = 0")
        .fetch_one(store.pool())
        .await?;
    if leaves as u64 == size {
        println!("reusing the tree already generated in this database");
    } else {
        anyhow::ensure!(
            leaves == 0,
            "database holds a tree of {leaves} leaves, not {size}"
        );
        build_tree(&store, size).await?;
    }
    let tiles: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM ledger_hash_tiles")
        .fetch_one(store.pool())
        .await?;
    if tiles == 0 {
        build_hash_tiles(&store).await?;
    }
    // BENCH_PROOF_SAMPLES=0 only builds the tree (with BENCH_PROOF_DB, to
    // keep the build out of the quiet window the measurement needs).
    if env_u64("BENCH_PROOF_SAMPLES", 10_000) == 0 {
        return Ok(());
    }
    prove_many(&store, size).await
}

/// Generates a real tree of `size` synthetic leaves inside Postgres.
async fn build_tree(store: &PgStore, size: u64) -> anyhow::Result<()> {
    let started = Instant::now();
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "INSERT INTO ledger_nodes (level, idx, hash)
         SELECT 0, g, sha256('\\x00'::bytea || int8send(g)) FROM generate_series(0, {}) g",
        size - 1
    )))
    .execute(store.pool())
    .await?;
    let mut level: i16 = 0;
    loop {
        let done = sqlx::query(
            "INSERT INTO ledger_nodes (level, idx, hash)
             SELECT $1 + 1, a.idx / 2, sha256('\\x01'::bytea || a.hash || b.hash)
             FROM ledger_nodes a JOIN ledger_nodes b ON b.level = $1 AND b.idx = a.idx + 1
             WHERE a.level = $1 AND a.idx % 2 = 0",
        )
        .bind(level)
        .execute(store.pool())
        .await?
        .rows_affected();
        if done == 0 {
            break;
        }
        level += 1;
    }
    sqlx::raw_sql("VACUUM ANALYZE ledger_nodes")
        .execute(store.pool())
        .await?;
    let nodes: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM ledger_nodes")
        .fetch_one(store.pool())
        .await?;
    println!(
        "generated {nodes} tree nodes in Postgres in {:.1?}",
        started.elapsed()
    );
    Ok(())
}

/// Builds every full hash tile from the generated nodes, by SQL (the
/// statement migration 0004 uses for an existing log).
async fn build_hash_tiles(store: &PgStore) -> anyhow::Result<()> {
    let started = Instant::now();
    sqlx::raw_sql(
        "INSERT INTO ledger_hash_tiles (tile_level, tile_index, hashes)
         SELECT level / 8, idx >> 8, string_agg(hash, ''::bytea ORDER BY idx)
         FROM ledger_nodes WHERE level % 8 = 0
         GROUP BY level, idx >> 8 HAVING count(*) = 256",
    )
    .execute(store.pool())
    .await?;
    // On its own: several statements in one simple query run as one
    // transaction, and VACUUM refuses to run inside one.
    sqlx::raw_sql("VACUUM ANALYZE ledger_hash_tiles")
        .execute(store.pool())
        .await?;
    let tiles: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM ledger_hash_tiles")
        .fetch_one(store.pool())
        .await?;
    println!(
        "generated {tiles} hash tiles in Postgres in {:.1?}",
        started.elapsed()
    );
    Ok(())
}

/// What the proof benchmark measures.
#[derive(Clone, Copy)]
enum ProofPath {
    Tiles,
    Nodes,
    Lookup,
}

impl ProofPath {
    fn parse(name: &str) -> anyhow::Result<Self> {
        match name {
            "tiles" => Ok(Self::Tiles),
            "nodes" => Ok(Self::Nodes),
            "lookup" => Ok(Self::Lookup),
            other => anyhow::bail!("unknown proof path {other:?} (tiles, nodes, lookup)"),
        }
    }

    fn label(self) -> &'static str {
        match self {
            Self::Tiles => "proof served + verified (hash tiles):",
            Self::Nodes => "same, from nodes only (before):",
            Self::Lookup => "single-row PK lookup:",
        }
    }
}

/// The proof path before hash tiles: every node read from the node table,
/// then the proof verified. Kept here to measure both in the same run.
async fn prove_from_nodes(
    store: &PgStore,
    index: u64,
    checkpoint: &Checkpoint,
) -> anyhow::Result<()> {
    let ranges = inclusion_ranges(index, checkpoint.size).context("index")?;
    let keys: Vec<_> = ranges.iter().flat_map(|r| range_keys(*r)).collect();
    let nodes = store.nodes(&keys).await?;
    let proof = ranges
        .iter()
        .map(|r| range_hash(*r, &|k| nodes.get(&k).copied()))
        .collect::<Option<Vec<Hash>>>()
        .context("missing node")?;
    let leaf = caracal_ledger::hash::leaf_hash(&index.to_be_bytes());
    verify_inclusion(index, checkpoint.size, &leaf, &proof, &checkpoint.root)?;
    Ok(())
}

/// Serves and verifies proofs for random leaves, against one-row lookups.
async fn prove_many(store: &PgStore, size: u64) -> anyhow::Result<()> {
    let keys = frontier_keys(size);
    let found = store.nodes(&keys).await?;
    let root: Hash = range_hash(
        LeafRange {
            start: 0,
            end: size,
        },
        &|k| found.get(&k).copied(),
    )
    .context("root")?;
    let log = KeyPair::generate("caracal.bench/log")?;
    let checkpoint = Checkpoint {
        origin: log.name().into(),
        size,
        root,
    };
    let note = checkpoint.sign(&log);

    let mut rng = rand::thread_rng();
    let samples = env_u64("BENCH_PROOF_SAMPLES", 10_000) as usize;
    let warmup = 200;
    // BENCH_PROOF_PATHS picks what is measured (default all three), e.g.
    // `tiles` alone right after evicting the tree's files from the OS cache.
    let paths: Vec<ProofPath> = std::env::var("BENCH_PROOF_PATHS")
        .unwrap_or_else(|_| "tiles,nodes,lookup".into())
        .split(',')
        .map(ProofPath::parse)
        .collect::<anyhow::Result<_>>()?;
    let mut times = vec![Vec::with_capacity(samples); paths.len()];
    // Each sample measures every path in turn, each for its own random leaf,
    // so none warms the pages another reads.
    for n in 0..samples + warmup {
        for (path, times) in paths.iter().zip(&mut times) {
            let index = rng.gen_range(0..size);
            let started = Instant::now();
            match path {
                // prove_index_at verifies the proof against the signed root before returning it.
                ProofPath::Tiles => {
                    let leaf = index.to_be_bytes().to_vec();
                    prove_index_at(store, index, leaf, checkpoint.clone(), note.clone()).await?;
                }
                ProofPath::Nodes => prove_from_nodes(store, index, &checkpoint).await?,
                ProofPath::Lookup => {
                    let _: Vec<u8> = sqlx::query_scalar(
                        "SELECT hash FROM ledger_nodes WHERE level = 0 AND idx = $1",
                    )
                    .bind(index as i64)
                    .fetch_one(store.pool())
                    .await?;
                }
            }
            // The first proofs warm the pool's connections and statement caches.
            if n >= warmup {
                times.push(started.elapsed());
            }
        }
    }
    let pct = |v: &[Duration], p: f64| v[((v.len() as f64 - 1.0) * p) as usize];
    println!("{samples} proofs after {warmup} unmeasured ones");
    for (path, times) in paths.iter().zip(&mut times) {
        times.sort();
        println!(
            "{:<38} p50 {:.3?}  p99 {:.3?}  p99.9 {:.3?}  max {:.3?}",
            path.label(),
            pct(times, 0.5),
            pct(times, 0.99),
            pct(times, 0.999),
            times[times.len() - 1]
        );
    }
    Ok(())
}
