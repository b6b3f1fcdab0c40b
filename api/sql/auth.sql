-- Sanctum tokens. Laravel stores naive UTC timestamps: compare them with now() in UTC.
-- A token's deadline: api.token_deadline_v1 (db/functions/api.sql).

-- name: token_by_id
-- The stored hash is compared in Python, in constant time; `stale` says whether
-- last_used_at is old enough to be worth a write.
SELECT t.token AS hash,
       t.tokenable_id AS user_id,
       d.deadline AS expires_at,
       coalesce(d.deadline <= now(), false) AS expired,
       (t.last_used_at IS NULL OR t.last_used_at < (now() AT TIME ZONE 'UTC')
                                                   - make_interval(secs => %(touch_every)s))
           AS stale
FROM public.personal_access_tokens t
JOIN public.users u ON u.id = t.tokenable_id
CROSS JOIN LATERAL (SELECT api.token_deadline_v1(
    t.expires_at, t.created_at, %(expiration_minutes)s::integer) AS deadline) d
WHERE t.id = %(token_id)s

-- name: token_id_by_hash
-- A bare plaintext (no "id|"): Sanctum looks it up by its hash; token_by_id does the rest.
SELECT t.id AS token_id FROM public.personal_access_tokens t WHERE t.token = %(hash)s

-- name: commit_without_waiting
-- For this transaction only: its commit does not wait for the WAL flush.
SET LOCAL synchronous_commit = off

-- name: touch_tokens
-- The tokens requests found stale (api/token_touch.py), in one statement. A token written
-- since (by another worker, or by Laravel) is left alone.
UPDATE public.personal_access_tokens
SET last_used_at = now() AT TIME ZONE 'UTC', updated_at = now() AT TIME ZONE 'UTC'
WHERE id = ANY (%(ids)s::bigint[])
  AND (last_used_at IS NULL
       OR last_used_at < (now() AT TIME ZONE 'UTC') - make_interval(secs => %(touch_every)s))

-- name: session_refusal
-- NULL when the user takes part in the session (api.access_refusal_v1).
SELECT api.access_refusal_v1(%(session_id)s, %(user_id)s)
