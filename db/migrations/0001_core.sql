-- The application's tables, with the names and shapes a Laravel app would give them,
-- so that an existing Laravel backend and courtside can share one database.

CREATE TABLE IF NOT EXISTS users (
    id          uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    firstname   text NOT NULL,
    lastname    text NOT NULL,
    avatar      text,
    email       text UNIQUE,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE IF NOT EXISTS sport_sessions (
    id          uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    title       text NOT NULL,
    visibility  text NOT NULL DEFAULT 'private' CHECK (visibility IN ('public', 'private')),
    owner_id    uuid NOT NULL REFERENCES users (id),
    starts_at   timestamptz,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    deleted_at  timestamptz
);
CREATE INDEX IF NOT EXISTS sport_sessions_owner_id_idx ON sport_sessions (owner_id);

CREATE TABLE IF NOT EXISTS sport_session_participants (
    sport_session_id uuid NOT NULL REFERENCES sport_sessions (id) ON DELETE CASCADE,
    user_id          uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    role             text NOT NULL DEFAULT 'participant',
    created_at       timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (sport_session_id, user_id)
);
CREATE INDEX IF NOT EXISTS sport_session_participants_user_id_idx
    ON sport_session_participants (user_id);

CREATE TABLE IF NOT EXISTS sport_session_comments (
    id               uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    sport_session_id uuid NOT NULL REFERENCES sport_sessions (id) ON DELETE CASCADE,
    user_id          uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    content          text NOT NULL,
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now(),
    deleted_at       timestamptz,
    -- The API trims and checks too; this holds for every other writer.
    CONSTRAINT sport_session_comments_content_length
        CHECK (char_length(content) BETWEEN 1 AND 1000 AND btrim(content) <> '')
);
-- The listing: a session's visible comments, newest first, keyset on (created_at, id).
CREATE INDEX IF NOT EXISTS sport_session_comments_listing_idx
    ON sport_session_comments (sport_session_id, created_at DESC, id DESC)
    WHERE deleted_at IS NULL;
CREATE INDEX IF NOT EXISTS sport_session_comments_user_id_idx
    ON sport_session_comments (user_id);

CREATE TABLE IF NOT EXISTS sport_session_comment_mentions (
    id                uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    comment_id        uuid NOT NULL REFERENCES sport_session_comments (id) ON DELETE CASCADE,
    mentioned_user_id uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    created_at        timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT sport_session_comment_mentions_unique UNIQUE (comment_id, mentioned_user_id)
);
CREATE INDEX IF NOT EXISTS sport_session_comment_mentions_user_idx
    ON sport_session_comment_mentions (mentioned_user_id);

-- Exactly the table Laravel Sanctum's migration creates (with uuidMorphs), so a token
-- minted by the Laravel app authenticates here unchanged. Laravel stores naive UTC times.
CREATE TABLE IF NOT EXISTS personal_access_tokens (
    id             bigserial PRIMARY KEY,
    tokenable_type varchar(255) NOT NULL,
    tokenable_id   uuid NOT NULL,
    name           text NOT NULL,
    token          varchar(64) NOT NULL UNIQUE,
    abilities      text,
    last_used_at   timestamp(0) without time zone,
    expires_at     timestamp(0) without time zone,
    created_at     timestamp(0) without time zone,
    updated_at     timestamp(0) without time zone
);
CREATE INDEX IF NOT EXISTS personal_access_tokens_tokenable_type_tokenable_id_index
    ON personal_access_tokens (tokenable_type, tokenable_id);
CREATE INDEX IF NOT EXISTS personal_access_tokens_expires_at_index
    ON personal_access_tokens (expires_at);
