-- An order's timeline reads one entity's events in version order; without this index that is a
-- scan of every event ever stored.
CREATE INDEX events_by_entity ON events (entity_id, topic, seq);
