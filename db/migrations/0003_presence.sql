-- Presence: who is in which session right now, across every node. Unlogged: presence is
-- rebuilt by live connections, so losing it in a crash costs nothing and writes stay cheap.

-- Each live courtside process, and when it last said it was alive.
CREATE UNLOGGED TABLE IF NOT EXISTS realtime.nodes (
    node_id      text PRIMARY KEY,
    started_at   timestamptz NOT NULL DEFAULT now(),
    heartbeat_at timestamptz NOT NULL DEFAULT now()
);

-- One row per (topic, user, connection). A user is online in a topic while any row of
-- theirs there is alive: a realtime connection (node_id set, kept alive by its node's
-- heartbeat) or a REST join (node_id NULL, alive until expires_at).
CREATE UNLOGGED TABLE IF NOT EXISTS realtime.presence (
    topic        text NOT NULL,
    user_id      uuid NOT NULL,
    conn_id      text NOT NULL,
    node_id      text,
    joined_at    timestamptz NOT NULL DEFAULT now(),
    last_seen    timestamptz NOT NULL DEFAULT now(),
    expires_at   timestamptz,
    typing_until timestamptz,
    PRIMARY KEY (topic, user_id, conn_id)
);
CREATE INDEX IF NOT EXISTS presence_node_idx ON realtime.presence (node_id);
CREATE INDEX IF NOT EXISTS presence_expires_idx ON realtime.presence (expires_at)
    WHERE expires_at IS NOT NULL;
