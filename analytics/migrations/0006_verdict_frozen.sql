-- What the first look of an experiment fixes for the later ones, recorded with it:
-- the mixture SPRT's prior variance τ² per metric (an always-valid test keeps one
-- mixture for the whole experiment) and, on the latency_p99 row, the latency
-- threshold of the "slower than arm A's p99" guardrail. 0 and NULL: not recorded
-- (looks before this migration).
ALTER TABLE verdicts
    ADD COLUMN IF NOT EXISTS tau2 Float64 DEFAULT 0,
    ADD COLUMN IF NOT EXISTS threshold Nullable(Float64)
