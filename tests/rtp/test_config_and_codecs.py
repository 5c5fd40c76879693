"""MediaConfig.from_table and the G.711 prompt helpers."""

from __future__ import annotations

import wave
from pathlib import Path

import pytest

from gateway.rtp.codecs import PromptCache, decode_g711, encode_g711, load_wav
from gateway.rtp.config import LANGUAGES, MediaConfig, RecordedLine
from routing.configfields import ConfigError, Table

from .conftest import PROMPTS, normalised_xcorr, s16


def test_defaults_use_bundled_prompts() -> None:
    config = MediaConfig.from_table(Table({}, "media"))
    assert config.rtp_port_min == 20000
    for lang in LANGUAGES:
        for name in ("recording_notice", "nomadic_warning"):
            assert config.prompt_path(name, lang).is_file()
    assert config.prompt_path("recording_notice", "de") == config.prompt_path(
        "recording_notice", "fi"
    )


def test_full_table() -> None:
    config = MediaConfig.from_table(
        Table(
            {
                "bind_address": "::1",
                "rtp_port_min": 30000,
                "rtp_port_max": 30099,
                "default_language": "sv",
                "prompts": {"en": {"recording_notice": str(PROMPTS / "recording-notice.sv.wav")}},
                "recorded_lines": [
                    {"number": "+358201234567", "language": "en", "mode": "answer-first"},
                    {"number": "100"},
                ],
            },
            "media",
        )
    )
    assert config.staff_bind_address == "::1"
    assert config.prompt_path("recording_notice", "en").name == "recording-notice.sv.wav"
    assert config.recorded_lines["+358201234567"] == RecordedLine(
        number="+358201234567", language="en", mode="answer-first"
    )
    assert config.recorded_lines["100"].language == "sv"
    assert config.recorded_lines["100"].mode == "early-media"


@pytest.mark.parametrize(
    ("data", "field"),
    [
        ({"bind_address": "host.example"}, "media.bind_address"),
        ({"rtp_port_min": 30000, "rtp_port_max": 30000}, "media.rtp_port_max"),
        ({"prompts": {"fi": {"hello": "x.wav"}}}, "media.prompts.fi.hello"),
        (
            {"prompts": {"fi": {"recording_notice": "/nonexistent.wav"}}},
            "media.prompts.fi.recording_notice",
        ),
        ({"default_language": "de"}, "media.default_language"),
        (
            {"recorded_lines": [{"number": "1", "language": "de"}]},
            "media.recorded_lines[0].language",
        ),
        ({"recorded_lines": [{"number": "1", "mode": "late"}]}, "media.recorded_lines[0].mode"),
        ({"recorded_lines": [{"number": "1"}, {"number": "1"}]}, "media.recorded_lines[1].number"),
        ({"recorded_lines": [{"number": "1", "x": 1}]}, "media.recorded_lines[0].x"),
        ({"recorded_lines": [{}]}, "media.recorded_lines[0].number"),
        ({"rtp_port": 1}, "media.rtp_port"),
    ],
)
def test_errors_name_the_field(data: dict[str, object], field: str) -> None:
    with pytest.raises(ConfigError) as info:
        MediaConfig.from_table(Table(data, "media"))
    assert info.value.field == field


def test_encode_decode_close_to_original() -> None:
    pcm = load_wav(PROMPTS / "nomadic-warning.fi.wav")
    for name in ("PCMU", "PCMA"):
        frames = encode_g711(pcm, name)
        assert all(len(f) == 160 for f in frames)
        assert len(frames) == -(-len(pcm) // 320)
        decoded = s16(b"".join(decode_g711(f, name) for f in frames))
        assert normalised_xcorr(s16(pcm), decoded) > 0.99
    with pytest.raises(ValueError, match=r"no G\.711 encoder"):
        encode_g711(pcm, "G722")
    with pytest.raises(ValueError, match=r"no G\.711 decoder"):
        decode_g711(b"\0", "G722")


def test_cache_encodes_once_per_codec() -> None:
    cache = PromptCache()
    path = PROMPTS / "recording-notice.fi.wav"
    first = cache.get(path, "pcmu")
    assert cache.get(str(path), "PCMU") is first
    assert cache.get(path, "PCMA").frames != first.frames
    assert first.duration == pytest.approx(len(first.frames) * 0.02)
    assert 1.0 < first.duration < 5.0


def test_prompts_are_short(tmp_path: Path) -> None:
    for path in PROMPTS.glob("*.wav"):
        seconds = len(load_wav(path)) / 16000
        assert 1.0 < seconds < 11.0, path


def test_load_wav_rejects_wrong_format(tmp_path: Path) -> None:
    stereo = tmp_path / "stereo.wav"
    with wave.open(str(stereo), "wb") as w:
        w.setnchannels(2)
        w.setsampwidth(2)
        w.setframerate(8000)
        w.writeframes(b"\0" * 400)
    with pytest.raises(ValueError, match="expected 8000 Hz mono 16-bit"):
        load_wav(stereo)
    empty = tmp_path / "empty.wav"
    with wave.open(str(empty), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(8000)
    with pytest.raises(ValueError, match="no samples"):
        load_wav(empty)
    junk = tmp_path / "junk.wav"
    junk.write_bytes(b"not a wav")
    with pytest.raises(ValueError, match="not a PCM WAV"):
        load_wav(junk)
