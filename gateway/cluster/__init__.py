"""Several gateway instances sharing one PostgreSQL (issue 16): the emergency state
every instance must honour (:mod:`gateway.cluster.callbacks`) and the instances'
liveness, with the closure of a dead one's calls (:mod:`gateway.cluster.liveness`)."""
