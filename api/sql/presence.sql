-- Presence through REST: the registry of db/functions/presence.sql. A REST join is a row
-- with no node and a TTL; conn_id 'rest:<token id>' makes each token one presence.
-- Each asks first why the user may not use the session (api.access_refusal_v1, NULL when
-- they may) and does its work only when they may, in the same statement.

-- name: join
-- Joins (or renews) and answers the row's joinedAt.
WITH a AS MATERIALIZED (
    SELECT api.access_refusal_v1(%(session_id)s, %(user_id)s) AS refusal)
SELECT a.refusal,
       CASE WHEN a.refusal IS NULL THEN realtime.presence_rest_join_v1(
           %(topic)s, %(user_id)s, %(conn_id)s, make_interval(secs => %(ttl)s)) END
FROM a

-- name: leave
WITH a AS MATERIALIZED (
    SELECT api.access_refusal_v1(%(session_id)s, %(user_id)s) AS refusal)
SELECT a.refusal,
       CASE WHEN a.refusal IS NULL THEN realtime.presence_leave_v1(%(topic)s, %(user_id)s, %(conn_id)s) END,
       realtime.ts_v1(now())
FROM a

-- name: typing
-- api.typing_v1's outcome (a refusal, or what was done), its time as the API shows it, and
-- the seconds to wait when rate-limited.
SELECT t.outcome, realtime.ts_v1(t.at), t.wait
FROM api.typing_v1(
    %(session_id)s, %(user_id)s, %(is_typing)s, make_interval(secs => %(for_seconds)s),
    %(origin)s, make_interval(secs => %(refresh)s), %(rate)s, %(burst)s) AS t

-- name: users
-- Refused, one row whose user is NULL.
WITH a AS MATERIALIZED (
    SELECT api.access_refusal_v1(%(session_id)s, %(user_id)s) AS refusal)
SELECT a.refusal, u.online
FROM a
LEFT JOIN LATERAL (
    SELECT l.online FROM realtime.presence_list_v1(%(topic)s) AS l(online)
    WHERE a.refusal IS NULL) AS u ON true
