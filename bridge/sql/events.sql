-- Reads of the event log for the bridge. Every read is one statement, so the rows and the
-- topic's counter come from one snapshot.

-- name: catch_up
-- For each topic, the events after its head (a page), with the counter in the same snapshot.
-- A NULL head asks only for the counter: the topic is new to this process.
SELECT h.topic, coalesce(s.last_seq, 0) AS last_seq, e.seq, e.type, e.origin, e.payload::text
FROM unnest(%(topics)s::text[], %(heads)s::bigint[]) AS h(topic, head)
LEFT JOIN realtime.streams s ON s.topic = h.topic
LEFT JOIN LATERAL (
    SELECT ev.seq, ev.type, ev.origin, ev.payload
    FROM realtime.events ev
    WHERE h.head IS NOT NULL AND ev.topic = h.topic AND ev.seq > h.head
    ORDER BY ev.seq
    LIMIT %(page)s
) e ON true
ORDER BY h.topic, e.seq

-- name: backlog
-- One page of a subscriber's backlog, (after, upto].
SELECT seq, type, origin, payload::text
FROM realtime.events
WHERE topic = %(topic)s AND seq > %(after)s AND seq <= %(upto)s
ORDER BY seq
LIMIT %(page)s

-- name: last_seq
SELECT coalesce((SELECT last_seq FROM realtime.streams WHERE topic = %(topic)s), 0)

-- name: prune
-- Retention, run by one node at a time: the others skip while one holds the lock.
SELECT CASE WHEN pg_try_advisory_xact_lock(%(lock)s)
            THEN realtime.prune_events_v1(make_interval(secs => %(keep)s))
            ELSE 0 END
