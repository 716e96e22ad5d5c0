-- The SQLite store's tables and indexes; the algorithms run in Rust (sqlite.rs) inside one
-- BEGIN IMMEDIATE transaction. `{prefix}` is the checked table prefix. Run on every connect:
-- every statement is idempotent.

CREATE TABLE IF NOT EXISTS {prefix}state (
    -- The key's bytes: SQLite indexes keys of any length.
    key BLOB NOT NULL,
    -- fw, sw, swc, tb or lb: each algorithm has its own rows.
    algorithm TEXT NOT NULL,
    -- The quota's position in a compound rate.
    quota INTEGER NOT NULL,
    -- Window or bucket start (fw, swc), newest entry (sw), last update (tb, lb).
    since_ms INTEGER NOT NULL,
    -- Count (fw), current bucket (swc), entry sequence (sw), scaled level (tb, lb).
    amount INTEGER NOT NULL,
    -- Previous bucket (swc).
    previous INTEGER NOT NULL DEFAULT 0,
    -- After this instant the row means the same as no row (Policy::expires_at).
    expires_at_ms INTEGER NOT NULL,
    PRIMARY KEY (key, algorithm, quota)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS {prefix}state_expires_at ON {prefix}state (expires_at_ms);

-- The sliding log: one row per admitted request.
CREATE TABLE IF NOT EXISTS {prefix}log (
    key BLOB NOT NULL,
    quota INTEGER NOT NULL,
    at_ms INTEGER NOT NULL,
    -- Keeps two requests of one millisecond apart, and their order.
    seq INTEGER NOT NULL,
    cost INTEGER NOT NULL,
    -- at_ms + window: when the request stops counting.
    expires_at_ms INTEGER NOT NULL,
    PRIMARY KEY (key, quota, at_ms, seq)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS {prefix}log_expires_at ON {prefix}log (expires_at_ms);
