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

Limits that bound the whole gateway are divided among the workers, so that N
workers admit what one process would (issue 17): ``[overload] max_calls`` and
``emergency_reserve``, ``[sip] max_transactions`` and ``[guard] oc_capacity`` (the
RFC 7339 reference rate; each worker sees its share of the offered calls). The
kernel spreads new sources evenly, not calls: a worker may refuse a call while
another has room, by at most the imbalance of the hash (a shared counter would put
an IPC round trip in every call set-up). Per-source limits (``[guard]`` rates,
bans) stay whole: one source's datagrams all reach one worker. Load shedding needs
no share: each worker measures its own loop and its own sockets.

With ``[cluster]`` (issue 16), a worker's ``cluster.instance`` is its name (its
heartbeat, the owner of its in-progress CDRs) and ``cluster.sip_uri`` its own port,
so the other workers and instances reach that worker and no other.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from gateway.config import GatewayConfig, ListenConfig


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
        first = own[0]
        host = f"[{first.host}]" if ":" in first.host else first.host
        scheme = "sips" if first.transport == "TLS" else "sip"
        cluster = dataclasses.replace(
            cluster, instance=name, sip_uri=f"{scheme}:{host}:{first.port}"
        )
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
            config.cdr, spool_dir=str(Path(config.cdr.spool_dir) / f"w{index}")
        ),
        server=dataclasses.replace(server, worker_index=index),
        overload=dataclasses.replace(
            config.overload,
            max_calls=worker_share(config.overload.max_calls, index, server.workers),
            emergency_reserve=(
                worker_share(config.overload.emergency_reserve, index, server.workers)
                if config.overload.emergency_reserve
                else 0
            ),
        ),
        guard=dataclasses.replace(
            config.guard, oc_capacity=config.guard.oc_capacity / server.workers
        ),
    )
