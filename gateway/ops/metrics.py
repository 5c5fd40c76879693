"""Every Prometheus metric of the gateway, in one place.

Naming follows the Prometheus naming guide: the ``voipgw_`` prefix, base units
(seconds, bytes) in the name, ``_total`` on counters, histograms for latencies. Label
values are always bounded: a label never carries a number that grows, a URI, a user
or a Call-ID, because every distinct value is a new time series held in memory by the
gateway and by Prometheus for as long as it lives.

Two kinds of label keep that promise:

* **closed sets** (``call_class``, ``outcome``, SIP ``method``, ``direction``,
  ``transport``, ``family``, announcement ``result``): values outside the set are
  mapped to a fixed fallback ("unknown", "other", or "failed" for an outcome)
  instead of raising, because a metric must never break a call;
* **open tokens** (``reason``, ``kind``, ``policy``, ``centre``): any short
  snake_case token set by the code or by configuration (an emergency centre id), but
  only the first :data:`MAX_TOKEN_VALUES` distinct ones per label; later ones become
  "other". The cap makes cardinality bounded by construction without every module
  having to agree on a list in advance.

The call path uses the one-line helper methods of :class:`Metrics`
(``metrics.sip_request_in(method)``, ``metrics.call_ended(cls, outcome)``); the raw
metric objects are attributes too, for code that needs them. Tests build a fresh
``Metrics(CollectorRegistry())``; the gateway uses :func:`default_metrics`.
"""

from __future__ import annotations

import asyncio
import ipaddress
import itertools
import platform
import re
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from importlib import metadata

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.utils import floatToGoString

from gateway.ops.sip_traffic import (
    SIP_METHODS,
    TRANSACTION_BUCKETS,
    SipTraffic,
    normalize_method,
    status_label,
)
from routing.address_check import AddressProblem
from routing.configfields import ConfigError, Table
from routing.decision import CallerId, CallerIdReason, Direction, UnverifiedLocation
from routing.device_location import DeviceLocationProblem

__all__ = [
    "CALL_CLASSES",
    "CALL_OUTCOMES",
    "DEFAULT_METRICS_PORT",
    "SIP_METHODS",
    "Metrics",
    "MetricsConfig",
    "default_metrics",
    "exported_names",
    "normalize_method",
    "run_event_loop_lag_monitor",
    "status_label",
]

#: Port of the HTTP status listener (/metrics, /healthz, /readyz). 9464 is the port
#: the OpenTelemetry Prometheus exporter uses, free of the SIP (5060/5061) and
#: Prometheus (9090) defaults.
DEFAULT_METRICS_PORT = 9464

CALL_CLASSES = frozenset({"office", "nomadic", "unknown"})
CALL_OUTCOMES = frozenset(
    {"answered", "busy", "no_answer", "cancelled", "failed", "rejected", "shed"}
)
DIRECTIONS = frozenset({"in", "out"})
#: ``voipgw_relayed_calls_total`` sides: ``routing.decision.FlowRelay`` values, "_" for "-".
RELAY_SIDES = frozenset({"to_owner", "from_sibling"})
TRANSPORTS = frozenset({"udp", "tcp", "tls", "ws", "wss"})
FAMILIES = frozenset({"ipv4", "ipv6"})
ANNOUNCEMENT_RESULTS = frozenset({"played", "skipped", "not_played"})
#: Outcomes of a security desk's SIP MESSAGE (gateway/service/desk.py DeskOutcome).
DESK_OUTCOMES = frozenset({"delivered", "rejected", "timeout", "unreachable", "dropped"})
#: gateway.edge.guard.BanReason and UnbanReason values.
GUARD_BAN_REASONS = frozenset({"auth_failures", "scanner"})
GUARD_UNBAN_REASONS = frozenset({"expired", "operator", "evicted"})
#: ParseError.status_hint -> parse error reason (gateway/sip/errors.py).
_PARSE_REASON_BY_STATUS = {400: "malformed", 505: "bad_version", 513: "too_large"}

#: Distinct values an open-token label may take before new values become "other".
MAX_TOKEN_VALUES = 32
_TOKEN_RE = re.compile(r"[a-z][a-z0-9_-]{0,39}")

_TRANSACTION_BUCKETS = TRANSACTION_BUCKETS
# Session request delay (RFC 6076 section 4.2): fast local answers to slow carriers.
#: The bucket bounds as the exposition format writes them (as prometheus-client does).
_TRANSACTION_BOUNDS = [floatToGoString(b) for b in _TRANSACTION_BUCKETS] + ["+Inf"]  # type: ignore[no-untyped-call]
_SETUP_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2, 3, 5, 8, 13, 20, 30)
# A 20 ms G.711 frame sent more than a frame late is audible.
_RTP_LATENESS_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.04, 0.08)
_COPY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
_LOOP_LAG_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5)


def _closed(value: str, allowed: frozenset[str], fallback: str) -> str:
    return value if value in allowed else fallback


#: Distinct customers the caller-ID label admits. Customer ids come from the routing
#: data the operator provisions, never from the wire, so the set is the customer
#: base; the cap keeps a very large base (or a bug) from growing the series further.
MAX_CUSTOMER_LABELS = 1000
_CUSTOMER_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
CALLER_ID_DECISIONS = frozenset(d.value for d in CallerId)
CALLER_ID_REASONS = frozenset(r.value for r in CallerIdReason)
DIRECTIONS = frozenset(d.value for d in Direction)


class _TokenLabel:
    """Admits the first MAX_TOKEN_VALUES distinct well-formed tokens of one label."""

    def __init__(self, limit: int = MAX_TOKEN_VALUES, pattern: re.Pattern[str] = _TOKEN_RE) -> None:
        self._limit = limit
        self._pattern = pattern
        self._seen: set[str] = set()
        # Helpers may be called from the RTP or CDR threads as well as the loop.
        self._lock = threading.Lock()

    def __call__(self, value: str) -> str:
        if value in self._seen:
            return value
        if not self._pattern.fullmatch(value):
            return "other"
        with self._lock:
            if len(self._seen) >= self._limit:
                return "other"
            self._seen.add(value)
        return value


def _version() -> str:
    try:
        return metadata.version("voipgw")
    except metadata.PackageNotFoundError:
        # Running from a checkout that was never pip-installed.
        return "unknown"


class SipTrafficCollector:
    """Exports the per-message SIP series counted by :class:`SipTraffic`
    (gateway.ops.sip_traffic): ``voipgw_sip_requests``, ``voipgw_sip_responses``,
    ``voipgw_sip_retransmissions`` and ``voipgw_transaction_duration_seconds``.

    They are counted in plain dicts of label values and exported at scrape time
    (prometheus-client's custom-collector interface), not through labelled
    ``Counter``/``Histogram`` children: those take a lock and a few method calls per
    increment, which at four or five per message was 10 % of the event loop's CPU
    under load. The series, names, types and labels are the same.
    """

    def __init__(self, counts: SipTraffic) -> None:
        self.counts = counts
        self._counters = (
            (
                "voipgw_sip_requests",
                "SIP requests received (in) or sent (out), retransmissions excluded.",
                ["method", "direction"],
                counts.requests,
            ),
            (
                "voipgw_sip_responses",
                "SIP responses received (in) or sent (out), by status code and CSeq method.",
                ["code", "method", "direction"],
                counts.responses,
            ),
            (
                "voipgw_sip_retransmissions",
                "SIP messages retransmitted by the transaction layer (Timers A, E, G).",
                ["method"],
                counts.retransmissions,
            ),
        )

    def collect(self) -> Iterable[Metric]:
        created = self.counts.created.copy()
        for name, help_text, labels, counts in self._counters:
            family = CounterMetricFamily(name, help_text, labels=labels)
            for key, count in list(counts.items()):
                family.add_metric(list(key), count, created=created.get((id(counts), key)))
            yield family
        durations = HistogramMetricFamily(
            "voipgw_transaction_duration_seconds",
            "Time from creation to termination of SIP transactions.",
            labels=["method"],
        )
        for method, slots in list(self.counts.durations.items()):
            slots = list(slots)
            cumulative = list(itertools.accumulate(slots[:-1]))
            durations.add_metric(
                [method], list(zip(_TRANSACTION_BOUNDS, cumulative, strict=True)), slots[-1]
            )
        yield durations


class Metrics:
    """The gateway's metrics, registered on one :class:`CollectorRegistry`.

    Args:
        registry: where the metrics are registered; a fresh one per test.
        version: value of the ``version`` label of ``voipgw_build_info``.
    """

    def __init__(self, registry: CollectorRegistry, *, version: str | None = None) -> None:
        self.registry = registry
        r = registry
        self.calls = Counter(
            "voipgw_calls",
            "Calls that reached a final outcome, by call class and outcome.",
            ["call_class", "outcome"],
            registry=r,
        )
        self.active_calls = Gauge(
            "voipgw_active_calls",
            "Calls admitted and in progress on this instance (routed on, not yet ended).",
            registry=r,
        )
        self.emergency_beyond_reserve = Counter(
            "voipgw_emergency_calls_beyond_reserve",
            "Emergency calls admitted beyond max_calls + emergency_reserve (never "
            "refused for load; this says the gateway is too small).",
            registry=r,
        )
        self.caller_id = Counter(
            "voipgw_caller_id_decisions",
            "Calls by what the caller-ID policy did with the presented number"
            " (direction, decision, reason; Traficom regulation 28).",
            ["direction", "decision", "reason"],
            registry=r,
        )
        self.caller_id_changed = Counter(
            "voipgw_caller_id_changed",
            "Calls whose presented number was replaced, removed or rejected, by the"
            " customer billed (a compromised account or a misconfigured PBX).",
            ["customer", "direction"],
            registry=r,
        )
        self.emergency_calls = Counter(
            "voipgw_emergency_calls",
            "Emergency calls by call class, routing policy, centre id and outcome.",
            ["call_class", "policy", "centre", "outcome"],
            registry=r,
        )
        self.emergency_unverified_location = Counter(
            "voipgw_emergency_calls_unverified_location",
            "Emergency calls routed without a verified location, by why (outside every "
            "network, a VPN pool, another customer's network, an unknown caller).",
            ["reason"],
            registry=r,
        )
        self.device_location_ignored = Counter(
            "voipgw_device_location_ignored",
            "Locations sent by calling devices (RFC 6442) that were not forwarded to the "
            "centre, by reason; the call went on with the network's location.",
            ["reason"],
            registry=r,
        )
        self.site_address_problems = Gauge(
            "voipgw_site_address_problems",
            "Sites and declared locations whose civic address lacks what a centre needs, "
            "by problem (voipgw sites check lists them).",
            ["problem"],
            registry=r,
        )
        self.emergency_desk_messages = Counter(
            "voipgw_emergency_desk_messages",
            "SIP MESSAGEs to customers' security desks about emergency calls, by outcome "
            "(delivered: 2xx; rejected: an error status; timeout; unreachable: no next "
            "hop or a transport error; dropped: too many pending).",
            ["outcome"],
            registry=r,
        )
        for outcome in sorted(DESK_OUTCOMES):
            # At zero from the start, so an alert on increase() sees the first one.
            self.emergency_desk_messages.labels(outcome=outcome)
        self.emergency_desk_failovers = Counter(
            "voipgw_emergency_desk_failovers",
            "Security desk notices moved to the desk URI's next next hop (RFC 3263) after "
            "a timeout, a transport error or a 5xx/408 from the one before.",
            registry=r,
        )
        # The per-message series (requests, responses, retransmissions, transaction
        # durations) are counted in plain dicts and exported by a collector: see
        # SipTrafficCollector.
        #: the transaction layer's observer (gateway.sip.transaction_layer.SipObserver)
        self.sip_counts = SipTraffic(on_parse_error=self.parse_error_from)
        self.sip_traffic = SipTrafficCollector(self.sip_counts)
        r.register(self.sip_traffic)
        self.call_setup = Histogram(
            "voipgw_call_setup_seconds",
            "Session request delay (RFC 6076 SRD): INVITE sent to first 18x or 2xx.",
            ["call_class", "emergency"],
            buckets=_SETUP_BUCKETS,
            registry=r,
        )
        self.parse_errors = Counter(
            "voipgw_parse_errors",
            "Received messages that failed to parse, by reason.",
            ["reason"],
            registry=r,
        )
        self.dropped_messages = Counter(
            "voipgw_dropped_messages",
            "Received messages dropped without processing, by reason.",
            ["reason"],
            registry=r,
        )
        # Bans of the ingress guard (gateway/edge/guard.py): which sources is in the
        # log lines, never in a label (an address is unbounded).
        self.guard_bans = Counter(
            "voipgw_guard_bans",
            "Sources banned by the ingress guard, by reason (auth_failures, scanner).",
            ["reason"],
            registry=r,
        )
        self.guard_unbans = Counter(
            "voipgw_guard_unbans",
            "Bans of the ingress guard that ended, by reason (expired, operator, evicted).",
            ["reason"],
            registry=r,
        )
        self.guard_banned_sources = Gauge(
            "voipgw_guard_banned_sources",
            "Sources (IPv4 addresses, IPv6 prefixes) banned by the ingress guard now.",
            registry=r,
        )
        self.registrations = Counter(
            "voipgw_registrations",
            "REGISTER requests handled by the registrar, by outcome.",
            ["outcome"],
            registry=r,
        )
        # The registrar's bindings live in the PostgreSQL table every instance shares,
        # and a phone refreshes through whichever instance DNS gives it: each instance
        # reports the whole table, so the fleet's value is the max, never the sum
        # (deploy/prometheus/rules.yml). NaN when the count could not be read.
        self.registered_bindings = Gauge(
            "voipgw_registered_bindings",
            "Unexpired contact bindings held by the registrar (the database every "
            "instance shares: the same count on each instance).",
            registry=r,
        )
        self.relayed_calls = Counter(
            "voipgw_relayed_calls",
            "Calls that went between two of the gateway's processes (workers or "
            "instances) because another one holds the callee's flow, by side: to_owner "
            "(relayed from here: counted in voipgw_calls_total here) or from_sibling "
            "(delivered here for a sibling: not counted in voipgw_calls_total, so that "
            "a sum over processes counts the call once).",
            ["side"],
            registry=r,
        )
        self.call_auth_challenges = Counter(
            "voipgw_call_auth_challenges",
            "INVITEs answered with a digest challenge (401/407); the call is the "
            "retried INVITE, so a challenge is not counted in voipgw_calls_total.",
            registry=r,
        )
        self.announcements = Counter(
            "voipgw_announcements",
            "Announcements by kind and result (played, skipped, not_played).",
            ["kind", "result"],
            registry=r,
        )
        self.rtp_send_lateness = Histogram(
            "voipgw_rtp_send_lateness_seconds",
            "How late each RTP frame of an announcement left, against its schedule.",
            buckets=_RTP_LATENESS_BUCKETS,
            registry=r,
        )
        self.cdr_queue_depth = Gauge(
            "voipgw_cdr_queue_depth", "CDRs waiting in memory for the database.", registry=r
        )
        self.cdr_spool_bytes = Gauge(
            "voipgw_cdr_spool_bytes",
            "Size of the on-disk CDR spool (records not yet in PostgreSQL).",
            registry=r,
        )
        self.cdr_spool_oldest_age = Gauge(
            "voipgw_cdr_spool_oldest_age_seconds",
            "Age of the oldest spooled CDR; 0 when the spool is empty.",
            registry=r,
        )
        self.cdr_copy_duration = Histogram(
            "voipgw_cdr_copy_duration_seconds",
            "Duration of one COPY of a CDR batch into PostgreSQL.",
            buckets=_COPY_BUCKETS,
            registry=r,
        )
        self.cdr_rows_committed = Counter(
            "voipgw_cdr_rows_committed", "CDR rows committed to PostgreSQL.", registry=r
        )
        self.cdr_partitions_ahead = Gauge(
            "voipgw_cdr_partitions_ahead",
            "Monthly CDR partitions that exist after the current month.",
            registry=r,
        )
        # Unknown until the CDR maintenance has looked: NaN compares false, so the
        # "no future partition" alert cannot fire on a gateway that never checked.
        self.cdr_partitions_ahead.set(float("nan"))
        self.database_restarts = Counter(
            "voipgw_database_restarts",
            "Restarts of the embedded PostgreSQL this gateway started, after it died.",
            registry=r,
        )
        self.cluster_instances = Gauge(
            "voipgw_cluster_instances",
            "Gateway instances with a heartbeat in PostgreSQL younger than [cluster]"
            " dead_after (this one included); NaN while the database is away.",
            registry=r,
        )
        self.cluster_instances.set(float("nan"))
        self.cluster_dead_instances = Counter(
            "voipgw_cluster_dead_instances",
            "Instances this one found dead and whose in-progress CDRs it closed.",
            registry=r,
        )
        self.cluster_calls_closed = Counter(
            "voipgw_cluster_calls_closed",
            "In-progress CDRs of dead instances this one closed as instance-dead.",
            registry=r,
        )
        self.event_loop_lag = Histogram(
            "voipgw_event_loop_lag_seconds",
            "How late the asyncio event loop ran a timer: time the loop was blocked.",
            buckets=_LOOP_LAG_BUCKETS,
            registry=r,
        )
        self.overload_shed = Counter(
            "voipgw_overload_shed",
            "Requests refused or dropped by overload control, by reason.",
            ["reason"],
            registry=r,
        )
        self.overload_state = Gauge(
            "voipgw_overload_state",
            "1 while load shedding answers new ordinary calls 503, else 0.",
            registry=r,
        )
        self.overload_state_changes = Counter(
            "voipgw_overload_state_changes",
            "Load shedding started or stopped (hysteresis; flapping shows here).",
            registry=r,
        )
        self.overload_loop_lag = Histogram(
            "voipgw_overload_loop_lag_seconds",
            "How late the load-shedding heartbeat ran: the loop lag it decides on.",
            buckets=_LOOP_LAG_BUCKETS,
            registry=r,
        )
        self.overload_receive_queue = Gauge(
            "voipgw_overload_receive_queue_bytes",
            "Bytes waiting in the kernel receive queues of the UDP sockets (last sample).",
            registry=r,
        )
        self.transport_listening = Gauge(
            "voipgw_transport_listening",
            "1 while a SIP listener of this transport and address family is bound.",
            ["transport", "family"],
            registry=r,
        )
        self.build_info = Gauge(
            "voipgw_build_info",
            "Always 1; the labels name the running version.",
            ["version", "python"],
            registry=r,
        )
        self.build_info.labels(version=version or _version(), python=platform.python_version()).set(
            1
        )

        self._reason = {name: _TokenLabel() for name in ("parse", "drop", "shed", "registration")}
        self._policy = _TokenLabel()
        self._centre = _TokenLabel()
        self._customer = _TokenLabel(MAX_CUSTOMER_LABELS, _CUSTOMER_RE)
        self._kind = _TokenLabel()

        # Counters of closed label sets start at 0 so that increase() sees the first
        # event: a series born with value 1 has no earlier sample to rise from.
        # Kept by label values: every call counts into one of each, and labels()
        # takes a lock and checks its arguments on every lookup.
        self._call_counts = {
            (call_class, outcome): self.calls.labels(call_class=call_class, outcome=outcome)
            for call_class in CALL_CLASSES
            for outcome in CALL_OUTCOMES
        }
        self._call_setups = {
            (call_class, emergency): self.call_setup.labels(
                call_class=call_class, emergency="true" if emergency else "false"
            )
            for call_class in CALL_CLASSES
            for emergency in (False, True)
        }
        for side in RELAY_SIDES:
            self.relayed_calls.labels(side=side)
        for unverified in UnverifiedLocation:
            self.emergency_unverified_location.labels(reason=unverified.value)
        for ignored in DeviceLocationProblem:
            self.device_location_ignored.labels(reason=ignored.value)
        for problem in AddressProblem:
            self.site_address_problems.labels(problem=problem.value)
        for reason in GUARD_BAN_REASONS:
            self.guard_bans.labels(reason=reason)
        for reason in GUARD_UNBAN_REASONS:
            self.guard_unbans.labels(reason=reason)

    # Calls -------------------------------------------------------------------------

    def track_active_calls(self, count: Callable[[], int]) -> None:
        """``voipgw_active_calls`` reads ``count`` at each scrape: the calls admitted
        (routed on) and not yet ended. It once read the B2BUA's whole table, calls
        being routed or refused included, and so showed more than ``max_calls``
        under load while no more were admitted."""
        self.active_calls.set_function(count)

    def emergency_call_beyond_reserve(self) -> None:
        """Counts an emergency call admitted beyond ``max_calls + emergency_reserve``."""
        self.emergency_beyond_reserve.inc()

    def emergency_location(
        self, unverified: UnverifiedLocation | None, ignored: DeviceLocationProblem | None
    ) -> None:
        """Counts an emergency call's location safeguards: routed without a verified
        location (why), and a device location not forwarded (why)."""
        if unverified is not None:
            self.emergency_unverified_location.labels(reason=unverified.value).inc()
        if ignored is not None:
            self.device_location_ignored.labels(reason=ignored.value).inc()

    def set_site_address_problems(self, counts: Mapping[AddressProblem, int]) -> None:
        """Sets how many sites (and declared locations) have each address problem."""
        for problem, count in counts.items():
            self.site_address_problems.labels(problem=problem.value).set(count)

    def call_ended(self, call_class: str, outcome: str) -> None:
        """A call reached its final outcome."""
        self._count_call(call_class, outcome)

    def call_refused(self, call_class: str, outcome: str) -> None:
        """A call was answered with a final error before it was routed."""
        self._count_call(call_class, outcome)

    def call_relayed(self, side: str) -> None:
        """A call went between two of the gateway's processes (``FlowRelay``).

        Args:
            side: ``to_owner`` or ``from_sibling``.
        """
        self.relayed_calls.labels(side=_closed(side, RELAY_SIDES, "to_owner")).inc()

    def call_challenged(self) -> None:
        """A call was answered with a digest challenge.

        RFC 3261 22.2: the caller retries with credentials in a new INVITE, and that
        INVITE is the call; the challenged one only ends its own transaction.
        """
        self.call_auth_challenges.inc()

    def call_shed(self, call_class: str, reason: str) -> None:
        """Overload control refused a new call (counts the call and the shed)."""
        self._count_call(call_class, "shed")
        self.overload_shed_event(reason)

    def _count_call(self, call_class: str, outcome: str) -> None:
        self._call_counts[
            _closed(call_class, CALL_CLASSES, "unknown"), _closed(outcome, CALL_OUTCOMES, "failed")
        ].inc()

    def call_setup_observed(self, call_class: str, emergency: bool, seconds: float) -> None:
        """Records the session request delay of one outgoing INVITE (RFC 6076 SRD)."""
        self._call_setups[_closed(call_class, CALL_CLASSES, "unknown"), bool(emergency)].observe(
            seconds
        )

    def caller_id_decided(self, direction: str, decision: str, reason: str, customer: str) -> None:
        """Counts what the caller-ID policy did with one call's number.

        Args:
            direction: inbound or outbound.
            decision: kept, replaced, removed or rejected.
            reason: a ``CallerIdReason`` token.
            customer: the customer billed ("" when none): a label only of the changed
                calls, bounded by the provisioned customers (:data:`MAX_CUSTOMER_LABELS`).
        """
        direction = _closed(direction, DIRECTIONS, "outbound")
        decision = _closed(decision, CALLER_ID_DECISIONS, "kept")
        self.caller_id.labels(
            direction=direction,
            decision=decision,
            reason=_closed(reason, CALLER_ID_REASONS, "other"),
        ).inc()
        if decision != "kept":
            self.caller_id_changed.labels(
                customer=self._customer(customer or "none"), direction=direction
            ).inc()

    def emergency_call(self, call_class: str, policy: str, centre: str, outcome: str) -> None:
        """Counts one emergency call's outcome.

        Args:
            centre: configured id of the emergency centre it was routed to ("none"
                when no centre could be chosen).
        """
        self.emergency_calls.labels(
            call_class=_closed(call_class, CALL_CLASSES, "unknown"),
            policy=self._policy(policy),
            centre=self._centre(centre),
            outcome=_closed(outcome, CALL_OUTCOMES, "failed"),
        ).inc()

    def emergency_centres_configured(self, policy: str, centres: Iterable[str]) -> None:
        """Creates the failure series of configured centres at 0 (see ``increase()``)."""
        for centre in centres:
            for outcome in CALL_OUTCOMES - {"answered"}:
                for call_class in CALL_CLASSES:
                    self.emergency_calls.labels(
                        call_class=call_class,
                        policy=self._policy(policy),
                        centre=self._centre(centre),
                        outcome=outcome,
                    )

    # SIP ---------------------------------------------------------------------------

    # The per-message SIP counters: see SipTrafficCollector for why they are plain dicts.

    def sip_request_in(self, method: str | bytes) -> None:
        self.sip_counts.sip_request_in(method)

    def sip_request_out(self, method: str | bytes) -> None:
        self.sip_counts.sip_request_out(method)

    def sip_response_in(self, status: int, method: str | bytes) -> None:
        """Counts a received response; ``method`` is the CSeq method."""
        self.sip_counts.sip_response_in(status, method)

    def sip_response_out(self, status: int, method: str | bytes) -> None:
        """Counts a sent response; ``method`` is the CSeq method."""
        self.sip_counts.sip_response_out(status, method)

    def sip_retransmission(self, method: str | bytes) -> None:
        self.sip_counts.sip_retransmission(method)

    def transaction_finished(self, method: str | bytes, seconds: float) -> None:
        self.sip_counts.transaction_finished(method, seconds)

    def parse_error(self, reason: str) -> None:
        """Counts a message that failed to parse; see :meth:`parse_error_from`."""
        self.parse_errors.labels(reason=self._reason["parse"](reason)).inc()

    def parse_error_from(self, status_hint: int) -> None:
        """Counts a ParseError by its ``status_hint`` (400 malformed, 513 too_large)."""
        self.parse_error(_PARSE_REASON_BY_STATUS.get(status_hint, "other"))

    def message_dropped(self, reason: str) -> None:
        """Counts a dropped message (oversize, malformed, queue_full, rate_limited...)."""
        self.dropped_messages.labels(reason=self._reason["drop"](reason)).inc()

    def guard_ban(self, reason: str) -> None:
        """Counts a source the ingress guard banned (auth_failures, scanner)."""
        self.guard_bans.labels(reason=_closed(reason, GUARD_BAN_REASONS, "other")).inc()

    def guard_unban(self, reason: str) -> None:
        """Counts a ban that ended (expired, operator, evicted)."""
        self.guard_unbans.labels(reason=_closed(reason, GUARD_UNBAN_REASONS, "other")).inc()

    def track_guard_bans(self, count: Callable[[], int]) -> None:
        """``voipgw_guard_banned_sources`` reads ``count`` (the guard's table) at each
        scrape."""
        self.guard_banned_sources.set_function(count)

    def overload_sampled(self, lag: float, receive_queue: int) -> None:
        """One load-shedding sample: loop lag in seconds, receive-queue bytes."""
        self.overload_loop_lag.observe(lag)
        self.overload_receive_queue.set(receive_queue)

    def overload_state_changed(self, shedding: bool) -> None:
        """Load shedding started (True) or stopped."""
        self.overload_state.set(1 if shedding else 0)
        self.overload_state_changes.inc()

    def overload_shed_event(self, reason: str) -> None:
        """Counts a request shed by overload control that is not a new call."""
        self.overload_shed.labels(reason=self._reason["shed"](reason)).inc()

    def registration(self, outcome: str) -> None:
        """Counts a REGISTER (registered, refreshed, unregistered, rejected...)."""
        self.registrations.labels(outcome=self._reason["registration"](outcome)).inc()

    def set_registered_bindings(self, count: int | None) -> None:
        """Reports the registrar's unexpired bindings (all instances': a shared table).

        Args:
            count: the count, or None when the database could not be read (NaN: a
                stale count would hide a loss of registrations from the alert).
        """
        self.registered_bindings.set(float("nan") if count is None else count)

    def set_transport_listening(self, transport: str, host: str, listening: bool) -> None:
        """Marks a SIP listener bound (True) or closed (False).

        Args:
            transport: udp, tcp, tls, ws or wss (case-insensitive).
            host: the address it binds; only its family (ipv4/ipv6) becomes a label.
        """
        try:
            family = "ipv6" if ipaddress.ip_address(host).version == 6 else "ipv4"
        except ValueError:
            family = "ipv6" if ":" in host else "ipv4"
        self.transport_listening.labels(
            transport=_closed(transport.lower(), TRANSPORTS, "other"), family=family
        ).set(1 if listening else 0)

    def emergency_desk_message(self, outcome: str) -> None:
        """Counts a security desk's MESSAGE by outcome (:data:`DESK_OUTCOMES`)."""
        self.emergency_desk_messages.labels(
            outcome=_closed(outcome, DESK_OUTCOMES, "unreachable")
        ).inc()

    def emergency_desk_failover(self) -> None:
        """Counts a security desk notice moved on to its URI's next next hop."""
        self.emergency_desk_failovers.inc()

    # Media -------------------------------------------------------------------------

    def announcement(self, kind: str, result: str) -> None:
        """Counts an announcement: result is played, skipped or not_played."""
        self.announcements.labels(
            kind=self._kind(kind), result=_closed(result, ANNOUNCEMENT_RESULTS, "not_played")
        ).inc()

    def rtp_lateness(self, seconds: float) -> None:
        self.rtp_send_lateness.observe(max(0.0, seconds))

    # CDR ---------------------------------------------------------------------------

    def cdr_batch_committed(self, rows: int, copy_seconds: float) -> None:
        """Records one successful COPY of ``rows`` CDRs that took ``copy_seconds``."""
        self.cdr_rows_committed.inc(rows)
        self.cdr_copy_duration.observe(copy_seconds)

    def database_restarted(self) -> None:
        self.database_restarts.inc()

    def set_cluster_instances(self, live: int | None) -> None:
        """Live instances of the cluster (None: unknown, the database is away)."""
        self.cluster_instances.set(float("nan") if live is None else live)

    def cluster_instance_dead(self, calls_closed: int) -> None:
        """This instance declared another dead and closed ``calls_closed`` records."""
        self.cluster_dead_instances.inc()
        self.cluster_calls_closed.inc(calls_closed)

    def set_cdr_queue_depth(self, depth: int) -> None:
        self.cdr_queue_depth.set(depth)

    def set_cdr_spool(self, size_bytes: int, oldest_age_seconds: float) -> None:
        """Reports the spool size and the age of its oldest record (0 when empty)."""
        self.cdr_spool_bytes.set(size_bytes)
        self.cdr_spool_oldest_age.set(oldest_age_seconds)

    def set_cdr_partitions_ahead(self, count: int) -> None:
        self.cdr_partitions_ahead.set(count)


def exported_names(registry: CollectorRegistry) -> frozenset[str]:
    """Every sample name the registry can export, labelled children or not.

    Counters give ``<name>_total`` and ``<name>_created``; histograms ``_bucket``,
    ``_count``, ``_sum`` and ``_created``. Used to check that dashboards and alert
    rules only name metrics that exist.
    """
    suffixes = {
        "counter": ("_total", "_created"),
        "histogram": ("_bucket", "_count", "_sum", "_created"),
        "summary": ("", "_count", "_sum", "_created"),
        "info": ("_info",),
    }
    names: set[str] = set()
    for family in registry.collect():
        names.update(family.name + s for s in suffixes.get(family.type, ("",)))
    return frozenset(names)


_default: Metrics | None = None
_default_lock = threading.Lock()


def default_metrics() -> Metrics:
    """The process-wide :class:`Metrics`, on prometheus-client's global REGISTRY."""
    global _default
    with _default_lock:
        if _default is None:
            from prometheus_client import REGISTRY

            _default = Metrics(REGISTRY)
        return _default


async def run_event_loop_lag_monitor(metrics: Metrics, *, interval: float = 0.25) -> None:
    """Measures event-loop lag until cancelled: run it as a task of the gateway.

    Sleeps ``interval`` seconds and records how much later than asked the loop woke
    up; that delay is time some callback held the loop, which is also how late SIP
    retransmissions and RTP frames leave.
    """
    loop = asyncio.get_running_loop()
    while True:
        start = loop.time()
        await asyncio.sleep(interval)
        metrics.event_loop_lag.observe(max(0.0, loop.time() - start - interval))


@dataclass(frozen=True, slots=True, kw_only=True)
class MetricsConfig:
    """The ``[metrics]`` table: the HTTP status listener (/metrics, /healthz, /readyz)."""

    enabled: bool = True
    """Whether to run the status listener at all."""
    address: str = "127.0.0.1"
    """IP address to bind; loopback by default because /metrics is not authenticated."""
    port: int = DEFAULT_METRICS_PORT
    """TCP port to bind (0 picks a free port, for tests)."""
    lag_interval: float = 0.25
    """Event-loop lag sampling period, in seconds."""

    @classmethod
    def from_table(cls, table: Table) -> MetricsConfig:
        """Reads the ``[metrics]`` table.

        Raises:
            ConfigError: a field is of the wrong type, out of range or unknown.
        """
        # Defaults come from an instance: slots dataclasses keep none on the class.
        defaults = cls()
        address = table.str("address", defaults.address)
        try:
            ipaddress.ip_address(address)
        except ValueError:
            raise ConfigError(
                table.field("address"), f"expected an IP address, got {address!r}"
            ) from None
        config = cls(
            enabled=table.bool("enabled", defaults.enabled),
            address=address,
            port=table.int("port", defaults.port, min=0, max=65535),
            lag_interval=table.float("lag_interval", defaults.lag_interval, min=0.01, max=60.0),
        )
        table.reject_unknown()
        return config
