-- Realtime transports (issue 5): single-use tickets for clients that cannot send an
-- Authorization header (browser EventSource and WebSocket).

-- A ticket stands for the bearer token that asked for it, for 60 seconds and one
-- connection. Only its sha256 is stored, like the tokens themselves; deleting the token
-- deletes its outstanding tickets.
CREATE TABLE IF NOT EXISTS realtime.tickets (
    ticket_hash text PRIMARY KEY,
    token_id    bigint NOT NULL REFERENCES public.personal_access_tokens (id) ON DELETE CASCADE,
    user_id     uuid NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    expires_at  timestamptz NOT NULL
);
CREATE INDEX IF NOT EXISTS tickets_token_id_idx ON realtime.tickets (token_id);
CREATE INDEX IF NOT EXISTS tickets_expires_at_idx ON realtime.tickets (expires_at);
