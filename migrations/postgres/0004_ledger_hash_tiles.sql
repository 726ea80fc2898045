-- Caracal ledger hash tiles (docs/ledger.md section 7, ledger/src/hashtile.rs).
--
-- Hash tile (tile_level L, tile_index t) holds the tree nodes of level 8·L
-- with indexes [256·t, 256·t + 256), each hash 32 bytes, concatenated in
-- index order: exactly 8,192 bytes. The sequencer writes a tile in the
-- transaction that stores its last node; a tile is never partial and never
-- changes. Proofs read a few tiles and recompute the seven levels inside
-- each by hashing, instead of probing the node table once per node.

CREATE TABLE ledger_hash_tiles (
    tile_level smallint NOT NULL CHECK (tile_level >= 0 AND tile_level < 8),
    tile_index bigint NOT NULL CHECK (tile_index >= 0),
    hashes     bytea NOT NULL CHECK (length(hashes) = 8192),
    PRIMARY KEY (tile_level, tile_index)
);
-- Hashes do not compress: store them out of line without trying.
ALTER TABLE ledger_hash_tiles ALTER COLUMN hashes SET STORAGE EXTERNAL;

CREATE TRIGGER ledger_hash_tiles_append_only BEFORE UPDATE OR DELETE ON ledger_hash_tiles
    FOR EACH ROW EXECUTE FUNCTION ledger_refuse_change();
CREATE TRIGGER ledger_hash_tiles_no_truncate BEFORE TRUNCATE ON ledger_hash_tiles
    FOR EACH STATEMENT EXECUTE FUNCTION ledger_refuse_change();

-- Tiles for the full tiles of a log that existed before this migration.
INSERT INTO ledger_hash_tiles (tile_level, tile_index, hashes)
SELECT level / 8, idx >> 8, string_agg(hash, ''::bytea ORDER BY idx)
FROM ledger_nodes
WHERE level % 8 = 0
GROUP BY level, idx >> 8
HAVING count(*) = 256;
