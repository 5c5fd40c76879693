-- Declared locations for remote work (issue 14 item 3): a subscriber's declared
-- addresses (a home office), each tied to the networks its calls come from. A call of
-- that subscriber from one of them is office use of the declared address.
--
-- Written by gateway/service/sitestore.py with the rest of the routing data (an import
-- replaces every row in one transaction); read into routing.directory.Directory.
-- Civic address columns as routing_sites (RFC 5139 element names; '' means absent).

CREATE TABLE routing_declared_locations (
    id          text PRIMARY KEY,
    sip_user    text NOT NULL REFERENCES routing_subscribers (sip_user) ON DELETE CASCADE,
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
CREATE INDEX routing_declared_locations_user ON routing_declared_locations (sip_user);

-- One network belongs to one declared location: two addresses for one network would
-- leave the centre to guess (the sites file check says the same, with the line).
CREATE TABLE routing_declared_location_networks (
    location_id text NOT NULL REFERENCES routing_declared_locations (id) ON DELETE CASCADE,
    network     cidr NOT NULL UNIQUE,
    PRIMARY KEY (location_id, network)
);
