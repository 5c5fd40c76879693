"""``voipgw sites ...`` commands run as a user would run them (subprocess)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from routing.sites_export import dump_sites
from tests.routing.data import DEMO_SITES, demo_data

# gateway/cli.py (the lead's) wires register(); this stands in for it.
CLI = (
    "import argparse, sys; from gateway.sites_cli import register; "
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
