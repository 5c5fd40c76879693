"""Helpers for the media-stage tests: a gateway with a MediaStage, audio maths,
and real phones (baresip, pyVoIP) driven from asyncio.

Everything binds 127.0.0.0/8 only (run through deploy/loopback-only.sh).
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import shutil
import socket
import tempfile
import wave
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from gateway.b2bua import CallEnded, Route, RouteNeeded
from gateway.b2bua.events import Announcement
from gateway.rtp.config import MediaConfig
from gateway.rtp.ports import PortAllocator
from gateway.rtp.stage import MediaStage
from gateway.service.server import Gateway
from gateway.sip.builders import build_response
from gateway.sip.events import Endpoint
from gateway.sip.message import Response
from tests.interop.gateway import gateway_config, running_gateway
from tests.interop.sipp import free_port

HOST = "127.0.0.1"
PROMPTS = Path(__file__).parents[2] / "gateway" / "rtp" / "prompts"
RECORDED_NUMBER = "+358201234567"


def media_config(**overrides: Any) -> MediaConfig:
    """A [media] section on 127.0.0.1 with a port range of its own per process
    (other engineers' tests bind RTP ports on this machine too)."""
    base = 40000 + (os.getpid() % 200) * 100
    values: dict[str, Any] = {
        "bind_address": HOST,
        "staff_bind_address": HOST,
        "rtp_port_min": base,
        "rtp_port_max": base + 99,
        "default_language": "en",
    }
    values.update(overrides)
    return MediaConfig(**values)


def announced_router(staff: Endpoint, announcement: Announcement) -> Callable[[RouteNeeded], Route]:
    """Routes every call to ``staff`` after ``announcement``."""

    def route(event: RouteNeeded) -> Route:
        return Route(targets=(staff,), announcement=announcement)

    return route


def accept_register(event: Any) -> Response:
    """A REGISTER service that accepts everyone (pyVoIP registers at start; the
    registrar itself needs PostgreSQL and is tested elsewhere)."""
    request = event.request
    return build_response(
        request,
        200,
        to_tag=os.urandom(6).hex(),
        headers=[("Contact", request.headers.get("Contact") or ""), ("Expires", "300")],
    )


@dataclass
class StageRig:
    """A running gateway with a media stage, and what it reported."""

    gateway: Gateway
    stage: MediaStage
    ended: list[CallEnded]

    @property
    def allocator(self) -> PortAllocator:
        return self.stage.allocator

    async def wait_ended(self, count: int = 1, limit: float = 15.0) -> list[CallEnded]:
        async with asyncio.timeout(limit):
            while len(self.ended) < count:  # noqa: ASYNC110 (state changed by the gateway, not an event)
                await asyncio.sleep(0.05)
        return self.ended

    async def assert_clean(self) -> None:
        """No call, no port, no task of the stage left (after the last call ended)."""
        async with asyncio.timeout(5.0):
            while self.stage.tasks or self.allocator.leaked() or self.stage.calls:  # noqa: ASYNC110 (state changed by the gateway, not an event)
                await asyncio.sleep(0.02)
        assert self.allocator.in_use == frozenset()
        assert self.gateway.active_calls == 0


@contextlib.asynccontextmanager
async def stage_rig(
    router: Callable[[RouteNeeded], Any] | None = None,
    *,
    config: MediaConfig | None = None,
    services: dict[str, Any] | None = None,
    metrics: Any = None,
) -> AsyncIterator[StageRig]:
    """A gateway on 127.0.0.1 (UDP) running its own media stage (``media=``)."""
    doc = gateway_config(host=HOST, upstream="sip:127.0.0.1:9", transports=("UDP",))
    async with running_gateway(
        doc,
        router=router,
        media=config or media_config(),
        services=services or {},
        metrics=metrics,
    ) as (gateway, ended):
        stage = gateway.media
        assert stage is not None
        try:
            yield StageRig(gateway=gateway, stage=stage, ended=ended)
        finally:
            await stage.close()


# ---------------------------------------------------------------------- audio maths


def read_wav(path: Path) -> tuple[np.ndarray, int]:
    """Mono float samples in [-1, 1] and the sample rate of a 16-bit (or 8-bit) WAV."""
    with wave.open(str(path), "rb") as wav:
        rate, width, channels = wav.getframerate(), wav.getsampwidth(), wav.getnchannels()
        data = wav.readframes(wav.getnframes())
    if width == 2:
        samples = np.frombuffer(data, dtype="<i2").astype(np.float64) / 32768.0
    else:
        samples = (np.frombuffer(data, dtype=np.uint8).astype(np.float64) - 128.0) / 128.0
    if channels > 1:
        samples = samples.reshape(-1, channels).mean(axis=1)
    return samples, rate


def best_correlation(received: np.ndarray, reference: np.ndarray) -> tuple[float, int]:
    """Max normalised cross-correlation of ``reference`` slid along ``received``.

    Returns:
        (coefficient in [-1, 1], offset in samples of the best match in ``received``).
    """
    n = len(reference)
    if len(received) < n:
        received = np.concatenate([received, np.zeros(n - len(received))])
    size = 1 << math.ceil(math.log2(len(received) + n))
    dots = np.fft.irfft(np.fft.rfft(received, size) * np.conj(np.fft.rfft(reference, size)), size)
    dots = dots[: len(received) - n + 1]
    energy = np.concatenate([[0.0], np.cumsum(received**2)])
    window = np.sqrt(np.maximum(energy[n:] - energy[:-n], 1e-12))
    scores = dots / (window * np.linalg.norm(reference))
    best = int(np.argmax(scores))
    return float(scores[best]), best


def rms(samples: np.ndarray) -> float:
    return float(np.sqrt(np.mean(samples**2))) if len(samples) else 0.0


def write_tone(path: Path, frequency: float, seconds: float, rate: int = 8000) -> None:
    """A 16-bit mono sine WAV at -12 dBFS (what the caller "says")."""
    t = np.arange(int(seconds * rate)) / rate
    pcm = (0.25 * 32767 * np.sin(2 * np.pi * frequency * t)).astype("<i2")
    with wave.open(str(path), "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(rate)
        wav.writeframes(pcm.tobytes())


def tone_level(samples: np.ndarray, frequency: float, rate: int = 8000) -> float:
    """Share of the signal's energy within ±50 Hz of ``frequency`` (0..1)."""
    if len(samples) == 0:
        return 0.0
    spectrum = np.abs(np.fft.rfft(samples)) ** 2
    freqs = np.fft.rfftfreq(len(samples), 1 / rate)
    band = (freqs > frequency - 50) & (freqs < frequency + 50)
    total = spectrum.sum()
    return float(spectrum[band].sum() / total) if total > 0 else 0.0


# ---------------------------------------------------------------------- baresip


class BaresipNotFound(RuntimeError):
    """baresip is not installed: the tests that need it must fail."""


def find_baresip() -> str:
    path = shutil.which("baresip")
    if path is None:
        raise BaresipNotFound("baresip not found on PATH (Debian: apt-get install baresip)")
    return path


@dataclass
class Baresip:
    """A baresip user agent on 127.0.0.1 with file audio.

    It "speaks" ``source`` (a WAV played by the aufile module) and dumps what it
    decodes to ``<dir>/snd/dump-*-dec.wav`` (sndfile module: baresip 1.0's aufile has
    no player, so the dump of the decoded stream is what the phone heard).
    """

    source: Path
    workdir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="voipgw-bs-")))
    sip_port: int = field(default_factory=lambda: free_port(HOST))
    proc: asyncio.subprocess.Process | None = None

    def configure(self) -> None:
        rtp = free_port(HOST)
        (self.workdir / "snd").mkdir(exist_ok=True)
        lines = [
            "poll_method epoll",
            f"sip_listen {HOST}:{self.sip_port}",
            "sip_transports udp",
            # No sound card: the player is an aubridge device nobody reads.
            "audio_player aubridge,nil",
            "audio_alert aubridge,nil",
            f"audio_source aufile,{self.source}",
            "audio_channels 1",
            "audio_srate 8000",
            "ausrc_srate 8000",
            "auplay_srate 8000",
            f"rtp_ports {rtp & ~1}-{(rtp & ~1) + 40}",
            f"net_interface {HOST}",
            "module_path /usr/lib/baresip/modules",
            "module g711.so",
            "module aufile.so",
            "module aubridge.so",
            "module sndfile.so",
            "module_app account.so",
            "module_app menu.so",
            f"snd_path {self.workdir / 'snd'}",
        ]
        (self.workdir / "config").write_text("\n".join(lines) + "\n")
        (self.workdir / "accounts").write_text(
            f"<sip:caller@{HOST}:{self.sip_port};transport=udp>;regint=0;audio_codecs=PCMU,PCMA\n"
        )
        (self.workdir / "contacts").write_text("")

    async def dial(self, uri: str, *, quit_after: float) -> None:
        """Starts baresip dialling ``uri``; it hangs up and quits after ``quit_after``."""
        self.configure()
        self.log = (self.workdir / "baresip.log").open("wb")
        self.proc = await asyncio.create_subprocess_exec(
            find_baresip(),
            "-f",
            str(self.workdir),
            "-e",
            f"/dial {uri}",
            "-t",
            str(max(1, round(quit_after))),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=self.log,
            stderr=asyncio.subprocess.STDOUT,
            start_new_session=True,
        )

    async def wait(self, limit: float) -> int | None:
        assert self.proc is not None
        try:
            await asyncio.wait_for(self.proc.wait(), limit)
        finally:
            await self.stop()
        return self.proc.returncode

    async def stop(self) -> None:
        proc = self.proc
        if proc is not None and proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                proc.terminate()
            try:
                await asyncio.wait_for(proc.wait(), 3.0)
            except TimeoutError:
                proc.kill()
                await proc.wait()
        if getattr(self, "log", None) is not None:
            self.log.close()

    def heard(self) -> tuple[list[np.ndarray], int]:
        """What baresip decoded, one array per audio stream it started, in order
        (the sndfile dumps: baresip restarts its audio when the 200 follows a 183)."""
        dumps = sorted((self.workdir / "snd").glob("dump-*-dec.wav"))
        if not dumps:
            raise AssertionError(f"baresip dumped no decoded audio; log:\n{self.log_text()}")
        streams = [read_wav(path) for path in dumps]
        rates = {rate for _, rate in streams}
        assert len(rates) == 1, rates
        return [samples for samples, _ in streams], rates.pop()

    def log_text(self) -> str:
        path = self.workdir / "baresip.log"
        return path.read_text(errors="replace")[-6000:] if path.exists() else ""

    def cleanup(self) -> None:
        shutil.rmtree(self.workdir, ignore_errors=True)


# ---------------------------------------------------------------------- RTP sink


class RtpSink(asyncio.DatagramProtocol):
    """A caller's RTP port: records (loop time, datagram) of what arrives."""

    def __init__(self) -> None:
        self.received: list[tuple[float, bytes]] = []
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.received.append((asyncio.get_running_loop().time(), data))

    @property
    def port(self) -> int:
        assert self.transport is not None
        return int(self.transport.get_extra_info("sockname")[1])


async def open_rtp_sink(host: str) -> RtpSink:
    """An RTP sink on an even port of ``host`` (SDP m= ports are even, RFC 3550 11)."""
    loop = asyncio.get_running_loop()
    for _ in range(50):
        port = free_port(host) & ~1
        try:
            _, sink = await loop.create_datagram_endpoint(RtpSink, local_addr=(host, port))
        except OSError:
            continue
        return sink
    raise RuntimeError("no even UDP port free")


def even_free_port(host: str = HOST) -> int:
    """An even UDP port free now with port + 2 free (SIPp -rtp_echo binds both)."""
    for _ in range(100):
        port = free_port(host) & ~1
        ok = True
        for p in (port, port + 1, port + 2, port + 3):
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
                try:
                    s.bind((host, p))
                except OSError:
                    ok = False
                    break
        if ok:
            return port
    raise RuntimeError("no even UDP port range free")
