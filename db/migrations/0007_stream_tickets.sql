-- A ticket that opened an SSE stream may open it again: a browser's EventSource reconnects
-- by itself to the same URL (ticket included) with Last-Event-ID, and a ticket used up by
-- its first connection made that reconnection fail with 401, which stops an EventSource for
-- good. So a ticket redeemed by an SSE stream is bound to that stream's topic and held by
-- its connection while it is open; when the connection ends, the ticket is good for
-- TICKET_TTL_SECONDS more, for that topic's stream only and one connection at a time
-- (api/tickets.py). A WebSocket still uses its ticket up.
ALTER TABLE realtime.tickets ADD COLUMN IF NOT EXISTS stream text;   -- NULL: never used
ALTER TABLE realtime.tickets ADD COLUMN IF NOT EXISTS held_by text;  -- the open connection
ALTER TABLE realtime.tickets ADD COLUMN IF NOT EXISTS held_on text;  -- and its node
