"""The ``[media]`` config section.

Example (every key optional except where noted)::

    [media]
    bind_address = "203.0.113.5"       # relay address towards callers
    staff_bind_address = "10.0.0.1"    # towards staff phones; default bind_address
    rtp_port_min = 20000
    rtp_port_max = 29999
    default_language = "fi"
    media_timeout = 60.0               # no RTP from a side this long ends the call; 0: off

    [media.prompts.fi]                 # bundled fi/sv/en prompts are the defaults
    recording_notice = "/etc/voipgw/prompts/recording-notice.fi.wav"

    [[media.recorded_lines]]
    number = "+358201234567"           # required: dialled number (as routed)
    announcement = "recording_notice"  # prompt name, default recording_notice
    language = "fi"                    # default: default_language
    mode = "early-media"               # or "answer-first" (default early-media)

Mode ``early-media`` plays the prompt in a 183 before staff is called (no charge to the
caller); ``answer-first`` answers with 200 first, for callers whose network drops
early media. Either way the prompt ends before staff is connected, as promised by
the privacy policy.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from pathlib import Path

from routing.configfields import ConfigError, Table

#: Directory of the bundled prompts (made by deploy/prompts/make-prompts.sh).
BUNDLED_PROMPTS = Path(__file__).parent / "prompts"
LANGUAGES = ("fi", "sv", "en")
ANNOUNCEMENTS = ("recording_notice", "nomadic_warning")
MODES = ("early-media", "answer-first")


def _bundled() -> dict[str, dict[str, Path]]:
    return {
        lang: {
            name: BUNDLED_PROMPTS / f"{name.replace('_', '-')}.{lang}.wav" for name in ANNOUNCEMENTS
        }
        for lang in LANGUAGES
    }


@dataclass(frozen=True, slots=True, kw_only=True)
class RecordedLine:
    """A number whose calls are recorded and so must hear the notice first.

    Attributes:
        number: the dialled number, as the router sees it.
        announcement: prompt name ("recording_notice" ...).
        language: prompt language ("fi", "sv", "en" or a configured one).
        mode: "early-media" or "answer-first".
    """

    number: str
    announcement: str = "recording_notice"
    language: str
    mode: str = "early-media"


@dataclass(frozen=True, slots=True, kw_only=True)
class MediaConfig:
    """Media settings.

    Attributes:
        bind_address: local IP for RTP towards callers.
        staff_bind_address: local IP for RTP towards staff.
        rtp_port_min: lowest RTP port (even RTP, RTCP = RTP + 1).
        rtp_port_max: highest port of the range.
        default_language: language used when a call has none.
        prompts: language -> announcement name -> WAV path.
        recorded_lines: recorded numbers, by number.
        media_timeout: seconds without RTP from a side of an anchored call after
            which the B2BUA is told (it ends the call unless on hold or an emergency
            call); 0 turns the check off.
    """

    bind_address: str = "0.0.0.0"
    staff_bind_address: str = "0.0.0.0"
    rtp_port_min: int = 20000
    rtp_port_max: int = 29999
    default_language: str = "fi"
    prompts: dict[str, dict[str, Path]] = field(default_factory=_bundled)
    recorded_lines: dict[str, RecordedLine] = field(default_factory=dict)
    media_timeout: float = 60.0

    def prompt_path(self, announcement: str, language: str | None = None) -> Path:
        """The WAV for an announcement, falling back to the default language.

        Raises:
            KeyError: the announcement is not configured.
        """
        by_name = self.prompts.get(language or self.default_language)
        if by_name is None or announcement not in by_name:
            by_name = self.prompts[self.default_language]
        return by_name[announcement]

    @classmethod
    def from_table(cls, table: Table) -> MediaConfig:
        """Reads and validates the ``[media]`` table.

        Raises:
            ConfigError: naming the bad field (missing prompt file, bad address,
                unknown language/announcement/mode, bad port range, unknown keys).
        """
        bind = _ip(table, "bind_address", "0.0.0.0")
        staff_bind = _ip(table, "staff_bind_address", bind)
        port_min = table.int("rtp_port_min", 20000, min=1024, max=65534)
        port_max = table.int("rtp_port_max", 29999, min=1025, max=65535)
        if port_max < port_min + (port_min % 2) + 1:
            raise ConfigError(table.field("rtp_port_max"), "range holds no even/odd port pair")
        prompts = _bundled()
        prompts_table = table.table("prompts")
        for lang in prompts_table.data:
            lang_table = prompts_table.table(lang)
            entry = prompts.setdefault(lang, {})
            for name in lang_table.data:
                if name not in ANNOUNCEMENTS:
                    raise ConfigError(
                        lang_table.field(name),
                        f"unknown announcement (expected one of {', '.join(ANNOUNCEMENTS)})",
                    )
                entry[name] = Path(lang_table.str(name))
            lang_table.reject_unknown()
        prompts_table.reject_unknown()
        for lang, by_name in prompts.items():
            for name, path in by_name.items():
                if not path.is_file():
                    raise ConfigError(
                        prompts_table.field(f"{lang}.{name}"), f"no such file {str(path)!r}"
                    )
        default_language = table.str("default_language", "fi")
        if default_language not in prompts:
            raise ConfigError(
                table.field("default_language"), f"no prompts for {default_language!r}"
            )
        lines: dict[str, RecordedLine] = {}
        for item in table.tables("recorded_lines"):
            line = RecordedLine(
                number=item.str("number", required=True),
                announcement=item.choice("announcement", ANNOUNCEMENTS, "recording_notice"),
                language=item.str("language", default_language),
                mode=item.choice("mode", MODES, "early-media"),
            )
            if line.language not in prompts:
                raise ConfigError(item.field("language"), f"no prompts for {line.language!r}")
            if line.number in lines:
                raise ConfigError(item.field("number"), f"duplicate number {line.number!r}")
            item.reject_unknown()
            lines[line.number] = line
        media_timeout = table.float("media_timeout", 60.0, min=0, max=86_400)
        if 0 < media_timeout < 5:
            raise ConfigError(table.field("media_timeout"), "must be 0 (off) or at least 5 seconds")
        table.reject_unknown()
        return cls(
            media_timeout=media_timeout,
            bind_address=bind,
            staff_bind_address=staff_bind,
            rtp_port_min=port_min,
            rtp_port_max=port_max,
            default_language=default_language,
            prompts=prompts,
            recorded_lines=lines,
        )


def _ip(table: Table, key: str, default: str) -> str:
    text = table.str(key, default)
    try:
        ipaddress.ip_address(text)
    except ValueError:
        raise ConfigError(table.field(key), f"not an IP address: {text!r}") from None
    return text
