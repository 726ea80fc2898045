//! Verify records in Postgres (migration 0005): each entry row summarised by
//! a STORED generated column that Postgres recomputes from the row itself, so
//! the verifier can compare the rows with the data tiles it has checked
//! without Postgres reading and rebuilding every row's bytes.
//!
//! The records are only as good as the column's definition, so every read
//! also checks the catalog, in the same transaction and after the read (the
//! read's lock keeps the table's definition fixed until the transaction
//! ends): `ledger_entries` must be a plain table with no row security and no
//! inheritance children, and `verify_record` a stored generated `bytea`
//! column with exactly [`EXPRESSION`] as Postgres prints it with only
//! `pg_catalog` on the search path (so a function or operator from any other
//! schema would be printed schema-qualified, and not match).

use futures::TryStreamExt;
use sqlx::{PgPool, Row};

use super::spare::SpareBuffers;
use super::{RowCheckChunk, RowChecks, StoreError, to_i64};
use crate::tile::TILE_WIDTH;

/// The generation expression of `verify_record`, as `pg_get_expr` prints it.
pub(super) const EXPRESSION: &str = "((((int8send(idx) || uuid_send(event_id)) || batch_root) \
                                     || int4send(batch_pos)) || sha256(('\\x00'::bytea || leaf)))";

/// Verify records of the entries of tiles `[from, to)`.
pub(super) async fn read(
    pool: &PgPool,
    spare: &SpareBuffers,
    from: u64,
    to: u64,
) -> Result<RowChecks, StoreError> {
    // Bounds are integers we format ourselves, so the statement is safe.
    let sql = |columns: &str| {
        format!(
            "COPY (SELECT {columns} FROM ledger_entries
                   WHERE idx >= {from} AND idx < {to} ORDER BY idx) TO STDOUT (FORMAT binary)",
            from = to_i64(from * TILE_WIDTH),
            to = to_i64(to * TILE_WIDTH)
        )
    };
    // 92-byte records plus COPY framing per row.
    let capacity = usize::try_from((to - from) * TILE_WIDTH)
        .unwrap_or(0)
        .min(1 << 20)
        * 100;
    let mut tx = pool.begin().await?;
    // Rows are read in index order, which is the order they were written in.
    // A log appended to since its last ANALYZE has no statistics, and the
    // planner then picks a bitmap scan of the table and a sort (about twice
    // as slow here); steer it to the index, only-index once VACUUM has marked
    // the pages all-visible. Planner settings only: the rows read are the same.
    sqlx::raw_sql(
        "SET LOCAL enable_bitmapscan = off; SET LOCAL enable_seqscan = off; \
         SET LOCAL enable_sort = off",
    )
    .execute(&mut *tx)
    .await?;
    let copied = copy_all(&mut tx, &sql("verify_record"), spare.take(capacity)).await;
    let buf = match copied {
        Ok(buf) => buf,
        // A table without the column (its definition altered) is a finding,
        // not a failure to read: say so, and let the verifier read the rows.
        Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some("42703") => {
            return Ok(RowChecks::Unavailable(format!(
                "ledger_entries has no column verify_record ({e})"
            )));
        }
        Err(e) => return Err(e.into()),
    };
    // Each record names its row by its first 8 bytes; a NULL or cut one
    // cannot, so then (only then) the records are read again beside their
    // indexes, in the same snapshot.
    let (buf, rows) = match super::pgcopy::parse_row_checks(&buf)? {
        Some(rows) => (buf, rows),
        None => {
            spare.give(buf);
            let buf = copy_all(&mut tx, &sql("idx, verify_record"), spare.take(capacity)).await?;
            let rows = super::pgcopy::parse_indexed_row_checks(&buf)?;
            (buf, rows)
        }
    };
    let table: i64 = sqlx::query_scalar("SELECT 'ledger_entries'::regclass::oid::int8")
        .fetch_one(&mut *tx)
        .await?;
    sqlx::query("SET LOCAL search_path = pg_catalog")
        .execute(&mut *tx)
        .await?;
    let row = sqlx::query(
        "SELECT c.relkind::text AS kind, c.relrowsecurity AS row_security,
                EXISTS (SELECT 1 FROM pg_inherits i WHERE i.inhparent = c.oid) AS has_children,
                a.attgenerated::text AS generated, format_type(a.atttypid, a.atttypmod) AS type,
                pg_get_expr(d.adbin, d.adrelid) AS expression
         FROM pg_class c
         LEFT JOIN pg_attribute a
                ON a.attrelid = c.oid AND a.attname = 'verify_record' AND NOT a.attisdropped
         LEFT JOIN pg_attrdef d ON d.adrelid = c.oid AND d.adnum = a.attnum
         WHERE c.oid = $1::oid",
    )
    .bind(table)
    .fetch_one(&mut *tx)
    .await?;
    tx.commit().await?;
    let found = Definition {
        kind: row.try_get("kind")?,
        row_security: row.try_get("row_security")?,
        has_children: row.try_get("has_children")?,
        generated: row.try_get("generated")?,
        column_type: row.try_get("type")?,
        expression: row.try_get("expression")?,
    };
    if let Some(why) = found.why_untrusted() {
        return Ok(RowChecks::Unavailable(why));
    }
    Ok(RowChecks::Records(RowCheckChunk { buf, rows }))
}

/// Runs a `COPY ... TO STDOUT` and collects its bytes into `buf`.
async fn copy_all(
    tx: &mut sqlx::Transaction<'_, sqlx::Postgres>,
    sql: &str,
    mut buf: Vec<u8>,
) -> Result<Vec<u8>, sqlx::Error> {
    let mut stream = tx.copy_out_raw(sql).await?;
    while let Some(chunk) = stream.try_next().await? {
        buf.extend_from_slice(&chunk);
    }
    Ok(buf)
}

/// What the catalog says about `ledger_entries` and its `verify_record`.
struct Definition {
    kind: String,
    row_security: bool,
    has_children: bool,
    generated: Option<String>,
    column_type: Option<String>,
    expression: Option<String>,
}

impl Definition {
    /// Why the records cannot be trusted to be derived from the rows, if so.
    fn why_untrusted(&self) -> Option<String> {
        if self.kind != "r" {
            return Some(format!(
                "ledger_entries is not a plain table (relkind {:?})",
                self.kind
            ));
        }
        if self.row_security {
            return Some("ledger_entries has row level security enabled".into());
        }
        if self.has_children {
            return Some("ledger_entries has inheritance children or partitions".into());
        }
        if self.generated.as_deref() != Some("s") || self.column_type.as_deref() != Some("bytea") {
            return Some(
                "ledger_entries.verify_record is no longer a stored generated bytea column".into(),
            );
        }
        match self.expression.as_deref() {
            Some(EXPRESSION) => None,
            other => Some(format!(
                "ledger_entries.verify_record is generated by {other:?}, not by {EXPRESSION:?}"
            )),
        }
    }
}
