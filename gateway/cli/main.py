"""``voipgw``: the one command for every job (run, check-config, db, sites, cdr ...).

Each package adds its own subcommands through a ``register(subparsers)`` function
(cdr.cli, gateway.cli.sites); this module owns ``run`` and ``check-config``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib
import logging
import signal
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from gateway.config import GatewayConfig, load_config
from gateway.sip.events import Endpoint
from routing.configfields import ConfigError

DEFAULT_CONFIG = "deploy/demo/voipgw.toml"

#: Modules contributing subcommands: each has register(subparsers).
SUBCOMMAND_MODULES = ("cdr.cli", "gateway.cli.sites", "gateway.cli.admin", "gateway.demo.cli")

log = logging.getLogger("voipgw")


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``voipgw`` console script; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    # Subcommands contributed by other packages set ``func`` (their own contract).
    handler = getattr(args, "handler", None) or getattr(args, "func", None)
    if handler is None:
        parser.print_help()
        return 2
    from gateway.service.app import StartupError

    try:
        result = handler(args)
    except ConfigError as exc:
        print(f"voipgw: configuration error: {exc}", file=sys.stderr)
        return 2
    except StartupError as exc:
        # Expected failures (a locked spool, a port in use, a database that cannot
        # start) need one line naming what failed, not a traceback.
        print(f"voipgw: cannot start: {exc}", file=sys.stderr)
        if getattr(args, "worker", 0):
            from gateway.workers.supervisor import tell_ready

            tell_ready(failure=str(exc))
        return 1
    except KeyboardInterrupt:
        return 130
    return int(result or 0)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="voipgw",
        description="SIP call-handling and emergency-routing gateway.",
    )
    sub = parser.add_subparsers(title="commands", metavar="COMMAND")

    run = sub.add_parser("run", help="run the gateway until SIGTERM")
    run.add_argument("--config", default=DEFAULT_CONFIG, help="TOML config file")
    run.add_argument(
        "--uvloop", action=argparse.BooleanOptionalAction, default=True, help="use uvloop"
    )
    run.add_argument(
        "--workers",
        type=int,
        default=None,
        metavar="N",
        help="worker processes sharing the SIP port (overrides [server] workers)",
    )
    # Set by the supervisor on the processes it starts (gateway.workers).
    run.add_argument("--worker", type=int, default=0, help=argparse.SUPPRESS)
    run.set_defaults(handler=cmd_run)

    check = sub.add_parser("check-config", help="validate a config file and exit")
    check.add_argument("--config", default=DEFAULT_CONFIG, help="TOML config file")
    check.set_defaults(handler=cmd_check_config)

    for name in SUBCOMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ImportError as exc:
            if exc.name != name:
                raise
            continue
        module.register(sub)
    return parser


def cmd_check_config(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    listeners = ", ".join(f"{item.transport} {item.host}:{item.port}" for item in config.sip.listen)
    print(f"{args.config}: OK ({listeners}; upstream {config.upstream.uri})")
    if config.seed_sites is not None:
        # A centre sharing the PBX's address would take the PBX's calls for its
        # callbacks (RFC 6881 SP-35/40): warn, naming both (gateway/edge/peers.py).
        from gateway.cli.sites import centre_address_warnings, read_sites_file
        from routing.sites_file import SitesFileError

        try:
            sites = read_sites_file(config.seed_sites, None)
        except (OSError, UnicodeDecodeError, SitesFileError) as exc:
            print(f"{config.seed_sites}: not checked: {exc}", file=sys.stderr)
        else:
            for warning in centre_address_warnings(sites, config):
                print(f"{config.seed_sites}: warning: {warning}", file=sys.stderr)
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    overrides = {} if args.workers is None else {"workers": args.workers}
    config = load_config(args.config, server=overrides)
    from gateway.workers.plan import orphaned_spools

    # Spools that a run with another worker count left: the single process or worker 1
    # replays them (gateway.workers.plan), named from the file's configuration.
    orphans: tuple[tuple[Path, str], ...] = ()
    if args.worker:
        from gateway.workers.plan import worker_config
        from gateway.workers.supervisor import die_with_supervisor

        die_with_supervisor()
        if args.worker == 1:
            orphans = orphaned_spools(config)
        config = worker_config(config, args.worker)
    elif config.server.workers > 1:
        from gateway.workers.supervisor import run_supervisor

        return asyncio.run(run_supervisor(config, () if args.uvloop else ("--no-uvloop",)))
    else:
        orphans = orphaned_spools(config)
    if args.uvloop:
        try:
            import uvloop
        except ImportError:
            log.warning("uvloop not installed; using the asyncio default loop")
        else:
            uvloop.install()
    return asyncio.run(run_gateway(config, orphaned_spools=orphans))


async def run_gateway(
    config: GatewayConfig,
    *,
    drain_seconds: float = 30.0,
    orphaned_spools: Sequence[tuple[Path, str]] = (),
) -> int:
    """Runs the gateway until SIGTERM/SIGINT; returns the exit status.

    SIGHUP re-reads the config file and applies what can change at run time (log
    level and format). SIGTERM drains: new ordinary calls get 503, calls in progress
    may end for up to ``drain_seconds``, then the gateway stops and flushes.
    """
    from gateway.ops.collector import tune_garbage_collector
    from gateway.ops.logs import configure_logging
    from gateway.ops.metrics import default_metrics
    from gateway.service.app import StartupError, running_app

    configure_logging(config.logging)
    log_core_build()
    metrics = default_metrics()
    with _interruptible_start() as interrupted:
        try:
            async with running_app(config, metrics, orphaned_spools=orphaned_spools) as app:
                tune_garbage_collector()
                return await _serve(app, config, metrics, drain_seconds)
        except asyncio.CancelledError:
            if interrupted:
                raise StartupError("start-up", f"interrupted by {interrupted[0]}") from None
            raise


@contextlib.contextmanager
def _interruptible_start() -> Iterator[list[str]]:
    """SIGTERM and SIGINT during start-up cancel it, so that what was started is
    released (the embedded PostgreSQL stopped, listeners closed) and the process
    exits; :func:`_serve` replaces the handlers with the drain once the gateway is
    up. Yields the list that receives the signal's name when one came."""
    loop = asyncio.get_running_loop()
    task = asyncio.current_task()
    assert task is not None
    interrupted: list[str] = []

    def interrupt(signum: signal.Signals) -> None:
        interrupted.append(signum.name)
        task.cancel()

    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, interrupt, signum)
    try:
        yield interrupted
    finally:
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(signum)


def listeners_text(config: GatewayConfig) -> str:
    """The SIP listeners for people: "UDP 127.0.0.1:5060, TCP [::1]:5060"."""
    return ", ".join(
        f"{item.transport} {Endpoint(item.transport, item.host, item.port).host_port}"
        for item in config.sip.listen
    )


def log_core_build() -> None:
    """Says which build of the SIP core runs and why (gateway/ops/native.py)."""
    from gateway.ops.native import describe_core_build

    log.info("SIP core: %s", describe_core_build())


async def _serve(app: Any, config: GatewayConfig, metrics: Any, drain_seconds: float) -> int:
    from gateway.ops.collector import run_collections
    from gateway.ops.http_status import ReadinessChecks, StatusServer
    from gateway.ops.logs import configure_logging
    from gateway.ops.metrics import run_event_loop_lag_monitor
    from gateway.service.app import starting

    gateway = app.gateway
    checks = ReadinessChecks()
    checks.register("transports", lambda: gateway.ready)
    # Ready when CDRs can be kept: committed to PostgreSQL, or spooled to a
    # writable local directory while the database is away.
    checks.register("cdr", lambda: app.writer.database_available or app.writer.spool_writable())
    # Reported, not gating: calls go on while PostgreSQL is away (deploy/OPERATIONS.md).
    checks.register_dependency("database", lambda: app.database.available)
    status: StatusServer | None = None
    lag_task: asyncio.Task[None] | None = None
    metrics_config = config.metrics
    if metrics_config.enabled:
        status = StatusServer(
            metrics,
            checks,
            metrics_config.address,
            metrics_config.port,
            dependencies=checks.dependencies,
        )
        with starting("status listener"):
            await status.start()
        lag_task = asyncio.create_task(
            run_event_loop_lag_monitor(metrics, interval=metrics_config.lag_interval)
        )
    shedder = gateway.shedder
    # Young garbage collections on a clock, full ones when quiet (gateway.ops.collector).
    gc_task = asyncio.create_task(
        run_collections(lambda: shedder is not None and shedder.monitor.shedding)
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)

    reload_tasks: set[asyncio.Future[None]] = set()

    def reload() -> None:
        try:
            fresh = load_config(config.source) if config.source else config
        except ConfigError as exc:
            # A bad file on reload keeps the running configuration.
            log.error("reload refused: %s", exc)
            return
        configure_logging(fresh.logging)
        if app.directory_holder is not None:
            # Routing data reloads without a restart (sites, subscribers, centres).
            reload_tasks.add(asyncio.ensure_future(app.directory_holder.reload()))
        log.info("configuration reloaded from %s", config.source)

    loop.add_signal_handler(signal.SIGHUP, reload)
    # One line that says the gateway takes calls and where (tests and scripts wait for
    # "voipgw ready"; orchestrators poll /readyz).
    log.info(
        "%s: SIP on %s; status on %s",
        f"worker {config.server.worker_index} ready"
        if config.server.worker_index
        else "voipgw ready",
        listeners_text(config),
        f"http://{Endpoint('TCP', metrics_config.address, metrics_config.port).host_port}/metrics"
        if metrics_config.enabled
        else "off",
    )
    if config.server.worker_index:
        from gateway.workers.supervisor import tell_ready

        tell_ready()
    await stop.wait()
    log.info("draining: %d calls in progress", gateway.active_calls)
    gateway.draining = True
    await gateway.wait_idle(drain_seconds)
    gc_task.cancel()
    if lag_task is not None:
        lag_task.cancel()
    if status is not None:
        await status.close()
    log.info("stopped taking calls; flushing CDRs")
    return 0


if __name__ == "__main__":
    sys.exit(main())
