-- The run history's tables in SQLite. `IF NOT EXISTS`: history files written before
-- migrations existed already hold these tables, and this first migration adopts them.
CREATE TABLE IF NOT EXISTS runs (
    run_id TEXT PRIMARY KEY,
    scenario TEXT NOT NULL,
    version TEXT NOT NULL,
    trigger TEXT NOT NULL,
    dry_run INTEGER NOT NULL,
    started INTEGER NOT NULL,
    duration_ms INTEGER NOT NULL,
    exit TEXT NOT NULL,
    exit_code INTEGER NOT NULL,
    stopped TEXT,
    conformance_enabled INTEGER NOT NULL,
    conformance_note TEXT
);
CREATE TABLE IF NOT EXISTS job_runs (
    run_id TEXT NOT NULL,
    job TEXT NOT NULL,
    passed INTEGER NOT NULL,
    conformance TEXT NOT NULL,
    conformance_detail TEXT NOT NULL,
    PRIMARY KEY (run_id, job)
);
CREATE INDEX IF NOT EXISTS job_runs_by_job ON job_runs (job);
CREATE TABLE IF NOT EXISTS step_runs (
    run_id TEXT NOT NULL,
    job TEXT NOT NULL,
    step TEXT NOT NULL,
    idx INTEGER NOT NULL,
    outcome TEXT NOT NULL,
    failure_kind TEXT,
    duration_ms INTEGER NOT NULL,
    message TEXT,
    diagnosis TEXT,
    PRIMARY KEY (run_id, job, step)
);
CREATE TABLE IF NOT EXISTS spec_runs (
    run_id TEXT NOT NULL,
    job TEXT NOT NULL,
    spec TEXT NOT NULL,
    outcome TEXT NOT NULL,
    duration_ms INTEGER NOT NULL,
    PRIMARY KEY (run_id, job, spec)
);
CREATE INDEX IF NOT EXISTS spec_runs_by_spec ON spec_runs (spec);
CREATE TABLE IF NOT EXISTS notifications (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    job TEXT NOT NULL,
    kind TEXT NOT NULL,
    streak_start TEXT NOT NULL,
    run_id TEXT NOT NULL,
    streak INTEGER NOT NULL,
    sent_at INTEGER NOT NULL,
    channel TEXT NOT NULL,
    delivered INTEGER NOT NULL,
    error TEXT
);
