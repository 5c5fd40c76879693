"""HTTP status listener: ``/metrics`` for Prometheus, ``/healthz`` and ``/readyz``.

A deliberately small HTTP/1.1 server on ``asyncio.start_server``. It is not aiohttp
because that is not a dependency we chose for a SIP gateway, and not
prometheus-client's ``start_http_server`` because that runs its own thread with no
readiness hook and no bound on request size. The only requests it has to understand
are ``GET``/``HEAD`` of three paths from Prometheus, a load balancer or an
orchestrator, so the parser reads one request head, answers, and closes the
connection (``Connection: close``): no keep-alive, no request bodies, no pipelining.

Endpoints:

* ``/metrics``: the registry in the Prometheus text format, or OpenMetrics when the
  ``Accept`` header asks for ``application/openmetrics-text``.
* ``/healthz``: 200 while the process runs its event loop (liveness).
* ``/readyz``: 200 when every readiness check is true, else 503; both with a JSON
  body naming each check, so an operator sees what is not ready. Dependencies the
  gateway works without for a while (PostgreSQL: calls go on, CDRs spool) are
  reported in the body (``dependencies``, ``degraded``) without failing readiness:
  an outage of the database every instance shares must not take every instance out
  of its pool at once.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable

from prometheus_client.exposition import choose_encoder

from gateway.ops.metrics import Metrics

__all__ = ["MAX_HEAD_BYTES", "ReadinessChecks", "StatusServer"]

logger = logging.getLogger(__name__)

#: Longest request head (request line and headers) accepted; Prometheus sends ~300 bytes.
MAX_HEAD_BYTES = 8192
#: Seconds a client has to send its whole request head.
REQUEST_TIMEOUT = 5.0
#: Connections served at once; more are closed unanswered (a scrape storm or a scan).
MAX_CONNECTIONS = 32

_REASONS = {
    200: "OK",
    400: "Bad Request",
    404: "Not Found",
    405: "Method Not Allowed",
    408: "Request Timeout",
    431: "Request Header Fields Too Large",
    500: "Internal Server Error",
    503: "Service Unavailable",
    505: "HTTP Version Not Supported",
}


class ReadinessChecks:
    """Named readiness checks that the gateway registers as its parts come up.

    Calling the instance runs every check and returns ``{name: ready}``; pass it as
    the ``readiness`` argument of :class:`StatusServer`. A check that raises counts as
    not ready (and is logged), so one broken check cannot take down the listener.
    """

    def __init__(self) -> None:
        self._checks: dict[str, Callable[[], bool]] = {}
        self._dependencies: dict[str, Callable[[], bool]] = {}

    def register(self, name: str, check: Callable[[], bool]) -> None:
        """Adds or replaces the check called ``name`` ("transports", "cdr")."""
        self._checks[name] = check

    def register_dependency(self, name: str, check: Callable[[], bool]) -> None:
        """Adds or replaces a dependency reported on ``/readyz`` ("database") whose
        being down degrades the gateway without making it unready."""
        self._dependencies[name] = check

    def __call__(self) -> dict[str, bool]:
        return self._run(self._checks)

    def dependencies(self) -> dict[str, bool]:
        """Runs every dependency check: ``{name: up}``."""
        return self._run(self._dependencies)

    def _run(self, checks: dict[str, Callable[[], bool]]) -> dict[str, bool]:
        result = {}
        for name, check in checks.items():
            try:
                result[name] = bool(check())
            except Exception:
                # A readiness probe must answer; the failure itself is the answer.
                logger.exception("readiness check %r failed", name)
                result[name] = False
        return result


class _HttpError(Exception):
    def __init__(self, status: int, text: str) -> None:
        super().__init__(text)
        self.status = status
        self.text = text


class StatusServer:
    """Serves /metrics, /healthz and /readyz on one TCP address.

    Args:
        metrics: whose registry ``/metrics`` exports.
        readiness: returns ``{check name: ready}``; ``/readyz`` is 200 only when the
            dict is non-empty and every value is true. An empty dict is not ready:
            a gateway that registered no check has not started its transports.
        host: address to bind.
        port: port to bind; 0 picks a free one, readable from :attr:`port`.
        request_timeout: seconds a client has to send its request head.
        max_head_bytes: longest request head accepted (431 beyond).
        dependencies: returns ``{dependency: up}``, reported by ``/readyz`` without
            deciding its status.
        exposition: when given, ``/metrics`` answers with what it returns for the
            request's Accept header, ``(content type, body)``, instead of
            ``metrics``' registry (the worker supervisor merges its workers' scrapes).
    """

    def __init__(
        self,
        metrics: Metrics | None,
        readiness: Callable[[], dict[str, bool]],
        host: str = "127.0.0.1",
        port: int = 9464,
        *,
        request_timeout: float = REQUEST_TIMEOUT,
        max_head_bytes: int = MAX_HEAD_BYTES,
        dependencies: Callable[[], dict[str, bool]] | None = None,
        exposition: Callable[[str], Awaitable[tuple[str, bytes]]] | None = None,
    ) -> None:
        if metrics is None and exposition is None:
            raise ValueError("StatusServer needs metrics or an exposition")
        self.metrics = metrics
        self.exposition = exposition
        self.readiness = readiness
        self.dependencies = dependencies
        self.host = host
        self._port = port
        self.request_timeout = request_timeout
        self.max_head_bytes = max_head_bytes
        self._server: asyncio.Server | None = None
        self._connections: set[asyncio.Task[None]] = set()

    @property
    def port(self) -> int:
        """The bound port (the real one when constructed with port 0)."""
        return self._port

    async def start(self) -> None:
        """Binds the listener; raises OSError when the address is unavailable."""
        self._server = await asyncio.start_server(
            self._on_connection, self.host, self._port, limit=self.max_head_bytes
        )
        self._port = self._server.sockets[0].getsockname()[1]
        logger.info("status listener on %s port %d", self.host, self._port)

    async def close(self) -> None:
        """Stops listening and ends the connections being served."""
        if self._server is None:
            return
        self._server.close()
        for task in list(self._connections):
            task.cancel()
        await asyncio.gather(*self._connections, return_exceptions=True)
        await self._server.wait_closed()
        self._server = None

    async def _on_connection(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        task = asyncio.current_task()
        assert task is not None
        if len(self._connections) >= MAX_CONNECTIONS:
            writer.close()
            return
        self._connections.add(task)
        try:
            await self._serve(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass  # The client went away; nothing to answer.
        finally:
            self._connections.discard(task)
            writer.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head_only = False
        try:
            try:
                async with asyncio.timeout(self.request_timeout):
                    head = await reader.readuntil(b"\r\n\r\n")
            except TimeoutError:
                raise _HttpError(408, "request head not received in time") from None
            except asyncio.LimitOverrunError:
                raise _HttpError(431, "request head too large") from None
            method, path, headers = _parse_head(head)
            head_only = method == "HEAD"
            status, content_type, body = self._route(method, path, headers)
            if path == "/metrics" and self.exposition is not None:
                content_type, body = await self.exposition(headers.get("accept", ""))
        except _HttpError as exc:
            status, content_type, body = exc.status, "text/plain; charset=utf-8", exc.text.encode()
            body += b"\n"
        await _respond(writer, status, content_type, body, head_only=head_only)

    def _route(self, method: str, path: str, headers: dict[str, str]) -> tuple[int, str, bytes]:
        if path not in ("/metrics", "/healthz", "/readyz"):
            raise _HttpError(404, "not found")
        if method not in ("GET", "HEAD"):
            raise _HttpError(405, "only GET and HEAD")
        if path == "/metrics":
            if self.metrics is None:
                return 200, "", b""  # answered by self.exposition
            encoder, content_type = choose_encoder(headers.get("accept", ""))
            # Collecting is a few hundred microseconds of CPU for our ~25 families:
            # cheaper inline than a hop to a thread pool.
            return 200, content_type, encoder(self.metrics.registry)
        if path == "/healthz":
            return 200, "text/plain; charset=utf-8", b"ok\n"
        return self._readyz()

    def _readyz(self) -> tuple[int, str, bytes]:
        try:
            checks = {str(k): bool(v) for k, v in self.readiness().items()}
        except Exception:
            # The probe must answer even when the gateway's callback is broken.
            logger.exception("readiness callback failed")
            checks = {"readiness_callback": False}
        not_ready = sorted(name for name, ok in checks.items() if not ok)
        if not checks:
            not_ready = ["no readiness checks registered"]
        ready = not not_ready
        document: dict[str, object] = {"ready": ready, "checks": checks, "not_ready": not_ready}
        if self.dependencies is not None:
            try:
                dependencies = {str(k): bool(v) for k, v in self.dependencies().items()}
            except Exception:
                # The probe must answer even when the gateway's callback is broken.
                logger.exception("dependencies callback failed")
                dependencies = {"dependencies_callback": False}
            document["dependencies"] = dependencies
            document["degraded"] = sorted(name for name, up in dependencies.items() if not up)
        body = (json.dumps(document, sort_keys=True) + "\n").encode()
        return (200 if ready else 503), "application/json", body


def _parse_head(head: bytes) -> tuple[str, str, dict[str, str]]:
    """Parses ``request-line *(header-field CRLF) CRLF`` (RFC 9112 section 2.1).

    Returns:
        (method, path without query, headers with lower-case names).

    Raises:
        _HttpError: 400 for a malformed line, 505 for a version other than HTTP/1.x.
    """
    try:
        text = head.decode("ascii")
    except UnicodeDecodeError:
        raise _HttpError(400, "request head is not ASCII") from None
    request_line, *lines = text[:-4].split("\r\n")
    # request-line = method SP request-target SP HTTP-version (RFC 9112 section 3)
    parts = request_line.split(" ")
    if len(parts) != 3 or not parts[0].isalpha() or not parts[1].startswith("/"):
        raise _HttpError(400, "malformed request line")
    method, target, version = parts
    if version not in ("HTTP/1.0", "HTTP/1.1"):
        raise _HttpError(505, "only HTTP/1.0 and HTTP/1.1")
    headers = {}
    for line in lines:
        name, colon, value = line.partition(":")
        # RFC 9112 section 5.1: "No whitespace is allowed between the field name and
        # colon." A server MUST reject such a request with 400.
        if not colon or not name or name != name.strip():
            raise _HttpError(400, "malformed header field")
        headers[name.lower()] = value.strip()
    return method, target.partition("?")[0], headers


async def _respond(
    writer: asyncio.StreamWriter,
    status: int,
    content_type: str,
    body: bytes,
    *,
    head_only: bool,
) -> None:
    head = (
        f"HTTP/1.1 {status} {_REASONS[status]}\r\n"
        f"Content-Type: {content_type}\r\n"
        f"Content-Length: {len(body)}\r\n"
        "Cache-Control: no-store\r\n"
        "Connection: close\r\n"
        "\r\n"
    ).encode("ascii")
    writer.write(head if head_only else head + body)
    await writer.drain()
