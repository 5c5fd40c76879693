"""G.711 prompts: WAV loading, encoding through aiortc, and a per-codec cache.

Prompts are decoded from WAV once and encoded once per codec, then every call plays
the same immutable tuple of 160-byte payloads (G.711: 8000 Hz, one byte per sample,
160 samples per 20 ms frame; aiortc ``g711.SAMPLES_PER_FRAME``). The encoding itself
is aiortc's :class:`~aiortc.codecs.g711.PcmuEncoder` / ``PcmaEncoder`` (libavcodec
underneath); nothing here re-implements the companding.
"""

from __future__ import annotations

import threading
import wave
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiortc.codecs.g711 import (
    SAMPLE_RATE,
    SAMPLE_WIDTH,
    SAMPLES_PER_FRAME,
    PcmaDecoder,
    PcmaEncoder,
    PcmuDecoder,
    PcmuEncoder,
)
from aiortc.jitterbuffer import JitterFrame
from av import AudioFrame

__all__ = [
    "FRAME_DURATION",
    "SAMPLES_PER_FRAME",
    "SAMPLE_RATE",
    "EncodedPrompt",
    "PromptCache",
    "decode_g711",
    "encode_g711",
    "load_wav",
]

#: Duration of one RTP frame, in seconds (RFC 3551 section 4.5: 20 ms default ptime).
FRAME_DURATION = SAMPLES_PER_FRAME / SAMPLE_RATE

_ENCODERS: dict[str, Any] = {"PCMU": PcmuEncoder, "PCMA": PcmaEncoder}
_DECODERS: dict[str, Any] = {"PCMU": PcmuDecoder, "PCMA": PcmaDecoder}


def load_wav(path: str | Path) -> bytes:
    """Reads a prompt: 8000 Hz, mono, 16-bit PCM WAV (what make-prompts.sh writes).

    Resampling is done offline by sox rather than here so that a wrong file fails at
    start-up instead of costing CPU on every call.

    Args:
        path: the WAV file.

    Returns:
        Signed 16-bit little-endian samples.

    Raises:
        OSError: the file cannot be read.
        ValueError: not a WAV file of the expected format, or empty.
    """
    try:
        with wave.open(str(path), "rb") as wav:
            params = wav.getparams()
            pcm = wav.readframes(params.nframes)
    except wave.Error as exc:
        raise ValueError(f"{path}: not a PCM WAV file: {exc}") from None
    if (params.framerate, params.nchannels, params.sampwidth) != (SAMPLE_RATE, 1, SAMPLE_WIDTH):
        raise ValueError(
            f"{path}: expected 8000 Hz mono 16-bit, got {params.framerate} Hz "
            f"{params.nchannels} channel(s) {8 * params.sampwidth}-bit"
        )
    if not pcm:
        raise ValueError(f"{path}: no samples")
    return pcm


def encode_g711(pcm: bytes, encoding_name: str) -> tuple[bytes, ...]:
    """Encodes 8 kHz s16le samples into 20 ms G.711 payloads.

    The last frame is padded with silence to 160 samples (a short last packet is
    legal but some phones' jitter buffers mishandle it).

    Args:
        pcm: signed 16-bit little-endian mono samples at 8000 Hz.
        encoding_name: "PCMU" or "PCMA".

    Returns:
        One 160-byte payload per 20 ms.

    Raises:
        ValueError: unknown encoding name.
    """
    encoder_class = _ENCODERS.get(encoding_name.upper())
    if encoder_class is None:
        raise ValueError(f"no G.711 encoder for {encoding_name!r}")
    samples = len(pcm) // SAMPLE_WIDTH
    padding = -samples % SAMPLES_PER_FRAME
    pcm = pcm[: samples * SAMPLE_WIDTH] + bytes(padding * SAMPLE_WIDTH)
    frame = AudioFrame(format="s16", layout="mono", samples=samples + padding)
    frame.planes[0].update(pcm)
    frame.sample_rate = SAMPLE_RATE
    frame.pts = 0
    payloads, _ = encoder_class().encode(frame)
    return tuple(payloads)


def decode_g711(payload: bytes, encoding_name: str) -> bytes:
    """Decodes one G.711 payload to s16le samples (used by tests and diagnostics).

    Raises:
        ValueError: unknown encoding name.
    """
    decoder_class = _DECODERS.get(encoding_name.upper())
    if decoder_class is None:
        raise ValueError(f"no G.711 decoder for {encoding_name!r}")
    frames = decoder_class().decode(JitterFrame(data=payload, timestamp=0))
    return b"".join(bytes(f.planes[0])[: f.samples * SAMPLE_WIDTH] for f in frames)


@dataclass(frozen=True, slots=True, kw_only=True)
class EncodedPrompt:
    """A prompt ready to send.

    Attributes:
        path: the source WAV.
        encoding_name: "PCMU" or "PCMA".
        frames: one 160-byte payload per 20 ms frame.
    """

    path: Path
    encoding_name: str
    frames: tuple[bytes, ...]

    @property
    def duration(self) -> float:
        """Playing time, in seconds."""
        return len(self.frames) * FRAME_DURATION


class PromptCache:
    """Decodes each WAV once and encodes it once per codec.

    Thread-safe so the lead can warm it from a thread at start-up; lookups after that
    are a dict hit.
    """

    def __init__(self) -> None:
        self._pcm: dict[Path, bytes] = {}
        self._encoded: dict[tuple[Path, str], EncodedPrompt] = {}
        self._lock = threading.Lock()

    def get(self, path: str | Path, encoding_name: str) -> EncodedPrompt:
        """Returns the prompt encoded for a codec, loading and encoding on first use.

        Args:
            path: the WAV file.
            encoding_name: "PCMU" or "PCMA".

        Returns:
            The encoded prompt.

        Raises:
            OSError: the file cannot be read.
            ValueError: bad WAV format or unknown encoding.
        """
        key = (Path(path), encoding_name.upper())
        cached = self._encoded.get(key)
        if cached is not None:
            return cached
        with self._lock:
            if key not in self._encoded:
                pcm = self._pcm.get(key[0])
                if pcm is None:
                    pcm = self._pcm[key[0]] = load_wav(key[0])
                self._encoded[key] = EncodedPrompt(
                    path=key[0], encoding_name=key[1], frames=encode_g711(pcm, key[1])
                )
            return self._encoded[key]

    def pcm(self, path: str | Path) -> bytes:
        """The decoded samples of a WAV (cached), for tests and diagnostics."""
        with self._lock:
            key = Path(path)
            if key not in self._pcm:
                self._pcm[key] = load_wav(key)
            return self._pcm[key]
