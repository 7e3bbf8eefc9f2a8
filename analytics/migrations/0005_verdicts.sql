-- Every look at an experiment (`prefloop ab analyze`, the automatic loop): per
-- metric the estimate, the fixed-horizon p-value and the always-valid sequential
-- p-value, which is the running minimum over the looks, read back at the next.
CREATE TABLE IF NOT EXISTS verdicts
(
    experiment_id LowCardinality(String),
    ts            DateTime64(3, 'UTC'),
    metric        LowCardinality(String),
    estimate      Float64,
    p_value       Float64,
    p_sequential  Float64,
    users_a       UInt64,
    users_b       UInt64,
    decision      LowCardinality(String),
    reason        String
)
ENGINE = MergeTree
ORDER BY (experiment_id, ts, metric)
