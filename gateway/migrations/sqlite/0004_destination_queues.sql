-- Each destination's queue is read on its own (claims take a destination's oldest due
-- deliveries, up to its free slots), so the queue index leads with the destination: a claim
-- for one destination never walks another's backlog. Circuits get the time their probe
-- started, so a probe whose replica died is sent again after its timeout.

DROP INDEX deliveries_due;
CREATE INDEX deliveries_queue ON deliveries (state, namespace, destination, due_at, seq);

ALTER TABLE circuits ADD COLUMN probe_at INTEGER;
