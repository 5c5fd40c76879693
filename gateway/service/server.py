"""The running gateway: transports + transaction layer + B2BUA on one event loop.

The asyncio adapter of the sans-IO core (STYLE 6, aioquic's ``QuicConnectionProtocol``
shape): every input (a batch of received messages, a timer, a routing decision, a
transport error) is fed to the core with ``now = loop.time()``, then :meth:`_pump`
moves the core's events to their consumers, transmits what the core wants sent and
re-arms one loop timer at the core's next deadline. The per-message part of that is
:class:`gateway.service.pump.CorePump`, compiled with the core.
"""

from __future__ import annotations

import asyncio
import inspect
import ipaddress
import logging
import math
import os
import ssl
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from gateway.b2bua import (
    B2bua,
    CallAnswered,
    CallEnded,
    Reject,
    Route,
    RouteNeeded,
    ServiceRequest,
)
from gateway.b2bua.call import Side
from gateway.b2bua.events import (
    B2buaEvent,
    EndedBy,
    LocalAnswer,
    MediaAnswered,
    MediaNeeded,
    MessageDone,
)
from gateway.config import GatewayConfig
from gateway.edge.overload import LoadShedder
from gateway.ops.logs import bound_call_id
from gateway.ops.metrics import Metrics
from gateway.rtp.config import MediaConfig
from gateway.rtp.stage import MediaStage
from gateway.service.pump import CorePump, IngressGuard
from gateway.sip.builders import build_response
from gateway.sip.errors import ParseError
from gateway.sip.events import Endpoint, TransactionKey
from gateway.sip.headers import parse_name_address
from gateway.sip.message import Request, Response
from gateway.sip.transaction_layer import TransactionLayer
from gateway.transport.manager import ListenSpec, TransportManager
from routing.decision import Admission, CallFacts, FlowRelay, RecordingNotice, Shed

log = logging.getLogger("voipgw.server")

RouteResult = Route | Reject | LocalAnswer

#: Seconds between two log lines about calls shed for load.
SHED_LOG_INTERVAL = 10.0
#: Decides the B leg of a new call; may return the decision or an awaitable of it.
Router = Callable[[RouteNeeded], RouteResult | Awaitable[RouteResult]]
#: Receives every finished call (the CDR writer, metrics).
CallSink = Callable[[CallEnded], None]
AnswerSink = Callable[[CallAnswered], None]


#: Answers an out-of-dialog service request (REGISTER ...); may be async.
ServiceHandler = Callable[[ServiceRequest], Response | Awaitable[Response]]


#: The facts of a call refused while the gateway drains (SIGTERM).
DRAINING_FACTS = CallFacts(shed=Shed.DRAINING)
#: The facts of a call shed for load (gateway.edge.overload), answered before routing.
LOAD_SHED_FACTS = CallFacts(shed=Shed.LOAD)
#: Shed INVITE transactions remembered so a retransmission is not a second call (a
#: 503 lost on the way is retransmitted for up to 32 s, Timer B): about 3 s of a
#: 1,000 calls/s flood; an older retransmission costs a second row, never a call.
SHED_RECORDED_LIMIT = 4096

_TOKEN_BYTES = 12
_random_pool = bytearray()
# A forked child must never hand out the parent's remaining random bytes.
os.register_at_fork(after_in_child=_random_pool.clear)


def _random_bytes(count: int) -> bytearray:
    """``count`` bytes from the kernel's CSPRNG, read 4 KiB at a time: a call takes
    about eight tokens and a UUID, and one getrandom() system call each cost more than
    the rest of making them."""
    if len(_random_pool) < count:
        _random_pool[:] = os.urandom(4096)
    taken = _random_pool[-count:]
    del _random_pool[-count:]
    return taken


def new_token() -> str:
    """A random token for branches, tags and Call-IDs: 96 bits, URL-safe hex
    (RFC 3261 19.3 wants tags cryptographically random)."""
    return _random_bytes(_TOKEN_BYTES).hex()


def _uri_of(name_address: str | None) -> str:
    """The URI of a From or To header field value, or the value as written when it
    does not parse (a shed call's CDR keeps what the caller sent)."""
    try:
        return parse_name_address(name_address or "").uri
    except ParseError:
        return name_address or ""


def new_call_uuid() -> str:
    """A call's CDR key: a random UUID (version 4, RFC 9562 5.4) as 32 hex digits.

    Built from the same buffer as the tokens; ``uuid.uuid4().hex`` costs a system
    call and a UUID object per call.
    """
    raw = _random_bytes(16)
    raw[6] = raw[6] & 0x0F | 0x40  # version 4
    raw[8] = raw[8] & 0x3F | 0x80  # variant 10xx
    return raw.hex()


class Gateway:
    """One gateway instance: the SIP core (transaction layer and B2BUA) under asyncio.

    Every part is given at construction: nothing is attached or set afterwards.

    Args:
        config: validated configuration.
        router: the routing hook (default: everything to the configured upstream).
        call_sinks: consumers of finished calls (the CDR writer, the router's
            callback window).
        answer_sinks: consumers of answered calls (the CDR's in-progress records).
        services: handlers of out-of-dialog methods by method name (the registrar).
        metrics: Prometheus metrics to feed (None: no metrics).
        guard: admission control in front of the parser (None: admit everything).
        media: the ``[media]`` section: the gateway then runs its own media stage
            (announcements and the RTP relay); None: no announcements.
        on_response: sees every response the B2BUA sends (RFC 7339 overload feedback).
        emergency_fallback: request -> a last-resort route for an emergency call when
            the routing hook fails (the national default centres), or None.
        shedder: load shedding (``gateway.edge.overload``): fed a heartbeat every
            ``[overload] sample_interval``, or ``calm_sample_interval`` while the
            load is far below its thresholds; while it sheds, new ordinary INVITEs get
            a stateless 503 here, before the core sees them. None: no load shedding.
        on_active_calls: told the count of admitted calls whenever it changes (a
            worker publishes it to its siblings, gateway.workers.calls).
    """

    def __init__(
        self,
        config: GatewayConfig,
        *,
        router: Router | None = None,
        call_sinks: Sequence[CallSink] = (),
        answer_sinks: Sequence[AnswerSink] = (),
        services: dict[str, ServiceHandler] | None = None,
        metrics: Metrics | None = None,
        guard: IngressGuard | None = None,
        media: MediaConfig | None = None,
        on_response: Callable[[Response, float], object] | None = None,
        emergency_fallback: Callable[[Request], Route | None] | None = None,
        shedder: LoadShedder | None = None,
        on_active_calls: Callable[[int], None] | None = None,
    ) -> None:
        self.on_active_calls = on_active_calls
        self.shedder = shedder
        self._heartbeat: asyncio.TimerHandle | None = None
        self._heartbeat_at = 0.0
        self._shed_logged_at = -math.inf
        self._shed_logged = 0
        self._shed_recorded: dict[str, None] = {}
        self.on_response = on_response
        self.emergency_fallback = emergency_fallback
        self.config = config
        self.metrics = metrics
        self.guard = guard
        self.router: Router = router or UpstreamRouter(config)
        self.call_sinks = list(call_sinks)
        self.answer_sinks = list(answer_sinks)
        self.services = dict(services or {})
        #: the gateway's own media: it calls back media_ready / announcement_done
        self.media = MediaStage(self, media, metrics=metrics) if media is not None else None
        self.transports = TransportManager(
            self._on_messages,
            self._on_transport_error,
            tls_server=_tls_server_context(config),
            tls_client=_tls_client_context(config),
            ingress_limit=config.sip.ingress_queue,
        )
        self.layer: TransactionLayer | None = None
        self.b2bua: B2bua | None = None
        self._core: CorePump | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at: float | None = None
        self._route_tasks: set[asyncio.Task[None]] = set()
        #: MESSAGEs sent with send_message, waiting for their outcome
        self._messages: dict[TransactionKey, asyncio.Future[MessageDone]] = {}
        self.ready = False
        self._draining = False
        self._idle = asyncio.Event()
        #: calls routed on and not yet ended (``voipgw_active_calls``): the calls
        #: admitted, not those still being routed or refused
        self._admitted: set[str] = set()
        if metrics is not None:
            metrics.track_active_calls(lambda: len(self._admitted))

    async def start(self) -> list[Endpoint]:
        """Binds every listener and starts the core; returns the bound endpoints."""
        self._loop = asyncio.get_running_loop()
        for item in self.config.sip.listen:
            try:
                await self.transports.listen(
                    ListenSpec(item.transport, item.host, item.port, shared=item.shared)
                )
            except OSError as exc:
                # Name the listener: a config has several, and "address already in
                # use" alone does not say which.
                where = Endpoint(item.transport, item.host, item.port).host_port
                raise OSError(exc.errno, f"{item.transport} {where}: {exc.strerror}") from exc
        self.layer = TransactionLayer(
            local=self.transports.local,
            new_token=new_token,
            timers=self.config.sip.timers,
            max_transactions=self.config.sip.max_transactions,
            observer=self.metrics.sip_counts if self.metrics is not None else None,
        )
        self.b2bua = B2bua(
            self.layer,
            new_token=new_token,
            new_call_uuid=new_call_uuid,
            no_answer_timeout=self.config.sip.no_answer_timeout,
            services=frozenset(self.services),
            on_response=self.on_response,
            session_timers=self.config.sip.session_timer_policy,
        )
        self._core = CorePump(
            self.layer, self.b2bua, send=self.transports.send, on_call_event=self._on_call_event
        )
        self.ready = True
        if self.shedder is not None:
            self._heartbeat_at = self._loop.time() + self.config.overload.sample_interval
            self._heartbeat = self._loop.call_at(self._heartbeat_at, self._on_heartbeat)
        for endpoint in self.transports.local:
            log.info("listening on %s %s", endpoint.transport, endpoint.host_port)
            if self.metrics is not None:
                self.metrics.set_transport_listening(endpoint.transport, endpoint.host, True)
        return list(self.transports.local)

    async def close(self) -> None:
        if self.b2bua is not None and self.layer is not None and self.b2bua.calls:
            # Calls still up after the drain end here, BYE on both legs, so every one
            # gets its CallEnded (and CDR) rather than vanishing with the process.
            now = self._now()
            log.info("ending %d calls still in progress", len(self.b2bua.calls))
            self.b2bua.shutdown(now)
            self._pump(now)
        self.ready = False
        if self._timer is not None:
            self._timer.cancel()
        if self._heartbeat is not None:
            self._heartbeat.cancel()
            self._heartbeat = None
        for task in list(self._route_tasks):
            task.cancel()
        for future in self._messages.values():
            future.cancel()
        await self.transports.close()

    async def wait_idle(self, limit: float) -> bool:
        """Waits until no call is in progress; returns False on timeout."""
        self._idle.clear()
        if self.active_calls == 0:
            return True
        try:
            await asyncio.wait_for(self._idle.wait(), limit)
        except TimeoutError:
            return False
        return True

    @property
    def draining(self) -> bool:
        """Set on SIGTERM: new calls and OPTIONS get 503 while calls in progress end."""
        return self._draining

    @draining.setter
    def draining(self, value: bool) -> None:
        self._draining = value
        if self.b2bua is not None:
            self.b2bua.draining = value

    @property
    def active_calls(self) -> int:
        return len(self.b2bua.calls) if self.b2bua is not None else 0

    # ------------------------------------------------------------------ inputs

    def _now(self) -> float:
        assert self._loop is not None
        return self._loop.time()

    def _on_messages(self, batch: list[tuple[bytes, Endpoint]]) -> None:
        layer, core = self.layer, self._core
        if layer is None or core is None:
            return
        now = self._now()
        shedder = self.shedder
        if shedder is not None and shedder.engaged(now):
            core.handle_due(now)  # as CorePump.receive does
            self._receive_shedding(batch, shedder, layer, now)
            self._pump(now)
        else:
            self._schedule_timer(core.receive(batch, now, self.guard))

    def _receive_shedding(
        self,
        batch: list[tuple[bytes, Endpoint]],
        shedder: LoadShedder,
        layer: TransactionLayer,
        now: float,
    ) -> None:
        """Feeds a batch to the core through load shedding (gateway.edge.overload):
        while it sheds, new ordinary INVITEs are answered 503 here and new emergency
        INVITEs go before the rest of the batch (the priority lane)."""
        guard = self.guard
        shedding = shedder.monitor.shedding
        later: list[tuple[bytes, Endpoint]] = []
        for data, source in batch:
            if guard is not None and not guard.admit(data, source, now):
                continue
            if shedder.absorbs(data):
                continue  # the ACK of a shed 503 (Rule 4)
            if shedding:
                kind = shedder.classify(data, source)
                if kind is None:
                    later.append((data, source))
                    continue
                if kind and self._shed(shedder, layer, data, source, now):
                    continue
            layer.receive_message(data, source, now)
        for data, source in later:
            layer.receive_message(data, source, now)

    def _shed(
        self,
        shedder: LoadShedder,
        layer: TransactionLayer,
        data: bytes,
        source: Endpoint,
        now: float,
    ) -> bool:
        """Answers a new ordinary INVITE 503 statelessly; False for the core to
        handle it (it did not parse, or it retransmits one the core holds)."""
        rejected = shedder.reject(data, source, now, layer.transaction)
        if rejected is None:
            return False
        response, destination, request = rejected
        if self.on_response is not None:
            self.on_response(response, now)  # RFC 7339 feedback, as for the core's
        self.transports.send(response.serialize(), destination)
        new_call = self._first_shed(request)
        metrics = self.metrics
        if metrics is not None:
            metrics.sip_request_in("INVITE")
            metrics.sip_response_out(503, "INVITE")
            if new_call:
                metrics.call_shed("unknown", "load")
            else:
                metrics.overload_shed_event("load")
        if new_call:
            self._record_shed(request, source, now)
        return True

    def _first_shed(self, request: Request) -> bool:
        """Whether a shed INVITE starts a call, rather than retransmitting one shed
        before (its 503 was lost): a call is counted and recorded once."""
        headers = request.headers
        transaction = f"{headers.get('Call-ID')}\n{headers.get('Via')}"
        recorded = self._shed_recorded
        if transaction in recorded:
            return False
        if len(recorded) >= SHED_RECORDED_LIMIT:
            del recorded[next(iter(recorded))]
        recorded[transaction] = None
        return True

    def _record_shed(self, request: Request, source: Endpoint, now: float) -> None:
        """Hands a call shed for load to the call sinks (its CDR row). Metrics counted
        it already (``call_shed``)."""
        if not self.call_sinks:
            return
        headers = request.headers
        event = CallEnded(
            call_uuid=new_call_uuid(),
            call_id=headers.get("Call-ID") or "",
            caller=_uri_of(headers.get("From")),
            callee_dialled=request.uri,
            callee_routed="",
            p_asserted_identity=None,
            source=source,
            user_agent=headers.get("User-Agent"),
            setup_at=now,
            ringing_at=None,
            answered_at=None,
            ended_at=now,
            final_status=503,
            final_reason="Service Unavailable",
            disposition="rejected",
            hangup_side="gateway",
            ended_by=EndedBy.GATEWAY,
            emergency=False,
            facts=LOAD_SHED_FACTS,
            attempt=None,
            recording_notice=RecordingNotice.NONE,
            recording_started_at=None,
        )
        for sink in self.call_sinks:
            try:
                sink(event)
            except Exception:
                # As in _call_ended: a failing consumer must not break call handling.
                log.exception("call sink failed for shed call %s", event.call_uuid)

    def _on_heartbeat(self) -> None:
        """Samples the loop lag and the kernel receive queue for load shedding."""
        shedder, loop = self.shedder, self._loop
        assert shedder is not None
        assert loop is not None
        now = loop.time()
        lag = max(0.0, now - self._heartbeat_at)
        queued = self.transports.receive_queue_bytes()
        monitor = shedder.monitor
        changed = monitor.sample(now, lag=lag, receive_queue=queued)
        metrics = self.metrics
        if metrics is not None:
            metrics.overload_sampled(lag, queued)
            if changed:
                metrics.overload_state_changed(monitor.shedding)
        if changed:
            self.transports.read_ahead = self.config.overload.read_ahead if monitor.shedding else 0
        if shedder.shed != self._shed_logged and now - self._shed_logged_at >= SHED_LOG_INTERVAL:
            # One line per interval, not per change: under a steady overload the
            # state may change many times a second.
            log.warning(
                "overload: %d new calls shed (503) since the last report; loop lag"
                " %.0f ms, receive queue %d bytes, %s",
                shedder.shed - self._shed_logged,
                lag * 1000,
                queued,
                monitor.state.value,
            )
            self._shed_logged, self._shed_logged_at = shedder.shed, now
        overload = self.config.overload
        interval = overload.calm_sample_interval if monitor.calm() else overload.sample_interval
        self._heartbeat_at = now + interval
        self._heartbeat = loop.call_at(self._heartbeat_at, self._on_heartbeat)

    def _on_transport_error(self, destination: Endpoint) -> None:
        # May be called from inside transports.send during _pump: defer.
        assert self._loop is not None
        self._loop.call_soon(self._transport_error_now, destination)

    def _transport_error_now(self, destination: Endpoint) -> None:
        if self.layer is None:
            return
        now = self._now()
        self.layer.transport_failed(destination, now)
        self._pump(now)

    def _on_timer(self) -> None:
        self._timer = None
        self._timer_at = None
        core = self._core
        if core is None:  # set in start() with the layer and the B2BUA
            return
        now = self._now()
        core.handle_due(now)
        self._pump(now)

    def _route_done(self, call_uuid: str, decision: RouteResult) -> None:
        if self.b2bua is None:
            return
        now = self._now()
        self._route_decided(call_uuid, decision, now)
        self._pump(now)

    def _route_decided(self, call_uuid: str, decision: RouteResult, now: float) -> None:
        """Hands a call's route to the B2BUA and keeps the count of admitted calls:
        those routed on (B leg, announcement, local answer) and not yet ended."""
        assert self.b2bua is not None
        if not isinstance(decision, Reject) and call_uuid in self.b2bua.calls:
            self._admitted.add(call_uuid)
            if self.on_active_calls is not None:
                self.on_active_calls(len(self._admitted))
            if decision.facts.admission is Admission.BEYOND_RESERVE and self.metrics is not None:
                self.metrics.emergency_call_beyond_reserve()
        self.b2bua.route_decided(call_uuid, decision, now)

    # ------------------------------------------------------------------ pump

    def _pump(self, now: float) -> None:
        assert self._core is not None
        self._schedule_timer(self._core.pump(now))

    def _on_call_event(self, call_event: B2buaEvent, now: float) -> None:
        """Takes one B2BUA event (CorePump.pump calls it): the once-per-call work."""
        b2bua = self.b2bua
        assert b2bua is not None
        if isinstance(call_event, RouteNeeded):
            self._route(call_event, now)
        elif isinstance(call_event, ServiceRequest):
            self._serve(call_event, now)
        elif isinstance(call_event, MediaNeeded):
            if self.media is None:
                # No media stage: the call goes on without the prompt, marked so.
                b2bua.media_ready(call_event.call_uuid, None, None, now)
            else:
                call = b2bua.calls.get(call_event.call_uuid)
                with bound_call_id(call.call_id if call is not None else ""):
                    self.media.prepare(call_event)
        elif isinstance(call_event, MediaAnswered):
            if self.media is not None:
                self.media.answered(call_event)
        elif isinstance(call_event, CallAnswered):
            self._call_answered(call_event)
        elif isinstance(call_event, MessageDone):
            future = self._messages.pop(call_event.transaction, None)
            if future is not None and not future.done():
                future.set_result(call_event)
        else:
            if self.media is not None:
                self.media.ended(call_event.call_uuid)
            self._call_ended(call_event)

    def _route(self, event: RouteNeeded, now: float) -> None:
        assert self.b2bua is not None
        if self.shedder is not None:
            self.shedder.monitor.new_call(now, shed=False)  # RFC 7339 (overload Rule 5)
        if self.draining:
            # RFC 3261 21.5.4: 503 with Retry-After sends callers to another instance.
            retry = (("Retry-After", str(self.config.overload.retry_after)),)
            self._route_decided(
                event.call_uuid,
                Reject(status=503, headers=retry, facts=DRAINING_FACTS),
                now,
            )
            return
        try:
            result = self.router(event)
        except Exception:
            # A bug in a routing hook must cost one call, never the gateway.
            log.exception("routing hook failed for call %s", event.call_uuid)
            self._route_decided(event.call_uuid, self._fallback(event.call_uuid), now)
            return
        if inspect.isawaitable(result):
            # The task copies the context: every log line of the routing carries
            # the call's Call-ID (JSON logs, gateway.ops.logs).
            with bound_call_id(event.request.headers.get("Call-ID") or ""):
                task = asyncio.ensure_future(self._await_route(event.call_uuid, result))
            self._route_tasks.add(task)
            task.add_done_callback(self._route_tasks.discard)
        else:
            self._route_decided(event.call_uuid, result, now)

    def _serve(self, event: ServiceRequest, now: float) -> None:
        assert self.b2bua is not None
        handler = self.services[event.request.method]
        try:
            result = handler(event)
        except Exception:
            # A failing service costs one request (500), never the gateway.
            log.exception("%s handler failed", event.request.method)
            result = build_response(event.request, 500, to_tag=new_token())
        if inspect.isawaitable(result):
            task = asyncio.ensure_future(self._await_service(event, result))
            self._route_tasks.add(task)
            task.add_done_callback(self._route_tasks.discard)
        else:
            self.b2bua.answer(event.transaction, result, now)

    def send_message(
        self, request_uri: str, destination: Endpoint, body: bytes
    ) -> asyncio.Future[MessageDone]:
        """Sends a MESSAGE outside any dialog now (``B2bua.send_message``, RFC 3428);
        nothing waits for it unless the caller awaits the result.

        Args:
            request_uri: the recipient's SIP URI.
            destination: its next hop.
            body: ``text/plain;charset=UTF-8`` content.

        Returns:
            A future of its :class:`MessageDone` (final status, timeout or transport
            error); cancelled if the gateway closes first.

        Raises:
            RuntimeError: the gateway is not started.
        """
        if self.b2bua is None or self._loop is None:
            raise RuntimeError("gateway not started")
        now = self._now()
        future: asyncio.Future[MessageDone] = self._loop.create_future()
        self._messages[self.b2bua.send_message(request_uri, destination, body, now)] = future
        self._pump(now)
        return future

    def media_ready(self, call_uuid: str, answer: bytes | None, b_offer: bytes | None) -> bool:
        """The media stage has the caller's answer SDP; see ``B2bua.media_ready``."""
        if self.b2bua is None:
            return False
        now = self._now()
        play = self.b2bua.media_ready(call_uuid, answer, b_offer, now)
        self._pump(now)
        return play

    def media_inactive(self, call_uuid: str, leg: str) -> None:
        """The media stage heard no RTP from ``leg`` ("a": the caller, "b": the
        callee) for its media timeout; the core decides (``B2bua.media_inactive``)."""
        if self.b2bua is None:
            return
        now = self._now()
        self.b2bua.media_inactive(call_uuid, Side.A if leg == "a" else Side.B, now)
        self._pump(now)

    def announcement_done(self, call_uuid: str, played: bool) -> None:
        """The prompt is over; see ``B2bua.announcement_done``."""
        if self.b2bua is None:
            return
        now = self._now()
        self.b2bua.announcement_done(call_uuid, played, now)
        self._pump(now)

    async def _await_service(self, event: ServiceRequest, pending: Awaitable[Response]) -> None:
        try:
            response = await pending
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("%s handler failed", event.request.method)
            response = build_response(event.request, 500, to_tag=new_token())
        if self.b2bua is None:
            return
        now = self._now()
        self.b2bua.answer(event.transaction, response, now)
        self._pump(now)

    async def _await_route(self, call_uuid: str, pending: Awaitable[RouteResult]) -> None:
        try:
            decision = await pending
        except asyncio.CancelledError:
            raise
        except Exception:
            # A bug in a routing hook must cost one call, never the gateway; an
            # emergency call is still sent on (see emergency_fallback).
            log.exception("routing hook failed for call %s", call_uuid)
            decision = self._fallback(call_uuid)
        self._route_done(call_uuid, decision)

    def _fallback(self, call_uuid: str) -> RouteResult:
        """The route when the routing hook failed: the configured emergency fallback
        for an emergency call (it must never be blocked), else 500."""
        call = self.b2bua.calls.get(call_uuid) if self.b2bua is not None else None
        if call is not None and self.emergency_fallback is not None:
            fallback = self.emergency_fallback(call.a_request)
            if fallback is not None:
                return fallback
        return Reject(status=500)

    def _call_answered(self, event: CallAnswered) -> None:
        for sink in self.answer_sinks:
            try:
                sink(event)
            except Exception:
                # As for ended calls: a failing consumer must not break call handling.
                log.exception("answer sink failed for call %s", event.call_uuid)

    def _call_ended(self, event: CallEnded) -> None:
        self._admitted.discard(event.call_uuid)
        if self.on_active_calls is not None:
            self.on_active_calls(len(self._admitted))
        if self.active_calls == 0:
            self._idle.set()
        if self.metrics is not None:
            observe_call(self.metrics, event)
        for sink in self.call_sinks:
            try:
                sink(event)
            except Exception:
                # A failing consumer (metrics, CDR queue) must not break call handling.
                log.exception("call sink failed for call %s", event.call_uuid)

    def _schedule_timer(self, deadline: float | None) -> None:
        """Keeps one loop timer at (or before) the core's next deadline
        (``CorePump.next_deadline``, rounded so that timers due close together
        share a wake-up).

        A timer already set earlier than the new deadline is kept: it fires, the core
        handles whatever is due (maybe nothing) and this runs again. Only an earlier
        deadline re-arms it, so the hot path does not cancel and re-create a
        TimerHandle per message.
        """
        if deadline is None:
            return  # a stray wake-up later is harmless; nothing to arm now
        if self._timer_at is not None and self._timer_at <= deadline:
            return
        assert self._loop is not None
        if self._timer is not None:
            self._timer.cancel()
        self._timer_at = deadline
        self._timer = self._loop.call_at(deadline, self._on_timer)


def is_auth_challenge(event: CallEnded) -> bool:
    """Whether an INVITE ended with a digest challenge (401/407) from the router.

    RFC 3261 22.2: the caller retries "with the proper credentials" in a new INVITE
    (same Call-ID, higher CSeq). That INVITE is the call; the challenged one is not a
    call of its own, neither in the CDRs nor in ``voipgw_calls_total``. A 403 for
    wrong credentials is a refused call and stays one.
    """
    return event.facts.auth_challenged and event.final_status in (401, 407)


def observe_call(metrics: Metrics, event: CallEnded) -> None:
    """Counts a finished call: outcome, setup delay and, for emergency calls, the
    emergency outcome by class, policy and centre. A call a sibling relayed here as
    its callee's flow owner counts only as relayed (the sibling counts the call)."""
    if is_auth_challenge(event):
        metrics.call_challenged()
        return
    facts = event.facts
    relay = facts.flow_relay
    if relay is not None:
        metrics.call_relayed(relay.value.replace("-", "_"))
        if relay is FlowRelay.FROM_SIBLING:
            # The sibling that relayed the call here counts it, as its CDR is the one
            # that bills it (FlowRelay): summed over processes, each call counts once.
            return
    call_class = facts.call_class.value
    outcome = event.disposition.replace("-", "_")
    if facts.shed is not None:
        metrics.call_shed(call_class, facts.shed.value)
    else:
        metrics.call_ended(call_class, outcome)
    if facts.caller_id is not None and facts.caller_id_reason is not None:
        metrics.caller_id_decided(
            facts.direction.value,
            facts.caller_id.value,
            facts.caller_id_reason.value,
            facts.customer_id,
        )
    if event.ringing_at is not None:
        # RFC 6076 session request delay: INVITE received -> first ringing/answer.
        metrics.call_setup_observed(call_class, event.emergency, event.ringing_at - event.setup_at)
    if event.emergency:
        metrics.emergency_call(
            call_class,
            facts.emergency_policy or "none",
            facts.centre_of(event.attempt) or "none",
            outcome,
        )
        metrics.emergency_location(facts.unverified_location, facts.device_location_ignored)


class UpstreamRouter:
    """The default routing hook: every call to the configured upstream next hop.

    An IP-literal upstream needs no lookup, so its route is computed once and the
    decision is synchronous; a host name is resolved per call with RFC 3263 (the
    resolver caches by TTL).
    """

    def __init__(self, config: GatewayConfig) -> None:
        self.uri = config.upstream.uri
        literal = ip_literal_endpoint(self.uri)
        self.static = Route(targets=(literal,)) if literal is not None else None

    def __call__(self, event: RouteNeeded) -> RouteResult | Awaitable[RouteResult]:
        if self.static is not None:
            return self.static
        return resolve_route(self.uri)


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def ip_literal_endpoint(uri_text: str) -> Endpoint | None:
    """The transport address of a SIP URI whose host is an IP literal (no lookup
    needed, RFC 3263 4.2), or None for a host name or a non-SIP URI."""
    from gateway.sip.errors import ParseError
    from gateway.sip.uri import SipUri, parse_uri

    try:
        uri = parse_uri(uri_text)
    except ParseError:
        return None
    if not isinstance(uri, SipUri) or not _is_ip(uri.host):
        return None
    transport = (uri.transport or ("tls" if uri.scheme == "sips" else "udp")).upper()
    default_port = 5061 if transport == "TLS" else 5060
    return Endpoint(transport, uri.host, uri.port or default_port)


#: One resolver for the process, so DNS answers are cached by TTL across calls.
_RESOLVER: Any = None


async def resolve_endpoints(uri_text: str) -> tuple[Endpoint, ...]:
    """Resolves a next-hop SIP URI to transport addresses in failover order.

    An IP-literal host needs no lookup; a host name goes through RFC 3263
    (NAPTR/SRV/A/AAAA) with the process-wide caching resolver.

    Raises:
        ValueError: the text is not a SIP URI.
        gateway.sip.errors.TransportError: the name does not resolve.
    """
    global _RESOLVER
    from gateway.sip.uri import SipUri, parse_uri
    from gateway.transport.resolver import SipResolver

    uri = parse_uri(uri_text)
    if not isinstance(uri, SipUri):
        raise ValueError(f"next hop is not a SIP URI: {uri_text!r}")
    literal = ip_literal_endpoint(uri_text)
    if literal is not None:
        return (literal,)
    if _RESOLVER is None:
        _RESOLVER = SipResolver()
    targets = await _RESOLVER.resolve(
        scheme=uri.scheme, host=uri.host, port=uri.port, transport=uri.transport
    )
    return tuple(Endpoint(t.transport, t.address, t.port) for t in targets)


async def resolve_route(uri: Any) -> RouteResult:
    """The default route for a next hop given by name (RFC 3263 targets in order)."""
    from gateway.sip.errors import TransportError

    try:
        targets = await resolve_endpoints(str(uri))
    except TransportError as exc:
        log.warning("cannot resolve %s: %s", uri, exc)
        return Reject(status=502, reason="Next Hop Unresolvable")
    return Route(targets=targets)


def _tls_server_context(config: GatewayConfig) -> ssl.SSLContext | None:
    tls = config.sip.tls
    if not (tls.certificate and tls.private_key):
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(tls.certificate, tls.private_key)
    if tls.ca_file:
        context.load_verify_locations(tls.ca_file)
    if tls.verify_client:
        context.verify_mode = ssl.CERT_REQUIRED
    return context


def _tls_client_context(config: GatewayConfig) -> ssl.SSLContext | None:
    tls = config.sip.tls
    if not tls.ca_file:
        return None
    context = ssl.create_default_context(cafile=tls.ca_file)
    if tls.certificate and tls.private_key:
        context.load_cert_chain(tls.certificate, tls.private_key)
    return context
