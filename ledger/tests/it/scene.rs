//! A real Postgres log and an attacker with table access who disables the
//! append-only triggers (`session_replication_role = replica`), shared by
//! the tamper and data-tile tests.

use std::ops::Range;

use caracal_ledger::batch::BatchSigner;
use caracal_ledger::keys::KeyPair;
use caracal_ledger::store::{Ledger, LedgerStore};
use caracal_ledger::verify::{Report, Scope, Trust, verify_store};
use sqlx::{Connection, Executor, PgConnection};

use crate::common::*;

pub struct Scene {
    db: TestDb,
    pub ledger: Ledger,
    pub key: KeyPair,
    pub gw: BatchSigner,
    pub attacker: PgConnection,
}

impl Scene {
    /// A log built by submitting and sequencing each range of example
    /// events in turn (one signed checkpoint per range).
    pub async fn with_steps(steps: &[Range<u64>]) -> Self {
        let db = TestDb::new().await;
        let ledger = Ledger::open(&db.url).await.unwrap();
        let key = log_key();
        let gw = gateway();
        ledger.register_submitter(gw.public()).await.unwrap();
        for range in steps {
            let (len, end) = (range.end - range.start, range.end);
            let out = ledger.submit(batch(&gw, range.clone())).await.unwrap();
            assert_eq!(out.accepted as u64, len);
            assert_eq!(ledger.sequence_pending(&key).await.unwrap().size, end);
        }
        let mut attacker = PgConnection::connect(&db.url).await.unwrap();
        attacker
            .execute("SET session_replication_role = replica")
            .await
            .unwrap();
        Self {
            db,
            ledger,
            key,
            gw,
            attacker,
        }
    }

    pub fn url(&self) -> &str {
        &self.db.url
    }

    pub fn trust(&self) -> Trust {
        Trust {
            log_keys: vec![self.key.public().clone()],
            submitters: vec![self.gw.public().clone()],
            origin: Some(ORIGIN.into()),
            known_checkpoints: vec![],
        }
    }

    pub async fn attack(&mut self, sql: &str) {
        sqlx::raw_sql(sqlx::AssertSqlSafe(sql.to_string()))
            .execute(&mut self.attacker)
            .await
            .expect(sql);
    }

    pub async fn verify(&self) -> Report {
        verify_store(&self.ledger, &self.trust(), Scope::Full)
            .await
            .unwrap()
    }
}

/// The verifier reported tampering, and `index` is the first bad index.
pub fn assert_caught(report: &Report, index: u64) {
    assert!(!report.is_intact(), "tampering went unnoticed");
    assert_eq!(
        report.first_bad_index(),
        Some(index),
        "{:#?}",
        report.problems
    );
}

/// Caught at `index`, by a problem at that index that says `says`.
pub fn assert_caught_saying(report: &Report, index: u64, says: &str) {
    assert_caught(report, index);
    assert!(
        report
            .problems
            .iter()
            .any(|p| p.index == Some(index) && p.what.contains(says)),
        "no problem at {index} saying {says:?}: {:#?}",
        report.problems
    );
}
