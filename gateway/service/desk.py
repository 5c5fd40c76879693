"""The security desk's notice of an emergency call, as a SIP MESSAGE (RFC 3428).

Beside the webhook (notify.py), a customer may name a security desk in the routing
data (``security_desk``, a ``sip:``/``sips:`` URI of its customer record): the
reception or guard who must open the door and show the ambulance the way. At the
moment an emergency call is routed the desk gets one MESSAGE saying who called, from
where and the callback number (:func:`desk_text`).

* Rule 1: the notice never delays the call. :class:`SecurityDesk` is (part of) the
  ``notify`` hook of :class:`gateway.service.router.CallRouter`: it builds the text
  (microseconds) and puts it on a bounded queue with ``put_nowait``; a full queue
  drops the notice and counts it, never waits.
* Rule 2: :meth:`SecurityDesk.deliver_forever` takes each notice, resolves the desk
  URI to its next hops (RFC 3263, the router's ``resolve``: NAPTR/SRV/A in failover
  order, bounded by :data:`RESOLVE_TIMEOUT`) and hands it to the SIP core
  (``Gateway.send_message``: a non-INVITE client transaction of the B2BUA,
  gateway/b2bua/message.py). Each notice is a task of its own, so a desk that never
  answers holds up no other notice.
* Rule 3: failover (RFC 3263 section 4.3, widened to every 5xx and 408). An attempt
  that gets no final response within :data:`ATTEMPT_TIMEOUT`, fails at the
  transport, or is answered 5xx/408 moves to the next next hop, at most
  :data:`MAX_ATTEMPTS` in all. The last attempt waits for its transaction's own end,
  Timer F (64*T1, RFC 3261 17.1.2.2), retransmitted over UDP (Timer E) meanwhile. An
  abandoned attempt cannot be called back (a non-INVITE has no CANCEL): its
  retransmissions run on to Timer F, and a desk that answers it late gets the notice
  twice, which beats getting it never. Nothing is retried after that: a notice
  minutes late would mislead more than help.
* Rule 4: each outcome is logged (info when delivered, warning otherwise) and counted,
  ``voipgw_emergency_desk_messages_total{outcome}`` (:class:`DeskOutcome`, one per
  notice), and each move to the next next hop in
  ``voipgw_emergency_desk_failovers_total``.

The text is in the customer's language (``language`` of the customer, the one its
nomadic warning prompt is played in: fi, sv or en; :data:`DESK_WORDS`). In English
(``text/plain;charset=UTF-8``)::

    EMERGENCY CALL 112
    Caller: Alice Example, +358401000001 (sip user alice)
    Customer: Setera Communications Oy
    Where: Espoo head office (setera-espoo), Metsänneidonkuja 12, 02130 Espoo, FI
    Callback: +358401000001
    Centre: kerava
    Time: 2026-11-22T14:56:30Z
    Call-ID: ...

In Finnish the lines are ``HÄTÄPUHELU``, ``Soittaja``, ``Asiakas``, ``Sijainti``,
``Takaisinsoitto``, ``Hätäkeskus``, ``Aika``; in Swedish ``NÖDSAMTAL``,
``Uppringare``, ``Kund``, ``Plats``, ``Återuppringning``, ``Nödcentral``, ``Tid``.
A nomadic call says ``Where: location not verified (nomadic use)``: the gateway does
not know where the caller is and must not pretend it does.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import enum
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from gateway.b2bua import MessageDone
from gateway.ops.metrics import Metrics
from gateway.sip.errors import SipError
from gateway.sip.events import Endpoint
from routing.decision import RoutingDecision
from routing.directory import Directory
from routing.model import CallClass, CallContext, Language

log = logging.getLogger("voipgw.desk")

#: Notices waiting for delivery; more are dropped (Rule 1).
QUEUE_SIZE = 1000
#: Seconds the desk URI's next-hop lookup may take before the notice is given up.
RESOLVE_TIMEOUT = 5.0
#: Longest text sent, in bytes: RFC 3428 section 7 asks MESSAGEs over UDP to stay
#: under 1300 bytes; the headers take the rest.
MAX_TEXT_BYTES = 900
#: Most next hops one notice is offered to (Rule 3): a desk domain listing many
#: dead hosts must not keep a notice going for minutes.
MAX_ATTEMPTS = 3
#: Seconds an attempt that has a next hop after it waits for a final response before
#: that one is tried (Rule 3); a desk that is up answers in milliseconds, and UDP has
#: retransmitted the MESSAGE three times by then (T1 = 0.5 s).
ATTEMPT_TIMEOUT = 4.0
#: Final statuses after which the next next hop is tried (Rule 3): RFC 3263 4.3 names
#: 503; any 5xx says the server, not the desk's user, failed, and 408 that it timed out.
FAILOVER_STATUSES = frozenset({408, *range(500, 600)})

#: Hands one MESSAGE to the SIP core: (desk URI, next hop, body) -> its outcome.
SendMessage = Callable[[str, Endpoint, bytes], Awaitable[MessageDone]]
#: Desk URI -> transport addresses in failover order (the router's ``resolve``).
Resolve = Callable[[str], Awaitable[tuple[Endpoint, ...]]]


class DeskOutcome(enum.StrEnum):
    """What became of one notice (the metric's ``outcome`` label)."""

    DELIVERED = "delivered"
    """The desk answered 2xx."""
    REJECTED = "rejected"
    """The desk (or a proxy) answered an error status."""
    TIMEOUT = "timeout"
    """No final response before Timer F."""
    UNREACHABLE = "unreachable"
    """The URI did not resolve, or the transport to it failed."""
    DROPPED = "dropped"
    """Too many notices pending (Rule 1)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class DeskWords:
    """The notice's words in one language (a translation table, not a template: the
    order of the lines is :func:`desk_text`'s)."""

    title: str
    caller: str
    customer: str
    where: str
    callback: str
    centre: str
    time: str
    unknown_caller: str
    """"{source}" is the address the call came from."""
    not_verified: str
    """The location is not verified; "{use}" is :attr:`office_use` or :attr:`nomadic_use`."""
    site_not_verified: str
    office_use: str
    nomadic_use: str
    no_callback: str
    sip_user: str


#: The customer's language -> the notice's words (fi, sv, en: routing.model.Language).
DESK_WORDS: dict[Language, DeskWords] = {
    Language.EN: DeskWords(
        title="EMERGENCY CALL",
        caller="Caller",
        customer="Customer",
        where="Where",
        callback="Callback",
        centre="Centre",
        time="Time",
        unknown_caller="unknown caller from {source}",
        not_verified="location not verified ({use})",
        site_not_verified="location not verified",
        office_use="office use",
        nomadic_use="nomadic use",
        no_callback="none (unknown caller)",
        sip_user="sip user",
    ),
    Language.FI: DeskWords(
        title="HÄTÄPUHELU",
        caller="Soittaja",
        customer="Asiakas",
        where="Sijainti",
        callback="Takaisinsoitto",
        centre="Hätäkeskus",
        time="Aika",
        unknown_caller="tuntematon soittaja osoitteesta {source}",
        not_verified="sijaintia ei ole varmennettu ({use})",
        site_not_verified="sijaintia ei ole varmennettu",
        office_use="toimistokäyttö",
        nomadic_use="etäkäyttö",
        no_callback="ei numeroa (tuntematon soittaja)",
        sip_user="SIP-käyttäjä",
    ),
    Language.SV: DeskWords(
        title="NÖDSAMTAL",
        caller="Uppringare",
        customer="Kund",
        where="Plats",
        callback="Återuppringning",
        centre="Nödcentral",
        time="Tid",
        unknown_caller="okänd uppringare från {source}",
        not_verified="platsen är inte verifierad ({use})",
        site_not_verified="platsen är inte verifierad",
        office_use="kontorsanvändning",
        nomadic_use="nomadisk användning",
        no_callback="inget nummer (okänd uppringare)",
        sip_user="SIP-användare",
    ),
}


@dataclass(frozen=True, slots=True, kw_only=True)
class DeskNotice:
    """One MESSAGE to send.

    Attributes:
        uri: the desk's SIP URI (Request-URI and To).
        text: the message, UTF-8 when sent.
        call_id: the emergency call's Call-ID (logs only).
    """

    uri: str
    text: str
    call_id: str


def desk_text(
    decision: RoutingDecision, ctx: CallContext, directory: Directory, *, now: dt.datetime
) -> str:
    """The notice of one emergency call, for people (see the module docstring), in
    its customer's language (English when the customer is unknown).

    Args:
        decision: the routing decision (an emergency call's).
        ctx: the call.
        directory: the routing data (the customer's and the site's names).
        now: when the call was routed (aware datetime).

    Returns:
        The text, at most :data:`MAX_TEXT_BYTES` bytes of UTF-8.
    """
    facts = decision.facts
    customer = directory.customers.get(facts.customer_id)
    words = DESK_WORDS[customer.language if customer is not None else Language.EN]
    match = facts.emergency
    dialled = (match.number or match.service_urn) if match is not None else ctx.dialled
    subscriber = ctx.subscriber
    if subscriber is not None:
        name = f"{subscriber.display_name}, " if subscriber.display_name else ""
        caller = f"{name}{subscriber.e164} ({words.sip_user} {subscriber.sip_user})"
    else:
        caller = words.unknown_caller.format(source=ctx.source)
    location = decision.location
    site = directory.sites.get(facts.site_id) if facts.site_id else None
    if location is not None and location.verified and location.address is not None:
        place = location.address.one_line()
        where = f"{site.name} ({site.id}), {place}" if site is not None else place
    else:
        use = words.office_use if decision.call_class is CallClass.OFFICE else words.nomadic_use
        where = words.not_verified.format(use=use)
        if decision.call_class is CallClass.OFFICE and site is not None:
            where = f"{site.name} ({site.id}), {words.site_not_verified}"
    callback = facts.callback.removeprefix("tel:") if facts.callback else words.no_callback
    centres = [t.centre_id for t in decision.targets if t.centre_id]
    company = customer.company if customer is not None else facts.customer_id or "-"
    when = now.astimezone(dt.UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
    lines = [
        f"{words.title} {dialled}",
        f"{words.caller}: {caller}",
        f"{words.customer}: {company}",
        f"{words.where}: {where}",
        f"{words.callback}: {callback}",
        f"{words.centre}: {centres[0] if centres else decision.action.value}",
        f"{words.time}: {when}",
        f"Call-ID: {ctx.call_id}",
    ]
    text = "\n".join(_printable(line) for line in lines) + "\n"
    encoded = text.encode("utf-8")
    if len(encoded) > MAX_TEXT_BYTES:
        text = encoded[:MAX_TEXT_BYTES].decode("utf-8", "ignore")
    return text


def _printable(line: str) -> str:
    # Names come from data and the Call-ID from the caller: no control characters.
    return "".join(ch if ch.isprintable() else "?" for ch in line)


class SecurityDesk:
    """Sends each emergency call's notice to its customer's security desk.

    The ``__call__`` is a ``notify`` hook of :class:`gateway.service.router.CallRouter`
    (Rule 1); :meth:`deliver_forever` runs on the gateway's loop with the SIP core's
    ``send_message`` (Rule 2).

    Args:
        directory: returns the current routing data (the customer's desk URI).
        resolve: desk URI -> next hops (RFC 3263).
        metrics: where outcomes are counted (None: only logged).
        clock: the current wall time (tests pass a fixed one).

    Attributes:
        queued: notices queued so far (one per emergency call of a customer with a
            desk, unless dropped).
        outcomes: notices by outcome so far (tests and the status view).
    """

    def __init__(
        self,
        *,
        directory: Callable[[], Directory],
        resolve: Resolve,
        metrics: Metrics | None = None,
        clock: Callable[[], dt.datetime] | None = None,
    ) -> None:
        self.directory = directory
        self.resolve = resolve
        self.metrics = metrics
        self._clock = clock or (lambda: dt.datetime.now(dt.UTC))
        self._queue: asyncio.Queue[DeskNotice] = asyncio.Queue(QUEUE_SIZE)
        self._tasks: set[asyncio.Task[None]] = set()
        self.queued = 0
        self.outcomes: dict[DeskOutcome, int] = dict.fromkeys(DeskOutcome, 0)

    def __call__(self, decision: RoutingDecision, ctx: CallContext) -> None:
        """Queues the notice of one emergency call when its customer has a desk;
        returns at once.

        Args:
            decision: the routing decision.
            ctx: the call.
        """
        directory = self.directory()
        customer = directory.customers.get(decision.facts.customer_id)
        if customer is None or customer.security_desk is None:
            return
        text = desk_text(decision, ctx, directory, now=self._clock())
        notice = DeskNotice(uri=customer.security_desk, text=text, call_id=ctx.call_id)
        try:
            self._queue.put_nowait(notice)
            self.queued += 1
        except asyncio.QueueFull:
            # Rule 1: a backlog of notices must never slow an emergency call.
            self._outcome(notice, DeskOutcome.DROPPED, "queue full")

    async def deliver_forever(self, send: SendMessage) -> None:
        """Delivers queued notices until cancelled, each in a task of its own.

        Args:
            send: the SIP core's ``send_message`` (``Gateway.send_message``).
        """
        try:
            while True:
                notice = await self._queue.get()
                task = asyncio.create_task(self._deliver(notice, send))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
        finally:
            for task in list(self._tasks):
                task.cancel()

    async def _deliver(self, notice: DeskNotice, send: SendMessage) -> None:
        try:
            async with asyncio.timeout(RESOLVE_TIMEOUT):
                endpoints = await self.resolve(notice.uri)
        except (OSError, ValueError, SipError, TimeoutError) as exc:
            self._outcome(notice, DeskOutcome.UNREACHABLE, f"no next hop: {exc}")
            return
        hops = endpoints[:MAX_ATTEMPTS]
        if not hops:
            self._outcome(notice, DeskOutcome.UNREACHABLE, "no next hop")
            return
        body = notice.text.encode("utf-8")
        for attempt, hop in enumerate(hops, 1):
            last = attempt == len(hops)
            outcome, fail_over, detail = await _attempt(notice.uri, hop, body, send, last=last)
            if not fail_over or last:
                self._outcome(notice, outcome, detail)
                return
            if self.metrics is not None:
                self.metrics.emergency_desk_failover()
            log.warning(
                "call %s: security desk %s: %s via %s, trying the next next hop (%d of %d)",
                notice.call_id,
                notice.uri,
                detail,
                hop,
                attempt + 1,
                len(hops),
            )

    def _outcome(self, notice: DeskNotice, outcome: DeskOutcome, detail: str) -> None:
        self.outcomes[outcome] += 1
        if self.metrics is not None:
            self.metrics.emergency_desk_message(outcome.value)
        level = logging.INFO if outcome is DeskOutcome.DELIVERED else logging.WARNING
        log.log(
            level,
            "call %s: security desk %s: %s (%s)",
            notice.call_id,
            notice.uri,
            outcome.value,
            detail,
        )


async def _attempt(
    uri: str, hop: Endpoint, body: bytes, send: SendMessage, *, last: bool
) -> tuple[DeskOutcome, bool, str]:
    """One MESSAGE to one next hop (Rule 3).

    Args:
        uri: the desk's URI.
        hop: the next hop to send it to.
        body: the text.
        send: the SIP core's ``send_message``.
        last: no next hop is left: wait for the transaction's own end (Timer F)
            rather than :data:`ATTEMPT_TIMEOUT`.

    Returns:
        (the notice's outcome should it end here, whether to try the next next hop,
        what happened in a few words).
    """
    try:
        if last:
            done = await send(uri, hop, body)
        else:
            async with asyncio.timeout(ATTEMPT_TIMEOUT):
                done = await send(uri, hop, body)
    except TimeoutError:
        return DeskOutcome.TIMEOUT, True, f"no final response in {ATTEMPT_TIMEOUT:g} s"
    if done.status is None:
        timed_out = done.reason == "timeout"
        return DeskOutcome.TIMEOUT if timed_out else DeskOutcome.UNREACHABLE, True, done.reason
    detail = f"{done.status} {done.reason}"
    if 200 <= done.status < 300:
        return DeskOutcome.DELIVERED, False, detail
    return DeskOutcome.REJECTED, done.status in FAILOVER_STATUSES, detail


def notify_all(
    *hooks: Callable[[RoutingDecision, CallContext], None] | None,
) -> Callable[[RoutingDecision, CallContext], None] | None:
    """One ``notify`` hook telling each of ``hooks`` (None ones left out); a hook
    that raises costs only its own notice.

    Returns:
        The combined hook, or None when no hook is given.
    """
    present = [hook for hook in hooks if hook is not None]
    if not present:
        return None

    def notify(decision: RoutingDecision, ctx: CallContext) -> None:
        for hook in present:
            try:
                hook(decision, ctx)
            except Exception:
                # Best effort: one failing notice must not cost the others or the call.
                log.exception("emergency notification failed for %s", ctx.call_id)

    return notify


__all__ = ["DeskNotice", "DeskOutcome", "SecurityDesk", "desk_text", "notify_all"]
