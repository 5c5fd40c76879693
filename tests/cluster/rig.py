"""Several ``voipgw run`` instances on one PostgreSQL, and a phone behind a NAT.

* :func:`start_instance` writes an ops-harness configuration (tests/ops/harness.py)
  on the shared database with a ``[cluster]`` section naming the instance and its
  ``sip_uri``, and starts it. Every instance and the PBX stand-in sit on 127.0.0.1,
  which the configuration trusts: sibling instances are trusted peers, as
  deploy/OPERATIONS.md "Several instances" asks.
* :class:`NatPhone` is a phone behind a NAT: a UDP user agent (answers INVITE, BYE)
  on the port its REGISTER was sent from, which takes in only datagrams from the
  one address the NAT mapping was opened towards (the instance it registered with)
  and drops the others, recording both.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tests.emergency.rig import PsapUas
from tests.interop.sipp import run_uac
from tests.ops.harness import REALM, GatewayProcess, GatewaySetup, prepare, set_password


def cluster_section(name: str, setup: GatewaySetup) -> str:
    """The ``[cluster]`` section of one instance (its SIP URI: its UDP listener)."""
    return f'\n[cluster]\ninstance = "{name}"\nsip_uri = "sip:127.0.0.1:{setup.sip_port}"\n'


async def start_instance(
    name: str, state: Path, *, upstream: str, dsn: str, extra: str = ""
) -> GatewayProcess:
    """Starts one instance ``name`` on the shared database ``dsn``."""
    setup = prepare(state, upstream=upstream, database_url=dsn, cdr={"batch_age": 0.05})
    text = setup.config.read_text(encoding="utf-8")
    text = text.replace('instance = "ops-', f'instance = "{name}-ops-', 1)
    setup.config.write_text(text + cluster_section(name, setup) + extra, encoding="utf-8")
    gateway = GatewayProcess(setup)
    await gateway.start()
    return gateway


async def provision(gateway: GatewayProcess, user: str, password: str) -> None:
    await set_password(gateway.setup.config, user, password)


async def register(setup: GatewaySetup, user: str, password: str, port: int) -> None:
    """Registers ``user`` through the instance of ``setup`` from 127.0.0.1:``port``
    (SIPp with digest, 600 s): the flow the instance then holds."""
    result = await run_uac(
        "uac-register",
        setup.target,
        service=user,
        timeout=10,
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
    """

    def __init__(self, name: str, port: int, allowed: tuple[str, int]) -> None:
        super().__init__(name)
        self.port = port
        self.allowed = allowed
        #: source addresses of the INVITEs let in
        self.invite_sources: list[tuple[str, int]] = []
        #: datagrams the NAT dropped: (source address, first line)
        self.dropped: list[tuple[tuple[str, int], str]] = []

    def datagram_received(self, data: bytes, addr: tuple[str | Any, int]) -> None:
        source = (str(addr[0]), int(addr[1]))
        first = data.split(b"\r\n", 1)[0].decode(errors="replace")
        if source != self.allowed:
            self.dropped.append((source, first))
            return
        if first.startswith("INVITE "):
            self.invite_sources.append(source)
        super().datagram_received(data, addr)
