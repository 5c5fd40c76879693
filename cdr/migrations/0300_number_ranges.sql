-- Number ranges a customer holds (issue 15: caller-ID integrity, Traficom regulation 28).
--
-- A range is an E.164 prefix and a count of trailing free digits: '+35891234', 4 is
-- +358 9 1234 xxxx; a single number has wildcards 0. Written by
-- gateway/service/sitestore.py with the rest of the routing data and read into
-- routing.numbers.NumberIndex. routing/sites_file.py rejects overlaps between ranges
-- before an import; the unique key holds the plain duplicate here too.

CREATE TABLE routing_number_ranges (
    customer_id text NOT NULL REFERENCES routing_customers (id),
    prefix      text NOT NULL CHECK (prefix ~ '^\+[1-9][0-9]{0,14}$'),
    wildcards   smallint NOT NULL DEFAULT 0 CHECK (wildcards BETWEEN 0 AND 8),
    roaming     boolean NOT NULL DEFAULT false,
    PRIMARY KEY (prefix, wildcards)
);
CREATE INDEX routing_number_ranges_customer ON routing_number_ranges (customer_id);

-- What the caller-ID policy made of each call (routing.decision.CallerId): the number
-- presented, the number asserted on the B leg, the decision and its reason. Added
-- last, matching cdr.record.COLUMNS; rows written before are NULL (not decided).
CREATE TYPE cdr_caller_id AS ENUM ('kept', 'replaced', 'removed', 'rejected');

ALTER TABLE cdr
    ADD COLUMN presented_number text,
    ADD COLUMN asserted_number text,
    ADD COLUMN caller_id cdr_caller_id,
    ADD COLUMN caller_id_reason text;

COMMENT ON COLUMN cdr.presented_number IS
    'Number the call presented (P-Preferred-Identity or From; from trunks P-Asserted-Identity or From), E.164 where it reads as one';
COMMENT ON COLUMN cdr.asserted_number IS 'Number asserted on the B leg (P-Asserted-Identity)';
COMMENT ON COLUMN cdr.caller_id IS 'What the caller-ID policy did with the presented number';
COMMENT ON COLUMN cdr.caller_id_reason IS 'Why (routing.decision.CallerIdReason)';
