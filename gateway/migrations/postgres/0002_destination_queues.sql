-- Each destination's queue is read on its own (claims take a destination's oldest due
-- deliveries, up to its free slots, across replicas), so the queue indexes lead with the
-- destination: a claim for one destination never walks another's backlog. Circuits get the
-- time their probe started, so a probe whose replica died is sent again after its timeout.

DROP INDEX deliveries_pending;
DROP INDEX deliveries_inflight;
CREATE INDEX deliveries_pending ON deliveries (namespace, destination, due_at, seq) WHERE state = 'pending';
CREATE INDEX deliveries_inflight ON deliveries (namespace, destination, lease_until) WHERE state = 'inflight';

ALTER TABLE circuits ADD COLUMN probe_at BIGINT;
