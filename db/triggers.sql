-- The event pipeline: every committed change to a comment or to its mentions, by any SQL
-- client, becomes exactly one row in realtime.events and one NOTIFY, in the same transaction.
--
-- Re-applied by `courtside migrate` when it, or what it installed, changed
-- (courtside/migrate.py): everything here is CREATE OR REPLACE, or dropped and created again.
-- Function names carry a version; a changed signature gets a new one.
--
-- How a transaction flows through it:
--   1. Row triggers on the comment and mention tables record each comment the transaction
--      touches, once, with whether its first touch inserted it, and if not, how it stood
--      then. The first comment goes in transaction-local settings (courtside.pending,
--      courtside.before), which savepoint rollbacks undo like any write; further comments,
--      and TRUNCATE's, spill to the unlogged realtime.pending_comments. They lock nothing
--      (at most they read the comment a mention belongs to), so they add no lock-order
--      hazard to the application's own writes.
--   2. Deferred constraint triggers (on both tables, and on pending_comments for what only
--      reaches it) fire at commit. The first firing flushes everything; later ones find the
--      setting empty and return at once.
--   3. The flush. A comment this transaction inserted (the common case) is still invisible
--      to every other transaction, so what it says cannot change under us: one statement
--      takes its topic counters (row locks held to commit: seq order is commit order),
--      appends its events and notifies (with mentions, it records their state too). Anything
--      else takes the topic locks of every touched comment in one global order first, then,
--      in later statements, reads each comment as it finally stands and what subscribers
--      were last told of it (realtime.comment_state; without a row there, the comment as it
--      stood before this transaction, kept by step 1), and emits at most one event per
--      comment.

-- Laravel's JSON timestamp format: 2025-01-20T10:30:00.000000Z
CREATE OR REPLACE FUNCTION realtime.ts_v1(ts timestamptz) RETURNS text
LANGUAGE sql STABLE PARALLEL SAFE AS $$
    SELECT to_char(ts AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"')
$$;

-- The one rendering of a comment, shared by the REST API and the events (DESIGN §4.3), from
-- the comment, its author (NULL if none) and its mentions, already rendered. One SQL
-- expression without subqueries, so PostgreSQL inlines it into the statement that calls
-- it: no function call, and no plan of its own.
CREATE OR REPLACE FUNCTION realtime.comment_json_of_v1(
    c public.sport_session_comments, u public.users, mentions jsonb)
RETURNS jsonb
LANGUAGE sql STABLE AS $$
    SELECT jsonb_build_object(
        'id', c.id,
        'content', c.content,
        'user', CASE WHEN u.id IS NOT NULL THEN jsonb_build_object(
            'id', u.id, 'firstname', u.firstname, 'lastname', u.lastname, 'avatar', u.avatar)
            END,
        'mentions', mentions,
        'created_at', realtime.ts_v1(c.created_at),
        'updated_at', realtime.ts_v1(c.updated_at))
$$;

-- A comment as it stands, its author and mentions read here.
-- PL/pgSQL rather than SQL: a PL/pgSQL function keeps its plans for the whole session,
-- where a non-inlined SQL function is planned again in every transaction that calls it.
CREATE OR REPLACE FUNCTION realtime.comment_json_v1(c public.sport_session_comments)
RETURNS jsonb
LANGUAGE plpgsql STABLE AS $$
DECLARE
    u public.users;
    mentions jsonb;
BEGIN
    SELECT * INTO u FROM public.users WHERE id = c.user_id;
    mentions := coalesce((
        SELECT jsonb_agg(
            jsonb_build_object('id', mu.id, 'firstname', mu.firstname, 'lastname', mu.lastname)
            ORDER BY m.created_at, mu.lastname, mu.firstname, mu.id)
        FROM public.sport_session_comment_mentions m
        JOIN public.users mu ON mu.id = m.mentioned_user_id
        WHERE m.comment_id = c.id), '[]'::jsonb);
    RETURN realtime.comment_json_of_v1(c, u, mentions);
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

-- Record that this transaction touched a comment (first touch only) and, unless that touch
-- inserted it, the comment as it stood before (p_before, else read here: a mention's first
-- touch leaves the comment row as it was). The flush compares with that when subscribers
-- were last told of the comment by its creation, which keeps no realtime.comment_state row.
-- courtside.pending is '' (nothing), '+<id>' or '-<id>' (one comment; '+': its first touch
-- inserted it; '+<id>m': and mention rows of it were written), with a trailing '*' once rows
-- were spilled to realtime.pending_comments; courtside.before is the '-' comment's before.
CREATE OR REPLACE FUNCTION realtime.stage_comment_v2(
    p_comment_id uuid, p_inserted boolean, p_before jsonb DEFAULT NULL)
RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    v text := coalesce(current_setting('courtside.pending', true), '');
    v_before jsonb := p_before;
BEGIN
    IF substr(v, 2, 36) = p_comment_id::text THEN
        RETURN;  -- the setting's comment: its first touch is recorded
    END IF;
    IF NOT p_inserted AND v_before IS NULL THEN
        SELECT to_jsonb(c) INTO v_before
        FROM public.sport_session_comments c WHERE c.id = p_comment_id;
    END IF;
    IF v = '' THEN
        v := set_config('courtside.pending',
                        CASE WHEN p_inserted THEN '+' ELSE '-' END || p_comment_id, true);
        IF NOT p_inserted THEN
            v := set_config('courtside.before', v_before::text, true);
        END IF;
    ELSE
        INSERT INTO realtime.pending_comments (xid, comment_id, inserted, before)
        VALUES (pg_current_xact_id(), p_comment_id, p_inserted, v_before)
        ON CONFLICT DO NOTHING;
        IF right(v, 1) <> '*' THEN
            v := set_config('courtside.pending', v || '*', true);
        END IF;
    END IF;
END
$$;
DROP FUNCTION IF EXISTS realtime.stage_comment_v1(uuid, boolean);

-- The common cases (a comment inserted, or its mentions written, alone in its transaction)
-- stay in this function: one call and one setting per row.
CREATE OR REPLACE FUNCTION realtime.stage_comment_row_v1() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    v text;
BEGIN
    IF TG_OP = 'INSERT' THEN
        IF coalesce(current_setting('courtside.pending', true), '') = '' THEN
            v := set_config('courtside.pending', '+' || NEW.id, true);
        ELSE
            PERFORM realtime.stage_comment_v2(NEW.id, true);
        END IF;
        RETURN NULL;
    END IF;
    PERFORM realtime.stage_comment_v2(OLD.id, false, to_jsonb(OLD));
    IF TG_OP = 'UPDATE' AND NEW.id IS DISTINCT FROM OLD.id THEN
        PERFORM realtime.stage_comment_v2(NEW.id, true);
    END IF;
    RETURN NULL;
END
$$;

CREATE OR REPLACE FUNCTION realtime.stage_mention_row_v1() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    v text;
BEGIN
    IF TG_OP IN ('INSERT', 'UPDATE') THEN
        v := current_setting('courtside.pending', true);
        IF v = '+' || NEW.comment_id THEN
            -- The comment this transaction inserted now has mentions.
            v := set_config('courtside.pending', v || 'm', true);
        ELSIF substr(v, 2, 36) IS DISTINCT FROM NEW.comment_id::text THEN
            PERFORM realtime.stage_comment_v2(NEW.comment_id, false);
        END IF;
    END IF;
    IF TG_OP IN ('DELETE', 'UPDATE') THEN
        PERFORM realtime.stage_comment_v2(OLD.comment_id, false);
    END IF;
    RETURN NULL;
END
$$;

-- TRUNCATE fires no row triggers: record every comment it is about to remove. The spilled
-- rows carry the deferred flush.
CREATE OR REPLACE FUNCTION realtime.stage_truncate_v1() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    v text := coalesce(current_setting('courtside.pending', true), '');
BEGIN
    IF TG_TABLE_NAME = 'sport_session_comments' THEN
        INSERT INTO realtime.pending_comments (xid, comment_id, inserted, before)
        SELECT pg_current_xact_id(), c.id, false, to_jsonb(c)
        FROM public.sport_session_comments c
        ON CONFLICT DO NOTHING;
    ELSE
        INSERT INTO realtime.pending_comments (xid, comment_id, inserted, before)
        SELECT pg_current_xact_id(), c.id, false, to_jsonb(c)
        FROM public.sport_session_comments c
        WHERE c.id IN (SELECT m.comment_id FROM public.sport_session_comment_mentions m)
        ON CONFLICT DO NOTHING;
    END IF;
    IF right(v, 1) IS DISTINCT FROM '*' THEN
        v := set_config('courtside.pending', v || '*', true);
    END IF;
    RETURN NULL;
END
$$;

-- At commit: one event per touched comment, from the comment as it finally stands,
-- compared with what subscribers were last told. A mentioned user hears of a comment on
-- their own topic (mention.created) only while they are a participant of its session:
-- the mention row stays and the comment lists it, but an outsider is told nothing.
CREATE OR REPLACE FUNCTION realtime.flush_comments_v1() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    v_pending text := coalesce(current_setting('courtside.pending', true), '');
    v_origin text;
    v_spilled boolean;
    v_xid xid8;
    v_ids uuid[];
    v_inserted boolean[];
    v_befores jsonb[];
    v_topics text[];
    i int;
    n bigint;
    cur public.sport_session_comments;
    st realtime.comment_state;
    bef public.sport_session_comments;
    told_digest uuid;
    cur_mentions uuid[];
    known_mentions uuid[];
    notify_mentions uuid[];
    rendered jsonb;
    digest uuid;
    was_visible boolean;
    is_visible boolean;
    old_topic text;
    new_topic text;
    mention_events jsonb[];
    ev jsonb;
BEGIN
    IF v_pending = '' THEN
        RETURN NULL;  -- flushed by an earlier firing in this transaction
    END IF;
    -- Later firings in this transaction find it empty. (Assignments, not PERFORM: plpgsql
    -- evaluates them without starting the executor.)
    v_origin := set_config('courtside.pending', '', true);
    v_origin := nullif(current_setting('courtside.origin', true), '');

    -- One comment, inserted by this transaction: no other transaction can see it, let alone
    -- change it, so it is read in the very statement that takes its topic counters (row
    -- locks held to commit, in topic order: session: before user:). Without a mention row
    -- written in this transaction it has none, and the statement is leaner still: it
    -- renders the comment itself, with its author joined and no mentions, and records no
    -- state.
    IF v_pending = '+' || substr(v_pending, 2, 36) THEN
        WITH c AS (
            SELECT c.id, 'session:' || c.sport_session_id AS topic,
                   realtime.comment_json_of_v1(c, u, '[]'::jsonb) AS j
            FROM public.sport_session_comments c
            LEFT JOIN public.users u ON u.id = c.user_id
            WHERE c.id = substr(v_pending, 2)::uuid AND c.deleted_at IS NULL),
        -- A plain UPDATE, not an upsert: INSERT ... ON CONFLICT DO UPDATE locks the row
        -- and then updates it, two WAL records where one does. A session's first comment
        -- finds no counter and leaves this statement empty; the general path creates it.
        s AS (
            UPDATE realtime.streams AS s SET last_seq = s.last_seq + 1
            FROM c WHERE s.topic = c.topic
            RETURNING s.last_seq),
        e AS (
            INSERT INTO realtime.events (topic, seq, type, payload, origin)
            SELECT c.topic, s.last_seq, 'comment.created', jsonb_build_object('comment', c.j),
                   v_origin
            FROM c CROSS JOIN s
            RETURNING topic, seq, jsonb_build_object('k', 'e', 't', topic, 's', seq,
                'e', type, 'o', origin, 'd', payload)::text AS msg)
        -- No realtime.comment_state row: until the comment is next touched, what subscribers
        -- were told of it is the comment itself, which that transaction keeps (stage_comment_v2).
        -- The whole event when it fits, else only its address, which the bridge reads from
        -- the log: NOTIFY refuses 8000 bytes or more, and a payload must never make a
        -- write fail.
        SELECT count(pg_notify('courtside', CASE WHEN octet_length(e.msg) > 7500
            THEN jsonb_build_object('k', 'e', 't', e.topic, 's', e.seq)::text ELSE e.msg END))
        INTO n
        FROM e;
        IF n > 0 THEN
            RETURN NULL;
        END IF;
        -- Gone, hidden, or its session's first comment: the general path.
    ELSIF v_pending = '+' || substr(v_pending, 2, 36) || 'm' THEN
        WITH r AS MATERIALIZED (  -- rendered once, however often it is referred to
            SELECT c.id, c.sport_session_id, realtime.comment_json_v1(c) AS j
            FROM public.sport_session_comments c
            WHERE c.id = substr(v_pending, 2, 36)::uuid AND c.deleted_at IS NULL),
        c AS (
            SELECT r.id, r.sport_session_id, 'session:' || r.sport_session_id AS topic, r.j,
                   ARRAY(
                       SELECT (x ->> 'id')::uuid FROM jsonb_array_elements(r.j -> 'mentions') x
                       WHERE EXISTS (
                           SELECT 1 FROM public.sport_session_participants sp
                           WHERE sp.sport_session_id = r.sport_session_id
                             AND sp.user_id = (x ->> 'id')::uuid)
                       ORDER BY 1) AS told
            FROM r),
        s AS (
            INSERT INTO realtime.streams AS s (topic, last_seq)
            SELECT t.topic, 1
            FROM c, LATERAL (SELECT c.topic UNION ALL SELECT 'user:' || u FROM unnest(c.told) u)
                AS t(topic)
            ORDER BY t.topic
            ON CONFLICT (topic) DO UPDATE SET last_seq = s.last_seq + 1
            RETURNING s.topic, s.last_seq),
        e AS (
            INSERT INTO realtime.events (topic, seq, type, payload, origin)
            SELECT s.topic, s.last_seq,
                   CASE WHEN s.topic = c.topic THEN 'comment.created' ELSE 'mention.created' END,
                   CASE WHEN s.topic = c.topic THEN jsonb_build_object('comment', c.j)
                   ELSE jsonb_build_object('sessionId', c.sport_session_id, 'comment', c.j) END,
                   v_origin
            FROM s CROSS JOIN c
            RETURNING topic, seq, jsonb_build_object('k', 'e', 't', topic, 's', seq,
                'e', type, 'o', origin, 'd', payload)::text AS msg),
        st AS (
            INSERT INTO realtime.comment_state AS cs (comment_id, topic, visible, digest, mentions)
            SELECT c.id, c.topic, true, md5(c.j::text)::uuid, c.told FROM c
            ON CONFLICT (comment_id) DO UPDATE
                SET topic = excluded.topic, visible = true, digest = excluded.digest,
                    mentions = excluded.mentions)
        SELECT count(pg_notify('courtside', CASE WHEN octet_length(x.msg) > 7500
            THEN jsonb_build_object('k', 'e', 't', x.topic, 's', x.seq)::text ELSE x.msg END))
        INTO n
        FROM (SELECT e.topic, e.seq, e.msg FROM e ORDER BY e.topic) AS x;
        IF n > 0 THEN
            RETURN NULL;
        END IF;
        -- Gone or hidden again before commit: the general path records that.
    END IF;

    -- Everything this transaction touched: the comment in the setting, then the spill.
    mention_events := '{}';
    v_spilled := right(v_pending, 1) = '*';
    IF v_spilled THEN
        v_xid := pg_current_xact_id();
    END IF;
    SELECT array_agg(t.comment_id ORDER BY t.ord), array_agg(t.inserted ORDER BY t.ord),
           array_agg(t.before ORDER BY t.ord)
    INTO v_ids, v_inserted, v_befores
    FROM (
        SELECT DISTINCT ON (x.comment_id) x.comment_id, x.inserted, x.before, x.ord
        FROM (
            SELECT CASE WHEN left(v_pending, 1) IN ('+', '-')
                        THEN substr(v_pending, 2, 36)::uuid END AS comment_id,
                   left(v_pending, 1) = '+' AS inserted,
                   CASE WHEN left(v_pending, 1) = '-'
                        THEN nullif(current_setting('courtside.before', true), '')::jsonb
                        END AS before,
                   0::bigint AS ord
            WHERE left(v_pending, 1) IN ('+', '-')
            UNION ALL
            SELECT pc.comment_id, pc.inserted, pc.before, pc.ord
            FROM realtime.pending_comments pc
            WHERE v_spilled AND pc.xid = v_xid
        ) AS x
        ORDER BY x.comment_id, x.ord
    ) AS t;
    IF v_spilled THEN
        DELETE FROM realtime.pending_comments WHERE xid = v_xid;
    END IF;
    IF v_ids IS NULL THEN
        RETURN NULL;
    END IF;

    -- Every session topic these comments were last reported in (their state, else where
    -- they stood before this transaction) or now belong to, locked before anything is read
    -- for a payload (DESIGN §4.4).
    -- LATERAL keeps this to index lookups per touched comment, however large the tables.
    SELECT array_agg(DISTINCT x.t) INTO v_topics
    FROM unnest(v_ids, v_befores) AS p(comment_id, before)
    CROSS JOIN LATERAL (
        SELECT s.topic FROM realtime.comment_state s WHERE s.comment_id = p.comment_id
        UNION ALL
        SELECT 'session:' || (p.before ->> 'sport_session_id') WHERE p.before IS NOT NULL
        UNION ALL
        SELECT 'session:' || c.sport_session_id
        FROM public.sport_session_comments c WHERE c.id = p.comment_id
    ) AS x(t);
    IF v_topics IS NOT NULL THEN
        PERFORM realtime.lock_topics_v1(v_topics);
    END IF;

    FOR i IN 1 .. cardinality(v_ids) LOOP
        -- Statements after the lock: under READ COMMITTED they see every transaction that
        -- committed to these topics while we waited, and so the state it left.
        cur := NULL;
        SELECT * INTO cur FROM public.sport_session_comments WHERE id = v_ids[i];
        is_visible := cur.id IS NOT NULL AND cur.deleted_at IS NULL;
        new_topic := CASE WHEN cur.id IS NOT NULL THEN 'session:' || cur.sport_session_id END;
        st := NULL;
        SELECT * INTO st FROM realtime.comment_state WHERE comment_id = v_ids[i];
        IF st.comment_id IS NOT NULL THEN
            was_visible := st.visible;
            old_topic := st.topic;
            known_mentions := st.mentions;
            told_digest := st.digest;
        ELSIF NOT v_inserted[i] AND v_befores[i] IS NOT NULL THEN
            -- Reported by its creation alone, and untouched since: subscribers were told the
            -- comment as it stood before this transaction, without mentions. (Comments from
            -- before that rule have a state row: migration 0006.)
            bef := jsonb_populate_record(NULL::public.sport_session_comments, v_befores[i]);
            was_visible := bef.deleted_at IS NULL;
            old_topic := 'session:' || bef.sport_session_id;
            known_mentions := '{}';
            told_digest := md5(realtime.comment_json_of_v1(
                bef, (SELECT u FROM public.users u WHERE u.id = bef.user_id), '[]'::jsonb
            )::text)::uuid;
        ELSE
            -- Never reported: new, or written while courtside's triggers were off. The
            -- latter counts as known.
            was_visible := NOT v_inserted[i] AND cur.id IS NOT NULL;
            old_topic := new_topic;
            known_mentions := NULL;
            told_digest := NULL;
        END IF;
        IF old_topic IS DISTINCT FROM new_topic AND NOT old_topic = ANY (v_topics) THEN
            -- Moved by a transaction that committed while we waited: rare; lock it now.
            PERFORM realtime.lock_topics_v1(ARRAY[old_topic]);
        END IF;

        IF is_visible THEN
            rendered := realtime.comment_json_v1(cur);
            digest := md5(rendered::text)::uuid;
            cur_mentions := ARRAY(
                SELECT (m ->> 'id')::uuid FROM jsonb_array_elements(rendered -> 'mentions') m
                ORDER BY 1);
            IF NOT was_visible THEN
                known_mentions := '{}';
            ELSE
                known_mentions := coalesce(known_mentions, cur_mentions);
            END IF;
            -- Newly mentioned participants hear of it on their own topic.
            notify_mentions := ARRAY(
                SELECT u FROM unnest(cur_mentions) AS u
                WHERE NOT u = ANY (known_mentions)
                  AND EXISTS (
                      SELECT 1 FROM public.sport_session_participants sp
                      WHERE sp.sport_session_id = cur.sport_session_id AND sp.user_id = u)
                ORDER BY 1);
        END IF;

        IF was_visible AND (NOT is_visible OR old_topic IS DISTINCT FROM new_topic) THEN
            PERFORM realtime.emit_v1(old_topic, 'comment.deleted', jsonb_build_object(
                'commentId', v_ids[i],
                'deletedAt', realtime.ts_v1(CASE WHEN is_visible THEN now()
                                                 ELSE coalesce(cur.deleted_at, now()) END)),
                v_origin);
        END IF;

        IF is_visible AND (NOT was_visible OR old_topic IS DISTINCT FROM new_topic) THEN
            PERFORM realtime.emit_v1(new_topic, 'comment.created',
                                     jsonb_build_object('comment', rendered), v_origin);
        ELSIF is_visible AND digest IS DISTINCT FROM told_digest THEN
            PERFORM realtime.emit_v1(new_topic, 'comment.updated',
                                     jsonb_build_object('comment', rendered), v_origin);
        END IF;

        IF is_visible THEN
            IF cardinality(notify_mentions) > 0 THEN
                SELECT mention_events || array_agg(jsonb_build_object(
                           'topic', 'user:' || u,
                           'payload', jsonb_build_object(
                               'sessionId', cur.sport_session_id, 'comment', rendered)))
                INTO mention_events
                FROM unnest(notify_mentions) AS u;
            END IF;
            -- What subscribers now know: the mentions already known and those just told.
            INSERT INTO realtime.comment_state AS s (comment_id, topic, visible, digest, mentions)
            VALUES (cur.id, new_topic, true, digest, ARRAY(
                SELECT u FROM unnest(cur_mentions) AS u
                WHERE u = ANY (known_mentions) OR u = ANY (notify_mentions) ORDER BY 1))
            ON CONFLICT (comment_id) DO UPDATE
                SET topic = excluded.topic, visible = true, digest = excluded.digest,
                    mentions = excluded.mentions;
        ELSIF cur.id IS NOT NULL THEN
            INSERT INTO realtime.comment_state AS s (comment_id, topic, visible)
            VALUES (cur.id, new_topic, false)
            ON CONFLICT (comment_id) DO UPDATE SET topic = excluded.topic, visible = false;
        ELSIF st.comment_id IS NOT NULL THEN
            DELETE FROM realtime.comment_state WHERE comment_id = v_ids[i];
        END IF;
    END LOOP;

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

-- The commit-time flush rides on the written rows themselves. (A consequence PostgreSQL
-- imposes on any deferred trigger: a transaction that wrote these tables cannot TRUNCATE or
-- ALTER them before it commits.)
DROP TRIGGER IF EXISTS courtside_flush ON public.sport_session_comments;
CREATE CONSTRAINT TRIGGER courtside_flush
    AFTER INSERT OR UPDATE OR DELETE ON public.sport_session_comments
    DEFERRABLE INITIALLY DEFERRED
    FOR EACH ROW EXECUTE FUNCTION realtime.flush_comments_v1();

DROP TRIGGER IF EXISTS courtside_flush ON public.sport_session_comment_mentions;
CREATE CONSTRAINT TRIGGER courtside_flush
    AFTER INSERT OR UPDATE OR DELETE ON public.sport_session_comment_mentions
    DEFERRABLE INITIALLY DEFERRED
    FOR EACH ROW EXECUTE FUNCTION realtime.flush_comments_v1();

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
