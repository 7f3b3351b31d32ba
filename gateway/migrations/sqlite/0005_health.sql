-- One row the gateway writes to check that the database takes writes again after a commit
-- failed (a full disk), for readiness. The write carries a padding blob the size of a large
-- commit, so that a disk with room for a few pages but not for events is not "ready".

CREATE TABLE health (
    id         INTEGER PRIMARY KEY,
    checked_at INTEGER NOT NULL,
    pad        BLOB
);
