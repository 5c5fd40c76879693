"""Settings of the ingress guard: the ``[guard]`` table.

Example::

    [guard]
    requests_per_second = 50      # every request from one source (0: no limit)
    requests_burst = 100
    invites_per_second = 10       # new INVITEs from one source
    invites_burst = 20
    registers_per_second = 5
    registers_burst = 10
    max_auth_failures = 5         # fail2ban "maxretry"
    auth_failure_window = 60.0    # fail2ban "findtime", seconds
    ban_time = 600.0              # fail2ban "bantime", seconds
    ban_scanners = true           # a scanner User-Agent also bans its source
    scanner_user_agents = ["friendly-scanner", "sipvicious"]
    trusted_peers = ["10.20.0.0/16", "198.51.100.7"]   # PBXs and trunks
    max_sources = 100000
    ipv6_prefix = 64
    oc_capacity = 200.0           # RFC 7339: new INVITEs/s this instance sustains (0: off)
    oc_target = 0.9               # utilisation the loss feedback aims at
    oc_interval = 1.0             # seconds per measurement window
    oc_validity = 2.0             # seconds a client may apply one feedback (oc-validity)

Defaults follow fail2ban's asterisk jail (5 failures, 10 minutes ban) with a shorter
find time; the rate limits are far above what one phone sends (a phone registers
every few minutes and places a call every few seconds at most), so only floods and
scans hit them.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field

from routing.configfields import ConfigError, Table

#: User-Agent patterns of well-known SIP scanners and toll-fraud tools, matched
#: case-insensitively anywhere in the value. SIPVicious announces itself as
#: "friendly-scanner" (its default) or "sipvicious"; sipcli, VaxSIPUserAgent, iWar,
#: SIVuS, sundayddr and smap are the other names seen in honeypot logs and in
#: fail2ban/APIBAN filters.
DEFAULT_SCANNER_USER_AGENTS: tuple[str, ...] = (
    r"friendly-scanner",
    r"sipvicious",
    r"sipcli",
    r"vaxsipuseragent",
    r"sip-?scan",
    r"\biwar\b",
    r"\bsivus\b",
    r"sundayddr",
    r"\bsmap\b",
)

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True, slots=True, kw_only=True)
class RateLimit:
    """A token bucket's parameters.

    Attributes:
        rate: tokens added per second (0 disables the limit).
        burst: bucket size: how many requests may arrive back to back.
    """

    rate: float
    burst: float

    @property
    def enabled(self) -> bool:
        return self.rate > 0


@dataclass(frozen=True, slots=True, kw_only=True)
class GuardConfig:
    """Admission control in front of the parser (see :mod:`gateway.edge.guard`).

    Attributes:
        enabled: False admits everything (the guard then only counts).
        requests: limit on every request of one source.
        invites: limit on new (out-of-dialog) INVITEs of one source.
        registers: limit on REGISTERs of one source.
        max_auth_failures: failed authentications within ``auth_failure_window``
            that ban a source.
        auth_failure_window: seconds over which failures are counted.
        ban_time: seconds a banned source stays banned.
        ban_scanners: a request with a scanner User-Agent bans its source too, so
            that the scanner cannot continue under another User-Agent.
        scanner_user_agents: regular expressions (case-insensitive, searched) of
            scanner User-Agents, dropped silently.
        trusted_peers: networks (PBXs, trunks) exempt from rate limits and the
            scanner filter: many users sit behind one such address. Not from bans:
            ``max_auth_failures`` failed authentications from a trusted peer ban it
            too (password guessing, and UDP sources can be spoofed); its emergency
            and in-dialog requests still pass.
        max_sources: most sources tracked at once (least recently seen forgotten
            first); also the most bans kept.
        ipv6_prefix: IPv6 sources are tracked per prefix of this length, because
            one host holds a whole /64 and could otherwise change address per
            request.
        oc_capacity: new INVITEs per second this instance sustains, the RFC 7339
            loss-based feedback's reference (0 turns the feedback off).
        oc_target: utilisation (offered / capacity) the feedback aims at, below 1 so
            that emergency calls, which clients never throttle, still fit.
        oc_interval: seconds per measurement window of the offered rate.
        oc_validity: seconds a client may apply one feedback (sent as
            ``oc-validity`` in milliseconds).
    """

    enabled: bool = True
    requests: RateLimit = field(default_factory=lambda: RateLimit(rate=50.0, burst=100.0))
    invites: RateLimit = field(default_factory=lambda: RateLimit(rate=10.0, burst=20.0))
    registers: RateLimit = field(default_factory=lambda: RateLimit(rate=5.0, burst=10.0))
    max_auth_failures: int = 5
    auth_failure_window: float = 60.0
    ban_time: float = 600.0
    ban_scanners: bool = True
    scanner_user_agents: tuple[str, ...] = DEFAULT_SCANNER_USER_AGENTS
    trusted_peers: tuple[Network, ...] = ()
    max_sources: int = 100_000
    ipv6_prefix: int = 64
    oc_capacity: float = 0.0
    oc_target: float = 0.9
    oc_interval: float = 1.0
    oc_validity: float = 2.0

    def __post_init__(self) -> None:
        for name in ("requests", "invites", "registers"):
            limit: RateLimit = getattr(self, name)
            if limit.rate < 0 or (limit.enabled and limit.burst < 1):
                raise ValueError(f"{name}: rate must be >= 0 and burst >= 1")
        if self.max_auth_failures < 1:
            raise ValueError("max_auth_failures: must be >= 1")
        if self.max_sources < 1:
            raise ValueError("max_sources: must be >= 1")
        if not 1 <= self.ipv6_prefix <= 128:
            raise ValueError("ipv6_prefix: must be 1-128")
        for pattern in self.scanner_user_agents:
            re.compile(pattern)
        if self.oc_capacity < 0 or not 0 < self.oc_target <= 1:
            raise ValueError("oc_capacity must be >= 0 and oc_target in (0, 1]")
        if self.oc_interval <= 0 or self.oc_validity < 0:
            raise ValueError("oc_interval must be > 0 and oc_validity >= 0")

    @classmethod
    def from_table(cls, table: Table) -> GuardConfig:
        """Reads the ``[guard]`` table.

        Args:
            table: the table view.

        Returns:
            The settings.

        Raises:
            ConfigError: naming the bad field.
        """
        default = cls()

        def limit(name: str, fallback: RateLimit) -> RateLimit:
            return RateLimit(
                rate=table.float(f"{name}_per_second", fallback.rate, min=0, max=1e6),
                burst=table.float(f"{name}_burst", fallback.burst, min=1, max=1e6),
            )

        patterns = table.str_list("scanner_user_agents", default.scanner_user_agents)
        for i, pattern in enumerate(patterns):
            try:
                re.compile(pattern)
            except re.error as exc:
                raise ConfigError(
                    f"{table.field('scanner_user_agents')}[{i}]", f"not a regex: {exc}"
                ) from None
        config = cls(
            enabled=table.bool("enabled", default.enabled),
            requests=limit("requests", default.requests),
            invites=limit("invites", default.invites),
            registers=limit("registers", default.registers),
            max_auth_failures=table.int("max_auth_failures", default.max_auth_failures, min=1),
            auth_failure_window=table.float(
                "auth_failure_window", default.auth_failure_window, min=0.1, max=86400
            ),
            ban_time=table.float("ban_time", default.ban_time, min=0, max=30 * 86400),
            ban_scanners=table.bool("ban_scanners", default.ban_scanners),
            scanner_user_agents=patterns,
            trusted_peers=table.network_list("trusted_peers"),
            max_sources=table.int("max_sources", default.max_sources, min=1, max=10_000_000),
            ipv6_prefix=table.int("ipv6_prefix", default.ipv6_prefix, min=1, max=128),
            oc_capacity=table.float("oc_capacity", default.oc_capacity, min=0, max=1e6),
            oc_target=table.float("oc_target", default.oc_target, min=0.05, max=1),
            oc_interval=table.float("oc_interval", default.oc_interval, min=0.05, max=60),
            oc_validity=table.float("oc_validity", default.oc_validity, min=0, max=3600),
        )
        table.reject_unknown()
        return config
