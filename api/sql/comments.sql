-- Comments through the REST API. Every rendering goes through realtime.comment_json_v1, the
-- function the event triggers use, so REST and events carry the same bytes.

-- name: set_origin
-- Transaction-local: the events this transaction emits carry it (sender exclusion).
SELECT set_config('courtside.origin', %(origin)s, true)

-- name: non_participants
-- The ids among %(user_ids)s that are not participants of the session.
SELECT m.id
FROM unnest(%(user_ids)s::uuid[]) WITH ORDINALITY AS m(id, n)
WHERE NOT EXISTS (
    SELECT 1 FROM public.sport_session_participants p
    WHERE p.sport_session_id = %(session_id)s AND p.user_id = m.id)
ORDER BY m.n

-- name: insert_comment
INSERT INTO public.sport_session_comments (sport_session_id, user_id, content)
VALUES (%(session_id)s, %(user_id)s, %(content)s)
RETURNING id

-- name: create_alone
-- A comment with no mentions and no idempotency key, in one autocommit statement (its own
-- transaction, one round trip): the origin its event carries, the rate-limit hit (as
-- limits.sql rate_hit), the insert and the rendering. `wait` > 0: rate limited, nothing
-- written and the hit not counted. The rendering's queries see the statement's snapshot,
-- without the new row: they read its author and mentions, and a new comment has none.
WITH origin AS MATERIALIZED (
    SELECT set_config('courtside.origin', coalesce(%(origin)s, ''), true)),
hit AS MATERIALIZED (  -- once, however often it is read
    SELECT api.rate_hit_v1(%(bucket)s, %(limit)s, make_interval(secs => %(window)s)) AS wait
    FROM origin),
ins AS (
    INSERT INTO public.sport_session_comments (sport_session_id, user_id, content)
    SELECT %(session_id)s, %(user_id)s, %(content)s FROM hit WHERE hit.wait = 0
    RETURNING *)
SELECT hit.wait,
       (SELECT realtime.comment_json_v1(ins::public.sport_session_comments) FROM ins)
FROM hit

-- name: add_mentions
-- Existing mentions keep their row (and created_at), so their order does not change.
INSERT INTO public.sport_session_comment_mentions (comment_id, mentioned_user_id)
SELECT %(comment_id)s, u FROM unnest(%(user_ids)s::uuid[]) AS u
ON CONFLICT ON CONSTRAINT sport_session_comment_mentions_unique DO NOTHING

-- name: drop_other_mentions
DELETE FROM public.sport_session_comment_mentions
WHERE comment_id = %(comment_id)s AND NOT (mentioned_user_id = ANY (%(user_ids)s::uuid[]))

-- name: render_comment
SELECT realtime.comment_json_v1(c) FROM public.sport_session_comments c WHERE c.id = %(comment_id)s

-- name: lock_comment
-- A visible comment of this session, locked until the end of the editing transaction.
SELECT c.user_id
FROM public.sport_session_comments c
WHERE c.id = %(comment_id)s AND c.sport_session_id = %(session_id)s AND c.deleted_at IS NULL
FOR UPDATE

-- name: update_comment
UPDATE public.sport_session_comments
SET content = %(content)s, updated_at = now()
WHERE id = %(comment_id)s

-- name: soft_delete_comment
UPDATE public.sport_session_comments
SET deleted_at = now(), updated_at = now()
WHERE id = %(comment_id)s

-- name: read_snapshot
SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY

-- name: count_comments
SELECT count(*)
FROM public.sport_session_comments c
WHERE c.sport_session_id = %(session_id)s AND c.deleted_at IS NULL

-- name: list_comments
-- Newest first; `created_at, id` is the keyset (index sport_session_comments_listing_idx).
SELECT realtime.comment_json_v1(c), c.created_at, c.id
FROM public.sport_session_comments c
WHERE c.sport_session_id = %(session_id)s AND c.deleted_at IS NULL
ORDER BY c.created_at DESC, c.id DESC
LIMIT %(limit)s OFFSET %(offset)s

-- name: list_comments_before
SELECT realtime.comment_json_v1(c), c.created_at, c.id
FROM public.sport_session_comments c
WHERE c.sport_session_id = %(session_id)s AND c.deleted_at IS NULL
  AND (c.created_at, c.id) < (%(before_at)s::timestamptz, %(before_id)s::uuid)
ORDER BY c.created_at DESC, c.id DESC
LIMIT %(limit)s OFFSET %(offset)s
