-- What the live monitor charts: per experiment, arm, model version and minute, the
-- same counts, sums, sums of squares, latency quantile states and unique users as
-- arm_daily, kept up to date as rows arrive. A chart of an experiment of any size
-- reads one row per arm and minute, never the events. Read with the -Merge
-- combinators; coarser buckets merge minutes (toStartOfInterval(minute, ...)).
CREATE TABLE IF NOT EXISTS arm_minutely
(
    experiment_id       LowCardinality(String),
    arm                 LowCardinality(String),
    model_version       LowCardinality(String),
    minute              DateTime('UTC'),
    interactions        SimpleAggregateFunction(sum, UInt64),
    users               AggregateFunction(uniq, String),
    latency_quantiles   AggregateFunction(quantilesTDigest(0.5, 0.95, 0.99), UInt32),
    scored              SimpleAggregateFunction(sum, UInt64),
    implicit_score_sum  SimpleAggregateFunction(sum, Float64),
    implicit_score_sum2 SimpleAggregateFunction(sum, Float64),
    rated               SimpleAggregateFunction(sum, UInt64),
    rating_sum          SimpleAggregateFunction(sum, Float64),
    rating_sum2         SimpleAggregateFunction(sum, Float64),
    regenerated         SimpleAggregateFunction(sum, UInt64),
    reported            SimpleAggregateFunction(sum, UInt64)
)
ENGINE = AggregatingMergeTree
ORDER BY (experiment_id, minute, arm, model_version);

CREATE MATERIALIZED VIEW IF NOT EXISTS arm_minutely_interactions_mv TO arm_minutely AS
SELECT experiment_id, arm, model_version, toStartOfMinute(ts) AS minute,
       count() AS interactions,
       uniqState(user_id) AS users,
       quantilesTDigestState(0.5, 0.95, 0.99)(latency_ms) AS latency_quantiles
FROM interactions
GROUP BY experiment_id, arm, model_version, minute;

CREATE MATERIALIZED VIEW IF NOT EXISTS arm_minutely_scores_mv TO arm_minutely AS
SELECT experiment_id, arm, model_version, toStartOfMinute(ts) AS minute,
       count() AS scored,
       sum(implicit_score) AS implicit_score_sum,
       sum(implicit_score * implicit_score) AS implicit_score_sum2,
       count(rating) AS rated,
       sum(ifNull(rating, 0)) AS rating_sum,
       sum(ifNull(rating * rating, 0)) AS rating_sum2,
       countIf(signals_regenerated) AS regenerated,
       countIf(signals_reported) AS reported
FROM scores
WHERE revision = 0
GROUP BY experiment_id, arm, model_version, minute;

-- the rows stored before this migration
INSERT INTO arm_minutely (experiment_id, arm, model_version, minute, interactions, users,
                          latency_quantiles)
SELECT experiment_id, arm, model_version, toStartOfMinute(ts) AS minute, count(),
       uniqState(user_id), quantilesTDigestState(0.5, 0.95, 0.99)(latency_ms)
FROM interactions
GROUP BY experiment_id, arm, model_version, minute;

INSERT INTO arm_minutely (experiment_id, arm, model_version, minute, scored,
                          implicit_score_sum, implicit_score_sum2, rated, rating_sum,
                          rating_sum2, regenerated, reported)
SELECT experiment_id, arm, model_version, toStartOfMinute(ts) AS minute, count(),
       sum(implicit_score), sum(implicit_score * implicit_score), count(rating),
       sum(ifNull(rating, 0)), sum(ifNull(rating * rating, 0)),
       countIf(signals_regenerated), countIf(signals_reported)
FROM scores
WHERE revision = 0
GROUP BY experiment_id, arm, model_version, minute
