//! Read methods whose SQL and row handling are the same on Postgres and
//! SQLite, written once and expanded inside each store's `LedgerStore` impl
//! (the two stores' pools have different types, and sqlx's generic executor
//! bounds would cost more lines than they save). Each store must have a
//! `pool` field and an `entry_bound` method.

macro_rules! shared_reads {
    () => {
        async fn status(&self) -> Result<$crate::store::Status, $crate::store::StoreError> {
            use sqlx::Row;
            let entries = self.entry_bound().await?;
            let pending: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM ledger_pending")
                .fetch_one(&self.pool)
                .await?;
            let latest =
                sqlx::query("SELECT size, note FROM ledger_checkpoints ORDER BY size DESC LIMIT 1")
                    .fetch_optional(&self.pool)
                    .await?
                    .map(|r| -> Result<_, sqlx::Error> {
                        Ok($crate::store::CheckpointRecord {
                            size: r.try_get::<i64, _>("size")? as u64,
                            note: r.try_get("note")?,
                        })
                    })
                    .transpose()?;
            Ok($crate::store::Status {
                entries,
                pending: pending as u64,
                latest_checkpoint: latest,
                log_keys: self.log_keys().await?,
                submitters: self.submitter_keys().await?,
            })
        }

        async fn submitter_keys(&self) -> Result<Vec<String>, $crate::store::StoreError> {
            Ok(
                sqlx::query_scalar("SELECT vkey FROM ledger_submitters ORDER BY added_at, key_id")
                    .fetch_all(&self.pool)
                    .await?,
            )
        }

        async fn log_keys(&self) -> Result<Vec<String>, $crate::store::StoreError> {
            Ok(
                sqlx::query_scalar("SELECT vkey FROM ledger_log_keys ORDER BY added_at, key_id")
                    .fetch_all(&self.pool)
                    .await?,
            )
        }

        async fn checkpoints(
            &self,
        ) -> Result<Vec<$crate::store::CheckpointRecord>, $crate::store::StoreError> {
            use sqlx::Row;
            let rows = sqlx::query("SELECT size, note FROM ledger_checkpoints ORDER BY size")
                .fetch_all(&self.pool)
                .await?;
            rows.iter()
                .map(|r| {
                    Ok($crate::store::CheckpointRecord {
                        size: r.try_get::<i64, _>("size")? as u64,
                        note: r.try_get("note")?,
                    })
                })
                .collect()
        }

        async fn batches(
            &self,
        ) -> Result<Vec<$crate::store::BatchRecord>, $crate::store::StoreError> {
            use sqlx::Row;
            let rows =
                sqlx::query("SELECT root, key_id, signature, leaf_hashes FROM ledger_batches")
                    .fetch_all(&self.pool)
                    .await?;
            rows.iter()
                .map(|r| {
                    Ok($crate::store::BatchRecord {
                        root: r.try_get("root")?,
                        key_id: r.try_get("key_id")?,
                        signature: r.try_get("signature")?,
                        leaf_hashes: r.try_get("leaf_hashes")?,
                    })
                })
                .collect()
        }
    };
}

pub(super) use shared_reads;
