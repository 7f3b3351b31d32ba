-- Events are listed and pruned in the order they were stored (seq), which is the order they
-- were received in, to within one commit's wait: the single writer stores them as their
-- requests arrive. Two writes that every ingested event paid for go:
--
-- - the index on received_at, a b-tree written for every event; a time bound becomes a seq
--   bound by a binary search over seq (see store/sqlite/read.rs);
-- - AUTOINCREMENT, which rewrites sqlite_sequence in every commit. seq is still the rowid,
--   rising; after retention has deleted every event it may start over, which nothing minds
--   (deliveries and attempts refer to events by id).
--
-- The table is rebuilt for the second (SQLite cannot drop AUTOINCREMENT in place): the
-- upgrade takes time in proportion to the events kept.
CREATE TABLE events_in_seq_order (
    seq               INTEGER PRIMARY KEY,
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
INSERT INTO events_in_seq_order
    (seq, id, namespace, source, method, path, query, headers, body, content_type, source_ip,
     received_at, status, validation_errors)
SELECT seq, id, namespace, source, method, path, query, headers, body, content_type, source_ip,
       received_at, status, validation_errors
FROM events;
DROP TABLE events;
ALTER TABLE events_in_seq_order RENAME TO events;
CREATE INDEX events_source ON events (namespace, source, seq);
DELETE FROM sqlite_sequence WHERE name = 'events';
