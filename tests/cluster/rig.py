"""Several ``voipgw run`` instances on one PostgreSQL, and a phone behind a NAT.

* :func:`start_instance` writes an ops-harness configuration (tests/ops/harness.py)
  on the shared database with a ``[cluster]`` section naming the instance and its
  ``sip_uri``, and starts it. Every instance and the PBX stand-in sit on 127.0.0.1,
  which the configuration trusts: sibling instances are trusted peers, as
  deploy/OPERATIONS.md "Several instances" asks.
* :class:`Kamailio` runs the reference dispatcher (deploy/cluster/kamailio.cfg) in
  the foreground on a loopback address with its own pid file, runtime directory and
  dispatcher list, and stops only the processes it started.
* :class:`NatPhone` is a phone behind a NAT: a UDP user agent (answers INVITE, BYE)
  on the port its REGISTER was sent from, which takes in only datagrams from the
  one address the NAT mapping was opened towards (the instance it registered with)
  and drops the others, recording both.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import tempfile
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest

from tests.emergency.rig import PsapUas
from tests.interop.sipp import free_port, run_uac
from tests.ops.harness import REALM, GatewayProcess, GatewaySetup, prepare, set_password


def cluster_section(setup: GatewaySetup) -> str:
    """The ``[cluster]`` section of one instance: its SIP URI is its UDP listener;
    its name, ``[gateway] instance`` (which the CDR rows carry)."""
    return f'\n[cluster]\nsip_uri = "sip:127.0.0.1:{setup.sip_port}"\n'


async def start_instance(
    name: str,
    state: Path,
    *,
    upstream: str,
    dsn: str,
    edit: Callable[[str], str] | None = None,
    centre_ports: Mapping[str, int] | None = None,
) -> GatewayProcess:
    """Starts one instance ``name`` on the shared database ``dsn``; ``edit`` changes
    its configuration text first; ``centre_ports`` as :func:`prepare` takes them."""
    setup = prepare(
        state,
        upstream=upstream,
        database_url=dsn,
        cdr={"batch_age": 0.05},
        centre_ports=centre_ports,
    )
    text = setup.config.read_text(encoding="utf-8")
    text = text.replace('instance = "ops-', f'instance = "{name}-ops-', 1)
    text += cluster_section(setup)
    setup.config.write_text(edit(text) if edit else text, encoding="utf-8")
    gateway = GatewayProcess(setup)
    await gateway.start()
    return gateway


async def provision(gateway: GatewayProcess, user: str, password: str) -> None:
    await set_password(gateway.setup.config, user, password)


async def register(
    setup: GatewaySetup, user: str, password: str, port: int, *, host: str = "127.0.0.1"
) -> None:
    """Registers ``user`` through the instance of ``setup`` from ``host``:``port``
    (SIPp with digest, 600 s): the flow the instance then holds."""
    result = await run_uac(
        "uac-register",
        setup.target,
        service=user,
        timeout=10,
        local_ip=host,
        extra_args=[
            *("-au", user, "-ap", password, "-auth_uri", REALM),
            *("-set", "domain", REALM, "-set", "expires", "600", "-p", str(port)),
        ],
    )
    assert result.ok, result.describe()


class NatPhone(PsapUas):
    """A phone behind a NAT whose mapping lets in only ``allowed`` (host, port).

    Args:
        name: for messages and To tags.
        port: the port it registered from.
        allowed: the address its NAT mapping was opened towards.
        host: the address it registered from.
        private_contact: host:port its Contact names, as a phone behind NAT
            advertises its private address (None: where it listens).
    """

    def __init__(
        self,
        name: str,
        port: int,
        allowed: tuple[str, int],
        *,
        host: str = "127.0.0.1",
        private_contact: str | None = None,
    ) -> None:
        super().__init__(name, host=host)
        self.port = port
        self.allowed = allowed
        self.private_contact = private_contact
        #: source addresses of the INVITEs let in
        self.invite_sources: list[tuple[str, int]] = []
        #: datagrams the NAT dropped: (source address, first line)
        self.dropped: list[tuple[tuple[str, int], str]] = []

    @property
    def contact_address(self) -> str:
        return self.private_contact or super().contact_address

    def datagram_received(self, data: bytes, addr: tuple[str | Any, int]) -> None:
        source = (str(addr[0]), int(addr[1]))
        first = data.split(b"\r\n", 1)[0].decode(errors="replace")
        if source != self.allowed:
            self.dropped.append((source, first))
            return
        if first.startswith("INVITE "):
            self.invite_sources.append(source)
        super().datagram_received(data, addr)


ROOT = Path(__file__).resolve().parents[2]
KAMAILIO_CFG = ROOT / "deploy" / "cluster" / "kamailio.cfg"


def kamailio_binary() -> str:
    """The Debian package's kamailio (in /usr/sbin, which PATH may lack); the test
    fails, not skips, without it (``make tools`` installs it)."""
    path = shutil.which("kamailio") or (
        "/usr/sbin/kamailio" if os.access("/usr/sbin/kamailio", os.X_OK) else None
    )
    if path is None:
        pytest.fail("kamailio not found: install it (make tools installs Debian kamailio)")
    return path


def kamailio_defines(listen: str, ds_list: Path, ping_every: int) -> list[str]:
    """``-A`` overrides of the reference config's parameters: one UDP worker, so
    that each call's responses keep their order (SIPp fails a call on a 180 after
    the 200, which several workers may produce; kamailio.cfg says more)."""
    return [
        *("-A", f"LISTEN=udp:{listen}"),
        *("-A", f'DS_LIST="{ds_list}"'),
        *("-A", f"PING_EVERY={ping_every}"),
        *("-A", "WORKERS=1"),
    ]


class Kamailio:
    """deploy/cluster/kamailio.cfg in front of ``instances`` (UDP ``host:port``).

    Args:
        instances: the voipgw instances, dispatcher set 1 in this order.
        host: the loopback address it listens on.
        ping_every: seconds between OPTIONS probes (``ds_ping_interval``).
    """

    def __init__(
        self, instances: Sequence[str], *, host: str = "127.0.0.2", ping_every: int = 1
    ) -> None:
        self.host = host
        self.port = free_port(host)
        self.ping_every = ping_every
        self.dir = Path(tempfile.mkdtemp(prefix="voipgw-kamailio-"))
        self.ds_list = self.dir / "dispatcher.list"
        self.ds_list.write_text(
            "".join(f"1 sip:{item} 0 0\n" for item in instances), encoding="utf-8"
        )
        self.log = self.dir / "kamailio.log"
        self.proc: asyncio.subprocess.Process | None = None

    @property
    def target(self) -> str:
        return f"{self.host}:{self.port}"

    async def __aenter__(self) -> Kamailio:
        argv = [
            kamailio_binary(),
            *("-f", str(KAMAILIO_CFG), "-DD", "-E"),
            *("-P", str(self.dir / "kamailio.pid"), "-Y", str(self.dir)),
            *("-w", str(self.dir)),
            *kamailio_defines(self.target, self.ds_list, self.ping_every),
        ]
        with self.log.open("wb") as out:
            self.proc = await asyncio.create_subprocess_exec(
                *argv,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=out,
                stderr=out,
                start_new_session=True,
            )
        for _ in range(100):
            if self.proc.returncode is not None:
                raise AssertionError(f"kamailio exited:\n{self.tail()}")
            probe = await run_uac("uac-options-200", self.target, timeout=2)
            if probe.ok:
                return self
            await asyncio.sleep(0.1)
        await self.stop()
        raise AssertionError(f"kamailio did not answer OPTIONS:\n{self.tail()}")

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)

    def tail(self, limit: int = 6000) -> str:
        return self.log.read_bytes()[-limit:].decode("utf-8", "backslashreplace")

    async def stop(self) -> None:
        """SIGTERM to the process group it started (its own session), then SIGKILL."""
        proc = self.proc
        if proc is None or proc.returncode is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            await asyncio.wait_for(proc.wait(), 10)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            await proc.wait()
