"""``voipgw demo``'s own decisions: which peers, what it prints, stale centres."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from gateway.cli.main import build_parser
from gateway.config import load_config
from gateway.demo.cli import demo_peers, stale_centres, what_to_try
from routing.configfields import ConfigError
from routing.sites_file import parse_sites

ROOT = Path(__file__).resolve().parents[2]
CONFIG = ROOT / "deploy" / "demo" / "voipgw.toml"
SITES = ROOT / "deploy" / "demo" / "sites.toml"


def demo_sites_text() -> str:
    return SITES.read_text(encoding="utf-8")


def test_demo_is_a_subcommand_of_the_one_cli() -> None:
    args = build_parser().parse_args(["demo", "--config", "x.toml"])
    assert args.config == "x.toml" and args.password == "voipgw-demo"
    assert args.func.__module__ == "gateway.demo.cli"


def test_peers_are_the_upstream_and_every_centre_of_the_sites_file() -> None:
    config = load_config(CONFIG)
    sites = parse_sites(demo_sites_text(), "toml")
    peers = demo_peers(config, sites.centres)
    assert (peers[0].name, peers[0].host, peers[0].port) == ("pbx", "127.0.0.1", 5080)
    # Read from the file, wherever the centres are (never a hard-coded address).
    expected = {(f"centre {c.id}", c.sip_uri.split("@", 1)[1]) for c in sites.centres}
    assert {(p.name, f"{p.host}:{p.port}") for p in peers[1:]} == expected
    text = what_to_try(config, sites, peers, "voipgw.demo", "voipgw-demo")
    for peer in peers:
        assert f"{peer.host}:{peer.port}" in text
    assert "baresip -f deploy/demo/baresip/office" in text
    assert "/dial 112" in text and "/dial +358201234567" in text
    assert "password 'voipgw-demo'" in text


def test_a_centre_without_an_ip_address_gets_no_peer(capsys: pytest.CaptureFixture[str]) -> None:
    config = load_config(CONFIG)
    sites = parse_sites(demo_sites_text(), "toml")
    renamed = (dataclasses.replace(sites.centres[0], sip_uri="sip:112@psap.example"),)
    assert [p.name for p in demo_peers(config, renamed)] == ["pbx"]
    assert "no peer for centre" in capsys.readouterr().err


def test_upstream_must_be_an_ip_address() -> None:
    config = load_config(CONFIG)
    config = dataclasses.replace(
        config, upstream=dataclasses.replace(config.upstream, uri="sip:pbx.example")
    )
    with pytest.raises(ConfigError):
        demo_peers(config, ())


def test_stale_centres_names_the_ones_moved_since_the_import() -> None:
    sites = parse_sites(demo_sites_text(), "toml")
    kerava = next(c for c in sites.centres if c.id == "kerava")
    moved = dataclasses.replace(kerava, sip_uri="sip:112@127.0.0.9:5091")
    stored = dataclasses.replace(
        sites, centres=tuple(moved if c.id == "kerava" else c for c in sites.centres)
    )
    assert stale_centres(stored, sites) == ["kerava sip:112@127.0.0.9:5091"]
    assert stale_centres(sites, sites) == []
    assert stale_centres(dataclasses.replace(stored, customers=()), sites) == []
