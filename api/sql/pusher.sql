-- Queries of the Pusher protocol transport (api/pusher_auth.py, api/pusher.py).

-- name: user_info
-- A presence member's user_info: the same object courtside presence events carry as `user`.
SELECT realtime.presence_user_json_v1(%(user_id)s) AS info

-- name: publish_ephemeral
-- The HTTP events API: an event for the topic's current subscribers, not stored in the log.
SELECT realtime.publish_ephemeral_v1(%(topic)s, %(type)s, %(payload)s::jsonb, %(origin)s)
