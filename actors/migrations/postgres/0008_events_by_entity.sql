-- An order's timeline reads one entity's events in version order; without this index that is a
-- scan of every event ever stored. IF NOT EXISTS: an operator may build it beforehand without
-- blocking writes (PostgreSQL: CREATE INDEX CONCURRENTLY events_by_entity ON events (entity_id,
-- topic, seq)), and this migration then finds it there.
CREATE INDEX IF NOT EXISTS events_by_entity ON events (entity_id, topic, seq);
