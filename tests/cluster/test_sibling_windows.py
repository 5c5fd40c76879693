"""gateway/cluster/callbacks.py Rule 5: the worker processes of one machine honour
each other's callback windows without PostgreSQL (a file per number they share)."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.cluster.callbacks import CALLBACK_WINDOW, EmergencyCallbacks, SiblingWindows
from gateway.sip.events import Endpoint
from tests.test_callrouter import Clock

pytestmark = [pytest.mark.asyncio]

ALICE = "358401000001"
PHONE = Endpoint("UDP", "127.0.10.5", 5062)


def files_in(directory: Path) -> list[Path]:
    return list(directory.iterdir())


def workers(directory: Path, clock: Clock) -> tuple[EmergencyCallbacks, EmergencyCallbacks]:
    return (
        EmergencyCallbacks(instance="gw-w1", clock=clock, siblings=SiblingWindows(directory)),
        EmergencyCallbacks(instance="gw-w2", clock=clock, siblings=SiblingWindows(directory)),
    )


async def test_a_window_one_worker_opened_is_found_by_its_sibling(tmp_path: Path) -> None:
    clock = Clock()
    one, two = workers(tmp_path, clock)
    assert await two.find(ALICE) is None
    one.opened(ALICE, contact="sip:alice@127.0.10.5:5062", endpoint=PHONE, call_id="e1")
    found = await two.find(ALICE)
    assert found is not None
    assert (found.contact, found.endpoint, found.instance, found.call_id) == (
        "sip:alice@127.0.10.5:5062",
        PHONE,
        "gw-w1",
        "e1",
    )
    # Shared as the table has it: by its expiry, never "in call".
    assert not found.in_call
    one.call_ended(ALICE, centre="kerava")
    clock.now += CALLBACK_WINDOW - 1
    again = await EmergencyCallbacks(clock=clock, siblings=SiblingWindows(tmp_path)).find(ALICE)
    assert again is not None and again.centre == "kerava"


async def test_a_closed_window_is_not_honoured_and_is_purged(tmp_path: Path) -> None:
    clock = Clock()
    one, two = workers(tmp_path, clock)
    one.opened(ALICE, contact="sip:alice@127.0.10.5:5062", endpoint=PHONE)
    # The worker died mid-call: its file still says the expiry it last wrote.
    clock.now += CALLBACK_WINDOW + 1
    assert await two.find(ALICE) is None
    await two.load()  # a start purges what closed
    assert files_in(tmp_path) == []
