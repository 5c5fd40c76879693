"""The nomadic warning names the way out, heard by a real phone in each language
(issue 14, item 7; "What it must show" 3).

baresip, registered nowhere but calling from 127.0.0.1 (outside every site of the
demo data: nomadic), dials 112 as a subscriber of a Finnish-, a Swedish- and an
English-speaking customer. The real :class:`CallRouter` decides over the demo
directory (``announce-then-route``): the warning's language follows the customer's.
What baresip decoded is cross-correlated with each language's prompt, as
tests/media/test_phones.py does with the recording notice: it must match its own
language's prompt and not the others'.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from gateway.service.router import CallRouter
from gateway.sip.events import Endpoint
from routing.config import RoutingConfig
from tests.interop.gateway import sip_target
from tests.interop.sipp import SippUas
from tests.media.harness import (
    HOST,
    Baresip,
    best_correlation,
    even_free_port,
    read_wav,
    stage_rig,
    write_tone,
)
from tests.routing.data import demo_directory

pytestmark = [pytest.mark.interop, pytest.mark.sipp, pytest.mark.tool, pytest.mark.asyncio]

PROMPTS = Path(__file__).parents[2] / "gateway" / "rtp" / "prompts"


def prompt(language: str) -> np.ndarray:
    samples, rate = read_wav(PROMPTS / f"nomadic-warning.{language}.wav")
    assert rate == 8000
    return samples


class SubscriberPhone(Baresip):
    """baresip whose SIP user is a subscriber of the demo data (the caller's identity)."""

    user: str = "caller"

    def configure(self) -> None:
        Baresip.configure(self)
        (self.workdir / "accounts").write_text(
            f"<sip:{self.user}@{HOST}:{self.sip_port};transport=udp>;regint=0;"
            "audio_codecs=PCMU,PCMA\n"
        )


@pytest.mark.parametrize(("user", "language"), [("bob", "fi"), ("frank", "sv"), ("gina", "en")])
async def test_baresip_hears_the_warning_in_its_customers_language(
    tmp_path: Path, user: str, language: str
) -> None:
    centre = SippUas("uas-answer", host=HOST, transport="udp", timeout=60,
                     extra_args=["-mp", str(even_free_port())])  # fmt: skip
    async with centre, stage_rig() as rig:
        directory = demo_directory()

        async def resolve(uri: str) -> tuple[Endpoint, ...]:
            return (Endpoint("UDP", HOST, centre.port),)  # the national default centre

        rig.gateway.router = CallRouter(
            config=RoutingConfig(default_next_hop=f"sip:{HOST}:{centre.port}"),
            directory=lambda: directory,
            overload=rig.gateway.config.overload,
            resolve=resolve,
        )
        tone = tmp_path / "silence.wav"
        write_tone(tone, 2500.0, 20.0)
        phone = SubscriberPhone(source=tone)
        phone.user = user
        try:
            await phone.dial(f"sip:112@{sip_target(rig.gateway)}", quit_after=16)
            await phone.wait(30)
            heard, rate = phone.heard()
        finally:
            await phone.stop()
        log = phone.log_text()
        phone.cleanup()
    assert rate == 8000, log
    early = heard[0]
    own, offset = best_correlation(early, prompt(language))
    assert own >= 0.9, (user, language, own, offset, log)
    # The measure tells the languages apart.
    for other in {"fi", "sv", "en"} - {language}:
        assert best_correlation(early, prompt(other))[0] < 0.5, other
