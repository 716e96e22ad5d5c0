-- The MySQL/MariaDB store: tables, indexes and the stored-procedure port of the Redis Lua
-- scripts (backend/redis/*.lua), with the same integer maths. `{prefix}` is the checked table
-- prefix. Statements are separated by lines holding only `-- //` and sent one at a time (no
-- DELIMITER needed: the server reads a routine body whole). Run on every connect: every
-- statement is idempotent.
--
-- Every routine and table ends in a version: a change to one gets a new name (they are created
-- only if missing), so processes of two versions sharing a database each call their own. The
-- `_v2` tables and routines key state by policy id instead of by algorithm and the quota's
-- position in its rate; the `_v1` procedures and the tables `{prefix}state` and `{prefix}log`
-- of earlier versions are left for processes of that version and never read (see sql.rs,
-- "Tables"). The pure functions did not change and keep their `_v1` names.
--
-- The `_v3` sliding log lives in `{prefix}log_v3`, whose entries carry running totals, instead
-- of `{prefix}log_v2`, which every check read whole: sliding-log counts start afresh once, at
-- the upgrade. Its procedures, and `check_v3` and `reset_v3` that call them, are new; every
-- other state stays in `{prefix}state_v2` with the unchanged `_v2` procedures, shared by both
-- versions. `check_v2`, `reset_v2`, `sw_evaluate_v2`, `sw_admit_v2` and `log_v2` are no longer
-- created; those of a database in use are left to the previous version's processes (each
-- version counting its sliding logs on its own, and a reset by either leaving the other's log).
-- The sliding log keeps no state row any more (the previous version kept its newest entry and
-- an entry sequence there, which the log now gives itself), so the previous version's writes
-- to that row change nothing this one counts.
--
-- Arithmetic on request values is done in DECIMAL(65,0) (exact), so a huge cost or period
-- cannot overflow; stored values are BIGINT. floor(a / b) is `a DIV b` and ceil(a / b) is
-- `(a + b - 1) DIV b`, for a >= 0 and b > 0 (never `/`, which rounds to a few decimals).

CREATE TABLE IF NOT EXISTS {prefix}state_v2 (
    -- SHA-256 of the key: keys of any length and any bytes fit one index entry.
    key_hash BINARY(32) NOT NULL,
    -- The policy's identity (PolicyId: the algorithm and every parameter, signed): each limit
    -- on a key has its own row, so `5/m` and `10/h` never reset each other, and identical
    -- limits share one.
    policy BIGINT NOT NULL,
    -- Window or bucket start (fw, swc), last update (tb, lb). (The previous version's sliding
    -- log kept its newest entry here, and its entry sequence in `amount`; this one keeps none.)
    since_ms BIGINT NOT NULL,
    -- Count (fw), current bucket (swc), scaled level (tb, lb).
    amount BIGINT NOT NULL,
    -- Previous bucket (swc).
    previous BIGINT NOT NULL DEFAULT 0,
    -- After this instant the row means the same as no row (Policy::expires_at); 0 for the
    -- placeholder a check inserts to have a row to lock.
    expires_at_ms BIGINT NOT NULL,
    PRIMARY KEY (key_hash, policy),
    KEY {prefix}state_v2_expires_at (expires_at_ms)
) ENGINE = InnoDB
-- //
-- The sliding log: one row per admitted request, per policy, in (at_ms, seq) order. Each row
-- carries the running total of the costs through it, so a check reads a few index entries
-- however long the log is (see sw_evaluate_v3).
CREATE TABLE IF NOT EXISTS {prefix}log_v3 (
    key_hash BINARY(32) NOT NULL,
    policy BIGINT NOT NULL,
    at_ms BIGINT NOT NULL,
    -- Keeps two requests of one millisecond apart, and their order: one more than the last
    -- entry of the same millisecond (1 for the first).
    seq BIGINT NOT NULL,
    cost BIGINT NOT NULL,
    -- The running total of the costs through this entry. Only differences between the totals
    -- of one key and policy mean anything: they start from 0 when the log is empty, and are
    -- rebased when the next one would not fit a BIGINT.
    through BIGINT NOT NULL,
    -- at_ms + window: when the request stops counting.
    expires_at_ms BIGINT NOT NULL,
    PRIMARY KEY (key_hash, policy, at_ms, seq),
    -- The retry search: the first entry whose running total reaches a value, in one probe.
    KEY {prefix}log_v3_through (key_hash, policy, through),
    KEY {prefix}log_v3_expires_at (expires_at_ms)
) ENGINE = InnoDB
-- //
-- The n-th (1-based) integer of a comma-separated list.
CREATE FUNCTION IF NOT EXISTS {prefix}param_v1(p_list TEXT, p_n INT)
RETURNS DECIMAL(65, 0) DETERMINISTIC NO SQL
RETURN CAST(SUBSTRING_INDEX(SUBSTRING_INDEX(p_list, ',', p_n), ',', -1) AS DECIMAL(65, 0))
-- //
-- Milliseconds until `units` scaled units have flowed at `amount` per ms; NULL when nothing flows.
CREATE FUNCTION IF NOT EXISTS {prefix}millis_for_v1(p_units DECIMAL(65, 0), p_amount DECIMAL(65, 0))
RETURNS DECIMAL(65, 0) DETERMINISTIC NO SQL
RETURN CASE
    WHEN p_units = 0 THEN 0
    WHEN p_amount = 0 THEN NULL
    ELSE (p_units + p_amount - 1) DIV p_amount
END
-- //
-- Writes one state row (a check has locked it, so it exists); the expiry is at least 1 ms away
-- (as Policy::expires_at).
CREATE PROCEDURE IF NOT EXISTS {prefix}store_v2(
    IN p_hash BINARY(32), IN p_policy BIGINT,
    IN p_since DECIMAL(65, 0), IN p_amount DECIMAL(65, 0), IN p_previous DECIMAL(65, 0),
    IN p_expires_at DECIMAL(65, 0), IN p_now BIGINT)
MODIFIES SQL DATA
UPDATE {prefix}state_v2
SET since_ms = p_since, amount = p_amount, previous = p_previous,
    expires_at_ms = LEAST(GREATEST(p_expires_at, CAST(p_now AS DECIMAL(65, 0)) + 1),
                          9223372036854775807)
WHERE key_hash = p_hash AND policy = p_policy
-- //
-- Every algorithm has an `evaluate` giving allowed, remaining, reset_after_ms and
-- retry_after_ms (-1: never), and an `admit` that writes the state after an admitted request.
-- Both read the quota's parameters from p_params at p_offset (as the Lua `params`) and its
-- state from p_found, s_since, s_amount, s_previous (p_found false: no state).
--
-- Fixed window. params: limit, window; state: since = window start, amount = count.
CREATE PROCEDURE IF NOT EXISTS {prefix}fw_evaluate_v2(
    IN p_params TEXT, IN p_offset INT, IN p_found BOOLEAN,
    IN s_since BIGINT, IN s_amount BIGINT, IN s_previous BIGINT,
    IN p_hash BINARY(32), IN p_policy BIGINT, IN p_now BIGINT, IN p_cost DECIMAL(65, 0),
    OUT o_allowed BOOLEAN, OUT o_remaining BIGINT, OUT o_reset BIGINT, OUT o_retry BIGINT)
READS SQL DATA
BEGIN
    DECLARE v_limit DECIMAL(65, 0) DEFAULT {prefix}param_v1(p_params, p_offset + 1);
    DECLARE v_window DECIMAL(65, 0) DEFAULT {prefix}param_v1(p_params, p_offset + 2);
    DECLARE v_start DECIMAL(65, 0) DEFAULT p_now - MOD(p_now, v_window);
    DECLARE v_used DECIMAL(65, 0) DEFAULT IF(p_found AND s_since = v_start, s_amount, 0);
    SET o_reset = v_start + v_window - p_now;
    SET o_allowed = v_used + p_cost <= v_limit;
    SET o_remaining = GREATEST(v_limit - IF(o_allowed, v_used + p_cost, v_used), 0);
    -- The next window starts empty, so a cost within the limit fits there.
    SET o_retry = IF(NOT o_allowed AND p_cost <= v_limit, o_reset, -1);
END
-- //
CREATE PROCEDURE IF NOT EXISTS {prefix}fw_admit_v2(
    IN p_params TEXT, IN p_offset INT, IN p_found BOOLEAN,
    IN s_since BIGINT, IN s_amount BIGINT, IN s_previous BIGINT,
    IN p_hash BINARY(32), IN p_policy BIGINT, IN p_now BIGINT, IN p_cost DECIMAL(65, 0))
MODIFIES SQL DATA
BEGIN
    DECLARE v_window DECIMAL(65, 0) DEFAULT {prefix}param_v1(p_params, p_offset + 2);
    DECLARE v_start DECIMAL(65, 0) DEFAULT p_now - MOD(p_now, v_window);
    DECLARE v_used DECIMAL(65, 0) DEFAULT IF(p_found AND s_since = v_start, s_amount, 0);
    CALL {prefix}store_v2(p_hash, p_policy, v_start, v_used + p_cost, 0,
                          v_start + v_window, p_now);
END
-- //
-- Sliding log. params: limit, window; entries in {prefix}log_v3, counted while
-- at_ms + window > now. The counted entries are the newest ones (the log is in time order), so
-- their cost is the running total through the newest entry minus the total just before the
-- oldest counted one (its total minus its cost): two index probes, whatever the log's length.
-- A rejection that can wait finds the first entry whose total reaches the excess: one more.
-- Nothing reads an entry that is no longer counted, so the cleanup may delete them any time.
-- The state row is only the check's lock (check_v3 removes it): the log holds everything.
CREATE PROCEDURE IF NOT EXISTS {prefix}sw_evaluate_v3(
    IN p_params TEXT, IN p_offset INT, IN p_found BOOLEAN,
    IN s_since BIGINT, IN s_amount BIGINT, IN s_previous BIGINT,
    IN p_hash BINARY(32), IN p_policy BIGINT, IN p_now BIGINT, IN p_cost DECIMAL(65, 0),
    OUT o_allowed BOOLEAN, OUT o_remaining BIGINT, OUT o_reset BIGINT, OUT o_retry BIGINT)
READS SQL DATA
BEGIN
    DECLARE v_limit DECIMAL(65, 0) DEFAULT {prefix}param_v1(p_params, p_offset + 1);
    DECLARE v_window DECIMAL(65, 0) DEFAULT {prefix}param_v1(p_params, p_offset + 2);
    DECLARE v_counted_after BIGINT DEFAULT p_now - v_window;
    -- The oldest counted entry's time, and the running total just before it.
    DECLARE v_oldest BIGINT;
    DECLARE v_before BIGINT;
    DECLARE v_used DECIMAL(65, 0) DEFAULT 0;
    DECLARE v_freed BIGINT;
    DECLARE v_freed_at BIGINT;
    -- An aggregate over at most one row: no entry is NULLs rather than a "no data" warning.
    SELECT MAX(at_ms), MAX(through - cost) INTO v_oldest, v_before
    FROM (SELECT at_ms, through, cost FROM {prefix}log_v3
          WHERE key_hash = p_hash AND policy = p_policy AND at_ms > v_counted_after
          ORDER BY at_ms, seq
          LIMIT 1) AS oldest;
    IF v_oldest IS NOT NULL THEN
        SET v_used = (SELECT through FROM {prefix}log_v3
                      WHERE key_hash = p_hash AND policy = p_policy
                      ORDER BY through DESC
                      LIMIT 1) - v_before;
    END IF;
    SET o_allowed = v_used + p_cost <= v_limit;
    SET o_retry = -1;
    IF o_allowed THEN
        SET o_remaining = GREATEST(v_limit - v_used - p_cost, 0);
        SET v_oldest = LEAST(COALESCE(v_oldest, p_now), p_now);
    ELSE
        SET o_remaining = GREATEST(v_limit - v_used, 0);
        IF p_cost <= v_limit THEN
            -- The oldest counted requests whose costs add up to the excess must slide out; the
            -- total they reach lies within the log's totals (the excess is at most what is
            -- counted), so it is a BIGINT, and the index is searched with one.
            SET v_freed = v_before + (v_used + p_cost - v_limit);
            SET v_freed_at = (
                SELECT at_ms FROM {prefix}log_v3
                WHERE key_hash = p_hash AND policy = p_policy AND through >= v_freed
                ORDER BY through
                LIMIT 1);
            SET o_retry = IF(v_freed_at IS NULL, 1, GREATEST(v_freed_at + v_window - p_now, 1));
        END IF;
    END IF;
    SET o_reset = IF(v_oldest IS NULL, 0, v_oldest + v_window - p_now);
END
-- //
CREATE PROCEDURE IF NOT EXISTS {prefix}sw_admit_v3(
    IN p_params TEXT, IN p_offset INT, IN p_found BOOLEAN,
    IN s_since BIGINT, IN s_amount BIGINT, IN s_previous BIGINT,
    IN p_hash BINARY(32), IN p_policy BIGINT, IN p_now BIGINT, IN p_cost DECIMAL(65, 0))
MODIFIES SQL DATA
BEGIN
    DECLARE v_window DECIMAL(65, 0) DEFAULT {prefix}param_v1(p_params, p_offset + 2);
    DECLARE v_counted_after BIGINT DEFAULT p_now - v_window;
    -- The last entry at or before now, after which the request goes.
    DECLARE v_last_at, v_last_seq, v_last_through BIGINT;
    DECLARE v_total, v_base BIGINT;
    -- The entries no longer counted go by range, each once.
    DELETE FROM {prefix}log_v3
    WHERE key_hash = p_hash AND policy = p_policy AND at_ms <= v_counted_after;
    -- At the end, unless a clock that stepped back left later entries.
    SELECT MAX(at_ms), MAX(seq), MAX(through) INTO v_last_at, v_last_seq, v_last_through
    FROM (SELECT at_ms, seq, through FROM {prefix}log_v3
          WHERE key_hash = p_hash AND policy = p_policy AND at_ms <= p_now
          ORDER BY at_ms DESC, seq DESC
          LIMIT 1) AS last;
    IF v_last_at IS NULL THEN
        -- First in the log: after the total before the first entry (0 when empty).
        SET v_last_through = COALESCE((
            SELECT through - cost FROM {prefix}log_v3
            WHERE key_hash = p_hash AND policy = p_policy
            ORDER BY at_ms, seq
            LIMIT 1), 0);
    END IF;
    SET v_total = COALESCE((SELECT through FROM {prefix}log_v3
                            WHERE key_hash = p_hash AND policy = p_policy
                            ORDER BY through DESC
                            LIMIT 1), 0);
    -- Totals only grow while the log never empties. Before one would leave the BIGINT range
    -- they are rebased on the total before the first entry; every entry left is counted, so
    -- they are then at most the limit.
    IF v_total + p_cost > 9223372036854775807 THEN
        SET v_base = (SELECT through - cost FROM {prefix}log_v3
                      WHERE key_hash = p_hash AND policy = p_policy
                      ORDER BY at_ms, seq
                      LIMIT 1);
        UPDATE {prefix}log_v3 SET through = through - v_base
        WHERE key_hash = p_hash AND policy = p_policy;
        SET v_total = v_total - v_base;
        SET v_last_through = v_last_through - v_base;
    END IF;
    IF v_total > v_last_through THEN
        -- A clock that stepped back: the later entries' totals now include this request
        -- (O(later entries), only on such clocks).
        UPDATE {prefix}log_v3 SET through = through + p_cost
        WHERE key_hash = p_hash AND policy = p_policy AND at_ms > p_now;
    END IF;
    INSERT INTO {prefix}log_v3 (key_hash, policy, at_ms, seq, cost, through, expires_at_ms)
    VALUES (p_hash, p_policy, p_now, IF(v_last_at = p_now, v_last_seq + 1, 1), p_cost,
            v_last_through + p_cost, LEAST(p_now + v_window, 9223372036854775807));
END
-- //
-- Sliding window counter. params: limit, window; state: since = current bucket start,
-- amount = current, previous. Compared exactly, scaled by the window.
--
-- The smallest elapsed time at which previous * (window - e) <= room * window.
CREATE FUNCTION IF NOT EXISTS {prefix}first_fitting_elapsed_v1(
    p_window DECIMAL(65, 0), p_previous DECIMAL(65, 0), p_room DECIMAL(65, 0))
RETURNS DECIMAL(65, 0) DETERMINISTIC NO SQL
RETURN IF(p_previous = 0, 0, GREATEST(p_window - (p_room * p_window) DIV p_previous, 0))
-- //
CREATE PROCEDURE IF NOT EXISTS {prefix}swc_evaluate_v2(
    IN p_params TEXT, IN p_offset INT, IN p_found BOOLEAN,
    IN s_since BIGINT, IN s_amount BIGINT, IN s_previous BIGINT,
    IN p_hash BINARY(32), IN p_policy BIGINT, IN p_now BIGINT, IN p_cost DECIMAL(65, 0),
    OUT o_allowed BOOLEAN, OUT o_remaining BIGINT, OUT o_reset BIGINT, OUT o_retry BIGINT)
READS SQL DATA
BEGIN
    DECLARE v_limit DECIMAL(65, 0) DEFAULT {prefix}param_v1(p_params, p_offset + 1);
    DECLARE v_window DECIMAL(65, 0) DEFAULT {prefix}param_v1(p_params, p_offset + 2);
    DECLARE v_start DECIMAL(65, 0) DEFAULT p_now - MOD(p_now, v_window);
    DECLARE v_elapsed DECIMAL(65, 0) DEFAULT p_now - v_start;
    -- previous, current as seen from the bucket holding now.
    DECLARE v_previous DECIMAL(65, 0) DEFAULT CASE
        WHEN p_found AND s_since = v_start THEN s_previous
        WHEN p_found AND s_since + v_window = v_start THEN s_amount
        ELSE 0 END;
    DECLARE v_current DECIMAL(65, 0) DEFAULT IF(p_found AND s_since = v_start, s_amount, 0);
    DECLARE v_scaled_limit DECIMAL(65, 0) DEFAULT v_limit * v_window;
    DECLARE v_before DECIMAL(65, 0) DEFAULT v_previous * (v_window - v_elapsed) + v_current * v_window;
    DECLARE v_room DECIMAL(65, 0) DEFAULT v_limit - v_current - p_cost;
    SET o_allowed = v_before + p_cost * v_window <= v_scaled_limit;
    SET o_remaining = GREATEST(v_scaled_limit - IF(o_allowed, v_before + p_cost * v_window, v_before), 0) DIV v_window;
    SET o_reset = v_start + v_window - p_now;
    SET o_retry = -1;
    IF NOT o_allowed AND p_cost <= v_limit THEN
        IF v_room >= 0 THEN
            -- Fits later in this bucket, once enough of the previous one has slid out.
            SET o_retry = {prefix}first_fitting_elapsed_v1(v_window, v_previous, v_room) - v_elapsed;
        ELSE
            -- Only fits in the next bucket, where this bucket's count becomes the weighted one.
            SET o_retry = o_reset + {prefix}first_fitting_elapsed_v1(v_window, v_current, v_limit - p_cost);
        END IF;
    END IF;
END
-- //
CREATE PROCEDURE IF NOT EXISTS {prefix}swc_admit_v2(
    IN p_params TEXT, IN p_offset INT, IN p_found BOOLEAN,
    IN s_since BIGINT, IN s_amount BIGINT, IN s_previous BIGINT,
    IN p_hash BINARY(32), IN p_policy BIGINT, IN p_now BIGINT, IN p_cost DECIMAL(65, 0))
MODIFIES SQL DATA
BEGIN
    DECLARE v_window DECIMAL(65, 0) DEFAULT {prefix}param_v1(p_params, p_offset + 2);
    DECLARE v_start DECIMAL(65, 0) DEFAULT p_now - MOD(p_now, v_window);
    DECLARE v_previous DECIMAL(65, 0) DEFAULT CASE
        WHEN p_found AND s_since = v_start THEN s_previous
        WHEN p_found AND s_since + v_window = v_start THEN s_amount
        ELSE 0 END;
    DECLARE v_current DECIMAL(65, 0) DEFAULT IF(p_found AND s_since = v_start, s_amount, 0);
    CALL {prefix}store_v2(p_hash, p_policy, v_start, v_current + p_cost, v_previous,
                          v_start + 2 * v_window, p_now);
END
-- //
-- Token bucket. params: bucket_size, refill amount, refill per_ms, initial_tokens, window;
-- state: since = last update, amount = tokens in scaled units (one token = per_ms units).
--
-- Tokens now: a new bucket holds the initial tokens; a clock that steps back refills nothing.
CREATE FUNCTION IF NOT EXISTS {prefix}tb_tokens_v1(
    p_params TEXT, p_offset INT, p_found BOOLEAN, s_since BIGINT, s_amount BIGINT, p_now BIGINT)
RETURNS DECIMAL(65, 0) DETERMINISTIC NO SQL
BEGIN
    DECLARE v_size DECIMAL(65, 0) DEFAULT {prefix}param_v1(p_params, p_offset + 1);
    DECLARE v_amount DECIMAL(65, 0) DEFAULT {prefix}param_v1(p_params, p_offset + 2);
    DECLARE v_unit DECIMAL(65, 0) DEFAULT {prefix}param_v1(p_params, p_offset + 3);
    DECLARE v_initial DECIMAL(65, 0) DEFAULT {prefix}param_v1(p_params, p_offset + 4);
    DECLARE v_capacity DECIMAL(65, 0) DEFAULT v_size * v_unit;
    IF NOT p_found THEN
        RETURN LEAST(v_initial, v_size) * v_unit;
    END IF;
    RETURN LEAST(
        LEAST(s_amount, v_capacity)
            + LEAST(GREATEST(CAST(p_now AS DECIMAL(65, 0)) - s_since, 0) * v_amount, v_capacity),
        v_capacity);
END
-- //
CREATE PROCEDURE IF NOT EXISTS {prefix}tb_evaluate_v2(
    IN p_params TEXT, IN p_offset INT, IN p_found BOOLEAN,
    IN s_since BIGINT, IN s_amount BIGINT, IN s_previous BIGINT,
    IN p_hash BINARY(32), IN p_policy BIGINT, IN p_now BIGINT, IN p_cost DECIMAL(65, 0),
    OUT o_allowed BOOLEAN, OUT o_remaining BIGINT, OUT o_reset BIGINT, OUT o_retry BIGINT)
READS SQL DATA
BEGIN
    DECLARE v_size DECIMAL(65, 0) DEFAULT {prefix}param_v1(p_params, p_offset + 1);
    DECLARE v_amount DECIMAL(65, 0) DEFAULT {prefix}param_v1(p_params, p_offset + 2);
    DECLARE v_unit DECIMAL(65, 0) DEFAULT {prefix}param_v1(p_params, p_offset + 3);
    DECLARE v_tokens DECIMAL(65, 0) DEFAULT
        {prefix}tb_tokens_v1(p_params, p_offset, p_found, s_since, s_amount, p_now);
    DECLARE v_needed DECIMAL(65, 0) DEFAULT p_cost * v_unit;
    DECLARE v_after DECIMAL(65, 0);
    SET o_allowed = v_tokens >= v_needed;
    SET v_after = IF(o_allowed, v_tokens - v_needed, v_tokens);
    SET o_remaining = v_after DIV v_unit;
    SET o_reset = COALESCE({prefix}millis_for_v1(v_size * v_unit - v_after, v_amount), 0);
    SET o_retry = -1;
    IF NOT o_allowed AND p_cost <= v_size THEN
        SET o_retry = COALESCE({prefix}millis_for_v1(v_needed - v_tokens, v_amount), -1);
    END IF;
END
-- //
-- A bucket full again means the same as a new one only when new buckets start full; one that
-- starts lower is kept a window longer.
CREATE PROCEDURE IF NOT EXISTS {prefix}tb_store_v2(
    IN p_params TEXT, IN p_offset INT, IN p_hash BINARY(32), IN p_policy BIGINT,
    IN p_level DECIMAL(65, 0), IN p_last DECIMAL(65, 0), IN p_now BIGINT)
MODIFIES SQL DATA
BEGIN
    DECLARE v_size DECIMAL(65, 0) DEFAULT {prefix}param_v1(p_params, p_offset + 1);
    DECLARE v_amount DECIMAL(65, 0) DEFAULT {prefix}param_v1(p_params, p_offset + 2);
    DECLARE v_unit DECIMAL(65, 0) DEFAULT {prefix}param_v1(p_params, p_offset + 3);
    DECLARE v_initial DECIMAL(65, 0) DEFAULT {prefix}param_v1(p_params, p_offset + 4);
    DECLARE v_window DECIMAL(65, 0) DEFAULT {prefix}param_v1(p_params, p_offset + 5);
    CALL {prefix}store_v2(p_hash, p_policy, p_last, p_level, 0,
        p_now
            + COALESCE({prefix}millis_for_v1(v_size * v_unit - p_level, v_amount), 0)
            + IF(v_initial < v_size, v_window, 0),
        p_now);
END
-- //
CREATE PROCEDURE IF NOT EXISTS {prefix}tb_admit_v2(
    IN p_params TEXT, IN p_offset INT, IN p_found BOOLEAN,
    IN s_since BIGINT, IN s_amount BIGINT, IN s_previous BIGINT,
    IN p_hash BINARY(32), IN p_policy BIGINT, IN p_now BIGINT, IN p_cost DECIMAL(65, 0))
MODIFIES SQL DATA
CALL {prefix}tb_store_v2(p_params, p_offset, p_hash, p_policy,
    {prefix}tb_tokens_v1(p_params, p_offset, p_found, s_since, s_amount, p_now)
        - p_cost * {prefix}param_v1(p_params, p_offset + 3),
    IF(p_found, GREATEST(s_since, p_now), p_now),
    p_now)
-- //
-- The refill clock starts at the first request even when it does not fit.
CREATE PROCEDURE IF NOT EXISTS {prefix}tb_first_rejection_v2(
    IN p_params TEXT, IN p_offset INT, IN p_hash BINARY(32), IN p_policy BIGINT, IN p_now BIGINT)
MODIFIES SQL DATA
BEGIN
    DECLARE v_size DECIMAL(65, 0) DEFAULT {prefix}param_v1(p_params, p_offset + 1);
    DECLARE v_initial DECIMAL(65, 0) DEFAULT {prefix}param_v1(p_params, p_offset + 4);
    IF v_initial < v_size THEN
        CALL {prefix}tb_store_v2(p_params, p_offset, p_hash, p_policy,
            v_initial * {prefix}param_v1(p_params, p_offset + 3), p_now, p_now);
    END IF;
END
-- //
-- Leaky bucket (meter). params: capacity, leak amount, leak per_ms, window; state:
-- since = last update, amount = level in scaled units. A clock that steps back drains nothing.
CREATE FUNCTION IF NOT EXISTS {prefix}lb_level_v1(
    p_params TEXT, p_offset INT, p_found BOOLEAN, s_since BIGINT, s_amount BIGINT, p_now BIGINT)
RETURNS DECIMAL(65, 0) DETERMINISTIC NO SQL
RETURN IF(p_found,
    s_amount - LEAST(GREATEST(CAST(p_now AS DECIMAL(65, 0)) - s_since, 0)
                         * {prefix}param_v1(p_params, p_offset + 2), s_amount),
    0)
-- //
CREATE PROCEDURE IF NOT EXISTS {prefix}lb_evaluate_v2(
    IN p_params TEXT, IN p_offset INT, IN p_found BOOLEAN,
    IN s_since BIGINT, IN s_amount BIGINT, IN s_previous BIGINT,
    IN p_hash BINARY(32), IN p_policy BIGINT, IN p_now BIGINT, IN p_cost DECIMAL(65, 0),
    OUT o_allowed BOOLEAN, OUT o_remaining BIGINT, OUT o_reset BIGINT, OUT o_retry BIGINT)
READS SQL DATA
BEGIN
    DECLARE v_capacity DECIMAL(65, 0) DEFAULT {prefix}param_v1(p_params, p_offset + 1);
    DECLARE v_amount DECIMAL(65, 0) DEFAULT {prefix}param_v1(p_params, p_offset + 2);
    DECLARE v_unit DECIMAL(65, 0) DEFAULT {prefix}param_v1(p_params, p_offset + 3);
    DECLARE v_scaled_capacity DECIMAL(65, 0) DEFAULT v_capacity * v_unit;
    DECLARE v_level DECIMAL(65, 0) DEFAULT
        {prefix}lb_level_v1(p_params, p_offset, p_found, s_since, s_amount, p_now);
    DECLARE v_added DECIMAL(65, 0) DEFAULT p_cost * v_unit;
    DECLARE v_after DECIMAL(65, 0);
    SET o_allowed = v_level + v_added <= v_scaled_capacity;
    SET v_after = IF(o_allowed, v_level + v_added, v_level);
    SET o_remaining = GREATEST(v_scaled_capacity - v_after, 0) DIV v_unit;
    SET o_reset = COALESCE({prefix}millis_for_v1(v_after, v_amount), 0);
    SET o_retry = -1;
    IF NOT o_allowed AND p_cost <= v_capacity THEN
        SET o_retry = COALESCE(
            {prefix}millis_for_v1(v_level + v_added - v_scaled_capacity, v_amount), -1);
    END IF;
END
-- //
CREATE PROCEDURE IF NOT EXISTS {prefix}lb_admit_v2(
    IN p_params TEXT, IN p_offset INT, IN p_found BOOLEAN,
    IN s_since BIGINT, IN s_amount BIGINT, IN s_previous BIGINT,
    IN p_hash BINARY(32), IN p_policy BIGINT, IN p_now BIGINT, IN p_cost DECIMAL(65, 0))
MODIFIES SQL DATA
BEGIN
    DECLARE v_level DECIMAL(65, 0) DEFAULT
        {prefix}lb_level_v1(p_params, p_offset, p_found, s_since, s_amount, p_now)
        + p_cost * {prefix}param_v1(p_params, p_offset + 3);
    CALL {prefix}store_v2(p_hash, p_policy, IF(p_found, GREATEST(s_since, p_now), p_now),
        v_level, 0,
        p_now + COALESCE({prefix}millis_for_v1(v_level, {prefix}param_v1(p_params, p_offset + 2)), 0),
        p_now);
END
-- //
-- One quota's state row, if it has not expired (an expired row means the same as none).
CREATE PROCEDURE IF NOT EXISTS {prefix}load_v2(
    IN p_hash BINARY(32), IN p_policy BIGINT, IN p_now BIGINT,
    OUT o_found BOOLEAN, OUT o_since BIGINT, OUT o_amount BIGINT, OUT o_previous BIGINT)
READS SQL DATA
-- Aggregates always give one row, so a missing state is NULLs rather than a "no data" warning.
SELECT COUNT(*) > 0, MAX(since_ms), MAX(amount), MAX(previous)
INTO o_found, o_since, o_amount, o_previous
FROM {prefix}state_v2
WHERE key_hash = p_hash AND policy = p_policy AND expires_at_ms > p_now
-- //
-- Evaluates every quota, then records in all of them only if all allow (a rejected request is
-- never counted). Answers one row: 4 comma-separated integers per quota, as the Lua scripts
-- return. p_now NULL: the database's clock. p_record false: a peek, which writes nothing.
-- p_policies: each quota's policy id (its rows' key), comma-separated, distinct and in id
-- order (see sql.rs); p_params: each quota's parameters, in the same order. (`check_v2` with
-- the sliding log of `log_v3`.)
CREATE PROCEDURE IF NOT EXISTS {prefix}check_v3(
    IN p_key LONGBLOB, IN p_algorithm VARCHAR(3), IN p_now BIGINT, IN p_cost BIGINT,
    IN p_record BOOLEAN, IN p_quotas INT, IN p_policies TEXT, IN p_params TEXT)
MODIFIES SQL DATA
BEGIN
    DECLARE v_hash BINARY(32) DEFAULT UNHEX(SHA2(p_key, 256));
    DECLARE v_width INT DEFAULT CASE p_algorithm WHEN 'tb' THEN 5 WHEN 'lb' THEN 4 ELSE 2 END;
    DECLARE v_now BIGINT;
    DECLARE v_quota INT DEFAULT 0;
    DECLARE v_policy BIGINT;
    DECLARE v_offset INT;
    DECLARE v_all_allowed BOOLEAN DEFAULT TRUE;
    DECLARE v_found BOOLEAN;
    DECLARE v_since, v_amount, v_previous BIGINT;
    DECLARE v_allowed BOOLEAN;
    DECLARE v_remaining, v_reset, v_retry BIGINT;
    DECLARE v_reply TEXT DEFAULT '';
    DECLARE EXIT HANDLER FOR SQLEXCEPTION
    BEGIN
        ROLLBACK;
        RESIGNAL;
    END;

    IF p_algorithm NOT IN ('fw', 'sw', 'swc', 'tb', 'lb') THEN
        SIGNAL SQLSTATE '45000' SET MESSAGE_TEXT = 'unknown algorithm';
    END IF;
    IF p_record THEN
        -- READ COMMITTED: no gap locks, so checks of different keys never wait on each other.
        SET TRANSACTION ISOLATION LEVEL READ COMMITTED;
        START TRANSACTION;
        -- Lock every quota's row, in policy id order (so two checks, even of limits listing
        -- the same quotas in another order, cannot deadlock). A key seen for the first time
        -- gets a placeholder row (expired: it means no state) to lock; a second check
        -- inserting the same key waits for the first and then finds it.
        WHILE v_quota < p_quotas DO
            INSERT INTO {prefix}state_v2
                (key_hash, policy, since_ms, amount, previous, expires_at_ms)
            VALUES (v_hash, {prefix}param_v1(p_policies, v_quota + 1), 0, 0, 0, 0)
            ON DUPLICATE KEY UPDATE expires_at_ms = expires_at_ms;
            SET v_quota = v_quota + 1;
        END WHILE;
    ELSE
        -- One snapshot for every quota and log entry a peek reads.
        SET TRANSACTION ISOLATION LEVEL REPEATABLE READ;
        START TRANSACTION WITH CONSISTENT SNAPSHOT, READ ONLY;
    END IF;
    -- Read after the locks (SYSDATE, not the statement's NOW): a check that waited decides on
    -- the time it runs.
    SET v_now = COALESCE(p_now, FLOOR(UNIX_TIMESTAMP(SYSDATE(3)) * 1000));

    SET v_quota = 0;
    WHILE v_quota < p_quotas DO
        SET v_offset = v_quota * v_width;
        SET v_policy = {prefix}param_v1(p_policies, v_quota + 1);
        CALL {prefix}load_v2(v_hash, v_policy, v_now, v_found, v_since, v_amount, v_previous);
        CASE p_algorithm
            WHEN 'fw' THEN CALL {prefix}fw_evaluate_v2(p_params, v_offset, v_found, v_since,
                v_amount, v_previous, v_hash, v_policy, v_now, p_cost,
                v_allowed, v_remaining, v_reset, v_retry);
            WHEN 'sw' THEN CALL {prefix}sw_evaluate_v3(p_params, v_offset, v_found, v_since,
                v_amount, v_previous, v_hash, v_policy, v_now, p_cost,
                v_allowed, v_remaining, v_reset, v_retry);
            WHEN 'swc' THEN CALL {prefix}swc_evaluate_v2(p_params, v_offset, v_found, v_since,
                v_amount, v_previous, v_hash, v_policy, v_now, p_cost,
                v_allowed, v_remaining, v_reset, v_retry);
            WHEN 'tb' THEN CALL {prefix}tb_evaluate_v2(p_params, v_offset, v_found, v_since,
                v_amount, v_previous, v_hash, v_policy, v_now, p_cost,
                v_allowed, v_remaining, v_reset, v_retry);
            ELSE CALL {prefix}lb_evaluate_v2(p_params, v_offset, v_found, v_since,
                v_amount, v_previous, v_hash, v_policy, v_now, p_cost,
                v_allowed, v_remaining, v_reset, v_retry);
        END CASE;
        SET v_all_allowed = v_all_allowed AND v_allowed;
        SET v_reply = CONCAT(v_reply, IF(v_quota = 0, '', ','),
            IF(v_allowed, 1, 0), ',', v_remaining, ',', v_reset, ',', v_retry);
        SET v_quota = v_quota + 1;
    END WHILE;

    IF p_record THEN
        SET v_quota = 0;
        WHILE v_quota < p_quotas DO
            SET v_offset = v_quota * v_width;
            SET v_policy = {prefix}param_v1(p_policies, v_quota + 1);
            -- The rows are locked: they are what the first pass read.
            CALL {prefix}load_v2(v_hash, v_policy, v_now, v_found, v_since, v_amount, v_previous);
            IF v_all_allowed THEN
                CASE p_algorithm
                    WHEN 'fw' THEN CALL {prefix}fw_admit_v2(p_params, v_offset, v_found,
                        v_since, v_amount, v_previous, v_hash, v_policy, v_now, p_cost);
                    WHEN 'sw' THEN CALL {prefix}sw_admit_v3(p_params, v_offset, v_found,
                        v_since, v_amount, v_previous, v_hash, v_policy, v_now, p_cost);
                    WHEN 'swc' THEN CALL {prefix}swc_admit_v2(p_params, v_offset, v_found,
                        v_since, v_amount, v_previous, v_hash, v_policy, v_now, p_cost);
                    WHEN 'tb' THEN CALL {prefix}tb_admit_v2(p_params, v_offset, v_found,
                        v_since, v_amount, v_previous, v_hash, v_policy, v_now, p_cost);
                    ELSE CALL {prefix}lb_admit_v2(p_params, v_offset, v_found,
                        v_since, v_amount, v_previous, v_hash, v_policy, v_now, p_cost);
                END CASE;
            ELSEIF p_algorithm = 'tb' AND NOT v_found THEN
                CALL {prefix}tb_first_rejection_v2(p_params, v_offset, v_hash, v_policy, v_now);
            END IF;
            -- A rejection stores nothing, and the sliding log keeps everything in its log: remove
            -- the placeholder it did not replace (by its whole primary key, so no other
            -- policy's row of the key is waited on).
            IF NOT v_all_allowed OR p_algorithm = 'sw' THEN
                DELETE FROM {prefix}state_v2
                WHERE key_hash = v_hash AND policy = v_policy AND expires_at_ms = 0;
            END IF;
            SET v_quota = v_quota + 1;
        END WHILE;
    END IF;
    COMMIT;
    SELECT v_reply AS reply;
END
-- //
-- Forgets every state and log entry of a key, of every policy.
CREATE PROCEDURE IF NOT EXISTS {prefix}reset_v3(IN p_key LONGBLOB)
MODIFIES SQL DATA
BEGIN
    DECLARE v_hash BINARY(32) DEFAULT UNHEX(SHA2(p_key, 256));
    DECLARE EXIT HANDLER FOR SQLEXCEPTION
    BEGIN
        ROLLBACK;
        RESIGNAL;
    END;
    SET TRANSACTION ISOLATION LEVEL READ COMMITTED;
    START TRANSACTION;
    DELETE FROM {prefix}state_v2 WHERE key_hash = v_hash;
    DELETE FROM {prefix}log_v3 WHERE key_hash = v_hash;
    COMMIT;
END
