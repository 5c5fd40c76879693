-- Worker processes in a cluster (issue 17; gateway/workers/plan.py "With [cluster]").
--
-- A row of cluster_instances stays one gateway instance (a machine, what the
-- dispatcher lists): every worker process of it beats the same row. Each worker
-- names its CDR rows (cdr.gateway_instance) and holds its own flows at its own SIP
-- port, so the row collects both as its workers beat it:
--   cdr_instances  every gateway_instance its workers' CDRs carry: a survivor that
--                  declares the instance dead closes the in-progress rows of each;
--   worker_uris    each worker's own SIP URI, the flow_owner of the bindings that
--                  worker took: such an owner is gone when its instance is.
-- NULL in rows written before this migration: cdr_instance alone, no workers.
ALTER TABLE cluster_instances ADD COLUMN cdr_instances text[];
ALTER TABLE cluster_instances ADD COLUMN worker_uris text[];
