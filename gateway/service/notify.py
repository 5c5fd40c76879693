"""Emergency call notification: an HTTP webhook told of every emergency call.

The delivery terms route office emergency calls to the nearest centre and nomadic
ones by policy; either way the customer's on-site contact (a reception desk, a
security service) and the operator's NOC want to know at once that someone called
112, from where, and which centre got the call. :class:`EmergencyNotifier` is the
``notify`` hook of :class:`gateway.service.router.CallRouter`:

* Rule 1: the hook never delays the call. It builds the JSON body (a few
  microseconds) and puts one delivery per URL on a bounded :class:`asyncio.Queue`
  with ``put_nowait``; when the queue is full the notification is dropped and
  counted, never awaited. Worker tasks do the network I/O.
* Rule 2: delivery is retried a bounded number of times with exponential backoff
  (``backoff``, doubled each time, capped at ``backoff_max``), each attempt bounded
  by ``timeout``. Connection errors, timeouts, 408, 429 and 5xx are retried (RFC
  9110 section 15.6: a 5xx may be temporary; 408/429 ask for a later try); any
  other status is final (a 4xx will not heal by repetition).
* Rule 3: redirects are not followed: a webhook carries a caller's number and
  location, and a 3xx pointing elsewhere must not move them to a host nobody
  configured.

The body (``application/json``)::

    {"event": "emergency-call", "time": "2026-11-22T14:56:30.123Z",
     "caller": "+358401000001", "callback": "tel:+358401000001",   # null: none
     "customer": "setera", "class": "office",
     "site": "setera-espoo",            # or "nomadic"
     "civic_address": {"country": "FI", "A1": "Uusimaa", "A3": "Espoo", ...},  # or null
     "location_verified": true, "location_source": "site-address",  # declared-address, device, none
     "device_location": "circle 60.17 24.94 r=15 m",   # or null; the device's own (RFC 6442)
     "device_location_ignored": null,                   # or why it was not forwarded
     "centre": "kerava", "centres": ["kerava", "turku", ...],
     "action": "route", "dialled": "112", "call_id": "..."}

``civic_address`` is exactly what the PIDF-LO carries (RFC 5139 element names), or
null when the gateway sends no address (nomadic calls). ``centre`` is the first
centre tried; failover after the notification is not reported again.

Why asyncio streams and not an HTTP client library: one small POST per emergency
call needs no pool, cookies or redirects, and the emergency path should not grow a
dependency (and its upgrades) for that. ``asyncio.open_connection`` with the
standard :mod:`ssl` context gives HTTP/1.1 over TCP or TLS in about sixty lines.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import logging
import ssl
import urllib.parse
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from types import TracebackType

from routing.config import RoutingConfig
from routing.configfields import ConfigError, Table
from routing.decision import RoutingDecision
from routing.model import CallClass, CallContext

log = logging.getLogger("voipgw.notify")

#: Longest status line read from a webhook server (RFC 9112 section 4; bounded so a
#: broken server cannot make the worker buffer without end).
MAX_STATUS_LINE = 8192

#: Statuses worth another try (RFC 9110 15.5.9 408, RFC 6585 4 429, 15.6 5xx).
RETRY_STATUSES = frozenset({408, 429}) | frozenset(range(500, 600))

#: Number of concurrent deliveries: one slow webhook must not hold up the others.
WORKERS = 4


class WebhookError(Exception):
    """One delivery attempt failed.

    Attributes:
        retry: another attempt may succeed.
    """

    def __init__(self, message: str, *, retry: bool) -> None:
        super().__init__(message)
        self.retry = retry


@dataclass(frozen=True, slots=True)
class WebhookUrl:
    """A parsed ``http://`` or ``https://`` webhook URL."""

    url: str
    tls: bool
    host: str
    port: int
    target: str
    """Path and query, the request-target of the POST (RFC 9112 section 3.2.1)."""

    @classmethod
    def parse(cls, url: str) -> WebhookUrl:
        """Parses a webhook URL.

        Args:
            url: ``http://host[:port]/path?query`` or ``https://...``.

        Returns:
            The parts.

        Raises:
            ValueError: not an absolute http(s) URL with a host.
        """
        parts = urllib.parse.urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"expected an http(s) URL with a host, got {url!r}")
        tls = parts.scheme == "https"
        try:
            port = parts.port or (443 if tls else 80)
        except ValueError as exc:
            raise ValueError(f"bad port in {url!r}: {exc}") from None
        target = parts.path or "/"
        if parts.query:
            target += "?" + parts.query
        return cls(url=url, tls=tls, host=parts.hostname, port=port, target=target)

    @property
    def authority(self) -> str:
        """The Host header value (RFC 9110 section 7.2); IPv6 literals in brackets."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        default = 443 if self.tls else 80
        return host if self.port == default else f"{host}:{self.port}"


@dataclass(frozen=True, slots=True, kw_only=True)
class NotifyConfig:
    """Where and how emergency notifications are sent.

    Read from a ``[notify]`` table by :meth:`from_table`::

        [notify]
        url = "https://noc.example/hooks/112"   # default: routing.notification_webhook
        attempts = 4                             # deliveries tried per URL
        backoff = 0.5                            # seconds before the 2nd attempt, doubled
        backoff_max = 8.0                        # cap of the wait between attempts
        timeout = 5.0                            # seconds per attempt
        queue_size = 1000                        # pending deliveries; more are dropped
        [notify.customers]                       # per customer, on top of the global URL
        setera = "https://reception.setera.example/112"
        esimerkki = ["https://a.example/hook", "https://b.example/hook"]
    """

    urls: tuple[str, ...] = ()
    """Global URLs, told of every emergency call."""
    customer_urls: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    """Customer id -> URLs told of that customer's emergency calls."""
    attempts: int = 4
    backoff: float = 0.5
    """Seconds before the second attempt; doubled before each later one."""
    backoff_max: float = 8.0
    """Longest wait between two attempts, in seconds."""
    timeout: float = 5.0
    """Seconds one attempt may take (connect, send, read the status line)."""
    queue_size: int = 1000

    def __post_init__(self) -> None:
        for url in (*self.urls, *(u for us in self.customer_urls.values() for u in us)):
            WebhookUrl.parse(url)
        if self.attempts < 1 or self.queue_size < 1:
            raise ValueError("attempts and queue_size must be at least 1")
        if self.backoff < 0 or self.backoff_max < self.backoff or self.timeout <= 0:
            raise ValueError("need 0 <= backoff <= backoff_max and timeout > 0")

    def urls_for(self, customer: str | None) -> tuple[str, ...]:
        """The URLs to tell of an emergency call of ``customer``, each once.

        Args:
            customer: the caller's customer id, or None for an unknown caller.

        Returns:
            Global URLs first, then the customer's.
        """
        extra = self.customer_urls.get(customer, ()) if customer is not None else ()
        return tuple(dict.fromkeys((*self.urls, *extra)))

    @classmethod
    def from_table(cls, table: Table, *, routing: RoutingConfig | None = None) -> NotifyConfig:
        """Reads a ``[notify]`` table.

        Args:
            table: the table view (an empty table gives the defaults).
            routing: the routing settings, whose ``notification_webhook`` is the
                global URL when the table names none (one setting, not two that
                could disagree).

        Returns:
            The settings.

        Raises:
            ConfigError: naming the bad field.
        """
        d = cls()
        url = table.opt_str("url")
        if url is None and routing is not None:
            url = routing.notification_webhook
        if url is not None:
            _check_url(table, "url", url)
        customers: dict[str, tuple[str, ...]] = {}
        ctable = table.table("customers")
        for customer in ctable.data:
            value = ctable.raw(customer)
            urls = (value,) if isinstance(value, str) else ctable.str_list(customer)
            for url_value in urls:
                _check_url(ctable, customer, url_value)
            customers[customer] = urls
        attempts = table.int("attempts", d.attempts, min=1, max=20)
        backoff = table.float("backoff", d.backoff, min=0.0, max=60.0)
        backoff_max = table.float("backoff_max", d.backoff_max, min=0.0, max=600.0)
        timeout = table.float("timeout", d.timeout, min=0.01, max=60.0)
        queue_size = table.int("queue_size", d.queue_size, min=1, max=1_000_000)
        table.reject_unknown()
        if backoff_max < backoff:
            raise ConfigError(table.field("backoff_max"), "must be >= backoff")
        return cls(
            urls=(url,) if url else (),
            customer_urls=customers,
            attempts=attempts,
            backoff=backoff,
            backoff_max=backoff_max,
            timeout=timeout,
            queue_size=queue_size,
        )


def _check_url(table: Table, key: str, url: str) -> None:
    try:
        WebhookUrl.parse(url)
    except ValueError as exc:
        raise ConfigError(table.field(key), str(exc)) from None


def notification_body(decision: RoutingDecision, ctx: CallContext, *, now: dt.datetime) -> bytes:
    """The JSON document describing one emergency call (see the module docstring).

    Args:
        decision: the routing decision.
        ctx: the call.
        now: when the call was routed (aware datetime).

    Returns:
        UTF-8 JSON.
    """
    address = decision.location.address if decision.location is not None else None
    site = decision.facts.site_id
    office = decision.call_class is CallClass.OFFICE and site is not None
    centres = [t.centre_id for t in decision.targets if t.centre_id]
    subscriber = ctx.subscriber
    facts = decision.facts
    device = facts.device_location
    document = {
        "event": "emergency-call",
        "time": now.astimezone(dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        "caller": subscriber.e164 if subscriber is not None else None,
        # The callback identity the centre got; null: none (an unknown caller).
        "callback": facts.callback,
        # An unknown caller on a site's network is the site's customer's call.
        "customer": facts.customer_id or None,
        "class": decision.call_class.value,
        "site": site if office and site is not None else "nomadic",
        # RFC 5139 element names, as in the PIDF-LO the centre received.
        "civic_address": dict(address.elements()) if address is not None else None,
        "location_verified": bool(decision.location and decision.location.verified),
        "location_source": facts.location_source.value,
        "device_location": device.summary if device is not None else None,
        "device_location_ignored": (
            facts.device_location_ignored.value if facts.device_location_ignored else None
        ),
        "centre": centres[0] if centres else None,
        "centres": centres,
        "action": decision.action.value,
        "dialled": ctx.dialled,
        "call_id": ctx.call_id,
    }
    return json.dumps(document, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


async def post_json(url: WebhookUrl, body: bytes, *, ssl_context: ssl.SSLContext | None) -> int:
    """Sends one HTTP/1.1 POST and returns the status code.

    Only the status line is read: the response body means nothing to the gateway,
    and ``Connection: close`` (RFC 9112 section 9.6) ends the exchange.

    Args:
        url: the webhook.
        body: the JSON document.
        ssl_context: for https URLs.

    Returns:
        The HTTP status code.

    Raises:
        WebhookError: the connection failed or the reply is not HTTP.
    """
    try:
        reader, writer = await asyncio.open_connection(
            url.host,
            url.port,
            ssl=ssl_context if url.tls else None,
            server_hostname=url.host if url.tls else None,
            limit=MAX_STATUS_LINE,
        )
    except OSError as exc:
        raise WebhookError(f"connect: {exc}", retry=True) from None
    try:
        head = (
            f"POST {url.target} HTTP/1.1\r\n"
            f"Host: {url.authority}\r\n"
            "User-Agent: voipgw\r\n"
            "Content-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n"
            "Connection: close\r\n\r\n"
        )
        writer.write(head.encode("ascii") + body)
        await writer.drain()
        line = await reader.readline()
    except (OSError, ValueError) as exc:
        # ValueError: asyncio's LimitOverrunError family for an overlong line.
        raise WebhookError(f"exchange: {exc}", retry=True) from None
    finally:
        writer.close()
        with contextlib.suppress(OSError, ssl.SSLError):
            await writer.wait_closed()
    # RFC 9112 section 4: status-line = HTTP-version SP status-code SP [ reason-phrase ]
    parts = line.split(b" ", 2)
    if len(parts) < 2 or not parts[0].startswith(b"HTTP/1.") or not parts[1].isdigit():
        raise WebhookError(f"not an HTTP status line: {line[:80]!r}", retry=True)
    return int(parts[1])


class EmergencyNotifier:
    """The ``notify`` hook of :class:`gateway.service.router.CallRouter`.

    Use as an async context manager (or :meth:`start`/:meth:`close`) so that the
    worker tasks live on the gateway's loop::

        async with EmergencyNotifier(config) as notifier:
            router.notify = notifier

    Args:
        config: URLs and retry settings.
        clock: returns the current wall time (tests pass a fixed one).
        sleep: waits between attempts (tests pass a recording one).

    Attributes:
        delivered: notifications a server accepted (2xx).
        failed: notifications given up on (attempts exhausted or a final error).
        dropped: notifications dropped because the queue was full.
    """

    def __init__(
        self,
        config: NotifyConfig,
        *,
        clock: Callable[[], dt.datetime] | None = None,
        sleep: Callable[[float], Awaitable[object]] | None = None,
    ) -> None:
        self.config = config
        self._clock = clock or (lambda: dt.datetime.now(dt.UTC))
        self._sleep: Callable[[float], Awaitable[object]] = sleep or asyncio.sleep
        self._queue: asyncio.Queue[tuple[WebhookUrl, bytes]] = asyncio.Queue(config.queue_size)
        self._workers: list[asyncio.Task[None]] = []
        self._ssl: ssl.SSLContext | None = None
        self.delivered = 0
        self.failed = 0
        self.dropped = 0

    async def __aenter__(self) -> EmergencyNotifier:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def start(self) -> None:
        """Starts the delivery workers on the running loop."""
        if any(u.startswith("https:") for u in self._all_urls()):
            self._ssl = ssl.create_default_context()
        self._workers = [asyncio.create_task(self._work()) for _ in range(WORKERS)]

    async def close(self, timeout: float = 2.0) -> None:  # noqa: ASYNC109
        """Waits up to ``timeout`` seconds for pending deliveries, then stops.

        Args:
            timeout: seconds given to queued and running deliveries (shutdown must
                stay bounded; what is left is logged and counted as failed).
        """
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._queue.join(), timeout)
        for task in self._workers:
            task.cancel()
        await asyncio.gather(*self._workers, return_exceptions=True)
        self._workers = []
        left = self._queue.qsize()
        if left:
            log.warning("emergency notifications not delivered at shutdown: %d", left)
            self.failed += left

    def __call__(self, decision: RoutingDecision, ctx: CallContext) -> None:
        """Queues the notification of one emergency call; returns at once.

        Args:
            decision: the routing decision.
            ctx: the call.
        """
        # The facts' customer: the caller's, or the site's for an unknown caller there.
        urls = self.config.urls_for(decision.facts.customer_id or None)
        if not urls:
            return
        body = notification_body(decision, ctx, now=self._clock())
        for url in urls:
            try:
                self._queue.put_nowait((WebhookUrl.parse(url), body))
            except asyncio.QueueFull:
                # Rule 1: a backlog of webhooks must never slow an emergency call.
                self.dropped += 1
                log.warning("emergency notification dropped (queue full): %s", ctx.call_id)

    def _all_urls(self) -> tuple[str, ...]:
        return (*self.config.urls, *(u for us in self.config.customer_urls.values() for u in us))

    async def _work(self) -> None:
        while True:
            url, body = await self._queue.get()
            try:
                await self._deliver(url, body)
            finally:
                self._queue.task_done()

    async def _deliver(self, url: WebhookUrl, body: bytes) -> None:
        config = self.config
        delay = config.backoff
        for attempt in range(1, config.attempts + 1):
            try:
                async with asyncio.timeout(config.timeout):
                    status = await post_json(url, body, ssl_context=self._ssl)
                if 200 <= status <= 299:
                    self.delivered += 1
                    return
                error = WebhookError(f"HTTP {status}", retry=status in RETRY_STATUSES)
            except TimeoutError:
                error = WebhookError(f"no answer in {config.timeout}s", retry=True)
            except WebhookError as exc:
                error = exc
            except ssl.SSLError as exc:
                error = WebhookError(f"TLS: {exc}", retry=False)
            # The URL may carry a secret token in its path or query: log the host only.
            log.warning(
                "emergency webhook %s attempt %d/%d: %s",
                url.authority,
                attempt,
                config.attempts,
                error,
            )
            if not error.retry or attempt == config.attempts:
                break
            await self._sleep(delay)
            delay = min(config.backoff_max, delay * 2)
        self.failed += 1


__all__ = [
    "EmergencyNotifier",
    "NotifyConfig",
    "WebhookError",
    "WebhookUrl",
    "notification_body",
    "post_json",
]
