-- Presence calls for the bridge: thin wrappers over db/functions/presence.sql.

-- name: join
SELECT realtime.presence_join_v1(%(topic)s, %(user_id)s, %(conn_id)s, %(node_id)s,
                                 make_interval(secs => %(ttl)s))

-- name: join_many
SELECT j.ord, j.came_online
FROM realtime.presence_join_many_v1(%(topics)s::text[], %(user_ids)s::uuid[],
                                    %(conn_ids)s::text[], %(node_id)s) AS j

-- name: leave_many
SELECT l.ord, l.went_offline
FROM realtime.presence_leave_many_v1(%(topics)s::text[], %(user_ids)s::uuid[],
                                     %(conn_ids)s::text[]) AS l

-- name: typing
SELECT realtime.presence_typing_v1(%(topic)s, %(user_id)s, %(is_typing)s,
                                   make_interval(secs => %(duration)s), %(origin)s)

-- name: list
SELECT p::text FROM realtime.presence_list_v1(%(topic)s) AS p

-- name: node_known
SELECT EXISTS (SELECT 1 FROM realtime.nodes WHERE node_id = %(node_id)s)

-- name: heartbeat
SELECT realtime.node_heartbeat_v1(%(node_id)s)

-- name: node_leave
SELECT realtime.node_leave_v1(%(node_id)s)

-- name: reap
-- One reaper at a time across the nodes, so two reapers never interleave their deletes and
-- their online/offline decisions; the others skip this round.
SELECT CASE WHEN pg_try_advisory_xact_lock(%(lock)s)
            THEN realtime.presence_reap_v1(make_interval(secs => %(ttl)s))
            ELSE 0 END
