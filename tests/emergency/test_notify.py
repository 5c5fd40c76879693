"""Tests of gateway.service.notify against a real HTTP server on loopback (asyncio streams)."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import pytest

from gateway.service.notify import EmergencyNotifier, NotifyConfig, WebhookUrl, notification_body
from routing.config import NomadicPolicy, RoutingConfig
from routing.configfields import ConfigError, Table
from routing.decision import RoutingDecision
from routing.model import CallContext
from routing.policy import decide
from tests.interop.sipp import free_port
from tests.routing.data import ctx, demo_directory

NOW = dt.datetime(2026, 11, 22, 14, 56, 30, 123000, tzinfo=dt.UTC)


@dataclass
class HttpServer:
    """A tiny HTTP/1.1 server: answers each POST with the next scripted status.

    ``statuses`` is consumed one per request; ``None`` means "never answer" (the
    client's timeout must end the attempt). The last entry repeats.
    """

    statuses: list[int | None]
    requests: list[tuple[str, dict[str, str], bytes]] = field(default_factory=list)
    port: int = 0
    arrived: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hooks/112?token=s3cret"

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            request_line = (await reader.readline()).decode("ascii").rstrip("\r\n")
            headers: dict[str, str] = {}
            while (line := (await reader.readline()).decode("ascii").rstrip("\r\n")) != "":
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
            body = await reader.readexactly(int(headers.get("content-length", "0")))
            self.requests.append((request_line, headers, body))
            self.arrived.set()
            index = min(len(self.requests), len(self.statuses)) - 1
            status = self.statuses[index]
            if status is None:
                await asyncio.sleep(3600)
                return
            writer.write(f"HTTP/1.1 {status} X\r\nContent-Length: 0\r\n\r\n".encode())
            await writer.drain()
        finally:
            writer.close()


@contextlib.asynccontextmanager
async def http_server(statuses: list[int | None]) -> AsyncIterator[HttpServer]:
    state = HttpServer(statuses=statuses)
    server = await asyncio.start_server(state.handle, "127.0.0.1", 0)
    state.port = server.sockets[0].getsockname()[1]
    async with server:
        yield state
        server.close()


def office_call() -> tuple[RoutingDecision, CallContext]:
    directory = demo_directory()
    call = ctx(directory, "127.0.10.5", "alice", dialled="sip:112@gw;user=phone")
    return decide(call, directory, RoutingConfig()), call


def nomadic_call(policy: NomadicPolicy) -> tuple[RoutingDecision, CallContext]:
    directory = demo_directory()
    call = ctx(directory, "127.0.30.7", "bob", dialled="tel:112")
    config = RoutingConfig(nomadic_policy=policy)
    return decide(call, directory, config), call


class Sleeps:
    """Records the backoff waits instead of sleeping them (keeps the tests fast)."""

    def __init__(self) -> None:
        self.waits: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)


def test_office_body_carries_the_pidf_address_and_centre() -> None:
    decision, call = office_call()
    doc = json.loads(notification_body(decision, call, now=NOW))
    assert doc["event"] == "emergency-call"
    assert doc["time"] == "2026-11-22T14:56:30.123Z"
    assert doc["caller"] == "+358401000001"
    assert doc["customer"] == "setera"
    assert doc["class"] == "office"
    assert doc["site"] == "setera-espoo"
    assert doc["civic_address"]["country"] == "FI"
    assert doc["civic_address"]["A3"] == "Espoo"
    assert doc["civic_address"]["RD"] == "Metsänneidonkuja"
    assert doc["civic_address"]["HNO"] == "12"
    assert doc["location_verified"] is True
    assert doc["centre"] == "kerava"
    assert doc["centres"][:2] == ["kerava", "turku"]
    assert doc["action"] == "route"


@pytest.mark.parametrize(
    ("policy", "action", "centre"),
    [
        (NomadicPolicy.ROUTE, "route", "national"),
        (NomadicPolicy.ANNOUNCE_THEN_ROUTE, "announce-then-route", "national"),
        (NomadicPolicy.ANNOUNCE_AND_END, "announce-and-end", None),
    ],
)
def test_nomadic_body_sends_no_address(policy: NomadicPolicy, action: str, centre: str) -> None:
    decision, call = nomadic_call(policy)
    doc = json.loads(notification_body(decision, call, now=NOW))
    assert doc["class"] == "nomadic"
    assert doc["site"] == "nomadic"
    assert doc["civic_address"] is None
    assert doc["location_verified"] is False
    assert doc["action"] == action
    assert doc["centre"] == centre
    assert doc["caller"] == "+358401000002"


@pytest.mark.asyncio
async def test_posts_json_to_the_webhook() -> None:
    async with http_server([204]) as server:
        config = NotifyConfig(urls=(server.url,))
        async with EmergencyNotifier(config, clock=lambda: NOW) as notifier:
            notifier(*office_call())
            await asyncio.wait_for(server.arrived.wait(), 5)
        assert notifier.delivered == 1
        assert notifier.failed == 0
    (request_line, headers, body) = server.requests[0]
    assert request_line == "POST /hooks/112?token=s3cret HTTP/1.1"
    assert headers["host"] == f"127.0.0.1:{server.port}"
    assert headers["content-type"] == "application/json"
    assert int(headers["content-length"]) == len(body)
    doc = json.loads(body)
    assert doc["caller"] == "+358401000001"
    assert doc["site"] == "setera-espoo"
    assert doc["centre"] == "kerava"
    assert doc["civic_address"]["A3"] == "Espoo"


@pytest.mark.asyncio
async def test_retries_5xx_with_doubling_backoff_then_delivers() -> None:
    sleeps = Sleeps()
    async with http_server([503, 500, 200]) as server:
        config = NotifyConfig(urls=(server.url,), attempts=5, backoff=0.25, backoff_max=10)
        async with EmergencyNotifier(config, sleep=sleeps) as notifier:
            notifier(*office_call())
        assert len(server.requests) == 3
        assert {r[2] for r in server.requests} == {server.requests[0][2]}
    assert sleeps.waits == [0.25, 0.5]
    assert (notifier.delivered, notifier.failed) == (1, 0)


@pytest.mark.asyncio
async def test_gives_up_after_the_configured_attempts() -> None:
    sleeps = Sleeps()
    async with http_server([502]) as server:
        config = NotifyConfig(urls=(server.url,), attempts=4, backoff=1.0, backoff_max=3.0)
        async with EmergencyNotifier(config, sleep=sleeps) as notifier:
            notifier(*office_call())
        assert len(server.requests) == 4
    assert sleeps.waits == [1.0, 2.0, 3.0]
    assert (notifier.delivered, notifier.failed) == (0, 1)


@pytest.mark.asyncio
async def test_client_error_is_not_retried() -> None:
    sleeps = Sleeps()
    async with http_server([404, 200]) as server:
        config = NotifyConfig(urls=(server.url,), attempts=4)
        async with EmergencyNotifier(config, sleep=sleeps) as notifier:
            notifier(*office_call())
        assert len(server.requests) == 1
    assert sleeps.waits == []
    assert (notifier.delivered, notifier.failed) == (0, 1)


@pytest.mark.asyncio
async def test_connection_refused_is_retried() -> None:
    sleeps = Sleeps()
    port = free_port("127.0.0.1")  # nothing listens there
    config = NotifyConfig(urls=(f"http://127.0.0.1:{port}/x",), attempts=3, backoff=0.1)
    async with EmergencyNotifier(config, sleep=sleeps) as notifier:
        notifier(*office_call())
    assert sleeps.waits == [0.1, 0.2]
    assert (notifier.delivered, notifier.failed) == (0, 1)


@pytest.mark.asyncio
async def test_silent_server_is_timed_out_and_retried() -> None:
    sleeps = Sleeps()
    async with http_server([None, 201]) as server:
        config = NotifyConfig(urls=(server.url,), attempts=3, timeout=0.2)
        async with EmergencyNotifier(config, sleep=sleeps) as notifier:
            started = time.monotonic()
            notifier(*office_call())
            while notifier.delivered + notifier.failed == 0:
                assert time.monotonic() - started < 5, "delivery did not finish"
                await asyncio.sleep(0.01)
        assert len(server.requests) == 2
    assert (notifier.delivered, notifier.failed) == (1, 0)


@pytest.mark.asyncio
async def test_hook_never_waits_and_drops_beyond_the_queue() -> None:
    # A webhook that never answers and a queue of 2: the hook must still return at
    # once for every call, dropping what does not fit.
    async with http_server([None]) as server:
        config = NotifyConfig(urls=(server.url,), queue_size=2, timeout=30)
        notifier = EmergencyNotifier(config)
        await notifier.start()
        try:
            args = office_call()
            durations = []
            for _ in range(50):
                started = time.perf_counter()
                notifier(*args)
                durations.append(time.perf_counter() - started)
            await asyncio.wait_for(server.arrived.wait(), 5)
        finally:
            await notifier.close(timeout=0.1)
    assert max(durations) < 0.005, durations
    assert notifier.dropped == 50 - 2
    assert notifier.delivered == 0


@pytest.mark.asyncio
async def test_customer_urls_add_to_the_global_one() -> None:
    async with http_server([200]) as noc, http_server([200]) as reception:
        config = NotifyConfig(
            urls=(noc.url,),
            customer_urls={"setera": (reception.url, noc.url), "esimerkki": ("http://x/",)},
        )
        async with EmergencyNotifier(config) as notifier:
            notifier(*office_call())
        assert len(noc.requests) == 1
        assert len(reception.requests) == 1
    assert notifier.delivered == 2


def test_config_reuses_the_routing_webhook() -> None:
    routing = RoutingConfig(notification_webhook="https://noc.example/112")
    config = NotifyConfig.from_table(Table({}, "notify"), routing=routing)
    assert config.urls == ("https://noc.example/112",)
    table = Table(
        {
            "url": "http://127.0.0.1:9/own",
            "attempts": 2,
            "backoff": 0.1,
            "customers": {"setera": "http://a/", "esimerkki": ["http://b/", "http://c/"]},
        },
        "notify",
    )
    config = NotifyConfig.from_table(table, routing=routing)
    assert config.urls == ("http://127.0.0.1:9/own",)
    assert config.attempts == 2
    assert config.urls_for("esimerkki") == ("http://127.0.0.1:9/own", "http://b/", "http://c/")
    assert config.urls_for(None) == ("http://127.0.0.1:9/own",)


@pytest.mark.parametrize(
    ("doc", "field_name"),
    [
        ({"url": "ftp://x/"}, "notify.url"),
        ({"customers": {"setera": "mailto:a@b"}}, "notify.customers.setera"),
        ({"customers": {"setera": [1]}}, "notify.customers.setera"),
        ({"attempts": 0}, "notify.attempts"),
        ({"backoff": 2.0, "backoff_max": 1.0}, "notify.backoff_max"),
        ({"retries": 3}, "notify.retries"),
    ],
)
def test_config_errors_name_the_field(doc: dict[str, object], field_name: str) -> None:
    with pytest.raises(ConfigError) as info:
        NotifyConfig.from_table(Table(doc, "notify"))
    assert info.value.field == field_name


def test_webhook_url_parts() -> None:
    url = WebhookUrl.parse("https://[::1]:8443/a/b?c=d")
    assert (url.tls, url.host, url.port, url.target) == (True, "::1", 8443, "/a/b?c=d")
    assert url.authority == "[::1]:8443"
    assert WebhookUrl.parse("http://h.example").authority == "h.example"
    assert WebhookUrl.parse("http://h.example").target == "/"
    with pytest.raises(ValueError, match="http"):
        WebhookUrl.parse("http:///nohost")
