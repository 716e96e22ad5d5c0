-- The PostgreSQL store: tables, indexes and the PL/pgSQL port of the Redis Lua scripts
-- (backend/redis/*.lua), with the same integer maths. `{prefix}` is the checked table prefix.
-- Run on every connect, under an advisory lock: every statement is idempotent.
--
-- One function per algorithm, `<prefix><tag>_check_v2`, does a whole check: lock, read, decide,
-- write. Each is written out in full rather than split into helpers, because every PL/pgSQL call
-- and every composite value passed costs more than the arithmetic (a check of the fixed window
-- ran in about half the server time once inlined). The IMMUTABLE SQL helpers below are inlined
-- by the planner where they are used, so they cost nothing.
--
-- Every routine and table ends in a version (the batch function of postgres_batch.sql is
-- `_v4`): a change to one gets a new name, so processes of two versions sharing a database each
-- keep calling the routines, and using the tables, they were written for.
--
-- Upgrading from the tables `<prefix>state` and `<prefix>log` (rows keyed by algorithm and the
-- quota's position in its rate, so two limits on one key shared a row): their rows cannot be
-- moved over, since a position does not say which policy it counted, so the `_v2` tables start
-- empty beside them (every count starts afresh once). The old tables and the `_v1` check
-- functions are left as they are, so processes of the previous version still running keep
-- working (each version counting on its own) until they are replaced; nothing of this version
-- reads them, and `SqlBackend::drop_tables` drops them with the rest.
--
-- Upgrading from the sliding log `<prefix>log_v2` (which every check read whole): the sliding
-- log now lives in `<prefix>log_v3`, whose entries carry running totals, so sliding-log counts
-- start afresh once, at the upgrade; every other state stays in `<prefix>state_v2`, shared by
-- both versions. `sw_check_v2`, `check_batch_v3`, `reset_v2` and `log_v2` are no longer
-- created; those of a database in use are left to the previous version's processes (each
-- version counting its sliding logs on its own, and a reset by either leaving the other's log)
-- and dropped by `SqlBackend::drop_tables`. The sliding log keeps no row in `state_v2` any more
-- (its newest entry and entry sequence, which the log now gives itself), so the previous
-- version's writes to that row change nothing this one counts.
--
-- Arithmetic on request values is done in NUMERIC (exact, unbounded), so a huge cost or period
-- cannot overflow; stored values are BIGINT. floor(a / b) is div(a, b) and ceil(a / b) is
-- div(a + b - 1, b), for a >= 0 and b > 0.

CREATE TABLE IF NOT EXISTS {prefix}state_v2 (
    -- SHA-256 of the key: keys of any length and any bytes fit one index entry.
    key_hash bytea NOT NULL,
    -- The policy's identity (PolicyId: the algorithm and every parameter, signed): each limit
    -- on a key has its own row, so `5/m` and `10/h` never reset each other, and identical
    -- limits share one. The algorithm is part of the identity, so it needs no column.
    policy bigint NOT NULL,
    -- Window or bucket start (fw, swc), last update (tb, lb). (The previous version's sliding
    -- log kept its newest entry here, and its entry sequence in `amount`; this one keeps none.)
    since_ms bigint NOT NULL,
    -- Count (fw), current bucket (swc), scaled level (tb, lb).
    amount bigint NOT NULL,
    -- Previous bucket (swc).
    previous bigint NOT NULL DEFAULT 0,
    -- After this instant the row means the same as no row (Policy::expires_at).
    expires_at_ms bigint NOT NULL,
    -- expires_at_ms rounded up to the next 10 s, indexed for cleanup instead of expires_at_ms:
    -- a bucket's expiry moves on every check, and an update that changes an indexed column
    -- cannot be a HOT update (it writes new index entries and leaves more to vacuum). Cleanup
    -- reads `cleanup_at_ms <= now + 10 s AND expires_at_ms <= now`: exactly the expired rows.
    cleanup_at_ms bigint GENERATED ALWAYS AS (
        CASE WHEN expires_at_ms > 9223372036854765807 THEN 9223372036854775807
             ELSE (expires_at_ms / 10000 + 1) * 10000 END) STORED,
    PRIMARY KEY (key_hash, policy)
) WITH (fillfactor = 90);
CREATE INDEX IF NOT EXISTS {prefix}state_v2_cleanup_at ON {prefix}state_v2 (cleanup_at_ms);

-- The sliding log: one row per admitted request, per policy, in (at_ms, seq) order. Each row
-- carries the running total of the costs through it, so a check reads a few index entries
-- however long the log is (see sw_check_v3).
CREATE TABLE IF NOT EXISTS {prefix}log_v3 (
    key_hash bytea NOT NULL,
    policy bigint NOT NULL,
    at_ms bigint NOT NULL,
    -- Keeps two requests of one millisecond apart, and their order: one more than the last
    -- entry of the same millisecond (1 for the first).
    seq bigint NOT NULL,
    cost bigint NOT NULL,
    -- The running total of the costs through this entry. Only differences between the totals
    -- of one key and policy mean anything: they start from 0 when the log is empty, and are
    -- rebased when the next one would not fit a bigint.
    through bigint NOT NULL,
    -- at_ms + window: when the request stops counting.
    expires_at_ms bigint NOT NULL,
    PRIMARY KEY (key_hash, policy, at_ms, seq)
);
-- The retry search: the first entry whose running total reaches a value, in one probe.
CREATE INDEX IF NOT EXISTS {prefix}log_v3_through ON {prefix}log_v3 (key_hash, policy, through);
CREATE INDEX IF NOT EXISTS {prefix}log_v3_expires_at ON {prefix}log_v3 (expires_at_ms);

-- Milliseconds until `units` scaled units have flowed at `amount` per ms; NULL when nothing flows.
-- PL/pgSQL, not SQL: the fast paths pass it whole expressions over the stored row, and the
-- planner does not inline a SQL function whose parameters are used twice with costly arguments;
-- it would then plan the SQL function again on every check.
CREATE OR REPLACE FUNCTION {prefix}millis_for_v1(p_units numeric, p_amount numeric)
RETURNS numeric LANGUAGE plpgsql IMMUTABLE AS $$
BEGIN
    RETURN CASE
        WHEN p_units = 0 THEN 0
        WHEN p_amount = 0 THEN NULL
        ELSE div(p_units + p_amount - 1, p_amount)
    END;
END $$;

-- The smallest elapsed time in a bucket at which previous * (window - e) <= room * window.
CREATE OR REPLACE FUNCTION {prefix}first_fitting_elapsed_v1(
    p_window numeric, p_previous numeric, p_room numeric)
RETURNS numeric LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE WHEN p_previous = 0 THEN 0
                ELSE greatest(p_window - div(p_room * p_window, p_previous), 0) END
$$;

-- The key's lock: checks (and resets) of one key run one after the other, whether or not its
-- rows exist yet, so a key seen for the first time is never inserted twice. The table prefix is
-- mixed in so two stores in one database do not wait on each other. Released at commit.
CREATE OR REPLACE FUNCTION {prefix}lock_id_v1(p_hash bytea)
RETURNS bigint LANGUAGE sql IMMUTABLE AS $$
    SELECT hashtextextended('{prefix}', 0)
        # ('x' || encode(substr(p_hash, 1, 8), 'hex'))::bit(64)::bigint
$$;

-- Every check function takes the key, the injected time (NULL: the database's clock), the
-- cost, whether to record (false: a peek, which writes nothing and only waits for a check in
-- progress), each quota's policy id (its rows' key; distinct, in id order, see sql.rs) and each
-- quota's parameters one after the other (as the Lua `params`), in the same order. It evaluates
-- every quota, then records in all of them only if all allow (a rejected request is never
-- counted), and returns 4 integers per quota as the Lua scripts do: allowed (1/0), remaining,
-- reset_after_ms, retry_after_ms (-1: never). The time is read after the lock: a check that
-- waited decides on the time it runs. An expired row means the same as no row.
--
-- Fast path: a check of a single quota whose cost a new key would admit first tries to decide
-- inside one `INSERT .. ON CONFLICT DO UPDATE .. WHERE <fits> RETURNING`: a new key is inserted
-- admitted, an existing row is updated only if the request fits, and the returned row gives the
-- verdict. That skips the separate read of the general path (about a third of the server time).
-- When nothing is returned the request did not fit; the general path then reads the state
-- (still under the lock, nothing was written) and reports the rejection. The buckets split it
-- into `UPDATE .. WHERE <fits> RETURNING`, then `INSERT .. ON CONFLICT DO NOTHING RETURNING`
-- when no row was updated: the same decisions, and an admitted check of a known key (the usual
-- case) no longer evaluates the new row's values (9% less server time per token-bucket check in
-- a batch; the fixed window gained nothing measurable, so it keeps the one statement), for one
-- more index probe per rejection.

-- Fixed window. params: limit, window; row: since_ms = window start, amount = count.
CREATE OR REPLACE FUNCTION {prefix}fw_check_v2(
    p_key bytea, p_now bigint, p_cost bigint, p_record boolean, p_policies bigint[],
    p bigint[])
RETURNS bigint[] LANGUAGE plpgsql AS $$
DECLARE
    v_hash bytea := sha256(p_key);
    v_quotas int := coalesce(cardinality(p), 0) / 2;
    v_policy bigint;
    v_now bigint;
    v_reply bigint[] := '{}';
    v_all_allowed boolean := true;
    v_used numeric[] := '{}';
    v_limit numeric;
    v_window numeric;
    v_start numeric;
    v_count numeric;
    v_reset numeric;
    v_allowed boolean;
BEGIN
    IF p_record THEN
        PERFORM pg_advisory_xact_lock({prefix}lock_id_v1(v_hash));
    ELSE
        PERFORM pg_advisory_xact_lock_shared({prefix}lock_id_v1(v_hash));
    END IF;
    v_now := coalesce(p_now, floor(extract(epoch FROM clock_timestamp()) * 1000)::bigint);
    IF p_record AND v_quotas = 1 AND p_cost <= p[1] THEN
        v_policy := p_policies[1];
        v_limit := p[1];
        v_window := p[2];
        v_start := v_now - v_now % v_window;
        INSERT INTO {prefix}state_v2 AS s
            (key_hash, policy, since_ms, amount, previous, expires_at_ms)
        VALUES (v_hash, v_policy, v_start, p_cost, 0,
                least(greatest(v_start + v_window, v_now::numeric + 1), 9223372036854775807))
        ON CONFLICT (key_hash, policy) DO UPDATE
        SET amount = CASE WHEN s.expires_at_ms > v_now AND s.since_ms = v_start
                          THEN s.amount ELSE 0 END + p_cost,
            since_ms = excluded.since_ms, previous = 0, expires_at_ms = excluded.expires_at_ms
        WHERE CASE WHEN s.expires_at_ms > v_now AND s.since_ms = v_start
                   THEN s.amount ELSE 0 END + p_cost <= v_limit
        RETURNING amount INTO v_count;
        IF FOUND THEN
            RETURN ARRAY[1, v_limit - v_count, v_start + v_window - v_now, -1]::bigint[];
        END IF;
    END IF;
    FOR i IN 1..v_quotas LOOP
        v_policy := p_policies[i];
        v_limit := p[2 * i - 1];
        v_window := p[2 * i];
        v_start := v_now - v_now % v_window;
        -- A count of an older window is gone.
        SELECT amount INTO v_count FROM {prefix}state_v2
        WHERE key_hash = v_hash AND policy = v_policy
          AND expires_at_ms > v_now AND since_ms = v_start;
        v_count := coalesce(v_count, 0);
        v_used := v_used || v_count;
        v_reset := v_start + v_window - v_now;
        v_allowed := v_count + p_cost <= v_limit;
        v_all_allowed := v_all_allowed AND v_allowed;
        v_reply := v_reply || ARRAY[
            v_allowed::int,
            greatest(v_limit - v_count - CASE WHEN v_allowed THEN p_cost ELSE 0 END, 0),
            v_reset,
            -- The next window starts empty, so a cost within the limit fits there.
            CASE WHEN NOT v_allowed AND p_cost <= v_limit THEN v_reset ELSE -1 END
        ]::bigint[];
    END LOOP;
    IF p_record AND v_all_allowed THEN
        FOR i IN 1..v_quotas LOOP
            v_policy := p_policies[i];
            v_window := p[2 * i];
            v_start := v_now - v_now % v_window;
            INSERT INTO {prefix}state_v2 AS s
                (key_hash, policy, since_ms, amount, previous, expires_at_ms)
            VALUES (v_hash, v_policy, v_start, v_used[i] + p_cost, 0,
                    least(greatest(v_start + v_window, v_now::numeric + 1), 9223372036854775807))
            ON CONFLICT (key_hash, policy) DO UPDATE
            SET since_ms = excluded.since_ms, amount = excluded.amount,
                previous = excluded.previous, expires_at_ms = excluded.expires_at_ms;
        END LOOP;
    END IF;
    RETURN v_reply;
END $$;

-- Sliding log. params: limit, window; entries in {prefix}log_v3, counted while
-- at_ms + window > now. The counted entries are the newest ones (the log is in time order), so
-- their cost is the running total through the newest entry minus the total just before the
-- oldest counted one (its total minus its cost): two index probes, whatever the log's length.
-- A rejection that can wait finds the first entry whose total reaches the excess: one more.
-- Nothing reads an entry that is no longer counted, so the cleanup may delete them any time.
--
-- Every statement reads the log through an index, and sequential scans are off: a session keeps
-- the plans it made, and one made while the table was nearly empty (where a sequential scan is
-- cheapest) would otherwise read the whole table on every check until the next ANALYZE.
CREATE OR REPLACE FUNCTION {prefix}sw_check_v3(
    p_key bytea, p_now bigint, p_cost bigint, p_record boolean, p_policies bigint[],
    p bigint[])
RETURNS bigint[] LANGUAGE plpgsql SET enable_seqscan = off AS $$
DECLARE
    v_hash bytea := sha256(p_key);
    v_quotas int := coalesce(cardinality(p), 0) / 2;
    v_policy bigint;
    v_now bigint;
    v_reply bigint[] := '{}';
    v_all_allowed boolean := true;
    v_limit numeric;
    v_window numeric;
    v_counted_after bigint;
    -- The oldest counted entry's time, and the running total just before it.
    v_oldest bigint;
    v_before bigint;
    -- The running total through the newest entry.
    v_total bigint;
    v_used numeric;
    v_allowed boolean;
    v_freed bigint;
    v_freed_at bigint;
    v_retry numeric;
    -- The last entry at or before now, after which an admitted request goes.
    v_last_at bigint;
    v_last_seq bigint;
    v_last_through bigint;
    v_base bigint;
BEGIN
    IF p_record THEN
        PERFORM pg_advisory_xact_lock({prefix}lock_id_v1(v_hash));
    ELSE
        PERFORM pg_advisory_xact_lock_shared({prefix}lock_id_v1(v_hash));
    END IF;
    v_now := coalesce(p_now, floor(extract(epoch FROM clock_timestamp()) * 1000)::bigint);
    FOR i IN 1..v_quotas LOOP
        v_policy := p_policies[i];
        v_limit := p[2 * i - 1];
        v_window := p[2 * i];
        v_counted_after := v_now - p[2 * i];
        v_used := 0;
        SELECT at_ms, through - cost INTO v_oldest, v_before
        FROM {prefix}log_v3
        WHERE key_hash = v_hash AND policy = v_policy AND at_ms > v_counted_after
        ORDER BY at_ms, seq
        LIMIT 1;
        IF FOUND THEN
            SELECT through INTO v_total
            FROM {prefix}log_v3
            WHERE key_hash = v_hash AND policy = v_policy
            ORDER BY through DESC
            LIMIT 1;
            v_used := v_total - v_before;
        END IF;
        v_allowed := v_used + p_cost <= v_limit;
        v_all_allowed := v_all_allowed AND v_allowed;
        v_retry := -1;
        IF v_allowed THEN
            v_oldest := least(coalesce(v_oldest, v_now), v_now);
        ELSIF p_cost <= v_limit THEN
            -- The oldest counted requests whose costs add up to the excess must slide out; the
            -- total they reach lies within the log's totals (the excess is at most what is
            -- counted), so it is a bigint, and the index is searched with one.
            v_freed := v_before + (v_used + p_cost - v_limit);
            SELECT at_ms INTO v_freed_at
            FROM {prefix}log_v3
            WHERE key_hash = v_hash AND policy = v_policy AND through >= v_freed
            ORDER BY through
            LIMIT 1;
            v_retry := CASE WHEN v_freed_at IS NULL THEN 1
                            ELSE greatest(v_freed_at + v_window - v_now, 1) END;
        END IF;
        v_reply := v_reply || ARRAY[
            v_allowed::int,
            greatest(v_limit - v_used - CASE WHEN v_allowed THEN p_cost ELSE 0 END, 0),
            CASE WHEN v_oldest IS NULL THEN 0 ELSE v_oldest + v_window - v_now END,
            v_retry
        ]::bigint[];
    END LOOP;
    IF p_record AND v_all_allowed THEN
        FOR i IN 1..v_quotas LOOP
            v_policy := p_policies[i];
            v_window := p[2 * i];
            v_counted_after := v_now - p[2 * i];
            -- The entries no longer counted go by range, each once: searched in time order,
            -- which only the primary key serves without a sort (two indexes lead with the key,
            -- and with statistics that say a key has one row, the planner could scan the other
            -- one whole on every admission), then deleted by row address.
            DELETE FROM {prefix}log_v3
            WHERE ctid = ANY (ARRAY(
                SELECT ctid FROM {prefix}log_v3
                WHERE key_hash = v_hash AND policy = v_policy AND at_ms <= v_counted_after
                ORDER BY at_ms, seq));
            -- The request goes after the last entry at or before now: at the end, unless a
            -- clock that stepped back left later ones.
            SELECT at_ms, seq, through INTO v_last_at, v_last_seq, v_last_through
            FROM {prefix}log_v3
            WHERE key_hash = v_hash AND policy = v_policy AND at_ms <= v_now
            ORDER BY at_ms DESC, seq DESC
            LIMIT 1;
            IF NOT FOUND THEN
                -- First in the log: after the total before the first entry (0 when empty).
                SELECT through - cost INTO v_last_through
                FROM {prefix}log_v3
                WHERE key_hash = v_hash AND policy = v_policy
                ORDER BY at_ms, seq
                LIMIT 1;
                v_last_through := coalesce(v_last_through, 0);
            END IF;
            SELECT through INTO v_total
            FROM {prefix}log_v3
            WHERE key_hash = v_hash AND policy = v_policy
            ORDER BY through DESC
            LIMIT 1;
            v_total := coalesce(v_total, 0);
            -- Totals only grow while the log never empties. Before one would leave the bigint
            -- range they are rebased on the total before the first entry; every entry left is
            -- counted, so they are then at most the limit.
            IF v_total::numeric + p_cost > 9223372036854775807 THEN
                SELECT through - cost INTO v_base
                FROM {prefix}log_v3
                WHERE key_hash = v_hash AND policy = v_policy
                ORDER BY at_ms, seq
                LIMIT 1;
                UPDATE {prefix}log_v3 SET through = through - v_base
                WHERE key_hash = v_hash AND policy = v_policy;
                v_total := v_total - v_base;
                v_last_through := v_last_through - v_base;
            END IF;
            IF v_total > v_last_through THEN
                -- A clock that stepped back: the later entries' totals now include this
                -- request (O(later entries), only on such clocks).
                UPDATE {prefix}log_v3 SET through = through + p_cost
                WHERE key_hash = v_hash AND policy = v_policy AND at_ms > v_now;
            END IF;
            INSERT INTO {prefix}log_v3
                (key_hash, policy, at_ms, seq, cost, through, expires_at_ms)
            VALUES (v_hash, v_policy, v_now,
                    CASE WHEN v_last_at = v_now THEN v_last_seq + 1 ELSE 1 END,
                    p_cost, v_last_through + p_cost,
                    least(v_now + v_window, 9223372036854775807));
        END LOOP;
    END IF;
    RETURN v_reply;
END $$;

-- Sliding window counter. params: limit, window; row: since_ms = current bucket start,
-- amount = current, previous. Compared exactly, scaled by the window.
CREATE OR REPLACE FUNCTION {prefix}swc_check_v2(
    p_key bytea, p_now bigint, p_cost bigint, p_record boolean, p_policies bigint[],
    p bigint[])
RETURNS bigint[] LANGUAGE plpgsql AS $$
DECLARE
    v_hash bytea := sha256(p_key);
    v_quotas int := coalesce(cardinality(p), 0) / 2;
    v_policy bigint;
    v_now bigint;
    v_reply bigint[] := '{}';
    v_all_allowed boolean := true;
    v_previous_of numeric[] := '{}';
    v_current_of numeric[] := '{}';
    v_limit numeric;
    v_window numeric;
    v_start numeric;
    v_elapsed numeric;
    v_since numeric;
    v_amount numeric;
    v_stored_previous numeric;
    v_previous numeric;
    v_current numeric;
    v_before numeric;
    v_allowed boolean;
    v_reset numeric;
    v_room numeric;
    v_retry numeric;
BEGIN
    IF p_record THEN
        PERFORM pg_advisory_xact_lock({prefix}lock_id_v1(v_hash));
    ELSE
        PERFORM pg_advisory_xact_lock_shared({prefix}lock_id_v1(v_hash));
    END IF;
    v_now := coalesce(p_now, floor(extract(epoch FROM clock_timestamp()) * 1000)::bigint);
    IF p_record AND v_quotas = 1 AND p_cost <= p[1] THEN
        v_policy := p_policies[1];
        v_limit := p[1];
        v_window := p[2];
        v_start := v_now - v_now % v_window;
        v_elapsed := v_now - v_start;
        -- previous and current as seen from the bucket holding now (every SET expression
        -- reads the row as it was).
        INSERT INTO {prefix}state_v2 AS s
            (key_hash, policy, since_ms, amount, previous, expires_at_ms)
        VALUES (v_hash, v_policy, v_start, p_cost, 0,
                least(greatest(v_start + 2 * v_window, v_now::numeric + 1), 9223372036854775807))
        ON CONFLICT (key_hash, policy) DO UPDATE
        SET previous = CASE WHEN s.expires_at_ms <= v_now THEN 0
                            WHEN s.since_ms = v_start THEN s.previous
                            WHEN s.since_ms + v_window = v_start THEN s.amount
                            ELSE 0 END,
            amount = CASE WHEN s.expires_at_ms > v_now AND s.since_ms = v_start
                          THEN s.amount ELSE 0 END + p_cost,
            since_ms = excluded.since_ms, expires_at_ms = excluded.expires_at_ms
        WHERE CASE WHEN s.expires_at_ms <= v_now THEN 0
                   WHEN s.since_ms = v_start THEN s.previous
                   WHEN s.since_ms + v_window = v_start THEN s.amount
                   ELSE 0 END * (v_window - v_elapsed)
              + (CASE WHEN s.expires_at_ms > v_now AND s.since_ms = v_start
                      THEN s.amount ELSE 0 END + p_cost) * v_window
              <= v_limit * v_window
        RETURNING previous, amount INTO v_previous, v_current;
        IF FOUND THEN
            RETURN ARRAY[
                1,
                div(greatest(v_limit * v_window - v_previous * (v_window - v_elapsed)
                             - v_current * v_window, 0), v_window),
                v_start + v_window - v_now,
                -1
            ]::bigint[];
        END IF;
    END IF;
    FOR i IN 1..v_quotas LOOP
        v_policy := p_policies[i];
        v_limit := p[2 * i - 1];
        v_window := p[2 * i];
        v_start := v_now - v_now % v_window;
        v_elapsed := v_now - v_start;
        v_since := NULL;
        SELECT since_ms, amount, previous INTO v_since, v_amount, v_stored_previous
        FROM {prefix}state_v2
        WHERE key_hash = v_hash AND policy = v_policy
          AND expires_at_ms > v_now;
        -- previous, current as seen from the bucket holding now.
        v_previous := CASE WHEN v_since = v_start THEN v_stored_previous
                           WHEN v_since + v_window = v_start THEN v_amount
                           ELSE 0 END;
        v_current := CASE WHEN v_since = v_start THEN v_amount ELSE 0 END;
        v_previous_of := v_previous_of || v_previous;
        v_current_of := v_current_of || v_current;
        v_before := v_previous * (v_window - v_elapsed) + v_current * v_window;
        v_allowed := v_before + p_cost * v_window <= v_limit * v_window;
        v_all_allowed := v_all_allowed AND v_allowed;
        v_reset := v_start + v_window - v_now;
        v_retry := -1;
        IF NOT v_allowed AND p_cost <= v_limit THEN
            v_room := v_limit - v_current - p_cost;
            IF v_room >= 0 THEN
                -- Fits later in this bucket, once enough of the previous one has slid out.
                v_retry := {prefix}first_fitting_elapsed_v1(v_window, v_previous, v_room)
                    - v_elapsed;
            ELSE
                -- Only fits in the next bucket, where this bucket's count becomes the weighted one.
                v_retry := v_reset
                    + {prefix}first_fitting_elapsed_v1(v_window, v_current, v_limit - p_cost);
            END IF;
        END IF;
        v_reply := v_reply || ARRAY[
            v_allowed::int,
            div(greatest(v_limit * v_window - v_before
                         - CASE WHEN v_allowed THEN p_cost * v_window ELSE 0 END, 0), v_window),
            v_reset,
            v_retry
        ]::bigint[];
    END LOOP;
    IF p_record AND v_all_allowed THEN
        FOR i IN 1..v_quotas LOOP
            v_policy := p_policies[i];
            v_window := p[2 * i];
            v_start := v_now - v_now % v_window;
            INSERT INTO {prefix}state_v2 AS s
                (key_hash, policy, since_ms, amount, previous, expires_at_ms)
            VALUES (v_hash, v_policy, v_start, v_current_of[i] + p_cost, v_previous_of[i],
                    least(greatest(v_start + 2 * v_window, v_now::numeric + 1),
                          9223372036854775807))
            ON CONFLICT (key_hash, policy) DO UPDATE
            SET since_ms = excluded.since_ms, amount = excluded.amount,
                previous = excluded.previous, expires_at_ms = excluded.expires_at_ms;
        END LOOP;
    END IF;
    RETURN v_reply;
END $$;

-- Token bucket. params: bucket_size, refill amount, refill per_ms, initial_tokens, window;
-- row: since_ms = last update, amount = tokens in scaled units (one token = per_ms units).
CREATE OR REPLACE FUNCTION {prefix}tb_check_v2(
    p_key bytea, p_now bigint, p_cost bigint, p_record boolean, p_policies bigint[],
    p bigint[])
RETURNS bigint[] LANGUAGE plpgsql AS $$
DECLARE
    v_hash bytea := sha256(p_key);
    v_quotas int := coalesce(cardinality(p), 0) / 5;
    v_policy bigint;
    v_now bigint;
    v_reply bigint[] := '{}';
    v_all_allowed boolean := true;
    v_found_of boolean[] := '{}';
    v_tokens_of numeric[] := '{}';
    v_last_of numeric[] := '{}';
    v_found boolean;
    v_size numeric;
    v_amount numeric;
    v_unit numeric;
    v_capacity numeric;
    v_level numeric;
    v_last numeric;
    v_tokens numeric;
    v_needed numeric;
    v_after numeric;
    v_allowed boolean;
    v_retry numeric;
    v_initial numeric;
    v_grace numeric;
BEGIN
    IF p_record THEN
        PERFORM pg_advisory_xact_lock({prefix}lock_id_v1(v_hash));
    ELSE
        PERFORM pg_advisory_xact_lock_shared({prefix}lock_id_v1(v_hash));
    END IF;
    v_now := coalesce(p_now, floor(extract(epoch FROM clock_timestamp()) * 1000)::bigint);
    IF p_record AND v_quotas = 1 AND p_cost <= least(p[4], p[1]) THEN
        v_policy := p_policies[1];
        -- Scalars only in the statement: an array parameter is copied for every reference.
        v_size := p[1];
        v_amount := p[2];
        v_unit := p[3];
        v_capacity := v_size * v_unit;
        v_needed := p_cost * v_unit;
        v_initial := least(p[4], p[1])::numeric * v_unit;
        v_grace := CASE WHEN p[4] < p[1] THEN p[5] ELSE 0 END;
        -- Tokens now: refilled since the last update (a clock that steps back refills
        -- nothing), or the initial tokens of a new bucket.
        UPDATE {prefix}state_v2 AS s
        SET amount = CASE WHEN s.expires_at_ms > v_now
                          THEN least(least(s.amount, v_capacity)
                                     + least(greatest(v_now - s.since_ms, 0) * v_amount,
                                             v_capacity), v_capacity)
                          ELSE v_initial END - v_needed,
            since_ms = CASE WHEN s.expires_at_ms > v_now THEN greatest(s.since_ms, v_now)
                            ELSE v_now END,
            previous = 0,
            expires_at_ms = least(greatest(
                v_now + coalesce({prefix}millis_for_v1(v_capacity - (
                    CASE WHEN s.expires_at_ms > v_now
                         THEN least(least(s.amount, v_capacity)
                                    + least(greatest(v_now - s.since_ms, 0) * v_amount,
                                            v_capacity), v_capacity)
                         ELSE v_initial END - v_needed), v_amount),
                    0) + v_grace,
                v_now::numeric + 1), 9223372036854775807)
        WHERE s.key_hash = v_hash AND s.policy = v_policy
          AND CASE WHEN s.expires_at_ms > v_now
                       THEN least(least(s.amount, v_capacity)
                                  + least(greatest(v_now - s.since_ms, 0) * v_amount, v_capacity),
                                  v_capacity)
                       ELSE v_initial END >= v_needed
        RETURNING amount INTO v_after;
        IF NOT FOUND THEN
            INSERT INTO {prefix}state_v2 AS s
                (key_hash, policy, since_ms, amount, previous, expires_at_ms)
            VALUES (v_hash, v_policy, v_now, v_initial - v_needed, 0,
                    least(greatest(
                        v_now + coalesce({prefix}millis_for_v1(
                            v_capacity - (v_initial - v_needed), v_amount), 0) + v_grace,
                        v_now::numeric + 1), 9223372036854775807))
            ON CONFLICT (key_hash, policy) DO NOTHING
            RETURNING amount INTO v_after;
        END IF;
        IF FOUND THEN
            RETURN ARRAY[
                1,
                div(v_after, v_unit),
                coalesce({prefix}millis_for_v1(v_capacity - v_after, v_amount), 0),
                -1
            ]::bigint[];
        END IF;
    END IF;
    FOR i IN 1..v_quotas LOOP
        v_policy := p_policies[i];
        v_size := p[5 * i - 4];
        v_amount := p[5 * i - 3];
        v_unit := p[5 * i - 2];
        v_capacity := v_size * v_unit;
        SELECT amount, since_ms INTO v_level, v_last FROM {prefix}state_v2
        WHERE key_hash = v_hash AND policy = v_policy
          AND expires_at_ms > v_now;
        v_found := FOUND;
        IF v_found THEN
            -- Refilled since the last update; a clock that steps back refills nothing.
            v_tokens := least(
                least(v_level, v_capacity)
                    + least(greatest(v_now - v_last, 0) * v_amount, v_capacity),
                v_capacity);
        ELSE
            -- A new bucket holds the initial tokens.
            v_tokens := least(p[5 * i - 1], p[5 * i - 4])::numeric * v_unit;
            v_last := NULL;
        END IF;
        v_found_of := v_found_of || v_found;
        v_tokens_of := v_tokens_of || v_tokens;
        v_last_of := v_last_of || v_last;
        v_needed := p_cost * v_unit;
        v_allowed := v_tokens >= v_needed;
        v_all_allowed := v_all_allowed AND v_allowed;
        v_after := CASE WHEN v_allowed THEN v_tokens - v_needed ELSE v_tokens END;
        v_retry := -1;
        IF NOT v_allowed AND p_cost <= v_size THEN
            v_retry := coalesce({prefix}millis_for_v1(v_needed - v_tokens, v_amount), -1);
        END IF;
        v_reply := v_reply || ARRAY[
            v_allowed::int,
            div(v_after, v_unit),
            coalesce({prefix}millis_for_v1(v_capacity - v_after, v_amount), 0),
            v_retry
        ]::bigint[];
    END LOOP;
    IF NOT p_record THEN
        RETURN v_reply;
    END IF;
    FOR i IN 1..v_quotas LOOP
        v_policy := p_policies[i];
        v_unit := p[5 * i - 2];
        IF v_all_allowed THEN
            v_level := v_tokens_of[i] - p_cost * v_unit;
            v_last := greatest(coalesce(v_last_of[i], v_now), v_now);
        ELSIF NOT v_found_of[i] AND p[5 * i - 1] < p[5 * i - 4] THEN
            -- The refill clock starts at the first request even when it does not fit.
            v_level := p[5 * i - 1]::numeric * v_unit;
            v_last := v_now;
        ELSE
            CONTINUE;
        END IF;
        -- A bucket full again means the same as a new one only when new buckets start full;
        -- one that starts lower is kept a window longer.
        v_grace := CASE WHEN p[5 * i - 1] < p[5 * i - 4] THEN p[5 * i] ELSE 0 END;
        v_capacity := p[5 * i - 4]::numeric * v_unit;
        v_amount := p[5 * i - 3];
        INSERT INTO {prefix}state_v2 AS s
            (key_hash, policy, since_ms, amount, previous, expires_at_ms)
        VALUES (v_hash, v_policy, v_last, v_level, 0,
                least(greatest(
                    v_now + coalesce({prefix}millis_for_v1(v_capacity - v_level, v_amount), 0)
                        + v_grace,
                    v_now::numeric + 1), 9223372036854775807))
        ON CONFLICT (key_hash, policy) DO UPDATE
        SET since_ms = excluded.since_ms, amount = excluded.amount,
            previous = excluded.previous, expires_at_ms = excluded.expires_at_ms;
    END LOOP;
    RETURN v_reply;
END $$;

-- Leaky bucket (meter). params: capacity, leak amount, leak per_ms, window;
-- row: since_ms = last update, amount = level in scaled units.
CREATE OR REPLACE FUNCTION {prefix}lb_check_v2(
    p_key bytea, p_now bigint, p_cost bigint, p_record boolean, p_policies bigint[],
    p bigint[])
RETURNS bigint[] LANGUAGE plpgsql AS $$
DECLARE
    v_hash bytea := sha256(p_key);
    v_quotas int := coalesce(cardinality(p), 0) / 4;
    v_policy bigint;
    v_now bigint;
    v_reply bigint[] := '{}';
    v_all_allowed boolean := true;
    v_level_of numeric[] := '{}';
    v_last_of numeric[] := '{}';
    v_capacity numeric;
    v_amount numeric;
    v_unit numeric;
    v_scaled_capacity numeric;
    v_stored numeric;
    v_last numeric;
    v_level numeric;
    v_added numeric;
    v_after numeric;
    v_allowed boolean;
    v_retry numeric;
BEGIN
    IF p_record THEN
        PERFORM pg_advisory_xact_lock({prefix}lock_id_v1(v_hash));
    ELSE
        PERFORM pg_advisory_xact_lock_shared({prefix}lock_id_v1(v_hash));
    END IF;
    v_now := coalesce(p_now, floor(extract(epoch FROM clock_timestamp()) * 1000)::bigint);
    IF p_record AND v_quotas = 1 AND p_cost <= p[1] THEN
        v_policy := p_policies[1];
        v_capacity := p[1];
        v_amount := p[2];
        v_unit := p[3];
        v_scaled_capacity := v_capacity * v_unit;
        v_added := p_cost * v_unit;
        -- The level now: drained since the last update (a clock that steps back drains
        -- nothing), or 0 for a new key.
        UPDATE {prefix}state_v2 AS s
        SET amount = CASE WHEN s.expires_at_ms > v_now
                          THEN s.amount - least(greatest(v_now - s.since_ms, 0) * v_amount,
                                                s.amount)
                          ELSE 0 END + v_added,
            since_ms = CASE WHEN s.expires_at_ms > v_now THEN greatest(s.since_ms, v_now)
                            ELSE v_now END,
            previous = 0,
            expires_at_ms = least(greatest(
                v_now + coalesce({prefix}millis_for_v1(
                    CASE WHEN s.expires_at_ms > v_now
                         THEN s.amount - least(greatest(v_now - s.since_ms, 0) * v_amount,
                                               s.amount)
                         ELSE 0 END + v_added, v_amount), 0),
                v_now::numeric + 1), 9223372036854775807)
        WHERE s.key_hash = v_hash AND s.policy = v_policy
          AND CASE WHEN s.expires_at_ms > v_now
                       THEN s.amount - least(greatest(v_now - s.since_ms, 0) * v_amount, s.amount)
                       ELSE 0 END + v_added <= v_scaled_capacity
        RETURNING amount INTO v_after;
        IF NOT FOUND THEN
            INSERT INTO {prefix}state_v2 AS s
                (key_hash, policy, since_ms, amount, previous, expires_at_ms)
            VALUES (v_hash, v_policy, v_now, v_added, 0,
                    least(greatest(v_now + coalesce({prefix}millis_for_v1(v_added, v_amount), 0),
                                   v_now::numeric + 1), 9223372036854775807))
            ON CONFLICT (key_hash, policy) DO NOTHING
            RETURNING amount INTO v_after;
        END IF;
        IF FOUND THEN
            RETURN ARRAY[
                1,
                div(greatest(v_scaled_capacity - v_after, 0), v_unit),
                coalesce({prefix}millis_for_v1(v_after, v_amount), 0),
                -1
            ]::bigint[];
        END IF;
    END IF;
    FOR i IN 1..v_quotas LOOP
        v_policy := p_policies[i];
        v_capacity := p[4 * i - 3];
        v_amount := p[4 * i - 2];
        v_unit := p[4 * i - 1];
        v_scaled_capacity := v_capacity * v_unit;
        v_last := NULL;
        SELECT amount, since_ms INTO v_stored, v_last FROM {prefix}state_v2
        WHERE key_hash = v_hash AND policy = v_policy
          AND expires_at_ms > v_now;
        -- Drained since the last update; a clock that steps back drains nothing.
        v_level := CASE WHEN v_last IS NULL THEN 0
                        ELSE v_stored - least(greatest(v_now - v_last, 0) * v_amount, v_stored)
                   END;
        v_level_of := v_level_of || v_level;
        v_last_of := v_last_of || v_last;
        v_added := p_cost * v_unit;
        v_allowed := v_level + v_added <= v_scaled_capacity;
        v_all_allowed := v_all_allowed AND v_allowed;
        v_after := CASE WHEN v_allowed THEN v_level + v_added ELSE v_level END;
        v_retry := -1;
        IF NOT v_allowed AND p_cost <= v_capacity THEN
            v_retry := coalesce(
                {prefix}millis_for_v1(v_level + v_added - v_scaled_capacity, v_amount), -1);
        END IF;
        v_reply := v_reply || ARRAY[
            v_allowed::int,
            div(greatest(v_scaled_capacity - v_after, 0), v_unit),
            coalesce({prefix}millis_for_v1(v_after, v_amount), 0),
            v_retry
        ]::bigint[];
    END LOOP;
    IF p_record AND v_all_allowed THEN
        FOR i IN 1..v_quotas LOOP
            v_policy := p_policies[i];
            v_level := v_level_of[i] + p_cost * p[4 * i - 1];
            v_amount := p[4 * i - 2];
            v_last := greatest(coalesce(v_last_of[i], v_now), v_now);
            INSERT INTO {prefix}state_v2 AS s
                (key_hash, policy, since_ms, amount, previous, expires_at_ms)
            VALUES (v_hash, v_policy, v_last, v_level, 0,
                    least(greatest(v_now + coalesce({prefix}millis_for_v1(v_level, v_amount), 0),
                                   v_now::numeric + 1), 9223372036854775807))
            ON CONFLICT (key_hash, policy) DO UPDATE
            SET since_ms = excluded.since_ms, amount = excluded.amount,
                previous = excluded.previous, expires_at_ms = excluded.expires_at_ms;
        END LOOP;
    END IF;
    RETURN v_reply;
END $$;

-- Forgets every state and log entry of a key, of every policy.
CREATE OR REPLACE FUNCTION {prefix}reset_v3(p_key bytea)
RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    v_hash bytea := sha256(p_key);
BEGIN
    PERFORM pg_advisory_xact_lock({prefix}lock_id_v1(v_hash));
    DELETE FROM {prefix}state_v2 WHERE key_hash = v_hash;
    DELETE FROM {prefix}log_v3 WHERE key_hash = v_hash;
END $$;
