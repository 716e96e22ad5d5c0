-- The SQLite store's tables and indexes; the algorithms run in Rust (sqlite.rs) inside one
-- BEGIN IMMEDIATE transaction. `{prefix}` is the checked table prefix. Run on every connect:
-- every statement is idempotent.
--
-- The tables end in a version: earlier versions kept `{prefix}state` and `{prefix}log`, keyed
-- by the quota's position in its rate. Their rows cannot say which policy they counted, so they
-- are not carried over; they are left for processes of that version still running, and never
-- read (see sql.rs, "Tables").
--
-- The sliding log lives in `{prefix}log_v3`, whose entries carry running totals, instead of
-- `{prefix}log_v2`, which every check read whole: sliding-log counts start afresh once, at the
-- upgrade. `log_v2` is no longer created; that of a database in use is left to the previous
-- version's processes (each version counting its sliding logs on its own) and its expired
-- entries are still cleaned. The sliding log keeps no row in `state_v2` any more (the previous
-- version kept its newest entry and an entry sequence there, which the log now gives itself),
-- so the previous version's writes to that row change nothing this one counts.

CREATE TABLE IF NOT EXISTS {prefix}state_v2 (
    -- The key's bytes: SQLite indexes keys of any length.
    key BLOB NOT NULL,
    -- The policy's identity (PolicyId: the algorithm and every parameter, signed): each limit
    -- on a key has its own row, so `5/m` and `10/h` never reset each other, and identical
    -- limits share one.
    policy INTEGER NOT NULL,
    -- Window or bucket start (fw, swc), last update (tb, lb). (The previous version's sliding
    -- log kept its newest entry here, and its entry sequence in `amount`; this one keeps none.)
    since_ms INTEGER NOT NULL,
    -- Count (fw), current bucket (swc), scaled level (tb, lb).
    amount INTEGER NOT NULL,
    -- Previous bucket (swc).
    previous INTEGER NOT NULL DEFAULT 0,
    -- After this instant the row means the same as no row (Policy::expires_at).
    expires_at_ms INTEGER NOT NULL,
    PRIMARY KEY (key, policy)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS {prefix}state_v2_expires_at ON {prefix}state_v2 (expires_at_ms);

-- The sliding log: one row per admitted request, per policy, in (at_ms, seq) order. Each row
-- carries the running total of the costs through it, so a check reads a few index entries
-- however long the log is (see sqlite/sliding_log.rs).
CREATE TABLE IF NOT EXISTS {prefix}log_v3 (
    key BLOB NOT NULL,
    policy INTEGER NOT NULL,
    at_ms INTEGER NOT NULL,
    -- Keeps two requests of one millisecond apart, and their order: one more than the last
    -- entry of the same millisecond (1 for the first).
    seq INTEGER NOT NULL,
    cost INTEGER NOT NULL,
    -- The running total of the costs through this entry. Only differences between the totals
    -- of one key and policy mean anything: they start from 0 when the log is empty, and are
    -- rebased when the next one would not fit 64 bits.
    through INTEGER NOT NULL,
    -- at_ms + window: when the request stops counting.
    expires_at_ms INTEGER NOT NULL,
    PRIMARY KEY (key, policy, at_ms, seq)
) WITHOUT ROWID;
-- The retry search: the first entry whose running total reaches a value, in one probe.
CREATE INDEX IF NOT EXISTS {prefix}log_v3_through ON {prefix}log_v3 (key, policy, through);
CREATE INDEX IF NOT EXISTS {prefix}log_v3_expires_at ON {prefix}log_v3 (expires_at_ms);
