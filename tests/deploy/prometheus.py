"""A real Prometheus server for tests, and a small client of its HTTP API.

Shared by the deploy tests (rules on a StatusServer) and the operations tests (a
running gateway): the server scrapes one target every second and is stopped on exit.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import urllib.parse
import urllib.request
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from tests.deploy.tools import require

WAIT_SECONDS = 20.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Prometheus:
    def __init__(self, port: int) -> None:
        self.base = f"http://127.0.0.1:{port}"

    def _get(self, path: str, **params: str) -> Any:
        url = f"{self.base}{path}?{urllib.parse.urlencode(params)}"
        with urllib.request.urlopen(url, timeout=5) as response:
            return json.load(response)

    async def get(self, path: str, **params: str) -> Any:
        # urllib blocks; the StatusServer being scraped shares this event loop.
        return await asyncio.to_thread(self._get, path, **params)

    async def query(self, promql: str) -> list[dict[str, Any]]:
        document = await self.get("/api/v1/query", query=promql)
        assert document["status"] == "success", document
        return list(document["data"]["result"])

    async def wait_for(
        self, what: str, probe: Callable[[], Any], check: Callable[[Any], bool]
    ) -> Any:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + WAIT_SECONDS
        last: Any = None
        while loop.time() < deadline:
            try:
                last = await probe()
            except OSError as exc:  # not listening yet
                last = exc
            else:
                if check(last):
                    return last
            await asyncio.sleep(0.25)
        pytest.fail(f"timed out waiting for {what}; last answer: {last!r}")

    async def wait_value(self, promql: str, expected: float) -> None:
        def check(result: list[dict[str, Any]]) -> bool:
            return len(result) == 1 and float(result[0]["value"][1]) == expected

        await self.wait_for(f"{promql} == {expected}", lambda: self.query(promql), check)


@contextlib.asynccontextmanager
async def prometheus_server(
    target: str, workdir: Path, *, rules: str | None = None
) -> AsyncIterator[Prometheus]:
    """``/usr/bin/prometheus`` scraping ``target`` every second (and evaluating
    ``rules``, a file name in ``workdir``, every second); yields a client once the
    target is up."""
    binary = require("prometheus")
    rule_lines = f"  evaluation_interval: 1s\nrule_files: [{rules}]\n" if rules else ""
    (workdir / "prometheus.yml").write_text(
        "global:\n"
        "  scrape_interval: 1s\n"
        f"{rule_lines}"
        "scrape_configs:\n"
        "  - job_name: voipgw\n"
        "    scrape_interval: 1s\n"
        "    scrape_timeout: 1s\n"
        "    static_configs:\n"
        f"      - targets: ['{target}']\n"
    )
    port = free_port()
    with (workdir / "prometheus.log").open("wb") as log:
        proc = await asyncio.create_subprocess_exec(
            binary,
            f"--config.file={workdir / 'prometheus.yml'}",
            f"--storage.tsdb.path={workdir / 'prometheus-data'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--log.level=warn",
            stdout=log,
            stderr=log,
        )
    prom = Prometheus(port)
    try:
        await prom.wait_for(
            "the scrape target to be up",
            lambda: prom.query('up{job="voipgw"}'),
            lambda r: len(r) == 1 and r[0]["value"][1] == "1",
        )
        yield prom
    finally:
        if proc.returncode is None:
            proc.terminate()
            try:
                await asyncio.wait_for(proc.wait(), 10)
            except TimeoutError:
                proc.kill()
                await proc.wait()
