-- The SQLite store's tables and indexes; the algorithms run in Rust (sqlite.rs) inside one
-- BEGIN IMMEDIATE transaction. `{prefix}` is the checked table prefix. Run on every connect:
-- every statement is idempotent.
--
-- The tables end in a version: earlier versions kept `{prefix}state` and `{prefix}log`, keyed
-- by the quota's position in its rate. Their rows cannot say which policy they counted, so they
-- are not carried over; they are left for processes of that version still running, and never
-- read (see sql.rs, "Tables").

CREATE TABLE IF NOT EXISTS {prefix}state_v2 (
    -- The key's bytes: SQLite indexes keys of any length.
    key BLOB NOT NULL,
    -- The policy's identity (PolicyId: the algorithm and every parameter, signed): each limit
    -- on a key has its own row, so `5/m` and `10/h` never reset each other, and identical
    -- limits share one.
    policy INTEGER NOT NULL,
    -- Window or bucket start (fw, swc), newest entry (sw), last update (tb, lb).
    since_ms INTEGER NOT NULL,
    -- Count (fw), current bucket (swc), entry sequence (sw), scaled level (tb, lb).
    amount INTEGER NOT NULL,
    -- Previous bucket (swc).
    previous INTEGER NOT NULL DEFAULT 0,
    -- After this instant the row means the same as no row (Policy::expires_at).
    expires_at_ms INTEGER NOT NULL,
    PRIMARY KEY (key, policy)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS {prefix}state_v2_expires_at ON {prefix}state_v2 (expires_at_ms);

-- The sliding log: one row per admitted request, per policy.
CREATE TABLE IF NOT EXISTS {prefix}log_v2 (
    key BLOB NOT NULL,
    policy INTEGER NOT NULL,
    at_ms INTEGER NOT NULL,
    -- Keeps two requests of one millisecond apart, and their order.
    seq INTEGER NOT NULL,
    cost INTEGER NOT NULL,
    -- at_ms + window: when the request stops counting.
    expires_at_ms INTEGER NOT NULL,
    PRIMARY KEY (key, policy, at_ms, seq)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS {prefix}log_v2_expires_at ON {prefix}log_v2 (expires_at_ms);
