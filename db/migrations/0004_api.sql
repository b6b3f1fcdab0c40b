-- The REST API's own state: rate limits and idempotency keys. In PostgreSQL so that every
-- process and every machine serving the API sees the same counts and the same keys.

CREATE SCHEMA IF NOT EXISTS api;

-- Sliding-window rate limits: one row per bucket ('comments:<user uuid>', ...) holding the
-- times of its hits inside the window. The row lock serializes a bucket's hits across nodes.
-- Unlogged: after a crash every bucket starts empty, which only forgives a minute of hits.
CREATE UNLOGGED TABLE IF NOT EXISTS api.rate_limits (
    bucket     text PRIMARY KEY,
    hits       timestamptz[] NOT NULL DEFAULT '{}',
    updated_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS rate_limits_updated_at_idx ON api.rate_limits (updated_at);

-- Idempotency-Key: one row per (user, key). The row is inserted first in the creating
-- transaction, so a concurrent request with the same key waits on the primary key until the
-- first commits, then finds the stored response; a rolled-back attempt leaves nothing behind.
CREATE TABLE IF NOT EXISTS api.idempotency_keys (
    user_id     uuid NOT NULL REFERENCES public.users (id) ON DELETE CASCADE,
    key         text NOT NULL,
    fingerprint text NOT NULL,   -- sha256 of what the request asked for
    status      smallint,
    response    jsonb,
    created_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (user_id, key)
);
CREATE INDEX IF NOT EXISTS idempotency_keys_created_at_idx ON api.idempotency_keys (created_at);
