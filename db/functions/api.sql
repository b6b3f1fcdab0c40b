-- Functions of the REST API. Re-applied by every migrate (CREATE OR REPLACE only).

-- Count one hit in a sliding window of p_window holding at most p_limit hits. Returns 0 when
-- the hit was counted, else the seconds until the oldest hit in the window leaves it (the
-- hit is then not counted). The bucket's row lock, held to commit, serializes hits from
-- every node, so two concurrent requests cannot both take the last slot.
CREATE OR REPLACE FUNCTION api.rate_hit_v1(p_bucket text, p_limit integer, p_window interval)
RETURNS double precision
LANGUAGE plpgsql AS $$
DECLARE
    v_now timestamptz := clock_timestamp();
    v_hits timestamptz[];
BEGIN
    INSERT INTO api.rate_limits (bucket) VALUES (p_bucket) ON CONFLICT (bucket) DO NOTHING;
    SELECT hits INTO v_hits FROM api.rate_limits WHERE bucket = p_bucket FOR UPDATE;
    v_hits := ARRAY(SELECT h FROM unnest(v_hits) AS h WHERE h > v_now - p_window ORDER BY h);
    IF cardinality(v_hits) >= p_limit THEN
        RETURN greatest(extract(epoch FROM
            v_hits[cardinality(v_hits) - p_limit + 1] + p_window - v_now)::double precision,
            0.001);
    END IF;
    UPDATE api.rate_limits SET hits = v_hits || v_now, updated_at = v_now
    WHERE bucket = p_bucket;
    RETURN 0;
END
$$;

-- Forget idempotency keys older than p_keys_ttl and buckets idle for longer than p_window.
CREATE OR REPLACE FUNCTION api.prune_v1(p_keys_ttl interval, p_window interval)
RETURNS void
LANGUAGE sql AS $$
    DELETE FROM api.idempotency_keys WHERE created_at < now() - p_keys_ttl;
    DELETE FROM api.rate_limits WHERE updated_at < now() - p_window;
$$;
