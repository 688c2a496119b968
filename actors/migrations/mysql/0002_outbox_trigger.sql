-- Every recorded event is queued for the relay by the database itself: one statement per command
-- instead of two per event, and no way to record an event without queueing it. One statement, so
-- no BEGIN ... END and no DELIMITER (which is a client's command, not SQL).
CREATE TRIGGER events_to_outbox AFTER INSERT ON events
FOR EACH ROW INSERT INTO outbox (event_id) VALUES (NEW.id);
