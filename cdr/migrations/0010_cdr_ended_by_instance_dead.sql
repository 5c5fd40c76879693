-- Calls of a gateway instance that died and did not come back (issue 16).
--
-- A surviving instance closes the in-progress rows of an instance whose cluster
-- heartbeat (cluster_instances, 0601) is older than [cluster] dead_after, ending
-- each at that heartbeat. It ranks with 'gateway-restart' below any real end, so
-- the dead instance's own spool, replayed later, still completes the row.
-- The owning instance is the existing gateway_instance column (indexed with
-- cdr_in_progress_idx for exactly this look-up); no new column is needed.
ALTER TYPE cdr_ended_by ADD VALUE IF NOT EXISTS 'instance-dead';
