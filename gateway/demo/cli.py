"""``voipgw demo``: a first call in five minutes.

Starts, in one process: the demo users' passwords (so a softphone can register at
once), a PBX stand-in at ``[upstream] uri``, an answering emergency centre at each
``[[centres]] sip_uri`` of the sites file the config seeds from, then the gateway
itself through :func:`gateway.cli.main.run_gateway`, the same path as ``voipgw run``.
The centres are read from the sites file at start-up: move one there and the demo
follows.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
from typing import Any

from gateway.cli.main import DEFAULT_CONFIG, listeners_text, run_gateway
from gateway.cli.sites import read_sites_file
from gateway.config import GatewayConfig, load_config
from gateway.demo.agent import CallOffered
from gateway.demo.peer import DemoPeer, Tone, start_peers
from gateway.demo.report import emergency_line, pbx_line
from gateway.service.server import ip_literal_endpoint
from routing.configfields import ConfigError
from routing.model import EmergencyCentre
from routing.sites_file import SitesData, SitesFileError

#: Password ``voipgw demo`` sets for every demo user (the shipped baresip accounts use it).
DEMO_PASSWORD = "voipgw-demo"
#: The PBX stand-in's beeps: audible, and unlike any prompt (tests look for 440 Hz).
PBX_TONE = Tone(frequency=440.0, seconds=20.0)
#: The centres' beeps: a different pitch, so a listener knows who answered.
CENTRE_TONE = Tone(frequency=660.0, seconds=30.0, on=0.2, off=0.4)
#: Where the shipped baresip configurations live (relative to the checkout).
BARESIP_DIR = "deploy/demo/baresip"
#: The recorded staff line of the demo config (customer service).
RECORDED_LINE = "+358201234567"


def register(subparsers: Any) -> None:
    demo = subparsers.add_parser(
        "demo",
        help="the gateway with a PBX stand-in and emergency centres: make a first call",
        description=(
            "Runs the gateway as `voipgw run` does, with a PBX stand-in at [upstream] uri "
            "and an answering emergency centre at each [[centres]] sip_uri of the seed "
            "sites file, and sets every demo user's password."
        ),
    )
    demo.add_argument("--config", default=DEFAULT_CONFIG, help="TOML config file")
    demo.add_argument(
        "--password",
        default=DEMO_PASSWORD,
        help=f"password set for every subscriber of the sites file (default {DEMO_PASSWORD})",
    )
    demo.set_defaults(func=cmd_demo)


def cmd_demo(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    if config.seed_sites is None:
        raise ConfigError("gateway.seed_sites", "voipgw demo needs the demo sites file")
    try:
        sites = read_sites_file(config.seed_sites, None)
    except (OSError, UnicodeDecodeError, SitesFileError) as exc:
        raise ConfigError("gateway.seed_sites", str(exc)) from None
    return asyncio.run(run_demo(config, sites, args.password))


async def run_demo(config: GatewayConfig, sites: SitesData, password: str) -> int:
    """Seeds passwords, starts the peers, runs the gateway until SIGTERM/SIGINT."""
    users = sorted({s.sip_user for s in sites.subscribers})
    realm = await prepare_database(config, sites, users, password)
    peers = demo_peers(config, sites.centres)
    await start_peers(peers)
    try:
        print(what_to_try(config, sites, peers, realm, password), flush=True)
        return await run_gateway(config)
    finally:
        for peer in peers:
            with contextlib.suppress(OSError):
                await peer.close()


async def prepare_database(
    config: GatewayConfig, sites: SitesData, users: list[str], password: str
) -> str | None:
    """Sets ``password`` for each user in the registrar's realm; returns the realm.

    The database is opened (and, when embedded, started and stopped again) before
    the gateway starts it, as ``voipgw users set-password`` does. Routing data
    imported at an earlier start is kept (the gateway seeds only an empty database),
    so centres that have moved in the sites file since are named in a warning: the
    demo's centres listen at the file's addresses.
    """
    from cdr.db import database, migrate
    from gateway.registrar import BindingStore
    from gateway.service.sitestore import export_sites

    registrar = config.registrar
    db_config = config.database
    async with database(db_config) as db:
        async with db.pool.acquire() as con:
            await migrate(con)
            stored = await export_sites(con)
        moved = stale_centres(stored, sites)
        if moved:
            print(
                f"voipgw demo: warning: the database holds centres imported earlier"
                f" ({', '.join(moved)}), but the demo centres listen where"
                f" {config.seed_sites} says; to route there: voipgw sites import"
                f" {config.seed_sites}",
                file=sys.stderr,
                flush=True,
            )
        if registrar is None:
            return None
        store = BindingStore(db.pool)
        for user in users:
            await store.set_password(user, registrar.realm, password, registrar.algorithms)
    return str(registrar.realm)


def stale_centres(stored: SitesData, sites: SitesData) -> list[str]:
    """Centres whose URI in the database differs from the sites file ("id uri")."""
    if not stored.customers:
        return []  # an empty database: the gateway imports the file at start
    wanted = {c.id: c.sip_uri for c in sites.centres}
    return [
        f"{c.id} {c.sip_uri}" for c in stored.centres if wanted.get(c.id, c.sip_uri) != c.sip_uri
    ]


def demo_peers(config: GatewayConfig, centres: tuple[EmergencyCentre, ...]) -> list[DemoPeer]:
    """The PBX stand-in and one peer per distinct centre address (IP literals only)."""
    pbx = ip_literal_endpoint(config.upstream.uri)
    if pbx is None or pbx.transport != "UDP":
        raise ConfigError("upstream.uri", "voipgw demo needs a UDP URI with an IP address")

    def describe_pbx(call: CallOffered) -> str:
        return pbx_line("pbx", call.invite)

    peers = [DemoPeer("pbx", "pbx", pbx.host, pbx.port, PBX_TONE, describe_pbx)]
    taken = {(pbx.host, pbx.port)}
    for centre in centres:
        endpoint = ip_literal_endpoint(centre.sip_uri)
        if endpoint is None or (endpoint.host, endpoint.port) in taken:
            print(
                f"voipgw demo: no peer for centre {centre.id} at {centre.sip_uri}", file=sys.stderr
            )
            continue
        taken.add((endpoint.host, endpoint.port))
        peers.append(
            DemoPeer(
                f"centre {centre.id}",
                centre.id,
                endpoint.host,
                endpoint.port,
                CENTRE_TONE,
                _centre_describer(f"{centre.id} ({centre.name})"),
            )
        )
    return peers


def _centre_describer(label: str) -> Any:
    def describe(call: CallOffered) -> str:
        return emergency_line(label, call.invite)

    return describe


def what_to_try(
    config: GatewayConfig,
    sites: SitesData,
    peers: list[DemoPeer],
    realm: str | None,
    password: str,
) -> str:
    """The start-up text: where everything listens and what to do with it."""
    listen = listeners_text(config)
    numbers = {s.sip_user: s.e164 for s in sites.subscribers}
    lines = [
        "",
        f"voipgw demo: SIP on {listen}",
        f"  {'pbx':16} {peers[0].host}:{peers[0].port}  answers every call: "
        f"{PBX_TONE.frequency:g} Hz beeps for {PBX_TONE.seconds:g} s, then BYE",
    ]
    for peer in peers[1:]:
        lines.append(f"  {peer.name:16} {peer.host}:{peer.port}  answers 112 calls, one line each")
    if realm is not None:
        lines.append(
            f"  users: {', '.join(sorted(numbers))} (realm {realm}, password {password!r})"
        )
    lines += [
        "",
        "What to try (from the checkout, another terminal each):",
        f"  baresip -f {BARESIP_DIR}/office    alice {numbers.get('alice', '')}, "
        "office phone in Setera's Espoo LAN (127.0.10.5)",
        f"  baresip -f {BARESIP_DIR}/nomadic   bob {numbers.get('bob', '')}, "
        "softphone outside every site (127.0.0.2)",
        "  then type in baresip:",
        "    /dial 112             office: Hätäkeskus Kerava gets the Espoo address;"
        " nomadic: a spoken warning, then the national default, location not verified",
        f"    /dial {RECORDED_LINE}  recorded line: the recording notice, then the PBX stand-in",
        "    /hangup",
        "  voipgw status",
        f"  voipgw cdr subject-access --number {numbers.get('alice', '+358401000001')}",
        "",
    ]
    return "\n".join(lines)
