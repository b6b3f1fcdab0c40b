-- The event pipeline: every committed change to a comment or to its mentions, by any SQL
-- client, becomes exactly one row in realtime.events and one NOTIFY, in the same transaction.
--
-- Re-applied by every `courtside migrate`: everything here is CREATE OR REPLACE, or dropped
-- and created again. Function names carry a version; a changed signature gets a new one.
--
-- How a transaction flows through it:
--   1. Row (and TRUNCATE) triggers on the comment and mention tables record each comment the
--      transaction touches in realtime.pending_comments, once. They read nothing and lock
--      nothing, so they add no lock-order hazard to the application's own writes.
--   2. A deferred constraint trigger on pending_comments fires at commit. Its first firing in
--      the transaction takes the topic locks of every touched comment in one global order,
--      then, in later statements, reads each comment as it finally stands and what
--      subscribers were last told of it (realtime.comment_state), emits at most one event
--      per comment, and clears the transaction's rows. Later firings find nothing to do.

-- Laravel's JSON timestamp format: 2025-01-20T10:30:00.000000Z
CREATE OR REPLACE FUNCTION realtime.ts_v1(ts timestamptz) RETURNS text
LANGUAGE sql STABLE PARALLEL SAFE AS $$
    SELECT to_char(ts AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"')
$$;

-- The one rendering of a comment, shared by the REST API and the events (DESIGN §4.3).
-- PL/pgSQL rather than SQL: a PL/pgSQL function keeps its plans for the whole session,
-- where a non-inlined SQL function is planned again in every transaction that calls it.
CREATE OR REPLACE FUNCTION realtime.comment_json_v1(c public.sport_session_comments)
RETURNS jsonb
LANGUAGE plpgsql STABLE AS $$
BEGIN
    RETURN jsonb_build_object(
        'id', c.id,
        'content', c.content,
        'user', (
            SELECT jsonb_build_object(
                'id', u.id, 'firstname', u.firstname, 'lastname', u.lastname, 'avatar', u.avatar)
            FROM public.users u WHERE u.id = c.user_id),
        'mentions', coalesce((
            SELECT jsonb_agg(
                jsonb_build_object('id', mu.id, 'firstname', mu.firstname, 'lastname', mu.lastname)
                ORDER BY m.created_at, mu.lastname, mu.firstname, mu.id)
            FROM public.sport_session_comment_mentions m
            JOIN public.users mu ON mu.id = m.mentioned_user_id
            WHERE m.comment_id = c.id), '[]'::jsonb),
        'created_at', realtime.ts_v1(c.created_at),
        'updated_at', realtime.ts_v1(c.updated_at));
END
$$;

-- Lock the counters of these topics, creating missing ones, always in topic order: two
-- transactions that touch the same topics in different orders must not deadlock at commit.
-- Topics that already exist (nearly always) cost one statement.
CREATE OR REPLACE FUNCTION realtime.lock_topics_v1(p_topics text[]) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    locked bigint;
BEGIN
    PERFORM 1 FROM realtime.streams WHERE topic = ANY (p_topics) ORDER BY topic FOR UPDATE;
    GET DIAGNOSTICS locked = ROW_COUNT;
    IF locked < (SELECT count(DISTINCT t) FROM unnest(p_topics) AS t) THEN
        INSERT INTO realtime.streams (topic)
        SELECT DISTINCT t FROM unnest(p_topics) AS t ORDER BY t
        ON CONFLICT (topic) DO NOTHING;
        PERFORM 1 FROM realtime.streams WHERE topic = ANY (p_topics) ORDER BY topic FOR UPDATE;
    END IF;
END
$$;

-- Append one durable event and send its notification. The caller holds the topic's lock
-- (lock_topics_v1) from before it read what the payload says, so seq order is commit order
-- and the newest event is never older than the state it follows.
CREATE OR REPLACE FUNCTION realtime.emit_v1(
    p_topic text, p_type text, p_payload jsonb, p_origin text DEFAULT NULL)
RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
    v_seq bigint;
    msg text;
BEGIN
    WITH counter AS (
        UPDATE realtime.streams SET last_seq = last_seq + 1 WHERE topic = p_topic
        RETURNING last_seq)
    INSERT INTO realtime.events (topic, seq, type, payload, origin)
    SELECT p_topic, last_seq, p_type, p_payload, p_origin FROM counter
    RETURNING seq INTO v_seq;
    IF v_seq IS NULL THEN  -- a topic nobody locked or created yet
        PERFORM realtime.lock_topics_v1(ARRAY[p_topic]);
        RETURN realtime.emit_v1(p_topic, p_type, p_payload, p_origin);
    END IF;
    -- The whole event when it fits, else only its address, which the bridge reads from the
    -- log: NOTIFY refuses 8000 bytes or more, and a payload must never make a write fail.
    msg := jsonb_build_object(
        'k', 'e', 't', p_topic, 's', v_seq, 'e', p_type, 'o', p_origin, 'd', p_payload)::text;
    IF octet_length(msg) > 7500 THEN
        msg := jsonb_build_object('k', 'e', 't', p_topic, 's', v_seq)::text;
    END IF;
    PERFORM pg_notify('courtside', msg);
    RETURN v_seq;
END
$$;

-- Ephemeral events (typing, online, offline): a notification only, no seq, no log row.
CREATE OR REPLACE FUNCTION realtime.publish_ephemeral_v1(
    p_topic text, p_type text, p_payload jsonb, p_origin text DEFAULT NULL)
RETURNS void
LANGUAGE sql AS $$
    SELECT pg_notify('courtside', jsonb_build_object(
        'k', 'x', 't', p_topic, 'e', p_type, 'o', p_origin, 'd', p_payload)::text)
$$;

-- Control notifications (revocations, removals) that every node acts on.
CREATE OR REPLACE FUNCTION realtime.publish_control_v1(p_type text, p_payload jsonb)
RETURNS void
LANGUAGE sql AS $$
    SELECT pg_notify('courtside', jsonb_build_object('k', 'c', 'e', p_type, 'd', p_payload)::text)
$$;

-- Record that this transaction touched a comment (first touch only).
CREATE OR REPLACE FUNCTION realtime.stage_comment_v1(p_comment_id uuid, p_inserted boolean)
RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO realtime.pending_comments (xid, comment_id, inserted)
    VALUES (pg_current_xact_id(), p_comment_id, p_inserted)
    ON CONFLICT DO NOTHING;
END
$$;

CREATE OR REPLACE FUNCTION realtime.stage_comment_row_v1() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        PERFORM realtime.stage_comment_v1(NEW.id, true);
        RETURN NULL;
    END IF;
    PERFORM realtime.stage_comment_v1(OLD.id, false);
    IF TG_OP = 'UPDATE' AND NEW.id IS DISTINCT FROM OLD.id THEN
        PERFORM realtime.stage_comment_v1(NEW.id, true);
    END IF;
    RETURN NULL;
END
$$;

CREATE OR REPLACE FUNCTION realtime.stage_mention_row_v1() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP IN ('INSERT', 'UPDATE') THEN
        PERFORM realtime.stage_comment_v1(NEW.comment_id, false);
    END IF;
    IF TG_OP IN ('DELETE', 'UPDATE') THEN
        PERFORM realtime.stage_comment_v1(OLD.comment_id, false);
    END IF;
    RETURN NULL;
END
$$;

-- TRUNCATE fires no row triggers: record every comment it is about to remove.
CREATE OR REPLACE FUNCTION realtime.stage_truncate_v1() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF TG_TABLE_NAME = 'sport_session_comments' THEN
        PERFORM realtime.stage_comment_v1(c.id, false) FROM public.sport_session_comments c;
    ELSE
        PERFORM realtime.stage_comment_v1(m.comment_id, false)
        FROM (SELECT DISTINCT comment_id FROM public.sport_session_comment_mentions) m;
    END IF;
    RETURN NULL;
END
$$;

-- At commit: one event per touched comment, from the comment as it finally stands,
-- compared with what subscribers were last told.
CREATE OR REPLACE FUNCTION realtime.flush_comments_v1() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    v_origin text := nullif(current_setting('courtside.origin', true), '');
    v_topics text[];
    p record;
    cur public.sport_session_comments;
    st realtime.comment_state;
    cur_mentions uuid[];
    known_mentions uuid[];
    rendered jsonb;
    digest uuid;
    was_visible boolean;
    is_visible boolean;
    old_topic text;
    new_topic text;
    mention_events jsonb[] := '{}';
    ev jsonb;
BEGIN
    -- Every session topic these comments were last reported in or now belong to, locked
    -- before anything is read for a payload (DESIGN §4.4).
    -- LATERAL keeps this to index lookups per touched comment, however large the tables.
    SELECT array_agg(DISTINCT x.t) INTO v_topics
    FROM realtime.pending_comments pc
    CROSS JOIN LATERAL (
        SELECT s.topic FROM realtime.comment_state s WHERE s.comment_id = pc.comment_id
        UNION ALL
        SELECT 'session:' || c.sport_session_id
        FROM public.sport_session_comments c WHERE c.id = pc.comment_id
    ) AS x(t)
    WHERE pc.xid = NEW.xid;
    IF v_topics IS NULL THEN
        -- Nothing staged: an earlier firing in this transaction emitted everything (or every
        -- touched comment is gone and was never reported; the loop below cleans those up).
        IF NOT EXISTS (SELECT 1 FROM realtime.pending_comments WHERE xid = NEW.xid) THEN
            RETURN NULL;
        END IF;
    ELSE
        PERFORM realtime.lock_topics_v1(v_topics);
    END IF;

    FOR p IN
        SELECT * FROM realtime.pending_comments WHERE xid = NEW.xid ORDER BY ord
    LOOP
        -- Statements after the lock: under READ COMMITTED they see every transaction that
        -- committed to these topics while we waited, and so the state it left.
        SELECT * INTO cur FROM public.sport_session_comments WHERE id = p.comment_id;
        is_visible := FOUND AND cur.deleted_at IS NULL;
        new_topic := CASE WHEN cur.id IS NOT NULL THEN 'session:' || cur.sport_session_id END;
        SELECT * INTO st FROM realtime.comment_state WHERE comment_id = p.comment_id;
        IF FOUND THEN
            was_visible := st.visible;
            old_topic := st.topic;
            known_mentions := st.mentions;
        ELSE
            -- Never reported: new, or older than courtside. The latter counts as known.
            was_visible := NOT p.inserted AND cur.id IS NOT NULL;
            old_topic := new_topic;
            known_mentions := NULL;
        END IF;
        IF old_topic IS DISTINCT FROM new_topic AND NOT old_topic = ANY (v_topics) THEN
            -- Moved by a transaction that committed while we waited: rare; lock it now.
            PERFORM realtime.lock_topics_v1(ARRAY[old_topic]);
        END IF;

        IF is_visible THEN
            rendered := realtime.comment_json_v1(cur);
            digest := md5(rendered::text)::uuid;
            IF jsonb_array_length(rendered -> 'mentions') = 0 THEN
                cur_mentions := '{}';
            ELSE
                cur_mentions := ARRAY(
                    SELECT (m ->> 'id')::uuid FROM jsonb_array_elements(rendered -> 'mentions') m
                    ORDER BY 1);
            END IF;
        END IF;

        IF was_visible AND (NOT is_visible OR old_topic IS DISTINCT FROM new_topic) THEN
            PERFORM realtime.emit_v1(old_topic, 'comment.deleted', jsonb_build_object(
                'commentId', p.comment_id,
                'deletedAt', realtime.ts_v1(CASE WHEN is_visible THEN now()
                                                 ELSE coalesce(cur.deleted_at, now()) END)),
                v_origin);
        END IF;

        IF is_visible AND (NOT was_visible OR old_topic IS DISTINCT FROM new_topic) THEN
            PERFORM realtime.emit_v1(new_topic, 'comment.created',
                                     jsonb_build_object('comment', rendered), v_origin);
        ELSIF is_visible AND digest IS DISTINCT FROM st.digest THEN
            PERFORM realtime.emit_v1(new_topic, 'comment.updated',
                                     jsonb_build_object('comment', rendered), v_origin);
        END IF;

        IF is_visible AND cardinality(cur_mentions) > 0 THEN
            -- A user newly mentioned in a visible comment hears of it on their own topic.
            SELECT mention_events || coalesce(array_agg(jsonb_build_object(
                       'topic', 'user:' || u,
                       'payload', jsonb_build_object(
                           'sessionId', cur.sport_session_id, 'comment', rendered))), '{}')
            INTO mention_events
            FROM unnest(cur_mentions) AS u
            WHERE NOT (u = ANY (CASE WHEN NOT was_visible THEN '{}'::uuid[]
                                     ELSE coalesce(known_mentions, cur_mentions) END));
        END IF;
        IF is_visible THEN
            INSERT INTO realtime.comment_state AS s (comment_id, topic, visible, digest, mentions)
            VALUES (cur.id, new_topic, true, digest, cur_mentions)
            ON CONFLICT (comment_id) DO UPDATE
                SET topic = excluded.topic, visible = true, digest = excluded.digest,
                    mentions = excluded.mentions;
        ELSIF cur.id IS NOT NULL THEN
            INSERT INTO realtime.comment_state AS s (comment_id, topic, visible)
            VALUES (cur.id, new_topic, false)
            ON CONFLICT (comment_id) DO UPDATE SET topic = excluded.topic, visible = false;
        ELSE
            DELETE FROM realtime.comment_state WHERE comment_id = p.comment_id;
        END IF;
    END LOOP;

    DELETE FROM realtime.pending_comments WHERE xid = NEW.xid;

    IF cardinality(mention_events) > 0 THEN
        -- User topics sort after session topics: the global lock order still holds.
        PERFORM realtime.lock_topics_v1(ARRAY(SELECT e ->> 'topic' FROM unnest(mention_events) e));
        FOREACH ev IN ARRAY mention_events LOOP
            PERFORM realtime.emit_v1(ev ->> 'topic', 'mention.created', ev -> 'payload', v_origin);
        END LOOP;
    END IF;
    RETURN NULL;
END
$$;

DROP TRIGGER IF EXISTS courtside_stage ON public.sport_session_comments;
CREATE TRIGGER courtside_stage
    AFTER INSERT OR UPDATE OR DELETE ON public.sport_session_comments
    FOR EACH ROW EXECUTE FUNCTION realtime.stage_comment_row_v1();

DROP TRIGGER IF EXISTS courtside_stage_truncate ON public.sport_session_comments;
CREATE TRIGGER courtside_stage_truncate
    BEFORE TRUNCATE ON public.sport_session_comments
    FOR EACH STATEMENT EXECUTE FUNCTION realtime.stage_truncate_v1();

DROP TRIGGER IF EXISTS courtside_stage ON public.sport_session_comment_mentions;
CREATE TRIGGER courtside_stage
    AFTER INSERT OR UPDATE OR DELETE ON public.sport_session_comment_mentions
    FOR EACH ROW EXECUTE FUNCTION realtime.stage_mention_row_v1();

DROP TRIGGER IF EXISTS courtside_stage_truncate ON public.sport_session_comment_mentions;
CREATE TRIGGER courtside_stage_truncate
    BEFORE TRUNCATE ON public.sport_session_comment_mentions
    FOR EACH STATEMENT EXECUTE FUNCTION realtime.stage_truncate_v1();

DROP TRIGGER IF EXISTS courtside_flush ON realtime.pending_comments;
CREATE CONSTRAINT TRIGGER courtside_flush
    AFTER INSERT ON realtime.pending_comments
    DEFERRABLE INITIALLY DEFERRED
    FOR EACH ROW EXECUTE FUNCTION realtime.flush_comments_v1();

-- Retention: drop events older than p_keep. Counters are never reset, so a client that
-- asks for a pruned range is told (reset), never silently handed a gap.
CREATE OR REPLACE FUNCTION realtime.prune_events_v1(p_keep interval) RETURNS bigint
LANGUAGE sql AS $$
    WITH gone AS (
        DELETE FROM realtime.events WHERE created_at < now() - p_keep RETURNING 1)
    SELECT count(*) FROM gone
$$;

-- Control: revoked tokens, removed participants, sessions that closed or went private.
CREATE OR REPLACE FUNCTION realtime.token_control_v1() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' THEN
        PERFORM realtime.publish_control_v1('token.revoked', jsonb_build_object(
            'tokenId', OLD.id, 'userId', OLD.tokenable_id));
    ELSIF NEW.expires_at IS NOT NULL
          AND (OLD.expires_at IS NULL OR NEW.expires_at < OLD.expires_at) THEN
        PERFORM realtime.publish_control_v1('token.expires', jsonb_build_object(
            'tokenId', NEW.id, 'userId', NEW.tokenable_id,
            'expiresAt', realtime.ts_v1(NEW.expires_at AT TIME ZONE 'UTC')));
    END IF;
    RETURN NULL;
END
$$;

DROP TRIGGER IF EXISTS courtside_control ON public.personal_access_tokens;
CREATE TRIGGER courtside_control
    AFTER DELETE OR UPDATE OF expires_at ON public.personal_access_tokens
    FOR EACH ROW EXECUTE FUNCTION realtime.token_control_v1();

CREATE OR REPLACE FUNCTION realtime.participant_control_v1() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' OR NEW.sport_session_id IS DISTINCT FROM OLD.sport_session_id
       OR NEW.user_id IS DISTINCT FROM OLD.user_id THEN
        PERFORM realtime.publish_control_v1('participant.removed', jsonb_build_object(
            'sessionId', OLD.sport_session_id, 'userId', OLD.user_id));
    END IF;
    RETURN NULL;
END
$$;

DROP TRIGGER IF EXISTS courtside_control ON public.sport_session_participants;
CREATE TRIGGER courtside_control
    AFTER DELETE OR UPDATE ON public.sport_session_participants
    FOR EACH ROW EXECUTE FUNCTION realtime.participant_control_v1();

CREATE OR REPLACE FUNCTION realtime.session_control_v1() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' OR NEW.visibility IS DISTINCT FROM OLD.visibility
       OR NEW.deleted_at IS DISTINCT FROM OLD.deleted_at THEN
        PERFORM realtime.publish_control_v1('session.changed', jsonb_build_object(
            'sessionId', OLD.id,
            'visibility', CASE WHEN TG_OP = 'DELETE' THEN NULL ELSE NEW.visibility END,
            'deleted', TG_OP = 'DELETE' OR NEW.deleted_at IS NOT NULL));
    END IF;
    RETURN NULL;
END
$$;

DROP TRIGGER IF EXISTS courtside_control ON public.sport_sessions;
CREATE TRIGGER courtside_control
    AFTER DELETE OR UPDATE ON public.sport_sessions
    FOR EACH ROW EXECUTE FUNCTION realtime.session_control_v1();
