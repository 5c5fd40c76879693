"""The systemd unit, Containerfile and compose file: what can be checked without
running systemd or a container engine here."""

from __future__ import annotations

import configparser
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.deploy.tools import REPO, require

DEPLOY = REPO / "deploy"
UNIT = DEPLOY / "systemd" / "voipgw.service"


def unit_directives() -> dict[str, list[str]]:
    """``Key -> [values]`` of the [Service] section (keys may repeat in systemd)."""
    result: dict[str, list[str]] = {}
    section = ""
    for line in UNIT.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            section = line
            continue
        if section == "[Service]":
            key, _, value = line.partition("=")
            result.setdefault(key, []).append(value)
    return result


def test_unit_hardening() -> None:
    d = unit_directives()
    expected = {
        "User": "voipgw",
        "NoNewPrivileges": "yes",
        "CapabilityBoundingSet": "CAP_NET_BIND_SERVICE",
        "AmbientCapabilities": "CAP_NET_BIND_SERVICE",
        "ProtectSystem": "strict",
        "ProtectHome": "yes",
        "PrivateTmp": "yes",
        "StateDirectory": "voipgw",
        "RestrictAddressFamilies": "AF_INET AF_INET6 AF_UNIX",
        "Restart": "on-failure",
        "ExecReload": "/bin/kill -HUP $MAINPID",
        "ExecStart": "/opt/voipgw/bin/voipgw run --config /etc/voipgw/voipgw.toml",
    }
    for key, value in expected.items():
        assert d.get(key) == [value], key
    assert "@system-service" in d["SystemCallFilter"]
    assert int(d["TimeoutStopSec"][0]) >= 60


@pytest.mark.tool
def test_systemd_analyze_verify(tmp_path: Path) -> None:
    analyze = require("systemd-analyze")
    # verify insists that ExecStart exists: point it at this interpreter.
    unit = tmp_path / "voipgw.service"
    unit.write_text(UNIT.read_text().replace("/opt/voipgw/bin/voipgw", sys.executable))
    result = subprocess.run(
        [analyze, "verify", str(unit)], capture_output=True, text=True, timeout=60
    )
    # verify exits 0 on unknown keys and bad values and only warns: any output fails.
    assert result.returncode == 0, result.stderr
    assert result.stdout + result.stderr == ""


def test_sysusers_creates_the_service_user() -> None:
    line = (DEPLOY / "systemd" / "voipgw.sysusers").read_text().splitlines()[-1]
    assert line.split()[:2] == ["u", "voipgw"]


def test_containerfile() -> None:
    text = (DEPLOY / "container" / "Containerfile").read_text()
    instructions = [
        line.split(None, 1)
        for line in text.replace("\\\n", " ").splitlines()
        if line.strip() and not line.startswith("#")
    ]
    froms = [args for op, args in instructions if op == "FROM"]
    assert all(args.startswith("python:3.11-slim") for args in froms)
    users = [args for op, args in instructions if op == "USER"]
    assert users == ["voipgw"]
    assert ["ENTRYPOINT", '["voipgw"]'] in instructions
    assert ["CMD", '["run", "--config", "/etc/voipgw/voipgw.toml"]'] in instructions
    for op, args in instructions:
        if op == "COPY" and not args.startswith("--from"):
            for source in args.split()[:-1]:
                assert (REPO / source).exists(), source


def test_compose() -> None:
    compose = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    services = compose["services"]
    assert set(services) == {"voipgw", "postgres", "prometheus", "grafana"}
    build = services["voipgw"]["build"]
    assert (DEPLOY / build["context"] / build["dockerfile"]).is_file()
    for name, service in services.items():
        assert service["network_mode"] == "host", name
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("."):
                assert (DEPLOY / source).exists(), f"{name}: {source}"
            else:
                assert source in compose["volumes"], f"{name}: {source}"
    prometheus_args = " ".join(services["prometheus"]["command"])
    assert "--web.listen-address=127.0.0.1:9090" in prometheus_args


def test_prometheus_scrapes_the_documented_port() -> None:
    config = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
    (job,) = config["scrape_configs"]
    assert job["job_name"] == "voipgw"
    assert job["static_configs"][0]["targets"] == ["127.0.0.1:9464"]
    assert "9464" in (DEPLOY / "OPERATIONS.md").read_text()


def test_unit_file_parses_as_ini() -> None:
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read_string(UNIT.read_text())
    assert set(parser.sections()) == {"Unit", "Service", "Install"}
    assert parser["Install"]["WantedBy"] == "multi-user.target"
