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

-- name: list_page
-- One statement, so one snapshot: why the user may not read the session
-- (api.access_refusal_v1, NULL when they may), the total and the page, newest first,
-- before the keyset cursor (`created_at, id`; index sport_session_comments_listing_idx).
-- The first page's cursor is ('infinity', any id): one plan serves every page, the cursor
-- always in its index condition. Refused, or without comments on the page, one row
-- whose comment is NULL.
WITH a AS MATERIALIZED (
    SELECT api.access_refusal_v1(%(session_id)s, %(user_id)s) AS refusal)
SELECT a.refusal, t.total, p.comment, p.created_at, p.id
FROM a
CROSS JOIN LATERAL (
    SELECT count(*) AS total FROM public.sport_session_comments c
    WHERE a.refusal IS NULL AND c.sport_session_id = %(session_id)s
      AND c.deleted_at IS NULL) AS t
LEFT JOIN LATERAL (
    SELECT realtime.comment_json_v1(c) AS comment, c.created_at, c.id
    FROM public.sport_session_comments c
    WHERE a.refusal IS NULL AND c.sport_session_id = %(session_id)s AND c.deleted_at IS NULL
      AND (c.created_at, c.id) < (%(before_at)s::timestamptz, %(before_id)s::uuid)
    ORDER BY c.created_at DESC, c.id DESC
    LIMIT %(limit)s OFFSET %(offset)s) AS p ON true
ORDER BY p.created_at DESC, p.id DESC
