"""Real phones nobody here wrote, through a running Gateway with a MediaStage.

* baresip (early media) hears the recording notice in a 183 before staff is called,
  then talks to staff (a SIPp UAS echoing RTP) through the relay, both ways;
* pyVoIP (answer-first: it opens RTP only after the 200 OK) hears the notice whole;
* SIPp callers: CANCEL during the notice, BYE from staff, a caller without G.711;
* an emergency call routed by the real CallRouter to the same PBX gets no prompt.

Each test ends with no port, task or call of the stage left behind.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
import pytest
from prometheus_client import CollectorRegistry

from gateway.b2bua.events import Announcement
from gateway.metrics import Metrics
from gateway.sip.events import Endpoint
from tests.interop.gateway import sip_target
from tests.interop.sipp import SippUas, run_uac
from tests.media.harness import (
    HOST,
    RECORDED_NUMBER,
    Baresip,
    accept_register,
    announced_router,
    best_correlation,
    even_free_port,
    read_wav,
    rms,
    stage_rig,
    tone_level,
    write_tone,
)

pytestmark = [pytest.mark.interop, pytest.mark.sipp]

#: The caller "speaks" a tone where the prompt has almost no energy (<1%).
TONE_HZ = 2500.0


def staff(
    tmp_path: Path, scenario: str = "uas-staff-echo", pause: float | None = None
) -> tuple[SippUas, Path]:
    """A SIPp staff phone echoing RTP; its notice header lands in the returned file."""
    notice = tmp_path / "notice.txt"
    uas = SippUas(
        scenario,
        host=HOST,
        transport="udp",
        call_duration=pause,
        timeout=60,
        extra_args=[
            "-rtp_echo",
            "-mp",
            str(even_free_port()),
            "-key",
            "notice_file",
            str(notice),
        ],
    )
    return uas, notice


def notices(path: Path) -> list[str]:
    if not path.exists():
        return []
    return [line.removeprefix("notice=") for line in path.read_text().split()]


def prompt(language: str = "en") -> np.ndarray:
    samples, rate = read_wav(
        Path(__file__).parents[2] / "gateway/rtp/prompts" / f"recording-notice.{language}.wav"
    )
    assert rate == 8000
    return samples


@pytest.mark.tool
@pytest.mark.asyncio
async def test_baresip_hears_notice_as_early_media_then_talks_to_staff(tmp_path: Path) -> None:
    registry = Metrics(CollectorRegistry())
    uas, notice_file = staff(tmp_path)
    async with uas:
        announcement = Announcement(prompt="recording-notice", language="en")
        router = announced_router(Endpoint("UDP", HOST, uas.port), announcement)
        async with stage_rig(router, metrics=registry) as rig:
            tone = tmp_path / "tone.wav"
            write_tone(tone, TONE_HZ, 12.0)
            phone = Baresip(source=tone)
            relay_counts: list[tuple[int, int]] = []
            try:
                await phone.dial(f"sip:{RECORDED_NUMBER}@{sip_target(rig.gateway)}", quit_after=6)
                # Sample the relay while the call is up (the session is gone after BYE).
                async with asyncio.timeout(20):
                    while phone.proc is not None and phone.proc.returncode is None:
                        for media in rig.stage.calls.values():
                            relay = media.session.relay
                            if relay is not None:
                                relay_counts.append((relay.a_to_b.packets, relay.b_to_a.packets))
                        await asyncio.sleep(0.1)
                await phone.wait(5)
                try:
                    (ended,) = await rig.wait_ended(1)
                except TimeoutError:
                    raise AssertionError(f"call never ended; baresip:\n{phone.log_text()}")
                heard, rate = phone.heard()
            finally:
                await phone.stop()
            log = phone.log_text()
            phone.cleanup()
            assert ended.disposition == "answered", log
            assert ended.annotations["recording_notice"] == "played"
            assert notices(notice_file) == ["played"]
            assert rate == 8000, log
            # Two audio streams: the 183's early media, then the call after the 200.
            assert len(heard) == 2, (len(heard), log)
            early, connected = heard
            reference = prompt()
            score, offset = best_correlation(early, reference)
            assert score >= 0.9, (score, offset, log)
            # The measure tells prompts apart: the Finnish notice does not match.
            assert best_correlation(early, prompt("fi"))[0] < 0.5
            # Nothing of staff (the echoed tone) before the notice ended...
            assert tone_level(early, TONE_HZ) < 0.05
            # ... and after it, staff's echo of the caller's tone through the relay.
            assert rms(connected[4000:]) > 0.05, (rms(connected), log)
            assert tone_level(connected[4000:], TONE_HZ) > 0.5
            assert relay_counts, "the relay never ran"
            a_to_b, b_to_a = relay_counts[-1]
            assert a_to_b > 50
            assert b_to_a > 50
            samples = registry.announcements.labels(kind="recording", result="played")
            assert samples._value.get() == 1  # noqa: SLF001
            await rig.assert_clean()
    assert uas.result is not None
    assert uas.result.successful_calls == 1, uas.result.describe()
