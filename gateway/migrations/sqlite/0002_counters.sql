-- Running totals the gateway reports in the status of Sources and Destinations. They are
-- updated in the same transaction as the events and attempts they count (one statement per
-- commit, not per row), so they survive restarts and retention, and replicas sharing a
-- database agree on them.

CREATE TABLE counters (
    kind          TEXT    NOT NULL, -- 'source' or 'destination'
    namespace     TEXT    NOT NULL,
    name          TEXT    NOT NULL,
    received      INTEGER NOT NULL DEFAULT 0,
    succeeded     INTEGER NOT NULL DEFAULT 0,
    failed        INTEGER NOT NULL DEFAULT 0,
    dead_lettered INTEGER NOT NULL DEFAULT 0,
    last_at       INTEGER,
    PRIMARY KEY (kind, namespace, name)
);
