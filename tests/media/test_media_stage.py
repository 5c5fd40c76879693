"""Pure parts of gateway.rtp.stage: recorded-line lookup, the B-leg offer, prompt
names; and the CallRouter hand-off of the recording notice."""

from __future__ import annotations

import asyncio

import pytest

from gateway.b2bua import RouteNeeded
from gateway.b2bua.events import Announcement
from gateway.rtp.config import RecordedLine
from gateway.rtp.stage import MediaStage, dialled_number, narrowed_offer, recorded_line_lookup
from gateway.sip.events import Endpoint
from gateway.sip.message import Request
from gateway.sip.parser import parse_message
from gateway.sip.sdp import answer_for_announcement, parse_sdp
from tests.media.harness import RECORDED_NUMBER, media_config

OFFER = (
    b"v=0\r\no=alice 1 1 IN IP4 192.0.2.10\r\ns=-\r\nc=IN IP4 192.0.2.10\r\nt=0 0\r\n"
    b"m=audio 4000 RTP/AVP 18 8 0 101\r\na=rtpmap:18 G729/8000\r\na=rtpmap:8 PCMA/8000\r\n"
    b"a=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-16\r\na=fmtp:18 annexb=no\r\n"
    b"a=rtcp:4001\r\nm=video 4002 RTP/AVP 96\r\na=rtpmap:96 H264/90000\r\n"
)


def config(**lines: RecordedLine) -> object:
    return media_config(recorded_lines=lines)


@pytest.mark.parametrize(
    ("uri", "number"),
    [
        ("sip:+358-20-123.4567@pbx.example;user=phone", "+358201234567"),
        ("sip:%2B358201234567@pbx.example", "+358201234567"),
        ("sip:+358201234567;isub=1@pbx.example;user=phone", "+358201234567"),
        ("tel:+358-20-1234567", "+358201234567"),
        ("sip:pbx.example", None),
        ("not a uri", None),
    ],
)
def test_dialled_number(uri: str, number: str | None) -> None:
    assert dialled_number(uri) == number


def test_recorded_line_lookup_language_and_mode() -> None:
    media = media_config(
        recorded_lines={
            RECORDED_NUMBER: RecordedLine(number=RECORDED_NUMBER, language="en"),
            "+358-20-7654321": RecordedLine(
                number="+358-20-7654321", language="sv", mode="answer-first"
            ),
        }
    )
    lookup = recorded_line_lookup(media)
    # A line in the default language follows the caller's language.
    assert lookup(f"sip:{RECORDED_NUMBER}@gw", "fi") == Announcement(
        prompt="recording-notice", language="fi", mode="early-media", kind="recording"
    )
    # A line configured in another language keeps it.
    found = lookup("sip:+358207654321@gw;user=phone", "fi")
    assert found is not None
    assert (found.language, found.mode) == ("sv", "answer-first")
    assert lookup("sip:+358209999999@gw", "fi") is None
    assert lookup("sip:112@gw", "fi") is None


def test_narrowed_offer_keeps_the_answered_codec_only() -> None:
    offer = parse_sdp(OFFER)
    answer, codec = answer_for_announcement(offer, "198.51.100.1", 20000, 7, 1) or (None, None)
    assert answer is not None
    assert codec is not None
    assert codec.encoding_name == "PCMA"
    b_offer = narrowed_offer(offer, answer, 0, "10.0.0.1", 30000, 7)
    text = b_offer.serialize().decode()
    audio, video = b_offer.media
    assert audio.formats == ("8", "101")
    assert (audio.port, video.port) == (30000, 0)
    assert "G729" not in text
    assert "annexb" not in text
    assert "a=rtcp:" not in text  # the relay's RTCP is port + 1
    assert "c=IN IP4 10.0.0.1" in text
    assert "192.0.2.10" not in text
    assert "a=fmtp:101 0-16" in text


def test_prompt_names_from_router_and_config_resolve() -> None:
    stage = MediaStage(NoCalls(), media_config())
    for prompt, kind, stem in [
        ("recording-notice", "recording", "recording-notice.sv"),
        ("recording_notice", "recording", "recording-notice.sv"),
        ("nomadic-emergency-warning", "nomadic-warning", "nomadic-warning.sv"),
        ("no-such-prompt", "recording", "recording-notice.sv"),
    ]:
        path = stage.prompt_path(Announcement(prompt=prompt, language="sv", kind=kind))
        assert path.name == f"{stem}.wav"


class NoCalls:
    """A gateway that is never called back (prompt names need none)."""

    def media_ready(self, call_uuid: str, answer: bytes | None, b_offer: bytes | None) -> bool:
        raise AssertionError("not expected")

    def announcement_done(self, call_uuid: str, played: bool) -> None:
        raise AssertionError("not expected")


@pytest.mark.asyncio
async def test_callrouter_asks_recorded_line_for_a_known_subscriber() -> None:
    # Fails today: gateway/service/router.py reads ctx.subscriber.customer, but
    # routing.model.Subscriber has customer_id (AttributeError -> 500 for every call
    # from a known subscriber routed by CallRouter).
    from gateway.config import OverloadConfig
    from gateway.service.router import CallRouter
    from routing.config import RoutingConfig
    from tests.routing.data import demo_directory

    media = media_config(
        recorded_lines={RECORDED_NUMBER: RecordedLine(number=RECORDED_NUMBER, language="en")}
    )
    directory = demo_directory()

    async def resolve(uri: str) -> tuple[Endpoint, ...]:
        return (Endpoint("UDP", "127.0.0.1", 5080),)

    router = CallRouter(
        config=RoutingConfig(),
        directory=lambda: directory,
        overload=OverloadConfig(),
        resolve=resolve,
        recorded_line=recorded_line_lookup(media),
    )
    invite = (
        f"INVITE sip:{RECORDED_NUMBER}@127.0.0.1 SIP/2.0\r\n"
        "Via: SIP/2.0/UDP 127.0.10.5:5000;branch=z9hG4bK1\r\n"
        "From: <sip:alice@127.0.10.5:5000>;tag=1\r\nTo: <sip:x@127.0.0.1>\r\n"
        "Call-ID: c1\r\nCSeq: 1 INVITE\r\nContact: <sip:alice@127.0.10.5:5000>\r\n"
        "Max-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
    ).encode()
    request = parse_message(invite)
    assert isinstance(request, Request)
    decision = await asyncio.wait_for(
        router.route(
            RouteNeeded(call_uuid="u", request=request, source=Endpoint("UDP", "127.0.10.5", 5000))
        ),
        5,
    )
    # The line is in the default language, so alice hears her own (fi, her site's).
    assert getattr(decision, "announcement", None) == Announcement(
        prompt="recording-notice", language="fi", kind="recording"
    )
