-- Comments through the REST API. Every rendering goes through realtime.comment_json_v1, the
-- function the event triggers use, so REST and events carry the same bytes.

-- name: create_comment
-- The whole creation in one call (db/functions/api.sql): access, mentions' check, rate-limit
-- hit, the rows, the rendering.
SELECT outcome, body FROM api.create_comment_v1(
    %(session_id)s, %(user_id)s, %(content)s, %(mentions)s::uuid[], %(origin)s, %(bucket)s,
    %(limit)s, make_interval(secs => %(window)s))

-- name: edit_comment
SELECT outcome, body FROM api.edit_comment_v1(
    %(session_id)s, %(comment_id)s, %(user_id)s, %(content)s, %(mentions)s::uuid[],
    %(origin)s)

-- name: delete_comment
SELECT outcome, body FROM api.delete_comment_v1(
    %(session_id)s, %(comment_id)s, %(user_id)s, %(origin)s)

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
