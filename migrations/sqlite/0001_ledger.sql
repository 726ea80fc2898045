-- Caracal verifiable ledger, SQLite flavour (the embedded store of `caracal dev`).
-- Same tables and meaning as migrations/postgres/0002_ledger.sql; see docs/ledger.md.

CREATE TABLE ledger_log_keys (
    key_id   BLOB PRIMARY KEY CHECK (length(key_id) = 4),
    vkey     TEXT NOT NULL UNIQUE,
    added_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
);

CREATE TABLE ledger_submitters (
    key_id   BLOB PRIMARY KEY CHECK (length(key_id) = 4),
    vkey     TEXT NOT NULL UNIQUE,
    added_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
);

CREATE TABLE ledger_batches (
    root        BLOB PRIMARY KEY CHECK (length(root) = 32),
    key_id      BLOB NOT NULL CHECK (length(key_id) = 4),
    signature   BLOB NOT NULL,
    leaf_hashes BLOB NOT NULL CHECK (length(leaf_hashes) % 32 = 0),
    received_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
);

CREATE TABLE ledger_pending (
    arrival    INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id   BLOB NOT NULL UNIQUE,
    batch_root BLOB NOT NULL,
    batch_pos  INTEGER NOT NULL,
    leaf       BLOB NOT NULL,
    event_time INTEGER NOT NULL,
    agent      TEXT NOT NULL
);

CREATE TABLE ledger_entries (
    idx        INTEGER PRIMARY KEY CHECK (idx >= 0),
    event_id   BLOB NOT NULL UNIQUE,
    leaf       BLOB NOT NULL,
    batch_root BLOB NOT NULL,
    batch_pos  INTEGER NOT NULL,
    -- Microseconds since the Unix epoch, for range queries.
    event_time INTEGER NOT NULL,
    agent      TEXT NOT NULL
);
CREATE INDEX ledger_entries_time ON ledger_entries (event_time);
CREATE INDEX ledger_entries_agent_time ON ledger_entries (agent, event_time);

CREATE TABLE ledger_nodes (
    level INTEGER NOT NULL CHECK (level >= 0 AND level < 64),
    idx   INTEGER NOT NULL CHECK (idx >= 0),
    hash  BLOB NOT NULL CHECK (length(hash) = 32),
    PRIMARY KEY (level, idx)
) WITHOUT ROWID;

CREATE TABLE ledger_checkpoints (
    size       INTEGER PRIMARY KEY CHECK (size >= 0),
    root       BLOB NOT NULL CHECK (length(root) = 32),
    key_id     BLOB NOT NULL,
    note       TEXT NOT NULL,
    created_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
);

CREATE TRIGGER ledger_log_keys_append_only BEFORE UPDATE ON ledger_log_keys
BEGIN SELECT RAISE(ABORT, 'caracal ledger table ledger_log_keys is append-only'); END;
CREATE TRIGGER ledger_log_keys_no_delete BEFORE DELETE ON ledger_log_keys
BEGIN SELECT RAISE(ABORT, 'caracal ledger table ledger_log_keys is append-only'); END;
CREATE TRIGGER ledger_submitters_append_only BEFORE UPDATE ON ledger_submitters
BEGIN SELECT RAISE(ABORT, 'caracal ledger table ledger_submitters is append-only'); END;
CREATE TRIGGER ledger_submitters_no_delete BEFORE DELETE ON ledger_submitters
BEGIN SELECT RAISE(ABORT, 'caracal ledger table ledger_submitters is append-only'); END;
CREATE TRIGGER ledger_batches_append_only BEFORE UPDATE ON ledger_batches
BEGIN SELECT RAISE(ABORT, 'caracal ledger table ledger_batches is append-only'); END;
CREATE TRIGGER ledger_batches_no_delete BEFORE DELETE ON ledger_batches
BEGIN SELECT RAISE(ABORT, 'caracal ledger table ledger_batches is append-only'); END;
CREATE TRIGGER ledger_entries_append_only BEFORE UPDATE ON ledger_entries
BEGIN SELECT RAISE(ABORT, 'caracal ledger table ledger_entries is append-only'); END;
CREATE TRIGGER ledger_entries_no_delete BEFORE DELETE ON ledger_entries
BEGIN SELECT RAISE(ABORT, 'caracal ledger table ledger_entries is append-only'); END;
CREATE TRIGGER ledger_nodes_append_only BEFORE UPDATE ON ledger_nodes
BEGIN SELECT RAISE(ABORT, 'caracal ledger table ledger_nodes is append-only'); END;
CREATE TRIGGER ledger_nodes_no_delete BEFORE DELETE ON ledger_nodes
BEGIN SELECT RAISE(ABORT, 'caracal ledger table ledger_nodes is append-only'); END;
CREATE TRIGGER ledger_checkpoints_append_only BEFORE UPDATE ON ledger_checkpoints
BEGIN SELECT RAISE(ABORT, 'caracal ledger table ledger_checkpoints is append-only'); END;
CREATE TRIGGER ledger_checkpoints_no_delete BEFORE DELETE ON ledger_checkpoints
BEGIN SELECT RAISE(ABORT, 'caracal ledger table ledger_checkpoints is append-only'); END;
