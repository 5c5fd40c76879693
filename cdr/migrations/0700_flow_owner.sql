-- Flow ownership for several gateway instances (issue 16; gateway/registrar/routing.py).
--
-- A phone behind NAT is reachable only through the flow it registered over: the NAT
-- mapping (and a TCP/TLS connection) exists between the phone and the one instance
-- that took its REGISTER. flow_owner is that instance's [cluster] sip_uri; another
-- instance routes calls for the binding through it. NULL on rows written before this
-- migration: they are treated as held by whichever instance reads them (what every
-- instance did before).
ALTER TABLE registrar_bindings ADD COLUMN flow_owner text;
