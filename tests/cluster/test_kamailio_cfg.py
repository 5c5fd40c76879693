"""deploy/cluster/kamailio.cfg passes Kamailio's own check (``kamailio -c``), with its
defaults and with the overrides `make cluster` and the tests give it."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.cluster.rig import KAMAILIO_CFG, kamailio_binary, kamailio_defines

pytestmark = pytest.mark.tool


def check(*defines: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [kamailio_binary(), "-c", "-f", str(KAMAILIO_CFG), *defines],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_reference_config_passes_kamailio_check() -> None:
    result = check()
    assert result.returncode == 0, result.stdout + result.stderr
    assert "udp: 127.0.0.2 [127.0.0.2]:5060" in result.stdout + result.stderr


def test_overrides_reach_the_listener(tmp_path: Path) -> None:
    result = check(*kamailio_defines("127.0.0.2:5999", tmp_path / "ds.list", 1))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "udp: 127.0.0.2 [127.0.0.2]:5999" in result.stdout + result.stderr


def test_a_broken_config_fails_the_check(tmp_path: Path) -> None:
    # The check is not vacuous: the same file with a routing block name misspelt.
    broken = tmp_path / "kamailio.cfg"
    broken.write_text(
        KAMAILIO_CFG.read_text().replace('t_on_failure("NEXT_INSTANCE");', "t_on_failure(NEXT);")
    )
    result = subprocess.run(
        [kamailio_binary(), "-c", "-f", str(broken)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode != 0


def test_cluster_configs_validate_and_the_dispatcher_list_names_their_listeners() -> None:
    from gateway.config import load_config

    cluster = KAMAILIO_CFG.parent
    configs = [load_config(path) for path in sorted(cluster.glob("voipgw-*.toml"))]
    assert len(configs) == 2
    sections = [c.cluster for c in configs]
    assert all(section is not None for section in sections)
    names = {s.instance for s in sections if s is not None}
    uris = [s.sip_uri for s in sections if s is not None]
    assert len(names) == len(configs) and len(set(uris)) == len(configs)
    for config, uri in zip(configs, uris, strict=True):
        (listen,) = config.sip.listen
        assert uri == f"sip:{listen.host}:{listen.port}"
        # Siblings are trusted peers: a relayed call is routed as an inbound call.
        assert any(listen.host in str(net) for net in config.upstream.trusted_peers)
    listed = [
        line.split()[1]
        for line in (cluster / "dispatcher.list").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert listed == uris
    # Separate state, metrics and media ports per instance.
    assert len({c.cdr.spool_dir for c in configs}) == len(configs)
    assert len({c.metrics.port for c in configs}) == len(configs)
    assert len({c.media.rtp_port_min for c in configs if c.media}) == len(configs)
