-- Routing data model: customers, sites (registered civic addresses), site networks,
-- subscribers, devices and emergency centres with the areas they serve.
--
-- Written by gateway/sitestore.py (import replaces all rows in one transaction) and
-- read into routing.directory.Directory. Token values are those of routing/model.py.
-- Civic address columns are the RFC 5139 element names; '' means absent.

CREATE TABLE routing_customers (
    id          text PRIMARY KEY,
    company     text NOT NULL,
    state       text NOT NULL DEFAULT 'active'
                CHECK (state IN ('active', 'closed', 'suspended', 'barred', 'fraud-locked')),
    language    text NOT NULL DEFAULT 'fi' CHECK (language IN ('fi', 'sv', 'en'))
);

CREATE TABLE routing_sites (
    id          text PRIMARY KEY,
    customer_id text NOT NULL REFERENCES routing_customers (id),
    name        text NOT NULL DEFAULT '',
    country     text NOT NULL CHECK (country ~ '^[A-Z]{2}$'),
    a1 text NOT NULL DEFAULT '', a2 text NOT NULL DEFAULT '', a3 text NOT NULL DEFAULT '',
    a4 text NOT NULL DEFAULT '', a5 text NOT NULL DEFAULT '', a6 text NOT NULL DEFAULT '',
    prm text NOT NULL DEFAULT '', prd text NOT NULL DEFAULT '', rd text NOT NULL DEFAULT '',
    sts text NOT NULL DEFAULT '', pod text NOT NULL DEFAULT '', pom text NOT NULL DEFAULT '',
    rdsec text NOT NULL DEFAULT '', rdbr text NOT NULL DEFAULT '',
    rdsubbr text NOT NULL DEFAULT '',
    hno text NOT NULL DEFAULT '', hns text NOT NULL DEFAULT '', lmk text NOT NULL DEFAULT '',
    loc text NOT NULL DEFAULT '', flr text NOT NULL DEFAULT '', nam text NOT NULL DEFAULT '',
    pc text NOT NULL DEFAULT '', bld text NOT NULL DEFAULT '', unit text NOT NULL DEFAULT '',
    room text NOT NULL DEFAULT '', seat text NOT NULL DEFAULT '', plc text NOT NULL DEFAULT '',
    pcn text NOT NULL DEFAULT '', pobox text NOT NULL DEFAULT '',
    addcode text NOT NULL DEFAULT '',
    lang        text NOT NULL DEFAULT 'fi'
);
CREATE INDEX routing_sites_customer ON routing_sites (customer_id);

CREATE TABLE routing_site_networks (
    site_id     text NOT NULL REFERENCES routing_sites (id) ON DELETE CASCADE,
    network     cidr NOT NULL,
    kind        text NOT NULL CHECK (kind IN ('office-lan', 'trusted-nat', 'vpn-pool')),
    PRIMARY KEY (site_id, network, kind)
);
-- "Which sites claim this address" for operators' ad-hoc queries (inet <<= cidr).
CREATE INDEX routing_site_networks_network ON routing_site_networks USING gist (network inet_ops);

CREATE TABLE routing_subscribers (
    e164         text PRIMARY KEY CHECK (e164 ~ '^\+[1-9][0-9]{1,14}$'),
    sip_user     text NOT NULL UNIQUE,
    customer_id  text NOT NULL REFERENCES routing_customers (id),
    site_id      text REFERENCES routing_sites (id),
    presentation text NOT NULL DEFAULT 'allowed'
                 CHECK (presentation IN ('allowed', 'restricted')),
    display_name text NOT NULL DEFAULT '',
    state        text NOT NULL DEFAULT 'active'
                 CHECK (state IN ('active', 'suspended', 'barred', 'closed'))
);
CREATE INDEX routing_subscribers_customer ON routing_subscribers (customer_id);

CREATE TABLE routing_devices (
    id                 text PRIMARY KEY,
    kind               text NOT NULL
                       CHECK (kind IN ('desk-phone', 'softphone', 'mobile-app', 'ata', 'unknown')),
    sip_user           text REFERENCES routing_subscribers (sip_user) ON DELETE CASCADE,
    instance_id        text UNIQUE,
    user_agent_pattern text,
    CHECK (instance_id IS NOT NULL OR user_agent_pattern IS NOT NULL)
);

CREATE TABLE routing_emergency_centres (
    id               text PRIMARY KEY,
    name             text NOT NULL,
    sip_uri          text NOT NULL CHECK (sip_uri ~* '^sips?:'),
    uri_style        text NOT NULL DEFAULT 'sip' CHECK (uri_style IN ('sip', 'urn')),
    -- Deferred: centres name each other as secondaries (Kerava <-> Turku).
    secondary_id     text REFERENCES routing_emergency_centres (id)
                     DEFERRABLE INITIALLY DEFERRED,
    national_default boolean NOT NULL DEFAULT false,
    CHECK (secondary_id IS DISTINCT FROM id)
);
-- At most one national default.
CREATE UNIQUE INDEX routing_emergency_centres_one_default
    ON routing_emergency_centres (national_default) WHERE national_default;

-- Served areas. The position keeps the file's order for a faithful export; the
-- unique keys make "one centre per area" a database rule as well.
CREATE TABLE routing_centre_municipalities (
    centre_id    text NOT NULL REFERENCES routing_emergency_centres (id) ON DELETE CASCADE,
    municipality text NOT NULL,
    position     integer NOT NULL,
    PRIMARY KEY (centre_id, position)
);
CREATE UNIQUE INDEX routing_centre_municipalities_one
    ON routing_centre_municipalities (lower(municipality));

CREATE TABLE routing_centre_postal_prefixes (
    centre_id  text NOT NULL REFERENCES routing_emergency_centres (id) ON DELETE CASCADE,
    prefix     text NOT NULL UNIQUE,
    position   integer NOT NULL,
    PRIMARY KEY (centre_id, position)
);
