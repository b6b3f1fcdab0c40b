-- Functions of the REST API. Re-applied by migrate when changed (CREATE OR REPLACE only).

-- A Sanctum token's deadline (Laravel stores naive UTC times): its expires_at or, with
-- Sanctum's global `expiration` (minutes; NULL: none), created_at + expiration, whichever
-- comes first (least() ignores NULLs); NULL: it never expires. The one definition, for the
-- REST API's and the realtime side's queries (api/sql/auth.sql, api/sql/realtime.sql); one
-- SQL expression, which PostgreSQL inlines into them.
CREATE OR REPLACE FUNCTION api.token_deadline_v1(
    p_expires_at timestamp, p_created_at timestamp, p_expiration_minutes integer)
RETURNS timestamptz
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT least(p_expires_at, p_created_at + make_interval(mins => p_expiration_minutes))
        AT TIME ZONE 'UTC'
$$;

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

-- Forget idempotency keys older than p_keys_ttl, and buckets and typing states idle for
-- longer than p_window.
CREATE OR REPLACE FUNCTION api.prune_v1(p_keys_ttl interval, p_window interval)
RETURNS void
LANGUAGE sql AS $$
    DELETE FROM api.idempotency_keys WHERE created_at < now() - p_keys_ttl;
    DELETE FROM api.rate_limits WHERE updated_at < now() - p_window;
    DELETE FROM api.typing WHERE stamp < now() - p_window;
$$;

-- A REST client says it is (or stopped) typing in p_session (api/presence.py). As the
-- realtime transports do per connection (api/typing_state.py), here per user over every
-- process: a `true` repeated within p_refresh of the last publication only extends the
-- indicator, a `false` when none is on says nothing, and publications spend a token bucket
-- (p_rate per second, at most p_burst saved up). outcome: a refusal (api.access_refusal_v1),
-- 'publish' (user.typing sent), 'quiet' (nothing new to say), or 'rate_limited' (nothing
-- done; wait: seconds until a token). The row lock serializes one user's typing in a
-- session across nodes.
CREATE OR REPLACE FUNCTION api.typing_v1(
    p_session uuid, p_user_id uuid, p_is_typing boolean, p_for interval, p_origin text,
    p_refresh interval, p_rate double precision, p_burst integer,
    OUT outcome text, OUT at timestamptz, OUT wait double precision)
LANGUAGE plpgsql AS $$
DECLARE
    p_topic text := 'session:' || p_session;
    v_now timestamptz := clock_timestamp();
    v_state api.typing;
    v_active boolean;
    v_tokens double precision;
BEGIN
    outcome := api.access_refusal_v1(p_session, p_user_id);
    IF outcome IS NOT NULL THEN
        RETURN;
    END IF;
    INSERT INTO api.typing (topic, user_id, tokens, stamp)
    VALUES (p_topic, p_user_id, p_burst, v_now)
    ON CONFLICT (topic, user_id) DO NOTHING;
    SELECT * INTO v_state FROM api.typing
    WHERE topic = p_topic AND user_id = p_user_id FOR UPDATE;
    v_active := v_state.active AND v_state.until > v_now;
    at := v_now;
    IF p_is_typing AND v_active AND v_now - v_state.published_at < p_refresh THEN
        UPDATE api.typing SET until = v_now + p_for
        WHERE topic = p_topic AND user_id = p_user_id;
        UPDATE realtime.presence SET typing_until = v_now + p_for, last_seen = v_now
        WHERE topic = p_topic AND user_id = p_user_id;
        outcome := 'quiet';
        RETURN;
    END IF;
    IF NOT p_is_typing AND NOT v_active THEN
        -- Another transport's `true` may still show in the users list: not any more.
        UPDATE realtime.presence SET typing_until = NULL
        WHERE topic = p_topic AND user_id = p_user_id AND typing_until IS NOT NULL;
        outcome := 'quiet';
        RETURN;
    END IF;
    v_tokens := least(p_burst::double precision,
                      v_state.tokens + extract(epoch FROM v_now - v_state.stamp) * p_rate);
    IF v_tokens < 1 THEN
        outcome := 'rate_limited';
        wait := (1 - v_tokens) / p_rate;
        RETURN;
    END IF;
    UPDATE api.typing
    SET active = p_is_typing, published_at = v_now,
        until = CASE WHEN p_is_typing THEN v_now + p_for END,
        tokens = v_tokens - 1, stamp = v_now
    WHERE topic = p_topic AND user_id = p_user_id;
    at := realtime.presence_typing_v1(p_topic, p_user_id, p_is_typing, p_for, p_origin);
    outcome := 'publish';
END
$$;

-- The comment writes of the REST API (api/comments.py), each the whole request's
-- transaction in one call: one round trip, where a statement per step took six to eleven.
-- Each checks what the request may do before it writes anything, and answers
-- (outcome, body): 'ok' and the comment as rendered after the writes (the same function as
-- the events, DESIGN §4.3), or a refusal with nothing written: 'session_not_found',
-- 'not_participant', 'comment_not_found', 'forbidden', 'strangers' (body: the mentioned ids
-- that are not participants, in the order given), 'rate_limited' (body: seconds to wait).
-- p_origin (X-Socket-ID) is what the transaction's events carry, for sender exclusion.

-- Why p_user may not read or write p_session: 'session_not_found' (no such session, or
-- soft-deleted), 'not_participant'; NULL when they may. Every REST request on a session asks
-- it (api/access.py), most inside the statement or function that does its work.
CREATE OR REPLACE FUNCTION api.access_refusal_v1(p_session uuid, p_user uuid)
RETURNS text
LANGUAGE plpgsql STABLE AS $$
DECLARE
    v_participant boolean;
BEGIN
    SELECT EXISTS (
               SELECT 1 FROM public.sport_session_participants p
               WHERE p.sport_session_id = s.id AND p.user_id = p_user)
    INTO v_participant
    FROM public.sport_sessions s
    WHERE s.id = p_session AND s.deleted_at IS NULL;
    RETURN CASE WHEN v_participant IS NULL THEN 'session_not_found'
                WHEN NOT v_participant THEN 'not_participant' END;
END
$$;
DROP FUNCTION IF EXISTS api.session_access_v1(uuid, uuid);

-- p_refusal when there is one (the session's, the comment's), else the mentions' (body:
-- the ids among p_users that are not participants, in the order given).
CREATE OR REPLACE FUNCTION api.write_refusal_v1(
    p_refusal text, p_session uuid, p_users uuid[], OUT outcome text, OUT body jsonb)
LANGUAGE plpgsql STABLE AS $$
BEGIN
    outcome := p_refusal;
    IF outcome IS NOT NULL THEN
        RETURN;
    END IF;
    body := (SELECT jsonb_agg(m.id ORDER BY m.n)
             FROM unnest(p_users) WITH ORDINALITY AS m(id, n)
             WHERE NOT EXISTS (
                 SELECT 1 FROM public.sport_session_participants p
                 WHERE p.sport_session_id = p_session AND p.user_id = m.id));
    outcome := CASE WHEN body IS NOT NULL THEN 'strangers' END;
END
$$;
DROP FUNCTION IF EXISTS api.strangers_v1(uuid, uuid[]);

-- Create a comment and its mentions, after the mentions' check and the rate limit's hit
-- (api.rate_hit_v1: a refused creation is not counted).
CREATE OR REPLACE FUNCTION api.create_comment_v1(
    p_session uuid, p_user uuid, p_content text, p_mentions uuid[], p_origin text,
    p_bucket text, p_limit integer, p_window interval, OUT outcome text, OUT body jsonb)
LANGUAGE plpgsql AS $$
DECLARE
    v_wait double precision;
    v_comment public.sport_session_comments;
BEGIN
    SELECT r.outcome, r.body INTO outcome, body
    FROM api.write_refusal_v1(api.access_refusal_v1(p_session, p_user), p_session, p_mentions)
        AS r;
    IF outcome IS NOT NULL THEN
        RETURN;
    END IF;
    v_wait := api.rate_hit_v1(p_bucket, p_limit, p_window);
    IF v_wait > 0 THEN
        outcome := 'rate_limited';
        body := to_jsonb(v_wait);
        RETURN;
    END IF;
    PERFORM set_config('courtside.origin', coalesce(p_origin, ''), true);
    INSERT INTO public.sport_session_comments (sport_session_id, user_id, content)
    VALUES (p_session, p_user, p_content)
    RETURNING * INTO v_comment;
    IF cardinality(p_mentions) > 0 THEN
        INSERT INTO public.sport_session_comment_mentions (comment_id, mentioned_user_id)
        SELECT v_comment.id, u FROM unnest(p_mentions) AS u
        ON CONFLICT ON CONSTRAINT sport_session_comment_mentions_unique DO NOTHING;
    END IF;
    outcome := 'ok';
    body := realtime.comment_json_v1(v_comment);
END
$$;

-- A visible comment of p_session, locked to the end of the transaction, if p_user wrote it.
-- Returns the refusal, or NULL when p_user may change it.
CREATE OR REPLACE FUNCTION api.lock_own_comment_v1(p_session uuid, p_comment uuid, p_user uuid)
RETURNS text
LANGUAGE plpgsql AS $$
DECLARE
    v_refusal text := api.access_refusal_v1(p_session, p_user);
    v_author uuid;
BEGIN
    IF v_refusal IS NOT NULL THEN
        RETURN v_refusal;
    END IF;
    SELECT c.user_id INTO v_author
    FROM public.sport_session_comments c
    WHERE c.id = p_comment AND c.sport_session_id = p_session AND c.deleted_at IS NULL
    FOR UPDATE;
    IF NOT FOUND THEN
        RETURN 'comment_not_found';
    END IF;
    IF v_author IS DISTINCT FROM p_user THEN
        RETURN 'forbidden';
    END IF;
    RETURN NULL;
END
$$;

-- Edit one's own comment: its content, and its mentions unless p_mentions is NULL (mentions
-- kept keep their row and created_at, so their order does not change).
CREATE OR REPLACE FUNCTION api.edit_comment_v1(
    p_session uuid, p_comment uuid, p_user uuid, p_content text, p_mentions uuid[],
    p_origin text, OUT outcome text, OUT body jsonb)
LANGUAGE plpgsql AS $$
DECLARE
    v_comment public.sport_session_comments;
BEGIN
    -- The comment's lock first, then its mentions' check.
    SELECT r.outcome, r.body INTO outcome, body
    FROM api.write_refusal_v1(api.lock_own_comment_v1(p_session, p_comment, p_user), p_session,
                              p_mentions) AS r;
    IF outcome IS NOT NULL THEN
        RETURN;
    END IF;
    PERFORM set_config('courtside.origin', coalesce(p_origin, ''), true);
    IF p_mentions IS NOT NULL THEN
        DELETE FROM public.sport_session_comment_mentions
        WHERE comment_id = p_comment AND NOT (mentioned_user_id = ANY (p_mentions));
        INSERT INTO public.sport_session_comment_mentions (comment_id, mentioned_user_id)
        SELECT p_comment, u FROM unnest(p_mentions) AS u
        ON CONFLICT ON CONSTRAINT sport_session_comment_mentions_unique DO NOTHING;
    END IF;
    UPDATE public.sport_session_comments SET content = p_content, updated_at = now()
    WHERE id = p_comment
    RETURNING * INTO v_comment;
    outcome := 'ok';
    body := realtime.comment_json_v1(v_comment);
END
$$;

-- Soft-delete one's own comment.
CREATE OR REPLACE FUNCTION api.delete_comment_v1(
    p_session uuid, p_comment uuid, p_user uuid, p_origin text, OUT outcome text,
    OUT body jsonb)
LANGUAGE plpgsql AS $$
BEGIN
    outcome := api.lock_own_comment_v1(p_session, p_comment, p_user);
    IF outcome IS NOT NULL THEN
        RETURN;
    END IF;
    PERFORM set_config('courtside.origin', coalesce(p_origin, ''), true);
    UPDATE public.sport_session_comments SET deleted_at = now(), updated_at = now()
    WHERE id = p_comment;
    outcome := 'ok';
END
$$;
