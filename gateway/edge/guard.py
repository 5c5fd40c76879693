"""The ingress guard: admission control before the parser, and RFC 7339 feedback.

Theory of operation
-------------------

Every received message reaches :meth:`Guard.admit` before it is parsed
(``gateway.service.server.Gateway``). The guard looks at a few bytes only (the start line and,
when it needs them, the To and User-Agent header fields) and answers admit or drop.
A dropped message is never answered: a scanner learns nothing, and a flood costs the
gateway one regex per message.

Rule 1 (always admitted). These pass whatever the source did before, even banned or
rate limited, and consume no tokens:

* responses: they only match transactions the gateway itself started (RFC 3261
  17.1.3); anything else is discarded by the transaction layer;
* requests whose Request-URI is an emergency or test-emergency number or service URN
  (:meth:`routing.emergency.DialPlan.match`): nothing may stand between a caller
  and help, so a phone behind a banned NAT address, a source that announces a
  scanner's User-Agent or one that exceeds its rate can still call 112;
* in-dialog requests (To carries a tag, RFC 3261 12.2), ACK and CANCEL: they belong
  to calls in progress, which must be able to end. A forged one costs the core one
  dialog lookup and a 481 (RFC 3261 12.2.2), never routing, registrar or database
  work.

Rule 2 (bans). A banned source is dropped, trusted or not.

Rule 3 (trusted peers). Sources in ``trusted_peers`` (PBXs, trunks) are otherwise
admitted without limits: one address carries many users.

Rule 4 (everything else, in order). Dropped (and banned when ``ban_scanners``) if
User-Agent matches a scanner pattern; dropped when the source's bucket for all
requests, or for the method (INVITE, REGISTER), is empty.

Bans come from the registrar: ``Registrar(on_auth_failure=guard.auth_failed)``
reports each failed digest authentication; ``max_auth_failures`` of them within
``auth_failure_window`` seconds ban the source for ``ban_time`` seconds (fail2ban).
Failures count for every source, trusted peers included: a trusted peer is exempt
from rate limits, not from password guessing, and a UDP source address can be
spoofed, so an exemption would hand an attacker who knows the PBX's address
unlimited guesses. Rule 1 keeps a banned PBX's emergency and in-dialog requests
flowing; its new ordinary calls wait out the ban.

Every ban and unban is logged (one line: source, reason, duration or how long it
lasted) and counted (``voipgw_guard_bans_total{reason}``,
``voipgw_guard_unbans_total{reason}``, ``voipgw_guard_banned_sources``). A ban ends
when it expires (noticed on the next message from anywhere: the bans table is in
expiry order, so checking its head costs O(1)), when the operator lifts it, or when
the table is full and it is the oldest.

Memory is bounded: per-source state lives in an LRU of ``max_sources`` entries, and
bans in a separate table of the same bound (so that an attacker rotating through
many addresses evicts idle sources, never a ban before older bans). IPv6 sources are
aggregated per ``ipv6_prefix``.

The second half of the module is the pure part of RFC 7339 (loss-based overload
control): :func:`next_loss` computes the loss percentage from the measured load,
:class:`LossController` measures the offered rate of new INVITEs, and
:func:`stamp_overload_feedback` adds ``oc``, ``oc-algo``, ``oc-validity`` and
``oc-seq`` to the top Via of a response whose request advertised ``oc``.
"""

from __future__ import annotations

import collections
import ipaddress
import logging
import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol

from gateway.edge.guard_config import GuardConfig, RateLimit
from gateway.edge.peers import in_networks
from gateway.sip.errors import ParseError
from gateway.sip.events import Endpoint
from gateway.sip.headers import parse_via
from gateway.sip.message import Headers, Response, split_list_value
from routing.config import EmergencyConfig
from routing.emergency import DialPlan

log = logging.getLogger("voipgw.guard")

__all__ = [
    "BanReason",
    "Guard",
    "GuardConfig",
    "GuardStats",
    "LossController",
    "OverloadFeedback",
    "Peek",
    "TokenBucket",
    "UnbanReason",
    "next_loss",
    "peek",
    "stamp_overload_feedback",
]

#: Only this many leading bytes are searched for the start line and header fields;
#: the fields the guard needs come first in every real message, and it bounds the
#: work per message whatever its size.
PEEK_LIMIT = 8192

# RFC 3261 25.1:
#   Request-Line = Method SP Request-URI SP SIP-Version CRLF
#   token        = 1*(alphanum / "-" / "." / "!" / "%" / "*" / "_" / "+" / "`" / "'" / "~")
# RFC 3261 7.5: "implementations processing SIP messages over stream-oriented
# transports MUST ignore any CRLF appearing before the start-line".
_REQUEST_LINE_RE = re.compile(rb"(?:\r\n)*([-.!%*_+`'~0-9A-Za-z]+) ([^ \r\n]+) SIP/2\.0\r?\n")
# RFC 3261 7.3.3: "t" is the compact form of To. Header names are case-insensitive.
_TO_RE = re.compile(rb"\n(?:to|t)[ \t]*:[ \t]*([^\r\n]*)", re.IGNORECASE)
_USER_AGENT_RE = re.compile(rb"\nuser-agent[ \t]*:[ \t]*([^\r\n]*)", re.IGNORECASE)
# RFC 3261 25.1: to-param = tag-param / generic-param; tag-param = "tag" EQUAL token
_TAG_PARAM_RE = re.compile(rb";[ \t]*tag[ \t]*=[ \t]*[^; \t,]", re.IGNORECASE)

_ALWAYS_ADMITTED_METHODS = frozenset({b"ACK", b"CANCEL"})


class GuardMetrics(Protocol):
    """The part of :class:`gateway.ops.metrics.Metrics` the guard feeds."""

    def message_dropped(self, reason: str) -> None: ...

    def guard_ban(self, reason: BanReason) -> None: ...

    def guard_unban(self, reason: UnbanReason) -> None: ...

    def track_guard_bans(self, count: Callable[[], int]) -> None: ...


class BanReason(StrEnum):
    """Why a source was banned (the ``reason`` label of ``voipgw_guard_bans_total``)."""

    AUTH_FAILURES = "auth_failures"
    SCANNER = "scanner"


class UnbanReason(StrEnum):
    """Why a ban ended (the ``reason`` label of ``voipgw_guard_unbans_total``)."""

    EXPIRED = "expired"
    OPERATOR = "operator"
    EVICTED = "evicted"
    """The bans table was full (``max_sources``) and this was its oldest ban."""


# ---------------------------------------------------------------------- peeking


@dataclass(frozen=True, slots=True)
class Peek:
    """What the guard reads of a request without parsing it.

    Attributes:
        method: the method token as on the wire.
        uri: the Request-URI as on the wire.
        head: the start line and header section (at most PEEK_LIMIT bytes), with a
            leading newline so that every header line starts with one.
    """

    method: bytes
    uri: bytes
    head: bytes

    def header(self, pattern: re.Pattern[bytes]) -> bytes | None:
        found = pattern.search(self.head)
        return found[1] if found else None

    @property
    def to_tagged(self) -> bool:
        """True if To carries a tag (RFC 3261 12.2: the request is in a dialog)."""
        value = self.header(_TO_RE)
        if value is None:
            return False
        # A ";tag=" inside <...> is a URI parameter, not the To tag (RFC 3261 20:
        # with angle brackets, parameters after ">" are header parameters).
        close = value.rfind(b">")
        if close >= 0:
            value = value[close + 1 :]
        return _TAG_PARAM_RE.search(value) is not None

    @property
    def user_agent(self) -> bytes | None:
        return self.header(_USER_AGENT_RE)


def peek(data: bytes) -> Peek | None:
    """Reads the request line of a message.

    Args:
        data: one received message (datagram or framed stream message).

    Returns:
        The request's :class:`Peek`, or None when ``data`` does not start with a
        request line (a response, or bytes the parser will reject).
    """
    head = data[:PEEK_LIMIT]
    found = _REQUEST_LINE_RE.match(head)
    if found is None:
        return None
    end = head.find(b"\r\n\r\n")
    return Peek(found[1], found[2], b"\n" + (head if end < 0 else head[:end]))


def is_response(data: bytes) -> bool:
    """True if the bytes start like a response (RFC 3261 7.2 Status-Line)."""
    return data.lstrip(b"\r\n")[:8] == b"SIP/2.0 "


# ---------------------------------------------------------------------- state


class TokenBucket:
    """A token bucket: ``rate`` tokens per second up to ``burst``; starts full."""

    __slots__ = ("burst", "rate", "stamp", "tokens")

    def __init__(self, limit: RateLimit, now: float) -> None:
        self.rate = limit.rate
        self.burst = limit.burst
        self.tokens = limit.burst
        self.stamp = now

    def take(self, now: float) -> bool:
        """Takes one token if there is one.

        Args:
            now: current time in seconds (a clock going backwards adds nothing).

        Returns:
            True if a token was taken (admit), False if the bucket is empty.
        """
        elapsed = now - self.stamp
        if elapsed > 0:
            self.tokens = min(self.burst, self.tokens + elapsed * self.rate)
            self.stamp = now
        if self.tokens >= 1:
            self.tokens -= 1
            return True
        return False


class _Source:
    """What the guard remembers of one source address (or IPv6 prefix)."""

    __slots__ = ("failures", "invites", "registers", "requests", "trusted")

    def __init__(self, config: GuardConfig, trusted: bool, now: float) -> None:
        self.trusted = trusted
        self.requests = TokenBucket(config.requests, now)
        self.invites = TokenBucket(config.invites, now)
        self.registers = TokenBucket(config.registers, now)
        #: times of recent authentication failures, oldest first
        self.failures: collections.deque[float] = collections.deque(maxlen=config.max_auth_failures)


@dataclass(slots=True)
class GuardStats:
    """Counters of the guard's decisions (the metrics carry the drop reasons too)."""

    admitted: int = 0
    #: admitted by rule 1 although rule 3 would have dropped them
    privileged: int = 0
    dropped_banned: int = 0
    dropped_scanner: int = 0
    dropped_rate: int = 0
    bans: int = 0
    auth_failures: int = 0


# ---------------------------------------------------------------------- the guard


@dataclass(slots=True)
class _Ban:
    """One ban: when it started and ends (seconds, the guard's clock), and why."""

    since: float
    until: float
    reason: BanReason


class Guard:
    """Admission control in front of the parser (``gateway.service.pump.IngressGuard``).

    Args:
        config: the ``[guard]`` settings.
        dial_plan: what counts as an emergency Request-URI: the routing adapter's
            own (:class:`routing.emergency.DialPlan`), so that the guard and routing
            agree; the default emergency settings when None.
        metrics: drop, ban and unban counters and the banned-sources gauge, if any.
        overload: RFC 7339 feedback to feed with new INVITEs, if any.
    """

    def __init__(
        self,
        config: GuardConfig,
        *,
        dial_plan: DialPlan | None = None,
        metrics: GuardMetrics | None = None,
        overload: LossController | None = None,
    ) -> None:
        self.config = config
        self.dial_plan = dial_plan if dial_plan is not None else DialPlan(EmergencyConfig())
        self.metrics = metrics
        self.overload = overload
        self.stats = GuardStats()
        self._sources: collections.OrderedDict[str, _Source] = collections.OrderedDict()
        #: source key -> its ban; insertion order is ban order, and with one ban_time
        #: for all also expiry order (a renewed ban is moved to the end)
        self._bans: dict[str, _Ban] = {}
        self._scanner = (
            re.compile("|".join(f"(?:{p})" for p in config.scanner_user_agents).encode(), re.I)
            if config.scanner_user_agents
            else None
        )
        self._trusted = config.trusted_peers
        self._last_now = 0.0
        if metrics is not None:
            metrics.track_guard_bans(lambda: len(self._bans))

    # ------------------------------------------------------------------ admit

    def admit(self, data: bytes, source: Endpoint, now: float) -> bool:
        """Decides whether a received message may enter the core.

        Args:
            data: the message as received, unparsed.
            source: where it came from.
            now: current time in seconds.

        Returns:
            True to hand it to the parser, False to drop it silently.
        """
        self._last_now = now
        if not self.config.enabled and self.overload is None:
            return True  # nothing to decide nor count: no peek (a regex per message)
        if is_response(data):
            return True
        request = peek(data)
        if not self.config.enabled:
            self._count_arrival(request, now)
            return True
        key = self._key(source.host)
        state = self._state(key, source.host, now)
        reason = self._refusal(key, state, request, now)
        if reason is None:
            self._count_arrival(request, now)
            return self._admitted()
        if request is not None and self._privileged(request):
            self.stats.privileged += 1
            self._count_arrival(request, now)
            return self._admitted()
        if reason == "banned":
            self.stats.dropped_banned += 1
        elif reason == "scanner":
            self.stats.dropped_scanner += 1
        else:
            self.stats.dropped_rate += 1
        if self.metrics is not None:
            self.metrics.message_dropped(reason)
        return False

    def _admitted(self) -> bool:
        self.stats.admitted += 1
        return True

    def _refusal(self, key: str, state: _Source, request: Peek | None, now: float) -> str | None:
        """Rules 2 to 4: the reason to drop a request, or None."""
        if self.banned(key, now):
            return "banned"
        if state.trusted:
            return None
        if request is not None and self._scanner is not None:
            agent = request.user_agent
            if agent is not None and self._scanner.search(agent):
                if self.config.ban_scanners:
                    self._ban(key, BanReason.SCANNER, now)
                return "scanner"
        # Every request costs a token of the general bucket, dropped ones included,
        # so a flood keeps its own bucket empty.
        config = self.config
        if config.requests.enabled and not state.requests.take(now):
            return "rate_limited"
        method = request.method if request is not None else b""
        if method == b"INVITE" and config.invites.enabled and not state.invites.take(now):
            return "rate_limited"
        if method == b"REGISTER" and config.registers.enabled and not state.registers.take(now):
            return "rate_limited"
        return None

    def _privileged(self, request: Peek) -> bool:
        """Rule 1 for requests: emergency, in-dialog, ACK or CANCEL."""
        if request.method in _ALWAYS_ADMITTED_METHODS or request.to_tagged:
            return True
        uri = request.uri.decode("latin-1")
        return self.dial_plan.match(uri) is not None

    def _count_arrival(self, request: Peek | None, now: float) -> None:
        # RFC 7339 measures the load the clients offer: new INVITEs, admitted ones.
        if (
            self.overload is not None
            and request is not None
            and request.method == b"INVITE"
            and not request.to_tagged
        ):
            self.overload.arrival(now)

    # ------------------------------------------------------------------ bans

    def auth_failed(
        self, source: Endpoint, username: str = "", *, now: float | None = None
    ) -> bool:
        """Records a failed authentication (the registrar's ``on_auth_failure``).

        Trusted peers count too (module docstring, "Failures count for every source").

        Args:
            source: where the failing request came from.
            username: the user name tried (unused for the decision: a scanner
                rotating names is still one source).
            now: current time in seconds; by default the time of the latest
                :meth:`admit`, which let that request in a moment ago.

        Returns:
            True if this failure banned the source.
        """
        when = self._last_now if now is None else now
        self.stats.auth_failures += 1
        key = self._key(source.host)
        failures = self._state(key, source.host, when).failures
        failures.append(when)
        window = self.config.auth_failure_window
        if len(failures) == failures.maxlen and when - failures[0] <= window:
            failures.clear()
            self._ban(key, BanReason.AUTH_FAILURES, when)
            return True
        return False

    def banned(self, key: str, now: float) -> bool:
        """True if a source key (see :meth:`key_of`) is banned at ``now``."""
        self._expire_bans(now)
        ban = self._bans.get(key)
        if ban is None:
            return False
        if now < ban.until:
            return True
        # Behind the head of the table: bans given with an explicit ``now`` (tests,
        # the registrar's clock) may be out of order by a little.
        self._unban(key, UnbanReason.EXPIRED, now)
        return False

    def _ban(self, key: str, reason: BanReason, now: float) -> None:
        config = self.config
        if config.ban_time <= 0:
            return
        renewed = self._bans.pop(key, None)
        self._bans[key] = _Ban(
            since=renewed.since if renewed is not None else now,
            until=now + config.ban_time,
            reason=reason,
        )
        if renewed is None:
            self.stats.bans += 1
            why = (
                f"{config.max_auth_failures} authentication failures within"
                f" {config.auth_failure_window:g} s"
                if reason is BanReason.AUTH_FAILURES
                else "scanner User-Agent"
            )
            # Not every ban: a renewal (a scanner still sending) would flood the log.
            log.warning("guard: banned %s for %g s: %s", key, config.ban_time, why)
            if self.metrics is not None:
                self.metrics.guard_ban(reason)
        while len(self._bans) > config.max_sources:
            oldest = next(iter(self._bans))
            self._unban(oldest, UnbanReason.EVICTED, now)

    def _expire_bans(self, now: float) -> None:
        # The table is in expiry order (see __init__): only its head can be due.
        bans = self._bans
        while bans:
            key = next(iter(bans))
            if now < bans[key].until:
                return
            self._unban(key, UnbanReason.EXPIRED, now)

    def _unban(self, key: str, reason: UnbanReason, now: float) -> None:
        ban = self._bans.pop(key)
        log.warning(
            "guard: unbanned %s (%s) after %.0f s (banned for %s)",
            key,
            reason.value,
            max(0.0, now - ban.since),
            "authentication failures" if ban.reason is BanReason.AUTH_FAILURES else "a scanner",
        )
        if self.metrics is not None:
            self.metrics.guard_unban(reason)

    def unban(self, host: str) -> bool:
        """Lifts the ban of a source address (operator action); True if it was banned."""
        key = self.key_of(host)
        if key not in self._bans:
            return False
        self._unban(key, UnbanReason.OPERATOR, self._last_now)
        return True

    @property
    def tracked_sources(self) -> int:
        return len(self._sources)

    @property
    def active_bans(self) -> int:
        return len(self._bans)

    # ------------------------------------------------------------------ sources

    def key_of(self, host: str) -> str:
        """The key a source address is tracked under (its IPv6 prefix for IPv6)."""
        return self._key(host)

    def _key(self, host: str) -> str:
        if ":" not in host:
            return host
        try:
            network = ipaddress.IPv6Network(f"{host}/{self.config.ipv6_prefix}", strict=False)
        except ValueError:
            return host
        return str(network)

    def _state(self, key: str, host: str, now: float) -> _Source:
        sources = self._sources
        state = sources.get(key)
        if state is not None:
            sources.move_to_end(key)
            return state
        state = _Source(self.config, in_networks(host, self._trusted), now)
        sources[key] = state
        if len(sources) > self.config.max_sources:
            sources.popitem(last=False)
        return state


# ---------------------------------------------------------------------- RFC 7339

# RFC 7339 section 9:
#   oc          = "oc" [EQUAL oc-num]
#   oc-num      = 1*DIGIT
#   oc-validity = "oc-validity" [EQUAL delta-ms]
#   oc-seq      = "oc-seq" EQUAL 1*12DIGIT "." 1*5DIGIT
#   oc-algo     = "oc-algo" EQUAL DQUOTE algo-list *(COMMA algo-list) DQUOTE
#   algo-list   = "loss" / *(other-algo)


#: A necessary condition for ``oc`` in a Via line: the parameter name after a ";"
#: (RFC 3261 25.1 allows SWS around it; header parameter names are case-insensitive).
_OC_PARAM_RE = re.compile(r";[ \t]*oc[ \t]*(?:[=;,]|$)", re.IGNORECASE)


@dataclass(frozen=True, slots=True, kw_only=True)
class OverloadFeedback:
    """One RFC 7339 loss-based feedback.

    Attributes:
        loss: percentage (0-100) of new requests the client should not send.
        validity: seconds the client may apply it (sent in milliseconds).
        seq: sequence number, increasing whenever ``loss`` changes (RFC 7339 4:
            a client ignores feedback with a lower oc-seq than the last it used).
    """

    loss: int
    validity: float
    seq: float


def next_loss(previous: float, utilisation: float, *, target: float) -> float:
    """The loss fraction for the next window of the loss-based algorithm.

    RFC 7339 section 6 leaves the computation to the server. With a capacity C, a
    client offer L and the loss p in force, the server measures the rate that got
    through, ``utilisation = L * (1 - p) / C``. Wanting ``L * (1 - p') = target * C``
    gives ``p' = 1 - target * (1 - p) / utilisation``.

    Args:
        previous: loss fraction in force during the measured window (0-1).
        utilisation: measured arrival rate over capacity in that window (>= 0).
        target: utilisation to aim at (0-1].

    Returns:
        The new loss fraction, in [0, 1].
    """
    if utilisation <= 0:
        return 0.0
    loss = 1.0 - target * (1.0 - previous) / utilisation
    return min(1.0, max(0.0, loss))


class LossController:
    """Measures the offered rate of new INVITEs and computes RFC 7339 feedback.

    Args:
        capacity: new INVITEs per second this instance sustains.
        target: utilisation to aim at.
        interval: seconds per measurement window.
        validity: seconds a feedback stays valid at the client.
        seq_offset: added to ``now`` to form ``oc-seq``: pass ``time.time() -
            loop.time()`` so that oc-seq keeps increasing across restarts.
    """

    def __init__(
        self,
        *,
        capacity: float,
        target: float = 0.9,
        interval: float = 1.0,
        validity: float = 2.0,
        seq_offset: float = 0.0,
    ) -> None:
        if capacity <= 0 or not 0 < target <= 1 or interval <= 0:
            raise ValueError("capacity and interval must be > 0, target in (0, 1]")
        self.capacity = capacity
        self.target = target
        self.interval = interval
        self.validity = validity
        self.seq_offset = seq_offset
        self.loss = 0.0
        self._window_start: float | None = None
        self._arrivals = 0
        self._feedback = OverloadFeedback(loss=0, validity=validity, seq=seq_offset)

    @classmethod
    def from_config(cls, config: GuardConfig, *, seq_offset: float = 0.0) -> LossController | None:
        """The controller the ``[guard]`` settings ask for (None when oc_capacity is 0)."""
        if config.oc_capacity <= 0:
            return None
        return cls(
            capacity=config.oc_capacity,
            target=config.oc_target,
            interval=config.oc_interval,
            validity=config.oc_validity,
            seq_offset=seq_offset,
        )

    def arrival(self, now: float) -> None:
        """Counts one new request (an out-of-dialog INVITE) arriving at ``now``."""
        self._roll(now)
        self._arrivals += 1

    def feedback(self, now: float) -> OverloadFeedback:
        """The feedback to send at ``now`` (closing finished windows first)."""
        self._roll(now)
        return self._feedback

    def _roll(self, now: float) -> None:
        start = self._window_start
        if start is None:
            self._window_start = now
            return
        elapsed = now - start
        if elapsed < self.interval:
            return
        utilisation = self._arrivals / elapsed / self.capacity
        self.loss = next_loss(self.loss, utilisation, target=self.target)
        self._arrivals = 0
        self._window_start = now
        self._feedback = published_feedback(
            self._feedback, self.loss, validity=self.validity, seq=now + self.seq_offset
        )


def published_feedback(
    current: OverloadFeedback, loss: float, *, validity: float, seq: float
) -> OverloadFeedback:
    """The feedback a window closing with ``loss`` (0..1) publishes: ``current`` when
    the loss in whole percent (rounded up, capped at 100) is unchanged, so that
    ``oc-seq`` moves only with the value (RFC 7339 5.2); otherwise a new one."""
    percent = min(100, math.ceil(loss * 100 - 1e-9))
    if percent == current.loss:
        return current
    return OverloadFeedback(loss=percent, validity=validity, seq=seq)


def oc_params(feedback: OverloadFeedback) -> tuple[tuple[str, str], ...]:
    """The Via parameters of a feedback, in RFC 7339 section 4 order."""
    return (
        ("oc", str(feedback.loss)),
        ("oc-algo", '"loss"'),
        ("oc-validity", str(round(feedback.validity * 1000))),
        # oc-seq = 1*12DIGIT "." 1*5DIGIT
        ("oc-seq", f"{max(0.0, feedback.seq):.3f}"),
    )


def stamp_overload_feedback(response: Response, feedback: OverloadFeedback) -> bool:
    """Adds RFC 7339 feedback to the top Via of a response, if its request asked.

    A response's Via is a copy of its request's (RFC 3261 8.2.6.2), so an ``oc``
    parameter in the response's top Via means the upstream client advertised
    support. RFC 7339 section 5.2: the server "MUST" then choose an algorithm the
    client listed in ``oc-algo`` (``loss`` when the list is absent; it is mandatory
    to implement) and report it with the loss, validity and sequence number.

    Args:
        response: the response about to be sent; its ``headers`` are replaced.
        feedback: what to report.

    Returns:
        True if the top Via was stamped; False if the request did not advertise
        ``oc``, offered only other algorithms, or the Via does not parse.
    """
    top = response.headers.get("Via")
    if top is None or _OC_PARAM_RE.search(top) is None:
        # The common case, a client that never asked: decided without copying the
        # header list or parsing the Via (this runs for every response the gateway
        # sends; issue 17 measured the parse at ~10 % of a call's CPU).
        return False
    fields = list(response.headers)
    line = next((i for i, (name, _) in enumerate(fields) if name == "Via"), None)
    if line is None:
        return False
    try:
        vias = parse_via(fields[line][1])
    except ParseError:
        return False
    via = vias[0]
    if via.param("oc") is None:
        return False
    offered = via.param("oc-algo")
    if offered:
        algorithms = {a.strip().lower() for a in offered.strip('"').split(",")}
        if "loss" not in algorithms:
            return False
    for name, value in oc_params(feedback):
        via = via.with_param(name, value)
    # Rewrite the top via-parm in place: the other values of its line and the other
    # Via lines belong to other hops and keep their bytes (RFC 3261 7.3.1).
    rest = split_list_value(fields[line][1])[1:]
    fields[line] = ("Via", ", ".join([str(via), *rest]))
    response.headers = Headers(fields)
    return True
