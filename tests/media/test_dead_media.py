"""Dead media on an anchored call: SIPp caller (no RTP) -> gateway with its media stage
(an announced call) -> SIPp callee (no RTP). The stage reports the silent legs after
``[media] media_timeout``; the core ends the call with a Reason on both BYEs."""

from __future__ import annotations

import pytest

from gateway.b2bua import EndedBy
from gateway.b2bua.events import Announcement
from gateway.sip.events import Endpoint
from tests.interop.gateway import sip_target
from tests.interop.sipp import SippUas, run_uac
from tests.media.harness import HOST, announced_router, media_config, stage_rig

pytestmark = [pytest.mark.sipp, pytest.mark.interop]

MEDIA_TIMEOUT = 1.0
NOTICE = Announcement(prompt="recording-notice", language="en")


@pytest.mark.asyncio
async def test_silent_anchored_call_is_ended_after_the_media_timeout() -> None:
    async with SippUas("uas-answer", host=HOST, calls=1, timeout=30) as uas:
        staff = Endpoint("UDP", HOST, uas.port)
        config = media_config(media_timeout=MEDIA_TIMEOUT)
        async with stage_rig(announced_router(staff, NOTICE), config=config) as rig:
            result = await run_uac(
                "uac-silent-expect-media-timeout-bye", sip_target(rig.gateway), timeout=20
            )
            assert result.ok, result.describe()
            (ended,) = await rig.wait_ended()
            assert ended.ended_by is EndedBy.MEDIA_TIMEOUT
            assert ended.answered_at is not None
            # Reported at the first check after the relay started silent.
            assert MEDIA_TIMEOUT <= ended.ended_at - ended.answered_at < MEDIA_TIMEOUT + 1.0
            await rig.assert_clean()
        await uas.wait(20)
    assert uas.result is not None and uas.result.successful_calls == 1, uas.result.describe()


@pytest.mark.asyncio
async def test_silent_anchored_emergency_call_is_kept_up() -> None:
    async with SippUas("uas-answer", host=HOST, calls=1, timeout=30) as uas:
        staff = Endpoint("UDP", HOST, uas.port)
        config = media_config(media_timeout=MEDIA_TIMEOUT)

        def emergency(event):  # type: ignore[no-untyped-def]
            route = announced_router(staff, NOTICE)(event)
            return type(route)(targets=route.targets, announcement=NOTICE, emergency=True)

        async with stage_rig(emergency, config=config) as rig:
            # uac-basic-call hangs up after -d: 3 media timeouts of silence first.
            result = await run_uac(
                "uac-basic-call",
                sip_target(rig.gateway),
                timeout=20,
                call_duration=3 * MEDIA_TIMEOUT + 3.0,
            )
            assert result.ok, result.describe()
            (ended,) = await rig.wait_ended()
            assert ended.ended_by is EndedBy.CALLER
        await uas.wait(20)
