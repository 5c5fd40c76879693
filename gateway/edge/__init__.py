"""The edge of the gateway: what it admits and whom it trusts.

Admission guard, overload control, peers: the decisions taken about a packet or a
call by where it comes from, before (or beside) routing. :mod:`gateway.edge.peers`
tells an emergency centre's transport address from the PBX's.
"""
