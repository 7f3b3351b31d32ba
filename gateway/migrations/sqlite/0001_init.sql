-- hookstream gateway schema: events, their deliveries (the job queue), attempts, dedup keys
-- and circuit breaker state. Times are unix milliseconds.
--
-- Every index costs a b-tree write per insert and per state change on the ingest and
-- delivery paths, so only lookups that would otherwise scan a whole table get one; filters
-- such as status or is_dlq walk the newest-first seq order instead.

CREATE TABLE events (
    seq               INTEGER PRIMARY KEY AUTOINCREMENT,
    id                TEXT    NOT NULL UNIQUE,
    namespace         TEXT    NOT NULL,
    source            TEXT    NOT NULL,
    method            TEXT    NOT NULL,
    path              TEXT    NOT NULL,
    query             TEXT    NOT NULL,
    headers           TEXT    NOT NULL,
    body              BLOB    NOT NULL,
    content_type      TEXT,
    source_ip         TEXT    NOT NULL,
    received_at       INTEGER NOT NULL,
    status            TEXT    NOT NULL,
    validation_errors TEXT
);
CREATE INDEX events_source ON events (namespace, source, seq);
CREATE INDEX events_received ON events (received_at);

CREATE TABLE deliveries (
    seq            INTEGER PRIMARY KEY AUTOINCREMENT,
    id             TEXT    NOT NULL UNIQUE,
    event_id       TEXT    NOT NULL,
    namespace      TEXT    NOT NULL,
    destination    TEXT    NOT NULL,
    route_kind     TEXT    NOT NULL,
    route          TEXT    NOT NULL,
    state          TEXT    NOT NULL,
    attempts       INTEGER NOT NULL DEFAULT 0,
    round_attempts INTEGER NOT NULL DEFAULT 0,
    due_at         INTEGER NOT NULL,
    lease_until    INTEGER,
    created_at     INTEGER NOT NULL,
    updated_at     INTEGER NOT NULL,
    last_error     TEXT
);
CREATE INDEX deliveries_due ON deliveries (state, due_at, seq);
CREATE INDEX deliveries_event ON deliveries (event_id);

CREATE TABLE attempts (
    seq              INTEGER PRIMARY KEY AUTOINCREMENT,
    id               TEXT    NOT NULL UNIQUE,
    delivery_id      TEXT    NOT NULL,
    event_id         TEXT    NOT NULL,
    namespace        TEXT    NOT NULL,
    destination      TEXT    NOT NULL,
    route_kind       TEXT    NOT NULL,
    route            TEXT    NOT NULL,
    attempt_number   INTEGER NOT NULL,
    status           TEXT    NOT NULL,
    status_code      INTEGER,
    error            TEXT,
    request_headers  TEXT    NOT NULL,
    response_headers TEXT,
    response_body    TEXT,
    latency_ms       INTEGER NOT NULL,
    attempted_at     INTEGER NOT NULL,
    next_retry_at    INTEGER,
    is_dlq           INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX attempts_event ON attempts (event_id, seq);
CREATE INDEX attempts_destination ON attempts (namespace, destination, seq);
CREATE INDEX attempts_time ON attempts (attempted_at);

CREATE TABLE dedup_keys (
    namespace  TEXT    NOT NULL,
    source     TEXT    NOT NULL,
    key        TEXT    NOT NULL,
    event_id   TEXT    NOT NULL,
    expires_at INTEGER NOT NULL,
    PRIMARY KEY (namespace, source, key)
);

CREATE TABLE circuits (
    namespace            TEXT    NOT NULL,
    destination          TEXT    NOT NULL,
    state                TEXT    NOT NULL,
    consecutive_failures INTEGER NOT NULL,
    opened_at            INTEGER,
    last_failure_at      INTEGER,
    PRIMARY KEY (namespace, destination)
);
