-- Registrar: digest credentials and registered contacts (gateway/registrar/store.py).
--
-- Credentials are H(A1) = H(username ":" realm ":" password) per realm and algorithm
-- (RFC 7616 3.4.2), never the password: routing_subscribers (0100) names the SIP
-- user but holds no secret. Rows are written by gateway.registrar.store.BindingStore
-- .set_password (or a provisioning job computing gateway.registrar.digest.compute_ha1).
-- username matches routing_subscribers.sip_user, but is not a foreign key: the
-- registrar also serves users (test phones, trunks) that have no subscriber row.

CREATE TABLE registrar_credentials (
    username    text NOT NULL,
    realm       text NOT NULL,
    algorithm   text NOT NULL CHECK (algorithm IN ('MD5', 'SHA-256')),
    ha1         text NOT NULL CHECK (
                    (algorithm = 'MD5' AND ha1 ~ '^[0-9a-f]{32}$')
                    OR (algorithm = 'SHA-256' AND ha1 ~ '^[0-9a-f]{64}$')),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (username, realm, algorithm)
);

-- One row per binding of an address-of-record (RFC 3261 10.3). Times are wall-clock
-- timestamptz from the database's now(), so every gateway instance agrees on expiry.
-- Rows past expires_at are invisible to readers (WHERE expires_at > now()) and are
-- deleted by the registrar's periodic purge.
CREATE TABLE registrar_bindings (
    id                 bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    aor                text NOT NULL CHECK (aor ~ '^sip:'),
    contact            text NOT NULL,
    display_name       text,
    params             text NOT NULL DEFAULT '',
    q                  real CHECK (q BETWEEN 0 AND 1),
    instance_id        text,
    reg_id             integer CHECK (reg_id > 0),
    call_id            text NOT NULL,
    cseq               bigint NOT NULL CHECK (cseq >= 0),
    received_transport text NOT NULL CHECK (received_transport IN ('UDP', 'TCP', 'TLS')),
    received_host      inet NOT NULL,
    received_port      integer NOT NULL CHECK (received_port BETWEEN 1 AND 65535),
    user_agent         text,
    registered_at      timestamptz NOT NULL DEFAULT now(),
    expires_at         timestamptz NOT NULL
);
CREATE INDEX registrar_bindings_aor ON registrar_bindings (aor, expires_at);
CREATE INDEX registrar_bindings_expires ON registrar_bindings (expires_at);
