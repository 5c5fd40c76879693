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
from routing.model import CallContext
from routing.policy import decide
from tests.routing.data import ctx, demo_directory

NOW = dt.datetime(2026, 11, 22, 14, 56, 30, 123000, tzinfo=dt.UTC)
DESK = Endpoint("UDP", "127.0.70.1", 5070)


def routed(source: str, user: str | None) -> tuple[RoutingDecision, CallContext, Directory]:
    directory = demo_directory()
    call = replace(ctx(directory, source, user, dialled="tel:112"), call_id="c-1@phone")
    config = RoutingConfig(nomadic_policy=NomadicPolicy.ROUTE)
    return decide(call, directory, config), call, directory


def test_office_text_names_caller_site_address_and_callback() -> None:
    decision, call, directory = routed("127.0.10.5", "alice")
    assert desk_text(decision, call, directory, now=NOW) == (
        "EMERGENCY CALL 112\n"
        "Caller: Alice (desk phone), +358401000001 (sip user alice)\n"
        "Customer: Setera Communications Oy\n"
        "Where: Setera head office, Espoo (setera-espoo), Metsänneidonkuja 12, 02130 Espoo, FI\n"
        "Callback: +358401000001\n"
        "Centre: kerava\n"
        "Time: 2026-11-22T14:56:30Z\n"
        "Call-ID: c-1@phone\n"
    )


def test_nomadic_text_says_not_verified_and_sends_no_address() -> None:
    decision, call, directory = routed("127.0.30.7", "bob")
    text = desk_text(decision, call, directory, now=NOW)
    assert "Where: location not verified (nomadic use)\n" in text
    assert "Callback: +358401000002\n" in text
    assert "Metsänneidonkuja" not in text


def test_unknown_caller_and_hostile_call_id() -> None:
    decision, call, directory = routed("127.0.0.9", None)
    call = replace(call, call_id="x\r\nInjected: 1" + "y" * 2000)
    text = desk_text(decision, call, directory, now=NOW)
    assert "Caller: unknown caller from 127.0.0.9\n" in text
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
