-- One typed table per topic: the sink decodes each event (its latest schema
-- version) into a row. Field names are the schema's; a nested record's fields are
-- flattened with '_' (signals_copied); arrays of records (messages, prompt,
-- source offsets) are JSON text; an Avro null string is ''. Every row carries the
-- Kafka partition and offset it came from (_partition, _offset), which the sink
-- uses to insert each record once, and the time it was inserted (_inserted_at).
--
-- A client that sent the same event twice (same id at two offsets) collapses on
-- merge (ReplacingMergeTree on the id); queries that must count each event once
-- read with FINAL, as the verdict queries do. Retention (TTL) is set from
-- PREFLOOP_CLICKHOUSE_RETENTION_DAYS when the migrations run.

CREATE TABLE IF NOT EXISTS interactions
(
    interaction_id    String,
    response_id       String,
    regenerates       String,
    conversation_id   String,
    turn              UInt32,
    ts                DateTime64(3, 'UTC'),
    user_id           String,
    session_id        String,
    experiment_id     LowCardinality(String),
    arm               LowCardinality(String),
    model_version     LowCardinality(String),
    messages          String,
    response          String,
    latency_ms        UInt32,
    prompt_tokens     UInt32,
    completion_tokens UInt32,
    uncertainty       Nullable(Float64),
    metadata          Map(String, String),
    _partition        UInt32,
    _offset           UInt64,
    _inserted_at      DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree(_inserted_at)
PARTITION BY toYYYYMM(ts)
ORDER BY (experiment_id, arm, user_id, interaction_id);

CREATE TABLE IF NOT EXISTS feedback
(
    event_id        String,
    ts              DateTime64(3, 'UTC'),
    kind            LowCardinality(String),
    interaction_id  String,
    response_id     String,
    conversation_id String,
    user_id         String,
    session_id      String,
    value           Nullable(Float64),
    text            String,
    metadata        Map(String, String),
    _partition      UInt32,
    _offset         UInt64,
    _inserted_at    DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree(_inserted_at)
PARTITION BY toYYYYMM(ts)
ORDER BY (kind, user_id, event_id);

-- One row per revision of a response's score: FINAL (or argMax by revision) reads
-- the latest.
CREATE TABLE IF NOT EXISTS scores
(
    interaction_id          String,
    response_id             String,
    conversation_id         String,
    user_id                 String,
    model_version           LowCardinality(String),
    experiment_id           LowCardinality(String),
    arm                     LowCardinality(String),
    revision                UInt32,
    implicit_score          Float64,
    signals_continued       Bool,
    signals_copied          Bool,
    signals_regenerated     Bool,
    signals_edited          Bool,
    signals_reported        Bool,
    signals_session_seconds Nullable(Float64),
    rating                  Nullable(Float64),
    thumbs                  Nullable(Int32),
    settled_reason          LowCardinality(String),
    ts                      DateTime64(3, 'UTC'),
    _partition              UInt32,
    _offset                 UInt64,
    _inserted_at            DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree(revision)
ORDER BY (experiment_id, arm, user_id, response_id);

CREATE TABLE IF NOT EXISTS exposures
(
    exposure_id     String,
    ts              DateTime64(3, 'UTC'),
    experiment_id   LowCardinality(String),
    user_id         String,
    arm             LowCardinality(String),
    model_version   LowCardinality(String),
    bucket          UInt32,
    conversation_id String,
    _partition      UInt32,
    _offset         UInt64,
    _inserted_at    DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree(_inserted_at)
PARTITION BY toYYYYMM(ts)
ORDER BY (experiment_id, user_id, exposure_id);

CREATE TABLE IF NOT EXISTS model_events
(
    event_id       String,
    ts             DateTime64(3, 'UTC'),
    kind           LowCardinality(String),
    model_version  String,
    parent_version String,
    experiment_id  String,
    artifact_uri   String,
    pair_count     Nullable(Int64),
    pair_ranges    String,
    metrics        Map(String, Float64),
    detail         String,
    _partition     UInt32,
    _offset        UInt64,
    _inserted_at   DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree(_inserted_at)
ORDER BY (experiment_id, ts, event_id);

CREATE TABLE IF NOT EXISTS preferences
(
    pair_id                 String,
    prompt                  String,
    chosen                  String,
    rejected                String,
    source                  LowCardinality(String),
    weight                  Float64,
    chosen_interaction_id   String,
    chosen_response_id      String,
    rejected_interaction_id String,
    rejected_response_id    String,
    conversation_id         String,
    user_id                 String,
    model_version           LowCardinality(String),
    source_offsets          String,
    ts                      DateTime64(3, 'UTC'),
    _partition              UInt32,
    _offset                 UInt64,
    _inserted_at            DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree(_inserted_at)
PARTITION BY toYYYYMM(ts)
ORDER BY (model_version, pair_id);

CREATE TABLE IF NOT EXISTS annotation_tasks
(
    task_id         String,
    interaction_id  String,
    response_id     String,
    conversation_id String,
    model_version   LowCardinality(String),
    prompt          String,
    response        String,
    priority        Float64,
    reasons         Array(String),
    sampled_by      LowCardinality(String),
    window_start    DateTime64(3, 'UTC'),
    window_end      DateTime64(3, 'UTC'),
    ts              DateTime64(3, 'UTC'),
    _partition      UInt32,
    _offset         UInt64,
    _inserted_at    DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree(_inserted_at)
PARTITION BY toYYYYMM(ts)
ORDER BY task_id;

CREATE TABLE IF NOT EXISTS annotation_results
(
    result_id       String,
    task_id         String,
    annotator_id    String,
    prompt          String,
    response_a      String,
    response_b      String,
    response_a_id   String,
    response_b_id   String,
    choice          LowCardinality(String),
    interaction_id  String,
    conversation_id String,
    model_version   String,
    ts              DateTime64(3, 'UTC'),
    comment         String,
    _partition      UInt32,
    _offset         UInt64,
    _inserted_at    DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree(_inserted_at)
PARTITION BY toYYYYMM(ts)
ORDER BY result_id;

CREATE TABLE IF NOT EXISTS dead_letters
(
    event_id           String,
    ts                 DateTime64(3, 'UTC'),
    reason             String,
    error_type         LowCardinality(String),
    source_topic       LowCardinality(String),
    source_partition   Int32,
    source_offset      Int64,
    key                String,
    value              String,
    writer_fingerprint String,
    consumer           LowCardinality(String),
    _partition         UInt32,
    _offset            UInt64,
    _inserted_at       DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree(_inserted_at)
PARTITION BY toYYYYMM(ts)
ORDER BY (source_topic, event_id);

-- Users whose data was deleted (`prefloop forget`): training excludes their pairs.
CREATE TABLE IF NOT EXISTS forgotten_users
(
    user_id      String,
    forgotten_at DateTime64(3, 'UTC') DEFAULT now64(3),
    rows_deleted UInt64
)
ENGINE = ReplacingMergeTree(forgotten_at)
ORDER BY user_id
