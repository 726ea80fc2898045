-- Caracal ledger: each entry row summarised for the verifier (docs/ledger.md
-- section 7, ledger/src/store/pgrowchecks.rs).
--
-- verify_record is a STORED generated column, so Postgres itself recomputes it
-- from the row on every INSERT and UPDATE, and nobody can write it directly:
--
--   int8send(idx) || uuid_send(event_id) || batch_root || int4send(batch_pos)
--   || sha256(0x00 || leaf)
--
-- The last 32 bytes are the RFC 6962 leaf hash of the row's bytes. A full
-- verification compares these records with the data tiles it has verified
-- (it computes every leaf hash anyway), instead of having Postgres rebuild
-- and compare every row's full record. Reading them is an index-only scan of
-- ledger_entries_verify where the visibility map allows it. Before using
-- them, the verifier checks in the catalog that the column is still this
-- generated expression.
--
-- Adding the column rewrites the table and fills it in for a log that existed
-- before this migration.

ALTER TABLE ledger_entries ADD COLUMN verify_record bytea
    GENERATED ALWAYS AS (int8send(idx) || uuid_send(event_id) || batch_root
                         || int4send(batch_pos) || sha256('\x00'::bytea || leaf)) STORED;

CREATE INDEX ledger_entries_verify ON ledger_entries (idx) INCLUDE (verify_record);

-- The table only grows, so pages fill once and can be marked all-visible by
-- the first vacuum after that. Insert-driven autovacuum by default waits for
-- 20 % growth; at 2 % the unmarked tail that an index-only scan still has to
-- read from the heap stays small. (Only speed depends on this.)
ALTER TABLE ledger_entries SET (autovacuum_vacuum_insert_scale_factor = 0.02);
