-- RFC 3327 Path for registrations through an edge proxy (issue 16; gateway/registrar/path.py).
--
-- A phone that registers through Kamailio (deploy/cluster/kamailio.cfg, add_path_received)
-- is reached through Kamailio, which holds its flow (the NAT mapping is towards Kamailio's
-- address): the REGISTER carries a Path header and the binding keeps its values, topmost
-- first, each one name-addr as received. A call for the binding goes to the first Path URI
-- with the vector as a preloaded Route set (RFC 3327 5.3), from whichever instance takes
-- the call, so flow_owner does not apply to it. NULL: the REGISTER had no Path (the phone
-- reached the instance directly; flow_owner decides).
ALTER TABLE registrar_bindings ADD COLUMN path text[];
