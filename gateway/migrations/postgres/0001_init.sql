-- hookstream gateway schema on PostgreSQL: events, their deliveries (the job queue shared by
-- every replica), attempts, dedup keys, circuit breaker state, running totals, and the
-- replicas' heartbeats. Times are unix milliseconds; the same tables as on SQLite, with
-- what several replicas need besides: which replica holds a delivery's claim.

CREATE TABLE events (
    seq               BIGSERIAL PRIMARY KEY,
    id                TEXT   NOT NULL UNIQUE,
    namespace         TEXT   NOT NULL,
    source            TEXT   NOT NULL,
    method            TEXT   NOT NULL,
    path              TEXT   NOT NULL,
    query             TEXT   NOT NULL,
    headers           TEXT   NOT NULL,
    body              BYTEA  NOT NULL,
    content_type      TEXT,
    source_ip         TEXT   NOT NULL,
    received_at       BIGINT NOT NULL,
    status            TEXT   NOT NULL,
    validation_errors TEXT
);
CREATE INDEX events_source ON events (namespace, source, seq);
CREATE INDEX events_received ON events (received_at);

CREATE TABLE deliveries (
    seq            BIGSERIAL PRIMARY KEY,
    id             TEXT   NOT NULL UNIQUE,
    event_id       TEXT   NOT NULL,
    namespace      TEXT   NOT NULL,
    destination    TEXT   NOT NULL,
    route_kind     TEXT   NOT NULL,
    route          TEXT   NOT NULL,
    state          TEXT   NOT NULL,
    attempts       BIGINT NOT NULL DEFAULT 0,
    round_attempts BIGINT NOT NULL DEFAULT 0,
    due_at         BIGINT NOT NULL,
    lease_until    BIGINT,
    -- The replica holding the claim (while state is 'inflight').
    claimed_by     TEXT,
    created_at     BIGINT NOT NULL,
    updated_at     BIGINT NOT NULL,
    last_error     TEXT
);
-- Claims look only at waiting and claimed rows, a small part of the table.
CREATE INDEX deliveries_pending ON deliveries (due_at, seq) WHERE state = 'pending';
CREATE INDEX deliveries_inflight ON deliveries (lease_until) WHERE state = 'inflight';
CREATE INDEX deliveries_event ON deliveries (event_id);

CREATE TABLE attempts (
    seq             BIGSERIAL PRIMARY KEY,
    id              TEXT    NOT NULL UNIQUE,
    delivery_id     TEXT    NOT NULL,
    event_id        TEXT    NOT NULL,
    namespace       TEXT    NOT NULL,
    destination     TEXT    NOT NULL,
    route_kind      TEXT    NOT NULL,
    route           TEXT    NOT NULL,
    attempt_number  BIGINT  NOT NULL,
    status          TEXT    NOT NULL,
    error           TEXT,
    request_headers TEXT    NOT NULL,
    detail          TEXT,
    latency_ms      BIGINT  NOT NULL,
    attempted_at    BIGINT  NOT NULL,
    next_retry_at   BIGINT,
    is_dlq          BOOLEAN NOT NULL DEFAULT FALSE
);
CREATE INDEX attempts_event ON attempts (event_id, seq);
CREATE INDEX attempts_destination ON attempts (namespace, destination, seq);
CREATE INDEX attempts_time ON attempts (attempted_at);

CREATE TABLE dedup_keys (
    namespace  TEXT   NOT NULL,
    source     TEXT   NOT NULL,
    key        TEXT   NOT NULL,
    event_id   TEXT   NOT NULL,
    expires_at BIGINT NOT NULL,
    PRIMARY KEY (namespace, source, key)
);

CREATE TABLE circuits (
    namespace            TEXT   NOT NULL,
    destination          TEXT   NOT NULL,
    state                TEXT   NOT NULL,
    consecutive_failures BIGINT NOT NULL,
    opened_at            BIGINT,
    last_failure_at      BIGINT,
    PRIMARY KEY (namespace, destination)
);

CREATE TABLE counters (
    kind          TEXT   NOT NULL,
    namespace     TEXT   NOT NULL,
    name          TEXT   NOT NULL,
    received      BIGINT NOT NULL DEFAULT 0,
    succeeded     BIGINT NOT NULL DEFAULT 0,
    failed        BIGINT NOT NULL DEFAULT 0,
    dead_lettered BIGINT NOT NULL DEFAULT 0,
    last_at       BIGINT,
    PRIMARY KEY (kind, namespace, name)
);

-- Each running replica's heartbeat. A claim held by a replica whose heartbeat stopped is
-- taken over by the others without waiting for its lease to run out.
CREATE TABLE replicas (
    id        TEXT   PRIMARY KEY,
    last_seen BIGINT NOT NULL
);
