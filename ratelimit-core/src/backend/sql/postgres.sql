-- The PostgreSQL store: tables, indexes and the PL/pgSQL port of the Redis Lua scripts
-- (backend/redis/*.lua), with the same integer maths. `{prefix}` is the checked table prefix.
-- Run on every connect, under an advisory lock: every statement is idempotent.
--
-- Every routine ends in `_v1`: a change to one gets a new name, so processes of two versions
-- sharing a database each keep calling the routines they were written for.
--
-- Arithmetic on request values is done in NUMERIC (exact, unbounded), so a huge cost or period
-- cannot overflow; stored values are BIGINT. floor(a / b) is div(a, b) and ceil(a / b) is
-- div(a + b - 1, b), for a >= 0 and b > 0.

CREATE TABLE IF NOT EXISTS {prefix}state (
    -- SHA-256 of the key: keys of any length and any bytes fit one index entry.
    key_hash bytea NOT NULL,
    -- fw, sw, swc, tb or lb: each algorithm has its own rows.
    algorithm text NOT NULL,
    -- The quota's position in a compound rate.
    quota smallint NOT NULL,
    -- Window or bucket start (fw, swc), newest entry (sw), last update (tb, lb).
    since_ms bigint NOT NULL,
    -- Count (fw), current bucket (swc), entry sequence (sw), scaled level (tb, lb).
    amount bigint NOT NULL,
    -- Previous bucket (swc).
    previous bigint NOT NULL DEFAULT 0,
    -- After this instant the row means the same as no row (Policy::expires_at).
    expires_at_ms bigint NOT NULL,
    PRIMARY KEY (key_hash, algorithm, quota)
);
CREATE INDEX IF NOT EXISTS {prefix}state_expires_at ON {prefix}state (expires_at_ms);

-- The sliding log: one row per admitted request.
CREATE TABLE IF NOT EXISTS {prefix}log (
    key_hash bytea NOT NULL,
    quota smallint NOT NULL,
    at_ms bigint NOT NULL,
    -- Keeps two requests of one millisecond apart, and their order.
    seq bigint NOT NULL,
    cost bigint NOT NULL,
    -- at_ms + window: when the request stops counting.
    expires_at_ms bigint NOT NULL,
    PRIMARY KEY (key_hash, quota, at_ms, seq)
);
CREATE INDEX IF NOT EXISTS {prefix}log_expires_at ON {prefix}log (expires_at_ms);

-- Milliseconds until `units` scaled units have flowed at `amount` per ms; NULL when nothing flows.
CREATE OR REPLACE FUNCTION {prefix}millis_for_v1(p_units numeric, p_amount numeric)
RETURNS numeric LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE
        WHEN p_units = 0 THEN 0
        WHEN p_amount = 0 THEN NULL
        ELSE div(p_units + p_amount - 1, p_amount)
    END
$$;

-- Writes one state row; the expiry is at least 1 ms away (as Policy::expires_at).
CREATE OR REPLACE FUNCTION {prefix}store_v1(
    p_hash bytea, p_algorithm text, p_quota smallint,
    p_since numeric, p_amount numeric, p_previous numeric, p_expires_at numeric, p_now bigint)
RETURNS void LANGUAGE sql AS $$
    INSERT INTO {prefix}state AS s
        (key_hash, algorithm, quota, since_ms, amount, previous, expires_at_ms)
    VALUES (p_hash, p_algorithm, p_quota, p_since, p_amount, p_previous,
            least(greatest(p_expires_at, p_now::numeric + 1), 9223372036854775807))
    ON CONFLICT (key_hash, algorithm, quota) DO UPDATE
    SET since_ms = excluded.since_ms,
        amount = excluded.amount,
        previous = excluded.previous,
        expires_at_ms = excluded.expires_at_ms
$$;

-- Every algorithm has an `evaluate` returning {allowed, remaining, reset_after_ms,
-- retry_after_ms (-1: never)} and an `admit` that writes the state after an admitted request.
-- `p` holds the quota's parameters (as the Lua `params`), `s` its state row or NULL.

-- Fixed window. p = {limit, window}; s = (since_ms = window start, amount = count).
CREATE OR REPLACE FUNCTION {prefix}fw_evaluate_v1(
    p bigint[], s {prefix}state, p_hash bytea, p_quota smallint, p_now bigint, p_cost numeric)
RETURNS bigint[] LANGUAGE plpgsql AS $$
DECLARE
    v_limit numeric := p[1];
    v_window numeric := p[2];
    v_start numeric := p_now - p_now % v_window;
    v_used numeric := CASE WHEN s.since_ms = v_start THEN s.amount ELSE 0 END;
    v_reset numeric := v_start + v_window - p_now;
    v_allowed boolean := v_used + p_cost <= v_limit;
    v_after numeric := CASE WHEN v_allowed THEN v_used + p_cost ELSE v_used END;
BEGIN
    RETURN ARRAY[
        v_allowed::int,
        greatest(v_limit - v_after, 0),
        v_reset,
        -- The next window starts empty, so a cost within the limit fits there.
        CASE WHEN NOT v_allowed AND p_cost <= v_limit THEN v_reset ELSE -1 END
    ]::bigint[];
END $$;

CREATE OR REPLACE FUNCTION {prefix}fw_admit_v1(
    p bigint[], s {prefix}state, p_hash bytea, p_quota smallint, p_now bigint, p_cost numeric)
RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    v_window numeric := p[2];
    v_start numeric := p_now - p_now % v_window;
    v_used numeric := CASE WHEN s.since_ms = v_start THEN s.amount ELSE 0 END;
BEGIN
    PERFORM {prefix}store_v1(p_hash, 'fw', p_quota, v_start, v_used + p_cost, 0,
                             v_start + v_window, p_now);
END $$;

-- Sliding log. p = {limit, window}; entries in {prefix}log, counted while at_ms + window > now;
-- s = (since_ms = newest entry, amount = entry sequence).
CREATE OR REPLACE FUNCTION {prefix}sw_evaluate_v1(
    p bigint[], s {prefix}state, p_hash bytea, p_quota smallint, p_now bigint, p_cost numeric)
RETURNS bigint[] LANGUAGE plpgsql AS $$
DECLARE
    v_limit numeric := p[1];
    v_window numeric := p[2];
    v_counted_after bigint := p_now - p[2];
    v_used numeric;
    v_oldest numeric;
    v_allowed boolean;
    v_after numeric;
    v_freed_at numeric;
    v_retry numeric := -1;
BEGIN
    SELECT coalesce(sum(cost), 0), min(at_ms) INTO v_used, v_oldest
    FROM {prefix}log
    WHERE key_hash = p_hash AND quota = p_quota AND at_ms > v_counted_after;
    v_allowed := v_used + p_cost <= v_limit;
    v_after := v_used;
    IF v_allowed THEN
        v_after := v_used + p_cost;
        v_oldest := least(coalesce(v_oldest, p_now), p_now);
    ELSIF p_cost <= v_limit THEN
        -- Enough earlier requests must slide out to make room for this one.
        SELECT e.at_ms INTO v_freed_at
        FROM (
            SELECT at_ms, seq, sum(cost) OVER (ORDER BY at_ms, seq) AS freed
            FROM {prefix}log
            WHERE key_hash = p_hash AND quota = p_quota AND at_ms > v_counted_after
        ) e
        WHERE e.freed >= v_used + p_cost - v_limit
        ORDER BY e.at_ms, e.seq
        LIMIT 1;
        v_retry := CASE WHEN v_freed_at IS NULL THEN 1
                        ELSE greatest(v_freed_at + v_window - p_now, 1) END;
    END IF;
    RETURN ARRAY[
        v_allowed::int,
        greatest(v_limit - v_after, 0),
        CASE WHEN v_oldest IS NULL THEN 0 ELSE v_oldest + v_window - p_now END,
        v_retry
    ]::bigint[];
END $$;

CREATE OR REPLACE FUNCTION {prefix}sw_admit_v1(
    p bigint[], s {prefix}state, p_hash bytea, p_quota smallint, p_now bigint, p_cost numeric)
RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    v_window numeric := p[2];
    v_seq bigint;
    v_newest bigint;
BEGIN
    DELETE FROM {prefix}log
    WHERE key_hash = p_hash AND quota = p_quota AND at_ms <= p_now - p[2];
    -- The sequence survives the row's expiry (s is NULL then), so it never repeats.
    SELECT amount INTO v_seq FROM {prefix}state
    WHERE key_hash = p_hash AND algorithm = 'sw' AND quota = p_quota;
    v_seq := coalesce(v_seq, 0) + 1;
    INSERT INTO {prefix}log (key_hash, quota, at_ms, seq, cost, expires_at_ms)
    VALUES (p_hash, p_quota, p_now, v_seq, p_cost,
            least(p_now + v_window, 9223372036854775807));
    SELECT max(at_ms) INTO v_newest FROM {prefix}log
    WHERE key_hash = p_hash AND quota = p_quota;
    PERFORM {prefix}store_v1(p_hash, 'sw', p_quota, v_newest, v_seq, 0,
                             v_newest + v_window, p_now);
END $$;

-- Sliding window counter. p = {limit, window}; s = (since_ms = current bucket start,
-- amount = current, previous). Compared exactly, scaled by the window.
CREATE OR REPLACE FUNCTION {prefix}first_fitting_elapsed_v1(
    p_window numeric, p_previous numeric, p_room numeric)
RETURNS numeric LANGUAGE sql IMMUTABLE AS $$
    -- The smallest elapsed time at which previous * (window - e) <= room * window.
    SELECT CASE WHEN p_previous = 0 THEN 0
                ELSE greatest(p_window - div(p_room * p_window, p_previous), 0) END
$$;

CREATE OR REPLACE FUNCTION {prefix}swc_evaluate_v1(
    p bigint[], s {prefix}state, p_hash bytea, p_quota smallint, p_now bigint, p_cost numeric)
RETURNS bigint[] LANGUAGE plpgsql AS $$
DECLARE
    v_limit numeric := p[1];
    v_window numeric := p[2];
    v_start numeric := p_now - p_now % v_window;
    v_elapsed numeric := p_now - v_start;
    -- previous, current as seen from the bucket holding now.
    v_previous numeric := CASE WHEN s.since_ms = v_start THEN s.previous
                               WHEN s.since_ms + v_window = v_start THEN s.amount
                               ELSE 0 END;
    v_current numeric := CASE WHEN s.since_ms = v_start THEN s.amount ELSE 0 END;
    v_scaled_limit numeric := v_limit * v_window;
    v_before numeric := v_previous * (v_window - v_elapsed) + v_current * v_window;
    v_allowed boolean := v_before + p_cost * v_window <= v_scaled_limit;
    v_after numeric := CASE WHEN v_allowed THEN v_before + p_cost * v_window ELSE v_before END;
    v_reset numeric := v_start + v_window - p_now;
    v_room numeric := v_limit - v_current - p_cost;
    v_retry numeric := -1;
BEGIN
    IF NOT v_allowed AND p_cost <= v_limit THEN
        IF v_room >= 0 THEN
            -- Fits later in this bucket, once enough of the previous one has slid out.
            v_retry := {prefix}first_fitting_elapsed_v1(v_window, v_previous, v_room) - v_elapsed;
        ELSE
            -- Only fits in the next bucket, where this bucket's count becomes the weighted one.
            v_retry := v_reset
                + {prefix}first_fitting_elapsed_v1(v_window, v_current, v_limit - p_cost);
        END IF;
    END IF;
    RETURN ARRAY[
        v_allowed::int,
        div(greatest(v_scaled_limit - v_after, 0), v_window),
        v_reset,
        v_retry
    ]::bigint[];
END $$;

CREATE OR REPLACE FUNCTION {prefix}swc_admit_v1(
    p bigint[], s {prefix}state, p_hash bytea, p_quota smallint, p_now bigint, p_cost numeric)
RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    v_window numeric := p[2];
    v_start numeric := p_now - p_now % v_window;
    v_previous numeric := CASE WHEN s.since_ms = v_start THEN s.previous
                               WHEN s.since_ms + v_window = v_start THEN s.amount
                               ELSE 0 END;
    v_current numeric := CASE WHEN s.since_ms = v_start THEN s.amount ELSE 0 END;
BEGIN
    PERFORM {prefix}store_v1(p_hash, 'swc', p_quota, v_start, v_current + p_cost, v_previous,
                             v_start + 2 * v_window, p_now);
END $$;

-- Token bucket. p = {bucket_size, refill amount, refill per_ms, initial_tokens, window};
-- s = (since_ms = last update, amount = tokens in scaled units, one token = per_ms units).
CREATE OR REPLACE FUNCTION {prefix}tb_tokens_v1(p bigint[], s {prefix}state, p_now bigint)
RETURNS numeric LANGUAGE sql IMMUTABLE AS $$
    -- A new bucket holds the initial tokens; a clock that steps back refills nothing.
    SELECT CASE
        WHEN s.expires_at_ms IS NULL THEN least(p[4], p[1])::numeric * p[3]
        ELSE least(
            least(s.amount::numeric, p[1]::numeric * p[3])
                + least(greatest(p_now::numeric - s.since_ms, 0) * p[2], p[1]::numeric * p[3]),
            p[1]::numeric * p[3])
    END
$$;

CREATE OR REPLACE FUNCTION {prefix}tb_evaluate_v1(
    p bigint[], s {prefix}state, p_hash bytea, p_quota smallint, p_now bigint, p_cost numeric)
RETURNS bigint[] LANGUAGE plpgsql AS $$
DECLARE
    v_size numeric := p[1];
    v_amount numeric := p[2];
    v_unit numeric := p[3];
    v_capacity numeric := v_size * v_unit;
    v_tokens numeric := {prefix}tb_tokens_v1(p, s, p_now);
    v_needed numeric := p_cost * v_unit;
    v_allowed boolean := v_tokens >= v_needed;
    v_after numeric := CASE WHEN v_allowed THEN v_tokens - v_needed ELSE v_tokens END;
    v_retry numeric := -1;
BEGIN
    IF NOT v_allowed AND p_cost <= v_size THEN
        v_retry := coalesce({prefix}millis_for_v1(v_needed - v_tokens, v_amount), -1);
    END IF;
    RETURN ARRAY[
        v_allowed::int,
        div(v_after, v_unit),
        coalesce({prefix}millis_for_v1(v_capacity - v_after, v_amount), 0),
        v_retry
    ]::bigint[];
END $$;

-- A bucket full again means the same as a new one only when new buckets start full; one that
-- starts lower is kept a window longer.
CREATE OR REPLACE FUNCTION {prefix}tb_store_v1(
    p bigint[], p_hash bytea, p_quota smallint, p_level numeric, p_last numeric, p_now bigint)
RETURNS void LANGUAGE sql AS $$
    SELECT {prefix}store_v1(p_hash, 'tb', p_quota, p_last, p_level, 0,
        p_now
            + coalesce({prefix}millis_for_v1(p[1]::numeric * p[3] - p_level, p[2]), 0)
            + CASE WHEN p[4] < p[1] THEN p[5] ELSE 0 END,
        p_now)
$$;

CREATE OR REPLACE FUNCTION {prefix}tb_admit_v1(
    p bigint[], s {prefix}state, p_hash bytea, p_quota smallint, p_now bigint, p_cost numeric)
RETURNS void LANGUAGE sql AS $$
    SELECT {prefix}tb_store_v1(p, p_hash, p_quota,
        {prefix}tb_tokens_v1(p, s, p_now) - p_cost * p[3],
        greatest(coalesce(s.since_ms, p_now), p_now),
        p_now)
$$;

-- The refill clock starts at the first request even when it does not fit.
CREATE OR REPLACE FUNCTION {prefix}tb_first_rejection_v1(
    p bigint[], p_hash bytea, p_quota smallint, p_now bigint)
RETURNS void LANGUAGE sql AS $$
    SELECT {prefix}tb_store_v1(p, p_hash, p_quota, least(p[4], p[1])::numeric * p[3], p_now, p_now)
    WHERE p[4] < p[1]
$$;

-- Leaky bucket (meter). p = {capacity, leak amount, leak per_ms, window};
-- s = (since_ms = last update, amount = level in scaled units).
CREATE OR REPLACE FUNCTION {prefix}lb_level_v1(p bigint[], s {prefix}state, p_now bigint)
RETURNS numeric LANGUAGE sql IMMUTABLE AS $$
    -- A clock that steps back drains nothing.
    SELECT CASE
        WHEN s.expires_at_ms IS NULL THEN 0
        ELSE s.amount - least(greatest(p_now::numeric - s.since_ms, 0) * p[2], s.amount)
    END
$$;

CREATE OR REPLACE FUNCTION {prefix}lb_evaluate_v1(
    p bigint[], s {prefix}state, p_hash bytea, p_quota smallint, p_now bigint, p_cost numeric)
RETURNS bigint[] LANGUAGE plpgsql AS $$
DECLARE
    v_capacity numeric := p[1];
    v_amount numeric := p[2];
    v_unit numeric := p[3];
    v_scaled_capacity numeric := v_capacity * v_unit;
    v_level numeric := {prefix}lb_level_v1(p, s, p_now);
    v_added numeric := p_cost * v_unit;
    v_allowed boolean := v_level + v_added <= v_scaled_capacity;
    v_after numeric := CASE WHEN v_allowed THEN v_level + v_added ELSE v_level END;
    v_retry numeric := -1;
BEGIN
    IF NOT v_allowed AND p_cost <= v_capacity THEN
        v_retry := coalesce(
            {prefix}millis_for_v1(v_level + v_added - v_scaled_capacity, v_amount), -1);
    END IF;
    RETURN ARRAY[
        v_allowed::int,
        div(greatest(v_scaled_capacity - v_after, 0), v_unit),
        coalesce({prefix}millis_for_v1(v_after, v_amount), 0),
        v_retry
    ]::bigint[];
END $$;

CREATE OR REPLACE FUNCTION {prefix}lb_admit_v1(
    p bigint[], s {prefix}state, p_hash bytea, p_quota smallint, p_now bigint, p_cost numeric)
RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    v_level numeric := {prefix}lb_level_v1(p, s, p_now) + p_cost * p[3];
BEGIN
    PERFORM {prefix}store_v1(p_hash, 'lb', p_quota,
        greatest(coalesce(s.since_ms, p_now), p_now), v_level, 0,
        p_now + coalesce({prefix}millis_for_v1(v_level, p[2]), 0), p_now);
END $$;

-- The key's lock: checks (and resets) of one key run one after the other, whether or not its
-- rows exist yet. The table prefix is mixed in so two stores in one database do not wait on
-- each other. Released at commit.
CREATE OR REPLACE FUNCTION {prefix}lock_v1(p_hash bytea, p_exclusive boolean)
RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    v_lock bigint := hashtextextended('{prefix}', 0)
        # ('x' || encode(substr(p_hash, 1, 8), 'hex'))::bit(64)::bigint;
BEGIN
    IF p_exclusive THEN
        PERFORM pg_advisory_xact_lock(v_lock);
    ELSE
        -- A peek only waits for a check in progress; peeks do not wait for each other.
        PERFORM pg_advisory_xact_lock_shared(v_lock);
    END IF;
END $$;

-- Evaluates every quota, then records in all of them only if all allow (a rejected request is
-- never counted). Returns 4 integers per quota, as the Lua scripts do. p_now NULL: the
-- database's clock. p_record false: a peek, which writes nothing.
CREATE OR REPLACE FUNCTION {prefix}check_v1(
    p_key bytea, p_algorithm text, p_now bigint, p_cost bigint, p_record boolean,
    p_params bigint[])
RETURNS bigint[] LANGUAGE plpgsql AS $$
DECLARE
    v_hash bytea := sha256(p_key);
    v_width int := CASE p_algorithm WHEN 'tb' THEN 5 WHEN 'lb' THEN 4 ELSE 2 END;
    v_quotas int := coalesce(cardinality(p_params), 0) / v_width;
    v_now bigint;
    v_quota smallint;
    v_p bigint[];
    v_row {prefix}state;
    v_rows {prefix}state[] := '{}';
    v_verdict bigint[];
    v_reply bigint[] := '{}';
    v_all_allowed boolean := true;
BEGIN
    PERFORM {prefix}lock_v1(v_hash, p_record);
    -- Read after the lock: a check that waited decides on the time it runs.
    v_now := coalesce(p_now, floor(extract(epoch FROM clock_timestamp()) * 1000)::bigint);
    FOR i IN 1..v_quotas LOOP
        v_quota := i - 1;
        v_p := p_params[(i - 1) * v_width + 1 : i * v_width];
        -- An expired row means the same as none.
        SELECT * INTO v_row FROM {prefix}state
        WHERE key_hash = v_hash AND algorithm = p_algorithm AND quota = v_quota
          AND expires_at_ms > v_now;
        IF NOT FOUND THEN
            v_row := NULL;
        END IF;
        v_rows := array_append(v_rows, v_row);
        v_verdict := CASE p_algorithm
            WHEN 'fw' THEN {prefix}fw_evaluate_v1(v_p, v_row, v_hash, v_quota, v_now, p_cost)
            WHEN 'sw' THEN {prefix}sw_evaluate_v1(v_p, v_row, v_hash, v_quota, v_now, p_cost)
            WHEN 'swc' THEN {prefix}swc_evaluate_v1(v_p, v_row, v_hash, v_quota, v_now, p_cost)
            WHEN 'tb' THEN {prefix}tb_evaluate_v1(v_p, v_row, v_hash, v_quota, v_now, p_cost)
            WHEN 'lb' THEN {prefix}lb_evaluate_v1(v_p, v_row, v_hash, v_quota, v_now, p_cost)
        END;
        IF v_verdict IS NULL THEN
            RAISE EXCEPTION 'unknown algorithm %', p_algorithm;
        END IF;
        v_all_allowed := v_all_allowed AND v_verdict[1] = 1;
        v_reply := v_reply || v_verdict;
    END LOOP;
    IF NOT p_record THEN
        RETURN v_reply;
    END IF;
    FOR i IN 1..v_quotas LOOP
        v_quota := i - 1;
        v_p := p_params[(i - 1) * v_width + 1 : i * v_width];
        v_row := v_rows[i];
        IF v_all_allowed THEN
            CASE p_algorithm
                WHEN 'fw' THEN PERFORM {prefix}fw_admit_v1(v_p, v_row, v_hash, v_quota, v_now, p_cost);
                WHEN 'sw' THEN PERFORM {prefix}sw_admit_v1(v_p, v_row, v_hash, v_quota, v_now, p_cost);
                WHEN 'swc' THEN PERFORM {prefix}swc_admit_v1(v_p, v_row, v_hash, v_quota, v_now, p_cost);
                WHEN 'tb' THEN PERFORM {prefix}tb_admit_v1(v_p, v_row, v_hash, v_quota, v_now, p_cost);
                WHEN 'lb' THEN PERFORM {prefix}lb_admit_v1(v_p, v_row, v_hash, v_quota, v_now, p_cost);
            END CASE;
        ELSIF p_algorithm = 'tb' AND v_row.expires_at_ms IS NULL THEN
            PERFORM {prefix}tb_first_rejection_v1(v_p, v_hash, v_quota, v_now);
        END IF;
    END LOOP;
    RETURN v_reply;
END $$;

-- Forgets every state of a key, every algorithm and quota.
CREATE OR REPLACE FUNCTION {prefix}reset_v1(p_key bytea)
RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    v_hash bytea := sha256(p_key);
BEGIN
    PERFORM {prefix}lock_v1(v_hash, true);
    DELETE FROM {prefix}state WHERE key_hash = v_hash;
    DELETE FROM {prefix}log WHERE key_hash = v_hash;
END $$;
