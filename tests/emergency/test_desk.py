"""gateway/service/desk.py: the notice's text, and the delivery's outcomes with a
stand-in SIP core (the wire is tested in test_desk_e2e.py and test_b2bua_message.py)."""

from __future__ import annotations

import asyncio
import datetime as dt
from dataclasses import replace

import pytest

from gateway.b2bua import MessageDone
from gateway.ops.metrics import Metrics
from gateway.service import desk as desk_module
from gateway.service.desk import DeskOutcome, SecurityDesk, desk_text, notify_all
from gateway.sip.errors import TransportError
from gateway.sip.events import Endpoint, TransactionKey
from routing.config import NomadicPolicy, RoutingConfig
from routing.decision import RoutingDecision
from routing.directory import Directory
from routing.model import CallContext, Language
from routing.policy import decide
from tests.routing.data import ctx, demo_directory

NOW = dt.datetime(2026, 11, 22, 14, 56, 30, 123000, tzinfo=dt.UTC)
DESK = Endpoint("UDP", "127.0.70.1", 5070)


def routed(source: str, user: str | None) -> tuple[RoutingDecision, CallContext, Directory]:
    directory = demo_directory()
    call = replace(ctx(directory, source, user, dialled="tel:112"), call_id="c-1@phone")
    config = RoutingConfig(nomadic_policy=NomadicPolicy.ROUTE)
    return decide(call, directory, config), call, directory


def test_office_text_names_caller_site_address_and_callback_in_finnish() -> None:
    """Setera's language is fi (deploy/demo/sites.toml): its desk reads Finnish."""
    decision, call, directory = routed("127.0.10.5", "alice")
    assert desk_text(decision, call, directory, now=NOW) == (
        "HÄTÄPUHELU 112\n"
        "Soittaja: Alice (desk phone), +358401000001 (SIP-käyttäjä alice)\n"
        "Asiakas: Setera Communications Oy\n"
        "Sijainti: Setera head office, Espoo (setera-espoo), Metsänneidonkuja 12, 02130 Espoo,"
        " FI\n"
        "Takaisinsoitto: +358401000001\n"
        "Hätäkeskus: kerava\n"
        "Aika: 2026-11-22T14:56:30Z\n"
        "Call-ID: c-1@phone\n"
    )


def in_language(directory: Directory, language: Language) -> Directory:
    """The directory with Setera's language changed."""
    customers = dict(directory.customers)
    customers["setera"] = replace(customers["setera"], language=language)
    return replace(directory, customers=customers)


@pytest.mark.parametrize(
    ("language", "expected"),
    [
        (Language.EN, [
            "EMERGENCY CALL 112",
            "Caller: Bob (softphone), +358401000002 (sip user bob)",
            "Customer: Setera Communications Oy",
            "Where: location not verified (nomadic use)",
            "Callback: +358401000002",
            "Centre: national",
        ]),
        (Language.SV, [
            "NÖDSAMTAL 112",
            "Uppringare: Bob (softphone), +358401000002 (SIP-användare bob)",
            "Kund: Setera Communications Oy",
            "Plats: platsen är inte verifierad (nomadisk användning)",
            "Återuppringning: +358401000002",
            "Nödcentral: national",
        ]),
        (Language.FI, [
            "HÄTÄPUHELU 112",
            "Soittaja: Bob (softphone), +358401000002 (SIP-käyttäjä bob)",
            "Asiakas: Setera Communications Oy",
            "Sijainti: sijaintia ei ole varmennettu (etäkäyttö)",
            "Takaisinsoitto: +358401000002",
            "Hätäkeskus: national",
        ]),
    ],
)  # fmt: skip
def test_nomadic_text_in_each_language_says_not_verified(
    language: Language, expected: list[str]
) -> None:
    decision, call, directory = routed("127.0.30.7", "bob")
    text = desk_text(decision, call, in_language(directory, language), now=NOW)
    assert text.splitlines()[:6] == expected
    assert "Metsänneidonkuja" not in text


@pytest.mark.parametrize(
    ("language", "caller", "callback"),
    [
        (Language.EN, "Caller: unknown caller from 127.0.10.9", "Callback: none (unknown caller)"),
        (Language.SV, "Uppringare: okänd uppringare från 127.0.10.9",
         "Återuppringning: inget nummer (okänd uppringare)"),
        (Language.FI, "Soittaja: tuntematon soittaja osoitteesta 127.0.10.9",
         "Takaisinsoitto: ei numeroa (tuntematon soittaja)"),
    ],
)  # fmt: skip
def test_unknown_caller_on_the_office_lan_in_each_language(
    language: Language, caller: str, callback: str
) -> None:
    decision, call, directory = routed("127.0.10.9", None)
    lines = desk_text(decision, call, in_language(directory, language), now=NOW).splitlines()
    assert caller in lines and callback in lines


def test_every_language_has_words() -> None:
    assert set(desk_module.DESK_WORDS) == set(Language)


def test_unknown_caller_and_hostile_call_id() -> None:
    decision, call, directory = routed("127.0.0.9", None)
    call = replace(call, call_id="x\r\nInjected: 1" + "y" * 2000)
    text = desk_text(decision, call, directory, now=NOW)
    assert "Caller: unknown caller from 127.0.0.9\n" in text  # no customer: English
    assert "Callback: none (unknown caller)\n" in text
    assert "\r" not in text and "\nInjected" not in text
    assert len(text.encode()) <= desk_module.MAX_TEXT_BYTES


class Core:
    """Stands in for Gateway.send_message: answers each MESSAGE with ``done``."""

    def __init__(self, status: int | None, reason: str) -> None:
        self.status, self.reason = status, reason
        self.sent: list[tuple[str, Endpoint, bytes]] = []

    async def __call__(self, uri: str, destination: Endpoint, body: bytes) -> MessageDone:
        self.sent.append((uri, destination, body))
        key = TransactionKey(f"z9hG4bK{len(self.sent)}", "", "MESSAGE", False)
        return MessageDone(transaction=key, status=self.status, reason=self.reason)


async def resolve(uri: str) -> tuple[Endpoint, ...]:
    return (DESK,)


async def deliver_one(desk: SecurityDesk, core: Core, wanted: DeskOutcome) -> None:
    task = asyncio.create_task(desk.deliver_forever(core))
    try:
        async with asyncio.timeout(5):
            while desk.outcomes[wanted] == 0:  # noqa: ASYNC110 (counted by the delivery task)
                await asyncio.sleep(0)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("status", "reason", "outcome"),
    [
        (200, "OK", DeskOutcome.DELIVERED),
        (202, "Accepted", DeskOutcome.DELIVERED),
        (404, "Not Found", DeskOutcome.REJECTED),
        (None, "timeout", DeskOutcome.TIMEOUT),
        (None, "transport error", DeskOutcome.UNREACHABLE),
    ],
)
async def test_outcomes_counted(status: int | None, reason: str, outcome: DeskOutcome) -> None:
    decision, call, directory = routed("127.0.10.5", "alice")
    metrics = Metrics.__new__(Metrics)
    counted: list[str] = []
    metrics.emergency_desk_message = counted.append  # type: ignore[method-assign]
    desk = SecurityDesk(
        directory=lambda: directory, resolve=resolve, metrics=metrics, clock=lambda: NOW
    )
    desk(decision, call)
    assert desk.queued == 1
    core = Core(status, reason)
    await deliver_one(desk, core, outcome)
    ((uri, destination, body),) = core.sent
    assert (uri, destination) == ("sip:desk@127.0.70.1:5070", DESK)
    assert body == desk_text(decision, call, directory, now=NOW).encode()
    assert counted == [outcome.value]


@pytest.mark.asyncio
async def test_unresolvable_desk_is_unreachable() -> None:
    decision, call, directory = routed("127.0.10.5", "alice")

    async def fails(uri: str) -> tuple[Endpoint, ...]:
        raise TransportError("no such host")

    desk = SecurityDesk(directory=lambda: directory, resolve=fails)
    desk(decision, call)
    core = Core(200, "OK")
    await deliver_one(desk, core, DeskOutcome.UNREACHABLE)
    assert core.sent == []


@pytest.mark.asyncio
async def test_no_desk_no_notice_and_a_full_queue_drops(monkeypatch: pytest.MonkeyPatch) -> None:
    decision, call, directory = routed("127.0.40.5", "frank")  # Esimerkki: no desk
    desk = SecurityDesk(directory=lambda: directory, resolve=resolve)
    desk(decision, call)
    assert desk.queued == 0
    monkeypatch.setattr(desk_module, "QUEUE_SIZE", 1)
    decision, call, directory = routed("127.0.10.5", "alice")
    small = SecurityDesk(directory=lambda: directory, resolve=resolve)
    small(decision, call)
    small(decision, call)  # returns at once: nobody delivers, the queue is full
    assert small.queued == 1
    assert small.outcomes[DeskOutcome.DROPPED] == 1


def test_notify_all_isolates_a_failing_hook() -> None:
    decision, call, _ = routed("127.0.10.5", "alice")
    told: list[str] = []

    def broken(decision: RoutingDecision, ctx: CallContext) -> None:
        raise RuntimeError("webhook bug")

    hook = notify_all(broken, None, lambda d, c: told.append(c.call_id))
    assert hook is not None
    hook(decision, call)
    assert told == ["c-1@phone"]
    assert notify_all(None, None) is None


class Hops:
    """Stands in for Gateway.send_message with one behaviour per next hop: a final
    status, None and a reason (Timer F, a transport error), or "silent" (never
    answers: the attempt's own timeout ends it)."""

    def __init__(self, answers: dict[Endpoint, tuple[int | None, str] | str]) -> None:
        self.answers = answers
        self.sent: list[Endpoint] = []

    async def __call__(self, uri: str, destination: Endpoint, body: bytes) -> MessageDone:
        self.sent.append(destination)
        answer = self.answers[destination]
        if answer == "silent":
            await asyncio.sleep(3600)
        assert isinstance(answer, tuple)
        key = TransactionKey(f"z9hG4bK{len(self.sent)}", "", "MESSAGE", False)
        return MessageDone(transaction=key, status=answer[0], reason=answer[1])


HOP = [Endpoint("UDP", "127.0.70.1", 5070 + i) for i in range(4)]


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("answers", "tried", "outcome"),
    [
        # The first desk host is silent: the second gets it within ATTEMPT_TIMEOUT.
        ({HOP[0]: "silent", HOP[1]: (200, "OK")}, 2, DeskOutcome.DELIVERED),
        ({HOP[0]: (503, "Busy"), HOP[1]: (200, "OK")}, 2, DeskOutcome.DELIVERED),
        ({HOP[0]: (None, "transport error"), HOP[1]: (200, "OK")}, 2, DeskOutcome.DELIVERED),
        ({HOP[0]: (None, "timeout"), HOP[1]: (408, "Request Timeout"), HOP[2]: (200, "OK")}, 3,
         DeskOutcome.DELIVERED),
        # A 4xx is the desk's own answer: no failover.
        ({HOP[0]: (404, "Not Found"), HOP[1]: (200, "OK")}, 1, DeskOutcome.REJECTED),
        # Bounded: the fourth next hop is never tried; the last failure is the outcome.
        ({HOP[0]: (500, "x"), HOP[1]: (502, "x"), HOP[2]: (None, "timeout"),
          HOP[3]: (200, "OK")}, 3, DeskOutcome.TIMEOUT),
    ],
    ids=["silent-then-ok", "503-then-ok", "transport-then-ok", "timeout-408-ok", "404-final",
         "bounded"],
)  # fmt: skip
async def test_failover_to_the_next_next_hop(
    monkeypatch: pytest.MonkeyPatch,
    answers: dict[Endpoint, tuple[int | None, str] | str],
    tried: int,
    outcome: DeskOutcome,
) -> None:
    monkeypatch.setattr(desk_module, "ATTEMPT_TIMEOUT", 0.05)
    decision, call, directory = routed("127.0.10.5", "alice")

    async def resolve_all(uri: str) -> tuple[Endpoint, ...]:
        return tuple(answers)

    failovers: list[None] = []
    metrics = Metrics.__new__(Metrics)
    metrics.emergency_desk_message = lambda outcome: None  # type: ignore[method-assign]
    metrics.emergency_desk_failover = lambda: failovers.append(None)  # type: ignore[method-assign]
    desk = SecurityDesk(directory=lambda: directory, resolve=resolve_all, metrics=metrics)
    desk(decision, call)
    hops = Hops(answers)
    await deliver_one(desk, hops, outcome)
    assert hops.sent == list(answers)[:tried]
    assert len(failovers) == tried - 1
    assert sum(desk.outcomes.values()) == 1
