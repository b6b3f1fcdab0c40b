-- Queries of the realtime transports (api/ws.py, api/sse.py, api/tickets.py).

-- name: issue_ticket
-- Refused (no row) when the token already holds `limit` unexpired tickets.
WITH outstanding AS (
    SELECT count(*) AS n FROM realtime.tickets
    WHERE token_id = %(token_id)s AND expires_at > now()
)
INSERT INTO realtime.tickets (ticket_hash, token_id, user_id, expires_at)
SELECT %(hash)s, %(token_id)s, %(user_id)s, now() + make_interval(secs => %(ttl)s)
FROM outstanding WHERE outstanding.n < %(limit)s
RETURNING realtime.ts_v1(expires_at) AS expires_at

-- name: prune_tickets
-- A ticket held by an open stream stays, whatever its expires_at, unless its node is gone.
DELETE FROM realtime.tickets
WHERE expires_at < now() - interval '5 minutes'
  AND (held_on IS NULL OR held_on NOT IN (SELECT node_id FROM realtime.nodes))

-- name: consume_ticket
-- Single use: the row is gone whatever the outcome, unless an SSE stream holds it (the
-- stream's own, below). The token behind it must still be valid (not deleted, not
-- expired, its user still there); Laravel stores naive UTC times.
WITH used AS (
    DELETE FROM realtime.tickets WHERE ticket_hash = %(hash)s AND stream IS NULL
    RETURNING token_id, user_id, expires_at
), token AS (
    SELECT used.token_id, used.user_id, used.expires_at AS ticket_expires_at,
           api.token_deadline_v1(p.expires_at, p.created_at,
                                 %(expiration_minutes)s::integer) AS token_expires_at
    FROM used
    JOIN public.personal_access_tokens p ON p.id = used.token_id
    JOIN public.users u ON u.id = p.tokenable_id
)
SELECT token_id, user_id, token_expires_at
FROM token
WHERE ticket_expires_at > now() AND (token_expires_at IS NULL OR token_expires_at > now())

-- name: hold_ticket
-- An SSE stream's ticket, for %(conn_id)s until release_ticket: a ticket never used, or
-- one already bound to this topic's stream, either held by a connection (which this one
-- replaces: a reconnection usually comes before the server notices that the old
-- connection died, and a crashed node never releases its connections' tickets) or
-- released less than TICKET_TTL_SECONDS ago; its token still valid. The replaced
-- connection's node is told to close it (control `ticket.moved`). Of connections arriving
-- together, the last to get the row's lock holds the ticket. No row: refused.
WITH old AS (
    SELECT t.ticket_hash, t.held_by,
           api.token_deadline_v1(p.expires_at, p.created_at,
                                 %(expiration_minutes)s::integer) AS token_expires_at
    FROM realtime.tickets t
    JOIN public.personal_access_tokens p ON p.id = t.token_id
    JOIN public.users u ON u.id = p.tokenable_id
    WHERE t.ticket_hash = %(hash)s
      AND (t.held_by IS NOT NULL OR t.expires_at > now())
      AND (t.stream IS NULL OR t.stream = %(topic)s)
    FOR UPDATE OF t
), held AS (
    UPDATE realtime.tickets t
    SET stream = %(topic)s, held_by = %(conn_id)s, held_on = %(node_id)s
    FROM old
    WHERE t.ticket_hash = old.ticket_hash
      AND (old.token_expires_at IS NULL OR old.token_expires_at > now())
    RETURNING t.token_id, t.user_id, old.token_expires_at, old.held_by AS replaced
)
SELECT token_id, user_id, token_expires_at,
       replaced IS NOT NULL AND (
           SELECT true FROM realtime.publish_control_v1('ticket.moved',
               jsonb_build_object('tokenId', token_id, 'connId', replaced))) AS replaced
FROM held

-- name: release_tickets
-- The streams %(conn_ids)s ended: each one's ticket (%(hashes)s, in the same order) may
-- reopen that stream for %(ttl)s seconds. A ticket another connection has taken over since
-- is that one's: left alone.
UPDATE realtime.tickets t
SET held_by = NULL, held_on = NULL, expires_at = now() + make_interval(secs => %(ttl)s)
FROM unnest(%(hashes)s::text[], %(conn_ids)s::text[]) AS r(ticket_hash, conn_id)
WHERE t.ticket_hash = r.ticket_hash AND t.held_by = r.conn_id

-- name: session_access_many
-- Who may read a session's events: its participants, or anyone when it is public. One row
-- per (session, user) pair asked whose session exists (api/session_access.py).
SELECT k.session_id, k.user_id, s.visibility,
       s.deleted_at IS NOT NULL AS deleted,
       EXISTS (SELECT 1 FROM public.sport_session_participants sp
               WHERE sp.sport_session_id = s.id AND sp.user_id = k.user_id) AS participant
FROM unnest(%(session_ids)s::uuid[], %(user_ids)s::uuid[]) AS k(session_id, user_id)
JOIN public.sport_sessions s ON s.id = k.session_id

-- name: session_readers
-- After a control notification: which of these users may still read the session.
SELECT u.user_id
FROM unnest(%(user_ids)s::uuid[]) AS u(user_id)
JOIN public.sport_sessions s ON s.id = %(session_id)s AND s.deleted_at IS NULL
WHERE s.visibility = 'public'
   OR EXISTS (SELECT 1 FROM public.sport_session_participants sp
              WHERE sp.sport_session_id = s.id AND sp.user_id = u.user_id)

-- name: live_tokens
-- After the LISTEN connection came back (control notifications may have been missed):
-- which of these tokens still exist, and until when.
SELECT p.id,
       api.token_deadline_v1(p.expires_at, p.created_at, %(expiration_minutes)s::integer)
           AS expires_at
FROM public.personal_access_tokens p
WHERE p.id = ANY (%(token_ids)s::bigint[])

-- name: ping
SELECT 1
