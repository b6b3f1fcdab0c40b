-- Baseline `naive` of the writes scenario: the trigger most apps write first. It NOTIFYs
-- each inserted row as JSON and keeps nothing: no log, no order, no resume.
CREATE OR REPLACE FUNCTION public.bench_naive_notify() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('bench_naive', json_build_object(
        'session', NEW.sport_session_id, 'comment', row_to_json(NEW))::text);
    RETURN NULL;
END
$$;
CREATE TRIGGER bench_baseline AFTER INSERT ON public.sport_session_comments
    FOR EACH ROW EXECUTE FUNCTION public.bench_naive_notify();
