"""What each worker process is: a pure function of the configuration.

Design
------

Each worker is a whole gateway, an instance in the "More than one gateway" sense of
deploy/OPERATIONS.md: its own name (``<instance>-w<N>``), its own CDR spool, its own
SIP port and status port, and everything it shares with the other workers (bindings,
credentials, CDRs, sites) in PostgreSQL, exactly as separate hosts share it. What
makes the workers of one machine look like one gateway from outside is the public
port: every worker binds each configured listener with SO_REUSEPORT, and the kernel
spreads UDP sources (by their 4-tuple, so one source's retransmissions stay on one
worker) and TCP connections (on accept) over them.

A message that belongs to a transaction or dialog must reach the worker holding it,
whatever the kernel's hash says. So each worker advertises its *own* port, not the
shared one, wherever a peer takes an address from: the Via of the requests it sends
(their responses), and the Contact it puts in dialogs (in-dialog requests: ACK, BYE,
re-INVITE). The own listener comes first in the worker's listen list because the
SIP core advertises the first listener of a transport and family. Only requests that
start something new (an INVITE, REGISTER, OPTIONS out of dialog) arrive on the shared
port, and any worker can take those. The alternative, one process receiving and
handing messages to workers by Call-ID, would put every message through one more
process and copy; the kernel's spreading costs nothing.

Limits that bound the whole gateway hold for the machine, so that N workers admit
what one process would (issue 17). ``[overload] max_calls`` and
``emergency_reserve`` stay whole: each worker admits against the machine's count of
calls, its own and its siblings' (gateway/workers/calls.py says why a share would
not do: one PBX is one source, whose calls all reach one worker). ``[sip]
max_transactions`` and ``[guard] oc_capacity`` (the RFC 7339 reference rate; each
worker sees its share of the offered calls) are divided among the workers: they
bound a process's memory and rate, and the parts add up to the whole. Per-source
limits (``[guard]`` rates, bans) stay whole: one source's datagrams all reach one
worker. Load shedding needs no share: each worker measures its own loop and its
own sockets.

With ``[cluster]`` (issue 16) the cluster still deals with instances, that is
machines: what Kamailio's dispatcher lists (the shared port), what
``voipgw_cluster_instances`` counts and what the survivors declare dead. A worker
is an implementation detail there, for three reasons. The operator configured one
instance and one ``sip_uri`` per machine and alerts on that count. A worker that
dies is not a machine that dies: the supervisor starts it again at once, and that
worker closes the records its previous run left in progress when it starts
(cdr/writer.py Rule 5), as a restarted single process does; declaring the machine
dead would close its live siblings' calls. And the owners of flows must stay
reachable while one worker restarts. So every worker heartbeats the instance's one
row of ``cluster_instances`` under ``cluster.instance`` and ``cluster.sip_uri`` as
configured; the row collects each worker's CDR name and own URI (migration 0730),
so that a survivor that declares the *machine* dead closes every worker's calls,
and a flow owner is gone exactly when its machine is
(gateway/cluster/liveness.py).

A worker is visible in one place: the flows it holds. A device registered through
the shared port sent its REGISTER from a 4-tuple the kernel hashes to one worker,
and all its later datagrams (refreshes, responses sent to the shared port, which
``rport`` asks for, RFC 3581) reach that same worker; a TCP or TLS connection is
that worker's alone. So a binding's ``flow_owner`` is the worker's own URI
(``cluster.worker_uri``), and a call for it taken by any other worker, of this
machine or another, is relayed to that port with ``Route: <owner;lr>``
(gateway/registrar/routing.py). The owner sends the INVITE from the shared socket
the device sent to (gateway/transport/manager.py ``_reply_flows``): a NAT lets in
only datagrams from the address and port its mapping was opened towards.

A worker's CDR spool is ``<[cdr] spool_dir>/w<N>``, and a single process uses
``[cdr] spool_dir`` itself. A change of ``workers`` leaves spools that no process of
the new run opens: every ``w<N>`` after going back to one process, ``w3`` and ``w4``
after going from four workers to two, the directory's own segments after going from
one process to workers. Their records may not be in PostgreSQL yet, and their
in-progress rows would stay open. :func:`orphaned_spools` names them, and the single
process or worker 1 replays each as the instance that wrote it
(gateway/service/app.py), as that instance would on its own start.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from cdr.spool import holds_segments, worker_spool_dir, worker_spool_dirs
from gateway.config import GatewayConfig, ListenConfig
from gateway.sip.uri import SipUri, parse_uri


def worker_name(instance: str, index: int) -> str:
    """A worker's instance name: ``voipgw-1-w2``."""
    return f"{instance}-w{index}"


def own_listeners(config: GatewayConfig, index: int) -> tuple[ListenConfig, ...]:
    """Worker ``index``'s own listeners: each configured listener's host and transport
    on the worker's port (``[server] worker_sip_port + index - 1``)."""
    port = config.server.worker_sip_port + index - 1
    seen: set[tuple[str, str]] = set()
    own: list[ListenConfig] = []
    for item in config.sip.listen:
        if (item.transport, item.host) not in seen:
            seen.add((item.transport, item.host))
            own.append(dataclasses.replace(item, port=port, shared=False))
    return tuple(own)


def worker_uri(sip_uri: str, port: int) -> str:
    """A worker's own SIP URI: the instance's ``[cluster] sip_uri`` (the host other
    instances reach this machine at, even when the listeners bind a wildcard) on the
    worker's own port."""
    uri = parse_uri(sip_uri)
    assert isinstance(uri, SipUri), sip_uri  # ClusterConfig.from_table checked it
    return str(dataclasses.replace(uri, port=port))


def worker_share(total: int, index: int, workers: int) -> int:
    """Worker ``index``'s part of a whole-gateway limit: the parts add up to ``total``
    (the first ``total % workers`` workers take one more), and none is below 1 (a
    worker that admits nothing would refuse every new source the kernel hashes to
    it; with fewer than ``workers`` calls configured the sum is then ``workers``)."""
    part, rest = divmod(total, workers)
    return max(1, part + (1 if index <= rest else 0))


def worker_config(config: GatewayConfig, index: int) -> GatewayConfig:
    """The configuration worker ``index`` (1..workers) runs with.

    Args:
        config: the file's configuration (``[server] workers`` > 1).
        index: the worker, from 1.

    Raises:
        ValueError: ``index`` is not one of the configured workers.
    """
    server = config.server
    if not 1 <= index <= server.workers:
        raise ValueError(f"worker {index} of {server.workers}")
    shared = tuple(dataclasses.replace(item, shared=True) for item in config.sip.listen)
    own = own_listeners(config, index)
    name = worker_name(config.instance, index)
    cluster = config.cluster
    if cluster is not None:
        # The instance's name and sip_uri stay the machine's (module docstring).
        cluster = dataclasses.replace(cluster, worker_uri=worker_uri(cluster.sip_uri, own[0].port))
    return dataclasses.replace(
        config,
        instance=name,
        cluster=cluster,
        sip=dataclasses.replace(
            config.sip,
            listen=own + shared,
            max_transactions=worker_share(config.sip.max_transactions, index, server.workers),
        ),
        metrics=dataclasses.replace(config.metrics, port=server.worker_metrics_port + index - 1),
        # The spool is locked by its writer: one per worker, under the configured one.
        cdr=dataclasses.replace(
            config.cdr, spool_dir=str(worker_spool_dir(Path(config.cdr.spool_dir), index))
        ),
        server=dataclasses.replace(server, worker_index=index),
        guard=dataclasses.replace(
            config.guard, oc_capacity=config.guard.oc_capacity / server.workers
        ),
    )


def orphaned_spools(config: GatewayConfig) -> tuple[tuple[Path, str], ...]:
    """The CDR spools under ``[cdr] spool_dir`` that no process of this configuration
    writes, with the instance name that wrote each (module docstring).

    Args:
        config: the file's configuration (before :func:`worker_config`).

    Returns:
        (spool directory, instance name) pairs: the directory's own segments when the
        gateway runs workers, and the worker spools beyond ``workers`` (all of them
        for a single process).
    """
    root = Path(config.cdr.spool_dir)
    workers = config.server.workers
    orphans = [
        (path, worker_name(config.instance, index))
        for index, path in worker_spool_dirs(root)
        if workers == 1 or index > workers
    ]
    if workers > 1 and holds_segments(root):
        orphans.insert(0, (root, config.instance))
    return tuple(orphans)
