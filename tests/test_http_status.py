"""Tests of the HTTP status listener against a real loopback socket."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio
from prometheus_client import CollectorRegistry

from gateway.ops.http_status import MAX_HEAD_BYTES, ReadinessChecks, StatusServer
from gateway.ops.metrics import Metrics


async def exchange(port: int, request: bytes) -> tuple[int, dict[str, str], bytes]:
    """Sends raw request bytes and reads the response until the server closes."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(request)
        await writer.drain()
        raw = await asyncio.wait_for(reader.read(), 5)
    finally:
        writer.close()
    head, _, body = raw.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("ascii").split("\r\n")
    headers = {}
    for line in lines:
        name, _, value = line.partition(":")
        headers[name.lower()] = value.strip()
    return int(status_line.split(" ")[1]), headers, body


def get(path: str, *extra: str) -> bytes:
    lines = [f"GET {path} HTTP/1.1", "Host: 127.0.0.1", *extra, "", ""]
    return "\r\n".join(lines).encode()


@pytest.fixture
def checks() -> ReadinessChecks:
    return ReadinessChecks()


@pytest_asyncio.fixture
async def server(checks: ReadinessChecks) -> AsyncIterator[StatusServer]:
    metrics = Metrics(CollectorRegistry(), version="9.9.9")
    srv = StatusServer(metrics, checks, "127.0.0.1", 0, request_timeout=0.5)
    await srv.start()
    try:
        yield srv
    finally:
        await srv.close()


@pytest.mark.asyncio
async def test_metrics_text_format(server: StatusServer) -> None:
    server.metrics.sip_request_in("INVITE")
    server.metrics.call_ended("office", "answered")
    status, headers, body = await exchange(server.port, get("/metrics"))
    assert status == 200
    assert headers["content-type"].startswith("text/plain; version=0.0.4")
    assert int(headers["content-length"]) == len(body)
    text = body.decode()
    assert 'voipgw_sip_requests_total{direction="in",method="INVITE"} 1.0' in text
    assert 'voipgw_calls_total{call_class="office",outcome="answered"} 1.0' in text
    assert 'voipgw_build_info{python="' in text
    assert "# EOF" not in text


@pytest.mark.asyncio
async def test_metrics_openmetrics_when_asked(server: StatusServer) -> None:
    accept = "Accept: application/openmetrics-text;version=1.0.0,text/plain;q=0.5"
    status, headers, body = await exchange(server.port, get("/metrics", accept))
    assert status == 200
    assert headers["content-type"].startswith("application/openmetrics-text")
    assert body.endswith(b"# EOF\n")


@pytest.mark.asyncio
async def test_healthz_and_head(server: StatusServer) -> None:
    assert await exchange(server.port, get("/healthz")) == (
        200,
        {
            "content-type": "text/plain; charset=utf-8",
            "content-length": "3",
            "cache-control": "no-store",
            "connection": "close",
        },
        b"ok\n",
    )
    status, headers, body = await exchange(server.port, b"HEAD /healthz HTTP/1.0\r\n\r\n")
    assert (status, headers["content-length"], body) == (200, "3", b"")


@pytest.mark.asyncio
async def test_readyz_not_ready_without_checks(server: StatusServer) -> None:
    status, headers, body = await exchange(server.port, get("/readyz"))
    assert status == 503
    assert headers["content-type"] == "application/json"
    assert json.loads(body) == {
        "ready": False,
        "checks": {},
        "not_ready": ["no readiness checks registered"],
    }


@pytest.mark.asyncio
async def test_readyz_names_what_is_not_ready(
    server: StatusServer, checks: ReadinessChecks
) -> None:
    state = {"transports": True, "cdr": False}
    checks.register("transports", lambda: state["transports"])
    checks.register("cdr", lambda: state["cdr"])
    status, _, body = await exchange(server.port, get("/readyz"))
    assert status == 503
    assert json.loads(body) == {
        "ready": False,
        "checks": {"cdr": False, "transports": True},
        "not_ready": ["cdr"],
    }
    state["cdr"] = True
    status, _, body = await exchange(server.port, get("/readyz?verbose=1"))
    assert status == 200
    assert json.loads(body)["ready"] is True


@pytest.mark.asyncio
async def test_readyz_check_that_raises_is_not_ready(
    server: StatusServer, checks: ReadinessChecks, caplog: pytest.LogCaptureFixture
) -> None:
    def broken() -> bool:
        raise OSError("spool directory vanished")

    checks.register("transports", lambda: True)
    checks.register("cdr", broken)
    status, _, body = await exchange(server.port, get("/readyz"))
    assert status == 503
    assert json.loads(body)["not_ready"] == ["cdr"]
    assert "readiness check 'cdr' failed" in caplog.text


@pytest.mark.parametrize(
    ("request_bytes", "expected"),
    [
        (b"GET /nowhere HTTP/1.1\r\n\r\n", 404),
        (b"POST /metrics HTTP/1.1\r\nContent-Length: 0\r\n\r\n", 405),
        (b"GET /metrics\r\n\r\n", 400),
        (b"GET  /metrics HTTP/1.1\r\n\r\n", 400),
        (b"GET metrics HTTP/1.1\r\n\r\n", 400),
        (b"GET /metrics HTTP/2.0\r\n\r\n", 505),
        (b"GET /metrics HTTP/1.1\r\nHost : x\r\n\r\n", 400),
        (b"GET /metrics HTTP/1.1\r\nno colon\r\n\r\n", 400),
        (b"GET /m\xe9trics HTTP/1.1\r\n\r\n", 400),
    ],
)
@pytest.mark.asyncio
async def test_bad_requests(server: StatusServer, request_bytes: bytes, expected: int) -> None:
    status, headers, _ = await exchange(server.port, request_bytes)
    assert status == expected
    assert headers["connection"] == "close"


@pytest.mark.asyncio
async def test_oversized_head_is_refused(server: StatusServer) -> None:
    request = get("/metrics", "X-Padding: " + "a" * MAX_HEAD_BYTES)
    status, _, body = await exchange(server.port, request)
    assert (status, body) == (431, b"request head too large\n")


@pytest.mark.asyncio
async def test_slow_client_times_out(server: StatusServer) -> None:
    # request_timeout is 0.5 s in the fixture; the head never completes.
    status, _, body = await exchange(server.port, b"GET /metrics HTTP/1.1\r\nHost: x\r\n")
    assert (status, body) == (408, b"request head not received in time\n")


@pytest.mark.asyncio
async def test_close_ends_open_connections() -> None:
    srv = StatusServer(Metrics(CollectorRegistry()), ReadinessChecks(), "127.0.0.1", 0)
    await srv.start()
    reader, writer = await asyncio.open_connection("127.0.0.1", srv.port)
    writer.write(b"GET /metrics HTTP/1.1\r\n")
    await writer.drain()
    await asyncio.sleep(0.05)
    await asyncio.wait_for(srv.close(), 2)
    assert await asyncio.wait_for(reader.read(), 2) == b""
    writer.close()
    with pytest.raises(OSError):
        await asyncio.open_connection("127.0.0.1", srv.port)


@pytest.mark.asyncio
async def test_readyz_reports_a_dependency_without_gating_on_it(checks: ReadinessChecks) -> None:
    # PostgreSQL away: calls go on, so the instance stays in its pool (200) and the
    # body says what is degraded.
    database = {"up": False}
    checks.register("transports", lambda: True)
    checks.register_dependency("database", lambda: database["up"])
    srv = StatusServer(
        Metrics(CollectorRegistry()), checks, "127.0.0.1", 0, dependencies=checks.dependencies
    )
    await srv.start()
    try:
        status, _, body = await exchange(srv.port, get("/readyz"))
        assert status == 200
        assert json.loads(body) == {
            "ready": True,
            "checks": {"transports": True},
            "not_ready": [],
            "dependencies": {"database": False},
            "degraded": ["database"],
        }
        database["up"] = True
        status, _, body = await exchange(srv.port, get("/readyz"))
        assert (status, json.loads(body)["degraded"]) == (200, [])
    finally:
        await srv.close()
