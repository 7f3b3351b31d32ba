-- Events are stored under the number their id carries (its first 16 hex digits, see ids.rs):
-- seq is that number, which rises as events are accepted. Events are found by it, listed and
-- pruned in its order, and three writes that every ingested event paid for go:
--
-- - the unique index of ids: an event is found by its row number;
-- - the index on received_at: a time bound becomes a seq bound by a binary search over seq
--   (see store/sqlite/read.rs);
-- - AUTOINCREMENT, which rewrites sqlite_sequence in every commit.
--
-- Events stored before this have ids that do not carry their seq. They keep their seq (all
-- below 2^32, from AUTOINCREMENT) and are found through a partial index that holds them
-- alone; new events (seq from 2^32 up) never write to it.
--
-- The table is rebuilt (SQLite can drop neither a column's UNIQUE nor AUTOINCREMENT in
-- place): the upgrade takes time in proportion to the events kept.
CREATE TABLE events_by_seq (
    seq               INTEGER PRIMARY KEY,
    id                TEXT    NOT NULL,
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
INSERT INTO events_by_seq
    (seq, id, namespace, source, method, path, query, headers, body, content_type, source_ip,
     received_at, status, validation_errors)
SELECT seq, id, namespace, source, method, path, query, headers, body, content_type, source_ip,
       received_at, status, validation_errors
FROM events;
DROP TABLE events;
ALTER TABLE events_by_seq RENAME TO events;
CREATE INDEX events_source ON events (namespace, source, seq);
CREATE UNIQUE INDEX events_legacy_id ON events (id) WHERE seq < 4294967296;
DELETE FROM sqlite_sequence WHERE name = 'events';
