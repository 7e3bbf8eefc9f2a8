-- Aggregates kept up to date as rows arrive (materialized views), for dashboards
-- and analysts; the verdict reads the event tables themselves (FINAL), so that a
-- late revision of a score or a client's duplicate never skews a decision.

-- The first exposure of each user to each arm of each experiment.
CREATE TABLE IF NOT EXISTS first_exposures
(
    experiment_id LowCardinality(String),
    user_id       String,
    arm           LowCardinality(String),
    first_ts      SimpleAggregateFunction(min, DateTime64(3, 'UTC')),
    model_version SimpleAggregateFunction(any, String),
    exposures     SimpleAggregateFunction(sum, UInt64)
)
ENGINE = AggregatingMergeTree
ORDER BY (experiment_id, user_id, arm);

CREATE MATERIALIZED VIEW IF NOT EXISTS first_exposures_mv TO first_exposures AS
SELECT experiment_id, user_id, arm, min(ts) AS first_ts,
       any(toString(model_version)) AS model_version, count() AS exposures
FROM exposures
GROUP BY experiment_id, user_id, arm;

-- Per experiment, arm, model version and day: counts, sums and sums of squares
-- (so means and variances follow), signal counts, latency quantile states and
-- unique users. Read with the -Merge combinators, e.g.
--   SELECT arm, sum(interactions), quantilesTDigestMerge(0.5, 0.95, 0.99)(latency_quantiles)
--   FROM arm_daily GROUP BY arm
-- Scores count at their first settling (revision 0), as the live windows do.
CREATE TABLE IF NOT EXISTS arm_daily
(
    experiment_id       LowCardinality(String),
    arm                 LowCardinality(String),
    model_version       LowCardinality(String),
    day                 Date,
    interactions        SimpleAggregateFunction(sum, UInt64),
    users               AggregateFunction(uniq, String),
    latency_quantiles   AggregateFunction(quantilesTDigest(0.5, 0.95, 0.99), UInt32),
    latency_ms_sum      SimpleAggregateFunction(sum, UInt64),
    prompt_tokens_sum   SimpleAggregateFunction(sum, UInt64),
    completion_tokens_sum SimpleAggregateFunction(sum, UInt64),
    scored              SimpleAggregateFunction(sum, UInt64),
    implicit_score_sum  SimpleAggregateFunction(sum, Float64),
    implicit_score_sum2 SimpleAggregateFunction(sum, Float64),
    rated               SimpleAggregateFunction(sum, UInt64),
    rating_sum          SimpleAggregateFunction(sum, Float64),
    rating_sum2         SimpleAggregateFunction(sum, Float64),
    continued           SimpleAggregateFunction(sum, UInt64),
    copied              SimpleAggregateFunction(sum, UInt64),
    regenerated         SimpleAggregateFunction(sum, UInt64),
    edited              SimpleAggregateFunction(sum, UInt64),
    reported            SimpleAggregateFunction(sum, UInt64)
)
ENGINE = AggregatingMergeTree
ORDER BY (experiment_id, arm, model_version, day);

CREATE MATERIALIZED VIEW IF NOT EXISTS arm_daily_interactions_mv TO arm_daily AS
SELECT experiment_id, arm, model_version, toDate(ts) AS day,
       count() AS interactions,
       uniqState(user_id) AS users,
       quantilesTDigestState(0.5, 0.95, 0.99)(latency_ms) AS latency_quantiles,
       sum(latency_ms) AS latency_ms_sum,
       sum(prompt_tokens) AS prompt_tokens_sum,
       sum(completion_tokens) AS completion_tokens_sum
FROM interactions
GROUP BY experiment_id, arm, model_version, day;

CREATE MATERIALIZED VIEW IF NOT EXISTS arm_daily_scores_mv TO arm_daily AS
SELECT experiment_id, arm, model_version, toDate(ts) AS day,
       count() AS scored,
       sum(implicit_score) AS implicit_score_sum,
       sum(implicit_score * implicit_score) AS implicit_score_sum2,
       count(rating) AS rated,
       sum(ifNull(rating, 0)) AS rating_sum,
       sum(ifNull(rating * rating, 0)) AS rating_sum2,
       countIf(signals_continued) AS continued,
       countIf(signals_copied) AS copied,
       countIf(signals_regenerated) AS regenerated,
       countIf(signals_edited) AS edited,
       countIf(signals_reported) AS reported
FROM scores
WHERE revision = 0
GROUP BY experiment_id, arm, model_version, day
