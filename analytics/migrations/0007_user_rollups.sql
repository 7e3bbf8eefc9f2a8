-- Per-user rollups of an experiment's interactions and scores, which the verdict
-- reads instead of the event tables (prefloop.analytics.rollup). One row per
-- experiment, window start (`since`: the run's start), user and arm, as computed
-- from the event tables (FINAL) at `computed_at`: a user recomputed since has a
-- newer row, so read them with FINAL. `moved`: the user has rows in both arms.
-- `model_version`: the version of the user's latest interaction in the arm, at `last_ts`.

CREATE TABLE IF NOT EXISTS interactions_by_user
(
    experiment_id     LowCardinality(String),
    since             DateTime64(3, 'UTC'),
    user_id           String,
    arm               LowCardinality(String),
    moved             Bool,
    computed_at       DateTime64(6, 'UTC'),
    model_version     LowCardinality(String),
    last_ts           DateTime64(3, 'UTC'),
    requests          UInt64,
    sessions          UInt64,
    span              Float64,
    latencies         Array(UInt32),
    completion_tokens UInt64,
    latency_sum       UInt64,
    days              Array(Date)
)
ENGINE = ReplacingMergeTree(computed_at)
ORDER BY (experiment_id, since, user_id, arm);

CREATE TABLE IF NOT EXISTS scores_by_user
(
    experiment_id LowCardinality(String),
    since         DateTime64(3, 'UTC'),
    user_id       String,
    arm           LowCardinality(String),
    moved         Bool,
    computed_at   DateTime64(6, 'UTC'),
    responses     UInt64,
    score_sum     Float64,
    rated         UInt64,
    rating_sum    Float64,
    n_continued   UInt64,
    n_copied      UInt64,
    n_regenerated UInt64,
    n_reported    UInt64
)
ENGINE = ReplacingMergeTree(computed_at)
ORDER BY (experiment_id, since, user_id, arm);

-- Up to when each rollup was brought: rows the event tables received before
-- `built_to` (less a margin for inserts still in flight) are in it.
CREATE TABLE IF NOT EXISTS rollup_builds
(
    experiment_id String,
    since         DateTime64(3, 'UTC'),
    built_to      DateTime64(6, 'UTC')
)
ENGINE = ReplacingMergeTree(built_to)
ORDER BY (experiment_id, since);

-- Which users changed since a build is read by insertion time: a min-max index on
-- it lets that read skip the parts inserted before (new parts get it, older ones
-- are read whole until merged).
ALTER TABLE interactions ADD INDEX IF NOT EXISTS inserted_at_minmax _inserted_at TYPE minmax GRANULARITY 1;
ALTER TABLE scores ADD INDEX IF NOT EXISTS inserted_at_minmax _inserted_at TYPE minmax GRANULARITY 1
