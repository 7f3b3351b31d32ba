-- Tasks that run once for the whole gateway (retention), and the replica running each until
-- its term ends; a replica renews its term each time it runs the task.

CREATE TABLE leaders (
    task   TEXT   PRIMARY KEY,
    holder TEXT   NOT NULL,
    until  BIGINT NOT NULL
);
