"""The gateway's configuration: one TOML file, validated at start.

Nested frozen dataclasses whose attributes name their units; durations are float
seconds everywhere. ``load_config(path)`` reads the file with :mod:`tomllib` and
raises :class:`ConfigError` naming the first bad field (``sip.listen[1].port: must
be <= 65535, got 70000``); the CLI prints it and exits non-zero.

Sections owned by other packages (database, cdr, routing, media, metrics, logging,
guard, registrar, notify) are parsed by their own ``from_table`` so each package keeps
its settings next to its code; :class:`GatewayConfig` holds each as a typed field.
"""

from __future__ import annotations

import ipaddress
import logging
import socket
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from cdr.config import CdrConfig
from cdr.db import DatabaseConfig
from gateway.edge.guard_config import GuardConfig
from gateway.ops.logs import LoggingConfig
from gateway.ops.metrics import MetricsConfig
from gateway.registrar.config import RegistrarConfig
from gateway.rtp.config import MediaConfig
from gateway.service.notify import NotifyConfig
from gateway.sip.session_timer import RFC_MIN_SE, SessionTimerPolicy
from gateway.sip.timers import SipTimers
from routing.config import RoutingConfig
from routing.configfields import ConfigError, Table

Network = ipaddress.IPv4Network | ipaddress.IPv6Network

log = logging.getLogger("voipgw.config")

TRANSPORTS = ("UDP", "TCP", "TLS")


@dataclass(frozen=True, slots=True, kw_only=True)
class ListenConfig:
    """One SIP listening socket.

    Attributes:
        transport: "UDP", "TCP" or "TLS".
        host: IP address to bind (IPv4 or IPv6 literal; it is also the address
            advertised in Via and Contact, so bind a concrete address).
        port: port number (0 picks a free port: tests).
    """

    transport: str
    host: str
    port: int
    shared: bool = False
    """Bound with SO_REUSEPORT by every worker process (the public port the workers
    share, never advertised); set by :func:`gateway.workers.plan.worker_config`, not
    read from the file."""

    @classmethod
    def from_table(cls, table: Table) -> ListenConfig:
        transport = table.choice("transport", ("UDP", "TCP", "TLS", "udp", "tcp", "tls"))
        host = table.str("host", required=True)
        try:
            ipaddress.ip_address(host)
        except ValueError:
            raise ConfigError(table.field("host"), f"not an IP address: {host!r}") from None
        default_port = 5061 if transport.upper() == "TLS" else 5060
        port = table.int("port", default_port, min=0, max=65535)
        table.reject_unknown()
        return cls(transport=transport.upper(), host=host, port=port)


@dataclass(frozen=True, slots=True, kw_only=True)
class TlsConfig:
    """TLS certificates.

    Attributes:
        certificate: PEM certificate chain file.
        private_key: PEM private key file.
        ca_file: CA bundle to verify peers (client certificates of trunks).
        verify_client: require and verify a client certificate on TLS listeners.
    """

    certificate: str | None = None
    private_key: str | None = None
    ca_file: str | None = None
    verify_client: bool = False

    @classmethod
    def from_table(cls, table: Table) -> TlsConfig:
        config = cls(
            certificate=table.opt_str("certificate"),
            private_key=table.opt_str("private_key"),
            ca_file=table.opt_str("ca_file"),
            verify_client=table.bool("verify_client", False),
        )
        table.reject_unknown()
        return config


@dataclass(frozen=True, slots=True, kw_only=True)
class SipConfig:
    """SIP stack settings.

    Attributes:
        listen: listening sockets.
        t1, t2, t4: RFC 3261 timers, in seconds.
        no_answer_timeout: seconds a ringing B leg may take to answer (Timer C).
        max_transactions: memory bound on live transactions.
        ingress_queue: most received messages waiting for the core.
        tls: TLS certificates.
        session_timers: run RFC 4028 session timers on both legs of every call (a
            vanished phone or PBX then ends its call).
        session_expires: the session interval the gateway offers and prefers, in
            seconds (RFC 4028 recommends 1800).
        min_se: the smallest interval accepted from a peer, in seconds (RFC 4028:
            at least 90; lower values are accepted with a warning, for tests).
        edge_proxies: networks of the SIP edge proxies in front of the gateway (the
            Kamailio dispatcher): for a request from one of them, the device's
            address is the ``received``/``rport`` it wrote into the Via below its own
            (:mod:`gateway.edge.device_source`), which classifies the call and is the
            CDR's source. Nobody else's Via is believed.
    """

    listen: tuple[ListenConfig, ...]
    t1: float = 0.5
    t2: float = 4.0
    t4: float = 5.0
    no_answer_timeout: float = 180.0
    max_transactions: int = 200_000
    ingress_queue: int = 10_000
    tls: TlsConfig = field(default_factory=TlsConfig)
    session_timers: bool = True
    session_expires: int = 1800
    min_se: int = RFC_MIN_SE
    edge_proxies: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = ()

    @property
    def session_timer_policy(self) -> SessionTimerPolicy | None:
        """What the B2BUA runs on each leg; None when session timers are off."""
        if not self.session_timers:
            return None
        return SessionTimerPolicy(interval=self.session_expires, min_se=self.min_se)

    @property
    def timers(self) -> SipTimers:
        return SipTimers(t1=self.t1, t2=self.t2, t4=self.t4, timer_c=self.no_answer_timeout)

    @classmethod
    def from_table(cls, table: Table) -> SipConfig:
        listen = tuple(ListenConfig.from_table(t) for t in table.tables("listen"))
        if not listen:
            raise ConfigError(table.field("listen"), "at least one listener is required")
        t1 = table.float("t1", 0.5, min=0.01, max=10)
        t2 = table.float("t2", 4.0, min=t1, max=60)
        min_se = table.int("min_se", RFC_MIN_SE, min=1, max=86_400)
        if min_se < RFC_MIN_SE:
            log.warning(
                "%s = %d is below RFC 4028's minimum of 90 s: for tests only",
                table.field("min_se"),
                min_se,
            )
        config = cls(
            listen=listen,
            t1=t1,
            t2=t2,
            t4=table.float("t4", 5.0, min=0.1, max=60),
            no_answer_timeout=table.float("no_answer_timeout", 180.0, min=1, max=3600),
            max_transactions=table.int("max_transactions", 200_000, min=100),
            ingress_queue=table.int("ingress_queue", 10_000, min=10),
            tls=TlsConfig.from_table(table.table("tls")),
            session_timers=table.bool("session_timers", True),
            session_expires=table.int("session_expires", 1800, min=min_se, max=86_400),
            min_se=min_se,
            edge_proxies=table.network_list("edge_proxies"),
        )
        if any(item.transport == "TLS" for item in listen) and not (
            config.tls.certificate and config.tls.private_key
        ):
            raise ConfigError(
                table.field("tls.certificate"), "a TLS listener needs certificate and private_key"
            )
        table.reject_unknown()
        return config


@dataclass(frozen=True, slots=True, kw_only=True)
class UpstreamConfig:
    """The default next hop (the PBX or upstream proxy) for calls routing does not
    send elsewhere.

    Attributes:
        uri: SIP URI of the next hop, resolved per RFC 3263 (``sip:pbx.example.com``,
            ``sip:127.0.0.1:5080;transport=tcp``).
        trusted_peers: addresses of the PBX and trunks (CIDRs). Calls from them are
            inbound calls towards registered devices, not calls by subscribers. Each
            entry is a CIDR (a domestic peer) or a table ``{ cidr = "...", scope =
            "domestic" | "international" }``.
        international_peers: those of them marked ``scope = "international"``: a
            Finnish caller ID from there is blocked or removed (Traficom regulation
            28, ``[routing.caller_id] international_finnish``).
    """

    uri: str
    trusted_peers: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = ()
    international_peers: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = ()

    @classmethod
    def from_table(cls, table: Table) -> UpstreamConfig:
        from gateway.sip.errors import ParseError
        from gateway.sip.uri import SipUri, parse_uri

        uri = table.str("uri", required=True)
        try:
            parsed = parse_uri(uri)
        except ParseError as exc:
            raise ConfigError(table.field("uri"), str(exc)) from None
        if not isinstance(parsed, SipUri):
            raise ConfigError(table.field("uri"), f"expected a sip: or sips: URI, got {uri!r}")
        peers, international = _trusted_peers(table)
        table.reject_unknown()
        return cls(uri=uri, trusted_peers=peers, international_peers=international)


#: ``scope`` of a trusted peer: where its calls come from (the caller-ID policy).
PEER_SCOPES = ("domestic", "international")


def _trusted_peers(table: Table) -> tuple[tuple[Network, ...], tuple[Network, ...]]:
    """Reads ``trusted_peers``: CIDR strings (domestic, the list form that came first)
    and ``{ cidr, scope }`` tables, in one list.

    Returns:
        (every trusted peer, the international ones).
    """
    items = table.raw("trusted_peers", [])
    where = table.field("trusted_peers")
    if not isinstance(items, list):
        raise ConfigError(where, f"expected a list, got {type(items).__name__}")
    peers: list[Network] = []
    international: list[Network] = []
    for i, item in enumerate(items):
        if isinstance(item, str):
            entry = Table({"cidr": item}, f"{where}[{i}]")
        elif isinstance(item, dict):
            entry = Table(item, f"{where}[{i}]")
        else:
            raise ConfigError(f"{where}[{i}]", f"expected a CIDR or a table, got {item!r}")
        cidr = entry.str("cidr", required=True)
        scope = entry.choice("scope", PEER_SCOPES, "domestic")
        entry.reject_unknown()
        try:
            network = ipaddress.ip_network(cidr, strict=False)
        except ValueError as exc:
            raise ConfigError(entry.field("cidr"), f"not an IP network: {exc}") from None
        peers.append(network)
        if scope == "international":
            international.append(network)
    return tuple(peers), tuple(international)


@dataclass(frozen=True, slots=True, kw_only=True)
class OverloadConfig:
    """Bounds on work: a call count, and load shedding by how far the loop is behind.

    Two limits, each with 503 + Retry-After (RFC 3261 21.5.4). ``max_calls`` counts
    calls; it cannot see that the calls of one second cost the event loop more than
    it has. Load shedding (:mod:`gateway.edge.overload`) looks at the loop itself:
    how late its heartbeat runs and how many bytes wait in the kernel's UDP receive
    queue. Past either threshold, new ordinary INVITEs are answered 503 statelessly
    before parsing the rest of the gateway cares about; in-dialog requests,
    responses, ACK, BYE, CANCEL and emergency calls keep flowing. It stops when both
    signals fall below half their threshold (hysteresis: one noisy sample does not
    flip it back and forth).

    Attributes:
        max_calls: calls beyond which new ordinary calls get 503 (calls from the PBX
            included). Every call the gateway holds counts, emergency calls and
            calls still being routed included.
        emergency_reserve: calls above ``max_calls`` that emergency calls draw on.
            Emergency calls are never refused for load, even beyond the reserve;
            one admitted beyond it is logged (warning) and counted
            (``voipgw_emergency_calls_beyond_reserve_total``): size the gateway so
            that it never happens.
        retry_after: Retry-After of the 503, in seconds.
        load_shedding: whether new ordinary INVITEs are shed by load (above).
        shed_lag: event-loop lag beyond which load shedding starts, in seconds: how
            late the overload heartbeat runs (every ``sample_interval``).
        shed_receive_queue: bytes in the kernel receive queues of the UDP sockets
            beyond which load shedding starts (Linux ``SO_MEMINFO`` rmem; a SIP
            datagram of ~700 bytes takes ~2.3 KiB there, so the default 262144 is
            ~110 datagrams, ~15-30 ms of work at saturation).
        shed_after: seconds either signal must stay past its threshold before
            shedding starts (a transient stall, the process descheduled for a
            moment, drains by itself; ``gateway.edge.overload`` Rule 2).
        sample_interval: seconds between samples of lag and queue depth while the
            load is near a threshold.
        calm_sample_interval: seconds between samples while both signals are below
            a quarter of their thresholds (``gateway.edge.overload`` Rule 1): each
            sample wakes the event loop, and a calm gateway need not look 100 times
            a second.
        read_ahead: while shedding, datagrams read per loop turn from the UDP
            sockets beyond the event loop's own 32 per socket, so that emergency
            INVITEs and the INVITEs to shed among them are taken before the
            messages queued ahead of them (``gateway.edge.overload`` Rule 3); 0:
            only the loop's reads.
    """

    max_calls: int = 5000
    emergency_reserve: int = 100
    retry_after: int = 5
    load_shedding: bool = True
    shed_lag: float = 0.05
    shed_receive_queue: int = 131072
    shed_after: float = 0.1
    sample_interval: float = 0.01
    calm_sample_interval: float = 0.05
    read_ahead: int = 256

    @classmethod
    def from_table(cls, table: Table) -> OverloadConfig:
        defaults = cls()
        config = cls(
            max_calls=table.int("max_calls", defaults.max_calls, min=1),
            emergency_reserve=table.int("emergency_reserve", defaults.emergency_reserve, min=0),
            retry_after=table.int("retry_after", defaults.retry_after, min=0, max=3600),
            load_shedding=table.bool("load_shedding", defaults.load_shedding),
            shed_lag=table.float("shed_lag", defaults.shed_lag, min=0.001, max=10.0),
            shed_receive_queue=table.int(
                "shed_receive_queue", defaults.shed_receive_queue, min=4096
            ),
            shed_after=table.float("shed_after", defaults.shed_after, min=0.0, max=10.0),
            sample_interval=table.float(
                "sample_interval", defaults.sample_interval, min=0.001, max=1.0
            ),
            calm_sample_interval=table.float(
                "calm_sample_interval", defaults.calm_sample_interval, min=0.001, max=1.0
            ),
            read_ahead=table.int("read_ahead", defaults.read_ahead, min=0, max=65536),
        )
        if config.calm_sample_interval < config.sample_interval:
            raise ConfigError(
                table.field("calm_sample_interval"),
                f"must be at least sample_interval ({config.sample_interval:g} s),"
                f" got {config.calm_sample_interval:g}",
            )
        if config.sample_interval >= config.shed_lag:
            # A heartbeat is late by up to one interval whenever the loop is busy
            # at all: a lag threshold below it would shed at moderate load.
            raise ConfigError(
                table.field("shed_lag"),
                f"must be above sample_interval ({config.sample_interval:g} s),"
                f" got {config.shed_lag:g}",
            )
        table.reject_unknown()
        return config


#: Most worker processes: more than one machine's cores; a typo like 80 fails loudly.
MAX_WORKERS = 64


@dataclass(frozen=True, slots=True, kw_only=True)
class ServerConfig:
    """``[server]``: how many processes serve the configured listeners
    (deploy/OPERATIONS.md "Worker processes", :mod:`gateway.workers`).

    Attributes:
        workers: worker processes; 1 runs the gateway in the ``voipgw run``
            process itself, as before workers existed.
        worker_sip_port: the first worker's own SIP port; worker N (from 1) listens
            on ``worker_sip_port + N - 1`` at each listener's host and transport and
            advertises it in Via, Contact and Record-Route, so responses and
            in-dialog requests come back to the process holding the transaction or
            dialog. Default: the first listener's port + 1.
        worker_metrics_port: the first worker's own status port (/metrics, /readyz);
            worker N uses ``worker_metrics_port + N - 1``. The supervisor serves
            ``[metrics] port`` with every worker's samples labelled ``worker``.
            Default: ``[metrics] port`` + 1.
        restart_delay: seconds before a worker that died is started again (doubled
            after each death within a minute, up to 30 s).
        worker_index: which worker this process is (1..workers); 0 in the supervisor
            or a single-process gateway. Set by the supervisor, not in the file.
    """

    workers: int = 1
    worker_sip_port: int = 0
    worker_metrics_port: int = 0
    restart_delay: float = 0.5
    worker_index: int = 0

    @classmethod
    def from_table(
        cls, table: Table, *, listen: tuple[ListenConfig, ...], metrics_port: int
    ) -> ServerConfig:
        """Reads ``[server]``.

        Raises:
            ConfigError: naming the bad field (a worker port range overlapping a
                listener, a shared port of 0).
        """
        workers = table.int("workers", 1, min=1, max=MAX_WORKERS)
        sip_port = table.int("worker_sip_port", min(listen[0].port + 1, 65535), min=1, max=65535)
        metrics_port_first = table.int(
            "worker_metrics_port", min(metrics_port + 1, 65535), min=1, max=65535
        )
        restart_delay = table.float("restart_delay", 0.5, min=0.0, max=60.0)
        table.reject_unknown()
        if workers > 1:
            own = range(sip_port, sip_port + workers)
            if own.stop - 1 > 65535:
                raise ConfigError(
                    table.field("worker_sip_port"),
                    f"{sip_port} + {workers} workers goes past port 65535",
                )
            for i, item in enumerate(listen):
                if item.port == 0:
                    # Each worker would bind a different free port: nothing shared.
                    raise ConfigError(
                        f"sip.listen[{i}].port", "workers share this port: 0 is not allowed"
                    )
                if item.port in own:
                    raise ConfigError(
                        table.field("worker_sip_port"),
                        f"workers' ports {own.start}-{own.stop - 1} include"
                        f" sip.listen[{i}].port {item.port}",
                    )
            if metrics_port and metrics_port in range(
                metrics_port_first, metrics_port_first + workers
            ):
                raise ConfigError(
                    table.field("worker_metrics_port"),
                    f"workers' status ports include metrics.port {metrics_port}",
                )
        return cls(
            workers=workers,
            worker_sip_port=sip_port,
            worker_metrics_port=metrics_port_first,
            restart_delay=restart_delay,
        )


def _sip_uri_of(listen: ListenConfig) -> str | None:
    """The SIP URI other instances reach a listener at, or None when it has none: an
    ephemeral port (0, chosen by the kernel at start) or a wildcard host (0.0.0.0,
    ::) is an address to bind, not one to send to."""
    if listen.port == 0 or ipaddress.ip_address(listen.host).is_unspecified:
        return None
    host = f"[{listen.host}]" if ":" in listen.host else listen.host
    scheme = "sips" if listen.transport == "TLS" else "sip"
    return f"{scheme}:{host}:{listen.port}"


@dataclass(frozen=True, slots=True, kw_only=True)
class ClusterConfig:
    """``[cluster]``: this instance among several sharing one PostgreSQL (issue 16).

    Attributes:
        instance: this instance's unique name (default: the host name, or ``[gateway]
            instance`` when that is set); its CDR rows carry it.
        sip_uri: how other instances reach this one over SIP (default: from the first
            listen address, ``sip:127.0.0.1:5060``; required when that address has
            port 0 or a wildcard host).
        heartbeat_interval: seconds between this instance's heartbeats in PostgreSQL.
        dead_after: seconds without a heartbeat after which the other instances count
            this one dead and close its calls' records; more than
            ``heartbeat_interval``.
    """

    instance: str
    sip_uri: str
    heartbeat_interval: float = 5.0
    dead_after: float = 30.0
    worker_uri: str | None = None
    """This worker process's own SIP URI (``[server] workers`` > 1), where the flows
    it holds are reached; set by :func:`gateway.workers.plan.worker_config`, not read
    from the file. None: one process, whose flows are reached at ``sip_uri``."""

    @property
    def flow_uri(self) -> str:
        """The URI this process records as the ``flow_owner`` of the bindings it
        takes, and recognises in a relayed request's Route."""
        return self.worker_uri or self.sip_uri

    @classmethod
    def from_table(cls, table: Table, *, sip: SipConfig, instance: str | None) -> ClusterConfig:
        """Reads ``[cluster]``.

        Args:
            table: the table.
            sip: the SIP settings (the default ``sip_uri`` is the first listener's).
            instance: ``[gateway] instance`` when the file sets it.

        Raises:
            ConfigError: naming the bad field.
        """
        from gateway.sip.errors import ParseError
        from gateway.sip.uri import SipUri, parse_uri

        name = table.str("instance", instance or socket.gethostname())
        if not name:
            raise ConfigError(table.field("instance"), "must not be empty")
        if instance is not None and name != instance:
            raise ConfigError(
                table.field("instance"),
                f"must equal gateway.instance ({instance!r}), the name its CDR rows carry;"
                f" got {name!r}",
            )
        sip_uri = table.opt_str("sip_uri")
        if sip_uri is None:
            sip_uri = _sip_uri_of(sip.listen[0])
            if sip_uri is None:
                first = sip.listen[0]
                host = f"[{first.host}]" if ":" in first.host else first.host
                raise ConfigError(
                    table.field("sip_uri"),
                    f"not set, and sip.listen[0] ({first.transport} {host}:{first.port})"
                    " names no address the other instances can reach (port 0 or a"
                    " wildcard host): set it to how they reach this instance,"
                    " e.g. sip:192.0.2.11:5060",
                )
        try:
            parsed = parse_uri(sip_uri)
        except ParseError as exc:
            raise ConfigError(table.field("sip_uri"), str(exc)) from None
        if not isinstance(parsed, SipUri):
            raise ConfigError(
                table.field("sip_uri"), f"expected a sip: or sips: URI, got {sip_uri!r}"
            )
        if parsed.port == 0:
            # Port 0 means "any" to bind(); nobody can send to it.
            raise ConfigError(table.field("sip_uri"), f"port 0 cannot be reached: {sip_uri!r}")
        interval = table.float("heartbeat_interval", 5.0, min=0.05, max=3600.0)
        dead_after = table.float("dead_after", 30.0, min=0.05, max=86_400.0)
        if dead_after <= interval:
            raise ConfigError(
                table.field("dead_after"),
                f"must be more than heartbeat_interval ({interval:g} s), got {dead_after:g}",
            )
        table.reject_unknown()
        return cls(
            instance=name, sip_uri=sip_uri, heartbeat_interval=interval, dead_after=dead_after
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class GatewayConfig:
    """The whole configuration.

    Attributes:
        instance: name of this gateway instance (CDRs, metrics).
        state_dir: directory for the CDR spool and the embedded database.
        sip: SIP stack settings.
        upstream: default next hop.
        overload: capacity bounds.
        server: worker processes (one by default).
        metrics, logging, database, cdr, guard: the other packages' sections,
            parsed by their own ``from_table`` (defaults when absent from the file).
        routing, registrar, media, notify, cluster: optional features, None when their
            section is absent (``[notify]`` exists whenever ``[routing]`` does).
        source: path of the file it was read from.
        seed_sites: a sites file imported at start when the database has no sites
            (demo and first installs).
    """

    instance: str
    state_dir: Path
    sip: SipConfig
    upstream: UpstreamConfig
    overload: OverloadConfig
    server: ServerConfig = field(default_factory=ServerConfig)
    metrics: MetricsConfig = field(default_factory=MetricsConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)
    database: DatabaseConfig = field(default_factory=DatabaseConfig)
    cdr: CdrConfig = field(default_factory=CdrConfig)
    guard: GuardConfig = field(default_factory=GuardConfig)
    routing: RoutingConfig | None = None
    registrar: RegistrarConfig | None = None
    media: MediaConfig | None = None
    notify: NotifyConfig | None = None
    cluster: ClusterConfig | None = None
    source: Path | None = None
    seed_sites: Path | None = None

    @property
    def sections(self) -> Mapping[str, object]:
        """The sections present, by name (the status view and tests list them)."""
        named = {
            "metrics": self.metrics,
            "logging": self.logging,
            "database": self.database,
            "cdr": self.cdr,
            "guard": self.guard,
            "routing": self.routing,
            "registrar": self.registrar,
            "media": self.media,
            "notify": self.notify,
            "cluster": self.cluster,
        }
        return {name: value for name, value in named.items() if value is not None}


def parse_config(data: dict[str, Any]) -> GatewayConfig:
    """Validates a parsed TOML document (relative paths are from the working directory).

    Raises:
        ConfigError: naming the first bad field.
    """
    top = Table(data)
    gateway = top.table("gateway")
    named = gateway.opt_str("instance")
    state_dir = Path(gateway.str("state_dir", "state"))
    seed = gateway.opt_str("seed_sites")
    gateway.reject_unknown()

    sip = SipConfig.from_table(top.table("sip"))
    cluster_table = top.table("cluster")
    cluster = (
        ClusterConfig.from_table(cluster_table, sip=sip, instance=named)
        if "cluster" in data
        else None
    )
    # One name per instance: with [cluster], its name (the host name by default).
    instance = cluster.instance if cluster is not None else named or "voipgw-1"
    upstream = UpstreamConfig.from_table(top.table("upstream"))
    for i, proxy in enumerate(sip.edge_proxies):
        # A PBX's or trunk's Via below its own names its own phones or carriers:
        # believing it would turn its inbound calls into device calls from there.
        peer = next(
            (p for p in upstream.trusted_peers if p.version == proxy.version and p.overlaps(proxy)),
            None,
        )
        if peer is not None:
            raise ConfigError(
                f"sip.edge_proxies[{i}]",
                f"{proxy} overlaps upstream.trusted_peers {peer}: an edge proxy carries"
                " devices' requests, a trusted peer its own calls",
            )
    overload = OverloadConfig.from_table(top.table("overload"))
    metrics = MetricsConfig.from_table(top.table("metrics"))
    server = ServerConfig.from_table(
        top.table("server"), listen=sip.listen, metrics_port=metrics.port
    )
    logging = LoggingConfig.from_table(top.table("logging"))
    # The database's and the spool's directories follow [gateway] state_dir unless set:
    # one setting moves all the gateway's state (a service's StateDirectory), and two
    # gateways given their own state_dir do not share a spool (it is locked) or pgdata.
    database = DatabaseConfig.from_table(top.table("database"), state_dir=str(state_dir))
    cdr = CdrConfig.from_table(top.table("cdr"), state_dir=str(state_dir))
    # Optional features: their key is marked known, their table read when present.
    routing_table, registrar_table, media_table = (
        top.table(name) for name in ("routing", "registrar", "media")
    )
    routing = RoutingConfig.from_table(routing_table) if "routing" in data else None
    registrar = RegistrarConfig.from_table(registrar_table) if "registrar" in data else None
    media = MediaConfig.from_table(media_table) if "media" in data else None
    guard = GuardConfig.from_table(top.table("guard"))
    notify_table = top.table("notify")
    # The emergency notification webhooks; the routing section's
    # notification_webhook is their default, so they are read after it.
    notify = NotifyConfig.from_table(notify_table, routing=routing) if routing else None
    config = GatewayConfig(
        instance=instance,
        state_dir=state_dir,
        seed_sites=Path(seed) if seed else None,
        sip=sip,
        upstream=upstream,
        overload=overload,
        server=server,
        metrics=metrics,
        logging=logging,
        database=database,
        cdr=cdr,
        guard=guard,
        routing=routing,
        registrar=registrar,
        media=media,
        notify=notify,
        cluster=cluster,
    )
    top.reject_unknown()
    return config


def load_config(path: str | Path, *, server: Mapping[str, Any] | None = None) -> GatewayConfig:
    """Reads and validates a config file.

    Args:
        path: the TOML file.
        server: ``[server]`` keys that replace the file's (``voipgw run --workers``),
            validated as if the file had them.

    Raises:
        ConfigError: the file is missing, not TOML, or a field is bad.
    """
    path = Path(path)
    try:
        with path.open("rb") as file:
            data = tomllib.load(file)
    except FileNotFoundError:
        raise ConfigError(str(path), "file not found") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(str(path), f"not valid TOML: {exc}") from None
    if server:
        data["server"] = {**data.get("server", {}), **server}
    return replace(parse_config(data), source=path)
