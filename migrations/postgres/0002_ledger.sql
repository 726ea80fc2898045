-- Caracal verifiable ledger (docs/ledger.md).
--
-- The log itself (entries, tree nodes, checkpoints, batches, keys) is
-- append-only: triggers refuse UPDATE, DELETE and TRUNCATE, so changing it
-- takes someone who can disable triggers, and the verifier catches that.
-- ledger_pending is a work queue, not part of the log, and may be deleted from.

CREATE TABLE ledger_log_keys (
    key_id   bytea PRIMARY KEY CHECK (length(key_id) = 4),
    vkey     text NOT NULL UNIQUE,
    added_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE ledger_submitters (
    key_id   bytea PRIMARY KEY CHECK (length(key_id) = 4),
    vkey     text NOT NULL UNIQUE,
    added_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE ledger_batches (
    root        bytea PRIMARY KEY CHECK (length(root) = 32),
    key_id      bytea NOT NULL CHECK (length(key_id) = 4),
    signature   bytea NOT NULL,
    leaf_hashes bytea NOT NULL CHECK (length(leaf_hashes) % 32 = 0),
    received_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE ledger_pending (
    arrival     bigserial PRIMARY KEY,
    event_id    uuid NOT NULL UNIQUE,
    batch_root  bytea NOT NULL,
    batch_pos   integer NOT NULL,
    leaf        bytea NOT NULL,
    event_time  timestamptz NOT NULL,
    agent       text NOT NULL,
    received_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE ledger_entries (
    idx          bigint PRIMARY KEY CHECK (idx >= 0),
    event_id     uuid NOT NULL UNIQUE,
    leaf         bytea NOT NULL,
    batch_root   bytea NOT NULL,
    batch_pos    integer NOT NULL,
    event_time   timestamptz NOT NULL,
    agent        text NOT NULL,
    sequenced_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX ledger_entries_time ON ledger_entries (event_time);
CREATE INDEX ledger_entries_agent_time ON ledger_entries (agent, event_time);

CREATE TABLE ledger_nodes (
    level smallint NOT NULL CHECK (level >= 0 AND level < 64),
    idx   bigint NOT NULL CHECK (idx >= 0),
    hash  bytea NOT NULL CHECK (length(hash) = 32),
    PRIMARY KEY (level, idx)
);

CREATE TABLE ledger_checkpoints (
    size       bigint PRIMARY KEY CHECK (size >= 0),
    root       bytea NOT NULL CHECK (length(root) = 32),
    key_id     bytea NOT NULL,
    note       text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);

CREATE FUNCTION ledger_refuse_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'caracal ledger table % is append-only: % refused', TG_TABLE_NAME, TG_OP
        USING ERRCODE = 'insufficient_privilege';
END;
$$;

DO $$
DECLARE t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['ledger_log_keys', 'ledger_submitters', 'ledger_batches',
                             'ledger_entries', 'ledger_nodes', 'ledger_checkpoints']
    LOOP
        EXECUTE format('CREATE TRIGGER %I BEFORE UPDATE OR DELETE ON %I
                        FOR EACH ROW EXECUTE FUNCTION ledger_refuse_change()', t || '_append_only', t);
        EXECUTE format('CREATE TRIGGER %I BEFORE TRUNCATE ON %I
                        FOR EACH STATEMENT EXECUTE FUNCTION ledger_refuse_change()', t || '_no_truncate', t);
    END LOOP;
END;
$$;
