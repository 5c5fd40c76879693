"""The shipped baresip phones (deploy/demo/baresip/*), driven through ``ctrl_tcp``.

:class:`ShippedPhone` copies one shipped configuration into a work directory,
rewritten only for ports and paths (the gateway's SIP port, the phone's own SIP,
control and RTP ports, the microphone file and the directory of what it heard), starts
baresip on it, and talks to its ``ctrl_tcp`` module: commands and events are JSON in
netstrings (``len:json,``), so a test waits for REGISTER_OK or CALL_ESTABLISHED
instead of reading a terminal.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np

from tests.interop.sipp import free_port
from tests.media.harness import find_baresip, read_wav

ROOT = Path(__file__).resolve().parents[2]
SHIPPED = ROOT / "deploy" / "demo" / "baresip"
#: Ports a shipped configuration uses (moved to free ones in the copy).
GATEWAY_PORT = 5060


def rewrite_config(text: str, *, sip_port: int, ctrl_port: int, rtp_port: int, heard: Path) -> str:
    """The shipped ``config`` with ports and paths moved; every other line as shipped."""
    out = []
    for line in text.splitlines():
        key, _, value = line.partition("\t")
        value = value.strip()
        if key == "sip_listen":
            line = f"{key}\t\t{value.rsplit(':', 1)[0]}:{sip_port}"
        elif key == "ctrl_tcp_listen":
            line = f"{key}\t\t{value.rsplit(':', 1)[0]}:{ctrl_port}"
        elif key == "rtp_ports":
            line = f"{key}\t\t{rtp_port}-{rtp_port + 40}"
        elif key == "snd_path":
            line = f"{key}\t\t{heard}"
        elif key == "audio_source":
            module, _, path = value.partition(",")
            line = f"{key}\t\t{module},{ROOT / path}"
        out.append(line)
    return "\n".join(out) + "\n"


def rewrite_accounts(text: str, gateway_port: int) -> str:
    """The shipped ``accounts`` registering with the test's gateway port."""
    moved, count = re.subn(rf"@127\.0\.0\.1:{GATEWAY_PORT}>", f"@127.0.0.1:{gateway_port}>", text)
    assert count == 1, f"no account for 127.0.0.1:{GATEWAY_PORT} in:\n{text}"
    return moved


def setting(text: str, key: str) -> str:
    """The value of one ``key value`` line of a baresip config."""
    for line in text.splitlines():
        name, _, value = line.partition("\t")
        if name == key:
            return value.strip()
    raise KeyError(key)


class ShippedPhone:
    """One shipped baresip phone ("office" or "nomadic") registering with a gateway.

    Args:
        role: the directory under deploy/demo/baresip.
        workdir: where the rewritten copy, its log and its recordings go.
        gateway_port: the test gateway's UDP SIP port on 127.0.0.1.
    """

    def __init__(self, role: str, workdir: Path, gateway_port: int) -> None:
        self.role = role
        self.dir = workdir / role
        self.heard_dir = self.dir / "heard"
        self.gateway_port = gateway_port
        shipped = (SHIPPED / role / "config").read_text(encoding="utf-8")
        self.host = setting(shipped, "sip_listen").rsplit(":", 1)[0]
        self.ctrl_port = free_port(self.host)
        self.proc: asyncio.subprocess.Process | None = None
        self.events: list[dict[str, Any]] = []
        self._responses: dict[str, dict[str, Any]] = {}
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._pump: asyncio.Task[None] | None = None
        self._token = 0
        self._changed = asyncio.Event()

    def configure(self) -> None:
        self.heard_dir.mkdir(parents=True, exist_ok=True)
        shipped = (SHIPPED / self.role / "config").read_text(encoding="utf-8")
        (self.dir / "config").write_text(
            rewrite_config(
                shipped,
                sip_port=free_port(self.host),
                ctrl_port=self.ctrl_port,
                rtp_port=free_port(self.host) & ~1,
                heard=self.heard_dir,
            )
        )
        accounts = (SHIPPED / self.role / "accounts").read_text(encoding="utf-8")
        (self.dir / "accounts").write_text(rewrite_accounts(accounts, self.gateway_port))
        shutil.copy(SHIPPED / self.role / "contacts", self.dir / "contacts")

    async def start(self) -> None:
        """Starts baresip (stdin kept open, as on a terminal) and connects to ctrl_tcp."""
        self.configure()
        self.log = (self.dir / "baresip.log").open("wb")
        self.proc = await asyncio.create_subprocess_exec(
            find_baresip(),
            "-f",
            str(self.dir),
            stdin=asyncio.subprocess.PIPE,
            stdout=self.log,
            stderr=asyncio.subprocess.STDOUT,
            cwd=self.dir,
            start_new_session=True,
        )
        deadline = time.monotonic() + 10
        while True:
            try:
                self._reader, self._writer = await asyncio.open_connection(
                    self.host, self.ctrl_port
                )
                break
            except OSError:
                if time.monotonic() > deadline or self.proc.returncode is not None:
                    raise AssertionError(f"baresip ctrl_tcp not up:\n{self.log_text()}") from None
                await asyncio.sleep(0.1)
        self._pump = asyncio.create_task(self._read())

    async def _read(self) -> None:
        assert self._reader is not None
        while True:
            try:
                size = await self._reader.readuntil(b":")
                payload = await self._reader.readexactly(int(size[:-1]) + 1)
            except (asyncio.IncompleteReadError, ValueError, OSError):
                return
            message = json.loads(payload[:-1])
            if message.get("event"):
                message["at"] = time.monotonic()
                self.events.append(message)
            elif "token" in message:
                self._responses[str(message["token"])] = message
            self._changed.set()

    async def command(self, command: str, params: str = "", limit: float = 5.0) -> dict[str, Any]:
        """Runs one baresip command (``dial``, ``hangup`` ...) and returns its response."""
        assert self._writer is not None
        self._token += 1
        token = str(self._token)
        body = json.dumps({"command": command, "params": params, "token": token}).encode()
        self._writer.write(str(len(body)).encode() + b":" + body + b",")
        await self._writer.drain()
        await self._until(lambda: token in self._responses, f"response to {command}", limit)
        return self._responses.pop(token)

    async def event(self, kind: str, limit: float, *, after: int = 0) -> dict[str, Any]:
        """Waits for an event of type ``kind`` (REGISTER_OK, CALL_ESTABLISHED ...)
        among the events from index ``after`` on."""
        await self._until(
            lambda: any(e.get("type") == kind for e in self.events[after:]), kind, limit
        )
        return next(e for e in self.events[after:] if e.get("type") == kind)

    async def registered(self, limit: float) -> str:
        """Waits until the account is registered; returns baresip's registration info.

        baresip may register before the control connection is up, so its REGISTER_OK
        event can be gone: ``reginfo`` says where the account stands.
        """
        deadline = time.monotonic() + limit
        while True:
            info = str((await self.command("reginfo")).get("data", ""))
            if "OK" in info or any(e.get("type") == "REGISTER_OK" for e in self.events):
                return info
            if time.monotonic() > deadline:
                raise AssertionError(f"{self.role} phone not registered: {info}\n{self.log_text()}")
            await asyncio.sleep(0.25)

    async def _until(self, done: Any, what: str, limit: float) -> None:
        deadline = time.monotonic() + limit
        while not done():
            remaining = deadline - time.monotonic()
            if remaining <= 0 or (self.proc is not None and self.proc.returncode is not None):
                kinds = [e.get("type") for e in self.events]
                raise AssertionError(
                    f"{self.role} phone: no {what} in {limit}s (events {kinds});"
                    f" baresip log:\n{self.log_text()}"
                )
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), min(remaining, 0.5))

    def heard(self) -> list[np.ndarray]:
        """What the phone decoded, one array per audio stream, in order (sndfile)."""
        dumps = sorted(self.heard_dir.glob("dump-*-dec.wav"))
        return [read_wav(path)[0] for path in dumps]

    def log_text(self) -> str:
        path = self.dir / "baresip.log"
        return path.read_text(errors="replace")[-5000:] if path.exists() else ""

    async def stop(self) -> None:
        if self._writer is not None:
            self._writer.close()
        if self._pump is not None:
            self._pump.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._pump
        proc = self.proc
        if proc is not None and proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                proc.terminate()
            try:
                await asyncio.wait_for(proc.wait(), 5.0)
            except TimeoutError:
                proc.kill()
                await proc.wait()
        if getattr(self, "log", None) is not None:
            self.log.close()
