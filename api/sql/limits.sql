-- Rate limits and idempotency keys (db/migrations/0004_api.sql, db/functions/api.sql).

-- name: claim_key
-- Waits while another transaction holds the same key; no row when the key already exists.
INSERT INTO api.idempotency_keys (user_id, key, fingerprint)
VALUES (%(user_id)s, %(key)s, %(fingerprint)s)
ON CONFLICT (user_id, key) DO NOTHING
RETURNING 1

-- name: stored_response
SELECT fingerprint, status, response
FROM api.idempotency_keys
WHERE user_id = %(user_id)s AND key = %(key)s

-- name: store_response
UPDATE api.idempotency_keys SET status = %(status)s, response = %(response)s
WHERE user_id = %(user_id)s AND key = %(key)s

-- name: prune
SELECT api.prune_v1(make_interval(secs => %(keys_ttl)s), make_interval(secs => %(window)s))
