-- name: create_token
INSERT INTO personal_access_tokens
    (tokenable_type, tokenable_id, name, token, abilities, expires_at, created_at, updated_at)
VALUES ('App\Models\User', %(user_id)s, %(name)s, %(hash)s, '["*"]',
        (now() AT TIME ZONE 'UTC') + make_interval(secs => %(expires_in)s),
        now() AT TIME ZONE 'UTC', now() AT TIME ZONE 'UTC')
RETURNING id

-- name: user_exists
SELECT 1 FROM users WHERE id = %(user_id)s

-- name: demo_user
INSERT INTO users (firstname, lastname, email) VALUES (%(firstname)s, %(lastname)s, %(email)s)
ON CONFLICT (email) DO UPDATE SET firstname = excluded.firstname
RETURNING id

-- name: demo_session
INSERT INTO sport_sessions (title, visibility, owner_id) VALUES (%(title)s, 'private', %(owner)s)
RETURNING id

-- name: demo_join
INSERT INTO sport_session_participants (sport_session_id, user_id, role)
VALUES (%(session_id)s, %(user_id)s, %(role)s)
ON CONFLICT DO NOTHING
