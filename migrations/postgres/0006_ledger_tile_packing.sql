-- Caracal ledger: data tiles packed by the sequencer (docs/ledger.md section 7,
-- ledger/src/tile.rs).
--
-- packing 0: data is the tile's records as they are (every tile written
--            before this migration, and the backfill of 0003).
-- packing 1: data is an LZ4 block (the LZ4 block format, no frame) after a
--            4-byte little-endian length of the plain tile.
--
-- Postgres used to compress the plain tiles itself (lz4 in TOAST) and had to
-- decompress every one before sending it, so a full verification moved about
-- ten times the stored bytes through the server and the socket. Packed by the
-- sequencer, a tile travels as stored and the verifier unpacks it. Packed
-- tiles do not compress further: store them out of line without trying.
-- Tiles that are already stored keep their form.

ALTER TABLE ledger_tiles
    ADD COLUMN packing smallint NOT NULL DEFAULT 0 CHECK (packing IN (0, 1));
ALTER TABLE ledger_tiles ALTER COLUMN data SET STORAGE EXTERNAL;
