-- API usage told apart (issue 20). `api_usage_daily.model` held the model of an LLM call but the
-- endpoint of any other call, and a rate-limit reading was a row of 0 calls with model '*'.
-- Calls now go to api_calls_daily, with `model` (LLM calls) and `endpoint` (the others) in
-- columns of their own, and readings to rate_limit_readings_daily, per day and provider.
--
-- Rolling upgrade (and rollback): replicas of the previous version keep inserting into
-- api_usage_daily, and its API keeps reading it. It stays as they know it, and a trigger
-- routes each row they insert to the new tables too, the way this migration copies the rows
-- already there, before their `ON CONFLICT (day, provider, model)` merges it as before: in
-- their flush's one transaction, once per row. This version neither reads nor writes it; a
-- later migration drops it with the trigger.
SET LOCAL lock_timeout = '30s';

-- CPU time the logger never measured (issue 20, too): its envelopes said `"cpuTime": 0`, which
-- was stored as 0 ms and counted as a zero in the hourly CPU sketches, so a Python service's
-- CPU p95 read 0. The zeros of the envelope rows still stored leave the sketches of their hours
-- (and of those hours' totals); the rows keep their 0 (rewriting them all may take long:
-- docs/operations.md gives the UPDATE), and hours older than the raw rows' retention keep
-- theirs. First, so that the scan holds no lock a flush waits for.
CREATE TEMPORARY TABLE unmeasured_cpu ON COMMIT DROP AS
SELECT date_trunc('hour', ts, 'UTC') AS hour, script, event_type, count(*) AS n
FROM tail_events WHERE source = 'envelope' AND cpu_ms = 0
GROUP BY 1, 2, 3;
INSERT INTO unmeasured_cpu
SELECT hour, script, '*', sum(n) FROM unmeasured_cpu GROUP BY 1, 2
UNION ALL
SELECT hour, '*', '*', sum(n) FROM unmeasured_cpu GROUP BY 1;
-- The rollup rows locked in key order, the order every flush merges them in.
SELECT count(*) FROM (
    SELECT 1 FROM tail_metrics_hourly m JOIN unmeasured_cpu u USING (hour, script, event_type)
    ORDER BY m.hour, m.script, m.event_type FOR UPDATE OF m
) AS locked;
UPDATE tail_metrics_hourly m
SET cpu_sketch = CASE
        WHEN (m.cpu_sketch->>'z')::bigint > u.n
        THEN jsonb_set(m.cpu_sketch, '{z}', to_jsonb((m.cpu_sketch->>'z')::bigint - u.n))
        ELSE m.cpu_sketch - 'z' END
FROM unmeasured_cpu u
WHERE (m.hour, m.script, m.event_type) = (u.hour, u.script, u.event_type)
  AND m.cpu_sketch ? 'z';

CREATE TABLE api_calls_daily (
    day                 date    NOT NULL,
    provider            text    NOT NULL,
    model               text,   -- an LLM call's model; NULL for every other call
    endpoint            text,   -- any other call's endpoint; NULL for LLM calls, or if none
    calls               bigint  NOT NULL,
    failures            bigint  NOT NULL,
    rate_limited        bigint  NOT NULL,  -- rate-limited calls (429, or 0 remaining)
    tokens_in           bigint  NOT NULL,  -- input tokens not read from or written to a cache
    tokens_out          bigint  NOT NULL,
    cache_read_tokens   bigint  NOT NULL,
    cache_write_tokens  bigint  NOT NULL,
    cost_usd            numeric(18, 6),
    unpriced_calls      bigint  NOT NULL,
    CHECK (model IS NULL OR endpoint IS NULL),
    -- NULLs equal, so that the calls that name no endpoint merge into one row.
    CONSTRAINT api_calls_daily_key UNIQUE NULLS NOT DISTINCT (day, provider, model, endpoint)
);

-- What rate-limit readings said (a line such as `github ratelimit remaining=4981 limit=5000`, or
-- the rate-limit fields of a call), per day and provider. Never counted as calls.
CREATE TABLE rate_limit_readings_daily (
    day            date        NOT NULL,
    provider       text        NOT NULL,
    limited        bigint      NOT NULL,  -- readings that said the limit was reached
    remaining      bigint,                -- the newest reading's remaining count (by event time)
    remaining_at   timestamptz,           -- and that reading's time
    largest_limit  bigint,                -- the largest limit a reading reported
    latest_reset   timestamptz,           -- the latest reset or retry-after moment reported
    PRIMARY KEY (day, provider)
);

-- One row of the previous version, routed. A row is a reading when its model is '*' and it
-- counts no call. Otherwise its `model` is a model exactly when it has a cost or unpriced
-- calls: the previous version priced every call that named a model, or counted it unpriced,
-- and did neither for a call without one. The rate-limit fields a call row carried are a
-- reading of its provider.
CREATE FUNCTION api_usage_daily_route(legacy api_usage_daily) RETURNS void
LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
DECLARE
    reading boolean := legacy.model = '*' AND legacy.calls = 0;
    llm boolean := legacy.cost_usd IS NOT NULL OR legacy.unpriced_calls > 0;
BEGIN
    IF NOT reading THEN
        INSERT INTO api_calls_daily AS u (day, provider, model, endpoint, calls, failures,
            rate_limited, tokens_in, tokens_out, cache_read_tokens, cache_write_tokens,
            cost_usd, unpriced_calls)
        VALUES (legacy.day, legacy.provider,
                CASE WHEN llm THEN legacy.model END,
                CASE WHEN NOT llm THEN nullif(legacy.model, '') END,
                legacy.calls, legacy.failures, legacy.rate_limited, legacy.tokens_in,
                legacy.tokens_out, legacy.cache_read_tokens, legacy.cache_write_tokens,
                legacy.cost_usd, legacy.unpriced_calls)
        ON CONFLICT (day, provider, model, endpoint) DO UPDATE SET
            calls = u.calls + excluded.calls,
            failures = u.failures + excluded.failures,
            rate_limited = u.rate_limited + excluded.rate_limited,
            tokens_in = u.tokens_in + excluded.tokens_in,
            tokens_out = u.tokens_out + excluded.tokens_out,
            cache_read_tokens = u.cache_read_tokens + excluded.cache_read_tokens,
            cache_write_tokens = u.cache_write_tokens + excluded.cache_write_tokens,
            cost_usd = CASE WHEN u.cost_usd IS NULL THEN excluded.cost_usd
                            WHEN excluded.cost_usd IS NULL THEN u.cost_usd
                            ELSE u.cost_usd + excluded.cost_usd END,
            unpriced_calls = u.unpriced_calls + excluded.unpriced_calls;
    END IF;
    IF reading OR legacy.rate_limit_remaining IS NOT NULL OR legacy.rate_limit_limit IS NOT NULL
       OR legacy.rate_limit_reset IS NOT NULL THEN
        INSERT INTO rate_limit_readings_daily AS r (day, provider, limited, remaining,
            remaining_at, largest_limit, latest_reset)
        VALUES (legacy.day, legacy.provider,
                -- a call row's count is of calls; its newest reading says whether one was at 0
                CASE WHEN reading THEN legacy.rate_limited
                     ELSE (coalesce(legacy.rate_limit_remaining, 1) = 0)::int END,
                legacy.rate_limit_remaining,
                CASE WHEN legacy.rate_limit_remaining IS NOT NULL
                     THEN legacy.rate_limit_seen_at END,
                legacy.rate_limit_limit, legacy.rate_limit_reset)
        ON CONFLICT (day, provider) DO UPDATE SET
            limited = r.limited + excluded.limited,
            remaining = CASE
                WHEN excluded.remaining_at >= coalesce(r.remaining_at, '-infinity')
                THEN excluded.remaining ELSE r.remaining END,
            remaining_at = greatest(r.remaining_at, excluded.remaining_at),
            largest_limit = greatest(r.largest_limit, excluded.largest_limit),
            latest_reset = greatest(r.latest_reset, excluded.latest_reset);
    END IF;
END
$$;

CREATE FUNCTION api_usage_daily_insert() RETURNS trigger
LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
BEGIN
    PERFORM api_usage_daily_route(NEW);
    RETURN NEW;
END
$$;

-- Before the rows are copied: a previous replica's flush waits for this migration's commit,
-- and is then routed too (CREATE TRIGGER locks the table against inserts until then).
CREATE TRIGGER api_usage_daily_route BEFORE INSERT ON api_usage_daily
FOR EACH ROW EXECUTE FUNCTION api_usage_daily_insert();

-- The rows stored so far, in key order (the order every flush locks rows in).
SELECT api_usage_daily_route(u) FROM api_usage_daily u ORDER BY day, provider, model;

COMMENT ON TABLE api_usage_daily IS
    'Replaced by api_calls_daily and rate_limit_readings_daily (migration 0011); kept for '
    'replicas and the API of the previous version, whose rows a trigger copies there.';
