-- taskdist's tables in PostgreSQL (schema `taskdist`). Created by the first distributor that
-- connects, under an advisory lock; every statement is idempotent.
CREATE SCHEMA IF NOT EXISTS taskdist;

-- One row per experiment: what it runs and how far it has been cut into chunks.
CREATE TABLE IF NOT EXISTS taskdist.experiments (
    id text PRIMARY KEY,
    fingerprint text NOT NULL,
    name text NOT NULL,
    spec_text text NOT NULL,
    seed text NOT NULL,
    admission text,
    variant_limit bigint,
    planned bigint,                      -- NULL: an endless space
    priority bigint NOT NULL DEFAULT 0,
    run_info text NOT NULL,              -- run.json of the distributor that created it
    cut bigint NOT NULL DEFAULT 0,       -- indices below this are in chunks
    created_at timestamptz NOT NULL DEFAULT now()
);

-- Chunks of variant indices [first_variant, end_variant), each leased to one distributor.
-- `token` fences writes: it changes with every claim, and a result is written only with the
-- current token of an unexpired lease.
CREATE TABLE IF NOT EXISTS taskdist.chunks (
    experiment text NOT NULL REFERENCES taskdist.experiments (id) ON DELETE CASCADE,
    first_variant bigint NOT NULL,
    end_variant bigint NOT NULL,
    owner text NOT NULL,
    token bigint NOT NULL,
    lease_until timestamptz NOT NULL,
    recorded bigint NOT NULL DEFAULT 0,  -- variants of the chunk with an outcome
    finished boolean NOT NULL DEFAULT false,
    PRIMARY KEY (experiment, first_variant)
);
CREATE INDEX IF NOT EXISTS chunks_open ON taskdist.chunks (experiment, lease_until) WHERE NOT finished;
CREATE SEQUENCE IF NOT EXISTS taskdist.fence;

-- Target leases: a target serves one client at a time, so one distributor drives it.
CREATE TABLE IF NOT EXISTS taskdist.targets (
    address text PRIMARY KEY,
    owner text NOT NULL,
    lease_until timestamptz NOT NULL
);

-- Results: the columns of the SQLite handler's tables, plus the experiment.
CREATE TABLE IF NOT EXISTS taskdist.variants (
    experiment text NOT NULL,
    variant bigint NOT NULL,
    outcome text NOT NULL CHECK (outcome IN ('done', 'bad')),
    attempts bigint NOT NULL,
    target text NOT NULL,
    started_host_us bigint NOT NULL,
    finished_host_us bigint NOT NULL,
    duration_us bigint NOT NULL,
    tasks bigint NOT NULL,
    events bigint NOT NULL,
    reason text,
    distributor text NOT NULL,
    PRIMARY KEY (experiment, variant)
);
CREATE INDEX IF NOT EXISTS variants_outcome ON taskdist.variants (experiment, outcome);
CREATE TABLE IF NOT EXISTS taskdist.events (
    experiment text NOT NULL,
    variant bigint NOT NULL,
    attempt bigint NOT NULL,
    seq bigint NOT NULL,
    target text NOT NULL,
    task_id bigint NOT NULL,
    job bigint NOT NULL,
    type text NOT NULL,
    target_time_ms bigint NOT NULL,
    host_time_us bigint NOT NULL,
    PRIMARY KEY (experiment, variant, seq)
);
CREATE TABLE IF NOT EXISTS taskdist.jobs (
    experiment text NOT NULL,
    variant bigint NOT NULL,
    attempt bigint NOT NULL,
    target text NOT NULL,
    task_id bigint NOT NULL,
    job bigint NOT NULL,
    start_ms bigint,
    end_ms bigint,
    exit_type text,
    duration_ms bigint,
    PRIMARY KEY (experiment, variant, task_id, job)
);
CREATE INDEX IF NOT EXISTS jobs_exit_type ON taskdist.jobs (experiment, exit_type);
CREATE TABLE IF NOT EXISTS taskdist.tasks (
    experiment text NOT NULL,
    variant bigint NOT NULL,
    task_id bigint NOT NULL,
    executiontime_ms bigint NOT NULL,
    criticaltime_ms bigint NOT NULL,
    priority bigint NOT NULL,
    deadline_ms bigint NOT NULL,
    period_ms bigint NOT NULL,
    offset_ms bigint NOT NULL,
    numberofjobs bigint NOT NULL,
    quota_bytes bigint NOT NULL,
    caps bigint NOT NULL,
    cores bigint NOT NULL,
    coreoffset bigint NOT NULL,
    pkg text NOT NULL,
    config text NOT NULL,
    PRIMARY KEY (experiment, variant, task_id)
);

-- The schema's version: a distributor that finds it current skips these statements (they
-- would take table locks that conflict with the writes of running distributors).
CREATE TABLE IF NOT EXISTS taskdist.meta (version bigint NOT NULL);
DELETE FROM taskdist.meta;
INSERT INTO taskdist.meta VALUES (1);
