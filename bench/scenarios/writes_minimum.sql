-- Baseline `minimum` of the writes scenario: the least a trigger keeping DESIGN §4 does for
-- a comment inserted alone in its transaction. It takes the topic's counter (its row lock
-- held to commit: §4.4), appends the event to the durable log (§4.5) and NOTIFYs it, in
-- one statement, as courtside's own flush does. It skips the rest of courtside's work: the
-- payload is the row's own JSON rather than the API's rendering (§4.3), and there is no
-- per-transaction bookkeeping (§4.2) and no deferral to commit. Its channel has no listener,
-- like courtside's own during the scenario.
CREATE OR REPLACE FUNCTION public.bench_minimum_emit() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    v_topic text := 'session:' || NEW.sport_session_id;
    n bigint;
BEGIN
    -- A plain UPDATE, as courtside's flush does; a topic's first event creates its counter.
    FOR attempt IN 1..2 LOOP
        WITH s AS (
            UPDATE realtime.streams AS s SET last_seq = s.last_seq + 1
            WHERE s.topic = v_topic
            RETURNING s.topic, s.last_seq),
        e AS (
            INSERT INTO realtime.events (topic, seq, type, payload)
            SELECT s.topic, s.last_seq, 'comment.created',
                   jsonb_build_object('comment', to_jsonb(NEW))
            FROM s
            RETURNING jsonb_build_object(
                'k', 'e', 't', topic, 's', seq, 'e', type, 'o', origin, 'd', payload)::text AS msg)
        SELECT count(pg_notify('bench_minimum', e.msg)) INTO n FROM e;
        EXIT WHEN n > 0;
        INSERT INTO realtime.streams AS s (topic) VALUES (v_topic)
        ON CONFLICT (topic) DO NOTHING;
    END LOOP;
    RETURN NULL;
END
$$;
CREATE TRIGGER bench_baseline AFTER INSERT ON public.sport_session_comments
    FOR EACH ROW EXECUTE FUNCTION public.bench_minimum_emit();
