-- The run history's tables in PostgreSQL: the SQLite schema with PostgreSQL's types.
-- Names sort bytewise (COLLATE "C"), as SQLite sorts them, so both backends list jobs,
-- steps and specs in the same order whatever the database's locale.
CREATE TABLE IF NOT EXISTS runs (
    run_id TEXT COLLATE "C" PRIMARY KEY,
    scenario TEXT COLLATE "C" NOT NULL,
    version TEXT NOT NULL,
    trigger TEXT NOT NULL,
    dry_run BOOLEAN NOT NULL,
    started BIGINT NOT NULL,
    duration_ms BIGINT NOT NULL,
    exit TEXT NOT NULL,
    exit_code BIGINT NOT NULL,
    stopped TEXT,
    conformance_enabled BOOLEAN NOT NULL,
    conformance_note TEXT
);
CREATE TABLE IF NOT EXISTS job_runs (
    run_id TEXT COLLATE "C" NOT NULL,
    job TEXT COLLATE "C" NOT NULL,
    passed BOOLEAN NOT NULL,
    conformance TEXT NOT NULL,
    conformance_detail TEXT NOT NULL,
    PRIMARY KEY (run_id, job)
);
CREATE INDEX IF NOT EXISTS job_runs_by_job ON job_runs (job);
CREATE TABLE IF NOT EXISTS step_runs (
    run_id TEXT COLLATE "C" NOT NULL,
    job TEXT COLLATE "C" NOT NULL,
    step TEXT COLLATE "C" NOT NULL,
    idx BIGINT NOT NULL,
    outcome TEXT NOT NULL,
    failure_kind TEXT,
    duration_ms BIGINT NOT NULL,
    message TEXT,
    diagnosis TEXT,
    PRIMARY KEY (run_id, job, step)
);
CREATE TABLE IF NOT EXISTS spec_runs (
    run_id TEXT COLLATE "C" NOT NULL,
    job TEXT COLLATE "C" NOT NULL,
    spec TEXT COLLATE "C" NOT NULL,
    outcome TEXT NOT NULL,
    duration_ms BIGINT NOT NULL,
    PRIMARY KEY (run_id, job, spec)
);
CREATE INDEX IF NOT EXISTS spec_runs_by_spec ON spec_runs (spec);
CREATE TABLE IF NOT EXISTS notifications (
    id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    job TEXT COLLATE "C" NOT NULL,
    kind TEXT NOT NULL,
    streak_start TEXT NOT NULL,
    run_id TEXT NOT NULL,
    streak BIGINT NOT NULL,
    sent_at BIGINT NOT NULL,
    channel TEXT NOT NULL,
    delivered BOOLEAN NOT NULL,
    error TEXT
);
