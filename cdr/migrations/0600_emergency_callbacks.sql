-- The RFC 6881 SP-35 emergency callback window, shared by every gateway instance
-- (issue 16). One row per callback number (E.164 digits): where the centre's call
-- back goes (the device that made the emergency call) until expires_at.
--
-- The instance that routed the emergency call writes the row behind the call
-- (never before it) and keeps its own copy in memory; any instance reads it when a
-- centre calls that number. A window that is still open (the emergency call is up)
-- has expires_at at the call's start plus the window, moved to the call's end plus
-- the window when it ends.
CREATE TABLE emergency_callbacks (
    callback_number text PRIMARY KEY,
    aor             text,
    contact         text NOT NULL,
    transport       text NOT NULL,
    host            text NOT NULL,
    port            integer NOT NULL CHECK (port BETWEEN 1 AND 65535),
    centre          text,
    instance        text NOT NULL,
    call_id         text,
    updated_at      timestamptz NOT NULL DEFAULT now(),
    expires_at      timestamptz NOT NULL
);

-- Start-up reloads the open windows; expired rows are purged by expiry.
CREATE INDEX emergency_callbacks_expires_idx ON emergency_callbacks (expires_at);

COMMENT ON TABLE emergency_callbacks IS
    'RFC 6881 SP-35 callback windows: a centre''s call to callback_number goes to the device until expires_at';
