-- Every recorded event is queued for the relay by the database itself: one statement per command
-- instead of two per event, and no way to record an event without queueing it.
CREATE FUNCTION events_to_outbox() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO outbox (event_id) VALUES (NEW.id);
    RETURN NULL;
END;
$$;

CREATE TRIGGER events_to_outbox AFTER INSERT ON events
FOR EACH ROW EXECUTE FUNCTION events_to_outbox();
