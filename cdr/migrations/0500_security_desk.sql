-- The security desk of a customer (issue 14 item 6): a SIP URI told of each of the
-- customer's emergency calls by a SIP MESSAGE (RFC 3428), beside the webhook.
-- NULL: the customer has none. routing/model.py desk_uri_problem validates the URI
-- on import (routing/sites_file.py); the CHECK keeps out what is plainly no SIP URI.

ALTER TABLE routing_customers ADD COLUMN security_desk text
    CHECK (security_desk ~* '^sips?:[^[:space:]?]+$');

COMMENT ON COLUMN routing_customers.security_desk IS
    'sip: or sips: URI receiving a SIP MESSAGE for each emergency call of the customer';
