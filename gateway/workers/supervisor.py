"""The supervisor: ``voipgw run`` with ``[server] workers`` > 1.

It starts the workers (``voipgw run --worker N``, each a whole gateway, see
:mod:`.plan`), starts a worker that died again after ``restart_delay`` (doubled while
it keeps dying, counted in ``voipgw_worker_restarts_total``), forwards SIGHUP (reload)
and SIGTERM/SIGINT (drain: each worker refuses new calls, lets its calls end, exits),
and serves ``[metrics] port`` for the machine: ``/metrics`` is every worker's samples
labelled ``worker="N"`` plus its own; ``/readyz`` is ready when every worker is.

Why merge metrics here and not prometheus_client's multiprocess mode: that mode has
no callback gauges (``voipgw_active_calls`` and the queue gauges are read when
scraped), needs a gauge mode per gauge and a shared directory cleaned on every
restart; and separate per-worker scrape targets would make every operator configure
N targets. Each worker still serves its own status port (``worker_metrics_port +
N - 1``), which this reads; a scrape here costs one loopback request per worker.

When the database is the embedded PostgreSQL, the supervisor starts it before the
workers and stops it after the last one: the workers find it running and share it
(cdr.db "start once, reuse if running"), and no worker's death takes it down.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import os
import signal
import sys
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import Collector

from gateway.config import GatewayConfig

log = logging.getLogger("voipgw.workers")

#: Environment variable naming the file descriptor a worker writes "ready" to.
READY_FD_ENV = "VOIPGW_READY_FD"
#: Environment variable holding the supervisor's pid (see :func:`die_with_supervisor`).
SUPERVISOR_PID_ENV = "VOIPGW_SUPERVISOR_PID"
#: What a worker writes on the ready pipe when it takes calls.
READY = b"1"
#: Longest start-up failure reason read from a worker's ready pipe, in bytes.
MAX_FAILURE_BYTES = 4096
#: Linux prctl(2) option: the signal this process gets when its parent dies.
_PR_SET_PDEATHSIG = 1
#: Longest back-off between restarts of a worker that keeps dying, in seconds.
RESTART_DELAY_MAX = 30.0
#: A worker that ran this long before dying restarts after the shortest delay again.
STABLE_AFTER = 60.0
#: Seconds a worker may take to get ready (initdb and migrations on a first start).
READY_TIMEOUT = 120.0
#: Seconds, beyond the drain, a worker has to exit after SIGTERM before SIGKILL.
EXIT_GRACE = 15.0
#: Seconds one worker's /metrics may take before the merged scrape goes without it.
SCRAPE_TIMEOUT = 2.0
#: Seconds between reads of every worker's /readyz (what the supervisor's reports).
READYZ_INTERVAL = 1.0


class WorkerStartError(RuntimeError):
    """A worker did not start: ``reason`` is its own one-line account."""

    def __init__(self, index: int, reason: str) -> None:
        super().__init__(f"worker {index}: {reason}")
        self.index = index
        self.reason = reason


@dataclass(slots=True)
class Worker:
    """One worker process slot (its process changes on restart)."""

    index: int
    metrics_port: int
    proc: asyncio.subprocess.Process | None = None
    ready: bool = False
    started_at: float = 0.0
    delay: float = 0.0
    ready_event: asyncio.Event = field(default_factory=asyncio.Event)
    status: dict[str, Any] = field(default_factory=dict)
    """The worker's last /readyz document ({} until read, or when it did not answer)."""
    failure: str = ""
    """Why the worker could not start, as it said on the ready pipe ("" if it did not)."""
    reader: asyncio.Task[None] | None = None
    """Reads the ready pipe of the current process."""


#: Gauges that count a table every worker shares (PostgreSQL): each worker reports
#: the same whole-table value, so the machine's is one sample, the largest, with no
#: ``worker`` label; summing them over workers would count the table N times.
SHARED_TABLE_GAUGES = frozenset(
    {"voipgw_registered_bindings", "voipgw_cdr_partitions_ahead", "voipgw_cluster_instances"}
)


class WorkerSamples(Collector):
    """The workers' last scrapes, each sample labelled with its worker.

    Args:
        own: families the supervisor exports itself (each worker's copy is dropped).
        shared: families reported once, as their largest value over the workers
            (NaN, "not read yet", only when no worker has read it).
    """

    def __init__(self, own: frozenset[str], shared: frozenset[str] = SHARED_TABLE_GAUGES) -> None:
        self.texts: dict[int, str] = {}
        self.own = own
        self.shared = shared

    def collect(self) -> Iterator[Metric]:
        merged: dict[str, Metric] = {}
        largest: dict[tuple[str, str, tuple[tuple[str, str], ...]], float] = {}
        for index, text in sorted(self.texts.items()):
            for family in text_string_to_metric_families(text):
                # A counter's creation time comes as a family of its own in the
                # text format (``<name>_created``): the supervisor's counter has one.
                if family.name in self.own or family.name.removesuffix("_created") in self.own:
                    continue
                target = merged.get(family.name)
                if target is None:
                    target = merged[family.name] = Metric(
                        family.name, family.documentation, family.type, family.unit
                    )
                for sample in family.samples:
                    if family.name in self.shared:
                        key = (family.name, sample.name, tuple(sorted(sample.labels.items())))
                        seen = largest.get(key, math.nan)
                        largest[key] = sample.value if math.isnan(seen) else max(seen, sample.value)
                        continue
                    target.add_sample(
                        sample.name, {**sample.labels, "worker": str(index)}, sample.value
                    )
        for (family_name, sample_name, labels), value in largest.items():
            merged[family_name].add_sample(sample_name, dict(labels), value)
        yield from merged.values()


class Supervisor:
    """Runs ``config.server.workers`` workers until :meth:`stop`.

    Args:
        config: the file's configuration; ``config.source`` is passed to the workers.
        argv: extra ``voipgw run`` arguments for each worker (``--no-uvloop``).
        drain_seconds: how long each worker lets its calls end after SIGTERM.
    """

    def __init__(
        self, config: GatewayConfig, argv: tuple[str, ...] = (), drain_seconds: float = 30.0
    ) -> None:
        assert config.source is not None, "workers read the configuration file"
        self.config = config
        self.argv = argv
        self.drain_seconds = drain_seconds
        server = config.server
        self.workers = [
            Worker(index=i, metrics_port=server.worker_metrics_port + i - 1)
            for i in range(1, server.workers + 1)
        ]
        self.stopping = False
        self.registry = CollectorRegistry()
        # A worker never owns the embedded PostgreSQL: its restart count is ours.
        self.samples = WorkerSamples(own=frozenset({"voipgw_database_restarts"}))
        self.registry.register(self.samples)
        self.restarts = Counter(
            "voipgw_worker_restarts",
            "Worker processes started again after they died",
            ["worker"],
            registry=self.registry,
        )
        self.running = Gauge(
            "voipgw_workers_running",
            "Worker processes running and ready",
            registry=self.registry,
        )
        self.running.set_function(lambda: sum(w.ready for w in self.workers))
        # The embedded PostgreSQL is the supervisor's (see running_workers): its
        # restarts are counted here, under the name a single process uses.
        self.database_restarts = Counter(
            "voipgw_database_restarts",
            "Restarts of the embedded PostgreSQL after its postmaster died",
            registry=self.registry,
        )
        self._tasks: list[asyncio.Task[None]] = []

    # ------------------------------------------------------------------ processes

    def _command(self, worker: Worker) -> list[str]:
        return [
            sys.executable,
            "-m",
            "gateway",
            "run",
            "--config",
            str(self.config.source),
            "--workers",
            str(self.config.server.workers),
            "--worker",
            str(worker.index),
            *self.argv,
        ]

    async def _spawn(self, worker: Worker) -> None:
        read_fd, write_fd = os.pipe()
        worker.ready = False
        worker.ready_event.clear()
        try:
            worker.proc = await asyncio.create_subprocess_exec(
                *self._command(worker),
                stdin=asyncio.subprocess.DEVNULL,
                pass_fds=(write_fd,),
                env={
                    **os.environ,
                    READY_FD_ENV: str(write_fd),
                    SUPERVISOR_PID_ENV: str(os.getpid()),
                },
            )
        finally:
            os.close(write_fd)
        worker.started_at = time.monotonic()
        log.info("worker %d started (pid %d)", worker.index, worker.proc.pid)
        worker.reader = asyncio.create_task(self._await_ready(worker, read_fd))

    async def _await_ready(self, worker: Worker, read_fd: int) -> None:
        # A pipe, not a log line: the worker writes b"1" when it takes calls, or the
        # one-line reason it cannot start; one that dies first closes it unwritten.
        with os.fdopen(read_fd, "rb", buffering=0) as pipe:
            data = await asyncio.to_thread(pipe.read, MAX_FAILURE_BYTES)
        worker.failure = ""
        if data == READY:
            worker.ready = True
            worker.ready_event.set()
            log.info("worker %d ready", worker.index)
        elif data:
            worker.failure = data.decode("utf-8", "backslashreplace")

    async def _keep(self, worker: Worker) -> None:
        """Waits on the worker and starts it again when it dies, until stopping."""
        while True:
            assert worker.proc is not None
            status = await worker.proc.wait()
            worker.ready = False
            if self.stopping:
                log.info("worker %d exited (%d)", worker.index, status)
                return
            ran = time.monotonic() - worker.started_at
            worker.delay = (
                self.config.server.restart_delay
                if ran >= STABLE_AFTER or worker.delay == 0.0
                else min(worker.delay * 2, RESTART_DELAY_MAX)
            )
            log.warning(
                "worker %d died (exit status %d after %.1f s); restarting in %.1f s",
                worker.index,
                status,
                ran,
                worker.delay,
            )
            self.restarts.labels(worker=str(worker.index)).inc()
            await asyncio.sleep(worker.delay)
            if self.stopping:
                return
            await self._spawn(worker)

    async def start(self) -> None:
        """Starts every worker and waits until each is ready.

        The first starts alone: it applies the database migrations and the sites
        seed, which the others would otherwise wait on one another for.

        Raises:
            WorkerStartError: a worker exited (naming its reason) or was not ready
                within READY_TIMEOUT.
        """
        for n, worker in enumerate(self.workers):
            await self._spawn(worker)
            if n == 0:
                await self._wait_ready([worker])
        await self._wait_ready(self.workers)
        self._tasks = [asyncio.create_task(self._keep(worker)) for worker in self.workers]
        if self.config.metrics.enabled:
            self._tasks.append(asyncio.create_task(self._watch_readyz()))

    async def _watch_readyz(self) -> None:
        """Reads every worker's /readyz now and then: a worker that runs but is not
        ready (its transports, its CDR spool) makes the machine not ready, and a
        dependency down at any worker (PostgreSQL) is reported degraded."""
        host = self.config.metrics.address
        while True:
            documents = await asyncio.gather(
                *(asyncio.to_thread(_readyz, host, w.metrics_port) for w in self.workers)
            )
            for worker, document in zip(self.workers, documents, strict=True):
                worker.status = document
            await asyncio.sleep(READYZ_INTERVAL)

    async def _wait_ready(self, workers: list[Worker]) -> None:
        async def one(worker: Worker) -> None:
            assert worker.proc is not None
            exited = asyncio.ensure_future(worker.proc.wait())
            ready = asyncio.ensure_future(worker.ready_event.wait())
            done, _ = await asyncio.wait(
                {exited, ready}, timeout=READY_TIMEOUT, return_when=asyncio.FIRST_COMPLETED
            )
            exited.cancel()
            ready.cancel()
            if ready not in done:
                if exited in done:
                    if worker.reader is not None:
                        await worker.reader  # the pipe is closed: its reason is read
                    raise RuntimeError(worker.failure or f"exited with {worker.proc.returncode}")
                raise RuntimeError(f"not ready in {READY_TIMEOUT:g} s")

        for worker in workers:
            try:
                await one(worker)
            except RuntimeError as exc:
                raise WorkerStartError(worker.index, str(exc)) from None

    def signal_all(self, signum: signal.Signals) -> None:
        """Sends ``signum`` to every running worker."""
        for worker in self.workers:
            if worker.proc is not None and worker.proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    worker.proc.send_signal(signum)

    async def stop(self) -> None:
        """Drains: SIGTERM to every worker, SIGKILL to one still running after the
        drain and :data:`EXIT_GRACE`; returns when all have exited."""
        self.stopping = True
        self.signal_all(signal.SIGTERM)
        procs = [w.proc for w in self.workers if w.proc is not None]
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self.drain_seconds + EXIT_GRACE):
                await asyncio.gather(*(proc.wait() for proc in procs))
        for proc in procs:
            if proc.returncode is None:
                log.error("worker pid %d did not exit after the drain: SIGKILL", proc.pid)
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                await proc.wait()
        for task in self._tasks:
            task.cancel()

    # ------------------------------------------------------------------ status

    def readiness(self) -> dict[str, bool]:
        """``/readyz``: each worker running, ready, and (when its status port has
        been read) ready by its own /readyz."""
        return {
            f"worker {w.index}": w.ready and w.status.get("ready", True) is True
            for w in self.workers
        }

    def dependencies(self) -> dict[str, bool]:
        """``/readyz`` dependencies: up only where every worker that reported one
        says it is up."""
        merged: dict[str, bool] = {}
        for worker in self.workers:
            for name, up in worker.status.get("dependencies", {}).items():
                merged[name] = merged.get(name, True) and bool(up)
        return merged

    async def exposition(self, accept: str) -> tuple[str, bytes]:
        """``/metrics``: every ready worker's scrape, labelled, and the supervisor's
        own; always the text format (the workers' samples arrive in it)."""
        host = self.config.metrics.address
        ports = {w.index: w.metrics_port for w in self.workers if w.ready}
        texts = await asyncio.gather(
            *(asyncio.to_thread(_fetch, host, port) for port in ports.values())
        )
        self.samples.texts = {i: t for i, t in zip(ports, texts, strict=True) if t is not None}
        return CONTENT_TYPE_LATEST, generate_latest(self.registry)


def _readyz(host: str, port: int) -> dict[str, Any]:
    where = f"[{host}]" if ":" in host else host
    try:
        with urllib.request.urlopen(
            f"http://{where}:{port}/readyz", timeout=SCRAPE_TIMEOUT
        ) as response:
            body = response.read()
    except urllib.error.HTTPError as exc:
        body = exc.read()  # 503 with the same JSON document
    except OSError:
        return {}
    try:
        document = json.loads(body)
    except ValueError:
        return {}
    return document if isinstance(document, dict) else {}


def _fetch(host: str, port: int) -> str | None:
    where = f"[{host}]" if ":" in host else host
    try:
        with urllib.request.urlopen(
            f"http://{where}:{port}/metrics", timeout=SCRAPE_TIMEOUT
        ) as response:
            return str(response.read().decode())
    except (OSError, urllib.error.URLError) as exc:
        log.warning("worker status port %d not scraped: %s", port, exc)
        return None


@contextlib.asynccontextmanager
async def running_workers(
    config: GatewayConfig, argv: tuple[str, ...], drain_seconds: float
) -> AsyncIterator[Supervisor]:
    """Started workers (and the shared embedded database), stopped on exit."""
    from cdr.db import database
    from gateway.service.app import StartupError, starting

    async with contextlib.AsyncExitStack() as stack:
        supervisor = Supervisor(config, argv, drain_seconds)
        if config.database.url is None:
            with starting("database"):
                await stack.enter_async_context(
                    database(
                        config.database,
                        supervise=True,
                        on_restart=supervisor.database_restarts.inc,
                    )
                )
        try:
            await supervisor.start()
        except WorkerStartError as exc:
            await supervisor.stop()
            raise StartupError(f"worker {exc.index}", exc.reason) from None
        except BaseException:
            await supervisor.stop()
            raise
        try:
            yield supervisor
        finally:
            await supervisor.stop()


def die_with_supervisor() -> None:
    """In a worker: be killed (SIGKILL) when the supervisor dies.

    A supervisor that is SIGKILLed or crashes cannot stop its workers; orphans would
    keep the shared port (SO_REUSEPORT lets the next supervisor's workers bind it
    beside them, and the kernel would split calls between old and new) and their
    own ports. So a supervisor's death is the whole gateway's crash, as it is for a
    single process: calls in progress end, CDRs stay in the spools. prctl(2) through
    ctypes, as the standard library has no binding for it; the parent check after it
    closes the race with a supervisor that died before the call.
    """
    import ctypes

    expected = os.environ.pop(SUPERVISOR_PID_ENV, None)
    if expected is None or not sys.platform.startswith("linux"):
        return
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
        log.warning("prctl(PR_SET_PDEATHSIG) failed: errno %d", ctypes.get_errno())
    if os.getppid() != int(expected):
        os._exit(1)  # the supervisor is already gone


def tell_ready(failure: str = "") -> None:
    """In a worker: tells the supervisor it takes calls (:data:`READY` on the ready
    pipe), or why it cannot start (``failure``, one line)."""
    fd = os.environ.pop(READY_FD_ENV, None)
    if fd is None:
        return
    with contextlib.suppress(OSError):
        os.write(int(fd), failure.encode()[:MAX_FAILURE_BYTES] if failure else READY)
        os.close(int(fd))


async def run_supervisor(
    config: GatewayConfig, argv: tuple[str, ...] = (), drain_seconds: float = 30.0
) -> int:
    """``voipgw run`` with several workers: runs them until SIGTERM/SIGINT; returns
    the exit status. SIGTERM during start-up stops what was started, as
    :func:`gateway.cli.main.run_gateway` does."""
    from gateway.cli.main import _interruptible_start
    from gateway.ops.logs import configure_logging
    from gateway.service.app import StartupError

    configure_logging(config.logging)
    with _interruptible_start() as interrupted:
        try:
            async with running_workers(config, argv, drain_seconds) as supervisor:
                return await _serve(supervisor, config)
        except asyncio.CancelledError:
            if interrupted:
                raise StartupError("start-up", f"interrupted by {interrupted[0]}") from None
            raise


async def _serve(supervisor: Supervisor, config: GatewayConfig) -> int:
    from gateway.cli.main import listeners_text
    from gateway.ops.http_status import StatusServer
    from gateway.service.app import starting

    loop = asyncio.get_running_loop()
    status: StatusServer | None = None
    if config.metrics.enabled:
        status = StatusServer(
            None,
            supervisor.readiness,
            config.metrics.address,
            config.metrics.port,
            dependencies=supervisor.dependencies,
            exposition=supervisor.exposition,
        )
        with starting("status listener"):
            await status.start()
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    loop.add_signal_handler(signal.SIGHUP, supervisor.signal_all, signal.SIGHUP)
    log.info(
        "voipgw ready: %d workers; SIP on %s; status on %s",
        len(supervisor.workers),
        listeners_text(config),
        f"{config.metrics.address} port {config.metrics.port}" if config.metrics.enabled else "off",
    )
    await stop.wait()
    log.info("draining %d workers", len(supervisor.workers))
    await supervisor.stop()
    if status is not None:
        await status.close()
    return 0
