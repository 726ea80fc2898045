//! Shared fixtures: a fresh Postgres database per test (dropped afterwards,
//! even when the test panics), a fresh SQLite file, keys and events.

use caracal_ledger::batch::{Batch, BatchSigner};
use caracal_ledger::event::MeteringEvent;
use caracal_ledger::keys::KeyPair;
use caracal_ledger::store::{Ledger, LedgerStore};
use sqlx::Connection;

pub const ORIGIN: &str = "caracal.test/ledger";
pub const GATEWAY: &str = "gw-node-1";

/// The server the tests create their databases on.
pub fn admin_url() -> String {
    std::env::var("CARACAL_TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

/// A database that exists for one test.
pub struct TestDb {
    pub name: String,
    pub url: String,
}

impl TestDb {
    pub async fn new() -> Self {
        let name = format!("caracal_test_{}", uuid::Uuid::now_v7().simple());
        let admin = admin_url();
        let mut conn = sqlx::PgConnection::connect(&admin)
            .await
            .expect("postgres reachable");
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&mut conn)
            .await
            .unwrap();
        conn.close().await.ok();
        let base = admin
            .rsplit_once('/')
            .map(|(b, _)| b.to_string())
            .unwrap_or(admin.clone());
        let url = format!("{base}/{name}");
        Self { name, url }
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let name = self.name.clone();
        // Drop runs inside the test's runtime; clean up on a thread of our own.
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async {
                if let Ok(mut conn) = sqlx::PgConnection::connect(&admin_url()).await {
                    let sql = format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)");
                    sqlx::query(sqlx::AssertSqlSafe(sql))
                        .execute(&mut conn)
                        .await
                        .ok();
                }
            });
        })
        .join()
        .ok();
    }
}

/// A SQLite file that exists for one test.
pub struct TestFile {
    pub path: std::path::PathBuf,
}

impl TestFile {
    pub fn new() -> Self {
        let path = std::env::temp_dir().join(format!(
            "caracal-ledger-{}.db",
            uuid::Uuid::now_v7().simple()
        ));
        Self { path }
    }

    pub fn url(&self) -> String {
        format!("sqlite:{}", self.path.display())
    }
}

impl Drop for TestFile {
    fn drop(&mut self) {
        for suffix in ["", "-wal", "-shm"] {
            let mut p = self.path.clone().into_os_string();
            p.push(suffix);
            std::fs::remove_file(p).ok();
        }
    }
}

pub fn log_key() -> KeyPair {
    KeyPair::generate(ORIGIN).unwrap()
}

pub fn gateway() -> BatchSigner {
    BatchSigner::new(KeyPair::generate(GATEWAY).unwrap())
}

pub fn events(range: std::ops::Range<u64>) -> Vec<MeteringEvent> {
    range.map(MeteringEvent::example).collect()
}

pub fn batch(gw: &BatchSigner, range: std::ops::Range<u64>) -> Batch {
    gw.sign_events(&events(range)).unwrap()
}

/// A log of `batches` batches of `per_batch` events, sequenced one checkpoint per batch.
pub async fn filled(
    ledger: &Ledger,
    key: &KeyPair,
    gw: &BatchSigner,
    batches: u64,
    per_batch: u64,
) {
    ledger.register_submitter(gw.public()).await.unwrap();
    for b in 0..batches {
        let range = b * per_batch..(b + 1) * per_batch;
        let out = ledger.submit(batch(gw, range)).await.unwrap();
        assert_eq!(out.accepted as u64, per_batch);
        let seq = ledger.sequence_pending(key).await.unwrap();
        assert_eq!(seq.size, (b + 1) * per_batch);
    }
}
