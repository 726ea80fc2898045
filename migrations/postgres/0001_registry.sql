-- The registry: the Agent, Policy and Delegation objects as the operator last
-- reconciled them. Ledger events refer to agents by namespace/name, and these
-- rows record which spec (by uid and generation) was in force.
--
-- Money is stored as BIGINT micro-dollars (1 USD = 1,000,000); never floats.

CREATE TABLE agents (
    namespace       TEXT        NOT NULL,
    name            TEXT        NOT NULL,
    uid             UUID        NOT NULL,
    generation      BIGINT      NOT NULL CHECK (generation >= 0),
    owner           TEXT        NOT NULL CHECK (owner <> ''),
    suspended       BOOLEAN     NOT NULL DEFAULT FALSE,
    spec            JSONB       NOT NULL,
    created_at      TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at      TIMESTAMPTZ NOT NULL DEFAULT now(),
    deleted_at      TIMESTAMPTZ,
    PRIMARY KEY (namespace, name)
);

CREATE TABLE policies (
    namespace        TEXT        NOT NULL,
    name             TEXT        NOT NULL,
    uid              UUID        NOT NULL,
    generation       BIGINT      NOT NULL CHECK (generation >= 0),
    limit_micros     BIGINT      CHECK (limit_micros IS NULL OR limit_micros > 0),
    max_request_micros BIGINT    CHECK (max_request_micros IS NULL OR max_request_micros > 0),
    enforcement      TEXT        NOT NULL CHECK (enforcement IN ('Enforce', 'DryRun')),
    spec             JSONB       NOT NULL,
    created_at       TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at       TIMESTAMPTZ NOT NULL DEFAULT now(),
    deleted_at       TIMESTAMPTZ,
    PRIMARY KEY (namespace, name)
);

CREATE TABLE delegations (
    namespace       TEXT        NOT NULL,
    name            TEXT        NOT NULL,
    uid             UUID        NOT NULL,
    generation      BIGINT      NOT NULL CHECK (generation >= 0),
    parent_name     TEXT        NOT NULL,
    child_name      TEXT        NOT NULL,
    limit_micros    BIGINT      NOT NULL CHECK (limit_micros > 0),
    expires_at      TIMESTAMPTZ,
    max_depth       INTEGER     NOT NULL DEFAULT 0 CHECK (max_depth BETWEEN 0 AND 8),
    spec            JSONB       NOT NULL,
    created_at      TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at      TIMESTAMPTZ NOT NULL DEFAULT now(),
    deleted_at      TIMESTAMPTZ,
    PRIMARY KEY (namespace, name),
    CHECK (parent_name <> child_name)
);

CREATE INDEX delegations_by_child ON delegations (namespace, child_name) WHERE deleted_at IS NULL;
CREATE INDEX delegations_by_parent ON delegations (namespace, parent_name) WHERE deleted_at IS NULL;
