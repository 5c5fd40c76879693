"""The whole gateway service: SIP core plus database, routing data, registrar, CDRs.

``voipgw run`` calls :func:`run_app`. Start order: database (embedded PostgreSQL when
no URL is configured) and migrations; routing data; CDR writer (replays its spool);
SIP transports last, so the gateway is ready only when everything behind it is.
Stop order is the reverse, after the drain.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import subprocess
import time
import urllib.parse
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import asyncpg

from cdr.call_record import InProgressRecord, call_uuid_of, record_of
from cdr.config import CdrConfig
from cdr.db import DatabaseHealth, database, migrate
from cdr.maintenance import existing_partitions, maintain
from cdr.partitions import Month, month_of_partition
from cdr.spool import SpoolError, retire_spool
from cdr.writer import CdrWriter, replay_spool
from gateway.b2bua import CallAnswered, CallEnded, Reject, Route
from gateway.cluster.callbacks import (
    WINDOWS_DIR,
    CallbackWindow,
    EmergencyCallbacks,
    SiblingWindows,
)
from gateway.cluster.liveness import DATABASE_ERRORS, DeadInstance, Liveness
from gateway.config import GatewayConfig
from gateway.edge.guard import Guard, LossController, stamp_overload_feedback
from gateway.edge.overload import LoadMonitor, LoadShedder
from gateway.ops.metrics import Metrics
from gateway.registrar import BindingStore, Registrar, route_to_binding
from gateway.registrar.bindings import Binding
from gateway.registrar.location import LocationUnavailable
from gateway.registrar.path import first_hop, route_via_path
from gateway.registrar.routing import (
    OwnerGone,
    as_callback,
    callback_aors,
    callback_last_resort,
    callback_to_binding,
    callback_via_owner,
    choose_callback_flow,
    choose_flow,
    flow_not_held,
    never_gone,
    owner_unreachable,
    route_via_owner,
    routed_to_owner,
)
from gateway.registrar.service import RETRY_AFTER_DB_DOWN
from gateway.rtp.stage import recorded_line_lookup
from gateway.service.desk import SecurityDesk, notify_all
from gateway.service.notify import EmergencyNotifier
from gateway.service.router import BindingLookup, CallbackFlow, CallRouter, LocationUnknown
from gateway.service.server import (
    Gateway,
    ServiceHandler,
    ip_literal_endpoint,
    is_auth_challenge,
    new_token,
    resolve_endpoints,
)
from gateway.service.sitestore import export_sites, import_sites, load_directory
from gateway.sip.errors import TransportError
from gateway.sip.events import Endpoint
from gateway.sip.message import Request, Response
from gateway.workers.calls import MachineCalls
from routing.address_check import AddressProblem, problem_counts, sites_address_problems
from routing.config import EmergencyConfig
from routing.decision import CallFacts, RoutedBy
from routing.directory import Directory
from routing.emergency import DialPlan
from routing.psap import lookup_psap
from routing.sites_file import parse_sites

log = logging.getLogger("voipgw.app")

#: Seconds shutdown waits for callback windows not yet written to PostgreSQL.
CALLBACK_FLUSH_TIMEOUT = 2.0
#: Seconds between attempts to replay an orphaned CDR spool the database did not take.
ADOPT_RETRY = 60.0
#: Seconds between refreshes of the CDR gauges (queue, spool).
GAUGE_INTERVAL = 5.0


@dataclass(slots=True, eq=False)
class App:
    """The running service's parts (for tests and the status view)."""

    gateway: Gateway
    writer: CdrWriter
    config: GatewayConfig
    directory_holder: DirectoryHolder | None = None
    registrar: Registrar | None = None
    desk: SecurityDesk | None = None
    """Sends the security desks' notices (None without routing data)."""
    database: DatabaseHealth = field(default_factory=DatabaseHealth)
    callbacks: EmergencyCallbacks | None = None
    """The emergency callback windows (None without routing data)."""
    liveness: Liveness | None = None
    """The cluster heartbeat and watch (None without ``[cluster]``)."""
    tasks: list[asyncio.Task[None]] = field(default_factory=list)


@dataclass(slots=True, eq=False)
class DirectoryHolder:
    """The current routing data; replaced whole on reload (readers never see half)."""

    directory: Directory
    load: Callable[[], Awaitable[Directory]]

    async def reload(self) -> None:
        self.directory = await self.load()
        log.info("routing data reloaded")

    def get(self) -> Directory:
        return self.directory


def _without_password(url: str) -> str:
    """A database URL fit for a log line (the password replaced)."""
    parts = urllib.parse.urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urllib.parse.urlunsplit(parts._replace(netloc=netloc))


class StartupError(Exception):
    """The gateway could not start, for a reason the operator can fix without a
    traceback (``voipgw run`` prints one line and exits non-zero).

    Args:
        what: the part that failed ("database", "CDR spool", "SIP listeners" ...).
        detail: why, in one line.
    """

    def __init__(self, what: str, detail: str) -> None:
        named = detail.lower().startswith(what.lower())
        super().__init__(detail if named else f"{what}: {detail}")
        self.what = what
        self.detail = detail


#: Errors a start-up step raises for reasons outside the program (a port in use, a
#: locked or unwritable spool, a database that cannot be reached or started);
#: anything else is a bug and keeps its traceback.
EXPECTED_START_ERRORS = (
    OSError,
    SpoolError,
    asyncpg.PostgresError,
    asyncpg.InterfaceError,
    subprocess.CalledProcessError,
    subprocess.TimeoutExpired,
)


@contextlib.contextmanager
def starting(what: str) -> Iterator[None]:
    """Maps the expected failures of one start-up step to :class:`StartupError`
    naming ``what`` (httpcore's ``map_exceptions``)."""
    try:
        yield
    except EXPECTED_START_ERRORS as exc:
        raise StartupError(what, _one_line(exc)) from exc


def _one_line(exc: BaseException) -> str:
    if isinstance(exc, subprocess.CalledProcessError):
        return f"{Path(str(exc.cmd[0])).name} exited with status {exc.returncode}"
    if isinstance(exc, OSError) and exc.strerror and exc.filename is None:
        return exc.strerror  # without "[Errno 98]"
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text[:300]


@contextlib.asynccontextmanager
async def running_app(
    config: GatewayConfig,
    metrics: Metrics | None = None,
    *,
    orphaned_spools: Sequence[tuple[Path, str]] = (),
) -> AsyncIterator[App]:
    """Starts every part of the service; stops them in reverse order on exit.

    ``orphaned_spools`` are CDR spools of instances that no longer run, each with the
    instance name that wrote it (``gateway.workers.plan.orphaned_spools``): replayed in
    the background once the gateway is up, as each instance would on its own start.

    Each part is built with what it needs, in dependency order: the database, the
    routing data, the guard and registrar, the CDR writer, the emergency notifier, the
    router, and last the gateway that carries them (nothing is attached afterwards).
    A part that fails to start releases every part started before it (the exit
    stack), so a failed start leaves no listener bound and stops the embedded
    PostgreSQL it started.

    Raises:
        StartupError: a part could not start for an expected reason (named).
    """
    db_config = config.database
    cdr_config = config.cdr
    routing_config = config.routing
    async with contextlib.AsyncExitStack() as stack:
        with starting("database"):
            db = await stack.enter_async_context(
                database(
                    db_config,
                    supervise=True,
                    on_restart=metrics.database_restarted if metrics is not None else None,
                )
            )
            async with db.pool.acquire() as con:
                applied = await migrate(con)
        log.info(
            "database: %s%s",
            f"embedded PostgreSQL in {db_config.pgdata}"
            if db.embedded is not None
            else "PostgreSQL at " + _without_password(db_config.url or ""),
            f"; applied migrations {', '.join(applied)}" if applied else "",
        )
        holder = None
        if routing_config is not None:
            with starting("routing data"):
                holder = await _routing_data(db.pool, config)
        # The one recogniser of emergency dial strings: the guard, the router and the
        # last-resort route ask it, so they cannot disagree.
        dial_plan = DialPlan(
            routing_config.emergency if routing_config is not None else EmergencyConfig()
        )
        loop = asyncio.get_running_loop()
        control = LossController.from_config(config.guard, seq_offset=time.time() - loop.time())
        guard = Guard(config.guard, dial_plan=dial_plan, metrics=metrics, overload=control)
        shedder = _load_shedder(config, dial_plan, seq_offset=time.time() - loop.time())
        # With workers, each admits against the machine's calls (gateway.workers.calls).
        machine_calls = (
            MachineCalls(config.state_dir, config.server.workers, config.server.worker_index)
            if config.server.worker_index
            else None
        )
        if machine_calls is not None:
            stack.callback(machine_calls.close)
        # Where the flows this process holds are reached among several instances
        # ([cluster]; a worker's own port, gateway.workers.plan); None alone: every
        # flow is held here (gateway.registrar.routing).
        local_uri = config.cluster.flow_uri if config.cluster is not None else None
        # Built now, started with the listeners: its view of the others' heartbeats
        # tells the call path which flow owners are gone.
        liveness = (
            Liveness(
                db.pool,
                config.cluster,
                cdr_instance=config.instance,
                on_live=metrics.set_cluster_instances if metrics is not None else None,
                on_dead=_count_dead(metrics) if metrics is not None else None,
            )
            if config.cluster is not None
            else None
        )
        owner_gone: OwnerGone = liveness.owner_gone if liveness is not None else never_gone

        def held_flow(address: Endpoint) -> None:
            # Called by a call's routing, so only once the gateway below exists: the
            # lookups are built before the gateway whose transports send.
            gateway.transports.send_from_shared(address)

        registrar = (
            Registrar(
                config.registrar,
                # Each binding names this instance as the holder of its flow.
                BindingStore(db.pool, flow_owner=local_uri),
                on_auth_failure=guard.auth_failed,
                # Both lists name the PBX and trunks: [upstream] for routing, [guard]
                # for rate limits.
                trusted_peers=config.upstream.trusted_peers + config.guard.trusted_peers,
                flow_owner=local_uri,
            )
            if config.registrar is not None
            else None
        )
        services: dict[str, ServiceHandler] = (
            {"REGISTER": registrar.handle} if registrar is not None else {}
        )
        with starting("CDR spool"):
            writer = await stack.enter_async_context(
                CdrWriter(
                    db.pool,
                    cdr_config,
                    on_committed=(
                        (lambda rows, _records, seconds: metrics.cdr_batch_committed(rows, seconds))
                        if metrics is not None
                        else None
                    ),
                    instance=config.instance,
                )
            )
        wall_offset = time.time() - loop.time()

        def write_cdr(event: CallEnded) -> None:
            if is_auth_challenge(event):
                return  # part of the call that follows, not a call (RFC 3261 22.2)
            writer.submit(record_of(event, wall_offset=wall_offset, instance=config.instance))

        record_clock = (wall_offset, config.instance)

        def write_in_progress_cdr(event: CallAnswered) -> None:
            # The same snapshot and mapping as the final record (issue 19), built only
            # if the call is still up when the writer cuts its batch (issue 17).
            summary = event.summary
            writer.answered(
                InProgressRecord(summary, record_clock), call_uuid_of(summary.call_uuid)
            )

        sinks: list[Callable[[CallEnded], None]] = [write_cdr]
        router = None
        desk = None
        # RFC 6881 SP-35 windows, shared with the other instances and kept across
        # restarts (gateway/cluster/callbacks.py): the open ones are loaded first.
        callbacks = EmergencyCallbacks(
            db.pool,
            instance=config.instance,
            # Rule 5: with workers, the machine's windows without the database.
            siblings=(
                SiblingWindows(config.state_dir / WINDOWS_DIR)
                if config.server.worker_index
                else None
            ),
        )
        if holder is not None:
            await callbacks.load()
        if holder is not None and routing_config is not None:
            notifier = (
                await stack.enter_async_context(EmergencyNotifier(config.notify))
                if config.notify is not None
                else None
            )
            # The customers' security desks, told by SIP MESSAGE (desk.py).
            desk = SecurityDesk(directory=holder.get, resolve=resolve_endpoints, metrics=metrics)
            router = CallRouter(
                notify=notify_all(notifier, desk),
                recorded_line=(
                    recorded_line_lookup(config.media) if config.media is not None else None
                ),
                config=routing_config,
                directory=holder.get,
                overload=config.overload,
                resolve=resolve_endpoints,
                dial_plan=dial_plan,
                lookup_binding=(
                    _binding_lookup(registrar, local_uri, owner_gone, held_flow)
                    if registrar
                    else None
                ),
                callback_flow=(
                    _callback_flow(registrar, local_uri, owner_gone, held_flow)
                    if registrar
                    else None
                ),
                cluster_uri=local_uri,
                edge_proxies=config.sip.edge_proxies,
                trusted_peers=config.upstream.trusted_peers,
                international_peers=config.upstream.international_peers,
                authenticate=(
                    registrar.authenticate_call
                    if registrar is not None
                    and config.registrar is not None
                    and config.registrar.authenticate_calls
                    else None
                ),
                callbacks=callbacks,
                sibling_calls=machine_calls.siblings if machine_calls is not None else None,
            )
            # The RFC 6881 callback window starts when the emergency call ends.
            sinks.append(router.call_ended)
            if shedder is not None:
                # A centre's callback is taken like an emergency call, never shed.
                shedder.may_be_callback = router.may_be_callback
        gateway = Gateway(
            config,
            router=router,
            call_sinks=sinks,
            answer_sinks=[write_in_progress_cdr] if cdr_config.in_progress_records else [],
            services=services,
            metrics=metrics,
            guard=guard,
            media=config.media,
            # RFC 7339: loss-based overload feedback to upstreams that ask for it,
            # from the configured capacity when there is one, else from the load.
            on_response=_overload_feedback(control or (shedder.monitor if shedder else None)),
            shedder=shedder,
            on_active_calls=machine_calls.publish if machine_calls is not None else None,
            emergency_fallback=(
                _emergency_fallback(dial_plan, holder) if holder is not None else None
            ),
        )
        if gateway.media is not None:
            gateway.media.warm()  # encode every prompt once, before the first call
        app = App(
            gateway=gateway,
            writer=writer,
            config=config,
            directory_holder=holder,
            registrar=registrar,
            desk=desk,
            database=db.health,
            callbacks=callbacks if router is not None else None,
        )
        try:
            with starting("SIP listeners"):
                await gateway.start()
            if desk is not None:
                app.tasks.append(asyncio.create_task(desk.deliver_forever(gateway.send_message)))
            app.tasks.append(asyncio.create_task(_maintenance(db.pool, cdr_config, metrics)))
            if orphaned_spools:
                app.tasks.append(
                    asyncio.create_task(_adopt_spools(db.pool, cdr_config, orphaned_spools))
                )
            if router is not None:
                app.tasks.append(asyncio.create_task(callbacks.write_behind_forever()))
            if liveness is not None:
                app.liveness = liveness
                app.tasks.append(asyncio.create_task(liveness.run_forever()))
            if metrics is not None:
                app.tasks.append(asyncio.create_task(_gauges(writer, metrics, holder)))
            if registrar is not None:
                app.tasks.append(asyncio.create_task(registrar.purge_forever()))
                # Writes REGISTERs taken during an outage through, refreshes memory.
                app.tasks.append(asyncio.create_task(registrar.location.sync_forever()))
                if metrics is not None:
                    app.tasks.append(asyncio.create_task(_binding_gauge(registrar, metrics)))
            yield app
        finally:
            # Also after a failed start: the listeners bound before the one that
            # failed are closed, and nothing uses the pool once it closes.
            if gateway.media is not None:
                await gateway.media.close()
            await gateway.close()
            # The windows of the last calls, for the instance that takes the callback;
            # bounded, as PostgreSQL may be what is failing.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(CALLBACK_FLUSH_TIMEOUT):
                    await callbacks.written_behind()
            for task in app.tasks:
                task.cancel()
            await asyncio.gather(*app.tasks, return_exceptions=True)
            if app.liveness is not None:
                # Gone, not dead: the others must not count it (bounded, as above).
                with contextlib.suppress(TimeoutError, *DATABASE_ERRORS):
                    async with asyncio.timeout(CALLBACK_FLUSH_TIMEOUT):
                        await app.liveness.leave()


def _count_dead(metrics: Metrics) -> Callable[[DeadInstance], None]:
    def count(dead: DeadInstance) -> None:
        metrics.cluster_instance_dead(dead.calls_closed)

    return count


def _overload_feedback(
    control: LossController | LoadMonitor | None,
) -> Callable[[Response, float], None] | None:
    """Stamps RFC 7339 loss-based overload feedback on the responses the gateway
    sends (None: no feedback)."""
    if control is None:
        return None
    feedback = control.feedback

    def stamp(response: Response, now: float) -> None:
        stamp_overload_feedback(response, feedback(now))

    return stamp


def _load_shedder(
    config: GatewayConfig, dial_plan: DialPlan, *, seq_offset: float
) -> LoadShedder | None:
    """Load shedding as ``[overload]`` asks (None when ``load_shedding`` is off); its
    RFC 7339 window and validity are the ``[guard]`` oc settings."""
    overload = config.overload
    if not overload.load_shedding:
        return None
    monitor = LoadMonitor(
        shed_lag=overload.shed_lag,
        shed_receive_queue=overload.shed_receive_queue,
        shed_after=overload.shed_after,
        feedback_interval=config.guard.oc_interval,
        validity=config.guard.oc_validity,
        seq_offset=seq_offset,
    )
    return LoadShedder(monitor, dial_plan, retry_after=overload.retry_after, tag=new_token())


async def _routing_data(pool: asyncpg.Pool, config: GatewayConfig) -> DirectoryHolder:
    """The routing data, read from the database (a seed sites file imported first when
    the database has none): a holder that reloads it on SIGHUP."""
    assert config.routing is not None
    devices = config.routing.devices
    if config.seed_sites is not None:
        await _seed_sites(pool, config.seed_sites)

    async def load() -> Directory:
        async with pool.acquire() as con:
            return await load_directory(con, devices)

    return DirectoryHolder(directory=await load(), load=load)


async def _seed_sites(pool: asyncpg.Pool, path: Path) -> None:
    """Imports a sites file when the database has no customers yet (first start)."""

    async with pool.acquire() as con:
        existing = await export_sites(con)
        if existing.customers:
            return
        fmt = "csv" if str(path).endswith(".csv") else "toml"
        text = await asyncio.to_thread(path.read_text, encoding="utf-8")
        data = parse_sites(text, fmt)
        await import_sites(con, data)
        log.info("imported seed sites from %s", path)


#: ``held_flow(address)``: what goes to a binding's address whose flow this process
#: holds leaves from the socket the device registered to (a worker's shared port).
HeldFlow = Callable[[Endpoint], None]


def _no_shared_socket(_address: Endpoint) -> None:
    """One process: it sends from the port the device registered to anyway."""


def _flow_held_here(binding: Binding, local: str | None, held_flow: HeldFlow) -> None:
    """Before a call goes over a flow this process holds by its ``flow_owner``: a
    worker sends from the shared port the device registered to, which its NAT lets
    in, even when this run of the worker has not heard from the device yet (it was
    started again since; gateway/workers/plan.py)."""
    if local is not None and binding.flow_owner is not None:
        held_flow(binding.received)


def _binding_lookup(
    registrar: Registrar,
    local: str | None,
    owner_gone: OwnerGone = never_gone,
    held_flow: HeldFlow = _no_shared_socket,
) -> BindingLookup:
    """The router's binding lookup: the AoR's device over this instance's flow,
    through the edge proxy of its Path (gateway.registrar.path), or through the
    sibling instance holding its flow (gateway.registrar.routing).

    Args:
        registrar: the registrar.
        local: this process's ``[cluster]`` flow URI
            (:attr:`gateway.config.ClusterConfig.flow_uri`); None without ``[cluster]``.
        owner_gone: whether the heartbeats say an instance is gone.
        held_flow: told the address of a binding whose flow this process holds,
            before the call goes there (:func:`_flow_held_here`).
    """

    async def lookup(request: Request) -> Route | Reject | LocationUnknown | None:
        try:
            bindings = await registrar.lookup(request.uri)
        except ValueError:
            return None
        except LocationUnavailable:
            # The database is away and this instance remembers no binding of the
            # callee (remembered ones are answered from memory): nobody can tell.
            return LocationUnknown(retry_after=RETRY_AFTER_DB_DOWN)
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            # The database answered with an error that is not an outage (a broken
            # schema): the call goes on by its default route, the log says why.
            log.warning("registration lookup failed (%s): default route", exc)
            return None
        as_owner = routed_to_owner(request.headers.get_lines("Route"), local)
        choice = choose_flow(bindings, local=local, as_owner=as_owner, owner_gone=owner_gone)
        if choice is None:
            return None
        binding = choice.binding
        if binding is None:
            log.info("relayed call for %s: no flow of it held here, 480", request.uri)
            return flow_not_held()
        if binding.path:
            return await _route_via_path(binding, request.uri)
        if choice.owner is None:
            _flow_held_here(binding, local, held_flow)
            return route_to_binding(binding)
        if choice.owner_gone:
            log.info(
                "call for %s: its flow owner %s is gone (heartbeats), 480",
                request.uri,
                choice.owner,
            )
            return owner_unreachable(binding)
        targets = await _hop_targets(choice.owner, request.uri, "flow owner")
        if targets is None:
            return owner_unreachable(binding)
        log.info("call for %s: through %s, which holds its flow", request.uri, choice.owner)
        return route_via_owner(binding, targets, request.uri)

    return lookup


async def _hop_targets(hop: str, callee: str, what: str) -> tuple[Endpoint, ...] | None:
    """The transport addresses of the next hop towards a registered device (its flow
    owner, or the first entry of its Path), or None (logged) when it does not resolve:
    the caller then gets the 480 of :func:`owner_unreachable`."""
    try:
        return await resolve_endpoints(hop)
    except (ValueError, TransportError) as exc:
        log.warning("%s %s of %s unresolvable (%s)", what, hop, callee, exc)
        return None


def _callback_flow(
    registrar: Registrar,
    local: str | None,
    owner_gone: OwnerGone = never_gone,
    held_flow: HeldFlow = _no_shared_socket,
) -> CallbackFlow:
    """How an emergency callback reaches the device of its window through the
    instance holding the device's registration flow
    (gateway.registrar.routing.choose_callback_flow).

    Args:
        registrar: the registrar (the device's bindings).
        local: this process's ``[cluster]`` flow URI
            (:attr:`gateway.config.ClusterConfig.flow_uri`); None without ``[cluster]``.
        owner_gone: whether the heartbeats say an instance is gone.
        held_flow: as for :func:`_binding_lookup`.
    """
    served = registrar.config

    async def flow(
        window: CallbackWindow, request: Request, as_owner: bool
    ) -> Route | Reject | None:
        choice = None
        for aor in callback_aors(window.aor, domains=served.domains, realm=served.realm):
            try:
                bindings = await registrar.lookup(aor)
            except (ValueError, LocationUnavailable, *DATABASE_ERRORS) as exc:
                # Not known: the window's own address, as before flows had owners.
                log.warning(
                    "callback to %s: registration of %s unknown (%s)", window.number, aor, exc
                )
                continue
            choice = choose_callback_flow(
                bindings,
                contact=window.contact,
                endpoint=window.endpoint,
                local=local,
                as_owner=as_owner,
                owner_gone=owner_gone,
            )
            if choice is not None and choice.binding is not None:
                break
        if choice is None:
            return flow_not_held() if as_owner else None
        binding = choice.binding
        if binding is None:
            log.info("relayed callback to %s: no flow of its device held here, 480", window.number)
            return flow_not_held()
        if binding.path:
            # Through the edge proxy that holds the flow (RFC 3327), from any instance.
            through_path = await _route_via_path(binding, request.uri)
            if isinstance(through_path, Reject):
                return through_path
            return as_callback(through_path, binding)
        if choice.owner is None:
            _flow_held_here(binding, local, held_flow)
            return callback_to_binding(binding)
        if choice.owner_gone:
            log.warning(
                "callback to %s: its device's flow owner %s is gone (heartbeats): trying"
                " its address %s from here as a last resort",
                window.number,
                choice.owner,
                binding.received.host_port,
            )
            return callback_last_resort(binding)
        targets = await _hop_targets(choice.owner, request.uri, "flow owner")
        if targets is None:
            return owner_unreachable(binding)
        log.info(
            "callback to %s: through %s, which holds its device's flow", window.number, choice.owner
        )
        return callback_via_owner(binding, targets, request.uri)

    return flow


async def _route_via_path(binding: Binding, callee: str) -> Route | Reject:
    """The route to a binding registered through an edge proxy (RFC 3327 Path),
    or the 480 of an edge proxy whose address does not resolve."""
    targets = await _hop_targets(first_hop(binding), callee, "Path")
    if targets is None:
        return owner_unreachable(binding)
    return route_via_path(binding, targets)


def _emergency_fallback(
    dial_plan: DialPlan, holder: DirectoryHolder
) -> Callable[[Request], Route | None]:
    """A last-resort route for emergency calls when the routing hook fails: straight
    to the national default centres (IP-literal next hops only: no lookups here)."""

    def fallback(request: Request) -> Route | None:
        facts = CallFacts(
            routed_by=RoutedBy.FALLBACK,
            emergency=dial_plan.match(request.uri),
            emergency_policy="fallback",
        )
        if not facts.is_emergency:
            return None
        targets: list[Endpoint] = []
        uris: list[str] = []
        centres: list[str | None] = []
        for centre in lookup_psap(None, holder.get().psap).targets:
            endpoint = ip_literal_endpoint(centre.sip_uri)
            if endpoint is not None:
                targets.append(endpoint)
                uris.append(centre.sip_uri)
                centres.append(centre.id)
        if not targets:
            return None
        return Route(
            targets=tuple(targets),
            request_uris=tuple(uris),
            emergency=True,
            # Per target, as the router's routes carry them: the metrics and the CDR
            # name the centre that answered (it was "none" after a routing failure).
            facts=replace(facts, centres=tuple(centres)),
        )

    return fallback


async def _maintenance(pool: asyncpg.Pool, config: CdrConfig, metrics: Metrics | None) -> None:
    """Partition maintenance on a timer (safe from several instances: advisory lock)."""
    while True:
        try:
            report = await maintain(
                pool,
                dt.datetime.now(dt.UTC),
                retention_months=config.retention_months,
                ahead=config.partitions_ahead,
            )
            if not report.skipped:
                # cdr.maintenance logs each partition created or retired at info.
                log.debug("cdr maintenance: created %s retired %s", report.created, report.retired)
            if metrics is not None:
                metrics.set_cdr_partitions_ahead(await _partitions_ahead(pool))
        except asyncio.CancelledError:
            raise
        except Exception:
            # The database may be down; CDRs spool meanwhile. Try again next round.
            log.exception("cdr maintenance failed")
        await asyncio.sleep(config.maintenance_interval)


async def _adopt_spools(
    pool: asyncpg.Pool, config: CdrConfig, spools: Sequence[tuple[Path, str]]
) -> None:
    """Replays each orphaned spool as the instance that wrote it: its records go in,
    its calls left in progress are closed (``gateway-restart``). A spool the database
    did not take in full is tried again every ``ADOPT_RETRY`` seconds; one that another
    process holds is left to it."""
    for spool, instance in spools:
        while True:
            try:
                replay = await replay_spool(pool, config, spool, instance=instance)
            except (SpoolError, OSError) as exc:
                log.warning("CDR spool %s of %s not replayed: %s", spool, instance, exc)
                break
            log.info(
                "CDR spool %s of %s (no longer running) replayed: %d rows inserted,"
                " %d already present, %d bytes left",
                spool,
                instance,
                replay.committed,
                replay.duplicate,
                replay.left,
            )
            if not replay.left:
                # All in: no run of this configuration writes it, and a start with
                # another worker count would only replay it again.
                await asyncio.to_thread(retire_spool, spool)
                break
            await asyncio.sleep(ADOPT_RETRY)


async def _partitions_ahead(pool: asyncpg.Pool) -> int:
    """Monthly partitions that exist after the current month (the alert's input)."""
    current = Month.of(dt.datetime.now(dt.UTC))
    async with pool.acquire() as con:
        names = await existing_partitions(con)
    months = [month_of_partition(name) for name in names]
    return sum(1 for month in months if month is not None and month > current)


async def _binding_gauge(registrar: Registrar, metrics: Metrics) -> None:
    """Keeps ``voipgw_registered_bindings`` at the registrar's count (all instances')."""
    while True:
        try:
            count: int | None = await registrar.count_bindings()
        except asyncio.CancelledError:
            raise
        except (
            OSError,
            TimeoutError,
            asyncpg.PostgresError,
            asyncpg.InterfaceError,
            asyncpg.exceptions.InternalClientError,  # no primary among the url's hosts
        ):
            # PostgreSQL is away: the count is unknown, not what it last was (the
            # registrar's 503s and /readyz tell the outage itself).
            log.debug("counting registered bindings failed", exc_info=True)
            count = None
        metrics.set_registered_bindings(count)
        await asyncio.sleep(GAUGE_INTERVAL)


async def _gauges(writer: CdrWriter, metrics: Metrics, holder: DirectoryHolder | None) -> None:
    checked: Directory | None = None
    while True:
        metrics.set_cdr_queue_depth(writer.queue_depth())
        metrics.set_cdr_spool(writer.spool_bytes(), writer.oldest_spooled_age() or 0.0)
        if holder is not None and holder.directory is not checked:
            # Once per routing data (start, SIGHUP reload), not per tick.
            checked = holder.directory
            metrics.set_site_address_problems(directory_address_problems(checked))
        await asyncio.sleep(GAUGE_INTERVAL)


def directory_address_problems(directory: Directory) -> dict[AddressProblem, int]:
    """How many sites and declared locations have each address problem (the gauge)."""
    declared = [d for items in directory.declared.values() for d in items]
    found = sites_address_problems(
        directory.sites.values(), declared, directory.psap.municipalities
    )
    return problem_counts(found)


__all__ = ["App", "Endpoint", "StartupError", "record_of", "running_app", "starting"]
