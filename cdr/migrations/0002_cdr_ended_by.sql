-- Why each call ended, and calls still in progress (issue 19).
--
-- A call's record is written when it is answered, with ended_by NULL (in progress), and
-- completed under the same key (call_uuid, started_at) when it ends; a gateway that
-- stopped without ending its calls closes them on its next start as 'gateway-restart'.
-- Rows written before this column existed were all finished calls: their end reason is
-- their hangup side. The column is added last, matching cdr.record.COLUMNS.

CREATE TYPE cdr_ended_by AS ENUM
    ('caller', 'callee', 'gateway', 'session-timer', 'media-timeout', 'max-duration',
     'gateway-restart', 'shutdown');

ALTER TABLE cdr ADD COLUMN ended_by cdr_ended_by;
UPDATE cdr SET ended_by = hangup_side::text::cdr_ended_by;

-- The start-up closure looks for this instance's in-progress rows in every partition;
-- the partial index holds only the (few) calls in progress.
CREATE INDEX cdr_in_progress_idx ON cdr (gateway_instance) WHERE ended_by IS NULL;

COMMENT ON COLUMN cdr.ended_by IS
    'Why the call ended; NULL while in progress (ended_at is then the last time it was known up)';
