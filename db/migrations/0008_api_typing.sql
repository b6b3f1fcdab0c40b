-- What a REST client last said of its typing in a topic, per user, over every process
-- (db/functions/api.sql, api.typing_v1): the realtime transports keep the same per
-- connection in memory (api/typing_state.py) to coalesce repeats and meter publications,
-- each of which is a NOTIFY and a frame to every subscriber of the session. Unlogged:
-- after a crash a user's next `true` is published, which is what a fresh state does anyway.
CREATE UNLOGGED TABLE IF NOT EXISTS api.typing (
    topic        text NOT NULL,
    user_id      uuid NOT NULL,
    active       boolean NOT NULL DEFAULT false,  -- the last publication said `true`
    published_at timestamptz,
    until        timestamptz,                     -- when an unrenewed `true` runs out
    tokens       double precision NOT NULL,       -- the publication bucket, as of `stamp`
    stamp        timestamptz NOT NULL,
    PRIMARY KEY (topic, user_id)
);
CREATE INDEX IF NOT EXISTS typing_stamp_idx ON api.typing (stamp);
