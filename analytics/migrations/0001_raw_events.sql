-- Every Kafka record that reaches ClickHouse, as it was on the topic: the
-- landing table of the sink and of the stack's round trip. Re-delivered records
-- (same topic, partition and offset) collapse on merge; queries that must count
-- each once use FINAL or GROUP BY the key.
CREATE TABLE IF NOT EXISTS raw_events
(
    topic       LowCardinality(String),
    partition   UInt32,
    offset      UInt64,
    key         String,
    value       String,
    ts          DateTime64(3, 'UTC'),
    inserted_at DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree(inserted_at)
PARTITION BY toYYYYMM(ts)
ORDER BY (topic, partition, offset)
