"""Helpers for tests that drive external programs (marker ``tool``: missing = FAIL)."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

import pytest

from gateway.ops.http_status import StatusServer

REPO = Path(__file__).resolve().parents[2]
PROMETHEUS_DIR = REPO / "deploy" / "prometheus"


def require(program: str) -> str:
    """Returns the path of ``program``, failing (not skipping) the test when absent."""
    path = shutil.which(program)
    if path is None:
        pytest.fail(f"{program} not found: install it (make tools installs Debian prometheus)")
    return path


async def scrape(server: StatusServer, accept: str | None = None) -> bytes:
    """GETs /metrics from a running StatusServer and returns the body."""
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    try:
        request = "GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        if accept:
            request += f"Accept: {accept}\r\n"
        writer.write((request + "\r\n").encode())
        raw = await asyncio.wait_for(reader.read(), 5)
    finally:
        writer.close()
    head, _, body = raw.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 "), head
    return body
