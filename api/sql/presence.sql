-- Presence through REST: the registry of db/functions/presence.sql. A REST join is a row
-- with no node and a TTL; conn_id 'rest:<token id>' makes each token one presence.

-- name: join
-- Joins (or renews) and answers the row's joinedAt, in one statement.
SELECT realtime.presence_rest_join_v1(%(topic)s, %(user_id)s, %(conn_id)s,
                                      make_interval(secs => %(ttl)s))

-- name: leave
SELECT realtime.presence_leave_v1(%(topic)s, %(user_id)s, %(conn_id)s), realtime.ts_v1(now())

-- name: typing
SELECT realtime.ts_v1(realtime.presence_typing_v1(
    %(topic)s, %(user_id)s, %(is_typing)s, make_interval(secs => %(for_seconds)s), %(origin)s))

-- name: users
SELECT realtime.presence_list_v1(%(topic)s)
