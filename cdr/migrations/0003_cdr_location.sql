-- Where an emergency call's location came from, and whether it had a callback
-- identity (issue 14): routing.decision.LocationSource and CallFacts.callback, written
-- by cdr.call_record.record_of for emergency calls only.
--
-- Both nullable: rows written before, and every call that is not an emergency call,
-- stay NULL (nothing to say). A fresh database gets them after ended_by, where
-- cdr.record.COLUMNS names them; a database that already has the caller-ID columns of
-- 0300 gets them last. Nothing reads the table by position: the writer COPYs and
-- INSERTs with cdr.record.COLUMNS as its column list, and the exports name columns.

CREATE TYPE cdr_location_source AS ENUM ('site-address', 'declared-address', 'device', 'none');

ALTER TABLE cdr
    ADD COLUMN location_source cdr_location_source,
    ADD COLUMN callback_identity boolean;

COMMENT ON COLUMN cdr.location_source IS
    'Emergency calls: the location sent to the centre came from the site network, a declared address, the device itself, or none (not verified)';
COMMENT ON COLUMN cdr.callback_identity IS
    'Emergency calls: whether the centre got a callback identity (false: an unknown caller)';
