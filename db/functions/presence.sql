-- Presence functions. Re-applied by migrate when changed (CREATE OR REPLACE, and DROP of what a
-- later version replaced).
--
-- online/offline fire once per user and topic, not per connection: every change to a
-- user's rows in a topic takes a transaction-level advisory lock on (topic, user), so two
-- connections of one user joining or leaving at once on two nodes cannot both decide they
-- were the first or the last.

CREATE OR REPLACE FUNCTION realtime.presence_user_json_v1(p_user_id uuid) RETURNS jsonb
LANGUAGE sql STABLE AS $$
    SELECT jsonb_build_object('id', u.id, 'firstname', u.firstname, 'lastname', u.lastname)
    FROM public.users u WHERE u.id = p_user_id
$$;

-- The advisory lock key of a (topic, user): presence_lock_v1 takes it, and batches take
-- theirs in its order (presence_lock_order_v1).
CREATE OR REPLACE FUNCTION realtime.presence_lock_key_v1(p_topic text, p_user_id uuid)
RETURNS bigint
LANGUAGE sql IMMUTABLE AS $$
    SELECT hashtextextended(p_topic || '|' || p_user_id::text, 7)
$$;

CREATE OR REPLACE FUNCTION realtime.presence_lock_v1(p_topic text, p_user_id uuid) RETURNS void
LANGUAGE sql AS $$
    SELECT pg_advisory_xact_lock(realtime.presence_lock_key_v1(p_topic, p_user_id))
$$;

-- The live presence rows of a topic: a row is alive while its node heartbeats (a realtime
-- connection) or until it expires (a REST join). A set-returning SQL function, which the
-- planner inlines into its callers: the node check becomes one hashed lookup per row. (A
-- per-row function ran a query for each row: a list of a topic holding 10,000 connections
-- took ~100 ms, and every join counted its user's rows, so accepting n connections of a few
-- users cost O(n²).)
CREATE OR REPLACE FUNCTION realtime.presence_live_v1(p_topic text)
RETURNS SETOF realtime.presence
LANGUAGE sql STABLE AS $$
    SELECT p.* FROM realtime.presence p
    WHERE p.topic = p_topic
      AND CASE WHEN p.expires_at IS NOT NULL THEN p.expires_at > now()
               ELSE p.node_id IN (SELECT n.node_id FROM realtime.nodes n) END
$$;

-- Whether the user has a live row in the topic: the first one found answers.
CREATE OR REPLACE FUNCTION realtime.presence_online_v1(p_topic text, p_user_id uuid)
RETURNS boolean
LANGUAGE sql STABLE AS $$
    SELECT EXISTS (
        SELECT 1 FROM realtime.presence_live_v1(p_topic) p WHERE p.user_id = p_user_id)
$$;

-- Join (or renew) a presence row. p_ttl NULL: a realtime connection of node p_node_id;
-- else a REST join alive for p_ttl. Returns true when the user just came online, in which
-- case `user.online` was published on the topic.
CREATE OR REPLACE FUNCTION realtime.presence_join_v1(
    p_topic text, p_user_id uuid, p_conn_id text, p_node_id text, p_ttl interval)
RETURNS boolean
LANGUAGE plpgsql AS $$
DECLARE
    was_online boolean;
    v_joined timestamptz;
BEGIN
    PERFORM realtime.presence_lock_v1(p_topic, p_user_id);
    was_online := realtime.presence_online_v1(p_topic, p_user_id);
    INSERT INTO realtime.presence AS p (topic, user_id, conn_id, node_id, expires_at)
    VALUES (p_topic, p_user_id, p_conn_id, p_node_id, now() + p_ttl)
    ON CONFLICT (topic, user_id, conn_id) DO UPDATE
        SET node_id = excluded.node_id, expires_at = excluded.expires_at, last_seen = now(),
            -- a row that had expired starts a new stay: joinedAt is when they came back
            joined_at = CASE WHEN was_online THEN p.joined_at ELSE now() END
    RETURNING p.joined_at INTO v_joined;
    IF NOT was_online THEN
        PERFORM realtime.publish_ephemeral_v1(p_topic, 'user.online', jsonb_build_object(
            'userId', p_user_id,
            'user', realtime.presence_user_json_v1(p_user_id),
            'joinedAt', realtime.ts_v1(v_joined)));
    END IF;
    RETURN NOT was_online;
END
$$;

-- A batch of presence changes (topics, users and connections, position by position) in the
-- order of their lock keys (presence_lock_key_v1), then of their positions: every
-- batch takes its locks in this one global order, so two batches, whatever they do, cannot
-- deadlock on each other. ord: the 1-based position in the input.
CREATE OR REPLACE FUNCTION realtime.presence_lock_order_v1(
    p_topics text[], p_user_ids uuid[], p_conn_ids text[])
RETURNS TABLE (ord bigint, topic text, user_id uuid, conn_id text)
LANGUAGE sql IMMUTABLE AS $$
    SELECT t.ord, t.topic, t.user_id, t.conn_id
    FROM unnest(p_topics, p_user_ids, p_conn_ids) WITH ORDINALITY
        AS t(topic, user_id, conn_id, ord)
    ORDER BY realtime.presence_lock_key_v1(t.topic, t.user_id), t.ord
$$;

-- Join many realtime connections of node p_node_id at once (bridge/joins.py: connections
-- that subscribed together, as after a deploy or a network blip), in one transaction, in
-- presence_lock_order_v1's order. Returns, for each position of the input (1-based), whether
-- that join brought its user online.
CREATE OR REPLACE FUNCTION realtime.presence_join_many_v1(
    p_topics text[], p_user_ids uuid[], p_conn_ids text[], p_node_id text)
RETURNS TABLE (ord bigint, came_online boolean)
LANGUAGE plpgsql AS $$
DECLARE
    r record;
BEGIN
    FOR r IN SELECT * FROM realtime.presence_lock_order_v1(p_topics, p_user_ids, p_conn_ids)
    LOOP
        ord := r.ord;
        came_online := realtime.presence_join_v1(r.topic, r.user_id, r.conn_id, p_node_id, NULL);
        RETURN NEXT;
    END LOOP;
END
$$;

-- A REST join (api/presence.py): join, and the row's joinedAt as the API shows it, in one
-- call and one round trip. PL/pgSQL: its SELECT runs after the join, and sees its row.
CREATE OR REPLACE FUNCTION realtime.presence_rest_join_v1(
    p_topic text, p_user_id uuid, p_conn_id text, p_ttl interval)
RETURNS text
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM realtime.presence_join_v1(p_topic, p_user_id, p_conn_id, NULL, p_ttl);
    RETURN (SELECT realtime.ts_v1(p.joined_at) FROM realtime.presence p
            WHERE p.topic = p_topic AND p.user_id = p_user_id AND p.conn_id = p_conn_id);
END
$$;

-- Publish `user.offline` for a user with no live row left in a topic; true if published.
CREATE OR REPLACE FUNCTION realtime.presence_settle_v1(p_topic text, p_user_id uuid)
RETURNS boolean
LANGUAGE plpgsql AS $$
BEGIN
    IF realtime.presence_online_v1(p_topic, p_user_id) THEN
        RETURN false;
    END IF;
    PERFORM realtime.publish_ephemeral_v1(p_topic, 'user.offline', jsonb_build_object(
        'userId', p_user_id,
        'user', realtime.presence_user_json_v1(p_user_id),
        'leftAt', realtime.ts_v1(now())));
    RETURN true;
END
$$;

-- Leave: drop the row; returns true when the user just went offline (`user.offline` sent).
CREATE OR REPLACE FUNCTION realtime.presence_leave_v1(
    p_topic text, p_user_id uuid, p_conn_id text)
RETURNS boolean
LANGUAGE plpgsql AS $$
DECLARE
    was_online boolean;
BEGIN
    PERFORM realtime.presence_lock_v1(p_topic, p_user_id);
    was_online := realtime.presence_online_v1(p_topic, p_user_id);
    DELETE FROM realtime.presence
    WHERE topic = p_topic AND user_id = p_user_id AND conn_id = p_conn_id;
    IF NOT was_online THEN
        RETURN false;
    END IF;
    RETURN realtime.presence_settle_v1(p_topic, p_user_id);
END
$$;

-- Leave many at once (bridge/leaves.py: a node's connections that closed together), in one
-- transaction, in presence_lock_order_v1's order. The locks are held to commit, which makes
-- `user.offline` and a concurrent join on another node still agree. Returns, for each
-- position of the input (1-based), whether that leave took its user offline.
CREATE OR REPLACE FUNCTION realtime.presence_leave_many_v1(
    p_topics text[], p_user_ids uuid[], p_conn_ids text[])
RETURNS TABLE (ord bigint, went_offline boolean)
LANGUAGE plpgsql AS $$
DECLARE
    r record;
BEGIN
    FOR r IN SELECT * FROM realtime.presence_lock_order_v1(p_topics, p_user_ids, p_conn_ids)
    LOOP
        ord := r.ord;
        went_offline := realtime.presence_leave_v1(r.topic, r.user_id, r.conn_id);
        RETURN NEXT;
    END LOOP;
END
$$;

-- Typing: publishes `user.typing` and remembers it for p_for, so the list shows isTyping.
CREATE OR REPLACE FUNCTION realtime.presence_typing_v1(
    p_topic text, p_user_id uuid, p_is_typing boolean, p_for interval, p_origin text DEFAULT NULL)
RETURNS timestamptz
LANGUAGE plpgsql AS $$
DECLARE
    v_now timestamptz := clock_timestamp();
BEGIN
    UPDATE realtime.presence
    SET typing_until = CASE WHEN p_is_typing THEN v_now + p_for END, last_seen = v_now
    WHERE topic = p_topic AND user_id = p_user_id;
    PERFORM realtime.publish_ephemeral_v1(p_topic, 'user.typing', jsonb_build_object(
        'userId', p_user_id,
        'user', realtime.presence_user_json_v1(p_user_id),
        'isTyping', p_is_typing,
        'timestamp', realtime.ts_v1(v_now)), p_origin);
    RETURN v_now;
END
$$;

-- The users online in a topic, in the seed's shape, first arrivals first.
CREATE OR REPLACE FUNCTION realtime.presence_list_v1(p_topic text) RETURNS SETOF jsonb
LANGUAGE sql STABLE AS $$
    SELECT jsonb_build_object(
        'id', u.id, 'firstname', u.firstname, 'lastname', u.lastname, 'avatar', u.avatar,
        'isTyping', coalesce(bool_or(p.typing_until > now()), false),
        'lastSeen', realtime.ts_v1(max(p.last_seen)))
    FROM realtime.presence_live_v1(p_topic) p
    JOIN public.users u ON u.id = p.user_id
    GROUP BY u.id
    ORDER BY min(p.joined_at), u.id
$$;

-- A node says it is alive.
CREATE OR REPLACE FUNCTION realtime.node_heartbeat_v1(p_node_id text) RETURNS void
LANGUAGE sql AS $$
    INSERT INTO realtime.nodes (node_id) VALUES (p_node_id)
    ON CONFLICT (node_id) DO UPDATE SET heartbeat_at = now()
$$;

-- A node leaving cleanly: its rows go, and its users go offline where that was their last row.
CREATE OR REPLACE FUNCTION realtime.node_leave_v1(p_node_id text) RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
    r record;
    n integer := 0;
BEGIN
    DELETE FROM realtime.nodes WHERE node_id = p_node_id;
    -- Each (topic, user) once, in presence_lock_order_v1's order (see presence_reap_v1).
    FOR r IN
        WITH gone AS (
            DELETE FROM realtime.presence WHERE node_id = p_node_id RETURNING topic, user_id)
        SELECT DISTINCT g.topic, g.user_id, realtime.presence_lock_key_v1(g.topic, g.user_id)
        FROM gone g ORDER BY 3, 1, 2
    LOOP
        PERFORM realtime.presence_lock_v1(r.topic, r.user_id);
        IF realtime.presence_settle_v1(r.topic, r.user_id) THEN
            n := n + 1;
        END IF;
    END LOOP;
    RETURN n;
END
$$;

-- Run by every live node now and then: forget nodes whose heartbeat is older than
-- p_node_ttl (killed, partitioned) and REST joins past their TTL, and send `user.offline`
-- for each user who had no other live row. Returns how many went offline.
CREATE OR REPLACE FUNCTION realtime.presence_reap_v1(p_node_ttl interval) RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
    r record;
    n integer := 0;
BEGIN
    DELETE FROM realtime.nodes WHERE heartbeat_at < now() - p_node_ttl;
    -- Each (topic, user) once: settled per deleted row, a user with n connections was
    -- settled n times, each rescanning their deleted rows (O(n²); 10 s of CPU for 10,000),
    -- and counted n times. In presence_lock_order_v1's order, as every batch takes them.
    FOR r IN
        WITH gone AS (
            DELETE FROM realtime.presence p
            WHERE (p.expires_at IS NOT NULL AND p.expires_at <= now())
               OR (p.expires_at IS NULL
                   AND NOT EXISTS (SELECT 1 FROM realtime.nodes n WHERE n.node_id = p.node_id))
            RETURNING p.topic, p.user_id)
        SELECT DISTINCT g.topic, g.user_id, realtime.presence_lock_key_v1(g.topic, g.user_id)
        FROM gone g ORDER BY 3, 1, 2
    LOOP
        PERFORM realtime.presence_lock_v1(r.topic, r.user_id);
        IF realtime.presence_settle_v1(r.topic, r.user_id) THEN
            n := n + 1;
        END IF;
    END LOOP;
    RETURN n;
END
$$;

-- Replaced by presence_live_v1 and presence_online_v1.
DROP FUNCTION IF EXISTS realtime.presence_online_count_v1(text, uuid);
DROP FUNCTION IF EXISTS realtime.presence_alive_v1(realtime.presence);
