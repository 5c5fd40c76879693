-- Gateway instances sharing this database, and their liveness (issue 16).
--
-- Each instance upserts its row every [cluster] heartbeat_interval with the
-- database's clock (last_seen = now(), so instances' clocks never have to agree).
-- A survivor that finds last_seen older than [cluster] dead_after claims the dead
-- instance with a conditional UPDATE (... WHERE declared_dead_at IS NULL AND
-- last_seen < now() - dead_after): the row lock makes exactly one of several racing
-- survivors win, and it closes the dead instance's in-progress CDRs in the same
-- transaction. A restarted instance clears declared_dead_at with its first beat.
CREATE TABLE cluster_instances (
    instance          text PRIMARY KEY,
    sip_uri           text NOT NULL,
    cdr_instance      text NOT NULL,
    started_at        timestamptz NOT NULL,
    last_seen         timestamptz NOT NULL,
    declared_dead_at  timestamptz,
    declared_dead_by  text,
    calls_closed      integer
);

COMMENT ON COLUMN cluster_instances.cdr_instance IS
    'The name the instance''s CDR rows carry in cdr.gateway_instance';
