-- The record type (from the writer fingerprint) and the event's own id (the first
-- field of every schema: interaction_id, event_id, pair_id, ...) of each raw
-- event, written by the sink. A record re-delivered by Kafka (same topic,
-- partition, offset) collapses on merge; one emitted twice by a client (same
-- event id at two offsets) is counted once with uniqExact(event_id) or
-- LIMIT 1 BY event_id.
ALTER TABLE raw_events
    ADD COLUMN IF NOT EXISTS record_type LowCardinality(String) DEFAULT '',
    ADD COLUMN IF NOT EXISTS event_id String DEFAULT ''
