-- The queries of courtside/migrate.py.

-- name: lock
SELECT pg_advisory_lock(%(key)s)

-- name: unlock
SELECT pg_advisory_unlock(%(key)s)

-- name: set_lock_timeout
-- For the transaction: a statement waits this long for a lock, then fails (LockNotAvailable).
SELECT set_config('lock_timeout', %(ms)s, true)

-- name: create_state
-- What migrate has applied: each migration once, with its checksum; and the repeatable files
-- (functions and triggers) as last applied, with what they installed (`installed` below).
CREATE TABLE IF NOT EXISTS public.courtside_migrations (
    name text PRIMARY KEY,
    checksum text NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now());
CREATE TABLE IF NOT EXISTS public.courtside_repeatables (
    only_row boolean PRIMARY KEY DEFAULT true CHECK (only_row),
    files text NOT NULL,
    installed text NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now())

-- name: applied_migrations
SELECT name, checksum FROM public.courtside_migrations

-- name: record_migration
INSERT INTO public.courtside_migrations (name, checksum) VALUES (%(name)s, %(checksum)s)

-- name: repeatables
SELECT files, installed FROM public.courtside_repeatables

-- name: record_repeatables
INSERT INTO public.courtside_repeatables (files, installed) VALUES (%(files)s, %(installed)s)
ON CONFLICT (only_row) DO UPDATE
SET files = excluded.files, installed = excluded.installed, applied_at = excluded.applied_at

-- name: installed
-- A digest of what the repeatable files install, as the database has it now: courtside's
-- triggers (enabled or not) and the functions of its schemas. It changes when one of them
-- is dropped (with its table, say, by a Laravel migration), disabled, or replaced by hand.
SELECT md5(coalesce(string_agg(def, E'\n' ORDER BY def), ''))
FROM (
    SELECT format('%s %s', pg_get_triggerdef(t.oid), t.tgenabled) AS def
    FROM pg_trigger t
    WHERE NOT t.tgisinternal AND t.tgname LIKE 'courtside%'
    UNION ALL
    SELECT pg_get_functiondef(p.oid)
    FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
    WHERE n.nspname IN ('realtime', 'api') AND p.prokind IN ('f', 'p')
) AS d

-- name: oldest_transactions
-- Who may hold the locks a migration waits for: the oldest open transactions but ours.
SELECT pid, state, extract(epoch FROM now() - xact_start)::int AS seconds,
       left(regexp_replace(query, '\s+', ' ', 'g'), 120) AS query
FROM pg_stat_activity
WHERE datname = current_database() AND pid <> pg_backend_pid() AND xact_start IS NOT NULL
ORDER BY xact_start
LIMIT 3
