-- Caracal ledger data tiles (docs/ledger.md section 7, ledger/src/tile.rs).
--
-- Tile t holds entries [256·t, 256·t + 256) as one value: per entry
-- uuid_send(event_id) || batch_root || int4send(batch_pos) ||
-- int4send(length(leaf)) || leaf, in index order. The sequencer writes a tile
-- in the transaction that completes it; a tile is never partial and never
-- changes. A full verification reads tiles instead of one row per entry, and
-- compares each tile with its entry rows inside the database.

CREATE TABLE ledger_tiles (
    tile bigint PRIMARY KEY CHECK (tile >= 0),
    data bytea NOT NULL
);
-- Compressed with lz4 where the server has it: a tile of event JSON shrinks
-- several times, and Postgres hands out lz4 tiles about twice as fast as
-- uncompressed ones (docs/benchmarks.md). Without lz4 the default applies.
DO $$
BEGIN
    ALTER TABLE ledger_tiles ALTER COLUMN data SET COMPRESSION lz4;
EXCEPTION WHEN feature_not_supported THEN
    RAISE NOTICE 'this Postgres has no lz4: ledger_tiles uses its default compression';
END;
$$;

CREATE TRIGGER ledger_tiles_append_only BEFORE UPDATE OR DELETE ON ledger_tiles
    FOR EACH ROW EXECUTE FUNCTION ledger_refuse_change();
CREATE TRIGGER ledger_tiles_no_truncate BEFORE TRUNCATE ON ledger_tiles
    FOR EACH STATEMENT EXECUTE FUNCTION ledger_refuse_change();

-- Tiles for the complete tiles of a log that existed before this migration.
INSERT INTO ledger_tiles (tile, data)
SELECT e.idx >> 8,
       string_agg(uuid_send(e.event_id) || e.batch_root || int4send(e.batch_pos)
                  || int4send(length(e.leaf)) || e.leaf, ''::bytea ORDER BY e.idx)
FROM ledger_entries e
GROUP BY e.idx >> 8
HAVING count(*) = 256;
