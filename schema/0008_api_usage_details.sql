-- API usage details (issue 16): prompt-cache tokens, and what rate-limit readings say besides
-- the remaining count. Columns are added at the end, nullable or with a default, so replicas
-- still running the previous version (which insert the first twelve columns) keep working.
--
-- rate_limit_remaining becomes bigint: the extractor keeps counts up to 10^18 (a token
-- budget's remaining count passes 2^31), and a value the column cannot hold would fail the
-- rollup merge of its batch on every retry.
ALTER TABLE api_usage_daily
    ALTER COLUMN rate_limit_remaining TYPE bigint,
    -- Input tokens read from and written to a prompt cache; tokens_in counts the others.
    ADD COLUMN cache_read_tokens bigint NOT NULL DEFAULT 0,
    ADD COLUMN cache_write_tokens bigint NOT NULL DEFAULT 0,
    -- The largest rate limit a reading reported that day (X-RateLimit-Limit and the like).
    ADD COLUMN rate_limit_limit bigint,
    -- The latest moment a reading said the limit resets, or to retry after (Retry-After).
    ADD COLUMN rate_limit_reset timestamptz;
