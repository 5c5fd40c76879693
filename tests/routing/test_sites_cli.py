"""``voipgw sites ...`` commands run as a user would run them (subprocess)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from routing.sites_export import dump_sites
from tests.routing.data import DEMO_SITES, demo_data

# gateway/cli/main.py (the lead's) wires register(); this stands in for it.
CLI = (
    "import argparse, sys; from gateway.cli.sites import register; "
    "p = argparse.ArgumentParser(); register(p.add_subparsers(dest='c', required=True)); "
    "a = p.parse_args(sys.argv[1:]); sys.exit(a.func(a))"
)


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", CLI, *args], capture_output=True, text=True, check=False
    )


def test_cli_check_reports_line_and_field(tmp_path: Path) -> None:
    text = DEMO_SITES.read_text(encoding="utf-8")
    line = next(n for n, t in enumerate(text.splitlines(), 1) if '"127.0.20.0/24"' in t)
    bad = tmp_path / "sites.toml"
    bad.write_text(text.replace('"127.0.20.0/24"', '"127.0.20.1/24"'), encoding="utf-8")
    bad_run = _run("sites", "check", str(bad))
    assert bad_run.returncode == 1
    assert f"sites.toml:{line}: sites[0].networks[1].cidr: not an IP network" in bad_run.stderr
    ok = _run("sites", "import", "--dry-run", str(DEMO_SITES))
    assert ok.returncode == 0, ok.stderr
    assert "7 emergency centres" in ok.stdout


def test_cli_check_names_a_bad_security_desk(tmp_path: Path) -> None:
    text = DEMO_SITES.read_text(encoding="utf-8")
    good = 'security_desk = "sip:desk@127.0.70.1:5070"'
    line = next(n for n, t in enumerate(text.splitlines(), 1) if t == good)
    bad = tmp_path / "sites.toml"
    bad.write_text(text.replace(good, 'security_desk = "desk@127.0.70.1"'), encoding="utf-8")
    run = _run("sites", "check", str(bad))
    assert run.returncode == 1
    assert (
        f"sites.toml:{line}: customers[0].security_desk: expected a sip: or sips: URI" in run.stderr
    ), run.stderr


@pytest.mark.postgres
def test_cli_import_export(pg_dsn: str, tmp_path: Path) -> None:
    imported = _run("sites", "import", str(DEMO_SITES), "--database-url", pg_dsn)
    assert imported.returncode == 0, imported.stderr
    out = tmp_path / "export.csv"
    exported = _run(
        "sites", "export", "--format", "csv", "--output", str(out), "--database-url", pg_dsn
    )
    assert exported.returncode == 0, exported.stderr
    assert out.read_text(encoding="utf-8") == dump_sites(demo_data(), "csv")


def _shared_host_demo(tmp_path: Path) -> tuple[Path, Path]:
    """The demo sites with the centres back on the PBX's 127.0.0.1 (as before issue 13,
    Kerava on the national default's transport address), and a config naming them."""
    text = DEMO_SITES.read_text(encoding="utf-8").replace(
        "sip:112@127.0.112.1:", "sip:112@127.0.0.1:"
    )
    text = text.replace("sip:112@127.0.0.1:5091", "sip:112@127.0.0.1:5090")
    sites = tmp_path / "sites.toml"
    sites.write_text(text, encoding="utf-8")
    config = tmp_path / "voipgw.toml"
    config.write_text(
        f'[gateway]\nseed_sites = "{sites}"\n'
        '[[sip.listen]]\ntransport = "UDP"\nhost = "127.0.0.1"\nport = 5060\n'
        '[upstream]\nuri = "sip:127.0.0.1:5080"\ntrusted_peers = ["127.0.0.0/24"]\n'
        '[routing]\ndefault_next_hop = "sip:127.0.0.1:5080"\n',
        encoding="utf-8",
    )
    return sites, config


def test_cli_check_warns_of_centres_sharing_the_pbx_address(tmp_path: Path) -> None:
    sites, config = _shared_host_demo(tmp_path)
    checked = _run("sites", "check", str(sites), "--config", str(config))
    assert checked.returncode == 0, checked.stderr  # warnings, not errors
    warnings = [line for line in checked.stderr.splitlines() if "warning:" in line]
    # Both peers are named in each warning.
    assert any(
        "centre kerava" in w and "upstream sip:127.0.0.1:5080" in w and "127.0.0.1" in w
        for w in warnings
    ), warnings
    assert any("centre oulu" in w and "127.0.0.0/24" in w for w in warnings), warnings
    assert any("centre kerava" in w and "centre national" in w for w in warnings), warnings
    # Without the gateway config only the centres are compared with each other.
    alone = _run("sites", "check", str(sites))
    assert alone.returncode == 0
    assert "centre national and centre kerava share" in alone.stderr
    assert "upstream" not in alone.stderr


def test_cli_check_demo_centres_have_addresses_of_their_own() -> None:
    demo_config = DEMO_SITES.parent / "voipgw.toml"
    checked = _run("sites", "check", str(DEMO_SITES), "--config", str(demo_config))
    assert checked.returncode == 0, checked.stderr
    assert "warning" not in checked.stderr, checked.stderr


def test_check_config_warns_of_centres_sharing_the_pbx_address(tmp_path: Path) -> None:
    _, config = _shared_host_demo(tmp_path)
    checked = subprocess.run(
        [sys.executable, "-m", "gateway", "check-config", "--config", str(config)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert checked.returncode == 0, checked.stderr
    assert "OK" in checked.stdout
    assert "centre kerava" in checked.stderr and "upstream sip:127.0.0.1:5080" in checked.stderr
    assert "trusted peer network 127.0.0.0/24" in checked.stderr
