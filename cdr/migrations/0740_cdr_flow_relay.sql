-- Which record of a call relayed to the flow owner is the call's (issues 16 and 17;
-- routing.decision.FlowRelay).
--
-- A call for a device whose flow another worker or instance holds is relayed to
-- that one (gateway/registrar/routing.py): both run a B2BUA leg, so the call has two
-- rows. 'to-owner' marks the relaying process's row, which bills the call;
-- 'from-sibling' the flow owner's, which itemization, the in-progress count and the
-- monthly roll-up skip (subject access returns it). NULL: a call through one process,
-- and every row written before. Numbered after 0300 so that a fresh database has the
-- column last, where cdr.record.COLUMNS names it.

CREATE TYPE cdr_flow_relay AS ENUM ('to-owner', 'from-sibling');

ALTER TABLE cdr ADD COLUMN flow_relay cdr_flow_relay;

COMMENT ON COLUMN cdr.flow_relay IS
    'Call relayed to the flow owner: to-owner (the relaying row, billed) or from-sibling (the owner''s row, not billed); NULL: one process';
