-- courtside's own state. Everything here lives in schema `realtime`, apart from the app's tables.

CREATE SCHEMA IF NOT EXISTS realtime;

-- One counter per topic. The emitting trigger increments it and holds the row lock until
-- commit, which makes each topic's seq gapless and in commit order (DESIGN §4.4).
CREATE TABLE IF NOT EXISTS realtime.streams (
    topic    text PRIMARY KEY,
    last_seq bigint NOT NULL DEFAULT 0
);

-- The durable log. Clients resume from it; the bridge repairs gaps from it.
CREATE TABLE IF NOT EXISTS realtime.events (
    topic      text NOT NULL,
    seq        bigint NOT NULL,
    type       text NOT NULL,
    payload    jsonb NOT NULL,
    origin     text,
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (topic, seq)
);
CREATE INDEX IF NOT EXISTS events_created_at_idx ON realtime.events (created_at);

-- The comments touched by each open transaction, first touch first. Unlogged: a row lives
-- from a transaction's first write to its commit, never longer.
CREATE UNLOGGED TABLE IF NOT EXISTS realtime.pending_comments (
    xid        xid8 NOT NULL,
    comment_id uuid NOT NULL,
    ord        bigint GENERATED ALWAYS AS IDENTITY,
    inserted   boolean NOT NULL,  -- the first touch was an INSERT of the comment
    PRIMARY KEY (xid, comment_id)
);

-- What subscribers were last told about each comment: the flush compares a comment as it
-- stands at commit with this, under the topic lock, to choose created / updated / deleted.
-- Comparing with the transaction's own "before" snapshot instead would go wrong when two
-- transactions touch one comment without conflicting row locks (a mention insert takes
-- only KEY SHARE): both could report the same delete.
CREATE TABLE IF NOT EXISTS realtime.comment_state (
    comment_id uuid PRIMARY KEY,
    topic      text NOT NULL,
    visible    boolean NOT NULL,
    digest     uuid,                         -- md5 of the last rendering sent
    mentions   uuid[] NOT NULL DEFAULT '{}'  -- mentioned users as last sent
);
