-- Call detail records: one row per call, partitioned by month of started_at.
--
-- Column order must match cdr.record.COLUMNS (the writer copies rows in that order).
-- Partitions (cdr_YYYY_MM) are created by cdr/maintenance.py and, on demand, by the
-- writer; there is deliberately no DEFAULT partition (see cdr/partitions.py).

CREATE TYPE cdr_disposition AS ENUM
    ('answered', 'busy', 'no-answer', 'cancelled', 'failed', 'rejected');
CREATE TYPE cdr_call_class AS ENUM ('office', 'nomadic', 'unknown');
CREATE TYPE cdr_recording_notice AS ENUM ('played', 'not-played', 'none');
CREATE TYPE cdr_hangup_side AS ENUM ('caller', 'callee', 'gateway');

CREATE TABLE cdr (
    call_uuid                   uuid                 NOT NULL,
    started_at                  timestamptz          NOT NULL,
    call_id                     text                 NOT NULL,
    customer                    text                 NOT NULL,
    caller                      text                 NOT NULL,
    callee_dialled              text                 NOT NULL,
    callee_routed               text,
    p_asserted_identity         text,
    call_class                  cdr_call_class       NOT NULL,
    device_kind                 text,
    site                        text,
    source_address              inet                 NOT NULL,
    user_agent                  text,
    emergency                   boolean              NOT NULL,
    emergency_centre            text,
    emergency_policy            text,
    recording_notice            cdr_recording_notice NOT NULL,
    recording_notice_language   text,
    recording_notice_played_at  timestamptz,
    ringing_at                  timestamptz,
    answered_at                 timestamptz,
    ended_at                    timestamptz          NOT NULL,
    post_dial_delay_seconds     double precision,
    duration_seconds            double precision     NOT NULL CHECK (duration_seconds >= 0),
    billable_seconds            integer              NOT NULL CHECK (billable_seconds >= 0),
    final_status                smallint             NOT NULL CHECK (final_status BETWEEN 100 AND 699),
    final_reason                text,
    disposition                 cdr_disposition      NOT NULL,
    hangup_side                 cdr_hangup_side      NOT NULL,
    gateway_instance            text                 NOT NULL,
    CHECK (ended_at >= started_at),
    -- Idempotency key. A unique constraint on a partitioned table must contain the
    -- partition key, so the key is (call_uuid, started_at) rather than call_uuid alone.
    -- That is enough: a CDR is written once, when the call has ended, and started_at is
    -- fixed when the INVITE arrives; every replay of the same record (spool replay after
    -- a crash, a retried batch) carries the same started_at, so it hits the same
    -- partition and the same key, and ON CONFLICT DO NOTHING drops it.
    PRIMARY KEY (call_uuid, started_at)
) PARTITION BY RANGE (started_at);

COMMENT ON TABLE cdr IS
    'Call detail records, kept 15 months (privacy policy), then rolled up into cdr_monthly_aggregate';

-- Invoice itemization: one customer, one month.
CREATE INDEX cdr_customer_started_idx ON cdr (customer, started_at);
-- Data-subject access: every record naming a number as caller, callee or PAI.
CREATE INDEX cdr_caller_idx ON cdr (caller);
CREATE INDEX cdr_callee_dialled_idx ON cdr (callee_dialled);
CREATE INDEX cdr_callee_routed_idx ON cdr (callee_routed);
CREATE INDEX cdr_pai_idx ON cdr (p_asserted_identity);

-- Anonymized monthly aggregates, kept without limit: no numbers, addresses or call ids.
-- Rows are added by cdr/maintenance.py in the same transaction that drops the month's
-- partition, so each retired partition is counted exactly once.
CREATE TABLE cdr_monthly_aggregate (
    month             date             NOT NULL CHECK (extract(day FROM month) = 1),
    customer          text             NOT NULL,
    call_class        cdr_call_class   NOT NULL,
    disposition       cdr_disposition  NOT NULL,
    emergency         boolean          NOT NULL,
    calls             bigint           NOT NULL CHECK (calls >= 0),
    total_seconds     double precision NOT NULL,
    billable_seconds  bigint           NOT NULL,
    PRIMARY KEY (month, customer, call_class, disposition, emergency)
);
